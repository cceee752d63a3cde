//! `COPY t [(columns)] FROM STDIN` (text and CSV) and `COPY t | (query) TO STDOUT`.
//!
//! COPY FROM parses rows as they arrive into Arrow batches of the table's types (so a bad value is found
//! at once and reported with its line and column; the decoding is `crate::ingest::copy_format`) and
//! pushes them into a bulk load ([`trafficdb::engine::BulkLoad`]), which writes segments as it fills and
//! publishes them as one transaction when the client sends CopyDone: a COPY is all rows or none,
//! durable when `COPY n` is answered.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement};
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

use crate::ingest::copy_format::{CopyDecoder, CopyError, Format};
use crate::pgwire::gate::Gate;
use crate::pgwire::output::{Settings, TextColumn};
use crate::pgwire::results::{engine_error, pg_error, user_error};
use trafficdb::SqlState;

/// The per-connection slot holding a COPY in progress.
#[derive(Default)]
struct CopySlot(Mutex<Option<CopyDecoder>>);

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
    let format = Format::from_options(options, legacy).map_err(pg_error)?;
    let ncols = columns.len();
    let memory = MemoryConsumer::new(format!("COPY {name} FROM STDIN")).register(&ctx.runtime_env().memory_pool);
    let load = db.engine().bulk_load(&table).map_err(pg_error)?;
    let state = CopyDecoder::new(load, columns, format, memory);
    let slot = client.session_extensions().get_or_insert_with(CopySlot::default);
    *slot.0.lock() = Some(state);
    Ok(Response::CopyIn(CopyResponse::new(0, ncols, futures::stream::empty())))
}

/// Formats values as COPY text or CSV: each value in its type's PostgreSQL output format
/// ([`crate::pgwire::output`]), then escaped or quoted.
fn encode_rows(
    batches: &[RecordBatch],
    format: &Format,
    header: Option<&[String]>,
    settings: &Settings,
) -> PgWireResult<Vec<CopyData>> {
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
    let mut value = bytes::BytesMut::new();
    for b in batches {
        // Arrow's display for the types without a PostgreSQL output function here.
        let fmts =
            trafficdb::types::formatters(b, &options).map_err(|e| user_error(SqlState::Internal, e.to_string()))?;
        let texts: Vec<Option<TextColumn<'_>>> =
            b.columns().iter().map(|c| TextColumn::new(c.as_ref(), settings)).collect();
        for r in 0..b.num_rows() {
            let mut line = pending_header.take().unwrap_or_default();
            for (i, ((f, text), col)) in fmts.iter().zip(&texts).zip(b.columns()).enumerate() {
                if i > 0 {
                    line.push(delim);
                }
                if col.is_null(r) || text.as_ref().is_some_and(|t| t.is_null(r)) {
                    line.push_str(&format.null);
                    continue;
                }
                let v = match text {
                    Some(t) => {
                        value.clear();
                        t.write(r, &mut value)?;
                        String::from_utf8_lossy(&value).into_owned()
                    }
                    None => f.value(r).to_string(),
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
    let format = Format::from_options(options, legacy).map_err(pg_error)?;
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
        // Named and rewritten as a query sent alone is (`COPY (SELECT 1, 1) TO ...`, PostgreSQL's forms).
        CopySource::Query(q) => match crate::pgwire::rewrite::substitute(&Statement::Query(q.clone())) {
            Some(Statement::Query(named)) => *named,
            _ => (**q).clone(),
        },
    };
    let plan = gate.checked_query_plan(ctx, &query, stmt, client).await?;
    let names: Vec<String> =
        plan.schema().fields().iter().map(|f| crate::pgwire::names::client_name(f.name()).to_string()).collect();
    let ncols = names.len();
    let df = ctx.execute_logical_plan(plan).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let batches = df.execute_stream().await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let settings = Settings::from_metadata(client.metadata());
    let header = if format.header { encode_rows(&[], &format, Some(&names), &settings)? } else { Vec::new() };
    let rows = batches.flat_map(move |batch| {
        let lines = match batch {
            Ok(b) => encode_rows(&[b], &format, None, &settings)
                .map_or_else(|e| vec![Err(e)], |v| v.into_iter().map(Ok).collect()),
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
        // Taking the data in only finds where records end; parsing a batch of them (on every core, and
        // waiting while the load writes a run) is blocking work, and the runtime is told of it, so other
        // connections' tasks move to another worker meanwhile.
        if let Some(state) = guard.as_mut()
            && state.take(&copy_data.data)
        {
            match tokio::runtime::Handle::current().runtime_flavor() {
                tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| state.parse()),
                _ => state.parse(),
            }
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
        let Some(state) = slot.0.lock().take() else {
            return Err(user_error(SqlState::ProtocolViolation, "CopyDone without a COPY in progress".into()));
        };
        let mut load = state.finish().map_err(|e| match e {
            CopyError::Own(code, message) => user_error(code, message),
            CopyError::Engine(e, message) => engine_error(&e, message),
        })?;
        let rows = tokio::task::spawn_blocking(move || load.commit())
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
