//! The policy role: turns a request into a [`SandboxSpec`] or a [`Rejection`].

use crate::request::ExecutionRequest;
use crate::spec::SandboxSpec;

/// Why a request was refused. The message is shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// A clear, human-readable reason.
    pub message: String,
}

impl Rejection {
    /// A rejection with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Facts the policy may use besides the request.
#[derive(Debug, Clone, Default)]
pub struct PolicyContext {
    /// Canonical language name.
    pub language: String,
    /// Backend that will run it.
    pub backend: String,
    /// The caller's tenant, when the host names one (never taken from the request).
    pub tenant: Option<String>,
}

/// A policy: evaluation may only tighten what it allows, never widen it.
pub trait Policy: Send + Sync {
    /// Evaluates a (validated) request.
    fn evaluate(
        &self,
        request: &ExecutionRequest,
        context: &PolicyContext,
    ) -> Result<SandboxSpec, Rejection>;

    /// A stable fingerprint of the policy itself.
    fn fingerprint(&self) -> String;
}
