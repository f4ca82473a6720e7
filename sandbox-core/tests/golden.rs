//! The JSON contract, pinned: the plan's example request parses as is, and a result carries every
//! field of the plan's response with the same shape, byte for byte against a golden file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use vana_sandbox_core::fake::{FakeExecutor, FakeLanguage, FakePolicy};
use vana_sandbox_core::{
    Bytes, Engine, ExecutionRequest, ExecutionResult, Exit, Languages, ProcessOutcome, Usage,
};

#[test]
fn the_plans_request_parses_and_its_result_has_the_plans_shape() {
    let text = include_str!("golden/plan_request.json");
    let mut request = ExecutionRequest::from_json(text).expect("the plan's request parses");
    assert_eq!(request.language, "python");
    assert_eq!(request.packages, ["requests", "numpy"]);
    assert_eq!(request.inputs.as_deref().map(<[String]>::len), Some(2));

    // Run its shape through the fake backend with the plan's own numbers.
    request.language = "fake".into();
    request.packages.clear();
    request.id = Some("golden".into());
    let exec = FakeExecutor::new(|_, _, stdin| {
        assert_eq!(stdin, b"input1\ninput2\n");
        Ok(ProcessOutcome {
            exit: Exit::Code(0),
            stdout: b"Hello, World!\n".to_vec(),
            wall_time: Duration::from_millis(123),
            usage: Usage {
                cpu: Duration::from_millis(50),
                memory_peak: Bytes(12 << 20),
                disk: Bytes(1 << 20),
                processes_peak: 1,
            },
            ..Default::default()
        })
    });
    let engine = Engine::builder()
        .executor(Arc::new(exec))
        .policy(Arc::new(FakePolicy::default()))
        .languages(Languages::new().with(Arc::new(FakeLanguage::interpreted())))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(engine.execute(request)).unwrap();
    let got: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(include_str!("golden/plan_result.json")).unwrap();
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());

    // Every field of the plan's response is there.
    for key in [
        "status",
        "output",
        "error",
        "execution_time",
        "resource_usage",
    ] {
        assert!(got.get(key).is_some(), "{key}");
    }
    for key in ["cpu_time", "memory_peak", "disk_usage"] {
        assert!(got["resource_usage"].get(key).is_some(), "{key}");
    }
    let back: ExecutionResult = serde_json::from_value(got).unwrap();
    assert_eq!(back, result);
}

/// A provider that answers the plan's packages with a fixed set.
struct PlanPackages;

#[async_trait::async_trait]
impl vana_sandbox_core::PackageProvider for PlanPackages {
    async fn prepare(
        &self,
        r: &vana_sandbox_core::PackageRequest<'_>,
    ) -> Result<vana_sandbox_core::PreparedPackages, vana_sandbox_core::PackageError> {
        use vana_sandbox_core::{InstalledPackage, PackagesReport, PreparedPackages};
        let eco = r.list.ecosystem;
        let installed = [
            ("numpy", "2.1.0"),
            ("requests", "2.32.3"),
            ("urllib3", "2.2.3"),
        ]
        .iter()
        .map(|(n, v)| InstalledPackage {
            name: n.to_string(),
            version: v.to_string(),
        })
        .collect();
        Ok(PreparedPackages {
            host_dir: "/var/cache/vana-sandbox/packages/sets/x/tree".into(),
            sandbox_dir: eco.sandbox_dir(),
            env: vec![eco.env()],
            report: PackagesReport {
                ecosystem: eco,
                index: r.index.to_string(),
                installed,
                cached: true,
                size_bytes: 60 << 20,
                prepare_time: 0.0,
            },
            hold: None,
        })
    }

    fn session(
        &self,
        _: &str,
    ) -> Result<Box<dyn vana_sandbox_core::SessionPackages>, vana_sandbox_core::PackageError> {
        Err(vana_sandbox_core::PackageError::Refused("none".into()))
    }

    fn status(&self) -> vana_sandbox_core::PackageCacheStatus {
        vana_sandbox_core::PackageCacheStatus {
            dir: "/".into(),
            bytes: 0,
            max_bytes: 0,
            entries: 0,
            installers: Vec::new(),
        }
    }
}

#[test]
fn the_plans_request_with_its_packages_reports_them() {
    let mut request =
        ExecutionRequest::from_json(include_str!("golden/plan_request.json")).expect("parses");
    request.language = "fake".into();
    request.id = Some("golden-packages".into());
    let exec = FakeExecutor::new(|p, _, _| {
        let path = p.env.iter().find(|(k, _)| k == "PYTHONPATH");
        assert_eq!(
            path.map(|(_, v)| v.as_str()),
            Some("/opt/vana-packages/python")
        );
        Ok(ProcessOutcome {
            exit: Exit::Code(0),
            stdout: b"3\n".to_vec(),
            wall_time: Duration::from_millis(250),
            ..Default::default()
        })
    });
    let engine = Engine::builder()
        .executor(Arc::new(exec))
        .policy(Arc::new(FakePolicy::default()))
        .languages(Languages::new().with(Arc::new(FakeLanguage::interpreted())))
        .packages(Arc::new(PlanPackages))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(engine.execute(request)).unwrap();
    let mut got: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
    // The time spent preparing is measured; everything else is pinned.
    assert!(got["packages"]["prepare_time"].as_f64().is_some());
    got["packages"]["prepare_time"] = serde_json::json!(0.0);
    let want: serde_json::Value =
        serde_json::from_str(include_str!("golden/plan_result_packages.json")).unwrap();
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());
    let back: ExecutionResult = serde_json::from_value(got).unwrap();
    assert_eq!(back.packages.map(|p| p.installed.len()), Some(3));
}
