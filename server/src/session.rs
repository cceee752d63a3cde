//! One connection's query service: datafusion-postgres's session service over a session context of
//! the connection's own (sharing the catalog, with its own memory pool: the per-query memory limit),
//! with statement timeouts and cancel requests that reach the whole statement, result streaming
//! included (datafusion-postgres applies its timeout to planning only, and pgwire's cancel ends when
//! the first row is ready), and statements without result columns described with NoData.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, StreamExt};
use parking_lot::Mutex;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_describe_response};
use pgwire::api::results::{DescribeResponse, DescribeStatementResponse, FieldInfo, Response, SendableRowStream};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::{Describe, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::startup::SecretKey;
use tokio::sync::watch;
use tokio::time::Instant;

/// The metadata key datafusion-postgres keeps `SET statement_timeout` in (milliseconds).
pub const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// A session context for one connection: the shared catalog, functions and settings, and a memory
/// pool of `limit` bytes (0: unlimited) that this connection's queries draw from.
pub fn connection_context(base: &SessionContext, limit: u64) -> SessionContext {
    let mut state = base.state();
    // `information_schema` is PostgreSQL's (see crate::catalog), not DataFusion's.
    state.config_mut().options_mut().catalog.information_schema = false;
    if limit == 0 {
        return SessionContext::new_with_state(state);
    }
    let shared = state.runtime_env();
    let pool = TrackConsumersPool::new(
        GreedyMemoryPool::new(usize::try_from(limit).unwrap_or(usize::MAX)),
        std::num::NonZeroUsize::new(3).expect("3 > 0"),
    );
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
    cancel: watch::Sender<u64>,
}

impl Session {
    pub fn new(ctx: SessionContext, hooks: Vec<Arc<dyn QueryHook>>, cancel: watch::Sender<u64>) -> Session {
        Session { inner: DfSessionService::new_with_hooks(Arc::new(ctx), hooks), cancel }
    }

    /// What bounds the statement about to run: its deadline and the cancel signal as of now.
    fn limits(&self, client: &(impl ClientInfo + ?Sized)) -> Limits {
        let timeout = client
            .metadata()
            .get(STATEMENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Limits { deadline: timeout.map(|t| Instant::now() + t), cancel: self.cancel.subscribe() }
    }
}

#[derive(Clone)]
struct Limits {
    deadline: Option<Instant>,
    cancel: watch::Receiver<u64>,
}

fn canceled(timeout: bool) -> PgWireError {
    let why = if timeout { "statement timeout" } else { "user request" };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "57014".into(),
        format!("canceling statement due to {why}"),
    )))
}

impl Limits {
    /// Runs `work` unless the deadline passes or a cancel request arrives first.
    async fn bound<T>(&mut self, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
        let mut timer = self.deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        bound(&mut timer, &mut self.cancel, work).await
    }

    /// The rows of `rows`, ending with the 57014 error if the statement is cancelled or runs out of
    /// time first; the query's execution is dropped with the stream. One timer serves every row.
    fn guard(self, rows: SendableRowStream) -> SendableRowStream {
        let timer = self.deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        Box::pin(futures::stream::unfold(Some((timer, self.cancel, rows)), |state| async move {
            let (mut timer, mut cancel, mut rows) = state?;
            match bound(&mut timer, &mut cancel, async { Ok(rows.next().await) }).await {
                Ok(Some(item)) => Some((item, Some((timer, cancel, rows)))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
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
            other => other,
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
        let mut limits = self.limits(client);
        let responses = limits.bound(SimpleQueryHandler::do_query(&self.inner, client, query)).await?;
        Ok(responses.into_iter().map(|r| limits.clone().guard_response(r)).collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.inner.query_parser()
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
        let response = limits.bound(ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows)).await?;
        Ok(limits.guard_response(response))
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
