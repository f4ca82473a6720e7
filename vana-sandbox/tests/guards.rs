//! Language guards: defence in depth, reported as security events, never the boundary. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use vana_sandbox::{lang, Engine, ExecutionResult, NativeExecutor, PolicyConfig, Status};

fn guard_details(r: &ExecutionResult) -> Vec<String> {
    r.security_events
        .iter()
        .filter(|e| e.kind.as_str() == "language_guard")
        .map(|e| e.detail.clone())
        .collect()
}

fn engine_with(policy: PolicyConfig) -> Engine {
    require_root();
    Engine::builder()
        .executor(Arc::new(NativeExecutor::new().expect("native")))
        .policy(Arc::new(policy))
        .languages(lang::installed())
        .build()
        .expect("engine")
}

#[test]
fn python_audit_hook_reports_sensitive_events() {
    let _g = serial();
    let code = r#"
import subprocess, socket, ctypes, sys
subprocess.run(["/bin/true"])
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
except OSError:
    pass
try:
    open("/etc/evil", "w")
except OSError:
    pass
ctypes.CDLL(None)
open("/workspace/fine.txt", "w").write("ok")
print(sys.argv[1:], __name__, sys.flags.isolated)
"#;
    let mut r = req("python", code);
    r.args = vec!["x".into()];
    let res = run(r);
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "['x'] __main__ 1\n");
    let d = guard_details(&res).join("\n");
    for needle in [
        "python subprocess",
        "python network: socket.connect",
        "python write_outside_workspace: /etc/evil",
        "python ctypes",
    ] {
        assert!(d.contains(needle), "missing `{needle}` in:\n{d}");
    }
    assert!(!d.contains("fine.txt"), "{d}");
    assert_no_leftovers();
}

#[test]
fn python_modules_beside_main_still_import_under_the_guard() {
    let _g = serial();
    let mut r = req("python", "import helper\nprint(helper.VALUE)\n");
    r.files = vec![vana_sandbox::FileSpec {
        path: "helper.py".into(),
        content: Some("VALUE = 41 + 1\n".into()),
        content_base64: None,
    }];
    let res = run(r);
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "42\n");
}

#[test]
fn node_permission_model_denies_and_reports() {
    let _g = serial();
    let code = r#"
const fs = require("fs");
fs.writeFileSync("/workspace/ok.txt", "1");
fs.writeFileSync("/tmp/ok.txt", "1");
let denied = 0;
try { require("child_process").execSync("id"); } catch (e) { if (e.code === "ERR_ACCESS_DENIED") denied++; console.error(e.code); }
try { fs.writeFileSync("/etc/evil", "x"); } catch (e) { if (e.code === "ERR_ACCESS_DENIED") denied++; console.error(e.code); }
console.log("denied", denied);
"#;
    let res = run(req("javascript", code));
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "denied 2\n", "{res:#?}");
    assert_eq!(guard_details(&res).len(), 2, "{res:#?}");
    assert_no_leftovers();
}

#[test]
fn bash_restricted_mode_from_policy() {
    let _g = serial();
    let mut policy = PolicyConfig::default();
    policy.guards.bash_restricted = true;
    let e = engine_with(policy);
    let res = rt()
        .block_on(e.execute(req("bash", "cd /tmp\necho after\n")))
        .expect("engine");
    assert_eq!(res.output, "after\n", "{res:#?}");
    assert!(
        guard_details(&res).iter().any(|d| d.contains("restricted")),
        "{res:#?}"
    );
    assert_no_leftovers();
}

#[test]
fn guards_off_the_boundary_still_holds() {
    let _g = serial();
    let mut policy = PolicyConfig::default();
    policy.guards.python_audit = false;
    policy.guards.node_permissions = false;
    let e = engine_with(policy);
    let rt = rt();
    let res = rt
        .block_on(e.execute(req("python", "try:\n    open('/etc/evil', 'w')\n    print('WROTE')\nexcept OSError as e:\n    print('blocked', e.errno)\n")))
        .expect("engine");
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert!(res.output.starts_with("blocked"), "{}", res.output);
    assert!(guard_details(&res).is_empty());
    let res = rt
        .block_on(e.execute(req("javascript", "try { require('fs').writeFileSync('/usr/evil', 'x'); console.log('WROTE') } catch (e) { console.log('blocked', e.code) }")))
        .expect("engine");
    assert!(res.output.starts_with("blocked"), "{}", res.output);
    assert_no_leftovers();
}
