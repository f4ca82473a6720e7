//! The policy file format, its defaults and presets.

use std::path::Path;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vana_sandbox_core::limits::wire;
use vana_sandbox_core::{
    Bytes, CacheScope, Cores, Ecosystem, Guards, LayerName, Limits, PackageRules, Runtime,
};

/// Loading or checking a policy failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or schema error.
    #[error("invalid TOML policy: {0}")]
    Toml(#[from] toml::de::Error),
    /// JSON syntax or schema error.
    #[error("invalid JSON policy: {0}")]
    Json(#[from] serde_json::Error),
    /// The policy could not be written as TOML.
    #[error("cannot write the policy as TOML: {0}")]
    TomlWrite(#[source] toml::ser::Error),
    /// A value is out of range.
    #[error("invalid policy: {0}")]
    Invalid(String),
    /// No preset has this name.
    #[error("unknown policy preset `{0}`; presets: default, strict, relaxed")]
    UnknownPreset(String),
}

/// Preset names.
pub const PRESETS: &[&str] = &["default", "strict", "relaxed"];

/// Network rules: with `enabled`, a request may reach what `allow` names (and `deny` does not)
/// through the host-side egress proxy, within its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Whether any request may have network access.
    pub enabled: bool,
    /// What a request may ask for: hosts (`example.com`, `*.example.org`, `host:443`) or CIDRs
    /// (special ranges — loopback, private, link-local, metadata — only when named this way).
    pub allow: Vec<String>,
    /// Refused even when allowed (deny wins).
    pub deny: Vec<String>,
    /// Only GET and HEAD over plain HTTP (no CONNECT tunnels).
    pub read_only: bool,
    /// Requests per second per run (0: unlimited).
    pub requests_per_second: u32,
    /// Concurrent connections per run.
    pub max_connections: u32,
    /// MiB a run may send in all.
    pub max_egress_mb: u64,
    /// MiB a run may receive in all.
    pub max_ingress_mb: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allow: Vec::new(),
            deny: Vec::new(),
            read_only: false,
            requests_per_second: 20,
            max_connections: 32,
            max_egress_mb: 64,
            max_ingress_mb: 1024,
        }
    }
}

/// One ecosystem's package index and name lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageIndexConfig {
    /// The one index packages come from: an `https://` URL (`http://` only for a mirror on
    /// loopback), without credentials. One per ecosystem: extra indexes invite dependency
    /// confusion (the same name answered by two indexes).
    pub index: String,
    /// Names a request may ask for; empty means any.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Names that may not be installed at all, asked for or pulled in as a dependency.
    #[serde(default)]
    pub deny: Vec<String>,
}

impl PackageIndexConfig {
    fn with_index(index: &str) -> Self {
        Self {
            index: index.into(),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// The default PyPI index.
pub const PYPI_INDEX: &str = "https://pypi.org/simple";
/// The default npm registry.
pub const NPM_REGISTRY: &str = "https://registry.npmjs.org/";

/// Package rules: whether requests may ask for packages, from which index, which names, how
/// much. Packages are fetched by a trusted host-side step and mounted read-only; a request can
/// only choose among what this allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackagesConfig {
    /// Whether requests may ask for packages.
    pub enabled: bool,
    /// Most disk a request's package set may take (its dependencies included), in MiB.
    pub max_total_mb: u64,
    /// Most packages a request's set may hold, dependencies included.
    pub max_count: u64,
    /// Python packages.
    pub pypi: PackageIndexConfig,
    /// JavaScript packages.
    pub npm: PackageIndexConfig,
}

impl Default for PackagesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_total_mb: 512,
            max_count: 100,
            pypi: PackageIndexConfig::with_index(PYPI_INDEX),
            npm: PackageIndexConfig::with_index(NPM_REGISTRY),
        }
    }
}

impl PackagesConfig {
    fn index(&self, ecosystem: Ecosystem) -> &PackageIndexConfig {
        match ecosystem {
            Ecosystem::Pypi => &self.pypi,
            Ecosystem::Npm => &self.npm,
        }
    }

    /// The rules for `ecosystem` as the engine checks them (names normalised).
    pub fn rules(&self, ecosystem: Ecosystem) -> PackageRules {
        let section = self.index(ecosystem);
        let names = |list: &[String]| list.iter().map(|n| ecosystem.normalize_name(n)).collect();
        PackageRules {
            index: section.index.clone(),
            allow: names(&section.allow),
            deny: names(&section.deny),
            max_bytes: Bytes::mib(self.max_total_mb),
            max_count: self.max_count,
        }
    }

