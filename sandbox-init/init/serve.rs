//! `vana-init serve`: the main process (PID 1) of every Docker container of vana-sandbox. It
//! speaks the serve protocol (`../src/serve.rs`) over its stdin and stdout, which Docker connects
//! to the host's attach connection, and runs programs on pipes of their own: nothing a program
//! writes can pose as a frame, and every report of how a program ended is init's.
//!
//! Per run: fork, then in the child a session of its own, the run's rlimits, the program's user
//! and group (no capabilities left), the seccomp filter from `Setup`, `execve`. Several runs may
//! be live at once (a session's kernel, and the file helpers the host runs beside it). When a
//! program ends, init kills its process group — or, when no other run is live, every other
//! process of the container (`kill(-1)`: whatever the program left behind) —, drains its output
//! pipes, measures the writable mounts and reports `Disk` and `Exited`. When the host's side of
//! stdin closes, init kills everything and exits, which stops the container.
//!
//! `Put` and `Get` move small files in and out of the workspace without a helper program: a
//! forked child of init does it, as the program's user (see [`files`]).
//!
//! With `Listen`, init also relays connections to `127.0.0.1:<port>` (the egress proxy's address
//! inside the sandbox) to the host, inside `Conn` frames with a window each way; the relay is
//! init's own (the program cannot kill or replace it) and leads only to the host.

use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Instant;

use super::protocol::{Run, Rusage, Stage};
use super::serve_protocol::{
    Conn, FrameBuffer, Reply, Request, Setup, Stream, CONN_WINDOW, MAX_CHUNK, MAX_CONNS,
    MAX_RUNS, STDIN_WINDOW, VERSION,
};
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
const ENOBUFS: i32 = 105;
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

