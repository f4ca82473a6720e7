//! The Engine: validate -> policy -> route to the language -> backend -> result, with bounded
//! concurrency and a bounded queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

use crate::compile_cache::{CacheKey, CacheScope, CompileCache};
use crate::error::{BackendError, EngineError};
use crate::executor::{Executor, Instance};
use crate::language::{parse_guard_events, Language, Languages, StepContext};
use crate::monitor::{Event, Monitor, Phase};
use crate::policy::{Policy, PolicyContext};
use crate::request::ExecutionRequest;
use crate::result::{CompileReport, ExecutionResult, ResourceUsage, SecurityEvent, Status};
use crate::spec::{
    FileEntry, InstanceSpec, ProcessIo, ProcessLimits, ProcessOutcome, ProcessSpec, SandboxSpec,
};
use crate::status::{classify, reason};
use crate::validate::{validate, ValidRequest};

/// Working directory of every program.
pub const WORKDIR: &str = "/workspace";

/// Runs requests. Cheap to clone; clones share the concurrency bound and queue.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    executor: Arc<dyn Executor>,
    policy: Arc<dyn Policy>,
    languages: Languages,
    monitors: Vec<Arc<dyn Monitor>>,
    compile_cache: Option<Arc<dyn CompileCache>>,
    permits: Semaphore,
    max_concurrency: usize,
    max_queue: usize,
    waiting: AtomicUsize,
}

/// Builds an [`Engine`].
#[derive(Default)]
pub struct EngineBuilder {
    executor: Option<Arc<dyn Executor>>,
    policy: Option<Arc<dyn Policy>>,
    languages: Languages,
    monitors: Vec<Arc<dyn Monitor>>,
    compile_cache: Option<Arc<dyn CompileCache>>,
    max_concurrency: Option<usize>,
    max_queue: Option<usize>,
}

impl EngineBuilder {
    /// The isolation backend (required).
    pub fn executor(mut self, executor: Arc<dyn Executor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// The policy (required).
    pub fn policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The languages requests may use.
    pub fn languages(mut self, languages: Languages) -> Self {
        self.languages = languages;
        self
    }

    /// Adds a monitor.
    pub fn monitor(mut self, monitor: Arc<dyn Monitor>) -> Self {
        self.monitors.push(monitor);
        self
    }

    /// A compile cache for compiled languages (default: none).
    pub fn compile_cache(mut self, cache: Arc<dyn CompileCache>) -> Self {
        self.compile_cache = Some(cache);
        self
    }

    /// Executions running at once (default: the number of CPUs).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n);
        self
    }

    /// Executions waiting for a slot before `execute` fails with [`EngineError::QueueFull`]
    /// (default: 64 per slot).
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = Some(n);
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Result<Engine, EngineError> {
        let executor = self
            .executor
            .ok_or_else(|| EngineError::Config("no executor given".into()))?;
        let policy = self
            .policy
            .ok_or_else(|| EngineError::Config("no policy given".into()))?;
        let max_concurrency = self.max_concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if max_concurrency == 0 {
            return Err(EngineError::Config(
                "max_concurrency must be at least 1".into(),
            ));
        }
        let max_queue = self.max_queue.unwrap_or(64 * max_concurrency);
        Ok(Engine {
            inner: Arc::new(Inner {
                executor,
                policy,
                languages: self.languages,
                monitors: self.monitors,
                compile_cache: self.compile_cache,
                permits: Semaphore::new(max_concurrency),
                max_concurrency,
                max_queue,
                waiting: AtomicUsize::new(0),
            }),
        })
    }
}

fn new_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:012x}-{:04x}-{:06x}",
        (nanos / 1000) as u64 & 0xffff_ffff_ffff,
        std::process::id() & 0xffff,
        seq & 0xff_ffff
    )
}

