//! Observability through the facade (`Sandbox::builder`): the conveniences start and wire the
//! audit log, metrics and threat detector, the policy and the rules are recorded as
//! `config_loaded` lines, dropping the engine delivers the last findings and closes the log; a
//! host-held bundle (HMAC key) does the same; and after a scripted mix of real runs (native
//! backend) the metrics and the audit log hold exactly the expected counts.
//!
//! Egress decisions of the proxy and sessions reach the audit log and the metrics as the
//! engine's own events, from a real run and a real session with network access through the
//! proxy to a server on the host's 127.0.0.1.
//!
//! The tests on the in-memory backend run as any user; the scripted mix and the egress test need
//! root and fail loudly without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vana_sandbox::fake::{default_script, FakeExecutor};
use vana_sandbox::monitor::audit::{verify, AuditLine, AuditLog, AuditRecord, VerifyOptions};
use vana_sandbox::monitor::metrics::names;
use vana_sandbox::{
    ConfigKind, DirCompileCache, EngineError, ExecutionRequest, Finding, Metrics, Observability,
    PolicyConfig, RuleSet, Sandbox, Status,
};

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vana-obs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The log's files in `dir`, in order.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

/// Every record of the log in `dir`, in order.
fn records(dir: &Path) -> Vec<AuditRecord> {
    log_files(dir)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| AuditLine::parse(l).unwrap().record)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn count(records: &[AuditRecord], type_name: &str) -> usize {
    records
        .iter()
        .filter(|r| r.type_name() == type_name)
        .count()
}

