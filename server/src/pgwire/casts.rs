//! Casts to text that write what PostgreSQL's output functions write.
//!
//! In PostgreSQL, `x::text`, `'a' || x` and `concat(x)` give the text `x`'s type's output function
//! writes: `1e+20` and `Infinity` for a float8, `2024-01-01 00:00:00` for a timestamp, `1 day
//! 02:00:00` for an interval, `{1,2}` for an array. DataFusion's cast to text writes Arrow's forms
//! (`1e20`, `inf`, `2024-01-01T00:00:00`, `[1, 2]`), so a value read back, compared or concatenated as
//! text differs. The [`PgTextCasts`] analyzer rule, run after type coercion (so the casts coercion
//! adds are caught too) in every connection's session, replaces each cast to text from those types
//! with [`PgText`], which writes through [`crate::pgwire::output`]. The embedded library keeps
//! DataFusion's casts.
//!
//! Booleans keep DataFusion's cast: PostgreSQL's `true::text` is `true` as well (its `t` is the
//! output function's, which `concat` uses; that difference is not kept).
//!
//! A float or numeric cast to an integer is rounded first, as PostgreSQL does (`3.7::int` is 4,
//! `2.5::float8::int` is 2: floats half to even, numerics half away from zero; Arrow truncates), and
//! `round(float8)` rounds half to even ([`PgRound`]).
//!
//! The other way, text cast to `interval` is read by PostgreSQL's interval input rules
//! ([`parse_interval`], through [`PgInterval`]): `1 day 02:00:00`, `-1 days +02:00:00`, `@ 3 hours
//! ago`, `1-2`, `P1DT2H` and the unit words, so every interval the server writes reads back. Arrow's
//! reader takes only `<number> <unit>` pairs.

use std::sync::Arc;

use bytes::BytesMut;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, IntervalMonthDayNanoBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, IntervalUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, ExprSchema, Result};
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::pgwire::output::{Settings, TextColumn};
use trafficdb::SqlState;
use trafficdb_udfs::SqlError;
use trafficdb_udfs::pg::{answer, arrays};

/// Whether PostgreSQL's text of a `t` value differs from Arrow's cast.
fn written_by_postgres(t: &DataType) -> bool {
    use DataType as D;
    matches!(
        t,
        D::Float32
            | D::Float64
            | D::Date32
            | D::Date64
            | D::Time32(_)
            | D::Time64(_)
            | D::Timestamp(..)
            | D::Interval(_)
            | D::Duration(_)
            | D::List(_)
            | D::LargeList(_)
            | D::FixedSizeList(..)
            | D::Struct(_)
            | D::Binary
            | D::LargeBinary
            | D::BinaryView
    )
}

/// `pg_text(x)`: `x` as PostgreSQL's output function writes it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgText {
    signature: Signature,
}

