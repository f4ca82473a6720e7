//! The sandbox's root filesystem, planned in the parent as a list of [`Op`]s (all strings prepared
//! up front) and carried out by the setup child, inside its own user and mount namespaces,
//! without allocating.
//!
//! Layout: a small tmpfs root; the host's `/usr` (and `/bin`, `/lib*` as the host has them),
//! `/etc/ssl`, `/etc/alternatives` and the toolchains as read-only **overlays** of their own (so
//! the sandbox shares no inode with the host or another sandbox: no inotify on host files, no
//! `flock` between runs, and `statfs` reports the instance's storage, not the host's disk), with
//! `/usr/local` hidden; a generated `/etc`; a minimal `/dev`; a private `/proc` with host-wide
//! entries masked or replaced by views sized to the sandbox; and `/workspace`, `/tmp` and
//! `/dev/shm` bound from the instance's one size-limited tmpfs, which the child mounts on a
//! staging directory (visible only in its namespace) and hands to the host as a descriptor. The
//! root is made read-only at the end.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use vana_sandbox_core::host::{
    in_base, BASE_HIDDEN, PROC_MASKED_DIRS, PROC_MASKED_FILES, PROC_READ_ONLY,
};
use vana_sandbox_core::{Limits, Mount, MountKind};

use crate::procfs;

/// One step of building the root.
pub(crate) enum Op {
    /// `mount(2)`.
    Mount {
        src: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `mkdir(2)` (an existing directory is fine).
    Mkdir { path: CString, mode: libc::mode_t },
    /// `symlink(2)`.
    Symlink { target: CString, link: CString },
    /// Create a file with fixed content.
    File {
        path: CString,
        content: Vec<u8>,
        mode: libc::mode_t,
    },
    /// Write `content` into an existing file (a sysctl of the sandbox's own namespaces).
    Write { path: CString, content: Vec<u8> },
    /// `chown(2)` (ids inside the sandbox's user namespace).
    Chown { path: CString, uid: u32, gid: u32 },
    /// Attach a detached mount tree the host cloned (`open_tree`) at `target` (`move_mount`).
    Attach { tree: RawFd, target: CString },
    /// `umount2(target, MNT_DETACH)`.
    Unmount { target: CString },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Mount {
                src,
                target,
                fstype,
                ..
            } => write!(
                f,
                "mount {} on {} ({})",
                src.as_ref().map_or("-".into(), |s| s.to_string_lossy()),
                target.to_string_lossy(),
                fstype
                    .as_ref()
                    .map_or("bind/remount".into(), |s| s.to_string_lossy())
            ),
            Op::Mkdir { path, .. } => write!(f, "mkdir {}", path.to_string_lossy()),
            Op::Symlink { link, .. } => write!(f, "symlink {}", link.to_string_lossy()),
            Op::File { path, .. } => write!(f, "create {}", path.to_string_lossy()),
            Op::Chown { path, .. } => write!(f, "chown {}", path.to_string_lossy()),
            Op::Write { path, .. } => write!(f, "write {}", path.to_string_lossy()),
            Op::Attach { target, .. } => {
                write!(f, "attach a mount at {}", target.to_string_lossy())
            }
            Op::Unmount { target } => write!(f, "unmount {}", target.to_string_lossy()),
        }
    }
}

