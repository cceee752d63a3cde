//! `trafficdb import`: Parquet files give every row once, and a bad file stops the import with the file
//! and rows it was at, the rows before it kept. Bulk loads (which import and COPY use): segments
//! written as partitions fill, published all or nothing, nothing left behind.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;

use crate::common::runtime;

/// `n` rows from `first` on, one a second; `bad_n` writes column n as text that is not a number.
fn write_parquet(path: &Path, first: i64, n: i64, bad_n: bool) {
    let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from_iter_values(
        (first..first + n).map(|v| 1_704_067_200_000_000 + v * 1_000_000),
    ));
    let host: ArrayRef = Arc::new(StringArray::from_iter_values((first..first + n).map(|v| format!("h{}", v % 5))));
    let (n_type, values): (DataType, ArrayRef) = match bad_n {
        false => (DataType::Int64, Arc::new(Int64Array::from_iter_values(first..first + n))),
        true => (DataType::Utf8, Arc::new(StringArray::from_iter_values((first..first + n).map(|_| "many")))),
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        Field::new("host", DataType::Utf8, false),
        Field::new("n", n_type, false),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), vec![ts, host, values]).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn import_appends_every_row_once_and_stops_at_a_bad_file() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let [a, bad, b] = ["a.parquet", "bad.parquet", "b.parquet"].map(|f| files.path().join(f));
    write_parquet(&a, 0, 300_000, false);
    write_parquet(&bad, 300_000, 1_000, true);
    write_parquet(&b, 400_000, 200_000, false);
    let db = rt.block_on(trafficdb::Database::open(dir.path())).unwrap();
    rt.block_on(db.sql(
        "CREATE TABLE t (ts TIMESTAMP NOT NULL, host TEXT, n BIGINT) WITH (time_column = 'ts', partition = '1 day')",
    ))
    .unwrap();
    let import = |files: &[std::path::PathBuf]| trafficdb_server::ingest::import::run(&db, "t", files, &|_, _| {});
    let totals = || {
        let rows = rt
            .block_on(
                db.sql("SELECT 'rows ' || count(*) || ', distinct ' || count(DISTINCT n) || ', sum ' || sum(n) FROM t"),
            )
            .unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string()
    };
    // Two files of several 131,072-row batches each: every row once.
    assert_eq!(import(&[a.clone(), b.clone()]).unwrap(), 500_000);
    let sum: i64 = (0..300_000).chain(400_000..600_000).sum();
    assert!(totals().contains(&format!("rows 500000, distinct 500000, sum {sum} ")), "{}", totals());
    // A bad file stops the import; what came before it stays.
    let e = format!("{:#}", import(&[a.clone(), bad.clone(), b.clone()]).unwrap_err());
    assert!(e.contains("import stopped after 300000 rows were appended"), "{e}");
    assert!(e.contains("bad.parquet: rows 1-1000"), "{e}");
    assert!(totals().contains("rows 800000, distinct 500000,"), "{}", totals());
}

/// Segment files under `dir` (recursively).
fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() { segment_files(&p) } else { usize::from(p.extension().is_some_and(|x| x == "seg")) }
            })
            .sum()
    })
}

#[test]
fn bulk_loads_write_segments_and_publish_all_or_nothing() {
    use crate::common::events_batch;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let db = rt.block_on(trafficdb::Database::open(dir.path())).unwrap();
    // One-day partitions: 200,000 rows a second apart fill two and start a third.
    rt.block_on(db.sql(
        "CREATE TABLE ev (ts TIMESTAMP NOT NULL, id BIGINT NOT NULL, backend TEXT, ms DOUBLE, ok BOOLEAN) \
         WITH (time_column = 'ts', partition = '1 day')",
    ))
    .unwrap();
    let t = db.engine().table("ev").unwrap();
    let query = |sql: &str| {
        let rows = rt.block_on(db.sql(sql)).unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string()
    };
    let staging = dir.path().join("staging");
    db.engine().watch(&t, "w").unwrap();

    // Row groups are written as partitions fill, but nothing is visible before the commit, and a load
    // dropped uncommitted leaves no file behind.
    let mut load = db.engine().bulk_load(&t).unwrap();
    load.push(&events_batch(0, 100_000)).unwrap();
    assert_eq!(segment_files(&staging), 1, "the first day's first row group is in an open segment");
    assert!(query("SELECT count(*) AS n FROM ev").contains("| 0 "));
    drop(load);
    assert_eq!(segment_files(&staging), 0);

    // The later rows first, then the earlier ones: those cannot follow in the same segment, so each
    // partition they share gets another segment, all published by one commit.
    let mut load = db.engine().bulk_load(&t).unwrap();
    load.push(&events_batch(100_000, 100_000)).unwrap();
    load.push(&events_batch(0, 100_000)).unwrap();
    assert_eq!(load.commit().unwrap(), 200_000);
    assert_eq!(segment_files(&staging), 0);
    let sum: i64 = (0..200_000).sum();
    let totals = "SELECT count(*) AS n, count(DISTINCT id) AS d, sum(id) AS s, min(ts) AS lo, max(ts) AS hi FROM ev";
    let expected = format!("| 200000 | 200000 | {sum} | 2024-01-01T00:00:00 | 2024-01-03T07:33:19 |");
    assert!(query(totals).contains(&expected), "{}", query(totals));
    // The newest rows come first from overlapping segments, as from any others.
    assert!(query("SELECT id FROM ev ORDER BY ts DESC LIMIT 2").contains("| 199999 |\n| 199998 |"));
    // Day 0 in one segment; day 1's earlier rows could not follow its later ones; day 2 in one.
    assert_eq!(segment_files(&dir.path().join("tables")), 4);
    // Nothing went through the WAL (its files hold a header and nothing else); the watcher (a
    // continuous rollup's) saw the change.
    let wal_bytes: u64 =
        std::fs::read_dir(dir.path().join("wal")).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert!(wal_bytes < 1024, "{wal_bytes} bytes in the WAL");
    let (changed, _) = db.engine().take_changes(&t, "w");
    assert_eq!(changed, Some(1_704_067_200_000_000), "changes from the earliest row loaded");

    // A load that never fills a row group goes through the WAL, like an append.
    let mut load = db.engine().bulk_load(&t).unwrap();
    load.push(&events_batch(300_000, 10)).unwrap();
    assert_eq!(load.commit().unwrap(), 10);
    assert_eq!(segment_files(&dir.path().join("tables")), 4);

    // All of it durable: reopened, the same rows.
    db.close().unwrap();
    let db = rt.block_on(trafficdb::Database::open(dir.path())).unwrap();
    let rows = rt.block_on(db.sql("SELECT count(*) AS n, sum(id) AS s FROM ev")).unwrap();
    let shown = datafusion::arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
    assert!(shown.contains(&format!("| 200010 | {} |", sum + (300_000..300_010).sum::<i64>())), "{shown}");
}
