//! Operational thresholds: queue depth, a refused request (capacity), the share of runs that
//! fail, and sandbox errors. Synchronous and deterministic (time is passed in).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vana_sandbox_core::{Load, Status};

use crate::threat::Severity;

/// A share of runs within a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateThreshold {
    /// Alert at or above this share (0..=1).
    pub ratio: f64,
    /// Only once the window holds at least this many runs.
    pub min_runs: u32,
    /// The window.
    #[serde(with = "secs")]
    pub window: Duration,
}

/// A count within a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CountThreshold {
    /// Alert at this many.
    pub count: u32,
    /// The window.
    #[serde(with = "secs")]
    pub window: Duration,
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// Which operational alerts to raise. `None` turns one off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Executions waiting for a slot (`queue_depth`, medium).
    pub queue_depth: Option<usize>,
    /// A request refused because the queue was full (`queue_full`, high).
    pub queue_full: bool,
    /// Share of slots busy while executions wait (`capacity`, low).
    pub capacity: Option<f64>,
    /// Share of admitted runs that did not succeed (`error_rate`, medium): every status but
    /// `success` and `rejected`.
    pub error_rate: Option<RateThreshold>,
    /// Runs that ended in `sandbox_error` (`sandbox_errors`, high).
    pub sandbox_errors: Option<CountThreshold>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            queue_depth: None,
            queue_full: true,
            capacity: Some(1.0),
            error_rate: Some(RateThreshold {
                ratio: 0.5,
                min_runs: 20,
                window: Duration::from_secs(300),
            }),
            sandbox_errors: Some(CountThreshold {
                count: 3,
                window: Duration::from_secs(300),
            }),
        }
    }
}

/// One threshold crossed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Breach {
    pub rule: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub value: f64,
    pub threshold: f64,
}

pub(crate) struct ThresholdState {
    config: Thresholds,
    /// Armed: the next crossing raises an alert (re-armed once the value is back below).
    depth_armed: bool,
    capacity_armed: bool,
    runs: VecDeque<(Instant, bool)>,
    sandbox_errors: VecDeque<Instant>,
}

fn trim<T>(q: &mut VecDeque<T>, now: Instant, window: Duration, at: impl Fn(&T) -> Instant) {
    while q
        .front()
        .is_some_and(|x| now.saturating_duration_since(at(x)) > window)
    {
        q.pop_front();
    }
}

impl ThresholdState {
    pub(crate) fn new(config: Thresholds) -> Self {
        Self {
            config,
            depth_armed: true,
            capacity_armed: true,
            runs: VecDeque::new(),
            sandbox_errors: VecDeque::new(),
        }
    }

    /// The engine's load changed.
    pub(crate) fn load(&mut self, load: &Load) -> Vec<Breach> {
        let mut out = Vec::new();
        if let Some(max) = self.config.queue_depth {
            if load.queued >= max && self.depth_armed {
                self.depth_armed = false;
                out.push(Breach {
                    rule: "queue_depth",
                    severity: Severity::Medium,
                    summary: format!(
                        "{} executions are waiting for a slot (threshold {max}, queue size {})",
                        load.queued, load.max_queue
                    ),
                    value: load.queued as f64,
                    threshold: max as f64,
                });
            } else if load.queued < max {
                self.depth_armed = true;
            }
        }
        if let Some(share) = self.config.capacity {
            let busy = if load.max_concurrency == 0 {
                0.0
            } else {
                load.running as f64 / load.max_concurrency as f64
            };
            if busy >= share && load.queued > 0 && self.capacity_armed {
                self.capacity_armed = false;
                out.push(Breach {
                    rule: "capacity",
                    severity: Severity::Low,
                    summary: format!(
                        "{} of {} slots busy with {} waiting: at capacity",
                        load.running, load.max_concurrency, load.queued
                    ),
                    value: busy,
                    threshold: share,
                });
            } else if busy < share || load.queued == 0 {
                self.capacity_armed = true;
            }
        }
        out
    }

    /// A request was refused: the queue was full.
    pub(crate) fn queue_full(&mut self, load: &Load) -> Option<Breach> {
        self.config.queue_full.then(|| Breach {
            rule: "queue_full",
            severity: Severity::High,
            summary: format!(
                "a request was refused: the queue is full ({} waiting, {} running)",
                load.queued, load.running
            ),
            value: load.queued as f64,
            threshold: load.max_queue as f64,
        })
    }

