//! `detect_anomalies(query, time_column, value_column [, series_columns [, options]])`: a table
//! function that runs a query, splits its rows into series (by `series_columns`, a comma-separated
//! list, '' for one series), orders each by time and scores every point against the points before it.
//!
//! Options, as `'key=value, ...'`: `method` (zscore, mad, tukey, ewma, seasonal; default mad),
//! `threshold` (default 3 for zscore and ewma, 3.5 for mad and seasonal, the fence factor 1.5 for tukey),
//! `direction` (up, down, both; default both), `min_history` (points of history before a point is
//! scored; default 10; seasonal: earlier periods, default 3), `window` (history points for zscore, mad
//! and tukey, residuals for seasonal; default 60), `alpha` (ewma; default 0.3), `period` (seasonal: an
//! interval such as `1 day`; found in the data when left out), `periods` (seasonal: earlier periods
//! looked at; default 7), `min_spread` (a floor under the spread, so a flat history does not make every
//! change an anomaly; default 0), `exclude_anomalies` (anomalous points kept out of later points'
//! history, up to this many in a row; default the window, 0 keeps them in), `weight` (a column of
//! observations behind each value) and `shrink` (pseudo-observations of the expected value a weighted
//! point is mixed with before it is judged; default 20).
//!
//! One row per point: ts, the series columns (as text), value, expected, lower, upper, score,
//! is_anomaly, method.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;

use crate::invalid_argument;
use crate::sliding::SortedWindow;

/// The largest `window` and `min_history`: each point's estimate looks at up to this many earlier ones.
const MAX_WINDOW: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ZScore,
    Mad,
    Tukey,
    Ewma,
    Seasonal,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::ZScore => "zscore",
            Method::Mad => "mad",
            Method::Tukey => "tukey",
            Method::Ewma => "ewma",
            Method::Seasonal => "seasonal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
    Both,
}

#[derive(Debug, Clone)]
struct Options {
    method: Method,
    threshold: f64,
    direction: Direction,
    min_history: usize,
    window: usize,
    alpha: f64,
    /// Seasonal period in microseconds; `None`: found in the data.
    period_us: Option<i64>,
    min_spread: f64,
    /// seasonal: earlier periods looked at.
    periods: usize,
    /// Anomalous points kept out of later points' history, at most this many in a row (0: none).
    exclude_anomalies: usize,
    /// The column holding the observations behind each value, and how many pseudo-observations of
    /// the expected value a point is mixed with before it is judged.
    weight: Option<String>,
    shrink: f64,
}

/// Parses `1 day`, `15 minutes`, `2h`, `3600` (seconds) into microseconds.
fn parse_period(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.trim().parse().ok()?;
    let unit_s = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        _ => return None,
    };
    let us = n * unit_s * 1e6;
    (us >= 1.0 && us.is_finite()).then_some(us as i64)
}

