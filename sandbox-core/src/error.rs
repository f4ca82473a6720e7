//! Errors of the core roles. Every variant that wraps a failure keeps it as its `source`.

use crate::capabilities::{BackendKind, LayerName, Runtime};

/// Any error, boxed, for a backend's own error types (cgroup, Docker, …).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from an isolation backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run on this host (missing privilege, kernel feature, daemon).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A layer the policy requires is missing on this host.
    #[error("required isolation layer `{layer}` is not available: {detail}")]
    MissingLayer {
        /// The layer.
        layer: LayerName,
        /// Why it is missing.
        detail: String,
    },
    /// The policy names a container runtime this backend does not have.
    #[error("runtime `{runtime}` is not available on the {backend} backend")]
    MissingRuntime {
        /// The runtime asked for.
        runtime: Runtime,
        /// The backend.
        backend: BackendKind,
    },
    /// Setting up the sandbox failed at a named step.
    #[error("sandbox setup failed at {step}: {source}")]
    Setup {
        /// The step that failed.
        step: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Placing or reading files failed.
    #[error("workspace file `{path}`: {reason}")]
    File {
        /// The relative path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The process to run cannot be expressed (an empty argv, a NUL byte in a string).
    #[error("invalid process: {0}")]
    InvalidProcess(&'static str),
    /// The instance was destroyed or killed by an earlier step.
    #[error("the instance is gone: {0}")]
    InstanceGone(&'static str),
    /// A failure of the backend's own machinery (cgroups, the container engine, a supervisor
    /// thread), with what was being done.
    #[error("{context}: {source}")]
    Backend {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl BackendError {
    /// A setup error at `step` from an OS error.
    pub fn setup(step: impl Into<String>, source: std::io::Error) -> Self {
        Self::Setup {
            step: step.into(),
            source,
        }
    }

    /// Wraps a backend-specific error with what was being done.
    pub fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// An error of the Engine itself (as opposed to a run's result).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The queue of waiting executions is full; the request was not accepted.
    #[error("execution queue is full ({max_queue} waiting); try again later")]
    QueueFull {
        /// The configured queue bound.
        max_queue: usize,
    },
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The builder was missing a required part or had an invalid setting.
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// As many sessions as the engine allows are open.
    #[error("too many open sessions ({max}); close one and try again")]
    SessionsFull {
        /// The configured bound.
        max: usize,
    },
    /// A session (or a call in it) was refused by validation or policy.
    #[error("refused: {0}")]
    Rejected(String),
    /// The session's sandbox could not be set up or is gone.
    #[error("session: {0}")]
    Session(#[from] BackendError),
    /// The session was closed.
    #[error("the session is closed")]
    SessionClosed,
    /// Packages could not be prepared for a reason of the host's (an unreachable index, a
    /// failed installer, file work on the host).
    #[error("packages: {0}")]
    Packages(String),
}
