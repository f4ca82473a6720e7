//! The Engine: validate → policy → admission (bounded concurrency, bounded queue) → the
//! pipeline (stage → compile → run → collect, in [`pipeline`]) → result, reporting every step to
//! monitors.

mod admission;
mod compile;
pub(crate) mod network;
pub(crate) mod packages;
pub(crate) mod pipeline;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::Instrument;

use crate::compile_cache::CompileCache;
use crate::error::EngineError;
use crate::executor::Executor;
use crate::language::Languages;
use crate::monitor::{Event, Monitor};
use crate::packages::{PackageProvider, PackageTarget};
use crate::policy::{Policy, PolicyContext};
use crate::request::ExecutionRequest;
use crate::result::ExecutionResult;
use crate::spec::ProcessIo;
use crate::validate::validate;

use admission::Admission;
pub use pipeline::WORKDIR;

/// Runs requests. Cheap to clone; clones share the concurrency bound and queue.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) languages: Languages,
    monitors: Vec<Arc<dyn Monitor>>,
    compile_cache: Option<Arc<dyn CompileCache>>,
    pub(crate) packages: Option<Arc<dyn PackageProvider>>,
    /// Each language's package target, asked of the executor once.
    pub(crate) package_targets:
        std::sync::Mutex<std::collections::HashMap<&'static str, PackageTarget>>,
    pub(crate) egress: Option<Arc<dyn crate::egress::Egress>>,
    pub(crate) admission: Admission,
    /// Open sessions (one permit each).
    pub(crate) sessions: Arc<tokio::sync::Semaphore>,
    pub(crate) max_sessions: usize,
}

impl Inner {
    pub(crate) fn emit(&self, event: &Event<'_>) {
        for m in &self.monitors {
            m.on_event(event);
        }
    }
}

/// Builds an [`Engine`].
#[derive(Default)]
pub struct EngineBuilder {
    executor: Option<Arc<dyn Executor>>,
    policy: Option<Arc<dyn Policy>>,
    languages: Languages,
    monitors: Vec<Arc<dyn Monitor>>,
    compile_cache: Option<Arc<dyn CompileCache>>,
    packages: Option<Arc<dyn PackageProvider>>,
    egress: Option<Arc<dyn crate::egress::Egress>>,
    max_concurrency: Option<usize>,
    max_queue: Option<usize>,
    max_sessions: Option<usize>,
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

    /// The package provider that prepares requests' `packages` (default: none, and a request
    /// with packages is rejected).
    pub fn packages(mut self, provider: Arc<dyn PackageProvider>) -> Self {
        self.packages = Some(provider);
        self
    }

    /// The egress proxy for runs the policy gives network access (default: none, and such
    /// runs fail closed).
    pub fn egress(mut self, egress: Arc<dyn crate::egress::Egress>) -> Self {
        self.egress = Some(egress);
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

    /// Sessions open at once before [`Engine::session`] fails with
    /// [`EngineError::SessionsFull`] (default: 64).
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = Some(n);
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
        let max_sessions = self.max_sessions.unwrap_or(64);
        Ok(Engine {
            inner: Arc::new(Inner {
                executor,
                policy,
                languages: self.languages,
                monitors: self.monitors,
                compile_cache: self.compile_cache,
                packages: self.packages,
                package_targets: Default::default(),
                egress: self.egress,
                admission: Admission::new(max_concurrency, max_queue),
                sessions: Arc::new(tokio::sync::Semaphore::new(max_sessions)),
                max_sessions,
            }),
        })
    }
}

