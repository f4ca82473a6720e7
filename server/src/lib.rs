//! The server of vana-sandbox (`vana-sandbox serve`): the library's contract over HTTP/1.1, on a
//! Unix socket by default or on TCP (optionally TLS), for many agents in many processes.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/executions` | an [`ExecutionRequest`](vana_sandbox_core::ExecutionRequest) in, its [`ExecutionResult`](vana_sandbox_core::ExecutionResult) out (`?stream=true`: server-sent events) |
//! | `POST /v1/sessions` | opens a session ([`SessionOptions`](vana_sandbox_core::SessionOptions), or no body): `201 {"id": …}` |
//! | `GET /v1/sessions` | the tenant's open sessions |
//! | `GET`, `DELETE /v1/sessions/{id}` | a session; closes it |
//! | `POST /v1/sessions/{id}/run` | runs a cell (`?stream=true` too) |
//! | `POST /v1/sessions/{id}/kill` | stops the running cell |
//! | `GET /v1/sessions/{id}/files[?dir=]` | lists the workspace |
//! | `PUT`, `GET`, `DELETE /v1/sessions/{id}/files/{path}` | writes, reads, removes a file |
//! | `GET`, `PUT /v1/sessions/{id}/archive[?dir=]` | a directory as tar, out or in |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz`, `GET /readyz` | alive; ready (not shutting down, every policy's required layers hold, the last test run succeeded) |
//!
//! Every `/v1` request carries an API key (`Authorization: Bearer …`) that leads to a tenant
//! ([`Tenants`]): its policy judges the request (which can only tighten it), its quotas bound it,
//! and its name is in every audit line and metric of the run. Errors are JSON
//! (`{"error": {"code", "message"}}`) with a status: 401 for a missing, unknown or expired key;
//! 404 for another tenant's session exactly as for one that never existed; 413 for a body or code
//! over the limits (before the body is read when its length is declared); 429 with
//! `Retry-After` for a full queue, full session table or a quota.
//!
//! ```no_run
//! # async fn demo(engine: vana_sandbox_core::Engine) -> Result<(), vana_sandbox_server::ServerError> {
//! use vana_sandbox_server::{Listen, Server, ServerSettings};
//!
//! let settings = ServerSettings {
//!     listen: Listen::parse("unix:/run/vana.sock")?,
//!     ..ServerSettings::default()
//! };
//! let server = Server::builder(engine).settings(settings).bind().await?;
//! let report = server.run(vana_sandbox_server::shutdown_signal()).await;
//! eprintln!("{report:?}");
//! # Ok(()) }
//! ```

mod api;
pub mod body;
pub mod config;
mod error;
mod listen;
mod quota;
mod sessions;
mod tenants;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vana_sandbox_core::{Engine, LayerName, Runtime};
use vana_sandbox_monitor::metrics::Metrics;

pub use config::{
    KeyConfig, Listen, Quotas, ServerConfig, ServerSettings, TenantConfig, TenantPolicy,
};
pub use error::{ApiError, ConfigError, ServerError};
pub use listen::ShutdownReport;
pub use tenants::{generate_key, hash_key, Tenant, Tenants, LOCAL_TENANT};

/// Builds a [`Server`] over an engine.
pub struct ServerBuilder {
    engine: Engine,
    settings: ServerSettings,
    tenants: Option<Tenants>,
    metrics: Option<Metrics>,
    requirements: Vec<api::Requirement>,
}

impl ServerBuilder {
    /// Listening, limits and timeouts (default: [`ServerSettings::default`]).
    pub fn settings(mut self, settings: ServerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The tenants and their keys (default: none, which a Unix socket accepts as
    /// [`LOCAL_TENANT`] and TCP refuses).
    pub fn tenants(mut self, tenants: Tenants) -> Self {
        self.tenants = Some(tenants);
        self
    }

    /// The metrics registry `GET /metrics` renders (it must render Prometheus text:
    /// `Metrics::with_prometheus`); the server records its own series there too.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A policy's required layers and runtime, held against the backend by `/readyz`
    /// (`label` names the policy in the reasons).
    pub fn require(
        mut self,
        label: impl Into<String>,
        layers: Vec<LayerName>,
        runtime: Option<Runtime>,
    ) -> Self {
        self.requirements.push(api::Requirement {
            label: label.into(),
            layers,
            runtime,
        });
        self
    }

    /// Binds the listening address.
    pub async fn bind(self) -> Result<Server, ServerError> {
        self.settings.check()?;
        let tenants = self.tenants.unwrap_or_else(Tenants::anonymous);
        let tcp = matches!(self.settings.listen, Listen::Tcp(_));
        if tenants.is_anonymous() && tcp {
            return Err(ServerError::Insecure(
                "a TCP listener needs API keys: name tenants and their key hashes in the configuration ([[tenant]])".into(),
            ));
        }
        let tls = match (&self.settings.tls_cert, &self.settings.tls_key) {
            (Some(c), Some(k)) => Some(listen::tls_acceptor(c, k)?),
            _ => None,
        };
        let metrics_token =
            api::metrics_token(&self.settings).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let (listener, local) = listen::Listener::bind(
            &self.settings.listen,
            tls.clone(),
            self.settings.socket_mode,
        )
        .await?;
        let state = Arc::new(api::State {
            engine: self.engine,
            settings: self.settings,
            tenants,
            sessions: sessions::Registry::default(),
            metrics: self.metrics,
            requirements: self.requirements,
            metrics_token,
            draining: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            probe: std::sync::Mutex::new(api::Probe::Pending),
        });
        Ok(Server {
            state,
            listener,
            local,
            tls: tls.is_some(),
        })
    }
}

/// A bound server; [`run`](Self::run) serves until shutdown.
pub struct Server {
    state: Arc<api::State>,
    listener: listen::Listener,
    local: Listen,
    tls: bool,
}

impl Server {
    /// A builder over `engine` (built with the tenants' policies: see `vana-sandbox serve`).
    pub fn builder(engine: Engine) -> ServerBuilder {
        ServerBuilder {
            engine,
            settings: ServerSettings::default(),
            tenants: None,
            metrics: None,
            requirements: Vec::new(),
        }
    }

    /// The address it listens on (with the port the system chose for `tcp:…:0`).
    pub fn local_addr(&self) -> &Listen {
        &self.local
    }

    /// Whether TCP connections speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: stops accepting (a Unix
    /// socket's file is removed), refuses new work (503) and reports not ready, lets running
    /// requests and streams finish within the grace (`shutdown_grace_secs`), kills what is
    /// left (a request gets 503, a stream an `error` event), closes every session and waits
    /// for the engine to hold no slot.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> ShutdownReport {
        let state = self.state.clone();
        // Sessions the engine closed on its own give their quota places back.
        let sweeper = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    state.sessions.sweep();
                }
            }
        });
        let interval = state.settings.probe_interval_secs;
        let probe = if interval > 0.0 {
            Some(tokio::spawn(api::probe_loop(
                state.clone(),
                std::time::Duration::from_secs_f64(interval),
            )))
        } else {
            *state.probe.lock().unwrap_or_else(|e| e.into_inner()) = api::Probe::Off;
            None
        };
        let report = listen::serve(self.listener, state, shutdown).await;
        sweeper.abort();
        if let Some(p) = probe {
            p.abort();
        }
        report
    }

    /// Sessions the server holds now.
    pub fn sessions(&self) -> usize {
        self.state.sessions.len()
    }
}

/// Resolves on SIGTERM or SIGINT (ctrl-c): what a server's `run` usually waits for.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}
