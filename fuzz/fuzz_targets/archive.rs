//! Tar archives coming into a session's workspace: never a panic; whatever is accepted holds only
//! regular files inside the workspace, within the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;

const BUDGET: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(files) = vana_sandbox_core::session::unpack_archive(data, BUDGET) {
        let total: u64 = files.iter().map(|f| f.content.len() as u64).sum();
        assert!(total <= BUDGET);
        for f in &files {
            assert!(
                vana_sandbox_core::validate::check_relative_path(&f.path).is_ok(),
                "{}",
                f.path
            );
        }
    }
});
