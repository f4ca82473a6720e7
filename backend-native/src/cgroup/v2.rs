//! cgroup v2: one unified directory per run under `<mount>/vana-sandbox`.

use std::os::fd::RawFd;
use std::path::PathBuf;

use super::fsutil::{self, Knob};
use super::{CgroupDriver, CgroupError, CgroupStats, InstanceCgroup, Written};
use vana_sandbox_core::{Layer, LayerName, Limits};

const CPU_PERIOD_US: u64 = 100_000;

/// The v2 driver. `base` sits at the top of the hierarchy (the root cgroup may hold processes and
/// delegate controllers; a nested cgroup holding our own process may not).
#[derive(Debug, Clone)]
pub(crate) struct V2 {
    base: PathBuf,
    mount: PathBuf,
}

impl V2 {
    pub(crate) fn new(base: PathBuf, mount: PathBuf) -> Self {
        Self { base, mount }
    }

    fn ensure_base(&self) -> Result<(), CgroupError> {
        fsutil::create_dir(&self.base)?;
        let enabled =
            std::fs::read_to_string(self.base.join("cgroup.subtree_control")).unwrap_or_default();
        if ["memory", "pids", "cpu"]
            .iter()
            .all(|c| enabled.split_whitespace().any(|e| e == *c))
        {
            return Ok(());
        }
        fsutil::write(&self.mount, "cgroup.subtree_control", "+memory +pids +cpu")?;
        fsutil::write(&self.base, "cgroup.subtree_control", "+memory +pids +cpu")
    }
}

