//! Runs every `tests/slt/*.slt` file against a fresh database in a temporary directory, one test per
//! file (`cargo test --release --workspace --test integration slt::dml`).
//!
//! - `SLT_REWRITE=1` rewrites each file's expected output with what the engine answers now (review
//!   the diff before committing it);
//! - `SLT_WIRE=1` runs the same files through the PostgreSQL wire server (a server on the database,
//!   statements sent by tokio-postgres in the simple protocol, values in PostgreSQL's text format),
//!   to compare what clients get with what the library answers;
//! - `every_slt_file_has_a_test` fails when a file in `tests/slt` has no test here.
//!
//! Besides SQL, a file can use these statements (test hooks, not SQL):
//! - `RESTART`: close the database (flushing) and open the directory again;
//! - `CRASH_RESTART`: drop the database without closing it (no flush) and open it again, so the rows come
//!   back from the write-ahead log;
//! - `FLUSH`, `COMPACT`: run a flush or a compaction now;
//! - `RETENTION AT '<timestamp>'`: enforce retention as if the clock read that time;
//! - `LOAD SCHEMA`: apply the load-balancer schema (tables and views of `schema/sql`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqllogictest::{AsyncDB, ColumnType, DBOutput};
use trafficdb::arrow::array::{Array, RecordBatch};
use trafficdb::arrow::datatypes::DataType;
use trafficdb::{Database, Options, Output};

struct SltDb {
    dir: PathBuf,
    db: Option<Arc<Database>>,
    /// The wire server on `db` and a client of it, in `SLT_WIRE` mode.
    wire: Option<Wire>,
}

struct Wire {
    client: tokio_postgres::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: crate::server::Serving,
}

fn wire_mode() -> bool {
    std::env::var("SLT_WIRE").is_ok_and(|v| !v.is_empty() && v != "0")
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
        let db = Arc::new(Database::open_with(dir, test_options()).await.map_err(|e| SltError(e.to_string()))?);
        let wire = if wire_mode() { Some(Wire::start(db.clone()).await?) } else { None };
        Ok(SltDb { dir: dir.to_path_buf(), db: Some(db), wire })
    }

    fn db(&self) -> &Database {
        self.db.as_ref().expect("database is open")
    }

    /// Closes the database (flushing), after stopping the wire server, which closes it too.
    async fn close(&mut self) -> Result<(), SltError> {
        if let Some(wire) = self.wire.take() {
            wire.stop().await?;
        }
        if let Some(db) = self.db.take() {
            let closed = match Arc::try_unwrap(db) {
                Ok(db) => db.close(),
                Err(shared) => shared.engine().close(),
            };
            closed.map_err(|e| SltError(e.to_string()))?;
        }
        Ok(())
    }

    /// Drops the database without closing it, as a crash would; the wire server is aborted.
    async fn crash(&mut self) {
        if let Some(wire) = self.wire.take() {
            wire.serving.abort();
            let _ = wire.serving.await;
            drop(wire.client);
        }
        drop(self.db.take());
    }

    async fn hook(&mut self, sql: &str) -> Result<Option<DBOutput<SltType>>, SltError> {
        let s = sql.trim().trim_end_matches(';').trim();
        let err = |e: trafficdb::Error| SltError(e.to_string());
        match s.to_ascii_uppercase().as_str() {
            "RESTART" => {
                self.close().await?;
                *self = SltDb::open(&self.dir).await?;
            }
            "CRASH_RESTART" => {
                self.crash().await;
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

impl Wire {
    /// Serves `db` on a free loopback port and connects to it.
    async fn start(db: Arc<Database>) -> Result<Wire, SltError> {
        let (addr, _, stop, serving) = crate::server::start_with_http(db, Default::default()).await;
        let client = crate::server::connect(addr, "slt", None).await.map_err(|e| SltError(e.to_string()))?;
        Ok(Wire { client, stop, serving })
    }

    /// Stops the server (which flushes and closes the database).
    async fn stop(self) -> Result<(), SltError> {
        drop(self.client);
        let _ = self.stop.send(());
        match self.serving.await {
            Ok(r) => r.map_err(|e| SltError(e.to_string())),
            Err(e) => Err(SltError(e.to_string())),
        }
    }

    /// Runs `sql` in the simple protocol: the last statement's rows, or its row count.
    async fn run(&self, sql: &str) -> Result<DBOutput<SltType>, SltError> {
        use tokio_postgres::SimpleQueryMessage;
        let messages = self.client.simple_query(sql).await.map_err(|e| match e.as_db_error() {
            Some(db) => SltError(format!("{} (SQLSTATE {})", db.message(), db.code().code())),
            None => SltError(e.to_string()),
        })?;
        let (mut rows, mut columns, mut result) = (Vec::new(), None, DBOutput::StatementComplete(0));
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(c) => columns = Some(c.len()),
                SimpleQueryMessage::Row(r) => {
                    let row: Vec<String> = (0..r.len())
                        .map(|i| match r.get(i) {
                            None => "NULL".to_string(),
                            Some("") => "(empty)".to_string(),
                            Some(v) => v.lines().map(str::trim_end).collect::<Vec<_>>().join("\n"),
                        })
                        .collect();
                    rows.extend(split_lines(row));
                }
                SimpleQueryMessage::CommandComplete(n) => {
                    result = match columns.take() {
                        Some(width) => {
                            DBOutput::Rows { types: vec![SltType::Any; width], rows: std::mem::take(&mut rows) }
                        }
                        None => DBOutput::StatementComplete(n),
                    };
                }
                _ => {}
            }
        }
        Ok(result)
    }
}

/// The result column types of the files: `T` text, `I` integer, `R` floating point, `B` boolean,
/// `?` anything else (and every column through the wire, where the text format carries no type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SltType {
    Text,
    Integer,
    Float,
    Boolean,
    Any,
}

