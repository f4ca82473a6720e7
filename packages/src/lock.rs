//! `flock` locks on files of the cache: shared while a prepared set is in use (mounted into a
//! sandbox), exclusive to remove one or to install a request's set. A lock file may be removed
//! by whoever holds it exclusively, so taking a lock checks that the path still names the file
//! that was locked, and tries again otherwise.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Many holders (users of a set).
    Shared,
    /// One holder (an installer, an evictor).
    Exclusive,
}

/// A held lock; released when dropped (the descriptor closes).
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
    path: PathBuf,
}

fn flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor this process owns.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

impl FileLock {
    /// Takes the lock at `path` (created when missing), waiting for it unless `wait` is false
    /// (then `None` when someone else holds it in a conflicting mode).
    pub(crate) fn take(path: &Path, mode: Mode, wait: bool) -> io::Result<Option<Self>> {
        let op = match mode {
            Mode::Shared => libc::LOCK_SH,
            Mode::Exclusive => libc::LOCK_EX,
        } | if wait { 0 } else { libc::LOCK_NB };
        loop {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            if !flock(&file, op)? {
                return Ok(None);
            }
            // The file may have been removed (and another made) while we waited.
            let same = std::fs::metadata(path)
                .is_ok_and(|m| file.metadata().is_ok_and(|f| f.ino() == m.ino()));
            if same {
                return Ok(Some(Self {
                    file,
                    path: path.to_path_buf(),
                }));
            }
        }
    }

    /// Turns an exclusive lock into a shared one (atomically: no one else gets it between).
    pub(crate) fn downgrade(&self) -> io::Result<()> {
        flock(&self.file, libc::LOCK_SH).map(drop)
    }

    /// Removes the lock file (only while held exclusively), then releases the lock.
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_excludes_exclusive_and_removal_is_noticed() {
        let dir = std::env::temp_dir().join(format!("vana-pkg-lock-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("x.lock");
        let shared = FileLock::take(&path, Mode::Shared, true).ok().flatten();
        assert!(shared.is_some());
        let ex = FileLock::take(&path, Mode::Exclusive, false).ok().flatten();
        assert!(ex.is_none(), "exclusive while shared is held");
        let also = FileLock::take(&path, Mode::Shared, false).ok().flatten();
        assert!(also.is_some());
        drop((shared, also));
        let ex = FileLock::take(&path, Mode::Exclusive, false).ok().flatten();
        let Some(ex) = ex else {
            panic!("exclusive when free")
        };
        ex.remove();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
