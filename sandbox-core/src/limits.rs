//! Typed limits, and the one table of their ranges and defaults.
//!
//! Limits arrive as numbers on the wire (a request's `limits`, a policy file's `[limits]`). They
//! are checked against [`TABLE`] exactly once, by [`LimitKind::parse`], into typed values
//! ([`Bytes`], [`Cores`], counts, durations) that every later step carries as they are: nothing
//! downstream converts units or re-checks a range.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// A number of bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl Bytes {
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n.saturating_mul(MIB))
    }

    /// The count.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Bytes {
    /// The plan's human form: `"12MB"`, `"512KB"`, `"100B"` (binary multiples, rounded).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        const GIB: u64 = 1024 * MIB;
        let b = self.0;
        if b >= GIB {
            write!(f, "{:.1}GB", b as f64 / GIB as f64)
        } else if b >= MIB {
            write!(f, "{}MB", (b + MIB / 2) / MIB)
        } else if b >= KIB {
            write!(f, "{}KB", (b + KIB / 2) / KIB)
        } else {
            write!(f, "{b}B")
        }
    }
}

/// A CPU share in cores (a quota per scheduling period): finite and positive by construction.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Cores(f64);

impl Cores {
    /// One core.
    pub const ONE: Cores = Cores(1.0);

    /// `n` cores, when `n` is finite and positive.
    pub fn new(n: f64) -> Option<Self> {
        (n.is_finite() && n > 0.0).then_some(Self(n))
    }

    /// The share.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Microseconds of CPU per `period_us` (at least 1000, the kernel's minimum quota).
    pub fn quota_us(self, period_us: u64) -> u64 {
        ((self.0 * period_us as f64) as u64).max(1000)
    }

    /// Billionths of a CPU (Docker's `NanoCpus`).
    pub fn nano(self) -> i64 {
        (self.0 * 1e9) as i64
    }
}

impl TryFrom<f64> for Cores {
    type Error = String;
    fn try_from(n: f64) -> Result<Self, String> {
        Cores::new(n).ok_or_else(|| format!("cpus must be more than 0 (got {n})"))
    }
}

impl From<Cores> for f64 {
    fn from(c: Cores) -> f64 {
        c.0
    }
}

/// Which limit. **Contract**: the wire keys ([`LimitKind::key`]) are those of requests and
/// policy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Memory including swap.
    Memory,
    /// CPU share.
    Cpus,
    /// Writable workspace, /tmp and /dev/shm together.
    Disk,
    /// Processes and threads alive at once.
    Processes,
    /// stdout and stderr together.
    Output,
    /// Wall clock of one step.
    Timeout,
    /// CPU time per process (`RLIMIT_CPU`).
    CpuTime,
}

/// A limit's row in [`TABLE`]: wire key, unit, range and the plan's default (in wire units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitInfo {
    /// Which limit.
    pub kind: LimitKind,
    /// Key in a request's `limits` and a policy file's `[limits]`.
    pub key: &'static str,
    /// Unit of the wire value, for messages.
    pub unit: &'static str,
    /// Smallest accepted wire value.
    pub min: f64,
    /// Largest accepted wire value.
    pub max: f64,
    /// Whether the wire value must be a whole number.
    pub integer: bool,
    /// The plan's default (none: no limit unless asked).
    pub default: Option<f64>,
}

/// Every limit with its range and default. The only place a range is written down.
pub const TABLE: [LimitInfo; 7] = [
    LimitInfo {
        kind: LimitKind::Memory,
        key: "memory_mb",
        unit: "MiB",
        min: 8.0,
        max: (1u64 << 20) as f64,
        integer: true,
        default: Some(512.0),
    },
    LimitInfo {
        kind: LimitKind::Cpus,
        key: "cpus",
        unit: "cores",
        min: 0.01,
        max: 1024.0,
        integer: false,
        default: Some(1.0),
    },
    LimitInfo {
        kind: LimitKind::Disk,
        key: "disk_mb",
        unit: "MiB",
        min: 1.0,
        max: (1u64 << 20) as f64,
        integer: true,
        default: Some(100.0),
    },
    LimitInfo {
        kind: LimitKind::Processes,
        key: "max_processes",
        unit: "processes",
        min: 1.0,
        max: (1u64 << 20) as f64,
        integer: true,
        default: Some(64.0),
    },
    LimitInfo {
        kind: LimitKind::Output,
        key: "max_output_bytes",
        unit: "bytes",
        min: 1.0,
        max: (1u64 << 30) as f64,
        integer: true,
        default: Some((1u64 << 20) as f64),
    },
    LimitInfo {
        kind: LimitKind::Timeout,
        key: "timeout_secs",
        unit: "s",
        min: 0.001,
        max: 3600.0,
        integer: false,
        default: Some(30.0),
    },
    LimitInfo {
        kind: LimitKind::CpuTime,
        key: "cpu_time_secs",
        unit: "s",
        min: 0.001,
        max: 3600.0,
        integer: false,
        default: None,
    },
];

