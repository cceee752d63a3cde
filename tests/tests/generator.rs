//! The telemetry generator: the same seed gives the same bytes; retry chains are consistent with the
//! policies behind each client id; every injected incident shows in the KPI views at its time and scope; and
//! `retry_training`'s features use no row that came later; the retry-impact view adds up.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int16Type, Int32Type, Int64Type};
use trafficdb_schema::generate::{self, Config, FileFormat, IncidentKind, Policy};

use crate::common::runtime;

fn config(rows: u64, seed: u64) -> Config {
    Config { rows, seed, days: 1.0, incidents_per_day: 5.0, ..Config::default() }
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let files = |seed: u64, format: FileFormat| {
        let dir = tempfile::tempdir().expect("tempdir");
        let summary = generate::write_files(config(150_000, seed), format, dir.path(), &|_| {}).expect("generate");
        assert_eq!(summary.requests, 150_000, "exactly --rows rows");
        let bytes: Vec<Vec<u8>> = summary.files.iter().map(|f| std::fs::read(f).expect("read")).collect();
        (dir, bytes)
    };
    for format in [FileFormat::Parquet, FileFormat::Csv] {
        let (_a, first) = files(7, format);
        let (_b, again) = files(7, format);
        assert_eq!(first.len(), 4);
        for (i, (x, y)) in first.iter().zip(&again).enumerate() {
            assert!(x == y, "file {i} ({format:?}) differs between two runs with the same seed");
        }
        let (_c, other) = files(8, format);
        assert_ne!(first[0], other[0], "another seed gives other requests");
    }
}

/// Loads a generated day into a fresh data directory with the schema.
async fn generated(rows: u64, seed: u64) -> (tempfile::TempDir, trafficdb::Database, Vec<generate::Incident>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = trafficdb_schema::open(tmp.path(), false).await.expect("open");
    let summary = generate::load_into(&db, config(rows, seed), &|_| {}).expect("load");
    assert_eq!(summary.requests, rows);
    let incidents = {
        let mut g = generate::Generator::new(config(rows, seed)).expect("config");
        while g.next_batch().is_some() {}
        g.incidents()
    };
    assert_eq!(summary.incidents, incidents.len() as u64);
    (tmp, db, incidents)
}

