//! The SQL surface of the models: training, deployment, evaluation and explanation as table functions
//! (callable with a plain SELECT, as BI tools can only send SELECT), prediction as vectorised scalar
//! functions, and the `models` table. Every function that changes a model or reads data runs when the
//! query executes, never while it is planned (so `EXPLAIN` or a client's Describe trains nothing).
//!
//! - `train_retry_model(name, query [, options])`
//! - `deploy_model(name, version)`, `rollback_model(name)`, `drop_model(name [, version])`
//! - `evaluate_model(name [, version] [, query] [, threshold])`, `roc_curve(name [, version] [, query])`,
//!   `calibration(name [, version] [, query] [, bins])`, `model_weights(name [, version])`
//! - `explain_retry(query [, name [, version]])`
//! - `predict_retry(features...)`, `predict_model(name, version, features...)`

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{SortColumn, cast, filter_record_batch, lexsort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{HashMap, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use ndarray::Array2;

use crate::lazy::{LazyTable, Work, blocking};

use super::metrics::{self, Metrics};
use super::{Comparison, Deploy, Feature, Fit, ModelVersion, Reference, Registry, TrainOptions, is_text, sql_error};
use crate::sqlstate::SqlState;
use crate::{gbdt, logistic};

/// Registers the model functions and the `models` table's provider factory over `registry`.
pub fn install(state: &mut SessionState, registry: &Arc<Registry>) -> Result<()> {
    state.register_udf(Arc::new(ScalarUDF::from(Predict::retry(registry.clone()))))?;
    state.register_udf(Arc::new(ScalarUDF::from(Predict::pinned(registry.clone()))))?;
    for kind in [
        Kind::Train,
        Kind::Deploy,
        Kind::Rollback,
        Kind::Drop,
        Kind::Evaluate,
        Kind::Roc,
        Kind::Calibration,
        Kind::Weights,
        Kind::Explain,
    ] {
        state.register_udtf(kind.name(), Arc::new(ModelFunction { kind, registry: registry.clone() }));
    }
    Ok(())
}

/// The names of the table functions that change the registry (a read-only role may not call them).
pub const WRITING_FUNCTIONS: [&str; 4] = ["train_retry_model", "deploy_model", "rollback_model", "drop_model"];

/// Whether `provider` is the table of a call that changes the registry (found in a plan, wherever the
/// call appears: FROM, a join, LATERAL, a subquery, a CTE, EXPLAIN).
pub fn writes_models(provider: &dyn TableProvider) -> bool {
    crate::lazy::name_of(provider).is_some_and(|name| WRITING_FUNCTIONS.contains(&name))
}

// ---------------------------------------------------------------------------------------------------
// Arguments.

#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Int(i64),
    Float(f64),
    Null,
}

fn literal(e: &Expr) -> Option<Arg> {
    match e {
        Expr::Literal(v, _) => match v {
            v if v.is_null() => Some(Arg::Null),
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
                Some(Arg::Text(s.clone()))
            }
            ScalarValue::Float64(Some(f)) => Some(Arg::Float(*f)),
            ScalarValue::Float32(Some(f)) => Some(Arg::Float(*f as f64)),
            ScalarValue::Decimal128(..) => match v.cast_to(&DataType::Float64).ok()? {
                ScalarValue::Float64(Some(f)) => Some(Arg::Float(f)),
                _ => None,
            },
            v if v.data_type().is_integer() => match v.cast_to(&DataType::Int64).ok()? {
                ScalarValue::Int64(Some(i)) => Some(Arg::Int(i)),
                _ => None,
            },
            _ => None,
        },
        Expr::Negative(inner) => match literal(inner)? {
            Arg::Int(i) => Some(Arg::Int(i.checked_neg()?)),
            Arg::Float(f) => Some(Arg::Float(-f)),
            _ => None,
        },
        Expr::Cast(datafusion::logical_expr::Cast { expr, field })
        | Expr::TryCast(datafusion::logical_expr::TryCast { expr, field }) => match expr.as_ref() {
            Expr::Literal(v, m) => literal(&Expr::Literal(v.cast_to(field.data_type()).ok()?, m.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// Table functions are planned before bind parameters have values, so their arguments must be written
/// into the statement.
fn not_constant(function: &str, i: usize, e: &Expr) -> datafusion::error::DataFusionError {
    if matches!(e, Expr::Placeholder(_)) {
        bad(format!(
            "{function}: argument {} is a bind parameter; table functions take constants written into the \
             statement (quote them client-side)",
            i + 1
        ))
    } else {
        bad(format!("{function}: argument {} must be a constant", i + 1))
    }
}

fn bad(message: impl Into<String>) -> datafusion::error::DataFusionError {
    sql_error(SqlState::InvalidParameter, message)
}

fn version_of(function: &str, v: i64) -> Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| bad(format!("{function}: no version {v}; versions start at 1")))
}

/// `name [, version] [, query] [, number]`, each optional part recognised by its type (a NULL stands
/// for a part left at its default).
#[derive(Debug, Clone, Default)]
struct ModelArgs {
    name: String,
    version: Option<u32>,
    query: Option<String>,
    number: Option<f64>,
}

fn model_args(kind: Kind, exprs: &[Expr]) -> Result<ModelArgs> {
    let function = kind.name();
    let usage = || bad(format!("{function}: arguments are {}", kind.usage()));
    let args: Vec<Arg> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| literal(e).ok_or_else(|| not_constant(function, i, e)))
        .collect::<Result<_>>()?;
    let mut out = ModelArgs::default();
    let mut rest = args.as_slice();
    match rest.first() {
        Some(Arg::Text(name)) if !name.is_empty() => out.name = name.clone(),
        _ => return Err(usage()),
    }
    rest = &rest[1..];
    let (takes_version, takes_query, takes_number) = kind.parts();
    if takes_version && let Some(a @ (Arg::Int(_) | Arg::Null)) = rest.first() {
        if let Arg::Int(v) = a {
            out.version = Some(version_of(function, *v)?);
        }
        rest = &rest[1..];
    }
    if takes_query && let Some(a @ (Arg::Text(_) | Arg::Null)) = rest.first() {
        if let Arg::Text(q) = a {
            out.query = Some(q.clone());
        }
        rest = &rest[1..];
    }
    if takes_number && let Some(a @ (Arg::Int(_) | Arg::Float(_) | Arg::Null)) = rest.first() {
        out.number = match a {
            Arg::Int(i) => Some(*i as f64),
            Arg::Float(f) => Some(*f),
            _ => None,
        };
        rest = &rest[1..];
    }
    if !rest.is_empty() {
        return Err(usage());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------
// The table functions.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Train,
    Deploy,
    Rollback,
    Drop,
    Evaluate,
    Roc,
    Calibration,
    Weights,
    Explain,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Train => "train_retry_model",
            Kind::Deploy => "deploy_model",
            Kind::Rollback => "rollback_model",
            Kind::Drop => "drop_model",
            Kind::Evaluate => "evaluate_model",
            Kind::Roc => "roc_curve",
            Kind::Calibration => "calibration",
            Kind::Weights => "model_weights",
            Kind::Explain => "explain_retry",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Kind::Train => "(name, query [, options])",
            Kind::Deploy => "(name, version)",
            Kind::Rollback => "(name)",
            Kind::Drop => "(name [, version])",
            Kind::Evaluate => "(name [, version] [, query] [, threshold])",
            Kind::Roc => "(name [, version] [, query])",
            Kind::Calibration => "(name [, version] [, query] [, bins])",
            Kind::Weights => "(name [, version])",
            Kind::Explain => "(query [, name [, version]])",
        }
    }

    /// Which of version, query and number follow the name.
    fn parts(self) -> (bool, bool, bool) {
        match self {
            Kind::Deploy | Kind::Drop | Kind::Weights => (true, false, false),
            Kind::Rollback => (false, false, false),
            Kind::Evaluate | Kind::Calibration => (true, true, true),
            Kind::Roc => (true, true, false),
            Kind::Train | Kind::Explain => (false, false, false),
        }
    }

    fn schema(self) -> SchemaRef {
        let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
        use DataType::{Boolean, Float64, Int64, Utf8};
        Arc::new(Schema::new(match self {
            Kind::Train => vec![
                f("model", Utf8, false),
                f("version", Int64, false),
                f("rows_train", Int64, false),
                f("rows_eval", Int64, false),
                f("auc_roc", Float64, true),
                f("log_loss", Float64, true),
                f("brier", Float64, true),
                f("converged", Boolean, false),
                f("iterations", Int64, false),
                f("deployed", Boolean, false),
                f("duration_ms", Float64, false),
                f("focus_rows", Int64, true),
                f("focus_auc_roc", Float64, true),
                f("focus_log_loss", Float64, true),
                f("focus_brier", Float64, true),
                f("baseline_auc_roc", Float64, true),
            ],
            Kind::Deploy | Kind::Rollback => {
                vec![f("model", Utf8, false), f("version", Int64, false), f("previous_version", Int64, true)]
            }
            Kind::Drop => vec![f("model", Utf8, false), f("versions_dropped", Int64, false)],
            Kind::Evaluate => vec![
                f("model", Utf8, false),
                f("version", Int64, false),
                f("rows", Int64, false),
                f("positives", Int64, false),
                f("auc_roc", Float64, true),
                f("auc_pr", Float64, true),
                f("log_loss", Float64, false),
                f("brier", Float64, false),
                f("threshold", Float64, false),
                f("accuracy", Float64, false),
                f("precision", Float64, true),
                f("recall", Float64, true),
                f("f1", Float64, true),
                f("subset", Utf8, false),
                f("scorer", Utf8, false),
            ],
            Kind::Roc => vec![
                f("threshold", Float64, false),
                f("fpr", Float64, false),
                f("tpr", Float64, false),
                f("precision", Float64, false),
            ],
            Kind::Calibration => vec![
                f("bin", Int64, false),
                f("lower", Float64, false),
                f("upper", Float64, false),
                f("rows", Int64, false),
                f("mean_predicted", Float64, true),
                f("observed_rate", Float64, true),
            ],
            Kind::Weights => vec![
                f("feature", Utf8, false),
                f("level", Utf8, true),
                f("weight", Float64, false),
                f("standardized_weight", Float64, true),
                f("odds_ratio", Float64, true),
            ],
            Kind::Explain => vec![
                f("row", Int64, false),
                f("feature", Utf8, false),
                f("value", Utf8, true),
                f("contribution", Float64, false),
                f("log_odds", Float64, false),
                f("probability", Float64, false),
            ],
        }))
    }
}

#[derive(Debug)]
struct ModelFunction {
    kind: Kind,
    registry: Arc<Registry>,
}

impl TableFunctionImpl for ModelFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        let kind = self.kind;
        let registry = self.registry.clone();
        let schema = kind.schema();
        let out_schema = schema.clone();
        let exprs = args.exprs();
        let work: Work = match kind {
            Kind::Train => {
                if let Some((i, e)) = exprs.iter().enumerate().find(|(_, e)| literal(e).is_none()) {
                    return Err(not_constant(kind.name(), i, e));
                }
                let texts: Vec<Option<Arg>> = exprs.iter().map(literal).collect();
                let (name, query, options) = match texts.as_slice() {
                    [Some(Arg::Text(n)), Some(Arg::Text(q))] => (n.clone(), q.clone(), String::new()),
                    [Some(Arg::Text(n)), Some(Arg::Text(q)), Some(Arg::Text(o))] => (n.clone(), q.clone(), o.clone()),
                    _ => return Err(bad(format!("{}: arguments are {} (text constants)", kind.name(), kind.usage()))),
                };
                if name.is_empty() {
                    return Err(bad("train_retry_model: the model name is empty"));
                }
                let options = TrainOptions::parse(&options)?;
                Arc::new(move |state| {
                    let (registry, schema, name, query, options) =
                        (registry.clone(), out_schema.clone(), name.clone(), query.clone(), options.clone());
                    Box::pin(async move { train(&state, &registry, name, query, options, schema).await })
                })
            }
            Kind::Explain => {
                if let Some((i, e)) = exprs.iter().enumerate().find(|(_, e)| literal(e).is_none()) {
                    return Err(not_constant(kind.name(), i, e));
                }
                let parsed: Vec<Option<Arg>> = exprs.iter().map(literal).collect();
                let usage = || bad(format!("explain_retry: arguments are {}", kind.usage()));
                let (query, rest) = match parsed.split_first() {
                    Some((Some(Arg::Text(q)), rest)) if rest.len() <= 2 => (q.clone(), rest),
                    _ => return Err(usage()),
                };
                let name = match rest.first() {
                    None | Some(Some(Arg::Null)) => "retry".to_string(),
                    Some(Some(Arg::Text(n))) => n.clone(),
                    _ => return Err(usage()),
                };
                let version = match rest.get(1) {
                    None | Some(Some(Arg::Null)) => None,
                    Some(Some(Arg::Int(v))) => Some(version_of(kind.name(), *v)?),
                    _ => return Err(usage()),
                };
                Arc::new(move |state| {
                    let (registry, schema, name, query) =
                        (registry.clone(), out_schema.clone(), name.clone(), query.clone());
                    Box::pin(async move {
                        let model = registry.resolve(&name, version)?;
                        // At most one row past the limit is read, to say it was exceeded.
                        let limited = format!("SELECT * FROM ({query}) AS explained LIMIT {}", EXPLAIN_MAX_ROWS + 1);
                        let batch = crate::run_read_query(&state, "explain_retry", &limited).await?;
                        explain(&model, &batch, schema)
                    })
                })
            }
            _ => {
                let a = model_args(kind, exprs)?;
                Arc::new(move |state| {
                    let (registry, schema, a) = (registry.clone(), out_schema.clone(), a.clone());
                    Box::pin(async move { run_model_function(kind, &state, &registry, a, schema).await })
                })
            }
        };
        Ok(Arc::new(LazyTable { name: kind.name(), schema, work }))
    }
}

