//! Integer arithmetic that fails on overflow, as PostgreSQL's does: `bigint '9223372036854775807' + 1`
//! is `ERROR: bigint out of range` (22003), where DataFusion's `+`, `-` and `*` wrap around silently
//! (its `BinaryExpr` can check, but nothing in its planner asks it to).
//!
//! [`IntegerOverflow`] plans `a + b`, `a - b` and `a * b` on two signed integers as a call of
//! [`Checked`], which computes in the wider of the two types with Arrow's checked kernels. The call
//! keeps the operator's column name (`x + Int64(1)`), so plans and derived tables name it as before.
//! A constant that overflows is left unfolded by the optimizer and fails when it runs.
//!
//! [`CheckedSum`] is `sum` with the same answers, except that a `bigint` sum past 2^63 fails with
//! 22003 where DataFusion's wraps: it adds in 128 bits (partial sums travel as `decimal(38, 0)`) and
//! checks the range once per group at the end. PostgreSQL's `sum(bigint)` is `numeric` and does not
//! fail at all; the result stays `bigint` here, as DataFusion types it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Int64Array};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::{Field, FieldRef, Int64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::common::{DFSchema, ExprSchema, Result, ScalarValue, plan_err};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, Expr, ExprSchemable, GroupsAccumulator,
    ReversedUDAF, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use crate::SqlError;
use crate::sqlstate::SqlState;

/// The operators checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
        }
    }
}

/// `a op b` on signed integers, failing with 22003 when the result does not fit the type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Checked {
    op: Op,
    name: &'static str,
    signature: Signature,
}

impl Checked {
    fn new(op: Op) -> Checked {
        let name = match op {
            Op::Add => "int_add",
            Op::Sub => "int_sub",
            Op::Mul => "int_mul",
        };
        Checked { op, name, signature: Signature::user_defined(Volatility::Immutable) }
    }
}

/// The width rank of a signed integer type.
fn signed_rank(t: &DataType) -> Option<u8> {
    match t {
        DataType::Int8 => Some(1),
        DataType::Int16 => Some(2),
        DataType::Int32 => Some(3),
        DataType::Int64 => Some(4),
        _ => None,
    }
}

/// The type two signed integers are computed in: the wider.
fn common(a: &DataType, b: &DataType) -> Option<DataType> {
    Some(if signed_rank(a)? >= signed_rank(b)? { a.clone() } else { b.clone() })
}

/// PostgreSQL's message for a result out of `t`'s range.
fn out_of_range(t: &DataType) -> DataFusionError {
    let name = match t {
        DataType::Int8 | DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        _ => "bigint",
    };
    DataFusionError::External(Box::new(SqlError {
        code: SqlState::NumericValueOutOfRange,
        message: format!("{name} out of range"),
    }))
}

