//! The parent side of one run, step by step: hand init the program and its pipes, then until it
//! has exited and its output is drained — feed stdin, drain stdout and stderr under the byte
//! cap, enforce the deadline, sample the cgroup, read init's reports — and decode the outcome.
//!
//! What the outcome says about the exit comes from init's `Exited` report (a channel the program
//! cannot write); the output is what the program wrote, capped.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use vana_sandbox_core::{
    BackendError, Bytes, Exit, Limits, OutputCapture, OutputMode, OutputSink, ProcessOutcome,
    Stdin, Stop, StopSignal, StreamKind,
};
use vana_sandbox_init::protocol::{HostMessage, InitMessage, Run, Rusage};

use crate::cgroup::InstanceCgroup;
use crate::launch::Init;
use crate::sys::{self, cvt, Fd};

/// How often peaks the kernel does not keep are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// After the program is gone, how long to wait for output still in flight.
const DRAIN_GRACE: Duration = Duration::from_millis(250);
/// After a kill, when to give up on init and kill through the cgroup.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// One run's inputs.
pub(crate) struct RunPlan<'a> {
    pub run: Run,
    pub stdin: Stdin,
    pub sink: Option<OutputSink>,
    pub output: OutputMode,
    pub stop: Option<StopSignal>,
    pub limits: &'a Limits,
    /// Owner of the program's pipe ends as the host sees the program's id (a program reopens
    /// `/proc/self/fd/1`, which needs the pipe to be its own).
    pub program_host: (u32, u32),
}

/// How a run went wrong before it produced an outcome.
pub(crate) enum Failure {
    /// Starting the program failed (init's `Failed` report), or the supervisor itself did.
    Setup(BackendError),
    /// Init is gone or unresponsive: the instance cannot run anything else.
    InitLost(BackendError),
}

impl From<Failure> for BackendError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Setup(e) | Failure::InitLost(e) => e,
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Running (or starting).
    Running,
    /// The sandbox stopped it at `since`; waiting for init's report.
    Killing { since: Instant },
    /// Init reported the exit at `since`; draining output.
    Draining { since: Instant },
}

struct Supervisor<'a> {
    init: &'a Init,
    cgroup: &'a mut dyn InstanceCgroup,
    /// The program's path, for messages.
    program: String,
    start: Instant,
    deadline: Instant,
    phase: Phase,
    stdin: Option<Fd>,
    stdin_left: Vec<u8>,
    fed: usize,
    stop: Option<StopSignal>,
    streams: [Option<(Fd, StreamKind)>; 2],
    capture: OutputCapture,
    outcome: ProcessOutcome,
    rusage: Rusage,
    last_sample: Instant,
    buf: Vec<u8>,
}

fn chown_fd(fd: &Fd, (uid, gid): (u32, u32)) -> io::Result<()> {
    // SAFETY: fchown on a descriptor we own.
    cvt(unsafe { libc::fchown(fd.raw(), uid, gid) }).map(drop)
}

