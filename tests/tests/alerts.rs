//! Alert rules: an incident in the telemetry (a backend answering 5xx) fires the rule and its end
//! resolves it, in `alert_events` and through a webhook that fails once (retried); the firing state
//! survives a restart; rule queries may only read; rule queries and rollup refreshes run under the
//! background limits.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use trafficdb_server::ServerConfig;

use crate::common::runtime;
use crate::http::{rows, start};

/// One minute of requests to `backend` at `minute` (10:MM), `bad` of them answered 503.
fn minute(backend: &str, minute: u32, total: u32, bad: u32) -> String {
    let rows: Vec<String> = (0..total)
        .map(|i| {
            let status = if i < bad { 503 } else { 200 };
            format!(
                "('2024-01-01 10:{minute:02}:{:02}', 'lb-1', 'https:443', '{backend}', 't1', 'a', 'c{i}', 'r{minute}-{i}', 1, 'GET', \
                 '/x', {status}, {status}, 1, 10, 12, 100, 100, false, NULL, NULL, false)",
                i % 60
            )
        })
        .collect();
    format!(
        "INSERT INTO lb_requests (ts, lb, listener, backend, target, zone, client_id, request_id, attempt, method, \
         path_template, lb_status, target_status, connect_ms, target_ms, total_ms, request_bytes, response_bytes, \
         timed_out, response_flags, retry_after, is_health_check) VALUES {}",
        rows.join(", ")
    )
}

const RULE: &str = "SELECT backend, CAST(errors AS DOUBLE PRECISION) / attempts AS value FROM kpi_requests_1m \
                    WHERE bucket = (SELECT max(bucket) FROM kpi_requests_1m) AND CAST(errors AS DOUBLE PRECISION) / attempts > 0.2";

/// A webhook receiver: answers 500 to the first request and 204 to the others; sends each body on.
async fn receiver() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head and a body of Content-Length bytes.
            let body = loop {
                let k = s.read(&mut chunk).await.unwrap_or(0);
                if k == 0 {
                    break String::new();
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break body.to_string();
                    }
                }
            };
            n += 1;
            let status = if n == 1 { "500 Internal Server Error" } else { "204 No Content" };
            let _ = s
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
                .await;
            let _ = tx.send(format!("{n} {body}"));
        }
    });
    (addr, rx)
}

