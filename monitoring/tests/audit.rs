//! The audit log: a chain of 1,000 records verifies; changing, deleting, inserting or swapping
//! any line is found with its line number; rotation and restarts keep the chain; the HMAC
//! variant refuses a chain rebuilt without the key; overflow and failures are counted and
//! recorded, never blocking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vana_sandbox_core::{ExecutionRequest, LimitKind, Monitor, Status};
use vana_sandbox_monitor::audit::{
    verify, AuditLine, AuditLog, AuditRecord, DropReason, FileStartReason, ProblemKind,
    VerifyOptions,
};

const KEY: &[u8] = b"an audit key of 32 bytes, really";

fn record(i: usize) -> AuditRecord {
    AuditRecord::LimitHit {
        id: format!("run-{i:04}"),
        tenant: None,
        limit: LimitKind::Timeout,
    }
}

/// A closed log of `n` records (+ `log_start` and `log_closed`) in one file.
fn log_of(dir: &TempDir, n: usize, key: Option<&[u8]>) -> PathBuf {
    let mut b = AuditLog::builder(dir.path()).sync_interval(None);
    if let Some(k) = key {
        b = b.hmac_key(k);
    }
    let log = b.start().unwrap();
    for i in 0..n {
        log.record(record(i));
        if i % 500 == 499 {
            assert!(log.flush(Duration::from_secs(10)));
        }
    }
    assert!(log.shutdown(Duration::from_secs(10)));
    let files = log.files().unwrap();
    assert_eq!(files.len(), 1);
    files[0].clone()
}

fn check(files: &[PathBuf], key: Option<&[u8]>) -> vana_sandbox_monitor::audit::Report {
    verify(
        files,
        &VerifyOptions {
            key: key.map(<[u8]>::to_vec),
            allow_open: false,
        },
    )
    .unwrap()
}

/// Applies `edit` to a copy of `file`'s lines and verifies the copy.
fn tampered(
    file: &Path,
    key: Option<&[u8]>,
    edit: impl FnOnce(&mut Vec<String>),
) -> (ProblemKind, u64, String) {
    let dir = TempDir::new("tamper");
    let copy = dir.path().join(file.file_name().unwrap());
    let mut lines = read_lines(file);
    edit(&mut lines);
    write_lines(&copy, &lines);
    let r = check(&[copy], key);
    let p = r.problem.expect("tampering went unnoticed");
    (p.kind, p.line, p.detail)
}

#[test]
fn a_chain_of_1000_records_verifies() {
    let dir = TempDir::new("ok");
    let file = log_of(&dir, 1000, None);
    let lines = read_lines(&file);
    assert_eq!(lines.len(), 1002);
    let r = check(std::slice::from_ref(&file), None);
    assert!(r.is_ok(), "{:?}", r.problem);
    assert!(r.from_genesis && r.closed);
    assert_eq!((r.first_seq, r.last_seq), (Some(1), Some(1002)));
    assert_eq!(r.last_hash.as_deref(), Some(hash_of(&lines[1001]).as_str()));
    let first = AuditLine::parse(&lines[0]).unwrap();
    assert!(matches!(first.record, AuditRecord::LogStart { .. }));
    assert_eq!(first.prev, "0".repeat(64));
    let second = AuditLine::parse(&lines[1]).unwrap();
    assert_eq!(second.prev, first.hash);
    assert_eq!(second.record, record(0));
}

/// Line numbers used for each kind of tampering: first, second, middle, before last, last.
const POSITIONS: [usize; 5] = [1, 2, 500, 1001, 1002];

