//! The text rewrites every statement goes through before it is parsed, in one ordered list
//! ([`TEXT_RULES`]), applied once by [`prepare`]: the engine's own parser ([`crate::database::parse`])
//! and the PostgreSQL server's parsers call it and nothing else rewrites text. Rewrites of the parsed
//! statement that answer PostgreSQL's catalog belong to the server (`server/src/pgwire/rewrite.rs`).
//!
//! A new rule goes into [`TEXT_RULES`] with its reason; the rules see each other's output in order.

use std::borrow::Cow;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, Expr};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use crate::error::{Error, Result};

/// A named rewrite of statement text: `None` when it leaves the text as it is.
pub struct TextRule {
    pub name: &'static str,
    pub apply: fn(&str) -> Result<Option<String>>,
}

/// The text rules, in the order they run.
pub const TEXT_RULES: [TextRule; 4] = [
    // `TABLE t` as a statement (the parser reads it only inside a query); first, so the others see
    // a SELECT.
    TextRule { name: "table_statement", apply: |sql| Ok(table_statement(sql)) },
    // Gap-filling queries become plain SQL (see trafficdb_udfs::gapfill); first, as the others may
    // look inside what it writes.
    TextRule { name: "time_bucket_gapfill", apply: gapfill },
    TextRule { name: "grafana_search_path", apply: |sql| Ok(rewrite_search_path(sql)) },
    TextRule { name: "keep_scalar_subqueries", apply: |sql| Ok(keep_scalar_subqueries(sql)) },
];

/// The front door of every statement text: refuses one nested too deeply to parse safely (54001,
/// before anything recurses over it; see `trafficdb_udfs::nesting`), then applies [`TEXT_RULES`] in
/// order. Borrowed when no rule changes the text.
pub fn prepare(sql: &str) -> Result<Cow<'_, str>> {
    trafficdb_udfs::nesting::check(sql).map_err(|e| Error::invalid(e.code, e.message))?;
    let mut text = Cow::Borrowed(sql);
    for rule in &TEXT_RULES {
        if let Some(new) = (rule.apply)(&text)? {
            text = Cow::Owned(new);
        }
    }
    Ok(text)
}

/// A statement `TABLE t [ORDER BY ...]`, the SQL standard's `SELECT * FROM t`, written so.
fn table_statement(sql: &str) -> Option<String> {
    let body = sql.trim_start();
    let keyword = body.get(..5)?;
    let rest = &body[5..];
    (keyword.eq_ignore_ascii_case("table") && rest.starts_with(|c: char| c.is_whitespace()))
        .then(|| format!("SELECT * FROM{rest}"))
}

fn gapfill(sql: &str) -> Result<Option<String>> {
    trafficdb_udfs::gapfill::rewrite_sql(sql).map_err(|e| Error::invalid(e.code, e.message))
}

/// Grafana's "schemas on the search path" subquery (its query builder's table and column lists,
/// `postgresMetaQuery.ts`). It reads `current_setting('search_path')` through array subscripts of
/// functions in FROM, which the engine does not plan, and datafusion-postgres's parser replaces it
/// with `''` (so no schema is on the path: every table comes back schema-qualified and an
/// unqualified table has no columns). The membership test is answered with the schemas on the path
/// instead, as an array comparison (the query also sorts by it, where the engine takes no subquery).
const GRAFANA_SEARCH_PATH: &str = r#"IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"#;
const SEARCH_PATH_SCHEMAS: &str = "= ANY(current_schemas(false))";

