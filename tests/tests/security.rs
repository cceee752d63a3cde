//! Attacks on the server as a logged-in reader or writer would make them: every way to write, to
//! change the schema, to write server files, to train or deploy a model, or to lift a limit, in
//! both protocols, written every way the parsers accept. Each must be refused (42501, or 22023 for a
//! value out of bounds), leave nothing behind, reach the audit log, and leave the server answering.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use trafficdb_server::security::secret::Secret;
use trafficdb_server::{Server, ServerConfig};

use crate::common::runtime;
use crate::server::connect;

const TABLE: &str = "CREATE TABLE m (ts TIMESTAMP NOT NULL, v BIGINT) WITH (time_column = 'ts')";

/// Statements a reader must not run: each writes, changes the schema or the model registry, or
/// writes a server file, if it runs.
fn reader_writes(file: &str, hook: &str) -> Vec<String> {
    let train = "train_retry_model('evil', 'SELECT ts, v, v > 1 AS will_retry FROM m', 'eval_fraction=0')";
    let mut v: Vec<String> = [
        // EXPLAIN ANALYZE runs its statement, however ANALYZE is written.
        "EXPLAIN ANALYZE INSERT INTO m VALUES ('2024-01-02 00:00:00', 9)",
        "EXPLAIN (ANALYZE) INSERT INTO m VALUES ('2024-01-02 00:00:00', 9)",
        "explain (analyze true, verbose) insert into m values ('2024-01-02 00:00:00', 9)",
        "EXPLAIN (ANALYZE on, FORMAT JSON) DELETE FROM m",
        "EXPLAIN (ANALYZE 1) UPDATE m SET v = 0",
        "EXPLAIN ANALYZE VERBOSE DELETE FROM m WHERE v IN (SELECT v FROM m)",
        "EXPLAIN (ANALYZE true, VERBOSE) TRUNCATE m",
        "/* EXPLAIN */ EXPLAIN (ANALYZE) INSERT INTO m SELECT ts, v FROM m",
        // Writes, plain and hidden.
        "INSERT INTO m SELECT ts, v FROM m",
        "DELETE FROM m USING m AS other WHERE m.v = other.v",
        "UPDATE m SET v = v + 1 WHERE v IN (SELECT v FROM m)",
        "TRUNCATE m",
        "PREPARE p AS INSERT INTO m VALUES ('2024-01-02 00:00:00', $1)",
        // New tables: SELECT INTO (also in parentheses), CREATE TABLE AS, views, DDL.
        "SELECT * INTO stolen FROM m",
        "(SELECT * INTO stolen FROM m)",
        "CREATE TABLE stolen AS SELECT * FROM m",
        "CREATE VIEW stolen AS SELECT 1",
        "DROP TABLE m",
        "ALTER TABLE m ADD COLUMN w BIGINT",
        // The model registry, wherever the call sits.
        "SELECT * FROM deploy_model('m', 1)",
        "SELECT * FROM rollback_model('m')",
        "SELECT * FROM (SELECT * FROM drop_model('m')) d",
        "WITH r AS (SELECT * FROM rollback_model('m')) SELECT * FROM r",
        "SELECT 1 WHERE EXISTS (SELECT * FROM drop_model('m'))",
        "EXPLAIN ANALYZE SELECT * FROM rollback_model('m')",
        "DECLARE c CURSOR FOR SELECT * FROM rollback_model('m')",
        // Settings that lift the memory limit or choose where the server writes.
        "SET datafusion.runtime.memory_limit = '8G'",
        "SET \"datafusion.runtime.memory_limit\" = '8G'",
        "SET datafusion.\"runtime\".memory_limit = '8G'",
        "SET DataFusion.Runtime.Memory_Limit TO '8G'",
        "RESET datafusion.runtime.memory_limit",
        "RESET \"datafusion.runtime.memory_limit\"",
        "SET \"datafusion.runtime.temp_directory\" = '/tmp'",
        "SET datafusion.execution.target_partitions = 64",
        "SET datafusion.execution.batch_size = 100000",
        "SET ROLE boss",
        "SET SESSION AUTHORIZATION boss",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!(
        "EXPLAIN (ANALYZE) INSERT INTO alert_rules VALUES ('x', 'SELECT 1', '1 second', '{hook}', true, NULL)"
    ));
    v.push(format!("INSERT INTO alert_rules VALUES ('x', 'SELECT 1', '1 second', '{hook}', true, NULL)"));
    v.push(format!("SELECT * FROM m CROSS JOIN LATERAL {train} t"));
    v.push(format!("SELECT * FROM {train}"));
    v.push(format!("SELECT (SELECT version FROM {train})"));
    v.push(format!("COPY (SELECT * FROM {train}) TO STDOUT"));
    v.push(format!("COPY (SELECT 1) TO '{file}'"));
    v.push(format!("EXPLAIN (ANALYZE) COPY (SELECT 1) TO '{file}'"));
    v
}

