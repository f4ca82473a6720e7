//! Compiled languages: Go and Rust. The compiler runs inside the sandbox as its own step with
//! its own limits; the binary it leaves in the workspace is what the run step executes (and what
//! the compile cache stores).

use std::path::{Path, PathBuf};
use std::process::Command as HostCommand;
use std::sync::OnceLock;
use std::time::Duration;

use vana_sandbox_core::{
    Bytes, Command, CompileStep, FileEntry, Language, LanguageInfo, Limits, Mount, StepContext,
    Toolchain,
};

use crate::info::{GO, RUST};

/// The compiled program, relative to the workspace.
const ARTIFACT: &str = "main";
const ARTIFACT_PATH: &str = "/workspace/main";

/// What a compiler of ours needs at most (the policy's compile ceiling may allow less): 1 GiB,
/// 128 processes, 120 s; everything else is the ceiling's.
const COMPILER_LIMITS: Limits = Limits {
    memory: Bytes(1 << 30),
    processes: 128,
    timeout: Duration::from_secs(120),
    ..Limits::MAX
};

fn run_artifact(ctx: &StepContext<'_>) -> Command {
    Command {
        arg0: None,
        argv: std::iter::once(ARTIFACT_PATH.to_string())
            .chain(ctx.args.iter().cloned())
            .collect(),
        env: vec![],
    }
}

/// Go, with the host's `go` (Debian's golang-go). Standard library only, no network, no cgo;
/// GOCACHE and GOPATH live in the workspace (hidden directories `go build .` ignores), so the
/// compile step needs the workspace's share of the disk budget only, wherever a backend puts
/// /tmp (Docker under gVisor gives /tmp a share of its own). Every `.go` file of the request belongs to
/// package main.
///
/// A cold Go build compiles `fmt` and its dependencies first (13 s on one core). So the host
/// builds the common standard-library packages once, outside any sandbox, into a seed cache
/// ([`GO_SEED_DIR`]); it is bound read-only into the sandbox and copied into the sandbox's own
/// GOCACHE before each build as symbolic links (no disk of the budget, 0.2 s). Sandboxes never
/// write the seed.
#[derive(Debug)]
pub struct Go {
    go: Toolchain,
    seed: OnceLock<Option<PathBuf>>,
}

/// Where the host keeps Go's seed build cache (one directory per Go version).
pub const GO_SEED_DIR: &str = "/var/cache/vana-sandbox/go-seed";
const GO_SEED_MOUNT: &str = "/opt/vana/go-seed";
/// Bumped whenever [`GO_SEED_PROGRAM`] changes, so that a host's older seed is rebuilt.
const GO_SEED_LAYOUT: u32 = 2;
const GO_SEED_PROGRAM: &str = "package main\n\nimport (\n\t_ \"bufio\"\n\t_ \"bytes\"\n\t_ \"container/heap\"\n\t_ \"encoding/json\"\n\t_ \"errors\"\n\t_ \"fmt\"\n\t_ \"io\"\n\t_ \"math\"\n\t_ \"math/rand\"\n\t_ \"net/http\"\n\t_ \"os\"\n\t_ \"regexp\"\n\t_ \"sort\"\n\t_ \"strconv\"\n\t_ \"strings\"\n\t_ \"sync\"\n\t_ \"time\"\n\t_ \"unicode\"\n)\n\nfunc main() {}\n";
/// The compile step's whole Go environment (nothing of the request reaches it). `GOENV=off`:
/// no `go env -w` file, which a request could otherwise place under `$HOME/.config/go`.
const GO_ENV: [(&str, &str); 9] = [
    ("GOENV", "off"),
    ("GOPROXY", "off"),
    ("GOFLAGS", "-mod=mod"),
    ("GOTOOLCHAIN", "local"),
    ("GOTELEMETRY", "off"),
    ("GO111MODULE", "on"),
    ("CGO_ENABLED", "0"),
    ("GOPATH", "/workspace/.gopath"),
    // The build's scratch ($WORK) too: /tmp may be a smaller share of the budget.
    ("GOTMPDIR", "/workspace/.gotmp"),
];

impl Go {
    /// Looks the toolchain up on this host.
    pub fn detect() -> Self {
        // Debian's Go: /usr/local is never visible in a sandbox.
        let candidates = ["/usr/bin/go", "/usr/lib/go/bin/go"];
        Self {
            go: Toolchain::find(
                "go",
                candidates.map(PathBuf::from),
                "version",
                " (install Debian's golang-go)",
            ),
            seed: OnceLock::new(),
        }
    }

