//! Attacks and checks specific to the Docker backend, under runc and under runsc (gVisor): the
//! seccomp allow-list and non-native ABIs, results a program cannot forge, one disk budget,
//! usage read before teardown, compiled languages under gVisor, a language the image lacks,
//! process quotas under gVisor, host facts in /proc, the CPU limit. Needs root and a running
//! Docker engine with both runtimes and the runtime images (scripts/test.sh installs and starts
//! everything); fails loudly without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use vana_sandbox::{
    DockerConfig, ExecutionRequest, ExecutionResult, PolicyConfig, Runtime, Sandbox,
    SecurityEventKind, Status,
};

/// Runs `code` in `language` on `b` with `f` applied to the request.
fn run_with(
    b: Backend,
    language: &str,
    code: &str,
    f: impl FnOnce(&mut ExecutionRequest),
) -> ExecutionResult {
    let mut r = req(language, code);
    f(&mut r);
    let result = run_on(b, r);
    assert_clean(b);
    result
}

fn python(b: Backend, code: &str) -> ExecutionResult {
    run_with(b, "python", code, |_| {})
}

/// The runtime of a Docker backend under test.
fn runtime(b: Backend) -> Runtime {
    match b {
        Backend::Docker(rt) => Runtime::parse(rt).expect("runtime"),
        Backend::Native => panic!("a Docker test ran on the native backend"),
    }
}

fn no_seccomp_kill_event(r: &ExecutionResult) {
    assert!(
        !r.security_events
            .iter()
            .any(|e| e.kind == SecurityEventKind::SeccompKill),
        "a seccomp_kill event without kernel evidence: {r:#?}"
    );
}