impl Default for PgText {
    fn default() -> PgText {
        PgText { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for PgText {
    fn name(&self) -> &str {
        "pg_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (mut inputs, scalar) = arrays(&args.args)?;
        let input = inputs.remove(0);
        let out = text_of(input.as_ref())?;
        answer(out, scalar)
    }
}

/// The values of `input` as text; Arrow's cast for a type without an output function here.
fn text_of(input: &dyn Array) -> Result<ArrayRef> {
    let settings = Settings::default();
    let Some(column) = TextColumn::new(input, &settings) else {
        return Ok(datafusion::arrow::compute::cast(input, &DataType::Utf8)?);
    };
    let mut out = StringBuilder::with_capacity(input.len(), input.len() * 8);
    let mut value = BytesMut::new();
    for row in 0..input.len() {
        if column.is_null(row) {
            out.append_null();
            continue;
        }
        value.clear();
        column.write(row, &mut value).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        out.append_value(String::from_utf8_lossy(&value));
    }
    Ok(Arc::new(out.finish()))
}

/// `pg_interval(text)`: text read as a PostgreSQL interval ([`parse_interval`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgInterval {
    signature: Signature,
}

impl Default for PgInterval {
    fn default() -> PgInterval {
        PgInterval { signature: Signature::string(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for PgInterval {
    fn name(&self) -> &str {
        "pg_interval"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (mut inputs, scalar) = arrays(&args.args)?;
        let input = inputs.remove(0);
        let input = datafusion::arrow::compute::cast(&input, &DataType::Utf8)?;
        let mut out = IntervalMonthDayNanoBuilder::with_capacity(input.len());
        for value in input.as_string::<i32>() {
            match value {
                None => out.append_null(),
                Some(text) => {
                    let (months, days, micros) = parse_interval(text).ok_or_else(|| {
                        DataFusionError::External(Box::new(SqlError {
                            code: SqlState::InvalidDatetimeFormat,
                            message: format!("invalid input syntax for type interval: \"{text}\""),
                        }))
                    })?;
                    out.append_value(IntervalMonthDayNano::new(months, days, micros * 1000));
                }
            }
        }
        let out: ArrayRef = Arc::new(out.finish());
        answer(out, scalar)
    }
}

/// Text as PostgreSQL's `interval_in` reads it (IntervalStyle `postgres`, the verbose `@ ... ago`
/// form, SQL standard `Y-M` and `D H:M:S`, ISO 8601 `P...`): months, days and microseconds, or
/// `None` when PostgreSQL refuses it too. Fractions spill into the smaller fields as PostgreSQL's do:
/// `1.5 months` is 1 month 15 days, `1.5 days` 1 day 12 hours.
pub fn parse_interval(text: &str) -> Option<(i32, i32, i64)> {
    let lower = text.trim().to_ascii_lowercase();
    if let Some(iso) = lower.strip_prefix('p') {
        return iso_interval(iso);
    }
    let body = lower.strip_prefix('@').unwrap_or(&lower);
    let mut words: Vec<&str> = body.split_whitespace().collect();
    let ago = words.last() == Some(&"ago");
    if ago {
        words.pop();
    }
    // A word may hold a number and its unit together (`2h`, `-1day`).
    let mut tokens = Vec::new();
    for w in words {
        let unit_at = w.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(w.len());
        if unit_at > 0 {
            tokens.push(&w[..unit_at]);
        }
        if unit_at < w.len() {
            tokens.push(&w[unit_at..]);
        }
    }
    if tokens.is_empty() {
        return None;
    }
    let mut acc = Fields::default();
    let mut seen = 0u32;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        if t.contains(':') {
            acc.micros += clock_micros(t)? as f64;
            seen = once(seen, 1 << 20)?;
            i += 1;
            continue;
        }
        // SQL standard year-month: `1-2`, `-1-2`.
        if let Some((y, m)) = t.strip_prefix(['-', '+']).unwrap_or(t).split_once('-') {
            let sign = if t.starts_with('-') { -1.0 } else { 1.0 };
            let (y, m): (i64, i64) = (y.parse().ok()?, m.parse().ok()?);
            acc.months += sign * (y * 12 + m) as f64;
            seen = once(seen, 1 << 21)?;
            i += 1;
            continue;
        }
        let value: f64 = number(t)?;
        match tokens.get(i + 1).and_then(|u| unit(u)) {
            Some((factor, bit)) => {
                seen = once(seen, bit)?;
                acc.add(value, factor);
                i += 2;
            }
            // A number without a unit: days before a time of day (`1 02:00:00`), seconds otherwise.
            None if tokens.get(i + 1).is_some_and(|n| n.contains(':')) => {
                seen = once(seen, 1 << 3)?;
                acc.add(value, Unit::Days(1.0));
                i += 1;
            }
            None if i + 1 == tokens.len() => {
                seen = once(seen, 1 << 6)?;
                acc.add(value, Unit::Micros(1e6));
                i += 1;
            }
            None => return None,
        }
    }
    let _ = seen;
    acc.finish(if ago { -1.0 } else { 1.0 })
}

/// ISO 8601 durations after the `P`: `1Y2M3DT4H5M6.5S`, `T1H`, `2W`.
fn iso_interval(s: &str) -> Option<(i32, i32, i64)> {
    let mut acc = Fields::default();
    let mut time = false;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('t') {
            time = true;
            rest = r;
            continue;
        }
        let end = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let value = number(&rest[..end])?;
        let factor = match (&rest[end..end + 1], time) {
            ("y", false) => Unit::Months(12.0),
            ("m", false) => Unit::Months(1.0),
            ("w", false) => Unit::Days(7.0),
            ("d", false) => Unit::Days(1.0),
            ("h", true) => Unit::Micros(3.6e9),
            ("m", true) => Unit::Micros(6e7),
            ("s", true) => Unit::Micros(1e6),
            _ => return None,
        };
        acc.add(value, factor);
        rest = &rest[end + 1..];
    }
    acc.finish(1.0)
}

/// A field's size: in months, days, or microseconds.
#[derive(Clone, Copy)]
enum Unit {
    Months(f64),
    Days(f64),
    Micros(f64),
}

/// `unit`'s size and a bit that marks it given (PostgreSQL refuses a unit given twice).
fn unit(word: &str) -> Option<(Unit, u32)> {
    Some(match word {
        "millennium" | "millennia" | "millenniums" | "mil" | "mils" => (Unit::Months(12_000.0), 1 << 10),
        "century" | "centuries" | "cent" | "c" => (Unit::Months(1200.0), 1 << 11),
        "decade" | "decades" | "dec" | "decs" => (Unit::Months(120.0), 1 << 12),
        "year" | "years" | "yr" | "yrs" | "y" => (Unit::Months(12.0), 1 << 0),
        "month" | "months" | "mon" | "mons" => (Unit::Months(1.0), 1 << 1),
        "week" | "weeks" | "w" => (Unit::Days(7.0), 1 << 2),
        "day" | "days" | "d" => (Unit::Days(1.0), 1 << 3),
        "hour" | "hours" | "hr" | "hrs" | "h" => (Unit::Micros(3.6e9), 1 << 4),
        "minute" | "minutes" | "min" | "mins" | "m" => (Unit::Micros(6e7), 1 << 5),
        "second" | "seconds" | "sec" | "secs" | "s" => (Unit::Micros(1e6), 1 << 6),
        "millisecond" | "milliseconds" | "msec" | "msecs" | "ms" => (Unit::Micros(1e3), 1 << 7),
        "microsecond" | "microseconds" | "usec" | "usecs" | "us" => (Unit::Micros(1.0), 1 << 8),
        _ => return None,
    })
}

fn once(seen: u32, bit: u32) -> Option<u32> {
    (seen & bit == 0).then_some(seen | bit)
}

/// A signed decimal number (`+2`, `-1.5`, `.5`); no exponent, as PostgreSQL's interval fields.
fn number(t: &str) -> Option<f64> {
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') || digits == "." {
        return None;
    }
    t.parse().ok()
}

/// `[+-]h:m[:s[.f]]`, or `m:s.f` (two fields with a fraction), in microseconds.
fn clock_micros(t: &str) -> Option<i64> {
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (-1.0, &t[1..]),
        Some(b'+') => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let int = |p: &str| -> Option<f64> {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok()).flatten()
    };
    let seconds = match parts.as_slice() {
        [m, s] if s.contains('.') => int(m)? * 60.0 + number(s)?,
        [h, m] => int(h)? * 3600.0 + int(m)? * 60.0,
        [h, m, s] => int(h)? * 3600.0 + int(m)? * 60.0 + number(s)?,
        _ => return None,
    };
    if seconds.is_nan() || parts.get(1).is_some_and(|m| int(m).is_none_or(|v| v >= 60.0) && !m.contains('.')) {
        return None;
    }
    Some((sign * seconds * 1e6).round() as i64)
}

/// Months, days and microseconds summed as PostgreSQL sums an interval's fields.
#[derive(Default)]
struct Fields {
    months: f64,
    days: f64,
    micros: f64,
}

impl Fields {
    fn add(&mut self, value: f64, unit: Unit) {
        match unit {
            Unit::Months(m) => {
                let months = value * m;
                let whole = months.trunc();
                // A fraction of a year stays in months (rounded); of a month, it spills into days.
                if m >= 12.0 {
                    self.months += months.round();
                } else {
                    self.months += whole;
                    self.add(months - whole, Unit::Days(30.0));
                }
            }
            Unit::Days(d) => {
                let days = value * d;
                let whole = days.trunc();
                self.days += whole;
                self.micros += (days - whole) * 86_400e6;
            }
            Unit::Micros(u) => self.micros += value * u,
        }
    }

    fn finish(self, sign: f64) -> Option<(i32, i32, i64)> {
        let months = sign * self.months;
        let days = sign * self.days;
        let micros = (sign * self.micros).round();
        let fits = |v: f64, max: f64| v.is_finite() && v.abs() <= max;
        if !fits(months, i32::MAX as f64) || !fits(days, i32::MAX as f64) || !fits(micros, 9.2e18) {
            return None;
        }
        Some((months as i32, days as i32, micros as i64))
    }
}

/// `pg_round(x)`: a float rounded half to even (`rint`, PostgreSQL's `round(float8)` and its casts
/// of floats to integers); `pg_round_numeric(x)`, a numeric, or a float that PostgreSQL would have
/// read as a numeric (a literal such as `2.5`, which DataFusion types float8), half away from zero.
/// The type stays.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgRound {
    signature: Signature,
    numeric: bool,
}

impl PgRound {
    fn new(numeric: bool) -> PgRound {
        PgRound { signature: Signature::any(1, Volatility::Immutable), numeric }
    }
}

impl ScalarUDFImpl for PgRound {
    fn name(&self) -> &str {
        if self.numeric { "pg_round_numeric" } else { "pg_round" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        Ok(types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::PrimitiveArray;
        use datafusion::arrow::datatypes::{Decimal128Type, Float32Type, Float64Type};
        let (mut inputs, scalar) = arrays(&args.args)?;
        let input = inputs.remove(0);
        let out: ArrayRef = match input.data_type() {
            DataType::Float64 if self.numeric => {
                Arc::new(input.as_primitive::<Float64Type>().unary::<_, Float64Type>(f64::round))
            }
            DataType::Float64 => {
                Arc::new(input.as_primitive::<Float64Type>().unary::<_, Float64Type>(f64::round_ties_even))
            }
            DataType::Float32 => {
                Arc::new(input.as_primitive::<Float32Type>().unary::<_, Float32Type>(f32::round_ties_even))
            }
            DataType::Decimal128(p, scale) if *scale > 0 => {
                let unit = 10i128.pow(*scale as u32);
                let a: PrimitiveArray<Decimal128Type> = input.as_primitive::<Decimal128Type>().unary(|v| {
                    let (q, r) = (v / unit, v % unit);
                    let q = if 2 * r.abs() >= unit { q + v.signum() } else { q };
                    q * unit
                });
                Arc::new(a.with_precision_and_scale(*p, *scale)?)
            }
            _ => input,
        };
        answer(out, scalar)
    }
}

/// PostgreSQL's arithmetic of dates and times where DataFusion's differs: `timestamp - timestamp`
/// counts whole days (`2 days 01:30:00`, not `49:30:00`; so `extract(day ...)` of it is 2), and
/// `date ± interval` is a timestamp (`DATE '2024-01-01' + INTERVAL '36 hours'` is noon of the 2nd,
/// not the 2nd).
fn datetime_arithmetic(e: &Expr, schema: &dyn ExprSchema, justify: &Arc<ScalarUDF>) -> Result<Option<Expr>> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    // DataFusion writes `timestamp - timestamp` as a duration cast to an interval.
    if let Expr::Cast(Cast { expr, field }) = e
        && field.data_type() == &DataType::Interval(IntervalUnit::MonthDayNano)
        && let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Minus, right }) = expr.as_ref()
        && matches!(left.get_type(schema), Ok(DataType::Timestamp(..)))
        && matches!(right.get_type(schema), Ok(DataType::Timestamp(..)))
    {
        return Ok(Some(Expr::ScalarFunction(ScalarFunction::new_udf(justify.clone(), vec![e.clone()]))));
    }
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else { return Ok(None) };
    if !matches!(op, Operator::Plus | Operator::Minus) {
        return Ok(None);
    }
    let (l, r) = match (left.get_type(schema), right.get_type(schema)) {
        (Ok(l), Ok(r)) => (l, r),
        _ => return Ok(None),
    };
    if *op == Operator::Minus && matches!(l, DataType::Timestamp(..)) && matches!(r, DataType::Timestamp(..)) {
        if e.get_type(schema)? == DataType::Interval(IntervalUnit::MonthDayNano) {
            return Ok(Some(Expr::ScalarFunction(ScalarFunction::new_udf(justify.clone(), vec![e.clone()]))));
        }
        return Ok(None);
    }
    // `date + 7` is a date: the integer DataFusion made an interval of keeps it one.
    fn from_integer(x: &Expr, schema: &dyn ExprSchema) -> bool {
        match x {
            Expr::Cast(Cast { expr, .. }) => {
                expr.get_type(schema).is_ok_and(|t| t.is_integer()) || from_integer(expr, schema)
            }
            _ => false,
        }
    }
    if from_integer(left, schema) || from_integer(right, schema) {
        return Ok(None);
    }
    let timestamp = DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None);
    let as_timestamp = |x: &Expr| Expr::Cast(Cast::new(Box::new(x.clone()), timestamp.clone()));
    match (&l, &r) {
        (DataType::Date32 | DataType::Date64, DataType::Interval(_)) => {
            Ok(Some(Expr::BinaryExpr(BinaryExpr::new(Box::new(as_timestamp(left)), *op, right.clone()))))
        }
        (DataType::Interval(_), DataType::Date32 | DataType::Date64) if *op == Operator::Plus => {
            Ok(Some(Expr::BinaryExpr(BinaryExpr::new(left.clone(), *op, Box::new(as_timestamp(right))))))
        }
        _ => Ok(None),
    }
}

