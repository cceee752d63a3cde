//! How deeply a statement nests, estimated from its tokens before anything parses it.
//!
//! The SQL parser reads a chain of operators (`1 + 1 + ... + 1`, `a OR b OR ...`, `UNION ALL ...`,
//! `JOIN ...`, `x::t::t`, `FROM a, b, ...`) in a loop, but everything after it (rewrites, the
//! planner, the optimizer, evaluation, even dropping the tree) recurses once per level, and about
//! 1,500 levels overflow a 2 MiB thread stack: the process aborts. PostgreSQL refuses such a
//! statement with 54001 (`max_stack_depth`); so does [`check`], for an estimate above
//! [`MAX_NESTING`]. The estimate counts, per parenthesised group and between commas (or `WHEN` /
//! `THEN` / `ELSE`), the operators of the longest chain, plus the height of the deepest group inside
//! it; a comma in a FROM list counts as a join. It can exceed the real depth (`x = 1 OR x = 2 OR ...`
//! counts both operators of a term), never fall short of it. Parentheses and prefix operators are
//! bounded by the parser's own recursion limit.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::SqlError;
use crate::sqlstate::SqlState;

/// The deepest estimate a statement may have.
pub const MAX_NESTING: usize = 1000;

/// Refuses a statement (or several) whose nesting [`estimate`] is above [`MAX_NESTING`].
pub fn check(sql: &str) -> Result<(), SqlError> {
    // Every level takes at least two bytes (an operator and an operand).
    if sql.len() <= 2 * MAX_NESTING {
        return Ok(());
    }
    let depth = estimate(sql);
    if depth <= MAX_NESTING {
        return Ok(());
    }
    Err(SqlError {
        code: SqlState::StatementTooComplex,
        message: format!(
            "statement too complex: about {depth} nested operators, joins or set operations, at most {MAX_NESTING} \
             (a long OR chain of equalities reads better as IN (...), a long UNION ALL as VALUES)"
        ),
    })
}

#[derive(Default)]
struct Group {
    /// Operators of the current chain (since the last separator).
    chain: usize,
    /// The tallest group inside the current chain.
    inner: usize,
    /// The tallest chain so far.
    best: usize,
    /// Inside a FROM list, where a comma joins.
    from: bool,
}

impl Group {
    fn separate(&mut self) {
        self.best = self.best.max(self.chain + self.inner);
        self.chain = 0;
        self.inner = 0;
    }

    fn height(mut self) -> usize {
        self.separate();
        self.best
    }
}

/// The nesting estimate of `sql` (see the module documentation); 0 for text that does not tokenize
/// (the parser reports it, without nesting).
pub fn estimate(sql: &str) -> usize {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else { return 0 };
    let mut groups = vec![Group::default()];
    for t in &tokens {
        let open = groups.len();
        let top = groups.last_mut().expect("the outermost group is never closed");
        match t {
            Token::LParen | Token::LBracket => groups.push(Group::default()),
            // A closing parenthesis without an opening one: the parser refuses the text.
            Token::RParen | Token::RBracket if open > 1 => {
                let h = groups.pop().expect("more than one").height() + 1;
                let top = groups.last_mut().expect("the outermost group is never closed");
                top.inner = top.inner.max(h);
            }
            Token::Comma if top.from => top.chain += 1,
            Token::Comma | Token::SemiColon => top.separate(),
            Token::Word(w) => match w.keyword {
                Keyword::FROM => top.from = true,
                Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::WINDOW
                | Keyword::RETURNING => top.from = false,
                Keyword::WHEN | Keyword::THEN | Keyword::ELSE | Keyword::END => top.separate(),
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
                | Keyword::JOIN
                | Keyword::AT => top.chain += 1,
                _ => {}
            },
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::DuckIntDiv
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Caret
            | Token::Ampersand
            | Token::Pipe
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::DoubleColon => top.chain += 1,
            _ => {}
        }
    }
    // Unclosed groups count as closed (the parser refuses the text anyway).
    let mut height = 0;
    while let Some(g) = groups.pop() {
        let h = g.height().max(height);
        height = if groups.is_empty() { h } else { h + 1 };
    }
    height
}

#[cfg(test)]
mod tests {
    use super::{MAX_NESTING, check, estimate};
    use crate::sqlstate::SqlState;

    #[test]
    fn chains_count_their_operators_and_lists_do_not() {
        assert_eq!(estimate("SELECT 1"), 0);
        assert_eq!(estimate(&format!("SELECT 1{}", "+1".repeat(2000))), 2000);
        assert_eq!(estimate(&format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(700))), 700);
        // Two joins, IN, and the list's group.
        assert_eq!(estimate("SELECT 1 FROM a, b, c WHERE x IN (1, 2, 3)"), 4);
        let wide_in = format!(
            "SELECT x FROM t WHERE x IN ({})",
            (0..50_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        );
        assert_eq!(estimate(&wide_in), 2);
        let values = format!("INSERT INTO t VALUES {}", vec!["(1, 'a', -2.5)"; 50_000].join(", "));
        assert!(estimate(&values) < 5);
        let case =
            format!("SELECT CASE {} END", (0..5000).map(|i| format!("WHEN x = {i} THEN {i}")).collect::<String>());
        assert!(estimate(&case) < 5);
        // Nested groups add their height to the chain they sit in.
        assert_eq!(estimate("SELECT (1 + (2 * 3)) + 4"), 5);
    }

    #[test]
    fn deep_statements_are_refused_with_54001() {
        for sql in [
            format!("SELECT 1{}", "+1".repeat(100_000)),
            format!("SELECT count(*) FROM t WHERE x = 0{}", " OR x = 1".repeat(100_000)),
            format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(100_000)),
            format!("SELECT 1{}", "::bigint".repeat(100_000)),
            format!("SELECT 1 FROM t{}", ", t".repeat(100_000)),
            format!("SELECT 1 FROM t{}", " JOIN t ON true".repeat(100_000)),
        ] {
            let e = check(&sql).expect_err(&sql[..60]);
            assert_eq!(e.code, SqlState::StatementTooComplex, "{}", &sql[..60]);
        }
        assert!(check(&format!("SELECT 1{}", "+1".repeat(MAX_NESTING / 2))).is_ok());
    }
}