#[test]
fn changing_any_line_is_found_at_its_line() {
    let dir = TempDir::new("alter");
    let file = log_of(&dir, 1000, None);
    for line in POSITIONS {
        let (kind, at, detail) = tampered(&file, None, |l| {
            // A plausible edit: one digit of the timestamp (the JSON stays valid).
            let s = &mut l[line - 1];
            let pos = s.find("\"ts\":\"").unwrap() + 6;
            let c = if &s[pos..=pos] == "1" { "2" } else { "1" };
            s.replace_range(pos..=pos, c);
        });
        assert_eq!(
            (kind, at),
            (ProblemKind::Altered, line as u64),
            "line {line}: {detail}"
        );
    }
    // An edit that breaks the JSON is found too.
    let (kind, at, _) = tampered(&file, None, |l| l[499].truncate(40));
    assert_eq!((kind, at), (ProblemKind::Malformed, 500));
    // An edit resealed with plain SHA-256 (no key in this log): the line itself looks sound,
    // but the next line recorded another hash for it.
    let (kind, at, detail) = tampered(&file, None, |l| {
        l[499] = l[499].replace("run-0498", "run-9999");
        rebuild_from(&mut l[..500], 499, None);
    });
    assert_eq!((kind, at), (ProblemKind::Altered, 500), "{detail}");
}

#[test]
fn deleting_any_line_is_found_at_its_line() {
    let dir = TempDir::new("delete");
    let file = log_of(&dir, 1000, None);
    for line in POSITIONS {
        let (kind, at, detail) = tampered(&file, None, |l| {
            l.remove(line - 1);
        });
        let want = if line == 1002 {
            ProblemKind::Unterminated
        } else {
            ProblemKind::Removed
        };
        assert_eq!((kind, at), (want, line as u64), "line {line}: {detail}");
    }
}

#[test]
fn inserting_a_line_anywhere_is_found_at_its_line() {
    let dir = TempDir::new("insert");
    let file = log_of(&dir, 1000, None);
    for line in POSITIONS {
        // A forged record that continues the chain at that point (the best a writer of
        // plain SHA-256 lines can do) …
        let (kind, at, detail) = tampered(&file, None, |l| {
            let prev = (line >= 2).then(|| l[line - 2].clone());
            l.insert(line - 1, forged_after(prev.as_deref(), None));
        });
        assert_eq!(
            (kind, at),
            (ProblemKind::Inserted, line as u64),
            "forged at {line}: {detail}"
        );
        // … and a verbatim copy of another line.
        let (kind, at, detail) = tampered(&file, None, |l| {
            let copy = l[700].clone();
            l.insert(line - 1, copy);
        });
        assert_eq!(
            (kind, at),
            (ProblemKind::Inserted, line as u64),
            "copy at {line}: {detail}"
        );
    }
}

#[test]
fn swapping_two_lines_is_found_at_the_first() {
    let dir = TempDir::new("swap");
    let file = log_of(&dir, 1000, None);
    for line in [1, 2, 500, 1001] {
        let (kind, at, detail) = tampered(&file, None, |l| l.swap(line - 1, line));
        assert_eq!(
            (kind, at),
            (ProblemKind::Reordered, line as u64),
            "swap at {line}: {detail}"
        );
    }
}

#[test]
fn hmac_rejects_a_chain_rebuilt_without_the_key() {
    let dir = TempDir::new("hmac");
    let file = log_of(&dir, 1000, Some(KEY));
    assert!(check(std::slice::from_ref(&file), Some(KEY)).is_ok());
    // Without the key, the lines are not plain SHA-256: refused at once, with a hint.
    let r = check(std::slice::from_ref(&file), None);
    let p = r.problem.unwrap();
    assert_eq!((p.kind, p.line), (ProblemKind::Altered, 1));
    assert!(p.detail.contains("give its key"), "{}", p.detail);
    // An attacker changes line 500 and rebuilds the rest of the chain: with plain SHA-256 …
    let (kind, at, _) = tampered(&file, Some(KEY), |l| {
        l[499] = l[499].replace("run-0498", "run-9999");
        rebuild_from(l, 499, None);
    });
    assert_eq!((kind, at), (ProblemKind::Altered, 500));
    // … or with a key of their own: both refused at the first line they rewrote.
    let (kind, at, _) = tampered(&file, Some(KEY), |l| {
        l[499] = l[499].replace("run-0498", "run-9999");
        rebuild_from(l, 499, Some(b"some other key of enough bytes!!"));
    });
    assert_eq!((kind, at), (ProblemKind::Altered, 500));
    // The same rebuild with the right key verifies: the chain itself is sound.
    let dir2 = TempDir::new("hmac-ok");
    let copy = dir2.path().join("audit-000001.jsonl");
    let mut lines = read_lines(&file);
    lines[499] = lines[499].replace("run-0498", "run-9999");
    rebuild_from(&mut lines, 499, Some(KEY));
    write_lines(&copy, &lines);
    assert!(check(&[copy], Some(KEY)).is_ok());
}

