//! What the proxy decided about each request or connection: one [`Decision`] each, with a
//! [`Verdict`] and, when refused, a [`DenyReason`] whose snake_case name is stable (it is what
//! the `X-Vana-Proxy-Reason` header, the event and the summary say).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::addr::AddressClass;

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

    /// The status a refused request is answered with (where an answer is still possible).
    pub fn status(self) -> StatusCode {
        use DenyReason::*;
        match self {
            RateLimited | TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeaderTimeout => StatusCode::REQUEST_TIMEOUT,
            ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ResolutionFailed | UpstreamUnreachable | UpstreamError => StatusCode::BAD_GATEWAY,
            ByteLimit => StatusCode::FORBIDDEN,
            other => match other.kind() {
                ReasonKind::Malformed => StatusCode::BAD_REQUEST,
                _ => StatusCode::FORBIDDEN,
            },
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no [`DenyReason`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
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

impl From<&http::Method> for Method {
    fn from(method: &http::Method) -> Self {
        match *method {
            http::Method::GET => Method::Get,
            http::Method::HEAD => Method::Head,
            http::Method::POST => Method::Post,
            http::Method::PUT => Method::Put,
            http::Method::PATCH => Method::Patch,
            http::Method::DELETE => Method::Delete,
            http::Method::OPTIONS => Method::Options,
            http::Method::TRACE => Method::Trace,
            http::Method::CONNECT => Method::Connect,
            _ => Method::Other,
        }
    }
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
    fn statuses() {
        assert_eq!(DenyReason::NotAllowed.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            DenyReason::Address(AddressClass::Private).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(DenyReason::OriginForm.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            DenyReason::RateLimited.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            DenyReason::UpstreamTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            DenyReason::ResolutionFailed.status(),
            StatusCode::BAD_GATEWAY
        );
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
        let back: Decision = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        let allowed = serde_json::to_value(Verdict::Allowed).unwrap();
        assert_eq!(allowed, serde_json::json!({"verdict": "allowed"}));
    }
}
