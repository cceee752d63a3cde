//! Statements that change stored rows: `DELETE [USING]`, `UPDATE [FROM]`, `RETURNING` on them and on
//! `INSERT`, and `EXPLAIN [ANALYZE]` of each.
//!
//! The rows a statement changes come from a query DataFusion plans and runs completely, never from a
//! predicate handed to the provider (DataFusion's own DELETE keeps only the conjuncts that name the
//! target alone, so a subquery in `WHERE` would widen the delete to every row). The statement becomes
//! a `SELECT` of the target's row ids (and, for UPDATE, the new values), with the target read by a
//! scan that adds the hidden column [`ROW_ID`]: whatever a `SELECT` accepts in `WHERE`, `USING` or
//! `FROM` (subqueries of every kind, joins, functions, NULL semantics) selects exactly its rows.
//!
//! Execution ([`DmlExec`]) takes the engine's maintenance lock through [`Engine::rewrite`], which
//! flushes so every acknowledged row is sealed, gives the segments to the scan, runs the query, and
//! rewrites the touched segments with one catalog commit: all rows or none, durable on return.
//! `RETURNING` runs as a second small plan over the rows changed, read from memory (no second scan).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, DataFusionError, Result};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableType, UserDefinedLogicalNode,
    UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_optimizer::pruning::PruningPredicate;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    self, AssignmentTarget, FromTable, Ident, SelectItem, SetExpr, Statement, TableFactor, TableWithJoins,
};
use futures::StreamExt;
use parking_lot::Mutex;

use super::scan::{prune_row_groups, pruning_predicate};
use crate::engine::{Engine, Rewrite, RowId, SegmentHandle, Table};
use crate::error::{Error, SqlState};

/// The hidden column of the target's scan: the row's [`RowId`].
pub const ROW_ID: &str = "__trafficdb_row_id";
/// The name the statement's target is planned under (an overlay of the catalog, for this statement).
const TARGET: &str = "__trafficdb_dml_target";
/// The name RETURNING reads the changed rows under.
const CHANGED: &str = "__trafficdb_dml_rows";

/// True for the statements [`plan`] takes.
pub fn is_dml(s: &Statement) -> bool {
    match s {
        Statement::Delete(_) | Statement::Update(_) => true,
        Statement::Insert(i) => i.returning.is_some(),
        Statement::Explain { statement, describe_alias: ast::DescribeAlias::Explain, .. } => is_dml(statement),
        _ => false,
    }
}

/// The plan of a DELETE, UPDATE, INSERT ... RETURNING or EXPLAIN of one of them on a stored table;
/// `None` for any other statement. The plan runs with any session built on the database's (its query
/// planner knows [`DmlNode`]); it may hold placeholders (`$1`) to bind before it runs.
pub async fn plan(
    state: &SessionState,
    engine: &Arc<Engine>,
    stmt: &DFStatement,
) -> crate::Result<Option<LogicalPlan>> {
    match stmt {
        DFStatement::Statement(s) => plan_statement(state, engine, s).await,
        DFStatement::Explain(e) => {
            let DFStatement::Statement(inner) = e.statement.as_ref() else { return Ok(None) };
            if !is_dml(inner) {
                return Ok(None);
            }
            let Some(plan) = Box::pin(plan_statement(state, engine, inner)).await? else { return Ok(None) };
            Ok(Some(LogicalPlanBuilder::from(plan).explain(e.options.verbose, e.options.analyze)?.build()?))
        }
        _ => Ok(None),
    }
}

async fn plan_statement(
    state: &SessionState,
    engine: &Arc<Engine>,
    s: &Statement,
) -> crate::Result<Option<LogicalPlan>> {
    match s {
        Statement::Delete(d) => plan_delete(state, engine, d).await.map(Some),
        Statement::Update(u) => plan_update(state, engine, u).await.map(Some),
        Statement::Insert(i) if i.returning.is_some() => plan_insert(state, engine, i).await.map(Some),
        Statement::Explain {
            statement,
            analyze,
            verbose,
            options,
            describe_alias: ast::DescribeAlias::Explain,
            ..
        } if is_dml(statement) => {
            let (analyze, verbose) = explain_flags(*analyze, *verbose, options.as_deref());
            let Some(plan) = Box::pin(plan_statement(state, engine, statement)).await? else { return Ok(None) };
            Ok(Some(LogicalPlanBuilder::from(plan).explain(verbose, analyze)?.build()?))
        }
        _ => Ok(None),
    }
}

