//! The isolation layers of the native backend, attacked. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;

use common::*;
use vana_sandbox::Status;

#[test]
fn no_network_to_host_loopback() {
    let _g = serial();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let code = format!(
        "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\nexcept OSError as e:\n    print('blocked', e.errno)\n"
    );
    let res = run(req("python", &code));
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert!(res.output.starts_with("blocked"), "{}", res.output);
    assert!(
        listener.accept().is_err(),
        "the host listener saw a connection"
    );
    assert_no_leftovers();
}

#[test]
fn base_is_read_only() {
    let _g = serial();
    let code = "for p in /usr/evil /etc/passwd /evil /bin/evil; do if (echo x > $p) 2>/dev/null; then echo \"wrote $p\"; fi; done\n\
                touch /workspace/ok /tmp/ok && echo writable";
    let res = run(req("bash", code));
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "writable\n");
    assert!(!std::path::Path::new("/usr/evil").exists());
    assert_no_leftovers();
}

#[test]
fn host_secrets_and_environment_are_not_visible() {
    let _g = serial();
    // SAFETY: tests in this binary are serialised; no other thread reads the environment now.
    std::env::set_var("VANA_TEST_SECRET", "hunter2");
    let code = r#"
import os
for p in ["/root", "/home", "/etc/shadow", "/run/vana-sandbox", "/sys"]:
    print(p, os.path.exists(p))
print("secret" if any("hunter2" in v for v in os.environ.values()) else "clean")
print(sorted(os.environ))
"#;
    let res = run(req("python", code));
    std::env::remove_var("VANA_TEST_SECRET");
    assert_eq!(res.status, Status::Success, "{res:#?}");
    for p in ["/root", "/home", "/etc/shadow", "/run/vana-sandbox", "/sys"] {
        assert!(
            res.output.contains(&format!("{p} False")),
            "{p} visible: {}",
            res.output
        );
    }
    assert!(res.output.contains("clean"), "{}", res.output);
    assert!(!res.output.contains("VANA_TEST_SECRET"), "{}", res.output);
    assert_no_leftovers();
}

#[test]
fn unprivileged_without_capabilities_and_no_new_privs() {
    let _g = serial();
    let code = r#"
import os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
print("uid", os.getuid(), os.geteuid(), os.getgid())
print("groups", os.getgroups())
for k in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd", "NoNewPrivs"]:
    print(k, status[k].strip())
print("host", os.uname().nodename)
print("pid", os.getpid())
"#;
    let res = run(req("python", code));
    assert_eq!(res.status, Status::Success, "{res:#?}");
    let out = &res.output;
    let ids: Vec<u32> = out
        .lines()
        .find_map(|l| l.strip_prefix("uid "))
        .unwrap_or("")
        .split(' ')
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(ids.len(), 3, "{out}");
    assert!(
        ids.iter().all(|id| *id == vana_sandbox::PROGRAM_ID),
        "not the sandbox user of its user namespace: {out}"
    );
    for k in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert!(out.contains(&format!("{k} 0000000000000000")), "{k}: {out}");
    }
    assert!(out.contains("NoNewPrivs 1"), "{out}");
    assert!(out.contains("host sandbox"), "{out}");
    // The program is the second process of its own PID namespace (init is PID 1).
    assert!(out.contains("pid 2\n"), "{out}");
    assert_no_leftovers();
}

#[test]
fn host_processes_are_invisible_and_proc_is_private() {
    let _g = serial();
    let code = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\nprint(open('/proc/1/comm').read().strip())";
    let res = run(req("python", code));
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert!(
        res.output.starts_with("[1, 2]\n"),
        "saw other processes: {}",
        res.output
    );
    assert!(res.output.contains("vana-init"), "{}", res.output);
    assert_no_leftovers();
}

#[test]
fn javascript_and_bash_run() {
    let _g = serial();
    let res = run(req(
        "javascript",
        "console.log([1,2,3].map(x => x * 2).join(','))",
    ));
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "2,4,6\n");
    let res = run(req("sh", "echo $((6 * 7))"));
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "42\n");
    assert_eq!(res.language, "bash");
    assert_no_leftovers();
}

/// Every sandbox has a network namespace of its own (made ahead or at its clone, used once):
/// a concurrent sandbox reaches neither its loopback listener nor its abstract socket, its own
/// loopback works, and nothing inside can reconfigure the namespace.
#[test]
fn concurrent_sandboxes_share_no_network_namespace() {
    let _g = serial();
    let e = engine(4);
    let listener = r#"
import socket, time
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 47123)); t.listen()
u = socket.socket(socket.AF_UNIX); u.bind("\0vana-peer"); u.listen()
print("listening", flush=True)
time.sleep(4)
"#;
    let prober = r#"
import socket, time, errno
def attempt(name, family, addr):
    s = socket.socket(family); s.settimeout(1)
    try:
        s.connect(addr); print(name, "reached")
    except OSError as e:
        print(name, "refused")
attempt("tcp", socket.AF_INET, ("127.0.0.1", 47123))
attempt("abstract", socket.AF_UNIX, "\0vana-peer")
own = socket.socket(); own.bind(("127.0.0.1", 0)); own.listen()
c = socket.create_connection(own.getsockname(), timeout=1); print("own loopback works")
try:
    open("/proc/sys/net/ipv4/ip_forward", "w").write("1"); print("sysctl written")
except OSError as e:
    print("sysctl refused")
