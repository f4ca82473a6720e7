//! Request validation: every check that does not depend on policy. A request that fails here is
//! `rejected` with a message that names the field and the rule.

use std::sync::Arc;

use base64::Engine as _;

use crate::language::{Language, Languages};
use crate::limits::{AskedLimits, LimitKind};
use crate::packages::PackageList;
use crate::policy::Rejection;
use crate::request::ExecutionRequest;
use crate::spec::FileEntry;

/// Largest accepted source, in bytes.
pub const MAX_CODE_BYTES: usize = 1024 * 1024;
/// Largest accepted total of extra files, in bytes.
pub const MAX_FILES_BYTES: usize = 16 * 1024 * 1024;
/// Most extra files.
pub const MAX_FILES: usize = 256;
/// Most arguments.
pub const MAX_ARGS: usize = 1024;
/// Most environment variables.
pub const MAX_ENV: usize = 256;
/// Largest standard input, in bytes.
pub const MAX_STDIN_BYTES: usize = 16 * 1024 * 1024;

/// A request that passed validation, with its language resolved, its limits typed and its
/// inputs decoded. Nothing downstream re-checks what is here.
#[derive(Clone)]
pub struct ValidRequest {
    /// The language.
    pub language: Arc<dyn Language>,
    /// The limits asked for (the timeout among them), checked against the limits table.
    pub limits: AskedLimits,
    /// Whether any network access is asked for.
    pub wants_network: bool,
    /// Destinations asked for (`network.allow`).
    pub network_allow: Vec<String>,
    /// Standard input bytes.
    pub stdin: Vec<u8>,
    /// Extra files, decoded.
    pub files: Vec<FileEntry>,
    /// Packages asked for, parsed for the language's ecosystem (`None`: none asked for).
    pub packages: Option<PackageList>,
}

impl std::fmt::Debug for ValidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidRequest")
            .field("language", &self.language.name())
            .field("stdin_len", &self.stdin.len())
            .field("files", &self.files.len())
            .field("packages", &self.packages)
            .finish()
    }
}

fn reject<T>(message: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection::new(message))
}

/// Validates a request against the known languages.
pub fn validate(
    request: &ExecutionRequest,
    languages: &Languages,
) -> Result<ValidRequest, Rejection> {
    let lang_name = request.language.trim();
    if lang_name.is_empty() {
        return reject("language is empty");
    }
    let detected;
    let lang_name = if lang_name.eq_ignore_ascii_case("auto") {
        detected = detect_language(request, languages)?;
        detected.as_str()
    } else {
        lang_name
    };
    let Some(language) = languages.get(lang_name) else {
        return reject(format!(
            "unknown language `{}`; supported: {}",
            lang_name.escape_debug(),
            languages.names().join(", ")
        ));
    };
    if let Some(id) = &request.id {
        if id.is_empty()
            || id.len() > 128
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return reject("id must be 1-128 characters of letters, digits, '-', '_' or '.'");
        }
    }
    if request.code.trim().is_empty() {
        return reject("code is empty");
    }
    if request.code.len() > MAX_CODE_BYTES {
        return reject(format!(
            "code is {} bytes; the maximum is {MAX_CODE_BYTES}",
            request.code.len()
        ));
    }
    if request.code.contains('\0') {
        return reject("code contains a NUL byte");
    }
    let limits = asked_limits(request)?;
    if request.args.len() > MAX_ARGS {
        return reject(format!(
            "too many args ({}; the maximum is {MAX_ARGS})",
            request.args.len()
        ));
    }
    for (i, a) in request.args.iter().enumerate() {
        if a.contains('\0') {
            return reject(format!("args[{i}] contains a NUL byte"));
        }
    }
    if request.env.len() > MAX_ENV {
        return reject(format!(
            "too many env variables ({}; the maximum is {MAX_ENV})",
            request.env.len()
        ));
    }
    for (k, v) in &request.env {
        if !valid_env_name(k) {
            return reject(format!(
                "env name `{}` is invalid: use letters, digits and '_', not starting with a digit",
                k.escape_debug()
            ));
        }
        if v.contains('\0') {
            return reject(format!("env `{k}` contains a NUL byte"));
        }
    }
    let packages = if request.packages.is_empty() {
        None
    } else {
        let Some(support) = language.packages() else {
            let with: Vec<&str> = languages
                .iter()
                .filter(|l| l.packages().is_some())
                .map(|l| l.name())
                .collect();
            return reject(format!(
                "packages are not supported for {} (languages with packages: {}); remove `packages` from the request",
                language.name(),
                if with.is_empty() { "none".to_string() } else { with.join(", ") }
            ));
        };
        Some(PackageList::parse(support.ecosystem, &request.packages)?)
    };
    let stdin = match (&request.inputs, &request.stdin) {
        (Some(_), Some(_)) => return reject("give either `inputs` or `stdin`, not both"),
        (Some(lines), None) => lines
            .iter()
            .flat_map(|l| [l.as_bytes(), b"\n"])
            .flatten()
            .copied()
            .collect(),
        (None, Some(s)) => s.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    if stdin.len() > MAX_STDIN_BYTES {
        return reject(format!(
            "stdin is {} bytes; the maximum is {MAX_STDIN_BYTES}",
            stdin.len()
        ));
    }
    let files = decode_files(request, language.info().source_file)?;
    if request.outputs.len() > crate::outputs::MAX_PATTERNS {
        return reject(format!(
            "too many outputs ({}; the maximum is {})",
            request.outputs.len(),
            crate::outputs::MAX_PATTERNS
        ));
    }
    for (i, p) in request.outputs.iter().enumerate() {
        if let Err(m) = crate::outputs::check_pattern(p) {
            return reject(format!("outputs[{i}] `{}`: {m}", p.escape_debug()));
        }
    }
    Ok(ValidRequest {
        language: language.clone(),
        limits,
        wants_network: request.wants_network(),
        network_allow: request
            .network
            .as_ref()
            .map(|n| n.allow.clone())
            .unwrap_or_default(),
        stdin,
        files,
        packages,
    })
}

