//! The Docker backend of vana-sandbox: the same Executor contract as the native backend, with
//! hardened containers through the Docker Engine API (bollard).
//!
//! Every container: read-only root; one tmpfs `/workspace` whose size, with a small `/dev/shm`
//! (and, for images that do not link `/tmp` into the workspace, a `/tmp` share), adds up to the
//! disk limit; `cap_drop: ALL` but the three capabilities init needs; `no-new-privileges`; our
//! system-call allow-list as its seccomp profile (from `vana-sandbox-seccomp`, the table the
//! native backend's filter comes from); pids, memory (= memory + swap) and CPU limits; network
//! `none`; a log driver of `none`; labels that mark it as ours; `/proc` entries that describe the
//! host hidden (runc) — gVisor's `/proc` is its own.
//!
//! The container's main process is `vana-init serve` (the library's own init, bound read-only
//! from the host), attached once over the Engine API: files in, runs, output, exit status and
//! disk usage all travel as frames over that one connection, so a run costs no `docker exec`.
//! Programs run as an unprivileged user on pipes of their own, under the same seccomp filter the
//! native backend uses (installed by init), and cannot write init's frames. Memory, CPU, OOM and
//! fork evidence is read by the host from the container's cgroups, before anything is torn down.
//! A timeout or an output flood makes init kill everything but itself; the container is always
//! removed, also after errors — after a run's result, by the process's reaper
//! (`vana_sandbox_core::reaper`: the attach stream is closed at once, the removal's ~45 ms are
//! nobody's wait; the process's exit waits for it); when the host process dies, its attach connection closes and init
//! takes the container down; leftovers carrying our label whose owner is gone are removed at
//! start. The runtime is runc or runsc (gVisor). A warm pool keeps containers created, started
//! and attached ahead; a container never serves a second execution.

mod container;
mod error;
mod files;
mod host_files;
pub mod image;
pub mod images;
mod instance;
mod memcg;
mod pool;
mod run;
mod session;
mod tarball;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::ListContainersOptions;
use bollard::Docker;
use vana_sandbox_core::host::OwnerId;
use vana_sandbox_core::reaper;
use vana_sandbox_core::{
    BackendError, BackendKind, Capabilities, Executor, Instance, InstanceSpec, Language, Layer,
    LayerName, Runtime,
};

pub use error::DockerError;
pub use image::{ImageBuild, DEFAULT_IMAGE, FULL_IMAGE};

use crate::host_files::HostFiles;
use crate::images::{ImageInfo, Images};
use crate::instance::DockerInstance;
use crate::pool::{Pool, PoolKey};

/// Label on every container of ours.
pub const LABEL: &str = "vana-sandbox";
/// Label naming the owning process (`<pid>-<start time>`).
pub const OWNER_LABEL: &str = "vana-sandbox.owner";

/// Settings of the Docker backend.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// Image for languages without an entry in `images`.
    pub default_image: String,
    /// Image per canonical language name (e.g. `python` → `python:3.12-slim`).
    pub images: BTreeMap<String, String>,
    /// Runtime when the policy names none.
    pub runtime: Runtime,
    /// Containers kept created and started ahead per (image, limits) key; 0 turns the pool off.
    pub pool_size: usize,
    /// uid and gid programs run as inside the container.
    pub uid: u32,
    /// Under runsc the host counts gVisor's own tasks against the container's pids limit (its
    /// threads, and a stub process per address space of the program), so the host-side limit is
    /// a backstop of `max_processes * runsc_pids_per_process + runsc_pids_overhead`; the program's
    /// own limit is enforced inside (RLIMIT_NPROC, per sandbox under gVisor).
    pub runsc_pids_per_process: u64,
    /// See [`runsc_pids_per_process`](Self::runsc_pids_per_process).
    pub runsc_pids_overhead: u64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            default_image: DEFAULT_IMAGE.into(),
            images: BTreeMap::new(),
            runtime: Runtime::Runc,
            pool_size: 0,
            uid: 10001,
            runsc_pids_per_process: 10,
            runsc_pids_overhead: 256,
        }
    }
}

