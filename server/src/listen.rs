//! Listening and serving: a Unix socket or TCP (optionally TLS), one task per connection
//! (HTTP/1.1 with keep-alive and a header read timeout), a bound on connections, and the
//! graceful shutdown: stop accepting, let running work finish within the grace, then kill it,
//! close every session and wait for the sandboxes to be gone.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::api::{self, State};
use crate::config::Listen;
use crate::error::ServerError;

/// How long a graceful shutdown waits, after killing what outlived the grace, for the
/// sandboxes to be gone.
const TEARDOWN: Duration = Duration::from_secs(15);

/// A bound listener.
pub(crate) enum Listener {
    Tcp(TcpListener, Option<TlsAcceptor>),
    Unix(UnixListener, PathBuf),
}

/// A byte stream of any listener.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Accepted {
    Plain(Box<dyn Stream>),
    Tls(tokio::net::TcpStream, TlsAcceptor),
}

impl Listener {
    /// Binds `listen`. A Unix socket left by a server that is gone is replaced; one that answers
    /// is not; a path that is not a socket is never touched.
    pub(crate) async fn bind(
        listen: &Listen,
        tls: Option<TlsAcceptor>,
        socket_mode: u32,
    ) -> Result<(Self, Listen), ServerError> {
        let bind_error = |source| ServerError::Bind {
            addr: listen.to_string(),
            source,
        };
        match listen {
            Listen::Tcp(addr) => {
                let l = TcpListener::bind(addr).await.map_err(bind_error)?;
                let local = l.local_addr().map_err(bind_error)?;
                Ok((Listener::Tcp(l, tls), Listen::Tcp(local)))
            }
            Listen::Unix(path) => {
                if tls.is_some() {
                    return Err(ServerError::Tls(
                        "TLS is for TCP; a Unix socket is protected by its file permissions".into(),
                    ));
                }
                remove_stale(path).await?;
                let l = UnixListener::bind(path).map_err(bind_error)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))
                    .map_err(bind_error)?;
                Ok((Listener::Unix(l, path.clone()), listen.clone()))
            }
        }
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Tcp(l, tls) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(match tls {
                    Some(t) => Accepted::Tls(s, t.clone()),
                    None => Accepted::Plain(Box::new(s)),
                })
            }
            Listener::Unix(l, _) => Ok(Accepted::Plain(Box::new(l.accept().await?.0))),
        }
    }

    /// Stops listening (a Unix socket's file is removed).
    fn close(self) {
        if let Listener::Unix(l, path) = self {
            drop(l);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn remove_stale(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_path_buf()));
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(ServerError::SocketInUse(path.to_path_buf()));
    }
    std::fs::remove_file(path).map_err(|source| ServerError::Bind {
        addr: format!("unix:{}", path.display()),
        source,
    })
}

/// A TLS acceptor from PEM files: the certificate chain and the private key.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |what: &str, e: &dyn std::fmt::Display| ServerError::Tls(format!("{what}: {e}"));
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls(&cert.display().to_string(), &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&cert.display().to_string(), &e))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(&key.display().to_string(), &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls("certificate and key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every request and stream ended within the grace (nothing was killed).
    pub drained: bool,
    /// Executions and cells still running when the grace ended (they were killed).
    pub killed_runs: usize,
    /// Sessions closed at shutdown.
    pub sessions_closed: usize,
    /// Executions still holding a slot at the end (0 unless the teardown timed out).
    pub left_running: usize,
}

/// Accepts and serves until `shutdown` resolves, then shuts down gracefully.
pub(crate) async fn serve(
    listener: Listener,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()>,
) -> ShutdownReport {
    let (stop_tx, stop_rx) = watch::channel(false);
    let conns = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(state.settings.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let stop = stop_rx.clone();
        conns.spawn(async move {
            if let Some(m) = &state.metrics {
                m.http_connections(1.0);
            }
            connection(stream, state.clone(), stop).await;
            if let Some(m) = &state.metrics {
                m.http_connections(-1.0);
            }
            drop(permit);
        });
    }

    // Stop accepting; tell every connection to finish its request and close.
    listener.close();
    state.draining.store(true, Ordering::Release);
    let _ = stop_tx.send(true);
    conns.close();
    state.tasks.close();
    let grace = state.settings.shutdown_grace();
    let all_done = async {
        conns.wait().await;
        state.tasks.wait().await;
    };
    let drained = tokio::time::timeout(grace, all_done).await.is_ok();
    let killed_runs = if drained { 0 } else { state.engine.running() };
    // What outlived the grace is dropped: its sandboxes are killed, its clients get 503 (a
    // stream an `error` event).
    state.cancel.cancel();
    let _ = tokio::time::timeout(TEARDOWN, async {
        conns.wait().await;
        state.tasks.wait().await;
    })
    .await;
    let sessions = state.sessions.drain();
    let sessions_closed = sessions.len();
    for s in sessions {
        if let Err(e) = s.close().await {
            tracing::warn!("closing a session at shutdown: {e}");
        }
    }
    let deadline = tokio::time::Instant::now() + TEARDOWN;
    while state.engine.running() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ShutdownReport {
        drained,
        killed_runs,
        sessions_closed,
        left_running: state.engine.running(),
    }
}

async fn connection(stream: Accepted, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let header_timeout = state.settings.header_timeout();
    let io: Box<dyn Stream> = match stream {
        Accepted::Plain(s) => s,
        Accepted::Tls(s, acceptor) => {
            match tokio::time::timeout(header_timeout, acceptor.accept(s)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake: {e}");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(api::handle(state, req).await) }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    if !*stop.borrow() {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection: {e}");
                }
                return;
            }
            _ = stop.changed() => {}
        }
    }
    // Shutting down: the request in flight finishes, then the connection closes. Once the
    // grace is over the connection goes (its handlers have answered 503 by then).
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async {
            state.cancel.cancelled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        } => {}
    }
}
