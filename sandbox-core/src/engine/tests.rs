//! The engine against the fake backend: no root, no kernel feature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::*;
use crate::capabilities::{BackendKind, Layer, LayerName};
use crate::compile_cache::{CacheScope, DirCompileCache};
use crate::events::SecurityEventKind;
use crate::fake::{default_script, Call, FakeExecutor, FakeLanguage, FakePolicy};
use crate::limits::LimitKind;
use crate::outcome::{Exit, ProcessOutcome, Stop};
use crate::request::LimitsRequest;
use crate::result::Status;

fn languages() -> Languages {
    Languages::new()
        .with(Arc::new(FakeLanguage::interpreted()))
        .with(Arc::new(FakeLanguage::compiled()))
}

fn engine(executor: FakeExecutor, policy: FakePolicy) -> Engine {
    Engine::builder()
        .executor(Arc::new(executor))
        .policy(Arc::new(policy))
        .languages(languages())
        .max_concurrency(1)
        .max_queue(1)
        .build()
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Records the events a monitor sees, as short names.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Monitor for Recorder {
    fn on_event(&self, event: &Event<'_>) {
        let name = match event {
            Event::Queued { .. } => "queued".to_string(),
            Event::Started { .. } => "started".to_string(),
            Event::PhaseFinished { phase, status, .. } => format!("{phase}:{status}"),
            Event::LimitHit { limit, .. } => format!("limit:{limit}"),
            Event::Security { event, .. } => format!("security:{}", event.kind),
            Event::Finished { result, .. } => format!("finished:{}", result.status),
            Event::Ready { .. } => "ready".to_string(),
            Event::CompileCache { hit, .. } => {
                format!("cache:{}", if *hit { "hit" } else { "miss" })
            }
            Event::QueueFull { .. } => "queue_full".to_string(),
            Event::Cancelled { .. } => "cancelled".to_string(),
            Event::SessionOpened { .. } => "session_opened".to_string(),
            Event::Network { .. } => "network".to_string(),
            Event::SessionClosed { reason, .. } => format!("session_closed:{}", reason.as_str()),
        };
        self.0.lock().unwrap().push(name);
    }
}

#[test]
fn a_run_goes_through_stage_run_collect_destroy() {
    let exec = FakeExecutor::new(default_script);
    let calls = exec.calls();
    let e = engine(exec, FakePolicy::default());
    let r = rt().block_on(e.run("fake", "hello\n")).unwrap();
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert_eq!(r.output, "hello\n");
    assert_eq!(r.backend, Some(BackendKind::Fake));
    assert_eq!(r.policy_fingerprint.as_deref(), Some("sha256:fake"));
    let calls = calls.all();
    assert!(matches!(calls[0], Call::Create { .. }));
    assert_eq!(calls[1], Call::PutFiles(vec!["main.fake".into()]));
    assert_eq!(
        calls[2],
        Call::Run(vec!["/bin/fake".into(), "/workspace/main.fake".into()])
    );
    assert_eq!(calls[3], Call::Destroy);
    assert_eq!(calls.len(), 4);
}

#[test]
fn the_request_env_reaches_the_program_but_never_the_compiler() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let exec = FakeExecutor::new(move |p, files, stdin| {
        s.lock().unwrap().push((p.argv[0].clone(), p.env.clone()));
        default_script(p, files, stdin)
    });
    let e = engine(exec, FakePolicy::default());
    let mut req = ExecutionRequest::new("fakec", "compile!");
    req.env
        .insert("GOFLAGS".into(), "-ldflags=-X=main.x=pwned".into());
    let r = rt().block_on(e.execute(req)).unwrap();
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let seen = seen.lock().unwrap();
    let compiler = &seen[0];
    assert_eq!(compiler.0, "/bin/fakecc");
    assert!(!compiler.1.iter().any(|(k, _)| k == "GOFLAGS"));
    assert!(compiler.1.contains(&("FAKECC".into(), "1".into())));
    let program = &seen[1];
    assert!(program
        .1
        .contains(&("GOFLAGS".into(), "-ldflags=-X=main.x=pwned".into())));
}

