//! The native half of the `vana_sandbox` Python package: an Engine behind a small JSON
//! interface. The Python half (`python/vana_sandbox`) gives it the API agent developers expect.
//! The GIL is released for the whole of every run.
//!
//! Runs are blocking calls or real asyncio futures (see [`runs`]); sessions keep a sandbox
//! across calls (see [`session`]). Output streams to callbacks as it comes; any run can be
//! stopped — by cancelling its task, by Ctrl-C, or by `Sandbox.kill()` — within a second.
//!
//! Every engine has metrics (read as a dict, or as Prometheus text); an audit log and the
//! threat detector are optional. Findings reach a Python callable on a thread of their own (see
//! [`FindingBridge`]), never on the detector's thread and never in the way of a run.

mod findings;
mod runs;
mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use vana_sandbox::monitor::audit::{self, AuditLog, VerifyOptions};
use vana_sandbox::{
    DockerConfig, Engine, ExecutionRequest, ExecutionResult, Finding, LimitKind, Metrics,
    Observability, ObservabilityBuilder, PolicyConfig, ProcessIo, Runtime, Sandbox, SessionOptions,
    Severity,
};

use findings::FindingBridge;
use runs::{Failure, NativeRun, Out, Payload, Runs, Stopper};
use session::NativeSession;

create_exception!(
    _native,
    SandboxError,
    PyException,
    "The sandbox itself failed."
);
create_exception!(
    _native,
    PolicyRejected,
    SandboxError,
    "The request broke the policy or validation; nothing ran."
);
create_exception!(
    _native,
    BackendUnavailable,
    SandboxError,
    "The backend cannot run on this host."
);
create_exception!(
    _native,
    FileError,
    SandboxError,
    "A workspace file operation was refused or failed (a path out of the workspace, a link, \
     a FIFO, a missing or oversized file)."
);
create_exception!(
    _native,
    SessionClosed,
    SandboxError,
    "The session is closed (by `close`, `kill`, its idle timeout or its lifetime)."
);
create_exception!(
    _native,
    SandboxBusy,
    SandboxError,
    "As many runs are queued, or sessions open, as the sandbox allows; try again later."
);

/// An Engine on the process's Tokio runtime, its observability, the thread that hands findings
/// to Python, and its runs in flight.
#[pyclass(module = "vana_sandbox._native", frozen)]
struct NativeEngine {
    engine: Engine,
    runs: Arc<Runs>,
    backend: String,
    observability: Observability,
    metrics: Metrics,
    findings: Option<FindingBridge>,
}

/// How to build an engine: the keywords `Sandbox(...)` was given, as JSON from the Python layer.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineOptions {
    /// "native" or "docker".
    backend: String,
    /// A policy as JSON (none: the default).
    policy_json: Option<String>,
    /// Where the policy came from (for the audit log).
    policy_source: Option<String>,
    /// Runs at once.
    max_concurrency: Option<usize>,
    /// Docker: "runc" or "runsc".
    runtime: Option<String>,
    /// Docker: containers kept warm.
    #[serde(default)]
    pool_size: usize,
    /// A directory for the hash-chained audit log.
    audit_log: Option<PathBuf>,
    /// A key that seals the audit log (needs `audit_log`).
    audit_hmac_key_file: Option<PathBuf>,
    /// A threat rules file.
    threat_rules: Option<PathBuf>,
}