/// Fails loudly unless the full image (Go, gcc) is present.
fn require_full_image() {
    let ok = Command::new("docker")
        .args(["image", "inspect", vana_sandbox::image::FULL_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the full runtime image {} is missing: run `vana-sandbox image build --full` (scripts/test.sh does)",
        vana_sandbox::image::FULL_IMAGE
    );
}

// ------------------------------------------------------------------------------ system calls

/// System calls outside the allow-list answer ENOSYS (never EPERM, which breaks glibc's clone3
/// fallback) and never reach the kernel; ordinary threads still work.
fn seccomp_allow_list(b: Backend) {
    let code = r#"
import ctypes, threading
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    return r, ctypes.get_errno()
calls = {"io_uring_setup": (425, 1, 0), "io_setup": (206, 64, 0), "unshare": (272, 0x20000),
         "ptrace": (101, 16, 1), "kcmp": (312, 1, 1, 0, 0, 0), "modify_ldt": (154, 0, 0, 0),
         "memfd_secret": (447, 0), "open_tree_attr": (467, -100, 0, 0, 0, 0), "bpf": (321, 0, 0, 0),
         "keyctl": (250, 0), "clone3": (435, 0, 0), "beyond the table": (1000,)}
for name, (nr, *args) in calls.items():
    print(name, sc(nr, *args))
t = threading.Thread(target=lambda: print("thread ran"))
t.start(); t.join()
"#;
    let r = python(b, code);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    for line in r.output.lines().filter(|l| !l.starts_with("thread")) {
        assert!(line.ends_with("(-1, 38)"), "not ENOSYS: {line}\n{r:#?}");
    }
    assert_eq!(r.output.lines().count(), 13, "{}", r.output);
    assert!(r.output.contains("thread ran\n"), "{r:#?}");
}
all_backends!(seccomp_allow_list: docker_runc, docker_runsc);

/// Non-native system call ABIs (x32 numbers, a 32-bit `int 0x80`) never run: runc's profile and
/// init's filter kill the process (SIGSYS); gVisor has no such ABIs. Never reported as a
/// seccomp_kill: the signal alone is no kernel evidence.
fn non_native_abis_are_refused(b: Backend) {
    let x32 = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(ctypes.c_long(0x40000000 | 39))
print("result", r, ctypes.get_errno(), flush=True)
"#;
    let int80 = r#"
import ctypes, mmap
code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"  # mov eax, 20 (i386 getpid); int 0x80; ret
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
print("result", f(), flush=True)
"#;
    for code in [x32, int80] {
        let r = python(b, code);
        no_seccomp_kill_event(&r);
        match r.status {
            Status::Killed => assert_eq!(r.signal, Some(libc::SIGSYS), "{r:#?}"),
            // gVisor: no such ABI; the call fails without running.
            Status::Success if b.is_gvisor() => {
                let v: i64 = r
                    .output
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                assert!(v < 0, "a non-native call returned {v}: {r:#?}");
            }
            _ => panic!("a non-native system call was not refused: {r:#?}"),
        }
        if !b.is_gvisor() {
            assert_eq!(r.status, Status::Killed, "{r:#?}");
        }
    }
}
all_backends!(non_native_abis_are_refused: docker_runc, docker_runsc);

/// A program that raises SIGSYS itself is killed by signal 31 — not a seccomp kill.
fn raised_sigsys_is_a_plain_kill(b: Backend) {
    let r = python(b, "import os, signal\nos.kill(os.getpid(), signal.SIGSYS)");
    assert_eq!(
        (r.status, r.signal),
        (Status::Killed, Some(libc::SIGSYS)),
        "{r:#?}"
    );
    no_seccomp_kill_event(&r);
}
all_backends!(raised_sigsys_is_a_plain_kill: docker_runc, docker_runsc);

// ------------------------------------------------------------------------- forged results

/// Whatever a program prints — the old "killed by signal" marker, bytes shaped like init's
/// frames — is output, never a report: the status comes from init's exit report.
fn forged_reports_are_output(b: Backend) {
    let code = r#"
import os, struct, sys
frame = lambda t, p: struct.pack("<II", t, len(p)) + p
exited = frame(102, struct.pack("<IQQQ", 9, 0, 0, 0))   # "Exited: killed by SIGKILL"
disk = frame(301, struct.pack("<Q", 1 << 40))
for fd in (1, 2):
    os.write(fd, exited + disk + b"\nabcdef0123456789abcdef01:signal:9\n")
for p in sys.argv[1:]:
    print(p)
sys.exit(3)
"#;
    let r = run_with(b, "python", code, |r| {
        r.args = vec!["--".into(), "deadbeef:signal:9".into()]
    });
    assert_eq!(
        (r.status, r.exit_code, r.signal),
        (Status::Error, Some(3), None),
        "{r:#?}"
    );
    assert!(r.output.contains(":signal:9"), "{r:#?}");
    assert!(
        r.resource_usage.disk_usage_bytes < 1 << 30,
        "a forged disk report was believed: {r:#?}"
    );
}
all_backends!(forged_reports_are_output: docker_runc, docker_runsc);

/// Init is out of the program's reach: its descriptors, environment and memory are closed to
/// the program, signals to it are ignored, and it still reports after the program tried.
fn init_is_out_of_reach(b: Backend) {
    let code = r#"
import os, signal
def attempt(name, f):
    try:
        f()
        print(name, "allowed")
    except OSError as e:
        print(name, "refused")
attempt("fd list", lambda: os.listdir("/proc/1/fd"))
attempt("stdin", lambda: os.open("/proc/1/fd/0", os.O_RDONLY | os.O_NONBLOCK))
attempt("stdout", lambda: os.open("/proc/1/fd/1", os.O_WRONLY | os.O_NONBLOCK))
attempt("environ", lambda: open("/proc/1/environ", "rb").read())
attempt("mem", lambda: open("/proc/1/mem", "rb").read(1))
for s in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):
    try:
        os.kill(1, s)
    except OSError:
        pass
print("uid", os.getuid(), "init uid", os.stat("/proc/1").st_uid)
"#;
    let r = python(b, code);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    // Init's stdio (the protocol) can be neither read nor written, under both runtimes. gVisor
    // (this version) lets the program list init's descriptors and read its environment (only
    // PATH); runc's /proc refuses both (init is not dumpable).
    let refused: &[&str] = if b.is_gvisor() {
        &["stdin", "stdout", "mem"]
    } else {
        &["fd list", "stdin", "stdout", "environ", "mem"]
    };
    for what in refused {
        assert!(
            r.output.contains(&format!("{what} refused")),
            "{what}: {r:#?}"
        );
    }
    assert!(r.output.contains("uid 10001 init uid 0"), "{r:#?}");
    // Init read the guard's events back after the program: it was alive.
    assert!(
        !r.security_events
            .iter()
            .any(|e| e.detail.contains("could not be read back")),
        "{r:#?}"
    );
}
all_backends!(init_is_out_of_reach: docker_runc, docker_runsc);

