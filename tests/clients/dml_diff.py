"""Differential DML test: seeded random DELETE and UPDATE statements (subqueries IN / NOT IN / EXISTS /
NOT EXISTS / scalar, correlated or not, NULLs in keys, empty subqueries, USING / FROM, predicates on
text, numbers, times and booleans) run on PostgreSQL 15 and on a trafficdb server side by side; after
every statement the row counts and the whole tables must agree. Rows are in memtables and in sealed
segments (every write flushes first, new rows arrive between writes), and the trafficdb server is
restarted along the way.

Usage: python dml_diff.py TRAFFICDB_BIN [--seed N] [--statements N]
Starts its own PostgreSQL 15 cluster and trafficdb server on free loopback ports. On a difference it
prints the seed, the statement number and the statement, so the run can be replayed.
"""

import argparse
import datetime
import random
import sys

import psycopg

from side_by_side import servers


TABLES = {
    # name: (trafficdb DDL, PostgreSQL DDL)
    "t": ("CREATE TABLE t (ts TIMESTAMP NOT NULL, id BIGINT, g TEXT, v DOUBLE PRECISION, flag BOOLEAN) "
          "WITH (time_column = 'ts', partition = '1 hour')",
          "CREATE TABLE t (ts TIMESTAMP NOT NULL, id BIGINT, g TEXT, v DOUBLE PRECISION, flag BOOLEAN)"),
    "p": ("CREATE TABLE p (id BIGINT, g TEXT, v DOUBLE PRECISION, flag BOOLEAN)",
          "CREATE TABLE p (id BIGINT, g TEXT, v DOUBLE PRECISION, flag BOOLEAN)"),
    "d": ("CREATE TABLE d (k BIGINT, g TEXT, w DOUBLE PRECISION)",
          "CREATE TABLE d (k BIGINT, g TEXT, w DOUBLE PRECISION)"),
}
GROUPS = ["a", "b", "c", "dd", None]
BASE = datetime.datetime(2024, 1, 1)


def maybe(rng, value, p_null=0.15):
    return None if rng.random() < p_null else value


def lit(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, datetime.datetime):
        return "'" + v.strftime("%Y-%m-%d %H:%M:%S") + "'"
    return repr(v)


def new_rows(rng, table, n, next_id):
    rows = []
    for _ in range(n):
        i = maybe(rng, next_id[0] % 30)
        next_id[0] += 1
        g = rng.choice(GROUPS)
        v = maybe(rng, round(rng.uniform(-10, 10), 2))
        flag = maybe(rng, rng.random() < 0.5)
        if table == "t":
            ts = BASE + datetime.timedelta(minutes=rng.randrange(0, 6 * 60))
            rows.append((ts, i, g, v, flag))
        elif table == "p":
            rows.append((i, g, v, flag))
        else:
            rows.append((maybe(rng, rng.randrange(0, 30)), g, maybe(rng, round(rng.uniform(0, 5), 2))))
    return rows


def insert_sql(table, rows):
    return f"INSERT INTO {table} VALUES " + ", ".join("(" + ", ".join(lit(v) for v in r) + ")" for r in rows)


