//! Alerts: findings of the threat detector and operational thresholds (queue depth, a full
//! queue, capacity, error rate, sandbox errors) become [`Alert`]s, deduplicated (same rule and
//! subject within a window: one alert, then one summary with a count), rate-limited, and
//! delivered to sinks: the log, a webhook, a closure.
//!
//! The [`Alerter`] is a [`Monitor`] (for thresholds) and a [`FindingSink`] (for findings); both
//! only offer a small message to a bounded queue and return. Its thread does the rest; a slow
//! sink slows that thread only, and the webhook has its own thread besides.

mod dedup;
mod sinks;
mod thresholds;
mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use vana_sandbox_core::{Event, Load, Monitor, Status};

pub use sinks::{AlertSink, CallbackSink, LogSink};
pub use thresholds::{CountThreshold, RateThreshold, Thresholds};
pub use webhook::{WebhookConfig, WebhookError, WebhookSink, WebhookStats};

use crate::metrics::{names, Metrics};
use crate::threat::{Finding, FindingSink, Severity};
use crate::util::{rfc3339, Inbox, Next, Throttle};
use dedup::{Dedup, RateLimit};
use thresholds::{Breach, ThresholdState};

/// What raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A finding of the threat detector.
    Finding,
    /// An operational threshold.
    Threshold,
}

/// One alert, as sinks receive it (and as the webhook's JSON body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The finding's rule, or the threshold (`queue_depth`, `queue_full`, `capacity`,
    /// `error_rate`, `sandbox_errors`).
    pub rule: String,
    /// Finding or threshold.
    pub kind: AlertKind,
    /// Whom it is about: the tenant (`-` without one) for findings, `engine` for thresholds.
    pub subject: String,
    /// Severity.
    pub severity: Severity,
    /// What happened, in words.
    pub summary: String,
    /// Occurrences this alert stands for.
    pub count: u64,
    /// A summary of repeats after an alert already sent in the same window.
    pub repeat: bool,
    /// First occurrence (RFC 3339).
    pub first_seen: String,
    /// Latest occurrence (RFC 3339).
    pub last_seen: String,
    /// The (latest) finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<Finding>,
    /// The value that crossed a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

impl Alert {
    fn from_finding(f: &Finding, now: &str) -> Self {
        Self {
            rule: f.rule.clone(),
            kind: AlertKind::Finding,
            subject: f.tenant.clone().unwrap_or_else(|| "-".into()),
            severity: f.severity,
            summary: f.explanation.clone(),
            count: 1,
            repeat: false,
            first_seen: now.to_string(),
            last_seen: now.to_string(),
            finding: Some(f.clone()),
            value: None,
            threshold: None,
        }
    }

    fn from_breach(b: Breach, now: &str) -> Self {
        Self {
            rule: b.rule.to_string(),
            kind: AlertKind::Threshold,
            subject: "engine".into(),
            severity: b.severity,
            summary: b.summary,
            count: 1,
            repeat: false,
            first_seen: now.to_string(),
            last_seen: now.to_string(),
            finding: None,
            value: Some(b.value),
            threshold: Some(b.threshold),
        }
    }
}

/// Counters of an alerter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertStats {
    /// Alerts sent to the sinks.
    pub sent: u64,
    /// Occurrences folded into an alert already sent.
    pub suppressed: u64,
    /// Alerts the rate limit refused.
    pub rate_limited: u64,
    /// Inputs dropped because the queue was full.
    pub queue_full: u64,
    /// Deliveries a sink refused or failed.
    pub sink_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    suppressed: AtomicU64,
    rate_limited: AtomicU64,
    queue_full: AtomicU64,
    sink_failures: AtomicU64,
}

enum Input {
    Finding(Box<Finding>),
    Load(Load),
    QueueFull(Load),
    Finished(Status, Load),
    Flush(SyncSender<()>),
}

