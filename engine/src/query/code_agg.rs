//! Partial aggregation indexed by code: grouping on one text column read as codes (see
//! `query::symbols`) needs no hash table, since the codes of a query are dense, `0..n` in the order the
//! values were met. [`CodeAggregateExec`] takes the place of DataFusion's partial `AggregateExec` over
//! such a key: a row's group is its code plus one (group 0 holds the NULL key), and DataFusion's own
//! groups accumulators (`count`, `sum`, `avg`, `min`, `max`, ... with their partial states) are updated
//! with those group indices. Its output is the aggregate's own, row for row and type for type: one row
//! per key seen, so the final aggregate above merges it as it would have. DataFusion's hash table was
//! the largest single cost of grouping by a tag (`GroupValuesPrimitive::intern`).
//!
//! Aggregates with an `ORDER BY` of their own, and aggregates kept to a limit, stay DataFusion's.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch};
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};

/// A partial aggregate grouped by one column of codes; see the module documentation.
#[derive(Debug)]
pub(crate) struct CodeAggregateExec {
    /// The code column in the input.
    key: Arc<dyn PhysicalExpr>,
    key_name: String,
    aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    filter_expr: Vec<Option<Arc<dyn PhysicalExpr>>>,
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CodeAggregateExec {
    /// `agg` computed by code, when it is a partial aggregate of one `Int32` column with no limit and no
    /// aggregate ordered by its own `ORDER BY`.
    pub(crate) fn of(agg: &AggregateExec) -> Option<CodeAggregateExec> {
        let group = agg.group_expr();
        if *agg.mode() != AggregateMode::Partial
            || !group.is_single()
            || group.expr().len() != 1
            || agg.limit_options().is_some()
            || agg.aggr_expr().iter().any(|a| !a.order_bys().is_empty())
        {
            return None;
        }
        let (key, key_name) = &group.expr()[0];
        let column = key.downcast_ref::<Column>()?;
        if agg.input_schema().field(column.index()).data_type() != &DataType::Int32 {
            return None;
        }
        Some(CodeAggregateExec {
            key: key.clone(),
            key_name: key_name.clone(),
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
            "CodeAggregateExec: mode=Partial, gby=[{} as {}], aggr=[{}]",
            self.key,
            self.key_name,
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
        let mut tnr = f(&self.key)?;
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
            key: self.key.clone(),
            key_name: self.key_name.clone(),
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
        let accumulators = self.aggr_expr.iter().map(groups_accumulator).collect::<Result<Vec<_>>>()?;
        let mut groups = Groups {
            key: self.key.clone(),
            arguments: self.aggr_expr.iter().map(|a| a.expressions()).collect(),
            filters: self.filter_expr.clone(),
            accumulators,
            seen: Vec::new(),
            unseen: 0,
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

/// DataFusion's groups accumulator of an aggregate, or its adapter over the plain accumulator (as
/// DataFusion's own grouped aggregation does).
fn groups_accumulator(a: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if a.groups_accumulator_supported() {
        a.create_groups_accumulator()
    } else {
        let a = a.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || a.create_accumulator())))
    }
}

/// One partition's groups: group `g` is the key with code `g - 1`, group 0 the NULL key.
struct Groups {
    key: Arc<dyn PhysicalExpr>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Groups some row fell into (the accumulators hold a state for every index below the largest).
    seen: Vec<bool>,
    /// How many of `seen` are false.
    unseen: usize,
    indices: Vec<usize>,
    reservation: MemoryReservation,
    baseline: BaselineMetrics,
}

impl Groups {
    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let _timer = self.baseline.elapsed_compute().timer();
        let n = batch.num_rows();
        let key = self.key.evaluate(batch)?.into_array(n)?;
        let codes = key
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| DataFusionError::Internal(format!("group codes of type {}", key.data_type())))?;
        self.indices.clear();
        self.indices.extend(codes.values().iter().map(|&c| c as u32 as usize + 1));
        if let Some(nulls) = codes.nulls() {
            for i in nulls.iter().enumerate().filter(|(_, valid)| !valid).map(|(i, _)| i) {
                self.indices[i] = 0;
            }
        }
        let Some(&top) = self.indices.iter().max() else { return Ok(()) };
        if top >= i32::MAX as usize + 1 {
            return Err(DataFusionError::Internal("negative group code".into()));
        }
        if self.seen.len() <= top {
            self.unseen += top + 1 - self.seen.len();
            self.seen.resize(top + 1, false);
        }
        // Soon every group has been seen, and rows need not be looked at for it.
        if self.unseen > 0 {
            for &g in &self.indices {
                self.unseen -= usize::from(!self.seen[g]);
                self.seen[g] = true;
            }
        }
        let total = self.seen.len();
        for ((acc, args), filter) in self.accumulators.iter_mut().zip(&self.arguments).zip(&self.filters) {
            let values = args.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<Result<Vec<ArrayRef>>>()?;
            let filter = filter.as_ref().map(|f| f.evaluate(batch)?.into_array(n)).transpose()?;
            let filter = filter.as_ref().map(|f| f.as_boolean());
            acc.update_batch(&values, &self.indices, filter, total)?;
        }
        let size = self.accumulators.iter().map(|a| a.size()).sum::<usize>()
            + self.seen.capacity()
            + self.indices.capacity() * size_of::<usize>();
        self.reservation.try_resize(size)
    }

    /// The partial states of the groups seen, in batches of at most `batch_size` rows.
    fn emit(mut self, schema: &SchemaRef, batch_size: usize) -> Result<Vec<RecordBatch>> {
        let _timer = self.baseline.elapsed_compute().timer();
        if self.seen.is_empty() {
            return Ok(Vec::new());
        }
        let keys: ArrayRef =
            Arc::new((0..self.seen.len()).map(|g| (g > 0).then(|| (g - 1) as i32)).collect::<Int32Array>());
        let mut columns = vec![keys];
        for acc in &mut self.accumulators {
            columns.extend(acc.state(EmitTo::All)?);
        }
        let seen = BooleanArray::from(std::mem::take(&mut self.seen));
        let columns = columns.iter().map(|c| filter(c, &seen)).collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        self.baseline.record_output(batch.num_rows());
        let rows = batch.num_rows();
        Ok((0..rows).step_by(batch_size.max(1)).map(|at| batch.slice(at, batch_size.min(rows - at))).collect())
    }
}
