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

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
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

use super::scan::{TableScanSource, Unit};

/// A key value, hashable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Null,
    Int(i64),
    Text(Box<str>),
}

/// For one unit: each key it holds, with its newest timestamp and the row holding it.
pub(crate) type KeyMax = HashMap<Key, (i64, u32)>;

/// Which columns (indices into the projected schema) latest-per-key mode works on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatestMode {
    pub key: usize,
    pub time: usize,
}

fn keys_of(array: &ArrayRef) -> Option<Vec<Key>> {
    let n = array.len();
    match array.data_type() {
        DataType::Utf8 => {
            let s = array.as_string::<i32>();
            Some((0..n).map(|i| if s.is_null(i) { Key::Null } else { Key::Text(s.value(i).into()) }).collect())
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Boolean
        | DataType::Timestamp(..) => {
            let a = cast(array, &DataType::Int64).ok()?;
            let p = a.as_primitive::<Int64Type>();
            Some((0..n).map(|i| if p.is_null(i) { Key::Null } else { Key::Int(p.value(i)) }).collect())
        }
        _ => None,
    }
}

/// Computes the newest timestamp (and its row) of every key in a batch.
pub(crate) fn key_max(keys: &ArrayRef, times: &ArrayRef) -> Option<KeyMax> {
    let keys = keys_of(keys)?;
    let t = cast(times, &DataType::Int64).ok()?;
    let t = t.as_primitive::<Int64Type>();
    let mut out: KeyMax = HashMap::new();
    for (row, k) in keys.into_iter().enumerate() {
        let ts = t.value(row);
        let e = out.entry(k).or_insert((ts, row as u32));
        if ts > e.0 {
            *e = (ts, row as u32);
        }
    }
    Some(out)
}

/// The per-unit key map: cached for row groups of sealed segments (they never change).
pub(crate) fn unit_key_max(src: &TableScanSource, unit: &Unit, mode: LatestMode) -> Result<Option<Arc<KeyMax>>> {
    let key_col = src.projection[mode.key];
    let time_col = src.projection[mode.time];
    match unit {
        Unit::Mem { batch } => Ok(key_max(batch.column(key_col), batch.column(time_col)).map(Arc::new)),
        Unit::RowGroup { seg, rg } => {
            if let Some(hit) = seg.segment.cached_key_max(*rg, key_col, time_col) {
                return Ok(Some(hit));
            }
            let schema = Arc::new(src.schema.project(&[key_col, time_col])?);
            let b = seg.segment.read(*rg, &[key_col, time_col], &schema)?;
            let Some(m) = key_max(b.column(0), b.column(1)) else { return Ok(None) };
            let m = Arc::new(m);
            seg.segment.cache_key_max(*rg, key_col, time_col, m.clone());
            Ok(Some(m))
        }
    }
}

/// Per-partition state of a latest-per-key scan.
#[derive(Debug, Default)]
pub(crate) struct LatestState {
    best: HashMap<Key, i64>,
}

impl LatestState {
    /// The rows of a unit to emit (those holding a key's newest timestamp beyond what was emitted), or
    /// an empty list if the unit has nothing newer for any key. Records them as emitted.
    pub fn select(&mut self, m: &KeyMax) -> Vec<u32> {
        let mut rows = Vec::new();
        for (k, &(ts, row)) in m {
            let newer = self.best.get(k).is_none_or(|&b| ts > b);
            if newer {
                self.best.insert(k.clone(), ts);
                rows.push(row);
            }
        }
        rows.sort_unstable();
        rows
    }
}

/// Takes the chosen rows of a decoded unit.
pub(crate) fn take_rows(batch: &RecordBatch, rows: Vec<u32>) -> Result<RecordBatch> {
    Ok(take_record_batch(batch, &UInt32Array::from(rows))?)
}

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
    if scan.fetch.is_some()
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
