//! Helpers shared by the integration tests. These tests need root: they fail loudly without it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod backends;
pub mod http;
pub mod programs;
#[allow(unused_imports)]
pub use backends::*;
#[allow(unused_imports)]
pub use programs::{attack, compat};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use vana_sandbox::{
    lang, Engine, ExecutionRequest, ExecutionResult, LimitsRequest, NativeExecutor, PolicyConfig,
};

/// The range of host uids sandboxes run as (NativeConfig's default: blocks of two ids, init's and
/// the program's, leased per instance).
pub const SANDBOX_UIDS: std::ops::Range<u32> =
    vana_sandbox::DEFAULT_UID_BASE..vana_sandbox::DEFAULT_UID_BASE + 65536;

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the tests of one binary, so that leak checks see only their own test's work.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fails loudly unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (the native backend does); run the suite as root, as CI does"
    );
}

/// An engine on the native backend with the default policy.
pub fn engine(max_concurrency: usize) -> Engine {
    require_root();
    Engine::builder()
        .executor(Arc::new(NativeExecutor::new().expect("native backend")))
        .policy(Arc::new(PolicyConfig::default()))
        .languages(lang::installed())
        .max_concurrency(max_concurrency)
        .build()
        .expect("engine")
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs one request on a fresh engine.
pub fn run(req: ExecutionRequest) -> ExecutionResult {
    let e = engine(2);
    rt().block_on(e.execute(req)).expect("engine error")
}

pub fn req(language: &str, code: &str) -> ExecutionRequest {
    ExecutionRequest::new(language, code)
}

pub fn limits(f: impl FnOnce(&mut LimitsRequest)) -> Option<LimitsRequest> {
    let mut l = LimitsRequest::default();
    f(&mut l);
    Some(l)
}

/// Host processes running as a sandbox id (zombies aside: a zombie holds nothing but its pid
/// until its reaper — the host's PID 1 when the owner was killed — collects it).
pub fn sandbox_processes() -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("Z (zombie)"))
        {
            continue;
        }
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        if uid.is_some_and(|u| SANDBOX_UIDS.contains(&u)) {
            out.push(pid);
        }
    }
    out
}

fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mnt = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mnt))
        })
        .collect()
}

fn find_ours(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        if e.file_name() == "vana-sandbox" {
            for c in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if c.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(c.path());
                }
            }
        } else {
            find_ours(&p, depth - 1, out);
        }
    }
}

/// Everything of ours left on the host: processes, cgroups, mounts, instance directories.
pub fn leftovers() -> Vec<String> {
    let mut left: Vec<String> = sandbox_processes()
        .into_iter()
        .map(|p| format!("process {p}"))
        .collect();
    let mut cgs = Vec::new();
    for m in cgroup_mounts() {
        find_ours(&m, 6, &mut cgs);
    }
    left.extend(cgs.into_iter().map(|c| format!("cgroup {}", c.display())));
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        if l.contains("/run/vana-sandbox/") {
            left.push(format!("mount {l}"));
        }
    }
    // Id leases still held: a lock (in /proc/locks) on a lease file's inode.
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    for e in std::fs::read_dir("/run/vana-sandbox/leases")
        .into_iter()
        .flatten()
        .flatten()
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = e.metadata() else { continue };
        let needle = format!(":{}", m.ino());
        if locks.lines().any(|l| {
            l.split_whitespace()
                .nth(5)
                .is_some_and(|f| f.ends_with(&needle))
        }) {
            left.push(format!("lease held {}", e.path().display()));
        }
    }
    left
}

pub fn assert_no_leftovers() {
    let left = settled(leftovers);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// What `find` still reports once sandboxes being ended are gone: both backends end a sandbox
/// on the process's reaper thread just after the result (its programs are dead by then; natively
/// init's exit, the cgroup and the lease follow within milliseconds, a container's removal
/// within ~50 ms under runc and ~0.15 s under gVisor — though measured up to 19 s when gVisor
/// takes down a sandbox of many processes), so checks wait up to 30 s.
pub fn settled<T>(find: impl Fn() -> Vec<T>) -> Vec<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = find();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// This process's resident set, in bytes.
pub fn rss_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}
