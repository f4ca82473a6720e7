//! The language role: how a program in one language is placed, compiled and run. A language
//! never knows which backend runs it.

use std::sync::Arc;

use crate::result::SecurityEvent;
use crate::spec::{FileEntry, Guards, Mount, ProcessLimits};

/// Why a language cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LanguageError {
    /// The toolchain is not installed on this host.
    #[error("{language} toolchain not found: {detail}")]
    ToolchainMissing {
        /// Canonical language name.
        language: String,
        /// What was looked for.
        detail: String,
    },
    /// The language name is not known.
    #[error("unknown language `{0}`")]
    Unknown(String),
}

/// A command line with its language-specific environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    /// Program (absolute path inside the sandbox) and arguments.
    pub argv: Vec<String>,
    /// Variables the language needs (added to the sandbox's minimal environment).
    pub env: Vec<(String, String)>,
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

/// A programming language.
pub trait Language: Send + Sync {
    /// Canonical name (`python`).
    fn name(&self) -> &'static str;

    /// Other accepted names (`py`, `python3`).
    fn aliases(&self) -> &'static [&'static str];

    /// File name of the main source inside the workspace (`main.py`).
    fn source_file(&self) -> &'static str;

    /// Checks that the toolchain is installed.
    fn check_available(&self) -> Result<(), LanguageError>;

    /// Version string of the toolchain, for `doctor` and cache keys.
    fn version(&self) -> Option<String> {
        None
    }

    /// Host paths the toolchain needs beyond the base system (bound read-only).
    fn mounts(&self) -> Vec<Mount> {
        Vec::new()
    }

    /// The compile step, for compiled languages.
    fn compile(&self, _ctx: &StepContext<'_>) -> Option<Command> {
        None
    }

    /// Limits of the compile step: the language's defaults (compilers need more memory,
    /// processes and time than the programs they build), capped by the policy's `ceiling`.
    fn compile_limits(&self, ceiling: &ProcessLimits) -> ProcessLimits {
        *ceiling
    }

    /// The compiled artifact, relative to the workspace (what the compile cache stores).
    fn artifact(&self) -> Option<&'static str> {
        None
    }

    /// Everything besides the sources that decides the artifact (toolchain version, flags), for
    /// the compile cache key.
    fn cache_salt(&self, _ctx: &StepContext<'_>) -> String {
        String::new()
    }

    /// How sure the language is that `code` (with extra files named `files`) is written in it,
    /// 0 (not at all) to 100 (certain: a shebang or a file extension), for `language: "auto"`.
    fn detect(&self, _code: &str, _files: &[&str]) -> u32 {
        0
    }

    /// The run step.
    fn run(&self, ctx: &StepContext<'_>) -> Command;

    /// Files the language places in the workspace before every run (e.g. a guard script).
    fn support_files(&self, _ctx: &StepContext<'_>) -> Vec<FileEntry> {
        Vec::new()
    }

    /// A workspace file the guard writes its events to (JSON lines), read back after the run.
    fn events_file(&self, _ctx: &StepContext<'_>) -> Option<&'static str> {
        None
    }

    /// Security events the language recognises in the program's stderr.
    fn stderr_events(&self, _ctx: &StepContext<'_>, _stderr: &[u8]) -> Vec<SecurityEvent> {
        Vec::new()
    }
}

/// Most guard events kept per run.
pub const MAX_GUARD_EVENTS: usize = 50;

/// Parses a guard's JSON-lines event file (`{"kind": .., "detail": ..}` per line), keeping at
/// most [`MAX_GUARD_EVENTS`]. Malformed lines are skipped: the file is written inside the sandbox
/// and may be forged or truncated, which is why guard events are reports, never decisions.
pub fn parse_guard_events(language: &str, text: &[u8]) -> Vec<SecurityEvent> {
    #[derive(serde::Deserialize)]
    struct Line {
        kind: String,
        detail: String,
    }
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
            SecurityEvent::new("language_guard", format!("{language} {kind}: {detail}"))
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
        let name = name.trim().to_ascii_lowercase();
        self.list
            .iter()
            .find(|l| l.name() == name || l.aliases().iter().any(|a| *a == name))
    }

    /// Every language.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Language>> {
        self.list.iter()
    }

    /// Canonical names, for messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|l| l.name()).collect()
    }
}
