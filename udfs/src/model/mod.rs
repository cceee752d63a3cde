//! Versioned models — logistic regression or gradient-boosted trees — their features and encoding, the
//! registry that keeps them as catalog objects, the vectorised prediction kernels, and the metrics that
//! score them.
//!
//! A model is trained from a query (see [`sql`]): one column is the label, one the time (for the
//! train / evaluation split), every other column a feature, in the query's order. Numbers and booleans
//! are numeric features (NULL counts as the training mean); text columns are categorical, one-hot
//! encoded from the training rows: the most frequent value is the baseline (no column of its own), the
//! next `max_categories - 1` values get a column each, and any other value (unseen in training, rare,
//! or NULL) scores as the baseline. Trees take the same features: a number as it is (NULL is missing,
//! and each split learns where missing values go), a category by its level (the baseline and the
//! kept levels; any other value is missing).

pub mod metrics;
pub mod sql;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{HashMap, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::ColumnarValue;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::SqlError;
use crate::gbdt;
use crate::logistic::{ClassWeight, sigmoid};
use crate::sqlstate::SqlState;

pub use metrics::Metrics;

pub(crate) fn sql_error(code: SqlState, message: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(SqlError { code, message: message.into() }))
}

fn undefined(message: impl Into<String>) -> DataFusionError {
    sql_error(SqlState::UndefinedObject, message)
}

/// Where the registry keeps its state: one JSON document, written durably. The engine stores it as a
/// catalog object, so models survive restarts and travel with the data directory.
pub trait ModelStore: Send + Sync + std::fmt::Debug {
    fn load(&self) -> Option<serde_json::Value>;
    /// Replaces the document; durable when it returns `Ok`.
    fn save(&self, value: serde_json::Value) -> std::result::Result<(), String>;
}

/// A store that keeps the registry in memory only: models last as long as the process.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Option<serde_json::Value>>);

impl ModelStore for MemoryStore {
    fn load(&self) -> Option<serde_json::Value> {
        self.0.lock().clone()
    }

    fn save(&self, value: serde_json::Value) -> std::result::Result<(), String> {
        *self.0.lock() = Some(value);
        Ok(())
    }
}

/// One feature of a model, in the order `predict_*` takes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Feature {
    /// A number or boolean; NULL is replaced by `fill`, the training mean.
    Numeric { name: String, fill: f64 },
    /// Text, one-hot encoded: one design column per level; the baseline and any other value score 0.
    Categorical { name: String, baseline: Option<String>, levels: Vec<String> },
}

impl Feature {
    pub fn name(&self) -> &str {
        match self {
            Feature::Numeric { name, .. } | Feature::Categorical { name, .. } => name,
        }
    }

    /// How many design columns the feature takes.
    pub fn width(&self) -> usize {
        match self {
            Feature::Numeric { .. } => 1,
            Feature::Categorical { levels, .. } => levels.len(),
        }
    }

    /// `name` for a number, `name (text)` for a category: how `models.features` lists it.
    pub fn describe(&self) -> String {
        match self {
            Feature::Numeric { name, .. } => name.clone(),
            Feature::Categorical { name, .. } => format!("{name} (text)"),
        }
    }
}

/// Training options, as given (`'l2=1, class_weight=balanced, ...'`) and as used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainOptions {
    /// `logistic` or `boosted_trees`.
    pub model_type: String,
    /// Logistic: the penalty on standardised coefficients; trees: on leaf values.
    pub l2: f64,
    /// `none`, `balanced` or `<negative>:<positive>`.
    pub class_weight: String,
    pub max_iter: usize,
    pub tol: f64,
    pub eval_fraction: f64,
    pub label: String,
    pub time: String,
    pub max_categories: usize,
    /// `auto` (deploy when no version is deployed), `true` or `false`.
    pub deploy: String,
    /// Trees: the shrinkage of every leaf value.
    pub learning_rate: f64,
    /// Trees: leaves per tree at most.
    pub max_leaf_nodes: usize,
    /// Trees: training rows per leaf at least.
    pub min_samples_leaf: usize,
    /// Trees: bins for a numeric feature's values.
    pub max_bins: usize,
    /// A boolean column marking the rows where the question is real (for retries: the retryable
    /// failures), reported apart, and not a feature; used when the query has it.
    pub focus: String,
    /// A column that is itself a naive score (for retries: the client's past retry share), reported
    /// next to the model; used when the query has it.
    pub baseline: String,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            model_type: "logistic".into(),
            l2: 1.0,
            class_weight: "none".into(),
            max_iter: 100,
            tol: 1e-8,
            eval_fraction: 0.2,
            label: "will_retry".into(),
            time: "ts".into(),
            max_categories: 50,
            deploy: "auto".into(),
            learning_rate: 0.1,
            max_leaf_nodes: 31,
            min_samples_leaf: 20,
            max_bins: 255,
            focus: "retryable".into(),
            baseline: "client_retry_after_failure".into(),
        }
    }
}

