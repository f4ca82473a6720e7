//! Landlock for every native run, through raw system calls: the parent creates the ruleset (the
//! rights to handle depend on the kernel's ABI), the child adds its path rules after
//! `pivot_root` (sandbox paths, opened `O_PATH`) and restricts itself. No allocation in the child.
//!
//! Why not the `landlock` crate: the rules name paths of the sandbox's new root, which exist only
//! in the setup child after `pivot_root` — between `clone` and `execve`, where nothing may
//! allocate or lock. The crate's builders allocate (`PathFd::new` makes a `CString`, rulesets
//! collect into `Vec`s) and its errors carry heap data; the three system calls used here do not.
//!
//! TCP is not handled: the sandbox has a network namespace of its own, so a local server on its
//! loopback reaches nobody (and the proxy, when allowed, is reached over a Unix socket).

use std::ffi::CString;
use std::os::fd::RawFd;

use crate::sys::{self, Fd};

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

/// Filesystem rights.
pub(crate) mod fs {
    pub const EXECUTE: u64 = 1 << 0;
    pub const WRITE_FILE: u64 = 1 << 1;
    pub const READ_FILE: u64 = 1 << 2;
    pub const READ_DIR: u64 = 1 << 3;
    pub const REMOVE_DIR: u64 = 1 << 4;
    pub const REMOVE_FILE: u64 = 1 << 5;
    pub const MAKE_DIR: u64 = 1 << 7;
    pub const MAKE_REG: u64 = 1 << 8;
    pub const MAKE_SOCK: u64 = 1 << 9;
    pub const MAKE_FIFO: u64 = 1 << 10;
    pub const MAKE_SYM: u64 = 1 << 12;
    pub const REFER: u64 = 1 << 13;
    pub const TRUNCATE: u64 = 1 << 14;
    pub const IOCTL_DEV: u64 = 1 << 15;
}

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

/// The ABI that gives everything this backend asks of Landlock (filesystem rights, scopes).
pub(crate) const FULL_ABI: u32 = 6;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The kernel's Landlock ABI version, 0 when unavailable.
pub(crate) fn abi() -> u32 {
    // SAFETY: the version query takes no attribute pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        0
    } else {
        r as u32
    }
}

/// Every filesystem right the kernel with `abi` can handle.
pub(crate) fn fs_rights(abi: u32) -> u64 {
    let mut all = (1 << 13) - 1; // ABI 1: bits 0-12
    if abi >= 2 {
        all |= fs::REFER;
    }
    if abi >= 3 {
        all |= fs::TRUNCATE;
    }
    if abi >= 5 {
        all |= fs::IOCTL_DEV;
    }
    all
}

/// Read-only rights (read, list, execute).
pub(crate) const RO: u64 = fs::EXECUTE | fs::READ_FILE | fs::READ_DIR;
/// Rights on writable trees: everything but device nodes.
pub(crate) const RW: u64 = RO
    | fs::WRITE_FILE
    | fs::REMOVE_DIR
    | fs::REMOVE_FILE
    | fs::MAKE_DIR
    | fs::MAKE_REG
    | fs::MAKE_SOCK
    | fs::MAKE_FIFO
    | fs::MAKE_SYM
    | fs::REFER
    | fs::TRUNCATE;
/// Rights on writable device nodes (/dev/null and friends).
pub(crate) const DEV_RW: u64 = fs::READ_FILE | fs::WRITE_FILE | fs::TRUNCATE;

/// One path rule for the child: a sandbox path and its rights.
pub(crate) struct Rule {
    pub path: CString,
    pub access: u64,
}

/// A ruleset created in the parent.
pub(crate) struct Ruleset {
    pub fd: Fd,
    pub handled_fs: u64,
}

/// Creates the ruleset for a run: every filesystem right the kernel knows is handled (denied
/// unless a rule allows it); abstract Unix sockets and signals are scoped to the sandbox.
pub(crate) fn create(abi: u32) -> std::io::Result<Ruleset> {
    let handled_fs = fs_rights(abi);
    let attr = RulesetAttr {
        handled_access_fs: handled_fs,
        handled_access_net: 0,
        scoped: if abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    };
    let size = match abi {
        0 => return Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
        1..=3 => 8,
        4 | 5 => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    // SAFETY: `attr` is valid for `size` bytes (a prefix of the struct per ABI).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned to us.
    unsafe { libc::fcntl(fd as RawFd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(Ruleset {
        fd: Fd(fd as RawFd),
        handled_fs,
    })
}

/// Adds `rules` (sandbox paths, skipping those that do not exist) to the ruleset. Child-safe.
/// Init restricts itself with the ruleset after `execve`.
pub(crate) fn add_rules(ruleset: RawFd, handled_fs: u64, rules: &[Rule]) -> Result<(), i32> {
    for rule in rules {
        // SAFETY: NUL-terminated path.
        let fd = unsafe { libc::open(rule.path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            if sys::errno() == libc::ENOENT {
                continue;
            }
            return Err(sys::errno());
        }
        let attr = PathBeneathAttr {
            allowed_access: rule.access & handled_fs,
            parent_fd: fd,
        };
        // SAFETY: `attr` is a valid path-beneath attribute; `fd` is ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32,
            )
        };
        let e = sys::errno();
        // SAFETY: closing the O_PATH descriptor we opened.
        unsafe { libc::close(fd) };
        if r < 0 {
            return Err(e);
        }
    }
    Ok(())
}
