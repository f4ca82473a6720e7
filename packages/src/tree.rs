//! The tree of a prepared set and its manifest: every directory and file with its mode, size and
//! SHA-256, in path order. An installer's output is normalised first (modes set, nothing but
//! directories and regular files accepted); a cached tree is checked against its manifest before
//! every use, and any difference refuses it.
//!
//! The walks never follow a symbolic link and never leave the tree: a link, a device, a FIFO or a
//! socket in a tree is refused, not followed.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most entries a tree may hold.
pub(crate) const MAX_NODES: usize = 500_000;
/// Deepest a tree may nest.
pub(crate) const MAX_DEPTH: usize = 64;

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Node {
    /// A directory.
    Dir {
        /// Path relative to the tree's root, `/`-separated.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Path relative to the tree's root.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Size in bytes.
        size: u64,
        /// SHA-256 of the content, hex.
        sha256: String,
    },
}

impl Node {
    fn path(&self) -> &str {
        match self {
            Node::Dir { path, .. } | Node::File { path, .. } => path,
        }
    }
}

/// Why a tree was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TreeError {
    /// Reading it failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// It holds something a package set must not (a link, a device), or too much.
    #[error("{0}")]
    Refused(String),
    /// It differs from its manifest.
    #[error("the tree differs from its manifest at `{0}`")]
    Tampered(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The entries under `root`, sorted by path (metadata only, nothing hashed), without
/// following links. With `normalise`, modes are set first: directories 0755, files 0644 (0755
/// when any execute bit was set) — what every sandbox user may read and nobody may write.
fn walk(root: &Path, normalise: bool) -> Result<Vec<(String, std::fs::Metadata)>, TreeError> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(TreeError::Refused(format!(
                "`{rel}` nests deeper than {MAX_DEPTH} directories"
            )));
        }
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io_at(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_at(&dir))?;
        names.sort();
        for name in names {
            let Some(name_s) = name.to_str().filter(|n| !n.contains('\n')) else {
                return Err(TreeError::Refused(format!(
                    "`{rel}/{}` is not a UTF-8 file name",
                    name.to_string_lossy()
                )));
            };
            let path = dir.join(&name);
            let rel_path = if rel.is_empty() {
                name_s.to_string()
            } else {
                format!("{rel}/{name_s}")
            };
            let mut meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                if normalise && meta.mode() & 0o7777 != 0o755 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .map_err(io_at(&path))?;
                    meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
                }
                stack.push((path, rel_path.clone(), depth + 1));
            } else if ft.is_file() {
                let want = if meta.mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                if normalise && meta.mode() & 0o7777 != want {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want))
                        .map_err(io_at(&path))?;
                    meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
                }
            } else {
                let what = if ft.is_symlink() {
                    "a symbolic link"
                } else {
                    "a special file"
                };
                return Err(TreeError::Refused(format!(
                    "`{rel_path}` is {what}; a package set holds only directories and regular files"
                )));
            }
            out.push((rel_path, meta));
            if out.len() > MAX_NODES {
                return Err(TreeError::Refused(format!(
                    "the set holds more than {MAX_NODES} files"
                )));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// SHA-256 of a file, hex, reading at most `size` bytes (refusing a file that grew).
pub(crate) fn hash_file(path: &Path, size: u64) -> Result<String, TreeError> {
    let mut f = File::open(path).map_err(io_at(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            return Err(TreeError::Tampered(path.display().to_string()));
        }
        h.update(&buf[..n]);
    }
    if total != size {
        return Err(TreeError::Tampered(path.display().to_string()));
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Normalises the tree an installer left and records it.
pub(crate) fn record(root: &Path) -> Result<Vec<Node>, TreeError> {
    walk(root, true)?
        .into_iter()
        .map(|(path, meta)| {
            let mode = meta.mode() & 0o7777;
            if meta.is_dir() {
                Ok(Node::Dir { path, mode })
            } else {
                let sha256 = hash_file(&root.join(&path), meta.len())?;
                Ok(Node::File {
                    path,
                    mode,
                    size: meta.len(),
                    sha256,
                })
            }
        })
        .collect()
}

/// Bytes the files of `nodes` hold.
pub(crate) fn total_bytes(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .map(|n| match n {
            Node::File { size, .. } => *size,
            Node::Dir { .. } => 0,
        })
        .sum()
}

/// Checks the tree at `root` against `nodes`: the same entries, kinds, modes and sizes, and
/// every file's content hashing to its recorded digest.
pub(crate) fn verify(root: &Path, nodes: &[Node]) -> Result<(), TreeError> {
    let found = walk(root, false)?;
    if found.len() != nodes.len() {
        let extra = found
            .iter()
            .map(|(p, _)| p.as_str())
            .find(|p| !nodes.iter().any(|n| n.path() == *p))
            .or_else(|| {
                nodes
                    .iter()
                    .map(Node::path)
                    .find(|p| !found.iter().any(|(f, _)| f == p))
            })
            .unwrap_or("(count)");
        return Err(TreeError::Tampered(extra.to_string()));
    }
    for ((path, meta), node) in found.iter().zip(nodes) {
        let mode = meta.mode() & 0o7777;
        let same = match node {
            Node::Dir { path: p, mode: m } => p == path && meta.is_dir() && *m == mode,
            Node::File {
                path: p,
                mode: m,
                size,
                sha256,
            } => {
                p == path
                    && meta.is_file()
                    && *m == mode
                    && *size == meta.len()
                    && hash_file(&root.join(path), *size)? == *sha256
            }
        };
        if !same {
            return Err(TreeError::Tampered(path.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vana-pkg-tree-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::create_dir_all(d.join("pkg/sub"));
        d
    }

    #[test]
    fn records_normalises_and_detects_every_change() {
        let d = scratch("verify");
        assert!(std::fs::write(d.join("pkg/__init__.py"), b"x = 1\n").is_ok());
        assert!(std::fs::write(d.join("pkg/sub/run"), b"#!/bin/sh\n").is_ok());
        let _ = std::fs::set_permissions(
            d.join("pkg/sub/run"),
            std::fs::Permissions::from_mode(0o4777),
        );
        let nodes = record(&d).unwrap_or_default();
        assert_eq!(nodes.len(), 4, "{nodes:?}");
        assert!(nodes
            .iter()
            .any(|n| matches!(n, Node::File { path, mode: 0o755, .. } if path == "pkg/sub/run")));
        assert!(verify(&d, &nodes).is_ok());
        assert_eq!(total_bytes(&nodes), 16);

        // Content, mode, an added file: each is noticed.
        assert!(std::fs::write(d.join("pkg/__init__.py"), b"x = 2\n").is_ok());
        assert!(
            matches!(verify(&d, &nodes), Err(TreeError::Tampered(p)) if p == "pkg/__init__.py")
        );
        assert!(std::fs::write(d.join("pkg/__init__.py"), b"x = 1\n").is_ok());
        assert!(verify(&d, &nodes).is_ok());
        let _ = std::fs::set_permissions(
            d.join("pkg/__init__.py"),
            std::fs::Permissions::from_mode(0o666),
        );
        assert!(verify(&d, &nodes).is_err());
        let _ = std::fs::set_permissions(
            d.join("pkg/__init__.py"),
            std::fs::Permissions::from_mode(0o644),
        );
        assert!(std::fs::write(d.join("pkg/evil.py"), b"import os\n").is_ok());
        assert!(matches!(verify(&d, &nodes), Err(TreeError::Tampered(p)) if p == "pkg/evil.py"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn links_and_special_files_are_refused() {
        let d = scratch("links");
        assert!(std::os::unix::fs::symlink("/etc/passwd", d.join("pkg/passwd")).is_ok());
        let e = record(&d).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("symbolic link"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
