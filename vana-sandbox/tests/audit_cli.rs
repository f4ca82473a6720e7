//! `vana-sandbox audit verify`: exit 0 on an intact log, 1 with the file and line of the first
//! problem, 2 when the files or the key cannot be read. Needs no root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vana_sandbox::LimitKind;
use vana_sandbox_monitor::audit::{AuditLog, AuditRecord};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vana-sandbox"))
}

fn write_log(dir: &Path, key: Option<&[u8]>) -> Vec<PathBuf> {
    let mut b = AuditLog::builder(dir).max_file_bytes(4096);
    if let Some(k) = key {
        b = b.hmac_key(k);
    }
    let log = b.start().unwrap();
    for i in 0..100 {
        log.record(AuditRecord::LimitHit {
            id: format!("run-{i}"),
            tenant: None,
            limit: LimitKind::Timeout,
        });
    }
    assert!(log.shutdown(Duration::from_secs(5)));
    log.files().unwrap()
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vana-audit-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn verify_reports_intact_broken_and_unreadable_logs() {
    let dir = tmp("plain");
    let files = write_log(&dir, None);
    assert!(files.len() > 1);
    let out = bin()
        .args(["audit", "verify"])
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("closed"), "{stdout}");

    // Alter line 3 of the second file.
    let text = std::fs::read_to_string(&files[1]).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = lines[2].replace("run-", "nur-");
    std::fs::write(&files[1], lines.join("\n") + "\n").unwrap();
    let out = bin()
        .args(["audit", "verify"])
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let at = format!("BROKEN: {}:3: altered", files[1].display());
    assert!(stdout.starts_with(&at), "{stdout}");

    let out = bin()
        .args(["audit", "verify", "--json"])
        .args(&files)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problem"]["line"], 3);
    assert_eq!(v["problem"]["kind"], "altered");

    let out = bin()
        .args(["audit", "verify", "/nonexistent/audit-000001.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_takes_the_hmac_key_from_a_file() {
    let dir = tmp("hmac");
    let key_file = dir.join("key");
    std::fs::write(&key_file, "a key of at least sixteen bytes\n").unwrap();
    let logs = dir.join("log");
    let files = write_log(&logs, Some(b"a key of at least sixteen bytes"));
    let ok = bin()
        .args(["audit", "verify", "--hmac-key-file"])
        .arg(&key_file)
        .args(&files)
        .status()
        .unwrap();
    assert_eq!(ok.code(), Some(0));
    let without = bin()
        .args(["audit", "verify"])
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&without.stdout).contains("give its key"));
    std::fs::write(&key_file, "short").unwrap();
    let bad = bin()
        .args(["audit", "verify", "--hmac-key-file"])
        .arg(&key_file)
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 16"));
    let _ = std::fs::remove_dir_all(&dir);
}
