//! Properties over arbitrary requests: a request never widens the policy (every limit of the
//! spec is at most the policy's, and at most what the request asked when it asked), validation
//! and evaluation never panic, and no size overflows on the way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use vana_sandbox_core::{
    BackendKind, ExecutionRequest, LimitsRequest, NetworkRequest, Policy, PolicyContext,
};
use vana_sandbox_policy::PolicyConfig;

fn languages() -> &'static vana_sandbox_core::Languages {
    static L: OnceLock<vana_sandbox_core::Languages> = OnceLock::new();
    L.get_or_init(vana_sandbox_lang::installed)
}

fn any_limits() -> impl Strategy<Value = Option<LimitsRequest>> {
    let n = prop_oneof![
        Just(None),
        any::<i64>().prop_map(Some),
        (0i64..100_000).prop_map(Some)
    ];
    let f = prop_oneof![
        Just(None),
        any::<f64>().prop_map(Some),
        (0.0f64..10_000.0).prop_map(Some)
    ];
    (n.clone(), f.clone(), n.clone(), n.clone(), n, f).prop_map(
        |(memory_mb, cpus, disk_mb, max_processes, max_output_bytes, cpu_time_secs)| {
            Some(LimitsRequest {
                memory_mb,
                cpus,
                disk_mb,
                max_processes,
                max_output_bytes,
                cpu_time_secs,
            })
        },
    )
}

fn any_request() -> impl Strategy<Value = ExecutionRequest> {
    (
        prop_oneof![Just("python"), Just("bash"), Just("nope"), Just("auto")],
        ".{0,64}",
        prop_oneof![Just(None), any::<f64>().prop_map(Some)],
        any_limits(),
        prop::collection::vec("[a-z.*]{0,12}", 0..3),
        any::<bool>(),
        prop::collection::btree_map("[A-Z_]{1,6}", ".{0,8}", 0..3),
    )
        .prop_map(|(language, code, timeout, limits, allow, net, env)| {
            let env: BTreeMap<String, String> = env;
            ExecutionRequest {
                language: language.into(),
                code,
                timeout,
                limits,
                network_access: Some(net),
                network: (!allow.is_empty()).then_some(NetworkRequest { allow }),
                env,
                ..ExecutionRequest::default()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_request_never_widens_the_policy(request in any_request()) {
        let languages = languages();
        let mut policy = PolicyConfig::default();
        policy.network.enabled = true;
        policy.network.allow = vec!["example.com".into(), "*.example.org".into()];
        let Ok(valid) = vana_sandbox_core::validate::validate(&request, languages) else {
            return Ok(());
        };
        let context = PolicyContext {
            language: valid.language.name(),
            backend: BackendKind::Fake,
            tenant: None,
        };
        let Ok(spec) = policy.evaluate(&valid, &context) else { return Ok(()) };
        let (s, p) = (spec.limits, policy.limits);
        prop_assert!(s.memory <= p.memory);
        prop_assert!(s.cpus.get() <= p.cpus.get());
        prop_assert!(s.disk <= p.disk);
        prop_assert!(s.processes <= p.processes);
        prop_assert!(s.output <= p.output);
        prop_assert!(s.timeout <= p.timeout);
        if let Some(l) = &request.limits {
            if let Some(m) = l.memory_mb {
                prop_assert!(s.memory.get() <= (m.max(0) as u64).saturating_mul(1 << 20));
            }
        }
        if let vana_sandbox_core::NetworkMode::Proxy(e) = &spec.network {
            for a in &e.allow {
                prop_assert!(policy.network.allow.iter().any(|p| p.eq_ignore_ascii_case(a)));
            }
        }
    }

    #[test]
    fn validation_never_panics_on_json(text in ".{0,400}") {
        let languages = languages();
        if let Ok(r) = ExecutionRequest::from_json(&text) {
            let _ = vana_sandbox_core::validate::validate(&r, languages);
        }
    }

    /// Package names that pass validation are names with versions (never an installer option,
    /// a path or a URL), in a canonical form that parses to itself, and the plan carries the
    /// policy's index and rules whatever the request says.
    #[test]
    fn accepted_packages_are_names_with_versions(
        language in prop_oneof![Just("python"), Just("javascript")],
        packages in prop::collection::vec(
            prop_oneof![
                "[A-Za-z0-9._@/~^<>=!, *|+:\\[\\]-]{0,24}",
                ".{0,24}",
                Just("requests==2.32.3".to_string()),
                Just("is-number@^7".to_string()),
                Just("x @ https://evil.example/x".to_string()),
                Just("--index-url=https://evil.example".to_string()),
            ],
            0..4,
        ),
    ) {
        let languages = languages();
        let policy = PolicyConfig::default();
        let request = ExecutionRequest {
            language: language.into(),
            code: "1".into(),
            packages,
            ..ExecutionRequest::default()
        };
        let Ok(valid) = vana_sandbox_core::validate::validate(&request, languages) else {
            return Ok(());
        };
        let Some(list) = &valid.packages else { return Ok(()) };
        for spec in &list.specs {
            let r = &spec.requirement;
            prop_assert!(!r.starts_with('-') && !r.contains("://"), "{r:?}");
            prop_assert!(!r.starts_with(['.', '/', '~']), "{r:?}");
            prop_assert!(!r.split_whitespace().any(|w| w.len() > 1 && w.starts_with('-')), "{r:?}");
            let again = vana_sandbox_core::PackageSpec::parse(list.ecosystem, r);
            prop_assert_eq!(again.map(|p| p.requirement), Ok(r.clone()));
        }
        let context = PolicyContext {
            language: valid.language.name(),
            backend: BackendKind::Fake,
            tenant: None,
        };
        let spec = policy.evaluate(&valid, &context);
        prop_assert!(spec.is_ok());
        let plan = spec.ok().and_then(|s| s.packages);
        prop_assert_eq!(plan.map(|p| p.rules), Some(policy.packages.rules(list.ecosystem)));
    }
}
