//! Compiled languages, side by side in one run (needs root, rustc and go): for Go and Rust
//! hello world, the first run (compile + run), the cached run (compile cache hit + run), and the
//! cached binary run directly in a sandbox instance (no Engine, no cache lookup). Prints medians.
//!
//! `cargo bench -p vana-sandbox-benches --bench compiled`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use vana_sandbox::{
    lang, DirCompileCache, Engine, ExecutionRequest, Executor, NativeExecutor, PolicyConfig, Status,
};
use vana_sandbox_core::{FileEntry, InstanceSpec, Limits, ProcessIo, ProcessSpec};

const GO: &str =
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"Hello, World!\")\n}\n";
const RUST: &str = "fn main() {\n    println!(\"Hello, World!\");\n}\n";

fn limits() -> Limits {
    Limits::default()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn engine(cache: Option<&std::path::Path>) -> Engine {
    let mut b = Engine::builder()
        .executor(Arc::new(
            NativeExecutor::new().expect("the native backend needs root"),
        ))
        .policy(Arc::new(PolicyConfig::default()))
        .languages(lang::installed())
        .max_concurrency(1);
    if let Some(dir) = cache {
        b = b.compile_cache(Arc::new(
            DirCompileCache::new(dir, 256 << 20).expect("cache"),
        ));
    }
    b.build().expect("engine")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probes
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let cache_dir = std::env::temp_dir().join(format!("vana-bench-cache-{}", std::process::id()));
    let uncached = engine(None);
    let cached = engine(Some(&cache_dir));
    let exec = NativeExecutor::new().expect("native");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for (language, code, first_n) in [("rust", RUST, 5), ("go", GO, 3)] {
        let run = |e: &Engine| {
            let t = Instant::now();
            let r = rt
                .block_on(e.execute(ExecutionRequest::new(language, code)))
                .expect("engine");
            assert_eq!(r.status, Status::Success, "{r:?}");
            (t.elapsed(), r)
        };
        let first = median((0..first_n).map(|_| run(&uncached).0).collect());
        let (_, warm) = run(&cached);
        assert!(warm.compile.is_some());
        let hits: Vec<Duration> = (0..30)
            .map(|_| {
                let (t, r) = run(&cached);
                assert!(r.compile.as_ref().is_some_and(|c| c.cached));
                t
            })
            .collect();
        let cached_t = median(hits);

        // The same binary, run straight through the backend.
        let langs = lang::installed();
        let l = langs.get(language).expect("language");
        let binary = std::fs::read_dir(&cache_dir)
            .expect("cache dir")
            .flatten()
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| std::fs::read(e.path()).expect("binary"))
            .expect("cached binary");
        // A cache entry is an 8-byte magic and a 32-byte digest, then the binary.
        let binary = binary[40..].to_vec();
        let direct: Vec<Duration> = (0..30)
            .map(|_| {
                let t = Instant::now();
                rt.block_on(async {
                    let spec = InstanceSpec {
                        id: "bench".into(),
                        language: language.into(),
                        limits: limits(),
                        runtime: None,
                        mounts: l.mounts(),
                        network: Default::default(),
                    };
                    let mut inst = exec.create(&spec).await.expect("create");
                    inst.files()
                        .put(&[FileEntry {
                            path: "main".into(),
                            content: binary.clone(),
                            executable: true,
                        }])
                        .await
                        .expect("put");
                    let p = ProcessSpec {
                        argv: vec!["/workspace/main".into()],
                        arg0: None,
                        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                        cwd: "/workspace".into(),
                        limits: limits(),
                    };
                    let o = inst.run(&p, ProcessIo::default()).await.expect("run");
                    assert_eq!(o.stdout, b"Hello, World!\n");
                    inst.destroy().await.expect("destroy");
                });
                t.elapsed()
            })
            .collect();
        let direct_t = median(direct);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{language:>4}: first run {:8.1} ms (median of {first_n}) | cached run {:6.2} ms | direct run {:6.2} ms | cached/direct {:.2}x",
            ms(first),
            ms(cached_t),
            ms(direct_t),
            ms(cached_t) / ms(direct_t)
        );
    }
    let _ = std::fs::remove_dir_all(&cache_dir);
}
