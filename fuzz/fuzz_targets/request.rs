//! The request JSON, its validation and the default policy's evaluation: never a panic, and an
//! accepted request never gets more than the policy allows.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vana_sandbox_core::{ExecutionRequest, Languages, Policy, PolicyContext};

fn languages() -> &'static Languages {
    static L: OnceLock<Languages> = OnceLock::new();
    L.get_or_init(vana_sandbox_lang::installed)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(request) = ExecutionRequest::from_json(text) else {
        return;
    };
    let Ok(valid) = vana_sandbox_core::validate::validate(&request, languages()) else {
        return;
    };
    // Packages that pass validation are names with versions: never an option, a path or a URL,
    // and their canonical form parses to itself.
    if let Some(list) = &valid.packages {
        for spec in &list.specs {
            let r = &spec.requirement;
            assert!(!r.starts_with('-') && !r.contains("://") && !r.starts_with(['.', '/']));
            let again = vana_sandbox_core::PackageSpec::parse(list.ecosystem, r);
            assert_eq!(again.as_ref().map(|p| &p.requirement), Ok(r), "{r:?}");
        }
    }
    let policy = vana_sandbox_policy::PolicyConfig::default();
    let context = PolicyContext {
        language: valid.language.name(),
        backend: vana_sandbox_core::BackendKind::Fake,
        tenant: None,
    };
    if let Ok(spec) = policy.evaluate(&valid, &context) {
        assert!(spec.limits.memory <= policy.limits.memory);
        assert!(spec.limits.disk <= policy.limits.disk);
        assert!(spec.limits.processes <= policy.limits.processes);
        assert!(spec.limits.timeout <= policy.limits.timeout);
        assert!(spec.limits.output <= policy.limits.output);
        assert!(spec.limits.cpus.get() <= policy.limits.cpus.get());
    }
});
