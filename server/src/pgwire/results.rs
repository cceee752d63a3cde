//! Errors and command tags as PostgreSQL clients receive them.

use datafusion::logical_expr::LogicalPlan;
use pgwire::error::{ErrorInfo, PgWireError};

pub fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

pub fn internal(message: &str) -> PgWireError {
    pg_error(trafficdb::Error::Internal(message.into()))
}

pub fn api_error(e: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

pub fn pg_error(e: trafficdb::Error) -> PgWireError {
    user_error(e.sqlstate(), e.to_string())
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