async fn query(db: &trafficdb::Database, sql: &str) -> Vec<RecordBatch> {
    db.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn scalar_i64(db: &trafficdb::Database, sql: &str) -> i64 {
    let b = query(db, sql).await;
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn scalar_f64(db: &trafficdb::Database, sql: &str) -> Option<f64> {
    let b = query(db, sql).await;
    let c = b.first().map(|b| b.column(0).as_primitive::<Float64Type>().clone())?;
    (c.len() == 1 && c.is_valid(0)).then(|| c.value(0))
}

#[test]
fn retry_chains_follow_the_policies_behind_each_client_id() {
    let rt = runtime();
    rt.block_on(async {
        let seed = 11;
        let (_tmp, db, _) = generated(300_000, seed).await;
        // Attempts of a request are 1..n, once each, from one client, to one backend, method and path.
        let broken = scalar_i64(
            &db,
            "SELECT count(*) FROM (SELECT request_id, count(*) AS n, min(attempt) AS lo, max(attempt) AS hi,
                    count(DISTINCT attempt) AS d, count(DISTINCT client_id) AS c, count(DISTINCT backend) AS b,
                    count(DISTINCT method) AS m, count(DISTINCT path_template) AS p
             FROM lb_requests WHERE NOT is_health_check GROUP BY request_id) t
             WHERE lo <> 1 OR hi <> n OR d <> n OR c <> 1 OR b <> 1 OR m <> 1 OR p <> 1",
        )
        .await;
        assert_eq!(broken, 0, "requests whose attempts are not 1..n of one client and route");

        // Every retry against the attempt before it, and the policies that could have made it: the
        // id's callers', and after a deploy the new one.
        let cfg = config(300_000, seed);
        let pairs = query(
            &db,
            "SELECT r.client_id, r.attempt, r.method, r.lb_status, r.timed_out, r.retry_after,
                    CAST(n.ts AS BIGINT) - CAST(r.ts AS BIGINT) - CAST(round(r.total_ms * 1000) AS BIGINT) AS gap_us,
                    CAST(r.ts AS BIGINT) AS ts_us
             FROM lb_requests r JOIN lb_requests n
               ON n.request_id = r.request_id AND n.attempt = r.attempt + 1
             WHERE NOT r.is_health_check",
        )
        .await;
        let mut retries: HashMap<Policy, usize> = HashMap::new();
        let mut per_client: HashMap<String, usize> = HashMap::new();
        let (mut shared, mut redeployed) = (0, 0);
        for b in &pairs {
            let client = strings(b.column(0));
            let attempt = b.column(1).as_primitive::<Int16Type>();
            let method = strings(b.column(2));
            let status = b.column(3).as_primitive::<Int16Type>();
            let timed_out = b.column(4).as_boolean();
            let retry_after = b.column(5).as_primitive::<Int32Type>();
            let gap = b.column(6).as_primitive::<Int64Type>();
            let ts = b.column(7).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let index: u32 = client[i].trim_start_matches("client-").parse().expect("client index");
                let profile = generate::ClientProfile::of(&cfg, index);
                let policies: Vec<Policy> =
                    (0..profile.callers.len()).map(|caller| profile.policy(caller, ts.value(i))).collect();
                *per_client.entry(client[i].clone()).or_default() += 1;
                let (st, n, gap_s) = (status.value(i), attempt.value(i), gap.value(i) as f64 / 1e6);
                let ra = retry_after.is_valid(i).then(|| f64::from(retry_after.value(i)));
                let ctx = format!("{profile:?} client {} attempt {n} status {st} gap {gap_s} s", client[i]);
                assert!(matches!(st, 429 | 500 | 502 | 503 | 504) || timed_out.value(i), "retried a {st}: {ctx}");
                assert!(gap_s >= 0.0, "a retry before the response: {ctx}");
                let fits: Vec<Policy> = policies
                    .iter()
                    .copied()
                    .filter(|&policy| retry_fits(policy, n, st, gap_s, ra, &method[i]))
                    .collect();
                assert!(!fits.is_empty(), "a retry no policy of the id makes: {ctx}");
                if profile.callers.len() > 1 {
                    shared += 1;
                } else if profile.redeploy.is_some_and(|(at, _)| ts.value(i) >= at) {
                    redeployed += 1;
                } else {
                    *retries.entry(fits[0]).or_default() += 1;
                }
            }
        }
        for p in [Policy::Naive, Policy::Exponential, Policy::Budgeted] {
            assert!(
                retries.get(&p).copied().unwrap_or(0) > 50,
                "too few retries by {p:?} clients to judge: {retries:?}"
            );
        }
        assert!(shared > 10 && redeployed > 10, "shared ids retried {shared} times, redeployed callers {redeployed}");
        // Budgeted clients: at most their 10 starting tokens plus one per 10 first attempts.
        let firsts = query(
            &db,
            "SELECT client_id, count(*) FROM lb_requests WHERE attempt = 1 AND NOT is_health_check GROUP BY 1",
        )
        .await;
        for b in &firsts {
            let n = b.column(1).as_primitive::<Int64Type>();
            for (i, name) in strings(b.column(0)).into_iter().enumerate() {
                let Some(index) = name.strip_prefix("client-").and_then(|s| s.parse::<u32>().ok()) else { continue };
                let profile = generate::ClientProfile::of(&cfg, index);
                if profile.callers == [Policy::Budgeted] && profile.redeploy.is_none() {
                    let used = per_client.get(&name).copied().unwrap_or(0) as f64;
                    assert!(used <= 10.0 + 0.1 * n.value(i) as f64 + 1.0, "{name} retried {used} times");
                }
            }
        }
        db.close().expect("close");
    });
}

