//! `vana-init`: PID 1 of every vana-sandbox instance.
//!
//! The host's setup child `execve`s this program (from a sealed memfd) as the last step of
//! building a sandbox, so nothing of the host process (its argv, environment, memory) is inside.
//! It runs under an id the program does not have (root of the sandbox's user namespace, with only
//! the capabilities to switch to the program's id and to signal it), restricts itself with the
//! Landlock ruleset the setup child built (descriptor 4), then serves the host over its control
//! socket (descriptor 3): it starts programs, reports their exit, reaps every orphan, and — when
//! the control socket closes because the host is gone, however it died — kills everything and
//! exits, which tears the whole namespace down.
//!
//! Built by `build.rs` as a static executable with `rustc` alone: std and this file, no crates.
//! The wire format is `../src/protocol.rs`, shared with the host.

#![allow(unsafe_code, non_camel_case_types)]

#[path = "../src/protocol.rs"]
#[allow(dead_code)]
mod protocol;
#[path = "../src/serve.rs"]
#[allow(dead_code)]
mod serve_protocol;

mod serve;

use std::ffi::OsStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use protocol::{HostMessage, InitMessage, Run, Rusage, Stage, CONTROL_FD, LANDLOCK_FD};

// ---------------------------------------------------------------- the few libc calls std lacks

type c_int = i32;
type c_long = i64;

#[repr(C)]
struct iovec {
    iov_base: *mut u8,
    iov_len: usize,
}

#[repr(C)]
struct msghdr {
    msg_name: *mut u8,
    msg_namelen: u32,
    msg_iov: *mut iovec,
    msg_iovlen: usize,
    msg_control: *mut u8,
    msg_controllen: usize,
    msg_flags: c_int,
}

#[repr(C)]
struct cmsghdr {
    cmsg_len: usize,
    cmsg_level: c_int,
    cmsg_type: c_int,
}

#[repr(C)]
struct pollfd {
    fd: c_int,
    events: i16,
    revents: i16,
}

#[repr(C)]
struct timeval {
    tv_sec: c_long,
    tv_usec: c_long,
}

#[repr(C)]
struct rusage {
    ru_utime: timeval,
    ru_stime: timeval,
    ru_maxrss: c_long,
    _rest: [c_long; 13],
}

#[repr(C)]
struct sigset_t {
    val: [u64; 16],
}

#[repr(C)]
struct rlimit {
    cur: u64,
    max: u64,
}

