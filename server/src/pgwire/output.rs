//! Result values in PostgreSQL's output formats.
//!
//! A PostgreSQL client reads every value in the text its type's output function writes: `4` and
//! `1e+20` for a float8 (`float8out`), `Infinity`, `2024-01-01 00:00:00` for a timestamp,
//! `2 days 01:30:00` for an interval, `{1.5,NULL}` for an array, `(1,"a b")` for a record.
//! arrow-pg's encoder writes Rust's forms instead (`4.0`, `1e20`, `inf`, six fractional digits on
//! every timestamp, an interval of `49:30:00`): Java's parser refuses `inf`, and no client shows the
//! values as PostgreSQL would. So every column a client reads as text is written here, by the rules
//! of PostgreSQL's output function for its type; the columns it reads in binary, and the types
//! without a writer here, go through arrow-pg's encoder, whose binary forms are PostgreSQL's.
//!
//! The session's settings apply as in PostgreSQL: `extra_float_digits` (shortest exact digits when
//! above zero, `%.{15+n}g` otherwise), `TimeZone` for `timestamptz`, and the output styles; a
//! `DateStyle` other than ISO, an `IntervalStyle` other than `postgres` and `bytea_output = escape`
//! are left to arrow-pg's encoder.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use chrono::{Datelike, NaiveDate, Offset, TimeZone};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::*;
use datafusion::prelude::DataFrame;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use trafficdb::SqlState;

use crate::pgwire::results::{api_error, user_error};

tokio::task_local! {
    /// The result formats of the portal being executed in the extended protocol (query hooks are
    /// not given the portal); unset in the simple protocol, where every column is text.
    pub static RESULT_FORMAT: Format;
}

/// The formats the client asked for the results of the statement being run.
pub fn result_format() -> Format {
    RESULT_FORMAT.try_with(Clone::clone).unwrap_or(Format::UnifiedText)
}

/// `fields` named as the client is told their names ([`crate::pgwire::names::client_name`]).
pub fn client_fields(fields: Vec<FieldInfo>) -> Vec<FieldInfo> {
    use crate::pgwire::names::client_name;
    if fields.iter().all(|f| client_name(f.name()).len() == f.name().len()) {
        return fields;
    }
    fields
        .into_iter()
        .map(|f| {
            FieldInfo::new(
                client_name(f.name()).to_string(),
                f.table_id(),
                f.column_id(),
                f.datatype().clone(),
                f.format(),
            )
            .with_format_options(f.format_options().clone())
        })
        .collect()
}

/// The rows of `df` in `format`, as PostgreSQL would send them to a session with `metadata`'s
/// settings.
pub async fn encode(df: DataFrame, format: &Format, metadata: &HashMap<String, String>) -> PgWireResult<QueryResponse> {
    let schema = df.schema().as_arrow().clone();
    let batches = df.execute_stream().await.map_err(api_error)?;
    encode_stream(&schema, batches, format, metadata)
}

/// As [`encode`], the rows of a stream with the result schema `schema` (the plan's, with the
/// column names the client sees).
pub fn encode_stream(
    schema: &datafusion::arrow::datatypes::Schema,
    batches: datafusion::execution::SendableRecordBatchStream,
    format: &Format,
    metadata: &HashMap<String, String>,
) -> PgWireResult<QueryResponse> {
    let settings = Arc::new(Settings::from_metadata(metadata));
    let fields = Arc::new(client_fields(arrow_schema_to_pg_fields(schema, format, Some(settings.library.clone()))?));
    let schema = fields.clone();
    let rows = batches.flat_map(move |batch| {
        let rows = match batch {
            Ok(batch) => encode_batch(&schema, &batch, &settings),
            Err(e) => vec![Err(api_error(e))],
        };
        futures::stream::iter(rows)
    });
    Ok(QueryResponse::new(fields, rows))
}

/// The session settings the output functions read.
pub struct Settings {
    extra_float_digits: i8,
    /// `TimeZone`; UTC when unset.
    time_zone: Option<Tz>,
    iso_dates: bool,
    postgres_intervals: bool,
    hex_bytea: bool,
    /// The same settings for arrow-pg's encoder.
    library: Arc<FormatOptions>,
}

