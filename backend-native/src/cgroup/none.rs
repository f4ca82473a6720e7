//! No cgroup: a rootless caller on a host that delegates no cgroup v2 subtree to it. Memory,
//! process and CPU limits then fall back to per-process rlimits (`RLIMIT_DATA`, `RLIMIT_NPROC`
//! counted in the sandbox's own user namespace) and the wall clock; the layers are reported as
//! degraded, and a policy that requires them fails closed.

use std::os::fd::RawFd;

use vana_sandbox_core::{Layer, LayerName, Limits};

use super::{CgroupDriver, CgroupError, CgroupStats, InstanceCgroup};

/// The stand-in driver; `why` says what was looked for.
#[derive(Debug, Clone)]
pub(crate) struct Unavailable {
    pub why: String,
}

impl CgroupDriver for Unavailable {
    fn version(&self) -> &'static str {
        "none"
    }

    fn describe(&self) -> Vec<Layer> {
        let d = |fallback: &str| format!("no cgroup: {} (fallback: {fallback})", self.why);
        vec![
            Layer::new(LayerName::CgroupMemory, false, d("RLIMIT_DATA per process")).degradable(),
            Layer::new(LayerName::CgroupMemorySwap, false, d("none")),
            Layer::new(
                LayerName::CgroupPids,
                false,
                d("RLIMIT_NPROC in the sandbox's user namespace"),
            )
            .degradable(),
            Layer::new(LayerName::CgroupCpu, false, d("the wall-clock limit")).degradable(),
        ]
    }

    fn create(&self, _: &str, _: &Limits) -> Result<Box<dyn InstanceCgroup>, CgroupError> {
        Ok(Box::new(NoCgroup))
    }

    fn remove_stale(&self, _: &dyn Fn(&str) -> bool) -> usize {
        0
    }
}

struct NoCgroup;

impl InstanceCgroup for NoCgroup {
    fn join_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    fn close_join_fds(&mut self) {}
    fn set_limits(&mut self, _: &Limits) -> Result<(), CgroupError> {
        Ok(())
    }
    fn begin_run(&mut self) {}
    fn sample(&mut self) {}
    fn run_stats(&self) -> CgroupStats {
        CgroupStats::default()
    }
    fn kill_all(&self) {}
    fn remove(&mut self) -> Result<(), CgroupError> {
        Ok(())
    }
}
