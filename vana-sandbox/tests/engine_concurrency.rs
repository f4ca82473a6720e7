//! The Engine under load: bounded concurrency, a bounded queue, nothing leaked. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use vana_sandbox::{lang, Engine, EngineError, NativeExecutor, PolicyConfig, Status};

#[test]
fn fifty_concurrent_executions_with_max_concurrency_four() {
    let _g = serial();
    let e = engine(4);
    let rt = rt();
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let e = e.clone();
                let (lang, code) = match i % 3 {
                    0 => ("python", format!("print({i} * 2)")),
                    1 => ("javascript", format!("console.log({i} * 2)")),
                    _ => ("bash", format!("echo $(({i} * 2))")),
                };
                tokio::spawn(async move { (i, e.execute(req(lang, &code)).await) })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("join"));
        }
        out
    });
    assert_eq!(results.len(), 50);
    for (i, r) in results {
        let r = r.expect("engine error");
        assert_eq!(r.status, Status::Success, "#{i}: {r:#?}");
        assert_eq!(r.output, format!("{}\n", i * 2), "#{i}");
    }
    assert_no_leftovers();
}

/// A sandbox ends off the caller's path, but before its executor is gone: the result comes
/// first (the program and every process it left are dead), init's exit, the cgroup and the
/// lease follow; dropping the engine waits for them.
#[test]
fn sandboxes_end_after_their_result_and_before_their_executor_is_dropped() {
    let _g = serial();
    let rt = rt();
    for round in 0..20 {
        let e = engine(2);
        let r = rt
            .block_on(e.execute(req("bash", "sleep 1000 & (setsid sleep 1000 &); echo ok")))
            .expect("engine");
        assert_eq!(r.status, Status::Success, "{r:#?}");
        assert_eq!(r.output, "ok\n");
        drop(e);
        let left = leftovers();
        assert!(left.is_empty(), "round {round}: left behind: {left:#?}");
    }
}

#[test]
fn a_full_queue_is_an_immediate_typed_error() {
    let _g = serial();
    require_root();
    let e = Engine::builder()
        .executor(Arc::new(NativeExecutor::new().expect("native")))
        .policy(Arc::new(PolicyConfig::default()))
        .languages(lang::installed())
        .max_concurrency(1)
        .max_queue(1)
        .build()
        .expect("engine");
    let rt = rt();
    let outcomes = rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move { e.execute(req("bash", "sleep 0.5; echo done")).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("join"));
        }
        out
    });
    let full = outcomes
        .iter()
        .filter(|o| matches!(o, Err(EngineError::QueueFull { max_queue: 1 })))
        .count();
    let done = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(r) if r.status == Status::Success))
        .count();
    assert_eq!(full + done, 4, "{outcomes:#?}");
    assert!(
        full >= 2,
        "expected at least two rejections from a queue of one: {outcomes:#?}"
    );
    assert!(done >= 1);
    assert_no_leftovers();
}

#[test]
fn leftovers_of_a_crashed_host_are_removed_at_start() {
    let _g = serial();
    require_root();
    // Fake the leftovers of a process that no longer exists (pid 999999999 never runs): an empty
    // instance cgroup in every v1 hierarchy (or the v2 one), and a lease file without a lock.
    // (Its sandboxes died with it and took their storage along; the kernel freed its leases.)
    let name = "999999999-1-0";
    let mut made = Vec::new();
    for hierarchy in ["memory", "pids", "cpu,cpuacct", "unified"] {
        let base = std::path::Path::new("/sys/fs/cgroup").join(hierarchy);
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let key = if hierarchy == "unified" {
            ""
        } else {
            hierarchy
        };
        let rel = own
            .lines()
            .find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
                (ctrls == key).then(|| path.trim_start_matches('/').to_string())
            })
            .unwrap_or_default();
        let ours = base.join(rel).join("vana-sandbox");
        if ours.is_dir() {
            let dir = ours.join(name);
            std::fs::create_dir_all(&dir).expect("mkdir cgroup");
            made.push(dir);
        }
    }
    assert!(!made.is_empty(), "no cgroup hierarchy of ours was found");
    std::fs::create_dir_all("/run/vana-sandbox/leases").expect("mkdir leases");
    std::fs::write("/run/vana-sandbox/leases/5.lock", b"").expect("stale lease");
    let exec = NativeExecutor::new().expect("native");
    for dir in &made {
        assert!(
            !dir.exists(),
            "stale cgroup {} was not removed",
            dir.display()
        );
    }
    // The stale lease file is free: a new sandbox can take its block.
    let e = vana_sandbox::Engine::builder()
        .executor(std::sync::Arc::new(exec))
        .policy(std::sync::Arc::new(vana_sandbox::PolicyConfig::default()))
        .languages(vana_sandbox::lang::installed())
        .build()
        .expect("engine");
    let r = rt()
        .block_on(e.execute(req("bash", "echo ok")))
        .expect("run");
    assert_eq!(r.output, "ok\n", "{r:#?}");
    assert_no_leftovers();
}
