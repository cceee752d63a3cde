//! Time-series scalar functions and PostgreSQL's date/time arithmetic:
//!
//! - `time_bucket(width, ts [, origin | offset])`, TimescaleDB's bucketing (also for integers);
//! - `interval_mul(interval, factor)`, and the planner that turns `n * INTERVAL '…'`,
//!   `INTERVAL '…' * n` and `INTERVAL '…' / n` into it (DataFusion refuses number × interval);
//! - `ts - ts` as an `INTERVAL`, as PostgreSQL returns it (DataFusion returns a duration).

use std::sync::Arc;

use chrono::{DateTime, Months, NaiveDateTime};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, IntervalMonthDayNanoArray, PrimitiveArray};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, IntervalMonthDayNano, IntervalUnit, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{DFSchema, ExprSchema, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    Cast, ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, binary_expr,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use crate::invalid_argument;

/// The scalar functions of this module.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::from(TimeBucket::new())), interval_mul(), wall_clock()]
}

/// `interval_mul(interval, factor)`.
pub fn interval_mul() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(IntervalMul { signature: Signature::user_defined(Volatility::Immutable) }))
}

const NANOS_PER_DAY: i128 = 86_400_000_000_000;
/// TimescaleDB's default origin: Monday 2000-01-03 00:00:00 UTC, so weekly buckets start on Mondays.
const ORIGIN_S: i64 = 946_857_600;
/// The default origin of month buckets: 2000-01-01 00:00:00 UTC.
const MONTH_ORIGIN_S: i64 = 946_684_800;

