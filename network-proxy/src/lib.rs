//! The host-side egress proxy of vana-sandbox: the only way out of a sandbox whose network is
//! an allowlist. One [`Proxy`] instance serves one sandbox run.
//!
//! It is an HTTP/1.1 forward proxy (absolute-form `GET http://host/…` is forwarded; `CONNECT
//! host:port` is tunnelled without TLS interception) that checks, for every request, in order:
//!
//! 1. the request's form ([`target`]): absolute-form `http://` or CONNECT `host:port` only, no
//!    userinfo, a valid host and port, a `Host` header that agrees with the absolute URI;
//! 2. the mode: in methods-only mode ([`MethodPolicy::ReadOnly`]) only GET and HEAD;
//! 3. the limits: the request rate (token bucket) and the instance's byte caps;
//! 4. the [`rules`]: deny rules, then allow rules (host, then port);
//! 5. resolution, once ([`resolve`]), and every resolved address ([`addr`]): special ranges
//!    (loopback, private, link-local, metadata, …) are refused unless an allow CIDR covers them;
//! 6. the connection to a checked address (never a new resolution, so DNS rebinding fails);
//! 7. for CONNECT, the TLS SNI against the CONNECT host; then bytes flow, metered both ways.
//!
//! Each request, tunnel or refused connection becomes one [`Decision`], handed to a
//! [`DecisionSink`] without blocking and counted in a [`Summary`] (serde) for the run's result.
//! A refused request gets the reason's status (403 for policy, 400 malformed, 429 rate, 502/504
//! upstream) and an `X-Vana-Proxy-Reason` header with the [`DenyReason`] name.
//!
//! ```no_run
//! use std::sync::Arc;
//! use vana_sandbox_proxy::{DecisionSink, Proxy, ProxyConfig, Rules, SystemResolver};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ProxyConfig {
//!     rules: Rules::new(&["pypi.org", "*.pythonhosted.org"], &[] as &[&str])?,
//!     ..ProxyConfig::default()
//! };
//! let (sink, mut decisions) = DecisionSink::channel(1024);
//! let proxy = Proxy::new(config, Arc::new(SystemResolver), sink);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let env = vana_sandbox_proxy::proxy_env(listener.local_addr()?);
//! let serving = tokio::spawn({ let proxy = proxy.clone(); async move { proxy.serve(listener).await } });
//! // … run the sandbox with `env`, draining `decisions` …
//! let summary = proxy.shutdown(std::time::Duration::from_secs(2)).await;
//! serving.await??;
//! println!("{}", serde_json::to_string(&summary)?);
//! # Ok(()) }
//! ```

pub mod addr;
mod body;
pub mod check;
pub mod config;
mod connect;
pub mod decision;
mod env;
mod exchange;
mod forward;
pub mod host;
mod limit;
mod proxy;
pub mod resolve;
pub mod rules;
mod sni;
pub mod summary;
pub mod target;

pub use addr::AddressClass;
pub use check::authorize;
pub use config::{Limits, MethodPolicy, MixedAnswers, ProxyConfig};
pub use decision::{Decision, DenyReason, Method, ReasonKind, Verdict};
pub use env::{proxy_env, NO_PROXY};
pub use host::{Host, HostError};
pub use proxy::{Listener, Proxy, ServeError, REASON_HEADER};
pub use resolve::{ResolveError, Resolver, StubResolver, SystemResolver};
pub use rules::{Rule, RuleError, Rules};
pub use summary::{DecisionSink, HostSummary, Summary};
pub use target::Target;
