//! Running an installer: a trusted host program (pip, npm) with an environment of our making
//! (nothing inherited from the host: no proxies, no tokens, no configuration), in a scratch
//! directory, with a timeout and bounded output.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vana_sandbox_core::host::{run_bounded, BoundedOutput};
use vana_sandbox_core::PackageError;

/// Most bytes of an installer's stdout and of its stderr that are kept.
const OUTPUT_CAP: usize = 256 * 1024;

/// A command line: the program and its leading arguments (`/usr/bin/python3 -m pip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tool {
    /// What it is called in messages (`pip`, `npm`).
    pub name: &'static str,
    /// Program and leading arguments.
    pub argv: Vec<String>,
}

impl Tool {
    /// Runs the tool with `args`, `env` (over a minimal base: `PATH`, `LANG`, `HOME` and
    /// `TMPDIR` in `scratch`) and `timeout`.
    pub(crate) fn run(
        &self,
        args: &[String],
        env: &[(&str, String)],
        scratch: &Path,
        timeout: Duration,
    ) -> Result<BoundedOutput, PackageError> {
        let (program, lead) = self
            .argv
            .split_first()
            .ok_or_else(|| PackageError::Installer {
                tool: self.name.into(),
                detail: "no command configured".into(),
            })?;
        let home = scratch.join("home");
        let tmp = scratch.join("tmp");
        for d in [&home, &tmp] {
            std::fs::create_dir_all(d)
                .map_err(|e| PackageError::io(format!("creating {}", d.display()), e))?;
        }
        let mut cmd = Command::new(program);
        cmd.args(lead)
            .args(args)
            .current_dir(scratch)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &home)
            .env("TMPDIR", &tmp);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_bounded(&mut cmd, timeout, OUTPUT_CAP).map_err(|e| PackageError::Installer {
            tool: self.name.into(),
            detail: match e.kind() {
                std::io::ErrorKind::TimedOut => format!(
                    "did not finish within {} s (a slow or unreachable index?)",
                    timeout.as_secs()
                ),
                _ => format!("could not run `{program}`: {e}"),
            },
        })
    }

    /// The tool's version line (`pip 23.0.1`, `npm 11.19.1`).
    pub(crate) fn version(&self, scratch: &Path) -> Result<String, String> {
        let out = self
            .run(&["--version".into()], &[], scratch, Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("`{} --version` failed ({})", self.name, out.status));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next().unwrap_or_default().trim();
        // `pip 23.0.1 from /usr/lib/python3/dist-packages/pip (python 3.11)`; npm prints the
        // bare version.
        let version = match line.split_once(" from ") {
            Some((v, _)) => v.to_string(),
            None => format!("{} {line}", self.name),
        };
        Ok(version)
    }
}

/// The last lines of an installer's stderr that say something, for messages.
pub(crate) fn tail(stderr: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = kept.len().saturating_sub(lines);
    let mut s = kept[start..].join("\n");
    // At most 2000 bytes, cut on a character boundary (the text is the installer's, partly the
    // index's: anything may be in it).
    let mut end = s.len().min(2000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines_and_cuts_on_a_character_boundary() {
        assert_eq!(tail(b"a\n\n b\nc  \n", 2), " b\nc");
        let long = "\u{e9}".repeat(1500); // 3000 bytes of two-byte characters
        let cut = tail(format!("x{long}").as_bytes(), 1);
        assert!(cut.len() <= 2000 && cut.starts_with('x'));
        let invalid = [b'x'; 1999]
            .iter()
            .chain(&[0xff, 0xfe])
            .copied()
            .collect::<Vec<u8>>();
        assert!(tail(&invalid, 1).len() <= 2000);
    }
}