/// Whether an `EXPLAIN` runs its statement (ANALYZE) and is verbose, from its keywords and its
/// parenthesised options (`EXPLAIN (ANALYZE, VERBOSE false) ...`), as PostgreSQL reads them.
pub fn explain_flags(analyze: bool, verbose: bool, options: Option<&[ast::UtilityOption]>) -> (bool, bool) {
    let (mut analyze, mut verbose) = (analyze, verbose);
    for o in options.unwrap_or_default() {
        let on = match &o.arg {
            None => true,
            Some(arg) => {
                let v = arg.to_string().trim_matches('\'').to_ascii_lowercase();
                !matches!(v.as_str(), "false" | "off" | "0" | "no")
            }
        };
        match o.name.value.to_ascii_lowercase().as_str() {
            "analyze" => analyze = on,
            "verbose" => verbose = on,
            _ => {}
        }
    }
    (analyze, verbose)
}

/// What a [`DmlNode`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum DmlOp {
    Delete,
    Update,
    Insert,
}

impl DmlOp {
    /// The command of PostgreSQL's tag (`DELETE n`, `UPDATE n`, `INSERT 0 n`).
    pub fn tag(self, rows: u64) -> String {
        match self {
            DmlOp::Delete => format!("DELETE {rows}"),
            DmlOp::Update => format!("UPDATE {rows}"),
            DmlOp::Insert => format!("INSERT 0 {rows}"),
        }
    }
}

/// What running `plan` may do (see [`trafficdb_udfs::access`]); a write of [`plan`] writes.
pub fn plan_access(plan: &LogicalPlan) -> trafficdb_udfs::access::Access {
    trafficdb_udfs::access::plan_access(plan, &|node| {
        node.as_any().downcast_ref::<DmlNode>().map(|_| trafficdb_udfs::access::Access::Write)
    })
}

/// The op of a plan made by [`plan`], when it is one (and not an EXPLAIN of one).
pub fn plan_op(plan: &LogicalPlan) -> Option<(DmlOp, bool)> {
    let LogicalPlan::Extension(e) = plan else { return None };
    let node = e.node.as_any().downcast_ref::<DmlNode>()?;
    Some((node.op, node.returning.is_some()))
}

async fn plan_delete(state: &SessionState, engine: &Arc<Engine>, d: &ast::Delete) -> crate::Result<LogicalPlan> {
    let from = match &d.from {
        FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
    };
    if !d.tables.is_empty() || from.len() != 1 || !d.order_by.is_empty() || d.limit.is_some() || d.output.is_some() {
        return Err(Error::invalid(
            SqlState::NotSupported,
            "DELETE takes one table: DELETE FROM t [AS a] [USING ...] [WHERE ...] [RETURNING ...]",
        ));
    }
    let (table, alias) = target(state, engine, &from[0], "delete from")?;
    let mut select = select_from(TARGET, &alias)?;
    {
        let s = select_mut(&mut select);
        s.projection = vec![row_id_item(&alias)];
        s.from.extend(d.using.iter().flatten().cloned());
        s.selection = d.selection.clone();
    }
    build(state, engine, table, DmlOp::Delete, select, &alias, d.returning.as_deref()).await
}

