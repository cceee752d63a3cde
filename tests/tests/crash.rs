//! Crash tests on the simulated file system: the workload (appends, bulk loads, flushes, compactions, and
//! deletes and updates whose rows a query chooses) is cut short at every mutating file operation in turn, the
//! machine "loses power" (only fsynced bytes and synced names survive, plus a random part of unsynced
//! tails), and the directory is reopened.
//! Every acknowledged row must be there and nothing else; an operation in flight when the crash came
//! may have happened wholly or not at all, never in part.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use trafficdb::io::sim::SimFs;
use trafficdb::{Database, Engine, Options};

use crate::common::{EVENTS_DDL, all_ids, events_batch, runtime};

fn options() -> Options {
    Options { background: false, compaction_min_segments: 2, ..Options::default() }
}

/// Appends rows `first..first + n` as a bulk load of two segments published together: the later half
/// is written first, so the earlier one cannot follow it in the same segment.
fn bulk_append(db: &Database, first: i64, n: i64) -> trafficdb::Result<u64> {
    let t = db.engine().table("events").expect("the events table");
    let mut load = db.engine().bulk_load(&t)?;
    load.push(&events_batch(first + n / 2, n - n / 2))?;
    load.write_pending()?;
    load.push(&events_batch(first, n / 2))?;
    load.commit()
}

/// What the workload has had acknowledged, and what was in flight when it stopped.
#[derive(Debug, Default, Clone)]
struct Model {
    table_created: bool,
    ids: BTreeSet<i64>,
    /// The operation that failed: its rows may be present (append) or absent (delete), wholly; an
    /// update takes its old rows out and puts its new ones in, or does neither.
    pending_add: BTreeSet<i64>,
    pending_remove: BTreeSet<i64>,
}

const BATCH: i64 = 40;
const STEPS: i64 = 14;

/// Runs the workload until it finishes or an operation fails, returning the model.
fn workload(fs: &SimFs, rt: &tokio::runtime::Runtime) -> Model {
    let mut m = Model::default();
    let engine = match Engine::open_with(Arc::new(fs.clone()), PathBuf::from("/db"), options(), None) {
        Ok(e) => e,
        Err(_) => return m,
    };
    let db = match rt.block_on(Database::from_engine(engine)) {
        Ok(db) => db,
        Err(_) => return m,
    };
    if rt.block_on(db.sql(EVENTS_DDL)).is_err() {
        return m;
    }
    m.table_created = true;
    for step in 0..STEPS {
        let first = step * BATCH;
        let ids: BTreeSet<i64> = (first..first + BATCH).collect();
        let appended = if step % 6 == 0 {
            bulk_append(&db, first, BATCH)
        } else {
            db.append("events", &events_batch(first, BATCH))
        };
        match appended {
            Ok(_) => m.ids.extend(ids),
            Err(_) => {
                m.pending_add = ids;
                return m;
            }
        }
        let r = match step % 6 {
            1 | 3 => db.flush(),
            2 => db.engine().compact().map(|_| ()),
            4 => {
                // Delete every id divisible by 4 among the rows so far (spans segments and partitions),
                // chosen by a subquery.
                let gone: BTreeSet<i64> = m.ids.iter().copied().filter(|i| i % 4 == 0).collect();
                match rt.block_on(db.sql("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id % 4 = 0)")) {
                    Ok(_) => {
                        m.ids.retain(|i| i % 4 != 0);
                        Ok(())
                    }
                    Err(e) => {
                        m.pending_remove = gone;
                        Err(e)
                    }
                }
            }
            5 => {
                // Update the ids = 1 (mod 5): new ids, and three hours later (other partitions).
                let old: BTreeSet<i64> = m.ids.iter().copied().filter(|i| i % 5 == 1).collect();
                let new: BTreeSet<i64> = old.iter().map(|i| i + 100_000).collect();
                let sql = "UPDATE events SET id = id + 100000, ts = ts + INTERVAL '3 hours' WHERE id % 5 = 1";
                match rt.block_on(db.sql(sql)) {
                    Ok(_) => {
                        m.ids.retain(|i| i % 5 != 1);
                        m.ids.extend(new);
                        Ok(())
                    }
                    Err(e) => {
                        m.pending_remove = old;
                        m.pending_add = new;
                        Err(e)
                    }
                }
            }
            _ => Ok(()),
        };
        if r.is_err() {
            return m;
        }
    }
    m
}

fn check_after_crash(fs: SimFs, m: &Model, rt: &tokio::runtime::Runtime, label: &str) {
    let engine = Engine::open_with(Arc::new(fs), PathBuf::from("/db"), options(), None)
        .unwrap_or_else(|e| panic!("{label}: reopening after the crash failed: {e}"));
    let db = rt.block_on(Database::from_engine(engine)).expect("session");
    if db.engine().table("events").is_none() {
        assert!(!m.table_created, "{label}: the acknowledged table is gone");
        return;
    }
    let got: BTreeSet<i64> = rt.block_on(all_ids(&db)).into_iter().collect();
    let base = &m.ids;
    // The operation in flight happened wholly (its rows out and in) or not at all.
    let applied: BTreeSet<i64> = base.difference(&m.pending_remove).chain(&m.pending_add).copied().collect();
    let ok = got == *base || got == applied;
    if !ok {
        let missing: Vec<_> = base.difference(&got).take(10).collect();
        let extra: Vec<_> = got.difference(base).take(10).collect();
        panic!(
            "{label}: after the crash the table holds {} rows, the model {} (pending +{} / -{}); missing {missing:?}, extra {extra:?}",
            got.len(),
            base.len(),
            m.pending_add.len(),
            m.pending_remove.len()
        );
    }
    // The reopened database must keep working: write, flush and read again.
    db.append("events", &events_batch(1_000_000, 3)).expect("append after recovery");
    db.flush().expect("flush after recovery");
    let after = rt.block_on(all_ids(&db));
    assert_eq!(after.len(), got.len() + 3, "{label}: rows after recovery");
}

