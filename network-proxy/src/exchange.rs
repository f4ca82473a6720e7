//! One request, tunnel or refused connection on its way to becoming a [`Decision`]: it gathers
//! the byte counts and the verdict, and hands the decision over when the last part holding it
//! is dropped (so a response body streamed after the handler returned is still counted).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use crate::decision::{Decision, DenyReason, Method, Verdict};
use crate::limit::{self, Meters, Way};
use crate::proxy::Shared;
use crate::target::Target;

pub(crate) struct Exchange {
    shared: Arc<Shared>,
    connection: Arc<Meters>,
    method: Method,
    target: Mutex<Option<Target>>,
    address: OnceLock<SocketAddr>,
    up: AtomicU64,
    down: AtomicU64,
    denied: OnceLock<DenyReason>,
    at: SystemTime,
    started: Instant,
}

impl Exchange {
    pub(crate) fn new(shared: Arc<Shared>, connection: Arc<Meters>, method: Method) -> Exchange {
        Exchange {
            shared,
            connection,
            method,
            target: Mutex::new(None),
            address: OnceLock::new(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            denied: OnceLock::new(),
            at: SystemTime::now(),
            started: Instant::now(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Records the target once it is known.
    pub(crate) fn set_target(&self, target: &Target) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = Some(target.clone());
    }

    /// Records the checked address connected to.
    pub(crate) fn connected(&self, addr: SocketAddr) {
        let _ = self.address.set(addr);
    }

    /// Marks the exchange refused (the first reason sticks) and returns the reason.
    pub(crate) fn deny(&self, reason: DenyReason) -> DenyReason {
        *self.denied.get_or_init(|| reason)
    }

    /// Counts `n` bytes one way against the connection's and the instance's caps; over a cap,
    /// the exchange is denied with `byte_limit` (and the bytes, which are not passed on, are
    /// not counted in the decision).
    pub(crate) fn charge(&self, way: Way, n: u64) -> Result<(), DenyReason> {
        let counter = match way {
            Way::Up => &self.up,
            Way::Down => &self.down,
        };
        limit::charge(
            &self.shared.config.limits,
            &self.connection,
            &self.shared.total,
            way,
            n,
        )
        .map_err(|reason| self.deny(reason))?;
        counter.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let target = self
            .target
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (host, port) = target.map_or((String::new(), 0), |t| (t.host.to_string(), t.port));
        let decision = Decision {
            host,
            port,
            method: self.method,
            address: self.address.get().copied(),
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down.load(Ordering::Relaxed),
            verdict: self
                .denied
                .get()
                .map_or(Verdict::Allowed, |r| Verdict::Denied(*r)),
            at: self.at,
            duration: self.started.elapsed(),
        };
        self.shared.record(decision);
    }
}
