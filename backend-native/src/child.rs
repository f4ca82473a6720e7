//! The setup child: the first process of a new sandbox, from a raw `clone` into new user, pid,
//! mount, network, IPC and UTS namespaces. It builds the sandbox and then `execve`s `vana-init`,
//! which becomes PID 1; nothing of the host process survives that exec.
//!
//! Everything here runs in a child that shares the host's memory (`CLONE_VM`, on a stack of its
//! own; see [`spawn`](crate::spawn)) of a possibly multi-threaded host: it must not allocate,
//! take locks, write anything but its own stack, or call libc functions that do (glibc's `setuid`
//! family broadcasts to the host's threads, so raw system calls are used). Every input is prepared by the
//! parent in a [`ChildPlan`]; every failure is reported to the host over the control socket with
//! the stage (and operation index) it happened at.

use std::ffi::CStr;
use std::os::fd::RawFd;

use vana_sandbox_init::protocol::{child as packets, Stage, CONTROL_FD, LANDLOCK_FD};

use crate::landlock;
use crate::rootfs::Op;
use crate::seccomp::{self, Insn};
use crate::sys::{self, errno};

/// Everything the setup child needs, prepared by the parent.
pub(crate) struct ChildPlan<'a> {
    /// Descriptors the child keeps (sorted ascending); everything else is closed.
    pub keep_fds: &'a [RawFd],
    /// The sandbox's end of the control socket.
    pub control: RawFd,
    /// The id (uid and gid inside the new user namespace) this process and init take once the
    /// host mapped them.
    pub id: u32,
    /// `cgroup.procs` of the instance's cgroup, one per hierarchy.
    pub cgroup_fds: &'a [RawFd],
    /// The init executable (a sealed memfd).
    pub init: RawFd,
    pub hostname: &'a [u8],
    /// Bring the loopback interface up (the network namespace is new and the child's own; one
    /// made ahead has it up already).
    pub loopback: bool,
    /// Make the time namespace for init here, and wait for the host's second `Go` (its clocks
    /// set) before the exec; otherwise the cloning thread made it already.
    pub own_time_ns: bool,
    pub ops: &'a [Op],
    /// The staging directory of the instance's writable tmpfs, handed to the host.
    pub storage: &'a CStr,
    pub root: &'a CStr,
    /// Capabilities init keeps (to switch the program to its id and signal it); the bounding
    /// set loses every other.
    pub keep_caps: &'a [u32],
    /// Landlock: ruleset descriptor and the path rules to add (init restricts itself with it).
    pub landlock: Option<(RawFd, u64, &'a [landlock::Rule])>,
    /// The seccomp filter (empty: none); it covers init and everything it starts.
    pub seccomp: &'a [Insn],
    /// NULL-terminated argv and envp of init.
    pub init_argv: &'a [*const libc::c_char],
    pub init_envp: &'a [*const libc::c_char],
}

fn fail(plan: &ChildPlan<'_>, stage: Stage, index: u32, err: i32) -> ! {
    let mut buf = [0u8; 20];
    let n = packets::failed(&mut buf, stage, index, err);
    // SAFETY: a write of a local buffer; one write is one SEQPACKET message.
    unsafe { libc::write(plan.control, buf.as_ptr().cast(), n) };
    // SAFETY: _exit is always safe; it does not run atexit handlers or touch locks.
    unsafe { libc::_exit(126) }
}

fn check(plan: &ChildPlan<'_>, stage: Stage, r: Result<(), i32>) {
    if let Err(e) = r {
        fail(plan, stage, 0, e);
    }
}