    fn check(&self) -> Result<(), PolicyError> {
        if !(1..=65_536).contains(&self.max_total_mb) {
            return Err(PolicyError::Invalid(format!(
                "packages.max_total_mb must be 1-65536 (got {})",
                self.max_total_mb
            )));
        }
        if !(1..=10_000).contains(&self.max_count) {
            return Err(PolicyError::Invalid(format!(
                "packages.max_count must be 1-10000 (got {})",
                self.max_count
            )));
        }
        for eco in Ecosystem::ALL {
            let section = self.index(eco);
            check_index(&section.index).map_err(|why| {
                PolicyError::Invalid(format!("packages.{eco}.index `{}` {why}", section.index))
            })?;
            for (list, names) in [("allow", &section.allow), ("deny", &section.deny)] {
                for name in names.iter() {
                    eco.check_name(name).map_err(|why| {
                        PolicyError::Invalid(format!("packages.{eco}.{list}: {why}"))
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// An index URL: `https://host[:port]/path`, or `http://` on loopback; no credentials, no
/// query, no characters an installer's command line or a result could be confused by.
fn check_index(url: &str) -> Result<(), &'static str> {
    let (scheme, rest) = url.split_once("://").ok_or("is not a URL")?;
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.contains('@') {
        return Err("must not carry credentials (they would appear in results and logs)");
    }
    if url.len() > 512
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "?#\\\"'<>`{}|^".contains(c))
    {
        return Err("has characters an index URL does not need (a query, a fragment, spaces)");
    }
    // The host without its port (`[::1]:8080` keeps its brackets).
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(h, _)| h),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err("has no host");
    }
    match scheme {
        "https" => Ok(()),
        "http" if matches!(host, "127.0.0.1" | "localhost" | "::1") => Ok(()),
        "http" => Err("must use https (plain http only for a mirror on loopback)"),
        _ => Err("must be an https:// URL"),
    }
}

/// How long sessions may live, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session without a call for this long is closed.
    pub idle_timeout_secs: f64,
    /// A session is closed this long after it opened.
    pub max_lifetime_secs: f64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let d = vana_sandbox_core::SessionPolicy::default();
        Self {
            idle_timeout_secs: d.idle_timeout.as_secs_f64(),
            max_lifetime_secs: d.max_lifetime.as_secs_f64(),
        }
    }
}

impl SessionConfig {
    /// The typed form (checked by [`PolicyConfig::check`]).
    pub fn policy(&self) -> vana_sandbox_core::SessionPolicy {
        let secs = |v: f64| Duration::try_from_secs_f64(v).unwrap_or(Duration::ZERO);
        vana_sandbox_core::SessionPolicy {
            idle_timeout: secs(self.idle_timeout_secs),
            max_lifetime: secs(self.max_lifetime_secs),
        }
    }
}

/// Ceilings of compile steps (Go, Rust). Each language's defaults are capped by these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompileConfig {
    /// Memory including swap.
    #[serde(rename = "memory_mb", with = "wire::memory")]
    pub memory: Bytes,
    /// CPU cores.
    #[serde(with = "wire::cpus")]
    pub cpus: Cores,
    /// Processes and threads alive at once.
    #[serde(rename = "max_processes", with = "wire::processes")]
    pub processes: u64,
    /// Wall clock.
    #[serde(rename = "timeout_secs", with = "wire::timeout")]
    pub timeout: Duration,
    /// Optimisation level (0-3).
    pub opt_level: u8,
    /// Who may share compiled artifacts: `shared` (default), `tenant` or `off`.
    pub cache_scope: CacheScope,
}

impl Default for CompileConfig {
    fn default() -> Self {
        Self {
            memory: Bytes::mib(1024),
            cpus: Cores::ONE,
            processes: 256,
            timeout: Duration::from_secs(120),
            opt_level: 1,
            cache_scope: CacheScope::Shared,
        }
    }
}

impl CompileConfig {
    /// The compile ceiling as full limits: disk and output are the run step's.
    pub fn limits(&self, run: &Limits) -> Limits {
        Limits {
            memory: self.memory,
            cpus: self.cpus,
            processes: self.processes,
            timeout: self.timeout,
            cpu_time: None,
            ..*run
        }
    }
}

/// A sandbox policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A name for messages and audit.
    pub name: String,
    /// Resource ceilings (and the values used when a request gives none): the core's typed
    /// limits, whose serde form is this `[limits]` section, checked on load against the one
    /// limits table.
    pub limits: Limits,
    /// Network rules (default: no network).
    pub network: NetworkConfig,
    /// Package rules (default: PyPI and npm, 512 MiB and 100 packages a request).
    pub packages: PackagesConfig,
    /// Languages allowed; empty means every installed one.
    pub languages: Vec<String>,
    /// Isolation layers that must be enforced: creation fails when one is missing.
    pub require: Vec<LayerName>,
    /// Language guards (defence in depth, reported as security events; never the boundary).
    pub guards: Guards,
    /// Compile-step ceilings.
    pub compile: CompileConfig,
    /// Session lifetimes.
    pub session: SessionConfig,
    /// Container runtime for the Docker backend: `runc` (default) or `runsc` (gVisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            limits: Limits::default(),
            network: NetworkConfig::default(),
            packages: PackagesConfig::default(),
            languages: Vec::new(),
            require: Vec::new(),
            guards: Guards::default(),
            compile: CompileConfig::default(),
            session: SessionConfig::default(),
            runtime: None,
        }
    }
}

