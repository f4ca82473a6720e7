//! The server's configuration file (TOML): `[server]` settings and one `[[tenant]]` table per
//! tenant, with its API keys (SHA-256 hashes only), its policy and its quotas.
//!
//! ```toml
//! [server]
//! listen = "tcp:127.0.0.1:8080"      # or "unix:/run/vana.sock" (the default)
//! max_body_bytes = 33554432
//!
//! [[tenant]]
//! name = "research"
//! preset = "strict"                   # or policy = "research-policy.toml" (relative to this file)
//! quotas = { concurrent_runs = 4, sessions = 8, runs_per_minute = 600, cpu_seconds_per_hour = 3600 }
//! keys = [
//!   { sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", expires = "2030-01-01T00:00:00Z", label = "ci" },
//! ]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vana_sandbox_core::CacheScope;
use vana_sandbox_policy::PolicyConfig;

use crate::error::ConfigError;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket at this path (created; a stale socket is replaced).
    Unix(PathBuf),
    /// A TCP address (`127.0.0.1:0` picks a free port).
    Tcp(SocketAddr),
}

impl Listen {
    /// The default: `unix:/run/vana.sock`.
    pub fn default_unix() -> Self {
        Listen::Unix(PathBuf::from("/run/vana.sock"))
    }

    /// Parses `unix:/path`, `unix:///path`, `tcp:host:port` (an IP address, `localhost` as
    /// 127.0.0.1).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::Listen(format!("`{text}`: {why}"));
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.starts_with('/') {
                return Err(bad("a Unix socket needs an absolute path"));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            let addr = addr.strip_prefix("//").unwrap_or(addr);
            let addr = match addr.strip_prefix("localhost:") {
                Some(port) => format!("127.0.0.1:{port}"),
                None => addr.to_string(),
            };
            return addr
                .parse()
                .map(Listen::Tcp)
                .map_err(|_| bad("expected tcp:ADDRESS:PORT with an IP address"));
        }
        Err(bad("expected unix:/path or tcp:ADDRESS:PORT"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Listen::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Listen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The `[server]` table: listening, TLS, request limits and timeouts. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Where to listen (default `unix:/run/vana.sock`).
    pub listen: Listen,
    /// Permissions of the Unix socket (default `0o660`: its owner and group may connect).
    pub socket_mode: u32,
    /// TLS certificate chain (PEM); with `tls_key`, TCP connections speak TLS (rustls).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Largest request body (JSON requests; a file upload has `max_file_bytes`). A larger
    /// `Content-Length` is answered 413 before anything is read; a chunked body is cut at the
    /// limit and answered 413.
    pub max_body_bytes: u64,
    /// Largest file or archive uploaded into a session.
    pub max_file_bytes: u64,
    /// Largest `code` of a request (413 above it; the engine's own bound is 1 MiB).
    pub max_code_bytes: u64,
    /// Largest total of a request's `files` (decoded sizes as sent; 413 above it).
    pub max_files_bytes: u64,
    /// Seconds a client has to send a request's head (then the connection is closed); also
    /// how long a kept-alive connection may sit idle before its next request.
    pub header_timeout_secs: f64,
    /// Seconds a client has to send a request's body (then 408).
    pub body_timeout_secs: f64,
    /// Seconds a graceful shutdown waits for running work before it kills it.
    pub shutdown_grace_secs: f64,
    /// The `Retry-After` of a 429 for a full queue or the concurrency quota, in seconds.
    pub retry_after_secs: u64,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// SHA-256 (hex) of a bearer token that `GET /metrics` requires; without it, `/metrics` is
    /// open to anyone who can reach the socket (what a Prometheus scrape in a cluster expects).
    pub metrics_token_sha256: Option<String>,
    /// Seconds between test runs (a trivial Bash or Python program under the server's policy,
    /// id `readyz-N`, no tenant); `/readyz` says not ready until one succeeds and whenever the
    /// last one failed. 0: none.
    pub probe_interval_secs: f64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: Listen::default_unix(),
            socket_mode: 0o660,
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 32 << 20,
            max_file_bytes: 64 << 20,
            max_code_bytes: 1 << 20,
            max_files_bytes: 16 << 20,
            header_timeout_secs: 10.0,
            body_timeout_secs: 30.0,
            shutdown_grace_secs: 30.0,
            retry_after_secs: 1,
            max_connections: 1024,
            metrics_token_sha256: None,
            probe_interval_secs: 30.0,
        }
    }
}

fn secs(name: &str, v: f64) -> Result<Duration, ConfigError> {
    if v.is_finite() && (0.001..=86_400.0).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(ConfigError::Invalid(format!(
            "server.{name} must be 0.001 to 86400 seconds (got {v})"
        )))
    }
}