async fn plan_update(state: &SessionState, engine: &Arc<Engine>, u: &ast::Update) -> crate::Result<LogicalPlan> {
    if u.or.is_some() || u.limit.is_some() || !u.order_by.is_empty() || u.output.is_some() {
        return Err(Error::invalid(
            SqlState::NotSupported,
            "UPDATE takes: UPDATE t [AS a] SET col = expr [, ...] [FROM ...] [WHERE ...] [RETURNING ...]",
        ));
    }
    let (table, alias) = target(state, engine, &u.table, "update")?;
    let mut items = vec![row_id_item(&alias)];
    let mut seen = HashSet::new();
    for a in &u.assignments {
        let AssignmentTarget::ColumnName(name) = &a.target else {
            return Err(Error::invalid(SqlState::NotSupported, "UPDATE ... SET (a, b) = (...) is not supported"));
        };
        let column = name.0.last().and_then(|p| p.as_ident()).map(normalize).unwrap_or_default();
        if table.def.column_index(&column).is_none() {
            return Err(Error::invalid(
                SqlState::UndefinedColumn,
                format!("column \"{column}\" of relation \"{}\" does not exist", table.name()),
            ));
        }
        if !seen.insert(column.clone()) {
            return Err(Error::invalid(SqlState::Syntax, format!("multiple assignments to same column \"{column}\"")));
        }
        items.push(SelectItem::ExprWithAlias { expr: a.value.clone(), alias: Ident::with_quote('"', column) });
    }
    let mut select = select_from(TARGET, &alias)?;
    {
        let s = select_mut(&mut select);
        s.projection = items;
        if let Some(from) = &u.from {
            let (ast::UpdateTableFromKind::BeforeSet(f) | ast::UpdateTableFromKind::AfterSet(f)) = from;
            s.from.extend(f.iter().cloned());
        }
        s.selection = u.selection.clone();
    }
    build(state, engine, table, DmlOp::Update, select, &alias, u.returning.as_deref()).await
}

/// INSERT ... RETURNING: DataFusion plans the INSERT (the rows, cast to the table's columns); the
/// rows are appended here and RETURNING evaluated over them.
async fn plan_insert(state: &SessionState, engine: &Arc<Engine>, i: &ast::Insert) -> crate::Result<LogicalPlan> {
    let mut plain = i.clone();
    plain.returning = None;
    let insert = state.statement_to_plan(DFStatement::Statement(Box::new(Statement::Insert(plain)))).await?;
    let LogicalPlan::Dml(dml) = insert else {
        return Err(Error::Internal("INSERT did not plan as DML".into()));
    };
    let name = match &i.table {
        ast::TableObject::TableName(n) => n.clone(),
        other => return Err(Error::invalid(SqlState::NotSupported, format!("INSERT INTO {other} is not supported"))),
    };
    let table_name = crate::database::object_name(&name)?;
    let table = engine.table(&table_name).ok_or_else(|| crate::engine::undefined_table(&table_name))?;
    let alias = match &i.table_alias {
        Some(a) => Ident::with_quote('"', normalize(&a.alias)),
        None => Ident::with_quote('"', table_name),
    };
    let returning = planned_returning(state, &table, &alias, i.returning.as_deref().unwrap_or_default()).await?;
    Ok(DmlNode::plan(engine, table, DmlOp::Insert, dml.input.as_ref().clone(), Some(returning)))
}

/// The stored table a statement names, and the alias its columns are qualified with.
fn target(
    state: &SessionState,
    engine: &Arc<Engine>,
    t: &TableWithJoins,
    verb: &str,
) -> crate::Result<(Arc<Table>, Ident)> {
    let (TableFactor::Table { name, alias, args: None, with_hints, .. }, true) = (&t.relation, t.joins.is_empty())
    else {
        return Err(Error::invalid(SqlState::NotSupported, format!("cannot {verb} {}: not a table name", t.relation)));
    };
    if !with_hints.is_empty() {
        return Err(Error::invalid(SqlState::NotSupported, format!("cannot {verb} {name} with table hints")));
    }
    let table_name = crate::database::object_name(name)?;
    let Some(table) = engine.table(&table_name) else {
        let exists = state
            .catalog_list()
            .catalog(crate::database::CATALOG_NAME)
            .and_then(|c| c.schema(crate::database::SCHEMA_NAME))
            .is_some_and(|s| s.table_exist(&table_name));
        if exists {
            return Err(Error::invalid(
                SqlState::WrongObjectType,
                format!("cannot {verb} \"{table_name}\": it is a view, not a stored table"),
            ));
        }
        return Err(crate::engine::undefined_table(&table_name));
    };
    let alias = match alias {
        Some(a) if !a.columns.is_empty() => {
            return Err(Error::invalid(SqlState::NotSupported, "column aliases on the target table are not supported"));
        }
        Some(a) => Ident::with_quote('"', normalize(&a.name)),
        None => Ident::with_quote('"', table_name),
    };
    Ok((table, alias))
}

