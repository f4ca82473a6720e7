//! One request's way through a backend, as the plan's steps: create the instance, **stage** the
//! sources, **compile** (through the cache), **run**, **collect** the result, destroy.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::BackendError;
use crate::events::{Phase, SecurityEvent, SecurityEventKind};
use crate::executor::Instance;
use crate::language::{Language, StepContext, MAX_GUARD_EVENTS_BYTES};
use crate::limits::LimitKind;
use crate::monitor::Event;
use crate::outcome::{ProcessOutcome, Stop};
use crate::packages::PreparedPackages;
use crate::request::ExecutionRequest;
use crate::result::{CompileReport, ExecutionResult};
use crate::spec::{FileEntry, InstanceSpec, NetworkMode, ProcessIo, ProcessSpec, SandboxSpec};
use crate::validate::ValidRequest;

use super::compile::{self, Compiled};
use super::packages::PackageFailure;
use super::Inner;

/// Working directory of every program.
pub const WORKDIR: &str = "/workspace";

/// Everything decided about one request before it runs.
pub(crate) struct Job<'a> {
    pub id: &'a str,
    pub request: &'a ExecutionRequest,
    pub valid: &'a ValidRequest,
    pub spec: &'a SandboxSpec,
    pub tenant: Option<&'a str>,
}

impl Job<'_> {
    pub(crate) fn language(&self) -> &dyn Language {
        self.valid.language.as_ref()
    }
}

/// The files and paths of one job, as the language sees them.
pub(crate) struct Staged {
    source_path: String,
    file_names: Vec<String>,
}

impl Staged {
    fn new(job: &Job<'_>) -> Self {
        Self {
            source_path: format!("{WORKDIR}/{}", job.language().info().source_file),
            file_names: job.valid.files.iter().map(|f| f.path.clone()).collect(),
        }
    }

    pub(crate) fn step<'a>(&'a self, job: &'a Job<'_>) -> StepContext<'a> {
        StepContext {
            workdir: WORKDIR,
            source_path: &self.source_path,
            args: &job.request.args,
            guards: job.spec.guards,
            opt_level: job.spec.opt_level,
            files: &self.file_names,
        }
    }
}

/// The sandbox's minimal environment, the language's variables over it, and — for the program
/// only, never for a compile step — the request's `env` over both.
pub(crate) fn environment(
    language: &[(String, String)],
    user: Option<&BTreeMap<String, String>>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", WORKDIR),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("USER", "sandbox"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let user = user
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()));
    for (k, v) in language.iter().cloned().chain(user) {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    env
}

/// Runs `job` on the engine's backend; every failure becomes a result (`sandbox_error`).
pub(crate) async fn execute(engine: &Inner, job: &Job<'_>, io: ProcessIo) -> ExecutionResult {
    let language = job.language();
    if let Err(e) = engine.executor.check_language(language) {
        let msg = match e {
            BackendError::Unavailable(m) => m,
            e => e.to_string(),
        };
        return ExecutionResult::sandbox_error(job.id, language.name(), msg);
    }
    // Packages are prepared before the instance exists, and held until it is gone.
    let packages = match &job.spec.packages {
        None => None,
        Some(plan) => {
            match super::packages::prepare(engine, language, plan, &job.spec.policy_name).await {
                Ok(p) => Some(p),
                Err(PackageFailure::Rejected(m)) => {
                    return ExecutionResult::rejected(job.id, language.name(), m)
                }
                Err(PackageFailure::Failed(m)) => {
                    return ExecutionResult::sandbox_error(job.id, language.name(), m)
                }
            }
        }
    };
    let mut result = match in_instance(engine, job, packages.as_ref(), io).await {
        Ok(r) => r,
        Err(e) => ExecutionResult::sandbox_error(job.id, language.name(), e.to_string()),
    };
    result.packages = packages.map(|p| p.report);
    result
}

