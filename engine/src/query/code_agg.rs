//! Partial aggregation without a hash table, for the group keys telemetry queries use most: a text
//! column read as codes (see `query::symbols`) and a time bucket, `date_trunc(unit, ts)` of the table's
//! time column in whole seconds, minutes, hours or days. A code is dense (codes of a query are `0..n`
//! in the order values were met) and a bucket is dense over the time range the scan's statistics give,
//! so a row's groups key is a number computed from its values: the code plus one (0 is the NULL key)
//! times the number of buckets, plus the bucket. [`CodeAggregateExec`] takes the place of DataFusion's
//! partial `AggregateExec` over such keys: a table indexed by key (a hash map past [`SLOTS_MAX`] keys)
//! gives each row its group, no key is hashed or compared, and no `date_trunc` is computed per row;
//! `count(*)` and `avg` of a `Float64` are kept by group here, other aggregates by DataFusion's own
//! groups accumulators (`count`, `sum`, `min`, `max`, ... with their partial states), updated with the
//! group indices. Its output is the aggregate's own, row for row and type for type: one row per key
//! seen, so the final aggregate above merges it as it would have.
//!
//! Aggregates with an `ORDER BY` of their own, aggregates kept to a limit or fed in key order, and keys
//! of any other form stay DataFusion's.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, HashMap, Result, ScalarValue};
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::expressions::{Column, Literal};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties};
use futures::{StreamExt, TryStreamExt};

use super::scan::TableScanSource;

/// Keys below this are groups found through a table indexed by key (4 bytes a key); larger ones through
/// a hash map.
const SLOTS_MAX: u64 = 1 << 22;

/// The most time buckets a key may span.
const BUCKETS_MAX: u64 = 1 << 20;

/// One group key of a [`CodeAggregateExec`].
#[derive(Debug, Clone)]
enum Key {
    /// The codes of a text column: a part of `code + 1`, 0 for NULL.
    Code { column: usize },
    /// `date_trunc` of the time column: a part of `(ts - origin) / width`, below `buckets`.
    Bucket { column: usize, origin: i64, width: i64, buckets: u64 },
}

