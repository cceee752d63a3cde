//! `POST /api/v1/query`: one SQL statement in, its rows out as JSON, CSV or Arrow IPC, streamed as they
//! are computed (the web console and scripts use it).
//!
//! The statement runs as it would on the PostgreSQL port: as the caller's role, checked on the plan
//! that runs (a reader cannot write, through `EXPLAIN ANALYZE` or a model-training call either), with
//! PostgreSQL's casts, in a memory pool of `query_memory_limit`, within the server's
//! `statement_timeout` (a request may ask for less; only an admin for more). Each request is a session
//! of its own, so `SET`, transactions, cursors and `COPY` are refused (0A000): they need the
//! PostgreSQL port. Closing the connection cancels the statement (its execution is dropped).
//!
//! The request is JSON (`{"sql": "...", "format": "json" | "csv" | "arrow", "timeout_ms": 5000,
//! "max_rows": 10000}`, only `sql` required) or the SQL itself as text; the same options may be given
//! as query parameters. An error found before the first row is an HTTP error with a JSON body
//! `{"error": ..., "sqlstate": ...}`; one found after it ends the stream: the JSON body then ends with
//! an `"error"` member, a CSV or Arrow body is cut short (the transfer does not complete).

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use trafficdb::arrow::array::RecordBatch;
use trafficdb::arrow::datatypes::{DataType, SchemaRef};
use trafficdb::arrow::error::ArrowError;
use trafficdb::arrow::json::writer::{EncoderOptions, make_encoder};
use trafficdb::{Error, Output, SqlState};

use super::{App, Caller, errors, parse_query};
use crate::security::access::{plan_role, statement_role};
use crate::security::roles::Role;
use crate::security::settings::allowed_timeout;

/// How the rows are written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    /// `{"columns": [...], "rows": [[...], ...], "row_count": n, "truncated": false, "elapsed_ms": t}`.
    Json,
    /// A header line, then a line per row (`text/csv`).
    Csv,
    /// An Arrow IPC stream (`application/vnd.apache.arrow.stream`).
    Arrow,
}

impl Format {
    fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "arrow" => Some(Format::Arrow),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// The JSON form of a request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    sql: String,
    format: Option<String>,
    timeout_ms: Option<u64>,
    max_rows: Option<u64>,
}

fn refuse(status: StatusCode, state: SqlState, message: impl Into<String>) -> Response {
    errors::error(errors::Shape::Api, status, state.code(), message)
}