async fn in_instance(
    engine: &Inner,
    job: &Job<'_>,
    packages: Option<&PreparedPackages>,
    io: ProcessIo,
) -> Result<ExecutionResult, BackendError> {
    let executor = &engine.executor;
    executor
        .capabilities()
        .check(&job.spec.require, job.spec.runtime)?;
    let staged = Staged::new(job);
    let step = staged.step(job);
    let language = job.language();
    let compile_step = language.compile(&step);
    // Sized for every step it runs: the program and, for compiled languages, the compiler.
    let envelope = match &compile_step {
        Some(c) => job.spec.limits.max(&compile::limits(c, job.spec)),
        None => job.spec.limits,
    };
    let mut mounts = language.mounts();
    mounts.extend(packages.map(PreparedPackages::mount));
    let spec = InstanceSpec {
        id: job.id.to_string(),
        language: language.name().to_string(),
        limits: envelope,
        runtime: job.spec.runtime,
        mounts,
        network: job.spec.network.clone(),
    };
    let creating = Instant::now();
    let mut instance = executor.create(&spec).await?;
    let network = match &job.spec.network {
        NetworkMode::None => None,
        NetworkMode::Proxy(policy) => {
            match super::network::RunNetwork::open(engine, job.id, instance.as_ref(), policy) {
                Ok(n) => Some(n),
                Err(e) => {
                    let _ = instance.destroy().await;
                    return Err(e);
                }
            }
        }
    };
    let proxy_env = network.as_ref().map(|n| n.env.clone()).unwrap_or_default();
    let package_env = packages.map(|p| p.env.as_slice()).unwrap_or_default();
    let plan = StepPlan {
        step: &step,
        compile: compile_step,
        creating,
        env: RunEnv {
            packages: package_env,
            proxy: &proxy_env,
        },
    };
    let result = steps(engine, job, plan, instance.as_mut(), io).await;
    let summary = match network {
        Some(net) => {
            let (summary, decisions) = net.close().await;
            for d in &decisions {
                engine.emit(&Event::Network {
                    id: job.id,
                    tenant: job.tenant,
                    decision: d,
                });
            }
            Some(summary)
        }
        None => None,
    };
    let destroyed = instance.destroy().await;
    let mut result = result?;
    result.network = summary;
    if let Err(e) = destroyed {
        result.security_events.push(SecurityEvent::new(
            SecurityEventKind::CleanupFailed,
            e.to_string(),
        ));
    }
    Ok(result)
}

/// Variables a run gets besides the language's and the request's.
#[derive(Clone, Copy)]
struct RunEnv<'a> {
    /// The prepared packages' (under the request's `env`).
    packages: &'a [(String, String)],
    /// The egress proxy's (over the request's `env`).
    proxy: &'a [(String, String)],
}

/// What the steps of one job in its instance are made of.
struct StepPlan<'a> {
    /// The language's view of the job.
    step: &'a StepContext<'a>,
    /// The compile step, for compiled languages.
    compile: Option<crate::language::CompileStep>,
    /// When the instance's creation began (its start-up is reported once staged).
    creating: Instant,
    /// Variables the program gets besides the language's and the request's.
    env: RunEnv<'a>,
}

/// Stage, compile (through the cache), run and collect, in `instance`.
async fn steps(
    engine: &Inner,
    job: &Job<'_>,
    plan: StepPlan<'_>,
    instance: &mut dyn Instance,
    io: ProcessIo,
) -> Result<ExecutionResult, BackendError> {
    let StepPlan {
        step,
        compile: compile_step,
        creating,
        env: extra,
    } = plan;
    let files = stage(job, step, instance).await?;
    engine.emit(&Event::Ready {
        id: job.id,
        backend: engine.executor.kind(),
        startup: creating.elapsed(),
    });
    let report = match compile_step {
        None => None,
        Some(c) => match compile::compile(engine, job, c, &files, instance).await? {
            Compiled::Ready(report) => Some(report),
            Compiled::Failed(result) => return Ok(*result),
        },
    };
    let outcome = run(job, step, instance, io, extra).await?;
    Ok(collect(engine, job, step, instance, outcome, report).await)
}

