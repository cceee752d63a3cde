//! Helpers shared by the integration tests.

use std::sync::Arc;

use trafficdb::arrow::array::{
    BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use trafficdb::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

/// The DDL of the small time-series table most engine tests use (clustered by `backend` inside a
/// partition).
pub const EVENTS_DDL: &str = "CREATE TABLE events (ts TIMESTAMP NOT NULL, id BIGINT NOT NULL, backend TEXT, \
     ms DOUBLE, ok BOOLEAN) WITH (time_column = 'ts', partition = '1 hour', sort_key = 'backend')";

/// Rows `first..first + n` of the `events` table: id = row number, ts advancing 1 s per row
/// (so rows spread over several hourly partitions), a few NULLs.
pub fn events_batch(first: i64, n: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + n).collect();
    let ts: Vec<i64> = ids.iter().map(|i| 1_704_067_200_000_000 + i * 1_000_000).collect();
    let backend: Vec<Option<String>> =
        ids.iter().map(|i| if i % 7 == 0 { None } else { Some(format!("b{}", i % 5)) }).collect();
    let ms: Vec<Option<f64>> =
        ids.iter().map(|i| if i % 11 == 0 { None } else { Some((i % 1000) as f64 / 10.0) }).collect();
    let ok: Vec<Option<bool>> = ids.iter().map(|i| Some(i % 3 != 0)).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        Field::new("id", DataType::Int64, false),
        Field::new("backend", DataType::Utf8, true),
        Field::new("ms", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts)),
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(backend)),
            Arc::new(Float64Array::from(ms)),
            Arc::new(BooleanArray::from(ok)),
        ],
    )
    .expect("valid batch")
}

/// Every `id` in `events`, sorted.
pub async fn all_ids(db: &trafficdb::Database) -> Vec<i64> {
    let batches = db.sql("SELECT id FROM events ORDER BY id").await.expect("query ids");
    batches
        .iter()
        .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().expect("int64 ids").values().to_vec())
        .collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}
