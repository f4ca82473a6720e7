//! Tenant quotas: runs at once, sessions open, runs started per minute (a sliding window of
//! start times), CPU seconds per hour (a sliding hour of per-minute sums). A refusal names the
//! quota and when to try again; nothing is counted for a refused request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Quotas;
use crate::error::ApiError;
use crate::tenants::Tenant;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one tenant's quotas count.
#[derive(Debug)]
pub(crate) struct QuotaState {
    quotas: Quotas,
    running: AtomicU32,
    sessions: AtomicU32,
    /// Start times within the last minute (at most `runs_per_minute` of them).
    starts: Mutex<VecDeque<Instant>>,
    /// CPU seconds by minute within the last hour.
    cpu: Mutex<VecDeque<(Instant, f64)>>,
}

/// Takes one of `limit` places in `counter`, or says no.
fn take(counter: &AtomicU32, limit: Option<u32>) -> bool {
    let Some(limit) = limit else {
        counter.fetch_add(1, Ordering::AcqRel);
        return true;
    };
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

impl QuotaState {
    pub(crate) fn new(quotas: Quotas) -> Self {
        Self {
            quotas,
            running: AtomicU32::new(0),
            sessions: AtomicU32::new(0),
            starts: Mutex::new(VecDeque::new()),
            cpu: Mutex::new(VecDeque::new()),
        }
    }

    /// CPU seconds used in the hour before `now`.
    pub(crate) fn cpu_last_hour(&self, now: Instant) -> f64 {
        let mut cpu = lock(&self.cpu);
        prune_cpu(&mut cpu, now);
        cpu.iter().map(|(_, s)| s).sum()
    }

    /// Adds `seconds` of CPU at `now`.
    pub(crate) fn record_cpu(&self, seconds: f64, now: Instant) {
        if !(seconds.is_finite() && seconds > 0.0) {
            return;
        }
        let mut cpu = lock(&self.cpu);
        prune_cpu(&mut cpu, now);
        match cpu.back_mut() {
            Some((at, s)) if now.duration_since(*at) < MINUTE => *s += seconds,
            _ => cpu.push_back((now, seconds)),
        }
    }

    /// Runs holding a place now.
    pub(crate) fn running(&self) -> u32 {
        self.running.load(Ordering::Acquire)
    }

    /// Sessions holding a place now.
    pub(crate) fn sessions(&self) -> u32 {
        self.sessions.load(Ordering::Acquire)
    }
}

fn prune_cpu(cpu: &mut VecDeque<(Instant, f64)>, now: Instant) {
    while cpu
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) >= HOUR)
    {
        cpu.pop_front();
    }
}

