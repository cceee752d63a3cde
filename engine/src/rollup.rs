//! Continuous rollups: `CREATE MATERIALIZED VIEW name WITH (refresh = '1 minute') AS SELECT
//! time_bucket('1 minute', ts) AS bucket, ..., aggregates FROM source GROUP BY ...`.
//!
//! The view's rows are stored in a table of its own (a time-series table on the bucket column, with
//! its own retention), kept up to date incrementally: a refresh recomputes only the buckets from the
//! earlier of the view's watermark and the earliest source time changed since the last refresh (late
//! data, deletes; the engine tracks it per view, durably with each flush), up to the last bucket that is
//! complete (`now - lag`). Recomputing means deleting the view's rows of that range and appending the
//! query's rows for it, then moving the watermark; a crash in between repeats the refresh, which gives
//! the same rows. The source may be another rollup (an hourly view over a minutely one).

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::sql::sqlparser::ast::{
    self, CreateView, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SelectItem, SetExpr, TableFactor,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, SqlState};
use crate::types::parse_duration_us;

/// The catalog object holding every rollup's definition and progress.
pub const ROLLUPS_KEY: &str = "rollups";

/// A continuous rollup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    pub name: String,
    /// The table the query reads (a stored time-series table, possibly another rollup's).
    pub source: String,
    /// The source's time column, which the bucket is taken of.
    pub source_time: String,
    /// The view's bucket column (its first output column, its table's time column).
    pub bucket_column: String,
    pub bucket_us: i64,
    /// How often the background worker refreshes it.
    pub refresh_us: i64,
    /// A bucket is complete (and computed) once `now - lag` has passed its end.
    pub lag_us: i64,
    /// The `SELECT`.
    pub query: String,
    /// Buckets before this are computed (`None`: nothing yet).
    pub watermark_us: Option<i64>,
    /// Reads answer the stored buckets plus the query over the raw rows they lack
    /// ([`crate::query::realtime`]); `WITH (realtime = false)`: the stored buckets alone.
    #[serde(default = "realtime_default")]
    pub realtime: bool,
}

fn realtime_default() -> bool {
    true
}

/// The options of `CREATE MATERIALIZED VIEW ... WITH (...)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub refresh_us: i64,
    pub lag_us: i64,
    pub retention_us: Option<i64>,
    pub realtime: bool,
}

fn unsupported(message: impl Into<String>) -> Error {
    Error::invalid(SqlState::NotSupported, message.into())
}

const SHAPE: &str = "a continuous rollup is SELECT time_bucket('<width>', <time column>) AS <name>, ... FROM <one stored \
                     time-series table> [WHERE ...] GROUP BY ...";

/// Reads the source, the bucket width and the columns off a `CREATE MATERIALIZED VIEW`'s query.
pub fn analyse(cv: &CreateView) -> Result<(String, String, i64, String)> {
    let SetExpr::Select(select) = cv.query.body.as_ref() else { return Err(unsupported(SHAPE)) };
    if cv.query.with.is_some() || cv.query.order_by.is_some() || cv.query.limit_clause.is_some() {
        return Err(unsupported(format!("{SHAPE} (no WITH, ORDER BY or LIMIT)")));
    }
    let [from] = select.from.as_slice() else { return Err(unsupported(SHAPE)) };
    if !from.joins.is_empty() {
        return Err(unsupported(format!("{SHAPE} (no joins)")));
    }
    let TableFactor::Table { name, args: None, .. } = &from.relation else { return Err(unsupported(SHAPE)) };
    let source =
        name.0.last().map(|p| p.to_string().trim_matches('"').to_string()).ok_or_else(|| unsupported(SHAPE))?;
    match &select.group_by {
        GroupByExpr::Expressions(e, _) if !e.is_empty() => {}
        _ => return Err(unsupported(format!("{SHAPE} (GROUP BY the bucket and the keys)"))),
    }
    let (expr, alias) = match select.projection.first() {
        Some(SelectItem::ExprWithAlias { expr, alias }) => (expr, Some(alias.value.clone())),
        Some(SelectItem::UnnamedExpr(expr)) => (expr, None),
        _ => return Err(unsupported(SHAPE)),
    };
    let ast::Expr::Function(f) = expr else { return Err(unsupported(SHAPE)) };
    if !f.name.to_string().eq_ignore_ascii_case("time_bucket") {
        return Err(unsupported(SHAPE));
    }
    let FunctionArguments::List(list) = &f.args else { return Err(unsupported(SHAPE)) };
    let args: Vec<&ast::Expr> = list
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    let [width, column] = args.as_slice() else {
        return Err(unsupported(format!("{SHAPE} (time_bucket with a width and a column, no origin)")));
    };
    let text = match width {
        ast::Expr::Interval(iv) if iv.leading_field.is_none() => literal_text(&iv.value),
        other => literal_text(other),
    }
    .ok_or_else(|| unsupported(format!("{SHAPE} (the width a literal such as '1 minute')")))?;
    let bucket_us = parse_duration_us(&text)?;
    if bucket_us > 86_400_000_000 * 7 {
        return Err(unsupported("rollup buckets are at most a week wide (months and years are not fixed widths)"));
    }
    let ast::Expr::Identifier(col) = column else {
        return Err(unsupported(format!("{SHAPE} (time_bucket of the source's time column)")));
    };
    let bucket_column = alias.unwrap_or_else(|| "time_bucket".to_string());
    Ok((source, col.value.clone(), bucket_us, bucket_column))
}

