//! The PostgreSQL wire server: datafusion-postgres's session service (simple and extended protocol,
//! `pg_catalog`, SET / SHOW / transactions / cursors) over the database's DataFusion session, with:
//!
//! - our own accept loop (so tests can bind port 0 and shutdown is clean: stop accepting, then flush);
//! - a query hook that sends the statements on stored tables (`CREATE TABLE`, `DROP TABLE`,
//!   `ALTER TABLE`, views) to the engine and answers with PostgreSQL command tags, and `DISCARD ALL`;
//! - an error handler that gives every error its SQLSTATE (datafusion-postgres reports XX000).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use datafusion::common::{DFSchema, DataFusionError, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use pgwire::api::results::{Response, Tag};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers, RandomPidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use trafficdb::{Database, Output};

use crate::audit::Audit;
use crate::auth::{Authenticator, Parameters};
use crate::config::ServerConfig;
use crate::dedup::Dedup;
use crate::metrics::{ServerMetrics, metrics_table};
use crate::session::{Cancels, Session};

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    http: Option<TcpListener>,
    db: Arc<Database>,
    shared: Arc<Shared>,
}

/// What every connection shares.
struct Shared {
    config: Arc<ServerConfig>,
    /// The database's session context with the catalog emulation; each connection gets a context of
    /// its own built from it (see [`crate::session::connection_context`]).
    base: SessionContext,
    hooks: Vec<Arc<dyn QueryHook>>,
    copier: Arc<crate::copy::Copier>,
    parameters: Arc<Parameters>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    cancels: Arc<Cancels>,
    tls: Option<TlsAcceptor>,
    stats: Arc<Stats>,
    audit: Arc<Audit>,
    dedup: Arc<Dedup>,
    metrics: Arc<ServerMetrics>,
}

/// Connection counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now (including one being refused for the connection limit).
    pub active: AtomicUsize,
    /// Connections accepted since the server started.
    pub accepted: AtomicU64,
    /// Connections whose task panicked. Each is a bug: no input may reach a panic. The panic ends
    /// that connection only; it is logged as an error.
    pub panicked: AtomicU64,
}

impl Server {
    /// Binds `config.listen` and prepares the catalog emulation and TLS. Nothing is served until
    /// [`Server::run_until`].
    pub async fn bind(db: Arc<Database>, config: ServerConfig) -> anyhow::Result<Server> {
        config.validate()?;
        let base = db.session().clone();
        crate::catalog::install(&db, &base)?;
        crate::compat::register_functions(&base, db.engine().clone());
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let listen = config.listen.clone();
        let listener =
            TcpListener::bind(&listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let http = match &config.http {
            Some(addr) => Some(
                TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} for HTTP: {e}"))?,
            ),
            None => None,
        };
        let audit = Arc::new(match &config.audit.path {
            Some(path) => Audit::open(path, config.audit.max_bytes, config.audit.max_files)?,
            None => Audit::disabled(),
        });
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(EngineHook { db: db.clone(), audit: audit.clone() }),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(ServerMetrics::new(stats.clone()));
        db.add_system_table("system_metrics", Arc::new(metrics_table(db.engine().clone(), metrics.clone())));
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            base,
            hooks,
            copier: Arc::new(crate::copy::Copier { db: db.clone() }),
            parameters: Arc::new(Parameters::default()),
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
            cancels: Arc::new(Cancels::default()),
            tls,
            stats,
            audit,
            dedup: Arc::new(Dedup::default()),
            metrics,
        });
        Ok(Server { listener, http, db, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The HTTP listener's address, when one was configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The server's connection counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Serves connections until `shutdown` completes, then stops accepting, ends the open connections
    /// and flushes the database (memtables to segments; nothing acknowledged was ever at risk).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        // Continuous rollups and alert rules, in the background (each at its own interval).
        let rollups = {
            let db = self.db.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    if let Err(e) = db.refresh_due_rollups().await {
                        tracing::warn!("refreshing a materialized view failed: {e}");
                    }
                    // Alert rules after the rollups they may read.
                    if let Err(e) = db.evaluate_alerts(None).await {
                        tracing::warn!("evaluating alert rules failed: {e}");
                    }
                    // Also what CALL evaluate_alerts() found.
                    crate::webhook::send_all(db.take_alert_outbox());
                }
            })
        };
        self.shared.metrics.ready.store(true, Ordering::Release);
        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let http = self.http.map(|listener| {
            let router = crate::http::router(crate::http::App {
                db: self.db.clone(),
                config: self.shared.config.clone(),
                audit: self.shared.audit.clone(),
                dedup: self.shared.dedup.clone(),
                metrics: self.shared.metrics.clone(),
            });
            let mut stopped = http_stopped.clone();
            tokio::spawn(async move {
                let stop = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
                    tracing::error!("HTTP server failed: {e}");
                }
            })
        });
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
                    let shared = self.shared.clone();
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let count = shared.stats.active.fetch_add(1, Ordering::SeqCst) + 1;
                    // Counted down here, not in the task, so a connection that panics is uncounted too.
                    let guard = ActiveGuard(shared.stats.clone());
                    tasks.spawn(async move {
                        let _guard = guard;
                        let over_limit = count > shared.config.max_connections;
                        let handlers = Handlers::new(&shared, over_limit);
                        if let Err(e) = crate::wire::serve(socket, shared.tls.clone(), handlers).await {
                            tracing::debug!("connection from {peer} ended: {e}");
                        }
                    });
                }
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = ended
                        && e.is_panic()
                    {
                        self.shared.stats.panicked.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("a connection task panicked (a bug; the server carries on): {e}");
                    }
                }
            }
        }
        self.shared.metrics.ready.store(false, Ordering::Release);
        tracing::info!("shutting down: closing connections and flushing");
        // A refresh cut short is repeated at the next start (its watermark moves only when it is done).
        rollups.abort();
        let _ = rollups.await;
        let _ = stop_http.send(true);
        if let Some(http) = http {
            let _ = http.await;
        }
        tasks.shutdown().await;
        let engine = self.db.engine().clone();
        tokio::task::spawn_blocking(move || engine.close()).await??;
        Ok(())
    }
}