    /// The seed cache for this Go version, built on first use (trusted: our own program, the
    /// host's toolchain, no sandbox involved). `None` when it cannot be built: builds then start
    /// cold, which is slower but correct.
    pub fn seed(&self) -> Option<&PathBuf> {
        self.seed.get_or_init(|| self.build_seed()).as_ref()
    }

    fn build_seed(&self) -> Option<PathBuf> {
        let go = self.go.path()?;
        let version = self.go.version()?;
        let tag: String = version
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = Path::new(GO_SEED_DIR);
        // The seed's own layout version: a seed built from an older GO_SEED_PROGRAM (one
        // without `net/http`, say) is not reused.
        let done = base.join(format!("{tag}-{GO_SEED_LAYOUT}"));
        if done.join("cache").is_dir() {
            return Some(done.join("cache"));
        }
        std::fs::create_dir_all(base).ok()?;
        let work = base.join(format!(".build-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.join("src")).ok()?;
        std::fs::write(work.join("src/main.go"), GO_SEED_PROGRAM).ok()?;
        std::fs::write(work.join("src/go.mod"), "module seed\n\ngo 1.19\n").ok()?;
        let ok = HostCommand::new(go)
            .args(["build", "-trimpath", "-o", "/dev/null", "."])
            .current_dir(work.join("src"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &work)
            .env("GOCACHE", work.join("cache"))
            .envs(GO_ENV)
            .env("GOPATH", work.join("gopath"))
            // GO_ENV points the scratch at the sandbox's /workspace, which the host has not.
            .env("GOTMPDIR", &work)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Not fatal (each build then compiles the standard library itself, within its own
            // disk budget), but never silent: a missing seed once filled the workspace unseen.
            tracing::warn!(dir = %work.display(), "building Go's seed cache failed");
        }
        let _ = std::fs::remove_dir_all(work.join("src"));
        let _ = std::fs::remove_dir_all(work.join("gopath"));
        // Publish atomically; another process may have won the race, which is fine.
        if !ok || std::fs::rename(&work, &done).is_err() {
            let _ = std::fs::remove_dir_all(&work);
        }
        done.join("cache").is_dir().then(|| done.join("cache"))
    }
}

impl Language for Go {
    fn info(&self) -> &'static LanguageInfo {
        &GO
    }

    fn toolchain(&self) -> &Toolchain {
        &self.go
    }

    fn support_files(&self, ctx: &StepContext<'_>) -> Vec<FileEntry> {
        if ctx.files.iter().any(|f| f == "go.mod") {
            return Vec::new();
        }
        vec![FileEntry {
            path: "go.mod".into(),
            content: b"module sandbox\n\ngo 1.19\n".to_vec(),
            executable: false,
        }]
    }

    fn mounts(&self) -> Vec<Mount> {
        self.seed()
            .map(|s| vec![Mount::host(s.display().to_string(), GO_SEED_MOUNT)])
            .unwrap_or_default()
    }

    fn compile(&self, _ctx: &StepContext<'_>) -> Option<CompileStep> {
        let go = self.go.command_path();
        let build = format!("{go} build -trimpath -o {ARTIFACT_PATH} .");
        // The build cache is scratch space of the compile step: gone before the program runs, so
        // it never counts against the run's disk.
        let seed = if self.seed().is_some() {
            format!(
                "cp -as {GO_SEED_MOUNT} /workspace/.gocache && chmod -R u+w /workspace/.gocache || exit 125; "
            )
        } else {
            String::new()
        };
        let script =
            format!("mkdir -p /workspace/.gotmp; {seed}{build}; s=$?; rm -rf /workspace/.gocache /workspace/.gopath /workspace/.gotmp; exit $s");
        let mut env: Vec<(String, String)> = GO_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("GOCACHE".into(), "/workspace/.gocache".into()));
        Some(CompileStep {
            command: Command {
                arg0: None,
                argv: vec!["/bin/sh".into(), "-c".into(), script],
                env,
            },
            limits: COMPILER_LIMITS,
            artifact: ARTIFACT,
            cache_salt: format!(
                "{} build -trimpath CGO_ENABLED=0",
                self.go.version().unwrap_or_default()
            ),
        })
    }

    fn run(&self, ctx: &StepContext<'_>) -> Command {
        run_artifact(ctx)
    }
}

/// Where the Rust toolchain is mounted when it does not live under /usr.
const RUST_MOUNT: &str = "/opt/vana/rust";

/// Rust, single-file builds with the host's rustc (edition 2021, optimisation level per policy).
/// A rustup toolchain under root's home is bound read-only at `/opt/vana/rust`, so the sandbox
/// never sees the home directory.
///
/// The compiler is resolved on first use, not when the language is registered: finding the real
/// `rustc` behind rustup's proxy runs `rustc --print sysroot` (tens of milliseconds), which a
/// host that never runs Rust — a CLI running one Python snippet — should not pay.
#[derive(Debug)]
pub struct Rust {
    /// Where to look for `rustc`, in order.
    candidates: Vec<PathBuf>,
    /// `<sysroot>/bin/rustc` of the first `rustc` found that has a sysroot.
    rustc: OnceLock<Toolchain>,
}

impl Rust {
    /// Where to look for `rustc`: `$RUSTC`, `$PATH`, the usual places. Nothing is run yet.
    pub fn detect() -> Self {
        let mut candidates: Vec<PathBuf> = std::env::var_os("RUSTC")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("rustc")));
        }
        if let Some(home) = std::env::var_os("CARGO_HOME") {
            candidates.push(Path::new(&home).join("bin/rustc"));
        }
        candidates.extend(
            [
                "/root/.cargo/bin/rustc",
                "/usr/bin/rustc",
                "/usr/local/bin/rustc",
            ]
            .map(PathBuf::from),
        );
        Self {
            candidates,
            rustc: OnceLock::new(),
        }
    }

    /// The compiler, resolved once. The rustup proxy in ~/.cargo/bin is not the compiler: the
    /// real one is found through the sysroot, which is also what the sandbox mounts.
    fn rustc(&self) -> &Toolchain {
        self.rustc.get_or_init(|| {
            let found = Toolchain::find("rust", self.candidates.clone(), "--version", "");
            match found.path().and_then(sysroot).map(|s| s.join("bin/rustc")) {
                Some(r) => Toolchain::find("rust", [r], "--version", ""),
                None => {
                    Toolchain::missing("rust", self.candidates.clone(), " (none with a sysroot)")
                }
            }
        })
    }

    /// The toolchain's root (`<sysroot>`), from where its rustc lives.
    fn sysroot(&self) -> Option<&Path> {
        self.rustc().path()?.parent()?.parent()
    }

    fn in_usr(&self) -> bool {
        self.sysroot().is_some_and(vana_sandbox_core::host::in_base)
    }

    fn sandbox_rustc(&self) -> String {
        match self.sysroot() {
            Some(s) if self.in_usr() => s.join("bin/rustc").display().to_string(),
            _ => format!("{RUST_MOUNT}/bin/rustc"),
        }
    }
}

