//! One connection's query service: datafusion-postgres's session service over a session context of
//! the connection's own (sharing the catalog, with its own memory pool: the per-query memory limit),
//! with statement timeouts and cancel requests that reach the whole statement, result streaming
//! included (datafusion-postgres applies its timeout to planning only, and pgwire's cancel ends when
//! the first row is ready), an Execute that streams its rows (pgwire's collects them all first), and
//! statements without result columns described with NoData.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, SinkExt, StreamExt};
use parking_lot::Mutex;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_describe_response, send_execution_response};
use pgwire::api::results::{DescribeResponse, DescribeStatementResponse, FieldInfo, Response, SendableRowStream, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, Type, copy};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::{Describe, Execute, PortalSuspended, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::startup::SecretKey;
use tokio::sync::watch;
use trafficdb::query::memory::Unspilled;

use crate::ops::metrics::ServerMetrics;
use crate::pgwire::plans;
use crate::pgwire::results::pg_error;
use tokio::time::Instant;
use trafficdb::SqlState;

/// The metadata key datafusion-postgres keeps `SET statement_timeout` in (milliseconds).
pub const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// A session context for one connection: the shared catalog, functions and settings, and a memory
/// pool of `limit` bytes (0: unlimited) that this connection's queries draw from.
pub fn connection_context(base: &SessionContext, limit: u64) -> SessionContext {
    let ctx = with_memory_limit(base, limit);
    // Casts by PostgreSQL's rules (after type coercion, which adds casts of its own); the embedded
    // library keeps DataFusion's.
    ctx.add_analyzer_rule(Arc::new(crate::pgwire::casts::PgTextCasts));
    crate::pgwire::compat::register_session_functions(&ctx);
    ctx
}

/// A context of the base's state, with a memory pool of its own when `limit` is set.
fn with_memory_limit(base: &SessionContext, limit: u64) -> SessionContext {
    let mut state = base.state();
    // `information_schema` is PostgreSQL's (see crate::pgwire::catalog), not DataFusion's.
    state.config_mut().options_mut().catalog.information_schema = false;
    if limit == 0 {
        return SessionContext::new_with_state(state);
    }
    let shared = state.runtime_env();
    let pool = Unspilled::new(TrackConsumersPool::new(
        GreedyMemoryPool::new(usize::try_from(limit).unwrap_or(usize::MAX)),
        std::num::NonZeroUsize::new(3).expect("3 > 0"),
    ));
    let runtime = match RuntimeEnvBuilder::from_runtime_env(shared).with_memory_pool(Arc::new(pool)).build() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot give the connection its own memory pool ({e}); using the shared one");
            return SessionContext::new_with_state(state);
        }
    };
    SessionContext::new_with_state(
        SessionStateBuilder::new_from_existing(state).with_runtime_env(Arc::new(runtime)).build(),
    )
}

/// A connection's secret key (from BackendKeyData) and its cancel signal.
type Signal = (Vec<u8>, watch::Sender<u64>);

/// Cancel requests: one signal per connection, found by the (pid, secret key) of BackendKeyData.
#[derive(Default)]
pub struct Cancels {
    signals: Mutex<HashMap<i32, Signal>>,
}

impl Cancels {
    /// Registers a connection; the returned guard unregisters it when the connection ends.
    pub fn register(self: &Arc<Self>, pid: i32, key: &SecretKey, signal: watch::Sender<u64>) -> CancelGuard {
        self.signals.lock().insert(pid, (key.to_bytes().to_vec(), signal));
        CancelGuard { cancels: self.clone(), pid }
    }

    /// Cancels what the connection is running, if the key matches (as PostgreSQL, silently otherwise).
    pub fn cancel(&self, pid: i32, key: &SecretKey) {
        if let Some((k, signal)) = self.signals.lock().get(&pid)
            && k.as_slice() == key.to_bytes().as_ref()
        {
            signal.send_modify(|n| *n += 1);
        }
    }
}

pub struct CancelGuard {
    cancels: Arc<Cancels>,
    pid: i32,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.cancels.signals.lock().remove(&self.pid);
    }
}

