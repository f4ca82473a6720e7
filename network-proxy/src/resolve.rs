//! Name resolution behind a trait: the host's resolver for real runs, a stub for tests.
//!
//! The proxy resolves a name once per request, checks every answer, and connects only to an
//! address it checked: it never resolves the same request twice, so an answer that changes
//! between calls (DNS rebinding) cannot slip an unchecked address in.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use thiserror::Error;

/// Why a name did not resolve.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// The resolver answered that the name has no address.
    #[error("`{name}` has no address")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The resolver failed.
    #[error("resolving `{name}` failed")]
    Io {
        /// The name asked for.
        name: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
}

/// Resolves names to addresses.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// Every address `name` resolves to (a normalised ASCII name, never an address literal).
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError>;
}

/// The host's resolver (`getaddrinfo` through tokio's blocking pool), so `/etc/nsswitch.conf`
/// and the host's DNS configuration apply. The name is asked for as fully qualified (a trailing
/// dot), so the resolver's search list never turns an allowed name into another one.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let fqdn = format!("{name}.");
        let found = tokio::net::lookup_host((fqdn.as_str(), 0))
            .await
            .map_err(|source| ResolveError::Io {
                name: name.to_owned(),
                source,
            })?;
        let mut addrs: Vec<IpAddr> = Vec::new();
        for addr in found {
            if !addrs.contains(&addr.ip()) {
                addrs.push(addr.ip());
            }
        }
        if addrs.is_empty() {
            return Err(ResolveError::NotFound {
                name: name.to_owned(),
            });
        }
        Ok(addrs)
    }
}

/// A resolver for tests: a fixed map from names to answers. A name can be given a sequence of
/// answers, one per call (the last one repeats), to simulate DNS rebinding. Unknown names are
/// [`ResolveError::NotFound`]; nothing is ever asked of a real resolver.
#[derive(Debug, Clone, Default)]
pub struct StubResolver {
    state: Arc<Mutex<StubState>>,
}

#[derive(Debug, Default)]
struct StubState {
    answers: HashMap<String, VecDeque<Vec<IpAddr>>>,
    lookups: HashMap<String, usize>,
}

impl StubResolver {
    /// An empty stub: every name is unknown.
    pub fn new() -> StubResolver {
        StubResolver::default()
    }

    /// Adds the next answer for `name` (case-insensitive): the first call gets the first answer
    /// given, and so on; the last answer repeats.
    pub fn answer(self, name: &str, addrs: &[IpAddr]) -> StubResolver {
        self.with_state(|state| {
            state
                .answers
                .entry(name.to_ascii_lowercase())
                .or_default()
                .push_back(addrs.to_vec());
        });
        self
    }

    /// How many times `name` was resolved.
    pub fn lookups(&self, name: &str) -> usize {
        self.with_state(|state| {
            state
                .lookups
                .get(&name.to_ascii_lowercase())
                .copied()
                .unwrap_or(0)
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut StubState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }
}

#[async_trait]
impl Resolver for StubResolver {
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let key = name.to_ascii_lowercase();
        self.with_state(|state| {
            *state.lookups.entry(key.clone()).or_default() += 1;
            let queue = state.answers.get_mut(&key);
            let answer = match queue {
                Some(q) if q.len() > 1 => q.pop_front(),
                Some(q) => q.front().cloned(),
                None => None,
            };
            match answer {
                Some(addrs) if !addrs.is_empty() => Ok(addrs),
                _ => Err(ResolveError::NotFound {
                    name: name.to_owned(),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn stub_answers_in_order_and_counts() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.1".parse().unwrap();
        let stub = StubResolver::new()
            .answer("Rebind.test", &[a])
            .answer("rebind.test", &[b]);
        assert_eq!(stub.resolve("rebind.test").await.unwrap(), vec![a]);
        assert_eq!(stub.resolve("REBIND.test").await.unwrap(), vec![b]);
        assert_eq!(stub.resolve("rebind.test").await.unwrap(), vec![b]);
        assert_eq!(stub.lookups("rebind.test"), 3);
        assert!(matches!(
            stub.resolve("unknown.test").await,
            Err(ResolveError::NotFound { .. })
        ));
        let empty = StubResolver::new().answer("empty.test", &[]);
        assert!(empty.resolve("empty.test").await.is_err());
    }
}