fn one_row(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn text(v: impl Into<String>) -> ArrayRef {
    Arc::new(StringArray::from(vec![v.into()]))
}

fn int(v: Option<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(vec![v]))
}

fn float(v: Option<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(vec![v]))
}

async fn run_model_function(
    kind: Kind,
    state: &SessionState,
    registry: &Arc<Registry>,
    a: ModelArgs,
    schema: SchemaRef,
) -> Result<RecordBatch> {
    match kind {
        Kind::Deploy => {
            let Some(version) = a.version else {
                return Err(bad("deploy_model: give the version to deploy, e.g. deploy_model('retry', 2)"));
            };
            let (r, name) = (registry.clone(), a.name.clone());
            let previous = blocking(move || r.deploy(&name, version)).await?;
            one_row(schema, vec![text(a.name), int(Some(version as i64)), int(previous.map(i64::from))])
        }
        Kind::Rollback => {
            let (r, name) = (registry.clone(), a.name.clone());
            let (version, previous) = blocking(move || r.rollback(&name)).await?;
            one_row(schema, vec![text(a.name), int(Some(version as i64)), int(Some(previous as i64))])
        }
        Kind::Drop => {
            let (r, name, v) = (registry.clone(), a.name.clone(), a.version);
            let n = blocking(move || r.drop_versions(&name, v)).await?;
            one_row(schema, vec![text(a.name), int(Some(n as i64))])
        }
        Kind::Weights => {
            let model = registry.resolve(&a.name, a.version)?;
            weights(&model, schema)
        }
        Kind::Evaluate | Kind::Roc | Kind::Calibration => {
            let model = registry.resolve(&a.name, a.version)?;
            let Scored { p, y, focus, baseline } = scored_rows(state, &model, a.query.as_deref(), kind.name()).await?;
            match kind {
                Kind::Evaluate => {
                    let threshold = a.number.unwrap_or(0.5);
                    if !(0.0..=1.0).contains(&threshold) {
                        return Err(bad(format!("evaluate_model: the threshold must be in [0, 1], not {threshold}")));
                    }
                    let m = model.clone();
                    let lines = blocking(move || {
                        Ok(m.reference.compare(&p, &y, focus.as_deref(), baseline.as_deref(), threshold))
                    })
                    .await?;
                    evaluation_rows(&model, &lines, schema)
                }
                Kind::Roc => {
                    let positives = y.iter().filter(|&&b| b).count();
                    if positives == 0 || positives == y.len() {
                        return Err(bad("roc_curve: the rows hold a single class; a curve needs both"));
                    }
                    let points = blocking(move || Ok(metrics::roc_curve(&p, &y, 200))).await?;
                    let col = |f: fn(&metrics::RocPoint) -> f64| -> ArrayRef {
                        Arc::new(Float64Array::from_iter_values(points.iter().map(f)))
                    };
                    one_row(schema, vec![col(|r| r.threshold), col(|r| r.fpr), col(|r| r.tpr), col(|r| r.precision)])
                }
                _ => {
                    let bins = a.number.unwrap_or(10.0);
                    if !(1.0..=1000.0).contains(&bins) || bins.fract() != 0.0 {
                        return Err(bad(format!(
                            "calibration: bins must be a whole number from 1 to 1000, not {bins}"
                        )));
                    }
                    let bins = metrics::calibration(&p, &y, bins as usize);
                    one_row(
                        schema,
                        vec![
                            Arc::new(Int64Array::from_iter_values(bins.iter().map(|b| b.bin as i64))),
                            Arc::new(Float64Array::from_iter_values(bins.iter().map(|b| b.lower))),
                            Arc::new(Float64Array::from_iter_values(bins.iter().map(|b| b.upper))),
                            Arc::new(Int64Array::from_iter_values(bins.iter().map(|b| b.rows as i64))),
                            Arc::new(Float64Array::from_iter(bins.iter().map(|b| b.mean_predicted))),
                            Arc::new(Float64Array::from_iter(bins.iter().map(|b| b.observed_rate))),
                        ],
                    )
                }
            }
        }
        Kind::Train | Kind::Explain => unreachable!("handled by call_with_args"),
    }
}

