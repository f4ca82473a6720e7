//! What the proxy decided: the decision types are the egress contract of the core
//! (`vana_sandbox_core::network`); what only the proxy needs — the HTTP status of a refusal, the
//! method of an HTTP request — is here.

use http::StatusCode;

pub use vana_sandbox_core::network::{
    Decision, DenyReason, Method, ReasonKind, UnknownReason, Verdict,
};

/// The status a refused request is answered with (where an answer is still possible).
pub fn status(reason: DenyReason) -> StatusCode {
    use DenyReason::*;
    match reason {
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

/// The decision's [`Method`] of an HTTP method.
pub fn method(method: &http::Method) -> Method {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::addr::AddressClass;

    #[test]
    fn statuses() {
        assert_eq!(status(DenyReason::NotAllowed), StatusCode::FORBIDDEN);
        assert_eq!(
            status(DenyReason::Address(AddressClass::Private)),
            StatusCode::FORBIDDEN
        );
        assert_eq!(status(DenyReason::OriginForm), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(DenyReason::RateLimited),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(DenyReason::UpstreamTimeout),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status(DenyReason::ResolutionFailed),
            StatusCode::BAD_GATEWAY
        );
    }
}
