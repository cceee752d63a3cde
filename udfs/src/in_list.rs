//! Two IN lists on one expression, combined so that no value can pass: `x IN (1) AND x IN (19)`,
//! `x IN (1, 2) AND x NOT IN (1, 2)`, `x NOT IN (1) OR x NOT IN (2)`.
//!
//! DataFusion's expression simplifier folds them to `false` (or `true`), which is wrong when `x` is
//! NULL: PostgreSQL's answer is then NULL, and `NOT (x IN (1) AND x IN (19))` selects the rows where
//! `x` is NULL with `false` but not with NULL. The optimizer rule [`NullSafeInLists`] runs before each
//! simplification pass and writes such a pair as `CASE WHEN x IS NULL THEN NULL ELSE false END` (or
//! `true`), which the simplifier keeps right. (Upstream, `inlist_intersection` / `inlist_except` in
//! DataFusion's `expr_simplifier.rs` should do this; see docs/server.md.)

use std::collections::HashSet;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator, lit, when};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

#[derive(Debug, Default)]
pub struct NullSafeInLists;

fn has_null(list: &InList) -> bool {
    list.list.iter().any(|e| matches!(e, Expr::Literal(v, _) if v.is_null()))
}

/// What the pair always is for a non-NULL `x`, when that is a constant.
fn constant(op: Operator, l1: &InList, l2: &InList) -> Option<bool> {
    if l1.expr != l2.expr || has_null(l1) || has_null(l2) {
        return None;
    }
    let set1: HashSet<&Expr> = l1.list.iter().collect();
    let set2: HashSet<&Expr> = l2.list.iter().collect();
    let disjoint = set1.is_disjoint(&set2);
    match (op, l1.negated, l2.negated) {
        // x IN a AND x IN b: nothing passes when a and b share no value.
        (Operator::And, false, false) if disjoint => Some(false),
        // x IN a AND x NOT IN b: nothing passes when a lies within b.
        (Operator::And, false, true) if set1.is_subset(&set2) => Some(false),
        (Operator::And, true, false) if set2.is_subset(&set1) => Some(false),
        // x NOT IN a OR x NOT IN b: everything passes when a and b share no value.
        (Operator::Or, true, true) if disjoint => Some(true),
        _ => None,
    }
}

fn guard(e: Expr) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else { return Ok(Transformed::no(e)) };
    let (Expr::InList(l1), Expr::InList(l2)) = (left.as_ref(), right.as_ref()) else {
        return Ok(Transformed::no(e));
    };
    match constant(*op, l1, l2) {
        Some(value) => {
            let x = l1.expr.as_ref().clone();
            Ok(Transformed::yes(when(x.is_null(), lit(ScalarValue::Boolean(None))).otherwise(lit(value))?))
        }
        None => Ok(Transformed::no(e)),
    }
}

impl OptimizerRule for NullSafeInLists {
    fn name(&self) -> &str {
        "null_safe_in_lists"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        plan.map_expressions(|e| e.transform_up(guard))
    }

    fn apply_order(&self) -> Option<datafusion::optimizer::ApplyOrder> {
        Some(datafusion::optimizer::ApplyOrder::TopDown)
    }
}

/// DataFusion's optimizer rules with [`NullSafeInLists`] before each expression simplification.
pub fn optimizer_rules() -> Vec<std::sync::Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Vec::new();
    for r in datafusion::optimizer::Optimizer::new().rules {
        if r.name() == "simplify_expressions" {
            rules.push(std::sync::Arc::new(NullSafeInLists) as std::sync::Arc<dyn OptimizerRule + Send + Sync>);
        }
        rules.push(r);
    }
    rules
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    /// `id` is 1, NULL and 19: the pair is NULL for the NULL row, so NOT of it selects two rows.
    #[tokio::test]
    async fn a_pair_that_cannot_pass_stays_null_for_null() {
        let state = datafusion::execution::session_state::SessionStateBuilder::new()
            .with_default_features()
            .with_optimizer_rules(super::optimizer_rules())
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.sql("CREATE TABLE z AS VALUES (1), (NULL), (19)").await.expect("table").collect().await.expect("runs");
        for (sql, want) in [
            ("SELECT count(*) FROM z WHERE NOT (column1 IN (1) AND column1 IN (19))", 2),
            ("SELECT count(*) FROM z WHERE NOT (column1 IN (1, 2) AND column1 NOT IN (1, 2, 3))", 2),
            ("SELECT count(*) FROM z WHERE column1 NOT IN (1) OR column1 NOT IN (19)", 2),
            ("SELECT count(*) FROM z WHERE column1 IN (1, 19) AND column1 IN (19, 20)", 1),
        ] {
            let batches = ctx.sql(sql).await.expect("plans").collect().await.expect("runs");
            let n = datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::Int64Type>(
                batches[0].column(0).as_ref(),
            )
            .value(0);
            assert_eq!(n, want, "{sql}");
        }
    }
}
