//! Overhead of the monitors: 500 trivial runs through the engine with the monitors off, and with
//! the audit log, metrics (Prometheus exporter) and threat detector on, side by side in one run.
//!
//! `cargo bench -p vana-sandbox-benches --bench monitors` measures the fake backend (what the
//! engine and the monitors cost, nothing else). With `VANA_BENCH_NATIVE=1` (as root) it also
//! measures the native backend (`bash -c true`, real sandboxes). After criterion's groups, an
//! interleaved A/B loop (off, on, off, on, …) prints the medians and their ratio, which is less
//! exposed to a machine's drift than two groups measured one after the other, and the share of
//! each monitor. `VANA_BENCH_AB_ONLY=1` runs the A/B loop alone.
//!
//! Last, the per-run comparison the overhead target is stated in: 500 trivial runs with everything
//! on (audit log, metrics with the exporter, detector, alerter — built through
//! `Sandbox::builder().observability(..)`) and 500 with it off, interleaved run by run; it prints
//! the median (and p90) latency of each and their ratio. `VANA_BENCH_PER_RUN_ONLY=1` runs it
//! alone (native as root with `VANA_BENCH_NATIVE=1`, else the fake backend).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion};
use vana_sandbox_benches::{
    batch, facade_engine, fake_engine, full_observability, interleaved_latencies,
    monitor_threads_cpu, native_engine, quantile, runtime, Invocation, Monitors,
};

const RUNS: usize = 500;

fn native_enabled() -> bool {
    std::env::var("VANA_BENCH_NATIVE").is_ok_and(|v| v == "1")
}

fn bench_fake(c: &mut Criterion) {
    let rt = runtime();
    let monitors = Monitors::start("fake");
    let off = fake_engine(&[]);
    let on = fake_engine(&monitors.list());
    let mut g = c.benchmark_group("monitors_fake_500_runs");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function(BenchmarkId::from_parameter("off"), |b| {
        b.iter(|| batch(&rt, &off, RUNS, "fake", "print(1)"))
    });
    g.bench_function(BenchmarkId::from_parameter("on"), |b| {
        b.iter(|| batch(&rt, &on, RUNS, "fake", "print(1)"))
    });
    g.finish();
}

fn bench_native(c: &mut Criterion) {
    if !native_enabled() {
        return;
    }
    let rt = runtime();
    let monitors = Monitors::start("native");
    let off = native_engine(&[]);
    let on = native_engine(&monitors.list());
    let mut g = c.benchmark_group("monitors_native_500_runs");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(60));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function(BenchmarkId::from_parameter("off"), |b| {
        b.iter(|| batch(&rt, &off, RUNS, "bash", "true"))
    });
    g.bench_function(BenchmarkId::from_parameter("on"), |b| {
        b.iter(|| batch(&rt, &on, RUNS, "bash", "true"))
    });
    g.finish();
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Which monitors an interleaved comparison turns on.
#[derive(Clone, Copy)]
enum Which {
    All,
    Audit,
    Metrics,
    Threats,
}

/// Interleaved off/on batches; prints the medians and the ratio.
fn interleaved(name: &str, rounds: usize, language: &str, code: &str, native: bool, which: Which) {
    let rt = runtime();
    let monitors = Monitors::start(&format!("ab-{name}"));
    let list = match which {
        Which::All => monitors.list(),
        Which::Audit => vec![monitors.list()[0].clone()],
        Which::Metrics => vec![monitors.list()[1].clone()],
        Which::Threats => vec![monitors.list()[2].clone()],
    };
    let (off, on) = if native {
        (native_engine(&[]), native_engine(&list))
    } else {
        (fake_engine(&[]), fake_engine(&list))
    };
    // Warm both (caches, the audit file, the detector's regexes).
    batch(&rt, &off, 50, language, code);
    batch(&rt, &on, 50, language, code);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        // Alternate which goes first, so neither always runs on a warmer machine.
        if i % 2 == 0 {
            a.push(batch(&rt, &off, RUNS, language, code));
            b.push(batch(&rt, &on, RUNS, language, code));
        } else {
            b.push(batch(&rt, &on, RUNS, language, code));
            a.push(batch(&rt, &off, RUNS, language, code));
        }
    }
    let (ma, mb) = (median(&mut a), median(&mut b));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let stats = (monitors.threats.stats(), monitors.audit.stats());
    println!(
        "interleaved {name}: {RUNS} runs x {rounds} rounds on {cores} cores: off median {ma:?}, on median {mb:?}, on/off {:.4} ({:+.2}%); detector dropped {}, audit dropped {}",
        mb.as_secs_f64() / ma.as_secs_f64(),
        (mb.as_secs_f64() / ma.as_secs_f64() - 1.0) * 100.0,
        stats.0.dropped,
        stats.1.dropped_queue_full,
    );
}

