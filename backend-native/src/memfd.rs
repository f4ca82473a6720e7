//! `vana-init` in a sealed memfd: written once per executor, `execveat`ed by every sandbox's
//! setup child. Sealed, so nothing can change the program PID 1 runs.

use std::io;

use crate::sys::{cvt, Fd};

/// The init executable, in a sealed memory file.
#[derive(Debug)]
pub(crate) struct InitImage {
    pub fd: Fd,
}

impl InitImage {
    /// Writes `vana_sandbox_init::INIT` into a new memfd and seals it.
    pub(crate) fn create() -> io::Result<Self> {
        // SAFETY: a NUL-terminated name and flag constants.
        let fd = Fd(cvt(unsafe {
            libc::memfd_create(
                c"vana-init".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        })?);
        crate::sys::write_all(fd.raw(), vana_sandbox_init::INIT)
            .map_err(io::Error::from_raw_os_error)?;
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on a descriptor we own.
        cvt(unsafe { libc::fcntl(fd.raw(), libc::F_ADD_SEALS, seals) })?;
        Ok(Self { fd })
    }
}
