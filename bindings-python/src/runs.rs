//! Runs in flight and how what they produce reaches Python.
//!
//! Every run — one-shot or a session's cell, called from a thread or from asyncio — is a task
//! on the process's one Tokio runtime. Its output chunks and its end are [`Event`]s:
//!
//! - a **blocking call** waits for them on its own thread with the GIL released, taking the GIL
//!   only to hand a chunk to `on_stdout`/`on_stderr` (so the callbacks run on the caller's
//!   thread, their exceptions propagate, and Ctrl-C stops the run);
//! - an **asyncio call** gets a real future: events go to the one delivery thread, which takes
//!   the GIL for each and schedules the event loop's handler with `call_soon_threadsafe`. No
//!   Tokio thread ever waits for the GIL, and no thread is started per call.
//!
//! Each run is registered with its sandbox while it lasts, so that `Sandbox.kill()` can stop
//! every run in flight; it is stopped through its [`StopSignal`], so its result says `killed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use vana_sandbox::{BackendError, EngineError, ExecutionResult, StopSignal, StreamKind};

use crate::{
    BackendUnavailable, FileError, PolicyRejected, SandboxBusy, SandboxError, SessionClosed,
};

/// The process's runtime: every sandbox of this interpreter runs on it. It is never dropped
/// (dropping a runtime from a thread it owns panics; a process ends without it).
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("vana-sandbox")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| SandboxError::new_err(e.clone()))
}

/// Which Python exception an error becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// `SandboxError`.
    Sandbox,
    /// `PolicyRejected`.
    Rejected,
    /// `BackendUnavailable`.
    Unavailable,
    /// `FileError`.
    File,
    /// `SessionClosed`.
    Closed,
    /// `SandboxBusy`.
    Busy,
}

/// An error on its way to Python (made into an exception where the GIL is held).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    kind: FailureKind,
    message: String,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn backend(e: &BackendError) -> Self {
        let kind = match e {
            BackendError::File { .. } => FailureKind::File,
            BackendError::Unavailable(_)
            | BackendError::MissingLayer { .. }
            | BackendError::MissingRuntime { .. } => FailureKind::Unavailable,
            _ => FailureKind::Sandbox,
        };
        Self::new(kind, e.to_string())
    }

    pub(crate) fn engine(e: &EngineError) -> Self {
        match e {
            EngineError::Session(b) => Self::backend(b),
            EngineError::Rejected(m) => Self::new(FailureKind::Rejected, m.clone()),
            EngineError::SessionClosed => Self::new(FailureKind::Closed, e.to_string()),
            EngineError::QueueFull { .. } | EngineError::SessionsFull { .. } => {
                Self::new(FailureKind::Busy, e.to_string())
            }
            _ => Self::new(FailureKind::Sandbox, e.to_string()),
        }
    }

    pub(crate) fn into_pyerr(self) -> PyErr {
        let m = self.message;
        match self.kind {
            FailureKind::Sandbox => SandboxError::new_err(m),
            FailureKind::Rejected => PolicyRejected::new_err(m),
            FailureKind::Unavailable => BackendUnavailable::new_err(m),
            FailureKind::File => FileError::new_err(m),
            FailureKind::Closed => SessionClosed::new_err(m),
            FailureKind::Busy => SandboxBusy::new_err(m),
        }
    }
}

/// What a finished operation gives back.
pub(crate) enum Payload {
    /// Text: a result as JSON, a listing as JSON.
    Text(String),
    /// File content, an archive.
    Bytes(Vec<u8>),
    /// A count (files unpacked).
    Count(usize),
    /// Nothing.
    Unit,
    /// A session that was opened.
    Session(Box<crate::session::NativeSession>),
}

impl Payload {
    /// A run's outcome: its result as JSON, or the engine's error as a failure.
    pub(crate) fn result(r: Result<ExecutionResult, EngineError>) -> Result<Self, Failure> {
        r.map(|r| Payload::Text(r.to_json()))
            .map_err(|e| Failure::engine(&e))
    }

    pub(crate) fn into_py(self, py: Python<'_>) -> PyResult<PyObject> {
        Ok(match self {
            Payload::Text(s) => s.into_pyobject(py)?.into_any().unbind(),
            Payload::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
            Payload::Count(n) => n.into_pyobject(py)?.into_any().unbind(),
            Payload::Unit => py.None(),
            Payload::Session(s) => Py::new(py, *s)?.into_any(),
        })
    }
}

/// Something a run produced.
pub(crate) enum Event {
    /// A chunk of output.
    Output(StreamKind, String),
    /// The end: a payload or an error.
    Done(Result<Payload, Failure>),
}

/// Where an asyncio call's events go: `loop.call_soon_threadsafe(handler, kind, value)`.
pub(crate) struct Target {
    event_loop: PyObject,
    handler: PyObject,
}