fn c(p: impl AsRef<Path>) -> io::Result<CString> {
    CString::new(p.as_ref().as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

const RO_BIND: libc::c_ulong =
    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;

/// Accumulates ops against a root directory.
struct Plan {
    root: PathBuf,
    /// The instance's empty directory, the top layer of every overlay.
    empty: PathBuf,
    /// Where host trees are attached before an overlay is made of them.
    staging: PathBuf,
    /// Files of the instance's own (masked or virtualised host entries), never in the sandbox's
    /// view but through a read-only bind.
    private: PathBuf,
    ops: Vec<Op>,
}

impl Plan {
    fn at(&self, sandbox_path: &str) -> PathBuf {
        self.root.join(sandbox_path.trim_start_matches('/'))
    }

    fn mkdir(&mut self, sandbox_path: &str, mode: libc::mode_t) -> io::Result<()> {
        self.ops.push(Op::Mkdir {
            path: c(self.at(sandbox_path))?,
            mode,
        });
        Ok(())
    }

    fn mount(
        &mut self,
        src: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let opt = |s: Option<&str>| {
            s.map(CString::new)
                .transpose()
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        self.ops.push(Op::Mount {
            src: opt(src)?,
            target: c(target)?,
            fstype: opt(fstype)?,
            flags,
            data: opt(data)?,
        });
        Ok(())
    }

    /// Binds `host` at `sandbox` with `remount_flags` (read-only unless told otherwise).
    fn bind(&mut self, host: &Path, sandbox: &str, remount_flags: libc::c_ulong) -> io::Result<()> {
        let target = self.at(sandbox);
        self.bind_to(host, &target, remount_flags)
    }

    /// Binds `host` at the absolute `target`. The remount keeps the flags the source mount has
    /// (in a user namespace they are locked: the kernel refuses a remount that drops one).
    fn bind_to(
        &mut self,
        host: &Path,
        target: &Path,
        remount_flags: libc::c_ulong,
    ) -> io::Result<()> {
        self.push_bind(host, target, remount_flags | locked_flags(host))
    }

    /// A bind of `source` at `target` remounted with exactly `remount_flags`.
    fn push_bind(
        &mut self,
        source: &Path,
        target: &Path,
        remount_flags: libc::c_ulong,
    ) -> io::Result<()> {
        let host = source;
        let target = target.to_path_buf();
        self.ops.push(Op::Mount {
            src: Some(c(host)?),
            target: c(&target)?,
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        });
        self.ops.push(Op::Mount {
            src: None,
            target: c(&target)?,
            fstype: None,
            flags: remount_flags,
            data: None,
        });
        Ok(())
    }

    /// Binds a file of the sealed private directory at `target`: the new mount has the sealed
    /// mount's flags (read-only, nosuid, nodev, noexec) from the start.
    fn sealed_bind(&mut self, source: &Path, target: &Path) -> io::Result<()> {
        self.ops.push(Op::Mount {
            src: Some(c(source)?),
            target: c(target)?,
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        });
        Ok(())
    }

    /// Presents the host directory `host` at the absolute `target` as a read-only overlay whose
    /// top layer is the instance's empty directory: same content, inodes of its own.
    fn overlay(&mut self, host: &Path, target: &Path) -> io::Result<()> {
        let host_s = host.to_str().filter(|h| !h.contains([':', ',', '\\']));
        let Some(host_s) = host_s else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} cannot be an overlay layer (':', ',' or '\\' in the path)",
                    host.display()
                ),
            ));
        };
        let data = format!("lowerdir={}:{host_s}", self.empty.display());
        self.mount(
            Some("overlay"),
            target,
            Some("overlay"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            Some(&data),
        )
    }

    fn file(&mut self, sandbox_path: &str, content: &[u8], mode: libc::mode_t) -> io::Result<()> {
        self.ops.push(Op::File {
            path: c(self.at(sandbox_path))?,
            content: content.to_vec(),
            mode,
        });
        Ok(())
    }

    fn symlink(&mut self, target: &Path, sandbox_path: &str) -> io::Result<()> {
        self.ops.push(Op::Symlink {
            target: c(target)?,
            link: c(self.at(sandbox_path))?,
        });
        Ok(())
    }
}

/// The flags of the mount `path` is on that a user namespace may not drop (atime behaviour,
/// read-only, nosuid, nodev, noexec).
fn locked_flags(path: &Path) -> libc::c_ulong {
    let Ok(cpath) = c(path) else { return 0 };
    // SAFETY: zeroed statvfs is a valid out-parameter; NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(cpath.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let f = st.f_flag;
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    flags
}

