//! Filters the scan evaluates itself (pushed down `Exact`, so DataFusion drops them above the scan)
//! give the rows DataFusion's own filter gives: random predicates over a stored table (sealed
//! segments in several partitions and memtable rows, NULLs in every column) against the same rows in
//! a DataFusion memory table, with aggregates, group-bys and newest-first limits above them; and
//! `count`, `min`, `max` of an unfiltered table answered from statistics, against the same reference.

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;

use crate::common::runtime;

const COLUMNS: &str = "ts TIMESTAMP NOT NULL, host TEXT, code INT, ms DOUBLE, ok BOOLEAN";

/// Rows from `first` on: hosts repeat (a dictionary in segments), every column but ts has NULLs.
fn insert(first: i64, n: i64) -> String {
    format!(
        "INSERT INTO t SELECT CAST(to_timestamp_seconds(1704067200 + v * 37) AS TIMESTAMP), \
         CASE WHEN v % 9 = 0 THEN NULL ELSE 'h' || (v % 6) END, \
         CASE WHEN v % 11 = 0 THEN NULL ELSE CAST(v % 500 AS INT) END, \
         CASE WHEN v % 13 = 0 THEN NULL ELSE (v % 97) * 1.5 END, \
         CASE WHEN v % 7 = 0 THEN NULL ELSE v % 3 = 0 END \
         FROM generate_series({first}, {}) AS g(v)",
        first + n - 1
    )
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn predicate(r: &mut Rng, depth: u32) -> String {
    let op = || ["=", "<>", "<", "<=", ">", ">="];
    if depth < 2 && r.next().is_multiple_of(3) {
        let (a, b) = (predicate(r, depth + 1), predicate(r, depth + 1));
        return match r.next() % 3 {
            0 => format!("({a} AND {b})"),
            1 => format!("({a} OR {b})"),
            _ => format!("NOT ({a})"),
        };
    }
    match r.next() % 12 {
        0 => format!("host {} '{}'", r.pick(&op()), r.pick(&["h0", "h3", "h5", "h9", ""])),
        1 => format!("code {} {}", r.pick(&op()), r.next() % 520),
        2 => format!("ms {} {}", r.pick(&op()), (r.next() % 150) as f64 / 2.0),
        3 => format!("ok = {}", r.pick(&["true", "false"])),
        4 => format!("{} IS {}NULL", r.pick(&["host", "code", "ms", "ok"]), r.pick(&["", "NOT "])),
        5 => format!("host IN ('h1', '{}', NULL)", r.pick(&["h2", "h4", "x"])),
        6 => format!("host LIKE '{}'", r.pick(&["h%", "%3", "h_", "x%"])),
        7 => {
            let from = r.next() % 2000;
            format!(
                "ts BETWEEN CAST('2024-01-01' AS TIMESTAMP) + INTERVAL '{from} minutes' \
                 AND CAST('2024-01-01' AS TIMESTAMP) + INTERVAL '{} minutes'",
                from + r.next() % 600
            )
        }
        8 => format!("lower(host) {} 'h{}'", r.pick(&op()), r.next() % 6),
        9 => format!("code % {} = {}", 2 + r.next() % 5, r.next() % 3),
        10 => format!("coalesce(ms, -1) * 2 > {}", r.next() % 200),
        _ => format!("ok {} (code > {})", r.pick(&["=", "<>"]), r.next() % 500),
    }
}

/// The sum of an `EXPLAIN ANALYZE` metric over the plan's nodes (printed as `name=8.19 K`).
fn metric(plan: &str, name: &str) -> f64 {
    plan.split(&format!("{name}="))
        .skip(1)
        .filter_map(|s| {
            let v = s.split([',', ']']).next()?.trim();
            let (n, scale) = match v.split_once(' ') {
                Some((n, "K")) => (n, 1e3),
                Some((n, "M")) => (n, 1e6),
                _ => (v, 1.0),
            };
            Some(n.parse::<f64>().ok()? * scale)
        })
        .sum()
}

async fn answer(ctx: &SessionContext, sql: &str) -> Result<Vec<String>, String> {
    let batches = ctx.sql(sql).await.map_err(|e| e.to_string())?.collect().await.map_err(|e| e.to_string())?;
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in &batches {
        let f: Vec<ArrayFormatter<'_>> =
            b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
        let float: Vec<bool> = b.columns().iter().map(|c| c.data_type().is_floating()).collect();
        for row in 0..b.num_rows() {
            let cells = f.iter().zip(&float).map(|(f, &float)| {
                let text = f.value(row).to_string();
                // Floating-point aggregates merge partial states in the order partitions finish:
                // compared to 12 significant digits, not to the last bit.
                match text.parse::<f64>() {
                    Ok(v) if float && v.is_finite() => format!("{v:.11e}"),
                    _ => text,
                }
            });
            out.push(cells.collect::<Vec<_>>().join("|"));
        }
    }
    Ok(out)
}

/// The plan `EXPLAIN [ANALYZE]` gives, one string.
async fn plan_of(ctx: &SessionContext, sql: &str) -> String {
    answer(ctx, sql).await.unwrap().join("\n")
}

/// The table in trafficdb (three sealed segments, memtable rows newer and older) and in DataFusion.
async fn both(dir: &std::path::Path) -> (trafficdb::Database, SessionContext) {
    let db = trafficdb::Database::open(dir).await.unwrap();
    db.sql(&format!("CREATE TABLE t ({COLUMNS}) WITH (time_column = 'ts', partition = '6 hours')")).await.unwrap();
    let reference = SessionContext::new();
    reference.sql(&format!("CREATE TABLE t ({COLUMNS})")).await.unwrap().collect().await.unwrap();
    for (first, n, flush) in
        [(0, 900, true), (900, 1500, true), (2400, 700, true), (3100, 400, false), (-300, 200, false)]
    {
        let sql = insert(first, n);
        db.sql(&sql).await.unwrap();
        reference.sql(&sql).await.unwrap().collect().await.unwrap();
        if flush {
            db.flush().unwrap();
        }
    }
    (db, reference)
}

#[test]
fn count_min_max_of_a_whole_table_come_from_statistics() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let (db, reference) = both(dir.path()).await;
        let sql = "SELECT count(*), count(host), count(code), min(ts), max(ts), min(host), max(host), min(code), \
                   max(code), min(ok), max(ok) FROM t";
        let plan = plan_of(db.session(), &format!("EXPLAIN {sql}")).await;
        assert!(!plan.contains("TrafficScan"), "answered without a scan: {plan}");
        assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await);
        // Memtable batches keep the bounds read once; a batch appended since brings its own.
        for (first, n) in [(4000, 3), (-900, 2)] {
            let rows = insert(first, n);
            db.sql(&rows).await.unwrap();
            reference.sql(&rows).await.unwrap().collect().await.unwrap();
            assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await, "after {first}");
        }
        // Floating-point bounds and filtered tables are scanned; the answers agree all the same.
        for sql in ["SELECT min(ms), max(ms), count(ms) FROM t", "SELECT max(ts), count(*) FROM t WHERE code > 100"] {
            let plan = plan_of(db.session(), &format!("EXPLAIN {sql}")).await;
            assert!(plan.contains("TrafficScan"), "{plan}");
            assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await, "{sql}");
        }
        // After a DELETE the statistics are the new rows'.
        for d in [
            "DELETE FROM t WHERE code > 400 OR host = 'h5'",
            "DELETE FROM t WHERE ts > CAST('2024-01-02' AS TIMESTAMP)",
        ] {
            db.sql(d).await.unwrap();
            reference.sql(d).await.unwrap().collect().await.unwrap();
            assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await, "after {d}");
        }
    });
}

