//! Interpreted languages: Python, JavaScript (Node) and Bash, each with its language guard.

use std::sync::OnceLock;

use vana_sandbox_core::{Command, FileEntry, Language, LanguageError, SecurityEvent, StepContext};

use crate::toolchain::Program;

fn command(argv: Vec<String>, ctx: &StepContext<'_>, env: &[(&str, &str)]) -> Command {
    let argv = argv
        .into_iter()
        .chain(std::iter::once(ctx.source_path.to_string()))
        .chain(ctx.args.iter().cloned())
        .collect();
    Command {
        argv,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Detection score: a matching shebang is certain, a file of the language's extension is strong
/// evidence, and each keyword adds its weight.
fn score(
    code: &str,
    files: &[&str],
    shebangs: &[&str],
    ext: &str,
    keywords: &[(&str, u32)],
) -> u32 {
    if let Some(first) = code.lines().next().filter(|l| l.starts_with("#!")) {
        return if shebangs.iter().any(|s| first.contains(s)) {
            100
        } else {
            0
        };
    }
    let mut s: u32 = keywords
        .iter()
        .filter(|(k, _)| code.contains(k))
        .map(|(_, w)| w)
        .sum();
    if files.iter().any(|f| f.ends_with(ext)) {
        s += 30;
    }
    s.min(95)
}

/// Where the Python guard lives in the workspace, and where it writes events.
const PY_GUARD: &str = ".vana/guard.py";
const PY_EVENTS: &str = ".vana/events.jsonl";
const PY_GUARD_SOURCE: &str = include_str!("guards/python_guard.py");

/// Python 3 with the system interpreter (`/usr/bin/python3`), never a shim from `$PATH`.
///
/// With the guard on, the program runs isolated (`-I`) under an audit hook that reports
/// subprocesses, sockets, ctypes and writes outside /workspace and /tmp as security events.
#[derive(Debug, Clone)]
pub struct Python {
    program: Program,
}

impl Python {
    const CANDIDATES: &'static [&'static str] = &["/usr/bin/python3", "/usr/local/bin/python3"];

    /// Looks the toolchain up on this host.
    pub fn detect() -> Self {
        Self {
            program: Program::find(Self::CANDIDATES),
        }
    }
}

impl Language for Python {
    fn name(&self) -> &'static str {
        "python"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["py", "python3"]
    }

    fn source_file(&self) -> &'static str {
        "main.py"
    }

    fn check_available(&self) -> Result<(), LanguageError> {
        self.program.require("python", "")
    }

    fn version(&self) -> Option<String> {
        self.program.version("--version")
    }

    fn detect(&self, code: &str, files: &[&str]) -> u32 {
        score(
            code,
            files,
            &["python"],
            ".py",
            &[
                ("def ", 25),
                ("import ", 20),
                ("print(", 25),
                ("self.", 10),
                ("elif ", 20),
                (":\n    ", 10),
            ],
        )
    }

    fn run(&self, ctx: &StepContext<'_>) -> Command {
        let py = self.program.command_path();
        let env = [
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONIOENCODING", "utf-8"),
        ];
        if ctx.guards.python_audit {
            let guard = format!("{}/{PY_GUARD}", ctx.workdir);
            command(vec![py, "-I".into(), "-B".into(), guard], ctx, &env)
        } else {
            // -E: ignore PYTHON* variables; -s: no user site directory.
            command(vec![py, "-E".into(), "-s".into()], ctx, &env)
        }
    }

    fn support_files(&self, ctx: &StepContext<'_>) -> Vec<FileEntry> {
        if !ctx.guards.python_audit {
            return Vec::new();
        }
        vec![
            FileEntry {
                path: PY_GUARD.into(),
                content: PY_GUARD_SOURCE.as_bytes().to_vec(),
                executable: false,
            },
            FileEntry {
                path: PY_EVENTS.into(),
                content: Vec::new(),
                executable: false,
            },
        ]
    }

    fn events_file(&self, ctx: &StepContext<'_>) -> Option<&'static str> {
        ctx.guards.python_audit.then_some(PY_EVENTS)
    }
}

