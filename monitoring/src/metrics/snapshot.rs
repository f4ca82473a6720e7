//! The current values of every series, as plain data: for tests, for the Python bindings
//! ("metrics readable as a dict") and for the dashboard picture.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One histogram bucket: observations `<= le` (cumulative, as in Prometheus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound (seconds; `inf` for the last).
    #[serde(with = "le")]
    pub le: f64,
    /// Observations at or below it.
    pub count: u64,
}

mod le {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_infinite() {
            s.serialize_str("+Inf")
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Le {
            N(f64),
            S(serde::de::IgnoredAny),
        }
        Ok(match Le::deserialize(d)? {
            Le::N(n) => n,
            Le::S(_) => f64::INFINITY,
        })
    }
}

/// A histogram's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramValue {
    /// Observations.
    pub count: u64,
    /// Their sum (seconds).
    pub sum: f64,
    /// Cumulative buckets, the last one `+Inf`.
    pub buckets: Vec<Bucket>,
}

impl HistogramValue {
    /// The `q` quantile (0..=1) estimated from the buckets like Prometheus'
    /// `histogram_quantile` (linear within a bucket); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut lower = (0.0, 0u64);
        for b in &self.buckets {
            if b.count as f64 >= rank {
                if b.le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = (b.count - lower.1) as f64;
                let frac = if in_bucket > 0.0 {
                    (rank - lower.1 as f64) / in_bucket
                } else {
                    0.0
                };
                return Some(lower.0 + (b.le - lower.0) * frac);
            }
            lower = (b.le, b.count);
        }
        Some(lower.0)
    }

    fn merge(&mut self, other: &HistogramValue) {
        self.count += other.count;
        self.sum += other.sum;
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
        } else {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                a.count += b.count;
            }
        }
    }
}

/// The value of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Value {
    /// A counter.
    Counter {
        /// Its value.
        value: u64,
    },
    /// A gauge.
    Gauge {
        /// Its value.
        value: f64,
    },
    /// A histogram.
    Histogram(HistogramValue),
}

/// One series: a name, its labels and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: Value,
}

impl Series {
    fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }

    /// `name{k="v",…}` in Prometheus' notation.
    pub fn id(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// Every series at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// The series, sorted by name and labels.
    pub series: Vec<Series>,
}

impl MetricsSnapshot {
    /// The sum of the counters named `name` whose labels include `labels` (0 when none).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.series
            .iter()
            .filter(|s| s.matches(name, labels))
            .map(|s| match s.value {
                Value::Counter { value } => value,
                _ => 0,
            })
            .sum()
    }

    /// The first gauge named `name` whose labels include `labels`.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series
            .iter()
            .filter(|s| s.matches(name, labels))
            .find_map(|s| match s.value {
                Value::Gauge { value } => Some(value),
                _ => None,
            })
    }

    /// The histograms named `name` whose labels include `labels`, merged.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<HistogramValue> {
        let mut merged: Option<HistogramValue> = None;
        for s in self.series.iter().filter(|s| s.matches(name, labels)) {
            if let Value::Histogram(h) = &s.value {
                merged.get_or_insert_with(HistogramValue::default).merge(h);
            }
        }
        merged
    }

    /// A flat map: `name{labels}` → value; histograms as `name_count{…}` and `name_sum{…}`.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut map = BTreeMap::new();
        for s in &self.series {
            match &s.value {
                Value::Counter { value } => {
                    map.insert(s.id(), *value as f64);
                }
                Value::Gauge { value } => {
                    map.insert(s.id(), *value);
                }
                Value::Histogram(h) => {
                    let with = |suffix: &str| Series {
                        name: format!("{}{suffix}", s.name),
                        labels: s.labels.clone(),
                        value: Value::Gauge { value: 0.0 },
                    };
                    map.insert(with("_count").id(), h.count as f64);
                    map.insert(with("_sum").id(), h.sum);
                }
            }
        }
        map
    }

    /// The snapshot as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"series\":[]}".into())
    }
}
