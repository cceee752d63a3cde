//! Queries across workers (docs/scale-out.md).
//!
//! A coordinator plans a statement as a single node does; datafusion-distributed then cuts the
//! physical plan into stages at its shuffles and merges, and runs the stages that read stored tables
//! as tasks on workers, streaming between them over Arrow Flight. Each task reads its own share of the
//! scan's row groups, from the object store the coordinator's data directory writes through. This
//! module is what trafficdb adds to that engine:
//! - [`ScanCodec`]: a table scan travels as the list of its row groups (segment object names and
//!   row-group numbers), its filters (DataFusion's protobuf expressions) and its memtable rows (Arrow
//!   IPC); a worker opens the segments through its [`SegmentCache`];
//! - how many tasks a scan runs as (one per [`ClusterOptions::rows_per_task`] rows, at most one per
//!   worker), and how its units are dealt to them (round robin, so an order such as newest-first
//!   holds within every task);
//! - [`WorkerSession`]: a worker's session, with trafficdb's functions and the codec.
//!
//! What does not travel: a scan whose text columns are read as per-query codes (`query::symbols`;
//! codes mean nothing in another process, so a distributed session does not make them), and any plan
//! node other than the scan that has no protobuf form (those stages stay on the coordinator, as
//! single-task stages do).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::Session;
use datafusion::common::format::ExplainFormat;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{FunctionRegistry, SessionState, TaskContext};
use datafusion::logical_expr::{LogicalPlan, PlanType, StringifiedPlan, ToStringifiedPlan};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExec, DistributedExt, DistributedLeafExec,
    ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse, SessionStateBuilderExt, Worker, WorkerQueryContext,
    WorkerResolver, WorkerSessionBuilder, display_plan_ascii,
};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::PhysicalExprNode;
use parking_lot::Mutex;
use prost::Message;
use serde::{Deserialize, Serialize};
use trafficdb_udfs::model::{ModelStore, Registry};
use url::Url;

pub use crate::cache::SegmentCache;
use crate::catalog::{CATALOG_FILE, SegmentEntry};
use crate::engine::{MemBatch, SegmentHandle};
use crate::error::{Error, SqlState};
use crate::query::key_max::LatestMode;
use crate::query::scan::{PlanCounts, TableScanSource, Unit};
use crate::store::ObjectStorage;
use crate::types::TableDef;

/// How a coordinator spreads its scans.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A scan runs as one task per this many rows (rounded up), at most one per worker.
    pub rows_per_task: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        // About a second of one core's scan work: smaller scans are not worth a network hop.
        ClusterOptions { rows_per_task: 4_000_000 }
    }
}

/// What makes a session a coordinator: its workers and how it spreads scans over them.
#[derive(Clone)]
pub struct Cluster {
    /// The workers' URLs (`http://host:port` of their worker services).
    pub workers: Vec<Url>,
    /// This node's own worker and its URL: single-task stages run on it, without a network hop (the
    /// stages kept off the workers among them); the URL must be one the workers can reach (they read
    /// what its stages produce).
    pub local: (Worker, Url),
    pub options: ClusterOptions,
}

/// How often the coordinator checks that its workers answer.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The workers that answered their last check (a TCP connection to each, every [`CHECK_EVERY`]). A
/// worker that stops is left out of new queries within that time (the queries it was running fail),
/// and taken back once it answers; with none left, every stage runs on the coordinator.
struct LiveWorkers(Arc<parking_lot::RwLock<Vec<Url>>>);

impl WorkerResolver for LiveWorkers {
    fn get_urls(&self) -> Result<Vec<Url>> {
        Ok(self.0.read().clone())
    }
}

impl LiveWorkers {
    /// Starts checking `all` (on the current runtime) until the list is dropped.
    fn watch(all: Vec<Url>) -> LiveWorkers {
        let live = Arc::new(parking_lot::RwLock::new(all.clone()));
        let list = Arc::downgrade(&live);
        tokio::spawn(async move {
            loop {
                let mut up = Vec::with_capacity(all.len());
                for url in &all {
                    if answers(url).await {
                        up.push(url.clone());
                    }
                }
                {
                    let Some(list) = list.upgrade() else { return };
                    let mut live = list.write();
                    if *live != up {
                        tracing::warn!(
                            "workers answering: {} of {} ({})",
                            up.len(),
                            all.len(),
                            up.iter().map(Url::as_str).collect::<Vec<_>>().join(", ")
                        );
                    }
                    *live = up;
                }
                tokio::time::sleep(CHECK_EVERY).await;
            }
        });
        LiveWorkers(live)
    }
}

