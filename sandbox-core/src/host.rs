//! Facts and helpers every backend shares: who owns a sandbox (and whether that process is still
//! alive), which `/proc` entries are hidden, how cgroup files are read, how much a file read
//! back may hold. One copy, so the backends cannot drift apart.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::limits::{Bytes, Limits};

/// Most bytes a backend returns when a file is read back from a workspace.
pub const MAX_READ_BYTES: u64 = 64 << 20;

/// Host directories of the base that a sandbox never sees (what a host administrator installed
/// beside the distribution's packages). A toolchain there is mounted like one outside the base.
pub const BASE_HIDDEN: &[&str] = &["/usr/local"];

/// Whether the host path `path` is visible in a sandbox through the read-only base (`/usr`,
/// minus [`BASE_HIDDEN`]).
pub fn in_base(path: &Path) -> bool {
    path.starts_with("/usr") && !BASE_HIDDEN.iter().any(|h| path.starts_with(h))
}

/// `/proc` files that leak host information or reach the kernel: hidden behind an empty file.
pub const PROC_MASKED_FILES: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "kallsyms",
    "sysrq-trigger",
    "latency_stats",
    "timer_stats",
    "kmsg",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
    "config.gz",
    "cmdline",
    "modules",
    "vmallocinfo",
    "slabinfo",
    "iomem",
    "ioports",
    "buddyinfo",
    "pagetypeinfo",
    "zoneinfo",
    "partitions",
    "diskstats",
    "swaps",
    "devices",
    "mtrr",
    // Host-wide activity: locks of every process (and the inodes they are on), paging and
    // interrupt counters, scheduler statistics, file-handle and dentry counts.
    "locks",
    "vmstat",
    "interrupts",
    "softirqs",
    "schedstat",
    "sys/fs/file-nr",
    "sys/fs/inode-nr",
    "sys/fs/inode-state",
    "sys/fs/dentry-state",
];

/// `/proc` files a backend replaces with a view of the sandbox where it can (memory and CPUs of
/// the sandbox's limits, no load, its own boot id), and otherwise hides like
/// [`PROC_MASKED_FILES`].
pub const PROC_VIRTUALISED_FILES: &[&str] =
    &["meminfo", "stat", "loadavg", "sys/kernel/random/boot_id"];

/// `/proc` directories hidden behind an empty read-only directory.
pub const PROC_MASKED_DIRS: &[&str] = &[
    "acpi",
    "scsi",
    "asound",
    "driver",
    "tty",
    "dynamic_debug",
    "pressure",
];

/// `/proc` directories made read-only.
pub const PROC_READ_ONLY: &[&str] = &["sys", "irq", "bus", "fs", "sysvipc"];

/// The resource limits every program starts with, as `(RLIMIT_* resource, value)` pairs (soft
/// and hard alike): no core dumps, 4096 descriptors, files no larger than the disk limit, an
/// 8 MiB stack, no POSIX message queues, bounded queued signals and locked memory (kernel memory
/// outside any cgroup limit), the CPU-time limit when set, and `nproc` when the backend counts
/// processes per user namespace (a per-uid count shared with other sandboxes is no limit).
// `RLIMIT_*` is `u32` on glibc and `i32` on musl: the casts are not the same everywhere.
#[allow(clippy::unnecessary_cast)]
pub fn program_rlimits(limits: &Limits, disk: Bytes, nproc: Option<u64>) -> Vec<(u32, u64)> {
    let mut v = vec![
        (libc::RLIMIT_CORE as u32, 0),
        (libc::RLIMIT_NOFILE as u32, 4096),
        (libc::RLIMIT_FSIZE as u32, disk.get().max(1)),
        (libc::RLIMIT_STACK as u32, 8 << 20),
        (libc::RLIMIT_MSGQUEUE as u32, 0),
        (libc::RLIMIT_SIGPENDING as u32, 1024),
        (libc::RLIMIT_MEMLOCK as u32, 64 << 10),
    ];
    if let Some(n) = nproc {
        v.push((libc::RLIMIT_NPROC as u32, n));
    }
    if let Some(cpu) = limits.cpu_time {
        v.push((libc::RLIMIT_CPU as u32, cpu.as_secs().max(1)));
    }
    v
}

/// The process that owns sandboxes: its pid and start time (which guards against pid reuse).
/// Written into the names of everything a backend leaves on the host (cgroups, containers), so
/// that leftovers of a dead owner can be recognised and removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerId {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start: u64,
}

impl OwnerId {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start: start_ticks(pid).unwrap_or(0),
        }
    }

    /// Whether the owner still runs (the same process, not a later one with its pid).
    pub fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start)
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.pid, self.start)
    }
}

