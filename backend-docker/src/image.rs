//! Building the runtime image locally: no container registry is needed. `debootstrap` a minimal
//! Debian with the toolchains, add `vana-exec` (compiled statically with the host's gcc) and the
//! sandbox user, and import the tree into Docker.

use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::image::CreateImageOptions;

use futures_util::StreamExt;

use crate::error::DockerError;

/// The default runtime image (python3, nodejs, bash).
pub const DEFAULT_IMAGE: &str = "vana-sandbox/runtime:latest";
/// The larger image that adds Go and the C toolchain Rust links with.
pub const FULL_IMAGE: &str = "vana-sandbox/runtime-full:latest";

const VANA_EXEC_SOURCE: &str = include_str!("vana-exec.c");

/// How to build an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuild {
    /// `repo:tag` to import as.
    pub tag: String,
    /// Debian suite.
    pub suite: String,
    /// Debian mirror.
    pub mirror: String,
    /// Debian packages to install besides the minimal base.
    pub packages: Vec<String>,
    /// uid/gid of the sandbox user.
    pub uid: u32,
}

impl ImageBuild {
    /// The default image: python3, nodejs, bash.
    pub fn runtime() -> Self {
        Self {
            tag: DEFAULT_IMAGE.into(),
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            packages: vec!["python3".into(), "nodejs".into()],
            uid: 10001,
        }
    }

    /// The full image: adds golang-go and gcc (Rust's linker; rustc itself is bound from the host).
    pub fn full() -> Self {
        let mut b = Self::runtime();
        b.tag = FULL_IMAGE.into();
        b.packages
            .extend(["golang-go", "gcc", "libc6-dev"].map(String::from));
        b
    }

    /// Builds the root filesystem and imports it. Needs root, `debootstrap`, `gcc` and `tar`.
    pub async fn build(&self, docker: &Docker) -> Result<String, DockerError> {
        let work = tempdir()?;
        let result = self.build_in(&work, docker).await;
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    async fn build_in(&self, work: &Path, docker: &Docker) -> Result<String, DockerError> {
        let rootfs = work.join("rootfs");
        let include = format!("--include={}", self.packages.join(","));
        run(Command::new("debootstrap")
            .args(["--variant=minbase", &include, &self.suite])
            .arg(&rootfs)
            .arg(&self.mirror))?;
        let src = work.join("vana-exec.c");
        std::fs::write(&src, VANA_EXEC_SOURCE)
            .map_err(|e| DockerError::Image(format!("write {}: {e}", src.display())))?;
        run(Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(rootfs.join("usr/local/bin/vana-exec"))
            .arg(&src))?;
        let uid = self.uid;
        append(
            &rootfs.join("etc/passwd"),
            &format!("sandbox:x:{uid}:{uid}:sandbox:/workspace:/bin/sh\n"),
        )?;
        append(&rootfs.join("etc/group"), &format!("sandbox:x:{uid}:\n"))?;
        for dir in ["workspace", "opt/vana"] {
            std::fs::create_dir_all(rootfs.join(dir))
                .map_err(|e| DockerError::Image(format!("mkdir {dir}: {e}")))?;
        }
        for junk in ["var/cache/apt/archives", "var/lib/apt/lists"] {
            let _ = std::fs::remove_dir_all(rootfs.join(junk));
            let _ = std::fs::create_dir_all(rootfs.join(junk));
        }
        let tar = work.join("rootfs.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."))?;
        let bytes = std::fs::read(&tar)
            .map_err(|e| DockerError::Image(format!("read {}: {e}", tar.display())))?;
        let (repo, tag) = self
            .tag
            .rsplit_once(':')
            .unwrap_or((self.tag.as_str(), "latest"));
        let opts = CreateImageOptions {
            from_src: "-",
            repo,
            tag,
            ..Default::default()
        };
        let mut stream = docker.create_image(Some(opts), Some(bytes.into()), None);
        while let Some(item) = stream.next().await {
            item.map_err(DockerError::api("import image"))?;
        }
        Ok(self.tag.clone())
    }
}

fn tempdir() -> Result<PathBuf, DockerError> {
    let dir = std::env::temp_dir().join(format!("vana-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| DockerError::Image(format!("mkdir {}: {e}", dir.display())))?;
    Ok(dir)
}

fn run(cmd: &mut Command) -> Result<(), DockerError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| DockerError::Image(format!("{shown}: {e}")))?;
    if !out.status.success() {
        let tail: String = String::from_utf8_lossy(&out.stderr)
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(DockerError::Image(format!(
            "{shown} failed ({}): {tail}",
            out.status
        )));
    }
    Ok(())
}

fn append(path: &Path, line: &str) -> Result<(), DockerError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| DockerError::Image(format!("append to {}: {e}", path.display())))
}

pub use bollard::Docker;

/// Connects to the local Docker engine, negotiating the API version.
pub async fn connect() -> Result<Docker, String> {
    Docker::connect_with_socket_defaults()
        .map_err(|e| format!("cannot reach the Docker engine: {e}"))?
        .negotiate_version()
        .await
        .map_err(|e| format!("cannot reach the Docker engine: {e}"))
}
