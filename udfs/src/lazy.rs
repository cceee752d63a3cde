//! A table function's table whose one batch is computed when the query executes, never while it is
//! planned: so `EXPLAIN`, a client's Describe or a role check does no work, the work runs under the
//! statement's timeout and cancel, and CPU-heavy parts go to a blocking thread.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::future::BoxFuture;

pub(crate) type Work = Arc<dyn Fn(SessionState) -> BoxFuture<'static, Result<RecordBatch>> + Send + Sync>;

/// A table whose single batch is computed by `work` when the query executes.
pub(crate) struct LazyTable {
    pub(crate) name: &'static str,
    pub(crate) schema: SchemaRef,
    pub(crate) work: Work,
}

impl fmt::Debug for LazyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LazyTable({})", self.name)
    }
}

#[async_trait]
impl TableProvider for LazyTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "{} needs a DataFusion session",
                self.name
            )));
        };
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Arc::new(LazyExec {
            name: self.name,
            schema,
            projection: projection.cloned(),
            state: state.clone(),
            work: self.work.clone(),
            props: Arc::new(props),
        }))
    }
}

struct LazyExec {
    name: &'static str,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    state: SessionState,
    work: Work,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for LazyExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LazyExec({})", self.name)
    }
}

impl DisplayAs for LazyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FunctionExec: {}", self.name)
    }
}

impl ExecutionPlan for LazyExec {
    fn name(&self) -> &str {
        "FunctionExec"
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
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
        let work = (self.work)(self.state.clone());
        let projection = self.projection.clone();
        let fut = async move {
            let batch = work.await?;
            Ok(match projection {
                Some(p) => batch.project(&p)?,
                None => batch,
            })
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::once(fut))))
    }
}

/// CPU-heavy work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
}

/// The function name of a [`LazyTable`].
pub(crate) fn name_of(provider: &dyn TableProvider) -> Option<&'static str> {
    (provider as &dyn std::any::Any).downcast_ref::<LazyTable>().map(|t| t.name)
}
