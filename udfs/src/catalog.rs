//! The list of trafficdb's own functions, with their signatures: `SELECT * FROM trafficdb_functions()`
//! (as DuckDB's `duckdb_functions()`), for people and for the web console's schema browser.
//!
//! One entry per function [`crate::install`] adds to DataFusion's; a test checks that the list, the
//! registry and docs/functions.md (or docs/retry-model.md) name the same functions, so none is
//! registered undocumented or documented unregistered.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result;

/// What kind of function an entry is, as `information_schema.routines.function_type` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Scalar,
    Aggregate,
    Window,
    Table,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Scalar => "scalar",
            Kind::Aggregate => "aggregate",
            Kind::Window => "window",
            Kind::Table => "table",
        }
    }
}

/// One function: its name, kind, call syntax (optional parts in brackets), result and what it does;
/// `doc` is the page and section that explains it.
#[derive(Debug)]
pub struct Function {
    pub name: &'static str,
    pub kind: Kind,
    pub signature: &'static str,
    pub returns: &'static str,
    pub description: &'static str,
    pub doc: &'static str,
}

const fn f(
    name: &'static str,
    kind: Kind,
    signature: &'static str,
    returns: &'static str,
    description: &'static str,
    doc: &'static str,
) -> Function {
    Function { name, kind, signature, returns, description, doc }
}

use Kind::{Aggregate, Scalar, Table, Window};

const TIME: &str = "functions.md#time-buckets";
const AGG: &str = "functions.md#aggregates";
const SKETCH: &str =
    "functions.md#mergeable-percentile-sketches-latency_sketch-rollup_sketch-sketch_quantile-sketch_count";
const DATES: &str = "functions.md#date-and-time-arithmetic-as-in-postgresql";
const PG: &str = "functions.md#postgresqls-functions";
const ANOMALY: &str = "functions.md#anomaly-detection";
const MODEL: &str = "retry-model.md";

