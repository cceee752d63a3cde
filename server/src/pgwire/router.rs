//! Where each statement of the PostgreSQL server goes, and who may run it.
//!
//! Each statement is parsed once (by datafusion-postgres, in PostgreSQL's dialect) and everything
//! after works on that one parse: the role check and the execution never read the text again. Two
//! query hooks do the work, around datafusion-postgres's own (cursor moves, `SET` / `SHOW`,
//! transactions):
//!
//! - [`Router`], first: statements the server runs without a DataFusion plan (the engine's DDL,
//!   `COPY`, `TRUNCATE`, savepoints, settings) checked on the statement; writes the engine plans
//!   (`DELETE`, `UPDATE`, `INSERT ... RETURNING`, `EXPLAIN` of them) and `DECLARE ... CURSOR` checked
//!   on their plan;
//! - [`Planned`], last: every other statement is planned from its parse, checked on the plan (a
//!   write, DDL, `COPY ... TO` a file, `SELECT ... INTO`, a call that trains or deploys a model, found
//!   anywhere in it, EXPLAIN ANALYZE included), and that same plan runs.
//!
//! A refused statement is answered with 42501 and recorded in the audit log; an allowed write or DDL
//! is recorded too.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{DmlStatement, EmptyRelation, LogicalPlan, WriteOp};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Reset, Set, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::PgWireResult;
use trafficdb::{Database, Output};

use crate::config::ServerConfig;
use crate::pgwire::gate::{Gate, plan_of, session_role};
use crate::pgwire::results::{api_error, internal, pg_error, returning_tag, user_error};
use crate::pgwire::{compat, output, plans};
use crate::security::audit::Audit;
use crate::security::roles::Role;
use crate::security::settings;
use trafficdb::SqlState;

/// The first query hook: see the module's documentation.
pub struct Router {
    db: Arc<Database>,
    gate: Gate,
    config: Arc<ServerConfig>,
}

/// The last query hook: every statement no other hook took, planned, checked and run.
pub struct Planned(pub Arc<Router>);

