//! What this host lets the native backend enforce.

use std::path::Path;

use vana_sandbox_core::{BackendError, BackendKind, Capabilities, Layer, LayerName};

use crate::cgroup::CgroupDriver;
use crate::mode::Mode;

fn layer(name: LayerName, available: bool, detail: impl Into<String>) -> Layer {
    Layer::new(name, available, detail)
}

/// Fails with a clear message when this host does not let an unprivileged process create a
/// user namespace (the rootless mode needs one).
pub(crate) fn check_unprivileged_userns() -> Result<(), BackendError> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err(BackendError::Unavailable(
            "rootless mode needs unprivileged user namespaces, and this host turns them off \
             (kernel.unprivileged_userns_clone = 0); run as root, or enable them"
                .into(),
        ));
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Err(BackendError::Unavailable(
            "rootless mode needs user namespaces, and this host allows none \
             (user.max_user_namespaces = 0); run as root, or raise it"
                .into(),
        ));
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Err(BackendError::Unavailable(
            "rootless mode needs unprivileged user namespaces, and AppArmor restricts them \
             (kernel.apparmor_restrict_unprivileged_userns = 1); run as root, or allow them"
                .into(),
        ));
    }
    Ok(())
}

/// Probes the layers. Cheap: file checks and one pidfd_open.
pub(crate) fn probe(
    mode: &Mode,
    cgroups: &dyn CgroupDriver,
    landlock_abi: u32,
    seccomp: bool,
) -> Capabilities {
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
        true,
        match mode {
            Mode::Root { .. } => {
                "one per instance; its ids are a block of host ids leased host-wide for the instance's life"
            }
            Mode::Rootless { .. } => "one per instance, mapping only the caller's own id (rootless)",
        },
    ));
    layers.push(layer(
        LayerName::Init,
        true,
        "vana-init (our static init, from a sealed memfd) is PID 1: reaps, reports, and kills \
         everything when its owner goes",
    ));
    layers.push(layer(
        LayerName::PivotRoot,
        true,
        "read-only root of bind mounts; tmpfs /workspace and /tmp sized to the disk limit",
    ));
    let cg = cgroups.describe();
    let all = cg
        .iter()
        .filter(|l| l.name != LayerName::CgroupMemorySwap)
        .all(|l| l.available);
    layers.push(layer(
        LayerName::Cgroups,
        all,
        if all {
            format!("cgroup {}: memory, pids and cpu", cgroups.version())
        } else {
            "no cgroup limits on this host for this caller (see the cgroup_* layers)".to_string()
        },
    ));
    layers.extend(cg);
    layers.push(layer(
        LayerName::NonRootUser,
        true,
        match mode {
            Mode::Root { .. } => {
                "uid/gid 1000 of the instance's user namespace (a host id no other live sandbox has); \
                 init runs under another"
            }
            Mode::Rootless { .. } => "uid/gid 1000 of the instance's user namespace (the caller's id)",
        },
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
            format!(
                "allow-list of {} system calls (the rest: ENOSYS), non-native ABIs killed",
                vana_sandbox_seccomp::table_size()
            )
        } else {
            "the kernel has no seccomp filters (or it was turned off)".to_string()
        },
    ));
    let full = crate::landlock::FULL_ABI;
    layers.push(layer(
        LayerName::Landlock,
        landlock_abi >= full,
        match landlock_abi {
            0 => "not available in this kernel (or turned off)".to_string(),
            a if a >= full => {
                format!("ABI {a}: filesystem rules, abstract Unix socket and signal scopes")
            }
            a => format!(
                "ABI {a}: partial (full enforcement needs ABI {full}); filesystem rules applied"
            ),
        },
    ));
    let time_ns = std::path::Path::new("/proc/self/ns/time").exists();
    layers.push(layer(
        LayerName::TimeNamespace,
        time_ns,
        if time_ns {
            "monotonic and boot-time clocks start near zero (uptime hidden)"
        } else {
            "the kernel has no time namespaces (before 5.6): uptime is the host's"
        },
    ));
    layers.push(layer(
        LayerName::PrivateBase,
        true,
        "/usr, /etc/ssl, /etc/alternatives and toolchains as read-only overlays of the sandbox's \
         own (no inode shared with the host); /usr/local hidden",
    ));
    layers.push(layer(
        LayerName::Rlimits,
        true,
        "core 0, nofile, fsize = disk limit, nproc (per user namespace), stack, msgqueue; optional \
         cpu; data = memory limit where no cgroup limits memory",
    ));
    layers.push(layer(
        LayerName::ProcMasking,
        true,
        "host-wide /proc entries masked or replaced by views of the sandbox (meminfo, stat, \
         loadavg, boot_id); no /sys",
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