/// Calls whose arguments PostgreSQL reads otherwise: `date_trunc` to any of PostgreSQL's unit
/// names (`'milliseconds'`, `'mons'`, and `'decade'`, `'century'`, `'millennium'` through
/// [`PgTruncYears`]); `date_part('second', ts)` with the second's fraction (DataFusion's is an
/// integer); `concat` of values PostgreSQL's output functions write (`concat('x', true)` is `xt`).
fn postgres_call(e: &Expr, schema: &dyn ExprSchema, text: &Arc<ScalarUDF>) -> Result<Option<Expr>> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::lit;
    let Expr::ScalarFunction(f) = e else { return Ok(None) };
    let unit = match f.args.first() {
        Some(Expr::Literal(ScalarValue::Utf8(Some(u)), _)) => Some(u.to_ascii_lowercase()),
        _ => None,
    };
    match (f.name(), unit) {
        ("date_trunc", Some(unit)) if f.args.len() == 2 => {
            let Some(canonical) = trunc_unit(&unit) else { return Ok(None) };
            if matches!(canonical, "decade" | "century" | "millennium") {
                let years = Arc::new(ScalarUDF::from(PgTruncYears::default()));
                return Ok(Some(Expr::ScalarFunction(ScalarFunction::new_udf(
                    years,
                    vec![lit(canonical), f.args[1].clone()],
                ))));
            }
            if canonical == unit {
                return Ok(None);
            }
            let mut call = f.clone();
            call.args[0] = lit(canonical);
            Ok(Some(Expr::ScalarFunction(call)))
        }
        ("date_part", Some(unit)) if f.args.len() == 2 => {
            let per_unit = match unit.as_str() {
                "second" | "seconds" | "sec" | "secs" | "s" => 1e6,
                "millisecond" | "milliseconds" | "msec" | "msecs" | "ms" => 1e3,
                _ => return Ok(None),
            };
            if !matches!(
                f.args[1].get_type(schema)?,
                DataType::Timestamp(..) | DataType::Time32(_) | DataType::Time64(_)
            ) {
                return Ok(None);
            }
            let mut micros = f.clone();
            micros.args[0] = lit("microsecond");
            let micros = Expr::ScalarFunction(micros).cast_to(&DataType::Float64, schema)?;
            Ok(Some(micros / lit(per_unit)))
        }
        ("concat" | "concat_ws", _) => {
            // The value as the output function writes it, when that differs from the text
            // DataFusion's concat makes of it (itself, or its cast to text that coercion added).
            let written = |a: &Expr| -> Option<Expr> {
                let value = match a {
                    Expr::Cast(Cast { expr, .. }) => expr.as_ref(),
                    a => a,
                };
                let t = value.get_type(schema).ok()?;
                (t == DataType::Boolean || written_by_postgres(&t))
                    .then(|| Expr::ScalarFunction(ScalarFunction::new_udf(text.clone(), vec![value.clone()])))
            };
            if !f.args.iter().any(|a| written(a).is_some()) {
                return Ok(None);
            }
            let mut call = f.clone();
            for a in &mut call.args {
                if let Some(new) = written(a) {
                    *a = new;
                }
            }
            Ok(Some(Expr::ScalarFunction(call)))
        }
        _ => Ok(None),
    }
}