fn normalize(i: &Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

/// `SELECT 1 FROM "<table>" AS <alias>`, to fill in.
fn select_from(table: &str, alias: &Ident) -> crate::Result<Box<ast::Query>> {
    let sql = format!("SELECT 1 FROM \"{table}\" AS t");
    let mut stmts = datafusion::sql::sqlparser::parser::Parser::parse_sql(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
        &sql,
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    let Some(Statement::Query(mut q)) = stmts.pop() else { return Err(Error::Internal("template".into())) };
    if let SetExpr::Select(s) = q.body.as_mut()
        && let Some(TableFactor::Table { alias: Some(a), .. }) = s.from.first_mut().map(|f| &mut f.relation)
    {
        a.name = alias.clone();
    }
    Ok(q)
}

fn select_mut(q: &mut ast::Query) -> &mut ast::Select {
    match q.body.as_mut() {
        SetExpr::Select(s) => s,
        _ => unreachable!("select_from builds a SELECT"),
    }
}

fn row_id_item(alias: &Ident) -> SelectItem {
    SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(vec![alias.clone(), Ident::with_quote('"', ROW_ID)]))
}

/// Plans `query` with the statement's target (and RETURNING's rows) visible under their reserved names.
async fn plan_query(
    state: &SessionState,
    tables: Vec<(&str, Arc<dyn TableProvider>)>,
    query: Box<ast::Query>,
) -> crate::Result<LogicalPlan> {
    let overlay = Overlay {
        inner: state.catalog_list().clone(),
        tables: tables.into_iter().map(|(n, t)| (n.to_string(), t)).collect(),
    };
    let planning = SessionStateBuilder::new_from_existing(state.clone()).with_catalog_list(Arc::new(overlay)).build();
    Ok(planning.statement_to_plan(DFStatement::Statement(Box::new(Statement::Query(query)))).await?)
}

async fn planned_returning(
    state: &SessionState,
    table: &Arc<Table>,
    alias: &Ident,
    items: &[SelectItem],
) -> crate::Result<LogicalPlan> {
    let mut q = select_from(CHANGED, alias)?;
    select_mut(&mut q).projection = items.to_vec();
    let rows: Arc<dyn TableProvider> = Arc::new(ChangedRows { schema: table.schema.clone() });
    plan_query(state, vec![(CHANGED, rows)], q).await
}

async fn build(
    state: &SessionState,
    engine: &Arc<Engine>,
    table: Arc<Table>,
    op: DmlOp,
    query: Box<ast::Query>,
    alias: &Ident,
    returning: Option<&[SelectItem]>,
) -> crate::Result<LogicalPlan> {
    let target: Arc<dyn TableProvider> = Arc::new(DmlTarget::new(table.clone()));
    let source = plan_query(state, vec![(TARGET, target)], query).await?;
    let returning = match returning {
        Some(items) => Some(planned_returning(state, &table, alias, items).await?),
        None => None,
    };
    Ok(DmlNode::plan(engine, table, op, source, returning))
}

/// The catalog as the session has it, plus the statement's own tables under reserved names.
#[derive(Debug)]
struct Overlay {
    inner: Arc<dyn CatalogProviderList>,
    tables: HashMap<String, Arc<dyn TableProvider>>,
}

impl CatalogProviderList for Overlay {
    fn register_catalog(&self, name: String, catalog: Arc<dyn CatalogProvider>) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.register_catalog(name, catalog)
    }
    fn catalog_names(&self) -> Vec<String> {
        self.inner.catalog_names()
    }
    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let inner = self.inner.catalog(name)?;
        if name != crate::database::CATALOG_NAME {
            return Some(inner);
        }
        Some(Arc::new(OverlayCatalog { inner, tables: self.tables.clone() }))
    }
}

#[derive(Debug)]
struct OverlayCatalog {
    inner: Arc<dyn CatalogProvider>,
    tables: HashMap<String, Arc<dyn TableProvider>>,
}

