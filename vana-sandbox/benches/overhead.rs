//! Sandbox overhead: Python `print(1)` through the native backend beside bare `python3`, and the
//! same for `/bin/true`-like Bash, side by side in one run. Needs root.
//!
//! `cargo bench -p vana-sandbox --bench overhead`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vana_sandbox::{lang, Engine, ExecutionRequest, NativeExecutor, PolicyConfig, Status};

fn engine() -> Engine {
    Engine::builder()
        .executor(Arc::new(
            NativeExecutor::new().expect("the native backend needs root"),
        ))
        .policy(Arc::new(PolicyConfig::default()))
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
    let engine = engine();
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
    g.bench_function("native_sandbox", |b| {
        b.iter(|| {
            let r = rt
                .block_on(engine.execute(ExecutionRequest::new("python", "print(1)")))
                .expect("engine");
            assert_eq!(r.status, Status::Success, "{r:?}");
        })
    });
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
    g.bench_function("native_sandbox", |b| {
        b.iter(|| {
            let r = rt
                .block_on(engine.execute(ExecutionRequest::new("bash", ":")))
                .expect("engine");
            assert_eq!(r.status, Status::Success, "{r:?}");
        })
    });
    g.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