impl Router {
    pub fn new(db: Arc<Database>, audit: Arc<Audit>, config: Arc<ServerConfig>) -> Arc<Router> {
        Arc::new(Router { db, gate: Gate::new(audit), config })
    }

    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// Runs a plan of [`trafficdb::Database::plan_dml`] (parameters bound): the command tag for a
    /// write, the rows (in text) for RETURNING or EXPLAIN.
    async fn run_dml(
        &self,
        ctx: &SessionContext,
        plan: LogicalPlan,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<Response> {
        if matches!(trafficdb::query::dml::plan_op(&plan), Some((_, false))) {
            return match trafficdb::database::run_plan(ctx, plan).await {
                Ok(Output::Done(tag)) => Ok(Response::Execution(Tag::new(&tag))),
                Ok(_) => Err(pg_error(trafficdb::Error::Internal("a write without RETURNING returned rows".into()))),
                Err(e) => Err(pg_error(e)),
            };
        }
        let command = returning_tag(&plan);
        let df = ctx.execute_logical_plan(plan).await.map_err(api_error)?;
        let mut q = output::encode(df, &output::result_format(), client.metadata()).await?;
        if let Some(c) = command {
            q.command_tag = c.to_string();
        }
        Ok(Response::Query(q))
    }

    /// Runs a statement that has no DataFusion plan here ([`runs_without_plan`]).
    async fn run(
        &self,
        s: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<Response> {
        if let Some(r) = crate::pgwire::copy::handle(&self.db, &self.gate, ctx, s, client).await {
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
        match self.db.execute_in(ctx, DFStatement::Statement(Box::new(s.clone()))).await {
            Ok(Output::Done(tag)) => Ok(Response::Execution(Tag::new(&tag))),
            Ok(Output::Stream(_) | Output::Returning { .. }) => Ok(Response::Execution(Tag::new("OK"))),
            Err(e) => Err(pg_error(e)),
        }
    }

    /// What is decided and answered before any plan, in both protocols: the statement-level role
    /// check (recorded), large `FETCH`es, settings the server keeps, `DECLARE`.
    async fn run_statement_level(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Err(e) = self.gate.statement(client, statement, true) {
            return Some(Err(e));
        }
        if let Some((name, n)) = large_fetch(statement) {
            return Some(fetch_in_chunks(client, name, n).await);
        }
        if let Some(r) = self.setting(statement, ctx, client).await {
            return Some(r);
        }
        if matches!(statement, Statement::Declare { .. }) {
            return Some(self.declare(statement, ctx, client).await);
        }
        None
    }

    /// Plans `statement` from its parse, checks the plan, runs it (the simple protocol).
    async fn run_planned(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &dyn HookClient,
        key: Option<String>,
    ) -> PgWireResult<Response> {
        // One copy of the session's state plans and runs the statement.
        let state = ctx.state();
        let plan =
            state.statement_to_plan(DFStatement::Statement(Box::new(statement.clone()))).await.map_err(api_error)?;
        self.gate.plan(client, &plan, statement, true)?;
        self.run_in(plan, ctx, Some(state), client, key).await
    }

    /// Runs a checked plan: the `INSERT 0 n` of an insert, the rows of anything else in the formats
    /// the client asked for. A query's physical plan is kept under `key` when it can be
    /// ([`plans::repeatable`]).
    async fn run_checked(
        &self,
        plan: LogicalPlan,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
        key: Option<String>,
    ) -> PgWireResult<Response> {
        self.run_in(plan, ctx, None, client, key).await
    }

    /// [`Router::run_checked`] with the copy of the session's state `plan` was made in, if any.
    async fn run_in(
        &self,
        plan: LogicalPlan,
        ctx: &SessionContext,
        state: Option<datafusion::execution::SessionState>,
        client: &(dyn ClientInfo + Send + Sync),
        key: Option<String>,
    ) -> PgWireResult<Response> {
        if matches!(&plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) | LogicalPlan::Dml(_)) {
            let insert = matches!(&plan, LogicalPlan::Dml(DmlStatement { op: WriteOp::Insert(_), .. }));
            let df = ctx.execute_logical_plan(plan).await.map_err(api_error)?;
            if insert {
                return inserted(df).await;
            }
            return Ok(Response::Query(output::encode(df, &output::result_format(), client.metadata()).await?));
        }
        let state = state.unwrap_or_else(|| ctx.state());
        let physical = state.create_physical_plan(&plan).await.map_err(api_error)?;
        let task = state.task_ctx();
        if let Some(key) = key.filter(|_| plans::repeatable(&plan)) {
            let kept = plans::Physical::new(Arc::new(plan.schema().as_arrow().clone()), physical.clone(), task.clone());
            plans::keep_physical(client, key, kept);
        }
        run_physical(plan.schema().as_arrow(), physical, task, client)
    }

    /// Plans `statement` from its parse and checks the plan (Parse in the extended protocol).
    async fn parse_planned(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<LogicalPlan> {
        let plan = plan_of(ctx, statement.clone()).await?;
        self.gate.plan(client, &plan, statement, false)?;
        Ok(plan)
    }

    /// `DECLARE c CURSOR FOR query`: the query planned from this parse, checked, and started.
    async fn declare(&self, s: &Statement, ctx: &SessionContext, client: &dyn HookClient) -> PgWireResult<Response> {
        use datafusion::sql::sqlparser::ast::DeclareType;
        use pgwire::api::portal::{Format, Portal};
        use pgwire::api::stmt::StoredStatement;
        use pgwire::api::store::PortalStore;
        let Statement::Declare { stmts } = s else { return Err(internal("not a DECLARE")) };
        for declare in stmts {
            if declare.declare_type != Some(DeclareType::Cursor) {
                return Err(user_error(
                    SqlState::NotSupported,
                    "only DECLARE ... CURSOR FOR a query is supported".into(),
                ));
            }
            let name =
                declare.names.first().ok_or_else(|| user_error(SqlState::Syntax, "a cursor needs a name".into()))?;
            let query = declare
                .for_query
                .as_ref()
                .ok_or_else(|| user_error(SqlState::Syntax, "DECLARE CURSOR needs a FOR query".into()))?;
            let plan = self.gate.checked_query_plan(ctx, query, s, client).await?;
            let df = ctx.execute_logical_plan(plan).await.map_err(api_error)?;
            let rows = output::encode(df, &Format::UnifiedText, client.metadata()).await?;
            let stored = Arc::new(StoredStatement::new(name.value.clone(), (query.to_string(), None), vec![]));
            let portal = Portal::new_cursor(name.value.clone(), stored);
            portal.start(rows).await;
            client.portal_store().put_portal(Arc::new(portal));
        }
        Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
    }

    /// `SET` / `RESET` of what the server keeps itself: `statement_timeout` (within the server's
    /// limit for a non-admin) and DataFusion's settings (within their bounds), and every `RESET`.
    /// `None` for the PostgreSQL settings datafusion-postgres keeps.
    async fn setting(
        &self,
        s: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let (name, value) = match s {
            Statement::Set(Set::SingleAssignment { variable, values, .. }) => {
                (settings::name(variable), settings::value_text(values))
            }
            Statement::Reset(r) => match &r.reset {
                Reset::ALL => {
                    self.reset_timeout(client);
                    for key in RESETTABLE {
                        client.metadata_mut().remove(*key);
                    }
                    return Some(Ok(Response::Execution(Tag::new("RESET"))));
                }
                Reset::ConfigurationParameter(n) => (settings::name(n), None),
            },
            _ => return None,
        };
        let tag = if matches!(s, Statement::Reset(_)) { "RESET" } else { "SET" };
        let done = || Some(Ok(Response::Execution(Tag::new(tag))));
        if name == settings::STATEMENT_TIMEOUT {
            let Some(value) = value else {
                self.reset_timeout(client);
                return done();
            };
            let wanted = match settings::parse_timeout(&value) {
                Ok(t) => t,
                Err(m) => return Some(Err(user_error(SqlState::InvalidParameter, m))),
            };
            let t = match settings::allowed_timeout(session_role(client), self.config.statement_timeout, wanted) {
                Ok(t) => t,
                Err(m) => {
                    let user = client.metadata().get("user").cloned().unwrap_or_default();
                    self.gate.audit().refused(&user, session_role(client), Role::Admin, &s.to_string());
                    return Some(Err(user_error(SqlState::InsufficientPrivilege, m)));
                }
            };
            set_timeout(client, t);
            return done();
        }
        // `SET timezone TO ...` (datafusion-postgres keeps only `SET TIME ZONE ...`): the session's
        // zone, which timestamptz values are written in, and the client is told as at startup.
        if name == "timezone" && matches!(s, Statement::Set(_)) {
            let zone = match &value {
                Some(zone) => {
                    client.metadata_mut().insert("timezone".into(), zone.clone());
                    zone.clone()
                }
                None => {
                    client.metadata_mut().remove("timezone");
                    compat::server_defaults().time_zone
                }
            };
            let status = pgwire::messages::startup::ParameterStatus::new("TimeZone".into(), zone);
            if let Err(e) = client.send_message(pgwire::messages::PgWireBackendMessage::ParameterStatus(status)).await {
                return Some(Err(e));
            }
            return done();
        }
        if settings::is_datafusion(&name) {
            if let Some(v) = &value
                && let Err(m) = settings::check_bounds(&name, v)
            {
                return Some(Err(user_error(SqlState::InvalidParameter, m)));
            }
            let r = async {
                let plan = plan_of(ctx, s.clone()).await?;
                ctx.execute_logical_plan(plan).await.map_err(api_error)?;
                Ok(Response::Execution(Tag::new(tag)))
            };
            return Some(r.await);
        }
        if matches!(s, Statement::Reset(_)) {
            client.metadata_mut().remove(&name);
            return done();
        }
        None
    }

    fn reset_timeout(&self, client: &mut dyn HookClient) {
        set_timeout(client, self.config.statement_timeout);
    }
}

/// The session settings datafusion-postgres keeps in a connection's metadata (`RESET ALL` clears them).
const RESETTABLE: &[&str] = &[
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
    "timezone",
];

fn set_timeout(client: &mut dyn HookClient, t: std::time::Duration) {
    if t.is_zero() {
        client.metadata_mut().remove(crate::pgwire::session::STATEMENT_TIMEOUT_KEY);
    } else {
        client.metadata_mut().insert(crate::pgwire::session::STATEMENT_TIMEOUT_KEY.into(), t.as_millis().to_string());
    }
}

/// Statements datafusion-postgres's own hooks answer (after the role check): cursor moves, settings it
/// keeps, `SHOW`, transactions.
fn for_library_hooks(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { savepoint: None, .. }
    )
}

/// Statements that run without a DataFusion plan here: the engine's own
/// ([`trafficdb::database::is_engine_statement`]), and what the protocol answers (`COPY`,
/// savepoints, `DISCARD`). Their role is decided on the statement.
fn runs_without_plan(s: &Statement) -> bool {
    trafficdb::database::is_engine_statement(s)
        || matches!(
            s,
            Statement::Discard { .. }
                | Statement::Savepoint { .. }
                | Statement::ReleaseSavepoint { .. }
                | Statement::Rollback { savepoint: Some(_), .. }
        )
        || crate::pgwire::copy::is_copy(s)
}

fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation { produce_one_row: false, schema: Arc::new(DFSchema::empty()) })
}