/// The `[[users]]` of the attack tests, as the configuration file holds them.
fn users_toml() -> String {
    [("boss", "admin", "b"), ("loader", "writer", "w"), ("viewer", "reader", "r")]
        .iter()
        .map(|(name, role, pw)| {
            format!("[[users]]\nname = \"{name}\"\nrole = \"{role}\"\npassword = \"{}\"\n", Secret::scram(pw))
        })
        .collect()
}

/// Counts the connections made to a fresh loopback port: a webhook receiver that answers nothing.
async fn connection_counter() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, count)
}

#[test]
fn a_reader_cannot_write_by_any_path() {
    if std::env::var("TRAFFICDB_CAPPED_CHILD").is_ok() {
        return;
    }
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("audit.log");
    // The load-balancer schema: its alert rules are a table a write could make the server act on.
    let mut server = Capped::start(
        &format!(
            "auth = \"password\"\nquery_memory_limit = \"64MiB\"\nstatement_timeout = \"30s\"\n\
             [audit]\npath = \"{}\"\n{}",
            log.display(),
            users_toml()
        ),
        true,
    );
    let addr = server.addr;
    rt.block_on(async {
        let (hook, requests) = connection_counter().await;
        let admin = connect(addr, "boss", Some("b")).await.expect("admin");
        admin.batch_execute(TABLE).await.expect("table");
        admin
            .batch_execute("INSERT INTO m VALUES ('2024-01-01 00:00:00', 1), ('2024-01-01 00:00:01', 2)")
            .await
            .expect("rows");
        let writer = connect(addr, "loader", Some("w")).await.expect("writer");
        writer
            .batch_execute(
                "SELECT * FROM train_retry_model('m', 'SELECT ts, v, v > 1 AS will_retry FROM m', 'eval_fraction=0')",
            )
            .await
            .expect("a writer trains");
        let snapshot = || async {
            let mut out = Vec::new();
            for q in [
                "SELECT count(*) FROM m",
                "SELECT count(*) FROM m WHERE v = 9 OR v = 0",
                "SELECT count(*) FROM models",
                "SELECT count(*) FROM alert_rules",
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'stolen'",
            ] {
                let n: i64 = admin.query_one(q, &[]).await.expect(q).get(0);
                out.push(n);
            }
            out
        };
        let before = snapshot().await;
        let file = tmp.path().join("written-by-reader.csv");
        let reader = connect(addr, "viewer", Some("r")).await.expect("reader");
        let attacks = reader_writes(&file.display().to_string(), &hook);
        // During each attack, a new connection is answered within a second.
        let probe = || async {
            let began = std::time::Instant::now();
            let answered = tokio::time::timeout(Duration::from_secs(1), async {
                let c = connect(addr, "viewer", Some("r")).await.expect("a new connection");
                c.query_one("SELECT 1::INT", &[]).await.expect("SELECT 1").get::<_, i32>(0)
            })
            .await;
            assert_eq!(answered.ok(), Some(1), "SELECT 1 on a new connection within a second");
            began.elapsed()
        };
        let mut slowest = Duration::ZERO;
        let mut refused = 0;
        for sql in &attacks {
            let (e, took) = tokio::join!(reader.batch_execute(sql), probe());
            let e = e.expect_err(sql);
            assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {e:?}");
            slowest = slowest.max(took);
            refused += 1;
            // The extended protocol (Parse / Bind / Execute), for what it can carry.
            if !sql.starts_with("COPY") && !sql.starts_with("DECLARE") {
                let e = reader.query(sql.as_str(), &[]).await.expect_err(sql);
                assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql} (extended): {e:?}");
                refused += 1;
            }
        }
        eprintln!("{} attacks, each beside a new connection's SELECT 1: the slowest in {slowest:?}", attacks.len());
        // A query given as text to a function runs under the same rule.
        let e = reader
            .batch_execute("SELECT * FROM evaluate_model('m', 'SELECT * FROM rollback_model(''m'')')")
            .await
            .expect_err("a writing call inside a function's query");
        assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");

        // A writer may write, but not change the schema nor lift limits.
        for sql in [
            "SELECT * INTO stolen FROM m",
            "EXPLAIN ANALYZE CREATE TABLE stolen AS SELECT 1",
            "SET datafusion.runtime.memory_limit = '8G'",
        ] {
            let e = writer.batch_execute(sql).await.expect_err(sql);
            assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {e:?}");
            refused += 1;
        }
        assert_eq!(snapshot().await, before, "nothing the reader or writer tried changed anything");
        assert!(!file.exists(), "no file written");
        // No outbound request: the server evaluates due alert rules every second.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0, "the server sent no request");

        // Settings: a reader lowers its timeout, not past the server's; bounds hold for the admin too.
        reader.batch_execute("SET statement_timeout = '2s'").await.expect("lower the timeout");
        for sql in ["SET statement_timeout = 0", "SET statement_timeout = '1h'", "SET statement_timeout TO 31000"] {
            let e = reader.batch_execute(sql).await.expect_err(sql);
            assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {e:?}");
            refused += 1;
        }
        let e = reader.batch_execute("SET statement_timeout = 'soon'").await.expect_err("bad value");
        assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{e:?}");
        reader.batch_execute("RESET statement_timeout; RESET ALL").await.expect("reset");
        reader.batch_execute("SET datafusion.explain.format = 'indent'").await.expect("an open setting");
        for sql in
            ["SET datafusion.execution.batch_size = 1000000000", "SET datafusion.execution.target_partitions = 4096"]
        {
            let e = admin.batch_execute(sql).await.expect_err(sql);
            assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{sql}: {e:?}");
        }
        admin.batch_execute("SET datafusion.execution.batch_size = 4096").await.expect("within bounds");
        let e = admin.batch_execute("SET datafusion.execution.batch_size = 'many'").await.expect_err("not a number");
        assert!(e.code().is_some(), "{e:?}");

        // Still serving, to a new connection.
        let fresh = connect(addr, "viewer", Some("r")).await.expect("a new connection");
        let one: i32 = fresh.query_one("SELECT 1::INT", &[]).await.expect("SELECT 1").get(0);
        assert_eq!(one, 1);

        // Every refusal is in the audit log, with what it needed.
        let text = std::fs::read_to_string(&log).expect("audit log");
        let logged = text.lines().filter(|l| l.contains("\"event\":\"refused\"")).count();
        assert!(logged >= refused, "{logged} refusals logged, {refused} made:\n{text}");
        assert!(text.contains("\"needs\":\"writer\"") && text.contains("\"needs\":\"admin\""), "{text}");

        // The receiver would have seen a request: the same rule inserted by the admin reaches it.
        admin
            .batch_execute(&format!(
                "INSERT INTO alert_rules VALUES ('probe', 'SELECT 1 AS value', '1 second', '{hook}', true, NULL); \
                 CALL evaluate_alerts('probe')"
            ))
            .await
            .expect("an admin's rule");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while requests.load(std::sync::atomic::Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(requests.load(std::sync::atomic::Ordering::SeqCst) > 0, "the admin's webhook was called");
        drop((admin, writer, reader, fresh));
    });
    assert!(server.alive(), "the capped server died");
}

