//! Bodies passed through the proxy: metered against the byte caps and cut when idle.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use thiserror::Error;
use tokio::time::{sleep, Instant, Sleep};

use crate::exchange::Exchange;
use crate::limit::Way;

/// Why a proxied body stopped early.
#[derive(Debug, Error)]
pub enum BodyError {
    /// Reading the body from its sender failed.
    #[error("reading the body failed")]
    Read(#[source] Box<dyn StdError + Send + Sync>),
    /// A byte cap was reached.
    #[error("byte limit reached")]
    ByteLimit,
    /// No byte arrived for the idle timeout.
    #[error("body idle for longer than the idle timeout")]
    Idle,
}

/// The body type of every response the proxy gives.
pub type ProxyBody = BoxBody<Bytes, BodyError>;

/// A fixed body.
pub(crate) fn full(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub(crate) fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// A body counted against an exchange's caps, cut when it idles.
pub(crate) struct Metered<B> {
    inner: B,
    exchange: Arc<Exchange>,
    way: Way,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl<B> Metered<B> {
    pub(crate) fn new(inner: B, exchange: Arc<Exchange>, way: Way) -> Metered<B> {
        let idle = exchange.shared().config.limits.idle_timeout;
        Metered {
            inner,
            exchange,
            way,
            idle,
            timer: Box::pin(sleep(idle)),
            done: false,
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    if this.exchange.charge(this.way, n).is_err() {
                        this.done = true;
                        return Poll::Ready(Some(Err(BodyError::ByteLimit)));
                    }
                }
                let deadline = Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(BodyError::Read(e.into()))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.done = true;
                    return Poll::Ready(Some(Err(BodyError::Idle)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
