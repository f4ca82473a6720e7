//! The egress role: the host-side proxy that carries a sandbox's allowed traffic. The sandbox's
//! network namespace has no route out; the only way out is a listening socket the backend opens
//! inside that namespace ([`Instance::listen`](crate::Instance::listen)), whose connections the
//! engine hands to the run's proxy. Programs find it through the usual proxy variables; code that
//! ignores them reaches nothing.

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
    fn serve(&self, stream: tokio::net::TcpStream);

    /// The environment that points programs (and pip, npm, git, curl) at `addr`.
    fn env(&self, addr: SocketAddr) -> Vec<(String, String)>;

    /// Stops: no new requests, in-flight ones get `grace`; returns the run's summary.
    async fn finish(&self, grace: Duration) -> Summary;
}
