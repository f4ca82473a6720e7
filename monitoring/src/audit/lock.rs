//! One writer per log directory across processes. Two processes appending to one chain would
//! both continue from the same last line and fork it (and race for the next file name), so a
//! writer holds a POSIX record lock on `<dir>/.<prefix>.lock` for its life; the kernel releases
//! it when the writer's process dies, SIGKILL included.
//!
//! The lock is per process (POSIX `F_SETLK`): inside one process, share one
//! [`AuditLog`](super::AuditLog) instead of starting two on the same directory.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::AuditError;

/// Held for the writer's life; dropping it (closing the file) releases the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// A whole-file write lock request for `fcntl`.
fn whole_file(kind: libc::c_short) -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value of every field.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0;
    fl
}

/// The pid of the process holding the lock on `file`, if another one does.
fn holder(file: &File) -> Option<i32> {
    let mut fl = whole_file(libc::F_WRLCK as libc::c_short);
    // SAFETY: the descriptor is open for the call and `fl` is a valid, writable `flock`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    (r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_pid)
}

/// Takes the lock of `dir`, waiting at most `wait` for another process to let it go.
///
/// `Ok(None)`: the lock file cannot be made or locked here (a directory that cannot be
/// created yet, a file system without locks); the writer goes on and reports write failures as
/// it always does. `Err(InUse)`: another live process writes this log.
pub(crate) fn lock(
    dir: &Path,
    prefix: &str,
    wait: Duration,
) -> Result<Option<DirLock>, AuditError> {
    let path = dir.join(format!(".{prefix}.lock"));
    let opened = fs::create_dir_all(dir).and_then(|()| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
    });
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(lock = %path.display(), error = %e, "audit log: cannot open the directory's lock file; writing without it");
            return Ok(None);
        }
    };
    let deadline = Instant::now() + wait;
    loop {
        let fl = whole_file(libc::F_WRLCK as libc::c_short);
        // SAFETY: the descriptor is open for the call and `fl` is a valid `flock`.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
        if r == 0 {
            return Ok(Some(DirLock { _file: file }));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => {
                if Instant::now() >= deadline {
                    return Err(AuditError::InUse {
                        dir: dir.to_path_buf(),
                        pid: holder(&file),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                tracing::warn!(lock = %path.display(), error = %e, "audit log: cannot lock the directory; writing without the lock");
                return Ok(None);
            }
        }
    }
}
