//! What the Engine hands to a backend: the evaluated policy ([`SandboxSpec`]), the environment to
//! create ([`InstanceSpec`]) and a process to run in it ([`ProcessSpec`]). What comes back is a
//! [`ProcessOutcome`](crate::outcome::ProcessOutcome).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::capabilities::{LayerName, Runtime};
use crate::compile_cache::CacheScope;
use crate::limits::Limits;
use crate::packages::PackagePlan;

/// How the sandbox reaches the network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// No network at all: an empty network namespace (loopback only).
    #[default]
    None,
    /// Only what the egress policy allows, through the host-side proxy; the namespace itself
    /// still has no route out.
    Proxy(EgressPolicy),
}

/// What a run's egress proxy enforces (decided by the policy; a request can only narrow it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EgressPolicy {
    /// Allow rules (`example.com`, `*.example.org`, `host:port`, a CIDR).
    pub allow: Vec<String>,
    /// Deny rules: deny wins.
    pub deny: Vec<String>,
    /// Only GET and HEAD over plain HTTP (no CONNECT tunnels).
    pub read_only: bool,
    /// Requests per second (`None`: unlimited).
    pub requests_per_second: Option<u32>,
    /// Concurrent connections to the proxy.
    pub max_connections: u32,
    /// Bytes the sandbox may send in all.
    pub max_bytes_up: u64,
    /// Bytes the sandbox may receive in all.
    pub max_bytes_down: u64,
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

/// The outcome of policy evaluation: everything a run may use, decided. Backends receive these
/// values and never re-decide them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Limits of the run step.
    pub limits: Limits,
    /// Ceiling of compile steps (each language's defaults are capped by it).
    pub compile_limits: Limits,
    /// Network access.
    pub network: NetworkMode,
    /// Isolation layers that must be enforced (fail closed when missing).
    pub require: Vec<LayerName>,
    /// Container runtime, for backends that have one.
    pub runtime: Option<Runtime>,
    /// Language guards to apply.
    pub guards: Guards,
    /// Optimisation level for compiled languages (0-3).
    pub opt_level: u8,
    /// Who may share compiled artifacts.
    pub cache_scope: CacheScope,
    /// The request's packages and the policy's rules for them (`None`: the request asks for
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<PackagePlan>,
    /// Name of the policy that produced this spec.
    pub policy_name: String,
    /// Fingerprint of the effective policy.
    pub policy_fingerprint: String,
}

/// A read-only bind of a host path into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// Path on the host.
    pub host: String,
    /// Path inside the sandbox.
    pub sandbox: String,
    /// What the host does with the path while it is mounted.
    #[serde(default)]
    pub kind: MountKind,
}

impl Mount {
    /// A mount of part of the host's installation (a toolchain).
    pub fn host(host: impl Into<String>, sandbox: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            sandbox: sandbox.into(),
            kind: MountKind::Host,
        }
    }
}

/// What the host does with a mounted path while an instance lives, which decides how a backend
/// may present it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// Part of the host's installation (a toolchain): the same for every instance and never
    /// changed. A backend may present a copy or an overlay, and may prepare instances with it
    /// ahead of requests.
    #[default]
    Host,
    /// Prepared for one request (a checked package set): not changed while mounted, held by the
    /// engine until the instance is destroyed. Presented like [`Host`](Self::Host), but never
    /// prepared ahead (nothing holds it for an instance no request has claimed yet).
    Prepared,
    /// A directory the host adds to while the instance lives (a session's packages): presented
    /// as a plain read-only bind, so that additions appear inside (an overlay's view of a lower
    /// directory that changes underneath is undefined). Never prepared ahead.
    Live,
}

