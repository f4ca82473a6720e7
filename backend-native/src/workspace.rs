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

use async_trait::async_trait;
use vana_sandbox_core::{BackendError, FileEntry, FileInfo, FileKind, Files};

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

/// Opens the directory `dir` (a relative path; `""` for the workspace) without following a link.
fn open_dir_at(workspace: Fd, dir: &str) -> io::Result<Fd> {
    let mut fd = workspace;
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        let c = cname(part)?;
        // SAFETY: NUL-terminated name relative to a descriptor we own; O_NOFOLLOW refuses a link.
        fd = Fd(cvt(unsafe {
            libc::openat(
                fd.raw(),
                c.as_ptr(),
                libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
            )
        })?);
    }
    Ok(fd)
}

/// The entries of the directory open at `dir` (names, without `.` and `..`).
fn entries(dir: &Fd) -> io::Result<Vec<CString>> {
    // SAFETY: dup of a descriptor we own; fdopendir takes the copy, closedir releases it.
    let copy = cvt(unsafe { libc::fcntl(dir.raw(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: as above.
    let d = unsafe { libc::fdopendir(copy) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: closing the copy fdopendir did not take.
        unsafe { libc::close(copy) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: `d` is a valid DIR*; the entry is copied out before the next call.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated within the entry.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
    // SAFETY: closing the DIR* we opened.
    unsafe { libc::closedir(d) };
    Ok(out)
}

fn lstat_at(dir: &Fd, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter; NUL-terminated name; no link followed.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    cvt(unsafe { libc::fstatat(dir.raw(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

fn kind_of(mode: libc::mode_t) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn list_into(dir: &Fd, prefix: &str, max: usize, out: &mut Vec<FileInfo>) -> io::Result<()> {
    let mut names = entries(dir)?;
    names.sort();
    for name in names {
        let st = lstat_at(dir, &name)?;
        let rel = format!("{prefix}{}", name.to_string_lossy());
        let kind = kind_of(st.st_mode);
        if out.len() >= max {
            return Err(io::Error::other(format!("more than {max} entries")));
        }
        out.push(FileInfo {
            path: rel.clone(),
            kind,
            size: if kind == FileKind::File {
                st.st_size as u64
            } else {
                0
            },
        });
        if kind == FileKind::Dir {
            // SAFETY: NUL-terminated name relative to `dir`; no link followed.
            let sub = Fd(cvt(unsafe {
                libc::openat(
                    dir.raw(),
                    name.as_ptr(),
                    libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
                )
            })?);
            list_into(&sub, &format!("{rel}/"), max, out)?;
        }
    }
    Ok(())
}

/// Removes `name` in `dir`: a directory with everything below it, anything else unlinked.
fn remove_at(dir: &Fd, name: &CString) -> io::Result<()> {
    let st = lstat_at(dir, name)?;
    if kind_of(st.st_mode) == FileKind::Dir {
        // SAFETY: as in `list_into`.
        let sub = Fd(cvt(unsafe {
            libc::openat(
                dir.raw(),
                name.as_ptr(),
                libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
            )
        })?);
        for child in entries(&sub)? {
            remove_at(&sub, &child)?;
        }
        // SAFETY: NUL-terminated name relative to `dir`.
        cvt(unsafe { libc::unlinkat(dir.raw(), name.as_ptr(), libc::AT_REMOVEDIR) })?;
    } else {
        // SAFETY: as above.
        cvt(unsafe { libc::unlinkat(dir.raw(), name.as_ptr(), 0) })?;
    }
    Ok(())
}

fn file_error(path: &str, e: io::Error) -> BackendError {
    BackendError::File {
        path: path.to_string(),
        reason: e.to_string(),
    }
}

impl Workspace {
    /// Lists `dir` recursively (at most `max` entries).
    pub(crate) fn list(&self, dir: &str, max: usize) -> Result<Vec<FileInfo>, BackendError> {
        let _ids = AsProgram::enter(self.owner);
        let run = || -> io::Result<Vec<FileInfo>> {
            if !dir.is_empty() {
                vana_sandbox_core::validate::check_relative_path(dir)
                    .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
            }
            let fd = open_dir_at(self.open_workspace()?, dir)?;
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{}/", dir.trim_end_matches('/'))
            };
            let mut out = Vec::new();
            list_into(&fd, &prefix, max, &mut out)?;
            Ok(out)
        };
        run().map_err(|e| file_error(dir, e))
    }

    /// Removes a file, link or directory tree.
    pub(crate) fn remove(&self, path: &str) -> Result<(), BackendError> {
        let _ids = AsProgram::enter(self.owner);
        let run = || -> io::Result<()> {
            vana_sandbox_core::validate::check_relative_path(path)
                .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            let dir = open_dir_at(self.open_workspace()?, parent)?;
            remove_at(&dir, &cname(name)?)
        };
        run().map_err(|e| file_error(path, e))
    }
}

#[async_trait]
impl Files for Workspace {
    async fn put(&self, files: &[FileEntry]) -> Result<(), BackendError> {
        Workspace::put(self, files)
    }

    async fn read(&self, paths: &[String], max_bytes: u64) -> Result<Vec<FileEntry>, BackendError> {
        Workspace::read(self, paths, max_bytes)
    }

    async fn list(&self, dir: &str, max_entries: usize) -> Result<Vec<FileInfo>, BackendError> {
        Workspace::list(self, dir, max_entries)
    }

    async fn remove(&self, path: &str) -> Result<(), BackendError> {
        Workspace::remove(self, path)
    }
}
