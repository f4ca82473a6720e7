//! The hardened container every step of an execution runs in, and its one disk budget.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::container::{Config, CreateContainerOptions, StartContainerOptions};
use bollard::models::{HostConfig, HostConfigLogConfig, Mount, MountTypeEnum};
use vana_sandbox_core::host::{
    PROC_MASKED_DIRS, PROC_MASKED_FILES, PROC_READ_ONLY, PROC_VIRTUALISED_FILES,
};
use vana_sandbox_core::reaper;
use vana_sandbox_init::serve::Setup;

use crate::error::DockerError;
use crate::host_files::{self, LOADAVG, UPTIME};
use crate::memcg::Memcg;
use crate::pool::PoolKey;
use crate::run::Target;
use crate::session::Session;
use crate::{Shared, LABEL, OWNER_LABEL};

/// Where `vana-init` is bound inside every container.
pub(crate) const INIT_PATH: &str = "/opt/vana/init";
/// The workspace.
pub(crate) const WORKSPACE: &str = "/workspace";

/// How one disk limit is split between the writable places, so that everything a run can store
/// adds up to at most the limit: a small `/dev/shm` (Docker always mounts one), `/tmp` inside
/// the workspace when the image links it there, else a share of its own, and the rest for the
/// workspace. Every part is whole pages (tmpfs rounds sizes up to pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskBudget {
    /// The `/workspace` tmpfs.
    pub workspace: u64,
    /// A `/tmp` tmpfs of its own (images whose `/tmp` is not a link into the workspace).
    pub tmp: Option<u64>,
    /// `/dev/shm`.
    pub shm: u64,
}

const PAGE: u64 = 4096;

impl DiskBudget {
    /// The split of `disk` bytes.
    pub(crate) fn new(disk: u64, tmp_in_workspace: bool) -> Self {
        let pages = |b: u64| b / PAGE * PAGE;
        let shm = pages((disk / 8).min(16 << 20)).max(PAGE);
        let tmp = (!tmp_in_workspace).then(|| pages(disk / 4).max(PAGE));
        let workspace = pages(disk.saturating_sub(shm + tmp.unwrap_or(0))).max(PAGE);
        Self {
            workspace,
            tmp,
            shm,
        }
    }

    /// Everything together.
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.workspace + self.tmp.unwrap_or(0) + self.shm
    }

    /// The mounts whose usage init reports.
    pub(crate) fn usage_paths(&self) -> Vec<Vec<u8>> {
        let mut v = vec![WORKSPACE.as_bytes().to_vec(), b"/dev/shm".to_vec()];
        if self.tmp.is_some() {
            v.push(b"/tmp".to_vec());
        }
        v
    }
}

/// A running container whose init is attached and set up.
#[derive(Debug)]
pub(crate) struct Container {
    /// Docker's id.
    pub id: String,
    /// What it was created for.
    pub key: PoolKey,
    /// Its cgroups on the host (absent when the host cannot see them).
    pub memcg: Option<Memcg>,
    /// The conversation with its init.
    pub session: Arc<Session>,
    /// Bytes in use on its writable mounts, as init last measured them.
    pub disk_used: u64,
    /// Its init relays the egress proxy's address.
    pub listening: bool,
}

impl Container {
    /// What a run needs of it.
    pub(crate) fn target(&self) -> Target {
        Target {
            id: self.id.clone(),
            key: self.key.clone(),
            memcg: self.memcg.clone(),
            session: self.session.clone(),
            disk_used: self.disk_used,
        }
    }
}

/// Paths hidden from the container: the core's `/proc` lists (shared with the native backend;
/// under runc the virtualised files this backend cannot replace, such as the boot id), Docker's
/// own `/sys` masks, the machine's identity (DMI) and each NUMA node's memory counters (the
/// host's memory, per node). gVisor's `/proc` has its own view of the virtualised files.
fn masked_paths(gvisor: bool) -> Vec<String> {
    let virtualised = PROC_VIRTUALISED_FILES
        .iter()
        .filter(|f| !gvisor && proc_view(f).is_none());
    let nodes = std::fs::read_dir("/sys/devices/system/node")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| {
            n.strip_prefix("node")
                .is_some_and(|i| i.parse::<u32>().is_ok())
        })
        .flat_map(|n| {
            ["meminfo", "numastat", "vmstat"].map(|f| format!("/sys/devices/system/node/{n}/{f}"))
        });
    PROC_MASKED_FILES
        .iter()
        .chain(PROC_MASKED_DIRS)
        .chain(virtualised)
        .map(|p| format!("/proc/{p}"))
        .chain([
            "/sys/firmware".into(),
            "/sys/devices/virtual/powercap".into(),
            "/sys/devices/virtual/dmi".into(),
            "/sys/class/dmi".into(),
        ])
        .chain(nodes)
        .collect()
}

/// Paths made read-only: the core's `/proc` list.
fn read_only_paths() -> Vec<String> {
    PROC_READ_ONLY
        .iter()
        .map(|p| format!("/proc/{p}"))
        .collect()
}