/// DataFusion's name for a unit PostgreSQL's `date_trunc` takes (its singular, plural and short
/// forms), or `decade`, `century`, `millennium`, which DataFusion does not truncate to.
fn trunc_unit(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "microsecond" | "microseconds" | "usec" | "usecs" | "us" => "microsecond",
        "millisecond" | "milliseconds" | "msec" | "msecs" | "ms" => "millisecond",
        "second" | "seconds" | "sec" | "secs" | "s" => "second",
        "minute" | "minutes" | "min" | "mins" | "m" => "minute",
        "hour" | "hours" | "hr" | "hrs" | "h" => "hour",
        "day" | "days" | "d" => "day",
        "week" | "weeks" | "w" => "week",
        "month" | "months" | "mon" | "mons" => "month",
        "quarter" | "quarters" | "qtr" => "quarter",
        "year" | "years" | "yr" | "yrs" | "y" => "year",
        "decade" | "decades" | "dec" | "decs" => "decade",
        "century" | "centuries" | "cent" | "c" => "century",
        "millennium" | "millennia" | "millenniums" | "mil" | "mils" => "millennium",
        _ => return None,
    })
}

/// `pg_date_trunc_years(unit, ts)`: `ts` truncated to the start of its decade (2024 → 2020),
/// century (2024 → 2001) or millennium (2024 → 2001), as PostgreSQL counts them (centuries and
/// millennia start at year 1; before year 1 they count back from -1).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgTruncYears {
    signature: Signature,
}

