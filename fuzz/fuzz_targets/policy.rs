//! Policy files (TOML and JSON): loading, checking and evaluating a request never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vana_sandbox_core::{ExecutionRequest, Policy, PolicyContext};
use vana_sandbox_policy::PolicyConfig;

fn languages() -> &'static vana_sandbox_core::Languages {
    static L: OnceLock<vana_sandbox_core::Languages> = OnceLock::new();
    L.get_or_init(vana_sandbox_lang::installed)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policies = [PolicyConfig::from_toml(text), PolicyConfig::from_json(text)];
    let languages = languages();
    let request = ExecutionRequest::new("python", "print(1)");
    let Ok(valid) = vana_sandbox_core::validate::validate(&request, languages) else {
        return;
    };
    for policy in policies.into_iter().flatten() {
        if policy.check().is_err() {
            continue;
        }
        let context = PolicyContext {
            language: valid.language.name(),
            backend: vana_sandbox_core::BackendKind::Fake,
            tenant: Some("t".into()),
        };
        let _ = policy.evaluate(&valid, &context);
        let _ = policy.fingerprint();
    }
});
