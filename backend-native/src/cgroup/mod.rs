//! Instance cgroups: one interface over cgroup v1, v2 and hybrid hosts, and a stand-in for hosts
//! that give an unprivileged caller no cgroup at all.
//!
//! The driver is chosen once from `/proc/self/mountinfo`: v2 when a cgroup2 mount offers the
//! memory, pids and cpu controllers (and, rootless, when our own v2 cgroup or
//! `$VANA_CGROUP_ROOT` is delegated to us); otherwise v1 with one hierarchy per controller (a
//! hybrid host such as one with an empty `/sys/fs/cgroup/unified` ends up here); rootless
//! without delegation, [`Unavailable`](none::Unavailable), reported as degraded layers.

pub mod detect;
mod fsutil;
pub(crate) mod none;
mod v1;
mod v2;

use std::os::fd::RawFd;
use std::path::PathBuf;

use vana_sandbox_core::host::OwnerId;
use vana_sandbox_core::{Layer, Limits};

pub use detect::{detect, Detected};
pub(crate) use v1::V1;
pub(crate) use v2::V2;

/// Cgroup errors, with the file that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy for a controller.
    #[error("cgroup controller `{0}` is not available on this host")]
    MissingController(&'static str),
    /// A cgroup file or directory operation failed.
    #[error("cgroup {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl CgroupError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// What an instance's cgroup measured over one run (since [`InstanceCgroup::begin_run`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time of all tasks, nanoseconds.
    pub cpu_ns: u64,
    /// Peak memory, bytes.
    pub memory_peak: u64,
    /// OOM kills inside the cgroup.
    pub oom_kills: u64,
    /// Most tasks at once (kernel peak or sampled).
    pub pids_peak: u64,
    /// Forks refused by pids.max.
    pub pids_max_hits: u64,
}

/// The limits last written to an instance's cgroup (`None`: none yet — a new cgroup has none).
/// Only the host writes its files (the sandbox sees no cgroup file system), so a run whose
/// limits are those of the run before writes nothing: the writes are a tenth of a millisecond of
/// each run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Written {
    memory: Option<u64>,
    processes: Option<u64>,
    cpu_quota_us: Option<u64>,
}

impl Written {
    /// Writes the memory limit through `write(previous, new)` unless it is in place (the
    /// previous limit decides the order of v1's two files).
    fn memory(
        &mut self,
        limits: &Limits,
        write: impl FnOnce(Option<u64>, u64) -> Result<(), CgroupError>,
    ) -> Result<(), CgroupError> {
        let new = limits.memory.get();
        if self.memory != Some(new) {
            write(self.memory, new)?;
            self.memory = Some(new);
        }
        Ok(())
    }

    /// Writes `pids.max` through `write` unless it already holds `limits`' value.
    fn processes(
        &mut self,
        limits: &Limits,
        write: impl FnOnce(&str) -> Result<(), CgroupError>,
    ) -> Result<(), CgroupError> {
        Self::once(&mut self.processes, limits.processes, write)
    }

    /// Writes the CPU quota (microseconds per `period_us`) through `write` unless it is in place.
    fn cpu_quota(
        &mut self,
        limits: &Limits,
        period_us: u64,
        write: impl FnOnce(&str) -> Result<(), CgroupError>,
    ) -> Result<(), CgroupError> {
        Self::once(
            &mut self.cpu_quota_us,
            limits.cpus.quota_us(period_us),
            write,
        )
    }

    fn once(
        slot: &mut Option<u64>,
        value: u64,
        write: impl FnOnce(&str) -> Result<(), CgroupError>,
    ) -> Result<(), CgroupError> {
        if *slot != Some(value) {
            // Recorded only once written: a failed write is tried again at the next run.
            write(&value.to_string())?;
            *slot = Some(value);
        }
        Ok(())
    }
}

/// Creates instance cgroups on one kind of hierarchy.
pub trait CgroupDriver: Send + Sync + std::fmt::Debug {
    /// `v1`, `v2` or `none`.
    fn version(&self) -> &'static str;

    /// Controllers and features, for the capability report.
    fn describe(&self) -> Vec<Layer>;

    /// Creates a cgroup named `name` with the memory, CPU and process limits of `limits`.
    fn create(&self, name: &str, limits: &Limits) -> Result<Box<dyn InstanceCgroup>, CgroupError>;

    /// Removes cgroups left by crashed processes; `is_stale` decides from the name.
    fn remove_stale(&self, is_stale: &dyn Fn(&str) -> bool) -> usize;
}

/// One instance's cgroup (one directory per hierarchy). Init and every program of the instance
/// run in it; each run sets its own limits and is measured from its start.
pub trait InstanceCgroup: Send {
    /// `cgroup.procs` of every hierarchy, open for writing: the sandbox's first process writes
    /// `0` to each to join before anything else runs.
    fn join_fds(&self) -> Vec<RawFd>;

    /// Closes the join descriptors (once the sandbox has joined).
    fn close_join_fds(&mut self);

    /// Applies the memory, CPU and process limits of `limits`.
    fn set_limits(&mut self, limits: &Limits) -> Result<(), CgroupError>;

    /// Starts measuring a run: counters are taken as of now, peaks reset.
    fn begin_run(&mut self);

    /// Takes a sample for peaks the kernel does not keep.
    fn sample(&mut self);

    /// What the run used so far.
    fn run_stats(&self) -> CgroupStats;

    /// Kills every task in the cgroup.
    fn kill_all(&self);

    /// Kills what is left and removes the directories.
    fn remove(&mut self) -> Result<(), CgroupError>;
}

/// The name of a per-run cgroup: the owner's pid and start time make leftovers recognisable.
pub(crate) fn run_name(owner: OwnerId, seq: u64) -> String {
    format!("{owner}-{seq}")
}

/// Whether a run name belongs to a process that no longer exists.
pub(crate) fn name_is_stale(name: &str) -> bool {
    name.parse::<OwnerId>().is_ok_and(|o| !o.alive())
}