/// A run's place in its tenant's `concurrent_runs`; given back when dropped.
#[derive(Debug)]
pub(crate) struct RunGuard(Arc<Tenant>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.quota.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A session's place in its tenant's `sessions`; given back when dropped.
#[derive(Debug)]
pub(crate) struct SessionGuard(Arc<Tenant>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.quota.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admits a run (an execution or a cell) of `tenant` at `now`, or names the quota that refuses
/// it; `busy_retry` is the `Retry-After` for `concurrent_runs`.
pub(crate) fn admit_run(
    tenant: &Arc<Tenant>,
    now: Instant,
    busy_retry: Duration,
) -> Result<RunGuard, ApiError> {
    let q = &tenant.quota;
    if let Some(max) = q.quotas.cpu_seconds_per_hour {
        let mut cpu = lock(&q.cpu);
        prune_cpu(&mut cpu, now);
        let used: f64 = cpu.iter().map(|(_, s)| s).sum();
        if used >= max {
            // When enough old minutes have left the window to go under the quota.
            let mut left = used;
            let mut when = now;
            for (at, s) in cpu.iter() {
                left -= s;
                when = *at + HOUR;
                if left < max {
                    break;
                }
            }
            return Err(ApiError::Quota {
                quota: "cpu_seconds_per_hour",
                detail: format!("{used:.1} CPU seconds used in the last hour (quota {max})"),
                retry_after: when.saturating_duration_since(now),
            });
        }
    }
    if !take(&q.running, q.quotas.concurrent_runs) {
        return Err(ApiError::Quota {
            quota: "concurrent_runs",
            detail: format!(
                "{} runs of this tenant at once (quota {})",
                q.running(),
                q.quotas.concurrent_runs.unwrap_or(0)
            ),
            retry_after: busy_retry,
        });
    }
    let guard = RunGuard(tenant.clone());
    if let Some(max) = q.quotas.runs_per_minute {
        let mut starts = lock(&q.starts);
        while starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            starts.pop_front();
        }
        if starts.len() >= max as usize {
            let oldest = starts.front().copied().unwrap_or(now);
            return Err(ApiError::Quota {
                quota: "runs_per_minute",
                detail: format!(
                    "{} runs started in the last minute (quota {max})",
                    starts.len()
                ),
                retry_after: (oldest + MINUTE).saturating_duration_since(now),
            });
        }
        starts.push_back(now);
    }
    Ok(guard)
}

/// Admits a session of `tenant`, or refuses it by its `sessions` quota.
pub(crate) fn admit_session(
    tenant: &Arc<Tenant>,
    busy_retry: Duration,
) -> Result<SessionGuard, ApiError> {
    let q = &tenant.quota;
    if !take(&q.sessions, q.quotas.sessions) {
        return Err(ApiError::Quota {
            quota: "sessions",
            detail: format!(
                "{} sessions of this tenant are open (quota {}); close one",
                q.sessions(),
                q.quotas.sessions.unwrap_or(0)
            ),
            retry_after: busy_retry,
        });
    }
    Ok(SessionGuard(tenant.clone()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use crate::tenants::{hash_key, Tenants};

    fn tenant(quotas: &str) -> Arc<Tenant> {
        let text = format!(
            "[[tenant]]\nname = \"q\"\nquotas = {{ {quotas} }}\nkeys = [{{ sha256 = \"{}\" }}]\n",
            hash_key("k")
        );
        let c = ServerConfig::from_toml(&text).unwrap_or_default();
        Tenants::from_config(&c)
            .ok()
            .and_then(|t| t.all().first().cloned())
            .unwrap_or_else(|| Tenants::anonymous().all()[0].clone())
    }

    fn quota_of(r: Result<RunGuard, ApiError>) -> Option<(&'static str, u64)> {
        match r {
            Err(e @ ApiError::Quota { quota, .. }) => Some((quota, e.retry_after().unwrap_or(0))),
            _ => None,
        }
    }

    #[test]
    fn concurrent_runs_are_bounded_and_given_back() {
        let t = tenant("concurrent_runs = 2");
        let now = Instant::now();
        let a = admit_run(&t, now, Duration::from_secs(1));
        let b = admit_run(&t, now, Duration::from_secs(1));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(
            quota_of(admit_run(&t, now, Duration::from_secs(1))),
            Some(("concurrent_runs", 1))
        );
        drop(a);
        assert!(admit_run(&t, now, Duration::from_secs(1)).is_ok());
        assert_eq!(
            t.quota.running(),
            1,
            "the refused and dropped runs gave their place back"
        );
    }

    #[test]
    fn runs_per_minute_slide() {
        let t = tenant("runs_per_minute = 3");
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(admit_run(&t, t0 + Duration::from_secs(i * 10), Duration::ZERO).is_ok());
        }
        let at = t0 + Duration::from_secs(30);
        // The oldest start (t0) leaves the window at t0 + 60 s: 30 s from now.
        assert_eq!(
            quota_of(admit_run(&t, at, Duration::ZERO)),
            Some(("runs_per_minute", 30))
        );
        assert!(admit_run(&t, t0 + Duration::from_secs(61), Duration::ZERO).is_ok());
    }

    #[test]
    fn cpu_seconds_per_hour() {
        let t = tenant("cpu_seconds_per_hour = 10.0");
        let t0 = Instant::now();
        assert!(admit_run(&t, t0, Duration::ZERO).is_ok());
        t.quota.record_cpu(6.0, t0);
        t.quota.record_cpu(5.0, t0 + Duration::from_secs(120));
        assert!((t.quota.cpu_last_hour(t0 + Duration::from_secs(130)) - 11.0).abs() < 1e-9);
        let at = t0 + Duration::from_secs(600);
        // Under the quota again once the first minute's 6 s leave the hour.
        assert_eq!(
            quota_of(admit_run(&t, at, Duration::ZERO)),
            Some(("cpu_seconds_per_hour", 3000))
        );
        assert!(admit_run(&t, t0 + HOUR, Duration::ZERO).is_ok());
    }

    #[test]
    fn sessions_are_bounded() {
        let t = tenant("sessions = 1");
        let a = admit_session(&t, Duration::from_secs(1));
        assert!(a.is_ok());
        assert!(admit_session(&t, Duration::from_secs(1)).is_err());
        drop(a);
        assert!(admit_session(&t, Duration::from_secs(1)).is_ok());
    }
}
