//! Prepared sandboxes: instances created ahead of the requests that will use them, so that a
//! request's wait does not include building one (namespaces, mounts, joining a cgroup — on a
//! cgroup v1 host the join can wait for an RCU grace period). Each prepared instance is fresh and
//! serves exactly one `create`; the pool refills in the background.
//!
//! Instances are prepared per shape: everything fixed when a sandbox is built (the memory, CPU
//! and process envelope, the disk size, the toolchain mounts, the network mode). A request of
//! another shape, or with mounts that are not the host's own (packages), builds its own instance
//! as before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use vana_sandbox_core::{BackendError, InstanceSpec, Mount, MountKind, NetworkMode};

use crate::instance::NativeInstance;
use crate::priority::Background;
use crate::Shared;

/// Most shapes instances are prepared for.
const MAX_SHAPES: usize = 8;

/// What a prepared instance must match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    memory: u64,
    cpu_quota_us: u64,
    processes: u64,
    disk: u64,
    mounts: Vec<Mount>,
    network: NetworkMode,
}

impl Shape {
    fn of(spec: &InstanceSpec) -> Self {
        let l = &spec.limits;
        Self {
            memory: l.memory.get(),
            cpu_quota_us: l.cpus.quota_us(100_000),
            processes: l.processes,
            disk: l.disk.get(),
            mounts: spec.mounts.clone(),
            network: spec.network.clone(),
        }
    }
}

#[derive(Default)]
struct State {
    ready: HashMap<Shape, Vec<NativeInstance>>,
    filling: HashSet<Shape>,
}

/// The pool of prepared instances.
pub(crate) struct Pool {
    size: usize,
    state: Mutex<State>,
}

impl Pool {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A prepared instance of `spec`'s shape, if one is ready and still alive; starts a refill
    /// either way (when the pool is on).
    pub(crate) fn take(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        spec: &InstanceSpec,
    ) -> Option<NativeInstance> {
        // Only shapes whose mounts are the host's own: a prepared package set or a session's
        // set belongs to one request, and nothing would hold it for an unclaimed sandbox.
        if self.size == 0 || spec.mounts.iter().any(|m| m.kind != MountKind::Host) {
            return None;
        }
        let shape = Shape::of(spec);
        let taken = {
            let mut st = self.lock();
            let mut taken = None;
            if let Some(list) = st.ready.get_mut(&shape) {
                while let Some(inst) = list.pop() {
                    if inst.is_alive() {
                        taken = Some(inst);
                        break;
                    }
                }
            }
            taken
        };
        self.refill(shared, spec, shape);
        taken
    }

    /// Prepares instances of `spec`'s shape until the pool holds its size (one filler per
    /// shape at a time), on a blocking thread.
    fn refill(self: &Arc<Self>, shared: &Arc<Shared>, spec: &InstanceSpec, shape: Shape) {
        {
            let mut st = self.lock();
            // Requests of many shapes (every limit asked differently) must not make the pool
            // grow without bound: prepare for a few shapes only.
            let known = st.ready.contains_key(&shape);
            if (!known && st.ready.len() >= MAX_SHAPES) || !st.filling.insert(shape.clone()) {
                return;
            }
        }
        let (pool, shared, spec) = (self.clone(), shared.clone(), spec.clone());
        let fill = move || {
            // As root, at background priority: the request that started this refill runs
            // beside it (see `priority`).
            let background = shared.mode.is_root().then(Background::enter).flatten();
            loop {
                let have = pool.lock().ready.get(&shape).map_or(0, Vec::len);
                if have >= pool.size {
                    break;
                }
                let made = NativeInstance::create(shared.clone(), &spec).and_then(|inst| {
                    if let (Some(bg), Some(pid)) = (&background, inst.init_pid()) {
                        // Init, and every program it starts, at the priority of a sandbox
                        // made on a request's own path.
                        bg.restore(pid).map_err(|e| {
                            BackendError::setup("the prepared sandbox's priority", e)
                        })?;
                    }
                    Ok(inst)
                });
                match made {
                    Ok(inst) => pool
                        .lock()
                        .ready
                        .entry(shape.clone())
                        .or_default()
                        .push(inst),
                    Err(e) => {
                        tracing::warn!("preparing a sandbox failed: {e}");
                        break;
                    }
                }
            }
            drop(background);
            pool.lock().filling.remove(&shape);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(fill);
            }
            Err(_) => {
                std::thread::spawn(fill);
            }
        }
    }

    /// How many prepared instances are ready, over every shape.
    pub(crate) fn ready(&self) -> usize {
        self.lock().ready.values().map(Vec::len).sum()
    }

    /// Takes every prepared instance down.
    pub(crate) fn clear(&self) {
        let ready: Vec<NativeInstance> = self.lock().ready.drain().flat_map(|(_, v)| v).collect();
        drop(ready);
    }
}
