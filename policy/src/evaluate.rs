//! Evaluation: a request can only tighten the policy.

use std::time::Duration;

use vana_sandbox_core::spec::NetworkMode;
use vana_sandbox_core::units::MIB;
use vana_sandbox_core::{
    ExecutionRequest, Policy, PolicyContext, ProcessLimits, Rejection, SandboxSpec,
};

use crate::config::PolicyConfig;
use crate::fingerprint::fingerprint;

fn ceiling<T: PartialOrd + std::fmt::Display + Copy>(
    policy: &str,
    field: &str,
    asked: Option<T>,
    max: T,
) -> Result<T, Rejection> {
    match asked {
        Some(v) if v > max => Err(Rejection::new(format!(
            "{field} {v} exceeds the maximum of policy `{policy}` ({max}); a request can only tighten the policy"
        ))),
        Some(v) => Ok(v),
        None => Ok(max),
    }
}

impl Policy for PolicyConfig {
    fn evaluate(
        &self,
        request: &ExecutionRequest,
        context: &PolicyContext,
    ) -> Result<SandboxSpec, Rejection> {
        let name = self.name.as_str();
        if !self.languages.is_empty()
            && !self
                .languages
                .iter()
                .any(|l| l.eq_ignore_ascii_case(&context.language))
        {
            return Err(Rejection::new(format!(
                "language `{}` is not allowed by policy `{name}` (allowed: {})",
                context.language,
                self.languages.join(", ")
            )));
        }
        let l = &self.limits;
        let r = request.limits.clone().unwrap_or_default();
        let pos = |v: Option<i64>| v.map(|v| v.max(0) as u64);
        let memory_mb = ceiling(name, "limits.memory_mb", pos(r.memory_mb), l.memory_mb)?;
        let cpus = ceiling(name, "limits.cpus", r.cpus, l.cpus)?;
        let disk_mb = ceiling(name, "limits.disk_mb", pos(r.disk_mb), l.disk_mb)?;
        let max_processes = ceiling(
            name,
            "limits.max_processes",
            pos(r.max_processes),
            l.max_processes,
        )?;
        let max_output_bytes = ceiling(
            name,
            "limits.max_output_bytes",
            pos(r.max_output_bytes),
            l.max_output_bytes,
        )?;
        let timeout = ceiling(name, "timeout", request.timeout, l.timeout_secs)?;
        let cpu_time = match (r.cpu_time_secs, l.cpu_time_secs) {
            (Some(asked), Some(max)) => {
                Some(ceiling(name, "limits.cpu_time_secs", Some(asked), max)?)
            }
            (asked, max) => asked.or(max),
        };

        let network = if request.wants_network() {
            if !self.network.enabled {
                return Err(Rejection::new(format!(
                    "network access is disabled by policy `{name}`"
                )));
            }
            let asked = request
                .network
                .as_ref()
                .map(|n| n.allow.clone())
                .unwrap_or_default();
            if let Some(d) = asked
                .iter()
                .find(|d| !self.network.allow.iter().any(|a| a.eq_ignore_ascii_case(d)))
            {
                return Err(Rejection::new(format!(
                    "network destination `{d}` is not in the allowlist of policy `{name}`"
                )));
            }
            return Err(Rejection::new(
                "network access through the allowlisting proxy is not supported yet; run without network",
            ));
        } else {
            NetworkMode::None
        };

        Ok(SandboxSpec {
            limits: ProcessLimits {
                memory_bytes: memory_mb * MIB,
                cpus,
                max_processes,
                timeout: Duration::from_secs_f64(timeout),
                max_output_bytes,
                cpu_time: cpu_time.map(Duration::from_secs_f64),
            },
            disk_bytes: disk_mb * MIB,
            network,
            require: self.require.clone(),
            policy_fingerprint: fingerprint(self),
            policy_name: self.name.clone(),
            compile_limits: ProcessLimits {
                memory_bytes: self.compile.memory_mb * MIB,
                cpus: self.compile.cpus,
                max_processes: self.compile.max_processes,
                timeout: Duration::from_secs_f64(self.compile.timeout_secs),
                max_output_bytes,
                cpu_time: None,
            },
            opt_level: self.compile.opt_level,
            cache_scope: self.compile.cache_scope,
            runtime: self.runtime.clone(),
            guards: self.guards,
        })
    }

    fn fingerprint(&self) -> String {
        fingerprint(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vana_sandbox_core::LimitsRequest;

    fn ctx() -> PolicyContext {
        PolicyContext {
            language: "python".into(),
            backend: "native".into(),
            tenant: None,
        }
    }

    #[test]
    fn empty_request_gets_the_policy_values() {
        let p = PolicyConfig::default();
        let spec = p.evaluate(&ExecutionRequest::new("python", "1"), &ctx());
        let Ok(spec) = spec else {
            panic!("rejected: {spec:?}")
        };
        assert_eq!(spec.limits.memory_bytes, 512 * MIB);
        assert_eq!(spec.limits.timeout, Duration::from_secs(30));
        assert_eq!(spec.disk_bytes, 100 * MIB);
        assert_eq!(spec.network, NetworkMode::None);
        assert_eq!(spec.policy_fingerprint, fingerprint(&p));
    }

    #[test]
    fn request_can_tighten_but_not_widen() {
        let p = PolicyConfig::default();
        let mut req = ExecutionRequest::new("python", "1");
        req.limits = Some(LimitsRequest {
            memory_mb: Some(64),
            ..Default::default()
        });
        req.timeout = Some(2.0);
        let spec = p.evaluate(&req, &ctx());
        assert!(
            matches!(&spec, Ok(s) if s.limits.memory_bytes == 64 * MIB && s.limits.timeout == Duration::from_secs(2))
        );

        req.limits = Some(LimitsRequest {
            memory_mb: Some(4096),
            ..Default::default()
        });
        let err = p
            .evaluate(&req, &ctx())
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(err.contains("limits.memory_mb 4096 exceeds"), "{err}");

        let mut req = ExecutionRequest::new("python", "1");
        req.timeout = Some(10000.0);
        assert!(p.evaluate(&req, &ctx()).is_err());
    }

    #[test]
    fn network_is_denied_by_default_and_languages_filter() {
        let p = PolicyConfig::default();
        let mut req = ExecutionRequest::new("python", "1");
        req.network_access = Some(true);
        let err = p
            .evaluate(&req, &ctx())
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(err.contains("network access is disabled"), "{err}");

        let p = PolicyConfig {
            languages: vec!["bash".into()],
            ..PolicyConfig::default()
        };
        assert!(p
            .evaluate(&ExecutionRequest::new("python", "1"), &ctx())
            .is_err());
    }
}
