//! The warm pool: containers created and started ahead per (image, runtime, limits) key. Each is
//! handed out once and replaced in the background; a container never serves a second execution.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vana_sandbox_core::{BackendError, Bytes, InstanceSpec, Limits, Mount, MountKind, Runtime};

use crate::container;
use crate::error::DockerError;
use crate::{DockerConfig, Shared};

/// What a container is sized for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub image: String,
    pub runtime: Runtime,
    pub memory: Bytes,
    pub nano_cpus: i64,
    pub max_processes: u64,
    pub disk: Bytes,
    pub mounts: Vec<Mount>,
}

impl PoolKey {
    pub(crate) fn new(image: &str, runtime: Runtime, spec: &InstanceSpec) -> Self {
        Self::with_limits(
            image,
            runtime,
            &spec.limits,
            spec.limits.disk,
            spec.mounts.clone(),
        )
    }

    pub(crate) fn with_limits(
        image: &str,
        runtime: Runtime,
        l: &Limits,
        disk: Bytes,
        mounts: Vec<Mount>,
    ) -> Self {
        Self {
            image: image.into(),
            runtime,
            memory: l.memory,
            nano_cpus: l.cpus.nano(),
            max_processes: l.processes,
            disk,
            mounts,
        }
    }

    pub(crate) fn is_gvisor(&self) -> bool {
        self.runtime == Runtime::Runsc
    }

    /// The container's pids limit: the program's, plus gVisor's own threads under runsc.
    pub(crate) fn container_pids(&self, config: &DockerConfig) -> u64 {
        // Docker's init, the idle sleep and vana-exec run beside the program.
        let base = self.max_processes + 3;
        if self.is_gvisor() {
            base + config.runsc_pids_overhead
        } else {
            base
        }
    }
}

pub(crate) struct Pool {
    shared: Arc<Shared>,
    ready: Mutex<HashMap<PoolKey, Vec<String>>>,
}

impl Pool {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            ready: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, key: &PoolKey) -> Option<String> {
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
    ) -> Result<String, BackendError> {
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
            Some(id) => Ok(id),
            None => Ok(container::create_started(&self.shared, key).await?),
        }
    }

    /// Creates containers until `key` has `pool_size` ready.
    pub(crate) async fn fill(&self, key: &PoolKey) -> Result<(), DockerError> {
        while self.count(key) < self.shared.config.pool_size {
            let id = container::create_started(&self.shared, key).await?;
            self.ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.clone())
                .or_default()
                .push(id);
        }
        Ok(())
    }

    /// Forgets the ready containers (the caller removes them).
    pub(crate) fn clear(&self) {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
