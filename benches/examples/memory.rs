//! What a sandbox costs in memory, per concurrent native run and per idle session, against the
//! same number of bare `python3` processes. As root:
//!
//! `cargo run --release -p vana-sandbox-benches --example memory -- 4 16`
//!
//! For each count N and each kind — N Python runs that sleep, held concurrently through one
//! engine; N bare `python3` processes that sleep; N Python sessions, each idle after one cell —
//! a fresh process of this example (so that one measurement's heap does not hide the next's)
//! builds the engine, warms it with one run and one session, takes a reading, brings the N up,
//! takes another and prints the difference divided by N:
//! - **host RSS / host private**: the host process's resident set and its private pages
//!   (`/proc/self/status`, `/proc/self/smaps_rollup`) — what an embedding application pays;
//! - **processes PSS**: the proportional set size of every process below the host (each
//!   sandbox's init and program; the bare interpreters) — what the programs themselves hold;
//! - **kernel**: `Slab + KernelStack + PageTables` of `/proc/meminfo` (after `vm.stat_refresh`
//!   folds the per-CPU counters) — the namespaces, mounts, cgroups, page tables and stacks;
//! - **tmpfs**: `Shmem` — each sandbox's generated `/etc`, its staged files and what it wrote.
//!
//! The last two are the whole machine's: they move with whatever else runs, so compare within a
//! row on a quiet host.
//!
//! Memory is not time: these are readings, not criterion estimates.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vana_sandbox::{
    lang, Engine, Event, ExecutionRequest, Monitor, NativeExecutor, PolicyConfig, SessionOptions,
    Status,
};
use vana_sandbox_benches::runtime;

/// How long each sleeping program would live: long enough for the slowest of N to start (each
/// is stopped once measured).
const SLEEP_SECS: u64 = 20;

const KINDS: [(&str, &str); 3] = [
    ("run", "concurrent run (python sleeping)"),
    ("bare", "bare python3 (sleeping)"),
    ("session", "idle Python session"),
];

/// Counts the runs whose sandbox is up and whose program is about to start.
#[derive(Default)]
struct Ready(AtomicUsize);

impl Monitor for Ready {
    fn on_event(&self, event: &Event<'_>) {
        if matches!(event, Event::Ready { .. }) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One reading, in KiB.
#[derive(Clone, Copy)]
struct Reading {
    rss: i64,
    private: i64,
    pss_below: i64,
    kernel: i64,
    shmem: i64,
}

fn kib_fields(path: &str) -> HashMap<String, i64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_string(), n))
        })
        .collect()
}

fn get(m: &HashMap<String, i64>, k: &str) -> i64 {
    m.get(k).copied().unwrap_or(0)
}

