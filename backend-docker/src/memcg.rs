//! A container's memory cgroup on the host: OOM evidence for exec'd processes (the engine's
//! `OOMKilled` flag only covers a container's main process).

use std::path::{Path, PathBuf};

use vana_sandbox_core::host::cgroupfs::{read_key, read_u64};

/// A container's memory cgroup on the host (v1 or v2), found from its main process.
#[derive(Debug, Clone)]
pub(crate) struct Memcg {
    dir: PathBuf,
    v2: bool,
    /// v1 only: the cpuacct and pids directories.
    cpuacct: Option<PathBuf>,
    pids: Option<PathBuf>,
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

    /// (cpu nanoseconds, memory peak bytes, tasks now) of the whole container.
    pub(crate) fn usage(&self) -> (u64, u64, u64) {
        if self.v2 {
            let cpu = read_key(&self.dir, "cpu.stat", "usage_usec").unwrap_or(0) * 1000;
            let peak = read_u64(&self.dir, "memory.peak")
                .or_else(|| read_u64(&self.dir, "memory.current"))
                .unwrap_or(0);
            (cpu, peak, read_u64(&self.dir, "pids.current").unwrap_or(1))
        } else {
            let cpu = self
                .cpuacct
                .as_deref()
                .and_then(|d| read_u64(d, "cpuacct.usage"))
                .unwrap_or(0);
            let peak = read_u64(&self.dir, "memory.memsw.max_usage_in_bytes")
                .or_else(|| read_u64(&self.dir, "memory.max_usage_in_bytes"))
                .unwrap_or(0);
            (
                cpu,
                peak,
                self.pids
                    .as_deref()
                    .and_then(|d| read_u64(d, "pids.current"))
                    .unwrap_or(1),
            )
        }
    }

    /// Whether the cgroup still exists (it goes with the container).
    pub(crate) fn exists(&self) -> bool {
        self.dir.exists()
    }

    pub(crate) fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        read_key(&self.dir, file, key).unwrap_or(0)
    }
}
