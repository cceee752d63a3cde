//! Distributed queries (`engine/src/cluster.rs`, docs/scale-out.md): a coordinator and three workers
//! on loopback ports, the workers reading segments from the object store the coordinator's data
//! directory writes through, answer every query as the single node does.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use trafficdb::cluster::{Cluster, ClusterOptions, SegmentCache};
use trafficdb::shard::{Owns, ShardRule};
use trafficdb::store::ObjectStorage;
use trafficdb::{Database, Options};
use trafficdb_schema::generate::{self, Config};

use crate::common::runtime;

/// Query shapes of every kind the harness and the dashboards send: aggregates by tag and time,
/// exact percentiles, count distinct, joins (star, range), subquery-derived bounds, newest-N with
/// tie-breakers, latest per key, folded derived tables, the KPI views and anomaly windows.
const QUERIES: &[&str] = &[
    "SELECT count(*) FROM lb_requests",
    "SELECT count(*), sum(total_ms), min(ts), max(ts) FROM lb_requests WHERE NOT is_health_check",
    "SELECT backend, count(*), avg(total_ms), max(total_ms), sum(response_bytes) FROM lb_requests GROUP BY backend",
    "SELECT date_trunc('hour', ts) AS h, count(*) FILTER (WHERE lb_status >= 500) AS errors, count(*) FROM lb_requests \
     GROUP BY h",
    "SELECT time_bucket('15 minutes', ts) AS b, lb, percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms) \
     FROM lb_requests GROUP BY b, lb",
    "SELECT zone, count(DISTINCT client_id) FROM lb_requests GROUP BY zone",
    "SELECT ts, request_id, attempt, lb_status FROM lb_requests WHERE timed_out \
     ORDER BY ts DESC, request_id, attempt LIMIT 25",
    "SELECT b.zone, count(*), avg(r.total_ms) FROM lb_requests r JOIN backends b ON r.backend = b.backend GROUP BY b.zone",
    "SELECT i.kind, count(*) FROM incidents i JOIN lb_requests r \
     ON r.backend = i.backend AND r.ts BETWEEN i.started_at AND i.ended_at GROUP BY i.kind",
    "SELECT target, ts FROM (SELECT target, ts, row_number() OVER (PARTITION BY target ORDER BY ts DESC) AS rn \
     FROM lb_requests) WHERE rn = 1",
    "SELECT backend, count(*) FROM (SELECT * FROM (SELECT * FROM lb_requests) t WHERE NOT t.backend IS NULL) t2 \
     GROUP BY backend",
    "SELECT lb, method, count(*) FROM lb_requests WHERE path_template LIKE '/api/%' GROUP BY lb, method",
    "SELECT backend, date_trunc('hour', ts) AS h FROM lb_requests GROUP BY backend, h \
     HAVING avg(CASE WHEN lb_status >= 500 THEN 1.0 ELSE 0.0 END) > 0.01",
    "SELECT date_trunc('minute', ts) AS s, count(*) FROM lb_requests \
     WHERE ts > (SELECT max(ts) FROM lb_requests) - INTERVAL '1 hour' GROUP BY s",
    "SELECT path_template, avg(CASE WHEN lb_status >= 500 THEN 1.0 ELSE 0.0 END) AS share FROM lb_requests \
     GROUP BY path_template ORDER BY share DESC, path_template LIMIT 10",
    "SELECT * FROM kpi_requests_1h",
    "SELECT * FROM kpi_backend_health_1h",
    "SELECT * FROM kpi_slo_burn",
    "SELECT * FROM kpi_anomalies",
    // The model's features (window functions over clients and backends) and the model the coordinator
    // trained, read by the workers from the published catalog.
    "SELECT backend, count(*), count(*) FILTER (WHERE will_retry), count(*) FILTER (WHERE retryable), \
     avg(log_total_ms), avg(latency_vs_p99), avg(backend_error_rate_1m), avg(backend_healthy_ratio_1m), \
     avg(backend_queue_depth_1m), avg(client_retry_share), avg(client_failures), avg(client_retry_after_failure), \
     avg(client_unsafe_retry_after_failure), avg(client_max_attempt), avg(client_recent_retry_after_failure) \
     FROM retry_features GROUP BY backend",
    "SELECT backend, avg(predict_retry(backend, method, status, attempt, lb_error, timed_out, response_flags, \
     retry_after_s, log_total_ms, latency_vs_p99, backend_error_rate_1m, backend_healthy_ratio_1m, \
     backend_queue_depth_1m, client_retry_share, idempotent, client_failures, client_retry_after_failure, \
     client_unsafe_retry_after_failure, client_max_attempt, client_recent_retry_after_failure)) \
     FROM retry_features GROUP BY backend",
    "SELECT * FROM kpi_retry_impact_1m",
];