#[test]
fn bounds_from_scalar_subqueries_prune() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let (db, reference) = both(dir.path()).await;
        for sql in [
            "SELECT count(*), min(ts), max(code) FROM t WHERE ts >= (SELECT max(ts) FROM t) - INTERVAL '1 hour'",
            "SELECT host, count(*) FROM t WHERE ts < (SELECT min(ts) FROM t WHERE host = 'h2') + INTERVAL '3 hours' \
             AND code > (SELECT avg(code) FROM t) GROUP BY host ORDER BY host",
            "SELECT count(*) FROM t WHERE ts > (SELECT max(ts) FROM t WHERE code > 1000)",
        ] {
            assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await, "{sql}");
        }
        // The newest hour: the older row groups are skipped once the subquery has run (its value is
        // in the pruning predicate at run time).
        let sql = "EXPLAIN ANALYZE SELECT count(*) FROM t WHERE ts >= (SELECT max(ts) FROM t) - INTERVAL '1 hour'";
        let plan = plan_of(db.session(), sql).await;
        let pruned = metric(&plan, "row_groups_pruned_at_run_time");
        assert!(pruned >= 2.0, "{plan}");
    });
}

#[test]
fn filters_taken_over_by_the_scan_give_datafusions_rows() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let (db, reference) = both(dir.path()).await;
        let ours = db.session();
        let explain = plan_of(ours, "EXPLAIN SELECT count(*) FROM t WHERE code > 3").await;
        assert!(explain.contains("filters=[") && !explain.contains("FilterExec"), "{explain}");
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut compared, mut with_rows) = (0, 0);
        for i in 0..300 {
            let p = predicate(&mut r, 0);
            let sql = match i % 3 {
                0 => format!("SELECT count(*), count(ms), sum(code), min(ts), max(host) FROM t WHERE {p}"),
                1 => format!("SELECT host, count(*), avg(ms) FROM t WHERE {p} GROUP BY host ORDER BY host"),
                _ => format!("SELECT ts, host, code FROM t WHERE {p} ORDER BY ts DESC, host LIMIT 7"),
            };
            let expected = answer(&reference, &sql).await;
            let got = answer(ours, &sql).await;
            assert_eq!(got, expected, "{sql}");
            compared += 1;
            if expected.as_ref().is_ok_and(|rows| rows.iter().any(|row| !row.starts_with("0|"))) {
                with_rows += 1;
            }
        }
        assert!(with_rows > 150, "too few predicates matched rows: {with_rows} of {compared}");
    });
}

