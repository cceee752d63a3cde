//! The scan: a DataFusion [`DataSource`] over a table snapshot. Work is cut into units (a row group of a
//! sealed segment, or a memtable batch). Units are pruned when the plan is made, with the query's filters
//! against per-row-group min / max statistics, and again while it runs, with dynamic filters that
//! DataFusion pushes down (a TopK's current threshold, for example). Partitions pull units from a shared
//! cursor, so both cores stay busy and a newest-first scan reads newest units first.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, AsArray, RecordBatchOptions};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::compute::{cast, filter as arrow_filter, prep_null_mask_filter};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Column, ColumnStatistics, DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::source::DataSource;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::{DynamicFilterTracking, EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_expr_common::physical_expr::{snapshot_generation, snapshot_physical_expr};
use datafusion::physical_expr_common::sort_expr::PhysicalSortExpr;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::expressions::Column as ColumnExpr;
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayFormatType, SortOrderPushdownResult};

use super::codes::Symbols;
use super::key_max::{KeyMax, LatestMode, LatestState, key_max, take_rows};
use crate::engine::{ColumnBounds, MemBatch, SegmentHandle};
use crate::segment::Stat;
use crate::types::TableDef;

/// One piece of work.
#[derive(Debug, Clone)]
pub(crate) enum Unit {
    RowGroup { seg: Arc<SegmentHandle>, rg: usize },
    Mem { batch: MemBatch },
}

impl Unit {
    pub(crate) fn rows(&self) -> usize {
        match self {
            Unit::RowGroup { seg, rg } => seg.segment.footer.row_groups[*rg].rows as usize,
            Unit::Mem { batch } => batch.num_rows(),
        }
    }

    /// The largest time value the unit may hold, for newest-first ordering.
    pub(crate) fn max_time(&self, time_col: Option<usize>) -> i64 {
        match (self, time_col) {
            (Unit::RowGroup { seg, rg }, Some(t)) => match seg.segment.footer.row_groups[*rg].chunks[t].stat {
                Stat::Int { max, .. } => max,
                _ => i64::MAX,
            },
            // Memtable batches hold the newest rows.
            _ => i64::MAX,
        }
    }
}

/// Min / max statistics of a list of row groups, for DataFusion's pruning predicates.
pub(crate) struct RowGroupStats<'a> {
    pub def: &'a TableDef,
    pub schema: &'a SchemaRef,
    pub units: Vec<(&'a SegmentHandle, usize)>,
}

impl RowGroupStats<'_> {
    fn stat_array(&self, column: &Column, pick_max: bool) -> Option<ArrayRef> {
        let idx = self.def.column_index(&column.name)?;
        let target = self.schema.field(idx).data_type().clone();
        let stats = self.units.iter().map(|(s, rg)| &s.segment.footer.row_groups[*rg].chunks[idx].stat);
        let array: ArrayRef = match &target {
            DataType::Utf8 => Arc::new(
                stats
                    .map(|s| match s {
                        Stat::Text { min, max } => Some(if pick_max { max.clone() } else { min.clone() }),
                        _ => None,
                    })
                    .collect::<StringArray>(),
            ),
            DataType::Float32 | DataType::Float64 => Arc::new(
                stats
                    .map(|s| match s {
                        Stat::Float { min, max } => Some(if pick_max { *max } else { *min }),
                        _ => None,
                    })
                    .collect::<Float64Array>(),
            ),
            _ => Arc::new(
                stats
                    .map(|s| match s {
                        Stat::Int { min, max } => Some(if pick_max { *max } else { *min }),
                        _ => None,
                    })
                    .collect::<Int64Array>(),
            ),
        };
        if array.data_type() == &target { Some(array) } else { cast(&array, &target).ok() }
    }
}

