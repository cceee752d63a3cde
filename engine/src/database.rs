//! The embedded API: open a directory, run SQL, append Arrow batches, close.
//!
//! SQL goes to DataFusion, except the statements that change stored tables, which are handled here
//! because DataFusion's own versions keep tables in memory: `CREATE TABLE` (with the time-series options),
//! `CREATE TABLE ... AS SELECT`, `DROP TABLE` and `ALTER TABLE ... SET (retention = ...)`. `INSERT`,
//! `DELETE`, `TRUNCATE`, `CREATE VIEW` and `DROP VIEW` go through DataFusion to the engine's providers.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::EmptyRecordBatchStream;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    self, AlterTableOperation, ColumnOption, CreateTable, CreateTableOptions, DataType as SqlType, ObjectType,
    SqlOption, Statement, TimezoneInfo,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use crate::catalog::MODELS_KEY;
use crate::cluster::Cluster;
use crate::engine::{Engine, Options, Table};
use crate::error::{Error, Result, SqlState};
use crate::query::EngineSchema;
use crate::shards::Shards;
use crate::types::{ColumnDef, ColumnType, TableDef, TimeOptions, parse_duration_us};
use trafficdb_udfs::model::ModelStore;
use trafficdb_udfs::model::Registry;
use trafficdb_udfs::model::sql::models_table;

/// The catalog and schema names SQL sees.
pub const CATALOG_NAME: &str = "trafficdb";
pub const SCHEMA_NAME: &str = "public";
/// The default partition width of a time-series table.
pub const DEFAULT_PARTITION_US: i64 = 86_400_000_000;

/// Where, in a data directory, the segments fetched from other shards are kept.
pub const SHARD_CACHE_DIR: &str = "shard-cache";

/// An open database: a data directory, its engine and a DataFusion session over it.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let rt = tokio::runtime::Runtime::new()?;
/// # rt.block_on(async {
/// use trafficdb::Database;
/// use trafficdb::arrow::util::pretty::pretty_format_batches;
///
/// let dir = tempfile::tempdir()?;
/// let db = Database::open(dir.path()).await?;
/// db.sql("CREATE TABLE hits (ts TIMESTAMP NOT NULL, backend TEXT, ms DOUBLE) \
///         WITH (time_column = 'ts', partition = '1 day', retention = '90 days')").await?;
/// db.sql("INSERT INTO hits VALUES ('2024-01-01 10:00:00', 'b1', 12.5), \
///                                 ('2024-01-01 10:00:01', 'b2', 30.0)").await?;
/// let batches = db.sql("SELECT backend, ms FROM hits ORDER BY ms DESC").await?;
/// println!("{}", pretty_format_batches(&batches)?);
/// assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
/// db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
pub struct Database {
    engine: Arc<Engine>,
    ctx: SessionContext,
    schema: Arc<EngineSchema>,
    models: Arc<Registry>,
    /// One rollup refresh at a time; when each rollup was last refreshed.
    rollups: tokio::sync::Mutex<std::collections::HashMap<String, std::time::Duration>>,
    /// One alert evaluation at a time; when each rule was last evaluated.
    alerts: tokio::sync::Mutex<std::collections::HashMap<String, std::time::Duration>>,
    /// What bounds each alert rule's query: see [`Database::set_background_limits`].
    background: parking_lot::Mutex<BackgroundLimits>,
    /// Transitions of rules with a webhook, waiting for the server to deliver them.
    alert_outbox: parking_lot::Mutex<Vec<crate::alert::Event>>,
}

/// Models live in the catalog as one object: durable with the rest of the catalog, and in every backup.
#[derive(Debug)]
struct CatalogModels(Arc<Engine>);

impl ModelStore for CatalogModels {
    fn load(&self) -> Option<serde_json::Value> {
        self.0.object(MODELS_KEY)
    }

    fn save(&self, value: serde_json::Value) -> std::result::Result<(), String> {
        self.0.put_object(MODELS_KEY, Some(value)).map_err(|e| e.to_string())
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("dir", &self.engine.dir()).finish()
    }
}

/// The result of one statement.
pub enum Output {
    /// The rows of a query.
    Stream(SendableRecordBatchStream),
    /// The rows of a statement's `RETURNING`; PostgreSQL's tag is `command` and the number of rows
    /// (`DELETE 3`, `INSERT 0 3`).
    Returning { rows: SendableRecordBatchStream, command: &'static str },
    /// A statement without rows; the tag is what PostgreSQL would report (`CREATE TABLE`,
    /// `DELETE 3`, ...).
    Done(String),
}

impl Database {
    /// Opens (or creates) the data directory with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Database> {
        Self::open_with(dir, Options::default()).await
    }

    pub async fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Database> {
        let engine = Engine::open(dir, options)?;
        Self::from_engine(engine).await
    }

    /// Builds the SQL session over an already open engine (also used by the crash tests).
    pub async fn from_engine(engine: Arc<Engine>) -> Result<Database> {
        Self::from_engine_in(engine, None).await
    }

