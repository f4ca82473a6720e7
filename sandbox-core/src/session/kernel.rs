//! A session's kernel process, host side: started through the instance like any run (with its
//! standard input a pipe the session writes requests to, and its output streamed, not kept), its
//! reply lines parsed as they arrive and routed to the cell that is running, and stopped through
//! its stop signal. The instance lives in the task that runs the kernel and comes back when the
//! kernel ends.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::BackendError;
use crate::executor::Instance;
use crate::outcome::ProcessOutcome;
use crate::spec::{OutputMode, ProcessIo, ProcessSpec, Stdin, StopSignal, StreamKind};

/// Longest reply line kept (a bigger one — a huge figure — is dropped and counted).
const MAX_LINE: usize = 48 << 20;
/// How long a new kernel has to say it is ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Most bytes of the kernel's own stderr kept for an error message.
const STDERR_TAIL: usize = 4096;

/// One reply of the kernel.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub(crate) enum Frame {
    /// The kernel is up.
    Ready {},
    /// Output a cell wrote to stdout.
    Stdout { id: String, data: String },
    /// Output a cell wrote to stderr.
    Stderr { id: String, data: String },
    /// A rich output (value of a trailing expression, a figure).
    Display {
        id: String,
        data: BTreeMap<String, String>,
    },
    /// The cell raised.
    Error {
        id: String,
        name: String,
        value: String,
        traceback: String,
    },
    /// The cell is over.
    Done {
        id: String,
        #[serde(default)]
        exit: i32,
        /// CPU seconds the kernel and its children used for the cell (its own count).
        #[serde(default)]
        cpu: f64,
    },
}

impl Frame {
    fn cell(&self) -> Option<&str> {
        match self {
            Frame::Ready {} => None,
            Frame::Stdout { id, .. }
            | Frame::Stderr { id, .. }
            | Frame::Display { id, .. }
            | Frame::Error { id, .. }
            | Frame::Done { id, .. } => Some(id),
        }
    }
}

/// Where reply lines go: the running cell's channel, or nowhere (output between cells is
/// dropped, so an idle kernel cannot fill the host's memory).
#[derive(Default)]
struct Router {
    line: Vec<u8>,
    overlong: bool,
    ready: Option<oneshot::Sender<()>>,
    active: Option<(String, mpsc::UnboundedSender<Frame>)>,
    stderr_tail: Vec<u8>,
    dropped_bytes: u64,
}

impl Router {
    fn push(&mut self, kind: StreamKind, data: &[u8]) {
        if kind == StreamKind::Stderr {
            // The kernel's own stderr (cells' stderr comes as frames): keep the end of it.
            self.stderr_tail.extend_from_slice(data);
            let cut = self.stderr_tail.len().saturating_sub(STDERR_TAIL);
            self.stderr_tail.drain(..cut);
            return;
        }
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(i);
            if !self.overlong && self.line.len() + head.len() <= MAX_LINE {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.route(&line);
            } else {
                self.dropped_bytes += (self.line.len() + head.len()) as u64;
                self.line.clear();
            }
            self.overlong = false;
            rest = tail.get(1..).unwrap_or_default();
        }
        if self.line.len() + rest.len() > MAX_LINE {
            self.overlong = true;
            self.dropped_bytes += (self.line.len() + rest.len()) as u64;
            self.line.clear();
        } else if !self.overlong {
            self.line.extend_from_slice(rest);
        }
    }

    fn route(&mut self, line: &[u8]) {
        let Ok(frame) = serde_json::from_slice::<Frame>(line) else {
            self.dropped_bytes += line.len() as u64;
            return;
        };
        if let Frame::Ready {} = frame {
            if let Some(tx) = self.ready.take() {
                let _ = tx.send(());
            }
            return;
        }
        match (&self.active, frame.cell()) {
            (Some((cell, tx)), Some(id)) if cell == id => {
                let _ = tx.send(frame);
            }
            _ => self.dropped_bytes += line.len() as u64,
        }
    }
}

fn lock(router: &Mutex<Router>) -> std::sync::MutexGuard<'_, Router> {
    router.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a kernel's life ended: the instance back, and the run's outcome.
pub(crate) type Ended = (Box<dyn Instance>, Result<ProcessOutcome, BackendError>);

/// A kernel that runs.
pub(crate) struct RunningKernel {
    requests: std::fs::File,
    router: Arc<Mutex<Router>>,
    stop: StopSignal,
    task: JoinHandle<Ended>,
}