fn failed(id: u32, stage: Stage, errno: i32) {
    reply(&Reply::Failed {
        id,
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

/// One program: a run the host started.
struct Running {
    id: u32,
    pid: i32,
    /// The write end of its stdin, until its input ends.
    stdin: Option<OwnedFd>,
    /// Input received from the host and not yet written (at most [`STDIN_WINDOW`]).
    pending: Vec<u8>,
    /// The host sent `StdinEnd`.
    stdin_end: bool,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// Its wait status and usage, once it ended.
    ended: Option<(i32, Rusage)>,
    /// When it ended (for the drain timeout).
    ended_at: Option<Instant>,
}

impl Running {
    fn live(&self) -> bool {
        self.ended.is_none()
    }

    fn drain_late(&self) -> bool {
        self.ended_at
            .is_some_and(|t| t.elapsed().as_millis() > DRAIN_MS as u128)
    }
}

fn start(id: u32, mut run: Run, setup: &Setup) -> Result<Running, (Stage, i32)> {
    clamp_rlimits(&mut run);
    let mut cmd = super::command(&run)?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
        id,
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

/// Reaps every child that is gone; records a program's end and kills what it left: its process
/// group, or everything but init when no other run is live.
fn reap(runs: &mut [Running]) {
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid out-parameter.
        let mut ru: rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals.
        let pid = unsafe { wait4(-1, &mut status, WNOHANG | WALL, &mut ru) };
        if pid <= 0 {
            return;
        }
        let Some(i) = runs.iter().position(|r| r.pid == pid && r.live()) else {
            continue;
        };
        let others = runs.iter().filter(|r| r.live() && r.pid != pid).count();
        let r = &mut runs[i];
        r.ended = Some((
            status,
            Rusage {
                utime_us: micros(&ru.ru_utime),
                stime_us: micros(&ru.ru_stime),
                maxrss_kib: ru.ru_maxrss.max(0) as u64,
            },
        ));
        r.ended_at = Some(Instant::now());
        r.stdin = None;
        r.pending.clear();
        // SAFETY: kill(2) with integer arguments; init itself is spared by kill(-1).
        unsafe {
            if others == 0 {
                kill(-1, SIGKILL);
            } else {
                kill(-pid, SIGKILL);
            }
        }
    }
}

/// Reads what is available from one output pipe and forwards it; closes the pipe at EOF.
fn forward(id: u32, fd: &mut Option<OwnedFd>, stream: Stream, chunk: &mut [u8]) {
    let Some(raw) = fd.as_ref().map(AsRawFd::as_raw_fd) else {
        return;
    };
    // SAFETY: reads into a buffer of the stated length; the descriptor is ours.
    let n = unsafe { read(raw, chunk.as_mut_ptr(), chunk.len()) };
    if n > 0 {
        reply(&Reply::Output {
            id,
            stream,
            data: chunk[..n as usize].to_vec(),
        });
    } else if n == 0 || !matches!(errno(), EAGAIN | EINTR) {
        *fd = None;
    }
}

/// Writes pending input to the program and acknowledges it; closes its stdin once the input is
/// over. Input the program no longer takes is acknowledged as dropped.
fn feed(r: &mut Running) {
    let mut acked = 0usize;
    if let Some(fd) = r.stdin.as_ref() {
        while !r.pending.is_empty() {
            // SAFETY: a valid buffer of the stated length; the descriptor is ours.
            let n = unsafe { write(fd.as_raw_fd(), r.pending.as_ptr(), r.pending.len()) };
            if n > 0 {
                r.pending.drain(..n as usize);
                acked += n as usize;
            } else if n < 0 && errno() == EAGAIN {
                break;
            } else if n < 0 && errno() == EINTR {
                continue;
            } else {
                // The program closed its stdin: the rest of the input is dropped.
                acked += r.pending.len();
                r.pending.clear();
                r.stdin = None;
                break;
            }
        }
    }
    if r.stdin_end && r.pending.is_empty() {
        r.stdin = None;
    }
    if acked > 0 {
        reply(&Reply::StdinAck {
            id: r.id,
            bytes: acked as u32,
        });
    }
}

/// One connection a program opened to the relay's socket.
struct Relayed {
    id: u32,
    sock: TcpStream,
    /// Bytes from the host not yet written to the program (at most [`CONN_WINDOW`]).
    to_program: Vec<u8>,
    /// Bytes sent to the host and not yet acknowledged.
    in_flight: u32,
    /// The program's direction is over (`End` sent).
    program_done: bool,
    /// The host's direction is over (`End` received).
    host_done: bool,
    /// Our write side is shut down.
    shut: bool,
    /// Reset or finished: dropped at the next cleanup.
    gone: bool,
}

impl Relayed {
    fn reset(&mut self) {
        if !self.gone {
            self.gone = true;
            reply(&Reply::Conn {
                id: self.id,
                frame: Conn::Reset,
            });
        }
    }

    /// Whether it wants to read from the program (room in the window, direction not over).
    fn wants_read(&self) -> bool {
        !self.gone && !self.program_done && self.in_flight < CONN_WINDOW
    }

    fn wants_write(&self) -> bool {
        !self.gone && !self.to_program.is_empty()
    }

    /// Reads what the window allows and sends it to the host.
    fn pump_up(&mut self, chunk: &mut [u8]) {
        let room = (CONN_WINDOW - self.in_flight.min(CONN_WINDOW)) as usize;
        let want = room.min(chunk.len());
        if want == 0 {
            return;
        }
        match self.sock.read(&mut chunk[..want]) {
            Ok(0) => {
                self.program_done = true;
                reply(&Reply::Conn {
                    id: self.id,
                    frame: Conn::End,
                });
            }
            Ok(n) => {
                self.in_flight += n as u32;
                reply(&Reply::Conn {
                    id: self.id,
                    frame: Conn::Data(chunk[..n].to_vec()),
                });
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(_) => self.reset(),
        }
    }

    /// Writes what the host sent, acknowledges it; shuts the write side once the host is done.
    fn pump_down(&mut self) {
        let mut wrote = 0usize;
        while !self.gone && !self.to_program.is_empty() {
            match self.sock.write(&self.to_program) {
                Ok(0) => break,
                Ok(n) => {
                    self.to_program.drain(..n);
                    wrote += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.reset(),
            }
        }
        if wrote > 0 && !self.gone {
            reply(&Reply::Conn {
                id: self.id,
                frame: Conn::Ack(wrote as u32),
            });
        }
        if self.host_done && self.to_program.is_empty() && !self.shut && !self.gone {
            self.shut = true;
            let _ = self.sock.shutdown(Shutdown::Write);
        }
    }

    /// Reset, or both directions over (both sides then forget it without a word).
    fn finished(&self) -> bool {
        self.gone || (self.program_done && self.shut)
    }

    fn handle(&mut self, frame: Conn) {
        if self.gone {
            return;
        }
        match frame {
            Conn::Data(data) => {
                if self.host_done
                    || self.to_program.len() + data.len() > CONN_WINDOW as usize
                {
                    // The host broke the window: the connection cannot be trusted.
                    self.reset();
                    return;
                }
                self.to_program.extend_from_slice(&data);
                self.pump_down();
            }
            Conn::End => {
                self.host_done = true;
                self.pump_down();
            }
            Conn::Ack(n) => self.in_flight = self.in_flight.saturating_sub(n),
            // The host's side is gone: closing the socket tells the program.
            Conn::Reset => self.gone = true,
            Conn::Open => self.reset(),
        }
    }
}

/// The proxy's socket inside the container and its connections.
struct Relay {
    port: u16,
    listener: TcpListener,
    conns: Vec<Relayed>,
    next: u32,
}

impl Relay {
    fn open(port: u16) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            port,
            listener,
            conns: Vec::new(),
            next: 0,
        })
    }

    /// Accepts what is waiting; beyond [`MAX_CONNS`] a connection is closed at once.
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if self.conns.len() >= MAX_CONNS || sock.set_nonblocking(true).is_err() {
                        continue; // dropped: closed
                    }
                    let _ = sock.set_nodelay(true);
                    self.next = self.next.wrapping_add(1).max(1);
                    let id = self.next;
                    self.conns.push(Relayed {
                        id,
                        sock,
                        to_program: Vec::new(),
                        in_flight: 0,
                        program_done: false,
                        host_done: false,
                        shut: false,
                        gone: false,
                    });
                    reply(&Reply::Conn {
                        id,
                        frame: Conn::Open,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or out of descriptors: try again at the next readiness.
                Err(_) => return,
            }
        }
    }

    fn handle(&mut self, id: u32, frame: Conn) {
        // A connection both sides finished or one reset may still see late frames: ignored.
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
            c.handle(frame);
        }
    }
}

