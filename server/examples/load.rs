//! A bounded load test of a running `vana-sandbox serve` (loopback or a Unix socket only):
//! `REQUESTS` mixed requests from `CLIENTS` concurrent clients, each retried on 429 after its
//! `Retry-After` until it has its answer. Prints a JSON summary: answers by status, lost results,
//! 5xx, 429s, end-to-end latency percentiles, runs per second, and the server's RSS before and
//! after (from `/proc/PID/status`).
//!
//! ```text
//! cargo run -p vana-sandbox-server --example load -- \
//!     --addr tcp:127.0.0.1:8080 --key KEY --pid SERVER_PID [--requests 2000] [--clients 32] \\
//!     [--rounds N] [--trivial]
//! ```
//! `--trivial` makes every operation the same `print(…)` in Python (to set beside the CLI's
//! `load`, the same engine without HTTP).
//! `scripts/load-server.sh` starts a server and runs this against it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

fn connect(a: &Addr) -> std::io::Result<Box<dyn Conn>> {
    let t = Some(Duration::from_secs(120));
    Ok(match a {
        Addr::Tcp(s) => {
            if !s.ip().is_loopback() {
                panic!("the load test runs on loopback only");
            }
            let c = TcpStream::connect(s)?;
            c.set_read_timeout(t)?;
            Box::new(c)
        }
        Addr::Unix(p) => {
            let c = UnixStream::connect(p)?;
            c.set_read_timeout(t)?;
            Box::new(c)
        }
    })
}

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Vec<u8>,
}

fn request(a: &Addr, method: &str, path: &str, key: &str, body: &[u8]) -> std::io::Result<Answer> {
    let mut c = connect(a)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    c.write_all(body)?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no answer head"))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let retry_after = lower
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .and_then(|v| v.trim().parse().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut b = &body[..];
        while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let start = eol + 2;
            let stop = (start + size).min(b.len());
            out.extend_from_slice(&b[start..stop]);
            b = &b[(stop + 2).min(b.len())..];
        }
        body = out;
    }
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

#[derive(Default)]
struct Stats {
    statuses: BTreeMap<u16, u64>,
    too_many: u64,
    lost: u64,
    wrong: Vec<String>,
    latencies: Vec<f64>,
    runs: u64,
}

