//! Metrics: counters, gauges and histograms of runs, queue, start-up, cache, limits, security
//! events, findings, alerts and the audit log (see [`names::METRICS`]).
//!
//! [`Metrics`] is a registry that implements the `metrics` crate's `Recorder`: it keeps every
//! series readable as a [`MetricsSnapshot`] (a plain map for the Python bindings) and, with the
//! `prometheus` feature, forwards each update to `metrics-exporter-prometheus`, whose text a
//! server returns from `GET /metrics` ([`Metrics::render_prometheus`]; no HTTP listener is
//! started). [`MetricsMonitor`] turns engine events into updates; it keeps no per-run state.

pub mod names;
mod registry;
mod snapshot;

use std::sync::Arc;

use metrics::{Key, Label, Recorder};
use vana_sandbox_core::network::DenyReason;
use vana_sandbox_core::{Event, Load, Monitor};

use crate::hooks::{Hooks, PoolEvent};
use crate::threat::{Finding, FindingSink};
use names::Kind;
use registry::{Forward, Registry};
pub use snapshot::{Bucket, HistogramValue, MetricsSnapshot, Series, Value};

/// Errors of setting up metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A global `metrics` recorder is already installed.
    #[error("a global metrics recorder is already installed")]
    GlobalTaken,
    /// The Prometheus exporter refused its configuration.
    #[cfg(feature = "prometheus")]
    #[error("prometheus exporter: {0}")]
    Prometheus(#[source] metrics_exporter_prometheus::BuildError),
}

/// A metrics registry. Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    #[cfg(feature = "prometheus")]
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("prometheus", &self.registry.forward().is_some())
            .finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "prometheus")]
struct Prometheus {
    recorder: metrics_exporter_prometheus::PrometheusRecorder,
    handle: metrics_exporter_prometheus::PrometheusHandle,
}

#[cfg(feature = "prometheus")]
impl Forward for Prometheus {
    fn recorder(&self) -> &dyn Recorder {
        &self.recorder
    }

    fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// A handle on the registry as an owned `Recorder` (for [`Metrics::install_global`]).
struct Shared(Arc<Registry>);

impl Recorder for Shared {
    fn describe_counter(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.0.describe_counter(k, u, d)
    }
    fn describe_gauge(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.0.describe_gauge(k, u, d)
    }
    fn describe_histogram(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.0.describe_histogram(k, u, d)
    }
    fn register_counter(&self, k: &Key, m: &metrics::Metadata<'_>) -> metrics::Counter {
        self.0.register_counter(k, m)
    }
    fn register_gauge(&self, k: &Key, m: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.0.register_gauge(k, m)
    }
    fn register_histogram(&self, k: &Key, m: &metrics::Metadata<'_>) -> metrics::Histogram {
        self.0.register_histogram(k, m)
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    // An empty tenant is no tenant (as in Prometheus, where an empty label is an absent one):
    // runs without one keep the series they had before tenants were labelled.
    let labels: Vec<Label> = labels
        .iter()
        .filter(|(k, v)| !(*k == "tenant" && v.is_empty()))
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

impl Metrics {
    /// A registry read through [`snapshot`](Self::snapshot) only.
    pub fn new() -> Self {
        Self::with_forward(None)
    }

    /// A registry that also renders Prometheus text ([`render_prometheus`](Self::render_prometheus)).
    #[cfg(feature = "prometheus")]
    pub fn with_prometheus() -> Result<Self, MetricsError> {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&names::SECONDS_BUCKETS)
            .map_err(MetricsError::Prometheus)?
            .build_recorder();
        let handle = recorder.handle();
        let mut m = Self::with_forward(Some(Box::new(Prometheus {
            recorder,
            handle: handle.clone(),
        })));
        m.prometheus = Some(handle);
        Ok(m)
    }

    fn with_forward(forward: Option<Box<dyn Forward>>) -> Self {
        let registry = Arc::new(Registry::new(forward));
        for m in names::METRICS {
            let unit = (m.kind == Kind::Histogram).then_some(metrics::Unit::Seconds);
            match m.kind {
                Kind::Counter => registry.describe_counter(m.name.into(), unit, m.help.into()),
                Kind::Gauge => registry.describe_gauge(m.name.into(), unit, m.help.into()),
                Kind::Histogram => registry.describe_histogram(m.name.into(), unit, m.help.into()),
            }
        }
        Self {
            registry,
            #[cfg(feature = "prometheus")]
            prometheus: None,
        }
    }

    /// A monitor that records engine events here.
    pub fn monitor(&self) -> Arc<MetricsMonitor> {
        Arc::new(MetricsMonitor {
            metrics: self.clone(),
        })
    }

    /// Every series now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            series: self.registry.series(),
        }
    }

