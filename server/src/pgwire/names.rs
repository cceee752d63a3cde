//! PostgreSQL's names for the columns of a result, given to a query's unnamed expressions as aliases:
//! `count(*)` is `count`, `SELECT 1` is `?column?`, `TIMESTAMP '...'` is `timestamp`, `x::text` is `x`
//! (DataFusion would say `count(*)`, `Int64(1)`, `Utf8("...")`, `CAST(x AS Utf8)`). Clients show these
//! names as headers and look columns up by them (`row["count"]`).
//!
//! The rule is PostgreSQL's `FigureColname` (src/backend/parser/parse_target.c), on the syntax tree: a
//! column reference is named by its column; a function call by the function; a cast by the column or
//! function it casts, else by the type; `CASE` is `case`, `EXISTS (...)` `exists`, a scalar subquery the name of its
//! column; anything else (operators, literals) `?column?`. Only the query's own result is named (the
//! left-most `SELECT` of a set operation). DataFusion refuses a result with two columns of one name,
//! which PostgreSQL allows (`SELECT 1, 1`): a name an earlier column has is given to the planner with
//! a mark and the column's position, which the server takes off before the client sees it
//! ([`client_name`]). The names of a `SELECT *` list are left as DataFusion writes them.

use std::collections::HashSet;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, DataType, Expr, Ident, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Statement, Value,
};

/// The name PostgreSQL gives an unnamed column.
const UNNAMED: &str = "?column?";

/// `s` with its result's unnamed expressions aliased as PostgreSQL names them; `None` when none is.
pub fn named(s: &Statement) -> Option<Statement> {
    let Statement::Query(query) = s else { return None };
    let mut query = query.clone();
    name_result(&mut query).then_some(Statement::Query(query))
}

/// Aliases the unnamed expressions of the select list that makes `query`'s result; whether any was.
fn name_result(query: &mut Query) -> bool {
    let mut body = query.body.as_mut();
    let select = loop {
        match body {
            SetExpr::Select(select) => break select,
            SetExpr::SetOperation { left, .. } => body = left.as_mut(),
            SetExpr::Query(inner) => body = inner.body.as_mut(),
            _ => return false,
        }
    };
    let items = &mut select.projection;
    if items.iter().any(|i| matches!(i, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..))) {
        return false;
    }
    // Each item's name, in order: its alias, its column, or what its expression figures.
    let names: Vec<String> = items
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => ident_name(alias),
            SelectItem::UnnamedExpr(e) => column_name(e).or_else(|| figure(e)).unwrap_or_else(|| UNNAMED.to_string()),
            _ => UNNAMED.to_string(),
        })
        .collect();
    let mut given: HashSet<String> = HashSet::new();
    let mut changed = false;
    for (i, (item, name)) in items.iter_mut().zip(names).enumerate() {
        // A name given already: unique to the planner, the same to the client (see `client_name`).
        let (name, again) =
            if given.insert(name.clone()) { (name, false) } else { (format!("{name}{SAME_NAME}{i}"), true) };
        match item {
            SelectItem::ExprWithAlias { alias, .. } if again => *alias = Ident::with_quote('"', name),
            SelectItem::UnnamedExpr(expr) if again || column_name(expr).is_none() => {
                *item = SelectItem::ExprWithAlias { expr: expr.clone(), alias: Ident::with_quote('"', name) };
            }
            _ => continue,
        }
        changed = true;
    }
    changed
}

/// Marks the name of a result column that an earlier column has too (PostgreSQL allows it, the
/// planner does not): the planner sees `name` + this + the column's position, the client `name`.
const SAME_NAME: char = '\u{1}';

/// A result column's name as the client is told it: without the mark [`name_result`] gives a name
/// an earlier column has too.
pub fn client_name(name: &str) -> &str {
    name.split_once(SAME_NAME).map_or(name, |(name, _)| name)
}

/// The name of a column reference (which DataFusion already names so).
fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(ident_name(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(ident_name),
        _ => None,
    }
}