/// What a backend needs to create one isolated environment.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// Execution (or session) id, for labels and logs.
    pub id: String,
    /// Canonical language name: a key for backends that pick an environment per language (the
    /// Docker backend's image map); never used to change how a program runs.
    pub language: String,
    /// The instance's envelope: large enough for every step it will run (memory, CPU,
    /// processes); `disk` sizes the writable storage. Each `run` carries its own limits within.
    pub limits: Limits,
    /// Container runtime, for backends that have one.
    pub runtime: Option<Runtime>,
    /// Extra read-only binds (language toolchains, prepared packages, a session's packages).
    pub mounts: Vec<Mount>,
    /// Network access.
    pub network: NetworkMode,
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
    /// The name the program is started under (what it sees as its `argv[0]`), when not its
    /// path: an interpreter finds its environment by it (Python's `pyvenv.cfg`).
    pub arg0: Option<String>,
    /// The complete environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: String,
    /// Limits of this process tree.
    pub limits: Limits,
}

/// Which output stream a chunk came from (`"stdout"` / `"stderr"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives output chunks as they arrive (streaming).
pub type OutputSink = Box<dyn FnMut(StreamKind, &[u8]) + Send>;

/// What a process reads on standard input.
pub enum Stdin {
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// The read end of a pipe the caller writes to for as long as it likes (a session's kernel
    /// takes its requests this way); end of file when the caller closes its end.
    Pipe(OwnedFd),
}

impl Default for Stdin {
    fn default() -> Self {
        Stdin::Bytes(Vec::new())
    }
}

impl std::fmt::Debug for Stdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stdin::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Stdin::Pipe(fd) => write!(f, "Pipe({})", fd.as_raw_fd()),
        }
    }
}

/// What happens to a process's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Kept in the outcome up to the output limit (forwarded to the sink as it comes); the run is
    /// stopped past the limit.
    #[default]
    Capture,
    /// Only forwarded to the sink, nothing kept and no limit applied: the consumer counts (a
    /// session's kernel lives across many cells, each with limits of its own).
    Stream,
}

/// Stops a running process from outside (a cancelled call, a session's killed cell). Cheap to
/// clone; every clone fires the same signal. Poll-based supervisors watch
/// [`as_raw_fd`](Self::as_raw_fd) (readable once fired), async ones await
/// [`fired`](Self::fired).
#[derive(Clone)]
pub struct StopSignal(Arc<StopInner>);

struct StopInner {
    fired: AtomicBool,
    eventfd: OwnedFd,
    notify: tokio::sync::Notify,
}

impl StopSignal {
    /// A signal not yet fired.
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd with constant flags; the descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(Arc::new(StopInner {
            fired: AtomicBool::new(false),
            // SAFETY: a descriptor the kernel just returned to us.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            notify: tokio::sync::Notify::new(),
        })))
    }

    /// Fires the signal (idempotent).
    pub fn fire(&self) {
        if !self.0.fired.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: an 8-byte write from a local to our eventfd.
            unsafe { libc::write(self.0.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            self.0.notify.notify_waiters();
        }
    }

    /// Whether it was fired.
    pub fn is_fired(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// A descriptor that becomes readable once the signal fires (never read it).
    pub fn as_raw_fd(&self) -> RawFd {
        self.0.eventfd.as_raw_fd()
    }

    /// Completes once the signal fires.
    pub async fn fired(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_fired() {
                return;
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignal")
            .field("fired", &self.is_fired())
            .finish()
    }
}

/// Standard input, output handling and an optional stop signal for one process.
#[derive(Default)]
pub struct ProcessIo {
    /// What the process reads.
    pub stdin: Stdin,
    /// Called with each chunk of output as it arrives (within the output limit in
    /// [`OutputMode::Capture`]).
    pub sink: Option<OutputSink>,
    /// Whether output is kept or only streamed.
    pub output: OutputMode,
    /// Stops the process when fired ([`Stop::Cancelled`](crate::outcome::Stop::Cancelled)).
    pub stop: Option<StopSignal>,
}

impl ProcessIo {
    /// `stdin` bytes, output captured, an optional sink.
    pub fn bytes(stdin: Vec<u8>, sink: Option<OutputSink>) -> Self {
        Self {
            stdin: Stdin::Bytes(stdin),
            sink,
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo")
            .field("stdin", &self.stdin)
            .field("sink", &self.sink.is_some())
            .field("output", &self.output)
            .field("stop", &self.stop)
            .finish()
    }
}