/// `s` with the server's substitutions (see [`crate::pgwire::rewrite::substitute`]).
fn substituted(s: &Statement) -> std::borrow::Cow<'_, Statement> {
    match crate::pgwire::rewrite::substitute(s) {
        Some(new) => std::borrow::Cow::Owned(new),
        None => std::borrow::Cow::Borrowed(s),
    }
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
    let portal = match client.portal_store().get_portal(&name.value) {
        Some(entry) => match entry.value() {
            Some(p) => p.clone(),
            None => return Err(user_error(SqlState::Internal, "unsupported portal strategy".into())),
        },
        None => {
            return Err(user_error(SqlState::InvalidCursorName, format!("cursor \"{}\" does not exist", name.value)));
        }
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
impl QueryHook for Router {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        compat::sync_settings(ctx, client.metadata_mut());
        forget_unless_query(statement, client);
        if let Some(r) = self.run_statement_level(statement, ctx, client).await {
            return Some(r);
        }
        if let Some(show) = compat::show_query(statement, client.metadata()) {
            return Some(match show {
                Ok(query) => self.run_planned(&query, ctx, client, None).await,
                Err(e) => Err(e),
            });
        }
        let key = query_key(statement, client);
        if let Some(r) = key.as_deref().and_then(|key| run_kept(key, client)) {
            return Some(r);
        }
        let statement = substituted(statement);
        if trafficdb::query::dml::is_dml(&statement) {
            let r = async {
                let stmt = DFStatement::Statement(Box::new(statement.as_ref().clone()));
                let plan = self.db.plan_dml(&ctx.state(), &stmt).await.map_err(pg_error)?;
                let plan = plan.ok_or_else(|| internal("a write without a plan"))?;
                self.gate.plan(client, &plan, &statement, true)?;
                self.run_dml(ctx, plan, client).await
            };
            return Some(r.await);
        }
        if runs_without_plan(&statement) {
            return Some(self.run(&statement, ctx, client).await);
        }
        if let std::borrow::Cow::Owned(replaced) = &statement {
            return Some(self.run_planned(replaced, ctx, client, key).await);
        }
        None
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        compat::read_settings(ctx, client.metadata());
        if let Err(e) = self.gate.statement(client, statement, false) {
            return Some(Err(e));
        }
        if let Statement::Declare { stmts } = statement {
            let r = async {
                for query in stmts.iter().filter_map(|d| d.for_query.as_ref()) {
                    let plan = plan_of(ctx, Statement::Query(query.clone())).await?;
                    self.gate.plan(client, &plan, statement, false)?;
                }
                Ok(empty_plan())
            };
            return Some(r.await);
        }
        if matches!(statement, Statement::Reset(_)) {
            return Some(Ok(empty_plan()));
        }
        if let Some(show) = compat::show_query(statement, client.metadata()) {
            return Some(match show {
                Ok(query) => self.parse_planned(&query, ctx, client).await,
                Err(e) => Err(e),
            });
        }
        let statement = substituted(statement);
        if trafficdb::query::dml::is_dml(&statement) {
            // The write's own plan, with its parameters ($1) for the client to bind; RETURNING and
            // EXPLAIN run as queries would, in the formats the client asks for.
            let r = async {
                let stmt = DFStatement::Statement(Box::new(statement.as_ref().clone()));
                let plan = self.db.plan_dml(&ctx.state(), &stmt).await.map_err(pg_error)?;
                let plan = plan.ok_or_else(|| internal("a write without a plan"))?;
                self.gate.plan(client, &plan, &statement, false)?;
                Ok(plan)
            };
            return Some(r.await);
        }
        if runs_without_plan(&statement) {
            return Some(Ok(empty_plan()));
        }
        if let std::borrow::Cow::Owned(replaced) = &statement {
            return Some(self.parse_planned(replaced, ctx, client).await);
        }
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        compat::sync_settings(ctx, client.metadata_mut());
        forget_unless_query(statement, client);
        // Checked when the statement was parsed, on this same connection; checked again here where
        // the check is cheap, and recorded.
        if let Some(r) = self.run_statement_level(statement, ctx, client).await {
            return Some(r);
        }
        // Substitutions change no statement's kind; the plan made at Parse already has them.
        if trafficdb::query::dml::is_dml(statement) {
            // RETURNING and EXPLAIN run as queries do: the last hook checks and records them.
            if !matches!(trafficdb::query::dml::plan_op(plan), Some((_, false))) {
                return None;
            }
            if let Err(e) = self.gate.plan(client, plan, statement, true) {
                return Some(Err(e));
            }
            let bound = match plan.clone().replace_params_with_values(params) {
                Ok(p) => p,
                Err(e) => return Some(Err(api_error(e))),
            };
            return Some(self.run_dml(ctx, bound, client).await);
        }
        if runs_without_plan(statement) {
            return Some(self.run(&substituted(statement), ctx, client).await);
        }
        // datafusion-postgres's SHOW would answer the original; the query made of it at Parse (one
        // text column) runs here.
        if compat::show_query(statement, client.metadata()).is_some() {
            return Some(self.run_checked(plan.clone(), ctx, client, None).await);
        }
        None
    }
}