/// `rustc --print sysroot`, when that directory has a `bin/rustc`.
fn sysroot(rustc: &Path) -> Option<PathBuf> {
    let out = HostCommand::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let root = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    root.join("bin/rustc").is_file().then_some(root)
}

impl Language for Rust {
    fn info(&self) -> &'static LanguageInfo {
        &RUST
    }

    fn toolchain(&self) -> &Toolchain {
        self.rustc()
    }

    fn mounts(&self) -> Vec<Mount> {
        match self.sysroot() {
            Some(s) if !self.in_usr() => vec![Mount::host(s.display().to_string(), RUST_MOUNT)],
            _ => Vec::new(),
        }
    }

    fn compile(&self, ctx: &StepContext<'_>) -> Option<CompileStep> {
        let opt = ctx.opt_level.min(3);
        Some(CompileStep {
            command: Command {
                arg0: None,
                argv: vec![
                    self.sandbox_rustc(),
                    "--edition".into(),
                    "2021".into(),
                    "-C".into(),
                    format!("opt-level={opt}"),
                    "-C".into(),
                    "debuginfo=0".into(),
                    "-o".into(),
                    ARTIFACT_PATH.into(),
                    ctx.source_path.into(),
                ],
                env: vec![],
            },
            limits: COMPILER_LIMITS,
            artifact: ARTIFACT,
            cache_salt: self.rustc().version().unwrap_or_default(),
        })
    }

    fn run(&self, ctx: &StepContext<'_>) -> Command {
        run_artifact(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_limits_are_the_compilers_under_the_ceiling() {
        let ceiling = Limits {
            memory: Bytes(512 << 20),
            processes: 1000,
            timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let l = COMPILER_LIMITS.min(&ceiling);
        assert_eq!(l.memory, Bytes(512 << 20));
        assert_eq!(l.processes, 128);
        assert_eq!(l.timeout, Duration::from_secs(30));
        assert_eq!(l.disk, ceiling.disk);
        assert_eq!(l.cpus, ceiling.cpus);
    }
}