impl ScalarUDFImpl for Checked {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [a, b] => match common(a, b) {
                Some(t) => Ok(vec![t.clone(), t]),
                None => plan_err!("{} takes two signed integers, not {a} and {b}", self.name),
            },
            _ => plan_err!("{} takes two arguments", self.name),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let [a, b] = args else { return plan_err!("{} takes two arguments", self.name) };
        Ok(format!("{} {} {}", a.schema_name(), self.op.symbol(), b.schema_name()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else { return plan_err!("{} takes two arguments", self.name) };
        let scalars = matches!((a, b), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let (left, right) = (datum(a)?, datum(b)?);
        let kernel = match self.op {
            Op::Add => numeric::add,
            Op::Sub => numeric::sub,
            Op::Mul => numeric::mul,
        };
        let out: ArrayRef = kernel(left.as_ref(), right.as_ref()).map_err(|e| match e {
            ArrowError::ArithmeticOverflow(_) => out_of_range(args.return_field.data_type()),
            other => DataFusionError::ArrowError(Box::new(other), None),
        })?;
        Ok(if scalars {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// An argument as Arrow's kernels take it: an array, or a scalar broadcast by the kernel.
fn datum(v: &ColumnarValue) -> Result<Box<dyn datafusion::arrow::array::Datum>> {
    Ok(match v {
        ColumnarValue::Array(a) => Box::new(a.clone()),
        ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
    })
}

/// Plans `+`, `-` and `*` of two signed integers as [`Checked`] calls.
#[derive(Debug)]
pub struct IntegerOverflow {
    add: Arc<ScalarUDF>,
    sub: Arc<ScalarUDF>,
    mul: Arc<ScalarUDF>,
}

impl Default for IntegerOverflow {
    fn default() -> IntegerOverflow {
        let [add, sub, mul] = planned_functions();
        IntegerOverflow { add, sub, mul }
    }
}

/// The functions [`IntegerOverflow`] plans (`int_add`, `int_sub`, `int_mul`). SQL cannot call them by
/// name, but a plan run by another process names them: a worker's session registers them.
pub fn planned_functions() -> [Arc<ScalarUDF>; 3] {
    [Op::Add, Op::Sub, Op::Mul].map(|op| Arc::new(ScalarUDF::from(Checked::new(op))))
}

impl ExprPlanner for IntegerOverflow {
    fn plan_binary_op(&self, expr: RawBinaryExpr, schema: &DFSchema) -> Result<PlannerResult<RawBinaryExpr>> {
        let udf = match expr.op {
            BinaryOperator::Plus => &self.add,
            BinaryOperator::Minus => &self.sub,
            BinaryOperator::Multiply => &self.mul,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let types = (expr.left.get_type(schema as &dyn ExprSchema), expr.right.get_type(schema as &dyn ExprSchema));
        let (Ok(a), Ok(b)) = types else { return Ok(PlannerResult::Original(expr)) };
        if common(&a, &b).is_none() {
            return Ok(PlannerResult::Original(expr));
        }
        Ok(PlannerResult::Planned(Expr::ScalarFunction(ScalarFunction::new_udf(
            udf.clone(),
            vec![expr.left, expr.right],
        ))))
    }
}

/// `sum` (DataFusion's for every type but `bigint`, see the module's documentation).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedSum {
    inner: Arc<AggregateUDF>,
}

impl CheckedSum {
    /// `sum` over DataFusion's `sum` (`inner`).
    pub fn new(inner: Arc<AggregateUDF>) -> CheckedSum {
        CheckedSum { inner }
    }

    /// Whether this call adds `bigint`s in 128 bits (DISTINCT sums are DataFusion's).
    fn checked(return_type: &DataType, distinct: bool) -> bool {
        !distinct && return_type == &DataType::Int64
    }
}

/// The partial sums of a `bigint` sum.
const PARTIAL: DataType = DataType::Decimal128(38, 0);

impl AggregateUDFImpl for CheckedSum {
    fn name(&self) -> &str {
        "sum"
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        if Self::checked(args.return_field.data_type(), args.is_distinct) {
            return Ok(Box::new(Sum128::default()));
        }
        self.inner.inner().accumulator(args)
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        if Self::checked(args.return_type(), args.is_distinct) {
            return Ok(vec![Arc::new(Field::new(format_state_name(args.name, "sum"), PARTIAL, true))]);
        }
        self.inner.inner().state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs<'_>) -> bool {
        self.inner.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn GroupsAccumulator>> {
        if Self::checked(args.return_field.data_type(), args.is_distinct) {
            return Ok(Box::new(Sums128::default()));
        }
        self.inner.inner().create_groups_accumulator(args)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        if Self::checked(args.return_field.data_type(), args.is_distinct) {
            return Ok(Box::new(Sum128::default()));
        }
        self.inner.inner().create_sliding_accumulator(args)
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> datafusion::logical_expr::utils::AggregateOrderSensitivity {
        datafusion::logical_expr::utils::AggregateOrderSensitivity::Insensitive
    }

    fn set_monotonicity(&self, data_type: &DataType) -> datafusion::logical_expr::SetMonotonicity {
        self.inner.inner().set_monotonicity(data_type)
    }

    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        self.inner.documentation()
    }
}

/// A 128-bit sum as a `bigint`: NULL when nothing was added, 22003 out of range.
fn to_bigint(sum: i128, added: u64) -> Result<Option<i64>> {
    if added == 0 {
        return Ok(None);
    }
    i64::try_from(sum).map(Some).map_err(|_| out_of_range(&DataType::Int64))
}

/// Adds the valid values of `values` (a `bigint` array) that `filter` keeps to `add(row, value)`.
fn each_value(values: &ArrayRef, filter: Option<&BooleanArray>, mut add: impl FnMut(usize, i64)) {
    let values = values.as_primitive::<Int64Type>();
    if values.null_count() == 0 && filter.is_none() {
        values.values().iter().enumerate().for_each(|(i, &v)| add(i, v));
        return;
    }
    for i in 0..values.len() {
        let kept = filter.is_none_or(|f| f.is_valid(i) && f.value(i));
        if kept && values.is_valid(i) {
            add(i, values.value(i));
        }
    }
}

/// The partial sums in `states[0]` (`decimal(38, 0)`), each valid one given to `add(row, value)`.
fn each_partial(states: &[ArrayRef], mut add: impl FnMut(usize, i128)) {
    let partial = states[0].as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
    for i in 0..partial.len() {
        if partial.is_valid(i) {
            add(i, partial.value(i));
        }
    }
}

/// One `bigint` sum (and a sliding window's, which takes values back out).
#[derive(Debug, Default)]
struct Sum128 {
    sum: i128,
    added: u64,
}

impl Accumulator for Sum128 {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        each_value(&values[0], None, |_, v| {
            self.sum += i128::from(v);
            self.added += 1;
        });
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        each_value(&values[0], None, |_, v| {
            self.sum -= i128::from(v);
            self.added -= 1;
        });
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        each_partial(states, |_, v| {
            self.sum += v;
            self.added += 1;
        });
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Decimal128((self.added > 0).then_some(self.sum), 38, 0)])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(to_bigint(self.sum, self.added)?))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// The `bigint` sums of many groups.
#[derive(Debug, Default)]
struct Sums128 {
    sums: Vec<i128>,
    added: Vec<u64>,
}

impl Sums128 {
    fn grow(&mut self, groups: usize) {
        self.sums.resize(groups, 0);
        self.added.resize(groups, 0);
    }
}

impl GroupsAccumulator for Sums128 {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        each_value(&values[0], opt_filter, |i, v| {
            let g = group_indices[i];
            self.sums[g] += i128::from(v);
            self.added[g] += 1;
        });
        Ok(())
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.grow(total_num_groups);
        each_partial(values, |i, v| {
            let g = group_indices[i];
            self.sums[g] += v;
            self.added[g] += 1;
        });
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = emit_to.take_needed(&mut self.sums);
        let added = emit_to.take_needed(&mut self.added);
        let out = sums.into_iter().zip(added).map(|(s, n)| to_bigint(s, n)).collect::<Result<Int64Array>>()?;
        Ok(Arc::new(out))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let sums = emit_to.take_needed(&mut self.sums);
        let added = emit_to.take_needed(&mut self.added);
        let partial: Decimal128Array = sums.into_iter().zip(added).map(|(s, n)| (n > 0).then_some(s)).collect();
        Ok(vec![Arc::new(partial.with_precision_and_scale(38, 0)?)])
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let mut partial = vec![None; values[0].len()];
        each_value(&values[0], opt_filter, |i, v| partial[i] = Some(i128::from(v)));
        Ok(vec![Arc::new(Decimal128Array::from(partial).with_precision_and_scale(38, 0)?)])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * 16 + self.added.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn run(sql: &str) -> Result<String> {
        let mut ctx = SessionContext::new();
        datafusion::execution::FunctionRegistry::register_expr_planner(&mut ctx, Arc::new(IntegerOverflow::default()))?;
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    fn code(e: &DataFusionError) -> Option<(SqlState, String)> {
        match e {
            DataFusionError::External(inner) => inner.downcast_ref::<SqlError>().map(|e| (e.code, e.message.clone())),
            DataFusionError::Context(_, inner) => code(inner),
            _ => None,
        }
    }

    #[tokio::test]
    async fn overflow_fails_with_22003_in_the_operands_type() {
        for (sql, message) in [
            ("SELECT CAST(9223372036854775807 AS BIGINT) + 1", "bigint out of range"),
            ("SELECT x * 2 FROM (VALUES (CAST(5000000000000000000 AS BIGINT))) v(x)", "bigint out of range"),
            ("SELECT CAST(-2147483648 AS INT) - CAST(1 AS INT)", "integer out of range"),
            ("SELECT CAST(32767 AS SMALLINT) + CAST(1 AS SMALLINT)", "smallint out of range"),
        ] {
            let e = run(sql).await.expect_err(sql);
            assert_eq!(code(&e), Some((SqlState::NumericValueOutOfRange, message.into())), "{sql}: {e}");
        }
    }

    async fn run_sum(sql: &str) -> Result<String> {
        let ctx = SessionContext::new();
        let sum = datafusion::functions_aggregate::sum::sum_udaf();
        ctx.register_udaf(AggregateUDF::from(CheckedSum::new(sum)));
        ctx.sql("CREATE TABLE t (g INT, x BIGINT) AS VALUES (1, 9223372036854775806), (1, 1), (2, 9223372036854775807), (2, -5), (3, NULL), (1, -3)")
            .await?;
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn bigint_sums_past_the_range_fail_and_others_are_exact() {
        let out = run_sum("SELECT g, sum(x) AS s FROM t GROUP BY g ORDER BY g").await.expect("grouped");
        assert!(out.contains("| 1 | 9223372036854775804 |"), "{out}");
        assert!(out.contains("| 2 | 9223372036854775802 |"), "{out}");
        assert!(out.contains("| 3 |                     |"), "{out}");
        for sql in [
            "SELECT sum(x) FROM t WHERE x > 0",
            "SELECT sum(x) FROM t GROUP BY x > 0",
            "SELECT sum(x) FILTER (WHERE x > 1) FROM t",
            "SELECT sum(x) FROM t",
        ] {
            let e = run_sum(sql).await.expect_err(sql);
            assert_eq!(code(&e), Some((SqlState::NumericValueOutOfRange, "bigint out of range".into())), "{sql}: {e}");
        }
        let out = run_sum("SELECT sum(x) AS s FROM t WHERE g = 1").await.expect("one group");
        assert!(out.contains("| 9223372036854775804 |"), "{out}");
        let out = run_sum("SELECT sum(DISTINCT x) AS s FROM t WHERE g = 1").await.expect("distinct");
        assert!(out.contains("| 9223372036854775804 |"), "{out}");
        let out = run_sum("SELECT sum(x) OVER (ORDER BY x ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM t WHERE g = 1 ORDER BY x")
            .await
            .expect("window");
        assert!(out.contains("| -3  ") || out.contains("| -3 "), "{out}");
        assert!(out.contains("| -2 "), "{out}");
        assert!(out.contains("| 9223372036854775807 |"), "{out}");
        let out = run_sum("SELECT sum(x) AS s FROM t WHERE g = 3").await.expect("nulls only");
        assert!(out.contains("|   |") || out.contains("|  |"), "{out}");
    }

    #[tokio::test]
    async fn arithmetic_in_range_keeps_its_value_type_and_name() {
        let out = run("SELECT x + 1, x - 2, x * 3, CAST(x AS INT) * CAST(2 AS INT) FROM (VALUES (10), (NULL)) v(x)")
            .await
            .expect("run");
        assert!(out.contains("| v.x + Int64(1) | v.x - Int64(2) | v.x * Int64(3) |"), "{out}");
        assert!(out.contains("| 11             | 8              | 30             | 20"), "{out}");
        let typed = run("SELECT arrow_typeof(CAST(1 AS INT) + CAST(1 AS SMALLINT)), arrow_typeof(1.5 + 1)")
            .await
            .expect("types");
        assert!(typed.contains("Int32") && typed.contains("Float64"), "{typed}");
    }
}