/// The HTTP status of an error with SQLSTATE `code`.
fn status_of(code: &str) -> StatusCode {
    match code {
        c if c == SqlState::InsufficientPrivilege.code() => StatusCode::FORBIDDEN,
        c if c.starts_with("53") || c.starts_with("57") => StatusCode::SERVICE_UNAVAILABLE,
        c if c.starts_with("XX") || c.starts_with("58") => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn failure(e: &Error) -> Response {
    let code = e.sqlstate();
    errors::error(errors::Shape::Api, status_of(code), code, e.to_string())
}

fn timed_out() -> Error {
    Error::invalid(SqlState::QueryCanceled, "canceling statement due to statement timeout")
}

/// `POST /api/v1/query` (see the module documentation).
pub async fn query(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let request = match read_request(&headers, raw.as_deref().unwrap_or(""), &body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let format = match request.format.as_deref().map(Format::parse) {
        None => Format::Json,
        Some(Some(f)) => f,
        Some(None) => {
            return refuse(StatusCode::BAD_REQUEST, SqlState::InvalidParameter, "format must be json, csv or arrow");
        }
    };
    let cap = app.config.statement_timeout;
    let timeout = match request.timeout_ms.map(Duration::from_millis) {
        None => cap,
        Some(wanted) => match allowed_timeout(caller.role, cap, wanted) {
            Ok(t) => t,
            Err(message) => return refuse(StatusCode::FORBIDDEN, SqlState::InsufficientPrivilege, message),
        },
    };
    let deadline = (!timeout.is_zero()).then(|| started + timeout);
    let max_rows = request.max_rows.unwrap_or(u64::MAX);
    let ctx = crate::pgwire::session::connection_context(app.db.session(), app.config.query_memory_limit);
    app.metrics.http_queries.fetch_add(1, Ordering::Relaxed);
    let mut running = Running { app: app.clone(), ended: false };
    let run = start(&app, &caller, &ctx, &request.sql);
    let output = match deadline {
        Some(d) => tokio::time::timeout_at(d, run).await.unwrap_or_else(|_| Err(timed_out())),
        None => run.await,
    };
    let output = match output {
        Ok(o) => o,
        Err(e) => return running.failed(&e),
    };
    let (mut rows, command) = match output {
        Output::Done(tag) => {
            running.ended = true;
            let body = json!({ "command": tag, "columns": [], "rows": [], "row_count": 0, "truncated": false,
                               "elapsed_ms": elapsed_ms(started) });
            return errors::with_json(StatusCode::OK, body);
        }
        Output::Stream(s) => (s, None),
        Output::Returning { rows, command } => (rows, Some(command)),
    };
    // The first batch is awaited here, so that an error the execution meets at once (most do) is
    // answered with its HTTP status.
    let first = match next(&mut rows, deadline).await {
        Ok(b) => b,
        Err(e) => return running.failed(&e),
    };
    let schema = rows.schema();
    let writer = Writer::new(format, &schema, command);
    let state = Streaming { rows, first, writer, deadline, sent: 0, max_rows, started, running };
    let body = Body::from_stream(futures::stream::unfold(state, Streaming::step));
    ([(header::CONTENT_TYPE, format.content_type()), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// The request from its body (JSON, or the SQL as text) and query parameters (which take precedence).
fn read_request(headers: &HeaderMap, raw: &str, body: &[u8]) -> Result<Request, Box<Response>> {
    let bad = |state: SqlState, m: String| Box::new(refuse(StatusCode::BAD_REQUEST, state, m));
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    let mut request = if json {
        serde_json::from_slice::<Request>(body)
            .map_err(|e| bad(SqlState::InvalidParameter, format!("the body is not a query request: {e}")))?
    } else {
        let sql = std::str::from_utf8(body)
            .map_err(|_| bad(SqlState::CharacterNotInRepertoire, "the SQL is not UTF-8".into()))?;
        Request { sql: sql.to_string(), ..Request::default() }
    };
    let params = parse_query(raw);
    for (name, value) in &params {
        let number =
            || value.parse::<u64>().map_err(|_| bad(SqlState::InvalidParameter, format!("{name} must be a number")));
        match name.as_str() {
            "format" => request.format = Some(value.clone()),
            "timeout_ms" => request.timeout_ms = Some(number()?),
            "max_rows" => request.max_rows = Some(number()?),
            // Credentials of InfluxDB v1 style, read by the authentication.
            "u" | "p" => {}
            other => {
                return Err(bad(
                    SqlState::InvalidParameter,
                    format!("unknown parameter \"{other}\" (format, timeout_ms, max_rows)"),
                ));
            }
        }
    }
    if request.sql.trim().is_empty() {
        return Err(bad(SqlState::Syntax, "no SQL statement was given".into()));
    }
    Ok(request)
}

/// Parses, checks and starts the one statement of `sql`.
async fn start(app: &App, caller: &Caller, ctx: &SessionContext, sql: &str) -> Result<Output, Error> {
    let mut statements = match trafficdb::database::parse(sql) {
        Ok(s) => s,
        // DataFusion's parser knows `COPY ... TO` only: a `COPY ... FROM` is found by sqlparser's.
        Err(e) => match Parser::parse_sql(&PostgreSqlDialect {}, sql).as_deref() {
            Ok([s]) if session_bound(s).is_some() => return Err(not_over_http(s)),
            _ => return Err(e),
        },
    };
    if statements.len() != 1 {
        return Err(Error::invalid(
            SqlState::Syntax,
            format!("send one statement per request (found {})", statements.len()),
        ));
    }
    let statement = statements.remove(0);
    if let DFStatement::Statement(s) = &statement
        && session_bound(s).is_some()
    {
        return Err(not_over_http(s));
    }
    let decided = match &statement {
        DFStatement::Statement(s) => statement_role(s),
        DFStatement::CreateExternalTable(_) => Some(Role::Admin),
        _ => None,
    };
    if let Some(need) = decided {
        permit(app, caller, need, sql)?;
        return app.db.execute_in(ctx, statement).await;
    }
    let plan = match app.db.plan_dml(&ctx.state(), &statement).await? {
        Some(plan) => plan,
        None => ctx.state().statement_to_plan(statement).await?,
    };
    permit(app, caller, plan_role(&plan), sql)?;
    trafficdb::database::run_plan(ctx, plan).await
}

fn not_over_http(s: &Statement) -> Error {
    let what = session_bound(s).unwrap_or("this statement");
    Error::invalid(
        SqlState::NotSupported,
        format!(
            "{what} is not available over HTTP, where each request is a session of its own: use the PostgreSQL port"
        ),
    )
}

/// What a statement that needs a session of its own is called, if it is one.
fn session_bound(s: &Statement) -> Option<&'static str> {
    Some(match s {
        Statement::Set(_) | Statement::Reset(_) => "SET / RESET",
        Statement::Copy { .. } => "COPY",
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => "a transaction",
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => "a cursor",
        Statement::Prepare { .. } | Statement::Execute { .. } | Statement::Deallocate { .. } => "a prepared statement",
        Statement::Discard { .. } => "DISCARD",
        _ => return None,
    })
}

/// The role check of the PostgreSQL port ([`crate::security::audit::Audit::permit`]), answered 42501.
fn permit(app: &App, caller: &Caller, need: Role, sql: &str) -> Result<(), Error> {
    app.audit
        .permit(&caller.user, caller.role, need, || sql.to_string(), true)
        .map_err(|message| Error::invalid(SqlState::InsufficientPrivilege, message))
}

/// The next batch of `rows` (`None` at the end), unless the deadline passes first.
async fn next(rows: &mut SendableRecordBatchStream, deadline: Option<Instant>) -> Result<Option<RecordBatch>, Error> {
    let batch = match deadline {
        Some(d) => tokio::time::timeout_at(d, rows.next()).await.map_err(|_| timed_out())?,
        None => rows.next().await,
    };
    batch.transpose().map_err(Error::from)
}

fn elapsed_ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// A response body being streamed: the rows still to come and how they are written.
struct Streaming {
    rows: SendableRecordBatchStream,
    /// The batch read before the response started, not yet written.
    first: Option<RecordBatch>,
    writer: Writer,
    deadline: Option<Instant>,
    sent: u64,
    max_rows: u64,
    started: Instant,
    running: Running,
}

impl Streaming {
    /// The next piece of the body: the rows of a batch, then the end.
    async fn step(mut self) -> Option<(Result<Bytes, std::io::Error>, Streaming)> {
        if self.running.ended {
            return None;
        }
        let batch = match self.first.take() {
            Some(b) => Ok(Some(b)),
            None if self.sent >= self.max_rows => Ok(None),
            None => next(&mut self.rows, self.deadline).await,
        };
        let mut out = Vec::new();
        let piece = match batch {
            Ok(Some(batch)) => {
                let room = usize::try_from(self.max_rows - self.sent).unwrap_or(usize::MAX);
                let batch = if batch.num_rows() > room { batch.slice(0, room) } else { batch };
                self.sent += batch.num_rows() as u64;
                self.writer.rows(&batch, &mut out).map_err(Error::from)
            }
            Ok(None) => {
                self.running.ended = true;
                let truncated = self.sent >= self.max_rows && self.max_rows != u64::MAX;
                let end =
                    json!({ "row_count": self.sent, "truncated": truncated, "elapsed_ms": elapsed_ms(self.started) });
                self.writer.end(end, &mut out).map_err(Error::from)
            }
            Err(e) => Err(e),
        };
        match piece {
            Ok(()) => Some((Ok(Bytes::from(out)), self)),
            Err(e) => {
                self.running.ended = true;
                self.running.app.metrics.http_query_errors.fetch_add(1, Ordering::Relaxed);
                if self.writer.format == Format::Json {
                    // The error ends the JSON document; the other formats have no place for it.
                    let end = json!({ "row_count": self.sent, "error": e.to_string(), "sqlstate": e.sqlstate() });
                    let mut out = Vec::new();
                    return match self.writer.end(end, &mut out) {
                        Ok(()) => Some((Ok(Bytes::from(out)), self)),
                        Err(w) => Some((Err(std::io::Error::other(w.to_string())), self)),
                    };
                }
                Some((Err(std::io::Error::other(e.to_string())), self))
            }
        }
    }
}

/// A statement from its arrival until its last row or error: dropped before that, the client went
/// away (the connection closed) and the statement's execution is dropped with it.
struct Running {
    app: App,
    ended: bool,
}

impl Running {
    fn failed(mut self, e: &Error) -> Response {
        self.ended = true;
        self.app.metrics.http_query_errors.fetch_add(1, Ordering::Relaxed);
        failure(e)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.ended {
            self.app.metrics.http_queries_cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes rows in a [`Format`].
struct Writer {
    format: Format,
    schema: SchemaRef,
    /// The JSON head (columns), until the first piece is written.
    head: Option<Vec<u8>>,
    rows_written: bool,
    arrow: Option<trafficdb::arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

impl Writer {
    fn new(format: Format, schema: &SchemaRef, command: Option<&'static str>) -> Writer {
        let head = match format {
            Format::Json => {
                let columns: Vec<Value> = schema
                    .fields()
                    .iter()
                    .map(
                        |f| json!({ "name": f.name(), "type": f.data_type().to_string(), "kind": kind(f.data_type()) }),
                    )
                    .collect();
                let mut head = json!({ "columns": columns });
                if let Some(c) = command {
                    head["command"] = json!(c);
                }
                // `{"columns": [...], ...` left open for the rows.
                let mut text = head.to_string().into_bytes();
                text.pop();
                text.extend_from_slice(b",\"rows\":[\n");
                Some(text)
            }
            Format::Csv => {
                let names: Vec<String> = schema.fields().iter().map(|f| csv_field(f.name())).collect();
                Some(format!("{}\n", names.join(",")).into_bytes())
            }
            Format::Arrow => None,
        };
        Writer { format, schema: schema.clone(), head, rows_written: false, arrow: None }
    }

    fn rows(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        if let Some(head) = self.head.take() {
            out.extend_from_slice(&head);
        }
        match self.format {
            Format::Json => json_rows(batch, &mut self.rows_written, out),
            Format::Csv => {
                let mut w = trafficdb::arrow::csv::WriterBuilder::new().with_header(false).build(&mut *out);
                w.write(batch)
            }
            Format::Arrow => {
                let w = match &mut self.arrow {
                    Some(w) => w,
                    None => self
                        .arrow
                        .insert(trafficdb::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &self.schema)?),
                };
                w.write(batch)?;
                out.append(w.get_mut());
                Ok(())
            }
        }
    }

    /// The end of the body; for JSON, the members of `end` close the document.
    fn end(&mut self, end: Value, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        if let Some(head) = self.head.take() {
            out.extend_from_slice(&head);
        }
        match self.format {
            Format::Json => {
                out.extend_from_slice(b"]");
                if let Value::Object(members) = end {
                    for (k, v) in members {
                        out.extend_from_slice(format!(",{}:{}", Value::String(k), v).as_bytes());
                    }
                }
                out.extend_from_slice(b"}\n");
            }
            Format::Csv => {}
            Format::Arrow => {
                let mut w = match self.arrow.take() {
                    Some(w) => w,
                    None => trafficdb::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &self.schema)?,
                };
                w.finish()?;
                out.append(w.get_mut());
            }
        }
        Ok(())
    }
}

/// What a console does with a column: `time`, `number`, `text`, `bool` or `other`.
fn kind(t: &DataType) -> &'static str {
    match t {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => "time",
        t if t.is_numeric() => "number",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            "text"
        }
        DataType::Boolean => "bool",
        _ => "other",
    }
}

/// A CSV header field: quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The rows of `batch` as JSON arrays, comma-separated (and after earlier rows when `written`).
fn json_rows(batch: &RecordBatch, written: &mut bool, out: &mut Vec<u8>) -> Result<(), ArrowError> {
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let schema = batch.schema();
    let mut encoders = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| make_encoder(f, a.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    for r in 0..batch.num_rows() {
        // A row per line, ended as soon as the row is written: a reader may take rows as they come, a
        // line at a time (a comma starts every row line but the first).
        if *written {
            out.push(b',');
        }
        *written = true;
        out.push(b'[');
        for (c, e) in encoders.iter_mut().enumerate() {
            if c > 0 {
                out.push(b',');
            }
            if e.is_null(r) {
                out.extend_from_slice(b"null");
            } else {
                trafficdb::arrow::json::writer::Encoder::encode(e, r, out);
            }
        }
        out.extend_from_slice(b"]\n");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use trafficdb::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use trafficdb::arrow::datatypes::{Field, Schema, TimeUnit};

    #[test]
    fn rows_are_json_arrays_with_nulls_and_text_escaped() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(Float64Array::from(vec![Some(0.5), Some(f64::NAN)])),
            Arc::new(StringArray::from(vec![Some("<script>\"q\"</script>"), None])),
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1_704_067_200_019_585), None])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
        let mut w = Writer::new(Format::Json, &schema, None);
        let mut out = Vec::new();
        w.rows(&batch, &mut out).expect("rows");
        w.rows(&batch.slice(0, 1), &mut out).expect("rows");
        w.end(json!({ "row_count": 3 }), &mut out).expect("end");
        let v: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["columns"][3], json!({ "name": "t", "type": "Timestamp(µs)", "kind": "time" }));
        assert_eq!(v["rows"][0], json!([1, 0.5, "<script>\"q\"</script>", "2024-01-01T00:00:00.019585"]));
        assert_eq!(v["rows"][1], json!([null, null, null, null]));
        assert_eq!(v["rows"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["row_count"], 3);
        // A row per line: the head, each row (a comma before all but the first), the end.
        let text = String::from_utf8(out).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].ends_with("\"rows\":["), "{}", lines[0]);
        for (i, line) in lines[1..4].iter().enumerate() {
            let row = line.strip_prefix(',').filter(|_| i > 0).unwrap_or(line);
            assert_eq!(serde_json::from_str::<Value>(row).expect("a row"), v["rows"][i]);
        }
        assert_eq!(lines[4], "],\"row_count\":3}");
    }

    #[test]
    fn no_rows_is_still_a_document() {
        let schema = Arc::new(Schema::new(vec![Field::new("a,b", DataType::Utf8, true)]));
        let mut out = Vec::new();
        Writer::new(Format::Json, &schema, Some("DELETE")).end(json!({ "row_count": 0 }), &mut out).expect("end");
        let v: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["rows"], json!([]));
        assert_eq!(v["command"], "DELETE");
        let mut out = Vec::new();
        Writer::new(Format::Csv, &schema, None).end(json!({}), &mut out).expect("end");
        assert_eq!(out, b"\"a,b\"\n");
    }
}
