//! The monitor role: observers of every step. A monitor never blocks execution.

use std::time::Duration;

use crate::capabilities::BackendKind;
use crate::events::{Phase, SecurityEvent};
use crate::limits::LimitKind;
use crate::result::{ExecutionResult, Status};

/// Something that happened to an execution.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Accepted and waiting for a slot.
    Queued {
        /// Execution id.
        id: &'a str,
    },
    /// Got a slot and started.
    Started {
        /// Execution id.
        id: &'a str,
        /// Canonical language.
        language: &'a str,
        /// Backend.
        backend: BackendKind,
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
        /// Which limit (timeout, memory, output, processes).
        limit: LimitKind,
    },
    /// A security event.
    Security {
        /// Execution id.
        id: &'a str,
        /// The event.
        event: &'a SecurityEvent,
    },
    /// The execution finished (any status, including `rejected`).
    Finished {
        /// The full result.
        result: &'a ExecutionResult,
    },
}

/// Receives events. Implementations must return quickly and never panic.
pub trait Monitor: Send + Sync {
    /// Called for every event.
    fn on_event(&self, event: &Event<'_>);
}

/// Logs events through `tracing`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingMonitor;

impl Monitor for TracingMonitor {
    fn on_event(&self, event: &Event<'_>) {
        match event {
            Event::Queued { id } => tracing::debug!(id, "queued"),
            Event::Started {
                id,
                language,
                backend,
            } => tracing::debug!(id, language, backend = backend.as_str(), "started"),
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
            Event::LimitHit { id, limit } => tracing::info!(id, %limit, "limit hit"),
            Event::Security { id, event } => {
                tracing::warn!(id, kind = %event.kind, detail = %event.detail, source = ?event.source, "security event")
            }
            Event::Finished { result } => tracing::info!(
                id = %result.id,
                status = result.status.as_str(),
                time = result.execution_time,
                "finished"
            ),
        }
    }
}