/// Picks the language for `language: "auto"`: the highest score wins when it is clearly ahead
/// (at least 20 points and 10 more than the runner-up); otherwise the request is rejected.
pub fn detect_language(
    request: &ExecutionRequest,
    languages: &Languages,
) -> Result<String, Rejection> {
    let files: Vec<&str> = request.files.iter().map(|f| f.path.as_str()).collect();
    let scores = languages.scores(&request.code, &files);
    match scores.as_slice() {
        [(best, name), rest @ ..]
            if *best >= 20 && rest.first().is_none_or(|(second, _)| best - second >= 10) =>
        {
            Ok((*name).to_string())
        }
        _ => reject(format!(
            "cannot tell the language of this code with confidence ({}); name it in `language`",
            scores
                .iter()
                .take(3)
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The request's limits, each checked against the limits table once and typed.
fn asked_limits(request: &ExecutionRequest) -> Result<AskedLimits, Rejection> {
    let l = request.limits.clone().unwrap_or_default();
    let wire: [(LimitKind, &str, Option<f64>); 7] = [
        (
            LimitKind::Memory,
            "limits.memory_mb",
            l.memory_mb.map(|v| v as f64),
        ),
        (LimitKind::Cpus, "limits.cpus", l.cpus),
        (
            LimitKind::Disk,
            "limits.disk_mb",
            l.disk_mb.map(|v| v as f64),
        ),
        (
            LimitKind::Processes,
            "limits.max_processes",
            l.max_processes.map(|v| v as f64),
        ),
        (
            LimitKind::Output,
            "limits.max_output_bytes",
            l.max_output_bytes.map(|v| v as f64),
        ),
        (LimitKind::Timeout, "timeout", request.timeout),
        (LimitKind::CpuTime, "limits.cpu_time_secs", l.cpu_time_secs),
    ];
    let mut asked = AskedLimits::default();
    for (kind, field, value) in wire {
        if let Some(v) = value {
            let typed = kind
                .parse(field, v)
                .map_err(|e| Rejection::new(e.to_string()))?;
            asked.push(kind, typed);
        }
    }
    Ok(asked)
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 256
}

/// Checks a workspace-relative path: no absolute paths, no `..`, no NUL, no empty components.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 1024 {
        return Err("must be 1-1024 bytes".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if path.starts_with('/') {
        return Err("must be relative to the workspace".into());
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err("must not contain empty, '.' or '..' components".into());
        }
    }
    Ok(())
}

fn decode_files(
    request: &ExecutionRequest,
    source_file: &str,
) -> Result<Vec<FileEntry>, Rejection> {
    if request.files.len() > MAX_FILES {
        return reject(format!(
            "too many files ({}; the maximum is {MAX_FILES})",
            request.files.len()
        ));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(request.files.len());
    for (i, f) in request.files.iter().enumerate() {
        if let Err(why) = check_relative_path(&f.path) {
            return reject(format!("files[{i}].path `{}` {why}", f.path.escape_debug()));
        }
        if f.path == source_file {
            return reject(format!(
                "files[{i}].path `{}` would overwrite the program's source",
                f.path
            ));
        }
        if out.iter().any(|e: &FileEntry| e.path == f.path) {
            return reject(format!("files[{i}].path `{}` is given twice", f.path));
        }
        let content = match (&f.content, &f.content_base64) {
            (Some(c), None) => c.as_bytes().to_vec(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| {
                    Rejection::new(format!(
                        "files[{i}].content_base64 is not valid base64: {e}"
                    ))
                })?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => {
                return reject(format!("files[{i}] has both content and content_base64"))
            }
        };
        total += content.len();
        if total > MAX_FILES_BYTES {
            return reject(format!("files total more than {MAX_FILES_BYTES} bytes"));
        }
        out.push(FileEntry {
            path: f.path.clone(),
            content,
            executable: false,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert!(check_relative_path("a/b.txt").is_ok());
        assert!(check_relative_path("../x").is_err());
        assert!(check_relative_path("/etc/passwd").is_err());
        assert!(check_relative_path("a//b").is_err());
        assert!(check_relative_path("a/./b").is_err());
        assert!(check_relative_path("").is_err());
    }

    #[test]
    fn env_names() {
        assert!(valid_env_name("FOO_1"));
        assert!(valid_env_name("_x"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A=B"));
        assert!(!valid_env_name(""));
    }
}