/// Whether `policy` could have retried attempt `n` (status `st`, `Retry-After` `ra`) after `gap_s`.
fn retry_fits(policy: Policy, n: i16, st: i16, gap_s: f64, ra: Option<f64>, method: &str) -> bool {
    match policy {
        Policy::None => false,
        // Naive clients try 3 times at most, at once.
        Policy::Naive => n < 3 && gap_s <= 0.021,
        Policy::Exponential | Policy::Budgeted => {
            let cap = (0.1 * f64::from(1u32 << n)).min(20.0);
            let attempts = if policy == Policy::Exponential { 3 } else { 4 };
            let delay = match ra {
                // Retry-After honoured: not before it, and no later than it or the backoff.
                Some(ra) => gap_s >= ra - 1e-3 && gap_s <= ra.max(cap) + 1e-3,
                None => gap_s <= cap + 1e-3,
            };
            // Polite clients retry POST only after 429 / 503.
            n < attempts && delay && (method != "POST" || matches!(st, 429 | 503))
        }
    }
}

fn ts_literal(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let t = chrono_free_format(secs);
    format!("TIMESTAMP '{t}'")
}

/// `YYYY-MM-DD HH:MM:SS` of a UTC time in seconds since the epoch.
fn chrono_free_format(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[test]
fn incidents_show_in_the_kpi_views_at_their_time_and_scope() {
    let rt = runtime();
    rt.block_on(async {
        let (_tmp, db, incidents) = generated(600_000, 3).await;
        let kinds: Vec<IncidentKind> = incidents.iter().map(|i| i.kind).collect();
        for k in IncidentKind::ALL {
            assert!(kinds.contains(&k), "five incidents include every kind: {kinds:?}");
        }
        for inc in &incidents {
            let (from, to) = (ts_literal(inc.started_us), ts_literal(inc.ended_us));
            let before = ts_literal(inc.started_us - 3_600_000_000);
            let during = format!("bucket >= {from} AND bucket < {to}");
            let earlier = format!("bucket >= {before} AND bucket < {from}");
            let ctx = format!("{inc:?}");
            match inc.kind {
                IncidentKind::TargetOutage => {
                    let b = inc.backend.as_deref().expect("scope");
                    // Requests routed to it fail (until the health checks catch it: at night it may
                    // get none), then the target is unhealthy.
                    let t = inc.target.as_deref().expect("scope");
                    let (routed, answered) = (
                        scalar_i64(
                            &db,
                            &format!(
                                "SELECT count(*) FROM lb_requests WHERE target = '{t}' AND NOT is_health_check \
                                 AND ts >= {from} AND ts < {to}"
                            ),
                        )
                        .await,
                        scalar_i64(
                            &db,
                            &format!(
                                "SELECT count(*) FROM lb_requests WHERE target = '{t}' AND NOT is_health_check \
                                 AND ts >= {from} AND ts < {to} AND lb_status < 500"
                            ),
                        )
                        .await,
                    );
                    assert_eq!(answered, 0, "a down target answered {answered} of {routed} requests: {ctx}");
                    let healthy = scalar_f64(
                        &db,
                        &format!("SELECT min(healthy_ratio) FROM kpi_backend_health_1m WHERE backend = '{b}' AND {during}"),
                    )
                    .await
                    .expect("samples");
                    assert!(healthy < 1.0, "the target stayed healthy: {ctx}");
                    let others = scalar_f64(
                        &db,
                        &format!("SELECT min(healthy_ratio) FROM kpi_backend_health_1m WHERE backend <> '{b}' AND {during}"),
                    )
                    .await
                    .expect("samples");
                    assert_eq!(others, 1.0, "other backends are untouched: {ctx}");
                }
                IncidentKind::LatencyRegression => {
                    let b = inc.backend.as_deref().expect("scope");
                    let p50 = |w: String| format!("SELECT median(target_p50_ms) FROM kpi_latency_1m WHERE backend = '{b}' AND {w}");
                    let now = scalar_f64(&db, &p50(during.clone())).await.expect("latency");
                    let then = scalar_f64(&db, &p50(earlier.clone())).await.expect("latency");
                    assert!(now > 2.0 * then, "median latency {now} vs {then} the hour before: {ctx}");
                }
                IncidentKind::ZoneLoss => {
                    let z = inc.zone.as_deref().expect("scope");
                    let unhealthy = scalar_i64(
                        &db,
                        &format!(
                            "SELECT count(DISTINCT target) FROM lb_targets WHERE zone = '{z}' AND NOT healthy
                             AND ts >= {from} AND ts < {to}"
                        ),
                    )
                    .await;
                    let in_zone = scalar_i64(&db, &format!("SELECT count(DISTINCT target) FROM lb_targets WHERE zone = '{z}'")).await;
                    assert_eq!(unhealthy, in_zone, "every target of the zone goes unhealthy: {ctx}");
                    let elsewhere = scalar_i64(
                        &db,
                        &format!(
                            "SELECT count(*) FROM lb_targets WHERE zone <> '{z}' AND NOT healthy AND ts >= {from} AND ts < {to}"
                        ),
                    )
                    .await;
                    assert_eq!(elsewhere, 0, "targets in other zones stay healthy: {ctx}");
                }
                IncidentKind::BadDeploy => {
                    let b = inc.backend.as_deref().expect("scope");
                    let rate = |w: String| {
                        format!(
                            "SELECT CAST(sum(target_5xx) AS DOUBLE) / sum(attempts) FROM kpi_requests_1m WHERE backend = '{b}' AND {w}"
                        )
                    };
                    let now = scalar_f64(&db, &rate(during.clone())).await.expect("rate");
                    let then = scalar_f64(&db, &rate(earlier.clone())).await.unwrap_or(0.0);
                    assert!(now > 0.05 && now > 5.0 * then, "target 5xx rate {now} vs {then} the hour before: {ctx}");
                }
                IncidentKind::RetryStorm => {
                    let b = inc.backend.as_deref().expect("scope");
                    let rate = |w: String| {
                        format!(
                            "SELECT CAST(sum(retries) AS DOUBLE) / sum(requests) FROM kpi_requests_1m WHERE backend = '{b}' AND {w}"
                        )
                    };
                    let now = scalar_f64(&db, &rate(during.clone())).await.expect("rate");
                    let then = scalar_f64(&db, &rate(earlier.clone())).await.unwrap_or(0.0);
                    assert!(now > 0.1 && now > 5.0 * then, "retry rate {now} vs {then} the hour before: {ctx}");
                }
                IncidentKind::Overload => {
                    // Observed, not injected: the backend sheds load with 503.
                    let b = inc.backend.as_deref().expect("scope");
                    let shed = scalar_i64(
                        &db,
                        &format!("SELECT count(*) FROM lb_requests WHERE backend = '{b}' AND target_status = 503 AND ts >= {from} AND ts < {to}"),
                    )
                    .await;
                    assert!(shed > 0, "an overload sheds load: {ctx}");
                }
            }
        }
        db.close().expect("close");
    });
}

/// Truncating the data after a time T changes no feature of any attempt at or before T: the features
/// read nothing that came later. (The label does look ahead, by definition.)
#[test]
fn retry_training_features_use_no_later_rows() {
    let rt = runtime();
    rt.block_on(async {
        let (_tmp, db, _) = generated(120_000, 5).await;
        let features = "request_id, attempt, ts, lb, backend, target, client_id, method, idempotent, status_class,
            lb_status, lb_error, timed_out, response_flags, retry_after, total_ms, latency_vs_p99,
            backend_error_rate_1m, backend_healthy_ratio_1m, backend_queue_depth_1m, client_retry_share, hour_of_week,
            retryable, client_failures, client_retries, client_unsafe_failures, client_unsafe_retries,
            client_max_attempt, client_recent_failures, client_recent_retries";
        let snapshot = |cut: i64| {
            let sql = format!(
                "SELECT {features} FROM retry_training WHERE ts <= {} ORDER BY request_id, attempt",
                ts_literal_us(cut)
            );
            let db = &db;
            async move {
                let b = query(db, &sql).await;
                datafusion::arrow::util::pretty::pretty_format_batches(&b).expect("format").to_string()
            }
        };
        let start = Config::default().start_us;
        // Cuts in the middle of a minute, latest first (each truncation removes more).
        let cuts = [start + 17 * 3_600_000_000 + 1_830_500_000, start + 11 * 3_600_000_000 + 2_700_250_000];
        for cut in cuts {
            let before = snapshot(cut).await;
            assert!(before.lines().count() > 1000, "enough attempts before the cut");
            let t = ts_literal_us(cut);
            query(&db, &format!("DELETE FROM lb_requests WHERE ts > {t}")).await;
            query(&db, &format!("DELETE FROM lb_targets WHERE ts > {t}")).await;
            let after = snapshot(cut).await;
            assert!(before == after, "a feature changed when rows after {t} were removed");
        }
        // The check can fail: a feature of the current minute (which includes later rows) does change.
        let cut = start + 9 * 3_600_000_000 + 1_830_500_000;
        let leaky = format!(
            "SELECT a.request_id, a.attempt, m.n FROM lb_requests a JOIN (SELECT date_trunc('minute', ts) AS bucket,
             backend, count(*) AS n FROM lb_requests GROUP BY 1, 2) m
             ON m.backend = a.backend AND m.bucket = date_trunc('minute', a.ts)
             WHERE a.ts <= {} ORDER BY 1, 2",
            ts_literal_us(cut)
        );
        let full =
            datafusion::arrow::util::pretty::pretty_format_batches(&query(&db, &leaky).await).expect("fmt").to_string();
        query(&db, &format!("DELETE FROM lb_requests WHERE ts > {}", ts_literal_us(cut))).await;
        let cut_off =
            datafusion::arrow::util::pretty::pretty_format_batches(&query(&db, &leaky).await).expect("fmt").to_string();
        assert_ne!(full, cut_off, "the same comparison notices a feature that reads the current minute");
        db.close().expect("close");
    });
}