/// Everything init serves.
struct State {
    setup: Option<Setup>,
    runs: Vec<Running>,
    relay: Option<Relay>,
}

impl State {
    fn handle(&mut self, request: Request) {
        match request {
            Request::Setup(s) => {
                if self.setup.is_some() {
                    failed(0, Stage::Protocol, EBUSY);
                    return;
                }
                self.setup = Some(s);
                reply(&Reply::Hello { version: VERSION });
            }
            Request::Run { id, run } => {
                let Some(s) = self.setup.as_ref() else {
                    failed(id, Stage::Seccomp, EINVAL);
                    return;
                };
                if id == 0 || self.runs.iter().any(|r| r.id == id) || self.runs.len() >= MAX_RUNS
                {
                    failed(id, Stage::ForkProgram, EBUSY);
                    return;
                }
                match start(id, run, s) {
                    Ok(r) => self.runs.push(r),
                    Err((stage, e)) => failed(id, stage, e),
                }
            }
            Request::Stdin { id, data } => {
                let Some(r) = self.runs.iter_mut().find(|r| r.id == id) else {
                    return;
                };
                if r.stdin.is_none() {
                    // The program took no more: dropped, and said so, so the host goes on.
                    reply(&Reply::StdinAck {
                        id,
                        bytes: data.len() as u32,
                    });
                } else if r.pending.len() + data.len() > STDIN_WINDOW as usize {
                    failed(id, Stage::Protocol, ENOBUFS);
                } else {
                    r.pending.extend_from_slice(&data);
                    feed(r);
                }
            }
            Request::StdinEnd { id } => {
                if let Some(r) = self.runs.iter_mut().find(|r| r.id == id) {
                    r.stdin_end = true;
                    feed(r);
                }
            }
            Request::Kill { id, signal } => {
                let live = self.runs.iter().filter(|r| r.live()).count();
                if let Some(r) = self.runs.iter().find(|r| r.id == id && r.live()) {
                    // SAFETY: kill(2) with integer arguments; init itself is spared.
                    unsafe {
                        if live == 1 {
                            kill(-1, signal);
                        } else {
                            kill(-r.pid, signal);
                            kill(r.pid, signal);
                        }
                    }
                }
            }
            Request::Listen { port } => match self.relay.as_ref() {
                Some(relay) if relay.port == port => reply(&Reply::Listening { port }),
                Some(_) => failed(0, Stage::Listen, EBUSY),
                None => match Relay::open(port) {
                    Ok(relay) => {
                        self.relay = Some(relay);
                        reply(&Reply::Listening { port });
                    }
                    Err(e) => failed(0, Stage::Listen, e.raw_os_error().unwrap_or(EINVAL)),
                },
            },
            Request::Put { id, ids, entries } => {
                let (index, errno) = files::place(ids, &entries);
                reply(&Reply::Placed { id, index, errno });
            }
            Request::Get { id, ids, path, max } => reply(&match files::get(ids, &path, max) {
                Ok((mode, data)) => Reply::Got {
                    id,
                    errno: 0,
                    mode,
                    data,
                },
                Err(errno) => Reply::Got {
                    id,
                    errno,
                    mode: 0,
                    data: Vec::new(),
                },
            }),
            Request::Conn { id, frame } => {
                if let Some(relay) = self.relay.as_mut() {
                    relay.handle(id, frame);
                }
            }
        }
    }

