//! The HTTP listener with a real socket: line-protocol writes (`/api/v2/write`, `/write`) into new and
//! existing tables, partial errors, gzip, precision, dedup keys and roles.

use std::sync::Arc;

use serde_json::Value;
use trafficdb::Database;
use trafficdb::arrow::util::display::array_value_to_string;
use trafficdb_server::config::{AuthMode, UserConfig};
use trafficdb_server::security::roles::Role;
use trafficdb_server::security::secret::Secret;
use trafficdb_server::{Server, ServerConfig};

use crate::common::runtime;

pub struct Running {
    #[allow(dead_code)]
    pub pg: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.serving.await.expect("join").expect("clean shutdown");
    }
}

/// Starts a server with an HTTP listener on free loopback ports.
pub async fn start(db: Arc<Database>, mut config: ServerConfig) -> Running {
    config.listen = "127.0.0.1:0".into();
    config.http = Some("127.0.0.1:0".into());
    let server = Server::bind(db, config).await.expect("bind");
    let pg = server.local_addr().expect("addr");
    let http = server.http_addr().expect("http addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    Running { pg, http, stop, serving }
}

/// One HTTP/1.1 request: the status, the headers and the body.
pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to HTTP");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("send");
    s.write_all(body).await.expect("send body");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").map(|(h, b)| (h.to_string(), b.to_string())).unwrap_or_default();
    (status, head, body)
}

fn basic(credentials: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
}

async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = request(addr, "POST", path, &[], body.as_bytes()).await;
    (status, body)
}

/// The rows of a query, each value as text (`NULL` for null).
pub async fn rows(db: &Database, sql: &str) -> Vec<Vec<String>> {
    let batches = db.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(
                        |c| {
                            if c.is_null(r) {
                                "NULL".to_string()
                            } else {
                                array_value_to_string(c, r).expect("display")
                            }
                        },
                    )
                    .collect(),
            );
        }
    }
    out
}

/// A configured user whose password is its name and " pw".
fn user(name: &str, role: Role) -> UserConfig {
    UserConfig { name: name.into(), role, password: Some(Secret::scram_with(&format!("{name} pw"), b"salt", 4096)) }
}

fn one(v: &[Vec<String>]) -> &str {
    &v[0][0]
}

#[test]
fn line_protocol_creates_tables_and_types_columns() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).await.unwrap());
        let srv = start(db.clone(), ServerConfig::default()).await;
        let body = "weather,site=north\\ gate,kind=a temp=21.5,count=3i,big=7u,ok=true,note=\"say \\\"hi\\\", then go\" 1700000000000000000\n\
                    weather,site=south temp=-4,count=-2i 1700000001000000000\n";
        let (status, answer) = post(srv.http, "/api/v2/write?bucket=any&org=any", body).await;
        assert_eq!(status, 204, "{answer}");
        let def = db.engine().table("weather").unwrap().def.clone();
        let types: Vec<String> = def.columns.iter().map(|c| format!("{} {}", c.name, c.ty.sql_name())).collect();
        assert_eq!(
            types,
            ["ts timestamp", "site text", "kind text", "temp double precision", "count bigint", "big bigint", "ok boolean", "note text"]
        );
        // A time-series table like any other: partitioned by day on ts.
        assert_eq!(def.time_column(), Some(0));
        let got = rows(&db, "SELECT ts, site, kind, temp, count, big, ok, note FROM weather ORDER BY ts").await;
        assert_eq!(
            got,
            vec![
                vec!["2023-11-14T22:13:20", "north gate", "a", "21.5", "3", "7", "true", "say \"hi\", then go"],
                vec!["2023-11-14T22:13:21", "south", "NULL", "-4.0", "-2", "NULL", "NULL", "NULL"],
            ]
        );
        // A later write with a new key is refused for that line; the rest is written.
        let body = "weather,site=x temp=1 1700000002000000000\nweather,site=x humidity=50 1700000003000000000\n";
        let (status, answer) = post(srv.http, "/api/v2/write", body).await;
        assert_eq!(status, 400, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["code"], "invalid");
        assert_eq!(v["line"], 2);
        assert_eq!(v["written"], 1);
        assert_eq!(v["errors"][0]["sqlstate"], "42703");
        assert!(v["message"].as_str().unwrap().contains("humidity"), "{answer}");
        assert_eq!(one(&rows(&db, "SELECT count(*) FROM weather").await), "3");
        srv.stop().await;
    });
}