#[test]
fn rotation_keeps_the_chain_across_files_in_order() {
    let dir = TempDir::new("rotate");
    let log = AuditLog::builder(dir.path())
        .max_file_bytes(8192)
        .sync_interval(None)
        .start()
        .unwrap();
    for i in 0..1000 {
        log.record(record(i));
    }
    assert!(log.shutdown(Duration::from_secs(10)));
    let files = log.files().unwrap();
    assert!(files.len() > 10, "{} files", files.len());
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 8192);
    }
    let r = check(&files, None);
    assert!(r.is_ok(), "{:?}", r.problem);
    assert_eq!(r.last_seq, Some(1000 + files.len() as u64 + 1));
    // Each later file starts by naming the one before and carrying its last hash.
    let second = read_lines(&files[1]);
    let first = read_lines(&files[0]);
    let start = AuditLine::parse(&second[0]).unwrap();
    assert_eq!(
        start.record,
        AuditRecord::FileStart {
            previous_file: "audit-000001.jsonl".into(),
            reason: FileStartReason::Rotation,
            discarded_bytes: 0
        }
    );
    assert_eq!(start.prev, hash_of(first.last().unwrap()));

    // Out of order, or one missing: the file that does not follow is named.
    let mut swapped = files.clone();
    swapped.swap(3, 4);
    let p = check(&swapped, None).problem.unwrap();
    assert_eq!(
        (p.kind, p.file.clone(), p.line),
        (ProblemKind::FileOrder, files[4].clone(), 1)
    );
    let mut missing = files.clone();
    missing.remove(5);
    let p = check(&missing, None).problem.unwrap();
    assert_eq!(
        (p.kind, p.file.clone(), p.line),
        (ProblemKind::FileOrder, files[6].clone(), 1)
    );
    // Starting later is allowed (older files archived): the report says so.
    let r = check(&files[3..], None);
    assert!(r.is_ok() && !r.from_genesis, "{r:?}");
    // The last line of a middle file removed: found at the end of that file.
    let lines = read_lines(&files[2]);
    let n = lines.len();
    write_lines(&files[2], &lines[..n - 1]);
    let p = check(&files, None).problem.unwrap();
    assert_eq!(
        (p.kind, p.file.clone(), p.line),
        (ProblemKind::Removed, files[2].clone(), n as u64)
    );
    // The first line (file_start) of a file removed: found at its first line.
    write_lines(&files[2], &lines);
    let lines = read_lines(&files[7]);
    write_lines(&files[7], &lines[1..]);
    let p = check(&files, None).problem.unwrap();
    assert_eq!(
        (p.kind, p.file.clone(), p.line),
        (ProblemKind::Removed, files[7].clone(), 1)
    );
}