/// Where a run's events go.
#[derive(Clone)]
pub(crate) enum Out {
    /// To the blocking caller's thread.
    Blocking(mpsc::Sender<Event>),
    /// To an event loop, through the delivery thread.
    Loop(Arc<Target>),
}

impl Out {
    /// An event loop's handler as a destination.
    pub(crate) fn event_loop(event_loop: PyObject, handler: PyObject) -> Self {
        Out::Loop(Arc::new(Target {
            event_loop,
            handler,
        }))
    }

    pub(crate) fn send(&self, event: Event) {
        match self {
            Out::Blocking(tx) => {
                let _ = tx.send(event);
            }
            Out::Loop(target) => deliver(target.clone(), event),
        }
    }

    /// A sink for a run's output, decoding UTF-8 split across chunks.
    pub(crate) fn sink(&self) -> vana_sandbox::OutputSink {
        let out = self.clone();
        let mut carry = Utf8Carry::default();
        Box::new(move |kind, data| {
            let text = carry.push(kind, data);
            if !text.is_empty() {
                out.send(Event::Output(kind, text));
            }
        })
    }
}

/// One job of the delivery thread.
struct Delivery {
    target: Arc<Target>,
    event: Event,
}

/// Hands `event` to the delivery thread (started on first use).
fn deliver(target: Arc<Target>, event: Event) {
    static THREAD: OnceLock<Mutex<Option<mpsc::Sender<Delivery>>>> = OnceLock::new();
    let sender = THREAD.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Delivery>();
        let started = std::thread::Builder::new()
            .name("vana-delivery".into())
            .spawn(move || {
                while let Ok(d) = rx.recv() {
                    Python::with_gil(|py| schedule(py, d));
                }
            });
        Mutex::new(started.ok().map(|_| tx))
    });
    let tx = sender.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(tx) = tx {
        let _ = tx.send(Delivery { target, event });
    }
}

/// On the delivery thread, with the GIL: `loop.call_soon_threadsafe(handler, kind, value)`.
/// A closed loop (its caller gave up) is not an error anyone could act on.
fn schedule(py: Python<'_>, d: Delivery) {
    let (kind, value): (&str, PyResult<PyObject>) = match d.event {
        Event::Output(StreamKind::Stdout, s) => ("stdout", Payload::Text(s).into_py(py)),
        Event::Output(StreamKind::Stderr, s) => ("stderr", Payload::Text(s).into_py(py)),
        Event::Done(Ok(p)) => ("done", p.into_py(py)),
        Event::Done(Err(f)) => ("error", Ok(f.into_pyerr().into_value(py).into_any())),
    };
    let (kind, value) = match value {
        Ok(v) => (kind, v),
        Err(e) => ("error", e.into_value(py).into_any()),
    };
    let _ = d.target.event_loop.bind(py).call_method1(
        "call_soon_threadsafe",
        (d.target.handler.clone_ref(py), kind, value),
    );
}

/// Decodes output chunks as UTF-8, keeping a character split across two chunks whole.
#[derive(Default)]
pub(crate) struct Utf8Carry {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Utf8Carry {
    pub(crate) fn push(&mut self, kind: StreamKind, data: &[u8]) -> String {
        let carry = match kind {
            StreamKind::Stdout => &mut self.stdout,
            StreamKind::Stderr => &mut self.stderr,
        };
        carry.extend_from_slice(data);
        let mut out = String::new();
        let mut at = 0;
        loop {
            let rest = carry.get(at..).unwrap_or_default();
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    at = carry.len();
                    break;
                }
                Err(e) => {
                    let good = rest.get(..e.valid_up_to()).unwrap_or_default();
                    out.push_str(&String::from_utf8_lossy(good));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            at += e.valid_up_to() + n;
                        }
                        None => {
                            at += e.valid_up_to();
                            break;
                        }
                    }
                }
            }
        }
        carry.drain(..at.min(carry.len()));
        out
    }
}

/// How a registered run is stopped.
#[derive(Clone)]
pub(crate) struct Stopper(StopSignal);

impl Stopper {
    pub(crate) fn new() -> PyResult<Self> {
        StopSignal::new()
            .map(Self)
            .map_err(|e| SandboxError::new_err(format!("cannot make a stop signal: {e}")))
    }

    pub(crate) fn signal(&self) -> StopSignal {
        self.0.clone()
    }

    pub(crate) fn fire(&self) {
        self.0.fire();
    }
}

/// The runs of one sandbox now in flight.
#[derive(Default)]
pub(crate) struct Runs {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Stopper>>,
}

impl Runs {
    /// Registers a run until the returned guard is dropped.
    pub(crate) fn register(self: &Arc<Self>, stop: &Stopper) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, stop.clone());
        Registered {
            runs: self.clone(),
            id,
        }
    }

    /// Stops every run in flight; returns how many there were.
    pub(crate) fn kill_all(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for s in live.values() {
            s.fire();
        }
        live.len()
    }
}

