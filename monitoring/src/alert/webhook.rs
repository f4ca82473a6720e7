//! A webhook: each alert as a JSON `POST`, from the webhook's own thread, with a timeout per
//! attempt and bounded retries with exponential backoff. A webhook that hangs or fails never
//! holds up the alerter (and so never a run): its queue is bounded, overflow is counted, and
//! failures are logged at most once per interval.
//!
//! Plain `http://` only (for a local relay or a sidecar); the client is hyper's HTTP/1.1
//! connection on a small Tokio runtime owned by the thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use super::sinks::AlertSink;
use super::Alert;
use crate::metrics::{names, Metrics};
use crate::util::Throttle;

/// Errors of setting up a webhook.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL does not parse.
    #[error("webhook URL `{url}`: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    /// The URL is not `http://host[:port]/…`.
    #[error("webhook URL `{0}`: only http://host[:port]/path is supported (use a local relay for https)")]
    Scheme(String),
    /// A header name or value is invalid.
    #[error("webhook header `{0}` is not a valid HTTP header")]
    Header(String),
    /// A setting is out of range.
    #[error("invalid webhook setting: {0}")]
    Config(&'static str),
    /// The thread or its runtime could not be started.
    #[error("cannot start the webhook thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// How to reach a webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://host[:port]/path`.
    pub url: String,
    /// Extra headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// Longest wait for one attempt: connect, send, response head (default 5 s).
    pub timeout: Duration,
    /// Attempts per alert, the first included (default 3).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each later one (default 500 ms).
    pub backoff: Duration,
    /// Alerts waiting for delivery before new ones are dropped (default 256).
    pub queue: usize,
    /// Failures are logged at most once per interval (default 60 s).
    pub report_interval: Duration,
}

impl WebhookConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_millis(500),
            queue: 256,
            report_interval: Duration::from_secs(60),
        }
    }
}

/// Counters of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WebhookStats {
    /// Alerts accepted by the server (2xx).
    pub delivered: u64,
    /// Alerts given up after every attempt failed.
    pub failed: u64,
    /// Alerts dropped because the queue was full.
    pub dropped: u64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    failed_attempts: AtomicU64,
}

enum Msg {
    Post(Bytes),
    Flush(SyncSender<()>),
}

/// An [`AlertSink`] that POSTs each alert as JSON.
pub struct WebhookSink {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    metrics: Option<Metrics>,
    url: String,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.url)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Where to connect and what to send, checked once.
struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

impl WebhookSink {
    /// Starts the webhook's thread.
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        Self::with_metrics(config, None)
    }

    /// Like [`new`](Self::new), counting deliveries in `metrics`.
    pub fn with_metrics(
        config: WebhookConfig,
        metrics: Option<Metrics>,
    ) -> Result<Self, WebhookError> {
        if config.attempts == 0 || config.queue == 0 || config.timeout.is_zero() {
            return Err(WebhookError::Config(
                "attempts, queue and timeout must be above zero",
            ));
        }
        let uri: Uri = config.url.parse().map_err(|source| WebhookError::Url {
            url: config.url.clone(),
            source,
        })?;
        if uri.scheme_str() != Some("http") {
            return Err(WebhookError::Scheme(config.url.clone()));
        }
        let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
            return Err(WebhookError::Scheme(config.url.clone()));
        };
        let mut headers = Vec::new();
        for (k, v) in &config.headers {
            let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| WebhookError::Header(k.clone()))?;
            let value = hyper::header::HeaderValue::from_str(v)
                .map_err(|_| WebhookError::Header(k.clone()))?;
            headers.push((name, value));
        }
        let target = Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16().unwrap_or(80),
            authority: authority.to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.to_string()),
            headers,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(WebhookError::Thread)?;
        let (tx, rx) = mpsc::sync_channel(config.queue);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            config: config.clone(),
            target,
            counters: counters.clone(),
            metrics: metrics.clone(),
            throttle: Throttle::new(config.report_interval),
        };
        std::thread::Builder::new()
            .name("vana-webhook".into())
            .spawn(move || worker.run(rt, rx))
            .map_err(WebhookError::Thread)?;
        Ok(Self {
            tx,
            counters,
            metrics,
            url: config.url,
        })
    }

    /// The counters.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.counters;
        WebhookStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
        }
    }

    /// Waits until every alert queued so far was delivered or given up (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack, done) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    fn deliver(&self, alert: &Alert) -> bool {
        let body = match serde_json::to_vec(alert) {
            Ok(b) => Bytes::from(b),
            Err(_) => return false,
        };
        match self.tx.try_send(Msg::Post(body)) {
            Ok(()) => true,
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.count(
                        names::ALERT_DELIVERIES,
                        &[("sink", "webhook"), ("result", "dropped")],
                        1,
                    );
                }
                false
            }
        }
    }
}