impl ColumnType for SltType {
    fn from_char(value: char) -> Option<Self> {
        Some(match value {
            'T' => SltType::Text,
            'I' => SltType::Integer,
            'R' => SltType::Float,
            'B' => SltType::Boolean,
            _ => SltType::Any,
        })
    }

    fn to_char(&self) -> char {
        match self {
            SltType::Text => 'T',
            SltType::Integer => 'I',
            SltType::Float => 'R',
            SltType::Boolean => 'B',
            SltType::Any => '?',
        }
    }
}

fn column_type(dt: &DataType) -> SltType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => SltType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => SltType::Float,
        DataType::Boolean => SltType::Boolean,
        _ => SltType::Text,
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
            out.extend(split_lines(row));
        }
    }
    Ok(out)
}

/// A row with a multi-line value (a plan) becomes one result line per line, as in DataFusion's own
/// tests.
fn split_lines(row: Vec<String>) -> Vec<Vec<String>> {
    let height = row.iter().map(|c| c.lines().count()).max().unwrap_or(1);
    if height <= 1 {
        return vec![row];
    }
    let split: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
    (0..height).map(|i| split.iter().map(|l| l.get(i).copied().unwrap_or("").to_string()).collect()).collect()
}

#[async_trait::async_trait]
impl AsyncDB for SltDb {
    type Error = SltError;
    type ColumnType = SltType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<SltType>, SltError> {
        if let Some(out) = self.hook(sql).await? {
            return Ok(out);
        }
        if let Some(wire) = &self.wire {
            return wire.run(sql).await;
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
        let _ = self.close().await;
    }

    fn engine_name(&self) -> &str {
        "trafficdb"
    }
}

/// The `.slt` files in `tests/slt`, by name without the extension.
fn slt_files() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    files.sort();
    files
}

/// Runs (or, with `SLT_REWRITE`, rewrites) `tests/slt/<name>.slt` against a fresh database.
fn run_file(name: &str) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt").join(format!("{name}.slt"));
    let rewrite = std::env::var("SLT_REWRITE").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(!(rewrite && wire_mode()), "SLT_REWRITE writes what the library answers: run it without SLT_WIRE");
    let rt = crate::common::runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().to_path_buf();
    // Rows compare as whole lines with runs of blanks collapsed (an empty first cell on a plan's
    // continuation line must not leave a leading blank).
    fn validator(normalizer: sqllogictest::Normalizer, actual: &[Vec<String>], expected: &[String]) -> bool {
        let actual: Vec<String> = actual.iter().map(|r| normalizer(&r.join(" "))).collect();
        let expected: Vec<String> = expected.iter().map(normalizer).collect();
        actual == expected
    }
    let result = rt.block_on(async {
        let mut runner = sqllogictest::Runner::new(move || {
            let path = path.clone();
            async move { SltDb::open(&path).await }
        });
        runner.with_validator(validator);
        if rewrite {
            runner
                .update_test_file(
                    &file,
                    " ",
                    validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner.run_file_async(&file).await.map_err(|e| e.to_string())
        }
    });
    if let Err(e) = result {
        panic!("{name}.slt{}:\n{e}", if wire_mode() { " (through the wire server)" } else { "" });
    }
}

/// One test per file; [`every_slt_file_has_a_test`] keeps the list complete.
macro_rules! slt_tests {
    ($($name:ident),* $(,)?) => {
        const TESTED: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                run_file(stringify!($name));
            }
        )*
    };
}

slt_tests!(
    ddl,
    dml,
    dml_where,
    functions_anomaly,
    functions_detect,
    functions_gapfill,
    functions_pg,
    functions_sketch,
    functions_time,
    latest,
    lb_kpis,
    models,
    queries,
    restart,
    retention,
    rollups,
    row_filter,
    types,
);

#[test]
fn every_slt_file_has_a_test() {
    let files = slt_files();
    let missing: Vec<&String> = files.iter().filter(|f| !TESTED.contains(&f.as_str())).collect();
    let gone: Vec<&&str> = TESTED.iter().filter(|t| !files.iter().any(|f| f == *t)).collect();
    assert!(missing.is_empty(), "tests/slt files without a test (add them to slt_tests!): {missing:?}");
    assert!(gone.is_empty(), "tests without a file in tests/slt: {gone:?}");
}