/// Starts the observability the options ask for: metrics always; the audit log, and the
/// detector when there is an audit log, rules or a callback.
fn observability(
    options: &EngineOptions,
    bridge: Option<&FindingBridge>,
) -> PyResult<(Observability, Metrics)> {
    let EngineOptions {
        audit_log,
        audit_hmac_key_file,
        threat_rules,
        ..
    } = options;
    let config = |e: &dyn std::fmt::Display| SandboxError::new_err(e.to_string());
    let metrics = Metrics::with_prometheus().map_err(|e| config(&e))?;
    let mut b = ObservabilityBuilder::default().metrics(metrics.clone());
    let detector = audit_log.is_some() || threat_rules.is_some() || bridge.is_some();
    if let Some(dir) = audit_log {
        let mut audit = AuditLog::builder(dir);
        if let Some(path) = audit_hmac_key_file {
            audit = audit.hmac_key(audit::load_key(path).map_err(|e| config(&e))?);
        }
        b = b.audit(audit);
    } else if audit_hmac_key_file.is_some() {
        return Err(SandboxError::new_err(
            "`audit_hmac_key_file` needs `audit_log`",
        ));
    }
    if let Some(path) = threat_rules {
        b = b.threat_rules_file(path).map_err(|e| config(&e))?;
    } else if detector {
        b = b.threat_detection();
    }
    if let Some(sink) = bridge.and_then(FindingBridge::take_sink) {
        b = b.finding_sink(sink);
    }
    let obs = b.start().map_err(|e| config(&e))?;
    Ok((obs, metrics))
}

#[pymethods]
impl NativeEngine {
    /// `options_json`: an [`EngineOptions`] as JSON (what `Sandbox(...)` was given);
    /// `on_finding`: called with each finding as JSON (on a thread of its own).
    #[new]
    #[pyo3(signature = (options_json, on_finding = None))]
    fn new(py: Python<'_>, options_json: &str, on_finding: Option<PyObject>) -> PyResult<Self> {
        let options: EngineOptions = serde_json::from_str(options_json)
            .map_err(|e| SandboxError::new_err(format!("malformed engine options: {e}")))?;
        let policy = match &options.policy_json {
            Some(j) => {
                PolicyConfig::from_json(j).map_err(|e| PolicyRejected::new_err(e.to_string()))?
            }
            None => PolicyConfig::default(),
        };
        let runtime_rt = runs::runtime()?;
        let mut builder = Sandbox::builder()
            .policy(policy)
            .policy_source(options.policy_source.as_deref().unwrap_or("default"));
        match (options.backend.as_str(), options.runtime.as_deref()) {
            ("native", None) => {}
            ("native", Some(_)) => {
                return Err(BackendUnavailable::new_err(
                    "`runtime` is an option of the docker backend",
                ))
            }
            ("docker", rt) => {
                let rt = match rt {
                    None => Runtime::Runc,
                    Some(name) => Runtime::parse(name).ok_or_else(|| {
                        BackendUnavailable::new_err(format!(
                            "unknown runtime `{name}`; use \"runc\" or \"runsc\""
                        ))
                    })?,
                };
                builder = builder.docker(DockerConfig {
                    runtime: rt,
                    pool_size: options.pool_size,
                    ..DockerConfig::default()
                });
            }
            (other, _) => {
                return Err(BackendUnavailable::new_err(format!(
                    "unknown backend `{other}`; use \"native\" or \"docker\""
                )))
            }
        }
        if let Some(n) = options.max_concurrency {
            builder = builder.max_concurrency(n);
        }
        let findings = on_finding
            .map(FindingBridge::start)
            .transpose()
            .map_err(|e| SandboxError::new_err(format!("cannot start the findings thread: {e}")))?;
        let (observability, metrics) = observability(&options, findings.as_ref())?;
        builder = builder.observability(observability.clone());
        let engine = py
            .allow_threads(|| runtime_rt.block_on(builder.build()))
            .map_err(|e| match e {
                vana_sandbox::Error::Backend(e) => BackendUnavailable::new_err(e.to_string()),
                vana_sandbox::Error::Policy(e) => PolicyRejected::new_err(e.to_string()),
                e => SandboxError::new_err(e.to_string()),
            })?;
        Ok(Self {
            engine,
            runs: Arc::default(),
            backend: options.backend,
            observability,
            metrics,
            findings,
        })
    }