/// Whether the worker at `url` accepts a connection within a second.
async fn answers(url: &Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { return false };
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(tokio::time::timeout(std::time::Duration::from_secs(1), connect).await, Ok(Ok(_)))
}

/// Makes `builder` (whose query planner is trafficdb's) plan as a coordinator: queries are cut into
/// stages run by the cluster's workers; statements that change data are planned and run here alone.
/// Must be called on a tokio runtime (the workers are checked from a task of its own).
pub(crate) fn coordinate(
    mut builder: SessionStateBuilder,
    cluster: &Cluster,
    store: Option<String>,
    mirror: Option<PathBuf>,
) -> Result<SessionStateBuilder> {
    let local = builder.query_planner().clone().expect("the query planner is set first");
    let options = cluster.options.clone();
    let known = worker_functions()?;
    builder = builder
        .with_distributed_planner()
        .with_distributed_worker_resolver(LiveWorkers::watch(cluster.workers.clone()))
        .with_distributed_user_codec(ScanCodec::coordinator(store, mirror))
        .with_distributed_desired_task_count_handler(move |ev: DesiredTaskCountEvent<'_>| {
            desired_tasks(&options, &known, ev)
        })
        .with_distributed_scale_up_leaf_node_handler(split_scan);
    // A UNION's children would otherwise run as tasks of their own, each shipped whole, also those
    // that cannot travel (a table function's rows); a stage with such a leaf stays on this node.
    builder = builder.with_distributed_children_isolator_unions(false).expect("a known setting");
    let (worker, url) = &cluster.local;
    builder = builder.with_distributed_local_worker_context(worker.to_local_worker_context(url.clone()));
    let distributed = builder.query_planner().clone().expect("set by with_distributed_planner");
    Ok(builder.with_query_planner(Arc::new(StatementRouter { local, distributed })))
}

/// Plans queries through the distributed planner and statements that change data (INSERT, DELETE,
/// UPDATE, DDL, COPY) through the local one: they run where the table's writer is.
#[derive(Debug)]
struct StatementRouter {
    local: Arc<dyn QueryPlanner + Send + Sync>,
    distributed: Arc<dyn QueryPlanner + Send + Sync>,
}

#[async_trait::async_trait]
impl QueryPlanner for StatementRouter {
    async fn create_physical_plan(&self, plan: &LogicalPlan, session: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        let changes = plan.exists(|p| {
            Ok(match p {
                LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) => true,
                LogicalPlan::Extension(e) => e.node.as_any().is::<crate::query::dml::DmlNode>(),
                _ => false,
            })
        })?;
        if changes {
            return self.local.create_physical_plan(plan, session).await;
        }
        // DataFusion plans an EXPLAIN's query itself, not through the session's query planner: the
        // distributed plan is drawn here, its stages and tasks as datafusion-distributed draws them.
        if let LogicalPlan::Explain(e) = plan
            && e.explain_format == ExplainFormat::Indent
            && e.logical_optimization_succeeded
        {
            let physical = self.distributed.create_physical_plan(&e.plan, session).await?;
            if physical.is::<DistributedExec>() {
                let mut plans = e.stringified_plans.clone();
                plans.push(e.plan.to_stringified(PlanType::FinalLogicalPlan));
                plans.push(StringifiedPlan::new(
                    PlanType::FinalPhysicalPlan,
                    display_plan_ascii(physical.as_ref(), false),
                ));
                return Ok(Arc::new(ExplainExec::new(e.schema.inner().clone(), plans, e.verbose)));
            }
        }
        self.distributed.create_physical_plan(plan, session).await
    }
}

/// The scan under a `DataSourceExec`, if `plan` is one of ours.
fn table_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&TableScanSource> {
    plan.downcast_ref::<DataSourceExec>()?.data_source().downcast_ref::<TableScanSource>()
}

