//! Storage hot paths, with criterion:
//! - `wal_append`: durable appends of 1,000-row batches through the library, from 1 writer and from 4
//!   writers at once (group commit: concurrent writers share one fsync, so 4 writers should move several
//!   times the rows per second of one);
//! - `segment_encode` / `segment_decode`: one 65,536-row column written as a segment and read back, per
//!   encoding the writer picks for typical load-balancer columns (delta timestamps, frame-of-reference and
//!   run-length integers, decimal and plain doubles, dictionary and plain text);
//! - `scan`: SQL over 2M stored rows (7 days, sealed): a one-hour aggregate that pruning cuts to a few row
//!   groups, next to the same aggregate over every row.
//!
//! Run: `cargo bench --bench storage` (a filter after `--` picks one group).

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trafficdb::io::RealFs;
use trafficdb::segment::{Segment, WriteOptions, write_segment};
use trafficdb::types::Layout;
use trafficdb::{ColumnDef, ColumnType, Database, Options};
use trafficdb_benches::{REQUESTS_DDL, RequestGen, START_US};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn wal_append(c: &mut Criterion) {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(rt.block_on(Database::open_with(tmp.path(), Options::default())).expect("open"));
    rt.block_on(db.sql(REQUESTS_DDL)).expect("create");
    let batches: Vec<RecordBatch> = RequestGen::new(1, 64_000, 1, 1_000).collect();
    let mut g = c.benchmark_group("wal_append");
    for writers in [1usize, 4] {
        g.throughput(Throughput::Elements((writers * 1_000) as u64));
        g.bench_function(BenchmarkId::new("1k_rows_writers", writers), |b| {
            let mut k = 0usize;
            b.iter(|| {
                k += 1;
                std::thread::scope(|s| {
                    for w in 0..writers {
                        let db = &db;
                        let batch = &batches[(k * writers + w) % batches.len()];
                        s.spawn(move || db.append("requests", batch).expect("append"));
                    }
                });
            })
        });
    }
    g.finish();
}

/// One column of 65,536 values per encoding, with the type it is stored as.
fn columns() -> Vec<(&'static str, ColumnType, DataType, ArrayRef)> {
    let n = 65_536;
    let mut r = ChaCha8Rng::seed_from_u64(7);
    let ts: Vec<i64> = (0..n).map(|i| START_US + i as i64 * 8_640 + r.random_range(0..8_640)).collect();
    let status: Vec<i64> = (0..n).map(|_| [200, 200, 200, 200, 404, 500][r.random_range(0..6)]).collect();
    let runs: Vec<i64> = (0..n).map(|i| (i / 4_096) as i64).collect();
    let tenth: Vec<f64> = (0..n).map(|_| (r.random::<f64>() * 3_000.0 * 10.0).round() / 10.0).collect();
    let plain: Vec<f64> = (0..n).map(|_| r.random::<f64>()).collect();
    let backend: Vec<String> = (0..n).map(|_| format!("backend-{:02}", r.random_range(0..64))).collect();
    let ids: Vec<String> = (0..n).map(|_| format!("{:016x}", r.random::<u64>())).collect();
    let tsu = DataType::Timestamp(TimeUnit::Microsecond, None);
    vec![
        ("timestamp_delta", ColumnType::Timestamp, tsu, Arc::new(TimestampMicrosecondArray::from(ts)) as ArrayRef),
        ("int_for", ColumnType::BigInt, DataType::Int64, Arc::new(Int64Array::from(status))),
        ("int_run_length", ColumnType::BigInt, DataType::Int64, Arc::new(Int64Array::from(runs))),
        ("double_decimal", ColumnType::Double, DataType::Float64, Arc::new(Float64Array::from(tenth))),
        ("double_plain", ColumnType::Double, DataType::Float64, Arc::new(Float64Array::from(plain))),
        ("text_dictionary", ColumnType::Text, DataType::Utf8, Arc::new(StringArray::from(backend))),
        ("text_plain", ColumnType::Text, DataType::Utf8, Arc::new(StringArray::from(ids))),
    ]
}

fn segment_codec(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = RealFs;
    let mut enc = c.benchmark_group("segment_encode");
    let cols = columns();
    for (name, ty, dt, array) in &cols {
        let schema = Arc::new(Schema::new(vec![Field::new("c", dt.clone(), false)]));
        let batch = RecordBatch::try_new(schema, vec![array.clone()]).expect("batch");
        let defs = [ColumnDef { name: "c".into(), ty: *ty, nullable: false }];
        let path = tmp.path().join(format!("{name}.seg"));
        enc.throughput(Throughput::Elements(array.len() as u64));
        enc.bench_function(*name, |b| {
            b.iter(|| {
                write_segment(
                    &fs,
                    &path,
                    &defs,
                    None,
                    Layout::TIME,
                    std::slice::from_ref(&batch),
                    WriteOptions::default(),
                )
                .expect("write")
            })
        });
    }
    enc.finish();
    let mut dec = c.benchmark_group("segment_decode");
    for (name, _, dt, array) in &cols {
        let schema = Arc::new(Schema::new(vec![Field::new("c", dt.clone(), false)]));
        let seg = Segment::open(&fs, &tmp.path().join(format!("{name}.seg"))).expect("open");
        dec.throughput(Throughput::Elements(array.len() as u64));
        dec.bench_function(*name, |b| b.iter(|| seg.read(0, &[0], &schema).expect("read")));
    }
    dec.finish();
}

fn scan(c: &mut Criterion) {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = rt.block_on(Database::open_with(tmp.path(), Options::default())).expect("open");
    rt.block_on(db.sql(REQUESTS_DDL)).expect("create");
    for b in RequestGen::new(42, 2_000_000, 7, 100_000) {
        db.append("requests", &b).expect("append");
    }
    db.flush().expect("flush");
    let mut g = c.benchmark_group("scan");
    let queries = [
        (
            "one_hour_pruned",
            "SELECT backend, count(*), max(total_ms) FROM requests \
             WHERE ts >= TIMESTAMP '2024-01-03 10:00:00' AND ts < TIMESTAMP '2024-01-03 11:00:00' GROUP BY backend",
        ),
        ("all_rows", "SELECT backend, count(*), max(total_ms) FROM requests GROUP BY backend"),
    ];
    for (name, sql) in queries {
        g.bench_function(name, |b| b.iter(|| rt.block_on(db.sql(sql)).expect("query")));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = wal_append, segment_codec, scan
}
criterion_main!(benches);
