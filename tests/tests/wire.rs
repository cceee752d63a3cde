//! Robustness of the wire server: malformed, truncated and oversized protocol messages and garbage
//! bytes, on many connections at once. Each connection must end with an error or a closed connection
//! (never a hang once the client has closed its side), no connection task may panic, and the server
//! keeps serving: afterwards a normal client reads the table back unchanged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trafficdb::Database;
use trafficdb_server::{Server, ServerConfig};

use crate::common::runtime;

/// A frontend message: tag, length (counting itself), body.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A message whose length field says `len`, whatever follows.
fn msg_len(tag: u8, len: i32, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A StartupMessage for protocol 3.0.
fn startup() -> Vec<u8> {
    let mut body = 196_608_i32.to_be_bytes().to_vec();
    for kv in ["user", "fuzz", "database", "trafficdb"] {
        body.extend(cstr(kv));
    }
    body.push(0);
    let mut m = (body.len() as i32 + 4).to_be_bytes().to_vec();
    m.extend(body);
    m
}

fn parse(name: &str, sql: &str, types: &[i32]) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend((types.len() as i16).to_be_bytes());
    for t in types {
        b.extend(t.to_be_bytes());
    }
    msg(b'P', &b)
}

/// Bind with the given parameter format codes, values (None = NULL) and result formats.
fn bind(portal: &str, stmt: &str, formats: &[i16], values: &[Option<&[u8]>], results: &[i16]) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(stmt));
    b.extend((formats.len() as i16).to_be_bytes());
    for f in formats {
        b.extend(f.to_be_bytes());
    }
    b.extend((values.len() as i16).to_be_bytes());
    for v in values {
        match v {
            Some(v) => {
                b.extend((v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend((-1_i32).to_be_bytes()),
        }
    }
    b.extend((results.len() as i16).to_be_bytes());
    for f in results {
        b.extend(f.to_be_bytes());
    }
    msg(b'B', &b)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(max_rows.to_be_bytes());
    msg(b'E', &b)
}

fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstr(sql))
}

