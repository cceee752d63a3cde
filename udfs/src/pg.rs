//! PostgreSQL's functions that DataFusion lacks or names otherwise, with PostgreSQL's semantics:
//! `ceiling`, `sign`, `mod`, `div`, `width_bucket`, `variance`, `every`, `gen_random_uuid`,
//! `quote_ident`, `quote_literal`, `format`, `regexp_split_to_array`, `pg_typeof`, `make_timestamp`,
//! `justify_hours` / `justify_days` / `justify_interval`, `isfinite`, `clock_timestamp` and `age`.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, IntervalMonthDayNanoArray, ListBuilder, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::{FunctionRegistry, SessionState};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};

use crate::{SqlError, SqlState};

const DAY_NS: i64 = 86_400_000_000_000;

/// Registers the functions of this module.
pub fn install(state: &mut SessionState) -> Result<()> {
    // Other names of DataFusion's own.
    for (name, alias) in [("ceil", "ceiling"), ("signum", "sign"), ("uuid", "gen_random_uuid")] {
        if let Some(f) = state.scalar_functions().get(name).cloned() {
            state.register_udf(Arc::new((*f).clone().with_aliases([alias])))?;
        }
    }
    for (name, alias) in [("var_samp", "variance"), ("bool_and", "every")] {
        if let Some(f) = state.aggregate_functions().get(name).cloned() {
            state.register_udaf(Arc::new((*f).clone().with_aliases([alias])))?;
        }
    }
    let int2 = |name: &str, f: fn(i64, i64) -> Result<i64>| {
        create_udf(
            name,
            vec![DataType::Int64, DataType::Int64],
            DataType::Int64,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| binary_i64(args, f)),
        )
    };
    state.register_udf(Arc::new(int2(
        "mod",
        |a, b| if b == 0 { Err(division_by_zero()) } else { Ok(a.wrapping_rem(b)) },
    )))?;
    state.register_udf(Arc::new(int2("div", |a, b| {
        if b == 0 { Err(division_by_zero()) } else { a.checked_div(b).ok_or_else(|| out_of_range("bigint")) }
    })))?;
    state.register_udf(Arc::new(create_udf(
        "width_bucket",
        vec![DataType::Float64, DataType::Float64, DataType::Float64, DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(width_bucket),
    )))?;
    state.register_udf(Arc::new(text_fn("quote_ident", quote_ident)))?;
    state.register_udf(Arc::new(text_fn("quote_literal", quote_literal)))?;
    state.register_udf(Arc::new(ScalarUDF::from(Format::default())))?;
    state.register_udf(Arc::new(create_udf(
        "regexp_split_to_array",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new_list_field(DataType::Utf8, true))),
        Volatility::Immutable,
        Arc::new(regexp_split_to_array),
    )))?;
    state.register_udf(Arc::new(ScalarUDF::from(PgTypeof::default())))?;
    state.register_udf(Arc::new(create_udf(
        "make_timestamp",
        vec![DataType::Int64, DataType::Int64, DataType::Int64, DataType::Int64, DataType::Int64, DataType::Float64],
        DataType::Timestamp(TimeUnit::Microsecond, None),
        Volatility::Immutable,
        Arc::new(make_timestamp),
    )))?;
    state.register_udf(Arc::new(make_interval_udf()))?;
    for (name, hours, days) in
        [("justify_hours", true, false), ("justify_days", false, true), ("justify_interval", true, true)]
    {
        state.register_udf(Arc::new(justify_udf(name, hours, days)))?;
    }
    state.register_udf(Arc::new(ScalarUDF::from(IsFinite::default())))?;
    state.register_udf(Arc::new(create_udf(
        "clock_timestamp",
        vec![],
        DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        Volatility::Volatile,
        Arc::new(|_: &[ColumnarValue]| {
            let now = chrono::Utc::now().timestamp_micros();
            Ok(ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(Some(now), Some("+00:00".into()))))
        }),
    )))?;
    state.register_udf(Arc::new(ScalarUDF::from(Age::default())))?;
    Ok(())
}

