//! Native isolation v2: one identity per sandbox, our own init as PID 1, death with the owner.
//! Needs root (CI runs as root); fails loudly without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vana_sandbox::{NativeConfig, NativeExecutor, Status};

const CLI: &str = env!("CARGO_BIN_EXE_vana-sandbox");

/// Host processes of our sandboxes that are not zombies: uids of the lease range, or init's
/// name (`vana-init` keeps its name; the setup child is `vana-setup`).
fn live_sandbox_processes() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        if field("State:").starts_with('Z') {
            continue;
        }
        let uid: u32 = field("Uid:")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        let name = field("Name:");
        if SANDBOX_UIDS.contains(&uid) || name == "vana-init" || name == "vana-setup" {
            out.push(format!("{pid} {name} uid {uid}"));
        }
    }
    out
}

#[test]
fn init_is_pid_1_and_out_of_the_programs_reach() {
    let _g = serial();
    let code = r#"
import ctypes, errno, os, resource
print("cmdline", repr(open("/proc/1/cmdline", "rb").read()))
try:
    env = open("/proc/1/environ", "rb").read()
    print("environ", "empty" if env == b"" else "LEAK %r" % env[:80])
except OSError as e:
    print("environ", "refused", errno.errorcode[e.errno])
try:
    resource.prlimit(1, resource.RLIMIT_NOFILE, (1, 1))
    print("prlimit ALLOWED")
except OSError as e:
    print("prlimit refused", errno.errorcode[e.errno])
try:
    os.setpriority(os.PRIO_PROCESS, 1, 19)
    print("setpriority ALLOWED")
except OSError as e:
    print("setpriority refused", errno.errorcode[e.errno])
try:
    os.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0))
    print("sched ALLOWED")
except OSError as e:
    print("sched refused", errno.errorcode[e.errno])
try:
    os.kill(1, 9)
    print("kill sent (ignored by PID 1 without a handler)")
except OSError as e:
    print("kill refused", errno.errorcode[e.errno])
st = dict(l.split(":", 1) for l in open("/proc/1/status").read().splitlines())
print("init uid", st["Uid"].split()[0], "me", os.getuid())
"#;
    let r = run(req("python", code));
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let out = &r.output;
    assert!(out.contains("cmdline b'vana-init\\x00'"), "{out}");
    assert!(!out.contains("LEAK"), "{out}");
    assert!(!out.contains("ALLOWED"), "{out}");
    // The seccomp table allows prlimit64 on the caller only (ENOSYS); the kernel would refuse it
    // anyway (EPERM: init has another uid).
    assert!(
        out.contains("prlimit refused ENOSYS") || out.contains("prlimit refused EPERM"),
        "{out}"
    );
    assert!(out.contains("setpriority refused"), "{out}");
    assert!(out.contains("init uid 0 me 1000"), "{out}");
    assert_no_leftovers();
}