impl Settings {
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Settings {
        let library = FormatOptions::from_client_metadata(metadata);
        let time_zone = metadata.get("timezone").and_then(|tz| tz.parse::<Tz>().ok());
        Settings {
            extra_float_digits: library.extra_float_digits,
            time_zone,
            iso_dates: library.date_style.trim_start().to_ascii_uppercase().starts_with("ISO"),
            postgres_intervals: library.interval_style.eq_ignore_ascii_case("postgres"),
            hex_bytea: library.bytea_output.eq_ignore_ascii_case("hex"),
            library: Arc::new(library),
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::from_metadata(&HashMap::new())
    }
}

/// One batch's rows.
fn encode_batch(fields: &Arc<Vec<FieldInfo>>, batch: &RecordBatch, settings: &Settings) -> Vec<PgWireResult<DataRow>> {
    let schema = batch.schema();
    let mut columns: Vec<Column<'_>> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .zip(fields.iter())
        .map(|((array, field), pg)| Column::new(array, field, pg, settings))
        .collect();
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut buf = BytesMut::new();
    for row in 0..batch.num_rows() {
        for column in &mut columns {
            if let Err(e) = column.write(row, &mut buf) {
                rows.push(Err(e));
                return rows;
            }
        }
        rows.push(Ok(DataRow::new(buf.split(), columns.len() as i16)));
    }
    rows
}

/// How one result column is written.
enum Column<'a> {
    Text(TextColumn<'a>),
    Library { array: &'a ArrayRef, field: &'a Field, pg: &'a FieldInfo, encoder: DataRowEncoder },
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef, field: &'a Field, pg: &'a FieldInfo, settings: &'a Settings) -> Column<'a> {
        if pg.format() == FieldFormat::Text
            && let Some(text) = TextColumn::new(array.as_ref(), settings)
        {
            return Column::Text(text);
        }
        Column::Library { array, field, pg, encoder: DataRowEncoder::new(Arc::new(vec![pg.clone()])) }
    }

    /// Appends the value at `row` as a DataRow field: its length, then its bytes.
    fn write(&mut self, row: usize, out: &mut BytesMut) -> PgWireResult<()> {
        match self {
            Column::Text(text) => {
                if text.is_null(row) {
                    out.put_i32(-1);
                    return Ok(());
                }
                let at = out.len();
                out.put_i32(0);
                text.write(row, out)?;
                let len = (out.len() - at - 4) as i32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                Ok(())
            }
            Column::Library { array, field, pg, encoder } => {
                encode_value(encoder, array, row, field, pg)?;
                out.extend_from_slice(&encoder.take_row().data);
                Ok(())
            }
        }
    }
}

/// Writes one value of an array in PostgreSQL's text format.
type Writer<'a> = Box<dyn Fn(usize, &mut BytesMut) -> PgWireResult<()> + Send + Sync + 'a>;

/// An array's values in PostgreSQL's text output format.
pub struct TextColumn<'a> {
    nulls: Option<NullBuffer>,
    write: Writer<'a>,
}

impl<'a> TextColumn<'a> {
    /// `None` for a type written here only by arrow-pg's encoder.
    pub fn new(array: &'a dyn Array, settings: &'a Settings) -> Option<TextColumn<'a>> {
        Some(TextColumn { nulls: array.logical_nulls(), write: writer(array, settings)? })
    }

    pub fn is_null(&self, row: usize) -> bool {
        self.nulls.as_ref().is_some_and(|n| n.is_null(row))
    }

    /// Appends the (non-null) value at `row`.
    pub fn write(&self, row: usize, out: &mut BytesMut) -> PgWireResult<()> {
        (self.write)(row, out)
    }
}

macro_rules! integers {
    ($array:expr, $t:ty) => {{
        let a = $array.as_primitive::<$t>();
        Box::new(move |i, o: &mut BytesMut| {
            o.put_slice(itoa::Buffer::new().format(a.value(i)).as_bytes());
            Ok(())
        })
    }};
}

