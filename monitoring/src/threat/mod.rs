//! The threat detector: turns what runs do (seccomp kills, guard reports, limit hits, egress
//! the proxy refused: [`Event::Network`]) and what they submit (static signs in the code) into
//! [`Finding`]s, by rules loaded from configuration ([`RuleSet`], built-in defaults in
//! `default_rules.toml`).
//!
//! [`ThreatDetector::on_event`] copies what it needs into a bounded queue and returns; the rules
//! run on the detector's thread ([`Analyzer`]), which hands findings to its [`FindingSink`]s
//! (an [`Alerter`](crate::alert::Alerter), the [`AuditLog`](crate::audit::AuditLog), the
//! metrics, a closure).

mod analyzer;
mod finding;
mod rules;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vana_sandbox_core::{Event, Monitor};

pub use analyzer::{Analyzer, Signal, MAX_TRACKED_RUNS};
pub use finding::{Evidence, Finding, FindingSink, Severity, MAX_EVIDENCE};
pub use rules::{
    CodeTrigger, EgressTrigger, EventTrigger, LimitTrigger, RepeatTrigger, Rule, RuleConfig,
    RuleError, RuleSet, RulesConfig, Trigger, DEFAULT_RULES_TOML,
};

use crate::metrics::{names, Metrics};
use crate::util::{Inbox, Next, Throttle};

/// Errors of starting a detector.
#[derive(Debug, thiserror::Error)]
pub enum ThreatError {
    /// A setting is out of range.
    #[error("invalid threat detector setting: {0}")]
    Config(&'static str),
    /// The thread could not be started.
    #[error("cannot start the threat detector thread: {0}")]
    Thread(#[source] std::io::Error),
}

enum Msg {
    Signal(Box<Signal>),
    Flush(SyncSender<()>),
    Close,
}

/// Counters of a detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreatStats {
    /// Signals taken.
    pub signals: u64,
    /// Findings made.
    pub findings: u64,
    /// Signals dropped because the queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    signals: AtomicU64,
    findings: AtomicU64,
    dropped: AtomicU64,
}

/// Builds a [`ThreatDetector`].
pub struct ThreatBuilder {
    rules: RuleSet,
    sinks: Vec<Arc<dyn FindingSink>>,
    queue: usize,
    max_code_bytes: usize,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for ThreatBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreatBuilder")
            .field("rules", &self.rules.rules().len())
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

impl ThreatBuilder {
    /// The rules (default: [`RuleSet::builtin`]).
    pub fn rules(mut self, rules: RuleSet) -> Self {
        self.rules = rules;
        self
    }

    /// Adds a receiver of findings.
    pub fn sink(mut self, sink: Arc<dyn FindingSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Signals the queue holds before it drops (default 16384).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// Code beyond this many bytes is not scanned (default 1 MiB, the engine's own maximum).
    pub fn max_code_bytes(mut self, n: usize) -> Self {
        self.max_code_bytes = n;
        self
    }

    /// Count findings and dropped signals in `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The rules it will run.
    pub fn rule_set(&self) -> &RuleSet {
        &self.rules
    }

    /// Starts the detector's thread.
    pub fn start(self) -> Result<Arc<ThreatDetector>, ThreatError> {
        if self.queue == 0 {
            return Err(ThreatError::Config("queue_capacity must be at least 1"));
        }
        let (tx, rx) = mpsc::sync_channel::<Msg>(self.queue);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let mut sinks = self.sinks;
        if let Some(m) = &self.metrics {
            sinks.push(m.monitor());
        }
        let mut analyzer = Analyzer::new(self.rules);
        // Dropped when the thread ends: what `shutdown` waits for.
        let (exit_tx, exited) = mpsc::sync_channel::<()>(0);
        let thread = std::thread::Builder::new()
            .name("vana-threat".into())
            .spawn(move || {
                let _exit = exit_tx;
                let mut throttle = Throttle::new(Duration::from_secs(60));
                let mut reported = 0;
                let mut inbox = Inbox::new(rx);
                loop {
                    let msg = match inbox.next(Duration::from_secs(1)) {
                        Next::Item(m) => m,
                        // Under steady load the queue drains often but is never idle.
                        Next::Drained | Next::Idle => {
                            let dropped = c.dropped.load(Ordering::Relaxed);
                            if dropped > reported && throttle.hit(Instant::now()).is_some() {
                                tracing::warn!(
                                    dropped_total = dropped,
                                    "threat detector: its queue was full; signals were dropped (runs were not slowed)"
                                );
                                reported = dropped;
                            }
                            continue;
                        }
                        Next::Closed => return,
                    };
                    match msg {
                        Msg::Signal(s) => {
                            c.signals.fetch_add(1, Ordering::Relaxed);
                            for f in analyzer.observe(*s, Instant::now()) {
                                c.findings.fetch_add(1, Ordering::Relaxed);
                                for sink in &sinks {
                                    sink.on_finding(&f);
                                }
                            }
                        }
                        Msg::Flush(ack) => {
                            let _ = ack.send(());
                        }
                        Msg::Close => return,
                    }
                }
            })
            .map_err(ThreatError::Thread)?;
        Ok(Arc::new(ThreatDetector {
            tx,
            counters,
            thread: Mutex::new(Some((thread, exited))),
            max_code_bytes: self.max_code_bytes,
            metrics: self.metrics,
        }))
    }
}

/// The threat detector: a [`Monitor`] whose rules run on their own thread.
pub struct ThreatDetector {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    /// The thread and what tells that it ended.
    thread: Mutex<Option<(JoinHandle<()>, Receiver<()>)>>,
    max_code_bytes: usize,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for ThreatDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreatDetector")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ThreatDetector {
    /// A builder with the built-in rules and no sinks.
    pub fn builder() -> ThreatBuilder {
        ThreatBuilder {
            rules: RuleSet::builtin(),
            sinks: Vec::new(),
            queue: 16384,
            max_code_bytes: 1 << 20,
            metrics: None,
        }
    }

