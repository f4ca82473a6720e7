//! The cache on disk: a trust boundary shared by every request of every engine on the host.
//!
//! ```text
//! <dir>/                          mode 0700
//!   sets/<set-key>/               one prepared set, complete (renamed into place whole)
//!     manifest.json               what it is: ecosystem, index, interpreter, packages with the
//!                                 index's digests, and every file with its mode, size, SHA-256
//!     tree/                       what is mounted, read-only
//!     used                        its mtime is the last use (least recently used goes first)
//!   requests/<request-key>.json   which set answered a request, and when it was resolved
//!   locks/                        flock files: a set's (shared while in use), a request's
//!                                 (exclusive while it installs)
//!   staging/<owner>-<n>/          installs in progress (a dead owner's are removed)
//!   sessions/<owner>-<n>/         sessions' own sets (see `session.rs`)
//! ```
//!
//! A **request key** covers everything a request says that can change what it gets: the
//! ecosystem, the index, the interpreter (implementation, version, ABI, platform tags) and the
//! normalised, sorted requirements. A **set key** covers what was installed: the ecosystem, the
//! index, the interpreter and every package's name, version and artifact digest. Two requests
//! that resolve to the same set share it; a request key points at a set only after the set is
//! complete, so a reader sees a whole set or none. A set is checked against its manifest before
//! every use (every file hashed) and refused — removed, then installed again — when anything
//! differs; a manifest that does not match its own key or the request is refused too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vana_sandbox_core::compile_cache::CacheKey;
use vana_sandbox_core::host::OwnerId;
use vana_sandbox_core::{Ecosystem, Interpreter, PackageError, PackageRequest};

use crate::lock::{FileLock, Mode};
use crate::tree::{self, Node};
use crate::Artifact;

/// Version of the layout and of both keys.
const FORMAT: u32 = 1;

/// What a set is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: u32,
    pub ecosystem: Ecosystem,
    pub index: String,
    pub interpreter: Interpreter,
    /// The installer that made it (`pip 23.0.1`): recorded, not part of the key.
    pub installer: String,
    /// The requirements of the request that made it.
    pub requested: Vec<String>,
    pub packages: Vec<Artifact>,
    /// Seconds since the epoch.
    pub created: u64,
    pub bytes: u64,
    pub tree: Vec<Node>,
}

impl Manifest {
    /// The key of the set this manifest describes.
    pub(crate) fn set_key(&self) -> String {
        let mut k = CacheKey::new()
            .part(b"vana-packages-set")
            .part(&FORMAT.to_le_bytes())
            .part(self.ecosystem.as_str().as_bytes())
            .part(self.index.as_bytes());
        k = interpreter_parts(k, &self.interpreter);
        let mut packages = self.packages.clone();
        packages.sort();
        for p in &packages {
            k = k
                .part(p.name.as_bytes())
                .part(p.version.as_bytes())
                .part(p.digest.as_bytes());
        }
        k.finish()
    }
}

fn interpreter_parts(mut k: CacheKey, i: &Interpreter) -> CacheKey {
    k = k
        .part(i.implementation.as_bytes())
        .part(i.version.as_bytes())
        .part(i.abi.as_bytes());
    for p in &i.platforms {
        k = k.part(p.as_bytes());
    }
    k
}

/// The key of a request.
pub(crate) fn request_key(req: &PackageRequest<'_>) -> String {
    let mut k = CacheKey::new()
        .part(b"vana-packages-request")
        .part(&FORMAT.to_le_bytes())
        .part(req.list.ecosystem.as_str().as_bytes())
        .part(req.index.as_bytes());
    k = interpreter_parts(k, &req.target.interpreter);
    let mut reqs: Vec<&str> = req
        .list
        .specs
        .iter()
        .map(|s| s.requirement.as_str())
        .collect();
    reqs.sort_unstable();
    reqs.dedup();
    for r in reqs {
        k = k.part(r.as_bytes());
    }
    k.finish()
}

