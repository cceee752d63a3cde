//! The PostgreSQL wire server with a real client (tokio-postgres) on a loopback port: simple and
//! extended protocol, parameters, binary results, command tags, SQLSTATEs, DISCARD ALL, and a clean
//! shutdown that leaves every row in the directory.

use std::sync::Arc;

use futures::{SinkExt, TryStreamExt};

use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use trafficdb::Database;
use trafficdb_server::Server;

use crate::common::{all_ids, runtime};

#[test]
fn tokio_postgres_talks_to_the_server() {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let db = Arc::new(Database::open(tmp.path()).await.expect("open"));
        let server = Server::bind(db, "127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));

        let (client, conn) = tokio_postgres::connect(
            &format!("host={} port={} user=postgres dbname=trafficdb", addr.ip(), addr.port()),
            NoTls,
        )
        .await
        .expect("connect");
        let conn_task = tokio::spawn(conn);

        // Simple protocol, several statements.
        client
            .batch_execute(
                "CREATE TABLE events (ts TIMESTAMP NOT NULL, id BIGINT NOT NULL, backend TEXT, ms DOUBLE) \
                 WITH (time_column = 'ts', partition = '1 hour'); \
                 INSERT INTO events VALUES ('2024-01-01 00:00:00', 0, 'a', 1.5), ('2024-01-01 00:00:01', 1, 'b', 2.5)",
            )
            .await
            .expect("create and insert");

        // Extended protocol with parameters; the tag carries the row count.
        let n = client
            .execute("INSERT INTO events VALUES ('2024-01-01 00:00:02', $1, $2, $3)", &[&2i64, &"c", &3.5f64])
            .await
            .expect("insert with parameters");
        assert_eq!(n, 1);

        // Binary results through a prepared statement.
        let rows = client
            .query("SELECT id, backend, ms FROM events WHERE ms > $1 ORDER BY id", &[&2.0f64])
            .await
            .expect("query");
        let got: Vec<(i64, String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        assert_eq!(got, vec![(1, "b".to_string(), 2.5), (2, "c".to_string(), 3.5)]);

        // SQLSTATEs.
        let code = |e: tokio_postgres::Error| e.code().cloned();
        let e = client.simple_query("SELECT * FROM nope").await.expect_err("unknown table");
        assert_eq!(code(e), Some(SqlState::UNDEFINED_TABLE));
        let e = client.simple_query("SELEC 1").await.expect_err("syntax");
        assert_eq!(code(e), Some(SqlState::SYNTAX_ERROR));
        let e = client
            .simple_query("INSERT INTO events (ts, id) VALUES ('2024-01-01 00:00:03', NULL)")
            .await
            .expect_err("not null");
        assert_eq!(code(e), Some(SqlState::NOT_NULL_VIOLATION));
        let e = client.simple_query("CREATE TABLE events (x INT)").await.expect_err("duplicate");
        assert_eq!(code(e), Some(SqlState::DUPLICATE_TABLE));
        // The connection is still usable after errors, and answers DISCARD ALL.
        client.simple_query("DISCARD ALL").await.expect("discard all");
        let n: i64 = client.query_one("SELECT count(*) FROM events", &[]).await.expect("count").get(0);
        assert_eq!(n, 3);

        // COPY FROM STDIN, text format: one transaction, durable when the tag arrives.
        let sink = client.copy_in("COPY events (ts, id, backend, ms) FROM STDIN").await.expect("copy in");
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"2024-01-01 00:00:10\t10\tx\t\\N\n2024-01-01 00:00:11\t11\t"))
            .await
            .expect("send");
        sink.send(bytes::Bytes::from_static(b"tab\\there\t4.5\n")).await.expect("send");
        assert_eq!(sink.finish().await.expect("copy done"), 2);
        let row = client.query_one("SELECT backend, ms FROM events WHERE id = 11", &[]).await.expect("copied row");
        assert_eq!((row.get::<_, String>(0), row.get::<_, f64>(1)), ("tab\there".to_string(), 4.5));

        // CSV with a header; a bad value rejects the whole COPY and names the line and column.
        let sink = client.copy_in("COPY events FROM STDIN WITH (FORMAT csv, HEADER)").await.expect("copy in csv");
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(
            b"ts,id,backend,ms\n2024-01-01 00:00:20,20,\"a,b\",1\n2024-01-01 00:00:21,21,c,oops\n",
        ))
        .await
        .expect("send");
        let e = sink.finish().await.expect_err("bad value");
        assert_eq!(e.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION));
        let msg = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
        assert!(msg.contains("\"ms\"") && msg.contains("line 3"), "{msg}");
        let n: i64 = client.query_one("SELECT count(*) FROM events WHERE id >= 20", &[]).await.expect("count").get(0);
        assert_eq!(n, 0, "a failed COPY must write nothing");

        // COPY TO STDOUT.
        let out = client
            .copy_out("COPY (SELECT id, backend FROM events WHERE id >= 10 ORDER BY id) TO STDOUT WITH (FORMAT csv)")
            .await
            .expect("copy out");
        let chunks: Vec<bytes::Bytes> = out.try_collect().await.expect("copy data");
        let text: String = chunks.iter().map(|c| String::from_utf8_lossy(c).to_string()).collect();
        assert_eq!(text, "10,x\n11,tab\there\n");

        // What drivers read to learn the server version.
        let v: String = client.query_one("SELECT version()", &[]).await.expect("version").get(0);
        assert!(v.starts_with("PostgreSQL 16.6 (trafficdb"), "{v}");
        let rows = client.simple_query("SHOW server_version").await.expect("show");
        let shown = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(shown.as_deref(), Some("16.6"));

        drop(client);
        let _ = conn_task.await;
        stop.send(()).expect("stop");
        serving.await.expect("server task").expect("clean shutdown");

        // The shutdown flushed and released the directory: it opens again with every row.
        let db = Database::open(tmp.path()).await.expect("reopen");
        assert_eq!(all_ids(&db).await, vec![0, 1, 2, 10, 11]);
    });
}
