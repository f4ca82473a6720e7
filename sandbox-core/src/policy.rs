//! The policy role: turns a validated request into a [`SandboxSpec`] or a [`Rejection`].

use crate::capabilities::BackendKind;
use crate::spec::SandboxSpec;
use crate::validate::ValidRequest;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyContext {
    /// Canonical language name.
    pub language: &'static str,
    /// Backend that will run it.
    pub backend: BackendKind,
    /// The caller's tenant, when the host names one (never taken from the request).
    pub tenant: Option<String>,
}

/// A policy: evaluation may only tighten what it allows, never widen it.
pub trait Policy: Send + Sync {
    /// Evaluates a validated request (its limits are already typed and in range; the policy
    /// only compares them with its own).
    fn evaluate(
        &self,
        request: &ValidRequest,
        context: &PolicyContext,
    ) -> Result<SandboxSpec, Rejection>;

    /// A stable fingerprint of the policy itself.
    fn fingerprint(&self) -> String;
}
