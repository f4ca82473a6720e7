//! The sandbox's root filesystem, planned in the parent as a list of [`Op`]s (all strings prepared
//! up front) and carried out by the child without allocating.
//!
//! Layout: a small tmpfs root, read-only binds of the host's `/usr` (and `/bin`, `/lib*` as the
//! host has them), a generated `/etc`, a minimal `/dev`, a private `/proc`, and `/workspace`,
//! `/tmp` and `/dev/shm` bound from the instance's size-limited tmpfs. The root is made read-only
//! at the end.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use vana_sandbox_core::host::{PROC_MASKED_DIRS, PROC_MASKED_FILES, PROC_READ_ONLY};
use vana_sandbox_core::Mount;

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

/// Identity of the unprivileged sandbox user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Where the instance's writable storage lives on the host.
pub(crate) struct InstanceDirs<'a> {
    pub workspace: &'a Path,
    pub tmp: &'a Path,
    pub shm: &'a Path,
}

/// Plans the root under `root` (an empty directory the child mounts a tmpfs on).
pub(crate) fn plan(
    root: &Path,
    dirs: &InstanceDirs<'_>,
    extra: &[Mount],
    ids: Ids,
) -> io::Result<Vec<Op>> {
    let mut p = Plan {
        root: root.to_path_buf(),
        ops: Vec::with_capacity(64),
    };
    // Nothing done in this mount namespace may propagate back to the host.
    p.ops.push(Op::Mount {
        src: None,
        target: c("/")?,
        fstype: None,
        flags: libc::MS_REC | libc::MS_PRIVATE,
        data: None,
    });
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
    p.bind(Path::new("/usr"), "/usr", RO_BIND)?;
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::symlink_metadata(top) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(top)?;
                p.symlink(&target, top)?;
            }
            Ok(m) if m.is_dir() => {
                p.mkdir(top, 0o755)?;
                p.bind(Path::new(top), top, RO_BIND)?;
            }
            _ => {}
        }
    }
    etc(&mut p, ids)?;
    dev(&mut p, dirs)?;
    let rw = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    p.bind(dirs.workspace, "/workspace", rw)?;
    p.bind(dirs.tmp, "/tmp", rw)?;
    let proc_target = p.at("/proc");
    p.mount(
        Some("proc"),
        &proc_target,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    mask_proc(&mut p)?;
    for m in extra {
        toolchain_mount(&mut p, m)?;
    }
    let root_target = p.root.clone();
    p.mount(None, &root_target, None, RO_BIND, None)?;
    Ok(p.ops)
}

fn mask_proc(p: &mut Plan) -> io::Result<()> {
    let host = Path::new("/proc");
    for f in PROC_MASKED_FILES {
        if host.join(f).exists() {
            let target = p.at(&format!("/proc/{f}"));
            p.ops.push(Op::Mount {
                src: Some(c("/dev/null")?),
                target: c(&target)?,
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            });
        }
    }
    for d in PROC_MASKED_DIRS {
        if host.join(d).is_dir() {
            let target = p.at(&format!("/proc/{d}"));
            let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            p.mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                flags,
                Some("size=0,nr_inodes=1,mode=0555"),
            )?;
        }
    }
    for d in PROC_READ_ONLY {
        if host.join(d).is_dir() {
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
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
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

fn etc(p: &mut Plan, ids: Ids) -> io::Result<()> {
    let Ids { uid, gid } = ids;
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
    if Path::new("/etc/ld.so.cache").is_file() {
        p.file("/etc/ld.so.cache", b"", 0o644)?;
        p.bind(Path::new("/etc/ld.so.cache"), "/etc/ld.so.cache", RO_BIND)?;
    }
    if Path::new("/etc/alternatives").is_dir() {
        p.mkdir("/etc/alternatives", 0o755)?;
        p.bind(Path::new("/etc/alternatives"), "/etc/alternatives", RO_BIND)?;
    }
    Ok(())
}

fn dev(p: &mut Plan, dirs: &InstanceDirs<'_>) -> io::Result<()> {
    let target = p.at("/dev");
    p.mount(
        Some("tmpfs"),
        &target,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("size=64k,nr_inodes=64,mode=0755"),
    )?;
    for node in ["null", "zero", "full", "random", "urandom"] {
        let path = format!("/dev/{node}");
        p.file(&path, b"", 0o666)?;
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NOEXEC;
        p.bind(Path::new(&path), &path, flags)?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        p.symlink(Path::new(to), &format!("/dev/{link}"))?;
    }
    p.mkdir("/dev/shm", 0o1777)?;
    p.bind(
        dirs.shm,
        "/dev/shm",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    Ok(())
}

/// A toolchain bind. Paths already visible through `/usr` need nothing.
fn toolchain_mount(p: &mut Plan, m: &Mount) -> io::Result<()> {
    if m.host == m.sandbox && (m.sandbox == "/usr" || m.sandbox.starts_with("/usr/")) {
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
    let host_is_dir = Path::new(&m.host).is_dir();
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
    p.bind(Path::new(&m.host), &m.sandbox, RO_BIND)
}