/// The hand-written cases: (name, bytes sent, whether the server must answer with an ErrorResponse
/// before closing). Cases where a server cannot know the input is bad (a message cut short) only
/// need the connection to end.
fn cases() -> Vec<(&'static str, Vec<u8>, bool)> {
    let s = startup;
    let cat = |parts: &[Vec<u8>]| parts.concat();
    vec![
        ("garbage instead of a startup", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false),
        ("startup length below the minimum", vec![0, 0, 0, 3, 0, 3, 0, 0], false),
        ("startup length of 2 GiB", cat(&[vec![0x7f, 0xff, 0xff, 0xff], 196_608_i32.to_be_bytes().to_vec()]), false),
        ("negative startup length", vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0], false),
        ("unknown protocol version", cat(&[vec![0, 0, 0, 8], 1234_i32.to_be_bytes().to_vec()]), false),
        ("startup parameters without terminators", cat(&[vec![0, 0, 0, 16, 0, 3, 0, 0], b"userfuzz".to_vec()]), false),
        ("startup cut short", s()[..12].to_vec(), false),
        (
            "SSLRequest then garbage",
            cat(&[vec![0, 0, 0, 8, 4, 210, 22, 47], vec![0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5]]),
            false,
        ),
        (
            "cancel request for no connection",
            cat(&[vec![0, 0, 0, 16, 4, 210, 22, 46], vec![0, 0, 0, 1, 0, 0, 0, 2]]),
            false,
        ),
        ("unknown message type", cat(&[s(), msg(b'!', b"xyz")]), true),
        ("message length below 4", cat(&[s(), msg_len(b'Q', 2, b"SELECT 1\0")]), true),
        ("negative message length", cat(&[s(), msg_len(b'Q', -7, b"SELECT 1\0")]), true),
        ("query of 1.9 GiB announced", cat(&[s(), msg_len(b'Q', 0x7fff_fff0, b"SELECT ")]), true),
        ("query cut short", cat(&[s(), msg_len(b'Q', 100, b"SELECT 1")]), false),
        ("query without its terminator", cat(&[s(), msg(b'Q', b"SELECT 1"), query("SELECT 2")]), false),
        ("query of invalid UTF-8", cat(&[s(), msg(b'Q', b"SELECT '\xff\xfe\xc3'\0")]), false),
        ("query with a NUL inside", cat(&[s(), msg(b'Q', b"SELECT 1\0; DROP TABLE t\0")]), false),
        ("empty query", cat(&[s(), query("")]), false),
        ("syntax error", cat(&[s(), query("SELEC 1 FROM")]), true),
        ("a thousand statements", cat(&[s(), query(&"SELECT 1;".repeat(1000))]), false),
        (
            "deeply nested expression",
            cat(&[s(), query(&format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000)))]),
            true,
        ),
        (
            "parse announcing 65535 parameter types",
            cat(&[s(), msg(b'P', &[cstr("a"), cstr("SELECT $1"), vec![0xff, 0xff]].concat()), sync()]),
            true,
        ),
        ("parse with an unknown type oid", cat(&[s(), parse("", "SELECT $1", &[999_999]), sync()]), false),
        ("bind to an unknown statement", cat(&[s(), bind("", "nope", &[], &[], &[]), execute("", 0), sync()]), true),
        ("execute of an unknown portal", cat(&[s(), execute("nope", 0), sync()]), true),
        ("describe of an unknown kind", cat(&[s(), msg(b'D', &cstr("Xnope")), sync()]), true),
        ("close of an unknown kind", cat(&[s(), msg(b'C', &cstr("Qnope")), sync()]), false),
        (
            "bind with too few parameters",
            cat(&[
                s(),
                parse("p", "SELECT id FROM t WHERE id = $1", &[20]),
                bind("", "p", &[], &[], &[]),
                execute("", 0),
                sync(),
            ]),
            true,
        ),
        (
            "bind with a text parameter that is not a number",
            cat(&[
                s(),
                parse("p", "SELECT id FROM t WHERE id = $1", &[20]),
                bind("", "p", &[0], &[Some(b"abc")], &[]),
                execute("", 0),
                sync(),
            ]),
            true,
        ),
        (
            "bind with a binary int8 of 3 bytes",
            cat(&[
                s(),
                parse("p", "SELECT id FROM t WHERE id = $1", &[20]),
                bind("", "p", &[1], &[Some(b"abc")], &[]),
                execute("", 0),
                sync(),
            ]),
            true,
        ),
        (
            "bind with format code 7",
            cat(&[
                s(),
                parse("p", "SELECT id FROM t WHERE id = $1", &[20]),
                bind("", "p", &[7], &[Some(b"1")], &[7]),
                execute("", 0),
                sync(),
            ]),
            false,
        ),
        (
            "bind with a parameter length past the message",
            cat(&[
                s(),
                parse("p", "SELECT $1::BIGINT", &[20]),
                msg(
                    b'B',
                    &[cstr(""), cstr("p"), vec![0, 0, 0, 1], 1_000_000_i32.to_be_bytes().to_vec(), vec![1, 2]].concat(),
                ),
                sync(),
            ]),
            true,
        ),
        (
            "bind with a negative parameter length other than -1",
            cat(&[
                s(),
                parse("p", "SELECT $1::BIGINT", &[20]),
                msg(
                    b'B',
                    &[cstr(""), cstr("p"), vec![0, 0, 0, 1], (-5_i32).to_be_bytes().to_vec(), vec![0, 0]].concat(),
                ),
                execute("", 0),
                sync(),
            ]),
            false,
        ),
        (
            "execute with a negative row limit",
            cat(&[s(), parse("", "SELECT id FROM t", &[]), bind("", "", &[], &[], &[]), execute("", -3), sync()]),
            false,
        ),
        (
            "copy data outside COPY",
            cat(&[s(), msg(b'd', b"1\t2\n"), msg(b'c', &[]), msg(b'f', &cstr("why")), query("SELECT 1")]),
            false,
        ),
        (
            "COPY with garbage rows",
            cat(&[s(), query("COPY t FROM STDIN"), msg(b'd', b"\xff\xfe\tnot a number\n\\\\\\\n"), msg(b'c', &[])]),
            true,
        ),
        ("COPY cut short", cat(&[s(), query("COPY t FROM STDIN"), msg(b'd', b"2024-01-01 00:00:00\t9")]), false),
        ("function call message", cat(&[s(), msg(b'F', &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0])]), true),
        ("password message without authentication", cat(&[s(), msg(b'p', &cstr("secret"))]), true),
        ("bytes after Terminate", cat(&[s(), msg(b'X', &[]), b"\x00\x01garbage".to_vec()]), false),
    ]
}

