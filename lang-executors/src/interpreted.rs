//! Interpreted languages: Python, JavaScript (Node) and Bash, each with its language guard.

use std::path::PathBuf;
use std::sync::OnceLock;

use vana_sandbox_core::language::MAX_GUARD_EVENTS;
use vana_sandbox_core::{
    Command, Ecosystem, FileEntry, Kernel, KernelRole, Language, LanguageInfo, PackageSupport,
    SecurityEvent, SecurityEventKind, StepContext, Toolchain,
};

use crate::info::{BASH, JAVASCRIPT, PYTHON};
use crate::python_guard;

fn candidates(paths: &[&str]) -> Vec<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

fn command(argv: Vec<String>, ctx: &StepContext<'_>, env: &[(&str, &str)]) -> Command {
    let argv = argv
        .into_iter()
        .chain(std::iter::once(ctx.source_path.to_string()))
        .chain(ctx.args.iter().cloned())
        .collect();
    Command {
        arg0: None,
        argv,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Where the session kernels live in the workspace.
const KERNEL_PY: &str = ".vana/kernel.py";
const KERNEL_JS: &str = ".vana/kernel.js";
const KERNEL_PY_SOURCE: &str = include_str!("kernels/kernel.py");
const KERNEL_JS_SOURCE: &str = include_str!("kernels/kernel.js");

fn kernel_file(path: &str, source: &str) -> FileEntry {
    FileEntry {
        path: path.into(),
        content: source.as_bytes().to_vec(),
        executable: false,
    }
}

/// Asks a Python interpreter which wheels fit it (see `PackageTarget`): implementation, version,
/// ABI, and the platform tags of its C library and machine, most specific first (what pip's own
/// tag logic yields on a glibc system).
const PY_PROBE: &str = r#"
import json, os, platform, sys
impl = {"cpython": "cp", "pypy": "pp"}.get(sys.implementation.name, sys.implementation.name)
machine = platform.machine()
plats = []
try:
    lib, ver = os.confstr("CS_GNU_LIBC_VERSION").split()
    major, minor = (int(x) for x in ver.split(".")[:2])
except (AttributeError, OSError, TypeError, ValueError):
    major = minor = 0
if major == 2:
    plats += ["manylinux_2_%d_%s" % (n, machine) for n in range(minor, 4, -1)]
    for n, legacy in ((17, "manylinux2014"), (12, "manylinux2010"), (5, "manylinux1")):
        if minor >= n and (n == 17 or machine in ("x86_64", "i686")):
            plats.append("%s_%s" % (legacy, machine))
plats.append("linux_" + machine)
print(json.dumps({"implementation": impl, "version": platform.python_version(),
                  "abi": "%s%d%d" % (impl, sys.version_info[0], sys.version_info[1]),
                  "platforms": plats}))
"#;

/// Python 3 with the system interpreter (`/usr/bin/python3`), never a shim from `$PATH`.
///
/// With the guard on, the program runs isolated (`-I`) under an audit hook that reports
/// subprocesses, sockets, ctypes and writes outside /workspace and /tmp as security events.
#[derive(Debug)]
pub struct Python {
    toolchain: Toolchain,
    /// The guard compiled for this interpreter, made or read from the cache on first use.
    guard: OnceLock<Option<python_guard::Compiled>>,
}

impl Python {
    /// Looks the toolchain up on this host.
    pub fn detect() -> Self {
        Self {
            toolchain: Toolchain::find(
                "python",
                candidates(&["/usr/bin/python3"]),
                "--version",
                " (install Debian's python3)",
            ),
            guard: OnceLock::new(),
        }
    }

    fn guard(&self) -> Option<&python_guard::Compiled> {
        self.guard
            .get_or_init(|| python_guard::compiled(self.toolchain.path()?))
            .as_ref()
    }
}

impl Language for Python {
    fn info(&self) -> &'static LanguageInfo {
        &PYTHON
    }

    fn toolchain(&self) -> &Toolchain {
        &self.toolchain
    }

    fn run(&self, ctx: &StepContext<'_>) -> Command {
        let py = self.toolchain.command_path();
        let env = [
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONIOENCODING", "utf-8"),
        ];
        if ctx.guards.python_audit {
            // The program is the interpreter's own main script; `site` runs the guard first
            // (see `python_guard::files`). -u: unbuffered, so output written before a kill or
            // `os._exit` reaches the result (`-I` ignores PYTHONUNBUFFERED).
            let arg0 = python_guard::arg0(ctx.workdir, &py);
            Command {
                arg0: Some(arg0),
                ..command(vec![py, "-I".into(), "-B".into(), "-u".into()], ctx, &env)
            }
        } else {
            // -s: no user site directory. PYTHON* variables are honoured (the environment is
            // the sandbox's own; `PYTHONPATH` points at the request's packages).
            command(vec![py, "-s".into(), "-u".into()], ctx, &env)
        }
    }

    /// Wheels from a PyPI index. Under the guard and in the session kernel (both isolated:
    /// `-I` ignores `PYTHONPATH`), our own start-up code puts `PYTHONPATH` on `sys.path`.
    fn packages(&self) -> Option<PackageSupport> {
        Some(PackageSupport {
            ecosystem: Ecosystem::Pypi,
            probe: &["-I", "-c", PY_PROBE],
        })
    }

    fn support_files(&self, ctx: &StepContext<'_>) -> Vec<FileEntry> {
        if !ctx.guards.python_audit {
            return Vec::new();
        }
        python_guard::files(ctx.workdir, &self.toolchain.command_path(), self.guard())
    }

    fn events_file(&self, ctx: &StepContext<'_>) -> Option<&'static str> {
        ctx.guards.python_audit.then_some(python_guard::EVENTS_FILE)
    }

    /// The session's host kernel: Python cells in-process (globals, imports and cwd kept),
    /// Bash and JavaScript cells through their kernels. Isolated (`-I`: no user site, no
    /// `PYTHON*` variables), unbuffered. The audit guard is not loaded: it would report the
    /// kernel's own subprocesses; the sandbox is the boundary.
    fn kernel(&self, ctx: &StepContext<'_>) -> Option<Kernel> {
        Some(Kernel {
            role: KernelRole::Host,
            command: Command {
                arg0: None,
                argv: vec![
                    self.toolchain.command_path(),
                    "-I".into(),
                    "-B".into(),
                    "-u".into(),
                    format!("{}/{KERNEL_PY}", ctx.workdir),
                ],
                env: vec![
                    ("PYTHONIOENCODING".into(), "utf-8".into()),
                    ("MPLBACKEND".into(), "Agg".into()),
                ],
            },
            files: vec![kernel_file(KERNEL_PY, KERNEL_PY_SOURCE)],
        })
    }
}

/// JavaScript on the host's Node.js.
///
/// With the guard on and a Node.js that has the permission model (20+), the program may read
/// anything it can see but write only in /workspace and /tmp, and may not start child processes
/// or load native addons; denials are reported as security events. Worker threads are allowed
/// (ordinary programs use them; they run under the same permissions).
#[derive(Debug)]
pub struct JavaScript {
    toolchain: Toolchain,
    major: OnceLock<Option<u32>>,
}

impl JavaScript {
    /// Looks the toolchain up on this host.
    pub fn detect() -> Self {
        Self::with(Toolchain::find(
            "javascript",
            candidates(&["/usr/bin/node", "/usr/bin/nodejs"]),
            "--version",
            " (install Debian's nodejs)",
        ))
    }

    fn with(toolchain: Toolchain) -> Self {
        Self {
            toolchain,
            major: OnceLock::new(),
        }
    }

    fn major(&self) -> Option<u32> {
        *self.major.get_or_init(|| {
            let v = self.toolchain.version()?;
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
            "--allow-worker".into(),
        ];
        if self.major().is_some_and(|m| (20..23).contains(&m)) {
            v.push("--disable-warning=ExperimentalWarning".into());
        }
        v
    }
}

impl Language for JavaScript {
    fn info(&self) -> &'static LanguageInfo {
        &JAVASCRIPT
    }

    fn toolchain(&self) -> &Toolchain {
        &self.toolchain
    }

    fn run(&self, ctx: &StepContext<'_>) -> Command {
        let mut argv = vec![self.toolchain.command_path()];
        if ctx.guards.node_permissions {
            argv.extend(self.permission_flags());
        }
        command(
            argv,
            ctx,
            &[("NODE_OPTIONS", ""), ("NO_UPDATE_NOTIFIER", "1")],
        )
    }

    fn guard_events(
        &self,
        ctx: &StepContext<'_>,
        stderr: &[u8],
        _events_file: Option<&[u8]>,
    ) -> Vec<SecurityEvent> {
        if !ctx.guards.node_permissions {
            return Vec::new();
        }
        node_denials(stderr)
    }

    /// Packages from an npm registry (`require` finds them through `NODE_PATH`, `import`
    /// through `/node_modules`).
    fn packages(&self) -> Option<PackageSupport> {
        Some(PackageSupport {
            ecosystem: Ecosystem::Npm,
            probe: &[
                "-e",
                "console.log(JSON.stringify({implementation: 'node', version: process.versions.node, \
                 abi: process.versions.modules, platforms: [process.platform + '-' + process.arch]}))",
            ],
        })
    }

    /// JavaScript cells in one persistent context, under the same permission model as a run.
    fn kernel(&self, ctx: &StepContext<'_>) -> Option<Kernel> {
        let mut argv = vec![self.toolchain.command_path()];
        if ctx.guards.node_permissions {
            argv.extend(self.permission_flags());
        }
        argv.push(format!("{}/{KERNEL_JS}", ctx.workdir));
        Some(Kernel {
            role: KernelRole::Cells,
            command: Command {
                arg0: None,
                argv,
                env: vec![("NODE_OPTIONS".into(), String::new())],
            },
            files: vec![kernel_file(KERNEL_JS, KERNEL_JS_SOURCE)],
        })
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
        if !line.contains("ERR_ACCESS_DENIED") || events.len() >= MAX_GUARD_EVENTS {
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
        events.push(SecurityEvent::program(
            SecurityEventKind::LanguageGuard,
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
#[derive(Debug)]
pub struct Bash {
    toolchain: Toolchain,
}

impl Bash {
    /// Looks the toolchain up on this host.
    pub fn detect() -> Self {
        Self {
            toolchain: Toolchain::find(
                "bash",
                candidates(&["/usr/bin/bash", "/bin/bash"]),
                "--version",
                "",
            ),
        }
    }
}

impl Language for Bash {
    fn info(&self) -> &'static LanguageInfo {
        &BASH
    }

    fn toolchain(&self) -> &Toolchain {
        &self.toolchain
    }

    fn run(&self, ctx: &StepContext<'_>) -> Command {
        let mut argv = vec![self.toolchain.command_path()];
        if ctx.guards.bash_restricted {
            argv.push("-r".into());
        }
        command(argv, ctx, &[])
    }

    fn guard_events(
        &self,
        ctx: &StepContext<'_>,
        stderr: &[u8],
        _events_file: Option<&[u8]>,
    ) -> Vec<SecurityEvent> {
        if !ctx.guards.bash_restricted {
            return Vec::new();
        }
        bash_denials(stderr)
    }

    /// Bash cells run as `bash -c` by the host kernel, which keeps the working directory and
    /// exported variables between them.
    fn kernel(&self, ctx: &StepContext<'_>) -> Option<Kernel> {
        let mut argv = vec![self.toolchain.command_path()];
        if ctx.guards.bash_restricted {
            argv.push("-r".into());
        }
        Some(Kernel {
            role: KernelRole::Cells,
            command: Command {
                arg0: None,
                argv,
                env: Vec::new(),
            },
            files: Vec::new(),
        })
    }
}

/// One event per restricted-mode refusal Bash printed.
fn bash_denials(stderr: &[u8]) -> Vec<SecurityEvent> {
    {
        String::from_utf8_lossy(stderr)
            .lines()
            .filter(|l| l.ends_with(": restricted") || l.contains(": restricted: "))
            .take(MAX_GUARD_EVENTS)
            .map(|l| {
                SecurityEvent::program(
                    SecurityEventKind::LanguageGuard,
                    format!("bash restricted: {}", l.trim()),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            toolchain: Toolchain::at("python", Some("/usr/bin/python3".into()), "--version"),
            guard: OnceLock::new(),
        };
        let args = vec!["a".to_string()];
        let cmd = py.run(&ctx(&args, Guards::default()));
        assert_eq!(
            cmd.argv,
            [
                "/usr/bin/python3",
                "-I",
                "-B",
                "-u",
                "/workspace/main.py",
                "a"
            ]
        );
        assert_eq!(
            cmd.arg0.as_deref(),
            Some("/workspace/.vana/venv/bin/python3")
        );
        let files = py.support_files(&ctx(&args, Guards::default()));
        let names: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        let version = py.guard().map(|g| g.version.clone());
        assert!(version.is_some(), "the guard compiles for /usr/bin/python3");
        let site = format!(
            ".vana/venv/lib/python{}/site-packages/vana_guard.pth",
            version.unwrap_or_default()
        );
        assert_eq!(
            names,
            [
                ".vana/guard.py",
                ".vana/guard_main.py",
                ".vana/events.jsonl",
                ".vana/venv/pyvenv.cfg",
                ".vana/venv/lib/python3/dist-packages/vana_guard.pth",
                &site,
                ".vana/guard_main.py.bin"
            ]
        );
        let off = Guards {
            python_audit: false,
            ..Guards::default()
        };
        let plain = py.run(&ctx(&args, off));
        assert_eq!(
            plain.argv,
            ["/usr/bin/python3", "-s", "-u", "/workspace/main.py", "a"]
        );
        assert_eq!(plain.arg0, None);
        assert!(py.compile(&ctx(&args, off)).is_none());
    }

    #[test]
    fn bash_restricted_mode() {
        let sh = Bash {
            toolchain: Toolchain::at("bash", Some("/usr/bin/bash".into()), "--version"),
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
        let ev = sh.guard_events(
            &StepContext {
                workdir: "/workspace",
                source_path: "",
                args: &[],
                guards: g,
                opt_level: 0,
                files: &[],
            },
            b"main.sh: line 2: cd: restricted\n",
            None,
        );
        assert_eq!(ev.len(), 1);
    }
}