/// One row per comparison: the model on every row first.
fn evaluation_rows(model: &ModelVersion, lines: &[Comparison], schema: SchemaRef) -> Result<RecordBatch> {
    let n = lines.len();
    let m = |f: fn(&Metrics) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(lines.iter().map(|c| f(&c.metrics))))
    };
    one_row(
        schema,
        vec![
            Arc::new(StringArray::from(vec![model.name.clone(); n])),
            Arc::new(Int64Array::from(vec![model.version as i64; n])),
            Arc::new(Int64Array::from_iter_values(lines.iter().map(|c| c.metrics.rows as i64))),
            Arc::new(Int64Array::from_iter_values(lines.iter().map(|c| c.metrics.positives as i64))),
            m(|m| m.auc_roc),
            m(|m| m.auc_pr),
            m(|m| Some(m.log_loss)),
            m(|m| Some(m.brier)),
            m(|m| Some(m.threshold)),
            m(|m| Some(m.accuracy)),
            m(|m| m.precision),
            m(|m| m.recall),
            m(|m| m.f1),
            Arc::new(StringArray::from_iter_values(lines.iter().map(|c| c.subset.as_str()))),
            Arc::new(StringArray::from_iter_values(lines.iter().map(|c| c.scorer.as_str()))),
        ],
    )
}

