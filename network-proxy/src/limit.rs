//! Counting against the instance's limits: a token bucket for the request rate and byte meters
//! per connection and per instance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::config::Limits;
use crate::decision::DenyReason;

/// A token bucket: `rate` tokens a second, at most `burst` stored.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: Option<f64>,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(rate: Option<u32>, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate: rate.map(f64::from),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token; `false` when none is left.
    pub(crate) fn try_take(&self) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * rate).min(self.burst);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            true
        } else {
            *state = (refilled, now);
            false
        }
    }
}

/// Bytes moved one way, against an optional cap.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    bytes: AtomicU64,
}

impl Meter {
    /// Adds `n`; `false` when that goes over `cap`.
    pub(crate) fn add(&self, n: u64, cap: Option<u64>) -> bool {
        let after = self.bytes.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        cap.is_none_or(|cap| after <= cap)
    }

    /// Whether the cap is already reached (nothing more may pass).
    pub(crate) fn exhausted(&self, cap: Option<u64>) -> bool {
        cap.is_some_and(|cap| self.get() >= cap)
    }

    pub(crate) fn get(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Which way bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// From the sandbox to the target.
    Up,
    /// From the target to the sandbox.
    Down,
}

/// The up and down meters of one scope (a connection, or the whole instance).
#[derive(Debug, Default)]
pub(crate) struct Meters {
    up: Meter,
    down: Meter,
}

impl Meters {
    pub(crate) fn meter(&self, way: Way) -> &Meter {
        match way {
            Way::Up => &self.up,
            Way::Down => &self.down,
        }
    }
}

/// Counts `n` bytes against a connection's and the instance's meters.
pub(crate) fn charge(
    limits: &Limits,
    connection: &Meters,
    total: &Meters,
    way: Way,
    n: u64,
) -> Result<(), DenyReason> {
    let (conn_cap, total_cap) = match way {
        Way::Up => (
            limits.max_bytes_up_per_connection,
            limits.max_total_bytes_up,
        ),
        Way::Down => (
            limits.max_bytes_down_per_connection,
            limits.max_total_bytes_down,
        ),
    };
    let conn_ok = connection.meter(way).add(n, conn_cap);
    let total_ok = total.meter(way).add(n, total_cap);
    if conn_ok && total_ok {
        Ok(())
    } else {
        Err(DenyReason::ByteLimit)
    }
}

/// Whether the instance's total caps leave room for anything.
pub(crate) fn total_exhausted(limits: &Limits, total: &Meters) -> bool {
    total.up.exhausted(limits.max_total_bytes_up)
        || total.down.exhausted(limits.max_total_bytes_down)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses() {
        let bucket = RateLimiter::new(Some(1), 3);
        assert!(bucket.try_take());
        assert!(bucket.try_take());
        assert!(bucket.try_take());
        assert!(!bucket.try_take());
        let unlimited = RateLimiter::new(None, 0);
        assert!((0..1000).all(|_| unlimited.try_take()));
    }

    #[test]
    fn bucket_refills() {
        let bucket = RateLimiter::new(Some(1000), 1);
        assert!(bucket.try_take());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(bucket.try_take());
    }

    #[test]
    fn meters_cap_each_scope() {
        let limits = Limits {
            max_bytes_up_per_connection: Some(10),
            max_total_bytes_up: Some(15),
            ..Limits::default()
        };
        let (a, b, total) = (Meters::default(), Meters::default(), Meters::default());
        assert_eq!(charge(&limits, &a, &total, Way::Up, 10), Ok(()));
        assert_eq!(
            charge(&limits, &a, &total, Way::Up, 1),
            Err(DenyReason::ByteLimit)
        );
        assert_eq!(
            charge(&limits, &b, &total, Way::Up, 5),
            Err(DenyReason::ByteLimit)
        );
        assert!(total_exhausted(&limits, &total));
        assert_eq!(charge(&limits, &b, &total, Way::Down, 1 << 20), Ok(()));
    }
}
