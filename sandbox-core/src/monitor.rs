//! The monitor role: observers of every step. A monitor never blocks execution.

use std::time::Duration;

use crate::capabilities::BackendKind;
use crate::events::{Phase, SecurityEvent};
use crate::limits::LimitKind;
use crate::request::ExecutionRequest;
use crate::result::{ExecutionResult, Status};
use crate::spec::SandboxSpec;

/// The engine's load when an event happened: what queue-depth and capacity observers need,
/// read from the admission counters (exact, not sampled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Executions holding a slot.
    pub running: usize,
    /// Executions waiting for a slot.
    pub queued: usize,
    /// Slots in all (`max_concurrency`).
    pub max_concurrency: usize,
    /// Places in the queue (`max_queue`).
    pub max_queue: usize,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// Its owner closed it.
    Closed,
    /// It was idle longer than the policy's idle timeout.
    IdleTimeout,
    /// It reached the policy's maximum lifetime.
    Lifetime,
    /// Its last handle was dropped without closing it.
    Dropped,
}

impl SessionEnd {
    /// The wire name (what it serialises as).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Closed => "closed",
            SessionEnd::IdleTimeout => "idle_timeout",
            SessionEnd::Lifetime => "lifetime",
            SessionEnd::Dropped => "dropped",
        }
    }
}

/// Something that happened to an execution or a session.
///
/// Non-exhaustive: monitors outside this crate keep a wildcard arm, so that new kinds of event
/// (sessions, network decisions) can be added without breaking them.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Accepted and waiting for a slot.
    Queued {
        /// Execution id.
        id: &'a str,
        /// The load once this execution joined the queue.
        load: Load,
    },
    /// Got a slot and started.
    Started {
        /// Execution id.
        id: &'a str,
        /// Canonical language.
        language: &'a str,
        /// Backend.
        backend: BackendKind,
        /// The tenant the host vouched for ([`Engine::execute_as`](crate::Engine::execute_as)).
        tenant: Option<&'a str>,
        /// The request as given (its code, files, arguments; validated).
        request: &'a ExecutionRequest,
        /// What the policy decided for it (limits, runtime, network, fingerprint).
        spec: &'a SandboxSpec,
        /// Time spent waiting for a slot (zero when one was free).
        queue_wait: Duration,
        /// The load once this execution holds its slot.
        load: Load,
    },
    /// The instance was created and the sources staged: the sandbox's start-up is over and
    /// the first process is about to be handed to the backend.
    Ready {
        /// Execution id.
        id: &'a str,
        /// Backend.
        backend: BackendKind,
        /// From asking the backend for an instance to the files being in place.
        startup: Duration,
    },
    /// The compile cache was consulted for a compiled language (only when a cache is
    /// configured and the policy's cache scope is not `off`).
    CompileCache {
        /// Execution id.
        id: &'a str,
        /// Canonical language.
        language: &'a str,
        /// Whether a checked artifact was found (the compiler did not run).
        hit: bool,
    },
    /// A step finished.
    PhaseFinished {
        /// Execution id.
        id: &'a str,
        /// Which step.
        phase: Phase,
        /// Its status.
        status: Status,
        /// Its wall-clock time.
        duration: Duration,
    },
    /// A limit was hit.
    LimitHit {
        /// Execution id.
        id: &'a str,
        /// The tenant the host vouched for.
        tenant: Option<&'a str>,
        /// Which limit (timeout, memory, output, processes).
        limit: LimitKind,
    },
    /// A security event.
    Security {
        /// Execution id.
        id: &'a str,
        /// The tenant the host vouched for.
        tenant: Option<&'a str>,
        /// The event.
        event: &'a SecurityEvent,
    },
    /// The execution finished (any status, including `rejected`).
    Finished {
        /// The full result.
        result: &'a ExecutionResult,
        /// The tenant the host vouched for.
        tenant: Option<&'a str>,
        /// The request as given (also for `rejected`: what was refused).
        request: &'a ExecutionRequest,
        /// From `execute` being called to the result: validation, queue, every step.
        elapsed: Duration,
        /// The load once this execution gave its slot back.
        load: Load,
    },
    /// The queue was full: `execute` returned [`EngineError::QueueFull`](crate::EngineError)
    /// and nothing else is reported for this id.
    QueueFull {
        /// Execution id.
        id: &'a str,
        /// The tenant the host vouched for.
        tenant: Option<&'a str>,
        /// The load that refused it.
        load: Load,
    },
    /// The egress proxy decided about a request or connection of a run.
    Network {
        /// Execution id.
        id: &'a str,
        /// The tenant the host vouched for.
        tenant: Option<&'a str>,
        /// The decision.
        decision: &'a crate::network::Decision,
    },
    /// A session opened: its sandbox exists and its kernel is ready.
    SessionOpened {
        /// Session id.
        id: &'a str,
        /// The tenant the host vouched for.
        tenant: Option<&'a str>,
        /// Backend.
        backend: BackendKind,
        /// What the policy decided for the session (its memory, disk and process limits).
        spec: &'a SandboxSpec,
    },
    /// A session ended; nothing of it is left.
    SessionClosed {
        /// Session id.
        id: &'a str,
        /// The tenant the host vouched for.
        tenant: Option<&'a str>,
        /// Why it ended.
        reason: SessionEnd,
        /// Cells it ran.
        cells: u64,
        /// From opening to closing.
        lifetime: Duration,
    },
    /// The caller dropped the `execute` future before it finished (after `Started` or while
    /// queued): its slot was freed and its instance dropped; no `Finished` follows.
    Cancelled {
        /// Execution id.
        id: &'a str,
        /// The tenant the host vouched for.
        tenant: Option<&'a str>,
        /// From `execute` being called to the cancellation.
        elapsed: Duration,
        /// The load once its slot (if it had one) was given back.
        load: Load,
    },
}

