//! The compile step, through the compile cache.

use crate::compile_cache::{CacheKey, CacheScope, MAX_ARTIFACT_BYTES};
use crate::error::BackendError;
use crate::events::Phase;
use crate::executor::Instance;
use crate::language::CompileStep;
use crate::limits::Limits;
use crate::monitor::Event;
use crate::result::{CompileReport, ExecutionResult, Status};
use crate::spec::{FileEntry, ProcessIo, ProcessSpec, SandboxSpec};

use super::pipeline::{environment, report_step, Job, WORKDIR};
use super::Inner;

/// What the compile step left.
pub(crate) enum Compiled {
    /// An artifact is in the workspace (from the compiler or the cache).
    Ready(CompileReport),
    /// The compile failed: this is the result to return.
    Failed(Box<ExecutionResult>),
}

/// The compiler's limits: the language's own, capped by the policy's compile ceiling.
pub(crate) fn limits(step: &CompileStep, spec: &SandboxSpec) -> Limits {
    step.limits.min(&spec.compile_limits)
}

/// The cache key: everything that decides the artifact — the scope, the backend's environment,
/// the target, the language's toolchain and flags, the compile step's argv and environment
/// (both fixed by the language), and every file of the workspace. `None`: no caching.
fn cache_key(
    engine: &Inner,
    job: &Job<'_>,
    step: &CompileStep,
    env: &[(String, String)],
    files: &[FileEntry],
) -> Option<String> {
    engine.compile_cache.as_ref()?;
    let scope = match job.spec.cache_scope {
        CacheScope::Off => return None,
        CacheScope::Shared => "shared".to_string(),
        CacheScope::Tenant => format!("tenant:{}", job.tenant.unwrap_or("")),
    };
    let language = job.language().name();
    let mut sorted: Vec<&FileEntry> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut key = CacheKey::new()
        .part(b"vana-compile-v2")
        .part(scope.as_bytes())
        .part(engine.executor.environment_id(language).as_bytes())
        .part(std::env::consts::ARCH.as_bytes())
        .part(language.as_bytes())
        .part(step.cache_salt.as_bytes())
        .part(step.artifact.as_bytes());
    for a in &step.command.argv {
        key = key.part(a.as_bytes());
    }
    for (k, v) in env {
        key = key.part(k.as_bytes()).part(v.as_bytes());
    }
    for f in sorted {
        key = key
            .part(f.path.as_bytes())
            .part(&[u8::from(f.executable)])
            .part(&f.content);
    }
    Some(key.finish())
}

/// Compiles the staged `files` (or places the cached artifact).
pub(crate) async fn compile(
    engine: &Inner,
    job: &Job<'_>,
    compile: CompileStep,
    files: &[FileEntry],
    instance: &mut dyn Instance,
) -> Result<Compiled, BackendError> {
    let env = environment(&compile.command.env, None);
    let key = cache_key(engine, job, &compile, &env, files);
    let cache = engine.compile_cache.as_ref().zip(key.as_ref());
    if let Some((cache, key)) = cache {
        let hit = cache.get(key);
        engine.emit(&Event::CompileCache {
            id: job.id,
            language: job.language().name(),
            hit: hit.is_some(),
        });
        if let Some(binary) = hit {
            let entry = FileEntry {
                path: compile.artifact.to_string(),
                content: binary,
                executable: true,
            };
            instance.files().put(&[entry]).await?;
            return Ok(Compiled::Ready(CompileReport::cached()));
        }
    }

    let limits = limits(&compile, job.spec);
    let process = ProcessSpec {
        argv: compile.command.argv,
        arg0: compile.command.arg0,
        env,
        cwd: WORKDIR.into(),
        limits,
    };
    let mut outcome = instance.run(&process, ProcessIo::default()).await?;
    report_step(engine, job.id, job.tenant, Phase::Compile, &outcome);
    let language = job.language().name();
    if outcome.status() != Status::Success {
        outcome.events = std::mem::take(&mut outcome.events)
            .into_iter()
            .map(|e| e.in_phase(Phase::Compile))
            .collect();
        let mut r = ExecutionResult::compile_failed(
            job.id,
            language,
            engine.executor.kind(),
            &outcome,
            &limits,
        );
        r.security_events = outcome.events;
        return Ok(Compiled::Failed(Box::new(r)));
    }
    if let Some((cache, key)) = cache {
        // Only the host writes the cache, and only from a compile that succeeded, before the
        // program has run.
        if let Ok(mut read) = instance
            .files()
            .read(&[compile.artifact.to_string()], MAX_ARTIFACT_BYTES)
            .await
        {
            if let Some(f) = read.pop() {
                cache.put(key, &f.content);
            }
        }
    }
    Ok(Compiled::Ready(CompileReport::of(&outcome, &limits)))
}