impl Default for PgTruncYears {
    fn default() -> PgTruncYears {
        PgTruncYears { signature: Signature::any(2, Volatility::Immutable) }
    }
}

/// The first year of `year`'s decade, century or millennium.
fn first_year(unit: &str, year: i32) -> i32 {
    let span = match unit {
        "decade" => return year.div_euclid(10) * 10,
        "century" => 100,
        _ => 1000,
    };
    if year > 0 { (year - 1) / span * span + 1 } else { -((-year - 1) / span * span + 1) + 1 }
}

impl ScalarUDFImpl for PgTruncYears {
    fn name(&self) -> &str {
        "pg_date_trunc_years"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        Ok(match &types[1] {
            t @ DataType::Timestamp(..) => t.clone(),
            _ => DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use chrono::Datelike;
        use datafusion::arrow::datatypes::{TimeUnit, TimestampMicrosecondType};
        let target = args.return_field.data_type().clone();
        let (inputs, scalar) = arrays(&args.args)?;
        let units = datafusion::arrow::compute::cast(&inputs[0], &DataType::Utf8)?;
        let units = units.as_string::<i32>();
        let micros = datafusion::arrow::compute::cast(&inputs[1], &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let out: datafusion::arrow::array::TimestampMicrosecondArray = micros
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .zip(units.iter())
            .map(|(v, unit)| {
                let t = chrono::DateTime::from_timestamp_micros(v?)?.naive_utc();
                let start = chrono::NaiveDate::from_ymd_opt(first_year(unit?, t.year()), 1, 1)?;
                Some(start.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
            })
            .collect();
        answer(datafusion::arrow::compute::cast(&out, &target)?, scalar)
    }
}

/// `to_char(ts, 'YYYY-MM-DD HH24:MI:SS')` and `to_date(text, 'YYYY-MM-DD')` with PostgreSQL's
/// template patterns: the pattern written in the strftime form DataFusion's functions read. A
/// pattern with a `%` in it is taken as strftime's already.
fn postgres_pattern(e: &Expr) -> Option<Expr> {
    let Expr::ScalarFunction(f) = e else { return None };
    if !matches!(f.name(), "to_char" | "to_date" | "to_timestamp") || f.args.len() != 2 {
        return None;
    }
    let Expr::Literal(datafusion::common::ScalarValue::Utf8(Some(pattern)), meta) = &f.args[1] else { return None };
    if pattern.contains('%') {
        return None;
    }
    let mut f = f.clone();
    f.args[1] = Expr::Literal(datafusion::common::ScalarValue::Utf8(Some(strftime_of(pattern))), meta.clone());
    Some(Expr::ScalarFunction(f))
}

/// A PostgreSQL date/time template (`YYYY-MM-DD HH24:MI:SS.MS`, `DD Mon YYYY`, `"text"`) in strftime's
/// form.
pub fn strftime_of(pattern: &str) -> String {
    // Longest first, as PostgreSQL matches them.
    const TOKENS: &[(&str, &str)] = &[
        ("YYYY", "%Y"),
        ("HH24", "%H"),
        ("HH12", "%I"),
        ("Month", "%B"),
        ("MONTH", "%B"),
        ("month", "%B"),
        ("Day", "%A"),
        ("DAY", "%A"),
        ("day", "%A"),
        ("Mon", "%b"),
        ("MON", "%b"),
        ("mon", "%b"),
        ("Dy", "%a"),
        ("DY", "%a"),
        ("dy", "%a"),
        ("YY", "%y"),
        ("MM", "%m"),
        ("DDD", "%j"),
        ("DD", "%d"),
        ("HH", "%I"),
        ("MI", "%M"),
        ("SS", "%S"),
        ("MS", "%3f"),
        ("US", "%6f"),
        ("AM", "%p"),
        ("PM", "%p"),
        ("am", "%P"),
        ("pm", "%P"),
        ("TZ", "%Z"),
        ("tz", "%Z"),
        ("OF", "%:z"),
        ("Q", "%q"),
    ];
    let mut out = String::new();
    let mut rest = pattern;
    'outer: while let Some(c) = rest.chars().next() {
        if c == '"' {
            let end = rest[1..].find('"').map_or(rest.len(), |i| i + 2);
            out.push_str(&rest[1..end.saturating_sub(1).max(1)].replace('%', "%%"));
            rest = &rest[end.min(rest.len())..];
            continue;
        }
        // `FM` (fill mode) only drops padding, which these fields have none of to drop.
        if let Some(r) = rest.strip_prefix("FM") {
            rest = r;
            continue;
        }
        for (token, strftime) in TOKENS {
            if let Some(r) = rest.strip_prefix(token) {
                out.push_str(strftime);
                rest = r;
                continue 'outer;
            }
        }
        if c == '%' {
            out.push('%');
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `pg_timestamp(text)`: text read as PostgreSQL reads a timestamp, then as Arrow's cast reads it:
/// `2024-02-29 04:00` (no seconds), `20240229 040506`, `epoch`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgTimestamp {
    signature: Signature,
    target: DataType,
}

impl PgTimestamp {
    fn new(target: DataType) -> PgTimestamp {
        PgTimestamp { signature: Signature::string(1, Volatility::Immutable), target }
    }
}

impl ScalarUDFImpl for PgTimestamp {
    fn name(&self) -> &str {
        "pg_timestamp"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.target.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (mut inputs, scalar) = arrays(&args.args)?;
        let input = inputs.remove(0);
        let input = datafusion::arrow::compute::cast(&input, &DataType::Utf8)?;
        let normal: datafusion::arrow::array::StringArray =
            input.as_string::<i32>().iter().map(|v| v.map(timestamp_text)).collect();
        let out = datafusion::arrow::compute::cast(&normal, &self.target)?;
        answer(out, scalar)
    }
}

/// Timestamp text in the forms PostgreSQL reads and Arrow does not, written as Arrow reads it.
fn timestamp_text(text: &str) -> String {
    let t = text.trim();
    if t.eq_ignore_ascii_case("epoch") {
        return "1970-01-01 00:00:00".into();
    }
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    // 20240229 or 20240229 040506 / 20240229T040506
    if digits(0..8) && (b.len() == 8 || (b.len() >= 15 && matches!(b[8], b' ' | b'T') && digits(9..15))) {
        let mut s = format!("{}-{}-{}", &t[0..4], &t[4..6], &t[6..8]);
        if b.len() >= 15 {
            s.push_str(&format!(" {}:{}:{}{}", &t[9..11], &t[11..13], &t[13..15], &t[15..]));
        }
        return s;
    }
    // 2024-02-29 04:00 (a time without seconds), with or without a zone after it
    if b.len() >= 16
        && digits(0..4)
        && b[4] == b'-'
        && matches!(b[10], b' ' | b'T')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && !matches!(b.get(16), Some(b':'))
    {
        return format!("{}:00{}", &t[..16], &t[16..]);
    }
    t.to_string()
}

/// Replaces the casts to text of [`written_by_postgres`] types with [`PgText`], and the casts of
/// text to an interval with [`PgInterval`]; see the module.
#[derive(Debug, Default)]
pub struct PgTextCasts;

impl AnalyzerRule for PgTextCasts {
    fn name(&self) -> &str {
        "pg_text_casts"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &datafusion::common::config::ConfigOptions) -> Result<LogicalPlan> {
        let text = Arc::new(ScalarUDF::from(PgText::default()));
        let interval = Arc::new(ScalarUDF::from(PgInterval::default()));
        let justify = Arc::new(trafficdb_udfs::pg::justify_udf("justify_hours", true, false));
        let rounded = Arc::new(ScalarUDF::from(PgRound::new(false)));
        let rounded_numeric = Arc::new(ScalarUDF::from(PgRound::new(true)));
        // A float literal was a numeric in PostgreSQL: it rounds half away from zero.
        let rounding =
            |arg: &Expr| if matches!(arg, Expr::Literal(..)) { rounded_numeric.clone() } else { rounded.clone() };
        plan.transform_up_with_subqueries(|p| {
            let schema = datafusion::logical_expr::utils::merge_schema(&p.inputs());
            // Output names stay what they were (an ORDER BY or a view may refer to them).
            let names = datafusion::logical_expr::expr_rewriter::NamePreserver::new(&p);
            p.map_expressions(|e| {
                let saved = names.save(&e);
                let out = e.transform_up(|e| {
                    // round(float8) rounds half to even (C's rint), as the cast to an integer does.
                    if let Expr::ScalarFunction(f) = &e
                        && f.name() == "round"
                        && f.args.len() == 1
                        && matches!(
                            f.args[0].get_type(&schema as &dyn ExprSchema),
                            Ok(DataType::Float32 | DataType::Float64)
                        )
                    {
                        let round = rounding(&f.args[0]);
                        return Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                            round,
                            f.args.clone(),
                        ))));
                    }
                    if let Some(new) = datetime_arithmetic(&e, &schema, &justify)? {
                        return Ok(Transformed::yes(new));
                    }
                    if let Some(new) = postgres_pattern(&e) {
                        return Ok(Transformed::yes(new));
                    }
                    if let Some(new) = postgres_call(&e, &schema, &text)? {
                        return Ok(Transformed::yes(new));
                    }
                    let (expr, target) = match &e {
                        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                            (expr, field.data_type())
                        }
                        _ => return Ok(Transformed::no(e)),
                    };
                    let is_text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
                    let call = |f: &Arc<ScalarUDF>| {
                        Expr::ScalarFunction(ScalarFunction::new_udf(f.clone(), vec![(**expr).clone()]))
                    };
                    let source = match expr.get_type(&schema as &dyn ExprSchema) {
                        Ok(t) => t,
                        Err(_) => return Ok(Transformed::no(e)),
                    };
                    if is_text(target) && written_by_postgres(&source) {
                        let out = call(&text);
                        let out = if target == &DataType::Utf8 { out } else { out.cast_to(target, &schema)? };
                        return Ok(Transformed::yes(out));
                    }
                    if is_text(&source) && target == &DataType::Interval(IntervalUnit::MonthDayNano) {
                        return Ok(Transformed::yes(call(&interval)));
                    }
                    if is_text(&source) && matches!(target, DataType::Timestamp(..)) {
                        let read = Arc::new(ScalarUDF::from(PgTimestamp::new(target.clone())));
                        return Ok(Transformed::yes(call(&read)));
                    }
                    // PostgreSQL rounds a float or numeric cast to an integer; Arrow truncates.
                    if target.is_integer() && (source.is_floating() || matches!(source, DataType::Decimal128(..))) {
                        let mut cast = e.clone();
                        if let Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) = &mut cast {
                            **expr = call(&rounding(expr));
                        }
                        return Ok(Transformed::yes(cast));
                    }
                    Ok(Transformed::no(e))
                })?;
                Ok(out.update_data(|e| saved.restore(e)))
            })
            // A date plus an interval is a timestamp now: a node whose expressions changed gets its
            // schema again from them.
            .and_then(|t| if t.transformed { t.map_data(|p| p.recompute_schema()) } else { Ok(t) })
        })
        .map(|t| t.data)
    }
}

