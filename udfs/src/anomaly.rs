//! Anomaly detection as window functions. Each compares the current row's value with the rows of its
//! window frame, so the frame should end before the current row — a spike then cannot hide itself:
//!
//! ```sql
//! SELECT bucket, backend, p99,
//!        anomaly_mad(p99) OVER (PARTITION BY backend ORDER BY bucket
//!                               ROWS BETWEEN 60 PRECEDING AND 1 PRECEDING) AS score
//! FROM ...
//! ```
//!
//! - `anomaly_zscore(x)`: (x − mean) / sample standard deviation of the frame;
//! - `anomaly_mad(x)`: (x − median) / (1.4826 × median absolute deviation): robust to outliers in the
//!   history;
//! - `anomaly_tukey(x [, k = 1.5])`: 0 inside Tukey's fences [Q1 − k·IQR, Q3 + k·IQR], otherwise the
//!   distance beyond Q3 (or Q1, negative) in units of k·IQR, so |score| > 1 is outside the fences;
//! - `ewma(x, alpha)`, `ewma_stddev(x, alpha)`: the exponentially weighted mean and standard deviation
//!   of the frame (a band is `ewma ± k · ewma_stddev`); `anomaly_ewma(x, alpha)`: (x − ewma) /
//!   ewma_stddev.
//!
//! NULL values are skipped. A score is NULL when the current value is NULL, the frame has fewer than
//! two values, or the frame has no spread (the denominator is 0).

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl};
use datafusion::physical_expr::expressions::Literal;

use crate::invalid_argument;
use crate::sliding::SortedWindow;

/// The window functions of this module.
pub fn window_functions() -> Vec<Arc<WindowUDF>> {
    [Kind::ZScore, Kind::Mad, Kind::Tukey, Kind::Ewma, Kind::EwmaStddev, Kind::EwmaScore]
        .into_iter()
        .map(|kind| {
            Arc::new(WindowUDF::from(Anomaly { kind, signature: Signature::user_defined(Volatility::Immutable) }))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    ZScore,
    Mad,
    Tukey,
    Ewma,
    EwmaStddev,
    EwmaScore,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ZScore => "anomaly_zscore",
            Kind::Mad => "anomaly_mad",
            Kind::Tukey => "anomaly_tukey",
            Kind::Ewma => "ewma",
            Kind::EwmaStddev => "ewma_stddev",
            Kind::EwmaScore => "anomaly_ewma",
        }
    }

    /// (minimum, maximum) number of arguments.
    fn arity(self) -> (usize, usize) {
        match self {
            Kind::ZScore | Kind::Mad => (1, 1),
            Kind::Tukey => (1, 2),
            Kind::Ewma | Kind::EwmaStddev | Kind::EwmaScore => (2, 2),
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Kind::ZScore => "anomaly_zscore(value)",
            Kind::Mad => "anomaly_mad(value)",
            Kind::Tukey => "anomaly_tukey(value [, k])",
            Kind::Ewma => "ewma(value, alpha)",
            Kind::EwmaStddev => "ewma_stddev(value, alpha)",
            Kind::EwmaScore => "anomaly_ewma(value, alpha)",
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Anomaly {
    kind: Kind,
    signature: Signature,
}

impl WindowUDFImpl for Anomaly {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let (lo, hi) = self.kind.arity();
        if arg_types.len() < lo || arg_types.len() > hi {
            return plan_err!("{} takes {lo}{} argument(s)", self.kind.usage(), if hi > lo { " or more" } else { "" });
        }
        // Numbers become doubles; anything else is left as it is and refused when the function runs, with
        // SQLSTATE 22023 rather than "no function matches".
        Ok(arg_types
            .iter()
            .map(|t| if t.is_numeric() || t.is_null() { DataType::Float64 } else { t.clone() })
            .collect())
    }

    fn partition_evaluator(&self, args: PartitionEvaluatorArgs<'_>) -> Result<Box<dyn PartitionEvaluator>> {
        for f in args.input_fields() {
            if f.data_type() != &DataType::Float64 {
                return Err(invalid_argument(format!(
                    "{}: arguments must be numeric, not {}",
                    self.kind.usage(),
                    f.data_type()
                )));
            }
        }
        let param = match args.input_exprs().get(1) {
            None => None,
            Some(e) => match e.downcast_ref::<Literal>().map(|l| l.value()) {
                Some(v) => match v.cast_to(&DataType::Float64)? {
                    ScalarValue::Float64(Some(f)) => Some(f),
                    _ => {
                        return Err(invalid_argument(format!("{}: the parameter must not be NULL", self.kind.usage())));
                    }
                },
                None => {
                    return Err(invalid_argument(format!("{}: the parameter must be a constant", self.kind.usage())));
                }
            },
        };
        let param = match self.kind {
            Kind::Ewma | Kind::EwmaStddev | Kind::EwmaScore => {
                let alpha = param.unwrap_or(f64::NAN);
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return Err(invalid_argument(format!(
                        "{}: alpha must be in (0, 1], not {alpha}",
                        self.kind.usage()
                    )));
                }
                alpha
            }
            Kind::Tukey => {
                let k = param.unwrap_or(1.5);
                if !(k > 0.0 && k.is_finite()) {
                    return Err(invalid_argument(format!("anomaly_tukey: k must be positive, not {k}")));
                }
                k
            }
            _ => 0.0,
        };
        Ok(Box::new(Evaluator {
            kind: self.kind,
            param,
            row: 0,
            ew: None,
            held: 0..0,
            window: SortedWindow::default(),
        }))
    }

    fn field(&self, field_args: WindowUDFFieldArgs<'_>) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(field_args.name(), DataType::Float64, true)))
    }
}

/// Exponentially weighted mean and variance of a prefix of the frame, kept while the frame only grows.
#[derive(Debug, Clone, Copy)]
struct Ew {
    start: usize,
    end: usize,
    n: usize,
    mean: f64,
    var: f64,
}

#[derive(Debug)]
struct Evaluator {
    kind: Kind,
    param: f64,
    /// The index of the row being evaluated: DataFusion evaluates a partition's rows in order.
    row: usize,
    ew: Option<Ew>,
    /// The rows whose non-null values `window` holds (median-based functions): frames slide forward,
    /// so each step removes the rows that left and inserts those that entered.
    held: Range<usize>,
    window: SortedWindow,
}

impl Evaluator {
    fn ew(&mut self, x: &datafusion::arrow::array::Float64Array, range: &Range<usize>) -> Ew {
        let alpha = self.param;
        let mut s = match self.ew {
            Some(s) if s.start == range.start && s.end <= range.end => s,
            _ => Ew { start: range.start, end: range.start, n: 0, mean: 0.0, var: 0.0 },
        };
        for i in s.end..range.end {
            if x.is_null(i) {
                continue;
            }
            let v = x.value(i);
            if s.n == 0 {
                s.mean = v;
                s.var = 0.0;
            } else {
                let diff = v - s.mean;
                let incr = alpha * diff;
                s.mean += incr;
                s.var = (1.0 - alpha) * (s.var + diff * incr);
            }
            s.n += 1;
        }
        s.end = range.end;
        self.ew = Some(s);
        s
    }

    /// The frame's non-null values, sorted, moved from the previous frame's.
    fn slide(&mut self, x: &datafusion::arrow::array::Float64Array, range: &Range<usize>) -> &SortedWindow {
        let held = self.held.clone();
        if range.start < held.start || range.end < held.end || range.start > held.end {
            self.window.clear();
            self.held = range.start..range.start;
        }
        for i in self.held.start..range.start {
            if x.is_valid(i) {
                self.window.remove(x.value(i));
            }
        }
        for i in self.held.end.max(range.start)..range.end {
            if x.is_valid(i) {
                self.window.insert(x.value(i));
            }
        }
        self.held = range.clone();
        &self.window
    }
}

use datafusion::arrow::array::Array;

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0 && den.is_finite()).then(|| num / den)
}