fn division_by_zero() -> DataFusionError {
    DataFusionError::External(Box::new(SqlError { code: SqlState::DivisionByZero, message: "division by zero".into() }))
}

fn out_of_range(what: &str) -> DataFusionError {
    DataFusionError::External(Box::new(SqlError {
        code: SqlState::NumericValueOutOfRange,
        message: format!("{what} out of range"),
    }))
}

/// The arguments as arrays of one length (one row when all are scalars), and whether they were all
/// scalars.
pub fn arrays(args: &[ColumnarValue]) -> Result<(Vec<ArrayRef>, bool)> {
    let n = args.iter().find_map(|a| match a {
        ColumnarValue::Array(a) => Some(a.len()),
        ColumnarValue::Scalar(_) => None,
    });
    let all_scalar = n.is_none();
    let n = n.unwrap_or(1);
    Ok((args.iter().map(|a| a.to_array(n)).collect::<Result<_>>()?, all_scalar))
}

/// `out` as a function's answer: its one value when the arguments were all scalars.
pub fn answer(out: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
    }
    Ok(ColumnarValue::Array(out))
}

fn binary_i64(args: &[ColumnarValue], f: fn(i64, i64) -> Result<i64>) -> Result<ColumnarValue> {
    let (a, scalar) = arrays(args)?;
    let (x, y) = (a[0].as_primitive::<Int64Type>(), a[1].as_primitive::<Int64Type>());
    let out: Int64Array = x
        .iter()
        .zip(y.iter())
        .map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => f(x, y).map(Some),
            _ => Ok(None),
        })
        .collect::<Result<_>>()?;
    answer(Arc::new(out), scalar)
}

/// `width_bucket(x, low, high, count)`: the bucket of `x` among `count` equal buckets from `low` to
/// `high`; 0 below, `count + 1` at or above.
fn width_bucket(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, scalar) = arrays(args)?;
    let f = |i: usize| a[i].as_primitive::<Float64Type>();
    let (x, low, high, count) = (f(0), f(1), f(2), a[3].as_primitive::<Int64Type>());
    let mut out = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        if x.is_null(i) || low.is_null(i) || high.is_null(i) || count.is_null(i) {
            out.push(None);
            continue;
        }
        let (x, low, high, count) = (x.value(i), low.value(i), high.value(i), count.value(i));
        if count <= 0 {
            return Err(invalid("count must be greater than zero"));
        }
        if low == high || !low.is_finite() || !high.is_finite() {
            return Err(invalid("lower bound cannot equal upper bound"));
        }
        let bucket = if low < high {
            if x < low {
                0
            } else if x >= high {
                count + 1
            } else {
                ((x - low) / (high - low) * count as f64) as i64 + 1
            }
        } else if x > low {
            0
        } else if x <= high {
            count + 1
        } else {
            ((low - x) / (low - high) * count as f64) as i64 + 1
        };
        out.push(Some(bucket));
    }
    answer(Arc::new(Int64Array::from(out)), scalar)
}

fn invalid(message: &str) -> DataFusionError {
    DataFusionError::External(Box::new(SqlError { code: SqlState::InvalidParameter, message: message.into() }))
}

/// A function of one text argument to text.
pub fn text_fn(name: &str, f: fn(&str) -> String) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let (a, scalar) = arrays(args)?;
            let out: StringArray = a[0].as_string::<i32>().iter().map(|v| v.map(f)).collect();
            answer(Arc::new(out), scalar)
        }),
    )
}

/// `quote_ident`: in double quotes unless it is a lower-case identifier already.
pub fn quote_ident(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain { s.to_string() } else { format!("\"{}\"", s.replace('"', "\"\"")) }
}

/// `quote_literal`: in single quotes, `'` doubled; with a backslash, as an `E'...'` string.
pub fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if s.contains('\\') { format!("E'{}'", body.replace('\\', "\\\\")) } else { format!("'{body}'") }
}

/// `format(fmt, args...)`: `%s` (the value as text, NULL as nothing), `%I` (quoted as an
/// identifier), `%L` (quoted as a literal, NULL as `NULL`), `%%`, and `%n$s` to name the argument.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Format {
    signature: Signature,
}