#[test]
fn a_restart_continues_the_chain_and_cuts_a_torn_line() {
    let dir = TempDir::new("restart");
    let log = AuditLog::builder(dir.path()).start().unwrap();
    for i in 0..10 {
        log.record(record(i));
    }
    assert!(log.flush(Duration::from_secs(5)));
    drop(log);
    // The second writer "crashes": its last line is torn and it never closes.
    let log = AuditLog::builder(dir.path()).start().unwrap();
    log.record(record(10));
    assert!(log.flush(Duration::from_secs(5)));
    let files = log.files().unwrap();
    std::mem::forget(log);
    let last = files.last().unwrap();
    let mut text = std::fs::read_to_string(last).unwrap();
    text.push_str("{\"seq\":99,\"ts\":\"2026");
    std::fs::write(last, text).unwrap();
    // The open log (no log_closed) verifies only when allowed; the torn line never.
    let opts = VerifyOptions {
        key: None,
        allow_open: true,
    };
    let p = verify(&files, &opts).unwrap().problem.unwrap();
    assert_eq!(p.kind, ProblemKind::Malformed);
    // A third writer repairs the tail and links to it.
    let log = AuditLog::builder(dir.path()).start().unwrap();
    log.record(record(11));
    assert!(log.shutdown(Duration::from_secs(5)));
    let files = log.files().unwrap();
    assert_eq!(files.len(), 3);
    let r = check(&files, None);
    assert!(r.is_ok(), "{:?}", r.problem);
    let start = AuditLine::parse(&read_lines(&files[2])[0]).unwrap();
    assert!(
        matches!(
            start.record,
            AuditRecord::FileStart {
                reason: FileStartReason::Restart,
                discarded_bytes: 20,
                ..
            }
        ),
        "{start:?}"
    );
}

#[test]
fn a_full_queue_drops_counts_and_records_the_count() {
    let dir = TempDir::new("overflow");
    let log = AuditLog::builder(dir.path())
        .queue_capacity(8)
        .start()
        .unwrap();
    assert!(log.flush(Duration::from_secs(5)));
    let hold = log.hold_writer();
    let t = Instant::now();
    for i in 0..20 {
        log.record(record(i));
    }
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "offering must not wait"
    );
    assert_eq!(log.stats().dropped_queue_full, 12);
    drop(hold);
    // Wait for the writer to drain the queue before offering more.
    assert!(log.flush(Duration::from_secs(5)));
    log.record(record(99));
    assert!(log.shutdown(Duration::from_secs(5)));
    let files = log.files().unwrap();
    let lines = read_lines(&files[0]);
    let dropped: Vec<AuditRecord> = lines
        .iter()
        .map(|l| AuditLine::parse(l).unwrap().record)
        .filter(|r| matches!(r, AuditRecord::Dropped { .. }))
        .collect();
    assert_eq!(
        dropped,
        [AuditRecord::Dropped {
            count: 12,
            reason: DropReason::QueueFull
        }]
    );
    assert!(check(&files, None).is_ok());
}

#[test]
fn an_unwritable_directory_neither_blocks_nor_panics() {
    let dir = TempDir::new("unwritable");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let log = AuditLog::builder(file.join("audit"))
        .report_interval(Duration::from_millis(50))
        .start()
        .unwrap();
    let exec = default_exec();
    let engine = fake_engine(exec, &[log.clone() as Arc<dyn Monitor>]);
    let rt = rt();
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let t = Instant::now();
        log.on_event(&vana_sandbox_core::Event::LimitHit {
            id: "x",
            tenant: None,
            limit: LimitKind::Timeout,
        });
        slowest = slowest.max(t.elapsed());
        let r = rt
            .block_on(engine.execute(ExecutionRequest::new("fake", format!("run {i}"))))
            .unwrap();
        assert_eq!(r.status, Status::Success);
    }
    assert!(
        slowest < Duration::from_millis(5),
        "on_event took {slowest:?}"
    );
    assert!(log.flush(Duration::from_secs(5)));
    let s = log.stats();
    assert!(!s.healthy);
    assert!(s.write_errors > 0);
    assert!(s.lost_write_failed >= 50 + 100, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("ot a directory"),
        "{s:?}"
    );
    assert_eq!(s.written, 0);
    assert!(
        log.shutdown(Duration::from_secs(5)),
        "shutting down must not hang"
    );
}

