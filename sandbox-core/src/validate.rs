//! Request validation: every check that does not depend on policy. A request that fails here is
//! `rejected` with a message that names the field and the rule.

use std::sync::Arc;

use base64::Engine as _;

use crate::language::{Language, Languages};
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
/// Longest accepted timeout, in seconds (policies usually allow far less).
pub const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// A request that passed validation, with its language resolved and inputs decoded.
#[derive(Clone)]
pub struct ValidRequest {
    /// The language.
    pub language: Arc<dyn Language>,
    /// Standard input bytes.
    pub stdin: Vec<u8>,
    /// Extra files, decoded.
    pub files: Vec<FileEntry>,
}

impl std::fmt::Debug for ValidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidRequest")
            .field("language", &self.language.name())
            .field("stdin_len", &self.stdin.len())
            .field("files", &self.files.len())
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
    if let Some(t) = request.timeout {
        if !t.is_finite() || t <= 0.0 || t > MAX_TIMEOUT_SECS {
            return reject(format!(
                "timeout must be more than 0 and at most {MAX_TIMEOUT_SECS} seconds (got {t})"
            ));
        }
    }
    check_limits(request)?;
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
    if !request.packages.is_empty() {
        return reject(format!(
            "packages are not supported yet (asked for: {}); remove `packages` from the request",
            request.packages.join(", ")
        ));
    }
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
    let files = decode_files(request, language.source_file())?;
    Ok(ValidRequest {
        language: language.clone(),
        stdin,
        files,
    })
}

/// Picks the language for `language: "auto"`: the highest score wins when it is clearly ahead
/// (at least 20 points and 10 more than the runner-up); otherwise the request is rejected.
pub fn detect_language(
    request: &ExecutionRequest,
    languages: &Languages,
) -> Result<String, Rejection> {
    let files: Vec<&str> = request.files.iter().map(|f| f.path.as_str()).collect();
    let mut scores: Vec<(u32, &'static str)> = languages
        .iter()
        .map(|l| (l.detect(&request.code, &files), l.name()))
        .collect();
    scores.sort_by(|a, b| b.cmp(a));
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

fn check_limits(request: &ExecutionRequest) -> Result<(), Rejection> {
    let Some(l) = &request.limits else {
        return Ok(());
    };
    let int = |name: &str, v: Option<i64>, max: i64| -> Result<(), Rejection> {
        match v {
            Some(v) if v <= 0 => {
                reject(format!("limits.{name} must be a positive number (got {v})"))
            }
            Some(v) if v > max => reject(format!(
                "limits.{name} is out of range (got {v}; at most {max})"
            )),
            _ => Ok(()),
        }
    };
    int("memory_mb", l.memory_mb, 1 << 20)?;
    int("disk_mb", l.disk_mb, 1 << 20)?;
    int("max_processes", l.max_processes, 1 << 20)?;
    int("max_output_bytes", l.max_output_bytes, 1 << 30)?;
    if let Some(c) = l.cpus {
        if !c.is_finite() || c <= 0.0 || c > 1024.0 {
            return reject(format!(
                "limits.cpus must be more than 0 and at most 1024 (got {c})"
            ));
        }
    }
    if let Some(c) = l.cpu_time_secs {
        if !c.is_finite() || c <= 0.0 || c > MAX_TIMEOUT_SECS {
            return reject(format!(
                "limits.cpu_time_secs must be more than 0 and at most {MAX_TIMEOUT_SECS} (got {c})"
            ));
        }
    }
    if let Some(m) = l.memory_mb {
        if m < 8 {
            return reject(format!("limits.memory_mb must be at least 8 (got {m})"));
        }
    }
    Ok(())
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