/// Reads what the server sends until it closes the connection (or 5 s pass).
async fn read_to_close(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[test]
fn nothing_large_or_slow_before_authentication() {
    use tokio::io::AsyncWriteExt;
    if std::env::var("TRAFFICDB_CAPPED_CHILD").is_ok() {
        return;
    }
    let mut server = Capped::start(
        &format!(
            "auth = \"password\"\nmax_connections = 2\nmax_pending_connections = 4\nauthentication_timeout = \"600ms\"\n{}",
            users_toml()
        ),
        false,
    );
    let addr = server.addr;
    let rt = runtime();
    rt.block_on(async {
        let startup = {
            let body = [&196_608_i32.to_be_bytes()[..], b"user\0boss\0database\0trafficdb\0\0"].concat();
            [&((body.len() + 4) as i32).to_be_bytes()[..], &body[..]].concat()
        };

        // A message announced as 1 GiB before logging in: refused from its header (FATAL 08P01).
        for tag in [b'Q', b'P', b'B', b'd', b'p'] {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(&startup).await.expect("startup");
            s.write_all(&[&[tag][..], &(1i32 << 30).to_be_bytes()[..], &[0u8; 1024][..]].concat())
                .await
                .expect("header");
            let answer = String::from_utf8_lossy(&read_to_close(&mut s).await).to_string();
            assert!(answer.contains("08P01"), "{}: {answer:?}", char::from(tag));
        }

        // Idle clients that never send a startup packet hold pending slots only, and only until the
        // authentication timeout: then a real client gets in.
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fifth = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(read_to_close(&mut fifth).await.is_empty(), "over the pending cap: closed at once");
        for s in &mut idle {
            assert!(read_to_close(s).await.is_empty(), "closed by the authentication timeout");
        }
        let admin = connect(addr, "boss", Some("b")).await.expect("a real client after the idle ones");
        let one: i32 = admin.query_one("SELECT 1::INT", &[]).await.expect("SELECT 1").get(0);
        assert_eq!(one, 1);

        drop(admin);
    });
    assert!(server.alive(), "the capped server died");
}

#[test]
fn a_copy_is_bounded_by_the_line_limit_not_the_session_memory() {
    use futures::SinkExt;
    if std::env::var("TRAFFICDB_CAPPED_CHILD").is_ok() {
        return;
    }
    let mut server = Capped::start("query_memory_limit = \"4MiB\"", false);
    let addr = server.addr;
    let rt = runtime();
    rt.block_on(async {
        let client = connect(addr, "w", None).await.expect("connect");
        client
            .batch_execute("CREATE TABLE t (ts TIMESTAMP NOT NULL, s TEXT) WITH (time_column = 'ts')")
            .await
            .expect("table");

        // Far more rows than the session's memory limit holds (22 MB against 4 MiB): a COPY is a bulk
        // load, which writes its rows out whenever what it holds passes the limit; all of them land.
        let sink = client.copy_in("COPY t FROM STDIN").await.expect("copy in");
        futures::pin_mut!(sink);
        let row = format!("2024-01-01 00:00:00\t{}\n", "x".repeat(200));
        let chunk = bytes::Bytes::from(row.repeat(1000));
        for _ in 0..100 {
            sink.send(chunk.clone()).await.expect("send");
        }
        assert_eq!(sink.finish().await.expect("a COPY larger than the memory limit"), 100_000);
        let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.expect("count").get(0);
        assert_eq!(n, 100_000);

        // A line longer than 64 MiB: refused (54000) once it passes the limit, not held further.
        let sink = client.copy_in("COPY t FROM STDIN").await.expect("copy in");
        futures::pin_mut!(sink);
        let mut sent = Ok(());
        let piece = bytes::Bytes::from(vec![b'x'; 1 << 20]);
        for _ in 0..70 {
            sent = sink.send(piece.clone()).await;
            if sent.is_err() {
                break;
            }
        }
        let e = match sent {
            Err(e) => e,
            Ok(()) => sink.finish().await.expect_err("a line over the limit"),
        };
        assert_eq!(e.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED), "{e:?}");

        // A record dripped a byte at a time arrives whole.
        let sink = client.copy_in("COPY t FROM STDIN").await.expect("copy in");
        futures::pin_mut!(sink);
        for b in b"2024-01-01 00:00:01\tdripped\n" {
            sink.send(bytes::Bytes::copy_from_slice(&[*b])).await.expect("a byte");
        }
        assert_eq!(sink.finish().await.expect("copy"), 1);
        let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.expect("count").get(0);
        assert_eq!(n, 100_001, "the large COPY and the dripped row, nothing of the refused line");

        drop(client);
    });
    assert!(server.alive(), "the capped server died");
}

