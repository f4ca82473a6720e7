//! Packages for vana-sandbox: the trusted host-side step that makes a request's `packages`
//! available to its sandbox as a read-only directory, running no package code and giving the
//! sandbox no network.
//!
//! [`DirPackageProvider`] implements the core's [`PackageProvider`]:
//!
//! * **Python**: `pip install --only-binary=:all: --no-compile --target …` for the sandbox's
//!   interpreter (version, ABI and platform from its probe, not the host's), wheels only — a
//!   package that would have to be built from source is refused, named (`pip.rs`).
//! * **JavaScript**: `npm install --ignore-scripts` with git disabled and no links (`npm.rs`).
//! * Both run with an environment and configuration of our making (nothing of the host's pip or
//!   npm configuration, proxies or tokens), in a fresh staging directory, with a timeout.
//! * **What is verified**: pip and npm check every downloaded file against the digest the index
//!   publishes (`sha256` in the simple index, `integrity` in the npm packument), over TLS
//!   checked against the host's CA store. `--require-hashes` would need digests pinned in
//!   advance, which a request naming `numpy` does not have; instead the digests the index
//!   gave are recorded with each set, every package must have come from the index (no direct
//!   URL, git or file dependency), and the installed tree is recorded file by file (mode, size,
//!   SHA-256) and checked before every later use.
//! * **The cache** (`store.rs`) is shared by every request: keyed by everything that can change
//!   what a request gets (ecosystem, index, interpreter, normalised requirements; sets by what
//!   was installed), written atomically (a staging directory renamed into place), checked on
//!   use (a tampered set is refused and removed), bounded in size (least recently used sets go
//!   first; sets in use stay). A second request for the same set uses the cache with no network
//!   and no installer run.
//! * **Sessions** (`session.rs`) get a set of their own that grows while they live.
//!
//! The policy's rules (allowed and denied names, size, count) are the engine's to check, not the
//! provider's: see `vana_sandbox_core::packages`.

mod lock;
mod npm;
mod pip;
mod session;
mod store;
mod tool;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vana_sandbox_core::{
    Ecosystem, InstalledPackage, InstallerStatus, PackageCacheStatus, PackageError,
    PackageProvider, PackageRequest, PackagesReport, PreparedPackages, SessionPackages,
};

use store::{Held, Manifest, Miss, Store};
use tool::Tool;

/// One package of a set with the digest the index published for its file (`sha256:…` for a
/// wheel, npm's `integrity` string for a tarball).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Artifact {
    pub name: String,
    pub version: String,
    pub digest: String,
}

/// How the provider works: where the cache is, how large it may grow, which installers it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The cache directory (created with mode 0700).
    pub dir: PathBuf,
    /// Bytes the cache is kept under (least recently used sets are removed first).
    pub max_bytes: u64,
    /// pip's command line (default: the host's `/usr/bin/python3 -m pip`). It installs for the
    /// sandbox's interpreter, whatever interpreter runs it.
    pub pip: Vec<String>,
    /// npm's command line (default: `/usr/bin/npm`).
    pub npm: Vec<String>,
    /// The CA bundle installers check the index's TLS certificate against (default: the host's
    /// store, `/etc/ssl/certs/ca-certificates.crt`, when it exists).
    pub ca_bundle: Option<PathBuf>,
    /// How long one install may take.
    pub timeout: Duration,
    /// How long a request's resolution is reused: after this, a request that names packages
    /// without exact versions is resolved again (an unchanged set is still shared).
    pub max_age: Duration,
}

impl ProviderConfig {
    /// The default cache directory (as root).
    pub const DEFAULT_DIR: &'static str = "/var/cache/vana-sandbox/packages";
    /// The default bound: 4 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

    /// The defaults with the cache in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let ca = [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
        Self {
            dir: dir.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            pip: vec!["/usr/bin/python3".into(), "-m".into(), "pip".into()],
            npm: vec!["/usr/bin/npm".into()],
            ca_bundle: ca,
            timeout: Duration::from_secs(600),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self::in_dir(Self::DEFAULT_DIR)
    }
}

/// Prepares packages into a cache directory on the host (see the crate's documentation).
pub struct DirPackageProvider {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProviderConfig,
    store: Store,
    pip: Tool,
    npm: Tool,
    versions: [OnceLock<Result<String, String>>; 2],
    installs: AtomicU64,
}

