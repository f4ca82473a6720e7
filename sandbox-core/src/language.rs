//! The language role: how a program in one language is placed, compiled and run. A language
//! never knows which backend runs it.
//!
//! What is data about a language (name, aliases, file name, detection hints) is a
//! [`LanguageInfo`]; finding its toolchain on the host is a [`Toolchain`]; only the steps that
//! differ (compile, run, guards) are code, in the [`Language`] trait.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::events::{SecurityEvent, SecurityEventKind};
use crate::limits::Limits;
use crate::packages::PackageSupport;
use crate::spec::{FileEntry, Guards, Mount};

/// Why a language cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LanguageError {
    /// The toolchain is not installed on this host.
    #[error("{language} toolchain not found: {detail}")]
    ToolchainMissing {
        /// Canonical language name.
        language: &'static str,
        /// What was looked for.
        detail: String,
    },
}

/// The data that describes a language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanguageInfo {
    /// Canonical name (`python`).
    pub name: &'static str,
    /// Other accepted names (`py`, `python3`).
    pub aliases: &'static [&'static str],
    /// File name of the main source inside the workspace (`main.py`).
    pub source_file: &'static str,
    /// File extensions of the language (`.py`), for `auto` detection from extra files.
    pub extensions: &'static [&'static str],
    /// Interpreter names a shebang line may name (`python`).
    pub shebangs: &'static [&'static str],
    /// Words that suggest the language, with their weight, for `auto` detection.
    pub keywords: &'static [(&'static str, u32)],
}

impl LanguageInfo {
    /// How sure we are that `code` (with extra files named `files`) is in this language, 0 (not
    /// at all) to 100: a matching shebang is certain (and a shebang naming another interpreter
    /// rules the language out); otherwise keywords and extra files of the language's extension
    /// add up, capped at 95.
    pub fn detect(&self, code: &str, files: &[&str]) -> u32 {
        if let Some(first) = code.lines().next().filter(|l| l.starts_with("#!")) {
            return if self.shebangs.iter().any(|s| first.contains(s)) {
                100
            } else {
                0
            };
        }
        let mut score: u32 = self
            .keywords
            .iter()
            .filter(|(k, _)| code.contains(k))
            .map(|(_, w)| w)
            .sum();
        if files
            .iter()
            .any(|f| self.extensions.iter().any(|e| f.ends_with(e)))
        {
            score += 40;
        }
        score.min(95)
    }

    /// Whether `name` (any case) is this language's name or an alias.
    pub fn answers_to(&self, name: &str) -> bool {
        let name = name.trim().to_ascii_lowercase();
        self.name == name || self.aliases.contains(&name.as_str())
    }
}

/// A toolchain program on the host, looked up once in fixed locations (never `$PATH` unless a
/// language passes its entries explicitly), with its version read on first use.
#[derive(Debug)]
pub struct Toolchain {
    language: &'static str,
    path: Option<PathBuf>,
    looked_for: Vec<PathBuf>,
    hint: &'static str,
    version_arg: &'static str,
    version: OnceLock<Option<String>>,
}

impl Toolchain {
    /// The first executable of `candidates`; `hint` says how to install it.
    pub fn find(
        language: &'static str,
        candidates: impl IntoIterator<Item = PathBuf>,
        version_arg: &'static str,
        hint: &'static str,
    ) -> Self {
        let looked_for: Vec<PathBuf> = candidates.into_iter().collect();
        let path = looked_for.iter().find(|p| is_executable(p)).cloned();
        Self {
            language,
            path,
            looked_for,
            hint,
            version_arg,
            version: OnceLock::new(),
        }
    }

    /// A toolchain that was looked for in `looked_for` and not found (`hint` says why).
    pub fn missing(language: &'static str, looked_for: Vec<PathBuf>, hint: &'static str) -> Self {
        Self {
            language,
            path: None,
            looked_for,
            hint,
            version_arg: "",
            version: OnceLock::new(),
        }
    }

    /// A toolchain at a known path (or missing), without looking.
    pub fn at(language: &'static str, path: Option<PathBuf>, version_arg: &'static str) -> Self {
        Self {
            language,
            looked_for: path.iter().cloned().collect(),
            path,
            hint: "",
            version_arg,
            version: OnceLock::new(),
        }
    }

    /// Where it was found.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `Ok` with the path when found, else an error naming everything looked for.
    pub fn require(&self) -> Result<&Path, LanguageError> {
        self.path
            .as_deref()
            .ok_or_else(|| LanguageError::ToolchainMissing {
                language: self.language,
                detail: format!(
                    "looked for {}{}",
                    self.looked_for
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.hint
                ),
            })
    }

