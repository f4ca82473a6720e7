//! What language guards report (stderr lines and the events file, both written by the program):
//! never a panic, capped, and always marked as the program's word.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vana_sandbox_core::{Guards, Reporter, StepContext};

fn languages() -> &'static vana_sandbox_core::Languages {
    static L: OnceLock<vana_sandbox_core::Languages> = OnceLock::new();
    L.get_or_init(vana_sandbox_lang::installed)
}

fuzz_target!(|data: &[u8]| {
    let guards = Guards {
        python_audit: true,
        node_permissions: true,
        bash_restricted: true,
    };
    let ctx = StepContext {
        workdir: "/workspace",
        source_path: "/workspace/main",
        args: &[],
        guards,
        opt_level: 0,
        files: &[],
    };
    for language in languages().iter() {
        let events = language.guard_events(&ctx, data, Some(data));
        assert!(events.len() <= 2 * vana_sandbox_core::language::MAX_GUARD_EVENTS);
        assert!(events.iter().all(|e| e.source == Reporter::Program));
    }
});
