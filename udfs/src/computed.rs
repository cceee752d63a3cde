//! A read-only table computed afresh at every scan, listed as a view: the system views (`models`,
//! `system_metrics`) are built on it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

type Rows = Box<dyn Fn() -> Result<RecordBatch> + Send + Sync>;

/// A table whose rows `rows` computes when a query scans it.
pub struct ComputedTable {
    schema: SchemaRef,
    rows: Rows,
}

impl ComputedTable {
    pub fn new(schema: SchemaRef, rows: impl Fn() -> Result<RecordBatch> + Send + Sync + 'static) -> ComputedTable {
        ComputedTable { schema, rows: Box::new(rows) }
    }
}

impl std::fmt::Debug for ComputedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputedTable").field("schema", &self.schema).finish()
    }
}

#[async_trait]
impl TableProvider for ComputedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Computed, like a view (and listed as one).
    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(MemorySourceConfig::try_new_exec(&[vec![(self.rows)()?]], self.schema.clone(), projection.cloned())?)
    }
}