/// A read-only mount of a host path into the sandbox.
pub(crate) enum ExtraMount<'a> {
    /// Bound by path (the setup child can reach it).
    Path(&'a Mount),
    /// A detached copy of the host tree the host made (`open_tree`), for a path the setup child
    /// cannot reach (a toolchain under root's home, mode 700).
    Tree { tree: RawFd, mount: &'a Mount },
}

/// Where the setup child builds the sandbox: empty directories of the host's state directory,
/// mounted on only inside the child's own mount namespace.
pub(crate) struct Stage<'a> {
    /// The new root.
    pub root: &'a Path,
    /// Where the instance's writable tmpfs goes before its parts are bound into the root.
    pub storage: &'a Path,
}

/// Top directories of the host presented in the sandbox when the host has them (a symlink, as
/// on merged-/usr systems, is recreated; a directory becomes an overlay).
const TOP_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// What a sandbox's root is built from.
pub(crate) struct RootSpec<'a> {
    /// Where it is built.
    pub stage: Stage<'a>,
    /// The instance's limits: the storage's size is the disk limit, `/proc` views and IPC
    /// limits follow the memory and CPU limits.
    pub limits: &'a Limits,
    /// Owner (uid and gid inside the sandbox) of the workspace.
    pub owner: u32,
    /// A detached tmpfs holding the device nodes (else the host's are bound).
    pub devices: Option<RawFd>,
    /// Toolchain mounts.
    pub extra: &'a [ExtraMount<'a>],
    /// The setup child is its namespace's root (root mode): only then may it set the IPC
    /// namespace's limits (rootless, the kernel gives those files to an unmapped root).
    pub namespace_root: bool,
}

/// In the instance's private directory: an empty file and an empty directory (read-only, like
/// the whole sealed directory) that masks are bound from.
const EMPTY_FILE: &str = "empty";
const EMPTY_DIR: &str = "empty-dir";

/// Host files under /etc copied into the sandbox's generated /etc when the host has them.
const ETC_COPIES: &[&str] = &["ld.so.cache", "matplotlibrc", "mime.types"];

/// Plans the root and the instance's writable storage.
pub(crate) fn plan(spec: &RootSpec<'_>) -> io::Result<Vec<Op>> {
    let RootSpec {
        stage,
        limits,
        owner,
        devices,
        extra,
        namespace_root,
    } = spec;
    let (limits, owner, devices) = (*limits, *owner, *devices);
    let mut p = Plan {
        root: stage.root.to_path_buf(),
        empty: stage.storage.join(".empty"),
        staging: stage.storage.join(".staging"),
        private: stage.storage.join(".private"),
        ops: Vec::with_capacity(128),
    };
    // Nothing done in this mount namespace may propagate back to the host.
    p.ops.push(Op::Mount {
        src: None,
        target: c("/")?,
        fstype: None,
        flags: libc::MS_REC | libc::MS_PRIVATE,
        data: None,
    });
    storage(&mut p, stage.storage, limits.disk.get(), owner)?;
    let root = stage.root;
    p.mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("size=1m,nr_inodes=1024,mode=0755"),
    )?;
    for d in ["usr", "etc", "dev", "proc", "tmp", "workspace"] {
        p.mkdir(d, 0o755)?;
    }
    let usr = p.at("/usr");
    p.overlay(Path::new("/usr"), &usr)?;
    for top in TOP_DIRS {
        match std::fs::symlink_metadata(top) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(top)?;
                p.symlink(&target, top)?;
            }
            Ok(m) if m.is_dir() => {
                p.mkdir(top, 0o755)?;
                let target = p.at(top);
                p.overlay(Path::new(top), &target)?;
            }
            _ => {}
        }
    }
    etc(&mut p)?;
    dev(&mut p, stage.storage, devices)?;
    let rw = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    p.bind(&stage.storage.join("workspace"), "/workspace", rw)?;
    p.bind(&stage.storage.join("tmp"), "/tmp", rw)?;
    let proc_target = p.at("/proc");
    p.mount(
        Some("proc"),
        &proc_target,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    namespace_limits(&mut p, limits, *namespace_root)?;
    let views = private_files(&mut p, limits)?;
    // What the host administrator installed in the base stays out: an empty read-only
    // directory over it.
    let empty_dir = p.private.join(EMPTY_DIR);
    for hidden in BASE_HIDDEN {
        if Path::new(hidden).is_dir() {
            let target = p.at(hidden);
            p.sealed_bind(&empty_dir, &target)?;
        }
    }
    mask_proc(&mut p)?;
    virtual_proc(&mut p, &views)?;
    for (i, m) in extra.iter().enumerate() {
        extra_mount(&mut p, i, m)?;
    }
    let root_target = p.root.clone();
    p.mount(None, &root_target, None, RO_BIND, None)?;
    Ok(p.ops)
}