#[test]
fn telegraf_shaped_target_stats_land_in_lb_targets() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(trafficdb_schema::open(dir.path(), false).await.unwrap());
        let srv = start(db.clone(), ServerConfig::default()).await;
        // What Telegraf's influxdb_v2 output sends for the stats of two targets (see
        // docs/line-protocol.md): integers with `i`, gauges as floats, tags sorted by key, ns time.
        let mut body = String::new();
        for (i, t) in ["10.0.1.1:8080", "10.0.1.2:8080"].iter().enumerate() {
            for s in 0..3 {
                body.push_str(&format!(
                    "lb_targets,backend=checkout,lb=lb-eu-1,target={t},zone=eu-1a active_conns={}i,avg_response_ms={},\
                     ejected=false,error_rate=0.01,healthy={},queue_depth=0i,rejected_conns=0i,requests_per_s=120.5,\
                     weight=100i {}\n",
                    10 + i,
                    40.0 + s as f64,
                    if i == 1 && s == 2 { "false" } else { "true" },
                    1_733_011_200_000_000_000i64 + s * 15_000_000_000
                ));
            }
        }
        let (status, answer) = post(srv.http, "/api/v2/write?org=ops&bucket=lb&precision=ns", &body).await;
        assert_eq!(status, 204, "{answer}");
        let got = rows(
            &db,
            "SELECT target, count(*), sum(CASE WHEN healthy THEN 1 ELSE 0 END), max(avg_response_ms), min(ts), max(weight) \
             FROM lb_targets GROUP BY target ORDER BY target",
        )
        .await;
        assert_eq!(
            got,
            vec![
                vec!["10.0.1.1:8080", "3", "3", "42.0", "2024-12-01T00:00:00", "100"],
                vec!["10.0.1.2:8080", "3", "2", "42.0", "2024-12-01T00:00:00", "100"],
            ]
        );
        // The periodic KPI over health works on what was pushed.
        let healthy = rows(&db, "SELECT count(*) FROM lb_targets WHERE NOT healthy").await;
        assert_eq!(one(&healthy), "1");
        // lb_targets has dedup keys (lb, backend, target): resending the batch after a lost answer
        // stores nothing twice.
        let (status, answer) = post(srv.http, "/api/v2/write?precision=ns", &body).await;
        assert_eq!(status, 204, "{answer}");
        assert_eq!(one(&rows(&db, "SELECT count(*) FROM lb_targets").await), "6");
        // A NOT NULL column left out refuses the line (healthy is NOT NULL).
        let (status, answer) = post(
            srv.http,
            "/write?db=x&precision=s",
            "lb_targets,lb=a,backend=b,target=c active_conns=1i 1733011300\n",
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("23502") && answer.contains("healthy"), "{answer}");
        // A value that does not fit its column refuses the line: a float in an integer column.
        let (status, answer) = post(
            srv.http,
            "/write?precision=s",
            "lb_targets,lb=a,backend=b,target=c healthy=true,active_conns=1.5 1733011300\n",
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("22P02") && answer.contains("active_conns"), "{answer}");
        // An integral float fits; an out-of-range integer does not (weight is SMALLINT).
        let (status, answer) = post(
            srv.http,
            "/write?precision=s",
            "lb_targets,lb=a,backend=b,target=c healthy=true,active_conns=2 1733011300\n\
             lb_targets,lb=a,backend=b,target=d healthy=true,weight=70000i 1733011300\n",
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!((v["written"].as_u64(), v["failed"].as_u64(), v["line"].as_u64()), (Some(1), Some(1), Some(2)));
        assert!(answer.contains("out of range for smallint"), "{answer}");
        srv.stop().await;
    });
}

