//! The native backend side by side in one run (needs root): start-up per language (a fresh
//! sandbox per run, and from prepared sandboxes), throughput at concurrency 1, 2 and 8 against
//! bare Python at the same concurrency, and a cell in a warm session.
//!
//! `cargo bench -p vana-sandbox-benches --bench native`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use vana_sandbox::{
    lang, Engine, ExecutionRequest, NativeConfig, NativeExecutor, PolicyConfig, SessionOptions,
    Status,
};

fn engine(prepared: usize, concurrency: usize) -> Engine {
    let config = NativeConfig {
        pool_size: prepared,
        ..NativeConfig::default()
    };
    Engine::builder()
        .executor(Arc::new(
            NativeExecutor::with_config(config).expect("the native backend needs root"),
        ))
        .policy(Arc::new(PolicyConfig::default()))
        .languages(lang::installed())
        .max_concurrency(concurrency)
        .max_queue(100_000)
        .build()
        .expect("engine")
}

fn run(rt: &tokio::runtime::Runtime, e: &Engine, language: &str, code: &str) {
    let r = rt
        .block_on(e.execute(ExecutionRequest::new(language, code)))
        .expect("engine");
    assert_eq!(r.status, Status::Success, "{r:?}");
}

const PROGRAMS: &[(&str, &str)] = &[
    ("python", "print(1)"),
    ("javascript", "console.log(1)"),
    ("bash", "echo 1"),
];

fn startup(c: &mut Criterion) {
    let rt = vana_sandbox_benches::runtime();
    let fresh = engine(0, 1);
    let prepared = engine(2, 1);
    let mut g = c.benchmark_group("startup");
    g.sample_size(40).measurement_time(Duration::from_secs(8));
    for (language, code) in PROGRAMS {
        g.bench_with_input(BenchmarkId::new("fresh", language), code, |b, code| {
            b.iter(|| run(&rt, &fresh, language, code))
        });
        g.bench_with_input(BenchmarkId::new("prepared", language), code, |b, code| {
            b.iter(|| run(&rt, &prepared, language, code))
        });
    }
    g.finish();
}

fn throughput(c: &mut Criterion) {
    let rt = vana_sandbox_benches::runtime();
    let mut g = c.benchmark_group("throughput_python_print");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for concurrency in [1usize, 2, 8] {
        let e = engine(concurrency.min(4), concurrency);
        // One iteration: 16 runs at this concurrency.
        g.bench_function(BenchmarkId::new("vana", concurrency), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += vana_sandbox_benches::batch(&rt, &e, 16, "python", "print(1)");
                }
                total
            })
        });
        g.bench_function(BenchmarkId::new("bare", concurrency), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    let mut left = 16;
                    while left > 0 {
                        let n = left.min(concurrency);
                        let kids: Vec<_> = (0..n)
                            .map(|_| {
                                Command::new("/usr/bin/python3")
                                    .args(["-c", "print(1)"])
                                    .stdout(std::process::Stdio::null())
                                    .spawn()
                                    .expect("python3")
                            })
                            .collect();
                        for mut k in kids {
                            k.wait().expect("wait");
                        }
                        left -= n;
                    }
                }
                t.elapsed()
            })
        });
    }
    g.finish();
}

fn sessions(c: &mut Criterion) {
    let rt = vana_sandbox_benches::runtime();
    let e = engine(0, 2);
    let s = rt
        .block_on(e.session(SessionOptions::default()))
        .expect("session");
    let mut g = c.benchmark_group("session_cell");
    g.sample_size(60).measurement_time(Duration::from_secs(6));
    g.bench_function("python_expression", |b| {
        b.iter(|| {
            let r = rt.block_on(s.run_code("python", "1 + 1")).expect("cell");
            assert_eq!(r.status, Status::Success);
        })
    });
    g.bench_function("bash_command", |b| {
        b.iter(|| {
            let r = rt.block_on(s.command("true")).expect("cell");
            assert_eq!(r.status, Status::Success);
        })
    });
    g.finish();
    rt.block_on(s.close()).expect("close");
}

criterion_group!(benches, startup, throughput, sessions);
criterion_main!(benches);
