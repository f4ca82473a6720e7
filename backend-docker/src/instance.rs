//! One execution's containers.
//!
//! A container is made for the limits of the step that first needs it (files placed before that
//! wait on the host), so a program whose compile step was cached runs in one container sized for
//! it. A later step with other limits gets a container sized for it: under runc the same one
//! through `docker update` when only cgroup limits differ; otherwise (runsc has no `update`, or
//! the disk differs) a new one, with the workspace moved across. Limits therefore always hold for
//! the step that runs.
//!
//! The instance and its [`Files`](vana_sandbox_core::Files) handles share one [`State`]. A step
//! holds it only to get its container, then runs on a [`Target`] cloned out of it, so file
//! operations (helpers init runs beside the step) go on while a session's kernel runs; file
//! operations take turns among themselves.
//!
//! Network: [`Instance::listen`] records the proxy's address and hands the engine the receiving
//! end of a channel; every container the instance gets has its init listen there before the
//! first step runs in it, and the connections programs open come over the container's attach
//! connection into that channel — the same under runc and gVisor, with the container's network
//! still `none`.

use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::UpdateContainerOptions;
use tokio::sync::{mpsc, Mutex};
use vana_sandbox_core::host::program_rlimits;
use vana_sandbox_core::{
    BackendError, FileEntry, Instance, Limits, Mount, OutputCapture, OutputMode, ProcessIo,
    ProcessOutcome, ProcessSpec, ProxyConnection, ProxyEndpoint, Runtime, SecurityEvent,
    SecurityEventKind, SharedFiles, Status, Stdin,
};
use vana_sandbox_init::protocol::Rlimit;
use vana_sandbox_init::serve::{FsIds, PutEntry};

use crate::container::{self, Container, WORKSPACE};
use crate::error::DockerError;
use crate::files::DockerFiles;
use crate::images::ImageInfo;
use crate::pool::{Pool, PoolKey};
use crate::run::{self, Input, Step, Target};
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
    /// The egress proxy's port inside, and where its connections go (set by `listen`).
    proxy: std::sync::Mutex<Option<(u16, mpsc::Sender<ProxyConnection>)>>,
}

/// The instance's workspace and container, shared with its file handles.
#[derive(Default)]
pub(crate) struct State {
    /// Files placed before any container exists.
    staged: Vec<FileEntry>,
    /// The files the first container started with: what a container that replaces a dead one
    /// starts with.
    initial: Option<Vec<FileEntry>>,
    current: Option<Container>,
    /// The container died under a step (gVisor's sandbox ends at the memory limit; or it had to
    /// be killed): the next step or file operation gets a new one.
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
                proxy: std::sync::Mutex::new(None),
            }),
            state: Arc::new(Mutex::new(State::default())),
        }
    }
}

impl State {
    /// The instance is over: nothing more is placed, and its container is ended.
    fn end(&mut self) {
        self.destroyed = true;
        self.staged.clear();
        if let Some(c) = self.current.take() {
            container::end(c);
        }
    }

    fn usable(&self) -> Result<(), BackendError> {
        if self.destroyed {
            return Err(BackendError::InstanceGone("already destroyed"));
        }
        Ok(())
    }
}

/// Said in the outcome of a step whose container died under it.
const REPLACED: &str = "the container stopped with the program; a later step of this instance \
                        (a session's next cell) gets a new container holding the files the \
                        instance started with: files written since are gone";

/// Checks, inside the container and as the sandbox user, that no directory on the way to a
/// workspace path is a link (or not a directory), then runs the command that follows. Its
/// arguments: the number of paths, the paths (each one's parents come first), the command.
/// Shell built-ins only: no process is spent on the check.
const NO_LINKS: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do
  if [ -L "$1" ] || { [ -e "$1" ] && [ ! -d "$1" ]; }; then
    printf '%s is a link or not a directory: nothing follows it\n' "${1#/workspace/}" >&2
    exit 97
  fi
  n=$((n - 1)); shift
done
exec "$@""#;