#[test]
fn precision_gzip_defaults_and_errors() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).await.unwrap());
        let srv = start(db.clone(), ServerConfig::default()).await;
        for (precision, ts) in
            [("s", "1700000000"), ("ms", "1700000000123"), ("us", "1700000000123456"), ("ns", "1700000000123456789")]
        {
            let (status, answer) = post(
                srv.http,
                &format!("/api/v2/write?precision={precision}"),
                &format!("p,unit={precision} v=1 {ts}\n"),
            )
            .await;
            assert_eq!(status, 204, "{answer}");
        }
        for (precision, ts) in
            [("n", "1700000000123456789"), ("u", "1700000000123456"), ("m", "28333333"), ("h", "472222")]
        {
            let (status, answer) = post(
                srv.http,
                &format!("/write?db=x&precision={precision}"),
                &format!("p,unit=v1{precision} v=1 {ts}\n"),
            )
            .await;
            assert_eq!(status, 204, "{answer}");
        }
        let got = rows(&db, "SELECT unit, ts FROM p ORDER BY unit").await;
        let got: Vec<String> = got.iter().map(|r| format!("{}={}", r[0], r[1])).collect();
        assert_eq!(
            got,
            [
                "ms=2023-11-14T22:13:20.123",
                "ns=2023-11-14T22:13:20.123456",
                "s=2023-11-14T22:13:20",
                "us=2023-11-14T22:13:20.123456",
                "v1h=2023-11-14T22:00:00",
                "v1m=2023-11-14T22:13:00",
                "v1n=2023-11-14T22:13:20.123456",
                "v1u=2023-11-14T22:13:20.123456",
            ]
        );
        // No timestamp: the time the request arrived.
        let before = chrono_now_us();
        let (status, _) = post(srv.http, "/api/v2/write", "p,unit=now v=2\n").await;
        assert_eq!(status, 204);
        let after = chrono_now_us();
        let t: i64 = one(&rows(&db, "SELECT CAST(ts AS BIGINT) FROM p WHERE unit = 'now'").await).parse().unwrap();
        assert!(before - 1_000 <= t && t <= after + 1_000, "{before} {t} {after}");
        // gzip.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"p,unit=gz v=3 1700000000\n").unwrap();
        let gz = gz.finish().unwrap();
        let (status, _, answer) =
            request(srv.http, "POST", "/api/v2/write?precision=s", &[("Content-Encoding", "gzip")], &gz).await;
        assert_eq!(status, 204, "{answer}");
        assert_eq!(one(&rows(&db, "SELECT v FROM p WHERE unit = 'gz'").await), "3.0");
        let (status, _, answer) =
            request(srv.http, "POST", "/api/v2/write", &[("Content-Encoding", "gzip")], b"not gzip").await;
        assert_eq!(status, 400, "{answer}");
        let (status, _, answer) = request(srv.http, "POST", "/api/v2/write", &[("Content-Encoding", "br")], b"x").await;
        assert_eq!(status, 415, "{answer}");
        // Bad precision, bad UTF-8, and a body of nothing but errors.
        let (status, answer) = post(srv.http, "/api/v2/write?precision=d", "p v=1\n").await;
        assert_eq!((status, answer.contains("22023")), (400, true), "{answer}");
        let (status, _, answer) = request(srv.http, "POST", "/api/v2/write", &[], b"p v=1\np,t=\xff v=2\n").await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("line 2"), "{answer}");
        let (status, answer) =
            post(srv.http, "/api/v2/write", "p v=1 12x\np\n\np v=\np v=1,v=2\np,unit=a ts=1\n").await;
        assert_eq!(status, 400, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        let lines: Vec<u64> = v["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, vec![1, 2, 4, 5, 6], "{answer}");
        assert_eq!(v["written"], 0);
        // An empty body writes nothing and is fine.
        assert_eq!(post(srv.http, "/api/v2/write", "").await.0, 204);
        // InfluxDB clients' ping.
        let (status, head, _) = request(srv.http, "GET", "/ping", &[], b"").await;
        assert_eq!(status, 204);
        assert!(head.to_ascii_lowercase().contains("x-influxdb-version"));
        srv.stop().await;
    });
}

fn chrono_now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