class Generator:
    """Random statements over the target alias `x` (table t or p) and the dimension d."""

    def __init__(self, rng):
        self.rng = rng

    def atom(self, table):
        r = self.rng
        cmp = r.choice(["=", "<>", "<", "<=", ">", ">="])
        choices = [
            lambda: f"x.id {cmp} {r.randrange(0, 30)}",
            lambda: f"x.v {cmp} {round(r.uniform(-10, 10), 1)}",
            lambda: f"x.g = {lit(r.choice(GROUPS[:-1]))}",
            lambda: "x.flag",
            lambda: "NOT x.flag",
            lambda: f"x.{r.choice(['id', 'g', 'v', 'flag'])} IS {r.choice(['', 'NOT '])}NULL",
            lambda: f"x.id IN (SELECT k FROM d{self.sub_where()})",
            lambda: f"x.id NOT IN (SELECT k FROM d{self.sub_where()})",
            lambda: f"x.g IN (SELECT g FROM d{self.sub_where()})",
            lambda: f"{r.choice(['', 'NOT '])}EXISTS (SELECT 1 FROM d WHERE d.k = x.id{self.sub_and()})",
            lambda: f"{r.choice(['', 'NOT '])}EXISTS (SELECT 1 FROM d WHERE d.g = x.g AND d.w > {r.randrange(0, 5)})",
            # min / max, not avg: an average's last bit depends on the order of the additions.
            lambda: f"x.v {cmp} (SELECT {r.choice(['min', 'max'])}(w) FROM d{self.sub_where()})",
            lambda: f"x.id {cmp} (SELECT max(k) FROM d WHERE d.g = x.g)",
            lambda: f"x.id = (SELECT min(k) FROM d WHERE d.k > {r.randrange(0, 40)})",
            lambda: f"x.id % {r.randrange(2, 5)} = {r.randrange(0, 2)}",
            lambda: f"coalesce(x.v, 0) {cmp} {r.randrange(-5, 5)}",
            lambda: f"length(x.g) = {r.randrange(1, 3)}",
            lambda: f"x.id IN ({', '.join(str(r.randrange(0, 30)) for _ in range(r.randrange(1, 4)))})",
            lambda: f"x.v BETWEEN {r.randrange(-10, 0)} AND {r.randrange(0, 10)}",
        ]
        if table == "t":
            choices.append(lambda: f"x.ts {cmp} {lit(BASE + datetime.timedelta(minutes=r.randrange(0, 360)))}")
            choices.append(lambda: f"date_trunc('hour', x.ts) = {lit(BASE + datetime.timedelta(hours=r.randrange(0, 6)))}")
        return r.choice(choices)()

    def sub_where(self):
        r = self.rng
        return r.choice(["", "", " WHERE k IS NOT NULL", f" WHERE w > {r.randrange(0, 5)}",
                         " WHERE k > 100", f" WHERE g = {lit(r.choice(GROUPS[:-1]))}"])

    def sub_and(self):
        r = self.rng
        return r.choice(["", "", " AND d.g = x.g", f" AND d.w < {r.randrange(0, 5)}"])

    def predicate(self, table, depth=0):
        r = self.rng
        if depth >= 2 or r.random() < 0.5:
            return self.atom(table)
        op = r.choice(["AND", "OR"])
        p = f"({self.predicate(table, depth + 1)} {op} {self.predicate(table, depth + 1)})"
        return f"NOT {p}" if r.random() < 0.15 else p

    def assignment(self, table, with_from):
        r = self.rng
        choices = [
            "v = x.v + 1", "g = upper(x.g)", "flag = NOT x.flag", "v = NULL", "id = x.id * 2",
            "g = x.g || '-'", "v = (SELECT max(w) FROM d WHERE d.g = x.g)",
            f"id = {r.randrange(0, 30)}", "v = CASE WHEN x.flag THEN 1 ELSE -1 END",
        ]
        if table == "t":
            choices += ["ts = x.ts + INTERVAL '1 hour'", "ts = x.ts - INTERVAL '90 minutes'"]
        if with_from:
            choices += ["v = d.w", "g = d.g"]
        picked = r.sample(choices, r.randrange(1, 3))
        # One assignment per column.
        seen, out = set(), []
        for a in picked:
            col = a.split(" = ")[0]
            if col not in seen:
                seen.add(col)
                out.append(a)
        return ", ".join(out)

    def statement(self):
        r = self.rng
        table = r.choice(["t", "p"])
        kind = r.choice(["delete", "delete", "update", "update", "delete_using", "update_from"])
        where = self.predicate(table)
        if kind == "delete":
            return f"DELETE FROM {table} AS x WHERE {where}"
        if kind == "delete_using":
            return f"DELETE FROM {table} AS x USING d WHERE x.id = d.k AND {where}"
        if kind == "update":
            return f"UPDATE {table} AS x SET {self.assignment(table, False)} WHERE {where}"
        # d's keys are unique where they join (see `unique_d`), so each target row matches once.
        return f"UPDATE {table} AS x SET {self.assignment(table, True)} FROM d WHERE x.id = d.k AND {where}"