import fcntl, struct
try:
    fcntl.ioctl(own, 0x8914, struct.pack("16sh22x", b"lo", 0)); print("lo reconfigured")
except OSError as e:
    print("ioctl refused", errno.errorcode[e.errno])
"#;
    let (a, b) = beside(
        &e,
        req("python", listener),
        "listening",
        req("python", prober),
    );
    assert_eq!(a.status, Status::Success, "{a:#?}");
    assert_eq!(a.output, "listening\n");
    assert_eq!(b.status, Status::Success, "{b:#?}");
    assert_eq!(
        b.output,
        "tcp refused\nabstract refused\nown loopback works\nsysctl refused\nioctl refused EPERM\n"
    );
    drop(e);
    assert_no_leftovers();
}

/// No inode is shared between concurrent sandboxes of one host process, device nodes
/// included: inotify on `/dev/null` (or the `/dev` directory) in one sees nothing of another's
/// writes, while it sees its own.
#[test]
fn concurrent_sandboxes_share_no_device_inode() {
    let _g = serial();
    let e = engine(4);
    let watcher = r#"
import ctypes, select, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def watch(path):
    fd = libc.inotify_init1(0)
    assert libc.inotify_add_watch(fd, path, 0x1 | 0x2 | 0x20 | 0x8 | 0x10) > 0, ctypes.get_errno()
    return fd
def seen(fd, wait):
    return bool(select.select([fd], [], [], wait)[0])
own = watch(b"/dev/null")
subprocess.run("echo x > /dev/null", shell=True)
print("own", seen(own, 1))
fds = [watch(p) for p in (b"/dev/null", b"/dev/zero", b"/dev", b"/dev/urandom")]
print("watching", flush=True)
print("other", any(seen(fd, 0) for fd in fds) or seen(fds[0], 3))
"#;
    let writer = "for i in $(seq 200); do echo x > /dev/null; head -c 1 /dev/zero >/dev/null; \
                  head -c 1 /dev/urandom >/dev/null; ls /dev >/dev/null; done; echo wrote";
    let (a, b) = beside(&e, req("python", watcher), "watching", req("bash", writer));
    assert_eq!(b.status, Status::Success, "{b:#?}");
    assert_eq!(b.output, "wrote\n");
    assert_eq!(a.status, Status::Success, "{a:#?}");
    assert_eq!(a.output, "own True\nwatching\nother False\n");
    drop(e);
    assert_no_leftovers();
}

/// Runs `first`, and `second` beside it once `first` has printed `ready` (its output, streamed);
/// both results.
fn beside(
    e: &vana_sandbox::Engine,
    first: vana_sandbox::ExecutionRequest,
    ready: &'static str,
    second: vana_sandbox::ExecutionRequest,
) -> (vana_sandbox::ExecutionResult, vana_sandbox::ExecutionResult) {
    rt().block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tx = Some(tx);
        let sink: vana_sandbox::OutputSink = Box::new(move |_, bytes: &[u8]| {
            if String::from_utf8_lossy(bytes).contains(ready) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        });
        let ea = e.clone();
        let first = tokio::spawn(async move {
            ea.execute_with_io(
                first,
                vana_sandbox::ProcessIo::bytes(Vec::new(), Some(sink)),
            )
            .await
        });
        rx.await
            .unwrap_or_else(|_| panic!("the first run never printed {ready:?}"));
        let second = e.execute(second).await.expect("engine");
        (first.await.expect("join").expect("engine"), second)
    })
}

/// Sandboxes prepared ahead (`NativeConfig::pool_size`): the pool fills, each prepared sandbox
/// serves one execution (nothing of an earlier run is there), and its programs run at the
/// priority of the host that asked — the refill is built at background priority, which init
/// must not pass on. Nothing is left once the executor is gone.
#[test]
fn prepared_sandboxes_are_fresh_and_at_the_hosts_priority() {
    let _g = serial();
    require_root();
    let rt = rt();
    // SAFETY: getpriority with integer arguments (0: this thread); nice values fit.
    let host_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let executor = std::sync::Arc::new(
        vana_sandbox::NativeExecutor::with_config(vana_sandbox::NativeConfig {
            pool_size: 2,
            ..vana_sandbox::NativeConfig::default()
        })
        .expect("native executor"),
    );
    let engine = vana_sandbox::Engine::builder()
        .executor(executor.clone())
        .policy(std::sync::Arc::new(vana_sandbox::PolicyConfig::default()))
        .languages(vana_sandbox::lang::installed())
        .build()
        .expect("engine");
    // The 19th field of /proc/self/stat is the nice value (the command, `cut`, has no spaces).
    let probe = "ls /tmp; touch /tmp/used-before; cut -d' ' -f19 /proc/self/stat";
    let first = rt
        .block_on(engine.execute(req("bash", probe)))
        .expect("run");
    assert_eq!(first.status, Status::Success, "{first:#?}");
    for i in 0..3 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while executor.prepared() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(executor.prepared() > 0, "run {i}: no sandbox was prepared");
        let r = rt
            .block_on(engine.execute(req("bash", probe)))
            .expect("run");
        assert_eq!(
            (r.status, r.output.trim()),
            (Status::Success, host_nice.to_string().as_str()),
            "run {i}: a prepared sandbox was used before, or runs at another priority: {r:#?}"
        );
    }
    drop(engine);
    drop(executor);
    assert_no_leftovers();
}