impl CatalogProvider for OverlayCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        if name != crate::database::SCHEMA_NAME {
            return Some(inner);
        }
        Some(Arc::new(OverlaySchema { inner, tables: self.tables.clone() }))
    }
}

#[derive(Debug)]
struct OverlaySchema {
    inner: Arc<dyn SchemaProvider>,
    tables: HashMap<String, Arc<dyn TableProvider>>,
}

#[async_trait]
impl SchemaProvider for OverlaySchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.tables.get(name) {
            Some(t) => Ok(Some(t.clone())),
            None => self.inner.table(name).await,
        }
    }
    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name) || self.inner.table_exist(name)
    }
}

/// The statement's target: the stored table plus [`ROW_ID`], read from the segments the executing
/// [`DmlExec`] hands over (never from a snapshot of its own).
#[derive(Debug)]
struct DmlTarget {
    table: Arc<Table>,
    schema: SchemaRef,
}

impl DmlTarget {
    fn new(table: Arc<Table>) -> Self {
        let mut fields: Vec<Field> = table.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(ROW_ID, DataType::UInt64, false));
        DmlTarget { schema: Arc::new(Schema::new(fields)), table }
    }
}

#[async_trait]
impl TableProvider for DmlTarget {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters only prune row groups here; they are evaluated again above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let projected = Arc::new(self.schema.project(&projection)?);
        // Only the filters on stored columns can prune.
        let on_table: Vec<Expr> =
            filters.iter().filter(|f| f.column_refs().iter().all(|c| c.name != ROW_ID)).cloned().collect();
        let pruning = super::physical_predicate(state, &self.table.schema, &on_table)?
            .and_then(|p| pruning_predicate(&p, &self.table.schema))
            .map(Arc::new);
        let partitions = state.config().target_partitions().max(1);
        Ok(Arc::new(DmlScanExec::new(self.table.clone(), projection, projected, pruning, partitions)))
    }
}

/// The segments of the statement being executed, handed from [`DmlExec`] to its [`DmlScanExec`]s.
type SegmentSlot = Arc<Mutex<Option<Arc<Vec<Arc<SegmentHandle>>>>>>;

/// Reads the target's rows with their [`RowId`]s from the segments [`DmlExec`] hands over when it runs.
#[derive(Debug)]
struct DmlScanExec {
    table: Arc<Table>,
    /// Into the table schema plus [`ROW_ID`] (the last index).
    projection: Vec<usize>,
    schema: SchemaRef,
    pruning: Option<Arc<PruningPredicate>>,
    slot: SegmentSlot,
    props: Arc<PlanProperties>,
}

impl DmlScanExec {
    fn new(
        table: Arc<Table>,
        projection: Vec<usize>,
        schema: SchemaRef,
        pruning: Option<Arc<PruningPredicate>>,
        partitions: usize,
    ) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        DmlScanExec { table, projection, schema, pruning, slot: Arc::default(), props: Arc::new(props) }
    }
}

impl DisplayAs for DmlScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cols: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        write!(f, "DmlTargetScan: table={}, projection=[{}]", self.table.name(), cols.join(", "))
    }
}

