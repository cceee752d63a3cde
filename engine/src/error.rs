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

/// PostgreSQL SQLSTATE codes for user errors, so the server can forward them unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlState {
    /// 42P01 undefined_table
    UndefinedTable,
    /// 42P07 duplicate_table
    DuplicateTable,
    /// 42703 undefined_column
    UndefinedColumn,
    /// 42701 duplicate_column
    DuplicateColumn,
    /// 42601 syntax_error
    Syntax,
    /// 22023 invalid_parameter_value
    InvalidParameter,
    /// 22P02 invalid_text_representation
    InvalidText,
    /// 23502 not_null_violation
    NotNull,
    /// 42804 datatype_mismatch
    DatatypeMismatch,
    /// 0A000 feature_not_supported
    NotSupported,
    /// 42809 wrong_object_type
    WrongObjectType,
    /// 42704 undefined_object
    UndefinedObject,
    /// 57014 query_canceled
    QueryCanceled,
    /// 54001 statement_too_complex
    StatementTooComplex,
}

impl SqlState {
    pub fn code(self) -> &'static str {
        match self {
            SqlState::UndefinedTable => "42P01",
            SqlState::DuplicateTable => "42P07",
            SqlState::UndefinedColumn => "42703",
            SqlState::DuplicateColumn => "42701",
            SqlState::Syntax => "42601",
            SqlState::InvalidParameter => "22023",
            SqlState::InvalidText => "22P02",
            SqlState::NotNull => "23502",
            SqlState::DatatypeMismatch => "42804",
            SqlState::NotSupported => "0A000",
            SqlState::WrongObjectType => "42809",
            SqlState::UndefinedObject => "42704",
            SqlState::QueryCanceled => "57014",
            SqlState::StatementTooComplex => "54001",
        }
    }
}

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

    /// The SQLSTATE a client should see for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Invalid { code, .. } => code.code(),
            Error::Io { .. } => "58030",
            Error::Corrupt { .. } => "XX001",
            Error::WalPoisoned(_) => "58030",
            Error::Closed => "57P01",
            Error::DataFusion(e) => datafusion_sqlstate(e),
            Error::Arrow(_) => "22000",
            Error::Internal(_) => "XX000",
        }
    }
}

/// The message of a DataFusion error; for an argument error raised by one of our functions, its own
/// message without DataFusion's "External error: " prefix.
pub fn datafusion_message(e: &DataFusionError) -> String {
    fn function_error(e: &DataFusionError) -> Option<&trafficdb_udfs::SqlError> {
        match e {
            DataFusionError::External(inner) => inner.downcast_ref::<trafficdb_udfs::SqlError>(),
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => function_error(inner),
            DataFusionError::Shared(inner) => function_error(inner),
            _ => None,
        }
    }
    function_error(e).map_or_else(|| e.to_string(), |f| f.message.clone())
}

/// Finds the SQLSTATE for a DataFusion error, looking through the engine errors it may wrap.
pub fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(engine) => engine.sqlstate(),
            None => inner.downcast_ref::<trafficdb_udfs::SqlError>().map_or("XX000", |e| e.code),
        },
        DataFusionError::Context(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::Shared(inner) => datafusion_sqlstate(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::SQL(..) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::SchemaError(se, _) => {
            use datafusion::common::SchemaError;
            match **se {
                SchemaError::FieldNotFound { .. } => "42703",
                SchemaError::AmbiguousReference { .. } => "42702",
                SchemaError::DuplicateQualifiedField { .. } | SchemaError::DuplicateUnqualifiedField { .. } => "42701",
            }
        }
        DataFusionError::Plan(msg) => {
            if msg.contains("table") && msg.contains("not found") {
                "42P01"
            } else if msg.contains("No function matches") || msg.contains("Invalid function") {
                "42883"
            } else {
                "42000"
            }
        }
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ArrowError(..) => "22000",
        DataFusionError::Execution(_) => "XX000",
        _ => "XX000",
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