#[test]
fn dedup_keys_make_retries_idempotent() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).await.unwrap());
        db.sql(
            "CREATE TABLE stats (ts TIMESTAMP NOT NULL, host TEXT, v DOUBLE) \
             WITH (time_column = 'ts', dedup_keys = 'host')",
        )
        .await
        .unwrap();
        let err = db
            .sql("CREATE TABLE bad (ts TIMESTAMP NOT NULL, v DOUBLE) WITH (time_column = 'ts', dedup_keys = 'nope')")
            .await
            .unwrap_err();
        assert_eq!(err.sqlstate(), "42703", "{err}");
        let srv = start(db.clone(), ServerConfig::default()).await;
        let batch = "stats,host=a v=1 1700000000\nstats,host=b v=2 1700000000\nstats,host=a v=9 1700000000\n";
        assert_eq!(post(srv.http, "/api/v2/write?precision=s", batch).await.0, 204);
        // The third line repeats the first's key: the first is kept.
        assert_eq!(
            rows(&db, "SELECT host, v FROM stats ORDER BY host").await,
            vec![vec!["a", "1.0"], vec!["b", "2.0"]]
        );
        // The same batch again, after a flush (the keys are then read from a segment), and a new row.
        db.flush().unwrap();
        let again = format!("{batch}stats,host=c v=3 1700000000\nstats,host=a v=4 1700000001\n");
        assert_eq!(post(srv.http, "/api/v2/write?precision=s", &again).await.0, 204);
        assert_eq!(
            rows(&db, "SELECT host, v FROM stats ORDER BY ts, host").await,
            vec![vec!["a", "1.0"], vec!["b", "2.0"], vec!["c", "3.0"], vec!["a", "4.0"]]
        );
        // Several copies sent at once still store one.
        let sends: Vec<_> = (0..4)
            .map(|_| {
                let http = srv.http;
                tokio::spawn(
                    async move { post(http, "/api/v2/write?precision=s", "stats,host=d v=5 1700000005\n").await },
                )
            })
            .collect();
        for s in sends {
            assert_eq!(s.await.unwrap().0, 204);
        }
        assert_eq!(one(&rows(&db, "SELECT count(*) FROM stats WHERE host = 'd'").await), "1");
        // Tables without dedup keys keep every row.
        assert_eq!(
            post(srv.http, "/api/v2/write?precision=s", "plain v=1 1700000000\nplain v=1 1700000000\n").await.0,
            204
        );
        assert_eq!(one(&rows(&db, "SELECT count(*) FROM plain").await), "2");
        srv.stop().await;
    });
}

#[test]
fn line_protocol_roles_and_passwords() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).await.unwrap());
        db.sql("CREATE TABLE m (ts TIMESTAMP NOT NULL, v DOUBLE) WITH (time_column = 'ts')").await.unwrap();
        let config = ServerConfig {
            auth: AuthMode::Password,
            users: vec![user("admin", Role::Admin), user("telegraf", Role::Writer), user("viewer", Role::Reader)],
            ..ServerConfig::default()
        };
        let srv = start(db.clone(), config).await;
        let write = |auth: Option<String>, path: &'static str, body: &'static str| {
            let http = srv.http;
            async move {
                let headers: Vec<(&str, &str)> = match &auth {
                    Some(a) => vec![("Authorization", a.as_str())],
                    None => vec![],
                };
                let (status, _, answer) = request(http, "POST", path, &headers, body.as_bytes()).await;
                (status, answer)
            }
        };
        assert_eq!(write(None, "/api/v2/write", "m v=1 1\n").await.0, 401);
        assert_eq!(write(Some(basic("telegraf:wrong")), "/api/v2/write", "m v=1 1\n").await.0, 401);
        let (status, answer) = write(Some(basic("viewer:viewer pw")), "/api/v2/write", "m v=1 1\n").await;
        assert_eq!(status, 403, "{answer}");
        assert!(answer.contains("42501"), "{answer}");
        // A writer writes (Basic, InfluxDB v2's Token form, v1's u and p) but may not create tables.
        assert_eq!(write(Some(basic("telegraf:telegraf pw")), "/api/v2/write", "m v=1 1\n").await.0, 204);
        assert_eq!(write(Some("Token telegraf:telegraf pw".into()), "/api/v2/write", "m v=2 2\n").await.0, 204);
        assert_eq!(write(None, "/write?u=telegraf&p=telegraf%20pw", "m v=3 3\n").await.0, 204);
        let (status, answer) = write(Some(basic("telegraf:telegraf pw")), "/api/v2/write", "newtable v=1 1\n").await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("42501"), "{answer}");
        assert!(db.engine().table("newtable").is_none());
        // Many new measurements from a writer: each line fails at once, nothing is gathered for them,
        // and the lines for an existing table are written.
        let many: &'static str =
            Box::leak((0..20_000).map(|i| format!("new{i} v=1 1\nm v=5 5\n")).collect::<String>().into_boxed_str());
        let (status, answer) = write(Some(basic("telegraf:telegraf pw")), "/api/v2/write", many).await;
        assert_eq!(status, 400, "{answer}");
        let report: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!((report["written"].as_u64(), report["failed"].as_u64()), (Some(20_000), Some(20_000)), "{answer}");
        assert!(db.engine().table("new0").is_none());
        assert_eq!(write(Some(basic("admin:admin pw")), "/api/v2/write", "newtable v=1 1\n").await.0, 204);
        assert_eq!(one(&rows(&db, "SELECT count(*) FROM m").await), "20003");
        srv.stop().await;
    });
}

