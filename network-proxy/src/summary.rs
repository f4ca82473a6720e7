//! The per-instance summary of decisions (what a run's result carries under `network`), and the
//! sink that hands each decision to the caller without ever blocking the proxy.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::decision::Decision;

pub use vana_sandbox_core::network::{HostSummary, Summary, MAX_SUMMARY_HOSTS};

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
    use crate::decision::{Decision, Method, Verdict};
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

    #[tokio::test]
    async fn channel_sink_drops_when_full() {
        let (sink, mut rx) = DecisionSink::channel(1);
        let d = decision("a.test", Verdict::Allowed, 0, 0);
        assert!(sink.deliver(&d));
        assert!(!sink.deliver(&d));
        assert_eq!(rx.recv().await.unwrap(), d);
    }
}