#[async_trait]
impl pgwire::api::cancel::CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: pgwire::messages::cancel::CancelRequest) {
        self.cancel(request.pid, &request.secret_key);
    }
}

/// One connection's query service.
pub struct Session {
    inner: DfSessionService,
    parser: Arc<Parser>,
    cancel: watch::Sender<u64>,
    metrics: Arc<ServerMetrics>,
}

impl Session {
    pub fn new(
        ctx: SessionContext,
        hooks: Vec<Arc<dyn QueryHook>>,
        cancel: watch::Sender<u64>,
        metrics: Arc<ServerMetrics>,
    ) -> Session {
        let inner = DfSessionService::new_with_hooks(Arc::new(ctx), hooks);
        let parser = Arc::new(Parser { inner: inner.query_parser() });
        Session { inner, parser, cancel, metrics }
    }

    /// What bounds the statement about to run: its deadline and the cancel signal as of now.
    fn limits(&self, client: &(impl ClientInfo + ?Sized)) -> Limits {
        let timeout = client
            .metadata()
            .get(STATEMENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Limits {
            deadline: timeout.map(|t| Instant::now() + t),
            cancel: self.cancel.subscribe(),
            started: Instant::now(),
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
struct Limits {
    deadline: Option<Instant>,
    cancel: watch::Receiver<u64>,
    /// For the query latency metric: counted when the last row is sent or the statement fails.
    started: Instant,
    metrics: Arc<ServerMetrics>,
}

fn canceled(timeout: bool) -> PgWireError {
    let why = if timeout { "statement timeout" } else { "user request" };
    crate::pgwire::results::user_error(SqlState::QueryCanceled, format!("canceling statement due to {why}"))
}

impl Limits {
    /// Runs `work` unless the deadline passes or a cancel request arrives first.
    async fn bound<T>(&mut self, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
        let mut timer = self.deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let r = bound(&mut timer, &mut self.cancel, work).await;
        if r.is_err() {
            self.metrics.query_done(self.started, false);
        }
        r
    }

    /// The rows of `rows`, ending with the 57014 error if the statement is cancelled or runs out of
    /// time first; the query's execution is dropped with the stream. One timer serves every row.
    fn guard(self, rows: SendableRowStream) -> SendableRowStream {
        let timer = self.deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let done = (self.started, self.metrics);
        Box::pin(futures::stream::unfold(Some((timer, self.cancel, rows, done)), |state| async move {
            let (mut timer, mut cancel, mut rows, done) = state?;
            match bound(&mut timer, &mut cancel, async { Ok(rows.next().await) }).await {
                Ok(Some(Ok(item))) => Some((Ok(item), Some((timer, cancel, rows, done)))),
                Ok(Some(Err(e))) | Err(e) => {
                    done.1.query_done(done.0, false);
                    Some((Err(e), None))
                }
                Ok(None) => {
                    done.1.query_done(done.0, true);
                    None
                }
            }
        }))
    }

    fn guard_response(self, r: Response) -> Response {
        match r {
            Response::Query(mut q) => {
                let rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
                q.data_rows = self.guard(rows);
                Response::Query(q)
            }
            other => {
                let ok = !matches!(other, Response::Error(_));
                self.metrics.query_done(self.started, ok);
                other
            }
        }
    }
}

/// `work`, unless `timer` fires or `cancel` changes first.
async fn bound<T>(
    timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    cancel: &mut watch::Receiver<u64>,
    work: impl Future<Output = PgWireResult<T>>,
) -> PgWireResult<T> {
    let expired = async {
        match timer {
            Some(t) => t.as_mut().await,
            None => std::future::pending().await,
        }
    };
    let cancelled = async {
        // A dropped sender means the connection is gone; nothing will cancel then.
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        _ = cancelled => Err(canceled(false)),
        _ = expired => Err(canceled(true)),
        r = work => r,
    }
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let query = trafficdb::rewrite::prepare(query).map_err(pg_error)?;
        let mut limits = self.limits(client);
        let query = query.as_ref();
        let responses = limits.bound(SimpleQueryHandler::do_query(&self.inner, client, query)).await?;
        Ok(responses.into_iter().map(|r| limits.clone().guard_response(r)).collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut limits = self.limits(client);
        let run = ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows);
        let format = portal.result_column_format.clone();
        let response = limits.bound(crate::pgwire::output::RESULT_FORMAT.scope(format, run)).await?;
        Ok(limits.guard_response(response))
    }

    /// Runs a portal, or goes on with a suspended one, sending rows as the query produces them.
    ///
    /// pgwire's default collects every row of the Execute into a vector before sending the first
    /// (unbounded memory outside the query's memory pool for a large result) and sizes that vector
    /// by the client's row limit (a limit of 2^31 - 1 asks for gigabytes up front; a negative one
    /// overflows). Otherwise this answers as pgwire does, message for message.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        // As PostgreSQL: a row limit of zero or less means every row.
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(name.to_owned())),
        };
        let state = portal.state();
        let mut state = state.lock().await;
        if matches!(*state, PortalExecutionState::Initial) {
            match ExtendedQueryHandler::do_query(self, client, portal.as_ref(), max_rows).await? {
                Response::Query(results) => *state = PortalExecutionState::Suspended(results),
                other => {
                    status = respond(client, other, status).await?;
                    *state = PortalExecutionState::Finished;
                    drop(state);
                    if !matches!(client.state(), PgWireConnectionState::CopyInProgress(_)) {
                        client.set_state(PgWireConnectionState::ReadyForQuery);
                        client.set_transaction_status(status);
                    }
                    return Ok(());
                }
            }
        }
        match &mut *state {
            PortalExecutionState::Suspended(results) => {
                // The rows of a write's RETURNING end with the write's tag (`DELETE 3`), not `SELECT`.
                let returning = match &portal.statement.statement {
                    (_, Some((_, plan))) => crate::pgwire::results::returning_tag(plan),
                    _ => None,
                };
                let tag = returning.map_or_else(|| results.command_tag().to_owned(), str::to_string);
                let rows = results.data_rows();
                let mut sent = 0;
                let mut more = true;
                while more && (max_rows == 0 || sent < max_rows) {
                    match rows.next().await {
                        Some(row) => {
                            client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                            sent += 1;
                        }
                        None => more = false,
                    }
                }
                if more {
                    client.send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new())).await?;
                } else {
                    *state = PortalExecutionState::Finished;
                    client.send(PgWireBackendMessage::CommandComplete(Tag::new(&tag).with_rows(sent).into())).await?;
                }
            }
            // Run to the end already: PostgreSQL answers with an empty result.
            PortalExecutionState::Finished | PortalExecutionState::Initial => {
                client.send(PgWireBackendMessage::CommandComplete(Tag::new("SELECT").with_rows(0).into())).await?;
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        Ok(())
    }

