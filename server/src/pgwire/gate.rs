//! The role check of every statement: the session's role (recorded at authentication), compared
//! with what a statement or its plan needs ([`crate::security::access`]); refusals (42501) and the
//! writes and DDL that pass are recorded in the audit log.

use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use pgwire::api::ClientInfo;
use pgwire::error::PgWireResult;

use crate::pgwire::results::{api_error, user_error};
use crate::security::access::{plan_role, statement_role};
use crate::security::audit::Audit;
use crate::security::roles::Role;
use trafficdb::SqlState;

/// The role of the authenticated user of a connection, kept in the connection's session extensions
/// (not in its metadata, which clients can write through startup parameters and `SET`).
#[derive(Debug, Clone, Copy)]
pub struct SessionRole(pub Role);

/// The role a connection runs as (`reader` if none was recorded, which cannot happen after startup).
pub fn session_role(client: &(impl ClientInfo + ?Sized)) -> Role {
    client.session_extensions().get::<SessionRole>().map_or(Role::Reader, |r| r.0)
}

/// Checks statements and plans against the session's role, and records what the audit log keeps.
pub struct Gate {
    audit: Arc<Audit>,
}

impl Gate {
    pub fn new(audit: Arc<Audit>) -> Gate {
        Gate { audit }
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Refuses `statement` (42501, recorded in the audit log) when the session's role is below `need`;
    /// records it when it writes or changes the schema and `record` is set.
    pub fn check(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
        need: Role,
        statement: &Statement,
        record: bool,
    ) -> PgWireResult<()> {
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        self.audit
            .permit(&user, session_role(client), need, || statement.to_string(), record)
            .map_err(|message| user_error(SqlState::InsufficientPrivilege, message))
    }

    /// The statement-level check, for statements that have one.
    pub fn statement(&self, client: &(dyn ClientInfo + Send + Sync), s: &Statement, record: bool) -> PgWireResult<()> {
        match statement_role(s) {
            Some(need) => self.check(client, need, s, record),
            None => Ok(()),
        }
    }

    pub fn plan(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
        plan: &LogicalPlan,
        s: &Statement,
        record: bool,
    ) -> PgWireResult<()> {
        self.check(client, plan_role(plan), s, record)
    }

    /// The plan of a query the server runs for a statement (`COPY (query) TO STDOUT`, a cursor's
    /// query), checked: the query must only read what the session may read.
    pub async fn checked_query_plan(
        &self,
        ctx: &SessionContext,
        query: &datafusion::sql::sqlparser::ast::Query,
        s: &Statement,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<LogicalPlan> {
        let plan = plan_of(ctx, Statement::Query(Box::new(query.clone()))).await?;
        self.plan(client, &plan, s, true)?;
        Ok(plan)
    }
}

pub async fn plan_of(ctx: &SessionContext, s: Statement) -> PgWireResult<LogicalPlan> {
    ctx.state().statement_to_plan(DFStatement::Statement(Box::new(s))).await.map_err(api_error)
}
