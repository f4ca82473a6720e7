//! Metrics after a scripted mix of runs through the real engine (fake backend) have the exact
//! expected values, and the Prometheus text parses as the exposition format and says the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use tokio::sync::Semaphore;
use vana_sandbox_core::compile_cache::DirCompileCache;
use vana_sandbox_core::fake::FakePolicy;
use vana_sandbox_core::network::{AddressClass, DenyReason, Verdict};
use vana_sandbox_core::request::LimitsRequest;
use vana_sandbox_core::{
    BackendKind, Engine, EngineError, Event, ExecutionRequest, Monitor, SessionEnd, Status,
};
use vana_sandbox_monitor::hooks::{Hooks, PoolEvent};
use vana_sandbox_monitor::metrics::{names, Metrics, MetricsSnapshot};

/// Runs the mix; returns the snapshot.
fn run_mix(metrics: &Metrics) -> MetricsSnapshot {
    let dir = TempDir::new("metrics-cache");
    let gate = Arc::new(Semaphore::new(1000));
    let engine = Engine::builder()
        .executor(Arc::new(scripted_exec().with_gate(gate.clone())))
        .policy(Arc::new(FakePolicy::default()))
        .languages(languages())
        .compile_cache(Arc::new(DirCompileCache::new(dir.path(), 1 << 20).unwrap()))
        .monitor(metrics.monitor())
        .max_concurrency(2)
        .max_queue(4)
        .build()
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        let run = |lang: &str, code: &str| {
            let e = engine.clone();
            let req = ExecutionRequest::new(lang, code);
            async move { e.execute(req).await.unwrap().status }
        };
        let mut statuses = Vec::new();
        for code in [
            "hello", "hello", "hello", "hello", "fail", "fail", "forkbomb",
        ] {
            statuses.push(run("fake", code).await);
        }
        for code in ["timeout", "oom", "seccomp", "flood"] {
            statuses.push(run("fake", code).await);
        }
        for code in ["compile!", "compile!", "error"] {
            statuses.push(run("fakec", code).await);
        }
        statuses.push(run("cobol", "x").await);
        let mut big = ExecutionRequest::new("fake", "x");
        big.limits = Some(LimitsRequest {
            memory_mb: Some(4096),
            ..Default::default()
        });
        statuses.push(engine.execute(big).await.unwrap().status);
        use Status::*;
        assert_eq!(
            statuses,
            [
                Success,
                Success,
                Success,
                Success,
                Error,
                Error,
                Error,
                Timeout,
                MemoryLimit,
                Killed,
                OutputLimit,
                Success,
                Success,
                CompileError,
                Rejected,
                Rejected
            ]
        );

        // Hold the backend: two run, four wait, the seventh is refused; then all six are
        // dropped by their callers.
        gate.forget_permits(1000);
        let mut tasks = Vec::new();
        for i in 0..6 {
            let e = engine.clone();
            tasks.push(tokio::spawn(async move {
                e.execute(ExecutionRequest::new("fake", format!("held {i}")))
                    .await
            }));
            while engine.running() + engine.queued() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        let full = engine
            .execute(ExecutionRequest::new("fake", "refused"))
            .await;
        assert!(
            matches!(full, Err(EngineError::QueueFull { .. })),
            "{full:?}"
        );
        for t in tasks.iter().rev() {
            t.abort();
        }
        for t in tasks {
            assert!(t.await.is_err());
        }
        assert_eq!((engine.running(), engine.queued()), (0, 0));
    });
    metrics.snapshot()
}