impl TrainOptions {
    /// Parses `'key=value, ...'`; unknown keys and bad values are errors (22023).
    pub fn parse(text: &str) -> Result<TrainOptions> {
        let mut o = TrainOptions::default();
        let mut l2_given = false;
        let bad = |m: String| sql_error(SqlState::InvalidParameter, m);
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(bad(format!("train_retry_model: option {item:?} is not key=value")));
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            let number = |what: &str| -> Result<f64> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| bad(format!("train_retry_model: {what} must be a number, not {value:?}")))
            };
            let whole = |what: &str, max: usize| -> Result<usize> {
                value.parse::<usize>().ok().filter(|&v| (1..=max).contains(&v)).ok_or_else(|| {
                    bad(format!("train_retry_model: {what} must be a whole number from 1 to {max}, not {value:?}"))
                })
            };
            match key.as_str() {
                "l2" => {
                    o.l2 = number("l2")?;
                    l2_given = true;
                }
                "model_type" => o.model_type = value.to_ascii_lowercase(),
                "learning_rate" => o.learning_rate = number("learning_rate")?,
                "max_leaf_nodes" => o.max_leaf_nodes = whole("max_leaf_nodes", 65_536)?,
                "min_samples_leaf" => o.min_samples_leaf = whole("min_samples_leaf", 1 << 30)?,
                "max_bins" => o.max_bins = whole("max_bins", 255)?,
                "focus" => o.focus = value.to_string(),
                "baseline" => o.baseline = value.to_string(),
                "max_iter" => o.max_iter = whole("max_iter", 10_000)?,
                "tol" => o.tol = number("tol")?,
                "eval_fraction" => o.eval_fraction = number("eval_fraction")?,
                "max_categories" => o.max_categories = whole("max_categories", 10_000)?,
                "class_weight" => o.class_weight = value.to_ascii_lowercase(),
                "label" => o.label = value.to_string(),
                "time" => o.time = value.to_string(),
                "deploy" => o.deploy = value.to_ascii_lowercase(),
                _ => {
                    return Err(bad(format!(
                        "train_retry_model: unknown option {key:?} (model_type, l2, class_weight, max_iter, \
                         tol, eval_fraction, label, time, max_categories, deploy, learning_rate, \
                         max_leaf_nodes, min_samples_leaf, max_bins, focus, baseline)"
                    )));
                }
            }
        }
        match o.model_type.as_str() {
            "logistic" => {}
            // scikit-learn's HistGradientBoostingClassifier: no penalty unless asked.
            "boosted_trees" => o.l2 = if l2_given { o.l2 } else { 0.0 },
            other => {
                return Err(bad(format!(
                    "train_retry_model: model_type must be logistic or boosted_trees, not {other:?}"
                )));
            }
        }
        if o.learning_rate.is_nan() || o.learning_rate <= 0.0 {
            return Err(bad(format!("train_retry_model: learning_rate must be more than 0, not {}", o.learning_rate)));
        }
        if o.max_leaf_nodes < 2 || o.max_bins < 2 {
            return Err(bad("train_retry_model: max_leaf_nodes and max_bins must be 2 or more".to_string()));
        }
        if o.l2 < 0.0 {
            return Err(bad(format!("train_retry_model: l2 must be 0 or more, not {}", o.l2)));
        }
        if !(0.0..1.0).contains(&o.eval_fraction) {
            return Err(bad(format!("train_retry_model: eval_fraction must be in [0, 1), not {}", o.eval_fraction)));
        }
        if o.tol <= 0.0 {
            return Err(bad(format!("train_retry_model: tol must be more than 0, not {}", o.tol)));
        }
        if !matches!(o.deploy.as_str(), "auto" | "true" | "false") {
            return Err(bad(format!("train_retry_model: deploy must be auto, true or false, not {:?}", o.deploy)));
        }
        o.class_weight()?;
        Ok(o)
    }

    pub fn trees(&self) -> bool {
        self.model_type == "boosted_trees"
    }

    pub fn class_weight(&self) -> Result<ClassWeight> {
        match self.class_weight.as_str() {
            "none" => Ok(ClassWeight::None),
            "balanced" => Ok(ClassWeight::Balanced),
            other => {
                let parsed = other
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?)))
                    .filter(|(a, b)| *a > 0.0 && *b > 0.0 && a.is_finite() && b.is_finite());
                match parsed {
                    Some((a, b)) => Ok(ClassWeight::Custom(a, b)),
                    None => Err(sql_error(
                        SqlState::InvalidParameter,
                        format!(
                            "train_retry_model: class_weight must be none, balanced or <negative>:<positive> \
                             (positive weights), not {other:?}"
                        ),
                    )),
                }
            }
        }
    }
}

