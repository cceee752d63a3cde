//! DataFusion integration: the [`StoredTable`] provider (scan with pruning, INSERT, DELETE, TRUNCATE)
//! and the [`EngineSchema`] that lists stored tables and persistent views. The provider reads through
//! [`TableSnapshot`]s only, never through writer internals.

pub(crate) mod code_agg;
pub(crate) mod codes;
pub mod dml;
pub(crate) mod key_max;
pub mod latest;
pub mod memory;
pub mod realtime;
pub(crate) mod scan;
pub mod symbols;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, Result, not_impl_err};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use parking_lot::RwLock;

use crate::engine::{Engine, Table};
use crate::error::Error;
use crate::shards::Shards;
use scan::{PlanCounts, TableScanSource, Unit, prune_units, pruning_predicate};

/// A stored table as DataFusion sees it.
#[derive(Debug)]
pub struct StoredTable {
    engine: Arc<Engine>,
    table: Arc<Table>,
    def: Arc<crate::types::TableDef>,
    /// Other writers' shards whose segments of this table are read with this node's own.
    shards: Option<Arc<Shards>>,
}

impl StoredTable {
    pub fn new(engine: Arc<Engine>, table: Arc<Table>) -> Self {
        let def = Arc::new(table.def.clone());
        StoredTable { engine, table, def, shards: None }
    }

    /// The table read as the union of this node's rows and the shards' (see [`crate::shards`]).
    pub fn with_shards(mut self, shards: Option<Arc<Shards>>) -> Self {
        self.shards = shards;
        self
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Plans `filters` (logical, possibly qualified) as one physical predicate over the table schema.
    fn physical_predicate(&self, state: &dyn Session, filters: &[Expr]) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        physical_predicate(state, &self.table.schema, filters)
    }
}

/// Adds other shards' segments to a snapshot of this node's table, partition by partition (keys in
/// order, as a snapshot's are).
fn merge_shard_segments(snapshot: &mut crate::engine::TableSnapshot, theirs: Vec<crate::shards::ShardSegment>) {
    for (key, seg) in theirs {
        let at = snapshot.partitions.partition_point(|p| p.key < key);
        if snapshot.partitions.get(at).is_none_or(|p| p.key != key) {
            let empty = crate::engine::PartitionSnapshot { key, segments: Vec::new(), batches: Vec::new() };
            snapshot.partitions.insert(at, empty);
        }
        snapshot.partitions[at].segments.push(seg);
    }
}

/// Plans `filters` (logical, possibly qualified, over the columns of `schema`) as one physical
/// predicate over `schema`; `None` without filters.
pub(crate) fn physical_predicate(
    state: &dyn Session,
    schema: &SchemaRef,
    filters: &[Expr],
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let Some(expr) = conjunction(filters.iter().cloned().map(unnormalize_col)) else { return Ok(None) };
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    Ok(Some(state.create_physical_expr(expr, &df_schema)?))
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.table.schema.clone();
        let projection: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
        let projected_schema = Arc::new(schema.project(&projection)?);
        let mut snapshot = self.table.snapshot();
        let predicate = self.physical_predicate(state, filters)?;
        let pruning = predicate.as_ref().and_then(|p| pruning_predicate(p, &schema));
        if let Some(shards) = self.shards.clone() {
            let query = state.execution_props().query_execution_start_time.and_then(|t| t.timestamp_nanos_opt());
            let check = query.map_or(crate::shards::Check::Now, crate::shards::Check::Query);
            let (def, table_schema, pruning) = (self.def.clone(), schema.clone(), pruning.clone());
            // Catalog checks and segment fetches wait on the store: off the async threads.
            let theirs = tokio::task::spawn_blocking(move || {
                let keep = |entries: &[&crate::catalog::SegmentEntry]| match &pruning {
                    Some(pred) => scan::prune_segment_entries(pred, &def, &table_schema, entries),
                    None => vec![true; entries.len()],
                };
                shards.segments(&def, check, keep)
            })
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(DataFusionError::from)?;
            merge_shard_segments(&mut snapshot, theirs);
        }

        let mut counts = PlanCounts::default();
        let mut units = Vec::new();
        for p in &snapshot.partitions {
            counts.partitions.1 += 1;
            let mut part_units: Vec<Unit> = Vec::new();
            for seg in &p.segments {
                for rg in 0..seg.segment.footer.row_groups.len() {
                    part_units.push(Unit::RowGroup { seg: seg.clone(), rg });
                }
            }
            part_units.extend(p.batches.iter().map(|b| Unit::Mem { batch: b.clone() }));
            let keep = match &pruning {
                Some(pred) => prune_units(pred, &self.def, &schema, &part_units),
                None => vec![true; part_units.len()],
            };
            // Segments by address: ids repeat across shards.
            let mut seg_total = std::collections::HashSet::new();
            let mut seg_kept = std::collections::HashSet::new();
            let before = units.len();
            for (u, k) in part_units.into_iter().zip(keep) {
                if let Unit::RowGroup { seg, .. } = &u {
                    seg_total.insert(Arc::as_ptr(seg));
                    counts.row_groups.1 += 1;
                    if k {
                        seg_kept.insert(Arc::as_ptr(seg));
                        counts.row_groups.0 += 1;
                    }
                } else if k {
                    counts.mem_batches += 1;
                }
                if k {
                    units.push(u);
                }
            }
            counts.segments.1 += seg_total.len();
            counts.segments.0 += seg_kept.len();
            if units.len() > before {
                counts.partitions.0 += 1;
            }
        }
        let source = TableScanSource {
            table_name: self.table.name().to_string(),
            def: self.def.clone(),
            schema,
            projection,
            projected_schema,
            units: Arc::new(units),
            counts,
            fetch: limit,
            target_partitions: state.config().target_partitions(),
            partitions_fixed: false,
            filters: Vec::new(),
            dynamic: Vec::new(),
            newest_first: false,
            latest: None,
            exact_rows: filters.is_empty(),
            column_stats: Default::default(),
            symbols: Vec::new(),
            metrics: ExecutionPlanMetricsSet::new(),
        };
        Ok(DataSourceExec::from_data_source(source))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return not_impl_err!("{insert_op} is not supported; use INSERT INTO");
        }
        let sink = StoredSink { engine: self.engine.clone(), table: self.table.clone() };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    /// DataFusion's own DELETE hands the provider only the conjuncts of `WHERE` that name the target
    /// alone (a subquery's would be dropped and the delete widened), so it is refused: DELETE and
    /// UPDATE are planned by [`dml`], which runs the whole predicate. Only statements that bypass it
    /// come here (`PREPARE` / `EXECUTE` of a DELETE, for one).
    async fn delete_from(&self, _state: &dyn Session, _filters: Vec<Expr>) -> Result<Arc<dyn ExecutionPlan>> {
        not_impl_err!("this form of DELETE is not supported; send the DELETE statement itself")
    }

    async fn truncate(&self, _state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TruncateExec::new(self.engine.clone(), self.table.clone())))
    }
}

