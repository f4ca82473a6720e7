//! The CLI: `exec --json` (the machine interface), `run` and `doctor`. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_vana-sandbox");

/// Runs the CLI with `stdin`, failing the test if it hangs.
fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    cli_env(args, stdin, &[])
}

/// [`cli`] with extra environment variables.
fn cli_env(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the CLI hung");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn exec(request: &str) -> Value {
    let (code, out, err) = cli(&["exec", "--json"], request);
    assert_eq!(code, 0, "stderr: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn plan_example_without_packages_succeeds() {
    let _g = serial();
    require_root();
    let v = exec(
        r#"{
      "language": "python",
      "code": "print('Hello, World!')",
      "inputs": ["input1", "input2"],
      "timeout": 30,
      "network_access": false
    }"#,
    );
    assert_eq!(v["status"], "success", "{v:#}");
    assert_eq!(v["output"], "Hello, World!\n");
    assert_eq!(v["error"], Value::Null);
    for key in [
        "execution_time",
        "resource_usage",
        "id",
        "exit_code",
        "truncated",
        "security_events",
        "backend",
        "language",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v:#}");
    }
    for key in ["cpu_time", "memory_peak", "disk_usage"] {
        assert!(
            v["resource_usage"].get(key).is_some(),
            "missing resource_usage.{key}: {v:#}"
        );
    }
    assert_eq!(v["backend"], "native");
    assert_no_leftovers();
}