/// The value of the first Prometheus sample named `name` whose labels contain `labels`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        (n == name && rest.contains(labels)).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn health_metrics_status_and_the_system_view() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).await.unwrap());
        db.sql("CREATE TABLE m (ts TIMESTAMP NOT NULL, v DOUBLE) WITH (time_column = 'ts', retention = '30 days')")
            .await
            .unwrap();
        let srv = start(db.clone(), ServerConfig::default()).await;
        for path in ["/health", "/health/live", "/health/ready"] {
            let (status, _, body) = request(srv.http, "GET", path, &[], b"").await;
            assert_eq!(status, 200, "{path}: {body}");
        }
        let (_, _, body) = request(srv.http, "GET", "/health", &[], b"").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((v["live"].as_bool(), v["ready"].as_bool()), (Some(true), Some(true)), "{body}");
        // Some traffic: line-protocol rows and statements over the PostgreSQL port.
        let (status, _) =
            post(srv.http, "/api/v2/write?precision=s", "m v=1 1700000000\nm v=2 1700000001\nm v=x 1700000002\n").await;
        assert_eq!(status, 400);
        let client = crate::server::connect(srv.pg, "admin", None).await.unwrap();
        client.simple_query("INSERT INTO m VALUES ('2023-11-14 22:13:30', 3)").await.unwrap();
        for _ in 0..5 {
            client.query("SELECT count(*) FROM m", &[]).await.unwrap();
        }
        assert!(client.simple_query("SELECT * FROM nope").await.is_err());
        let (status, head, text) = request(srv.http, "GET", "/metrics", &[], b"").await;
        assert_eq!(status, 200);
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        assert_eq!(sample(&text, "trafficdb_rows_appended_total", ""), Some(3.0), "{text}");
        assert_eq!(sample(&text, "trafficdb_table_rows", "table=\"m\""), Some(3.0), "{text}");
        assert_eq!(sample(&text, "trafficdb_line_protocol_lines_total", ""), Some(3.0));
        assert_eq!(sample(&text, "trafficdb_line_protocol_rejected_total", ""), Some(1.0));
        assert_eq!(sample(&text, "trafficdb_connections", ""), Some(1.0));
        assert!(sample(&text, "trafficdb_queries_total", "").unwrap() >= 7.0, "{text}");
        assert!(sample(&text, "trafficdb_query_errors_total", "").unwrap() >= 1.0, "{text}");
        assert!(sample(&text, "trafficdb_query_seconds_bucket", "le=\"+Inf\"").unwrap() >= 7.0, "{text}");
        assert!(sample(&text, "trafficdb_wal_fsync_seconds_count", "").unwrap() >= 2.0, "{text}");
        assert!(sample(&text, "trafficdb_memory_resident_bytes", "").unwrap() > 1e6, "{text}");
        assert!(text.contains("# TYPE trafficdb_wal_fsync_seconds histogram"), "{text}");
        // The same figures over SQL.
        let rows = client
            .query("SELECT value FROM system_metrics WHERE name = 'trafficdb_table_rows' AND labels = 'table=m'", &[])
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, f64>(0), 3.0);
        let kinds = client.query("SELECT DISTINCT kind FROM system_metrics ORDER BY kind", &[]).await.unwrap();
        let kinds: Vec<String> = kinds.iter().map(|r| r.get(0)).collect();
        assert_eq!(kinds, ["counter", "gauge", "histogram"]);
        assert!(client.simple_query("DROP VIEW system_metrics").await.is_err());
        // The status page.
        let (status, _, body) = request(srv.http, "GET", "/api/v1/status", &[], b"").await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        // No path of the server's file system in an answer.
        assert!(!body.contains("/tmp") && v.get("data_dir").is_none(), "{body}");
        let m = v["tables"].as_array().unwrap().iter().find(|t| t["name"] == "m").unwrap().clone();
        assert_eq!(m["rows"], 3, "{body}");
        assert_eq!(m["retention"], "30 days");
        assert_eq!(m["time_column"], "ts");
        assert_eq!(m["oldest"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(m["newest"], "2023-11-14T22:13:30.000000Z");
        db.flush().unwrap();
        let (_, _, body) = request(srv.http, "GET", "/api/v1/status", &[], b"").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let m = v["tables"].as_array().unwrap().iter().find(|t| t["name"] == "m").unwrap().clone();
        assert_eq!(
            (m["rows"].as_u64(), m["unflushed_rows"].as_u64(), m["segments"].as_u64()),
            (Some(3), Some(0), Some(1))
        );
        assert!(m["disk_bytes"].as_u64().unwrap() > 0);
        assert!(v["disk_bytes"].as_u64().unwrap() >= m["disk_bytes"].as_u64().unwrap());
        drop(client);
        srv.stop().await;
    });
}

