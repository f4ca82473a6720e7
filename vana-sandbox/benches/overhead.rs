//! Sandbox overhead, side by side in one run (needs root):
//! - Python `print(1)`: bare `python3`, the Foundation sandbox (namespaces, cgroups, pivot_root,
//!   uid and capability drop), and the sandbox with every layer on (plus seccomp, Landlock,
//!   rlimits, masked /proc and the Python audit-hook guard);
//! - the same for Bash `:`, which shows the fixed cost of a run;
//! - every layer on, with sandboxes prepared ahead (`NativeConfig::pool_size`).
//!
//! `cargo bench -p vana-sandbox --bench overhead`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vana_sandbox::{
    lang, Engine, ExecutionRequest, NativeConfig, NativeExecutor, PolicyConfig, Status,
};

/// `hardened = false` is the Foundation configuration; `true` has every layer on. `prepared`:
/// sandboxes are built ahead (a pool of 2 per shape), off the request's path.
fn engine(hardened: bool, prepared: usize) -> Engine {
    let config = NativeConfig {
        seccomp: hardened,
        landlock: hardened,
        pool_size: prepared,
        ..NativeConfig::default()
    };
    let mut policy = PolicyConfig::default();
    policy.guards.python_audit = hardened;
    policy.guards.node_permissions = hardened;
    Engine::builder()
        .executor(Arc::new(
            NativeExecutor::with_config(config).expect("the native backend needs root"),
        ))
        .policy(Arc::new(policy))
        .languages(lang::installed())
        .max_concurrency(1)
        .build()
        .expect("engine")
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

criterion_group!(benches, overhead);
criterion_main!(benches);