/// gVisor applies a container's seccomp profile to the sandboxed program only with this flag.
const RUNSC_OCI_SECCOMP: &str = "--oci-seccomp";

pub(crate) struct Shared {
    docker: Docker,
    config: DockerConfig,
    owner: OwnerId,
    /// Runtimes the engine knows (all of them, ours or not).
    runtimes: Vec<String>,
    /// The images programs run in, resolved at start.
    images: Images,
    /// Our seccomp profile (JSON), for every container's `security_opt`.
    seccomp_profile: String,
    /// The same allow-list as a BPF program (`struct sock_filter` bytes), installed by init in
    /// every program.
    filter: Vec<u8>,
    /// Files bound into every container (init, resolv.conf, /proc stand-ins).
    files: HostFiles,
    /// The engine's cgroups are v1 (TCP buffers need a bound of their own).
    cgroup_v1: bool,
}

/// The BPF program of the allow-list, as `struct sock_filter` bytes in native order.
fn filter_bytes() -> Result<Vec<u8>, BackendError> {
    let program = vana_sandbox_seccomp::bpf()
        .map_err(|e| BackendError::backend("building the seccomp filter", e))?;
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    Ok(out)
}

/// The Docker backend.
pub struct DockerExecutor {
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    caps: Capabilities,
}

impl std::fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl DockerExecutor {
    /// Connects to the local Docker engine (negotiating the API version), checks the runtime
    /// and removes leftovers of crashed owners.
    pub async fn new(config: DockerConfig) -> Result<Self, BackendError> {
        let docker = Docker::connect_with_socket_defaults()
            .map_err(|e| BackendError::Unavailable(format!("cannot reach the Docker engine: {e}")))?
            .negotiate_version()
            .await
            .map_err(|e| {
                BackendError::Unavailable(format!("cannot reach the Docker engine: {e}"))
            })?;
        let version = docker.version().await.map_err(|e| {
            BackendError::Unavailable(format!("the Docker engine does not answer: {e}"))
        })?;
        let info = docker
            .info()
            .await
            .map_err(|e| BackendError::Unavailable(format!("docker info: {e}")))?;
        let cgroup_v1 = matches!(
            info.cgroup_version,
            Some(bollard::models::SystemInfoCgroupVersionEnum::_1)
        );
        let known = info.runtimes.unwrap_or_default();
        let mut runtimes: Vec<String> = known.keys().cloned().collect();
        runtimes.sort();
        // gVisor ignores the container's seccomp profile unless told to apply it: such a runsc
        // would run programs without our allow-list, so it does not count as available.
        let runsc_seccomp = known.get("runsc").is_some_and(|r| {
            r.runtime_args
                .as_ref()
                .is_some_and(|a| a.iter().any(|x| x == RUNSC_OCI_SECCOMP))
        });
        let usable = |rt: Runtime| match rt {
            Runtime::Runc => known.contains_key("runc"),
            Runtime::Runsc => known.contains_key("runsc") && runsc_seccomp,
        };
        if !usable(config.runtime) {
            let why = if config.runtime == Runtime::Runsc && known.contains_key("runsc") {
                format!(
                    "runsc is registered without `{RUNSC_OCI_SECCOMP}`, so gVisor would not \
                     apply the seccomp allow-list: run scripts/docker-setup.sh (or add it to \
                     runsc's runtimeArgs in /etc/docker/daemon.json and reload dockerd)"
                )
            } else {
                format!("it has: {}", runtimes.join(", "))
            };
            return Err(BackendError::Unavailable(format!(
                "the Docker engine has no usable runtime `{}` ({why})",
                config.runtime
            )));
        }
        let images = Images::resolve(&docker, &config.default_image, &config.images).await;
        let files = HostFiles::prepare().map_err(BackendError::from)?;
        let seccomp_profile = vana_sandbox_seccomp::docker_profile().to_string();
        let caps = capabilities(
            &version.api_version.unwrap_or_default(),
            &[Runtime::Runc, Runtime::Runsc]
                .into_iter()
                .filter(|r| usable(*r))
                .collect::<Vec<_>>(),
            known.contains_key("runsc"),
            &config,
            images.default_image(),
        );
        let shared = Arc::new(Shared {
            docker,
            config,
            owner: OwnerId::current(),
            runtimes,
            images,
            seccomp_profile,
            filter: filter_bytes()?,
            files,
            cgroup_v1,
        });
        let exec = Self {
            pool: Arc::new(Pool::new(shared.clone())),
            shared,
            caps,
        };
        let removed = exec.cleanup_stale().await;
        if removed > 0 {
            tracing::info!(removed, "removed leftover containers of crashed owners");
        }
        Ok(exec)
    }