impl PruningStatistics for RowGroupStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.stat_array(column, false)
    }
    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.stat_array(column, true)
    }
    fn num_containers(&self) -> usize {
        self.units.len()
    }
    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let idx = self.def.column_index(&column.name)?;
        Some(Arc::new(
            self.units
                .iter()
                .map(|(s, rg)| s.segment.footer.row_groups[*rg].chunks[idx].null_count as u64)
                .collect::<UInt64Array>(),
        ))
    }
    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(
            self.units.iter().map(|(s, rg)| s.segment.footer.row_groups[*rg].rows as u64).collect::<UInt64Array>(),
        ))
    }
    fn contained(&self, _column: &Column, _values: &std::collections::HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// Builds a pruning predicate, or `None` when the expression cannot prune anything. Bounds on a
/// truncated time (`date_trunc('minute', ts) >= x`, as a join on minutes pushes down) also bound the
/// time itself (see [`with_time_bounds`]).
pub(crate) fn pruning_predicate(expr: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Option<PruningPredicate> {
    build_pruning(with_time_bounds(expr.clone()), schema)
}

fn build_pruning(expr: Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Option<PruningPredicate> {
    let p = PruningPredicateBuilder::new().with_file_schema(schema.clone()).try_build(expr).ok()?;
    if p.always_true() { None } else { Some(p) }
}

/// A pruning predicate that rules out exactly the row groups in which every row passes `filter`, by
/// their statistics: `filter` must be a conjunction of range comparisons of an integer or time column
/// with a literal (`column < literal`, `<=`, `>`, `>=`) and of `column IS NOT NULL`, and the
/// predicate is the negation of each comparison, or'ed, or'ed with each column being NULL (a NULL
/// fails a comparison). A row group it prunes can skip the row filter (`ts` in a range that covers
/// the row group: its times are not even decoded). `None` when `filter` has another shape.
fn covering_predicate(filter: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Option<PruningPredicate> {
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_plan::expressions::{BinaryExpr, IsNotNullExpr, IsNullExpr, Literal};
    let mut negated: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut columns: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    for p in datafusion::physical_expr::split_conjunction(filter) {
        // `column IS NOT NULL` (Power BI puts one in every query): proven by a null count of 0.
        if let Some(n) = p.downcast_ref::<IsNotNullExpr>()
            && n.arg().downcast_ref::<ColumnExpr>().is_some()
        {
            negated.push(Arc::new(IsNullExpr::new(n.arg().clone())));
            continue;
        }
        let b = p.downcast_ref::<BinaryExpr>()?;
        let (column, literal) = (b.left().downcast_ref::<ColumnExpr>()?, b.right().downcast_ref::<Literal>()?);
        // Integers and times only: float statistics do not order NaN as the comparison does.
        let integral = matches!(
            schema.fields().get(column.index())?.data_type(),
            DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Timestamp(..)
        );
        if literal.value().is_null() || !integral {
            return None;
        }
        let op = match b.op() {
            Op::Lt => Op::GtEq,
            Op::LtEq => Op::Gt,
            Op::Gt => Op::LtEq,
            Op::GtEq => Op::Lt,
            _ => return None,
        };
        negated.push(Arc::new(BinaryExpr::new(b.left().clone(), op, b.right().clone())));
        if !columns.iter().any(|c| c.downcast_ref::<ColumnExpr>().is_some_and(|k| k.index() == column.index())) {
            columns.push(b.left().clone());
        }
    }
    let any = (negated.into_iter())
        .chain(columns.into_iter().map(|c| Arc::new(IsNullExpr::new(c)) as Arc<dyn PhysicalExpr>))
        .reduce(|a, b| Arc::new(BinaryExpr::new(a, Op::Or, b)) as Arc<dyn PhysicalExpr>)?;
    build_pruning(any, schema)
}

/// The longest span `date_trunc(unit, t)` maps to one value (a day or a week may have an extra hour
/// in a time zone with daylight saving time); `None` for units of varying length.
fn trunc_width_us(unit: &str) -> Option<i64> {
    const S: i64 = 1_000_000;
    Some(match unit.to_ascii_lowercase().as_str() {
        "microsecond" | "microseconds" => 1,
        "millisecond" | "milliseconds" => 1_000,
        "second" | "seconds" => S,
        "minute" | "minutes" => 60 * S,
        "hour" | "hours" => 3_600 * S,
        "day" | "days" => 25 * 3_600 * S,
        "week" | "weeks" => (7 * 24 + 1) * 3_600 * S,
        _ => return None,
    })
}

/// Adds to every comparison of `date_trunc(unit, c)` with a timestamp literal the bound it implies on
/// `c` itself, which min / max statistics can test: since `date_trunc(unit, c) <= c <
/// date_trunc(unit, c) + width`, `date_trunc(unit, c) >= x` implies `c >= x`, and `date_trunc(unit,
/// c) <= x` implies `c < x + width`. The comparison stays: the result is only used to prune.
fn with_time_bounds(expr: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_plan::expressions::{BinaryExpr, Literal};
    let implied = |b: &BinaryExpr| -> Option<Arc<dyn PhysicalExpr>> {
        // Normalise to `date_trunc(..) op literal`.
        let (f, op, lit) = match (b.left().downcast_ref::<ScalarFunctionExpr>(), b.right().downcast_ref::<Literal>()) {
            (Some(f), Some(l)) => (f, *b.op(), l),
            _ => (b.right().downcast_ref::<ScalarFunctionExpr>()?, b.op().swap()?, b.left().downcast_ref::<Literal>()?),
        };
        if f.name() != "date_trunc" {
            return None;
        }
        let [unit, column] = f.args() else { return None };
        let unit = match unit.downcast_ref::<Literal>()?.value() {
            ScalarValue::Utf8(Some(u)) | ScalarValue::Utf8View(Some(u)) | ScalarValue::LargeUtf8(Some(u)) => u.clone(),
            _ => return None,
        };
        column.downcast_ref::<ColumnExpr>()?;
        let ScalarValue::TimestampMicrosecond(Some(x), tz) = lit.value() else { return None };
        let at = |v: i64| {
            Arc::new(Literal::new(ScalarValue::TimestampMicrosecond(Some(v), tz.clone()))) as Arc<dyn PhysicalExpr>
        };
        let cmp = |op: Op, v: i64| Arc::new(BinaryExpr::new(column.clone(), op, at(v))) as Arc<dyn PhysicalExpr>;
        let width = trunc_width_us(&unit);
        match op {
            Op::Gt | Op::GtEq => Some(cmp(Op::GtEq, *x)),
            Op::Lt | Op::LtEq => Some(cmp(Op::Lt, x.checked_add(width?)?)),
            Op::Eq => {
                let upper = cmp(Op::Lt, x.checked_add(width?)?);
                Some(Arc::new(BinaryExpr::new(cmp(Op::GtEq, *x), Op::And, upper)))
            }
            _ => None,
        }
    };
    expr.clone()
        .transform_up(|e| {
            let Some(b) = e.downcast_ref::<BinaryExpr>() else { return Ok(Transformed::no(e)) };
            match implied(b) {
                Some(bound) => {
                    Ok(Transformed::yes(Arc::new(BinaryExpr::new(e.clone(), Op::And, bound)) as Arc<dyn PhysicalExpr>))
                }
                None => Ok(Transformed::no(e)),
            }
        })
        .map(|t| t.data)
        .unwrap_or(expr)
}

/// Which of the row groups may hold rows matching `pred`.
pub(crate) fn prune_row_groups(
    pred: &PruningPredicate,
    def: &TableDef,
    schema: &SchemaRef,
    units: Vec<(&SegmentHandle, usize)>,
) -> Vec<bool> {
    let n = units.len();
    let stats = RowGroupStats { def, schema, units };
    pred.prune(&stats).unwrap_or_else(|_| vec![true; n])
}

/// Time bounds of whole segments as their catalog entries record them (no other column's), for
/// deciding which segments of another shard are worth fetching.
struct SegmentTimeStats<'a> {
    def: &'a TableDef,
    schema: &'a SchemaRef,
    entries: &'a [&'a crate::catalog::SegmentEntry],
}

impl SegmentTimeStats<'_> {
    fn bound(&self, column: &Column, pick_max: bool) -> Option<ArrayRef> {
        let idx = self.def.column_index(&column.name)?;
        if self.def.time.as_ref()?.time_column != idx {
            return None;
        }
        let array: ArrayRef =
            Arc::new(self.entries.iter().map(|e| if pick_max { e.max_ts } else { e.min_ts }).collect::<Int64Array>());
        cast(&array, self.schema.field(idx).data_type()).ok()
    }
}

impl PruningStatistics for SegmentTimeStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, false)
    }
    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, true)
    }
    fn num_containers(&self) -> usize {
        self.entries.len()
    }
    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }
    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(self.entries.iter().map(|e| e.rows).collect::<UInt64Array>()))
    }
    fn contained(&self, _column: &Column, _values: &std::collections::HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// Which of the segments (by their catalog entries) may hold rows matching `pred`, by time alone.
pub(crate) fn prune_segment_entries(
    pred: &PruningPredicate,
    def: &TableDef,
    schema: &SchemaRef,
    entries: &[&crate::catalog::SegmentEntry],
) -> Vec<bool> {
    pred.prune(&SegmentTimeStats { def, schema, entries }).unwrap_or_else(|_| vec![true; entries.len()])
}

/// Which of `units` may hold rows matching `pred` (memtable units always may).
pub(crate) fn prune_units(pred: &PruningPredicate, def: &TableDef, schema: &SchemaRef, units: &[Unit]) -> Vec<bool> {
    let rg_units: Vec<(&SegmentHandle, usize)> = units
        .iter()
        .filter_map(|u| match u {
            Unit::RowGroup { seg, rg } => Some((seg.as_ref(), *rg)),
            Unit::Mem { .. } => None,
        })
        .collect();
    let mut it = prune_row_groups(pred, def, schema, rg_units).into_iter();
    units
        .iter()
        .map(|u| match u {
            Unit::RowGroup { .. } => it.next().unwrap_or(true),
            Unit::Mem { .. } => true,
        })
        .collect()
}

/// Counts shown by EXPLAIN: what the plan-time pruning kept, out of what the snapshot had.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct PlanCounts {
    pub partitions: (usize, usize),
    pub segments: (usize, usize),
    pub row_groups: (usize, usize),
    pub mem_batches: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct TableScanSource {
    pub table_name: String,
    pub def: Arc<TableDef>,
    /// The full table schema.
    pub schema: SchemaRef,
    pub projection: Vec<usize>,
    pub projected_schema: SchemaRef,
    pub units: Arc<Vec<Unit>>,
    pub counts: PlanCounts,
    pub fetch: Option<usize>,
    pub target_partitions: usize,
    /// The scan has `target_partitions` partitions even with fewer units (one task's share of a
    /// distributed scan: every task's must have the same count; see `cluster`).
    pub partitions_fixed: bool,
    /// Filters the scan evaluates on every row it emits (over the table schema), so DataFusion
    /// drops them above the scan (pushed down `Exact`).
    pub filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Filters pushed down by DataFusion that only narrow the scan (run-time ones: TopK thresholds,
    /// join filters; and any the scan cannot evaluate exactly): they prune and filter rows early, and
    /// run again above the scan.
    pub dynamic: Vec<Arc<dyn PhysicalExpr>>,
    pub newest_first: bool,
    /// Latest-per-key mode (see `query::latest`).
    pub latest: Option<LatestMode>,
    /// True when the plan-time filters are empty, so the row count is exact.
    pub exact_rows: bool,
    /// The projected columns' statistics over every unit, computed once (see
    /// [`TableScanSource::column_statistics`]).
    pub column_stats: Arc<std::sync::OnceLock<Vec<ColumnStatistics>>>,
    /// Text columns emitted as `Int32` codes, by projected position (empty: none); see
    /// `query::symbols`.
    pub symbols: Vec<Option<Arc<Symbols>>>,
    pub metrics: ExecutionPlanMetricsSet,
}

/// The most memtable values (rows times projected columns) read to give a scan's minimum and maximum
/// statistics (a few milliseconds of work).
const MEMTABLE_STATS_CELLS: usize = 4 << 20;

/// The cursor shared by the partitions of one execution.
struct SharedCursor(AtomicUsize);

impl TableScanSource {
    /// This scan in latest-per-key mode: newest units first, emitting only rows that hold some key's
    /// newest timestamp.
    pub(crate) fn into_latest(mut self, mode: LatestMode) -> Self {
        let t = self.time_col();
        let mut units: Vec<Unit> = self.units.as_ref().clone();
        units.sort_by_key(|u| std::cmp::Reverse(u.max_time(t)));
        self.units = Arc::new(units);
        self.newest_first = true;
        self.latest = Some(mode);
        self
    }

    pub(crate) fn symbols_at(&self, position: usize) -> Option<&Arc<Symbols>> {
        self.symbols.get(position).and_then(Option::as_ref)
    }

    /// A batch of the projection with its symbol columns (if any) turned into codes.
    fn encode_symbols(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.symbols.is_empty() {
            return Ok(batch);
        }
        let arrays = (batch.columns().iter().enumerate())
            .map(|(i, a)| match self.symbols_at(i) {
                Some(s) => s.encode(a),
                None => Ok(a.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(self.projected_schema.clone(), arrays, &options)?)
    }

    pub(crate) fn n_partitions(&self) -> usize {
        if self.partitions_fixed {
            return self.target_partitions.max(1);
        }
        self.target_partitions.clamp(1, self.units.len().max(1))
    }

    fn stream(&self, partition: usize, shared: Option<Arc<SharedCursor>>) -> SendableRecordBatchStream {
        let n = self.n_partitions();
        let metrics = ScanMetrics {
            scanned: MetricBuilder::new(&self.metrics).counter("row_groups_scanned", partition),
            pruned: MetricBuilder::new(&self.metrics).counter("row_groups_pruned_at_run_time", partition),
            mem: MetricBuilder::new(&self.metrics).counter("memtable_batches_scanned", partition),
            rows: MetricBuilder::new(&self.metrics).counter("rows_decoded", partition),
            filtered: MetricBuilder::new(&self.metrics).counter("row_groups_without_matching_rows", partition),
            covered: MetricBuilder::new(&self.metrics).counter("row_groups_matched_by_statistics", partition),
        };
        let iter = UnitIter {
            src: self.clone(),
            n,
            next_static: partition,
            shared,
            emitted: 0,
            dyn_pruner: None,
            covered: None,
            ahead: (0, Vec::new()),
            latest: LatestState::default(),
            metrics,
            dictionary_filters: true,
            rest: None,
        };
        Box::pin(RecordBatchStreamAdapter::new(self.projected_schema.clone(), futures::stream::iter(iter)))
    }

    fn time_col(&self) -> Option<usize> {
        self.def.time_column()
    }

    /// Null count, minimum and maximum of each projected column over every unit, exact where every unit
    /// knows them: a row group from its chunk's statistics (exact values, when stored), a memtable batch
    /// by reading it once (its bounds are kept with it). DataFusion then answers `count`, `min` and `max`
    /// of an unfiltered table from them without scanning. Floating-point columns report no minimum or
    /// maximum (the segment statistics do not order NaN and signed zeros as the aggregates do), nor does
    /// any column when reading the memtable batches not read yet would cost more than
    /// [`MEMTABLE_STATS_CELLS`] values (statistics are asked for while a plan is made, also for
    /// `SELECT * ... LIMIT 10`).
    fn column_statistics(&self) -> &[ColumnStatistics] {
        self.column_stats.get_or_init(|| {
            let unread: usize = self
                .units
                .iter()
                .filter_map(|u| match u {
                    Unit::Mem { batch } => {
                        Some(batch.num_rows() * self.projection.iter().filter(|&&c| !batch.has_bounds(c)).count())
                    }
                    Unit::RowGroup { .. } => None,
                })
                .sum();
            let read_memtables = unread <= MEMTABLE_STATS_CELLS;
            self.projection.iter().map(|&c| self.column_stats_of(c, read_memtables)).collect()
        })
    }

    fn column_stats_of(&self, c: usize, read_memtables: bool) -> ColumnStatistics {
        let target = self.schema.field(c).data_type();
        let mut known = matches!(
            target,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Timestamp(..)
                | DataType::Boolean
                | DataType::Utf8
        );
        let mut nulls = 0usize;
        // Row groups' bounds are widened in their stored form and made values of the column's type once:
        // a `ScalarValue` cast per row group was most of the planning time of a short query.
        let mut ints: Option<(i64, i64)> = None;
        let mut texts: Option<(&str, &str)> = None;
        let mut mem: Option<(ScalarValue, ScalarValue)> = None;
        for u in self.units.iter() {
            match u {
                Unit::RowGroup { seg, rg } => {
                    let meta = &seg.segment.footer.row_groups[*rg];
                    let chunk = &meta.chunks[c];
                    nulls += chunk.null_count as usize;
                    if !known || chunk.null_count >= meta.rows {
                        continue;
                    }
                    match &chunk.stat {
                        Stat::Int { min, max } => {
                            ints = Some(ints.map_or((*min, *max), |(a, b)| (a.min(*min), b.max(*max))))
                        }
                        Stat::Text { min, max } => {
                            let (min, max) = (min.as_str(), max.as_str());
                            texts = Some(texts.map_or((min, max), |(a, b)| (a.min(min), b.max(max))))
                        }
                        _ => known = false,
                    }
                }
                Unit::Mem { batch } => {
                    let a = batch.column(c);
                    nulls += a.null_count();
                    if !known || a.null_count() == a.len() {
                        continue;
                    }
                    if !read_memtables && !batch.has_bounds(c) {
                        known = false;
                        continue;
                    }
                    match batch.bounds(c, array_bounds) {
                        Some((lo, hi)) => widen(&mut mem, lo.clone(), hi.clone()),
                        None => known = false,
                    }
                }
            }
        }
        let stored = match (ints, texts) {
            (Some(_), Some(_)) => {
                known = false;
                None
            }
            (Some((lo, hi)), None) => Some((ScalarValue::Int64(Some(lo)), ScalarValue::Int64(Some(hi)))),
            (None, Some((lo, hi))) => Some((ScalarValue::from(lo), ScalarValue::from(hi))),
            (None, None) => None,
        };
        let mut bounds = mem;
        if let Some((lo, hi)) = stored {
            match (lo.cast_to(target), hi.cast_to(target)) {
                (Ok(lo), Ok(hi)) => widen(&mut bounds, lo, hi),
                _ => known = false,
            }
        }
        let mut s = ColumnStatistics::new_unknown();
        s.null_count = Precision::Exact(nulls);
        if let (true, Some((lo, hi))) = (known, bounds) {
            s.min_value = Precision::Exact(lo);
            s.max_value = Precision::Exact(hi);
        }
        s
    }
}

/// Widens `bounds` to take in `lo ..= hi` (ignored when either is NULL).
fn widen(bounds: &mut Option<(ScalarValue, ScalarValue)>, lo: ScalarValue, hi: ScalarValue) {
    if lo.is_null() || hi.is_null() {
        return;
    }
    *bounds = Some(match bounds.take() {
        None => (lo, hi),
        Some((a, b)) => (if lo < a { lo } else { a }, if hi > b { hi } else { b }),
    });
}

/// The minimum and maximum of an array's non-NULL values, as DataFusion's `min` / `max` give them.
fn array_bounds(a: &ArrayRef) -> ColumnBounds {
    use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
    use datafusion::logical_expr::Accumulator;
    let mut lo = MinAccumulator::try_new(a.data_type()).ok()?;
    let mut hi = MaxAccumulator::try_new(a.data_type()).ok()?;
    let values = [a.clone()];
    lo.update_batch(&values).ok()?;
    hi.update_batch(&values).ok()?;
    Some((lo.evaluate().ok()?, hi.evaluate().ok()?))
}

struct ScanMetrics {
    scanned: Count,
    pruned: Count,
    mem: Count,
    rows: Count,
    /// Row groups decoded for the filter's columns only: no row matched.
    filtered: Count,
    /// Row groups read without the row filter: their statistics prove every row passes it.
    covered: Count,
}

struct UnitIter {
    src: TableScanSource,
    n: usize,
    next_static: usize,
    shared: Option<Arc<SharedCursor>>,
    emitted: usize,
    /// The pruning predicate and the row filter built from the dynamic filters at a given generation.
    dyn_pruner: Option<(u64, Option<PruningPredicate>, Option<RowFilter>)>,
    /// For the same generation: a predicate that prunes exactly the row groups whose statistics prove
    /// every row passes the row filter (see [`covering_predicate`]); those are read without it.
    covered: Option<PruningPredicate>,
    /// For the same generation: which units from a given index on may hold matching rows
    /// (`dynamically_pruned` evaluates [`PRUNE_AHEAD`] units at a time).
    ahead: (usize, Vec<bool>),
    latest: LatestState,
    metrics: ScanMetrics,
    /// Whether the row filter reads text columns in dictionary form (see `read_row_group`).
    dictionary_filters: bool,
    /// The older rows of a row group whose newest rows were emitted first (see [`NEWEST_SLICE`]):
    /// the unit's index and the rows still to read.
    rest: Option<(usize, BooleanArray)>,
}

/// Newest first under run-time filters (a TopK's threshold), a large row group is read in two steps:
/// its newest rows (they are last in a table without a sort key: see [`crate::types::Layout`]) are
/// emitted first, so the TopK above can set its threshold, and the rest is read through the updated
/// filter, which decodes the filter's columns and only the rows that pass it. Not with filters of the scan's own: their
/// matches may be too sparse for the slice to fill the TopK, and the filter's columns would be
/// decoded twice.
const NEWEST_SLICE: usize = 8192;

/// Units whose statistics the run-time pruning evaluates in one go.
const PRUNE_AHEAD: usize = 64;

impl UnitIter {
    fn next_index(&mut self) -> Option<usize> {
        let i = match &self.shared {
            Some(c) => c.0.fetch_add(1, Ordering::Relaxed),
            None => {
                let i = self.next_static;
                self.next_static += self.n;
                i
            }
        };
        (i < self.src.units.len()).then_some(i)
    }

    /// Brings the row filter (the scan's filters and the dynamic ones as they stand now) up to date;
    /// true if it rules unit `i` out.
    fn dynamically_pruned(&mut self, i: usize) -> bool {
        if self.src.dynamic.is_empty() && self.src.filters.is_empty() {
            return false;
        }
        let generation: u64 =
            self.src.dynamic.iter().map(snapshot_generation).fold(0, |a, g| a.wrapping_mul(31).wrapping_add(g));
        if self.dyn_pruner.as_ref().is_none_or(|(g, _, _)| *g != generation) {
            let exprs: Vec<Arc<dyn PhysicalExpr>> = (self.src.filters.iter().cloned())
                .chain(self.src.dynamic.iter().filter_map(|e| snapshot_physical_expr(e.clone()).ok()))
                .collect();
            let conjunction = datafusion::physical_expr::conjunction_opt(exprs);
            let pred = conjunction.as_ref().and_then(|e| pruning_predicate(e, &self.src.schema));
            self.covered = conjunction.as_ref().and_then(|e| covering_predicate(e, &self.src.schema));
            let rows = conjunction.and_then(|e| RowFilter::new(e, &self.src.schema));
            self.dyn_pruner = Some((generation, pred, rows));
            self.ahead = (0, Vec::new());
        }
        let Some((_, Some(pred), _)) = &self.dyn_pruner else { return false };
        let (from, keep) = &self.ahead;
        if let Some(&k) = i.checked_sub(*from).and_then(|j| keep.get(j)) {
            return !k;
        }
        // The units from this one on, a window at a time: one evaluation of the predicate over many
        // row groups' statistics costs about what one over a single row group does.
        let units = &self.src.units[i..(i + PRUNE_AHEAD).min(self.src.units.len())];
        let keep = prune_units(pred, &self.src.def, &self.src.schema, units);
        let ruled_out = !keep[0];
        self.ahead = (i, keep);
        ruled_out
    }

    /// The projection of a memtable batch, its rows filtered by the row filter (if any).
    fn read_mem(&self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let filter = match &self.dyn_pruner {
            Some((_, _, Some(f))) if self.src.latest.is_none() => f,
            _ => return Ok(Some(self.src.encode_symbols(batch.project(&self.src.projection)?)?)),
        };
        let mask = filter.mask(&batch.project(&filter.columns)?)?;
        if mask.true_count() == 0 {
            return Ok(None);
        }
        let projected = batch.project(&self.src.projection)?;
        Ok(Some(self.src.encode_symbols(datafusion::arrow::compute::filter_record_batch(&projected, &mask)?)?))
    }

    /// Decodes the projection of a row group. With a row filter, the columns it reads are decoded first
    /// and the filter evaluated; a row group with no matching row is skipped (`None`), and the other
    /// columns are decoded for the matching rows only.
    fn read_row_group(
        &mut self,
        seg: &SegmentHandle,
        rg: usize,
        restrict: Option<&BooleanArray>,
    ) -> Result<Option<RecordBatch>> {
        let src = &self.src;
        let rows = seg.segment.footer.row_groups[rg].rows as usize;
        let read = |c: usize, sel: Option<&BooleanArray>| {
            seg.segment.read_column(rg, c, src.schema.field(c).data_type(), sel).map_err(DataFusionError::from)
        };
        // Column `c` at projected position `i`: a symbol column from its stored dictionary, as codes.
        let read_out = |i: usize, c: usize, sel: Option<&BooleanArray>| match src.symbols_at(i) {
            Some(s) => {
                let codes = s.encode(&seg.segment.read_column_encoded(rg, c, src.schema.field(c).data_type())?)?;
                Ok(match sel {
                    Some(m) => arrow_filter(&codes, m)?,
                    None => codes,
                })
            }
            None => read(c, sel),
        };
        let covered = self.covered.as_ref().is_some_and(|c| {
            !prune_row_groups(c, &src.def, &src.schema, vec![(seg, rg)]).first().copied().unwrap_or(true)
        });
        if covered {
            self.metrics.covered.add(1);
        }
        let filter = match &self.dyn_pruner {
            Some((_, _, Some(f))) if src.latest.is_none() && !covered => f,
            _ => {
                if restrict.is_none() && src.symbols.is_empty() {
                    return Ok(Some(seg.segment.read(rg, &src.projection, &src.projected_schema)?));
                }
                let kept = restrict.map_or(rows, |r| r.true_count());
                if kept == 0 {
                    return Ok(None);
                }
                let arrays = (src.projection.iter().enumerate())
                    .map(|(i, &c)| read_out(i, c, restrict))
                    .collect::<Result<Vec<_>>>()?;
                let options = RecordBatchOptions::new().with_row_count(Some(kept));
                return Ok(Some(RecordBatch::try_new_with_options(src.projected_schema.clone(), arrays, &options)?));
            }
        };
        // Text columns are read in their stored dictionary form where they have one, so `backend = 'x'`
        // compares a few dictionary entries instead of a string per row (only for the predicates of
        // `takes_dictionaries`; should one still fail, plain text for the rest of the scan).
        let evaluate = |dictionary: bool| -> Result<(RecordBatch, BooleanArray)> {
            let columns = filter
                .columns
                .iter()
                .map(|&c| match dictionary {
                    true => seg.segment.read_column_encoded(rg, c, src.schema.field(c).data_type()).map_err(Into::into),
                    false => read(c, None),
                })
                .collect::<Result<Vec<_>>>()?;
            let fields: Vec<Field> = filter
                .schema
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, a)| Field::new(f.name(), a.data_type().clone(), f.is_nullable()))
                .collect();
            let input = RecordBatch::try_new_with_options(
                Arc::new(Schema::new(fields)),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )?;
            let mask = filter.mask(&input)?;
            Ok((input, mask))
        };
        let (input, mask) = match filter.dictionary && self.dictionary_filters {
            true => match evaluate(true) {
                Ok(r) => r,
                Err(_) => {
                    self.dictionary_filters = false;
                    evaluate(false)?
                }
            },
            false => evaluate(false)?,
        };
        let mask = match restrict {
            Some(r) => datafusion::arrow::compute::and(&mask, r)?,
            None => mask,
        };
        let kept = mask.true_count();
        if kept == 0 {
            self.metrics.filtered.add(1);
            return Ok(None);
        }
        let sel = (kept < rows).then_some(&mask);
        let arrays = (src.projection.iter().enumerate())
            .map(|(i, &c)| match filter.columns.iter().position(|&f| f == c) {
                Some(k) => {
                    let a = match sel {
                        Some(m) => arrow_filter(input.column(k), m)?,
                        None => input.column(k).clone(),
                    };
                    // A dictionary read for the filter becomes codes, or plain text again, for the
                    // kept rows only.
                    let target = src.schema.field(c).data_type();
                    match src.symbols_at(i) {
                        Some(s) => s.encode(&a),
                        None if a.data_type() == target => Ok(a),
                        None => Ok(cast(&a, target)?),
                    }
                }
                None => read_out(i, c, sel),
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(kept));
        Ok(Some(RecordBatch::try_new_with_options(src.projected_schema.clone(), arrays, &options)?))
    }
}

/// The pushed-down filters as a row filter inside the scan: the predicate rewritten over just the
/// columns it reads (in table order). Rows it rejects are never materialised. It is evaluated on every
/// row the scan emits (row groups and memtable batches), except in latest-per-key mode, which takes
/// no filters of its own.
#[derive(Debug)]
struct RowFilter {
    predicate: Arc<dyn PhysicalExpr>,
    /// Table column indexes the predicate reads.
    columns: Vec<usize>,
    schema: SchemaRef,
    /// The predicate is built only of comparisons, AND / OR / NOT, IN lists, LIKE and NULL tests over
    /// columns and literals, which evaluate dictionary-encoded text exactly as plain text. Anything else
    /// (functions, casts, arithmetic, a join's key struct) reads plain text: some of DataFusion's kernels
    /// reject dictionaries, and some panic on them.
    dictionary: bool,
}

/// See [`RowFilter::dictionary`].
fn takes_dictionaries(expr: &Arc<dyn PhysicalExpr>) -> bool {
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_plan::expressions::{
        BinaryExpr, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr, Literal, NotExpr,
    };
    let node_ok = if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
        matches!(
            b.op(),
            Op::Eq
                | Op::NotEq
                | Op::Lt
                | Op::LtEq
                | Op::Gt
                | Op::GtEq
                | Op::And
                | Op::Or
                | Op::IsDistinctFrom
                | Op::IsNotDistinctFrom
        )
    } else {
        expr.downcast_ref::<ColumnExpr>().is_some()
            || expr.downcast_ref::<Literal>().is_some()
            || expr.downcast_ref::<InListExpr>().is_some()
            // arrow's LIKE matches a dictionary's entries once each
            || expr.downcast_ref::<LikeExpr>().is_some()
            || expr.downcast_ref::<IsNullExpr>().is_some()
            || expr.downcast_ref::<IsNotNullExpr>().is_some()
            || expr.downcast_ref::<NotExpr>().is_some()
    };
    node_ok && expr.children().iter().all(|c| takes_dictionaries(c))
}

impl RowFilter {
    /// The rows of `input` (the filter's columns) that pass: NULL counts as false, as in `WHERE`.
    fn mask(&self, input: &RecordBatch) -> Result<BooleanArray> {
        let mask = self.predicate.evaluate(input)?.into_array(input.num_rows())?;
        let mask = mask.as_boolean_opt().ok_or_else(|| DataFusionError::Internal("filter is not boolean".into()))?;
        Ok(if mask.null_count() > 0 { prep_null_mask_filter(mask) } else { mask.clone() })
    }

    /// `None` for predicates that must not run twice (volatile ones, such as `random()`).
    fn new(expr: Arc<dyn PhysicalExpr>, table: &SchemaRef) -> Option<RowFilter> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::physical_expr_common::physical_expr::is_volatile;
        if is_volatile(&expr) {
            return None;
        }
        let mut columns = Vec::new();
        expr.apply(|e| {
            if let Some(c) = e.downcast_ref::<ColumnExpr>()
                && !columns.contains(&c.index())
            {
                columns.push(c.index());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .ok()?;
        columns.sort_unstable();
        if columns.is_empty() || columns.iter().any(|&c| c >= table.fields().len()) {
            return None;
        }
        let predicate = expr
            .transform(|e| {
                if let Some(c) = e.downcast_ref::<ColumnExpr>() {
                    let i = columns.iter().position(|&k| k == c.index()).expect("collected above");
                    return Ok(Transformed::yes(Arc::new(ColumnExpr::new(c.name(), i)) as Arc<dyn PhysicalExpr>));
                }
                Ok(Transformed::no(e))
            })
            .ok()?
            .data;
        let schema = Arc::new(table.project(&columns).ok()?);
        let dictionary = takes_dictionaries(&predicate);
        Some(RowFilter { predicate, columns, schema, dictionary })
    }
}

impl Iterator for UnitIter {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.src.fetch.is_some_and(|f| self.emitted >= f) {
                return None;
            }
            let (i, mut restrict) = match self.rest.take() {
                Some((i, rest)) => (i, Some(rest)),
                None => (self.next_index()?, None),
            };
            if self.dynamically_pruned(i) {
                self.metrics.pruned.add(1);
                continue;
            }
            let unit = self.src.units[i].clone();
            // Latest-per-key mode: skip units with nothing newer for any key, before decoding them.
            let mut chosen = None;
            if let Some(mode) = self.src.latest {
                match unit_key_max(&self.src, &unit, mode) {
                    Ok(Some(m)) => {
                        let rows = self.latest.select(&m);
                        if rows.is_empty() {
                            self.metrics.pruned.add(1);
                            continue;
                        }
                        chosen = Some(rows);
                    }
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            let batch = match &unit {
                Unit::RowGroup { seg, rg } => {
                    let rows = seg.segment.footer.row_groups[*rg].rows as usize;
                    if restrict.is_none() {
                        self.metrics.scanned.add(1);
                    }
                    if restrict.is_none()
                        && self.src.newest_first
                        && self.src.latest.is_none()
                        && self.src.filters.is_empty()
                        && !self.src.dynamic.is_empty()
                        && !self.src.def.layout().clustered()
                        && rows > 2 * NEWEST_SLICE
                    {
                        let cut = rows - NEWEST_SLICE;
                        self.rest = Some((i, BooleanArray::from_iter((0..rows).map(|r| Some(r < cut)))));
                        restrict = Some(BooleanArray::from_iter((0..rows).map(|r| Some(r >= cut))));
                    }
                    match self.read_row_group(seg, *rg, restrict.as_ref()) {
                        Ok(Some(b)) => b,
                        Ok(None) => continue,
                        Err(e) => return Some(Err(e)),
                    }
                }
                Unit::Mem { batch } => {
                    self.metrics.mem.add(1);
                    match self.read_mem(batch) {
                        Ok(Some(b)) => b,
                        Ok(None) => continue,
                        Err(e) => return Some(Err(e)),
                    }
                }
            };
            self.metrics.rows.add(batch.num_rows());
            let batch = match chosen {
                Some(rows) => match take_rows(&batch, rows) {
                    Ok(b) => b,
                    Err(e) => return Some(Err(e)),
                },
                None => batch,
            };
            let batch = match self.src.fetch {
                Some(f) if self.emitted + batch.num_rows() > f => batch.slice(0, f - self.emitted),
                _ => batch,
            };
            self.emitted += batch.num_rows();
            if batch.num_rows() == 0 {
                continue;
            }
            return Some(Ok(batch));
        }
    }
}

impl DataSource for TableScanSource {
    fn open(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        Ok(self.stream(partition, None))
    }

    fn open_with_args(&self, args: datafusion::datasource::source::OpenArgs) -> Result<SendableRecordBatchStream> {
        let shared = args.sibling_state.and_then(|s| s.downcast::<SharedCursor>().ok());
        Ok(self.stream(args.partition, shared))
    }

    fn create_sibling_state(&self, _config: &ConfigOptions) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(SharedCursor(AtomicUsize::new(0))))
    }

    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        let cols: Vec<&str> = self.projected_schema.fields().iter().map(|f| f.name().as_str()).collect();
        match t {
            DisplayFormatType::TreeRender => write!(f, "table={}", self.table_name),
            _ => {
                write!(
                    f,
                    "TrafficScan: table={}, partitions={}/{}, segments={}/{}, row_groups={}/{}, memtable_batches={}, projection=[{}]",
                    self.table_name,
                    c.partitions.0,
                    c.partitions.1,
                    c.segments.0,
                    c.segments.1,
                    c.row_groups.0,
                    c.row_groups.1,
                    c.mem_batches,
                    cols.join(", ")
                )?;
                if let Some(n) = self.fetch {
                    write!(f, ", limit={n}")?;
                }
                if self.newest_first {
                    write!(f, ", order=newest_first")?;
                }
                let symbols: Vec<&str> =
                    (cols.iter().enumerate()).filter(|&(i, _)| self.symbols_at(i).is_some()).map(|(_, c)| *c).collect();
                if !symbols.is_empty() {
                    write!(f, ", symbols=[{}]", symbols.join(", "))?;
                }
                if let Some(m) = self.latest {
                    write!(f, ", latest_per_key={}", self.projected_schema.field(m.key).name())?;
                }
                if !self.filters.is_empty() {
                    let d: Vec<String> = self.filters.iter().map(|e| e.to_string()).collect();
                    write!(f, ", filters=[{}]", d.join(", "))?;
                }
                if !self.dynamic.is_empty() {
                    let d: Vec<String> = self.dynamic.iter().map(|e| e.to_string()).collect();
                    write!(f, ", runtime_filters=[{}]", d.join(", "))?;
                }
                Ok(())
            }
        }
    }

    fn output_partitioning(&self) -> Partitioning {
        Partitioning::UnknownPartitioning(self.n_partitions())
    }

    fn eq_properties(&self) -> EquivalenceProperties {
        EquivalenceProperties::new(self.projected_schema.clone())
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let mut s = Statistics::new_unknown(&self.projected_schema);
        if partition.is_none() && self.fetch.is_none() {
            let rows: usize = self.units.iter().map(Unit::rows).sum();
            s.num_rows = Precision::Exact(rows);
            s.column_statistics = self.column_statistics().to_vec();
            // Codes have no order of their own: only the NULL count carries over.
            for (i, c) in s.column_statistics.iter_mut().enumerate() {
                if self.symbols_at(i).is_some() {
                    *c = ColumnStatistics { null_count: c.null_count, ..ColumnStatistics::new_unknown() };
                }
            }
            if !self.exact_rows {
                // Filters drop rows: bounds, not values.
                s = s.to_inexact();
            }
        }
        Ok(Arc::new(s))
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn DataSource>> {
        let mut s = self.clone();
        s.fetch = limit;
        Some(Arc::new(s))
    }

    fn fetch(&self) -> Option<usize> {
        self.fetch
    }

    fn metrics(&self) -> ExecutionPlanMetricsSet {
        self.metrics.clone()
    }

    /// A projection of some of the scan's columns, unrenamed, becomes the scan's own: columns read only
    /// by the scan's filters are then not decoded for output (the filters read the table's columns).
    fn try_swapping_with_projection(&self, projection: &ProjectionExprs) -> Result<Option<Arc<dyn DataSource>>> {
        if self.latest.is_some() || !self.symbols.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(projection.as_ref().len());
        for p in projection.iter() {
            let Some(c) = p.expr.downcast_ref::<ColumnExpr>() else { return Ok(None) };
            let Some(&col) = self.projection.get(c.index()) else { return Ok(None) };
            if p.alias != c.name() || columns.contains(&col) {
                return Ok(None);
            }
            columns.push(col);
        }
        let mut s = self.clone();
        s.projected_schema = Arc::new(self.schema.project(&columns)?);
        s.projection = columns;
        s.column_stats = Default::default();
        Ok(Some(Arc::new(s)))
    }

    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn DataSource>>> {
        // A filter the row filter evaluates completely is taken over (`Yes`: DataFusion drops it above
        // the scan): a fixed one, over stored columns, not volatile, on a scan that emits every row it
        // reads through the row filter (no row limit of its own, not latest-per-key). Others only
        // narrow the scan (`No`: evaluated again above it).
        let mut s = self.clone();
        let mut pushed = Vec::with_capacity(filters.len());
        for f in filters {
            // Filters refer to the projected schema; keep those whose columns map onto the table.
            let Some(mapped) = remap_to_table(&f, &self.projected_schema, &self.schema) else {
                pushed.push(PushedDown::No);
                continue;
            };
            let exact = self.fetch.is_none()
                && self.latest.is_none()
                && !DynamicFilterTracking::classify(&mapped).contains_dynamic_filter()
                && RowFilter::new(mapped.clone(), &self.schema).is_some();
            if exact {
                s.filters.push(mapped);
                s.exact_rows = false;
                pushed.push(PushedDown::Yes);
            } else {
                s.dynamic.push(mapped);
                pushed.push(PushedDown::No);
            }
        }
        let mut prop = FilterPushdownPropagation::with_parent_pushdown_result(pushed);
        prop.updated_node = Some(Arc::new(s) as Arc<dyn DataSource>);
        Ok(prop)
    }

    fn try_pushdown_sort(&self, order: &[PhysicalSortExpr]) -> Result<SortOrderPushdownResult<Arc<dyn DataSource>>> {
        let Some(first) = order.first() else { return Ok(SortOrderPushdownResult::Unsupported) };
        let Some(col) = first.expr.downcast_ref::<ColumnExpr>() else {
            return Ok(SortOrderPushdownResult::Unsupported);
        };
        let Some(t) = self.time_col() else { return Ok(SortOrderPushdownResult::Unsupported) };
        if self.projected_schema.field(col.index()).name() != &self.def.columns[t].name {
            return Ok(SortOrderPushdownResult::Unsupported);
        }
        let mut s = self.clone();
        let mut units: Vec<Unit> = self.units.as_ref().clone();
        if first.options.descending {
            units.sort_by_key(|u| std::cmp::Reverse(u.max_time(Some(t))));
            s.newest_first = true;
        } else {
            units.sort_by_key(|u| match u {
                Unit::RowGroup { seg, rg } => match seg.segment.footer.row_groups[*rg].chunks[t].stat {
                    Stat::Int { min, .. } => min,
                    _ => i64::MIN,
                },
                Unit::Mem { .. } => i64::MIN,
            });
        }
        s.units = Arc::new(units);
        Ok(SortOrderPushdownResult::Inexact { inner: Arc::new(s) })
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in self.filters.iter().chain(&self.dynamic) {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }
}

/// Rewrites column references from the projected schema to the full table schema.
fn remap_to_table(
    expr: &Arc<dyn PhysicalExpr>,
    projected: &SchemaRef,
    table: &SchemaRef,
) -> Option<Arc<dyn PhysicalExpr>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let mut ok = true;
    let out = expr
        .clone()
        .transform(|e| {
            if let Some(c) = e.downcast_ref::<ColumnExpr>() {
                let name =
                    projected.fields().get(c.index()).map(|f| f.name().clone()).unwrap_or_else(|| c.name().to_string());
                match table.index_of(&name) {
                    Ok(i) => return Ok(Transformed::yes(Arc::new(ColumnExpr::new(&name, i)) as Arc<dyn PhysicalExpr>)),
                    Err(_) => ok = false,
                }
            }
            Ok(Transformed::no(e))
        })
        .ok()?
        .data;
    ok.then_some(out)
}

/// The per-unit key map: cached for row groups of sealed segments (they never change).
pub(crate) fn unit_key_max(src: &TableScanSource, unit: &Unit, mode: LatestMode) -> Result<Option<Arc<KeyMax>>> {
    let key_col = src.projection[mode.key];
    let time_col = src.projection[mode.time];
    match unit {
        Unit::Mem { batch } => Ok(key_max(batch.column(key_col), batch.column(time_col)).map(Arc::new)),
        Unit::RowGroup { seg, rg } => {
            if let Some(hit) = seg.segment.derived::<KeyMax>(*rg, (key_col, time_col)) {
                return Ok(Some(hit));
            }
            let schema = Arc::new(src.schema.project(&[key_col, time_col])?);
            let b = seg.segment.read(*rg, &[key_col, time_col], &schema)?;
            let Some(m) = key_max(b.column(0), b.column(1)) else { return Ok(None) };
            let m = Arc::new(m);
            seg.segment.keep_derived(*rg, (key_col, time_col), m.clone());
            Ok(Some(m))
        }
    }
}
