//! The recorder behind [`Metrics`](super::Metrics): keeps every series in memory so that it can
//! be read as a snapshot, and forwards each update to the Prometheus recorder when there is one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

use super::names::SECONDS_BUCKETS;
use super::snapshot::{Bucket, HistogramValue, Series, Value};

fn add_f64(cell: &AtomicU64, delta: f64) {
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
        Some((f64::from_bits(bits) + delta).to_bits())
    });
}

pub(crate) struct CounterCell {
    value: AtomicU64,
    forward: Counter,
}

impl CounterCell {
    pub(crate) fn increment(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.forward.increment(n);
    }
}

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        CounterCell::increment(self, value);
    }

    fn absolute(&self, value: u64) {
        self.value.fetch_max(value, Ordering::Relaxed);
        self.forward.absolute(value);
    }
}

pub(crate) struct GaugeCell {
    bits: AtomicU64,
    forward: Gauge,
}

impl GaugeCell {
    pub(crate) fn set(&self, v: f64) {
        self.bits.store(v.to_bits(), Ordering::Relaxed);
        self.forward.set(v);
    }

    pub(crate) fn add(&self, delta: f64) {
        add_f64(&self.bits, delta);
        self.forward.increment(delta);
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.add(value);
    }

    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    fn set(&self, value: f64) {
        GaugeCell::set(self, value);
    }
}

pub(crate) struct HistogramCell {
    count: AtomicU64,
    sum_bits: AtomicU64,
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; SECONDS_BUCKETS.len() + 1],
    forward: Histogram,
}

impl HistogramCell {
    pub(crate) fn record(&self, v: f64) {
        let slot = SECONDS_BUCKETS
            .iter()
            .position(|&le| v <= le)
            .unwrap_or(SECONDS_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        add_f64(&self.sum_bits, v);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.forward.record(v);
    }
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        HistogramCell::record(self, value);
    }
}

type Map<T> = RwLock<HashMap<Key, Arc<T>>>;

fn get_or_insert<T>(map: &Map<T>, key: &Key, make: impl FnOnce() -> T) -> Arc<T> {
    if let Some(c) = map.read().unwrap_or_else(|p| p.into_inner()).get(key) {
        return c.clone();
    }
    map.write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_insert_with(|| Arc::new(make()))
        .clone()
}

/// Where updates are forwarded besides the snapshot.
pub(crate) trait Forward: Send + Sync {
    fn recorder(&self) -> &dyn Recorder;
    /// Called every few thousand histogram records (upkeep).
    fn upkeep(&self) {}
}

#[derive(Default)]
pub(crate) struct Registry {
    counters: Map<CounterCell>,
    gauges: Map<GaugeCell>,
    histograms: Map<HistogramCell>,
    forward: Option<Box<dyn Forward>>,
    records: AtomicU64,
}

const UPKEEP_EVERY: u64 = 4096;

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Registry {
    pub(crate) fn new(forward: Option<Box<dyn Forward>>) -> Self {
        Self {
            forward,
            ..Self::default()
        }
    }

    pub(crate) fn forward(&self) -> Option<&dyn Forward> {
        self.forward.as_deref()
    }

    pub(crate) fn counter(&self, key: &Key) -> Arc<CounterCell> {
        get_or_insert(&self.counters, key, || CounterCell {
            value: AtomicU64::new(0),
            forward: self
                .forward
                .as_ref()
                .map(|f| f.recorder().register_counter(key, &META))
                .unwrap_or_else(Counter::noop),
        })
    }

    pub(crate) fn gauge(&self, key: &Key) -> Arc<GaugeCell> {
        get_or_insert(&self.gauges, key, || GaugeCell {
            bits: AtomicU64::new(0f64.to_bits()),
            forward: self
                .forward
                .as_ref()
                .map(|f| f.recorder().register_gauge(key, &META))
                .unwrap_or_else(Gauge::noop),
        })
    }

    pub(crate) fn histogram(&self, key: &Key) -> Arc<HistogramCell> {
        if let Some(f) = &self.forward {
            if self.records.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
                f.upkeep();
            }
        }
        get_or_insert(&self.histograms, key, || HistogramCell {
            count: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            buckets: Default::default(),
            forward: self
                .forward
                .as_ref()
                .map(|f| f.recorder().register_histogram(key, &META))
                .unwrap_or_else(Histogram::noop),
        })
    }

    /// Every series, sorted by name and labels.
    pub(crate) fn series(&self) -> Vec<Series> {
        let mut out = Vec::new();
        let labels = |k: &Key| {
            k.labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect()
        };
        for (k, c) in self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            out.push(Series {
                name: k.name().to_string(),
                labels: labels(k),
                value: Value::Counter {
                    value: c.value.load(Ordering::Relaxed),
                },
            });
        }
        for (k, g) in self.gauges.read().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push(Series {
                name: k.name().to_string(),
                labels: labels(k),
                value: Value::Gauge {
                    value: f64::from_bits(g.bits.load(Ordering::Relaxed)),
                },
            });
        }
        for (k, h) in self
            .histograms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let mut cumulative = 0;
            let mut buckets = Vec::with_capacity(SECONDS_BUCKETS.len() + 1);
            for (i, b) in h.buckets.iter().enumerate() {
                cumulative += b.load(Ordering::Relaxed);
                buckets.push(Bucket {
                    le: SECONDS_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                    count: cumulative,
                });
            }
            out.push(Series {
                name: k.name().to_string(),
                labels: labels(k),
                value: Value::Histogram(HistogramValue {
                    count: h.count.load(Ordering::Relaxed),
                    sum: f64::from_bits(h.sum_bits.load(Ordering::Relaxed)),
                    buckets,
                }),
            });
        }
        out.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        out
    }
}

impl Recorder for Registry {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(f) = &self.forward {
            f.recorder().describe_counter(key, unit, description);
        }
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(f) = &self.forward {
            f.recorder().describe_gauge(key, unit, description);
        }
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(f) = &self.forward {
            f.recorder().describe_histogram(key, unit, description);
        }
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.counter(key))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.gauge(key))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.histogram(key))
    }
}