impl Default for Format {
    fn default() -> Format {
        Format { signature: Signature::variadic_any(Volatility::Stable) }
    }
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (a, scalar) = arrays(&args.args)?;
        let texts: Vec<ArrayRef> =
            a.iter().map(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8)).collect::<Result<_, _>>()?;
        let texts: Vec<&StringArray> = texts.iter().map(|c| c.as_string::<i32>()).collect();
        let mut out = StringBuilder::new();
        for row in 0..a[0].len() {
            if texts[0].is_null(row) {
                out.append_null();
                continue;
            }
            let value = |i: usize| (!texts[i].is_null(row)).then(|| texts[i].value(row));
            out.append_value(format_one(texts[0].value(row), texts.len() - 1, value)?);
        }
        answer(Arc::new(out.finish()), scalar)
    }
}

fn format_one<'a>(fmt: &str, n: usize, arg: impl Fn(usize) -> Option<&'a str>) -> Result<String> {
    let mut out = String::new();
    let mut next = 1;
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            chars.next();
            if d.is_ascii_alphabetic() || d == '%' {
                spec.push(d);
                break;
            }
            spec.push(d);
        }
        let kind = spec.pop().ok_or_else(|| invalid("unterminated format() type specifier"))?;
        if kind == '%' {
            out.push('%');
            continue;
        }
        let index = match spec.strip_suffix('$') {
            Some(n) => n.parse::<usize>().map_err(|_| invalid("invalid format() argument position"))?,
            None => {
                next += 1;
                next - 1
            }
        };
        if index == 0 || index > n {
            return Err(invalid("too few arguments for format()"));
        }
        let v = arg(index);
        match kind {
            's' => out.push_str(v.unwrap_or("")),
            'I' => out.push_str(&quote_ident(
                v.ok_or_else(|| invalid("null values cannot be formatted as an SQL identifier"))?,
            )),
            'L' => out.push_str(&v.map_or_else(|| "NULL".to_string(), quote_literal)),
            other => return Err(invalid(&format!("unrecognized format() type specifier \"{other}\""))),
        }
    }
    Ok(out)
}

fn regexp_split_to_array(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, scalar) = arrays(args)?;
    let (text, pattern) = (a[0].as_string::<i32>(), a[1].as_string::<i32>());
    let mut out = ListBuilder::new(StringBuilder::new());
    for (t, p) in text.iter().zip(pattern.iter()) {
        match (t, p) {
            (Some(t), Some(p)) => {
                let re = regex::Regex::new(p).map_err(|e| {
                    DataFusionError::External(Box::new(SqlError {
                        code: SqlState::InvalidRegularExpression,
                        message: format!("invalid regular expression: {e}"),
                    }))
                })?;
                for part in re.split(t) {
                    out.values().append_value(part);
                }
                out.append(true);
            }
            _ => out.append(false),
        }
    }
    answer(Arc::new(out.finish()), scalar)
}

/// `pg_typeof(x)`: the name PostgreSQL gives the type of `x`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: Signature,
}

impl Default for PgTypeof {
    fn default() -> PgTypeof {
        PgTypeof { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(type_name(args.arg_fields[0].data_type())))))
    }
}

/// PostgreSQL's name of the type an Arrow type stands for.
pub fn type_name(t: &DataType) -> String {
    use DataType as D;
    match t {
        D::Null => "unknown".into(),
        D::Boolean => "boolean".into(),
        D::Int8 | D::Int16 | D::UInt8 => "smallint".into(),
        D::Int32 | D::UInt16 => "integer".into(),
        D::Int64 | D::UInt32 => "bigint".into(),
        D::UInt64 | D::Decimal128(..) | D::Decimal256(..) => "numeric".into(),
        D::Float16 | D::Float32 => "real".into(),
        D::Float64 => "double precision".into(),
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "text".into(),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => "bytea".into(),
        D::Date32 | D::Date64 => "date".into(),
        D::Time32(_) | D::Time64(_) => "time without time zone".into(),
        D::Timestamp(_, None) => "timestamp without time zone".into(),
        D::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        D::Interval(_) | D::Duration(_) => "interval".into(),
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => format!("{}[]", type_name(f.data_type())),
        D::Dictionary(_, v) => type_name(v),
        D::Struct(_) => "record".into(),
        other => other.to_string(),
    }
}