fn config_lines(records: &[AuditRecord]) -> Vec<(ConfigKind, String, String)> {
    records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::ConfigLoaded {
                kind,
                source,
                fingerprint,
            } => Some((*kind, source.clone(), fingerprint.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_builder_conveniences_start_wire_and_close_the_observability() {
    let dir = TempDir::new("conveniences");
    let metrics = Metrics::new();
    let findings: Arc<Mutex<Vec<Finding>>> = Arc::default();
    let sink = findings.clone();
    let rt = rt();
    let engine = rt
        .block_on(
            Sandbox::builder()
                .executor(Arc::new(FakeExecutor::new(default_script)))
                .compile_cache(None)
                .policy_source("test:default")
                .audit_log(&dir.0)
                .metrics(metrics.clone())
                .on_finding(move |f| sink.lock().unwrap().push(f.clone()))
                .build(),
        )
        .unwrap();
    let run = |id: &str, code: &str| {
        let mut r = ExecutionRequest::new("python", code);
        r.id = Some(id.into());
        rt.block_on(engine.execute(r)).unwrap()
    };
    let cred = run("cred", "print(open('/etc/shadow').read())\n");
    let plain = run("plain", "print(1)\n");
    assert_eq!(
        (cred.status, plain.status),
        (Status::Success, Status::Success)
    );
    // Dropping the engine stops the detector after its last findings, then closes the log.
    drop(engine);

    let findings = findings.lock().unwrap().clone();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(
        (findings[0].rule.as_str(), findings[0].run_id.as_deref()),
        ("credential_paths", Some("cred"))
    );
    let s = metrics.snapshot();
    assert_eq!(s.counter(names::RUNS, &[("backend", "fake")]), 2);
    assert_eq!(
        s.counter(names::FINDINGS, &[("rule", "credential_paths")]),
        1
    );
    let files = log_files(&dir.0);
    let report = verify(&files, &VerifyOptions::default()).unwrap();
    assert!(report.is_ok() && report.closed, "{report:?}");
    let recs = records(&dir.0);
    assert_eq!(
        s.counter(names::AUDIT_RECORDS, &[]),
        recs.len() as u64,
        "every line is counted"
    );
    assert_eq!(
        config_lines(&recs),
        vec![
            (
                ConfigKind::ThreatRules,
                "builtin".to_string(),
                RuleSet::builtin().fingerprint().to_string()
            ),
            (
                ConfigKind::Policy,
                "test:default".to_string(),
                cred.policy_fingerprint.clone().unwrap()
            ),
        ]
    );
    assert_eq!(
        (
            count(&recs, "run_started"),
            count(&recs, "run_finished"),
            count(&recs, "finding")
        ),
        (2, 2, 1)
    );
    assert_eq!(recs.last().map(AuditRecord::type_name), Some("log_closed"));
}

#[test]
fn a_bundle_the_host_keeps_records_the_policy_under_its_key() {
    const KEY: &[u8] = b"an audit key of 32 bytes, really";
    let dir = TempDir::new("bundle");
    let obs = Observability::builder()
        .audit(AuditLog::builder(&dir.0).hmac_key(KEY))
        .metrics(Metrics::with_prometheus().unwrap())
        .threat_detection()
        .start()
        .unwrap();
    let rt = rt();
    let engine = rt
        .block_on(
            Sandbox::builder()
                .executor(Arc::new(FakeExecutor::new(default_script)))
                .compile_cache(None)
                .policy(PolicyConfig::preset("strict").unwrap())
                .policy_source("preset:strict")
                .observability(obs.clone())
                .build(),
        )
        .unwrap();
    let r = rt
        .block_on(engine.execute_as(
            "acme",
            ExecutionRequest::new("bash", "curl -s http://169.254.169.254/latest/meta-data/"),
        ))
        .unwrap();
    assert!(obs.shutdown(Duration::from_secs(10)));
    let text = obs.metrics.as_ref().unwrap().render_prometheus().unwrap();
    assert!(
        text.contains(
            "vana_sandbox_threat_findings_total{rule=\"cloud_metadata\",severity=\"high\",tenant=\"acme\"} 1"
        ),
        "{text}"
    );
    let files = log_files(&dir.0);
    let keyed = VerifyOptions {
        key: Some(KEY.to_vec()),
        allow_open: false,
    };
    let report = verify(&files, &keyed).unwrap();
    assert!(report.is_ok() && report.closed, "{report:?}");
    // Without the key the seals do not check.
    assert!(!verify(&files, &VerifyOptions::default()).unwrap().is_ok());
    let recs = records(&dir.0);
    let policy = config_lines(&recs)
        .into_iter()
        .find(|(k, ..)| *k == ConfigKind::Policy)
        .unwrap();
    assert_eq!(
        (policy.1.as_str(), Some(policy.2)),
        ("preset:strict", r.policy_fingerprint)
    );
    drop(engine);
}

#[test]
fn a_directory_another_process_writes_is_a_clear_error() {
    let dir = TempDir::new("in-use");
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys\nf = open(sys.argv[1], 'a')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()\n",
        ])
        .arg(dir.0.join(".audit.lock"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let rt = rt();
    let e = rt
        .block_on(
            Sandbox::builder()
                .executor(Arc::new(FakeExecutor::new(default_script)))
                .compile_cache(None)
                .audit_log(&dir.0)
                .build(),
        )
        .err()
        .expect("the directory is in use");
    assert!(
        matches!(e, vana_sandbox::Error::Observability(_))
            && e.to_string().contains("another process"),
        "{e}"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

/// What the results of the mix say, to compare the metrics with.
#[derive(Default)]
struct Tally {
    runs: BTreeMap<(String, String, String), u64>,
    security: BTreeMap<(String, String), u64>,
}

#[test]
fn exact_counts_after_a_scripted_mix_of_real_runs() {
    require_root();
    let _g = serial();
    let dir = TempDir::new("mix");
    let cache_dir = TempDir::new("mix-cache");
    let metrics = Metrics::with_prometheus().unwrap();
    let obs = Observability::builder()
        .metrics(metrics.clone())
        .audit_log(&dir.0)
        .threat_detection()
        .start()
        .unwrap();
    let rt = rt();
    // One slot and no queue: a second request while one runs is refused at once.
    let engine = rt
        .block_on(
            Sandbox::builder()
                .compile_cache(Some(Arc::new(
                    DirCompileCache::new(&cache_dir.0, 64 << 20).unwrap(),
                )))
                .max_concurrency(1)
                .max_queue(0)
                .observability(obs.clone())
                .build(),
        )
        .expect("native engine");
    let mut tally = Tally::default();
    let mut run = |language: &str, code: &str, edit: &dyn Fn(&mut ExecutionRequest)| {
        let mut r = ExecutionRequest::new(language, code);
        edit(&mut r);
        let res = rt.block_on(engine.execute_as("mix", r)).unwrap();
        let backend = res.backend.map_or("none", |b| b.as_str()).to_string();
        *tally
            .runs
            .entry((res.status.to_string(), res.language.clone(), backend))
            .or_default() += 1;
        for e in &res.security_events {
            let source = match e.source {
                vana_sandbox::Reporter::Sandbox => "sandbox",
                vana_sandbox::Reporter::Program => "program",
            };
            *tally
                .security
                .entry((e.kind.as_str().to_string(), source.to_string()))
                .or_default() += 1;
        }
        res
    };
    let none = |_: &mut ExecutionRequest| {};
    for i in 0..3 {
        let r = run("python", &format!("print({i})"), &none);
        assert_eq!(r.status, Status::Success, "{r:#?}");
    }
    assert_eq!(run("bash", "exit 3", &none).status, Status::Error);
    let r = run("python", "import time\ntime.sleep(30)\n", &|r| {
        r.timeout = Some(1.0)
    });
    assert_eq!(r.status, Status::Timeout);
    let r = run("python", attack::R_MEMORY_BOMB, &|r| {
        r.limits = limits(|l| l.memory_mb = Some(48))
    });
    assert_eq!(r.status, Status::MemoryLimit);
    let r = run(
        "python",
        &format!("{}\n{}", attack::PRELUDE, attack::K_32BIT_INT80),
        &none,
    );
    assert_eq!(r.status, Status::Killed);
    assert_eq!(
        run("cobol", "DISPLAY 'HI'.", &none).status,
        Status::Rejected
    );
    let r = run("python", "print(1)", &|r| {
        r.limits = limits(|l| l.memory_mb = Some(1 << 20))
    });
    assert_eq!(r.status, Status::Rejected);
    let go = "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"go\") }\n";
    for _ in 0..2 {
        let r = run("go", go, &none);
        assert_eq!(
            (r.status, r.output.as_str()),
            (Status::Success, "go\n"),
            "{r:#?}"
        );
    }
    // A request while the one slot is busy: refused at once (no queue).
    let busy = {
        let e = engine.clone();
        rt.spawn(async move {
            e.execute_as("mix", ExecutionRequest::new("bash", "sleep 1"))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.running() == 0 {
        assert!(Instant::now() < deadline, "the busy run never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let refused = rt.block_on(engine.execute_as("mix", ExecutionRequest::new("bash", "true")));
    assert!(
        matches!(refused, Err(EngineError::QueueFull { .. })),
        "{refused:?}"
    );
    let r = rt.block_on(busy).unwrap().unwrap();
    assert_eq!(r.status, Status::Success);
    *tally
        .runs
        .entry(("success".into(), "bash".into(), "native".into()))
        .or_default() += 1;
    // A run its caller gives up on once its sandbox is ready: cancelled.
    let ready_before = metrics
        .snapshot()
        .histogram(names::STARTUP, &[("backend", "native")])
        .map_or(0, |h| h.count);
    let doomed = {
        let e = engine.clone();
        let mut r = ExecutionRequest::new("bash", "sleep 30");
        r.timeout = Some(3.0);
        rt.spawn(async move { e.execute_as("mix", r).await })
    };
    while metrics
        .snapshot()
        .histogram(names::STARTUP, &[("backend", "native")])
        .map_or(0, |h| h.count)
        == ready_before
    {
        assert!(Instant::now() < deadline, "the doomed run never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    doomed.abort();
    assert!(rt.block_on(doomed).unwrap_err().is_cancelled());
    while engine.running() > 0 {
        assert!(Instant::now() < deadline, "the cancelled run kept its slot");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(obs.flush(Duration::from_secs(20)));

    // Admitted: 3 python + bash error + timeout + memory + killed + 2 go + busy + cancelled.
    const ADMITTED: u64 = 11;
    const FINISHED: u64 = 10;
    let s = metrics.snapshot();
    let want_runs: BTreeMap<(String, String, String), u64> = [
        (("success", "python", "native"), 3),
        (("error", "bash", "native"), 1),
        (("timeout", "python", "native"), 1),
        (("memory_limit", "python", "native"), 1),
        (("killed", "python", "native"), 1),
        (("rejected", "cobol", "none"), 1),
        (("rejected", "python", "none"), 1),
        (("success", "go", "native"), 2),
        (("success", "bash", "native"), 1),
    ]
    .into_iter()
    .map(|((a, b, c), n)| ((a.to_string(), b.to_string(), c.to_string()), n))
    .collect();
    assert_eq!(tally.runs, want_runs);
    for ((status, language, backend), n) in &want_runs {
        let labels = [
            ("status", status.as_str()),
            ("language", language.as_str()),
            ("backend", backend.as_str()),
        ];
        assert_eq!(s.counter(names::RUNS, &labels), *n, "{labels:?}");
    }
    assert_eq!(s.counter(names::RUNS, &[]), FINISHED + 2);
    let hist =
        |name: &str, labels: &[(&str, &str)]| s.histogram(name, labels).map_or(0, |h| h.count);
    assert_eq!(hist(names::STARTUP, &[("backend", "native")]), ADMITTED);
    assert_eq!(hist(names::QUEUE_WAIT, &[]), ADMITTED);
    assert_eq!(hist(names::PHASE_DURATION, &[("phase", "run")]), FINISHED);
    assert_eq!(hist(names::PHASE_DURATION, &[("phase", "compile")]), 1);
    assert_eq!(hist(names::RUN_DURATION, &[]), FINISHED);
    assert_eq!(hist(names::RUN_DURATION, &[("language", "go")]), 2);
    for (result, n) in [("miss", 1), ("hit", 1)] {
        assert_eq!(
            s.counter(
                names::COMPILE_CACHE,
                &[("language", "go"), ("result", result)]
            ),
            n
        );
    }
    for (limit, n) in [
        ("timeout", 1),
        ("memory", 1),
        ("output", 0),
        ("processes", 0),
    ] {
        assert_eq!(
            s.counter(names::LIMIT_HITS, &[("limit", limit)]),
            n,
            "{limit}"
        );
    }
    assert!(tally
        .security
        .contains_key(&("seccomp_kill".into(), "sandbox".into())));
    for ((kind, source), n) in &tally.security {
        assert_eq!(
            s.counter(
                names::SECURITY_EVENTS,
                &[("kind", kind.as_str()), ("source", source.as_str())]
            ),
            *n,
            "{kind} {source}"
        );
    }
    assert_eq!(
        s.counter(names::SECURITY_EVENTS, &[]),
        tally.security.values().sum::<u64>()
    );
    assert_eq!(s.counter(names::QUEUE_REJECTIONS, &[]), 1);
    assert_eq!(s.counter(names::CANCELLED, &[]), 1);
    assert_eq!(s.gauge(names::ACTIVE_RUNS, &[]), Some(0.0));
    assert_eq!(s.gauge(names::QUEUE_DEPTH, &[]), Some(0.0));
    assert_eq!(s.gauge(names::CONCURRENCY, &[]), Some(1.0));
    let findings = s.counter(names::FINDINGS, &[]);
    for (rule, n) in [
        ("seccomp_kill", 1),
        ("memory_exhaustion", 1),
        ("guard_native_code", 1),
    ] {
        assert_eq!(s.counter(names::FINDINGS, &[("rule", rule)]), n, "{rule}");
    }

    // The audit log says the same.
    assert!(obs.shutdown(Duration::from_secs(20)));
    let recs = records(&dir.0);
    let report = verify(&log_files(&dir.0), &VerifyOptions::default()).unwrap();
    assert!(report.is_ok() && report.closed, "{report:?}");
    let got: Vec<(&str, usize)> = [
        "run_started",
        "run_finished",
        "rejected",
        "queue_full",
        "cancelled",
        "limit_hit",
        "security",
        "finding",
        "config_loaded",
    ]
    .into_iter()
    .map(|t| (t, count(&recs, t)))
    .collect();
    let want: Vec<(&str, usize)> = vec![
        ("run_started", ADMITTED as usize),
        ("run_finished", FINISHED as usize),
        ("rejected", 2),
        ("queue_full", 1),
        ("cancelled", 1),
        ("limit_hit", 2),
        ("security", tally.security.values().sum::<u64>() as usize),
        ("finding", findings as usize),
        ("config_loaded", 2),
    ];
    assert_eq!(got, want);
    drop(engine);
    // The native backend lets a cancelled run's program go on in the background until it ends
    // or hits its time limit (3 s here) before it cleans up: wait for that.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !leftovers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_no_leftovers();
}

/// A plain HTTP server on the host's 127.0.0.1 that reads each request (and its body) and
/// answers `hello from <Host>`. Counts the requests it answered.
fn hello_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut host, mut length) = (String::new(), 0usize);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(h) = lower.strip_prefix("host:") {
                        host = h.trim().to_string();
                    } else if let Some(n) = lower.strip_prefix("content-length:") {
                        length = n.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let reply = format!("hello from {host}");
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    (port, hits)
}

/// Python: `fetch(url, data=None)` prints `status body` or `status reason` through the proxy.
const FETCH: &str = r#"
import urllib.request, urllib.error
def fetch(url, data=None):
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as r:
            print(r.status, r.read().decode(), flush=True)
    except urllib.error.HTTPError as e:
        print(e.code, e.headers.get("x-vana-proxy-reason"), flush=True)
"#;

/// A series' labels, as written in a test.
type Labels<'a> = &'a [(&'a str, &'a str)];

/// The samples of `name` in Prometheus text, each as its labels (sorted) and value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of the sample of `name` with exactly `labels` in Prometheus text.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples(text, name)
        .into_iter()
        .find(|(l, _)| *l == want)
        .map(|(_, v)| v)
}

#[test]
fn egress_decisions_and_sessions_reach_the_audit_log_and_the_metrics() {
    use vana_sandbox::proxy::{Decision, DenyReason, Method, StubResolver, Verdict};
    use vana_sandbox::{ProxyEgress, SessionEnd, SessionOptions};

    require_root();
    let _g = serial();
    let dir = TempDir::new("egress");
    let (port, hits) = hello_server();
    let local = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    // Names come from a stub (nothing asks a real resolver); the host's 127.0.0.1 is allowed
    // explicitly, for `allowed.test` only.
    let resolver = StubResolver::new()
        .answer("allowed.test", &[local])
        .answer("other.test", &[local]);
    let mut policy = PolicyConfig::default();
    policy.network.enabled = true;
    policy.network.allow = vec![format!("allowed.test:{port}"), "127.0.0.1/32".into()];
    let metrics = Metrics::with_prometheus().unwrap();
    let rt = rt();
    let engine = rt
        .block_on(
            Sandbox::builder()
                .policy(policy)
                .compile_cache(None)
                .egress(Arc::new(ProxyEgress::with_resolver(Arc::new(resolver))))
                .audit_log(&dir.0)
                .metrics(metrics.clone())
                .build(),
        )
        .expect("native engine");
    let hello = format!("hello from allowed.test:{port}");

    // A run: one allowed request (a POST with a 6-byte body) and one refused.
    let mut r = ExecutionRequest::new(
        "python",
        format!(
            "{FETCH}\nfetch('http://allowed.test:{port}/up', data=b'ping=1')\nfetch('http://other.test:{port}/')\n"
        ),
    );
    r.id = Some("egress-run".into());
    r.network_access = Some(true);
    let res = rt.block_on(engine.execute_as("acme", r)).unwrap();
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(
        res.output,
        format!("200 {hello}\n403 not_allowed\n"),
        "{res:#?}"
    );

    // A session with network access: two cells, one allowed request, closed by its owner.
    let session_id = rt.block_on(async {
        let s = engine
            .session_as(
                "acme",
                SessionOptions {
                    network_access: Some(true),
                    ..Default::default()
                },
            )
            .await
            .expect("session");
        let r = s.run_code("python", FETCH).await.unwrap();
        assert_eq!(r.status, Status::Success, "{r:#?}");
        let r = s
            .run_code("python", &format!("fetch('http://allowed.test:{port}/')"))
            .await
            .unwrap();
        assert_eq!(r.output, format!("200 {hello}\n"), "{r:#?}");
        let id = s.id().to_string();
        s.close().await.unwrap();
        id
    });
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Dropping the engine closes the audit log.
    drop(engine);
    drop(rt);

    // The audit log: intact, closed, and with every decision and the session.
    let files = log_files(&dir.0);
    let report = verify(&files, &VerifyOptions::default()).unwrap();
    assert!(report.is_ok() && report.closed, "{report:?}");
    let recs = records(&dir.0);
    let at = |pred: &dyn Fn(&AuditRecord) -> bool| -> Vec<usize> {
        recs.iter()
            .enumerate()
            .filter(|(_, r)| pred(r))
            .map(|(i, _)| i)
            .collect()
    };
    let network = |id: &str| -> Vec<(usize, &Decision, Option<&str>)> {
        recs.iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                AuditRecord::Network {
                    id: rid,
                    tenant,
                    decision,
                } if rid == id => Some((i, decision, tenant.as_deref())),
                _ => None,
            })
            .collect()
    };
    let run_net = network("egress-run");
    assert_eq!(run_net.len(), 2, "{recs:#?}");
    let (_, allowed, tenant) = run_net[0];
    assert_eq!(tenant, Some("acme"));
    assert_eq!(
        (
            allowed.host.as_str(),
            allowed.port,
            allowed.method,
            allowed.verdict
        ),
        ("allowed.test", port, Method::Post, Verdict::Allowed),
        "{allowed:#?}"
    );
    assert_eq!(
        allowed.address,
        Some(std::net::SocketAddr::new(local, port)),
        "the checked address it connected to"
    );
    assert_eq!(
        (allowed.bytes_up, allowed.bytes_down),
        (6, hello.len() as u64),
        "{allowed:#?}"
    );
    let (_, denied, _) = run_net[1];
    assert_eq!(
        (
            denied.host.as_str(),
            denied.port,
            denied.method,
            denied.verdict
        ),
        (
            "other.test",
            port,
            Method::Get,
            Verdict::Denied(DenyReason::NotAllowed)
        ),
        "{denied:#?}"
    );
    assert_eq!((denied.address, denied.bytes_down), (None, 0));
    // In the run's order: started, its decisions, finished.
    let started = at(&|r| matches!(r, AuditRecord::RunStarted { id, .. } if id == "egress-run"));
    let finished = at(&|r| matches!(r, AuditRecord::RunFinished { id, .. } if id == "egress-run"));
    assert_eq!((started.len(), finished.len()), (1, 1));
    assert!(started[0] < run_net[0].0 && run_net[1].0 < finished[0]);
    // The denied line says why, in the proxy's words.
    let lines: Vec<String> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let line: serde_json::Value = serde_json::from_str(&lines[run_net[1].0]).unwrap();
    assert_eq!(
        (
            &line["type"],
            &line["verdict"],
            &line["reason"],
            &line["host"]
        ),
        (
            &serde_json::json!("network"),
            &serde_json::json!("denied"),
            &serde_json::json!("not_allowed"),
            &serde_json::json!("other.test")
        ),
        "{line}"
    );

    // The session: opened, its one decision, closed by its owner after two cells.
    let opened: Vec<(usize, &AuditRecord)> = recs
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, AuditRecord::SessionOpened { .. }))
        .collect();
    assert_eq!(opened.len(), 1, "{recs:#?}");
    match opened[0].1 {
        AuditRecord::SessionOpened {
            id,
            tenant,
            backend,
            network,
            policy_fingerprint,
            ..
        } => {
            assert_eq!(id, &session_id);
            assert_eq!(tenant.as_deref(), Some("acme"));
            assert_eq!(*backend, vana_sandbox::BackendKind::Native);
            assert!(
                matches!(network, vana_sandbox_core::NetworkMode::Proxy(_)),
                "{network:?}"
            );
            assert_eq!(policy_fingerprint, res.policy_fingerprint.as_ref().unwrap());
        }
        other => panic!("{other:?}"),
    }
    let session_net = network(&session_id);
    assert_eq!(session_net.len(), 1, "{recs:#?}");
    assert_eq!(
        (session_net[0].1.host.as_str(), session_net[0].1.verdict),
        ("allowed.test", Verdict::Allowed)
    );
    let closed: Vec<(usize, &AuditRecord)> = recs
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, AuditRecord::SessionClosed { .. }))
        .collect();
    assert_eq!(closed.len(), 1, "{recs:#?}");
    match closed[0].1 {
        AuditRecord::SessionClosed {
            id,
            tenant,
            reason,
            cells,
            lifetime_ms,
        } => {
            assert_eq!(id, &session_id);
            assert_eq!(tenant.as_deref(), Some("acme"));
            assert_eq!((*reason, *cells), (SessionEnd::Closed, 2));
            assert!(*lifetime_ms > 0.0, "{lifetime_ms}");
        }
        other => panic!("{other:?}"),
    }
    assert!(opened[0].0 < session_net[0].0 && session_net[0].0 < closed[0].0);

    // The metrics: decisions by verdict and reason, bytes each way, sessions.
    let s = metrics.snapshot();
    let decisions = |verdict: &str, reason: &str| {
        s.counter(
            names::NETWORK_DECISIONS,
            &[("verdict", verdict), ("reason", reason)],
        )
    };
    assert_eq!(decisions("allowed", "none"), 2);
    assert_eq!(decisions("denied", "not_allowed"), 1);
    assert_eq!(s.counter(names::NETWORK_DECISIONS, &[]), 3);
    assert_eq!(s.counter(names::NETWORK_BYTES, &[("direction", "up")]), 6);
    assert_eq!(
        s.counter(names::NETWORK_BYTES, &[("direction", "down")]),
        2 * hello.len() as u64
    );
    assert_eq!(
        s.counter(names::SESSIONS_OPENED, &[("backend", "native")]),
        1
    );
    assert_eq!(
        s.counter(names::SESSIONS_CLOSED, &[("reason", "closed")]),
        1
    );
    assert_eq!(s.gauge(names::ACTIVE_SESSIONS, &[]), Some(0.0));
    // … and the Prometheus text says the same.
    let text = metrics.render_prometheus().unwrap();
    let want: [(&str, Labels, f64); 6] = [
        (
            names::NETWORK_DECISIONS,
            &[("verdict", "allowed"), ("reason", "none")],
            2.0,
        ),
        (
            names::NETWORK_DECISIONS,
            &[("verdict", "denied"), ("reason", "not_allowed")],
            1.0,
        ),
        (names::NETWORK_BYTES, &[("direction", "up")], 6.0),
        (
            names::NETWORK_BYTES,
            &[("direction", "down")],
            2.0 * hello.len() as f64,
        ),
        (names::SESSIONS_CLOSED, &[("reason", "closed")], 1.0),
        (names::ACTIVE_SESSIONS, &[], 0.0),
    ];
    for (name, labels, value) in want {
        assert_eq!(
            sample(&text, name, labels),
            Some(value),
            "{name}{labels:?} in:\n{text}"
        );
    }
    assert_no_leftovers();
}