/// A wire value outside its limit's range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} must be {rule} (got {value})")]
pub struct LimitError {
    /// The field as the caller named it (`limits.memory_mb`, `timeout`).
    pub field: String,
    /// The rule broken.
    pub rule: String,
    /// The value given.
    pub value: f64,
}

/// One typed limit value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitValue {
    /// Memory or disk.
    Bytes(Bytes),
    /// CPU share.
    Cores(Cores),
    /// Processes.
    Count(u64),
    /// Timeout or CPU time.
    Duration(Duration),
}

impl LimitKind {
    /// Every limit, in table order.
    pub const ALL: [LimitKind; 7] = [
        LimitKind::Memory,
        LimitKind::Cpus,
        LimitKind::Disk,
        LimitKind::Processes,
        LimitKind::Output,
        LimitKind::Timeout,
        LimitKind::CpuTime,
    ];

    /// This limit's row of [`TABLE`].
    pub fn info(self) -> &'static LimitInfo {
        // The table lists the kinds in `ALL` order.
        &TABLE[self as usize]
    }

    /// The wire key (`memory_mb`, …).
    pub fn key(self) -> &'static str {
        self.info().key
    }

    /// Checks a wire value against the table and converts it. `field` names it in the error.
    pub fn parse(self, field: &str, value: f64) -> Result<LimitValue, LimitError> {
        let info = self.info();
        let err = |rule: String| LimitError {
            field: field.to_string(),
            rule,
            value,
        };
        if !value.is_finite() || value < info.min || value > info.max {
            return Err(err(format!(
                "at least {} and at most {} {}",
                info.min, info.max, info.unit
            )));
        }
        if info.integer && value.fract() != 0.0 {
            return Err(err("a whole number".into()));
        }
        Ok(match self {
            LimitKind::Memory | LimitKind::Disk => LimitValue::Bytes(Bytes::mib(value as u64)),
            LimitKind::Output => LimitValue::Bytes(Bytes(value as u64)),
            LimitKind::Cpus => LimitValue::Cores(Cores(value)),
            LimitKind::Processes => LimitValue::Count(value as u64),
            LimitKind::Timeout | LimitKind::CpuTime => {
                LimitValue::Duration(Duration::from_secs_f64(value))
            }
        })
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Memory => "memory",
            LimitKind::Cpus => "cpu",
            LimitKind::Disk => "disk",
            LimitKind::Processes => "processes",
            LimitKind::Output => "output",
            LimitKind::Timeout => "timeout",
            LimitKind::CpuTime => "cpu_time",
        })
    }
}

/// The limits of one step (or the envelope of an instance), typed and checked.
///
/// Its serde form is the wire form of a policy file's `[limits]` (`memory_mb = 512`, `cpus =
/// 1.0`, …; missing keys take the plan's defaults), and deserialising checks every value against
/// [`TABLE`]: a `Limits` is valid by construction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory plus swap.
    #[serde(rename = "memory_mb", with = "wire::memory")]
    pub memory: Bytes,
    /// CPU share.
    #[serde(with = "wire::cpus")]
    pub cpus: Cores,
    /// Writable workspace, /tmp and /dev/shm together.
    #[serde(rename = "disk_mb", with = "wire::disk")]
    pub disk: Bytes,
    /// Processes and threads alive at once.
    #[serde(rename = "max_processes", with = "wire::processes")]
    pub processes: u64,
    /// stdout and stderr together.
    #[serde(rename = "max_output_bytes", with = "wire::output")]
    pub output: Bytes,
    /// Wall clock.
    #[serde(rename = "timeout_secs", with = "wire::timeout")]
    pub timeout: Duration,
    /// CPU time per process (`RLIMIT_CPU`), when set.
    #[serde(
        rename = "cpu_time_secs",
        with = "wire::cpu_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_time: Option<Duration>,
}