fn bind_ro(source: &str, target: &str) -> Mount {
    Mount {
        source: Some(source.into()),
        target: Some(target.into()),
        typ: Some(MountTypeEnum::BIND),
        read_only: Some(true),
        ..Default::default()
    }
}

/// What this backend shows for a virtualised `/proc` file under runc (runc allows binds onto
/// exactly such files, as lxcfs uses; a file it does not allow is masked instead).
enum ProcView {
    Meminfo,
    Stat,
    Fixed(&'static str),
}

fn proc_view(file: &str) -> Option<ProcView> {
    match file {
        "meminfo" => Some(ProcView::Meminfo),
        "stat" => Some(ProcView::Stat),
        "loadavg" => Some(ProcView::Fixed(LOADAVG)),
        // Not in the core's list: the native backend gives each sandbox a time namespace, Docker
        // has none, so the host's uptime is replaced here.
        "uptime" => Some(ProcView::Fixed(UPTIME)),
        _ => None,
    }
}

/// Under runc `/proc` is the host kernel's: the virtualised files, sized to the container.
fn proc_binds(shared: &Shared, key: &PoolKey) -> Result<Vec<Mount>, DockerError> {
    let files = &shared.files;
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let mut binds = Vec::new();
    for name in PROC_VIRTUALISED_FILES.iter().copied().chain(["uptime"]) {
        let content = match proc_view(name) {
            Some(ProcView::Meminfo) => host_files::meminfo(key.memory.get()),
            Some(ProcView::Stat) => host_files::stat(cpus),
            Some(ProcView::Fixed(text)) => text.to_string(),
            None => continue,
        };
        let path = files.file(name, content.as_bytes())?;
        binds.push(bind_ro(&path, &format!("/proc/{name}")));
    }
    Ok(binds)
}

/// Creates and starts a container for `key`, attaches to its init and sets it up.
pub(crate) async fn create(shared: &Shared, key: &PoolKey) -> Result<Container, DockerError> {
    let labels = HashMap::from([
        (LABEL.to_string(), "1".to_string()),
        (OWNER_LABEL.to_string(), shared.owner.to_string()),
    ]);
    let uid = shared.config.uid;
    let budget = DiskBudget::new(key.disk.get(), key.tmp_in_workspace);
    // Typed tmpfs mounts take no uid option: HostConfig.tmpfs. `exec`: compiled programs run
    // from the workspace.
    let tmpfs = |size: u64, exec: &str| {
        format!("rw,nosuid,nodev,{exec},size={size},mode=1777,uid={uid},gid={uid}")
    };
    let mut tmpfs_map = HashMap::from([(WORKSPACE.to_string(), tmpfs(budget.workspace, "exec"))]);
    if let Some(tmp) = budget.tmp {
        tmpfs_map.insert("/tmp".to_string(), tmpfs(tmp, "noexec"));
    }
    let mut mounts = vec![
        bind_ro(&shared.files.init, INIT_PATH),
        bind_ro(&shared.files.resolv, "/etc/resolv.conf"),
    ];
    mounts.extend(key.mounts.iter().map(|m| bind_ro(&m.host, &m.sandbox)));
    if !key.is_gvisor() {
        mounts.extend(proc_binds(shared, key)?);
    }
    let host = HostConfig {
        readonly_rootfs: Some(true),
        mounts: Some(mounts),
        tmpfs: Some(tmpfs_map),
        // Init runs as root of the container with only what it needs: switching each program
        // to the sandbox user (setuid, setgid) and killing what a program leaves (kill).
        // Programs have no capabilities (their ids are not 0; no-new-privileges).
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(vec!["SETUID".into(), "SETGID".into(), "KILL".into()]),
        security_opt: Some(vec![
            "no-new-privileges".into(),
            format!("seccomp={}", shared.seccomp_profile),
        ]),
        pids_limit: Some(key.container_pids(&shared.config) as i64),
        memory: Some(key.memory.get() as i64),
        memory_swap: Some(key.memory.get() as i64),
        nano_cpus: Some(key.nano_cpus),
        network_mode: Some("none".into()),
        init: Some(false),
        runtime: Some(key.runtime.as_str().to_string()),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        masked_paths: Some(masked_paths(key.is_gvisor())),
        readonly_paths: Some(read_only_paths()),
        ipc_mode: Some("private".into()),
        shm_size: Some(budget.shm as i64),
        ..Default::default()
    };
    let config = Config {
        image: Some(key.image.clone()),
        entrypoint: Some(vec![INIT_PATH.into()]),
        cmd: Some(vec!["serve".into()]),
        user: Some("0:0".into()),
        working_dir: Some(WORKSPACE.into()),
        hostname: Some("sandbox".into()),
        labels: Some(labels),
        network_disabled: Some(true),
        env: Some(vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()]),
        // Init's stdio is the protocol: stdin stays open until the one attached client (the
        // host) goes, then closes, and init takes everything down.
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        host_config: Some(host),
        ..Default::default()
    };
    let docker = &shared.docker;
    let created = docker
        .create_container(None::<CreateContainerOptions<String>>, config)
        .await
        .map_err(DockerError::api("create container"))?;
    let id = created.id;
    match start(shared, &id, key, budget).await {
        Ok(c) => Ok(c),
        Err(e) => {
            remove(shared, &id).await;
            Err(e)
        }
    }
}

