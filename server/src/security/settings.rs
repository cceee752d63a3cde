//! Which settings a session may change, like PostgreSQL's GUC contexts.
//!
//! Every role may change its own session's presentation and limits: `statement_timeout` (not past the
//! server's, when one is configured), the time zone, date and interval styles, `search_path`,
//! `application_name`, `extra_float_digits`, and the PostgreSQL settings drivers send that change
//! nothing here (`client_min_messages`, ...). Of DataFusion's settings, only those that change how
//! results and plans are shown (`datafusion.explain.*`, `datafusion.format.*`,
//! `datafusion.execution.time_zone`) are open to all; the rest (memory limit, spill directory, batch
//! size, parallelism, the optimizer) are the admin's, and a few are bounded even for the admin. Names
//! are compared as PostgreSQL compares them: case-insensitively, however they are quoted or split
//! (`"datafusion.runtime.memory_limit"`, `datafusion."runtime".memory_limit`). `RESET` follows the
//! same rules as `SET`.

use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Reset, Set, Statement, Value};

use crate::security::roles::Role;

/// `statement_timeout`, kept by the server (not by DataFusion).
pub const STATEMENT_TIMEOUT: &str = "statement_timeout";

/// DataFusion settings every role may change (prefixes end with a dot).
const OPEN: [&str; 3] = ["datafusion.explain.", "datafusion.format.", "datafusion.execution.time_zone"];

/// Numeric settings bounded even for the admin: beyond these, one query allocates gigabytes outside
/// the memory pool (a batch of 10^9 rows, a hash table per one of 4,096 partitions).
const BOUNDS: [(&str, u64, u64); 4] = [
    ("datafusion.execution.batch_size", 1, 1 << 20),
    ("datafusion.execution.target_partitions", 1, 256),
    ("datafusion.execution.planning_concurrency", 1, 256),
    ("datafusion.execution.meta_fetch_concurrency", 1, 256),
];

/// A setting's name as PostgreSQL compares it: its parts joined by dots, in lower case.
pub fn name(object: &ObjectName) -> String {
    object
        .0
        .iter()
        .map(|p| p.as_ident().map_or_else(|| p.to_string(), |i| i.value.clone()))
        .collect::<Vec<_>>()
        .join(".")
        .trim()
        .to_ascii_lowercase()
}

/// Whether `name` is one of DataFusion's settings (the engine applies it).
pub fn is_datafusion(name: &str) -> bool {
    name.starts_with("datafusion.")
}

/// The least role that may change `name`.
pub fn role_for(name: &str) -> Role {
    if !is_datafusion(name) {
        return Role::Reader;
    }
    if OPEN.iter().any(|open| if open.ends_with('.') { name.starts_with(open) } else { name == *open }) {
        Role::Reader
    } else {
        Role::Admin
    }
}

/// The least role that may run a `SET` / `RESET`.
pub fn statement_role(s: &Statement) -> Role {
    match s {
        Statement::Set(set) => match set {
            Set::SingleAssignment { variable, .. } => role_for(&name(variable)),
            Set::ParenthesizedAssignments { variables, .. } => {
                variables.iter().map(|v| role_for(&name(v))).max().unwrap_or(Role::Reader)
            }
            Set::MultipleAssignments { assignments } => {
                assignments.iter().map(|a| role_for(&name(&a.name))).max().unwrap_or(Role::Reader)
            }
            Set::SetRole { .. } | Set::SetSessionAuthorization(_) => Role::Admin,
            _ => Role::Reader,
        },
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => Role::Reader,
            Reset::ConfigurationParameter(n) => role_for(&name(n)),
        },
        _ => Role::Reader,
    }
}

/// The text of a `SET` value (`'8G'`, `8`, `on`); `None` for `DEFAULT`.
pub fn value_text(values: &[Expr]) -> Option<String> {
    let v = values.first()?;
    match v {
        Expr::Identifier(i) if i.value.eq_ignore_ascii_case("default") => None,
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(n.clone()),
            other => Some(other.clone().into_string().unwrap_or_else(|| other.to_string())),
        },
        other => Some(other.to_string()),
    }
}

/// Checks a value against the bounds of its setting (SQLSTATE 22023 when out of them).
pub fn check_bounds(name: &str, value: &str) -> Result<(), String> {
    let Some((_, low, high)) = BOUNDS.iter().find(|(n, _, _)| *n == name) else { return Ok(()) };
    match value.trim().parse::<u64>() {
        Ok(v) if (*low..=*high).contains(&v) => Ok(()),
        _ => Err(format!("{value} is outside the valid range for parameter \"{name}\" ({low} .. {high})")),
    }
}

