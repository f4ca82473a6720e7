//! `doctor`: what this host can enforce, and which toolchains it has.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use vana_sandbox::{lang, Capabilities, Executor, NativeExecutor};

#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
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
}

#[derive(Serialize)]
struct BackendReport {
    name: &'static str,
    usable: bool,
    error: Option<String>,
    cgroup_version: Option<&'static str>,
    capabilities: Option<Capabilities>,
}

pub(crate) fn main(a: DoctorArgs) -> ExitCode {
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
        .map(|l| match l.check_available() {
            Ok(()) => Toolchain {
                language: l.name(),
                available: true,
                detail: l.version().unwrap_or_else(|| "found".into()),
            },
            Err(e) => Toolchain {
                language: l.name(),
                available: false,
                detail: e.to_string(),
            },
        })
        .collect();
    let report = Report {
        backends: vec![native],
        languages,
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
        println!("languages:");
        for t in &report.languages {
            println!(
                "  [{}] {:<11} {}",
                if t.available { "x" } else { " " },
                t.language,
                t.detail
            );
        }
    }
    if report.backends.iter().any(|b| b.usable) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