// ------------------------------------------------------------------------------ disk budget

/// /workspace, /tmp and /dev/shm share one budget: filling all three stores at most the limit,
/// and the reported usage counts all three.
fn one_disk_budget(b: Backend) {
    let code = r#"
import os
total = 0
for d in ("/workspace", "/tmp", "/dev/shm"):
    n = 0
    try:
        with open(os.path.join(d, "fill"), "wb") as f:
            while True:
                f.write(b"x" * 65536); f.flush(); n += 65536
    except OSError:
        pass
    print(d, n)
    total += n
print("total", total)
"#;
    let r = run_with(b, "python", code, |r| {
        r.limits = limits(|l| l.disk_mb = Some(16));
    });
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let total: u64 = r
        .output
        .lines()
        .find_map(|l| l.strip_prefix("total "))
        .and_then(|t| t.parse().ok())
        .expect("total");
    assert!(
        total <= 16 << 20,
        "stored {total} bytes under a 16 MiB limit"
    );
    assert!(total >= 12 << 20, "only {total} bytes fit: {r:#?}");
    let used = r.resource_usage.disk_usage_bytes;
    assert!(
        (total..=16 << 20).contains(&used),
        "reported {used}, stored {total}"
    );
}
all_backends!(one_disk_budget: docker_runc, docker_runsc);

// ------------------------------------------------------------------ usage before teardown

/// Every way a run ends reports the memory and disk it used, read before the container goes.
fn usage_before_teardown(b: Backend) {
    let write = "open('/workspace/f', 'wb').write(b'x' * 3000000)\n";
    let cases: Vec<(&str, String, Status)> = vec![
        ("success", write.to_string(), Status::Success),
        (
            "timeout",
            format!("{write}a = ' ' * 10**7\nwhile True:\n    pass"),
            Status::Timeout,
        ),
        (
            "memory",
            format!("{write}a = []\nwhile True:\n    a.append(' ' * 10**6)"),
            Status::MemoryLimit,
        ),
        (
            "output",
            format!("{write}import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"),
            Status::OutputLimit,
        ),
        (
            "killed",
            format!("{write}import os\nos.kill(os.getpid(), 9)"),
            Status::Killed,
        ),
    ];
    for (name, code, want) in cases {
        let r = run_with(b, "python", &code, |r| {
            r.timeout = Some(2.0);
            r.limits = limits(|l| {
                l.memory_mb = Some(96);
                l.max_output_bytes = Some(100_000);
            });
        });
        assert_eq!(r.status, want, "{name}: {r:#?}");
        let u = &r.resource_usage;
        assert!(u.memory_peak_bytes >= 4 << 20, "{name}: {r:#?}");
        // gVisor's sandbox itself dies at the memory limit: the disk figure is then init's
        // last measurement, taken before the program ran.
        if !(b.is_gvisor() && want == Status::MemoryLimit) {
            assert!(u.disk_usage_bytes >= 3_000_000, "{name}: {r:#?}");
        }
        if want == Status::MemoryLimit {
            assert!(u.memory_peak_bytes >= 90 << 20, "{name}: {r:#?}");
        }
    }
}
all_backends!(usage_before_teardown: docker_runc, docker_runsc);