impl ServerSettings {
    /// The header timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_timeout_secs)
    }

    /// The body timeout.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.body_timeout_secs)
    }

    /// The shutdown grace.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_secs)
    }

    /// Checks values that serde cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        secs("header_timeout_secs", self.header_timeout_secs)?;
        secs("body_timeout_secs", self.body_timeout_secs)?;
        secs("shutdown_grace_secs", self.shutdown_grace_secs)?;
        if self.probe_interval_secs != 0.0 {
            secs("probe_interval_secs", self.probe_interval_secs)?;
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "server.tls_cert and server.tls_key go together".into(),
            ));
        }
        if self.max_connections == 0 || self.max_body_bytes == 0 || self.max_file_bytes == 0 {
            return Err(ConfigError::Invalid(
                "server.max_connections, max_body_bytes and max_file_bytes must be positive".into(),
            ));
        }
        if self.socket_mode > 0o777 {
            return Err(ConfigError::Invalid(format!(
                "server.socket_mode {:o} is not a permission mode",
                self.socket_mode
            )));
        }
        if let Some(h) = &self.metrics_token_sha256 {
            parse_sha256(h).map_err(|e| ConfigError::Invalid(format!("server.{e}")))?;
        }
        Ok(())
    }
}

/// A tenant's quotas. Absent: unlimited (the engine's own bounds still hold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Executions and session cells running or queued at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_runs: Option<u32>,
    /// Sessions open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
    /// Executions and cells started in any 60 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_per_minute: Option<u32>,
    /// CPU seconds (run and compile steps) used in any hour; a run that starts under the quota
    /// finishes, and later ones are refused until the hour's window drops below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds_per_hour: Option<f64>,
}

/// One API key: only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// SHA-256 of the key, 64 hex digits (`vana-sandbox keygen` prints a key and its hash).
    pub sha256: String,
    /// When the key stops working: RFC 3339 (`2030-01-01T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// A name for people (which client holds it); never used for access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One `[[tenant]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's name: 1-64 of `a-z 0-9 _ -`, unique. It labels audit lines and metrics.
    pub name: String,
    /// A policy file (TOML or JSON), relative to the configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// A policy preset (`default`, `strict`, `relaxed`); exclusive with `policy`. Neither: the
    /// server's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Quotas.
    #[serde(default)]
    pub quotas: Quotas,
    /// API keys.
    pub keys: Vec<KeyConfig>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Settings.
    #[serde(default)]
    pub server: ServerSettings,
    /// Tenants (none: the server accepts unauthenticated requests on a Unix socket only).
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
}

/// A tenant's policy as loaded: the tenant, the policy, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPolicy {
    /// Tenant name.
    pub tenant: String,
    /// Its policy (the compile cache narrowed to the tenant, see [`ServerConfig::policies`]).
    pub policy: PolicyConfig,
    /// `preset:NAME` or the file's path.
    pub source: String,
}

impl ServerConfig {
    /// Reads and checks a configuration file.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c = Self::from_toml(&text)?;
        // Policy files are relative to the configuration file.
        let base = path.parent().unwrap_or(Path::new("."));
        for t in &mut c.tenants {
            if let Some(p) = &mut t.policy {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(c)
    }

    /// Parses and checks TOML.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// `sha256:` of the configuration as parsed (for the `config_loaded` audit line).
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_string(self).unwrap_or_else(|e| format!("{e}: {self:?}"));
        format!("sha256:{}", hex(&Sha256::digest(canonical.as_bytes())))
    }