/// Limits of the sandbox's own user namespace (`/proc/sys/user`, per namespace): a few inotify
/// instances and watches (kernel memory, bounded per sandbox), and no nested user namespace (the
/// seccomp filter refuses every namespace too).
const USER_LIMITS: &[(&str, &str)] = &[
    ("user/max_inotify_instances", "32"),
    ("user/max_inotify_watches", "8192"),
    ("user/max_user_namespaces", "0"),
];

/// Limits of the sandbox's own IPC namespace: System V shared memory, message queues and
/// semaphores live as long as the namespace (past the process that made them), so their totals
/// are bounded here — shared memory to the memory limit (its pages are also charged to the
/// cgroup), a few small message queues, a few semaphore sets.
fn ipc_limits(limits: &Limits) -> Vec<(&'static str, String)> {
    let memory = limits.memory.get();
    vec![
        ("kernel/shmmni", "32".into()),
        ("kernel/shmmax", memory.to_string()),
        ("kernel/shmall", (memory / 4096).max(1).to_string()),
        ("kernel/msgmni", "16".into()),
        ("kernel/msgmnb", "65536".into()),
        ("kernel/msgmax", "8192".into()),
        ("kernel/sem", "32 1024 32 32".into()),
    ]
}

fn namespace_limits(p: &mut Plan, limits: &Limits, namespace_root: bool) -> io::Result<()> {
    let ipc = if namespace_root {
        ipc_limits(limits)
    } else {
        Vec::new()
    };
    let all = USER_LIMITS
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .chain(ipc);
    for (name, value) in all {
        if proc_entry(&format!("sys/{name}")).is_some() {
            p.ops.push(Op::Write {
                path: c(p.at(&format!("/proc/sys/{name}")))?,
                content: value.into_bytes(),
            });
        }
    }
    Ok(())
}

/// What a `/proc` entry of the host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Dir,
    /// Anything else; `open`: owned by anyone but root, or with a group or other permission bit.
    File {
        open: bool,
    },
}

impl EntryKind {
    /// A file only root may open (`kmsg`, `slabinfo`, `kpage*`, … at mode 0400): no id of a
    /// sandbox is root of the host, and a namespace's capabilities do not override the mode of
    /// a file whose owner is not mapped in it, so a mask over it would be one more mount per
    /// sandbox for nothing.
    fn closed_by_its_mode(self) -> bool {
        self == EntryKind::File { open: false }
    }
}

/// Whether the host's `/proc` has `entry` (relative to `/proc`), and what it is. Which entries
/// exist is the kernel's to decide and does not change while it runs, so each is looked up once
/// per process instead of on every sandbox's plan.
fn proc_entry(entry: &str) -> Option<EntryKind> {
    static SEEN: OnceLock<Mutex<HashMap<String, Option<EntryKind>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    if let Some(known) = seen.lock().unwrap_or_else(|p| p.into_inner()).get(entry) {
        return *known;
    }
    let kind = std::fs::metadata(Path::new("/proc").join(entry))
        .ok()
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            if m.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::File {
                    open: m.uid() != 0 || m.mode() & 0o066 != 0,
                }
            }
        });
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(entry.to_owned(), kind);
    kind
}

