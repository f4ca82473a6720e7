//! Code that runs in the cloned child: first as PID 1 of the new namespaces (sets up the root,
//! drops privileges, forks the workload, reaps everything), then in the workload just before
//! `execve`.
//!
//! Everything here runs after a raw `clone` from a possibly multi-threaded host: it must not
//! allocate, take locks, or call libc functions that do (glibc's `setuid` family broadcasts to
//! threads that no longer exist, so raw system calls are used). All inputs are prepared by the
//! parent in a [`ChildPlan`].

use std::ffi::CStr;
use std::os::fd::RawFd;

use crate::landlock;
use crate::rootfs::Op;
use crate::seccomp::{self, Insn};
use crate::sys::{self, errno};

/// Stage codes reported through the report pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    Signals = 1,
    Fds = 2,
    JoinCgroup = 3,
    CgroupNs = 4,
    Hostname = 5,
    RootOp = 6,
    PivotRoot = 7,
    DropPrivileges = 8,
    ForkWorkload = 9,
    Exec = 10,
    Workdir = 11,
    Stdio = 12,
    Rlimits = 13,
    Landlock = 14,
    Seccomp = 15,
    /// Not an error: the workload exited; `value` is its wait status.
    Exited = 100,
}

impl Stage {
    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        use Stage::*;
        Some(match v {
            1 => Signals,
            2 => Fds,
            3 => JoinCgroup,
            4 => CgroupNs,
            5 => Hostname,
            6 => RootOp,
            7 => PivotRoot,
            8 => DropPrivileges,
            9 => ForkWorkload,
            10 => Exec,
            11 => Workdir,
            12 => Stdio,
            13 => Rlimits,
            14 => Landlock,
            15 => Seccomp,
            100 => Exited,
            _ => return None,
        })
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Stage::Signals => "resetting signal handlers",
            Stage::Fds => "closing inherited file descriptors",
            Stage::JoinCgroup => "joining the run's cgroup",
            Stage::CgroupNs => "creating the cgroup namespace",
            Stage::Hostname => "setting the hostname",
            Stage::RootOp => "building the root filesystem",
            Stage::PivotRoot => "pivot_root into the sandbox root",
            Stage::DropPrivileges => "dropping privileges",
            Stage::ForkWorkload => "starting the program",
            Stage::Exec => "executing the program",
            Stage::Workdir => "entering the working directory",
            Stage::Stdio => "connecting standard streams",
            Stage::Rlimits => "setting resource limits",
            Stage::Landlock => "applying the Landlock ruleset",
            Stage::Seccomp => "installing the seccomp filter",
            Stage::Exited => "exited",
        }
    }
}

/// One 12-byte record on the report pipe (atomic: less than PIPE_BUF).
pub(crate) const REPORT_LEN: usize = 12;

/// Everything the child needs, prepared by the parent.
pub(crate) struct ChildPlan<'a> {
    /// Descriptors the child keeps (sorted ascending); everything else is closed.
    pub keep_fds: &'a [RawFd],
    pub cgroup_fds: &'a [RawFd],
    pub report_fd: RawFd,
    pub stdin_fd: RawFd,
    pub stdout_fd: RawFd,
    pub stderr_fd: RawFd,
    pub hostname: &'a [u8],
    pub ops: &'a [Op],
    pub root: &'a CStr,
    pub uid: u32,
    pub gid: u32,
    pub cwd: &'a CStr,
    /// NULL-terminated argv (pointers into strings owned by the parent's frame).
    pub argv: &'a [*const libc::c_char],
    /// NULL-terminated envp.
    pub envp: &'a [*const libc::c_char],
    /// Resource limits set in PID 1 (inherited by the workload).
    pub rlimits: &'a [(libc::__rlimit_resource_t, libc::rlimit)],
    /// Landlock: ruleset descriptor, handled rights, and the path rules to add.
    pub landlock: Option<(RawFd, u64, &'a [landlock::Rule])>,
    /// The seccomp filter (empty: none).
    pub seccomp: &'a [Insn],
}

fn report(fd: RawFd, stage: Stage, index: u32, value: i32) {
    let mut buf = [0u8; REPORT_LEN];
    buf[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&index.to_ne_bytes());
    buf[8..].copy_from_slice(&value.to_ne_bytes());
    let _ = sys::write_all(fd, &buf);
}

fn fail(plan: &ChildPlan<'_>, stage: Stage, index: u32, err: i32) -> ! {
    report(plan.report_fd, stage, index, err);
    // SAFETY: _exit is always safe; it does not run atexit handlers or touch locks.
    unsafe { libc::_exit(126) }
}

