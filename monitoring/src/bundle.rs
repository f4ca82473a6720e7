//! [`Observability`]: the audit log, metrics, threat detector and alerter as one [`Monitor`]
//! and one [`Hooks`], and [`ObservabilityBuilder`], which starts the parts a host asks for and
//! wires them to each other (findings go to the audit log, the alerter and the metrics; every
//! part counts in the one metrics registry).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vana_sandbox_core::{Event, Monitor};

use crate::alert::{self, AlertBuilder, AlertSink, Alerter, WebhookConfig, WebhookSink};
use crate::audit::{self, AuditBuilder, AuditLog};
use crate::hooks::{ConfigKind, ConfigLoaded, Hooks, PoolEvent};
use crate::metrics::{self, Metrics};
use crate::threat::{self, Finding, FindingSink, RuleSet, ThreatDetector};

/// Errors of starting an [`Observability`] bundle.
#[derive(Debug, thiserror::Error)]
pub enum ObservabilityError {
    /// The metrics registry could not be set up.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The audit log could not be started (a short key, a directory in use, …).
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// The threat rules could not be loaded.
    #[error(transparent)]
    Rules(#[from] threat::RuleError),
    /// The threat detector could not be started.
    #[error(transparent)]
    Threat(#[from] threat::ThreatError),
    /// The alerter could not be started.
    #[error(transparent)]
    Alert(#[from] alert::AlertError),
    /// A webhook's configuration was refused.
    #[error(transparent)]
    Webhook(#[from] alert::WebhookError),
}

/// The four parts together: one [`Monitor`] for the engine (its events, egress decisions and
/// sessions included) and one [`Hooks`] for the host (configuration, warm pools).
/// Any part may be absent. Cheap to clone (handles).
#[derive(Debug, Clone, Default)]
pub struct Observability {
    /// The metrics registry (read it with `snapshot()` / `render_prometheus()`).
    pub metrics: Option<Metrics>,
    /// The audit log.
    pub audit: Option<Arc<AuditLog>>,
    /// The threat detector.
    pub threats: Option<Arc<ThreatDetector>>,
    /// The alerter.
    pub alerts: Option<Arc<Alerter>>,
}

impl Observability {
    /// A builder: nothing on until asked for.
    pub fn builder() -> ObservabilityBuilder {
        ObservabilityBuilder::default()
    }

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

    /// Whether no part is present.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_none()
            && self.audit.is_none()
            && self.threats.is_none()
            && self.alerts.is_none()
    }

    fn hooks(&self) -> Vec<Arc<dyn Hooks>> {
        let mut v: Vec<Arc<dyn Hooks>> = Vec::new();
        if let Some(a) = &self.audit {
            v.push(a.clone());
        }
        if let Some(m) = &self.metrics {
            v.push(m.monitor());
        }
        v
    }

    /// Reports a configuration that took effect (a `config_loaded` audit record): `kind`,
    /// where it came from (a path, `preset:strict`, `builtin`) and its fingerprint.
    pub fn config_loaded(&self, kind: ConfigKind, source: &str, fingerprint: &str) {
        self.on_config(&ConfigLoaded {
            kind,
            source,
            fingerprint,
        });
    }

    /// Waits until every event offered so far has been evaluated by the detector, its findings
    /// and the thresholds handed to the alert sinks, and the audit log written and synced (or
    /// `timeout` passes); `true` when all of it was. Webhooks deliver on their own threads.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        // In the order findings travel: detector → alerter and audit log.
        let mut ok = self.threats.as_ref().is_none_or(|t| t.flush(left()));
        ok &= self.alerts.as_ref().is_none_or(|a| a.flush(left()));
        ok &= self.audit.as_ref().is_none_or(|a| a.flush(left()));
        ok
    }

    /// [`flush`](Self::flush), then stops the detector and closes the audit log (its last line
    /// is `log_closed`); `true` when all of it happened within `timeout`. Events offered later
    /// are counted as dropped.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut ok = self.flush(left());
        ok &= self.threats.as_ref().is_none_or(|t| t.shutdown(left()));
        ok &= self.alerts.as_ref().is_none_or(|a| a.flush(left()));
        ok &= self.audit.as_ref().is_none_or(|a| a.shutdown(left()));
        ok
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

/// Where the detector's rules came from: what the `config_loaded` record names.
#[derive(Debug, Clone)]
struct Rules {
    set: RuleSet,
    source: String,
}

/// Builds an [`Observability`]: each part is off until a method asks for it, and
/// [`start`](Self::start) wires the parts that are on:
///
/// - every part counts in the one metrics registry (when [`metrics`](Self::metrics) is on);
/// - the detector's findings go to the audit log (a `finding` line), the alerter, the metrics
///   and every [`on_finding`](Self::on_finding) callback;
/// - a `config_loaded` line records the detector's rules (source and fingerprint).
///
/// ```no_run
/// # fn demo() -> Result<(), vana_sandbox_monitor::ObservabilityError> {
/// use vana_sandbox_monitor::{metrics::Metrics, Observability};
///
/// let obs = Observability::builder()
///     .metrics(Metrics::new())
///     .audit_log("/var/log/vana-sandbox")
///     .on_finding(|f| eprintln!("{}: {}", f.rule, f.explanation))
///     .start()?;
/// // engine_builder.monitor(std::sync::Arc::new(obs.clone())) …
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct ObservabilityBuilder {
    metrics: Option<Metrics>,
    audit: Option<AuditBuilder>,
    rules: Option<Rules>,
    finding_sinks: Vec<Arc<dyn FindingSink>>,
    alerts: Option<AlertBuilder>,
    webhooks: Vec<WebhookConfig>,
}

impl std::fmt::Debug for ObservabilityBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservabilityBuilder")
            .field("metrics", &self.metrics.is_some())
            .field("audit", &self.audit)
            .field("rules", &self.rules.as_ref().map(|r| &r.source))
            .field("finding_sinks", &self.finding_sinks.len())
            .field("alerts", &self.alerts)
            .field("webhooks", &self.webhooks.len())
            .finish()
    }
}

impl ObservabilityBuilder {
    /// Metrics in `metrics` (keep a clone to read them: `snapshot()`, or
    /// `render_prometheus()` for a registry made with `Metrics::with_prometheus()`).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// An audit log with every setting of `audit` (HMAC key, rotation size, …).
    pub fn audit(mut self, audit: AuditBuilder) -> Self {
        self.audit = Some(audit);
        self
    }

