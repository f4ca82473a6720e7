//! Host-wide leases of id blocks: no two live sandboxes, of any process on the host, share a
//! uid, so no per-uid kernel quota (processes, pending signals, inotify instances, POSIX timers)
//! is shared with a neighbour.
//!
//! A lease is an exclusive `flock` on `<dir>/<index>.lock`, held for as long as the instance
//! lives. The kernel drops the lock when its holder dies, however it dies, so a crashed owner's
//! leases are free again at once; a stale lock file is simply reused.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why no lease could be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Every block is held by a live sandbox.
    #[error("all {count} sandbox id blocks under {} are in use", dir.display())]
    Exhausted {
        /// The lease directory.
        dir: PathBuf,
        /// How many blocks there are.
        count: u32,
    },
    /// The lease file could not be created or locked.
    #[error("lease file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (a full state directory, say).
        #[source]
        source: io::Error,
    },
}

/// A held lease on block `index`; dropping it releases the block.
#[derive(Debug)]
pub(crate) struct Lease {
    pub index: u32,
    _file: File,
}

/// Takes a free block of `count` under `dir`, starting the search at `hint` (so that concurrent
/// takers rarely contend for the same file).
pub(crate) fn take(dir: &Path, count: u32, hint: u32) -> Result<Lease, LeaseError> {
    for i in 0..count {
        let index = (hint.wrapping_add(i)) % count;
        let path = dir.join(format!("{index}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| LeaseError::Io {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Lease { index, _file: file });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(LeaseError::Io { path, source: e });
        }
    }
    Err(LeaseError::Exhausted {
        dir: dir.to_path_buf(),
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_held_until_dropped_and_never_shared() {
        let dir = std::env::temp_dir().join(format!("vana-lease-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(std::fs::create_dir_all(&dir).is_ok());
        let a = take(&dir, 2, 0);
        let b = take(&dir, 2, 0);
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("two leases of two blocks")
        };
        assert_ne!(a.index, b.index);
        assert!(matches!(
            take(&dir, 2, 1),
            Err(LeaseError::Exhausted { .. })
        ));
        let freed = a.index;
        drop(a);
        assert_eq!(take(&dir, 2, 0).ok().map(|l| l.index), Some(freed));
        // A lock file left by a dead owner (no lock on it) is simply reused.
        assert!(std::fs::write(dir.join("7.lock"), b"stale").is_ok());
        assert_eq!(take(&dir, 8, 7).ok().map(|l| l.index), Some(7));
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let e = take(Path::new("/proc/vana-no-such-dir"), 4, 0);
        assert!(matches!(e, Err(LeaseError::Io { .. })), "{e:?}");
    }
}
