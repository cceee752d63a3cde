//! `trafficdb import`: Parquet files appended on two threads give every row once, and a bad file stops
//! the import with the file and rows it was at, the rows appended before it kept.

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