/// Random input: pure garbage, or a valid startup followed by messages with random tags, lengths
/// (sometimes lying) and bodies.
fn random_case(seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if rng.random_bool(0.2) {
        let mut v = vec![0u8; rng.random_range(1..4096)];
        rng.fill_bytes(&mut v);
        return v;
    }
    let mut out = startup();
    const TAGS: &[u8] = b"QPBDESCHdcfFpXx!";
    for _ in 0..rng.random_range(1..12) {
        let tag = TAGS[rng.random_range(0..TAGS.len())];
        let mut body = vec![0u8; rng.random_range(0..64)];
        rng.fill_bytes(&mut body);
        if rng.random_bool(0.5) {
            // Mostly printable, NUL-separated text, closer to what the decoders look for.
            for b in body.iter_mut() {
                *b = if *b < 40 { 0 } else { b' ' + *b % 90 };
            }
        }
        let len = match rng.random_range(0..10) {
            0 => rng.random::<i32>(),
            1 => body.len() as i32 + 4 + rng.random_range(-8..8),
            _ => body.len() as i32 + 4,
        };
        out.extend(msg_len(tag, len, &body));
    }
    out
}

/// Sends `input`, closes the sending side and reads until the server closes. Returns whether an
/// ErrorResponse came back; panics if the server neither answers nor closes within the timeout.
async fn send(addr: std::net::SocketAddr, name: &str, input: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may close first (and refuse the rest): write errors are an answer too.
    let _ = stream.write_all(input).await;
    let _ = stream.shutdown().await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{name}: the server neither answered nor closed the connection");
    error_response_in(&received)
}

/// Whether the backend messages in `bytes` include an ErrorResponse (`E`). The first bytes may be
/// a one-byte SSL answer (`N`), which is skipped.
fn error_response_in(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    if rest.first() == Some(&b'N') && rest.get(1).is_some_and(|b| b"ERSZ".contains(b)) {
        rest = &rest[1..];
    }
    while rest.len() >= 5 {
        if rest[0] == b'E' {
            return true;
        }
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let Ok(len) = usize::try_from(len) else { return false };
        if len < 4 || rest.len() < 1 + len {
            return false;
        }
        rest = &rest[1 + len..];
    }
    false
}

