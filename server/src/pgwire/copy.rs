//! `COPY t [(columns)] FROM STDIN` (text and CSV) and `COPY t | (query) TO STDOUT`.
//!
//! COPY FROM parses rows as they arrive into Arrow batches of the table's types (so a bad value is found
//! at once and reported with its line and column), keeps them, and appends them all as one transaction
//! when the client sends CopyDone: a COPY is all rows or none, durable when `COPY n` is answered.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use futures::{Sink, SinkExt};
use parking_lot::Mutex;
use pgwire::api::ClientInfo;
use pgwire::api::copy::CopyHandler;
use pgwire::api::results::{CopyResponse, Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use trafficdb::Database;
use trafficdb::engine::Table;

use crate::pgwire::gate::Gate;
use crate::pgwire::results::{engine_error, pg_error, user_error};
use trafficdb::SqlState;

/// Rows per Arrow batch built from COPY input.
const BATCH_ROWS: usize = 65_536;

/// The longest line (record) of a COPY FROM STDIN; a longer one fails the COPY with 54000.
const MAX_LINE: usize = 64 << 20;

#[derive(Debug, Clone)]
struct Format {
    csv: bool,
    delimiter: u8,
    null: String,
    header: bool,
    quote: u8,
    escape: u8,
}

impl Format {
    fn from_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> PgWireResult<Format> {
        let mut csv = false;
        let (mut delimiter, mut null, mut header, mut quote, mut escape) = (None, None, false, b'"', None);
        let one_byte = |c: char, what: &str| -> PgWireResult<u8> {
            u8::try_from(c as u32).ok().filter(|b| b.is_ascii()).ok_or_else(|| {
                user_error(SqlState::InvalidParameter, format!("COPY {what} must be a single one-byte character"))
            })
        };
        for o in options {
            match o {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "text" => csv = false,
                    "csv" => csv = true,
                    other => {
                        return Err(user_error(
                            SqlState::NotSupported,
                            format!("COPY format \"{other}\" is not supported (text, csv)"),
                        ));
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "delimiter")?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = one_byte(*c, "quote")?,
                CopyOption::Escape(c) => escape = Some(one_byte(*c, "escape")?),
                CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                other => {
                    return Err(user_error(SqlState::NotSupported, format!("COPY option {other} is not supported")));
                }
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Csv(opts) => {
                    csv = true;
                    for c in opts {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => quote = one_byte(*q, "quote")?,
                            CopyLegacyCsvOption::Escape(e) => escape = Some(one_byte(*e, "escape")?),
                            other => {
                                return Err(user_error(
                                    SqlState::NotSupported,
                                    format!("COPY option {other} is not supported"),
                                ));
                            }
                        }
                    }
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                other => {
                    return Err(user_error(SqlState::NotSupported, format!("COPY option {other} is not supported")));
                }
            }
        }
        Ok(Format {
            csv,
            delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
            header,
            quote,
            escape: escape.unwrap_or(quote),
        })
    }
}

/// An in-progress COPY FROM STDIN of one connection.
struct CopyIn {
    table: Arc<Table>,
    /// Names of the columns the input holds, in input order.
    columns: Vec<String>,
    format: Format,
    buf: Vec<u8>,
    /// Where the search for the end of the record at the start of `buf` has got.
    scan: Scan,
    /// The rows held until the COPY ends, accounted in the session's memory pool.
    memory: MemoryReservation,
    /// Lines consumed so far (for error messages).
    line: usize,
    skip_header: bool,
    builders: Vec<StringBuilder>,
    /// The fields of the record being parsed (see `split`), reused from row to row.
    scratch: Vec<u8>,
    spans: Vec<Option<(usize, usize)>>,
    pending_rows: usize,
    /// Line number of the first pending row.
    pending_first_line: usize,
    batches: Vec<RecordBatch>,
    rows: u64,
    error: Option<PgWireError>,
    finished: bool,
}

/// The per-connection slot holding a COPY in progress.
#[derive(Default)]
struct CopySlot(Mutex<Option<CopyIn>>);

/// A text-format field appended to `out`: `\N` (or the NULL string) is NULL (nothing appended),
/// backslash escapes are decoded.
fn text_field(raw: &[u8], null: &str, out: &mut Vec<u8>) -> Option<()> {
    if raw == null.as_bytes() {
        return None;
    }
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'\\' && i + 1 < raw.len() {
            i += 1;
            let c = raw[i];
            match c {
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(11),
                b'0'..=b'7' => {
                    let mut v: u32 = 0;
                    let mut n = 0;
                    while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                        v = v * 8 + (raw[i] - b'0') as u32;
                        i += 1;
                        n += 1;
                    }
                    out.push(v as u8);
                    continue;
                }
                b'x' if i + 1 < raw.len() && raw[i + 1].is_ascii_hexdigit() => {
                    let mut v: u32 = 0;
                    let mut n = 0;
                    i += 1;
                    while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                        v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                        i += 1;
                        n += 1;
                    }
                    out.push(v as u8);
                    continue;
                }
                other => out.push(other),
            }
            i += 1;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(())
}

