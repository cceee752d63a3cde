//! Real-time rollups: reading a continuous rollup gives its stored buckets before the point from which
//! it is stale, and the rollup's query over the source's raw rows from that point on (TimescaleDB's
//! real-time aggregates). The point is the earlier of the watermark (buckets after it were never
//! computed) and the earliest source change not yet refreshed (a late row or a delete before the
//! watermark), floored to a bucket; so a rollup always answers what its query over the raw rows
//! would, without waiting for a refresh, and the raw part is only the recent (or changed) stretch.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, ExprSchemable, LogicalPlanBuilder, TableProviderFilterPushDown, TableType, col, lit,
};
use datafusion::physical_plan::ExecutionPlan;

use crate::engine::Engine;
use crate::rollup::Rollup;

/// A rollup read in real time: its stored table plus the raw rows past the point it is stale from.
#[derive(Debug)]
pub struct RealtimeRollup {
    engine: Arc<Engine>,
    stored: Arc<dyn TableProvider>,
    rollup: Rollup,
}

impl RealtimeRollup {
    pub fn new(engine: Arc<Engine>, stored: Arc<dyn TableProvider>, rollup: Rollup) -> Self {
        RealtimeRollup { engine, stored, rollup }
    }

    /// Buckets from here on come from the raw rows; `None`: every bucket does (never refreshed).
    fn stale_from(&self) -> Option<i64> {
        stale_from(&self.engine, &self.rollup)
    }
}

/// The point `r` is stale from: the earlier of its watermark and its source's earliest unrefreshed
/// change, and, when the source is itself a rollup read in real time, the point that one is stale from
/// (its buckets after it may differ from what it stores). `None`: stale everywhere.
fn stale_from(engine: &Engine, r: &Rollup) -> Option<i64> {
    let mut at = r.watermark_us?;
    if let Some(changed) = engine.table(&r.source).and_then(|src| engine.peek_changes(&src, &r.name)) {
        at = at.min(changed);
    }
    if let Some(source) = crate::rollup::find(engine, &r.source).filter(|s| s.realtime) {
        at = at.min(stale_from(engine, &source)?);
    }
    Some(crate::rollup::floor(at, r.bucket_us))
}

#[async_trait]
impl TableProvider for RealtimeRollup {
    fn schema(&self) -> SchemaRef {
        self.stored.schema()
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
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return self.stored.scan(state, projection, filters, None).await;
        };
        let r = &self.rollup;
        let schema = self.stored.schema();
        let tz = match schema.field(0).data_type() {
            datafusion::arrow::datatypes::DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let bucket = col(datafusion::common::Column::from_name(r.bucket_column.clone()));
        // The stored buckets before the stale point, the query over the raw rows from it on; the raw
        // part's columns cast to the stored types, by name.
        let stale = self.stale_from();
        let stored = LogicalPlanBuilder::scan(r.name.clone(), provider_as_source(self.stored.clone()), None)?;
        let mut parts = Vec::new();
        if let Some(at) = stale {
            parts
                .push(stored.filter(bucket.clone().lt(lit(ScalarValue::TimestampMicrosecond(Some(at), tz))))?.build()?);
        }
        let raw = state.create_logical_plan(&r.query).await?;
        let raw = crate::rollup::restrict(raw, &r.source, &r.source_time, stale.unwrap_or(i64::MIN), i64::MAX)
            .map_err(datafusion::error::DataFusionError::from)?;
        let raw_schema = raw.schema().clone();
        let cast: Vec<Expr> = schema
            .fields()
            .iter()
            .zip(raw_schema.columns())
            .map(|(f, c)| Expr::Column(c).cast_to(f.data_type(), &raw_schema).map(|e| e.alias(f.name())))
            .collect::<Result<_>>()?;
        parts.push(LogicalPlanBuilder::from(raw).project(cast)?.build()?);
        let mut plan = LogicalPlanBuilder::from(parts.remove(0));
        for p in parts {
            plan = plan.union(p)?;
        }
        // The query's filters above the union, so that the optimizer takes them into both sides.
        if let Some(f) = conjunction(filters.iter().cloned().map(unnormalize_col)) {
            plan = plan.filter(f)?;
        }
        if let Some(p) = projection {
            plan =
                plan.project(p.iter().map(|&i| col(datafusion::common::Column::from_name(schema.field(i).name()))))?;
        }
        state.create_physical_plan(&plan.build()?).await
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.stored.insert_into(state, input, op).await
    }
}