def canon(v):
    if isinstance(v, float):
        return round(v, 6)
    return v


def table_rows(conn, table):
    cols = {"t": "ts, id, g, v, flag", "p": "id, g, v, flag", "d": "k, g, w"}[table]
    rows = conn.execute(f"SELECT {cols} FROM {table}").fetchall()
    return sorted((tuple(canon(v) for v in r) for r in rows), key=repr)


def execute(conn, sql):
    """(rowcount, error class) of a statement."""
    try:
        cur = conn.execute(sql)
        return cur.rowcount, None
    except psycopg.Error as e:
        return None, type(e).__name__ if e.sqlstate is None else e.sqlstate[:2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--statements", type=int, default=2000)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    failures = 0
    checked = 0
    with servers(args.binary, "dml-diff-") as (pg, tdb):
        ref, sut = pg.connect(), tdb.connect()
        next_id = [0]
        for name, (tdb_ddl, pg_ddl) in TABLES.items():
            sut.execute(tdb_ddl)
            ref.execute(pg_ddl)
            n = 12 if name == "d" else 40
            rows = new_rows(rng, name, n, next_id)
            if name == "d":
                # Unique non-NULL keys, so UPDATE ... FROM d matches each target row at most once.
                keys = rng.sample(range(0, 30), n)
                rows = [(maybe(rng, k, 0.1), g, w) for k, (_, g, w) in zip(keys, rows)]
            for c in (ref, sut):
                c.execute(insert_sql(name, rows))
        gen = Generator(rng)
        restart_at = {args.statements // 3, 2 * args.statements // 3}
        for n in range(args.statements):
            if n in restart_at:
                sut.close()
                tdb.stop()
                tdb.start()
                sut = tdb.connect()
            if rng.random() < 0.2:
                table = rng.choice(["t", "p"])
                rows = new_rows(rng, table, rng.randrange(1, 6), next_id)
                for c in (ref, sut):
                    c.execute(insert_sql(table, rows))
            sql = gen.statement()
            want, want_err = execute(ref, sql)
            got, got_err = execute(sut, sql)
            checked += 1
            problem = None
            if (want_err is None) != (got_err is None):
                problem = f"PostgreSQL: {want_err or f'{want} rows'}; trafficdb: {got_err or f'{got} rows'}"
            elif want_err is None and want != got:
                problem = f"row counts differ: PostgreSQL {want}, trafficdb {got}"
            else:
                for table in ("t", "p"):
                    a, b = table_rows(ref, table), table_rows(sut, table)
                    if a != b:
                        only_pg = [r for r in a if r not in b][:5]
                        only_tdb = [r for r in b if r not in a][:5]
                        problem = f"table {table} differs: only in PostgreSQL {only_pg}, only in trafficdb {only_tdb}"
                        break
            if problem:
                failures += 1
                print(f"dml_diff: seed {seed}, statement {n}: {sql}\n  {problem}")
                if failures >= 5:
                    break
                # Carry on from the same state.
                for table in ("t", "p"):
                    sut.execute(f"TRUNCATE TABLE {table}")
                    rows = ref.execute(f"SELECT * FROM {table}").fetchall()
                    if rows:
                        sut.execute(insert_sql(table, rows))
    ok = failures == 0
    print(f"dml_diff (seed {seed}): {checked} statements against PostgreSQL 15, {failures} differences")
    print(f"test result: {'ok' if ok else 'FAILED'}. {1 if ok else 0} passed; {0 if ok else 1} failed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
