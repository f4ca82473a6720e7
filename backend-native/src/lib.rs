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
mod landlock;
mod probe;
mod rootfs;
mod seccomp;
mod spawn;
mod sys;
mod workspace;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use vana_sandbox_core::host::OwnerId;
use vana_sandbox_core::{
    BackendError, BackendKind, Bytes, Capabilities, Executor, FileEntry, Instance, InstanceSpec,
    Limits, ProcessIo, ProcessOutcome, ProcessSpec, SecurityEvent, SecurityEventKind,
};

use crate::cgroup::CgroupDriver;
use crate::rootfs::{Ids, InstanceDirs, Op};
use crate::workspace::Workspace;

/// Settings of the native backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeConfig {
    /// Host directory for the backend's state (instance mounts, the root mount point).
    pub state_dir: PathBuf,
    /// First uid (and gid) of the range instances run as. Each live instance gets its own, so
    /// sandboxes cannot signal each other and `RLIMIT_NPROC` counts one sandbox only. The range
    /// must not belong to any host user.
    pub uid_base: u32,
    /// Size of the uid range.
    pub uid_count: u32,
    /// Install the seccomp filter (on by default; off only for debugging).
    pub seccomp: bool,
    /// Apply Landlock where the kernel has it (on by default).
    pub landlock: bool,
}

impl Default for NativeConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/vana-sandbox"),
            uid_base: DEFAULT_UID_BASE,
            uid_count: 65536,
            seccomp: true,
            landlock: true,
        }
    }
}

/// First uid of the default range, far from every uid a distribution hands out (regular users,
/// systemd's dynamic users below 65520, container subuid ranges from 100000 on).
pub const DEFAULT_UID_BASE: u32 = 2_000_000_000;

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
    owner: OwnerId,
    seq: AtomicU64,
    degraded: Vec<SecurityEvent>,
    seccomp: Vec<seccomp::Insn>,
    landlock_abi: u32,
    uids: Mutex<BTreeSet<u32>>,
}

impl Shared {
    /// Takes the lowest free uid slot.
    fn take_uid(&self) -> Result<u32, BackendError> {
        let mut used = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (0..self.config.uid_count)
            .find(|s| !used.contains(s))
            .ok_or_else(|| BackendError::Unavailable("every sandbox uid is in use".into()))?;
        used.insert(slot);
        Ok(slot)
    }

    fn release_uid(&self, slot: u32) {
        self.uids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&slot);
    }

    fn rlimits(
        &self,
        limits: &Limits,
        disk: Bytes,
    ) -> Vec<(libc::__rlimit_resource_t, libc::rlimit)> {
        let clamp = |resource: libc::__rlimit_resource_t, want: u64| {
            // SAFETY: valid pointer to a local struct.
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: as above.
            unsafe { libc::getrlimit(resource, &mut cur) };
            let v = want.min(cur.rlim_max);
            (
                resource,
                libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                },
            )
        };
        let mut v = vec![
            clamp(libc::RLIMIT_CORE, 0),
            clamp(libc::RLIMIT_NOFILE, 4096),
            clamp(libc::RLIMIT_FSIZE, disk.get().max(1)),
            // PID 1 runs as the same uid: one more than the program may have.
            clamp(libc::RLIMIT_NPROC, limits.processes + 1),
            clamp(libc::RLIMIT_STACK, 8 << 20),
            clamp(libc::RLIMIT_MSGQUEUE, 0),
        ];
        if let Some(cpu) = limits.cpu_time {
            v.push(clamp(libc::RLIMIT_CPU, cpu.as_secs().max(1)));
        }
        v
    }
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
        let cgroups = cgroup::detect()
            .map_err(|e| BackendError::backend("finding the cgroup hierarchies", e))?;
        let root = config.state_dir.join("root");
        let instances = config.state_dir.join("instances");
        for dir in [&config.state_dir, &root, &instances] {
            std::fs::create_dir_all(dir)
                .map_err(|e| BackendError::setup(format!("create {}", dir.display()), e))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| BackendError::setup(format!("chmod {}", dir.display()), e))?;
        }
        let landlock_abi = if config.landlock { landlock::abi() } else { 0 };
        let seccomp_on = config.seccomp && seccomp::available();
        let caps = probe::probe(cgroups.as_ref(), landlock_abi, seccomp_on);
        let degraded = caps
            .degraded()
            .map(|l| {
                SecurityEvent::new(
                    SecurityEventKind::LayerDegraded,
                    format!("{}: {}", l.name, l.detail),
                )
            })
            .collect();
        let shared = Shared {
            config,
            cgroups,
            root,
            instances,
            owner: OwnerId::current(),
            seq: AtomicU64::new(0),
            degraded,
            seccomp: if seccomp_on {
                seccomp::build()
            } else {
                Vec::new()
            },
            landlock_abi,
            uids: Mutex::new(BTreeSet::new()),
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
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, BackendError> {
        let s = &self.shared;
        let name = cgroup::run_name(s.owner, s.seq.fetch_add(1, Ordering::Relaxed));
        let slot = s.take_uid()?;
        let uid = UidSlot {
            shared: s.clone(),
            slot,
        };
        let id = s.config.uid_base + slot;
        let ids = Ids { uid: id, gid: id };
        let disk = spec.limits.disk;
        let ws = Workspace::create(s.instances.join(&name), disk, ids.uid, ids.gid)?;
        let dirs = InstanceDirs {
            workspace: &ws.workspace(),
            tmp: &ws.dir.join("tmp"),
            shm: &ws.dir.join("shm"),
        };
        let ops = rootfs::plan(&s.root, &dirs, &spec.mounts, ids)
            .map_err(|e| BackendError::setup("planning the root filesystem", e))?;
        let landlock_rules = rootfs::landlock_rules(&spec.mounts)
            .map_err(|e| BackendError::setup("planning the Landlock rules", e))?;
        let root = CString::new(s.root.as_os_str().as_encoded_bytes())
            .map_err(|_| BackendError::InvalidProcess("the state directory contains a NUL byte"))?;
        Ok(Box::new(NativeInstance {
            shared: s.clone(),
            ws: Some(ws),
            name,
            plan: Arc::new(RunPlan {
                ops,
                landlock_rules,
                ids,
                disk,
            }),
            root,
            runs: 0,
            _uid: uid,
        }))
    }
}