/// JavaScript on the host's Node.js.
///
/// With the guard on and a Node.js that has the permission model (20+), the program may read
/// anything it can see but write only in /workspace and /tmp, and may not start child processes
/// or workers or load native addons; denials are reported as security events.
#[derive(Debug, Clone)]
pub struct JavaScript {
    program: Program,
    major: OnceLock<Option<u32>>,
}

impl JavaScript {
    const CANDIDATES: &'static [&'static str] =
        &["/usr/bin/node", "/usr/bin/nodejs", "/usr/local/bin/node"];

    /// Looks the toolchain up on this host.
    pub fn detect() -> Self {
        Self {
            program: Program::find(Self::CANDIDATES),
            major: OnceLock::new(),
        }
    }

    fn major(&self) -> Option<u32> {
        *self.major.get_or_init(|| {
            let v = self.program.version("--version")?;
            v.trim_start_matches('v').split('.').next()?.parse().ok()
        })
    }

    /// Permission-model flags for this Node.js, if it has the model.
    fn permission_flags(&self) -> Vec<String> {
        let flag = match self.major() {
            Some(m) if m >= 23 => "--permission",
            Some(m) if m >= 20 => "--experimental-permission",
            _ => return Vec::new(),
        };
        let mut v = vec![
            flag.to_string(),
            "--allow-fs-read=*".into(),
            "--allow-fs-write=/workspace/".into(),
            "--allow-fs-write=/tmp/".into(),
        ];
        if self.major().is_some_and(|m| (20..23).contains(&m)) {
            v.push("--disable-warning=ExperimentalWarning".into());
        }
        v
    }
}

impl Language for JavaScript {
    fn name(&self) -> &'static str {
        "javascript"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["js", "node", "nodejs"]
    }

    fn source_file(&self) -> &'static str {
        "main.js"
    }

    fn check_available(&self) -> Result<(), LanguageError> {
        self.program.require("javascript", "")
    }

    fn version(&self) -> Option<String> {
        self.program.version("--version")
    }

    fn detect(&self, code: &str, files: &[&str]) -> u32 {
        score(
            code,
            files,
            &["node"],
            ".js",
            &[
                ("console.log", 40),
                ("require(", 30),
                ("=>", 10),
                ("const ", 15),
                ("let ", 10),
                ("function ", 15),
                ("};", 10),
            ],
        )
    }

    fn run(&self, ctx: &StepContext<'_>) -> Command {
        let mut argv = vec![self.program.command_path()];
        if ctx.guards.node_permissions {
            argv.extend(self.permission_flags());
        }
        command(
            argv,
            ctx,
            &[("NODE_OPTIONS", ""), ("NO_UPDATE_NOTIFIER", "1")],
        )
    }

    fn stderr_events(&self, ctx: &StepContext<'_>, stderr: &[u8]) -> Vec<SecurityEvent> {
        if !ctx.guards.node_permissions {
            return Vec::new();
        }
        node_denials(stderr)
    }
}

/// One event per `ERR_ACCESS_DENIED` Node printed, with the permission and resource it named.
fn node_denials(stderr: &[u8]) -> Vec<SecurityEvent> {
    let text = String::from_utf8_lossy(stderr);
    let field = |line: &str, key: &str| {
        line.trim()
            .strip_prefix(key)
            .map(|v| v.trim_matches(|c| c == '\'' || c == ',').to_string())
    };
    let mut events = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.contains("ERR_ACCESS_DENIED")
            || events.len() >= vana_sandbox_core::language::MAX_GUARD_EVENTS
        {
            continue;
        }
        let (mut permission, mut resource) = (None, None);
        for _ in 0..3 {
            let Some(next) = lines.peek() else { break };
            if let Some(p) = field(next, "permission: ") {
                permission = Some(p);
            } else if let Some(r) = field(next, "resource: ") {
                resource = Some(r);
            } else {
                break;
            }
            lines.next();
        }
        events.push(SecurityEvent::new(
            "language_guard",
            format!(
                "javascript permission model denied {} on {}",
                permission.as_deref().unwrap_or("an operation"),
                resource.as_deref().unwrap_or("(unnamed resource)")
            ),
        ));
    }
    events
}

/// Bash scripts; restricted mode (`bash -r`) when the guard is on.
#[derive(Debug, Clone)]
pub struct Bash {
    program: Program,
}

