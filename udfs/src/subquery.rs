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

use crate::sqlstate::SqlState;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, LogicalPlan, LogicalPlanBuilder, Signature, Subquery, Volatility,
};

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
        code: SqlState::CardinalityViolation,
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

/// `x [NOT] IN (subquery)` inside a larger condition (under OR, NOT, CASE): three-valued, as in
/// PostgreSQL, through EXISTS tests.
///
/// DataFusion turns such a test into a mark join whose mark is only true or false, so
/// `x IN (SELECT k FROM d)` is FALSE where it should be NULL (no match, and `x` or some `k` NULL),
/// and `NOT (x IN ...)` or `x NOT IN ...` under OR selects rows PostgreSQL does not. A test that is a
/// whole conjunct of `WHERE` is left alone: DataFusion plans it as a semi join or a null-aware anti
/// join, which are right. The rewrite, with `m` "a row of the subquery equals x", `n` "the subquery
/// has a NULL" and `a` "the subquery has a row":
///
/// `x IN (q)` = `m OR CASE WHEN n OR (x IS NULL AND a) THEN NULL ELSE false END`
///
/// (EXISTS is two-valued, so its mark joins are right; `n` and `a` of an uncorrelated subquery are
/// counts, computed once.)
#[derive(Debug)]
pub struct ThreeValuedIn;

/// Whether DataFusion plans `conjunct` as a semi or anti join (a whole conjunct of a filter).
fn is_join_conjunct(conjunct: &Expr) -> bool {
    match conjunct {
        Expr::InSubquery(_) | Expr::Exists(_) => true,
        Expr::Not(e) => matches!(e.as_ref(), Expr::InSubquery(_) | Expr::Exists(_)),
        _ => false,
    }
}

/// True when `plan` yields a row: EXISTS when it is correlated, else a count computed once.
fn any_row(plan: LogicalPlan) -> Result<Expr> {
    use datafusion::logical_expr::{exists, lit};
    if !plan.all_out_ref_exprs().is_empty() {
        return Ok(exists(Arc::new(plan)));
    }
    let count = datafusion::functions_aggregate::expr_fn::count(lit(1i64)).alias("n");
    let counted = LogicalPlanBuilder::from(plan).aggregate(Vec::<Expr>::new(), vec![count])?.build()?;
    let subquery = Subquery { subquery: Arc::new(counted), outer_ref_columns: vec![], spans: Default::default() };
    Ok(Expr::ScalarSubquery(subquery).gt(lit(0i64)))
}

/// The three-valued form of an IN test (see [`ThreeValuedIn`]); `None` to leave it as it is.
fn three_valued(
    test: datafusion::logical_expr::expr::InSubquery,
    outer: &datafusion::common::DFSchema,
) -> Result<Option<Expr>> {
    use datafusion::logical_expr::{exists, lit, when};
    let x = *test.expr;
    let sub = test.subquery.subquery.as_ref();
    let nested_outer = x.exists(|e| Ok(matches!(e, Expr::OuterReferenceColumn(..))))?;
    if nested_outer || sub.schema().fields().len() != 1 {
        return Ok(None);
    }
    let e = Expr::Column(datafusion::common::Column::from(sub.schema().qualified_field(0)));
    // `x` as the subquery sees it: references to the outer row.
    let x_outer = x
        .clone()
        .transform(|e| match e {
            Expr::Column(c) => {
                let (_, field) = outer.qualified_field_from_column(&c)?;
                Ok(Transformed::yes(Expr::OuterReferenceColumn(field.clone(), c)))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;
    let matched = LogicalPlanBuilder::from(sub.clone()).filter(e.clone().eq(x_outer))?.build()?;
    let with_null = LogicalPlanBuilder::from(sub.clone()).filter(e.is_null())?.build()?;
    let unknown = any_row(with_null)?.or(x.is_null().and(any_row(sub.clone())?));
    let tested = exists(Arc::new(matched)).or(when(unknown, lit(ScalarValue::Boolean(None))).otherwise(lit(false))?);
    Ok(Some(if test.negated { !tested } else { tested }))
}

impl datafusion::optimizer::AnalyzerRule for ThreeValuedIn {
    fn name(&self) -> &str {
        "three_valued_in"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &datafusion::common::config::ConfigOptions) -> Result<LogicalPlan> {
        use datafusion::logical_expr::utils::{conjunction, split_conjunction, split_conjunction_owned};
        plan.transform_up_with_subqueries(|p| {
            let LogicalPlan::Filter(f) = p else { return Ok(Transformed::no(p)) };
            // Every filter of every query comes here: look without copying.
            let embedded = split_conjunction(&f.predicate)
                .into_iter()
                .any(|c| !is_join_conjunct(c) && c.exists(|e| Ok(matches!(e, Expr::InSubquery(_)))).unwrap_or(false));
            if !embedded {
                return Ok(Transformed::no(LogicalPlan::Filter(f)));
            }
            let schema = f.input.schema().clone();
            let conjuncts = split_conjunction_owned(f.predicate.clone())
                .into_iter()
                .map(|c| {
                    if is_join_conjunct(&c) {
                        return Ok(c);
                    }
                    c.transform_up(|e| match e {
                        Expr::InSubquery(test) => {
                            let original = Expr::InSubquery(test.clone());
                            match three_valued(test, &schema)? {
                                Some(e) => Ok(Transformed::yes(e)),
                                None => Ok(Transformed::no(original)),
                            }
                        }
                        other => Ok(Transformed::no(other)),
                    })
                    .map(|t| t.data)
                })
                .collect::<Result<Vec<_>>>()?;
            let predicate = conjunction(conjuncts).unwrap_or(f.predicate.clone());
            Ok(Transformed::yes(LogicalPlan::Filter(datafusion::logical_expr::Filter::try_new(predicate, f.input)?)))
        })
        .map(|t| t.data)
    }
}
