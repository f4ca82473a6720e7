//! The parent side of one run: clone into new namespaces, feed stdin, drain stdout and stderr
//! with a byte cap, enforce the wall-clock limit, reap, and read the child's report.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use vana_sandbox_core::{
    BackendError, Bytes, Exit, Limits, OutputCapture, OutputSink, ProcessOutcome, Stop, StreamKind,
};

use crate::cgroup::RunCgroup;
use crate::child::{pid1_main, ChildPlan, Stage, REPORT_LEN};
use crate::rootfs::Op;
use crate::sys::{self, Fd};

/// How often peaks the kernel does not keep are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// After PID 1 is gone, how long to wait for output still in flight.
const DRAIN_GRACE: Duration = Duration::from_millis(250);
/// After a kill, when to fall back to killing through the cgroup.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Namespaces of every run (the cgroup namespace is entered by the child after joining its cgroup).
const CLONE_FLAGS: libc::c_ulong = (libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_PIDFD) as libc::c_ulong
    | libc::SIGCHLD as libc::c_ulong;

/// Inputs of one launch.
pub(crate) struct Launch<'a> {
    pub ops: &'a [Op],
    pub root: &'a CString,
    pub uid: u32,
    pub gid: u32,
    pub cwd: &'a CString,
    pub argv: &'a [CString],
    pub env: &'a [CString],
    pub limits: Limits,
    pub stdin: &'a [u8],
    pub sink: Option<OutputSink>,
    pub rlimits: &'a [(libc::__rlimit_resource_t, libc::rlimit)],
    pub landlock: Option<(&'a crate::landlock::Ruleset, &'a [crate::landlock::Rule])>,
    pub seccomp: &'a [crate::seccomp::Insn],
}

/// Blocks SIGPIPE on this thread while writing stdin (the host may not ignore it), and consumes
/// any SIGPIPE raised meanwhile before restoring the mask.
struct SigpipeGuard {
    old: libc::sigset_t,
}

impl SigpipeGuard {
    fn new() -> Self {
        // SAFETY: local sigsets initialised by sigemptyset; pthread_sigmask on this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            Self { old }
        }
    }
}

