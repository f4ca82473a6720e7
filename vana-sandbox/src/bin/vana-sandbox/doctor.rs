//! `doctor`: what this host can enforce, and which toolchains it has.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use vana_sandbox::{
    default_package_dir, lang, Bytes, Capabilities, DirPackageProvider, DockerConfig, Ecosystem,
    Executor, NativeExecutor, PackageCacheStatus, PackageProvider, PolicyConfig, ProviderConfig,
    Runtime, Sandbox,
};

#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Show the package indexes of this policy file (TOML or JSON) instead of the default's.
    #[arg(long)]
    policy: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Toolchain {
    language: &'static str,
    available: bool,
    detail: String,
}

#[derive(Serialize)]
struct Report {
    backends: Vec<BackendReport>,
    languages: Vec<Toolchain>,
    docker: DockerReport,
    packages: PackagesSection,
}

/// The package cache and the indexes requests' packages come from.
#[derive(Serialize)]
struct PackagesSection {
    /// Whether the policy lets requests ask for packages.
    enabled: bool,
    /// Each ecosystem's index.
    indexes: std::collections::BTreeMap<Ecosystem, String>,
    /// The cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<PackageCacheStatus>,
    /// Why there is no cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_error: Option<String>,
}

fn packages_report(policy: &PolicyConfig) -> PackagesSection {
    let (cache, cache_error) =
        match DirPackageProvider::new(ProviderConfig::in_dir(default_package_dir())) {
            Ok(p) => (Some(p.status()), None),
            Err(e) => (None, Some(e.to_string())),
        };
    PackagesSection {
        enabled: policy.packages.enabled,
        indexes: Ecosystem::ALL
            .iter()
            .map(|e| (*e, policy.packages.rules(*e).index))
            .collect(),
        cache,
        cache_error,
    }
}

#[derive(Serialize, Default)]
struct DockerReport {
    engine: Option<String>,
    error: Option<String>,
    images: Vec<String>,
    /// Each runtime the engine knows, and whether a hardened container ran on it.
    runtimes: Vec<(String, Result<String, String>)>,
}