/// A partial aggregate grouped by codes and time buckets; see the module documentation.
#[derive(Debug)]
pub(crate) struct CodeAggregateExec {
    keys: Vec<Key>,
    /// The group expressions and names, as the aggregate had them (for display).
    group_display: Vec<String>,
    aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    filter_expr: Vec<Option<Arc<dyn PhysicalExpr>>>,
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CodeAggregateExec {
    /// `agg` computed by key, when it is a partial aggregate of a table scan grouped by codes (one
    /// column at most) and time buckets, with no limit and no aggregate ordered by its own `ORDER BY`.
    pub(crate) fn of(agg: &AggregateExec) -> Option<CodeAggregateExec> {
        let group = agg.group_expr();
        if *agg.mode() != AggregateMode::Partial
            || !group.is_single()
            || group.expr().is_empty()
            || agg.limit_options().is_some()
            || agg.input_order_mode() != &InputOrderMode::Linear
            || agg.aggr_expr().iter().any(|a| !a.order_bys().is_empty())
        {
            return None;
        }
        let input = agg.input();
        let ds = input.downcast_ref::<CooperativeExec>().map_or(input, |c| c.input());
        let scan = ds.downcast_ref::<DataSourceExec>()?.data_source().downcast_ref::<TableScanSource>()?;
        let stats = DataSource::partition_statistics(scan, None).ok()?;
        let time = scan.def.time_column().and_then(|t| scan.projection.iter().position(|&c| c == t));
        let mut keys = Vec::new();
        for (e, _) in group.expr() {
            if let Some(c) = e.downcast_ref::<Column>() {
                if scan.symbols_at(c.index()).is_none() || keys.iter().any(|k| matches!(k, Key::Code { .. })) {
                    return None;
                }
                keys.push(Key::Code { column: c.index() });
                continue;
            }
            // date_trunc('second' | 'minute' | 'hour' | 'day', ts) of a timestamp without a time zone.
            let f = e.downcast_ref::<ScalarFunctionExpr>()?;
            let [unit, ts] = f.args() else { return None };
            let unit = unit.downcast_ref::<Literal>()?.value().try_as_str()??.to_ascii_lowercase();
            let column = ts.downcast_ref::<Column>()?.index();
            let width: i64 = match unit.as_str() {
                "second" => 1_000_000,
                "minute" => 60_000_000,
                "hour" => 3_600_000_000,
                "day" => 86_400_000_000,
                _ => return None,
            };
            let ty = DataType::Timestamp(TimeUnit::Microsecond, None);
            if f.name() != "date_trunc"
                || Some(column) != time
                || scan.projected_schema.field(column).data_type() != &ty
            {
                return None;
            }
            let col = stats.column_statistics.get(column)?;
            let (
                Some(ScalarValue::TimestampMicrosecond(Some(lo), _)),
                Some(ScalarValue::TimestampMicrosecond(Some(hi), _)),
            ) = (col.min_value.get_value(), col.max_value.get_value())
            else {
                return None;
            };
            let origin = lo.div_euclid(width) * width;
            let buckets = u64::try_from(hi.checked_sub(origin)? / width).ok()? + 1;
            keys.push(Key::Bucket { column, origin, width, buckets });
        }
        // Checked: two buckets of long spans would overflow, and keys with them.
        let spanned = keys.iter().try_fold(1u64, |n, k| match k {
            Key::Bucket { buckets, .. } => n.checked_mul(*buckets),
            Key::Code { .. } => Some(n),
        });
        if spanned.is_none_or(|n| n > BUCKETS_MAX) {
            return None;
        }
        // The output is the aggregate's: the key columns keep their types.
        for (i, k) in keys.iter().enumerate() {
            let want = match k {
                Key::Code { .. } => DataType::Int32,
                Key::Bucket { .. } => DataType::Timestamp(TimeUnit::Microsecond, None),
            };
            if agg.schema().field(i).data_type() != &want {
                return None;
            }
        }
        Some(CodeAggregateExec {
            keys,
            group_display: group.expr().iter().map(|(e, name)| format!("{e} as {name}")).collect(),
            aggr_expr: agg.aggr_expr().to_vec(),
            filter_expr: agg.filter_expr().to_vec(),
            input: agg.input().clone(),
            schema: agg.schema(),
            props: agg.properties().clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for CodeAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let aggr: Vec<&str> = self.aggr_expr.iter().map(|a| a.name()).collect();
        write!(
            f,
            "CodeAggregateExec: mode=Partial, gby=[{}], aggr=[{}]",
            self.group_display.join(", "),
            aggr.join(", ")
        )
    }
}

impl ExecutionPlan for CodeAggregateExec {
    fn name(&self) -> &str {
        "CodeAggregateExec"
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let mut tnr = TreeNodeRecursion::Continue;
        for e in self.aggr_expr.iter().flat_map(|a| a.expressions()).chain(self.filter_expr.iter().flatten().cloned()) {
            tnr = tnr.visit_sibling(|| f(&e))?;
        }
        Ok(tnr)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("CodeAggregateExec takes one input".into()))?;
        Ok(Arc::new(CodeAggregateExec {
            keys: self.keys.clone(),
            group_display: self.group_display.clone(),
            aggr_expr: self.aggr_expr.clone(),
            filter_expr: self.filter_expr.clone(),
            input,
            schema: self.schema.clone(),
            props: self.props.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let accumulators = (self.aggr_expr.iter().zip(&self.filter_expr))
            .map(|(a, f)| Accumulator::of(a, f))
            .collect::<Result<Vec<_>>>()?;
        let mut groups = Groups {
            keys: self.keys.clone(),
            arguments: self.aggr_expr.iter().map(|a| a.expressions()).collect(),
            filters: self.filter_expr.clone(),
            accumulators,
            slots: Vec::new(),
            far: HashMap::new(),
            group_keys: Vec::new(),
            row_keys: Vec::new(),
            indices: Vec::new(),
            reservation: MemoryConsumer::new(format!("CodeAggregateExec[{partition}]")).register(context.memory_pool()),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let schema = self.schema.clone();
        let batch_size = context.session_config().batch_size();
        let out = futures::stream::once(async move {
            let mut input = input;
            while let Some(batch) = input.next().await {
                groups.update(&batch?)?;
            }
            let batches = groups.emit(&schema, batch_size)?;
            Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), out)))
    }
}

/// Interleaved partial counts or sums: row `i` of a batch goes to lane `i % LANES` of its group, so a
/// run of rows of one group (rows are clustered by key) is not one chain of dependent additions.
const LANES: usize = 4;

/// How one aggregate is updated.
enum Accumulator {
    /// `count(*)` (`count` of a non-NULL constant, unfiltered): the rows per group. Its partial state is
    /// `count`'s own: one `Int64` column, never NULL.
    Rows(Vec<[i64; LANES]>),
    /// `avg` of a `Float64` argument, unfiltered: the non-NULL values and their sum per group. Its
    /// partial state is `avg`'s own: the count (`UInt64`) and the sum (`Float64`), NULL for a group
    /// without values.
    Avg { counts: Vec<[u64; LANES]>, sums: Vec<[f64; LANES]> },
    /// DataFusion's groups accumulator of the aggregate, or its adapter over the plain accumulator (as
    /// DataFusion's own grouped aggregation does).
    DataFusion(Box<dyn GroupsAccumulator>),
}

impl Accumulator {
    fn of(a: &Arc<AggregateFunctionExpr>, filter: &Option<Arc<dyn PhysicalExpr>>) -> Result<Accumulator> {
        let args = a.expressions();
        let constant = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Literal>().is_some_and(|l| !l.value().is_null());
        let state: Vec<DataType> = a.state_fields()?.iter().map(|f| f.data_type().clone()).collect();
        let plain = !a.is_distinct() && filter.is_none() && !args.is_empty();
        match a.fun().name() {
            "count" if plain && args.iter().all(constant) && state == [DataType::Int64] => {
                return Ok(Accumulator::Rows(Vec::new()));
            }
            "avg" if plain && args.len() == 1 && state == [DataType::UInt64, DataType::Float64] => {
                return Ok(Accumulator::Avg { counts: Vec::new(), sums: Vec::new() });
            }
            _ => {}
        }
        if a.groups_accumulator_supported() {
            return Ok(Accumulator::DataFusion(a.create_groups_accumulator()?));
        }
        let a = a.clone();
        Ok(Accumulator::DataFusion(Box::new(GroupsAccumulatorAdapter::new(move || a.create_accumulator()))))
    }

    /// Takes in a batch's rows: their groups (`total` groups so far) and the aggregate's arguments.
    fn update(
        &mut self,
        args: &[Arc<dyn PhysicalExpr>],
        filter: &Option<Arc<dyn PhysicalExpr>>,
        batch: &RecordBatch,
        indices: &[usize],
        total: usize,
    ) -> Result<()> {
        let n = batch.num_rows();
        let values = || args.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<Result<Vec<ArrayRef>>>();
        match self {
            Accumulator::Rows(rows) => {
                rows.resize(total, [0; LANES]);
                let rows = rows.as_mut_slice();
                for (i, &g) in indices.iter().enumerate() {
                    rows[g][i % LANES] += 1;
                }
            }
            Accumulator::Avg { counts, sums } => {
                counts.resize(total, [0; LANES]);
                sums.resize(total, [0.0; LANES]);
                let values = values()?;
                let v = values[0].as_primitive_opt::<Float64Type>().ok_or_else(|| internal("avg of a Float64"))?;
                match v.nulls().filter(|n| n.null_count() > 0) {
                    Some(nulls) => add_values(counts, sums, indices, v.values(), |i| nulls.is_valid(i)),
                    None => add_values(counts, sums, indices, v.values(), |_| true),
                }
            }
            Accumulator::DataFusion(acc) => {
                let filter = filter.as_ref().map(|f| f.evaluate(batch)?.into_array(n)).transpose()?;
                let filter = filter.as_ref().map(|f| f.as_boolean());
                acc.update_batch(&values()?, indices, filter, total)?;
            }
        }
        Ok(())
    }

    /// The partial state of `groups` groups, as the aggregate's own accumulator gives it.
    fn state(&mut self, groups: usize) -> Result<Vec<ArrayRef>> {
        Ok(match self {
            Accumulator::Rows(rows) => {
                rows.resize(groups, [0; LANES]);
                vec![Arc::new(rows.iter().map(|r| r.iter().sum::<i64>()).collect::<Int64Array>())]
            }
            Accumulator::Avg { counts, sums } => {
                counts.resize(groups, [0; LANES]);
                sums.resize(groups, [0.0; LANES]);
                let counts: Vec<u64> = counts.iter().map(|c| c.iter().sum()).collect();
                let sums: Vec<f64> = sums.iter().map(|s| (s[0] + s[1]) + (s[2] + s[3])).collect();
                let nulls = NullBuffer::from(counts.iter().map(|&c| c > 0).collect::<Vec<bool>>());
                let nulls = Some(nulls).filter(|n| n.null_count() > 0);
                vec![
                    Arc::new(UInt64Array::new(counts.into(), nulls.clone())),
                    Arc::new(Float64Array::new(sums.into(), nulls)),
                ]
            }
            Accumulator::DataFusion(acc) => acc.state(EmitTo::All)?,
        })
    }

    fn size(&self) -> usize {
        match self {
            Accumulator::Rows(rows) => rows.capacity() * size_of::<[i64; LANES]>(),
            Accumulator::Avg { counts, sums } => {
                counts.capacity() * size_of::<[u64; LANES]>() + sums.capacity() * size_of::<[f64; LANES]>()
            }
            Accumulator::DataFusion(acc) => acc.size(),
        }
    }
}

/// One partition's groups, numbered in the order their keys were met.
struct Groups {
    keys: Vec<Key>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Accumulator>,
    /// By key below [`SLOTS_MAX`]: its group plus one (0: no group yet).
    slots: Vec<u32>,
    /// The groups of larger keys.
    far: HashMap<u64, u32>,
    /// By group: its key.
    group_keys: Vec<u64>,
    row_keys: Vec<u64>,
    indices: Vec<usize>,
    reservation: MemoryReservation,
    baseline: BaselineMetrics,
}

impl Groups {
    /// The key of every row of `batch` into `row_keys`: the code part (the most significant: codes are
    /// not bounded) times the buckets spanned, plus the buckets in mixed radix, in key order.
    fn row_keys(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        self.row_keys.clear();
        self.row_keys.resize(n, 0);
        let is_code = |k: &&Key| matches!(k, Key::Code { .. });
        for k in self.keys.iter().filter(is_code).chain(self.keys.iter().filter(|k| !is_code(k))) {
            match *k {
                Key::Code { column } => {
                    let codes =
                        batch.column(column).as_primitive_opt::<Int32Type>().ok_or_else(|| internal("codes"))?;
                    let mut negative = false;
                    for (key, &c) in self.row_keys.iter_mut().zip(codes.values()) {
                        negative |= c < 0;
                        *key = c as u32 as u64 + 1;
                    }
                    if negative {
                        return Err(internal("negative codes"));
                    }
                    if let Some(nulls) = codes.nulls() {
                        for i in nulls.iter().enumerate().filter(|(_, valid)| !valid).map(|(i, _)| i) {
                            self.row_keys[i] = 0;
                        }
                    }
                }
                Key::Bucket { column, origin, width, buckets } => {
                    let ts = batch
                        .column(column)
                        .as_primitive_opt::<TimestampMicrosecondType>()
                        .ok_or_else(|| internal("times"))?;
                    // The widths are constants here, so the division is a multiplication.
                    let (keys, ts) = (&mut self.row_keys[..], &ts.values()[..]);
                    let outside = match width {
                        1_000_000 => add_buckets(keys, ts, origin, 1_000_000, buckets),
                        60_000_000 => add_buckets(keys, ts, origin, 60_000_000, buckets),
                        3_600_000_000 => add_buckets(keys, ts, origin, 3_600_000_000, buckets),
                        86_400_000_000 => add_buckets(keys, ts, origin, 86_400_000_000, buckets),
                        width => add_buckets(keys, ts, origin, width as u64, buckets),
                    };
                    if outside {
                        return Err(internal("a time outside the scan's statistics"));
                    }
                }
            }
        }
        Ok(())
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        let n = batch.num_rows();
        self.row_keys(batch)?;
        self.indices.clear();
        self.indices.resize(n, 0);
        let largest = self.row_keys.iter().copied().max().unwrap_or(0);
        if largest < SLOTS_MAX {
            // Every key has its slot. Keys new to this partition get their groups first; then a row's
            // group is one load, with no branch.
            if self.slots.len() <= largest as usize {
                self.slots.resize((largest as usize + 1).max(2 * self.slots.len()).min(SLOTS_MAX as usize), 0);
            }
            for &key in &self.row_keys {
                if self.slots[key as usize] == 0 {
                    self.group_keys.push(key);
                    self.slots[key as usize] =
                        u32::try_from(self.group_keys.len()).map_err(|_| internal("too many groups"))?;
                }
            }
            let slots = &self.slots[..];
            for (g, &key) in self.indices.iter_mut().zip(&self.row_keys) {
                *g = slots[key as usize] as usize - 1;
            }
        } else {
            for i in 0..n {
                self.indices[i] = self.group_of(self.row_keys[i])? as usize;
            }
        }
        let total = self.group_keys.len();
        for ((acc, args), filter) in self.accumulators.iter_mut().zip(&self.arguments).zip(&self.filters) {
            acc.update(args, filter, batch, &self.indices, total)?;
        }
        let size = self.accumulators.iter().map(Accumulator::size).sum::<usize>()
            + self.slots.capacity() * size_of::<u32>()
            + self.far.capacity() * 2 * size_of::<u64>()
            + (self.group_keys.capacity() + self.row_keys.capacity() + self.indices.capacity()) * size_of::<u64>();
        self.reservation.try_resize(size)
    }

    /// The group of `key`, a new one if it has none yet.
    fn group_of(&mut self, key: u64) -> Result<u32> {
        if let Some(&s) = self.slots.get(key as usize)
            && s != 0
        {
            return Ok(s - 1);
        }
        let next = u32::try_from(self.group_keys.len()).map_err(|_| internal("too many groups"))?;
        if key < SLOTS_MAX {
            if self.slots.len() <= key as usize {
                self.slots.resize((key as usize + 1).max(2 * self.slots.len()).min(SLOTS_MAX as usize), 0);
            }
            self.slots[key as usize] = next + 1;
            self.group_keys.push(key);
            return Ok(next);
        }
        Ok(*self.far.entry(key).or_insert_with(|| {
            self.group_keys.push(key);
            next
        }))
    }

    /// The groups' keys and partial states, in batches of at most `batch_size` rows.
    fn emit(mut self, schema: &SchemaRef, batch_size: usize) -> Result<Vec<RecordBatch>> {
        let _timer = self.baseline.elapsed_compute().timer();
        if self.group_keys.is_empty() {
            return Ok(Vec::new());
        }
        // Each key column from the keys' parts: the buckets from the least significant (the last),
        // then the code part, which is what remains.
        let mut rest = self.group_keys.clone();
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.keys.len()];
        for (i, k) in self.keys.iter().enumerate().rev() {
            if let Key::Bucket { origin, width, buckets, .. } = *k {
                let times = rest.iter().map(|&r| origin + (r % buckets) as i64 * width);
                columns[i] = Some(Arc::new(TimestampMicrosecondArray::from_iter_values(times)));
                rest.iter_mut().for_each(|r| *r /= buckets);
            }
        }
        for (i, k) in self.keys.iter().enumerate() {
            if let Key::Code { .. } = k {
                let codes = rest.iter().map(|&r| (r > 0).then(|| (r - 1) as i32)).collect::<Int32Array>();
                columns[i] = Some(Arc::new(codes));
            }
        }
        let mut columns: Vec<ArrayRef> = columns.into_iter().flatten().collect();
        for acc in &mut self.accumulators {
            columns.extend(acc.state(self.group_keys.len())?);
        }
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        self.baseline.record_output(batch.num_rows());
        let rows = batch.num_rows();
        Ok((0..rows).step_by(batch_size.max(1)).map(|at| batch.slice(at, batch_size.min(rows - at))).collect())
    }
}

/// Counts and sums the values `valid` keeps by group (`indices`), row `i` in lane `i % LANES`, without
/// a branch: a NULL row adds nothing.
#[inline(always)]
fn add_values(
    counts: &mut [[u64; LANES]],
    sums: &mut [[f64; LANES]],
    indices: &[usize],
    values: &[f64],
    valid: impl Fn(usize) -> bool,
) {
    for (i, (&g, &x)) in indices.iter().zip(values).enumerate() {
        let (lane, ok) = (i % LANES, valid(i));
        counts[g][lane] += ok as u64;
        sums[g][lane] += if ok { x } else { 0.0 };
    }
}

/// Appends the bucket of each time, `(t - origin) / width`, to its row's key (in mixed radix, below
/// `buckets`); true if a time falls outside `origin ..` and the buckets.
#[inline(always)]
fn add_buckets(keys: &mut [u64], ts: &[i64], origin: i64, width: u64, buckets: u64) -> bool {
    let mut outside = false;
    for (key, &t) in keys.iter_mut().zip(ts) {
        let b = t.wrapping_sub(origin) as u64 / width;
        outside |= t < origin || b >= buckets;
        *key = *key * buckets + b;
    }
    outside
}

fn internal(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("CodeAggregateExec: {what}"))
}
