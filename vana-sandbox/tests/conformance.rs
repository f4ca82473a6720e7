//! One conformance suite, written once and run against every backend: native, Docker with runc,
//! Docker with runsc (gVisor). Needs root; the Docker parts need a running Docker engine with the
//! runtime image (scripts/test.sh installs and starts everything) and fail loudly without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;

use common::*;
use vana_sandbox::{DockerConfig, Engine, PolicyConfig, Status};

fn success(b: Backend) {
    let r = run_on(b, req("python", "print('Hello, World!')"));
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert_eq!(r.output, "Hello, World!\n");
    assert_eq!(r.exit_code, Some(0));
    assert!(r.resource_usage.memory_peak_bytes > 0, "{r:#?}");
    assert_clean(b);
}

fn stdin(b: Backend) {
    let mut r = req(
        "python",
        "import sys\nprint(sum(int(l) for l in sys.stdin))",
    );
    r.inputs = Some(vec!["40".into(), "2".into()]);
    let r = run_on(b, r);
    assert_eq!(
        (r.status, r.output.as_str()),
        (Status::Success, "42\n"),
        "{r:#?}"
    );
    assert_clean(b);
}

fn non_zero_exit(b: Backend) {
    let r = run_on(b, req("bash", "echo out; echo err >&2; exit 3"));
    assert_eq!(r.status, Status::Error, "{r:#?}");
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.signal, None);
    assert_eq!((r.output.as_str(), r.stderr.as_str()), ("out\n", "err\n"));
    assert_clean(b);
}

fn killed_by_signal(b: Backend) {
    let r = run_on(
        b,
        req(
            "python",
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        ),
    );
    assert_eq!(
        (r.status, r.signal, r.exit_code),
        (Status::Killed, Some(9), None),
        "{r:#?}"
    );
    assert_clean(b);
}

fn timeout(b: Backend) {
    let mut r = req("python", "while True:\n    pass");
    r.timeout = Some(2.0);
    let r = run_on(b, r);
    assert_eq!(r.status, Status::Timeout, "{r:#?}");
    assert!(r.execution_time >= 2.0 && r.execution_time < 3.5, "{r:#?}");
    assert_clean(b);
}

fn memory(b: Backend) {
    let mut r = req("python", "a = []\nwhile True:\n    a.append(' ' * 10**6)");
    r.limits = limits(|l| l.memory_mb = Some(64));
    let r = run_on(b, r);
    assert_eq!(r.status, Status::MemoryLimit, "{r:#?}");
    assert_clean(b);
}

fn pids(b: Backend) {
    let code = "import threading, time\nn = 0\ntry:\n    while True:\n        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()\n        n += 1\nexcept RuntimeError:\n    pass\nprint(n)";
    let mut r = req("python", code);
    r.limits = limits(|l| l.max_processes = Some(16));
    let r = run_on(b, r);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let n: u64 = r.output.trim().parse().unwrap_or(999);
    assert!(n < 16, "{n} threads started under a limit of 16");
    assert_clean(b);
}

/// The default policy's CPU limit (one core) holds: two processes spinning for two seconds on a
/// two-core host get about one core between them.
fn cpu_cap(b: Backend) {
    let code = "import multiprocessing, time\ndef spin():\n    end = time.time() + 2\n    while time.time() < end:\n        pass\nif __name__ == '__main__':\n    ps = [multiprocessing.Process(target=spin) for _ in range(2)]\n    [p.start() for p in ps]\n    [p.join() for p in ps]\n    print('done')";
    let r = run_on(b, req("python", code));
    assert_eq!(
        (r.status, r.output.as_str()),
        (Status::Success, "done\n"),
        "{r:#?}"
    );
    let ratio = r.resource_usage.cpu_time / r.execution_time;
    assert!(
        ratio <= 1.3,
        "{ratio:.2} cores used under a one-core limit: {r:#?}"
    );
    assert_clean(b);
}

fn output_limit(b: Backend) {
    let mut r = req(
        "python",
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
    );
    r.limits = limits(|l| l.max_output_bytes = Some(100_000));
    let r = run_on(b, r);
    assert_eq!(r.status, Status::OutputLimit, "{r:#?}");
    assert_eq!(r.output.len(), 100_000);
    assert!(r.truncated.stdout);
    assert_clean(b);
}

fn disk_limit(b: Backend) {
    let code = "import errno\nt = 0\ntry:\n    with open('/workspace/fill', 'wb') as f:\n        while True:\n            f.write(b'x' * (1 << 20)); f.flush(); t += 1 << 20\nexcept OSError as e:\n    print(errno.errorcode[e.errno], t)";
    let mut r = req("python", code);
    r.limits = limits(|l| l.disk_mb = Some(8));
    let r = run_on(b, r);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let mut it = r.output.split_whitespace();
    let (err, total) = (
        it.next().unwrap_or(""),
        it.next()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(u64::MAX),
    );
    assert!(err == "ENOSPC" || err == "EFBIG", "{}", r.output);
    assert!(total <= 8 << 20, "{total}");
    // gVisor's tmpfs lives in its own kernel: the host cannot measure it.
    if !matches!(b, Backend::Docker("runsc")) {
        let used = r.resource_usage.disk_usage_bytes;
        assert!((4 << 20..=8 << 20).contains(&used), "disk usage {used}");
    }
    assert_clean(b);
}

