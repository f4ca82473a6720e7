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
    // Fake the leftovers of a process that no longer exists: pid 0 never runs user code.
    let dir = std::path::Path::new("/run/vana-sandbox/instances/999999999-1-0");
    std::fs::create_dir_all(dir).expect("mkdir");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(dir)
        .status()
        .expect("mount");
    assert!(status.success());
    let _ = NativeExecutor::new().expect("native");
    assert!(!dir.exists(), "stale instance was not removed");
    assert_no_leftovers();
}