/// Newest first under a TopK, a large row group's newest rows are read first and the rest through the
/// TopK's threshold: the same rows as DataFusion's, with fewer decoded.
#[test]
fn newest_first_reads_large_row_groups_newest_slice_first() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = trafficdb::Database::open(dir.path()).await.unwrap();
        db.sql(&format!("CREATE TABLE t ({COLUMNS}) WITH (time_column = 'ts', partition = '6 hours')")).await.unwrap();
        let reference = SessionContext::new();
        reference.sql(&format!("CREATE TABLE t ({COLUMNS})")).await.unwrap().collect().await.unwrap();
        // One row a second for 12 hours: two row groups of 21,600 rows.
        let dense = insert(0, 43_200).replace("v * 37", "v");
        db.sql(&dense).await.unwrap();
        reference.sql(&dense).await.unwrap().collect().await.unwrap();
        db.flush().unwrap();
        for sql in [
            "SELECT ts, host, code FROM t ORDER BY ts DESC LIMIT 100",
            "SELECT ts, host, code FROM t ORDER BY ts DESC, host LIMIT 100",
            "SELECT ts, host, code FROM t WHERE code % 7 = 1 ORDER BY ts DESC, code DESC LIMIT 100",
            "SELECT ts, host, code FROM t WHERE ok ORDER BY ts DESC, host LIMIT 9000",
            "SELECT ts, host, code FROM t ORDER BY ts DESC LIMIT 30000",
            "SELECT ts, host FROM t WHERE host IS NULL ORDER BY ts DESC, host LIMIT 5",
        ] {
            assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await, "{sql}");
        }
        let plan = plan_of(db.session(), "EXPLAIN ANALYZE SELECT * FROM t ORDER BY ts DESC LIMIT 100").await;
        let decoded = metric(&plan, "rows_decoded");
        assert!(decoded > 0.0 && decoded < 21_600.0, "decoded {decoded} rows: {plan}");
    });
}