/// Runs one program in the sandbox of `init` to its end.
pub(crate) fn run(
    init: &Init,
    cgroup: &mut dyn InstanceCgroup,
    plan: RunPlan<'_>,
) -> Result<ProcessOutcome, Failure> {
    let setup =
        |step: &'static str| move |e: io::Error| Failure::Setup(BackendError::setup(step, e));
    // Bytes: a pipe we feed; a caller's pipe: handed to the program as it is.
    let (stdin_r, stdin_w, stdin_bytes) = match plan.stdin {
        Stdin::Bytes(bytes) => {
            let (r, w) = sys::pipe().map_err(setup("stdin pipe"))?;
            sys::set_nonblocking(w.raw()).map_err(setup("stdio pipes"))?;
            (r, Some(w), bytes)
        }
        Stdin::Pipe(fd) => (Fd::from(fd), None, Vec::new()),
    };
    let (stdout_r, stdout_w) = sys::pipe().map_err(setup("stdout pipe"))?;
    let (stderr_r, stderr_w) = sys::pipe().map_err(setup("stderr pipe"))?;
    for end in [&stdin_r, &stdout_w, &stderr_w] {
        chown_fd(end, plan.program_host).map_err(setup("chown of the stdio pipes"))?;
    }
    for fd in [&stdout_r, &stderr_r] {
        sys::set_nonblocking(fd.raw()).map_err(setup("stdio pipes"))?;
    }
    let passed: [RawFd; 3] = [stdin_r.raw(), stdout_w.raw(), stderr_w.raw()];
    let program = plan
        .run
        .argv
        .first()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_default();
    let start = Instant::now();
    init.control
        .send(&HostMessage::Run(plan.run), &passed)
        .map_err(|e| Failure::InitLost(BackendError::backend("starting the program", e)))?;
    drop((stdin_r, stdout_w, stderr_w));

    let mut s = Supervisor {
        init,
        cgroup,
        program,
        start,
        deadline: start + plan.limits.timeout,
        phase: Phase::Running,
        stdin: stdin_w.filter(|_| !stdin_bytes.is_empty()),
        stdin_left: stdin_bytes,
        fed: 0,
        stop: plan.stop,
        streams: [
            Some((stdout_r, StreamKind::Stdout)),
            Some((stderr_r, StreamKind::Stderr)),
        ],
        capture: match plan.output {
            OutputMode::Capture => OutputCapture::new(plan.limits.output.get(), plan.sink),
            OutputMode::Stream => OutputCapture::streaming(plan.sink),
        },
        outcome: ProcessOutcome::default(),
        rusage: Rusage::default(),
        last_sample: start,
        buf: vec![0u8; 64 * 1024],
    };
    loop {
        let now = Instant::now();
        if s.drained(now) {
            break;
        }
        s.enforce_deadline(now)?;
        s.sample(now);
        s.wait_for_io(now)?;
        s.feed_stdin();
        s.drain();
        s.read_reports()?;
    }
    Ok(s.finish())
}

