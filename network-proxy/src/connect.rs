//! CONNECT tunnels: the target is checked and connected to before the `200`; then the client's
//! first bytes are read, and when they are a TLS ClientHello its SNI must name the CONNECT host
//! (a mismatch gets a TLS `access_denied` alert and the tunnel closes). After that, bytes are
//! relayed unchanged (no TLS interception), metered both ways, until either side closes, the
//! tunnel idles, a byte cap is reached, or the proxy shuts down.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

use crate::body::{self, ProxyBody};
use crate::decision::DenyReason;
use crate::exchange::Exchange;
use crate::host::Host;
use crate::limit::Way;
use crate::proxy::refuse;
use crate::sni::{self, Peek, ACCESS_DENIED_ALERT, MAX_HELLO_BYTES};
use crate::target::Target;

const RELAY_BUFFER: usize = 16 * 1024;

/// Answers one CONNECT request.
pub(crate) async fn handle(
    exchange: Arc<Exchange>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (target, upstream) = match open(&exchange, &req).await {
        Ok(opened) => opened,
        Err(reason) => return refuse(&exchange, reason),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared = exchange.shared().clone();
    shared.tasks.spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            tunnel(&exchange, &target, TokioIo::new(upgraded), upstream).await;
        }
    });
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    response
}

async fn open(
    exchange: &Exchange,
    req: &Request<Incoming>,
) -> Result<(Target, TcpStream), DenyReason> {
    let shared = exchange.shared();
    let target = Target::from_connect(req.uri())?;
    exchange.set_target(&target);
    let addrs = shared.admit(req.method(), &target).await?;
    let (stream, addr) = shared.connect(&addrs).await?;
    exchange.connected(addr);
    Ok((target, stream))
}

async fn tunnel(
    exchange: &Exchange,
    target: &Target,
    mut client: TokioIo<Upgraded>,
    mut upstream: TcpStream,
) {
    let shared = exchange.shared().clone();
    let limits = &shared.config.limits;
    let mut first = Vec::with_capacity(4096);
    let peek = tokio::select! {
        read = timeout(limits.header_timeout, read_first_bytes(&mut client, &mut first)) => read,
        () = shared.graceful.cancelled() => return,
    };
    let peek = match peek {
        Ok(Ok(peek)) => peek,
        Ok(Err(_)) => return, // the client went away
        Err(_elapsed) => {
            exchange.deny(DenyReason::HeaderTimeout);
            return;
        }
    };
    let refusal = match &peek {
        Peek::NeedMore => return, // closed before a whole ClientHello
        Peek::Malformed => Some(DenyReason::MalformedClientHello),
        Peek::Hello(Some(name)) => match Host::parse(name) {
            Ok(host) if host == target.host => None,
            _ => Some(DenyReason::SniMismatch),
        },
        Peek::Hello(None) | Peek::NotTls if shared.config.require_sni => {
            Some(DenyReason::SniMissing)
        }
        Peek::Hello(None) | Peek::NotTls => None,
    };
    if let Some(reason) = refusal {
        exchange.deny(reason);
        if matches!(peek, Peek::Hello(_) | Peek::Malformed) {
            let _ = timeout(limits.idle_timeout, client.write_all(&ACCESS_DENIED_ALERT)).await;
        }
        let _ = client.shutdown().await;
        return;
    }
    let n = u64::try_from(first.len()).unwrap_or(u64::MAX);
    if exchange.charge(Way::Up, n).is_err() {
        return;
    }
    if !matches!(
        timeout(limits.idle_timeout, upstream.write_all(&first)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    relay(exchange, client, upstream).await;
}

/// Reads until the first bytes say what they are (at most [`MAX_HELLO_BYTES`]).
async fn read_first_bytes<R: AsyncRead + Unpin>(
    client: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Peek> {
    let mut chunk = [0u8; 4096];
    loop {
        let peek = sni::peek(buf);
        if peek != Peek::NeedMore {
            return Ok(peek);
        }
        let room = MAX_HELLO_BYTES.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Ok(Peek::Malformed);
        }
        let n = client.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(Peek::NeedMore);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Moved {
    Up(std::io::Result<usize>),
    Down(std::io::Result<usize>),
}

/// Relays bytes both ways until both sides closed, an error, a cap, the idle timeout (no byte
/// either way), or shutdown.
async fn relay<C>(exchange: &Exchange, client: C, upstream: TcpStream)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let shared = exchange.shared().clone();
    let idle = shared.config.limits.idle_timeout;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let mut up_buf = vec![0u8; RELAY_BUFFER];
    let mut down_buf = vec![0u8; RELAY_BUFFER];
    let (mut up_open, mut down_open) = (true, true);
    while up_open || down_open {
        let moved = tokio::select! {
            read = client_read.read(&mut up_buf), if up_open => Moved::Up(read),
            read = upstream_read.read(&mut down_buf), if down_open => Moved::Down(read),
            () = sleep(idle) => break,
            () = shared.graceful.cancelled() => break,
        };
        match moved {
            Moved::Up(Ok(0)) => {
                up_open = false;
                let _ = upstream_write.shutdown().await;
            }
            Moved::Down(Ok(0)) => {
                down_open = false;
                let _ = client_write.shutdown().await;
            }
            Moved::Up(Ok(n)) => {
                if !pass(exchange, Way::Up, &up_buf[..n], &mut upstream_write, idle).await {
                    break;
                }
            }
            Moved::Down(Ok(n)) => {
                if !pass(exchange, Way::Down, &down_buf[..n], &mut client_write, idle).await {
                    break;
                }
            }
            Moved::Up(Err(_)) | Moved::Down(Err(_)) => break,
        }
    }
}

/// Charges and writes one chunk; `false` when the tunnel must close.
async fn pass<W: AsyncWrite + Unpin>(
    exchange: &Exchange,
    way: Way,
    bytes: &[u8],
    to: &mut W,
    idle: std::time::Duration,
) -> bool {
    let n = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if exchange.charge(way, n).is_err() {
        return false;
    }
    matches!(timeout(idle, to.write_all(bytes)).await, Ok(Ok(())))
}
