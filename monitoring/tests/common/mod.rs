//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use vana_sandbox_core::fake::{default_script, FakeExecutor, FakeLanguage, FakePolicy};
use vana_sandbox_core::{Engine, Languages, Monitor};

/// A fresh directory under the system's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "vana-monitor-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Seals `body` (a line without its `,"hash":…}` end) as the writer does: SHA-256, or
/// HMAC-SHA256 under `key`.
pub fn seal(body: &str, key: Option<&[u8]>) -> String {
    let digest: Vec<u8> = match key {
        None => Sha256::digest(body.as_bytes()).to_vec(),
        Some(k) => {
            let mut m = Hmac::<Sha256>::new_from_slice(k).unwrap();
            m.update(body.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
    };
    format!("{body},\"hash\":\"{}\"}}", hex(&digest))
}

/// The hash a line claims.
pub fn hash_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["hash"].as_str().unwrap().to_string()
}

pub fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}

/// What an attacker without the key writes: a plausible record that continues the chain after
/// `prev_line` (or starts one).
pub fn forged_after(prev_line: Option<&str>, key: Option<&[u8]>) -> String {
    let (seq, prev) = match prev_line {
        Some(l) => (seq_of(l) + 1, hash_of(l)),
        None => (1, "0".repeat(64)),
    };
    seal(
        &format!(
            "{{\"seq\":{seq},\"ts\":\"2026-01-01T00:00:00.000Z\",\"prev\":\"{prev}\",\"type\":\"limit_hit\",\"id\":\"forged\",\"limit\":\"timeout\""
        ),
        key,
    )
}

/// Re-seals every line from index `from` on so that the chain is consistent again (what an
/// attacker who rewrites the tail does), under `key` (`None`: plain SHA-256).
pub fn rebuild_from(lines: &mut [String], from: usize, key: Option<&[u8]>) {
    for i in from..lines.len() {
        let mut v: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("hash");
        if i > 0 {
            obj.insert("prev".into(), hash_of(&lines[i - 1]).into());
        }
        // Keep the writer's field order: seq, ts, prev first.
        let mut body = String::from("{");
        let mut first = true;
        for k in ["seq", "ts", "prev"] {
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str(&format!("\"{k}\":{}", obj[k]));
        }
        for (k, val) in obj
            .iter()
            .filter(|(k, _)| !["seq", "ts", "prev"].contains(&k.as_str()))
        {
            body.push_str(&format!(",\"{k}\":{val}"));
        }
        lines[i] = seal(&body, key);
    }
}

pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn write_lines(p: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(p, text).unwrap();
}

/// Both fake languages.
pub fn languages() -> Languages {
    Languages::new()
        .with(Arc::new(FakeLanguage::interpreted()))
        .with(Arc::new(FakeLanguage::compiled()))
}

/// An engine on the fake backend with `monitors`.
pub fn fake_engine(exec: FakeExecutor, monitors: &[Arc<dyn Monitor>]) -> Engine {
    let mut b = Engine::builder()
        .executor(Arc::new(exec))
        .policy(Arc::new(FakePolicy::default()))
        .languages(languages())
        .max_concurrency(2)
        .max_queue(4);
    for m in monitors {
        b = b.monitor(m.clone());
    }
    b.build().unwrap()
}

pub fn default_exec() -> FakeExecutor {
    FakeExecutor::new(default_script)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fake backend whose program outcome depends on a word in the code: `fail` (exit 1),
/// `timeout`, `oom`, `forkbomb` (exit 1 after the process limit refused forks), `seccomp`
/// (SIGSYS with a seccomp_kill event), `flood` (output limit); anything else as
/// [`default_script`].
pub fn scripted_exec() -> FakeExecutor {
    use vana_sandbox_core::{Exit, ProcessOutcome, SecurityEvent, SecurityEventKind, Stop};
    FakeExecutor::new(|p, files, stdin| {
        let code = String::from_utf8_lossy(
            files
                .get("main.fake")
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
        .into_owned();
        if p.argv[0] != "/bin/fake" {
            return default_script(p, files, stdin);
        }
        let o = |f: &dyn Fn(&mut ProcessOutcome)| {
            let mut o = ProcessOutcome::default();
            f(&mut o);
            Ok(o)
        };
        if code.contains("fail") {
            o(&|o| {
                o.exit = Exit::Code(1);
                o.stderr = b"failed\n".to_vec();
            })
        } else if code.contains("timeout") {
            o(&|o| {
                o.exit = Exit::Signal(9);
                o.stopped = Some(Stop::Timeout);
            })
        } else if code.contains("oom") {
            o(&|o| {
                o.exit = Exit::Signal(9);
                o.oom_killed = true;
            })
        } else if code.contains("forkbomb") {
            o(&|o| {
                o.exit = Exit::Code(1);
                o.pids_limit_hits = 2;
            })
        } else if code.contains("seccomp") {
            o(&|o| {
                o.exit = Exit::Signal(31);
                o.events = vec![SecurityEvent::new(
                    SecurityEventKind::SeccompKill,
                    "the seccomp filter killed the program (SIGSYS): system call 101 (ptrace)",
                )];
            })
        } else if code.contains("flood") {
            o(&|o| {
                o.exit = Exit::Signal(9);
                o.stopped = Some(Stop::OutputLimit);
            })
        } else {
            default_script(p, files, stdin)
        }
    })
}

/// What a policy decides for a session on the fake backend.
pub fn session_spec() -> vana_sandbox_core::SandboxSpec {
    vana_sandbox_core::SandboxSpec {
        limits: vana_sandbox_core::Limits::default(),
        compile_limits: vana_sandbox_core::Limits::default(),
        network: vana_sandbox_core::NetworkMode::None,
        require: Vec::new(),
        runtime: None,
        guards: vana_sandbox_core::Guards::default(),
        opt_level: 1,
        cache_scope: vana_sandbox_core::CacheScope::Shared,
        packages: None,
        policy_name: "fake".into(),
        policy_fingerprint: "sha256:fake".into(),
    }
}

/// An egress decision of the proxy for `host:port`.
pub fn net_decision(
    host: &str,
    port: u16,
    verdict: vana_sandbox_core::network::Verdict,
    bytes_up: u64,
    bytes_down: u64,
) -> vana_sandbox_core::network::Decision {
    vana_sandbox_core::network::Decision {
        host: host.into(),
        port,
        method: vana_sandbox_core::network::Method::Get,
        address: None,
        bytes_up,
        bytes_down,
        verdict,
        at: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
        duration: std::time::Duration::from_millis(7),
    }
}