impl ExecutionPlan for DmlScanExec {
    fn name(&self) -> &str {
        "DmlTargetScan"
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
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
    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let segments = self.slot.lock().clone().ok_or_else(|| {
            DataFusionError::Execution("the target of a DELETE or UPDATE is read only by its statement".into())
        })?;
        // Units: (segment index, row group, the row group's first row in its segment).
        let mut units = Vec::new();
        for (si, seg) in segments.iter().enumerate() {
            let mut first = 0u32;
            for (rg, meta) in seg.segment.footer.row_groups.iter().enumerate() {
                units.push((si, rg, first));
                first += meta.rows;
            }
        }
        let keep = match &self.pruning {
            Some(p) => prune_row_groups(
                p,
                &self.table.def,
                &self.table.schema,
                units.iter().map(|&(si, rg, _)| (segments[si].as_ref(), rg)).collect(),
            ),
            None => vec![true; units.len()],
        };
        let n = self.props.partitioning.partition_count();
        let mine: Vec<(usize, usize, u32)> = units
            .into_iter()
            .zip(keep)
            .enumerate()
            .filter(|(i, (_, k))| *k && i % n == partition)
            .map(|(_, (u, _))| u)
            .collect();
        let ncols = self.table.schema.fields().len();
        let table_projection: Vec<usize> = self.projection.iter().copied().filter(|&c| c < ncols).collect();
        let table_schema = Arc::new(self.table.schema.project(&table_projection)?);
        let (schema, projection) = (self.schema.clone(), self.projection.clone());
        let batches = mine.into_iter().map(move |(si, rg, first)| -> Result<RecordBatch> {
            let seg = &segments[si];
            let rows = seg.segment.footer.row_groups[rg].rows as usize;
            let read = seg.segment.read(rg, &table_projection, &table_schema)?;
            let mut next = 0;
            let columns: Vec<ArrayRef> = projection
                .iter()
                .map(|&c| {
                    if c == ncols {
                        let ids = (0..rows as u32).map(|r| RowId::new(si, first + r).0);
                        Arc::new(UInt64Array::from_iter_values(ids)) as ArrayRef
                    } else {
                        next += 1;
                        read.column(next - 1).clone()
                    }
                })
                .collect();
            let options = RecordBatchOptions::new().with_row_count(Some(rows));
            Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::iter(batches))))
    }
}

/// The rows a statement changed, as RETURNING reads them (handed over by [`DmlExec`]).
#[derive(Debug)]
struct ChangedRows {
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for ChangedRows {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        Ok(Arc::new(ChangedRowsExec::new(Arc::new(self.schema.project(&projection)?), projection)))
    }
}

type RowsSlot = Arc<Mutex<Option<Vec<RecordBatch>>>>;

#[derive(Debug)]
struct ChangedRowsExec {
    schema: SchemaRef,
    projection: Vec<usize>,
    slot: RowsSlot,
    props: Arc<PlanProperties>,
}

impl ChangedRowsExec {
    fn new(schema: SchemaRef, projection: Vec<usize>) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ChangedRowsExec { schema, projection, slot: Arc::default(), props: Arc::new(props) }
    }
}

impl DisplayAs for ChangedRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChangedRows")
    }
}

impl ExecutionPlan for ChangedRowsExec {
    fn name(&self) -> &str {
        "ChangedRows"
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
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
        let rows = self
            .slot
            .lock()
            .clone()
            .ok_or_else(|| DataFusionError::Execution("RETURNING is read only by its statement".into()))?;
        let projection = self.projection.clone();
        let batches: Vec<Result<RecordBatch>> =
            rows.iter().map(|b| b.project(&projection).map_err(DataFusionError::from)).collect();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::iter(batches))))
    }
}

/// The logical node of a statement that changes rows: its input yields [`ROW_ID`] (and, for UPDATE,
/// the new values by column name) for DELETE / UPDATE, or the rows to append for INSERT; the optional
/// second input is RETURNING's plan over the changed rows. Its output is RETURNING's rows, or, without
/// RETURNING, no columns and one row per changed row (the count of the command tag).
#[derive(Debug, Clone)]
pub struct DmlNode {
    pub op: DmlOp,
    engine: Arc<Engine>,
    table: Arc<Table>,
    source: LogicalPlan,
    returning: Option<LogicalPlan>,
    schema: DFSchemaRef,
}

impl DmlNode {
    fn plan(
        engine: &Arc<Engine>,
        table: Arc<Table>,
        op: DmlOp,
        source: LogicalPlan,
        returning: Option<LogicalPlan>,
    ) -> LogicalPlan {
        let schema = match &returning {
            Some(r) => r.schema().clone(),
            None => Arc::new(DFSchema::empty()),
        };
        LogicalPlan::Extension(Extension {
            node: Arc::new(DmlNode { op, engine: engine.clone(), table, source, returning, schema }),
        })
    }
}

impl PartialEq for DmlNode {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op
            && self.table.id == other.table.id
            && self.source == other.source
            && self.returning == other.returning
    }
}

impl Eq for DmlNode {}

impl PartialOrd for DmlNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (self == other).then_some(std::cmp::Ordering::Equal)
    }
}

