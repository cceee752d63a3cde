//! Runs every `tests/slt/*.slt` file against a fresh database in a temporary directory.
//!
//! Besides SQL, a file can use these statements (test hooks, not SQL):
//! - `RESTART`: close the database (flushing) and open the directory again;
//! - `CRASH_RESTART`: drop the database without closing it (no flush) and open it again, so the rows come
//!   back from the write-ahead log;
//! - `FLUSH`, `COMPACT`: run a flush or a compaction now;
//! - `RETENTION AT '<timestamp>'`: enforce retention as if the clock read that time;
//! - `LOAD SCHEMA`: apply the load-balancer schema (tables and views of `schema/sql`).

use std::path::{Path, PathBuf};

use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use trafficdb::arrow::array::{Array, RecordBatch};
use trafficdb::arrow::datatypes::DataType;
use trafficdb::{Database, Options, Output};

struct SltDb {
    dir: PathBuf,
    db: Option<Database>,
}

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

fn test_options() -> Options {
    Options { background: false, ..Options::default() }
}

impl SltDb {
    async fn open(dir: &Path) -> Result<Self, SltError> {
        let db = Database::open_with(dir, test_options()).await.map_err(|e| SltError(e.to_string()))?;
        Ok(SltDb { dir: dir.to_path_buf(), db: Some(db) })
    }

    fn db(&self) -> &Database {
        self.db.as_ref().expect("database is open")
    }

    async fn hook(&mut self, sql: &str) -> Result<Option<DBOutput<DefaultColumnType>>, SltError> {
        let s = sql.trim().trim_end_matches(';').trim();
        let err = |e: trafficdb::Error| SltError(e.to_string());
        match s.to_ascii_uppercase().as_str() {
            "RESTART" => {
                if let Some(db) = self.db.take() {
                    db.close().map_err(err)?;
                }
                *self = SltDb::open(&self.dir).await?;
            }
            "CRASH_RESTART" => {
                drop(self.db.take());
                *self = SltDb::open(&self.dir).await?;
            }
            "FLUSH" => self.db().flush().map_err(err)?,
            "LOAD SCHEMA" => {
                trafficdb_schema::install(self.db()).await.map_err(|e| SltError(e.to_string()))?;
            }
            "COMPACT" => {
                self.db().engine().compact().map_err(err)?;
            }
            u if u.starts_with("RETENTION AT ") => {
                let ts = s["RETENTION AT ".len()..].trim().trim_matches('\'');
                let t = chrono_like_parse(ts).ok_or_else(|| SltError(format!("bad timestamp {ts}")))?;
                let n = self.db().engine().enforce_retention_at(t).map_err(err)?;
                return Ok(Some(DBOutput::StatementComplete(n as u64)));
            }
            _ => return Ok(None),
        }
        Ok(Some(DBOutput::StatementComplete(0)))
    }
}

/// Parses `YYYY-MM-DD HH:MM:SS` as UTC microseconds.
fn chrono_like_parse(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ').unwrap_or((s, "00:00:00"));
    let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + t[0] * 3600 + t[1] * 60 + t.get(2).copied().unwrap_or(0)) * 1_000_000)
}

fn column_type(dt: &DataType) -> DefaultColumnType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let options = trafficdb::types::display_options("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts = trafficdb::types::formatters(b, &options).map_err(|e| SltError(e.to_string()))?;
        for r in 0..b.num_rows() {
            let mut row = Vec::with_capacity(fmts.len());
            for (f, c) in fmts.iter().zip(b.columns()) {
                // Multi-line values (plans) compare line by line without trailing blanks.
                let s: String = f.value(r).to_string().lines().map(str::trim_end).collect::<Vec<_>>().join("\n");
                row.push(if s.is_empty() && c.is_valid(r) { "(empty)".to_string() } else { s });
            }
            // A multi-line value (a plan) becomes one result line per line, as in DataFusion's own tests.
            let height = row.iter().map(|c| c.lines().count()).max().unwrap_or(1);
            if height <= 1 {
                out.push(row);
            } else {
                let split: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
                for i in 0..height {
                    out.push(split.iter().map(|l| l.get(i).copied().unwrap_or("").to_string()).collect());
                }
            }
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl AsyncDB for SltDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if let Some(out) = self.hook(sql).await? {
            return Ok(out);
        }
        let err = |e: trafficdb::Error| SltError(format!("{e} (SQLSTATE {})", e.sqlstate()));
        let stmts = trafficdb::database::parse(sql).map_err(err)?;
        let mut result = DBOutput::StatementComplete(0);
        for stmt in stmts {
            result = match self.db().execute(stmt).await.map_err(err)? {
                // `statement count n` reads the row count of the command tag (`DELETE 2`, `INSERT 0 3`).
                Output::Done(tag) => {
                    DBOutput::StatementComplete(tag.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0))
                }
                Output::Stream(s) | Output::Returning { rows: s, .. } => {
                    let schema = s.schema();
                    let batches =
                        trafficdb::datafusion::physical_plan::common::collect(s).await.map_err(|e| err(e.into()))?;
                    DBOutput::Rows {
                        types: schema.fields().iter().map(|f| column_type(f.data_type())).collect(),
                        rows: rows(&batches)?,
                    }
                }
            };
        }
        Ok(result)
    }

    async fn shutdown(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = db.close();
        }
    }

    fn engine_name(&self) -> &str {
        "trafficdb"
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[test]
fn slt_files_pass() {
    let rt = crate::common::runtime();
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files found");
    let filter = std::env::var("SLT").ok();
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().to_path_buf();
        let result = rt.block_on(async {
            let mut runner = sqllogictest::Runner::new(move || {
                let path = path.clone();
                async move { SltDb::open(&path).await }
            });
            // Rows compare as whole lines with runs of blanks collapsed (an empty first cell on a plan's
            // continuation line must not leave a leading blank).
            runner.with_validator(|normalizer, actual, expected| {
                let actual: Vec<String> = actual.iter().map(|r| normalizer(&r.join(" "))).collect();
                let expected: Vec<String> = expected.iter().map(normalizer).collect();
                actual == expected
            });
            runner.run_file_async(file).await
        });
        match result {
            Ok(()) => eprintln!("slt ok: {name}"),
            Err(e) => failures.push(format!("{name}:\n{e}")),
        }
    }
    assert!(failures.is_empty(), "{} .slt file(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}