/// Every function of trafficdb's own, by section.
#[rustfmt::skip]
pub const FUNCTIONS: &[Function] = &[
    f("time_bucket", Scalar, "time_bucket(width interval, ts timestamp [, origin timestamp | offset interval])", "timestamp", "the start of the bucket of the given width that holds ts (weeks start on Mondays; months count calendar months); integers too", TIME),
    f("time_bucket_gapfill", Scalar, "time_bucket_gapfill(width interval, ts timestamp [, start timestamp, finish timestamp])", "timestamp", "as time_bucket, in a GROUP BY that emits every bucket of the range for every series, empty ones too", TIME),
    f("locf", Scalar, "locf(aggregate)", "the aggregate's type", "in a gap-filling query: an empty bucket takes the series' last value, seeded from before the range", TIME),
    f("interpolate", Scalar, "interpolate(aggregate)", "double", "in a gap-filling query: an empty bucket takes the linear interpolation of its neighbours", TIME),
    f("first", Aggregate, "first(value any, ts timestamp)", "the value's type", "the value at the earliest ts of the group", AGG),
    f("last", Aggregate, "last(value any, ts timestamp)", "the value's type", "the value at the latest ts of the group", AGG),
    f("counter_rate", Aggregate, "counter_rate(ts timestamp, value numeric)", "double", "per-second increase of a monotonic counter, resets counted as restarts from 0", AGG),
    f("latency_sketch", Aggregate, "latency_sketch(x double)", "text", "a mergeable DDSketch (1% relative accuracy) of the non-negative values, stored as text", SKETCH),
    f("rollup_sketch", Aggregate, "rollup_sketch(sketch text)", "text", "the merge of sketches: the sketch of all their values", SKETCH),
    f("sketch_quantile", Scalar, "sketch_quantile(sketch text, q double)", "double", "the q quantile (0 to 1) of a sketch, within 1%", SKETCH),
    f("sketch_count", Scalar, "sketch_count(sketch text)", "bigint", "the number of values in a sketch", SKETCH),
    f("interval_mul", Scalar, "interval_mul(i interval, factor double)", "interval", "interval × number as PostgreSQL computes it (what 3 * INTERVAL '1 minute' calls)", DATES),
    f("ceiling", Scalar, "ceiling(x numeric)", "the argument's type", "PostgreSQL's name of ceil", PG),
    f("sign", Scalar, "sign(x numeric)", "the argument's type", "PostgreSQL's name of signum: -1, 0 or 1", PG),
    f("mod", Scalar, "mod(a integer, b integer)", "integer", "remainder truncated toward zero; 22012 on division by zero", PG),
    f("div", Scalar, "div(a integer, b integer)", "integer", "quotient truncated toward zero; 22012 on division by zero", PG),
    f("width_bucket", Scalar, "width_bucket(x double, low double, high double, count integer)", "integer", "the bucket of x among count equal buckets of [low, high); 0 below, count + 1 at or above", PG),
    f("variance", Aggregate, "variance(x numeric)", "double", "PostgreSQL's name of var_samp", PG),
    f("every", Aggregate, "every(b boolean)", "boolean", "PostgreSQL's name of bool_and", PG),
    f("gen_random_uuid", Scalar, "gen_random_uuid()", "text", "a random UUID (version 4)", PG),
    f("quote_ident", Scalar, "quote_ident(t text)", "text", "t quoted as an identifier when it must be", PG),
    f("quote_literal", Scalar, "quote_literal(t text)", "text", "t as a string literal ('it''s', E'...' with backslashes)", PG),
    f("format", Scalar, "format(fmt text, args any...)", "text", "PostgreSQL's format: %s, %I, %L, %% and %n$s", PG),
    f("regexp_split_to_array", Scalar, "regexp_split_to_array(t text, pattern text)", "text[]", "t split at the matches of pattern", PG),
    f("pg_typeof", Scalar, "pg_typeof(x any)", "text", "PostgreSQL's name of the argument's type", PG),
    f("make_timestamp", Scalar, "make_timestamp(year int, month int, day int, hour int, min int, sec double)", "timestamp", "a timestamp from its fields", PG),
    f("justify_hours", Scalar, "justify_hours(i interval)", "interval", "whole days out of 24-hour spans", PG),
    f("justify_days", Scalar, "justify_days(i interval)", "interval", "30-day months out of days", PG),
    f("justify_interval", Scalar, "justify_interval(i interval)", "interval", "justify_days of justify_hours, signs made consistent", PG),
    f("age", Scalar, "age(a timestamp, b timestamp)", "interval", "a - b in years, months and days as a calendar counts them", PG),
    f("isfinite", Scalar, "isfinite(x timestamp | date | interval)", "boolean", "true: no value here is infinite", PG),
    f("clock_timestamp", Scalar, "clock_timestamp()", "timestamptz", "the time at the call (now() is the statement's start)", PG),
    f("make_interval", Scalar, "make_interval([years int, months int, weeks int, days int, hours int, mins int, secs double])", "interval", "an interval from its fields, each 0 by default (named arguments on the server)", PG),
    f("percentile_disc", Aggregate, "percentile_disc(p double) WITHIN GROUP (ORDER BY x)", "x's type", "the first value in the order whose position reaches the fraction p", PG),
    f("mode", Aggregate, "mode() WITHIN GROUP (ORDER BY x)", "x's type", "the most frequent value; of ties, the first in the order", PG),
    f("to_json", Scalar, "to_json(x any)", "json", "x as JSON", PG),
    f("to_jsonb", Scalar, "to_jsonb(x any)", "jsonb", "x as JSON", PG),
    f("json_build_object", Scalar, "json_build_object(key text, value any, ...)", "json", "an object of the key / value pairs", PG),
    f("jsonb_build_object", Scalar, "jsonb_build_object(key text, value any, ...)", "jsonb", "an object of the key / value pairs", PG),
    f("json_build_array", Scalar, "json_build_array(value any, ...)", "json", "an array of the values", PG),
    f("jsonb_build_array", Scalar, "jsonb_build_array(value any, ...)", "jsonb", "an array of the values", PG),
    f("json_agg", Aggregate, "json_agg(x any [ORDER BY ...])", "json", "the group's values as a JSON array", PG),
    f("jsonb_agg", Aggregate, "jsonb_agg(x any [ORDER BY ...])", "jsonb", "the group's values as a JSON array", PG),
    f("anomaly_zscore", Window, "anomaly_zscore(x double) OVER (...)", "double", "(x - mean) / standard deviation of the frame", ANOMALY),
    f("anomaly_mad", Window, "anomaly_mad(x double) OVER (...)", "double", "(x - median) / (1.4826 × MAD of the frame): a robust z-score", ANOMALY),
    f("anomaly_tukey", Window, "anomaly_tukey(x double [, k double]) OVER (...)", "double", "0 inside Tukey's fences (k = 1.5), else the distance beyond them in k·IQR", ANOMALY),
    f("ewma", Window, "ewma(x double, alpha double) OVER (...)", "double", "the exponentially weighted mean of the frame", ANOMALY),
    f("ewma_stddev", Window, "ewma_stddev(x double, alpha double) OVER (...)", "double", "the exponentially weighted standard deviation of the frame", ANOMALY),
    f("anomaly_ewma", Window, "anomaly_ewma(x double, alpha double) OVER (...)", "double", "(x - ewma) / ewma_stddev", ANOMALY),
    f("detect_anomalies", Table, "detect_anomalies(query text, time_column text, value_column text [, series_columns text [, options text]])", "table (ts, series columns, value, expected, lower, upper, score, is_anomaly, method)", "scores every point of a query's series against the points before it: zscore, mad, tukey, ewma or seasonal", ANOMALY),
    f("train_retry_model", Table, "train_retry_model(name text, query text [, options text])", "table (model, version, rows_train, rows_eval, auc_roc, log_loss, brier, ...)", "fits a retry model (logistic or boosted trees) on a query's rows, holding out the latest for evaluation", MODEL),
    f("predict_retry", Scalar, "predict_retry(feature any, ...)", "double", "the probability of a retry from the deployed version of the model retry, features by position", MODEL),
    f("predict_model", Scalar, "predict_model(name text, version bigint, feature any, ...)", "double", "the probability from a model's version (NULL: the deployed one)", MODEL),
    f("evaluate_model", Table, "evaluate_model(name text [, version bigint] [, query text] [, threshold double])", "table (model, version, rows, positives, auc_roc, auc_pr, log_loss, brier, ..., subset, scorer)", "a version's metrics on its held-out rows or a query's, next to simpler scorers", MODEL),
    f("roc_curve", Table, "roc_curve(name text [, version bigint] [, query text])", "table (threshold, fpr, tpr, precision)", "the ROC curve on the held-out rows or a query's, at most 200 points", MODEL),
    f("calibration", Table, "calibration(name text [, version bigint] [, query text] [, bins integer])", "table (bin, lower, upper, rows, mean_predicted, observed_rate)", "predicted against observed retry rate per bin", MODEL),
    f("model_weights", Table, "model_weights(name text [, version bigint])", "table (feature, level, weight, standardized_weight, odds_ratio)", "a logistic version's coefficients", MODEL),
    f("explain_retry", Table, "explain_retry(query text [, name text [, version bigint]])", "table (features..., contributions, log_odds, probability)", "each feature's contribution to the log-odds of every row of a query", MODEL),
    f("deploy_model", Table, "deploy_model(name text, version bigint)", "table (model, version, previous_version)", "makes a version the deployed one (writer role)", MODEL),
    f("rollback_model", Table, "rollback_model(name text)", "table (model, version, previous_version)", "deploys the version deployed before the current one (writer role)", MODEL),
    f("drop_model", Table, "drop_model(name text [, version bigint])", "table", "drops a version or the whole model (writer role)", MODEL),
    f("trafficdb_functions", Table, "trafficdb_functions()", "table (name, kind, signature, returns, description, doc)", "this list", "functions.md"),
];

