//! Python packages with pip, wheels only.
//!
//! `pip install --only-binary=:all: --no-compile --target <tree>` for the sandbox's interpreter
//! (`--python-version`, `--implementation`, `--abi`, `--platform` from its probe), from the one
//! index of the policy, isolated from the host's pip configuration (`--isolated`,
//! `PIP_CONFIG_FILE=/dev/null`, an empty environment), with pip's own cache off. No package code
//! runs: a wheel is unpacked, never executed, and a package that only has a source distribution
//! (which would need its build code run) is refused, named. pip checks every downloaded file
//! against the digest the index publishes for it; the digests are recorded in the manifest, and
//! the installation report is checked for direct references (a dependency given as a URL).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use vana_sandbox_core::{PackageError, PackageRequest};

use crate::tool::{tail, Tool};
use crate::Artifact;

/// Options that make pip pick files for the sandbox's interpreter, not the host's.
fn target_args(req: &PackageRequest<'_>) -> Vec<String> {
    let t = &req.target.interpreter;
    // `3.11.2` → `3.11`.
    let short: Vec<&str> = t.version.split('.').take(2).collect();
    let mut args = vec![
        "--python-version".to_string(),
        short.join("."),
        "--implementation".into(),
        t.implementation.clone(),
        "--abi".into(),
        t.abi.clone(),
    ];
    for p in &t.platforms {
        args.push("--platform".into());
        args.push(p.clone());
    }
    args
}

fn common_args(req: &PackageRequest<'_>, ca: Option<&Path>, timeout: Duration) -> Vec<String> {
    let mut args = vec![
        "--isolated".to_string(),
        "--disable-pip-version-check".into(),
        "--no-input".into(),
        "--no-cache-dir".into(),
        "--index-url".into(),
        req.index.to_string(),
        "--timeout".into(),
        timeout.as_secs().clamp(5, 60).to_string(),
        "--retries".into(),
        "2".into(),
    ];
    if let Some(ca) = ca {
        args.push("--cert".into());
        args.push(ca.display().to_string());
    }
    args
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("PIP_CONFIG_FILE", "/dev/null".into()),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("PYTHONNOUSERSITE", "1".into()),
    ]
}

#[derive(Deserialize)]
struct Report {
    install: Vec<ReportItem>,
}

#[derive(Deserialize)]
struct ReportItem {
    metadata: Metadata,
    download_info: DownloadInfo,
    #[serde(default)]
    is_direct: bool,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    version: String,
}

#[derive(Deserialize)]
struct DownloadInfo {
    url: String,
    archive_info: Option<ArchiveInfo>,
}

#[derive(Deserialize)]
struct ArchiveInfo {
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    hash: Option<String>,
}

/// Installs `req` into `tree` (which must not exist), working in `scratch`.
pub(crate) fn install(
    pip: &Tool,
    req: &PackageRequest<'_>,
    ca: Option<&Path>,
    timeout: Duration,
    scratch: &Path,
    tree: &Path,
) -> Result<Vec<Artifact>, PackageError> {
    let report = scratch.join("pip-report.json");
    let mut args = common_args(req, ca, timeout);
    args.splice(0..0, ["install".to_string()]);
    args.extend([
        "--only-binary=:all:".to_string(),
        "--no-compile".into(),
        "--no-warn-script-location".into(),
        "--root-user-action=ignore".into(),
        "--progress-bar".into(),
        "off".into(),
        "--target".into(),
        tree.display().to_string(),
        "--report".into(),
        report.display().to_string(),
    ]);
    args.extend(target_args(req));
    args.extend(req.list.specs.iter().map(|s| s.requirement.clone()));
    let out = pip.run(&args, &env(), scratch, timeout)?;
    if !out.status.success() {
        return Err(diagnose(pip, req, ca, scratch, &out.stderr));
    }
    let text = std::fs::read(&report)
        .map_err(|e| PackageError::io(format!("reading pip's report {}", report.display()), e))?;
    let report: Report = serde_json::from_slice(&text).map_err(|e| PackageError::Installer {
        tool: "pip".into(),
        detail: format!("its installation report is unreadable: {e}"),
    })?;
    let mut artifacts = Vec::with_capacity(report.install.len());
    for item in report.install {
        let name = item.metadata.name;
        if item.is_direct {
            return Err(PackageError::Refused(format!(
                "`{name}` was given as a direct reference ({}); packages come from the index only",
                item.download_info.url
            )));
        }
        let digest = item.download_info.archive_info.and_then(|a| {
            a.hashes
                .get("sha256")
                .map(|h| format!("sha256:{h}"))
                .or_else(|| a.hash.map(|h| h.replacen('=', ":", 1)))
        });
        let Some(digest) = digest else {
            return Err(PackageError::Refused(format!(
                "the index published no digest for `{name}` ({}); it cannot be checked",
                item.download_info.url
            )));
        };
        artifacts.push(Artifact {
            name,
            version: item.metadata.version,
            digest,
        });
    }
    Ok(artifacts)
}

