//! One execution's containers.
//!
//! A container is made for the limits of the step that first needs it (files placed before that
//! wait on the host), so a program whose compile step was cached runs in one container sized for
//! it. A later step with other limits gets a container sized for it: under runc the same one
//! through `docker update` when only cgroup limits differ; otherwise (runsc has no `update`, or
//! the disk differs) a new one, with the workspace moved across. Limits therefore always hold for
//! the step that runs.
//!
//! The instance and its [`Files`](vana_sandbox_core::Files) handles share one [`State`]: a
//! container's init runs one thing at a time, so a file operation waits for a running step
//! (the Docker backend runs no session kernels, which would need both at once).

use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::UpdateContainerOptions;
use tokio::sync::Mutex;
use vana_sandbox_core::host::program_rlimits;
use vana_sandbox_core::{
    BackendError, FileEntry, Instance, Limits, Mount, OutputCapture, OutputMode, ProcessIo,
    ProcessOutcome, ProcessSpec, Runtime, SecurityEvent, SecurityEventKind, SharedFiles, Status,
    Stdin,
};
use vana_sandbox_init::protocol::Rlimit;

use crate::container::{self, Container, WORKSPACE};
use crate::error::DockerError;
use crate::files::DockerFiles;
use crate::images::ImageInfo;
use crate::pool::{Pool, PoolKey};
use crate::run::{self, Step};
use crate::Shared;

/// Helper steps (moving files) get this long.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What every step of an instance shares, and how to get a container for a step.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pool: Arc<Pool>,
    image: ImageInfo,
    runtime: Runtime,
    mounts: Vec<Mount>,
    /// The instance's envelope (for a container needed before any step).
    envelope: Limits,
}

/// The instance's workspace and container, shared with its file handles.
#[derive(Default)]
pub(crate) struct State {
    /// Files placed before any container exists.
    staged: Vec<FileEntry>,
    current: Option<Container>,
    /// A step killed the container.
    dead: bool,
    /// The instance was destroyed: nothing may create a container for it any more.
    destroyed: bool,
}

pub(crate) struct DockerInstance {
    ctx: Arc<Ctx>,
    state: Arc<Mutex<State>>,
}

/// What a helper command left: its exit code, stdout, stderr.
pub(crate) struct Helped {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Its output passed the cap.
    pub overflow: bool,
}

impl DockerInstance {
    pub(crate) fn new(
        shared: Arc<Shared>,
        pool: Arc<Pool>,
        image: ImageInfo,
        runtime: Runtime,
        mounts: Vec<Mount>,
        envelope: Limits,
    ) -> Self {
        Self {
            ctx: Arc::new(Ctx {
                shared,
                pool,
                image,
                runtime,
                mounts,
                envelope,
            }),
            state: Arc::new(Mutex::new(State::default())),
        }
    }
}

impl State {
    fn usable(&self) -> Result<(), BackendError> {
        if self.destroyed {
            return Err(BackendError::InstanceGone("already destroyed"));
        }
        if self.dead {
            return Err(BackendError::InstanceGone(
                "the container was killed by an earlier step",
            ));
        }
        Ok(())
    }
}