impl Hash for DmlNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.op.hash(state);
        self.table.id.hash(state);
        self.source.hash(state);
        self.returning.hash(state);
    }
}

impl UserDefinedLogicalNodeCore for DmlNode {
    fn name(&self) -> &str {
        "Dml"
    }
    fn inputs(&self) -> Vec<&LogicalPlan> {
        std::iter::once(&self.source).chain(self.returning.as_ref()).collect()
    }
    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }
    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }
    fn fmt_for_explain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dml: op={:?}, table={}", self.op, self.table.name())?;
        if self.returning.is_some() {
            write!(f, ", returning")?;
        }
        Ok(())
    }
    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let returning = if self.returning.is_some() { inputs.pop() } else { None };
        let source = inputs.pop().ok_or_else(|| DataFusionError::Internal("Dml has a source".into()))?;
        Ok(DmlNode {
            op: self.op,
            engine: self.engine.clone(),
            table: self.table.clone(),
            source,
            returning,
            schema: self.schema.clone(),
        })
    }
}

/// The session's query planner: DataFusion's, knowing [`DmlNode`].
#[derive(Debug, Default)]
pub struct EngineQueryPlanner;

#[async_trait]
impl QueryPlanner for EngineQueryPlanner {
    async fn create_physical_plan(&self, plan: &LogicalPlan, session: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(DmlPlanner)])
            .create_physical_plan(plan, session)
            .await
    }
}

#[derive(Debug)]
struct DmlPlanner;

#[async_trait]
impl ExtensionPlanner for DmlPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<DmlNode>() else { return Ok(None) };
        let source = physical_inputs[0].clone();
        let returning = physical_inputs.get(1).cloned();
        let exec = DmlExec::new(
            node.op,
            node.engine.clone(),
            node.table.clone(),
            source,
            returning,
            node.schema.inner().clone(),
        );
        Ok(Some(Arc::new(exec)))
    }
}

/// Runs a statement that changes rows (see the module documentation).
#[derive(Debug)]
pub struct DmlExec {
    op: DmlOp,
    engine: Arc<Engine>,
    table: Arc<Table>,
    source: Arc<dyn ExecutionPlan>,
    returning: Option<Arc<dyn ExecutionPlan>>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

impl DmlExec {
    fn new(
        op: DmlOp,
        engine: Arc<Engine>,
        table: Arc<Table>,
        source: Arc<dyn ExecutionPlan>,
        returning: Option<Arc<dyn ExecutionPlan>>,
        schema: SchemaRef,
    ) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        DmlExec { op, engine, table, source, returning, schema, props: Arc::new(props) }
    }
}

impl DisplayAs for DmlExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DmlExec: op={:?}, table={}", self.op, self.table.name())
    }
}

/// Every node of type `T` in `plan`.
fn find<T: ExecutionPlan>(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<dyn ExecutionPlan>>) {
    if plan.is::<T>() {
        out.push(plan.clone());
    }
    for c in plan.children() {
        find::<T>(c, out);
    }
}

/// Sets a flag when dropped: the statement's future was dropped (cancelled, timed out), so its
/// blocking part must not commit.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn cancelled() -> Error {
    Error::invalid(SqlState::QueryCanceled, "canceling statement due to user request")
}

/// Runs `plan` to the end on the calling (blocking) thread, stopping early when `cancel` is set.
fn collect_blocking(
    handle: &tokio::runtime::Handle,
    plan: &Arc<dyn ExecutionPlan>,
    ctx: &Arc<TaskContext>,
    cancel: &AtomicBool,
) -> crate::Result<Vec<RecordBatch>> {
    handle.block_on(async {
        let mut stream = datafusion::physical_plan::execute_stream(plan.clone(), ctx.clone())?;
        let mut out = Vec::new();
        while let Some(b) = stream.next().await {
            if cancel.load(Ordering::Acquire) {
                return Err(cancelled());
            }
            out.push(b?);
        }
        Ok(out)
    })
}