#[test]
fn a_scripted_mix_gives_exact_counts() {
    let metrics = Metrics::new();
    let s = run_mix(&metrics);
    let runs = |status: &str, language: &str, backend: &str| {
        s.counter(
            names::RUNS,
            &[
                ("status", status),
                ("language", language),
                ("backend", backend),
            ],
        )
    };
    assert_eq!(runs("success", "fake", "fake"), 4);
    assert_eq!(runs("success", "fakec", "fake"), 2);
    assert_eq!(runs("error", "fake", "fake"), 3);
    assert_eq!(runs("timeout", "fake", "fake"), 1);
    assert_eq!(runs("memory_limit", "fake", "fake"), 1);
    assert_eq!(runs("killed", "fake", "fake"), 1);
    assert_eq!(runs("output_limit", "fake", "fake"), 1);
    assert_eq!(runs("compile_error", "fakec", "fake"), 1);
    assert_eq!(runs("rejected", "cobol", "none"), 1);
    assert_eq!(runs("rejected", "fake", "none"), 1);
    assert_eq!(s.counter(names::RUNS, &[]), 16, "no other series");

    for limit in ["timeout", "memory", "processes", "output"] {
        assert_eq!(
            s.counter(names::LIMIT_HITS, &[("limit", limit)]),
            1,
            "{limit}"
        );
    }
    assert_eq!(s.counter(names::LIMIT_HITS, &[]), 4);
    assert_eq!(
        s.counter(
            names::SECURITY_EVENTS,
            &[("kind", "seccomp_kill"), ("source", "sandbox")]
        ),
        1
    );
    assert_eq!(
        s.counter(
            names::SECURITY_EVENTS,
            &[("kind", "limit_hit"), ("source", "sandbox")]
        ),
        1
    );
    assert_eq!(s.counter(names::SECURITY_EVENTS, &[]), 2);
    assert_eq!(
        s.counter(
            names::COMPILE_CACHE,
            &[("language", "fakec"), ("result", "miss")]
        ),
        2
    );
    assert_eq!(
        s.counter(
            names::COMPILE_CACHE,
            &[("language", "fakec"), ("result", "hit")]
        ),
        1
    );
    assert_eq!(s.counter(names::QUEUE_REJECTIONS, &[]), 1);
    assert_eq!(s.counter(names::CANCELLED, &[]), 6);

    // Histograms: one observation per admitted run that got there.
    let count = |name: &str, labels: &[(&str, &str)]| s.histogram(name, labels).unwrap().count;
    assert_eq!(count(names::RUN_DURATION, &[]), 14);
    assert_eq!(count(names::RUN_DURATION, &[("language", "fake")]), 11);
    assert_eq!(count(names::RUN_DURATION, &[("language", "fakec")]), 3);
    assert_eq!(count(names::PHASE_DURATION, &[("phase", "run")]), 13);
    assert_eq!(count(names::PHASE_DURATION, &[("phase", "compile")]), 2);
    assert_eq!(count(names::STARTUP, &[("backend", "fake")]), 16);
    assert_eq!(count(names::QUEUE_WAIT, &[]), 16);
    let h = s.histogram(names::RUN_DURATION, &[]).unwrap();
    assert_eq!(
        h.buckets.last().unwrap().count,
        h.count,
        "+Inf bucket holds all"
    );
    assert!(h.sum > 0.0);
    assert!(h.quantile(0.5).unwrap() > 0.0);

    // Gauges: what the last event said.
    assert_eq!(s.gauge(names::ACTIVE_RUNS, &[]), Some(0.0));
    assert_eq!(s.gauge(names::QUEUE_DEPTH, &[]), Some(0.0));
    assert_eq!(s.gauge(names::CONCURRENCY, &[]), Some(2.0));
    assert_eq!(s.gauge(names::QUEUE_CAPACITY, &[]), Some(4.0));

    // The plain map (what Python reads as a dict).
    let map = s.to_map();
    assert_eq!(
        map.get("vana_sandbox_runs_total{backend=\"fake\",language=\"fake\",status=\"success\"}"),
        Some(&4.0)
    );
    assert_eq!(
        map.get("vana_sandbox_run_duration_seconds_count{backend=\"fake\",language=\"fakec\"}"),
        Some(&3.0)
    );
    assert!(s.to_json().starts_with("{\"series\":["));
}