/// The plan's example as it is, `packages` included: the packages come from the index (into a
/// cache of the test's own), the program runs, the result says what was installed; a policy
/// with packages off rejects it, naming why.
#[test]
fn plan_example_with_packages_installs_them() {
    let _g = serial();
    require_root();
    let cache = std::env::temp_dir().join(format!("vana-cli-packages-{}", std::process::id()));
    let plan = r#"{"language":"python","code":"print('Hello, World!')","inputs":["input1","input2"],"timeout":30,"network_access":false,"packages":["requests","numpy"]}"#;
    let dir = cache.display().to_string();
    let (code, out, err) = cli_env(
        &["exec", "--json"],
        plan,
        &[("VANA_SANDBOX_PACKAGE_DIR", dir.as_str())],
    );
    let _ = std::fs::remove_dir_all(&cache);
    assert_eq!(code, 0, "stderr: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["status"], "success", "{v:#}");
    assert_eq!(v["output"], "Hello, World!\n");
    let names: Vec<&str> = v["packages"]["installed"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"numpy") && names.contains(&"requests"),
        "{v:#}"
    );
    assert_eq!(v["packages"]["cached"], false, "{v:#}");

    // (strict allows 10 s at most: the plan's 30 s would be the first thing refused.)
    let strict_plan = plan.replace(r#""timeout":30,"#, "");
    let (code, out, err) = cli(&["exec", "--json", "--preset", "strict"], &strict_plan);
    assert_eq!(code, 0, "stderr: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["status"], "rejected", "{v:#}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("packages are disabled by policy `strict`"),
        "{v:#}"
    );
    assert_no_leftovers();
}

#[test]
fn invalid_requests_are_rejected_with_clear_messages() {
    let _g = serial();
    let cases = [
        (r#"{"language":"cobol","code":"x"}"#, "unknown language"),
        (r#"{"language":"python","code":"   "}"#, "code is empty"),
        (
            r#"{"language":"python","code":"print(1)","timeout":0}"#,
            "timeout must be at least 0.001",
        ),
        (
            r#"{"language":"python","code":"print(1)","timeout":10000}"#,
            "timeout must be at least 0.001 and at most 3600",
        ),
        (
            r#"{"language":"python","code":"print(1)","args":["a\u0000b"]}"#,
            "args[0] contains a NUL byte",
        ),
        (
            r#"{"language":"python","code":"print(1)""#,
            "malformed request JSON",
        ),
        (r#"not json at all"#, "malformed request JSON"),
        (
            r#"{"language":"python","code":"print(1)","limits":{"memory_mb":-5}}"#,
            "limits.memory_mb must be at least 8",
        ),
        (
            r#"{"language":"python","code":"print(1)","timeout":20,"limits":{"memory_mb":100000}}"#,
            "exceeds the maximum",
        ),
        (
            r#"{"language":"python","code":"print(1)","network_access":true}"#,
            "network access is disabled",
        ),
        (
            r#"{"language":"python","code":"print(1)","env":{"A=B":"x"}}"#,
            "env name",
        ),
        (
            r#"{"language":"python","code":"print(1)","files":[{"path":"../x","content":"y"}]}"#,
            "files[0].path",
        ),
    ];
    for (request, message) in cases {
        let v = exec(request);
        assert_eq!(v["status"], "rejected", "{request}: {v:#}");
        let err = v["error"].as_str().unwrap_or("");
        assert!(
            err.contains(message),
            "{request}: expected `{message}` in `{err}`"
        );
    }
    assert_no_leftovers();
}

#[test]
fn run_prints_output_and_exits_with_the_programs_code() {
    let _g = serial();
    require_root();
    let (code, out, _) = cli(&["run", "--lang", "python", "--code", "print(1)"], "");
    assert_eq!((code, out.as_str()), (0, "1\n"));
    // The sandbox ends after the output, but before the process exits.
    let left = leftovers();
    assert!(left.is_empty(), "left behind at exit: {left:#?}");
    let (code, out, err) = cli(
        &[
            "run",
            "--lang",
            "bash",
            "--code",
            "echo out; echo err >&2; exit 7",
        ],
        "",
    );
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));
    let (code, _, err) = cli(
        &[
            "run",
            "--lang",
            "python",
            "--code",
            "while True: pass",
            "--timeout",
            "1",
        ],
        "",
    );
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("timeout"), "{err}");
    let (code, out, _) = cli(
        &[
            "run",
            "--json",
            "--lang",
            "js",
            "--code",
            "console.log('j')",
        ],
        "",
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["output"], "j\n");
    assert_no_leftovers();
}

#[test]
fn exec_stream_emits_chunks_as_they_happen_then_the_result() {
    let _g = serial();
    require_root();
    let request = serde_json::json!({
        "language": "python",
        "code": "import sys, time\nprint('first', flush=True)\nprint('warn', file=sys.stderr, flush=True)\ntime.sleep(1.5)\nprint('second')",
    })
    .to_string();
    let mut child = Command::new(BIN)
        .args(["exec", "--json", "--stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("write stdin");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ));
    let parse = |l: &str| -> Value {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    };
    // The program may write `first` and its newline in two writes, so the
    // chunks are gathered until the whole first line has been seen.
    let mut events: Vec<Value> = Vec::new();
    let stdout_so_far = |events: &[Value]| -> String {
        events
            .iter()
            .filter(|c| c["event"] == "chunk" && c["data"]["stream"] == "stdout")
            .map(|c| c["data"]["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    while !stdout_so_far(&events).contains("first\n") {
        let line = lines.next().expect("a chunk line").expect("read");
        let event = parse(&line);
        assert_eq!(
            event["event"], "chunk",
            "a result before the first line: {line}"
        );
        events.push(event);
    }
    let first_at = Instant::now();
    events.extend(lines.map(|l| parse(&l.expect("read"))));
    let status = child.wait().expect("wait");
    assert!(status.success());
    // The first line came while the program was still sleeping.
    assert!(
        first_at.elapsed() >= Duration::from_millis(1000),
        "the first line arrived only {:?} before the end",
        first_at.elapsed()
    );
    let (result, chunks) = events.split_last().expect("a result line");
    assert_eq!(result["event"], "result");
    assert_eq!(result["data"]["status"], "success");
    assert_eq!(result["data"]["output"], "first\nsecond\n");
    assert!(chunks.iter().all(|c| c["event"] == "chunk"));
    let text = |stream: &str| -> String {
        chunks
            .iter()
            .filter(|c| c["data"]["stream"] == stream)
            .map(|c| c["data"]["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(text("stdout"), "first\nsecond\n");
    assert_eq!(text("stderr"), "warn\n");
    // A refused request is a single result line too.
    let (code, out, _) = cli(&["exec", "--json", "--stream"], "{not json");
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).expect("json line");
    assert_eq!(v["event"], "result");
    assert_eq!(v["data"]["status"], "rejected");
    assert_no_leftovers();
}

#[test]
fn doctor_reports_layers_and_toolchains() {
    let _g = serial();
    require_root();
    let (code, out, err) = cli(&["doctor", "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let layers = v["backends"][0]["capabilities"]["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |n: &str| {
        layers
            .iter()
            .any(|l| l["name"] == n && l["available"] == true)
    };
    for l in [
        "pid_namespace",
        "mount_namespace",
        "network_namespace",
        "cgroup_memory",
        "cgroup_pids",
        "no_new_privs",
    ] {
        assert!(has(l), "{l} not available: {out}");
    }
    let langs = v["languages"].as_array().cloned().unwrap_or_default();
    assert!(
        langs
            .iter()
            .any(|l| l["language"] == "python" && l["available"] == true),
        "{out}"
    );
    // The package cache, its size and the index in use.
    let p = &v["packages"];
    assert_eq!(p["indexes"]["pypi"], "https://pypi.org/simple", "{out}");
    assert_eq!(p["indexes"]["npm"], "https://registry.npmjs.org/", "{out}");
    assert!(
        p["cache"]["dir"].is_string() && p["cache"]["bytes"].is_u64(),
        "{out}"
    );
    assert!(
        p["cache"]["installers"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["ecosystem"] == "pypi")),
        "{out}"
    );
}