/// How far the search for the end of the current record has got: `pos` in the buffer, and whether
/// it is inside a quoted CSV field there. Each byte is looked at once, however the data is split
/// into CopyData messages (a record that arrives a byte at a time is not scanned again per byte).
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    pos: usize,
    in_quotes: bool,
}

/// The end of the record that starts at or before `scan.pos`, and where the record after it starts;
/// `None` when the buffer holds no whole record yet (`scan` then says where to go on from).
fn next_record(format: &Format, buf: &[u8], scan: &mut Scan) -> Option<(usize, usize)> {
    if !format.csv {
        return match buf[scan.pos..].iter().position(|&c| c == b'\n') {
            Some(nl) => Some((scan.pos + nl, scan.pos + nl + 1)),
            None => {
                scan.pos = buf.len();
                None
            }
        };
    }
    let mut i = scan.pos;
    while i < buf.len() {
        let c = buf[i];
        if scan.in_quotes {
            if c == format.escape && format.escape != format.quote {
                if i + 1 >= buf.len() {
                    break; // the escaped byte has not arrived
                }
                i += 2;
                continue;
            }
            if c == format.quote {
                if format.escape == format.quote {
                    match buf.get(i + 1) {
                        None => break, // a doubled quote or the closing one: the next byte decides
                        Some(&n) if n == format.quote => {
                            i += 2;
                            continue;
                        }
                        Some(_) => {}
                    }
                }
                scan.in_quotes = false;
            }
        } else if c == format.quote {
            scan.in_quotes = true;
        } else if c == b'\n' {
            return Some((i, i + 1));
        }
        i += 1;
    }
    scan.pos = i;
    None
}

impl CopyIn {
    fn fail(&mut self, code: SqlState, msg: String) {
        if self.error.is_none() {
            self.error =
                Some(user_error(code, format!("{msg}\nCONTEXT:  COPY {}, line {}", self.table.name(), self.line)));
        }
    }

    /// Splits one record into fields, written one after another into `self.scratch`: `self.spans[i]` is
    /// field i's byte range there, or `None` for NULL. Nothing is allocated per row.
    fn split(&mut self, rec: &[u8]) {
        let rec = rec.strip_suffix(b"\r").unwrap_or(rec);
        let f = &self.format;
        let (scratch, spans) = (&mut self.scratch, &mut self.spans);
        scratch.clear();
        spans.clear();
        if !f.csv {
            for raw in rec.split(|&c| c == f.delimiter) {
                let start = scratch.len();
                spans.push(text_field(raw, &f.null, scratch).map(|()| (start, scratch.len())));
            }
            return;
        }
        let mut i = 0;
        loop {
            let start = scratch.len();
            let mut quoted = false;
            if rec.get(i) == Some(&f.quote) {
                quoted = true;
                i += 1;
                while i < rec.len() {
                    let c = rec[i];
                    if c == f.escape
                        && rec.get(i + 1).is_some_and(|&n| n == f.quote || (f.escape != f.quote && n == f.escape))
                    {
                        scratch.push(rec[i + 1]);
                        i += 2;
                    } else if c == f.quote {
                        i += 1;
                        break;
                    } else {
                        scratch.push(c);
                        i += 1;
                    }
                }
            }
            let rest = rec[i..].iter().position(|&c| c == f.delimiter).map_or(rec.len(), |p| i + p);
            scratch.extend_from_slice(&rec[i..rest]);
            i = rest;
            let null = !quoted && &scratch[start..] == f.null.as_bytes();
            spans.push((!null).then_some((start, scratch.len())));
            if i >= rec.len() {
                break;
            }
            i += 1; // the delimiter
        }
    }