#[test]
fn a_full_queue_is_an_immediate_error() {
    let rt = rt();
    let gate = Arc::new(Semaphore::new(0));
    let e = engine(
        FakeExecutor::new(default_script).with_gate(gate.clone()),
        FakePolicy::default(),
    );
    rt.block_on(async {
        let running = tokio::spawn({
            let e = e.clone();
            async move { e.run("fake", "a").await }
        });
        while e.running() < 1 {
            tokio::task::yield_now().await;
        }
        let queued = tokio::spawn({
            let e = e.clone();
            async move { e.run("fake", "b").await }
        });
        while e.queued() < 1 {
            tokio::task::yield_now().await;
        }
        let full = e.run("fake", "c").await;
        assert!(
            matches!(full, Err(EngineError::QueueFull { max_queue: 1 })),
            "{full:?}"
        );
        gate.add_permits(2);
        assert_eq!(running.await.unwrap().unwrap().output, "a");
        assert_eq!(queued.await.unwrap().unwrap().output, "b");
    });
}

#[test]
fn cancelling_a_run_frees_its_slot_and_drops_its_instance() {
    let rt = rt();
    let gate = Arc::new(Semaphore::new(0));
    let exec = FakeExecutor::new(default_script).with_gate(gate.clone());
    let calls = exec.calls();
    let e = engine(exec, FakePolicy::default());
    rt.block_on(async {
        let task = tokio::spawn({
            let e = e.clone();
            async move { e.run("fake", "never").await }
        });
        while e.running() < 1 {
            tokio::task::yield_now().await;
        }
        task.abort();
        assert!(task.await.is_err());
        assert_eq!(e.running(), 0, "the slot was not freed");
        assert!(calls.all().contains(&Call::Dropped), "{:?}", calls.all());
        gate.add_permits(1);
        let r = tokio::time::timeout(Duration::from_secs(5), e.run("fake", "next"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.output, "next");
    });
}

#[test]
fn the_compile_cache_misses_then_hits_and_scopes_by_tenant() {
    let dir = std::env::temp_dir().join(format!("vana-engine-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exec = FakeExecutor::new(default_script);
    let calls = exec.calls();
    let policy = FakePolicy {
        cache_scope: CacheScope::Tenant,
        ..FakePolicy::default()
    };
    let e = Engine::builder()
        .executor(Arc::new(exec))
        .policy(Arc::new(policy))
        .languages(languages())
        .compile_cache(Arc::new(DirCompileCache::new(&dir, 1 << 20).unwrap()))
        .build()
        .unwrap();
    let rt = rt();
    let compiles = || {
        calls
            .runs()
            .iter()
            .filter(|a| a[0] == "/bin/fakecc")
            .count()
    };
    let run = |tenant: &str, args: &[&str]| {
        let mut req = ExecutionRequest::new("fakec", "compile!");
        req.args = args.iter().map(|s| s.to_string()).collect();
        rt.block_on(e.execute_as(tenant, req)).unwrap()
    };
    let first = run("a", &[]);
    assert_eq!(first.status, Status::Success, "{first:#?}");
    assert!(!first.compile.as_ref().unwrap().cached);
    assert_eq!(compiles(), 1);
    let second = run("a", &["x"]);
    assert_eq!(second.output, "compiled x\n");
    assert!(second.compile.as_ref().unwrap().cached);
    assert_eq!(compiles(), 1, "a hit must not run the compiler");
    let other = run("b", &[]);
    assert!(!other.compile.as_ref().unwrap().cached);
    assert_eq!(compiles(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_compile_error_never_runs_the_program() {
    let exec = FakeExecutor::new(default_script);
    let calls = exec.calls();
    let e = engine(exec, FakePolicy::default());
    let r = rt().block_on(e.run("fakec", "error here")).unwrap();
    assert_eq!(r.status, Status::CompileError, "{r:#?}");
    assert_eq!(r.compile.as_ref().map(|c| c.status), Some(Status::Error));
    assert!(r.error.as_deref().unwrap().contains("expected compile!"));
    assert!(!calls.runs().iter().any(|a| a[0] == "/workspace/main"));
    assert_eq!(calls.all().last(), Some(&Call::Destroy));
}

#[test]
fn a_failed_cleanup_is_reported_not_hidden() {
    let e = engine(
        FakeExecutor::new(default_script).failing_destroy(),
        FakePolicy::default(),
    );
    let r = rt().block_on(e.run("fake", "x")).unwrap();
    assert_eq!(r.status, Status::Success);
    assert!(r
        .security_events
        .iter()
        .any(|ev| ev.kind == SecurityEventKind::CleanupFailed));
}

#[test]
fn rejections_happen_before_anything_is_created() {
    let exec = FakeExecutor::new(default_script);
    let calls = exec.calls();
    let e = engine(exec, FakePolicy::default());
    let rt = rt();
    let mut req = ExecutionRequest::new("fake", "x");
    req.limits = Some(LimitsRequest {
        memory_mb: Some(4096),
        ..Default::default()
    });
    let r = rt.block_on(e.execute(req)).unwrap();
    assert_eq!(r.status, Status::Rejected);
    assert!(r
        .error
        .as_deref()
        .unwrap()
        .contains("limits.memory_mb 4096 exceeds"));
    assert_eq!(r.policy_fingerprint.as_deref(), Some("sha256:fake"));
    assert_eq!(r.backend, None);
    let mut req = ExecutionRequest::new("fake", "x");
    req.timeout = Some(-5.0);
    let r = rt.block_on(e.execute(req)).unwrap();
    assert_eq!(r.status, Status::Rejected);
    assert!(
        r.error.as_deref().unwrap().contains("timeout must be"),
        "{r:?}"
    );
    let r = rt.block_on(e.run("cobol", "x")).unwrap();
    assert_eq!(r.status, Status::Rejected);
    assert!(calls.all().is_empty(), "{:?}", calls.all());
}

#[test]
fn a_missing_toolchain_or_layer_is_a_sandbox_error() {
    let e = Engine::builder()
        .executor(Arc::new(FakeExecutor::new(default_script)))
        .policy(Arc::new(FakePolicy::default()))
        .languages(Languages::new().with(Arc::new(FakeLanguage::missing())))
        .build()
        .unwrap();
    let r = rt().block_on(e.run("fake", "x")).unwrap();
    assert_eq!(r.status, Status::SandboxError);
    assert!(r
        .error
        .as_deref()
        .unwrap()
        .contains("fake toolchain not found"));

    let exec = FakeExecutor::new(default_script).with_layers(vec![Layer::new(
        LayerName::Seccomp,
        false,
        "no seccomp here",
    )]);
    let calls = exec.calls();
    let policy = FakePolicy {
        require: vec![LayerName::Seccomp],
        ..FakePolicy::default()
    };
    let e = engine(exec, policy);
    let r = rt().block_on(e.run("fake", "x")).unwrap();
    assert_eq!(r.status, Status::SandboxError);
    assert!(r
        .error
        .as_deref()
        .unwrap()
        .contains("required isolation layer `seccomp` is not available: no seccomp here"));
    assert!(
        calls.all().is_empty(),
        "fails closed before creating anything"
    );
}

#[test]
fn monitors_see_every_step_in_order() {
    let rec = Arc::new(Recorder::default());
    let exec = FakeExecutor::new(|p, files, stdin| {
        if p.argv[0] == "/workspace/main" {
            return Ok(ProcessOutcome {
                exit: Exit::Signal(9),
                stopped: Some(Stop::Timeout),
                ..Default::default()
            });
        }
        default_script(p, files, stdin)
    });
    let e = Engine::builder()
        .executor(Arc::new(exec))
        .policy(Arc::new(FakePolicy::default()))
        .languages(languages())
        .monitor(rec.clone())
        .build()
        .unwrap();
    let r = rt().block_on(e.run("fakec", "compile!")).unwrap();
    assert_eq!(r.status, Status::Timeout);
    assert!(r.error.as_deref().unwrap().contains("timed out after 30 s"));
    assert_eq!(
        *rec.0.lock().unwrap(),
        [
            "started",
            "ready",
            "compile:success",
            "run:timeout",
            &format!("limit:{}", LimitKind::Timeout),
            "finished:timeout"
        ]
    );
}

#[test]
fn the_instance_is_sized_for_the_compiler_too() {
    let exec = FakeExecutor::new(default_script);
    let calls = exec.calls();
    let e = engine(exec, FakePolicy::default());
    let mut req = ExecutionRequest::new("fakec", "compile!");
    req.limits = Some(LimitsRequest {
        memory_mb: Some(64),
        ..Default::default()
    });
    rt().block_on(e.execute(req)).unwrap();
    let Call::Create { limits, .. } = &calls.all()[0] else {
        panic!("no create")
    };
    assert_eq!(limits.memory, crate::limits::Bytes::mib(1024));
    assert_eq!(limits.processes, 128);
}

/// Keeps what the monitoring crate relies on from each event: tenant, code, load, timings.
#[derive(Default)]
struct Details(Mutex<Vec<String>>);

impl Monitor for Details {
    fn on_event(&self, event: &Event<'_>) {
        let line = match event {
            Event::Queued { load, .. } => format!("queued q={}", load.queued),
            Event::Started {
                tenant,
                request,
                spec,
                load,
                ..
            } => format!(
                "started tenant={} code={} fp={} running={}/{}",
                tenant.unwrap_or("-"),
                request.code,
                spec.policy_fingerprint,
                load.running,
                load.max_concurrency
            ),
            Event::Ready { .. } => "ready".into(),
            Event::CompileCache { hit, .. } => format!("cache hit={hit}"),
            Event::Finished {
                result,
                tenant,
                request,
                load,
                elapsed,
            } => {
                assert!(*elapsed > Duration::ZERO);
                format!(
                    "finished {} tenant={} code={} running={}",
                    result.status,
                    tenant.unwrap_or("-"),
                    request.code,
                    load.running
                )
            }
            Event::QueueFull { tenant, load, .. } => {
                format!(
                    "queue_full tenant={} q={}",
                    tenant.unwrap_or("-"),
                    load.queued
                )
            }
            Event::Cancelled { tenant, .. } => {
                format!("cancelled tenant={}", tenant.unwrap_or("-"))
            }
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

#[test]
fn events_carry_tenant_request_load_cache_and_cancellation() {
    let dir = std::env::temp_dir().join(format!("vana-engine-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rec = Arc::new(Details::default());
    let gate = Arc::new(Semaphore::new(0));
    let e = Engine::builder()
        .executor(Arc::new(
            FakeExecutor::new(default_script).with_gate(gate.clone()),
        ))
        .policy(Arc::new(FakePolicy::default()))
        .languages(languages())
        .compile_cache(Arc::new(DirCompileCache::new(&dir, 1 << 20).unwrap()))
        .monitor(rec.clone())
        .max_concurrency(1)
        .max_queue(1)
        .build()
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        gate.add_permits(100);
        let r = e
            .execute_as("acme", ExecutionRequest::new("fakec", "compile!"))
            .await;
        assert_eq!(r.unwrap().status, Status::Success);
        let r = e
            .execute_as("acme", ExecutionRequest::new("fakec", "compile!"))
            .await;
        assert!(r.unwrap().compile.unwrap().cached);
        let r = e
            .execute_as("acme", ExecutionRequest::new("cobol", "x"))
            .await;
        assert_eq!(r.unwrap().status, Status::Rejected);
        gate.forget_permits(100);

        // One running (held at the gate), one queued, one refused, then both cancelled.
        let running = tokio::spawn({
            let e = e.clone();
            async move {
                e.execute_as("acme", ExecutionRequest::new("fake", "held"))
                    .await
            }
        });
        while e.running() < 1 {
            tokio::task::yield_now().await;
        }
        let queued = tokio::spawn({
            let e = e.clone();
            async move {
                e.execute_as("beta", ExecutionRequest::new("fake", "waits"))
                    .await
            }
        });
        while e.queued() < 1 {
            tokio::task::yield_now().await;
        }
        let full = e
            .execute_as("gamma", ExecutionRequest::new("fake", "refused"))
            .await;
        assert!(matches!(full, Err(EngineError::QueueFull { .. })));
        queued.abort();
        assert!(queued.await.is_err());
        running.abort();
        assert!(running.await.is_err());
    });
    let lines = rec.0.lock().unwrap().clone();
    assert_eq!(
        lines,
        [
            "started tenant=acme code=compile! fp=sha256:fake running=1/1",
            "ready",
            "cache hit=false",
            "finished success tenant=acme code=compile! running=0",
            "started tenant=acme code=compile! fp=sha256:fake running=1/1",
            "ready",
            "cache hit=true",
            "finished success tenant=acme code=compile! running=0",
            "finished rejected tenant=acme code=x running=0",
            "started tenant=acme code=held fp=sha256:fake running=1/1",
            "ready",
            "queued q=1",
            "queue_full tenant=gamma q=1",
            "cancelled tenant=beta",
            "cancelled tenant=acme",
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The packages step against a provider double.
mod packages_step {
    use super::*;
    use crate::fake::CallLog;
    use crate::packages::{
        InstalledPackage, PackageCacheStatus, PackageError, PackageProvider, PackageRequest,
        PackageRules, PackagesReport, PreparedPackages, SessionPackages,
    };
    use crate::spec::{Mount, MountKind};

    /// Records, when dropped, whether the instance was destroyed already.
    struct Hold(CallLog, Arc<Mutex<Option<bool>>>);

    impl Drop for Hold {
        fn drop(&mut self) {
            *self.1.lock().unwrap() = Some(self.0.all().contains(&Call::Destroy));
        }
    }

    type Failure = fn() -> PackageError;

    struct Provider {
        seen: Mutex<Vec<String>>,
        installs: Vec<&'static str>,
        fail: Option<Failure>,
        log: CallLog,
        released: Arc<Mutex<Option<bool>>>,
    }

    impl Provider {
        fn new(log: CallLog, installs: Vec<&'static str>, fail: Option<Failure>) -> Arc<Self> {
            Arc::new(Self {
                seen: Mutex::new(Vec::new()),
                installs,
                fail,
                log,
                released: Arc::new(Mutex::new(None)),
            })
        }
    }

    #[async_trait::async_trait]
    impl PackageProvider for Provider {
        async fn prepare(&self, r: &PackageRequest<'_>) -> Result<PreparedPackages, PackageError> {
            let reqs: Vec<&str> = r
                .list
                .specs
                .iter()
                .map(|s| s.requirement.as_str())
                .collect();
            self.seen.lock().unwrap().push(format!(
                "{} {} {} {}",
                r.language,
                r.index,
                r.target.interpreter.abi,
                reqs.join(" ")
            ));
            if let Some(f) = self.fail {
                return Err(f());
            }
            let eco = r.list.ecosystem;
            Ok(PreparedPackages {
                host_dir: "/cache/sets/x/tree".into(),
                sandbox_dir: eco.sandbox_dir(),
                env: vec![eco.env()],
                report: PackagesReport {
                    ecosystem: eco,
                    index: r.index.into(),
                    installed: self
                        .installs
                        .iter()
                        .map(|n| InstalledPackage {
                            name: n.to_string(),
                            version: "1.0".into(),
                        })
                        .collect(),
                    cached: false,
                    size_bytes: 1000,
                    prepare_time: 0.0,
                },
                hold: Some(Box::new(Hold(self.log.clone(), self.released.clone()))),
            })
        }

        fn session(&self, _: &str) -> Result<Box<dyn SessionPackages>, PackageError> {
            Err(PackageError::Refused("no sessions here".into()))
        }

        fn status(&self) -> PackageCacheStatus {
            PackageCacheStatus {
                dir: "/cache".into(),
                bytes: 0,
                max_bytes: 0,
                entries: 0,
                installers: Vec::new(),
            }
        }
    }

    fn with_provider(exec: FakeExecutor, policy: FakePolicy, p: Arc<Provider>) -> Engine {
        Engine::builder()
            .executor(Arc::new(exec))
            .policy(Arc::new(policy))
            .languages(languages())
            .packages(p)
            .build()
            .unwrap()
    }

    fn asking(packages: &[&str]) -> ExecutionRequest {
        let mut r = ExecutionRequest::new("fake", "x");
        r.packages = packages.iter().map(|s| s.to_string()).collect();
        r
    }

    #[test]
    fn packages_are_prepared_first_mounted_read_only_and_reported() {
        let exec = FakeExecutor::new(|p, files, stdin| {
            let path = p.env.iter().find(|(k, _)| k == "PYTHONPATH");
            assert_eq!(
                path.map(|(_, v)| v.as_str()),
                Some("/opt/vana-packages/python"),
                "{:?}",
                p.env
            );
            default_script(p, files, stdin)
        });
        let log = exec.calls();
        let p = Provider::new(log.clone(), vec!["requests", "urllib3"], None);
        let e = with_provider(exec, FakePolicy::default(), p.clone());
        let r = rt()
            .block_on(e.execute(asking(&["Requests>=2", "numpy"])))
            .unwrap();
        assert_eq!(r.status, Status::Success, "{r:#?}");
        let report = r.packages.as_ref().expect("packages reported");
        assert_eq!(report.installed.len(), 2);
        assert!(report.prepare_time >= 0.0);
        assert_eq!(
            *p.seen.lock().unwrap(),
            ["fake https://pypi.invalid/simple cp311 requests>=2 numpy"]
        );
        let Call::Create { mounts, .. } = &log.all()[0] else {
            panic!("no create")
        };
        assert!(mounts.contains(&Mount {
            host: "/cache/sets/x/tree".into(),
            sandbox: "/opt/vana-packages/python".into(),
            kind: MountKind::Prepared,
        }));
        // The set was held until the instance was gone.
        assert_eq!(*p.released.lock().unwrap(), Some(true));
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["packages"]["installed"][0]["name"], "requests");
    }

    #[test]
    fn rules_refuse_what_is_asked_before_and_what_came_after() {
        let policy = || FakePolicy {
            packages: Some(PackageRules {
                index: "https://pypi.invalid/simple".into(),
                allow: Vec::new(),
                deny: vec!["evil-pkg".into()],
                max_bytes: crate::limits::Bytes(5000),
                max_count: 2,
            }),
            ..FakePolicy::default()
        };
        // Asked for: refused before anything is fetched.
        let exec = FakeExecutor::new(default_script);
        let log = exec.calls();
        let p = Provider::new(log.clone(), vec!["evil-pkg"], None);
        let e = with_provider(exec, policy(), p.clone());
        let r = rt().block_on(e.execute(asking(&["Evil_Pkg"]))).unwrap();
        assert_eq!(r.status, Status::Rejected);
        assert!(r
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("`evil-pkg` is denied"));
        assert!(p.seen.lock().unwrap().is_empty());
        assert!(log.all().is_empty(), "nothing may run");
        // Pulled in as a dependency, or too many: refused after preparing, before running.
        for (installs, why) in [
            (vec!["good", "evil-pkg"], "a dependency"),
            (vec!["a", "b", "c"], "at most 2"),
        ] {
            let exec = FakeExecutor::new(default_script);
            let log = exec.calls();
            let p = Provider::new(log.clone(), installs, None);
            let e = with_provider(exec, policy(), p);
            let r = rt().block_on(e.execute(asking(&["good"]))).unwrap();
            assert_eq!(r.status, Status::Rejected, "{r:#?}");
            assert!(
                r.error.as_deref().unwrap_or_default().contains(why),
                "{r:#?}"
            );
            assert!(log.all().is_empty(), "nothing may run");
        }
    }

    #[test]
    fn failures_are_rejections_or_sandbox_errors() {
        let run = |fail: Option<Failure>, req: ExecutionRequest, provider: bool| {
            let exec = FakeExecutor::new(default_script);
            let log = exec.calls();
            let e = if provider {
                with_provider(
                    exec,
                    FakePolicy::default(),
                    Provider::new(log, vec![], fail),
                )
            } else {
                engine(exec, FakePolicy::default())
            };
            rt().block_on(e.execute(req)).unwrap()
        };
        let refused: Failure = || PackageError::Refused("`docopt` has no wheel".into());
        let r = run(Some(refused), asking(&["docopt"]), true);
        assert_eq!(r.status, Status::Rejected);
        assert_eq!(r.error.as_deref(), Some("`docopt` has no wheel"));
        let down: Failure = || PackageError::Installer {
            tool: "pip".into(),
            detail: "the index could not be reached".into(),
        };
        let r = run(Some(down), asking(&["six"]), true);
        assert_eq!(r.status, Status::SandboxError);
        assert!(r.error.unwrap_or_default().contains("could not be reached"));
        let r = run(None, asking(&["six"]), false);
        assert_eq!(r.status, Status::Rejected);
        assert!(r.error.unwrap_or_default().contains("no package provider"));
        let mut compiled = asking(&["six"]);
        compiled.language = "fakec".into();
        let r = run(None, compiled, true);
        assert_eq!(r.status, Status::Rejected);
        let msg = r.error.unwrap_or_default();
        assert!(
            msg.contains("packages are not supported for fakec (languages with packages: fake)"),
            "{msg}"
        );
        let r = run(None, asking(&["https://evil.example/x.whl"]), true);
        assert_eq!(r.status, Status::Rejected);
        assert!(r.error.unwrap_or_default().contains("path or URL"));
    }

    /// A backend with an environment of its own probes its interpreter in one of its sandboxes:
    /// created without network, the probe run, the sandbox destroyed whatever the answer.
    #[test]
    fn a_probe_in_a_sandbox_answers_for_that_sandbox_and_cleans_up() {
        let answer = |stdout: &'static [u8], code: i32| {
            FakeExecutor::new(move |p, _, _| {
                assert_eq!(p.argv, ["/bin/fake"]);
                assert!(p.env.iter().any(|(k, _)| k == "PATH"));
                Ok(ProcessOutcome {
                    exit: Exit::Code(code),
                    stdout: stdout.to_vec(),
                    ..Default::default()
                })
            })
        };
        let lang = FakeLanguage::interpreted();
        let good = answer(
            br#"{"implementation":"cp","version":"3.11.2","abi":"cp311","platforms":["linux_x86_64"]}"#,
            0,
        );
        let log = good.calls();
        let t = rt().block_on(crate::packages::probe_in_instance(&good, &lang));
        let t = t.unwrap();
        assert_eq!(t.ecosystem, crate::Ecosystem::Pypi);
        assert_eq!(t.interpreter.abi, "cp311");
        assert_eq!(t.environment, good.environment_id("fake"));
        let calls = log.all();
        assert!(matches!(&calls[0], Call::Create { id, .. } if id.starts_with("probe-")));
        assert_eq!(calls.last(), Some(&Call::Destroy));
        // A failed probe, or one that answers with something an installer must not be given.
        for (stdout, code) in [
            (&b""[..], 1),
            (
                &br#"{"implementation":"cp","version":"3 --pre","abi":"x","platforms":["p"]}"#[..],
                0,
            ),
        ] {
            let bad = answer(stdout, code);
            let log = bad.calls();
            let r = rt().block_on(crate::packages::probe_in_instance(&bad, &lang));
            assert!(r.is_err(), "{r:?}");
            assert_eq!(log.all().last(), Some(&Call::Destroy));
        }
    }
}
