//! A mergeable percentile sketch (DDSketch: logarithmic buckets, 1% relative error) that can be stored
//! in a table and combined later, so percentiles stay right across rollup levels: the sketch of a
//! minute's sketches is the sketch of the minute's values, never a percentile of percentiles.
//!
//! - `latency_sketch(value)` aggregates non-negative numbers into a sketch;
//! - `rollup_sketch(sketch)` merges sketches (an hour from its minutes, a day from its hours);
//! - `sketch_quantile(sketch, q)` reads a quantile (within 1% of the exact value's magnitude);
//! - `sketch_count(sketch)` the number of values it holds.
//!
//! A sketch is stored as TEXT: `dd1 z<zeros> <index>:<count> <delta>:<count> ...`, bucket indexes
//! ascending, each after the first as the difference from the one before. Value `x > 0` goes to bucket
//! `ceil(ln x / ln γ)` with `γ = (1 + α) / (1 - α)`, `α = 0.01`; zero (and values below 1e-9) to the
//! zero count. Merging adds counts bucket by bucket, so it is exact and order does not matter.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

/// The relative accuracy.
pub const ALPHA: f64 = 0.01;
/// Values below this count as zero.
const MIN_VALUE: f64 = 1e-9;

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// The bucket counts of a sketch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    zeros: u64,
    buckets: BTreeMap<i32, u64>,
}

fn bad(message: String) -> datafusion::error::DataFusionError {
    crate::invalid_argument(message)
}

impl Sketch {
    pub fn add(&mut self, x: f64) -> Result<()> {
        if x.is_nan() {
            return Ok(());
        }
        if x < 0.0 || x.is_infinite() {
            return Err(bad(format!("latency_sketch takes non-negative finite numbers, not {x}")));
        }
        if x < MIN_VALUE {
            self.zeros += 1;
        } else {
            let i = (x.ln() / gamma().ln()).ceil() as i32;
            *self.buckets.entry(i).or_default() += 1;
        }
        Ok(())
    }

    pub fn merge(&mut self, other: &Sketch) {
        self.zeros += other.zeros;
        for (i, c) in &other.buckets {
            *self.buckets.entry(*i).or_default() += c;
        }
    }

    pub fn count(&self) -> u64 {
        self.zeros + self.buckets.values().sum::<u64>()
    }

    /// The `q` quantile (0 to 1), by rank `q * (n - 1)` as DDSketch defines it; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q * (n - 1) as f64).floor() as u64;
        if rank < self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        let g = gamma();
        for (i, c) in &self.buckets {
            seen += c;
            if seen > rank {
                return Some(2.0 * g.powi(*i) / (g + 1.0));
            }
        }
        self.buckets.keys().next_back().map(|i| 2.0 * g.powi(*i) / (g + 1.0))
    }

    pub fn encode(&self) -> String {
        let mut s = format!("dd1 z{}", self.zeros);
        let mut prev: Option<i32> = None;
        for (i, c) in &self.buckets {
            let shown = match prev {
                None => *i as i64,
                Some(p) => *i as i64 - p as i64,
            };
            let _ = write!(s, " {shown}:{c}");
            prev = Some(*i);
        }
        s
    }

    pub fn decode(text: &str) -> Result<Sketch> {
        let invalid =
            || bad(format!("not a sketch made by latency_sketch: \"{}\"", text.chars().take(40).collect::<String>()));
        let mut parts = text.split(' ');
        if parts.next() != Some("dd1") {
            return Err(invalid());
        }
        let zeros = parts.next().and_then(|z| z.strip_prefix('z')).and_then(|z| z.parse().ok()).ok_or_else(invalid)?;
        let mut buckets = BTreeMap::new();
        let mut prev: Option<i64> = None;
        for p in parts {
            let (d, c) = p.split_once(':').ok_or_else(invalid)?;
            let d: i64 = d.parse().map_err(|_| invalid())?;
            let c: u64 = c.parse().map_err(|_| invalid())?;
            let i = match prev {
                None => d,
                Some(p) if d > 0 => p + d,
                Some(_) => return Err(invalid()),
            };
            let i32_index = i32::try_from(i).map_err(|_| invalid())?;
            buckets.insert(i32_index, c);
            prev = Some(i);
        }
        Ok(Sketch { zeros, buckets })
    }
}

/// The functions of this module.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        Arc::new(AggregateUDF::from(SketchAgg {
            merge: false,
            signature: Signature::user_defined(Volatility::Immutable),
        })),
        Arc::new(AggregateUDF::from(SketchAgg {
            merge: true,
            signature: Signature::user_defined(Volatility::Immutable),
        })),
    ]
}

pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(SketchRead {
            count: false,
            signature: Signature::user_defined(Volatility::Immutable),
        })),
        Arc::new(ScalarUDF::from(SketchRead {
            count: true,
            signature: Signature::user_defined(Volatility::Immutable),
        })),
    ]
}

/// `latency_sketch(number)` and `rollup_sketch(sketch)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SketchAgg {
    merge: bool,
    signature: Signature,
}

impl AggregateUDFImpl for SketchAgg {
    fn name(&self) -> &str {
        if self.merge { "rollup_sketch" } else { "latency_sketch" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match (self.merge, arg_types) {
            (false, [t]) if t.is_numeric() || t.is_null() => Ok(vec![DataType::Float64]),
            (true, [DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null]) => {
                Ok(vec![DataType::Utf8])
            }
            (false, _) => plan_err!("latency_sketch(value) takes one number"),
            (true, _) => plan_err!("rollup_sketch(sketch) takes one sketch (TEXT made by latency_sketch)"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn accumulator(&self, _args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAccumulator { merge: self.merge, sketch: Sketch::default() }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format!("{}_sketch", args.name), DataType::Utf8, true))])
    }
}