/// Whether a scan can be sent to a worker (see the module documentation).
fn shippable(scan: &TableScanSource) -> bool {
    scan.symbols.is_empty()
}

/// Whether `plan` may hold what DataFusion's protobuf form would lose on the way to a worker: the
/// `FILTER` of a window aggregate (`count(*) FILTER (WHERE ...) OVER w`: datafusion-proto 55's window
/// node has no field for it, so a worker would count every row). DataFusion does not say whether a
/// window aggregate has one (the accessor's trait is private), so every window aggregate stays here;
/// window functions proper (`row_number`, the anomaly functions) travel.
fn lost_in_transit(plan: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::physical_expr::window::{PlainAggregateWindowExpr, SlidingAggregateWindowExpr, WindowExpr};
    use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
    let aggregate = |e: &Arc<dyn WindowExpr>| {
        let e = e.as_any();
        e.is::<PlainAggregateWindowExpr>() || e.is::<SlidingAggregateWindowExpr>()
    };
    let exprs = match (plan.downcast_ref::<BoundedWindowAggExec>(), plan.downcast_ref::<WindowAggExec>()) {
        (Some(w), _) => w.window_expr(),
        (_, Some(w)) => w.window_expr(),
        _ => return false,
    };
    exprs.iter().any(aggregate)
}

/// The task count of a stage that reads a table, and of one with a node no worker can run (a
/// `DesiredTaskCountHandler`; any other node takes its children's).
fn desired_tasks(
    options: &ClusterOptions,
    known: &HashSet<String>,
    ev: DesiredTaskCountEvent<'_>,
) -> Option<Result<DesiredTaskCountEventResponse>> {
    // One task, on this node (with the whole of its stage).
    if calls_unknown_function(ev.plan, known) || lost_in_transit(ev.plan) {
        return Some(Ok(DesiredTaskCountEventResponse::maximum(1)));
    }
    let scan = table_scan(ev.plan)?;
    if !shippable(scan) {
        return Some(Ok(DesiredTaskCountEventResponse::maximum(1)));
    }
    let rows: usize = scan.units.iter().map(Unit::rows).sum();
    let tasks = rows.div_ceil(options.rows_per_task.max(1)).clamp(1, scan.units.len().max(1));
    Some(Ok(DesiredTaskCountEventResponse::desired(tasks)))
}