// ------------------------------------------------------------------- compiled languages

/// Go and Rust compile and run under both runtimes (under runsc without `docker update`), and
/// the run step's limits hold after a compile step that had more.
fn compiled_languages(b: Backend) {
    require_full_image();
    let go = "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"hi from go\") }";
    let rust = "fn main() { println!(\"hi from rust\"); }";
    for (lang, code, want) in [("go", go, "hi from go\n"), ("rust", rust, "hi from rust\n")] {
        let r = run_with(b, lang, code, |_| {});
        assert_eq!(
            (r.status, r.output.as_str()),
            (Status::Success, want),
            "{lang}: {r:#?}"
        );
    }
    // The compiler needs more than 64 MiB; the program may not have it.
    let hog = "package main\nimport \"fmt\"\nfunc main() {\n\tvar keep [][]byte\n\tfor i := 0; i < 64; i++ {\n\t\tb := make([]byte, 8<<20)\n\t\tfor j := range b { b[j] = 1 }\n\t\tkeep = append(keep, b)\n\t}\n\tfmt.Println(len(keep))\n}";
    let r = run_with(b, "go", hog, |r| {
        r.limits = limits(|l| l.memory_mb = Some(64));
    });
    assert_eq!(r.status, Status::MemoryLimit, "{r:#?}");
    let compile = r.compile.as_ref().expect("a compile report");
    assert!(
        compile.status == Status::Success || compile.cached,
        "{r:#?}"
    );
}
all_backends!(compiled_languages: docker_runc, docker_runsc);

// -------------------------------------------------------------- a language the image lacks

/// A language whose toolchain the image does not have is a clear sandbox error naming the
/// image and how to get one — never a compile error blaming the program.
fn language_the_image_lacks(b: Backend) {
    require_root();
    require_docker(match b {
        Backend::Docker(rt) => rt,
        Backend::Native => "runc",
    });
    let rt = rt();
    let config = DockerConfig {
        runtime: runtime(b),
        images: BTreeMap::from([("go".to_string(), vana_sandbox::image::DEFAULT_IMAGE.into())]),
        ..DockerConfig::default()
    };
    let engine = rt
        .block_on(Sandbox::docker(config, PolicyConfig::default()))
        .expect("docker");
    let r = rt
        .block_on(engine.execute(req("go", "package main\nfunc main() {}")))
        .expect("engine");
    assert_eq!(r.status, Status::SandboxError, "{r:#?}");
    let e = r.error.clone().unwrap_or_default();
    assert!(e.contains(vana_sandbox::image::DEFAULT_IMAGE), "{e}");
    assert!(e.contains("has no go toolchain"), "{e}");
    assert!(e.contains("vana-sandbox image build --full"), "{e}");
    drop(engine);
    assert_clean(b);
}
all_backends!(language_the_image_lacks: docker_runc, docker_runsc);

// --------------------------------------------------------------------- process quota

/// A program that forks until it cannot ends with its own status (fork fails with EAGAIN), as on
/// the native backend; under gVisor its sandbox does not crash at the host's task limit.
fn process_quota(b: Backend) {
    let code = r#"
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(2)
            os._exit(0)
        n += 1
except OSError as e:
    print("fork refused after", n, e.errno)
"#;
    let r = run_with(b, "python", code, |r| {
        r.limits = limits(|l| l.max_processes = Some(48));
    });
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let n: u64 = r
        .output
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .expect("a fork count");
    assert!(
        (40..48).contains(&n),
        "{n} forks under a limit of 48: {r:#?}"
    );
    assert!(r.output.trim_end().ends_with(" 11"), "not EAGAIN: {r:#?}");
}
all_backends!(process_quota: docker_runc, docker_runsc);

// -------------------------------------------------------------------------- host facts