struct Worker {
    config: WebhookConfig,
    target: Target,
    counters: Arc<Counters>,
    metrics: Option<Metrics>,
    throttle: Throttle,
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    Timeout,
    Connect(std::io::Error),
    Http(hyper::Error),
    Request(hyper::http::Error),
    Status(StatusCode),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Http(e) => write!(f, "http: {e}"),
            Failure::Request(e) => write!(f, "request: {e}"),
            Failure::Status(s) => write!(f, "status {s}"),
        }
    }
}

impl Failure {
    /// Whether another attempt may succeed.
    fn retryable(&self) -> bool {
        match self {
            Failure::Status(s) => {
                s.is_server_error()
                    || *s == StatusCode::REQUEST_TIMEOUT
                    || *s == StatusCode::TOO_MANY_REQUESTS
            }
            Failure::Request(_) => false,
            _ => true,
        }
    }
}

impl Worker {
    fn run(mut self, rt: tokio::runtime::Runtime, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(self.config.report_interval) {
                Ok(Msg::Post(body)) => {
                    let ok = rt.block_on(self.deliver(body));
                    self.count(ok);
                }
                Ok(Msg::Flush(ack)) => {
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(n) = self.throttle.pending(Instant::now()) {
                        self.report(n, "(see earlier)");
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn count(&self, ok: bool) {
        let (counter, result) = if ok {
            (&self.counters.delivered, "ok")
        } else {
            (&self.counters.failed, "failed")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.count(
                names::ALERT_DELIVERIES,
                &[("sink", "webhook"), ("result", result)],
                1,
            );
        }
    }

    async fn deliver(&mut self, body: Bytes) -> bool {
        let mut wait = self.config.backoff;
        for attempt in 1..=self.config.attempts {
            let r = tokio::time::timeout(self.config.timeout, self.post(body.clone())).await;
            let failure = match r {
                Ok(Ok(())) => return true,
                Ok(Err(f)) => f,
                Err(_) => Failure::Timeout,
            };
            self.counters
                .failed_attempts
                .fetch_add(1, Ordering::Relaxed);
            let last = attempt == self.config.attempts || !failure.retryable();
            if last {
                if let Some(n) = self.throttle.hit(Instant::now()) {
                    self.report(n, &failure.to_string());
                }
                return false;
            }
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
        false
    }

    fn report(&self, failures: u64, error: &str) {
        tracing::error!(
            url = %self.config.url,
            error,
            alerts_failed_since_last_report = failures,
            failed_total = self.counters.failed.load(Ordering::Relaxed),
            dropped_total = self.counters.dropped.load(Ordering::Relaxed),
            "alert webhook is failing; runs go on, undelivered alerts are counted"
        );
    }

    async fn post(&self, body: Bytes) -> Result<(), Failure> {
        let t = &self.target;
        let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(Failure::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Failure::Http)?;
        let conn = tokio::spawn(conn);
        let mut req = Request::post(t.path.as_str())
            .header(hyper::header::HOST, t.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "vana-sandbox-monitor")
            .header(hyper::header::CONNECTION, "close");
        for (k, v) in &t.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body)).map_err(Failure::Request)?;
        let result = sender.send_request(req).await.map_err(Failure::Http);
        conn.abort();
        let status = result?.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status))
        }
    }
}
