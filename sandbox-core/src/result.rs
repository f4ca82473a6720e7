//! The execution result: every field of the plan's response, plus what an honest account of a
//! run needs (status, signal, usage in bytes, truncation, security events, backend). Assembly
//! from a step's [`ProcessOutcome`] lives here too, so the result has one constructor per way a
//! run can end.

use serde::{Deserialize, Serialize};

use crate::capabilities::BackendKind;
use crate::events::SecurityEvent;
use crate::limits::Limits;
use crate::outcome::{ProcessOutcome, Usage};
use crate::packages::PackagesReport;

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
    /// Every status, for metrics and documentation.
    pub const ALL: [Status; 9] = [
        Status::Success,
        Status::Error,
        Status::CompileError,
        Status::Timeout,
        Status::MemoryLimit,
        Status::OutputLimit,
        Status::Killed,
        Status::Rejected,
        Status::SandboxError,
    ];

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
        f.pad(self.as_str())
    }
}

/// Resources a step used, as the plan's JSON shows them (human strings beside the numbers).
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

impl From<&Usage> for ResourceUsage {
    fn from(u: &Usage) -> Self {
        Self {
            cpu_time: u.cpu.as_secs_f64(),
            memory_peak: u.memory_peak.to_string(),
            memory_peak_bytes: u.memory_peak.get(),
            disk_usage: u.disk.to_string(),
            disk_usage_bytes: u.disk.get(),
            processes_peak: u.processes_peak,
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

/// The outcome of a compile step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompileReport {
    /// `success`, `error`, `timeout`, `memory_limit`, …
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

impl CompileReport {
    /// The report of a compile step that ran under `limits`.
    pub fn of(outcome: &ProcessOutcome, limits: &Limits) -> Self {
        Self {
            status: outcome.status(),
            output: lossy(&outcome.stdout),
            error: outcome
                .reason(limits)
                .or_else(|| (!outcome.stderr.is_empty()).then(|| lossy(&outcome.stderr))),
            execution_time: outcome.wall_time.as_secs_f64(),
            resource_usage: ResourceUsage::from(&outcome.usage),
            cached: false,
        }
    }

    /// The report of a cache hit: the compiler did not run.
    pub fn cached() -> Self {
        Self {
            status: Status::Success,
            output: String::new(),
            error: None,
            execution_time: 0.0,
            resource_usage: ResourceUsage::from(&Usage::default()),
            cached: true,
        }
    }
}

/// `Option<BackendKind>` on the wire: the backend's name, or `"none"` when nothing ran.
mod backend_or_none {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::capabilities::BackendKind;

    pub fn serialize<S: Serializer>(b: &Option<BackendKind>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(b.map_or("none", BackendKind::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BackendKind>, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "none" => Ok(None),
            "native" => Ok(Some(BackendKind::Native)),
            "docker" => Ok(Some(BackendKind::Docker)),
            "fake" => Ok(Some(BackendKind::Fake)),
            other => Err(serde::de::Error::custom(format!(
                "unknown backend `{other}`"
            ))),
        }
    }
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
    /// Backend that ran it; `"none"` on the wire when nothing ran.
    #[serde(with = "backend_or_none")]
    pub backend: Option<BackendKind>,
    /// Canonical language name.
    pub language: String,
    /// Fingerprint of the effective policy, for audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_fingerprint: Option<String>,
    /// Files of the workspace the request named in `outputs` (and, in a session, figures).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<OutputFile>,
    /// Rich outputs of a session cell: the value of a trailing expression, figures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<DisplayData>,
    /// The exception a session cell raised, as the kernel reported it (program-reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<CellException>,
    /// The session this ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionReport>,
    /// The packages the request asked for: what was installed (every `name`/`version`,
    /// dependencies included), whether it came from the cache, its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<PackagesReport>,
    /// What the egress proxy allowed and refused, for a run with network access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::Summary>,
}

/// A workspace file returned with a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the workspace.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type guessed from the name (`application/octet-stream` when unknown).
    pub mime_type: String,
    /// The content, base64; absent when the file was over the size cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// One rich output: media type → data (text as is, binary formats base64), like a notebook's
/// display data (`text/plain`, `image/png`, …).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayData(pub std::collections::BTreeMap<String, String>);

/// An exception raised by a session cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellException {
    /// The exception's type (`ZeroDivisionError`, `ReferenceError`).
    pub name: String,
    /// Its message.
    pub value: String,
    /// The traceback as text.
    pub traceback: String,
}

/// What a session says about a cell's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The session's id.
    pub id: String,
    /// The cell's number in the session (from 1).
    pub cell: u64,
    /// The kernel was restarted after this cell (timeout, memory, crash): state is lost.
    pub kernel_restarted: bool,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl ExecutionResult {
    /// A result for a request that was refused before anything ran.
    pub fn rejected(
        id: impl Into<String>,
        language: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::not_run(id, language, Status::Rejected, Some(reason.into()))
    }

    /// A result for a run the sandbox could not carry out.
    pub fn sandbox_error(
        id: impl Into<String>,
        language: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::not_run(id, language, Status::SandboxError, Some(reason.into()))
    }

    /// A result for a program whose compile step failed (the program never ran).
    pub fn compile_failed(
        id: impl Into<String>,
        language: impl Into<String>,
        backend: BackendKind,
        outcome: &ProcessOutcome,
        limits: &Limits,
    ) -> Self {
        let report = CompileReport::of(outcome, limits);
        let error = match report.status {
            Status::Error => lossy(&outcome.stderr),
            _ => format!(
                "the compile step stopped at its limits: {}",
                report.error.as_deref().unwrap_or_default()
            ),
        };
        let mut r = Self::not_run(id, language, Status::CompileError, Some(error));
        r.backend = Some(backend);
        r.compile = Some(report);
        r
    }

    /// The result of a program that ran: its `outcome` under `limits`, after `compile`.
    pub fn finished(
        id: impl Into<String>,
        language: impl Into<String>,
        backend: BackendKind,
        outcome: ProcessOutcome,
        limits: &Limits,
        compile: Option<CompileReport>,
    ) -> Self {
        let status = outcome.status();
        let error = outcome
            .reason(limits)
            .or_else(|| (!outcome.stderr.is_empty()).then(|| lossy(&outcome.stderr)));
        Self {
            id: id.into(),
            status,
            exit_code: outcome.exit_code(),
            signal: outcome.signal(),
            output: lossy(&outcome.stdout),
            error,
            stderr: lossy(&outcome.stderr),
            execution_time: outcome.wall_time.as_secs_f64(),
            resource_usage: ResourceUsage::from(&outcome.usage),
            compile,
            truncated: outcome.truncated,
            security_events: outcome.events,
            backend: Some(backend),
            language: language.into(),
            policy_fingerprint: None,
            files: Vec::new(),
            results: Vec::new(),
            exception: None,
            session: None,
            packages: None,
            network: None,
        }
    }

    fn not_run(
        id: impl Into<String>,
        language: impl Into<String>,
        status: Status,
        error: Option<String>,
    ) -> Self {
        Self {
            id: id.into(),
            status,
            exit_code: None,
            signal: None,
            output: String::new(),
            error,
            stderr: String::new(),
            execution_time: 0.0,
            resource_usage: ResourceUsage::from(&Usage::default()),
            compile: None,
            truncated: Truncated::default(),
            security_events: Vec::new(),
            backend: None,
            language: language.into(),
            policy_fingerprint: None,
            files: Vec::new(),
            results: Vec::new(),
            exception: None,
            session: None,
            packages: None,
            network: None,
        }
    }

    /// Whether the program ran and exited with status 0.
    pub fn is_success(&self) -> bool {
        self.status == Status::Success
    }

    /// The result as JSON.
    pub fn to_json(&self) -> String {
        // Serialising this struct cannot fail: every map key is a string and every float is
        // finite by construction; the fallback still yields valid JSON naming the problem.
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({"id": self.id, "status": "sandbox_error", "error": e.to_string()})
                .to_string()
        })
    }

    /// The wire field names, sorted (the Python package's surface is checked against them).
    pub fn field_names() -> Vec<String> {
        let mut sample = Self::not_run("", "", Status::Success, None);
        sample.policy_fingerprint = Some(String::new());
        sample.files.push(OutputFile {
            path: String::new(),
            size: 0,
            mime_type: String::new(),
            content_base64: None,
        });
        sample.results.push(DisplayData::default());
        sample.exception = Some(CellException {
            name: String::new(),
            value: String::new(),
            traceback: String::new(),
        });
        sample.network = Some(crate::network::Summary::default());
        sample.session = Some(SessionReport {
            id: String::new(),
            cell: 0,
            kernel_restarted: false,
        });
        sample.packages = Some(PackagesReport {
            ecosystem: crate::packages::Ecosystem::Pypi,
            index: String::new(),
            installed: Vec::new(),
            cached: false,
            size_bytes: 0,
            prepare_time: 0.0,
        });
        match serde_json::to_value(&sample) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}