/// Grouping by low-cardinality text runs on integer codes (`query::symbols`): the groups are
/// DataFusion's, over row groups stored as dictionaries, a plain (high-cardinality) row group and
/// memtable rows, with NULL keys, filters on the key itself, HAVING, top-N and keys the aggregates
/// also read (those stay text).
#[test]
fn group_by_text_on_codes_gives_datafusions_groups() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = trafficdb::Database::open(dir.path()).await.unwrap();
        let columns = "ts TIMESTAMP NOT NULL, k TEXT, g TEXT, n INT";
        db.sql(&format!("CREATE TABLE s ({columns}) WITH (time_column = 'ts', partition = '6 hours')")).await.unwrap();
        let reference = SessionContext::new();
        reference.sql(&format!("CREATE TABLE s ({columns})")).await.unwrap().collect().await.unwrap();
        let rows = |first: i64, n: i64, k: &str| {
            format!(
                "INSERT INTO s SELECT CAST(to_timestamp_seconds(1704067200 + v * 11) AS TIMESTAMP), \
                 CASE WHEN v % 17 = 0 THEN NULL ELSE {k} END, 'g' || (v % 3), CAST(v % 101 AS INT) \
                 FROM generate_series({first}, {}) AS g(v)",
                first + n - 1
            )
        };
        for (sql, flush) in [
            (rows(0, 3000, "'k' || (v % 5)"), true),
            (rows(3000, 1000, "'unique-' || v"), true),
            (rows(4000, 600, "'k' || (v % 7)"), false),
        ] {
            db.sql(&sql).await.unwrap();
            reference.sql(&sql).await.unwrap().collect().await.unwrap();
            if flush {
                db.flush().unwrap();
            }
        }
        let plan = plan_of(db.session(), "EXPLAIN SELECT k, count(*) FROM s GROUP BY k").await;
        assert!(plan.contains("symbols=[k]") && plan.contains("symbol_text("), "{plan}");
        // Grouped by codes and time buckets, the partial aggregate numbers its groups by key.
        assert!(plan.contains("CodeAggregateExec"), "{plan}");
        let plan = plan_of(db.session(), "EXPLAIN SELECT date_trunc('hour', ts), k, avg(n) FROM s GROUP BY 1, 2").await;
        assert!(plan.contains("CodeAggregateExec") && plan.contains("symbols=[k]"), "{plan}");
        for sql in [
            "SELECT k, count(*), sum(n) FROM s GROUP BY k ORDER BY k",
            // Aggregates of every kind over groups indexed by code: DataFusion's groups accumulators,
            // the adapter of the others (DISTINCT, percentiles), FILTER, and no row at all.
            "SELECT k, avg(n), min(n), max(n), min(g), max(g), stddev(n), bool_and(n > 3), count(n) FROM s              GROUP BY k ORDER BY k",
            "SELECT k, count(DISTINCT n), percentile_cont(0.5) WITHIN GROUP (ORDER BY n), median(n) FROM s              GROUP BY k ORDER BY k",
            "SELECT k, count(*) FILTER (WHERE n > 50), sum(n) FILTER (WHERE g = 'g2') FROM s GROUP BY k ORDER BY k",
            "SELECT k, array_agg(n ORDER BY n DESC)[1] FROM s WHERE n > 90 GROUP BY k ORDER BY k",
            "SELECT k, count(*) FROM s WHERE n > 1000 GROUP BY k",
            // count(*) and avg of a Float64 are counted and summed by group without DataFusion's
            // accumulators: NULL arguments, groups with no value (a NULL average), count of a constant.
            "SELECT k, avg(CASE WHEN n > 90 THEN n * 1.5 END), avg(n * 0.5), count(1), count(*) FROM s \
             GROUP BY k ORDER BY k",
            "SELECT date_trunc('minute', ts) AS m, avg(CASE WHEN n > 99 THEN n * 0.25 END), count(*) FROM s \
             GROUP BY m ORDER BY m",
            // Time buckets as keys, alone, with codes, two of them, in a window.
            "SELECT date_trunc('hour', ts) AS h, count(*), avg(n) FROM s GROUP BY h ORDER BY h",
            "SELECT date_trunc('second', ts) AS t, max(n) FROM s WHERE n > 95 GROUP BY t ORDER BY t",
            "SELECT date_trunc('DAY', ts) AS d, date_trunc('minute', ts) AS m, k, count(*), sum(n) FROM s \
             GROUP BY d, m, k ORDER BY d, m, k",
            "SELECT k, date_trunc('minute', ts) AS m, count(*) FROM s WHERE ts >= CAST('2024-01-01 09:00:00' AS TIMESTAMP) \
             AND ts < CAST('2024-01-01 13:30:00' AS TIMESTAMP) GROUP BY k, m ORDER BY k, m",
            "SELECT date_trunc('week', ts) AS w, count(*) FROM s GROUP BY w ORDER BY w",
            "SELECT g, k, count(*) FROM s GROUP BY g, k ORDER BY g, k",
            "SELECT k, date_trunc('hour', ts) AS h, min(n) FROM s WHERE g <> 'g1' GROUP BY k, h ORDER BY k, h",
            "SELECT k, count(*) FROM s WHERE k LIKE 'k%' GROUP BY k HAVING count(*) > 100 ORDER BY count(*) DESC, k",
            "SELECT k, count(*) FROM s WHERE k = 'k3' OR k IS NULL OR n > 99 GROUP BY k ORDER BY k",
            "SELECT k, max(k), count(*) FROM s GROUP BY k ORDER BY k",
            "SELECT g, count(DISTINCT k), count(k) FROM s GROUP BY g ORDER BY g",
            "SELECT k, count(*) FROM s GROUP BY k ORDER BY count(*) DESC, k LIMIT 3",
            "SELECT count(*) FROM (SELECT k, g FROM s GROUP BY k, g) AS x",
            // A top-N on the key itself (DataFusion bounds the aggregate to the first keys in order).
            "SELECT k FROM s GROUP BY k ORDER BY k LIMIT 2",
            "SELECT DISTINCT k FROM s ORDER BY k DESC LIMIT 3",
            "SELECT k, max(n) FROM s GROUP BY k ORDER BY max(n) DESC, k LIMIT 2",
            // Group keys that are expressions of the key keep it text; a key named twice.
            "SELECT k, upper(k), count(*) FROM s GROUP BY k, upper(k) ORDER BY k",
            "SELECT g, CASE WHEN k LIKE 'k%' THEN 'k' ELSE 'other' END AS c, count(*) FROM s GROUP BY g, k, 2 \
             ORDER BY g, c, count(*)",
            "SELECT k, count(*) FROM s GROUP BY k, k ORDER BY k",
            "SELECT upper(k) AS u, count(*) FROM s WHERE ts < CAST('2024-01-01 10:00:00' AS TIMESTAMP) GROUP BY k \
             ORDER BY u",
        ] {
            assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await, "{sql}");
        }
        // A small first flush stores even unique values as a dictionary; the large row group after it
        // decides: an id column is not grouped on codes.
        db.sql("CREATE TABLE u (ts TIMESTAMP NOT NULL, id TEXT) WITH (time_column = 'ts')").await.unwrap();
        for (first, n) in [(0, 10), (10, 5000)] {
            db.sql(&format!(
                "INSERT INTO u SELECT CAST(to_timestamp_seconds(1704067200 + v) AS TIMESTAMP), 'id-' || v \
                 FROM generate_series({first}, {}) AS g(v)",
                first + n - 1
            ))
            .await
            .unwrap();
            db.flush().unwrap();
        }
        let plan = plan_of(db.session(), "EXPLAIN SELECT id, count(*) FROM u GROUP BY id").await;
        assert!(!plan.contains("symbols="), "{plan}");
        // Time buckets over a span too long to number (by second, minute and hour over 130 years: a
        // product past 2^64) stay DataFusion's; days over the same span are numbered.
        let columns = "ts TIMESTAMP NOT NULL, n INT";
        db.sql(&format!("CREATE TABLE v ({columns}) WITH (time_column = 'ts')")).await.unwrap();
        reference.sql(&format!("CREATE TABLE v ({columns})")).await.unwrap().collect().await.unwrap();
        let rows = "INSERT INTO v VALUES (CAST('1970-01-01 00:00:01' AS TIMESTAMP), 1), \
                    (CAST('2100-01-01 00:00:00' AS TIMESTAMP), 2), (CAST('2100-01-01 00:00:00.5' AS TIMESTAMP), 3)";
        db.sql(rows).await.unwrap();
        reference.sql(rows).await.unwrap().collect().await.unwrap();
        db.flush().unwrap();
        for (sql, numbered) in [
            (
                "SELECT date_trunc('second', ts) AS s, date_trunc('minute', ts) AS m, date_trunc('hour', ts) AS h, \
                 sum(n) FROM v GROUP BY s, m, h ORDER BY s",
                false,
            ),
            ("SELECT date_trunc('day', ts) AS d, sum(n) FROM v GROUP BY d ORDER BY d", true),
        ] {
            let plan = plan_of(db.session(), &format!("EXPLAIN {sql}")).await;
            assert_eq!(plan.contains("CodeAggregateExec"), numbered, "{plan}");
            assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await, "{sql}");
        }
    });
}

