//! The warm pool: containers created, started, attached and set up ahead of time, per (image,
//! runtime, limits) key. Each is handed out once and replaced in the background; a container
//! never serves a second execution.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vana_sandbox_core::{Bytes, Limits, Mount, MountKind, Runtime};

use crate::container::{self, Container};
use crate::error::DockerError;
use crate::images::ImageInfo;
use crate::{DockerConfig, Shared};

/// What a container is created for: everything fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    /// Image id.
    pub image: String,
    /// `/tmp` is the image's link into the workspace (one tmpfs for both). Under runsc never:
    /// gVisor mounts a tmpfs of its own, without a size, over a `/tmp` that is not a mount, so
    /// there `/tmp` gets a sized tmpfs (a share of the disk budget) instead.
    pub tmp_in_workspace: bool,
    pub runtime: Runtime,
    pub memory: Bytes,
    /// The bound on TCP socket buffers where cgroup v1 counts them apart from memory.
    pub socket_memory: Bytes,
    pub nano_cpus: i64,
    pub max_processes: u64,
    pub disk: Bytes,
    pub mounts: Vec<Mount>,
}

impl PoolKey {
    pub(crate) fn new(image: &ImageInfo, runtime: Runtime, l: &Limits, mounts: Vec<Mount>) -> Self {
        Self {
            image: image.id.clone(),
            tmp_in_workspace: image.tmp_in_workspace && runtime == Runtime::Runc,
            runtime,
            memory: l.memory,
            socket_memory: l.socket_memory(),
            nano_cpus: l.cpus.nano(),
            max_processes: l.processes,
            disk: l.disk,
            mounts,
        }
    }

    pub(crate) fn is_gvisor(&self) -> bool {
        self.runtime == Runtime::Runsc
    }

    /// Whether a container made for `self` can serve `other` after a `docker update` (the
    /// cgroup limits differ; the image, mounts and disk do not).
    pub(crate) fn updatable_to(&self, other: &PoolKey) -> bool {
        self.runtime == Runtime::Runc
            && other.runtime == Runtime::Runc
            && self.image == other.image
            && self.disk == other.disk
            && self.mounts == other.mounts
    }

    /// The container's pids limit. Under runc: the program's limit plus init. Under runsc the
    /// host counts gVisor's own threads and one stub process per address space (measured: a
    /// sandbox of 65 processes holds about 460 host tasks), so the host limit is a backstop
    /// sized for that, and the program's own limit is enforced inside (`RLIMIT_NPROC`, per
    /// sandbox under gVisor).
    pub(crate) fn container_pids(&self, config: &DockerConfig) -> u64 {
        if self.is_gvisor() {
            self.max_processes
                .saturating_mul(config.runsc_pids_per_process)
                .saturating_add(config.runsc_pids_overhead)
        } else {
            self.max_processes + 1
        }
    }
}

pub(crate) struct Pool {
    shared: Arc<Shared>,
    ready: Mutex<HashMap<PoolKey, Vec<Container>>>,
}

impl Pool {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            ready: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, key: &PoolKey) -> Option<Container> {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)?
            .pop()
    }

    fn count(&self, key: &PoolKey) -> usize {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map_or(0, Vec::len)
    }

    /// A warm container if there is one (the pool is refilled in the background), else a cold one.
    pub(crate) async fn take_or_create(
        self: &Arc<Self>,
        key: &PoolKey,
    ) -> Result<Container, DockerError> {
        // Only shapes whose mounts are the host's own: a prepared package set or a session's
        // set belongs to one request, and nothing would hold it for a container no request has
        // claimed.
        let size = if key.mounts.iter().all(|m| m.kind == MountKind::Host) {
            self.shared.config.pool_size
        } else {
            0
        };
        let warm = if size > 0 { self.take(key) } else { None };
        if size > 0 {
            let (pool, key) = (self.clone(), key.clone());
            tokio::spawn(async move {
                if let Err(e) = pool.fill(&key).await {
                    tracing::warn!("refilling the warm pool failed: {e}");
                }
            });
        }
        match warm {
            Some(c) => Ok(c),
            None => container::create(&self.shared, key).await,
        }
    }

    /// Creates containers until `key` has `pool_size` ready.
    pub(crate) async fn fill(&self, key: &PoolKey) -> Result<(), DockerError> {
        while self.count(key) < self.shared.config.pool_size {
            let c = container::create(&self.shared, key).await?;
            self.ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.clone())
                .or_default()
                .push(c);
        }
        Ok(())
    }

    /// Forgets the ready containers (the caller removes them).
    pub(crate) fn clear(&self) {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