/// Serde of single limits in their wire units, checked against [`TABLE`] on the way in. Policy
/// types use these for fields that hold one limit.
pub mod wire {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Bytes, Cores, LimitKind, LimitValue};

    fn de<'de, D: Deserializer<'de>>(d: D, kind: LimitKind) -> Result<LimitValue, D::Error> {
        let v = f64::deserialize(d)?;
        kind.parse(kind.key(), v).map_err(serde::de::Error::custom)
    }

    fn ser_count<S: Serializer>(n: u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(n)
    }

    macro_rules! field {
        ($name:ident, $kind:expr, $ty:ty, $variant:ident, $to_wire:expr) => {
            #[doc = concat!("The `", stringify!($name), "` limit.")]
            pub mod $name {
                use super::*;

                /// Writes the wire value.
                pub fn serialize<S: Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                    #[allow(clippy::redundant_closure_call)]
                    ($to_wire)(*v, s)
                }

                /// Reads and checks the wire value.
                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                    match de(d, $kind)? {
                        LimitValue::$variant(v) => Ok(v),
                        _ => Err(serde::de::Error::custom("wrong unit")),
                    }
                }
            }
        };
    }

    field!(memory, LimitKind::Memory, Bytes, Bytes, |b: Bytes, s| {
        ser_count(b.0 / crate::limits::MIB, s)
    });
    field!(
        disk,
        LimitKind::Disk,
        Bytes,
        Bytes,
        |b: Bytes, s| ser_count(b.0 / crate::limits::MIB, s)
    );
    field!(output, LimitKind::Output, Bytes, Bytes, |b: Bytes, s| {
        ser_count(b.0, s)
    });
    field!(processes, LimitKind::Processes, u64, Count, ser_count);
    field!(cpus, LimitKind::Cpus, Cores, Cores, |c: Cores, s: S| s
        .serialize_f64(c.0));
    field!(
        timeout,
        LimitKind::Timeout,
        Duration,
        Duration,
        |d: Duration, s: S| s.serialize_f64(d.as_secs_f64())
    );

    /// The optional `cpu_time` limit.
    pub mod cpu_time {
        use super::*;

        /// Writes the wire value.
        pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(d) => s.serialize_some(&d.as_secs_f64()),
                None => s.serialize_none(),
            }
        }

        /// Reads and checks the wire value.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            match Option::<f64>::deserialize(d)? {
                None => Ok(None),
                Some(v) => match LimitKind::CpuTime.parse(LimitKind::CpuTime.key(), v) {
                    Ok(LimitValue::Duration(d)) => Ok(Some(d)),
                    Ok(_) => Err(serde::de::Error::custom("wrong unit")),
                    Err(e) => Err(serde::de::Error::custom(e)),
                },
            }
        }
    }
}

impl Default for Limits {
    /// The plan's defaults (from [`TABLE`]): 512 MiB, 1 core, 100 MiB disk, 64 processes,
    /// 1 MiB of output, 30 s, no CPU-time limit.
    fn default() -> Self {
        Limits {
            memory: Bytes::mib(512),
            cpus: Cores::ONE,
            disk: Bytes::mib(100),
            processes: 64,
            output: Bytes(1 << 20),
            timeout: Duration::from_secs(30),
            cpu_time: None,
        }
    }
}

impl Limits {
    /// The bound on a run's socket buffers where the host counts them apart from its memory
    /// (cgroup v1's `memory.kmem.tcp`): a quarter of the memory limit, at least 4 MiB. Pinned
    /// kernel memory of a run thus stays below 1.25 × its memory limit.
    pub fn socket_memory(&self) -> Bytes {
        Bytes((self.memory.get() / 4).max(4 * MIB))
    }

    /// Every limit at the table's maximum (and no CPU-time limit): what a language's own
    /// defaults use for limits it has no opinion on, so that the ceiling decides them.
    pub const MAX: Limits = Limits {
        memory: Bytes((1 << 20) * MIB),
        cpus: Cores(1024.0),
        disk: Bytes((1 << 20) * MIB),
        processes: 1 << 20,
        output: Bytes(1 << 30),
        timeout: Duration::from_secs(3600),
        cpu_time: None,
    };

