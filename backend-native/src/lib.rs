//! The native Linux backend of vana-sandbox: no daemon, a fresh set of namespaces per instance,
//! our own init as PID 1, and a mode for unprivileged callers.
//!
//! Each instance is cloned straight from the host process into new user, pid, mount, network,
//! IPC and UTS namespaces (and a cgroup namespace once it joined its cgroup). The setup child
//! builds a read-only root of bind mounts and a size-limited tmpfs workspace, `pivot_root`s into
//! it, drops every capability but what init needs, and `execve`s `vana-init` from a sealed memfd:
//! nothing of the host process (argv, environment, memory) is inside. Init runs each program
//! under the program's own id, reports its exit over a socket only init writes, reaps every
//! orphan, and when that socket closes — the instance was destroyed, or the host died, SIGKILL
//! included — kills everything and exits, which tears the namespace down.
//!
//! Identity: as root, each instance leases a block of host ids of its own (a `flock` per block,
//! held for the instance's life and dropped by the kernel when its holder dies), so no per-uid
//! quota is shared between sandboxes of any process on the host. Rootless, the caller's own id
//! is mapped; cgroup limits need a delegated cgroup v2 subtree (`$VANA_CGROUP_ROOT`), and
//! without one are reported as degraded and replaced by per-process rlimits.
//!
//! Nothing between clone and exec allocates or takes a lock (see [`child`](crate::child)), so the
//! host may be multi-threaded (tokio, Python). Empty cgroups of a crashed host process are
//! removed when an executor is created; nothing else of an instance exists outside it.

pub mod cgroup;
mod child;
mod control;
mod instance;
mod kmsg;
mod landlock;
mod launch;
mod lease;
mod memfd;
mod mode;
mod mounts;
mod netns;
mod pool;
mod priority;
mod probe;
mod procfs;
mod rootfs;
mod seccomp;
mod spawn;
mod supervisor;
mod sys;
mod workspace;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use vana_sandbox_core::host::OwnerId;
use vana_sandbox_core::{
    BackendError, BackendKind, Bytes, Capabilities, Executor, Instance, InstanceSpec, Limits,
    SecurityEvent, SecurityEventKind,
};
use vana_sandbox_init::protocol::Rlimit;

use crate::cgroup::CgroupDriver;
use crate::instance::NativeInstance;
use crate::lease::Lease;
use crate::memfd::InitImage;
use crate::mode::Mode;

pub use crate::mode::PROGRAM_ID;

/// Settings of the native backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeConfig {
    /// Host directory for the backend's state (id leases, the mount points instances build on).
    /// Default: `/run/vana-sandbox` as root; rootless `$XDG_RUNTIME_DIR/vana-sandbox` or
    /// `/tmp/vana-sandbox-<uid>`.
    pub state_dir: PathBuf,
    /// First host id of the range instances lease blocks of two ids from (root mode). The range
    /// must not belong to any host user.
    pub uid_base: u32,
    /// Size of the range (two ids per instance).
    pub uid_count: u32,
    /// Install the seccomp filter (on by default; off only for debugging).
    pub seccomp: bool,
    /// Apply Landlock where the kernel has it (on by default).
    pub landlock: bool,
    /// Sandboxes prepared ahead per shape (limits envelope, disk, toolchain mounts), so that a
    /// request does not wait for one to be built; each serves one request. 0 (the default)
    /// turns preparation off.
    pub pool_size: usize,
}

impl Default for NativeConfig {
    fn default() -> Self {
        Self {
            state_dir: Mode::default_state_dir(),
            uid_base: DEFAULT_UID_BASE,
            uid_count: 65536,
            seccomp: true,
            landlock: true,
            pool_size: 0,
        }
    }
}

/// First host id of the default range, far from every id a distribution hands out (regular
/// users, systemd's dynamic users below 65520, container subuid ranges from 100000 on).
pub const DEFAULT_UID_BASE: u32 = 2_000_000_000;

