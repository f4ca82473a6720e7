//! A policy per tenant: a server binds each API key to a tenant, and each tenant to its own
//! [`PolicyConfig`]. Requests are judged by their tenant's policy (and can only tighten it, as
//! always); a caller without a tenant, or a tenant without a policy of its own, gets the default.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use vana_sandbox_core::{Policy, PolicyContext, Rejection, SandboxSpec, ValidRequest};

use crate::config::PolicyConfig;
use crate::fingerprint::fingerprint;

/// Policies by tenant, with a default. The tenant comes from
/// [`PolicyContext::tenant`], which the host sets (`Engine::execute_as`), never the request.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPolicies {
    default: PolicyConfig,
    tenants: BTreeMap<String, PolicyConfig>,
}

impl TenantPolicies {
    /// `default` for every caller until [`tenant`](Self::tenant) names others.
    pub fn new(default: PolicyConfig) -> Self {
        Self {
            default,
            tenants: BTreeMap::new(),
        }
    }

    /// `tenant`'s requests are judged by `policy` (replacing an earlier one).
    pub fn tenant(mut self, tenant: impl Into<String>, policy: PolicyConfig) -> Self {
        self.tenants.insert(tenant.into(), policy);
        self
    }

    /// The policy of `tenant` (the default when it has none of its own).
    pub fn get(&self, tenant: Option<&str>) -> &PolicyConfig {
        tenant
            .and_then(|t| self.tenants.get(t))
            .unwrap_or(&self.default)
    }

    /// The default policy.
    pub fn default_policy(&self) -> &PolicyConfig {
        &self.default
    }

    /// Every policy: the default first, then the tenants' by name.
    pub fn all(&self) -> impl Iterator<Item = (Option<&str>, &PolicyConfig)> {
        std::iter::once((None, &self.default))
            .chain(self.tenants.iter().map(|(t, p)| (Some(t.as_str()), p)))
    }

    /// Applies `f` to every policy (the default's and each tenant's), e.g. a backend's
    /// adjustments.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut PolicyConfig)) {
        f(&mut self.default);
        self.tenants.values_mut().for_each(f);
    }
}

impl Policy for TenantPolicies {
    fn evaluate(
        &self,
        request: &ValidRequest,
        context: &PolicyContext,
    ) -> Result<SandboxSpec, Rejection> {
        self.get(context.tenant.as_deref())
            .evaluate(request, context)
    }

    /// `sha256:` over the default's fingerprint and each tenant's name and fingerprint: any
    /// change to any of them changes it. A result names the fingerprint of the one policy that
    /// judged it.
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(fingerprint(&self.default).as_bytes());
        for (t, p) in &self.tenants {
            h.update(b"\n");
            h.update(t.as_bytes());
            h.update(b"=");
            h.update(fingerprint(p).as_bytes());
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// The default policy's session lifetimes (the engine asks once per session, without a
    /// tenant).
    fn sessions(&self) -> vana_sandbox_core::SessionPolicy {
        self.default.session.policy()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use vana_sandbox_core::fake::FakeLanguage;
    use vana_sandbox_core::validate::validate;
    use vana_sandbox_core::{BackendKind, ExecutionRequest, Languages};

    fn eval(p: &TenantPolicies, tenant: Option<&str>, timeout: f64) -> Result<SandboxSpec, String> {
        let langs = Languages::new().with(Arc::new(FakeLanguage::interpreted()));
        let req = ExecutionRequest {
            timeout: Some(timeout),
            ..ExecutionRequest::new("fake", "x")
        };
        let valid = validate(&req, &langs).map_err(|r| r.message)?;
        let ctx = PolicyContext {
            language: "fake",
            backend: BackendKind::Fake,
            tenant: tenant.map(str::to_string),
        };
        p.evaluate(&valid, &ctx).map_err(|r| r.message)
    }

    #[test]
    fn each_tenant_is_judged_by_its_own_policy() {
        let strict = PolicyConfig::preset("strict").unwrap_or_default();
        let set = TenantPolicies::new(PolicyConfig::default()).tenant("small", strict.clone());
        // The default allows 30 s; the strict tenant 10 s, and asking for more is refused.
        assert!(eval(&set, None, 20.0).is_ok());
        assert!(eval(&set, Some("other"), 20.0).is_ok());
        let err = eval(&set, Some("small"), 20.0).unwrap_err();
        assert!(err.contains("strict"), "{err}");
        let spec = eval(&set, Some("small"), 5.0).unwrap();
        assert_eq!(spec.limits.timeout, Duration::from_secs(5));
        assert_eq!(spec.policy_fingerprint, fingerprint(&strict));
    }

    #[test]
    fn the_fingerprint_covers_every_policy() {
        let a = TenantPolicies::new(PolicyConfig::default());
        let b = a
            .clone()
            .tenant("t", PolicyConfig::preset("strict").unwrap_or_default());
        let c = a
            .clone()
            .tenant("u", PolicyConfig::preset("strict").unwrap_or_default());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(b.fingerprint(), c.fingerprint());
        assert_eq!(b.fingerprint(), b.clone().fingerprint());
    }
}
