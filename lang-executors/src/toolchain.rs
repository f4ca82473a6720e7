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

/// A toolchain program, looked up once in system locations.
#[derive(Debug, Clone)]
pub struct Program {
    path: Option<PathBuf>,
    candidates: &'static [&'static str],
}

impl Program {
    /// The first executable of `candidates`.
    pub fn find(candidates: &'static [&'static str]) -> Self {
        Self {
            path: find_program(candidates),
            candidates,
        }
    }

    /// A program at a known path (or missing), for tests.
    #[cfg(test)]
    pub fn at(path: Option<PathBuf>, candidates: &'static [&'static str]) -> Self {
        Self { path, candidates }
    }

    /// Where it was found.
    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// The path to put in a command line (the first candidate when missing: the run then fails
    /// with a clear exec error, though `require` is checked first).
    pub fn command_path(&self) -> String {
        self.path.as_ref().map_or_else(
            || {
                self.candidates
                    .first()
                    .copied()
                    .unwrap_or_default()
                    .to_string()
            },
            |p| p.display().to_string(),
        )
    }

    /// `Ok` when found, else a `ToolchainMissing` error that names what was looked for.
    pub fn require(
        &self,
        language: &str,
        hint: &str,
    ) -> Result<(), vana_sandbox_core::LanguageError> {
        match self.path {
            Some(_) => Ok(()),
            None => Err(vana_sandbox_core::LanguageError::ToolchainMissing {
                language: language.into(),
                detail: format!("looked for {}{hint}", self.candidates.join(", ")),
            }),
        }
    }

    /// The first line of `program <arg>`.
    pub fn version(&self, arg: &str) -> Option<String> {
        version_of(self.path.as_ref()?, arg)
    }
}
