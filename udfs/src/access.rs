//! What running a logical plan may do: read, write data, or change the schema, the server's files or
//! its settings. The server decides a statement's required role from the plan it is about to run (not
//! from the statement's text, which a second parser could read differently), and the functions that
//! run a query given as text allow only plans that read.

use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{LogicalPlan, Statement, UserDefinedLogicalNode, WriteOp};

/// What a plan may do when it runs, least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Only reads.
    Read,
    /// Inserts, deletes or updates rows, or trains, deploys, rolls back or drops a model.
    Write,
    /// Changes the schema (DDL, `SELECT ... INTO`, `CREATE TABLE ... AS`), writes server files
    /// (`COPY ... TO 'file'`), or changes settings.
    Admin,
}

impl Access {
    pub fn describe(self) -> &'static str {
        match self {
            Access::Read => "reads",
            Access::Write => "writes data or changes a model",
            Access::Admin => "changes the schema, server files or settings",
        }
    }
}

/// What running `plan` may do, looking at every node, subqueries and the plans of views included.
/// `extension` classifies extension nodes it knows; an extension it does not know is `Admin`.
pub fn plan_access(plan: &LogicalPlan, extension: &dyn Fn(&dyn UserDefinedLogicalNode) -> Option<Access>) -> Access {
    let mut most = Access::Read;
    // The walk cannot fail: the closure never returns an error.
    let _ = plan.apply_with_subqueries(|node| {
        let here = node_access(node, extension);
        most = most.max(here);
        Ok(if most == Access::Admin {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        })
    });
    most
}

fn node_access(node: &LogicalPlan, extension: &dyn Fn(&dyn UserDefinedLogicalNode) -> Option<Access>) -> Access {
    match node {
        LogicalPlan::Dml(d) => match d.op {
            WriteOp::Ctas => Access::Admin,
            _ => Access::Write,
        },
        LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) => Access::Admin,
        LogicalPlan::Statement(s) => match s {
            Statement::SetVariable(_) | Statement::ResetVariable(_) => Access::Admin,
            // A prepared statement's plan is its input (walked); EXECUTE runs a plan checked when it
            // was prepared, on the same connection.
            Statement::Prepare(_)
            | Statement::Execute(_)
            | Statement::Deallocate(_)
            | Statement::TransactionStart(_)
            | Statement::TransactionEnd(_) => Access::Read,
        },
        LogicalPlan::Extension(e) => extension(e.node.as_ref()).unwrap_or(Access::Admin),
        LogicalPlan::TableScan(scan) => match source_as_provider(&scan.source) {
            Ok(provider) => {
                if crate::model::sql::writes_models(provider.as_ref()) {
                    Access::Write
                } else if let Some(view) = provider.get_logical_plan() {
                    plan_access(&view, extension)
                } else {
                    Access::Read
                }
            }
            Err(_) => Access::Read,
        },
        _ => Access::Read,
    }
}

/// Whether any node of `plan` (subqueries included) satisfies `found`.
pub fn any_node(plan: &LogicalPlan, found: impl Fn(&LogicalPlan) -> bool) -> bool {
    let mut hit = false;
    let _ = plan.apply_with_subqueries(|node| {
        hit = found(node);
        Ok(if hit {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        })
    });
    hit
}

/// The extensions of this crate's plans: none.
pub fn no_extensions(_: &dyn UserDefinedLogicalNode) -> Option<Access> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn access(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Access {
        let plan = ctx.state().create_logical_plan(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        plan_access(&plan, &no_extensions)
    }

    #[tokio::test]
    async fn plans_say_what_they_do() {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT)").await.expect("creates").collect().await.expect("runs");
        ctx.sql("CREATE VIEW v AS SELECT * FROM t").await.expect("creates").collect().await.expect("runs");
        for (sql, want) in [
            ("SELECT 1", Access::Read),
            ("SELECT * FROM v WHERE a IN (SELECT a FROM t)", Access::Read),
            ("EXPLAIN SELECT * FROM t", Access::Read),
            ("INSERT INTO t VALUES (1)", Access::Write),
            ("EXPLAIN INSERT INTO t VALUES (1)", Access::Write),
            ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", Access::Write),
            ("PREPARE p AS INSERT INTO t VALUES ($1)", Access::Write),
            ("SELECT * INTO u FROM t", Access::Admin),
            ("CREATE TABLE u AS SELECT * FROM t", Access::Admin),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", Access::Admin),
            ("EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x.csv'", Access::Admin),
            ("DROP TABLE t", Access::Admin),
            ("SET datafusion.execution.batch_size = 10", Access::Admin),
        ] {
            assert_eq!(access(&ctx, sql).await, want, "{sql}");
        }
    }
}
