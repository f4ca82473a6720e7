//! The backend roles: an [`Executor`] creates isolated [`Instance`]s.
//!
//! One-shot execution is `create`, place files, `run` (compile), `run` (program), `destroy`.
//! A session keeps the instance and runs its kernel in it; files go through [`Instance::files`]
//! (usable while a program runs); streaming uses [`ProcessIo`].

use async_trait::async_trait;

use crate::capabilities::{BackendKind, Capabilities};
use crate::egress::ProxyEndpoint;
use crate::error::BackendError;
use crate::files::SharedFiles;
use crate::language::Language;
use crate::outcome::ProcessOutcome;
use crate::packages::PackageTarget;
use crate::spec::{InstanceSpec, ProcessIo, ProcessSpec};

/// An isolation backend.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// What this backend enforces on this host (probed once). The engine checks a policy's
    /// required layers and runtime against it before `create`; backends do not re-check.
    fn capabilities(&self) -> &Capabilities;

    /// Identifies the environment programs of `language` compile and run in (the toolchain a
    /// compile step would use), for the compile cache key: artifacts built in one environment
    /// are never handed to another.
    fn environment_id(&self, _language: &str) -> String {
        self.kind().as_str().to_string()
    }

    /// Whether programs of `language` can run here. The default — for backends whose sandboxes
    /// see the host's toolchains — is that the host has the language's toolchain; a backend with
    /// an environment of its own (a container image) answers for that environment instead.
    fn check_language(&self, language: &dyn Language) -> Result<(), BackendError> {
        language
            .toolchain()
            .require()
            .map(drop)
            .map_err(|e| BackendError::Unavailable(e.to_string()))
    }

    /// The interpreter packages for `language` must fit: the language's toolchain as programs
    /// here see it (version, binary interface, platform). The default — for backends whose
    /// sandboxes run the host's toolchains — probes the host's toolchain with the language's
    /// probe ([`Language::packages`]); a backend with an environment of its own answers for that
    /// environment instead (a container backend runs the probe in its image). The engine asks
    /// once per language and keeps the answer.
    async fn package_target(&self, language: &dyn Language) -> Result<PackageTarget, BackendError> {
        crate::packages::probe_host(language, &self.environment_id(language.name())).await
    }

    /// Creates one isolated environment.
    async fn create(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, BackendError>;
}

/// One isolated environment with its own writable workspace.
#[async_trait]
pub trait Instance: Send {
    /// The instance's workspace files (a handle that stays usable while a program runs).
    fn files(&self) -> SharedFiles;

    /// Runs one process tree to completion under `process.limits`.
    async fn run(
        &mut self,
        process: &ProcessSpec,
        io: ProcessIo,
    ) -> Result<ProcessOutcome, BackendError>;

    /// Opens the egress proxy's address `addr` inside the instance (before any program runs in
    /// it): a socket listening there that the host holds, or a listener inside whose
    /// connections the backend relays. Connections reach nothing but the engine's proxy.
    /// Backends that can do neither refuse.
    fn listen(&self, _addr: std::net::SocketAddr) -> Result<ProxyEndpoint, BackendError> {
        Err(BackendError::Unavailable(
            "this backend cannot open the proxy inside the sandbox".into(),
        ))
    }

    /// Removes everything the instance holds, or — where the instance's programs are already
    /// gone and what is left is bookkeeping — starts that and returns (the native backend ends
    /// its sandboxes on a thread of its own; an error there is logged). Dropping an instance
    /// also cleans up.
    async fn destroy(self: Box<Self>) -> Result<(), BackendError>;
}