    /// Reports every run that ended and whose output is drained (or late); forgets finished
    /// connections.
    fn tidy(&mut self) {
        let mut i = 0;
        while i < self.runs.len() {
            let r = &self.runs[i];
            let drained = r.out.is_none() && r.err.is_none();
            if let (Some((status, rusage)), true) = (r.ended, drained || r.drain_late()) {
                let id = r.id;
                self.runs.remove(i);
                reply(&Reply::Disk {
                    id,
                    used: self.setup.as_ref().map_or(0, |s| disk_used(&s.usage_paths)),
                });
                reply(&Reply::Exited { id, status, rusage });
            } else {
                i += 1;
            }
        }
        if let Some(relay) = self.relay.as_mut() {
            relay.conns.retain(|c| !c.finished());
        }
    }
}

/// What one entry of the poll set stands for.
#[derive(Clone, Copy)]
enum Slot {
    Host,
    Signals,
    Out(usize),
    Err(usize),
    In(usize),
    Listener,
    Relayed(usize),
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
    super::drop_bounding_set();
    let sfd = sigchld_fd();
    if sfd < 0 {
        eprintln!("vana-init: signalfd: {}", io::Error::last_os_error());
        shut_down();
    }
    let mut frames = FrameBuffer::new();
    let mut state = State {
        setup: None,
        runs: Vec::new(),
        relay: None,
    };
    let mut chunk = vec![0u8; MAX_CHUNK];
    let mut drain = [0u8; 128 * 8];
    let mut fds: Vec<pollfd> = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    loop {
        state.tidy();
        fds.clear();
        slots.clear();
        let mut add = |fd: c_int, events: i16, slot: Slot| {
            fds.push(pollfd {
                fd,
                events,
                revents: 0,
            });
            slots.push(slot);
        };
        add(0, POLLIN, Slot::Host);
        add(sfd, POLLIN, Slot::Signals);
        for (i, r) in state.runs.iter().enumerate() {
            if let Some(fd) = &r.out {
                add(fd.as_raw_fd(), POLLIN, Slot::Out(i));
            }
            if let Some(fd) = &r.err {
                add(fd.as_raw_fd(), POLLIN, Slot::Err(i));
            }
            if let (Some(fd), false) = (r.stdin.as_ref(), r.pending.is_empty()) {
                add(fd.as_raw_fd(), POLLOUT, Slot::In(i));
            }
        }
        if let Some(relay) = state.relay.as_ref() {
            // Always: a connection beyond the cap is accepted and closed at once, not left to
            // hang in the backlog.
            add(relay.listener.as_raw_fd(), POLLIN, Slot::Listener);
            for (i, c) in relay.conns.iter().enumerate() {
                let events = if c.wants_read() { POLLIN } else { 0 }
                    | if c.wants_write() { POLLOUT } else { 0 };
                // A connection that wants nothing is not polled (a hang-up it cannot act on
                // yet would wake the loop for nothing).
                if events != 0 {
                    add(c.sock.as_raw_fd(), events, Slot::Relayed(i));
                }
            }
        }
        let timeout = if state.runs.iter().any(|r| !r.live()) {
            100
        } else {
            -1
        };
        // SAFETY: a valid array of pollfds of the stated length.
        if unsafe { poll(fds.as_mut_ptr(), fds.len() as u64, timeout) } < 0 {
            continue; // EINTR
        }
        let mut host_ready = false;
        let mut signals = false;
        for (p, slot) in fds.iter().zip(slots.iter()) {
            if p.revents == 0 {
                continue;
            }
            match *slot {
                Slot::Host => host_ready = p.revents & (POLLIN | POLLHUP | POLLERR) != 0,
                Slot::Signals => signals = true,
                Slot::Out(i) => {
                    let r = &mut state.runs[i];
                    forward(r.id, &mut r.out, Stream::Stdout, &mut chunk);
                }
                Slot::Err(i) => {
                    let r = &mut state.runs[i];
                    forward(r.id, &mut r.err, Stream::Stderr, &mut chunk);
                }
                Slot::In(i) => feed(&mut state.runs[i]),
                Slot::Listener => {
                    if let Some(relay) = state.relay.as_mut() {
                        relay.accept();
                    }
                }
                Slot::Relayed(i) => {
                    if let Some(c) = state.relay.as_mut().and_then(|r| r.conns.get_mut(i)) {
                        if p.revents & POLLOUT != 0 || p.revents & (POLLHUP | POLLERR) != 0 {
                            c.pump_down();
                        }
                        if c.wants_read() && p.revents & (POLLIN | POLLHUP | POLLERR) != 0 {
                            c.pump_up(&mut chunk);
                        }
                    }
                }
            }
        }
        if signals {
            // SAFETY: reads into a local buffer; the signalfd is non-blocking.
            while unsafe { read(sfd, drain.as_mut_ptr(), drain.len()) } > 0 {}
            reap(&mut state.runs);
        }
        for r in state.runs.iter_mut().filter(|r| r.drain_late()) {
            r.out = None;
            r.err = None;
        }
        if !host_ready {
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
                    Ok(request) => state.handle(request),
                    Err(_) => failed(0, Stage::Protocol, EINVAL),
                },
                Ok(None) => break,
                Err(_) => {
                    // A header the protocol cannot have: the stream is lost.
                    failed(0, Stage::Protocol, EINVAL);
                    shut_down();
                }
            }
        }
    }
}