/// Signs in pip's stderr that the index could not be reached at all.
const UNREACHABLE: &[&str] = &[
    "NewConnectionError",
    "Retrying (Retry(",
    "connection broken by",
    "SSLError",
    "ProxyError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Read timed out",
];

/// Turns a failed install into a message that names the package and the reason.
fn diagnose(
    pip: &Tool,
    req: &PackageRequest<'_>,
    ca: Option<&Path>,
    scratch: &Path,
    stderr: &[u8],
) -> PackageError {
    let text = String::from_utf8_lossy(stderr);
    if UNREACHABLE.iter().any(|s| text.contains(s)) {
        return PackageError::Installer {
            tool: "pip".into(),
            detail: format!(
                "the index {} could not be reached: {}",
                req.index,
                tail(stderr, 3)
            ),
        };
    }
    // `ERROR: Could not find a version that satisfies the requirement X (from versions: …)`
    let unsatisfied = text.lines().find_map(|l| {
        let rest = l.split("satisfies the requirement ").nth(1)?;
        let (requirement, versions) = rest.split_once(" (from versions: ")?;
        Some((
            requirement.trim().to_string(),
            versions.trim_end_matches(')').trim().to_string(),
        ))
    });
    let Some((requirement, versions)) = unsatisfied else {
        let conflict = text.contains("ResolutionImpossible") || text.contains("conflict");
        return if conflict {
            PackageError::Refused(format!(
                "the requested packages need versions that conflict: {}",
                tail(stderr, 6)
            ))
        } else {
            PackageError::Installer {
                tool: "pip".into(),
                detail: tail(stderr, 6),
            }
        };
    };
    let t = &req.target.interpreter;
    let interpreter = format!(
        "{} {} ({}, {})",
        t.implementation,
        t.version,
        t.abi,
        t.platforms.first().map(String::as_str).unwrap_or("?")
    );
    if versions != "none" {
        return PackageError::Refused(format!(
            "no version of `{requirement}` has a wheel for this interpreter, {interpreter} \
             (versions with one: {versions})"
        ));
    }
    // No wheel at all: does the project exist (then it has only source distributions, or
    // wheels for other interpreters)? `pip index` reads the index without building anything.
    let name = requirement
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .next()
        .unwrap_or(&requirement)
        .to_string();
    let mut args = common_args(req, ca, Duration::from_secs(30));
    args.splice(0..0, ["index".to_string(), "versions".into()]);
    args.push(name.clone());
    match pip.run(&args, &env(), scratch, Duration::from_secs(120)) {
        Ok(out) if out.status.success() => PackageError::Refused(format!(
            "`{name}` has no wheel for this interpreter, {interpreter}: only a source \
             distribution (or wheels for other platforms), which would have to be built by \
             running the package's own code; packages are installed from wheels only"
        )),
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No matching distribution") => {
            PackageError::Refused(format!("`{name}` is not on the index {}", req.index))
        }
        _ => PackageError::Installer {
            tool: "pip".into(),
            detail: tail(stderr, 4),
        },
    }
}
