//! A container's cgroups on the host (v1, v2 or hybrid), found from its main process: memory
//! peak, CPU time, processes, OOM kills and refused forks, read by the host — never reported by
//! anything inside the container. Under gVisor they measure the whole sandbox (gVisor's own
//! kernel included).

use std::path::{Path, PathBuf};

use vana_sandbox_core::host::cgroupfs::{read_key, read_u64};

/// A container's cgroups.
#[derive(Debug, Clone)]
pub(crate) struct Memcg {
    /// The memory cgroup (v1), or the one unified cgroup (v2).
    dir: PathBuf,
    v2: bool,
    /// v1 only: the cpuacct and pids directories.
    cpuacct: Option<PathBuf>,
    pids: Option<PathBuf>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// CPU time of every process so far, nanoseconds.
    pub cpu_ns: u64,
    /// Peak memory (with swap where the kernel counts it) since the last reset.
    pub memory_peak: u64,
    /// Processes and threads now.
    pub tasks: u64,
    /// OOM kills so far.
    pub oom_kills: u64,
    /// Forks refused at the pids limit so far.
    pub pids_max_hits: u64,
}

impl Memcg {
    pub(crate) fn of_pid(pid: i64) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let v1 = |ctrl: &str, mount: &str| -> Option<PathBuf> {
            text.lines().find_map(|line| {
                let mut it = line.splitn(3, ':');
                let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
                ctrls.split(',').any(|c| c == ctrl).then(|| {
                    Path::new("/sys/fs/cgroup")
                        .join(mount)
                        .join(path.trim_start_matches('/'))
                })
            })
        };
        if let Some(dir) = v1("memory", "memory").filter(|d| d.exists()) {
            let cpuacct = v1("cpuacct", "cpuacct")
                .filter(|d| d.exists())
                .or_else(|| v1("cpuacct", "cpu,cpuacct").filter(|d| d.exists()));
            return Some(Self {
                dir,
                v2: false,
                cpuacct,
                pids: v1("pids", "pids").filter(|d| d.exists()),
            });
        }
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        dir.join("memory.events").exists().then_some(Self {
            dir,
            v2: true,
            cpuacct: None,
            pids: None,
        })
    }

    fn pids_dir(&self) -> Option<&Path> {
        if self.v2 {
            Some(&self.dir)
        } else {
            self.pids.as_deref()
        }
    }

    /// The counters now; `None` once the cgroup is gone (the container stopped).
    pub(crate) fn sample(&self) -> Option<Sample> {
        if !self.dir.exists() {
            return None;
        }
        let (cpu_ns, memory_peak, oom_kills) = if self.v2 {
            (
                read_key(&self.dir, "cpu.stat", "usage_usec").unwrap_or(0) * 1000,
                read_u64(&self.dir, "memory.peak")
                    .or_else(|| read_u64(&self.dir, "memory.current"))
                    .unwrap_or(0),
                read_key(&self.dir, "memory.events", "oom_kill").unwrap_or(0),
            )
        } else {
            (
                self.cpuacct
                    .as_deref()
                    .and_then(|d| read_u64(d, "cpuacct.usage"))
                    .unwrap_or(0),
                read_u64(&self.dir, "memory.memsw.max_usage_in_bytes")
                    .or_else(|| read_u64(&self.dir, "memory.max_usage_in_bytes"))
                    .unwrap_or(0),
                read_key(&self.dir, "memory.oom_control", "oom_kill").unwrap_or(0),
            )
        };
        let pids = self.pids_dir();
        Some(Sample {
            cpu_ns,
            memory_peak,
            tasks: pids.and_then(|d| read_u64(d, "pids.current")).unwrap_or(0),
            oom_kills,
            pids_max_hits: pids
                .and_then(|d| read_key(d, "pids.events", "max"))
                .unwrap_or(0),
        })
    }

    /// Sets cgroup v1's bound on TCP socket buffers (v2 charges them to memory: nothing to do).
    pub(crate) fn set_socket_memory(&self, bytes: u64) -> std::io::Result<()> {
        if self.v2 {
            return Ok(());
        }
        std::fs::write(
            self.dir.join("memory.kmem.tcp.limit_in_bytes"),
            bytes.to_string(),
        )
    }

    /// Starts a new memory peak (v1; on v2 the peak is the container's since it started).
    pub(crate) fn reset_peak(&self) {
        if !self.v2 {
            for f in [
                "memory.max_usage_in_bytes",
                "memory.memsw.max_usage_in_bytes",
            ] {
                let _ = std::fs::write(self.dir.join(f), "0");
            }
        }
    }
}