#[test]
fn a_failing_open_loses_records_counted_then_recorded_when_it_works_again() {
    let dir = TempDir::new("recover");
    let log = AuditLog::builder(dir.path())
        .max_file_bytes(4096)
        .start()
        .unwrap();
    // Block the next file name: the rotation's open fails until the blocker goes.
    let blocker = dir.path().join("audit-000002.jsonl");
    std::os::unix::fs::symlink("/dev/full", &blocker).unwrap();
    for i in 0..200 {
        log.record(record(i));
    }
    assert!(log.flush(Duration::from_secs(5)));
    let lost = log.stats().lost_write_failed;
    assert!(lost > 100, "{:?}", log.stats());
    std::fs::remove_file(&blocker).unwrap();
    log.record(record(1000));
    assert!(log.shutdown(Duration::from_secs(5)));
    let files = log.files().unwrap();
    let r = check(&files, None);
    assert!(r.is_ok(), "{:?}", r.problem);
    let recorded: Vec<AuditRecord> = files
        .iter()
        .flat_map(|f| read_lines(f))
        .map(|l| AuditLine::parse(&l).unwrap().record)
        .filter(|r| matches!(r, AuditRecord::Dropped { .. }))
        .collect();
    assert_eq!(
        recorded,
        [AuditRecord::Dropped {
            count: lost,
            reason: DropReason::WriteFailed
        }]
    );
}

