//! Plain HTTP forwarding: an absolute-form request (`GET http://host/path`) is checked, sent in
//! origin form to the checked address over a fresh upstream connection, and the response is
//! streamed back. Bodies are metered both ways; hop-by-hop headers are dropped both ways.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::timeout;

use crate::body::{Metered, ProxyBody};
use crate::decision::DenyReason;
use crate::exchange::Exchange;
use crate::limit::Way;
use crate::proxy::refuse;
use crate::target::Target;

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Answers one non-CONNECT request.
pub(crate) async fn handle(exchange: Arc<Exchange>, req: Request<Incoming>) -> Response<ProxyBody> {
    match forward(&exchange, req).await {
        Ok(response) => response,
        Err(reason) => refuse(&exchange, reason),
    }
}

async fn forward(
    exchange: &Arc<Exchange>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, DenyReason> {
    let shared = exchange.shared().clone();
    let target = Target::from_absolute(req.uri(), req.headers())?;
    exchange.set_target(&target);
    let addrs = shared.admit(req.method(), &target).await?;
    let (stream, addr) = shared.connect(&addrs).await?;
    exchange.connected(addr);

    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| DenyReason::UpstreamError)?;
    let hard = shared.hard.clone();
    shared.tasks.spawn(async move {
        tokio::select! {
            _ = connection => {}
            () = hard.cancelled() => {}
        }
    });

    let (parts, body) = req.into_parts();
    let mut outgoing = Request::new(Metered::new(body, exchange.clone(), Way::Up));
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = origin_form(&parts.uri);
    *outgoing.version_mut() = Version::HTTP_11;
    *outgoing.headers_mut() = without_hop_by_hop(parts.headers);
    let host = host_header(&target)?;
    outgoing.headers_mut().insert(HOST, host);

    let limits = &shared.config.limits;
    let response = match timeout(limits.response_timeout, sender.send_request(outgoing)).await {
        Ok(Ok(response)) => response,
        // A request body cut by a byte cap fails the send: report the cap, not the upstream.
        Ok(Err(_)) => return Err(exchange.deny(DenyReason::UpstreamError)),
        Err(_elapsed) => return Err(DenyReason::UpstreamTimeout),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Err(DenyReason::UpstreamError);
    }
    let (mut parts, body) = response.into_parts();
    parts.headers = without_hop_by_hop(parts.headers);
    let body = Metered::new(body, exchange.clone(), Way::Down).boxed();
    Ok(Response::from_parts(parts, body))
}

/// The path and query of an absolute URI (`/` when it has none).
fn origin_form(uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path)
}

/// The `Host` header for the upstream request, from the checked target.
fn host_header(target: &Target) -> Result<HeaderValue, DenyReason> {
    let text = if target.port == 80 {
        match &target.host {
            crate::host::Host::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            host => host.to_string(),
        }
    } else {
        target.authority()
    };
    HeaderValue::from_str(&text).map_err(|_| DenyReason::InvalidHost)
}

/// Drops hop-by-hop headers, including those the `Connection` header names.
fn without_hop_by_hop(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::host::Host;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        let out = without_hop_by_hop(h);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key("accept"));
    }

    #[test]
    fn origin_form_and_host() {
        let uri: Uri = "http://a.test:8080/p?q=1".parse().unwrap();
        assert_eq!(origin_form(&uri), "/p?q=1");
        let bare: Uri = "http://a.test".parse().unwrap();
        assert_eq!(origin_form(&bare), "/");
        let t = |h: &str, port| Target {
            host: Host::parse(h).unwrap(),
            port,
        };
        assert_eq!(host_header(&t("a.test", 80)).unwrap(), "a.test");
        assert_eq!(host_header(&t("a.test", 8080)).unwrap(), "a.test:8080");
        assert_eq!(host_header(&t("[::1]", 80)).unwrap(), "[::1]");
        assert_eq!(host_header(&t("[::1]", 81)).unwrap(), "[::1]:81");
    }
}