#[cfg(test)]
mod tests {
    use super::{first_year, parse_interval, strftime_of, timestamp_text};

    #[test]
    fn decades_centuries_and_millennia_start_where_postgresql_starts_them() {
        // (unit, year, PostgreSQL 15's first year: date_trunc(unit, make_date(year, 5, 1)))
        for (unit, year, first) in [
            ("decade", 2024, 2020),
            ("decade", 2020, 2020),
            ("century", 2024, 2001),
            ("century", 2000, 1901),
            ("century", 2001, 2001),
            ("millennium", 2024, 2001),
            ("millennium", 2000, 1001),
        ] {
            assert_eq!(first_year(unit, year), first, "{unit} {year}");
        }
    }

    #[test]
    fn postgresql_templates_and_timestamps_read_as_it_reads_them() {
        assert_eq!(strftime_of("YYYY-MM-DD HH24:MI:SS"), "%Y-%m-%d %H:%M:%S");
        assert_eq!(strftime_of("DD Mon YYYY"), "%d %b %Y");
        assert_eq!(strftime_of("FMDD \"of\" Month, HH12:MI AM"), "%d of %B, %I:%M %p");
        assert_eq!(strftime_of("DDD: 100%"), "%j: 100%%");
        assert_eq!(timestamp_text("2024-02-29 04:00"), "2024-02-29 04:00:00");
        assert_eq!(timestamp_text("2024-02-29 04:00+02"), "2024-02-29 04:00:00+02");
        assert_eq!(timestamp_text("20240229 040506"), "2024-02-29 04:05:06");
        assert_eq!(timestamp_text("20240229"), "2024-02-29");
        assert_eq!(timestamp_text("epoch"), "1970-01-01 00:00:00");
        assert_eq!(timestamp_text("2024-02-29 04:00:07"), "2024-02-29 04:00:07");
    }