impl Bash {
    const CANDIDATES: &'static [&'static str] = &["/usr/bin/bash", "/bin/bash"];

    /// Looks the toolchain up on this host.
    pub fn detect() -> Self {
        Self {
            program: Program::find(Self::CANDIDATES),
        }
    }
}

impl Language for Bash {
    fn name(&self) -> &'static str {
        "bash"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["sh", "shell"]
    }

    fn source_file(&self) -> &'static str {
        "main.sh"
    }

    fn check_available(&self) -> Result<(), LanguageError> {
        self.program.require("bash", "")
    }

    fn version(&self) -> Option<String> {
        self.program.version("--version")
    }

    fn detect(&self, code: &str, files: &[&str]) -> u32 {
        score(
            code,
            files,
            &["bash", "/sh"],
            ".sh",
            &[
                ("echo ", 25),
                ("\nfi", 20),
                ("done", 15),
                ("$(", 15),
                ("${", 10),
                ("then", 10),
            ],
        )
    }

    fn run(&self, ctx: &StepContext<'_>) -> Command {
        let mut argv = vec![self.program.command_path()];
        if ctx.guards.bash_restricted {
            argv.push("-r".into());
        }
        command(argv, ctx, &[])
    }

    fn stderr_events(&self, ctx: &StepContext<'_>, stderr: &[u8]) -> Vec<SecurityEvent> {
        if !ctx.guards.bash_restricted {
            return Vec::new();
        }
        String::from_utf8_lossy(stderr)
            .lines()
            .filter(|l| l.ends_with(": restricted") || l.contains(": restricted: "))
            .take(vana_sandbox_core::language::MAX_GUARD_EVENTS)
            .map(|l| SecurityEvent::new("language_guard", format!("bash restricted: {}", l.trim())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use vana_sandbox_core::Guards;

    fn ctx<'a>(args: &'a [String], guards: Guards) -> StepContext<'a> {
        StepContext {
            workdir: "/workspace",
            source_path: "/workspace/main.py",
            args,
            guards,
            opt_level: 0,
            files: &[],
        }
    }

    #[test]
    fn python_runs_isolated_under_the_guard() {
        let py = Python {
            program: Program::at(Some(PathBuf::from("/usr/bin/python3")), Python::CANDIDATES),
        };
        let args = vec!["a".to_string()];
        let cmd = py.run(&ctx(&args, Guards::default()));
        assert_eq!(
            cmd.argv,
            [
                "/usr/bin/python3",
                "-I",
                "-B",
                "/workspace/.vana/guard.py",
                "/workspace/main.py",
                "a"
            ]
        );
        assert_eq!(py.support_files(&ctx(&args, Guards::default())).len(), 2);
        let off = Guards {
            python_audit: false,
            ..Guards::default()
        };
        assert_eq!(
            py.run(&ctx(&args, off)).argv,
            ["/usr/bin/python3", "-E", "-s", "/workspace/main.py", "a"]
        );
        assert!(py.compile(&ctx(&args, off)).is_none());
    }

    #[test]
    fn missing_toolchain_is_a_clear_error() {
        let js = JavaScript {
            program: Program::at(None, JavaScript::CANDIDATES),
            major: OnceLock::new(),
        };
        let err = js
            .check_available()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("javascript toolchain not found"), "{err}");
        assert!(err.contains("/usr/bin/node"), "{err}");
    }

    #[test]
    fn bash_restricted_mode() {
        let sh = Bash {
            program: Program::at(Some(PathBuf::from("/usr/bin/bash")), Bash::CANDIDATES),
        };
        let g = Guards {
            bash_restricted: true,
            ..Guards::default()
        };
        let cmd = sh.run(&StepContext {
            workdir: "/workspace",
            source_path: "/workspace/main.sh",
            args: &[],
            guards: g,
            opt_level: 0,
            files: &[],
        });
        assert_eq!(cmd.argv, ["/usr/bin/bash", "-r", "/workspace/main.sh"]);
        let ev = sh.stderr_events(
            &StepContext {
                workdir: "/workspace",
                source_path: "",
                args: &[],
                guards: g,
                opt_level: 0,
                files: &[],
            },
            b"main.sh: line 2: cd: restricted\n",
        );
        assert_eq!(ev.len(), 1);
    }
}
