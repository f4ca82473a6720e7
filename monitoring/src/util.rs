//! Small helpers shared by the components: timestamps, hex, and reporting a failure at most once
//! per interval.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `t` as RFC 3339 in UTC with milliseconds (`2026-05-01T12:34:56.789Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Parses 64 lower-case hex digits into 32 bytes.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let v = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = (v(pair[0])? << 4) | v(pair[1])?;
    }
    Some(out)
}

/// Decides when a recurring failure is worth a log line: the first one, then at most one per
/// interval, each saying how many happened since the last report. Failures are counted either
/// way; only the reporting is throttled.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    since_last: u64,
}

impl Throttle {
    /// Reports at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            since_last: 0,
        }
    }

    /// Counts one failure; `Some(n)` when it should be reported now, `n` being the failures
    /// since the previous report (this one included).
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.since_last += 1;
        let due = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.since_last))
        } else {
            None
        }
    }

    /// Failures counted but not yet reported, if the interval has passed: for a periodic tick
    /// that reports what the last `hit` kept quiet.
    pub fn pending(&mut self, now: Instant) -> Option<u64> {
        if self.since_last == 0 {
            return None;
        }
        let due = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.since_last))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // last second of 2025
        assert_eq!(rfc3339(t), "2025-12-31T23:59:59.000Z");
    }

    #[test]
    fn hex_round_trips() {
        let b: Vec<u8> = (0..32).collect();
        let h = hex(&b);
        assert_eq!(&h[..6], "000102");
        assert_eq!(unhex32(&h).unwrap().to_vec(), b);
        assert!(unhex32("zz").is_none());
        assert!(unhex32(&h.to_uppercase()).is_none());
    }

    #[test]
    fn throttle_reports_once_per_interval_with_counts() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.hit(t0), Some(1));
        assert_eq!(t.hit(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.hit(t0 + Duration::from_secs(2)), None);
        assert_eq!(t.pending(t0 + Duration::from_secs(5)), None);
        assert_eq!(t.pending(t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(t.pending(t0 + Duration::from_secs(30)), None);
        assert_eq!(t.hit(t0 + Duration::from_secs(31)), Some(1));
    }
}

/// What [`Inbox::next`] found.
#[derive(Debug)]
pub enum Next<T> {
    /// A message.
    Item(T),
    /// The queue was just emptied after messages: a good moment to write a batch.
    Drained,
    /// Nothing came within the tick.
    Idle,
    /// Every sender is gone.
    Closed,
}

/// How long a busy inbox naps between polls, and how many empty polls end the busy spell.
const NAP: Duration = Duration::from_millis(10);
const BUSY_NAPS: u32 = 5;

/// The receiving end of a worker thread's bounded queue. While messages keep coming it polls
/// with short naps instead of blocking, so that a sender (a run, in `on_event`) never has to
/// wake the worker: on a small host a wake-up per event costs the run a context switch. After
/// `BUSY_NAPS` empty polls it blocks again until the next message or the tick.
#[derive(Debug)]
pub struct Inbox<T> {
    rx: std::sync::mpsc::Receiver<T>,
    busy: bool,
    naps: u32,
}

impl<T> Inbox<T> {
    /// Receives from `rx`.
    pub fn new(rx: std::sync::mpsc::Receiver<T>) -> Self {
        Self {
            rx,
            busy: false,
            naps: 0,
        }
    }

    /// The next message, or what happened instead.
    pub fn next(&mut self, tick: Duration) -> Next<T> {
        use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
        loop {
            match self.rx.try_recv() {
                Ok(m) => {
                    self.busy = true;
                    self.naps = 0;
                    return Next::Item(m);
                }
                Err(TryRecvError::Disconnected) => return Next::Closed,
                Err(TryRecvError::Empty) => {}
            }
            if self.busy {
                if self.naps == 0 {
                    self.naps = 1;
                    return Next::Drained;
                }
                if self.naps <= BUSY_NAPS {
                    self.naps += 1;
                    std::thread::sleep(NAP);
                    continue;
                }
                self.busy = false;
            }
            return match self.rx.recv_timeout(tick) {
                Ok(m) => {
                    self.busy = true;
                    self.naps = 0;
                    Next::Item(m)
                }
                Err(RecvTimeoutError::Timeout) => Next::Idle,
                Err(RecvTimeoutError::Disconnected) => Next::Closed,
            };
        }
    }
}
