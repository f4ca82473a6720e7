//! Small helpers for cgroupfs files.

use std::fs;
use std::os::fd::{IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CgroupError;

pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| CgroupError::io("write", path, e))
}

pub(crate) use vana_sandbox_core::host::cgroupfs::{parse_key, parse_u64};

/// A cgroup file an instance reads or resets at every run, open for the instance's life:
/// cgroupfs serves each read at offset 0 afresh and takes each write whole, so a run pays no
/// path walk (a dozen per run, through paths of eight components, were most of the host's
/// share of a run's cgroup work). `None` inside: the file does not exist on this host (an
/// optional controller file), and reads find nothing.
pub(crate) struct Knob(Option<fs::File>);

impl Knob {
    /// `dir/name`, for reading.
    pub(crate) fn read_only(dir: &Path, name: &str) -> Self {
        Self(fs::File::open(dir.join(name)).ok())
    }

    /// `dir/name`, for reading and resetting.
    pub(crate) fn read_write(dir: &Path, name: &str) -> Self {
        Self(
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(name))
                .ok(),
        )
    }

    /// The file's text now (cgroup files read here are small; a longer one is cut).
    fn read(&self, buf: &mut [u8]) -> Option<usize> {
        use std::os::unix::fs::FileExt;
        self.0.as_ref()?.read_at(buf, 0).ok()
    }

    /// The file's one number.
    pub(crate) fn u64(&self) -> Option<u64> {
        let mut buf = [0u8; 64];
        let n = self.read(&mut buf)?;
        parse_u64(std::str::from_utf8(buf.get(..n)?).ok()?)
    }

    /// The value of `key` in the flat-keyed file.
    pub(crate) fn key(&self, key: &str) -> Option<u64> {
        let mut buf = [0u8; 2048];
        let n = self.read(&mut buf)?;
        parse_key(std::str::from_utf8(buf.get(..n)?).ok()?, key)
    }

    /// Writes `value` (a reset); false if the file is missing or refused it.
    pub(crate) fn write(&self, value: &[u8]) -> bool {
        use std::os::unix::fs::FileExt;
        self.0
            .as_ref()
            .is_some_and(|f| f.write_at(value, 0).is_ok_and(|n| n == value.len()))
    }
}

/// The file a new sandbox's first process writes `0` to in order to join a cgroup.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JoinFile {
    /// `cgroup.procs`: moves the whole process (cgroup v2).
    Procs,
    /// `tasks`: moves the calling thread only (cgroup v1). The setup child is single-threaded,
    /// so this is the same move, but the kernel skips the global threadgroup lock for a
    /// single thread — whose write side waits for an RCU grace period (several milliseconds)
    /// whenever no migration happened in the previous one.
    Tasks,
}

pub(crate) fn open_join(dir: &Path, file: JoinFile) -> Result<RawFd, CgroupError> {
    let path = dir.join(match file {
        JoinFile::Procs => "cgroup.procs",
        JoinFile::Tasks => "tasks",
    });
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map(IntoRawFd::into_raw_fd)
        .map_err(|e| CgroupError::io("open", path, e))
}

pub(crate) fn pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs every task listed in `cgroup.procs` until the list is empty (bounded).
pub(crate) fn kill_listed(dir: &Path) {
    for _ in 0..200 {
        let pids = pids(dir);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// rmdir with retries: a cgroup stays busy for a moment after its last task is reaped.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut last = None;
    for i in 0..500 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_micros(if i < 20 { 200 } else { 2000 }));
    }
    Err(CgroupError::io(
        "rmdir",
        dir,
        last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EBUSY)),
    ))
}

/// Child directories of `base` (leftover candidates).
pub(crate) fn children(base: &Path) -> Vec<(String, PathBuf)> {
    fs::read_dir(base)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates a run's own cgroup directory: one that exists already belongs to another run, which
/// this one must never join (its limits, counters and kills would be shared).
pub(crate) fn create_new_dir(dir: &Path) -> Result<(), CgroupError> {
    fs::create_dir(dir).map_err(|e| CgroupError::io("mkdir", dir, e))
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::io("mkdir", dir, e)),
    }
}
