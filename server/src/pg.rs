//! The PostgreSQL wire server: datafusion-postgres's session service (simple and extended protocol,
//! `pg_catalog`, SET / SHOW / transactions / cursors) over the database's DataFusion session, with:
//!
//! - our own accept loop (so tests can bind port 0 and shutdown is clean: stop accepting, then flush);
//! - a query hook that sends the statements on stored tables (`CREATE TABLE`, `DROP TABLE`,
//!   `ALTER TABLE`, views) to the engine and answers with PostgreSQL command tags, and `DISCARD ALL`;
//! - an error handler that gives every error its SQLSTATE (datafusion-postgres reports XX000).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{DFSchema, DataFusionError, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::{DfSessionService, QueryHook};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::results::{Response, Tag};
use pgwire::api::{ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use tokio::net::TcpListener;
use trafficdb::{Database, Output};

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    db: Arc<Database>,
    handlers: Arc<Handlers>,
}

impl Server {
    /// Binds `listen` and prepares the catalog emulation. Nothing is served until [`Server::run_until`].
    pub async fn bind(db: Arc<Database>, listen: &str) -> anyhow::Result<Server> {
        let ctx = Arc::new(db.session().clone());
        datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(
            &ctx,
            trafficdb::database::CATALOG_NAME,
            datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| anyhow::anyhow!("setting up pg_catalog: {e}"))?;
        register_version(&ctx);
        let listener =
            TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(EngineHook { db: db.clone() }),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let connections = Arc::new(ConnectionManager::new());
        let handlers = Arc::new(Handlers {
            copier: Arc::new(crate::copy::Copier { db: db.clone() }),
            service: Arc::new(DfSessionService::new_with_hooks(ctx, hooks)),
            startup: Arc::new(Startup { connections: connections.clone() }),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        });
        Ok(Server { listener, db, handlers })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until `shutdown` completes, then stops accepting, ends the open connections
    /// and flushes the database (memtables to segments; nothing acknowledged was ever at risk).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            continue;
                        }
                    };
                    let handlers = self.handlers.clone();
                    tasks.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            tracing::debug!("connection from {peer} ended: {e}");
                        }
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tracing::info!("shutting down: closing connections and flushing");
        tasks.shutdown().await;
        let engine = self.db.engine().clone();
        tokio::task::spawn_blocking(move || engine.close()).await??;
        Ok(())
    }
}

/// The PostgreSQL version clients are told (ParameterStatus `server_version` carries the same prefix).
pub const PG_VERSION: &str = "16.6";

/// `version()` answers in PostgreSQL's form (drivers and ORMs parse "PostgreSQL X.Y" from it).
fn register_version(ctx: &SessionContext) {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let text = format!(
        "PostgreSQL {PG_VERSION} (trafficdb {}, Apache DataFusion {}) on {}-{}",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    let udf = create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::Utf8(Some(text.clone()))))
        }),
    );
    ctx.register_udf(udf);
}

/// `SHOW server_version` / `server_version_num` as a query over the session (so both protocols and
/// every result format work).
fn show_query(s: &Statement) -> Option<String> {
    let Statement::ShowVariable { variable } = s else { return None };
    let name = variable.iter().map(|i| i.value.to_ascii_lowercase()).collect::<Vec<_>>().join(" ");
    let (major, minor) = PG_VERSION.split_once('.').unwrap_or((PG_VERSION, "0"));
    let num = major.parse::<u32>().unwrap_or(16) * 10_000 + minor.parse::<u32>().unwrap_or(0);
    match name.as_str() {
        "server_version" => Some(format!("SELECT '{PG_VERSION}' AS server_version")),
        "server_version_num" => Some(format!("SELECT '{num}' AS server_version_num")),
        _ => None,
    }
}

struct Handlers {
    copier: Arc<crate::copy::Copier>,
    service: Arc<DfSessionService>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.service.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.service.clone()
    }
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStateErrors)
    }
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.copier.clone()
    }
}

/// Trust authentication (loopback default); sends ParameterStatus and BackendKeyData.
struct Startup {
    connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for Startup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// Gives errors their SQLSTATE.
struct SqlStateErrors;

impl ErrorHandler for SqlStateErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let PgWireError::ApiError(inner) = error else { return };
        let (code, message) = if let Some(df) = inner.downcast_ref::<DataFusionError>() {
            (trafficdb::error::datafusion_sqlstate(df), df.to_string())
        } else if let Some(e) = inner.downcast_ref::<trafficdb::Error>() {
            (e.sqlstate(), e.to_string())
        } else if inner.downcast_ref::<datafusion::sql::sqlparser::parser::ParserError>().is_some() {
            ("42601", inner.to_string())
        } else {
            return;
        };
        tracing::debug!("query failed ({code}): {message}");
        *error = PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)));
    }
}

fn pg_error(e: trafficdb::Error) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), e.sqlstate().into(), e.to_string())))
}

/// Statements the engine answers itself.
fn is_engine_statement(s: &Statement) -> bool {
    matches!(
        s,
        Statement::CreateTable(ct) if !ct.external
    ) || matches!(s, Statement::Drop { object_type: ObjectType::Table | ObjectType::View, .. })
        || matches!(s, Statement::AlterTable(_) | Statement::CreateView(_) | Statement::Discard { .. })
        || crate::copy::is_copy(s)
}

struct EngineHook {
    db: Arc<Database>,
}

impl EngineHook {
    async fn run(&self, s: &Statement, client: &(dyn ClientInfo + Send + Sync)) -> PgWireResult<Response> {
        if let Some(r) = crate::copy::handle(&self.db, s, client).await {
            return r;
        }
        if matches!(s, Statement::Discard { .. }) {
            // No per-connection state outlives a statement here, so there is nothing to discard.
            return Ok(Response::Execution(Tag::new("DISCARD ALL")));
        }
        match self.db.execute(DFStatement::Statement(Box::new(s.clone()))).await {
            Ok(Output::Done(tag)) => Ok(Response::Execution(Tag::new(&tag))),
            Ok(Output::Stream(_)) => Ok(Response::Execution(Tag::new("OK"))),
            Err(e) => Err(pg_error(e)),
        }
    }
}

fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation { produce_one_row: false, schema: Arc::new(DFSchema::empty()) })
}

#[async_trait]
impl QueryHook for EngineHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(sql) = show_query(statement) {
            let r = async {
                let df = ctx.sql(&sql).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                let q = datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe(
                    df,
                    &pgwire::api::portal::Format::UnifiedText,
                    None,
                )
                .await?;
                Ok(Response::Query(q))
            };
            return Some(r.await);
        }
        if !is_engine_statement(statement) {
            return None;
        }
        Some(self.run(statement, client).await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Some(sql) = show_query(statement) {
            // The plan runs as any query would, in the formats the client asks for.
            let plan = ctx.state().create_logical_plan(&sql).await.map_err(|e| PgWireError::ApiError(Box::new(e)));
            return Some(plan);
        }
        is_engine_statement(statement).then(|| Ok(empty_plan()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !is_engine_statement(statement) {
            return None;
        }
        Some(self.run(statement, client).await)
    }
}
