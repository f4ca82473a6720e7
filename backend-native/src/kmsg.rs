//! Kernel evidence of a seccomp kill. A program can end itself with `SIGSYS` (`raise(SIGSYS)`),
//! so the signal alone proves nothing; the kernel's audit record of the kill (type 1326, logged to
//! the kernel log when no audit daemon takes it) does, and the program cannot write the kernel
//! log. Reading it needs root (`CAP_SYSLOG`, or `dmesg_restrict=0`); without it, or when the
//! record is missing (an audit daemon took it, the ring wrapped), there is no evidence and the
//! run is reported as killed by signal 31, nothing more.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The audit record type of a seccomp action.
const AUDIT_SECCOMP: &str = "type=1326";
/// How far before the run's start a record may be dated (the kernel log's clock and the host's
/// monotonic clock are not the same clock).
const SLACK: Duration = Duration::from_secs(2);
/// Most bytes of the kernel log read looking for the record.
const MAX_SCAN_BYTES: usize = 8 << 20;

/// A seccomp kill the kernel logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeccompKill {
    /// The system call number (with the x32 bit, if it was one).
    pub syscall: u64,
    /// The audit architecture (`c000003e` is x86-64, `40000003` i386).
    pub arch: String,
}

/// The host's monotonic clock now (the kernel log's time base, near enough).
pub(crate) fn now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The kernel's record of a seccomp kill of a process with host uid `uid` logged since `since`
/// (a [`now`] reading), if the kernel log has one and this process may read it.
pub(crate) fn seccomp_kill(uid: u32, since: Duration) -> Option<SeccompKill> {
    // SAFETY: open of a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c"/dev/kmsg".as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let since_us = since.saturating_sub(SLACK).as_micros() as u64;
    let mut buf = vec![0u8; 8192];
    let mut scanned = 0;
    let mut found = None;
    while scanned < MAX_SCAN_BYTES {
        // SAFETY: read into a buffer of its length; one read returns one record.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                // Records were overwritten while reading: go on with the next.
                Some(libc::EPIPE) => continue,
                _ => break,
            }
        }
        if n == 0 {
            break;
        }
        scanned += n as usize;
        let record = String::from_utf8_lossy(buf.get(..n as usize).unwrap_or_default());
        if let Some(kill) = parse(&record, uid, since_us) {
            found = Some(kill);
        }
    }
    found
}

/// Parses one `/dev/kmsg` record (`prio,seq,usecs,flags;message`): a seccomp kill of `uid`
/// dated at or after `since_us`.
fn parse(record: &str, uid: u32, since_us: u64) -> Option<SeccompKill> {
    let (header, message) = record.split_once(';')?;
    let usecs: u64 = header.split(',').nth(2)?.parse().ok()?;
    if usecs < since_us || !message.contains(AUDIT_SECCOMP) {
        return None;
    }
    let field = |key: &str| {
        message
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    if field("uid")? != uid.to_string() {
        return None;
    }
    // SIGSYS, and a kill (SECCOMP_RET_KILL_THREAD is 0, _KILL_PROCESS 0x80000000).
    if field("sig")? != "31" || !matches!(field("code")?, "0x0" | "0x80000000") {
        return None;
    }
    Some(SeccompKill {
        syscall: field("syscall")?.parse().ok()?,
        arch: field("arch")?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "5,1234,7434913396,-;audit: type=1326 audit(1796047667.241:21): auid=4294967295 uid=10001 gid=10001 ses=4294967295 pid=10238 comm=\"python3\" exe=\"/usr/bin/python3.11\" sig=31 arch=c000003e syscall=1073741863 compat=0 ip=0x7f893178e829 code=0x80000000\n";

    #[test]
    fn a_kill_of_the_uid_since_the_start_is_evidence() {
        let k = parse(LINE, 10001, 7_434_000_000);
        assert_eq!(
            k,
            Some(SeccompKill {
                syscall: 1_073_741_863,
                arch: "c000003e".into()
            })
        );
    }

    #[test]
    fn other_uids_older_records_and_other_actions_are_not() {
        assert_eq!(parse(LINE, 10002, 0), None);
        assert_eq!(parse(LINE, 10001, 7_500_000_000), None);
        let errno = LINE.replace("code=0x80000000", "code=0x50026");
        assert_eq!(parse(&errno, 10001, 0), None);
        let other = LINE.replace("type=1326", "type=1400");
        assert_eq!(parse(&other, 10001, 0), None);
        assert_eq!(parse("garbage", 10001, 0), None);
    }
}
