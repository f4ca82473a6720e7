//! Sessions: one sandbox that lives across calls, because agents work in steps.
//!
//! A session is one instance of the engine's backend (same isolation, same policy) holding a
//! kernel process — the host language's [`Kernel`](crate::Kernel) — that keeps interpreter
//! state between cells. Each cell is a request like any other (validated, judged by the policy,
//! admitted into a slot, reported to monitors) whose time and output limits apply to that cell;
//! memory, disk and processes are the session's, fixed when it opens. What a cell's status says
//! comes from the host: its timer, its byte count, the kernel process's end (a memory kill is
//! read from the cgroup); what the kernel reports (values, exceptions, exit codes of Bash cells)
//! is the program's word. A cell past its time or output limit is interrupted; a kernel that
//! does not stop within a second, or dies, is restarted and the cell says so.
//!
//! A session ends when closed, when its last handle is dropped, after the policy's idle timeout
//! or at its maximum lifetime; the instance goes with it.

mod files;
mod kernel;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;

pub use files::{unpack_archive, SessionFiles, MAX_ARCHIVE_ENTRIES};

use crate::engine::packages::PackageFailure;
use crate::engine::{pipeline, Inner};
use crate::error::{BackendError, EngineError};
use crate::executor::Instance;
use crate::language::{KernelRole, StepContext};
use crate::monitor::{Event, SessionEnd};
use crate::outcome::{Exit, ProcessOutcome, Stop};
use crate::packages::{
    Ecosystem, PackageError, PackageList, PackagePlan, PackageSpec, PackagesReport, SessionPackages,
};
use crate::policy::{PolicyContext, SessionPolicy};
use crate::request::{ExecutionRequest, FileSpec, LimitsRequest};
use crate::result::{CellException, DisplayData, ExecutionResult, SessionReport, Status};
use crate::spec::{
    InstanceSpec, Mount, OutputSink, ProcessSpec, SandboxSpec, StopSignal, StreamKind,
};
use crate::validate::{validate, ValidRequest};
use kernel::{Frame, RunningKernel};

/// How long an interrupted cell has to end before its kernel is killed and restarted.
const INTERRUPT_GRACE: Duration = Duration::from_secs(1);

/// What a session is opened with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionOptions {
    /// Session id (generated when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The session's limits: memory, CPUs, disk and processes hold for its whole life; the
    /// timeout and output limit are each cell's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsRequest>,
    /// Environment of the kernel and of every cell.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files placed in the workspace before the first cell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    /// Network access for the whole session (through the egress proxy, if the policy allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access: Option<bool>,
    /// Destinations asked for (must be in the policy's allowlist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::request::NetworkRequest>,
}

/// One sandbox across calls. Cheap to clone: clones are handles on the same session; it ends
/// with [`close`](Session::close), when the last handle is dropped, or by the policy's timeouts.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

struct Shared {
    id: String,
    engine: Arc<Inner>,
    tenant: Option<String>,
    spec: SandboxSpec,
    env: BTreeMap<String, String>,
    files: SessionFiles,
    kernel: tokio::sync::Mutex<KernelSlot>,
    cells: AtomicU64,
    opened: Instant,
    last_used: Mutex<Instant>,
    closed: AtomicBool,
    /// The running cell's interrupt, for [`Session::kill`].
    interrupt: Mutex<Option<tokio::sync::mpsc::UnboundedSender<()>>>,
    /// The session's read-only package set (mounted live), when the engine has a provider.
    packages: Option<Arc<dyn SessionPackages>>,
    /// What each ecosystem's installs asked for so far (one install at a time).
    installed: tokio::sync::Mutex<BTreeMap<Ecosystem, Vec<PackageSpec>>>,
    /// The session's egress proxy, when it has network access.
    network: tokio::sync::Mutex<Option<crate::engine::network::RunNetwork>>,
    policy: SessionPolicy,
    _permit: OwnedSemaphorePermit,
}

/// The session's instance: inside the running kernel's task, or here between kernels.
struct KernelSlot {
    idle: Option<Box<dyn Instance>>,
    running: Option<RunningKernel>,
    launch: KernelLaunch,
}