/// Decrements the waiting count when a queued execution gets its slot or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The backend.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.inner.executor
    }

    /// The languages.
    pub fn languages(&self) -> &Languages {
        &self.inner.languages
    }

    /// The policy.
    pub fn policy(&self) -> &Arc<dyn Policy> {
        &self.inner.policy
    }

    /// The concurrency bound.
    pub fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency
    }

    /// Runs one request to completion.
    ///
    /// Validation and policy failures come back as a result with status `rejected`; backend
    /// failures as `sandbox_error`. The only errors are the Engine's own (a full queue).
    pub async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, EngineError> {
        self.execute_with_io(request, ProcessIo::default()).await
    }

    /// Like [`execute`](Self::execute), with an output sink for streaming. The request's
    /// stdin is used; `io.stdin` is ignored.
    pub async fn execute_with_io(
        &self,
        request: ExecutionRequest,
        io: ProcessIo,
    ) -> Result<ExecutionResult, EngineError> {
        self.execute_inner(None, request, io).await
    }

    /// Like [`execute`](Self::execute) on behalf of `tenant` (a label the host vouches for,
    /// never taken from the request): with the policy's `cache_scope = "tenant"`, compiled
    /// artifacts are shared only within one tenant.
    pub async fn execute_as(
        &self,
        tenant: &str,
        request: ExecutionRequest,
    ) -> Result<ExecutionResult, EngineError> {
        self.execute_inner(Some(tenant), request, ProcessIo::default())
            .await
    }

    async fn execute_inner(
        &self,
        tenant: Option<&str>,
        request: ExecutionRequest,
        io: ProcessIo,
    ) -> Result<ExecutionResult, EngineError> {
        let inner = &self.inner;
        let id = request
            .id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(new_id);
        let lang_label = request.language.trim().to_ascii_lowercase();

        let valid = match validate(&request, &inner.languages) {
            Ok(v) => v,
            Err(rej) => {
                return Ok(self.finish(ExecutionResult::rejected(&id, lang_label, rej.message)))
            }
        };
        let language = valid.language.name();
        let ctx = PolicyContext {
            language: language.to_string(),
            backend: inner.executor.name().to_string(),
            tenant: tenant.map(str::to_string),
        };
        let spec = match inner.policy.evaluate(&request, &ctx) {
            Ok(s) => s,
            Err(rej) => {
                let mut r = ExecutionResult::rejected(&id, language, rej.message);
                r.policy_fingerprint = Some(inner.policy.fingerprint());
                return Ok(self.finish(r));
            }
        };

        let _permit = match inner.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if inner.waiting.fetch_add(1, Ordering::AcqRel) >= inner.max_queue {
                    inner.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(EngineError::QueueFull {
                        max_queue: inner.max_queue,
                    });
                }
                let waiting = Waiting(&inner.waiting);
                self.emit(&Event::Queued { id: &id });
                let permit = inner
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| EngineError::Config("engine is shutting down".into()))?;
                drop(waiting);
                permit
            }
        };
        self.emit(&Event::Started {
            id: &id,
            language,
            backend: inner.executor.name(),
        });

        let mut result = match self
            .run_request(&id, &request, &valid, &spec, &ctx, io)
            .await
        {
            Ok(r) => r,
            Err(e) => ExecutionResult::sandbox_error(&id, language, e.to_string()),
        };
        result.policy_fingerprint = Some(spec.policy_fingerprint.clone());
        if result.backend == "none" && result.status != Status::Rejected {
            result.backend = inner.executor.name().to_string();
        }
        Ok(self.finish(result))
    }

    fn finish(&self, result: ExecutionResult) -> ExecutionResult {
        for ev in &result.security_events {
            self.emit(&Event::Security {
                id: &result.id,
                event: ev,
            });
        }
        self.emit(&Event::Finished { result: &result });
        result
    }

    fn emit(&self, event: &Event<'_>) {
        for m in &self.inner.monitors {
            m.on_event(event);
        }
    }

    async fn run_request(
        &self,
        id: &str,
        request: &ExecutionRequest,
        valid: &ValidRequest,
        spec: &SandboxSpec,
        ctx: &PolicyContext,
        io: ProcessIo,
    ) -> Result<ExecutionResult, BackendError> {
        let inner = &self.inner;
        let language: &dyn Language = valid.language.as_ref();
        if let Err(e) = language.check_available() {
            return Ok(ExecutionResult::sandbox_error(
                id,
                language.name(),
                e.to_string(),
            ));
        }
        inner
            .executor
            .capabilities()
            .check_required(&spec.require)?;

        let instance_spec = InstanceSpec {
            id: id.to_string(),
            language: language.name().to_string(),
            limits: spec.limits,
            runtime: spec.runtime.clone(),
            disk_bytes: spec.disk_bytes,
            mounts: language.mounts(),
            network: spec.network.clone(),
            require: spec.require.clone(),
        };
        let mut instance = inner.executor.create(&instance_spec).await?;
        let outcome = self
            .run_steps(id, request, valid, spec, ctx, instance.as_mut(), io)
            .await;
        let destroyed = instance.destroy().await;
        let mut result = outcome?;
        if let Err(e) = destroyed {
            result
                .security_events
                .push(SecurityEvent::new("cleanup_failed", e.to_string()));
        }
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)] // replaced by the engine pipeline (issue 11)
    async fn run_steps(
        &self,
        id: &str,
        request: &ExecutionRequest,
        valid: &ValidRequest,
        spec: &SandboxSpec,
        ctx: &PolicyContext,
        instance: &mut dyn Instance,
        io: ProcessIo,
    ) -> Result<ExecutionResult, BackendError> {
        let language = valid.language.as_ref();
        let source_path = format!("{WORKDIR}/{}", language.source_file());
        let file_names: Vec<String> = valid.files.iter().map(|f| f.path.clone()).collect();
        let step = StepContext {
            workdir: WORKDIR,
            source_path: &source_path,
            args: &request.args,
            guards: spec.guards,
            opt_level: spec.opt_level,
            files: &file_names,
        };

        let mut files = Vec::with_capacity(valid.files.len() + 1);
        files.push(FileEntry {
            path: language.source_file().to_string(),
            content: request.code.as_bytes().to_vec(),
            executable: false,
        });
        files.extend(valid.files.iter().cloned());
        // One transfer for the sources and the language's support files (a round trip each
        // costs tens of milliseconds on a container backend).
        files.extend(language.support_files(&step));
        instance.put_files(&files).await?;

        // The request's env reaches the program only: the compile step's environment is fixed
        // by the language, so that no request can change what a compiler produces.
        let base_env = |extra: &[(String, String)], user: bool| {
            let mut env: Vec<(String, String)> = vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("HOME".into(), WORKDIR.into()),
                ("TMPDIR".into(), "/tmp".into()),
                ("LANG".into(), "C.UTF-8".into()),
                ("USER".into(), "sandbox".into()),
            ];
            let user_env = request.env.iter().filter(|_| user);
            let overrides = extra
                .iter()
                .cloned()
                .chain(user_env.map(|(k, v)| (k.clone(), v.clone())));
            for (k, v) in overrides {
                env.retain(|(ek, _)| *ek != k);
                env.push((k, v));
            }
            env
        };

        let compile_report = match language.compile(&step) {
            None => None,
            Some(cmd) => {
                let env = base_env(&cmd.env, false);
                let scope = match spec.cache_scope {
                    CacheScope::Shared => Some("shared".to_string()),
                    CacheScope::Tenant => {
                        Some(format!("tenant:{}", ctx.tenant.as_deref().unwrap_or("")))
                    }
                    CacheScope::Off => None,
                };
                match self
                    .compile_step(
                        id, language, &step, &files, cmd.argv, env, spec, scope, instance,
                    )
                    .await?
                {
                    Ok(report) => Some(report),
                    Err(failed) => return Ok(failed),
                }
            }
        };

        let cmd = language.run(&step);
        let process = ProcessSpec {
            argv: cmd.argv,
            env: base_env(&cmd.env, true),
            cwd: WORKDIR.into(),
            limits: spec.limits,
        };
        let io = ProcessIo {
            stdin: valid.stdin.clone(),
            sink: io.sink,
        };
        let outcome = instance.run(&process, io).await?;
        let status = classify(&outcome);
        self.emit(&Event::PhaseFinished {
            id,
            phase: Phase::Run,
            status,
            duration: outcome.wall_time,
        });
        for (hit, limit) in [
            (outcome.timed_out, "timeout"),
            (outcome.output_limit_hit, "output"),
            (outcome.oom_killed, "memory"),
            (outcome.pids_limit_hits > 0, "pids"),
        ] {
            if hit {
                self.emit(&Event::LimitHit { id, limit });
            }
        }
        let report = step_report(&outcome, status, &spec.limits);
        let mut events = tag(outcome.security_events.clone(), Phase::Run);
        let mut guard_events = language.stderr_events(&step, &outcome.stderr);
        if let Some(path) = language.events_file(&step) {
            if let Ok(files) = instance.read_files(&[path.to_string()]).await {
                for f in files {
                    guard_events.extend(parse_guard_events(language.name(), &f.content));
                }
            }
        }
        events.extend(tag(guard_events, Phase::Run));
        if outcome.pids_limit_hits > 0 {
            events.push(SecurityEvent {
                kind: "limit_hit".into(),
                detail: format!(
                    "the process limit ({}) refused {} fork(s)",
                    spec.limits.max_processes, outcome.pids_limit_hits
                ),
                phase: Some("run".into()),
            });
        }
        Ok(ExecutionResult {
            id: id.to_string(),
            status,
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            output: report.output,
            error: report.error,
            stderr: lossy(&outcome.stderr),
            execution_time: report.execution_time,
            resource_usage: report.resource_usage,
            compile: compile_report,
            truncated: outcome.truncated,
            security_events: events,
            backend: self.inner.executor.name().to_string(),
            language: language.name().to_string(),
            policy_fingerprint: None,
        })
    }
}