/// Counts a connection as ended when dropped (also when its task panics).
struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TLS acceptor for the PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1).
fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read the TLS private key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("invalid TLS certificate or key: {e}"))?;
    // PostgreSQL 17 clients may start TLS directly (sslnegotiation=direct); they require this ALPN.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One connection's handlers: its own session (context, memory pool, limits) and authenticator.
struct Handlers {
    session: Arc<Session>,
    startup: Arc<Authenticator>,
    cancels: Arc<Cancels>,
    copier: Arc<crate::copy::Copier>,
}

impl Handlers {
    fn new(shared: &Shared, over_limit: bool) -> Handlers {
        let (cancel, _) = tokio::sync::watch::channel(0u64);
        let ctx = crate::session::connection_context(&shared.base, shared.config.query_memory_limit);
        Handlers {
            session: Arc::new(Session::new(ctx, shared.hooks.clone(), cancel.clone(), shared.metrics.clone())),
            startup: Arc::new(Authenticator::new(
                shared.config.clone(),
                shared.parameters.clone(),
                shared.pids.clone(),
                shared.cancels.clone(),
                cancel,
                over_limit,
                shared.audit.clone(),
            )),
            cancels: shared.cancels.clone(),
            copier: shared.copier.clone(),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStateErrors)
    }
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancels.clone()
    }
    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.copier.clone()
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
            (trafficdb::error::datafusion_sqlstate(df), trafficdb::error::datafusion_message(df))
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
    ) || matches!(
        s,
        Statement::Drop { object_type: ObjectType::Table | ObjectType::View | ObjectType::MaterializedView, .. }
    ) || matches!(s, Statement::Call(_))
        || matches!(s, Statement::AlterTable(_) | Statement::CreateView(_) | Statement::Discard { .. })
        || matches!(s, Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. })
        || matches!(s, Statement::Rollback { savepoint: Some(_), .. })
        || matches!(s, Statement::Truncate(_))
        || trafficdb::query::dml::is_dml(s)
        || crate::copy::is_copy(s)
}

/// The command of PostgreSQL's tag for the rows of a statement's RETURNING (`DELETE 3`).
fn returning_command(op: trafficdb::query::dml::DmlOp) -> &'static str {
    use trafficdb::query::dml::DmlOp;
    match op {
        DmlOp::Delete => "DELETE",
        DmlOp::Update => "UPDATE",
        DmlOp::Insert => "INSERT 0",
    }
}

