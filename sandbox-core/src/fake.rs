//! Test doubles that need no root and no kernel feature: an in-memory backend whose instances
//! keep files in a map and answer runs from a script, recording every call; a language that
//! needs no toolchain; a policy that only tightens fixed limits.
//!
//! The engine's own tests use them, and so can a host's tests (a server, a binding) that want
//! the engine's behaviour without a sandbox.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::capabilities::{BackendKind, Capabilities, Layer};
use crate::compile_cache::CacheScope;
use crate::error::BackendError;
use crate::executor::{Executor, Instance};
use crate::language::{Command, CompileStep, Language, LanguageInfo, StepContext, Toolchain};
use crate::limits::Limits;
use crate::outcome::{Exit, ProcessOutcome};
use crate::packages::{
    Ecosystem, Interpreter, PackagePlan, PackageRules, PackageSupport, PackageTarget,
};
use crate::policy::{Policy, PolicyContext, Rejection};
use crate::spec::{
    FileEntry, Guards, InstanceSpec, NetworkMode, ProcessIo, ProcessSpec, SandboxSpec,
};
use crate::validate::ValidRequest;

/// The workspace of a fake instance: path → content.
pub type FileMap = BTreeMap<String, Vec<u8>>;

/// Answers one run: the process, the instance's files (which the script may change) and the
/// stdin it was given.
pub type Script = Arc<
    dyn Fn(&ProcessSpec, &mut FileMap, &[u8]) -> Result<ProcessOutcome, BackendError> + Send + Sync,
>;

/// One call a fake instance received.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `Executor::create`, with the instance's id and envelope.
    Create {
        /// Instance id.
        id: String,
        /// Its limits.
        limits: Limits,
        /// Its extra mounts.
        mounts: Vec<crate::spec::Mount>,
    },
    /// `put_files` with these paths.
    PutFiles(Vec<String>),
    /// `run` of this argv.
    Run(Vec<String>),
    /// `read_files` of these paths.
    ReadFiles(Vec<String>),
    /// `destroy`.
    Destroy,
    /// The instance was dropped without `destroy` (a cancelled execution).
    Dropped,
}

/// An in-memory backend.
pub struct FakeExecutor {
    caps: Capabilities,
    script: Script,
    calls: Arc<Mutex<Vec<Call>>>,
    gate: Option<Arc<Semaphore>>,
    fail_destroy: bool,
}

impl std::fmt::Debug for FakeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeExecutor").finish_non_exhaustive()
    }
}

impl FakeExecutor {
    /// A backend whose runs are answered by `script`.
    pub fn new(
        script: impl Fn(&ProcessSpec, &mut FileMap, &[u8]) -> Result<ProcessOutcome, BackendError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self {
            caps: Capabilities::new(BackendKind::Fake),
            script: Arc::new(script),
            calls: Arc::new(Mutex::new(Vec::new())),
            gate: None,
            fail_destroy: false,
        }
    }