/// Three sessions opened and two closed; six egress decisions (two allowed, four denied).
fn sessions_and_egress(m: &dyn Monitor) {
    let spec = session_spec();
    for id in ["s1", "s2", "s3"] {
        m.on_event(&Event::SessionOpened {
            id,
            tenant: Some("acme"),
            backend: BackendKind::Native,
            spec: &spec,
        });
    }
    for (id, reason) in [("s1", SessionEnd::Closed), ("s2", SessionEnd::IdleTimeout)] {
        m.on_event(&Event::SessionClosed {
            id,
            tenant: Some("acme"),
            reason,
            cells: 4,
            lifetime: std::time::Duration::from_secs(3),
        });
    }
    let private = DenyReason::Address(AddressClass::Private);
    for d in [
        net_decision("example.com", 443, Verdict::Allowed, 100, 2000),
        net_decision("example.com", 80, Verdict::Allowed, 20, 300),
        net_decision(
            "other.test",
            80,
            Verdict::Denied(DenyReason::NotAllowed),
            0,
            0,
        ),
        net_decision(
            "other.test",
            80,
            Verdict::Denied(DenyReason::NotAllowed),
            0,
            0,
        ),
        net_decision("intranet.test", 80, Verdict::Denied(private), 0, 0),
        // Cut short by the byte cap: denied, with the bytes that did pass.
        net_decision(
            "example.com",
            80,
            Verdict::Denied(DenyReason::ByteLimit),
            5,
            1024,
        ),
    ] {
        m.on_event(&Event::Network {
            id: "r",
            tenant: None,
            decision: &d,
        });
    }
}

#[test]
fn sessions_and_egress_decisions_are_counted_from_engine_events() {
    let metrics = Metrics::new();
    let m = metrics.monitor();
    sessions_and_egress(m.as_ref());
    m.on_pool(&PoolEvent::Size {
        backend: BackendKind::Docker,
        size: 3,
    });
    m.on_pool(&PoolEvent::Lookup {
        backend: BackendKind::Docker,
        hit: true,
    });
    let s = metrics.snapshot();
    assert_eq!(s.gauge(names::ACTIVE_SESSIONS, &[]), Some(1.0));
    assert_eq!(
        s.counter(names::SESSIONS_OPENED, &[("backend", "native")]),
        3
    );
    for (reason, n) in [
        ("closed", 1),
        ("idle_timeout", 1),
        ("lifetime", 0),
        ("dropped", 0),
    ] {
        assert_eq!(
            s.counter(names::SESSIONS_CLOSED, &[("reason", reason)]),
            n,
            "{reason}"
        );
    }
    let decisions = |verdict: &str, reason: &str| {
        s.counter(
            names::NETWORK_DECISIONS,
            &[("verdict", verdict), ("reason", reason)],
        )
    };
    assert_eq!(decisions("allowed", "none"), 2);
    assert_eq!(decisions("denied", "not_allowed"), 2);
    assert_eq!(decisions("denied", "private_address"), 1);
    assert_eq!(decisions("denied", "byte_limit"), 1);
    assert_eq!(
        s.counter(names::NETWORK_DECISIONS, &[("verdict", "denied")]),
        4
    );
    assert_eq!(s.counter(names::NETWORK_BYTES, &[("direction", "up")]), 125);
    assert_eq!(
        s.counter(names::NETWORK_BYTES, &[("direction", "down")]),
        3324
    );
    assert_eq!(
        s.gauge(names::POOL_SIZE, &[("backend", "docker")]),
        Some(3.0)
    );
    assert_eq!(s.counter(names::POOL_LOOKUPS, &[("result", "hit")]), 1);
}