/// The instance's private files: the empty file `/proc` masks are bound from and the views of
/// the sandbox that replace host-wide `/proc` entries (memory and CPUs of its limits, no load,
/// its own boot id). Then the directory is sealed: bound onto itself read-only, nosuid, nodev
/// and noexec, so binds made from it carry those flags.
fn private_files(p: &mut Plan, limits: &Limits) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let private = p.private.clone();
    p.ops.push(Op::File {
        path: c(private.join(EMPTY_FILE))?,
        content: Vec::new(),
        mode: 0o444,
    });
    p.ops.push(Op::Mkdir {
        path: c(private.join(EMPTY_DIR))?,
        mode: 0o555,
    });
    let mut views = Vec::new();
    for (i, (entry, content)) in procfs::views(limits).into_iter().enumerate() {
        if proc_entry(entry).is_none() {
            continue;
        }
        let file = private.join(format!("proc-{i}"));
        p.ops.push(Op::File {
            path: c(&file)?,
            content,
            mode: 0o444,
        });
        views.push((file, p.at(&format!("/proc/{entry}"))));
    }
    p.ops.push(Op::Mount {
        src: Some(c(&private)?),
        target: c(&private)?,
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
    });
    p.ops.push(Op::Mount {
        src: None,
        target: c(&private)?,
        fstype: None,
        flags: RO_BIND | libc::MS_NOEXEC,
        data: None,
    });
    Ok(views)
}

/// Replaces host-wide `/proc` entries by the views [`private_files`] wrote.
fn virtual_proc(p: &mut Plan, views: &[(PathBuf, PathBuf)]) -> io::Result<()> {
    for (file, target) in views {
        p.sealed_bind(file, target)?;
    }
    Ok(())
}

/// Makes `/proc` directories that reach the kernel read-only, and hides host-wide entries behind
/// an empty read-only file (a directory: an empty read-only directory) of the instance's own
/// (not `/dev/null`: the sandbox's mount table would show the host's devtmpfs, sized by the
/// host's memory). Both are on the sealed private directory, so each bind is read-only as it is
/// made (a bind takes its source mount's flags): one mount per entry, no remount.
fn mask_proc(p: &mut Plan) -> io::Result<()> {
    // Read-only directories first: a recursive bind made after the masks below would copy the
    // masks under it (`/proc/sys/fs/...`), a second mount for each.
    for d in PROC_READ_ONLY {
        if proc_entry(d) == Some(EntryKind::Dir) {
            let target = p.at(&format!("/proc/{d}"));
            p.ops.push(Op::Mount {
                src: Some(c(&target)?),
                target: c(&target)?,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
            });
            let ro = RO_BIND | libc::MS_NOEXEC;
            p.ops.push(Op::Mount {
                src: None,
                target: c(&target)?,
                fstype: None,
                flags: ro,
                data: None,
            });
        }
    }
    let empty = p.private.join(EMPTY_FILE);
    for f in PROC_MASKED_FILES {
        if proc_entry(f).is_some_and(|k| !k.closed_by_its_mode()) {
            let target = p.at(&format!("/proc/{f}"));
            p.sealed_bind(&empty, &target)?;
        }
    }
    // Directories: the sealed empty directory, bound (no file system of their own to make and
    // tear down per sandbox).
    let empty_dir = p.private.join(EMPTY_DIR);
    for d in PROC_MASKED_DIRS {
        if proc_entry(d) == Some(EntryKind::Dir) {
            let target = p.at(&format!("/proc/{d}"));
            p.sealed_bind(&empty_dir, &target)?;
        }
    }
    Ok(())
}