#[test]
fn the_audit_log_records_who_did_what() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit/audit.log");
        let db = Arc::new(Database::open(dir.path().join("data")).await.unwrap());
        let mut config = ServerConfig {
            auth: AuthMode::Password,
            users: vec![user("admin", Role::Admin), user("telegraf", Role::Writer)],
            ..ServerConfig::default()
        };
        config.audit.path = Some(log.clone());
        let srv = start(db.clone(), config).await;
        let admin = crate::server::connect(srv.pg, "admin", Some("admin pw")).await.unwrap();
        admin.simple_query("CREATE TABLE a (ts TIMESTAMP NOT NULL, v DOUBLE) WITH (time_column = 'ts')").await.unwrap();
        admin.simple_query("INSERT INTO a VALUES ('2024-01-01 00:00:00', 1)").await.unwrap();
        admin.simple_query("SELECT * FROM a").await.unwrap();
        assert!(crate::server::connect(srv.pg, "admin", Some("wrong")).await.is_err());
        let (status, _, _) = request(
            srv.http,
            "POST",
            "/api/v2/write?precision=s",
            &[("Authorization", &basic("telegraf:telegraf pw"))],
            b"a v=2 1704067201\n",
        )
        .await;
        assert_eq!(status, 204);
        drop(admin);
        srv.stop().await;
        let text = std::fs::read_to_string(&log).unwrap();
        let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let find = |event: &str, user: &str| events.iter().find(|e| e["event"] == event && e["user"] == user).cloned();
        let connect = find("connect", "admin").expect("connect event");
        assert_eq!(connect["role"], "admin");
        assert!(connect["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(find("ddl", "admin").unwrap()["statement"].as_str().unwrap().starts_with("CREATE TABLE a"));
        assert!(find("write", "admin").unwrap()["statement"].as_str().unwrap().starts_with("INSERT INTO a"));
        assert_eq!(find("auth_failed", "admin").unwrap()["via"], "postgres");
        let lp = find("write", "telegraf").unwrap();
        assert_eq!(
            (lp["role"].as_str(), lp["rows"].as_u64(), lp["via"].as_str()),
            (Some("writer"), Some(1), Some("line protocol"))
        );
        // Reads are not audited, and no password appears.
        assert!(!text.contains("SELECT * FROM a"), "{text}");
        assert!(!text.contains("admin pw") && !text.contains("telegraf pw") && !text.contains("wrong"), "{text}");
    });
}

#[test]
fn large_bodies_parsed_in_halves_keep_line_numbers() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).await.unwrap());
        db.sql("CREATE TABLE big (ts TIMESTAMP NOT NULL, host TEXT, n BIGINT, v DOUBLE) WITH (time_column = 'ts')")
            .await
            .unwrap();
        let srv = start(db.clone(), ServerConfig::default()).await;
        // About 0.8 MB: above the size parsed on two threads. Lines 7 and 15000 are bad.
        let lines = 20_000;
        let mut body = String::new();
        for i in 1..=lines {
            match i {
                7 => body.push_str("big,host=h n=oops 1700000000\n"),
                15_000 => body.push_str("big,host=h n=1i,missing=2 1700000000\n"),
                _ => body.push_str(&format!("big,host=host-{} n={i}i,v={}.5 {}\n", i % 10, i % 100, 1_700_000_000 + i)),
            }
        }
        assert!(body.len() > 512 << 10);
        let (status, answer) = post(srv.http, "/api/v2/write?precision=s", &body).await;
        assert_eq!(status, 400, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        let bad: Vec<u64> = v["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(bad, vec![7, 15_000], "{answer}");
        assert_eq!(v["written"], lines - 2);
        let got = rows(&db, "SELECT count(*), sum(n), min(n), max(n), count(DISTINCT host) FROM big").await;
        let sum: i64 = (1..=lines as i64).sum::<i64>() - 7 - 15_000;
        assert_eq!(got[0], vec![(lines - 2).to_string(), sum.to_string(), "1".into(), lines.to_string(), "10".into()]);
        // Each row kept its own line's values: n and ts agree everywhere.
        let off = rows(&db, "SELECT count(*) FROM big WHERE CAST(ts AS BIGINT) <> (1700000000 + n) * 1000000").await;
        assert_eq!(one(&off), "0");
        srv.stop().await;
    });
}