/// An identifier as the planner resolves it: folded to lower case unless quoted.
fn ident_name(id: &Ident) -> String {
    if id.quote_style.is_some() { id.value.clone() } else { id.value.to_lowercase() }
}

/// The name of an expression, or `None` where PostgreSQL writes `?column?`.
fn figure(e: &Expr) -> Option<String> {
    figure_with_strength(e).map(|(name, _)| name)
}

/// `FigureColnameInternal`: a name, and how strongly it holds: 2 for a column, a function and most
/// constructs, 1 for a type's or `case` (a cast of a cast is named by the outer type, a cast of a
/// column by the column; `CASE ... ELSE x END` is named by `x` when that holds strongly).
fn figure_with_strength(e: &Expr) -> Option<(String, u8)> {
    let strong = |name: &str| Some((name.to_string(), 2));
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => column_name(e).map(|n| (n, 2)),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => figure_with_strength(inner),
        // `current_user`, `current_date` and the like, written without parentheses, are functions too.
        // datafusion-pg-catalog's parser writes `x = ANY (array)` as `array_contains(array, x)` before
        // the server sees the statement; PostgreSQL has no such function, so the call is the operator.
        Expr::Function(f) if last_name(&f.name).is_some_and(|n| n == "array_contains") => None,
        Expr::Function(f) => last_name(&f.name).map(|n| (n, 2)),
        Expr::Cast { expr, data_type, .. } => match figure_with_strength(expr) {
            Some((name, 2)) => Some((name, 2)),
            weaker => type_name(data_type).map(|n| (n, 1)).or(weaker),
        },
        Expr::TypedString(t) => type_name(&t.data_type).map(|n| (n, 1)),
        Expr::Interval(_) => Some(("interval".into(), 1)),
        Expr::Case { else_result, .. } => match else_result.as_deref().and_then(figure_with_strength) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some(("case".into(), 1)),
        },
        Expr::Exists { .. } => strong("exists"),
        Expr::Array(_) => strong("array"),
        Expr::Tuple(_) => strong("row"),
        Expr::Subquery(q) => Some((first_column_name(q).unwrap_or_else(|| UNNAMED.to_string()), 2)),
        Expr::Extract { .. } => strong("extract"),
        Expr::Ceil { .. } => strong("ceil"),
        Expr::Floor { .. } => strong("floor"),
        Expr::Position { .. } => strong("position"),
        Expr::Substring { .. } => strong("substring"),
        Expr::Overlay { .. } => strong("overlay"),
        Expr::Trim { .. } => strong("btrim"),
        Expr::AtTimeZone { .. } => strong("timezone"),
        // `(composite).field` is named by the field.
        Expr::CompoundFieldAccess { access_chain, .. } => match access_chain.last()? {
            AccessExpr::Dot(Expr::Identifier(field)) => Some((ident_name(field), 2)),
            AccessExpr::Dot(Expr::Value(v)) => match &v.value {
                Value::SingleQuotedString(field) => Some((field.clone(), 2)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// The name of a scalar subquery's column: its alias, its column, or what its expression figures.
fn first_column_name(q: &Query) -> Option<String> {
    let mut body = q.body.as_ref();
    let select = loop {
        match body {
            SetExpr::Select(select) => break select,
            SetExpr::SetOperation { left, .. } => body = left.as_ref(),
            SetExpr::Query(inner) => body = inner.body.as_ref(),
            _ => return None,
        }
    };
    match select.projection.first()? {
        SelectItem::ExprWithAlias { alias, .. } => Some(ident_name(alias)),
        SelectItem::UnnamedExpr(e) => figure(e),
        _ => None,
    }
}

fn last_name(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(id) => Some(ident_name(id)),
        ObjectNamePart::Function(f) => Some(ident_name(&f.name)),
    }
}

/// PostgreSQL's name (`pg_type.typname`) of a type as written in SQL.
fn type_name(t: &DataType) -> Option<String> {
    let written = t.to_string().to_lowercase();
    let base = written.split('(').next().unwrap_or("").trim();
    let name = match base {
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double precision" | "double" | "float8" | "float" => "float8",
        "numeric" | "decimal" | "dec" => "numeric",
        "text" => "text",
        "varchar" | "character varying" => "varchar",
        "char" | "character" | "bpchar" => "bpchar",
        "boolean" | "bool" => "bool",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "timestamptz" | "timestamp with time zone" => "timestamptz",
        "date" => "date",
        "time" | "time without time zone" => "time",
        "timetz" | "time with time zone" => "timetz",
        "interval" => "interval",
        "json" => "json",
        "jsonb" => "jsonb",
        "uuid" => "uuid",
        "bytea" => "bytea",
        "oid" => "oid",
        "regclass" => "regclass",
        "regtype" => "regtype",
        "regproc" => "regproc",
        "name" => "name",
        _ => return None,
    };
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    /// The result's column names after the rule: an alias, or the expression as written.
    fn names(sql: &str) -> Vec<String> {
        let s = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parse").remove(0);
        let s = named(&s).unwrap_or(s);
        let Statement::Query(q) = s else { panic!("not a query") };
        let mut body = q.body.as_ref();
        while let SetExpr::SetOperation { left, .. } = body {
            body = left.as_ref();
        }
        let SetExpr::Select(select) = body else { panic!("not a select") };
        select
            .projection
            .iter()
            .map(|i| match i {
                SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    /// Each name as PostgreSQL 15 gives it (checked there; tests/pg_dialect/names.sql runs them on both).
    #[test]
    fn columns_are_named_as_postgresql_names_them() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &["?column?"]),
            ("SELECT 1, 2", &["?column?", "?column?\u{1}1"]),
            ("SELECT count(*) FROM t", &["count"]),
            ("SELECT COUNT(x), Sum(m.cpu) FROM t m", &["count", "sum"]),
            ("SELECT cpu::text, CAST(3.7 AS INTEGER), TIMESTAMP '2024-01-01' FROM t", &["cpu", "int4", "timestamp"]),
            // PostgreSQL: varchar, float8, float8; a second name alike is marked (the client sees it unmarked).
            ("SELECT 'x'::varchar(3), 1::float8, 2::double precision", &["varchar", "float8", "float8\u{1}2"]),
            ("SELECT CASE WHEN a THEN 1 END, EXISTS (SELECT 1), (SELECT max(n) FROM t)", &["case", "exists", "max"]),
            ("SELECT current_database(), current_user, now()", &["current_database", "current_user", "now"]),
            ("SELECT extract(year FROM ts), upper(h) AS h, h FROM t", &["extract", "h", "h\u{1}2"]),
            ("SELECT a, a, 1 AS a FROM t", &["a", "a\u{1}1", "a\u{1}2"]),
            ("SELECT a + 1, a FROM t UNION SELECT 2, b FROM u", &["?column?", "a"]),
            ("SELECT *, count(*) FROM t", &["*", "count(*)"]),
            ("SELECT count, count(*) FROM t", &["count", "count\u{1}1"]),
            ("SELECT array_contains(ARRAY['a'], n.nspname), n.nspname FROM n", &["?column?", "n.nspname"]),
            ("SELECT row_number() OVER (ORDER BY ts), ts AT TIME ZONE 'UTC' FROM t", &["row_number", "timezone"]),
            ("SELECT (r.keys).x, pg_total_relation_size('t') FROM r", &["x", "pg_total_relation_size"]),
            ("SELECT CAST(TIMESTAMP '2024-03-01' AS DATE), CAST(n AS TEXT)::int FROM t", &["date", "n"]),
            ("SELECT CASE WHEN a THEN b ELSE c END, CASE WHEN a THEN 1 ELSE 2 END FROM t", &["c", "case"]),
        ];
        for (sql, expected) in cases {
            assert_eq!(names(sql), *expected, "{sql}");
        }
    }

    #[test]
    fn only_queries_are_renamed() {
        let s = Parser::parse_sql(&PostgreSqlDialect {}, "INSERT INTO t SELECT count(*) FROM u").expect("parse");
        assert!(named(&s[0]).is_none());
        let s = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT a, b AS c FROM t").expect("parse");
        assert!(named(&s[0]).is_none(), "nothing unnamed");
    }
}
