//! **vana-sandbox** runs untrusted code — much of it written by AI agents — in real isolation,
//! with one API over pluggable backends.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vana_sandbox::Error> {
//! use vana_sandbox::{Sandbox, Status};
//!
//! let sandbox = Sandbox::native()?;            // namespaces + cgroups, no daemon (needs root)
//! let result = sandbox.run("python", "print(6 * 7)").await?;
//! assert_eq!(result.status, Status::Success);
//! assert_eq!(result.output, "42\n");
//! # Ok(()) }
//! ```
//!
//! The full contract is [`ExecutionRequest`] in, [`ExecutionResult`] out, through an [`Engine`]
//! that validates, applies a [`PolicyConfig`] (a request can only tighten it), bounds concurrency
//! and the queue, and reports to [`Monitor`]s. [`Sandbox::builder`] picks the backend, policy and
//! bounds; [`Engine::builder`] gives full control over every part.
//!
//! Observability ([`monitor`]: a hash-chained audit log, metrics, a threat detector, alerts) is
//! switched on at the builder:
//!
//! ```no_run
//! # async fn demo() -> Result<(), vana_sandbox::Error> {
//! use vana_sandbox::{Metrics, Sandbox};
//!
//! let metrics = Metrics::new();
//! let sandbox = Sandbox::builder()
//!     .audit_log("/var/log/vana-sandbox")                 // JSON lines, hash-chained
//!     .metrics(metrics.clone())                           // read with metrics.snapshot()
//!     .on_finding(|f| eprintln!("[{}] {}", f.severity, f.explanation))
//!     .build()
//!     .await?;
//! sandbox.run("bash", "cat /etc/shadow").await?;          // a finding: credential_paths
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

mod egress;
pub use egress::{proxy_config, ProxyEgress};

pub use vana_sandbox_core::compile_cache::{CacheScope, CompileCache, DirCompileCache};
pub use vana_sandbox_core::{
    fake, host, limits, BackendError, BackendKind, Bytes, Capabilities, CompileReport, Cores,
    Engine, EngineBuilder, EngineError, Event, ExecutionRequest, ExecutionResult, Executor,
    FileSpec, Instance, Language, Languages, Layer, LayerName, LimitKind, Limits, LimitsRequest,
    Monitor, NetworkRequest, OutputChunk, OutputChunks, OutputSink, Phase, Policy, ProcessIo,
    Reporter, ResourceUsage, Runtime, SecurityEvent, SecurityEventKind, Session, SessionEnd,
    SessionFiles, SessionOptions, Status, StreamKind, TracingMonitor, Truncated,
};
pub use vana_sandbox_core::{
    CellException, DisplayData, FileInfo, FileKind, OutputFile, SessionReport, StopSignal,
};
pub use vana_sandbox_core::{
    Ecosystem, InstalledPackage, Mount, MountKind, PackageCacheStatus, PackageError,
    PackageProvider, PackagesReport,
};
pub use vana_sandbox_docker::{image, DockerConfig, DockerExecutor};
pub use vana_sandbox_lang as lang;
pub use vana_sandbox_monitor as monitor;
pub use vana_sandbox_monitor::alert::{Alert, AlertSink, WebhookConfig};
pub use vana_sandbox_monitor::hooks::ConfigKind;
pub use vana_sandbox_monitor::metrics::{Metrics, MetricsSnapshot};
pub use vana_sandbox_monitor::threat::{Finding, RuleSet, Severity};
pub use vana_sandbox_monitor::{Observability, ObservabilityBuilder, ObservabilityError};
pub use vana_sandbox_native::{NativeConfig, NativeExecutor, DEFAULT_UID_BASE, PROGRAM_ID};
pub use vana_sandbox_packages::{DirPackageProvider, ProviderConfig};
pub use vana_sandbox_policy::{
    PackageIndexConfig, PackagesConfig, PolicyConfig, PolicyError, TenantPolicies, NPM_REGISTRY,
    PRESETS, PYPI_INDEX,
};
pub use vana_sandbox_proxy as proxy;
pub use vana_sandbox_seccomp as seccomp;
pub use vana_sandbox_server as server;

/// Errors of the facade's constructors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot run here.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The engine refused the request or configuration.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The policy could not be loaded.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The audit log, metrics, threat detector or alerts could not be started.
    #[error(transparent)]
    Observability(#[from] ObservabilityError),
}

