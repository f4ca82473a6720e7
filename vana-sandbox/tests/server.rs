//! `vana-sandbox serve` as a real process, on 127.0.0.1 and on a Unix socket: every endpoint,
//! streaming, authentication failures, another tenant's sessions refused, quotas, 429 under a
//! full queue, 413 before a huge body is read, slow clients cut off, TLS, and a graceful
//! shutdown with runs in flight that leaves nothing behind. Needs root (the native backend).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::http::*;
use common::*;
use serde_json::{json, Value};
use vana_sandbox::server::hash_key;

const BIN: &str = env!("CARGO_BIN_EXE_vana-sandbox");
const ALPHA: &str = "key-alpha-0123456789";
const BETA: &str = "key-beta-0123456789";
const OLD: &str = "key-old-0123456789";

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vana-srv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two tenants: `alpha` (the server's policy, no quotas; one expired key) and `beta` (the
/// strict preset; one run at a time, one session, four runs a minute).
fn config(dir: &TempDir, server: &str) -> String {
    let text = format!(
        r#"[server]
listen = "tcp:127.0.0.1:0"
header_timeout_secs = 2
body_timeout_secs = 2
shutdown_grace_secs = 3
probe_interval_secs = 600
max_body_bytes = 1048576
max_code_bytes = 65536
{server}

[[tenant]]
name = "alpha"
keys = [
  {{ sha256 = "{}", label = "tests" }},
  {{ sha256 = "{}", expires = "2001-01-01T00:00:00Z" }},
]

[[tenant]]
name = "beta"
preset = "strict"
quotas = {{ concurrent_runs = 1, sessions = 1, runs_per_minute = 4 }}
keys = [{{ sha256 = "{}" }}]
"#,
        hash_key(ALPHA),
        hash_key(OLD),
        hash_key(BETA)
    );
    write_file(&dir.0, "server.toml", &text)
}

fn start(dir: &TempDir, server: &str, args: &[&str]) -> ServerProc {
    let srv = start_unready(dir, server, args);
    wait_ready(&srv.addr);
    srv
}

/// A server, without waiting for its first test run (for TLS, which `wait_ready` does not speak).
fn start_unready(dir: &TempDir, server: &str, args: &[&str]) -> ServerProc {
    let cfg = config(dir, server);
    let mut all = vec!["--config", cfg.as_str()];
    all.extend_from_slice(args);
    ServerProc::start(BIN, &all)
}

/// Waits until `/readyz` says ready: the first test run has succeeded.
fn wait_ready(addr: &Addr) -> Value {
    let begun = Instant::now();
    loop {
        let r = call(addr, "GET", "/readyz", None, None);
        if r.status == 200 {
            return r.json();
        }
        assert_eq!(r.status, 503);
        assert!(
            begun.elapsed() < Duration::from_secs(30),
            "never ready: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(addr: &Addr, key: &str, code: &str) -> Resp {
    call_json(
        addr,
        "POST",
        "/v1/executions",
        Some(key),
        &json!({"language": "python", "code": code}),
    )
}

fn audit_lines(dir: &std::path::Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn executions_health_metrics_and_audit() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("exec");
    let audit = dir.0.join("audit");
    let mut srv = start(&dir, "", &["--audit-log", audit.to_str().unwrap()]);
    let addr = srv.addr.clone();

    assert_eq!(call(&addr, "GET", "/healthz", None, None).status, 200);
    let ready = call(&addr, "GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(ready.json()["reasons"], json!([]));

    // The result is the library's: the same fields and values as `exec --json`.
    let request = json!({"language": "python",
        "code": "import sys\nprint('hello')\nprint('warn', file=sys.stderr)\nsys.exit(3)"});
    let r = call_json(&addr, "POST", "/v1/executions", Some(ALPHA), &request);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let served = r.json();
    assert_eq!(served["status"], "error", "{served:#}");
    assert_eq!(served["exit_code"], 3);
    assert_eq!(served["output"], "hello\n");
    assert_eq!(served["stderr"], "warn\n");
    assert_eq!(served["backend"], "native");
    let out = std::process::Command::new(BIN)
        .args(["exec", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(request.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let local: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<String>>()
    };
    assert_eq!(
        keys(&served),
        keys(&local),
        "the server's result has other fields"
    );
    for f in [
        "status",
        "exit_code",
        "signal",
        "output",
        "stderr",
        "error",
        "backend",
        "language",
        "truncated",
    ] {
        assert_eq!(served[f], local[f], "field {f}");
    }

    // Validation and policy refusals are results, as in the library.
    let r = call_json(
        &addr,
        "POST",
        "/v1/executions",
        Some(ALPHA),
        &json!({"language": "cobol", "code": "x"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "rejected");
    // Each tenant's own policy: beta's strict preset allows 10 s, alpha's default 30 s.
    let slow = json!({"language": "python", "code": "print(1)", "timeout": 20});
    let r = call_json(&addr, "POST", "/v1/executions", Some(BETA), &slow);
    assert_eq!(r.json()["status"], "rejected", "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("strict"));
    let r = call_json(&addr, "POST", "/v1/executions", Some(ALPHA), &slow);
    assert_eq!(r.json()["status"], "success", "{}", r.text());
    // Malformed JSON, unknown fields, wrong methods and paths.
    let r = call(&addr, "POST", "/v1/executions", Some(ALPHA), Some(b"{nope"));
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
    let r = call_json(
        &addr,
        "POST",
        "/v1/executions",
        Some(ALPHA),
        &json!({"language": "python", "code": "1", "timeuot": 1}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        call(&addr, "GET", "/v1/executions", Some(ALPHA), None).status,
        405
    );
    assert_eq!(
        call(&addr, "GET", "/v1/nothing", Some(ALPHA), None).status,
        404
    );
    assert_eq!(call(&addr, "GET", "/nothing", None, None).status, 404);

    let m = call(&addr, "GET", "/metrics", None, None);
    assert_eq!(m.status, 200);
    let text = m.text();
    for needle in [
        "vana_sandbox_runs_total{",
        "tenant=\"alpha\"",
        "tenant=\"beta\"",
        "vana_sandbox_http_requests_total{",
        "route=\"/v1/executions\"",
        "vana_sandbox_queue_depth",
    ] {
        assert!(text.contains(needle), "{needle} not in /metrics:\n{text}");
    }

    srv.terminate();
    let (code, _) = srv.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", srv.stderr);
    // The tenant is in every line about a run; the server's configuration is recorded.
    let lines = audit_lines(&audit);
    let mut runs = 0;
    for l in &lines {
        let t = l["type"].as_str().unwrap();
        if [
            "run_started",
            "run_finished",
            "rejected",
            "session",
            "limit_hit",
            "security",
        ]
        .contains(&t)
            // The server's own test runs (`/readyz`) have no tenant, and say so by their id.
            && !l["id"].as_str().is_some_and(|i| i.starts_with("readyz-"))
        {
            assert!(
                l["tenant"] == "alpha" || l["tenant"] == "beta",
                "no tenant: {l}"
            );
            runs += 1;
        }
    }
    assert!(runs >= 6, "{lines:#?}");
    assert!(lines
        .iter()
        .any(|l| l["type"] == "config_loaded" && l["kind"] == "server"));
    assert!(lines.iter().any(|l| l["type"] == "config_loaded"
        && l["source"]
            .as_str()
            .unwrap()
            .starts_with("tenant:beta:preset:strict")));
    assert_no_leftovers();
}

#[test]
fn authentication_failures_tell_nothing() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("auth");
    let srv = start(&dir, "", &[]);
    let addr = srv.addr.clone();
    let body = json!({"language": "python", "code": "print(1)"});
    let cases = [
        (None, "missing_api_key"),
        (Some("wrong-key"), "invalid_api_key"),
        (Some(OLD), "expired_api_key"),
    ];
    for (key, code) in cases {
        for (method, path) in [
            ("POST", "/v1/executions"),
            ("GET", "/v1/sessions"),
            ("GET", "/v1/nothing"),
        ] {
            let r = call_json(&addr, method, path, key, &body);
            assert_eq!(r.status, 401, "{method} {path} {key:?}: {}", r.text());
            assert_eq!(r.code(), code);
            assert!(r.header("www-authenticate").is_some());
            let t = r.text();
            assert!(!t.contains("alpha") && !t.contains("beta"), "{t}");
        }
    }
    // The other header form.
    let mut c = connect(&addr);
    send(
        &mut *c,
        "POST",
        "/v1/executions",
        None,
        Some(body.to_string().as_bytes()),
        &[("X-Api-Key", ALPHA)],
    );
    assert_eq!(read_response(&mut *c).json()["status"], "success");
}

#[test]
fn sessions_files_and_other_tenants() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("sessions");
    let srv = start(&dir, "", &[]);
    let addr = srv.addr.clone();
    let r = call(&addr, "POST", "/v1/sessions", Some(ALPHA), None);
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let base = format!("/v1/sessions/{id}");
    let cell = |code: &str| {
        call_json(
            &addr,
            "POST",
            &format!("{base}/run"),
            Some(ALPHA),
            &json!({"language": "python", "code": code}),
        )
    };
    // State across cells, a failing cell between.
    assert_eq!(cell("x = 41").json()["status"], "success");
    assert_eq!(cell("1 / 0").json()["status"], "error");
    let r = cell("x + 1").json();
    assert_eq!(r["results"][0]["text/plain"], "42", "{r:#}");
    assert_eq!(r["session"]["cell"], 3);
    // Files: in, listed, used, out, removed; paths that leave the workspace refused.
    let put = call(
        &addr,
        "PUT",
        &format!("{base}/files/data/in%20put.txt"),
        Some(ALPHA),
        Some(b"hello file"),
    );
    assert_eq!(put.status, 204, "{}", put.text());
    let got = call(
        &addr,
        "GET",
        &format!("{base}/files/data/in%20put.txt"),
        Some(ALPHA),
        None,
    );
    assert_eq!((got.status, got.text().as_str()), (200, "hello file"));
    let list = call(
        &addr,
        "GET",
        &format!("{base}/files?dir=data"),
        Some(ALPHA),
        None,
    )
    .json();
    assert!(
        list["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "data/in put.txt" && f["size"] == 10),
        "{list:#}"
    );
    assert_eq!(
        cell("print(open('data/in put.txt').read())").json()["output"],
        "hello file\n"
    );
    let tar = call(&addr, "GET", &format!("{base}/archive"), Some(ALPHA), None);
    assert_eq!(tar.status, 200);
    assert_eq!(tar.header("content-type"), Some("application/x-tar"));
    assert!(tar.body.windows(10).any(|w| w == b"hello file"));
    let del = call(
        &addr,
        "DELETE",
        &format!("{base}/files/data/in%20put.txt"),
        Some(ALPHA),
        None,
    );
    assert_eq!(del.status, 204);
    let gone = call(
        &addr,
        "GET",
        &format!("{base}/files/data/in%20put.txt"),
        Some(ALPHA),
        None,
    );
    assert_eq!((gone.status, gone.code().as_str()), (404, "file_not_found"));
    let out = call(
        &addr,
        "PUT",
        &format!("{base}/files/%2e%2e/escape"),
        Some(ALPHA),
        Some(b"x"),
    );
    assert_eq!(out.status, 422, "{}", out.text());

    // Another tenant: exactly what an id that never existed gets.
    let never = "/v1/sessions/s-00000000000000000000000000000000";
    for (method, suffix, body) in [
        ("GET", "", None),
        ("DELETE", "", None),
        (
            "POST",
            "/run",
            Some(&b"{\"language\":\"python\",\"code\":\"x\"}"[..]),
        ),
        ("POST", "/kill", None),
        ("GET", "/files", None),
        ("GET", "/files/data/x", None),
        ("PUT", "/files/x", Some(&b"x"[..])),
        ("GET", "/archive", None),
    ] {
        let theirs = call(&addr, method, &format!("{base}{suffix}"), Some(BETA), body);
        let nobody = call(&addr, method, &format!("{never}{suffix}"), Some(BETA), body);
        assert_eq!(theirs.status, 404, "{method} {suffix}: {}", theirs.text());
        assert_eq!(theirs.body, nobody.body, "{method} {suffix}");
    }
    let listed = call(&addr, "GET", "/v1/sessions", Some(BETA), None).json();
    assert_eq!(listed["sessions"], json!([]));
    let listed = call(&addr, "GET", "/v1/sessions", Some(ALPHA), None).json();
    assert_eq!(listed["sessions"], json!([id]));
    // The server chooses ids.
    let r = call_json(
        &addr,
        "POST",
        "/v1/sessions",
        Some(ALPHA),
        &json!({"id": "mine"}),
    );
    assert_eq!(r.status, 400);

    // A kill stops the running cell.
    let killer = {
        let addr = addr.clone();
        let base = base.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            call(&addr, "POST", &format!("{base}/kill"), Some(ALPHA), None).status
        })
    };
    let begun = Instant::now();
    let r = cell("import time\ntime.sleep(25)").json();
    assert_eq!(killer.join().unwrap(), 204);
    assert!(begun.elapsed() < Duration::from_secs(10), "{r:#}");
    assert_ne!(r["status"], "success", "{r:#}");

    assert_eq!(call(&addr, "DELETE", &base, Some(ALPHA), None).status, 204);
    assert_eq!(call(&addr, "GET", &base, Some(ALPHA), None).status, 404);
    drop(srv);
    assert_no_leftovers();
}

/// Reads a streamed answer, noting when each event arrived.
fn stream(
    addr: &Addr,
    path: &str,
    key: &str,
    body: &Value,
) -> (u16, Vec<(Duration, String, Value)>) {
    let mut c = connect(addr);
    send(
        &mut *c,
        "POST",
        path,
        Some(key),
        Some(body.to_string().as_bytes()),
        &[],
    );
    let begun = Instant::now();
    let mut raw = Vec::new();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = c.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        seen.push((begun.elapsed(), raw.len()));
    }
    let resp = parse(&raw);
    // When each event's bytes had arrived: the first read that held its `event:` line.
    let mut out = Vec::new();
    let mut from = 0;
    for (name, data) in events(&resp.body) {
        let needle = format!("event: {name}");
        let at = raw[from..]
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .map(|p| from + p + needle.len())
            .unwrap_or(raw.len());
        from = at;
        let when = seen
            .iter()
            .find(|(_, len)| *len >= at)
            .map_or(Duration::MAX, |(t, _)| *t);
        out.push((when, name, data));
    }
    (resp.status, out)
}

#[test]
fn output_streams_as_server_sent_events() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("stream");
    let srv = start(&dir, "", &[]);
    let addr = srv.addr.clone();
    let code = "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second')";
    let (status, ev) = stream(
        &addr,
        "/v1/executions?stream=true",
        ALPHA,
        &json!({"language": "python", "code": code}),
    );
    assert_eq!(status, 200);
    let (last_t, last, result) = ev.last().cloned().unwrap();
    assert_eq!(last, "result", "{ev:#?}");
    assert_eq!(result["status"], "success");
    assert_eq!(result["output"], "first\nsecond\n");
    let text: String = ev
        .iter()
        .filter(|(_, n, d)| n == "chunk" && d["stream"] == "stdout")
        .map(|(_, _, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "first\nsecond\n");
    let first_t = ev.iter().find(|(_, n, _)| n == "chunk").unwrap().0;
    assert!(
        last_t >= first_t + Duration::from_millis(1500),
        "the first chunk ({first_t:?}) came with the result ({last_t:?})"
    );

    // A cell of a session streams too; a rejected request is a result event.
    let id = call(&addr, "POST", "/v1/sessions", Some(ALPHA), None).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, ev) = stream(
        &addr,
        &format!("/v1/sessions/{id}/run?stream=true"),
        ALPHA,
        &json!({"language": "python", "code": "import sys\nprint('out')\nprint('err', file=sys.stderr)"}),
    );
    assert_eq!(status, 200);
    let err: String = ev
        .iter()
        .filter(|(_, n, d)| n == "chunk" && d["stream"] == "stderr")
        .map(|(_, _, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(err, "err\n", "{ev:#?}");
    assert_eq!(ev.last().unwrap().2["status"], "success");
    let (_, ev) = stream(
        &addr,
        "/v1/executions?stream=1",
        ALPHA,
        &json!({"language": "cobol", "code": "x"}),
    );
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].2["status"], "rejected");
    drop(srv);
    assert_no_leftovers();
}

#[test]
fn quotas_refuse_with_retry_after() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("quota");
    let srv = start(&dir, "", &[]);
    let addr = srv.addr.clone();
    // sessions = 1
    let first = call(&addr, "POST", "/v1/sessions", Some(BETA), None);
    assert_eq!(first.status, 201, "{}", first.text());
    let second = call(&addr, "POST", "/v1/sessions", Some(BETA), None);
    assert_eq!(
        (second.status, second.code().as_str()),
        (429, "quota_exceeded")
    );
    assert!(second.text().contains("sessions"));
    assert!(second.header("retry-after").is_some());
    let id = first.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        call(
            &addr,
            "DELETE",
            &format!("/v1/sessions/{id}"),
            Some(BETA),
            None
        )
        .status,
        204
    );
    let again = call(&addr, "POST", "/v1/sessions", Some(BETA), None);
    assert_eq!(again.status, 201, "a closed session gives its place back");
    let id = again.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        call(
            &addr,
            "DELETE",
            &format!("/v1/sessions/{id}"),
            Some(BETA),
            None
        )
        .status,
        204
    );

    // concurrent_runs = 1: a second run while one runs is refused at once.
    let busy = {
        let addr = addr.clone();
        std::thread::spawn(move || run(&addr, BETA, "import time\ntime.sleep(3)"))
    };
    std::thread::sleep(Duration::from_millis(1000));
    let r = run(&addr, BETA, "print(1)");
    assert_eq!(
        (r.status, r.code().as_str()),
        (429, "quota_exceeded"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("concurrent_runs"));
    assert_eq!(busy.join().unwrap().json()["status"], "success");
    // Alpha has no quotas and is not slowed by beta's.
    assert_eq!(run(&addr, ALPHA, "print(1)").json()["status"], "success");

    // runs_per_minute = 4: one so far, three more, then refused until the minute passes.
    for _ in 0..3 {
        assert_eq!(run(&addr, BETA, "print(1)").json()["status"], "success");
    }
    let r = run(&addr, BETA, "print(1)");
    assert_eq!((r.status, r.code().as_str()), (429, "quota_exceeded"));
    assert!(r.text().contains("runs_per_minute"), "{}", r.text());
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");

    let m = call(&addr, "GET", "/metrics", None, None).text();
    for q in ["sessions", "concurrent_runs", "runs_per_minute"] {
        assert!(
            m.lines()
                .any(|l| l.starts_with("vana_sandbox_quota_rejections_total")
                    && l.contains(&format!("quota=\"{q}\""))
                    && l.contains("tenant=\"beta\"")),
            "{q}: {m}"
        );
    }
    drop(srv);
    assert_no_leftovers();
}

#[test]
fn full_queue_huge_bodies_and_slow_clients() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("limits");
    let srv = start(&dir, "", &["--max-concurrency", "1", "--max-queue", "1"]);
    let addr = srv.addr.clone();
    // One runs, one waits, the third finds the queue full.
    let mut threads = Vec::new();
    for _ in 0..2 {
        let addr = addr.clone();
        threads.push(std::thread::spawn(move || {
            run(&addr, ALPHA, "import time\ntime.sleep(2)")
        }));
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = run(&addr, ALPHA, "print(1)");
    assert_eq!(
        (r.status, r.code().as_str()),
        (429, "queue_full"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    // Streaming too: the refusal is a status, not a stream.
    let s = call_json(
        &addr,
        "POST",
        "/v1/executions?stream=true",
        Some(ALPHA),
        &json!({"language": "python", "code": "print(1)"}),
    );
    assert_eq!((s.status, s.code().as_str()), (429, "queue_full"));
    for t in threads {
        assert_eq!(t.join().unwrap().json()["status"], "success");
    }

    // 413 before reading: a declared 100 MB body is refused with nothing sent.
    let begun = Instant::now();
    let mut c = connect(&addr);
    send(
        &mut *c,
        "POST",
        "/v1/executions",
        Some(ALPHA),
        None,
        &[
            ("Content-Length", "104857600"),
            ("Content-Type", "application/json"),
        ],
    );
    let r = read_response(&mut *c);
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "too_large"),
        "{}",
        r.text()
    );
    assert!(begun.elapsed() < Duration::from_secs(2));
    // A chunked body is cut at the limit.
    let mut c = connect(&addr);
    send(
        &mut *c,
        "POST",
        "/v1/executions",
        Some(ALPHA),
        None,
        &[("Transfer-Encoding", "chunked")],
    );
    let chunk = vec![b'x'; 65536];
    for _ in 0..20 {
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        if std::io::Write::write_all(&mut *c, &piece).is_err() {
            break;
        }
    }
    let r = read_response(&mut *c);
    assert_eq!(r.status, 413, "{}", r.text());
    // Code over the server's limit (64 KiB here).
    let big = "#".repeat(70_000);
    let r = run(&addr, ALPHA, &big);
    assert_eq!(r.status, 413);
    assert!(r.text().contains("code"));

    // A client that never finishes its head is cut off after the header timeout (2 s).
    let mut c = connect(&addr);
    std::io::Write::write_all(&mut *c, b"POST /v1/executions HTTP/1.1\r\nHost: x\r\n").unwrap();
    let begun = Instant::now();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let waited = begun.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    // One that never finishes its body gets 408 after the body timeout (2 s).
    let mut c = connect(&addr);
    send(
        &mut *c,
        "POST",
        "/v1/executions",
        Some(ALPHA),
        None,
        &[("Content-Length", "100")],
    );
    std::io::Write::write_all(&mut *c, b"{\"language\"").unwrap();
    let begun = Instant::now();
    let r = read_response(&mut *c);
    assert_eq!((r.status, r.code().as_str()), (408, "body_timeout"));
    assert!(begun.elapsed() < Duration::from_secs(6));
    drop(srv);
    assert_no_leftovers();
}

#[test]
fn unix_socket_without_keys() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("unix");
    let sock = dir.0.join("vana.sock");
    let listen = format!("unix:{}", sock.display());
    let mut srv = ServerProc::start(BIN, &["--listen", &listen]);
    let addr = srv.addr.clone();
    wait_ready(&addr);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // No keys configured: the socket's permissions are the access control.
    let r = call_json(
        &addr,
        "POST",
        "/v1/executions",
        None,
        &json!({"language": "python", "code": "print('over unix')"}),
    );
    assert_eq!(r.json()["output"], "over unix\n", "{}", r.text());
    let r = call(&addr, "POST", "/v1/sessions", None, None);
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let c = call_json(
        &addr,
        "POST",
        &format!("/v1/sessions/{id}/run"),
        None,
        &json!({"language": "bash", "code": "echo $((6*7))"}),
    );
    assert_eq!(c.json()["output"], "42\n");
    // A second server on the same socket is refused; TCP without keys is refused.
    let second = std::process::Command::new(BIN)
        .args(["serve", "--listen", &listen])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"));
    let tcp = std::process::Command::new(BIN)
        .args(["serve", "--listen", "tcp:127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!tcp.status.success());
    assert!(String::from_utf8_lossy(&tcp.stderr).contains("API keys"));

    srv.terminate();
    let (code, _) = srv.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", srv.stderr);
    assert!(srv.stderr.contains("1 session(s) closed"), "{}", srv.stderr);
    assert!(!sock.exists(), "the socket file was left behind");
    assert_no_leftovers();
}

#[test]
fn graceful_shutdown_with_runs_in_flight() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("shutdown");
    let mut srv = start(&dir, "", &["--max-concurrency", "4"]);
    let addr = srv.addr.clone();
    let id = call(&addr, "POST", "/v1/sessions", Some(ALPHA), None).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cell = call_json(
        &addr,
        "POST",
        &format!("/v1/sessions/{id}/run"),
        Some(ALPHA),
        &json!({"language": "python", "code": "x = 1"}),
    );
    assert_eq!(cell.json()["status"], "success");
    let short = {
        let addr = addr.clone();
        std::thread::spawn(move || run(&addr, ALPHA, "import time\ntime.sleep(1.5)\nprint('done')"))
    };
    let long = {
        let addr = addr.clone();
        std::thread::spawn(move || run(&addr, ALPHA, "import time\ntime.sleep(60)"))
    };
    let streamed = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            stream(
                &addr,
                "/v1/executions?stream=true",
                ALPHA,
                &json!({"language": "python", "code": "import time\nprint('on', flush=True)\ntime.sleep(60)"}),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!leftovers().is_empty(), "the runs should be live");
    srv.terminate();
    std::thread::sleep(Duration::from_millis(300));
    // Not accepting any more.
    if let Addr::Tcp(a) = &addr {
        assert!(
            std::net::TcpStream::connect(a).is_err(),
            "still accepting after SIGTERM"
        );
    }
    let (code, took) = srv.wait(Duration::from_secs(40));
    assert_eq!(code, Some(0), "{}", srv.stderr);
    // Within the grace (3 s) and the teardown.
    assert!(took < Duration::from_secs(20), "{took:?}");
    let s = short.join().unwrap();
    assert_eq!(
        s.json()["output"],
        "done\n",
        "finished within the grace: {}",
        s.text()
    );
    let l = long.join().unwrap();
    assert_eq!(
        (l.status, l.code().as_str()),
        (503, "shutting_down"),
        "{}",
        l.text()
    );
    let (status, ev) = streamed.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(ev.first().map(|e| e.1.as_str()), Some("chunk"));
    assert_eq!(ev.last().map(|e| e.1.as_str()), Some("error"), "{ev:#?}");
    assert!(srv.stderr.contains("1 session(s) closed"), "{}", srv.stderr);
    assert_no_leftovers();
}

#[test]
fn tls() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("tls");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = write_file(&dir.0, "cert.pem", &ck.cert.pem());
    let key = write_file(&dir.0, "key.pem", &ck.signing_key.serialize_pem());
    let srv = start_unready(&dir, "", &["--tls-cert", &cert, "--tls-key", &key]);
    let Addr::Tcp(a) = srv.addr.clone() else {
        panic!("tcp")
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(a).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = json!({"language": "python", "code": "print('secret')"}).to_string();
    send(
        &mut tls,
        "POST",
        "/v1/executions",
        Some(ALPHA),
        Some(body.as_bytes()),
        &[],
    );
    let r = read_response(&mut tls);
    assert_eq!(r.json()["output"], "secret\n");
    // Plain HTTP on the TLS port gets no answer.
    let mut c = connect(&Addr::Tcp(a));
    send(&mut *c, "GET", "/healthz", None, None, &[]);
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    drop(srv);
    assert_no_leftovers();
}

#[test]
fn not_ready_when_a_required_layer_is_missing() {
    let _g = serial();
    require_root();
    let dir = TempDir::new("notready");
    let policy = write_file(
        &dir.0,
        "policy.toml",
        "name = \"needs-gvisor\"\nrequire = [\"gvisor\"]\n",
    );
    let sock = dir.0.join("vana.sock");
    let listen = format!("unix:{}", sock.display());
    let srv = ServerProc::start(BIN, &["--listen", &listen, "--policy", &policy]);
    let addr = srv.addr.clone();
    assert_eq!(call(&addr, "GET", "/healthz", None, None).status, 200);
    // Neither the layer probe nor the test run lets it be ready.
    let begun = Instant::now();
    let r = loop {
        let r = call(&addr, "GET", "/readyz", None, None);
        let reasons = r.json()["reasons"].to_string();
        if !reasons.contains("first test run") || begun.elapsed() > Duration::from_secs(20) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r.status, 503, "{}", r.text());
    let reasons = r.json()["reasons"].to_string();
    assert!(reasons.contains("gvisor"), "{reasons}");
    assert!(reasons.contains("test run"), "{reasons}");
    drop(srv);
    assert_no_leftovers();
}