    /// Builds the SQL session over an already open engine; with a [`Cluster`], the session is its
    /// coordinator: queries run on its workers (docs/scale-out.md).
    pub async fn from_engine_in(engine: Arc<Engine>, cluster: Option<&Cluster>) -> Result<Database> {
        // A node on a shared prefix without a shard of its own reads the shards published under it.
        let shards = match (&engine.options().store, &engine.options().shard) {
            (Some(store), None) => {
                Some(Shards::open(store.clone(), &engine.dir().join(SHARD_CACHE_DIR), engine.options().cache_bytes)?)
            }
            _ => None,
        };
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_NAME)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        // Sessions run in UTC: a TIMESTAMPTZ literal keeps its zone (DataFusion types it without one
        // otherwise), and now() is a TIMESTAMPTZ.
        config.options_mut().execution.time_zone = Some("+00:00".to_string());
        // PostgreSQL's `timestamptz AT TIME ZONE` must be rewritten before type coercion adds casts of
        // its own, so that rule goes first.
        let mut analyzer_rules = datafusion::optimizer::Analyzer::new().rules;
        analyzer_rules.insert(0, Arc::new(trafficdb_udfs::time::PgAtTimeZone));
        // Scalar subqueries that are not aggregated are read through an aggregate that checks they
        // return one row at most (PostgreSQL's rule), before type coercion.
        analyzer_rules.insert(1, Arc::new(trafficdb_udfs::subquery::SingleRowSubquery));
        // IN tests under OR / NOT keep PostgreSQL's NULLs (DataFusion's mark joins lose them).
        analyzer_rules.insert(2, Arc::new(trafficdb_udfs::subquery::ThreeValuedIn));
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_analyzer_rules(analyzer_rules)
            .with_optimizer_rules(trafficdb_udfs::in_list::optimizer_rules())
            .with_physical_optimizer_rule(Arc::new(crate::query::latest::LatestPerKey));
        // Text as per-query codes cannot cross to another process (see `cluster`).
        if cluster.is_none() {
            builder = builder.with_physical_optimizer_rule(Arc::new(crate::query::symbols::SymbolGroupBy));
        }
        builder = builder.with_query_planner(Arc::new(crate::query::dml::EngineQueryPlanner));
        if let Some(cluster) = cluster {
            let store = engine.options().store.as_ref().map(|s| s.url().to_string());
            let mirror = shards.as_ref().map(|s| s.cache().dir().to_path_buf());
            builder = crate::cluster::coordinate(builder, cluster, store, mirror)?;
        }
        let mut state = builder.build();
        // Our SQL functions (time series, anomaly detection, models), before the views that use them.
        let models = Arc::new(Registry::open(Arc::new(CatalogModels(engine.clone()))));
        trafficdb_udfs::install(&mut state, &models)?;
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(EngineSchema::new(engine.clone(), shards.clone()));
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog.register_schema(SCHEMA_NAME, schema.clone() as Arc<dyn SchemaProvider>)?;
        ctx.register_catalog(CATALOG_NAME, catalog);
        schema.add_system_table("models", Arc::new(models_table(models.clone())));
        let db = Database {
            engine,
            ctx,
            schema,
            models,
            rollups: Default::default(),
            alerts: Default::default(),
            background: Default::default(),
            alert_outbox: Default::default(),
        };
        db.load_views().await;
        Ok(db)
    }

    /// Replays stored `CREATE VIEW` statements in creation order. A view that no longer plans (its
    /// table was dropped) is kept in the catalog and reported, not lost.
    async fn load_views(&self) {
        self.schema.loading.store(true, Ordering::Release);
        for v in self.engine.catalog().views {
            let r = async { self.ctx.sql(&v.sql).await?.collect().await }.await;
            if let Err(e) = r {
                tracing::warn!("view \"{}\" could not be restored: {e}", v.name);
            }
        }
        self.schema.loading.store(false, Ordering::Release);
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The trained models (what `train_retry_model` writes and `predict_retry` reads).
    pub fn models(&self) -> &Arc<Registry> {
        &self.models
    }

    /// Adds a computed, read-only view (`system_metrics`, ...): listed as a view, and refused by DROP
    /// and CREATE OR REPLACE.
    pub fn add_system_table(&self, name: &str, table: Arc<dyn datafusion::catalog::TableProvider>) {
        self.schema.add_system_table(name, table);
    }

    /// The DataFusion session: register functions here; the server serves it.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one or more statements and collects the rows of the last one.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut last = Vec::new();
        for stmt in parse(sql)? {
            last = match self.execute(stmt).await? {
                Output::Stream(s) | Output::Returning { rows: s, .. } => {
                    datafusion::physical_plan::common::collect(s).await?
                }
                Output::Done(_) => Vec::new(),
            };
        }
        Ok(last)
    }

    /// Runs one statement and streams its rows.
    pub async fn sql_stream(&self, sql: &str) -> Result<Output> {
        let mut stmts = parse(sql)?;
        if stmts.len() != 1 {
            return Err(Error::invalid(SqlState::Syntax, format!("expected one statement, found {}", stmts.len())));
        }
        self.execute(stmts.remove(0)).await
    }

    /// Runs a parsed statement.
    pub async fn execute(&self, stmt: DFStatement) -> Result<Output> {
        self.execute_in(&self.ctx, stmt).await
    }

    /// Runs a parsed statement in `ctx`, a session built on [`Database::session`] (the server's
    /// connections have their own, with their own memory pool).
    pub async fn execute_in(&self, ctx: &SessionContext, stmt: DFStatement) -> Result<Output> {
        if let Some(out) = self.try_execute_ddl(&stmt).await? {
            return Ok(out);
        }
        let plan = match self.plan_dml(&ctx.state(), &stmt).await? {
            Some(plan) => plan,
            None => ctx.state().statement_to_plan(stmt).await?,
        };
        run_plan(ctx, plan).await
    }

    /// The plan of a statement that changes stored rows (DELETE, UPDATE, INSERT ... RETURNING, or
    /// EXPLAIN of one), or `None` for other statements. See [`crate::query::dml`]; run it with
    /// [`run_plan`] (after binding its parameters, if it has any).
    pub async fn plan_dml(
        &self,
        state: &datafusion::execution::context::SessionState,
        stmt: &DFStatement,
    ) -> Result<Option<LogicalPlan>> {
        crate::query::dml::plan(state, &self.engine, stmt).await
    }

    /// Handles the statements on stored tables that DataFusion would keep in memory. Returns `None`
    /// for every other statement.
    pub async fn try_execute_ddl(&self, stmt: &DFStatement) -> Result<Option<Output>> {
        let DFStatement::Statement(s) = stmt else { return Ok(None) };
        match s.as_ref() {
            Statement::CreateTable(ct) if !ct.external => {
                self.create_table(ct).await?;
                Ok(Some(Output::Done("CREATE TABLE".into())))
            }
            Statement::CreateView(cv) if cv.materialized => {
                self.create_rollup(cv).await?;
                Ok(Some(Output::Done("CREATE MATERIALIZED VIEW".into())))
            }
            Statement::Drop { object_type: ObjectType::MaterializedView, if_exists, names, .. } => {
                for name in names {
                    self.drop_rollup(&object_name(name)?, *if_exists).await?;
                }
                Ok(Some(Output::Done("DROP MATERIALIZED VIEW".into())))
            }
            Statement::Call(f) if f.name.to_string().eq_ignore_ascii_case("refresh_continuous_aggregate") => {
                let name = call_text_argument(f).ok_or_else(|| {
                    Error::invalid(
                        SqlState::InvalidParameter,
                        "refresh_continuous_aggregate takes the name of a materialized view: CALL refresh_continuous_aggregate('name')",
                    )
                })?;
                self.refresh_rollup(&name, self.engine.now_us()).await?;
                Ok(Some(Output::Done("CALL".into())))
            }
            Statement::Call(f) if f.name.to_string().eq_ignore_ascii_case("evaluate_alerts") => {
                let name = call_text_argument(f);
                self.evaluate_alerts(Some(name.as_deref().unwrap_or(""))).await?;
                Ok(Some(Output::Done("CALL".into())))
            }
            Statement::Drop { object_type: ObjectType::View, names, .. } => {
                for name in names {
                    self.schema.refuse_system(&object_name(name)?)?;
                }
                Ok(None)
            }
            Statement::Drop { object_type: ObjectType::Table, if_exists, names, .. } => {
                for name in names {
                    let name = object_name(name)?;
                    if crate::rollup::find(&self.engine, &name).is_some() {
                        return Err(Error::invalid(
                            SqlState::WrongObjectType,
                            format!("\"{name}\" is a materialized view; use DROP MATERIALIZED VIEW"),
                        ));
                    }
                    if self.engine.table(&name).is_none() {
                        if self.schema.table_exist(&name) {
                            return Err(Error::invalid(
                                SqlState::WrongObjectType,
                                format!("\"{name}\" is not a table; use DROP VIEW"),
                            ));
                        }
                        if *if_exists {
                            continue;
                        }
                        return Err(crate::engine::undefined_table(&name));
                    }
                    self.engine.drop_table(&name)?;
                }
                Ok(Some(Output::Done("DROP TABLE".into())))
            }
            Statement::AlterTable(at) => {
                let name = object_name(&at.name)?;
                if self.engine.table(&name).is_none() {
                    if at.if_exists {
                        return Ok(Some(Output::Done("ALTER TABLE".into())));
                    }
                    return Err(crate::engine::undefined_table(&name));
                }
                for op in &at.operations {
                    let options = match op {
                        AlterTableOperation::SetOptionsParens { options } => options,
                        AlterTableOperation::SetTblProperties { table_properties } => table_properties,
                        other => {
                            return Err(Error::invalid(
                                SqlState::NotSupported,
                                format!(
                                    "ALTER TABLE {other} is not supported; supported: ALTER TABLE t SET (retention = '30 days')"
                                ),
                            ));
                        }
                    };
                    for (key, value) in options_kv(options)? {
                        match key.as_str() {
                            "retention" => {
                                let r = match value.to_ascii_lowercase().as_str() {
                                    "none" | "null" | "" => None,
                                    v => Some(parse_duration_us(v)?),
                                };
                                self.engine.set_retention(&name, r)?;
                            }
                            other => {
                                return Err(Error::invalid(
                                    SqlState::InvalidParameter,
                                    format!("unknown or unchangeable table option \"{other}\" (changeable: retention)"),
                                ));
                            }
                        }
                    }
                }
                Ok(Some(Output::Done("ALTER TABLE".into())))
            }
            _ => Ok(None),
        }
    }

    async fn create_table(&self, ct: &CreateTable) -> Result<()> {
        let name = object_name(&ct.name)?;
        if ct.temporary {
            return Err(Error::invalid(
                SqlState::NotSupported,
                "temporary tables are not supported (every table here is stored and shared); create a table and drop it when done",
            ));
        }
        if ct.or_replace {
            return Err(Error::invalid(SqlState::NotSupported, "CREATE OR REPLACE TABLE is not supported"));
        }
        if !ct.constraints.is_empty() {
            return Err(Error::invalid(
                SqlState::NotSupported,
                "table constraints (PRIMARY KEY, UNIQUE, ...) are not supported",
            ));
        }
        if self.engine.table(&name).is_none() && self.schema.table_exist(&name) {
            return Err(Error::invalid(SqlState::DuplicateTable, format!("relation \"{name}\" already exists")));
        }
        let options = match &ct.table_options {
            CreateTableOptions::None => Vec::new(),
            CreateTableOptions::With(o) | CreateTableOptions::Options(o) | CreateTableOptions::TableProperties(o) => {
                options_kv(o)?
            }
            CreateTableOptions::Plain(_) => {
                return Err(Error::invalid(SqlState::Syntax, "table options go in WITH (key = 'value', ...)"));
            }
        };
        // CREATE TABLE ... AS SELECT: the columns come from the query.
        let (columns, query_batches) = match &ct.query {
            None => {
                let mut cols = Vec::new();
                for c in &ct.columns {
                    cols.push(column_def(c)?);
                }
                (cols, None)
            }
            Some(q) => {
                if !ct.columns.is_empty() {
                    return Err(Error::invalid(SqlState::NotSupported, "CREATE TABLE with both columns and AS SELECT"));
                }
                let df = self.ctx.sql(&q.to_string()).await?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await?;
                (stored_columns(&schema)?, Some(batches))
            }
        };
        let mut def =
            TableDef { name: name.clone(), columns, time: None, dedup_keys: Vec::new(), sort_key: Vec::new() };
        let mut time_column = None;
        let mut partition = None;
        let mut retention = None;
        for (k, v) in options {
            match k.as_str() {
                "time_column" => time_column = Some(v),
                "partition" | "partition_width" => partition = Some(parse_duration_us(&v)?),
                "retention" => retention = Some(parse_duration_us(&v)?),
                "dedup_keys" => {
                    def.dedup_keys = name_list(&v);
                }
                "sort_key" => {
                    def.sort_key = name_list(&v);
                }
                other => {
                    return Err(Error::invalid(
                        SqlState::InvalidParameter,
                        format!(
                            "unknown table option \"{other}\" (known: time_column, partition, retention, dedup_keys, sort_key)"
                        ),
                    ));
                }
            }
        }
        match time_column {
            Some(tc) => {
                let idx = def.column_index(&tc).or_else(|| def.column_index(&tc.to_lowercase())).ok_or_else(|| {
                    Error::invalid(
                        SqlState::UndefinedColumn,
                        format!("time column \"{tc}\" is not a column of \"{name}\""),
                    )
                })?;
                def.columns[idx].nullable = false;
                def.time = Some(TimeOptions {
                    time_column: idx,
                    partition_width_us: partition.unwrap_or(DEFAULT_PARTITION_US),
                    retention_us: retention,
                });
            }
            None if partition.is_some() || retention.is_some() => {
                return Err(Error::invalid(
                    SqlState::InvalidParameter,
                    "partition and retention need a time column: WITH (time_column = 'ts', ...)",
                ));
            }
            None => {}
        }
        let existed = self.engine.table(&name).is_some();
        let table = self.engine.create_table(def, ct.if_not_exists)?;
        if let Some(batches) = query_batches
            && !existed
        {
            self.append_blocking(table, batches).await?;
        }
        Ok(())
    }

    /// `CREATE MATERIALIZED VIEW`: a continuous rollup (see [`crate::rollup`]), computed at once.
    async fn create_rollup(&self, cv: &ast::CreateView) -> Result<()> {
        let name = object_name(&cv.name)?;
        if cv.or_replace || cv.or_alter {
            return Err(Error::invalid(
                SqlState::NotSupported,
                "CREATE OR REPLACE MATERIALIZED VIEW is not supported; drop it first",
            ));
        }
        if self.engine.table(&name).is_some() || self.schema.table_exist(&name) {
            if cv.if_not_exists {
                return Ok(());
            }
            return Err(Error::invalid(SqlState::DuplicateTable, format!("relation \"{name}\" already exists")));
        }
        let (source, source_time, bucket_us, bucket_column) = crate::rollup::analyse(cv)?;
        let src = self.engine.table(&source).ok_or_else(|| crate::engine::undefined_table(&source))?;
        if src.def.time_column().map(|i| src.def.columns[i].name.as_str()) != Some(source_time.as_str()) {
            return Err(Error::invalid(
                SqlState::InvalidParameter,
                format!("time_bucket must be of \"{source}\"'s time column, not \"{source_time}\""),
            ));
        }
        let options = match &cv.options {
            CreateTableOptions::None => Vec::new(),
            CreateTableOptions::With(o) | CreateTableOptions::Options(o) => options_kv(o)?,
            _ => return Err(Error::invalid(SqlState::Syntax, "options go in WITH (key = 'value', ...)")),
        };
        let crate::rollup::Options { refresh_us, lag_us, retention_us, realtime } = crate::rollup::options(&options)?;
        let query = cv.query.to_string();
        let df = self.ctx.sql(&query).await?;
        let mut columns = stored_columns(df.schema().as_arrow())?;
        if columns.first().is_none_or(|c| c.name != bucket_column || !c.ty.is_timestamp()) {
            return Err(Error::invalid(SqlState::InvalidParameter, "the first column of a rollup is its time bucket"));
        }
        columns[0].nullable = false;
        let def = TableDef {
            name: name.clone(),
            columns,
            time: Some(TimeOptions {
                time_column: 0,
                partition_width_us: DEFAULT_PARTITION_US.max(bucket_us),
                retention_us,
            }),
            dedup_keys: Vec::new(),
            sort_key: Vec::new(),
        };
        self.engine.create_table(def, false)?;
        self.engine.watch(&src, &name)?;
        let mut all = crate::rollup::load(&self.engine);
        all.push(crate::rollup::Rollup {
            name: name.clone(),
            source,
            source_time,
            bucket_column,
            bucket_us,
            refresh_us,
            lag_us,
            query,
            watermark_us: None,
            realtime,
        });
        crate::rollup::save(&self.engine, &all)?;
        self.refresh_rollup(&name, self.engine.now_us()).await
    }

    async fn drop_rollup(&self, name: &str, if_exists: bool) -> Result<()> {
        let _one = self.rollups.lock().await;
        let mut all = crate::rollup::load(&self.engine);
        let Some(i) = all.iter().position(|r| r.name == name) else {
            return if if_exists { Ok(()) } else { Err(crate::rollup::undefined(name)) };
        };
        let r = all.remove(i);
        crate::rollup::save(&self.engine, &all)?;
        if let Some(src) = self.engine.table(&r.source) {
            self.engine.unwatch(&src, name)?;
        }
        self.engine.drop_table(name)?;
        Ok(())
    }

    /// Brings a continuous rollup up to date: recomputes the buckets from the earlier of its watermark
    /// and the earliest change to its source, up to the last bucket complete at `now_us` (minus the lag).
    pub async fn refresh_rollup(&self, name: &str, now_us: i64) -> Result<()> {
        let mut last = self.rollups.lock().await;
        let mut all = crate::rollup::load(&self.engine);
        let r = all.iter_mut().find(|r| r.name == name).ok_or_else(|| crate::rollup::undefined(name))?;
        let src = self.engine.table(&r.source).ok_or_else(|| crate::engine::undefined_table(&r.source))?;
        let dest = self.engine.table(&r.name).ok_or_else(|| crate::engine::undefined_table(&r.name))?;
        let to = crate::rollup::floor(now_us - r.lag_us, r.bucket_us);
        let (changed, epoch) = self.engine.take_changes(&src, name);
        let status = |t: &str| self.engine.table_status().into_iter().find(|s| s.name == t);
        let from = match (r.watermark_us, changed) {
            (None, _) => status(&r.source).and_then(|s| s.min_ts),
            (Some(w), Some(c)) => Some(w.min(c)),
            (Some(w), None) => Some(w),
        }
        .map(|t| crate::rollup::floor(t, r.bucket_us));
        last.insert(name.to_string(), self.engine.options().clock.elapsed());
        let Some(from) = from.filter(|f| *f < to) else {
            self.engine.restore_changes(&src, name, changed);
            return Ok(());
        };
        // The range is computed first, in a memory pool of its own and under a time limit (a failed
        // computation leaves the view as it was; the range is computed again next time) ...
        let limits = *self.background.lock();
        let state = self.limited_state(limits.memory);
        let timeout = limits.timeout.max(ROLLUP_MIN_TIMEOUT);
        let compute = async {
            let plan = state.create_logical_plan(&r.query).await?;
            let plan = crate::rollup::restrict(plan, &r.source, &r.source_time, from, to)?;
            let physical = state.create_physical_plan(&plan).await?;
            Ok::<_, Error>(datafusion::physical_plan::collect(physical, state.task_ctx()).await?)
        };
        let work = async {
            let batches = match tokio::time::timeout(timeout, compute).await {
                Ok(b) => b?,
                Err(_) => {
                    return Err(Error::invalid(
                        SqlState::QueryCanceled,
                        format!("refreshing {name} ran past its {} s limit", timeout.as_secs()),
                    ));
                }
            };
            // ... then the view's rows of the range go (when it has any), and the new ones come.
            if status(&r.name).and_then(|s| s.max_ts).is_some_and(|m| m >= from) {
                let b = quote_ident(&r.bucket_column);
                let delete = format!(
                    "DELETE FROM {} WHERE {b} >= to_timestamp_micros({from}) AND {b} < to_timestamp_micros({to})",
                    quote_ident(&r.name)
                );
                // Boxed: a refresh runs inside `sql`, and this DELETE runs through it again.
                Box::pin(self.sql(&delete)).await?;
            }
            self.append_blocking(dest.clone(), batches).await
        };
        if let Err(e) = work.await {
            self.engine.restore_changes(&src, name, changed);
            return Err(e);
        }
        r.watermark_us = Some(r.watermark_us.map_or(to, |w| w.max(to)));
        crate::rollup::save(&self.engine, &all)?;
        self.engine.settle_changes(&src, name, epoch)
    }

    /// Refreshes the rollups whose refresh interval has passed; the server calls it every second.
    pub async fn refresh_due_rollups(&self) -> Result<usize> {
        let (now, now_since) = (self.engine.now_us(), self.engine.options().clock.elapsed());
        let due: Vec<String> = {
            let last = self.rollups.lock().await;
            crate::rollup::load(&self.engine)
                .into_iter()
                .filter(|r| {
                    last.get(&r.name).is_none_or(|t| {
                        now_since.saturating_sub(*t) >= std::time::Duration::from_micros(r.refresh_us as u64)
                    })
                })
                .map(|r| r.name)
                .collect()
        };
        for name in &due {
            self.refresh_rollup(name, now).await?;
        }
        Ok(due.len())
    }

    /// Bounds each alert rule's query: it fails after `timeout` (57014) or when it holds more than
    /// `memory` bytes in operators that track memory (53200; `0`: no limit). By default 60 s and no
    /// memory limit; the server sets its `statement_timeout` (when set) and `query_memory_limit`.
    /// A rollup refresh computes its range under the same memory limit and the larger of `timeout`
    /// and 10 minutes.
    pub fn set_background_limits(&self, timeout: std::time::Duration, memory: u64) {
        *self.background.lock() = BackgroundLimits { timeout, memory };
    }

    /// The database's session with a memory pool of its own of `limit` bytes (`0`: the shared one).
    fn limited_state(&self, limit: u64) -> datafusion::execution::session_state::SessionState {
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let state = self.ctx.state();
        if limit == 0 {
            return state;
        }
        let pool = Arc::new(crate::query::memory::Unspilled::new(GreedyMemoryPool::new(
            usize::try_from(limit).unwrap_or(usize::MAX),
        )));
        match RuntimeEnvBuilder::from_runtime_env(state.runtime_env()).with_memory_pool(pool).build() {
            Ok(runtime) => SessionStateBuilder::new_from_existing(state).with_runtime_env(Arc::new(runtime)).build(),
            Err(_) => state,
        }
    }

    /// Evaluates the enabled rules of `alert_rules` that are due (`None`), or now: every rule (`Some("")`)
    /// or the one named. Appends the transitions to `alert_events` and returns them (the server POSTs
    /// them to the rules' webhooks). A rule whose query fails is logged and skipped, or, when named,
    /// reported. See [`crate::alert`].
    pub async fn evaluate_alerts(&self, only: Option<&str>) -> Result<Vec<crate::alert::Event>> {
        use crate::alert;
        let mut last = self.alerts.lock().await;
        if self.engine.table("alert_rules").is_none() {
            return Ok(Vec::new());
        }
        let rows =
            self.ctx.sql("SELECT name, query, every, webhook FROM alert_rules WHERE enabled").await?.collect().await?;
        let mut rules = Vec::new();
        for b in &rows {
            let text = |i: usize| -> Result<Vec<Option<String>>> {
                let a = datafusion::arrow::compute::cast(b.column(i), &datafusion::arrow::datatypes::DataType::Utf8)?;
                Ok(a.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect())
            };
            let (names, queries, every, hooks) = (text(0)?, text(1)?, text(2)?, text(3)?);
            for r in 0..b.num_rows() {
                let (Some(name), Some(query)) = (names[r].clone(), queries[r].clone()) else { continue };
                let every_us = every[r].as_deref().map(parse_duration_us).transpose();
                let every_us = match every_us {
                    Ok(e) => e.unwrap_or(60_000_000),
                    Err(e) => {
                        tracing::warn!("alert rule \"{name}\": {e}");
                        continue;
                    }
                };
                rules.push(alert::Rule { name, query, every_us, webhook: hooks[r].clone().filter(|h| !h.is_empty()) });
            }
        }
        let (now_us, now_since) = (self.engine.now_us(), self.engine.options().clock.elapsed());
        let mut state = alert::load(&self.engine);
        let mut events = Vec::new();
        let due: Vec<&alert::Rule> = rules
            .iter()
            .filter(|rule| match only {
                Some("") => true,
                Some(name) => rule.name == name,
                None => last.get(&rule.name).is_none_or(|t| {
                    now_since.saturating_sub(*t) >= std::time::Duration::from_micros(rule.every_us as u64)
                }),
            })
            .collect();
        // The due rules run at once, each under the timeout and in a memory pool of its own: a slow or
        // greedy rule fails alone and holds the others up by at most the timeout.
        let limits = *self.background.lock();
        let runs = due.iter().map(|rule| {
            let state = self.limited_state(limits.memory);
            async move {
                let run = trafficdb_udfs::run_read_query(&state, "alert", &rule.query);
                match tokio::time::timeout(limits.timeout, run).await {
                    Ok(r) => r.map_err(Error::from),
                    Err(_) => Err(Error::invalid(
                        SqlState::QueryCanceled,
                        format!("alert rule \"{}\" ran past its {} s limit", rule.name, limits.timeout.as_secs_f64()),
                    )),
                }
            }
        });
        let results = futures::future::join_all(runs).await;
        for (rule, result) in due.into_iter().zip(results) {
            last.insert(rule.name.clone(), self.engine.options().clock.elapsed());
            let batch = match result {
                Ok(b) => b,
                Err(e) if only.is_some_and(|n| n == rule.name) => return Err(e),
                Err(e) => {
                    tracing::warn!("alert rule \"{}\" failed: {e}", rule.name);
                    continue;
                }
            };
            let now = alert::instances(&batch)?;
            events.extend(alert::transitions(rule, state.entry(rule.name.clone()).or_default(), now, now_us));
        }
        if let Some(name) = only.filter(|n| !n.is_empty())
            && !rules.iter().any(|r| r.name == name)
        {
            return Err(Error::invalid(
                SqlState::UndefinedObject,
                format!("alert rule \"{name}\" does not exist or is disabled"),
            ));
        }
        // Rules removed or disabled resolve what they had firing.
        let gone: Vec<String> = state.keys().filter(|k| !rules.iter().any(|r| &r.name == *k)).cloned().collect();
        for name in gone {
            let mut before = state.remove(&name).unwrap_or_default();
            let rule = alert::Rule { name, query: String::new(), every_us: 0, webhook: None };
            events.extend(alert::transitions(&rule, &mut before, Default::default(), now_us));
        }
        if !events.is_empty()
            && let Some(table) = self.engine.table("alert_events")
        {
            // Events first, then the state: a crash in between repeats a transition, never loses one.
            self.append_blocking(table, vec![alert::events_batch(&events)?]).await?;
        }
        alert::save(&self.engine, &state)?;
        self.alert_outbox.lock().extend(events.iter().filter(|e| e.webhook.is_some()).cloned());
        Ok(events)
    }

    /// The transitions of rules with a webhook since the last call (the server POSTs them).
    pub fn take_alert_outbox(&self) -> Vec<crate::alert::Event> {
        std::mem::take(&mut *self.alert_outbox.lock())
    }

    async fn append_blocking(&self, table: Arc<Table>, batches: Vec<RecordBatch>) -> Result<u64> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.append(&table, &batches))
            .await
            .map_err(|e| Error::DataFusion(datafusion::error::DataFusionError::External(Box::new(e))))?
    }

    /// Appends a batch to a table as one durable transaction (columns matched by name; missing
    /// nullable columns become NULL). When this returns, the rows are fsynced and visible.
    pub fn append(&self, table: &str, batch: &RecordBatch) -> Result<u64> {
        let t = self.engine.table(table).ok_or_else(|| crate::engine::undefined_table(table))?;
        self.engine.append(&t, std::slice::from_ref(batch))
    }

    /// Appends several batches as one transaction: all or none.
    pub fn append_all(&self, table: &str, batches: &[RecordBatch]) -> Result<u64> {
        let t = self.engine.table(table).ok_or_else(|| crate::engine::undefined_table(table))?;
        self.engine.append(&t, batches)
    }

    /// Writes the memtables to sealed segments (not needed for durability: appends are durable already).
    pub fn flush(&self) -> Result<()> {
        self.engine.flush()
    }

    /// Flushes and closes. Also done, without the flush, when the database is dropped.
    pub fn close(self) -> Result<()> {
        self.engine.close()
    }
}