/// The naive scorers a model is compared with, learned from its training rows.
///
/// - the rule: a focus row scores the share of positive training rows among the focus rows, any other
///   row the share among the others (for retries: "retryable failures are retried at this rate");
/// - the baseline column: its value, or the rule's score where it is NULL (without a focus column, the
///   training rows' positive share).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// The focus column, when the training query had it.
    pub focus: Option<String>,
    pub focus_rate: f64,
    pub other_rate: f64,
    /// The baseline column, when the training query had it.
    pub baseline: Option<String>,
}

/// Metrics of one scorer on one subset of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// `all`, or the focus column's name.
    pub subset: String,
    /// `model`, `rule`, or the baseline column's name.
    pub scorer: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

impl Reference {
    /// The comparisons for predictions `p` of labels `y`, with the focus flags and the baseline
    /// column's values of the same rows where the query had them. The model on every row comes first.
    pub fn compare(
        &self,
        p: &[f64],
        y: &[bool],
        focus: Option<&[bool]>,
        baseline: Option<&[Option<f64>]>,
        threshold: f64,
    ) -> Vec<Comparison> {
        let line = |subset: &str, scorer: &str, p: &[f64], y: &[bool]| Comparison {
            subset: subset.to_string(),
            scorer: scorer.to_string(),
            metrics: metrics::evaluate(p, y, threshold),
        };
        let mut out = vec![line("all", "model", p, y)];
        let rule: Option<Vec<f64>> =
            focus.map(|f| f.iter().map(|&f| if f { self.focus_rate } else { self.other_rate }).collect());
        let base: Option<Vec<f64>> = baseline.map(|b| {
            b.iter()
                .enumerate()
                .map(|(i, v)| v.unwrap_or_else(|| rule.as_ref().map_or(self.focus_rate, |r| r[i])).clamp(0.0, 1.0))
                .collect()
        });
        let (focus_name, base_name) =
            (self.focus.as_deref().unwrap_or("focus"), self.baseline.as_deref().unwrap_or("baseline"));
        if let Some(rule) = &rule {
            out.push(line("all", "rule", rule, y));
        }
        if let Some(base) = &base {
            out.push(line("all", base_name, base, y));
        }
        if let Some(f) = focus {
            let pick = |v: &[f64]| -> Vec<f64> { v.iter().zip(f).filter(|(_, f)| **f).map(|(v, _)| *v).collect() };
            let yf: Vec<bool> = y.iter().zip(f).filter(|(_, f)| **f).map(|(y, _)| *y).collect();
            if !yf.is_empty() {
                out.push(line(focus_name, "model", &pick(p), &yf));
                if let Some(base) = &base {
                    out.push(line(focus_name, base_name, &pick(base), &yf));
                }
            }
        }
        out
    }
}

/// What training fitted: logistic coefficients (on standardised design columns) or trees.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Fit {
    Trees { boosted_trees: gbdt::Model },
    Logistic(crate::logistic::Model),
}

impl Fit {
    /// Whether the solver converged (trees: always).
    pub fn converged(&self) -> bool {
        match self {
            Fit::Trees { .. } => true,
            Fit::Logistic(m) => m.converged,
        }
    }