impl FromStr for OwnerId {
    type Err = ();
    /// Parses `<pid>-<start>`, optionally followed by `-<more>`.
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut parts = s.split('-');
        let pid = parts.next().and_then(|p| p.parse().ok()).ok_or(())?;
        let start = parts.next().and_then(|p| p.parse().ok()).ok_or(())?;
        Ok(Self { pid, start })
    }
}

/// Start time of `pid` in clock ticks, from `/proc/<pid>/stat`.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 (starttime) of a `/proc/<pid>/stat` line.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What a host tool run by [`run_bounded`] left.
#[derive(Debug)]
pub struct BoundedOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output, at most the cap.
    pub stdout: Vec<u8>,
    /// Its standard error, at most the cap.
    pub stderr: Vec<u8>,
}

/// Runs a trusted host tool (an interpreter probe, an installer) to completion in a process
/// group of its own, stdin closed, keeping at most `cap` bytes of each output stream (the rest is
/// read and dropped), and kills the whole group at `timeout` (`ErrorKind::TimedOut`) or when the
/// tool exits (nothing it started outlives it).
pub fn run_bounded(
    cmd: &mut Command,
    timeout: Duration,
    cap: usize,
) -> std::io::Result<BoundedOutput> {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let group = child.id() as libc::pid_t;
    let kill_group = || {
        // SAFETY: kill(2) of the process group this function created (the child leads it).
        unsafe { libc::kill(-group, libc::SIGKILL) };
    };
    fn drain(mut from: impl Read, cap: usize) -> Vec<u8> {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = cap.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buf[..room]);
        }
        kept
    }
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    std::thread::scope(|scope| {
        let out = stdout.map(|s| scope.spawn(move || drain(s, cap)));
        let err = stderr.map(|s| scope.spawn(move || drain(s, cap)));
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    kill_group();
                    let _ = child.wait();
                    break Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("did not finish within {} s", timeout.as_secs()),
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    kill_group();
                    let _ = child.wait();
                    break Err(e);
                }
            }
        };
        // Whatever the tool left running goes with it (and closes the pipes the readers wait on).
        kill_group();
        let join = |h: Option<std::thread::ScopedJoinHandle<'_, Vec<u8>>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        let (stdout, stderr) = (join(out), join(err));
        status.map(|status| BoundedOutput {
            status,
            stdout,
            stderr,
        })
    })
}

/// Reading cgroup files (v1 and v2), for every backend that measures through cgroups.
pub mod cgroupfs {
    use super::Path;

    /// A file holding one number (`memory.peak`, `pids.current`, …).
    pub fn read_u64(dir: &Path, file: &str) -> Option<u64> {
        parse_u64(&std::fs::read_to_string(dir.join(file)).ok()?)
    }

    /// One number, as a cgroup file holds it.
    pub fn parse_u64(text: &str) -> Option<u64> {
        text.trim().parse().ok()
    }

    /// The value of `key` in a flat-keyed file (`memory.events`, `memory.oom_control`,
    /// `cpu.stat`, `pids.events`).
    pub fn read_key(dir: &Path, file: &str, key: &str) -> Option<u64> {
        parse_key(&std::fs::read_to_string(dir.join(file)).ok()?, key)
    }

    /// The value of `key` in flat-keyed text.
    pub fn parse_key(text: &str, key: &str) -> Option<u64> {
        text.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(key))
                .then(|| it.next()?.parse().ok())
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_round_trip_and_detect_reuse() {
        let me = OwnerId::current();
        assert!(me.alive());
        assert_eq!(me.to_string().parse::<OwnerId>(), Ok(me));
        assert_eq!(format!("{me}-7").parse::<OwnerId>(), Ok(me));
        let later = OwnerId {
            start: me.start + 1,
            ..me
        };
        assert!(!later.alive());
        assert!("x-1".parse::<OwnerId>().is_err());
    }

    #[test]
    fn parses_start_time_with_odd_command_names() {
        let stat =
            "123 (a b) c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(parse_start_ticks(stat), Some(98765));
    }

    #[test]
    fn cgroup_files() {
        assert_eq!(cgroupfs::parse_u64("123\n"), Some(123));
        assert_eq!(cgroupfs::parse_u64("max\n"), None);
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n";
        assert_eq!(cgroupfs::parse_key(events, "oom_kill"), Some(1));
        assert_eq!(cgroupfs::parse_key(events, "max"), Some(3));
        assert_eq!(cgroupfs::parse_key(events, "nope"), None);
    }
}
