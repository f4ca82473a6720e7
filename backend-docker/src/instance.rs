//! One execution's container.

use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::UpdateContainerOptions;
use vana_sandbox_core::{
    BackendError, Bytes, Instance, Limits, ProcessIo, ProcessOutcome, ProcessSpec, SecurityEvent,
    SecurityEventKind, SharedFiles, Stdin, Usage,
};

use crate::error::DockerError;
use crate::files::DockerFiles;
use crate::memcg::Memcg;
use crate::pool::PoolKey;
use crate::{container, exec, Shared};

pub(crate) struct DockerInstance {
    shared: Arc<Shared>,
    id: Option<String>,
    /// The container's memory cgroup on the host, for OOM evidence (the engine's `OOMKilled`
    /// flag only covers the container's main process, not exec'd ones).
    memcg: Option<Memcg>,
    /// The container's main process on the host (for its mount namespace through /proc).
    pid: Option<i64>,
    key: PoolKey,
    /// The limits the container currently has.
    current: PoolKey,
    dead: bool,
}

impl DockerInstance {
    pub(crate) fn new(shared: Arc<Shared>, id: String, key: PoolKey) -> Self {
        Self {
            shared,
            id: Some(id),
            memcg: None,
            pid: None,
            current: key.clone(),
            key,
            dead: false,
        }
    }

    fn id(&self) -> Result<&str, BackendError> {
        match (&self.id, self.dead) {
            (Some(id), false) => Ok(id),
            (Some(_), true) => Err(BackendError::InstanceGone(
                "the container was killed by an earlier step",
            )),
            (None, _) => Err(BackendError::InstanceGone("already destroyed")),
        }
    }

    /// Resizes the container for a step whose limits differ (a compile step needs more).
    async fn fit(&mut self, limits: &Limits) -> Result<(), BackendError> {
        let want = PoolKey::with_limits(
            &self.key.image,
            self.key.runtime,
            limits,
            self.key.disk,
            self.key.mounts.clone(),
        );
        if want == self.current {
            return Ok(());
        }
        let id = self.id()?.to_string();
        let pids = want.container_pids(&self.shared.config) as i64;
        let opts = UpdateContainerOptions::<String> {
            memory: Some(want.memory.get() as i64),
            memory_swap: Some(want.memory.get() as i64),
            nano_cpus: Some(want.nano_cpus),
            pids_limit: Some(pids),
            ..Default::default()
        };
        self.shared
            .docker
            .update_container(&id, opts)
            .await
            .map_err(DockerError::api("update container"))?;
        self.current = want;
        Ok(())
    }

    async fn memcg(&mut self, id: &str) -> Option<&Memcg> {
        if self.memcg.is_none() {
            let pid = self
                .shared
                .docker
                .inspect_container(id, None)
                .await
                .ok()?
                .state?
                .pid?;
            self.memcg = Memcg::of_pid(pid);
            self.pid = Some(pid);
        }
        self.memcg.as_ref()
    }

    /// Bytes used in /workspace and /tmp, read through the container's root as the host sees it
    /// (`/proc/<pid>/root`). Under gVisor the tmpfs lives inside the sandbox's own kernel, out of
    /// the host's sight: 0 there.
    fn disk_used(&self) -> u64 {
        let Some(pid) = self.pid.filter(|_| !self.key.is_gvisor()) else {
            return 0;
        };
        ["workspace", "tmp"]
            .iter()
            .filter_map(|d| {
                let path = std::ffi::CString::new(format!("/proc/{pid}/root/{d}")).ok()?;
                // SAFETY: zeroed statvfs is a valid out-parameter; the path is NUL-terminated.
                let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                let r = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
                (r == 0).then(|| (st.f_blocks - st.f_bfree) * st.f_frsize)
            })
            .sum()
    }

    /// Resource usage from the container's cgroups (the stats endpoint takes half a second),
    /// and the engine's OOM flag for the main process.
    async fn usage(&self, id: &str) -> (Usage, bool) {
        let oom = self
            .shared
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        let usage = match &self.memcg {
            Some(m) => {
                let (cpu_ns, peak, tasks) = m.usage();
                Usage {
                    cpu: std::time::Duration::from_nanos(cpu_ns),
                    memory_peak: Bytes(peak),
                    disk: Bytes(self.disk_used()),
                    processes_peak: tasks.max(1),
                }
            }
            None => Usage {
                processes_peak: 1,
                ..Usage::default()
            },
        };
        (usage, oom)
    }
}

#[async_trait]
impl Instance for DockerInstance {
    fn files(&self) -> SharedFiles {
        Arc::new(DockerFiles {
            shared: self.shared.clone(),
            id: self.id.clone().unwrap_or_default(),
        })
    }

    async fn run(
        &mut self,
        process: &ProcessSpec,
        io: ProcessIo,
    ) -> Result<ProcessOutcome, BackendError> {
        self.fit(&process.limits).await?;
        let id = self.id()?.to_string();
        let nproc = if self.key.is_gvisor() {
            process.limits.processes
        } else {
            0
        };
        let memcg = self.memcg(&id).await.cloned();
        let oom_before = memcg.as_ref().map(Memcg::oom_kills);
        let watch = memcg.as_ref().zip(oom_before);
        let stdin = match io.stdin {
            Stdin::Bytes(b) => b,
            Stdin::Pipe(_) => {
                return Err(BackendError::InvalidProcess(
                    "the Docker backend takes standard input as bytes",
                ))
            }
        };
        let ran = exec::run(
            &self.shared,
            &id,
            process,
            stdin,
            io.sink,
            (nproc, self.key.disk.get()),
            watch,
        )
        .await?;
        if ran.container_killed {
            self.dead = true;
        }
        let mut outcome = ran.outcome;
        let (usage, oom_flag) = self.usage(&id).await;
        let oom_after = self.memcg.as_ref().map(Memcg::oom_kills);
        outcome.oom_killed |=
            oom_flag || matches!((oom_before, oom_after), (Some(a), Some(b)) if b > a);
        outcome.usage = usage;
        if self.key.is_gvisor() {
            outcome.events.push(SecurityEvent::new(
                SecurityEventKind::Runtime,
                "gVisor (runsc): the program's system calls go to gVisor's kernel",
            ));
        }
        Ok(outcome)
    }

    async fn destroy(mut self: Box<Self>) -> Result<(), BackendError> {
        if let Some(id) = self.id.take() {
            container::remove(&self.shared, &id).await;
        }
        Ok(())
    }
}

impl Drop for DockerInstance {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // Dropped without destroy (an error or a panic upstream): remove in the background.
            let shared = self.shared.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { container::remove(&shared, &id).await });
            }
        }
    }
}
