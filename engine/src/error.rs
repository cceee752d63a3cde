//! The engine's error type. Variants keep four kinds apart: the user's mistake (bad SQL, bad data), the
//! environment (I/O), corruption found on disk (always with the file and offset), and the engine's own
//! invariants (a bug, reported rather than panicking when it is reachable from data).

use std::path::PathBuf;

use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The statement or call is invalid: unknown table, bad option, bad data for the schema.
    #[error("{message}")]
    Invalid { code: SqlState, message: String },

    /// An I/O error from the file system, with the path it concerned.
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A file on disk does not hold what it should. Nothing was changed; the database refuses to guess.
    #[error("corrupt file {path} at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },

    /// The write-ahead log could not be made durable earlier; the database refuses further writes until
    /// it is reopened (after an fsync failure the page cache cannot be trusted).
    #[error("the write-ahead log failed earlier and refuses writes until the database is reopened: {0}")]
    WalPoisoned(String),

    /// The database is closed or closing.
    #[error("the database is closed")]
    Closed,

    /// An error from the query engine.
    #[error("{}", datafusion_message(.0))]
    DataFusion(#[from] DataFusionError),

    /// An error from Arrow while coercing or encoding data.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// One of the engine's own invariants does not hold: a bug, reported instead of a panic.
    #[error("internal error: {0}")]
    Internal(String),
}

pub use trafficdb_udfs::sqlstate::SqlState;

impl Error {
    pub fn invalid(code: SqlState, message: impl Into<String>) -> Self {
        Error::Invalid { code, message: message.into() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt { path: path.into(), offset, reason: reason.into() }
    }

    /// Whether this is the engine's or a library's own failure rather than the statement's, the data's
    /// or the environment's: a client is told only that it happened (the server logs it).
    pub fn is_internal(&self) -> bool {
        match self {
            Error::Internal(_) => true,
            Error::DataFusion(e) => datafusion_is_internal(e),
            _ => false,
        }
    }

    /// The SQLSTATE a client should see for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Invalid { code, .. } => code.code(),
            Error::Io { .. } => SqlState::IoError.code(),
            Error::Corrupt { .. } => SqlState::DataCorrupted.code(),
            Error::WalPoisoned(_) => SqlState::IoError.code(),
            Error::Closed => SqlState::AdminShutdown.code(),
            Error::DataFusion(e) => datafusion_sqlstate(e),
            Error::Arrow(e) => arrow_sqlstate(e).code(),
            Error::Internal(_) => SqlState::Internal.code(),
        }
    }
}

/// The message of a DataFusion error; for an argument error raised by one of our functions, its own
/// message without DataFusion's "External error: " prefix.
pub fn datafusion_message(e: &DataFusionError) -> String {
    /// The message of a function's or the engine's own error that DataFusion wraps.
    fn own_message(e: &DataFusionError) -> Option<String> {
        match e {
            DataFusionError::External(inner) => inner
                .downcast_ref::<trafficdb_udfs::SqlError>()
                .map(|f| f.message.clone())
                .or_else(|| inner.downcast_ref::<Error>().map(Error::to_string)),
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => own_message(inner),
            DataFusionError::Shared(inner) => own_message(inner),
            _ => None,
        }
    }
    own_message(e).unwrap_or_else(|| e.to_string())
}

/// Whether a DataFusion error is a failure of DataFusion itself (its `Internal` kind: "likely caused by
/// a bug") or of the engine's, looking through what it wraps.
pub fn datafusion_is_internal(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::Internal(_) => true,
        DataFusionError::External(inner) => inner.downcast_ref::<Error>().is_some_and(Error::is_internal),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => datafusion_is_internal(inner),
        DataFusionError::Shared(inner) => datafusion_is_internal(inner),
        _ => false,
    }
}