    /// Every run first takes a permit from `gate` (and gives it back): a test holds runs by
    /// keeping the gate empty.
    pub fn with_gate(mut self, gate: Arc<Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// `destroy` fails.
    pub fn failing_destroy(mut self) -> Self {
        self.fail_destroy = true;
        self
    }

    /// Reports `layers` as the host's capabilities.
    pub fn with_layers(mut self, layers: Vec<Layer>) -> Self {
        self.caps.layers = layers;
        self
    }

    /// A handle on the calls recorded so far.
    pub fn calls(&self) -> CallLog {
        CallLog(self.calls.clone())
    }
}

/// The calls a [`FakeExecutor`] recorded.
#[derive(Debug, Clone)]
pub struct CallLog(Arc<Mutex<Vec<Call>>>);

impl CallLog {
    /// Every call so far, in order.
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The argv of every run so far.
    pub fn runs(&self) -> Vec<Vec<String>> {
        self.all()
            .into_iter()
            .filter_map(|c| match c {
                Call::Run(argv) => Some(argv),
                _ => None,
            })
            .collect()
    }
}

fn record(calls: &Mutex<Vec<Call>>, call: Call) {
    calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
}

#[async_trait]
impl Executor for FakeExecutor {
    fn kind(&self) -> BackendKind {
        BackendKind::Fake
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// A fixed interpreter (no probe runs): CPython 3.11 on `linux_x86_64`, or Node 20.
    async fn package_target(&self, language: &dyn Language) -> Result<PackageTarget, BackendError> {
        let ecosystem = language
            .packages()
            .map(|p| p.ecosystem)
            .ok_or_else(|| BackendError::Unavailable("no packages".into()))?;
        let (implementation, version, abi, platform) = match ecosystem {
            Ecosystem::Pypi => ("cp", "3.11.0", "cp311", "linux_x86_64"),
            Ecosystem::Npm => ("node", "20.0.0", "115", "linux-x64"),
        };
        Ok(PackageTarget {
            ecosystem,
            interpreter: Interpreter {
                implementation: implementation.into(),
                version: version.into(),
                abi: abi.into(),
                platforms: vec![platform.into()],
            },
            environment: "fake".into(),
        })
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, BackendError> {
        record(
            &self.calls,
            Call::Create {
                id: spec.id.clone(),
                limits: spec.limits,
                mounts: spec.mounts.clone(),
            },
        );
        Ok(Box::new(FakeInstance {
            files: Arc::new(FakeFiles {
                map: Mutex::new(FileMap::new()),
                calls: self.calls.clone(),
            }),
            script: self.script.clone(),
            calls: self.calls.clone(),
            gate: self.gate.clone(),
            fail_destroy: self.fail_destroy,
            destroyed: false,
        }))
    }
}

/// The fake instance's workspace: a map of paths to contents.
struct FakeFiles {
    map: Mutex<FileMap>,
    calls: Arc<Mutex<Vec<Call>>>,
}

#[async_trait]
impl crate::files::Files for FakeFiles {
    async fn put(&self, files: &[FileEntry]) -> Result<(), BackendError> {
        record(
            &self.calls,
            Call::PutFiles(files.iter().map(|f| f.path.clone()).collect()),
        );
        let mut map = lock(&self.map);
        for f in files {
            map.insert(f.path.clone(), f.content.clone());
        }
        Ok(())
    }

    async fn read(&self, paths: &[String], max_bytes: u64) -> Result<Vec<FileEntry>, BackendError> {
        record(&self.calls, Call::ReadFiles(paths.to_vec()));
        let map = lock(&self.map);
        paths
            .iter()
            .map(|p| match map.get(p) {
                Some(c) if c.len() as u64 <= max_bytes => Ok(FileEntry {
                    path: p.clone(),
                    content: c.clone(),
                    executable: false,
                }),
                Some(_) => Err(BackendError::File {
                    path: p.clone(),
                    reason: "file too large to read back".into(),
                }),
                None => Err(BackendError::File {
                    path: p.clone(),
                    reason: "not found".into(),
                }),
            })
            .collect()
    }

    async fn list(
        &self,
        dir: &str,
        max_entries: usize,
    ) -> Result<Vec<crate::files::FileInfo>, BackendError> {
        let map = lock(&self.map);
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        let out: Vec<_> = map
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix))
            .map(|(p, c)| crate::files::FileInfo {
                path: p.clone(),
                kind: crate::files::FileKind::File,
                size: c.len() as u64,
            })
            .collect();
        if out.len() > max_entries {
            return Err(BackendError::File {
                path: dir.to_string(),
                reason: format!("more than {max_entries} entries"),
            });
        }
        Ok(out)
    }

