//! The SQLSTATE codes trafficdb reports, by PostgreSQL's condition names (Appendix A of its manual):
//! the one vocabulary of every crate. A client sees the code of [`SqlState::code`]; code written
//! as a five-character literal anywhere else is refused by `scripts/sqlstate-literals.py`.

/// A PostgreSQL error condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlState {
    /// 08P01 protocol_violation
    ProtocolViolation,
    /// 21000 cardinality_violation
    CardinalityViolation,
    /// 22000 data_exception
    DataException,
    /// 22003 numeric_value_out_of_range
    NumericValueOutOfRange,
    /// 22012 division_by_zero
    DivisionByZero,
    /// 2201B invalid_regular_expression
    InvalidRegularExpression,
    /// 22008 datetime_field_overflow
    DatetimeFieldOverflow,
    /// 22007 invalid_datetime_format
    InvalidDatetimeFormat,
    /// 22021 character_not_in_repertoire
    CharacterNotInRepertoire,
    /// 22023 invalid_parameter_value
    InvalidParameter,
    /// 22P02 invalid_text_representation
    InvalidText,
    /// 22P04 bad_copy_file_format
    BadCopyFileFormat,
    /// 23502 not_null_violation
    NotNull,
    /// 23514 check_violation
    CheckViolation,
    /// 28000 invalid_authorization_specification
    InvalidAuthorization,
    /// 28P01 invalid_password
    InvalidPassword,
    /// 34000 invalid_cursor_name
    InvalidCursorName,
    /// 42000 syntax_error_or_access_rule_violation
    SyntaxOrAccessRule,
    /// 42501 insufficient_privilege
    InsufficientPrivilege,
    /// 42601 syntax_error
    Syntax,
    /// 42701 duplicate_column
    DuplicateColumn,
    /// 42702 ambiguous_column
    AmbiguousColumn,
    /// 42703 undefined_column
    UndefinedColumn,
    /// 42704 undefined_object
    UndefinedObject,
    /// 42804 datatype_mismatch
    DatatypeMismatch,
    /// 42809 wrong_object_type
    WrongObjectType,
    /// 42883 undefined_function
    UndefinedFunction,
    /// 42P01 undefined_table
    UndefinedTable,
    /// 42P07 duplicate_table
    DuplicateTable,
    /// 0A000 feature_not_supported
    NotSupported,
    /// 53200 out_of_memory
    OutOfMemory,
    /// 53300 too_many_connections
    TooManyConnections,
    /// 54000 program_limit_exceeded
    ProgramLimitExceeded,
    /// 54001 statement_too_complex
    StatementTooComplex,
    /// 55006 object_in_use
    ObjectInUse,
    /// 57014 query_canceled
    QueryCanceled,
    /// 57P01 admin_shutdown
    AdminShutdown,
    /// 58030 io_error
    IoError,
    /// XX000 internal_error
    Internal,
    /// XX001 data_corrupted
    DataCorrupted,
}

impl SqlState {
    /// The five-character code.
    pub const fn code(self) -> &'static str {
        match self {
            SqlState::ProtocolViolation => "08P01",
            SqlState::CardinalityViolation => "21000",
            SqlState::DataException => "22000",
            SqlState::NumericValueOutOfRange => "22003",
            SqlState::DivisionByZero => "22012",
            SqlState::InvalidRegularExpression => "2201B",
            SqlState::DatetimeFieldOverflow => "22008",
            SqlState::InvalidDatetimeFormat => "22007",
            SqlState::CharacterNotInRepertoire => "22021",
            SqlState::InvalidParameter => "22023",
            SqlState::InvalidText => "22P02",
            SqlState::BadCopyFileFormat => "22P04",
            SqlState::NotNull => "23502",
            SqlState::CheckViolation => "23514",
            SqlState::InvalidAuthorization => "28000",
            SqlState::InvalidPassword => "28P01",
            SqlState::InvalidCursorName => "34000",
            SqlState::SyntaxOrAccessRule => "42000",
            SqlState::InsufficientPrivilege => "42501",
            SqlState::Syntax => "42601",
            SqlState::DuplicateColumn => "42701",
            SqlState::AmbiguousColumn => "42702",
            SqlState::UndefinedColumn => "42703",
            SqlState::UndefinedObject => "42704",
            SqlState::DatatypeMismatch => "42804",
            SqlState::WrongObjectType => "42809",
            SqlState::UndefinedFunction => "42883",
            SqlState::UndefinedTable => "42P01",
            SqlState::DuplicateTable => "42P07",
            SqlState::NotSupported => "0A000",
            SqlState::OutOfMemory => "53200",
            SqlState::TooManyConnections => "53300",
            SqlState::ProgramLimitExceeded => "54000",
            SqlState::StatementTooComplex => "54001",
            SqlState::ObjectInUse => "55006",
            SqlState::QueryCanceled => "57014",
            SqlState::AdminShutdown => "57P01",
            SqlState::IoError => "58030",
            SqlState::Internal => "XX000",
            SqlState::DataCorrupted => "XX001",
        }
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}