/// `Put` and `Get`: files moved in and out of the workspace by init itself, as the program's
/// user would (no helper program to start). Each operation runs in a forked child of init that
/// takes the program's user and group for all its ids (no capabilities left; init's own stay
/// untouched) and walks every path a component at a time from the workspace without following a
/// link: it can reach and change exactly what the program could, nothing through a link the
/// program planted, and a FIFO in a file's place cannot block it (opened non-blocking, then
/// refused). The child reports through a pipe: `errno`, then an index or a mode, then bytes.
mod files {
    use std::ffi::CString;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;

    use super::super::serve_protocol::{FsIds, PutEntry};
    use super::super::{c_int, errno, setgroups, setresgid, setresuid, wait4, _exit, EINVAL};
    use super::O_NONBLOCK;

    extern "C" {
        fn openat(dirfd: c_int, path: *const std::ffi::c_char, flags: c_int, ...) -> c_int;
        fn mkdirat(dirfd: c_int, path: *const std::ffi::c_char, mode: u32) -> c_int;
        fn fchmod(fd: c_int, mode: u32) -> c_int;
        fn fork() -> c_int;
        fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    }

    const WORKSPACE: &[u8] = b"/workspace";
    const O_RDONLY: c_int = 0;
    const O_WRONLY: c_int = 1;
    const O_CREAT: c_int = 0o100;
    const O_TRUNC: c_int = 0o1000;
    const O_NOFOLLOW: c_int = 0o400000;
    const O_CLOEXEC: c_int = 0o2000000;
    const AT_FDCWD: c_int = -100;
    const EEXIST: i32 = 17;
    const EPERM: i32 = 1;
    const EFBIG: i32 = 27;
    const EIO: i32 = 5;
    const S_IFMT: u32 = 0o170000;
    const S_IFREG: u32 = 0o100000;
    const S_IFDIR: u32 = 0o040000;
    const ENOTDIR: i32 = 20;