fn no_network(b: Backend) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nb");
    let port = listener.local_addr().expect("addr").port();
    let code = format!(
        "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\nexcept OSError:\n    print('blocked')\ntry:\n    socket.getaddrinfo('example.com', 80)\n    print('dns')\nexcept OSError:\n    print('no dns')"
    );
    let r = run_on(b, req("python", &code));
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert_eq!(r.output, "blocked\nno dns\n");
    assert!(listener.accept().is_err());
    assert_clean(b);
}

fn read_only_base(b: Backend) {
    let r = run_on(b, req("bash", "for p in /usr/evil /etc/passwd /evil; do (echo x > $p) 2>/dev/null && echo \"wrote $p\"; done; touch /workspace/ok /tmp/ok && echo writable"));
    assert_eq!(
        (r.status, r.output.as_str()),
        (Status::Success, "writable\n"),
        "{r:#?}"
    );
    assert_clean(b);
}

fn non_root(b: Backend) {
    let r = run_on(b, req("python", "import os\nst = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\nprint(os.getuid() != 0, os.geteuid() != 0, st['CapEff'].strip(), st.get('NoNewPrivs', 'absent').strip())"));
    assert_eq!(r.status, Status::Success, "{r:#?}");
    // gVisor's /proc does not show NoNewPrivs (Docker's no-new-privileges still applies).
    let nnp = if matches!(b, Backend::Docker("runsc")) {
        "absent"
    } else {
        "1"
    };
    assert_eq!(r.output, format!("True True 0000000000000000 {nnp}\n"));
    assert_clean(b);
}

fn cleanup(b: Backend) {
    let vols = volumes();
    let (rt, e) = engine_on(b, PolicyConfig::default());
    let results = rt.block_on(async {
        let runs = (0..6).map(|i| e.execute(req("bash", &format!("(sleep 1000 &); echo {i}"))));
        futures_join(runs).await
    });
    for (i, r) in results.into_iter().enumerate() {
        let r = r.expect("engine");
        assert_eq!(r.output, format!("{i}\n"), "{r:#?}");
    }
    assert_clean(b);
    if matches!(b, Backend::Docker(_)) {
        assert_eq!(volumes(), vols, "volumes changed");
    }
}

async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in futs {
        out.push(f.await);
    }
    out
}

macro_rules! conformance {
    ($backend_mod:ident, $backend:expr) => {
        mod $backend_mod {
            use super::*;
            macro_rules! case {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        let _g = serial();
                        super::$name($backend);
                    }
                };
            }
            case!(success);
            case!(stdin);
            case!(non_zero_exit);
            case!(killed_by_signal);
            case!(timeout);
            case!(memory);
            case!(pids);
            case!(cpu_cap);
            case!(output_limit);
            case!(disk_limit);
            case!(no_network);
            case!(read_only_base);
            case!(non_root);
            case!(cleanup);
        }
    };
}

conformance!(native, Backend::Native);
conformance!(docker_runc, Backend::Docker("runc"));
conformance!(docker_runsc, Backend::Docker("runsc"));

#[test]
fn docker_warm_pool_hands_each_container_out_once() {
    let _g = serial();
    require_root();
    require_docker("runc");
    let rt = rt();
    rt.block_on(async {
        let exec = vana_sandbox::DockerExecutor::new(DockerConfig {
            pool_size: 2,
            ..DockerConfig::default()
        })
        .await
        .expect("docker");
        let exec = std::sync::Arc::new(exec);
        let engine = Engine::builder()
            .executor(exec.clone())
            .policy(std::sync::Arc::new(PolicyConfig::default()))
            .languages(vana_sandbox::lang::installed())
            .build()
            .expect("engine");
        let first = engine
            .execute(req("bash", "ls /tmp; touch /tmp/used-before; echo first"))
            .await
            .expect("run");
        assert_eq!(first.output, "first\n", "{first:#?}");
        for _ in 0..3 {
            let r = engine.execute(req("bash", "ls /tmp")).await.expect("run");
            assert_eq!(
                (r.status, r.output.as_str()),
                (Status::Success, ""),
                "a container served a second execution: {r:#?}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(
            !docker_leftovers().is_empty(),
            "the pool should hold warm containers"
        );
        exec.shutdown().await;
    });
    let left = settled(docker_leftovers);
    assert!(left.is_empty(), "{left:?}");
}