/// A `statement_timeout` value as PostgreSQL reads it: a number of milliseconds, or a number with a
/// unit (`us`, `ms`, `s`, `min`, `h`, `d`); zero means none.
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (number, unit) = (&v[..split], v[split..].trim());
    let bad = || format!("invalid value for parameter \"statement_timeout\": \"{value}\"");
    let n: f64 = number.parse().map_err(|_| bad())?;
    let ms = match unit.to_ascii_lowercase().as_str() {
        "us" => n / 1000.0,
        "" | "ms" => n,
        "s" => n * 1e3,
        "min" => n * 60e3,
        "h" => n * 3600e3,
        "d" => n * 86400e3,
        _ => return Err(bad()),
    };
    if !ms.is_finite() || !(0.0..=i32::MAX as f64).contains(&ms) {
        return Err(format!(
            "{value} is outside the valid range for parameter \"statement_timeout\" (0 .. 2147483647 ms)"
        ));
    }
    Ok(Duration::from_millis(ms.round() as u64))
}

/// The timeout a session of `role` may have, given the server's (`cap`, zero: none). A non-admin may
/// lower the server's timeout, not lift or remove it.
pub fn allowed_timeout(role: Role, cap: Duration, wanted: Duration) -> Result<Duration, String> {
    if role == Role::Admin || cap.is_zero() || (!wanted.is_zero() && wanted <= cap) {
        return Ok(wanted);
    }
    Err(format!(
        "permission denied to set parameter \"statement_timeout\" to {}: the server's limit is {} ms and only \
         an admin may lift it",
        if wanted.is_zero() { "0 (none)".to_string() } else { format!("{} ms", wanted.as_millis()) },
        cap.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn role(sql: &str) -> Role {
        let s = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses").remove(0);
        statement_role(&s)
    }

    #[test]
    fn names_are_compared_as_postgresql_does() {
        for sql in [
            "SET datafusion.runtime.memory_limit = '8G'",
            "SET \"datafusion.runtime.memory_limit\" = '8G'",
            "SET datafusion.\"runtime\".memory_limit = '8G'",
            "SET DataFusion.Runtime.Memory_Limit TO '8G'",
            "SET SESSION datafusion.runtime.temp_directory = '/tmp'",
            "SET LOCAL datafusion.execution.batch_size = 10",
            "RESET datafusion.runtime.memory_limit",
            "RESET \"datafusion.execution.target_partitions\"",
            "SET ROLE admin",
            "SET SESSION AUTHORIZATION admin",
        ] {
            assert_eq!(role(sql), Role::Admin, "{sql}");
        }
        for sql in [
            "SET statement_timeout = 100",
            "RESET statement_timeout",
            "RESET ALL",
            "SET search_path = public",
            "SET TIME ZONE 'UTC'",
            "SET datafusion.explain.format = 'tree'",
            "SET datafusion.execution.time_zone = '+01:00'",
            "SET client_min_messages = warning",
        ] {
            assert_eq!(role(sql), Role::Reader, "{sql}");
        }
    }

    #[test]
    fn timeouts_read_as_postgresql_reads_them() {
        assert_eq!(parse_timeout("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("2 min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("1 fortnight").is_err());
        assert!(parse_timeout("1e12").is_err());
        let cap = Duration::from_secs(30);
        assert!(allowed_timeout(Role::Reader, cap, Duration::from_secs(10)).is_ok());
        assert!(allowed_timeout(Role::Reader, cap, Duration::from_secs(60)).is_err());
        assert!(allowed_timeout(Role::Writer, cap, Duration::ZERO).is_err());
        assert!(allowed_timeout(Role::Admin, cap, Duration::ZERO).is_ok());
        assert!(allowed_timeout(Role::Reader, Duration::ZERO, Duration::ZERO).is_ok());
    }

    #[test]
    fn some_settings_are_bounded_for_everyone() {
        assert!(check_bounds("datafusion.execution.batch_size", "8192").is_ok());
        assert!(check_bounds("datafusion.execution.batch_size", "1000000000").is_err());
        assert!(check_bounds("datafusion.execution.target_partitions", "4096").is_err());
        assert!(check_bounds("datafusion.execution.target_partitions", "0").is_err());
        assert!(check_bounds("datafusion.optimizer.max_passes", "7").is_ok());
    }
}