/// Entry points for building an [`Engine`].
#[derive(Debug, Clone, Copy)]
pub struct Sandbox;

impl Sandbox {
    /// A builder: backend (native by default), policy, bounds, monitors, compile cache.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// The native backend with the default policy (the plan's limits), every installed language,
    /// a tracing monitor and the default compile cache.
    pub fn native() -> Result<Engine, Error> {
        Self::native_with_policy(PolicyConfig::default())
    }

    /// The native backend with `policy`.
    pub fn native_with_policy(policy: PolicyConfig) -> Result<Engine, Error> {
        let executor = Arc::new(NativeExecutor::new()?);
        Self::builder().policy(policy).assemble(executor)
    }

    /// A session on the native backend with the default policy: one sandbox across calls
    /// (interpreter state, a workspace). The session keeps its engine alive; for more sessions
    /// on one engine, or another backend or policy, build an [`Engine`] and call
    /// [`Engine::session`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), vana_sandbox::Error> {
    /// let session = vana_sandbox::Sandbox::session(Default::default()).await?;
    /// session.run_code("python", "x = 6 * 7").await?;
    /// let r = session.run_code("python", "x").await?;
    /// assert_eq!(r.results[0].0["text/plain"], "42");
    /// session.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn session(options: SessionOptions) -> Result<Session, Error> {
        Ok(Self::native()?.session(options).await?)
    }

    /// The Docker backend with `policy` (see [`DockerConfig`] for images, runtime and the warm
    /// pool).
    pub async fn docker(config: DockerConfig, policy: PolicyConfig) -> Result<Engine, Error> {
        Self::builder().docker(config).policy(policy).build().await
    }
}

/// Which backend a [`SandboxBuilder`] builds on.
#[derive(Clone, Default)]
pub enum BackendChoice {
    /// The native backend (the default).
    #[default]
    Native,
    /// The Docker backend.
    Docker(DockerConfig),
    /// A backend the host made.
    Custom(Arc<dyn Executor>),
}

/// Builds an [`Engine`] over one backend with every installed language: the one way the CLI,
/// the Python bindings and hosts put an engine together.
///
/// Observability: [`observability`](Self::observability) takes a bundle the host started (and
/// keeps handles on: metrics, audit stats, `shutdown`); the conveniences
/// [`audit_log`](Self::audit_log), [`metrics`](Self::metrics),
/// [`threat_detection`](Self::threat_detection), [`on_finding`](Self::on_finding) and
/// [`alert_sink`](Self::alert_sink) (and [`configure_observability`](Self::configure_observability)
/// for everything else) describe one that [`build`](Self::build) starts and the engine owns. The
/// policy the engine runs under is recorded as a `config_loaded` audit line.
#[derive(Default)]
pub struct SandboxBuilder {
    backend: BackendChoice,
    policy: PolicyConfig,
    policy_source: Option<String>,
    tenant_policies: Vec<(String, PolicyConfig, String)>,
    max_concurrency: Option<usize>,
    max_queue: Option<usize>,
    max_sessions: Option<usize>,
    egress: Option<Arc<dyn vana_sandbox_core::Egress>>,
    monitors: Vec<Arc<dyn Monitor>>,
    compile_cache: Option<Option<Arc<dyn CompileCache>>>,
    packages: Option<Option<Arc<dyn PackageProvider>>>,
    observability: Vec<Observability>,
    observe: ObservabilityBuilder,
}

