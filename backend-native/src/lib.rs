//! The native Linux backend of vana-sandbox: no daemon, one fresh set of namespaces per run.
//!
//! Every run is cloned straight from the host process into new pid, mount, network, IPC, UTS and
//! cgroup namespaces. The child becomes PID 1 of the sandbox: it joins the run's cgroup, builds a
//! read-only root of bind mounts, `pivot_root`s into it, drops to an unprivileged user with no
//! capabilities and `no_new_privs`, forks the program, reaps everything and exits with the
//! program. When PID 1 exits the kernel kills whatever is left in the namespace. The parent
//! enforces the wall-clock limit, drains output with a byte cap and removes the cgroup.
//!
//! Nothing between clone and exec allocates or takes a lock (see [`child`](crate::child)), so the
//! host may be multi-threaded (tokio, Python).
//!
//! The backend needs root. Leftovers of a crashed host process (cgroups, instance mounts) are
//! removed when an executor is created.

pub mod cgroup;
mod child;
mod probe;
mod rootfs;
mod spawn;
mod sys;
mod workspace;

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use vana_sandbox_core::{
    BackendError, Capabilities, Executor, FileEntry, Instance, InstanceSpec, ProcessIo,
    ProcessOutcome, ProcessSpec, ResourceUsage, SecurityEvent,
};

use crate::cgroup::{CgroupDriver, CgroupLimits};
use crate::rootfs::{Ids, InstanceDirs, Op};
use crate::workspace::Workspace;

pub use workspace::MAX_READ_BYTES;

/// Settings of the native backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeConfig {
    /// Host directory for the backend's state (instance mounts, the root mount point).
    pub state_dir: PathBuf,
    /// uid the program runs as (should not belong to any host user).
    pub uid: u32,
    /// gid the program runs as.
    pub gid: u32,
}

impl Default for NativeConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/vana-sandbox"),
            uid: 61000,
            gid: 61000,
        }
    }
}

/// What [`NativeExecutor::cleanup_stale`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Instance workspaces unmounted and removed.
    pub instances: usize,
    /// Cgroups killed and removed.
    pub cgroups: usize,
}

struct Shared {
    config: NativeConfig,
    cgroups: Arc<dyn CgroupDriver>,
    root: PathBuf,
    instances: PathBuf,
    owner: (u32, u64),
    seq: AtomicU64,
    degraded: Vec<SecurityEvent>,
}

/// The native backend.
pub struct NativeExecutor {
    shared: Arc<Shared>,
    caps: Capabilities,
}

impl std::fmt::Debug for NativeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeExecutor")
            .field("config", &self.shared.config)
            .field("cgroups", &self.shared.cgroups.version())
            .finish()
    }
}

impl NativeExecutor {
    /// An executor with the default settings.
    pub fn new() -> Result<Self, BackendError> {
        Self::with_config(NativeConfig::default())
    }