/// Whether [`Database::execute`] answers `s` itself, with no DataFusion plan a caller could look at
/// first: the engine's DDL (tables with options, views and materialized views, drops, `ALTER TABLE`),
/// `CALL`s and `TRUNCATE`. The one list of them: a server runs these through `execute` and decides
/// their role on the statement; every other statement it plans (and checks on the plan) itself.
pub fn is_engine_statement(s: &Statement) -> bool {
    matches!(s, Statement::CreateTable(ct) if !ct.external)
        || matches!(
            s,
            Statement::Drop { object_type: ObjectType::Table | ObjectType::View | ObjectType::MaterializedView, .. }
        )
        || matches!(
            s,
            Statement::Call(_) | Statement::AlterTable(_) | Statement::CreateView(_) | Statement::Truncate(_)
        )
}

/// Parses SQL in the PostgreSQL dialect with DataFusion's parser.
pub fn parse(sql: &str) -> Result<Vec<DFStatement>> {
    let sql = crate::rewrite::prepare(sql)?;
    let stmts = DFParser::parse_sql_with_dialect(&sql, &PostgreSqlDialect {})
        .map_err(|e| Error::invalid(SqlState::Syntax, e.to_string()))?;
    Ok(stmts.into_iter().collect())
}

/// Runs a planned statement in `ctx`, answering with PostgreSQL's command tag for statements without
/// rows to return.
pub async fn run_plan(ctx: &SessionContext, plan: LogicalPlan) -> Result<Output> {
    use datafusion::logical_expr::WriteOp;
    if let Some((op, returning)) = crate::query::dml::plan_op(&plan) {
        let df = ctx.execute_logical_plan(plan).await?;
        if returning {
            let command = match op {
                crate::query::dml::DmlOp::Delete => "DELETE",
                crate::query::dml::DmlOp::Update => "UPDATE",
                crate::query::dml::DmlOp::Insert => "INSERT 0",
            };
            return Ok(Output::Returning { rows: df.execute_stream().await?, command });
        }
        let rows: usize = df.collect().await?.iter().map(|b| b.num_rows()).sum();
        return Ok(Output::Done(op.tag(rows as u64)));
    }
    let dml = match &plan {
        LogicalPlan::Dml(d) => Some(d.op.clone()),
        _ => None,
    };
    let tag = statement_tag(&plan);
    let df = ctx.execute_logical_plan(plan).await?;
    match (dml, tag) {
        (Some(WriteOp::Insert(_)), _) => {
            let batches = df.collect().await?;
            let n = batches
                .first()
                .and_then(|b| b.column_by_name("count"))
                .and_then(|c| c.as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>())
                .map_or(0, |c| c.value(0));
            Ok(Output::Done(format!("INSERT 0 {n}")))
        }
        (Some(WriteOp::Truncate), _) => {
            df.collect().await?;
            Ok(Output::Done("TRUNCATE TABLE".into()))
        }
        (_, Some(tag)) => {
            df.collect().await?;
            Ok(Output::Done(tag))
        }
        (_, None) => Ok(Output::Stream(df.execute_stream().await?)),
    }
}