/// Receives events. Implementations must return quickly and never panic.
pub trait Monitor: Send + Sync {
    /// Called for every event.
    fn on_event(&self, event: &Event<'_>);
}

/// Logs events through `tracing` (inside the engine's `execution` span, which carries the id).
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingMonitor;

impl Monitor for TracingMonitor {
    fn on_event(&self, event: &Event<'_>) {
        match event {
            Event::Queued { id, load } => tracing::debug!(id, queued = load.queued, "queued"),
            Event::Started {
                id,
                language,
                backend,
                tenant,
                queue_wait,
                ..
            } => tracing::debug!(
                id,
                language,
                backend = backend.as_str(),
                tenant,
                ?queue_wait,
                "started"
            ),
            Event::Ready { id, startup, .. } => tracing::debug!(id, ?startup, "ready"),
            Event::CompileCache { id, language, hit } => {
                tracing::debug!(id, language, hit, "compile cache")
            }
            Event::PhaseFinished {
                id,
                phase,
                status,
                duration,
            } => {
                tracing::debug!(
                    id,
                    phase = phase.as_str(),
                    status = status.as_str(),
                    ?duration,
                    "phase finished"
                )
            }
            Event::LimitHit { id, limit, .. } => tracing::info!(id, %limit, "limit hit"),
            Event::Security { id, event, .. } => {
                tracing::warn!(id, kind = %event.kind, detail = %event.detail, source = ?event.source, "security event")
            }
            Event::Finished {
                result, elapsed, ..
            } => tracing::info!(
                id = %result.id,
                status = result.status.as_str(),
                time = result.execution_time,
                ?elapsed,
                "finished"
            ),
            Event::QueueFull { id, tenant, load } => {
                tracing::warn!(id, tenant, queued = load.queued, "queue full")
            }
            Event::Cancelled { id, elapsed, .. } => tracing::info!(id, ?elapsed, "cancelled"),
            Event::Network { id, decision, .. } => tracing::info!(
                id,
                host = %decision.host,
                port = decision.port,
                verdict = ?decision.verdict,
                "egress"
            ),
            Event::SessionOpened {
                id,
                tenant,
                backend,
                ..
            } => tracing::info!(id, tenant, backend = backend.as_str(), "session opened"),
            Event::SessionClosed {
                id,
                reason,
                cells,
                lifetime,
                ..
            } => tracing::info!(
                id,
                reason = reason.as_str(),
                cells,
                ?lifetime,
                "session closed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn session_ends_serialise_as_their_wire_names() {
        for end in [
            SessionEnd::Closed,
            SessionEnd::IdleTimeout,
            SessionEnd::Lifetime,
            SessionEnd::Dropped,
        ] {
            let json = serde_json::to_string(&end).unwrap();
            assert_eq!(json, format!("\"{}\"", end.as_str()));
            assert_eq!(serde_json::from_str::<SessionEnd>(&json).unwrap(), end);
        }
    }
}
