//! Packages: third-party libraries a request asks for (`"packages": ["requests", "numpy"]`),
//! prepared on the host by a trusted step that runs no package code, and mounted read-only into
//! the sandbox. The sandbox never needs the network for them.
//!
//! The roles: a [`Language`](crate::Language) says which [`Ecosystem`] its packages come from and
//! how to ask its interpreter what it is ([`PackageSupport`]); an
//! [`Executor`](crate::Executor) answers which interpreter its sandboxes run
//! ([`package_target`](crate::Executor::package_target), a [`PackageTarget`]); the policy turns
//! its `[packages]` section into [`PackageRules`] inside the [`SandboxSpec`](crate::SandboxSpec);
//! a [`PackageProvider`] (the `vana-sandbox-packages` crate) prepares the directory; the engine
//! checks the rules — the only place they are checked — and mounts the result.

use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::BackendError;
use crate::language::Language;
use crate::limits::Bytes;
use crate::policy::Rejection;
use crate::spec::{Mount, MountKind};

/// Most packages one request may name.
pub const MAX_PACKAGES: usize = 64;
/// Longest package spec, in bytes.
pub const MAX_SPEC_BYTES: usize = 256;

/// Where packages come from. **Contract**: policy files name them (`[packages.pypi]`,
/// `[packages.npm]`) and results report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ecosystem {
    /// Python wheels from a PyPI-compatible index.
    Pypi,
    /// JavaScript packages from an npm registry.
    Npm,
}

impl Ecosystem {
    /// Every ecosystem.
    pub const ALL: [Ecosystem; 2] = [Ecosystem::Pypi, Ecosystem::Npm];

    /// The wire name (`pypi`, `npm`).
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Pypi => "pypi",
            Ecosystem::Npm => "npm",
        }
    }

    /// Where a prepared set appears in every sandbox (one-shot runs and sessions alike).
    /// JavaScript packages sit at `/node_modules`, which Node's resolution reaches from any
    /// directory by walking up, so `import` (ESM, which ignores `NODE_PATH`) finds them too.
    pub fn sandbox_dir(self) -> &'static str {
        match self {
            Ecosystem::Pypi => "/opt/vana-packages/python",
            Ecosystem::Npm => "/node_modules",
        }
    }

    /// The variable that points the interpreter at [`sandbox_dir`](Self::sandbox_dir).
    pub fn env(self) -> (String, String) {
        let var = match self {
            Ecosystem::Pypi => "PYTHONPATH",
            Ecosystem::Npm => "NODE_PATH",
        };
        (var.to_string(), self.sandbox_dir().to_string())
    }

    /// A package name as the ecosystem compares names: PyPI lower-cases and folds runs of
    /// `-`, `_` and `.` into `-` (PEP 503); npm names compare without case (the registry refuses
    /// names that differ only in case).
    pub fn normalize_name(self, name: &str) -> String {
        match self {
            Ecosystem::Pypi => {
                let mut out = String::with_capacity(name.len());
                let mut sep = false;
                for c in name.trim().chars() {
                    if matches!(c, '-' | '_' | '.') {
                        sep = true;
                        continue;
                    }
                    if sep && !out.is_empty() {
                        out.push('-');
                    }
                    sep = false;
                    out.push(c.to_ascii_lowercase());
                }
                out
            }
            Ecosystem::Npm => name.trim().to_ascii_lowercase(),
        }
    }

    /// Checks a bare package name (no version), as policy lists hold them.
    pub fn check_name(self, name: &str) -> Result<(), String> {
        match self {
            Ecosystem::Pypi => check_pypi_name(name),
            Ecosystem::Npm => check_npm_name(name),
        }
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One package a request asks for, parsed and checked: only a name with optional extras and an
/// optional version constraint — never a path, a URL, a VCS reference or an alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageSpec {
    /// The name as the ecosystem compares names ([`Ecosystem::normalize_name`]).
    pub name: String,
    /// What the installer is given, in a canonical form (normalised name, sorted extras,
    /// sorted constraint clauses, no spaces): `numpy>=1.26,<3`, `requests[socks]`,
    /// `@types/node@20`.
    pub requirement: String,
}