    /// The path to put in a command line (the first candidate when missing: the engine checks
    /// [`require`](Self::require) before anything runs).
    pub fn command_path(&self) -> String {
        self.path
            .as_ref()
            .or(self.looked_for.first())
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// The first line `program <version_arg>` prints, read once.
    pub fn version(&self) -> Option<String> {
        self.version
            .get_or_init(|| {
                let out = std::process::Command::new(self.path.as_ref()?)
                    .arg(self.version_arg)
                    .env_clear()
                    .output()
                    .ok()?;
                let text = if out.stdout.is_empty() {
                    out.stderr
                } else {
                    out.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_string())
            })
            .clone()
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command line with its language-specific environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    /// Program (absolute path inside the sandbox) and arguments.
    pub argv: Vec<String>,
    /// The name the program is started under, when not its path ([`ProcessSpec::arg0`]).
    ///
    /// [`ProcessSpec::arg0`]: crate::ProcessSpec::arg0
    pub arg0: Option<String>,
    /// Variables the language needs (added to the sandbox's minimal environment).
    pub env: Vec<(String, String)>,
}

/// What a session kernel is to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelRole {
    /// The session's kernel process: it runs cells of its own language in-process and those of
    /// other languages through their [`KernelRole::Cells`] commands.
    Host,
    /// Started by the host kernel to run this language's cells.
    Cells,
}

/// How a language runs cells in a session: a process that keeps state between cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Its role.
    pub role: KernelRole,
    /// The command that starts it (paths inside the sandbox).
    pub command: Command,
    /// Files it needs in the workspace (its source).
    pub files: Vec<FileEntry>,
}

/// A compile step.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileStep {
    /// The compiler's command line and environment: fixed by the language (the request's
    /// `env` never reaches it).
    pub command: Command,
    /// The language's own limits for its compiler (capped by the policy's compile ceiling).
    pub limits: Limits,
    /// The compiled artifact, relative to the workspace (what the compile cache stores).
    pub artifact: &'static str,
    /// Everything besides argv, env and the sources that decides the artifact (toolchain
    /// version, flags), for the compile cache key.
    pub cache_salt: String,
}

/// Where the program lives inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext<'a> {
    /// The working directory (`/workspace`).
    pub workdir: &'a str,
    /// Absolute path of the main source file.
    pub source_path: &'a str,
    /// Arguments for the program.
    pub args: &'a [String],
    /// Language guards to apply.
    pub guards: Guards,
    /// Optimisation level for compiled languages (0-3).
    pub opt_level: u8,
    /// Paths of the extra files the request placed beside the source.
    pub files: &'a [String],
}

/// A programming language: only what differs between languages is code.
pub trait Language: Send + Sync {
    /// Name, aliases, file name and detection hints.
    fn info(&self) -> &'static LanguageInfo;

    /// The toolchain on this host.
    fn toolchain(&self) -> &Toolchain;

    /// Host paths the toolchain needs beyond the base system (bound read-only).
    fn mounts(&self) -> Vec<Mount> {
        Vec::new()
    }

    /// The compile step, for compiled languages.
    fn compile(&self, _ctx: &StepContext<'_>) -> Option<CompileStep> {
        None
    }