/// The command tag for the rows of `plan`, when it is a statement's RETURNING.
pub fn returning_tag(plan: &LogicalPlan) -> Option<&'static str> {
    match trafficdb::query::dml::plan_op(plan) {
        Some((op, true)) => Some(returning_command(op)),
        _ => None,
    }
}

struct EngineHook {
    db: Arc<Database>,
    audit: Arc<Audit>,
}

impl EngineHook {
    /// Records statements that change the schema (`ddl`) or the data (`write`).
    fn audit(&self, s: &Statement, client: &(dyn ClientInfo + Send + Sync)) {
        if !self.audit.enabled() {
            return;
        }
        let kind = match crate::auth::required_role(s) {
            crate::auth::Role::Reader => return,
            crate::auth::Role::Writer => "write",
            crate::auth::Role::Admin => "ddl",
        };
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        self.audit.statement(&user, crate::auth::session_role(client), kind, &s.to_string());
    }

    /// Runs a plan of [`trafficdb::Database::plan_dml`] (parameters bound): the command tag for a
    /// write, the rows (in text) for RETURNING or EXPLAIN.
    async fn run_dml(&self, ctx: &SessionContext, plan: LogicalPlan) -> PgWireResult<Response> {
        if matches!(trafficdb::query::dml::plan_op(&plan), Some((_, false))) {
            return match trafficdb::database::run_plan(ctx, plan).await {
                Ok(Output::Done(tag)) => Ok(Response::Execution(Tag::new(&tag))),
                Ok(_) => Err(pg_error(trafficdb::Error::Internal("a write without RETURNING returned rows".into()))),
                Err(e) => Err(pg_error(e)),
            };
        }
        let command = returning_tag(&plan);
        let df = ctx.execute_logical_plan(plan).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let mut q = datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe(
            df,
            &pgwire::api::portal::Format::UnifiedText,
            None,
        )
        .await?;
        if let Some(c) = command {
            q.command_tag = c.to_string();
        }
        Ok(Response::Query(q))
    }

    async fn run(
        &self,
        s: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<Response> {
        if let Some(r) = crate::copy::handle(&self.db, s, client).await {
            return r;
        }
        // Every statement is its own transaction (see docs/server.md), so a savepoint marks nothing
        // to return to; drivers and ORMs that nest transactions with savepoints still work.
        match s {
            Statement::Savepoint { .. } => return Ok(Response::Execution(Tag::new("SAVEPOINT"))),
            Statement::ReleaseSavepoint { .. } => return Ok(Response::Execution(Tag::new("RELEASE"))),
            // A failed transaction block stays failed until ROLLBACK (pgwire keeps the status).
            Statement::Rollback { savepoint: Some(_), .. } => return Ok(Response::Execution(Tag::new("ROLLBACK"))),
            // No per-connection state outlives a statement here, so there is nothing to discard.
            Statement::Discard { .. } => return Ok(Response::Execution(Tag::new("DISCARD ALL"))),
            _ => {}
        }
        let stmt = DFStatement::Statement(Box::new(s.clone()));
        match self.db.plan_dml(&ctx.state(), &stmt).await {
            Ok(Some(plan)) => return self.run_dml(ctx, plan).await,
            Ok(None) => {}
            Err(e) => return Err(pg_error(e)),
        }
        match self.db.execute_in(ctx, stmt).await {
            Ok(Output::Done(tag)) => Ok(Response::Execution(Tag::new(&tag))),
            Ok(Output::Stream(_) | Output::Returning { .. }) => Ok(Response::Execution(Tag::new("OK"))),
            Err(e) => Err(pg_error(e)),
        }
    }
}

async fn plan_of(ctx: &SessionContext, s: Statement) -> PgWireResult<LogicalPlan> {
    ctx.state()
        .statement_to_plan(DFStatement::Statement(Box::new(s)))
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
}

fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation { produce_one_row: false, schema: Arc::new(DFSchema::empty()) })
}

/// Rows a `FETCH n` reads from its cursor at a time.
const FETCH_CHUNK: u64 = 8192;