fn host(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// /proc does not describe the host: its boot id, memory, lock holders, boot time, uptime,
/// kernel command line (runc: masked or replaced; gVisor: its own /proc).
fn host_facts_hidden(b: Backend) {
    let code = r#"
def read(p):
    try:
        return open(p).read()
    except OSError as e:
        return "unreadable"
for p in ("/proc/sys/kernel/random/boot_id", "/proc/cmdline", "/proc/locks"):
    print(p, repr(read(p).strip()))
print("memtotal", read("/proc/meminfo").split()[1])
print("btime", [l for l in read("/proc/stat").splitlines() if l.startswith("btime")])
print("uptime", read("/proc/uptime").split()[:1])
"#;
    let r = run_with(b, "python", code, |r| {
        r.limits = limits(|l| l.memory_mb = Some(200));
    });
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let out = &r.output;
    let boot_id = host("/proc/sys/kernel/random/boot_id");
    assert!(!out.contains(boot_id.trim()), "the host's boot id: {out}");
    let cmdline = host("/proc/cmdline");
    assert!(
        !out.contains(cmdline.trim()),
        "the host's command line: {out}"
    );
    let memtotal: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("memtotal "))
        .and_then(|m| m.parse().ok())
        .expect("memtotal");
    let host_mem: u64 = host("/proc/meminfo")
        .split_whitespace()
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(memtotal < host_mem, "the host's memory: {memtotal} kB");
    let btime = host("/proc/stat")
        .lines()
        .find(|l| l.starts_with("btime"))
        .unwrap_or("btime ?")
        .to_string();
    assert!(!out.contains(&btime), "the host's boot time: {out}");
    if !b.is_gvisor() {
        assert_eq!(memtotal, 200 * 1024, "{out}");
        assert!(out.contains("/proc/locks ''"), "{out}");
        assert!(out.contains("boot_id ''"), "{out}");
    }
}
all_backends!(host_facts_hidden: docker_runc, docker_runsc);

// ---------------------------------------------------------------------------- CPU limit

/// The default policy's one core holds: two spinning processes get one core's worth of time.
fn one_core(b: Backend) {
    let code = "( while :; do :; done ) & ( while :; do :; done ) & sleep 3; kill %1 %2";
    let r = run_with(b, "bash", code, |_| {});
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let cpu = r.resource_usage.cpu_time;
    assert!(
        cpu <= 1.25 * r.execution_time && cpu > 1.0,
        "{cpu} s of CPU in {} s",
        r.execution_time
    );
}
all_backends!(one_core: docker_runc, docker_runsc);

/// The request's files, placed by the container's init itself (one frame, no helper process):
/// nested directories made, every file the program's own (it can rewrite and remove them), the
/// workspace's `/tmp` a sticky world-writable directory, a binary file byte for byte; and the
/// same with a file too large for a frame (then placed by `tar`).
fn request_files_are_the_programs_own(b: Backend) {
    let code = r#"
import os, stat, sys
uid = os.getuid()
for p in sys.argv[1:]:
    st = os.stat(p)
    assert st.st_uid == uid and st.st_gid == uid, (p, st.st_uid, st.st_gid, uid)
    assert stat.S_IMODE(st.st_mode) == 0o644, (p, oct(st.st_mode))
    open(p, "a").write("mine")
    os.remove(p)
assert stat.S_IMODE(os.stat("data/deep").st_mode) == 0o755
t = os.stat("/tmp")
assert t.st_mode & 0o1777 == 0o1777, oct(t.st_mode)
print("ok")
"#;
    let file = |path: &str, content: String| vana_sandbox::FileSpec {
        path: path.into(),
        content: Some(content),
        content_base64: None,
    };
    let blob = vana_sandbox::FileSpec {
        path: "blob.bin".into(),
        content: None,
        content_base64: Some(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            (0..=255u8).collect::<Vec<_>>(),
        )),
    };
    // Small files (one frame: init), then with a file too large for a frame (`tar`).
    for big in [false, true] {
        let check = "import sys\nassert open('data/deep/in.txt').read() == 'hello'\nassert open('blob.bin', 'rb').read() == bytes(range(256))\n";
        let r = run_with(b, "python", &format!("{check}{code}"), |r| {
            r.files = vec![file("data/deep/in.txt", "hello".into()), blob.clone()];
            r.args = vec!["data/deep/in.txt".into(), "blob.bin".into()];
            if big {
                r.files.push(file("big.txt", "x".repeat(300_000)));
                r.args.push("big.txt".into());
            }
        });
        assert_eq!(
            (r.status, r.output.as_str()),
            (Status::Success, "ok\n"),
            "big {big}: {r:#?}"
        );
    }
}
all_backends!(request_files_are_the_programs_own: docker_runc, docker_runsc);