impl PartitionEvaluator for Evaluator {
    fn uses_window_frame(&self) -> bool {
        true
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        let x = values[0].as_primitive::<Float64Type>();
        let row = self.row;
        self.row += 1;
        let current = (row < x.len() && x.is_valid(row)).then(|| x.value(row));
        let out = match self.kind {
            Kind::Ewma => {
                let s = self.ew(x, range);
                (s.n > 0).then_some(s.mean)
            }
            Kind::EwmaStddev => {
                let s = self.ew(x, range);
                (s.n > 1).then(|| s.var.sqrt())
            }
            Kind::EwmaScore => {
                let s = self.ew(x, range);
                match current {
                    Some(c) if s.n > 1 => ratio(c - s.mean, s.var.sqrt()),
                    _ => None,
                }
            }
            Kind::ZScore => {
                let Some(c) = current else { return Ok(ScalarValue::Float64(None)) };
                let frame: Vec<f64> = range.clone().filter(|&i| x.is_valid(i)).map(|i| x.value(i)).collect();
                if frame.len() < 2 {
                    return Ok(ScalarValue::Float64(None));
                }
                let n = frame.len() as f64;
                let mean = frame.iter().sum::<f64>() / n;
                let var = frame.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
                ratio(c - mean, var.sqrt())
            }
            Kind::Mad | Kind::Tukey => {
                let (kind, param) = (self.kind, self.param);
                let frame = self.slide(x, range);
                let Some(c) = current else { return Ok(ScalarValue::Float64(None)) };
                if frame.len() < 2 {
                    return Ok(ScalarValue::Float64(None));
                }
                match kind {
                    Kind::Mad => {
                        let median = frame.median();
                        ratio(c - median, 1.4826 * frame.median_abs_deviation(median))
                    }
                    _ => {
                        let (q1, q3) = (frame.quantile(0.25), frame.quantile(0.75));
                        let scale = param * (q3 - q1);
                        if c > q3 {
                            ratio(c - q3, scale)
                        } else if c < q1 {
                            ratio(c - q1, scale)
                        } else if scale > 0.0 {
                            Some(0.0)
                        } else {
                            None
                        }
                    }
                }
            }
        };
        Ok(ScalarValue::Float64(out))
    }
}