    /// A statement that returns no rows is described with NoData, as PostgreSQL does. pgwire sends
    /// an empty RowDescription when such a statement has parameters (`INSERT ... VALUES ($1)`), which
    /// pgjdbc takes for a query: "A result was returned when none was expected", and batches that
    /// report 0 rows.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
            if let Some(Entry::Value(stmt)) = client.portal_store().get_statement(name) {
                let described = self.do_describe_statement(client, &stmt).await?;
                return send_describe_response(client, &StatementDescription(described)).await;
            }
        }
        self._on_describe(client, message).await
    }
}

/// A statement's description that says NoData whenever there are no result columns.
struct StatementDescription(DescribeStatementResponse);

impl DescribeResponse for StatementDescription {
    fn parameters(&self) -> Option<&[Type]> {
        self.0.parameters()
    }

    fn fields(&self) -> &[FieldInfo] {
        self.0.fields()
    }

    fn no_data() -> Self {
        StatementDescription(DescribeStatementResponse::no_data())
    }

    fn is_no_data(&self) -> bool {
        self.0.fields().is_empty()
    }
}

/// Answers a response without rows as pgwire's Execute does; returns the transaction status after it.
async fn respond<C>(
    client: &mut C,
    response: Response,
    status: pgwire::messages::response::TransactionStatus,
) -> PgWireResult<pgwire::messages::response::TransactionStatus>
where
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::PortalStore: PortalStore,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    Ok(match response {
        Response::EmptyQuery => {
            client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
            status
        }
        Response::Execution(tag) => {
            send_execution_response(client, tag).await?;
            status
        }
        Response::TransactionStart(tag) => {
            send_execution_response(client, tag).await?;
            status.to_in_transaction_state()
        }
        Response::TransactionEnd(tag) => {
            send_execution_response(client, tag).await?;
            // The unnamed portal ends with the transaction.
            client.portal_store().rm_portal(DEFAULT_NAME);
            status.to_idle_state()
        }
        Response::Error(e) => {
            client.send(PgWireBackendMessage::ErrorResponse((*e).into())).await?;
            status.to_error_state()
        }
        Response::CopyIn(r) => {
            client.set_state(PgWireConnectionState::CopyInProgress(true));
            copy::send_copy_in_response(client, r).await?;
            status
        }
        Response::CopyOut(r) => {
            copy::send_copy_out_response(client, r).await?;
            status
        }
        Response::CopyBoth(r) => {
            client.set_state(PgWireConnectionState::CopyInProgress(true));
            copy::send_copy_both_response(client, r).await?;
            status
        }
        // Handled by the caller.
        Response::Query(_) => status,
    })
}

type DfParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

/// datafusion-postgres's parser for the extended protocol, given the text after
/// [`trafficdb::rewrite::prepare`] (as the simple protocol is).
pub struct Parser {
    inner: Arc<DfParser>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = <DfParser as QueryParser>::Statement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = trafficdb::rewrite::prepare(sql).map_err(pg_error)?;
        let key = plans::key(client, &sql);
        if let Some((text, statement, plan)) = plans::parsed(client, &key) {
            return Ok(Some((text, Some((statement, plan)))));
        }
        let parsed = self.inner.parse_sql(client, &sql, types).await?;
        Ok(match parsed {
            Some((text, Some((statement, plan)))) => {
                let plan = untyped_nulls_as_text(plan).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                if matches!(statement, datafusion::sql::sqlparser::ast::Statement::Query(_)) && plans::repeatable(&plan)
                {
                    plans::keep_parsed(client, key, (text.clone(), statement.clone(), plan.clone()));
                }
                Some((text, Some((statement, plan))))
            }
            other => other,
        })
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(crate::pgwire::output::client_fields(self.inner.get_result_schema(stmt, column_format)?))
    }
}

/// `plan` with its untyped NULL result columns (`SELECT NULL AS x`) as text, the type PostgreSQL
/// gives them. Left untyped they are described as `unknown` (OID 705), which drivers asking for
/// binary results cannot read (Npgsql 4.0 fails on them).
fn untyped_nulls_as_text(plan: LogicalPlan) -> datafusion::common::Result<LogicalPlan> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast};
    if !plan.schema().fields().iter().any(|f| f.data_type() == &DataType::Null) {
        return Ok(plan);
    }
    let columns: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(datafusion::common::Column::from((qualifier, field)));
            if field.data_type() == &DataType::Null {
                cast(column, DataType::Utf8).alias_qualified(qualifier.cloned(), field.name())
            } else {
                column
            }
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn untyped_null_columns_become_text() {
        use datafusion::arrow::datatypes::DataType;
        let ctx = datafusion::prelude::SessionContext::new();
        let plan = ctx.sql("SELECT 1 AS a, NULL AS b").await.expect("plans").into_unoptimized_plan();
        assert_eq!(plan.schema().field(1).data_type(), &DataType::Null);
        let plan = super::untyped_nulls_as_text(plan).expect("projects");
        let fields: Vec<_> = plan.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        assert_eq!(fields, vec![("a".to_string(), DataType::Int64), ("b".to_string(), DataType::Utf8)]);
        let batches = ctx.execute_logical_plan(plan).await.expect("runs").collect().await.expect("collects");
        assert!(batches[0].column(1).is_null(0));
    }
}
