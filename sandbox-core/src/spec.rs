//! What the Engine hands to a backend: the evaluated policy ([`SandboxSpec`]), the environment to
//! create ([`InstanceSpec`]), a process to run in it ([`ProcessSpec`]) and what came back
//! ([`ProcessOutcome`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::result::{ResourceUsage, SecurityEvent, Truncated};

/// Effective limits of one step, after policy evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcessLimits {
    /// Memory plus swap, in bytes.
    pub memory_bytes: u64,
    /// CPU share in cores (quota per period).
    pub cpus: f64,
    /// Processes and threads alive at once.
    pub max_processes: u64,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Bytes of stdout and stderr together.
    pub max_output_bytes: u64,
    /// CPU time per process (`RLIMIT_CPU`), when set.
    #[serde(default)]
    pub cpu_time: Option<Duration>,
}

/// How the sandbox reaches the network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// No network at all: an empty network namespace (loopback only).
    #[default]
    None,
    /// Only the listed domains, through the host-side proxy.
    Allowlist(Vec<String>),
}

/// Language guards: defence in depth inside the interpreter, reported as security events. They
/// are never the boundary (the backend is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guards {
    /// Python runs isolated (`-I`) under an audit hook that reports subprocesses, sockets, ctypes
    /// and writes outside /workspace and /tmp.
    pub python_audit: bool,
    /// Node runs under its permission model (writes only in /workspace and /tmp, no child
    /// processes, workers or native addons) where the installed version has one.
    pub node_permissions: bool,
    /// Bash runs in restricted mode (`bash -r`).
    pub bash_restricted: bool,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            python_audit: true,
            node_permissions: true,
            bash_restricted: false,
        }
    }
}

/// The outcome of policy evaluation: everything a run may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Limits of the run step.
    pub limits: ProcessLimits,
    /// Writable workspace and /tmp together, in bytes.
    pub disk_bytes: u64,
    /// Network access.
    pub network: NetworkMode,
    /// Isolation layers that must be enforced (fail closed when missing).
    pub require: Vec<String>,
    /// Fingerprint of the effective policy.
    pub policy_fingerprint: String,
    /// Container runtime (`runc`, `runsc`) for backends that have one.
    #[serde(default)]
    pub runtime: Option<String>,
    /// Name of the policy that produced this spec.
    pub policy_name: String,
    /// Language guards to apply.
    #[serde(default)]
    pub guards: Guards,
    /// Ceiling for compile steps (each language's defaults are capped by it).
    pub compile_limits: ProcessLimits,
    /// Optimisation level for compiled languages (0-3).
    #[serde(default)]
    pub opt_level: u8,
    /// Who may share compiled artifacts.
    #[serde(default)]
    pub cache_scope: crate::compile_cache::CacheScope,
}

/// A read-only bind of a host path into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// Path on the host.
    pub host: String,
    /// Path inside the sandbox.
    pub sandbox: String,
}

/// What a backend needs to create one isolated environment.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// Execution id, for labels and logs.
    pub id: String,
    /// Canonical language name: a key for backends that pick an environment per language (the
    /// Docker backend's image map); never used to change how a program runs.
    pub language: String,
    /// Limits of the run step (backends that size the environment up front, such as a container,
    /// use them; each `run` still carries its own limits).
    pub limits: ProcessLimits,
    /// Container runtime asked for by the policy (`runc`, `runsc`), for backends that have one.
    pub runtime: Option<String>,
    /// Writable workspace and /tmp together, in bytes.
    pub disk_bytes: u64,
    /// Extra read-only binds (language toolchains).
    pub mounts: Vec<Mount>,
    /// Network access.
    pub network: NetworkMode,
    /// Layers that must be enforced.
    pub require: Vec<String>,
}

/// A file to place in (or read from) the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path inside /workspace.
    pub path: String,
    /// Content.
    pub content: Vec<u8>,
    /// Whether to mark it executable.
    pub executable: bool,
}

/// One process to run inside an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// Program and arguments; `argv[0]` is an absolute path inside the sandbox.
    pub argv: Vec<String>,
    /// The complete environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: String,
    /// Limits of this process tree.
    pub limits: ProcessLimits,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives output chunks as they arrive (streaming).
pub type OutputSink = Box<dyn FnMut(StreamKind, &[u8]) + Send>;

/// Standard input and an optional output sink for one process.
#[derive(Default)]
pub struct ProcessIo {
    /// Bytes fed to standard input, then closed.
    pub stdin: Vec<u8>,
    /// Called with each chunk of output as it arrives (within the output limit).
    pub sink: Option<OutputSink>,
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo")
            .field("stdin_len", &self.stdin.len())
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

/// What happened to one process tree. Backends fill it; the Engine turns it into a status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessOutcome {
    /// Exit status when the main process exited.
    pub exit_code: Option<i32>,
    /// Signal when the main process was killed by one.
    pub signal: Option<i32>,
    /// Captured stdout (at most the output limit).
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Which streams were cut.
    pub truncated: Truncated,
    /// The wall-clock limit was hit and the tree killed.
    pub timed_out: bool,
    /// The output limit was hit and the tree killed.
    pub output_limit_hit: bool,
    /// The kernel's OOM killer killed a process of the tree (evidence from the cgroup).
    pub oom_killed: bool,
    /// Times the process limit refused a fork.
    pub pids_limit_hits: u64,
    /// Wall-clock time of the tree.
    pub wall_time: Duration,
    /// Resources used.
    pub usage: ResourceUsage,
    /// Security events observed by the backend.
    pub security_events: Vec<SecurityEvent>,
}
