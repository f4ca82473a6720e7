//! cgroup v1: one directory per controller hierarchy (memory, pids, cpu, cpuacct).

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::detect::{Detected, BASE_NAME};
use super::fsutil::{self, read_key, read_u64};
use super::{CgroupDriver, CgroupError, CgroupStats, InstanceCgroup, Written};
use vana_sandbox_core::{Layer, LayerName, Limits};

/// The v1 driver: our base directory in each hierarchy, nested under this process's own cgroup so
/// that limits placed on the host process still apply.
#[derive(Debug, Clone)]
pub(crate) struct V1 {
    memory: PathBuf,
    pids: PathBuf,
    cpu: PathBuf,
    cpuacct: PathBuf,
    memsw: bool,
    /// `memory.kmem.tcp.limit_in_bytes` exists (kernel memory accounting is on).
    kmem_tcp: bool,
}

const CFS_PERIOD_US: u64 = 100_000;

impl V1 {
    pub(crate) fn from_detected(d: &Detected) -> Result<Self, CgroupError> {
        let base = |c: &'static str| -> Result<PathBuf, CgroupError> {
            let (mnt, own) = d.v1_of(c).ok_or(CgroupError::MissingController(c))?;
            Ok(mnt.join(own.trim_start_matches('/')).join(BASE_NAME))
        };
        let memory = base("memory")?;
        let has = |file: &str| memory.parent().is_some_and(|p| p.join(file).exists());
        let memsw = has("memory.memsw.limit_in_bytes");
        let kmem_tcp = has("memory.kmem.tcp.limit_in_bytes");
        Ok(Self {
            kmem_tcp,
            pids: base("pids")?,
            cpu: base("cpu")?,
            cpuacct: base("cpuacct")?,
            memory,
            memsw,
        })
    }

    fn bases(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = vec![&self.memory, &self.pids, &self.cpu];
        if self.cpuacct != self.cpu {
            v.push(&self.cpuacct);
        }
        v
    }
}

impl CgroupDriver for V1 {
    fn version(&self) -> &'static str {
        "v1"
    }

    fn describe(&self) -> Vec<Layer> {
        let d = |p: &Path| format!("cgroup v1 at {}", p.display());
        vec![
            Layer::new(
                LayerName::CgroupMemory,
                true,
                if self.kmem_tcp {
                    format!(
                        "{}; TCP buffers bounded by memory.kmem.tcp",
                        d(&self.memory)
                    )
                } else {
                    format!(
                        "{}; TCP buffers unbounded (no kernel memory accounting)",
                        d(&self.memory)
                    )
                },
            ),
            Layer::new(
                LayerName::CgroupMemorySwap,
                self.memsw,
                if self.memsw {
                    "memory.memsw.limit_in_bytes counts swap"
                } else {
                    "memsw accounting is off (swapaccount=0)"
                },
            ),
            Layer::new(LayerName::CgroupPids, true, d(&self.pids)),
            Layer::new(LayerName::CgroupCpu, true, d(&self.cpu)),
        ]
    }

    fn create(&self, name: &str, limits: &Limits) -> Result<Box<dyn InstanceCgroup>, CgroupError> {
        let mut run = V1Instance {
            memory: self.memory.join(name),
            pids: self.pids.join(name),
            cpu: self.cpu.join(name),
            cpuacct: self.cpuacct.join(name),
            dirs: Vec::new(),
            fds: Vec::new(),
            memsw: self.memsw,
            kmem_tcp: self.kmem_tcp,
            // A new cgroup has no memory limit.
            memory_limit: u64::MAX,
            written: Written::default(),
            start: Counters::default(),
            sampled_pids: 0,
        };
        for base in self.bases() {
            fsutil::create_dir(base)?;
            let dir = base.join(name);
            fsutil::create_new_dir(&dir)?;
            run.dirs.push(dir);
        }
        run.set_limits(limits)?;
        for dir in run.dirs.clone() {
            run.fds
                .push(fsutil::open_join(&dir, fsutil::JoinFile::Tasks)?);
        }
        Ok(Box::new(run))
    }

    fn remove_stale(&self, is_stale: &dyn Fn(&str) -> bool) -> usize {
        let mut n = 0;
        for base in self.bases() {
            for (name, dir) in fsutil::children(base) {
                if is_stale(&name) {
                    fsutil::kill_listed(&dir);
                    if fsutil::remove_dir(&dir).is_ok() {
                        n += 1;
                    }
                }
            }
        }
        n
    }
}