const PATH_OR_URL: &str = "is a path or URL; only package names with an optional version \
     (`numpy`, `requests==2.32.3`, `is-number@^7`) are accepted";

const OPTION: &str = "is or carries an installer option (`-e`, `--index-url`, `--registry`); \
     only package names with an optional version are accepted, and the index is the policy's";

/// An installer option: the text starts with `-`, or a later word does (`requests
/// --extra-index-url …`). A lone `-` is an npm hyphen range (`1.0.0 - 2.0.0`).
fn looks_like_option(text: &str) -> bool {
    text.starts_with('-')
        || text
            .split_whitespace()
            .any(|word| word.len() > 1 && word.starts_with('-'))
}

fn looks_like_path_or_url(text: &str) -> bool {
    text.contains("://")
        || text.starts_with(['.', '/', '~', '\\'])
        || text.contains('\\')
        || text.starts_with("file:")
        || text.starts_with("git+")
        || text.starts_with("git:")
        || text.starts_with("http:")
        || text.starts_with("https:")
        || text.starts_with("npm:")
        || text.starts_with("github:")
}

impl PackageSpec {
    /// Parses `text` as a package of `ecosystem`, with a message naming the problem.
    pub fn parse(ecosystem: Ecosystem, text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("is empty".into());
        }
        if text.len() > MAX_SPEC_BYTES {
            return Err(format!("is longer than {MAX_SPEC_BYTES} bytes"));
        }
        if text.chars().any(|c| c.is_control()) {
            return Err("contains a control character".into());
        }
        if looks_like_option(text) {
            return Err(OPTION.into());
        }
        if looks_like_path_or_url(text) {
            return Err(PATH_OR_URL.into());
        }
        match ecosystem {
            Ecosystem::Pypi => parse_pypi(text),
            Ecosystem::Npm => parse_npm(text),
        }
    }
}

fn check_pypi_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid PyPI project name (letters, digits, `-`, `_`, `.`; starting and ending with a letter or digit)",
            name.escape_debug()
        ))
    }
}

/// `name[extras] op version, op version` (a subset of PEP 508: no URLs, no markers).
fn parse_pypi(text: &str) -> Result<PackageSpec, String> {
    if text.contains('@') {
        return Err(format!("`@` (a direct reference) {PATH_OR_URL}"));
    }
    if text.contains(';') {
        return Err("environment markers (`;`) are not accepted".into());
    }
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(text.len());
    let (name, mut rest) = text.split_at(name_end);
    check_pypi_name(name)?;
    let name = Ecosystem::Pypi.normalize_name(name);
    let mut extras = Vec::new();
    if let Some(after) = rest.strip_prefix('[') {
        let Some((inside, tail)) = after.split_once(']') else {
            return Err("has an unclosed `[`".into());
        };
        for extra in inside.split(',') {
            check_pypi_name(extra).map_err(|e| format!("extra {e}"))?;
            extras.push(Ecosystem::Pypi.normalize_name(extra));
        }
        extras.sort();
        extras.dedup();
        rest = tail;
    }
    let mut clauses = Vec::new();
    if !rest.is_empty() {
        for clause in rest.split(',') {
            let op = ["===", "==", "!=", "<=", ">=", "~=", "<", ">"]
                .into_iter()
                .find(|op| clause.starts_with(op))
                .ok_or_else(|| {
                    format!(
                        "has `{}` where a version constraint (`==1.2`, `>=1,<2`) was expected",
                        clause.escape_debug()
                    )
                })?;
            if op == "===" {
                return Err("arbitrary equality (`===`) is not accepted".into());
            }
            let version = &clause[op.len()..];
            let ok = !version.is_empty()
                && version.len() <= 64
                && version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".*+!-_".contains(c));
            if !ok {
                return Err(format!(
                    "version `{}` is not a version",
                    version.escape_debug()
                ));
            }
            clauses.push(format!("{op}{}", version.to_ascii_lowercase()));
        }
        clauses.sort();
        clauses.dedup();
    }
    let mut requirement = name.clone();
    if !extras.is_empty() {
        requirement.push('[');
        requirement.push_str(&extras.join(","));
        requirement.push(']');
    }
    requirement.push_str(&clauses.join(","));
    Ok(PackageSpec { name, requirement })
}