    /// Runs a request given as JSON and returns the result as JSON. Malformed requests come back
    /// as a `rejected` result; engine errors (a full queue) raise `SandboxError`.
    fn execute(&self, py: Python<'_>, request_json: &str) -> PyResult<String> {
        let request = match ExecutionRequest::from_json(request_json) {
            Ok(r) => r,
            Err(e) => {
                return Ok(ExecutionResult::rejected(
                    "invalid",
                    "",
                    format!("malformed request: {e}"),
                )
                .to_json())
            }
        };
        let engine = self.engine.clone();
        let runtime = runs::runtime()?;
        let result = py.allow_threads(move || runtime.block_on(engine.execute(request)));
        result
            .map(|r| r.to_json())
            .map_err(|e| Failure::engine(&e).into_pyerr())
    }

    /// Runs a request given as JSON and returns the result as JSON, blocking with the GIL
    /// released; output chunks go to `on_stdout`/`on_stderr` on this thread as they come.
    /// Ctrl-C, a raising callback or `kill()` stops the run. Malformed requests come back as a
    /// `rejected` result.
    #[pyo3(signature = (request_json, on_stdout = None, on_stderr = None))]
    fn run(
        &self,
        py: Python<'_>,
        request_json: &str,
        on_stdout: Option<PyObject>,
        on_stderr: Option<PyObject>,
    ) -> PyResult<String> {
        let request = match ExecutionRequest::from_json(request_json) {
            Ok(r) => r,
            Err(e) => return Ok(malformed(&e)),
        };
        let stop = Stopper::new()?;
        let registered = self.runs.register(&stop);
        let stream = on_stdout.is_some() || on_stderr.is_some();
        let payload = runs::block(
            py,
            Some(&stop),
            Some(registered),
            on_stdout.as_ref(),
            on_stderr.as_ref(),
            |out| self.one_shot(request, &stop, stream.then_some(&out)),
        )?;
        match payload {
            Payload::Text(s) => Ok(s),
            _ => Err(SandboxError::new_err("unexpected reply")),
        }
    }

    /// Starts a request (JSON) for asyncio: events go to
    /// `event_loop.call_soon_threadsafe(handler, kind, value)` — `stdout`/`stderr` chunks when
    /// `stream`, then `done` (the result as JSON) or `error` (an exception). Cancelling the
    /// returned run drops it (its sandbox is stopped at once and its slot freed).
    #[pyo3(signature = (request_json, event_loop, handler, stream = false))]
    fn start(
        &self,
        request_json: &str,
        event_loop: PyObject,
        handler: PyObject,
        stream: bool,
    ) -> PyResult<NativeRun> {
        let out = Out::event_loop(event_loop, handler);
        let request = match ExecutionRequest::from_json(request_json) {
            Ok(r) => r,
            Err(e) => {
                let reply = malformed(&e);
                return runs::start(
                    out,
                    None,
                    None,
                    true,
                    async move { Ok(Payload::Text(reply)) },
                );
            }
        };
        let stop = Stopper::new()?;
        let registered = self.runs.register(&stop);
        let work = self.one_shot(request, &stop, stream.then_some(&out));
        runs::start(out, Some(stop), Some(registered), true, work)
    }

    /// Opens a session (options as JSON: `id`, `limits`, `env`, `files`, `network_access`,
    /// `network`), blocking.
    fn open_session(&self, py: Python<'_>, options_json: &str) -> PyResult<NativeSession> {
        let options = session_options(options_json)?;
        let work = self.opening(options);
        match runs::block(py, None, None, None, None, |_| work)? {
            Payload::Session(s) => Ok(*s),
            _ => Err(SandboxError::new_err("unexpected reply")),
        }
    }

    /// Opens a session for asyncio: the session comes as `done`.
    fn start_session(
        &self,
        options_json: &str,
        event_loop: PyObject,
        handler: PyObject,
    ) -> PyResult<NativeRun> {
        let options = session_options(options_json)?;
        let work = self.opening(options);
        runs::start(Out::event_loop(event_loop, handler), None, None, true, work)
    }

    /// Stops every run in flight — one-shot runs and sessions' cells — each with a `killed`
    /// result; returns how many there were. Never blocks.
    fn kill(&self) -> usize {
        self.runs.kill_all()
    }

