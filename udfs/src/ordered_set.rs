//! PostgreSQL's ordered-set aggregates DataFusion lacks: `percentile_disc(p) WITHIN GROUP (ORDER BY
//! x)` (the first value whose position in the order reaches the fraction `p` of the rows) and
//! `mode() WITHIN GROUP (ORDER BY x)` (the most frequent value; of equally frequent ones, the first
//! in the order). DataFusion's planner passes the ordered expression as the first argument and the
//! direct arguments after it. Both keep the group's non-null values (their memory is the values'),
//! sort them once at the end, and work for any type with an order (numbers, text, times).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::{SortOptions, concat, sort};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};
use datafusion::physical_expr::expressions::Literal;

use crate::{SqlError, SqlState};

/// The aggregates of this module.
pub fn udafs() -> Vec<AggregateUDF> {
    vec![AggregateUDF::from(OrderedSet::new(Pick::PercentileDisc)), AggregateUDF::from(OrderedSet::new(Pick::Mode))]
}

/// Which value of the sorted group an aggregate answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pick {
    PercentileDisc,
    Mode,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct OrderedSet {
    pick: Pick,
    signature: Signature,
}

impl OrderedSet {
    fn new(pick: Pick) -> OrderedSet {
        let arity = if pick == Pick::Mode { 1 } else { 2 };
        OrderedSet { pick, signature: Signature::any(arity, Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for OrderedSet {
    fn name(&self) -> &str {
        match self.pick {
            Pick::PercentileDisc => "percentile_disc",
            Pick::Mode => "mode",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        let values = Field::new_list_field(args.input_fields[0].data_type().clone(), true);
        Ok(vec![Arc::new(Field::new(format_state_name(args.name, "values"), DataType::List(Arc::new(values)), true))])
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        let fraction = match self.pick {
            Pick::Mode => 0.0,
            Pick::PercentileDisc => fraction(args.exprs.get(1).and_then(|e| e.downcast_ref::<Literal>()))?,
        };
        let descending = args.order_bys.first().is_some_and(|o| o.options.descending);
        Ok(Box::new(Values {
            pick: self.pick,
            fraction,
            descending,
            data_type: args.expr_fields[0].data_type().clone(),
            values: vec![],
            bytes: 0,
        }))
    }
}

/// The fraction of `percentile_disc(p)`, a constant between 0 and 1 as PostgreSQL requires.
fn fraction(literal: Option<&Literal>) -> Result<f64> {
    let Some(literal) = literal else {
        return exec_err!("percentile_disc takes a constant fraction");
    };
    let p = match literal.value().cast_to(&DataType::Float64)? {
        ScalarValue::Float64(Some(p)) => p,
        _ => return exec_err!("percentile_disc takes a constant fraction"),
    };
    if !(0.0..=1.0).contains(&p) {
        return Err(datafusion::error::DataFusionError::External(Box::new(SqlError {
            code: SqlState::NumericValueOutOfRange,
            message: format!("percentile value {p} is not between 0 and 1"),
        })));
    }
    Ok(p)
}

#[derive(Debug)]
struct Values {
    pick: Pick,
    fraction: f64,
    descending: bool,
    data_type: DataType,
    values: Vec<ArrayRef>,
    bytes: usize,
}

impl Values {
    fn keep(&mut self, values: &ArrayRef) -> Result<()> {
        let kept = if values.null_count() > 0 {
            datafusion::arrow::compute::filter(values, &datafusion::arrow::compute::is_not_null(values)?)?
        } else {
            values.clone()
        };
        if !kept.is_empty() {
            self.bytes += kept.get_array_memory_size();
            self.values.push(kept);
        }
        Ok(())
    }

    fn all(&self) -> Result<ArrayRef> {
        if self.values.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(&self.data_type));
        }
        let parts: Vec<&dyn Array> = self.values.iter().map(|a| a.as_ref()).collect();
        Ok(concat(&parts)?)
    }
}

impl Accumulator for Values {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.keep(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for list in lists.iter().flatten() {
            self.keep(&list)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let all = self.all()?;
        Ok(vec![ScalarValue::List(Arc::new(
            datafusion::common::utils::SingleRowListArrayBuilder::new(all).build_list_array(),
        ))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let all = self.all()?;
        if all.is_empty() {
            return ScalarValue::try_from(&self.data_type);
        }
        let sorted = sort(&all, Some(SortOptions { descending: self.descending, nulls_first: false }))?;
        let n = sorted.len();
        let row = match self.pick {
            // The first row whose share of the rows, counting it, reaches the fraction.
            Pick::PercentileDisc => ((self.fraction * n as f64).ceil() as usize).clamp(1, n) - 1,
            Pick::Mode => {
                let distinct =
                    datafusion::arrow::compute::kernels::partition::partition(std::slice::from_ref(&sorted))?;
                let mut best = 0..0;
                for run in distinct.ranges() {
                    if run.len() > best.len() {
                        best = run;
                    }
                }
                best.start
            }
        };
        ScalarValue::try_from_array(&sorted, row)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.bytes
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    async fn one(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
        datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("format").to_string()
    }

    #[tokio::test]
    async fn percentile_disc_and_mode_answer_as_postgresql() {
        let ctx = SessionContext::new();
        for f in super::udafs() {
            ctx.register_udaf(f);
        }
        ctx.sql("CREATE TABLE m (x INT, h TEXT) AS VALUES (10, 'b'), (20, 'a'), (30, 'b'), (40, 'a'), (NULL, NULL), (20, 'c')")
            .await
            .expect("table");
        // PostgreSQL 15 on the same rows: 20, 20, 10, 40, 20, 40; a, b; NULL over no rows.
        let cases = [
            ("percentile_disc(0.5) WITHIN GROUP (ORDER BY x)", "20"),
            ("percentile_disc(0.4) WITHIN GROUP (ORDER BY x)", "20"),
            ("percentile_disc(0) WITHIN GROUP (ORDER BY x)", "10"),
            ("percentile_disc(1) WITHIN GROUP (ORDER BY x)", "40"),
            ("percentile_disc(0.5) WITHIN GROUP (ORDER BY x DESC)", "20"),
            ("percentile_disc(0.2) WITHIN GROUP (ORDER BY x DESC)", "40"),
            ("mode() WITHIN GROUP (ORDER BY h)", "a"),
            ("mode() WITHIN GROUP (ORDER BY h DESC)", "b"),
        ];
        for (call, want) in cases {
            let out = one(&ctx, &format!("SELECT {call} AS v FROM m")).await;
            assert!(
                out.lines().nth(3).is_some_and(|l| l.split('|').nth(1).is_some_and(|v| v.trim() == want)),
                "{call}: {out}"
            );
        }
        let out = one(&ctx, "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY x) AS v FROM m WHERE x > 100").await;
        assert!(out.contains("|   |"), "{out}");
        let grouped = one(
            &ctx,
            "SELECT h, mode() WITHIN GROUP (ORDER BY x) AS v FROM m WHERE h IS NOT NULL GROUP BY h ORDER BY h",
        )
        .await;
        assert!(
            grouped.contains("| a | 20 |") && grouped.contains("| b | 10 |") && grouped.contains("| c | 20 |"),
            "{grouped}"
        );
        let e = ctx.sql("SELECT percentile_disc(1.5) WITHIN GROUP (ORDER BY x) FROM m").await;
        let e = match e {
            Ok(df) => df.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(e.is_err_and(|e| e.to_string().contains("not between 0 and 1")));
    }
}
