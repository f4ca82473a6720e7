//! The egress role filled with `vana-sandbox-proxy`: one proxy per run, with the run's rules
//! and limits, names resolved on the host, every decision reported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use vana_sandbox_core::egress::DecisionFn;
use vana_sandbox_core::network::Summary;
use vana_sandbox_core::{BackendError, Egress, EgressPolicy, EgressProxy, ProxyConnection};
use vana_sandbox_proxy::{
    proxy_env, DecisionSink, Limits, MethodPolicy, Proxy, ProxyConfig, Resolver, Rules,
    SystemResolver,
};

/// Egress through `vana-sandbox-proxy`.
#[derive(Clone)]
pub struct ProxyEgress {
    resolver: Arc<dyn Resolver>,
}

impl ProxyEgress {
    /// Names resolved with the host's resolver.
    pub fn new() -> Self {
        Self::with_resolver(Arc::new(SystemResolver))
    }

    /// Names resolved with `resolver` (tests use a stub that never touches the network).
    pub fn with_resolver(resolver: Arc<dyn Resolver>) -> Self {
        Self { resolver }
    }
}

impl Default for ProxyEgress {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ProxyEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyEgress").finish_non_exhaustive()
    }
}

/// The proxy's configuration for `policy` (its limits over the proxy's defaults).
pub fn proxy_config(policy: &EgressPolicy) -> Result<ProxyConfig, BackendError> {
    let rules = Rules::new(&policy.allow, &policy.deny).map_err(|e| {
        BackendError::Unavailable(format!("the policy's network rules do not parse: {e}"))
    })?;
    let defaults = Limits::default();
    Ok(ProxyConfig {
        rules,
        methods: if policy.read_only {
            MethodPolicy::ReadOnly
        } else {
            MethodPolicy::Any
        },
        limits: Limits {
            requests_per_second: policy.requests_per_second,
            burst: policy
                .requests_per_second
                .map_or(defaults.burst, |r| r.saturating_mul(2).max(1)),
            max_connections: policy.max_connections as usize,
            max_total_bytes_up: Some(policy.max_bytes_up),
            max_total_bytes_down: Some(policy.max_bytes_down),
            ..defaults
        },
        ..ProxyConfig::default()
    })
}

impl Egress for ProxyEgress {
    fn start(
        &self,
        _id: &str,
        policy: &EgressPolicy,
        on_decision: DecisionFn,
    ) -> Result<Arc<dyn EgressProxy>, BackendError> {
        let config = proxy_config(policy)?;
        let sink = DecisionSink::from_fn(move |d| on_decision(d));
        Ok(Arc::new(RunProxy(Proxy::new(
            config,
            self.resolver.clone(),
            sink,
        ))))
    }
}

struct RunProxy(Proxy);

#[async_trait]
impl EgressProxy for RunProxy {
    fn serve(&self, stream: ProxyConnection) {
        let proxy = self.0.clone();
        tokio::spawn(async move { proxy.serve_connection(stream).await });
    }

    fn env(&self, addr: SocketAddr) -> Vec<(String, String)> {
        proxy_env(addr)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    async fn finish(&self, grace: Duration) -> Summary {
        self.0.shutdown(grace).await
    }
}