    /// A run finished with `status`.
    pub(crate) fn finished(&mut self, status: Status, now: Instant) -> Vec<Breach> {
        let mut out = Vec::new();
        if status == Status::Rejected {
            return out;
        }
        if let Some(t) = self.config.error_rate {
            self.runs.push_back((now, status != Status::Success));
            trim(&mut self.runs, now, t.window, |x| x.0);
            let failed = self.runs.iter().filter(|x| x.1).count();
            let ratio = failed as f64 / self.runs.len() as f64;
            if self.runs.len() >= t.min_runs as usize
                && ratio >= t.ratio
                && status != Status::Success
            {
                out.push(Breach {
                    rule: "error_rate",
                    severity: Severity::Medium,
                    summary: format!(
                        "{failed} of the last {} runs did not succeed ({:.0}% ≥ {:.0}% within {} s)",
                        self.runs.len(),
                        ratio * 100.0,
                        t.ratio * 100.0,
                        t.window.as_secs()
                    ),
                    value: ratio,
                    threshold: t.ratio,
                });
            }
        }
        if let (Some(t), Status::SandboxError) = (self.config.sandbox_errors, status) {
            self.sandbox_errors.push_back(now);
            trim(&mut self.sandbox_errors, now, t.window, |x| *x);
            if self.sandbox_errors.len() >= t.count as usize {
                out.push(Breach {
                    rule: "sandbox_errors",
                    severity: Severity::High,
                    summary: format!(
                        "{} runs ended in sandbox_error within {} s (threshold {})",
                        self.sandbox_errors.len(),
                        t.window.as_secs(),
                        t.count
                    ),
                    value: self.sandbox_errors.len() as f64,
                    threshold: f64::from(t.count),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn load(running: usize, queued: usize) -> Load {
        Load {
            running,
            queued,
            max_concurrency: 2,
            max_queue: 10,
        }
    }

    #[test]
    fn queue_depth_and_capacity_fire_on_crossing_and_rearm() {
        let mut t = ThresholdState::new(Thresholds {
            queue_depth: Some(3),
            ..Thresholds::default()
        });
        assert!(t.load(&load(1, 0)).is_empty());
        let b = t.load(&load(2, 1));
        assert_eq!(b.iter().map(|b| b.rule).collect::<Vec<_>>(), ["capacity"]);
        assert!(t.load(&load(2, 2)).is_empty());
        let b = t.load(&load(2, 3));
        assert_eq!(
            b.iter().map(|b| b.rule).collect::<Vec<_>>(),
            ["queue_depth"]
        );
        assert!(t.load(&load(2, 4)).is_empty(), "no repeat while above");
        assert!(t.load(&load(1, 0)).is_empty());
        let b = t.load(&load(2, 3));
        assert_eq!(b.len(), 2, "re-armed once back below: {b:?}");
    }

    #[test]
    fn error_rate_needs_enough_runs_and_sandbox_errors_count() {
        let t0 = Instant::now();
        let mut t = ThresholdState::new(Thresholds {
            error_rate: Some(RateThreshold {
                ratio: 0.5,
                min_runs: 4,
                window: Duration::from_secs(60),
            }),
            sandbox_errors: Some(CountThreshold {
                count: 2,
                window: Duration::from_secs(60),
            }),
            ..Thresholds::default()
        });
        assert!(t.finished(Status::Error, t0).is_empty());
        assert!(t.finished(Status::Success, t0).is_empty());
        assert!(
            t.finished(Status::Rejected, t0).is_empty(),
            "rejections do not count"
        );
        assert!(t.finished(Status::Success, t0).is_empty());
        let b = t.finished(Status::Timeout, t0);
        assert_eq!(b[0].rule, "error_rate");
        assert_eq!(b[0].value, 0.5);
        let b = t.finished(Status::SandboxError, t0 + Duration::from_secs(1));
        assert!(b.iter().all(|b| b.rule != "sandbox_errors"));
        let b = t.finished(Status::SandboxError, t0 + Duration::from_secs(2));
        assert!(b.iter().any(|b| b.rule == "sandbox_errors"));
        // Old runs leave the window.
        let b = t.finished(Status::SandboxError, t0 + Duration::from_secs(200));
        assert!(b.is_empty(), "{b:?}");
    }
}