fn weights(model: &ModelVersion, schema: SchemaRef) -> Result<RecordBatch> {
    if let Fit::Trees { boosted_trees } = &model.fit {
        // Trees have no weights: each feature's share of the loss reduction of all splits, and the
        // log-odds before any split as the intercept.
        let gains = boosted_trees.gains(model.features.len());
        let total: f64 = gains.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let mut feature = vec!["(intercept)".to_string()];
        let mut weight = vec![model.raw_intercept()];
        for (f, g) in model.features.iter().zip(&gains) {
            feature.push(f.name().to_string());
            weight.push(g / total);
        }
        let none: Vec<Option<f64>> = vec![None; weight.len()];
        return one_row(
            schema,
            vec![
                Arc::new(StringArray::from(feature)),
                Arc::new(StringArray::from(vec![None::<String>; weight.len()])),
                Arc::new(Float64Array::from(weight)),
                Arc::new(Float64Array::from(none.clone())),
                Arc::new(Float64Array::from(none)),
            ],
        );
    }
    let mut feature = vec!["(intercept)".to_string()];
    let mut level: Vec<Option<String>> = vec![None];
    let mut weight = vec![model.raw_intercept()];
    let mut standardized = vec![model.fit.logistic().map_or(0.0, |m| m.intercept)];
    for (k, lvl, std_w, raw_w) in model.design_columns() {
        feature.push(model.features[k].name().to_string());
        level.push(lvl.map(String::from));
        weight.push(raw_w);
        standardized.push(std_w);
    }
    let odds: Vec<f64> = weight.iter().map(|w| w.exp()).collect();
    one_row(
        schema,
        vec![
            Arc::new(StringArray::from(feature)),
            Arc::new(StringArray::from(level)),
            Arc::new(Float64Array::from(weight)),
            Arc::new(Float64Array::from(standardized)),
            Arc::new(Float64Array::from(odds)),
        ],
    )
}

/// Finds the model's features in `batch`: by name when every one is there, else by position when the
/// batch has exactly as many columns.
fn feature_columns(
    model: &ModelVersion,
    batch: &RecordBatch,
    function: &str,
    by_position: bool,
) -> Result<Vec<ArrayRef>> {
    let by_name: Option<Vec<ArrayRef>> = model
        .features
        .iter()
        .map(|f| batch.schema().index_of(f.name()).ok().map(|i| batch.column(i).clone()))
        .collect();
    if let Some(cols) = by_name {
        return Ok(cols);
    }
    if by_position && batch.num_columns() == model.features.len() {
        return Ok(batch.columns().to_vec());
    }
    let missing: Vec<&str> =
        model.features.iter().map(Feature::name).filter(|n| batch.schema().index_of(n).is_err()).collect();
    Err(bad(format!(
        "{function}: the query has no column {} (the features of {} are {})",
        missing.join(", "),
        model.label(),
        model.feature_list()
    )))
}

/// Predictions and labels for evaluation: from `query`, or by default the rows the model held out.
async fn scored_rows(
    state: &SessionState,
    model: &Arc<ModelVersion>,
    query: Option<&str>,
    function: &'static str,
) -> Result<Scored> {
    let batch = match query {
        Some(q) => crate::run_read_query(state, function, q).await?,
        None => {
            let Some(split_at) = model.split_at else {
                return Err(bad(format!(
                    "{function}: {} held no rows out (eval_fraction = 0); give a query to evaluate it on",
                    model.label()
                )));
            };
            let batch = crate::run_read_query(state, function, &model.query).await?;
            let t = time_column(&batch, &model.options.time, function)?;
            let keep: BooleanArray = t.iter().map(|t| Some(t.is_some_and(|t| t >= split_at))).collect();
            filter_record_batch(&batch, &keep)?
        }
    };
    let label = label_column(&batch, &model.options.label, function)?;
    let cols = feature_columns(model, &batch, function, false)?;
    let n = batch.num_rows();
    if n == 0 {
        return Err(bad(format!("{function}: the query returned no rows to score")));
    }
    let column = |name: &Option<String>, ok: fn(&DataType) -> bool| {
        let i = batch.schema().index_of(name.as_deref()?).ok()?;
        ok(batch.column(i).data_type()).then(|| batch.column(i).clone())
    };
    let focus = column(&model.reference.focus, |t| t == &DataType::Boolean).map(|c| flags(&c));
    let baseline = column(&model.reference.baseline, DataType::is_numeric).map(|c| scores(&c)).transpose()?;
    let model = model.clone();
    blocking(move || {
        let args: Vec<ColumnarValue> = cols.into_iter().map(ColumnarValue::Array).collect();
        let p = model.predict(function, &args, n)?;
        Ok(Scored { p: p.values().to_vec(), y: label, focus, baseline })
    })
    .await
}

/// Rows scored by a model: probabilities, labels, and the focus flags and baseline scores where the
/// rows have those columns.
struct Scored {
    p: Vec<f64>,
    y: Vec<bool>,
    focus: Option<Vec<bool>>,
    baseline: Option<Vec<Option<f64>>>,
}

