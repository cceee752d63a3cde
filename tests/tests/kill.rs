//! A real process is killed with SIGKILL while it ingests; reopening the directory finds every row it
//! had acknowledged, and nothing but whole appends.
//!
//! The child is this test binary run again with `TRAFFICDB_KILL_CHILD=<dir>`: it appends batches of
//! consecutive ids forever and prints `acked <next id>` after each acknowledged append.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trafficdb::{Database, Options};

use crate::common::{EVENTS_DDL, all_ids, events_batch, runtime};

const BATCH: i64 = 2_000;

#[test]
fn child_writer() {
    let Ok(dir) = std::env::var("TRAFFICDB_KILL_CHILD") else { return };
    let rt = runtime();
    // Small flushes, so the kill can land in a flush or a compaction as well as in an append.
    let options = Options { flush_bytes: 256 << 10, compaction_min_segments: 3, ..Options::default() };
    let db = rt.block_on(Database::open_with(&dir, options)).expect("open");
    rt.block_on(db.sql(EVENTS_DDL)).expect("create");
    let mut next = 0i64;
    loop {
        db.append("events", &events_batch(next, BATCH)).expect("append");
        next += BATCH;
        println!("acked {next}");
    }
}

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_row() {
    if std::env::var("TRAFFICDB_KILL_CHILD").is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill::child_writer", "--nocapture", "--test-threads", "1"])
            .env("TRAFFICDB_KILL_CHILD", tmp.path().join(format!("db{round}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut acked = 0i64;
        let start = Instant::now();
        let wait = Duration::from_millis(600 + 400 * round as u64);
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("acked ") {
                acked = n.trim().parse().expect("acked count");
            }
            if start.elapsed() > wait && acked > 0 {
                break;
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // Acknowledgements printed before the kill but not read yet.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("acked ") {
                acked = n.trim().parse().expect("acked count");
            }
        }
        assert!(acked > 0, "the child acknowledged nothing");

        let rt = runtime();
        let db = rt
            .block_on(Database::open_with(
                tmp.path().join(format!("db{round}")),
                Options { background: false, ..Options::default() },
            ))
            .expect("reopen after kill");
        let ids = rt.block_on(all_ids(&db));
        let n = ids.len() as i64;
        assert!(n >= acked, "round {round}: {acked} rows acknowledged, {n} found");
        assert_eq!(n % BATCH, 0, "round {round}: part of an append survived");
        assert!(n <= acked + BATCH, "round {round}: {n} rows found, only {acked} acknowledged");
        assert!(ids.iter().enumerate().all(|(i, &id)| i as i64 == id), "round {round}: ids are not 0..{n}");
    }
}