/// Cumulative counters at the start of a run.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    cpu_ns: u64,
    oom_kills: u64,
    pids_max_hits: u64,
}

struct V1Instance {
    memory: PathBuf,
    pids: PathBuf,
    cpu: PathBuf,
    cpuacct: PathBuf,
    dirs: Vec<PathBuf>,
    fds: Vec<RawFd>,
    memsw: bool,
    kmem_tcp: bool,
    /// The memory limit now in place (`u64::MAX`: none).
    memory_limit: u64,
    written: Written,
    start: Counters,
    sampled_pids: u64,
}

impl V1Instance {
    fn counters(&self) -> Counters {
        Counters {
            cpu_ns: read_u64(&self.cpuacct, "cpuacct.usage").unwrap_or(0),
            oom_kills: read_key(&self.memory, "memory.oom_control", "oom_kill").unwrap_or(0),
            pids_max_hits: read_key(&self.pids, "pids.events", "max").unwrap_or(0),
        }
    }
}

impl InstanceCgroup for V1Instance {
    fn join_fds(&self) -> Vec<RawFd> {
        self.fds.clone()
    }

    fn close_join_fds(&mut self) {
        for fd in self.fds.drain(..) {
            // SAFETY: we opened these descriptors and close each once.
            unsafe { libc::close(fd) };
        }
    }

    fn set_limits(&mut self, limits: &Limits) -> Result<(), CgroupError> {
        let new = limits.memory.get();
        if new != self.memory_limit {
            // memsw may never be below memory: raise memsw first, lower memory first.
            let order: &[&str] = match (self.memsw, new > self.memory_limit) {
                (false, _) => &["memory.limit_in_bytes"],
                (true, true) => &["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"],
                (true, false) => &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            };
            for file in order {
                fsutil::write(&self.memory, file, &new.to_string())?;
            }
            // v1 charges TCP buffers to a counter of their own, unlimited unless set (UDP and
            // raw sockets, charged nowhere, are refused by the seccomp table).
            if self.kmem_tcp {
                let tcp = limits.socket_memory().get().to_string();
                fsutil::write(&self.memory, "memory.kmem.tcp.limit_in_bytes", &tcp)?;
            }
            self.memory_limit = new;
        }
        let pids = &self.pids;
        self.written
            .processes(limits, |v| fsutil::write(pids, "pids.max", v))?;
        let cpu = &self.cpu;
        self.written.cpu_quota(limits, CFS_PERIOD_US, |quota| {
            fsutil::write(cpu, "cpu.cfs_period_us", &CFS_PERIOD_US.to_string())?;
            fsutil::write(cpu, "cpu.cfs_quota_us", quota)
        })
    }

    fn begin_run(&mut self) {
        for file in [
            "memory.max_usage_in_bytes",
            "memory.memsw.max_usage_in_bytes",
        ] {
            let _ = fsutil::write(&self.memory, file, "0");
        }
        self.start = self.counters();
        self.sampled_pids = 0;
    }

    fn sample(&mut self) {
        if let Some(n) = read_u64(&self.pids, "pids.current") {
            self.sampled_pids = self.sampled_pids.max(n);
        }
    }

    fn run_stats(&self) -> CgroupStats {
        let peak_file = if self.memsw {
            "memory.memsw.max_usage_in_bytes"
        } else {
            "memory.max_usage_in_bytes"
        };
        let now = self.counters();
        CgroupStats {
            cpu_ns: now.cpu_ns.saturating_sub(self.start.cpu_ns),
            memory_peak: read_u64(&self.memory, peak_file).unwrap_or(0),
            oom_kills: now.oom_kills.saturating_sub(self.start.oom_kills),
            pids_peak: self.sampled_pids,
            pids_max_hits: now.pids_max_hits.saturating_sub(self.start.pids_max_hits),
        }
    }

    fn kill_all(&self) {
        fsutil::kill_listed(&self.pids);
    }

    fn remove(&mut self) -> Result<(), CgroupError> {
        self.close_join_fds();
        self.kill_all();
        let mut first_err = None;
        for dir in self.dirs.drain(..) {
            if let Err(e) = fsutil::remove_dir(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for V1Instance {
    fn drop(&mut self) {
        if !self.dirs.is_empty() {
            let _ = self.remove();
        }
        self.close_join_fds();
    }
}