fn parse_options(text: &str) -> Result<Options> {
    let mut kv: HashMap<String, String> = HashMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(invalid_argument(format!("detect_anomalies: option {part:?} is not key=value")));
        };
        kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let method = match kv.remove("method").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("mad") => Method::Mad,
        Some("zscore") => Method::ZScore,
        Some("tukey") => Method::Tukey,
        Some("ewma") => Method::Ewma,
        Some("seasonal") => Method::Seasonal,
        Some(other) => {
            return Err(invalid_argument(format!(
                "detect_anomalies: unknown method {other:?} (zscore, mad, tukey, ewma, seasonal)"
            )));
        }
    };
    let number = |kv: &mut HashMap<String, String>, key: &str, default: f64| -> Result<f64> {
        match kv.remove(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| invalid_argument(format!("detect_anomalies: {key} must be a number, not {v:?}"))),
        }
    };
    let default_threshold = match method {
        Method::ZScore | Method::Ewma => 3.0,
        Method::Mad | Method::Seasonal => 3.5,
        Method::Tukey => 1.5,
    };
    let threshold = number(&mut kv, "threshold", default_threshold)?;
    if threshold <= 0.0 {
        return Err(invalid_argument("detect_anomalies: threshold must be positive"));
    }
    let direction = match kv.remove("direction").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("both") => Direction::Both,
        Some("up") => Direction::Up,
        Some("down") => Direction::Down,
        Some(other) => {
            return Err(invalid_argument(format!(
                "detect_anomalies: direction must be up, down or both, not {other:?}"
            )));
        }
    };
    let min_history = number(&mut kv, "min_history", if method == Method::Seasonal { 3.0 } else { 10.0 })?;
    let window = number(&mut kv, "window", 60.0)?;
    if !(1.0..=MAX_WINDOW as f64).contains(&min_history) || !(2.0..=MAX_WINDOW as f64).contains(&window) {
        return Err(invalid_argument(format!(
            "detect_anomalies: min_history must be 1 to {MAX_WINDOW} and window 2 to {MAX_WINDOW}"
        )));
    }
    let alpha = number(&mut kv, "alpha", 0.3)?;
    if !(alpha > 0.0 && alpha <= 1.0) {
        return Err(invalid_argument(format!("detect_anomalies: alpha must be in (0, 1], not {alpha}")));
    }
    let period_us = match kv.remove("period") {
        None => None,
        Some(p) => Some(parse_period(&p).ok_or_else(|| {
            invalid_argument(format!(
                "detect_anomalies: period {p:?} is not a duration such as '1 day' or '15 minutes'"
            ))
        })?),
    };
    let min_spread = number(&mut kv, "min_spread", 0.0)?;
    if min_spread < 0.0 {
        return Err(invalid_argument("detect_anomalies: min_spread must not be negative"));
    }
    let periods = number(&mut kv, "periods", 7.0)?;
    if !(1.0..=1000.0).contains(&periods) {
        return Err(invalid_argument("detect_anomalies: periods must be 1 to 1000"));
    }
    if method == Method::Seasonal && min_history > periods {
        return Err(invalid_argument(format!(
            "detect_anomalies: min_history ({min_history}) cannot exceed periods ({periods}) for the seasonal method"
        )));
    }
    let exclude_anomalies = number(&mut kv, "exclude_anomalies", window)?;
    if !(0.0..=MAX_WINDOW as f64).contains(&exclude_anomalies) {
        return Err(invalid_argument(format!("detect_anomalies: exclude_anomalies must be 0 to {MAX_WINDOW}")));
    }
    let weight = kv.remove("weight");
    let shrink = number(&mut kv, "shrink", 20.0)?;
    if shrink < 0.0 {
        return Err(invalid_argument("detect_anomalies: shrink must not be negative"));
    }
    if let Some(k) = kv.keys().next() {
        return Err(invalid_argument(format!("detect_anomalies: unknown option {k:?}")));
    }
    Ok(Options {
        method,
        threshold,
        direction,
        min_history: min_history as usize,
        window: window as usize,
        alpha,
        period_us,
        min_spread,
        periods: periods as usize,
        exclude_anomalies: exclude_anomalies as usize,
        weight,
        shrink,
    })
}

#[derive(Debug)]
pub struct DetectAnomalies;

fn string_arg(e: &Expr, what: &str) -> Result<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Ok(s.clone()),
        _ => Err(invalid_argument(format!("detect_anomalies: {what} must be a text literal"))),
    }
}