    /// Parses every complete record in the buffer.
    fn consume(&mut self) {
        // The buffer is taken out while its records are parsed, so they need not be copied.
        let buf = std::mem::take(&mut self.buf);
        let mut start = 0;
        while self.error.is_none() && !self.finished {
            let Some((end, next)) = next_record(&self.format, &buf, &mut self.scan) else {
                if buf.len() - start > MAX_LINE {
                    self.line += 1;
                    self.fail(
                        SqlState::ProgramLimitExceeded,
                        format!("a COPY line is longer than {} MiB", MAX_LINE >> 20),
                    );
                }
                break;
            };
            self.scan = Scan { pos: next, in_quotes: false };
            self.line += 1;
            let rec = &buf[start..end];
            start = next;
            if !self.format.csv && (rec == b"\\." || rec == b"\\.\r") {
                self.finished = true;
                break;
            }
            if self.skip_header {
                self.skip_header = false;
                continue;
            }
            self.push_record(rec);
        }
        self.buf = buf;
        self.buf.drain(..start);
        self.scan.pos -= start.min(self.scan.pos);
    }

    fn push_record(&mut self, rec: &[u8]) {
        self.split(rec);
        let n = self.spans.len();
        if n != self.columns.len() {
            let msg = if n < self.columns.len() {
                format!("missing data for column \"{}\"", self.columns[n])
            } else {
                "extra data after last expected column".to_string()
            };
            return self.fail(SqlState::BadCopyFileFormat, msg);
        }
        if self.pending_rows == 0 {
            self.pending_first_line = self.line;
        }
        for i in 0..n {
            match self.spans[i] {
                None => self.builders[i].append_null(),
                Some((start, end)) => match std::str::from_utf8(&self.scratch[start..end]) {
                    Ok(s) => self.builders[i].append_value(s),
                    Err(_) => {
                        return self.fail(
                            SqlState::CharacterNotInRepertoire,
                            format!("invalid byte sequence for encoding \"UTF8\" in column \"{}\"", self.columns[i]),
                        );
                    }
                },
            }
        }
        self.pending_rows += 1;
        if self.pending_rows >= BATCH_ROWS {
            self.seal_batch();
        }
    }

    /// Turns the pending rows into a batch of the table's types, checking every value.
    fn seal_batch(&mut self) {
        if self.pending_rows == 0 || self.error.is_some() {
            return;
        }
        let fields: Vec<Field> = self.columns.iter().map(|c| Field::new(c, DataType::Utf8, true)).collect();
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        let n = self.pending_rows;
        self.pending_rows = 0;
        let batch = match RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays) {
            Ok(b) => b,
            Err(e) => return self.fail(SqlState::Internal, e.to_string()),
        };
        match trafficdb::types::coerce_batch_numbered(
            &self.table.def,
            &self.table.schema,
            &batch,
            self.pending_first_line,
        ) {
            Ok(b) => {
                if let Err(e) = self.memory.try_grow(b.get_array_memory_size()) {
                    let msg = format!(
                        "COPY holds its rows until it ends, and these need more memory than the session may use \
                         (query_memory_limit); send them in several COPY statements ({e})"
                    );
                    return self.fail(SqlState::OutOfMemory, msg);
                }
                self.rows += n as u64;
                self.batches.push(b);
            }
            Err(e) => {
                self.error = Some(engine_error(&e, format!("{e}\nCONTEXT:  COPY {}", self.table.name())));
            }
        }
    }
}

/// Starts a `COPY ... FROM STDIN` or runs a `COPY ... TO STDOUT`; `None` for other statements.
pub async fn handle(
    db: &Arc<Database>,
    gate: &Gate,
    ctx: &SessionContext,
    stmt: &Statement,
    client: &(dyn ClientInfo + Send + Sync),
) -> Option<PgWireResult<Response>> {
    let Statement::Copy { source, to, target, options, legacy_options, .. } = stmt else { return None };
    Some(match (to, target) {
        (false, CopyTarget::Stdin) => start_copy_in(db, ctx, source, options, legacy_options, client),
        (true, CopyTarget::Stdout) => copy_out(gate, ctx, stmt, source, options, legacy_options, client).await,
        _ => Err(user_error(
            SqlState::NotSupported,
            "COPY supports FROM STDIN and TO STDOUT (use psql's \\copy for files)".into(),
        )),
    })
}

pub fn is_copy(stmt: &Statement) -> bool {
    matches!(stmt, Statement::Copy { target: CopyTarget::Stdin | CopyTarget::Stdout, .. })
}