/// How the session's kernel is started.
#[derive(Clone)]
struct KernelLaunch {
    process: ProcessSpec,
    config: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A step context for kernels (no program source: kernels are started, not given a file).
fn kernel_context<'a>(spec: &'a SandboxSpec) -> StepContext<'a> {
    StepContext {
        workdir: pipeline::WORKDIR,
        source_path: "",
        args: &[],
        guards: spec.guards,
        opt_level: spec.opt_level,
        files: &[],
    }
}

impl crate::engine::Engine {
    /// Opens a session with `options`.
    pub async fn session(&self, options: SessionOptions) -> Result<Session, EngineError> {
        Session::open(self.inner(), None, options).await
    }

    /// Opens a session on behalf of `tenant` (a label the host vouches for).
    pub async fn session_as(
        &self,
        tenant: &str,
        options: SessionOptions,
    ) -> Result<Session, EngineError> {
        Session::open(self.inner(), Some(tenant.to_string()), options).await
    }
}

impl Session {
    async fn open(
        engine: Arc<Inner>,
        tenant: Option<String>,
        options: SessionOptions,
    ) -> Result<Session, EngineError> {
        let permit =
            engine
                .sessions
                .clone()
                .try_acquire_owned()
                .map_err(|_| EngineError::SessionsFull {
                    max: engine.max_sessions,
                })?;
        let host = engine
            .languages
            .iter()
            .find(|l| {
                l.kernel(&StepContext {
                    workdir: pipeline::WORKDIR,
                    source_path: "",
                    args: &[],
                    guards: crate::spec::Guards::default(),
                    opt_level: 0,
                    files: &[],
                })
                .is_some_and(|k| k.role == KernelRole::Host)
            })
            .cloned()
            .ok_or_else(|| EngineError::Rejected("no language can host a session kernel".into()))?;
        // The session as a request of the host language: validated and judged like one.
        let request = ExecutionRequest {
            id: options.id.clone(),
            language: host.name().to_string(),
            // Nothing runs from it; validation wants code.
            code: "# session".into(),
            limits: options.limits.clone(),
            env: options.env.clone(),
            files: options.files.clone(),
            network_access: options.network_access,
            network: options.network.clone(),
            ..ExecutionRequest::default()
        };
        let valid =
            validate(&request, &engine.languages).map_err(|r| EngineError::Rejected(r.message))?;
        let spec = evaluate(&engine, &valid, tenant.as_deref())?;
        engine
            .executor
            .capabilities()
            .check(&spec.require, spec.runtime)?;
        engine.executor.check_language(host.as_ref())?;
        let id = options
            .id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(crate::engine::new_id);

        let ctx = kernel_context(&spec);
        let kernels: Vec<_> = engine
            .languages
            .iter()
            .filter(|l| engine.executor.check_language(l.as_ref()).is_ok())
            .filter_map(|l| Some((l.clone(), l.kernel(&ctx)?)))
            .collect();
        let mut mounts: Vec<Mount> = Vec::new();
        for (l, _) in &kernels {
            for m in l.mounts() {
                if !mounts.contains(&m) {
                    mounts.push(m);
                }
            }
        }
        // The session's package set: empty directories mounted live now, filled by `install`.
        let packages: Option<Arc<dyn SessionPackages>> = match &engine.packages {
            None => None,
            Some(provider) => match provider.session(&id) {
                Ok(set) => Some(Arc::from(set)),
                Err(e) => {
                    tracing::warn!(session = %id, "the session gets no package set: {e}");
                    None
                }
            },
        };
        for m in packages.iter().flat_map(|p| p.mounts()) {
            mounts.push(m);
        }
        let policy = engine.policy.sessions();
        let instance = engine
            .executor
            .create(&InstanceSpec {
                id: id.clone(),
                language: host.name().to_string(),
                limits: spec.limits,
                runtime: spec.runtime,
                mounts,
                network: spec.network.clone(),
            })
            .await?;
        let files = SessionFiles::new(instance.files(), spec.limits.disk.get());
        let mut placed = valid.files.clone();
        let mut config = serde_json::Map::new();
        let mut host_kernel = None;
        for (l, k) in &kernels {
            placed.extend(k.files.iter().cloned());
            match k.role {
                KernelRole::Host if l.name() == host.name() => host_kernel = Some(k.clone()),
                KernelRole::Host => {}
                KernelRole::Cells => {
                    config.insert(l.name().to_string(), serde_json::json!(k.command.argv));
                }
            }
        }
        let host_kernel = host_kernel
            .ok_or_else(|| EngineError::Rejected("the host language has no kernel".into()))?;
        instance.files().put(&placed).await?;
        let mut kernel_env = host_kernel.command.env.clone();
        if packages.is_some() {
            kernel_env.extend(Ecosystem::ALL.map(Ecosystem::env));
        }
        let mut env = pipeline::environment(&kernel_env, Some(&options.env));
        env.retain(|(k, _)| k != "PWD");
        let network = match &spec.network {
            crate::spec::NetworkMode::None => None,
            crate::spec::NetworkMode::Proxy(p) => {
                match crate::engine::network::RunNetwork::open(&engine, &id, instance.as_ref(), p) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        let _ = instance.destroy().await;
                        return Err(e.into());
                    }
                }
            }
        };
        for (k, v) in network.iter().flat_map(|n| n.env.iter()) {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let launch = KernelLaunch {
            process: ProcessSpec {
                argv: host_kernel.command.argv.clone(),
                arg0: host_kernel.command.arg0.clone(),
                env,
                cwd: pipeline::WORKDIR.into(),
                // The kernel lives as long as the session may; cells have their own limits.
                limits: crate::limits::Limits {
                    timeout: policy.max_lifetime,
                    ..spec.limits
                },
            },
            config: serde_json::Value::Object(config).to_string(),
        };
        let running =
            match RunningKernel::start(instance, launch.process.clone(), launch.config.clone())
                .await
            {
                Ok(k) => k,
                Err((instance, e)) => {
                    if let Some(i) = instance {
                        let _ = i.destroy().await;
                    }
                    return Err(e.into());
                }
            };
        let now = Instant::now();
        let shared = Arc::new(Shared {
            id,
            engine,
            tenant,
            env: options.env,
            files,
            kernel: tokio::sync::Mutex::new(KernelSlot {
                idle: None,
                running: Some(running),
                launch,
            }),
            cells: AtomicU64::new(0),
            opened: now,
            last_used: Mutex::new(now),
            closed: AtomicBool::new(false),
            interrupt: Mutex::new(None),
            packages,
            installed: tokio::sync::Mutex::new(BTreeMap::new()),
            network: tokio::sync::Mutex::new(network),
            policy,
            spec,
            _permit: permit,
        });
        shared.engine.emit(&Event::SessionOpened {
            id: &shared.id,
            tenant: shared.tenant.as_deref(),
            backend: shared.engine.executor.kind(),
            spec: &shared.spec,
        });
        tokio::spawn(reaper(Arc::downgrade(&shared)));
        Ok(Session { shared })
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The session's files.
    pub fn files(&self) -> &SessionFiles {
        &self.shared.files
    }

    /// What the policy decided for the session.
    pub fn spec(&self) -> &SandboxSpec {
        &self.shared.spec
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Runs `code` in `language` (a cell) with the session's defaults.
    pub async fn run_code(
        &self,
        language: &str,
        code: &str,
    ) -> Result<ExecutionResult, EngineError> {
        self.run(ExecutionRequest::new(language, code), None).await
    }

    /// Runs a shell command line in the session (a Bash cell: the working directory and
    /// exported variables persist between commands).
    pub async fn command(&self, command: &str) -> Result<ExecutionResult, EngineError> {
        self.run(ExecutionRequest::new("bash", command), None).await
    }

    /// Runs one cell: `request`'s language, code, timeout, output limit, env and `outputs`
    /// (memory, disk and processes are the session's). Output chunks go to `sink` as they come.
    ///
    /// Dropping the returned future (a cancelled call) interrupts this cell — and only this
    /// cell — the way [`kill`](Self::kill) does: the cell runs in a task of its own, which ends
    /// it cleanly (its kernel restarted if it does not stop within a second) and gives its slot
    /// back.
    pub async fn run(
        &self,
        request: ExecutionRequest,
        sink: Option<OutputSink>,
    ) -> Result<ExecutionResult, EngineError> {
        let stop = StopSignal::new().map_err(|e| BackendError::setup("a cell's stop signal", e))?;
        self.run_with_stop(request, sink, stop).await
    }

    /// Like [`run`](Self::run), stopped when `stop` fires (before the cell starts: it ends
    /// as soon as it does), with the result saying `killed`.
    pub async fn run_with_stop(
        &self,
        request: ExecutionRequest,
        sink: Option<OutputSink>,
        stop: StopSignal,
    ) -> Result<ExecutionResult, EngineError> {
        /// Fires the cell's stop when the caller's future is dropped before the cell ended.
        struct StopOnDrop(Option<StopSignal>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                if let Some(s) = self.0.take() {
                    s.fire();
                }
            }
        }
        let mut guard = StopOnDrop(Some(stop.clone()));
        let session = self.clone();
        let task = tokio::spawn(async move { session.run_cell(request, sink, stop).await });
        let result = task
            .await
            .map_err(|e| EngineError::Session(BackendError::backend("a session cell", e)));
        guard.0 = None;
        result?
    }

    async fn run_cell(
        &self,
        request: ExecutionRequest,
        sink: Option<OutputSink>,
        stop: StopSignal,
    ) -> Result<ExecutionResult, EngineError> {
        let s = &*self.shared;
        if self.is_closed() {
            return Err(EngineError::SessionClosed);
        }
        let mut slot = s.kernel.lock().await;
        if self.is_closed() {
            return Err(EngineError::SessionClosed);
        }
        s.touch();
        let cell_no = s.cells.fetch_add(1, Ordering::SeqCst) + 1;
        let id = format!("{}-{cell_no}", s.id);
        let begun = Instant::now();
        let inner = &*s.engine;
        let valid = match validate(&request, &inner.languages) {
            Ok(v) => v,
            Err(rej) => {
                let r = ExecutionResult::rejected(&id, request.language.clone(), rej.message);
                return Ok(s.finish(r, &request, begun, cell_no, false));
            }
        };
        let spec = match evaluate(inner, &valid, s.tenant.as_deref()) {
            Ok(spec) => spec,
            Err(EngineError::Rejected(m)) => {
                let r = ExecutionResult::rejected(&id, valid.language.name(), m);
                return Ok(s.finish(r, &request, begun, cell_no, false));
            }
            Err(e) => return Err(e),
        };
        if !valid.files.is_empty() {
            s.files.backend().put(&valid.files).await?;
        }
        let queued_at = Instant::now();
        let permit = inner
            .admission
            .enter(|| {
                inner.emit(&Event::Queued {
                    id: &id,
                    load: inner.admission.load(),
                })
            })
            .await?;
        inner.emit(&Event::Started {
            id: &id,
            language: valid.language.name(),
            backend: inner.executor.kind(),
            tenant: s.tenant.as_deref(),
            request: &request,
            spec: &spec,
            queue_wait: queued_at.elapsed(),
            load: inner.admission.load(),
        });
        let io = CellIo { sink, stop: &stop };
        let (mut result, restarted) = s.cell(&mut slot, &id, &request, &valid, &spec, io).await;
        drop(slot);
        match crate::outputs::collect(s.files.backend().as_ref(), &request.outputs).await {
            Ok(files) => result.files = files,
            Err(e) => tracing::warn!("the output files could not be listed: {e}"),
        }
        result.policy_fingerprint = Some(spec.policy_fingerprint.clone());
        drop(permit);
        s.touch();
        Ok(s.finish(result, &request, begun, cell_no, restarted))
    }

    /// Installs `packages` of `language` into the session's read-only package set, visible to
    /// the next cell (of that language's kernel, and of programs a Bash cell starts).
    ///
    /// The request is judged like a run's `packages` (validated, the policy's rules checked).
    /// What the session asked for before is prepared together with the new packages, so the
    /// set stays consistent, and only what is new is added: the set's directories are mounted
    /// into the sandbox as plain read-only binds when the session opens (an overlay would not
    /// show later additions safely), and additions appear in them one whole directory at a time.
    /// A package the session already has at another version is refused (modules already
    /// imported cannot change under the kernel): pin versions, or open a new session.
    pub async fn install(
        &self,
        language: &str,
        packages: &[String],
    ) -> Result<PackagesReport, EngineError> {
        let s = &*self.shared;
        if self.is_closed() {
            return Err(EngineError::SessionClosed);
        }
        let Some(set) = s.packages.clone() else {
            return Err(EngineError::Rejected(
                "packages are not available in this session: the engine has no package provider"
                    .into(),
            ));
        };
        let mut installed = s.installed.lock().await;
        s.touch();
        let inner = &*s.engine;
        let request = ExecutionRequest {
            language: language.to_string(),
            code: "# install".into(),
            packages: packages.to_vec(),
            ..ExecutionRequest::default()
        };
        let valid =
            validate(&request, &inner.languages).map_err(|r| EngineError::Rejected(r.message))?;
        let spec = evaluate(inner, &valid, s.tenant.as_deref())?;
        let Some(plan) = spec.packages else {
            return Err(EngineError::Rejected("no packages were named".into()));
        };
        let ecosystem = plan.list.ecosystem;
        // What the session has (unless named again), then what is new.
        let before = installed.get(&ecosystem).cloned().unwrap_or_default();
        let mut specs: Vec<PackageSpec> = before
            .iter()
            .filter(|old| !plan.list.specs.iter().any(|new| new.name == old.name))
            .cloned()
            .collect();
        specs.extend(plan.list.specs.iter().cloned());
        let union = PackagePlan {
            list: PackageList {
                ecosystem,
                specs: specs.clone(),
            },
            rules: plan.rules,
        };
        let prepared = crate::engine::packages::prepare(
            inner,
            valid.language.as_ref(),
            &union,
            &spec.policy_name,
        )
        .await
        .map_err(|f| match f {
            PackageFailure::Rejected(m) => EngineError::Rejected(m),
            f => EngineError::Packages(f.message()),
        })?;
        let added = tokio::task::spawn_blocking(move || {
            let r = set.add(&prepared);
            (r, prepared)
        })
        .await
        .map_err(|e| EngineError::Packages(format!("the install's thread: {e}")))?;
        let (result, prepared) = added;
        result.map_err(|e| match e {
            PackageError::Refused(m) => EngineError::Rejected(m),
            e => EngineError::Packages(e.to_string()),
        })?;
        installed.insert(ecosystem, specs);
        s.touch();
        Ok(prepared.report)
    }

    /// Stops the running cell, if any (its kernel is interrupted, and restarted when it does
    /// not stop within a second). The cell's result says `killed`.
    pub fn kill(&self) {
        if let Some(tx) = lock(&self.shared.interrupt).as_ref() {
            let _ = tx.send(());
        }
    }

    /// Closes the session: the kernel is stopped and the sandbox destroyed.
    pub async fn close(self) -> Result<(), EngineError> {
        self.shared.close(SessionEnd::Closed).await
    }
}