/// Entry point of PID 1 in the new namespaces. Never returns.
///
/// # Safety
/// Must be called only in the child of a raw `clone` (a single thread), with every pointer in
/// `plan` valid (the parent's memory is copied into the child).
pub(crate) unsafe fn pid1_main(plan: &ChildPlan<'_>) -> ! {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"vana-init".as_ptr(), 0, 0, 0);
    }
    if let Err(e) = reset_signals() {
        fail(plan, Stage::Signals, 0, e);
    }
    if let Err(e) = close_other_fds(plan.keep_fds) {
        fail(plan, Stage::Fds, 0, e);
    }
    for (i, fd) in plan.cgroup_fds.iter().enumerate() {
        if let Err(e) = sys::write_all(*fd, b"0") {
            fail(plan, Stage::JoinCgroup, i as u32, e);
        }
        // SAFETY: closing a descriptor this process owns.
        unsafe { libc::close(*fd) };
    }
    // SAFETY: unshare with a flag constant.
    if let Err(e) = sys::check(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } as libc::c_long) {
        fail(plan, Stage::CgroupNs, 0, e);
    }
    // SAFETY: pointer and length of a live slice.
    let r = unsafe { libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) };
    if let Err(e) = sys::check(r as libc::c_long) {
        fail(plan, Stage::Hostname, 0, e);
    }
    for (i, op) in plan.ops.iter().enumerate() {
        if let Err(e) = run_op(op) {
            fail(plan, Stage::RootOp, i as u32, e);
        }
    }
    if let Err(e) = pivot(plan.root) {
        fail(plan, Stage::PivotRoot, 0, e);
    }
    loopback_up();
    if let Err(e) = drop_privileges(plan.uid, plan.gid) {
        fail(plan, Stage::DropPrivileges, 0, e);
    }
    for (i, (resource, limit)) in plan.rlimits.iter().enumerate() {
        // SAFETY: valid pointer to a prepared rlimit.
        if unsafe { libc::setrlimit(*resource, limit) } < 0 {
            fail(plan, Stage::Rlimits, i as u32, errno());
        }
    }
    if let Some((fd, handled, rules)) = plan.landlock {
        if let Err(e) = landlock::restrict(fd, handled, rules) {
            fail(plan, Stage::Landlock, 0, e);
        }
        // SAFETY: closing the ruleset descriptor, no longer needed.
        unsafe { libc::close(fd) };
    }
    if !plan.seccomp.is_empty() {
        if let Err(e) = seccomp::install(plan.seccomp) {
            fail(plan, Stage::Seccomp, 0, e);
        }
    }
    // A second raw clone: glibc's fork() would run the host's atfork handlers.
    // SAFETY: fork-like clone (no new stack); the child continues below and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        fail(plan, Stage::ForkWorkload, 0, errno());
    }
    if pid == 0 {
        // SAFETY: we are the single-threaded workload child; the plan is still valid.
        unsafe { workload_main(plan) }
    }
    let workload = pid as libc::pid_t;
    // SAFETY: closing this process's copies of the workload's stdio.
    unsafe {
        libc::close(plan.stdin_fd);
        libc::close(plan.stdout_fd);
        libc::close(plan.stderr_fd);
    }
    let mut main_status = None;
    loop {
        let mut status = 0;
        // SAFETY: valid pointer to a local int.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break; // ECHILD: everything is reaped
        }
        if r == workload {
            main_status = Some(status);
            // The program is done: nothing it started may outlive it.
            // SAFETY: kill(2) with integer arguments.
            unsafe { libc::kill(-1, libc::SIGKILL) };
        }
    }
    if let Some(status) = main_status {
        report(plan.report_fd, Stage::Exited, 0, status);
    }
    // SAFETY: see `fail`.
    unsafe { libc::_exit(0) }
}

/// The workload: connect stdio, enter the workdir, exec.
///
/// # Safety
/// As for [`pid1_main`], in the workload child.
unsafe fn workload_main(plan: &ChildPlan<'_>) -> ! {
    // SAFETY: setsid has no arguments.
    unsafe { libc::setsid() };
    for (from, to) in [(plan.stdin_fd, 0), (plan.stdout_fd, 1), (plan.stderr_fd, 2)] {
        // SAFETY: dup2 on descriptors we own.
        if unsafe { libc::dup2(from, to) } < 0 {
            fail(plan, Stage::Stdio, to as u32, errno());
        }
    }
    // Every other descriptor (the report pipe included) closes on exec.
    // SAFETY: close_range with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        for fd in 3..4096 {
            // SAFETY: fcntl on possibly-closed descriptors is harmless.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    // SAFETY: NUL-terminated path.
    if unsafe { libc::chdir(plan.cwd.as_ptr()) } < 0 {
        fail(plan, Stage::Workdir, 0, errno());
    }
    // SAFETY: argv and envp are NULL-terminated arrays of NUL-terminated strings.
    unsafe {
        libc::execve(
            *plan.argv.first().unwrap_or(&std::ptr::null()),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        )
    };
    fail(plan, Stage::Exec, 0, errno())
}

