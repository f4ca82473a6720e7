//! Errors of the core roles.

/// An error from an isolation backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run on this host (missing privilege, kernel feature, daemon).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A layer the policy requires is missing on this host.
    #[error("required isolation layer `{layer}` is not available: {detail}")]
    MissingLayer {
        /// Layer name as in `require`.
        layer: String,
        /// Why it is missing.
        detail: String,
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
    /// Any other backend failure.
    #[error("{0}")]
    Other(String),
}

impl BackendError {
    /// A setup error at `step` from an OS error.
    pub fn setup(step: impl Into<String>, source: std::io::Error) -> Self {
        Self::Setup {
            step: step.into(),
            source,
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
    /// The builder was missing a required part or had an invalid setting.
    #[error("invalid engine configuration: {0}")]
    Config(String),
}