fn make_timestamp(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, scalar) = arrays(args)?;
    let i = |k: usize| a[k].as_primitive::<Int64Type>();
    let secs = a[5].as_primitive::<Float64Type>();
    let mut out = Vec::with_capacity(secs.len());
    for row in 0..secs.len() {
        if (0..5).any(|k| i(k).is_null(row)) || secs.is_null(row) {
            out.push(None);
            continue;
        }
        let field = |k: usize| i32::try_from(i(k).value(row)).ok();
        let bad = || {
            DataFusionError::External(Box::new(SqlError {
                code: SqlState::DatetimeFieldOverflow,
                message: "date field value out of range".into(),
            }))
        };
        let (y, m, d, h, mi) = (field(0), field(1), field(2), field(3), field(4));
        let date = NaiveDate::from_ymd_opt(y.ok_or_else(bad)?, m.ok_or_else(bad)? as u32, d.ok_or_else(bad)? as u32)
            .ok_or_else(bad)?;
        let s = secs.value(row);
        if !(0.0..60.0).contains(&s)
            || !(0..24).contains(&h.ok_or_else(bad)?)
            || !(0..60).contains(&mi.ok_or_else(bad)?)
        {
            return Err(bad());
        }
        let micros = (s * 1e6).round() as i64;
        let t = date.and_hms_opt(h.unwrap_or(0) as u32, mi.unwrap_or(0) as u32, 0).ok_or_else(bad)?;
        out.push(Some(t.and_utc().timestamp_micros() + micros));
    }
    answer(Arc::new(TimestampMicrosecondArray::from(out)), scalar)
}

/// The parameters of `make_interval`, in order; each defaults to 0.
pub const MAKE_INTERVAL_PARAMETERS: [&str; 7] = ["years", "months", "weeks", "days", "hours", "mins", "secs"];

/// `make_interval([years [, months [, weeks [, days [, hours [, mins [, secs]]]]]]])`: the interval
/// of those fields (PostgreSQL's named arguments, `make_interval(days => 3)`, are put in this order
/// by the server).
fn make_interval_udf() -> ScalarUDF {
    use datafusion::logical_expr::TypeSignature;
    let arities = (0..=7)
        .map(|n| {
            TypeSignature::Exact(
                (0..n).map(|k| if k == 6 { DataType::Float64 } else { DataType::Int64 }).collect::<Vec<_>>(),
            )
        })
        .collect();
    let signature = Signature::one_of(arities, Volatility::Immutable);
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct MakeInterval(Signature);
    impl ScalarUDFImpl for MakeInterval {
        fn name(&self) -> &str {
            "make_interval"
        }
        fn signature(&self) -> &Signature {
            &self.0
        }
        fn return_type(&self, _: &[DataType]) -> Result<DataType> {
            Ok(DataType::Interval(IntervalUnit::MonthDayNano))
        }
        fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
            if args.args.is_empty() {
                return Ok(ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::ZERO))));
            }
            let (a, scalar) = arrays(&args.args)?;
            let rows = a[0].len();
            let overflow = || out_of_range("interval");
            let mut out = Vec::with_capacity(rows);
            for row in 0..rows {
                if a.iter().any(|c| c.is_null(row)) {
                    out.push(None);
                    continue;
                }
                let int = |k: usize| a.get(k).map_or(0, |c| c.as_primitive::<Int64Type>().value(row));
                let secs = a.get(6).map_or(0.0, |c| c.as_primitive::<Float64Type>().value(row));
                let months = int(0).checked_mul(12).and_then(|m| m.checked_add(int(1)));
                let days = int(2).checked_mul(7).and_then(|d| d.checked_add(int(3)));
                let nanos = int(4)
                    .checked_mul(3_600_000_000_000)
                    .and_then(|n| n.checked_add(int(5).checked_mul(60_000_000_000)?))
                    .and_then(|n| {
                        let s = (secs * 1e6).round() * 1e3;
                        (s.abs() < 9.2e18).then(|| n.checked_add(s as i64)).flatten()
                    });
                let months = months.and_then(|m| i32::try_from(m).ok()).ok_or_else(overflow)?;
                let days = days.and_then(|d| i32::try_from(d).ok()).ok_or_else(overflow)?;
                out.push(Some(IntervalMonthDayNano::new(months, days, nanos.ok_or_else(overflow)?)));
            }
            answer(Arc::new(IntervalMonthDayNanoArray::from(out)), scalar)
        }
    }
    ScalarUDF::from(MakeInterval(signature))
}

