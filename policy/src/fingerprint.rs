//! A stable fingerprint of a policy: SHA-256 over its canonical JSON (keys sorted).

use sha2::{Digest, Sha256};

use crate::config::PolicyConfig;

/// `sha256:<hex>` of the policy's canonical JSON. Equal policies have equal fingerprints whatever
/// file format or key order they were written in.
pub fn fingerprint(policy: &PolicyConfig) -> String {
    // serde_json::Value keeps object keys in a BTreeMap (sorted) without `preserve_order`. A
    // policy always serialises (string keys only, and non-finite floats become null); should
    // that ever change, the Debug form still fingerprints every field rather than none.
    let canonical = match serde_json::to_value(policy) {
        Ok(v) => v.to_string(),
        Err(e) => format!("unserialisable ({e}): {policy:?}"),
    };
    let digest = Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_across_formats_and_sensitive_to_values() {
        let a = PolicyConfig::from_toml("name='p'\n[limits]\ncpus=0.5\nmemory_mb=256\n")
            .unwrap_or_default();
        let b = PolicyConfig::from_json(r#"{"limits":{"memory_mb":256,"cpus":0.5},"name":"p"}"#)
            .unwrap_or_default();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let mut c = a.clone();
        c.limits.memory = vana_sandbox_core::Bytes::mib(257);
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert!(fingerprint(&a).starts_with("sha256:"));
    }
}
