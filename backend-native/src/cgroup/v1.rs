//! cgroup v1: one directory per controller hierarchy (memory, pids, cpu, cpuacct).

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::detect::{Detected, BASE_NAME};
use super::fsutil::{self, Knob};
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
            written: Written::default(),
            knobs: None,
            start: Counters::default(),
            sampled_pids: 0,
        };
        for base in self.bases() {
            fsutil::create_dir(base)?;
            let dir = base.join(name);
            fsutil::create_new_dir(&dir)?;
            run.dirs.push(dir);
        }
        run.knobs = Some(Knobs::open(&run));
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
    written: Written,
    /// The files each run reads or resets (closed before the directories are removed).
    knobs: Option<Knobs>,
    start: Counters,
    sampled_pids: u64,
}

/// The files of a v1 instance read or reset at every run, kept open.
struct Knobs {
    cpu_usage: Knob,
    oom_control: Knob,
    pids_events: Knob,
    pids_current: Knob,
    /// The peak the run is measured by (with memsw accounting, memory and swap), reset at
    /// its start.
    peak: Knob,
    /// The other peak (memory alone with memsw accounting), reset too.
    other_peak: Knob,
}

impl Knobs {
    fn open(run: &V1Instance) -> Self {
        let (memory, memsw) = (
            "memory.max_usage_in_bytes",
            "memory.memsw.max_usage_in_bytes",
        );
        let (peak, other) = if run.memsw {
            (memsw, memory)
        } else {
            (memory, memsw)
        };
        Self {
            cpu_usage: Knob::read_only(&run.cpuacct, "cpuacct.usage"),
            oom_control: Knob::read_only(&run.memory, "memory.oom_control"),
            pids_events: Knob::read_only(&run.pids, "pids.events"),
            pids_current: Knob::read_only(&run.pids, "pids.current"),
            peak: Knob::read_write(&run.memory, peak),
            other_peak: Knob::read_write(&run.memory, other),
        }
    }
}

impl V1Instance {
    fn counters(&self) -> Counters {
        let Some(k) = &self.knobs else {
            return Counters::default();
        };
        Counters {
            cpu_ns: k.cpu_usage.u64().unwrap_or(0),
            oom_kills: k.oom_control.key("oom_kill").unwrap_or(0),
            pids_max_hits: k.pids_events.key("max").unwrap_or(0),
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
        let (memory, memsw, kmem_tcp) = (&self.memory, self.memsw, self.kmem_tcp);
        self.written.memory(limits, |previous, new| {
            // memsw may never be below memory: raise memsw first, lower memory first (a new
            // cgroup has no limit: anything lowers it).
            let raising = new > previous.unwrap_or(u64::MAX);
            let order: &[&str] = match (memsw, raising) {
                (false, _) => &["memory.limit_in_bytes"],
                (true, true) => &["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"],
                (true, false) => &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            };
            for file in order {
                fsutil::write(memory, file, &new.to_string())?;
            }
            // v1 charges TCP buffers to a counter of their own, unlimited unless set (UDP and
            // raw sockets, charged nowhere, are refused by the seccomp table).
            if kmem_tcp {
                let tcp = limits.socket_memory().get().to_string();
                fsutil::write(memory, "memory.kmem.tcp.limit_in_bytes", &tcp)?;
            }
            Ok(())
        })?;
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
        if let Some(k) = &self.knobs {
            k.peak.write(b"0");
            k.other_peak.write(b"0");
        }
        self.start = self.counters();
        self.sampled_pids = 0;
    }

    fn sample(&mut self) {
        if let Some(n) = self.knobs.as_ref().and_then(|k| k.pids_current.u64()) {
            self.sampled_pids = self.sampled_pids.max(n);
        }
    }

    fn run_stats(&self) -> CgroupStats {
        let now = self.counters();
        CgroupStats {
            cpu_ns: now.cpu_ns.saturating_sub(self.start.cpu_ns),
            memory_peak: self.knobs.as_ref().and_then(|k| k.peak.u64()).unwrap_or(0),
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
        self.knobs = None;
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