    /// An executor with `config`. Fails when the host cannot enforce the base layers (not root,
    /// no usable cgroup controllers), and removes leftovers of crashed processes.
    pub fn with_config(config: NativeConfig) -> Result<Self, BackendError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(BackendError::Unavailable(
                "the native backend needs root (an unprivileged user-namespace mode is not implemented yet)".into(),
            ));
        }
        let cgroups = cgroup::detect().map_err(|e| BackendError::Unavailable(e.to_string()))?;
        let root = config.state_dir.join("root");
        let instances = config.state_dir.join("instances");
        for dir in [&config.state_dir, &root, &instances] {
            std::fs::create_dir_all(dir)
                .map_err(|e| BackendError::setup(format!("create {}", dir.display()), e))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| BackendError::setup(format!("chmod {}", dir.display()), e))?;
        }
        let caps = probe::probe(cgroups.as_ref());
        let degraded = caps
            .layers
            .iter()
            .filter(|l| !l.available && l.name == "cgroup_memory_swap")
            .map(|l| SecurityEvent::new("layer_degraded", format!("{}: {}", l.name, l.detail)))
            .collect();
        let shared = Shared {
            config,
            cgroups,
            root,
            instances,
            owner: (std::process::id(), sys::self_start_ticks()),
            seq: AtomicU64::new(0),
            degraded,
        };
        let exec = Self {
            shared: Arc::new(shared),
            caps,
        };
        let cleaned = exec.cleanup_stale();
        if cleaned != CleanupReport::default() {
            tracing::info!(?cleaned, "removed leftovers of crashed sandbox hosts");
        }
        Ok(exec)
    }

    /// Removes instance mounts and cgroups whose owning process no longer exists.
    pub fn cleanup_stale(&self) -> CleanupReport {
        let s = &self.shared;
        let mut report = CleanupReport {
            cgroups: s.cgroups.remove_stale(&cgroup::name_is_stale),
            instances: 0,
        };
        if let Ok(rd) = std::fs::read_dir(&s.instances) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if cgroup::name_is_stale(&name) {
                    let path = entry.path();
                    if workspace::unmount(&path).is_ok() && std::fs::remove_dir(&path).is_ok() {
                        report.instances += 1;
                    }
                }
            }
        }
        report
    }

    /// The cgroup hierarchy in use (`v1` or `v2`).
    pub fn cgroup_version(&self) -> &'static str {
        self.shared.cgroups.version()
    }
}

#[async_trait]
impl Executor for NativeExecutor {
    fn name(&self) -> &'static str {
        "native"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, BackendError> {
        self.caps.check_required(&spec.require)?;
        if spec.network != vana_sandbox_core::NetworkMode::None {
            return Err(BackendError::Unavailable(
                "the native backend has no network proxy yet".into(),
            ));
        }
        let s = &self.shared;
        let (pid, start) = s.owner;
        let name = cgroup::run_name(pid, start, s.seq.fetch_add(1, Ordering::Relaxed));
        let ws = Workspace::create(
            s.instances.join(&name),
            spec.disk_bytes,
            s.config.uid,
            s.config.gid,
        )?;
        let dirs = InstanceDirs {
            workspace: &ws.workspace(),
            tmp: &ws.dir.join("tmp"),
            shm: &ws.dir.join("shm"),
        };
        let ops = rootfs::plan(
            &s.root,
            &dirs,
            &spec.mounts,
            Ids {
                uid: s.config.uid,
                gid: s.config.gid,
            },
        )
        .map_err(|e| BackendError::setup("planning the root filesystem", e))?;
        let root = CString::new(s.root.as_os_str().as_encoded_bytes())
            .map_err(|_| BackendError::Other("state directory contains NUL".into()))?;
        Ok(Box::new(NativeInstance {
            shared: s.clone(),
            ws: Some(ws),
            name,
            ops: Arc::new(ops),
            root,
            runs: 0,
        }))
    }
}

/// One native instance: a workspace tmpfs on the host plus a planned root; every `run` gets fresh
/// namespaces and a fresh cgroup around the same workspace.
struct NativeInstance {
    shared: Arc<Shared>,
    ws: Option<Workspace>,
    name: String,
    ops: Arc<Vec<Op>>,
    root: CString,
    runs: u64,
}

fn cstrings<'a>(
    what: &str,
    items: impl Iterator<Item = String> + 'a,
) -> Result<Vec<CString>, BackendError> {
    items
        .map(|s| {
            CString::new(s).map_err(|_| BackendError::Other(format!("{what} contains a NUL byte")))
        })
        .collect()
}

impl NativeInstance {
    fn ws(&self) -> Result<&Workspace, BackendError> {
        self.ws
            .as_ref()
            .ok_or_else(|| BackendError::Other("instance already destroyed".into()))
    }
}

#[async_trait]
impl Instance for NativeInstance {
    async fn put_files(&mut self, files: &[FileEntry]) -> Result<(), BackendError> {
        self.ws()?.put(files)
    }

