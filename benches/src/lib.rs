//! Shared setup of the benchmarks in `benches/`: engines over the fake or the native backend,
//! with or without the monitors, and a driver that pushes a batch of runs through one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vana_sandbox_core::fake::{default_script, FakeExecutor, FakeLanguage, FakePolicy};
use vana_sandbox_core::{Engine, ExecutionRequest, Languages, Monitor, Status};
use vana_sandbox_monitor::alert::LogSink;
use vana_sandbox_monitor::audit::AuditLog;
use vana_sandbox_monitor::metrics::Metrics;
use vana_sandbox_monitor::threat::ThreatDetector;
use vana_sandbox_monitor::Observability;

/// The monitors of the "on" configuration: audit log, metrics (with the Prometheus exporter)
/// and the threat detector; kept so that their counters can be read after a run.
pub struct Monitors {
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The threat detector.
    pub threats: Arc<ThreatDetector>,
    dir: PathBuf,
}

impl Monitors {
    /// Starts the three, the audit log in a fresh directory under the temp dir.
    pub fn start(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vana-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let metrics = match Metrics::with_prometheus() {
            Ok(m) => m,
            Err(e) => panic!("metrics: {e}"),
        };
        let audit = match AuditLog::builder(&dir).metrics(metrics.clone()).start() {
            Ok(a) => a,
            Err(e) => panic!("audit log: {e}"),
        };
        let threats = match ThreatDetector::builder().metrics(metrics.clone()).start() {
            Ok(t) => t,
            Err(e) => panic!("threat detector: {e}"),
        };
        Self {
            audit,
            metrics,
            threats,
            dir,
        }
    }

    /// The three as engine monitors.
    pub fn list(&self) -> Vec<Arc<dyn Monitor>> {
        vec![
            self.audit.clone(),
            self.metrics.monitor(),
            self.threats.clone(),
        ]
    }
}

impl Drop for Monitors {
    fn drop(&mut self) {
        self.audit.shutdown(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An engine over the in-memory backend (isolates what the engine and monitors cost).
pub fn fake_engine(monitors: &[Arc<dyn Monitor>]) -> Engine {
    let mut b = Engine::builder()
        .executor(Arc::new(FakeExecutor::new(default_script)))
        .policy(Arc::new(FakePolicy::default()))
        .languages(Languages::new().with(Arc::new(FakeLanguage::interpreted())))
        .max_concurrency(2)
        .max_queue(100_000);
    for m in monitors {
        b = b.monitor(m.clone());
    }
    match b.build() {
        Ok(e) => e,
        Err(e) => panic!("engine: {e}"),
    }
}

/// An engine over the native backend with every installed language (needs root).
pub fn native_engine(monitors: &[Arc<dyn Monitor>]) -> Engine {
    let executor = match vana_sandbox::NativeExecutor::new() {
        Ok(x) => x,
        Err(e) => panic!("native backend: {e}"),
    };
    let mut b = Engine::builder()
        .executor(Arc::new(executor))
        .policy(Arc::new(vana_sandbox::PolicyConfig::default()))
        .languages(vana_sandbox::lang::installed())
        .max_concurrency(2)
        .max_queue(100_000);
    for m in monitors {
        b = b.monitor(m.clone());
    }
    match b.build() {
        Ok(e) => e,
        Err(e) => panic!("engine: {e}"),
    }
}

/// Which isolation layers a native engine of [`layered_engine`] turns on (each `true` is the
/// default configuration).
#[derive(Debug, Clone, Copy)]
pub struct Layers {
    /// The seccomp filter.
    pub seccomp: bool,
    /// The Landlock ruleset.
    pub landlock: bool,
    /// The language guards (Python audit hook, Node permissions).
    pub guard: bool,
}

impl Layers {
    /// Every layer on.
    pub const ALL: Layers = Layers {
        seccomp: true,
        landlock: true,
        guard: true,
    };
    /// The Foundation configuration: namespaces, cgroups and identity only.
    pub const NONE: Layers = Layers {
        seccomp: false,
        landlock: false,
        guard: false,
    };
}

/// A native engine (needs root) running one request at a time, with `layers` on and `pool_size`
/// sandboxes prepared ahead per shape: the engines the overhead benchmarks compare.
pub fn layered_engine(layers: Layers, pool_size: usize) -> Engine {
    let config = vana_sandbox::NativeConfig {
        seccomp: layers.seccomp,
        landlock: layers.landlock,
        pool_size,
        ..vana_sandbox::NativeConfig::default()
    };
    let mut policy = vana_sandbox::PolicyConfig::default();
    policy.guards.python_audit = layers.guard;
    policy.guards.node_permissions = layers.guard;
    let executor = match vana_sandbox::NativeExecutor::with_config(config) {
        Ok(x) => x,
        Err(e) => panic!("the native backend (needs root): {e}"),
    };
    match Engine::builder()
        .executor(Arc::new(executor))
        .policy(Arc::new(policy))
        .languages(vana_sandbox::lang::installed())
        .max_concurrency(1)
        .build()
    {
        Ok(e) => e,
        Err(e) => panic!("engine: {e}"),
    }
}

/// Runs `n` copies of `(language, code)` through `engine`, two at a time (the engine's
/// concurrency), and returns how long the batch took. Every run must succeed.
pub fn batch(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    n: usize,
    language: &str,
    code: &str,
) -> Duration {
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let e = engine.clone();
            let req = ExecutionRequest::new(language, code);
            tasks.push(tokio::spawn(async move { e.execute(req).await }));
        }
        for t in tasks {
            match t.await {
                Ok(Ok(r)) if r.status == Status::Success => {}
                other => panic!("a benchmark run failed: {other:?}"),
            }
        }
    });
    t.elapsed()
}