#[derive(Debug)]
struct SketchAccumulator {
    merge: bool,
    sketch: Sketch,
}

impl SketchAccumulator {
    fn merge_texts(&mut self, a: &ArrayRef) -> Result<()> {
        let a = cast(a, &DataType::Utf8)?;
        for s in a.as_string::<i32>().iter().flatten() {
            self.sketch.merge(&Sketch::decode(s)?);
        }
        Ok(())
    }
}

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if self.merge {
            return self.merge_texts(&values[0]);
        }
        let v = cast(&values[0], &DataType::Float64)?;
        for x in v.as_primitive::<datafusion::arrow::datatypes::Float64Type>().iter().flatten() {
            self.sketch.add(x)?;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.merge_texts(&states[0])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Utf8((self.sketch.count() > 0).then(|| self.sketch.encode())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sketch.buckets.len() * 24
    }
}

/// `sketch_quantile(sketch, q)` and `sketch_count(sketch)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SketchRead {
    count: bool,
    signature: Signature,
}

impl ScalarUDFImpl for SketchRead {
    fn name(&self) -> &str {
        if self.count { "sketch_count" } else { "sketch_quantile" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let text =
            |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null);
        match (self.count, arg_types) {
            (true, [s]) if text(s) => Ok(vec![DataType::Utf8]),
            (false, [s, q]) if text(s) && (q.is_numeric() || q.is_null()) => {
                Ok(vec![DataType::Utf8, DataType::Float64])
            }
            (true, _) => plan_err!("sketch_count(sketch) takes one sketch"),
            (false, _) => plan_err!("sketch_quantile(sketch, q) takes a sketch and a number from 0 to 1"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(if self.count { DataType::Int64 } else { DataType::Float64 })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let sketches = arrays[0].as_string::<i32>();
        let out: ArrayRef = if self.count {
            let mut v = Vec::with_capacity(n);
            for s in sketches.iter() {
                v.push(s.map(Sketch::decode).transpose()?.map(|k| k.count() as i64));
            }
            Arc::new(Int64Array::from(v))
        } else {
            let qs = arrays[1].as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            let mut v = Vec::with_capacity(n);
            for (s, q) in sketches.iter().zip(qs.iter()) {
                let (Some(s), Some(q)) = (s, q) else {
                    v.push(None);
                    continue;
                };
                if !(0.0..=1.0).contains(&q) {
                    return Err(bad(format!("sketch_quantile: q must be between 0 and 1, not {q}")));
                }
                v.push(Sketch::decode(s)?.quantile(q));
            }
            Arc::new(Float64Array::from(v))
        };
        if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_within_the_relative_error() {
        // A heavy-tailed sample: 1 ms to 10 s.
        let mut values: Vec<f64> =
            (0..10_000).map(|i| (1.0f64 + i as f64).powf(1.0 + (i % 7) as f64 / 7.0) / 10.0).collect();
        let mut s = Sketch::default();
        for v in &values {
            s.add(*v).unwrap();
        }
        values.sort_by(f64::total_cmp);
        for q in [0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&values, q);
            let got = s.quantile(q).unwrap();
            assert!((got - want).abs() <= ALPHA * want + 1e-12, "q {q}: {got} vs {want}");
        }
        assert_eq!(s.count(), 10_000);
    }

    #[test]
    fn merging_is_exact_and_order_free() {
        let parts: Vec<Vec<f64>> =
            (0..6).map(|p| (0..500).map(|i| ((i * 37 + p * 11) % 997) as f64 * 0.7).collect()).collect();
        let mut whole = Sketch::default();
        for v in parts.iter().flatten() {
            whole.add(*v).unwrap();
        }
        let sketches: Vec<Sketch> = parts
            .iter()
            .map(|p| {
                let mut s = Sketch::default();
                p.iter().for_each(|v| s.add(*v).unwrap());
                s
            })
            .collect();
        let mut forward = Sketch::default();
        sketches.iter().for_each(|s| forward.merge(s));
        let mut backward = Sketch::default();
        sketches.iter().rev().for_each(|s| backward.merge(&Sketch::decode(&s.encode()).unwrap()));
        assert_eq!(forward, whole);
        assert_eq!(backward, whole);
        assert_eq!(Sketch::decode(&whole.encode()).unwrap(), whole);
    }

    #[test]
    fn encoding_and_refusals() {
        let mut s = Sketch::default();
        for v in [0.0, 0.0, 1.0, 1.0, 100.0] {
            s.add(v).unwrap();
        }
        let text = s.encode();
        assert!(text.starts_with("dd1 z2 0:2 "), "{text}");
        assert_eq!(s.quantile(0.0), Some(0.0));
        assert!((s.quantile(0.5).unwrap() - 1.0).abs() < 0.01);
        assert!(s.add(-1.0).is_err());
        assert!(s.add(f64::INFINITY).is_err());
        s.add(f64::NAN).unwrap();
        assert_eq!(s.count(), 5);
        for bad in ["", "dd2 z0", "dd1", "dd1 z0 5:1 -1:2", "dd1 z0 x:1", "dd1 zz"] {
            assert!(Sketch::decode(bad).is_err(), "{bad}");
        }
        assert_eq!(Sketch::default().quantile(0.5), None);
    }
}