fn reset_signals() -> Result<(), i32> {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing the default disposition; no handler pointer involved.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: `set` is a local sigset initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        sys::check(
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) as libc::c_long,
        )?;
    }
    Ok(())
}

/// Closes every descriptor not in `keep` (sorted ascending).
fn close_other_fds(keep: &[RawFd]) -> Result<(), i32> {
    let mut next: u32 = 0;
    for &k in keep {
        let k = k as u32;
        if k > next {
            // SAFETY: close_range with integer arguments.
            sys::check(unsafe { libc::syscall(libc::SYS_close_range, next, k - 1, 0u32) })?;
        }
        next = k + 1;
    }
    // SAFETY: as above.
    sys::check(unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0u32) })?;
    Ok(())
}

fn run_op(op: &Op) -> Result<(), i32> {
    match op {
        Op::Mount {
            src,
            target,
            fstype,
            flags,
            data,
        } => sys::mount(
            src.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        Op::Mkdir { path, mode } => {
            // SAFETY: NUL-terminated path.
            if unsafe { libc::mkdir(path.as_ptr(), *mode) } < 0 && errno() != libc::EEXIST {
                return Err(errno());
            }
            // mkdir applies the umask; set the exact mode (sticky /dev/shm, for one).
            // SAFETY: NUL-terminated path.
            sys::check(unsafe { libc::chmod(path.as_ptr(), *mode) } as libc::c_long).map(drop)
        }
        Op::Symlink { target, link } => {
            // SAFETY: NUL-terminated paths.
            sys::check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } as libc::c_long)
                .map(drop)
        }
        Op::File {
            path,
            content,
            mode,
        } => {
            // SAFETY: NUL-terminated path.
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_TRUNC
                        | libc::O_CLOEXEC
                        | libc::O_NOFOLLOW,
                    *mode,
                )
            };
            if fd < 0 {
                return Err(errno());
            }
            let r = sys::write_all(fd, content);
            // SAFETY: fchmod/close on the descriptor we just opened.
            unsafe {
                libc::fchmod(fd, *mode);
                libc::close(fd);
            }
            r
        }
    }
}

fn pivot(root: &CStr) -> Result<(), i32> {
    let dot = c".";
    // SAFETY: NUL-terminated paths; pivot_root(".", ".") stacks the old root under the new one,
    // and the detach below removes it.
    unsafe {
        sys::check(libc::chdir(root.as_ptr()) as libc::c_long)?;
        sys::check(libc::syscall(
            libc::SYS_pivot_root,
            dot.as_ptr(),
            dot.as_ptr(),
        ))?;
        sys::check(libc::umount2(dot.as_ptr(), libc::MNT_DETACH) as libc::c_long)?;
        sys::check(libc::chdir(c"/".as_ptr()) as libc::c_long)?;
    }
    Ok(())
}

/// Brings up `lo` in the new (empty) network namespace; failures leave it down, which is safe.
fn loopback_up() {
    // SAFETY: a socket and ioctls on a zeroed, correctly sized `ifreq`.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *b as libc::c_char;
        }
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &mut ifr);
        }
        libc::close(s);
    }
}

/// Drops to the sandbox user with no capabilities (bounding set emptied), no supplementary
/// groups, `no_new_privs`, and not dumpable (so the workload cannot ptrace PID 1).
fn drop_privileges(uid: u32, gid: u32) -> Result<(), i32> {
    // SAFETY: prctl and raw set*id system calls with integer arguments. Raw calls change only this
    // (single) thread, which is the whole process here.
    unsafe {
        for cap in 0..64 {
            let r = libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            if r < 0 && errno() == libc::EINVAL {
                break;
            }
        }
        sys::check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) as libc::c_long)?;
        sys::check(libc::syscall(
            libc::SYS_setgroups,
            0usize,
            std::ptr::null::<libc::gid_t>(),
        ))?;
        sys::check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        sys::check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
        sys::check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long)?;
        sys::check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) as libc::c_long)?;
    }
    Ok(())
}