/// A row group whose statistics prove every row passes the filter is read without it (its times are
/// not decoded to be compared); the rows are DataFusion's, NULLs and partial row groups included.
#[test]
fn row_groups_inside_a_range_skip_the_row_filter() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let (db, reference) = both(dir.path()).await;
        for sql in [
            "SELECT count(*), sum(code), max(host) FROM t WHERE ts >= CAST('2024-01-01 06:00:00' AS TIMESTAMP) \
             AND ts < CAST('2024-01-02 06:00:00' AS TIMESTAMP)",
            "SELECT host, count(*) FROM t WHERE ts > CAST('2024-01-01 03:00:00' AS TIMESTAMP) AND code > 3 \
             GROUP BY host ORDER BY host",
            "SELECT count(*), min(code) FROM t WHERE code >= 0 AND code <= 499",
            "SELECT count(*) FROM t WHERE ts <= CAST('2024-01-01 05:59:59' AS TIMESTAMP) AND ms > 3",
            "SELECT count(*), count(host) FROM t WHERE NOT host IS NULL AND ts IS NOT NULL",
        ] {
            assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await, "{sql}");
        }
        let plan = plan_of(
            db.session(),
            "EXPLAIN ANALYZE SELECT count(*), sum(code) FROM t WHERE ts >= CAST('2024-01-01 06:00:00' AS TIMESTAMP) \
             AND ts < CAST('2024-01-02 06:00:00' AS TIMESTAMP)",
        )
        .await;
        assert!(metric(&plan, "row_groups_matched_by_statistics") >= 2.0, "{plan}");
        // `ts` is NOT NULL: every row group passes `ts IS NOT NULL`; `host` has NULLs in each.
        let plan =
            plan_of(db.session(), "EXPLAIN ANALYZE SELECT count(*) FROM t WHERE ts IS NOT NULL AND code > 0").await;
        assert_eq!(metric(&plan, "row_groups_matched_by_statistics"), 0.0, "{plan}");
        let plan = plan_of(db.session(), "EXPLAIN ANALYZE SELECT sum(code) FROM t WHERE NOT ts IS NULL").await;
        assert!(metric(&plan, "row_groups_matched_by_statistics") >= 3.0, "{plan}");
        // `code` has NULLs in every row group: a range on it proves nothing.
        let plan =
            plan_of(db.session(), "EXPLAIN ANALYZE SELECT count(*) FROM t WHERE code >= 0 AND code <= 499").await;
        assert_eq!(metric(&plan, "row_groups_matched_by_statistics"), 0.0, "{plan}");
    });
}

