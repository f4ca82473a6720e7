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
//! and the queue, and reports to [`Monitor`]s.

use std::sync::Arc;

pub use vana_sandbox_core::compile_cache::{CacheScope, CompileCache, DirCompileCache};
pub use vana_sandbox_core::{
    units, BackendError, Capabilities, CompileReport, Engine, EngineBuilder, EngineError, Event,
    ExecutionRequest, ExecutionResult, Executor, FileSpec, Language, Languages, Layer,
    LimitsRequest, Monitor, NetworkRequest, OutputSink, Phase, Policy, ProcessIo, ResourceUsage,
    SecurityEvent, Status, StreamKind, TracingMonitor, Truncated,
};
pub use vana_sandbox_docker::{image, DockerConfig, DockerExecutor};
pub use vana_sandbox_lang as lang;
pub use vana_sandbox_native::{NativeConfig, NativeExecutor, DEFAULT_UID_BASE};
pub use vana_sandbox_policy::{PolicyConfig, PolicyError, PRESETS};

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
}

/// Entry points for building an [`Engine`].
#[derive(Debug, Clone, Copy)]
pub struct Sandbox;

impl Sandbox {
    /// A builder for full control (backend, policy, languages, monitors, bounds).
    pub fn builder() -> EngineBuilder {
        Engine::builder()
    }

    /// The native backend with the default policy (the plan's limits), every installed language
    /// and a tracing monitor.
    pub fn native() -> Result<Engine, Error> {
        Self::native_with_policy(PolicyConfig::default())
    }

    /// The native backend with `policy`.
    pub fn native_with_policy(policy: PolicyConfig) -> Result<Engine, Error> {
        Self::with_executor(Arc::new(NativeExecutor::new()?), policy)
    }

    /// The Docker backend with `policy` (see [`DockerConfig`] for images, runtime and the warm
    /// pool). Node's permission-model guard is turned off: the Debian image's Node.js (18) has
    /// no permission model.
    pub async fn docker(config: DockerConfig, mut policy: PolicyConfig) -> Result<Engine, Error> {
        policy.guards.node_permissions = false;
        Self::with_executor(Arc::new(DockerExecutor::new(config).await?), policy)
    }

    /// Any backend with `policy`, every installed language, a tracing monitor and the default
    /// compile cache.
    pub fn with_executor(
        executor: Arc<dyn Executor>,
        policy: PolicyConfig,
    ) -> Result<Engine, Error> {
        let mut builder = Engine::builder()
            .executor(executor)
            .policy(Arc::new(policy))
            .languages(lang::installed())
            .monitor(Arc::new(TracingMonitor));
        if let Some(cache) = default_compile_cache() {
            builder = builder.compile_cache(cache);
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
