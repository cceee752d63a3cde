//! Column types, table definitions and the coercion of incoming batches to a table's schema.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, SqlState};

/// The column types a stored table can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// TIMESTAMP (without time zone), microseconds.
    Timestamp,
    /// TIMESTAMP WITH TIME ZONE, microseconds since the epoch in UTC.
    TimestampTz,
    SmallInt,
    Int,
    BigInt,
    Real,
    Double,
    Boolean,
    Text,
}

impl ColumnType {
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            ColumnType::SmallInt => DataType::Int16,
            ColumnType::Int => DataType::Int32,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Real => DataType::Float32,
            ColumnType::Double => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Text => DataType::Utf8,
        }
    }

    /// The PostgreSQL name of the type.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::Timestamp => "timestamp",
            ColumnType::TimestampTz => "timestamptz",
            ColumnType::SmallInt => "smallint",
            ColumnType::Int => "integer",
            ColumnType::BigInt => "bigint",
            ColumnType::Real => "real",
            ColumnType::Double => "double precision",
            ColumnType::Boolean => "boolean",
            ColumnType::Text => "text",
        }
    }

    /// The stored type for an Arrow type (for `CREATE TABLE AS` and appends that create tables).
    pub fn from_arrow(dt: &DataType) -> Option<Self> {
        Some(match dt {
            DataType::Timestamp(_, None) => ColumnType::Timestamp,
            DataType::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => ColumnType::SmallInt,
            DataType::Int32 | DataType::UInt16 => ColumnType::Int,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ColumnType::BigInt,
            DataType::Float16 | DataType::Float32 => ColumnType::Real,
            DataType::Float64 | DataType::Decimal128(..) | DataType::Decimal256(..) => ColumnType::Double,
            DataType::Boolean => ColumnType::Boolean,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
            DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8) => ColumnType::Text,
            DataType::Date32 | DataType::Date64 => ColumnType::Timestamp,
            _ => return None,
        })
    }

    pub fn is_timestamp(self) -> bool {
        matches!(self, ColumnType::Timestamp | ColumnType::TimestampTz)
    }

    /// How values are stored in a segment.
    pub(crate) fn physical(self) -> Physical {
        match self {
            ColumnType::Timestamp
            | ColumnType::TimestampTz
            | ColumnType::SmallInt
            | ColumnType::Int
            | ColumnType::BigInt => Physical::Int,
            ColumnType::Real => Physical::Float32,
            ColumnType::Double => Physical::Float64,
            ColumnType::Boolean => Physical::Bool,
            ColumnType::Text => Physical::Text,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            ColumnType::Timestamp => 1,
            ColumnType::TimestampTz => 2,
            ColumnType::SmallInt => 3,
            ColumnType::Int => 4,
            ColumnType::BigInt => 5,
            ColumnType::Real => 6,
            ColumnType::Double => 7,
            ColumnType::Boolean => 8,
            ColumnType::Text => 9,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => ColumnType::Timestamp,
            2 => ColumnType::TimestampTz,
            3 => ColumnType::SmallInt,
            4 => ColumnType::Int,
            5 => ColumnType::BigInt,
            6 => ColumnType::Real,
            7 => ColumnType::Double,
            8 => ColumnType::Boolean,
            9 => ColumnType::Text,
            _ => return None,
        })
    }
}

/// How a column's values are laid out in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Physical {
    Int,
    Float32,
    Float64,
    Bool,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub nullable: bool,
}

/// Options of a time-series table; absent for plain tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeOptions {
    /// Index of the time column in `columns`.
    pub time_column: usize,
    pub partition_width_us: i64,
    pub retention_us: Option<i64>,
}