fn label_column(batch: &RecordBatch, name: &str, function: &str) -> Result<Vec<bool>> {
    let Ok(i) = batch.schema().index_of(name) else {
        return Err(bad(format!("{function}: the query has no label column \"{name}\" (set it with label=...)")));
    };
    let col = batch.column(i);
    if !(col.data_type() == &DataType::Boolean || col.data_type().is_integer()) {
        return Err(bad(format!(
            "{function}: the label \"{name}\" must be boolean (or 0 / 1), not {}",
            col.data_type()
        )));
    }
    if col.data_type().is_integer() {
        let ints = cast(col, &DataType::Int64)?;
        if ints.as_primitive::<Int64Type>().iter().flatten().any(|v| v != 0 && v != 1) {
            return Err(bad(format!("{function}: the label \"{name}\" must be boolean or 0 / 1")));
        }
    }
    let col = cast(col, &DataType::Boolean)?;
    let col = col.as_boolean();
    if col.null_count() > 0 {
        return Err(bad(format!("{function}: the label \"{name}\" is NULL in {} rows", col.null_count())));
    }
    Ok(col.values().iter().collect())
}

fn time_column(batch: &RecordBatch, name: &str, function: &str) -> Result<Int64Array> {
    let Ok(i) = batch.schema().index_of(name) else {
        return Err(bad(format!(
            "{function}: the query has no time column \"{name}\" to split on (set it with time=..., or eval_fraction=0)"
        )));
    };
    let col = batch.column(i);
    let micros = match col.data_type() {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            cast(&cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?, &DataType::Int64)?
        }
        t if t.is_integer() => cast(col, &DataType::Int64)?,
        t => return Err(bad(format!("{function}: the time column \"{name}\" must be a timestamp, not {t}"))),
    };
    Ok(micros.as_primitive::<Int64Type>().clone())
}

// ---------------------------------------------------------------------------------------------------
// Training.

async fn train(
    state: &SessionState,
    registry: &Arc<Registry>,
    name: String,
    query: String,
    options: TrainOptions,
    schema: SchemaRef,
) -> Result<RecordBatch> {
    let started = Instant::now();
    let batch = crate::run_read_query(state, "train_retry_model", &query).await?;
    let registry = registry.clone();
    blocking(move || {
        let model = fit_model(&name, &query, &options, batch, started)?;
        let deploy = match options.deploy.as_str() {
            "true" => Deploy::Always,
            "false" => Deploy::Never,
            _ => Deploy::Auto,
        };
        let (model, deployed) = registry.add(model, deploy)?;
        let m = model.metrics.as_ref();
        let focus = model.reference.focus.as_deref();
        let focused = model.comparisons.iter().find(|c| Some(c.subset.as_str()) == focus && c.scorer == "model");
        // The baseline column on the focus rows when there are some, else on every row.
        let baseline = model
            .comparisons
            .iter()
            .filter(|c| Some(c.scorer.as_str()) == model.reference.baseline.as_deref())
            .max_by_key(|c| Some(c.subset.as_str()) == focus);
        one_row(
            schema,
            vec![
                text(model.name.clone()),
                int(Some(model.version as i64)),
                int(Some(model.rows_train as i64)),
                int(Some(model.rows_eval as i64)),
                float(m.and_then(|m| m.auc_roc)),
                float(m.map(|m| m.log_loss)),
                float(m.map(|m| m.brier)),
                Arc::new(BooleanArray::from(vec![model.fit.converged()])),
                int(Some(model.fit.iterations() as i64)),
                Arc::new(BooleanArray::from(vec![deployed])),
                float(Some(model.duration_ms)),
                int(focused.map(|c| c.metrics.rows as i64)),
                float(focused.and_then(|c| c.metrics.auc_roc)),
                float(focused.map(|c| c.metrics.log_loss)),
                float(focused.map(|c| c.metrics.brier)),
                float(baseline.and_then(|c| c.metrics.auc_roc)),
            ],
        )
    })
    .await
}

