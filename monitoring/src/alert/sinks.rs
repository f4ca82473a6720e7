//! Where alerts go: the log (`tracing`), a Rust closure (the Python bindings bridge one), and a
//! webhook ([`WebhookSink`](super::WebhookSink)).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Alert;
use crate::threat::Severity;

/// Receives alerts, on the alerter's thread. A sink that may be slow (a network call) hands the
/// alert to its own thread and returns.
pub trait AlertSink: Send + Sync {
    /// A short name for metrics and logs (`log`, `webhook`, `callback`).
    fn name(&self) -> &str;
    /// Delivers one alert; `false` when it could not (counted by the alerter).
    fn deliver(&self, alert: &Alert) -> bool;
}

/// Writes alerts to the log through `tracing` (target `vana_sandbox::alert`): `error` for high
/// and critical, `warn` for medium, `info` below.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl AlertSink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn deliver(&self, a: &Alert) -> bool {
        let run = a.finding.as_ref().and_then(|f| f.run_id.as_deref());
        let explanation = a
            .finding
            .as_ref()
            .map(|f| f.explanation.as_str())
            .unwrap_or("");
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    target: "vana_sandbox::alert",
                    rule = %a.rule,
                    subject = %a.subject,
                    severity = %a.severity,
                    count = a.count,
                    repeat = a.repeat,
                    run,
                    explanation,
                    "{}",
                    a.summary
                )
            };
        }
        match a.severity {
            Severity::High | Severity::Critical => log!(error),
            Severity::Medium => log!(warn),
            Severity::Low | Severity::Info => log!(info),
        }
        true
    }
}

/// Calls a closure for each alert. A panic in the closure is caught and counted; the alerter
/// goes on.
pub struct CallbackSink {
    callback: Box<dyn Fn(&Alert) + Send + Sync>,
    panics: AtomicU64,
}

impl std::fmt::Debug for CallbackSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSink")
            .field("panics", &self.panics.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CallbackSink {
    /// A sink that calls `callback`.
    pub fn new(callback: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        Self {
            callback: Box::new(callback),
            panics: AtomicU64::new(0),
        }
    }

    /// Calls that panicked.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
}

impl AlertSink for CallbackSink {
    fn name(&self) -> &str {
        "callback"
    }

    fn deliver(&self, alert: &Alert) -> bool {
        match catch_unwind(AssertUnwindSafe(|| (self.callback)(alert))) {
            Ok(()) => true,
            Err(_) => {
                self.panics.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}
