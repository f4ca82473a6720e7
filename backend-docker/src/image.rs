//! Building the runtime image locally: no container registry is needed. `debootstrap` a minimal
//! Debian with the toolchains, add the sandbox user, make `/tmp` a link into `/workspace` (so a
//! run has one writable place and one disk budget), and import the tree into Docker with labels
//! that say which languages it has ([`crate::images`]). Nothing of ours is baked in: `vana-init`
//! is bound into every container from the library itself, so an image never goes stale against
//! the library.

use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::image::CreateImageOptions;

use futures_util::StreamExt;

use crate::error::DockerError;
use crate::images::{IMAGE_VERSION, LABEL_LANGUAGES, LABEL_TMP, LABEL_VERSION, TMP_IN_WORKSPACE};

/// The default runtime image (python3 with matplotlib, nodejs, bash). The tag is the image layout's version
/// ([`IMAGE_VERSION`]), so that library versions that need different layouts can share a host.
pub const DEFAULT_IMAGE: &str = "vana-sandbox/runtime:5";
/// The larger image that adds Go and the C toolchain Rust links with.
pub const FULL_IMAGE: &str = "vana-sandbox/runtime-full:5";

/// What Debian bookworm's `python3-matplotlib` drags in through hard dependencies
/// (`python3-fonttools` depends on SciPy and SymPy, SciPy on Pythran, Pythran on Boost's headers
/// and a C++ compiler; Python's headers; BLAS headers; Tk) that plotting with Agg does not use:
/// about 700 MiB of the image.
const PRUNE_PYTHON_DEV: &[&str] = &[
    "python3-pythran",
    "python3-beniget",
    "python3-gast",
    "libboost1.74-dev",
    "libboost-dev",
    "libxsimd-dev",
    "python3-scipy",
    "python3-sympy",
    "python3-mpmath",
    "python3-lxml",
    "libpython3.11-dev",
    "libpython3-dev",
    "libpython3-all-dev",
    "python3.11-dev",
    "python3-dev",
    "python3-all-dev",
    "python3-all",
    "libexpat1-dev",
    "zlib1g-dev",
    "libopenblas-dev",
    "libopenblas-pthread-dev",
    "liblapack-dev",
    "libblas-dev",
    "unicode-data",
    "python3-tk",
    "libtk8.6",
    "libtcl8.6",
    "tk8.6-blt2.5",
    "blt",
    "libjs-jquery-ui",
    "libjs-sphinxdoc",
    "g++",
    "g++-12",
    "libstdc++-12-dev",
];

/// The C toolchain the packages above drag in (kept in the full image, whose Go and Rust use it).
const PRUNE_TOOLCHAIN: &[&str] = &[
    "gcc",
    "gcc-12",
    "cpp",
    "cpp-12",
    "libgcc-12-dev",
    "libc6-dev",
    "libc-dev-bin",
    "linux-libc-dev",
    "libcrypt-dev",
    "libnsl-dev",
    "rpcsvc-proto",
    "libtirpc-dev",
    "binutils",
    "binutils-common",
    "binutils-x86-64-linux-gnu",
    "libbinutils",
    "libctf0",
    "libctf-nobfd0",
    "libgprofng0",
    "libasan8",
    "libtsan2",
    "liblsan0",
    "libubsan1",
    "libitm1",
    "libcc1-0",
    "libisl23",
    "libmpc3",
    "libmpfr6",
];

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
    /// Packages removed again after the install (with their files; what depends on them is
    /// left as is): what Debian's dependencies drag in that no program here uses. A package the
    /// build asks for is never removed.
    pub prune: Vec<String>,
    /// Languages the packages give toolchains for (canonical names), written as a label.
    pub languages: Vec<String>,
    /// uid/gid of the sandbox user.
    pub uid: u32,
}

impl ImageBuild {
    /// The default image: python3 (with matplotlib, for sessions' charts), nodejs, bash.
    pub fn runtime() -> Self {
        Self {
            tag: DEFAULT_IMAGE.into(),
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            packages: vec![
                "python3".into(),
                "python3-matplotlib".into(),
                "nodejs".into(),
                "ca-certificates".into(),
            ],
            prune: PRUNE_PYTHON_DEV
                .iter()
                .chain(PRUNE_TOOLCHAIN)
                .map(|s| s.to_string())
                .collect(),
            languages: ["python", "javascript", "bash"].map(String::from).to_vec(),
            uid: 10001,
        }
    }

    /// The full image: adds golang-go and gcc (Rust's linker; rustc itself is bound from the host).
    pub fn full() -> Self {
        let mut b = Self::runtime();
        b.tag = FULL_IMAGE.into();
        b.packages
            .extend(["golang-go", "gcc", "libc6-dev"].map(String::from));
        // The C toolchain stays: Go's cgo and Rust's linker use it.
        b.prune = PRUNE_PYTHON_DEV.iter().map(|s| s.to_string()).collect();
        b.languages.extend(["go", "rust"].map(String::from));
        b
    }

    /// Whether `docker` has this image, built with the current layout.
    pub async fn is_current(&self, docker: &Docker) -> bool {
        docker
            .inspect_image(&self.tag)
            .await
            .ok()
            .and_then(|i| i.config?.labels)
            .is_some_and(|l| l.get(LABEL_VERSION).map(String::as_str) == Some(IMAGE_VERSION))
    }

    /// Builds the root filesystem and imports it. Needs root, `debootstrap` and `tar`.
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
        self.prune_in(&rootfs)?;
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
        // Nothing in /usr/local (debootstrap leaves empty directories there): a program sees
        // no place an administrator installs things into.
        let local = rootfs.join("usr/local");
        std::fs::remove_dir_all(&local)
            .and_then(|()| std::fs::create_dir(&local))
            .map_err(|e| DockerError::Image(format!("empty /usr/local: {e}")))?;
        // One writable place: /tmp lives inside the workspace's tmpfs (the container's init
        // creates the directory), so the disk limit covers both.
        let tmp = rootfs.join("tmp");
        std::fs::remove_dir_all(&tmp)
            .and_then(|()| std::os::unix::fs::symlink(TMP_IN_WORKSPACE, &tmp))
            .map_err(|e| DockerError::Image(format!("link /tmp into the workspace: {e}")))?;
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
        let labels = [
            format!("LABEL {LABEL_LANGUAGES}={}", self.languages.join(",")),
            format!("LABEL {LABEL_TMP}=workspace"),
            format!("LABEL {LABEL_VERSION}={IMAGE_VERSION}"),
        ];
        let opts = CreateImageOptions {
            from_src: "-",
            repo,
            tag,
            changes: labels.iter().map(String::as_str).collect(),
            ..Default::default()
        };
        let mut stream = docker.create_image(Some(opts), Some(bytes.into()), None);
        while let Some(item) = stream.next().await {
            item.map_err(DockerError::api("import image"))?;
        }
        Ok(self.tag.clone())
    }

    /// Removes the [`prune`](Self::prune) packages that are installed and were not asked for.
    fn prune_in(&self, rootfs: &Path) -> Result<(), DockerError> {
        let listed = Command::new("chroot")
            .arg(rootfs)
            .args(["dpkg-query", "-W", "-f", "${Package}\\n"])
            .output()
            .map_err(|e| DockerError::Image(format!("dpkg-query in the new root: {e}")))?;
        let installed: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let gone: Vec<&String> = self
            .prune
            .iter()
            .filter(|p| installed.contains(p) && !self.packages.contains(p))
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        run(Command::new("chroot")
            .arg(rootfs)
            .args(["dpkg", "--purge", "--force-depends"])
            .args(gone))
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
