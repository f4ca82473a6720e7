//! Evaluation: a request can only tighten the policy.

use vana_sandbox_core::{
    EgressPolicy, LimitKind, NetworkMode, PackagePlan, Policy, PolicyContext, Rejection,
    SandboxSpec, ValidRequest,
};

use crate::config::PolicyConfig;
use crate::fingerprint::fingerprint;

impl Policy for PolicyConfig {
    fn evaluate(
        &self,
        request: &ValidRequest,
        context: &PolicyContext,
    ) -> Result<SandboxSpec, Rejection> {
        let name = self.name.as_str();
        if !self.languages.is_empty()
            && !self
                .languages
                .iter()
                .any(|l| l.eq_ignore_ascii_case(context.language))
        {
            return Err(Rejection::new(format!(
                "language `{}` is not allowed by policy `{name}` (allowed: {})",
                context.language,
                self.languages.join(", ")
            )));
        }
        let limits = self.limits.tighten(&request.limits).map_err(|e| {
            let field = match e.kind {
                LimitKind::Timeout => "timeout".to_string(),
                kind => format!("limits.{}", kind.key()),
            };
            Rejection::new(format!(
                "{field} {} exceeds the maximum of policy `{name}` ({}); a request can only tighten the policy",
                e.asked, e.max
            ))
        })?;

        let network = if request.wants_network {
            let n = &self.network;
            if !n.enabled {
                return Err(Rejection::new(format!(
                    "network access is disabled by policy `{name}`"
                )));
            }
            if let Some(d) = request
                .network_allow
                .iter()
                .find(|d| !n.allow.iter().any(|a| a.eq_ignore_ascii_case(d)))
            {
                return Err(Rejection::new(format!(
                    "network destination `{d}` is not in the allowlist of policy `{name}`"
                )));
            }
            // The request narrows: its own list when it gives one, else the policy's.
            let allow = if request.network_allow.is_empty() {
                n.allow.clone()
            } else {
                request.network_allow.clone()
            };
            NetworkMode::Proxy(EgressPolicy {
                allow,
                deny: n.deny.clone(),
                read_only: n.read_only,
                requests_per_second: (n.requests_per_second > 0).then_some(n.requests_per_second),
                max_connections: n.max_connections.max(1),
                max_bytes_up: n.max_egress_mb.saturating_mul(1 << 20),
                max_bytes_down: n.max_ingress_mb.saturating_mul(1 << 20),
            })
        } else {
            NetworkMode::None
        };

        // Packages: the plan carries the rules; the engine checks names, count and size against
        // them (what is asked for before fetching, what was prepared on every use).
        let packages = match &request.packages {
            None => None,
            Some(_) if !self.packages.enabled => {
                return Err(Rejection::new(format!(
                    "packages are disabled by policy `{name}`"
                )));
            }
            Some(list) => Some(PackagePlan {
                list: list.clone(),
                rules: self.packages.rules(list.ecosystem),
            }),
        };

        Ok(SandboxSpec {
            limits,
            compile_limits: self.compile.limits(&limits),
            network,
            require: self.require.clone(),
            runtime: self.runtime,
            guards: self.guards,
            opt_level: self.compile.opt_level,
            cache_scope: self.compile.cache_scope,
            packages,
            policy_name: self.name.clone(),
            policy_fingerprint: fingerprint(self),
        })
    }

    fn fingerprint(&self) -> String {
        fingerprint(self)
    }