#[test]
fn malformed_input_on_many_connections() {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let db = Arc::new(Database::open(tmp.path()).await.expect("open"));
        db.sql("CREATE TABLE t (ts TIMESTAMP NOT NULL, id BIGINT NOT NULL) WITH (time_column = 'ts')")
            .await
            .expect("create");
        db.sql("INSERT INTO t VALUES ('2024-01-01 00:00:00', 1), ('2024-01-01 00:00:01', 2)").await.expect("insert");
        let config = ServerConfig { listen: "127.0.0.1:0".into(), max_connections: 1000, ..Default::default() };
        let server = Server::bind(db.clone(), config).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let stats = server.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));

        // Every hand-written case three times and 300 random inputs, 64 connections at a time.
        let seed: u64 = std::env::var("WIRE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_241_125);
        let mut inputs: Vec<(String, Vec<u8>, bool)> = Vec::new();
        for round in 0..3 {
            for (name, bytes, must_error) in cases() {
                inputs.push((format!("{name} (round {round})"), bytes, must_error));
            }
        }
        for i in 0..300 {
            inputs.push((format!("random input, seed {seed} + {i}"), random_case(seed + i), false));
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        for (name, bytes, must_error) in inputs {
            let permit = limit.clone().acquire_owned().await.expect("semaphore");
            tasks.spawn(async move {
                let errored = send(addr, &name, &bytes).await;
                drop(permit);
                assert!(errored || !must_error, "{name}: expected an ErrorResponse before the connection closed");
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                std::panic::resume_unwind(e.into_panic());
            }
        }

        assert_eq!(stats.panicked.load(Ordering::Relaxed), 0, "a connection task panicked (see the log above)");
        // Still serving, nothing written by the bad input.
        let (client, conn) = tokio_postgres::connect(
            &format!("host={} port={} user=after dbname=trafficdb", addr.ip(), addr.port()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect after the malformed input");
        let conn_task = tokio::spawn(conn);
        let rows = client.query("SELECT id FROM t ORDER BY id", &[]).await.expect("query after");
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(ids, vec![1, 2]);
        drop(client);
        let _ = conn_task.await;
        // Every connection has ended (the last one's count may take a moment to come down).
        for _ in 0..100 {
            if stats.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stats.active.load(Ordering::SeqCst), 0, "connections left open");
        let _ = stop.send(());
        serving.await.expect("join").expect("clean shutdown");
    });
}

/// Statements nested ever deeper, each kind up to 100,000 levels, in both protocols: each answers or
/// fails with an error (54001 beyond the limit), and the server keeps serving; a 100,000-value IN
/// list is not deep and answers.
#[test]
fn deep_statements_do_not_take_the_server_down() {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let db = Arc::new(Database::open(tmp.path()).await.expect("open"));
        db.sql("CREATE TABLE t (x BIGINT)").await.expect("create");
        db.sql("INSERT INTO t VALUES (1), (2)").await.expect("insert");
        let config = ServerConfig { listen: "127.0.0.1:0".into(), ..Default::default() };
        let server = Server::bind(db.clone(), config).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        let connect = || async {
            let (client, conn) = tokio_postgres::connect(
                &format!("host={} port={} user=deep dbname=trafficdb", addr.ip(), addr.port()),
                tokio_postgres::NoTls,
            )
            .await
            .expect("connect");
            tokio::spawn(conn);
            client
        };
        type Make = fn(usize) -> String;
        let kinds: Vec<(&str, Make)> = vec![
            ("arithmetic", |n| format!("SELECT 1{}", "+1".repeat(n))),
            ("OR chain", |n| format!("SELECT count(*) FROM t WHERE x = 0{}", " OR x = 1".repeat(n))),
            ("UNION ALL", |n| format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(n))),
            ("casts", |n| format!("SELECT 1{}", "::bigint".repeat(n))),
            ("FROM list", |n| format!("SELECT count(*) FROM t{}", ", t".repeat(n))),
            ("joins", |n| format!("SELECT count(*) FROM t{}", " JOIN t ON true".repeat(n))),
            ("parentheses", |n| format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n))),
            ("subqueries", |n| format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n))),
        ];
        let client = connect().await;
        for (kind, sql) in &kinds {
            for n in [10, 300, 3_000, 100_000] {
                let text = sql(n);
                // The FROM list and joins multiply rows: a few levels of them are plenty.
                let runs = !(matches!(*kind, "FROM list" | "joins") && n == 300);
                for extended in [false, true] {
                    if !runs {
                        continue;
                    }
                    let r = if extended {
                        client.query(text.as_str(), &[]).await.map(|_| ())
                    } else {
                        client.simple_query(&text).await.map(|_| ())
                    };
                    if let Err(e) = &r {
                        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                        assert!(!code.is_empty(), "{kind} x {n} (extended: {extended}): not an SQL error: {e}");
                        if n == 100_000 && !matches!(*kind, "parentheses" | "subqueries") {
                            assert_eq!(code, "54001", "{kind} x {n} (extended: {extended}): {e}");
                        }
                    } else {
                        assert!(n < 3_000, "{kind} x {n} (extended: {extended}) ran");
                    }
                    let one: i64 = connect().await.query_one("SELECT 1::bigint", &[]).await.expect("alive").get(0);
                    assert_eq!(one, 1, "after {kind} x {n}");
                }
            }
        }
        let list = (0..100_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM t WHERE x IN ({list})"), &[])
            .await
            .expect("a long IN list is not deep")
            .get(0);
        assert_eq!(n, 2);
        // A cursor fetched with a huge count reads what it has (pgwire would set aside room for the count).
        for count in ["9223372036854775807", "100000000", "99999999999999999999"] {
            let msgs = client
                .simple_query(&format!(
                    "BEGIN; DECLARE c CURSOR FOR SELECT x FROM t ORDER BY x; FETCH {count} FROM c; CLOSE c; COMMIT"
                ))
                .await
                .expect(count);
            let rows = msgs.iter().filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))).count();
            assert_eq!(rows, 2, "FETCH {count}");
        }
        let _ = stop.send(());
        serving.await.expect("join").expect("clean shutdown");
    });
}