impl CgroupDriver for V2 {
    fn version(&self) -> &'static str {
        "v2"
    }

    fn describe(&self) -> Vec<Layer> {
        let d = format!("cgroup v2 at {}", self.base.display());
        let swap = self.mount.join("memory.swap.max").exists()
            || std::fs::read_dir(&self.mount).is_ok_and(|mut rd| {
                rd.any(|e| e.is_ok_and(|e| e.path().join("memory.swap.max").exists()))
            });
        vec![
            Layer::new(LayerName::CgroupMemory, true, d.clone()),
            Layer::new(
                LayerName::CgroupMemorySwap,
                swap,
                if swap {
                    "memory.swap.max = 0"
                } else {
                    "no swap controller files (swap accounting off)"
                },
            ),
            Layer::new(LayerName::CgroupPids, true, d.clone()),
            Layer::new(LayerName::CgroupCpu, true, d),
        ]
    }

    fn create(&self, name: &str, limits: &Limits) -> Result<Box<dyn InstanceCgroup>, CgroupError> {
        self.ensure_base()?;
        let dir = self.base.join(name);
        fsutil::create_new_dir(&dir)?;
        Ok(Box::new(V2Instance::open(dir, limits)?))
    }

    fn remove_stale(&self, is_stale: &dyn Fn(&str) -> bool) -> usize {
        let mut n = 0;
        for (name, dir) in fsutil::children(&self.base) {
            if is_stale(&name) {
                kill(&dir);
                if fsutil::remove_dir(&dir).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }
}

impl V2Instance {
    /// Sets `limits` on the run's new cgroup `dir` and opens its `cgroup.procs`.
    fn open(dir: std::path::PathBuf, limits: &Limits) -> Result<Self, CgroupError> {
        let mut run = V2Instance {
            dir: dir.clone(),
            fd: -1,
            start: Counters::default(),
            peak: None,
            sampled_pids: 0,
            sampled_mem: 0,
            live: true,
            written: Written::default(),
            knobs: Some(Knobs::open(&dir)),
        };
        if dir.join("memory.swap.max").exists() {
            fsutil::write(&dir, "memory.swap.max", "0")?;
        }
        run.set_limits(limits)?;
        run.fd = fsutil::open_join(&dir, fsutil::JoinFile::Procs)?;
        Ok(run)
    }
}

fn kill(dir: &std::path::Path) {
    if dir.join("cgroup.kill").exists() && fsutil::write(dir, "cgroup.kill", "1").is_ok() {
        for _ in 0..500 {
            if fsutil::pids(dir).is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    fsutil::kill_listed(dir);
}

/// Cumulative counters at the start of a run.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    cpu_ns: u64,
    oom_kills: u64,
    pids_max_hits: u64,
}

struct V2Instance {
    dir: PathBuf,
    fd: RawFd,
    start: Counters,
    /// `memory.peak`, opened for the run and reset through this descriptor (kernels from 6.12
    /// keep a peak per open file that a write resets); `None` where that is not supported.
    peak: Option<std::fs::File>,
    sampled_pids: u64,
    sampled_mem: u64,
    live: bool,
    written: Written,
    /// The files each run reads, kept open (closed before the directory is removed).
    knobs: Option<Knobs>,
}

/// The files of a v2 instance read at every run (`memory.peak` is opened per run: a reset is
/// per open file).
struct Knobs {
    cpu_stat: Knob,
    memory_events: Knob,
    pids_events: Knob,
    pids_current: Knob,
    memory_current: Knob,
}

impl Knobs {
    fn open(dir: &std::path::Path) -> Self {
        Self {
            cpu_stat: Knob::read_only(dir, "cpu.stat"),
            memory_events: Knob::read_only(dir, "memory.events"),
            pids_events: Knob::read_only(dir, "pids.events"),
            pids_current: Knob::read_only(dir, "pids.current"),
            memory_current: Knob::read_only(dir, "memory.current"),
        }
    }
}

impl V2Instance {
    fn counters(&self) -> Counters {
        let Some(k) = &self.knobs else {
            return Counters::default();
        };
        Counters {
            cpu_ns: k.cpu_stat.key("usage_usec").unwrap_or(0) * 1000,
            oom_kills: k.memory_events.key("oom_kill").unwrap_or(0),
            pids_max_hits: k.pids_events.key("max").unwrap_or(0),
        }
    }
}

impl InstanceCgroup for V2Instance {
    fn join_fds(&self) -> Vec<RawFd> {
        vec![self.fd]
    }

    fn close_join_fds(&mut self) {
        if self.fd >= 0 {
            // SAFETY: we opened this descriptor and close it once.
            unsafe { libc::close(self.fd) };
            self.fd = -1;
        }
    }

    fn set_limits(&mut self, limits: &Limits) -> Result<(), CgroupError> {
        let dir = &self.dir;
        self.written.memory(limits, |_, new| {
            fsutil::write(dir, "memory.max", &new.to_string())
        })?;
        self.written
            .processes(limits, |v| fsutil::write(dir, "pids.max", v))?;
        self.written.cpu_quota(limits, CPU_PERIOD_US, |quota| {
            fsutil::write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))
        })
    }

    fn begin_run(&mut self) {
        use std::io::Write;
        self.peak = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join("memory.peak"))
            .ok()
            .filter(|f| {
                let mut f = f;
                f.write_all(b"reset").is_ok()
            });
        self.start = self.counters();
        self.sampled_pids = 0;
        self.sampled_mem = 0;
    }

    fn sample(&mut self) {
        let Some(k) = &self.knobs else { return };
        if let Some(n) = k.pids_current.u64() {
            self.sampled_pids = self.sampled_pids.max(n);
        }
        if let Some(n) = k.memory_current.u64() {
            self.sampled_mem = self.sampled_mem.max(n);
        }
    }

    fn run_stats(&self) -> CgroupStats {
        use std::os::unix::fs::FileExt;
        let peak = self.peak.as_ref().and_then(|f| {
            let mut buf = [0u8; 32];
            let n = f.read_at(&mut buf, 0).ok()?;
            vana_sandbox_core::host::cgroupfs::parse_u64(std::str::from_utf8(&buf[..n]).ok()?)
        });
        let now = self.counters();
        CgroupStats {
            cpu_ns: now.cpu_ns.saturating_sub(self.start.cpu_ns),
            memory_peak: peak.unwrap_or(self.sampled_mem).max(self.sampled_mem),
            oom_kills: now.oom_kills.saturating_sub(self.start.oom_kills),
            pids_peak: self.sampled_pids,
            pids_max_hits: now.pids_max_hits.saturating_sub(self.start.pids_max_hits),
        }
    }

    fn kill_all(&self) {
        kill(&self.dir);
    }

    fn remove(&mut self) -> Result<(), CgroupError> {
        self.close_join_fds();
        self.knobs = None;
        self.peak = None;
        if !self.live {
            return Ok(());
        }
        self.kill_all();
        self.live = false;
        fsutil::remove_dir(&self.dir)
    }
}

