//! The Docker backend of vana-sandbox: the same Executor contract as the native backend, with
//! hardened containers through the Docker Engine API (bollard).
//!
//! Every container: read-only root; tmpfs `/workspace` and `/tmp` mounts sized to the disk
//! limit; `cap_drop: ALL`; `no-new-privileges`; Docker's default seccomp profile; pids, memory
//! (= memory + swap) and CPU limits; an unprivileged user; network `none`; an init; a log driver
//! of `none` (output is read through attach, never stored by the daemon); labels that mark it as
//! ours. Programs run through `docker exec` under `vana-exec`, a small static init built into the
//! runtime image that reports signals as signals. A timeout or an output flood kills the
//! container; the container is always removed, also after errors; leftovers carrying our label
//! whose owner is gone are removed at start. The runtime is runc or runsc (gVisor). A warm pool
//! keeps containers created and started ahead; a container never serves a second execution.

mod container;
mod error;
mod exec;
mod files;
pub mod image;
mod instance;
mod memcg;
mod pool;
mod tarball;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;
use vana_sandbox_core::host::OwnerId;
use vana_sandbox_core::{
    BackendError, BackendKind, Capabilities, Executor, Instance, InstanceSpec, Layer, LayerName,
    Runtime,
};

pub use error::DockerError;
pub use image::{ImageBuild, DEFAULT_IMAGE};

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
    /// Extra pids for runsc: gVisor's own threads count against the container's pids limit, so
    /// the host-side limit is the program's limit plus this; the program's own limit is enforced
    /// inside (RLIMIT_NPROC, per sandbox under gVisor).
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
            runsc_pids_overhead: 128,
        }
    }
}

impl DockerConfig {
    fn image_for(&self, language: &str) -> &str {
        self.images
            .get(language)
            .map_or(self.default_image.as_str(), String::as_str)
    }
}

pub(crate) struct Shared {
    docker: Docker,
    config: DockerConfig,
    owner: OwnerId,
    /// Runtimes the engine knows (all of them, ours or not).
    runtimes: Vec<String>,
    /// Image name -> image id, resolved at start (for the compile cache's environment id).
    image_ids: BTreeMap<String, String>,
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
        let mut runtimes: Vec<String> = info
            .runtimes
            .map(|r| r.into_keys().collect())
            .unwrap_or_default();
        runtimes.sort();
        if !runtimes.iter().any(|r| r == config.runtime.as_str()) {
            return Err(BackendError::Unavailable(format!(
                "the Docker engine has no runtime `{}` (it has: {})",
                config.runtime,
                runtimes.join(", ")
            )));
        }
        let mut image_ids = BTreeMap::new();
        for image in std::iter::once(&config.default_image).chain(config.images.values()) {
            if let Some(id) = docker.inspect_image(image).await.ok().and_then(|i| i.id) {
                image_ids.insert(image.clone(), id);
            }
        }
        let image_ok = image_ids.contains_key(&config.default_image);
        let caps = capabilities(
            &version.api_version.unwrap_or_default(),
            &runtimes,
            &config,
            image_ok,
        );
        let shared = Arc::new(Shared {
            docker,
            config,
            owner: OwnerId::current(),
            runtimes,
            image_ids,
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
                let opts = RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                };
                if self
                    .shared
                    .docker
                    .remove_container(&id, Some(opts))
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
        let key = self.key(spec);
        self.pool.fill(&key).await.map_err(BackendError::from)
    }

    /// Removes the warm pool's containers (and any other container this process owns).
    pub async fn shutdown(&self) -> usize {
        self.pool.clear();
        let me = self.shared.owner.to_string();
        self.remove_ours(|owner| owner == me).await
    }

    /// Runtimes the engine knows.
    pub fn runtimes(&self) -> &[String] {
        &self.shared.runtimes
    }

    /// The Docker client (for `doctor` and image builds).
    pub fn docker(&self) -> &Docker {
        &self.shared.docker
    }

    fn key(&self, spec: &InstanceSpec) -> PoolKey {
        let runtime = spec.runtime.unwrap_or(self.shared.config.runtime);
        PoolKey::new(self.shared.config.image_for(&spec.language), runtime, spec)
    }
}

fn layer(name: LayerName, available: bool, detail: impl Into<String>) -> Layer {
    Layer::new(name, available, detail)
}

fn capabilities(
    api: &str,
    runtimes: &[String],
    config: &DockerConfig,
    image_ok: bool,
) -> Capabilities {
    let runsc = runtimes.iter().any(|r| r == "runsc");
    let layers = vec![
        layer(
            LayerName::Container,
            true,
            format!("Docker Engine API {api}"),
        ),
        layer(LayerName::PidNamespace, true, "one container per execution"),
        layer(
            LayerName::MountNamespace,
            true,
            "read-only root; tmpfs /workspace and /tmp",
        ),
        layer(LayerName::NetworkNamespace, true, "network none"),
        layer(LayerName::IpcNamespace, true, "private"),
        layer(LayerName::UtsNamespace, true, "private"),
        layer(LayerName::NonRootUser, true, format!("uid {}", config.uid)),
        layer(LayerName::CapabilitiesDropped, true, "cap_drop ALL"),
        layer(LayerName::NoNewPrivs, true, "no-new-privileges"),
        layer(LayerName::Seccomp, true, "Docker's default profile"),
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
                "runtime runsc registered"
            } else {
                "runsc not registered with the engine"
            },
        ),
        layer(
            LayerName::Image,
            image_ok,
            format!(
                "{}{}",
                config.default_image,
                if image_ok {
                    ""
                } else {
                    " missing: run `vana-sandbox image build`"
                }
            ),
        ),
        layer(LayerName::Landlock, false, "not applied inside containers"),
    ];
    let mut caps = Capabilities::new(BackendKind::Docker);
    caps.layers = layers;
    caps.runtimes = runtimes.iter().filter_map(|r| Runtime::parse(r)).collect();
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
        let image = self.shared.config.image_for(language);
        let id = self
            .shared
            .image_ids
            .get(image)
            .map_or("unresolved", String::as_str);
        format!("docker:{image}@{id}")
    }

    /// The image's interpreter, probed in a container of the image (not the host's).
    async fn package_target(
        &self,
        language: &dyn vana_sandbox_core::Language,
    ) -> Result<vana_sandbox_core::PackageTarget, BackendError> {
        vana_sandbox_core::packages::probe_in_instance(self, language).await
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, BackendError> {
        let key = self.key(spec);
        let container = self.pool.take_or_create(&key).await?;
        Ok(Box::new(DockerInstance::new(
            self.shared.clone(),
            container,
            key,
        )))
    }
}
