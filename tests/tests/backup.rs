//! Online backup: backups taken while a writer appends (and flushes and compactions run underneath)
//! restore to a state holding every row acknowledged before the backup began, each append whole, with
//! every value as written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use trafficdb::backup::{BackupOptions, backup, restore};
use trafficdb::{Database, Options};

use crate::common::{EVENTS_DDL, all_ids, events_batch, runtime};
use crate::http::rows;

const BATCH: i64 = 50;

#[test]
fn backups_during_ingest_restore_every_acknowledged_row() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Small memtables: flushes (which move the log's replay point) and compactions (which remove
    // segments) happen while the backups copy.
    let options = Options {
        flush_bytes: 32 << 10,
        compaction_min_segments: 2,
        background_tick: Duration::from_millis(5),
        ..Options::default()
    };
    let db = Arc::new(rt.block_on(Database::open_with(dir.path(), options)).unwrap());
    rt.block_on(db.sql(EVENTS_DDL)).unwrap();
    let acked = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 0;
            while !stop.load(Ordering::Acquire) {
                db.append("events", &events_batch(next, BATCH)).unwrap();
                next += BATCH;
                acked.store(next, Ordering::Release);
            }
        })
    };
    let mut taken = Vec::new();
    for (i, link) in [(0, false), (1, true), (2, false), (3, true)] {
        while acked.load(Ordering::Acquire) < (i + 1) * 20 * BATCH {
            std::thread::sleep(Duration::from_millis(2));
        }
        let before = acked.load(Ordering::Acquire);
        let dest = out.path().join(format!("backup{i}"));
        let manifest = backup(dir.path(), &dest, BackupOptions { link }, &|_, _| {}).unwrap();
        assert!(dest.join("BACKUP").exists());
        taken.push((dest, before, manifest));
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let flushes = db.engine().stats.flushes.load(Ordering::Relaxed);
    assert!(flushes >= 4, "the test needs flushes during the backups ({flushes})");
    rt.block_on(async {
        for (i, (dest, before, manifest)) in taken.iter().enumerate() {
            let restored = out.path().join(format!("restored{i}"));
            let m = restore(dest, &restored, &|_, _| {}).unwrap();
            assert_eq!(&m, manifest);
            let r = Database::open(&restored).await.unwrap();
            let ids = all_ids(&r).await;
            // One writer appends in order, so a consistent state is a prefix of whole appends.
            let n = ids.len() as i64;
            assert_eq!(ids, (0..n).collect::<Vec<_>>(), "backup {i}: not a prefix");
            assert_eq!(n % BATCH, 0, "backup {i}: part of an append");
            assert!(n >= *before, "backup {i} lost acknowledged rows: {n} < {before}");
            // Every value as written.
            let sql = format!("SELECT * FROM events WHERE id < {n} ORDER BY id");
            assert_eq!(rows(&r, &sql).await, rows(&db, &sql).await, "backup {i}");
            r.close().unwrap();
        }
        // A restore needs a complete backup and an empty target.
        let partial = out.path().join("partial");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::copy(taken[0].0.join("catalog"), partial.join("catalog")).unwrap();
        let err = restore(&partial, &out.path().join("r-partial"), &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("not a complete backup"), "{err}");
        let err = restore(&taken[0].0, &out.path().join("restored0"), &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let err = backup(dir.path(), &taken[0].0, BackupOptions::default(), &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    });
    Arc::try_unwrap(db).unwrap().close().unwrap();
}