impl ExecutionPlan for DmlExec {
    fn name(&self) -> &str {
        "DmlExec"
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        std::iter::once(&self.source).chain(self.returning.as_ref()).collect()
    }
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let returning = if self.returning.is_some() { children.pop() } else { None };
        let source = children.pop().ok_or_else(|| DataFusionError::Internal("DmlExec has a source".into()))?;
        Ok(Arc::new(DmlExec::new(
            self.op,
            self.engine.clone(),
            self.table.clone(),
            source,
            returning,
            self.schema.clone(),
        )))
    }
    fn execute(&self, _partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let (op, table, source, returning) = (self.op, self.table.clone(), self.source.clone(), self.returning.clone());
        let schema = self.schema.clone();
        let engine = self.engine.clone();
        let out_schema = schema.clone();
        let fut = async move {
            let cancel = Arc::new(AtomicBool::new(false));
            let _guard = CancelOnDrop(cancel.clone());
            let handle = tokio::runtime::Handle::current();
            let keep_rows = returning.is_some();
            let ctx = context.clone();
            let done = tokio::task::spawn_blocking(move || -> crate::Result<crate::engine::Rewritten> {
                if op == DmlOp::Insert {
                    let batches = collect_blocking(&handle, &source, &ctx, &cancel)?;
                    let rows: Vec<RecordBatch> = batches
                        .iter()
                        .filter(|b| b.num_rows() > 0)
                        .map(|b| crate::types::coerce_batch(&table.def, &table.schema, b))
                        .collect::<crate::Result<_>>()?;
                    if cancel.load(Ordering::Acquire) {
                        return Err(cancelled());
                    }
                    let n = engine.append(&table, &rows)?;
                    return Ok(crate::engine::Rewritten {
                        rows: n,
                        returned: if keep_rows { rows } else { Vec::new() },
                    });
                }
                engine.rewrite(&table, |segments| {
                    let mut scans = Vec::new();
                    find::<DmlScanExec>(&source, &mut scans);
                    let segments = Arc::new(segments.to_vec());
                    for s in &scans {
                        if let Some(s) = s.downcast_ref::<DmlScanExec>() {
                            *s.slot.lock() = Some(segments.clone());
                        }
                    }
                    let batches = collect_blocking(&handle, &source, &ctx, &cancel)?;
                    let mut rows = Vec::new();
                    let mut values = Vec::new();
                    for b in batches.iter().filter(|b| b.num_rows() > 0) {
                        let ids =
                            b.column(0).as_any().downcast_ref::<UInt64Array>().ok_or_else(|| {
                                Error::Internal(format!("row ids of type {}", b.column(0).data_type()))
                            })?;
                        rows.extend(ids.values().iter().copied());
                        if op == DmlOp::Update {
                            values.push(b.project(&(1..b.num_columns()).collect::<Vec<_>>())?);
                        }
                    }
                    let values = match op {
                        DmlOp::Update => {
                            let schema = match values.first() {
                                Some(v) => v.schema(),
                                None => Arc::new(
                                    source
                                        .schema()
                                        .project(&(1..source.schema().fields().len()).collect::<Vec<_>>())?,
                                ),
                            };
                            Some(datafusion::arrow::compute::concat_batches(&schema, &values)?)
                        }
                        _ => None,
                    };
                    if cancel.load(Ordering::Acquire) {
                        return Err(cancelled());
                    }
                    Ok(Rewrite { rows, values, keep_rows })
                })
            })
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(DataFusionError::from)?;
            match returning {
                None => {
                    let options = RecordBatchOptions::new().with_row_count(Some(done.rows as usize));
                    let batch = RecordBatch::try_new_with_options(schema, Vec::new(), &options)?;
                    Ok::<_, DataFusionError>(vec![batch])
                }
                Some(plan) => {
                    let mut readers = Vec::new();
                    find::<ChangedRowsExec>(&plan, &mut readers);
                    for r in &readers {
                        if let Some(r) = r.downcast_ref::<ChangedRowsExec>() {
                            *r.slot.lock() = Some(done.returned.clone());
                        }
                    }
                    datafusion::physical_plan::collect(plan, context).await
                }
            }
        };
        let stream = futures::stream::once(fut).flat_map(|r| match r {
            Ok(batches) => futures::stream::iter(batches.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => futures::stream::iter(vec![Err(e)]),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}