    /// Checks names, keys, expiry dates and quotas.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.server.check()?;
        let mut names = std::collections::BTreeSet::new();
        let mut hashes = std::collections::BTreeSet::new();
        for t in &self.tenants {
            let invalid = |m: String| ConfigError::Invalid(format!("tenant `{}`: {m}", t.name));
            if t.name.is_empty()
                || t.name.len() > 64
                || !t
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(invalid("a name is 1-64 of a-z, 0-9, _ and -".into()));
            }
            if !names.insert(t.name.as_str()) {
                return Err(invalid("named twice".into()));
            }
            if t.policy.is_some() && t.preset.is_some() {
                return Err(invalid("policy and preset are exclusive".into()));
            }
            if t.keys.is_empty() {
                return Err(invalid("has no keys".into()));
            }
            for k in &t.keys {
                let h = parse_sha256(&k.sha256).map_err(invalid)?;
                if !hashes.insert(h) {
                    return Err(invalid("a key hash appears twice in the file".into()));
                }
                if let Some(e) = &k.expires {
                    parse_rfc3339(e).map_err(|m| invalid(format!("expires: {m}")))?;
                }
            }
            let q = &t.quotas;
            if q.concurrent_runs == Some(0) || q.sessions == Some(0) || q.runs_per_minute == Some(0)
            {
                return Err(invalid(
                    "a quota of 0 would refuse everything; remove the tenant's keys instead".into(),
                ));
            }
            if let Some(c) = q.cpu_seconds_per_hour {
                if !(c.is_finite() && c > 0.0) {
                    return Err(invalid(format!(
                        "quotas.cpu_seconds_per_hour must be positive (got {c})"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Loads each tenant's own policy (tenants without one use the server's). Every policy's
    /// compile cache is narrowed to its tenant (`cache_scope = "shared"` becomes `"tenant"`): a
    /// cache hit would otherwise tell one tenant what another compiled.
    pub fn policies(&self) -> Result<Vec<TenantPolicy>, ConfigError> {
        let mut out = Vec::new();
        for t in &self.tenants {
            let (mut policy, source) = match (&t.policy, &t.preset) {
                (Some(p), _) => (
                    PolicyConfig::from_path(p).map_err(|e| ConfigError::Policy {
                        tenant: t.name.clone(),
                        source: e,
                    })?,
                    p.display().to_string(),
                ),
                (None, Some(name)) => (
                    PolicyConfig::preset(name).map_err(|e| ConfigError::Policy {
                        tenant: t.name.clone(),
                        source: e,
                    })?,
                    format!("preset:{name}"),
                ),
                (None, None) => continue,
            };
            narrow_cache(&mut policy);
            out.push(TenantPolicy {
                tenant: t.name.clone(),
                policy,
                source,
            });
        }
        Ok(out)
    }
}

/// A shared compile cache becomes a per-tenant one (`off` stays off).
pub fn narrow_cache(policy: &mut PolicyConfig) {
    if policy.compile.cache_scope == CacheScope::Shared {
        policy.compile.cache_scope = CacheScope::Tenant;
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits as 32 bytes.
pub(crate) fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "sha256 must be 64 hex digits (got {} characters)",
            t.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let pair = t.get(2 * i..2 * i + 2).unwrap_or("00");
        *o = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Parses an RFC 3339 date-time (`2030-01-01T00:00:00Z`, `…+02:00`, fractions of a second
/// allowed) as a time.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("`{text}` is not an RFC 3339 date-time (2030-01-01T00:00:00Z)");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        text.get(r)
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let mut rest = text.get(19..).ok_or_else(bad)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = frac.get(digits..).ok_or_else(bad)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6
            && (o.starts_with('+') || o.starts_with('-'))
            && o.as_bytes().get(3) == Some(&b':') =>
        {
            let oh: i64 = o.get(1..3).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let om: i64 = o.get(4..6).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(bad()),
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let unix = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    let unix = u64::try_from(unix).map_err(|_| format!("`{text}` is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(unix))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            Listen::parse("unix:/run/vana.sock").ok(),
            Some(Listen::Unix("/run/vana.sock".into()))
        );
        assert_eq!(
            Listen::parse("unix:///tmp/x.sock").ok(),
            Some(Listen::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(
            Listen::parse("tcp:127.0.0.1:8080").ok(),
            Some(Listen::Tcp(([127, 0, 0, 1], 8080).into()))
        );
        assert_eq!(
            Listen::parse("tcp:localhost:0").ok(),
            Some(Listen::Tcp(([127, 0, 0, 1], 0).into()))
        );
        for bad in [
            "unix:relative",
            "tcp:example.com:80",
            "http://x",
            "tcp:1.2.3.4",
        ] {
            assert!(Listen::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        let t = |s: &str| {
            parse_rfc3339(s)
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        };
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("2030-01-01T00:00:00Z"), Some(1_893_456_000));
        assert_eq!(t("2030-01-01T02:00:00+02:00"), Some(1_893_456_000));
        assert_eq!(t("2024-02-29T12:30:15.250Z"), Some(1_709_209_815));
        for bad in [
            "2030-01-01",
            "2030-13-01T00:00:00Z",
            "2030-01-01T00:00:00",
            "x",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_config_is_checked() {
        let key = "a".repeat(64);
        let ok = format!(
            "[server]\nlisten = \"tcp:127.0.0.1:0\"\n[[tenant]]\nname = \"t-1\"\npreset = \"strict\"\nquotas = {{ sessions = 2 }}\nkeys = [{{ sha256 = \"{key}\", expires = \"2030-01-01T00:00:00Z\" }}]\n"
        );
        let c = ServerConfig::from_toml(&ok).unwrap_or_default();
        assert_eq!(c.tenants.len(), 1);
        assert_eq!(c.tenants[0].quotas.sessions, Some(2));
        let p = c.policies().unwrap_or_default();
        assert_eq!(p[0].policy.compile.cache_scope, CacheScope::Tenant);
        for (what, text) in [
            ("bad name", ok.replace("t-1", "T 1")),
            ("short hash", ok.replace(&key, "abc")),
            ("bad date", ok.replace("2030-01-01T00:00:00Z", "soon")),
            ("unknown field", ok.replace("preset", "presets")),
            ("zero quota", ok.replace("sessions = 2", "sessions = 0")),
            (
                "no keys",
                "[[tenant]]\nname = \"x\"\nkeys = []\n".to_string(),
            ),
        ] {
            assert!(
                ServerConfig::from_toml(&text).is_err(),
                "{what} was accepted"
            );
        }
        let twice = format!("{ok}[[tenant]]\nname = \"t-2\"\nkeys = [{{ sha256 = \"{key}\" }}]\n");
        assert!(
            ServerConfig::from_toml(&twice).is_err(),
            "a key shared by two tenants"
        );
    }
}