/// `justify_hours`, `justify_days` or `justify_interval` (see [`justify`]).
pub fn justify_udf(name: &str, hours: bool, days: bool) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Interval(IntervalUnit::MonthDayNano)],
        DataType::Interval(IntervalUnit::MonthDayNano),
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| justify(args, hours, days)),
    )
}

/// PostgreSQL's `justify_hours` (whole days out of the time) and `justify_days` (whole 30-day
/// months out of the days), each leaving the fields of one sign.
fn justify(args: &[ColumnarValue], hours: bool, days: bool) -> Result<ColumnarValue> {
    let (a, scalar) = arrays(args)?;
    let out: IntervalMonthDayNanoArray = a[0]
        .as_primitive::<IntervalMonthDayNanoType>()
        .iter()
        .map(|v| {
            v.map(|v| {
                let (mut months, mut d, mut ns) = (v.months as i64, v.days as i64, v.nanoseconds);
                if hours {
                    d += ns / DAY_NS;
                    ns %= DAY_NS;
                    if d > 0 && ns < 0 {
                        ns += DAY_NS;
                        d -= 1;
                    } else if d < 0 && ns > 0 {
                        ns -= DAY_NS;
                        d += 1;
                    }
                }
                if days {
                    months += d / 30;
                    d %= 30;
                    if months > 0 && (d < 0 || (d == 0 && ns < 0)) {
                        d += 30;
                        months -= 1;
                    } else if months < 0 && (d > 0 || (d == 0 && ns > 0)) {
                        d -= 30;
                        months += 1;
                    }
                }
                IntervalMonthDayNano::new(months as i32, d as i32, ns)
            })
        })
        .collect();
    answer(Arc::new(out), scalar)
}

/// `isfinite(date | timestamp | interval)`: true, as no value here is infinite.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IsFinite {
    signature: Signature,
}