#[async_trait]
impl QueryHook for Planned {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if for_library_hooks(statement) {
            return None;
        }
        let key = query_key(statement, client);
        Some(self.0.run_planned(&substituted(statement), ctx, client, key).await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if for_library_hooks(statement) {
            return None;
        }
        Some(self.0.parse_planned(&substituted(statement), ctx, client).await)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if for_library_hooks(statement) {
            return None;
        }
        // The plan made (and checked) at Parse, checked again and recorded here, runs with its
        // parameters bound.
        let no_parameters = match params {
            ParamValues::List(l) => l.is_empty(),
            ParamValues::Map(m) => m.is_empty(),
        };
        let key = if no_parameters { query_key(statement, client) } else { None };
        if let Some(r) = key.as_deref().and_then(|key| run_kept(key, client)) {
            return Some(r);
        }
        let r = async {
            self.0.gate.plan(client, plan, statement, true)?;
            let bound = plan.clone().replace_params_with_values(params).map_err(api_error)?;
            self.0.run_checked(bound, ctx, client, key).await
        };
        Some(r.await)
    }
}

/// Forgets the connection's kept plans before a statement that is not a query: it may change what
/// they depend on (a setting, a function).
fn forget_unless_query(statement: &Statement, client: &(dyn ClientInfo + Send + Sync)) {
    if !matches!(statement, Statement::Query(_)) {
        plans::forget(client);
    }
}