    fn io_errno(e: std::io::Error) -> i32 {
        e.raw_os_error().unwrap_or(EIO)
    }

    /// Runs `op` in a child that is the program's user, and returns the child's report.
    fn as_program(ids: FsIds, op: impl FnOnce(&mut File) -> Result<(), i32>) -> Vec<u8> {
        let mut fds = [-1; 2];
        // SAFETY: a two-element array for pipe2 to fill.
        if unsafe { pipe2(fds.as_mut_ptr(), O_CLOEXEC) } < 0 {
            return report(errno(), 0, &[]);
        }
        // SAFETY: descriptors pipe2 just made, owned once each.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: init is single-threaded, so the child may allocate; it only makes system
        // calls, writes its report and exits.
        let pid = unsafe { fork() };
        if pid < 0 {
            return report(errno(), 0, &[]);
        }
        if pid == 0 {
            drop(rd);
            let mut out = File::from(wr);
            // SAFETY: dropping every privilege of this child: groups, then gid, then uid (all
            // non-zero: the capabilities go with them).
            let dropped = unsafe {
                setgroups(0, std::ptr::null()) == 0
                    && setresgid(ids.gid, ids.gid, ids.gid) == 0
                    && setresuid(ids.uid, ids.uid, ids.uid) == 0
            };
            if !dropped || ids.uid == 0 {
                let _ = out.write_all(&report(EPERM, 0, &[]));
            } else if let Err(e) = op(&mut out) {
                let _ = out.write_all(&report(e, 0, &[]));
            }
            drop(out);
            // SAFETY: ends the child without running init's exit paths.
            unsafe { _exit(0) }
        }
        drop(wr);
        let mut got = Vec::new();
        let _ = File::from(rd).read_to_end(&mut got);
        let mut status = 0;
        // SAFETY: reaps the child just forked (init's loop has not seen it).
        unsafe { wait4(pid, &mut status, 0, std::ptr::null_mut()) };
        got
    }

    /// A report: `errno`, an index or a mode, the bytes.
    fn report(errno: i32, n: u32, data: &[u8]) -> Vec<u8> {
        let mut r = Vec::with_capacity(8 + data.len());
        r.extend_from_slice(&errno.to_le_bytes());
        r.extend_from_slice(&n.to_le_bytes());
        r.extend_from_slice(data);
        r
    }

    fn parse(r: &[u8]) -> (i32, u32, &[u8]) {
        match (r.get(..4), r.get(4..8)) {
            (Some(e), Some(n)) => (
                i32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                u32::from_le_bytes([n[0], n[1], n[2], n[3]]),
                &r[8..],
            ),
            // The child died before reporting.
            _ => (EIO, 0, &[]),
        }
    }

    fn open_at(dir: c_int, name: &[u8], flags: c_int, mode: u32) -> Result<OwnedFd, i32> {
        let name = CString::new(name).map_err(|_| EINVAL)?;
        // SAFETY: a NUL-terminated name; the descriptor is owned by the returned `OwnedFd`.
        let fd = unsafe { openat(dir, name.as_ptr(), flags | O_CLOEXEC, mode) };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: a descriptor we just opened.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn make_dir(dir: &OwnedFd, name: &[u8], mode: u32) -> Result<(), i32> {
        let c = CString::new(name).map_err(|_| EINVAL)?;
        // SAFETY: a NUL-terminated name relative to a directory we hold.
        if unsafe { mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) } < 0 && errno() != EEXIST {
            return Err(errno());
        }
        Ok(())
    }

    fn chmod(fd: &OwnedFd, mode: u32) -> Result<(), i32> {
        // SAFETY: fchmod on a descriptor we hold.
        if unsafe { fchmod(fd.as_raw_fd(), mode & 0o7777) } < 0 {
            return Err(errno());
        }
        Ok(())
    }

