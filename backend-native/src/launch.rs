//! The parent side of creating a sandbox: clone the setup child into new namespaces, map its
//! ids, let it build the sandbox, take the workspace it hands over, and wait for init's hello.
//!
//! ```text
//! host                                   setup child (new user, pid, mount, net, ipc, uts ns)
//! ----                                   ----------------------------------------------------
//! clone (shared memory, own stack) ───▶  close inherited fds, time ns (for its children),
//!                                         wait for Go
//! write setgroups, uid_map, gid_map
//! send Go ───────────────────────────▶   join cgroup, cgroup ns, hostname, build root, pivot,
//!                                         lo up, Landlock rules, drop privileges
//! take Ready + workspace fd ◀──────────  send Ready with the workspace's descriptor
//! set the time ns's offsets, send Go ─▶  seccomp, execveat(vana-init)
//! take Hello ◀───────────────────────────  init: restrict (Landlock), Hello, serve
//! ```

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use vana_sandbox_core::BackendError;
use vana_sandbox_init::protocol::{HostMessage, InitMessage, Stage, VERSION};

use crate::child::ChildPlan;
use crate::control::{self, Control, ControlError};
use crate::landlock;
use crate::mode::Ids;
use crate::rootfs::Op;
use crate::seccomp::Insn;
use crate::spawn;
use crate::sys::{self, Fd};

/// How long building a sandbox may take before it is abandoned.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Namespaces of every sandbox (the cgroup namespace is entered by the setup child after joining
/// its cgroup).
const CLONE_FLAGS: spawn::CloneFlags = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_PIDFD
    | libc::SIGCHLD;

/// Inputs of one sandbox's creation.
pub(crate) struct Launch<'a> {
    pub ops: &'a [Op],
    pub storage: &'a CString,
    pub root: &'a CString,
    pub cgroup_fds: &'a [RawFd],
    pub init: RawFd,
    pub ids: &'a Ids,
    pub keep_caps: &'a [u32],
    pub landlock: Option<(&'a landlock::Ruleset, &'a [landlock::Rule])>,
    pub seccomp: &'a [Insn],
    /// Detached mount trees the ops attach (kept open in the child).
    pub trees: &'a [RawFd],
    /// A network namespace made ahead ([`crate::netns`]) to enter instead of making one.
    pub netns: Option<RawFd>,
    /// Who makes the time namespace.
    pub time_ns: TimeNs,
}

/// Who makes a sandbox's time namespace and sets its clocks (the kernel takes offsets only
/// before a process entered the namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeNs {
    /// The cloning thread, before the clone (root mode: it has the host's privileges). No
    /// round trip: the child's exec enters it as it is.
    Host,
    /// The setup child, for its children; the host sets the offsets once the child is ready and
    /// says `Go` a second time before the exec (rootless).
    Child,
}

/// A running sandbox: its init, and the host's end of init's control socket.
#[derive(Debug)]
pub(crate) struct Init {
    pub pid: libc::pid_t,
    pub pidfd: Fd,
    pub control: Control,
    reaped: bool,
}

impl Init {
    /// SIGKILL to init: the kernel kills the whole pid namespace with it.
    pub(crate) fn kill(&self) {
        // SAFETY: pidfd_send_signal on our own pidfd; no pointers besides NULL info.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.raw(),
                libc::SIGKILL,
                0usize,
                0u32,
            )
        };
    }

    /// Whether init has exited, waiting at most `wait`.
    pub(crate) fn exited_within(&self, wait: Duration) -> bool {
        let mut p = libc::pollfd {
            fd: self.pidfd.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, wait.as_millis().min(i32::MAX as u128) as i32) };
        n > 0
    }

    /// Reaps init (it must have exited or been killed).
    pub(crate) fn reap(&mut self) {
        if self.reaped {
            return;
        }
        let mut status = 0;
        loop {
            // SAFETY: valid pointer to a local int; our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL) };
            if r >= 0 || sys::errno() != libc::EINTR {
                break;
            }
        }
        self.reaped = true;
    }

    /// Ends the sandbox: closing the control socket tells init to kill everything and exit; a
    /// stuck init is killed after `grace`. Reaps it.
    pub(crate) fn shut_down(mut self, grace: Duration) {
        // Closing our end of the control socket is the signal.
        drop(std::mem::replace(&mut self.control.fd, Fd(-1)));
        if !self.exited_within(grace) {
            self.kill();
        }
        self.reap();
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            self.reap();
        }
    }
}

/// The error for a `Failed` report: the stage described, with `detail` (what it was doing).
pub(crate) fn failure(stage: u32, errno: i32, detail: &str) -> BackendError {
    let stage = Stage::from_u32(stage).map_or("an unknown step", Stage::describe);
    BackendError::setup(
        format!("{stage}{detail}"),
        io::Error::from_raw_os_error(errno),
    )
}

fn setup_error(stage: u32, index: u32, errno: i32, ops: &[Op]) -> BackendError {
    let what = match Stage::from_u32(stage) {
        Some(Stage::RootOp) => ops
            .get(index as usize)
            .map_or_else(String::new, |op| format!(": {op}")),
        _ => String::new(),
    };
    failure(stage, errno, &what)
}

fn control_error(step: &'static str, e: ControlError) -> BackendError {
    BackendError::backend(step, e)
}

fn write_proc(pid: libc::pid_t, file: &str, content: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/{file}"), content)
}

/// Seconds of uptime the sandbox's clocks start at.
const CLOCK_START_SECS: i64 = 1;

