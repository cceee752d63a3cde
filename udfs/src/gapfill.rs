//! Gap filling: `time_bucket_gapfill(width, ts [, start, finish])` in a query's GROUP BY, with
//! `locf(aggregate)` (last observation carried forward) and `interpolate(aggregate)` (linear) in its
//! SELECT list, as TimescaleDB has them.
//!
//! The query is rewritten before planning into plain SQL: the aggregation by `time_bucket`, a grid of
//! every bucket of the range for every series (the other GROUP BY columns) seen in it, a left join of
//! the two, and window functions over each series for `locf` and `interpolate`. The range comes from
//! `start` / `finish` when given, else from the WHERE clause's bounds on the time column (`ts >= a AND
//! ts < b`, `ts BETWEEN a AND b`). `locf` starts from the series' last value before the range (read
//! from the rows before it, with the rest of the WHERE clause), so the first buckets are filled too.
//! Buckets come out as microsecond timestamps, the engine's time type.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query, SelectItem,
    SetExpr, Statement, Value, VisitMut, VisitorMut, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use crate::sqlstate::SqlState;
use crate::{SqlError, invalid_argument};

/// `time_bucket_gapfill`, `locf` and `interpolate` outside a gap-filling query (in a subquery, a
/// WHERE clause, ...): planning them fails with a message saying where they belong.
pub fn placeholders() -> Vec<Arc<ScalarUDF>> {
    ["time_bucket_gapfill", "locf", "interpolate"]
        .into_iter()
        .map(|name| {
            Arc::new(ScalarUDF::from(Placeholder { name, signature: Signature::variadic_any(Volatility::Immutable) }))
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Placeholder {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for Placeholder {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Err(invalid_argument(format!(
            "{} works only in the SELECT list of a query grouped by time_bucket_gapfill(width, ts [, start, finish]) \
             (docs/functions.md)",
            self.name
        )))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        Err(invalid_argument(format!("{} works only in a gap-filling query", self.name)))
    }
}

fn error(message: impl Into<String>) -> SqlError {
    SqlError { code: SqlState::InvalidParameter, message: message.into() }
}

/// Rewrites the statements of `sql` that use `time_bucket_gapfill` (at any depth: subqueries, CTEs,
/// views); `None` when none does.
pub fn rewrite_sql(sql: &str) -> Result<Option<String>, SqlError> {
    // Every statement passes here: look for the name without copying the text.
    const NAME: &[u8] = b"time_bucket_gapfill";
    if !sql.as_bytes().windows(NAME.len()).any(|w| w.eq_ignore_ascii_case(NAME)) {
        return Ok(None);
    }
    // A statement that does not parse is left to the planner, which reports it.
    let Ok(mut stmts) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else { return Ok(None) };
    let mut rewriter = Rewriter { changed: false };
    if let ControlFlow::Break(e) = stmts.visit(&mut rewriter) {
        return Err(e);
    }
    Ok(rewriter.changed.then(|| stmts.iter().map(ToString::to_string).collect::<Vec<_>>().join(";\n")))
}

struct Rewriter {
    changed: bool,
}

impl VisitorMut for Rewriter {
    type Break = SqlError;

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<SqlError> {
        match rewrite_query(query) {
            Err(e) => ControlFlow::Break(e),
            Ok(None) => ControlFlow::Continue(()),
            Ok(Some(new)) => {
                let parsed = match Parser::parse_sql(&PostgreSqlDialect {}, &new) {
                    Ok(p) => p,
                    Err(e) => {
                        return ControlFlow::Break(error(format!(
                            "time_bucket_gapfill: internal rewrite failed ({e}): {new}"
                        )));
                    }
                };
                let Some(Statement::Query(q)) = parsed.into_iter().next() else {
                    return ControlFlow::Break(error("time_bucket_gapfill: internal rewrite produced no query"));
                };
                *query = *q;
                self.changed = true;
                ControlFlow::Continue(())
            }
        }
    }
}

fn function_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Function(f) => Some(f.name.to_string().to_ascii_lowercase()),
        _ => None,
    }
}

fn function_args(e: &Expr) -> Vec<Expr> {
    let Expr::Function(f) = e else { return Vec::new() };
    let FunctionArguments::List(list) = &f.args else { return Vec::new() };
    list.args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Fill {
    None,
    Locf,
    Interpolate,
}

struct Item {
    expr: Expr,
    name: String,
}

fn conjuncts(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other.clone()),
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn rewrite_query(q: &Query) -> Result<Option<String>, SqlError> {
    let SetExpr::Select(select) = q.body.as_ref() else { return Ok(None) };
    let position = select.projection.iter().position(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            function_name(e).as_deref() == Some("time_bucket_gapfill")
        }
        _ => false,
    });
    let Some(bucket_pos) = position else { return Ok(None) };
    if q.with.is_some() || select.distinct.is_some() {
        return Err(error(
            "time_bucket_gapfill: WITH and DISTINCT are not supported in the same query; use a subquery",
        ));
    }
    let items: Vec<Item> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => {
                let name = match e {
                    Expr::Identifier(i) => i.value.clone(),
                    Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.clone()).unwrap_or_default(),
                    Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("time_bucket_gapfill") => {
                        "time_bucket_gapfill".to_string()
                    }
                    other => other.to_string(),
                };
                Ok(Item { expr: e.clone(), name })
            }
            SelectItem::ExprWithAlias { expr, alias } => Ok(Item { expr: expr.clone(), name: alias.value.clone() }),
            _ => Err(error("time_bucket_gapfill: list the columns (no *) in a gap-filling query")),
        })
        .collect::<Result<_, _>>()?;
    let args = function_args(&items[bucket_pos].expr);
    if !(2..=4).contains(&args.len()) || args.len() == 3 {
        return Err(error("time_bucket_gapfill(width, ts [, start, finish]) takes 2 or 4 arguments"));
    }
    let (width, ts) = (&args[0], &args[1]);
    let ts_text = ts.to_string();

    // Which items are GROUP BY keys: named, numbered or repeated in GROUP BY.
    let GroupByExpr::Expressions(groups, _) = &select.group_by else {
        return Err(error("time_bucket_gapfill: GROUP BY ALL is not supported"));
    };
    let mut is_key = vec![false; items.len()];
    for g in groups {
        let found = match g {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<usize>().ok().filter(|&i| i >= 1 && i <= items.len()).map(|i| i - 1),
                _ => None,
            },
            Expr::Identifier(i) => items.iter().position(|it| it.name == i.value || it.expr.to_string() == i.value),
            other => items.iter().position(|it| it.expr.to_string() == other.to_string()),
        };
        match found {
            Some(i) if i == bucket_pos => {}
            Some(i) => is_key[i] = true,
            None => return Err(error(format!("time_bucket_gapfill: GROUP BY {g} must also be in the SELECT list"))),
        }
    }

    // The range: start and finish, else the WHERE clause's bounds on the time column.
    let mut rest = Vec::new();
    if let Some(w) = &select.selection {
        conjuncts(w, &mut rest);
    }
    let (mut start, mut finish): (Option<String>, Option<(String, bool)>) = (None, None);
    if args.len() == 4 {
        start = Some(args[2].to_string());
        finish = Some((args[3].to_string(), false));
    }
    let mut others = Vec::new();
    for c in rest {
        let bound = match &c {
            Expr::BinaryOp { left, op, right } if left.to_string() == ts_text => match op {
                BinaryOperator::GtEq | BinaryOperator::Gt => Some((Some(right.to_string()), None)),
                BinaryOperator::Lt => Some((None, Some((right.to_string(), false)))),
                BinaryOperator::LtEq => Some((None, Some((right.to_string(), true)))),
                _ => None,
            },
            Expr::BinaryOp { left, op, right } if right.to_string() == ts_text => match op {
                BinaryOperator::LtEq | BinaryOperator::Lt => Some((Some(left.to_string()), None)),
                BinaryOperator::Gt => Some((None, Some((left.to_string(), false)))),
                BinaryOperator::GtEq => Some((None, Some((left.to_string(), true)))),
                _ => None,
            },
            Expr::Between { expr, negated: false, low, high } if expr.to_string() == ts_text => {
                Some((Some(low.to_string()), Some((high.to_string(), true))))
            }
            _ => None,
        };
        match bound {
            Some((s, f)) => {
                if args.len() == 2 {
                    start = s.or(start);
                    finish = f.or(finish);
                }
            }
            None => others.push(c.to_string()),
        }
    }
    let (Some(start), Some((finish, finish_inclusive))) = (start, finish) else {
        return Err(error(
            "time_bucket_gapfill needs a time range: give start and finish, or bound the time column in WHERE \
             (ts >= ... AND ts < ...)",
        ));
    };

    // Keys and values. A value item is one aggregate column, or an expression around locf(...) /
    // interpolate(...) calls, each of which fills its own column.
    let keys: Vec<usize> = (0..items.len()).filter(|&i| is_key[i]).collect();
    let mut values: Vec<(Fill, Expr)> = Vec::new();
    let mut templates: Vec<Option<(String, Vec<usize>)>> = vec![None; items.len()];
    for (i, item) in items.iter().enumerate() {
        if i == bucket_pos || is_key[i] {
            continue;
        }
        let mut expr = item.expr.clone();
        let mut fills: Vec<usize> = Vec::new();
        let mut bad = None;
        let _ = visit_expressions_mut(&mut expr, |e: &mut Expr| {
            let fill = match function_name(e).as_deref() {
                Some("locf") => Fill::Locf,
                Some("interpolate") => Fill::Interpolate,
                _ => return ControlFlow::<()>::Continue(()),
            };
            let a = function_args(e);
            if a.len() != 1 {
                bad = Some(error("locf(value) and interpolate(value) take one argument"));
                return ControlFlow::Continue(());
            }
            fills.push(values.len());
            *e = Expr::Identifier(Ident::new(format!("__gf_fill{}", values.len())));
            values.push((fill, a[0].clone()));
            ControlFlow::Continue(())
        });
        if let Some(e) = bad {
            return Err(e);
        }
        if fills.is_empty() {
            fills.push(values.len());
            templates[i] = Some((format!("__gf_fill{}", values.len()), fills));
            values.push((Fill::None, item.expr.clone()));
        } else {
            templates[i] = Some((expr.to_string(), fills));
        }
    }

    let from = select.from.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let where_all = select.selection.as_ref().map(|w| format!(" WHERE {w}")).unwrap_or_default();
    let having = select.having.as_ref().map(|h| format!(" HAVING {h}")).unwrap_or_default();
    let bucket = format!("time_bucket({width}, {ts_text})");
    let k = |j: usize| format!("__gf_k{j}");
    let v = |j: usize| format!("__gf_v{j}");
    let key_cols: Vec<String> = (0..keys.len()).map(k).collect();
    let group_positions: Vec<String> = (1..=keys.len() + 1).map(|p| p.to_string()).collect();

    let mut agg_items = vec![format!("{bucket} AS __gf_bucket")];
    agg_items.extend(keys.iter().enumerate().map(|(j, &i)| format!("{} AS {}", items[i].expr, k(j))));
    agg_items.extend(values.iter().enumerate().map(|(j, (_, e))| format!("{e} AS {}", v(j))));
    let mut ctes = vec![format!(
        "__gf_agg AS (SELECT {} FROM {from}{where_all} GROUP BY {}{having})",
        agg_items.join(", "),
        group_positions.join(", ")
    )];
    let last = if finish_inclusive {
        format!("CAST({finish} AS TIMESTAMP)")
    } else {
        format!("CAST({finish} AS TIMESTAMP) - INTERVAL '1 microsecond'")
    };
    let series = format!("generate_series(time_bucket({width}, CAST({start} AS TIMESTAMP)), {last}, {width})");
    if keys.is_empty() {
        ctes.push(format!("__gf_grid AS (SELECT arrow_cast(g.value, 'Timestamp(Microsecond, None)') AS __gf_bucket FROM {series} AS g(value))"));
    } else {
        ctes.push(format!("__gf_keys AS (SELECT DISTINCT {} FROM __gf_agg)", key_cols.join(", ")));
        ctes.push(format!("__gf_grid AS (SELECT arrow_cast(g.value, 'Timestamp(Microsecond, None)') AS __gf_bucket, k.* FROM {series} AS g(value) CROSS JOIN __gf_keys AS k)"));
    }
    let seeds: Vec<usize> = (0..values.len()).filter(|&j| values[j].0 == Fill::Locf).collect();
    if !seeds.is_empty() {
        // The last bucket before the range, per series.
        let mut prev_where = others.clone();
        prev_where.push(format!("{ts_text} < CAST({start} AS TIMESTAMP)"));
        let mut items_prev: Vec<String> =
            keys.iter().enumerate().map(|(j, &i)| format!("{} AS {}", items[i].expr, k(j))).collect();
        items_prev.extend(seeds.iter().map(|&j| format!("{} AS {}", values[j].1, v(j))));
        let partition = if keys.is_empty() {
            String::new()
        } else {
            format!("PARTITION BY {} ", keys.iter().map(|&i| items[i].expr.to_string()).collect::<Vec<_>>().join(", "))
        };
        items_prev.push(format!("row_number() OVER ({partition}ORDER BY {bucket} DESC) AS __gf_rn"));
        let mut group = vec![bucket.clone()];
        group.extend(keys.iter().map(|&i| items[i].expr.to_string()));
        ctes.push(format!(
            "__gf_prev AS (SELECT * FROM (SELECT {} FROM {from} WHERE {} GROUP BY {}{having}) AS p WHERE __gf_rn = 1)",
            items_prev.join(", "),
            prev_where.join(" AND "),
            group.join(", ")
        ));
    }
    // The grid joined with the aggregates, and each series' neighbours for locf and interpolate.
    let on: Vec<String> = std::iter::once("a.__gf_bucket = g.__gf_bucket".to_string())
        .chain(key_cols.iter().map(|c| format!("a.{c} IS NOT DISTINCT FROM g.{c}")))
        .collect();
    let partition = if keys.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {} ", key_cols.iter().map(|c| format!("g.{c}")).collect::<Vec<_>>().join(", "))
    };
    let before = format!("OVER ({partition}ORDER BY g.__gf_bucket ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)");
    let after = format!("OVER ({partition}ORDER BY g.__gf_bucket ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)");
    let mut filled = vec!["g.__gf_bucket".to_string()];
    filled.extend(key_cols.iter().map(|c| format!("g.{c}")));
    for (j, (fill, _)) in values.iter().enumerate() {
        let c = v(j);
        filled.push(format!("a.{c}"));
        match fill {
            Fill::None => {}
            Fill::Locf => filled.push(format!("last_value(a.{c}) IGNORE NULLS {before} AS {c}_prev")),
            Fill::Interpolate => {
                let t = "extract(epoch FROM g.__gf_bucket)";
                filled.push(format!("last_value(a.{c}) IGNORE NULLS {before} AS {c}_pv"));
                filled.push(format!(
                    "last_value(CASE WHEN a.{c} IS NOT NULL THEN {t} END) IGNORE NULLS {before} AS {c}_pt"
                ));
                filled.push(format!("first_value(a.{c}) IGNORE NULLS {after} AS {c}_nv"));
                filled.push(format!(
                    "first_value(CASE WHEN a.{c} IS NOT NULL THEN {t} END) IGNORE NULLS {after} AS {c}_nt"
                ));
            }
        }
    }
    ctes.push(format!(
        "__gf_filled AS (SELECT {} FROM __gf_grid AS g LEFT JOIN __gf_agg AS a ON {})",
        filled.join(", "),
        on.join(" AND ")
    ));

    let filled_value = |j: usize| -> String {
        let c = v(j);
        match values[j].0 {
            Fill::None => format!("f.{c}"),
            Fill::Locf => format!("COALESCE(f.{c}_prev, p.{c})"),
            Fill::Interpolate => format!(
                "(CASE WHEN f.{c} IS NOT NULL THEN f.{c} WHEN f.{c}_pt IS NULL OR f.{c}_nt IS NULL THEN NULL \
                 ELSE f.{c}_pv + (f.{c}_nv - f.{c}_pv) * (extract(epoch FROM f.__gf_bucket) - f.{c}_pt) \
                 / (f.{c}_nt - f.{c}_pt) END)"
            ),
        }
    };
    let mut out = Vec::new();
    let mut key_j = 0;
    for (i, item) in items.iter().enumerate() {
        let name = quote(&item.name);
        if i == bucket_pos {
            out.push(format!("f.__gf_bucket AS {name}"));
        } else if is_key[i] {
            out.push(format!("f.{} AS {name}", k(key_j)));
            key_j += 1;
        } else if let Some((template, fills)) = &templates[i] {
            // Longest placeholder names first, so __gf_fill1 does not replace part of __gf_fill10.
            let mut text = template.clone();
            let mut order = fills.clone();
            order.sort_by(|a, b| b.cmp(a));
            for j in order {
                text = text.replace(&format!("__gf_fill{j}"), &filled_value(j));
            }
            out.push(format!("{text} AS {name}"));
        }
    }
    let prev_join = if seeds.is_empty() {
        String::new()
    } else if keys.is_empty() {
        " LEFT JOIN __gf_prev AS p ON true".to_string()
    } else {
        format!(
            " LEFT JOIN __gf_prev AS p ON {}",
            key_cols.iter().map(|c| format!("p.{c} IS NOT DISTINCT FROM f.{c}")).collect::<Vec<_>>().join(" AND ")
        )
    };
    let order = match &q.order_by {
        Some(o) => format!(" {o}"),
        None => {
            let mut positions: Vec<String> = keys.iter().map(|&i| (i + 1).to_string()).collect();
            positions.push((bucket_pos + 1).to_string());
            format!(" ORDER BY {}", positions.join(", "))
        }
    };
    let limit = q.limit_clause.as_ref().map(|l| format!(" {l}")).unwrap_or_default();
    Ok(Some(format!(
        "WITH {} SELECT {} FROM __gf_filled AS f{prev_join}{order}{limit}",
        ctes.join(", "),
        out.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
    use datafusion::prelude::SessionContext;
    use std::collections::HashMap;
    use std::sync::Arc;

    const MINUTE: i64 = 60_000_000;
    const T0: i64 = 1_704_067_200_000_000; // 2024-01-01 00:00:00

    fn ctx(points: &[(i64, u8, f64)]) -> SessionContext {
        let ctx = SessionContext::new();
        let mut state = ctx.state();
        let models = Arc::new(crate::model::Registry::open(Arc::new(crate::model::MemoryStore::default())));
        crate::install(&mut state, &models).expect("install");
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from_iter_values(points.iter().map(|p| T0 + p.0))),
                Arc::new(StringArray::from_iter_values(points.iter().map(|p| format!("k{}", p.1)))),
                Arc::new(Float64Array::from_iter_values(points.iter().map(|p| p.2))),
            ],
        )
        .expect("batch");
        ctx.register_batch("m", batch).expect("register");
        ctx
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Every bucket of the range appears exactly once per series seen in it, in order, and locf
        /// never leaves a NULL after a series' first value.
        #[test]
        fn every_bucket_once_per_series(
            points in proptest::collection::vec((0i64..600 * MINUTE, 0u8..4, -100.0f64..100.0), 1..60),
            width_min in 1i64..30,
            from_min in 0i64..300,
            span_min in 1i64..400,
        ) {
            let (from, to) = (from_min * MINUTE, (from_min + span_min) * MINUTE);
            let sql = format!(
                "SELECT time_bucket_gapfill(INTERVAL '{width_min} minutes', ts) AS b, k, locf(avg(v)) AS l, \
                 interpolate(avg(v)) AS i FROM m WHERE ts >= to_timestamp_micros({}) AND ts < to_timestamp_micros({}) \
                 GROUP BY b, k",
                T0 + from, T0 + to
            );
            let sql = super::rewrite_sql(&sql).expect("rewrite").expect("rewritten");
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let batches = rt.block_on(async { ctx(&points).sql(&sql).await?.collect().await }).expect("query");
            // The buckets time_bucket puts [from, to) in, and the series with a point in range.
            let w = width_min * MINUTE;
            let origin = 946_857_600_000_000i64; // 2000-01-03
            let first = origin + (T0 + from - origin).div_euclid(w) * w;
            let buckets: Vec<i64> = (0..).map(|n| first + n * w).take_while(|b| *b < T0 + to).collect();
            let mut keys: Vec<String> = points.iter().filter(|p| p.0 >= from && p.0 < to).map(|p| format!("k{}", p.1)).collect();
            keys.sort();
            keys.dedup();
            // Rows come ordered by series, then bucket (the default order of a gap-filling query).
            let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
            let mut carried: HashMap<String, bool> = HashMap::new();
            for b in &batches {
                let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
                let k = datafusion::arrow::compute::cast(b.column(1), &DataType::Utf8).expect("text");
                let k = k.as_string::<i32>();
                let l = b.column(2).as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                for r in 0..b.num_rows() {
                    let key = k.value(r).to_string();
                    let had = carried.entry(key.clone()).or_default();
                    proptest::prop_assert!(!(*had && l.is_null(r)), "locf lost the value of {} at {}", key, ts.value(r));
                    *had |= l.is_valid(r);
                    let series = seen.entry(key).or_default();
                    proptest::prop_assert!(series.last().is_none_or(|p| *p < ts.value(r)), "out of order");
                    series.push(ts.value(r));
                }
            }
            let mut got: Vec<&String> = seen.keys().collect();
            got.sort();
            proptest::prop_assert_eq!(got, keys.iter().collect::<Vec<_>>());
            for (k, series) in seen {
                proptest::prop_assert_eq!(&series, &buckets, "series {}", k);
            }
        }
    }
}
