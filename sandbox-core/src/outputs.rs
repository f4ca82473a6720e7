//! Output files: the workspace files a request names in `outputs` (paths or globs), returned
//! with the result — capped in count and size, read through the backend's [`Files`] (never
//! through a link).

use base64::Engine as _;

use crate::files::{FileKind, Files, MAX_LIST_ENTRIES};
use crate::result::OutputFile;

/// Most patterns in `outputs`.
pub const MAX_PATTERNS: usize = 32;
/// Most files returned.
pub const MAX_OUTPUT_FILES: usize = 64;
/// Largest file returned with its content (larger ones are listed without it).
pub const MAX_OUTPUT_FILE_BYTES: u64 = 8 << 20;
/// Most content bytes returned in all.
pub const MAX_OUTPUT_TOTAL_BYTES: u64 = 32 << 20;

/// Checks one pattern: relative, no `.` or `..` components, 1-1024 bytes.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    crate::validate::check_relative_path(pattern)
}

/// Whether `path` matches `pattern`: `*` and `?` within one component, `**` across any number of
/// components, everything else literally.
pub fn matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let parts: Vec<&str> = path.split('/').collect();
    match_parts(&pat, &parts)
}

fn match_parts(pat: &[&str], parts: &[&str]) -> bool {
    match pat.split_first() {
        None => parts.is_empty(),
        Some((&"**", rest)) => (0..=parts.len()).any(|i| match_parts(rest, &parts[i..])),
        Some((p, rest)) => match parts.split_first() {
            Some((first, tail)) => {
                match_component(p.as_bytes(), first.as_bytes()) && match_parts(rest, tail)
            }
            None => false,
        },
    }
}

fn match_component(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_component(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_component(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_component(rest, &s[1..]),
    }
}

/// The media type of a file name (what agents' outputs usually are).
pub fn mime_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        Some("txt" | "log") => "text/plain",
        Some("md") => "text/markdown",
        Some("html" | "htm") => "text/html",
        Some("xml") => "application/xml",
        Some("zip") => "application/zip",
        Some("tar") => "application/x-tar",
        Some("gz") => "application/gzip",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

/// The regular files matching `patterns`, with their content within the caps. Nothing matched
/// is not an error (an empty list); a listing that fails is.
pub async fn collect(
    files: &dyn Files,
    patterns: &[String],
) -> Result<Vec<OutputFile>, crate::error::BackendError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let listing = files.list("", MAX_LIST_ENTRIES).await?;
    let mut out = Vec::new();
    let mut total = 0u64;
    for entry in listing
        .iter()
        .filter(|e| e.kind == FileKind::File)
        .filter(|e| patterns.iter().any(|p| matches(p, &e.path)))
        .take(MAX_OUTPUT_FILES)
    {
        let fits = entry.size <= MAX_OUTPUT_FILE_BYTES
            && total.saturating_add(entry.size) <= MAX_OUTPUT_TOTAL_BYTES;
        let content = if fits {
            // A file that changed or went between listing and reading is returned without
            // its content rather than failing the whole result.
            files
                .read(std::slice::from_ref(&entry.path), MAX_OUTPUT_FILE_BYTES)
                .await
                .ok()
                .and_then(|mut v| v.pop())
                .map(|f| f.content)
        } else {
            None
        };
        if let Some(c) = &content {
            total += c.len() as u64;
        }
        out.push(OutputFile {
            path: entry.path.clone(),
            size: content.as_ref().map_or(entry.size, |c| c.len() as u64),
            mime_type: mime_type(&entry.path).to_string(),
            content_base64: content.map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("*.png", "chart.png"));
        assert!(!matches("*.png", "out/chart.png"));
        assert!(matches("**/*.png", "out/chart.png"));
        assert!(matches("**/*.png", "chart.png"));
        assert!(matches("out/**", "out/a/b.csv"));
        assert!(matches("data?.csv", "data1.csv"));
        assert!(!matches("data?.csv", "data10.csv"));
        assert!(matches("report.txt", "report.txt"));
        assert!(!matches("report.txt", "report.txt.bak"));
    }

    #[test]
    fn patterns_stay_in_the_workspace() {
        assert!(check_pattern("../etc/passwd").is_err());
        assert!(check_pattern("/etc/passwd").is_err());
        assert!(check_pattern("out/*.png").is_ok());
    }
}
