//! Corruption: a flipped byte anywhere in a segment, or in the middle of the write-ahead log, is an error
//! that names the file and the offset. Never a panic, never wrong rows.

use std::path::{Path, PathBuf};

use trafficdb::{Database, Options};

use crate::common::{EVENTS_DDL, all_ids, events_batch, runtime};

fn options() -> Options {
    Options { background: false, ..Options::default() }
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= 0x5A;
    std::fs::write(path, bytes).expect("write");
}

/// Opens the directory and reads every row; the error text if anything fails.
fn open_and_read(dir: &Path, rt: &tokio::runtime::Runtime) -> Result<Vec<i64>, String> {
    rt.block_on(async {
        let db = Database::open_with(dir, options()).await.map_err(|e| e.to_string())?;
        let r = db.sql("SELECT id, ts, backend, ms, ok FROM events ORDER BY id").await.map_err(|e| e.to_string())?;
        let ids = all_ids(&db).await;
        drop(r);
        Ok(ids)
    })
}

#[test]
fn every_flipped_byte_of_a_segment_is_reported_with_file_and_offset() {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    rt.block_on(async {
        let db = Database::open_with(dir, options()).await.expect("open");
        db.sql("CREATE TABLE events (ts TIMESTAMP NOT NULL, id BIGINT NOT NULL, backend TEXT, ms DOUBLE, ok BOOLEAN) WITH (time_column = 'ts', partition = '1 day')")
            .await
            .expect("create");
        db.append("events", &events_batch(0, 300)).expect("append");
        db.close().expect("close");
    });
    let segs = files_with_ext(dir, "seg");
    assert_eq!(segs.len(), 1, "one segment expected");
    let seg = &segs[0];
    let original = std::fs::read(seg).expect("read");
    let expected: Vec<i64> = (0..300).collect();
    assert_eq!(open_and_read(dir, &rt).expect("clean read"), expected);
    for offset in 0..original.len() {
        flip(seg, offset);
        match open_and_read(dir, &rt) {
            Ok(ids) => panic!("flipping byte {offset} of {} went unnoticed ({} rows read)", seg.display(), ids.len()),
            Err(msg) => {
                assert!(
                    msg.contains(&seg.display().to_string()),
                    "error for byte {offset} does not name the file: {msg}"
                );
                assert!(msg.contains("offset"), "error for byte {offset} does not give an offset: {msg}");
            }
        }
        std::fs::write(seg, &original).expect("restore");
    }
    assert_eq!(open_and_read(dir, &rt).expect("read after restore"), expected);
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_wal_is_an_error_and_a_torn_tail_is_cut() {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    rt.block_on(async {
        let db = Database::open_with(dir, options()).await.expect("open");
        db.sql(EVENTS_DDL).await.expect("create");
        for i in 0..5 {
            db.append("events", &events_batch(i * 100, 100)).expect("append");
        }
        // Dropped without close: the rows live only in the WAL.
        drop(db);
    });
    let wals = files_with_ext(&dir.join("wal"), "wal");
    let wal =
        wals.iter().max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).expect("a wal file").clone();
    let original = std::fs::read(&wal).expect("read wal");

    // A byte in the first record: corruption, named with file and offset.
    flip(&wal, 40);
    let err = open_and_read(dir, &rt).expect_err("corrupt WAL must not open");
    assert!(err.contains(&wal.display().to_string()) && err.contains("offset"), "{err}");
    std::fs::write(&wal, &original).expect("restore");

    // The last record cut short: a torn write, cut off; the four complete appends survive.
    std::fs::write(&wal, &original[..original.len() - 25]).expect("truncate");
    let ids = open_and_read(dir, &rt).expect("torn tail must be recovered");
    assert_eq!(ids, (0..400).collect::<Vec<i64>>());
}