extern "C" {
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> isize;
    fn write(fd: c_int, buf: *const u8, n: usize) -> isize;
    fn read(fd: c_int, buf: *mut u8, n: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn poll(fds: *mut pollfd, n: u64, timeout: c_int) -> c_int;
    fn sigemptyset(set: *mut sigset_t) -> c_int;
    fn sigaddset(set: *mut sigset_t, sig: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int;
    fn signalfd(fd: c_int, mask: *const sigset_t, flags: c_int) -> c_int;
    fn wait4(pid: c_int, status: *mut c_int, options: c_int, ru: *mut rusage) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn prctl(option: c_int, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> c_int;
    fn syscall(n: c_long, ...) -> c_long;
    fn setsid() -> c_int;
    fn setrlimit(resource: c_int, rlim: *const rlimit) -> c_int;
    fn setgroups(n: usize, list: *const u32) -> c_int;
    fn setresgid(r: u32, e: u32, s: u32) -> c_int;
    fn setresuid(r: u32, e: u32, s: u32) -> c_int;
    fn getuid() -> u32;
    fn getpid() -> c_int;
    fn _exit(code: c_int) -> !;
}

const SOL_SOCKET: c_int = 1;
const SCM_RIGHTS: c_int = 1;
const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
const POLLIN: i16 = 0x1;
const POLLERR: i16 = 0x8;
const POLLHUP: i16 = 0x10;
const SIG_BLOCK: c_int = 0;
const SIGCHLD: c_int = 17;
const SIGKILL: c_int = 9;
const WNOHANG: c_int = 1;
const WALL: c_int = 0x4000_0000;
const SFD_NONBLOCK: c_int = 0o4000;
const SFD_CLOEXEC: c_int = 0o2000000;
const F_GETFD: c_int = 1;
const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;
const PR_SET_PDEATHSIG: c_int = 1;
const PR_SET_DUMPABLE: c_int = 4;
const PR_SET_NAME: c_int = 15;
const PR_CAPBSET_READ: c_int = 23;
const PR_CAPBSET_DROP: c_int = 24;
const SYS_LANDLOCK_RESTRICT_SELF: c_long = 446;
const EINVAL: i32 = 22;
const EBUSY: i32 = 16;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

// ---------------------------------------------------------------- talking to the host

/// Sends one message to the host. A host that is gone is handled by the next poll (HUP).
fn send(msg: &InitMessage) {
    let packet = msg.encode();
    // SAFETY: a valid buffer of its length; one write is one SEQPACKET message.
    unsafe { write(CONTROL_FD, packet.as_ptr(), packet.len()) };
}

fn fail(stage: Stage, errno: i32) {
    send(&InitMessage::Failed {
        stage: stage as u32,
        index: 0,
        errno,
    });
}

/// Receives one message into `buf` (its length is the largest message) and the descriptors
/// beside it; `Ok(None)`: the host is gone.
fn receive(buf: &mut [u8]) -> io::Result<Option<(&[u8], Vec<OwnedFd>)>> {
    // Room for a cmsghdr and up to 8 descriptors.
    let mut control = [0u64; 8];
    let mut iov = iovec {
        iov_base: buf.as_mut_ptr(),
        iov_len: buf.len(),
    };
    let mut msg = msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: &mut iov,
        msg_iovlen: 1,
        msg_control: control.as_mut_ptr().cast(),
        msg_controllen: std::mem::size_of_val(&control),
        msg_flags: 0,
    };
    // SAFETY: every pointer in `msg` points at live buffers of the stated lengths.
    let n = unsafe { recvmsg(CONTROL_FD, &mut msg, MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    if msg.msg_controllen >= std::mem::size_of::<cmsghdr>() {
        // SAFETY: the kernel wrote a cmsghdr at the start of `control`.
        let hdr = unsafe { &*(control.as_ptr() as *const cmsghdr) };
        if hdr.cmsg_level == SOL_SOCKET && hdr.cmsg_type == SCM_RIGHTS {
            let data_len = hdr.cmsg_len.saturating_sub(std::mem::size_of::<cmsghdr>());
            let count = data_len / 4;
            // SAFETY: the descriptors follow the header, within `control`.
            let data =
                unsafe { (control.as_ptr() as *const u8).add(std::mem::size_of::<cmsghdr>()) };
            for i in 0..count.min(8) {
                let mut raw = [0u8; 4];
                // SAFETY: within the control buffer, as above.
                unsafe { std::ptr::copy_nonoverlapping(data.add(i * 4), raw.as_mut_ptr(), 4) };
                // SAFETY: the kernel just installed this descriptor for us.
                fds.push(unsafe { OwnedFd::from_raw_fd(i32::from_ne_bytes(raw)) });
            }
        }
    }
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((buf.get(..n as usize).unwrap_or_default(), fds)))
}

// ---------------------------------------------------------------- starting programs

/// Everything a program's process does between fork and exec: a session of its own, its
/// limits, and its identity (no capabilities left in any set).
fn prepare_child(run: &Run) -> io::Result<()> {
    // SAFETY: plain system calls in the freshly forked (single-threaded) child.
    unsafe {
        if setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        for l in &run.rlimits {
            let r = rlimit {
                cur: l.cur,
                max: l.max,
            };
            if setrlimit(l.resource as c_int, &r) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if run.uid != getuid() {
            // The bounding set is already empty (`drop_bounding_set`, at init's start).
            setgroups(0, std::ptr::null());
            if setresgid(run.gid, run.gid, run.gid) < 0 || setresuid(run.uid, run.uid, run.uid) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Empties the capability bounding set, once for every program init will start: a program can
/// never gain a capability through `execve` (file capabilities, set-uid root), whatever it runs.
/// Init keeps the capabilities it has (the bounding set limits only what an `execve` grants).
/// Without `CAP_SETPCAP` (a Docker container, whose bounding set is its few capabilities) the
/// kernel refuses, and the set stays the runtime's.
fn drop_bounding_set() {
    for cap in 0..64u64 {
        // Only what is still in the set: each drop makes a new set of credentials, and the
        // setup child left init just the few capabilities it needs.
        // SAFETY: prctl with integer arguments.
        match unsafe { prctl(PR_CAPBSET_READ, cap, 0, 0, 0) } {
            1 => {
                // SAFETY: as above.
                unsafe { prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) };
            }
            0 => {}
            _ => break, // past the kernel's last capability
        }
    }
}

/// The program of `run`: its path, the name it is started under, its arguments, its whole
/// environment and its working directory (stdio and the child's preparation are the caller's).
fn command(run: &Run) -> Result<Command, (Stage, i32)> {
    let (program, args) = run.argv.split_first().ok_or((Stage::Exec, EINVAL))?;
    let mut cmd = Command::new(OsStr::from_bytes(program));
    if let Some(name) = &run.arg0 {
        cmd.arg0(OsStr::from_bytes(name));
    }
    cmd.args(args.iter().map(|a| OsStr::from_bytes(a)))
        .env_clear()
        .current_dir(OsStr::from_bytes(&run.cwd));
    for kv in &run.env {
        let (k, v) = match kv.iter().position(|b| *b == b'=') {
            Some(i) => (&kv[..i], &kv[i + 1..]),
            None => (&kv[..], &b""[..]),
        };
        cmd.env(OsStr::from_bytes(k), OsStr::from_bytes(v));
    }
    Ok(cmd)
}

fn start(run: Run, fds: Vec<OwnedFd>) -> Result<i32, (Stage, i32)> {
    let mut fds = fds.into_iter();
    let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
        return Err((Stage::Stdio, EINVAL));
    };
    let mut cmd = command(&run)?;
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    let run_for_child = run.clone();
    // SAFETY: the closure only makes system calls and reads `run_for_child`.
    unsafe { cmd.pre_exec(move || prepare_child(&run_for_child)) };
    match cmd.spawn() {
        Ok(child) => Ok(child.id() as i32),
        Err(e) => Err((Stage::Exec, e.raw_os_error().unwrap_or(EINVAL))),
    }
}

// ---------------------------------------------------------------- the loop

fn micros(t: &timeval) -> u64 {
    (t.tv_sec.max(0) as u64) * 1_000_000 + t.tv_usec.max(0) as u64
}

/// Reaps every child that is gone; reports the running program's exit and kills what it left.
fn reap(running: &mut Option<i32>) {
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid out-parameter.
        let mut ru: rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals.
        let pid = unsafe { wait4(-1, &mut status, WNOHANG | WALL, &mut ru) };
        if pid <= 0 {
            return;
        }
        if Some(pid) == *running {
            *running = None;
            // What the program started in its session goes with it.
            // SAFETY: kill(2) with integer arguments.
            unsafe { kill(-pid, SIGKILL) };
            send(&InitMessage::Exited {
                status,
                rusage: Rusage {
                    utime_us: micros(&ru.ru_utime),
                    stime_us: micros(&ru.ru_stime),
                    maxrss_kib: ru.ru_maxrss.max(0) as u64,
                },
            });
        }
    }
}

/// SIGCHLD through a signalfd (or -1): blocked signals are never dropped, and a program cannot
/// reach init with any other signal (PID 1 ignores signals it has no handler for).
fn sigchld_fd() -> c_int {
    // SAFETY: sigset operations on a zeroed local; signalfd with a valid mask.
    unsafe {
        let mut set: sigset_t = std::mem::zeroed();
        sigemptyset(&mut set);
        sigaddset(&mut set, SIGCHLD);
        sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut());
        signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)
    }
}

/// The host is gone (or asked us to go): everything in the namespace dies with us.
fn shut_down() -> ! {
    // SAFETY: kill(2) and _exit(2) with integer arguments. PID 1 exiting makes the kernel kill
    // whatever the first kill missed.
    unsafe {
        kill(-1, SIGKILL);
        _exit(0)
    }
}

fn main() {
    // Init kills every process it can see when its host goes (`kill(-1)`): that is only ever
    // right as PID 1 of a sandbox's own pid namespace. Anywhere else, refuse to start.
    // SAFETY: getpid has no preconditions.
    if unsafe { getpid() } != 1 {
        eprintln!("vana-init: refusing to run outside a sandbox (not PID 1)");
        std::process::exit(2);
    }
    // `vana-init serve`: the main process of a Docker container, speaking over its stdio.
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new("serve")) {
        serve::main();
    }
    // SAFETY: prctl and fcntl with integer arguments; the name is NUL-terminated.
    unsafe {
        prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
        prctl(PR_SET_NAME, c"vana-init".as_ptr() as u64, 0, 0, 0);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        fcntl(CONTROL_FD, F_SETFD, FD_CLOEXEC);
        drop_bounding_set();
        if fcntl(LANDLOCK_FD, F_GETFD) >= 0 {
            if syscall(
                SYS_LANDLOCK_RESTRICT_SELF,
                LANDLOCK_FD as c_long,
                0 as c_long,
            ) < 0
            {
                fail(Stage::Landlock, errno());
                _exit(126);
            }
            close(LANDLOCK_FD);
        }
    }
    let sfd = sigchld_fd();
    if sfd < 0 {
        fail(Stage::Signals, errno());
        shut_down();
    }
    send(&InitMessage::Hello {
        version: protocol::VERSION,
    });
    let mut running: Option<i32> = None;
    let mut drain = [0u8; 128 * 8];
    // One buffer for every message, rather than allocating and zeroing 192 KiB for each.
    let mut buf = vec![0u8; protocol::MAX_MESSAGE];
    loop {
        let mut fds = [
            pollfd {
                fd: CONTROL_FD,
                events: POLLIN,
                revents: 0,
            },
            pollfd {
                fd: sfd,
                events: POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: a valid array of two pollfds.
        if unsafe { poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue; // EINTR
        }
        if fds[1].revents & POLLIN != 0 {
            // SAFETY: reads into a local buffer; the signalfd is non-blocking.
            while unsafe { read(sfd, drain.as_mut_ptr(), drain.len()) } > 0 {}
            reap(&mut running);
        }
        if fds[0].revents & (POLLIN | POLLHUP | POLLERR) == 0 {
            continue;
        }
        let (packet, passed) = match receive(&mut buf) {
            Ok(Some(m)) => m,
            Ok(None) => shut_down(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => shut_down(),
        };
        match HostMessage::decode(packet) {
            Ok(HostMessage::Run(run)) => {
                if running.is_some() {
                    fail(Stage::ForkProgram, EBUSY);
                    continue;
                }
                match start(run, passed) {
                    Ok(pid) => running = Some(pid),
                    Err((stage, e)) => fail(stage, e),
                }
            }
            Ok(HostMessage::Kill { signal }) => {
                if let Some(pid) = running {
                    // SAFETY: kill(2) with integer arguments.
                    unsafe {
                        kill(-pid, signal);
                        kill(pid, signal);
                    }
                }
            }
            Ok(HostMessage::Go) | Err(_) => fail(Stage::Protocol, EINVAL),
        }
    }
}
