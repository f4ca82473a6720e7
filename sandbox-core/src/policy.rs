//! The policy role: turns a validated request into a [`SandboxSpec`] or a [`Rejection`].

use std::time::Duration;

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

    /// How long sessions may live.
    fn sessions(&self) -> SessionPolicy {
        SessionPolicy::default()
    }
}

/// How long sessions may live: closed after `idle_timeout` without a call, and at
/// `max_lifetime` in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Closed after this long without a call.
    pub idle_timeout: Duration,
    /// Closed this long after opening.
    pub max_lifetime: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
        }
    }
}
