//! How this host lets the native backend map identities: as root, each instance leases a block
//! of host ids of its own; rootless, the caller's own uid is the only id there is.
//!
//! Inside every sandbox the program runs as uid/gid [`PROGRAM_ID`] (`sandbox`), and init as
//! [`INIT_ID`] (`root` of the sandbox's user namespace, with no capability but those it needs to
//! switch to the program's id and to signal it). Rootless, both are the caller's uid; init is
//! still out of the program's reach (it is PID 1, non-dumpable, and the seccomp filter lets no
//! process change another's limits or priority).

use std::path::{Path, PathBuf};

/// The program's uid and gid inside the sandbox.
pub const PROGRAM_ID: u32 = 1000;
/// Init's uid and gid inside the sandbox (root mode).
pub const INIT_ID: u32 = 0;

/// How ids are mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The host process is root: instances lease blocks of 2 host ids from `base` (init, then
    /// the program).
    Root {
        /// First host id of the range.
        base: u32,
        /// Number of blocks.
        blocks: u32,
    },
    /// An unprivileged host process: the program and init run as the caller's ids.
    Rootless {
        /// The caller's uid.
        uid: u32,
        /// The caller's gid.
        gid: u32,
    },
}

/// One instance's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ids {
    /// Init's uid/gid inside.
    pub init: u32,
    /// The program's uid/gid inside.
    pub program: u32,
    /// The program's uid and gid as the host sees them (owner of the files the host places).
    pub program_host: (u32, u32),
    /// The contents of `/proc/<pid>/uid_map` and `gid_map`.
    pub uid_map: String,
    pub gid_map: String,
    /// Whether `setgroups` must be denied before the gid map is written (rootless).
    pub deny_setgroups: bool,
    /// The host id that creates (and so owns) the user namespace, when it is not the caller's.
    /// The kernel charges what a namespace's processes hold (inotify instances, pending signals,
    /// processes) to its owner at the host level too: an owner per lease keeps those counts per
    /// sandbox instead of adding them all up under root's.
    pub owner: Option<u32>,
}

impl Mode {
    /// This process's mode.
    pub(crate) fn detect(base: u32, blocks: u32) -> Self {
        // SAFETY: getuid/getgid/geteuid have no preconditions.
        let (euid, uid, gid) = unsafe { (libc::geteuid(), libc::getuid(), libc::getgid()) };
        if euid == 0 {
            Mode::Root { base, blocks }
        } else {
            Mode::Rootless { uid, gid }
        }
    }

    pub(crate) fn is_root(&self) -> bool {
        matches!(self, Mode::Root { .. })
    }

    /// The ids of an instance holding lease `index` (root mode; ignored rootless).
    pub(crate) fn ids(&self, index: u32) -> Ids {
        match *self {
            Mode::Root { base, .. } => {
                let init = base + 2 * index;
                let program = init + 1;
                let map = format!("{INIT_ID} {init} 1\n{PROGRAM_ID} {program} 1\n");
                Ids {
                    init: INIT_ID,
                    program: PROGRAM_ID,
                    program_host: (program, program),
                    uid_map: map.clone(),
                    gid_map: map,
                    deny_setgroups: false,
                    owner: Some(init),
                }
            }
            Mode::Rootless { uid, gid } => Ids {
                init: PROGRAM_ID,
                program: PROGRAM_ID,
                program_host: (uid, gid),
                uid_map: format!("{PROGRAM_ID} {uid} 1\n"),
                gid_map: format!("{PROGRAM_ID} {gid} 1\n"),
                deny_setgroups: true,
                owner: None,
            },
        }
    }

    /// Where state lives by default: `/run/vana-sandbox` as root; rootless,
    /// `$XDG_RUNTIME_DIR/vana-sandbox` or `/tmp/vana-sandbox-<uid>`.
    pub(crate) fn default_state_dir() -> PathBuf {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/run/vana-sandbox");
        }
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
            Some(d) => Path::new(&d).join("vana-sandbox"),
            // SAFETY: as above.
            None => PathBuf::from(format!("/tmp/vana-sandbox-{}", unsafe { libc::geteuid() })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_mode_gives_each_lease_its_own_ids() {
        let m = Mode::Root {
            base: 2_000_000_000,
            blocks: 100,
        };
        let a = m.ids(0);
        let b = m.ids(1);
        assert_eq!(a.uid_map, "0 2000000000 1\n1000 2000000001 1\n");
        assert_eq!(b.program_host, (2_000_000_003, 2_000_000_003));
        assert_ne!(a.program_host, b.program_host);
        assert!(!a.deny_setgroups);
    }

    #[test]
    fn rootless_maps_the_callers_own_ids() {
        let ids = Mode::Rootless { uid: 1234, gid: 99 }.ids(5);
        assert_eq!(ids.uid_map, "1000 1234 1\n");
        assert_eq!(ids.gid_map, "1000 99 1\n");
        assert_eq!(ids.init, ids.program);
        assert!(ids.deny_setgroups);
    }
}
