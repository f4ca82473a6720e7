//! A thin layer over the raw system calls the backend uses. Functions here never allocate, so
//! the ones marked *child-safe* may run between clone and exec.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

/// The calling thread's errno.
/// `CLONE_NEWTIME` (not in every `libc` build).
pub(crate) const CLONE_NEWTIME: libc::c_int = 0x80;

pub(crate) fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Maps a `-1` return to `Err(errno)`. Child-safe.
pub(crate) fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// Maps a C int return to an `io::Result`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An owned file descriptor closed on drop (parent side).
#[derive(Debug)]
pub(crate) struct Fd(pub RawFd);

impl From<std::os::fd::OwnedFd> for Fd {
    fn from(fd: std::os::fd::OwnedFd) -> Self {
        Fd(std::os::fd::IntoRawFd::into_raw_fd(fd))
    }
}

impl Fd {
    pub(crate) fn raw(&self) -> RawFd {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: we own this descriptor and close it exactly once.
            unsafe { libc::close(self.0) };
        }
    }
}

/// A pipe with both ends close-on-exec: `(read, write)`.
pub(crate) fn pipe() -> io::Result<(Fd, Fd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let (r, w) = (Fd(fds[0]), Fd(fds[1]));
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// Moves a descriptor to 3 or above, so that dup2 onto 0-2 in the child never clobbers another
/// of our descriptors (the host may run with stdin closed).
fn above_stdio(fd: Fd) -> io::Result<Fd> {
    if fd.0 > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; the original closes when `fd` drops.
    let new = cvt(unsafe { libc::fcntl(fd.0, libc::F_DUPFD_CLOEXEC, 3) })?;
    Ok(Fd(new))
}

/// Sets O_NONBLOCK on a descriptor.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no pointers involved.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Writes all of `buf`, retrying on EINTR. Child-safe.
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid slice for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = buf.get(n as usize..).unwrap_or(&[]);
    }
    Ok(())
}

/// `mount(2)`. Child-safe.
pub(crate) fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), i32> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let r = unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) };
    check(r as libc::c_long).map(drop)
}

/// The signal number and exit code in a wait status.
pub(crate) fn decode_wait(status: libc::c_int) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}