impl PolicyConfig {
    /// A named preset: `default` (the plan's limits), `strict` (small and short), `relaxed`
    /// (more memory, time and processes; still no network).
    pub fn preset(name: &str) -> Result<Self, PolicyError> {
        let mut p = Self {
            name: name.to_string(),
            ..Self::default()
        };
        match name {
            "default" => {}
            "strict" => {
                let half = Cores::new(0.5).unwrap_or(Cores::ONE);
                p.limits = Limits {
                    memory: Bytes::mib(128),
                    cpus: half,
                    disk: Bytes::mib(16),
                    processes: 16,
                    output: Bytes(64 * 1024),
                    timeout: Duration::from_secs(10),
                    cpu_time: Some(Duration::from_secs(10)),
                };
                p.guards.bash_restricted = true;
                p.packages.enabled = false;
                p.compile = CompileConfig {
                    memory: Bytes::mib(512),
                    cpus: half,
                    processes: 64,
                    timeout: Duration::from_secs(60),
                    opt_level: 0,
                    cache_scope: CacheScope::Tenant,
                };
            }
            "relaxed" => {
                p.limits = Limits {
                    memory: Bytes::mib(2048),
                    cpus: Cores::new(2.0).unwrap_or(Cores::ONE),
                    disk: Bytes::mib(1024),
                    processes: 256,
                    output: Bytes(16 << 20),
                    timeout: Duration::from_secs(300),
                    cpu_time: None,
                };
            }
            other => return Err(PolicyError::UnknownPreset(other.to_string())),
        }
        Ok(p)
    }

    /// Parses TOML and checks the values.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let p: Self = toml::from_str(text)?;
        p.check()?;
        Ok(p)
    }

    /// Parses JSON and checks the values.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let p: Self = serde_json::from_str(text)?;
        p.check()?;
        Ok(p)
    }

    /// Loads a `.toml` or `.json` file (anything else is tried as TOML).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        }
    }

    /// Checks the rules that span fields (every single value is already checked by its type
    /// when the file is read).
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.compile.opt_level > 3 {
            return Err(PolicyError::Invalid(format!(
                "compile.opt_level must be 0-3 (got {})",
                self.compile.opt_level
            )));
        }
        for (name, v) in [
            ("session.idle_timeout_secs", self.session.idle_timeout_secs),
            ("session.max_lifetime_secs", self.session.max_lifetime_secs),
        ] {
            if !(v.is_finite() && (1.0..=86_400.0 * 7.0).contains(&v)) {
                return Err(PolicyError::Invalid(format!(
                    "{name} must be 1 s to 7 days (got {v})"
                )));
            }
        }
        self.packages.check()?;
        if self.network.enabled && self.network.allow.is_empty() {
            return Err(PolicyError::Invalid(
                "network.enabled needs a non-empty network.allow list".into(),
            ));
        }
        Ok(())
    }

    /// Serialises to TOML.
    pub fn to_toml(&self) -> Result<String, PolicyError> {
        toml::to_string_pretty(self).map_err(PolicyError::TomlWrite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_plans() {
        let p = PolicyConfig::default();
        assert_eq!(p.limits, Limits::default());
        assert_eq!(p.limits.memory, Bytes::mib(512));
        assert_eq!(p.limits.cpus, Cores::ONE);
        assert_eq!(p.limits.disk, Bytes::mib(100));
        assert_eq!(p.limits.timeout, Duration::from_secs(30));
        assert_eq!(p.limits.output, Bytes(1 << 20));
        assert!(!p.network.enabled);
    }

    #[test]
    fn toml_and_json_round_trip() {
        for name in PRESETS {
            let p = PolicyConfig::preset(name).unwrap_or_default();
            let toml = p.to_toml().unwrap_or_default();
            assert_eq!(
                PolicyConfig::from_toml(&toml).ok().as_ref(),
                Some(&p),
                "{toml}"
            );
            let j = serde_json::to_string(&p).unwrap_or_default();
            assert_eq!(PolicyConfig::from_json(&j).ok().as_ref(), Some(&p));
        }
    }

    #[test]
    fn partial_file_keeps_defaults_and_rejects_typos() {
        let p = PolicyConfig::from_toml("name = 'x'\n[limits]\nmemory_mb = 256\n");
        assert!(
            matches!(&p, Ok(p) if p.limits.memory == Bytes::mib(256) && p.limits.disk == Bytes::mib(100))
        );
        assert!(PolicyConfig::from_toml("[limits]\nmemroy_mb = 1\n").is_err());
        let e = PolicyConfig::from_toml("[limits]\nmemory_mb = 0\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("memory_mb must be at least 8"), "{e}");
        assert!(PolicyConfig::from_toml("require = ['seccomp', 'landlock']\n").is_ok());
        assert!(PolicyConfig::from_toml("require = ['secomp']\n").is_err());
        assert!(PolicyConfig::from_toml("runtime = 'kata'\n").is_err());
        assert!(PolicyConfig::from_toml("[compile]\nopt_level = 4\n").is_err());
        assert!(PolicyConfig::preset("nope").is_err());
    }
}