impl TableFunctionImpl for DetectAnomalies {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(3..=5).contains(&exprs.len()) {
            return plan_err!(
                "detect_anomalies(query, time_column, value_column [, series_columns [, options]]) takes 3 to 5 arguments"
            );
        }
        let query = string_arg(&exprs[0], "the query")?;
        let time = string_arg(&exprs[1], "the time column")?;
        let value = string_arg(&exprs[2], "the value column")?;
        let series = match exprs.get(3) {
            Some(e) => string_arg(e, "the series columns")?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            None => Vec::new(),
        };
        let options = parse_options(&match exprs.get(4) {
            Some(e) => string_arg(e, "the options")?,
            None => String::new(),
        })?;
        let mut fields = vec![Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false)];
        fields.extend(series.iter().map(|s: &String| Field::new(s, DataType::Utf8, true)));
        for f in ["value", "expected", "lower", "upper", "score"] {
            fields.push(Field::new(f, DataType::Float64, true));
        }
        fields.push(Field::new("is_anomaly", DataType::Boolean, false));
        fields.push(Field::new("method", DataType::Utf8, false));
        let schema = Arc::new(Schema::new(fields));
        let detection = Arc::new(Detection { query, time, value, series, options, schema: schema.clone() });
        // The query and the detection run when the statement executes, under its timeout and cancel;
        // the detection on a blocking thread, stopping early once nobody waits for it.
        let work: crate::lazy::Work = Arc::new(move |state| {
            let detection = detection.clone();
            Box::pin(async move {
                let input = crate::run_read_query(&state, "detect_anomalies", &detection.query).await?;
                let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
                let flag = stop.0.clone();
                crate::lazy::blocking(move || detection.detect(&input, &flag)).await
            })
        });
        Ok(Arc::new(crate::lazy::LazyTable { name: "detect_anomalies", schema, work }))
    }
}

/// Sets its flag when dropped: the statement that waited for the work is gone.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn stopped() -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Execution("detect_anomalies: the statement ended".into())
}

#[derive(Debug)]
struct Detection {
    query: String,
    time: String,
    value: String,
    series: Vec<String>,
    options: Options,
    schema: SchemaRef,
}

struct Point {
    ts: i64,
    value: Option<f64>,
    /// Observations behind the value (the `weight` column), when given.
    weight: Option<f64>,
}

/// The expected value and spread from the history, or `None` without enough history.
struct Estimate {
    expected: f64,
    lower: f64,
    upper: f64,
    score: f64,
    anomalous: bool,
}

impl Detection {
    fn column(&self, input: &RecordBatch, name: &str) -> Result<ArrayRef> {
        match input.schema().index_of(name) {
            Ok(i) => Ok(input.column(i).clone()),
            Err(_) => Err(invalid_argument(format!("detect_anomalies: the query has no column {name:?}"))),
        }
    }

