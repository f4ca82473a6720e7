//! Facts that do not come through the engine's [`Event`](vana_sandbox_core::Event)s yet: network
//! decisions (the egress proxy), sessions, warm pools, and configuration being loaded. Each
//! component implements [`Hooks`]; the host (or a later engine event) calls them.

use serde::{Deserialize, Serialize};
use vana_sandbox_core::network::{Decision, Verdict};
use vana_sandbox_core::{BackendKind, Event};

/// What the egress proxy decided for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetDecision {
    /// The connection was let through.
    Allow,
    /// The connection was refused.
    Deny,
}

impl NetDecision {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetDecision::Allow => "allow",
            NetDecision::Deny => "deny",
        }
    }
}

/// One egress decision.
#[derive(Debug, Clone, Copy)]
pub struct NetworkDecision<'a> {
    /// The execution (or session) that asked.
    pub id: &'a str,
    /// The tenant the host vouched for.
    pub tenant: Option<&'a str>,
    /// Host name or address asked for.
    pub host: &'a str,
    /// Port asked for.
    pub port: u16,
    /// The decision.
    pub decision: NetDecision,
    /// Why (the rule that matched, "private address", …).
    pub reason: &'a str,
}

impl<'a> NetworkDecision<'a> {
    /// The decision the engine reported (`Event::Network`) for run or session `id`.
    pub fn of(id: &'a str, tenant: Option<&'a str>, d: &'a Decision) -> Self {
        let (decision, reason) = match &d.verdict {
            Verdict::Allowed => (NetDecision::Allow, "allowed"),
            Verdict::Denied(r) => (NetDecision::Deny, r.name()),
        };
        Self {
            id,
            tenant,
            host: &d.host,
            port: d.port,
            decision,
            reason,
        }
    }

    /// The decision of an `Event::Network`, if `event` is one.
    pub fn from_event(event: &Event<'a>) -> Option<Self> {
        match *event {
            Event::Network {
                id,
                tenant,
                decision,
            } => Some(Self::of(id, tenant, decision)),
            _ => None,
        }
    }
}

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionAction {
    /// A session was opened.
    Opened,
    /// A session was closed (by its owner, idle or total lifetime, or an error).
    Closed,
}

impl SessionAction {
    /// `opened` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionAction::Opened => "opened",
            SessionAction::Closed => "closed",
        }
    }
}

/// A session opening or closing.
#[derive(Debug, Clone, Copy)]
pub struct SessionEvent<'a> {
    /// Session id.
    pub session: &'a str,
    /// The tenant the host vouched for.
    pub tenant: Option<&'a str>,
    /// Opened or closed.
    pub action: SessionAction,
    /// Why it closed (empty when opened).
    pub reason: &'a str,
}

impl<'a> SessionEvent<'a> {
    /// The session event of an engine event (`SessionOpened`, `SessionClosed`), if `event` is
    /// one: the engine's own sessions are observed through these, and [`Hooks::on_session`]
    /// stays for sessions a host keeps outside the engine.
    pub fn from_event(event: &Event<'a>) -> Option<Self> {
        match *event {
            Event::SessionOpened { id, tenant, .. } => Some(Self {
                session: id,
                tenant,
                action: SessionAction::Opened,
                reason: "",
            }),
            Event::SessionClosed {
                id, tenant, reason, ..
            } => Some(Self {
                session: id,
                tenant,
                action: SessionAction::Closed,
                reason: reason.as_str(),
            }),
            _ => None,
        }
    }
}

/// What kind of configuration was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigKind {
    /// A sandbox policy (`PolicyConfig`).
    Policy,
    /// The threat detector's rules.
    ThreatRules,
    /// Alert thresholds and sinks.
    Alerts,
    /// The server's configuration (tenants, keys, quotas).
    Server,
}

/// A configuration that took effect.
#[derive(Debug, Clone, Copy)]
pub struct ConfigLoaded<'a> {
    /// What kind.
    pub kind: ConfigKind,
    /// Where it came from (a path, `preset:strict`, `builtin`).
    pub source: &'a str,
    /// Its fingerprint (e.g. the policy's `sha256:…`).
    pub fingerprint: &'a str,
}

/// A warm pool's state or a lookup in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEvent {
    /// The pool now holds `size` ready instances.
    Size {
        /// The backend whose pool it is.
        backend: BackendKind,
        /// Ready instances.
        size: usize,
    },
    /// An execution took a ready instance (`hit`) or had to create one.
    Lookup {
        /// The backend whose pool it is.
        backend: BackendKind,
        /// Whether a ready instance was there.
        hit: bool,
    },
}

/// Receives the facts above. Every method has an empty default; like
/// [`Monitor::on_event`](vana_sandbox_core::Monitor::on_event), implementations return quickly
/// and never block.
pub trait Hooks: Send + Sync {
    /// An egress decision of the network proxy.
    fn on_network(&self, _decision: &NetworkDecision<'_>) {}
    /// A session opened or closed.
    fn on_session(&self, _session: &SessionEvent<'_>) {}
    /// A configuration was loaded.
    fn on_config(&self, _config: &ConfigLoaded<'_>) {}
    /// A warm pool changed or was used.
    fn on_pool(&self, _pool: &PoolEvent) {}
}