    /// Runs executing now (each holds one of the `max_concurrency` slots).
    #[getter]
    fn running(&self) -> usize {
        self.engine.running()
    }

    /// Runs waiting for a slot now.
    #[getter]
    fn queued(&self) -> usize {
        self.engine.queued()
    }

    /// What the backend enforces on this host, as JSON.
    fn capabilities(&self) -> PyResult<String> {
        serde_json::to_string(self.engine.executor().capabilities())
            .map_err(|e| SandboxError::new_err(e.to_string()))
    }

    /// The backend's name.
    #[getter]
    fn backend(&self) -> &str {
        &self.backend
    }

    /// Every metric now: `name{labels}` → value (histograms as `_count` and `_sum`).
    fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        self.metrics.snapshot().to_map()
    }

    /// Every metric now in the Prometheus text exposition format.
    fn metrics_text(&self) -> String {
        self.metrics.render_prometheus().unwrap_or_default()
    }

    /// Waits (GIL released) until every run so far has been judged by the detector, its
    /// findings handed to the callback and the audit log written, or `timeout` seconds pass;
    /// `True` when all of it was.
    #[pyo3(signature = (timeout = 5.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> bool {
        let timeout = seconds(timeout);
        py.allow_threads(|| {
            let deadline = std::time::Instant::now() + timeout;
            let ok = self.observability.flush(timeout);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            ok && self.findings.as_ref().is_none_or(|f| f.flush(left))
        })
    }

    /// Delivers the last findings, stops the detector and closes the audit log (its last line is
    /// `log_closed`), waiting at most `timeout` seconds with the GIL released; `True` when all of
    /// it happened. Runs after this are no longer observed.
    #[pyo3(signature = (timeout = 10.0))]
    fn close(&self, py: Python<'_>, timeout: f64) -> bool {
        let timeout = seconds(timeout);
        py.allow_threads(|| {
            let deadline = std::time::Instant::now() + timeout;
            let ok = self.observability.shutdown(timeout);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            ok && self.findings.as_ref().is_none_or(|f| f.close(left))
        })
    }

    /// Findings the callback could not take because its queue was full (it is slow).
    #[getter]
    fn findings_dropped(&self) -> u64 {
        self.findings.as_ref().map_or(0, FindingBridge::dropped)
    }

    /// The audit log's files in chain order (empty without an audit log).
    fn audit_files(&self) -> PyResult<Vec<PathBuf>> {
        match &self.observability.audit {
            Some(a) => a.files().map_err(|e| SandboxError::new_err(e.to_string())),
            None => Ok(Vec::new()),
        }
    }
}

impl NativeEngine {
    /// A one-shot run as a future: `request` stopped by `stop`, its output to `out`'s sink.
    fn one_shot(
        &self,
        request: ExecutionRequest,
        stop: &Stopper,
        out: Option<&Out>,
    ) -> impl std::future::Future<Output = Result<Payload, Failure>> + Send + 'static {
        let engine = self.engine.clone();
        let io = ProcessIo {
            sink: out.map(Out::sink),
            stop: Some(stop.signal()),
            ..ProcessIo::default()
        };
        async move { Payload::result(engine.execute_with_io(request, io).await) }
    }

    /// Opening a session as a future.
    fn opening(
        &self,
        options: SessionOptions,
    ) -> impl std::future::Future<Output = Result<Payload, Failure>> + Send + 'static {
        let engine = self.engine.clone();
        let runs = self.runs.clone();
        async move {
            engine
                .session(options)
                .await
                .map(|s| Payload::Session(Box::new(NativeSession::new(s, runs))))
                .map_err(|e| Failure::engine(&e))
        }
    }
}

/// A `rejected` result for a request that is not valid JSON.
fn malformed(e: &serde_json::Error) -> String {
    ExecutionResult::rejected("invalid", "", format!("malformed request: {e}")).to_json()
}