    /// Sets one limit.
    pub fn set(&mut self, kind: LimitKind, value: LimitValue) {
        match (kind, value) {
            (LimitKind::Memory, LimitValue::Bytes(b)) => self.memory = b,
            (LimitKind::Disk, LimitValue::Bytes(b)) => self.disk = b,
            (LimitKind::Output, LimitValue::Bytes(b)) => self.output = b,
            (LimitKind::Cpus, LimitValue::Cores(c)) => self.cpus = c,
            (LimitKind::Processes, LimitValue::Count(n)) => self.processes = n,
            (LimitKind::Timeout, LimitValue::Duration(d)) => self.timeout = d,
            (LimitKind::CpuTime, LimitValue::Duration(d)) => self.cpu_time = Some(d),
            _ => {}
        }
    }

    /// One limit, typed (`None`: a CPU-time limit that is not set).
    pub fn get(&self, kind: LimitKind) -> Option<LimitValue> {
        Some(match kind {
            LimitKind::Memory => LimitValue::Bytes(self.memory),
            LimitKind::Disk => LimitValue::Bytes(self.disk),
            LimitKind::Output => LimitValue::Bytes(self.output),
            LimitKind::Cpus => LimitValue::Cores(self.cpus),
            LimitKind::Processes => LimitValue::Count(self.processes),
            LimitKind::Timeout => LimitValue::Duration(self.timeout),
            LimitKind::CpuTime => LimitValue::Duration(self.cpu_time?),
        })
    }

    /// One limit as a wire number (MiB, cores, count, bytes, seconds), for messages and files.
    pub fn wire(&self, kind: LimitKind) -> Option<f64> {
        Some(self.get(kind)?.wire(kind))
    }

    /// Each limit the smaller of `self` and `other` (a language's compile defaults under the
    /// policy's compile ceiling).
    pub fn min(&self, other: &Limits) -> Limits {
        Limits {
            memory: self.memory.min(other.memory),
            cpus: if other.cpus < self.cpus {
                other.cpus
            } else {
                self.cpus
            },
            disk: self.disk.min(other.disk),
            processes: self.processes.min(other.processes),
            output: self.output.min(other.output),
            timeout: self.timeout.min(other.timeout),
            cpu_time: match (self.cpu_time, other.cpu_time) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// Each limit the larger of `self` and `other` (an instance sized for every step it runs).
    pub fn max(&self, other: &Limits) -> Limits {
        Limits {
            memory: self.memory.max(other.memory),
            cpus: if other.cpus > self.cpus {
                other.cpus
            } else {
                self.cpus
            },
            disk: self.disk.max(other.disk),
            processes: self.processes.max(other.processes),
            output: self.output.max(other.output),
            timeout: self.timeout.max(other.timeout),
            cpu_time: match (self.cpu_time, other.cpu_time) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            },
        }
    }

    /// Applies what a request asks for under these limits (the ceiling). Asking for more than
    /// the ceiling is an error naming the limit; what the request leaves out takes the
    /// ceiling's value.
    pub fn tighten(&self, asked: &AskedLimits) -> Result<Limits, Exceeded> {
        let mut out = *self;
        for (kind, value) in asked.iter() {
            if let Some(max) = self.get(kind) {
                if value.magnitude() > max.magnitude() {
                    return Err(Exceeded {
                        kind,
                        asked: value.wire(kind),
                        max: max.wire(kind),
                    });
                }
            }
            out.set(kind, value);
        }
        Ok(out)
    }
}

impl LimitValue {
    /// The value in internal units (bytes, cores, count, seconds), for comparisons.
    fn magnitude(&self) -> f64 {
        match self {
            LimitValue::Bytes(b) => b.0 as f64,
            LimitValue::Cores(c) => c.0,
            LimitValue::Count(n) => *n as f64,
            LimitValue::Duration(d) => d.as_secs_f64(),
        }
    }

