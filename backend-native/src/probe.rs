//! What this host lets the native backend enforce.

use std::path::Path;

use vana_sandbox_core::{Capabilities, Layer};

use crate::cgroup::CgroupDriver;

fn layer(name: &str, available: bool, detail: impl Into<String>) -> Layer {
    Layer {
        name: name.into(),
        available,
        detail: detail.into(),
    }
}

/// Probes the layers. Cheap: file checks and one pidfd_open.
pub(crate) fn probe(cgroups: &dyn CgroupDriver, landlock_abi: u32, seccomp: bool) -> Capabilities {
    let mut layers = Vec::new();
    for (name, ns) in [
        ("pid_namespace", "pid"),
        ("mount_namespace", "mnt"),
        ("network_namespace", "net"),
        ("ipc_namespace", "ipc"),
        ("uts_namespace", "uts"),
        ("cgroup_namespace", "cgroup"),
    ] {
        let ok = Path::new("/proc/self/ns").join(ns).exists();
        layers.push(layer(
            name,
            ok,
            if ok {
                "a fresh one per run"
            } else {
                "kernel lacks it"
            },
        ));
    }
    layers.push(layer(
        "user_namespace",
        false,
        "not used: the backend runs as root and drops to an unprivileged uid instead",
    ));
    layers.push(layer(
        "pivot_root",
        true,
        "read-only root of bind mounts; tmpfs /workspace and /tmp sized to the disk limit",
    ));
    for (name, ok, detail) in cgroups.describe() {
        layers.push(Layer {
            name,
            available: ok,
            detail,
        });
    }
    layers.push(layer(
        "non_root_user",
        true,
        "unprivileged uid/gid, no supplementary groups",
    ));
    layers.push(layer(
        "capabilities_dropped",
        true,
        "empty effective, permitted, ambient and bounding sets",
    ));
    layers.push(layer(
        "no_new_privs",
        true,
        "PR_SET_NO_NEW_PRIVS on every process",
    ));
    // SAFETY: pidfd_open on our own pid; the descriptor is closed right away.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if fd >= 0 {
        // SAFETY: closing the descriptor we just opened.
        unsafe { libc::close(fd as libc::c_int) };
    }
    layers.push(layer(
        "pidfd",
        fd >= 0,
        if fd >= 0 {
            "race-free kill and wait"
        } else {
            "kernel lacks pidfd (5.3+)"
        },
    ));
    layers.push(layer(
        "seccomp",
        seccomp,
        if seccomp {
            "BPF filter: non-native ABIs killed, kernel attack surface denied (see docs/SECURITY.md)"
        } else {
            "the kernel has no seccomp filters (or it was turned off)"
        },
    ));
    let full = crate::landlock::FULL_ABI;
    layers.push(layer(
        "landlock",
        landlock_abi >= full,
        match landlock_abi {
            0 => "not available in this kernel (or turned off)".to_string(),
            a if a >= full => format!("ABI {a}: filesystem, TCP bind/connect and scopes enforced"),
            a => format!(
                "ABI {a}: partial (full enforcement needs ABI {full}); filesystem rules applied"
            ),
        },
    ));
    layers.push(layer(
        "landlock_network",
        landlock_abi >= 4,
        format!("TCP bind/connect denied (ABI 4+; host has {landlock_abi})"),
    ));
    layers.push(layer(
        "rlimits",
        true,
        "core 0, nofile, fsize = disk limit, nproc, stack, msgqueue; optional cpu",
    ));
    layers.push(layer(
        "proc_masking",
        true,
        "sensitive /proc entries masked or read-only; no /sys",
    ));
    Capabilities {
        backend: "native".into(),
        layers,
    }
}