impl std::fmt::Debug for DirPackageProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirPackageProvider")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl DirPackageProvider {
    /// A provider with `config`; creates the cache directory and removes what dead owners left
    /// in it.
    pub fn new(config: ProviderConfig) -> Result<Self, PackageError> {
        let store = Store::open(&config.dir, config.max_bytes)?;
        Ok(Self {
            inner: Arc::new(Inner {
                pip: Tool {
                    name: "pip",
                    argv: config.pip.clone(),
                },
                npm: Tool {
                    name: "npm",
                    argv: config.npm.clone(),
                },
                store,
                config,
                versions: [OnceLock::new(), OnceLock::new()],
                installs: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ProviderConfig {
        &self.inner.config
    }

    /// How many times an installer ran (cache misses) since the provider was made.
    pub fn installs(&self) -> u64 {
        self.inner.installs.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn tool(&self, e: Ecosystem) -> &Tool {
        match e {
            Ecosystem::Pypi => &self.pip,
            Ecosystem::Npm => &self.npm,
        }
    }

    fn tool_version(&self, e: Ecosystem) -> Result<String, String> {
        let i = match e {
            Ecosystem::Pypi => 0,
            Ecosystem::Npm => 1,
        };
        self.versions[i]
            .get_or_init(|| {
                let scratch = self.store.scratch("staging").map_err(|e| e.to_string())?;
                let v = self.tool(e).version(&scratch);
                let _ = std::fs::remove_dir_all(&scratch);
                v
            })
            .clone()
    }

    fn report(held: &Held, cached: bool) -> PackagesReport {
        let m = &held.manifest;
        let mut installed: Vec<InstalledPackage> = m
            .packages
            .iter()
            .map(|a| InstalledPackage {
                name: a.name.clone(),
                version: a.version.clone(),
            })
            .collect();
        installed.sort();
        PackagesReport {
            ecosystem: m.ecosystem,
            index: m.index.clone(),
            installed,
            cached,
            size_bytes: m.bytes,
            prepare_time: 0.0,
        }
    }

    fn prepared(held: Held, cached: bool) -> PreparedPackages {
        let eco = held.manifest.ecosystem;
        PreparedPackages {
            host_dir: held.tree.clone(),
            sandbox_dir: eco.sandbox_dir(),
            env: vec![eco.env()],
            report: Self::report(&held, cached),
            hold: Some(Box::new(held.lock)),
        }
    }

    /// The blocking part of `prepare`.
    fn prepare(&self, req: &PackageRequest<'_>) -> Result<PreparedPackages, PackageError> {
        let key = store::request_key(req);
        let _installing = self.store.lock_request(&key)?;
        match self.store.lookup(&key, req, self.config.max_age) {
            Ok(held) => return Ok(Self::prepared(held, true)),
            Err(Miss::Refused(why)) => {
                tracing::warn!("installing again: the cached set was refused ({why})");
            }
            Err(Miss::Absent) => {}
        }
        let eco = req.list.ecosystem;
        let installer = self
            .tool_version(eco)
            .map_err(|detail| PackageError::Installer {
                tool: self.tool(eco).name.into(),
                detail,
            })?;
        let scratch = self.store.scratch("staging")?;
        let result = self.install(req, &key, &scratch, installer);
        let _ = std::fs::remove_dir_all(&scratch);
        result
    }

    fn install(
        &self,
        req: &PackageRequest<'_>,
        key: &str,
        scratch: &Path,
        installer: String,
    ) -> Result<PreparedPackages, PackageError> {
        let begun = Instant::now();
        self.installs.fetch_add(1, Ordering::Relaxed);
        let work = scratch.join("work");
        let entry = scratch.join("entry");
        store::make_dir(&work, 0o700)?;
        store::make_dir(&entry, 0o755)?;
        let tree_dir = entry.join("tree");
        let (tool, ca, timeout) = (
            self.tool(req.list.ecosystem),
            self.config.ca_bundle.as_deref(),
            self.config.timeout,
        );
        let mut packages = match req.list.ecosystem {
            Ecosystem::Pypi => pip::install(tool, req, ca, timeout, &work, &tree_dir)?,
            Ecosystem::Npm => npm::install(tool, req, ca, timeout, &work, &tree_dir)?,
        };
        packages.sort();
        if !tree_dir.is_dir() {
            store::make_dir(&tree_dir, 0o755)?;
        }
        let nodes = tree::record(&tree_dir).map_err(|e| match e {
            tree::TreeError::Refused(m) => {
                PackageError::Refused(format!("the installed packages cannot be used: {m}"))
            }
            e => PackageError::io("recording the installed packages", std::io::Error::other(e)),
        })?;
        let bytes = tree::total_bytes(&nodes);
        if bytes > self.config.max_bytes {
            return Err(PackageError::Refused(format!(
                "the packages take {bytes} bytes, more than the whole package cache may hold ({})",
                self.config.max_bytes
            )));
        }
        let manifest = Manifest {
            format: 1,
            ecosystem: req.list.ecosystem,
            index: req.index.to_string(),
            interpreter: req.target.interpreter.clone(),
            installer,
            requested: req
                .list
                .specs
                .iter()
                .map(|s| s.requirement.clone())
                .collect(),
            packages,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            bytes,
            tree: nodes,
        };
        let held = self.store.commit(key, &entry, manifest)?;
        tracing::info!(
            ecosystem = %req.list.ecosystem,
            packages = held.manifest.packages.len(),
            bytes,
            seconds = begun.elapsed().as_secs_f64(),
            "packages installed"
        );
        Ok(Self::prepared(held, false))
    }
}

#[async_trait]
impl PackageProvider for DirPackageProvider {
    async fn prepare(
        &self,
        request: &PackageRequest<'_>,
    ) -> Result<PreparedPackages, PackageError> {
        let inner = self.inner.clone();
        let (list, target, index, language) = (
            request.list.clone(),
            request.target.clone(),
            request.index.to_string(),
            request.language,
        );
        tokio::task::spawn_blocking(move || {
            inner.prepare(&PackageRequest {
                language,
                list: &list,
                target: &target,
                index: &index,
            })
        })
        .await
        .map_err(|e| PackageError::io("the install's thread", std::io::Error::other(e)))?
    }

    fn session(&self, _session_id: &str) -> Result<Box<dyn SessionPackages>, PackageError> {
        let root = self.inner.store.scratch("sessions")?;
        Ok(Box::new(session::DirSession::create(root)?))
    }

    fn status(&self) -> PackageCacheStatus {
        let (bytes, entries) = self.inner.store.usage();
        PackageCacheStatus {
            dir: self.inner.config.dir.clone(),
            bytes,
            max_bytes: self.inner.config.max_bytes,
            entries,
            installers: Ecosystem::ALL
                .iter()
                .map(|e| InstallerStatus::new(*e, self.inner.tool_version(*e)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