fn check_npm_name(name: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 214
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
            && !p.starts_with(['.', '_'])
    };
    let ok = name.len() <= 214
        && match name.strip_prefix('@') {
            Some(scoped) => scoped
                .split_once('/')
                .is_some_and(|(scope, pkg)| part_ok(scope) && part_ok(pkg)),
            None => part_ok(name),
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid npm package name (`name` or `@scope/name`: letters, digits, `-`, `.`, `_`, `~`)",
            name.escape_debug()
        ))
    }
}

/// `name`, `@scope/name`, optionally `@range` (a semver range or a dist-tag).
fn parse_npm(text: &str) -> Result<PackageSpec, String> {
    let at = if let Some(scoped) = text.strip_prefix('@') {
        scoped.find('@').map(|i| i + 1)
    } else {
        text.find('@')
    };
    let (name, range) = match at {
        Some(i) => (&text[..i], Some(text[i + 1..].trim())),
        None => (text, None),
    };
    if name.contains(':') {
        return Err(PATH_OR_URL.into());
    }
    if !name.starts_with('@') && name.contains('/') {
        // `user/repo` is a GitHub shorthand to npm.
        return Err(PATH_OR_URL.into());
    }
    check_npm_name(name)?;
    let mut requirement = name.to_string();
    if let Some(range) = range {
        let ok = !range.is_empty()
            && range.len() <= 128
            && range
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".^~<>=*|+- ".contains(c));
        if !ok {
            return Err(format!(
                "version `{}` is not a semver range or tag (URLs, paths, `npm:` aliases and git references are not accepted)",
                range.escape_debug()
            ));
        }
        let range: Vec<&str> = range.split_whitespace().collect();
        requirement.push('@');
        requirement.push_str(&range.join(" "));
    }
    Ok(PackageSpec {
        name: Ecosystem::Npm.normalize_name(name),
        requirement,
    })
}

/// The packages a request asks for, parsed for its language's ecosystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageList {
    /// Where they come from.
    pub ecosystem: Ecosystem,
    /// The packages, in request order, no name twice.
    pub specs: Vec<PackageSpec>,
}

impl PackageList {
    /// Parses a request's `packages` for `ecosystem`: at most [`MAX_PACKAGES`], each a valid
    /// spec, no name twice.
    pub fn parse(ecosystem: Ecosystem, texts: &[String]) -> Result<Self, Rejection> {
        if texts.len() > MAX_PACKAGES {
            return Err(Rejection::new(format!(
                "too many packages ({}; the maximum is {MAX_PACKAGES})",
                texts.len()
            )));
        }
        let mut specs: Vec<PackageSpec> = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let spec = PackageSpec::parse(ecosystem, text).map_err(|why| {
                Rejection::new(format!("packages[{i}] `{}` {why}", text.escape_debug()))
            })?;
            if specs.iter().any(|s| s.name == spec.name) {
                return Err(Rejection::new(format!(
                    "packages[{i}]: `{}` is named twice",
                    spec.name
                )));
            }
            specs.push(spec);
        }
        Ok(Self { ecosystem, specs })
    }
}

/// What the policy allows for one ecosystem, as evaluated into the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRules {
    /// The one index packages come from (an `https://` URL; `http://` only on loopback).
    pub index: String,
    /// Names a request may ask for (normalised); empty means any.
    pub allow: Vec<String>,
    /// Names that may not be installed at all, asked for or pulled in as a dependency
    /// (normalised).
    pub deny: Vec<String>,
    /// Most bytes a prepared set may hold.
    pub max_bytes: Bytes,
    /// Most packages a prepared set may hold, dependencies included.
    pub max_count: u64,
}