    /// The Prometheus text exposition of every series (`text/plain; version=0.0.4`).
    #[cfg(feature = "prometheus")]
    pub fn render_prometheus(&self) -> Option<String> {
        self.prometheus.as_ref().map(|h| h.render())
    }

    /// The registry as a `metrics` recorder: a host records its own series here with
    /// `metrics::with_local_recorder(metrics.recorder(), || metrics::counter!("…").increment(1))`.
    pub fn recorder(&self) -> &dyn Recorder {
        &*self.registry
    }

    /// Makes this registry the process-wide `metrics` recorder, so that `metrics::counter!` and
    /// friends anywhere in the process land here (once per process).
    pub fn install_global(&self) -> Result<(), MetricsError> {
        metrics::set_global_recorder(Shared(self.registry.clone()))
            .map_err(|_| MetricsError::GlobalTaken)
    }

    pub(crate) fn count(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        self.registry.counter(&key(name, labels)).increment(n);
    }

    pub(crate) fn set(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.registry.gauge(&key(name, labels)).set(v);
    }

    pub(crate) fn add(&self, name: &'static str, labels: &[(&'static str, &str)], delta: f64) {
        self.registry.gauge(&key(name, labels)).add(delta);
    }

    pub(crate) fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.registry.histogram(&key(name, labels)).record(v);
    }

    /// Records an HTTP request a server answered: its route (a template such as
    /// `/v1/sessions/{id}/run`, never the raw path), status code, tenant (`None`: not
    /// authenticated) and duration.
    pub fn http_request(&self, route: &str, code: u16, tenant: Option<&str>, seconds: f64) {
        self.count(
            names::HTTP_REQUESTS,
            &[
                ("route", route),
                ("code", &code.to_string()),
                ("tenant", label(tenant)),
            ],
            1,
        );
        self.observe(names::HTTP_DURATION, &[("route", route)], seconds);
    }

    /// Adds `delta` to the open HTTP connections.
    pub fn http_connections(&self, delta: f64) {
        self.add(names::HTTP_CONNECTIONS, &[], delta);
    }

    /// Records a request refused by `tenant`'s `quota`.
    pub fn quota_rejection(&self, tenant: &str, quota: &str) {
        self.count(
            names::QUOTA_REJECTIONS,
            &[("tenant", tenant), ("quota", quota)],
            1,
        );
    }

    /// Sets the CPU seconds `tenant`'s runs used in the last hour.
    pub fn tenant_cpu(&self, tenant: &str, seconds: f64) {
        self.set(names::TENANT_CPU, &[("tenant", tenant)], seconds);
    }

    fn load(&self, load: &Load) {
        self.set(names::QUEUE_DEPTH, &[], load.queued as f64);
        self.set(names::ACTIVE_RUNS, &[], load.running as f64);
        self.set(names::CONCURRENCY, &[], load.max_concurrency as f64);
        self.set(names::QUEUE_CAPACITY, &[], load.max_queue as f64);
    }
}

/// Records engine events in a [`Metrics`] registry. Stateless: every value comes with its event.
#[derive(Debug, Clone)]
pub struct MetricsMonitor {
    metrics: Metrics,
}

impl MetricsMonitor {
    /// The registry it records in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Monitor for MetricsMonitor {
    fn on_event(&self, event: &Event<'_>) {
        Self::on_event_in(&self.metrics, event);
    }
}