/// A random expression over the columns of `f` (x BIGINT, y DOUBLE, s TEXT, b BOOLEAN, ts TIMESTAMP),
/// `depth` levels deep at most: operators, functions, casts, CASE, IN lists and subqueries of every
/// kind, with literals that reach edge values (NULL, 0, extremes, empty and long strings).
fn random_expr(rng: &mut ChaCha8Rng, depth: usize) -> String {
    const LEAVES: &[&str] = &[
        "x",
        "y",
        "s",
        "b",
        "ts",
        "NULL",
        "0",
        "1",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "1e308",
        "0.5",
        "'nan'::double",
        "''",
        "'abc'",
        "'2024-01-01 00:00:00'",
        "true",
        "false",
        "$$quoted$$",
        "INTERVAL '1 hour'",
        "now()",
        "repeat('x', 1000)",
    ];
    if depth == 0 || rng.random_bool(0.25) {
        return LEAVES[rng.random_range(0..LEAVES.len())].to_string();
    }
    let mut e = || random_expr(rng, depth - 1);
    let (a, b, c) = (e(), e(), e());
    let choice = rng.random_range(0..22);
    match choice {
        0 => format!("({a} + {b})"),
        1 => format!("({a} - {b})"),
        2 => format!("({a} * {b})"),
        3 => format!("({a} / {b})"),
        4 => format!("({a} % {b})"),
        5 => format!("({a} || {b})"),
        6 => format!("({a} = {b})"),
        7 => format!("({a} < {b})"),
        8 => format!("({a} AND {b})"),
        9 => format!("({a} OR NOT {b})"),
        10 => format!("CASE WHEN {a} THEN {b} ELSE {c} END"),
        11 => format!("coalesce({a}, {b}, {c})"),
        12 => format!(
            "CAST({a} AS {})",
            ["BIGINT", "DOUBLE", "TEXT", "BOOLEAN", "TIMESTAMP", "INT", "SMALLINT"][rng.random_range(0..7)]
        ),
        13 => format!("{a}::text"),
        14 => format!("({a} IN ({b}, {c}, NULL))"),
        15 => format!("({a} NOT IN (SELECT x FROM f WHERE {b}))"),
        16 => format!("(SELECT max({a}) FROM f)"),
        17 => format!("EXISTS (SELECT 1 FROM f AS g WHERE {a})"),
        18 => format!("abs({a})"),
        19 => format!("length({a})"),
        20 => format!("substr({a}, {b}, {c})"),
        _ => format!("lpad({a}, {b})"),
    }
}

/// The SQL types of the typed generator: each expression it builds has one, so most statements
/// pass type checking and reach execution (where overflow, division by zero, NULLs and edge values
/// are met), unlike [`random_expr`], whose trees mostly fail at planning.
#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Int,
    Float,
    Text,
    Bool,
    Ts,
}

const TYPES: [Ty; 5] = [Ty::Int, Ty::Float, Ty::Text, Ty::Bool, Ty::Ts];

