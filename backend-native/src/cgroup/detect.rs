//! Finding the cgroup hierarchies from `/proc/self/mountinfo` and `/proc/self/cgroup`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::none::Unavailable;
use super::{CgroupDriver, CgroupError, V1, V2};

/// Directory created under each hierarchy for our runs.
pub(crate) const BASE_NAME: &str = "vana-sandbox";

/// The hierarchies seen on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detected {
    /// `(controller, mount point, our own cgroup path relative to the mount)` of v1 hierarchies.
    pub v1: Vec<(String, PathBuf, String)>,
    /// Mount point of the cgroup2 hierarchy and our own path in it.
    pub v2: Option<(PathBuf, String)>,
}

/// Parses mountinfo and /proc/self/cgroup text.
pub fn parse(mountinfo: &str, self_cgroup: &str) -> Detected {
    let mut d = Detected::default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        let (Some(root), Some(mnt), Some(fstype)) = (l.get(3), l.get(4), r.first()) else {
            continue;
        };
        let own = |key: &str| -> String {
            let path = self_cgroup
                .lines()
                .find_map(|c| {
                    let mut it = c.splitn(3, ':');
                    let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
                    (ctrls == key).then(|| path.to_string())
                })
                .unwrap_or_else(|| "/".into());
            // The mount may expose a subtree (root != "/"): make the path relative to it.
            let rel = if *root == "/" {
                path.as_str()
            } else {
                path.strip_prefix(root).unwrap_or("/")
            };
            if rel.is_empty() {
                "/".into()
            } else {
                rel.to_string()
            }
        };
        match *fstype {
            "cgroup2" => d.v2 = Some((PathBuf::from(unescape(mnt)), own(""))),
            "cgroup" => {
                let opts = r.get(2).copied().unwrap_or("");
                let ctrls: Vec<&str> = opts
                    .split(',')
                    .filter(|o| ["memory", "pids", "cpu", "cpuacct", "freezer"].contains(o))
                    .collect();
                if ctrls.is_empty() {
                    continue;
                }
                let key = ctrls.join(",");
                let own_path = own(&key);
                for c in ctrls {
                    d.v1.push((
                        c.to_string(),
                        PathBuf::from(unescape(mnt)),
                        own_path.clone(),
                    ));
                }
            }
            _ => {}
        }
    }
    d
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

impl Detected {
    /// The v1 hierarchy of `controller`: `(mount, own path)`.
    pub fn v1_of(&self, controller: &str) -> Option<(&Path, &str)> {
        self.v1
            .iter()
            .find(|(c, _, _)| c == controller)
            .map(|(_, m, p)| (m.as_path(), p.as_str()))
    }
}

/// Picks the driver for this host. Rootless, only a delegated cgroup v2 subtree named by
/// `$VANA_CGROUP_ROOT` is used (our own cgroup holds our process, so v2's no-internal-process
/// rule forbids children with controllers there); without one, no cgroup.
pub fn detect(rootless: bool) -> Result<Arc<dyn CgroupDriver>, CgroupError> {
    if rootless {
        return Ok(rootless_driver(
            std::env::var_os("VANA_CGROUP_ROOT").map(PathBuf::from),
        ));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| CgroupError::io("read", "/proc/self/mountinfo", e))?;
    let self_cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    choose(&parse(&mountinfo, &self_cg))
}

fn rootless_driver(root: Option<PathBuf>) -> Arc<dyn CgroupDriver> {
    let Some(root) = root else {
        return Arc::new(Unavailable {
            why: "rootless, and no delegated cgroup v2 subtree ($VANA_CGROUP_ROOT is not set)"
                .into(),
        });
    };
    let ctrls = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let have: Vec<&str> = ctrls.split_whitespace().collect();
    let writable = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        // SAFETY: access(2) on a NUL-terminated path.
        .is_ok_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0);
    if writable && ["memory", "pids", "cpu"].iter().all(|c| have.contains(c)) {
        Arc::new(V2::new(root.clone(), root))
    } else {
        Arc::new(Unavailable {
            why: format!(
                "$VANA_CGROUP_ROOT ({}) is not a writable cgroup v2 directory with the memory, \
                 pids and cpu controllers",
                root.display()
            ),
        })
    }
}

/// Chooses v2 when it offers memory, pids and cpu; otherwise v1.
pub fn choose(d: &Detected) -> Result<Arc<dyn CgroupDriver>, CgroupError> {
    if let Some((mnt, _)) = &d.v2 {
        let ctrls = std::fs::read_to_string(mnt.join("cgroup.controllers")).unwrap_or_default();
        let have: Vec<&str> = ctrls.split_whitespace().collect();
        if ["memory", "pids", "cpu"].iter().all(|c| have.contains(c)) {
            return Ok(Arc::new(V2::new(mnt.join(BASE_NAME), mnt.clone())));
        }
    }
    Ok(Arc::new(V1::from_detected(d)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:16 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
    const SELF: &str =
        "8:pids:/\n4:memory:/process_api/abc\n3:cpu,cpuacct:/x\n1:name=systemd:/\n0::/\n";

    #[test]
    fn hybrid_host_is_parsed_per_controller() {
        let d = parse(HYBRID, SELF);
        assert_eq!(
            d.v1_of("memory"),
            Some((Path::new("/sys/fs/cgroup/memory"), "/process_api/abc"))
        );
        assert_eq!(
            d.v1_of("pids"),
            Some((Path::new("/sys/fs/cgroup/pids"), "/"))
        );
        assert_eq!(
            d.v1_of("cpu"),
            Some((Path::new("/sys/fs/cgroup/cpu,cpuacct"), "/x"))
        );
        assert_eq!(d.v1_of("cpuacct"), d.v1_of("cpu"));
        assert_eq!(
            d.v2,
            Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".into()))
        );
    }

    #[test]
    fn pure_v2_host() {
        let mi = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let d = parse(mi, "0::/user.slice/session-1.scope\n");
        assert!(d.v1.is_empty());
        assert_eq!(
            d.v2,
            Some((
                PathBuf::from("/sys/fs/cgroup"),
                "/user.slice/session-1.scope".into()
            ))
        );
    }
}
