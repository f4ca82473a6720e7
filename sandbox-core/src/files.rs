//! The files of an instance's workspace, as a mechanism of its own: usable while a program runs
//! (a session's kernel), with one set of rules on every backend — paths relative to the
//! workspace, never through a link, regular files and directories only, sizes capped.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::BackendError;
use crate::spec::FileEntry;

/// What a workspace entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (listed, never followed).
    Symlink,
    /// A FIFO, socket or device node (listed, never read).
    Other,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Path relative to the workspace.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// Apparent size in bytes (a sparse file counts by what it claims).
    pub size: u64,
}

/// Most entries one listing returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// The workspace of one instance.
#[async_trait]
pub trait Files: Send + Sync {
    /// Places files (creating parent directories), never following links out of the workspace.
    async fn put(&self, files: &[FileEntry]) -> Result<(), BackendError>;

    /// Reads regular files back, never through a link; a file larger than `max_bytes` is an
    /// error (callers pass at most [`MAX_READ_BYTES`](crate::host::MAX_READ_BYTES)).
    async fn read(&self, paths: &[String], max_bytes: u64) -> Result<Vec<FileEntry>, BackendError>;

    /// Lists `dir` (`""`: the workspace) recursively, depth first, at most `max_entries`
    /// entries (an error past it); links are listed, not followed.
    async fn list(&self, dir: &str, max_entries: usize) -> Result<Vec<FileInfo>, BackendError>;

    /// Removes a file, a link or a directory with everything in it.
    async fn remove(&self, path: &str) -> Result<(), BackendError>;
}

/// Shared handle to an instance's files.
pub type SharedFiles = Arc<dyn Files>;