impl Drop for V2Instance {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes limits into a directory laid out like a v2 hierarchy (plain files stand in for
    /// cgroupfs), checking the v2 file names and formats without needing a v2 host.
    #[test]
    fn writes_v2_limits() {
        let root = std::env::temp_dir().join(format!("vana-cg2-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let base = root.join("vana-sandbox");
        assert!(std::fs::create_dir_all(base.join("r1")).is_ok());
        for f in ["memory.swap.max", "cgroup.procs"] {
            assert!(std::fs::write(base.join("r1").join(f), "").is_ok());
        }
        let counters = |usage: u64, oom: u64, max: u64, current: u64| {
            for (f, text) in [
                ("cpu.stat", format!("usage_usec {usage}\nuser_usec 1\n")),
                ("memory.events", format!("low 0\noom 0\noom_kill {oom}\n")),
                ("pids.events", format!("max {max}\n")),
                ("pids.current", format!("{current}\n")),
            ] {
                assert!(std::fs::write(base.join("r1").join(f), text).is_ok());
            }
        };
        counters(7, 0, 1, 1);
        assert!(std::fs::write(base.join("cgroup.subtree_control"), "cpu memory pids").is_ok());
        let drv = V2::new(base.clone(), root.clone());
        let limits = Limits {
            memory: vana_sandbox_core::Bytes(64 << 20),
            cpus: vana_sandbox_core::Cores::new(0.5).unwrap_or(vana_sandbox_core::Cores::ONE),
            processes: 32,
            ..Limits::default()
        };
        // A run never joins a cgroup that exists (another run's).
        assert!(drv.create("r1", &limits).is_err());
        assert!(drv.ensure_base().is_ok());
        let run = V2Instance::open(base.join("r1"), &limits);
        assert!(run.is_ok(), "{:?}", run.err());
        let read = |f: &str| std::fs::read_to_string(base.join("r1").join(f)).unwrap_or_default();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "32");
        assert_eq!(read("cpu.max"), "50000 100000");
        // A run is measured from its start through the files kept open (each read is fresh).
        let Ok(mut run) = run else { return };
        run.begin_run();
        counters(7 + 40, 1, 3, 5);
        run.sample();
        let stats = run.run_stats();
        assert_eq!(
            (
                stats.cpu_ns,
                stats.oom_kills,
                stats.pids_max_hits,
                stats.pids_peak
            ),
            (40_000, 1, 2, 5)
        );
        // A run with the same limits writes nothing (the markers stay); a changed limit is
        // written, and only that one.
        for f in ["memory.max", "pids.max", "cpu.max"] {
            assert!(std::fs::write(base.join("r1").join(f), "kept").is_ok());
        }
        assert!(run.set_limits(&limits).is_ok());
        for f in ["memory.max", "pids.max", "cpu.max"] {
            assert_eq!(read(f), "kept", "{f} rewritten with unchanged limits");
        }
        let fewer = Limits {
            processes: 16,
            ..limits
        };
        assert!(run.set_limits(&fewer).is_ok());
        assert_eq!(read("pids.max"), "16");
        assert_eq!(
            (read("memory.max"), read("cpu.max")),
            ("kept".into(), "kept".into())
        );
        for f in [
            "memory.max",
            "memory.swap.max",
            "pids.max",
            "cpu.max",
            "cgroup.procs",
            "cpu.stat",
            "memory.events",
            "pids.events",
            "pids.current",
        ] {
            let _ = std::fs::remove_file(base.join("r1").join(f));
        }
        drop(run);
        assert!(!base.join("r1").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