/// The row count of a `FETCH n` / `FETCH FORWARD n` larger than [`FETCH_CHUNK`].
fn large_fetch(s: &Statement) -> Option<(&datafusion::sql::sqlparser::ast::Ident, u64)> {
    use datafusion::sql::sqlparser::ast::{FetchDirection, Value};
    let Statement::Fetch { name, direction, .. } = s else { return None };
    let (FetchDirection::Count { limit } | FetchDirection::Forward { limit: Some(limit) }) = direction else {
        return None;
    };
    let Value::Number(n, _) = &limit.value else { return None };
    // Beyond u64 (or negative): as many rows as there are.
    let n = n.parse::<u64>().unwrap_or(u64::MAX);
    (n > FETCH_CHUNK).then_some((name, n))
}

/// `FETCH n FROM c` for a large `n`, in chunks: pgwire's portal sets aside room for `n` rows before
/// reading one (`FETCH 9223372036854775807` panicked, `FETCH 100000000` asked for gigabytes), so the
/// rows are read [`FETCH_CHUNK`] at a time, and memory follows the rows the cursor really has.
async fn fetch_in_chunks(
    client: &dyn HookClient,
    name: &datafusion::sql::sqlparser::ast::Ident,
    n: u64,
) -> PgWireResult<Response> {
    use futures::StreamExt;
    use pgwire::api::store::PortalStore;
    let user_error = |code: &str, message: String| {
        PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
    };
    let portal = match client.portal_store().get_portal(&name.value) {
        Some(entry) => match entry.value() {
            Some(p) => p.clone(),
            None => return Err(user_error("XX000", "unsupported portal strategy".into())),
        },
        None => return Err(user_error("34000", format!("cursor \"{}\" does not exist", name.value))),
    };
    let mut rows = Vec::new();
    let mut schema = None;
    let mut left = n;
    while left > 0 {
        let mut chunk = portal.fetch(left.min(FETCH_CHUNK) as usize).await?;
        schema.get_or_insert_with(|| chunk.response.row_schema());
        let before = rows.len();
        while let Some(row) = chunk.response.data_rows().next().await {
            rows.push(row?);
        }
        left = left.saturating_sub((rows.len() - before) as u64);
        if !chunk.suspended || rows.len() == before {
            break;
        }
    }
    let schema = schema.unwrap_or_default();
    Ok(Response::Query(pgwire::api::results::QueryResponse::new(
        schema,
        futures::stream::iter(rows.into_iter().map(Ok)),
    )))
}

#[async_trait]
impl QueryHook for EngineHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Err(e) = crate::auth::check(client, statement) {
            return Some(Err(e));
        }
        if let Some((name, n)) = large_fetch(statement) {
            return Some(fetch_in_chunks(client, name, n).await);
        }
        self.audit(statement, client);
        if let Some(substitute) = crate::rewrite::substitute(statement) {
            let r = async {
                let plan = plan_of(ctx, substitute).await?;
                let df = ctx.execute_logical_plan(plan).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
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
        Some(self.run(statement, ctx, client).await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Err(e) = crate::auth::check(client, statement) {
            return Some(Err(e));
        }
        if let Some(substitute) = crate::rewrite::substitute(statement) {
            // The plan runs as any query would, in the formats the client asks for.
            return Some(plan_of(ctx, substitute).await);
        }
        if trafficdb::query::dml::is_dml(statement) {
            // The write's own plan, with its parameters ($1) for the client to bind; RETURNING and
            // EXPLAIN run as queries would, in the formats the client asks for.
            let stmt = DFStatement::Statement(Box::new(statement.clone()));
            return match self.db.plan_dml(&ctx.state(), &stmt).await {
                Ok(Some(plan)) => Some(Ok(plan)),
                Ok(None) => Some(Err(pg_error(trafficdb::Error::Internal("a write without a plan".into())))),
                Err(e) => Some(Err(pg_error(e))),
            };
        }
        is_engine_statement(statement).then(|| Ok(empty_plan()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // The role was checked when the statement was parsed, on this same connection.
        self.audit(statement, client);
        if let Some((name, n)) = large_fetch(statement) {
            return Some(fetch_in_chunks(client, name, n).await);
        }
        if trafficdb::query::dml::is_dml(statement) {
            if !matches!(trafficdb::query::dml::plan_op(plan), Some((_, false))) {
                return None;
            }
            let bound = match plan.clone().replace_params_with_values(params) {
                Ok(p) => p,
                Err(e) => return Some(Err(PgWireError::ApiError(Box::new(e)))),
            };
            return Some(self.run_dml(ctx, bound).await);
        }
        if !is_engine_statement(statement) {
            return None;
        }
        Some(self.run(statement, ctx, client).await)
    }
}
