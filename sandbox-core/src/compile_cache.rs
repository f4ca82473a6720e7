//! The compile cache: the same source, toolchain and flags compile once; later runs reuse the
//! binary.
//!
//! Content-addressed (SHA-256 of everything that decides the output), size-bounded with
//! least-recently-used eviction, safe under concurrent writers (write to a unique temporary file,
//! then `rename`), and written only by the host from a compile step that succeeded — a sandbox
//! never writes into it, so no sandbox can poison another's binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// A cache of compiled artifacts.
pub trait CompileCache: Send + Sync {
    /// The artifact stored under `key`, if any (a hit refreshes its recency).
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

impl CompileCache for DirCompileCache {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path(key)?;
        let data = std::fs::read(&path).ok()?;
        // Recency for LRU eviction.
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(data)
    }

    fn put(&self, key: &str, artifact: &[u8]) {
        let Some(path) = self.path(key) else { return };
        if artifact.len() as u64 > self.max_bytes {
            return;
        }
        let tmp = self.dir().join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
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

    #[test]
    fn stores_evicts_and_refuses_bad_keys() {
        let dir = std::env::temp_dir().join(format!("vana-cc-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = DirCompileCache::new(&dir, 3000);
        let Ok(cache) = cache else {
            panic!("create cache")
        };
        cache.put(&key(1), &[1u8; 1000]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put(&key(2), &[2u8; 1000]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(cache.get(&key(1)).map(|v| v.len()), Some(1000)); // refreshes key 1
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put(&key(3), &[3u8; 1500]);
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
                        cache.put(&k, &vec![i; 64 * 1024]);
                        if let Some(v) = cache.get(&k) {
                            assert_eq!(v.len(), 64 * 1024);
                            assert!(v.iter().all(|b| *b == v[0]), "torn entry");
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
