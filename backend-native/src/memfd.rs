//! The `vana-init` image every sandbox's setup child `execveat`s: nothing can change the program
//! PID 1 runs.
//!
//! As root, one copy per init build is kept in the state directory (`init-<sha256>`, owned by
//! root, no write bit, no other name) and opened by every executor: copying the 1.4 MB image
//! into a new memory file cost each process about 1 ms and its own 1.4 MB. The copy is used only
//! when the file and its directory are root's alone, its size is the image's and its mount allows
//! execution; only root can change such a file, and root is trusted on the host anyway. Rootless,
//! the sandbox's own root is the caller's uid (it would own the file), so each executor writes
//! the image into a memfd and seals it, as it does wherever the shared copy cannot be had.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use vana_sandbox_init::{INIT, INIT_SHA256};

use crate::sys::{cvt, Fd};

/// The init executable, open for `execveat`.
#[derive(Debug)]
pub(crate) struct InitImage {
    pub fd: Fd,
}

impl InitImage {
    /// As root (`shared`), the copy kept in `state_dir` (made now if missing), else a sealed memfd.
    pub(crate) fn load(state_dir: &Path, shared: bool) -> io::Result<Self> {
        if shared {
            match shared_copy(state_dir) {
                Ok(fd) => return Ok(Self { fd }),
                Err(e) => {
                    tracing::debug!(error = %e, "the shared init copy is unusable; using a memfd")
                }
            }
        }
        Self::sealed()
    }

    /// Writes [`INIT`] into a new memfd and seals it.
    pub(crate) fn sealed() -> io::Result<Self> {
        // SAFETY: a NUL-terminated name and flag constants.
        let fd = Fd(cvt(unsafe {
            libc::memfd_create(
                c"vana-init".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        })?);
        crate::sys::write_all(fd.raw(), INIT).map_err(io::Error::from_raw_os_error)?;
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on a descriptor we own.
        cvt(unsafe { libc::fcntl(fd.raw(), libc::F_ADD_SEALS, seals) })?;
        Ok(Self { fd })
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))
}

fn fstat(fd: &Fd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor we own and a pointer to a local.
    cvt(unsafe { libc::fstat(fd.raw(), &mut st) })?;
    Ok(st)
}

fn open(path: &CString, flags: libc::c_int) -> io::Result<Fd> {
    // SAFETY: a NUL-terminated path; the descriptor is owned by the returned `Fd`.
    cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) }).map(Fd)
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
}

/// The kept copy, opened read-only and checked; written first if there is none.
fn shared_copy(state_dir: &Path) -> io::Result<Fd> {
    let dir = open(&cstr(state_dir)?, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let d = fstat(&dir)?;
    if d.st_uid != 0 || d.st_mode & 0o022 != 0 {
        return Err(refused("the state directory is not root's alone"));
    }
    let path = cstr(&state_dir.join(format!("init-{INIT_SHA256}")))?;
    let fd = match open(&path, libc::O_RDONLY) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            publish(state_dir, &path)?;
            open(&path, libc::O_RDONLY)?
        }
        other => other?,
    };
    check(&fd)?;
    Ok(fd)
}

/// Root's, a regular file of the image's size with no other name, no write, set-id or sticky
/// bit, on a mount that allows execution.
fn check(fd: &Fd) -> io::Result<()> {
    let st = fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG
        || st.st_uid != 0
        || st.st_mode & 0o7222 != 0
        || st.st_nlink != 1
        || st.st_size as u64 != INIT.len() as u64
    {
        return Err(refused("the shared init copy is not as written"));
    }
    // SAFETY: an all-zero `statvfs` is valid; fstatvfs fills it.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor we own and a pointer to a local.
    cvt(unsafe { libc::fstatvfs(fd.raw(), &mut vfs) })?;
    if vfs.f_flag & libc::ST_NOEXEC != 0 {
        return Err(refused("the state directory's mount forbids execution"));
    }
    Ok(())
}

/// Writes the image under a name of this process, makes it read-only and renames it into place
/// (another process doing the same at once publishes the same bytes); removes other builds'.
fn publish(state_dir: &Path, path: &CString) -> io::Result<()> {
    let tmp = cstr(&state_dir.join(format!(".init-{INIT_SHA256}.{}", std::process::id())))?;
    // SAFETY: a NUL-terminated path.
    unsafe { libc::unlink(tmp.as_ptr()) };
    // SAFETY: a NUL-terminated path and flag constants; the descriptor is owned by `Fd`.
    let fd = Fd(cvt(unsafe {
        libc::open(
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o500 as libc::c_uint,
        )
    })?);
    let written = crate::sys::write_all(fd.raw(), INIT)
        .map_err(io::Error::from_raw_os_error)
        // SAFETY: fchmod on a descriptor we own.
        .and_then(|()| cvt(unsafe { libc::fchmod(fd.raw(), 0o555) }).map(drop))
        // SAFETY: NUL-terminated paths.
        .and_then(|()| cvt(unsafe { libc::rename(tmp.as_ptr(), path.as_ptr()) }).map(drop));
    if written.is_err() {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::unlink(tmp.as_ptr()) };
        return written;
    }
    // Copies of other builds go (a process still using one keeps it open).
    let ours = format!("init-{INIT_SHA256}");
    for entry in std::fs::read_dir(state_dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("init-") && name != ours {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn content(fd: &Fd) -> Vec<u8> {
        std::fs::read(format!("/proc/self/fd/{}", fd.raw())).unwrap()
    }

    /// The copy is made once with the image's bytes, reused, and refused (a memfd instead) when
    /// its directory or the file could have been written by anyone but root.
    #[test]
    fn the_shared_copy_is_the_image_and_is_refused_when_others_could_write_it() {
        assert!(
            is_root(),
            "the shared init copy is root's; run the suite as root, as CI does"
        );
        let dir = std::env::temp_dir().join(format!("vana-init-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        let file = dir.join(format!("init-{INIT_SHA256}"));

        let stale = dir.join("init-0000");
        std::fs::write(&stale, b"an older build's").unwrap();
        let first = shared_copy(&dir).expect("made");
        assert!(!stale.exists(), "an older build's copy was left");
        assert_eq!(content(&first), INIT);
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o555);
        let again = shared_copy(&dir).expect("reused");
        assert_eq!(fstat(&first).unwrap().st_ino, fstat(&again).unwrap().st_ino);

        // A write bit, another name for it, a wrong size: refused.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(shared_copy(&dir).is_err());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::hard_link(&file, dir.join("other-name")).unwrap();
        assert!(shared_copy(&dir).is_err());
        std::fs::remove_file(dir.join("other-name")).unwrap();
        assert!(shared_copy(&dir).is_ok());
        // A directory others may write: refused, and the loader falls back to a sealed memfd.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(shared_copy(&dir).is_err());
        let image = InitImage::load(&dir, true).expect("a memfd");
        assert_eq!(content(&image.fd), INIT);
        assert_ne!(
            fstat(&image.fd).unwrap().st_ino,
            fstat(&first).unwrap().st_ino
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        // Replaced by a file of another size (as root could): refused.
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, b"\x7fELF").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o555)).unwrap();
        assert!(shared_copy(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The memfd cannot be written, grown or shrunk.
    #[test]
    fn the_memfd_is_sealed() {
        let image = InitImage::sealed().unwrap();
        assert_eq!(content(&image.fd), INIT);
        // SAFETY: fcntl on a descriptor we own.
        let seals = unsafe { libc::fcntl(image.fd.raw(), libc::F_GET_SEALS) };
        let want = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & want, want);
    }
}