    /// Newton iterations, or trees.
    pub fn iterations(&self) -> usize {
        match self {
            Fit::Trees { boosted_trees } => boosted_trees.trees.len(),
            Fit::Logistic(m) => m.iterations,
        }
    }

    pub fn logistic(&self) -> Option<&crate::logistic::Model> {
        match self {
            Fit::Trees { .. } => None,
            Fit::Logistic(m) => Some(m),
        }
    }
}

/// One trained version of a model.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: u32,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    pub query: String,
    pub options: TrainOptions,
    /// Rows with a time at or after this (microseconds) were held out for evaluation.
    pub split_at: Option<i64>,
    pub features: Vec<Feature>,
    /// The fitted coefficients (with the standardisation and whether the solver converged), or trees.
    #[serde(flatten)]
    pub fit: Fit,
    pub duration_ms: f64,
    pub rows_train: u64,
    pub rows_eval: u64,
    /// On the held-out rows; `None` without any.
    pub metrics: Option<Metrics>,
    /// The held-out rows scored again by subset and scorer: the model on the focus rows, and the
    /// baselines (see [`Reference`]); the first is the model on every row (`metrics`).
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
    /// What the baselines score with, from the training rows.
    #[serde(default)]
    pub reference: Reference,
    #[serde(skip)]
    raw: OnceLock<RawWeights>,
}

/// The model folded onto the original feature scale: `z = intercept + sum(weight * x)`.
#[derive(Debug)]
struct RawWeights {
    intercept: f64,
    /// Per feature: a numeric weight, or a category's weight by value.
    per_feature: Vec<RawFeature>,
}

#[derive(Debug)]
enum RawFeature {
    Numeric { weight: f64, fill: f64 },
    Categorical { weights: HashMap<String, f64> },
}

