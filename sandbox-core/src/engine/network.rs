//! A run's network access: the proxy's address inside the sandbox (a socket the backend opened
//! in its namespace and the host holds, or connections the backend relays from inside), each
//! connection handed to the run's egress proxy, the decisions kept for monitors, and the summary
//! for the result.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::egress::{DecisionFn, EgressProxy, ProxyConnection, ProxyEndpoint, PROXY_ADDR};
use crate::error::BackendError;
use crate::executor::Instance;
use crate::network::{Decision, Summary};
use crate::spec::EgressPolicy;

use super::Inner;

/// Decisions kept per run for monitors (more are counted in the summary only).
const MAX_KEPT_DECISIONS: usize = 1000;
/// How long in-flight requests get when the run is over.
const FINISH_GRACE: Duration = Duration::from_secs(1);

/// The proxy of one run.
pub(crate) struct RunNetwork {
    proxy: Arc<dyn EgressProxy>,
    accept: JoinHandle<()>,
    decisions: Arc<Mutex<Vec<Decision>>>,
    /// The program's proxy variables.
    pub env: Vec<(String, String)>,
}

impl RunNetwork {
    /// Opens the proxy inside `instance` for run `id` under `policy`.
    pub(crate) fn open(
        engine: &Inner,
        id: &str,
        instance: &dyn Instance,
        policy: &EgressPolicy,
    ) -> Result<Self, BackendError> {
        let egress = engine.egress.as_ref().ok_or_else(|| {
            BackendError::Unavailable(
                "network access needs an egress proxy, and this engine has none".into(),
            )
        })?;
        let endpoint = instance.listen(PROXY_ADDR)?;
        let mut connections = Connections::new(endpoint)?;
        let decisions: Arc<Mutex<Vec<Decision>>> = Arc::default();
        let kept = decisions.clone();
        let on_decision: DecisionFn = Arc::new(move |d: &Decision| {
            let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() < MAX_KEPT_DECISIONS {
                kept.push(d.clone());
            }
        });
        let proxy = egress.start(id, policy, on_decision)?;
        let env = proxy.env(PROXY_ADDR);
        let serving = proxy.clone();
        let accept = tokio::spawn(async move {
            while let Some(stream) = connections.next().await {
                serving.serve(stream);
            }
        });
        Ok(Self {
            proxy,
            accept,
            decisions,
            env,
        })
    }

    /// Stops accepting, ends the proxy, and returns its summary and the decisions kept.
    pub(crate) async fn close(self) -> (Summary, Vec<Decision>) {
        self.accept.abort();
        let summary = self.proxy.finish(FINISH_GRACE).await;
        let decisions =
            std::mem::take(&mut *self.decisions.lock().unwrap_or_else(|p| p.into_inner()));
        (summary, decisions)
    }
}

/// Connections to the proxy as they come, from either kind of endpoint.
enum Connections {
    Listener(tokio::net::TcpListener),
    Relayed(tokio::sync::mpsc::Receiver<ProxyConnection>),
}

impl Connections {
    fn new(endpoint: ProxyEndpoint) -> Result<Self, BackendError> {
        Ok(match endpoint {
            ProxyEndpoint::Listener(listener) => {
                listener
                    .set_nonblocking(true)
                    .map_err(|e| BackendError::setup("the proxy's socket", e))?;
                Connections::Listener(
                    tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| BackendError::setup("the proxy's socket", e))?,
                )
            }
            ProxyEndpoint::Relayed(rx) => Connections::Relayed(rx),
        })
    }

    /// The next connection; `None` when the endpoint is gone (the sandbox was destroyed).
    async fn next(&mut self) -> Option<ProxyConnection> {
        match self {
            Connections::Listener(listener) => loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        return Some(Box::new(stream));
                    }
                    // Out of descriptors or a transient error: try again shortly.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            },
            Connections::Relayed(rx) => rx.recv().await,
        }
    }
}

impl Drop for RunNetwork {
    fn drop(&mut self) {
        // Dropped without `close` (a session's last handle went): stop accepting at least.
        self.accept.abort();
    }
}