/// A runtime like the CLI's: two worker threads.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    }
}

/// Everything on, the way a host turns it on through the facade: audit log (in a fresh
/// directory), metrics with the Prometheus exporter, the threat detector, and the alerter with
/// a log sink. Returns the bundle and its directory (remove it after [`Observability::shutdown`]).
pub fn full_observability(tag: &str) -> (Observability, PathBuf) {
    let dir = std::env::temp_dir().join(format!("vana-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let metrics = match Metrics::with_prometheus() {
        Ok(m) => m,
        Err(e) => panic!("metrics: {e}"),
    };
    let obs = Observability::builder()
        .metrics(metrics)
        .audit_log(&dir)
        .threat_detection()
        .alert_sink(Arc::new(LogSink))
        .start();
    match obs {
        Ok(o) => (o, dir),
        Err(e) => panic!("observability: {e}"),
    }
}

/// An engine built by the facade (`Sandbox::builder`, two runs at once, no compile cache) over
/// the native backend, or over the in-memory one with `fake`, with `obs` when given.
pub fn facade_engine(
    rt: &tokio::runtime::Runtime,
    fake: bool,
    obs: Option<&Observability>,
) -> Engine {
    let mut b = vana_sandbox::Sandbox::builder()
        .compile_cache(None)
        .max_concurrency(2)
        .max_queue(100_000);
    if fake {
        b = b.executor(Arc::new(FakeExecutor::new(default_script)));
    }
    if let Some(o) = obs {
        b = b.observability(o.clone());
    }
    match rt.block_on(b.build()) {
        Ok(e) => e,
        Err(e) => panic!("engine: {e}"),
    }
}

/// Latency of each of `n` runs of `(language, code)` through `off` and `on`, interleaved one by
/// one (off, on, on, off, …) so that both see the same machine: the pairs, in order.
pub fn interleaved_latencies(
    rt: &tokio::runtime::Runtime,
    off: &Engine,
    on: &Engine,
    n: usize,
    language: &str,
    code: &str,
) -> Vec<(Duration, Duration)> {
    let one = |engine: &Engine| {
        let t = Instant::now();
        match rt.block_on(engine.execute(ExecutionRequest::new(language, code))) {
            Ok(r) if r.status == Status::Success => t.elapsed(),
            other => panic!("a benchmark run failed: {other:?}"),
        }
    };
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let a = one(off);
                (a, one(on))
            } else {
                let b = one(on);
                (one(off), b)
            }
        })
        .collect()
}

/// The `q` quantile of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU time the monitors' own threads (`vana-audit`, `vana-threat`, `vana-alerts`, webhooks)
/// of this process have used so far, from `/proc/self/task/*/schedstat` (nanoseconds on a CPU).
pub fn monitor_threads_cpu() -> Duration {
    let mut total = 0u64;
    for e in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !["vana-audit", "vana-threat", "vana-alerts", "vana-webhook"]
            .iter()
            .any(|n| comm.trim_end().starts_with(n))
        {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
}

/// How a criterion bench binary was invoked, for the hand-written parts some benches run after
/// criterion's groups (comparisons that need one run at a time, not sample means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// `--list` (`cargo bench -- --list`, `cargo test --benches -- --list`): name the benches,
    /// measure nothing.
    List,
    /// Each benchmark once as a test (`cargo test --benches`, `cargo bench -- --test`), or a
    /// profiling run: the extra parts are skipped.
    Test,
    /// `cargo bench`; `filtered` when a name filter picks some benchmarks (the extra parts then
    /// run only if asked for by name elsewhere).
    Bench {
        /// A positional filter was given.
        filtered: bool,
    },
}

impl Invocation {
    /// Reads criterion's command line (`std::env::args`, without the program).
    pub fn from_args(args: &[String]) -> Self {
        // Criterion's options that take a value: the value is not a filter.
        const WITH_VALUE: &[&str] = &[
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--profile-time",
            "--plotting-backend",
            "--output-format",
            "-c",
            "--color",
            "--format",
        ];
        let mut bench = false;
        let mut test = false;
        let mut filtered = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--list" => return Self::List,
                "--bench" => bench = true,
                "--test" | "--profile-time" => test = true,
                _ if WITH_VALUE.contains(&a.as_str()) => {
                    it.next();
                }
                _ if a.starts_with('-') => {}
                _ => filtered = true,
            }
        }
        if bench && !test {
            Self::Bench { filtered }
        } else {
            Self::Test
        }
    }

    /// Whether the hand-written parts after criterion's groups should run: a full, unfiltered
    /// `cargo bench`.
    pub fn runs_extras(self) -> bool {
        self == Self::Bench { filtered: false }
    }
}

#[cfg(test)]
mod tests {
    use super::Invocation;

    fn of(args: &[&str]) -> Invocation {
        Invocation::from_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn criterion_command_lines_are_read_as_cargo_passes_them() {
        assert_eq!(of(&[]), Invocation::Test); // cargo test --benches
        assert_eq!(of(&["--bench"]), Invocation::Bench { filtered: false });
        assert_eq!(of(&["--bench", "--list"]), Invocation::List);
        assert_eq!(of(&["--bench", "--test"]), Invocation::Test);
        assert_eq!(of(&["--bench", "--profile-time", "5"]), Invocation::Test);
        assert_eq!(
            of(&["--bench", "shell_true"]),
            Invocation::Bench { filtered: true }
        );
        assert_eq!(
            of(&["--bench", "--save-baseline", "main", "--sample-size", "10"]),
            Invocation::Bench { filtered: false }
        );
        assert!(of(&["--bench", "-v", "--noplot"]).runs_extras());
    }
}
