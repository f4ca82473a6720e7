//! What happened to one process tree: the one record every backend fills, with numeric usage,
//! and the one rule that turns it into a [`Status`] (so the same program gets the same status on
//! every backend).

use std::time::Duration;

use crate::events::SecurityEvent;
use crate::limits::{Bytes, Limits};
use crate::result::{Status, Truncated};

/// How the main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl Default for Exit {
    fn default() -> Self {
        Exit::Code(0)
    }
}

/// Why the sandbox stopped a run before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The wall-clock limit.
    Timeout,
    /// The output limit.
    OutputLimit,
    /// The caller cancelled the run ([`StopSignal`](crate::spec::StopSignal)).
    Cancelled,
}

/// Resources one step used, in numbers (strings exist only in the JSON result).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time (user + system) of every process of the step.
    pub cpu: Duration,
    /// Peak memory.
    pub memory_peak: Bytes,
    /// Bytes in the writable workspace, /tmp and /dev/shm after the step.
    pub disk: Bytes,
    /// Most processes and threads alive at once (sampled where the kernel keeps no peak).
    pub processes_peak: u64,
}

/// What happened to one process tree. Backends fill it; the engine turns it into a result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessOutcome {
    /// How the main process ended (a run the sandbox killed ended by SIGKILL).
    pub exit: Exit,
    /// Captured stdout (at most the output limit).
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Which streams were cut at the output limit.
    pub truncated: Truncated,
    /// The sandbox stopped the run (and which limit made it).
    pub stopped: Option<Stop>,
    /// The kernel's OOM killer killed a process of the tree (evidence from the cgroup).
    pub oom_killed: bool,
    /// Forks the process limit refused.
    pub pids_limit_hits: u64,
    /// Wall-clock time of the tree.
    pub wall_time: Duration,
    /// Resources used.
    pub usage: Usage,
    /// Security events observed by the backend.
    pub events: Vec<SecurityEvent>,
}

impl ProcessOutcome {
    /// The status. Order matters: limits the sandbox enforced come first, then OOM evidence
    /// (never guessed from SIGKILL alone), then signals, then the exit code.
    pub fn status(&self) -> Status {
        match (self.stopped, self.oom_killed, self.exit) {
            (Some(Stop::Timeout), _, _) => Status::Timeout,
            (Some(Stop::OutputLimit), _, _) => Status::OutputLimit,
            (Some(Stop::Cancelled), _, _) => Status::Killed,
            (None, true, _) => Status::MemoryLimit,
            (None, false, Exit::Signal(_)) => Status::Killed,
            (None, false, Exit::Code(0)) => Status::Success,
            (None, false, Exit::Code(_)) => Status::Error,
        }
    }

    /// The exit code, when the process exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code(c) => Some(c),
            Exit::Signal(_) => None,
        }
    }

    /// The signal, when the process was killed by one.
    pub fn signal(&self) -> Option<i32> {
        match self.exit {
            Exit::Signal(s) => Some(s),
            Exit::Code(_) => None,
        }
    }

    /// A one-line reason for a status that is not an exit, given the step's `limits`.
    pub fn reason(&self, limits: &Limits) -> Option<String> {
        match self.status() {
            Status::Timeout => Some(format!(
                "timed out after {} s; the sandbox was killed",
                limits.timeout.as_secs_f64()
            )),
            Status::OutputLimit => Some(format!(
                "output exceeded {} bytes (stdout and stderr together); the sandbox was stopped",
                limits.output.get()
            )),
            Status::MemoryLimit => Some(format!(
                "out of memory: the kernel killed a process at the memory limit (peak {})",
                self.usage.memory_peak
            )),
            Status::Killed if self.stopped == Some(Stop::Cancelled) => {
                Some("cancelled by the caller; the sandbox stopped the run".into())
            }
            Status::Killed => {
                let sig = self.signal().unwrap_or(0);
                Some(format!("killed by signal {sig} ({})", signal_name(sig)))
            }
            _ => None,
        }
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
        let mut o = ProcessOutcome {
            exit: Exit::Signal(9),
            ..Default::default()
        };
        assert_eq!(o.status(), Status::Killed);
        o.oom_killed = true;
        assert_eq!(o.status(), Status::MemoryLimit);
    }

    #[test]
    fn limits_the_sandbox_enforced_win() {
        let o = ProcessOutcome {
            exit: Exit::Signal(9),
            stopped: Some(Stop::Timeout),
            oom_killed: true,
            ..Default::default()
        };
        assert_eq!(o.status(), Status::Timeout);
        let o = ProcessOutcome {
            exit: Exit::Code(3),
            ..Default::default()
        };
        assert_eq!(o.status(), Status::Error);
        assert_eq!(ProcessOutcome::default().status(), Status::Success);
    }
}
