//! Test helpers: a proxy on 127.0.0.1, an origin server on 127.0.0.1, a raw client. Nothing here
//! talks to any address but 127.0.0.1, and names are resolved by a stub only.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use vana_sandbox_proxy::{
    Decision, DecisionSink, Limits, Proxy, ProxyConfig, Rules, ServeError, StubResolver,
};

pub const LOOPBACK: &str = "127.0.0.1";
pub const WAIT: Duration = Duration::from_secs(5);

pub fn loopback() -> IpAddr {
    LOOPBACK.parse().unwrap()
}

/// A proxy serving on 127.0.0.1:0.
pub struct Harness {
    pub proxy: Proxy,
    pub addr: SocketAddr,
    pub decisions: mpsc::Receiver<Decision>,
    pub serving: JoinHandle<Result<(), ServeError>>,
}

impl Harness {
    pub async fn start(config: ProxyConfig, resolver: StubResolver) -> Harness {
        let (sink, decisions) = DecisionSink::channel(1024);
        let proxy = Proxy::new(config, Arc::new(resolver), sink);
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.serve(listener).await }
        });
        Harness {
            proxy,
            addr,
            decisions,
            serving,
        }
    }

    /// The next decision (waits for it).
    pub async fn decision(&mut self) -> Decision {
        timeout(WAIT, self.decisions.recv())
            .await
            .expect("a decision within the wait")
            .expect("the sink is open")
    }

    pub async fn request(&self, raw: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(raw).await.unwrap();
        read_reply(&mut stream).await
    }
}

/// Rules for tests: `allowed.test` on `port`, and loopback lifted for 127.0.0.1 only.
pub fn config_for(port: u16) -> ProxyConfig {
    ProxyConfig {
        rules: Rules::new(
            &[format!("allowed.test:{port}"), "127.0.0.1/32".to_owned()],
            &[] as &[&str],
        )
        .unwrap(),
        limits: Limits {
            requests_per_second: None,
            ..Limits::default()
        },
        ..ProxyConfig::default()
    }
}

/// `allowed.test` → 127.0.0.1.
pub fn stub() -> StubResolver {
    StubResolver::new().answer("allowed.test", &[loopback()])
}

/// A reply read by the raw client.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes after the body (another response, or garbage).
    pub rest: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn reason(&self) -> Option<&str> {
        self.header("x-vana-proxy-reason")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response head (and its Content-Length body) from a stream.
pub async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = parsed.parse(&buf).unwrap() {
            let status = parsed.code.unwrap();
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse::<usize>().unwrap());
            let mut body = buf[head_len..].to_vec();
            if let Some(length) = length {
                while body.len() < length {
                    match timeout(WAIT, stream.read(&mut chunk)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                        Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
                    }
                }
                let rest = body.split_off(length.min(body.len()));
                return Reply {
                    status,
                    headers,
                    body,
                    rest,
                };
            }
            return Reply {
                status,
                headers,
                body: Vec::new(),
                rest: body,
            };
        }
        let n = timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("a reply within the wait")
            .unwrap();
        assert!(n > 0, "connection closed before a reply: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until EOF (or the wait runs out); returns what came.
pub async fn read_to_end<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut out)).await;
    out
}

/// Whether the peer closed the connection (EOF or reset) within `within`.
pub async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// What the origin server saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

/// An HTTP origin on 127.0.0.1:0. `/big/N` answers N bytes; anything else echoes what it saw.
pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, connections2) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                connections2.fetch_add(1, Ordering::SeqCst);
                let seen = seen2.clone();
                tokio::spawn(serve_origin(stream, seen));
            }
        });
        Origin {
            addr,
            seen,
            connections,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub async fn serve_origin<S>(stream: S, seen: Arc<Mutex<Vec<Seen>>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let host = req
                .headers()
                .get("host")
                .map(|v| v.to_str().unwrap().to_owned());
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let body_len = body.map(|b| b.len()).unwrap_or(0);
            seen.lock().unwrap().push(Seen {
                method: method.clone(),
                uri: uri.clone(),
                host: host.clone(),
                headers,
                body_len,
            });
            let text = if let Some(n) = uri.strip_prefix("/big/") {
                "x".repeat(n.parse().unwrap_or(0))
            } else {
                format!(
                    "{method} {uri} host={} body={body_len}",
                    host.unwrap_or_default()
                )
            };
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