/// Entry point of the setup child. Never returns.
///
/// # Safety
/// Must be called only in the child [`spawn`](crate::spawn) makes (a single thread on its own
/// stack, sharing the host's memory), with every pointer in `plan` valid and unchanged until it
/// exec'd or exited.
pub(crate) unsafe fn setup_main(plan: &ChildPlan<'_>) -> ! {
    // A host that died before this point is noticed in `wait_for_go` (the control socket
    // reads EOF); getppid() says nothing here, the parent is outside our pid namespace.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"vana-setup".as_ptr(), 0, 0, 0);
    }
    check(plan, Stage::Signals, reset_signals());
    check(plan, Stage::Fds, close_other_fds(plan.keep_fds));
    // A time namespace for init and the programs (this process does not enter it; exec does).
    // The host sets its offsets — it can open our /proc files whatever our credentials — once
    // we are ready, and says `Go` a second time before the exec. (Or the cloning thread made
    // it, its clocks set, and we are in it for our children already.)
    if plan.own_time_ns {
        check(plan, Stage::TimeNs, unshare_time());
    }
    wait_for_go(plan);
    // As root, the host's root is not mapped in the namespace: take the namespace's own id.
    // SAFETY: raw set*id system calls on this single thread, with full capabilities in the new
    // user namespace; the id is mapped.
    let r = unsafe {
        let g = libc::syscall(libc::SYS_setresgid, plan.id, plan.id, plan.id);
        if g < 0 {
            g
        } else {
            libc::syscall(libc::SYS_setresuid, plan.id, plan.id, plan.id)
        }
    };
    check(plan, Stage::WaitForIds, sys::check(r).map(drop));
    for (i, fd) in plan.cgroup_fds.iter().enumerate() {
        if let Err(e) = sys::write_all(*fd, b"0") {
            fail(plan, Stage::JoinCgroup, i as u32, e);
        }
        // SAFETY: closing a descriptor this process owns.
        unsafe { libc::close(*fd) };
    }
    // SAFETY: unshare with a flag constant.
    let r = unsafe { libc::unshare(libc::CLONE_NEWCGROUP) };
    check(
        plan,
        Stage::CgroupNs,
        sys::check(r as libc::c_long).map(drop),
    );
    // SAFETY: pointer and length of a live slice.
    let r = unsafe { libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) };
    check(
        plan,
        Stage::Hostname,
        sys::check(r as libc::c_long).map(drop),
    );
    for (i, op) in plan.ops.iter().enumerate() {
        if let Err(e) = run_op(op) {
            fail(plan, Stage::RootOp, i as u32, e);
        }
    }
    // SAFETY: NUL-terminated path; the descriptor is handed to the host below.
    let storage = unsafe {
        libc::open(
            plan.storage.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if storage < 0 {
        fail(plan, Stage::Handover, 0, errno());
    }
    check(plan, Stage::PivotRoot, pivot(plan.root));
    if plan.loopback {
        loopback_up();
    }
    if let Some((fd, handled, rules)) = plan.landlock {
        check(
            plan,
            Stage::Landlock,
            landlock::add_rules(fd, handled, rules),
        );
    }
    check(plan, Stage::DropPrivileges, drop_privileges(plan.keep_caps));
    check(plan, Stage::Handover, hand_over(plan.control, storage));
    if plan.own_time_ns {
        wait_for_go(plan);
    }
    // SAFETY: closing the descriptor the host now holds a copy of.
    unsafe { libc::close(storage) };
    let init = match place_fds(plan) {
        Ok(fd) => fd,
        Err(e) => fail(plan, Stage::ExecInit, 0, e),
    };
    if !plan.seccomp.is_empty() {
        check(plan, Stage::Seccomp, seccomp::install(plan.seccomp));
    }
    // SAFETY: argv and envp are NULL-terminated arrays of NUL-terminated strings; the init
    // descriptor is a sealed memfd holding an executable.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            init,
            c"".as_ptr(),
            plan.init_argv.as_ptr(),
            plan.init_envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    // After place_fds the control socket is descriptor 3.
    let mut buf = [0u8; 20];
    let n = packets::failed(&mut buf, Stage::ExecInit, 0, errno());
    // SAFETY: as in `fail`.
    unsafe {
        libc::write(CONTROL_FD, buf.as_ptr().cast(), n);
        libc::_exit(126)
    }
}

/// Makes this process's children (and itself, at exec) start in a new time namespace; nothing
/// on a kernel without time namespaces.
fn unshare_time() -> Result<(), i32> {
    // SAFETY: unshare with a flag constant.
    if unsafe { libc::unshare(sys::CLONE_NEWTIME) } < 0 {
        return match errno() {
            libc::EINVAL => Ok(()),
            e => Err(e),
        };
    }
    Ok(())
}

/// Blocks until the host says `Go` (or is gone): after it wrote the id maps, and after it set
/// the time namespace's offsets.
fn wait_for_go(plan: &ChildPlan<'_>) {
    let mut buf = [0u8; 16];
    loop {
        // SAFETY: reads one packet into a local buffer.
        let n = unsafe { libc::read(plan.control, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            // SAFETY: see `fail`; the host is gone, nobody to tell.
            unsafe { libc::_exit(1) };
        }
        if packets::is_go(buf.get(..n as usize).unwrap_or_default()) {
            return;
        }
        fail(plan, Stage::WaitForIds, 0, libc::EPROTO);
    }
}

/// Sends `Ready` with the storage directory beside it.
fn hand_over(control: RawFd, storage: RawFd) -> Result<(), i32> {
    let mut buf = [0u8; 8];
    let n = packets::ready(&mut buf);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: n,
    };
    let mut cmsg_buf = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; every pointer below points at a local buffer.
    unsafe {
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cmsg_buf.as_mut_ptr().cast();
        hdr.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::copy_nonoverlapping(storage.to_ne_bytes().as_ptr(), libc::CMSG_DATA(cmsg), 4);
        sys::check(libc::sendmsg(control, &hdr, libc::MSG_NOSIGNAL) as libc::c_long).map(drop)
    }
}

/// Moves the control socket to descriptor 3 and the Landlock ruleset to 4, where init expects
/// them (open across exec); returns where the init memfd went (out of their way, close-on-exec).
fn place_fds(plan: &ChildPlan<'_>) -> Result<RawFd, i32> {
    // SAFETY: fcntl/dup2 on descriptors this process owns; the plan's descriptors were kept.
    unsafe {
        let high =
            |fd: RawFd| sys::check(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) as libc::c_long);
        let init = high(plan.init)? as RawFd;
        let control = high(plan.control)? as RawFd;
        let ruleset = match plan.landlock {
            Some((fd, _, _)) => Some(high(fd)? as RawFd),
            None => None,
        };
        sys::check(libc::dup2(control, CONTROL_FD) as libc::c_long)?;
        if let Some(fd) = ruleset {
            sys::check(libc::dup2(fd, LANDLOCK_FD) as libc::c_long)?;
        }
        Ok(init)
    }
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
        Op::Write { path, content } => {
            // SAFETY: NUL-terminated path; the descriptor is closed below.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(errno());
            }
            let r = sys::write_all(fd, content);
            // SAFETY: closing the descriptor we just opened.
            unsafe { libc::close(fd) };
            r
        }
        Op::Chown { path, uid, gid } => {
            // SAFETY: NUL-terminated path.
            sys::check(unsafe { libc::lchown(path.as_ptr(), *uid, *gid) } as libc::c_long).map(drop)
        }
        Op::Unmount { target } => {
            // SAFETY: NUL-terminated path.
            sys::check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } as libc::c_long)
                .map(drop)
        }
        Op::Attach { tree, target } => {
            // SAFETY: move_mount of a detached tree the host cloned, onto a NUL-terminated path.
            sys::check(unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    *tree,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                )
            })
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

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

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
/// Brings the loopback interface of the calling thread's network namespace up (best effort).
pub(crate) fn loopback_up() {
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

/// Empties the capability bounding set but for `keep` (what init needs), clears ambient
/// capabilities and supplementary groups, and sets `no_new_privs`. The user namespace already
/// gave this process its id (root of the namespace as root, the caller's id rootless); init
/// switches each program to the program's id.
fn drop_privileges(keep: &[u32]) -> Result<(), i32> {
    // SAFETY: prctl and raw system calls with integer arguments, on this single thread.
    unsafe {
        for cap in 0..64u32 {
            if keep.contains(&cap) {
                continue;
            }
            let r = libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
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
        // Rootless, setgroups is denied in the namespace (the caller's groups stay, unmapped).
        let r = libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>());
        if r < 0 && errno() != libc::EPERM {
            return Err(errno());
        }
        sys::check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long)?;
    }
    Ok(())
}
