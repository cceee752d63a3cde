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

/// An internal error (see [`crate::ops::incident`]): the client gets its number, the log its details.
pub fn internal(detail: &str) -> PgWireError {
    user_error(SqlState::Internal, crate::ops::incident::internal_message(detail))
}

pub fn api_error(e: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

/// An engine error, with its SQLSTATE.
pub fn pg_error(e: trafficdb::Error) -> PgWireError {
    pg_error_ref(&e)
}

/// [`pg_error`] of a borrowed error.
pub fn pg_error_ref(e: &trafficdb::Error) -> PgWireError {
    engine_error(e, e.to_string())
}

/// An engine error's SQLSTATE with another message (the error with its context); an internal one
/// masked.
pub fn engine_error(e: &trafficdb::Error, message: String) -> PgWireError {
    if e.is_internal() {
        return internal(&message);
    }
    coded("ERROR", e.sqlstate(), message)
}

/// A DataFusion error (planning or running a statement), with its SQLSTATE; an internal one masked.
pub fn datafusion_error(e: &datafusion::error::DataFusionError) -> PgWireError {
    if trafficdb::error::datafusion_is_internal(e) {
        return internal(&e.to_string());
    }
    coded("ERROR", trafficdb::error::datafusion_sqlstate(e), trafficdb::error::datafusion_message(e))
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

#[cfg(test)]
mod tests {
    use datafusion::error::DataFusionError;
    use pgwire::error::PgWireError;

    fn parts(e: PgWireError) -> (String, String) {
        match e {
            PgWireError::UserError(info) => (info.code.clone(), info.message.clone()),
            other => panic!("not a user error: {other:?}"),
        }
    }

    #[test]
    fn internal_errors_reach_the_client_as_a_number() {
        let (code, message) = parts(super::datafusion_error(&DataFusionError::Internal("plan node 7: /data/x".into())));
        assert_eq!(code, "XX000");
        assert!(message.starts_with("internal error #") && !message.contains("/data"), "{message}");
        let wrapped = DataFusionError::Context("planning".into(), Box::new(DataFusionError::Internal("bug".into())));
        assert!(parts(super::datafusion_error(&wrapped)).1.starts_with("internal error #"));
        let engine = trafficdb::Error::Internal("a write without a plan".into());
        assert!(parts(super::pg_error(engine)).1.starts_with("internal error #"));
        // The statement's own errors keep their text.
        let (code, message) = parts(super::datafusion_error(&DataFusionError::Plan("table 'nope' not found".into())));
        assert_eq!((code.as_str(), message.as_str()), ("42P01", "Error during planning: table 'nope' not found"));
    }
}
