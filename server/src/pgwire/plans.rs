//! Plans a connection keeps: the statements that read no table are planned once and run again from
//! their plan.
//!
//! Health checks (`SELECT 1`), `SELECT version()`, settings and constant expressions are what pools
//! and drivers send most, and planning them (parse, logical optimization, physical planning) cost
//! several times their execution. A statement is kept when its plan can give no other answer on the
//! next run: it reads no table (a plan holds the table snapshot it was planned on, so every statement
//! that reads one is planned each time it runs), calls only immutable functions (`now()` is folded
//! into the plan, `random()` and `current_setting` are not immutable), and runs nothing but query
//! operators (no EXPLAIN, whose ANALYZE keeps metrics in the plan; no DDL, DML or settings).
//!
//! Each connection has its own cache, keyed by the statement's text and the connection's settings
//! (its metadata: user, time zone, date style, ...); any statement that is not a query (a `SET`, a
//! `DEFINE`, DDL) empties it. Two kinds of plan are kept:
//!
//! - in the extended protocol, the parse (statement and logical plan) of a query's text, so an
//!   unnamed statement parsed again and again is parsed once;
//! - in both protocols, the physical plan with the task context it runs in, reset before each run
//!   (DataFusion's [`reset_plan_states`], as its recursive queries re-run a plan).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::sql::sqlparser::ast::Statement;
use parking_lot::Mutex;
use pgwire::api::ClientInfo;

/// Entries a connection keeps of each kind; past it the cache starts again empty (the statements a
/// connection repeats come back at once).
const CAPACITY: usize = 64;

/// One connection's kept plans (in its session extensions).
#[derive(Default)]
pub struct Plans {
    physical: Mutex<HashMap<String, Physical>>,
    parsed: Mutex<HashMap<String, Parsed>>,
}

/// A parse: the statement's text (as datafusion-postgres keeps it), the statement, its plan.
pub type Parsed = (String, Statement, LogicalPlan);

/// A physical plan and the task context it was planned for.
#[derive(Clone)]
pub struct Physical {
    /// The result columns (the logical plan's, named as the client sees them).
    schema: SchemaRef,
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
}

impl Physical {
    pub fn new(schema: SchemaRef, plan: Arc<dyn ExecutionPlan>, task: Arc<TaskContext>) -> Physical {
        Physical { schema, plan, task }
    }

    /// The result columns, the plan ready to run again, and its task context.
    pub fn take(&self) -> datafusion::common::Result<(SchemaRef, Arc<dyn ExecutionPlan>, Arc<TaskContext>)> {
        Ok((self.schema.clone(), reset_plan_states(self.plan.clone())?, self.task.clone()))
    }
}

fn plans(client: &(impl ClientInfo + ?Sized)) -> Arc<Plans> {
    client.session_extensions().get_or_insert_with(Plans::default)
}

/// The cache key of `text` on this connection: the text and the connection's settings.
pub fn key(client: &(impl ClientInfo + ?Sized), text: &str) -> String {
    use std::collections::hash_map::DefaultHasher;
    // Order-independent, as the metadata is a hash map; DefaultHasher::new() has fixed keys.
    let settings = client.metadata().iter().fold(0u64, |acc, entry| {
        let mut h = DefaultHasher::new();
        entry.hash(&mut h);
        acc ^ h.finish()
    });
    format!("{settings:016x}\u{0}{text}")
}

/// The kept physical plan of `key`.
pub fn physical(client: &(impl ClientInfo + ?Sized), key: &str) -> Option<Physical> {
    plans(client).physical.lock().get(key).cloned()
}

/// Keeps `plan` under `key` (its logical plan [`repeatable`]).
pub fn keep_physical(client: &(impl ClientInfo + ?Sized), key: String, plan: Physical) {
    insert(&plans(client).physical, key, plan);
}

/// The kept parse of `key`.
pub fn parsed(client: &(impl ClientInfo + ?Sized), key: &str) -> Option<Parsed> {
    plans(client).parsed.lock().get(key).cloned()
}

/// Keeps a parse under `key` (its plan [`repeatable`]).
pub fn keep_parsed(client: &(impl ClientInfo + ?Sized), key: String, parsed: Parsed) {
    insert(&plans(client).parsed, key, parsed);
}

/// Forgets every kept plan of the connection (a statement that is not a query ran).
pub fn forget(client: &(impl ClientInfo + ?Sized)) {
    if let Some(p) = client.session_extensions().get::<Plans>() {
        p.physical.lock().clear();
        p.parsed.lock().clear();
    }
}

fn insert<V>(map: &Mutex<HashMap<String, V>>, key: String, value: V) {
    let mut map = map.lock();
    if map.len() >= CAPACITY {
        map.clear();
    }
    map.insert(key, value);
}

/// Whether `plan` gives the same answer every time it runs on this connection: query operators
/// over no table, with immutable functions only (see the module's documentation).
pub fn repeatable(plan: &LogicalPlan) -> bool {
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|p| {
        if !query_operator(p) {
            ok = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        p.apply_expressions(|e| e.apply(|e| Ok(immutable(e, &mut ok))))?;
        Ok(if ok { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    ok
}

fn query_operator(p: &LogicalPlan) -> bool {
    matches!(
        p,
        LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Window(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Join(_)
            | LogicalPlan::Union(_)
            | LogicalPlan::Subquery(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Values(_)
            | LogicalPlan::EmptyRelation(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Unnest(_)
    )
}

/// Clears `ok` and stops at an expression whose value may change from run to run.
fn immutable(e: &Expr, ok: &mut bool) -> TreeNodeRecursion {
    let immutable = match e {
        Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Immutable,
        Expr::AggregateFunction(f) => f.func.signature().volatility == Volatility::Immutable,
        Expr::Placeholder(_) | Expr::ScalarVariable(..) => false,
        _ => true,
    };
    *ok &= immutable;
    if immutable { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn plan(sql: &str) -> LogicalPlan {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (x INT) AS VALUES (1)").await.unwrap();
        ctx.state().create_logical_plan(sql).await.unwrap()
    }

    #[tokio::test]
    async fn only_plans_over_no_table_with_immutable_functions_are_repeatable() {
        for sql in ["SELECT 1", "SELECT 1 + 2 AS x, 'a' || 'b'", "SELECT * FROM (VALUES (1), (2)) v(x) WHERE x > 1"] {
            assert!(repeatable(&plan(sql).await), "{sql}");
        }
        for sql in [
            "SELECT * FROM t",
            "SELECT (SELECT max(x) FROM t)",
            "SELECT now()",
            "SELECT random()",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM t)",
            "EXPLAIN ANALYZE SELECT 1",
            "SELECT * FROM generate_series(1, 3)",
        ] {
            assert!(!repeatable(&plan(sql).await), "{sql}");
        }
    }
}