/// Encodes the features, splits by time, fits, and scores the held-out rows.
fn fit_model(
    name: &str,
    query: &str,
    options: &TrainOptions,
    batch: RecordBatch,
    started: Instant,
) -> Result<ModelVersion> {
    const F: &str = "train_retry_model";
    let schema = batch.schema();
    let label_index = schema.index_of(&options.label).map_err(|_| {
        bad(format!("{F}: the query has no label column \"{}\" (set it with label=...)", options.label))
    })?;
    let time_index = schema.index_of(&options.time).ok();
    if time_index.is_none() && options.eval_fraction > 0.0 {
        time_column(&batch, &options.time, F)?;
    }
    let focus_index =
        schema.index_of(&options.focus).ok().filter(|&i| schema.field(i).data_type() == &DataType::Boolean);
    let baseline_index = schema.index_of(&options.baseline).ok().filter(|&i| schema.field(i).data_type().is_numeric());
    let feature_index: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| i != label_index && Some(i) != time_index && Some(i) != focus_index)
        .collect();
    if feature_index.is_empty() {
        return Err(bad(format!("{F}: the query has no feature columns besides the label and the time")));
    }
    for &i in &feature_index {
        let f = schema.field(i);
        let t = f.data_type();
        if !(t.is_numeric() || matches!(t, DataType::Boolean | DataType::Null) || is_text(t)) {
            return Err(bad(format!(
                "{F}: column \"{}\" is {t}; features are numbers, booleans or text (cast it, or leave it out)",
                f.name()
            )));
        }
    }
    // Rows in a fixed order (by time, then every column), so the same data always gives the same model
    // whatever order the query produced it in.
    let n = batch.num_rows();
    let mut sort: Vec<SortColumn> = Vec::new();
    if time_index.is_some() {
        sort.push(SortColumn { values: Arc::new(time_column(&batch, &options.time, F)?), options: None });
    }
    for i in std::iter::once(label_index).chain(feature_index.iter().copied()) {
        let c = batch.column(i);
        let c = if matches!(c.data_type(), DataType::Dictionary(..) | DataType::Null) {
            cast(c, &DataType::Utf8)?
        } else {
            c.clone()
        };
        sort.push(SortColumn { values: c, options: None });
    }
    let batch = if n > 1 {
        let sorted = take_record_batch(&batch, &lexsort_to_indices(&sort, None)?)?;
        drop((sort, batch));
        sorted
    } else {
        batch
    };
    let labels = label_column(&batch, &options.label, F)?;

    let (cut, split_at) = match time_index {
        Some(_) if options.eval_fraction > 0.0 => {
            let times = time_column(&batch, &options.time, F)?;
            if times.null_count() > 0 {
                return Err(bad(format!("{F}: the time column \"{}\" has NULLs", options.time)));
            }
            let k = ((n as f64) * (1.0 - options.eval_fraction)).floor() as usize;
            if k == 0 || k >= n {
                return Err(bad(format!(
                    "{F}: {n} rows are too few to hold out eval_fraction = {}",
                    options.eval_fraction
                )));
            }
            let split_at = times.value(k);
            // Every row at the split time goes to evaluation.
            let cut = times.values()[..k].partition_point(|&t| t < split_at);
            if cut == 0 {
                return Err(bad(format!("{F}: every row has the same time; nothing is left to train on")));
            }
            (cut, Some(split_at))
        }
        _ => (n, None),
    };
    if n == 0 {
        return Err(bad(format!("{F}: the query returned no rows")));
    }
    let train = batch.slice(0, cut);
    let eval = batch.slice(cut, n - cut);
    let columns: Vec<ArrayRef> = feature_index.iter().map(|&i| train.column(i).clone()).collect();
    // A tree splits on at most 255 levels of a category (the baseline among them).
    let max_categories = if options.trees() { options.max_categories.min(255) } else { options.max_categories };
    let features: Vec<Feature> = feature_index
        .iter()
        .zip(&columns)
        .map(|(&i, c)| describe_feature(schema.field(i).name(), c, max_categories))
        .collect::<Result<_>>()?;
    let fitted = if options.trees() {
        let values: Vec<ColumnarValue> = columns.iter().cloned().map(ColumnarValue::Array).collect();
        let x = super::tree_columns(&features, &values, cut)?;
        drop(values);
        let tree_options = gbdt::Options {
            learning_rate: options.learning_rate,
            max_iter: options.max_iter,
            max_leaf_nodes: options.max_leaf_nodes,
            min_samples_leaf: options.min_samples_leaf,
            l2: options.l2,
            max_bins: options.max_bins,
            class_weight: options.class_weight()?,
        };
        let model = gbdt::fit(&x, &labels[..cut], &tree_options).map_err(|e| bad(format!("{F}: {e}")))?;
        Fit::Trees { boosted_trees: model }
    } else {
        let x = design(&features, &columns)?;
        let fit_options = logistic::Options {
            l2: options.l2,
            class_weight: options.class_weight()?,
            max_iter: options.max_iter,
            tol: options.tol,
        };
        Fit::Logistic(logistic::fit(x, &labels[..cut], &fit_options).map_err(|e| bad(format!("{F}: {e}")))?)
    };
    let created_at = chrono::Utc::now().timestamp_micros();
    let mut model = ModelVersion::new(
        name.to_string(),
        created_at,
        query.to_string(),
        options.clone(),
        split_at,
        features,
        fitted,
        0.0,
        cut as u64,
        (n - cut) as u64,
    );
    model.reference = Reference {
        focus: focus_index.map(|i| schema.field(i).name().clone()),
        baseline: baseline_index.map(|i| schema.field(i).name().clone()),
        ..Reference::default()
    };
    // Without a focus column, the rule scores every row the training rows' positive share.
    let overall = labels[..cut].iter().filter(|&&y| y).count() as f64 / cut as f64;
    (model.reference.focus_rate, model.reference.other_rate) = (overall, overall);
    if let Some(i) = focus_index {
        let focus = flags(train.column(i));
        let rate = |want: bool| {
            let (pos, all) = labels[..cut]
                .iter()
                .zip(&focus)
                .filter(|(_, f)| **f == want)
                .fold((0u64, 0u64), |(p, a), (y, _)| (p + u64::from(*y), a + 1));
            (all > 0).then(|| pos as f64 / all as f64)
        };
        model.reference.focus_rate = rate(true).unwrap_or(overall);
        model.reference.other_rate = rate(false).unwrap_or(overall);
    }
    if n > cut {
        let args: Vec<ColumnarValue> =
            feature_index.iter().map(|&i| ColumnarValue::Array(eval.column(i).clone())).collect();
        let p = model.predict(F, &args, n - cut)?;
        let focus = focus_index.map(|i| flags(eval.column(i)));
        let baseline = baseline_index.map(|i| scores(eval.column(i))).transpose()?;
        model.comparisons =
            model.reference.compare(p.values(), &labels[cut..], focus.as_deref(), baseline.as_deref(), 0.5);
        model.metrics = Some(model.comparisons[0].metrics.clone());
    }
    model.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(model)
}

/// A boolean column's values, NULL as false.
fn flags(column: &ArrayRef) -> Vec<bool> {
    let c = column.as_boolean();
    (0..c.len()).map(|i| c.is_valid(i) && c.value(i)).collect()
}

/// A numeric column's values as scores.
fn scores(column: &ArrayRef) -> Result<Vec<Option<f64>>> {
    let c = cast(column, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>().iter().collect())
}

/// A numeric feature (its training mean fills NULLs) or a categorical one (its levels by frequency).
fn describe_feature(name: &str, column: &ArrayRef, max_categories: usize) -> Result<Feature> {
    if is_text(column.data_type()) {
        let c = cast(column, &DataType::Utf8)?;
        let c = c.as_string::<i32>();
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for v in c.iter().flatten() {
            *counts.entry(v).or_default() += 1;
        }
        let mut by_count: Vec<(&str, u64)> = counts.into_iter().collect();
        by_count.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let baseline = by_count.first().map(|(v, _)| v.to_string());
        let levels =
            by_count.iter().skip(1).take(max_categories.saturating_sub(1)).map(|(v, _)| v.to_string()).collect();
        return Ok(Feature::Categorical { name: name.to_string(), baseline, levels });
    }
    let c = cast(column, &DataType::Float64)?;
    let c = c.as_primitive::<Float64Type>();
    let (sum, count) = c.iter().flatten().fold((0.0, 0u64), |(s, k), v| (s + v, k + 1));
    if c.iter().flatten().any(|v| !v.is_finite()) {
        return Err(bad(format!("train_retry_model: feature \"{name}\" has NaN or infinite values")));
    }
    Ok(Feature::Numeric { name: name.to_string(), fill: if count > 0 { sum / count as f64 } else { 0.0 } })
}

