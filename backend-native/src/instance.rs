//! One native instance: a sandbox (its own user, pid, mount, network, IPC, UTS and cgroup
//! namespaces, with `vana-init` as PID 1) that lives until it is destroyed, runs one program at
//! a time, and keeps its workspace between runs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use vana_sandbox_core::reaper;
use vana_sandbox_core::{
    BackendError, Bytes, Exit, Instance, InstanceSpec, Limits, ProcessIo, ProcessOutcome,
    ProcessSpec, ProxyEndpoint, SecurityEvent, SecurityEventKind, SharedFiles,
};
use vana_sandbox_init::protocol::{Rlimit, Run};

use crate::cgroup::InstanceCgroup;
use crate::launch::{self, Init, Launch};
use crate::lease::Lease;
use crate::mode::{Ids, PROGRAM_ID};
use crate::mounts;
use crate::rootfs::{self, ExtraMount, RootSpec, Stage};
use crate::supervisor::{self, Failure, RunPlan};
use crate::sys::Fd;
use crate::workspace::Workspace;
use crate::{landlock, Shared};

/// How long init gets to take the namespace down before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Capabilities init keeps in root mode: switch the program to its ids, drop the program's
/// bounding set, signal it.
const INIT_CAPS: [u32; 4] = [CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP];
const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;

/// A live sandbox.
struct Live {
    init: Init,
    workspace: Arc<Workspace>,
    cgroup: Box<dyn InstanceCgroup>,
    ids: Ids,
    disk: Bytes,
    _lease: Option<Lease>,
}

impl Live {
    /// Ends the sandbox: init kills everything and exits (or is killed), the storage goes with
    /// the last descriptor, the cgroup is removed, the lease released.
    fn shut_down(self) -> Result<(), BackendError> {
        let Live {
            init,
            workspace,
            mut cgroup,
            ..
        } = self;
        init.shut_down(SHUTDOWN_GRACE);
        drop(workspace);
        cgroup
            .remove()
            .map_err(|e| BackendError::backend("removing the instance's cgroup", e))
    }

    /// Ends the sandbox off the caller's path (see [`reaper`]).
    fn end(self) {
        reaper::end(Box::new(move || self.shut_down()));
    }
}

/// One native instance.
pub(crate) struct NativeInstance {
    shared: Arc<Shared>,
    live: Option<Live>,
    /// The workspace, usable while a program runs (the storage goes with the last handle).
    files: Arc<Workspace>,
}