fn start_copy_in(
    db: &Database,
    ctx: &SessionContext,
    source: &CopySource,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
    client: &(dyn ClientInfo + Send + Sync),
) -> PgWireResult<Response> {
    let CopySource::Table { table_name, columns } = source else {
        return Err(user_error(SqlState::Syntax, "COPY FROM needs a table, not a query".into()));
    };
    let name = table_name.to_string();
    let name = name.strip_prefix("public.").unwrap_or(&name).to_string();
    let table = db
        .engine()
        .table(&name)
        .ok_or_else(|| user_error(SqlState::UndefinedTable, format!("relation \"{name}\" does not exist")))?;
    let columns: Vec<String> = if columns.is_empty() {
        table.def.columns.iter().map(|c| c.name.clone()).collect()
    } else {
        let mut v = Vec::new();
        for c in columns {
            let n = if c.quote_style.is_some() { c.value.clone() } else { c.value.to_lowercase() };
            if table.def.column_index(&n).is_none() {
                return Err(user_error(
                    SqlState::UndefinedColumn,
                    format!("column \"{n}\" of relation \"{name}\" does not exist"),
                ));
            }
            v.push(n);
        }
        v
    };
    let format = Format::from_options(options, legacy)?;
    let ncols = columns.len();
    let memory = MemoryConsumer::new(format!("COPY {name} FROM STDIN")).register(&ctx.runtime_env().memory_pool);
    let state = CopyIn {
        builders: (0..ncols).map(|_| StringBuilder::new()).collect(),
        scratch: Vec::new(),
        spans: Vec::new(),
        skip_header: format.header,
        table,
        columns,
        format,
        buf: Vec::new(),
        scan: Scan::default(),
        memory,
        line: 0,
        pending_rows: 0,
        pending_first_line: 1,
        batches: Vec::new(),
        rows: 0,
        error: None,
        finished: false,
    };
    let slot = client.session_extensions().get_or_insert_with(CopySlot::default);
    *slot.0.lock() = Some(state);
    Ok(Response::CopyIn(CopyResponse::new(0, ncols, futures::stream::empty())))
}

/// Formats values as COPY text or CSV.
fn encode_rows(batches: &[RecordBatch], format: &Format, header: Option<&[String]>) -> PgWireResult<Vec<CopyData>> {
    let options = trafficdb::types::display_options("");
    let delim = format.delimiter as char;
    let escape_text = |s: &str, out: &mut String| {
        for ch in s.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c == delim => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
    };
    let quote = format.quote as char;
    let csv_field = |s: &str, out: &mut String| {
        let needs = s.is_empty()
            || s.contains(delim)
            || s.contains(quote)
            || s.contains('\n')
            || s.contains('\r')
            || s == format.null;
        if needs {
            out.push(quote);
            for ch in s.chars() {
                if ch == quote {
                    out.push(format.escape as char);
                }
                out.push(ch);
            }
            out.push(quote);
        } else {
            out.push_str(s);
        }
    };
    let mut out = Vec::new();
    let mut pending_header = header.map(|h| {
        let mut line = String::new();
        for (i, name) in h.iter().enumerate() {
            if i > 0 {
                line.push(delim);
            }
            if format.csv { csv_field(name, &mut line) } else { escape_text(name, &mut line) }
        }
        line.push('\n');
        line
    });
    for b in batches {
        let fmts =
            trafficdb::types::formatters(b, &options).map_err(|e| user_error(SqlState::Internal, e.to_string()))?;
        for r in 0..b.num_rows() {
            let mut line = pending_header.take().unwrap_or_default();
            for (i, (f, col)) in fmts.iter().zip(b.columns()).enumerate() {
                if i > 0 {
                    line.push(delim);
                }
                if col.is_null(r) {
                    line.push_str(&format.null);
                    continue;
                }
                let v = if col.data_type() == &DataType::Boolean {
                    if f.value(r).to_string() == "true" { "t".to_string() } else { "f".to_string() }
                } else {
                    f.value(r).to_string()
                };
                if format.csv { csv_field(&v, &mut line) } else { escape_text(&v, &mut line) }
            }
            line.push('\n');
            out.push(CopyData::new(line.into_bytes().into()));
        }
    }
    if let Some(h) = pending_header {
        out.push(CopyData::new(h.into_bytes().into()));
    }
    Ok(out)
}