/// The PostgreSQL command tag of a plan that returns no rows to the client, or `None` for a query.
fn statement_tag(plan: &LogicalPlan) -> Option<String> {
    use datafusion::logical_expr::{DdlStatement, Statement as LStatement};
    match plan {
        LogicalPlan::Ddl(ddl) => Some(
            match ddl {
                DdlStatement::CreateView(_) => "CREATE VIEW",
                DdlStatement::DropView(_) => "DROP VIEW",
                DdlStatement::CreateMemoryTable(_) | DdlStatement::CreateExternalTable(_) => "CREATE TABLE",
                DdlStatement::DropTable(_) => "DROP TABLE",
                DdlStatement::CreateCatalogSchema(_) => "CREATE SCHEMA",
                DdlStatement::DropCatalogSchema(_) => "DROP SCHEMA",
                DdlStatement::CreateFunction(_) => "CREATE FUNCTION",
                DdlStatement::DropFunction(_) => "DROP FUNCTION",
                _ => "OK",
            }
            .to_string(),
        ),
        LogicalPlan::Statement(s) => Some(
            match s {
                LStatement::TransactionStart(_) => "BEGIN",
                LStatement::TransactionEnd(_) => "COMMIT",
                LStatement::SetVariable(_) => "SET",
                _ => "OK",
            }
            .to_string(),
        ),
        _ => None,
    }
}