/// A scan cut into `ev.task_count` scans of disjoint units, dealt round robin (a
/// `ScaleUpLeafNodeHandler`). Every part keeps the whole scan's partition count, as
/// `DistributedLeafExec` requires.
pub(crate) fn split_scan(ev: ScaleUpLeafNodeEvent<'_>) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let scan = table_scan(ev.plan)?;
    if ev.task_count <= 1 || !shippable(scan) {
        return None;
    }
    let partitions = scan.n_partitions();
    let parts = (0..ev.task_count).map(|task| {
        let mut part = scan.clone();
        let units = scan.units.iter().skip(task).step_by(ev.task_count).cloned().collect();
        part.units = Arc::new(units);
        part.target_partitions = partitions;
        part.partitions_fixed = true;
        part.column_stats = Default::default();
        part.metrics = ExecutionPlanMetricsSet::new();
        DataSourceExec::from_data_source(part) as Arc<dyn ExecutionPlan>
    });
    Some(
        DistributedLeafExec::try_new(ev.plan.clone(), parts)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

/// A scan as it travels: the JSON of this, then the blobs it names (by index).
#[derive(Serialize, Deserialize)]
struct ScanSpec {
    /// The object store the segments are in (a worker serves one).
    store: String,
    table_name: String,
    def: TableDef,
    projection: Vec<usize>,
    /// Object names and catalog entries of the segments the units read.
    segments: Vec<(String, SegmentEntry)>,
    units: Vec<UnitSpec>,
    counts: PlanCounts,
    fetch: Option<usize>,
    partitions: usize,
    partitions_fixed: bool,
    filters: Vec<usize>,
    dynamic: Vec<usize>,
    newest_first: bool,
    latest: Option<(usize, usize)>,
    exact_rows: bool,
    /// The lengths of the blobs that follow the JSON.
    blobs: Vec<usize>,
}

#[derive(Serialize, Deserialize)]
enum UnitSpec {
    /// A row group: the index of its segment in [`ScanSpec::segments`], and its number.
    RowGroup(usize, usize),
    /// A memtable batch: the index of its Arrow IPC stream among the blobs.
    Mem(usize),
}

/// The physical extension codec of trafficdb's plan nodes that may run on a worker: the table scan.
/// On a coordinator it only encodes (its local worker takes plans as they are); on a worker it
/// decodes, opening segments through the worker's [`SegmentCache`].
#[derive(Debug, Clone)]
pub struct ScanCodec {
    /// The store the coordinator's segments are in (`None`: not on an object store, nothing travels).
    store: Option<String>,
    /// A directory whose files are named as their objects below the store (the cache of other
    /// shards' segments, `shards/<name>/tables/...`).
    mirror: Option<PathBuf>,
    cache: Option<Arc<SegmentCache>>,
}

impl ScanCodec {
    pub(crate) fn coordinator(store: Option<String>, mirror: Option<PathBuf>) -> ScanCodec {
        ScanCodec { store, mirror, cache: None }
    }

    pub fn worker(cache: Arc<SegmentCache>) -> ScanCodec {
        ScanCodec { store: Some(cache.store().url().to_string()), mirror: None, cache: Some(cache) }
    }

    /// The object name of a segment file: its name in the mirror directory, or its path below the
    /// data directory (`tables/<table>/<partition>/<segment>.seg`, see `catalog::segment_path`).
    fn object_name(&self, path: &Path) -> Option<String> {
        match self.mirror.as_deref().filter(|m| path.starts_with(m)) {
            Some(mirror) => Some(ObjectStorage::name_of(mirror, path)),
            None => Some(ObjectStorage::name_of(path.ancestors().nth(4)?, path)),
        }
    }

    fn encode_scan(
        &self,
        scan: &TableScanSource,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(store) = &self.store else {
            return internal_err!("table {} is not on an object store, so no worker can read it", scan.table_name);
        };
        if !shippable(scan) {
            return internal_err!("a scan that reads text as codes cannot run on a worker");
        }
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        let mut segments: Vec<(String, SegmentEntry)> = Vec::new();
        let mut segment_index: HashMap<*const SegmentHandle, usize> = HashMap::new();
        let mut units = Vec::with_capacity(scan.units.len());
        for unit in scan.units.iter() {
            units.push(match unit {
                Unit::RowGroup { seg, rg } => {
                    // By address: segment ids repeat across shards.
                    let i = match segment_index.get(&Arc::as_ptr(seg)) {
                        Some(&i) => i,
                        None => {
                            let Some(name) = self.object_name(&seg.segment.path) else {
                                return internal_err!("segment {} has no object name", seg.segment.path.display());
                            };
                            segments.push((name, seg.entry.clone()));
                            segment_index.insert(Arc::as_ptr(seg), segments.len() - 1);
                            segments.len() - 1
                        }
                    };
                    UnitSpec::RowGroup(i, *rg)
                }
                Unit::Mem { batch } => {
                    let mut ipc = Vec::new();
                    let mut w = StreamWriter::try_new(&mut ipc, &batch.batch.schema())?;
                    w.write(&batch.batch)?;
                    w.finish()?;
                    drop(w);
                    blobs.push(ipc);
                    UnitSpec::Mem(blobs.len() - 1)
                }
            });
        }
        let expression = |e: &Arc<dyn PhysicalExpr>, blobs: &mut Vec<Vec<u8>>| -> Result<usize> {
            blobs.push(converter.physical_expr_to_proto(e, self)?.encode_to_vec());
            Ok(blobs.len() - 1)
        };
        let filters = scan.filters.iter().map(|e| expression(e, &mut blobs)).collect::<Result<Vec<_>>>()?;
        // Run-time filters only narrow the scan (they are evaluated again above it): each travels as
        // it stands now, and one that has no protobuf form is left out.
        let mut dynamic = Vec::new();
        for e in &scan.dynamic {
            if let Ok(now) = snapshot_physical_expr(e.clone())
                && let Ok(i) = expression(&now, &mut blobs)
            {
                dynamic.push(i);
            }
        }
        let spec = ScanSpec {
            store: store.clone(),
            table_name: scan.table_name.clone(),
            def: scan.def.as_ref().clone(),
            projection: scan.projection.clone(),
            segments,
            units,
            counts: scan.counts.clone(),
            fetch: scan.fetch,
            partitions: scan.target_partitions,
            partitions_fixed: scan.partitions_fixed,
            filters,
            dynamic,
            newest_first: scan.newest_first,
            latest: scan.latest.map(|m| (m.key, m.time)),
            exact_rows: scan.exact_rows,
            blobs: blobs.iter().map(Vec::len).collect(),
        };
        let json = serde_json::to_vec(&spec).map_err(|e| DataFusionError::External(Box::new(e)))?;
        buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
        buf.extend_from_slice(&json);
        for b in &blobs {
            buf.extend_from_slice(b);
        }
        Ok(())
    }

    fn decode_scan(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(cache) = &self.cache else { return internal_err!("only a worker runs a shipped scan") };
        let bad = |what: &str| DataFusionError::Internal(format!("a shipped scan is malformed: {what}"));
        let len = u32::from_le_bytes(buf.get(..4).ok_or_else(|| bad("short"))?.try_into().expect("4 bytes")) as usize;
        let json = buf.get(4..4 + len).ok_or_else(|| bad("short"))?;
        let spec: ScanSpec = serde_json::from_slice(json).map_err(|e| bad(&e.to_string()))?;
        if spec.store != cache.store().url() {
            return Err(DataFusionError::Execution(format!(
                "table {} is on object store {}, this worker reads {}",
                spec.table_name,
                spec.store,
                cache.store().url()
            )));
        }
        let mut blobs = Vec::with_capacity(spec.blobs.len());
        let mut at = 4 + len;
        for &n in &spec.blobs {
            blobs.push(buf.get(at..at + n).ok_or_else(|| bad("short blob"))?);
            at += n;
        }
        let def = Arc::new(spec.def);
        let schema = def.arrow_schema();
        let decode_context = PhysicalPlanDecodeContext::new(ctx, self);
        let expression = |i: usize| -> Result<Arc<dyn PhysicalExpr>> {
            let node = PhysicalExprNode::decode(*blobs.get(i).ok_or_else(|| bad("blob index"))?)
                .map_err(|e| bad(&e.to_string()))?;
            converter.proto_to_physical_expr(&node, &schema, &decode_context)
        };
        let filters = spec.filters.iter().map(|&i| expression(i)).collect::<Result<Vec<_>>>()?;
        let dynamic = spec.dynamic.iter().map(|&i| expression(i)).collect::<Result<Vec<_>>>()?;
        let segments = (spec.segments.iter())
            .map(|(name, entry)| cache.segment(name, entry).map_err(|e| DataFusionError::External(Box::new(e))))
            .collect::<Result<Vec<_>>>()?;
        let mut units = Vec::with_capacity(spec.units.len());
        for u in spec.units {
            units.push(match u {
                UnitSpec::RowGroup(s, rg) => {
                    let seg = segments.get(s).ok_or_else(|| bad("segment index"))?.clone();
                    if rg >= seg.segment.footer.row_groups.len() {
                        return Err(bad("row group number"));
                    }
                    Unit::RowGroup { seg, rg }
                }
                UnitSpec::Mem(i) => {
                    let reader = StreamReader::try_new(*blobs.get(i).ok_or_else(|| bad("blob index"))?, None)?;
                    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
                    let [batch] = <[_; 1]>::try_from(batches).map_err(|_| bad("memtable batch"))?;
                    Unit::Mem { batch: MemBatch::new(batch) }
                }
            });
        }
        let projected_schema = Arc::new(schema.project(&spec.projection)?);
        let scan = TableScanSource {
            table_name: spec.table_name,
            def,
            schema,
            projection: spec.projection,
            projected_schema,
            units: Arc::new(units),
            counts: spec.counts,
            fetch: spec.fetch,
            target_partitions: spec.partitions,
            partitions_fixed: spec.partitions_fixed,
            filters,
            dynamic,
            newest_first: spec.newest_first,
            latest: spec.latest.map(|(key, time)| LatestMode { key, time }),
            exact_rows: spec.exact_rows,
            column_stats: Default::default(),
            symbols: Vec::new(),
            metrics: ExecutionPlanMetricsSet::new(),
        };
        Ok(DataSourceExec::from_data_source(scan))
    }
}

impl PhysicalExtensionCodec for ScanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.decode_scan(buf, ctx, converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        match table_scan(&node) {
            Some(scan) => self.encode_scan(scan, buf, converter),
            None => internal_err!("{} cannot run on a worker", node.name()),
        }
    }
}

/// A worker's session: DataFusion's defaults, trafficdb's functions, and the codec that opens
/// shipped scans through the worker's segment cache. The models `predict_retry` reads are those of the
/// catalog the coordinator last published, read again whenever it changed (a HEAD of the catalog
/// object per query).
#[derive(Clone)]
pub struct WorkerSession {
    codec: ScanCodec,
    store: Arc<ObjectStorage>,
    /// The published catalog's tag and the models read from it.
    models: Arc<Mutex<(Option<String>, Arc<Registry>)>>,
}

/// The models of a published catalog, read-only.
#[derive(Debug)]
struct PublishedModels(Option<serde_json::Value>);

impl ModelStore for PublishedModels {
    fn load(&self) -> Option<serde_json::Value> {
        self.0.clone()
    }

    fn save(&self, _value: serde_json::Value) -> std::result::Result<(), String> {
        Err("a worker's models are read-only: train models on the coordinator".into())
    }
}

impl WorkerSession {
    pub fn new(cache: Arc<SegmentCache>) -> WorkerSession {
        let store = cache.store().clone();
        let models = Arc::new(Registry::open(Arc::new(PublishedModels(None))));
        WorkerSession { codec: ScanCodec::worker(cache), store, models: Arc::new(Mutex::new((None, models))) }
    }

    /// The models of the catalog published now.
    fn models(&self) -> crate::Result<Arc<Registry>> {
        let tag = self.store.tag(CATALOG_FILE)?;
        let mut models = self.models.lock();
        if models.0.is_none() || models.0 != tag {
            let document = match self.store.get(CATALOG_FILE)? {
                Some(bytes) => {
                    let data = crate::catalog::decode(&bytes)
                        .map_err(|(_, reason)| Error::invalid(SqlState::DataCorrupted, reason))?;
                    data.objects.get(crate::catalog::MODELS_KEY).cloned()
                }
                None => None,
            };
            *models = (tag, Arc::new(Registry::open(Arc::new(PublishedModels(document)))));
        }
        Ok(models.1.clone())
    }
}

#[async_trait::async_trait]
impl WorkerSessionBuilder for WorkerSession {
    async fn build_session_state(&self, ctx: WorkerQueryContext) -> Result<SessionState> {
        let models = self.models().map_err(|e| DataFusionError::External(Box::new(e)))?;
        worker_state(ctx.builder.with_distributed_user_codec(self.codec.clone()), &models)
    }
}

/// A worker's session state: `builder`'s, with every function of trafficdb's own sessions and those
/// its expression planners put in plans.
fn worker_state(builder: SessionStateBuilder, models: &Arc<Registry>) -> Result<SessionState> {
    let mut state = builder.build();
    trafficdb_udfs::install(&mut state, models)?;
    for f in trafficdb_udfs::checked::planned_functions() {
        state.register_udf(f)?;
    }
    Ok(state)
}

/// The names of the scalar functions a worker knows (see [`worker_state`]).
fn worker_functions() -> Result<HashSet<String>> {
    let models = Arc::new(Registry::open(Arc::new(PublishedModels(None))));
    let state = worker_state(SessionStateBuilder::new().with_default_features(), &models)?;
    Ok(state.scalar_functions().keys().cloned().collect())
}

/// Whether `plan` itself (not its children) calls a scalar function no worker knows (one the
/// PostgreSQL server adds for its catalog, say).
fn calls_unknown_function(plan: &Arc<dyn ExecutionPlan>, known: &HashSet<String>) -> bool {
    let mut unknown = false;
    let _ = plan.apply_expressions(&mut |e| {
        e.apply(|x| {
            if let Some(f) = x.downcast_ref::<ScalarFunctionExpr>()
                && !known.contains(f.name())
            {
                unknown = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
    });
    unknown
}
