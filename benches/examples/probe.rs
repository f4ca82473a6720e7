#![allow(missing_docs, clippy::unwrap_used)]
use std::time::{Duration, Instant};
use vana_sandbox_benches::{native_engine, runtime};
fn main() {
    let rt = runtime();
    let e = native_engine(&[]);
    let lang = std::env::args().nth(1).unwrap_or("bash".into());
    let code = std::env::args().nth(2).unwrap_or("true".into());
    // A host with a large heap (a Python agent, a server): `VANA_PROBE_HEAP_MB`, written
    // between runs as a busy host would.
    let heap_mb: usize = std::env::var("VANA_PROBE_HEAP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut heap = vec![1u8; heap_mb << 20];
    for gap_ms in [0u64, 30, 0, 30] {
        let mut v = vec![];
        for _ in 0..40 {
            let t = Instant::now();
            let r = rt
                .block_on(e.execute(vana_sandbox::ExecutionRequest::new(&lang, &code)))
                .unwrap();
            v.push(t.elapsed());
            for page in heap.chunks_mut(4096) {
                page[0] = page[0].wrapping_add(1);
            }
            assert_eq!(r.status, vana_sandbox::Status::Success);
            std::thread::sleep(Duration::from_millis(gap_ms));
        }
        v.sort();
        println!("{lang} gap {gap_ms} ms: median {:?} p90 {:?}", v[20], v[36]);
    }
}