impl Ctx {
    /// A container for a step with `limits`, holding the workspace.
    pub(crate) async fn container_for<'s>(
        &self,
        st: &'s mut State,
        limits: &Limits,
    ) -> Result<&'s mut Container, BackendError> {
        st.usable()?;
        let want = self.key(limits);
        let current = match st.current.take() {
            None => {
                let mut c = self.pool.take_or_create(&want).await?;
                let staged = std::mem::take(&mut st.staged);
                if let Err(e) = self.put_into(&mut c, &staged, true).await {
                    container::remove(&self.shared, &c.id).await;
                    return Err(e);
                }
                c
            }
            Some(c) if c.key == want => c,
            Some(mut c) if c.key.updatable_to(&want) => match self.update(&mut c, &want).await {
                Ok(()) => {
                    c.key = want;
                    c
                }
                Err(e) => {
                    tracing::debug!("docker update failed ({e}); moving to a new container");
                    self.move_to(c, &want).await?
                }
            },
            Some(c) => self.move_to(c, &want).await?,
        };
        Ok(st.current.insert(current))
    }

    /// The container holding the workspace, made for the envelope if no step made one yet.
    pub(crate) async fn any_container<'s>(
        &self,
        st: &'s mut State,
    ) -> Result<&'s mut Container, BackendError> {
        st.usable()?;
        if st.current.is_none() {
            let envelope = self.envelope;
            self.container_for(st, &envelope).await?;
        }
        st.current
            .as_mut()
            .ok_or(BackendError::InstanceGone("already destroyed"))
    }

    /// Places `files`: kept on the host until a container exists.
    pub(crate) async fn put(
        &self,
        st: &mut State,
        files: &[FileEntry],
    ) -> Result<(), BackendError> {
        st.usable()?;
        match st.current.as_mut() {
            None => {
                st.staged.extend_from_slice(files);
                Ok(())
            }
            Some(c) => self.put_into(c, files, false).await,
        }
    }

    fn key(&self, limits: &Limits) -> PoolKey {
        PoolKey::new(&self.image, self.runtime, limits, self.mounts.clone())
    }

    // `RLIMIT_*` is `u32` on glibc and `i32` on musl.
    #[allow(clippy::unnecessary_cast)]
    fn rlimits(&self, limits: &Limits) -> Vec<Rlimit> {
        // Under gVisor RLIMIT_NPROC counts the sandbox's own processes: the program's process
        // limit. Under runc uids are shared by every container: the pids cgroup is the limit.
        let gvisor = self.runtime == Runtime::Runsc;
        // gVisor lets a uid hold one task more than its RLIMIT_NPROC (measured: 17 tasks under a
        // limit of 16), so the limit it gets is one lower.
        let nproc = gvisor.then_some(limits.processes.saturating_sub(1).max(1));
        program_rlimits(limits, limits.disk, nproc)
            .into_iter()
            // gVisor refuses to set these (EPERM), and needs neither: they bound host kernel
            // memory (queued signals, message queues) the program never reaches under gVisor.
            .filter(|(resource, _)| {
                !(gvisor
                    && [libc::RLIMIT_SIGPENDING as u32, libc::RLIMIT_MSGQUEUE as u32]
                        .contains(resource))
            })
            .map(|(resource, v)| Rlimit {
                resource,
                cur: v,
                max: v,
            })
            .collect()
    }

    /// Runs a helper (`tar`) as the sandbox user, collecting up to `max` bytes of output.
    pub(crate) async fn helper(
        &self,
        c: &mut Container,
        argv: &[&str],
        stdin: &[u8],
        max: u64,
    ) -> Result<Helped, BackendError> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let limits = Limits {
            disk: c.key.disk,
            ..self.envelope
        };
        let step = Step {
            argv: &argv,
            env: vec!["PATH=/usr/bin:/bin".into(), "LC_ALL=C".into()],
            cwd: WORKSPACE,
            rlimits: self.rlimits(&limits),
            stdin,
            timeout: HELPER_TIMEOUT,
            output: OutputCapture::new(max, None),
            stop: None,
        };
        let ran = run::run(&self.shared, c, self.shared.config.uid, step).await?;
        if ran.container_dead {
            return Err(BackendError::InstanceGone(
                "the container stopped while moving files",
            ));
        }
        let o = ran.outcome;
        Ok(Helped {
            code: o.exit_code(),
            overflow: o.stopped.is_some(),
            stdout: o.stdout,
            stderr: o.stderr,
        })
    }

    /// Extracts `files` (and, in a fresh container of an image that links `/tmp` into the
    /// workspace, that directory) into the workspace, as the sandbox user.
    async fn put_into(
        &self,
        c: &mut Container,
        files: &[FileEntry],
        fresh: bool,
    ) -> Result<(), BackendError> {
        let dirs: &[(&str, u32)] = if fresh && c.key.tmp_in_workspace {
            &[(".tmp", 0o1777)]
        } else {
            &[]
        };
        if files.is_empty() && dirs.is_empty() {
            return Ok(());
        }
        let tar = crate::tarball::pack(files, self.shared.config.uid, dirs)?;
        self.extract(c, &tar, files.first().map_or(".tmp", |f| &f.path))
            .await
    }

    async fn extract(&self, c: &mut Container, tar: &[u8], what: &str) -> Result<(), BackendError> {
        let argv = ["tar", "-x", "-p", "-C", WORKSPACE, "-f", "-"];
        let h = self.helper(c, &argv, tar, 1 << 20).await?;
        if h.code != Some(0) {
            let reason = String::from_utf8_lossy(&h.stderr).trim().to_string();
            let reason = if reason.contains("No space left") || reason.contains("too large") {
                "the files exceed the disk limit".to_string()
            } else {
                reason
            };
            return Err(BackendError::File {
                path: what.to_string(),
                reason,
            });
        }
        Ok(())
    }

    async fn update(&self, c: &mut Container, want: &PoolKey) -> Result<(), DockerError> {
        let opts = UpdateContainerOptions::<String> {
            memory: Some(want.memory.get() as i64),
            memory_swap: Some(want.memory.get() as i64),
            nano_cpus: Some(want.nano_cpus),
            pids_limit: Some(want.container_pids(&self.shared.config) as i64),
            ..Default::default()
        };
        self.shared
            .docker
            .update_container(&c.id, opts)
            .await
            .map_err(DockerError::api("update container"))?;
        // `docker update` has no TCP buffer bound: set it on the cgroup itself (v1).
        if self.shared.cgroup_v1 && want.socket_memory != c.key.socket_memory {
            let memcg = c.memcg.as_ref().ok_or_else(|| {
                DockerError::Other("the container's memory cgroup is not visible".into())
            })?;
            memcg
                .set_socket_memory(want.socket_memory.get())
                .map_err(|e| DockerError::Other(format!("memory.kmem.tcp.limit_in_bytes: {e}")))?;
        }
        Ok(())
    }

    /// Moves the workspace from `old` into a new container made for `want`; removes `old`.
    async fn move_to(&self, mut old: Container, want: &PoolKey) -> Result<Container, BackendError> {
        let argv = ["tar", "-c", "-C", WORKSPACE, "-f", "-", "."];
        let cap = old.key.disk.get().saturating_add(16 << 20);
        let packed = self.helper(&mut old, &argv, &[], cap).await;
        container::remove(&self.shared, &old.id).await;
        let packed = packed?;
        if packed.code != Some(0) || packed.overflow {
            return Err(BackendError::File {
                path: ".".into(),
                reason: format!(
                    "moving the workspace to a container with the next step's limits: {}",
                    String::from_utf8_lossy(&packed.stderr).trim()
                ),
            });
        }
        let mut c = self.pool.take_or_create(want).await?;
        if let Err(e) = self.extract(&mut c, &packed.stdout, ".").await {
            container::remove(&self.shared, &c.id).await;
            return Err(e);
        }
        Ok(c)
    }
}

