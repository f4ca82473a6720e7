//! The policy file format, its defaults and presets.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vana_sandbox_core::compile_cache::CacheScope;
use vana_sandbox_core::Guards;

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
    /// A value is out of range.
    #[error("invalid policy: {0}")]
    Invalid(String),
    /// No preset has this name.
    #[error("unknown policy preset `{0}`; presets: default, strict, relaxed")]
    UnknownPreset(String),
}

/// Preset names.
pub const PRESETS: &[&str] = &["default", "strict", "relaxed"];

/// Resource ceilings (and the values used when a request gives none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Memory including swap, MiB.
    pub memory_mb: u64,
    /// CPU cores.
    pub cpus: f64,
    /// Writable workspace and /tmp together, MiB.
    pub disk_mb: u64,
    /// Processes and threads alive at once.
    pub max_processes: u64,
    /// stdout and stderr together, bytes.
    pub max_output_bytes: u64,
    /// Wall clock of the run step, seconds.
    pub timeout_secs: f64,
    /// CPU seconds per process (`RLIMIT_CPU`); none by default (the wall clock bounds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_secs: Option<f64>,
}

impl Default for LimitsConfig {
    /// The plan's defaults: 1 CPU, 512 MB memory, 100 MB disk, 30 s, 1 MiB output.
    fn default() -> Self {
        Self {
            memory_mb: 512,
            cpus: 1.0,
            disk_mb: 100,
            max_processes: 64,
            max_output_bytes: 1 << 20,
            timeout_secs: 30.0,
            cpu_time_secs: None,
        }
    }
}

/// Network rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Whether any request may have network access.
    pub enabled: bool,
    /// Domains a request may ask for (`example.com`, `*.example.org`, `host:443`).
    pub allow: Vec<String>,
}

/// Language guards (defence in depth, reported as security events; never the boundary): the
/// policy file's `[guards]` section is the core [`Guards`] type.
pub type GuardsConfig = Guards;

/// Ceilings of compile steps (Go, Rust). Each language's defaults are capped by these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompileConfig {
    /// Memory including swap, MiB.
    pub memory_mb: u64,
    /// CPU cores.
    pub cpus: f64,
    /// Processes and threads alive at once.
    pub max_processes: u64,
    /// Wall clock, seconds.
    pub timeout_secs: f64,
    /// Optimisation level (0-3).
    pub opt_level: u8,
    /// Who may share compiled artifacts: `shared` (default), `tenant` or `off`.
    pub cache_scope: CacheScope,
}

impl Default for CompileConfig {
    fn default() -> Self {
        Self {
            memory_mb: 1024,
            cpus: 1.0,
            max_processes: 256,
            timeout_secs: 120.0,
            opt_level: 1,
            cache_scope: CacheScope::Shared,
        }
    }
}