fn writer<'a>(array: &'a dyn Array, s: &'a Settings) -> Option<Writer<'a>> {
    use DataType as D;
    let micros = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 1_000_000i64,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1,
        TimeUnit::Nanosecond => -1_000,
    };
    Some(match array.data_type() {
        D::Null => Box::new(|_, _| Ok(())),
        D::Boolean => {
            let a = array.as_boolean();
            Box::new(move |i, o| {
                o.put_u8(if a.value(i) { b't' } else { b'f' });
                Ok(())
            })
        }
        D::Int8 => integers!(array, Int8Type),
        D::Int16 => integers!(array, Int16Type),
        D::Int32 => integers!(array, Int32Type),
        D::Int64 => integers!(array, Int64Type),
        D::UInt8 => integers!(array, UInt8Type),
        D::UInt16 => integers!(array, UInt16Type),
        D::UInt32 => integers!(array, UInt32Type),
        D::UInt64 => integers!(array, UInt64Type),
        D::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            let extra = s.extra_float_digits;
            Box::new(move |i, o| {
                float4(a.value(i), extra, o);
                Ok(())
            })
        }
        D::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            let extra = s.extra_float_digits;
            Box::new(move |i, o| {
                float8(a.value(i), extra, o);
                Ok(())
            })
        }
        D::Decimal128(_, scale) => {
            let a = array.as_primitive::<Decimal128Type>();
            let scale = *scale;
            Box::new(move |i, o| {
                decimal(a.value(i), scale, o);
                Ok(())
            })
        }
        D::Utf8 => {
            let a = array.as_string::<i32>();
            Box::new(move |i, o| {
                o.put_slice(a.value(i).as_bytes());
                Ok(())
            })
        }
        D::LargeUtf8 => {
            let a = array.as_string::<i64>();
            Box::new(move |i, o| {
                o.put_slice(a.value(i).as_bytes());
                Ok(())
            })
        }
        D::Utf8View => {
            let a = array.as_string_view();
            Box::new(move |i, o| {
                o.put_slice(a.value(i).as_bytes());
                Ok(())
            })
        }
        D::Binary if s.hex_bytea => {
            let a = array.as_binary::<i32>();
            Box::new(move |i, o| {
                bytea(a.value(i), o);
                Ok(())
            })
        }
        D::LargeBinary if s.hex_bytea => {
            let a = array.as_binary::<i64>();
            Box::new(move |i, o| {
                bytea(a.value(i), o);
                Ok(())
            })
        }
        D::BinaryView if s.hex_bytea => {
            let a = array.as_binary_view();
            Box::new(move |i, o| {
                bytea(a.value(i), o);
                Ok(())
            })
        }
        D::Date32 if s.iso_dates => {
            let a = array.as_primitive::<Date32Type>();
            Box::new(move |i, o| date(a.value(i) as i64, o))
        }
        D::Date64 if s.iso_dates => {
            let a = array.as_primitive::<Date64Type>();
            Box::new(move |i, o| date(a.value(i).div_euclid(86_400_000), o))
        }
        D::Time32(unit) => {
            let a = i32s(array)?;
            let m = micros(unit);
            Box::new(move |i, o| {
                let us = scale_micros(a[i] as i64, m);
                clock(us.div_euclid(1_000_000), us.rem_euclid(1_000_000), o);
                Ok(())
            })
        }
        D::Time64(unit) => {
            let a = i64s(array)?;
            let m = micros(unit);
            Box::new(move |i, o| {
                let us = scale_micros(a[i], m);
                clock(us.div_euclid(1_000_000), us.rem_euclid(1_000_000), o);
                Ok(())
            })
        }
        D::Timestamp(unit, tz) if s.iso_dates => {
            let a = i64s(array)?;
            let m = micros(unit);
            match tz {
                None => Box::new(move |i, o| timestamp(scale_micros(a[i], m), None, o)),
                Some(_) => {
                    let zone = s.time_zone.unwrap_or_else(|| "UTC".parse().expect("UTC is a time zone"));
                    Box::new(move |i, o| timestamp(scale_micros(a[i], m), Some(&zone), o))
                }
            }
        }
        D::Interval(unit) if s.postgres_intervals => match unit {
            IntervalUnit::YearMonth => {
                let a = array.as_primitive::<IntervalYearMonthType>();
                Box::new(move |i, o| {
                    interval(a.value(i), 0, 0, o);
                    Ok(())
                })
            }
            IntervalUnit::DayTime => {
                let a = array.as_primitive::<IntervalDayTimeType>();
                Box::new(move |i, o| {
                    let v = a.value(i);
                    interval(0, v.days, v.milliseconds as i64 * 1000, o);
                    Ok(())
                })
            }
            IntervalUnit::MonthDayNano => {
                let a = array.as_primitive::<IntervalMonthDayNanoType>();
                Box::new(move |i, o| {
                    let v = a.value(i);
                    interval(v.months, v.days, scale_micros(v.nanoseconds, -1000), o);
                    Ok(())
                })
            }
        },
        // A difference of timestamps: PostgreSQL's `timestamp - timestamp` gives whole days and the
        // rest (`justify_hours`).
        D::Duration(unit) if s.postgres_intervals => {
            let a = i64s(array)?;
            let m = micros(unit);
            Box::new(move |i, o| {
                let us = scale_micros(a[i], m);
                const DAY: i64 = 86_400_000_000;
                let days = i32::try_from(us / DAY).map_err(|_| out_of_range("interval"))?;
                interval(0, days, us % DAY, o);
                Ok(())
            })
        }
        D::List(_) => {
            let a = array.as_list::<i32>();
            list(a.values().as_ref(), move |i| a.value_offsets()[i] as usize..a.value_offsets()[i + 1] as usize, s)?
        }
        D::LargeList(_) => {
            let a = array.as_list::<i64>();
            list(a.values().as_ref(), move |i| a.value_offsets()[i] as usize..a.value_offsets()[i + 1] as usize, s)?
        }
        D::FixedSizeList(_, n) => {
            let a = array.as_fixed_size_list();
            let n = *n as usize;
            list(a.values().as_ref(), move |i| i * n..(i + 1) * n, s)?
        }
        D::Struct(_) => {
            let a = array.as_struct();
            let fields: Vec<TextColumn<'a>> =
                a.columns().iter().map(|c| TextColumn::new(c.as_ref(), s)).collect::<Option<_>>()?;
            Box::new(move |i, o| record(&fields, i, o))
        }
        D::Dictionary(_, _) => {
            let a = array.as_any_dictionary();
            let keys = a.normalized_keys();
            let values = writer(a.values().as_ref(), s)?;
            Box::new(move |i, o| values(keys[i], o))
        }
        _ => return None,
    })
}

