//! The native half of the `vana_sandbox` Python package: an Engine behind a small JSON
//! interface. The Python half (`python/vana_sandbox`) gives it the API agent developers expect.
//! The GIL is released for the whole of every run.

use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use vana_sandbox::{
    DockerConfig, Engine, ExecutionRequest, ExecutionResult, LimitKind, PolicyConfig, Runtime,
    Sandbox,
};

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

/// An Engine with its own Tokio runtime.
#[pyclass(module = "vana_sandbox._native", frozen)]
struct NativeEngine {
    engine: Engine,
    runtime: Arc<tokio::runtime::Runtime>,
    backend: String,
}

#[pymethods]
impl NativeEngine {
    /// `backend`: "native" or "docker"; `policy_json`: a policy as JSON (None: the default);
    /// `max_concurrency`: runs at once.
    #[new]
    #[pyo3(signature = (backend = "native", policy_json = None, max_concurrency = None, runtime = None, pool_size = 0))]
    fn new(
        py: Python<'_>,
        backend: &str,
        policy_json: Option<&str>,
        max_concurrency: Option<usize>,
        runtime: Option<&str>,
        pool_size: usize,
    ) -> PyResult<Self> {
        let policy = match policy_json {
            Some(j) => {
                PolicyConfig::from_json(j).map_err(|e| PolicyRejected::new_err(e.to_string()))?
            }
            None => PolicyConfig::default(),
        };
        let runtime_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vana-sandbox")
            .enable_all()
            .build()
            .map_err(|e| SandboxError::new_err(format!("cannot start the runtime: {e}")))?;
        let mut builder = Sandbox::builder().policy(policy);
        match (backend, runtime) {
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
                    pool_size,
                    ..DockerConfig::default()
                });
            }
            (other, _) => {
                return Err(BackendUnavailable::new_err(format!(
                    "unknown backend `{other}`; use \"native\" or \"docker\""
                )))
            }
        }
        if let Some(n) = max_concurrency {
            builder = builder.max_concurrency(n);
        }
        let engine = py
            .allow_threads(|| runtime_rt.block_on(builder.build()))
            .map_err(|e| match e {
                vana_sandbox::Error::Backend(e) => BackendUnavailable::new_err(e.to_string()),
                vana_sandbox::Error::Policy(e) => PolicyRejected::new_err(e.to_string()),
                e => SandboxError::new_err(e.to_string()),
            })?;
        Ok(Self {
            engine,
            runtime: Arc::new(runtime_rt),
            backend: backend.to_string(),
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
        let (engine, runtime) = (self.engine.clone(), self.runtime.clone());
        let result = py.allow_threads(move || runtime.block_on(engine.execute(request)));
        result
            .map(|r| r.to_json())
            .map_err(|e| SandboxError::new_err(e.to_string()))
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
    m.add_function(wrap_pyfunction!(load_policy, m)?)?;
    m.add_function(wrap_pyfunction!(default_policy, m)?)?;
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
    Ok(())
}
