//! Security events: what a run's result says happened beyond its exit, and who says so.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A step of an execution. **Contract**: `compile`, `run` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The compile step.
    Compile,
    /// The run step.
    Run,
}

impl Phase {
    /// `compile` or `run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Compile => "compile",
            Phase::Run => "run",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The kind of a security event. **Contract**: the snake-case wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityEventKind {
    /// A limit stopped or refused something (the process limit refused forks, …).
    LimitHit,
    /// The seccomp filter killed the program (evidence from the kernel, not a guess).
    SeccompKill,
    /// An isolation layer the backend normally enforces is missing on this host.
    LayerDegraded,
    /// A language guard reported something (program-reported: see [`Reporter`]).
    LanguageGuard,
    /// Tearing the sandbox down failed.
    CleanupFailed,
    /// Which runtime isolated the run (e.g. gVisor).
    Runtime,
}

impl SecurityEventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityEventKind::LimitHit => "limit_hit",
            SecurityEventKind::SeccompKill => "seccomp_kill",
            SecurityEventKind::LayerDegraded => "layer_degraded",
            SecurityEventKind::LanguageGuard => "language_guard",
            SecurityEventKind::CleanupFailed => "cleanup_failed",
            SecurityEventKind::Runtime => "runtime",
        }
    }
}

impl fmt::Display for SecurityEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who reported an event. The sandbox's own channels (the kernel, the cgroup, our init's status
/// pipe) cannot be written by the program; anything read from inside the sandbox can.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reporter {
    /// The sandbox itself, from a channel the program cannot write.
    #[default]
    Sandbox,
    /// Something running inside the sandbox (a language guard): a report, never a decision.
    Program,
}

impl Reporter {
    fn is_sandbox(&self) -> bool {
        *self == Reporter::Sandbox
    }
}

/// A security-relevant observation made during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// What kind.
    pub kind: SecurityEventKind,
    /// Human-readable detail.
    pub detail: String,
    /// Which step it happened in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Who reported it (`program` on the wire only for program reports).
    #[serde(default, skip_serializing_if = "Reporter::is_sandbox")]
    pub source: Reporter,
}

impl SecurityEvent {
    /// An event reported by the sandbox.
    pub fn new(kind: SecurityEventKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            phase: None,
            source: Reporter::Sandbox,
        }
    }

    /// An event reported by something inside the sandbox.
    pub fn program(kind: SecurityEventKind, detail: impl Into<String>) -> Self {
        Self {
            source: Reporter::Program,
            ..Self::new(kind, detail)
        }
    }

    /// The same event, tagged with `phase` unless it has one.
    pub fn in_phase(mut self, phase: Phase) -> Self {
        self.phase.get_or_insert(phase);
        self
    }
}
