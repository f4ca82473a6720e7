//! An instance's writable storage on the host: one size-limited tmpfs holding `workspace/`,
//! `tmp/` and `shm/`, bound into every run of the instance. The host writes and reads files in it
//! without ever following a link the sandbox may have planted.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use vana_sandbox_core::{BackendError, FileEntry};

use crate::sys::{cvt, Fd};

/// A mounted instance directory.
#[derive(Debug)]
pub(crate) struct Workspace {
    pub dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    mounted: bool,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn cname(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl Workspace {
    /// Creates `dir`, mounts a tmpfs of `size` on it and lays out the subdirectories.
    pub(crate) fn create(
        dir: PathBuf,
        size: vana_sandbox_core::Bytes,
        uid: u32,
        gid: u32,
    ) -> Result<Self, BackendError> {
        let bytes = size.get();
        std::fs::create_dir(&dir)
            .map_err(|e| BackendError::setup(format!("mkdir {}", dir.display()), e))?;
        let mut ws = Self {
            dir,
            uid,
            gid,
            mounted: false,
        };
        let target = cpath(&ws.dir).map_err(|e| BackendError::setup("workspace path", e))?;
        // Inodes are bounded too (an inode flood would otherwise only be stopped by memory).
        let inodes = (bytes / 4096).clamp(1024, 1 << 20);
        let data = cname(&format!("size={bytes},nr_inodes={inodes},mode=0700"))
            .map_err(|e| BackendError::setup("tmpfs options", e))?;
        crate::sys::mount(
            Some(c"tmpfs"),
            &target,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&data),
        )
        .map_err(|e| {
            BackendError::setup(
                format!("mount tmpfs on {}", ws.dir.display()),
                io::Error::from_raw_os_error(e),
            )
        })?;
        ws.mounted = true;
        for (sub, mode, owner) in [
            ("workspace", 0o755, Some((uid, gid))),
            ("tmp", 0o1777, None),
            ("shm", 0o1777, None),
        ] {
            let p = ws.dir.join(sub);
            let setup = |e| BackendError::setup(format!("create {}", p.display()), e);
            std::fs::create_dir(&p).map_err(setup)?;
            let c = cpath(&p).map_err(setup)?;
            // SAFETY: NUL-terminated path.
            cvt(unsafe { libc::chmod(c.as_ptr(), mode) }).map_err(setup)?;
            if let Some((u, g)) = owner {
                // SAFETY: NUL-terminated path.
                cvt(unsafe { libc::chown(c.as_ptr(), u, g) }).map_err(setup)?;
            }
        }
        Ok(ws)
    }

    pub(crate) fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    /// Bytes used in the tmpfs (workspace, /tmp and /dev/shm together).
    pub(crate) fn usage(&self) -> io::Result<u64> {
        let c = cpath(&self.dir)?;
        // SAFETY: zeroed statvfs is a valid out-parameter; NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        cvt(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
        Ok((st.f_blocks - st.f_bfree) * st.f_frsize)
    }

    fn open_workspace(&self) -> io::Result<Fd> {
        let c = cpath(&self.workspace())?;
        // SAFETY: NUL-terminated path.
        cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
            )
        })
        .map(Fd)
    }

    /// Writes files, creating parent directories; no component may be a symlink.
    pub(crate) fn put(&self, files: &[FileEntry]) -> Result<(), BackendError> {
        for f in files {
            self.put_one(f).map_err(|e| BackendError::File {
                path: f.path.clone(),
                reason: if e.raw_os_error() == Some(libc::ENOSPC) {
                    "the files exceed the disk limit".into()
                } else {
                    e.to_string()
                },
            })?;
        }
        Ok(())
    }

    fn put_one(&self, f: &FileEntry) -> io::Result<()> {
        vana_sandbox_core::validate::check_relative_path(&f.path)
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        let mut dir = self.open_workspace()?;
        let parts: Vec<&str> = f.path.split('/').collect();
        let (name, parents) = parts.split_last().ok_or(io::ErrorKind::InvalidInput)?;
        for part in parents {
            let c = cname(part)?;
            // SAFETY: NUL-terminated name relative to a directory descriptor we own.
            let r = unsafe { libc::mkdirat(dir.raw(), c.as_ptr(), 0o755) };
            let created = r == 0;
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: as above; O_NOFOLLOW refuses a planted symlink.
            let next = cvt(unsafe {
                libc::openat(
                    dir.raw(),
                    c.as_ptr(),
                    libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
                )
            })?;
            dir = Fd(next);
            if created {
                // SAFETY: fchown on a descriptor we own.
                cvt(unsafe { libc::fchown(dir.raw(), self.uid, self.gid) })?;
            }
        }
        let c = cname(name)?;
        let mode = if f.executable { 0o755 } else { 0o644 };
        // SAFETY: NUL-terminated name relative to `dir`; O_NOFOLLOW refuses a symlink.
        let fd = Fd(cvt(unsafe {
            libc::openat(
                dir.raw(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
        })?);
        write_all(fd.raw(), &f.content)?;
        // SAFETY: fchown/fchmod on a descriptor we own.
        cvt(unsafe { libc::fchown(fd.raw(), self.uid, self.gid) })?;
        // SAFETY: as above.
        cvt(unsafe { libc::fchmod(fd.raw(), mode) })?;
        Ok(())
    }

    /// Reads files back (regular files only, never through a link, at most `max` bytes each).
    pub(crate) fn read(&self, paths: &[String], max: u64) -> Result<Vec<FileEntry>, BackendError> {
        paths
            .iter()
            .map(|p| {
                self.read_one(p, max).map_err(|e| BackendError::File {
                    path: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    fn read_one(&self, path: &str, max: u64) -> io::Result<FileEntry> {
        vana_sandbox_core::validate::check_relative_path(path)
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        let mut dir = self.open_workspace()?;
        let parts: Vec<&str> = path.split('/').collect();
        let (name, parents) = parts.split_last().ok_or(io::ErrorKind::InvalidInput)?;
        for part in parents {
            let c = cname(part)?;
            // SAFETY: NUL-terminated name relative to a descriptor we own.
            dir = Fd(cvt(unsafe {
                libc::openat(
                    dir.raw(),
                    c.as_ptr(),
                    libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
                )
            })?);
        }
        let c = cname(name)?;
        // SAFETY: as above; O_NONBLOCK so that a FIFO cannot stall us.
        let fd = Fd(cvt(unsafe {
            libc::openat(
                dir.raw(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        })?);
        // SAFETY: zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        cvt(unsafe { libc::fstat(fd.raw(), &mut st) })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        if st.st_size as u64 > max.min(vana_sandbox_core::host::MAX_READ_BYTES) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file too large to read back",
            ));
        }
        let mut content = vec![0u8; st.st_size as usize];
        let mut got = 0;
        while got < content.len() {
            let rest = content.get_mut(got..).unwrap_or_default();
            // SAFETY: valid writable slice.
            let n = unsafe { libc::read(fd.raw(), rest.as_mut_ptr().cast(), rest.len()) };
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        content.truncate(got);
        Ok(FileEntry {
            path: path.to_string(),
            content,
            executable: st.st_mode & 0o111 != 0,
        })
    }

    /// Unmounts and removes the directory.
    pub(crate) fn remove(&mut self) -> Result<(), BackendError> {
        if self.mounted {
            unmount(&self.dir)?;
            self.mounted = false;
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::setup(
                format!("remove {}", self.dir.display()),
                e,
            )),
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// Lazily unmounts `dir` (a tmpfs of ours).
pub(crate) fn unmount(dir: &Path) -> Result<(), BackendError> {
    let c = cpath(dir).map_err(|e| BackendError::setup("unmount path", e))?;
    // SAFETY: NUL-terminated path.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(BackendError::setup(
            format!("unmount {}", dir.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn write_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    crate::sys::write_all(fd, buf).map_err(io::Error::from_raw_os_error)
}