#[test]
fn engine_runs_are_audited_with_code_hash_tenant_and_verdict() {
    let dir = TempDir::new("engine");
    let log = AuditLog::builder(dir.path()).hmac_key(KEY).start().unwrap();
    let engine = fake_engine(default_exec(), &[log.clone() as Arc<dyn Monitor>]);
    let rt = rt();
    let r = rt
        .block_on(engine.execute_as("acme", ExecutionRequest::new("fake", "print(1)")))
        .unwrap();
    assert_eq!(r.status, Status::Success);
    let r = rt
        .block_on(engine.execute_as("acme", ExecutionRequest::new("cobol", "x")))
        .unwrap();
    assert_eq!(r.status, Status::Rejected);
    assert!(log.shutdown(Duration::from_secs(5)));
    let files = log.files().unwrap();
    assert!(check(&files, Some(KEY)).is_ok());
    let records: Vec<AuditRecord> = read_lines(&files[0])
        .iter()
        .map(|l| AuditLine::parse(l).unwrap().record)
        .collect();
    let types: Vec<&str> = records.iter().map(AuditRecord::type_name).collect();
    assert_eq!(
        types,
        [
            "log_start",
            "run_started",
            "run_finished",
            "rejected",
            "log_closed"
        ]
    );
    let sha = vana_sandbox_monitor::audit::code_sha256("print(1)");
    match &records[1] {
        AuditRecord::RunStarted {
            tenant,
            code_sha256,
            policy_fingerprint,
            language,
            ..
        } => {
            assert_eq!(tenant.as_deref(), Some("acme"));
            assert_eq!(code_sha256, &sha);
            assert_eq!(policy_fingerprint, "sha256:fake");
            assert_eq!(language, "fake");
        }
        other => panic!("{other:?}"),
    }
    match &records[2] {
        AuditRecord::RunFinished { status, tenant, .. } => {
            assert_eq!(*status, Status::Success);
            assert_eq!(tenant.as_deref(), Some("acme"));
        }
        other => panic!("{other:?}"),
    }
    match &records[3] {
        AuditRecord::Rejected {
            reason,
            code_sha256,
            ..
        } => {
            assert!(reason.contains("cobol"), "{reason}");
            assert_eq!(code_sha256, &vana_sandbox_monitor::audit::code_sha256("x"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn egress_decisions_and_sessions_are_audited_in_their_exact_form() {
    use vana_sandbox_core::network::{DenyReason, Verdict};
    use vana_sandbox_core::{BackendKind, Event, SessionEnd};
    let dir = TempDir::new("egress");
    let log = AuditLog::builder(dir.path()).hmac_key(KEY).start().unwrap();
    let spec = session_spec();
    let mut allowed = net_decision("pypi.org", 443, Verdict::Allowed, 517, 40960);
    allowed.method = vana_sandbox_core::network::Method::Connect;
    allowed.address = Some("127.0.0.1:443".parse().unwrap());
    let denied = net_decision(
        "other.test",
        80,
        Verdict::Denied(DenyReason::NotAllowed),
        0,
        0,
    );
    let events = [
        Event::SessionOpened {
            id: "s-1",
            tenant: Some("acme"),
            backend: BackendKind::Native,
            spec: &spec,
        },
        Event::Network {
            id: "s-1",
            tenant: Some("acme"),
            decision: &allowed,
        },
        Event::Network {
            id: "s-1",
            tenant: Some("acme"),
            decision: &denied,
        },
        Event::SessionClosed {
            id: "s-1",
            tenant: Some("acme"),
            reason: SessionEnd::IdleTimeout,
            cells: 3,
            lifetime: Duration::from_micros(61_250_500),
        },
    ];
    for e in &events {
        log.on_event(e);
    }
    assert!(log.shutdown(Duration::from_secs(5)));
    let files = log.files().unwrap();
    assert!(check(&files, Some(KEY)).is_ok());
    let lines = read_lines(&files[0]);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    // The record part of each line, exactly (the envelope is checked by the chain tests).
    let body = |line: &str| {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in ["seq", "ts", "prev", "hash"] {
            o.remove(k).unwrap();
        }
        v
    };
    let limits = serde_json::to_value(spec.limits).unwrap();
    let want = [
        serde_json::json!({
            "type": "session_opened", "id": "s-1", "tenant": "acme", "backend": "native",
            "runtime": null, "policy": "fake", "policy_fingerprint": "sha256:fake",
            "limits": limits, "network": "none",
        }),
        serde_json::json!({
            "type": "network", "id": "s-1", "tenant": "acme", "host": "pypi.org", "port": 443,
            "method": "CONNECT", "address": "127.0.0.1:443", "bytes_up": 517,
            "bytes_down": 40960, "verdict": "allowed", "at_ms": 1_700_000_000_123u64,
            "duration_ms": 7,
        }),
        serde_json::json!({
            "type": "network", "id": "s-1", "tenant": "acme", "host": "other.test", "port": 80,
            "method": "GET", "address": null, "bytes_up": 0, "bytes_down": 0,
            "verdict": "denied", "reason": "not_allowed", "at_ms": 1_700_000_000_123u64,
            "duration_ms": 7,
        }),
        serde_json::json!({
            "type": "session_closed", "id": "s-1", "tenant": "acme", "reason": "idle_timeout",
            "cells": 3, "lifetime_ms": 61250.5,
        }),
    ];
    for (line, want) in lines[1..5].iter().zip(&want) {
        assert_eq!(&body(line), want, "{line}");
    }
    // Field order on the line: the type first, the decision's fields flat after id and tenant.
    assert!(
        lines[3].contains(
            "\"type\":\"network\",\"id\":\"s-1\",\"tenant\":\"acme\",\"host\":\"other.test\",\"port\":80,"
        ),
        "{}",
        lines[3]
    );
    // Each line reads back as the record the event made.
    for (line, event) in lines[1..5].iter().zip(&events) {
        assert_eq!(
            Some(AuditLine::parse(line).unwrap().record),
            AuditRecord::from_event(event)
        );
    }
}

/// Holds the lock of `dir`'s log from another process (`python3`, POSIX `lockf`, the same
/// kind of lock the writer takes) until its stdin closes.
fn lock_from_another_process(dir: &Path) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys\nf = open(sys.argv[1], 'a')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()\n",
        ])
        .arg(dir.join(".audit.lock"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n");
    child
}

#[test]
fn one_writer_per_directory_across_processes() {
    let dir = TempDir::new("lock");
    let mut other = lock_from_another_process(dir.path());
    let e = AuditLog::builder(dir.path()).start().unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("being written by another process") && msg.contains(&other.id().to_string()),
        "{msg}"
    );
    // With a wait, the writer starts once the other process lets go (it exits here).
    let stdin = other.stdin.take();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(stdin);
        other.wait().unwrap();
    });
    let log = AuditLog::builder(dir.path())
        .lock_wait(Duration::from_secs(10))
        .start()
        .unwrap();
    releaser.join().unwrap();
    log.record(record(1));
    assert!(log.shutdown(Duration::from_secs(5)));
    // The lock file is not part of the log.
    let files = log.files().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(check(&files, None).is_ok());
}