    #[test]
    fn intervals_read_as_postgresql_reads_them() {
        const H: i64 = 3_600_000_000;
        // (text, PostgreSQL 15's months, days, microseconds)
        type Fields = Option<(i32, i32, i64)>;
        let cases: &[(&str, Fields)] = &[
            ("1 day 02:00:00", Some((0, 1, 2 * H))),
            ("-1 days +02:00:00", Some((0, -1, 2 * H))),
            ("1 year 2 mons 3 days 04:05:06.5", Some((14, 3, 4 * H + 306_500_000))),
            ("00:00:00", Some((0, 0, 0))),
            ("-00:00:01.5", Some((0, 0, -1_500_000))),
            ("100:00:00", Some((0, 0, 100 * H))),
            ("@ 3 hours ago", Some((0, 0, -3 * H))),
            ("1 hour", Some((0, 0, H))),
            ("2h", Some((0, 0, 2 * H))),
            ("1.5 months", Some((1, 15, 0))),
            ("1.5 days", Some((0, 1, 12 * H))),
            ("1.5 years", Some((18, 0, 0))),
            ("1 week", Some((0, 7, 0))),
            ("90 seconds", Some((0, 0, 90_000_000))),
            ("10", Some((0, 0, 10_000_000))),
            ("1 02:00:00", Some((0, 1, 2 * H))),
            ("1-2", Some((14, 0, 0))),
            ("P1Y2M3DT4H5M6S", Some((14, 3, 4 * H + 306_000_000))),
            ("PT1H30M", Some((0, 0, H + 1_800_000_000))),
            ("1 decade", Some((120, 0, 0))),
            ("500 ms", Some((0, 0, 500_000))),
            ("1 day 1 day", None),
            ("1 fortnight", None),
            ("", None),
            ("abc", None),
            ("1:60", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_interval(text), *want, "{text}");
        }
    }
}