/// One request until it has an answer other than 429; counts every answer.
fn until_answered(
    a: &Addr,
    stats: &Mutex<Stats>,
    method: &str,
    path: &str,
    key: &str,
    body: &[u8],
) -> Option<Answer> {
    for _ in 0..200 {
        let ans = match request(a, method, path, key, body) {
            Ok(ans) => ans,
            Err(e) => {
                let mut s = stats.lock().unwrap();
                s.wrong.push(format!("{method} {path}: {e}"));
                return None;
            }
        };
        *stats
            .lock()
            .unwrap()
            .statuses
            .entry(ans.status)
            .or_default() += 1;
        if ans.status == 429 {
            stats.lock().unwrap().too_many += 1;
            std::thread::sleep(Duration::from_millis(
                ans.retry_after.unwrap_or(1).min(5) * 1000 / 4,
            ));
            continue;
        }
        return Some(ans);
    }
    None
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

/// One logical operation of the mix; `true` when its answers were all as expected.
fn operation(i: usize, a: &Addr, key: &str, stats: &Mutex<Stats>, trivial: bool) -> bool {
    let exec = |lang: &str, code: &str, expect: &str, stream: bool| -> bool {
        let path = if stream {
            "/v1/executions?stream=true"
        } else {
            "/v1/executions"
        };
        let body = serde_json::json!({"language": lang, "code": code}).to_string();
        let Some(ans) = until_answered(a, stats, "POST", path, key, body.as_bytes()) else {
            return false;
        };
        let result = if stream {
            // The last event is the result.
            let text = String::from_utf8_lossy(&ans.body).to_string();
            let data = text
                .split("\n\n")
                .filter(|e| e.starts_with("event: result"))
                .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                .last()
                .unwrap_or("null")
                .to_string();
            serde_json::from_str(&data).unwrap_or(serde_json::Value::Null)
        } else {
            json(&ans.body)
        };
        stats.lock().unwrap().runs += 1;
        ans.status == 200 && result["output"] == expect
    };
    // `--trivial`: every operation is the same trivial Python run (to compare with the CLI's
    // `load`, which runs it through one engine without HTTP).
    match if trivial { 0 } else { i % 20 } {
        0..=8 => exec(
            "python",
            &format!("print({i} * 2)"),
            &format!("{}\n", i * 2),
            false,
        ),
        9..=11 => exec("bash", &format!("echo n{i}"), &format!("n{i}\n"), false),
        12..=13 => exec(
            "python",
            &format!("print('s{i}')"),
            &format!("s{i}\n"),
            true,
        ),
        14 => {
            // A refusal is a result too.
            let body = br#"{"language":"cobol","code":"x"}"#;
            until_answered(a, stats, "POST", "/v1/executions", key, body)
                .is_some_and(|r| r.status == 200 && json(&r.body)["status"] == "rejected")
        }
        15..=17 => {
            // A session: open, a cell, a file in and out, close.
            let Some(open) = until_answered(a, stats, "POST", "/v1/sessions", key, b"") else {
                return false;
            };
            let id = json(&open.body)["id"].as_str().unwrap_or("").to_string();
            if open.status != 201 || id.is_empty() {
                stats
                    .lock()
                    .unwrap()
                    .wrong
                    .push(format!("open: {}", open.status));
                return false;
            }
            let base = format!("/v1/sessions/{id}");
            let cell = serde_json::json!({"language": "python", "code": format!("v = {i}\nv + 1")})
                .to_string();
            let ran = until_answered(
                a,
                stats,
                "POST",
                &format!("{base}/run"),
                key,
                cell.as_bytes(),
            );
            stats.lock().unwrap().runs += 1;
            let ok_cell = ran.is_some_and(|r| {
                r.status == 200 && json(&r.body)["results"][0]["text/plain"] == format!("{}", i + 1)
            });
            let put = until_answered(
                a,
                stats,
                "PUT",
                &format!("{base}/files/f.txt"),
                key,
                b"data",
            );
            let got = until_answered(a, stats, "GET", &format!("{base}/files/f.txt"), key, b"");
            let del = until_answered(a, stats, "DELETE", &base, key, b"");
            ok_cell
                && put.is_some_and(|r| r.status == 204)
                && got.is_some_and(|r| r.status == 200 && r.body == b"data")
                && del.is_some_and(|r| r.status == 204)
        }
        18 => until_answered(a, stats, "GET", "/readyz", key, b"").is_some_and(|r| r.status == 200),
        _ => until_answered(a, stats, "GET", "/metrics", key, b"").is_some_and(|r| r.status == 200),
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn round(a: &Addr, key: &str, requests: usize, clients: usize, trivial: bool) -> (Stats, Duration) {
    let stats = Arc::new(Mutex::new(Stats::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let begun = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (a, key, stats, next) = (a.clone(), key.to_string(), stats.clone(), next.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return;
                }
                let t = Instant::now();
                let ok = operation(i, &a, &key, &stats, trivial);
                let mut s = stats.lock().unwrap();
                s.latencies.push(t.elapsed().as_secs_f64());
                if !ok {
                    s.lost += 1;
                    s.wrong
                        .push(format!("operation {i} did not get its expected answer"));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = begun.elapsed();
    let s = Arc::try_unwrap(stats)
        .ok()
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_default();
    (s, elapsed)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr = arg("--addr").expect("--addr tcp:127.0.0.1:PORT or unix:/path");
    let addr = match addr.strip_prefix("unix:") {
        Some(p) => Addr::Unix(p.into()),
        None => Addr::Tcp(
            addr.trim_start_matches("tcp:")
                .parse()
                .expect("a loopback address"),
        ),
    };
    let key = arg("--key").unwrap_or_default();
    let pid: u32 = arg("--pid").and_then(|p| p.parse().ok()).unwrap_or(0);
    let requests: usize = arg("--requests")
        .and_then(|p| p.parse().ok())
        .unwrap_or(2000);
    let clients: usize = arg("--clients").and_then(|p| p.parse().ok()).unwrap_or(32);
    let rounds: usize = arg("--rounds").and_then(|p| p.parse().ok()).unwrap_or(1);
    let trivial = args.iter().any(|a| a == "--trivial");

    // Warm-up: the server's allocations settle before the first RSS reading.
    let _ = round(&addr, &key, 100, clients, trivial);
    let rss_before = rss_kib(pid);
    let mut summaries = Vec::new();
    for r in 0..rounds {
        let (s, elapsed) = round(&addr, &key, requests, clients, trivial);
        let mut lat = s.latencies.clone();
        lat.sort_by(|a, b| a.total_cmp(b));
        let five_xx: u64 = s
            .statuses
            .iter()
            .filter(|(k, _)| **k >= 500)
            .map(|(_, v)| v)
            .sum();
        summaries.push(serde_json::json!({
            "round": r + 1,
            "operations": requests,
            "clients": clients,
            "answers_by_status": s.statuses,
            "lost_results": s.lost,
            "http_5xx": five_xx,
            "http_429_retried": s.too_many,
            "runs": s.runs,
            "seconds": elapsed.as_secs_f64(),
            "runs_per_second": s.runs as f64 / elapsed.as_secs_f64(),
            "latency_p50_ms": percentile(&lat, 0.5) * 1000.0,
            "latency_p99_ms": percentile(&lat, 0.99) * 1000.0,
            "latency_max_ms": percentile(&lat, 1.0) * 1000.0,
            "problems": s.wrong.iter().take(10).collect::<Vec<_>>(),
            "server_rss_kib_after": rss_kib(pid),
        }));
    }
    let out = serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "server_rss_kib_before": rss_before,
        "rounds": summaries,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    let failed = out["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["lost_results"] != 0 || r["http_5xx"] != 0);
    std::process::exit(i32::from(failed));
}
