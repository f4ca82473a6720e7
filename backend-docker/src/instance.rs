//! One execution's containers.
//!
//! A container is made for the limits of the step that first needs it (files placed before that
//! wait on the host), so a program whose compile step was cached runs in one container sized for
//! it. A later step with other limits gets a container sized for it: under runc the same one
//! through `docker update` when only cgroup limits differ; otherwise (runsc has no `update`, or
//! the disk differs) a new one, with the workspace moved across. Limits therefore always hold for
//! the step that runs.

use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::UpdateContainerOptions;
use vana_sandbox_core::host::program_rlimits;
use vana_sandbox_core::validate::check_relative_path;
use vana_sandbox_core::{
    BackendError, FileEntry, Instance, Limits, Mount, ProcessIo, ProcessOutcome, ProcessSpec,
    Runtime, SecurityEvent, SecurityEventKind, Status,
};
use vana_sandbox_init::protocol::Rlimit;

use crate::container::{self, Container, WORKSPACE};
use crate::error::DockerError;
use crate::images::ImageInfo;
use crate::pool::{Pool, PoolKey};
use crate::run::{self, Step};
use crate::Shared;

/// Helper steps (moving files) get this long.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What every step of an instance shares (no container: this part is `Sync`).
struct Ctx {
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    image: ImageInfo,
    runtime: Runtime,
    mounts: Vec<Mount>,
    /// The instance's envelope (for a container needed before any step).
    envelope: Limits,
}

pub(crate) struct DockerInstance {
    ctx: Ctx,
    /// Files placed before any container exists.
    staged: Vec<FileEntry>,
    current: Option<Container>,
    /// A step killed the container.
    dead: bool,
}

/// What a helper command left: its exit code, stdout, stderr.
struct Helped {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Its output passed the cap.
    overflow: bool,
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
            ctx: Ctx {
                shared,
                pool,
                image,
                runtime,
                mounts,
                envelope,
            },
            staged: Vec::new(),
            current: None,
            dead: false,
        }
    }

    /// A container for a step with `limits`, holding the workspace.
    async fn container_for(&mut self, limits: &Limits) -> Result<&mut Container, BackendError> {
        if self.dead {
            return Err(BackendError::InstanceGone(
                "the container was killed by an earlier step",
            ));
        }
        let ctx = &self.ctx;
        let want = ctx.key(limits);
        let current = match self.current.take() {
            None => {
                let mut c = ctx.pool.take_or_create(&want).await?;
                let staged = std::mem::take(&mut self.staged);
                if let Err(e) = ctx.put_into(&mut c, &staged, true).await {
                    container::remove(&ctx.shared, &c.id).await;
                    return Err(e);
                }
                c
            }
            Some(c) if c.key == want => c,
            Some(mut c) if c.key.updatable_to(&want) => match ctx.update(&c.id, &want).await {
                Ok(()) => {
                    c.key = want;
                    c
                }
                Err(e) => {
                    tracing::debug!("docker update failed ({e}); moving to a new container");
                    ctx.move_to(c, &want).await?
                }
            },
            Some(c) => ctx.move_to(c, &want).await?,
        };
        Ok(self.current.insert(current))
    }
}

impl Ctx {
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
    async fn helper(
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
            output: max,
            sink: None,
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

    async fn update(&self, id: &str, want: &PoolKey) -> Result<(), DockerError> {
        let opts = UpdateContainerOptions::<String> {
            memory: Some(want.memory.get() as i64),
            memory_swap: Some(want.memory.get() as i64),
            nano_cpus: Some(want.nano_cpus),
            pids_limit: Some(want.container_pids(&self.shared.config) as i64),
            ..Default::default()
        };
        self.shared
            .docker
            .update_container(id, opts)
            .await
            .map_err(DockerError::api("update container"))
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
    async fn put_files(&mut self, files: &[FileEntry]) -> Result<(), BackendError> {
        for f in files {
            check_relative_path(&f.path).map_err(|m| BackendError::File {
                path: f.path.clone(),
                reason: m,
            })?;
        }
        if self.dead {
            return Err(BackendError::InstanceGone(
                "the container was killed by an earlier step",
            ));
        }
        match self.current.take() {
            None => {
                self.staged.extend_from_slice(files);
                Ok(())
            }
            Some(mut c) => {
                let r = self.ctx.put_into(&mut c, files, false).await;
                self.current = Some(c);
                r
            }
        }
    }

    async fn run(
        &mut self,
        process: &ProcessSpec,
        io: ProcessIo,
    ) -> Result<ProcessOutcome, BackendError> {
        let rlimits = self.ctx.rlimits(&process.limits);
        let shared = self.ctx.shared.clone();
        let gvisor = self.ctx.runtime == Runtime::Runsc;
        let c = self.container_for(&process.limits).await?;
        let env: Vec<String> = process
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let step = Step {
            argv: &process.argv,
            env,
            cwd: &process.cwd,
            rlimits,
            stdin: &io.stdin,
            timeout: process.limits.timeout,
            output: process.limits.output.get(),
            sink: io.sink,
        };
        let ran = run::run(&shared, c, shared.config.uid, step).await?;
        let mut outcome = ran.outcome;
        if ran.container_dead {
            self.dead = true;
            let why = ran.sandbox_failure.or_else(|| {
                (outcome.status() == Status::Killed).then(|| {
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

    async fn read_files(
        &mut self,
        paths: &[String],
        max_bytes: u64,
    ) -> Result<Vec<FileEntry>, BackendError> {
        let max_bytes = max_bytes.min(vana_sandbox_core::host::MAX_READ_BYTES);
        for p in paths {
            check_relative_path(p).map_err(|m| BackendError::File {
                path: p.clone(),
                reason: m,
            })?;
        }
        if self.current.is_none() {
            let envelope = self.ctx.envelope;
            self.container_for(&envelope).await?;
        }
        let Some(mut c) = self.current.take() else {
            return Err(BackendError::InstanceGone("already destroyed"));
        };
        let mut out = Vec::new();
        let mut result = Ok(());
        for p in paths {
            // tar stores a symlink as a link (never its target); unpack_one accepts regular
            // files only.
            let argv = ["tar", "-c", "-C", WORKSPACE, "-f", "-", "--", p.as_str()];
            let cap = max_bytes.saturating_add(1 << 20);
            match self.ctx.helper(&mut c, &argv, &[], cap).await {
                Ok(h) if h.overflow => {
                    result = Err(BackendError::File {
                        path: p.clone(),
                        reason: "file too large to read back".into(),
                    });
                }
                Ok(h) if h.code != Some(0) => {
                    result = Err(BackendError::File {
                        path: p.clone(),
                        reason: String::from_utf8_lossy(&h.stderr).trim().to_string(),
                    });
                }
                Ok(h) => match crate::tarball::unpack_one(p, &h.stdout, max_bytes) {
                    Ok(f) => out.push(f),
                    Err(e) => result = Err(e),
                },
                Err(e) => result = Err(e),
            }
            if result.is_err() {
                break;
            }
        }
        self.current = Some(c);
        result.map(|()| out)
    }

    async fn destroy(mut self: Box<Self>) -> Result<(), BackendError> {
        if let Some(c) = self.current.take() {
            container::remove(&self.ctx.shared, &c.id).await;
        }
        Ok(())
    }
}

impl Drop for DockerInstance {
    fn drop(&mut self) {
        if let Some(c) = self.current.take() {
            // Dropped without destroy (an error or a panic upstream): remove in the background.
            let shared = self.ctx.shared.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { container::remove(&shared, &c.id).await });
            }
        }
    }
}
