//! What a backend is and what it enforces: backend identity, container runtimes, isolation
//! layers, and the host's capability report.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::BackendError;

/// Which backend ran something. **Contract**: the wire names (`native`, `docker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Linux namespaces, cgroups, seccomp and Landlock in-process (`vana-sandbox-native`).
    Native,
    /// Hardened containers through the Docker Engine API (`vana-sandbox-docker`).
    Docker,
    /// The in-memory test double ([`crate::fake::FakeExecutor`]).
    Fake,
}

impl BackendKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Native => "native",
            BackendKind::Docker => "docker",
            BackendKind::Fake => "fake",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A container runtime (Docker backend). **Contract**: `runc`, `runsc` in policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// The default OCI runtime.
    Runc,
    /// gVisor: the program's system calls go to a user-space kernel.
    Runsc,
}

impl Runtime {
    /// The name the engine knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Runsc => "runsc",
        }
    }

    /// Parses `runc` or `runsc`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "runc" => Some(Runtime::Runc),
            "runsc" => Some(Runtime::Runsc),
            _ => None,
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An isolation layer. **Contract**: the snake-case names are what a policy's `require` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerName {
    /// A container per instance (Docker).
    Container,
    /// gVisor's user-space kernel (Docker with `runsc`).
    Gvisor,
    /// The runtime image is present (Docker).
    Image,
    /// A user namespace per instance (ids inside are not host ids).
    UserNamespace,
    /// A private pid namespace.
    PidNamespace,
    /// A private mount namespace.
    MountNamespace,
    /// A private, empty network namespace.
    NetworkNamespace,
    /// A private IPC namespace.
    IpcNamespace,
    /// A private UTS namespace.
    UtsNamespace,
    /// A private cgroup namespace.
    CgroupNamespace,
    /// `pivot_root` into a read-only root.
    PivotRoot,
    /// Memory, process and CPU limits through a cgroup (all three).
    Cgroups,
    /// A memory limit through a cgroup.
    CgroupMemory,
    /// Swap counted in the memory limit.
    CgroupMemorySwap,
    /// A process limit through a cgroup.
    CgroupPids,
    /// A CPU quota through a cgroup.
    CgroupCpu,
    /// The program runs as an unprivileged user.
    NonRootUser,
    /// No capabilities.
    CapabilitiesDropped,
    /// `no_new_privs`.
    NoNewPrivs,
    /// Race-free kill and wait through pidfds.
    Pidfd,
    /// A seccomp-bpf system call filter.
    Seccomp,
    /// Landlock filesystem rules.
    Landlock,
    /// A time namespace (clocks that do not tell the host's uptime).
    TimeNamespace,
    /// The read-only base presented through mounts of the sandbox's own (overlays), sharing no
    /// inode with the host or another sandbox.
    PrivateBase,
    /// Resource limits (`setrlimit`).
    Rlimits,
    /// Sensitive `/proc` entries masked.
    ProcMasking,
    /// Our own init as PID 1, dying with its owner.
    Init,
}

impl LayerName {
    /// The policy name (`pid_namespace`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            LayerName::Container => "container",
            LayerName::Gvisor => "gvisor",
            LayerName::Image => "image",
            LayerName::UserNamespace => "user_namespace",
            LayerName::PidNamespace => "pid_namespace",
            LayerName::MountNamespace => "mount_namespace",
            LayerName::NetworkNamespace => "network_namespace",
            LayerName::IpcNamespace => "ipc_namespace",
            LayerName::UtsNamespace => "uts_namespace",
            LayerName::CgroupNamespace => "cgroup_namespace",
            LayerName::PivotRoot => "pivot_root",
            LayerName::Cgroups => "cgroups",
            LayerName::CgroupMemory => "cgroup_memory",
            LayerName::CgroupMemorySwap => "cgroup_memory_swap",
            LayerName::CgroupPids => "cgroup_pids",
            LayerName::CgroupCpu => "cgroup_cpu",
            LayerName::NonRootUser => "non_root_user",
            LayerName::CapabilitiesDropped => "capabilities_dropped",
            LayerName::NoNewPrivs => "no_new_privs",
            LayerName::Pidfd => "pidfd",
            LayerName::Seccomp => "seccomp",
            LayerName::Landlock => "landlock",
            LayerName::TimeNamespace => "time_namespace",
            LayerName::PrivateBase => "private_base",
            LayerName::Rlimits => "rlimits",
            LayerName::ProcMasking => "proc_masking",
            LayerName::Init => "init",
        }
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One isolation layer and whether this host enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Which layer.
    pub name: LayerName,
    /// Whether the backend enforces it on this host.
    pub available: bool,
    /// Details (mechanism, version, or why it is missing).
    pub detail: String,
    /// Whether a missing layer is worth a `layer_degraded` event on every result (a layer the
    /// backend normally enforces, as opposed to one it never has).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degradable: bool,
}

impl Layer {
    /// A layer.
    pub fn new(name: LayerName, available: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            available,
            detail: detail.into(),
            degradable: false,
        }
    }

    /// Marks the layer as one whose absence is reported on every result.
    pub fn degradable(mut self) -> Self {
        self.degradable = true;
        self
    }
}

/// What a backend can enforce on this host, probed once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Which backend.
    pub backend: BackendKind,
    /// Every layer the backend knows about.
    pub layers: Vec<Layer>,
    /// Container runtimes it can use (empty for backends without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<Runtime>,
}

impl Capabilities {
    /// A report with no layers yet.
    pub fn new(backend: BackendKind) -> Self {
        Self {
            backend,
            layers: Vec::new(),
            runtimes: Vec::new(),
        }
    }

    /// Looks up a layer.
    pub fn layer(&self, name: LayerName) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Checks that every required layer is available and the runtime (if any) is known.
    pub fn check(
        &self,
        require: &[LayerName],
        runtime: Option<Runtime>,
    ) -> Result<(), BackendError> {
        for name in require {
            match self.layer(*name) {
                Some(l) if l.available => {}
                Some(l) => {
                    return Err(BackendError::MissingLayer {
                        layer: *name,
                        detail: l.detail.clone(),
                    })
                }
                None => {
                    return Err(BackendError::MissingLayer {
                        layer: *name,
                        detail: format!("the {} backend does not have this layer", self.backend),
                    })
                }
            }
        }
        match runtime {
            Some(rt) if !self.runtimes.contains(&rt) => Err(BackendError::MissingRuntime {
                runtime: rt,
                backend: self.backend,
            }),
            _ => Ok(()),
        }
    }

    /// Layers this backend normally enforces that this host lacks (reported on every result).
    pub fn degraded(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().filter(|l| l.degradable && !l.available)
    }
}
