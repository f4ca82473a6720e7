//! Declarative policies for vana-sandbox.
//!
//! A [`PolicyConfig`] holds the most a request may use. Evaluation fills what a request leaves out
//! with the policy's values and rejects anything that asks for more: a request can only tighten a
//! policy, never widen it. Every evaluated spec carries the policy's [`fingerprint`](PolicyConfig::fingerprint).

mod config;
mod evaluate;
mod fingerprint;
mod tenants;

pub use config::{
    CompileConfig, NetworkConfig, PackageIndexConfig, PackagesConfig, PolicyConfig, PolicyError,
    SessionConfig, NPM_REGISTRY, PRESETS, PYPI_INDEX,
};
pub use fingerprint::fingerprint;
pub use tenants::TenantPolicies;