impl ModelVersion {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        created_at: i64,
        query: String,
        options: TrainOptions,
        split_at: Option<i64>,
        features: Vec<Feature>,
        fitted: Fit,
        duration_ms: f64,
        rows_train: u64,
        rows_eval: u64,
    ) -> ModelVersion {
        ModelVersion {
            name,
            version: 0,
            created_at,
            query,
            options,
            split_at,
            features,
            fit: fitted,
            duration_ms,
            rows_train,
            rows_eval,
            metrics: None,
            comparisons: Vec::new(),
            reference: Reference::default(),
            raw: OnceLock::new(),
        }
    }

    /// `name (v3)`, for messages.
    pub fn label(&self) -> String {
        format!("model \"{}\" version {}", self.name, self.version)
    }

    pub fn feature_list(&self) -> String {
        self.features.iter().map(Feature::describe).collect::<Vec<_>>().join(", ")
    }

    /// Per design column of a logistic model: (feature index, level or `None`, standardised
    /// coefficient, raw weight). Empty for trees.
    pub fn design_columns(&self) -> Vec<(usize, Option<&str>, f64, f64)> {
        let Some(fit) = self.fit.logistic() else { return Vec::new() };
        let mut out = Vec::with_capacity(fit.coef.len());
        let mut j = 0;
        for (k, f) in self.features.iter().enumerate() {
            match f {
                Feature::Numeric { .. } => {
                    out.push((k, None, fit.coef[j], fit.coef[j] / fit.scales[j]));
                    j += 1;
                }
                Feature::Categorical { levels, .. } => {
                    for level in levels {
                        out.push((k, Some(level.as_str()), fit.coef[j], fit.coef[j] / fit.scales[j]));
                        j += 1;
                    }
                }
            }
        }
        out
    }

    /// The log-odds [`Self::contributions`] start from: for logistic regression the intercept on the
    /// original scale (every numeric feature 0, every category the baseline); for trees the log-odds
    /// before any split.
    pub fn raw_intercept(&self) -> f64 {
        match &self.fit {
            Fit::Trees { boosted_trees } => boosted_trees.baseline(),
            Fit::Logistic(_) => self.raw().intercept,
        }
    }

    /// The logistic model on the original scale (empty for trees).
    fn raw(&self) -> &RawWeights {
        self.raw.get_or_init(|| {
            let Some(fit) = self.fit.logistic() else {
                return RawWeights { intercept: 0.0, per_feature: Vec::new() };
            };
            let mut intercept = fit.intercept;
            let mut per_feature = Vec::with_capacity(self.features.len());
            let mut j = 0;
            for f in &self.features {
                match f {
                    Feature::Numeric { fill, .. } => {
                        let weight = fit.coef[j] / fit.scales[j];
                        intercept -= weight * fit.means[j];
                        per_feature.push(RawFeature::Numeric { weight, fill: *fill });
                        j += 1;
                    }
                    Feature::Categorical { levels, .. } => {
                        let mut weights = HashMap::with_capacity(levels.len());
                        for level in levels {
                            let weight = fit.coef[j] / fit.scales[j];
                            intercept -= weight * fit.means[j];
                            weights.insert(level.clone(), weight);
                            j += 1;
                        }
                        per_feature.push(RawFeature::Categorical { weights });
                    }
                }
            }
            RawWeights { intercept, per_feature }
        })
    }

    /// Checks that `types` (the arguments' types, by position) fit the features.
    pub fn check_arguments(&self, function: &str, types: &[DataType]) -> Result<()> {
        if types.len() != self.features.len() {
            return Err(sql_error(
                SqlState::InvalidParameter,
                format!(
                    "{function}: {} takes {} features ({}), not {}",
                    self.label(),
                    self.features.len(),
                    self.feature_list(),
                    types.len()
                ),
            ));
        }
        for (i, (f, t)) in self.features.iter().zip(types).enumerate() {
            let ok = match f {
                Feature::Numeric { .. } => t.is_numeric() || matches!(t, DataType::Boolean | DataType::Null),
                Feature::Categorical { .. } => is_text(t) || t.is_null(),
            };
            if !ok {
                let want = match f {
                    Feature::Numeric { .. } => "a number or boolean",
                    Feature::Categorical { .. } => "text",
                };
                return Err(sql_error(
                    SqlState::InvalidParameter,
                    format!(
                        "{function}: argument {} is {t}, but feature \"{}\" of {} is {want}",
                        i + 1,
                        f.name(),
                        self.label()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The probability of the positive class for every row: `args` are the features by position.
    /// One pass per feature over the batch; the only allocations are per batch, never per row.
    pub fn predict(&self, function: &str, args: &[ColumnarValue], rows: usize) -> Result<Float64Array> {
        let types: Vec<DataType> = args.iter().map(ColumnarValue::data_type).collect();
        self.check_arguments(function, &types)?;
        if let Fit::Trees { boosted_trees } = &self.fit {
            let columns = tree_columns(&self.features, args, rows)?;
            let z = boosted_trees.log_odds(&columns, rows);
            return Ok(Float64Array::from_iter_values(z.into_iter().map(sigmoid)));
        }
        let raw = self.raw();
        let mut base = raw.intercept;
        let mut z = vec![0.0f64; rows];
        for (f, arg) in raw.per_feature.iter().zip(args) {
            match (f, arg) {
                (RawFeature::Numeric { weight, fill }, ColumnarValue::Scalar(s)) => {
                    base += weight * scalar_number(s)?.unwrap_or(*fill);
                }
                (RawFeature::Numeric { weight, fill }, ColumnarValue::Array(a)) => {
                    let a = if a.data_type() == &DataType::Float64 { a.clone() } else { cast(a, &DataType::Float64)? };
                    let a = a.as_primitive::<Float64Type>();
                    let values = a.values();
                    match a.nulls().filter(|n| n.null_count() > 0) {
                        None => z.iter_mut().zip(values.iter()).for_each(|(z, v)| *z += weight * v),
                        Some(nulls) => z
                            .iter_mut()
                            .zip(values.iter())
                            .enumerate()
                            .for_each(|(i, (z, v))| *z += weight * if nulls.is_valid(i) { *v } else { *fill }),
                    }
                }
                (RawFeature::Categorical { weights }, ColumnarValue::Scalar(s)) => {
                    if let Some(text) = scalar_text(s) {
                        base += weights.get(text.as_str()).copied().unwrap_or(0.0);
                    }
                }
                (RawFeature::Categorical { weights }, ColumnarValue::Array(a)) => {
                    if !weights.is_empty() {
                        add_categorical(&mut z, weights, a)?;
                    }
                }
            }
        }
        Ok(Float64Array::from_iter_values(z.into_iter().map(|z| sigmoid(z + base))))
    }

    /// Each feature's contribution to every row's log-odds (by feature, then row), relative to the baseline row (numeric
    /// features at 0, categories at the baseline): the contributions plus [`Self::raw_intercept`] are
    /// the log-odds.
    pub fn contributions(&self, args: &[ArrayRef]) -> Result<Vec<Vec<f64>>> {
        if let Fit::Trees { boosted_trees } = &self.fit {
            let rows = args.first().map_or(0, |a| a.len());
            let values: Vec<ColumnarValue> = args.iter().cloned().map(ColumnarValue::Array).collect();
            let columns = tree_columns(&self.features, &values, rows)?;
            let by_row: Vec<Vec<f64>> = (0..rows).map(|row| boosted_trees.contributions(&columns, row)).collect();
            return Ok((0..self.features.len()).map(|f| by_row.iter().map(|r| r[f]).collect()).collect());
        }
        let raw = self.raw();
        raw.per_feature
            .iter()
            .zip(args)
            .map(|(f, a)| match f {
                RawFeature::Numeric { weight, fill } => {
                    let a = cast(a, &DataType::Float64)?;
                    Ok(a.as_primitive::<Float64Type>().iter().map(|v| weight * v.unwrap_or(*fill)).collect())
                }
                RawFeature::Categorical { weights } => {
                    let a = cast(a, &DataType::Utf8)?;
                    let a = a.as_string::<i32>();
                    Ok(a.iter().map(|v| v.and_then(|v| weights.get(v).copied()).unwrap_or(0.0)).collect())
                }
            })
            .collect()
    }
}

/// The features as trees take them: numbers with NaN for NULL; categories as codes (the baseline 0,
/// the kept levels from 1; anything else missing). Scalars are repeated `rows` times.
pub(crate) fn tree_columns(features: &[Feature], args: &[ColumnarValue], rows: usize) -> Result<Vec<gbdt::Column>> {
    features
        .iter()
        .zip(args)
        .map(|(f, arg)| {
            let a = arg.to_array(rows)?;
            Ok(match f {
                Feature::Numeric { .. } => {
                    let a = cast(&a, &DataType::Float64)?;
                    let a = a.as_primitive::<Float64Type>();
                    gbdt::Column::Numeric(a.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
                }
                Feature::Categorical { baseline, levels, .. } => {
                    let mut code: HashMap<&str, u32> =
                        levels.iter().enumerate().map(|(k, l)| (l.as_str(), k as u32 + 1)).collect();
                    if let Some(b) = baseline {
                        code.insert(b.as_str(), 0);
                    }
                    let a = cast(&a, &DataType::Utf8)?;
                    let a = a.as_string::<i32>();
                    gbdt::Column::Categorical(
                        a.iter().map(|v| v.and_then(|v| code.get(v).copied()).unwrap_or(gbdt::MISSING_CODE)).collect(),
                    )
                }
            })
        })
        .collect()
}

pub(crate) fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

fn add_categorical(z: &mut [f64], weights: &HashMap<String, f64>, a: &ArrayRef) -> Result<()> {
    let weight = |s: &str| weights.get(s).copied().unwrap_or(0.0);
    match a.data_type() {
        DataType::Utf8 => add_text(z, a.as_string::<i32>(), weight),
        DataType::LargeUtf8 => add_text(z, a.as_string::<i64>(), weight),
        DataType::Utf8View => add_text(z, a.as_string_view(), weight),
        DataType::Dictionary(..) => {
            // Score each dictionary value once, then look the keys up.
            let d = a.as_any_dictionary();
            let values = cast(d.values(), &DataType::Utf8)?;
            let values = values.as_string::<i32>();
            let by_key: Vec<f64> =
                (0..values.len()).map(|k| if values.is_valid(k) { weight(values.value(k)) } else { 0.0 }).collect();
            let keys = d.normalized_keys();
            for (i, (z, k)) in z.iter_mut().zip(keys).enumerate() {
                if d.keys().is_valid(i) {
                    *z += by_key[k];
                }
            }
        }
        DataType::Null => {}
        other => return Err(sql_error(SqlState::InvalidParameter, format!("a categorical feature cannot be {other}"))),
    }
    Ok(())
}

fn add_text<'a>(
    z: &mut [f64],
    a: impl datafusion::arrow::array::ArrayAccessor<Item = &'a str>,
    weight: impl Fn(&str) -> f64,
) {
    match a.nulls().filter(|n| n.null_count() > 0) {
        None => z.iter_mut().enumerate().for_each(|(i, z)| *z += weight(a.value(i))),
        Some(nulls) => z.iter_mut().enumerate().for_each(|(i, z)| {
            if nulls.is_valid(i) {
                *z += weight(a.value(i))
            }
        }),
    }
}

fn scalar_number(s: &ScalarValue) -> Result<Option<f64>> {
    if s.is_null() {
        return Ok(None);
    }
    let v = s.cast_to(&DataType::Float64)?;
    Ok(match v {
        ScalarValue::Float64(v) => v,
        _ => None,
    })
}

fn scalar_text(s: &ScalarValue) -> Option<String> {
    match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => v.clone(),
        ScalarValue::Dictionary(_, v) => scalar_text(v),
        _ => None,
    }
}

/// Every version of one model, which one is deployed, and the versions deployed before it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelEntry {
    pub next_version: u32,
    pub deployed: Option<u32>,
    /// Earlier deployments, oldest first: what a rollback returns to.
    pub deploy_history: Vec<u32>,
    #[serde(with = "shared_versions")]
    pub versions: Vec<Arc<ModelVersion>>,
}

/// Versions are shared (`Arc`) in memory and stored as plain values.
mod shared_versions {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::ModelVersion;

    pub fn serialize<S: Serializer>(v: &[Arc<ModelVersion>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|m| m.as_ref()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Arc<ModelVersion>>, D::Error> {
        Ok(Vec::<ModelVersion>::deserialize(d)?.into_iter().map(Arc::new).collect())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Document {
    models: BTreeMap<String, ModelEntry>,
}

/// How a new version is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deploy {
    /// When no version of the model is deployed.
    Auto,
    Always,
    Never,
}

/// The models of one database. Reads are lock-free snapshots; changes are written to the store
/// (durably) before they are visible.
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn ModelStore>,
    state: RwLock<std::result::Result<Arc<Document>, String>>,
    writer: Mutex<()>,
}

impl Registry {
    /// Reads the registry from `store`. A document that cannot be read is kept as it is (never
    /// overwritten) and every model function reports why.
    pub fn open(store: Arc<dyn ModelStore>) -> Registry {
        let state = match store.load() {
            None => Ok(Arc::new(Document::default())),
            Some(v) => serde_json::from_value::<Document>(v)
                .map(Arc::new)
                .map_err(|e| format!("the model registry could not be read: {e}")),
        };
        if let Err(e) = &state {
            tracing::warn!("{e}");
        }
        Registry { store, state: RwLock::new(state), writer: Mutex::new(()) }
    }

    fn snapshot(&self) -> Result<Arc<Document>> {
        self.state.read().clone().map_err(|e| sql_error(SqlState::Internal, e))
    }

    /// Every version of every model, by name then version, with whether it is deployed.
    pub fn list(&self) -> Result<Vec<(Arc<ModelVersion>, bool)>> {
        let doc = self.snapshot()?;
        Ok(doc
            .models
            .values()
            .flat_map(|e| e.versions.iter().map(move |v| (v.clone(), e.deployed == Some(v.version))))
            .collect())
    }

    /// A version of a model, or with `None` its deployed version.
    pub fn resolve(&self, name: &str, version: Option<u32>) -> Result<Arc<ModelVersion>> {
        let doc = self.snapshot()?;
        let Some(entry) = doc.models.get(name).filter(|e| !e.versions.is_empty()) else {
            return Err(undefined(format!("model \"{name}\" does not exist; train it with train_retry_model")));
        };
        let version = match version {
            Some(v) => v,
            None => entry.deployed.ok_or_else(|| {
                undefined(format!(
                    "model \"{name}\" has no deployed version; deploy one with deploy_model('{name}', <version>)"
                ))
            })?,
        };
        entry
            .versions
            .iter()
            .find(|v| v.version == version)
            .cloned()
            .ok_or_else(|| undefined(format!("model \"{name}\" has no version {version}")))
    }

    fn change<T>(&self, f: impl FnOnce(&mut Document) -> Result<T>) -> Result<T> {
        let _writing = self.writer.lock();
        let mut doc = (*self.snapshot()?).clone();
        let out = f(&mut doc)?;
        let value = serde_json::to_value(&doc).map_err(|e| DataFusionError::External(Box::new(e)))?;
        self.store
            .save(value)
            .map_err(|e| sql_error(SqlState::IoError, format!("could not save the model registry: {e}")))?;
        *self.state.write() = Ok(Arc::new(doc));
        Ok(out)
    }

    /// Stores a new version (numbered after every earlier one, even dropped ones); returns it and
    /// whether it was deployed.
    pub fn add(&self, mut version: ModelVersion, deploy: Deploy) -> Result<(Arc<ModelVersion>, bool)> {
        self.change(|doc| {
            let entry = doc.models.entry(version.name.clone()).or_default();
            entry.next_version = entry.next_version.max(1);
            version.version = entry.next_version;
            entry.next_version += 1;
            let deploy = match deploy {
                Deploy::Always => true,
                Deploy::Never => false,
                Deploy::Auto => entry.deployed.is_none(),
            };
            let version = Arc::new(version);
            entry.versions.push(version.clone());
            if deploy {
                if let Some(previous) = entry.deployed {
                    entry.deploy_history.push(previous);
                }
                entry.deployed = Some(version.version);
            }
            Ok((version, deploy))
        })
    }

    /// Deploys `version` of `name`; returns the version deployed before, if any.
    pub fn deploy(&self, name: &str, version: u32) -> Result<Option<u32>> {
        self.change(|doc| {
            let Some(entry) = doc.models.get_mut(name).filter(|e| !e.versions.is_empty()) else {
                return Err(undefined(format!("model \"{name}\" does not exist")));
            };
            if !entry.versions.iter().any(|m| m.version == version) {
                return Err(undefined(format!("model \"{name}\" has no version {version}")));
            }
            let previous = entry.deployed;
            if previous != Some(version) {
                if let Some(p) = previous {
                    entry.deploy_history.push(p);
                }
                entry.deployed = Some(version);
            }
            Ok(previous)
        })
    }

    /// Deploys the version that was deployed before the current one; returns (new, replaced).
    pub fn rollback(&self, name: &str) -> Result<(u32, u32)> {
        self.change(|doc| {
            let Some(entry) = doc.models.get_mut(name).filter(|e| !e.versions.is_empty()) else {
                return Err(undefined(format!("model \"{name}\" does not exist")));
            };
            let Some(current) = entry.deployed else {
                return Err(undefined(format!("model \"{name}\" has no deployed version to roll back")));
            };
            let exists = |v: u32, e: &ModelEntry| e.versions.iter().any(|m| m.version == v);
            while let Some(previous) = entry.deploy_history.pop() {
                if previous != current && exists(previous, entry) {
                    entry.deployed = Some(previous);
                    return Ok((previous, current));
                }
            }
            Err(undefined(format!(
                "model \"{name}\" has no earlier deployed version to roll back to (version {current} is deployed)"
            )))
        })
    }

    /// Drops one version (not the deployed one), or with `None` the whole model; returns how many
    /// versions were dropped.
    pub fn drop_versions(&self, name: &str, version: Option<u32>) -> Result<usize> {
        self.change(|doc| {
            let Some(entry) = doc.models.get_mut(name).filter(|e| !e.versions.is_empty()) else {
                return Err(undefined(format!("model \"{name}\" does not exist")));
            };
            match version {
                None => {
                    // The entry keeps its numbering: a model trained again under the name starts after
                    // every version it had.
                    let n = entry.versions.len();
                    *entry = ModelEntry { next_version: entry.next_version, ..ModelEntry::default() };
                    Ok(n)
                }
                Some(v) if entry.deployed == Some(v) => Err(sql_error(
                    SqlState::ObjectInUse,
                    format!("version {v} of model \"{name}\" is deployed; deploy another version or roll back first"),
                )),
                Some(v) => {
                    let before = entry.versions.len();
                    entry.versions.retain(|m| m.version != v);
                    entry.deploy_history.retain(|&h| h != v);
                    if entry.versions.len() == before {
                        return Err(undefined(format!("model \"{name}\" has no version {v}")));
                    }
                    Ok(1)
                }
            }
        })
    }
}