    /// An audit log in `dir` with the default settings.
    pub fn audit_log(self, dir: impl Into<PathBuf>) -> Self {
        self.audit(AuditLog::builder(dir))
    }

    /// The threat detector with the built-in rules (unless rules were given already).
    pub fn threat_detection(mut self) -> Self {
        if self.rules.is_none() {
            self.rules = Some(Rules {
                set: RuleSet::builtin(),
                source: "builtin".into(),
            });
        }
        self
    }

    /// The threat detector with `rules`; `source` says where they came from (a path,
    /// `builtin`) in the `config_loaded` audit record.
    pub fn threat_rules(mut self, rules: RuleSet, source: impl Into<String>) -> Self {
        self.rules = Some(Rules {
            set: rules,
            source: source.into(),
        });
        self
    }

    /// The threat detector with the rules of a file (TOML, or JSON for `.json`; it adds to
    /// or overrides the built-in rules).
    pub fn threat_rules_file(self, path: &Path) -> Result<Self, ObservabilityError> {
        let rules = RuleSet::from_path(path)?;
        Ok(self.threat_rules(rules, path.display().to_string()))
    }

    /// Calls `f` for every finding, on the detector's thread (return quickly; hand slow work
    /// to a thread of your own). Turns the detector on.
    pub fn on_finding(self, f: impl Fn(&Finding) + Send + Sync + 'static) -> Self {
        self.finding_sink(Arc::new(f))
    }

    /// Hands every finding to `sink`. Turns the detector on.
    pub fn finding_sink(mut self, sink: Arc<dyn FindingSink>) -> Self {
        self.finding_sinks.push(sink);
        self.threat_detection()
    }

    /// The alerter with every setting of `alerts` (sinks, thresholds, deduplication, rate).
    pub fn alerts(mut self, alerts: AlertBuilder) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Adds an alert sink (turns the alerter on with its defaults if it is not yet).
    pub fn alert_sink(mut self, sink: Arc<dyn AlertSink>) -> Self {
        self.alerts = Some(
            self.alerts
                .take()
                .unwrap_or_else(Alerter::builder)
                .sink(sink),
        );
        self
    }

    /// Adds a webhook alert sink (turns the alerter on); it counts its deliveries in the
    /// metrics.
    pub fn webhook(mut self, config: WebhookConfig) -> Self {
        self.webhooks.push(config);
        if self.alerts.is_none() {
            self.alerts = Some(Alerter::builder());
        }
        self
    }

    /// Whether nothing was asked for.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_none()
            && self.audit.is_none()
            && self.rules.is_none()
            && self.alerts.is_none()
    }

    /// Starts the parts asked for and wires them (see the type's documentation).
    pub fn start(self) -> Result<Observability, ObservabilityError> {
        let metrics = self.metrics;
        let with_metrics = |has: bool| metrics.clone().filter(|_| !has);

        let audit = match self.audit {
            Some(mut b) => {
                if let Some(m) = with_metrics(b.has_metrics()) {
                    b = b.metrics(m);
                }
                Some(b.start()?)
            }
            None => None,
        };

        let alerts = match self.alerts {
            Some(mut b) => {
                if let Some(m) = with_metrics(b.has_metrics()) {
                    b = b.metrics(m);
                }
                for w in self.webhooks {
                    b = b.sink(Arc::new(WebhookSink::with_metrics(w, metrics.clone())?));
                }
                Some(b.start()?)
            }
            None => None,
        };

        let threats = match &self.rules {
            Some(rules) => {
                let mut b = ThreatDetector::builder().rules(rules.set.clone());
                if let Some(m) = &metrics {
                    b = b.metrics(m.clone());
                }
                if let Some(a) = &audit {
                    b = b.sink(a.clone());
                }
                if let Some(a) = &alerts {
                    b = b.sink(a.clone());
                }
                for s in self.finding_sinks {
                    b = b.sink(s);
                }
                Some(b.start()?)
            }
            None => None,
        };

        let obs = Observability {
            metrics,
            audit,
            threats,
            alerts,
        };
        if let Some(rules) = &self.rules {
            obs.config_loaded(
                ConfigKind::ThreatRules,
                &rules.source,
                rules.set.fingerprint(),
            );
        }
        Ok(obs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn nothing_is_on_until_asked_for() {
        let b = Observability::builder();
        assert!(b.is_empty());
        let obs = b.start().unwrap();
        assert!(obs.is_empty());
        assert!(obs.monitors().is_empty());
        assert!(obs.flush(Duration::from_secs(1)));
    }

    #[test]
    fn a_finding_callback_turns_the_detector_on() {
        let obs = Observability::builder().on_finding(|_| {}).start().unwrap();
        assert!(obs.threats.is_some());
        assert!(obs.audit.is_none() && obs.alerts.is_none() && obs.metrics.is_none());
        assert!(obs.shutdown(Duration::from_secs(5)));
    }
}
