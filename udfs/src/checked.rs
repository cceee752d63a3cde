//! Integer arithmetic that fails on overflow, as PostgreSQL's does: `bigint '9223372036854775807' + 1`
//! is `ERROR: bigint out of range` (22003), where DataFusion's `+`, `-` and `*` wrap around silently
//! (its `BinaryExpr` can check, but nothing in its planner asks it to).
//!
//! [`IntegerOverflow`] plans `a + b`, `a - b` and `a * b` on two signed integers as a call of
//! [`Checked`], which computes in the wider of the two types with Arrow's checked kernels. The call
//! keeps the operator's column name (`x + Int64(1)`), so plans and derived tables name it as before.
//! A constant that overflows is left unfolded by the optimizer and fails when it runs.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::common::{DFSchema, ExprSchema, Result, ScalarValue, plan_err};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
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
        let udf = |op| Arc::new(ScalarUDF::from(Checked::new(op)));
        IntegerOverflow { add: udf(Op::Add), sub: udf(Op::Sub), mul: udf(Op::Mul) }
    }
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