/// Errors of starting an alerter.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A setting is out of range.
    #[error("invalid alert setting: {0}")]
    Config(&'static str),
    /// The thread could not be started.
    #[error("cannot start the alert thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Builds an [`Alerter`].
pub struct AlertBuilder {
    sinks: Vec<Arc<dyn AlertSink>>,
    thresholds: Thresholds,
    window: Duration,
    per_minute: u32,
    min_severity: Severity,
    queue: usize,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for AlertBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertBuilder")
            .field("sinks", &self.sinks.len())
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl AlertBuilder {
    /// Adds a sink.
    pub fn sink(mut self, sink: Arc<dyn AlertSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// The operational thresholds (default: [`Thresholds::default`]).
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// Repeats of one rule and subject within this window are folded (default 5 min).
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// At most this many alerts a minute in all (default 60).
    pub fn max_per_minute(mut self, n: u32) -> Self {
        self.per_minute = n;
        self
    }

    /// Findings below this severity are not alerted (default `low`).
    pub fn min_severity(mut self, s: Severity) -> Self {
        self.min_severity = s;
        self
    }

    /// Inputs the queue holds before it drops (default 1024).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// Count alerts in `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether [`metrics`](Self::metrics) was given.
    pub(crate) fn has_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// Starts the alerter's thread.
    pub fn start(self) -> Result<Arc<Alerter>, AlertError> {
        if self.queue == 0 || self.per_minute == 0 || self.window.is_zero() {
            return Err(AlertError::Config(
                "queue_capacity, max_per_minute and dedup_window must be above zero",
            ));
        }
        let (tx, rx) = mpsc::sync_channel::<Input>(self.queue);
        let watch_load =
            self.thresholds.queue_depth.is_some() || self.thresholds.capacity.is_some();
        let counters = Arc::new(Counters::default());
        let mut worker = Worker {
            sinks: self.sinks,
            thresholds: ThresholdState::new(self.thresholds),
            dedup: Dedup::new(self.window),
            rate: RateLimit::new(self.per_minute),
            min_severity: self.min_severity,
            counters: counters.clone(),
            metrics: self.metrics.clone(),
            throttle: Throttle::new(Duration::from_secs(60)),
        };
        let tick = (self.window / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
        std::thread::Builder::new()
            .name("vana-alerts".into())
            .spawn(move || {
                let mut inbox = Inbox::new(rx);
                let mut last_tick = Instant::now();
                loop {
                    match inbox.next(tick) {
                        Next::Item(input) => worker.take(input),
                        // Under steady load the queue drains often but is never idle.
                        Next::Drained | Next::Idle => {
                            if last_tick.elapsed() >= tick {
                                last_tick = Instant::now();
                                worker.tick();
                            }
                        }
                        Next::Closed => return,
                    }
                }
            })
            .map_err(AlertError::Thread)?;
        Ok(Arc::new(Alerter {
            tx,
            counters,
            metrics: self.metrics,
            watch_load,
        }))
    }
}

/// Turns findings and thresholds into deduplicated, rate-limited alerts for its sinks.
pub struct Alerter {
    tx: SyncSender<Input>,
    counters: Arc<Counters>,
    metrics: Option<Metrics>,
    /// Whether a threshold looks at the load (otherwise load changes are not even sent).
    watch_load: bool,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Alerter {
    /// A builder: no sinks, default thresholds, a 5-minute dedup window, 60 alerts a minute.
    pub fn builder() -> AlertBuilder {
        AlertBuilder {
            sinks: Vec::new(),
            thresholds: Thresholds::default(),
            window: Duration::from_secs(300),
            per_minute: 60,
            min_severity: Severity::Low,
            queue: 1024,
            metrics: None,
        }
    }

    fn send(&self, input: Input) {
        if self.tx.try_send(input).is_err() {
            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.count(names::ALERTS_DROPPED, &[("reason", "queue_full")], 1);
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> AlertStats {
        let c = &self.counters;
        AlertStats {
            sent: c.sent.load(Ordering::Relaxed),
            suppressed: c.suppressed.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            queue_full: c.queue_full.load(Ordering::Relaxed),
            sink_failures: c.sink_failures.load(Ordering::Relaxed),
        }
    }

    /// Waits until every input offered so far was handled and handed to the sinks (or
    /// `timeout` passes). A webhook delivers later, on its own thread.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack, done) = mpsc::sync_channel(1);
        let mut msg = Input::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

impl Monitor for Alerter {
    fn on_event(&self, event: &Event<'_>) {
        match event {
            Event::Queued { load, .. } | Event::Started { load, .. } if self.watch_load => {
                self.send(Input::Load(*load))
            }
            Event::Finished { result, load, .. } => {
                self.send(Input::Finished(result.status, *load))
            }
            Event::QueueFull { load, .. } => self.send(Input::QueueFull(*load)),
            _ => {}
        }
    }
}

impl FindingSink for Alerter {
    fn on_finding(&self, finding: &Finding) {
        self.send(Input::Finding(Box::new(finding.clone())));
    }
}

struct Worker {
    sinks: Vec<Arc<dyn AlertSink>>,
    thresholds: ThresholdState,
    dedup: Dedup,
    rate: RateLimit,
    min_severity: Severity,
    counters: Arc<Counters>,
    metrics: Option<Metrics>,
    throttle: Throttle,
}

impl Worker {
    fn take(&mut self, input: Input) {
        let now = rfc3339(SystemTime::now());
        let alerts: Vec<Alert> = match input {
            Input::Finding(f) => {
                if f.severity < self.min_severity {
                    return;
                }
                vec![Alert::from_finding(&f, &now)]
            }
            Input::Load(l) => self
                .thresholds
                .load(&l)
                .into_iter()
                .map(|b| Alert::from_breach(b, &now))
                .collect(),
            Input::QueueFull(l) => {
                let mut v: Vec<Alert> = self
                    .thresholds
                    .queue_full(&l)
                    .into_iter()
                    .map(|b| Alert::from_breach(b, &now))
                    .collect();
                v.extend(
                    self.thresholds
                        .load(&l)
                        .into_iter()
                        .map(|b| Alert::from_breach(b, &now)),
                );
                v
            }
            Input::Finished(s, l) => {
                let mut v = self.thresholds.finished(s, Instant::now());
                v.extend(self.thresholds.load(&l));
                v.into_iter().map(|b| Alert::from_breach(b, &now)).collect()
            }
            Input::Flush(ack) => {
                self.tick();
                let _ = ack.send(());
                return;
            }
        };
        for a in alerts {
            let (out, folded) = self.dedup.offer(a, Instant::now());
            if folded > 0 {
                self.counters
                    .suppressed
                    .fetch_add(folded, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.count(names::ALERTS_SUPPRESSED, &[], folded);
                }
            }
            for a in out {
                self.dispatch(&a);
            }
        }
    }

    fn tick(&mut self) {
        for a in self.dedup.tick(Instant::now()) {
            self.dispatch(&a);
        }
    }

    fn dispatch(&mut self, alert: &Alert) {
        if !self.rate.allow(Instant::now()) {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.count(names::ALERTS_DROPPED, &[("reason", "rate_limited")], 1);
            }
            if let Some(n) = self.throttle.hit(Instant::now()) {
                tracing::warn!(
                    rule = %alert.rule,
                    refused_since_last_report = n,
                    refused_total = self.counters.rate_limited.load(Ordering::Relaxed),
                    "alert rate limit reached; alerts are counted but not sent"
                );
            }
            return;
        }
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.count(
                names::ALERTS,
                &[("rule", &alert.rule), ("severity", alert.severity.as_str())],
                1,
            );
        }
        for sink in &self.sinks {
            if !sink.deliver(alert) {
                self.counters.sink_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