impl NativeInstance {
    /// Creates the sandbox (blocking: call from a blocking thread).
    pub(crate) fn create(shared: Arc<Shared>, spec: &InstanceSpec) -> Result<Self, BackendError> {
        let s = &*shared;
        let begun = Instant::now();
        reaper::wait_below(reaper::MAX_ENDING, reaper::BACKLOG_WAIT);
        let lease = s.take_lease()?;
        let ids = s.mode.ids(lease.as_ref().map_or(0, |l| l.index));
        let name = s.instance_name();
        let mut cgroup = s
            .cgroups
            .create(&name, &spec.limits)
            .map_err(|e| BackendError::backend("creating the instance's cgroup", e))?;
        let cgroup_made = Instant::now();

        // Toolchains: as root, detached copies the setup child attaches (it cannot reach paths
        // under a mode-700 home); rootless, plain binds of paths the caller can reach.
        let trees: Vec<Fd> = if s.mode.is_root() {
            spec.mounts
                .iter()
                .map(|m| mounts::read_only_tree(&m.host))
                .collect::<Result<_, _>>()
                .map_err(|e| BackendError::setup("cloning a toolchain mount", e))?
        } else {
            Vec::new()
        };
        let extra: Vec<ExtraMount<'_>> = spec
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| match trees.get(i) {
                Some(t) => ExtraMount::Tree {
                    tree: t.raw(),
                    mount: m,
                },
                None => ExtraMount::Path(m),
            })
            .collect();
        let devices = if s.devices.load(Ordering::Relaxed) {
            mounts::device_tree()
                .map_err(|e| {
                    if s.devices.swap(false, Ordering::Relaxed) {
                        tracing::warn!("device tmpfs unavailable, binding the host's nodes: {e}");
                    }
                })
                .ok()
        } else {
            None
        };
        let disk = spec.limits.disk;
        let ops = rootfs::plan(&RootSpec {
            stage: Stage {
                root: &s.dirs.root,
                storage: &s.dirs.storage,
            },
            limits: &spec.limits,
            owner: PROGRAM_ID,
            devices: devices.as_ref().map(Fd::raw),
            extra: &extra,
            namespace_root: s.mode.is_root(),
        })
        .map_err(|e| BackendError::setup("planning the root filesystem", e))?;
        let planned = Instant::now();
        let ruleset = match s.landlock_abi {
            0 => None,
            abi => Some(
                landlock::create(abi)
                    .map_err(|e| BackendError::setup("creating the Landlock ruleset", e))?,
            ),
        };
        let rules = rootfs::landlock_rules(&spec.mounts)
            .map_err(|e| BackendError::setup("planning the Landlock rules", e))?;
        let tree_fds: Vec<_> = trees.iter().chain(&devices).map(Fd::raw).collect();
        let keep_caps: &[u32] = if s.mode.is_root() { &INIT_CAPS } else { &[] };
        let netns = s.netns.as_ref().and_then(crate::netns::NetnsPool::take);
        let launching = Instant::now();
        let (init, storage) = launch::start(Launch {
            ops: &ops,
            storage: &s.dirs.storage_c,
            root: &s.dirs.root_c,
            cgroup_fds: &cgroup.join_fds(),
            init: s.init.fd.raw(),
            ids: &ids,
            keep_caps,
            landlock: ruleset.as_ref().map(|r| (r, rules.as_slice())),
            seccomp: &s.seccomp,
            trees: &tree_fds,
            netns: netns.as_ref().map(Fd::raw),
            time_ns: if s.mode.is_root() {
                launch::TimeNs::Host
            } else {
                launch::TimeNs::Child
            },
        })?;
        drop(netns);
        cgroup.close_join_fds();
        if s.mode.is_root() {
            // The OOM killer takes a program, never the init that reports it.
            let _ = std::fs::write(format!("/proc/{}/oom_score_adj", init.pid), "-1000");
        }
        let workspace = Arc::new(Workspace::new(storage, ids.program_host));
        // Where a sandbox's start-up goes (`VANA_SANDBOX_LOG=vana_sandbox_native=debug`): the
        // setup child's and init's shares come from `launch`.
        tracing::debug!(
            cgroup = ?cgroup_made.duration_since(begun),
            plan = ?planned.duration_since(cgroup_made),
            launch = ?launching.elapsed(),
            total = ?begun.elapsed(),
            "sandbox built"
        );
        Ok(Self {
            files: workspace.clone(),
            live: Some(Live {
                init,
                workspace,
                cgroup,
                ids,
                disk,
                _lease: lease,
            }),
            shared,
        })
    }

    /// Init's pid in the host's pid namespace, while the sandbox lives.
    pub(crate) fn init_pid(&self) -> Option<libc::pid_t> {
        self.live.as_ref().map(|l| l.init.pid)
    }

    /// Whether the sandbox still runs (a prepared one that died waiting is discarded).
    pub(crate) fn is_alive(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| !l.init.exited_within(Duration::ZERO))
    }
}

fn bytes_of(strings: impl Iterator<Item = String>) -> Vec<Vec<u8>> {
    strings.map(String::into_bytes).collect()
}

/// Runs `process` in `live` (blocking).
fn run_in(
    shared: &Shared,
    live: &mut Live,
    process: &ProcessSpec,
    io: ProcessIo,
) -> Result<ProcessOutcome, Failure> {
    let limits = &process.limits;
    live.cgroup
        .set_limits(limits)
        .map_err(|e| Failure::Setup(BackendError::backend("setting the run's limits", e)))?;
    live.cgroup.begin_run();
    let started = crate::kmsg::now();
    let run = Run {
        uid: live.ids.program,
        gid: live.ids.program,
        rlimits: shared.rlimits(limits, live.disk),
        cwd: process.cwd.clone().into_bytes(),
        argv: bytes_of(process.argv.iter().cloned()),
        arg0: process.arg0.clone().map(String::into_bytes),
        env: bytes_of(process.env.iter().map(|(k, v)| format!("{k}={v}"))),
    };
    let plan = RunPlan {
        run,
        stdin: io.stdin,
        output: io.output,
        stop: io.stop,
        sink: io.sink,
        limits,
        program_host: live.ids.program_host,
    };
    let mut outcome = supervisor::run(&live.init, live.cgroup.as_mut(), plan)?;
    live.cgroup.sample();
    let stats = live.cgroup.run_stats();
    // The cgroup counts every process of the run; rusage only those the program waited for.
    if stats.cpu_ns > 0 {
        outcome.usage.cpu = Duration::from_nanos(stats.cpu_ns);
    }
    if stats.memory_peak > 0 {
        outcome.usage.memory_peak = Bytes(stats.memory_peak);
    }
    outcome.usage.processes_peak = stats.pids_peak.max(1);
    outcome.usage.disk = Bytes(live.workspace.usage().unwrap_or(0));
    outcome.oom_killed = stats.oom_kills > 0;
    outcome.pids_limit_hits = stats.pids_max_hits;
    outcome.events = shared.degraded.clone();
    // SIGSYS alone proves nothing (a program can raise it): only the kernel's own record of a
    // seccomp kill makes it one.
    if outcome.exit == Exit::Signal(libc::SIGSYS) {
        if let Some(kill) = crate::kmsg::seccomp_kill(live.ids.program_host.0, started) {
            outcome.events.push(SecurityEvent::new(
                SecurityEventKind::SeccompKill,
                format!(
                    "the seccomp filter killed the program: system call {} of architecture {} \
                     (non-native ABIs are killed; the kernel's audit record says so)",
                    kill.syscall, kill.arch
                ),
            ));
        }
    }
    Ok(outcome)
}

