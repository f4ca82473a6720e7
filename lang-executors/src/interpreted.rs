//! Interpreted languages: Python, JavaScript (Node) and Bash.

use std::path::PathBuf;

use vana_sandbox_core::{Command, Language, LanguageError, StepContext};

use crate::toolchain::{find_program, version_of};

fn missing(language: &str, looked: &[&str]) -> LanguageError {
    LanguageError::ToolchainMissing {
        language: language.into(),
        detail: format!("looked for {}", looked.join(", ")),
    }
}

fn argv(
    program: &Option<PathBuf>,
    fallback: &str,
    flags: &[&str],
    ctx: &StepContext<'_>,
) -> Vec<String> {
    let prog = program
        .as_ref()
        .map_or_else(|| fallback.to_string(), |p| p.display().to_string());
    std::iter::once(prog)
        .chain(flags.iter().map(|f| f.to_string()))
        .chain(std::iter::once(ctx.source_path.to_string()))
        .chain(ctx.args.iter().cloned())
        .collect()
}

macro_rules! interpreted {
    ($ty:ident, $name:literal, $aliases:expr, $file:literal, $candidates:expr, $version_arg:literal, $flags:expr, $env:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $ty {
            program: Option<PathBuf>,
        }

        impl $ty {
            const CANDIDATES: &'static [&'static str] = $candidates;

            /// Looks the toolchain up on this host.
            pub fn detect() -> Self {
                Self {
                    program: find_program(Self::CANDIDATES),
                }
            }
        }

        impl Language for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn aliases(&self) -> &'static [&'static str] {
                $aliases
            }

            fn source_file(&self) -> &'static str {
                $file
            }

            fn check_available(&self) -> Result<(), LanguageError> {
                self.program
                    .as_ref()
                    .map(drop)
                    .ok_or_else(|| missing($name, Self::CANDIDATES))
            }

            fn version(&self) -> Option<String> {
                version_of(self.program.as_ref()?, $version_arg)
            }

            fn run(&self, ctx: &StepContext<'_>) -> Command {
                let env: &[(&str, &str)] = $env;
                Command {
                    argv: argv(&self.program, Self::CANDIDATES[0], $flags, ctx),
                    env: env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }
            }
        }
    };
}

interpreted!(
    Python,
    "python",
    &["py", "python3"],
    "main.py",
    &["/usr/bin/python3", "/usr/local/bin/python3"],
    "--version",
    // -E: ignore PYTHON* variables; -s: no user site directory.
    &["-E", "-s"],
    &[
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONIOENCODING", "utf-8")
    ],
    "Python 3 with the system interpreter (`/usr/bin/python3`), never a shim from `$PATH`."
);

interpreted!(
    JavaScript,
    "javascript",
    &["js", "node", "nodejs"],
    "main.js",
    &["/usr/bin/node", "/usr/bin/nodejs", "/usr/local/bin/node"],
    "--version",
    &[],
    &[("NODE_OPTIONS", ""), ("NO_UPDATE_NOTIFIER", "1")],
    "JavaScript on the host's Node.js."
);

interpreted!(
    Bash,
    "bash",
    &["sh", "shell"],
    "main.sh",
    &["/usr/bin/bash", "/bin/bash"],
    "--version",
    &[],
    &[],
    "Bash scripts."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_runs_the_system_interpreter_with_isolation_flags() {
        let py = Python {
            program: Some(PathBuf::from("/usr/bin/python3")),
        };
        let args = vec!["a".to_string()];
        let ctx = StepContext {
            workdir: "/workspace",
            source_path: "/workspace/main.py",
            args: &args,
        };
        let cmd = py.run(&ctx);
        assert_eq!(
            cmd.argv,
            ["/usr/bin/python3", "-E", "-s", "/workspace/main.py", "a"]
        );
        assert!(py.compile(&ctx).is_none());
    }

    #[test]
    fn missing_toolchain_is_a_clear_error() {
        let js = JavaScript { program: None };
        let err = js
            .check_available()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("javascript toolchain not found"), "{err}");
        assert!(err.contains("/usr/bin/node"), "{err}");
    }
}
