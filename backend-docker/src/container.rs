//! The hardened container every execution gets.

use std::collections::HashMap;

use bollard::container::{Config, CreateContainerOptions, StartContainerOptions};
use bollard::models::{HostConfig, HostConfigLogConfig, Mount, MountTypeEnum};

use vana_sandbox_core::host::{PROC_MASKED_DIRS, PROC_MASKED_FILES, PROC_READ_ONLY};

use crate::error::DockerError;
use crate::pool::PoolKey;
use crate::{Shared, LABEL, OWNER_LABEL};

/// Paths hidden from the container: the core's `/proc` list (shared with the native backend)
/// and Docker's own `/sys` masks.
fn masked_paths() -> Vec<String> {
    PROC_MASKED_FILES
        .iter()
        .chain(PROC_MASKED_DIRS)
        .map(|p| format!("/proc/{p}"))
        .chain([
            "/sys/firmware".into(),
            "/sys/devices/virtual/powercap".into(),
        ])
        .collect()
}

/// Paths made read-only: the core's `/proc` list.
fn read_only_paths() -> Vec<String> {
    PROC_READ_ONLY
        .iter()
        .map(|p| format!("/proc/{p}"))
        .collect()
}

/// An empty file bound over /etc/resolv.conf: with network `none` Docker would otherwise show
/// the host's resolver configuration.
const EMPTY_RESOLV: &str = "/run/vana-sandbox/docker/resolv.conf";

fn empty_resolv() -> Result<&'static str, DockerError> {
    let path = std::path::Path::new(EMPTY_RESOLV);
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DockerError::Other(format!("create {}: {e}", dir.display())))?;
        }
        std::fs::write(path, b"")
            .map_err(|e| DockerError::Other(format!("create {EMPTY_RESOLV}: {e}")))?;
    }
    Ok(EMPTY_RESOLV)
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

/// Creates and starts a container for `key`; returns its id. The container idles (`sleep`
/// under Docker's init) until an execution arrives through `exec`.
pub(crate) async fn create_started(shared: &Shared, key: &PoolKey) -> Result<String, DockerError> {
    let labels = HashMap::from([
        (LABEL.to_string(), "1".to_string()),
        (OWNER_LABEL.to_string(), shared.owner.to_string()),
    ]);
    let uid = shared.config.uid;
    // Files arrive through `tar` inside the container, so HostConfig.tmpfs (which takes uid and
    // mode options, unlike typed tmpfs mounts) works here.
    let tmpfs_opts = format!(
        "rw,nosuid,nodev,size={},mode=1777,uid={uid},gid={uid}",
        key.disk.get()
    );
    let tmpfs_map = HashMap::from([
        ("/workspace".to_string(), tmpfs_opts.clone()),
        ("/tmp".to_string(), tmpfs_opts),
    ]);
    let mut mounts = vec![bind_ro(empty_resolv()?, "/etc/resolv.conf")];
    mounts.extend(key.mounts.iter().map(|m| bind_ro(&m.host, &m.sandbox)));
    let host = HostConfig {
        readonly_rootfs: Some(true),
        mounts: Some(mounts),
        tmpfs: Some(tmpfs_map),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        pids_limit: Some(key.container_pids(&shared.config) as i64),
        memory: Some(key.memory.get() as i64),
        memory_swap: Some(key.memory.get() as i64),
        nano_cpus: Some(key.nano_cpus),
        network_mode: Some("none".into()),
        init: Some(true),
        runtime: Some(key.runtime.as_str().to_string()),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        masked_paths: Some(masked_paths()),
        readonly_paths: Some(read_only_paths()),
        ipc_mode: Some("private".into()),
        shm_size: Some(key.disk.get().min(64 << 20) as i64),
        ..Default::default()
    };
    let user = format!("{0}:{0}", shared.config.uid);
    let config = Config {
        image: Some(key.image.clone()),
        cmd: Some(vec!["/bin/sleep".into(), "infinity".into()]),
        user: Some(user),
        working_dir: Some("/workspace".into()),
        hostname: Some("sandbox".into()),
        labels: Some(labels),
        network_disabled: Some(true),
        env: Some(vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()]),
        host_config: Some(host),
        ..Default::default()
    };
    let docker = &shared.docker;
    let created = docker
        .create_container(None::<CreateContainerOptions<String>>, config)
        .await
        .map_err(DockerError::api("create container"))?;
    if let Err(e) = docker
        .start_container(&created.id, None::<StartContainerOptions<String>>)
        .await
    {
        remove(shared, &created.id).await;
        return Err(DockerError::Api {
            op: "start container",
            source: e,
        });
    }
    if key.is_gvisor() {
        // gVisor may not apply the tmpfs mode and owner: open the mounts up as their owner
        // (root with no capabilities: chmod of one's own directory needs none).
        if let Err(e) = fix_tmpfs_modes(shared, &created.id).await {
            remove(shared, &created.id).await;
            return Err(e);
        }
    }
    Ok(created.id)
}

/// Removes a container (force, with its anonymous volumes); errors are logged, not returned.
pub(crate) async fn remove(shared: &Shared, id: &str) {
    let opts = bollard::container::RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    if let Err(e) = shared.docker.remove_container(id, Some(opts)).await {
        tracing::warn!(container = id, "removing container failed: {e}");
    }
}

async fn fix_tmpfs_modes(shared: &Shared, id: &str) -> Result<(), DockerError> {
    use bollard::exec::{CreateExecOptions, StartExecOptions};
    let exec = shared
        .docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(vec!["chmod", "1777", "/workspace", "/tmp"]),
                user: Some("0:0"),
                ..Default::default()
            },
        )
        .await
        .map_err(DockerError::api("create exec"))?;
    shared
        .docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(DockerError::api("start exec"))?;
    for _ in 0..200 {
        let i = shared
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(DockerError::api("inspect exec"))?;
        if i.running != Some(true) {
            // Best effort: where gVisor did apply the uid option, root is not the owner and the
            // chmod fails, which is fine (the mounts are the sandbox user's already); a mount
            // that stays unwritable shows up as a clear put_files error.
            if i.exit_code != Some(0) {
                tracing::debug!(
                    container = id,
                    "chmod of the tmpfs mounts: {:?}",
                    i.exit_code
                );
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Err(DockerError::Other(
        "chmod of the tmpfs mounts did not finish".into(),
    ))
}
