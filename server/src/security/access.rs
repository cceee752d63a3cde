//! The least role each statement or plan needs.
//!
//! `reader` runs queries, `writer` also inserts, deletes and copies in, `admin` also changes the
//! schema and the server-side settings. A statement the server runs without a DataFusion plan is
//! decided on the statement ([`statement_role`]); every other one on the plan that will run
//! ([`plan_role`]), so what is checked is what runs, however the text is written.

use datafusion::sql::sqlparser::ast::{CopySource, CopyTarget, Statement};

use crate::security::roles::Role;

/// The least role that may run `s` when the statement itself decides it: statements the server runs
/// without a DataFusion plan (the engine's DDL, `COPY`, `TRUNCATE`, settings, transactions, cursor
/// moves). `None` for every other statement: its plan decides ([`plan_role`]), so what is checked is
/// what will run, however the text is written.
pub fn statement_role(s: &Statement) -> Option<Role> {
    Some(match s {
        // What EXPLAIN or PREPARE would run decides, when that is decided on the statement.
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
            return statement_role(statement);
        }
        Statement::Copy { to, target, source, .. } => match (to, target) {
            // The query of `COPY (query) TO STDOUT` is checked on its plan when it runs.
            (true, CopyTarget::Stdout) => Role::Reader,
            (false, CopyTarget::Stdin) if matches!(source, CopySource::Table { .. }) => Role::Writer,
            _ => Role::Admin,
        },
        Statement::Set(_) | Statement::Reset(_) => crate::security::settings::statement_role(s),
        Statement::Truncate(_) => Role::Writer,
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::AlterTable(_)
        | Statement::Drop { .. }
        | Statement::Call(_) => Role::Admin,
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowCreate { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Discard { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Role::Reader,
        _ => return None,
    })
}

/// The least role that may run `plan`: what it does, wherever in it (subqueries, EXPLAIN ANALYZE,
/// PREPARE, a table function that trains a model, `SELECT ... INTO`).
pub fn plan_role(plan: &datafusion::logical_expr::LogicalPlan) -> Role {
    use trafficdb_udfs::access::Access;
    match trafficdb::query::dml::plan_access(plan) {
        Access::Read => Role::Reader,
        Access::Write => Role::Writer,
        Access::Admin => Role::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_per_statement() {
        let role = |sql: &str| {
            let stmts = datafusion::sql::sqlparser::parser::Parser::parse_sql(
                &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                sql,
            )
            .unwrap();
            statement_role(&stmts[0])
        };
        assert_eq!(role("COPY t TO STDOUT"), Some(Role::Reader));
        assert_eq!(role("COPY (SELECT 1) TO STDOUT"), Some(Role::Reader));
        assert_eq!(role("COPY t FROM STDIN"), Some(Role::Writer));
        assert_eq!(role("COPY t TO '/tmp/x.csv'"), Some(Role::Admin));
        assert_eq!(role("COPY t FROM '/etc/passwd'"), Some(Role::Admin));
        assert_eq!(role("TRUNCATE t"), Some(Role::Writer));
        assert_eq!(role("CREATE TABLE t (a INT)"), Some(Role::Admin));
        assert_eq!(role("DROP VIEW v"), Some(Role::Admin));
        assert_eq!(role("SET statement_timeout = 10"), Some(Role::Reader));
        assert_eq!(role("SET datafusion.runtime.memory_limit = '100G'"), Some(Role::Admin));
        assert_eq!(role("BEGIN"), Some(Role::Reader));
        assert_eq!(role("FETCH 10 FROM c"), Some(Role::Reader));
        // Decided on the plan: what runs, wherever it is in the statement.
        for sql in [
            "SELECT 1",
            "EXPLAIN (ANALYZE) INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM t",
            "DECLARE c CURSOR FOR SELECT 1",
            "PREPARE p AS SELECT 1",
            "GRANT SELECT ON t TO bob",
            "SELECT * FROM train_retry_model('retry', 'SELECT 1')",
        ] {
            assert_eq!(role(sql), None, "{sql}");
        }
    }
}
