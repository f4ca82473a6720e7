//! The egress contract: what the host-side proxy decided about each request or connection of a
//! sandbox — one [`Decision`] each, with a [`Verdict`] and, when refused, a [`DenyReason`] whose
//! snake_case name is stable (the proxy's `X-Vana-Proxy-Reason` header, the monitors' events and
//! the result's [`Summary`] all say it) — and the per-run [`Summary`] a result carries. The proxy
//! (`vana-sandbox-proxy`) makes the decisions; every other part reads these types.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a request or connection did not go through (or was cut short).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DenyReason {
    // Malformed (400, or the connection is closed).
    /// The request could not be read as HTTP/1.1 (hyper's parser refused it).
    MalformedRequest,
    /// An origin-form request (`GET /path`): only absolute-form and CONNECT are proxied.
    OriginForm,
    /// An absolute URI whose scheme is not `http` (TLS goes through CONNECT).
    UnsupportedScheme,
    /// Userinfo (`user@`) in the request target or `Host` header.
    UserinfoInUri,
    /// The host is not a valid name or address literal.
    InvalidHost,
    /// The port is missing (CONNECT), empty or zero.
    InvalidPort,
    /// More than one `Host` header.
    DuplicateHost,
    /// A CONNECT tunnel's first bytes are a TLS record that is not a readable ClientHello.
    MalformedClientHello,
    // Policy (403, or the tunnel is closed with a TLS alert).
    /// The `Host` header names another host or port than the absolute URI.
    HostMismatch,
    /// The TLS SNI names another host than the CONNECT target.
    SniMismatch,
    /// The configuration requires SNI and the tunnel's first bytes carry none.
    SniMissing,
    /// No allow rule names the host.
    NotAllowed,
    /// Allow rules name the host, on other ports only.
    PortNotAllowed,
    /// A deny rule names the host, or a deny range covers its address.
    DeniedByRule,
    /// The method is not allowed in methods-only mode (only GET and HEAD are).
    MethodNotAllowed,
    /// The target resolved to (or is) a special address that no allow range covers.
    Address(AddressClass),
    // Limits.
    /// The request rate is over the limit (429).
    RateLimited,
    /// Too many concurrent connections (429).
    TooManyConnections,
    /// A byte cap (per connection, each way, or the instance's total) was reached.
    ByteLimit,
    /// The request head is larger than the header cap (431, sent by hyper).
    HeaderTooLarge,
    /// The request head (or a tunnel's first bytes) did not arrive within the header timeout.
    HeaderTimeout,
    /// The proxy is shutting down (503).
    ShuttingDown,
    // Upstream failures (502/504): the policy allowed the target but it could not be reached.
    /// The name did not resolve, or resolved to no address.
    ResolutionFailed,
    /// No checked address accepted a connection.
    UpstreamUnreachable,
    /// Connecting or waiting for the response head took too long.
    UpstreamTimeout,
    /// The upstream server broke the protocol or the connection.
    UpstreamError,
}

/// What kind of reason a [`DenyReason`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    /// The request or its bytes could not be understood.
    Malformed,
    /// A rule or check of the policy refused it.
    Policy,
    /// A limit of the instance was reached.
    Limit,
    /// Allowed, but the upstream could not be reached.
    Upstream,
}

impl DenyReason {
    const FIXED: [DenyReason; 25] = [
        DenyReason::MalformedRequest,
        DenyReason::OriginForm,
        DenyReason::UnsupportedScheme,
        DenyReason::UserinfoInUri,
        DenyReason::InvalidHost,
        DenyReason::InvalidPort,
        DenyReason::DuplicateHost,
        DenyReason::MalformedClientHello,
        DenyReason::HostMismatch,
        DenyReason::SniMismatch,
        DenyReason::SniMissing,
        DenyReason::NotAllowed,
        DenyReason::PortNotAllowed,
        DenyReason::DeniedByRule,
        DenyReason::MethodNotAllowed,
        DenyReason::RateLimited,
        DenyReason::TooManyConnections,
        DenyReason::ByteLimit,
        DenyReason::HeaderTooLarge,
        DenyReason::HeaderTimeout,
        DenyReason::ShuttingDown,
        DenyReason::ResolutionFailed,
        DenyReason::UpstreamUnreachable,
        DenyReason::UpstreamTimeout,
        DenyReason::UpstreamError,
    ];

