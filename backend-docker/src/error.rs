//! Errors of the Docker backend.

use vana_sandbox_core::BackendError;

/// A Docker backend failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// An Engine API call failed.
    #[error("docker {op}: {source}")]
    Api {
        /// The operation.
        op: &'static str,
        /// The client error.
        #[source]
        source: bollard::errors::Error,
    },
    /// Building the runtime image failed.
    #[error("image build: {0}")]
    Image(String),
    /// The conversation with a container's init failed.
    #[error("the container's init: {0}")]
    Protocol(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl DockerError {
    pub(crate) fn api(op: &'static str) -> impl FnOnce(bollard::errors::Error) -> Self {
        move |source| Self::Api { op, source }
    }
}

impl From<DockerError> for BackendError {
    fn from(e: DockerError) -> Self {
        BackendError::backend("the Docker backend", e)
    }
}