impl Engine {
    /// The compile step, through the compile cache when there is one. `Err` carries the
    /// `compile_error` result to return.
    #[allow(clippy::too_many_arguments)]
    async fn compile_step(
        &self,
        id: &str,
        language: &dyn Language,
        step: &StepContext<'_>,
        sources: &[FileEntry],
        argv: Vec<String>,
        env: Vec<(String, String)>,
        spec: &SandboxSpec,
        scope: Option<String>,
        instance: &mut dyn Instance,
    ) -> Result<Result<CompileReport, ExecutionResult>, BackendError> {
        let cache = self
            .inner
            .compile_cache
            .as_ref()
            .zip(language.artifact())
            .filter(|_| scope.is_some());
        // The key covers everything that decides the artifact: the scope, the backend's
        // environment, the target, the language's toolchain and flags, the compile step's argv
        // and environment (both fixed by the language), and every file of the workspace.
        let key = cache.map(|_| {
            let mut sorted: Vec<&FileEntry> = sources.iter().collect();
            sorted.sort_by(|a, b| a.path.cmp(&b.path));
            let mut key = CacheKey::new()
                .part(b"vana-compile-v2")
                .part(scope.as_deref().unwrap_or_default().as_bytes())
                .part(
                    self.inner
                        .executor
                        .environment_id(language.name())
                        .as_bytes(),
                )
                .part(std::env::consts::ARCH.as_bytes())
                .part(language.name().as_bytes())
                .part(language.cache_salt(step).as_bytes());
            for a in &argv {
                key = key.part(a.as_bytes());
            }
            for (k, v) in &env {
                key = key.part(k.as_bytes()).part(v.as_bytes());
            }
            for f in sorted {
                key = key
                    .part(f.path.as_bytes())
                    .part(&[u8::from(f.executable)])
                    .part(&f.content);
            }
            key.finish()
        });
        if let (Some((cache, artifact)), Some(key)) = (cache, &key) {
            if let Some(binary) = cache.get(key) {
                let entry = FileEntry {
                    path: artifact.to_string(),
                    content: binary,
                    executable: true,
                };
                instance.put_files(&[entry]).await?;
                return Ok(Ok(CompileReport {
                    status: Status::Success,
                    output: String::new(),
                    error: None,
                    execution_time: 0.0,
                    resource_usage: ResourceUsage::new(0.0, 0, 0, 0),
                    cached: true,
                }));
            }
        }

        let limits = language.compile_limits(&spec.compile_limits);
        let process = ProcessSpec {
            argv,
            env,
            cwd: WORKDIR.into(),
            limits,
        };
        let outcome = instance.run(&process, ProcessIo::default()).await?;
        let status = classify(&outcome);
        self.emit(&Event::PhaseFinished {
            id,
            phase: Phase::Compile,
            status,
            duration: outcome.wall_time,
        });
        let report = step_report(&outcome, status, &limits);
        if status != Status::Success {
            let mut r = ExecutionResult::not_run_with(id, language.name(), Status::CompileError);
            r.error = Some(match status {
                Status::Error => lossy(&outcome.stderr),
                _ => format!(
                    "the compile step stopped at its limits: {}",
                    reason(
                        status,
                        &outcome,
                        limits.timeout.as_secs_f64(),
                        limits.max_output_bytes
                    )
                    .unwrap_or_default()
                ),
            });
            r.compile = Some(report);
            r.security_events = tag(outcome.security_events, Phase::Compile);
            return Ok(Err(r));
        }
        if let (Some((cache, artifact)), Some(key)) = (cache, &key) {
            // Only the host writes the cache, and only from a compile that succeeded.
            if let Ok(files) = instance.read_files(&[artifact.to_string()]).await {
                for f in files {
                    cache.put(key, &f.content);
                }
            }
        }
        Ok(Ok(report))
    }
}

