//! Scalar subqueries that are not aggregated, `(SELECT dc FROM dim WHERE dim.host = m.host)`:
//! PostgreSQL runs them, and fails with SQLSTATE 21000 when one returns more than one row; DataFusion
//! plans only aggregated ones when they are correlated ("must be aggregated to return at most one
//! row"). The analyzer rule [`SingleRowSubquery`] aggregates every scalar subquery that may return more
//! than one row with [`single_row`], which yields the one value (NULL when there is no row) and raises
//! 21000 at a second row; DataFusion then decorrelates it as any aggregated subquery (a join on the
//! correlated columns).
//!
//! One difference remains: the aggregate runs for every key of the subquery's table, so duplicate keys
//! that no outer row asks for fail too, where PostgreSQL never evaluates them.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, LogicalPlan, LogicalPlanBuilder, Signature, Subquery, Volatility,
};

/// SQLSTATE 21000, cardinality_violation.
const CARDINALITY_VIOLATION: &str = "21000";

/// The aggregate a non-aggregated correlated scalar subquery is read through.
pub fn single_row() -> Arc<AggregateUDF> {
    static UDAF: OnceLock<Arc<AggregateUDF>> = OnceLock::new();
    UDAF.get_or_init(|| Arc::new(AggregateUDF::from(SingleRow { signature: Signature::any(1, Volatility::Immutable) })))
        .clone()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SingleRow {
    signature: Signature,
}

impl AggregateUDFImpl for SingleRow {
    fn name(&self) -> &str {
        "trafficdb_single_row"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        let t = args.return_field.data_type().clone();
        Ok(Box::new(SingleRowAccumulator { value: ScalarValue::try_from(&t)?, rows: 0 }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format!("{}_value", args.name), args.return_type().clone(), true)),
            Arc::new(Field::new(format!("{}_rows", args.name), DataType::UInt64, true)),
        ])
    }
}

#[derive(Debug)]
struct SingleRowAccumulator {
    value: ScalarValue,
    /// Rows seen (NULLs count: a second row is an error whatever it holds).
    rows: u64,
}

fn more_than_one_row() -> DataFusionError {
    DataFusionError::External(Box::new(crate::SqlError {
        code: CARDINALITY_VIOLATION,
        message: "more than one row returned by a subquery used as an expression".into(),
    }))
}

impl SingleRowAccumulator {
    fn add(&mut self, rows: u64, values: &ArrayRef, first: usize) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        if self.rows + rows > 1 {
            return Err(more_than_one_row());
        }
        self.value = ScalarValue::try_from_array(values, first)?;
        self.rows += rows;
        Ok(())
    }
}

impl Accumulator for SingleRowAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(values[0].len() as u64, &values[0], 0)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = states[1].as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        for i in 0..rows.len() {
            let n = if rows.is_valid(i) { rows.value(i) } else { 0 };
            self.add(n, &states[0], i)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value.clone(), ScalarValue::UInt64(Some(self.rows))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.value.size() - std::mem::size_of_val(&self.value)
    }
}

/// The analyzer rule (see the module documentation). It runs before type coercion.
#[derive(Debug)]
pub struct SingleRowSubquery;

/// Whether DataFusion would refuse `plan` as a correlated scalar subquery: its core (below
/// projections and aliases) is not an aggregate, and it may return more than one row.
fn needs_aggregate(plan: &LogicalPlan) -> bool {
    let mut core = plan;
    loop {
        core = match core {
            LogicalPlan::Projection(p) => p.input.as_ref(),
            LogicalPlan::SubqueryAlias(a) => a.input.as_ref(),
            _ => break,
        };
    }
    let aggregated = match core {
        LogicalPlan::Aggregate(a) => !a.aggr_expr.is_empty(),
        LogicalPlan::Filter(f) => matches!(f.input.as_ref(), LogicalPlan::Aggregate(_)),
        _ => false,
    };
    !aggregated && plan.max_rows().is_none_or(|n| n > 1)
}

/// `plan` (one column) read through [`single_row`], keeping the column's name.
fn aggregated(plan: &LogicalPlan) -> Result<LogicalPlan> {
    let (qualifier, field) = plan.schema().qualified_field(0);
    let column = Expr::Column(datafusion::common::Column::from((qualifier, field)));
    let agg =
        Expr::AggregateFunction(AggregateFunction::new_udf(single_row(), vec![column], false, None, vec![], None))
            .alias(field.name());
    LogicalPlanBuilder::from(plan.clone()).aggregate(Vec::<Expr>::new(), vec![agg])?.build()
}

impl datafusion::optimizer::AnalyzerRule for SingleRowSubquery {
    fn name(&self) -> &str {
        "single_row_subquery"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &datafusion::common::config::ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|p| {
            p.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::ScalarSubquery(sq)
                        if sq.subquery.schema().fields().len() == 1 && needs_aggregate(&sq.subquery) =>
                    {
                        let subquery = Arc::new(aggregated(&sq.subquery)?);
                        Ok(Transformed::yes(Expr::ScalarSubquery(Subquery { subquery, ..sq })))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
    }
}
