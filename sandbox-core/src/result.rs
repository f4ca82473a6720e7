//! The execution result: every field of the plan's response, plus what an honest account of a
//! run needs (status, signal, usage in bytes, truncation, security events, backend).

use serde::{Deserialize, Serialize};

use crate::units::human_bytes;

/// How a run ended. **Contract**: the set of values and their meaning are relied on by users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The program exited with status 0.
    Success,
    /// The program exited with a non-zero status.
    Error,
    /// The compile step failed.
    CompileError,
    /// The wall-clock limit was reached and the sandbox was killed.
    Timeout,
    /// The kernel killed a process for exceeding the memory limit (OOM evidence from the cgroup).
    MemoryLimit,
    /// stdout and stderr together exceeded the output limit; the sandbox was stopped.
    OutputLimit,
    /// The program was killed by a signal (e.g. SIGSYS from seccomp).
    Killed,
    /// The request broke validation or policy: nothing ran.
    Rejected,
    /// The sandbox itself failed.
    SandboxError,
}

impl Status {
    /// The wire name (`"success"`, `"memory_limit"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::CompileError => "compile_error",
            Status::Timeout => "timeout",
            Status::MemoryLimit => "memory_limit",
            Status::OutputLimit => "output_limit",
            Status::Killed => "killed",
            Status::Rejected => "rejected",
            Status::SandboxError => "sandbox_error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resources a step used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// CPU time (user + system) of every process of the step, in seconds.
    pub cpu_time: f64,
    /// Peak memory, human-readable (`"12MB"`).
    pub memory_peak: String,
    /// Peak memory in bytes.
    pub memory_peak_bytes: u64,
    /// Bytes used in the writable workspace and /tmp, human-readable.
    pub disk_usage: String,
    /// Bytes used in the writable workspace and /tmp.
    pub disk_usage_bytes: u64,
    /// Most processes and threads alive at once (sampled where the kernel keeps no peak).
    pub processes_peak: u64,
}

impl ResourceUsage {
    /// Builds a usage record, filling in the human-readable fields.
    pub fn new(
        cpu_time: f64,
        memory_peak_bytes: u64,
        disk_usage_bytes: u64,
        processes_peak: u64,
    ) -> Self {
        Self {
            cpu_time,
            memory_peak: human_bytes(memory_peak_bytes),
            memory_peak_bytes,
            disk_usage: human_bytes(disk_usage_bytes),
            disk_usage_bytes,
            processes_peak,
        }
    }
}

/// Which output streams were cut at the output limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    /// stdout was cut.
    pub stdout: bool,
    /// stderr was cut.
    pub stderr: bool,
}

/// A security-relevant observation made during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// Short machine-readable kind, e.g. `limit_hit`, `seccomp_kill`, `layer_degraded`.
    pub kind: String,
    /// Human-readable detail.
    pub detail: String,
    /// Which step it happened in (`compile` or `run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl SecurityEvent {
    /// A new event.
    pub fn new(kind: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.into(),
            phase: None,
        }
    }
}

/// The outcome of a compile step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompileReport {
    /// `success`, `compile_error`, `timeout`, `memory_limit`, …
    pub status: Status,
    /// Compiler stdout.
    pub output: String,
    /// Compiler stderr or the reason it failed.
    pub error: Option<String>,
    /// Wall-clock seconds.
    pub execution_time: f64,
    /// Resources the compiler used.
    pub resource_usage: ResourceUsage,
    /// Whether the binary came from the compile cache (the compiler did not run).
    #[serde(default)]
    pub cached: bool,
}

/// The result of one execution. Every field of the plan's response is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionResult {
    /// The request id (given or generated).
    pub id: String,
    /// How the run ended.
    pub status: Status,
    /// Exit status when the program exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when the program was killed by a signal.
    pub signal: Option<i32>,
    /// The program's stdout (lossy UTF-8), cut at the output limit.
    pub output: String,
    /// stderr for `success`/`error`, otherwise the reason for the status; `null` when empty.
    pub error: Option<String>,
    /// The program's stderr (lossy UTF-8), cut at the output limit.
    #[serde(default)]
    pub stderr: String,
    /// Wall-clock seconds of the run step.
    pub execution_time: f64,
    /// Resources the run step used.
    pub resource_usage: ResourceUsage,
    /// The compile step, for compiled languages.
    pub compile: Option<CompileReport>,
    /// Which streams were cut.
    pub truncated: Truncated,
    /// Security events observed (limit hits, degraded layers, guard reports).
    pub security_events: Vec<SecurityEvent>,
    /// Backend that ran it (`native`, `docker`), or `none` when nothing ran.
    pub backend: String,
    /// Canonical language name.
    pub language: String,
    /// Fingerprint of the effective policy, for audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_fingerprint: Option<String>,
}

impl ExecutionResult {
    /// A result for a request that was refused before anything ran.
    pub fn rejected(
        id: impl Into<String>,
        language: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::not_run(id, language, Status::Rejected, reason)
    }

    /// A result for a run the sandbox could not carry out.
    pub fn sandbox_error(
        id: impl Into<String>,
        language: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::not_run(id, language, Status::SandboxError, reason)
    }

    fn not_run(
        id: impl Into<String>,
        language: impl Into<String>,
        status: Status,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            status,
            exit_code: None,
            signal: None,
            output: String::new(),
            error: Some(reason.into()),
            stderr: String::new(),
            execution_time: 0.0,
            resource_usage: ResourceUsage::new(0.0, 0, 0, 0),
            compile: None,
            truncated: Truncated::default(),
            security_events: Vec::new(),
            backend: "none".into(),
            language: language.into(),
            policy_fingerprint: None,
        }
    }

    /// Whether the program ran and exited with status 0.
    pub fn is_success(&self) -> bool {
        self.status == Status::Success
    }

    /// The result as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"status\":\"sandbox_error\",\"error\":\"{e}\"}}"))
    }
}