/// The values of a time, timestamp or duration array of 64-bit units.
fn i64s(array: &dyn Array) -> Option<ScalarBuffer<i64>> {
    use DataType as D;
    use TimeUnit as U;
    Some(match array.data_type() {
        D::Timestamp(U::Second, _) => array.as_primitive::<TimestampSecondType>().values().clone(),
        D::Timestamp(U::Millisecond, _) => array.as_primitive::<TimestampMillisecondType>().values().clone(),
        D::Timestamp(U::Microsecond, _) => array.as_primitive::<TimestampMicrosecondType>().values().clone(),
        D::Timestamp(U::Nanosecond, _) => array.as_primitive::<TimestampNanosecondType>().values().clone(),
        D::Time64(U::Microsecond) => array.as_primitive::<Time64MicrosecondType>().values().clone(),
        D::Time64(U::Nanosecond) => array.as_primitive::<Time64NanosecondType>().values().clone(),
        D::Duration(U::Second) => array.as_primitive::<DurationSecondType>().values().clone(),
        D::Duration(U::Millisecond) => array.as_primitive::<DurationMillisecondType>().values().clone(),
        D::Duration(U::Microsecond) => array.as_primitive::<DurationMicrosecondType>().values().clone(),
        D::Duration(U::Nanosecond) => array.as_primitive::<DurationNanosecondType>().values().clone(),
        _ => return None,
    })
}

/// The values of a time array of 32-bit units.
fn i32s(array: &dyn Array) -> Option<ScalarBuffer<i32>> {
    Some(match array.data_type() {
        DataType::Time32(TimeUnit::Second) => array.as_primitive::<Time32SecondType>().values().clone(),
        DataType::Time32(TimeUnit::Millisecond) => array.as_primitive::<Time32MillisecondType>().values().clone(),
        _ => return None,
    })
}

/// A value in microseconds from one in units of `m` microseconds (negative: 1/-m of one),
/// rounded as PostgreSQL rounds its input (half to even).
fn scale_micros(v: i64, m: i64) -> i64 {
    if m > 0 {
        return v.saturating_mul(m);
    }
    let d = -m;
    let (q, r) = (v.div_euclid(d), v.rem_euclid(d));
    if 2 * r > d || (2 * r == d && q % 2 != 0) { q + 1 } else { q }
}

fn out_of_range(what: &str) -> pgwire::error::PgWireError {
    user_error(SqlState::DatetimeFieldOverflow, format!("{what} out of range"))
}

/// `float8out`.
pub fn float8(v: f64, extra_float_digits: i8, o: &mut BytesMut) {
    float(v, || format!("{v:e}"), 15, extra_float_digits, o)
}

/// `float4out`.
pub fn float4(v: f32, extra_float_digits: i8, o: &mut BytesMut) {
    float(v as f64, || format!("{v:e}"), 6, extra_float_digits, o)
}

/// PostgreSQL's float output: with `extra_float_digits` above zero the shortest digits that read
/// back exactly (`shortest`, in Rust's `{:e}` form), in fixed notation for decimal exponents from
/// -4 to `digits` - 1 and `1.5e+20` beyond; otherwise `%.{digits + extra}g`.
fn float(v: f64, shortest: impl Fn() -> String, digits: i32, extra: i8, o: &mut BytesMut) {
    if v.is_nan() {
        return o.put_slice(b"NaN");
    }
    if v.is_infinite() {
        return o.put_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    }
    if extra > 0 {
        let text = shortest();
        let (mantissa, exp) = text.split_once('e').expect("{:e} has an exponent");
        let exp: i32 = exp.parse().expect("{:e} has a decimal exponent");
        let (negative, mantissa) = match mantissa.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, mantissa),
        };
        let digits_of: String = mantissa.chars().filter(|c| *c != '.').collect();
        positional(negative, digits_of.trim_end_matches('0'), exp, digits, o);
    } else {
        let precision = (digits + extra as i32).max(1);
        let text = format!("{:.*e}", (precision - 1) as usize, v);
        let (mantissa, exp) = text.split_once('e').expect("{:e} has an exponent");
        let exp: i32 = exp.parse().expect("{:e} has a decimal exponent");
        if exp < -4 || exp >= precision {
            o.put_slice(trim_fraction(mantissa).as_bytes());
            exponent(exp, o);
        } else {
            let fixed = format!("{:.*}", (precision - 1 - exp) as usize, v);
            o.put_slice(trim_fraction(&fixed).as_bytes());
        }
    }
}

/// `digits` (no trailing zeros; empty for zero) times 10^`exp` for its first digit, as PostgreSQL's
/// shortest float output writes it.
fn positional(negative: bool, digits: &str, exp: i32, fixed_below: i32, o: &mut BytesMut) {
    if negative {
        o.put_u8(b'-');
    }
    if digits.is_empty() {
        return o.put_u8(b'0');
    }
    let d = digits.as_bytes();
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            o.put_slice(b"0.");
            o.put_bytes(b'0', (-exp - 1) as usize);
            o.put_slice(d);
        } else if d.len() <= exp as usize + 1 {
            o.put_slice(d);
            o.put_bytes(b'0', exp as usize + 1 - d.len());
        } else {
            o.put_slice(&d[..exp as usize + 1]);
            o.put_u8(b'.');
            o.put_slice(&d[exp as usize + 1..]);
        }
    } else {
        o.put_u8(d[0]);
        if d.len() > 1 {
            o.put_u8(b'.');
            o.put_slice(&d[1..]);
        }
        exponent(exp, o);
    }
}

