//! Shared helpers for the benchmarks: seeded data shaped like `lb_requests` (a timestamp, six text tags
//! of low and medium cardinality, four integers, four doubles, two booleans).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The table the storage benchmarks use.
pub const REQUESTS_DDL: &str = "CREATE TABLE requests (
    ts TIMESTAMP NOT NULL, lb TEXT, listener TEXT, backend TEXT, zone TEXT, method TEXT, path_template TEXT,
    status SMALLINT, attempt INT, request_bytes BIGINT, response_bytes BIGINT,
    connect_ms DOUBLE, target_ms DOUBLE, total_ms DOUBLE, queue_ms DOUBLE,
    timed_out BOOLEAN, is_health_check BOOLEAN
) WITH (time_column = 'ts', partition = '1 day')";

/// 2024-01-01 00:00:00 UTC in microseconds.
pub const START_US: i64 = 1_704_067_200_000_000;

pub fn requests_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        s("lb"),
        s("listener"),
        s("backend"),
        s("zone"),
        s("method"),
        s("path_template"),
        Field::new("status", DataType::Int16, true),
        Field::new("attempt", DataType::Int32, true),
        Field::new("request_bytes", DataType::Int64, true),
        Field::new("response_bytes", DataType::Int64, true),
        Field::new("connect_ms", DataType::Float64, true),
        Field::new("target_ms", DataType::Float64, true),
        Field::new("total_ms", DataType::Float64, true),
        Field::new("queue_ms", DataType::Float64, true),
        Field::new("timed_out", DataType::Boolean, true),
        Field::new("is_health_check", DataType::Boolean, true),
    ]))
}

/// Generates `total` rows spread evenly over `days` days, in time order, in batches of `batch` rows.
pub struct RequestGen {
    rng: ChaCha8Rng,
    next: u64,
    total: u64,
    batch: usize,
    span_us: f64,
    lbs: Vec<String>,
    listeners: Vec<String>,
    backends: Vec<String>,
    zones: Vec<String>,
    paths: Vec<String>,
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

impl RequestGen {
    pub fn new(seed: u64, total: u64, days: u32, batch: usize) -> Self {
        RequestGen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            next: 0,
            total,
            batch,
            span_us: days as f64 * 86_400e6,
            lbs: (0..8).map(|i| format!("lb-{i}")).collect(),
            listeners: ["http", "https", "grpc", "admin"].iter().map(|s| s.to_string()).collect(),
            backends: (0..64).map(|i| format!("backend-{i:02}")).collect(),
            zones: ["eu-west-1a", "eu-west-1b", "eu-west-1c"].iter().map(|s| s.to_string()).collect(),
            paths: (0..200).map(|i| format!("/api/v1/resource{i}/{{id}}")).collect(),
        }
    }
}

/// Rounds to 0.1, as load balancers log milliseconds.
fn tenth(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

impl Iterator for RequestGen {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        if self.next >= self.total {
            return None;
        }
        let n = (self.total - self.next).min(self.batch as u64) as usize;
        let r = &mut self.rng;
        let step = self.span_us / self.total as f64;
        let mut ts = Vec::with_capacity(n);
        let (mut lb, mut listener, mut backend, mut zone, mut method, mut path) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut status, mut attempt, mut req_b, mut resp_b) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut connect, mut target, mut total, mut queue) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut timed_out, mut hc) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for k in 0..n {
            let i = self.next + k as u64;
            ts.push(START_US + ((i as f64 + r.random::<f64>()) * step) as i64);
            let b = (r.random::<f64>().powi(2) * 64.0) as usize;
            backend.push(self.backends[b].as_str());
            lb.push(self.lbs[b % 8].as_str());
            zone.push(self.zones[b % 3].as_str());
            listener.push(self.listeners[(r.random::<f64>().powi(3) * 4.0) as usize].as_str());
            let m = r.random::<f64>();
            method.push(
                METHODS[if m < 0.7 {
                    0
                } else if m < 0.9 {
                    1
                } else if m < 0.96 {
                    2
                } else if m < 0.99 {
                    3
                } else {
                    4
                }],
            );
            path.push(self.paths[(r.random::<f64>().powi(2) * 200.0) as usize].as_str());
            let s = r.random::<f64>();
            let st: i16 = if s < 0.9 {
                200
            } else if s < 0.93 {
                304
            } else if s < 0.96 {
                404
            } else if s < 0.975 {
                429
            } else if s < 0.99 {
                500
            } else if s < 0.997 {
                502
            } else {
                503
            };
            status.push(st);
            attempt.push(if r.random::<f64>() < 0.03 { 2 } else { 1 });
            req_b.push((r.random::<f64>() * 2_000.0) as i64 + 200);
            resp_b.push((r.random::<f64>().powi(3) * 200_000.0) as i64 + 100);
            // Lognormal latency (median about 20 ms) with a heavy tail.
            let u1: f64 = r.random::<f64>().max(1e-12);
            let u2: f64 = r.random();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let t = if r.random::<f64>() < 0.01 { 500.0 + r.random::<f64>() * 4500.0 } else { (3.0 + 0.8 * z).exp() };
            let c = tenth(r.random::<f64>() * 3.0);
            let q = tenth(r.random::<f64>().powi(4) * 20.0);
            connect.push(c);
            target.push(tenth(t));
            total.push(tenth(t + c + q));
            queue.push(q);
            timed_out.push(t > 4_900.0);
            hc.push(r.random::<f64>() < 0.005);
        }
        self.next += n as u64;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(ts)),
            Arc::new(StringArray::from(lb)),
            Arc::new(StringArray::from(listener)),
            Arc::new(StringArray::from(backend)),
            Arc::new(StringArray::from(zone)),
            Arc::new(StringArray::from(method)),
            Arc::new(StringArray::from(path)),
            Arc::new(Int16Array::from(status)),
            Arc::new(Int32Array::from(attempt)),
            Arc::new(Int64Array::from(req_b)),
            Arc::new(Int64Array::from(resp_b)),
            Arc::new(Float64Array::from(connect)),
            Arc::new(Float64Array::from(target)),
            Arc::new(Float64Array::from(total)),
            Arc::new(Float64Array::from(queue)),
            Arc::new(BooleanArray::from(timed_out)),
            Arc::new(BooleanArray::from(hc)),
        ];
        Some(RecordBatch::try_new(requests_schema(), cols).expect("generated batch matches its schema"))
    }
}