async fn start(
    shared: &Shared,
    id: &str,
    key: &PoolKey,
    budget: DiskBudget,
) -> Result<Container, DockerError> {
    let docker = &shared.docker;
    docker
        .start_container(id, None::<StartContainerOptions<String>>)
        .await
        .map_err(DockerError::api("start container"))?;
    let pid = docker
        .inspect_container(id, None)
        .await
        .map_err(DockerError::api("inspect container"))?
        .state
        .and_then(|s| s.pid)
        .unwrap_or(0);
    let setup = Setup {
        filter: shared.filter.clone(),
        usage_paths: budget.usage_paths(),
    };
    let memcg = Memcg::of_pid(pid);
    // cgroup v1 does not charge TCP buffers to memory: bound them apart (v2 charges them; gVisor's
    // netstack lives in the sentry, whose memory is the container's). Docker 20.10 records
    // `KernelMemoryTCP` but runc no longer applies it, so the bound is written here, before any
    // program runs; a container whose bound cannot be set is not used (fail closed).
    if shared.cgroup_v1 && !key.is_gvisor() {
        memcg
            .as_ref()
            .ok_or_else(|| {
                DockerError::Other("the container's memory cgroup is not visible".into())
            })?
            .set_socket_memory(key.socket_memory.get())
            .map_err(|e| DockerError::Other(format!("memory.kmem.tcp.limit_in_bytes: {e}")))?;
    }
    let session = Arc::new(Session::open(docker, id, setup).await?);
    let container = Container {
        id: id.to_string(),
        key: key.clone(),
        memcg,
        session,
        disk_used: 0,
        listening: false,
    };
    Ok(container)
}

/// How a container is removed: forced, with its anonymous volumes.
pub(crate) const REMOVE: bollard::container::RemoveContainerOptions =
    bollard::container::RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };

/// Removes a container now; errors are logged, not returned.
pub(crate) async fn remove(shared: &Shared, id: &str) {
    if let Err(e) = shared.docker.remove_container(id, Some(REMOVE)).await {
        tracing::warn!(container = id, "removing container failed: {e}");
    }
}

/// Ends a container off the caller's path: its attach stream is closed now (init kills what is
/// left and exits), and the process's reaper removes it (a new container waits while the
/// reaper is behind; the process's exit waits for it).
pub(crate) fn end(c: Container) {
    c.session.close();
    let id = c.id;
    reaper::end(Box::new(move || remover::remove(&id)));
}

/// The reaper's side: a client of its own on a runtime of its own, since the caller's runtime
/// may be gone (at the process's exit) by the time a removal runs.
mod remover {
    use std::cell::RefCell;

    use bollard::Docker;
    use vana_sandbox_core::BackendError;

    thread_local! {
        static CLIENT: RefCell<Option<(tokio::runtime::Runtime, Docker)>> = const { RefCell::new(None) };
    }

    fn unavailable(e: impl std::fmt::Display) -> BackendError {
        BackendError::Unavailable(format!("removing a container: {e}"))
    }

    /// Removes container `id` (blocking).
    pub(super) fn remove(id: &str) -> Result<(), BackendError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Ended inline on a runtime's thread (no reaper thread here): block elsewhere.
            return std::thread::scope(|s| {
                s.spawn(|| remove(id))
                    .join()
                    .unwrap_or_else(|_| Err(unavailable("the remover panicked")))
            });
        }
        CLIENT.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(unavailable)?;
                let docker = rt
                    .block_on(
                        Docker::connect_with_socket_defaults()
                            .map_err(unavailable)?
                            .negotiate_version(),
                    )
                    .map_err(unavailable)?;
                *cell = Some((rt, docker));
            }
            let Some((rt, docker)) = cell.as_ref() else {
                return Err(unavailable("no client"));
            };
            match rt.block_on(docker.remove_container(id, Some(super::REMOVE))) {
                Ok(()) => Ok(()),
                // Already gone (removed by `shutdown` or by hand).
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(()),
                Err(e) => Err(unavailable(format!("{id}: {e}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_budget_adds_up_to_the_limit() {
        for disk in [1 << 20, 8 << 20, 100 << 20, 4 << 30, 12345678] {
            for linked in [true, false] {
                let b = DiskBudget::new(disk, linked);
                assert!(b.total() <= disk, "{disk} {linked}: {b:?}");
                assert!(b.workspace >= disk / 2, "{disk} {linked}: {b:?}");
                assert_eq!(b.tmp.is_none(), linked);
                for part in [b.workspace, b.shm, b.tmp.unwrap_or(0)] {
                    assert_eq!(part % PAGE, 0);
                }
            }
        }
        assert_eq!(DiskBudget::new(100 << 20, true).shm, 12_800 << 10);
        assert_eq!(DiskBudget::new(1 << 30, true).shm, 16 << 20);
    }
}
