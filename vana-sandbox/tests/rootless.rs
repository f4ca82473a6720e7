//! The rootless mode, as an unprivileged user would use it: the test (root, as CI runs it) drops
//! to `nobody` with `setpriv` and runs the CLI. Python runs; namespaces, seccomp, Landlock and
//! rlimits take effect; cgroup limits are reported as degraded (no delegated subtree here) and
//! replaced by rlimits; a policy that requires cgroups fails closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

const NOBODY: u32 = 65534;

/// A copy of the CLI that `nobody` can run (the build tree may sit under root's home).
fn cli_for_nobody() -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new("vana-rootless");
    let exe = dir.path.join("vana-sandbox");
    std::fs::copy(env!("CARGO_BIN_EXE_vana-sandbox"), &exe).expect("copy the CLI");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, exe)
}

mod tempdir {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A world-traversable temporary directory, removed on drop.
    pub struct Dir {
        pub path: PathBuf,
    }

    impl Dir {
        pub fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("mkdir");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            Self { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn as_nobody(exe: &PathBuf, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--reset-env",
        ])
        .arg(exe)
        .args(args)
        .current_dir("/")
        .output()
        .expect("setpriv (util-linux) runs the CLI as nobody")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn processes_of_nobody_in_sandboxes() -> Vec<String> {
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let uid: u32 = field("Uid:")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        // A process of ours in a user namespace other than the host's.
        let own_ns = std::fs::read_link(e.path().join("ns/user")).ok();
        let host_ns = std::fs::read_link("/proc/self/ns/user").ok();
        if uid == NOBODY && !field("State:").starts_with('Z') && own_ns != host_ns {
            left.push(format!(
                "{} {}",
                e.file_name().to_string_lossy(),
                field("Name:")
            ));
        }
    }
    left
}

#[test]
fn rootless_python_runs_with_the_layers_it_can_have() {
    let _g = serial();
    require_root();
    let (_dir, exe) = cli_for_nobody();

    let doctor = as_nobody(&exe, &["doctor", "--json"]);
    let report = json(&doctor);
    let native = &report["backends"][0];
    assert_eq!(native["name"], "native", "{report:#}");
    assert_eq!(native["usable"], true, "{report:#}");
    let layer = |name: &str| {
        native["capabilities"]["layers"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == name))
            .map(|l| l["available"].as_bool().unwrap_or(false))
            .unwrap_or_else(|| panic!("no layer {name}: {report:#}"))
    };
    for on in [
        "user_namespace",
        "pid_namespace",
        "mount_namespace",
        "network_namespace",
        "init",
        "seccomp",
        "no_new_privs",
        "rlimits",
        "non_root_user",
    ] {
        assert!(layer(on), "{on} should be enforced rootless: {report:#}");
    }
    assert!(
        !layer("cgroups"),
        "no delegated cgroup here, so no cgroup limits: {report:#}"
    );
    assert!(doctor.status.success());

    let out = as_nobody(
        &exe,
        &[
            "run",
            "--json",
            "--lang",
            "python",
            "--code",
            "import os; print('hello', os.getuid(), open('/proc/1/cmdline').read().strip(chr(0)))",
        ],
    );
    let r = json(&out);
    assert_eq!(r["status"], "success", "{r:#}");
    assert_eq!(r["output"], "hello 1000 vana-init\n", "{r:#}");
    let degraded: Vec<String> = r["security_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "layer_degraded")
        .map(|e| e["detail"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        degraded.iter().any(|d| d.starts_with("cgroup_memory:")),
        "the missing cgroup limits must be reported on the result: {r:#}"
    );

    // Memory without a cgroup: the data-segment rlimit stops the program.
    let out = as_nobody(
        &exe,
        &[
            "run",
            "--json",
            "--memory",
            "64",
            "--lang",
            "python",
            "--code",
            "a = []\nwhile True: a.append(bytearray(10**6))",
        ],
    );
    let r = json(&out);
    assert_eq!(r["status"], "error", "{r:#}");
    assert!(
        r["stderr"].as_str().unwrap_or("").contains("MemoryError"),
        "{r:#}"
    );

    // Processes without a cgroup: RLIMIT_NPROC, counted in the sandbox's own user namespace.
    let out = as_nobody(
        &exe,
        &[
            "run",
            "--json",
            "--timeout",
            "3",
            "--lang",
            "bash",
            "--code",
            ":(){ :|:& };:; sleep 1; echo survived",
        ],
    );
    let r = json(&out);
    assert_ne!(r["status"], "sandbox_error", "{r:#}");
    let left = settled(processes_of_nobody_in_sandboxes);
    assert!(left.is_empty(), "{left:?}");

    // A policy that requires cgroups fails closed here.
    let policy = _dir.path.join("require-cgroups.toml");
    std::fs::write(&policy, "require = [\"cgroups\"]\n").expect("policy");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = as_nobody(
        &exe,
        &[
            "run",
            "--json",
            "--policy",
            policy.to_str().expect("utf-8"),
            "--lang",
            "python",
            "--code",
            "print(1)",
        ],
    );
    let r = json(&out);
    assert_eq!(r["status"], "sandbox_error", "{r:#}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("required isolation layer `cgroups` is not available"),
        "{r:#}"
    );
}