/// Session options from JSON (malformed: `PolicyRejected`).
fn session_options(json: &str) -> PyResult<SessionOptions> {
    serde_json::from_str(json)
        .map_err(|e| PolicyRejected::new_err(format!("malformed session options: {e}")))
}

/// `seconds` as a duration (negative or not a number: zero; huge: a day).
fn seconds(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(86_400.0))
    } else {
        Duration::ZERO
    }
}

/// Checks an audit log's chain (files oldest first); returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (files, hmac_key_file = None, allow_open = false))]
fn verify_audit(
    py: Python<'_>,
    files: Vec<PathBuf>,
    hmac_key_file: Option<PathBuf>,
    allow_open: bool,
) -> PyResult<String> {
    let key = hmac_key_file
        .as_deref()
        .map(audit::load_key)
        .transpose()
        .map_err(|e| SandboxError::new_err(e.to_string()))?;
    let options = VerifyOptions { key, allow_open };
    let report = py
        .allow_threads(|| audit::verify(&files, &options))
        .map_err(|e| SandboxError::new_err(e.to_string()))?;
    let problem = report.problem.as_ref().map(|p| {
        serde_json::json!({
            "kind": p.kind.as_str(),
            "file": p.file,
            "line": p.line,
            "detail": p.detail,
            "message": p.to_string(),
        })
    });
    Ok(serde_json::json!({
        "ok": report.is_ok(),
        "files": report.files,
        "lines": report.lines,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "last_hash": report.last_hash,
        "from_genesis": report.from_genesis,
        "closed": report.closed,
        "problem": problem,
    })
    .to_string())
}

/// The wire fields of a finding (what the Python `Finding` mirrors).
fn finding_fields() -> Vec<String> {
    let sample = Finding {
        rule: String::new(),
        severity: Severity::Info,
        summary: String::new(),
        run_id: None,
        tenant: None,
        language: None,
        explanation: String::new(),
        evidence: Vec::new(),
    };
    match serde_json::to_value(sample) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Checks a policy (JSON or TOML text) and returns it as canonical JSON.
#[pyfunction]
#[pyo3(signature = (text, format = "json"))]
fn load_policy(text: &str, format: &str) -> PyResult<String> {
    let p = match format {
        "toml" => PolicyConfig::from_toml(text),
        _ => PolicyConfig::from_json(text),
    }
    .map_err(|e| PolicyRejected::new_err(e.to_string()))?;
    serde_json::to_string(&p).map_err(|e| SandboxError::new_err(e.to_string()))
}

/// The default policy as JSON.
#[pyfunction]
fn default_policy() -> PyResult<String> {
    serde_json::to_string(&PolicyConfig::default())
        .map_err(|e| SandboxError::new_err(e.to_string()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeEngine>()?;
    m.add_class::<NativeSession>()?;
    m.add_class::<NativeRun>()?;
    m.add_function(wrap_pyfunction!(load_policy, m)?)?;
    m.add_function(wrap_pyfunction!(default_policy, m)?)?;
    m.add_function(wrap_pyfunction!(verify_audit, m)?)?;
    m.add("FINDING_FIELDS", finding_fields())?;
    // The surfaces the Python package mirrors, from their one source: the result's wire fields
    // and the limits table's keys (the timeout is a request field of its own).
    m.add("RESULT_FIELDS", ExecutionResult::field_names())?;
    m.add(
        "LIMIT_KEYS",
        LimitKind::ALL
            .iter()
            .filter(|k| **k != LimitKind::Timeout)
            .map(|k| k.key())
            .collect::<Vec<_>>(),
    )?;
    m.add("SandboxError", m.py().get_type::<SandboxError>())?;
    m.add("PolicyRejected", m.py().get_type::<PolicyRejected>())?;
    m.add(
        "BackendUnavailable",
        m.py().get_type::<BackendUnavailable>(),
    )?;
    m.add("FileError", m.py().get_type::<FileError>())?;
    m.add("SessionClosed", m.py().get_type::<SessionClosed>())?;
    m.add("SandboxBusy", m.py().get_type::<SandboxBusy>())?;
    Ok(())
}