/// The cache key of a query ([`plans::key`]); `None` for other statements.
fn query_key(statement: &Statement, client: &(dyn ClientInfo + Send + Sync)) -> Option<String> {
    matches!(statement, Statement::Query(_)).then(|| plans::key(client, &statement.to_string()))
}

/// Runs the physical plan kept under `key`, if there is one: it was checked when it was kept, on
/// this connection, with these settings.
fn run_kept(key: &str, client: &(dyn ClientInfo + Send + Sync)) -> Option<PgWireResult<Response>> {
    let kept = plans::physical(client, key)?;
    Some(kept.take().map_err(api_error).and_then(|(schema, plan, task)| run_physical(&schema, plan, task, client)))
}

/// The rows of `plan`, whose result columns are `schema`, in the formats the client asked for.
fn run_physical(
    schema: &datafusion::arrow::datatypes::Schema,
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    task: Arc<datafusion::execution::TaskContext>,
    client: &(dyn ClientInfo + Send + Sync),
) -> PgWireResult<Response> {
    let rows = datafusion::physical_plan::execute_stream(plan, task).map_err(api_error)?;
    Ok(Response::Query(output::encode_stream(schema, rows, &output::result_format(), client.metadata())?))
}

/// The `INSERT 0 n` of an INSERT DataFusion ran (its plan answers one row: the count).
async fn inserted(df: datafusion::prelude::DataFrame) -> PgWireResult<Response> {
    use datafusion::arrow::array::{Array, UInt64Array};
    let batches = df.collect().await.map_err(api_error)?;
    let n = batches
        .first()
        .and_then(|b| b.column_by_name("count"))
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>().filter(|a| !a.is_empty()).map(|a| a.value(0)))
        .unwrap_or(0);
    Ok(Response::Execution(Tag::new("INSERT").with_oid(0).with_rows(n as usize)))
}
