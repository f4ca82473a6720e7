//! Detached mounts the host makes for a sandbox (root mode): read-only copies of host trees the
//! setup child cannot reach by path, and a tiny tmpfs holding the device nodes the sandbox binds.
//! The setup child attaches them (`move_mount`) inside its own mount namespace; none of them is
//! ever attached in the host's.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;

use crate::sys::{cvt, Fd};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn set_attr(fd: &Fd, attr_set: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on a detached tree we own, with a valid attribute struct.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.raw(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    } as libc::c_int)?;
    Ok(())
}

fn open_tree(dirfd: RawFd, path: &CStr, flags: libc::c_uint) -> io::Result<Fd> {
    // SAFETY: open_tree on a NUL-terminated path with flag constants.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dirfd,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE | flags,
        )
    } as libc::c_int)?;
    Ok(Fd(fd))
}

/// A detached, read-only copy of the host tree at `host` (`open_tree` + `mount_setattr`), for a
/// mount the setup child cannot reach by path (a toolchain under root's mode-700 home).
pub(crate) fn read_only_tree(host: &str) -> io::Result<Fd> {
    let path = CString::new(host).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = open_tree(libc::AT_FDCWD, &path, 0)?;
    set_attr(
        &fd,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )?;
    Ok(fd)
}

/// The links of `/dev` (to the process's own descriptors, through its `/proc`).
pub(crate) const DEVICE_LINKS: [(&CStr, &CStr); 4] = [
    (c"fd", c"/proc/self/fd"),
    (c"stdin", c"/proc/self/fd/0"),
    (c"stdout", c"/proc/self/fd/1"),
    (c"stderr", c"/proc/self/fd/2"),
];

/// The device nodes a sandbox gets: name, major, minor.
pub(crate) const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
];

/// A sandbox's `/dev`: a detached tmpfs of 4 KiB of its own holding [`DEVICES`] (mode 0666),
/// [`DEVICE_LINKS`] and an empty `shm` (the sandbox's shared memory is bound there), mounted
/// read-only, nosuid and noexec; attached whole. Made per sandbox, so that no two share an
/// inode (inotify on a shared `/dev/null` would tell one sandbox of another's writes), and
/// not bound from the host's `/dev`, which keeps the host's devtmpfs — whose size says how
/// much memory the host has — out of the sandbox's mount table.
pub(crate) fn device_tree() -> io::Result<Fd> {
    // SAFETY: fsopen with a NUL-terminated name and a flag constant.
    let fs = Fd(cvt(
        unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) }
            as libc::c_int,
    )?);
    for (key, value) in [(c"size", c"4k"), (c"nr_inodes", c"16"), (c"mode", c"0755")] {
        // SAFETY: fsconfig on our fs context with NUL-terminated strings.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.raw(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        } as libc::c_int)?;
    }
    // SAFETY: as above, with no key or value.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.raw(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    } as libc::c_int)?;
    // SAFETY: fsmount of the configured context; the result is a detached mount's root.
    let mnt = Fd(cvt(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.raw(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        )
    } as libc::c_int)?);
    for (name, major, minor) in DEVICES {
        let cname =
            CString::new(*name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: mknodat/fchmodat relative to the mount's root with a NUL-terminated name.
        unsafe {
            cvt(libc::mknodat(
                mnt.raw(),
                cname.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(*major, *minor),
            ))?;
            cvt(libc::fchmodat(mnt.raw(), cname.as_ptr(), 0o666, 0))?;
        }
    }
    for (link, to) in DEVICE_LINKS {
        // SAFETY: symlinkat relative to the mount's root with NUL-terminated strings.
        cvt(unsafe { libc::symlinkat(to.as_ptr(), mnt.raw(), link.as_ptr()) })?;
    }
    // SAFETY: mkdirat/fchmodat relative to the mount's root with a NUL-terminated name.
    unsafe {
        cvt(libc::mkdirat(mnt.raw(), c"shm".as_ptr(), 0o1777))?;
        cvt(libc::fchmodat(mnt.raw(), c"shm".as_ptr(), 0o1777, 0))?;
    }
    set_attr(&mnt, MOUNT_ATTR_RDONLY)?;
    Ok(mnt)
}