/// The design matrix: one row per example, one column per number and per category level.
fn design(features: &[Feature], columns: &[ArrayRef]) -> Result<Array2<f64>> {
    let n = columns.first().map_or(0, |c| c.len());
    let width: usize = features.iter().map(Feature::width).sum();
    let mut x = Array2::<f64>::zeros((n, width));
    let mut j = 0;
    for (f, c) in features.iter().zip(columns) {
        match f {
            Feature::Numeric { fill, .. } => {
                let c = cast(c, &DataType::Float64)?;
                let c = c.as_primitive::<Float64Type>();
                for (i, v) in c.iter().enumerate() {
                    x[[i, j]] = v.unwrap_or(*fill);
                }
                j += 1;
            }
            Feature::Categorical { levels, .. } => {
                let index: HashMap<&str, usize> = levels.iter().enumerate().map(|(k, l)| (l.as_str(), k)).collect();
                let c = cast(c, &DataType::Utf8)?;
                let c = c.as_string::<i32>();
                for (i, v) in c.iter().enumerate() {
                    if let Some(k) = v.and_then(|v| index.get(v)) {
                        x[[i, j + k]] = 1.0;
                    }
                }
                j += levels.len();
            }
        }
    }
    Ok(x)
}

// ---------------------------------------------------------------------------------------------------
// Explanation.

/// Rows `explain_retry` explains at most.
const EXPLAIN_MAX_ROWS: usize = 10_000;

fn explain(model: &ModelVersion, batch: &RecordBatch, schema: SchemaRef) -> Result<RecordBatch> {
    const F: &str = "explain_retry";
    if batch.num_rows() > EXPLAIN_MAX_ROWS {
        return Err(bad(format!("{F}: the query returned more than {EXPLAIN_MAX_ROWS} rows; explain fewer")));
    }
    let cols = feature_columns(model, batch, F, true)?;
    let args: Vec<ColumnarValue> = cols.iter().cloned().map(ColumnarValue::Array).collect();
    let p = model.predict(F, &args, batch.num_rows())?;
    let text_cols: Vec<ArrayRef> =
        cols.iter().map(|c| cast(c, &DataType::Utf8)).collect::<std::result::Result<_, _>>()?;
    let (mut row, mut feature, mut value, mut contribution, mut log_odds, mut probability) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let parts = model.contributions(&cols)?;
    for i in 0..batch.num_rows() {
        let z = model.raw_intercept() + parts.iter().map(|f| f[i]).sum::<f64>();
        let mut push = |f: String, v: Option<String>, c: f64| {
            row.push(i as i64 + 1);
            feature.push(f);
            value.push(v);
            contribution.push(c);
            log_odds.push(z);
            probability.push(p.value(i));
        };
        push("(baseline)".to_string(), None, model.raw_intercept());
        for ((f, c), t) in model.features.iter().zip(parts.iter().map(|f| f[i])).zip(&text_cols) {
            let t = t.as_string::<i32>();
            push(f.name().to_string(), t.is_valid(i).then(|| t.value(i).to_string()), c);
        }
    }
    one_row(
        schema,
        vec![
            Arc::new(Int64Array::from(row)),
            Arc::new(StringArray::from(feature)),
            Arc::new(StringArray::from(value)),
            Arc::new(Float64Array::from(contribution)),
            Arc::new(Float64Array::from(log_odds)),
            Arc::new(Float64Array::from(probability)),
        ],
    )
}

// ---------------------------------------------------------------------------------------------------
// The `models` table.

/// Every version of every model: `SELECT * FROM models`.
pub fn models_table(registry: Arc<Registry>) -> crate::computed::ComputedTable {
    let t = ModelsTable::new(registry);
    crate::computed::ComputedTable::new(t.schema.clone(), move || t.batch())
}

struct ModelsTable {
    registry: Arc<Registry>,
    schema: SchemaRef,
}

impl ModelsTable {
    fn new(registry: Arc<Registry>) -> ModelsTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new("created_at", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("features", DataType::Utf8, false),
            Field::new("options", DataType::Utf8, false),
            Field::new("metrics", DataType::Utf8, true),
            Field::new("deployed", DataType::Boolean, false),
            Field::new("rows_train", DataType::Int64, false),
            Field::new("auc_roc", DataType::Float64, true),
            Field::new("converged", DataType::Boolean, false),
            Field::new("split_at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("query", DataType::Utf8, false),
        ]));
        ModelsTable { registry, schema }
    }

    fn batch(&self) -> Result<RecordBatch> {
        let list = self.registry.list()?;
        let to_json = |v: &dyn erased::Json| v.json();
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(list.iter().map(|(m, _)| m.name.as_str()))),
                Arc::new(Int64Array::from_iter_values(list.iter().map(|(m, _)| m.version as i64))),
                Arc::new(TimestampMicrosecondArray::from_iter_values(list.iter().map(|(m, _)| m.created_at))),
                Arc::new(StringArray::from_iter_values(list.iter().map(|(m, _)| m.feature_list()))),
                Arc::new(StringArray::from_iter_values(list.iter().map(|(m, _)| to_json(&m.options)))),
                Arc::new(StringArray::from_iter(
                    list.iter().map(|(m, _)| m.metrics.as_ref().map(|x| metrics_json(x, &m.comparisons))),
                )),
                Arc::new(BooleanArray::from_iter(list.iter().map(|(_, d)| Some(*d)))),
                Arc::new(Int64Array::from_iter_values(list.iter().map(|(m, _)| m.rows_train as i64))),
                Arc::new(Float64Array::from_iter(list.iter().map(|(m, _)| m.metrics.as_ref().and_then(|x| x.auc_roc)))),
                Arc::new(BooleanArray::from_iter(list.iter().map(|(m, _)| Some(m.fit.converged())))),
                Arc::new(TimestampMicrosecondArray::from_iter(list.iter().map(|(m, _)| m.split_at))),
                Arc::new(StringArray::from_iter_values(list.iter().map(|(m, _)| m.query.as_str()))),
            ],
        )?)
    }
}

