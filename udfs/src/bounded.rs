//! Functions whose result can be far larger than their arguments (`repeat('x', 1000000000)`,
//! `lpad(s, 2000000000)`, `array_repeat(x, 10^9)`, `range(0, 10^10)`), wrapped so that a call whose
//! result would pass [`MAX_RESULT_BYTES`] fails with 54000 (program_limit_exceeded) before anything
//! is allocated. DataFusion's memory pool does not see what scalar functions allocate, so without
//! this one short statement could make the process allocate gigabytes (PostgreSQL refuses a value
//! over 1 GB the same way: "requested length too large").

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

use crate::SqlError;
use crate::sqlstate::SqlState;

/// The most one call of a wrapped function may produce, over all the rows of a batch.
pub const MAX_RESULT_BYTES: u64 = 256 << 20;

/// How each wrapped function's result size is estimated from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Estimate {
    /// `repeat(text, n)`: the text's length times n.
    Repeat,
    /// `lpad` / `rpad(text, n [, fill])`: n characters (at most 4 bytes each).
    Pad,
    /// `array_repeat(x, n)`: n elements.
    ArrayRepeat,
    /// `range` / `generate_series(start, stop [, step])` as a scalar: (stop - start) / step elements.
    Range,
}

const WRAPPED: [(&str, Estimate); 6] = [
    ("repeat", Estimate::Repeat),
    ("lpad", Estimate::Pad),
    ("rpad", Estimate::Pad),
    ("array_repeat", Estimate::ArrayRepeat),
    ("range", Estimate::Range),
    ("generate_series", Estimate::Range),
];

/// Replaces the functions of [`WRAPPED`] registered in `state` by their bounded versions.
pub fn install(state: &mut SessionState) -> Result<()> {
    for (name, estimate) in WRAPPED {
        if let Some(inner) = state.scalar_functions().get(name).cloned() {
            state.register_udf(Arc::new(ScalarUDF::from(Bounded { inner: inner.as_ref().clone(), estimate })))?;
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    estimate: Estimate,
}

/// One argument of a call, cast once for all its rows: as integers, or (the text of `repeat`) as the
/// byte lengths of its values.
enum Arg {
    Int(Option<i64>),
    Ints(Option<Int64Array>),
    TextLen(u64),
    Texts(Option<ArrayRef>),
}

impl Arg {
    fn int(arg: &ColumnarValue) -> Arg {
        match arg {
            ColumnarValue::Scalar(s) => Arg::Int(match s.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(v)) => v,
                _ => None,
            }),
            ColumnarValue::Array(a) => Arg::Ints(
                datafusion::arrow::compute::cast(a, &DataType::Int64)
                    .ok()
                    .map(|a| a.as_primitive::<Int64Type>().clone()),
            ),
        }
    }

    /// An argument of `range` / `generate_series`: an integer as itself; a timestamp or date as its
    /// microseconds since the epoch, and an interval as the fewest microseconds it can span (a month
    /// as 28 days), so that `(stop - start) / step` bounds the count of a series of times too.
    fn series(arg: &ColumnarValue) -> Arg {
        use datafusion::arrow::datatypes::{IntervalMonthDayNanoType, TimeUnit};
        const DAY: i64 = 86_400_000_000;
        let as_micros = |a: &ArrayRef| -> Option<ArrayRef> {
            match a.data_type() {
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                    let t =
                        datafusion::arrow::compute::cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None)).ok()?;
                    datafusion::arrow::compute::cast(&t, &DataType::Int64).ok()
                }
                DataType::Interval(_) => {
                    let iv = datafusion::arrow::compute::cast(
                        a,
                        &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
                    )
                    .ok()?;
                    let micros: Int64Array = iv
                        .as_primitive::<IntervalMonthDayNanoType>()
                        .iter()
                        .map(|v| {
                            let v = v?;
                            let parts = [i64::from(v.months) * 28 * DAY, i64::from(v.days) * DAY, v.nanoseconds / 1000];
                            // Parts of both signs bound nothing: no estimate.
                            (parts.iter().all(|p| *p >= 0) || parts.iter().all(|p| *p <= 0))
                                .then(|| parts.iter().fold(0i64, |a, p| a.saturating_add(*p)))
                        })
                        .collect();
                    Some(Arc::new(micros))
                }
                _ => None,
            }
        };
        let array = match arg {
            ColumnarValue::Scalar(s) if !s.data_type().is_integer() => s.to_array().ok(),
            ColumnarValue::Array(a) if !a.data_type().is_integer() => Some(a.clone()),
            _ => return Arg::int(arg),
        };
        match array.as_ref().and_then(as_micros) {
            Some(a) if matches!(arg, ColumnarValue::Scalar(_)) => {
                Arg::Int((a.len() == 1 && a.is_valid(0)).then(|| a.as_primitive::<Int64Type>().value(0)))
            }
            Some(a) => Arg::Ints(Some(a.as_primitive::<Int64Type>().clone())),
            None => Arg::int(arg),
        }
    }

    fn text(arg: &ColumnarValue) -> Arg {
        match arg {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(t)) | ScalarValue::LargeUtf8(Some(t)) | ScalarValue::Utf8View(Some(t)),
            ) => Arg::TextLen(t.len() as u64),
            ColumnarValue::Scalar(_) => Arg::TextLen(0),
            ColumnarValue::Array(a) => Arg::Texts(datafusion::arrow::compute::cast(a, &DataType::LargeUtf8).ok()),
        }
    }

    /// The value of row `row` as an integer (NULL, or not an integer: `None`).
    fn int_at(&self, row: usize) -> Option<i64> {
        match self {
            Arg::Int(v) => *v,
            Arg::Ints(Some(a)) => (row < a.len() && a.is_valid(row)).then(|| a.value(row)),
            _ => None,
        }
    }

    /// The byte length of row `row` when it is text.
    fn text_len_at(&self, row: usize) -> u64 {
        match self {
            Arg::TextLen(n) => *n,
            Arg::Texts(Some(a)) => {
                let a = a.as_string::<i64>();
                if row < a.len() && a.is_valid(row) { a.value(row).len() as u64 } else { 0 }
            }
            _ => 0,
        }
    }
}

