//! Writes a small audit log (fake backend, a few runs) into the directory given as the first
//! argument, sealed with the HMAC key in the file given as the second (optional).
//!
//! `cargo run -p vana-sandbox-monitor --example audit_demo -- /tmp/audit [key-file]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use vana_sandbox_core::fake::{default_script, FakeExecutor, FakeLanguage, FakePolicy};
use vana_sandbox_core::{Engine, ExecutionRequest, Languages};
use vana_sandbox_monitor::audit::{load_key, AuditLog};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: audit_demo DIR [KEY_FILE]");
    let mut builder = AuditLog::builder(&dir);
    if let Some(k) = args.next() {
        builder = builder.hmac_key(load_key(k.as_ref()).expect("key"));
    }
    let audit = builder.start().expect("audit log");
    let engine = Engine::builder()
        .executor(Arc::new(FakeExecutor::new(default_script)))
        .policy(Arc::new(FakePolicy::default()))
        .languages(Languages::new().with(Arc::new(FakeLanguage::interpreted())))
        .monitor(audit.clone())
        .build()
        .expect("engine");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (tenant, code) in [
        ("acme", "print('hello')"),
        ("beta", "x = 1"),
        ("acme", "done"),
    ] {
        rt.block_on(engine.execute_as(tenant, ExecutionRequest::new("fake", code)))
            .expect("run");
    }
    rt.block_on(engine.execute(ExecutionRequest::new("cobol", "DISPLAY 'HI'")))
        .expect("run");
    audit.shutdown(Duration::from_secs(5));
    for f in audit.files().expect("files") {
        println!("{}", f.display());
    }
}
