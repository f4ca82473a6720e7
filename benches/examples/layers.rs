//! What each isolation layer costs a fresh run, measured by alternating engines that differ in
//! one layer (runs interleaved, so the host's drift hits every engine alike). As root:
//!
//! `cargo run --release -p vana-sandbox-benches --example layers -- python 'print(1)' 200`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use vana_sandbox::{Engine, ExecutionRequest};
use vana_sandbox_benches::{layered_engine, runtime, Layers};

fn engine(seccomp: bool, landlock: bool, guard: bool) -> Engine {
    layered_engine(
        Layers {
            seccomp,
            landlock,
            guard,
        },
        0,
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let language = args.next().unwrap_or_else(|| "python".into());
    let code = args.next().unwrap_or_else(|| "print(1)".into());
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let rt = runtime();
    let engines = [
        ("every layer", engine(true, true, true)),
        ("no seccomp", engine(false, true, true)),
        ("no Landlock", engine(true, false, true)),
        ("no language guard", engine(true, true, false)),
        ("none of the three", engine(false, false, false)),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); engines.len()];
    for round in 0..rounds + 5 {
        for (i, (_, e)) in engines.iter().enumerate() {
            let t = Instant::now();
            let r = rt
                .block_on(e.execute(ExecutionRequest::new(&language, &code)))
                .expect("engine");
            let d = t.elapsed();
            assert_eq!(r.status, vana_sandbox::Status::Success, "{r:?}");
            if round >= 5 {
                times[i].push(d);
            }
        }
    }
    println!("{language} {code:?}, {rounds} runs each, interleaved:");
    for ((name, _), t) in engines.iter().zip(&mut times) {
        t.sort();
        println!(
            "  {name:18} median {:>6.2} ms  p25 {:>6.2} ms",
            t[t.len() / 2].as_secs_f64() * 1e3,
            t[t.len() / 4].as_secs_f64() * 1e3
        );
    }
}
