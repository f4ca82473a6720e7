//! The host's end of a sandbox's control socket (`SOCK_SEQPACKET`): one message per packet,
//! descriptors beside a message as `SCM_RIGHTS`. Init holds the other end; when the host's end
//! closes — the instance was destroyed, or the host died — init kills everything and exits.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use vana_sandbox_init::protocol::{DecodeError, HostMessage, InitMessage, MAX_MESSAGE};

use crate::sys::{cvt, Fd};

/// A control-socket failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    /// Init closed its end (it exited).
    #[error("the sandbox init is gone")]
    Closed,
    /// Nothing came within the deadline.
    #[error("the sandbox init did not answer within {0:?}")]
    Timeout(Duration),
    /// A packet did not decode.
    #[error("malformed message from the sandbox: {0}")]
    Decode(#[from] DecodeError),
}

/// A connected pair: the host's end and the end the sandbox inherits.
pub(crate) fn pair() -> io::Result<(Control, Fd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    Ok((Control { fd: Fd(fds[0]) }, Fd(fds[1])))
}

/// The host's end.
#[derive(Debug)]
pub(crate) struct Control {
    pub fd: Fd,
}

const CMSG_SPACE: usize = 64;

impl Control {
    /// Sends `msg` with `fds` beside it.
    pub(crate) fn send(&self, msg: &HostMessage, fds: &[RawFd]) -> Result<(), ControlError> {
        let packet = msg.encode()?;
        let mut iov = libc::iovec {
            iov_base: packet.as_ptr() as *mut libc::c_void,
            iov_len: packet.len(),
        };
        let mut control = [0u64; CMSG_SPACE / 8];
        // SAFETY: a zeroed msghdr is valid; every pointer set below points at a live buffer.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if !fds.is_empty() {
            let data_len = std::mem::size_of_val(fds);
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
            let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
            if space > CMSG_SPACE {
                return Err(ControlError::Io(io::Error::from_raw_os_error(libc::E2BIG)));
            }
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = space;
            // SAFETY: msg_control points at `space` writable bytes; CMSG_FIRSTHDR is non-null.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&hdr);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as usize;
                std::ptr::copy_nonoverlapping(
                    fds.as_ptr().cast::<u8>(),
                    libc::CMSG_DATA(cmsg),
                    data_len,
                );
            }
        }
        loop {
            // SAFETY: `hdr` describes live buffers; MSG_NOSIGNAL: no SIGPIPE if init is gone.
            let n = unsafe { libc::sendmsg(self.fd.raw(), &hdr, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EPIPE) | Some(libc::ECONNRESET) => return Err(ControlError::Closed),
                _ => return Err(ControlError::Io(e)),
            }
        }
    }

    /// Whether a message is waiting (or the peer is gone), without blocking longer than `wait`.
    pub(crate) fn readable(&self, wait: Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, wait.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(io::Error::last_os_error());
        }
        Ok(n > 0)
    }

    /// Receives one message (and at most one descriptor beside it), waiting at most `wait`.
    pub(crate) fn recv(&self, wait: Duration) -> Result<(InitMessage, Option<Fd>), ControlError> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.readable(left)? {
                if Instant::now() >= deadline {
                    return Err(ControlError::Timeout(wait));
                }
                continue;
            }
            if let Some(m) = self.try_recv()? {
                return Ok(m);
            }
        }
    }

    /// Receives one message if one is waiting (the socket is read with `MSG_DONTWAIT`).
    pub(crate) fn try_recv(&self) -> Result<Option<(InitMessage, Option<Fd>)>, ControlError> {
        // Not zeroed first: the kernel writes the `n` bytes that are then read (zeroing 192 KiB
        // per message showed in the host's profile).
        let mut buf: Vec<u8> = Vec::with_capacity(MAX_MESSAGE);
        let mut iov = libc::iovec {
            iov_base: buf.spare_capacity_mut().as_mut_ptr().cast(),
            iov_len: MAX_MESSAGE,
        };
        let mut control = [0u64; CMSG_SPACE / 8];
        // SAFETY: as in `send`.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = CMSG_SPACE;
        // SAFETY: `hdr` describes live buffers.
        let n = unsafe {
            libc::recvmsg(
                self.fd.raw(),
                &mut hdr,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                Some(libc::ECONNRESET) => Err(ControlError::Closed),
                _ => Err(ControlError::Io(e)),
            };
        }
        // Descriptors first, so that none leaks whatever the message turns out to be.
        let mut passed: Vec<Fd> = Vec::new();
        // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let len = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / 4 {
                        let mut raw = [0u8; 4];
                        std::ptr::copy_nonoverlapping(data.add(i * 4), raw.as_mut_ptr(), 4);
                        passed.push(Fd(i32::from_ne_bytes(raw)));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
            }
        }
        if n == 0 {
            return Err(ControlError::Closed);
        }
        // SAFETY: recvmsg wrote `n` (at most `MAX_MESSAGE`, the capacity) bytes at the start.
        unsafe { buf.set_len((n as usize).min(MAX_MESSAGE)) };
        let msg = InitMessage::decode(&buf)?;
        let fd = passed.into_iter().next();
        Ok(Some((msg, fd)))
    }
}
