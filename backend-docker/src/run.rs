//! One process in a container, through the container's init: the request goes out, standard
//! input streams in within init's window (bytes, or a pipe the caller keeps writing to), output
//! frames come back (capped), the wall clock is kept by the host, and the end — exit status,
//! disk usage — is what init reports; memory, CPU and OOM evidence come from the container's
//! cgroups, sampled while it runs and read once more as soon as it ended, before anything is
//! torn down. Runs are independent: a file helper may run while a session's kernel does.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::KillContainerOptions;
use tokio::io::AsyncReadExt;
use vana_sandbox_core::{
    BackendError, Bytes, Exit, OutputCapture, ProcessOutcome, Stop, StopSignal, StreamKind, Usage,
};
use vana_sandbox_init::protocol::{Rlimit, Run, Stage};
use vana_sandbox_init::serve::{Reply, Request, Stream, MAX_CHUNK, STDIN_WINDOW};

use crate::error::DockerError;
use crate::memcg::{Memcg, Sample};
use crate::pool::PoolKey;
use crate::session::Session;
use crate::Shared;

/// How often the cgroups are sampled while a program runs (a handful of small reads; a gVisor
/// sandbox killed at its memory limit takes its cgroup with it within about 100 ms).
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How often they are sampled while a long-lived program runs (a session's kernel: its cells
/// are timed and cut by the session, and the container's end also closes its stream).
const SAMPLE_EVERY_LONG_LIVED: Duration = Duration::from_millis(250);
/// How long init gets to report a program it was told to kill before the container is killed.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// One process to run.
pub(crate) struct Step<'a> {
    /// Program and arguments.
    pub argv: &'a [String],
    /// The name the program is started under, when not its path.
    pub arg0: Option<&'a str>,
    /// The whole environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: &'a str,
    /// Limits set in the program's process.
    pub rlimits: Vec<Rlimit>,
    /// Standard input.
    pub stdin: Input<'a>,
    /// Wall clock.
    pub timeout: Duration,
    /// Where output goes (kept up to the output limit, or only streamed).
    pub output: OutputCapture,
    /// Stops the run from outside.
    pub stop: Option<StopSignal>,
    /// A long-lived program (a session's kernel): its cgroups are sampled less often.
    pub long_lived: bool,
    /// Whether the run's usage is measured (the container's peak is reset for it); helpers that
    /// run beside a program are not, and leave its measurement alone.
    pub measure: bool,
}

/// A run's standard input.
pub(crate) enum Input<'a> {
    /// These bytes, then end of file.
    Bytes(&'a [u8]),
    /// The read end of a pipe: what the caller writes, until it closes its end.
    Pipe(OwnedFd),
}

/// Where standard input is read from while the run goes on.
enum Feed<'a> {
    Bytes(&'a [u8]),
    Pipe(tokio::net::unix::pipe::Receiver, Vec<u8>),
    Done,
}

impl<'a> Feed<'a> {
    fn new(input: Input<'a>) -> Result<Self, BackendError> {
        Ok(match input {
            Input::Bytes(b) => Feed::Bytes(b),
            Input::Pipe(fd) => Feed::Pipe(
                tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                    .map_err(|e| BackendError::setup("reading the standard input pipe", e))?,
                vec![0; MAX_CHUNK],
            ),
        })
    }

    fn done(&self) -> bool {
        matches!(self, Feed::Done)
    }

    /// The next chunk of at most `max` bytes; `None` at the end (cancel-safe).
    async fn next(&mut self, max: usize) -> Option<Vec<u8>> {
        let chunk = match self {
            Feed::Bytes([]) => None,
            Feed::Bytes(rest) => {
                let (head, tail) = rest.split_at(max.min(rest.len()));
                *rest = tail;
                Some(head.to_vec())
            }
            Feed::Pipe(pipe, buf) => {
                let want = max.min(buf.len());
                match pipe.read(&mut buf[..want]).await {
                    Ok(n) if n > 0 => Some(buf[..n].to_vec()),
                    // End of file, or a pipe that failed: the input is over either way.
                    _ => None,
                }
            }
            Feed::Done => std::future::pending().await,
        };
        if chunk.is_none() {
            *self = Feed::Done;
        }
        chunk
    }
}

/// What a run needs of its container (cloned out of the instance's state, so that the state is
/// free for file operations while the run goes on).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Docker's id.
    pub id: String,
    /// What it was created for.
    pub key: PoolKey,
    /// Its cgroups on the host.
    pub memcg: Option<Memcg>,
    /// The conversation with its init.
    pub session: Arc<Session>,
    /// Bytes in use on its writable mounts, as init last measured them.
    pub disk_used: u64,
}