/// A TIMESTAMP literal with microseconds.
fn ts_literal_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    format!("TIMESTAMP '{}.{:06}'", chrono_free_format(secs), us.rem_euclid(1_000_000))
}

/// A text column's values (NULL as the empty string).
fn strings(a: &dyn Array) -> Vec<String> {
    let a = datafusion::arrow::compute::cast(a, &DataType::Utf8).expect("text");
    a.as_string::<i32>().iter().map(|s| s.unwrap_or("").to_string()).collect()
}

/// Every SQL block of docs/grafana.md, with Grafana's macros expanded as its PostgreSQL data source
/// expands them, runs on generated data and returns rows.
#[test]
fn grafana_panel_queries_run() {
    let rt = runtime();
    rt.block_on(async {
        let (_tmp, db, _) = generated(60_000, 2).await;
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana.md")).expect("docs");
        let blocks: Vec<&str> = doc.split("```sql\n").skip(1).map(|b| b.split("```").next().expect("block")).collect();
        assert!(blocks.len() >= 10, "found {} SQL blocks", blocks.len());
        // A dashboard showing 10:00-14:00 UTC on the first day, as macros.go formats the range.
        let time_filter = |sql: &str| {
            let mut out = String::new();
            let mut rest = sql;
            while let Some(i) = rest.find("$__timeFilter(") {
                out.push_str(&rest[..i]);
                let after = &rest[i + "$__timeFilter(".len()..];
                let j = after.find(')').expect("closing parenthesis");
                out.push_str(&format!(
                    "{} BETWEEN '2024-01-01T10:00:00Z' AND '2024-01-01T14:00:00Z'",
                    &after[..j]
                ));
                rest = &after[j + 1..];
            }
            out.push_str(rest);
            out
        };
        // Enough incidents that the annotation and SLO queries have something to show.
        db.sql("INSERT INTO slo_objectives VALUES ('*', 0.99999)").await.expect("objective");
        db.sql("INSERT INTO incidents VALUES (TIMESTAMP '2024-01-01 11:00:00', TIMESTAMP '2024-01-01 11:10:00', 'zone_loss', NULL, NULL, 'us-east-1a', NULL, 'test')")
            .await
            .expect("incident");
        for block in blocks {
            let sql = time_filter(block).replace("$backend", "api");
            let rows: usize = query(&db, &sql).await.iter().map(RecordBatch::num_rows).sum();
            assert!(rows > 0, "no rows from a documented panel query:\n{sql}");
        }
        db.close().expect("close");
    });
}