    async fn remove(&self, path: &str) -> Result<(), BackendError> {
        let mut map = lock(&self.map);
        let prefix = format!("{path}/");
        map.retain(|p, _| p != path && !p.starts_with(&prefix));
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct FakeInstance {
    files: Arc<FakeFiles>,
    script: Script,
    calls: Arc<Mutex<Vec<Call>>>,
    gate: Option<Arc<Semaphore>>,
    fail_destroy: bool,
    destroyed: bool,
}

#[async_trait]
impl Instance for FakeInstance {
    fn files(&self) -> crate::files::SharedFiles {
        self.files.clone()
    }

    async fn run(
        &mut self,
        process: &ProcessSpec,
        io: ProcessIo,
    ) -> Result<ProcessOutcome, BackendError> {
        record(&self.calls, Call::Run(process.argv.clone()));
        if let Some(gate) = &self.gate {
            let _permit = gate
                .acquire()
                .await
                .map_err(|_| BackendError::InstanceGone("the test closed the gate"))?;
        }
        let stdin = match &io.stdin {
            crate::spec::Stdin::Bytes(b) => b.clone(),
            crate::spec::Stdin::Pipe(_) => Vec::new(),
        };
        let mut outcome = {
            let mut map = lock(&self.files.map);
            (self.script)(process, &mut map, &stdin)?
        };
        if let Some(mut sink) = io.sink {
            sink(crate::spec::StreamKind::Stdout, &outcome.stdout);
        }
        if outcome.wall_time.is_zero() {
            outcome.wall_time = Duration::from_millis(1);
        }
        Ok(outcome)
    }

    async fn destroy(mut self: Box<Self>) -> Result<(), BackendError> {
        self.destroyed = true;
        record(&self.calls, Call::Destroy);
        if self.fail_destroy {
            return Err(BackendError::setup(
                "removing the fake instance",
                std::io::Error::other("destroy was told to fail"),
            ));
        }
        Ok(())
    }
}

impl Drop for FakeInstance {
    fn drop(&mut self) {
        if !self.destroyed {
            record(&self.calls, Call::Dropped);
        }
    }
}

/// The fake interpreted language: `fake`, source `main.fake`, run as `/bin/fake main.fake`.
pub const FAKE: LanguageInfo = LanguageInfo {
    name: "fake",
    aliases: &["fk"],
    source_file: "main.fake",
    extensions: &[".fake"],
    shebangs: &["fake"],
    keywords: &[("fake!", 50)],
};

/// The fake compiled language: `fakec`, compiled by `/bin/fakecc` into `main`.
pub const FAKEC: LanguageInfo = LanguageInfo {
    name: "fakec",
    aliases: &[],
    source_file: "main.fc",
    extensions: &[".fc"],
    shebangs: &[],
    keywords: &[("compile!", 50)],
};

/// A language that needs no toolchain.
#[derive(Debug)]
pub struct FakeLanguage {
    info: &'static LanguageInfo,
    toolchain: Toolchain,
}

impl FakeLanguage {
    /// The interpreted fake language.
    pub fn interpreted() -> Self {
        Self {
            info: &FAKE,
            toolchain: Toolchain::at("fake", Some("/bin/fake".into()), "--version"),
        }
    }

    /// The compiled fake language.
    pub fn compiled() -> Self {
        Self {
            info: &FAKEC,
            toolchain: Toolchain::at("fakec", Some("/bin/fakecc".into()), "--version"),
        }
    }

    /// The interpreted fake language with its toolchain missing.
    pub fn missing() -> Self {
        Self {
            info: &FAKE,
            toolchain: Toolchain::at("fake", None, "--version"),
        }
    }
}

impl Language for FakeLanguage {
    fn info(&self) -> &'static LanguageInfo {
        self.info
    }

    fn toolchain(&self) -> &Toolchain {
        &self.toolchain
    }

    /// The interpreted fake language takes PyPI packages (its probe never runs: the fake
    /// executor answers for it).
    fn packages(&self) -> Option<PackageSupport> {
        (self.info.name == "fake").then_some(PackageSupport {
            ecosystem: Ecosystem::Pypi,
            probe: &[],
        })
    }

    fn compile(&self, ctx: &StepContext<'_>) -> Option<CompileStep> {
        (self.info.name == "fakec").then(|| CompileStep {
            command: Command {
                arg0: None,
                argv: vec!["/bin/fakecc".into(), ctx.source_path.into()],
                env: vec![("FAKECC".into(), "1".into())],
            },
            limits: Limits {
                memory: crate::limits::Bytes::mib(1024),
                processes: 128,
                ..Limits::MAX
            },
            artifact: "main",
            cache_salt: "fakecc 1.0".into(),
        })
    }

    fn run(&self, ctx: &StepContext<'_>) -> Command {
        let argv = match self.info.name {
            "fakec" => vec!["/workspace/main".to_string()],
            _ => vec!["/bin/fake".to_string(), ctx.source_path.to_string()],
        };
        Command {
            arg0: None,
            argv: argv.into_iter().chain(ctx.args.iter().cloned()).collect(),
            env: vec![],
        }
    }
}

/// A fake executable for this machine (a valid ELF header), what a fake compiler produces.
pub fn fake_elf(fill: u8) -> Vec<u8> {
    let mut v = vec![fill; 128];
    v[..4].copy_from_slice(b"\x7fELF");
    v[4] = 2;
    v[5] = 1;
    v[16..18].copy_from_slice(&3u16.to_le_bytes());
    #[cfg(target_arch = "x86_64")]
    v[18..20].copy_from_slice(&62u16.to_le_bytes());
    #[cfg(target_arch = "aarch64")]
    v[18..20].copy_from_slice(&183u16.to_le_bytes());
    v
}

/// A script for both fake languages: the interpreter prints its source, the compiler writes
/// [`fake_elf`] to `main` (or fails when the source contains `error`), the compiled program
/// prints `compiled` and its arguments.
pub fn default_script(
    process: &ProcessSpec,
    files: &mut FileMap,
    _stdin: &[u8],
) -> Result<ProcessOutcome, BackendError> {
    let argv0 = process.argv.first().map(String::as_str).unwrap_or_default();
    let ok = |stdout: Vec<u8>| ProcessOutcome {
        exit: Exit::Code(0),
        stdout,
        ..Default::default()
    };
    Ok(match argv0 {
        "/bin/fakecc" => {
            let source = files.get("main.fc").cloned().unwrap_or_default();
            if String::from_utf8_lossy(&source).contains("error") {
                ProcessOutcome {
                    exit: Exit::Code(1),
                    stderr: b"main.fc:1: error: expected compile!\n".to_vec(),
                    ..Default::default()
                }
            } else {
                files.insert("main".into(), fake_elf(7));
                ok(Vec::new())
            }
        }
        "/workspace/main" => {
            let args = process.argv.get(1..).unwrap_or_default().join(" ");
            ok(format!("compiled {args}\n").into_bytes())
        }
        _ => ok(files.get("main.fake").cloned().unwrap_or_default()),
    })
}

/// A policy that applies what a request asks for under fixed limits, and nothing else.
#[derive(Debug, Clone)]
pub struct FakePolicy {
    /// The run step's ceiling.
    pub limits: Limits,
    /// The compile ceiling.
    pub compile_limits: Limits,
    /// Required layers.
    pub require: Vec<crate::capabilities::LayerName>,
    /// Cache scope.
    pub cache_scope: CacheScope,
    /// Package rules (`None`: packages are disabled).
    pub packages: Option<PackageRules>,
}

impl Default for FakePolicy {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            compile_limits: Limits {
                memory: crate::limits::Bytes::mib(1024),
                processes: 256,
                timeout: Duration::from_secs(120),
                ..Limits::default()
            },
            require: Vec::new(),
            cache_scope: CacheScope::Shared,
            packages: Some(PackageRules {
                index: "https://pypi.invalid/simple".into(),
                allow: Vec::new(),
                deny: Vec::new(),
                max_bytes: crate::limits::Bytes::mib(1024),
                max_count: 100,
            }),
        }
    }
}

impl Policy for FakePolicy {
    fn evaluate(
        &self,
        request: &ValidRequest,
        _context: &PolicyContext,
    ) -> Result<SandboxSpec, Rejection> {
        let limits = self.limits.tighten(&request.limits).map_err(|e| {
            Rejection::new(format!(
                "limits.{} {} exceeds the maximum of policy `fake` ({})",
                e.kind.key(),
                e.asked,
                e.max
            ))
        })?;
        if request.wants_network {
            return Err(Rejection::new(
                "network access is disabled by policy `fake`",
            ));
        }
        let packages = match (&request.packages, &self.packages) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Rejection::new("packages are disabled by policy `fake`"));
            }
            (Some(list), Some(rules)) => Some(PackagePlan {
                list: list.clone(),
                rules: rules.clone(),
            }),
        };
        Ok(SandboxSpec {
            limits,
            compile_limits: self.compile_limits,
            network: NetworkMode::None,
            require: self.require.clone(),
            runtime: None,
            guards: Guards::default(),
            opt_level: 1,
            cache_scope: self.cache_scope,
            packages,
            policy_name: "fake".into(),
            policy_fingerprint: self.fingerprint(),
        })
    }

    fn fingerprint(&self) -> String {
        "sha256:fake".into()
    }
}
