//! `trafficdb import`: Parquet files appended to a table as a bulk load ([`trafficdb::engine::BulkLoad`]):
//! rows go straight to segments, each published (durable and visible) as soon as it is written. A
//! reader thread decodes the files and casts each batch to the table's types while this thread sorts
//! and encodes segments, so a bad file or value stops the import after exactly the rows before it
//! (they are committed); should the database itself fail a write, the segments published before stay,
//! and the count says so.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::Context;
use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use trafficdb::Database;
use trafficdb::engine::Table;
use trafficdb::types::coerce_batch;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 131_072;

/// A decoded batch with where it came from, or the error that stopped the reader.
type Piece = anyhow::Result<(PathBuf, u64, RecordBatch)>;

/// Appends every row of `files` to `table`; returns the rows appended. On an error, the rows appended
/// before it stay, and the error says how many there were.
/// `progress` is called with the rows appended so far and the rows in all the files.
pub fn run(db: &Database, table: &str, files: &[PathBuf], progress: &(dyn Fn(u64, u64) + Sync)) -> anyhow::Result<u64> {
    let total: u64 = files.iter().map(|f| rows_in(f)).collect::<anyhow::Result<Vec<_>>>()?.iter().sum();
    progress(0, total);
    let t = db.engine().table(table).ok_or_else(|| anyhow::anyhow!("table \"{table}\" does not exist"))?;
    let mut load = db.engine().bulk_load(&t)?;
    let (tx, rx) = mpsc::sync_channel::<Piece>(2);
    let files = files.to_vec();
    let reader = std::thread::spawn(move || {
        for f in files {
            if let Err(e) = read(&f, &t, &tx) {
                let _ = tx.send(Err(e));
                return;
            }
        }
    });
    // While this thread sorts and encodes a segment (on every core), the reader decodes the next rows.
    // A bad file or value (the reader's error) stops the import after the rows before it, which are
    // committed, as documented; after a failed write, only what was published before stays.
    let mut stopped: Option<(anyhow::Error, bool)> = None;
    for piece in rx.iter() {
        let (file, first_row, batch) = match piece {
            Ok(p) => p,
            Err(e) => {
                stopped = Some((e, true));
                break;
            }
        };
        let r = load.push(&batch).and_then(|()| load.publish());
        if let Err(e) = r {
            let last = first_row + batch.num_rows() as u64;
            stopped = Some((
                anyhow::Error::from(e).context(format!("{}: rows {}-{last}", file.display(), first_row + 1)),
                false,
            ));
            break;
        }
        progress(load.rows(), total);
    }
    // The reader stops at its next send once the receiver is gone.
    drop(rx);
    let _ = reader.join();
    let error = match stopped {
        None => load.commit().err().map(anyhow::Error::from),
        Some((e, true)) => Some(match load.commit() {
            Ok(_) => e,
            Err(c) => e.context(c),
        }),
        Some((e, false)) => Some(e),
    };
    let appended = load.published();
    match error {
        None => Ok(appended),
        Some(e) => Err(e.context(format!("import stopped after {appended} rows were appended"))),
    }
}

fn rows_in(path: &Path) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("{}", path.display()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("{}", path.display()))?;
    Ok(b.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Decodes `path` and casts its batches to the table's types, in order: a bad value stops the import
/// here, before any later batch reaches an appender.
fn read(path: &Path, table: &Table, tx: &mpsc::SyncSender<Piece>) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("{}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
        .with_context(|| format!("{}", path.display()))?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.with_context(|| format!("{}: after row {row}", path.display()))?;
        let n = batch.num_rows() as u64;
        let batch = coerce_batch(&table.def, &table.schema, &batch)
            .with_context(|| format!("{}: rows {}-{}", path.display(), row + 1, row + n))?;
        if tx.send(Ok((path.to_path_buf(), row, batch))).is_err() {
            return Ok(());
        }
        row += n;
    }
    Ok(())
}