fn evaluate(
    engine: &Inner,
    valid: &ValidRequest,
    tenant: Option<&str>,
) -> Result<SandboxSpec, EngineError> {
    let context = PolicyContext {
        language: valid.language.name(),
        backend: engine.executor.kind(),
        tenant: tenant.map(str::to_string),
    };
    engine
        .policy
        .evaluate(valid, &context)
        .map_err(|r| EngineError::Rejected(r.message))
}

/// Closes a session once it is idle past the policy's timeout or at its maximum lifetime.
async fn reaper(session: Weak<Shared>) {
    loop {
        let Some(s) = session.upgrade() else { return };
        if s.closed.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let idle_end = *lock(&s.last_used) + s.policy.idle_timeout;
        let life_end = s.opened + s.policy.max_lifetime;
        let reason = if now >= life_end {
            Some(SessionEnd::Lifetime)
        } else if now >= idle_end && s.kernel.try_lock().is_ok() {
            Some(SessionEnd::IdleTimeout)
        } else {
            None
        };
        if let Some(reason) = reason {
            let _ = s.close(reason).await;
            return;
        }
        let wake = idle_end.min(life_end).max(now + Duration::from_millis(100));
        drop(s);
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
    }
}

/// Where a cell's output goes as it comes, and what stops it.
struct CellIo<'a> {
    sink: Option<OutputSink>,
    stop: &'a StopSignal,
}