/// Every process whose chain of parents reaches this one (sandboxes' init and programs live in
/// pid namespaces of their own, but the host's `/proc` lists them with their host parents).
fn descendants() -> Vec<u32> {
    let parents: HashMap<u32, u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name is in parentheses and may hold spaces: the fields follow the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let me = std::process::id();
    parents
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                match parents.get(&p) {
                    Some(&pp) if pp == me => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

fn read() -> Reading {
    // Folds the per-CPU counters into the totals (root only; otherwise they lag a little).
    let _ = std::fs::write("/proc/sys/vm/stat_refresh", "1");
    let status = kib_fields("/proc/self/status");
    let smaps = kib_fields("/proc/self/smaps_rollup");
    let mem = kib_fields("/proc/meminfo");
    let pss_below = descendants()
        .iter()
        .map(|pid| get(&kib_fields(&format!("/proc/{pid}/smaps_rollup")), "Pss"))
        .sum();
    Reading {
        rss: get(&status, "VmRSS"),
        private: get(&smaps, "Private_Clean") + get(&smaps, "Private_Dirty"),
        pss_below,
        kernel: get(&mem, "Slab") + get(&mem, "KernelStack") + get(&mem, "PageTables"),
        shmem: get(&mem, "Shmem"),
    }
}

/// A reading after the machine settled a little (freed pages and RCU callbacks land late).
fn settled() -> Reading {
    std::thread::sleep(Duration::from_millis(500));
    read()
}

fn engine(n: usize, ready: Arc<Ready>) -> Engine {
    Engine::builder()
        .executor(Arc::new(
            NativeExecutor::new().expect("the native backend needs root"),
        ))
        .policy(Arc::new(PolicyConfig::default()))
        .languages(lang::installed())
        .monitor(ready)
        .max_concurrency(n)
        .max_queue(n * 4)
        .max_sessions(n + 1)
        .build()
        .expect("engine")
}

fn wait_until(what: &str, deadline: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not all up in {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One measurement (in this process): prints the five figures per item, in MiB.
fn measure(kind: &str, n: usize) {
    let rt = runtime();
    let ready = Arc::new(Ready::default());
    let e = engine(n, ready.clone());
    let sleep = format!("import time\ntime.sleep({SLEEP_SECS})");
    // Warm-up: what an engine allocates once (thread pools, caches) is not a run's.
    rt.block_on(async {
        let r = e
            .execute(ExecutionRequest::new("python", "print(1)"))
            .await
            .unwrap();
        assert_eq!(r.status, Status::Success, "{r:?}");
        let s = e.session(SessionOptions::default()).await.expect("session");
        s.run_code("python", "x = 1").await.expect("cell");
        s.close().await.expect("close");
    });
    let before = settled();
    let during = match kind {
        "run" => {
            ready.0.store(0, Ordering::SeqCst);
            let runs: Vec<_> = (0..n)
                .map(|_| {
                    let e = e.clone();
                    let req = ExecutionRequest::new("python", &sleep);
                    rt.spawn(async move { e.execute(req).await })
                })
                .collect();
            wait_until("runs", Duration::from_secs(SLEEP_SECS / 2), || {
                ready.0.load(Ordering::SeqCst) >= n
            });
            // Ready is the sandbox; the interpreters start after it.
            std::thread::sleep(Duration::from_millis(1000));
            let during = read();
            // A dropped execution stops its sandbox at once.
            for r in &runs {
                r.abort();
            }
            rt.block_on(async {
                for r in runs {
                    let _ = r.await;
                }
            });
            during
        }
        "bare" => {
            let mut bare: Vec<Child> = (0..n)
                .map(|_| {
                    Command::new("/usr/bin/python3")
                        .args(["-c", &sleep])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("python3")
                })
                .collect();
            std::thread::sleep(Duration::from_millis(1000));
            let during = read();
            for c in &mut bare {
                let _ = c.kill();
                let _ = c.wait();
            }
            during
        }
        "session" => {
            let sessions = rt.block_on(async {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let s = e.session(SessionOptions::default()).await.expect("session");
                    let r = s.run_code("python", "x = 1").await.expect("cell");
                    assert_eq!(r.status, Status::Success, "{r:?}");
                    v.push(s);
                }
                v
            });
            let during = settled();
            rt.block_on(async {
                for s in sessions {
                    s.close().await.expect("close");
                }
            });
            during
        }
        other => panic!("unknown kind {other}"),
    };
    let d = |a: i64, b: i64| (a - b) as f64 / 1024.0 / n as f64;
    println!(
        "{:.2} {:.2} {:.2} {:.2} {:.2}",
        d(during.rss, before.rss),
        d(during.private, before.private),
        d(during.pss_below, before.pss_below),
        d(during.kernel, before.kernel),
        d(during.shmem, before.shmem),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--measure") {
        let n = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
        measure(&args[1], n);
        return;
    }
    let counts: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() {
        vec![4, 16]
    } else {
        counts
    };
    let exe = std::env::current_exe().expect("this example's path");
    println!(
        "{:<34}{:>4}{:>10}{:>14}{:>15}{:>9}{:>8}",
        "per item, MiB", "N", "host RSS", "host private", "processes PSS", "kernel", "tmpfs"
    );
    for &n in &counts {
        for (kind, label) in KINDS {
            let out = Command::new(&exe)
                .args(["--measure", kind, &n.to_string()])
                .stderr(Stdio::inherit())
                .output()
                .expect("running a measurement");
            assert!(out.status.success(), "{kind} {n}: {:?}", out.status);
            let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            assert_eq!(v.len(), 5, "{kind} {n}: {:?}", out.stdout);
            println!(
                "{label:<34}{n:>4}{:>10.2}{:>14.2}{:>15.2}{:>9.2}{:>8.2}",
                v[0], v[1], v[2], v[3], v[4]
            );
        }
    }
}