impl Supervisor<'_> {
    /// The run is over once init reported the exit and the output is drained (or the grace
    /// for output still in flight ran out).
    fn drained(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Draining { since } => {
                self.streams.iter().all(Option::is_none) || now >= since + DRAIN_GRACE
            }
            _ => false,
        }
    }

    fn stop(&mut self, why: Stop, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        self.outcome.stopped.get_or_insert(why);
        self.phase = Phase::Killing { since: now };
        // A failed send means init is gone; the kill grace below handles that.
        let _ = self.init.control.send(
            &HostMessage::Kill {
                signal: libc::SIGKILL,
            },
            &[],
        );
    }

    fn enforce_deadline(&mut self, now: Instant) -> Result<(), Failure> {
        if self.phase == Phase::Running && now >= self.deadline {
            self.stop(Stop::Timeout, now);
        }
        if self.phase == Phase::Running && self.stop.as_ref().is_some_and(StopSignal::is_fired) {
            self.stop(Stop::Cancelled, now);
        }
        if let Phase::Killing { since } = self.phase {
            if now >= since + KILL_GRACE {
                // Init did not report: the instance is lost; kill everything in it.
                self.cgroup.kill_all();
                self.init.kill();
                return Err(Failure::InitLost(BackendError::InstanceGone(
                    "the sandbox init did not report the killed program",
                )));
            }
        }
        Ok(())
    }

    fn sample(&mut self, now: Instant) {
        if now.duration_since(self.last_sample) >= SAMPLE_EVERY {
            self.cgroup.sample();
            self.last_sample = now;
        }
    }

    fn wait_for_io(&mut self, now: Instant) -> Result<(), Failure> {
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(5);
        let mut add = |fd: RawFd, events: libc::c_short| {
            pfds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        };
        if !matches!(self.phase, Phase::Draining { .. }) {
            add(self.init.control.fd.raw(), libc::POLLIN);
            add(self.init.pidfd.raw(), libc::POLLIN);
        }
        for (fd, _) in self.streams.iter().flatten() {
            add(fd.raw(), libc::POLLIN);
        }
        if let Some(w) = &self.stdin {
            add(w.raw(), libc::POLLOUT);
        }
        if let (Some(stop), Phase::Running) = (&self.stop, self.phase) {
            add(stop.as_raw_fd(), libc::POLLIN);
        }
        let wait = match self.phase {
            Phase::Draining { since } => (since + DRAIN_GRACE).saturating_duration_since(now),
            Phase::Killing { .. } => SAMPLE_EVERY,
            Phase::Running => self
                .deadline
                .saturating_duration_since(now)
                .min(SAMPLE_EVERY),
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
            return Err(Failure::Setup(BackendError::setup(
                "poll",
                io::Error::last_os_error(),
            )));
        }
        Ok(())
    }

    /// Writes what stdin can take now; closing it signals EOF (or the reader is gone).
    fn feed_stdin(&mut self) {
        let Some(w) = &self.stdin else { return };
        let left = self.stdin_left.get(self.fed..).unwrap_or(&[]);
        // SAFETY: valid slice pointer and length; the pipe is non-blocking.
        let r = unsafe { libc::write(w.raw(), left.as_ptr().cast(), left.len()) };
        if r >= 0 {
            self.fed += r as usize;
        }
        if (r < 0 && sys::errno() != libc::EAGAIN) || self.fed >= self.stdin_left.len() {
            self.stdin = None;
        }
    }

    /// Reads what stdout and stderr hold, up to the output cap (past it the run is stopped).
    fn drain(&mut self) {
        let now = Instant::now();
        let mut over = false;
        for slot in self.streams.iter_mut() {
            let Some((fd, kind)) = slot else { continue };
            let (raw, kind) = (fd.raw(), *kind);
            loop {
                // SAFETY: `buf` is a valid, writable buffer of its length.
                let r = unsafe { libc::read(raw, self.buf.as_mut_ptr().cast(), self.buf.len()) };
                if r > 0 {
                    over |= self
                        .capture
                        .push(kind, self.buf.get(..r as usize).unwrap_or(&[]));
                    if over && matches!(self.phase, Phase::Draining { .. }) {
                        *slot = None;
                        break;
                    }
                    continue;
                }
                if r == 0 || (sys::errno() != libc::EAGAIN && sys::errno() != libc::EINTR) {
                    *slot = None; // EOF
                }
                break;
            }
        }
        if over {
            self.stop(Stop::OutputLimit, now);
        }
    }

    /// Takes init's report, if one came: the program ended, or could not start.
    fn read_reports(&mut self) -> Result<(), Failure> {
        if matches!(self.phase, Phase::Draining { .. }) {
            return Ok(());
        }
        // Init reports once per run (`Exited` or `Failed`), so there is at most one to take.
        match self.init.control.try_recv() {
            Ok(None) => {}
            Ok(Some((InitMessage::Exited { status, rusage }, _))) => {
                self.outcome.wall_time = self.start.elapsed();
                self.outcome.exit = match sys::decode_wait(status) {
                    (_, Some(sig)) => Exit::Signal(sig),
                    (code, None) => Exit::Code(code.unwrap_or(0)),
                };
                self.rusage = rusage;
                self.phase = Phase::Draining {
                    since: Instant::now(),
                };
                return Ok(());
            }
            Ok(Some((InitMessage::Failed { stage, errno, .. }, _))) => {
                let detail = format!(": {}", self.program);
                return Err(Failure::Setup(crate::launch::failure(
                    stage, errno, &detail,
                )));
            }
            Ok(Some((other, _))) => {
                return Err(Failure::InitLost(BackendError::backend(
                    "supervising the program",
                    io::Error::other(format!("unexpected report {other:?}")),
                )))
            }
            Err(e) => {
                return Err(Failure::InitLost(BackendError::backend(
                    "supervising the program",
                    e,
                )))
            }
        }
        // Init itself died (the OOM killer, a kill through the cgroup): nothing will report.
        if self.init.exited_within(Duration::ZERO) {
            self.outcome.wall_time = self.start.elapsed();
            self.outcome.exit = Exit::Signal(libc::SIGKILL);
            self.phase = Phase::Draining {
                since: Instant::now(),
            };
        }
        Ok(())
    }

    fn finish(mut self) -> ProcessOutcome {
        if self.outcome.wall_time.is_zero() {
            self.outcome.wall_time = self.start.elapsed();
        }
        let ru = self.rusage;
        self.outcome.usage.cpu = Duration::from_micros(ru.utime_us + ru.stime_us);
        self.outcome.usage.memory_peak = Bytes(ru.maxrss_kib * 1024);
        (
            self.outcome.stdout,
            self.outcome.stderr,
            self.outcome.truncated,
        ) = self.capture.finish();
        self.outcome
    }
}