    fn detect(&self, input: &RecordBatch, stop: &AtomicBool) -> Result<RecordBatch> {
        let t = self.column(input, &self.time)?;
        if !matches!(t.data_type(), DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) {
            return Err(invalid_argument(format!("detect_anomalies: {} is not a timestamp", self.time)));
        }
        let ts = cast(&cast(&t, &DataType::Timestamp(TimeUnit::Microsecond, None))?, &DataType::Int64)?;
        let ts = ts.as_primitive::<Int64Type>();
        let v = self.column(input, &self.value)?;
        if !(v.data_type().is_numeric() || v.data_type().is_null()) {
            return Err(invalid_argument(format!(
                "detect_anomalies: {} is not numeric ({})",
                self.value,
                v.data_type()
            )));
        }
        let v = cast(&v, &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        let w = match &self.options.weight {
            Some(name) => {
                let w = self.column(input, name)?;
                if !(w.data_type().is_numeric() || w.data_type().is_null()) {
                    return Err(invalid_argument(format!(
                        "detect_anomalies: the weight {name} is not numeric ({})",
                        w.data_type()
                    )));
                }
                Some(cast(&w, &DataType::Float64)?)
            }
            None => None,
        };
        let w = w.as_ref().map(|w| w.as_primitive::<Float64Type>());
        let keys: Vec<ArrayRef> =
            self.series.iter().map(|s| Ok(cast(&self.column(input, s)?, &DataType::Utf8)?)).collect::<Result<_>>()?;
        let key_of = |i: usize| -> Vec<Option<String>> {
            keys.iter()
                .map(|k| {
                    let k = k.as_string::<i32>();
                    k.is_valid(i).then(|| k.value(i).to_string())
                })
                .collect()
        };
        // Series in order of first appearance; points by time.
        let mut order: Vec<Vec<Option<String>>> = Vec::new();
        let mut series: HashMap<Vec<Option<String>>, Vec<Point>> = HashMap::new();
        for i in 0..input.num_rows() {
            if ts.is_null(i) {
                continue;
            }
            let k = key_of(i);
            let e = series.entry(k.clone()).or_insert_with(|| {
                order.push(k);
                Vec::new()
            });
            let weight = w.and_then(|w| w.is_valid(i).then(|| w.value(i)));
            e.push(Point { ts: ts.value(i), value: v.is_valid(i).then(|| v.value(i)), weight });
        }
        order.sort();
        for points in series.values_mut() {
            points.sort_by_key(|p| p.ts);
        }
        let period = match self.options.method {
            Method::Seasonal => Some(match self.options.period_us {
                Some(p) => p,
                None => find_period(series.values().map(Vec::as_slice))?,
            }),
            _ => None,
        };

        let mut out_ts = Vec::new();
        let mut out_keys: Vec<Vec<Option<String>>> = vec![Vec::new(); self.series.len()];
        let (mut value, mut expected, mut lower, mut upper, mut score, mut flag) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in &order {
            let points = &series[k];
            let estimates = self.estimate(points, period, stop);
            if stop.load(Ordering::Relaxed) {
                return Err(stopped());
            }
            for (p, e) in points.iter().zip(estimates) {
                out_ts.push(p.ts);
                for (j, key) in k.iter().enumerate() {
                    out_keys[j].push(key.clone());
                }
                value.push(p.value);
                let anomalous = e.as_ref().is_some_and(|e| e.anomalous);
                expected.push(e.as_ref().map(|e| e.expected));
                lower.push(e.as_ref().map(|e| e.lower));
                upper.push(e.as_ref().map(|e| e.upper));
                score.push(e.as_ref().filter(|_| p.value.is_some()).map(|e| e.score));
                flag.push(anomalous);
            }
        }
        let n = out_ts.len();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(TimestampMicrosecondArray::from(out_ts))];
        for keys in out_keys {
            columns.push(Arc::new(StringArray::from(keys)));
        }
        for c in [value, expected, lower, upper, score] {
            columns.push(Arc::new(Float64Array::from(c)));
        }
        columns.push(Arc::new(BooleanArray::from(flag)));
        columns.push(Arc::new(StringArray::from(vec![self.options.method.name(); n])));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// An estimate for every point of one series, from the points before it that were not anomalies
    /// (up to `exclude_anomalies` of them in a row: a longer run is a new level, and joins the history).
    fn estimate(&self, points: &[Point], period: Option<i64>, stop: &AtomicBool) -> Vec<Option<Estimate>> {
        let o = &self.options;
        let mut history = History::new(o, period);
        let mut run: Vec<(i64, f64)> = Vec::new();
        let mut out = Vec::with_capacity(points.len());
        for (i, p) in points.iter().enumerate() {
            if i % 1024 == 0 && stop.load(Ordering::Relaxed) {
                break;
            }
            let estimate = history.band(o, p.ts).map(|band| band.judge(o, p.value, p.weight));
            if let Some(x) = p.value {
                if estimate.as_ref().is_some_and(|e| e.anomalous) && o.exclude_anomalies > 0 {
                    run.push((p.ts, x));
                    if run.len() > o.exclude_anomalies {
                        for (ts, x) in run.drain(..) {
                            history.admit(o, ts, x);
                        }
                    }
                } else {
                    run.clear();
                    history.admit(o, p.ts, x);
                }
            }
            out.push(estimate);
        }
        out
    }
}

/// The band a point is judged against.
struct Band {
    expected: f64,
    lower: f64,
    upper: f64,
    /// The unit of the score.
    spread: f64,
}

impl Band {
    /// Around `expected`, `threshold` spreads (floored by `min_spread`) each way.
    fn around(o: &Options, expected: f64, spread: f64) -> Band {
        let spread = spread.max(o.min_spread);
        Band { expected, lower: expected - o.threshold * spread, upper: expected + o.threshold * spread, spread }
    }

