//! Statements clients send that the engine would plan wrongly or not at all, answered by an
//! equivalent statement: syntax-tree substitutions after parsing ([`substitute`]; the text rewrites
//! before parsing are the engine's, `trafficdb::rewrite`): functions of PostgreSQL's catalog answered by a query, pg_type's regproc
//! columns compared with OIDs, `U&'...'` strings, PostgreSQL's `(composite).field`,
//! `INTERVAL '...'` literals in PostgreSQL's interval syntax, the query forms of [`QueryForms`],
//! `x op ANY / ALL (subquery)` ([`quantified`]), and PostgreSQL's spellings of [`pg_form`].

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Expr, Statement, Visit, VisitMut, visit_expressions, visit_expressions_mut,
};
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
        e if quantified(e).is_some() || pg_form(e).is_some() => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    let fetch = Visit::visit(s, &mut QueryForms).is_break();
    if found.is_continue() && !fetch {
        return None;
    }
    let mut s = s.clone();
    let _ = VisitMut::visit(&mut s, &mut QueryForms);
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
        if let Some(new) = quantified(e).or_else(|| pg_form(e)) {
            *e = new;
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

/// Query forms DataFusion plans otherwise: `FETCH FIRST n ROWS ONLY` (the SQL standard's `LIMIT`,
/// which DataFusion does not plan) as `LIMIT n` (`WITH TIES` and `PERCENT` are left for the planner
/// to refuse); `generate_series(...)` in FROM, whose one column PostgreSQL names after the alias or
/// the function (`FROM generate_series(1, 3) AS g` has a column `g`; DataFusion's is `value`), with
/// that column named so; `EXISTS` and `generate_series` in a select list
/// ([`exists_as_count`], [`is_series_call`]); `TABLE t` in a query ([`select_from_tables`]). As a
/// [`Visit`]or it finds such a query, as a [`VisitMut`]or it rewrites them.
struct QueryForms;

impl ast::Visitor for QueryForms {
    type Break = ();

    fn pre_visit_query(&mut self, q: &ast::Query) -> ControlFlow<()> {
        if fetch_limit(q).is_some() || selects_rewritten(q) || has_table_body(&q.body) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn pre_visit_table_factor(&mut self, t: &ast::TableFactor) -> ControlFlow<()> {
        if series_alias(t).is_some() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }
}

/// The alias a `generate_series(...)` table factor gets: its own name (or the function's) for the
/// table and its column.
fn series_alias(t: &ast::TableFactor) -> Option<ast::TableAlias> {
    let ast::TableFactor::Table { name, args: Some(_), alias, .. } = t else { return None };
    let function = name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    if function != "generate_series" || alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return None;
    }
    let named = alias.as_ref().map_or_else(|| ast::Ident::new(function), |a| a.name.clone());
    Some(ast::TableAlias {
        explicit: true,
        name: named.clone(),
        columns: vec![ast::TableAliasColumnDef { name: named, data_type: None }],
        at: None,
    })
}

impl ast::VisitorMut for QueryForms {
    type Break = ();

    fn pre_visit_table_factor(&mut self, t: &mut ast::TableFactor) -> ControlFlow<()> {
        if let Some(new) = series_alias(t)
            && let ast::TableFactor::Table { alias, .. } = t
        {
            *alias = Some(new);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &mut ast::Query) -> ControlFlow<()> {
        if let Some(n) = fetch_limit(q) {
            match &mut q.limit_clause {
                None => {
                    q.limit_clause =
                        Some(ast::LimitClause::LimitOffset { limit: Some(n), offset: None, limit_by: vec![] })
                }
                Some(ast::LimitClause::LimitOffset { limit, .. }) => *limit = Some(n),
                Some(_) => return ControlFlow::Continue(()),
            }
            q.fetch = None;
        }
        if let ast::SetExpr::Select(select) = q.body.as_mut() {
            for item in &mut select.projection {
                let (ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. }) = item else {
                    continue;
                };
                if is_series_call(e)
                    && let Some(rows) = expr_of(&format!("unnest({e})"))
                {
                    *e = rows;
                }
                let _ = visit_expressions_mut(e, |e: &mut Expr| {
                    if let Expr::Exists { subquery, negated } = e
                        && let Some(new) = exists_as_count(subquery, *negated)
                    {
                        *e = new;
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
        }
        select_from_tables(&mut q.body);
        ControlFlow::Continue(())
    }
}

/// `generate_series(...)` as a whole select item: a set-returning function, whose values are rows in
/// PostgreSQL (DataFusion's scalar `generate_series` makes one list; `unnest` makes it rows).
fn is_series_call(e: &Expr) -> bool {
    matches!(e, Expr::Function(f) if function_name(f) == "generate_series")
}

/// Whether a select list of `q` has an `EXISTS (subquery)` in it, which DataFusion plans only in a
/// filter, or a `generate_series` call as an item.
fn selects_rewritten(q: &ast::Query) -> bool {
    let ast::SetExpr::Select(select) = q.body.as_ref() else { return false };
    select.projection.iter().any(|item| {
        let (ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. }) = item else {
            return false;
        };
        is_series_call(e)
            || visit_expressions(e, |e: &Expr| {
                if matches!(e, Expr::Exists { .. }) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            })
            .is_break()
    })
}

/// `EXISTS (q)` in a select list as the scalar subquery `(SELECT count(*) > 0 ...)`, which DataFusion
/// decorrelates: `q`'s own FROM and WHERE when it is a plain selection (its select list does not
/// matter then, and a correlated `q` stays one), else its rows counted as a derived table.
fn exists_as_count(q: &ast::Query, negated: bool) -> Option<Expr> {
    let counted = expr_of("count(*) > 0")?;
    let plain = q.with.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && matches!(q.body.as_ref(), ast::SetExpr::Select(s)
            if s.having.is_none()
                && s.distinct.is_none()
                && matches!(&s.group_by, ast::GroupByExpr::Expressions(keys, _) if keys.is_empty())
                // An aggregate in the select list makes one row of no rows.
                && s.projection.iter().all(|item| visit_expressions(item, |e: &Expr| {
                    if matches!(e, Expr::Function(_)) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                }).is_continue()));
    let subquery = if plain {
        let mut q = q.clone();
        q.order_by = None;
        if let ast::SetExpr::Select(s) = q.body.as_mut() {
            s.projection = vec![ast::SelectItem::UnnamedExpr(counted)];
        }
        Expr::Subquery(Box::new(q))
    } else {
        expr_of(&format!("(SELECT count(*) > 0 FROM ({q}) AS exists_rows)"))?
    };
    Some(if negated { Expr::UnaryOp { op: ast::UnaryOperator::Not, expr: Box::new(subquery) } } else { subquery })
}

/// Whether a query body is, or combines, a `TABLE t` (the SQL standard's `SELECT * FROM t`).
fn has_table_body(body: &ast::SetExpr) -> bool {
    match body {
        ast::SetExpr::Table(_) => true,
        ast::SetExpr::SetOperation { left, right, .. } => has_table_body(left) || has_table_body(right),
        _ => false,
    }
}

/// Each `TABLE t` of a query body as `SELECT * FROM t`, which DataFusion plans.
fn select_from_tables(body: &mut ast::SetExpr) {
    match body {
        ast::SetExpr::Table(t) => {
            let Some(name) = &t.table_name else { return };
            let name = match &t.schema_name {
                Some(schema) => format!("{schema}.{name}"),
                None => name.clone(),
            };
            if let Some(Statement::Query(q)) = ast_of(&format!("SELECT * FROM {name}")) {
                *body = *q.body;
            }
        }
        ast::SetExpr::SetOperation { left, right, .. } => {
            select_from_tables(left);
            select_from_tables(right);
        }
        _ => {}
    }
}

/// PostgreSQL's spellings DataFusion does not read, as what it does: the prefix operators `|/`
/// (square root), `||/` (cube root), `@` (absolute value) and `~` (bitwise not, as `# -1`);
/// `localtimestamp` and `localtime` (the session's clock reads UTC unless `TimeZone` says
/// otherwise; they read it as the UTC wall clock); casts to `json` and `jsonb` as casts to text (JSON
/// is kept as text, see `trafficdb_udfs::json`); casts to `varchar(n)` and `char(n)`, cut to n
/// characters, whose length DataFusion's text type drops (`char(n)`'s padding with spaces, which
/// PostgreSQL's comparisons and `length` ignore again, is not kept).
fn pg_form(e: &Expr) -> Option<Expr> {
    match e {
        Expr::UnaryOp { op, expr } => {
            let sql = match op {
                ast::UnaryOperator::PGSquareRoot => format!("sqrt({expr})"),
                ast::UnaryOperator::PGCubeRoot => format!("cbrt({expr})"),
                ast::UnaryOperator::PGAbs => format!("abs({expr})"),
                ast::UnaryOperator::BitwiseNot => format!("(({expr}) # -1)"),
                _ => return None,
            };
            expr_of(&sql)
        }
        Expr::Function(f) if function_name(f) == "make_interval" => {
            named_in_order(f, &trafficdb_udfs::pg::MAKE_INTERVAL_PARAMETERS)
        }
        Expr::Function(f) if matches!(f.args, ast::FunctionArguments::None) => match function_name(f).as_str() {
            "localtimestamp" => expr_of("CAST(now() AS TIMESTAMP)"),
            "localtime" => expr_of("CAST(now() AS TIME)"),
            _ => None,
        },
        // `oid::regtype::text`: the type's name (the catalog maps regtype to its oid, so the text
        // would be the number). The name cast from text (`'int4'::regtype`) is an oid lookup already.
        Expr::Cast { expr: inner, data_type, .. } if is_text(data_type) => match inner.as_ref() {
            Expr::Cast { expr: oid, data_type: ast::DataType::Custom(name, _), .. }
                if name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .is_some_and(|i| i.value.eq_ignore_ascii_case("regtype")) =>
            {
                expr_of(&format!("format_type({oid}, NULL)"))
            }
            _ => None,
        },
        Expr::Cast { expr, data_type: ast::DataType::JSON | ast::DataType::JSONB, .. } => {
            expr_of(&format!("CAST({expr} AS TEXT)"))
        }
        Expr::Cast { expr, data_type, .. } => {
            use ast::DataType as T;
            let length = match data_type {
                T::Varchar(Some(l))
                | T::CharacterVarying(Some(l))
                | T::CharVarying(Some(l))
                | T::Char(Some(l))
                | T::Character(Some(l)) => l,
                _ => return None,
            };
            let ast::CharacterLength::IntegerLength { length, .. } = length else { return None };
            expr_of(&format!("CAST(left(CAST({expr} AS TEXT), {length}) AS VARCHAR)"))
        }
        _ => None,
    }
}

fn is_text(t: &ast::DataType) -> bool {
    matches!(t, ast::DataType::Text | ast::DataType::Varchar(None) | ast::DataType::String(None))
}

/// A call with named arguments (`make_interval(days => 3)`) as one with its arguments in the order
/// of `parameters`, the ones not given as `0` (PostgreSQL's defaults where this is used; DataFusion
/// names arguments but has no defaults). `None` when no argument is named or a name is unknown.
fn named_in_order(f: &ast::Function, parameters: &[&str]) -> Option<Expr> {
    let ast::FunctionArguments::List(list) = &f.args else { return None };
    if !list.args.iter().any(|a| matches!(a, ast::FunctionArg::Named { .. } | ast::FunctionArg::ExprNamed { .. })) {
        return None;
    }
    let mut given: Vec<Option<ast::FunctionArgExpr>> = vec![None; parameters.len()];
    for (i, arg) in list.args.iter().enumerate() {
        let (slot, value) = match arg {
            ast::FunctionArg::Unnamed(value) => (i, value),
            ast::FunctionArg::Named { name, arg, .. }
            | ast::FunctionArg::ExprNamed { name: Expr::Identifier(name), arg, .. } => {
                (parameters.iter().position(|p| p.eq_ignore_ascii_case(&name.value))?, arg)
            }
            _ => return None,
        };
        *given.get_mut(slot)? = Some(value.clone());
    }
    let last = given.iter().rposition(Option::is_some)?;
    let zero = ast::FunctionArgExpr::Expr(Expr::Value(ast::Value::Number("0".into(), false).into()));
    let mut call = f.clone();
    let ast::FunctionArguments::List(list) = &mut call.args else { return None };
    list.args =
        given[..=last].iter().map(|a| ast::FunctionArg::Unnamed(a.clone().unwrap_or_else(|| zero.clone()))).collect();
    Some(Expr::Function(call))
}

fn expr_of(sql: &str) -> Option<Expr> {
    datafusion::sql::sqlparser::parser::Parser::new(&PostgreSqlDialect {}).try_with_sql(sql).ok()?.parse_expr().ok()
}

/// The row count of `q`'s `FETCH FIRST n ROWS ONLY` (1 when no count is given), when it has one
/// and no `LIMIT` of its own.
fn fetch_limit(q: &ast::Query) -> Option<Expr> {
    let f = q.fetch.as_ref().filter(|f| !f.with_ties && !f.percent)?;
    if let Some(ast::LimitClause::LimitOffset { limit: Some(_), .. } | ast::LimitClause::OffsetCommaLimit { .. }) =
        &q.limit_clause
    {
        return None;
    }
    Some(f.quantity.clone().unwrap_or_else(|| Expr::Value(ast::Value::Number("1".into(), false).into())))
}

/// `x op ANY (subquery)` and `x op ALL (subquery)`, which DataFusion plans wrongly or not at all
/// (`x > ALL (...)` gave no rows where PostgreSQL gives some), as the tests PostgreSQL defines them
/// by: `= ANY` is `IN`, `<> ALL` is `NOT IN`, `op ANY` is `EXISTS (... WHERE x op v)`, and `op ALL`
/// is `NOT EXISTS (... WHERE (x op v) IS NOT TRUE)`. A NULL comparison counts as not true: the same
/// answer in a WHERE clause; in a select list it is `false` where PostgreSQL says NULL.
fn quantified(e: &Expr) -> Option<Expr> {
    // datafusion-pg-catalog's parser has made `x = ANY (subquery)` an `array_contains(subquery, x)`
    // already, which DataFusion cannot plan either.
    if let Expr::Function(f) = e
        && function_name(f) == "array_contains"
        && let ast::FunctionArguments::List(list) = &f.args
        && let [
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(Expr::Subquery(query))),
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(left)),
        ] = list.args.as_slice()
    {
        return Some(Expr::InSubquery { expr: Box::new(left.clone()), subquery: query.clone(), negated: false });
    }
    let (left, op, right, all) = match e {
        Expr::AnyOp { left, compare_op, right, .. } => (left, compare_op, right, false),
        Expr::AllOp { left, compare_op, right } => (left, compare_op, right, true),
        _ => return None,
    };
    let Expr::Subquery(query) = right.as_ref() else { return None };
    match (op, all) {
        (ast::BinaryOperator::Eq, false) => {
            return Some(Expr::InSubquery { expr: left.clone(), subquery: query.clone(), negated: false });
        }
        (ast::BinaryOperator::NotEq, true) => {
            return Some(Expr::InSubquery { expr: left.clone(), subquery: query.clone(), negated: true });
        }
        _ => {}
    }
    let sql = if all {
        format!(
            "NOT EXISTS (SELECT 1 FROM ({query}) AS quantified(quantified_value) \
             WHERE ({left} {op} quantified.quantified_value) IS NOT TRUE)"
        )
    } else {
        format!(
            "EXISTS (SELECT 1 FROM ({query}) AS quantified(quantified_value) \
             WHERE {left} {op} quantified.quantified_value)"
        )
    };
    expr_of(&sql)
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
    string_literal(e).is_some()
}

fn string_literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => v.value.clone().into_string(),
        Expr::Nested(e) => string_literal(e),
        _ => None,
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
    expr_of(&format!("{}({column})", crate::pgwire::catalog::REGPROC_OID))
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
        // pg_table_size('name') (a regclass given by its name): the named table's bytes.
        _ if string_literal(arg).is_some() => {
            let name = string_literal(arg).unwrap_or_default();
            let name = name.strip_prefix("public.").unwrap_or(&name).replace('\'', "''");
            format!("SELECT trafficdb_table_size('{name}')")
        }
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
    fn postgresql_spellings_become_what_the_planner_reads() {
        let rewritten = |sql: &str| super::ast_of(sql).and_then(|s| super::replace(&s)).map(|s| s.to_string());
        assert_eq!(
            rewritten("SELECT |/ 16.0, ||/ x, @ -5, ~5").as_deref(),
            Some("SELECT sqrt(16.0), cbrt(x), abs(-5), ((5) # -1)")
        );
        assert_eq!(rewritten("SELECT localtimestamp").as_deref(), Some("SELECT CAST(now() AS TIMESTAMP)"));
        assert_eq!(
            rewritten("SELECT atttypid::regtype::text AS t FROM pg_attribute").as_deref(),
            Some("SELECT format_type(atttypid, NULL) AS t FROM pg_attribute")
        );
        assert_eq!(rewritten("SELECT p.prorettype::regtype != 16 FROM pg_proc p"), None);
        assert_eq!(
            rewritten("SELECT 'abcdef'::varchar(2), CAST(x AS CHAR(3))").as_deref(),
            Some("SELECT CAST(left(CAST('abcdef' AS TEXT), 2) AS VARCHAR), CAST(left(CAST(x AS TEXT), 3) AS VARCHAR)")
        );
        assert_eq!(rewritten("SELECT x::varchar, CAST(x AS CHAR)"), None);
        assert_eq!(
            rewritten("SELECT make_interval(days => 3), make_interval(1, secs => 1.5)").as_deref(),
            Some("SELECT make_interval(0, 0, 0, 3), make_interval(1, 0, 0, 0, 0, 0, 1.5)")
        );
        assert_eq!(rewritten("SELECT make_interval(1, 2)"), None);
        assert_eq!(
            rewritten("SELECT generate_series(1, 3) AS n").as_deref(),
            Some("SELECT unnest(generate_series(1, 3)) AS n")
        );
        assert_eq!(
            rewritten("SELECT a, EXISTS (SELECT 1 FROM u WHERE u.b = t.a ORDER BY 1) FROM t").as_deref(),
            Some("SELECT a, (SELECT count(*) > 0 FROM u WHERE u.b = t.a) FROM t")
        );
        assert_eq!(
            rewritten("SELECT NOT EXISTS (SELECT max(x) FROM u)").as_deref(),
            Some("SELECT NOT (SELECT count(*) > 0 FROM (SELECT max(x) FROM u) AS exists_rows)")
        );
        // In a filter, the planner reads EXISTS itself.
        assert_eq!(rewritten("SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u)"), None);
        assert_eq!(
            rewritten("SELECT a FROM t UNION ALL TABLE u").as_deref(),
            Some("SELECT a FROM t UNION ALL SELECT * FROM u")
        );
        assert_eq!(
            rewritten("SELECT pg_total_relation_size('public.m')").as_deref(),
            Some("SELECT trafficdb_table_size('m')")
        );
    }

    #[test]
    fn fetch_first_and_quantified_subqueries_become_what_the_planner_reads() {
        let rewritten = |sql: &str| super::ast_of(sql).and_then(|s| super::replace(&s)).map(|s| s.to_string());
        assert_eq!(
            rewritten("SELECT * FROM t ORDER BY ts OFFSET 1 ROWS FETCH NEXT 2 ROWS ONLY").as_deref(),
            Some("SELECT * FROM t ORDER BY ts LIMIT 2 OFFSET 1 ROWS")
        );
        assert_eq!(rewritten("SELECT 1 FETCH FIRST ROW ONLY").as_deref(), Some("SELECT 1 LIMIT 1"));
        assert_eq!(
            rewritten("SELECT * FROM t WHERE b = ANY (SELECT name FROM u)").as_deref(),
            Some("SELECT * FROM t WHERE b IN (SELECT name FROM u)")
        );
        assert_eq!(
            rewritten("SELECT * FROM t WHERE ms > ALL (SELECT ms FROM t WHERE b = 'web')").as_deref(),
            Some(
                "SELECT * FROM t WHERE NOT EXISTS (SELECT 1 FROM (SELECT ms FROM t WHERE b = 'web') AS \
                 quantified (quantified_value) WHERE (ms > quantified.quantified_value) IS NOT TRUE)"
            )
        );
        assert_eq!(rewritten("SELECT 2 = ANY (ARRAY[1, 2])"), None);
        assert_eq!(
            rewritten("SELECT g FROM generate_series(1, 3) AS g").as_deref(),
            Some("SELECT g FROM generate_series(1, 3) AS g (g)")
        );
        assert_eq!(
            rewritten("SELECT generate_series FROM generate_series(1, 3)").as_deref(),
            Some("SELECT generate_series FROM generate_series(1, 3) AS generate_series (generate_series)")
        );
        assert_eq!(rewritten("SELECT n FROM generate_series(1, 3) AS g(n)"), None);
        // As datafusion-pg-catalog's parser leaves `= ANY (subquery)`.
        assert_eq!(
            rewritten("SELECT * FROM t WHERE NOT array_contains((SELECT name FROM u), b)").as_deref(),
            Some("SELECT * FROM t WHERE NOT b IN (SELECT name FROM u)")
        );
    }

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
