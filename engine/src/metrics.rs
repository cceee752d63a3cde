//! Figures about the database itself: counters and histograms kept as it runs, and [`Sample`]s read
//! from them on demand. The server shows the same samples as Prometheus text (`GET /metrics`) and as
//! the `system_metrics` view.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a sample measures, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One value of a metric. Histograms give several: `<name>_bucket` with an `le` label per bound,
/// `<name>_sum` and `<name>_count`, all with the histogram's `family` name and kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric family (for histograms, without the `_bucket` / `_sum` / `_count` suffix).
    pub family: &'static str,
    /// The sample's own name.
    pub name: String,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn counter(family: &'static str, help: &'static str, value: f64) -> Sample {
        Sample { family, name: family.to_string(), kind: Kind::Counter, help, labels: Vec::new(), value }
    }

    pub fn gauge(family: &'static str, help: &'static str, value: f64) -> Sample {
        Sample { family, name: family.to_string(), kind: Kind::Gauge, help, labels: Vec::new(), value }
    }

    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Sample {
        self.labels.push((key, value.into()));
        self
    }
}

/// Upper bounds, in seconds, of the latency buckets: 100 µs to 60 s.
pub const LATENCY_BOUNDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// A latency histogram with fixed buckets ([`LATENCY_BOUNDS`]), safe to update from any thread.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|&b| s <= b).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The histogram's samples: cumulative buckets (the last one `+Inf`), sum in seconds, count.
    pub fn samples(&self, family: &'static str, help: &'static str, labels: &[(&'static str, String)]) -> Vec<Sample> {
        let mut out = Vec::with_capacity(LATENCY_BOUNDS.len() + 3);
        let mut cumulative = 0u64;
        let sample = |name: String, value: f64, extra: Option<String>| {
            let mut labels = labels.to_vec();
            if let Some(le) = extra {
                labels.push(("le", le));
            }
            Sample { family, name, kind: Kind::Histogram, help, labels, value }
        };
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = LATENCY_BOUNDS.get(i).map_or_else(|| "+Inf".to_string(), |v| v.to_string());
            out.push(sample(format!("{family}_bucket"), cumulative as f64, Some(le)));
        }
        out.push(sample(format!("{family}_sum"), self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9, None));
        out.push(sample(format!("{family}_count"), cumulative as f64, None));
        out
    }
}

/// The resident memory of this process in bytes (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(120));
        let s = h.samples("t_seconds", "test", &[("op", "x".into())]);
        let bucket = |le: &str| s.iter().find(|x| x.labels.iter().any(|(k, v)| *k == "le" && v == le)).unwrap().value;
        assert_eq!(bucket("0.0001"), 1.0);
        assert_eq!(bucket("0.0025"), 1.0);
        assert_eq!(bucket("0.005"), 3.0);
        assert_eq!(bucket("60"), 3.0);
        assert_eq!(bucket("+Inf"), 4.0);
        let count = s.iter().find(|x| x.name == "t_seconds_count").unwrap();
        assert_eq!(count.value, 4.0);
        assert_eq!(count.labels, vec![("op", "x".to_string())]);
        let sum = s.iter().find(|x| x.name == "t_seconds_sum").unwrap().value;
        assert!((sum - 120.00605).abs() < 1e-9, "{sum}");
    }
}
