//! `trafficdb import`: Parquet files appended to a table. A reader thread decodes the files while two
//! threads append, so decoding, encoding for the WAL and the WAL's fsyncs overlap. Each batch is its
//! own transaction. The reader casts each batch to the table's types before passing it on, so a bad
//! file or value stops the import after exactly the batches before it; should the database itself
//! fail an append, the batch the other thread was appending may still land, and the count says so.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use parking_lot::Mutex;

use anyhow::Context;
use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use trafficdb::Database;
use trafficdb::engine::Table;
use trafficdb::types::coerce_batch;

/// Rows per decoded batch: one append (and one fsync) each.
const BATCH_ROWS: usize = 131_072;
/// Threads appending decoded batches.
const APPENDERS: usize = 2;

/// A decoded batch with where it came from, or the error that stopped the reader.
type Piece = anyhow::Result<(PathBuf, u64, RecordBatch)>;

/// Appends every row of `files` to `table`; returns the rows appended. On an error, the rows appended
/// before it stay, and the error says how many there were.
/// `progress` is called with the rows appended so far and the rows in all the files.
pub fn run(db: &Database, table: &str, files: &[PathBuf], progress: &(dyn Fn(u64, u64) + Sync)) -> anyhow::Result<u64> {
    let total: u64 = files.iter().map(|f| rows_in(f)).collect::<anyhow::Result<Vec<_>>>()?.iter().sum();
    progress(0, total);
    let t = db.engine().table(table).ok_or_else(|| anyhow::anyhow!("table \"{table}\" does not exist"))?;
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
    // Two appenders: while one waits for its batch's fsync, the other encodes the next (the WAL's
    // group commit writes both together).
    let rx = Mutex::new(rx);
    let appended = AtomicU64::new(0);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..APPENDERS {
            s.spawn(|| {
                while failed.lock().is_none() {
                    let Ok(piece) = rx.lock().recv() else { return };
                    let r = piece.and_then(|(file, first_row, batch)| {
                        db.append(table, &batch).with_context(|| {
                            let last = first_row + batch.num_rows() as u64;
                            format!("{}: rows {}-{last}", file.display(), first_row + 1)
                        })
                    });
                    match r {
                        Ok(n) => progress(appended.fetch_add(n, Ordering::Relaxed) + n, total),
                        Err(e) => {
                            failed.lock().get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    // The reader stops at its next send once the receiver is gone.
    drop(rx);
    let _ = reader.join();
    let appended = appended.into_inner();
    match failed.into_inner() {
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
