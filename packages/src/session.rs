//! A session's own package set: one host directory per ecosystem under the cache's
//! `sessions/`, mounted into the session's sandbox as plain read-only binds when it opens, and
//! filled while it lives.
//!
//! Why not an overlay, like one-shot runs: an overlay's view of a lower directory that changes
//! underneath is undefined, so a session could not see what is installed after it opened. A
//! plain bind shows the directory as it is. Additions are made one whole directory (or file)
//! at a time: copied (hard-linked from the checked cache set where the file system allows) into
//! a staging directory beside the live one, then renamed into place, so a cell sees a package
//! whole or not at all. Nothing already there is ever changed: a package the session has at
//! another version is refused before anything is added.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use vana_sandbox_core::{
    Ecosystem, Mount, MountKind, PackageError, PreparedPackages, SessionPackages,
};

use crate::store::make_dir;
use crate::tree::{self, MAX_DEPTH};

/// A session's set.
pub(crate) struct DirSession {
    root: PathBuf,
    versions: Mutex<BTreeMap<(Ecosystem, String), String>>,
    seq: AtomicU64,
}

fn live_name(e: Ecosystem) -> &'static str {
    match e {
        Ecosystem::Pypi => "python",
        Ecosystem::Npm => "node_modules",
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> PackageError {
    move |e| PackageError::io(context, e)
}

impl DirSession {
    /// A new, empty set in `root` (a fresh directory of the cache's `sessions/`).
    pub(crate) fn create(root: PathBuf) -> Result<Self, PackageError> {
        for e in Ecosystem::ALL {
            make_dir(&root.join(live_name(e)), 0o755)?;
        }
        make_dir(&root.join(".staging"), 0o700)?;
        Ok(Self {
            root,
            versions: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
        })
    }

    fn live(&self, e: Ecosystem) -> PathBuf {
        self.root.join(live_name(e))
    }
}

/// What of `src` is not in `dst` yet (paths relative to both), refusing any difference in
/// what both have.
fn plan(
    src: &Path,
    dst: &Path,
    rel: &Path,
    depth: usize,
    adds: &mut Vec<PathBuf>,
) -> Result<(), PackageError> {
    if depth > MAX_DEPTH {
        return Err(PackageError::Refused(format!(
            "`{}` nests too deep",
            rel.display()
        )));
    }
    let dir = src.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io(format!("reading {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let s = std::fs::symlink_metadata(src.join(&r))
            .map_err(io(format!("reading {}", src.join(&r).display())))?;
        let d = match std::fs::symlink_metadata(dst.join(&r)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                adds.push(r);
                continue;
            }
            Err(e) => {
                return Err(PackageError::io(
                    format!("reading {}", dst.join(&r).display()),
                    e,
                ))
            }
        };
        let same = if s.is_dir() && d.is_dir() {
            plan(src, dst, &r, depth + 1, adds)?;
            true
        } else if s.is_file() && d.is_file() && s.len() == d.len() {
            let a = tree::hash_file(&src.join(&r), s.len());
            let b = tree::hash_file(&dst.join(&r), d.len());
            matches!((a, b), (Ok(a), Ok(b)) if a == b)
        } else {
            false
        };
        if !same {
            return Err(PackageError::Refused(format!(
                "`{}` is already in this session with other content; packages already there \
                 cannot change under a running kernel (pin the versions the session has, or \
                 open a new session)",
                r.display()
            )));
        }
    }
    Ok(())
}

/// Copies the tree `src` to `dst` (which must not exist): directories made, files hard-linked
/// (or copied where the file system refuses a link) with their modes.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), PackageError> {
    let meta = std::fs::symlink_metadata(src).map_err(io(format!("reading {}", src.display())))?;
    if meta.is_dir() {
        make_dir(dst, 0o755)?;
        for e in std::fs::read_dir(src).map_err(io(format!("reading {}", src.display())))? {
            let e = e.map_err(io(format!("reading {}", src.display())))?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        Ok(())
    } else if meta.is_file() {
        if std::fs::hard_link(src, dst).is_err() {
            std::fs::copy(src, dst).map_err(io(format!("copying {}", src.display())))?;
        }
        Ok(())
    } else {
        Err(PackageError::Refused(format!(
            "`{}` is not a directory or a regular file",
            src.display()
        )))
    }
}

impl SessionPackages for DirSession {
    fn mounts(&self) -> Vec<Mount> {
        Ecosystem::ALL
            .iter()
            .map(|e| Mount {
                host: self.live(*e).display().to_string(),
                sandbox: e.sandbox_dir().to_string(),
                kind: MountKind::Live,
            })
            .collect()
    }

    fn add(&self, prepared: &PreparedPackages) -> Result<(), PackageError> {
        let eco = prepared.report.ecosystem;
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        for p in &prepared.report.installed {
            let name = eco.normalize_name(&p.name);
            if let Some(have) = versions.get(&(eco, name)) {
                if *have != p.version {
                    return Err(PackageError::Refused(format!(
                        "`{}` {have} is already in this session and the packages asked for need \
                         {}; modules already imported cannot change under a running kernel: ask \
                         for `{}` at {have}, or open a new session",
                        p.name, p.version, p.name
                    )));
                }
            }
        }
        let live = self.live(eco);
        let mut adds = Vec::new();
        plan(&prepared.host_dir, &live, Path::new(""), 0, &mut adds)?;
        for rel in &adds {
            let stage = self
                .root
                .join(".staging")
                .join(self.seq.fetch_add(1, Ordering::Relaxed).to_string());
            copy_tree(&prepared.host_dir.join(rel), &stage)?;
            std::fs::rename(&stage, live.join(rel))
                .map_err(io(format!("adding {} to the session", rel.display())))?;
        }
        for p in &prepared.report.installed {
            versions.insert((eco, eco.normalize_name(&p.name)), p.version.clone());
        }
        Ok(())
    }
}

impl Drop for DirSession {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
