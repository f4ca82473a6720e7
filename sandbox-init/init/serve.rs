//! `vana-init serve`: the main process (PID 1) of every Docker container of vana-sandbox. It
//! speaks the serve protocol (`../src/serve.rs`) over its stdin and stdout, which Docker connects
//! to the host's attach connection, and runs programs on pipes of their own: nothing a program
//! writes can pose as a frame, and every report of how a program ended is init's.
//!
//! Per run: fork, then in the child a session of its own, the run's rlimits, the program's user
//! and group (no capabilities left), the seccomp filter from `Setup`, `execve`. When the program
//! ends, init kills every other process of the container (`kill(-1)`: whatever the program left
//! behind), drains the output pipes, measures the writable mounts and reports `Disk` and
//! `Exited`. When the host's side of stdin closes, init kills everything and exits, which stops
//! the container.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::protocol::{Run, Rusage, Stage};
use super::serve_protocol::{FrameBuffer, Reply, Request, Setup, Stream, MAX_CHUNK, VERSION};
use super::{
    c_int, errno, fcntl, kill, micros, poll, pollfd, prctl, read, rusage, shut_down, sigchld_fd,
    wait4, write, EINVAL, POLLERR, POLLHUP, POLLIN, PR_SET_DUMPABLE, PR_SET_NAME, SIGKILL, WALL,
    WNOHANG,
};

const POLLOUT: i16 = 0x4;
const F_GETFL: c_int = 3;
const F_SETFL: c_int = 4;
const O_NONBLOCK: c_int = 0o4000;
const EAGAIN: i32 = 11;
const EINTR: i32 = 4;
const EBUSY: i32 = 16;
const PR_SET_NO_NEW_PRIVS: c_int = 38;
const PR_SET_SECCOMP: c_int = 22;
const SECCOMP_MODE_FILTER: u64 = 2;
/// How long init waits for the output pipes to close after the program ended and everything
/// else was killed (a process stuck in the kernel may hold a pipe a little longer).
const DRAIN_MS: c_int = 2000;

#[repr(C)]
struct sock_fprog {
    len: u16,
    filter: *const u8,
}

/// glibc's `struct statvfs` on 64-bit Linux, with room to spare.
#[repr(C)]
struct statvfs_t {
    f_bsize: u64,
    f_frsize: u64,
    f_blocks: u64,
    f_bfree: u64,
    f_bavail: u64,
    _rest: [u64; 16],
}

extern "C" {
    fn statvfs(path: *const std::ffi::c_char, buf: *mut statvfs_t) -> c_int;
    fn getrlimit(resource: c_int, rlim: *mut super::rlimit) -> c_int;
}

/// The run's limits, each no higher than init's own hard limit (init cannot raise one: it has
/// no CAP_SYS_RESOURCE, and gVisor's defaults are lower than Linux's for some).
fn clamp_rlimits(run: &mut Run) {
    for l in &mut run.rlimits {
        let mut have = super::rlimit { cur: 0, max: 0 };
        // SAFETY: a valid out-parameter.
        if unsafe { getrlimit(l.resource as c_int, &mut have) } == 0 {
            l.max = l.max.min(have.max);
            l.cur = l.cur.min(l.max);
        }
    }
}

/// Writes one frame to the host. A host that is gone ends everything.
fn reply(msg: &Reply) {
    let packet = msg.encode();
    let mut at = 0;
    while at < packet.len() {
        // SAFETY: a valid buffer of the stated length.
        let n = unsafe { write(1, packet[at..].as_ptr(), packet.len() - at) };
        if n < 0 {
            if errno() == EINTR {
                continue;
            }
            shut_down();
        }
        at += n as usize;
    }
}

fn failed(stage: Stage, errno: i32) {
    reply(&Reply::Failed {
        stage: stage as u32,
        index: 0,
        errno,
    });
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl with integer arguments on a descriptor we own.
    unsafe {
        let flags = fcntl(fd.as_raw_fd(), F_GETFL);
        if flags >= 0 {
            fcntl(fd.as_raw_fd(), F_SETFL, flags | O_NONBLOCK);
        }
    }
}

