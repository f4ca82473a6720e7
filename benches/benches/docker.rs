//! The Docker backend, side by side in one run (needs root, a Docker engine and the runtime
//! image): Python `print(1)` through a cold container, through the warm pool, `docker run --rm`
//! of the same image from the docker CLI, and bare `python3` on the host (the targets' ratios); then sessions on native, runc and runsc: opening
//! one, a Python cell (`1 + 1`), and a file written and read back while the kernel runs. Prints
//! medians.
//!
//! `cargo bench -p vana-sandbox-benches --bench docker` (`-- sessions`: the sessions part only)

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vana_sandbox::{
    lang, DockerConfig, DockerExecutor, Engine, ExecutionRequest, PolicyConfig, Sandbox,
    SessionOptions, Status,
};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let n = 20;
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let only_sessions = std::env::args().any(|a| a == "sessions");
    // The reference the targets are ratios of: bare Python on this host, in this run.
    let bare = |n: usize| {
        median(
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    let out = Command::new("/usr/bin/python3")
                        .args(["-c", "print(1)"])
                        .output()
                        .expect("python3");
                    assert_eq!(out.stdout, b"1\n");
                    t.elapsed()
                })
                .collect(),
        )
    };
    for runtime in ["runc", "runsc"].into_iter().filter(|_| !only_sessions) {
        let (cold, warm, exec) = rt.block_on(async {
            let mut policy = PolicyConfig::default();
            policy.guards.node_permissions = false;
            let engine = |exec: Arc<DockerExecutor>| {
                Engine::builder()
                    .executor(exec)
                    .policy(Arc::new(policy.clone()))
                    .languages(lang::installed())
                    .build()
                    .expect("engine")
            };
            let cold_exec = Arc::new(
                DockerExecutor::new(DockerConfig {
                    runtime: vana_sandbox::Runtime::parse(runtime).expect("runtime"),
                    ..DockerConfig::default()
                })
                .await
                .expect("docker"),
            );
            let warm_exec = Arc::new(
                DockerExecutor::new(DockerConfig {
                    runtime: vana_sandbox::Runtime::parse(runtime).expect("runtime"),
                    pool_size: 2,
                    ..DockerConfig::default()
                })
                .await
                .expect("docker"),
            );
            (engine(cold_exec), engine(warm_exec.clone()), warm_exec)
        });
        let run = |e: &Engine| {
            let t = Instant::now();
            let r = rt
                .block_on(e.execute(ExecutionRequest::new("python", "print(1)")))
                .expect("engine");
            assert_eq!(r.status, Status::Success, "{r:?}");
            t.elapsed()
        };
        let cold_t = median((0..n).map(|_| run(&cold)).collect());
        run(&warm); // fills the pool in the background
        let warm_t = median(
            (0..n)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(if runtime == "runsc" {
                        1500
                    } else {
                        800
                    })); // let the pool refill
                    run(&warm)
                })
                .collect(),
        );
        let cli_t = median(
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    let out = Command::new("docker")
                        .args([
                            "run",
                            "--rm",
                            "--network",
                            "none",
                            "--runtime",
                            runtime,
                            vana_sandbox::image::DEFAULT_IMAGE,
                            "python3",
                            "-c",
                            "print(1)",
                        ])
                        .output()
                        .expect("docker cli");
                    assert_eq!(
                        out.stdout,
                        b"1\n",
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    t.elapsed()
                })
                .collect(),
        );
        rt.block_on(exec.shutdown());
        let bare_t = bare(n);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{runtime:>5}: cold {:7.1} ms | warm pool {:6.1} ms | `docker run --rm` (CLI) {:7.1} ms | bare python3 {:5.1} ms: warm {:.2}x bare, cold {:.2}x `docker run`   (medians of {n})",
            ms(cold_t),
            ms(warm_t),
            ms(cli_t),
            ms(bare_t),
            ms(warm_t) / ms(bare_t),
            ms(cold_t) / ms(cli_t),
        );
    }
    sessions(&rt);
}

/// Session latency per backend: open, a cell, a file round trip beside the running kernel.
fn sessions(rt: &tokio::runtime::Runtime) {
    let n = 50;
    for backend in ["native", "runc", "runsc"] {
        let mut policy = PolicyConfig::default();
        policy.guards.node_permissions = false;
        let builder = Sandbox::builder().policy(policy).compile_cache(None);
        let builder = match backend {
            "native" => builder,
            runtime => builder.docker(DockerConfig {
                runtime: vana_sandbox::Runtime::parse(runtime).expect("runtime"),
                ..DockerConfig::default()
            }),
        };
        let engine = rt.block_on(builder.build()).expect("engine");
        let (open, cells, files) = rt.block_on(async {
            let mut open = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let s = engine
                    .session(SessionOptions::default())
                    .await
                    .expect("session");
                s.run_code("python", "1").await.expect("cell");
                open.push(t.elapsed());
                s.close().await.expect("close");
            }
            let s = engine
                .session(SessionOptions::default())
                .await
                .expect("session");
            let mut cells = Vec::new();
            let mut files = Vec::new();
            for i in 0..n + 5 {
                let t = Instant::now();
                let r = s.run_code("python", "1 + 1").await.expect("cell");
                assert_eq!(r.status, Status::Success, "{r:?}");
                let cell = t.elapsed();
                let t = Instant::now();
                s.files()
                    .write("bench.txt", b"some bytes".to_vec())
                    .await
                    .expect("write");
                assert_eq!(
                    s.files().read("bench.txt").await.expect("read"),
                    b"some bytes"
                );
                if i >= 5 {
                    cells.push(cell);
                    files.push(t.elapsed());
                }
            }
            s.close().await.expect("close");
            (open, cells, files)
        });
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "session {backend:>6}: open + first cell {:7.1} ms (median of 5) | cell `1 + 1` {:6.2} ms | file write + read {:6.2} ms   (medians of {n})",
            ms(median(open)),
            ms(median(cells)),
            ms(median(files))
        );
    }
}