impl Drop for SigpipeGuard {
    fn drop(&mut self) {
        // SAFETY: as above; sigtimedwait with a zero timeout only consumes a pending SIGPIPE.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// A cloned PID 1 that is killed and reaped if the parent unwinds.
struct Child {
    pid: libc::pid_t,
    pidfd: Fd,
    reaped: bool,
}

impl Child {
    fn kill(&self) {
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

    fn reap(&mut self) -> (libc::c_int, libc::rusage) {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid pointers to locals.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::__WALL, &mut ru) };
            if r >= 0 || sys::errno() != libc::EINTR {
                break;
            }
        }
        self.reaped = true;
        (status, ru)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.reap();
        }
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

/// Runs one process tree to completion.
/// The outcome has the exit, output, wall time and rusage-based usage; the caller adds what the
/// cgroup measured.
pub(crate) fn launch(
    l: Launch<'_>,
    cgroup: &mut dyn RunCgroup,
) -> Result<ProcessOutcome, BackendError> {
    fn setup(step: &'static str) -> impl Fn(io::Error) -> BackendError {
        move |e| BackendError::setup(step, e)
    }
    let (stdin_r, stdin_w) = sys::pipe().map_err(setup("stdin pipe"))?;
    let (stdout_r, stdout_w) = sys::pipe().map_err(setup("stdout pipe"))?;
    let (stderr_r, stderr_w) = sys::pipe().map_err(setup("stderr pipe"))?;
    let (report_r, report_w) = sys::pipe().map_err(setup("report pipe"))?;

    // The program reopens its stdio through /proc/self/fd (`echo > /dev/stdout`): the pipe
    // inodes must belong to its uid, not to root.
    for fd in [stdin_r.raw(), stdout_w.raw(), stderr_w.raw()] {
        // SAFETY: fchown on descriptors we own.
        sys::cvt(unsafe { libc::fchown(fd, l.uid, l.gid) }).map_err(setup("chown stdio pipes"))?;
    }
    let argv: Vec<*const libc::c_char> = l
        .argv
        .iter()
        .map(|s| s.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = l
        .env
        .iter()
        .map(|s| s.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let cgroup_fds = cgroup.join_fds();
    let mut keep: Vec<RawFd> = vec![
        stdin_r.raw(),
        stdout_w.raw(),
        stderr_w.raw(),
        report_w.raw(),
    ];
    keep.extend(&cgroup_fds);
    if let Some((rs, _)) = l.landlock {
        keep.push(rs.fd.raw());
    }
    keep.sort_unstable();
    let plan = ChildPlan {
        keep_fds: &keep,
        cgroup_fds: &cgroup_fds,
        report_fd: report_w.raw(),
        stdin_fd: stdin_r.raw(),
        stdout_fd: stdout_w.raw(),
        stderr_fd: stderr_w.raw(),
        hostname: b"sandbox",
        ops: l.ops,
        root: l.root,
        uid: l.uid,
        gid: l.gid,
        cwd: l.cwd,
        argv: &argv,
        envp: &envp,
        rlimits: l.rlimits,
        landlock: l
            .landlock
            .map(|(rs, rules)| (rs.fd.raw(), rs.handled_fs, rules)),
        seccomp: l.seccomp,
    };

    let guard = SigpipeGuard::new();
    let start = Instant::now();
    let mut pidfd: libc::c_int = -1;
    // SAFETY: a fork-like raw clone (no new stack). The child runs `pid1_main`, which never
    // returns, allocates nothing and only reads `plan` (its own copy of our memory).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            CLONE_FLAGS,
            0usize,
            &mut pidfd as *mut libc::c_int,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: we are the cloned child; see above.
        unsafe { pid1_main(&plan) }
    }
    if pid < 0 {
        return Err(BackendError::setup(
            "clone into new namespaces",
            io::Error::last_os_error(),
        ));
    }
    let mut child = Child {
        pid: pid as libc::pid_t,
        pidfd: Fd(pidfd),
        reaped: false,
    };
    drop((stdin_r, stdout_w, stderr_w, report_w));

    let mut cap = OutputCapture::new(l.limits.output.get(), l.sink);
    let mut out = ProcessOutcome::default();
    let mut streams: [Option<(Fd, StreamKind)>; 2] = [
        Some((stdout_r, StreamKind::Stdout)),
        Some((stderr_r, StreamKind::Stderr)),
    ];
    for (fd, _) in streams.iter().flatten() {
        sys::set_nonblocking(fd.raw()).map_err(setup("output pipe"))?;
    }
    sys::set_nonblocking(stdin_w.raw()).map_err(setup("stdin pipe"))?;
    sys::set_nonblocking(report_r.raw()).map_err(setup("report pipe"))?;
    let mut stdin_w = (!l.stdin.is_empty()).then_some(stdin_w);
    let mut stdin_left = l.stdin;
    let deadline = start + l.limits.timeout;
    let mut exited_at: Option<Instant> = None;
    let mut killed_at: Option<Instant> = None;
    let mut last_sample = start;
    let mut buf = vec![0u8; 64 * 1024];

    loop {
        let now = Instant::now();
        if exited_at.is_none() && killed_at.is_none() && now >= deadline {
            out.stopped = Some(Stop::Timeout);
            child.kill();
            killed_at = Some(now);
        }
        if let Some(k) = killed_at {
            if exited_at.is_none() && now >= k + KILL_GRACE {
                cgroup.kill_all();
            }
        }
        if now.duration_since(last_sample) >= SAMPLE_EVERY {
            cgroup.sample();
            last_sample = now;
        }
        if let Some(e) = exited_at {
            if streams.iter().all(Option::is_none) || now >= e + DRAIN_GRACE {
                break;
            }
        }

        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(4);
        if exited_at.is_none() {
            pfds.push(libc::pollfd {
                fd: child.pidfd.raw(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for (fd, _) in streams.iter().flatten() {
            pfds.push(libc::pollfd {
                fd: fd.raw(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(w) = &stdin_w {
            pfds.push(libc::pollfd {
                fd: w.raw(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        let wait = match exited_at {
            Some(e) => (e + DRAIN_GRACE).saturating_duration_since(now),
            None if killed_at.is_some() => SAMPLE_EVERY,
            None => deadline.saturating_duration_since(now).min(SAMPLE_EVERY),
        };
        // SAFETY: `pfds` is a valid array of pollfd for its length.
        let n = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                wait.as_millis().max(1) as libc::c_int,
            )
        };
        if n < 0 && sys::errno() != libc::EINTR {
            return Err(BackendError::setup("poll", io::Error::last_os_error()));
        }
        if n <= 0 {
            continue;
        }
        for p in &pfds {
            if p.revents == 0 {
                continue;
            }
            if p.fd == child.pidfd.raw() && exited_at.is_none() {
                exited_at = Some(Instant::now());
                out.wall_time = start.elapsed();
                continue;
            }
            if let Some(w) = &stdin_w {
                if p.fd == w.raw() {
                    // SAFETY: valid slice pointer and length.
                    let r = unsafe {
                        libc::write(w.raw(), stdin_left.as_ptr().cast(), stdin_left.len())
                    };
                    if r >= 0 {
                        stdin_left = stdin_left.get(r as usize..).unwrap_or(&[]);
                    }
                    if (r < 0 && sys::errno() != libc::EAGAIN) || stdin_left.is_empty() {
                        stdin_w = None; // closing signals EOF (or the reader is gone)
                    }
                    continue;
                }
            }
            for slot in streams.iter_mut() {
                let Some((fd, kind)) = slot else { continue };
                if fd.raw() != p.fd {
                    continue;
                }
                let (raw, kind) = (fd.raw(), *kind);
                loop {
                    // SAFETY: `buf` is a valid, writable buffer of its length.
                    let r = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
                    if r > 0 {
                        if cap.push(kind, buf.get(..r as usize).unwrap_or(&[]))
                            && out.stopped.is_none()
                        {
                            out.stopped = Some(Stop::OutputLimit);
                            if exited_at.is_none() && killed_at.is_none() {
                                child.kill();
                                killed_at = Some(Instant::now());
                            }
                        }
                        if out.stopped == Some(Stop::OutputLimit) && exited_at.is_some() {
                            *slot = None;
                            break;
                        }
                        continue;
                    }
                    if r == 0 || sys::errno() != libc::EAGAIN && sys::errno() != libc::EINTR {
                        *slot = None; // EOF
                    }
                    break;
                }
            }
        }
    }
    drop(stdin_w);
    drop(streams);
    let (status, ru) = child.reap();
    drop(guard);
    if out.wall_time.is_zero() {
        out.wall_time = start.elapsed();
    }
    out.usage.cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    out.usage.memory_peak = Bytes(ru.ru_maxrss.max(0) as u64 * 1024);
    (out.stdout, out.stderr, out.truncated) = cap.finish();

    let (pid1_code, pid1_signal) = sys::decode_wait(status);
    let mut exited = None;
    let mut rbuf = [0u8; REPORT_LEN * 8];
    // SAFETY: valid buffer; non-blocking read of the report pipe.
    let n = unsafe { libc::read(report_r.raw(), rbuf.as_mut_ptr().cast(), rbuf.len()) };
    for rec in rbuf
        .get(..n.max(0) as usize)
        .unwrap_or(&[])
        .chunks_exact(REPORT_LEN)
    {
        let word = |i: usize| {
            rec.get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
                .unwrap_or(0)
        };
        let (stage, index, value) = (word(0), word(4), word(8) as i32);
        match Stage::from_u32(stage) {
            Some(Stage::Exited) => exited = Some(value),
            Some(stage) => {
                let what = match stage {
                    Stage::RootOp => l
                        .ops
                        .get(index as usize)
                        .map_or_else(String::new, |op| format!(": {op}")),
                    Stage::Exec => format!(
                        ": {}",
                        l.argv
                            .first()
                            .map(|a| a.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    ),
                    _ => String::new(),
                };
                return Err(BackendError::setup(
                    format!("{}{what}", stage.describe()),
                    io::Error::from_raw_os_error(value),
                ));
            }
            None => {}
        }
    }
    match exited {
        Some(st) => {
            out.exit = match sys::decode_wait(st) {
                (_, Some(sig)) => Exit::Signal(sig),
                (code, None) => Exit::Code(code.unwrap_or(0)),
            }
        }
        None => {
            // PID 1 died before the program finished (killed on timeout, output limit or OOM).
            if pid1_signal.is_none() && pid1_code.is_some_and(|c| c != 0) {
                return Err(BackendError::setup(
                    "the sandbox init",
                    io::Error::other(format!(
                        "exited with status {} before the program ended",
                        pid1_code.unwrap_or(0)
                    )),
                ));
            }
            out.exit = Exit::Signal(pid1_signal.unwrap_or(libc::SIGKILL));
        }
    }
    Ok(out)
}
