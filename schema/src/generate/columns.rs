//! Arrow schemas of the generated tables (the same columns as the schema's `.sql` files) and the
//! builders that fill them a row at a time.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

fn field(name: &str, t: DataType, nullable: bool) -> Field {
    Field::new(name, t, nullable)
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// `lb_requests`, as `001_lb_requests.sql` declares it.
pub fn requests_schema() -> SchemaRef {
    use DataType::*;
    Arc::new(Schema::new(vec![
        field("ts", ts(), false),
        field("lb", Utf8, false),
        field("listener", Utf8, false),
        field("backend", Utf8, false),
        field("target", Utf8, true),
        field("zone", Utf8, true),
        field("client_id", Utf8, false),
        field("request_id", Utf8, false),
        field("attempt", Int16, false),
        field("method", Utf8, false),
        field("path_template", Utf8, false),
        field("lb_status", Int16, false),
        field("target_status", Int16, true),
        field("connect_ms", Float64, true),
        field("target_ms", Float64, true),
        field("total_ms", Float64, false),
        field("request_bytes", Int64, false),
        field("response_bytes", Int64, false),
        field("timed_out", Boolean, false),
        field("response_flags", Utf8, true),
        field("retry_after", Int32, true),
        field("is_health_check", Boolean, false),
    ]))
}

/// `lb_targets`, as `002_lb_targets.sql` declares it.
pub fn targets_schema() -> SchemaRef {
    use DataType::*;
    Arc::new(Schema::new(vec![
        field("ts", ts(), false),
        field("lb", Utf8, false),
        field("backend", Utf8, false),
        field("target", Utf8, false),
        field("zone", Utf8, true),
        field("healthy", Boolean, false),
        field("active_conns", Int32, true),
        field("rejected_conns", Int32, true),
        field("queue_depth", Int32, true),
        field("weight", Int16, true),
        field("ejected", Boolean, true),
        field("requests_per_s", Float64, true),
        field("avg_response_ms", Float64, true),
        field("error_rate", Float64, true),
    ]))
}

/// `backends`, as `003_backends.sql` declares it.
pub fn backends_schema() -> SchemaRef {
    use DataType::*;
    Arc::new(Schema::new(vec![
        field("backend", Utf8, false),
        field("lb", Utf8, false),
        field("zone", Utf8, true),
        field("capacity_rps", Float64, true),
        field("weight", Int16, true),
    ]))
}

/// `incidents`, as `004_incidents.sql` declares it.
pub fn incidents_schema() -> SchemaRef {
    use DataType::*;
    Arc::new(Schema::new(vec![
        field("started_at", ts(), false),
        field("ended_at", ts(), false),
        field("kind", Utf8, false),
        field("lb", Utf8, true),
        field("backend", Utf8, true),
        field("zone", Utf8, true),
        field("target", Utf8, true),
        field("description", Utf8, true),
    ]))
}

/// One `lb_requests` row; strings are borrowed from the topology.
pub(crate) struct RequestRow<'a> {
    pub ts: i64,
    pub lb: &'a str,
    pub listener: &'a str,
    pub backend: &'a str,
    pub target: Option<&'a str>,
    pub zone: Option<&'a str>,
    pub client_id: &'a str,
    pub request_id: u64,
    pub attempt: i16,
    pub method: &'a str,
    pub path_template: &'a str,
    pub lb_status: i16,
    pub target_status: Option<i16>,
    pub connect_ms: Option<f64>,
    pub target_ms: Option<f64>,
    pub total_ms: f64,
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub timed_out: bool,
    pub response_flags: Option<&'a str>,
    pub retry_after: Option<i32>,
    pub is_health_check: bool,
}

pub(crate) struct RequestColumns {
    ts: TimestampMicrosecondBuilder,
    lb: StringBuilder,
    listener: StringBuilder,
    backend: StringBuilder,
    target: StringBuilder,
    zone: StringBuilder,
    client_id: StringBuilder,
    request_id: StringBuilder,
    attempt: Int16Builder,
    method: StringBuilder,
    path_template: StringBuilder,
    lb_status: Int16Builder,
    target_status: Int16Builder,
    connect_ms: Float64Builder,
    target_ms: Float64Builder,
    total_ms: Float64Builder,
    request_bytes: Int64Builder,
    response_bytes: Int64Builder,
    timed_out: BooleanBuilder,
    response_flags: StringBuilder,
    retry_after: Int32Builder,
    is_health_check: BooleanBuilder,
    len: usize,
}

fn strings(rows: usize, avg: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * avg)
}