#[test]
fn a_sandbox_dies_with_its_owner_even_on_sigkill() {
    let _g = serial();
    require_root();
    let before = settled(live_sandbox_processes);
    assert!(before.is_empty(), "{before:?}");
    let mut owner = Command::new(CLI)
        .args([
            "run",
            "--lang",
            "bash",
            "--timeout",
            "25",
            "--code",
            "sleep 100 & echo started; wait",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the CLI");
    let mut line = String::new();
    BufReader::new(owner.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line, "started\n");
    let before = live_sandbox_processes();
    assert!(
        before.len() >= 3,
        "expected init, bash and sleep: {before:?}"
    );
    // SAFETY: kill(2) of the child we spawned.
    unsafe { libc::kill(owner.id() as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let _ = owner.wait();
    let mut left = live_sandbox_processes();
    while !left.is_empty() && killed.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
        left = live_sandbox_processes();
    }
    assert!(
        left.is_empty(),
        "1 s after the owner's SIGKILL, these remain: {left:?}"
    );
    println!("sandbox gone {:?} after its owner", killed.elapsed());
    // Only an empty cgroup can remain; the next executor removes it.
    let _ = NativeExecutor::new().expect("native");
    assert_no_leftovers();
}

/// Per-uid kernel quotas exhausted by hogs in one process never break runs in another.
#[test]
fn quota_hogs_in_one_process_never_disturb_another() {
    let _g = serial();
    require_root();
    let hogs: &[&str] = &[
        // Processes (RLIMIT_NPROC, pids).
        r#"{"request":{"language":"bash","code":":(){ :|:& };:; sleep 2","timeout":1.5}}"#,
        // Threads.
        r#"{"request":{"language":"python","code":"import threading,time\nts=[]\ntry:\n  while True:\n    t=threading.Thread(target=time.sleep,args=(5,),daemon=True); t.start(); ts.append(t)\nexcept Exception as e: print(len(ts))\ntime.sleep(1)","timeout":1.5}}"#,
        // inotify instances.
        r#"{"request":{"language":"python","code":"import ctypes,time\nl=ctypes.CDLL(None)\nn=0\nwhile l.inotify_init1(0)>=0: n+=1\nprint(n); time.sleep(1)","timeout":1.5}}"#,
        // POSIX timers.
        r#"{"request":{"language":"python","code":"import ctypes,time\nl=ctypes.CDLL(None)\nt=ctypes.c_void_p()\nn=0\nwhile n<100000 and l.timer_create(1,None,ctypes.byref(t))==0: n+=1\nprint(n); time.sleep(1)","timeout":1.5}}"#,
        // Pending signals (RLIMIT_SIGPENDING).
        r#"{"request":{"language":"python","code":"import signal,os,time\nsignal.pthread_sigmask(signal.SIG_BLOCK,[40])\nn=0\ntry:\n  while n<1000000:\n    signal.sigqueue(os.getpid(),40,0) if hasattr(signal,'sigqueue') else os.kill(os.getpid(),40); n+=1\nexcept OSError: pass\nprint(n); time.sleep(1)","timeout":1.5}}"#,
        // Memory.
        r#"{"request":{"language":"python","code":"a=[]\nwhile True: a.append(b' '*10**6)","timeout":3,"limits":{"memory_mb":64}}}"#,
    ];
    let benign: &[&str] = &[
        r#"{"request":{"language":"python","code":"print('ok')"},"expect":{"status":"success","output":"ok\n"}}"#,
        r#"{"request":{"language":"bash","code":"for i in 1 2 3; do (echo $i) ; done | wc -l"},"expect":{"status":"success","output":"3\n"}}"#,
        r#"{"request":{"language":"python","code":"import subprocess\nprint(subprocess.run(['echo','sub'],capture_output=True,text=True).stdout,end='')"},"expect":{"status":"success","output":"sub\n"}}"#,
        r#"{"request":{"language":"python","code":"import threading\nr=[]\nts=[threading.Thread(target=r.append,args=(i,)) for i in range(16)]\n[t.start() for t in ts]; [t.join() for t in ts]\nprint(len(r))"},"expect":{"status":"success","output":"16\n"}}"#,
        r#"{"request":{"language":"python","code":"import ctypes\nl=ctypes.CDLL(None)\nprint('inotify', l.inotify_init1(0) >= 0)"},"expect":{"status":"success","output":"inotify True\n"}}"#,
        r#"{"request":{"language":"javascript","code":"console.log('js')"},"expect":{"status":"success","output":"js\n"}}"#,
    ];
    // One hog for every three benign runs.
    let mut lines = Vec::new();
    for (i, h) in hogs.iter().enumerate() {
        lines.push(h.to_string());
        for b in benign.iter().cycle().skip(i * 3).take(3) {
            lines.push(b.to_string());
        }
    }
    let file = std::env::temp_dir().join(format!("vana-quota-mix-{}.jsonl", std::process::id()));
    std::fs::write(&file, lines.join("\n")).expect("write mix");
    let spawn = || {
        Command::new(CLI)
            .args(["load", "--runs", "200", "--concurrency", "4"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn load")
    };
    let (a, b) = (spawn(), spawn());
    for (name, child) in [("first", a), ("second", b)] {
        let out = child.wait_with_output().expect("wait");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(&text).expect("summary JSON");
        println!("{name} process: {text}");
        assert_eq!(v["runs"], 200, "{text}");
        assert_eq!(
            v["mismatches"].as_array().map(Vec::len),
            Some(0),
            "{name} process had wrong results: {text}"
        );
        for bad in ["sandbox_error", "engine_error"] {
            assert!(v["statuses"].get(bad).is_none(), "{name}: {text}");
        }
        assert!(out.status.success(), "{text}");
    }
    let _ = std::fs::remove_file(&file);
    assert_no_leftovers();
}

#[test]
fn a_full_state_directory_is_a_clear_error_not_a_hang() {
    let _g = serial();
    require_root();
    let dir = std::env::temp_dir().join(format!("vana-full-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,nr_inodes=16", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("mount");
    assert!(status.success());
    let config = NativeConfig {
        state_dir: dir.clone(),
        ..NativeConfig::default()
    };
    let exec = NativeExecutor::with_config(config).expect("executor");
    // Use up every inode: no lease file can be created.
    for i in 0.. {
        if std::fs::write(dir.join(format!("fill-{i}")), b"").is_err() {
            break;
        }
    }
    let e = vana_sandbox::Engine::builder()
        .executor(std::sync::Arc::new(exec))
        .policy(std::sync::Arc::new(vana_sandbox::PolicyConfig::default()))
        .languages(vana_sandbox::lang::installed())
        .build()
        .expect("engine");
    let started = Instant::now();
    let r = rt()
        .block_on(e.execute(req("bash", "echo hi")))
        .expect("engine");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r.status, Status::SandboxError, "{r:#?}");
    let err = r.error.unwrap_or_default();
    assert!(err.contains("leasing the sandbox's ids"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let _ = Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir_all(&dir);
    assert_no_leftovers();
}