/// Scalar subqueries in the select lists of statements that read no catalog table, parenthesised
/// once more; `None` when there are none.
///
/// The PostgreSQL compatibility parser (datafusion-pg-catalog's `RemoveSubqueryFromProjection`, which
/// cannot be turned off) answers a correlated subquery in a select list with NULL and cuts an
/// uncorrelated one to its first row. That serves catalog queries of clients (psql's `\d`) whose
/// subqueries the planner could not run; on users' own tables it gives wrong answers where DataFusion
/// gives the right ones (it decorrelates them). The rule looks only at subqueries that are a whole
/// select item, so `((SELECT ...))` keeps its meaning and escapes it. Upstream, the rule belongs to
/// the catalog queries alone (docs/server.md).
pub fn keep_scalar_subqueries(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{SelectItem, SetExpr, VisitorMut, visit_relations};
    // Most statements hold one SELECT at most.
    let lower = sql.to_ascii_lowercase();
    lower.matches("select").nth(1)?;
    let mut stmts = datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    struct Wrap(bool);
    impl VisitorMut for Wrap {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut ast::Query) -> ControlFlow<()> {
            if let SetExpr::Select(s) = q.body.as_mut() {
                for item in &mut s.projection {
                    if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                        && matches!(e, Expr::Subquery(_))
                    {
                        *e = Expr::Nested(Box::new(e.clone()));
                        self.0 = true;
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut wrap = Wrap(false);
    for s in &mut stmts {
        let catalog = visit_relations(&*s, |name: &ast::ObjectName| {
            let parts: Vec<String> =
                name.0.iter().map(|p| p.to_string().trim_matches('"').to_ascii_lowercase()).collect();
            let first = parts.first().map(String::as_str).unwrap_or("");
            let last = parts.last().map(String::as_str).unwrap_or("");
            if first == "pg_catalog" || first == "information_schema" || last.starts_with("pg_") {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if catalog.is_continue() {
            let _ = ast::VisitMut::visit(s, &mut wrap);
        }
    }
    wrap.0.then(|| stmts.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; "))
}

/// The text of `sql` with the statement parts the SQL parser would otherwise mistranslate (see
/// [`GRAFANA_SEARCH_PATH`]) replaced; `None` when there are none. Runs before parsing, on text.
pub fn rewrite_search_path(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    // Most statements: one substring search.
    if !sql.contains("current_setting('search_path')") {
        return None;
    }
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    let pattern: Vec<String> = Tokenizer::new(&dialect, GRAFANA_SEARCH_PATH)
        .tokenize()
        .ok()?
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|t| t.to_string().to_ascii_lowercase())
        .collect();
    // Indexes of the significant tokens, to match the pattern whatever the spacing.
    let significant: Vec<usize> =
        tokens.iter().enumerate().filter(|(_, t)| !matches!(t, Token::Whitespace(_))).map(|(i, _)| i).collect();
    let mut out = String::with_capacity(sql.len());
    let (mut next, mut k, mut found) = (0, 0, false);
    while k < significant.len() {
        let matches = significant.len() - k >= pattern.len()
            && pattern.iter().zip(&significant[k..]).all(|(p, &i)| tokens[i].to_string().to_ascii_lowercase() == *p);
        if matches {
            let (start, end) = (significant[k], significant[k + pattern.len() - 1]);
            tokens[next..start].iter().for_each(|t| out.push_str(&t.to_string()));
            out.push_str(SEARCH_PATH_SCHEMAS);
            next = end + 1;
            k += pattern.len();
            found = true;
        } else {
            k += 1;
        }
    }
    if !found {
        return None;
    }
    tokens[next..].iter().for_each(|t| out.push_str(&t.to_string()));
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn scalar_subqueries_of_user_queries_escape_the_compatibility_rule() {
        use super::keep_scalar_subqueries as keep;
        assert_eq!(
            keep("SELECT host, (SELECT dc FROM dim WHERE dim.host = m.host) AS dc FROM m").as_deref(),
            Some("SELECT host, ((SELECT dc FROM dim WHERE dim.host = m.host)) AS dc FROM m")
        );
        // Catalog queries keep the rule; statements without a scalar subquery are left alone.
        assert_eq!(keep("SELECT (SELECT 1 FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) FROM a"), None);
        assert_eq!(keep("SELECT x FROM m WHERE x IN (SELECT y FROM n)"), None);
        assert_eq!(keep("SELECT 1"), None);
    }

    #[test]
    fn grafana_search_path_subquery_is_answered_with_the_schemas_on_the_path() {
        let sql = "SELECT quote_ident(table_name) FROM information_schema.tables WHERE quote_ident(table_schema) IN (
              SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END
              FROM generate_series(
                  array_lower(string_to_array(current_setting('search_path'),','),1),
                  array_upper(string_to_array(current_setting('search_path'),','),1)) as i,
                string_to_array(current_setting('search_path'),',') s
              ) ORDER BY 1";
        assert_eq!(
            super::rewrite_search_path(sql).as_deref(),
            Some(
                "SELECT quote_ident(table_name) FROM information_schema.tables WHERE quote_ident(table_schema) = ANY(current_schemas(false)) ORDER BY 1"
            )
        );
        assert_eq!(super::rewrite_search_path("SELECT current_setting('search_path')"), None);
        assert_eq!(super::rewrite_search_path("SELECT 1"), None);
    }

    #[test]
    fn a_table_statement_is_a_select() {
        assert_eq!(super::table_statement("  TABLE q ORDER BY name").as_deref(), Some("SELECT * FROM q ORDER BY name"));
        assert_eq!(super::table_statement("table\n\tq").as_deref(), Some("SELECT * FROM\n\tq"));
        assert_eq!(super::table_statement("tables"), None);
        assert_eq!(super::table_statement("CREATE TABLE t (x int)"), None);
        assert_eq!(super::table_statement("tab"), None);
    }

    #[test]
    fn rules_run_in_order_on_each_others_output() {
        use std::borrow::Cow;
        assert!(matches!(super::prepare("SELECT 1").unwrap(), Cow::Borrowed(_)));
        // The gap-filling rewrite writes subqueries; the last rule sees them.
        let sql = "SELECT time_bucket_gapfill(INTERVAL '1 minute', ts) AS b, count(*) AS n, \
                   (SELECT 1) AS one FROM t WHERE ts >= '2024-01-01' AND ts < '2024-01-01 00:05' GROUP BY 1";
        let out = super::prepare(sql).unwrap();
        assert!(!out.contains("time_bucket_gapfill"), "{out}");
        let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(super::prepare(&deep).unwrap_err().sqlstate(), "54001");
    }
}