    fn send(&self, s: Signal) {
        match self.tx.try_send(Msg::Signal(Box::new(s))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.count(names::THREAT_DROPPED, &[], 1);
                }
            }
        }
    }

    /// Waits until every signal offered so far has been evaluated and its findings delivered
    /// (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack, done) = mpsc::sync_channel(1);
        self.control(Msg::Flush(ack), deadline)
            && done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok()
    }

    /// Sends a control message, waiting for room until `deadline`.
    fn control(&self, msg: Msg, deadline: Instant) -> bool {
        let mut msg = msg;
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
    }

    /// Evaluates every signal offered so far, delivers its findings, and stops the thread
    /// (waiting at most `timeout`); `true` when it stopped. Signals offered later are counted
    /// as dropped. Dropping the detector does the same with a 5 s wait, so that the findings of
    /// the last runs still reach the sinks (an audit log held only by the detector is closed
    /// after them).
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        let Some((thread, exited)) = guard.take() else {
            return true;
        };
        if !self.control(Msg::Close, deadline) {
            // Full until the deadline: leave the thread to end at the channel's end.
            return false;
        }
        match exited.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                true
            }
            Ok(()) | Err(RecvTimeoutError::Timeout) => false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> ThreatStats {
        ThreatStats {
            signals: self.counters.signals.load(Ordering::Relaxed),
            findings: self.counters.findings.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }

    fn bounded(&self, code: &str) -> String {
        if code.len() <= self.max_code_bytes {
            return code.to_string();
        }
        let mut end = self.max_code_bytes;
        while !code.is_char_boundary(end) {
            end -= 1;
        }
        code[..end].to_string()
    }
}

impl Drop for ThreatDetector {
    fn drop(&mut self) {
        // Otherwise the thread ends at the channel's end once this handle is gone.
        self.shutdown(Duration::from_secs(5));
    }
}

impl Monitor for ThreatDetector {
    fn on_event(&self, event: &Event<'_>) {
        let signal = match event {
            Event::Started {
                id,
                language,
                tenant,
                request,
                ..
            } => Signal::Started {
                id: id.to_string(),
                tenant: tenant.map(str::to_string),
                language: language.to_string(),
                code: self.bounded(&request.code),
            },
            Event::Security { id, event, .. } => Signal::Security {
                id: id.to_string(),
                event: (*event).clone(),
            },
            Event::LimitHit { id, limit, .. } => Signal::Limit {
                id: id.to_string(),
                limit: *limit,
            },
            Event::Finished { result, .. } => Signal::Finished {
                id: result.id.clone(),
            },
            Event::Cancelled { id, .. } => Signal::Finished { id: id.to_string() },
            // Only refusals can make findings: allowed traffic is not queued at all.
            Event::Network {
                id,
                tenant,
                decision,
            } if !decision.verdict.is_allowed() => Signal::Network {
                id: id.to_string(),
                tenant: tenant.map(str::to_string),
                decision: (*decision).clone(),
            },
            _ => return,
        };
        self.send(signal);
    }
}
