//! The compile cache: the same source, toolchain and flags compile once; later runs reuse the
//! binary.
//!
//! Content-addressed (SHA-256 of everything that decides the output: language, toolchain version,
//! flags, the compile step's fixed argv and environment, target, backend environment, scope and
//! every source file), size-bounded with least-recently-used eviction, safe under concurrent
//! writers (write to a unique temporary file, then `rename`), and written only by the host from a
//! compile step that succeeded — a sandbox never writes into it. Every entry carries the SHA-256
//! of its artifact, and an artifact is checked (integrity, size, an ELF header for this machine)
//! before it is handed out.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// Largest artifact the cache stores or hands out.
pub const MAX_ARTIFACT_BYTES: u64 = 256 << 20;

/// Who may share an artifact. **Contract** (policy files name it as `shared`, `tenant`, `off`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// Every caller of the engine shares artifacts (the key still covers everything that decides
    /// the artifact, so a hit is always the artifact the caller's own compile would produce).
    #[default]
    Shared,
    /// Artifacts are shared only between requests of the same tenant.
    Tenant,
    /// No cache: every compiled request compiles.
    Off,
}

/// Why a stored artifact was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// Larger than [`MAX_ARTIFACT_BYTES`].
    #[error("artifact of {0} bytes exceeds the cache's maximum")]
    TooLarge(u64),
    /// Not an ELF executable for this machine.
    #[error("artifact is not an ELF executable for this machine")]
    NotElf,
    /// The stored digest does not match the content.
    #[error("artifact does not match its stored digest")]
    Corrupt,
}

/// Checks that `artifact` is a plausible executable for this machine: at most
/// [`MAX_ARTIFACT_BYTES`], an ELF header of the host's class, byte order and machine.
pub fn check_artifact(artifact: &[u8]) -> Result<(), ArtifactError> {
    if artifact.len() as u64 > MAX_ARTIFACT_BYTES {
        return Err(ArtifactError::TooLarge(artifact.len() as u64));
    }
    #[cfg(target_arch = "x86_64")]
    const MACHINE: u16 = 62;
    #[cfg(target_arch = "aarch64")]
    const MACHINE: u16 = 183;
    let header = artifact.get(..20).ok_or(ArtifactError::NotElf)?;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    // Magic, 64-bit class, little-endian, ET_EXEC or ET_DYN (PIE), the host's machine.
    let kind = u16::from_le_bytes([header[16], header[17]]);
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 || !(kind == 2 || kind == 3) {
        return Err(ArtifactError::NotElf);
    }
    if machine != MACHINE {
        return Err(ArtifactError::NotElf);
    }
    Ok(())
}

/// A cache of compiled artifacts.
pub trait CompileCache: Send + Sync {
    /// The artifact stored under `key`, if any and if it passes [`check_artifact`] (a hit
    /// refreshes its recency; a refused entry is removed).
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores an artifact (best effort: a failure only means a later miss).
    fn put(&self, key: &str, artifact: &[u8]);
}

/// Computes a cache key from the parts that decide a compile's output.
#[derive(Default)]
pub struct CacheKey(Sha256);

impl CacheKey {
    /// A new key builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one length-prefixed part (so that parts cannot run into each other).
    pub fn part(mut self, bytes: &[u8]) -> Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A cache in a host directory, bounded to `max_bytes`.
#[derive(Debug)]
pub struct DirCompileCache {
    dir: PathBuf,
    max_bytes: u64,
    seq: AtomicU64,
}

impl DirCompileCache {
    /// Default location.
    pub const DEFAULT_DIR: &'static str = "/var/cache/vana-sandbox/compile";
    /// Default bound: 512 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;

