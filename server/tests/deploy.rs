//! The Kubernetes deployment in `deploy/kubernetes` agrees with the code: the server
//! configuration and the policies embedded in `config.yaml` load; the shutdown grace fits in the
//! pod's termination grace; the HPA's metric exists; the kustomization lists every manifest.
//! (The manifests' schemas are checked by `scripts/validate-deploy.sh`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use vana_sandbox_monitor::metrics::names;
use vana_sandbox_policy::PolicyConfig;
use vana_sandbox_server::ServerConfig;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy().join(name)).unwrap()
}

/// The literal block `  KEY: |` of a YAML file, dedented.
fn block(yaml: &str, key: &str) -> String {
    let head = format!("{key}: |");
    let mut lines = yaml.lines().skip_while(|l| l.trim() != head);
    let first = lines.next().expect("block key");
    let indent = first.len() - first.trim_start().len() + 2;
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first number after `key:` in a YAML file.
fn number(yaml: &str, key: &str) -> f64 {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .and_then(|v| v.trim().trim_matches('"').parse().ok())
        .expect("number")
}

#[test]
fn the_embedded_configuration_loads() {
    let yaml = read("config.yaml");
    let dir = std::env::temp_dir().join(format!("vana-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["default.toml", "agents.toml"] {
        let text = block(&yaml, name);
        let p = PolicyConfig::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!p.require.is_empty(), "{name} requires no layer");
        std::fs::write(dir.join(name), text).unwrap();
    }
    let server = block(&yaml, "server.toml")
        .replace("/etc/vana-sandbox/policy/", &format!("{}/", dir.display()));
    let config = ServerConfig::from_toml(&server).unwrap();
    let policies = config.policies().unwrap();
    assert_eq!(config.tenants.len(), 2);
    assert_eq!(policies.len(), 2, "agents from its file, ci from a preset");
    let _ = std::fs::remove_dir_all(&dir);

    // The grace, the preStop pause and the teardown fit before the kubelet's SIGKILL.
    let deployment = read("deployment.yaml");
    let termination = number(&deployment, "terminationGracePeriodSeconds");
    assert!(
        config.server.shutdown_grace_secs + 5.0 + 15.0 <= termination,
        "{} + 20 > {termination}",
        config.server.shutdown_grace_secs
    );
    // The server listens where the Service and probes point.
    assert_eq!(config.server.listen.to_string(), "tcp:0.0.0.0:8080");
    assert!(deployment.contains("containerPort: 8080"));
    assert!(deployment.contains("--config=/etc/vana-sandbox/server/server.toml"));
    assert!(deployment.contains("path: /readyz"));
}

#[test]
fn the_autoscaler_reads_a_metric_the_server_exports() {
    let hpa = read("hpa.yaml");
    assert!(hpa.contains(&format!("name: {}", names::QUEUE_DEPTH)));
    assert!(read("prometheus-adapter-rules.yaml").contains(names::QUEUE_DEPTH));
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let k = read("kustomization.yaml");
    let mut listed: Vec<String> = k
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(str::to_string)
        .collect();
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(deploy())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(listed, files);
}