impl RequestColumns {
    pub fn new(rows: usize) -> Self {
        RequestColumns {
            ts: TimestampMicrosecondBuilder::with_capacity(rows),
            lb: strings(rows, 6),
            listener: strings(rows, 9),
            backend: strings(rows, 8),
            target: strings(rows, 16),
            zone: strings(rows, 10),
            client_id: strings(rows, 12),
            request_id: strings(rows, 16),
            attempt: Int16Builder::with_capacity(rows),
            method: strings(rows, 4),
            path_template: strings(rows, 24),
            lb_status: Int16Builder::with_capacity(rows),
            target_status: Int16Builder::with_capacity(rows),
            connect_ms: Float64Builder::with_capacity(rows),
            target_ms: Float64Builder::with_capacity(rows),
            total_ms: Float64Builder::with_capacity(rows),
            request_bytes: Int64Builder::with_capacity(rows),
            response_bytes: Int64Builder::with_capacity(rows),
            timed_out: BooleanBuilder::with_capacity(rows),
            response_flags: strings(rows, 1),
            retry_after: Int32Builder::with_capacity(rows),
            is_health_check: BooleanBuilder::with_capacity(rows),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, r: &RequestRow<'_>) {
        self.ts.append_value(r.ts);
        self.lb.append_value(r.lb);
        self.listener.append_value(r.listener);
        self.backend.append_value(r.backend);
        self.target.append_option(r.target);
        self.zone.append_option(r.zone);
        self.client_id.append_value(r.client_id);
        self.request_id.append_value(hex16(r.request_id));
        self.attempt.append_value(r.attempt);
        self.method.append_value(r.method);
        self.path_template.append_value(r.path_template);
        self.lb_status.append_value(r.lb_status);
        self.target_status.append_option(r.target_status);
        self.connect_ms.append_option(r.connect_ms);
        self.target_ms.append_option(r.target_ms);
        self.total_ms.append_value(r.total_ms);
        self.request_bytes.append_value(r.request_bytes);
        self.response_bytes.append_value(r.response_bytes);
        self.timed_out.append_value(r.timed_out);
        self.response_flags.append_option(r.response_flags);
        self.retry_after.append_option(r.retry_after);
        self.is_health_check.append_value(r.is_health_check);
        self.len += 1;
    }

    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.lb.finish()),
            Arc::new(self.listener.finish()),
            Arc::new(self.backend.finish()),
            Arc::new(self.target.finish()),
            Arc::new(self.zone.finish()),
            Arc::new(self.client_id.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.attempt.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.path_template.finish()),
            Arc::new(self.lb_status.finish()),
            Arc::new(self.target_status.finish()),
            Arc::new(self.connect_ms.finish()),
            Arc::new(self.target_ms.finish()),
            Arc::new(self.total_ms.finish()),
            Arc::new(self.request_bytes.finish()),
            Arc::new(self.response_bytes.finish()),
            Arc::new(self.timed_out.finish()),
            Arc::new(self.response_flags.finish()),
            Arc::new(self.retry_after.finish()),
            Arc::new(self.is_health_check.finish()),
        ];
        self.len = 0;
        RecordBatch::try_new(requests_schema(), columns).expect("columns match the schema")
    }
}

/// One `lb_targets` row.
pub(crate) struct TargetRow<'a> {
    pub ts: i64,
    pub lb: &'a str,
    pub backend: &'a str,
    pub target: &'a str,
    pub zone: &'a str,
    pub healthy: bool,
    pub active_conns: i32,
    pub rejected_conns: i32,
    pub queue_depth: i32,
    pub weight: i16,
    pub ejected: bool,
    pub requests_per_s: f64,
    pub avg_response_ms: Option<f64>,
    pub error_rate: Option<f64>,
}

pub(crate) struct TargetColumns {
    ts: TimestampMicrosecondBuilder,
    lb: StringBuilder,
    backend: StringBuilder,
    target: StringBuilder,
    zone: StringBuilder,
    healthy: BooleanBuilder,
    active_conns: Int32Builder,
    rejected_conns: Int32Builder,
    queue_depth: Int32Builder,
    weight: Int16Builder,
    ejected: BooleanBuilder,
    requests_per_s: Float64Builder,
    avg_response_ms: Float64Builder,
    error_rate: Float64Builder,
    len: usize,
}

impl TargetColumns {
    pub fn new(rows: usize) -> Self {
        TargetColumns {
            ts: TimestampMicrosecondBuilder::with_capacity(rows),
            lb: strings(rows, 6),
            backend: strings(rows, 8),
            target: strings(rows, 16),
            zone: strings(rows, 10),
            healthy: BooleanBuilder::with_capacity(rows),
            active_conns: Int32Builder::with_capacity(rows),
            rejected_conns: Int32Builder::with_capacity(rows),
            queue_depth: Int32Builder::with_capacity(rows),
            weight: Int16Builder::with_capacity(rows),
            ejected: BooleanBuilder::with_capacity(rows),
            requests_per_s: Float64Builder::with_capacity(rows),
            avg_response_ms: Float64Builder::with_capacity(rows),
            error_rate: Float64Builder::with_capacity(rows),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, r: &TargetRow<'_>) {
        self.ts.append_value(r.ts);
        self.lb.append_value(r.lb);
        self.backend.append_value(r.backend);
        self.target.append_value(r.target);
        self.zone.append_value(r.zone);
        self.healthy.append_value(r.healthy);
        self.active_conns.append_value(r.active_conns);
        self.rejected_conns.append_value(r.rejected_conns);
        self.queue_depth.append_value(r.queue_depth);
        self.weight.append_value(r.weight);
        self.ejected.append_value(r.ejected);
        self.requests_per_s.append_value(r.requests_per_s);
        self.avg_response_ms.append_option(r.avg_response_ms);
        self.error_rate.append_option(r.error_rate);
        self.len += 1;
    }

    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.lb.finish()),
            Arc::new(self.backend.finish()),
            Arc::new(self.target.finish()),
            Arc::new(self.zone.finish()),
            Arc::new(self.healthy.finish()),
            Arc::new(self.active_conns.finish()),
            Arc::new(self.rejected_conns.finish()),
            Arc::new(self.queue_depth.finish()),
            Arc::new(self.weight.finish()),
            Arc::new(self.ejected.finish()),
            Arc::new(self.requests_per_s.finish()),
            Arc::new(self.avg_response_ms.finish()),
            Arc::new(self.error_rate.finish()),
        ];
        self.len = 0;
        RecordBatch::try_new(targets_schema(), columns).expect("columns match the schema")
    }
}

/// A request id as 16 lowercase hex digits, formatted on the stack.
fn hex16(v: u64) -> HexId {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    HexId(buf)
}

struct HexId([u8; 16]);

impl AsRef<str> for HexId {
    fn as_ref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}
