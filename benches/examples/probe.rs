#![allow(missing_docs, clippy::unwrap_used)]
use std::time::{Duration, Instant};
use vana_sandbox_benches::{native_engine, runtime};
fn main() {
    let rt = runtime();
    let e = native_engine(&[]);
    let lang = std::env::args().nth(1).unwrap_or("bash".into());
    let code = std::env::args().nth(2).unwrap_or("true".into());
    for gap_ms in [0u64, 30, 0, 30] {
        let mut v = vec![];
        for _ in 0..40 {
            let t = Instant::now();
            let r = rt
                .block_on(e.execute(vana_sandbox::ExecutionRequest::new(&lang, &code)))
                .unwrap();
            v.push(t.elapsed());
            assert_eq!(r.status, vana_sandbox::Status::Success);
            std::thread::sleep(Duration::from_millis(gap_ms));
        }
        v.sort();
        println!("{lang} gap {gap_ms} ms: median {:?} p90 {:?}", v[20], v[36]);
    }
}