    async fn run(
        &mut self,
        process: &ProcessSpec,
        io: ProcessIo,
    ) -> Result<ProcessOutcome, BackendError> {
        self.ws()?;
        self.runs += 1;
        let cg_name = format!("{}-r{}", self.name, self.runs);
        let shared = self.shared.clone();
        let ops = self.ops.clone();
        let root = self.root.clone();
        let argv = cstrings("argv", process.argv.iter().cloned())?;
        let env = cstrings("env", process.env.iter().map(|(k, v)| format!("{k}={v}")))?;
        let cwd = CString::new(process.cwd.clone())
            .map_err(|_| BackendError::Other("cwd contains a NUL byte".into()))?;
        if argv.is_empty() {
            return Err(BackendError::Other("empty argv".into()));
        }
        let limits = process.limits;
        let outcome = tokio::task::spawn_blocking(
            move || -> Result<(ProcessOutcome, cgroup::CgroupStats), BackendError> {
                let cg_limits = CgroupLimits {
                    memory_bytes: limits.memory_bytes,
                    cpus: limits.cpus,
                    max_processes: limits.max_processes,
                };
                let mut cg = shared
                    .cgroups
                    .create(&cg_name, &cg_limits)
                    .map_err(|e| BackendError::Other(e.to_string()))?;
                let launch = spawn::Launch {
                    ops: &ops,
                    root: &root,
                    uid: shared.config.uid,
                    gid: shared.config.gid,
                    cwd: &cwd,
                    argv: &argv,
                    env: &env,
                    limits,
                    stdin: &io.stdin,
                    sink: io.sink,
                };
                let raw = spawn::launch(launch, cg.as_mut());
                cg.sample();
                let stats = cg.stats();
                let removed = cg.remove();
                let raw = raw?;
                removed
                    .map_err(|e| BackendError::Other(format!("removing the run's cgroup: {e}")))?;
                let cpu = if stats.cpu_ns > 0 {
                    stats.cpu_ns as f64 / 1e9
                } else {
                    raw.rusage_cpu.as_secs_f64()
                };
                let mem = if stats.memory_peak > 0 {
                    stats.memory_peak
                } else {
                    raw.rusage_maxrss
                };
                let outcome = ProcessOutcome {
                    exit_code: raw.exit_code,
                    signal: raw.signal,
                    stdout: raw.stdout,
                    stderr: raw.stderr,
                    truncated: raw.truncated,
                    timed_out: raw.timed_out,
                    output_limit_hit: raw.output_limit_hit,
                    oom_killed: stats.oom_kills > 0,
                    pids_limit_hits: stats.pids_max_hits,
                    wall_time: raw.wall_time,
                    usage: ResourceUsage::new(cpu, mem, 0, stats.pids_peak.max(1)),
                    security_events: shared.degraded.clone(),
                };
                Ok((outcome, stats))
            },
        )
        .await
        .map_err(|e| BackendError::Other(format!("sandbox supervisor thread failed: {e}")))?;
        let (mut outcome, _stats) = outcome?;
        let disk = self.ws()?.usage().unwrap_or(0);
        outcome.usage = ResourceUsage::new(
            outcome.usage.cpu_time,
            outcome.usage.memory_peak_bytes,
            disk,
            outcome.usage.processes_peak,
        );
        Ok(outcome)
    }

    async fn read_files(&mut self, paths: &[String]) -> Result<Vec<FileEntry>, BackendError> {
        self.ws()?.read(paths)
    }

    async fn disk_usage(&mut self) -> Result<u64, BackendError> {
        self.ws()?
            .usage()
            .map_err(|e| BackendError::setup("statvfs workspace", e))
    }

    async fn destroy(mut self: Box<Self>) -> Result<(), BackendError> {
        match self.ws.take() {
            Some(mut ws) => ws.remove(),
            None => Ok(()),
        }
    }
}