/// `e+05`, `e-10`, `e+300`: C's exponent, signed and at least two digits.
fn exponent(exp: i32, o: &mut BytesMut) {
    o.put_u8(b'e');
    o.put_u8(if exp < 0 { b'-' } else { b'+' });
    let e = exp.unsigned_abs();
    if e < 10 {
        o.put_u8(b'0');
    }
    o.put_slice(itoa::Buffer::new().format(e).as_bytes());
}

/// `1.500` → `1.5`, `2.000` → `2`, as `%g` drops trailing zeros.
fn trim_fraction(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

/// `numeric_out` of an unscaled value and its scale.
fn decimal(v: i128, scale: i8, o: &mut BytesMut) {
    if v < 0 {
        o.put_u8(b'-');
    }
    let digits = v.unsigned_abs().to_string();
    if scale <= 0 {
        o.put_slice(digits.as_bytes());
        if v != 0 {
            o.put_bytes(b'0', scale.unsigned_abs() as usize);
        }
        return;
    }
    let scale = scale as usize;
    if digits.len() <= scale {
        o.put_slice(b"0.");
        o.put_bytes(b'0', scale - digits.len());
        o.put_slice(digits.as_bytes());
    } else {
        let point = digits.len() - scale;
        o.put_slice(&digits.as_bytes()[..point]);
        o.put_u8(b'.');
        o.put_slice(&digits.as_bytes()[point..]);
    }
}

/// `byteaout` with `bytea_output = hex`.
fn bytea(v: &[u8], o: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    o.put_slice(b"\\x");
    for b in v {
        o.put_u8(HEX[(b >> 4) as usize]);
        o.put_u8(HEX[(b & 15) as usize]);
    }
}

/// Days since 1970-01-01 as a date; `None` beyond chrono's range.
fn day(days: i64) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(i32::try_from(days.checked_add(719_163)?).ok()?)
}

/// A date's year, month and day in ISO style; `true` when it is before Christ (PostgreSQL writes
/// `0044-03-15 BC`, not a year 0 or a negative year).
fn ymd(d: NaiveDate, o: &mut BytesMut) -> bool {
    let (year, bc) = if d.year() <= 0 { (1 - d.year(), true) } else { (d.year(), false) };
    if year < 1000 {
        o.put_bytes(
            b'0',
            if year < 10 {
                3
            } else if year < 100 {
                2
            } else {
                1
            },
        );
    }
    o.put_slice(itoa::Buffer::new().format(year).as_bytes());
    o.put_u8(b'-');
    two(d.month(), o);
    o.put_u8(b'-');
    two(d.day(), o);
    bc
}

fn two(v: u32, o: &mut BytesMut) {
    o.put_u8(b'0' + (v / 10 % 10) as u8);
    o.put_u8(b'0' + (v % 10) as u8);
}

/// `date_out`.
fn date(days: i64, o: &mut BytesMut) -> PgWireResult<()> {
    let d = day(days).ok_or_else(|| out_of_range("date"))?;
    if ymd(d, o) {
        o.put_slice(b" BC");
    }
    Ok(())
}

/// `HH:MM:SS` and the fraction without its trailing zeros, from seconds of the day.
fn clock(seconds: i64, micros: i64, o: &mut BytesMut) {
    two((seconds / 3600) as u32, o);
    o.put_u8(b':');
    two((seconds / 60 % 60) as u32, o);
    o.put_u8(b':');
    two((seconds % 60) as u32, o);
    fraction(micros, o);
}

/// `.5`, `.000123`: microseconds as a fraction of a second without trailing zeros; nothing for 0.
fn fraction(micros: i64, o: &mut BytesMut) {
    if micros == 0 {
        return;
    }
    let mut digits = [b'0'; 6];
    let mut v = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    let end = 6 - digits.iter().rev().take_while(|d| **d == b'0').count();
    o.put_u8(b'.');
    o.put_slice(&digits[..end]);
}

/// `timestamp_out` (no zone) and `timestamptz_out` (in `zone`), ISO style.
fn timestamp(micros: i64, zone: Option<&Tz>, o: &mut BytesMut) -> PgWireResult<()> {
    let offset = match zone {
        None => 0,
        Some(zone) => {
            let utc = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(|| out_of_range("timestamp"))?;
            zone.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc() as i64
        }
    };
    let local = micros.checked_add(offset * 1_000_000).ok_or_else(|| out_of_range("timestamp"))?;
    let seconds = local.div_euclid(1_000_000);
    let d = day(seconds.div_euclid(86_400)).ok_or_else(|| out_of_range("timestamp"))?;
    let bc = ymd(d, o);
    o.put_u8(b' ');
    clock(seconds.rem_euclid(86_400), local.rem_euclid(1_000_000), o);
    if zone.is_some() {
        let sign = if offset < 0 { b'-' } else { b'+' };
        let abs = offset.unsigned_abs() as u32;
        o.put_u8(sign);
        two(abs / 3600, o);
        if !abs.is_multiple_of(3600) {
            o.put_u8(b':');
            two(abs / 60 % 60, o);
            if !abs.is_multiple_of(60) {
                o.put_u8(b':');
                two(abs % 60, o);
            }
        }
    }
    if bc {
        o.put_slice(b" BC");
    }
    Ok(())
}