/// A random expression of type `ty` over table `f`, `depth` levels deep at most.
fn typed_expr(rng: &mut ChaCha8Rng, ty: Ty, depth: usize) -> String {
    if depth == 0 || rng.random_bool(0.2) {
        let leaves: &[&str] = match ty {
            Ty::Int => &["x", "NULL::BIGINT", "0", "1", "-1", "9223372036854775807", "-9223372036854775808", "42"],
            Ty::Float => &["y", "NULL::DOUBLE", "0.5", "-0.0", "1e308", "'nan'::double", "'inf'::double"],
            Ty::Text => &["s", "NULL::TEXT", "''", "'abc'", "$$q'uote$$", "'été'", "repeat('x', 300)"],
            Ty::Bool => &["b", "NULL::BOOLEAN", "true", "false"],
            Ty::Ts => &["ts", "NULL::TIMESTAMP", "TIMESTAMP '2024-01-01 00:00:00'", "TIMESTAMP '1970-01-01 00:00:00'"],
        };
        return leaves[rng.random_range(0..leaves.len())].to_string();
    }
    let d = depth - 1;
    // The choices are drawn before the closure that builds the children borrows the generator.
    let k: usize = rng.random_range(0..1 << 20);
    let t = TYPES[rng.random_range(0..5)];
    let mut of = |t: Ty| typed_expr(rng, t, d);
    match ty {
        Ty::Int => match k % 12 {
            0 => format!("({} + {})", of(Ty::Int), of(Ty::Int)),
            1 => format!("({} - {})", of(Ty::Int), of(Ty::Int)),
            2 => format!("({} * {})", of(Ty::Int), of(Ty::Int)),
            3 => format!("({} / {})", of(Ty::Int), of(Ty::Int)),
            4 => format!("({} % {})", of(Ty::Int), of(Ty::Int)),
            5 => format!("abs({})", of(Ty::Int)),
            6 => format!("length({})", of(Ty::Text)),
            7 => format!("CAST({} AS BIGINT)", of(Ty::Float)),
            8 => format!("coalesce({}, {})", of(Ty::Int), of(Ty::Int)),
            9 => format!("CASE WHEN {} THEN {} ELSE {} END", of(Ty::Bool), of(Ty::Int), of(Ty::Int)),
            10 => format!("(SELECT max(x) FROM f WHERE {})", of(Ty::Bool)),
            _ => format!("CAST(extract(hour FROM {}) AS BIGINT)", of(Ty::Ts)),
        },
        Ty::Float => match k % 8 {
            0 => format!("({} + {})", of(Ty::Float), of(Ty::Float)),
            1 => format!("({} * {})", of(Ty::Float), of(Ty::Int)),
            2 => format!("({} / {})", of(Ty::Float), of(Ty::Float)),
            3 => format!("sqrt(abs({}))", of(Ty::Float)),
            4 => format!("ln({})", of(Ty::Float)),
            5 => format!("round({}, 2)", of(Ty::Float)),
            6 => format!("CAST({} AS DOUBLE)", of(Ty::Int)),
            _ => format!("(SELECT avg(y) FROM f AS g WHERE {})", of(Ty::Bool)),
        },
        Ty::Text => match k % 9 {
            0 => format!("({} || {})", of(Ty::Text), of(Ty::Text)),
            1 => format!("upper({})", of(Ty::Text)),
            2 => format!("substr({}, {}, {})", of(Ty::Text), of(Ty::Int), of(Ty::Int)),
            3 => format!("lpad({}, ({} % 100)::int)", of(Ty::Text), of(Ty::Int)),
            4 => format!("replace({}, {}, {})", of(Ty::Text), of(Ty::Text), of(Ty::Text)),
            5 => format!("CAST({} AS TEXT)", of(t)),
            6 => format!("split_part({}, 'b', 1)", of(Ty::Text)),
            7 => format!("coalesce({}, {})", of(Ty::Text), of(Ty::Text)),
            _ => format!("CASE WHEN {} THEN {} END", of(Ty::Bool), of(Ty::Text)),
        },
        Ty::Bool => match k % 11 {
            0 => format!("({} AND {})", of(Ty::Bool), of(Ty::Bool)),
            1 => format!("({} OR NOT {})", of(Ty::Bool), of(Ty::Bool)),
            2 => format!("({} = {})", of(t), of(t)),
            3 => format!("({} < {})", of(t), of(t)),
            4 => format!("({} IS DISTINCT FROM {})", of(t), of(t)),
            5 => format!("({} IS NULL)", of(t)),
            6 => format!("({} IN ({}, {}, NULL))", of(t), of(t), of(t)),
            7 => format!("({} NOT IN (SELECT x FROM f AS g WHERE {}))", of(Ty::Int), of(Ty::Bool)),
            8 => format!("EXISTS (SELECT 1 FROM f AS g WHERE g.x = f.x AND {})", of(Ty::Bool)),
            9 => format!("({} LIKE {})", of(Ty::Text), of(Ty::Text)),
            _ => format!("({} BETWEEN {} AND {})", of(Ty::Int), of(Ty::Int), of(Ty::Int)),
        },
        Ty::Ts => match k % 4 {
            0 => format!("({} + INTERVAL '1 hour')", of(Ty::Ts)),
            1 => format!("date_trunc('minute', {})", of(Ty::Ts)),
            2 => format!("date_bin(INTERVAL '5 minutes', {})", of(Ty::Ts)),
            _ => format!("coalesce({}, {})", of(Ty::Ts), of(Ty::Ts)),
        },
    }
}