    /// The value in `kind`'s wire unit (MiB for memory and disk).
    pub fn wire(&self, kind: LimitKind) -> f64 {
        match (kind, self) {
            (LimitKind::Memory | LimitKind::Disk, LimitValue::Bytes(b)) => (b.0 / MIB) as f64,
            _ => self.magnitude(),
        }
    }
}

/// What a request asked for, checked against the table; each limit optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AskedLimits {
    values: Vec<(LimitKind, LimitValue)>,
}

impl AskedLimits {
    /// Adds one checked value (a later value for the same limit replaces the earlier).
    pub fn push(&mut self, kind: LimitKind, value: LimitValue) {
        self.values.retain(|(k, _)| *k != kind);
        self.values.push((kind, value));
    }

    /// The values asked for.
    pub fn iter(&self) -> impl Iterator<Item = (LimitKind, LimitValue)> + '_ {
        self.values.iter().copied()
    }

    /// Whether nothing was asked.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A request asked for more than the policy allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    /// Which limit.
    pub kind: LimitKind,
    /// What was asked, in the wire unit.
    pub asked: f64,
    /// The policy's maximum, in the wire unit.
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_kind_order_and_defaults_match() {
        for (i, kind) in LimitKind::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].kind, *kind);
        }
        let d = Limits::default();
        for info in &TABLE {
            assert_eq!(d.wire(info.kind), info.default, "{:?}", info.kind);
        }
    }

    #[test]
    fn parse_checks_range_and_wholeness() {
        let m = LimitKind::Memory;
        assert_eq!(
            m.parse("limits.memory_mb", 64.0),
            Ok(LimitValue::Bytes(Bytes::mib(64)))
        );
        assert!(m.parse("limits.memory_mb", 7.0).is_err());
        assert!(m.parse("limits.memory_mb", 64.5).is_err());
        assert!(m.parse("limits.memory_mb", -5.0).is_err());
        assert!(LimitKind::Cpus.parse("cpus", f64::NAN).is_err());
        assert!(LimitKind::Timeout.parse("timeout", 3601.0).is_err());
        let e = m
            .parse("limits.memory_mb", 0.0)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("limits.memory_mb must be at least 8 and at most 1048576 MiB (got 0)")
        );
    }

    #[test]
    fn tighten_never_widens() {
        let ceiling = Limits::default();
        let mut asked = AskedLimits::default();
        asked.push(LimitKind::Memory, LimitValue::Bytes(Bytes::mib(64)));
        let l = ceiling.tighten(&asked);
        assert!(matches!(l, Ok(l) if l.memory == Bytes::mib(64) && l.disk == ceiling.disk));
        asked.push(LimitKind::Memory, LimitValue::Bytes(Bytes::mib(4096)));
        let e = ceiling.tighten(&asked);
        assert!(matches!(
            e,
            Err(Exceeded {
                kind: LimitKind::Memory,
                ..
            })
        ));
        // A CPU-time limit may be asked for when the ceiling has none.
        let mut asked = AskedLimits::default();
        asked.push(
            LimitKind::CpuTime,
            LimitValue::Duration(Duration::from_secs(2)),
        );
        assert_eq!(
            ceiling.tighten(&asked).ok().and_then(|l| l.cpu_time),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn the_wire_form_is_checked_on_the_way_in() {
        let l: Result<Limits, _> = serde_json::from_str(r#"{"memory_mb": 256}"#);
        assert!(matches!(l, Ok(l) if l.memory == Bytes::mib(256) && l.disk == Bytes::mib(100)));
        let e = serde_json::from_str::<Limits>(r#"{"memory_mb": 4}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("memory_mb must be at least 8"), "{e}");
        assert!(serde_json::from_str::<Limits>(r#"{"memroy_mb": 64}"#).is_err());
        let text = serde_json::to_string(&Limits::default()).unwrap_or_default();
        assert!(text.contains(r#""memory_mb":512"#), "{text}");
        assert_eq!(
            serde_json::from_str::<Limits>(&text).ok(),
            Some(Limits::default())
        );
    }

    #[test]
    fn bytes_format_like_the_plan() {
        assert_eq!(Bytes(12_582_912).to_string(), "12MB");
        assert_eq!(Bytes(MIB).to_string(), "1MB");
        assert_eq!(Bytes(4096).to_string(), "4KB");
        assert_eq!(Bytes(10).to_string(), "10B");
        assert_eq!(Bytes(3 * 1024 * MIB).to_string(), "3.0GB");
    }
}
