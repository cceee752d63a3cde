//! Errors and command tags as PostgreSQL clients receive them: every error the PostgreSQL server
//! builds is built here.

use datafusion::logical_expr::LogicalPlan;
use pgwire::error::{ErrorInfo, PgWireError};
use trafficdb::SqlState;

/// An error answering a statement; the session goes on.
pub fn user_error(code: SqlState, message: String) -> PgWireError {
    coded("ERROR", code.code(), message)
}

/// An error that ends the connection (startup, authentication, protocol).
pub fn fatal(code: SqlState, message: impl Into<String>) -> PgWireError {
    coded("FATAL", code.code(), message.into())
}

fn coded(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(severity.into(), code.into(), message)))
}

pub fn internal(message: &str) -> PgWireError {
    pg_error(trafficdb::Error::Internal(message.into()))
}

pub fn api_error(e: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

/// An engine error, with its SQLSTATE.
pub fn pg_error(e: trafficdb::Error) -> PgWireError {
    engine_error(&e, e.to_string())
}

/// An engine error's SQLSTATE with another message (the error with its context).
pub fn engine_error(e: &trafficdb::Error, message: String) -> PgWireError {
    coded("ERROR", e.sqlstate(), message)
}

/// The command of PostgreSQL's tag for the rows of a statement's RETURNING (`DELETE 3`).
pub fn returning_command(op: trafficdb::query::dml::DmlOp) -> &'static str {
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
