//! The egress role: the host-side proxy that carries a sandbox's allowed traffic. The sandbox's
//! network namespace has no route out; the only way out is the proxy's address inside it
//! ([`PROXY_ADDR`]), which the backend opens ([`Instance::listen`](crate::Instance::listen)) as a
//! [`ProxyEndpoint`]: a socket listening inside the namespace and held by the host (native), or
//! a listener of the sandbox's own init whose connections the backend relays to the host
//! (Docker, under runc and gVisor alike). Either way the engine hands each connection to the
//! run's proxy. Programs find it through the usual proxy variables; code that ignores them
//! reaches nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::BackendError;
use crate::network::{Decision, Summary};
use crate::spec::EgressPolicy;

/// Where the proxy listens inside every sandbox that has network access.
pub const PROXY_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    3128,
));

/// A connection a program opened to the proxy's address inside the sandbox.
pub trait ProxyStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> ProxyStream for T {}

/// One connection to the proxy, whatever carries it.
pub type ProxyConnection = Box<dyn ProxyStream>;

/// Most relayed connections waiting for the engine to take them.
pub const RELAY_BACKLOG: usize = 64;

/// Where the connections to the proxy inside a sandbox come from.
pub enum ProxyEndpoint {
    /// A TCP socket listening inside the sandbox's own network namespace, held by the host (the
    /// backend opened it there).
    Listener(std::net::TcpListener),
    /// Connections the backend relays from a listener inside the sandbox, as they open (at most
    /// [`RELAY_BACKLOG`] waiting).
    Relayed(tokio::sync::mpsc::Receiver<ProxyConnection>),
}

impl std::fmt::Debug for ProxyEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyEndpoint::Listener(l) => f.debug_tuple("Listener").field(l).finish(),
            ProxyEndpoint::Relayed(_) => f.write_str("Relayed"),
        }
    }
}

/// Called with each decision as it is made (inline on the proxy's task: return quickly).
pub type DecisionFn = Arc<dyn Fn(&Decision) + Send + Sync>;

/// Starts egress proxies.
pub trait Egress: Send + Sync {
    /// A proxy for run `id` enforcing `policy`, reporting each decision to `on_decision`.
    fn start(
        &self,
        id: &str,
        policy: &EgressPolicy,
        on_decision: DecisionFn,
    ) -> Result<Arc<dyn EgressProxy>, BackendError>;
}

/// One run's proxy.
#[async_trait]
pub trait EgressProxy: Send + Sync {
    /// Serves one connection the program opened to [`PROXY_ADDR`] inside the sandbox.
    fn serve(&self, stream: ProxyConnection);

    /// The environment that points programs (and pip, npm, git, curl) at `addr`.
    fn env(&self, addr: SocketAddr) -> Vec<(String, String)>;

    /// Stops: no new requests, in-flight ones get `grace`; returns the run's summary.
    async fn finish(&self, grace: Duration) -> Summary;
}