    /// Removes containers carrying our label whose owning process no longer exists.
    pub async fn cleanup_stale(&self) -> usize {
        self.remove_ours(|owner| owner.parse::<OwnerId>().is_ok_and(|o| !o.alive()))
            .await
    }

    async fn remove_ours(&self, pick: impl Fn(&str) -> bool) -> usize {
        let filters = HashMap::from([("label".to_string(), vec![LABEL.to_string()])]);
        let list = self
            .shared
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        let mut n = 0;
        for c in list {
            let owner = c
                .labels
                .as_ref()
                .and_then(|l| l.get(OWNER_LABEL))
                .cloned()
                .unwrap_or_default();
            if let (Some(id), true) = (c.id, pick(&owner)) {
                if self
                    .shared
                    .docker
                    .remove_container(&id, Some(container::REMOVE))
                    .await
                    .is_ok()
                {
                    n += 1;
                }
            }
        }
        n
    }

    /// Creates warm containers for `spec` ahead of time (up to the pool size).
    pub async fn prewarm(&self, spec: &InstanceSpec) -> Result<(), BackendError> {
        let key = self.key(spec)?;
        self.pool.fill(&key).await.map_err(BackendError::from)
    }

    /// Removes the warm pool's containers (and any other container this process owns).
    /// Waits (up to [`reaper::DROP_WAIT`]) for the containers being removed after their runs.
    pub async fn shutdown(&self) -> usize {
        self.pool.clear();
        let me = self.shared.owner.to_string();
        let removed = self.remove_ours(|owner| owner == me).await;
        let _ = tokio::task::spawn_blocking(|| reaper::wait_below(1, reaper::DROP_WAIT)).await;
        removed
    }

    /// Runtimes the engine knows.
    pub fn runtimes(&self) -> &[String] {
        &self.shared.runtimes
    }

    /// The Docker client (for `doctor` and image builds).
    pub fn docker(&self) -> &Docker {
        &self.shared.docker
    }

    fn key(&self, spec: &InstanceSpec) -> Result<PoolKey, BackendError> {
        let runtime = spec.runtime.unwrap_or(self.shared.config.runtime);
        let image = self
            .shared
            .images
            .for_language(&spec.language)
            .map_err(BackendError::Unavailable)?;
        Ok(PoolKey::new(
            image,
            runtime,
            &spec.limits,
            spec.mounts.clone(),
        ))
    }
}

fn layer(name: LayerName, available: bool, detail: impl Into<String>) -> Layer {
    Layer::new(name, available, detail)
}