/// A random statement over typed expressions: the shapes of [`random_statement`], with each
/// expression of the type its place needs.
fn typed_statement(rng: &mut ChaCha8Rng) -> String {
    let depth = rng.random_range(1..6);
    let mut any = || {
        let t = TYPES[rng.random_range(0..5)];
        typed_expr(rng, t, depth)
    };
    let (a, b) = (any(), any());
    let (p, q) = (typed_expr(rng, Ty::Bool, depth), typed_expr(rng, Ty::Bool, depth));
    let n = typed_expr(rng, Ty::Int, depth);
    match rng.random_range(0..10) {
        0 => format!("SELECT {a}, {b} FROM f"),
        1 => format!("SELECT count(*) FROM f WHERE {p}"),
        2 => format!(
            "SELECT {a} AS k, count(*), sum(x), min({b}) FROM f GROUP BY 1 HAVING count(*) > 0 OR {p} ORDER BY 1 LIMIT 5"
        ),
        3 => format!("SELECT * FROM f ORDER BY {a}, {b} DESC NULLS FIRST LIMIT 3 OFFSET 1"),
        4 => format!("SELECT f.x, g.x FROM f JOIN f AS g ON {p} LEFT JOIN f AS h ON {q}"),
        5 => format!("SELECT {n} FROM f UNION SELECT x FROM f WHERE {p} EXCEPT SELECT {n} FROM f"),
        6 => format!("WITH w AS (SELECT {a} AS v FROM f WHERE {p}) SELECT v, count(*) FROM w GROUP BY v"),
        7 => format!("SELECT row_number() OVER (PARTITION BY {a} ORDER BY {b}), lag({n}) OVER (ORDER BY ts) FROM f"),
        8 => format!("SELECT sum({n}), avg(y) FILTER (WHERE {p}), string_agg(s, ',') FROM f"),
        _ => format!("SELECT {a} FROM f AS g WHERE g.x IN (SELECT x FROM f WHERE {p})"),
    }
}

/// A random statement around random expressions: projections, filters, grouping, ordering, joins,
/// set operations, CTEs, window functions, EXPLAIN, and a reader's attempt at a write.
fn random_statement(rng: &mut ChaCha8Rng) -> String {
    let depth = rng.random_range(1..7);
    let mut e = || random_expr(rng, depth);
    let (a, b, c) = (e(), e(), e());
    match rng.random_range(0..12) {
        0 => format!("SELECT {a}, {b} FROM f"),
        1 => format!("SELECT count(*) FROM f WHERE {a}"),
        2 => format!("SELECT {a} AS k, count(*), sum(x), min({b}) FROM f GROUP BY 1 HAVING {c} ORDER BY 1 LIMIT 5"),
        3 => format!("SELECT * FROM f ORDER BY {a}, {b} DESC NULLS FIRST LIMIT 3 OFFSET 1"),
        4 => format!("SELECT f.x, g.x FROM f JOIN f AS g ON {a} LEFT JOIN f AS h ON {b}"),
        5 => format!("SELECT {a} UNION SELECT {b} EXCEPT SELECT {c}"),
        6 => format!("WITH w AS (SELECT {a} AS v FROM f) SELECT v, count(*) FROM w GROUP BY v"),
        7 => format!("SELECT row_number() OVER (PARTITION BY {a} ORDER BY {b}), lag({c}) OVER (ORDER BY ts) FROM f"),
        8 => format!("EXPLAIN SELECT {a} FROM f WHERE {b}"),
        9 => format!("DELETE FROM f WHERE {a}"),
        10 => format!("UPDATE f SET x = x WHERE {a}"),
        _ => format!("SELECT {a} FROM f AS g WHERE g.x IN (SELECT x FROM f WHERE {b})"),
    }
}

