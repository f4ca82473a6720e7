//! Every limit of the native backend, attacked. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use vana_sandbox::Status;

#[test]
fn memory_bomb_is_memory_limit() {
    let _g = serial();
    let mut r = req("python", "a = []\nwhile True:\n    a.append(' ' * 10**6)\n");
    r.limits = limits(|l| l.memory_mb = Some(64));
    let res = run(r);
    assert_eq!(res.status, Status::MemoryLimit, "{res:#?}");
    assert!(res.resource_usage.memory_peak_bytes <= 64 << 20, "{res:#?}");
    assert!(res.error.as_deref().unwrap_or("").contains("out of memory"));
    assert_no_leftovers();
}

#[test]
fn sigkill_without_oom_is_killed_not_memory_limit() {
    let _g = serial();
    let res = run(req(
        "python",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    ));
    assert_eq!(res.status, Status::Killed, "{res:#?}");
    assert_eq!(res.signal, Some(9));
    assert_no_leftovers();
}

#[test]
fn fork_bomb_is_held_by_the_pids_limit_and_the_host_stays_usable() {
    let _g = serial();
    let code =
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n";
    let mut r = req("python", code);
    r.timeout = Some(4.0);
    r.limits = limits(|l| l.max_processes = Some(32));
    let e = engine(2);
    let rt = rt();
    let bomb = rt.spawn({
        let e = e.clone();
        async move { e.execute(r).await }
    });
    std::thread::sleep(Duration::from_millis(1500));
    // While the bomb runs, the host can start processes and another sandbox runs normally.
    let t = Instant::now();
    let host = std::process::Command::new("/bin/true")
        .status()
        .expect("host can fork");
    assert!(host.success());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "host fork took {:?}",
        t.elapsed()
    );
    let benign = rt
        .block_on(e.execute(req("bash", "echo fine")))
        .expect("benign");
    assert_eq!(benign.status, Status::Success, "{benign:#?}");
    assert_eq!(benign.output, "fine\n");
    let res = rt.block_on(bomb).expect("join").expect("bomb");
    assert_eq!(res.status, Status::Timeout, "{res:#?}");
    assert!(res.resource_usage.processes_peak <= 32, "{res:#?}");
    assert!(
        res.security_events
            .iter()
            .any(|e| e.kind.as_str() == "limit_hit" && e.detail.contains("process limit")),
        "{res:#?}"
    );
    assert_no_leftovers();
}

#[test]
fn endless_loop_times_out_within_a_second_of_the_limit() {
    let _g = serial();
    let mut r = req("python", "while True:\n    pass\n");
    r.timeout = Some(2.0);
    let t = Instant::now();
    let res = run(r);
    let took = t.elapsed();
    assert_eq!(res.status, Status::Timeout, "{res:#?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        res.execution_time >= 2.0 && res.execution_time < 3.0,
        "{res:#?}"
    );
    assert_no_leftovers();
}

#[test]
fn daemons_and_orphans_are_gone_when_the_result_returns() {
    let _g = serial();
    let code = r#"
import os, subprocess
# a double-forked, setsid daemon
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "1000"])
    os._exit(0)
# a plain orphan
subprocess.Popen(["/bin/sh", "-c", "sleep 1000 &"])
import time; time.sleep(0.3)
print("spawned")
"#;
    let res = run(req("python", code));
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "spawned\n");
    let left = settled(sandbox_processes);
    assert!(left.is_empty(), "survivors: {left:?}");
    assert_no_leftovers();
}

#[test]
fn disk_fill_stops_at_the_disk_limit() {
    let _g = serial();
    let code = r#"
import errno
total = 0
chunk = b"x" * (1 << 20)
for path in ["/workspace/fill", "/tmp/fill"]:
    try:
        with open(path, "wb") as f:
            while True:
                f.write(chunk)
                f.flush()
                total += len(chunk)
    except OSError as e:
        print(path, errno.errorcode.get(e.errno))
print("total", total)
"#;
    let mut r = req("python", code);
    r.limits = limits(|l| l.disk_mb = Some(8));
    let res = run(r);
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert!(
        res.output.contains("/workspace/fill ENOSPC"),
        "{}",
        res.output
    );
    assert!(res.output.contains("/tmp/fill ENOSPC"), "{}", res.output);
    let total: u64 = res
        .output
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(total <= 8 << 20, "wrote {total} bytes past an 8 MiB limit");
    assert!(res.resource_usage.disk_usage_bytes <= 8 << 20, "{res:#?}");
    assert!(res.resource_usage.disk_usage_bytes >= 6 << 20, "{res:#?}");
    assert_no_leftovers();
}

#[test]
fn gigabyte_stdout_flood_is_output_limit_with_bounded_host_memory() {
    let _g = serial();
    let before = rss_bytes("VmRSS:");
    let code =
        "import sys\nb = b'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.buffer.write(b)\n";
    let res = run(req("python", code));
    assert_eq!(
        res.status,
        Status::OutputLimit,
        "{}",
        res.error.as_deref().unwrap_or("")
    );
    assert_eq!(res.output.len(), 1 << 20);
    assert!(res.truncated.stdout);
    let after = rss_bytes("VmRSS:");
    assert!(
        after.saturating_sub(before) < 64 << 20,
        "host RSS grew from {before} to {after}"
    );
    assert_no_leftovers();
}

#[test]
fn stdin_inputs_reach_the_program() {
    let _g = serial();
    let mut r = req(
        "python",
        "import sys\nprint(sum(int(l) for l in sys.stdin))\n",
    );
    r.inputs = Some(vec!["1".into(), "2".into(), "39".into()]);
    let res = run(r);
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "42\n");
    assert_no_leftovers();
}

#[test]
fn non_zero_exit_is_error_with_stderr() {
    let _g = serial();
    let res = run(req("bash", "echo oops >&2; exit 3"));
    assert_eq!(res.status, Status::Error);
    assert_eq!(res.exit_code, Some(3));
    assert_eq!(res.error.as_deref(), Some("oops\n"));
    assert_eq!(res.stderr, "oops\n");
    assert_no_leftovers();
}