impl MetricsMonitor {
    /// Records `event` in `m` (what [`Monitor::on_event`] does, without a monitor).
    pub fn on_event_in(m: &Metrics, event: &Event<'_>) {
        match event {
            Event::Queued { load, .. } => m.load(load),
            Event::Started {
                queue_wait, load, ..
            } => {
                m.observe(names::QUEUE_WAIT, &[], queue_wait.as_secs_f64());
                m.load(load);
            }
            Event::Ready {
                backend, startup, ..
            } => {
                m.observe(
                    names::STARTUP,
                    &[("backend", backend.as_str())],
                    startup.as_secs_f64(),
                );
            }
            Event::CompileCache { language, hit, .. } => m.count(
                names::COMPILE_CACHE,
                &[
                    ("language", language),
                    ("result", if *hit { "hit" } else { "miss" }),
                ],
                1,
            ),
            Event::PhaseFinished {
                phase, duration, ..
            } => m.observe(
                names::PHASE_DURATION,
                &[("phase", phase.as_str())],
                duration.as_secs_f64(),
            ),
            Event::LimitHit { limit, tenant, .. } => m.count(
                names::LIMIT_HITS,
                &[("limit", &limit.to_string()), ("tenant", label(*tenant))],
                1,
            ),
            Event::Security { event, tenant, .. } => m.count(
                names::SECURITY_EVENTS,
                &[
                    ("kind", event.kind.as_str()),
                    ("source", reporter(event.source)),
                    ("tenant", label(*tenant)),
                ],
                1,
            ),
            Event::Finished {
                result,
                elapsed,
                load,
                tenant,
                ..
            } => {
                let backend = result.backend.map_or("none", |b| b.as_str());
                m.count(
                    names::RUNS,
                    &[
                        ("status", result.status.as_str()),
                        ("language", &result.language),
                        ("backend", backend),
                        ("tenant", label(*tenant)),
                    ],
                    1,
                );
                if result.status != vana_sandbox_core::Status::Rejected {
                    m.observe(
                        names::RUN_DURATION,
                        &[("language", &result.language), ("backend", backend)],
                        elapsed.as_secs_f64(),
                    );
                }
                m.load(load);
            }
            Event::QueueFull { load, tenant, .. } => {
                m.count(names::QUEUE_REJECTIONS, &[("tenant", label(*tenant))], 1);
                m.load(load);
            }
            Event::Cancelled { load, tenant, .. } => {
                m.count(names::CANCELLED, &[("tenant", label(*tenant))], 1);
                m.load(load);
            }
            Event::Network {
                decision, tenant, ..
            } => {
                let reason = decision.verdict.reason().map_or("none", DenyReason::name);
                m.count(
                    names::NETWORK_DECISIONS,
                    &[
                        ("verdict", decision.verdict.name()),
                        ("reason", reason),
                        ("tenant", label(*tenant)),
                    ],
                    1,
                );
                m.count(
                    names::NETWORK_BYTES,
                    &[("direction", "up"), ("tenant", label(*tenant))],
                    decision.bytes_up,
                );
                m.count(
                    names::NETWORK_BYTES,
                    &[("direction", "down"), ("tenant", label(*tenant))],
                    decision.bytes_down,
                );
            }
            Event::SessionOpened {
                backend, tenant, ..
            } => {
                m.count(
                    names::SESSIONS_OPENED,
                    &[("backend", backend.as_str()), ("tenant", label(*tenant))],
                    1,
                );
                m.add(names::ACTIVE_SESSIONS, &[], 1.0);
            }
            Event::SessionClosed { reason, tenant, .. } => {
                m.count(
                    names::SESSIONS_CLOSED,
                    &[("reason", reason.as_str()), ("tenant", label(*tenant))],
                    1,
                );
                m.add(names::ACTIVE_SESSIONS, &[], -1.0);
            }
            _ => {}
        }
    }
}

/// The `tenant` label: the tenant's name; callers without one get no label.
fn label(tenant: Option<&str>) -> &str {
    tenant.unwrap_or("")
}

fn reporter(r: vana_sandbox_core::Reporter) -> &'static str {
    match r {
        vana_sandbox_core::Reporter::Sandbox => "sandbox",
        vana_sandbox_core::Reporter::Program => "program",
    }
}

impl Hooks for MetricsMonitor {
    fn on_pool(&self, p: &PoolEvent) {
        match p {
            PoolEvent::Size { backend, size } => self.metrics.set(
                names::POOL_SIZE,
                &[("backend", backend.as_str())],
                *size as f64,
            ),
            PoolEvent::Lookup { backend, hit } => self.metrics.count(
                names::POOL_LOOKUPS,
                &[
                    ("backend", backend.as_str()),
                    ("result", if *hit { "hit" } else { "miss" }),
                ],
                1,
            ),
        }
    }
}

impl FindingSink for MetricsMonitor {
    fn on_finding(&self, f: &Finding) {
        self.metrics.count(
            names::FINDINGS,
            &[
                ("rule", &f.rule),
                ("severity", f.severity.as_str()),
                ("tenant", label(f.tenant.as_deref())),
            ],
            1,
        );
    }
}