/// A uid slot, returned to the pool when the instance goes.
struct UidSlot {
    shared: Arc<Shared>,
    slot: u32,
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        self.shared.release_uid(self.slot);
    }
}

/// What every run of an instance reuses.
struct RunPlan {
    ops: Vec<Op>,
    landlock_rules: Vec<landlock::Rule>,
    ids: Ids,
    disk: Bytes,
}

/// One native instance: a workspace tmpfs on the host plus a planned root; every `run` gets fresh
/// namespaces and a fresh cgroup around the same workspace.
struct NativeInstance {
    shared: Arc<Shared>,
    ws: Option<Workspace>,
    name: String,
    plan: Arc<RunPlan>,
    root: CString,
    runs: u64,
    _uid: UidSlot,
}

fn cstrings<'a>(
    what: &'static str,
    items: impl Iterator<Item = String> + 'a,
) -> Result<Vec<CString>, BackendError> {
    items
        .map(|s| CString::new(s).map_err(|_| BackendError::InvalidProcess(what)))
        .collect()
}

impl NativeInstance {
    fn ws(&self) -> Result<&Workspace, BackendError> {
        self.ws
            .as_ref()
            .ok_or(BackendError::InstanceGone("already destroyed"))
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
        let plan = self.plan.clone();
        let root = self.root.clone();
        let argv = cstrings("argv contains a NUL byte", process.argv.iter().cloned())?;
        let env = cstrings(
            "env contains a NUL byte",
            process.env.iter().map(|(k, v)| format!("{k}={v}")),
        )?;
        let cwd = CString::new(process.cwd.clone())
            .map_err(|_| BackendError::InvalidProcess("cwd contains a NUL byte"))?;
        if argv.is_empty() {
            return Err(BackendError::InvalidProcess("empty argv"));
        }
        let limits = process.limits;
        let outcome =
            tokio::task::spawn_blocking(move || -> Result<ProcessOutcome, BackendError> {
                let mut cg = shared
                    .cgroups
                    .create(&cg_name, &limits)
                    .map_err(|e| BackendError::backend("creating the run's cgroup", e))?;
                let ruleset = match shared.landlock_abi {
                    0 => None,
                    abi => Some(
                        landlock::create(abi)
                            .map_err(|e| BackendError::setup("creating the Landlock ruleset", e))?,
                    ),
                };
                let rlimits = shared.rlimits(&limits, plan.disk);
                let launch = spawn::Launch {
                    ops: &plan.ops,
                    root: &root,
                    uid: plan.ids.uid,
                    gid: plan.ids.gid,
                    cwd: &cwd,
                    argv: &argv,
                    env: &env,
                    limits,
                    stdin: &io.stdin,
                    sink: io.sink,
                    rlimits: &rlimits,
                    landlock: ruleset
                        .as_ref()
                        .map(|r| (r, plan.landlock_rules.as_slice())),
                    seccomp: &shared.seccomp,
                };
                let outcome = spawn::launch(launch, cg.as_mut());
                cg.sample();
                let stats = cg.stats();
                let removed = cg.remove();
                let mut outcome = outcome?;
                removed.map_err(|e| BackendError::backend("removing the run's cgroup", e))?;
                // The cgroup counts every process of the run; rusage only those reaped by PID 1.
                if stats.cpu_ns > 0 {
                    outcome.usage.cpu = std::time::Duration::from_nanos(stats.cpu_ns);
                }
                if stats.memory_peak > 0 {
                    outcome.usage.memory_peak = Bytes(stats.memory_peak);
                }
                outcome.usage.processes_peak = stats.pids_peak.max(1);
                outcome.oom_killed = stats.oom_kills > 0;
                outcome.pids_limit_hits = stats.pids_max_hits;
                outcome.events = shared.degraded.clone();
                if outcome.exit == vana_sandbox_core::Exit::Signal(libc::SIGSYS) {
                    outcome.events.push(SecurityEvent::new(
                        SecurityEventKind::SeccompKill,
                        "killed by SIGSYS: the seccomp filter kills system calls of non-native \
                         ABIs (32-bit int 0x80, x32)",
                    ));
                }
                Ok(outcome)
            })
            .await
            .map_err(|e| BackendError::backend("the sandbox supervisor thread", e))?;
        let mut outcome = outcome?;
        outcome.usage.disk = Bytes(self.ws()?.usage().unwrap_or(0));
        Ok(outcome)
    }

    async fn read_files(
        &mut self,
        paths: &[String],
        max_bytes: u64,
    ) -> Result<Vec<FileEntry>, BackendError> {
        self.ws()?.read(paths, max_bytes)
    }

    async fn destroy(mut self: Box<Self>) -> Result<(), BackendError> {
        match self.ws.take() {
            Some(mut ws) => ws.remove(),
            None => Ok(()),
        }
    }
}