    fn sessions(&self) -> vana_sandbox_core::SessionPolicy {
        self.session.policy()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use vana_sandbox_core::fake::FakeLanguage;
    use vana_sandbox_core::validate::validate;
    use vana_sandbox_core::{BackendKind, Bytes, ExecutionRequest, Languages, LimitsRequest};

    fn ctx() -> PolicyContext {
        PolicyContext {
            language: "fake",
            backend: BackendKind::Fake,
            tenant: None,
        }
    }

    fn eval(p: &PolicyConfig, req: &ExecutionRequest) -> Result<SandboxSpec, String> {
        let langs = Languages::new().with(Arc::new(FakeLanguage::interpreted()));
        let valid = validate(req, &langs).map_err(|r| r.message)?;
        p.evaluate(&valid, &ctx()).map_err(|r| r.message)
    }

    #[test]
    fn empty_request_gets_the_policy_values() {
        let p = PolicyConfig::default();
        let spec = eval(&p, &ExecutionRequest::new("fake", "1"));
        let Ok(spec) = spec else {
            panic!("rejected: {spec:?}")
        };
        assert_eq!(spec.limits.memory, Bytes::mib(512));
        assert_eq!(spec.limits.timeout, Duration::from_secs(30));
        assert_eq!(spec.limits.disk, Bytes::mib(100));
        assert_eq!(spec.network, NetworkMode::None);
        assert_eq!(spec.policy_fingerprint, fingerprint(&p));
        assert_eq!(spec.compile_limits.memory, Bytes::mib(1024));
        assert_eq!(spec.compile_limits.disk, spec.limits.disk);
    }

    #[test]
    fn request_can_tighten_but_not_widen() {
        let p = PolicyConfig::default();
        let mut req = ExecutionRequest::new("fake", "1");
        req.limits = Some(LimitsRequest {
            memory_mb: Some(64),
            ..Default::default()
        });
        req.timeout = Some(2.0);
        let spec = eval(&p, &req);
        assert!(
            matches!(&spec, Ok(s) if s.limits.memory == Bytes::mib(64) && s.limits.timeout == Duration::from_secs(2))
        );

        req.limits = Some(LimitsRequest {
            memory_mb: Some(4096),
            ..Default::default()
        });
        let err = eval(&p, &req).err().unwrap_or_default();
        assert!(err.contains("limits.memory_mb 4096 exceeds"), "{err}");

        let mut req = ExecutionRequest::new("fake", "1");
        req.timeout = Some(1000.0);
        let err = eval(&p, &req).err().unwrap_or_default();
        assert!(err.contains("timeout 1000 exceeds"), "{err}");
    }

    #[test]
    fn packages_carry_the_policys_rules_or_are_refused() {
        let mut req = ExecutionRequest::new("fake", "1");
        req.packages = vec!["Requests==2.32.3".into()];
        let p = PolicyConfig::from_toml(
            "[packages]\nmax_total_mb = 64\n[packages.pypi]\nindex = 'https://mirror.example/simple'\ndeny = ['Evil_Pkg']\n",
        );
        let Ok(p) = p else { panic!("{p:?}") };
        let spec = eval(&p, &req);
        let Ok(spec) = spec else { panic!("{spec:?}") };
        let Some(plan) = spec.packages else {
            panic!("no plan")
        };
        assert_eq!(plan.list.specs[0].requirement, "requests==2.32.3");
        assert_eq!(plan.rules.index, "https://mirror.example/simple");
        assert_eq!(plan.rules.deny, ["evil-pkg"]);
        assert_eq!(plan.rules.max_bytes, Bytes::mib(64));
        assert!(eval(&p, &ExecutionRequest::new("fake", "1")).is_ok_and(|s| s.packages.is_none()));

        let strict = PolicyConfig::preset("strict").unwrap_or_default();
        let err = eval(&strict, &req).err().unwrap_or_default();
        assert!(
            err.contains("packages are disabled by policy `strict`"),
            "{err}"
        );
    }

    #[test]
    fn package_sections_are_checked_on_load() {
        for bad in [
            "[packages.pypi]\nindex = 'http://pypi.org/simple'\n",
            "[packages.pypi]\nindex = 'https://user:secret@pypi.example/simple'\n",
            "[packages.pypi]\nindex = 'ftp://x/'\n",
            "[packages.npm]\nindex = 'https://r.example/'\ndeny = ['../x']\n",
            "[packages]\nmax_count = 0\n",
            "[packages]\nmax_total_mb = 1000000\n",
            "[packages]\nextra_index = 'x'\n",
        ] {
            assert!(PolicyConfig::from_toml(bad).is_err(), "{bad}");
        }
        for good in [
            "[packages.pypi]\nindex = 'http://127.0.0.1:8080/simple'\n",
            "[packages.pypi]\nindex = 'http://[::1]:8080/simple'\n",
            "[packages.npm]\nindex = 'https://registry.npmjs.org/'\nallow = ['@types/node', 'is-number']\n",
        ] {
            assert!(PolicyConfig::from_toml(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn network_is_denied_by_default_and_languages_filter() {
        let p = PolicyConfig::default();
        let mut req = ExecutionRequest::new("fake", "1");
        req.network_access = Some(true);
        let err = eval(&p, &req).err().unwrap_or_default();
        assert!(err.contains("network access is disabled"), "{err}");

        let p = PolicyConfig {
            languages: vec!["bash".into()],
            ..PolicyConfig::default()
        };
        assert!(eval(&p, &ExecutionRequest::new("fake", "1")).is_err());
    }
}
