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
//! [`Observability`] bundles the four, with the [`Hooks`](hooks::Hooks) for facts that are not
//! engine events (warm pools, configuration; egress decisions and sessions are events), and
//! [`Observability::builder`] starts and wires the parts a host asks for in a few lines:
//!
//! ```no_run
//! # fn demo() -> Result<(), vana_sandbox_monitor::ObservabilityError> {
//! use vana_sandbox_monitor::{metrics::Metrics, Observability};
//!
//! let metrics = Metrics::new();
//! let obs = Observability::builder()
//!     .metrics(metrics.clone())
//!     .audit_log("/var/log/vana-sandbox")
//!     .on_finding(|f| eprintln!("[{}] {}", f.severity, f.explanation))
//!     .start()?;
//! // Engine::builder().monitor(Arc::new(obs.clone())) …, or the facade's
//! // `Sandbox::builder().observability(obs.clone())`.
//! # Ok(()) }
//! ```

pub mod alert;
pub mod audit;
mod bundle;
pub mod hooks;
pub mod metrics;
pub mod threat;
mod util;

pub use bundle::{Observability, ObservabilityBuilder, ObservabilityError};
pub use util::rfc3339;