/// A sandbox policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A name for messages and audit.
    pub name: String,
    /// Resource ceilings.
    pub limits: LimitsConfig,
    /// Network rules (default: no network).
    pub network: NetworkConfig,
    /// Languages allowed; empty means every installed one.
    pub languages: Vec<String>,
    /// Isolation layers that must be enforced: creation fails when one is missing.
    pub require: Vec<String>,
    /// Language guards.
    pub guards: GuardsConfig,
    /// Compile-step ceilings.
    pub compile: CompileConfig,
    /// Container runtime for the Docker backend: `runc` (default) or `runsc` (gVisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            limits: LimitsConfig::default(),
            network: NetworkConfig::default(),
            languages: Vec::new(),
            require: Vec::new(),
            guards: GuardsConfig::default(),
            compile: CompileConfig::default(),
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
                p.limits = LimitsConfig {
                    memory_mb: 128,
                    cpus: 0.5,
                    disk_mb: 16,
                    max_processes: 16,
                    max_output_bytes: 64 * 1024,
                    timeout_secs: 10.0,
                    cpu_time_secs: Some(10.0),
                };
                p.guards.bash_restricted = true;
                p.compile = CompileConfig {
                    memory_mb: 512,
                    cpus: 0.5,
                    max_processes: 64,
                    timeout_secs: 60.0,
                    opt_level: 0,
                    cache_scope: CacheScope::Tenant,
                };
            }
            "relaxed" => {
                p.limits = LimitsConfig {
                    memory_mb: 2048,
                    cpus: 2.0,
                    disk_mb: 1024,
                    max_processes: 256,
                    max_output_bytes: 16 << 20,
                    timeout_secs: 300.0,
                    cpu_time_secs: None,
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

    /// Checks that every value is in range.
    pub fn check(&self) -> Result<(), PolicyError> {
        let l = &self.limits;
        let bad = |m: String| Err(PolicyError::Invalid(m));
        if l.memory_mb < 8 {
            return bad(format!(
                "limits.memory_mb must be at least 8 (got {})",
                l.memory_mb
            ));
        }
        if !(l.cpus.is_finite() && l.cpus > 0.0) {
            return bad(format!("limits.cpus must be more than 0 (got {})", l.cpus));
        }
        if l.disk_mb == 0 || l.max_processes == 0 || l.max_output_bytes == 0 {
            return bad(
                "limits.disk_mb, max_processes and max_output_bytes must be positive".into(),
            );
        }
        if !(l.timeout_secs.is_finite() && l.timeout_secs > 0.0 && l.timeout_secs <= 3600.0) {
            return bad(format!(
                "limits.timeout_secs must be in (0, 3600] (got {})",
                l.timeout_secs
            ));
        }
        let c = &self.compile;
        if c.memory_mb < 8 || !(c.cpus.is_finite() && c.cpus > 0.0) || c.max_processes == 0 {
            return bad(
                "compile.memory_mb must be at least 8, compile.cpus and max_processes positive"
                    .into(),
            );
        }
        if !(c.timeout_secs.is_finite() && c.timeout_secs > 0.0 && c.timeout_secs <= 3600.0)
            || c.opt_level > 3
        {
            return bad(
                "compile.timeout_secs must be in (0, 3600] and compile.opt_level in 0-3".into(),
            );
        }
        if let Some(r) = &self.runtime {
            if !["runc", "runsc"].contains(&r.as_str()) {
                return bad(format!("runtime must be `runc` or `runsc` (got `{r}`)"));
            }
        }
        if self.network.enabled && self.network.allow.is_empty() {
            return bad("network.enabled needs a non-empty network.allow list".into());
        }
        Ok(())
    }

    /// Serialises to TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_plans() {
        let p = PolicyConfig::default();
        assert_eq!(p.limits.memory_mb, 512);
        assert_eq!(p.limits.cpus, 1.0);
        assert_eq!(p.limits.disk_mb, 100);
        assert_eq!(p.limits.timeout_secs, 30.0);
        assert_eq!(p.limits.max_output_bytes, 1 << 20);
        assert!(!p.network.enabled);
    }

    #[test]
    fn toml_and_json_round_trip() {
        for name in PRESETS {
            let p = PolicyConfig::preset(name).unwrap_or_default();
            assert_eq!(
                PolicyConfig::from_toml(&p.to_toml()).ok().as_ref(),
                Some(&p)
            );
            let j = serde_json::to_string(&p).unwrap_or_default();
            assert_eq!(PolicyConfig::from_json(&j).ok().as_ref(), Some(&p));
        }
    }

    #[test]
    fn partial_file_keeps_defaults_and_rejects_typos() {
        let p = PolicyConfig::from_toml("name = 'x'\n[limits]\nmemory_mb = 256\n");
        assert!(matches!(&p, Ok(p) if p.limits.memory_mb == 256 && p.limits.disk_mb == 100));
        assert!(PolicyConfig::from_toml("[limits]\nmemroy_mb = 1\n").is_err());
        assert!(PolicyConfig::from_toml("[limits]\nmemory_mb = 0\n").is_err());
        assert!(PolicyConfig::preset("nope").is_err());
    }
}