impl SandboxBuilder {
    /// The backend.
    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.backend = backend;
        self
    }

    /// The Docker backend with `config`.
    pub fn docker(self, config: DockerConfig) -> Self {
        self.backend(BackendChoice::Docker(config))
    }

    /// A backend the host made.
    pub fn executor(self, executor: Arc<dyn Executor>) -> Self {
        self.backend(BackendChoice::Custom(executor))
    }

    /// The policy (default: the plan's limits).
    pub fn policy(mut self, policy: PolicyConfig) -> Self {
        self.policy = policy;
        self
    }

    /// Where the policy came from (a path, `preset:strict`), for the `config_loaded` audit line
    /// (default: `embedded:<policy name>`).
    pub fn policy_source(mut self, source: impl Into<String>) -> Self {
        self.policy_source = Some(source.into());
        self
    }

    /// `tenant`'s requests (`Engine::execute_as`, `session_as`) are judged by `policy` instead
    /// of the default one; `source` names where it came from for the `config_loaded` audit line.
    /// A request still only tightens its tenant's policy.
    pub fn tenant_policy(
        mut self,
        tenant: impl Into<String>,
        policy: PolicyConfig,
        source: impl Into<String>,
    ) -> Self {
        self.tenant_policies
            .push((tenant.into(), policy, source.into()));
        self
    }

    /// Executions running at once (default: the number of CPUs).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n);
        self
    }

    /// Executions waiting for a slot before a request is refused (default: 64 per slot).
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = Some(n);
        self
    }

    /// The egress proxy for runs the policy gives network access (default: [`ProxyEgress`]
    /// with the host's resolver).
    pub fn egress(mut self, egress: Arc<dyn vana_sandbox_core::Egress>) -> Self {
        self.egress = Some(egress);
        self
    }

    /// Sessions open at once (default: 64).
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = Some(n);
        self
    }

    /// Adds a monitor (a tracing monitor is always there).
    pub fn monitor(mut self, monitor: Arc<dyn Monitor>) -> Self {
        self.monitors.push(monitor);
        self
    }

    /// The compile cache (`None`: no cache). Default: [`default_compile_cache`].
    pub fn compile_cache(mut self, cache: Option<Arc<dyn CompileCache>>) -> Self {
        self.compile_cache = Some(cache);
        self
    }

    /// The package provider for requests' `packages` (`None`: requests with packages are
    /// rejected). Default: [`default_package_provider`].
    pub fn packages(mut self, provider: Option<Arc<dyn PackageProvider>>) -> Self {
        self.packages = Some(provider);
        self
    }

    /// Monitors the engine with a bundle the host started
    /// ([`Observability::builder`]); the host keeps clones of it to read metrics, flush or
    /// shut down. The policy is recorded in its audit log when the engine is built.
    pub fn observability(mut self, observability: Observability) -> Self {
        self.observability.push(observability);
        self
    }

    /// An audit log in `dir` (hash-chained JSON lines, see `docs/OBSERVABILITY.md`), started by
    /// [`build`](Self::build). For an HMAC key or other settings use
    /// [`configure_observability`](Self::configure_observability) with
    /// [`ObservabilityBuilder::audit`].
    pub fn audit_log(self, dir: impl Into<PathBuf>) -> Self {
        self.configure_observability(|o| o.audit_log(dir))
    }

    /// Metrics in `metrics` (keep a clone to read it: `snapshot()`, or `render_prometheus()` for
    /// [`Metrics::with_prometheus`]); the audit log, detector and alerts count there too.
    pub fn metrics(self, metrics: Metrics) -> Self {
        self.configure_observability(|o| o.metrics(metrics))
    }

    /// The threat detector with the built-in rules; its findings go to the audit log, the
    /// metrics and the alerts that are on.
    pub fn threat_detection(self) -> Self {
        self.configure_observability(ObservabilityBuilder::threat_detection)
    }

    /// Calls `f` with every finding of the threat detector (which this turns on), on the
    /// detector's thread: return quickly.
    pub fn on_finding(self, f: impl Fn(&Finding) + Send + Sync + 'static) -> Self {
        self.configure_observability(|o| o.on_finding(f))
    }

    /// Sends alerts (findings and thresholds, deduplicated and rate-limited) to `sink`.
    pub fn alert_sink(self, sink: Arc<dyn AlertSink>) -> Self {
        self.configure_observability(|o| o.alert_sink(sink))
    }

    /// Anything else of the bundle that [`build`](Self::build) starts: an HMAC key, a rules
    /// file, a webhook, thresholds.
    pub fn configure_observability(
        mut self,
        f: impl FnOnce(ObservabilityBuilder) -> ObservabilityBuilder,
    ) -> Self {
        self.observe = f(std::mem::take(&mut self.observe));
        self
    }

    /// Connects to the backend and builds the engine.
    pub async fn build(self) -> Result<Engine, Error> {
        let executor: Arc<dyn Executor> = match &self.backend {
            BackendChoice::Native => Arc::new(NativeExecutor::new()?),
            BackendChoice::Docker(config) => Arc::new(DockerExecutor::new(config.clone()).await?),
            BackendChoice::Custom(e) => e.clone(),
        };
        self.assemble(executor)
    }

    fn assemble(mut self, executor: Arc<dyn Executor>) -> Result<Engine, Error> {
        let docker = executor.kind() == BackendKind::Docker;
        let adjust = |p: &mut PolicyConfig| -> Result<(), PolicyError> {
            if docker {
                // The Debian image's Node.js (18) has no permission model.
                p.guards.node_permissions = false;
            }
            p.check()
        };
        adjust(&mut self.policy)?;
        for (_, p, _) in &mut self.tenant_policies {
            adjust(p)?;
        }
        let mut bundles = self.observability;
        if !self.observe.is_empty() {
            bundles.push(self.observe.start()?);
        }
        // Each policy as it will run (after the backend's adjustments): what results name.
        let mut loaded = vec![(
            self.policy_source
                .unwrap_or_else(|| format!("embedded:{}", self.policy.name)),
            Policy::fingerprint(&self.policy),
        )];
        let policy: Arc<dyn Policy> = if self.tenant_policies.is_empty() {
            Arc::new(self.policy)
        } else {
            let mut set = TenantPolicies::new(self.policy);
            for (tenant, p, source) in self.tenant_policies {
                loaded.push((format!("tenant:{tenant}:{source}"), Policy::fingerprint(&p)));
                set = set.tenant(tenant, p);
            }
            Arc::new(set)
        };
        let mut builder = Engine::builder()
            .executor(executor)
            .policy(policy)
            .languages(lang::installed())
            .monitor(Arc::new(TracingMonitor))
            .egress(
                self.egress
                    .take()
                    .unwrap_or_else(|| Arc::new(ProxyEgress::new())),
            );
        for m in self.monitors {
            builder = builder.monitor(m);
        }
        for b in bundles {
            for (source, fingerprint) in &loaded {
                b.config_loaded(ConfigKind::Policy, source, fingerprint);
            }
            builder = builder.monitor(Arc::new(b));
        }
        if let Some(cache) = self.compile_cache.unwrap_or_else(default_compile_cache) {
            builder = builder.compile_cache(cache);
        }
        if let Some(provider) = self.packages.unwrap_or_else(default_package_provider) {
            builder = builder.packages(provider);
        }
        if let Some(n) = self.max_concurrency {
            builder = builder.max_concurrency(n);
        }
        if let Some(n) = self.max_queue {
            builder = builder.max_queue(n);
        }
        if let Some(n) = self.max_sessions {
            builder = builder.max_sessions(n);
        }
        Ok(builder.build()?)
    }
}