/// Most paths one guarded helper checks (further ones are checked by runs of their own first).
const NO_LINKS_PER_RUN: usize = 2000;

/// The directories on the way to `path` (relative to the workspace), outermost first; with
/// `itself`, `path` too.
pub(crate) fn parents(path: &str, itself: bool) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').collect();
    let upto = if itself {
        parts.len()
    } else {
        parts.len().saturating_sub(1)
    };
    (1..=upto)
        .map(|i| format!("{WORKSPACE}/{}", parts[..i].join("/")))
        .collect()
}

impl Ctx {
    /// Whom init acts as when it moves files: the program's user.
    pub(crate) fn fs_ids(&self) -> FsIds {
        FsIds {
            uid: self.shared.config.uid,
            gid: self.shared.config.uid,
        }
    }

    /// A container for a step with `limits`, holding the workspace.
    pub(crate) async fn container_for<'s>(
        &self,
        st: &'s mut State,
        limits: &Limits,
    ) -> Result<&'s mut Container, BackendError> {
        st.usable()?;
        self.replace_dead(st).await;
        let want = self.key(limits);
        let current = match st.current.take() {
            None => {
                let c = self.pool.take_or_create(&want).await?;
                let staged = std::mem::take(&mut st.staged);
                if st.initial.is_none() {
                    st.initial = Some(staged.clone());
                }
                if let Err(e) = self.put_into(&c, &staged, true).await {
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
        let c = st.current.insert(current);
        self.relay_proxy(c).await?;
        Ok(c)
    }

    /// Removes a container that died; the next one starts with the instance's initial files.
    async fn replace_dead(&self, st: &mut State) {
        if !st.dead {
            return;
        }
        st.dead = false;
        if let Some(c) = st.current.take() {
            container::remove(&self.shared, &c.id).await;
        }
        let mut files = st.initial.clone().unwrap_or_default();
        files.append(&mut st.staged);
        st.staged = files;
    }

    /// Has the container's init listen at the proxy's address, if the instance has network
    /// access and it does not yet.
    async fn relay_proxy(&self, c: &mut Container) -> Result<(), BackendError> {
        let wanted = self.proxy.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let (Some((port, accept)), false) = (wanted, c.listening) {
            c.session.listen(port, accept).await?;
            c.listening = true;
        }
        Ok(())
    }

    /// The container holding the workspace, made for the envelope if no step made one yet.
    pub(crate) async fn any_container<'s>(
        &self,
        st: &'s mut State,
    ) -> Result<&'s mut Container, BackendError> {
        st.usable()?;
        self.replace_dead(st).await;
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
        self.replace_dead(st).await;
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

    /// Runs a helper (`tar`) as the sandbox user in container `c`, collecting up to `max`
    /// bytes of output. It may run beside a step (a session's kernel), unmeasured.
    pub(crate) async fn helper(
        &self,
        c: &Target,
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
            arg0: None,
            env: vec!["PATH=/usr/bin:/bin".into(), "LC_ALL=C".into()],
            cwd: WORKSPACE,
            rlimits: self.rlimits(&limits),
            stdin: Input::Bytes(stdin),
            timeout: HELPER_TIMEOUT,
            output: OutputCapture::new(max, None),
            stop: None,
            long_lived: false,
            measure: false,
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

    /// Runs `argv` as a helper once no directory on the way to `paths` (absolute, each one's
    /// parents first) is a link; a link is refused as a file error on `what`.
    pub(crate) async fn helper_no_links(
        &self,
        c: &Target,
        paths: &[String],
        argv: &[&str],
        stdin: &[u8],
        max: u64,
        what: &str,
    ) -> Result<Helped, BackendError> {
        let mut chunks: Vec<&[String]> = paths.chunks(NO_LINKS_PER_RUN).collect();
        let last = chunks.pop().unwrap_or(&[]);
        let guard = |chunk: &[String], cmd: &[&str]| -> Vec<String> {
            let mut v = vec![
                "/bin/sh".to_string(),
                "-c".into(),
                NO_LINKS.into(),
                "sh".into(),
                chunk.len().to_string(),
            ];
            v.extend(chunk.iter().cloned());
            v.extend(cmd.iter().map(|s| s.to_string()));
            v
        };
        let refused = |h: &Helped| {
            (h.code == Some(97)).then(|| BackendError::File {
                path: what.to_string(),
                reason: String::from_utf8_lossy(&h.stderr).trim().to_string(),
            })
        };
        for chunk in chunks {
            let argv = guard(chunk, &["true"]);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let h = self.helper(c, &argv, &[], 1 << 16).await?;
            if let Some(e) = refused(&h) {
                return Err(e);
            }
        }
        let argv = guard(last, argv);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let h = self.helper(c, &argv, stdin, max).await?;
        match refused(&h) {
            Some(e) => Err(e),
            None => Ok(h),
        }
    }

    /// Extracts `files` (and, in a fresh container of an image that links `/tmp` into the
    /// workspace, that directory) into the workspace, as the sandbox user.
    async fn put_into(
        &self,
        c: &Container,
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
        // What fits one frame init places itself, as the program's user, following no link (no
        // helper process: a warm run's largest part after the program); the rest goes by `tar`.
        for f in files {
            vana_sandbox_core::validate::check_relative_path(&f.path).map_err(|reason| {
                BackendError::File {
                    path: f.path.clone(),
                    reason,
                }
            })?;
        }
        let entries: Vec<PutEntry> = dirs
            .iter()
            .map(|(path, mode)| PutEntry {
                path: path.as_bytes().to_vec(),
                mode: *mode,
                content: None,
            })
            .chain(files.iter().map(|f| PutEntry {
                path: f.path.as_bytes().to_vec(),
                mode: if f.executable { 0o755 } else { 0o644 },
                content: Some(f.content.clone()),
            }))
            .collect();
        match c.session.place(self.fs_ids(), entries).await? {
            // Too large for a frame: `tar`.
            None => {}
            Some(placed) => {
                return placed.map_err(|(index, errno)| {
                    let path = (index as usize)
                        .checked_sub(dirs.len())
                        .and_then(|i| files.get(i))
                        .map_or_else(|| ".tmp".to_string(), |f| f.path.clone());
                    let reason = if errno == libc::ENOSPC || errno == libc::EFBIG {
                        "the files exceed the disk limit".to_string()
                    } else {
                        std::io::Error::from_raw_os_error(errno).to_string()
                    };
                    BackendError::File { path, reason }
                })
            }
        }
        let tar = crate::tarball::pack(files, self.shared.config.uid, dirs)?;
        // Nothing is written through a link the program planted (a fresh container has none).
        // Sorted, each directory comes before what is in it.
        let paths: std::collections::BTreeSet<String> = if fresh {
            Default::default()
        } else {
            files.iter().flat_map(|f| parents(&f.path, false)).collect()
        };
        let paths: Vec<String> = paths.into_iter().collect();
        self.extract(c, &tar, &paths, files.first().map_or(".tmp", |f| &f.path))
            .await
    }

    async fn extract(
        &self,
        c: &Container,
        tar: &[u8],
        paths: &[String],
        what: &str,
    ) -> Result<(), BackendError> {
        let argv = ["tar", "-x", "-p", "-C", WORKSPACE, "-f", "-"];
        let h = self
            .helper_no_links(&c.target(), paths, &argv, tar, 1 << 20, what)
            .await?;
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
    async fn move_to(&self, old: Container, want: &PoolKey) -> Result<Container, BackendError> {
        let argv = ["tar", "-c", "-C", WORKSPACE, "-f", "-", "."];
        let cap = old.key.disk.get().saturating_add(16 << 20);
        let packed = self.helper(&old.target(), &argv, &[], cap).await;
        container::end(old);
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
        let c = self.pool.take_or_create(want).await?;
        if let Err(e) = self.extract(&c, &packed.stdout, &[], ".").await {
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

    fn listen(&self, addr: std::net::SocketAddr) -> Result<ProxyEndpoint, BackendError> {
        if addr.ip() != std::net::Ipv4Addr::LOCALHOST {
            return Err(BackendError::Unavailable(format!(
                "the Docker backend relays the proxy at 127.0.0.1 only, not {addr}"
            )));
        }
        let (tx, rx) = mpsc::channel(vana_sandbox_core::egress::RELAY_BACKLOG);
        *self.ctx.proxy.lock().unwrap_or_else(|p| p.into_inner()) = Some((addr.port(), tx));
        Ok(ProxyEndpoint::Relayed(rx))
    }

    async fn run(
        &mut self,
        process: &ProcessSpec,
        io: ProcessIo,
    ) -> Result<ProcessOutcome, BackendError> {
        let (bytes, pipe) = match io.stdin {
            Stdin::Bytes(b) => (b, None),
            Stdin::Pipe(fd) => (Vec::new(), Some(fd)),
        };
        let stdin = match pipe {
            Some(fd) => Input::Pipe(fd),
            None => Input::Bytes(&bytes),
        };
        let ctx = &self.ctx;
        let rlimits = ctx.rlimits(&process.limits);
        let gvisor = ctx.runtime == Runtime::Runsc;
        // The state is held only to get the container: file operations go on beside the run.
        let target = {
            let mut st = self.state.lock().await;
            ctx.container_for(&mut st, &process.limits).await?.target()
        };
        let env: Vec<String> = process
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let long_lived = io.output == OutputMode::Stream;
        let output = match io.output {
            OutputMode::Capture => OutputCapture::new(process.limits.output.get(), io.sink),
            OutputMode::Stream => OutputCapture::streaming(io.sink),
        };
        let step = Step {
            argv: &process.argv,
            arg0: process.arg0.as_deref(),
            env,
            cwd: &process.cwd,
            rlimits,
            stdin,
            timeout: process.limits.timeout,
            output,
            stop: io.stop,
            long_lived,
            measure: true,
        };
        let ran = run::run(&ctx.shared, &target, ctx.shared.config.uid, step).await;
        let ran = {
            let mut st = self.state.lock().await;
            let current = st.current.as_mut().filter(|c| c.id == target.id);
            match ran {
                Ok(ran) => {
                    if let (Some(c), Some(used)) = (current, ran.disk) {
                        c.disk_used = used;
                    }
                    if ran.container_dead {
                        st.dead = true;
                    }
                    ran
                }
                Err(e) => {
                    if target.session.is_closed() {
                        st.dead = true;
                    }
                    return Err(e);
                }
            }
        };
        let mut outcome = ran.outcome;
        if ran.container_dead {
            outcome
                .events
                .push(SecurityEvent::new(SecurityEventKind::Runtime, REPLACED));
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
        self.state.lock().await.end();
        Ok(())
    }
}

impl Drop for DockerInstance {
    fn drop(&mut self) {
        // Dropped without destroy (an error or a panic upstream, a session's last handle gone):
        // ended like a destroyed one — now, or by a task once a run still holding the state
        // lets go.
        if let Ok(mut st) = self.state.try_lock() {
            st.end();
        } else if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let state = self.state.clone();
            handle.spawn(async move { state.lock().await.end() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directories_on_the_way_come_outermost_first() {
        assert_eq!(
            parents("a/b/c.txt", false),
            ["/workspace/a", "/workspace/a/b"]
        );
        assert_eq!(parents("a/b", true), ["/workspace/a", "/workspace/a/b"]);
        assert!(parents("top.txt", false).is_empty());
        // Sorted as a set, each directory still precedes what is in it.
        let set: std::collections::BTreeSet<String> = ["a/b/x", "a/c", "a/b/y", "ab/z"]
            .iter()
            .flat_map(|p| parents(p, false))
            .collect();
        assert_eq!(
            set.into_iter().collect::<Vec<_>>(),
            ["/workspace/a", "/workspace/a/b", "/workspace/ab"]
        );
    }
}