/// `kpi_anomalies` against the generator's ground truth, scored as benches/anomaly/score.sh scores it:
/// every incident has an anomalous minute in its scope while it lasts, and per (backend, minute) the
/// anomalies are at least 85 % incident minutes (precision) and cover at least 90 % of them (recall). A
/// clear target outage shows on its own backend (the connection failures before the health checks
/// notice raise the error rate).
#[test]
fn kpi_anomalies_find_the_incidents_and_little_else() {
    let rt = runtime();
    rt.block_on(async {
        let (_tmp, db, incidents) = generated(1_000_000, 3).await;
        let outages: Vec<_> = incidents.iter().filter(|i| i.kind == IncidentKind::TargetOutage).collect();
        assert!(!outages.is_empty(), "the day has a target outage: {incidents:?}");
        for inc in outages {
            let b = inc.backend.as_deref().expect("scope");
            let found = scalar_i64(
                &db,
                &format!(
                    "SELECT count(*) FROM kpi_anomalies WHERE is_anomaly AND backend = '{b}'
                     AND bucket >= {} AND bucket <= {}",
                    ts_literal(inc.started_us - 60_000_000),
                    ts_literal(inc.ended_us)
                ),
            )
            .await;
            assert!(found > 0, "no anomaly for {inc:?}");
        }
        let batches = query(
            &db,
            "WITH flagged AS (SELECT DISTINCT bucket AS ts, backend FROM kpi_anomalies WHERE is_anomaly),
             scope AS (
                 SELECT DISTINCT k.bucket AS ts, k.backend,
                   CAST(i.started_at AS TEXT) || i.kind || coalesce(i.backend, i.zone, '') AS incident
                 FROM kpi_requests_1m k JOIN incidents i
                   ON k.bucket >= date_trunc('minute', i.started_at) AND k.bucket < i.ended_at
                  AND (i.backend IS NULL OR i.backend = k.backend)),
             truth AS (SELECT DISTINCT ts, backend FROM scope)
             SELECT (SELECT count(DISTINCT incident) FROM scope s JOIN flagged f ON f.ts = s.ts AND f.backend = s.backend) AS found,
                    (SELECT count(*) FROM incidents) AS incidents,
                    (SELECT count(*) FROM flagged f JOIN truth t ON t.ts = f.ts AND t.backend = f.backend) AS hits,
                    (SELECT count(*) FROM flagged) AS flagged,
                    (SELECT count(*) FROM truth) AS truth",
        )
        .await;
        let v: Vec<i64> = batches[0].columns().iter().map(|c| c.as_primitive::<Int64Type>().value(0)).collect();
        let (found, incidents, hits, flagged, truth) = (v[0], v[1], v[2], v[3], v[4]);
        let (precision, recall) = (hits as f64 / flagged as f64, hits as f64 / truth as f64);
        assert_eq!(found, incidents, "incidents with an anomaly in scope");
        assert!(precision >= 0.85 && recall >= 0.9, "precision {precision:.3}, recall {recall:.3} ({hits} of {flagged} flagged, {truth} incident minutes)");
        db.close().expect("close");
    });
}

