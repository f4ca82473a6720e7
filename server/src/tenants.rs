//! Tenants and their API keys: a request's key is hashed (SHA-256) and looked up among the
//! configured hashes; the key itself is never stored. Each tenant carries its quota state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{parse_rfc3339, parse_sha256, Quotas, ServerConfig};
use crate::error::{ApiError, ConfigError};
use crate::quota::QuotaState;

/// The tenant of unauthenticated requests on a Unix socket without configured tenants.
pub const LOCAL_TENANT: &str = "local";

/// One tenant: its name, quotas and their state.
#[derive(Debug)]
pub struct Tenant {
    /// The tenant's name (audit lines and metrics carry it).
    pub name: String,
    /// What its quotas count.
    pub(crate) quota: QuotaState,
}

impl Tenant {
    fn new(name: &str, quotas: Quotas) -> Self {
        Self {
            name: name.to_string(),
            quota: QuotaState::new(quotas),
        }
    }
}

struct Key {
    tenant: Arc<Tenant>,
    expires: Option<SystemTime>,
}

/// The tenants and the key hashes that lead to them.
pub struct Tenants {
    keys: HashMap<[u8; 32], Key>,
    all: Vec<Arc<Tenant>>,
    /// No keys: every request is the local tenant's (a Unix socket only).
    anonymous: Option<Arc<Tenant>>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field(
                "tenants",
                &self.all.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .field("keys", &self.keys.len())
            .field("anonymous", &self.anonymous.is_some())
            .finish()
    }
}

/// SHA-256 of an API key, as the configuration stores it (hex).
pub fn hash_key(key: &str) -> String {
    crate::config::hex(&Sha256::digest(key.as_bytes()))
}

/// A new API key: `vsk_` and 32 random bytes in hex (from the kernel's random source).
pub fn generate_key() -> std::io::Result<String> {
    Ok(format!(
        "vsk_{}",
        crate::config::hex(&random_bytes::<32>()?)
    ))
}

/// `N` random bytes from `/dev/urandom`.
pub(crate) fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

impl Tenants {
    /// The tenants of a configuration.
    pub fn from_config(config: &ServerConfig) -> Result<Self, ConfigError> {
        let mut keys = HashMap::new();
        let mut all = Vec::new();
        for t in &config.tenants {
            let tenant = Arc::new(Tenant::new(&t.name, t.quotas));
            for k in &t.keys {
                let hash = parse_sha256(&k.sha256).map_err(ConfigError::Invalid)?;
                let expires = k
                    .expires
                    .as_deref()
                    .map(parse_rfc3339)
                    .transpose()
                    .map_err(ConfigError::Invalid)?;
                keys.insert(
                    hash,
                    Key {
                        tenant: tenant.clone(),
                        expires,
                    },
                );
            }
            all.push(tenant);
        }
        Ok(Self {
            keys,
            all,
            anonymous: None,
        })
    }

    /// No keys: every request is [`LOCAL_TENANT`]'s, without quotas. For a Unix socket only,
    /// whose file permissions are then the access control.
    pub fn anonymous() -> Self {
        let local = Arc::new(Tenant::new(LOCAL_TENANT, Quotas::default()));
        Self {
            keys: HashMap::new(),
            all: vec![local.clone()],
            anonymous: Some(local),
        }
    }

    /// Whether requests need no key.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous.is_some()
    }

    /// Every tenant.
    pub fn all(&self) -> &[Arc<Tenant>] {
        &self.all
    }

    /// The tenant of a request: its key from `Authorization: Bearer …` (or `X-Api-Key`),
    /// hashed and looked up. No key: [`ApiError::MissingKey`]; an unknown one:
    /// [`ApiError::InvalidKey`]; a known one past its expiry: [`ApiError::ExpiredKey`].
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Tenant>, ApiError> {
        if let Some(t) = &self.anonymous {
            return Ok(t.clone());
        }
        let key = bearer(headers).ok_or(ApiError::MissingKey)?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let k = self.keys.get(&digest).ok_or(ApiError::InvalidKey)?;
        if k.expires.is_some_and(|e| SystemTime::now() >= e) {
            return Err(ApiError::ExpiredKey);
        }
        Ok(k.tenant.clone())
    }
}

/// The key of a request: `Authorization: Bearer <key>` or `X-Api-Key: <key>`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, rest) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|k| !k.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(extra: &str) -> ServerConfig {
        let text = format!(
            "[[tenant]]\nname = \"a\"\nkeys = [{{ sha256 = \"{}\" }}, {{ sha256 = \"{}\", expires = \"2001-01-01T00:00:00Z\" }}]\n{extra}",
            hash_key("key-a"),
            hash_key("old-a"),
        );
        ServerConfig::from_toml(&text).unwrap_or_default()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = v.parse() {
                h.insert(*k, v);
            }
        }
        h
    }

    #[test]
    fn keys_lead_to_their_tenant() {
        let t = Tenants::from_config(&config("")).unwrap_or_else(|_| Tenants::anonymous());
        assert!(!t.is_anonymous());
        let ok = t.authenticate(&headers(&[("authorization", "Bearer key-a")]));
        assert_eq!(ok.map(|t| t.name.clone()).ok().as_deref(), Some("a"));
        let ok = t.authenticate(&headers(&[("x-api-key", "key-a")]));
        assert!(ok.is_ok());
        for (h, code) in [
            (headers(&[]), "missing_api_key"),
            (headers(&[("authorization", "Bearer ")]), "missing_api_key"),
            (
                headers(&[("authorization", "Basic a2V5LWE=")]),
                "missing_api_key",
            ),
            (
                headers(&[("authorization", "Bearer key-b")]),
                "invalid_api_key",
            ),
            (
                headers(&[("authorization", "Bearer old-a")]),
                "expired_api_key",
            ),
        ] {
            let e = t.authenticate(&h).map(|_| ()).unwrap_err();
            assert_eq!(e.code(), code, "{h:?}");
            assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn generated_keys_are_distinct_and_hash_to_hex() {
        let a = generate_key().unwrap_or_default();
        let b = generate_key().unwrap_or_default();
        assert!(a.starts_with("vsk_") && a.len() == 68, "{a}");
        assert_ne!(a, b);
        assert_eq!(hash_key(&a).len(), 64);
        assert_eq!(
            hash_key("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
