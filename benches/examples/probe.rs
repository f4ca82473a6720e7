#![allow(missing_docs, clippy::unwrap_used)]
use std::sync::Arc;
use std::time::{Duration, Instant};
use vana_sandbox::{Engine, NativeConfig, NativeExecutor, PolicyConfig};
use vana_sandbox_benches::runtime;
fn main() {
    let rt = runtime();
    // Sandboxes prepared ahead: `VANA_PROBE_POOL` per shape (0, the default: none).
    let pool_size: usize = std::env::var("VANA_PROBE_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let config = NativeConfig {
        pool_size,
        ..NativeConfig::default()
    };
    let e = Engine::builder()
        .executor(Arc::new(NativeExecutor::with_config(config).unwrap()))
        .policy(Arc::new(PolicyConfig::default()))
        .languages(vana_sandbox::lang::installed())
        .max_concurrency(2)
        .build()
        .unwrap();
    let lang = std::env::args().nth(1).unwrap_or("bash".into());
    let code = std::env::args().nth(2).unwrap_or("true".into());
    // A host with a large heap (a Python agent, a server): `VANA_PROBE_HEAP_MB`, written
    // between runs as a busy host would.
    let heap_mb: usize = std::env::var("VANA_PROBE_HEAP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut heap = vec![1u8; heap_mb << 20];
    // `VANA_PROBE_RUNS` per round (40), `VANA_PROBE_GAPS`: the pause after each run, per round
    // (milliseconds, "0,30,0,30").
    let runs: usize = std::env::var("VANA_PROBE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let gaps: Vec<u64> = std::env::var("VANA_PROBE_GAPS")
        .unwrap_or_else(|_| "0,30,0,30".into())
        .split(',')
        .filter_map(|g| g.trim().parse().ok())
        .collect();
    for gap_ms in gaps {
        let mut v = vec![];
        for _ in 0..runs {
            let t = Instant::now();
            let r = rt
                .block_on(e.execute(vana_sandbox::ExecutionRequest::new(&lang, &code)))
                .unwrap();
            v.push(t.elapsed());
            for page in heap.chunks_mut(4096) {
                page[0] = page[0].wrapping_add(1);
            }
            assert_eq!(r.status, vana_sandbox::Status::Success);
            if std::env::var_os("VANA_PROBE_PRINT").is_some() {
                eprintln!("OUT {}", r.output.trim());
            }
            std::thread::sleep(Duration::from_millis(gap_ms));
        }
        v.sort();
        println!(
            "{lang} gap {gap_ms} ms: median {:?} p90 {:?}",
            v[v.len() / 2],
            v[v.len() * 9 / 10]
        );
    }
}