/// A bound on a truncated time bounds the time itself: `date_trunc('hour', ts) = x` in a WHERE
/// prunes row groups when the plan is made, and a join on truncated times prunes with the bounds the
/// join's build side pushes down at run time; the rows are DataFusion's.
#[test]
fn bounds_on_truncated_times_prune() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let (db, reference) = both(dir.path()).await;
        for sql in [
            "SELECT count(*), min(ts), max(ts) FROM t WHERE date_trunc('hour', ts) = CAST('2024-01-01 05:00:00' AS TIMESTAMP)",
            "SELECT count(*) FROM t WHERE date_trunc('minute', ts) >= CAST('2024-01-01 20:00:00' AS TIMESTAMP) \
             AND date_trunc('day', ts) < CAST('2024-01-02' AS TIMESTAMP)",
            "SELECT count(*) FROM t WHERE CAST('2024-01-01 03:00:00' AS TIMESTAMP) > date_trunc('hour', ts)",
            "SELECT count(*) FROM t WHERE date_trunc('month', ts) <= CAST('2024-01-01' AS TIMESTAMP)",
            "SELECT e.host, e.h, e.n, count(*) FROM (SELECT host, date_trunc('hour', ts) AS h, count(*) AS n FROM t \
             WHERE ts >= CAST('2024-01-01 10:00:00' AS TIMESTAMP) AND ts < CAST('2024-01-01 12:00:00' AS TIMESTAMP) \
             GROUP BY host, date_trunc('hour', ts)) e JOIN t m ON m.host = e.host AND date_trunc('hour', m.ts) = e.h \
             GROUP BY e.host, e.h, e.n ORDER BY e.host, e.h",
        ] {
            assert_eq!(answer(db.session(), sql).await, answer(&reference, sql).await, "{sql}");
        }
        let plan = plan_of(
            db.session(),
            "EXPLAIN SELECT count(*) FROM t WHERE date_trunc('hour', ts) = CAST('2024-01-01 05:00:00' AS TIMESTAMP)",
        ).await;
        assert!(plan.contains("row_groups=1/"), "{plan}");
        let plan = plan_of(
            db.session(),
            "EXPLAIN ANALYZE SELECT count(*) FROM (SELECT date_trunc('hour', ts) AS h FROM t \
             WHERE ts >= CAST('2024-01-01 10:00:00' AS TIMESTAMP) AND ts < CAST('2024-01-01 11:00:00' AS TIMESTAMP) \
             GROUP BY 1) e JOIN t m ON date_trunc('hour', m.ts) = e.h",
        )
        .await;
        assert!(metric(&plan, "row_groups_pruned_at_run_time") >= 2.0, "{plan}");
    });
}

