//! The backend roles: an [`Executor`] creates isolated [`Instance`]s.
//!
//! One-shot execution is `create`, `put_files`, `run` (compile), `run` (program), `destroy`.
//! A session keeps the instance and calls `run` many times; file transfer uses `put_files` and
//! `read_files`; streaming uses the sink in [`ProcessIo`].

use async_trait::async_trait;

use crate::capabilities::{BackendKind, Capabilities};
use crate::error::BackendError;
use crate::language::Language;
use crate::outcome::ProcessOutcome;
use crate::spec::{FileEntry, InstanceSpec, ProcessIo, ProcessSpec};

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

    /// Creates one isolated environment.
    async fn create(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, BackendError>;
}

/// One isolated environment with its own writable workspace.
#[async_trait]
pub trait Instance: Send {
    /// Places files in the workspace (never following links out of it).
    async fn put_files(&mut self, files: &[FileEntry]) -> Result<(), BackendError>;

    /// Runs one process tree to completion under `process.limits`.
    async fn run(
        &mut self,
        process: &ProcessSpec,
        io: ProcessIo,
    ) -> Result<ProcessOutcome, BackendError>;

    /// Reads files back from the workspace: regular files only, never through a link; a file
    /// larger than `max_bytes` is an error (callers pass at most
    /// [`MAX_READ_BYTES`](crate::host::MAX_READ_BYTES)).
    async fn read_files(
        &mut self,
        paths: &[String],
        max_bytes: u64,
    ) -> Result<Vec<FileEntry>, BackendError>;

    /// Removes everything the instance holds. Dropping an instance also cleans up.
    async fn destroy(self: Box<Self>) -> Result<(), BackendError>;
}
