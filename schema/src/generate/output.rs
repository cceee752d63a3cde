//! Where generated rows go: CSV or Parquet files, or the tables of a data directory. Generation runs on
//! its own thread; encoding or appending runs on the caller's, so the two overlap.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;
use trafficdb::Database;

use super::{Batch, Config, ConfigError, Generator, requests_schema, targets_schema};

/// File formats `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Encode { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    #[error(transparent)]
    Database(#[from] trafficdb::Error),
    #[error("the data directory already has {0} rows in lb_requests; generate into an empty one")]
    NotEmpty(u64),
    #[error("the data directory has no table {0}: create it with the load-balancer schema (not --empty)")]
    MissingTable(&'static str),
}

/// Row counts of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub targets: u64,
    pub backends: u64,
    pub incidents: u64,
    /// Files written, in order (none when loading a data directory).
    pub files: Vec<PathBuf>,
}

/// Runs the generator on a thread of its own, handing batches to `consume` on this one; `progress` gets
/// the number of `lb_requests` rows done after each batch. Returns the generator, finished.
fn pipeline(
    cfg: Config,
    mut consume: impl FnMut(Batch) -> Result<(), Error>,
    progress: &dyn Fn(u64),
) -> Result<Generator, Error> {
    let mut generator = Generator::new(cfg)?;
    let (tx, rx) = mpsc::sync_channel::<(Batch, u64)>(4);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            while let Some(b) = generator.next_batch() {
                let done = generator.rows();
                if tx.send((b, done)).is_err() {
                    break; // the consumer failed
                }
            }
            generator
        });
        let mut result = Ok(());
        for (batch, done) in rx.iter() {
            if let Err(e) = consume(batch) {
                result = Err(e);
                break;
            }
            progress(done);
        }
        drop(rx);
        let generator = producer.join().expect("the generator thread does not panic");
        result.map(|()| generator)
    })
}

enum Writer {
    Csv(datafusion::arrow::csv::Writer<BufWriter<File>>),
    Parquet(ArrowWriter<BufWriter<File>>),
}

struct FileSink {
    path: PathBuf,
    writer: Writer,
}

impl FileSink {
    fn create(dir: &Path, table: &str, schema: SchemaRef, format: FileFormat) -> Result<FileSink, Error> {
        let path = dir.join(format!("{table}.{}", format.extension()));
        let file = File::create(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let writer = match format {
            FileFormat::Csv => Writer::Csv(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_format("%Y-%m-%d %H:%M:%S%.6f".to_string())
                    .build(out),
            ),
            FileFormat::Parquet => {
                // Dictionaries only where values repeat (names, statuses): trying one on unique values
                // (ids, times, latencies) costs more than the rest of the encoding. Times are sorted,
                // so their deltas are small.
                let mut props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid")))
                    .set_max_row_group_row_count(Some(122_880))
                    .set_dictionary_enabled(false);
                for f in schema.fields() {
                    let name = ColumnPath::from(f.name().as_str());
                    let repeats = match f.data_type() {
                        DataType::Utf8 => !matches!(f.name().as_str(), "request_id" | "description"),
                        DataType::Int16 | DataType::Int32 => true,
                        _ => false,
                    };
                    if repeats {
                        props = props.set_column_dictionary_enabled(name, true);
                    } else if matches!(f.data_type(), DataType::Timestamp(..)) {
                        props = props.set_column_encoding(name, Encoding::DELTA_BINARY_PACKED);
                    }
                }
                let props = props.build();
                Writer::Parquet(
                    ArrowWriter::try_new(out, schema, Some(props))
                        .map_err(|e| Error::Encode { path: path.clone(), source: Box::new(e) })?,
                )
            }
        };
        Ok(FileSink { path, writer })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        let r = match &mut self.writer {
            Writer::Csv(w) => w.write(batch).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            Writer::Parquet(w) => w.write(batch).map_err(|e| Box::new(e) as _),
        };
        r.map_err(|source| Error::Encode { path: self.path.clone(), source })
    }

    fn finish(self) -> Result<PathBuf, Error> {
        let path = self.path;
        let io = |source| Error::Io { path: path.clone(), source };
        let file = match self.writer {
            Writer::Csv(w) => w.into_inner().into_inner().map_err(|e| io(e.into_error()))?,
            Writer::Parquet(w) => w
                .into_inner()
                .map_err(|e| Error::Encode { path: path.clone(), source: Box::new(e) })?
                .into_inner()
                .map_err(|e| io(e.into_error()))?,
        };
        file.sync_all().map_err(io)?;
        Ok(path)
    }
}

/// Writes `lb_requests`, `lb_targets`, `backends` and `incidents` as `<table>.<csv|parquet>` files in
/// `dir` (created if missing; files of the same names are replaced).
pub fn write_files(cfg: Config, format: FileFormat, dir: &Path, progress: &dyn Fn(u64)) -> Result<Summary, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let mut requests = FileSink::create(dir, "lb_requests", requests_schema(), format)?;
    let mut targets = FileSink::create(dir, "lb_targets", targets_schema(), format)?;
    let mut summary = Summary::default();
    let generator = pipeline(
        cfg,
        |batch| match batch {
            Batch::Requests(b) => {
                summary.requests += b.num_rows() as u64;
                requests.write(&b)
            }
            Batch::Targets(b) => {
                summary.targets += b.num_rows() as u64;
                targets.write(&b)
            }
        },
        progress,
    )?;
    summary.files.push(requests.finish()?);
    summary.files.push(targets.finish()?);
    for (table, batch) in [("backends", generator.backends_batch()), ("incidents", generator.incidents_batch())] {
        let mut sink = FileSink::create(dir, table, batch.schema(), format)?;
        sink.write(&batch)?;
        summary.files.push(sink.finish()?);
        match table {
            "backends" => summary.backends = batch.num_rows() as u64,
            _ => summary.incidents = batch.num_rows() as u64,
        }
    }
    let sync_dir = || File::open(dir)?.sync_all();
    sync_dir().map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    Ok(summary)
}

/// Appends generated rows to the load-balancer tables of `db` (which must have them, and an empty
/// `lb_requests`). Each batch is durable when appended; the memtables are flushed at the end.
pub fn load_into(db: &Database, cfg: Config, progress: &dyn Fn(u64)) -> Result<Summary, Error> {
    for table in ["lb_requests", "lb_targets", "backends", "incidents"] {
        if db.engine().table(table).is_none() {
            return Err(Error::MissingTable(table));
        }
    }
    let existing = db.engine().table("lb_requests").map_or(0, |t| t.snapshot().num_rows());
    if existing > 0 {
        return Err(Error::NotEmpty(existing));
    }
    let mut summary = Summary::default();
    let generator = pipeline(
        cfg,
        |batch| {
            match batch {
                Batch::Requests(b) => summary.requests += db.append("lb_requests", &b)?,
                Batch::Targets(b) => summary.targets += db.append("lb_targets", &b)?,
            }
            Ok(())
        },
        progress,
    )?;
    summary.backends = db.append("backends", &generator.backends_batch())?;
    summary.incidents = db.append("incidents", &generator.incidents_batch())?;
    db.flush()?;
    Ok(summary)
}