    /// The point's score and verdict. A point backed by `weight` observations is judged as
    /// (weight × value + shrink × expected) / (weight + shrink): a handful of observations moves it little.
    fn judge(self, o: &Options, value: Option<f64>, weight: Option<f64>) -> Estimate {
        let judged = value.map(|x| match weight {
            Some(w) if w >= 0.0 && o.shrink > 0.0 => (w * x + o.shrink * self.expected) / (w + o.shrink),
            _ => x,
        });
        let score = match judged {
            Some(x) if self.spread > 0.0 => (x - self.expected) / self.spread,
            Some(x) if x == self.expected => 0.0,
            Some(x) => (x - self.expected).signum() * f64::INFINITY,
            None => 0.0,
        };
        let anomalous = judged.is_some_and(|x| match o.direction {
            Direction::Up => x > self.upper,
            Direction::Down => x < self.lower,
            Direction::Both => x > self.upper || x < self.lower,
        });
        Estimate { expected: self.expected, lower: self.lower, upper: self.upper, score, anomalous }
    }
}

/// The admitted earlier points of a series, as each method keeps them.
enum History {
    /// zscore, mad, tukey: the last `window` values, in order and sorted.
    Window { values: VecDeque<f64>, sorted: SortedWindow },
    /// ewma: the weighted mean and variance of every admitted value.
    Ewma { n: usize, mean: f64, var: f64 },
    /// seasonal: admitted values by time, looked up one period apart, and the last `window` residuals
    /// (value − the median of the same phase in earlier periods).
    Seasonal { period: i64, by_ts: HashMap<i64, f64>, residuals: VecDeque<f64>, sorted: SortedWindow },
}

/// Residuals the seasonal method needs before it scores a point.
const MIN_RESIDUALS: usize = 10;

impl History {
    fn new(o: &Options, period: Option<i64>) -> History {
        match o.method {
            Method::Ewma => History::Ewma { n: 0, mean: 0.0, var: 0.0 },
            Method::Seasonal => History::Seasonal {
                period: period.unwrap_or(1).max(1),
                by_ts: HashMap::new(),
                residuals: VecDeque::new(),
                sorted: SortedWindow::default(),
            },
            Method::ZScore | Method::Mad | Method::Tukey => {
                History::Window { values: VecDeque::new(), sorted: SortedWindow::default() }
            }
        }
    }

    fn admit(&mut self, o: &Options, ts: i64, x: f64) {
        let slide = |values: &mut VecDeque<f64>, sorted: &mut SortedWindow, x: f64| {
            values.push_back(x);
            sorted.insert(x);
            if values.len() > o.window
                && let Some(old) = values.pop_front()
            {
                sorted.remove(old);
            }
        };
        match self {
            History::Window { values, sorted } => slide(values, sorted, x),
            History::Ewma { n, mean, var } => {
                if *n == 0 {
                    *mean = x;
                } else {
                    let diff = x - *mean;
                    let incr = o.alpha * diff;
                    *mean += incr;
                    *var = (1.0 - o.alpha) * (*var + diff * incr);
                }
                *n += 1;
            }
            History::Seasonal { period, by_ts, residuals, sorted } => {
                if let Some(m) = same_phase_median(o, *period, by_ts, ts) {
                    slide(residuals, sorted, x - m);
                }
                by_ts.insert(ts, x);
            }
        }
    }

