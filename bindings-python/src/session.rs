//! A session for Python: one sandbox across calls (interpreter state, a workspace), with cells
//! run blocking or for asyncio, output streamed, files in and out. See [`crate::runs`] for how
//! calls wait and how they are stopped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use pyo3::prelude::*;
use vana_sandbox::{ExecutionRequest, Session};

use crate::runs::{self, Failure, FailureKind, NativeRun, Out, Payload, Runs, Stopper};

/// A boxed operation of a session, ready to spawn.
type Op = Pin<Box<dyn Future<Output = Result<Payload, Failure>> + Send>>;

/// A session of an engine.
#[pyclass(module = "vana_sandbox._native", frozen)]
pub(crate) struct NativeSession {
    session: Session,
    runs: Arc<Runs>,
}

impl NativeSession {
    pub(crate) fn new(session: Session, runs: Arc<Runs>) -> Self {
        Self { session, runs }
    }

    /// A cell as a future: `request` run with `stop`, its output to `sink`.
    fn cell(
        &self,
        request: ExecutionRequest,
        stop: &Stopper,
        out: Option<&Out>,
    ) -> impl Future<Output = Result<Payload, Failure>> + Send + 'static {
        let session = self.session.clone();
        let signal = stop.signal();
        let sink = out.map(Out::sink);
        async move { Payload::result(session.run_with_stop(request, sink, signal).await) }
    }

    /// An install into the session's package set as a future (its report as JSON).
    fn install_op(
        &self,
        language: String,
        packages: Vec<String>,
    ) -> impl Future<Output = Result<Payload, Failure>> + Send + 'static {
        let session = self.session.clone();
        async move {
            let report = session
                .install(&language, &packages)
                .await
                .map_err(|e| Failure::engine(&e))?;
            serde_json::to_string(&report)
                .map(Payload::Text)
                .map_err(|e| Failure::new(FailureKind::Sandbox, e.to_string()))
        }
    }

    /// A file operation as a future.
    fn file_op(&self, op: &str, path: String, data: Option<Vec<u8>>) -> PyResult<Op> {
        if self.session.is_closed() {
            return Err(crate::SessionClosed::new_err("the session is closed"));
        }
        let files = self.session.files().clone();
        let fail = |e: vana_sandbox::BackendError| Failure::backend(&e);
        let data = move || {
            data.ok_or_else(|| Failure::new(FailureKind::Sandbox, "this operation needs data"))
        };
        Ok(match op {
            "write" => Box::pin(async move {
                files.write(&path, data()?).await.map_err(fail)?;
                Ok(Payload::Unit)
            }),
            "read" => {
                Box::pin(async move { files.read(&path).await.map(Payload::Bytes).map_err(fail) })
            }
            "list" => Box::pin(async move {
                let listing = files.list(&path).await.map_err(fail)?;
                serde_json::to_string(&listing)
                    .map(Payload::Text)
                    .map_err(|e| Failure::new(FailureKind::Sandbox, e.to_string()))
            }),
            "remove" => Box::pin(async move {
                files.remove(&path).await.map_err(fail)?;
                Ok(Payload::Unit)
            }),
            "download" => Box::pin(async move {
                files
                    .download(&path)
                    .await
                    .map(Payload::Bytes)
                    .map_err(fail)
            }),
            "upload" => Box::pin(async move {
                files
                    .upload(&data()?)
                    .await
                    .map(Payload::Count)
                    .map_err(fail)
            }),
            other => {
                return Err(crate::SandboxError::new_err(format!(
                    "unknown file operation `{other}`"
                )))
            }
        })
    }
}

/// A cell's request from its JSON (malformed: `PolicyRejected`, nothing ran).
fn request(json: &str) -> PyResult<ExecutionRequest> {
    ExecutionRequest::from_json(json)
        .map_err(|e| crate::PolicyRejected::new_err(format!("malformed request: {e}")))
}

fn into_text(p: Payload) -> PyResult<String> {
    match p {
        Payload::Text(s) => Ok(s),
        _ => Err(crate::SandboxError::new_err("unexpected reply")),
    }
}

#[pymethods]
impl NativeSession {
    /// The session's id.
    #[getter]
    fn id(&self) -> &str {
        self.session.id()
    }

    /// Whether the session is closed (by `close`, its idle timeout or its lifetime).
    #[getter]
    fn closed(&self) -> bool {
        self.session.is_closed()
    }