#[test]
fn http_checks_credentials_before_the_body_and_holds_few_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if std::env::var("TRAFFICDB_CAPPED_CHILD").is_ok() {
        return;
    }
    let mut server = Capped::start(
        &format!("auth = \"password\"\nhttp = \"127.0.0.1:0\"\nmax_http_connections = 2\n{}", users_toml()),
        false,
    );
    let http = server.http.expect("HTTP");
    let rt = runtime();
    rt.block_on(async {
        // A write announcing 16 MiB without credentials: 401 at once, the body never read.
        let mut s = tokio::net::TcpStream::connect(http).await.expect("connect");
        s.write_all(b"POST /api/v2/write HTTP/1.1\r\nHost: x\r\nContent-Length: 16000000\r\n\r\nm f=1 1\n")
            .await
            .expect("send");
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
            .await
            .expect("answered before the body arrived")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        drop(s);

        // Two connections held: a third waits until one closes.
        let held: Vec<_> = futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(http))).await;
        let mut held: Vec<_> = held.into_iter().map(|s| s.expect("connect")).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = tokio::net::TcpStream::connect(http).await.expect("connect (backlog)");
        third.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("send");
        let mut buf = vec![0u8; 256];
        let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
        assert!(early.is_err(), "not served while two connections are held");
        held.pop();
        let n =
            tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.expect("served").expect("read");
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );

        drop((held, third));
    });
    assert!(server.alive(), "the capped server died");
}

