//! A session's files: write, read, list, remove, and a directory as a tar archive in either
//! direction. Every path is relative to the workspace and checked before it reaches the backend
//! (which never follows a link); sizes and counts are capped; an archive coming in may hold only
//! regular files and directories inside the workspace, within the disk limit.

use std::io::Read;

use crate::error::BackendError;
use crate::files::{FileInfo, FileKind, SharedFiles, MAX_LIST_ENTRIES};
use crate::host::MAX_READ_BYTES;
use crate::spec::FileEntry;
use crate::validate::check_relative_path;

/// Most entries an archive may hold (coming in or going out).
pub const MAX_ARCHIVE_ENTRIES: usize = 10_000;

/// The files of one session.
#[derive(Clone)]
pub struct SessionFiles {
    files: SharedFiles,
    /// The session's disk limit: nothing bigger can come in.
    disk: u64,
}

fn file_error(path: &str, reason: impl Into<String>) -> BackendError {
    BackendError::File {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn checked(path: &str) -> Result<&str, BackendError> {
    check_relative_path(path).map_err(|m| file_error(path, m))?;
    Ok(path)
}

impl SessionFiles {
    pub(crate) fn new(files: SharedFiles, disk: u64) -> Self {
        Self { files, disk }
    }

    pub(crate) fn backend(&self) -> &SharedFiles {
        &self.files
    }

    /// Writes `content` at `path` (parents created).
    pub async fn write(&self, path: &str, content: impl Into<Vec<u8>>) -> Result<(), BackendError> {
        let content = content.into();
        if content.len() as u64 > self.disk {
            return Err(file_error(path, "larger than the session's disk limit"));
        }
        self.files
            .put(&[FileEntry {
                path: checked(path)?.to_string(),
                content,
                executable: false,
            }])
            .await
    }

    /// Reads the regular file at `path` (at most 64 MiB).
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, BackendError> {
        let mut got = self
            .files
            .read(&[checked(path)?.to_string()], MAX_READ_BYTES)
            .await?;
        Ok(got.pop().map(|f| f.content).unwrap_or_default())
    }

    /// Lists `dir` (`""`: the workspace) recursively.
    pub async fn list(&self, dir: &str) -> Result<Vec<FileInfo>, BackendError> {
        if !dir.is_empty() {
            checked(dir)?;
        }
        self.files.list(dir, MAX_LIST_ENTRIES).await
    }

    /// Removes a file, link or directory tree.
    pub async fn remove(&self, path: &str) -> Result<(), BackendError> {
        self.files.remove(checked(path)?).await
    }

    /// `dir` (`""`: the workspace) as a tar archive of its regular files and directories
    /// (links are left out), at most 64 MiB of content.
    pub async fn download(&self, dir: &str) -> Result<Vec<u8>, BackendError> {
        let listing = self.list(dir).await?;
        if listing.len() > MAX_ARCHIVE_ENTRIES {
            return Err(file_error(dir, "too many entries for one archive"));
        }
        let mut builder = tar::Builder::new(Vec::new());
        let mut total = 0u64;
        for entry in &listing {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            match entry.kind {
                FileKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    header.set_cksum();
                    builder
                        .append_data(&mut header, &entry.path, std::io::empty())
                        .map_err(|e| file_error(&entry.path, e.to_string()))?;
                }
                FileKind::File => {
                    total = total.saturating_add(entry.size);
                    if total > MAX_READ_BYTES {
                        return Err(file_error(dir, "more than 64 MiB for one archive"));
                    }
                    let content = self.read(&entry.path).await?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(0o644);
                    header.set_size(content.len() as u64);
                    header.set_cksum();
                    builder
                        .append_data(&mut header, &entry.path, content.as_slice())
                        .map_err(|e| file_error(&entry.path, e.to_string()))?;
                }
                FileKind::Symlink | FileKind::Other => {}
            }
        }
        builder
            .into_inner()
            .map_err(|e| file_error(dir, e.to_string()))
    }

    /// Unpacks a tar archive into the workspace. Refused as a whole, before anything is
    /// written: an entry that is not a regular file or directory (links, devices, FIFOs), a path
    /// that leaves the workspace, more than 10,000 entries, or more content than the disk limit
    /// (what the headers claim counts, so a bomb is refused unread).
    pub async fn upload(&self, archive: &[u8]) -> Result<usize, BackendError> {
        let files = unpack_archive(archive, self.disk)?;
        let count = files.len();
        self.files.put(&files).await?;
        Ok(count)
    }
}

/// The files of a tar archive coming into a workspace of `budget` bytes, checked whole before
/// anything is written: only regular files and directories (no links, devices or FIFOs), every
/// path inside the workspace, at most [`MAX_ARCHIVE_ENTRIES`] entries, and no more content than
/// `budget` — what the headers claim counts, so a bomb is refused unread.
pub fn unpack_archive(archive: &[u8], budget: u64) -> Result<Vec<FileEntry>, BackendError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut ar = tar::Archive::new(archive);
    let entries = ar
        .entries()
        .map_err(|e| file_error("(archive)", e.to_string()))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ARCHIVE_ENTRIES {
            return Err(file_error("(archive)", "more than 10,000 entries"));
        }
        let mut entry = entry.map_err(|e| file_error("(archive)", e.to_string()))?;
        let raw = entry
            .path()
            .map_err(|e| file_error("(archive)", e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let path = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let kind = entry.header().entry_type();
        if path.is_empty() && kind.is_dir() {
            continue;
        }
        check_relative_path(&path).map_err(|m| file_error(&raw, m))?;
        if kind.is_dir() {
            continue; // directories come with the files in them
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(file_error(
                &raw,
                "only regular files and directories may come in (no links or devices)",
            ));
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| file_error(&raw, e.to_string()))?;
        total = total.saturating_add(size);
        if total > budget {
            return Err(file_error(
                &raw,
                "the archive exceeds the session's disk limit",
            ));
        }
        let mut content = Vec::with_capacity(size.min(1 << 20) as usize);
        entry
            .by_ref()
            .take(size)
            .read_to_end(&mut content)
            .map_err(|e| file_error(&raw, e.to_string()))?;
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        files.push(FileEntry {
            path,
            content,
            executable,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap_or(());
            }
            // set_path refuses '..', so write the name bytes directly.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap_or(());
        }
        b.into_inner().unwrap_or_default()
    }

    fn files() -> SessionFiles {
        let exec = crate::fake::FakeExecutor::new(|_, _, _| Ok(Default::default()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let inst = rt
            .block_on(crate::executor::Executor::create(
                &exec,
                &crate::spec::InstanceSpec {
                    id: "t".into(),
                    language: "python".into(),
                    limits: crate::limits::Limits::default(),
                    runtime: None,
                    mounts: Vec::new(),
                    network: crate::spec::NetworkMode::None,
                },
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        SessionFiles::new(inst.files(), 1 << 20)
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(f)
    }

    #[test]
    fn archives_round_trip_and_hostile_ones_are_refused_whole() {
        let f = files();
        let ok = tar_of(&[
            ("data/a.csv", tar::EntryType::Regular, b"1,2\n"),
            ("b.txt", tar::EntryType::Regular, b"b"),
        ]);
        assert_eq!(block(f.upload(&ok)).ok(), Some(2));
        assert_eq!(block(f.read("data/a.csv")).ok(), Some(b"1,2\n".to_vec()));
        for bad in [
            tar_of(&[("../escape", tar::EntryType::Regular, b"x")]),
            tar_of(&[("/etc/cron.d/x", tar::EntryType::Regular, b"x")]),
            tar_of(&[("link", tar::EntryType::Symlink, b"")]),
            tar_of(&[("dev", tar::EntryType::Char, b"")]),
            tar_of(&[("big", tar::EntryType::Regular, &vec![0u8; (1 << 20) + 1])]),
        ] {
            assert!(block(f.upload(&bad)).is_err());
        }
        let archive = block(f.download("")).unwrap_or_default();
        let mut names: Vec<String> = tar::Archive::new(archive.as_slice())
            .entries()
            .map(|es| {
                es.flatten()
                    .filter_map(|e| Some(e.path().ok()?.to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        assert_eq!(names, ["b.txt", "data/a.csv"]);
    }

    #[test]
    fn paths_stay_in_the_workspace() {
        let f = files();
        for p in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(block(f.write(p, b"x".to_vec())).is_err(), "{p}");
            assert!(block(f.read(p)).is_err(), "{p}");
        }
    }
}