/// Landlock rules for the sandbox's own paths (after `pivot_root`): read-only everywhere it can
/// see, read-write only in /workspace, /tmp, /dev/shm and the writable device nodes.
pub(crate) fn landlock_rules(extra: &[Mount]) -> io::Result<Vec<crate::landlock::Rule>> {
    use crate::landlock::{fs, Rule, DEV_RW, RO, RW};
    let mut rules = vec![
        ("/".to_string(), fs::READ_DIR),
        ("/usr".into(), RO),
        ("/etc".into(), RO),
        ("/proc".into(), RO),
        ("/dev".into(), fs::READ_FILE | fs::READ_DIR),
        ("/dev/null".into(), DEV_RW),
        ("/dev/zero".into(), DEV_RW),
        ("/dev/full".into(), DEV_RW),
        ("/dev/shm".into(), RW),
        ("/workspace".into(), RW),
        ("/tmp".into(), RW),
    ];
    for top in TOP_DIRS {
        if std::fs::symlink_metadata(top).is_ok_and(|m| m.is_dir()) {
            rules.push((top.to_string(), RO));
        }
    }
    for m in extra {
        rules.push((m.sandbox.clone(), RO));
    }
    rules
        .into_iter()
        .map(|(path, access)| {
            Ok(Rule {
                path: c(&path)?,
                access,
            })
        })
        .collect()
}

/// The instance's one tmpfs (size = the disk limit, bounded inodes) with `workspace/` (owned by
/// the program), `tmp/` and `shm/` (sticky, world-writable).
fn storage(p: &mut Plan, dir: &Path, bytes: u64, owner: u32) -> io::Result<()> {
    // Inodes are bounded too (an inode flood would otherwise only be stopped by memory).
    let inodes = (bytes / 4096).clamp(1024, 1 << 20);
    p.mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&format!("size={bytes},nr_inodes={inodes},mode=0755")),
    )?;
    for (sub, mode) in [
        ("workspace", 0o755),
        ("tmp", 0o1777),
        ("shm", 0o1777),
        (".empty", 0o555),
        (".staging", 0o700),
        (".private", 0o555),
    ] {
        p.ops.push(Op::Mkdir {
            path: c(dir.join(sub))?,
            mode,
        });
    }
    p.ops.push(Op::Chown {
        path: c(dir.join("workspace"))?,
        uid: owner,
        gid: owner,
    });
    Ok(())
}

fn etc(p: &mut Plan) -> io::Result<()> {
    let (uid, gid) = (crate::mode::PROGRAM_ID, crate::mode::PROGRAM_ID);
    let passwd = format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{uid}:{gid}:sandbox:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n");
    p.file("/etc/passwd", passwd.as_bytes(), 0o644)?;
    p.file("/etc/group", group.as_bytes(), 0o644)?;
    p.file("/etc/hostname", b"sandbox\n", 0o644)?;
    p.file(
        "/etc/hosts",
        b"127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost\n",
        0o644,
    )?;
    p.file(
        "/etc/nsswitch.conf",
        b"passwd: files\ngroup: files\nhosts: files\n",
        0o644,
    )?;
    p.file("/etc/resolv.conf", b"", 0o644)?;
    // Copies of the few host files under /etc that ordinary programs read: the dynamic
    // loader's cache, and configuration Debian's packages keep there (matplotlib's defaults).
    for name in ETC_COPIES {
        let host = Path::new("/etc").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_file() && m.len() <= 1 << 20 => {
                let content = std::fs::read(&host)?;
                p.file(&format!("/etc/{name}"), &content, 0o644)?;
            }
            _ => {}
        }
    }
    // Time zones: UTC unless the program sets TZ (the zone database is in /usr).
    if Path::new("/usr/share/zoneinfo/Etc/UTC").exists() {
        p.symlink(Path::new("/usr/share/zoneinfo/Etc/UTC"), "/etc/localtime")?;
        p.file("/etc/timezone", b"Etc/UTC\n", 0o644)?;
    }
    // The alternatives' links, and the CA store HTTPS clients need (read-only; `private/`
    // stays unreadable: its mode is the host's).
    for dir in ["/etc/alternatives", "/etc/ssl"] {
        if Path::new(dir).is_dir() {
            p.mkdir(dir, 0o755)?;
            let target = p.at(dir);
            p.overlay(Path::new(dir), &target)?;
        }
    }
    Ok(())
}

