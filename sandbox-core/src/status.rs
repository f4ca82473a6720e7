//! Turning a [`ProcessOutcome`] into a [`Status`]: one rule for every backend, so that the same
//! program gets the same status everywhere.

use crate::result::Status;
use crate::spec::ProcessOutcome;

/// Classifies an outcome. Order matters: limits the sandbox enforced come first, then OOM
/// evidence (never guessed from SIGKILL alone), then signals, then the exit code.
pub fn classify(outcome: &ProcessOutcome) -> Status {
    if outcome.timed_out {
        Status::Timeout
    } else if outcome.output_limit_hit {
        Status::OutputLimit
    } else if outcome.oom_killed {
        Status::MemoryLimit
    } else if outcome.signal.is_some() {
        Status::Killed
    } else if outcome.exit_code == Some(0) {
        Status::Success
    } else {
        Status::Error
    }
}

/// A one-line reason for a non-exit status, used as the result's `error`.
pub fn reason(
    status: Status,
    outcome: &ProcessOutcome,
    timeout_secs: f64,
    output_limit: u64,
) -> Option<String> {
    match status {
        Status::Timeout => Some(format!("timed out after {timeout_secs} s; the sandbox was killed")),
        Status::OutputLimit => Some(format!(
            "output exceeded {output_limit} bytes (stdout and stderr together); the sandbox was stopped"
        )),
        Status::MemoryLimit => Some(format!(
            "out of memory: the kernel killed a process at the memory limit (peak {})",
            outcome.usage.memory_peak
        )),
        Status::Killed => {
            let sig = outcome.signal.unwrap_or(0);
            Some(format!("killed by signal {sig} ({})", signal_name(sig)))
        }
        _ => None,
    }
}

/// The conventional name of a signal number.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigkill_without_oom_evidence_is_killed_not_memory() {
        let o = ProcessOutcome {
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(classify(&o), Status::Killed);
        let o = ProcessOutcome {
            signal: Some(9),
            oom_killed: true,
            ..Default::default()
        };
        assert_eq!(classify(&o), Status::MemoryLimit);
    }

    #[test]
    fn timeout_wins() {
        let o = ProcessOutcome {
            signal: Some(9),
            timed_out: true,
            oom_killed: true,
            ..Default::default()
        };
        assert_eq!(classify(&o), Status::Timeout);
        let o = ProcessOutcome {
            exit_code: Some(3),
            ..Default::default()
        };
        assert_eq!(classify(&o), Status::Error);
        let o = ProcessOutcome {
            exit_code: Some(0),
            ..Default::default()
        };
        assert_eq!(classify(&o), Status::Success);
    }
}
