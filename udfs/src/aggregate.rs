//! Time-series aggregates: `first(value, ts)`, `last(value, ts)` (TimescaleDB's) and
//! `counter_rate(ts, value)` (a reset-aware per-second rate of a monotonic counter, like Prometheus's
//! `rate` without extrapolation).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, TimeUnit};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};

/// The aggregates of this module.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        Arc::new(AggregateUDF::from(FirstLast::new(true))),
        Arc::new(AggregateUDF::from(FirstLast::new(false))),
        Arc::new(AggregateUDF::from(CounterRate { signature: Signature::user_defined(Volatility::Immutable) })),
    ]
}

/// A time argument as microseconds since the epoch (timestamps of any unit, dates, or integers as they
/// are).
fn times_us(a: &ArrayRef) -> Result<Int64Array> {
    let a = match a.data_type() {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            cast(&cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?, &DataType::Int64)?
        }
        _ => cast(a, &DataType::Int64)?,
    };
    Ok(a.as_primitive::<Int64Type>().clone())
}

fn is_time(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) || t.is_integer()
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FirstLast {
    first: bool,
    signature: Signature,
}

impl FirstLast {
    fn new(first: bool) -> Self {
        FirstLast { first, signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for FirstLast {
    fn name(&self) -> &str {
        if self.first { "first" } else { "last" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [v, t] if is_time(t) => Ok(vec![v.clone(), t.clone()]),
            _ => plan_err!("{}(value, time) takes a value and a timestamp", self.name()),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        let t = args.return_field.data_type().clone();
        Ok(Box::new(FirstLastAccumulator { first: self.first, value: ScalarValue::try_from(&t)?, ts: None }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format!("{}_value", args.name), args.return_type().clone(), true)),
            Arc::new(Field::new(format!("{}_ts", args.name), DataType::Int64, true)),
        ])
    }
}

#[derive(Debug)]
struct FirstLastAccumulator {
    first: bool,
    value: ScalarValue,
    /// The time of `value`, in microseconds; `None` before any row with a time.
    ts: Option<i64>,
}

impl FirstLastAccumulator {
    fn better(&self, t: i64) -> bool {
        match self.ts {
            None => true,
            Some(cur) => {
                if self.first {
                    t < cur
                } else {
                    t > cur
                }
            }
        }
    }

    fn take(&mut self, values: &ArrayRef, times: &Int64Array) -> Result<()> {
        let mut best: Option<(usize, i64)> = None;
        for (i, t) in times.iter().enumerate() {
            let Some(t) = t else { continue };
            let wins = match best {
                None => true,
                Some((_, b)) => {
                    if self.first {
                        t < b
                    } else {
                        t > b
                    }
                }
            };
            if wins {
                best = Some((i, t));
            }
        }
        if let Some((i, t)) = best
            && self.better(t)
        {
            self.value = ScalarValue::try_from_array(values, i)?;
            self.ts = Some(t);
        }
        Ok(())
    }
}

impl Accumulator for FirstLastAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let times = times_us(&values[1])?;
        self.take(&values[0], &times)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let times = states[1].as_primitive::<Int64Type>().clone();
        self.take(&states[0], &times)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value.clone(), ScalarValue::Int64(self.ts)])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.value.size() - std::mem::size_of_val(&self.value)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CounterRate {
    signature: Signature,
}

impl AggregateUDFImpl for CounterRate {
    fn name(&self) -> &str {
        "counter_rate"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t, v] if is_time(t) && (v.is_numeric() || v.is_null()) => Ok(vec![t.clone(), DataType::Float64]),
            _ => plan_err!("counter_rate(time, value) takes a timestamp and a number"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        // Integer times are taken as seconds; timestamps are converted from microseconds.
        let t = args.exprs[0].data_type(args.schema)?;
        let per_second = if t.is_integer() { 1.0 } else { 1e6 };
        Ok(Box::new(CounterRateAccumulator { points: Vec::new(), per_second }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        let list = |name: String, t: DataType| {
            Arc::new(Field::new(name, DataType::List(Arc::new(Field::new_list_field(t, true))), true))
        };
        Ok(vec![
            list(format!("{}_ts", args.name), DataType::Int64),
            list(format!("{}_v", args.name), DataType::Float64),
        ])
    }
}

#[derive(Debug)]
struct CounterRateAccumulator {
    points: Vec<(i64, f64)>,
    per_second: f64,
}

impl CounterRateAccumulator {
    fn add(&mut self, times: &Int64Array, values: &Float64Array) {
        for (t, v) in times.iter().zip(values.iter()) {
            if let (Some(t), Some(v)) = (t, v) {
                self.points.push((t, v));
            }
        }
    }
}

impl Accumulator for CounterRateAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let times = times_us(&values[0])?;
        self.add(&times, values[1].as_primitive::<Float64Type>());
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let ts = states[0].as_list::<i32>();
        let vs = states[1].as_list::<i32>();
        for i in 0..ts.len() {
            if ts.is_null(i) {
                continue;
            }
            let t = ts.value(i);
            let v = vs.value(i);
            self.add(t.as_primitive::<Int64Type>(), v.as_primitive::<Float64Type>());
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let ts: Int64Array = self.points.iter().map(|p| Some(p.0)).collect();
        let vs: Float64Array = self.points.iter().map(|p| Some(p.1)).collect();
        let list = |a: ArrayRef| ScalarValue::List(Arc::new(ListArray::from_iter_primitive_array(a)));
        Ok(vec![list(Arc::new(ts)), list(Arc::new(vs))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(counter_rate(&mut self.points, self.per_second)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.points.capacity() * std::mem::size_of::<(i64, f64)>()
    }
}

trait FromIterPrimitive {
    fn from_iter_primitive_array(a: ArrayRef) -> Self;
}

impl FromIterPrimitive for ListArray {
    fn from_iter_primitive_array(a: ArrayRef) -> Self {
        let field = Arc::new(Field::new_list_field(a.data_type().clone(), true));
        ListArray::new(field, datafusion::arrow::buffer::OffsetBuffer::from_lengths([a.len()]), a, None)
    }
}

/// The per-second rate of increase of a counter sampled at `points` (time, value): each drop is a
/// reset, after which the counter counted from zero. `None` with fewer than two points or no time
/// between the first and the last.
fn counter_rate(points: &mut [(i64, f64)], per_second: f64) -> Option<f64> {
    points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let (first, last) = (points.first()?, points.last()?);
    let span = (last.0 - first.0) as f64 / per_second;
    if points.len() < 2 || span <= 0.0 {
        return None;
    }
    let increase: f64 = points.windows(2).map(|w| if w[1].1 >= w[0].1 { w[1].1 - w[0].1 } else { w[1].1 }).sum();
    Some(increase / span)
}

#[cfg(test)]
mod tests {
    use super::counter_rate;

    #[test]
    fn resets_count_from_zero() {
        // 10 -> 40 (+30), reset to 5 (+5), -> 25 (+20): 55 over 30 s.
        let mut p = vec![(20_000_000, 5.0), (0, 10.0), (10_000_000, 40.0), (30_000_000, 25.0)];
        assert_eq!(counter_rate(&mut p, 1e6), Some(55.0 / 30.0));
        assert_eq!(counter_rate(&mut [(0, 1.0)], 1e6), None);
        assert_eq!(counter_rate(&mut [(5, 1.0), (5, 2.0)], 1e6), None);
    }
}