pub(crate) fn new_id() -> String {
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

    /// The package provider, if any.
    pub fn package_provider(&self) -> Option<&Arc<dyn PackageProvider>> {
        self.inner.packages.as_ref()
    }

    /// Executions running now.
    pub fn running(&self) -> usize {
        self.inner.admission.running()
    }

    pub(crate) fn inner(&self) -> Arc<Inner> {
        self.inner.clone()
    }

    /// Executions waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.inner.admission.queued()
    }

    /// Runs `code` in `language` with the policy's defaults: the short form of
    /// [`execute`](Self::execute).
    pub async fn run(&self, language: &str, code: &str) -> Result<ExecutionResult, EngineError> {
        self.execute(ExecutionRequest::new(language, code)).await
    }

    /// Runs one request to completion.
    ///
    /// Validation and policy failures come back as a result with status `rejected`; backend
    /// failures as `sandbox_error`. The only errors are the Engine's own (a full queue).
    pub async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, EngineError> {
        self.execute_inner(None, request, ProcessIo::default())
            .await
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

    /// [`execute_as`](Self::execute_as) with an output sink for streaming, as
    /// [`execute_with_io`](Self::execute_with_io).
    pub async fn execute_as_with_io(
        &self,
        tenant: &str,
        request: ExecutionRequest,
        io: ProcessIo,
    ) -> Result<ExecutionResult, EngineError> {
        self.execute_inner(Some(tenant), request, io).await
    }

    async fn execute_inner(
        &self,
        tenant: Option<&str>,
        request: ExecutionRequest,
        io: ProcessIo,
    ) -> Result<ExecutionResult, EngineError> {
        let id = request
            .id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(new_id);
        // Everything logged on the way (by the engine, a backend or a monitor) carries the id.
        let span = tracing::info_span!("execution", id = %id, tenant = tenant.unwrap_or("-"));
        self.execute_job(&id, tenant, &request, io)
            .instrument(span)
            .await
    }

    async fn execute_job(
        &self,
        id: &str,
        tenant: Option<&str>,
        request: &ExecutionRequest,
        mut io: ProcessIo,
    ) -> Result<ExecutionResult, EngineError> {
        let inner = &*self.inner;
        let begun = Instant::now();
        // A dropped future stops its sandbox at once (not at its timeout).
        if io.stop.is_none() {
            io.stop = crate::spec::StopSignal::new().ok();
        }
        let mut watch = Watch {
            inner,
            id,
            tenant,
            begun,
            done: false,
            stop: io.stop.clone(),
        };
        let finish = |watch: &mut Watch<'_>, result: ExecutionResult| {
            watch.done = true;
            self.finish(result, tenant, request, begun)
        };

        // Validate and evaluate the policy: both decide once, before anything waits or runs.
        let valid = match validate(request, &inner.languages) {
            Ok(v) => v,
            Err(rej) => {
                let language = request.language.trim().to_ascii_lowercase();
                let r = ExecutionResult::rejected(id, language, rej.message);
                return Ok(finish(&mut watch, r));
            }
        };
        let context = PolicyContext {
            language: valid.language.name(),
            backend: inner.executor.kind(),
            tenant: tenant.map(str::to_string),
        };
        let spec = match inner.policy.evaluate(&valid, &context) {
            Ok(s) => s,
            Err(rej) => {
                let mut r = ExecutionResult::rejected(id, context.language, rej.message);
                r.policy_fingerprint = Some(inner.policy.fingerprint());
                return Ok(finish(&mut watch, r));
            }
        };

        let queued_at = Instant::now();
        let slot = inner
            .admission
            .enter(|| {
                inner.emit(&Event::Queued {
                    id,
                    load: inner.admission.load(),
                })
            })
            .await;
        let slot = match slot {
            Ok(s) => s,
            Err(e) => {
                watch.done = true;
                if matches!(e, EngineError::QueueFull { .. }) {
                    inner.emit(&Event::QueueFull {
                        id,
                        tenant,
                        load: inner.admission.load(),
                    });
                }
                return Err(e);
            }
        };
        inner.emit(&Event::Started {
            id,
            language: context.language,
            backend: context.backend,
            tenant,
            request,
            spec: &spec,
            queue_wait: queued_at.elapsed(),
            load: inner.admission.load(),
        });
        let job = pipeline::Job {
            id,
            request,
            valid: &valid,
            spec: &spec,
            tenant,
        };
        let mut result = pipeline::execute(inner, &job, io).await;
        result.policy_fingerprint = Some(spec.policy_fingerprint.clone());
        // The slot is given back before `Finished`, so the load it reports is the one after.
        drop(slot);
        Ok(finish(&mut watch, result))
    }

    fn finish(
        &self,
        result: ExecutionResult,
        tenant: Option<&str>,
        request: &ExecutionRequest,
        begun: Instant,
    ) -> ExecutionResult {
        for ev in &result.security_events {
            self.inner.emit(&Event::Security {
                id: &result.id,
                tenant,
                event: ev,
            });
        }
        self.inner.emit(&Event::Finished {
            result: &result,
            tenant,
            request,
            elapsed: begun.elapsed(),
            load: self.inner.admission.load(),
        });
        result
    }
}

/// Reports an execution whose future was dropped before it finished (`Event::Cancelled`).
struct Watch<'a> {
    inner: &'a Inner,
    id: &'a str,
    tenant: Option<&'a str>,
    begun: Instant,
    done: bool,
    stop: Option<crate::spec::StopSignal>,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(stop) = &self.stop {
                stop.fire();
            }
            self.inner.emit(&Event::Cancelled {
                id: self.id,
                tenant: self.tenant,
                elapsed: self.begun.elapsed(),
                load: self.inner.admission.load(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
