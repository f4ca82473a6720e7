//! Facts that are not the engine's to report, so they do not come as
//! [`Event`](vana_sandbox_core::Event)s: warm pools, and configuration being loaded. Each
//! component implements [`Hooks`]; the host calls them. (Egress decisions and sessions are
//! engine events: [`Event::Network`](vana_sandbox_core::Event::Network),
//! [`Event::SessionOpened`](vana_sandbox_core::Event::SessionOpened) and
//! [`Event::SessionClosed`](vana_sandbox_core::Event::SessionClosed).)

use serde::{Deserialize, Serialize};
use vana_sandbox_core::BackendKind;

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
    /// A configuration was loaded.
    fn on_config(&self, _config: &ConfigLoaded<'_>) {}
    /// A warm pool changed or was used.
    fn on_pool(&self, _pool: &PoolEvent) {}
}