// ------------------------------------------------------------- program-written channels

/// The guard's events file is written inside the sandbox: whatever the program puts there (a
/// huge sparse file, a FIFO, a link to /dev/zero, forged lines) is read back capped at 64 KiB,
/// never blocks the host, and only ever yields events marked as program-reported.
fn guard_events_are_capped_reports(b: Backend) {
    let forge = r#"
import json, os
p = "/workspace/.vana/events.jsonl"
os.remove(p)
MODE
"#;
    let cases = [
        (
            "sparse",
            "f = open(p, 'wb'); f.truncate(64 << 20); f.close()",
        ),
        ("fifo", "os.mkfifo(p)"),
        ("link", "os.symlink('/dev/zero', p)"),
        (
            "forged",
            "open(p, 'w').write(json.dumps({'kind': 'seccomp_kill', 'detail': 'forged'}) + '\\n')",
        ),
    ];
    for (name, mode) in cases {
        let start = std::time::Instant::now();
        let r = python(b, &forge.replace("MODE", mode));
        assert_eq!(r.status, Status::Success, "{name}: {r:#?}");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{name}: took {:?}",
            start.elapsed()
        );
        no_seccomp_kill_event(&r);
        for e in &r.security_events {
            if e.kind == SecurityEventKind::LanguageGuard {
                assert_eq!(e.source, vana_sandbox::Reporter::Program, "{name}: {e:?}");
            }
        }
    }
}
all_backends!(guard_events_are_capped_reports: docker_runc, docker_runsc);

// ------------------------------------------------------------------------ owner death

/// When the process that owns a container dies (SIGKILL included), the container stops: its
/// attach connection closes, Docker closes init's stdin, init kills everything and exits.
fn containers_die_with_their_owner(b: Backend) {
    require_root();
    require_docker(match b {
        Backend::Docker(rt) => rt,
        Backend::Native => "runc",
    });
    let before = docker_leftovers();
    let mut owner = Command::new(env!("CARGO_BIN_EXE_vana-sandbox"))
        .args(["run", "--backend", "docker", "--runtime"])
        .arg(runtime(b).as_str())
        .args(["-l", "bash", "-c", "sleep 25", "--timeout", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the CLI");
    let running = |id: &str| {
        Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", id])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
            .unwrap_or(false)
    };
    let mut ours = Vec::new();
    for _ in 0..100 {
        ours = docker_leftovers()
            .into_iter()
            .filter(|c| !before.contains(c))
            .collect();
        if ours.iter().any(|c| running(c)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!ours.is_empty(), "the owner started no container");
    std::thread::sleep(std::time::Duration::from_millis(500));
    owner.kill().expect("SIGKILL the owner");
    let _ = owner.wait();
    let mut stopped = false;
    for _ in 0..100 {
        if !ours.iter().any(|c| running(c)) {
            stopped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // What a dead owner leaves is removed by the next executor's start; here, by hand.
    let _ = Command::new("docker")
        .args(["rm", "-f"])
        .args(&ours)
        .output();
    assert!(stopped, "a container outlived its owner by 10 s");
    assert_clean(b);
}
all_backends!(containers_die_with_their_owner: docker_runc, docker_runsc);