    /// The run step.
    fn run(&self, ctx: &StepContext<'_>) -> Command;

    /// Where this language's packages come from and how its interpreter is probed for them
    /// (`None`: the language has no packages, and a request naming some is rejected). The
    /// language's run step and kernel must honour the ecosystem's variable
    /// ([`Ecosystem::env`](crate::Ecosystem::env)).
    fn packages(&self) -> Option<PackageSupport> {
        None
    }

    /// The session kernel of this language, when it has one (`ctx.source_path` is unused).
    fn kernel(&self, _ctx: &StepContext<'_>) -> Option<Kernel> {
        None
    }

    /// Files the language places in the workspace before every run (e.g. a guard script).
    fn support_files(&self, _ctx: &StepContext<'_>) -> Vec<FileEntry> {
        Vec::new()
    }

    /// A workspace file the guard writes its events to (JSON lines), read back after the run.
    fn events_file(&self, _ctx: &StepContext<'_>) -> Option<&'static str> {
        None
    }

    /// Security events the guard reported: from the program's stderr and, when the language
    /// has one, the content of its events file (at most [`MAX_GUARD_EVENTS_BYTES`]). Both are
    /// written inside the sandbox, so every event is marked program-reported.
    fn guard_events(
        &self,
        _ctx: &StepContext<'_>,
        _stderr: &[u8],
        events_file: Option<&[u8]>,
    ) -> Vec<SecurityEvent> {
        events_file
            .map(|text| parse_guard_events(self.name(), text))
            .unwrap_or_default()
    }

    /// Canonical name (`info().name`).
    fn name(&self) -> &'static str {
        self.info().name
    }
}

/// Most guard events kept per run.
pub const MAX_GUARD_EVENTS: usize = 50;
/// Most bytes of a guard's events file that are read back.
pub const MAX_GUARD_EVENTS_BYTES: u64 = 64 * 1024;

/// Parses a guard's JSON-lines event file (`{"kind": .., "detail": ..}` per line), keeping at
/// most [`MAX_GUARD_EVENTS`]. Malformed lines are skipped: the file is written inside the sandbox
/// and may be forged or truncated, which is why guard events are reports, never decisions.
pub fn parse_guard_events(language: &str, text: &[u8]) -> Vec<SecurityEvent> {
    #[derive(serde::Deserialize)]
    struct Line {
        kind: String,
        detail: String,
    }
    let text = text.get(..MAX_GUARD_EVENTS_BYTES as usize).unwrap_or(text);
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .take(MAX_GUARD_EVENTS)
        .map(|l| {
            let kind: String = l
                .kind
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(40)
                .collect();
            let detail: String = l.detail.chars().take(300).collect();
            SecurityEvent::program(
                SecurityEventKind::LanguageGuard,
                format!("{language} {kind}: {detail}"),
            )
        })
        .collect()
}

/// The set of languages an Engine knows, looked up by name or alias.
#[derive(Clone, Default)]
pub struct Languages {
    list: Vec<Arc<dyn Language>>,
}

impl std::fmt::Debug for Languages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|l| l.name()))
            .finish()
    }
}

impl Languages {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a language (a later one with the same name replaces the earlier).
    pub fn with(mut self, language: Arc<dyn Language>) -> Self {
        self.list.retain(|l| l.name() != language.name());
        self.list.push(language);
        self
    }

    /// Finds a language by canonical name or alias (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Language>> {
        self.list.iter().find(|l| l.info().answers_to(name))
    }

    /// Every language.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Language>> {
        self.list.iter()
    }

    /// Canonical names, for messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|l| l.name()).collect()
    }

    /// Scores of every language for `code` and extra `files`, best first.
    pub fn scores(&self, code: &str, files: &[&str]) -> Vec<(u32, &'static str)> {
        let mut scores: Vec<(u32, &'static str)> = self
            .list
            .iter()
            .map(|l| (l.info().detect(code, files), l.name()))
            .collect();
        scores.sort_by(|a, b| b.cmp(a));
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY: LanguageInfo = LanguageInfo {
        name: "python",
        aliases: &["py"],
        source_file: "main.py",
        extensions: &[".py"],
        shebangs: &["python"],
        keywords: &[("import ", 20), ("print(", 25)],
    };

    #[test]
    fn detection_is_data() {
        assert_eq!(PY.detect("#!/usr/bin/env python3\nx", &[]), 100);
        assert_eq!(PY.detect("#!/bin/bash\nprint(1)", &[]), 0);
        assert_eq!(PY.detect("import os\nprint(1)", &[]), 45);
        assert_eq!(PY.detect("x = 1", &["lib.py"]), 40);
        assert!(PY.answers_to(" PY "));
        assert!(!PY.answers_to("python4"));
    }

    #[test]
    fn guard_events_are_program_reported_and_capped() {
        let mut text = Vec::new();
        for i in 0..100 {
            text.extend_from_slice(format!("{{\"kind\":\"k{i}\",\"detail\":\"d\"}}\n").as_bytes());
        }
        let ev = parse_guard_events("python", &text);
        assert_eq!(ev.len(), MAX_GUARD_EVENTS);
        assert!(ev
            .iter()
            .all(|e| e.source == crate::events::Reporter::Program));
        let huge = vec![b'x'; 10 << 20];
        assert!(parse_guard_events("python", &huge).is_empty());
    }

    #[test]
    fn missing_toolchain_names_what_was_looked_for() {
        let t = Toolchain::find(
            "javascript",
            [PathBuf::from("/nonexistent/node")],
            "--version",
            " (install nodejs)",
        );
        let err = t.require().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("javascript toolchain not found"), "{err}");
        assert!(err.contains("/nonexistent/node (install nodejs)"), "{err}");
        assert_eq!(t.command_path(), "/nonexistent/node");
    }
}