/// One sample line of the text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the Prometheus text exposition format (0.0.4): `# HELP` / `# TYPE` once
/// per family and before its samples, families contiguous, names and labels well formed,
/// values parse, histograms have cumulative buckets ending in `+Inf` equal to `_count`.
fn parse_exposition(text: &str) -> BTreeMap<String, (String, Vec<Sample>)> {
    fn name_ok(n: &str, first: fn(char) -> bool) -> bool {
        let mut c = n.chars();
        c.next().is_some_and(first) && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn family_of(sample: &str, types: &BTreeMap<String, String>) -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix) {
                if types
                    .get(base)
                    .is_some_and(|t| t == "histogram" || t == "summary")
                {
                    return base.to_string();
                }
            }
        }
        sample.to_string()
    }
    assert!(text.ends_with('\n'), "the text must end with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut families: BTreeMap<String, (String, Vec<Sample>)> = BTreeMap::new();
    let mut closed: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: `{line}`", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            match kw {
                "HELP" => {
                    assert!(
                        name_ok(name, |c| c.is_ascii_alphabetic() || c == '_' || c == ':'),
                        "{at}"
                    );
                    assert!(
                        helps
                            .insert(name.into(), parts.next().unwrap_or("").into())
                            .is_none(),
                        "HELP twice: {at}"
                    );
                }
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{at}"
                    );
                    assert!(!families.contains_key(name), "TYPE after samples: {at}");
                    assert!(
                        types.insert(name.into(), t.into()).is_none(),
                        "TYPE twice: {at}"
                    );
                }
                _ => {}
            }
            continue;
        }
        assert!(!line.starts_with('#') || line.starts_with("# "), "{at}");
        // name{labels} value [timestamp]
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {at}"));
        let name = &line[..name_end];
        assert!(
            name_ok(name, |c| c.is_ascii_alphabetic() || c == '_' || c == ':'),
            "bad name: {at}"
        );
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let eq = r
                    .find('=')
                    .unwrap_or_else(|| panic!("label without =: {at}"));
                let key = &r[..eq];
                assert!(
                    name_ok(key, |c| c.is_ascii_alphabetic() || c == '_') && !key.contains(':'),
                    "bad label name: {at}"
                );
                r = r[eq + 1..]
                    .strip_prefix('"')
                    .unwrap_or_else(|| panic!("unquoted value: {at}"));
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            other => panic!("bad escape {other:?}: {at}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value: {at}"),
                    }
                };
                assert!(
                    labels.insert(key.to_string(), value).is_none(),
                    "label twice: {at}"
                );
                r = &r[end + 1..];
                r = r.strip_prefix(',').unwrap_or(r);
            }
            rest = r;
        }
        let mut fields = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before value: {at}"))
            .split(' ');
        let v = fields.next().unwrap();
        let value = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            _ => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value: {at}")),
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp: {at}"));
        }
        assert!(fields.next().is_none(), "trailing fields: {at}");
        let family = family_of(name, &types);
        if current.as_deref() != Some(family.as_str()) {
            assert!(
                !closed.contains(&family),
                "family {family} is not contiguous: {at}"
            );
            if let Some(c) = current.take() {
                closed.push(c);
            }
            current = Some(family.clone());
        }
        let t = types
            .get(&family)
            .cloned()
            .unwrap_or_else(|| "untyped".into());
        if t == "counter" {
            assert!(value >= 0.0, "negative counter: {at}");
        }
        families
            .entry(family)
            .or_insert_with(|| (t, Vec::new()))
            .1
            .push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
    }
    // Histograms: per label set, cumulative buckets ending in +Inf == _count.
    for (family, (t, samples)) in &families {
        if t != "histogram" {
            continue;
        }
        let mut by_labels: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for s in samples {
            let mut l = s.labels.clone();
            if s.name.ends_with("_bucket") {
                let le = l
                    .remove("le")
                    .unwrap_or_else(|| panic!("{family}: bucket without le"));
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                by_labels.entry(l).or_default().push((le, s.value));
            } else if s.name.ends_with("_count") {
                counts.insert(l, s.value);
            }
        }
        for (l, buckets) in by_labels {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family}{l:?}: buckets not cumulative"
            );
            let last = buckets.last().unwrap();
            assert!(last.0.is_infinite(), "{family}{l:?}: no +Inf bucket");
            assert_eq!(
                Some(&last.1),
                counts.get(&l),
                "{family}{l:?}: +Inf != _count"
            );
        }
    }
    for name in helps.keys() {
        assert!(types.contains_key(name), "HELP without TYPE for {name}");
    }
    families
}

