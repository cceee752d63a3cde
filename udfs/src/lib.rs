//! trafficdb SQL functions: time-series helpers, anomaly detection and the retry-prediction model.
//!
//! The functions depend on DataFusion and Arrow only, never on the storage engine's internals. The
//! engine installs them (with [`install`]) into every session it creates, so the embedded library, the
//! `sql` command and the server all have them. `docs/functions.md` documents each one.

pub mod aggregate;
pub mod anomaly;
pub mod computed;
pub mod detect;
pub mod gapfill;
pub mod in_list;
pub mod logistic;
pub mod model;
pub mod nesting;
pub mod sketch;
pub mod subquery;
pub mod time;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;

/// An error with a PostgreSQL SQLSTATE, raised by a function for bad arguments. The engine reports
/// its code (it looks through `DataFusionError::External` for this type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqlError {}

/// SQLSTATE 22023, invalid_parameter_value: what PostgreSQL raises for a bad argument value.
pub const INVALID_PARAMETER_VALUE: &str = "22023";

/// A `DataFusionError` carrying SQLSTATE 22023.
pub fn invalid_argument(message: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(SqlError { code: INVALID_PARAMETER_VALUE, message: message.into() }))
}

/// SQLSTATE 42501, insufficient_privilege.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Whether `statement` calls a table function that changes the model registry (anywhere: subqueries,
/// CTEs, EXPLAIN). The server's role check and the functions that run a query given as text use it.
pub fn calls_writing_function(statement: &datafusion::sql::sqlparser::ast::Statement) -> bool {
    use std::ops::ControlFlow;
    datafusion::sql::sqlparser::ast::visit_relations(statement, |name| {
        let last = name.0.last().map(|p| p.to_string().trim_matches('"').to_ascii_lowercase()).unwrap_or_default();
        if model::sql::WRITING_FUNCTIONS.contains(&last.as_str()) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// Runs `sql`, given as text to a function (`detect_anomalies`, `train_retry_model`, ...), and returns
/// its rows as one batch. Only a read is allowed: no DDL, DML, COPY or SET, and no call that changes a
/// model, so a function a reader may call cannot be used to write.
pub async fn run_read_query(state: &SessionState, function: &str, sql: &str) -> datafusion::error::Result<RecordBatch> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    nesting::check(sql).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let refuse = |m: String| DataFusionError::External(Box::new(SqlError { code: INSUFFICIENT_PRIVILEGE, message: m }));
    // A text that does not parse is left to the planner, which reports the syntax error.
    if let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        && statements.iter().any(calls_writing_function)
    {
        return Err(refuse(format!("{function}: the query may not train, deploy, roll back or drop a model")));
    }
    let plan = state.create_logical_plan(sql).await?;
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| refuse(format!("{function}: the query must only read ({e})")))?;
    let schema = Arc::new(plan.schema().as_arrow().clone());
    let physical = state.create_physical_plan(&plan).await?;
    let batches = datafusion::physical_plan::collect(physical, state.task_ctx()).await?;
    Ok(datafusion::arrow::compute::concat_batches(&schema, &batches)?)
}

/// Registers every function, and the planner for PostgreSQL's date/time arithmetic, in `state`; the
/// model functions keep their models in `models`.
pub fn install(state: &mut SessionState, models: &Arc<model::Registry>) -> datafusion::error::Result<()> {
    for f in time::scalar_functions().into_iter().chain(gapfill::placeholders()) {
        state.register_udf(f)?;
    }
    for f in aggregate::aggregate_functions()
        .into_iter()
        .chain(sketch::aggregate_functions())
        .chain(std::iter::once(subquery::single_row()))
    {
        state.register_udaf(f)?;
    }
    for f in sketch::scalar_functions() {
        state.register_udf(f)?;
    }
    for f in anomaly::window_functions() {
        state.register_udwf(f)?;
    }
    state.register_udtf("detect_anomalies", Arc::new(detect::DetectAnomalies));
    state.register_expr_planner(Arc::new(time::DateTimeArithmetic))?;
    model::sql::install(state, models)?;
    Ok(())
}
