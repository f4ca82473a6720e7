//! The native half of the `vana_sandbox` Python package: an Engine behind a small JSON
//! interface. The Python half (`python/vana_sandbox`) gives it the API agent developers expect.
//! The GIL is released for the whole of every run.

use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use vana_sandbox::{
    default_compile_cache, lang, DockerConfig, DockerExecutor, Engine, ExecutionRequest,
    ExecutionResult, Executor, NativeExecutor, PolicyConfig, TracingMonitor,
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
        let mut policy = match policy_json {
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
        if runtime.is_some() && backend != "docker" {
            return Err(BackendUnavailable::new_err(
                "`runtime` is an option of the docker backend",
            ));
        }
        let executor: Arc<dyn Executor> = match backend {
            "native" => Arc::new(
                py.allow_threads(NativeExecutor::new)
                    .map_err(|e| BackendUnavailable::new_err(e.to_string()))?,
            ),
            "docker" => {
                let config = DockerConfig {
                    runtime: runtime.unwrap_or("runc").to_string(),
                    pool_size,
                    ..DockerConfig::default()
                };
                // The Debian image's Node.js has no permission model.
                policy.guards.node_permissions = false;
                let exec = py
                    .allow_threads(|| runtime_rt.block_on(DockerExecutor::new(config)))
                    .map_err(|e| BackendUnavailable::new_err(e.to_string()))?;
                Arc::new(exec)
            }
            other => {
                return Err(BackendUnavailable::new_err(format!(
                    "unknown backend `{other}`; use \"native\" or \"docker\""
                )))
            }
        };
        let mut builder = Engine::builder()
            .executor(executor)
            .policy(Arc::new(policy))
            .languages(lang::installed())
            .monitor(Arc::new(TracingMonitor));
        if let Some(n) = max_concurrency {
            builder = builder.max_concurrency(n);
        }
        if let Some(cache) = default_compile_cache() {
            builder = builder.compile_cache(cache);
        }
        let engine = builder
            .build()
            .map_err(|e| SandboxError::new_err(e.to_string()))?;
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
    fn capabilities(&self) -> String {
        serde_json::to_string(self.engine.executor().capabilities()).unwrap_or_default()
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
fn default_policy() -> String {
    serde_json::to_string(&PolicyConfig::default()).unwrap_or_default()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeEngine>()?;
    m.add_function(wrap_pyfunction!(load_policy, m)?)?;
    m.add_function(wrap_pyfunction!(default_policy, m)?)?;
    m.add("SandboxError", m.py().get_type::<SandboxError>())?;
    m.add("PolicyRejected", m.py().get_type::<PolicyRejected>())?;
    m.add(
        "BackendUnavailable",
        m.py().get_type::<BackendUnavailable>(),
    )?;
    Ok(())
}