/// Sets the offsets of the time namespace the setup child made for its children
/// ([`TimeNs::Child`]); the child execs init only after the host's second `Go`. (A kernel
/// without time namespaces has no file.)
fn set_time_offsets(pid: libc::pid_t) -> io::Result<()> {
    match write_proc(pid, "timens_offsets", &time_offsets()?) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The `timens_offsets` that make a time namespace's monotonic and boot-time clocks start near
/// zero, so that neither reveals how long the host has been up.
fn time_offsets() -> io::Result<String> {
    let mut offsets = String::new();
    for (name, clock) in [
        ("monotonic", libc::CLOCK_MONOTONIC),
        ("boottime", libc::CLOCK_BOOTTIME),
    ] {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime into a local timespec.
        if unsafe { libc::clock_gettime(clock, &mut ts) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let offset = (CLOCK_START_SECS - ts.tv_sec).min(0);
        offsets.push_str(&format!("{name} {offset} 0\n"));
    }
    Ok(offsets)
}

/// Creates a sandbox; returns its init and the descriptor of its writable storage.
pub(crate) fn start(l: Launch<'_>) -> Result<(Init, Fd), BackendError> {
    let (control, child_end) =
        control::pair().map_err(|e| BackendError::setup("creating the control socket", e))?;
    let mut keep: Vec<RawFd> = vec![child_end.raw(), l.init];
    keep.extend(l.cgroup_fds);
    keep.extend(l.trees);
    if let Some((rs, _)) = l.landlock {
        keep.push(rs.fd.raw());
    }
    keep.sort_unstable();
    let argv: [*const libc::c_char; 2] = [c"vana-init".as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let plan = ChildPlan {
        id: l.ids.init,
        keep_fds: &keep,
        control: child_end.raw(),
        cgroup_fds: l.cgroup_fds,
        init: l.init,
        hostname: b"sandbox",
        loopback: l.netns.is_none(),
        own_time_ns: l.time_ns == TimeNs::Child,
        ops: l.ops,
        storage: l.storage,
        root: l.root,
        keep_caps: l.keep_caps,
        landlock: l
            .landlock
            .map(|(rs, rules)| (rs.fd.raw(), rs.handled_fs, rules)),
        seccomp: l.seccomp,
        init_argv: &argv,
        init_envp: &envp,
    };

    let flags = match l.netns {
        Some(_) => CLONE_FLAGS & !libc::CLONE_NEWNET,
        None => CLONE_FLAGS,
    };
    let clone = spawn::CloneSpec {
        flags,
        owner: l.ids.owner,
        netns: l.netns,
        time_offsets: match l.time_ns {
            TimeNs::Host => Some(
                time_offsets()
                    .map_err(|e| BackendError::setup("setting the time namespace's clocks", e))?,
            ),
            TimeNs::Child => None,
        },
    };
    let cloning = std::time::Instant::now();
    // SAFETY: `plan` lives in this frame, unchanged, until `spawned` is dropped: after init's
    // hello (the child has exec'd), or — declared before `init` — after `init` was dropped on
    // an error path, which kills and reaps the child.
    let mut spawned = unsafe { spawn::spawn(&plan, clone) }
        .map_err(|e| BackendError::setup("clone into new namespaces", e))?;
    drop(child_end);
    let init = Init {
        pid: spawned.pid,
        pidfd: spawned.take_pidfd(),
        control,
        reaped: false,
    };

    // The user namespace's ids: init (root of the namespace) and the program, or rootless the
    // caller's own ids only.
    let ids = l.ids;
    let mapped = (if ids.deny_setgroups {
        write_proc(init.pid, "setgroups", "deny")
    } else {
        Ok(())
    })
    .and_then(|()| write_proc(init.pid, "uid_map", &ids.uid_map))
    .and_then(|()| write_proc(init.pid, "gid_map", &ids.gid_map));
    if let Err(e) = mapped {
        return Err(BackendError::setup(
            "writing the user namespace's id maps",
            e,
        ));
    }
    init.control
        .send(&HostMessage::Go, &[])
        .map_err(|e| control_error("starting the sandbox", e))?;

    let storage = match init.control.recv(SETUP_TIMEOUT) {
        Ok((InitMessage::Ready, Some(fd))) => fd,
        Ok((
            InitMessage::Failed {
                stage,
                index,
                errno,
            },
            _,
        )) => return Err(setup_error(stage, index, errno, l.ops)),
        Ok((other, _)) => {
            return Err(control_error(
                "building the sandbox",
                ControlError::Io(io::Error::other(format!("unexpected {other:?}"))),
            ))
        }
        Err(e) => return Err(control_error("building the sandbox", e)),
    };
    let ready = std::time::Instant::now();
    if l.time_ns == TimeNs::Child {
        set_time_offsets(init.pid)
            .map_err(|e| BackendError::setup("setting the time namespace's clocks", e))?;
        init.control
            .send(&HostMessage::Go, &[])
            .map_err(|e| control_error("starting the sandbox init", e))?;
    }
    match init.control.recv(SETUP_TIMEOUT) {
        Ok((InitMessage::Hello { version }, _)) if version == VERSION => {}
        Ok((
            InitMessage::Failed {
                stage,
                index,
                errno,
            },
            _,
        )) => return Err(setup_error(stage, index, errno, l.ops)),
        Ok((other, _)) => {
            return Err(control_error(
                "starting the sandbox init",
                ControlError::Io(io::Error::other(format!("unexpected {other:?}"))),
            ))
        }
        Err(e) => return Err(control_error("starting the sandbox init", e)),
    }
    tracing::debug!(
        setup = ?ready.duration_since(cloning),
        init = ?ready.elapsed(),
        "sandbox launched: the setup child's work (clone to its root built), init's start"
    );
    // The child is init now, in memory of its own: its stack and cloning thread can go.
    drop(spawned);
    Ok((init, storage))
}