/// The definition of a stored table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub time: Option<TimeOptions>,
    /// Columns that, with the time column, identify a row for writers that drop repeated rows
    /// (line-protocol writes: a resent batch is not stored twice). Empty: no such key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedup_keys: Vec<String>,
    /// Columns that order rows inside a segment after time has cut them into runs (see
    /// [`TableDef::layout`]): rows of one key sit together, so a filter on the key reads its own row
    /// groups. Empty: rows are in time order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sort_key: Vec<String>,
}

impl TableDef {
    /// Checks a new definition: unique column names, a TIMESTAMP time column, positive widths.
    pub fn validate(&self) -> Result<()> {
        if self.columns.is_empty() {
            return Err(Error::invalid(SqlState::InvalidParameter, "a table needs at least one column"));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            if !seen.insert(c.name.as_str()) {
                return Err(Error::invalid(
                    SqlState::DuplicateColumn,
                    format!("column \"{}\" specified more than once", c.name),
                ));
            }
        }
        if let Some(t) = &self.time {
            let col = self
                .columns
                .get(t.time_column)
                .ok_or_else(|| Error::invalid(SqlState::UndefinedColumn, "time column out of range"))?;
            if !col.ty.is_timestamp() {
                return Err(Error::invalid(
                    SqlState::DatatypeMismatch,
                    format!("time column \"{}\" must be TIMESTAMP or TIMESTAMPTZ, not {}", col.name, col.ty.sql_name()),
                ));
            }
            if t.partition_width_us <= 0 {
                return Err(Error::invalid(SqlState::InvalidParameter, "partition width must be positive"));
            }
            if t.retention_us.is_some_and(|r| r <= 0) {
                return Err(Error::invalid(SqlState::InvalidParameter, "retention must be positive"));
            }
        }
        for k in &self.dedup_keys {
            match self.column_index(k) {
                None => {
                    return Err(Error::invalid(
                        SqlState::UndefinedColumn,
                        format!("dedup key \"{k}\" is not a column of \"{}\"", self.name),
                    ));
                }
                Some(i) if Some(i) == self.time_column() => {
                    return Err(Error::invalid(
                        SqlState::InvalidParameter,
                        format!("dedup key \"{k}\" is the time column, which every dedup key includes already"),
                    ));
                }
                Some(_) => {}
            }
        }
        if !self.dedup_keys.is_empty() && self.time.is_none() {
            return Err(Error::invalid(SqlState::InvalidParameter, "dedup_keys needs a time column"));
        }
        for (i, k) in self.sort_key.iter().enumerate() {
            let Some(c) = self.column_index(k) else {
                return Err(Error::invalid(
                    SqlState::UndefinedColumn,
                    format!("sort key \"{k}\" is not a column of \"{}\"", self.name),
                ));
            };
            if Some(c) == self.time_column() {
                return Err(Error::invalid(
                    SqlState::InvalidParameter,
                    format!("sort key \"{k}\" is the time column, which orders rows of one key already"),
                ));
            }
            if self.sort_key[..i].contains(k) {
                return Err(Error::invalid(
                    SqlState::InvalidParameter,
                    format!("sort key \"{k}\" named more than once"),
                ));
            }
        }
        if !self.sort_key.is_empty() && self.time.is_none() {
            return Err(Error::invalid(SqlState::InvalidParameter, "sort_key needs a time column"));
        }
        Ok(())
    }

    /// How rows are laid out in this table's segments.
    pub fn layout(&self) -> Layout {
        if self.sort_key.is_empty() { Layout::TIME } else { Layout::CLUSTERED }
    }

    /// The sort key's column indices.
    pub fn sort_key_columns(&self) -> Vec<usize> {
        self.sort_key.iter().filter_map(|k| self.column_index(k)).collect()
    }