impl RunningKernel {
    /// Starts the kernel `process` in `instance` and sends it `config` (its first line); waits
    /// until it says it is ready. On failure the instance comes back with the error (`None`
    /// when it is lost).
    pub(crate) async fn start(
        mut instance: Box<dyn Instance>,
        process: ProcessSpec,
        config: String,
    ) -> Result<Self, (Option<Box<dyn Instance>>, BackendError)> {
        let pipe = match pipe() {
            Ok(p) => p,
            Err(e) => return Err((Some(instance), BackendError::setup("the kernel's pipe", e))),
        };
        let stop = match StopSignal::new() {
            Ok(s) => s,
            Err(e) => return Err((Some(instance), BackendError::setup("a stop signal", e))),
        };
        let (read_end, write_end) = pipe;
        let (ready_tx, ready_rx) = oneshot::channel();
        let router = Arc::new(Mutex::new(Router {
            ready: Some(ready_tx),
            ..Router::default()
        }));
        let sink_router = router.clone();
        let io = ProcessIo {
            stdin: Stdin::Pipe(read_end),
            sink: Some(Box::new(move |kind, data| {
                lock(&sink_router).push(kind, data)
            })),
            output: OutputMode::Stream,
            stop: Some(stop.clone()),
        };
        let task = tokio::spawn(async move {
            let outcome = instance.run(&process, io).await;
            (instance, outcome)
        });
        let mut kernel = Self {
            requests: std::fs::File::from(write_end),
            router,
            stop,
            task,
        };
        if let Err(e) = kernel.write_line(config).await {
            return Err(kernel.abandon(e).await);
        }
        tokio::select! {
            ready = ready_rx => match ready {
                Ok(()) => Ok(kernel),
                Err(_) => {
                    let e = kernel.failure("the kernel ended before it was ready");
                    Err(kernel.abandon(e).await)
                }
            },
            _ = tokio::time::sleep(READY_TIMEOUT) => {
                let e = kernel.failure("the kernel did not start in time");
                Err(kernel.abandon(e).await)
            }
            ended = &mut kernel.task => {
                let e = kernel.failure("the kernel exited at start");
                match ended {
                    Ok((instance, _)) => Err((Some(instance), e)),
                    Err(_) => Err((None, e)),
                }
            }
        }
    }

    fn failure(&self, what: &str) -> BackendError {
        let tail = String::from_utf8_lossy(&lock(&self.router).stderr_tail)
            .trim()
            .to_string();
        BackendError::setup(
            "starting the session's kernel",
            std::io::Error::other(if tail.is_empty() {
                what.to_string()
            } else {
                format!("{what}: {tail}")
            }),
        )
    }

    /// Stops the kernel and returns the instance with `e`.
    async fn abandon(self, e: BackendError) -> (Option<Box<dyn Instance>>, BackendError) {
        match self.stop().await {
            Some((instance, _)) => (Some(instance), e),
            None => (None, e),
        }
    }

    /// Writes one request line (blocking writes happen off the runtime's threads).
    pub(crate) async fn write_line(&mut self, mut line: String) -> Result<(), BackendError> {
        line.push('\n');
        let mut file = self
            .requests
            .try_clone()
            .map_err(|e| BackendError::setup("writing to the kernel", e))?;
        tokio::task::spawn_blocking(move || file.write_all(line.as_bytes()))
            .await
            .map_err(|e| BackendError::backend("writing to the kernel", e))?
            .map_err(|e| BackendError::setup("writing to the kernel", e))
    }

    /// Routes the replies of `cell` to the returned channel (and nothing else) until
    /// [`finish_cell`](Self::finish_cell).
    pub(crate) fn begin_cell(&self, cell: &str) -> mpsc::UnboundedReceiver<Frame> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.router).active = Some((cell.to_string(), tx));
        rx
    }

    /// Stops routing replies to the cell's channel.
    pub(crate) fn finish_cell(&self) {
        lock(&self.router).active = None;
    }

    /// Completes when the kernel process has ended.
    pub(crate) async fn ended(&mut self) -> Option<Ended> {
        (&mut self.task).await.ok()
    }

    /// Stops the kernel (its whole process tree) and returns the instance and outcome.
    pub(crate) async fn stop(self) -> Option<Ended> {
        self.stop.fire();
        drop(self.requests);
        self.task.await.ok()
    }

    /// Fires the stop signal without waiting (the task ends on its own and drops the
    /// instance, which takes the sandbox down).
    pub(crate) fn fire_stop(self) {
        self.stop.fire();
    }

    /// Whether the kernel process still runs.
    pub(crate) fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array of two descriptors, which are owned below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: descriptors the kernel just returned to us, each owned once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_routed_to_the_running_cell_only() {
        let mut r = Router::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        r.active = Some(("c1".into(), tx));
        r.push(
            StreamKind::Stdout,
            b"{\"ev\":\"stdout\",\"id\":\"c1\",\"data\":\"he",
        );
        r.push(
            StreamKind::Stdout,
            b"llo\"}\n{\"ev\":\"stdout\",\"id\":\"c0\",\"data\":\"late\"}\nnot json\n",
        );
        r.push(
            StreamKind::Stdout,
            b"{\"ev\":\"done\",\"id\":\"c1\",\"exit\":0}\n",
        );
        assert!(matches!(rx.try_recv(), Ok(Frame::Stdout { data, .. }) if data == "hello"));
        assert!(matches!(rx.try_recv(), Ok(Frame::Done { exit: 0, .. })));
        assert!(rx.try_recv().is_err());
        assert!(r.dropped_bytes > 0);
    }

    #[test]
    fn an_overlong_line_is_dropped_not_kept() {
        let mut r = Router::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        r.active = Some(("c".into(), tx));
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..(MAX_LINE >> 20) + 2 {
            r.push(StreamKind::Stdout, &chunk);
        }
        assert!(r.line.len() <= MAX_LINE);
        r.push(StreamKind::Stdout, b"\n{\"ev\":\"done\",\"id\":\"c\"}\n");
        assert!(matches!(rx.try_recv(), Ok(Frame::Done { .. })));
    }
}
