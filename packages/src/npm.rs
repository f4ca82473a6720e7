//! JavaScript packages with npm, install scripts off.
//!
//! `npm install --ignore-scripts` into a scratch prefix, from the one registry of the policy,
//! with empty user and global configuration files, a fresh cache of its own, an empty
//! environment, no links (`--no-bin-links`), git disabled (`--git=/bin/false`: a dependency
//! given as a git reference cannot be fetched, let alone built), and optional dependencies
//! chosen for the sandbox's platform (`--os`, `--cpu`). No package code runs: no lifecycle
//! script (`preinstall`, `install`, `postinstall`, `prepare`) and no implicit `node-gyp` build. npm
//! checks every tarball against the `integrity` digest the registry publishes; the lockfile's
//! digests are recorded in the manifest, and every package must have come from the registry.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use vana_sandbox_core::{PackageError, PackageRequest};

use crate::tool::{tail, Tool};
use crate::Artifact;

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    packages: std::collections::BTreeMap<String, LockEntry>,
}

#[derive(Deserialize)]
struct LockEntry {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    resolved: Option<String>,
    #[serde(default)]
    integrity: Option<String>,
    #[serde(default)]
    link: bool,
}

/// Installs `req` and moves the resulting `node_modules` to `tree` (which must not exist),
/// working in `scratch`.
pub(crate) fn install(
    npm: &Tool,
    req: &PackageRequest<'_>,
    ca: Option<&Path>,
    timeout: Duration,
    scratch: &Path,
    tree: &Path,
) -> Result<Vec<Artifact>, PackageError> {
    let prefix = scratch.join("prefix");
    let (user_rc, global_rc) = (scratch.join("user.npmrc"), scratch.join("global.npmrc"));
    for f in [&user_rc, &global_rc] {
        std::fs::write(f, b"")
            .map_err(|e| PackageError::io(format!("creating {}", f.display()), e))?;
    }
    std::fs::create_dir_all(&prefix)
        .map_err(|e| PackageError::io(format!("creating {}", prefix.display()), e))?;
    let registry = registry_url(req.index);
    let mut args: Vec<String> = vec![
        "install".into(),
        format!("--prefix={}", prefix.display()),
        "--ignore-scripts".into(),
        "--no-audit".into(),
        "--no-fund".into(),
        "--no-update-notifier".into(),
        "--no-bin-links".into(),
        "--omit=dev".into(),
        "--git=/bin/false".into(),
        format!("--userconfig={}", user_rc.display()),
        format!("--globalconfig={}", global_rc.display()),
        format!("--cache={}", scratch.join("npm-cache").display()),
        format!("--registry={registry}"),
        "--loglevel=warn".into(),
        "--fetch-retries=1".into(),
        format!(
            "--fetch-timeout={}",
            timeout.as_millis().clamp(5_000, 60_000)
        ),
    ];
    if let Some(ca) = ca {
        args.push(format!("--cafile={}", ca.display()));
    }
    // `linux-x64` → `--os=linux --cpu=x64`: optional dependencies for the sandbox's platform.
    if let Some((os, cpu)) = req
        .target
        .interpreter
        .platforms
        .first()
        .and_then(|p| p.split_once('-'))
    {
        args.push(format!("--os={os}"));
        args.push(format!("--cpu={cpu}"));
    }
    args.push("--".into());
    args.extend(req.list.specs.iter().map(|s| s.requirement.clone()));
    let env = [
        ("NO_UPDATE_NOTIFIER", "1".to_string()),
        ("npm_config_update_notifier", "false".into()),
    ];
    let out = npm.run(&args, &env, scratch, timeout)?;
    if !out.status.success() {
        return Err(diagnose(req, &out.stderr));
    }
    let lock_path = prefix.join("package-lock.json");
    let text = std::fs::read(&lock_path)
        .map_err(|e| PackageError::io(format!("reading {}", lock_path.display()), e))?;
    let lock: Lock = serde_json::from_slice(&text).map_err(|e| PackageError::Installer {
        tool: "npm".into(),
        detail: format!("its lockfile is unreadable: {e}"),
    })?;
    let mut artifacts = Vec::new();
    for (key, entry) in lock.packages {
        let Some((_, name)) = key.rsplit_once("node_modules/") else {
            continue; // the root project
        };
        let from_registry = entry
            .resolved
            .as_deref()
            .is_some_and(|r| r.starts_with(&registry));
        if entry.link || !from_registry {
            return Err(PackageError::Refused(format!(
                "`{name}` did not come from the registry ({}); git, file, link and URL \
                 dependencies are refused",
                entry.resolved.as_deref().unwrap_or("no source")
            )));
        }
        let Some(integrity) = entry.integrity else {
            return Err(PackageError::Refused(format!(
                "the registry published no integrity digest for `{name}`; it cannot be checked"
            )));
        };
        artifacts.push(Artifact {
            name: name.to_string(),
            version: entry.version.unwrap_or_default(),
            digest: integrity,
        });
    }
    let modules = prefix.join("node_modules");
    if !modules.is_dir() {
        std::fs::create_dir_all(&modules)
            .map_err(|e| PackageError::io(format!("creating {}", modules.display()), e))?;
    }
    // npm's own bookkeeping, not the program's.
    let _ = std::fs::remove_file(modules.join(".package-lock.json"));
    std::fs::rename(&modules, tree)
        .map_err(|e| PackageError::io(format!("moving {} into place", modules.display()), e))?;
    Ok(artifacts)
}