#[test]
fn the_prometheus_text_parses_and_agrees_with_the_snapshot() {
    let metrics = Metrics::with_prometheus().unwrap();
    run_mix(&metrics);
    sessions_and_egress(metrics.monitor().as_ref());
    let s = metrics.snapshot();
    let text = metrics.render_prometheus().unwrap();
    let families = parse_exposition(&text);
    for series in &s.series {
        use vana_sandbox_monitor::metrics::Value;
        let (t, samples) = families
            .get(&series.name)
            .unwrap_or_else(|| panic!("{} missing from the text:\n{text}", series.name));
        let find = |name: &str| {
            samples
                .iter()
                .find(|x| x.name == name && x.labels == series.labels)
                .unwrap_or_else(|| panic!("{name}{:?} missing", series.labels))
                .value
        };
        match &series.value {
            Value::Counter { value } => {
                assert_eq!(t, "counter");
                assert_eq!(find(&series.name), *value as f64, "{}", series.id());
            }
            Value::Gauge { value } => {
                assert_eq!(t, "gauge");
                assert_eq!(find(&series.name), *value, "{}", series.id());
            }
            Value::Histogram(h) => {
                assert_eq!(t, "histogram");
                assert_eq!(find(&format!("{}_count", series.name)), h.count as f64);
                assert!((find(&format!("{}_sum", series.name)) - h.sum).abs() < 1e-9);
            }
        }
    }
    // Every family has its help text from the table.
    for (name, (_, _)) in &families {
        let info = names::info(name).unwrap_or_else(|| panic!("{name} is not in the table"));
        assert!(
            text.contains(&format!("# HELP {name} {}", info.help)),
            "{name}"
        );
    }
    assert!(
        text.contains(
            "vana_sandbox_runs_total{status=\"success\",language=\"fake\",backend=\"fake\"} 4"
        ) || text.contains(
            "vana_sandbox_runs_total{backend=\"fake\",language=\"fake\",status=\"success\"} 4"
        ),
        "{text}"
    );
    for family in [
        names::NETWORK_DECISIONS,
        names::NETWORK_BYTES,
        names::SESSIONS_OPENED,
        names::SESSIONS_CLOSED,
        names::ACTIVE_SESSIONS,
    ] {
        assert!(families.contains_key(family), "{family} missing:\n{text}");
    }
}

#[test]
fn the_parser_refuses_what_is_not_the_format() {
    for bad in [
        "x 1",                                       // no newline at the end
        "x{a=1} 1\n",                                // unquoted label value
        "# TYPE x counter\n# TYPE x counter\nx 1\n", // TYPE twice
        "x 1\ny 1\nx 2\n",                           // family not contiguous
        "# TYPE x counter\nx -1\n",                  // negative counter
        "x one\n",                                   // bad value
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // not cumulative
    ] {
        let r = std::panic::catch_unwind(|| parse_exposition(bad));
        assert!(r.is_err(), "accepted: {bad:?}");
    }
    parse_exposition("# HELP x a counter\n# TYPE x counter\nx{a=\"q\\\"uote\"} 3 1700000000000\n");
}

#[test]
#[ignore = "prints the text for a person to read"]
fn print_prometheus_text() {
    let metrics = Metrics::with_prometheus().unwrap();
    run_mix(&metrics);
    println!("{}", metrics.render_prometheus().unwrap());
}