/// The rows of `batches` as text, floating-point values to 9 significant digits (a distributed sum
/// adds in another order), sorted (row order is only defined up to ties).
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<Box<dyn Fn(usize) -> String>> = b
            .columns()
            .iter()
            .map(|c| -> Box<dyn Fn(usize) -> String> {
                let c = c.clone();
                match c.data_type() {
                    DataType::Float64 | DataType::Float32 => Box::new(move |i| {
                        if c.is_null(i) {
                            return "NULL".to_string();
                        }
                        let v = match c.data_type() {
                            DataType::Float64 => c.as_primitive::<Float64Type>().value(i),
                            _ => f64::from(c.as_primitive::<Float32Type>().value(i)),
                        };
                        format!("{v:.8e}")
                    }),
                    _ => {
                        let options = options.clone();
                        Box::new(move |i| {
                            ArrayFormatter::try_new(c.as_ref(), &options).expect("format").value(i).to_string()
                        })
                    }
                }
            })
            .collect();
        for i in 0..b.num_rows() {
            out.push(formatters.iter().map(|f| f(i)).collect::<Vec<_>>().join("|"));
        }
    }
    out.sort();
    out
}

/// Three workers and a coordinator's own worker service on loopback ports, each with its own cache of
/// segments from `bucket`; the sender stops them.
async fn workers(
    bucket: &str,
    dir: &std::path::Path,
) -> (Cluster, Vec<Arc<SegmentCache>>, tokio::sync::watch::Sender<bool>) {
    let mut urls = Vec::new();
    let mut caches: Vec<Arc<SegmentCache>> = Vec::new();
    let mut workers = Vec::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for i in 0..4 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
        let (worker, cache) =
            trafficdb_server::cluster::worker(bucket, &dir.join(format!("cache{i}")), 1 << 30).expect("a worker");
        let mut stopped = stopped.clone();
        let served = worker.clone();
        tokio::spawn(async move {
            let _ = trafficdb_server::cluster::serve_worker(listener, served, async move {
                let _ = stopped.changed().await;
            })
            .await;
        });
        urls.push(url);
        caches.push(cache);
        workers.push(worker);
    }
    let cluster = Cluster {
        workers: urls[1..].to_vec(),
        local: (workers[0].clone(), urls[0].clone()),
        // Small tasks, so that every scan of these small tables is spread over the workers.
        options: ClusterOptions { rows_per_task: 20_000 },
    };
    (cluster, caches, stop)
}