pub(crate) fn object_name(name: &ast::ObjectName) -> Result<String> {
    let parts: Vec<String> =
        name.0.iter().map(|p| p.as_ident().map(normalize_ident).unwrap_or_else(|| p.to_string())).collect();
    match parts.as_slice() {
        [t] => Ok(t.clone()),
        [s, t] if s == SCHEMA_NAME => Ok(t.clone()),
        [c, s, t] if c == CATALOG_NAME && s == SCHEMA_NAME => Ok(t.clone()),
        _ => Err(Error::invalid(
            SqlState::InvalidParameter,
            format!("tables live in schema {SCHEMA_NAME}; cannot use \"{name}\""),
        )),
    }
}

/// The nullable stored columns for a query's output (CREATE TABLE AS, materialized views).
fn stored_columns(schema: &datafusion::arrow::datatypes::Schema) -> Result<Vec<ColumnDef>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            let ty = ColumnType::from_arrow(f.data_type()).ok_or_else(|| {
                Error::invalid(
                    SqlState::NotSupported,
                    format!("column \"{}\" has type {} which cannot be stored", f.name(), f.data_type()),
                )
            })?;
            Ok(ColumnDef { name: f.name().clone(), ty, nullable: true })
        })
        .collect()
}

/// `"name"` with embedded quotes doubled.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The first argument of a `CALL`, when it is a string literal.
fn call_text_argument(f: &ast::Function) -> Option<String> {
    let ast::FunctionArguments::List(list) = &f.args else { return None };
    match list.args.first()? {
        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v))) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// A comma-separated list of column names, as table options give them.