    /// Every reason (each address class once).
    pub fn all() -> impl Iterator<Item = DenyReason> {
        Self::FIXED
            .into_iter()
            .chain(AddressClass::ALL.into_iter().map(DenyReason::Address))
    }

    /// The stable snake_case name (`private_address`, `sni_mismatch`, …).
    pub fn name(self) -> &'static str {
        use DenyReason::*;
        match self {
            MalformedRequest => "malformed_request",
            OriginForm => "origin_form",
            UnsupportedScheme => "unsupported_scheme",
            UserinfoInUri => "userinfo_in_uri",
            InvalidHost => "invalid_host",
            InvalidPort => "invalid_port",
            DuplicateHost => "duplicate_host",
            MalformedClientHello => "malformed_client_hello",
            HostMismatch => "host_mismatch",
            SniMismatch => "sni_mismatch",
            SniMissing => "sni_missing",
            NotAllowed => "not_allowed",
            PortNotAllowed => "port_not_allowed",
            DeniedByRule => "denied_by_rule",
            MethodNotAllowed => "method_not_allowed",
            Address(class) => match class {
                AddressClass::Loopback => "loopback_address",
                AddressClass::Unspecified => "unspecified_address",
                AddressClass::Private => "private_address",
                AddressClass::LinkLocal => "link_local_address",
                AddressClass::Metadata => "metadata_address",
                AddressClass::Cgnat => "cgnat_address",
                AddressClass::Multicast => "multicast_address",
                AddressClass::Broadcast => "broadcast_address",
                AddressClass::Documentation => "documentation_address",
                AddressClass::Reserved => "reserved_address",
                AddressClass::Tunnel => "tunnel_address",
            },
            RateLimited => "rate_limited",
            TooManyConnections => "too_many_connections",
            ByteLimit => "byte_limit",
            HeaderTooLarge => "header_too_large",
            HeaderTimeout => "header_timeout",
            ShuttingDown => "shutting_down",
            ResolutionFailed => "resolution_failed",
            UpstreamUnreachable => "upstream_unreachable",
            UpstreamTimeout => "upstream_timeout",
            UpstreamError => "upstream_error",
        }
    }

    /// Which kind of reason this is.
    pub fn kind(self) -> ReasonKind {
        use DenyReason::*;
        match self {
            MalformedRequest | OriginForm | UnsupportedScheme | UserinfoInUri | InvalidHost
            | InvalidPort | DuplicateHost | MalformedClientHello => ReasonKind::Malformed,
            HostMismatch | SniMismatch | SniMissing | NotAllowed | PortNotAllowed
            | DeniedByRule | MethodNotAllowed | Address(_) => ReasonKind::Policy,
            RateLimited | TooManyConnections | ByteLimit | HeaderTooLarge | HeaderTimeout
            | ShuttingDown => ReasonKind::Limit,
            ResolutionFailed | UpstreamUnreachable | UpstreamTimeout | UpstreamError => {
                ReasonKind::Upstream
            }
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no [`DenyReason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown deny reason `{0}`")]
pub struct UnknownReason(pub String);

impl FromStr for DenyReason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DenyReason::all()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

impl Serialize for DenyReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DenyReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The request method, with CONNECT for tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// CONNECT (a tunnel)
    Connect,
    /// Another (extension) method.
    Other,
    /// No request was read (a connection-level decision: header timeout, too large, …).
    Unknown,
}

/// Whether a request or connection went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// It went through (and was not cut short by a limit).
    Allowed,
    /// It was refused, or cut short (a byte cap mid-stream).
    Denied(DenyReason),
}

impl Verdict {
    /// The stable snake_case name of the verdict: `allowed` or `denied` (what it serialises as).
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied(_) => "denied",
        }
    }

    /// Why it was refused; `None` when it went through.
    pub fn reason(self) -> Option<DenyReason> {
        match self {
            Verdict::Allowed => None,
            Verdict::Denied(reason) => Some(reason),
        }
    }

    /// Whether it went through.
    pub fn is_allowed(self) -> bool {
        self == Verdict::Allowed
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allowed => f.write_str("allowed"),
            Verdict::Denied(reason) => write!(f, "denied ({reason})"),
        }
    }
}

/// One request (absolute-form HTTP), tunnel (CONNECT) or refused connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The target host as normalised (empty when the request could not be read that far).
    pub host: String,
    /// The target port (0 when unknown).
    pub port: u16,
    /// The method.
    pub method: Method,
    /// The checked address the proxy connected to, if it got that far.
    pub address: Option<SocketAddr>,
    /// Bytes from the sandbox to the target (request bodies; tunnel bytes).
    pub bytes_up: u64,
    /// Bytes from the target to the sandbox (response bodies; tunnel bytes).
    pub bytes_down: u64,
    /// The verdict (serialised flat: `"verdict": "denied", "reason": "private_address"`).
    #[serde(flatten)]
    pub verdict: Verdict,
    /// When the request arrived (serialised as milliseconds since the Unix epoch).
    #[serde(rename = "at_ms", with = "unix_ms")]
    pub at: SystemTime,
    /// How long it lasted, until the last byte (serialised as milliseconds).
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
}

mod unix_ms {
    use super::*;

    pub fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        s.serialize_u64(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        Ok(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A class of addresses that the proxy refuses unless an allow rule's CIDR covers the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `0.0.0.0/8` ("this network"; `0.0.0.0` reaches the local host on Linux) and `::`.
    Unspecified,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), unique local `fc00::/7`, site-local
    /// `fec0::/10`.
    Private,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud metadata services: `169.254.169.254`, `fd00:ec2::254`, Azure's `168.63.129.16`,
    /// Alibaba's `100.100.100.200`.
    Metadata,
    /// Carrier-grade NAT, `100.64.0.0/10`.
    Cgnat,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Documentation ranges: `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`,
    /// `3fff::/20`.
    Documentation,
    /// Reserved or special-purpose: `240/4`, `192.0.0/24`, `198.18/15` (benchmarking),
    /// `192.88.99/24`, IPv4-compatible IPv6, `64:ff9b:1::/48`, `100::/64`, `2001::/23` outside
    /// Teredo, and all IPv6 outside `2000::/3`.
    Reserved,
    /// Tunnels that embed their far end: 6to4 `2002::/16`, Teredo `2001::/32`.
    Tunnel,
}

impl AddressClass {
    /// Every class, in declaration order.
    pub const ALL: [AddressClass; 11] = [
        AddressClass::Loopback,
        AddressClass::Unspecified,
        AddressClass::Private,
        AddressClass::LinkLocal,
        AddressClass::Metadata,
        AddressClass::Cgnat,
        AddressClass::Multicast,
        AddressClass::Broadcast,
        AddressClass::Documentation,
        AddressClass::Reserved,
        AddressClass::Tunnel,
    ];

    /// The stable snake_case name of the class (`link_local`).
    pub fn name(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link_local",
            AddressClass::Metadata => "metadata",
            AddressClass::Cgnat => "cgnat",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Documentation => "documentation",
            AddressClass::Reserved => "reserved",
            AddressClass::Tunnel => "tunnel",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<_> = DenyReason::all().map(DenyReason::name).collect();
        let count = names.len();
        assert_eq!(count, 25 + AddressClass::ALL.len());
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
        for reason in DenyReason::all() {
            assert_eq!(reason.name().parse::<DenyReason>().unwrap(), reason);
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.name()));
            assert_eq!(serde_json::from_str::<DenyReason>(&json).unwrap(), reason);
            assert!(reason
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        assert!("nope".parse::<DenyReason>().is_err());
    }

    #[test]
    fn decision_json_shape() {
        let d = Decision {
            host: "example.com".into(),
            port: 443,
            method: Method::Connect,
            address: None,
            bytes_up: 1,
            bytes_down: 2,
            verdict: Verdict::Denied(DenyReason::Address(AddressClass::Private)),
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
            duration: Duration::from_millis(12),
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["verdict"], "denied");
        assert_eq!(v["reason"], "private_address");
        assert_eq!(v["method"], "CONNECT");
        assert_eq!(v["at_ms"], 1_700_000_000_000u64);
        assert_eq!(v["duration_ms"], 12);
        let back: Decision = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, d);
        let allowed = serde_json::to_value(Verdict::Allowed).unwrap();
        assert_eq!(allowed, serde_json::json!({"verdict": "allowed"}));
        // The names the methods give are the ones serde writes.
        assert_eq!(Verdict::Allowed.name(), "allowed");
        assert_eq!(d.verdict.name(), v["verdict"]);
        assert_eq!(
            d.verdict.reason().map(DenyReason::name),
            v["reason"].as_str()
        );
        assert_eq!(Verdict::Allowed.reason(), None);
        assert!(Verdict::Allowed.is_allowed() && !d.verdict.is_allowed());
        assert_eq!(d.verdict.to_string(), "denied (private_address)");
    }

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
}