    /// The Arrow schema of the table's batches. Every field is nullable at the Arrow level: NOT NULL is
    /// enforced by [`coerce_batch`] with a PostgreSQL error, because DataFusion types an INSERT's VALUES
    /// with the target's nullability and would fail first with an Arrow error naming `column3`.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self.columns.iter().map(|c| Field::new(&c.name, c.ty.arrow_type(), true)).collect();
        Arc::new(Schema::new(fields))
    }

    /// True if the column may hold NULL (the time column never may).
    pub fn is_nullable(&self, idx: usize) -> bool {
        self.columns[idx].nullable && self.time_column() != Some(idx)
    }

    pub fn time_column(&self) -> Option<usize> {
        self.time.as_ref().map(|t| t.time_column)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// How rows are laid out in a segment. Rows are cut, in time order, into runs of `run_rows`; inside a
/// run they are sorted by the table's sort key, then by time (without a sort key they stay in time
/// order), and stored as row groups of `group_rows`. Every row of a run is at or after every row of the
/// runs before it, so a row group's time bounds are those of its run at worst, while its key bounds
/// are narrow: a key filter reads about `group_rows` per run and key instead of every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub run_rows: usize,
    pub group_rows: usize,
}

impl Layout {
    /// Time order: a run is a row group.
    pub const TIME: Layout = Layout { run_rows: 65_536, group_rows: 65_536 };
    /// Clustered by a sort key: runs of 16 row groups of 16,384 rows.
    pub const CLUSTERED: Layout = Layout { run_rows: 262_144, group_rows: 16_384 };

    pub fn clustered(&self) -> bool {
        self.run_rows > self.group_rows
    }
}

/// Coerces `batch` to the table's schema: columns matched by name (missing nullable columns become NULL),
/// types cast without loss, NOT NULL checked. A bad value rejects the whole batch, naming row and column.
pub fn coerce_batch(def: &TableDef, schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    coerce(def, schema, batch, &|i| format!("row {}", i + 1))
}

/// [`coerce_batch`] for input read from lines (COPY): errors name `line first_line + row`.
pub fn coerce_batch_numbered(
    def: &TableDef,
    schema: &SchemaRef,
    batch: &RecordBatch,
    first_line: usize,
) -> Result<RecordBatch> {
    coerce(def, schema, batch, &|i| format!("line {}", first_line + i))
}

fn coerce(
    def: &TableDef,
    schema: &SchemaRef,
    batch: &RecordBatch,
    at: &dyn Fn(usize) -> String,
) -> Result<RecordBatch> {
    let in_schema = batch.schema();
    for f in in_schema.fields() {
        if def.column_index(f.name()).is_none() {
            return Err(Error::invalid(
                SqlState::UndefinedColumn,
                format!("column \"{}\" of relation \"{}\" does not exist", f.name(), def.name),
            ));
        }
    }
    let rows = batch.num_rows();
    let cast_options = CastOptions { safe: false, format_options: FormatOptions::default() };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (idx, field) in schema.fields().iter().enumerate() {
        let array = match in_schema.index_of(field.name()) {
            Ok(i) => {
                let a = batch.column(i);
                if a.data_type() == field.data_type() { a.clone() } else { cast_column(a, field, &cast_options, at)? }
            }
            Err(_) => new_null_array(field.data_type(), rows),
        };
        if !def.is_nullable(idx) && array.null_count() > 0 {
            let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
            return Err(Error::invalid(
                SqlState::NotNull,
                format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint ({})",
                    field.name(),
                    def.name,
                    at(row)
                ),
            ));
        }
        columns.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

fn cast_column(
    a: &ArrayRef,
    field: &Field,
    options: &CastOptions<'_>,
    at: &dyn Fn(usize) -> String,
) -> Result<ArrayRef> {
    match cast_with_options(a, field.data_type(), options) {
        Ok(c) => Ok(c),
        Err(_) => {
            // Find the first failing row so the message can name it.
            for i in 0..a.len() {
                if cast_with_options(&a.slice(i, 1), field.data_type(), options).is_err() {
                    let shown =
                        datafusion::arrow::util::display::array_value_to_string(a, i).unwrap_or_else(|_| "?".into());
                    return Err(Error::invalid(
                        SqlState::InvalidText,
                        format!(
                            "invalid input for column \"{}\" of type {} at {}: \"{}\"",
                            field.name(),
                            type_name(field.data_type()),
                            at(i),
                            shown
                        ),
                    ));
                }
            }
            Err(Error::invalid(
                SqlState::DatatypeMismatch,
                format!("column \"{}\" cannot be cast from {} to {}", field.name(), a.data_type(), field.data_type()),
            ))
        }
    }
}

/// The PostgreSQL name of a stored column's Arrow type (Arrow's own name for anything else).
fn type_name(dt: &DataType) -> String {
    ColumnType::from_arrow(dt)
        .filter(|t| &t.arrow_type() == dt)
        .map_or_else(|| dt.to_string(), |t| t.sql_name().to_string())
}

/// How values print as PostgreSQL prints them (timestamps `YYYY-MM-DD HH:MM:SS[.ffffff]`, with the
/// offset for TIMESTAMPTZ), writing `null` for NULL. Used by the CLI, COPY TO and the tests alike.
pub fn display_options(null: &str) -> FormatOptions<'_> {
    FormatOptions::default()
        .with_null(null)
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"))
}