    /// The path's components: none empty, `.` or `..`.
    fn components(path: &[u8]) -> Result<Vec<&[u8]>, i32> {
        let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        if parts.iter().any(|c| c.is_empty() || *c == b"." || *c == b"..") {
            return Err(EINVAL);
        }
        Ok(parts)
    }

    /// Directory `name` of `dir`, never through a link. Not `O_DIRECTORY` with `O_NOFOLLOW`:
    /// gVisor follows a link given both (measured); `O_NOFOLLOW` alone refuses it everywhere,
    /// and the type is checked after.
    fn open_dir(dir: c_int, name: &[u8]) -> Result<OwnedFd, i32> {
        let fd = open_at(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0)?;
        let f = File::from(fd);
        if f.metadata().map_err(io_errno)?.mode() & S_IFMT != S_IFDIR {
            return Err(ENOTDIR);
        }
        Ok(OwnedFd::from(f))
    }

    /// The directory holding the last component, walked (and with `create`, made) from the
    /// workspace without following a link.
    fn parent(parts: &[&[u8]], create: bool) -> Result<OwnedFd, i32> {
        let mut dir = open_dir(AT_FDCWD, WORKSPACE)?;
        for comp in &parts[..parts.len().saturating_sub(1)] {
            if create {
                make_dir(&dir, comp, 0o755)?;
            }
            dir = open_dir(dir.as_raw_fd(), comp)?;
        }
        Ok(dir)
    }

    fn place_one(e: &PutEntry) -> Result<(), i32> {
        let parts = components(&e.path)?;
        let dir = parent(&parts, true)?;
        let name = parts.last().copied().unwrap_or_default();
        match &e.content {
            None => {
                make_dir(&dir, name, 0o700)?;
                chmod(&open_dir(dir.as_raw_fd(), name)?, e.mode)
            }
            Some(content) => {
                let fd = open_at(
                    dir.as_raw_fd(),
                    name,
                    O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK,
                    0o600,
                )?;
                let mut f = File::from(fd);
                if f.metadata().map_err(io_errno)?.mode() & S_IFMT != S_IFREG {
                    return Err(EINVAL);
                }
                f.write_all(content).map_err(io_errno)?;
                chmod(&OwnedFd::from(f), e.mode)
            }
        }
    }

    /// Places `entries` in order; the index and `errno` of the first that failed.
    pub(crate) fn place(ids: FsIds, entries: &[PutEntry]) -> (u32, i32) {
        let r = as_program(ids, |out| {
            for (i, e) in entries.iter().enumerate() {
                if let Err(errno) = place_one(e) {
                    let _ = out.write_all(&report(errno, i as u32, &[]));
                    return Ok(());
                }
            }
            let _ = out.write_all(&report(0, 0, &[]));
            Ok(())
        });
        let (errno, index, _) = parse(&r);
        (index, errno)
    }

    /// A regular file's mode and bytes, at most `max` (`EFBIG` beyond).
    pub(crate) fn get(ids: FsIds, path: &[u8], max: u32) -> Result<(u32, Vec<u8>), i32> {
        let r = as_program(ids, |out| {
            let parts = components(path)?;
            let dir = parent(&parts, false)?;
            let name = parts.last().copied().unwrap_or_default();
            let f = File::from(open_at(
                dir.as_raw_fd(),
                name,
                O_RDONLY | O_NOFOLLOW | O_NONBLOCK,
                0,
            )?);
            let meta = f.metadata().map_err(io_errno)?;
            if meta.mode() & S_IFMT != S_IFREG {
                return Err(EINVAL);
            }
            let mut data = Vec::new();
            f.take(u64::from(max) + 1)
                .read_to_end(&mut data)
                .map_err(io_errno)?;
            if data.len() > max as usize {
                return Err(EFBIG);
            }
            let _ = out.write_all(&report(0, meta.mode() & 0o7777, &data));
            Ok(())
        });
        match parse(&r) {
            (0, mode, data) => Ok((mode, data.to_vec())),
            (errno, _, _) => Err(errno),
        }
    }
}
