//! The per-instance summary of decisions (what a run's result carries under `network`), and the
//! sink that hands each decision to the caller without ever blocking the proxy.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::decision::{Decision, DenyReason, Verdict};

/// How many distinct hosts a summary lists; decisions for further hosts are counted in
/// [`Summary::hosts_dropped`] only.
pub const MAX_SUMMARY_HOSTS: usize = 256;

/// Counts over every decision of one proxy instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests and tunnels that went through.
    pub allowed: u64,
    /// Requests, tunnels and connections that were refused or cut short.
    pub denied: u64,
    /// Bytes from the sandbox to targets.
    pub bytes_up: u64,
    /// Bytes from targets to the sandbox.
    pub bytes_down: u64,
    /// Refusals by reason.
    pub denied_by_reason: BTreeMap<DenyReason, u64>,
    /// Per host (as normalised), at most [`MAX_SUMMARY_HOSTS`] of them.
    pub hosts: BTreeMap<String, HostSummary>,
    /// Decisions whose host was not listed because `hosts` was full.
    pub hosts_dropped: u64,
    /// Decisions the sink could not take (its channel was full or closed).
    pub events_dropped: u64,
}

/// Counts for one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    /// Requests and tunnels that went through.
    pub allowed: u64,
    /// Refused or cut short.
    pub denied: u64,
    /// Bytes up.
    pub bytes_up: u64,
    /// Bytes down.
    pub bytes_down: u64,
}

impl Summary {
    /// Counts one decision.
    pub fn record(&mut self, decision: &Decision) {
        let allowed = decision.verdict == Verdict::Allowed;
        if let Verdict::Denied(reason) = decision.verdict {
            *self.denied_by_reason.entry(reason).or_default() += 1;
        }
        let count = |allowed_count: &mut u64, denied_count: &mut u64| {
            if allowed {
                *allowed_count += 1;
            } else {
                *denied_count += 1;
            }
        };
        count(&mut self.allowed, &mut self.denied);
        self.bytes_up = self.bytes_up.saturating_add(decision.bytes_up);
        self.bytes_down = self.bytes_down.saturating_add(decision.bytes_down);
        if decision.host.is_empty() {
            return;
        }
        let listed = self.hosts.contains_key(&decision.host);
        if !listed && self.hosts.len() >= MAX_SUMMARY_HOSTS {
            self.hosts_dropped += 1;
            return;
        }
        let host = self.hosts.entry(decision.host.clone()).or_default();
        count(&mut host.allowed, &mut host.denied);
        host.bytes_up = host.bytes_up.saturating_add(decision.bytes_up);
        host.bytes_down = host.bytes_down.saturating_add(decision.bytes_down);
    }
}

/// Where decisions go, besides the summary. The proxy never waits on it: a function sink is
/// called inline and must return quickly (never block); a channel sink drops a decision when its
/// channel is full, and counts it in [`Summary::events_dropped`].
#[derive(Clone, Default)]
pub struct DecisionSink {
    kind: SinkKind,
}

#[derive(Clone, Default)]
enum SinkKind {
    #[default]
    None,
    Fn(Arc<dyn Fn(&Decision) + Send + Sync>),
    Channel(mpsc::Sender<Decision>),
}

impl DecisionSink {
    /// Decisions go to the summary only.
    pub fn none() -> DecisionSink {
        DecisionSink::default()
    }

    /// Calls `f` with each decision, inline on the proxy's task: `f` must not block.
    pub fn from_fn(f: impl Fn(&Decision) + Send + Sync + 'static) -> DecisionSink {
        DecisionSink {
            kind: SinkKind::Fn(Arc::new(f)),
        }
    }

    /// A bounded channel of decisions; when it is full, decisions are dropped (and counted).
    pub fn channel(capacity: usize) -> (DecisionSink, mpsc::Receiver<Decision>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            DecisionSink {
                kind: SinkKind::Channel(tx),
            },
            rx,
        )
    }

    /// Hands over one decision; `false` when it was dropped.
    pub(crate) fn deliver(&self, decision: &Decision) -> bool {
        match &self.kind {
            SinkKind::None => true,
            SinkKind::Fn(f) => {
                f(decision);
                true
            }
            SinkKind::Channel(tx) => tx.try_send(decision.clone()).is_ok(),
        }
    }
}

impl fmt::Debug for DecisionSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SinkKind::None => "none",
            SinkKind::Fn(_) => "fn",
            SinkKind::Channel(_) => "channel",
        };
        f.debug_struct("DecisionSink").field("kind", &kind).finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::addr::AddressClass;
    use crate::decision::Method;
    use std::time::{Duration, SystemTime};

    fn decision(host: &str, verdict: Verdict, up: u64, down: u64) -> Decision {
        Decision {
            host: host.into(),
            port: 443,
            method: Method::Connect,
            address: None,
            bytes_up: up,
            bytes_down: down,
            verdict,
            at: SystemTime::now(),
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn summary_counts_and_serialises() {
        let mut s = Summary::default();
        s.record(&decision("a.test", Verdict::Allowed, 10, 100));
        s.record(&decision("a.test", Verdict::Allowed, 1, 2));
        let private = DenyReason::Address(AddressClass::Private);
        s.record(&decision("b.test", Verdict::Denied(private), 0, 0));
        s.record(&decision(
            "",
            Verdict::Denied(DenyReason::HeaderTimeout),
            0,
            0,
        ));
        assert_eq!(
            (s.allowed, s.denied, s.bytes_up, s.bytes_down),
            (2, 2, 11, 102)
        );
        assert_eq!(s.hosts["a.test"].allowed, 2);
        assert_eq!(s.hosts["b.test"].denied, 1);
        assert_eq!(s.hosts.len(), 2);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["denied_by_reason"]["private_address"], 1);
        assert_eq!(v["denied_by_reason"]["header_timeout"], 1);
        assert_eq!(v["hosts"]["a.test"]["bytes_down"], 102);
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn summary_bounds_hosts() {
        let mut s = Summary::default();
        for i in 0..(MAX_SUMMARY_HOSTS + 10) {
            s.record(&decision(&format!("h{i}.test"), Verdict::Allowed, 0, 0));
        }
        assert_eq!(s.hosts.len(), MAX_SUMMARY_HOSTS);
        assert_eq!(s.hosts_dropped, 10);
        assert_eq!(s.allowed, (MAX_SUMMARY_HOSTS + 10) as u64);
    }

    #[tokio::test]
    async fn channel_sink_drops_when_full() {
        let (sink, mut rx) = DecisionSink::channel(1);
        let d = decision("a.test", Verdict::Allowed, 0, 0);
        assert!(sink.deliver(&d));
        assert!(!sink.deliver(&d));
        assert_eq!(rx.recv().await.unwrap(), d);
    }
}