/// What one run produced.
#[derive(Debug, Default)]
pub(crate) struct Ran {
    /// Exit, output, limits hit, usage.
    pub outcome: ProcessOutcome,
    /// The container is gone (its sandbox died, or it had to be killed): it runs nothing else.
    pub container_dead: bool,
    /// Why the sandbox itself failed, when the host has evidence of it.
    pub sandbox_failure: Option<String>,
    /// Bytes in use on the writable mounts after the run, when init measured them.
    pub disk: Option<u64>,
}

fn to_bytes(strings: &[String], what: &'static str) -> Result<Vec<Vec<u8>>, BackendError> {
    strings.iter().map(|s| string_bytes(s, what)).collect()
}

/// `s` for the protocol, which has no room for a NUL inside a string.
fn string_bytes(s: &str, what: &'static str) -> Result<Vec<u8>, BackendError> {
    if s.contains('\0') {
        Err(BackendError::InvalidProcess(what))
    } else {
        Ok(s.as_bytes().to_vec())
    }
}

async fn kill_container(shared: &Shared, id: &str) {
    let _ = shared
        .docker
        .kill_container(id, Some(KillContainerOptions { signal: "SIGKILL" }))
        .await;
}

/// Whether the engine recorded an OOM kill in the container's cgroup, once it has seen the
/// container stop (waits up to ten seconds for that: a gVisor sandbox killed at its memory limit
/// took over two to stop on a loaded two-core host, and the cell was then reported as killed,
/// not as out of memory). Only a container that died is waited for.
async fn engine_saw_oom(shared: &Shared, id: &str) -> bool {
    for _ in 0..200 {
        let state = shared
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|c| c.state);
        match state {
            Some(s) if s.running == Some(true) => {}
            Some(s) => return s.oom_killed.unwrap_or(false),
            None => return false,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Runs `step` in the container `target` as `uid`.
pub(crate) async fn run(
    shared: &Shared,
    target: &Target,
    uid: u32,
    step: Step<'_>,
) -> Result<Ran, BackendError> {
    if step.argv.is_empty() {
        return Err(BackendError::InvalidProcess("empty argv"));
    }
    let run = Run {
        uid,
        gid: uid,
        rlimits: step.rlimits,
        cwd: step.cwd.as_bytes().to_vec(),
        argv: to_bytes(step.argv, "a NUL byte in an argument")?,
        arg0: step
            .arg0
            .map(|name| string_bytes(name, "a NUL byte in an argument"))
            .transpose()?,
        env: to_bytes(&step.env, "a NUL byte in the environment")?,
    };
    let mut feed = Feed::new(step.stdin)?;
    let measure = step.measure;
    let memcg = target.memcg.as_ref().filter(|_| measure);
    if let Some(m) = memcg {
        m.reset_peak();
    }
    let before = memcg.and_then(|m| m.sample());
    let session = &target.session;
    let mut replies = session.start_run()?;
    let id = replies.id;
    session.send(&Request::Run { id, run })?;

    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + step.timeout;
    let mut grace: Option<tokio::time::Instant> = None;
    let mut cap = step.output;
    let stop = step.stop;
    let mut ran = Ran::default();
    let out = &mut ran.outcome;
    let mut last: Option<Sample> = before;
    let mut tasks_peak = 0u64;
    let mut disk: Option<u64> = None;
    // Bytes of input init may still take before it acknowledges some.
    let mut credit = STDIN_WINDOW as usize;
    let mut tick = tokio::time::interval(if step.long_lived {
        SAMPLE_EVERY_LONG_LIVED
    } else {
        SAMPLE_EVERY
    });
    let kill = |session: &Session| session.send(&Request::Kill { id, signal: 9 });
    loop {
        tokio::select! {
            reply = replies.recv() => match reply {
                Some(Reply::Output { stream, data, .. }) => {
                    if out.stopped.is_none() {
                        let kind = match stream {
                            Stream::Stdout => StreamKind::Stdout,
                            Stream::Stderr => StreamKind::Stderr,
                        };
                        if cap.push(kind, &data) {
                            out.stopped = Some(Stop::OutputLimit);
                            kill(session)?;
                            grace = Some(tokio::time::Instant::now() + KILL_GRACE);
                        }
                    }
                }
                Some(Reply::StdinAck { bytes, .. }) => {
                    credit = credit.saturating_add(bytes as usize).min(STDIN_WINDOW as usize);
                }
                Some(Reply::Disk { used, .. }) => disk = Some(used),
                Some(Reply::Exited { status, .. }) => {
                    out.exit = if status & 0x7f == 0 {
                        Exit::Code((status >> 8) & 0xff)
                    } else {
                        Exit::Signal(status & 0x7f)
                    };
                    break;
                }
                Some(Reply::Failed { stage, errno, .. }) => {
                    let what = Stage::from_u32(stage).map_or("running the program", Stage::describe);
                    if stage != Stage::Protocol as u32 {
                        // The program did not start.
                        return Err(BackendError::setup(
                            what,
                            std::io::Error::from_raw_os_error(errno),
                        ));
                    }
                    // A complaint about a run that started (its input broke the window): kill it.
                    tracing::warn!("the container's init: {what}: {}", std::io::Error::from_raw_os_error(errno));
                    if grace.is_none() {
                        kill(session)?;
                        grace = Some(tokio::time::Instant::now() + KILL_GRACE);
                    }
                }
                Some(other) => {
                    return Err(DockerError::Protocol(format!("an unexpected reply for a run: {other:?}")).into())
                }
                None => {
                    // The container stopped under the program (gVisor's sandbox died).
                    ran.container_dead = true;
                    out.exit = Exit::Signal(libc::SIGKILL);
                    break;
                }
            },
            chunk = feed.next(credit.min(MAX_CHUNK)), if credit > 0 && !feed.done() => {
                match chunk {
                    Some(data) => {
                        credit -= data.len();
                        session.send(&Request::Stdin { id, data })?;
                    }
                    None => session.send(&Request::StdinEnd { id })?,
                }
            }
            _ = tick.tick(), if measure => {
                match memcg.map(|m| m.sample()) {
                    Some(Some(s)) => {
                        tasks_peak = tasks_peak.max(s.tasks);
                        last = Some(s);
                    }
                    Some(None) => {
                        // The cgroup is gone: the container stopped.
                        ran.container_dead = true;
                        out.exit = Exit::Signal(libc::SIGKILL);
                        break;
                    }
                    None => {}
                }
            }
            _ = async { if let Some(s) = &stop { s.fired().await } }, if stop.is_some() && out.stopped.is_none() => {
                out.stopped = Some(Stop::Cancelled);
                kill(session)?;
                grace = Some(tokio::time::Instant::now() + KILL_GRACE);
            }
            _ = tokio::time::sleep_until(deadline), if out.stopped.is_none() => {
                out.stopped = Some(Stop::Timeout);
                kill(session)?;
                grace = Some(tokio::time::Instant::now() + KILL_GRACE);
            }
            _ = tokio::time::sleep_until(grace.unwrap_or(deadline)), if grace.is_some() => {
                tracing::warn!(container = %target.id, "init did not report a killed program: killing the container");
                kill_container(shared, &target.id).await;
                ran.container_dead = true;
                out.exit = Exit::Signal(libc::SIGKILL);
                break;
            }
        }
    }
    drop(replies);
    out.wall_time = start.elapsed();
    // Read once more now that the program ended, before anything is torn down.
    let gone = match memcg.map(|m| m.sample()) {
        Some(Some(s)) => {
            tasks_peak = tasks_peak.max(s.tasks);
            last = Some(s);
            false
        }
        Some(None) => true,
        None => false,
    };
    let before = before.unwrap_or_default();
    let after = last.unwrap_or(before);
    out.oom_killed = after.oom_kills > before.oom_kills;
    if ran.container_dead && !out.oom_killed && measure {
        // The container stopped between two samples: the engine's own record of its cgroup's
        // OOM events is the kernel's evidence then (recorded before the exit it processes).
        out.oom_killed = engine_saw_oom(shared, &target.id).await;
    }
    let gvisor = target.key.is_gvisor();
    let mut peak = after.memory_peak;
    if out.oom_killed && gone {
        // A memory cgroup kills only at its limit: the peak reached it, after the last sample.
        peak = peak.max(target.key.memory.get());
    }
    ran.disk = disk;
    out.usage = Usage {
        cpu: Duration::from_nanos(after.cpu_ns.saturating_sub(before.cpu_ns)),
        memory_peak: Bytes(peak),
        // Init's measurement after the program; when the container died under it, the last
        // one init made (a lower bound).
        disk: Bytes(disk.unwrap_or(target.disk_used)),
        // Under gVisor the host counts gVisor's own tasks, not the program's processes; init
        // is one of the container's tasks under runc.
        processes_peak: if gvisor {
            1
        } else {
            tasks_peak.saturating_sub(1).max(1)
        },
    };
    let hits = after.pids_max_hits.saturating_sub(before.pids_max_hits);
    if gvisor {
        // The host's task limit is gVisor's backstop, not the program's limit (that one is
        // enforced inside): reaching it is a failure of the sandbox, not a refused fork.
        if hits > 0 && ran.container_dead {
            ran.sandbox_failure = Some(format!(
                "gVisor's sandbox died at the container's host task limit ({}): gVisor's own \
                 threads count there; raise DockerConfig::runsc_pids_per_process",
                target.key.container_pids(&shared.config)
            ));
        }
    } else {
        out.pids_limit_hits = hits;
    }
    (out.stdout, out.stderr, out.truncated) = cap.finish();
    Ok(ran)
}
