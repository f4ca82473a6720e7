//! Errors: of the configuration, of starting and running the server, and the answers a request
//! can get instead of a result ([`ApiError`], each with its HTTP status and a stable `code`).

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use vana_sandbox_core::{BackendError, EngineError};
use vana_sandbox_policy::PolicyError;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for the configuration.
    #[error("server configuration: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("server configuration: {0}")]
    Invalid(String),
    /// A listening address could not be parsed.
    #[error("listen address {0}")]
    Listen(String),
    /// A tenant's policy could not be loaded.
    #[error("tenant `{tenant}`: {source}")]
    Policy {
        /// The tenant.
        tenant: String,
        /// Why.
        #[source]
        source: PolicyError,
    },
}

/// An error of starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another server answers on the Unix socket.
    #[error("{} is in use by another server", .0.display())]
    SocketInUse(PathBuf),
    /// Something at the socket's path is not a socket (it is never removed).
    #[error("{} exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// Unauthenticated access was asked for where it is not allowed.
    #[error("{0}")]
    Insecure(String),
}

/// What a request gets instead of its answer: an HTTP status, a stable `code`, a message, and
/// for back-pressure a `Retry-After`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No API key was sent.
    #[error("an API key is required: send `Authorization: Bearer <key>`")]
    MissingKey,
    /// The key is not known.
    #[error("the API key is not valid")]
    InvalidKey,
    /// The key is known and has expired.
    #[error("the API key has expired")]
    ExpiredKey,
    /// The bearer token of `/metrics` is missing or wrong.
    #[error("a valid metrics token is required")]
    MetricsToken,
    /// No such route, or no such session for this tenant (whether it exists for another one is
    /// never told).
    #[error("not found")]
    NotFound,
    /// The route exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request could not be read (malformed JSON, a bad path, a bad query).
    #[error("{0}")]
    BadRequest(String),
    /// The body (or a part of it) is larger than the server takes.
    #[error("{what} larger than {limit} bytes")]
    TooLarge {
        /// What was too large: `request body`, `code`, `files`.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// A tenant quota refused the request.
    #[error("quota `{quota}` exceeded: {detail}")]
    Quota {
        /// Which quota (`concurrent_runs`, `sessions`, `runs_per_minute`,
        /// `cpu_seconds_per_hour`).
        quota: &'static str,
        /// Its numbers.
        detail: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The engine's queue is full.
    #[error("{source}")]
    QueueFull {
        /// The engine's error.
        source: EngineError,
        /// When to try again.
        retry_after: Duration,
    },
    /// The engine's session bound is reached.
    #[error("{source}")]
    SessionsFull {
        /// The engine's error.
        source: EngineError,
        /// When to try again.
        retry_after: Duration,
    },
    /// A session or a file request was refused (policy, validation, a path out of the
    /// workspace).
    #[error("{0}")]
    Refused(String),
    /// A file does not exist in the session's workspace.
    #[error("{0}")]
    FileNotFound(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The sandbox failed.
    #[error("{0}")]
    Sandbox(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingKey | ApiError::InvalidKey | ApiError::ExpiredKey => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::MetricsToken => StatusCode::UNAUTHORIZED,
            ApiError::NotFound | ApiError::FileNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Quota { .. } | ApiError::QueueFull { .. } | ApiError::SessionsFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Sandbox(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingKey => "missing_api_key",
            ApiError::InvalidKey => "invalid_api_key",
            ApiError::ExpiredKey => "expired_api_key",
            ApiError::MetricsToken => "invalid_metrics_token",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::Quota { .. } => "quota_exceeded",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::SessionsFull { .. } => "sessions_full",
            ApiError::Refused(_) => "rejected",
            ApiError::FileNotFound(_) => "file_not_found",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Sandbox(_) => "sandbox_error",
        }
    }

    /// Seconds for `Retry-After`, for back-pressure answers.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Quota { retry_after, .. }
            | ApiError::QueueFull { retry_after, .. }
            | ApiError::SessionsFull { retry_after, .. } => {
                // Whole seconds, rounded up, at least one.
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            ApiError::ShuttingDown => Some(5),
            _ => None,
        }
    }

    /// The answer for an engine error (`retry_after` for back-pressure).
    pub fn from_engine(e: EngineError, retry_after: Duration) -> Self {
        match e {
            EngineError::QueueFull { .. } => ApiError::QueueFull {
                source: e,
                retry_after,
            },
            EngineError::SessionsFull { .. } => ApiError::SessionsFull {
                source: e,
                retry_after,
            },
            EngineError::ShuttingDown => ApiError::ShuttingDown,
            EngineError::SessionClosed => ApiError::NotFound,
            EngineError::Rejected(m) => ApiError::Refused(m),
            EngineError::Session(b) => ApiError::from_backend(b),
            EngineError::Config(m) => ApiError::Sandbox(m),
            EngineError::Packages(m) => ApiError::Sandbox(format!("packages: {m}")),
        }
    }

    /// The answer for a backend error of a session's files or sandbox.
    pub fn from_backend(e: BackendError) -> Self {
        match e {
            BackendError::File { path, reason } => {
                let lower = reason.to_ascii_lowercase();
                if lower.contains("no such file") || lower.contains("not found") {
                    ApiError::FileNotFound(format!("workspace file `{path}`: {reason}"))
                } else {
                    ApiError::Refused(format!("workspace file `{path}`: {reason}"))
                }
            }
            BackendError::InstanceGone(_) => ApiError::NotFound,
            other => ApiError::Sandbox(other.to_string()),
        }
    }

    /// The JSON body: `{"error": {"code": …, "message": …}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } })
    }
}