#[async_trait]
impl Instance for DockerInstance {
    fn files(&self) -> SharedFiles {
        Arc::new(DockerFiles {
            ctx: self.ctx.clone(),
            state: self.state.clone(),
        })
    }

    async fn run(
        &mut self,
        process: &ProcessSpec,
        io: ProcessIo,
    ) -> Result<ProcessOutcome, BackendError> {
        let stdin = match io.stdin {
            Stdin::Bytes(b) => b,
            Stdin::Pipe(_) => {
                return Err(BackendError::InvalidProcess(
                    "the Docker backend takes standard input as bytes",
                ))
            }
        };
        let ctx = &self.ctx;
        let rlimits = ctx.rlimits(&process.limits);
        let gvisor = ctx.runtime == Runtime::Runsc;
        let mut st = self.state.lock().await;
        let c = ctx.container_for(&mut st, &process.limits).await?;
        let env: Vec<String> = process
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let output = match io.output {
            OutputMode::Capture => OutputCapture::new(process.limits.output.get(), io.sink),
            OutputMode::Stream => OutputCapture::streaming(io.sink),
        };
        let step = Step {
            argv: &process.argv,
            env,
            cwd: &process.cwd,
            rlimits,
            stdin: &stdin,
            timeout: process.limits.timeout,
            output,
            stop: io.stop,
        };
        let ran = run::run(&ctx.shared, c, ctx.shared.config.uid, step).await?;
        let mut outcome = ran.outcome;
        if ran.container_dead {
            st.dead = true;
            let why = ran.sandbox_failure.or_else(|| {
                (outcome.status() == Status::Killed && outcome.stopped.is_none()).then(|| {
                    "the container stopped during the run without evidence of a limit".to_string()
                })
            });
            if let Some(why) = why {
                return Err(BackendError::backend(
                    "the Docker backend",
                    DockerError::Other(why),
                ));
            }
        }
        if gvisor {
            outcome.events.push(SecurityEvent::new(
                SecurityEventKind::Runtime,
                "gVisor (runsc): the program's system calls go to gVisor's kernel",
            ));
        }
        Ok(outcome)
    }

    async fn destroy(self: Box<Self>) -> Result<(), BackendError> {
        let current = {
            let mut st = self.state.lock().await;
            st.destroyed = true;
            st.staged.clear();
            st.current.take()
        };
        if let Some(c) = current {
            container::remove(&self.ctx.shared, &c.id).await;
        }
        Ok(())
    }
}

impl Drop for DockerInstance {
    fn drop(&mut self) {
        // Dropped without destroy (an error or a panic upstream): remove in the background.
        let Ok(mut st) = self.state.try_lock() else {
            return;
        };
        st.destroyed = true;
        if let Some(c) = st.current.take() {
            let shared = self.ctx.shared.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { container::remove(&shared, &c.id).await });
            }
        }
    }
}
