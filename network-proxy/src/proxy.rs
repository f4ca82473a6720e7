//! The proxy instance: serving connections, the checks every request passes, refusals, summary
//! and shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::body::{self, ProxyBody};
use crate::check;
use crate::config::{MethodPolicy, ProxyConfig};
use crate::decision::{Decision, DenyReason, Method};
use crate::exchange::Exchange;
use crate::limit::{self, Meters, RateLimiter};
use crate::resolve::Resolver;
use crate::summary::{DecisionSink, Summary};
use crate::target::Target;
use crate::{connect, forward};

/// The response header that names why the proxy refused a request (a [`DenyReason`] name).
pub const REASON_HEADER: &str = "x-vana-proxy-reason";

/// hyper's smallest read buffer; a smaller header cap would make hyper panic.
const HYPER_MIN_BUF: usize = 8192;

/// An egress proxy instance: one per sandbox run. Cheap to clone (all clones are the same
/// instance).
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

/// What every connection and request of an instance shares.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    resolver: Arc<dyn Resolver>,
    sink: DecisionSink,
    summary: Mutex<Summary>,
    pub(crate) total: Meters,
    rate: RateLimiter,
    connections: Arc<Semaphore>,
    /// Cancelled by `shutdown`: stop accepting, finish in-flight requests, close tunnels.
    pub(crate) graceful: CancellationToken,
    /// Cancelled when the grace period is over: drop everything.
    pub(crate) hard: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// Why [`Proxy::serve`] stopped before a shutdown.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The listener failed in a way that accepting again cannot fix.
    #[error("accepting a connection failed")]
    Accept(#[source] io::Error),
}

/// A listener [`Proxy::serve`] can accept connections from.
pub trait Listener: Send {
    /// The connections it yields.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Accepts the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<TcpStream> {
        let (stream, _) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&mut self) -> io::Result<tokio::net::UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

impl Proxy {
    /// A proxy enforcing `config` (its limits [clamped](crate::Limits::clamped)), resolving
    /// names with `resolver`, reporting each decision to `sink` (and to its own [`Summary`]).
    pub fn new(config: ProxyConfig, resolver: Arc<dyn Resolver>, sink: DecisionSink) -> Proxy {
        let config = ProxyConfig {
            limits: config.limits.clamped(),
            ..config
        };
        let rate = RateLimiter::new(config.limits.requests_per_second, config.limits.burst);
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        Proxy {
            shared: Arc::new(Shared {
                config,
                resolver,
                sink,
                summary: Mutex::new(Summary::default()),
                total: Meters::default(),
                rate,
                connections,
                graceful: CancellationToken::new(),
                hard: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The configuration this instance enforces.
    pub fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    /// Serves one client connection (HTTP/1.1, absolute-form requests and CONNECT) until it
    /// closes, a limit cuts it, or the proxy shuts down. Every outcome is reported as a
    /// [`Decision`]; nothing is returned.
    pub async fn serve_connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = &self.shared;
        let _alive = shared.tasks.token();
        let permit = shared.connections.clone().try_acquire_owned().ok();
        let refusal = if shared.graceful.is_cancelled() {
            Some(DenyReason::ShuttingDown)
        } else if permit.is_none() {
            Some(DenyReason::TooManyConnections)
        } else {
            None
        };
        let meters = Arc::new(Meters::default());
        let service = {
            let shared = shared.clone();
            let meters = meters.clone();
            service_fn(move |req| dispatch(shared.clone(), meters.clone(), refusal, req))
        };
        let limits = &shared.config.limits;
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes.max(HYPER_MIN_BUF))
            .max_headers(limits.max_headers)
            .half_close(false);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = shared.graceful.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = shared.hard.cancelled() => Ok(()),
                }
            }
        };
        if let Err(error) = result {
            connection_error(shared, meters, &error);
        }
        drop(permit);
    }

    /// Accepts connections from `listener` and serves each on its own task, until
    /// [`shutdown`](Proxy::shutdown). Transient accept errors (out of descriptors, aborted
    /// handshakes) are retried after a short pause.
    pub async fn serve<L: Listener>(&self, mut listener: L) -> Result<(), ServeError> {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.shared.graceful.cancelled() => return Ok(()),
            };
            match accepted {
                Ok(stream) => {
                    let proxy = self.clone();
                    self.shared
                        .tasks
                        .spawn(async move { proxy.serve_connection(stream).await });
                }
                Err(error) if is_transient(&error) => {
                    warn!(%error, "egress proxy: accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => return Err(ServeError::Accept(error)),
            }
        }
    }

    /// The summary so far.
    pub fn summary(&self) -> Summary {
        self.shared.summary()
    }

    /// Stops the instance: [`serve`](Proxy::serve) stops accepting, new connections and
    /// requests are refused (`shutting_down`), tunnels close, in-flight requests get `grace` to
    /// finish before everything is dropped. Returns the final summary.
    pub async fn shutdown(&self, grace: Duration) -> Summary {
        self.shared.graceful.cancel();
        self.shared.tasks.close();
        if timeout(grace, self.shared.tasks.wait()).await.is_err() {
            self.shared.hard.cancel();
            // Everything now stops at its next poll; a connection future its caller no longer
            // polls cannot be waited for, so this wait is bounded too.
            let _ = timeout(Duration::from_secs(1), self.shared.tasks.wait()).await;
        }
        self.shared.summary()
    }

    /// Whether [`shutdown`](Proxy::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.graceful.is_cancelled()
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.shared.config)
            .field("sink", &self.shared.sink)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Counts a decision and hands it to the sink.
    pub(crate) fn record(&self, decision: Decision) {
        debug!(
            host = %decision.host,
            port = decision.port,
            verdict = ?decision.verdict,
            "egress proxy decision"
        );
        let delivered = self.sink.deliver(&decision);
        let mut summary = self.summary.lock().unwrap_or_else(PoisonError::into_inner);
        summary.record(&decision);
        if !delivered {
            summary.events_dropped += 1;
        }
    }

    fn summary(&self) -> Summary {
        self.summary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The checks every request passes once its target is read: shutdown, methods-only mode,
    /// rate, byte budget, then [`check::authorize`] (rules, resolution, addresses).
    pub(crate) async fn admit(
        &self,
        method: &http::Method,
        target: &Target,
    ) -> Result<Vec<SocketAddr>, DenyReason> {
        if self.graceful.is_cancelled() {
            return Err(DenyReason::ShuttingDown);
        }
        if self.config.methods == MethodPolicy::ReadOnly
            && !matches!(*method, http::Method::GET | http::Method::HEAD)
        {
            return Err(DenyReason::MethodNotAllowed);
        }
        if !self.rate.try_take() {
            return Err(DenyReason::RateLimited);
        }
        if limit::total_exhausted(&self.config.limits, &self.total) {
            return Err(DenyReason::ByteLimit);
        }
        check::authorize(&self.config, self.resolver.as_ref(), target).await
    }

    /// Connects to the first checked address that answers, within the connect timeout.
    pub(crate) async fn connect(
        &self,
        addrs: &[SocketAddr],
    ) -> Result<(TcpStream, SocketAddr), DenyReason> {
        let deadline = Instant::now() + self.config.limits.connect_timeout;
        for addr in addrs {
            match timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, *addr));
                }
                Ok(Err(error)) => debug!(%addr, %error, "egress proxy: connect failed"),
                Err(_) => return Err(DenyReason::UpstreamTimeout),
            }
        }
        Err(DenyReason::UpstreamUnreachable)
    }
}

