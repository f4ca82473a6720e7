//! What this host lets the native backend enforce.

use std::path::Path;

use vana_sandbox_core::{BackendKind, Capabilities, Layer, LayerName};

use crate::cgroup::CgroupDriver;

fn layer(name: LayerName, available: bool, detail: impl Into<String>) -> Layer {
    Layer::new(name, available, detail)
}

/// Probes the layers. Cheap: file checks and one pidfd_open.
pub(crate) fn probe(cgroups: &dyn CgroupDriver, landlock_abi: u32, seccomp: bool) -> Capabilities {
    let mut layers = Vec::new();
    for (name, ns) in [
        (LayerName::PidNamespace, "pid"),
        (LayerName::MountNamespace, "mnt"),
        (LayerName::NetworkNamespace, "net"),
        (LayerName::IpcNamespace, "ipc"),
        (LayerName::UtsNamespace, "uts"),
        (LayerName::CgroupNamespace, "cgroup"),
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
        LayerName::UserNamespace,
        false,
        "not used: the backend runs as root and drops to an unprivileged uid instead",
    ));
    layers.push(layer(
        LayerName::PivotRoot,
        true,
        "read-only root of bind mounts; tmpfs /workspace and /tmp sized to the disk limit",
    ));
    layers.extend(cgroups.describe());
    layers.push(layer(
        LayerName::NonRootUser,
        true,
        "unprivileged uid/gid, no supplementary groups",
    ));
    layers.push(layer(
        LayerName::CapabilitiesDropped,
        true,
        "empty effective, permitted, ambient and bounding sets",
    ));
    layers.push(layer(
        LayerName::NoNewPrivs,
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
        LayerName::Pidfd,
        fd >= 0,
        if fd >= 0 {
            "race-free kill and wait"
        } else {
            "kernel lacks pidfd (5.3+)"
        },
    ));
    layers.push(layer(
        LayerName::Seccomp,
        seccomp,
        if seccomp {
            "BPF filter: non-native ABIs killed, kernel attack surface denied (see docs/SECURITY.md)"
        } else {
            "the kernel has no seccomp filters (or it was turned off)"
        },
    ));
    let full = crate::landlock::FULL_ABI;
    layers.push(layer(
        LayerName::Landlock,
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
        LayerName::LandlockNetwork,
        landlock_abi >= 4,
        format!("TCP bind/connect denied (ABI 4+; host has {landlock_abi})"),
    ));
    layers.push(layer(
        LayerName::Rlimits,
        true,
        "core 0, nofile, fsize = disk limit, nproc, stack, msgqueue; optional cpu",
    ));
    layers.push(layer(
        LayerName::ProcMasking,
        true,
        "sensitive /proc entries masked or read-only; no /sys",
    ));
    // Layers the backend normally has: their absence is reported on every result.
    for l in &mut layers {
        if matches!(
            l.name,
            LayerName::CgroupMemorySwap | LayerName::Seccomp | LayerName::Landlock
        ) {
            l.degradable = true;
        }
    }
    let mut caps = Capabilities::new(BackendKind::Native);
    caps.layers = layers;
    caps
}
