//! Deduplication and rate limiting, synchronous and deterministic (time is passed in).
//!
//! The first alert of a (rule, subject) goes out at once; repeats within the window are folded
//! into it and, when the window ends, go out as one alert whose `count` says how many there
//! were (`repeat: true`). A token bucket bounds how many alerts leave per minute in all; what
//! it refuses is counted, never lost silently.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Alert;

struct Window {
    started: Instant,
    folded: u64,
    latest: Option<Alert>,
}

/// Folds repeats of (rule, subject) within a window.
pub(crate) struct Dedup {
    window: Duration,
    entries: HashMap<(String, String), Window>,
}

impl Dedup {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            entries: HashMap::new(),
        }
    }

    /// What to send now for `alert`: the previous window's summary (if it had repeats and has
    /// ended) and `alert` itself when it opens a new window. Returns also how many occurrences
    /// were folded (0 or 1).
    pub(crate) fn offer(&mut self, alert: Alert, now: Instant) -> (Vec<Alert>, u64) {
        let key = (alert.rule.clone(), alert.subject.clone());
        let mut out = Vec::new();
        if let Some(w) = self.entries.get_mut(&key) {
            if now.saturating_duration_since(w.started) < self.window {
                w.folded += 1;
                if let Some(l) = &mut w.latest {
                    l.last_seen.clone_from(&alert.last_seen);
                    l.count = w.folded;
                    l.finding = alert.finding.clone().or(l.finding.take());
                    l.value = alert.value.or(l.value);
                } else {
                    let mut a = alert;
                    a.count = w.folded;
                    a.repeat = true;
                    w.latest = Some(a);
                }
                return (out, 1);
            }
            if let Some(summary) = self.entries.remove(&key).and_then(summary) {
                out.push(summary);
            }
        }
        self.entries.insert(
            key,
            Window {
                started: now,
                folded: 0,
                latest: None,
            },
        );
        out.push(alert);
        (out, 0)
    }

    /// Summaries of windows that ended with repeats; forgets every ended window.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Alert> {
        let window = self.window;
        let mut out = Vec::new();
        self.entries.retain(|_, w| {
            if now.saturating_duration_since(w.started) < window {
                return true;
            }
            if let Some(s) = w.latest.take().filter(|_| w.folded > 0) {
                out.push(s);
            }
            false
        });
        out.sort_by(|a, b| (&a.rule, &a.subject).cmp(&(&b.rule, &b.subject)));
        out
    }
}

fn summary(w: Window) -> Option<Alert> {
    w.latest.filter(|_| w.folded > 0)
}

/// At most `per_minute` alerts a minute, in bursts of up to that many.
pub(crate) struct RateLimit {
    per_minute: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimit {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            tokens: f64::from(per_minute),
            last: None,
        }
    }

    /// Whether one more alert may go now.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() / 60.0
                * f64::from(self.per_minute);
            self.tokens = (self.tokens + refill).min(f64::from(self.per_minute));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::alert::AlertKind;
    use crate::threat::Severity;

    fn alert(rule: &str, subject: &str) -> Alert {
        Alert {
            rule: rule.into(),
            kind: AlertKind::Finding,
            subject: subject.into(),
            severity: Severity::High,
            summary: "s".into(),
            count: 1,
            repeat: false,
            first_seen: "t0".into(),
            last_seen: "t0".into(),
            finding: None,
            value: None,
            threshold: None,
        }
    }

    #[test]
    fn repeats_within_the_window_become_one_alert_with_a_count() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(60));
        let (out, folded) = d.offer(alert("r", "acme"), t0);
        assert_eq!((out.len(), folded), (1, 0));
        for i in 1..=4 {
            let (out, folded) = d.offer(alert("r", "acme"), t0 + Duration::from_secs(i));
            assert_eq!((out.len(), folded), (0, 1));
        }
        // Another subject is another alert.
        assert_eq!(d.offer(alert("r", "beta"), t0).0.len(), 1);
        assert!(d.tick(t0 + Duration::from_secs(30)).is_empty());
        let s = d.tick(t0 + Duration::from_secs(61));
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(
            (s[0].subject.as_str(), s[0].count, s[0].repeat),
            ("acme", 4, true)
        );
        // After the window a new occurrence goes out at once again.
        assert_eq!(
            d.offer(alert("r", "acme"), t0 + Duration::from_secs(62))
                .0
                .len(),
            1
        );
    }

    #[test]
    fn a_new_window_flushes_the_previous_summary_first() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(10));
        d.offer(alert("r", "a"), t0);
        d.offer(alert("r", "a"), t0 + Duration::from_secs(1));
        let (out, _) = d.offer(alert("r", "a"), t0 + Duration::from_secs(11));
        assert_eq!(out.len(), 2);
        assert!(out[0].repeat && out[0].count == 1);
        assert!(!out[1].repeat);
    }

    #[test]
    fn the_rate_limit_refills() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(2);
        assert!(r.allow(t0));
        assert!(r.allow(t0));
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + Duration::from_secs(30)));
        assert!(!r.allow(t0 + Duration::from_secs(31)));
    }
}