async fn docker_report() -> (DockerReport, Option<BackendReport>) {
    let mut r = DockerReport::default();
    let docker = match vana_sandbox::image::connect().await {
        Ok(d) => d,
        Err(e) => {
            r.error = Some(e);
            return (r, None);
        }
    };
    if let Ok(v) = docker.version().await {
        r.engine = Some(format!(
            "{} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ));
    }
    for tag in [
        vana_sandbox::image::DEFAULT_IMAGE,
        vana_sandbox::image::FULL_IMAGE,
    ] {
        if docker.inspect_image(tag).await.is_ok() {
            r.images.push(tag.to_string());
        }
    }
    let runtimes: Vec<String> = docker
        .info()
        .await
        .ok()
        .and_then(|i| i.runtimes)
        .map(|m| m.into_keys().collect())
        .unwrap_or_default();
    let mut backend = None;
    for rt in runtimes.iter().filter_map(|r| Runtime::parse(r)) {
        let config = DockerConfig {
            runtime: rt,
            ..DockerConfig::default()
        };
        let built = Sandbox::builder()
            .docker(config)
            .policy(PolicyConfig::default())
            .compile_cache(None)
            .build()
            .await;
        let outcome = match built {
            Ok(engine) => match engine
                .execute(vana_sandbox::ExecutionRequest::new("bash", "echo ok"))
                .await
            {
                Ok(res) if res.output == "ok\n" => {
                    if backend.is_none() {
                        backend = Some(BackendReport {
                            name: "docker",
                            usable: true,
                            error: None,
                            cgroup_version: None,
                            capabilities: Some(engine.executor().capabilities().clone()),
                        });
                    }
                    Ok(format!(
                        "works ({:.0} ms for `echo ok`)",
                        res.execution_time * 1000.0
                    ))
                }
                Ok(res) => Err(format!("{}: {}", res.status, res.error.unwrap_or_default())),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        r.runtimes.push((rt.to_string(), outcome));
    }
    (r, backend)
}

#[derive(Serialize)]
struct BackendReport {
    name: &'static str,
    usable: bool,
    error: Option<String>,
    cgroup_version: Option<&'static str>,
    capabilities: Option<Capabilities>,
}

pub(crate) async fn main(a: DoctorArgs) -> ExitCode {
    let native = match NativeExecutor::new() {
        Ok(e) => BackendReport {
            name: "native",
            usable: true,
            error: None,
            cgroup_version: Some(e.cgroup_version()),
            capabilities: Some(e.capabilities().clone()),
        },
        Err(e) => BackendReport {
            name: "native",
            usable: false,
            error: Some(e.to_string()),
            cgroup_version: None,
            capabilities: None,
        },
    };
    let languages = lang::installed()
        .iter()
        .map(|l| match l.toolchain().require() {
            Ok(_) => Toolchain {
                language: l.name(),
                available: true,
                detail: l.toolchain().version().unwrap_or_else(|| "found".into()),
            },
            Err(e) => Toolchain {
                language: l.name(),
                available: false,
                detail: e.to_string(),
            },
        })
        .collect();
    let policy = match &a.policy {
        Some(path) => match PolicyConfig::from_path(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("vana-sandbox: {e}");
                return ExitCode::from(2);
            }
        },
        None => PolicyConfig::default(),
    };
    let (docker, docker_backend) = docker_report().await;
    let mut backends = vec![native];
    backends.extend(docker_backend);
    let report = Report {
        backends,
        languages,
        docker,
        packages: packages_report(&policy),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        for b in &report.backends {
            println!(
                "backend {}: {}",
                b.name,
                if b.usable { "usable" } else { "NOT usable" }
            );
            if let Some(e) = &b.error {
                println!("  {e}");
            }
            if let Some(v) = b.cgroup_version {
                println!("  cgroups: {v}");
            }
            for l in b.capabilities.iter().flat_map(|c| &c.layers) {
                println!(
                    "  [{}] {:<22} {}",
                    if l.available { "x" } else { " " },
                    l.name,
                    l.detail
                );
            }
        }
        println!("docker:");
        match (&report.docker.engine, &report.docker.error) {
            (Some(v), _) => println!("  engine {v}"),
            (None, Some(e)) => println!("  not usable: {e}"),
            _ => {}
        }
        for i in &report.docker.images {
            println!("  image {i}");
        }
        for (rt, outcome) in &report.docker.runtimes {
            match outcome {
                Ok(msg) => println!("  [x] runtime {rt:<6} {msg}"),
                Err(e) => println!("  [ ] runtime {rt:<6} {e}"),
            }
        }
        println!("languages:");
        for t in &report.languages {
            println!(
                "  [{}] {:<11} {}",
                if t.available { "x" } else { " " },
                t.language,
                t.detail
            );
        }
        let p = &report.packages;
        println!(
            "packages: {}",
            if p.enabled {
                "enabled by the policy"
            } else {
                "disabled by the policy"
            }
        );
        for (eco, index) in &p.indexes {
            println!("  index {eco:<5} {index}");
        }
        match (&p.cache, &p.cache_error) {
            (Some(c), _) => {
                println!(
                    "  cache {} ({} in {} set(s), at most {})",
                    c.dir.display(),
                    Bytes(c.bytes),
                    c.entries,
                    Bytes(c.max_bytes)
                );
                for i in &c.installers {
                    let eco = i.ecosystem;
                    match (&i.version, &i.error) {
                        (Some(v), _) => println!("  [x] installer {eco:<5} {v}"),
                        (None, e) => println!(
                            "  [ ] installer {eco:<5} {}",
                            e.as_deref().unwrap_or("not found")
                        ),
                    }
                }
            }
            (None, e) => println!(
                "  cache not usable: {}",
                e.as_deref().unwrap_or("unknown reason")
            ),
        }
    }
    if report.backends.iter().any(|b| b.usable) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