    /// A cache in `dir` (created with mode 0700) holding at most `max_bytes`.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            dir,
            max_bytes,
            seq: AtomicU64::new(0),
        })
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())).then(|| self.dir.join(key))
    }

    /// Total bytes stored.
    pub fn size(&self) -> u64 {
        self.entries().iter().map(|(_, len, _)| len).sum()
    }

    fn entries(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().len() == 64)
                    .filter_map(|e| {
                        let m = e.metadata().ok()?;
                        Some((e.path(), m.len(), m.modified().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes least-recently-used entries until the cache fits in `max_bytes`.
    fn evict(&self) {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|(_, l, _)| l).sum();
        if total <= self.max_bytes {
            return;
        }
        entries.sort_by_key(|(_, _, t)| *t);
        for (path, len, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

/// An entry on disk: this magic, the SHA-256 of the artifact, the artifact.
const ENTRY_MAGIC: &[u8; 8] = b"VANACC01";

fn decode_entry(data: &[u8]) -> Result<&[u8], ArtifactError> {
    let (magic, rest) = data.split_at_checked(8).ok_or(ArtifactError::Corrupt)?;
    let (digest, artifact) = rest.split_at_checked(32).ok_or(ArtifactError::Corrupt)?;
    if magic != ENTRY_MAGIC || Sha256::digest(artifact).as_slice() != digest {
        return Err(ArtifactError::Corrupt);
    }
    check_artifact(artifact)?;
    Ok(artifact)
}

impl CompileCache for DirCompileCache {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path(key)?;
        let data = std::fs::read(&path).ok()?;
        match decode_entry(&data) {
            Ok(artifact) => {
                // Recency for LRU eviction.
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(artifact.to_vec())
            }
            Err(e) => {
                tracing::warn!(key, "compile cache entry refused and removed: {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    fn put(&self, key: &str, artifact: &[u8]) {
        let Some(path) = self.path(key) else { return };
        if artifact.len() as u64 > self.max_bytes || check_artifact(artifact).is_err() {
            return;
        }
        let tmp = self.dir().join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(ENTRY_MAGIC)?;
            f.write_all(&Sha256::digest(artifact))?;
            f.write_all(artifact)?;
            f.sync_data()
        });
        if written.is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.evict();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        CacheKey::new().part(&[n]).finish()
    }

    /// A fake executable for this machine of `len` bytes (at least 128).
    fn elf(fill: u8, len: usize) -> Vec<u8> {
        let mut v = crate::fake::fake_elf(fill);
        v.resize(len.max(v.len()), fill);
        v
    }

    #[test]
    fn artifacts_are_checked_before_use() {
        assert_eq!(check_artifact(&elf(0, 100)), Ok(()));
        assert_eq!(
            check_artifact(b"#!/bin/sh\necho pwned\n"),
            Err(ArtifactError::NotElf)
        );
        let mut i386 = elf(0, 100);
        i386[4] = 1;
        assert_eq!(check_artifact(&i386), Err(ArtifactError::NotElf));
        let dir = std::env::temp_dir().join(format!("vana-cc-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let Ok(cache) = DirCompileCache::new(&dir, 1 << 20) else {
            panic!("create cache")
        };
        // A script is never stored.
        cache.put(&key(1), b"#!/bin/sh\necho pwned\n");
        assert!(cache.get(&key(1)).is_none());
        // An entry altered on disk is refused and removed.
        cache.put(&key(2), &elf(7, 500));
        assert_eq!(cache.get(&key(2)).map(|v| v.len()), Some(500));
        let path = dir.join(key(2));
        let mut raw = std::fs::read(&path).unwrap_or_default();
        if let Some(last) = raw.last_mut() {
            *last ^= 0xff;
        }
        assert!(std::fs::write(&path, raw).is_ok());
        assert!(cache.get(&key(2)).is_none());
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stores_evicts_and_refuses_bad_keys() {
        let dir = std::env::temp_dir().join(format!("vana-cc-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = DirCompileCache::new(&dir, 3000);
        let Ok(cache) = cache else {
            panic!("create cache")
        };
        cache.put(&key(1), &elf(1, 1000));
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put(&key(2), &elf(2, 1000));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(cache.get(&key(1)).map(|v| v.len()), Some(1000)); // refreshes key 1
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put(&key(3), &elf(3, 1500));
        assert!(cache.size() <= 3000);
        assert!(
            cache.get(&key(2)).is_none(),
            "least recently used entry should be evicted"
        );
        assert!(cache.get(&key(1)).is_some());
        assert!(cache.get(&key(3)).is_some());
        cache.put("../evil", b"x");
        assert!(cache.get("../evil").is_none());
        assert!(!dir.join("../evil").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_writers_never_leave_torn_entries() {
        let dir = std::env::temp_dir().join(format!("vana-cc-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let Ok(cache) = DirCompileCache::new(&dir, 1 << 30) else {
            panic!("create cache")
        };
        let cache = std::sync::Arc::new(cache);
        let k = key(9);
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let (cache, k) = (cache.clone(), k.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        cache.put(&k, &elf(i, 64 * 1024));
                        if let Some(v) = cache.get(&k) {
                            assert_eq!(v.len(), 64 * 1024);
                            assert!(v[64..].iter().all(|b| *b == v[64]), "torn entry");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
