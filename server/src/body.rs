//! Bodies: reading a request's body within a size limit and a time limit (413 before reading
//! a body whose declared length is too large), answers of a known length, and streams of
//! server-sent events fed by a channel.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::mpsc;

use crate::error::ApiError;

/// An answer's body: all at once, or a stream of chunks from a channel (server-sent events).
pub enum Body {
    /// A body of known length.
    Full(Option<Bytes>),
    /// Chunks as they come; the body ends when every sender is gone.
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body::Full(None)
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Full(Some(b))
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Self {
        Body::Full(Some(b.into()))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::Full(Some(s.into()))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let text = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!("{{\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}").into_bytes()
    });
    with_type(status, "application/json", text.into())
}

/// An answer of `content_type`.
pub fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The answer for an error: its status, JSON body and `Retry-After`.
pub fn error(e: &ApiError) -> Response<Body> {
    let mut r = json(e.status(), &e.body());
    if let Some(secs) = e.retry_after() {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if matches!(
        e,
        ApiError::MissingKey | ApiError::InvalidKey | ApiError::ExpiredKey
    ) {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"vana-sandbox\""),
        );
    }
    r
}

/// Reads a whole body of at most `limit` bytes within `timeout`. A declared `Content-Length`
/// above the limit is refused before a byte is read; a body that grows past it (chunked) is
/// cut there. Either way: [`ApiError::TooLarge`].
pub async fn read_limited<B>(
    headers: &HeaderMap,
    body: B,
    limit: u64,
    what: &'static str,
    timeout: Duration,
) -> Result<Bytes, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { what, limit });
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError::BodyTimeout(timeout)),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::TooLarge { what, limit })
        }
        Ok(Err(e)) => Err(ApiError::BadRequest(format!("cannot read the body: {e}"))),
    }
}

/// One server-sent event: `event: NAME` and its data (JSON, one line: serde_json escapes every
/// newline), its fields in the order a non-streamed answer has them.
pub fn sse_event(name: &str, data: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|e| {
        serde_json::json!({ "error": { "code": "internal", "message": e.to_string() } }).to_string()
    });
    format!("event: {name}\ndata: {data}\n\n").into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from(100u64));
        let body = Full::new(Bytes::from(vec![0u8; 100]));
        let t = Duration::from_secs(1);
        let e = read_limited(&h, body.clone(), 10, "request body", t).await;
        assert!(matches!(e, Err(ApiError::TooLarge { limit: 10, .. })));
        // Without a declared length, the body is cut at the limit.
        let e = read_limited(&HeaderMap::new(), body.clone(), 10, "request body", t).await;
        assert!(matches!(e, Err(ApiError::TooLarge { limit: 10, .. })));
        let ok = read_limited(&HeaderMap::new(), body, 100, "request body", t).await;
        assert_eq!(ok.map(|b| b.len()).ok(), Some(100));
    }
}
