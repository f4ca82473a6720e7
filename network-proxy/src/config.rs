//! What one proxy instance enforces: rules, modes and limits.

use std::time::Duration;

use crate::rules::Rules;

/// The configuration of one proxy instance (one sandbox run).
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// Allow and deny rules.
    pub rules: Rules,
    /// Which methods are proxied.
    pub methods: MethodPolicy,
    /// What to do when a name resolves to allowed and refused addresses at once.
    pub mixed_answers: MixedAnswers,
    /// Whether a CONNECT tunnel must start with a TLS ClientHello that carries SNI (when
    /// `false`, SNI is checked when present and other protocols pass).
    pub require_sni: bool,
    /// Rates, sizes and timeouts.
    pub limits: Limits,
}

/// Which methods are proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MethodPolicy {
    /// Every method, and CONNECT tunnels.
    #[default]
    Any,
    /// Only GET and HEAD over plain HTTP; CONNECT is refused, since a tunnel's contents cannot
    /// be checked.
    ReadOnly,
}

/// What to do when a name's answers mix allowed and refused addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MixedAnswers {
    /// Refuse the name (the reason is the first refused address's): the safe default, since a
    /// name that points into a private range at all is suspect.
    #[default]
    RefuseAll,
    /// Connect only to the allowed addresses.
    UseAllowed,
}

/// Limits of one proxy instance. `None` means unlimited.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Requests (and CONNECTs) per second, as a token bucket refilled at this rate.
    pub requests_per_second: Option<u32>,
    /// The bucket's size: how many requests may come at once after a quiet spell (at least 1).
    pub burst: u32,
    /// Concurrent client connections (each CONNECT tunnel holds its connection).
    pub max_connections: usize,
    /// Bytes from the sandbox per client connection (request bodies, tunnel bytes).
    pub max_bytes_up_per_connection: Option<u64>,
    /// Bytes to the sandbox per client connection (response bodies, tunnel bytes).
    pub max_bytes_down_per_connection: Option<u64>,
    /// Bytes from the sandbox over the instance's life (the egress cap).
    pub max_total_bytes_up: Option<u64>,
    /// Bytes to the sandbox over the instance's life.
    pub max_total_bytes_down: Option<u64>,
    /// The largest request head (hyper's `max_buf_size`; hyper's floor of 8192 applies).
    pub max_header_bytes: usize,
    /// The most header fields in a request head.
    pub max_headers: usize,
    /// Time allowed for a request head to arrive, counted from the connection's start or the
    /// previous response (so it also bounds idle keep-alive), and for a tunnel's first bytes.
    pub header_timeout: Duration,
    /// A tunnel or body that moves no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed to resolve a name.
    pub resolve_timeout: Duration,
    /// Time allowed to connect to the target (all checked addresses together).
    pub connect_timeout: Duration,
    /// Time allowed for the target's response head.
    pub response_timeout: Duration,
}

/// The longest any timeout may be: longer ones are shortened to this (a deadline past what
/// the clock can hold would otherwise overflow).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Limits {
    /// The limits as the proxy applies them: timeouts at most [`MAX_TIMEOUT`], a burst of at
    /// least 1, a connection count tokio's semaphore can hold.
    pub fn clamped(&self) -> Limits {
        let t = |d: Duration| d.min(MAX_TIMEOUT);
        Limits {
            burst: self.burst.max(1),
            max_connections: self
                .max_connections
                .min(tokio::sync::Semaphore::MAX_PERMITS),
            header_timeout: t(self.header_timeout),
            idle_timeout: t(self.idle_timeout),
            resolve_timeout: t(self.resolve_timeout),
            connect_timeout: t(self.connect_timeout),
            response_timeout: t(self.response_timeout),
            ..self.clone()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_second: Some(20),
            burst: 50,
            max_connections: 64,
            max_bytes_up_per_connection: Some(64 << 20),
            max_bytes_down_per_connection: Some(1 << 30),
            max_total_bytes_up: Some(256 << 20),
            max_total_bytes_down: Some(4 << 30),
            max_header_bytes: 16 << 10,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            resolve_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamping_keeps_deadlines_representable() {
        let wild = Limits {
            burst: 0,
            max_connections: usize::MAX,
            header_timeout: Duration::MAX,
            idle_timeout: Duration::MAX,
            ..Limits::default()
        };
        let c = wild.clamped();
        assert_eq!(c.burst, 1);
        assert_eq!(c.max_connections, tokio::sync::Semaphore::MAX_PERMITS);
        assert_eq!(c.header_timeout, MAX_TIMEOUT);
        assert!(std::time::Instant::now()
            .checked_add(c.idle_timeout)
            .is_some());
        assert_eq!(Limits::default().clamped(), Limits::default());
    }
}