fn nanos_per_unit(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

fn floor_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if (a % b != 0) && ((a < 0) != (b < 0)) { q - 1 } else { q }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeBucket {
    signature: Signature,
}

impl TimeBucket {
    pub fn new() -> Self {
        TimeBucket { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl Default for TimeBucket {
    fn default() -> Self {
        Self::new()
    }
}

fn is_int(t: &DataType) -> bool {
    t.is_integer()
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let usage = "time_bucket(width, ts [, origin | offset]) takes an interval and a timestamp (or three \
                     integers), and optionally an origin timestamp or an offset interval";
        if !(2..=3).contains(&arg_types.len()) {
            return plan_err!("{usage}");
        }
        if is_int(&arg_types[0]) && is_int(&arg_types[1]) && arg_types.get(2).is_none_or(is_int) {
            return Ok(vec![DataType::Int64; arg_types.len()]);
        }
        let width = match &arg_types[0] {
            DataType::Interval(_) | DataType::Duration(_) | DataType::Utf8 | DataType::Utf8View | DataType::Null => {
                DataType::Interval(IntervalUnit::MonthDayNano)
            }
            _ => return plan_err!("{usage}; the width is {}", arg_types[0]),
        };
        let ts = match &arg_types[1] {
            t @ DataType::Timestamp(..) => t.clone(),
            DataType::Date32 | DataType::Date64 | DataType::Utf8 | DataType::Utf8View | DataType::Null => {
                DataType::Timestamp(TimeUnit::Microsecond, None)
            }
            _ => return plan_err!("{usage}; the time is {}", arg_types[1]),
        };
        let mut out = vec![width, ts.clone()];
        if let Some(third) = arg_types.get(2) {
            out.push(match third {
                DataType::Interval(_) | DataType::Duration(_) => DataType::Interval(IntervalUnit::MonthDayNano),
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Utf8 | DataType::Utf8View => {
                    ts.clone()
                }
                DataType::Null => ts.clone(),
                _ => return plan_err!("{usage}; the third argument is {third}"),
            });
        }
        Ok(out)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[1].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar_ts = matches!(args.args[1], ColumnarValue::Scalar(_));
        let width = match &args.args[0] {
            ColumnarValue::Scalar(s) => s.clone(),
            ColumnarValue::Array(_) => {
                return Err(invalid_argument("time_bucket: the bucket width must be a constant"));
            }
        };
        let third = match args.args.get(2) {
            None => None,
            Some(ColumnarValue::Scalar(s)) => Some(s.clone()),
            Some(ColumnarValue::Array(_)) => {
                return Err(invalid_argument("time_bucket: the origin or offset must be a constant"));
            }
        };
        let ts = args.args[1].to_array(args.number_rows)?;
        let out = match (&width, ts.data_type()) {
            (ScalarValue::Int64(w), DataType::Int64) => bucket_ints(*w, ts.as_primitive(), third)?,
            (ScalarValue::IntervalMonthDayNano(w), DataType::Timestamp(unit, tz)) => {
                let Some(w) = w else { return Ok(ColumnarValue::Scalar(ScalarValue::try_from(ts.data_type())?)) };
                let values = timestamps_as_i64(&ts)?;
                let out = bucket_times(*w, *unit, &values, third)?;
                let out: ArrayRef = match unit {
                    TimeUnit::Second => {
                        Arc::new(PrimitiveArray::<TimestampSecondType>::from(out).with_timezone_opt(tz.clone()))
                    }
                    TimeUnit::Millisecond => {
                        Arc::new(PrimitiveArray::<TimestampMillisecondType>::from(out).with_timezone_opt(tz.clone()))
                    }
                    TimeUnit::Microsecond => {
                        Arc::new(PrimitiveArray::<TimestampMicrosecondType>::from(out).with_timezone_opt(tz.clone()))
                    }
                    TimeUnit::Nanosecond => {
                        Arc::new(PrimitiveArray::<TimestampNanosecondType>::from(out).with_timezone_opt(tz.clone()))
                    }
                };
                out
            }
            (w, t) => return exec_err!("time_bucket: unexpected arguments {} and {t}", w.data_type()),
        };
        columnar(out, scalar_ts)
    }
}

/// A function's result: a scalar when every argument was one, else the array.
fn columnar(out: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    Ok(if scalar { ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?) } else { ColumnarValue::Array(out) })
}

fn timestamps_as_i64(ts: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let ints = datafusion::arrow::compute::cast(ts, &DataType::Int64)?;
    Ok(ints.as_primitive::<datafusion::arrow::datatypes::Int64Type>().iter().collect())
}

fn bucket_ints(
    width: Option<i64>,
    ts: &PrimitiveArray<datafusion::arrow::datatypes::Int64Type>,
    offset: Option<ScalarValue>,
) -> Result<ArrayRef> {
    let Some(width) = width else { return Ok(Arc::new(Int64Array::new_null(ts.len()))) };
    if width <= 0 {
        return Err(invalid_argument(format!("time_bucket: the bucket width must be positive, not {width}")));
    }
    let offset = match offset {
        None | Some(ScalarValue::Int64(None)) => 0,
        Some(ScalarValue::Int64(Some(o))) => o,
        Some(other) => return exec_err!("time_bucket: unexpected offset {}", other.data_type()),
    };
    let (w, o) = (i128::from(width), i128::from(offset));
    let out: Int64Array =
        ts.iter().map(|v| v.and_then(|v| i64::try_from(floor_div(i128::from(v) - o, w) * w + o).ok())).collect();
    Ok(Arc::new(out))
}

fn bucket_times(
    width: IntervalMonthDayNano,
    unit: TimeUnit,
    values: &[Option<i64>],
    third: Option<ScalarValue>,
) -> Result<Vec<Option<i64>>> {
    let per = nanos_per_unit(unit);
    if width.months != 0 && (width.days != 0 || width.nanoseconds != 0) {
        return Err(invalid_argument(
            "time_bucket: a width in months cannot also have days or a time part (use one or the other)",
        ));
    }
    let fixed = i128::from(width.days) * NANOS_PER_DAY + i128::from(width.nanoseconds);
    if width.months < 0 || (width.months == 0 && fixed <= 0) {
        return Err(invalid_argument("time_bucket: the bucket width must be positive"));
    }
    // The third argument: an origin (a timestamp, in the same unit) or an offset (an interval).
    let (origin, offset): (Option<i128>, i128) = match third {
        None => (None, 0),
        Some(ScalarValue::IntervalMonthDayNano(Some(o))) => {
            if o.months != 0 {
                return Err(invalid_argument("time_bucket: an offset in months is not supported"));
            }
            (None, (i128::from(o.days) * NANOS_PER_DAY + i128::from(o.nanoseconds)) / per)
        }
        Some(ScalarValue::IntervalMonthDayNano(None)) => (None, 0),
        Some(s) => match s {
            ScalarValue::TimestampSecond(v, _)
            | ScalarValue::TimestampMillisecond(v, _)
            | ScalarValue::TimestampMicrosecond(v, _)
            | ScalarValue::TimestampNanosecond(v, _) => (v.map(i128::from), 0),
            other => return exec_err!("time_bucket: unexpected origin {}", other.data_type()),
        },
    };
    if width.months == 0 {
        let w = fixed / per;
        if w == 0 {
            return Err(invalid_argument("time_bucket: the bucket width is below the time's precision"));
        }
        let origin = origin.unwrap_or(i128::from(ORIGIN_S) * 1_000_000_000 / per);
        return Ok(values
            .iter()
            .map(|v| {
                v.and_then(|v| {
                    let t = i128::from(v) - offset;
                    i64::try_from(origin + floor_div(t - origin, w) * w + offset).ok()
                })
            })
            .collect());
    }
    // Months: count calendar months from the origin.
    let to_dt = |v: i128| -> Option<NaiveDateTime> {
        let ns = i64::try_from(v * per).ok()?;
        Some(DateTime::from_timestamp_nanos(ns).naive_utc())
    };
    let from_dt = |d: NaiveDateTime| -> Option<i64> {
        let ns = i128::from(d.and_utc().timestamp()) * 1_000_000_000 + i128::from(d.and_utc().timestamp_subsec_nanos());
        i64::try_from(ns / per).ok()
    };
    let origin = match origin {
        Some(o) => to_dt(o).ok_or_else(|| invalid_argument("time_bucket: origin out of range"))?,
        None => DateTime::from_timestamp(MONTH_ORIGIN_S, 0).expect("valid").naive_utc(),
    };
    let m = i64::from(width.months);
    let add_months = |d: NaiveDateTime, n: i64| -> Option<NaiveDateTime> {
        if n >= 0 {
            d.checked_add_months(Months::new(u32::try_from(n).ok()?))
        } else {
            d.checked_sub_months(Months::new(u32::try_from(-n).ok()?))
        }
    };
    Ok(values
        .iter()
        .map(|v| {
            let t = to_dt(i128::from((*v)?) - offset)?;
            let mut idx = (i64::from(t.year_ce().1) - i64::from(origin.year_ce().1)) * 12
                + (i64::from(t.month0()) - i64::from(origin.month0()));
            if add_months(origin, idx)? > t {
                idx -= 1;
            }
            let bucket = add_months(origin, (idx.div_euclid(m)) * m)?;
            from_dt(bucket).and_then(|b| i64::try_from(i128::from(b) + offset).ok())
        })
        .collect())
}

use chrono::Datelike;

#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalMul {
    signature: Signature,
}

impl ScalarUDFImpl for IntervalMul {
    fn name(&self) -> &str {
        "interval_mul"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [DataType::Interval(_) | DataType::Duration(_) | DataType::Null, f] if f.is_numeric() || f.is_null() => {
                Ok(vec![DataType::Interval(IntervalUnit::MonthDayNano), DataType::Float64])
            }
            _ => plan_err!("interval_mul(interval, factor) takes an interval and a number"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let n = args.number_rows;
        let iv = args.args[0].to_array(n)?;
        let f = args.args[1].to_array(n)?;
        let iv = iv.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
        let f = f.as_primitive::<Float64Type>();
        let out: IntervalMonthDayNanoArray = iv
            .iter()
            .zip(f.iter())
            .map(|(i, f)| match (i, f) {
                (Some(i), Some(f)) => mul_interval(i, f),
                _ => None,
            })
            .collect();
        let out: ArrayRef = Arc::new(out);
        columnar(out, all_scalar)
    }
}

/// PostgreSQL's `interval * float8`: fractional months spill into days (30 per month), fractional
/// days into time (24 hours per day).
fn mul_interval(i: IntervalMonthDayNano, f: f64) -> Option<IntervalMonthDayNano> {
    if !f.is_finite() {
        return None;
    }
    let months = f64::from(i.months) * f;
    let whole_months = months.trunc();
    let days = f64::from(i.days) * f + (months - whole_months) * 30.0;
    let whole_days = days.trunc();
    let nanos = (i.nanoseconds as f64) * f + (days - whole_days) * NANOS_PER_DAY as f64;
    if whole_months.abs() > f64::from(i32::MAX)
        || whole_days.abs() > f64::from(i32::MAX)
        || nanos.abs() > i64::MAX as f64
    {
        return None;
    }
    Some(IntervalMonthDayNano::new(whole_months as i32, whole_days as i32, nanos.round() as i64))
}

/// Plans PostgreSQL's date/time arithmetic that DataFusion lacks: number × interval, interval ×
/// number, interval / number (as `interval_mul`), and timestamp − timestamp as an interval.
#[derive(Debug)]
pub struct DateTimeArithmetic;

impl ExprPlanner for DateTimeArithmetic {
    fn plan_binary_op(&self, expr: RawBinaryExpr, schema: &DFSchema) -> Result<PlannerResult<RawBinaryExpr>> {
        let (Ok(lt), Ok(rt)) =
            (expr.left.get_type(schema as &dyn ExprSchema), expr.right.get_type(schema as &dyn ExprSchema))
        else {
            return Ok(PlannerResult::Original(expr));
        };
        let interval = |t: &DataType| matches!(t, DataType::Interval(_));
        let number = |t: &DataType| t.is_numeric();
        let call =
            |iv: Expr, factor: Expr| Expr::ScalarFunction(ScalarFunction::new_udf(interval_mul(), vec![iv, factor]));
        let planned = match expr.op {
            BinaryOperator::Multiply if interval(&lt) && number(&rt) => call(expr.left, expr.right),
            BinaryOperator::Multiply if number(&lt) && interval(&rt) => call(expr.right, expr.left),
            BinaryOperator::Divide if interval(&lt) && number(&rt) => {
                let inverse = binary_expr(
                    Expr::Literal(ScalarValue::Float64(Some(1.0)), None),
                    Operator::Divide,
                    Expr::Cast(Cast::new(Box::new(expr.right), DataType::Float64)),
                );
                call(expr.left, inverse)
            }
            BinaryOperator::Minus if matches!(lt, DataType::Timestamp(..)) && matches!(rt, DataType::Timestamp(..)) => {
                Expr::Cast(Cast::new(
                    Box::new(binary_expr(expr.left, Operator::Minus, expr.right)),
                    DataType::Interval(IntervalUnit::MonthDayNano),
                ))
            }
            _ => return Ok(PlannerResult::Original(expr)),
        };
        Ok(PlannerResult::Planned(planned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("time").and_utc().timestamp_micros()
    }

    fn bucket(width: IntervalMonthDayNano, t: &str) -> String {
        let out = bucket_times(width, TimeUnit::Microsecond, &[Some(us(t))], None).expect("bucket");
        DateTime::from_timestamp_micros(out[0].expect("value")).expect("time").naive_utc().to_string()
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let week = IntervalMonthDayNano::new(0, 7, 0);
        assert_eq!(bucket(week, "2024-01-03 10:00:00"), "2024-01-01 00:00:00");
        assert_eq!(bucket(week, "2024-01-07 23:59:59"), "2024-01-01 00:00:00");
        assert_eq!(bucket(week, "2024-01-08 00:00:00"), "2024-01-08 00:00:00");
        let quarter = IntervalMonthDayNano::new(3, 0, 0);
        assert_eq!(bucket(quarter, "2024-05-31 23:00:00"), "2024-04-01 00:00:00");
        assert_eq!(bucket(quarter, "1999-12-31 00:00:00"), "1999-10-01 00:00:00");
        let five_min = IntervalMonthDayNano::new(0, 0, 300_000_000_000);
        assert_eq!(bucket(five_min, "1969-12-31 23:58:00"), "1969-12-31 23:55:00");
    }

    proptest::proptest! {
        /// time_bucket is floor-like (bucket <= t < bucket + width, for fixed widths) and idempotent.
        #[test]
        fn buckets_floor_and_are_idempotent(t in -4_000_000_000_000_000i64..4_000_000_000_000_000i64,
                                           width_s in 1i64..10_000_000, months in 0i32..30) {
            let fixed = IntervalMonthDayNano::new(0, 0, width_s * 1_000_000_000);
            let b = bucket_times(fixed, TimeUnit::Microsecond, &[Some(t)], None).unwrap()[0].unwrap();
            proptest::prop_assert!(b <= t && t < b + width_s * 1_000_000);
            let again = bucket_times(fixed, TimeUnit::Microsecond, &[Some(b)], None).unwrap()[0].unwrap();
            proptest::prop_assert_eq!(again, b);
            if months > 0 {
                let m = IntervalMonthDayNano::new(months, 0, 0);
                let b = bucket_times(m, TimeUnit::Microsecond, &[Some(t)], None).unwrap()[0].unwrap();
                proptest::prop_assert!(b <= t);
                let again = bucket_times(m, TimeUnit::Microsecond, &[Some(b)], None).unwrap()[0].unwrap();
                proptest::prop_assert_eq!(again, b);
                // The next bucket starts after t.
                let start = DateTime::from_timestamp_micros(b).unwrap().naive_utc();
                let next = start.checked_add_months(Months::new(months as u32)).unwrap().and_utc().timestamp_micros();
                proptest::prop_assert!(t < next);
            }
        }
    }

    #[test]
    fn interval_times_a_number_spills_like_postgresql() {
        let one_month = IntervalMonthDayNano::new(1, 0, 0);
        assert_eq!(mul_interval(one_month, 1.5), Some(IntervalMonthDayNano::new(1, 15, 0)));
        let one_day = IntervalMonthDayNano::new(0, 1, 0);
        assert_eq!(mul_interval(one_day, 1.5), Some(IntervalMonthDayNano::new(0, 1, 43_200_000_000_000)));
        assert_eq!(mul_interval(one_day, f64::NAN), None);
    }
}

/// `pg_wall_clock(ts, zone)`: the wall clock in `zone` of the instant `ts` (a zoned timestamp), as a
/// TIMESTAMP — what PostgreSQL's `timestamptz AT TIME ZONE zone` returns.
pub fn wall_clock() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(WallClock { signature: Signature::user_defined(Volatility::Immutable) }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WallClock {
    signature: Signature,
}

impl ScalarUDFImpl for WallClock {
    fn name(&self) -> &str {
        "pg_wall_clock"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [DataType::Timestamp(_, Some(tz)), z]
                if z.is_null() || matches!(z, DataType::Utf8 | DataType::Utf8View) =>
            {
                Ok(vec![DataType::Timestamp(TimeUnit::Microsecond, Some(tz.clone())), DataType::Utf8])
            }
            _ => plan_err!("pg_wall_clock(timestamptz, zone) takes a zoned timestamp and a zone name"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use chrono::{Offset, TimeZone};
        let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let zone = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(z))) => z.clone(),
            _ => return Err(invalid_argument("AT TIME ZONE: the zone must be a constant name")),
        };
        let tz: datafusion::arrow::array::timezone::Tz =
            zone.parse().map_err(|_| invalid_argument(format!("time zone \"{zone}\" not recognized")))?;
        let ts = args.args[0].to_array(args.number_rows)?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let out: PrimitiveArray<TimestampMicrosecondType> = ts
            .iter()
            .map(|v| {
                let v = v?;
                let utc = DateTime::from_timestamp_micros(v)?.naive_utc();
                let offset = tz.offset_from_utc_datetime(&utc).fix().local_minus_utc();
                v.checked_add(i64::from(offset) * 1_000_000)
            })
            .collect();
        let out: ArrayRef = Arc::new(out);
        columnar(out, all_scalar)
    }
}

/// An analyzer rule, to run before type coercion: `x AT TIME ZONE z` reaches the plan as a cast to a
/// timestamp zoned `z`; for a zoned `x` (a TIMESTAMPTZ) PostgreSQL returns the naive wall clock in `z`,
/// so that cast becomes `pg_wall_clock(x, z)`. A cast of a naive timestamp (the instant whose wall
/// clock in `z` is `x`) is already PostgreSQL's.
#[derive(Debug)]
pub struct PgAtTimeZone;

impl datafusion::optimizer::AnalyzerRule for PgAtTimeZone {
    fn name(&self) -> &str {
        "pg_at_time_zone"
    }

    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _config: &datafusion::common::config::ConfigOptions,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        plan.transform_up_with_subqueries(|p| {
            let schema = datafusion::logical_expr::utils::merge_schema(&p.inputs());
            // Output names stay what the user wrote (an ORDER BY or a view may refer to them).
            let names = datafusion::logical_expr::expr_rewriter::NamePreserver::new(&p);
            p.map_expressions(|e| {
                let saved = names.save(&e);
                let out = e.transform_up(|e| {
                    let Expr::Cast(Cast { expr, field }) = &e else { return Ok(Transformed::no(e)) };
                    let DataType::Timestamp(_, Some(zone)) = field.data_type() else { return Ok(Transformed::no(e)) };
                    match expr.get_type(&schema as &dyn ExprSchema) {
                        Ok(DataType::Timestamp(_, Some(_))) => {
                            let zone = Expr::Literal(ScalarValue::Utf8(Some(zone.to_string())), None);
                            Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                                wall_clock(),
                                vec![(**expr).clone(), zone],
                            ))))
                        }
                        _ => Ok(Transformed::no(e)),
                    }
                })?;
                Ok(out.update_data(|e| saved.restore(e)))
            })
        })
        .map(|t| t.data)
    }
}