/// Routes one request: CONNECT to a tunnel, anything else to forwarding.
async fn dispatch(
    shared: Arc<Shared>,
    meters: Arc<Meters>,
    refusal: Option<DenyReason>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let exchange = Arc::new(Exchange::new(
        shared,
        meters,
        crate::decision::method(req.method()),
    ));
    let response = match refusal {
        Some(reason) => refuse(&exchange, reason),
        None if req.method() == http::Method::CONNECT => connect::handle(exchange, req).await,
        None => forward::handle(exchange, req).await,
    };
    Ok(response)
}

/// Marks the exchange refused and builds the answer: the reason's status, the reason header,
/// a one-line text body, and `Connection: close`.
pub(crate) fn refuse(exchange: &Exchange, reason: DenyReason) -> Response<ProxyBody> {
    let reason = exchange.deny(reason);
    let mut response = Response::new(body::full(format!(
        "refused by the vana-sandbox egress proxy: {reason}\n"
    )));
    *response.status_mut() = crate::decision::status(reason);
    let headers = response.headers_mut();
    headers.insert(REASON_HEADER, HeaderValue::from_static(reason.name()));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Reports what hyper refused on its own (it already answered 431/400 where it could).
fn connection_error(shared: &Arc<Shared>, meters: Arc<Meters>, error: &hyper::Error) {
    let reason = if error.is_parse_too_large() {
        DenyReason::HeaderTooLarge
    } else if error.is_timeout() {
        DenyReason::HeaderTimeout
    } else if error.is_parse() {
        DenyReason::MalformedRequest
    } else {
        debug!(%error, "egress proxy: client connection ended");
        return;
    };
    let exchange = Exchange::new(shared.clone(), meters, Method::Unknown);
    exchange.deny(reason);
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    ) || matches!(
        error.raw_os_error(),
        Some(
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO | libc::EPERM
        )
    )
}
