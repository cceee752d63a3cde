//! The server's figures next to the engine's: one list of samples, shown as Prometheus text
//! (`GET /metrics`) and as the `system_metrics` view, so a dashboard over SQL and a scraper see the
//! same numbers.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::time::Instant;

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use trafficdb::Engine;
use trafficdb::metrics::{Histogram, Sample};
use trafficdb_udfs::computed::ComputedTable;

use crate::ops::stats::Stats;

/// Counters the server keeps.
#[derive(Debug)]
pub struct ServerMetrics {
    started: Instant,
    /// Statements run over the PostgreSQL protocol, and how many failed.
    pub queries: AtomicU64,
    pub query_errors: AtomicU64,
    /// From the statement's arrival to its last row.
    pub query_seconds: Histogram,
    /// Statements run through `POST /api/v1/query`, how many failed, and how many the client left
    /// before their last row (their execution dropped).
    pub http_queries: AtomicU64,
    pub http_query_errors: AtomicU64,
    pub http_queries_cancelled: AtomicU64,
    pub line_protocol_requests: AtomicU64,
    pub line_protocol_lines: AtomicU64,
    pub line_protocol_rejected: AtomicU64,
    pub line_protocol_seconds: Histogram,
    pub connections: Arc<Stats>,
    /// Cleared when the server starts to shut down.
    pub ready: AtomicBool,
}

impl ServerMetrics {
    pub fn new(connections: Arc<Stats>) -> ServerMetrics {
        ServerMetrics {
            started: Instant::now(),
            queries: AtomicU64::new(0),
            query_errors: AtomicU64::new(0),
            query_seconds: Histogram::default(),
            http_queries: AtomicU64::new(0),
            http_query_errors: AtomicU64::new(0),
            http_queries_cancelled: AtomicU64::new(0),
            line_protocol_requests: AtomicU64::new(0),
            line_protocol_lines: AtomicU64::new(0),
            line_protocol_rejected: AtomicU64::new(0),
            line_protocol_seconds: Histogram::default(),
            connections,
            ready: AtomicBool::new(false),
        }
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records a finished statement.
    pub fn query_done(&self, started: Instant, ok: bool) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.query_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.query_seconds.observe(started.elapsed());
    }

    /// The engine's samples and the server's.
    pub fn samples(&self, engine: &Engine) -> Vec<Sample> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut out = engine.metrics();
        out.extend([
            Sample::gauge(
                "trafficdb_up",
                "1 while the server is ready for clients",
                f64::from(u8::from(self.ready.load(Ordering::Relaxed))),
            )
            .label("version", env!("CARGO_PKG_VERSION")),
            Sample::gauge("trafficdb_uptime_seconds", "Seconds since the server started", self.uptime_seconds()),
            Sample::gauge(
                "trafficdb_memory_resident_bytes",
                "Resident memory of the server process",
                trafficdb::metrics::resident_bytes().unwrap_or(0) as f64,
            ),
            Sample::gauge(
                "trafficdb_connections",
                "Open PostgreSQL connections",
                self.connections.active.load(Ordering::Relaxed) as f64,
            ),
            Sample::counter(
                "trafficdb_connections_total",
                "PostgreSQL connections accepted",
                load(&self.connections.accepted),
            ),
            Sample::counter(
                "trafficdb_queries_total",
                "Statements run over the PostgreSQL protocol",
                load(&self.queries),
            ),
            Sample::counter("trafficdb_query_errors_total", "Statements that failed", load(&self.query_errors)),
            Sample::counter(
                "trafficdb_http_queries_total",
                "Statements run through POST /api/v1/query",
                load(&self.http_queries),
            ),
            Sample::counter(
                "trafficdb_http_query_errors_total",
                "Statements through POST /api/v1/query that failed",
                load(&self.http_query_errors),
            ),
            Sample::counter(
                "trafficdb_http_queries_cancelled_total",
                "Statements through POST /api/v1/query whose client left before the last row",
                load(&self.http_queries_cancelled),
            ),
            Sample::counter(
                "trafficdb_line_protocol_requests_total",
                "Line-protocol write requests",
                load(&self.line_protocol_requests),
            ),
            Sample::counter(
                "trafficdb_line_protocol_lines_total",
                "Line-protocol lines received",
                load(&self.line_protocol_lines),
            ),
            Sample::counter(
                "trafficdb_line_protocol_rejected_total",
                "Line-protocol lines refused",
                load(&self.line_protocol_rejected),
            ),
        ]);
        out.extend(self.query_seconds.samples(
            "trafficdb_query_seconds",
            "Statement latency, arrival to last row",
            &[],
        ));
        out.extend(self.line_protocol_seconds.samples(
            "trafficdb_line_protocol_seconds",
            "Line-protocol write latency, body received to durable",
            &[],
        ));
        out
    }
}

/// Prometheus's text exposition format (version 0.0.4).
pub fn prometheus(samples: &[Sample]) -> String {
    let mut out = String::with_capacity(samples.len() * 96);
    let mut last_family = "";
    for s in samples {
        if s.family != last_family {
            let _ = writeln!(out, "# HELP {} {}", s.family, s.help);
            let _ = writeln!(out, "# TYPE {} {}", s.family, s.kind.name());
            last_family = s.family;
        }
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(out, "{k}=\"{v}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", number(s.value));
    }
    out
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `system_metrics`: the samples as rows (name, labels, value, kind, help).
pub fn metrics_table(engine: Arc<Engine>, metrics: Arc<ServerMetrics>) -> ComputedTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("help", DataType::Utf8, false),
    ]));
    let rows_schema = schema.clone();
    ComputedTable::new(schema, move || {
        let samples = metrics.samples(&engine);
        let labels: Vec<String> = samples
            .iter()
            .map(|s| s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
            .collect();
        Ok(RecordBatch::try_new(
            rows_schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(samples.iter().map(|s| s.name.as_str()))),
                Arc::new(StringArray::from(labels)),
                Arc::new(Float64Array::from_iter_values(samples.iter().map(|s| s.value))),
                Arc::new(StringArray::from_iter_values(samples.iter().map(|s| s.kind.name()))),
                Arc::new(StringArray::from_iter_values(samples.iter().map(|s| s.help))),
            ],
        )?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trafficdb::metrics::Kind;

    #[test]
    fn prometheus_text() {
        let h = Histogram::default();
        h.observe(std::time::Duration::from_millis(2));
        let mut samples = vec![
            Sample::counter("a_total", "Things", 3.0),
            Sample::gauge("b", "Per table", 1.5).label("table", "x\"y"),
            Sample::gauge("b", "Per table", 2.0).label("table", "z"),
        ];
        samples.extend(h.samples("c_seconds", "Latency", &[]));
        let text = prometheus(&samples);
        assert!(text.starts_with("# HELP a_total Things\n# TYPE a_total counter\na_total 3\n"), "{text}");
        assert!(text.contains("# TYPE b gauge\nb{table=\"x\\\"y\"} 1.5\nb{table=\"z\"} 2\n"), "{text}");
        assert_eq!(text.matches("# TYPE c_seconds histogram").count(), 1, "{text}");
        assert!(text.contains("c_seconds_bucket{le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("c_seconds_bucket{le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("c_seconds_bucket{le=\"+Inf\"} 1\nc_seconds_sum 0.002\nc_seconds_count 1\n"), "{text}");
        assert_eq!(Kind::Histogram.name(), "histogram");
    }
}
