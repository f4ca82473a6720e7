//! A container's memory cgroup on the host: OOM evidence for exec'd processes (the engine's
//! `OOMKilled` flag only covers a container's main process).

use std::path::{Path, PathBuf};

/// A container's memory cgroup on the host (v1 or v2), found from its main process.
#[derive(Debug, Clone)]
pub(crate) struct Memcg {
    dir: PathBuf,
    v2: bool,
}

impl Memcg {
    pub(crate) fn of_pid(pid: i64) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        for line in text.lines() {
            let mut it = line.splitn(3, ':');
            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            if ctrls.split(',').any(|c| c == "memory") {
                let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
                return dir.exists().then_some(Self { dir, v2: false });
            }
        }
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        dir.join("memory.events")
            .exists()
            .then_some(Self { dir, v2: true })
    }

    pub(crate) fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let mut it = l.split_whitespace();
                    (it.next() == Some(key))
                        .then(|| it.next()?.parse().ok())
                        .flatten()
                })
            })
            .unwrap_or(0)
    }
}