/// `COPY table TO STDOUT` / `COPY (query) TO STDOUT`: the query runs in the session (its memory
/// limit, its role checked on the plan) and its rows are sent batch by batch as they come.
async fn copy_out(
    gate: &Gate,
    ctx: &SessionContext,
    stmt: &Statement,
    source: &CopySource,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
    client: &(dyn ClientInfo + Send + Sync),
) -> PgWireResult<Response> {
    use futures::StreamExt;
    let format = Format::from_options(options, legacy)?;
    let query = match source {
        CopySource::Table { table_name, columns } => {
            let cols = if columns.is_empty() {
                "*".to_string()
            } else {
                columns.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
            };
            // Built from the statement's own (printed) names: the query of the same parse.
            let sql = format!("SELECT {cols} FROM {table_name}");
            let parsed = datafusion::sql::sqlparser::parser::Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_query())
                .map_err(|e| user_error(SqlState::Syntax, e.to_string()))?;
            *parsed
        }
        CopySource::Query(q) => (**q).clone(),
    };
    let plan = gate.checked_query_plan(ctx, &query, stmt, client).await?;
    let names: Vec<String> = plan.schema().fields().iter().map(|f| f.name().clone()).collect();
    let ncols = names.len();
    let df = ctx.execute_logical_plan(plan).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let batches = df.execute_stream().await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let header = if format.header { encode_rows(&[], &format, Some(&names))? } else { Vec::new() };
    let rows = batches.flat_map(move |batch| {
        let lines = match batch {
            Ok(b) => {
                encode_rows(&[b], &format, None).map_or_else(|e| vec![Err(e)], |v| v.into_iter().map(Ok).collect())
            }
            Err(e) => vec![Err(PgWireError::ApiError(Box::new(e)))],
        };
        futures::stream::iter(lines)
    });
    let data = futures::stream::iter(header.into_iter().map(Ok)).chain(rows);
    Ok(Response::CopyOut(CopyResponse::new(0, ncols, data)))
}

/// The pgwire copy handler.
pub struct Copier {
    pub db: Arc<Database>,
}

#[async_trait::async_trait]
impl CopyHandler for Copier {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = client.session_extensions().get_or_insert_with(CopySlot::default);
        let mut guard = slot.0.lock();
        if let Some(state) = guard.as_mut()
            && state.error.is_none()
            && !state.finished
        {
            state.buf.extend_from_slice(&copy_data.data);
            state.consume();
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = client.session_extensions().get_or_insert_with(CopySlot::default);
        let Some(mut state) = slot.0.lock().take() else {
            return Err(user_error(SqlState::ProtocolViolation, "CopyDone without a COPY in progress".into()));
        };
        // A last line without a newline.
        if !state.buf.is_empty() && state.error.is_none() && !state.finished {
            state.buf.push(b'\n');
            state.consume();
        }
        state.seal_batch();
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        let (table, batches, rows) = (state.table.clone(), std::mem::take(&mut state.batches), state.rows);
        let engine = self.db.engine().clone();
        tokio::task::spawn_blocking(move || engine.append(&table, &batches))
            .await
            .map_err(|e| user_error(SqlState::Internal, e.to_string()))?
            .map_err(pg_error)?;
        client.send(PgWireBackendMessage::CommandComplete(Tag::new("COPY").with_rows(rows as usize).into())).await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = client.session_extensions().get_or_insert_with(CopySlot::default);
        slot.0.lock().take();
        user_error(SqlState::QueryCanceled, format!("COPY from stdin failed: {}", fail.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of `chunks` as `CopyIn::consume` finds them, a chunk at a time.
    fn records(format: &Format, chunks: &[&[u8]]) -> Vec<String> {
        let (mut buf, mut scan, mut out) = (Vec::new(), Scan::default(), Vec::new());
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            let mut start = 0;
            while let Some((end, next)) = next_record(format, &buf, &mut scan) {
                out.push(String::from_utf8_lossy(&buf[start..end]).to_string());
                start = next;
                scan = Scan { pos: next, in_quotes: false };
            }
            buf.drain(..start);
            scan.pos -= start;
        }
        out
    }

    #[test]
    fn records_split_anywhere_are_found_once_and_the_same() {
        let csv =
            |escape: u8| Format { csv: true, delimiter: b',', null: String::new(), header: false, quote: b'"', escape };
        let text =
            Format { csv: false, delimiter: b'\t', null: "\\N".into(), header: false, quote: b'"', escape: b'"' };
        let input: &[u8] = b"1,\"a\nb\",\"say \"\"hi\"\"\"\n2,\"\"\"\"\n3,\"x\\\"y\n\",z\n4,plain\n";
        for format in [csv(b'"'), csv(b'\\'), text.clone()] {
            let whole = records(&format, &[input]);
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(records(&format, &bytes), whole, "byte by byte, {format:?}");
            for at in 0..input.len() {
                assert_eq!(records(&format, &[&input[..at], &input[at..]]), whole, "split at {at}, {format:?}");
            }
        }
        assert_eq!(records(&csv(b'\\'), &[input]).len(), 4);
        assert_eq!(records(&csv(b'"'), &[input]).len(), 3, "with \" as the escape, the last quote opens a field");
        assert_eq!(records(&text, &[input]).len(), 6);
    }
}