/// 500 trivial runs off and 500 on, interleaved run by run, `VANA_BENCH_REPEATS` times (default
/// 5): per repeat the medians, p90 and their ratio, and the median of the paired differences
/// (each on-run against the off-run beside it), which a drifting machine moves least.
fn per_run(native: bool) {
    let rt = runtime();
    let (obs, dir) = full_observability("per-run");
    let off = facade_engine(&rt, !native, None);
    let on = facade_engine(&rt, !native, Some(&obs));
    let (language, code) = if native {
        ("bash", "true")
    } else {
        ("python", "print(1)")
    };
    let repeats: usize = std::env::var("VANA_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let backend = if native { "native" } else { "fake" };
    // Warm both (the audit file, the detector's regexes, the host's caches).
    interleaved_latencies(&rt, &off, &on, 50, language, code);
    let cpu_before = monitor_threads_cpu();
    let mut ratios = Vec::new();
    for r in 1..=repeats {
        let pairs = interleaved_latencies(&rt, &off, &on, RUNS, language, code);
        let mut a: Vec<Duration> = pairs.iter().map(|p| p.0).collect();
        let mut b: Vec<Duration> = pairs.iter().map(|p| p.1).collect();
        a.sort();
        b.sort();
        let mut diffs: Vec<f64> = pairs
            .iter()
            .map(|(x, y)| y.as_secs_f64() - x.as_secs_f64())
            .collect();
        diffs.sort_by(f64::total_cmp);
        let (ma, mb) = (quantile(&a, 0.5), quantile(&b, 0.5));
        let ratio = mb.as_secs_f64() / ma.as_secs_f64();
        let paired = diffs[diffs.len() / 2];
        ratios.push(ratio);
        println!(
            "per run, {backend}, repeat {r}/{repeats}, {RUNS} + {RUNS} runs interleaved on {cores} cores: off median {ma:?} (p90 {:?}), on median {mb:?} (p90 {:?}), on/off {ratio:.4} ({:+.2}%); median paired difference {:+.1} µs ({:+.2}% of the off median)",
            quantile(&a, 0.9),
            quantile(&b, 0.9),
            (ratio - 1.0) * 100.0,
            paired * 1e6,
            paired / ma.as_secs_f64() * 100.0,
        );
    }
    ratios.sort_by(f64::total_cmp);
    assert!(obs.flush(Duration::from_secs(10)));
    let cpu = monitor_threads_cpu().saturating_sub(cpu_before);
    println!(
        "per run, {backend}: the monitors' own threads used {cpu:?} of CPU for {} runs: {:.1} µs per run",
        RUNS * repeats,
        cpu.as_secs_f64() * 1e6 / (RUNS * repeats) as f64,
    );
    let audit = obs.audit.as_ref().map(|a| a.stats());
    let threats = obs.threats.as_ref().map(|t| t.stats());
    println!(
        "per run, {backend}: median on/off over {repeats} repeats {:.4} ({:+.2}%); audit lines {}, dropped {}; detector signals {}, dropped {}",
        ratios[ratios.len() / 2],
        (ratios[ratios.len() / 2] - 1.0) * 100.0,
        audit.as_ref().map_or(0, |s| s.written),
        audit.as_ref().map_or(0, |s| s.dropped_queue_full),
        threats.map_or(0, |s| s.signals),
        threats.map_or(0, |s| s.dropped),
    );
    drop((off, on));
    obs.shutdown(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, bench_fake, bench_native);

fn main() {
    if std::env::var("VANA_BENCH_PER_RUN_ONLY").is_ok_and(|v| v == "1") {
        per_run(native_enabled());
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (criterion then runs each
    // benchmark once as a test, and the A/B loop is skipped).
    let invocation = Invocation::from_args(&args);
    if std::env::var("VANA_BENCH_AB_ONLY").map_or(true, |v| v != "1") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if !invocation.runs_extras() {
        return;
    }
    interleaved(
        "fake (audit + metrics + detector)",
        31,
        "fake",
        "print(1)",
        false,
        Which::All,
    );
    interleaved(
        "fake (audit only)",
        31,
        "fake",
        "print(1)",
        false,
        Which::Audit,
    );
    interleaved(
        "fake (metrics only)",
        31,
        "fake",
        "print(1)",
        false,
        Which::Metrics,
    );
    interleaved(
        "fake (detector only)",
        31,
        "fake",
        "print(1)",
        false,
        Which::Threats,
    );
    if native_enabled() {
        interleaved(
            "native (audit + metrics + detector)",
            9,
            "bash",
            "true",
            true,
            Which::All,
        );
    }
    per_run(false);
    if native_enabled() {
        per_run(true);
    }
}