/// Finds the SQLSTATE for a DataFusion error, looking through the engine errors it may wrap.
pub fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(engine) => engine.sqlstate(),
            None => {
                inner.downcast_ref::<trafficdb_udfs::SqlError>().map_or(SqlState::Internal.code(), |e| e.code.code())
            }
        },
        DataFusionError::Context(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::Shared(inner) => datafusion_sqlstate(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::SQL(..) => SqlState::Syntax.code(),
        DataFusionError::NotImplemented(_) => SqlState::NotSupported.code(),
        DataFusionError::SchemaError(se, _) => {
            use datafusion::common::SchemaError;
            match **se {
                SchemaError::FieldNotFound { .. } => SqlState::UndefinedColumn.code(),
                SchemaError::AmbiguousReference { .. } => SqlState::AmbiguousColumn.code(),
                SchemaError::DuplicateQualifiedField { .. } | SchemaError::DuplicateUnqualifiedField { .. } => {
                    SqlState::DuplicateColumn.code()
                }
            }
        }
        DataFusionError::Plan(msg) => plan_sqlstate(msg).code(),
        DataFusionError::ResourcesExhausted(_) => SqlState::OutOfMemory.code(),
        DataFusionError::ArrowError(e, _) => arrow_sqlstate(e).code(),
        DataFusionError::Execution(_) => SqlState::Internal.code(),
        _ => SqlState::Internal.code(),
    }
}

/// PostgreSQL's SQLSTATE for what Arrow refuses: a value that does not parse as its type (22P02, as
/// PostgreSQL's "invalid input syntax"), a number out of its type's range (22003: Arrow's cast says
/// "Can't cast value"), a division by zero (22012), an overflow (22003); other data errors 22000.
fn arrow_sqlstate(e: &datafusion::arrow::error::ArrowError) -> SqlState {
    use datafusion::arrow::error::ArrowError;
    match e {
        ArrowError::CastError(m) if m.starts_with("Can't cast value") => SqlState::NumericValueOutOfRange,
        ArrowError::CastError(_) | ArrowError::ParseError(_) => SqlState::InvalidText,
        ArrowError::DivideByZero => SqlState::DivisionByZero,
        ArrowError::ArithmeticOverflow(_) => SqlState::NumericValueOutOfRange,
        _ => SqlState::DataException,
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// A planning error's SQLSTATE. DataFusion gives these only as text, so the text decides; every shape
/// below is pinned by a test that plans a statement with DataFusion's own planner, so a release that
/// rewords one fails the test instead of turning 42P01 into 42000.
fn plan_sqlstate(msg: &str) -> SqlState {
    // datafusion-sql, relation planning: "table 'x' not found".
    if msg.starts_with("table '") && msg.ends_with("' not found") {
        SqlState::UndefinedTable
    // datafusion-sql, an unknown name ("Invalid function 'x'.\nDid you mean ...") and
    // datafusion-expr, no signature accepts the arguments ("[why.] No function matches the given
    // name and argument types ...").
    } else if msg.starts_with("Invalid function '")
        || msg.contains("No function matches the given name and argument types")
    {
        SqlState::UndefinedFunction
    } else {
        SqlState::SyntaxOrAccessRule
    }
}

#[cfg(test)]
mod tests {
    use super::datafusion_sqlstate;

    #[tokio::test]
    async fn datafusions_planning_errors_get_postgresql_codes() {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.sql("CREATE TABLE t (x BIGINT)").await.unwrap();
        for (sql, code) in [
            ("SELECT * FROM nope", "42P01"),
            ("SELECT * FROM t JOIN public.nope ON true", "42P01"),
            ("SELECT nope(1)", "42883"),
            ("SELECT abs(1, 2, 3)", "42883"),
            ("SELECT abs('a')", "42883"),
            ("SELECT date_trunc(1)", "42883"),
            ("SELECT y FROM t", "42703"),
            ("SELECT 1 +", "42601"),
            ("SELECT x FROM t GROUP BY 1 HAVING nope > 1", "42703"),
        ] {
            let e = ctx.sql(sql).await.unwrap_err();
            assert_eq!(datafusion_sqlstate(&e), code, "{sql}: {e:?}");
        }
    }
}