/// `kpi_retry_impact_1m` adds up: its sums equal the same figures computed directly from
/// `predict_retry` over `retry_features`' retryable failures (0 for any other attempt) and the cost
/// parameters, and the expected retries match the
/// retries that happened (a logistic model's probabilities sum to its positives on its training rows).
#[test]
fn retry_impact_view_adds_up() {
    let rt = runtime();
    rt.block_on(async {
        let (_tmp, db, _) = generated(300_000, 5).await;
        let version = scalar_i64(&db, "SELECT version FROM train_retry_model('retry', 'SELECT * FROM retry_features')").await;
        assert_eq!(version, 1);
        query(&db, "DELETE FROM retry_cost_parameters").await;
        query(&db, "INSERT INTO retry_cost_parameters VALUES (0.002, 0.005, 'EUR', 0.3, 0.25)").await;
        let view = query(
            &db,
            "SELECT CAST(sum(attempts) AS DOUBLE PRECISION), CAST(sum(retries) AS DOUBLE PRECISION), sum(expected_retries),
                    CAST(sum(at_risk_attempts) AS DOUBLE PRECISION), sum(expected_retries_at_risk), sum(request_cost),
                    sum(retry_cost), sum(expected_retry_cost), sum(avoidable_cost), min(currency) = 'EUR'
             FROM kpi_retry_impact_1m",
        )
        .await;
        let direct = query(
            &db,
            "SELECT CAST(count(*) AS DOUBLE PRECISION), CAST(count(*) FILTER (WHERE attempt > 1) AS DOUBLE PRECISION), sum(p),
                    CAST(count(*) FILTER (WHERE p >= 0.3) AS DOUBLE PRECISION), sum(p) FILTER (WHERE p >= 0.3),
                    CAST(count(*) FILTER (WHERE will_retry) AS DOUBLE PRECISION)
             FROM (SELECT attempt, will_retry,
                          CASE WHEN retryable THEN
                          predict_retry(backend, method, status, attempt, lb_error, timed_out, response_flags, retry_after_s,
                                        log_total_ms, latency_vs_p99, backend_error_rate_1m, backend_healthy_ratio_1m,
                                        backend_queue_depth_1m, client_retry_share, idempotent, client_failures,
                                        client_retry_after_failure, client_unsafe_retry_after_failure,
                                        client_max_attempt, client_recent_retry_after_failure) ELSE 0.0 END AS p
                   FROM retry_features)",
        )
        .await;
        let v = |i: usize| view[0].column(i).as_primitive::<Float64Type>().value(0);
        let d = |i: usize| direct[0].column(i).as_primitive::<Float64Type>().value(0);
        let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{what}: {a} vs {b}");
        close(v(0), d(0), "attempts");
        close(v(1), d(1), "retries");
        close(v(2), d(2), "expected retries");
        close(v(3), d(3), "at-risk attempts");
        close(v(4), d(4), "expected retries at risk");
        close(v(5), d(0) * 0.002, "request cost");
        close(v(6), d(1) * 0.005, "retry cost");
        close(v(7), d(2) * 0.005, "expected retry cost");
        close(v(8), d(4) * 0.25 * 0.005, "avoidable cost");
        assert!(view[0].column(9).as_boolean().value(0), "currency from the parameters");
        assert!(d(1) > 100.0 && d(3) > 0.0, "the day has retries and attempts at risk: {direct:?}");
        let (expected, happened) = (d(2), d(5));
        assert!((expected / happened - 1.0).abs() < 0.1, "expected {expected} retries, {happened} happened");
        db.close().expect("close");
    });
}