fn capabilities(
    api: &str,
    usable: &[Runtime],
    runsc_registered: bool,
    config: &DockerConfig,
    image: Option<&ImageInfo>,
) -> Capabilities {
    let runsc = usable.contains(&Runtime::Runsc);
    let layers = vec![
        layer(
            LayerName::Container,
            true,
            format!("Docker Engine API {api}"),
        ),
        layer(LayerName::PidNamespace, true, "one container per step"),
        layer(
            LayerName::MountNamespace,
            true,
            "read-only root; one tmpfs /workspace (with /tmp) and /dev/shm within the disk limit",
        ),
        layer(LayerName::NetworkNamespace, true, "network none"),
        layer(LayerName::IpcNamespace, true, "private"),
        layer(LayerName::UtsNamespace, true, "private"),
        layer(LayerName::NonRootUser, true, format!("uid {}", config.uid)),
        layer(
            LayerName::CapabilitiesDropped,
            true,
            "cap_drop ALL (init keeps setuid, setgid, kill; programs have none)",
        ),
        layer(LayerName::NoNewPrivs, true, "no-new-privileges"),
        layer(
            LayerName::Seccomp,
            true,
            format!(
                "allow-list of {} system calls as the container's profile, and the same filter \
                 installed by init in every program (non-native ABIs killed)",
                vana_sandbox_seccomp::table_size()
            ),
        ),
        layer(
            LayerName::Init,
            true,
            "vana-init serve as PID 1: runs programs, reports their end; the container dies with \
             its owner's connection",
        ),
        layer(
            LayerName::ProcMasking,
            true,
            "host /proc entries masked; meminfo, stat, uptime, loadavg replaced (runc)",
        ),
        layer(LayerName::Rlimits, true, "set by init per program"),
        layer(LayerName::CgroupMemory, true, "memory = memory + swap"),
        layer(
            LayerName::CgroupMemorySwap,
            true,
            "memory_swap equals memory",
        ),
        layer(LayerName::CgroupPids, true, "pids_limit"),
        layer(LayerName::CgroupCpu, true, "nano_cpus"),
        layer(
            LayerName::Gvisor,
            runsc,
            if runsc {
                "runtime runsc registered with --oci-seccomp"
            } else if runsc_registered {
                "runsc is registered without --oci-seccomp (gVisor would skip the allow-list): run scripts/docker-setup.sh"
            } else {
                "runsc not registered with the engine"
            },
        ),
        layer(
            LayerName::Image,
            image.is_some(),
            match image {
                Some(i) => format!("{} ({})", i.name, i.id),
                None => format!(
                    "{} missing: run `vana-sandbox image build`",
                    config.default_image
                ),
            },
        ),
        layer(LayerName::Landlock, false, "not applied inside containers"),
    ];
    let mut caps = Capabilities::new(BackendKind::Docker);
    caps.layers = layers;
    caps.runtimes = usable.to_vec();
    caps
}

#[async_trait]
impl Executor for DockerExecutor {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn environment_id(&self, language: &str) -> String {
        match self.shared.images.for_language(language) {
            Ok(i) => format!("docker:{}@{}", i.name, i.id),
            Err(_) => "docker:unresolved".to_string(),
        }
    }

    /// The language's image must have its toolchain (from the image's labels), and any host
    /// toolchain the language binds in must exist.
    fn check_language(&self, language: &dyn Language) -> Result<(), BackendError> {
        self.shared
            .images
            .for_language(language.name())
            .map_err(BackendError::Unavailable)?;
        for m in language.mounts() {
            if !std::path::Path::new(&m.host).exists() {
                return Err(BackendError::Unavailable(format!(
                    "{} runs with the host's toolchain at {}, which is missing",
                    language.name(),
                    m.host
                )));
            }
        }
        Ok(())
    }

    /// The image's interpreter, probed in a container of the image (not the host's).
    async fn package_target(
        &self,
        language: &dyn vana_sandbox_core::Language,
    ) -> Result<vana_sandbox_core::PackageTarget, BackendError> {
        vana_sandbox_core::packages::probe_in_instance(self, language).await
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, BackendError> {
        if reaper::ending() >= reaper::MAX_ENDING {
            // Containers are removed slower than they are made: wait for the reaper to catch up.
            let _ = tokio::task::spawn_blocking(|| {
                reaper::wait_below(reaper::MAX_ENDING, reaper::BACKLOG_WAIT)
            })
            .await;
        }
        let image = self
            .shared
            .images
            .for_language(&spec.language)
            .map_err(BackendError::Unavailable)?
            .clone();
        Ok(Box::new(DockerInstance::new(
            self.shared.clone(),
            self.pool.clone(),
            image,
            spec.runtime.unwrap_or(self.shared.config.runtime),
            spec.mounts.clone(),
            spec.limits,
        )))
    }
}