/// INSERT: gathers the statement's rows and appends them as one transaction.
#[derive(Debug)]
struct StoredSink {
    engine: Arc<Engine>,
    table: Arc<Table>,
}

impl DisplayAs for StoredSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredSink: table={}", self.table.name())
    }
}

#[async_trait]
impl DataSink for StoredSink {
    fn schema(&self) -> &SchemaRef {
        &self.table.schema
    }

    async fn write_all(&self, mut data: SendableRecordBatchStream, _context: &Arc<TaskContext>) -> Result<u64> {
        let mut batches = Vec::new();
        while let Some(b) = data.next().await {
            batches.push(b?);
        }
        let engine = self.engine.clone();
        let table = self.table.clone();
        let rows = tokio::task::spawn_blocking(move || engine.append(&table, &batches))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        Ok(rows)
    }
}

/// TRUNCATE: runs when executed (never at planning, so EXPLAIN deletes nothing).
#[derive(Debug)]
struct TruncateExec {
    engine: Arc<Engine>,
    table: Arc<Table>,
    props: Arc<PlanProperties>,
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]))
}

impl TruncateExec {
    fn new(engine: Arc<Engine>, table: Arc<Table>) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        TruncateExec { engine, table, props: Arc::new(props) }
    }
}

impl DisplayAs for TruncateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TruncateExec: table={}", self.table.name())
    }
}

impl ExecutionPlan for TruncateExec {
    fn name(&self) -> &str {
        "TruncateExec"
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }
    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn execute(&self, _partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let engine = self.engine.clone();
        let table = self.table.clone();
        let fut = async move {
            let n = tokio::task::spawn_blocking(move || engine.truncate(&table))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
            Ok(RecordBatch::try_new(count_schema(), vec![Arc::new(UInt64Array::from(vec![n]))])?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(count_schema(), futures::stream::once(fut))))
    }
}

/// The `public` schema: stored tables and persistent views. Views are planned by DataFusion and persisted
/// through [`SchemaProvider::register_table`], so `CREATE VIEW` survives a restart whichever front end
/// (embedded or the server) runs it. Other providers registered here (by the server or by embedders)
/// live for the session only.
#[derive(Debug)]
pub struct EngineSchema {
    engine: Arc<Engine>,
    others: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    system: RwLock<std::collections::HashSet<String>>,
    /// While views are replayed on open, registering them must not write the catalog again.
    pub(crate) loading: std::sync::atomic::AtomicBool,
    /// Other writers' shards, read with this node's tables (see [`crate::shards`]).
    shards: Option<Arc<Shards>>,
}

