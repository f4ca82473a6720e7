//! Finding toolchains on the host.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The first of `candidates` that is an executable file.
///
/// Only system locations are searched, never `$PATH`: a `python3` first on PATH may be a shim
/// under a home directory the sandbox cannot (and should not) see.
pub fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(Path::new)
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(Path::to_path_buf)
}

/// The first line a `program --version`-style call prints (for `doctor`).
pub(crate) fn version_of(program: &Path, arg: &str) -> Option<String> {
    let out = Command::new(program).arg(arg).env_clear().output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}