fn name_list(v: &str) -> Vec<String> {
    v.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect()
}

fn options_kv(options: &[SqlOption]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for o in options {
        let SqlOption::KeyValue { key, value } = o else {
            return Err(Error::invalid(SqlState::Syntax, format!("expected key = 'value', found {o}")));
        };
        let k = key.value.to_ascii_lowercase();
        if !seen.insert(k.clone()) {
            return Err(Error::invalid(SqlState::InvalidParameter, format!("option \"{k}\" given twice")));
        }
        let v = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
                ast::Value::Number(n, _) => n.to_string(),
                ast::Value::Null => String::new(),
                other => other.to_string(),
            },
            ast::Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        };
        out.push((k, v));
    }
    Ok(out)
}

fn column_def(c: &ast::ColumnDef) -> Result<ColumnDef> {
    let ty = match &c.data_type {
        SqlType::SmallInt(_) | SqlType::Int2(_) => ColumnType::SmallInt,
        SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int4(_) => ColumnType::Int,
        SqlType::BigInt(_) | SqlType::Int8(_) => ColumnType::BigInt,
        SqlType::Real | SqlType::Float4 => ColumnType::Real,
        SqlType::Double(_) | SqlType::DoublePrecision | SqlType::Float8 | SqlType::Float64 => ColumnType::Double,
        SqlType::Float(info) => match info {
            ast::ExactNumberInfo::Precision(p) | ast::ExactNumberInfo::PrecisionAndScale(p, _) if *p <= 24 => {
                ColumnType::Real
            }
            _ => ColumnType::Double,
        },
        SqlType::Boolean | SqlType::Bool => ColumnType::Boolean,
        SqlType::Text | SqlType::Varchar(_) | SqlType::CharacterVarying(_) | SqlType::String(_) | SqlType::Char(_) => {
            ColumnType::Text
        }
        SqlType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => ColumnType::TimestampTz,
        SqlType::Timestamp(_, _) | SqlType::TimestampNtz(_) => ColumnType::Timestamp,
        SqlType::Custom(name, _) if name.to_string().eq_ignore_ascii_case("timestamptz") => ColumnType::TimestampTz,
        other => {
            return Err(Error::invalid(
                SqlState::NotSupported,
                format!(
                    "type {other} of column \"{}\" is not supported (supported: timestamp, timestamptz, smallint, integer, bigint, real, double precision, boolean, text)",
                    c.name.value
                ),
            ));
        }
    };
    let mut nullable = true;
    for o in &c.options {
        match &o.option {
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Null => nullable = true,
            other => {
                return Err(Error::invalid(
                    SqlState::NotSupported,
                    format!(
                        "column option {other} of column \"{}\" is not supported (only NULL / NOT NULL)",
                        c.name.value
                    ),
                ));
            }
        }
    }
    Ok(ColumnDef { name: normalize_ident(&c.name), ty, nullable })
}

/// Unquoted identifiers fold to lower case, as in PostgreSQL (and DataFusion's planner).
fn normalize_ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

/// An empty stream, for statements that return nothing.
pub fn empty_stream(schema: SchemaRef) -> SendableRecordBatchStream {
    Box::pin(EmptyRecordBatchStream::new(schema))
}

/// The least time a rollup refresh may take (a first refresh reads the whole source table).
const ROLLUP_MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// What bounds the work the database does in the background (alert rules, rollup refreshes).
#[derive(Debug, Clone, Copy)]
struct BackgroundLimits {
    timeout: std::time::Duration,
    memory: u64,
}

impl Default for BackgroundLimits {
    fn default() -> BackgroundLimits {
        BackgroundLimits { timeout: std::time::Duration::from_secs(60), memory: 0 }
    }
}
