//! Statements clients send that the engine would plan wrongly or not at all, answered by an
//! equivalent statement: syntax-tree substitutions after parsing ([`substitute`]; the text rewrites
//! before parsing are the engine's, `trafficdb::rewrite`): functions of PostgreSQL's catalog answered by a query, pg_type's regproc
//! columns compared with OIDs, `U&'...'` strings, PostgreSQL's `(composite).field`,
//! `INTERVAL '...'` literals in PostgreSQL's interval syntax.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, Expr, Statement, visit_expressions, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

/// A statement to run instead of `s`, when `s` is one the engine cannot plan but PostgreSQL answers
/// with something equivalent here, or one whose result PostgreSQL names otherwise
/// ([`crate::pgwire::names`]).
pub fn substitute(s: &Statement) -> Option<Statement> {
    // Named first: a replaced function keeps the name of the one the client called.
    let named = crate::pgwire::names::named(s);
    match replace(named.as_ref().unwrap_or(s)) {
        Some(replaced) => Some(replaced),
        None => named,
    }
}

fn replace(s: &Statement) -> Option<Statement> {
    // Most statements call none of the functions below and compare no regproc column: look before
    // copying the statement.
    let found = visit_expressions(s, |e: &Expr| match e {
        Expr::Function(f) if replaced(f) => ControlFlow::Break(()),
        e if regproc_comparison(e).is_some() => ControlFlow::Break(()),
        Expr::Value(v) if matches!(v.value, ast::Value::UnicodeStringLiteral(_)) => ControlFlow::Break(()),
        Expr::CompoundFieldAccess { root, access_chain } if is_composite_field(root, access_chain) => {
            ControlFlow::Break(())
        }
        Expr::Interval(iv) if interval_text(iv).is_some() => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    if found.is_continue() {
        return None;
    }
    let mut s = s.clone();
    let _ = visit_expressions_mut(&mut s, |e: &mut Expr| {
        match e {
            Expr::Function(f) => {
                if replaced(f)
                    && let Some(new) = replacement(f)
                {
                    *e = new;
                }
            }
            Expr::CompoundFieldAccess { root, access_chain } if matches!(**root, Expr::Nested(_)) => {
                for access in access_chain.iter_mut() {
                    if let ast::AccessExpr::Dot(Expr::Identifier(field)) = access {
                        *access =
                            ast::AccessExpr::Dot(Expr::Value(ast::Value::SingleQuotedString(field_name(field)).into()));
                    }
                }
            }
            _ => {}
        }
        // U&'...' (Power Query's folded SQL writes text literals so): the parser has decoded the escapes, and
        // the planner takes only plain string literals.
        if let Expr::Value(v) = e
            && let ast::Value::UnicodeStringLiteral(text) = &mut v.value
        {
            v.value = ast::Value::SingleQuotedString(std::mem::take(text));
        }
        if let Expr::Interval(iv) = e
            && let Some(text) = interval_text(iv)
        {
            *iv.value = Expr::Value(ast::Value::SingleQuotedString(text).into());
        }
        if let Some(left) = regproc_comparison(e)
            && let Expr::BinaryOp { left: l, right: r, .. } = e
        {
            let column = if left { l } else { r };
            if let Some(oid) = regproc_oid(column) {
                **column = oid;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Some(s)
}

/// An `INTERVAL '...'` literal (no unit after it) read by PostgreSQL's rules
/// ([`crate::pgwire::casts::parse_interval`]: `'1 day 02:00:00'`, `'-1 days +02:00:00'`), written
/// back in the `<number> <unit>` form the planner reads; `None` when it is one already or does not
/// read.
fn interval_text(iv: &ast::Interval) -> Option<String> {
    if iv.leading_field.is_some() || iv.last_field.is_some() || iv.fractional_seconds_precision.is_some() {
        return None;
    }
    let Expr::Value(v) = iv.value.as_ref() else { return None };
    let ast::Value::SingleQuotedString(text) = &v.value else { return None };
    let (months, days, micros) = crate::pgwire::casts::parse_interval(text)?;
    let canonical = format!("{months} mons {days} days {micros} microseconds");
    (canonical != *text).then_some(canonical)
}

/// pg_type's regproc columns: the functions that read, write and analyse a type's values.
///
/// PostgreSQL stores a function's OID there and shows the function's name; datafusion-pg-catalog
/// stores the name (so `SELECT typreceive` reads as in PostgreSQL). Comparing one with an OID, as
/// Npgsql's type loading does (`JOIN pg_proc ON pg_proc.oid = a.typreceive`), would cast the name
/// to an integer and fail; such a comparison goes through the named function's OID instead (see
/// `crate::pgwire::catalog::REGPROC_OID`). A comparison with a string compares names, as `'name'::regproc`
/// would.
const REGPROC_COLUMNS: [&str; 8] =
    ["typinput", "typoutput", "typreceive", "typsend", "typmodin", "typmodout", "typanalyze", "typsubscript"];

fn is_regproc_column(e: &Expr) -> bool {
    let name = match e {
        Expr::Identifier(i) => i,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(i) => i,
            None => return false,
        },
        _ => return false,
    };
    REGPROC_COLUMNS.iter().any(|c| name.value.eq_ignore_ascii_case(c))
}

fn is_string_literal(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => v.value.clone().into_string().is_some(),
        Expr::Nested(e) => is_string_literal(e),
        _ => false,
    }
}

/// For `e` an (in)equality between a regproc column and something other than a string: whether the
/// column is on the left (`Some(true)`) or the right (`Some(false)`).
fn regproc_comparison(e: &Expr) -> Option<bool> {
    let Expr::BinaryOp { left, op: ast::BinaryOperator::Eq | ast::BinaryOperator::NotEq, right } = e else {
        return None;
    };
    if is_regproc_column(left) && !is_regproc_column(right) && !is_string_literal(right) {
        Some(true)
    } else if is_regproc_column(right) && !is_regproc_column(left) && !is_string_literal(left) {
        Some(false)
    } else {
        None
    }
}

/// `column`, a regproc column, as the OID of the function it names.
fn regproc_oid(column: &Expr) -> Option<Expr> {
    let sql = format!("{}({column})", crate::pgwire::catalog::REGPROC_OID);
    datafusion::sql::sqlparser::parser::Parser::new(&PostgreSqlDialect {}).try_with_sql(&sql).ok()?.parse_expr().ok()
}

/// PostgreSQL's field of a composite value, `(expression).field`: DataFusion reads a struct's
/// field only when it is named by a string, `(expression).'field'`.
fn is_composite_field(root: &Expr, access_chain: &[ast::AccessExpr]) -> bool {
    matches!(root, Expr::Nested(_))
        && access_chain.iter().any(|a| matches!(a, ast::AccessExpr::Dot(Expr::Identifier(_))))
}

/// An identifier as PostgreSQL resolves it: folded to lower case unless quoted.
fn field_name(id: &ast::Ident) -> String {
    if id.quote_style.is_some() { id.value.clone() } else { id.value.to_lowercase() }
}

/// The unqualified, lower-case name of a called function.
fn function_name(f: &ast::Function) -> String {
    f.name.0.last().map(|p| p.to_string().to_ascii_lowercase()).unwrap_or_default()
}

fn replaced(f: &ast::Function) -> bool {
    matches!(
        function_name(f).as_str(),
        "pg_get_viewdef"
            | "pg_table_size"
            | "pg_relation_size"
            | "pg_total_relation_size"
            | "pg_indexes_size"
            | "_pg_expandarray"
    ) || is_psql_reloptions(f)
}

/// psql's `\d` asks for storage options, `array_to_string(reloptions || array(SELECT ... unnest(...)))`.
fn is_psql_reloptions(f: &ast::Function) -> bool {
    function_name(f) == "array_to_string" && f.args.to_string().contains("reloptions")
}

/// What a call to `f` is answered with, for the functions [`replaced`] names.
fn replacement(f: &ast::Function) -> Option<Expr> {
    if is_psql_reloptions(f) {
        // Tables here have no storage options (pg_class has no reloptions): NULL, as for a table
        // without any.
        return Some(Expr::Cast {
            kind: ast::CastKind::DoubleColon,
            expr: Box::new(Expr::Value(ast::Value::Null.into())),
            data_type: ast::DataType::Text,
            array: false,
            format: None,
        });
    }
    let ast::FunctionArguments::List(list) = &f.args else { return None };
    let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))) = list.args.first() else { return None };
    let sql = match function_name(f).as_str() {
        // pg_get_viewdef(oid [, pretty]): the view's query, from information_schema.views.
        "pg_get_viewdef" => format!(
            "SELECT (SELECT v.view_definition FROM information_schema.views v \
             JOIN pg_catalog.pg_class c ON c.relname = v.table_name WHERE c.oid = {arg})"
        ),
        // There are no indexes.
        "pg_indexes_size" => "SELECT CAST(0 AS BIGINT)".to_string(),
        // information_schema._pg_expandarray(array): one row (x, n) per element, n counting from 1;
        // a set-returning function in a select list, as unnest is here (several in one select list
        // advance together, as in PostgreSQL 10 and later).
        "_pg_expandarray" => format!("SELECT unnest(trafficdb_expandarray({arg}))"),
        // pg_table_size(oid) and its siblings: the table's bytes on disk.
        _ => format!(
            "SELECT trafficdb_table_size((SELECT max(trafficdb_c.relname) FROM pg_catalog.pg_class trafficdb_c \
             WHERE trafficdb_c.oid = {arg}))"
        ),
    };
    let Some(Statement::Query(q)) = ast_of(&sql) else { return None };
    let ast::SetExpr::Select(sel) = *q.body else { return None };
    match sel.projection.into_iter().next() {
        Some(ast::SelectItem::UnnamedExpr(e)) => Some(e),
        _ => None,
    }
}

fn ast_of(sql: &str) -> Option<Statement> {
    datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?.pop()
}

#[cfg(test)]
mod tests {
    #[test]
    fn regproc_columns_compared_with_oids_go_through_the_function_oid() {
        let rewritten = |sql: &str| super::ast_of(sql).and_then(|s| super::replace(&s)).map(|s| s.to_string());
        // Npgsql 4.0's type loading joins pg_proc on the receive function.
        let sql = "SELECT a.typname FROM pg_type AS a JOIN pg_proc ON pg_proc.oid = a.typreceive \
                   LEFT JOIN pg_proc AS e ON a.typsend = e.oid WHERE pg_proc.proname = 'array_recv'";
        assert_eq!(
            rewritten(sql).as_deref(),
            Some(
                "SELECT a.typname FROM pg_type AS a JOIN pg_proc ON pg_proc.oid = trafficdb_regproc_oid(a.typreceive) \
                 LEFT JOIN pg_proc AS e ON trafficdb_regproc_oid(a.typsend) = e.oid WHERE pg_proc.proname = 'array_recv'"
            )
        );
        // Names compare with names; other columns and statements are left alone.
        assert_eq!(rewritten("SELECT 1 FROM pg_type WHERE typreceive = 'array_recv'"), None);
        assert_eq!(rewritten("SELECT 1 FROM pg_type WHERE typreceive <> typsend"), None);
        assert_eq!(rewritten("SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"), None);
    }

    #[test]
    fn only_the_named_functions_are_replaced() {
        let s = super::ast_of("SELECT lower(relname), pg_table_size(oid) FROM pg_class").expect("parses");
        let out = super::replace(&s).map(|s| s.to_string()).unwrap_or_default();
        assert!(out.starts_with("SELECT lower(relname), trafficdb_table_size("), "{out}");
    }

    #[test]
    fn unicode_escaped_strings_are_plain_strings() {
        let s = super::ast_of(r"SELECT 1 WHERE lower(x) = U&'caf\00e9' AND y = 'b'").expect("parses");
        assert_eq!(
            super::replace(&s).map(|s| s.to_string()).as_deref(),
            Some("SELECT 1 WHERE lower(x) = 'café' AND y = 'b'")
        );
    }

    #[test]
    fn scalar_subqueries_kept_survive_the_compatibility_parser() {
        let parser = datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser::new();
        let sql =
            trafficdb::rewrite::keep_scalar_subqueries("SELECT (SELECT dc FROM dim WHERE dim.host = m.host) FROM m")
                .expect("rewritten");
        let parsed = parser.parse(&sql).expect("parses");
        assert!(parsed[0].to_string().contains("dim.host = m.host"), "{}", parsed[0]);
    }

    fn rewritten(sql: &str) -> Option<String> {
        super::replace(&super::ast_of(sql).expect("parses")).map(|s| s.to_string())
    }

    #[test]
    fn composite_fields_named_by_string() {
        assert_eq!(
            rewritten("SELECT (r.keys).x, (r.keys).\"N\" FROM r WHERE (r.keys).X = 1").as_deref(),
            Some("SELECT (r.keys).'x', (r.keys).'N' FROM r WHERE (r.keys).'x' = 1")
        );
        // Qualified names and subscripts are not composite field accesses.
        assert_eq!(rewritten("SELECT r.keys, a[1] FROM r"), None);
    }

    #[test]
    fn pg_expandarray_as_unnest() {
        assert_eq!(
            rewritten("SELECT (information_schema._pg_expandarray(i.indkey)).n FROM pg_index i").as_deref(),
            Some("SELECT (unnest(trafficdb_expandarray(i.indkey))).'n' FROM pg_index i")
        );
    }
}