/// A run's registration; dropped when the run's task ends (or is dropped).
pub(crate) struct Registered {
    runs: Arc<Runs>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.runs
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// A run started for asyncio: `cancel()` when the awaiting task is cancelled, `kill()` to
/// stop it with a result.
#[pyclass(module = "vana_sandbox._native", frozen)]
pub(crate) struct NativeRun {
    stop: Option<Stopper>,
    abort: tokio::task::AbortHandle,
    /// One-shot runs are dropped on cancel (the engine stops their sandbox at once); a
    /// session's cell is stopped and left to end cleanly, so that its kernel stays in step.
    drop_on_cancel: bool,
}

impl NativeRun {
    pub(crate) fn new(
        stop: Option<Stopper>,
        abort: tokio::task::AbortHandle,
        drop_on_cancel: bool,
    ) -> Self {
        Self {
            stop,
            abort,
            drop_on_cancel,
        }
    }
}

#[pymethods]
impl NativeRun {
    /// The caller gave up: stop the run and free its slot (nothing is delivered after).
    fn cancel(&self) {
        if let Some(s) = &self.stop {
            s.fire();
        }
        if self.drop_on_cancel || self.stop.is_none() {
            self.abort.abort();
        }
    }

    /// Stops the run; its result (status `killed`) is still delivered.
    fn kill(&self) {
        if let Some(s) = &self.stop {
            s.fire();
        }
    }

    /// Whether the run's task has ended.
    #[getter]
    fn done(&self) -> bool {
        self.abort.is_finished()
    }
}

/// Spawns `work` for an asyncio caller: its events go to `out`; returns the run's handle.
pub(crate) fn start<F>(
    out: Out,
    stop: Option<Stopper>,
    registration: Option<Registered>,
    drop_on_cancel: bool,
    work: F,
) -> PyResult<NativeRun>
where
    F: std::future::Future<Output = Result<Payload, Failure>> + Send + 'static,
{
    let rt = runtime()?;
    let task = rt.spawn(async move {
        let _registered = registration;
        let result = work.await;
        out.send(Event::Done(result));
    });
    Ok(NativeRun::new(stop, task.abort_handle(), drop_on_cancel))
}

/// How long a stopped run has to end before a blocking caller stops waiting for it.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Runs `work` for a blocking caller: waits with the GIL released, calls `on_stdout` /
/// `on_stderr` (with the GIL, on this thread) for each chunk, and checks for signals (Ctrl-C)
/// every 50 ms. A callback that raises, or a signal, stops the run; the exception is raised
/// once the run has ended (or after 10 s).
pub(crate) fn block<F>(
    py: Python<'_>,
    stop: Option<&Stopper>,
    registration: Option<Registered>,
    on_stdout: Option<&PyObject>,
    on_stderr: Option<&PyObject>,
    work: impl FnOnce(Out) -> F,
) -> PyResult<Payload>
where
    F: std::future::Future<Output = Result<Payload, Failure>> + Send + 'static,
{
    let rt = runtime()?;
    let (tx, mut rx) = mpsc::channel();
    let out = Out::Blocking(tx);
    let fut = work(out.clone());
    let task = rt.spawn(async move {
        let _registered = registration;
        let result = fut.await;
        out.send(Event::Done(result));
    });
    let mut failed: Option<PyErr> = None;
    let mut deadline: Option<Instant> = None;
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(50),
        }
        .min(Duration::from_millis(50));
        // The receiver goes with the wait (a `Receiver` is `Send`, not `Sync`).
        let (got, back) = py.allow_threads(move || {
            let got = rx.recv_timeout(wait);
            (got, rx)
        });
        rx = back;
        match got {
            Ok(Event::Output(kind, text)) => {
                let callback = match kind {
                    StreamKind::Stdout => on_stdout,
                    StreamKind::Stderr => on_stderr,
                };
                if let (Some(cb), None) = (callback, &failed) {
                    if let Err(e) = cb.call1(py, (text,)) {
                        failed = Some(e);
                    }
                }
            }
            Ok(Event::Done(result)) => {
                return match failed {
                    Some(e) => Err(e),
                    None => result.map_err(Failure::into_pyerr),
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if failed.is_none() {
                    if let Err(e) = py.check_signals() {
                        failed = Some(e);
                    }
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    task.abort();
                    return Err(failed.unwrap_or_else(|| {
                        SandboxError::new_err("the run did not end after it was stopped")
                    }));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(failed
                    .unwrap_or_else(|| SandboxError::new_err("the run ended without a result")));
            }
        }
        if failed.is_some() && deadline.is_none() {
            match stop {
                Some(s) => s.fire(),
                None => task.abort(),
            }
            deadline = Some(Instant::now() + STOP_WAIT);
        }
    }
}