fn tag(mut events: Vec<SecurityEvent>, phase: Phase) -> Vec<SecurityEvent> {
    for e in &mut events {
        e.phase.get_or_insert_with(|| phase.as_str().to_string());
    }
    events
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn step_report(outcome: &ProcessOutcome, status: Status, limits: &ProcessLimits) -> CompileReport {
    let error = reason(
        status,
        outcome,
        limits.timeout.as_secs_f64(),
        limits.max_output_bytes,
    )
    .or_else(|| (!outcome.stderr.is_empty()).then(|| lossy(&outcome.stderr)));
    CompileReport {
        status,
        output: lossy(&outcome.stdout),
        error,
        execution_time: outcome.wall_time.as_secs_f64(),
        resource_usage: outcome.usage.clone(),
        cached: false,
    }
}

impl ExecutionResult {
    fn not_run_with(id: &str, language: &str, status: Status) -> Self {
        let mut r = ExecutionResult::sandbox_error(id, language, String::new());
        r.status = status;
        r.error = None;
        r
    }
}

impl Engine {
    /// Runs `code` in `language` with the policy's defaults: the short form of
    /// [`execute`](Self::execute).
    pub async fn run(&self, language: &str, code: &str) -> Result<ExecutionResult, EngineError> {
        self.execute(ExecutionRequest::new(language, code)).await
    }
}