#[test]
fn alerts_fire_and_resolve_with_webhooks() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(trafficdb_schema::open(dir.path(), false).await.unwrap());
        // The schema's ready-made rules are there, disabled.
        let seeded = rows(&db, "SELECT name, enabled FROM alert_rules ORDER BY name").await;
        assert_eq!(seeded, vec![vec!["kpi_anomaly", "false"], vec!["slo_fast_burn", "false"], vec!["slo_slow_burn", "false"]]);
        // They plan against the views they name.
        for r in rows(&db, "SELECT query FROM alert_rules").await {
            db.sql(&r[0]).await.unwrap_or_else(|e| panic!("{}: {e}", r[0]));
        }
        let (hook, mut delivered) = receiver().await;
        db.sql(&format!(
            "INSERT INTO alert_rules VALUES ('api_errors', '{}', '1 minute', 'http://{hook}/hooks/trafficdb', true, 'test')",
            RULE.replace('\'', "''")
        ))
        .await
        .unwrap();
        let srv = start(db.clone(), ServerConfig::default()).await;

        // A healthy minute, then the incident: half of api's requests fail.
        db.sql(&minute("api", 0, 20, 0)).await.unwrap();
        db.sql("CALL evaluate_alerts()").await.unwrap();
        assert_eq!(rows(&db, "SELECT count(*) FROM alert_events").await[0][0], "0");
        db.sql(&minute("api", 1, 20, 10)).await.unwrap();
        db.sql(&minute("web", 1, 20, 0)).await.unwrap();
        db.sql("CALL evaluate_alerts()").await.unwrap();
        let events = rows(&db, "SELECT alert, state, key, value FROM alert_events ORDER BY ts, state").await;
        assert_eq!(events, vec![vec!["api_errors", "firing", "backend=api", "0.5"]]);
        // Evaluating again while it lasts adds nothing.
        db.sql("CALL evaluate_alerts()").await.unwrap();
        assert_eq!(rows(&db, "SELECT count(*) FROM alert_events").await[0][0], "1");

        // The webhook: the first POST gets a 500, the retry a second later a 204.
        let first = tokio::time::timeout(Duration::from_secs(30), delivered.recv()).await.unwrap().unwrap();
        let second = tokio::time::timeout(Duration::from_secs(30), delivered.recv()).await.unwrap().unwrap();
        assert!(first.starts_with("1 ") && second.starts_with("2 "), "{first} / {second}");
        let body: Value = serde_json::from_str(second.split_once(' ').unwrap().1).unwrap();
        assert_eq!(body["alert"], "api_errors");
        assert_eq!(body["state"], "firing");
        assert_eq!(body["key"], "backend=api");
        assert_eq!(body["value"], 0.5);
        assert_eq!(body["details"]["backend"], "api");
        assert!(body["ts"].as_str().unwrap().ends_with('Z'));
        srv.stop().await;

        // The firing state survives a restart: no second "firing" for the same incident.
        let db = Arc::try_unwrap(db).unwrap_or_else(|_| panic!("the server let go of the database"));
        db.close().unwrap();
        let db = Arc::new(trafficdb_schema::open(dir.path(), false).await.unwrap());
        db.sql("CALL evaluate_alerts()").await.unwrap();
        assert_eq!(rows(&db, "SELECT count(*) FROM alert_events").await[0][0], "1");

        // The incident ends: the next minute is healthy, and the alert resolves.
        db.sql(&minute("api", 2, 20, 1)).await.unwrap();
        db.sql("CALL evaluate_alerts('api_errors')").await.unwrap();
        let events = rows(&db, "SELECT state, key, value FROM alert_events ORDER BY ts, state").await;
        assert_eq!(events, vec![vec!["firing", "backend=api", "0.5"], vec!["resolved", "backend=api", "0.5"]]);
        let delivered_later = db.take_alert_outbox();
        assert_eq!(delivered_later.iter().map(|e| e.state).collect::<Vec<_>>(), ["resolved"]);

        // Rule queries may only read; a named rule that fails says why.
        db.sql("INSERT INTO alert_rules VALUES ('bad', 'DELETE FROM lb_requests', '1 minute', NULL, true, NULL)").await.unwrap();
        let err = db.sql("CALL evaluate_alerts('bad')").await.unwrap_err();
        assert_eq!(err.sqlstate(), "42501", "{err}");
        assert_eq!(rows(&db, "SELECT count(*) FROM lb_requests").await[0][0], "80");
        let err = db.sql("CALL evaluate_alerts('nope')").await.unwrap_err();
        assert_eq!(err.sqlstate(), "42704", "{err}");
        // The unnamed evaluation logs the bad rule and goes on.
        db.sql("CALL evaluate_alerts()").await.unwrap();
        // A rule that runs too long or holds too much fails alone, under the background limits.
        db.set_background_limits(Duration::from_millis(300), 16 << 20);
        db.sql(
            "INSERT INTO alert_rules VALUES ('slow', 'SELECT count(*) AS n FROM generate_series(1, 1000000) a \
             CROSS JOIN generate_series(1, 1000000) b', '1 minute', NULL, true, NULL), \
             ('greedy', 'SELECT DISTINCT a.value * 1000000 + b.value AS k FROM generate_series(1, 3000) a \
             CROSS JOIN generate_series(1, 3000) b', '1 minute', NULL, true, NULL)",
        )
        .await
        .unwrap();
        let err = db.sql("CALL evaluate_alerts('slow')").await.unwrap_err();
        assert_eq!(err.sqlstate(), "57014", "{err}");
        let err = db.sql("CALL evaluate_alerts('greedy')").await.unwrap_err();
        assert!(["53200", "57014"].contains(&err.sqlstate()), "{err}");
        db.sql("CALL evaluate_alerts()").await.unwrap();
        db.sql("DELETE FROM alert_rules WHERE name IN ('slow', 'greedy', 'bad')").await.unwrap();
        db.set_background_limits(Duration::from_secs(60), 0);
        // A removed rule resolves what it had firing.
        db.sql(&minute("api", 3, 20, 20)).await.unwrap();
        db.sql("CALL evaluate_alerts()").await.unwrap();
        db.sql("DELETE FROM alert_rules WHERE name = 'api_errors'").await.unwrap();
        db.sql("CALL evaluate_alerts()").await.unwrap();
        let last = rows(&db, "SELECT state, value FROM alert_events ORDER BY ts DESC, state LIMIT 2").await;
        assert_eq!(last, vec![vec!["resolved", "1.0"], vec!["firing", "1.0"]]);
        Arc::try_unwrap(db).unwrap_or_else(|_| panic!("one owner")).close().unwrap();
    });
}

/// A rollup refresh is background work under the same limits as alert rules: one whose range needs
/// more memory than `query_memory_limit` fails (53200) and leaves the view's stored rows as they were
/// (read without real time); with room, the next refresh brings it up to date.
#[test]
fn a_rollup_refresh_over_its_memory_limit_leaves_the_view_as_it_was() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = trafficdb::Database::open(tmp.path()).await.unwrap();
        db.sql("CREATE TABLE req (ts TIMESTAMP NOT NULL, k BIGINT) WITH (time_column = 'ts')").await.unwrap();
        db.sql("INSERT INTO req VALUES ('2024-01-01 10:00:00', 1), ('2024-01-01 10:00:30', 2)").await.unwrap();
        db.sql(
            "CREATE MATERIALIZED VIEW per_key WITH (refresh = '1 hour', realtime = false) AS \
             SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, k, count(*) AS n FROM req GROUP BY 1, 2",
        )
        .await
        .unwrap();
        db.sql("CALL refresh_continuous_aggregate('per_key')").await.unwrap();
        let view = "SELECT count(*), sum(n) FROM per_key";
        let before = rows(&db, view).await;
        assert_eq!(before, vec![vec!["2", "2"]]);
        // 300,000 distinct keys in the same minutes: the grouping needs far more than 1 MiB.
        db.sql("INSERT INTO req SELECT to_timestamp(1704103200 + x % 120), x FROM generate_series(3, 300002) AS t(x)")
            .await
            .unwrap();
        db.set_background_limits(Duration::from_secs(60), 1 << 20);
        let err = db.sql("CALL refresh_continuous_aggregate('per_key')").await.unwrap_err();
        assert_eq!(err.sqlstate(), "53200", "{err}");
        assert_eq!(rows(&db, view).await, before, "a failed refresh leaves the view as it was");
        db.set_background_limits(Duration::from_secs(60), 0);
        db.sql("CALL refresh_continuous_aggregate('per_key')").await.unwrap();
        assert_eq!(rows(&db, view).await, vec![vec!["300002", "300002"]]);
        db.close().unwrap();
    });
}
