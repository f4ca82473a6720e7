//! Per-run cgroups: one interface over cgroup v1, v2 and hybrid hosts.
//!
//! The driver is chosen once from `/proc/self/mountinfo`: v2 when a cgroup2 mount offers the
//! memory, pids and cpu controllers; otherwise v1 with one hierarchy per controller (a hybrid
//! host such as one with an empty `/sys/fs/cgroup/unified` ends up here).

mod detect;
mod fsutil;
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

/// What a run's cgroup measured.
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

/// Creates per-run cgroups on one kind of hierarchy.
pub trait CgroupDriver: Send + Sync + std::fmt::Debug {
    /// `v1` or `v2`.
    fn version(&self) -> &'static str;

    /// Controllers and features, for the capability report.
    fn describe(&self) -> Vec<Layer>;

    /// Creates a cgroup named `name` with the memory, CPU and process limits of `limits`.
    fn create(&self, name: &str, limits: &Limits) -> Result<Box<dyn RunCgroup>, CgroupError>;

    /// Removes cgroups left by crashed processes; `is_stale` decides from the name.
    fn remove_stale(&self, is_stale: &dyn Fn(&str) -> bool) -> usize;
}

/// One run's cgroup (one directory per hierarchy).
pub trait RunCgroup: Send {
    /// `cgroup.procs` of every hierarchy, open for writing: the child writes `0` to each to join
    /// before anything else runs.
    fn join_fds(&self) -> Vec<RawFd>;

    /// Takes a sample for peaks the kernel does not keep.
    fn sample(&mut self);

    /// Reads the counters.
    fn stats(&self) -> CgroupStats;

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