/// One formatter per column of `batch`, for printing its values with `options`.
pub fn formatters<'a>(
    batch: &'a RecordBatch,
    options: &'a FormatOptions<'a>,
) -> std::result::Result<Vec<ArrayFormatter<'a>>, datafusion::arrow::error::ArrowError> {
    batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), options)).collect()
}

/// Parses a duration such as `1 day`, `90 days`, `6h`, `15 minutes`, `500ms` into microseconds.
pub fn parse_duration_us(s: &str) -> Result<i64> {
    let bad = || {
        Error::invalid(
            SqlState::InvalidParameter,
            format!("invalid duration \"{s}\": expected a number and a unit such as '1 day', '6 hours', '15 minutes'"),
        )
    };
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let unit_us: f64 = match unit.trim() {
        "us" | "microsecond" | "microseconds" => 1.0,
        "ms" | "millisecond" | "milliseconds" => 1e3,
        "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600e6,
        "d" | "day" | "days" => 86_400e6,
        "w" | "week" | "weeks" => 7.0 * 86_400e6,
        _ => return Err(bad()),
    };
    let us = n * unit_us;
    if !(1.0..1e17).contains(&us) {
        return Err(bad());
    }
    Ok(us.round() as i64)
}

/// Formats microseconds as the shortest exact duration (`1 day`, `90 days`, `6 hours`).
pub fn format_duration_us(us: i64) -> String {
    const UNITS: [(i64, &str); 6] = [
        (604_800_000_000, "week"),
        (86_400_000_000, "day"),
        (3_600_000_000, "hour"),
        (60_000_000, "minute"),
        (1_000_000, "second"),
        (1_000, "millisecond"),
    ];
    for (size, name) in UNITS {
        if us % size == 0 {
            let n = us / size;
            return format!("{n} {name}{}", if n == 1 { "" } else { "s" });
        }
    }
    format!("{us} microseconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration_us("1 day").unwrap(), 86_400_000_000);
        assert_eq!(parse_duration_us("90 days").unwrap(), 90 * 86_400_000_000);
        assert_eq!(parse_duration_us("6h").unwrap(), 6 * 3_600_000_000);
        assert_eq!(parse_duration_us(" 15 Minutes ").unwrap(), 15 * 60_000_000);
        assert!(parse_duration_us("-1 day").is_err());
        assert!(parse_duration_us("day").is_err());
        assert!(parse_duration_us("3 fortnights").is_err());
        assert_eq!(format_duration_us(86_400_000_000), "1 day");
        assert_eq!(format_duration_us(90 * 86_400_000_000), "90 days");
        assert_eq!(format_duration_us(14 * 86_400_000_000), "2 weeks");
    }
}