/// What a cell's loop saw.
struct CellRun {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: crate::result::Truncated,
    results: Vec<DisplayData>,
    exception: Option<CellException>,
    exit: Option<i32>,
    stopped: Option<Stop>,
    /// The kernel ended during the cell (its outcome), or was killed after it.
    kernel_end: Option<ProcessOutcome>,
    restarted: bool,
    cpu: Duration,
}

impl Shared {
    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    fn finish(
        &self,
        mut result: ExecutionResult,
        request: &ExecutionRequest,
        begun: Instant,
        cell: u64,
        restarted: bool,
    ) -> ExecutionResult {
        result.session = Some(SessionReport {
            id: self.id.clone(),
            cell,
            kernel_restarted: restarted,
        });
        for ev in &result.security_events {
            self.engine.emit(&Event::Security {
                id: &result.id,
                tenant: self.tenant.as_deref(),
                event: ev,
            });
        }
        self.engine.emit(&Event::Finished {
            result: &result,
            tenant: self.tenant.as_deref(),
            request,
            elapsed: begun.elapsed(),
            load: self.engine.admission.load(),
        });
        result
    }

    /// Ensures a kernel runs (starting one after a restart) and returns it.
    async fn kernel<'a>(
        &self,
        slot: &'a mut KernelSlot,
    ) -> Result<&'a mut RunningKernel, BackendError> {
        if slot.running.as_ref().is_some_and(|k| !k.is_running()) {
            if let Some(k) = slot.running.take() {
                if let Some((instance, _)) = k.stop().await {
                    slot.idle = Some(instance);
                }
            }
        }
        if slot.running.is_none() {
            let instance = slot
                .idle
                .take()
                .ok_or(BackendError::InstanceGone("the session's sandbox is gone"))?;
            let launch = slot.launch.clone();
            match RunningKernel::start(instance, launch.process, launch.config).await {
                Ok(k) => slot.running = Some(k),
                Err((instance, e)) => {
                    slot.idle = instance;
                    return Err(e);
                }
            }
        }
        slot.running
            .as_mut()
            .ok_or(BackendError::InstanceGone("the session's kernel is gone"))
    }

    async fn cell(
        &self,
        slot: &mut KernelSlot,
        id: &str,
        request: &ExecutionRequest,
        valid: &ValidRequest,
        spec: &SandboxSpec,
        io: CellIo<'_>,
    ) -> (ExecutionResult, bool) {
        let language = valid.language.name();
        let started = Instant::now();
        let run = match self.drive(slot, id, request, spec, io.sink, io.stop).await {
            Ok(run) => run,
            Err(e) => {
                return (
                    ExecutionResult::sandbox_error(id, language, e.to_string()),
                    true,
                )
            }
        };
        let restarted = run.restarted;
        let mut outcome = ProcessOutcome {
            stdout: run.stdout,
            stderr: run.stderr,
            truncated: run.truncated,
            stopped: run.stopped,
            wall_time: started.elapsed(),
            ..ProcessOutcome::default()
        };
        outcome.usage.cpu = run.cpu;
        outcome.exit = match (&run.kernel_end, run.exit) {
            // The kernel died during the cell: what the host saw of its end decides.
            (Some(end), _) if run.stopped.is_none() => {
                outcome.oom_killed = end.oom_killed;
                outcome.usage.memory_peak = end.usage.memory_peak;
                outcome.events.extend(end.events.iter().cloned());
                match end.exit {
                    Exit::Code(0) => Exit::Code(1),
                    other => other,
                }
            }
            (_, Some(code)) => Exit::Code(code),
            (_, None) => Exit::Signal(libc::SIGKILL),
        };
        let mut result = ExecutionResult::finished(
            id,
            language,
            self.engine.executor.kind(),
            outcome,
            &spec.limits,
            None,
        );
        if result.status == Status::Error {
            if let Some(e) = &run.exception {
                result.error = Some(format!("{}: {}", e.name, e.value));
            }
            if run.kernel_end.is_some() && run.exception.is_none() {
                result.error = Some("the session's kernel exited; it was restarted".into());
            }
        }
        result.results = run.results;
        result.exception = run.exception;
        (result, restarted)
    }

    /// Sends the cell to the kernel and follows it to its end under the cell's limits.
    async fn drive(
        &self,
        slot: &mut KernelSlot,
        id: &str,
        request: &ExecutionRequest,
        spec: &SandboxSpec,
        mut sink: Option<OutputSink>,
        stop: &StopSignal,
    ) -> Result<CellRun, BackendError> {
        enum Step {
            Frame(Option<Frame>),
            Interrupt,
            Ended(Option<kernel::Ended>),
            Wake,
        }
        let limits = spec.limits;
        let kernel = self.kernel(slot).await?;
        let mut frames = kernel.begin_cell(id);
        let (interrupt_tx, mut interrupt_rx) = tokio::sync::mpsc::unbounded_channel();
        *lock(&self.interrupt) = Some(interrupt_tx);
        let mut env = self.env.clone();
        env.extend(request.env.clone());
        let line = serde_json::json!({
            "op": "run",
            "id": id,
            "lang": request.language.trim().to_ascii_lowercase(),
            "code": request.code,
            "env": env,
        })
        .to_string();
        let mut run = CellRun {
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: Default::default(),
            results: Vec::new(),
            exception: None,
            exit: None,
            stopped: None,
            kernel_end: None,
            restarted: false,
            cpu: Duration::ZERO,
        };
        kernel.write_line(line).await?;
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let mut grace: Option<tokio::time::Instant> = None;
        let mut total = 0u64;
        let mut done = false;
        while !done {
            let Some(k) = slot.running.as_mut() else {
                break;
            };
            let wake = grace.unwrap_or(deadline);
            let step = tokio::select! {
                f = frames.recv() => Step::Frame(f),
                _ = interrupt_rx.recv(), if grace.is_none() => Step::Interrupt,
                _ = stop.fired(), if grace.is_none() => Step::Interrupt,
                e = k.ended() => Step::Ended(e),
                _ = tokio::time::sleep_until(wake) => Step::Wake,
            };
            match step {
                Step::Frame(Some(Frame::Stdout { data, .. })) => {
                    let out = limits.output.get();
                    self.output(
                        &mut run,
                        StreamKind::Stdout,
                        data,
                        &mut total,
                        out,
                        &mut sink,
                    );
                }
                Step::Frame(Some(Frame::Stderr { data, .. })) => {
                    let out = limits.output.get();
                    self.output(
                        &mut run,
                        StreamKind::Stderr,
                        data,
                        &mut total,
                        out,
                        &mut sink,
                    );
                }
                Step::Frame(Some(Frame::Display { data, .. })) => {
                    if run.results.len() < 64 {
                        run.results.push(DisplayData(data));
                    }
                }
                Step::Frame(Some(Frame::Error {
                    name,
                    value,
                    traceback,
                    ..
                })) => {
                    run.exception = Some(CellException {
                        name,
                        value,
                        traceback,
                    });
                }
                Step::Frame(Some(Frame::Done { exit, cpu, .. })) => {
                    run.exit = Some(exit);
                    run.cpu = Duration::try_from_secs_f64(cpu).unwrap_or_default();
                    done = true;
                }
                Step::Frame(Some(Frame::Ready {})) | Step::Frame(None) => {}
                Step::Interrupt => {
                    run.stopped.get_or_insert(Stop::Cancelled);
                }
                Step::Ended(ended) => {
                    // The kernel process ended under the cell (a memory kill, a crash, exit()).
                    run.kernel_end = ended.as_ref().and_then(|(_, o)| o.as_ref().ok().cloned());
                    slot.idle = ended.map(|(instance, _)| instance);
                    slot.running = None;
                    run.restarted = true;
                    break;
                }
                Step::Wake if grace.is_some() => break, // the interrupt did not end the cell
                Step::Wake => {
                    run.stopped.get_or_insert(Stop::Timeout);
                }
            }
            if run.stopped.is_some() && grace.is_none() && !done {
                grace = Some(tokio::time::Instant::now() + INTERRUPT_GRACE);
                let stop = serde_json::json!({"op": "interrupt", "id": id}).to_string();
                if let Some(k) = slot.running.as_mut() {
                    let _ = k.write_line(stop).await;
                }
            }
        }
        *lock(&self.interrupt) = None;
        if let Some(k) = slot.running.as_ref() {
            k.finish_cell();
        }
        if !done && slot.running.is_some() {
            // Still running after the grace: kill the kernel; the next cell starts a new one.
            if let Some(k) = slot.running.take() {
                if let Some((instance, outcome)) = k.stop().await {
                    slot.idle = Some(instance);
                    run.kernel_end = outcome.ok();
                }
            }
            run.restarted = true;
        }
        Ok(run)
    }

    fn output(
        &self,
        run: &mut CellRun,
        kind: StreamKind,
        data: String,
        total: &mut u64,
        limit: u64,
        sink: &mut Option<OutputSink>,
    ) {
        let bytes = data.into_bytes();
        let room = limit.saturating_sub(*total) as usize;
        let take = bytes.get(..room.min(bytes.len())).unwrap_or(&bytes);
        *total = total.saturating_add(bytes.len() as u64);
        if let Some(sink) = sink.as_mut() {
            if !take.is_empty() {
                sink(kind, take);
            }
        }
        let (buf, cut) = match kind {
            StreamKind::Stdout => (&mut run.stdout, &mut run.truncated.stdout),
            StreamKind::Stderr => (&mut run.stderr, &mut run.truncated.stderr),
        };
        buf.extend_from_slice(take);
        if take.len() < bytes.len() {
            *cut = true;
            run.stopped.get_or_insert(Stop::OutputLimit);
        }
    }

    async fn close(&self, reason: SessionEnd) -> Result<(), EngineError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // A running cell is stopped first; then the kernel and the sandbox.
        if let Some(tx) = lock(&self.interrupt).as_ref() {
            let _ = tx.send(());
        }
        let mut slot = self.kernel.lock().await;
        let instance = match slot.running.take() {
            Some(k) => k.stop().await.map(|(i, _)| i),
            None => slot.idle.take(),
        };
        let destroyed = match instance {
            Some(i) => i.destroy().await,
            None => Ok(()),
        };
        if let Some(net) = self.network.lock().await.take() {
            let (_, decisions) = net.close().await;
            for d in &decisions {
                self.engine.emit(&Event::Network {
                    id: &self.id,
                    tenant: self.tenant.as_deref(),
                    decision: d,
                });
            }
        }
        self.engine.emit(&Event::SessionClosed {
            id: &self.id,
            tenant: self.tenant.as_deref(),
            reason,
            cells: self.cells.load(Ordering::SeqCst),
            lifetime: self.opened.elapsed(),
        });
        destroyed.map_err(EngineError::from)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        // The last handle went without `close`: the kernel's task ends when its stop fires (its
        // instance is dropped there, which takes the sandbox down); an idle instance is dropped
        // here.
        let slot = self.kernel.get_mut();
        if let Some(k) = slot.running.take() {
            k.fire_stop();
        }
        slot.idle = None;
        self.engine.emit(&Event::SessionClosed {
            id: &self.id,
            tenant: self.tenant.as_deref(),
            reason: SessionEnd::Dropped,
            cells: self.cells.load(Ordering::SeqCst),
            lifetime: self.opened.elapsed(),
        });
    }
}

#[cfg(test)]
mod tests;