#[test]
fn heavy_functions_run_at_execution_under_the_statement_timeout() {
    if std::env::var("TRAFFICDB_CAPPED_CHILD").is_ok() {
        return;
    }
    let mut server = Capped::start("", false);
    let addr = server.addr;
    let rt = runtime();
    rt.block_on(async {
        let a = connect(addr, "a", None).await.expect("connect");
        let series = "SELECT to_timestamp(x) AS ts, (x % 97)::DOUBLE AS v FROM generate_series(1, 300000) AS t(x)";
        let heavy = format!(
            "SELECT count(*) FROM detect_anomalies('{series}', 'ts', 'v', '', 'method=mad, window=100000, min_history=10')"
        );
        // Planning and describing do no work.
        a.prepare(&heavy).await.expect("prepared at once");
        a.batch_execute(&format!("EXPLAIN {heavy}")).await.expect("explained at once");
        // Running it is bounded by the statement timeout, and other sessions are served meanwhile.
        a.batch_execute("SET statement_timeout = '500ms'").await.expect("timeout");
        let b = connect(addr, "b", None).await.expect("connect");
        let (slow, quick) = tokio::join!(a.batch_execute(&heavy), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            b.query_one("SELECT 1::INT", &[]).await
        });
        let e = slow.expect_err("over the timeout");
        assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e:?}");
        assert_eq!(quick.expect("another session answers").get::<_, i32>(0), 1);
        // Options are bounded.
        let e = a
            .batch_execute(&format!("SELECT * FROM detect_anomalies('{series}', 'ts', 'v', '', 'window=100000000')"))
            .await
            .expect_err("a window too large");
        assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{e:?}");

        drop((a, b));
    });
    assert!(server.alive(), "the capped server died");
}

/// A server in a child process (this test binary again, running [`capped_server_child`]) whose
/// address space is capped at 3 GiB, as in a memory-limited container: an allocation the memory pool
/// does not see fails there instead of swapping the machine, and kills the server if it is not
/// handled. Killed when dropped.
struct Capped {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    http: Option<std::net::SocketAddr>,
    /// The data directory's parent, removed with the server.
    _dir: tempfile::TempDir,
}