/// Every query of [`QUERIES`] gives `many` the rows it gives `one`.
async fn same_answers(one: &Database, many: &Database) {
    for q in QUERIES {
        let want = one.sql(q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
        let got = many.sql(q).await.unwrap_or_else(|e| panic!("distributed {q}: {e}"));
        let (want, got) = (rows(&want), rows(&got));
        assert!(!want.is_empty() || q.contains("kpi_anomalies"), "{q}: no rows to compare");
        assert_eq!(want, got, "{q}");
    }
}

#[test]
fn a_cluster_answers_as_one_node() {
    let rt = runtime();
    let root = tempfile::tempdir().expect("tempdir");
    let bucket = format!("file://{}", root.path().join("bucket").display());
    let store = ObjectStorage::open(&bucket).expect("the store");
    let options = Options { background: false, store: Some(store), ..Options::default() };
    let db = rt.block_on(trafficdb_schema::open_with(root.path().join("node"), false, options)).expect("open");
    let config = Config { rows: 120_000, seed: 11, days: 1.0, incidents_per_day: 6.0, ..Config::default() };
    generate::load_into(&db, config, &|_| {}).expect("load");
    db.flush().expect("flush");
    rt.block_on(db.sql("SELECT * FROM train_retry_model('retry', 'SELECT * FROM retry_features WHERE retryable')"))
        .expect("train");

    rt.block_on(async {
        let (cluster, caches, stop) = workers(&bucket, root.path()).await;
        let coordinator = Database::from_engine_in(db.engine().clone(), Some(&cluster)).await.expect("coordinator");

        let plan = coordinator
            .sql("EXPLAIN SELECT backend, count(*) FROM lb_requests GROUP BY backend")
            .await
            .expect("explain");
        let text = rows(&plan).join("\n");
        assert!(text.contains("DistributedExec") || text.contains("Stage"), "a distributed plan:\n{text}");

        same_answers(&db, &coordinator).await;
        for (i, c) in caches.iter().enumerate().skip(1) {
            assert!(c.fetches() > 0, "worker {i} read segments from the store");
        }

        // Statements that change data run on the coordinator, against its data directory.
        let deleted = coordinator.sql("DELETE FROM lb_requests WHERE attempt > 1").await.expect("delete");
        let left = coordinator.sql("SELECT count(*) FROM lb_requests WHERE attempt > 1").await.expect("count");
        assert_eq!(rows(&left), vec!["0".to_string()], "after {}", rows(&deleted).join(","));
        let _ = stop.send(true);
    });
}

/// Two writers, each owning the requests of some load balancers, publish their shards under the
/// bucket; a coordinator on the bucket itself (holding the other tables) runs every query over the
/// union on three workers, and answers as one node holding every row.
#[test]
fn a_cluster_reads_the_shards_of_two_writers() {
    let rt = runtime();
    let root = tempfile::tempdir().expect("tempdir");
    let bucket = format!("file://{}", root.path().join("bucket").display());
    let single = rt
        .block_on(trafficdb_schema::open_with(root.path().join("single"), false, Options::default()))
        .expect("open the single node");
    let config = Config { rows: 120_000, seed: 12, days: 1.0, incidents_per_day: 6.0, lbs: 4, ..Config::default() };
    generate::load_into(&single, config, &|_| {}).expect("load");

    let open = |dir: &str, shard: Option<ShardRule>| {
        let url = shard.as_ref().map_or(bucket.clone(), |s| s.store_url(&bucket));
        let store = ObjectStorage::open(&url).expect("the store");
        let options = Options { background: false, store: Some(store), shard, ..Options::default() };
        rt.block_on(trafficdb_schema::open_with(root.path().join(dir), false, options)).expect("open")
    };
    let shards: Vec<ShardRule> = (0..2)
        .map(|index| ShardRule { name: format!("w{index}"), key: "lb".into(), owns: Owns::Hash { of: 2, index } })
        .collect();
    let writers: Vec<Database> = shards.iter().map(|s| open(&s.name, Some(s.clone()))).collect();
    let coordinator_node = open("coordinator", None);
    for table in ["lb_requests", "lb_targets", "backends", "incidents"] {
        let batches = rt.block_on(single.sql(&format!("SELECT * FROM {table}"))).expect("read");
        if table != "lb_requests" {
            coordinator_node.append_all(table, &batches).expect("append to the coordinator");
            continue;
        }
        for (rule, writer) in shards.iter().zip(&writers) {
            let mine: Vec<RecordBatch> = batches
                .iter()
                .map(|b| {
                    let lb = cast(b.column_by_name("lb").expect("lb"), &DataType::Utf8).expect("text");
                    let lb = lb.as_string::<i32>();
                    let keep: BooleanArray = (0..b.num_rows()).map(|i| Some(rule.owns(lb.value(i)))).collect();
                    filter_record_batch(b, &keep).expect("filter")
                })
                .collect();
            assert!(mine.iter().any(|b| b.num_rows() > 0), "every writer gets rows");
            writer.append_all(table, &mine).expect("append to a writer");
            writer.flush().expect("flush");
        }
    }
    coordinator_node.flush().expect("flush");
    let train = "SELECT * FROM train_retry_model('retry', 'SELECT * FROM retry_features WHERE retryable')";
    rt.block_on(single.sql(train)).expect("train on the single node");
    rt.block_on(coordinator_node.sql(train)).expect("train on the union");

    rt.block_on(async {
        let (cluster, caches, stop) = workers(&bucket, root.path()).await;
        let coordinator =
            Database::from_engine_in(coordinator_node.engine().clone(), Some(&cluster)).await.expect("coordinator");
        same_answers(&single, &coordinator).await;
        for (i, c) in caches.iter().enumerate().skip(1) {
            assert!(c.fetches() > 0, "worker {i} read segments from the store");
        }
        let _ = stop.send(true);
    });
}