/// Rows from `first` on, ten a second, forty hosts, for a table clustered by `host, code`.
fn insert_dense(table: &str, first: i64, n: i64) -> String {
    format!(
        "INSERT INTO {table} SELECT CAST(to_timestamp_micros(1704067200000000 + v * 100000) AS TIMESTAMP), \
         CASE WHEN v % 97 = 0 THEN NULL ELSE 'h' || (v % 40) END, \
         CASE WHEN v % 11 = 0 THEN NULL ELSE CAST(v % 500 AS INT) END, (v % 89) * 1.5, v % 3 = 0 \
         FROM generate_series({first}, {}) AS g(v)",
        first + n - 1
    )
}

/// A table clustered by a sort key (rows of one key together inside runs of the time order) gives the
/// rows DataFusion gives over the same data — after inserts and a flush, a bulk load, a DELETE and an
/// UPDATE — under random filters, group-bys and newest-first limits; and a filter on the key reads few
/// of its row groups.
#[test]
fn clustered_tables_give_datafusions_rows_and_key_filters_read_few_row_groups() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = trafficdb::Database::open(dir.path()).await.unwrap();
        db.sql(&format!(
            "CREATE TABLE t ({COLUMNS}) WITH (time_column = 'ts', partition = '1 day', sort_key = 'host, code')"
        ))
        .await
        .unwrap();
        let reference = SessionContext::new();
        reference.sql(&format!("CREATE TABLE t ({COLUMNS})")).await.unwrap().collect().await.unwrap();
        // 600,000 rows through the WAL and a flush, then 600,000 older and newer ones as a bulk load.
        let sql = insert_dense("t", 0, 600_000);
        db.sql(&sql).await.unwrap();
        reference.sql(&sql).await.unwrap().collect().await.unwrap();
        db.flush().unwrap();
        reference.sql(&format!("CREATE TABLE staged ({COLUMNS})")).await.unwrap().collect().await.unwrap();
        for (first, n) in [(600_000, 500_000), (-100_000, 100_000)] {
            let sql = insert_dense("staged", first, n);
            reference.sql(&sql).await.unwrap().collect().await.unwrap();
            reference.sql(&insert_dense("t", first, n)).await.unwrap().collect().await.unwrap();
        }
        let t = db.engine().table("t").unwrap();
        let mut load = db.engine().bulk_load(&t).unwrap();
        for b in reference.sql("SELECT * FROM staged").await.unwrap().collect().await.unwrap() {
            load.push(&b).unwrap();
        }
        assert_eq!(load.commit().unwrap(), 600_000);
        let check = |db: &trafficdb::Database, reference: &SessionContext, seed: u64| {
            let (ours, reference) = (db.session().clone(), reference.clone());
            async move {
                let mut r = Rng(seed);
                for i in 0..60 {
                    let p = predicate(&mut r, 0);
                    let sql = match i % 3 {
                        0 => format!("SELECT count(*), count(ms), sum(code), min(ts), max(host) FROM t WHERE {p}"),
                        1 => format!("SELECT host, count(*), max(ms) FROM t WHERE {p} GROUP BY host ORDER BY host"),
                        _ => format!("SELECT ts, host, code FROM t WHERE {p} ORDER BY ts DESC, host LIMIT 7"),
                    };
                    assert_eq!(answer(&ours, &sql).await, answer(&reference, &sql).await, "{sql}");
                }
                for sql in [
                    "SELECT ts, host, code FROM t ORDER BY ts DESC LIMIT 5",
                    "SELECT ts, host, code FROM t ORDER BY ts LIMIT 5",
                    "SELECT count(*), min(ts), max(ts) FROM t",
                    "SELECT host, min(ts), max(ts), count(*) FROM t GROUP BY host ORDER BY host",
                ] {
                    assert_eq!(answer(&ours, sql).await, answer(&reference, sql).await, "{sql}");
                }
            }
        };
        check(&db, &reference, 0x2545_F491_4F6C_DD1D).await;
        for sql in ["DELETE FROM t WHERE code > 400 OR host = 'h5'", "UPDATE t SET code = code + 1 WHERE host = 'h7'"] {
            db.sql(sql).await.unwrap();
            reference.sql(sql).await.unwrap().collect().await.unwrap();
        }
        check(&db, &reference, 0x9E37_79B9_7F4A_7C15).await;
        // A key filter reads the key's own row groups: a few per run of the time order.
        let all = metric(&plan_of(db.session(), "EXPLAIN ANALYZE SELECT sum(ms) FROM t").await, "row_groups_scanned");
        let plan = plan_of(db.session(), "EXPLAIN ANALYZE SELECT sum(ms) FROM t WHERE host = 'h17'").await;
        let read = metric(&plan, "row_groups_scanned");
        assert!(all >= 60.0 && read * 5.0 <= all, "{read} of {all} row groups read: {plan}");
    });
}
