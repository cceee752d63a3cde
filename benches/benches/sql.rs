//! SQL hot paths on generated load-balancer telemetry (`trafficdb_schema::generate`, 1M requests over
//! 2 days, sealed), with criterion:
//! - `kpi_view`: one hour of the one-minute KPI view `kpi_requests_1m` (rates, latency percentiles, error
//!   split, retries per backend and minute), and the hourly `kpi_requests_1h` over the whole range;
//! - `predict_retry`: the retry model (trained once, deployed) scoring every attempt of `retry_features`
//!   (stored as a table first, so the view's window functions are not part of it) in one vectorised call
//!   per batch, next to the same scan reading the same 20 columns without the model: the difference is
//!   the model's own cost; and the same with boosted trees (trained on the retryable failures).
//!
//! Run: `cargo bench --bench sql` (a filter after `--` picks one group).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const FEATURES: &str = "backend, method, status, attempt, lb_error, timed_out, response_flags, retry_after_s, \
    log_total_ms, latency_vs_p99, backend_error_rate_1m, backend_healthy_ratio_1m, backend_queue_depth_1m, \
    client_retry_share, idempotent, client_failures, client_retry_after_failure, client_unsafe_retry_after_failure, \
    client_max_attempt, client_recent_retry_after_failure";

fn sql(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = rt.block_on(trafficdb_schema::open(tmp.path(), false)).expect("open");
    let cfg = trafficdb_schema::generate::Config { rows: 1_000_000, days: 2.0, ..Default::default() };
    trafficdb_schema::generate::load_into(&db, cfg, &|_| {}).expect("generate");
    let scalar = |sql: &str| -> i64 {
        let b = rt.block_on(db.sql(sql)).expect("query");
        let a = datafusion::arrow::compute::cast(b[0].column(0), &datafusion::arrow::datatypes::DataType::Int64)
            .expect("cast");
        a.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("int").value(0)
    };

    let mut g = c.benchmark_group("kpi_view");
    g.bench_function("kpi_requests_1m_one_hour", |b| {
        b.iter(|| {
            rt.block_on(db.sql(
                "SELECT * FROM kpi_requests_1m WHERE bucket >= TIMESTAMP '2024-01-02 10:00:00' \
                 AND bucket < TIMESTAMP '2024-01-02 11:00:00'",
            ))
            .expect("query")
        })
    });
    g.bench_function("kpi_requests_1h_all", |b| {
        b.iter(|| rt.block_on(db.sql("SELECT * FROM kpi_requests_1h")).expect("query"))
    });
    g.finish();

    rt.block_on(
        db.sql("SELECT * FROM train_retry_model('retry', 'SELECT * FROM retry_features', 'deploy=true, max_iter=50')"),
    )
    .expect("train");
    rt.block_on(db.sql(
        "SELECT * FROM train_retry_model('trees', 'SELECT * FROM retry_features WHERE retryable', 'model_type=boosted_trees')",
    ))
    .expect("train trees");
    rt.block_on(db.sql("CREATE TABLE features AS SELECT * FROM retry_features")).expect("store the features");
    let rows = scalar("SELECT count(*) FROM features") as u64;
    let mut g = c.benchmark_group("predict_retry");
    g.throughput(Throughput::Elements(rows));
    let with_model = format!("SELECT sum(predict_retry({FEATURES})) FROM features");
    let counts: Vec<String> = FEATURES.split(", ").map(|f| format!("count({f})")).collect();
    let without = format!("SELECT {} FROM features", counts.join(", "));
    g.bench_function("scan_and_predict", |b| b.iter(|| rt.block_on(db.sql(&with_model)).expect("query")));
    g.bench_function("scan_only", |b| b.iter(|| rt.block_on(db.sql(&without)).expect("query")));
    let with_trees = format!("SELECT sum(predict_model('trees', NULL, {FEATURES})) FROM features");
    g.bench_function("scan_and_predict_trees", |b| b.iter(|| rt.block_on(db.sql(&with_trees)).expect("query")));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = sql
}
criterion_main!(benches);
