//! Files the host provides to every container, bound read-only: `vana-init` (the library's own
//! copy, so the image never has to carry it), an empty `/etc/resolv.conf`, and — under runc,
//! where `/proc` is the host kernel's — files shown in place of `/proc` entries that would
//! describe the host (its memory, CPU counters, boot time, uptime, load).
//!
//! Files are content-addressed (`<name>-<sha256 prefix>`), written once (temporary file and
//! rename) and checked on reuse.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vana_sandbox_core::compile_cache::CacheKey;

use crate::error::DockerError;

/// Where the files live when the host process is root.
const ROOT_DIR: &str = "/run/vana-sandbox/docker";

/// The directory holding the files, and the two every container gets.
#[derive(Debug)]
pub(crate) struct HostFiles {
    dir: PathBuf,
    /// `vana-init`.
    pub init: String,
    /// An empty file for `/etc/resolv.conf` (with network `none` Docker would otherwise show
    /// the host's resolver configuration).
    pub resolv: String,
}

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> DockerError {
    DockerError::Other(format!("{what} {}: {e}", path.display()))
}

/// The state directory: ours (owned by this uid, not a link), created if needed.
fn state_dir() -> Result<PathBuf, DockerError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let dir = if euid == 0 {
        PathBuf::from(ROOT_DIR)
    } else {
        std::env::temp_dir().join(format!("vana-sandbox-docker-{euid}"))
    };
    std::fs::create_dir_all(&dir).map_err(|e| err("create", &dir, e))?;
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| err("stat", &dir, e))?;
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(err(
            "refusing the state directory",
            &dir,
            "not a directory of ours that only we can write",
        ));
    }
    Ok(dir)
}

impl HostFiles {
    /// Prepares the directory, init and the empty resolv.conf.
    pub(crate) fn prepare() -> Result<Self, DockerError> {
        if has_interpreter(vana_sandbox_init::INIT) {
            return Err(DockerError::Other(
                "vana-init was linked dynamically (the C library's static archive was missing \
                 when the library was built: install libc6-dev and rebuild); containers need \
                 it static"
                    .into(),
            ));
        }
        let dir = state_dir()?;
        let init = put(&dir, "init", vana_sandbox_init::INIT, 0o555)?;
        let resolv = put(&dir, "resolv.conf", b"", 0o444)?;
        Ok(Self { dir, init, resolv })
    }

    /// A read-only file with `content` (for a bind mount); returns its path.
    pub(crate) fn file(&self, name: &str, content: &[u8]) -> Result<String, DockerError> {
        put(&self.dir, name, content, 0o444)
    }
}

/// Whether an ELF executable names a program interpreter (is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(phoff), Some(size), Some(n)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return true;
    };
    (0..usize::from(n)).any(|i| {
        let at = phoff as usize + i * usize::from(size);
        elf.get(at..at + 4)
            .is_none_or(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == PT_INTERP)
    })
}

/// Writes `content` as `<name>-<digest>` in `dir` unless it is there already; returns the path.
fn put(dir: &Path, name: &str, content: &[u8], mode: u32) -> Result<String, DockerError> {
    let digest = CacheKey::new().part(content).finish();
    let path = dir.join(format!("{name}-{}", &digest[..16]));
    if std::fs::read(&path).is_ok_and(|have| have == content) {
        return Ok(path.display().to_string());
    }
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err("write", &path, e)
    })?;
    Ok(path.display().to_string())
}

/// `/proc/meminfo` for a container with `memory` bytes: its limit as the machine's memory.
pub(crate) fn meminfo(memory: u64) -> String {
    let kb = memory / 1024;
    let mut s = String::new();
    for (k, v) in [
        ("MemTotal", kb),
        ("MemFree", kb),
        ("MemAvailable", kb),
        ("Buffers", 0),
        ("Cached", 0),
        ("SwapCached", 0),
        ("Active", 0),
        ("Inactive", 0),
        ("SwapTotal", 0),
        ("SwapFree", 0),
        ("Dirty", 0),
        ("Writeback", 0),
        ("AnonPages", 0),
        ("Mapped", 0),
        ("Shmem", 0),
        ("Slab", 0),
        ("CommitLimit", kb),
        ("Committed_AS", 0),
    ] {
        s.push_str(&format!("{:<16}{v:>8} kB\n", format!("{k}:")));
    }
    s
}

/// `/proc/stat` with `cpus` idle CPUs, no counters, and no boot time (0, as the native
/// backend's view).
pub(crate) fn stat(cpus: usize) -> String {
    let zeros = "0 0 0 0 0 0 0 0 0 0";
    let mut s = format!("cpu  {zeros}\n");
    for i in 0..cpus {
        s.push_str(&format!("cpu{i} {zeros}\n"));
    }
    s.push_str(
        "intr 0\nctxt 0\nbtime 0\nprocesses 0\nprocs_running 1\nprocs_blocked 0\nsoftirq 0\n",
    );
    s
}

/// `/proc/uptime` and `/proc/loadavg` of a machine that just booted and is idle.
pub(crate) const UPTIME: &str = "0.00 0.00\n";
/// See [`UPTIME`].
pub(crate) const LOADAVG: &str = "0.00 0.00 0.00 1/1 1\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_we_bind_is_static() {
        assert!(!has_interpreter(vana_sandbox_init::INIT));
        let dynamic = std::fs::read("/bin/sh").unwrap_or_default();
        assert!(has_interpreter(&dynamic));
    }

    #[test]
    fn generated_proc_files_parse_like_the_kernels() {
        let m = meminfo(64 << 20);
        assert!(m.starts_with("MemTotal:          65536 kB\n"), "{m}");
        assert!(m.contains("MemAvailable:      65536 kB\n"), "{m}");
        let s = stat(2);
        assert_eq!(s.lines().filter(|l| l.starts_with("cpu")).count(), 3);
        assert!(s.contains("btime 0\n"));
    }
}