    /// Runs a cell (a request as JSON) and returns its result as JSON, blocking with the GIL
    /// released; output chunks go to `on_stdout`/`on_stderr` on this thread as they come.
    #[pyo3(signature = (request_json, on_stdout = None, on_stderr = None))]
    fn run(
        &self,
        py: Python<'_>,
        request_json: &str,
        on_stdout: Option<PyObject>,
        on_stderr: Option<PyObject>,
    ) -> PyResult<String> {
        let request = request(request_json)?;
        let stop = Stopper::new()?;
        let registered = self.runs.register(&stop);
        let stream = on_stdout.is_some() || on_stderr.is_some();
        let payload = runs::block(
            py,
            Some(&stop),
            Some(registered),
            on_stdout.as_ref(),
            on_stderr.as_ref(),
            |out| self.cell(request, &stop, stream.then_some(&out)),
        )?;
        into_text(payload)
    }

    /// Starts a cell for asyncio: events go to `event_loop.call_soon_threadsafe(handler, kind,
    /// value)` — `stdout`/`stderr` chunks when `stream`, then `done` (the result as JSON) or
    /// `error` (an exception).
    #[pyo3(signature = (request_json, event_loop, handler, stream = false))]
    fn start(
        &self,
        request_json: &str,
        event_loop: PyObject,
        handler: PyObject,
        stream: bool,
    ) -> PyResult<NativeRun> {
        let request = request(request_json)?;
        let stop = Stopper::new()?;
        let registered = self.runs.register(&stop);
        let out = Out::event_loop(event_loop, handler);
        let work = self.cell(request, &stop, stream.then_some(&out));
        runs::start(out, Some(stop), Some(registered), false, work)
    }

    /// A file operation, blocking: `write` (path, data), `read` (path) → bytes, `list` (dir)
    /// → JSON, `remove` (path), `download` (dir) → tar bytes, `upload` (data: tar) → count.
    #[pyo3(signature = (op, path = String::new(), data = None))]
    fn files(
        &self,
        py: Python<'_>,
        op: &str,
        path: String,
        data: Option<Vec<u8>>,
    ) -> PyResult<PyObject> {
        let work = self.file_op(op, path, data)?;
        let payload = runs::block(py, None, None, None, None, |_| work)?;
        payload.into_py(py)
    }

    /// A file operation for asyncio (see `files`); its value comes as `done`.
    #[pyo3(signature = (op, event_loop, handler, path = String::new(), data = None))]
    fn start_files(
        &self,
        op: &str,
        event_loop: PyObject,
        handler: PyObject,
        path: String,
        data: Option<Vec<u8>>,
    ) -> PyResult<NativeRun> {
        let work = self.file_op(op, path, data)?;
        runs::start(Out::event_loop(event_loop, handler), None, None, true, work)
    }

    /// Installs `packages` of `language` into the session's read-only package set (visible to
    /// the next cell), blocking with the GIL released; returns the packages report as JSON.
    fn install(&self, py: Python<'_>, language: String, packages: Vec<String>) -> PyResult<String> {
        let work = self.install_op(language, packages);
        into_text(runs::block(py, None, None, None, None, |_| work)?)
    }

    /// An install for asyncio (see `install`); the report comes as `done`.
    fn start_install(
        &self,
        language: String,
        packages: Vec<String>,
        event_loop: PyObject,
        handler: PyObject,
    ) -> PyResult<NativeRun> {
        let work = self.install_op(language, packages);
        runs::start(Out::event_loop(event_loop, handler), None, None, true, work)
    }

    /// Stops the running cell, if any (its result says `killed`); the session stays open.
    fn interrupt(&self) {
        self.session.kill();
    }

    /// Closes the session, blocking: a running cell is stopped, the kernel and the sandbox
    /// destroyed. Closing again does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let session = self.session.clone();
        runs::block(py, None, None, None, None, |_| async move {
            session
                .close()
                .await
                .map(|()| Payload::Unit)
                .map_err(|e| Failure::engine(&e))
        })
        .map(drop)
    }

    /// Closes the session for asyncio (its end comes as `done`).
    fn start_close(&self, event_loop: PyObject, handler: PyObject) -> PyResult<NativeRun> {
        let session = self.session.clone();
        runs::start(
            Out::event_loop(event_loop, handler),
            None,
            None,
            false,
            async move {
                session
                    .close()
                    .await
                    .map(|()| Payload::Unit)
                    .map_err(|e| Failure::engine(&e))
            },
        )
    }
}
