//! A container's workspace files, through `tar` and `find` run inside the container as the
//! sandbox user (the engine's archive endpoint cannot see into a tmpfs mounted in the
//! container): the same confinement as the program has, and paths checked before they go in.

use std::sync::Arc;

use async_trait::async_trait;
use vana_sandbox_core::{BackendError, FileEntry, FileInfo, FileKind, Files};

use crate::{exec, Shared};

/// The workspace of one container.
pub(crate) struct DockerFiles {
    pub shared: Arc<Shared>,
    /// The container (empty once destroyed: every call then fails).
    pub id: String,
}

fn check(path: &str) -> Result<(), BackendError> {
    vana_sandbox_core::validate::check_relative_path(path).map_err(|m| BackendError::File {
        path: path.to_string(),
        reason: m,
    })
}

impl DockerFiles {
    fn id(&self) -> Result<&str, BackendError> {
        if self.id.is_empty() {
            return Err(BackendError::InstanceGone("already destroyed"));
        }
        Ok(&self.id)
    }
}

#[async_trait]
impl Files for DockerFiles {
    async fn put(&self, files: &[FileEntry]) -> Result<(), BackendError> {
        let id = self.id()?;
        let tar = crate::tarball::pack(files, self.shared.config.uid)?;
        let (code, _, err) = exec::run_plain(
            &self.shared,
            id,
            &["tar", "-x", "-C", "/workspace", "-f", "-"],
            tar,
            1 << 20,
        )
        .await?;
        if code != 0 {
            let reason = String::from_utf8_lossy(&err).trim().to_string();
            let reason = if reason.contains("No space left") {
                "the files exceed the disk limit".to_string()
            } else {
                reason
            };
            return Err(BackendError::File {
                path: files.first().map(|f| f.path.clone()).unwrap_or_default(),
                reason,
            });
        }
        Ok(())
    }

    async fn read(&self, paths: &[String], max_bytes: u64) -> Result<Vec<FileEntry>, BackendError> {
        let max_bytes = max_bytes.min(vana_sandbox_core::host::MAX_READ_BYTES);
        let id = self.id()?;
        let mut out = Vec::new();
        for p in paths {
            check(p)?;
            // tar stores a symlink as a link (never its target); unpack_one accepts regular files only.
            let argv = ["tar", "-c", "-C", "/workspace", "-f", "-", "--", p.as_str()];
            let (code, tar, err) =
                exec::run_plain(&self.shared, id, &argv, Vec::new(), max_bytes + (1 << 20)).await?;
            if code != 0 {
                return Err(BackendError::File {
                    path: p.clone(),
                    reason: String::from_utf8_lossy(&err).trim().to_string(),
                });
            }
            out.push(crate::tarball::unpack_one(p, &tar, max_bytes)?);
        }
        Ok(out)
    }

    async fn list(&self, dir: &str, max_entries: usize) -> Result<Vec<FileInfo>, BackendError> {
        if !dir.is_empty() {
            check(dir)?;
        }
        let id = self.id()?;
        let root = format!("/workspace/{}", dir.trim_end_matches('/'));
        // NUL-separated records: type, apparent size, path below `root` (names may hold
        // newlines). `-P`: links are listed, never followed.
        let argv = [
            "find",
            "-P",
            root.as_str(),
            "-mindepth",
            "1",
            "-printf",
            "%y %s %P\\0",
        ];
        let cap = (max_entries as u64 + 1) * 4200;
        let (code, listing, err) =
            exec::run_plain(&self.shared, id, &argv, Vec::new(), cap).await?;
        if code != 0 {
            return Err(BackendError::File {
                path: dir.to_string(),
                reason: String::from_utf8_lossy(&err).trim().to_string(),
            });
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        let mut out = Vec::new();
        for rec in listing.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let rec = String::from_utf8_lossy(rec);
            let mut parts = rec.splitn(3, ' ');
            let (Some(t), Some(size), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let kind = match t {
                "f" => FileKind::File,
                "d" => FileKind::Dir,
                "l" => FileKind::Symlink,
                _ => FileKind::Other,
            };
            if out.len() >= max_entries {
                return Err(BackendError::File {
                    path: dir.to_string(),
                    reason: format!("more than {max_entries} entries"),
                });
            }
            out.push(FileInfo {
                path: format!("{prefix}{path}"),
                kind,
                size: if kind == FileKind::File {
                    size.parse().unwrap_or(0)
                } else {
                    0
                },
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn remove(&self, path: &str) -> Result<(), BackendError> {
        check(path)?;
        let id = self.id()?;
        let target = format!("/workspace/{path}");
        let (code, _, err) = exec::run_plain(
            &self.shared,
            id,
            &["rm", "-rf", "--", target.as_str()],
            Vec::new(),
            1 << 16,
        )
        .await?;
        if code != 0 {
            return Err(BackendError::File {
                path: path.to_string(),
                reason: String::from_utf8_lossy(&err).trim().to_string(),
            });
        }
        Ok(())
    }
}