    /// The band for a point at `ts`; `None` without `min_history` of history.
    fn band(&self, o: &Options, ts: i64) -> Option<Band> {
        match self {
            History::Window { values, sorted } => {
                if values.len() < o.min_history {
                    return None;
                }
                Some(match o.method {
                    Method::ZScore => {
                        let n = values.len() as f64;
                        let mean = values.iter().sum::<f64>() / n;
                        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0).max(1.0);
                        Band::around(o, mean, var.sqrt())
                    }
                    Method::Tukey => {
                        let (q1, q3) = (sorted.quantile(0.25), sorted.quantile(0.75));
                        let iqr = (q3 - q1).max(o.min_spread);
                        Band {
                            expected: sorted.median(),
                            lower: q1 - o.threshold * iqr,
                            upper: q3 + o.threshold * iqr,
                            spread: iqr,
                        }
                    }
                    _ => {
                        let m = sorted.median();
                        Band::around(o, m, 1.4826 * sorted.median_abs_deviation(m))
                    }
                })
            }
            History::Ewma { n, mean, var } => (*n >= o.min_history).then(|| Band::around(o, *mean, var.sqrt())),
            History::Seasonal { period, by_ts, residuals: _, sorted } => {
                let m = same_phase_median(o, *period, by_ts, ts)?;
                if sorted.len() < MIN_RESIDUALS {
                    return None;
                }
                let r = sorted.median();
                Some(Band::around(o, m + r, 1.4826 * sorted.median_abs_deviation(r)))
            }
        }
    }
}

/// The median of the admitted values at the phase of `ts` in the last `periods` periods, when at least
/// `min_history` of them have one.
fn same_phase_median(o: &Options, period: i64, by_ts: &HashMap<i64, f64>, ts: i64) -> Option<f64> {
    let mut same_phase = SortedWindow::default();
    for k in 1..=o.periods as i64 {
        if let Some(&v) = by_ts.get(&(ts - k * period)) {
            same_phase.insert(v);
        }
    }
    (same_phase.len() >= o.min_history).then(|| same_phase.median())
}

/// The seasonal period of the series: the candidate (1 hour, 1 day, 1 week) with the highest
/// autocorrelation between points one period apart, when the data covers it twice and the correlation
/// is above 0.2.
fn find_period<'a>(series: impl Iterator<Item = &'a [Point]> + Clone) -> Result<i64> {
    let mut best: Option<(f64, i64)> = None;
    for period in [3_600_000_000i64, 86_400_000_000, 604_800_000_000] {
        let mut pairs: Vec<(f64, f64)> = Vec::new();
        for points in series.clone() {
            let (Some(first), Some(last)) = (points.first(), points.last()) else { continue };
            if last.ts - first.ts < 2 * period {
                continue;
            }
            let by_ts: HashMap<i64, f64> = points.iter().filter_map(|p| p.value.map(|v| (p.ts, v))).collect();
            pairs.extend(points.iter().filter_map(|p| Some((p.value?, *by_ts.get(&(p.ts - period))?))));
        }
        if pairs.len() < 10 {
            continue;
        }
        let n = pairs.len() as f64;
        let (ma, mb) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
        let cov: f64 = pairs.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum();
        let (va, vb): (f64, f64) =
            (pairs.iter().map(|p| (p.0 - ma).powi(2)).sum(), pairs.iter().map(|p| (p.1 - mb).powi(2)).sum());
        if va <= 0.0 || vb <= 0.0 {
            continue;
        }
        let r = cov / (va * vb).sqrt();
        if r > 0.2 && best.is_none_or(|(b, _)| r > b) {
            best = Some((r, period));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        invalid_argument(
            "detect_anomalies: no seasonal period found in the data (tried 1 hour, 1 day, 1 week); give one with period=...",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_options_parse() {
        assert_eq!(parse_period("1 day"), Some(86_400_000_000));
        assert_eq!(parse_period("15 minutes"), Some(900_000_000));
        assert_eq!(parse_period("2h"), Some(7_200_000_000));
        assert_eq!(parse_period("fortnight"), None);
        let o = parse_options("method=tukey, direction=up, threshold=2").expect("options");
        assert_eq!((o.method, o.direction, o.threshold), (Method::Tukey, Direction::Up, 2.0));
        assert!(parse_options("method=magic").is_err());
        assert!(parse_options("alpha=0").is_err());
        assert!(parse_options("colour=blue").is_err());
    }
}