#[async_trait]
impl Instance for NativeInstance {
    fn files(&self) -> SharedFiles {
        self.files.clone()
    }

    /// A socket listening inside the sandbox's network namespace, opened from a host thread
    /// that enters only that namespace (root mode: as root; rootless: as the owner of the
    /// sandbox's user namespace) and ends right after; the socket stays the host's.
    fn listen(&self, addr: std::net::SocketAddr) -> Result<ProxyEndpoint, BackendError> {
        let live = self
            .live
            .as_ref()
            .ok_or(BackendError::InstanceGone("already destroyed"))?;
        let ns = format!("/proc/{}/ns/net", live.init.pid);
        let opened = std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
            let ns = std::fs::File::open(ns)?;
            // SAFETY: setns on a descriptor we own, for this thread only (it ends below).
            let r =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::net::TcpListener::bind(addr)
        })
        .join()
        .map_err(|_| {
            BackendError::setup(
                "opening the proxy inside the sandbox",
                std::io::Error::other("the thread panicked"),
            )
        })?;
        opened
            .map(ProxyEndpoint::Listener)
            .map_err(|e| BackendError::setup("opening the proxy inside the sandbox", e))
    }

    async fn run(
        &mut self,
        process: &ProcessSpec,
        io: ProcessIo,
    ) -> Result<ProcessOutcome, BackendError> {
        if process.argv.is_empty() {
            return Err(BackendError::InvalidProcess("empty argv"));
        }
        let mut live = self
            .live
            .take()
            .ok_or(BackendError::InstanceGone("already destroyed"))?;
        let shared = self.shared.clone();
        let process = process.clone();
        let (live, result) = tokio::task::spawn_blocking(move || {
            let r = run_in(&shared, &mut live, &process, io);
            (live, r)
        })
        .await
        .map_err(|e| BackendError::backend("the sandbox supervisor thread", e))?;
        match result {
            Ok(outcome) => {
                self.live = Some(live);
                Ok(outcome)
            }
            Err(Failure::Setup(e)) => {
                self.live = Some(live);
                Err(e)
            }
            Err(Failure::InitLost(e)) => {
                // The sandbox cannot run anything else: take it down.
                live.end();
                Err(e)
            }
        }
    }

    async fn destroy(mut self: Box<Self>) -> Result<(), BackendError> {
        if let Some(live) = self.live.take() {
            live.end();
        }
        Ok(())
    }
}

impl Drop for NativeInstance {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            live.end();
        }
    }
}

/// The rlimits of a program: core dumps off, descriptors, file size = the disk limit, processes,
/// stack, no message queues, the CPU-time limit when set, and — where no cgroup limits memory —
/// the data segment. Each is capped by the host's own hard limit.
pub(crate) fn rlimits(
    limits: &Limits,
    disk: Bytes,
    nproc_extra: u64,
    memory_rlimit: bool,
) -> Vec<Rlimit> {
    let clamp = |resource: libc::__rlimit_resource_t, want: u64| {
        // SAFETY: valid pointer to a local struct.
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        unsafe { libc::getrlimit(resource, &mut cur) };
        let v = want.min(cur.rlim_max);
        Rlimit {
            resource,
            cur: v,
            max: v,
        }
    };
    let mut v = vec![
        clamp(libc::RLIMIT_CORE, 0),
        clamp(libc::RLIMIT_NOFILE, 4096),
        clamp(libc::RLIMIT_FSIZE, disk.get().max(1)),
        clamp(libc::RLIMIT_NPROC, limits.processes + nproc_extra),
        clamp(libc::RLIMIT_STACK, 8 << 20),
        clamp(libc::RLIMIT_MSGQUEUE, 0),
        // Queued signals and locked memory are kernel memory outside any cgroup limit.
        clamp(libc::RLIMIT_SIGPENDING, 1024),
        clamp(libc::RLIMIT_MEMLOCK, 64 << 10),
    ];
    if let Some(cpu) = limits.cpu_time {
        v.push(clamp(libc::RLIMIT_CPU, cpu.as_secs().max(1)));
    }
    if memory_rlimit {
        v.push(clamp(libc::RLIMIT_DATA, limits.memory.get()));
    }
    v
}