#[test]
fn crash_at_every_file_operation_loses_no_acknowledged_row() {
    let rt = runtime();
    // A full run, to count the operations.
    let fs = SimFs::new();
    let full = workload(&fs, &rt);
    assert!(full.table_created && full.pending_add.is_empty() && full.pending_remove.is_empty());
    let total_ops = fs.ops();
    assert!(total_ops > 50, "the workload should do real I/O, did {total_ops} operations");
    check_after_crash(fs.crash(1), &full, &rt, "clean stop");

    for n in 1..=total_ops {
        let fs = SimFs::new();
        fs.fail_after(n);
        let m = workload(&fs, &rt);
        assert!(fs.is_dead() || n > fs.ops(), "operation {n} did not fail");
        for seed in [n, n * 7919 + 1] {
            check_after_crash(fs.crash(seed), &m, &rt, &format!("crash at operation {n}/{total_ops}, seed {seed}"));
        }
    }
}

/// The source of the backup crash tests: segments in two partitions (one compacted from two flushes)
/// and rows only in the log; the durable image, as a stopped process leaves it.
fn backup_source(rt: &tokio::runtime::Runtime) -> (SimFs, Vec<i64>) {
    let fs = SimFs::new();
    let engine = Engine::open_with(Arc::new(fs.clone()), PathBuf::from("/db"), options(), None).expect("open");
    let db = rt.block_on(Database::from_engine(engine)).expect("session");
    rt.block_on(db.sql(EVENTS_DDL)).expect("create");
    for (first, flush) in [(0, true), (40, true), (5_000, true), (9_000, false)] {
        db.append("events", &events_batch(first, 40)).expect("append");
        if flush {
            db.flush().expect("flush");
        }
    }
    db.engine().compact().expect("compact");
    let ids = rt.block_on(all_ids(&db));
    (fs.crash(0), ids)
}

fn ids_at(fs: SimFs, dir: &str, rt: &tokio::runtime::Runtime) -> Vec<i64> {
    let engine = Engine::open_with(Arc::new(fs), PathBuf::from(dir), options(), None).expect("open the restored copy");
    let db = rt.block_on(Database::from_engine(engine)).expect("session");
    rt.block_on(all_ids(&db))
}

/// A backup cut short at any file operation is refused by a restore (it has no `BACKUP` file) or, when
/// its manifest survived, restores every row; a restore cut short leaves no catalog (the directory is
/// not the backup's database) or the whole database.
#[test]
fn backup_and_restore_cut_short_at_every_file_operation() {
    use trafficdb::backup::{BackupOptions, backup_with, restore_with};
    let rt = runtime();
    let (source, ids) = backup_source(&rt);
    assert_eq!(ids.len(), 160);
    let (src, bak, dst) =
        (std::path::Path::new("/db"), std::path::Path::new("/bak"), std::path::Path::new("/restored"));
    let none = |_: u64, _: u64| {};

    let mut complete = None;
    for link in [false, true] {
        let mut n = 1;
        loop {
            let fs = source.crash(0);
            fs.fail_after(n);
            let result = backup_with(&fs, src, bak, BackupOptions { link }, &none);
            let finished = !fs.is_dead();
            assert_eq!(result.is_ok(), finished, "backup (link {link}) at operation {n}: {result:?}");
            for seed in [n, n * 31 + 7] {
                let after = fs.crash(seed);
                match restore_with(&after, bak, dst, &none) {
                    Ok(_) => {
                        assert_eq!(ids_at(after, "/restored", &rt), ids, "backup cut at operation {n}, seed {seed}")
                    }
                    Err(e) => {
                        assert!(!finished, "a finished backup must restore: {e}");
                        assert!(e.to_string().contains("not a complete backup"), "operation {n}: {e}");
                    }
                }
            }
            if finished {
                assert!(n > 10, "a backup should do real I/O, did {n} operations");
                complete = Some(fs.crash(0));
                break;
            }
            n += 1;
        }
    }

    let complete = complete.expect("a finished backup");
    let mut n = 1;
    loop {
        let fs = complete.crash(0);
        fs.fail_after(n);
        let finished = restore_with(&fs, bak, dst, &none).is_ok();
        assert_eq!(finished, !fs.is_dead(), "restore at operation {n}");
        for seed in [n, n * 31 + 7] {
            let after = fs.crash(seed);
            if trafficdb::io::Fs::exists(&after, &dst.join("catalog")) {
                assert_eq!(ids_at(after, "/restored", &rt), ids, "restore cut at operation {n}, seed {seed}");
            } else {
                assert!(!finished, "a finished restore left no catalog");
            }
        }
        if finished {
            break;
        }
        n += 1;
    }
}