impl Capped {
    /// Serves a new data directory (with the load-balancer schema when `schema`) with the server
    /// configuration `toml`, whose first lines are the `[server]` section (its `listen` and `http`
    /// addresses are replaced by free loopback ports).
    fn start(toml: &str, schema: bool) -> Capped {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v {} && exec \"$0\" --exact security::capped_server_child --nocapture --test-threads 1",
                3u64 << 20
            ))
            .arg(&exe)
            .env("TRAFFICDB_CAPPED_CHILD", dir.path().join("data"))
            .env("TRAFFICDB_CAPPED_CONFIG", toml)
            .env("TRAFFICDB_CAPPED_SCHEMA", if schema { "1" } else { "" })
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the capped server");
        let stdout = child.stdout.take().expect("stdout");
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // The line may start with the test harness's own "test ... " text.
            .find_map(|l| l.split_once("serving ").map(|(_, rest)| rest.to_string()))
            .expect("the capped server started");
        let mut ports = line.split_whitespace().map(|p| p.parse::<u16>().expect("a port"));
        let addr = ([127, 0, 0, 1], ports.next().expect("PostgreSQL port")).into();
        let http = ports.next().filter(|p| *p != 0).map(|p| ([127, 0, 0, 1], p).into());
        Capped { child, addr, http, _dir: dir }
    }

    /// Whether the child still runs.
    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("child state").is_none()
    }
}

impl Drop for Capped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server of [`Capped`]: prints its ports, then serves until killed or until its standard
/// input closes (the parent is gone). Runs only as that child.
#[test]
fn capped_server_child() {
    let Ok(dir) = std::env::var("TRAFFICDB_CAPPED_CHILD") else { return };
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let toml = std::env::var("TRAFFICDB_CAPPED_CONFIG").unwrap_or_default();
    let schema = std::env::var("TRAFFICDB_CAPPED_SCHEMA").is_ok_and(|s| !s.is_empty());
    // The server binary's runtime: stacks sized for the nesting limit.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let path = std::path::Path::new(&dir);
        let db = if schema {
            trafficdb_schema::open(path, false).await.expect("open")
        } else {
            trafficdb::Database::open(path).await.expect("open")
        };
        let mut config = ServerConfig::parse(&format!("[server]\n{toml}")).expect("configuration");
        config.listen = "127.0.0.1:0".into();
        if config.http.is_some() {
            config.http = Some("127.0.0.1:0".into());
        }
        let server = Server::bind(Arc::new(db), config).await.expect("bind");
        let http = server.http_addr().map_or(0, |a| a.port());
        println!("serving {} {http}", server.local_addr().expect("addr").port());
        server.run_until(std::future::pending()).await.expect("serve");
    });
}

/// Allocations the memory pool does not see, each of which would take gigabytes, against a server in
/// a process capped at 3 GiB of address space (as in a memory-limited container): each statement is
/// refused or fails cleanly, and the process lives and answers.
#[test]
fn a_memory_capped_server_survives_allocation_attacks() {
    if std::env::var("TRAFFICDB_CAPPED_CHILD").is_ok() {
        return;
    }
    let mut server = Capped::start("query_memory_limit = \"64MiB\"", false);
    let addr = server.addr;
    let rt = runtime();
    rt.block_on(async {
        let c = connect(addr, "admin", None).await.expect("connect");
        for (sql, code) in [
            ("SELECT length(repeat('x', 5000000000))", "54000"),
            ("SELECT length(lpad('x', 2000000000))", "54000"),
            ("SET datafusion.execution.batch_size = 1000000000", "22023"),
            ("SET datafusion.execution.target_partitions = 4096", "22023"),
            ("SELECT cardinality(array_repeat(1, 1000000000))", "54000"),
        ] {
            let e = c.batch_execute(sql).await.expect_err(sql);
            assert_eq!(e.code().map(|c| c.code()), Some(code), "{sql}: {e:?}");
        }
        let fresh = connect(addr, "admin", None).await.expect("the capped server still accepts");
        let one: i32 = fresh.query_one("SELECT 1::INT", &[]).await.expect("SELECT 1").get(0);
        assert_eq!(one, 1);
    });
    assert!(server.alive(), "the capped server died");
}
