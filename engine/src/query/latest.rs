//! Latest row per key, served without a full scan.
//!
//! The "last point" query — `SELECT ... FROM (SELECT *, row_number() OVER (PARTITION BY k ORDER BY ts
//! DESC) AS rn FROM t) WHERE rn = 1` — needs, for each key, only its newest row. The [`LatestPerKey`]
//! physical optimizer rule finds that shape above a stored-table scan and switches the scan to
//! *latest-per-key mode*: it reads units newest first, keeps per key the newest timestamp emitted so far,
//! and skips every unit in which no key has a newer row. Which keys a row group holds, with their newest
//! timestamps, is computed once per immutable row group and cached, so repeated queries decode only the
//! row groups that hold some key's newest row. The window, sort and filter above are left in place and
//! compute the exact answer from the (much smaller) set of rows the scan emits: for every key, the scan
//! emits its newest row (or one of several with the same timestamp), so `rn = 1` selects the same rows.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::window::StandardWindowExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec, WindowUDFExpr};

use super::key_max::LatestMode;
use super::scan::TableScanSource;

/// The physical optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct LatestPerKey;

impl PhysicalOptimizerRule for LatestPerKey {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| match rewrite(&node) {
            Some(new) => Ok(Transformed::yes(new)),
            None => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "latest_per_key"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// If `predicate` keeps only rows where column `c` is 1 (`c = 1`, `c <= 1`, `c < 2` and mirrors),
/// returns `c`'s index.
fn first_only(predicate: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    let b = predicate.downcast_ref::<BinaryExpr>()?;
    let as_int = |e: &Arc<dyn PhysicalExpr>| -> Option<i64> {
        let l = e.downcast_ref::<Literal>()?;
        match l.value().cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(v)) => Some(v),
            _ => None,
        }
    };
    if let (Some(c), Some(n)) = (b.left().downcast_ref::<Column>(), as_int(b.right())) {
        return match (b.op(), n) {
            (Operator::Eq, 1) | (Operator::LtEq, 1) | (Operator::Lt, 2) => Some(c.index()),
            _ => None,
        };
    }
    if let (Some(n), Some(c)) = (as_int(b.left()), b.right().downcast_ref::<Column>()) {
        return match (b.op(), n) {
            (Operator::Eq, 1) | (Operator::GtEq, 1) | (Operator::Gt, 2) => Some(c.index()),
            _ => None,
        };
    }
    None
}

fn is_row_number(expr: &Arc<dyn datafusion::physical_expr::window::WindowExpr>) -> bool {
    expr.as_any()
        .downcast_ref::<StandardWindowExpr>()
        .and_then(|s| {
            s.get_standard_func_expr().as_any().downcast_ref::<WindowUDFExpr>().map(|u| u.fun().name() == "row_number")
        })
        .unwrap_or(false)
}

fn rewrite(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let filter = plan.downcast_ref::<FilterExec>()?;
    let mut col = first_only(filter.predicate())?;
    // Down through projections (mapping the column) and repartitions to the window.
    let mut node = filter.input().clone();
    loop {
        if let Some(p) = node.downcast_ref::<ProjectionExec>() {
            let e = &p.expr().get(col)?.expr;
            col = e.downcast_ref::<Column>()?.index();
            node = p.input().clone();
        } else if node.downcast_ref::<RepartitionExec>().is_some()
            || node.downcast_ref::<CoalescePartitionsExec>().is_some()
        {
            node = node.children()[0].clone();
        } else {
            break;
        }
    }
    let (window_exprs, window_input) = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
        (w.window_expr().to_vec(), w.input().clone())
    } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
        (w.window_expr().to_vec(), w.input().clone())
    } else {
        return None;
    };
    let n_in = window_input.schema().fields().len();
    let wexpr = window_exprs.get(col.checked_sub(n_in)?)?;
    if !is_row_number(wexpr) {
        return None;
    }
    let [part] = wexpr.partition_by() else { return None };
    let order = wexpr.order_by();
    let first = order.first()?;
    if !first.options.descending {
        return None;
    }
    let key_name = part.downcast_ref::<Column>()?.name().to_string();
    let time_name = first.expr.downcast_ref::<Column>()?.name().to_string();
    // Below the window only order-preserving plumbing may stand between it and the scan.
    let mut below = window_input.clone();
    let scan = loop {
        if let Some(ds) = below.downcast_ref::<DataSourceExec>() {
            break ds.data_source().downcast_ref::<TableScanSource>()?.clone();
        }
        let passthrough = below.downcast_ref::<SortExec>().is_some()
            || below.downcast_ref::<RepartitionExec>().is_some()
            || below.downcast_ref::<CooperativeExec>().is_some()
            || below.downcast_ref::<CoalescePartitionsExec>().is_some();
        if !passthrough {
            return None;
        }
        below = below.children()[0].clone();
    };
    let time_col = scan.def.time_column()?;
    if scan.def.columns[time_col].name != time_name {
        return None;
    }
    let key = scan.projected_schema.index_of(&key_name).ok()?;
    let time = scan.projected_schema.index_of(&time_name).ok()?;
    // Rows the scan filters itself would have to be filtered before the newest per key is chosen.
    if scan.fetch.is_some()
        || !scan.filters.is_empty()
        || !matches!(
            scan.projected_schema.field(key).data_type(),
            DataType::Utf8
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Boolean
                | DataType::Timestamp(..)
        )
    {
        return None;
    }
    let latest = Arc::new(scan.into_latest(LatestMode { key, time }));
    // Replace the scan leaf under this filter.
    plan.clone()
        .transform_up(|n| {
            if let Some(ds) = n.downcast_ref::<DataSourceExec>()
                && ds.data_source().downcast_ref::<TableScanSource>().is_some()
            {
                return Ok(Transformed::yes(
                    DataSourceExec::from_data_source(latest.as_ref().clone()) as Arc<dyn ExecutionPlan>
                ));
            }
            Ok(Transformed::no(n))
        })
        .data()
        .ok()
}
