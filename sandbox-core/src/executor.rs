//! The backend roles: an [`Executor`] creates isolated [`Instance`]s.
//!
//! One-shot execution is `create`, `put_files`, `run` (compile), `run` (program), `destroy`.
//! A session keeps the instance and calls `run` many times; file transfer uses `put_files` and
//! `read_files`; streaming uses the sink in [`ProcessIo`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::BackendError;
use crate::spec::{FileEntry, InstanceSpec, ProcessIo, ProcessOutcome, ProcessSpec};

/// One isolation layer and whether this host enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Name as used in a policy's `require` (e.g. `pid_namespace`, `cgroup_memory`).
    pub name: String,
    /// Whether the backend enforces it on this host.
    pub available: bool,
    /// Details (mechanism, version, or why it is missing).
    pub detail: String,
}

/// What a backend can enforce on this host, probed once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Backend name.
    pub backend: String,
    /// Every layer the backend knows about.
    pub layers: Vec<Layer>,
}

impl Capabilities {
    /// Looks up a layer by name.
    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Checks that every required layer is available.
    pub fn check_required(&self, require: &[String]) -> Result<(), BackendError> {
        for name in require {
            match self.layer(name) {
                Some(l) if l.available => {}
                Some(l) => {
                    return Err(BackendError::MissingLayer {
                        layer: name.clone(),
                        detail: l.detail.clone(),
                    })
                }
                None => {
                    return Err(BackendError::MissingLayer {
                        layer: name.clone(),
                        detail: format!("the {} backend does not know this layer", self.backend),
                    })
                }
            }
        }
        Ok(())
    }
}

/// An isolation backend.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Short name (`native`, `docker`).
    fn name(&self) -> &'static str;

    /// What this backend enforces on this host.
    fn capabilities(&self) -> &Capabilities;

    /// Identifies the environment programs of `language` compile and run in (the toolchain a
    /// compile step would use), for the compile cache key: artifacts built in one environment
    /// are never handed to another.
    fn environment_id(&self, _language: &str) -> String {
        self.name().to_string()
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

    /// Reads files back from the workspace.
    async fn read_files(&mut self, paths: &[String]) -> Result<Vec<FileEntry>, BackendError>;

    /// Bytes currently used in the workspace and /tmp.
    async fn disk_usage(&mut self) -> Result<u64, BackendError>;

    /// Removes everything the instance holds. Dropping an instance also cleans up.
    async fn destroy(self: Box<Self>) -> Result<(), BackendError>;
}