/// What [`NativeExecutor::cleanup_stale`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Cgroups of dead owners killed and removed.
    pub cgroups: usize,
}

/// The state directory's parts.
struct StateDirs {
    /// Where each instance's root is built (inside its own mount namespace).
    root: PathBuf,
    root_c: CString,
    /// Where each instance's writable tmpfs is mounted before its parts are bound in.
    storage: PathBuf,
    storage_c: CString,
    /// One lock file per id block.
    leases: PathBuf,
}

pub(crate) struct Shared {
    config: NativeConfig,
    mode: Mode,
    cgroups: Arc<dyn CgroupDriver>,
    dirs: StateDirs,
    owner: OwnerId,
    degraded: Vec<SecurityEvent>,
    seccomp: Vec<seccomp::Insn>,
    landlock_abi: u32,
    init: InitImage,
    /// Root mode: each instance gets a device tmpfs of its own (rootless, or once one could not
    /// be made, the host's `/dev` nodes are bound).
    devices: AtomicBool,
    /// Root mode: network namespaces made ahead.
    netns: Option<netns::NetnsPool>,
}

/// Instances this process has made, over all its executors (a host may have several: each
/// Python `Sandbox` is one), so that no two live instances share a name — and a cgroup.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl Shared {
    /// The next instance's cgroup name: owner and a process-wide sequence, so leftovers are
    /// recognisable and live instances never collide.
    fn instance_name(&self) -> String {
        cgroup::run_name(self.owner, INSTANCES.fetch_add(1, Ordering::Relaxed))
    }

    /// A host-wide lease of an id block (root mode; rootless there is nothing to lease).
    fn take_lease(&self) -> Result<Option<Lease>, BackendError> {
        let Mode::Root { blocks, .. } = self.mode else {
            return Ok(None);
        };
        // Spread concurrent takers over the range so they rarely try the same file.
        let hint = (self.owner.pid.wrapping_mul(2_654_435_761))
            .wrapping_add(INSTANCES.load(Ordering::Relaxed) as u32);
        lease::take(&self.dirs.leases, blocks, hint)
            .map(Some)
            .map_err(|e| BackendError::backend("leasing the sandbox's ids", e))
    }

    fn rlimits(&self, limits: &Limits, disk: Bytes) -> Vec<Rlimit> {
        // Rootless, init has the program's id and counts against its process limit.
        let nproc_extra = u64::from(!self.mode.is_root());
        let no_memory_cgroup = self.cgroups.version() == "none";
        instance::rlimits(limits, disk, nproc_extra, no_memory_cgroup)
    }
}

/// The native backend.
pub struct NativeExecutor {
    shared: Arc<Shared>,
    pool: Arc<pool::Pool>,
    caps: Capabilities,
}

impl std::fmt::Debug for NativeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeExecutor")
            .field("config", &self.shared.config)
            .field("mode", &self.shared.mode)
            .field("cgroups", &self.shared.cgroups.version())
            .finish()
    }
}

fn cpath(p: &std::path::Path) -> Result<CString, BackendError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| BackendError::InvalidProcess("the state directory contains a NUL byte"))
}