/// A version's held-out metrics, with the comparisons under `comparisons` when there are more than one.
fn metrics_json(m: &Metrics, comparisons: &[Comparison]) -> String {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if comparisons.len() > 1
        && let (Some(o), Ok(c)) = (v.as_object_mut(), serde_json::to_value(comparisons))
    {
        o.insert("comparisons".into(), c);
    }
    v.to_string()
}

mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Prediction.

/// `predict_retry(features...)` (the deployed version of `retry`) and `predict_model(name, version,
/// features...)` (a given version; a NULL version means the deployed one).
#[derive(Debug)]
struct Predict {
    registry: Arc<Registry>,
    pinned: bool,
    signature: Signature,
}

impl PartialEq for Predict {
    fn eq(&self, other: &Self) -> bool {
        self.pinned == other.pinned && Arc::ptr_eq(&self.registry, &other.registry)
    }
}

impl Eq for Predict {}

impl std::hash::Hash for Predict {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pinned.hash(state);
        (Arc::as_ptr(&self.registry) as usize).hash(state);
    }
}

impl Predict {
    fn retry(registry: Arc<Registry>) -> Predict {
        // Stable, not immutable: the deployed version can change between queries (a call on constants is
        // evaluated once per query, when it is planned; never cached across queries).
        Predict { registry, pinned: false, signature: Signature::variadic_any(Volatility::Stable) }
    }

    fn pinned(registry: Arc<Registry>) -> Predict {
        Predict { registry, pinned: true, signature: Signature::variadic_any(Volatility::Stable) }
    }
}

impl ScalarUDFImpl for Predict {
    fn name(&self) -> &str {
        if self.pinned { "predict_model" } else { "predict_retry" }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let (model, features) = if self.pinned {
            let (Some(ColumnarValue::Scalar(name)), Some(ColumnarValue::Scalar(version))) =
                (args.args.first(), args.args.get(1))
            else {
                return Err(bad("predict_model(name, version, features...): the name and version must be constants"));
            };
            let Some(name) = super::scalar_text(name) else {
                return Err(bad("predict_model(name, version, features...): the model name must be text"));
            };
            let version = match version {
                v if v.is_null() => None,
                v => match v.cast_to(&DataType::Int64) {
                    Ok(ScalarValue::Int64(Some(v))) => Some(version_of("predict_model", v)?),
                    _ => return Err(bad("predict_model(name, version, features...): the version must be an integer")),
                },
            };
            (self.registry.resolve(&name, version)?, &args.args[2..])
        } else {
            (self.registry.resolve("retry", None)?, &args.args[..])
        };
        if all_scalar {
            let p = model.predict(self.name(), features, 1)?;
            return Ok(ColumnarValue::Scalar(ScalarValue::Float64(Some(p.value(0)))));
        }
        Ok(ColumnarValue::Array(Arc::new(model.predict(self.name(), features, args.number_rows)?)))
    }
}

/// Validates `rows` (JSON objects keyed by feature name, or arrays in feature order) against a model
/// and predicts them: what the HTTP endpoint serves. The rows become Arrow arrays and go through the
/// same kernel as `predict_retry`.
pub fn predict_json(model: &ModelVersion, rows: &[serde_json::Value]) -> Result<Vec<f64>> {
    use serde_json::Value;
    const F: &str = "predict";
    const NULL: Value = Value::Null;
    let width = model.features.len();
    // Each row checked once, then its cells borrowed in feature order.
    let mut cells: Vec<&Value> = Vec::with_capacity(rows.len() * width);
    for (i, row) in rows.iter().enumerate() {
        match row {
            Value::Object(o) => {
                let unknown: Vec<String> = o
                    .keys()
                    .filter(|key| !model.features.iter().any(|f| f.name() == key.as_str()))
                    .map(|key| format!("\"{key}\""))
                    .collect();
                if !unknown.is_empty() {
                    return Err(bad(format!(
                        "{F}: row {}: {} has no feature {} (features: {})",
                        i + 1,
                        model.label(),
                        unknown.join(", "),
                        model.feature_list()
                    )));
                }
                cells.extend(model.features.iter().map(|f| o.get(f.name()).unwrap_or(&NULL)));
            }
            Value::Array(a) if a.len() == width => cells.extend(a.iter()),
            Value::Array(a) => {
                return Err(bad(format!(
                    "{F}: row {}: {} takes {width} features ({}), not {}",
                    i + 1,
                    model.label(),
                    model.feature_list(),
                    a.len()
                )));
            }
            _ => return Err(bad(format!("{F}: row {} must be an object or an array", i + 1))),
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(width);
    for (k, f) in model.features.iter().enumerate() {
        let column = cells.iter().skip(k).step_by(width).enumerate();
        columns.push(match f {
            Feature::Numeric { name, .. } => {
                let v: Vec<Option<f64>> = column
                    .map(|(i, v)| match v {
                        Value::Null => Ok(None),
                        Value::Bool(b) => Ok(Some(if *b { 1.0 } else { 0.0 })),
                        Value::Number(n) => Ok(n.as_f64()),
                        other => Err(bad(format!("{F}: row {}: feature \"{name}\" is a number, not {other}", i + 1))),
                    })
                    .collect::<Result<_>>()?;
                Arc::new(Float64Array::from(v))
            }
            Feature::Categorical { name, .. } => {
                let v: Vec<Option<&str>> = column
                    .map(|(i, v)| match v {
                        Value::Null => Ok(None),
                        Value::String(s) => Ok(Some(s.as_str())),
                        other => Err(bad(format!("{F}: row {}: feature \"{name}\" is text, not {other}", i + 1))),
                    })
                    .collect::<Result<_>>()?;
                Arc::new(StringArray::from(v))
            }
        });
    }
    let args: Vec<ColumnarValue> = columns.into_iter().map(ColumnarValue::Array).collect();
    Ok(model.predict(F, &args, rows.len())?.values().to_vec())
}