impl EngineSchema {
    pub fn new(engine: Arc<Engine>, shards: Option<Arc<Shards>>) -> Self {
        EngineSchema {
            engine,
            others: RwLock::new(HashMap::new()),
            system: RwLock::default(),
            loading: false.into(),
            shards,
        }
    }

    /// A table only the shards have so far (created by a writer, by DDL or by line protocol) is
    /// created here too, empty, so that it can be named; its rows are the shards'.
    async fn adopt(&self, name: &str) -> Result<Option<Arc<Table>>> {
        let Some(shards) = self.shards.clone() else { return Ok(None) };
        if self.others.read().contains_key(name) {
            return Ok(None);
        }
        let (engine, name) = (self.engine.clone(), name.to_string());
        // The catalogs are checked on the store: off the async threads.
        let adopted = tokio::task::spawn_blocking(move || -> crate::Result<Option<Arc<Table>>> {
            let defs = shards.tables(crate::shards::Check::Now)?;
            let Some(def) = defs.into_iter().find(|d| d.name == name) else { return Ok(None) };
            Ok(Some(engine.create_table(def, true)?))
        });
        Ok(adopted.await.map_err(|e| DataFusionError::External(Box::new(e)))??)
    }

    /// Adds a table computed by another layer (such as `models`): never written to the catalog, and
    /// neither dropped nor replaced by SQL.
    pub fn add_system_table(&self, name: &str, table: Arc<dyn TableProvider>) {
        self.others.write().insert(name.to_string(), table);
        self.system.write().insert(name.to_string());
    }

    pub(crate) fn refuse_system(&self, name: &str) -> Result<()> {
        if self.system.read().contains(name) {
            return Err(Error::invalid(
                crate::error::SqlState::WrongObjectType,
                format!("\"{name}\" is a system view; it cannot be dropped or replaced"),
            )
            .into());
        }
        Ok(())
    }
}

#[async_trait]
impl SchemaProvider for EngineSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.engine.tables().iter().map(|t| t.name().to_string()).collect();
        names.extend(self.others.read().keys().cloned());
        if let Some(shards) = &self.shards {
            match shards.tables(crate::shards::Check::Cached) {
                Ok(defs) => names.extend(defs.into_iter().map(|d| d.name)),
                Err(e) => tracing::warn!("could not read the shards' catalogs: {e}"),
            }
        }
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let local = match self.engine.table(name) {
            Some(t) => Some(t),
            None => self.adopt(name).await?,
        };
        if let Some(t) = local {
            // A continuous rollup's table is this node's alone: its buckets are computed here from
            // the union of the raw rows, and the shards' own buckets would count rows twice.
            let rollup = crate::rollup::find(&self.engine, name);
            let shards = if rollup.is_some() { None } else { self.shards.clone() };
            let stored: Arc<dyn TableProvider> = Arc::new(StoredTable::new(self.engine.clone(), t).with_shards(shards));
            // A continuous rollup's table reads in real time (unless it opted out).
            if let Some(r) = rollup.filter(|r| r.realtime) {
                return Ok(Some(Arc::new(realtime::RealtimeRollup::new(self.engine.clone(), stored, r))));
            }
            return Ok(Some(stored));
        }
        Ok(self.others.read().get(name).cloned())
    }

    fn register_table(&self, name: String, table: Arc<dyn TableProvider>) -> Result<Option<Arc<dyn TableProvider>>> {
        self.refuse_system(&name)?;
        if self.engine.table(&name).is_some() {
            return Err(Error::invalid(
                crate::error::SqlState::DuplicateTable,
                format!("relation \"{name}\" already exists"),
            )
            .into());
        }
        if table.table_type() == TableType::View
            && !self.loading.load(std::sync::atomic::Ordering::Acquire)
            && let Some(sql) = table.get_table_definition()
        {
            self.engine.put_view(&name, sql)?;
        }
        Ok(self.others.write().insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.refuse_system(name)?;
        if let Some(t) = self.engine.table(name) {
            let provider: Arc<dyn TableProvider> = Arc::new(StoredTable::new(self.engine.clone(), t));
            self.engine.drop_table(name)?;
            return Ok(Some(provider));
        }
        let removed = self.others.write().remove(name);
        if removed.as_ref().is_some_and(|t| t.table_type() == TableType::View) {
            self.engine.remove_view(name)?;
        }
        Ok(removed)
    }

    /// This node's tables and views (a table only the shards have yet can still be created here,
    /// with the shards' definition, before [`EngineSchema::table`] adopts it).
    fn table_exist(&self, name: &str) -> bool {
        self.engine.table(name).is_some() || self.others.read().contains_key(name)
    }
}