/// The body of an HTTP/1.1 answer sent in chunks, joined.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// `POST /api/v1/query` with a JSON request as `credentials`: the status and the body (de-chunked).
async fn sql_request(http: std::net::SocketAddr, credentials: &str, request: Value) -> (u16, String, String) {
    let auth = basic(credentials);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let (status, head, body) = request_raw(http, "/api/v1/query", &headers, request.to_string().as_bytes()).await;
    (status, head, body)
}

async fn request_raw(
    http: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let (status, head, body) = request(http, "POST", path, headers, body).await;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(&body) } else { body };
    (status, head, body)
}

/// SQL over HTTP: the rows the library gives, in JSON, CSV and Arrow; the caller's role checked on
/// the plan; PostgreSQL's error codes; session statements refused; timeouts; a client that leaves
/// cancels its statement.
#[test]
fn sql_over_http_runs_as_the_callers_role() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).await.unwrap());
        db.sql("CREATE TABLE m (ts TIMESTAMP NOT NULL, v DOUBLE, s TEXT) WITH (time_column = 'ts')").await.unwrap();
        db.sql(
            "INSERT INTO m VALUES (TIMESTAMP '2024-01-01 00:00:00', 1.5, '<script>alert(1)</script>'), \
             (TIMESTAMP '2024-01-01 00:00:01.25', NULL, 'say \"hi\"'), (TIMESTAMP '2024-01-01 00:00:02', 3, NULL)",
        )
        .await
        .unwrap();
        let config = ServerConfig {
            auth: AuthMode::Password,
            users: vec![user("admin", Role::Admin), user("writer", Role::Writer), user("viewer", Role::Reader)],
            statement_timeout: std::time::Duration::from_secs(60),
            ..ServerConfig::default()
        };
        let srv = start(db.clone(), config).await;
        let http = srv.http;
        let json = |body: &str| -> Value { serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")) };

        // The rows, as the library gives them.
        let sql = "SELECT ts, v, s, v * 2 AS w FROM m ORDER BY ts";
        let (status, head, body) = sql_request(http, "viewer:viewer pw", serde_json::json!({ "sql": sql })).await;
        assert_eq!(status, 200, "{body}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        let answer = json(&body);
        let names: Vec<&str> =
            answer["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["ts", "v", "s", "w"]);
        assert_eq!(answer["columns"][0]["kind"], "time");
        assert_eq!(answer["columns"][1]["kind"], "number");
        let expected = rows(&db, sql).await;
        let got: Vec<Vec<String>> = answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| match v {
                        Value::Null => "NULL".to_string(),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        assert_eq!(got, expected);
        assert_eq!(answer["row_count"], 3);
        assert_eq!(answer["truncated"], false);

        // The SQL as text, options as parameters: CSV, and a bounded number of rows.
        let auth = basic("viewer:viewer pw");
        let text = [("Authorization", auth.as_str()), ("Content-Type", "text/plain")];
        let (status, head, body) =
            request_raw(http, "/api/v1/query?format=csv", &text, b"SELECT v, s FROM m ORDER BY ts").await;
        assert_eq!(status, 200, "{body}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/csv"), "{head}");
        assert_eq!(body, "v,s\n1.5,<script>alert(1)</script>\n,\"say \"\"hi\"\"\"\n3.0,\n");
        let (status, _, body) =
            sql_request(http, "viewer:viewer pw", serde_json::json!({ "sql": sql, "max_rows": 2 })).await;
        assert_eq!(status, 200, "{body}");
        let answer = json(&body);
        assert_eq!((answer["rows"].as_array().unwrap().len(), &answer["truncated"]), (2, &Value::Bool(true)));

        // Arrow IPC: the batches the library gives.
        let arrow = {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
            let sql = b"SELECT ts, v, s FROM m ORDER BY ts";
            let head = format!(
                "POST /api/v1/query?format=arrow HTTP/1.0\r\nAuthorization: {auth}\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\n\r\n",
                sql.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(sql).await.unwrap();
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.unwrap();
            let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            answer[at..].to_vec()
        };
        let reader = trafficdb::arrow::ipc::reader::StreamReader::try_new(&arrow[..], None).expect("an Arrow stream");
        let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
        let expected = db.sql("SELECT ts, v, s FROM m ORDER BY ts").await.unwrap();
        let concat = |b: &[trafficdb::arrow::array::RecordBatch]| {
            trafficdb::arrow::compute::concat_batches(&b[0].schema(), b).unwrap()
        };
        assert_eq!(concat(&batches).columns(), concat(&expected).columns());

        // Roles, on the plan that runs.
        for sql in [
            "INSERT INTO m VALUES (TIMESTAMP '2024-01-02 00:00:00', 9, 'x')",
            "EXPLAIN ANALYZE INSERT INTO m VALUES (TIMESTAMP '2024-01-02 00:00:00', 9, 'x')",
            "DELETE FROM m WHERE v IN (SELECT v FROM m)",
            "CREATE TABLE n (ts TIMESTAMP NOT NULL) WITH (time_column = 'ts')",
        ] {
            let (status, _, body) = sql_request(http, "viewer:viewer pw", serde_json::json!({ "sql": sql })).await;
            assert_eq!(status, 403, "{sql}: {body}");
            assert_eq!(json(&body)["sqlstate"], "42501", "{sql}");
        }
        assert_eq!(one(&rows(&db, "SELECT count(*) FROM m").await), "3");
        let insert = serde_json::json!({ "sql": "INSERT INTO m VALUES (TIMESTAMP '2024-01-02 00:00:00', 9, 'x')" });
        let (status, _, body) = sql_request(http, "writer:writer pw", insert).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["command"], "INSERT 0 1");
        let create = serde_json::json!({ "sql": "CREATE TABLE n (ts TIMESTAMP NOT NULL) WITH (time_column = 'ts')" });
        assert_eq!(sql_request(http, "writer:writer pw", create.clone()).await.0, 403);
        let (status, _, body) = sql_request(http, "admin:admin pw", create).await;
        assert_eq!(status, 200, "{body}");
        assert!(db.engine().table("n").is_some());
        assert_eq!(sql_request(http, "viewer:wrong", serde_json::json!({ "sql": "SELECT 1" })).await.0, 401);

        // PostgreSQL's error codes; what needs a session of its own is refused.
        for (sql, code) in [
            ("SELEC 1", "42601"),
            ("SELECT 1; SELECT 2", "42601"),
            ("SELECT * FROM nowhere", "42P01"),
            ("SELECT CAST('x' AS INT)", "22P02"),
            ("SELECT CAST(100000 AS SMALLINT)", "22003"),
            ("SELECT 1 / 0", "22012"),
            ("SET statement_timeout = 0", "0A000"),
            ("BEGIN", "0A000"),
            ("COPY m FROM STDIN", "0A000"),
        ] {
            let (status, _, body) = sql_request(http, "admin:admin pw", serde_json::json!({ "sql": sql })).await;
            assert_eq!((status, json(&body)["sqlstate"].as_str().unwrap_or("")), (400, code), "{sql}: {body}");
        }
        let (status, _, body) =
            sql_request(http, "viewer:viewer pw", serde_json::json!({ "sql": "SELECT 1", "limit": 1 })).await;
        assert_eq!(status, 400, "an unknown member: {body}");

        // Timeouts: within the server's; only an admin may ask for more.
        let long = "SELECT count(*) FROM generate_series(1, 100000000000)";
        let (status, _, body) =
            sql_request(http, "viewer:viewer pw", serde_json::json!({ "sql": long, "timeout_ms": 100 })).await;
        assert_eq!((status, json(&body)["sqlstate"].as_str()), (503, Some("57014")), "{body}");
        let (status, _, body) =
            sql_request(http, "viewer:viewer pw", serde_json::json!({ "sql": "SELECT 1", "timeout_ms": 120000 })).await;
        assert_eq!(status, 403, "{body}");

        // A client that leaves cancels its statement: before its first row, and while rows stream.
        let metrics = || async move {
            let auth = basic("admin:admin pw");
            let (_, _, text) = request(http, "GET", "/metrics", &[("Authorization", auth.as_str())], b"").await;
            sample(&text, "trafficdb_http_queries_cancelled_total", "").unwrap_or(-1.0)
        };
        let before = metrics().await;
        for (n, sql) in [long, "SELECT * FROM generate_series(1, 100000000000)"].into_iter().enumerate() {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
            let head = format!(
                "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\n\r\n{sql}",
                sql.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            if n == 1 {
                let mut some = [0u8; 4096];
                let got = s.read(&mut some).await.unwrap();
                assert!(String::from_utf8_lossy(&some[..got]).starts_with("HTTP/1.1 200"));
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            drop(s);
            // Waits for the server to see it (a liveness wait: the statements would run for hours).
            let mut seen = false;
            for _ in 0..600 {
                if metrics().await >= before + n as f64 + 1.0 {
                    seen = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert!(seen, "statement {n} was not cancelled when its client left");
        }
        srv.stop().await;
    });
}
