//! Readers running during writes, flushes and compactions always see a consistent snapshot: whole
//! appends, never part of one, and never a row twice while a flush or compaction moves it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use trafficdb::arrow::array::{Array, AsArray};
use trafficdb::arrow::datatypes::Int64Type;
use trafficdb::{Database, Options};

use crate::common::{EVENTS_DDL, events_batch, runtime};

const WRITERS: i64 = 2;
const BATCHES: i64 = 60;
const BATCH: i64 = 500;
/// Writer `w` appends ids `w * STRIDE ..`.
const STRIDE: i64 = 1_000_000;

#[test]
fn readers_see_whole_appends_during_flush_and_compaction() {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = Options { background: false, compaction_min_segments: 3, ..Options::default() };
    let db = Arc::new(rt.block_on(Database::open_with(tmp.path(), options)).expect("open"));
    rt.block_on(db.sql(EVENTS_DDL)).expect("create");
    let done = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                for b in 0..BATCHES {
                    db.append("events", &events_batch(w * STRIDE + b * BATCH, BATCH)).expect("append");
                }
            })
        })
        .collect();
    let maint = {
        let db = db.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                db.flush().expect("flush");
                db.engine().compact().expect("compact");
            }
        })
    };

    let mut checks = 0;
    let check = |batches: &[trafficdb::arrow::array::RecordBatch]| {
        for b in batches {
            for r in 0..b.num_rows() {
                let w = b.column(0).as_primitive::<Int64Type>().value(r);
                let n = b.column(1).as_primitive::<Int64Type>().value(r);
                let min = b.column(2).as_primitive::<Int64Type>().value(r);
                let max = b.column(3).as_primitive::<Int64Type>().value(r);
                let sum = b.column(4).as_primitive::<Int64Type>().value(r);
                assert_eq!(n % BATCH, 0, "writer {w}: {n} rows visible, not whole appends");
                assert_eq!(min, w * STRIDE, "writer {w}: first row missing");
                assert_eq!(max, min + n - 1, "writer {w}: gap or duplicate (max {max}, n {n})");
                assert_eq!(sum, (min + max) * n / 2, "writer {w}: a row is duplicated or missing");
            }
        }
    };
    let query = "SELECT id / 1000000 AS w, count(*) AS n, min(id) AS lo, max(id) AS hi, sum(id) AS s FROM events GROUP BY id / 1000000";
    while writers.iter().any(|w| !w.is_finished()) {
        let batches = rt.block_on(db.sql(query)).expect("read during writes");
        assert!(batches.iter().all(|b| b.column(1).null_count() == 0));
        check(&batches);
        checks += 1;
    }
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::Release);
    maint.join().expect("maintenance");
    let batches = rt.block_on(db.sql(query)).expect("final read");
    check(&batches);
    let total: i64 = batches.iter().map(|b| b.column(1).as_primitive::<Int64Type>().values().iter().sum::<i64>()).sum();
    assert_eq!(total, WRITERS * BATCHES * BATCH);
    assert!(checks > 0);
}