/// `interval_out` in the `postgres` style: `1 year 2 mons -3 days +04:05:06.5`.
fn interval(months: i32, days: i32, micros: i64, o: &mut BytesMut) {
    let mut zero = true;
    let mut before = false;
    let mut part = |value: i64, unit: &str, o: &mut BytesMut| {
        if value == 0 {
            return;
        }
        if !zero {
            o.put_u8(b' ');
        }
        if before && value > 0 {
            o.put_u8(b'+');
        }
        o.put_slice(itoa::Buffer::new().format(value).as_bytes());
        o.put_u8(b' ');
        o.put_slice(unit.as_bytes());
        if value != 1 {
            o.put_u8(b's');
        }
        // As PostgreSQL: a negative field puts a `+` on the next positive one only.
        before = value < 0;
        zero = false;
    };
    part((months / 12) as i64, "year", o);
    part((months % 12) as i64, "mon", o);
    part(days as i64, "day", o);
    if zero || micros != 0 {
        if !zero {
            o.put_u8(b' ');
        }
        if micros < 0 {
            o.put_u8(b'-');
        } else if before {
            o.put_u8(b'+');
        }
        let abs = micros.unsigned_abs();
        let (hours, rest) = (abs / 3_600_000_000, abs % 3_600_000_000);
        if hours < 10 {
            o.put_u8(b'0');
        }
        o.put_slice(itoa::Buffer::new().format(hours).as_bytes());
        o.put_u8(b':');
        two((rest / 60_000_000) as u32, o);
        o.put_u8(b':');
        two((rest / 1_000_000 % 60) as u32, o);
        fraction((rest % 1_000_000) as i64, o);
    }
}

/// `array_out` of the elements of each row (`range(row)` of `values`).
fn list<'a>(
    values: &'a dyn Array,
    range: impl Fn(usize) -> std::ops::Range<usize> + Send + Sync + 'a,
    s: &'a Settings,
) -> Option<Writer<'a>> {
    let nested = matches!(values.data_type(), DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..));
    let element = TextColumn::new(values, s)?;
    Some(Box::new(move |i, o| {
        o.put_u8(b'{');
        let mut scratch = BytesMut::new();
        for (n, j) in range(i).enumerate() {
            if n > 0 {
                o.put_u8(b',');
            }
            if element.is_null(j) {
                o.put_slice(b"NULL");
            } else if nested {
                element.write(j, o)?;
            } else {
                scratch.clear();
                element.write(j, &mut scratch)?;
                quoted(&scratch, array_needs_quotes(&scratch), b'\\', o);
            }
        }
        o.put_u8(b'}');
        Ok(())
    }))
}

