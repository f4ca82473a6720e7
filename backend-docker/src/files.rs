//! A container's workspace files: small ones placed and read by the container's init itself
//! (the serve protocol's `Put` and `Get`, in a child of init that is the sandbox user and
//! follows no link), the rest through `tar`, `find` and `rm` run by init as the sandbox user
//! (the engine's archive endpoint cannot see into a tmpfs mounted in the container): the same
//! confinement as the program has, and paths checked before they go in.
//! Files placed before any step wait on the host until a container exists. The helpers run
//! beside whatever runs (a session's kernel); file operations take turns.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;
use vana_sandbox_core::{BackendError, FileEntry, FileInfo, FileKind, Files};
use vana_sandbox_init::serve::MAX_GET_BYTES;

use crate::container::WORKSPACE;
use crate::instance::{parents, Ctx, State};

/// The workspace of one instance.
pub(crate) struct DockerFiles {
    pub ctx: Arc<Ctx>,
    pub state: Arc<Mutex<State>>,
}

fn check(path: &str) -> Result<(), BackendError> {
    vana_sandbox_core::validate::check_relative_path(path).map_err(|m| BackendError::File {
        path: path.to_string(),
        reason: m,
    })
}

fn failed(path: &str, stderr: &[u8]) -> BackendError {
    BackendError::File {
        path: path.to_string(),
        reason: String::from_utf8_lossy(stderr).trim().to_string(),
    }
}

#[async_trait]
impl Files for DockerFiles {
    async fn put(&self, files: &[FileEntry]) -> Result<(), BackendError> {
        for f in files {
            check(&f.path)?;
        }
        let mut st = self.state.lock().await;
        self.ctx.put(&mut st, files).await
    }

    async fn read(&self, paths: &[String], max_bytes: u64) -> Result<Vec<FileEntry>, BackendError> {
        let max_bytes = max_bytes.min(vana_sandbox_core::host::MAX_READ_BYTES);
        for p in paths {
            check(p)?;
        }
        let mut st = self.state.lock().await;
        let c = self.ctx.any_container(&mut st).await?.target();
        if max_bytes <= u64::from(MAX_GET_BYTES) {
            // Small reads (a guard's events, a session's file): init reads them itself, as the
            // program's user, following no link.
            return self.read_direct(&c, paths, max_bytes as u32).await;
        }
        let mut out = Vec::new();
        for p in paths {
            // tar stores a symlink as a link (never its target); unpack_one accepts regular
            // files only. The output cap bounds what a huge or sparse file can cost.
            let argv = ["tar", "-c", "-C", WORKSPACE, "-f", "-", "--", p.as_str()];
            let h = self
                .ctx
                .helper_no_links(
                    &c,
                    &parents(p, false),
                    &argv,
                    &[],
                    max_bytes.saturating_add(1 << 20),
                    p,
                )
                .await?;
            if h.overflow {
                return Err(BackendError::File {
                    path: p.clone(),
                    reason: "file too large to read back".into(),
                });
            }
            if h.code != Some(0) {
                return Err(failed(p, &h.stderr));
            }
            out.push(crate::tarball::unpack_one(p, &h.stdout, max_bytes)?);
        }
        Ok(out)
    }

    async fn list(&self, dir: &str, max_entries: usize) -> Result<Vec<FileInfo>, BackendError> {
        if !dir.is_empty() {
            check(dir)?;
        }
        let root = format!("{WORKSPACE}/{}", dir.trim_end_matches('/'));
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
        let listing = {
            let mut st = self.state.lock().await;
            let c = self.ctx.any_container(&mut st).await?.target();
            let dirs = if dir.is_empty() {
                Vec::new()
            } else {
                parents(dir.trim_end_matches('/'), true)
            };
            let h = self
                .ctx
                .helper_no_links(&c, &dirs, &argv, &[], cap, dir)
                .await?;
            if h.code != Some(0) {
                return Err(failed(dir, &h.stderr));
            }
            h.stdout
        };
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
        let target = format!("{WORKSPACE}/{path}");
        let mut st = self.state.lock().await;
        let c = self.ctx.any_container(&mut st).await?.target();
        let argv = ["rm", "-rf", "--", target.as_str()];
        let h = self
            .ctx
            .helper_no_links(&c, &parents(path, false), &argv, &[], 1 << 16, path)
            .await?;
        if h.code != Some(0) {
            return Err(failed(path, &h.stderr));
        }
        Ok(())
    }
}

impl DockerFiles {
    /// `paths` read by the container's init itself (the serve protocol's `Get`).
    async fn read_direct(
        &self,
        c: &crate::run::Target,
        paths: &[String],
        max: u32,
    ) -> Result<Vec<FileEntry>, BackendError> {
        let mut out = Vec::new();
        for p in paths {
            match c.session.fetch(self.ctx.fs_ids(), p, max).await? {
                Ok((mode, content)) => out.push(FileEntry {
                    path: p.clone(),
                    content,
                    executable: mode & 0o111 != 0,
                }),
                Err(libc::EFBIG) => {
                    return Err(BackendError::File {
                        path: p.clone(),
                        reason: "file too large to read back".into(),
                    })
                }
                Err(libc::ENOENT) => return Err(failed(p, b"No such file or directory")),
                Err(libc::EINVAL) => {
                    return Err(BackendError::File {
                        path: p.clone(),
                        reason: "not a regular file".into(),
                    })
                }
                Err(errno) => {
                    return Err(BackendError::File {
                        path: p.clone(),
                        reason: std::io::Error::from_raw_os_error(errno).to_string(),
                    })
                }
            }
        }
        Ok(out)
    }
}