/// The registry URL with exactly one trailing slash.
fn registry_url(index: &str) -> String {
    format!("{}/", index.trim_end_matches('/'))
}

/// Signs in npm's stderr that the registry could not be reached at all.
const UNREACHABLE: &[&str] = &[
    "ECONNREFUSED",
    "ENOTFOUND",
    "ETIMEDOUT",
    "EAI_AGAIN",
    "ECONNRESET",
    "CERT",
    "ERR_SOCKET_TIMEOUT",
];

fn diagnose(req: &PackageRequest<'_>, stderr: &[u8]) -> PackageError {
    let text = String::from_utf8_lossy(stderr);
    let code = text
        .lines()
        .find_map(|l| {
            // npm 10 and later say `npm error`, npm 9 (Debian 12's) `npm ERR!`.
            let l = l.trim();
            l.strip_prefix("npm error code ")
                .or_else(|| l.strip_prefix("npm ERR! code "))
        })
        .unwrap_or_default()
        .trim()
        .to_string();
    let tail = tail(stderr, 5);
    match code.as_str() {
        "E404" => PackageError::Refused(format!(
            "a package is not in the registry {}: {}",
            req.index,
            text.lines()
                .find(|l| l.contains("could not be found"))
                .map(|l| {
                    l.trim_start_matches("npm error 404")
                        .trim_start_matches("npm ERR! 404")
                        .trim()
                })
                .unwrap_or(&tail)
        )),
        "ETARGET" => PackageError::Refused(format!(
            "no version matches: {}",
            text.lines()
                .find(|l| l.contains("No matching version"))
                .map(|l| {
                    l.trim_start_matches("npm error notarget")
                        .trim_start_matches("npm ERR! notarget")
                        .trim()
                })
                .unwrap_or(&tail)
        )),
        "ERESOLVE" => PackageError::Refused(format!(
            "the requested packages need versions that conflict: {tail}"
        )),
        c if UNREACHABLE.iter().any(|u| c.contains(u))
            || UNREACHABLE.iter().any(|u| text.contains(u)) =>
        {
            PackageError::Installer {
                tool: "npm".into(),
                detail: format!("the registry {} could not be reached: {tail}", req.index),
            }
        }
        _ => PackageError::Installer {
            tool: "npm".into(),
            detail: tail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vana_sandbox_core::{Ecosystem, Interpreter, PackageList, PackageTarget};

    #[test]
    fn diagnoses_npm_9_and_npm_10_alike() {
        let list = PackageList {
            ecosystem: Ecosystem::Npm,
            specs: Vec::new(),
        };
        let target = PackageTarget {
            ecosystem: Ecosystem::Npm,
            interpreter: Interpreter {
                implementation: "node".into(),
                version: "18.0.0".into(),
                abi: "108".into(),
                platforms: vec!["linux-x64".into()],
            },
            environment: "test".into(),
        };
        let req = PackageRequest {
            language: "javascript",
            list: &list,
            target: &target,
            index: "https://registry.npmjs.org/",
        };
        for stderr in [
            "npm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/nope - Not found\nnpm error 404  'nope@*' is not in this registry.\nnpm error 404 The requested resource 'nope@*' could not be found or you do not have permission to access it.\n",
            "npm ERR! code E404\nnpm ERR! 404 Not Found - GET https://registry.npmjs.org/nope - Not found\nnpm ERR! 404 The requested resource 'nope@*' could not be found or you do not have permission to access it.\n",
        ] {
            let e = diagnose(&req, stderr.as_bytes());
            assert!(
                matches!(&e, PackageError::Refused(m) if m.starts_with("a package is not in the registry") && m.contains("'nope@*' could not be found")),
                "{e:?}"
            );
        }
        let e = diagnose(&req, b"npm ERR! code ETARGET\nnpm ERR! notarget No matching version found for is-number@99.\n");
        assert!(
            matches!(&e, PackageError::Refused(m) if m.contains("No matching version found for is-number@99")),
            "{e:?}"
        );
        let e = diagnose(
            &req,
            b"npm ERR! code ECONNREFUSED\nnpm ERR! errno ECONNREFUSED\n",
        );
        assert!(matches!(&e, PackageError::Installer { .. }), "{e:?}");
    }
}