/// Functions [`crate::install`] registers for the planner's own use (what `->`, `->>`, `AT TIME ZONE`
/// and scalar subqueries are planned into): not meant to be called, so not listed.
pub const INTERNAL: &[&str] = &["json_get", "json_get_text", "pg_wall_clock", "trafficdb_single_row"];

/// The table function `trafficdb_functions()`.
#[derive(Debug)]
pub struct FunctionList;

impl FunctionList {
    pub fn schema() -> Arc<Schema> {
        let text = |name| Field::new(name, DataType::Utf8, false);
        Arc::new(Schema::new(
            ["name", "kind", "signature", "returns", "description", "doc"].into_iter().map(text).collect::<Vec<_>>(),
        ))
    }
}

impl TableFunctionImpl for FunctionList {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return Err(crate::invalid_argument("trafficdb_functions() takes no arguments"));
        }
        let column = |pick: fn(&Function) -> &'static str| -> ArrayRef {
            Arc::new(FUNCTIONS.iter().map(|f| Some(pick(f))).collect::<StringArray>())
        };
        let batch = RecordBatch::try_new(
            FunctionList::schema(),
            vec![
                column(|f| f.name),
                column(|f| f.kind.as_str()),
                column(|f| f.signature),
                column(|f| f.returns),
                column(|f| f.description),
                column(|f| f.doc),
            ],
        )?;
        Ok(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::SessionStateBuilder;
    use std::collections::BTreeSet;

    fn names(state: &datafusion::execution::SessionState) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = state.scalar_functions().keys().cloned().collect();
        all.extend(state.aggregate_functions().keys().cloned());
        all.extend(state.window_functions().keys().cloned());
        all.extend(state.table_functions().keys().cloned());
        all
    }

    /// The anchor a Markdown viewer gives a heading line ("" for other lines).
    fn slug(line: &str) -> String {
        let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#').trim()) else {
            return String::new();
        };
        title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    }

    #[test]
    fn the_list_names_what_is_registered_and_documented() {
        let plain = SessionStateBuilder::new().with_default_features().build();
        let mut ours = SessionStateBuilder::new().with_default_features().build();
        let models = Arc::new(crate::model::Registry::open(Arc::new(crate::model::MemoryStore::default())));
        crate::install(&mut ours, &models).unwrap();
        let (plain, ours) = (names(&plain), names(&ours));

        let listed: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.name.to_string()).collect();
        assert_eq!(listed.len(), FUNCTIONS.len(), "a function listed twice");
        let added: BTreeSet<String> =
            ours.difference(&plain).filter(|n| !INTERNAL.contains(&n.as_str())).cloned().collect();
        assert_eq!(
            added.difference(&listed).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "registered by install() but not listed in catalog::FUNCTIONS"
        );
        assert_eq!(
            listed.difference(&ours).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "listed in catalog::FUNCTIONS but not registered"
        );
        let gone: Vec<&&str> = INTERNAL.iter().filter(|i| !ours.contains(**i)).collect();
        assert!(gone.is_empty(), "{gone:?} not registered: drop them from catalog::INTERNAL");

        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/");
        let text =
            ["functions.md", "retry-model.md"].map(|p| std::fs::read_to_string(format!("{docs}{p}")).unwrap()).concat();
        for f in FUNCTIONS {
            assert!(
                text.contains(&format!("`{}(", f.name)) || text.contains(&format!("`{}`", f.name)),
                "{} is not documented in docs/functions.md or docs/retry-model.md",
                f.name
            );
            let (page, anchor) = f.doc.split_once('#').unwrap_or((f.doc, ""));
            let page_text = std::fs::read_to_string(format!("{docs}{page}")).unwrap();
            assert!(
                anchor.is_empty() || page_text.lines().any(|l| slug(l) == anchor),
                "{}: no section #{anchor} in {page}",
                f.name
            );
            assert!(f.signature.starts_with(&format!("{}(", f.name)), "{}: signature {}", f.name, f.signature);
        }
    }
}
