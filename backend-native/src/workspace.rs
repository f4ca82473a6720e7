//! An instance's writable storage, as the host sees it: a descriptor of the root of the
//! instance's one size-limited tmpfs (holding `workspace/`, `tmp/` and `shm/`), which the setup
//! child mounted inside the sandbox's mount namespace and handed over. No mount exists on the
//! host; the tmpfs goes when the sandbox and this descriptor are gone. The host writes and reads
//! files through it without ever following a link the sandbox may have planted, and with the
//! program's own file-system ids (`setfsuid`, this thread only): the tmpfs belongs to the
//! sandbox's user namespace, where only its ids exist, and the host gets no more rights in the
//! workspace than the program has.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use vana_sandbox_core::{BackendError, FileEntry};

use crate::sys::{cvt, Fd};

/// The instance's storage.
#[derive(Debug)]
pub(crate) struct Workspace {
    root: Fd,
    /// The program's uid and gid as the host sees them: owner of the files the host places.
    owner: (u32, u32),
}

fn cname(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The calling thread's file-system ids switched to the program's, restored on drop.
struct AsProgram {
    uid: libc::c_long,
    gid: libc::c_long,
}

impl AsProgram {
    fn enter((uid, gid): (u32, u32)) -> Self {
        // SAFETY: setfsgid/setfsuid change this thread's file-system ids only; they return the
        // previous ids, restored by Drop before any other work happens on this thread.
        unsafe {
            let gid_before = libc::syscall(libc::SYS_setfsgid, gid);
            let uid_before = libc::syscall(libc::SYS_setfsuid, uid);
            Self {
                uid: uid_before,
                gid: gid_before,
            }
        }
    }
}

impl Drop for AsProgram {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, self.uid);
            libc::syscall(libc::SYS_setfsgid, self.gid);
        }
    }
}

impl Workspace {
    pub(crate) fn new(root: Fd, owner: (u32, u32)) -> Self {
        Self { root, owner }
    }

    /// Bytes used in the tmpfs (workspace, /tmp and /dev/shm together).
    pub(crate) fn usage(&self) -> io::Result<u64> {
        // SAFETY: zeroed statvfs is a valid out-parameter; a descriptor we own.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        cvt(unsafe { libc::fstatvfs(self.root.raw(), &mut st) })?;
        Ok((st.f_blocks - st.f_bfree) * st.f_frsize)
    }

    fn open_workspace(&self) -> io::Result<Fd> {
        // SAFETY: NUL-terminated name relative to a descriptor we own; O_NOFOLLOW refuses a link.
        cvt(unsafe {
            libc::openat(
                self.root.raw(),
                c"workspace".as_ptr(),
                libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
            )
        })
        .map(Fd)
    }

    /// Writes files, creating parent directories; no component may be a symlink.
    pub(crate) fn put(&self, files: &[FileEntry]) -> Result<(), BackendError> {
        let _ids = AsProgram::enter(self.owner);
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
        // SAFETY: fchmod on a descriptor we own (the umask may have narrowed the mode).
        cvt(unsafe { libc::fchmod(fd.raw(), mode) })?;
        Ok(())
    }

    /// Reads files back (regular files only, never through a link, at most `max` bytes each).
    pub(crate) fn read(&self, paths: &[String], max: u64) -> Result<Vec<FileEntry>, BackendError> {
        let _ids = AsProgram::enter(self.owner);
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
}

fn write_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    crate::sys::write_all(fd, buf).map_err(io::Error::from_raw_os_error)
}