/// Places the source, the request's files and the language's support files, in one transfer
/// (a round trip costs tens of milliseconds on a container backend). Returns what was placed.
async fn stage(
    job: &Job<'_>,
    step: &StepContext<'_>,
    instance: &mut dyn Instance,
) -> Result<Vec<FileEntry>, BackendError> {
    let language = job.language();
    let mut files = Vec::with_capacity(job.valid.files.len() + 2);
    files.push(FileEntry {
        path: language.info().source_file.to_string(),
        content: job.request.code.as_bytes().to_vec(),
        executable: false,
    });
    files.extend(job.valid.files.iter().cloned());
    files.extend(language.support_files(step));
    instance.files().put(&files).await?;
    Ok(files)
}

async fn run(
    job: &Job<'_>,
    step: &StepContext<'_>,
    instance: &mut dyn Instance,
    io: ProcessIo,
    extra: RunEnv<'_>,
) -> Result<ProcessOutcome, BackendError> {
    let mut cmd = job.language().run(step);
    // The packages' variables over the language's; the request's `env` over both.
    cmd.env.extend(extra.packages.iter().cloned());
    let mut env = environment(&cmd.env, Some(&job.request.env));
    // The proxy's variables over the request's: a request cannot point them elsewhere (and
    // there is nowhere else to go).
    for (k, v) in extra.proxy {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let process = ProcessSpec {
        argv: cmd.argv,
        arg0: cmd.arg0,
        env,
        cwd: WORKDIR.into(),
        limits: job.spec.limits,
    };
    let io = ProcessIo {
        stdin: crate::spec::Stdin::Bytes(job.valid.stdin.clone()),
        ..io
    };
    instance.run(&process, io).await
}

/// Reports a finished step to monitors: its status and the limits it hit.
pub(crate) fn report_step(
    engine: &Inner,
    id: &str,
    tenant: Option<&str>,
    phase: Phase,
    outcome: &ProcessOutcome,
) {
    engine.emit(&Event::PhaseFinished {
        id,
        phase,
        status: outcome.status(),
        duration: outcome.wall_time,
    });
    let hits = [
        (outcome.stopped == Some(Stop::Timeout), LimitKind::Timeout),
        (
            outcome.stopped == Some(Stop::OutputLimit),
            LimitKind::Output,
        ),
        (outcome.oom_killed, LimitKind::Memory),
        (outcome.pids_limit_hits > 0, LimitKind::Processes),
    ];
    for (hit, limit) in hits {
        if hit {
            engine.emit(&Event::LimitHit { id, tenant, limit });
        }
    }
}

async fn collect(
    engine: &Inner,
    job: &Job<'_>,
    step: &StepContext<'_>,
    instance: &mut dyn Instance,
    mut outcome: ProcessOutcome,
    compile: Option<CompileReport>,
) -> ExecutionResult {
    report_step(engine, job.id, job.tenant, Phase::Run, &outcome);
    let language = job.language();
    if outcome.pids_limit_hits > 0 {
        outcome.events.push(SecurityEvent::new(
            SecurityEventKind::LimitHit,
            format!(
                "the process limit ({}) refused {} fork(s)",
                job.spec.limits.processes, outcome.pids_limit_hits
            ),
        ));
    }
    let events_file = match language.events_file(step) {
        None => None,
        Some(path) => match instance
            .files()
            .read(&[path.to_string()], MAX_GUARD_EVENTS_BYTES)
            .await
        {
            Ok(mut files) => files.pop().map(|f| f.content),
            Err(e) => {
                outcome.events.push(SecurityEvent::program(
                    SecurityEventKind::LanguageGuard,
                    format!("the guard's events could not be read back: {e}"),
                ));
                None
            }
        },
    };
    let outputs =
        match crate::outputs::collect(instance.files().as_ref(), &job.request.outputs).await {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!("the output files could not be listed: {e}");
                Vec::new()
            }
        };
    let guard = language.guard_events(step, &outcome.stderr, events_file.as_deref());
    outcome.events.extend(guard);
    outcome.events = std::mem::take(&mut outcome.events)
        .into_iter()
        .map(|e| e.in_phase(Phase::Run))
        .collect();
    let mut result = ExecutionResult::finished(
        job.id,
        language.name(),
        engine.executor.kind(),
        outcome,
        &job.spec.limits,
        compile,
    );
    result.files = outputs;
    result
}
