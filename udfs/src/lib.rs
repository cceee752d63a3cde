//! trafficdb SQL functions: time-series helpers, anomaly detection and the retry-prediction model.
//!
//! The functions depend on DataFusion and Arrow only, never on the storage engine's internals. The
//! engine installs them (with [`install`]) into every session it creates, so the embedded library, the
//! `sql` command and the server all have them. `docs/functions.md` documents each one.
//!
//! # Module map
//!
//! - Functions: [`time`] (time buckets, first / last, rates), [`gapfill`], [`aggregate`],
//!   [`sketch`] (mergeable percentile sketches), [`anomaly`] and [`detect`] (anomaly scores and
//!   `detect_anomalies`), [`model`] with [`logistic`] (the retry model: train, evaluate, predict,
//!   registry), [`computed`], [`pg`] (PostgreSQL's functions DataFusion lacks), [`ordered_set`]
//!   (`percentile_disc`, `mode`), [`json`] (JSON kept as text).
//! - Plumbing the functions share: `lazy` (table functions that do their work at execution, on a
//!   blocking thread, under the statement's timeout), [`access`] (the least access a plan needs:
//!   read, write or admin), [`bounded`] (wrappers that refuse results past 256 MiB), [`nesting`]
//!   (depth limits), and optimizer rules that correct DataFusion: [`in_list`], [`subquery`].
//!
//! A new function: its module, [`install`], `docs/functions.md`, and an `.slt` file. A table
//! function that writes must be known to [`access`].

pub mod access;
pub mod aggregate;
pub mod anomaly;
pub mod bounded;
pub mod catalog;
pub mod checked;
pub mod computed;
pub mod detect;
pub mod gapfill;
pub mod gbdt;
pub mod in_list;
pub mod json;
mod lazy;
pub mod logistic;
pub mod model;
pub mod nesting;
pub mod ordered_set;
pub mod pg;
pub mod sketch;
pub mod sliding;
pub mod sqlstate;
pub mod subquery;
pub mod time;

use std::sync::Arc;

use crate::sqlstate::SqlState;
use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;

/// An error with a PostgreSQL SQLSTATE, raised by a function for bad arguments. The engine reports
/// its code (it looks through `DataFusionError::External` for this type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: SqlState,
    pub message: String,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqlError {}

/// A `DataFusionError` carrying SQLSTATE 22023.
pub fn invalid_argument(message: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(SqlError { code: SqlState::InvalidParameter, message: message.into() }))
}

/// Runs `sql`, given as text to a function (`detect_anomalies`, `train_retry_model`, ...), and returns
/// its rows as one batch. Only a read is allowed: no DDL, DML, COPY or SET, and no call that changes a
/// model, so a function a reader may call cannot be used to write.
pub async fn run_read_query(state: &SessionState, function: &str, sql: &str) -> datafusion::error::Result<RecordBatch> {
    nesting::check(sql).map_err(|e| DataFusionError::External(Box::new(e)))?;
    // One parse, by the parser that plans it; what the plan does decides, whatever the text says.
    let plan = state.create_logical_plan(sql).await?;
    let access = access::plan_access(&plan, &access::no_extensions);
    if access != access::Access::Read {
        return Err(DataFusionError::External(Box::new(SqlError {
            code: SqlState::InsufficientPrivilege,
            message: format!("{function}: the query must only read, and this one {}", access.describe()),
        })));
    }
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
        .chain(ordered_set::udafs().into_iter().map(Arc::new))
        .chain(std::iter::once(subquery::single_row()))
    {
        state.register_udaf(f)?;
    }
    for f in sketch::scalar_functions().into_iter().chain(json::scalar_functions()) {
        state.register_udf(f)?;
    }
    if let Some(sum) = state.aggregate_functions().get("sum").cloned() {
        state.register_udaf(Arc::new(datafusion::logical_expr::AggregateUDF::from(checked::CheckedSum::new(sum))))?;
    }
    if let Some(array_agg) = state.aggregate_functions().get("array_agg").cloned() {
        for f in json::aggregate_functions(&array_agg) {
            state.register_udaf(f)?;
        }
    }
    state.register_expr_planner(Arc::new(json::JsonOperators))?;
    for f in anomaly::window_functions() {
        state.register_udwf(f)?;
    }
    state.register_udtf("detect_anomalies", Arc::new(detect::DetectAnomalies));
    state.register_udtf("trafficdb_functions", Arc::new(catalog::FunctionList));
    state.register_expr_planner(Arc::new(time::DateTimeArithmetic))?;
    state.register_expr_planner(Arc::new(checked::IntegerOverflow::default()))?;
    model::sql::install(state, models)?;
    bounded::install(state)?;
    pg::install(state)?;
    Ok(())
}