/// A request key's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Alias {
    set: String,
    created: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A set in use: its directory and the shared lock that keeps it from being removed.
pub(crate) struct Held {
    pub tree: PathBuf,
    pub manifest: Manifest,
    pub lock: FileLock,
}

/// Why a cached set was not used.
#[derive(Debug)]
pub(crate) enum Miss {
    /// Nothing cached for the request (or too old).
    Absent,
    /// Something cached was refused (and removed).
    Refused(String),
}

/// The cache directory.
pub(crate) struct Store {
    pub dir: PathBuf,
    pub max_bytes: u64,
    seq: AtomicU64,
    owner: OwnerId,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PackageError {
    let context = context.into();
    move |e| PackageError::io(context, e)
}

/// Creates `dir` with `mode` (and its parents), and sets the mode.
pub(crate) fn make_dir(dir: &Path, mode: u32) -> Result<(), PackageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting the mode of {}", dir.display())))
}

/// Writes `content` to `path` atomically (a temporary file beside it, then `rename`).
fn write_atomic(path: &Path, content: &[u8]) -> Result<(), PackageError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(content)?;
        f.sync_data()
    });
    let done = written.and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done.map_err(io(format!("writing {}", path.display())))
}

impl Store {
    /// Opens (creating) the cache at `dir`, removing what dead owners left in `staging/` and
    /// `sessions/`.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Self, PackageError> {
        make_dir(dir, 0o700)?;
        for sub in ["sets", "requests", "locks", "staging", "sessions"] {
            make_dir(&dir.join(sub), 0o700)?;
        }
        let store = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            seq: AtomicU64::new(0),
            owner: OwnerId::current(),
        };
        for sub in ["staging", "sessions"] {
            for e in std::fs::read_dir(dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                let dead = name.parse::<OwnerId>().is_ok_and(|o| !o.alive());
                if dead || name.starts_with("trash-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(store)
    }

    fn set_dir(&self, key: &str) -> PathBuf {
        self.dir.join("sets").join(key)
    }

    fn set_lock(&self, key: &str) -> PathBuf {
        self.dir.join("locks").join(format!("{key}.lock"))
    }

    /// A fresh directory of ours under `parent` (`staging` or `sessions`): `<owner>-<n>`.
    pub(crate) fn scratch(&self, parent: &str) -> Result<PathBuf, PackageError> {
        let dir = self.dir.join(parent).join(format!(
            "{}-{}-{}",
            self.owner,
            self.seq.fetch_add(1, Ordering::Relaxed),
            now_secs()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        make_dir(&dir, 0o700)?;
        Ok(dir)
    }

    /// Serialises installs of one request (across processes): held while looking up and
    /// installing.
    pub(crate) fn lock_request(&self, key: &str) -> Result<FileLock, PackageError> {
        let path = self.dir.join("locks").join(format!("request-{key}.lock"));
        FileLock::take(&path, Mode::Exclusive, true)
            .map_err(io(format!("locking {}", path.display())))?
            .ok_or_else(|| PackageError::io("locking a request", std::io::Error::other("busy")))
    }

    /// The set that answered `key`, checked, if it is there, fresh (resolved less than
    /// `max_age` ago) and intact.
    pub(crate) fn lookup(
        &self,
        key: &str,
        req: &PackageRequest<'_>,
        max_age: Duration,
    ) -> Result<Held, Miss> {
        let alias_path = self.dir.join("requests").join(format!("{key}.json"));
        let Ok(text) = std::fs::read(&alias_path) else {
            return Err(Miss::Absent);
        };
        let alias: Alias = match serde_json::from_slice(&text) {
            Ok(a) => a,
            Err(_) => {
                let _ = std::fs::remove_file(&alias_path);
                return Err(Miss::Refused("an unreadable request record".into()));
            }
        };
        if now_secs().saturating_sub(alias.created) > max_age.as_secs() || !is_key(&alias.set) {
            return Err(Miss::Absent);
        }
        match self.open_set(&alias.set, Some(req)) {
            Ok(held) => Ok(held),
            Err(why) => {
                let _ = std::fs::remove_file(&alias_path);
                Err(why)
            }
        }
    }

    /// Opens the set `key` for use: shared lock, manifest read and matched against its key (and
    /// the request), tree verified. A refused set is removed when no one else uses it.
    fn open_set(&self, key: &str, req: Option<&PackageRequest<'_>>) -> Result<Held, Miss> {
        let lock = match FileLock::take(&self.set_lock(key), Mode::Shared, true) {
            Ok(Some(l)) => l,
            _ => return Err(Miss::Absent),
        };
        let dir = self.set_dir(key);
        let manifest: Manifest = match std::fs::read(dir.join("manifest.json")) {
            Ok(text) => match serde_json::from_slice(&text) {
                Ok(m) => m,
                Err(e) => return Err(self.refuse(key, lock, format!("its manifest: {e}"))),
            },
            Err(_) => return Err(Miss::Absent),
        };
        if manifest.format != FORMAT || manifest.set_key() != key {
            return Err(self.refuse(key, lock, "its manifest does not match its key".into()));
        }
        if let Some(req) = req {
            let fits = manifest.ecosystem == req.list.ecosystem
                && manifest.index == req.index
                && manifest.interpreter == req.target.interpreter;
            if !fits {
                return Err(self.refuse(
                    key,
                    lock,
                    "it was made for another index or interpreter".into(),
                ));
            }
        }
        let tree_dir = dir.join("tree");
        if let Err(e) = tree::verify(&tree_dir, &manifest.tree) {
            return Err(self.refuse(key, lock, e.to_string()));
        }
        if manifest.bytes != tree::total_bytes(&manifest.tree) {
            return Err(self.refuse(key, lock, "its size does not add up".into()));
        }
        // Recency, for eviction.
        if let Ok(f) = std::fs::File::options().append(true).open(dir.join("used")) {
            let _ = f.set_modified(SystemTime::now());
        }
        Ok(Held {
            tree: tree_dir,
            manifest,
            lock,
        })
    }

    /// Logs and removes a refused set (when no one else holds it).
    fn refuse(&self, key: &str, lock: FileLock, why: String) -> Miss {
        tracing::warn!(set = key, "cached package set refused: {why}");
        drop(lock);
        self.remove_set(key);
        Miss::Refused(why)
    }

    /// Removes the set `key` unless it is in use: renamed out of `sets/` first (readers see it
    /// whole or not at all), then deleted.
    fn remove_set(&self, key: &str) -> bool {
        let Ok(Some(lock)) = FileLock::take(&self.set_lock(key), Mode::Exclusive, false) else {
            return false;
        };
        let trash = self.dir.join("staging").join(format!(
            "trash-{key}-{}",
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let moved = std::fs::rename(self.set_dir(key), &trash).is_ok();
        if moved {
            let _ = std::fs::remove_dir_all(&trash);
        }
        lock.remove();
        moved
    }

    /// Puts a finished install in place: `staged` holds `tree/`; its manifest is written
    /// beside it and the directory renamed to `sets/<set-key>` (an identical set already there
    /// and intact is used instead). The request key then points at it. Returns the set, held.
    pub(crate) fn commit(
        &self,
        request_key: &str,
        staged: &Path,
        manifest: Manifest,
    ) -> Result<Held, PackageError> {
        let key = manifest.set_key();
        // Installed before (by a request that resolved to the same set) and intact: use that.
        let held = match self.open_set(&key, None) {
            Ok(held) => held,
            Err(_) => self.place(&key, staged, &manifest)?,
        };
        let alias = serde_json::to_vec(&Alias {
            set: key.clone(),
            created: now_secs(),
        })
        .map_err(|e| PackageError::io("writing a request record", std::io::Error::other(e)))?;
        write_atomic(
            &self
                .dir
                .join("requests")
                .join(format!("{request_key}.json")),
            &alias,
        )?;
        self.evict(&key);
        Ok(held)
    }

    /// Moves `staged` to `sets/<key>` under the set's exclusive lock (whatever is there and
    /// not intact is moved away first), then holds it shared.
    fn place(&self, key: &str, staged: &Path, manifest: &Manifest) -> Result<Held, PackageError> {
        let text = serde_json::to_vec(manifest)
            .map_err(|e| PackageError::io("writing a manifest", std::io::Error::other(e)))?;
        write_atomic(&staged.join("manifest.json"), &text)?;
        write_atomic(&staged.join("used"), b"")?;
        let lock_path = self.set_lock(key);
        let lock = FileLock::take(&lock_path, Mode::Exclusive, true)
            .map_err(io(format!("locking {}", lock_path.display())))?
            .ok_or_else(|| PackageError::io("locking a set", std::io::Error::other("busy")))?;
        let dir = self.set_dir(key);
        let existing = std::fs::read(dir.join("manifest.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<Manifest>(&t).ok())
            .filter(|m| m.set_key() == key && tree::verify(&dir.join("tree"), &m.tree).is_ok());
        if existing.is_none() && dir.exists() {
            let trash = self.dir.join("staging").join(format!(
                "trash-{key}-{}",
                self.seq.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::rename(&dir, &trash).map_err(io("moving a damaged set away"))?;
            let _ = std::fs::remove_dir_all(&trash);
        }
        if existing.is_none() {
            std::fs::rename(staged, &dir)
                .map_err(io(format!("moving a set into {}", dir.display())))?;
        }
        lock.downgrade()
            .map_err(io(format!("locking {}", lock_path.display())))?;
        Ok(Held {
            tree: dir.join("tree"),
            manifest: existing.unwrap_or_else(|| manifest.clone()),
            lock,
        })
    }

    /// Every set: key, bytes, last use.
    fn sets(&self) -> Vec<(String, u64, SystemTime)> {
        std::fs::read_dir(self.dir.join("sets"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let key = e.file_name().to_str().filter(|k| is_key(k))?.to_string();
                let used = std::fs::metadata(e.path().join("used"))
                    .and_then(|m| m.modified())
                    .unwrap_or(UNIX_EPOCH);
                let bytes = std::fs::read(e.path().join("manifest.json"))
                    .ok()
                    .and_then(|t| serde_json::from_slice::<Manifest>(&t).ok())
                    .map_or(0, |m| m.bytes);
                Some((key, bytes, used))
            })
            .collect()
    }

    /// Bytes and sets held.
    pub(crate) fn usage(&self) -> (u64, usize) {
        let sets = self.sets();
        (sets.iter().map(|(_, b, _)| b).sum(), sets.len())
    }

    /// Removes least recently used sets until the cache fits its bound; sets in use (and
    /// `keep`) stay.
    pub(crate) fn evict(&self, keep: &str) {
        let mut sets = self.sets();
        let mut total: u64 = sets.iter().map(|(_, b, _)| b).sum();
        if total <= self.max_bytes {
            return;
        }
        sets.sort_by_key(|(_, _, used)| *used);
        for (key, bytes, _) in sets {
            if total <= self.max_bytes {
                break;
            }
            if key != keep && self.remove_set(&key) {
                tracing::debug!(set = %key, bytes, "package set evicted");
                total = total.saturating_sub(bytes);
            }
        }
        // Request records whose set is gone.
        for e in std::fs::read_dir(self.dir.join("requests"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let gone = std::fs::read(e.path())
                .ok()
                .and_then(|t| serde_json::from_slice::<Alias>(&t).ok())
                .is_none_or(|a| !self.set_dir(&a.set).exists());
            if gone {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