fn literal_text(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Parses the `WITH (...)` options: refresh, lag, retention, realtime (the rest is refused).
pub fn options(kv: &[(String, String)]) -> Result<Options> {
    let (mut refresh, mut lag, mut retention, mut realtime) = (60_000_000, 0, None, true);
    for (k, v) in kv {
        match k.as_str() {
            "refresh" => refresh = parse_duration_us(v)?,
            "lag" => {
                lag = match v.trim() {
                    "0" | "" => 0,
                    v => parse_duration_us(v)?,
                }
            }
            "retention" => retention = Some(parse_duration_us(v)?),
            "realtime" => {
                realtime = match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "on" | "yes" => true,
                    "false" | "off" | "no" => false,
                    other => {
                        return Err(Error::invalid(
                            SqlState::InvalidParameter,
                            format!("realtime must be true or false, not \"{other}\""),
                        ));
                    }
                }
            }
            other => {
                return Err(Error::invalid(
                    SqlState::InvalidParameter,
                    format!("unknown materialized view option \"{other}\" (known: refresh, lag, retention, realtime)"),
                ));
            }
        }
    }
    Ok(Options { refresh_us: refresh, lag_us: lag, retention_us: retention, realtime })
}

/// `plan` with the rows of `source` limited to `from <= time < to`.
pub fn restrict(plan: LogicalPlan, source: &str, time: &str, from: i64, to: i64) -> Result<LogicalPlan> {
    let out = plan.transform_up(|node| {
        let LogicalPlan::TableScan(scan) = &node else { return Ok(Transformed::no(node)) };
        if scan.table_name.table() != source {
            return Ok(Transformed::no(node));
        }
        let tz = match scan.source.schema().field_with_name(time).map(|f| f.data_type().clone()) {
            Ok(datafusion::arrow::datatypes::DataType::Timestamp(_, tz)) => tz,
            _ => None,
        };
        let column = Expr::Column(Column::new(Some(scan.table_name.clone()), time));
        let range = column
            .clone()
            .gt_eq(lit(ScalarValue::TimestampMicrosecond(Some(from), tz.clone())))
            .and(column.lt(lit(ScalarValue::TimestampMicrosecond(Some(to), tz))));
        let filtered = LogicalPlanBuilder::from(node).filter(range)?.build()?;
        Ok(Transformed::yes(filtered))
    })?;
    Ok(out.data)
}

/// Floors `t` to a multiple of `width`.
pub fn floor(t: i64, width: i64) -> i64 {
    t.div_euclid(width) * width
}

pub type Rollups = Vec<Rollup>;

pub fn load(engine: &crate::Engine) -> Rollups {
    engine.object(ROLLUPS_KEY).and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default()
}

/// The rollup named `name`, if there is one: only its entry is copied and parsed (every table lookup
/// asks).
pub fn find(engine: &crate::Engine, name: &str) -> Option<Rollup> {
    let entry = engine.with_object(ROLLUPS_KEY, |all| {
        all?.as_array()?.iter().find(|r| r.get("name").and_then(serde_json::Value::as_str) == Some(name)).cloned()
    })?;
    serde_json::from_value(entry).ok()
}

pub fn save(engine: &crate::Engine, rollups: &Rollups) -> Result<()> {
    let v = serde_json::to_value(rollups).map_err(|e| Error::invalid(SqlState::InvalidParameter, e.to_string()))?;
    engine.put_object(ROLLUPS_KEY, Some(v))
}

pub fn undefined(name: &str) -> Error {
    Error::invalid(SqlState::UndefinedTable, format!("materialized view \"{name}\" does not exist"))
}