/// Installs `filter` on the calling process (the program's child, just before `execve`).
fn install_filter(filter: &[u8]) -> io::Result<()> {
    if filter.is_empty() {
        return Ok(());
    }
    let prog = sock_fprog {
        len: (filter.len() / 8) as u16,
        filter: filter.as_ptr(),
    };
    // SAFETY: prctl with a pointer to a sock_fprog that points at `filter`, alive for the call.
    unsafe {
        if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            || prctl(
                PR_SET_SECCOMP,
                SECCOMP_MODE_FILTER,
                &prog as *const sock_fprog as u64,
                0,
                0,
            ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Used bytes of the writable mounts, each mount counted once.
fn disk_used(paths: &[Vec<u8>]) -> u64 {
    let mut seen: Vec<u64> = Vec::new();
    let mut total = 0u64;
    for p in paths {
        let Ok(meta) = std::fs::metadata(OsStr::from_bytes(p)) else {
            continue;
        };
        if seen.contains(&meta.dev()) {
            continue;
        }
        seen.push(meta.dev());
        let Ok(c) = CString::new(p.clone()) else {
            continue;
        };
        // SAFETY: zeroed statvfs_t is a valid out-parameter, larger than glibc's struct.
        let mut st: statvfs_t = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-parameter.
        if unsafe { statvfs(c.as_ptr(), &mut st) } == 0 {
            total += st.f_blocks.saturating_sub(st.f_bfree) * st.f_frsize;
        }
    }
    total
}

/// The program of the current run.
struct Running {
    pid: i32,
    /// The write end of its stdin, until its input ends.
    stdin: Option<OwnedFd>,
    /// Input received from the host and not yet written.
    pending: Vec<u8>,
    /// The host sent `StdinEnd`.
    stdin_end: bool,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// Its wait status and usage, once it ended.
    ended: Option<(i32, Rusage)>,
    /// When it ended (for the drain timeout).
    ended_at: Option<std::time::Instant>,
}

fn start(mut run: Run, setup: &Setup) -> Result<Running, (Stage, i32)> {
    clamp_rlimits(&mut run);
    let (program, args) = run.argv.split_first().ok_or((Stage::Exec, EINVAL))?;
    let mut cmd = Command::new(OsStr::from_bytes(program));
    cmd.args(args.iter().map(|a| OsStr::from_bytes(a)))
        .env_clear()
        .current_dir(OsStr::from_bytes(&run.cwd))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for kv in &run.env {
        let (k, v) = match kv.iter().position(|b| *b == b'=') {
            Some(i) => (&kv[..i], &kv[i + 1..]),
            None => (&kv[..], &b""[..]),
        };
        cmd.env(OsStr::from_bytes(k), OsStr::from_bytes(v));
    }
    let filter = setup.filter.clone();
    // SAFETY: the closure only makes system calls and reads what it owns; init is
    // single-threaded, so the forked child may allocate.
    unsafe {
        cmd.pre_exec(move || {
            super::prepare_child(&run)?;
            install_filter(&filter)
        })
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| (Stage::Exec, e.raw_os_error().unwrap_or(EINVAL)))?;
    let stdin = child.stdin.take().map(OwnedFd::from);
    let out = child.stdout.take().map(OwnedFd::from);
    let err = child.stderr.take().map(OwnedFd::from);
    for fd in stdin.iter().chain(&out).chain(&err) {
        set_nonblocking(fd);
    }
    Ok(Running {
        pid: child.id() as i32,
        stdin,
        pending: Vec::new(),
        stdin_end: false,
        out,
        err,
        ended: None,
        ended_at: None,
    })
}

/// Reaps every child that is gone; records the program's end and kills what it left.
fn reap(running: &mut Option<Running>) {
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid out-parameter.
        let mut ru: rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals.
        let pid = unsafe { wait4(-1, &mut status, WNOHANG | WALL, &mut ru) };
        if pid <= 0 {
            return;
        }
        if let Some(r) = running
            .as_mut()
            .filter(|r| r.pid == pid && r.ended.is_none())
        {
            r.ended = Some((
                status,
                Rusage {
                    utime_us: micros(&ru.ru_utime),
                    stime_us: micros(&ru.ru_stime),
                    maxrss_kib: ru.ru_maxrss.max(0) as u64,
                },
            ));
            r.ended_at = Some(std::time::Instant::now());
            r.stdin = None;
            // Whatever the program left behind goes with it (init itself is spared).
            // SAFETY: kill(2) with integer arguments.
            unsafe { kill(-1, SIGKILL) };
        }
    }
}

/// Reads what is available from one output pipe and forwards it; closes the pipe at EOF.
fn forward(fd: &mut Option<OwnedFd>, stream: Stream, chunk: &mut [u8]) {
    let Some(raw) = fd.as_ref().map(AsRawFd::as_raw_fd) else {
        return;
    };
    // SAFETY: reads into a buffer of the stated length; the descriptor is ours.
    let n = unsafe { read(raw, chunk.as_mut_ptr(), chunk.len()) };
    if n > 0 {
        reply(&Reply::Output {
            stream,
            data: chunk[..n as usize].to_vec(),
        });
    } else if n == 0 || !matches!(errno(), EAGAIN | EINTR) {
        *fd = None;
    }
}

/// Writes pending input to the program; closes its stdin once the input is over.
fn feed(r: &mut Running) {
    if let Some(fd) = r.stdin.as_ref() {
        while !r.pending.is_empty() {
            // SAFETY: a valid buffer of the stated length; the descriptor is ours.
            let n = unsafe { write(fd.as_raw_fd(), r.pending.as_ptr(), r.pending.len()) };
            if n > 0 {
                r.pending.drain(..n as usize);
            } else if n < 0 && errno() == EAGAIN {
                return;
            } else if n < 0 && errno() == EINTR {
                continue;
            } else {
                // The program closed its stdin: the rest of the input is dropped.
                r.pending.clear();
                r.stdin = None;
                return;
            }
        }
    }
    if r.stdin_end && r.pending.is_empty() {
        r.stdin = None;
    }
}

fn handle(request: Request, setup: &mut Option<Setup>, running: &mut Option<Running>) {
    match request {
        Request::Setup(s) => {
            if setup.is_some() {
                failed(Stage::Protocol, EBUSY);
                return;
            }
            *setup = Some(s);
            reply(&Reply::Hello { version: VERSION });
        }
        Request::Run(run) => {
            let Some(s) = setup.as_ref() else {
                failed(Stage::Seccomp, EINVAL);
                return;
            };
            if running.is_some() {
                failed(Stage::ForkProgram, EBUSY);
                return;
            }
            match start(run, s) {
                Ok(r) => *running = Some(r),
                Err((stage, e)) => failed(stage, e),
            }
        }
        Request::Stdin(data) => {
            if let Some(r) = running.as_mut().filter(|r| r.stdin.is_some()) {
                r.pending.extend_from_slice(&data);
                feed(r);
            }
        }
        Request::StdinEnd => {
            if let Some(r) = running.as_mut() {
                r.stdin_end = true;
                feed(r);
            }
        }
        Request::Kill { signal } => {
            if running.as_ref().is_some_and(|r| r.ended.is_none()) {
                // SAFETY: kill(2) with integer arguments; init itself is spared.
                unsafe { kill(-1, signal) };
            }
        }
    }
}

/// Serves the host until its side of stdin closes.
pub(crate) fn main() -> ! {
    // SAFETY: prctl with integer arguments and a NUL-terminated name; close_range on
    // descriptors a runtime may have left open (nothing but 0-2 is ours).
    unsafe {
        prctl(PR_SET_NAME, c"vana-init".as_ptr() as u64, 0, 0, 0);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        super::syscall(
            436,
            3 as super::c_long,
            !0u32 as super::c_long,
            0 as super::c_long,
        );
    }
    let sfd = sigchld_fd();
    if sfd < 0 {
        eprintln!("vana-init: signalfd: {}", io::Error::last_os_error());
        shut_down();
    }
    let mut frames = FrameBuffer::new();
    let mut setup: Option<Setup> = None;
    let mut running: Option<Running> = None;
    let mut chunk = vec![0u8; MAX_CHUNK];
    let mut drain = [0u8; 128 * 8];
    loop {
        if let Some(r) = running.as_mut() {
            let drained = r.out.is_none() && r.err.is_none();
            let late = r
                .ended_at
                .is_some_and(|t| t.elapsed().as_millis() > DRAIN_MS as u128);
            if let (Some((status, rusage)), true) = (r.ended, drained || late) {
                running = None;
                reply(&Reply::Disk {
                    used: setup.as_ref().map_or(0, |s| disk_used(&s.usage_paths)),
                });
                reply(&Reply::Exited { status, rusage });
            }
        }
        let mut fds = vec![
            pollfd {
                fd: 0,
                events: POLLIN,
                revents: 0,
            },
            pollfd {
                fd: sfd,
                events: POLLIN,
                revents: 0,
            },
        ];
        if let Some(r) = running.as_ref() {
            for fd in r.out.iter().chain(&r.err) {
                fds.push(pollfd {
                    fd: fd.as_raw_fd(),
                    events: POLLIN,
                    revents: 0,
                });
            }
            if let (Some(fd), false) = (r.stdin.as_ref(), r.pending.is_empty()) {
                fds.push(pollfd {
                    fd: fd.as_raw_fd(),
                    events: POLLOUT,
                    revents: 0,
                });
            }
        }
        let timeout = if running.as_ref().is_some_and(|r| r.ended.is_some()) {
            100
        } else {
            -1
        };
        // SAFETY: a valid array of pollfds of the stated length.
        if unsafe { poll(fds.as_mut_ptr(), fds.len() as u64, timeout) } < 0 {
            continue; // EINTR
        }
        if fds[1].revents & POLLIN != 0 {
            // SAFETY: reads into a local buffer; the signalfd is non-blocking.
            while unsafe { read(sfd, drain.as_mut_ptr(), drain.len()) } > 0 {}
            reap(&mut running);
        }
        if let Some(r) = running.as_mut() {
            let ready = |fd: &Option<OwnedFd>| {
                fd.as_ref().is_some_and(|f| {
                    fds[2..]
                        .iter()
                        .any(|p| p.fd == f.as_raw_fd() && p.revents != 0)
                })
            };
            if ready(&r.out) {
                forward(&mut r.out, Stream::Stdout, &mut chunk);
            }
            if ready(&r.err) {
                forward(&mut r.err, Stream::Stderr, &mut chunk);
            }
            if ready(&r.stdin) {
                feed(r);
            }
            if r.ended_at
                .is_some_and(|t| t.elapsed().as_millis() > DRAIN_MS as u128)
            {
                r.out = None;
                r.err = None;
            }
        }
        if fds[0].revents & (POLLIN | POLLHUP | POLLERR) == 0 {
            continue;
        }
        // SAFETY: reads into a buffer of the stated length.
        let n = unsafe { read(0, chunk.as_mut_ptr(), chunk.len()) };
        if n == 0 {
            shut_down();
        }
        if n < 0 {
            if matches!(errno(), EAGAIN | EINTR) {
                continue;
            }
            shut_down();
        }
        frames.push(&chunk[..n as usize]);
        loop {
            match frames.next_frame() {
                Ok(Some(packet)) => match Request::decode(&packet) {
                    Ok(request) => handle(request, &mut setup, &mut running),
                    Err(_) => failed(Stage::Protocol, EINVAL),
                },
                Ok(None) => break,
                Err(_) => {
                    // A header the protocol cannot have: the stream is lost.
                    failed(Stage::Protocol, EINVAL);
                    shut_down();
                }
            }
        }
    }
}
