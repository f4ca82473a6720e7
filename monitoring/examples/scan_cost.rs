//! Prints how long the built-in rules take to scan code of a few sizes (release build):
//! `cargo run --release -p vana-sandbox-monitor --example scan_cost`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use vana_sandbox_monitor::threat::{Analyzer, RuleSet};

fn main() {
    let a = Analyzer::new(RuleSet::builtin());
    let small = "print(1)\n";
    let program = include_str!("../tests/corpus/data_processing.py");
    let big = program.repeat(400);
    for (name, code) in [
        ("9 B", small),
        ("1.3 KB", program),
        ("540 KB", big.as_str()),
    ] {
        let n = if code.len() > 100_000 { 5 } else { 2000 };
        let t = Instant::now();
        for _ in 0..n {
            assert!(a.scan_code("python", code).is_empty());
        }
        println!("scan of {name}: {:?} each", t.elapsed() / n);
    }
}