/// The packages of one request as the policy decided them: what to prepare and the rules the
/// result must meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagePlan {
    /// The packages asked for.
    pub list: PackageList,
    /// The policy's rules for their ecosystem.
    pub rules: PackageRules,
}

impl PackagePlan {
    /// Checks what the request asks for: each name allowed and not denied. Done before anything
    /// is fetched.
    pub fn check_requested(&self, policy: &str) -> Result<(), Rejection> {
        let rules = &self.rules;
        for spec in &self.list.specs {
            if rules.deny.contains(&spec.name) {
                return Err(Rejection::new(format!(
                    "package `{}` is denied by policy `{policy}`",
                    spec.name
                )));
            }
            if !rules.allow.is_empty() && !rules.allow.contains(&spec.name) {
                return Err(Rejection::new(format!(
                    "package `{}` is not in the allow list of policy `{policy}` (allowed: {})",
                    spec.name,
                    rules.allow.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Checks what was prepared: no denied name among the dependencies, the count and the
    /// size within the policy's bounds. Done on every use, cached or not (a policy may have
    /// changed since the set was cached).
    pub fn check_prepared(&self, report: &PackagesReport, policy: &str) -> Result<(), Rejection> {
        let rules = &self.rules;
        let eco = self.list.ecosystem;
        if let Some(p) = report
            .installed
            .iter()
            .find(|p| rules.deny.contains(&eco.normalize_name(&p.name)))
        {
            return Err(Rejection::new(format!(
                "package `{}` (a dependency of the requested packages) is denied by policy `{policy}`",
                p.name
            )));
        }
        let count = report.installed.len() as u64;
        if count > rules.max_count {
            return Err(Rejection::new(format!(
                "the requested packages need {count} packages with their dependencies; policy `{policy}` allows at most {}",
                rules.max_count
            )));
        }
        if report.size_bytes > rules.max_bytes.get() {
            return Err(Rejection::new(format!(
                "the requested packages take {} on disk; policy `{policy}` allows at most {}",
                Bytes(report.size_bytes),
                rules.max_bytes
            )));
        }
        Ok(())
    }
}

/// How a language gets packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageSupport {
    /// Where they come from.
    pub ecosystem: Ecosystem,
    /// Arguments that make the language's interpreter print its [`Interpreter`] as JSON on
    /// stdout (run with an empty environment).
    pub probe: &'static [&'static str],
}

/// An interpreter as far as it decides which built files fit it: what its probe prints (JSON
/// on stdout), what cache keys cover, what a cached set records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interpreter {
    /// Implementation (`cp` for CPython, `node`).
    pub implementation: String,
    /// Full version (`3.11.2`, `20.20.2`).
    pub version: String,
    /// Binary interface (`cp311`; Node's module ABI `115`).
    pub abi: String,
    /// Platform tags, most specific first (`manylinux_2_36_x86_64`, …; `linux-x64`).
    pub platforms: Vec<String>,
}

/// The interpreter packages are prepared for, and which environment answered for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PackageTarget {
    /// Where packages come from.
    pub ecosystem: Ecosystem,
    /// The interpreter (what decides which files fit).
    pub interpreter: Interpreter,
    /// The environment that answered ([`Executor::environment_id`](crate::Executor::environment_id));
    /// recorded, never part of a cache key (the same interpreter fits the same files).
    pub environment: String,
}

fn safe_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl PackageTarget {
    /// Parses a probe's output. Every value is passed to an installer as an argument, so each
    /// must be a short token of letters, digits, `.`, `_` and `-`.
    pub fn from_probe(
        ecosystem: Ecosystem,
        environment: &str,
        stdout: &[u8],
    ) -> Result<Self, String> {
        let p: Interpreter = serde_json::from_slice(stdout)
            .map_err(|e| format!("the interpreter's probe printed no valid answer: {e}"))?;
        let tokens = [&p.implementation, &p.version, &p.abi]
            .into_iter()
            .chain(&p.platforms);
        if let Some(bad) = tokens.into_iter().find(|t| !safe_token(t)) {
            return Err(format!(
                "the interpreter's probe answered an unusable value `{}`",
                bad.escape_debug()
            ));
        }
        if p.platforms.is_empty() || p.platforms.len() > 64 {
            return Err("the interpreter's probe named no (or too many) platforms".into());
        }
        Ok(Self {
            ecosystem,
            interpreter: p,
            environment: environment.to_string(),
        })
    }
}

/// How long a probe of an interpreter may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Probes the host's toolchain of `language` (for backends whose sandboxes run the host's
/// toolchains): its probe arguments, an empty environment, a timeout, 64 KiB of output at most.
pub async fn probe_host(
    language: &dyn Language,
    environment: &str,
) -> Result<PackageTarget, BackendError> {
    let name = language.name();
    let support = language
        .packages()
        .ok_or_else(|| BackendError::Unavailable(format!("the {name} language has no packages")))?;
    let program = language
        .toolchain()
        .require()
        .map_err(|e| BackendError::Unavailable(e.to_string()))?
        .to_path_buf();
    let environment = environment.to_string();
    let run = tokio::task::spawn_blocking(move || {
        let out = crate::host::run_bounded(
            std::process::Command::new(&program)
                .args(support.probe)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("LANG", "C.UTF-8"),
            PROBE_TIMEOUT,
            64 * 1024,
        )
        .map_err(|e| BackendError::setup(format!("probing {}", program.display()), e))?;
        if !out.status.success() {
            return Err(BackendError::Unavailable(format!(
                "probing {} failed ({}): {}",
                program.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        PackageTarget::from_probe(support.ecosystem, &environment, &out.stdout)
            .map_err(BackendError::Unavailable)
    });
    run.await
        .map_err(|e| BackendError::backend("the probe's thread", e))?
}

/// Probes `language`'s interpreter inside a sandbox of `executor` (for backends whose sandboxes
/// have an environment of their own, such as a container image): one instance with the
/// language's mounts and no network, the probe run under the default limits and
/// [`PROBE_TIMEOUT`], the instance destroyed. What the probe prints is held to the same rules as
/// [`probe_host`]'s.
pub async fn probe_in_instance(
    executor: &dyn crate::Executor,
    language: &dyn Language,
) -> Result<PackageTarget, BackendError> {
    use crate::spec::{InstanceSpec, NetworkMode, ProcessIo, ProcessSpec};
    let name = language.name();
    let support = language
        .packages()
        .ok_or_else(|| BackendError::Unavailable(format!("the {name} language has no packages")))?;
    let limits = crate::Limits {
        timeout: PROBE_TIMEOUT,
        ..crate::Limits::default()
    };
    let spec = InstanceSpec {
        id: format!("probe-{}", crate::engine::new_id()),
        language: name.to_string(),
        limits,
        runtime: None,
        mounts: language.mounts(),
        network: NetworkMode::None,
    };
    let mut instance = executor.create(&spec).await?;
    let mut argv = vec![language.toolchain().command_path()];
    argv.extend(support.probe.iter().map(|a| a.to_string()));
    let process = ProcessSpec {
        argv,
        arg0: None,
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ],
        cwd: crate::engine::pipeline::WORKDIR.into(),
        limits,
    };
    let outcome = instance.run(&process, ProcessIo::default()).await;
    let _ = instance.destroy().await;
    let outcome = outcome?;
    if outcome.status() != crate::Status::Success {
        return Err(BackendError::Unavailable(format!(
            "probing the {name} interpreter in a sandbox failed ({:?}): {}",
            outcome.status(),
            String::from_utf8_lossy(&outcome.stderr).trim()
        )));
    }
    let environment = executor.environment_id(name);
    PackageTarget::from_probe(support.ecosystem, &environment, &outcome.stdout)
        .map_err(BackendError::Unavailable)
}

/// One package of a prepared set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstalledPackage {
    /// Its name as the index spells it.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// What a request's packages came to: reported in the result (`packages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackagesReport {
    /// Where they came from.
    pub ecosystem: Ecosystem,
    /// The index they came from.
    pub index: String,
    /// Every package of the set (dependencies included), sorted by name.
    pub installed: Vec<InstalledPackage>,
    /// Whether the set came from the cache (nothing was fetched).
    pub cached: bool,
    /// Bytes of the set on disk.
    pub size_bytes: u64,
    /// Seconds spent preparing the set (installing, or checking the cached copy).
    pub prepare_time: f64,
}

/// Why packages could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The packages cannot be provided as asked (no wheel for this interpreter, unknown name,
    /// conflicting versions): the request's doing. The message says which package and why.
    #[error("{0}")]
    Refused(String),
    /// The installer failed for a reason of the host's (index unreachable, timeout, tool
    /// missing).
    #[error("{tool}: {detail}")]
    Installer {
        /// The installer (`pip`, `npm`).
        tool: String,
        /// What happened.
        detail: String,
    },
    /// File work on the host failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl PackageError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// What a provider is asked to prepare.
#[derive(Debug, Clone, Copy)]
pub struct PackageRequest<'a> {
    /// Canonical language name (for messages).
    pub language: &'static str,
    /// The packages.
    pub list: &'a PackageList,
    /// The interpreter they must fit.
    pub target: &'a PackageTarget,
    /// The index to fetch from.
    pub index: &'a str,
}

/// A prepared, read-only host directory of packages, and how the sandbox sees it.
pub struct PreparedPackages {
    /// The directory on the host (complete, verified, never written while this value lives).
    pub host_dir: PathBuf,
    /// Where it appears in the sandbox ([`Ecosystem::sandbox_dir`]).
    pub sandbox_dir: &'static str,
    /// Variables the program needs to find them ([`Ecosystem::env`]).
    pub env: Vec<(String, String)>,
    /// What the set holds.
    pub report: PackagesReport,
    /// Whatever keeps the directory as it is (from eviction) while the value lives.
    pub hold: Option<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for PreparedPackages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedPackages")
            .field("host_dir", &self.host_dir)
            .field("sandbox_dir", &self.sandbox_dir)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl PreparedPackages {
    /// The read-only mount that presents it.
    pub fn mount(&self) -> Mount {
        Mount {
            host: self.host_dir.display().to_string(),
            sandbox: self.sandbox_dir.to_string(),
            kind: MountKind::Prepared,
        }
    }
}

/// What a provider's cache holds, for `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageCacheStatus {
    /// The cache directory.
    pub dir: PathBuf,
    /// Bytes it holds.
    pub bytes: u64,
    /// The bound it is kept under.
    pub max_bytes: u64,
    /// Prepared sets it holds.
    pub entries: usize,
    /// Each ecosystem's installer.
    pub installers: Vec<InstallerStatus>,
}

/// One ecosystem's installer as the provider found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallerStatus {
    /// The ecosystem it installs for.
    pub ecosystem: Ecosystem,
    /// Its version (`pip 23.0.1`), when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl InstallerStatus {
    /// The status of `ecosystem`'s installer from a version probe's answer.
    pub fn new(ecosystem: Ecosystem, probe: Result<String, String>) -> Self {
        let (version, error) = match probe {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            ecosystem,
            version,
            error,
        }
    }
}

/// Prepares packages on the host: the trusted step that fetches them (running no package
/// code), keeps them in a cache shared between requests, and hands out read-only directories.
#[async_trait]
pub trait PackageProvider: Send + Sync {
    /// Prepares `request`'s packages: from the cache (checked against its manifest, no network)
    /// or from the index. The directory stays as it is while the returned value lives.
    async fn prepare(&self, request: &PackageRequest<'_>)
        -> Result<PreparedPackages, PackageError>;

    /// A session's own package set: host directories the session's instance mounts (live)
    /// when it is created, which [`SessionPackages::add`] fills later.
    fn session(&self, session_id: &str) -> Result<Box<dyn SessionPackages>, PackageError>;

    /// What the cache holds.
    fn status(&self) -> PackageCacheStatus;
}

/// A session's read-only package set: one host directory per ecosystem, mounted when the
/// session's instance is created and added to while it lives (removed when dropped).
pub trait SessionPackages: Send + Sync {
    /// The mounts ([`MountKind::Live`]) at each ecosystem's [`Ecosystem::sandbox_dir`].
    fn mounts(&self) -> Vec<Mount>;

    /// Adds what `prepared` has that the session has not (blocking file work). A package the
    /// session already has at another version is refused, and then nothing is added.
    fn add(&self, prepared: &PreparedPackages) -> Result<(), PackageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(s: &str) -> Result<String, String> {
        PackageSpec::parse(Ecosystem::Pypi, s).map(|p| p.requirement)
    }

    fn npm(s: &str) -> Result<String, String> {
        PackageSpec::parse(Ecosystem::Npm, s).map(|p| p.requirement)
    }

    #[test]
    fn pypi_specs_are_names_with_versions_only() {
        assert_eq!(py("numpy"), Ok("numpy".into()));
        assert_eq!(py("Requests == 2.32.3"), Ok("requests==2.32.3".into()));
        assert_eq!(py("Foo_Bar.baz"), Ok("foo-bar-baz".into()));
        assert_eq!(py("numpy<3,>=1.26"), Ok("numpy<3,>=1.26".into()));
        assert_eq!(py("numpy>=1.26,<3"), Ok("numpy<3,>=1.26".into()));
        assert_eq!(
            py("requests[socks,Security]>=2"),
            Ok("requests[security,socks]>=2".into())
        );
        for bad in [
            "",
            "../../etc",
            "/tmp/evil.whl",
            "./pkg",
            "https://evil.example/x.whl",
            "git+https://github.com/x/y",
            "pkg @ https://evil.example/x.whl",
            "file:///etc/passwd",
            "pkg; python_version<'4'",
            "pkg==1.0 --index-url=http://evil",
            "-e .",
            "--extra-index-url",
            "pkg===1",
            "pkg[",
            "pkg~",
            "x\ny",
        ] {
            assert!(py(bad).is_err(), "{bad:?} accepted: {:?}", py(bad));
        }
        let e = py("https://evil.example/x.whl").err().unwrap_or_default();
        assert!(e.contains("path or URL"), "{e}");
        for option in [
            "-e .",
            "--index-url=https://x/simple",
            "numpy --pre",
            "-r reqs.txt",
        ] {
            let e = py(option).err().unwrap_or_default();
            assert!(e.contains("installer option"), "{option}: {e}");
        }
    }

    #[test]
    fn npm_specs_are_names_with_ranges_only() {
        assert_eq!(npm("is-number"), Ok("is-number".into()));
        assert_eq!(npm("is-number@^7.0.0"), Ok("is-number@^7.0.0".into()));
        assert_eq!(npm("@types/node@20"), Ok("@types/node@20".into()));
        assert_eq!(npm("lodash@>=4  <5"), Ok("lodash@>=4 <5".into()));
        assert_eq!(npm("left-pad@latest"), Ok("left-pad@latest".into()));
        for bad in [
            "user/repo",
            "github:user/repo",
            "git+ssh://git@github.com/x/y.git",
            "file:../x",
            "../x",
            "/abs/path",
            "x@npm:evil",
            "x@file:../y",
            "x@https://evil.example/x.tgz",
            "x@git+https://e/x",
            ".hidden",
            "_under",
            "@scope",
            "@scope/",
            "a b",
            "--registry=https://evil.example",
            "x@1 --registry=https://evil.example",
        ] {
            assert!(npm(bad).is_err(), "{bad:?} accepted: {:?}", npm(bad));
        }
        // A hyphen range is a range, not an option.
        assert_eq!(npm("x@1.0.0 - 2.0.0"), Ok("x@1.0.0 - 2.0.0".into()));
    }

    #[test]
    fn lists_refuse_duplicates_and_floods() {
        let l = PackageList::parse(Ecosystem::Pypi, &["NumPy".into(), "numpy==2".into()]);
        assert!(l.is_err_and(|r| r.message.contains("named twice")));
        let many: Vec<String> = (0..=MAX_PACKAGES).map(|i| format!("p{i}")).collect();
        assert!(PackageList::parse(Ecosystem::Pypi, &many).is_err());
    }

    fn plan(allow: &[&str], deny: &[&str]) -> PackagePlan {
        PackagePlan {
            list: PackageList::parse(Ecosystem::Pypi, &["Requests".into()]).unwrap_or_else(|_| {
                PackageList {
                    ecosystem: Ecosystem::Pypi,
                    specs: Vec::new(),
                }
            }),
            rules: PackageRules {
                index: "https://pypi.org/simple".into(),
                allow: allow.iter().map(|s| s.to_string()).collect(),
                deny: deny.iter().map(|s| s.to_string()).collect(),
                max_bytes: Bytes::mib(1),
                max_count: 2,
            },
        }
    }

    fn report(names: &[&str], bytes: u64) -> PackagesReport {
        PackagesReport {
            ecosystem: Ecosystem::Pypi,
            index: String::new(),
            installed: names
                .iter()
                .map(|n| InstalledPackage {
                    name: n.to_string(),
                    version: "1".into(),
                })
                .collect(),
            cached: false,
            size_bytes: bytes,
            prepare_time: 0.0,
        }
    }

    #[test]
    fn rules_name_what_they_refuse() {
        assert!(plan(&[], &[]).check_requested("p").is_ok());
        assert!(plan(&["requests"], &[]).check_requested("p").is_ok());
        let e = plan(&["numpy"], &[]).check_requested("p").err();
        assert!(e.is_some_and(|e| e.message.contains("not in the allow list")));
        let e = plan(&[], &["requests"]).check_requested("p").err();
        assert!(e.is_some_and(|e| e.message.contains("`requests` is denied")));
        // Dependencies are held to the deny list, the count and the size.
        let p = plan(&[], &["urllib3"]);
        let e = p.check_prepared(&report(&["requests", "URLLib3"], 10), "p");
        assert!(e.is_err_and(|e| e.message.contains("dependency")));
        let p = plan(&[], &[]);
        assert!(p.check_prepared(&report(&["a", "b"], 10), "p").is_ok());
        assert!(p
            .check_prepared(&report(&["a", "b", "c"], 10), "p")
            .is_err());
        assert!(p.check_prepared(&report(&["a"], 2 << 20), "p").is_err());
    }

    #[test]
    fn probe_answers_are_tokens() {
        let good = br#"{"implementation":"cp","version":"3.11.2","abi":"cp311","platforms":["manylinux_2_36_x86_64","linux_x86_64"]}"#;
        let t = PackageTarget::from_probe(Ecosystem::Pypi, "native", good);
        assert!(t.is_ok_and(|t| t.interpreter.abi == "cp311" && t.interpreter.platforms.len() == 2));
        let bad = br#"{"implementation":"cp","version":"3.11 --index-url x","abi":"cp311","platforms":["x"]}"#;
        assert!(PackageTarget::from_probe(Ecosystem::Pypi, "native", bad).is_err());
        assert!(PackageTarget::from_probe(Ecosystem::Pypi, "native", b"nope").is_err());
    }

    #[test]
    fn names_normalise_per_ecosystem() {
        assert_eq!(
            Ecosystem::Pypi.normalize_name("Foo__Bar..baz"),
            "foo-bar-baz"
        );
        assert_eq!(Ecosystem::Npm.normalize_name("JSONStream"), "jsonstream");
        assert!(Ecosystem::Pypi.check_name("ok-name").is_ok());
        assert!(Ecosystem::Npm.check_name("@scope/ok").is_ok());
        assert!(Ecosystem::Npm.check_name("../x").is_err());
    }
}