/// The compile cache at its default place (`/var/cache/vana-sandbox/compile`, 512 MiB), or none
/// when that directory cannot be created.
pub fn default_compile_cache() -> Option<Arc<dyn CompileCache>> {
    match DirCompileCache::new(
        DirCompileCache::DEFAULT_DIR,
        DirCompileCache::DEFAULT_MAX_BYTES,
    ) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!("compile cache disabled: {e}");
            None
        }
    }
}

/// The variable that names the package cache directory, over [`default_package_dir`]'s choice.
pub const PACKAGE_DIR_VAR: &str = "VANA_SANDBOX_PACKAGE_DIR";

/// Where the package cache goes by default: `$VANA_SANDBOX_PACKAGE_DIR` when set; else
/// [`ProviderConfig::DEFAULT_DIR`] as root; rootless, `$XDG_CACHE_HOME/vana-sandbox/packages`
/// (or `~/.cache/…`), a directory the caller owns (the sandbox's setup binds it by path).
pub fn default_package_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os(PACKAGE_DIR_VAR).filter(|d| !d.is_empty()) {
        return dir.into();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return ProviderConfig::DEFAULT_DIR.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vana-sandbox").join("packages")
}

/// The package provider at [`default_package_dir`] with its defaults (pip and npm of the host,
/// 4 GiB), or none when that directory cannot be created.
pub fn default_package_provider() -> Option<Arc<dyn PackageProvider>> {
    match DirPackageProvider::new(ProviderConfig::in_dir(default_package_dir())) {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            tracing::warn!("packages disabled: {e}");
            None
        }
    }
}