fn array_needs_quotes(v: &[u8]) -> bool {
    v.is_empty()
        || v.eq_ignore_ascii_case(b"NULL")
        || v.iter().any(|b| matches!(b, b'{' | b'}' | b'"' | b'\\' | b',' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
}

/// `v`, in double quotes when `quote`, with `"` and `\` escaped by `escape` (array_out: `\`,
/// record_out: a doubled character).
fn quoted(v: &[u8], quote: bool, escape: u8, o: &mut BytesMut) {
    if !quote {
        return o.put_slice(v);
    }
    o.put_u8(b'"');
    for &b in v {
        if b == b'"' || b == b'\\' {
            o.put_u8(if escape == b'\\' { b'\\' } else { b });
        }
        o.put_u8(b);
    }
    o.put_u8(b'"');
}

/// `record_out`: `(1,,"a b")`, a null field empty.
fn record(fields: &[TextColumn<'_>], i: usize, o: &mut BytesMut) -> PgWireResult<()> {
    o.put_u8(b'(');
    let mut scratch = BytesMut::new();
    for (n, f) in fields.iter().enumerate() {
        if n > 0 {
            o.put_u8(b',');
        }
        if f.is_null(i) {
            continue;
        }
        scratch.clear();
        f.write(i, &mut scratch)?;
        let quote = scratch.is_empty()
            || scratch.iter().any(|b| matches!(b, b'"' | b'\\' | b'(' | b')' | b',') || b.is_ascii_whitespace());
        quoted(&scratch, quote, b'"', o);
    }
    o.put_u8(b')');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut BytesMut)) -> String {
        let mut o = BytesMut::new();
        f(&mut o);
        String::from_utf8(o.to_vec()).unwrap()
    }

    #[test]
    fn floats_read_as_postgresql_writes_them() {
        // (value, float8out with extra_float_digits 1, with 0, with -3), as PostgreSQL 15 writes them.
        let cases: &[(f64, &str, &str, &str)] = &[
            (4.0, "4", "4", "4"),
            (0.1, "0.1", "0.1", "0.1"),
            (1.0 / 3.0, "0.3333333333333333", "0.333333333333333", "0.333333333333"),
            (1e20, "1e+20", "1e+20", "1e+20"),
            (1e15, "1e+15", "1e+15", "1e+15"),
            (1e14, "100000000000000", "100000000000000", "1e+14"),
            (123456789012345.6, "123456789012345.6", "123456789012346", "1.23456789012e+14"),
            (0.0001, "0.0001", "0.0001", "0.0001"),
            (0.00001, "1e-05", "1e-05", "1e-05"),
            (1.5e-7, "1.5e-07", "1.5e-07", "1.5e-07"),
            (-2.5, "-2.5", "-2.5", "-2.5"),
            (0.0, "0", "0", "0"),
            (-0.0, "-0", "-0", "-0"),
            (1e300, "1e+300", "1e+300", "1e+300"),
            (f64::MAX, "1.7976931348623157e+308", "1.79769313486232e+308", "1.79769313486e+308"),
            (f64::INFINITY, "Infinity", "Infinity", "Infinity"),
            (f64::NEG_INFINITY, "-Infinity", "-Infinity", "-Infinity"),
            (f64::NAN, "NaN", "NaN", "NaN"),
            (100.0, "100", "100", "100"),
            (1234.5678, "1234.5678", "1234.5678", "1234.5678"),
        ];
        for &(v, one, zero, minus3) in cases {
            assert_eq!(text(|o| float8(v, 1, o)), one, "{v:e} at 1");
            assert_eq!(text(|o| float8(v, 3, o)), one, "{v:e} at 3");
            assert_eq!(text(|o| float8(v, 0, o)), zero, "{v:e} at 0");
            assert_eq!(text(|o| float8(v, -3, o)), minus3, "{v:e} at -3");
        }
        let cases: &[(f32, &str, &str)] = &[
            (4.0, "4", "4"),
            (0.1, "0.1", "0.1"),
            (1234567.0, "1.234567e+06", "1.23457e+06"),
            (100000.0, "100000", "100000"),
            (1.0 / 3.0, "0.33333334", "0.333333"),
        ];
        for &(v, one, zero) in cases {
            assert_eq!(text(|o| float4(v, 1, o)), one, "{v:e} at 1");
            assert_eq!(text(|o| float4(v, 0, o)), zero, "{v:e} at 0");
        }
    }

    #[test]
    fn dates_times_and_intervals_read_as_postgresql_writes_them() {
        let utc: Tz = "UTC".parse().unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        let ts = |us: i64, zone: Option<&Tz>| text(|o| timestamp(us, zone, o).unwrap());
        assert_eq!(ts(1_704_067_200_000_000, None), "2024-01-01 00:00:00");
        assert_eq!(ts(1_704_067_199_999_999, None), "2023-12-31 23:59:59.999999");
        assert_eq!(ts(1_704_067_200_500_000, Some(&utc)), "2024-01-01 00:00:00.5+00");
        assert_eq!(ts(1_719_835_200_000_000, Some(&berlin)), "2024-07-01 14:00:00+02");
        assert_eq!(ts(1_704_067_200_000_000, Some(&kolkata)), "2024-01-01 05:30:00+05:30");
        assert_eq!(ts(-62_135_596_800_000_000 - 86_400_000_000, None), "0001-12-31 00:00:00 BC");
        assert_eq!(text(|o| date(-719_162 - 366, o).unwrap()), "0001-01-01 BC");
        assert_eq!(text(|o| date(19_782, o).unwrap()), "2024-02-29");
        assert_eq!(scale_micros(1_500, -1000), 2);
        assert_eq!(scale_micros(2_500, -1000), 2);
        assert_eq!(scale_micros(-1_500, -1000), -2);
        let iv = |m: i32, d: i32, us: i64| text(|o| interval(m, d, us, o));
        assert_eq!(iv(0, 0, 0), "00:00:00");
        assert_eq!(iv(0, 1, 7_200_000_000), "1 day 02:00:00");
        assert_eq!(iv(14, 3, 14_706_500_000), "1 year 2 mons 3 days 04:05:06.5");
        assert_eq!(iv(0, -1, 7_200_000_000), "-1 days +02:00:00");
        assert_eq!(iv(0, 0, -1_500_000), "-00:00:01.5");
        assert_eq!(iv(-13, 0, 0), "-1 years -1 mons");
        assert_eq!(iv(0, 2, 5_400_000_000), "2 days 01:30:00");
        assert_eq!(iv(0, 0, 360_000_000_000), "100:00:00");
    }

    #[test]
    fn every_unit_of_every_time_type_is_written() {
        use datafusion::arrow::array::*;
        let s = Settings::default();
        let day = 86_400i64;
        let columns: Vec<(ArrayRef, &str)> = vec![
            (Arc::new(TimestampSecondArray::from(vec![day])), "1970-01-02 00:00:00"),
            (Arc::new(TimestampMillisecondArray::from(vec![day * 1000 + 5])), "1970-01-02 00:00:00.005"),
            (Arc::new(TimestampMicrosecondArray::from(vec![1]).with_timezone("UTC")), "1970-01-01 00:00:00.000001+00"),
            (
                Arc::new(TimestampNanosecondArray::from(vec![1_500]).with_timezone("+02:00")),
                "1970-01-01 00:00:00.000002+00",
            ),
            (Arc::new(Time32SecondArray::from(vec![3661])), "01:01:01"),
            (Arc::new(Time32MillisecondArray::from(vec![1])), "00:00:00.001"),
            (Arc::new(Time64MicrosecondArray::from(vec![10])), "00:00:00.00001"),
            (Arc::new(Time64NanosecondArray::from(vec![86_399_999_999_000])), "23:59:59.999999"),
            (Arc::new(DurationSecondArray::from(vec![day + 1])), "1 day 00:00:01"),
            (Arc::new(DurationMillisecondArray::from(vec![-1])), "-00:00:00.001"),
            (Arc::new(DurationMicrosecondArray::from(vec![-day * 1_000_000 * 2 - 1])), "-2 days -00:00:00.000001"),
            (Arc::new(DurationNanosecondArray::from(vec![1_000])), "00:00:00.000001"),
            (Arc::new(Date32Array::from(vec![0])), "1970-01-01"),
            (Arc::new(Date64Array::from(vec![-1])), "1969-12-31"),
            (Arc::new(IntervalYearMonthArray::from(vec![25])), "2 years 1 mon"),
            (Arc::new(IntervalDayTimeArray::from(vec![IntervalDayTime::new(1, 1)])), "1 day 00:00:00.001"),
            (
                Arc::new(IntervalMonthDayNanoArray::from(vec![IntervalMonthDayNano::new(0, -1, 7_200_000_000_000)])),
                "-1 days +02:00:00",
            ),
            (Arc::new(DictionaryArray::<Int32Type>::from_iter(["b", "a", "b"])), "b"),
            (Arc::new(BooleanArray::from(vec![false])), "f"),
            (Arc::new(UInt64Array::from(vec![u64::MAX])), "18446744073709551615"),
            (Arc::new(Decimal128Array::from(vec![-150]).with_precision_and_scale(10, 2).unwrap()), "-1.50"),
        ];
        for (array, want) in columns {
            let col =
                TextColumn::new(array.as_ref(), &s).unwrap_or_else(|| panic!("no writer for {}", array.data_type()));
            assert_eq!(text(|o| col.write(0, o).unwrap()), want, "{}", array.data_type());
        }
    }

    #[test]
    fn numerics_bytes_arrays_and_records_read_as_postgresql_writes_them() {
        assert_eq!(text(|o| decimal(12345, 2, o)), "123.45");
        assert_eq!(text(|o| decimal(-5, 3, o)), "-0.005");
        assert_eq!(text(|o| decimal(0, 2, o)), "0.00");
        assert_eq!(text(|o| decimal(7, -2, o)), "700");
        assert_eq!(text(|o| bytea(&[0, 0xab, 0x7f], o)), "\\x00ab7f");
        use datafusion::arrow::array::{Float64Array, ListArray, StringArray, StructArray};
        use datafusion::arrow::datatypes::Float64Type;
        let s = Settings::default();
        let floats = ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
            Some(vec![Some(1.0), None, Some(f64::INFINITY)]),
            Some(vec![]),
        ]);
        let col = TextColumn::new(&floats, &s).unwrap();
        assert_eq!(text(|o| col.write(0, o).unwrap()), "{1,NULL,Infinity}");
        assert_eq!(text(|o| col.write(1, o).unwrap()), "{}");
        let words: StringArray =
            vec![Some("a b"), Some(""), Some("null"), Some("q\"\\"), Some("x")].into_iter().collect();
        let offsets = datafusion::arrow::buffer::OffsetBuffer::new(vec![0, 5].into());
        let field = Arc::new(Field::new("item", DataType::Utf8, true));
        let list = ListArray::new(field, offsets, Arc::new(words.clone()), None);
        let col = TextColumn::new(&list, &s).unwrap();
        assert_eq!(text(|o| col.write(0, o).unwrap()), r#"{"a b","","null","q\"\\",x}"#);
        let record = StructArray::from(vec![
            (Arc::new(Field::new("a", DataType::Utf8, true)), Arc::new(words) as ArrayRef),
            (
                Arc::new(Field::new("b", DataType::Float64, true)),
                Arc::new(Float64Array::from(vec![Some(1.5), None, Some(2.0), Some(3.0), Some(4.0)])) as ArrayRef,
            ),
        ]);
        let col = TextColumn::new(&record, &s).unwrap();
        let rows: Vec<String> = (0..4).map(|i| text(|o| col.write(i, o).unwrap())).collect();
        assert_eq!(rows, ["(\"a b\",1.5)", "(\"\",)", "(null,2)", "(\"q\"\"\\\\\",3)"]);
    }
}
