//! Observability for vana-sandbox: a tamper-evident [audit log](audit), [metrics] (Prometheus
//! text on demand, or a plain snapshot), a [threat detector](threat) and [alerts](alert).
//!
//! Each part is a [`Monitor`] (or feeds one) and none of them blocks or slows a run: every
//! `on_event` copies what it needs into a bounded queue (or an atomic) and returns; threads of
//! their own write files, evaluate rules and call webhooks; whatever cannot be queued is counted
//! and reported, never silently lost.
//!
//! ```no_run
//! # fn demo(engine_builder: vana_sandbox_core::EngineBuilder) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use vana_sandbox_monitor::{alert, audit::AuditLog, metrics::Metrics, threat::ThreatDetector};
//!
//! let metrics = Metrics::new();
//! let alerts = alert::Alerter::builder()
//!     .sink(Arc::new(alert::LogSink))
//!     .metrics(metrics.clone())
//!     .start()?;
//! let audit = AuditLog::builder("/var/log/vana-sandbox").metrics(metrics.clone()).start()?;
//! let threats = ThreatDetector::builder()
//!     .sink(alerts.clone())
//!     .sink(audit.clone())
//!     .metrics(metrics.clone())
//!     .start()?;
//! let engine = engine_builder
//!     .monitor(audit.clone())
//!     .monitor(metrics.monitor())
//!     .monitor(threats.clone())
//!     .monitor(alerts.clone())
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! [`Observability`] bundles the four, with the [`Hooks`](hooks::Hooks) for facts that do not
//! come through engine events yet (network decisions, sessions, warm pools, configuration).

pub mod alert;
pub mod audit;
pub mod hooks;
pub mod metrics;
pub mod threat;
mod util;

use std::sync::Arc;

use vana_sandbox_core::{Event, Monitor};

pub use util::rfc3339;

use hooks::{ConfigLoaded, Hooks, NetworkDecision, PoolEvent, SessionEvent};

/// The four parts together: one [`Monitor`] and one [`Hooks`] for the engine and the host.
/// Any part may be absent.
#[derive(Debug, Clone, Default)]
pub struct Observability {
    /// The metrics registry (read it with `snapshot()` / `render_prometheus()`).
    pub metrics: Option<metrics::Metrics>,
    /// The audit log.
    pub audit: Option<Arc<audit::AuditLog>>,
    /// The threat detector.
    pub threats: Option<Arc<threat::ThreatDetector>>,
    /// The alerter.
    pub alerts: Option<Arc<alert::Alerter>>,
}

impl Observability {
    /// The monitors to give the engine, one per part present.
    pub fn monitors(&self) -> Vec<Arc<dyn Monitor>> {
        let mut v: Vec<Arc<dyn Monitor>> = Vec::new();
        if let Some(a) = &self.audit {
            v.push(a.clone());
        }
        if let Some(m) = &self.metrics {
            v.push(m.monitor());
        }
        if let Some(t) = &self.threats {
            v.push(t.clone());
        }
        if let Some(a) = &self.alerts {
            v.push(a.clone());
        }
        v
    }

    fn hooks(&self) -> Vec<Arc<dyn Hooks>> {
        let mut v: Vec<Arc<dyn Hooks>> = Vec::new();
        if let Some(a) = &self.audit {
            v.push(a.clone());
        }
        if let Some(m) = &self.metrics {
            v.push(m.monitor());
        }
        if let Some(t) = &self.threats {
            v.push(t.clone());
        }
        v
    }
}

impl Monitor for Observability {
    fn on_event(&self, event: &Event<'_>) {
        if let Some(a) = &self.audit {
            a.on_event(event);
        }
        if let Some(m) = &self.metrics {
            metrics::MetricsMonitor::on_event_in(m, event);
        }
        if let Some(t) = &self.threats {
            t.on_event(event);
        }
        if let Some(a) = &self.alerts {
            a.on_event(event);
        }
    }
}

impl Hooks for Observability {
    fn on_network(&self, d: &NetworkDecision<'_>) {
        for h in self.hooks() {
            h.on_network(d);
        }
    }

    fn on_session(&self, s: &SessionEvent<'_>) {
        for h in self.hooks() {
            h.on_session(s);
        }
    }

    fn on_config(&self, c: &ConfigLoaded<'_>) {
        for h in self.hooks() {
            h.on_config(c);
        }
    }

    fn on_pool(&self, p: &PoolEvent) {
        for h in self.hooks() {
            h.on_pool(p);
        }
    }
}