/// Random statements from a reader, in both protocols: each is answered (rows or an error), none
/// writes, no connection task panics, and the server answers a new connection after them.
#[test]
fn random_statements_do_not_take_the_server_down() {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let db = Arc::new(Database::open(tmp.path()).await.expect("open"));
        db.sql("CREATE TABLE f (ts TIMESTAMP NOT NULL, x BIGINT, y DOUBLE, s TEXT, b BOOLEAN) WITH (time_column = 'ts')")
            .await
            .expect("create");
        db.sql(
            "INSERT INTO f VALUES ('2024-01-01 00:00:00', 1, 0.5, 'a', true), ('2024-01-01 00:00:01', NULL, NULL, NULL, NULL), \
             ('2024-01-01 00:00:02', -9223372036854775808, 1e308, '', false), ('2024-01-02 00:00:00', 7, -0.0, 'xyz', true)",
        )
        .await
        .expect("insert");
        let config = ServerConfig {
            listen: "127.0.0.1:0".into(),
            trust_role: trafficdb_server::security::roles::Role::Reader,
            statement_timeout: Duration::from_secs(5),
            query_memory_limit: 64 << 20,
            ..Default::default()
        };
        let server = Server::bind(db.clone(), config).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let stats = server.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        let connect = || async {
            let (client, conn) = tokio_postgres::connect(
                &format!("host={} port={} user=fuzz dbname=trafficdb", addr.ip(), addr.port()),
                tokio_postgres::NoTls,
            )
            .await
            .expect("connect");
            tokio::spawn(conn);
            client
        };
        let seed = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7u64);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let client = connect().await;
        let (mut answered, mut failed) = (0, 0);
        let mut typed_answered = 0;
        for i in 0..600 {
            // Two typed statements (which mostly reach execution) for each untyped one (which
            // mostly stop in planning).
            let typed = i % 3 != 2;
            let sql = if typed { typed_statement(&mut rng) } else { random_statement(&mut rng) };
            if std::env::var("FUZZ_VERBOSE").is_ok() {
                eprintln!("{i}: {sql}");
            }
            let r = if i % 2 == 0 {
                client.simple_query(&sql).await.map(|_| ())
            } else {
                client.query(sql.as_str(), &[]).await.map(|_| ())
            };
            match r {
                Ok(()) => {
                    answered += 1;
                    typed_answered += usize::from(typed);
                }
                Err(e) => {
                    assert!(e.code().is_some(), "seed {seed}, statement {i}: no SQLSTATE, the connection broke: {e:?}\n{sql}");
                    // A panic caught in a query task still answers with a SQLSTATE, but is a bug.
                    assert!(!format!("{e:?}").contains("panicked"), "seed {seed}, statement {i}: {e:?}\n{sql}");
                    if typed && std::env::var("FUZZ_VERBOSE").is_ok() {
                        eprintln!("  typed statement failed: {e:?}");
                    }
                    failed += 1;
                }
            }
        }
        // Deep random chains, up to and past the nesting limit: answered or refused cleanly.
        for depth in [50, 500, 2_000, 20_000] {
            let mut expr = "x".to_string();
            for _ in 0..depth {
                expr = match rng.random_range(0..6) {
                    0 => format!("({expr} + 1)"),
                    1 => format!("abs({expr})"),
                    2 => format!("coalesce({expr}, 1)"),
                    3 => format!("CASE WHEN b THEN {expr} END"),
                    4 => format!("({expr} IN (1, 2))::int"),
                    _ => format!("(SELECT {expr})"),
                };
            }
            let sql = format!("SELECT {expr} FROM f");
            if let Err(e) = client.simple_query(&sql).await {
                assert!(e.code().is_some(), "seed {seed}: {e:?}");
            }
        }
        let n: i64 = db.sql("SELECT count(*) FROM f").await.expect("count").pop().map_or(0, |b| {
            b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().map_or(0, |a| a.value(0))
        });
        assert_eq!(n, 4, "seed {seed}: a reader's random statements wrote nothing");
        let fresh = connect().await;
        fresh.simple_query("SELECT 1").await.expect("a new connection is served");
        assert_eq!(stats.panicked.load(Ordering::Relaxed), 0, "seed {seed}: a connection task panicked");
        eprintln!(
            "random statements (seed {seed}): {answered} answered ({typed_answered} of 400 typed), {failed} refused with a SQLSTATE"
        );
        // The typed generator is only worth its place if its statements reach execution.
        assert!(typed_answered >= 200, "seed {seed}: only {typed_answered} of 400 typed statements answered");
        drop((client, fresh));
        stop.send(()).expect("stop");
        serving.await.expect("server task").expect("clean shutdown");
    });
}