fn make_dir(dir: &std::path::Path, mode: u32) -> Result<(), BackendError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| BackendError::setup(format!("create {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| BackendError::setup(format!("chmod {}", dir.display()), e))
}

impl NativeExecutor {
    /// An executor with the default settings.
    pub fn new() -> Result<Self, BackendError> {
        Self::with_config(NativeConfig::default())
    }

    /// An executor with `config`. As root every layer is available; rootless, the host must
    /// allow unprivileged user namespaces, and cgroup limits need a delegated subtree. Removes
    /// cgroups left by crashed processes.
    pub fn with_config(config: NativeConfig) -> Result<Self, BackendError> {
        let mode = Mode::detect(config.uid_base, (config.uid_count / 2).max(1));
        if !mode.is_root() {
            probe::check_unprivileged_userns()?;
        }
        let cgroups = cgroup::detect(!mode.is_root())
            .map_err(|e| BackendError::backend("finding the cgroup hierarchies", e))?;
        // The state directory must be traversable by the sandboxes' setup children (who run as
        // ids of their own user namespace); only the leases stay private.
        let root = config.state_dir.join("root");
        let storage = config.state_dir.join("storage");
        let leases = config.state_dir.join("leases");
        make_dir(&config.state_dir, 0o711)?;
        make_dir(&root, 0o755)?;
        make_dir(&storage, 0o755)?;
        make_dir(&leases, 0o700)?;
        let landlock_abi = if config.landlock { landlock::abi() } else { 0 };
        let seccomp_on = config.seccomp && seccomp::available();
        let caps = probe::probe(&mode, cgroups.as_ref(), landlock_abi, seccomp_on);
        let degraded = caps
            .degraded()
            .map(|l| {
                SecurityEvent::new(
                    SecurityEventKind::LayerDegraded,
                    format!("{}: {}", l.name, l.detail),
                )
            })
            .collect();
        let init = InitImage::load(&config.state_dir, mode.is_root())
            .map_err(|e| BackendError::setup("loading the sandbox init", e))?;
        let seccomp = if seccomp_on {
            vana_sandbox_seccomp::bpf()
                .map_err(|e| BackendError::backend("building the seccomp filter", e))?
        } else {
            Vec::new()
        };
        // Found out by the first sandbox (a probe here made and dropped a whole device tmpfs
        // per process).
        let devices = AtomicBool::new(mode.is_root());
        let mode_is_root = mode.is_root();
        let shared = Shared {
            dirs: StateDirs {
                root_c: cpath(&root)?,
                root,
                storage_c: cpath(&storage)?,
                storage,
                leases,
            },
            config,
            mode,
            cgroups,
            owner: OwnerId::current(),
            degraded,
            seccomp,
            landlock_abi,
            init,
            devices,
            netns: if mode_is_root {
                netns::NetnsPool::start()
            } else {
                None
            },
        };
        let exec = Self {
            pool: Arc::new(pool::Pool::new(shared.config.pool_size)),
            shared: Arc::new(shared),
            caps,
        };
        let cleaned = exec.cleanup_stale();
        if cleaned != CleanupReport::default() {
            tracing::info!(?cleaned, "removed leftovers of crashed sandbox hosts");
        }
        Ok(exec)
    }

    /// Removes cgroups whose owning process no longer exists. (A dead owner's sandboxes died
    /// with it, their storage with them, and the kernel released their id leases.)
    pub fn cleanup_stale(&self) -> CleanupReport {
        CleanupReport {
            cgroups: self.shared.cgroups.remove_stale(&cgroup::name_is_stale),
        }
    }

    /// The cgroup hierarchy in use (`v1`, `v2`, or `none` rootless without delegation).
    pub fn cgroup_version(&self) -> &'static str {
        self.shared.cgroups.version()
    }

    /// Whether the backend runs as root (each instance with ids of its own) or rootless (the
    /// caller's own id).
    pub fn is_rootless(&self) -> bool {
        !self.shared.mode.is_root()
    }

    /// Sandboxes prepared and waiting (see [`NativeConfig::pool_size`]).
    pub fn prepared(&self) -> usize {
        self.pool.ready()
    }
}

impl Drop for NativeExecutor {
    fn drop(&mut self) {
        self.pool.clear();
        if let Some(n) = &self.shared.netns {
            n.stop();
        }
        // Its sandboxes end before it is gone (with any other executor's being ended).
        vana_sandbox_core::reaper::wait_below(1, vana_sandbox_core::reaper::DROP_WAIT);
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
        if let Some(prepared) = self.pool.take(&self.shared, spec) {
            return Ok(Box::new(prepared));
        }
        let shared = self.shared.clone();
        let spec = spec.clone();
        let instance = tokio::task::spawn_blocking(move || NativeInstance::create(shared, &spec))
            .await
            .map_err(|e| BackendError::backend("the sandbox setup thread", e))??;
        Ok(Box::new(instance))
    }
}