fn dev(p: &mut Plan, storage: &Path, devices: Option<RawFd>) -> io::Result<()> {
    let target = p.at("/dev");
    match devices {
        // The sandbox's own device tmpfs, complete and read-only: attached whole.
        Some(tree) => p.ops.push(Op::Attach {
            tree,
            target: c(&target)?,
        }),
        // Rootless: a tmpfs with the host's nodes bound in.
        None => {
            p.mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=64k,nr_inodes=64,mode=0755"),
            )?;
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NOEXEC;
            for (node, _, _) in crate::mounts::DEVICES {
                let path = format!("/dev/{node}");
                p.file(&path, b"", 0o666)?;
                let target = p.at(&path);
                p.bind_to(&Path::new("/dev").join(node), &target, flags)?;
            }
            for (link, to) in crate::mounts::DEVICE_LINKS {
                let link = format!("/dev/{}", link.to_string_lossy());
                p.symlink(Path::new(&*to.to_string_lossy()), &link)?;
            }
            p.mkdir("/dev/shm", 0o1777)?;
        }
    }
    p.bind(
        &storage.join("shm"),
        "/dev/shm",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    Ok(())
}

/// An extra mount (a toolchain, packages), the `index`th. Paths already visible through `/usr`
/// need nothing. A directory becomes an overlay (a detached tree is attached on a staging
/// directory first, the overlay made of it, and the staging mount dropped), except a
/// [`MountKind::Live`] one, which is bound as it is; a single file is bound.
fn extra_mount(p: &mut Plan, index: usize, extra: &ExtraMount<'_>) -> io::Result<()> {
    let m = match extra {
        ExtraMount::Path(m) => *m,
        ExtraMount::Tree { mount, .. } => *mount,
    };
    if m.host == m.sandbox && in_base(Path::new(&m.host)) {
        return Ok(());
    }
    let sandbox = Path::new(&m.sandbox);
    if !sandbox.is_absolute()
        || sandbox
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("toolchain mount target {} must be absolute", m.sandbox),
        ));
    }
    let reserved = ["/usr", "/workspace", "/tmp", "/proc", "/dev", "/etc"];
    if reserved.iter().any(|r| sandbox.starts_with(r)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("toolchain mount target {} is reserved", m.sandbox),
        ));
    }
    let mut acc = PathBuf::from("/");
    let comps: Vec<_> = sandbox.components().skip(1).collect();
    let host_is_dir = match extra {
        ExtraMount::Tree { .. } => true,
        ExtraMount::Path(_) => Path::new(&m.host).is_dir(),
    };
    for (i, comp) in comps.iter().enumerate() {
        acc.push(comp);
        let last = i + 1 == comps.len();
        let s = acc.to_string_lossy().into_owned();
        if last && !host_is_dir {
            p.file(&s, b"", 0o644)?;
        } else {
            p.mkdir(&s, 0o755)?;
        }
    }
    let target = p.at(&m.sandbox);
    let live = m.kind == MountKind::Live;
    match extra {
        ExtraMount::Path(_) if !host_is_dir || live => {
            p.bind(Path::new(&m.host), &m.sandbox, RO_BIND)
        }
        ExtraMount::Path(_) => p.overlay(Path::new(&m.host), &target),
        ExtraMount::Tree { tree, .. } if live => {
            // A live directory: the host adds to it while the sandbox runs, which an overlay
            // would not show safely. The tree is a read-only, nosuid, nodev bind of it already.
            p.ops.push(Op::Attach {
                tree: *tree,
                target: c(&target)?,
            });
            Ok(())
        }
        ExtraMount::Tree { tree, .. } => {
            // The host made the tree read-only, nosuid and nodev before handing it over.
            let staged = p.staging.join(index.to_string());
            p.ops.push(Op::Mkdir {
                path: c(&staged)?,
                mode: 0o700,
            });
            p.ops.push(Op::Attach {
                tree: *tree,
                target: c(&staged)?,
            });
            p.overlay(&staged, &target)?;
            p.ops.push(Op::Unmount {
                target: c(&staged)?,
            });
            Ok(())
        }
    }
}
