//! Sandbox overhead, side by side in one run (needs root):
//! - Python `print(1)`: bare `python3`, the Foundation sandbox (namespaces, cgroups, pivot_root,
//!   uid and capability drop), and the sandbox with every layer on (plus seccomp, Landlock,
//!   rlimits, masked /proc and the Python audit-hook guard);
//! - the same for Bash `:`, which shows the fixed cost of a run;
//! - every layer on, with sandboxes prepared ahead (`NativeConfig::pool_size`).
//!
//! Criterion's estimate is a median of sample *means* (each sample averages many runs), so it
//! counts every run that found the pool empty. The in-library target is stated per run, so after
//! criterion's groups a per-run comparison of Bash `:` prints medians: bare `bash`, a fresh
//! sandbox and a prepared one, one run of each in turn (the order rotated every round); then
//! prepared runs back to back, where the pool's refill competes with the runs.
//! `VANA_BENCH_PER_RUN_ONLY=1` runs that part alone; `VANA_BENCH_RUNS` sets its rounds (300).
//!
//! `cargo bench -p vana-sandbox-benches --bench overhead`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use vana_sandbox::{Engine, ExecutionRequest, Status};
use vana_sandbox_benches::{layered_engine, Invocation, Layers};

/// `hardened = false` is the Foundation configuration; `true` has every layer on. `prepared`:
/// sandboxes are built ahead (a pool of 2 per shape), off the request's path.
fn engine(hardened: bool, prepared: usize) -> Engine {
    layered_engine(if hardened { Layers::ALL } else { Layers::NONE }, prepared)
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let engines = [
        ("native_sandbox", engine(false, 0)),
        ("native_all_layers", engine(true, 0)),
        ("native_all_layers_prepared", engine(true, 2)),
    ];

    let mut g = c.benchmark_group("python_print");
    g.sample_size(60).measurement_time(Duration::from_secs(10));
    g.bench_function("bare_python3", |b| {
        b.iter(|| {
            let out = Command::new("/usr/bin/python3")
                .args(["-E", "-s", "-c", "print(1)"])
                .output()
                .expect("python3");
            assert_eq!(out.stdout, b"1\n");
        })
    });
    for (name, engine) in &engines {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let r = rt
                    .block_on(engine.execute(ExecutionRequest::new("python", "print(1)")))
                    .expect("engine");
                assert_eq!(r.status, Status::Success, "{r:?}");
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("shell_true");
    g.sample_size(60).measurement_time(Duration::from_secs(8));
    g.bench_function("bare_bash", |b| {
        b.iter(|| {
            let st = Command::new("/usr/bin/bash")
                .args(["-c", ":"])
                .status()
                .expect("bash");
            assert!(st.success());
        })
    });
    for (name, engine) in &engines {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let r = rt
                    .block_on(engine.execute(ExecutionRequest::new("bash", ":")))
                    .expect("engine");
                assert_eq!(r.status, Status::Success, "{r:?}");
            })
        });
    }
    g.finish();
}

fn bare_bash() {
    let st = Command::new("/usr/bin/bash")
        .args(["-c", ":"])
        .status()
        .expect("bash");
    assert!(st.success());
}

fn sandboxed_bash(rt: &tokio::runtime::Runtime, engine: &Engine) {
    let r = rt
        .block_on(engine.execute(ExecutionRequest::new("bash", ":")))
        .expect("engine");
    assert_eq!(r.status, Status::Success, "{r:?}");
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// Bash `:` per run: bare, fresh and prepared in turn, then prepared back to back.
fn per_run(rounds: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let fresh = engine(true, 0);
    let prepared = engine(true, 2);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut times: [Vec<Duration>; 3] = Default::default();
    for round in 0..rounds + 10 {
        for k in 0..3 {
            let which = (round + k) % 3;
            let t = Instant::now();
            match which {
                0 => bare_bash(),
                1 => sandboxed_bash(&rt, &fresh),
                _ => sandboxed_bash(&rt, &prepared),
            }
            if round >= 10 {
                times[which].push(t.elapsed());
            }
        }
    }
    let [bare, fresh_t, prepared_t] = times.map(median_ms);
    println!(
        "per run, Bash `:`, {rounds} rounds interleaved on {cores} cores (medians): bare {bare:.2} ms, \
         fresh sandbox {fresh_t:.2} ms (+{:.2}), prepared sandbox {prepared_t:.2} ms (+{:.2})",
        fresh_t - bare,
        prepared_t - bare,
    );
    let mut back_to_back = Vec::with_capacity(rounds);
    let mut bare_after = Vec::with_capacity(rounds);
    for i in 0..rounds + 10 {
        let t = Instant::now();
        sandboxed_bash(&rt, &prepared);
        if i >= 10 {
            back_to_back.push(t.elapsed());
        }
    }
    for _ in 0..rounds {
        let t = Instant::now();
        bare_bash();
        bare_after.push(t.elapsed());
    }
    let mut sorted = back_to_back.clone();
    sorted.sort();
    let p90 = sorted[sorted.len() * 9 / 10].as_secs_f64() * 1e3;
    let (b2b, bare2) = (median_ms(back_to_back), median_ms(bare_after));
    println!(
        "per run, Bash `:`, {rounds} prepared runs back to back: median {b2b:.2} ms (p90 {p90:.2}; \
         bare right after {bare2:.2} ms, +{:.2})",
        b2b - bare2,
    );
}

criterion_group!(benches, overhead);

fn main() {
    let rounds = std::env::var("VANA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(300)
        .max(1);
    if std::env::var("VANA_BENCH_PER_RUN_ONLY").is_ok_and(|v| v == "1") {
        per_run(rounds);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = Invocation::from_args(&args);
    if invocation == Invocation::List {
        return; // `cargo bench -- --list` / `cargo test --benches` probes: no engine needed
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    if invocation.runs_extras() {
        per_run(rounds);
    }
}