impl Bounded {
    /// The arguments the estimate reads, each cast once.
    fn cast_args(&self, args: &[ColumnarValue]) -> Vec<Arg> {
        args.iter()
            .enumerate()
            .map(|(i, a)| match self.estimate {
                Estimate::Repeat if i == 0 => Arg::text(a),
                Estimate::Range => Arg::series(a),
                _ => Arg::int(a),
            })
            .collect()
    }

    /// The result size of one row, estimated from above.
    fn row_bytes(&self, args: &[Arg], row: usize) -> u64 {
        let int_at = |i: usize| args.get(i).and_then(|a| a.int_at(row));
        let n = |i| int_at(i).unwrap_or(0).max(0) as u64;
        match self.estimate {
            Estimate::Repeat => args.first().map_or(0, |a| a.text_len_at(row)).saturating_mul(n(1)),
            Estimate::Pad => n(1).saturating_mul(4),
            Estimate::ArrayRepeat => n(1).saturating_mul(8),
            Estimate::Range => {
                let (start, stop, step) = if args.len() == 1 {
                    (Some(0), int_at(0), Some(1))
                } else {
                    (int_at(0), int_at(1), int_at(2).or(Some(1)))
                };
                match (start, stop, step) {
                    (Some(a), Some(b), Some(s)) if s != 0 => {
                        let span = (b as i128 - a as i128) / s as i128;
                        (span.max(0) as u64).saturating_add(1).saturating_mul(8)
                    }
                    _ => 0,
                }
            }
        }
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = if args.args.iter().any(|a| matches!(a, ColumnarValue::Array(_))) { args.number_rows } else { 1 };
        let cast = self.cast_args(&args.args);
        let mut total: u64 = 0;
        for row in 0..rows {
            total = total.saturating_add(self.row_bytes(&cast, row));
            if total > MAX_RESULT_BYTES {
                return Err(DataFusionError::External(Box::new(SqlError {
                    code: SqlState::ProgramLimitExceeded,
                    message: format!(
                        "{}: the result would take more than {} MiB (of the arguments of a batch of rows)",
                        self.name(),
                        MAX_RESULT_BYTES >> 20
                    ),
                })));
            }
        }
        let mut args = args;
        if self.estimate == Estimate::Pad {
            // DataFusion sizes its output buffer by summing the lengths as `usize`, so a negative
            // length in a column panics with "capacity overflow"; a negative length pads to the
            // empty string (as in PostgreSQL), which 0 gives.
            if let (Some(ColumnarValue::Array(n)), Some(Arg::Ints(Some(lengths)))) = (args.args.get_mut(1), cast.get(1))
            {
                let lengths: Int64Array = lengths.unary(|v| v.max(0));
                *n = Arc::new(lengths);
            }
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    async fn code(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Option<String> {
        let r = async { ctx.sql(sql).await?.collect().await }.await;
        r.err().map(|e| {
            let mut s = e.to_string();
            if let Some(f) = e.find_root().to_string().split_whitespace().next() {
                s.push_str(f);
            }
            s
        })
    }

    #[tokio::test]
    async fn results_beyond_the_limit_are_refused_before_they_are_made() {
        let ctx = datafusion::prelude::SessionContext::new();
        let mut state = ctx.state();
        super::install(&mut state).expect("installs");
        let ctx = datafusion::prelude::SessionContext::new_with_state(state);
        for sql in [
            "SELECT length(repeat('x', 1000000000))",
            "SELECT length(repeat(s, 100000000)) FROM (VALUES ('abc'), ('de')) AS t(s)",
            "SELECT length(lpad('x', 2000000000))",
            "SELECT rpad('x', 100000000, 'ab')",
            "SELECT cardinality(array_repeat(1, 1000000000))",
            "SELECT cardinality(range(0, 10000000000))",
            "SELECT cardinality(generate_series(1, 1000000000))",
            "SELECT cardinality(generate_series(TIMESTAMP '2000-01-01', TIMESTAMP '2030-01-01', INTERVAL '1 second'))",
        ] {
            let e = code(&ctx, sql).await.unwrap_or_else(|| panic!("{sql} ran"));
            assert!(e.contains("more than 256 MiB"), "{sql}: {e}");
        }
        for sql in [
            "SELECT length(repeat('x', 1000))",
            "SELECT lpad('7', 3, '0')",
            "SELECT repeat(NULL, 5)",
            "SELECT cardinality(range(0, 1000, 7))",
            // Times with an interval step: hours, not microseconds, of a day.
            "SELECT cardinality(generate_series(TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-02', INTERVAL '1 hour'))",
            "SELECT cardinality(generate_series(DATE '2024-01-01', DATE '2030-01-01', INTERVAL '1 month'))",
            "SELECT cardinality(array_repeat('a', 10))",
            // Negative lengths in a column (DataFusion's own lpad panicked on them).
            "SELECT lpad('', n), rpad('a', n, 'b'), lpad(s, n, 'xy') FROM (VALUES (-5, 'é'), (3, NULL), (NULL, 'a')) AS t(n, s)",
        ] {
            assert_eq!(code(&ctx, sql).await, None, "{sql}");
        }
    }
}