impl Default for IsFinite {
    fn default() -> IsFinite {
        IsFinite { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for IsFinite {
    fn name(&self) -> &str {
        "isfinite"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (a, scalar) = arrays(&args.args)?;
        let out: BooleanArray = (0..a[0].len()).map(|i| (!a[0].is_null(i)).then_some(true)).collect();
        answer(Arc::new(out), scalar)
    }
}

/// `age(a, b)`: `a - b` in years, months and days as a calendar counts them (PostgreSQL's
/// `timestamp_age`): `age('2024-03-01', '2024-01-01')` is 2 months.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Age {
    signature: Signature,
}

impl Default for Age {
    fn default() -> Age {
        Age { signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Age {
    fn name(&self) -> &str {
        "age"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        if !types.iter().all(|t| matches!(t, DataType::Timestamp(..) | DataType::Date32 | DataType::Utf8)) {
            return Err(DataFusionError::Plan(format!("age takes two timestamps, not {} and {}", types[0], types[1])));
        }
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let us = DataType::Timestamp(TimeUnit::Microsecond, None);
        let args = args.args.iter().map(|a| a.cast_to(&us, None)).collect::<Result<Vec<_>>>()?;
        age(&args)
    }
}

fn age(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, scalar) = arrays(args)?;
    let (x, y) = (a[0].as_primitive::<TimestampMicrosecondType>(), a[1].as_primitive::<TimestampMicrosecondType>());
    let mut out = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        if x.is_null(i) || y.is_null(i) {
            out.push(None);
            continue;
        }
        let to = |v: i64| chrono::DateTime::from_timestamp_micros(v).map(|d| d.naive_utc());
        let (Some(t1), Some(t2)) = (to(x.value(i)), to(y.value(i))) else {
            return Err(out_of_range("timestamp"));
        };
        out.push(Some(calendar_difference(t1, t2)));
    }
    answer(Arc::new(IntervalMonthDayNanoArray::from(out)), scalar)
}

fn days_in_month(year: i32, month: u32) -> i64 {
    let next =
        if month == 12 { NaiveDate::from_ymd_opt(year + 1, 1, 1) } else { NaiveDate::from_ymd_opt(year, month + 1, 1) };
    let first = NaiveDate::from_ymd_opt(year, month, 1);
    match (first, next) {
        (Some(a), Some(b)) => (b - a).num_days(),
        _ => 30,
    }
}

fn calendar_difference(t1: NaiveDateTime, t2: NaiveDateTime) -> IntervalMonthDayNano {
    let fields = |t: NaiveDateTime| {
        [
            t.year() as i64,
            t.month() as i64,
            t.day() as i64,
            t.hour() as i64,
            t.minute() as i64,
            t.second() as i64,
            (t.nanosecond() / 1000) as i64,
        ]
    };
    let (a, b) = (fields(t1), fields(t2));
    let mut d: Vec<i64> = a.iter().zip(b.iter()).map(|(x, y)| x - y).collect();
    let flip = t1 < t2;
    if flip {
        d.iter_mut().for_each(|v| *v = -*v);
    }
    let earlier = if flip { t1 } else { t2 };
    // Borrow from the next larger field, as PostgreSQL does.
    let limits = [0, 12, 0, 24, 60, 60, 1_000_000];
    for k in (1..7).rev() {
        while d[k] < 0 {
            let add = if k == 2 { days_in_month(earlier.year(), earlier.month()) } else { limits[k] };
            d[k] += add;
            d[k - 1] -= 1;
        }
    }
    if flip {
        d.iter_mut().for_each(|v| *v = -*v);
    }
    let micros = ((d[3] * 60 + d[4]) * 60 + d[5]) * 1_000_000 + d[6];
    IntervalMonthDayNano::new((d[0] * 12 + d[1]) as i32, d[2] as i32, micros * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_quotes_as_postgresql() {
        let args = ["a", "1", "my table", "it's"];
        let arg = |i: usize| Some(args[i - 1]);
        assert_eq!(format_one("%s-%s", 2, arg).unwrap(), "a-1");
        assert_eq!(format_one("%3$I", 4, arg).unwrap(), "\"my table\"");
        assert_eq!(format_one("%4$L and 100%%", 4, arg).unwrap(), "'it''s' and 100%");
        assert_eq!(format_one("%L", 1, |_| None).unwrap(), "NULL");
        assert!(format_one("%s %s", 1, arg).is_err());
        assert_eq!(quote_ident("Name"), "\"Name\"");
        assert_eq!(quote_ident("name_1"), "name_1");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(
            type_name(&DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))),
            "timestamp with time zone"
        );
    }

    #[test]
    fn ages_count_calendar_months_and_days() {
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        // (a, b, PostgreSQL 15's age(a, b) as months, days, microseconds)
        let cases = [
            ("2024-03-01 00:00:00", "2024-01-01 00:00:00", (2, 0, 0)),
            ("2024-03-01 00:00:00", "2024-01-31 00:00:00", (1, 1, 0)),
            ("2024-01-01 00:00:00", "2024-03-01 00:00:00", (-2, 0, 0)),
            ("2024-01-02 01:00:00", "2023-12-31 23:00:00", (0, 1, 7_200_000_000)),
            ("2025-02-28 00:00:00", "2024-02-29 00:00:00", (11, 28, 0)),
        ];
        for (a, b, (m, d, us)) in cases {
            assert_eq!(calendar_difference(t(a), t(b)), IntervalMonthDayNano::new(m, d, us * 1000), "age({a}, {b})");
        }
    }
}
