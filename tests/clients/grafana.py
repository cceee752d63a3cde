"""Grafana's PostgreSQL data source against a running trafficdb server, through psycopg 3.

Usage: grafana.py HOST PORT

Sends what Grafana sends (public/app/plugins/datasource/grafana-postgresql-datasource/
postgresMetaQuery.ts for the query builder's metadata, pkg/tsdb/grafana-postgresql-datasource/
macros.go for the macros, pgx's Ping for "Save & test") and checks the answers, in text and in
binary results as pgx reads them. Prints one line per check and a `test result:` line; exits
non-zero if any failed.
"""

import datetime as dt
import math
import os
import sys
import traceback

import psycopg
from psycopg import pq

HOST, PORT = sys.argv[1], int(sys.argv[2])
TABLE = "gf_req"
# PostgreSQL itself (to check the script) has no time column option: GRAFANA_TABLE_OPTIONS="" there.
TABLE_OPTIONS = os.environ.get("GRAFANA_TABLE_OPTIONS", " WITH (time_column = 'ts')")
T0 = dt.datetime(2024, 1, 1, 12, 0, 0)
ROWS = [(T0 + dt.timedelta(seconds=30 * i), f"b{i % 3}", 10.0 + (i % 7) * 2.5, 503 if i % 11 == 0 else 200) for i in range(120)]
# The dashboard's time range: 12:00:00 to 12:30:00 UTC, as macros.go formats it (RFC 3339).
FROM, TO = T0, T0 + dt.timedelta(minutes=30)
FROM_S, TO_S = "2024-01-01T12:00:00Z", "2024-01-01T12:30:00Z"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def connect():
    return psycopg.connect(host=HOST, port=PORT, user="grafana", dbname="trafficdb", autocommit=True)


def setup():
    with connect() as c:
        c.execute(f"DROP TABLE IF EXISTS {TABLE}")
        c.execute(
            f"CREATE TABLE {TABLE} (ts TIMESTAMP NOT NULL, backend TEXT, ms DOUBLE PRECISION, status INT){TABLE_OPTIONS}"
        )
        with c.cursor() as cur:
            cur.executemany(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s)", ROWS)


# -- postgresMetaQuery.ts ----------------------------------------------------------------------


def schema_constraint():
    return """
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"""


GET_VERSION = "SELECT current_setting('server_version_num')::int/100 as version"
GET_TIMESCALEDB_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
SHOW_SCHEMAS = """SELECT schema_name AS "name"
    FROM information_schema.schemata
    WHERE schema_name NOT IN ('information_schema',
                              'pg_catalog',
                              'pg_toast',
                              '_timescaledb_cache',
                              '_timescaledb_catalog',
                              '_timescaledb_internal',
                              '_timescaledb_config',
                              'timescaledb_information',
                              'timescaledb_experimental')
    ORDER BY schema_name"""


def show_tables(schema=None):
    if schema:
        part = "'" + schema.replace("'", "''") + "'"
        return f"""SELECT quote_ident(table_name) AS "table"
      FROM information_schema.tables
      WHERE quote_ident(table_schema) = {part}
      ORDER BY 1"""
    return f"""SELECT
    CASE WHEN {schema_constraint()}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {schema_constraint()} THEN 0 ELSE 1 END, 1"""


def get_schema(table):
    part = "'" + table.replace("'", "''") + "'"
    return f"""SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident({part}),1) = 2
        THEN quote_ident(table_schema) = (parse_ident({part}))[1]
          AND quote_ident(table_name) = (parse_ident({part}))[2]
        ELSE quote_ident(table_name) = {part}
          AND {schema_constraint()}
      END"""


# -- macros.go -----------------------------------------------------------------------------------


def time_filter(col):
    return f"{col} BETWEEN '{FROM_S}' AND '{TO_S}'"


def time_group(col, seconds):
    return f"floor(extract(epoch from {col})/{seconds})*{seconds}"


def time_group_alias(col, seconds):
    return time_group(col, seconds) + ' AS "time"'


# -- checks --------------------------------------------------------------------------------------


def check_health():
    """"Save & test": pgx's Ping sends `-- ping` as a simple query (an empty query to the server)."""
    with connect() as c:
        r = c.pgconn.exec_(b"-- ping")
        check(r.status == pq.ExecStatus.EMPTY_QUERY, f"-- ping: {r.status!r} {r.error_message!r}")
        r = c.pgconn.exec_(b";")
        check(r.status == pq.ExecStatus.EMPTY_QUERY, f"';': {r.status!r} {r.error_message!r}")


def check_metadata():
    with connect() as c:
        version = c.execute(GET_VERSION).fetchone()[0]
        check(isinstance(version, int) and version >= 903, f"version {version!r}")
        check(c.execute(GET_TIMESCALEDB_VERSION).fetchall() == [], "timescaledb is not installed here")
        schemas = [r[0] for r in c.execute(SHOW_SCHEMAS)]
        check("public" in schemas and "pg_catalog" not in schemas, schemas)
        tables = [r[0] for r in c.execute(show_tables())]
        check(TABLE in tables, tables)
        check(all("." not in t for t in tables), f"tables on the search path are unqualified: {tables}")
        tables = [r[0] for r in c.execute(show_tables("public"))]
        check(TABLE in tables and tables == sorted(tables), tables)
        want = [("ts", "timestamp without time zone"), ("backend", "text"), ("ms", "double precision"), ("status", "integer")]
        for name in (TABLE, f"public.{TABLE}"):
            cols = c.execute(get_schema(name)).fetchall()
            check(sorted(cols) == sorted(want), f"{name}: {cols}")
        check(c.execute(get_schema("no_such_table")).fetchall() == [], "columns of a missing table")


def grouped(rows, seconds):
    out = {}
    for ts, backend, ms, status in rows:
        epoch = (ts - dt.datetime(1970, 1, 1)).total_seconds()
        out.setdefault(math.floor(epoch / seconds) * seconds, []).append(ms)
    return out


def in_range(rows):
    return [r for r in rows if FROM <= r[0] <= TO]


def check_time_series():
    """Panels as the query builder writes them and the macros expand, text and binary results."""
    for binary in (False, True):
        with connect() as c, c.cursor(binary=binary) as cur:
            # Time series: $__timeGroupAlias(ts, 1m), avg(ms) ... WHERE $__timeFilter(ts) GROUP BY 1 ORDER BY 1
            cur.execute(
                f'SELECT {time_group_alias("ts", 60)}, avg(ms) AS "ms" FROM {TABLE} '
                f"WHERE {time_filter('ts')} GROUP BY 1 ORDER BY 1"
            )
            check([d.name for d in cur.description] == ["time", "ms"], cur.description)
            got = [(float(t), ms) for t, ms in cur.fetchall()]
            want = sorted((t, sum(v) / len(v)) for t, v in grouped(in_range(ROWS), 60).items())
            check(len(got) == len(want) == 31, f"{len(got)} buckets")
            check(all(g[0] == w[0] and abs(g[1] - w[1]) < 1e-9 for g, w in zip(got, want)), f"binary={binary}: {got[:3]} {want[:3]}")

            # One series per backend: $__timeGroupAlias(ts, 5m), backend AS metric, count(*)
            cur.execute(
                f'SELECT {time_group_alias("ts", 300)}, backend AS metric, count(*) AS "value" FROM {TABLE} '
                f"WHERE {time_filter('ts')} GROUP BY 1, 2 ORDER BY 1, 2"
            )
            got = [(float(t), m, n) for t, m, n in cur.fetchall()]
            want = {}
            for ts, backend, _, _ in in_range(ROWS):
                key = (math.floor((ts - dt.datetime(1970, 1, 1)).total_seconds() / 300) * 300, backend)
                want[key] = want.get(key, 0) + 1
            check(got == [(t, m, n) for (t, m), n in sorted(want.items())], f"binary={binary}: {got[:4]}")

            # Raw rows: $__time(ts), $__timeEpoch(ts), $__timeFrom() / $__timeTo() as bounds.
            cur.execute(
                f'SELECT ts AS "time", extract(epoch from ts) as "epoch", ms FROM {TABLE} '
                f"WHERE ts >= '{FROM_S}' AND ts < '{TO_S}' AND status = 503 ORDER BY 1"
            )
            got = cur.fetchall()
            want = [r for r in ROWS if FROM <= r[0] < TO and r[3] == 503]
            check([g[0] for g in got] == [w[0] for w in want], f"binary={binary}: {got}")
            check(
                [float(g[1]) for g in got] == [(w[0] - dt.datetime(1970, 1, 1)).total_seconds() for w in want],
                f"binary={binary}: {got}",
            )

            # Table panel from the builder: SELECT backend, max(ms) ... GROUP BY backend LIMIT 50
            cur.execute(f"SELECT backend, max(ms) AS \"max\" FROM {TABLE} WHERE {time_filter('ts')} GROUP BY backend ORDER BY backend LIMIT 50")
            got = cur.fetchall()
            want = {}
            for ts, backend, ms, _ in in_range(ROWS):
                want[backend] = max(want.get(backend, ms), ms)
            check(got == sorted(want.items()), f"binary={binary}: {got}")


def check_variable_query():
    """A dashboard variable (`SELECT DISTINCT backend ...`) and its use in a multi-value IN list
    as interpolateVariable quotes it."""
    with connect() as c:
        values = [r[0] for r in c.execute(f"SELECT DISTINCT backend FROM {TABLE} ORDER BY 1")]
        check(values == ["b0", "b1", "b2"], values)
        quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values[:2])
        n = c.execute(f"SELECT count(*) FROM {TABLE} WHERE backend IN ({quoted}) AND {time_filter('ts')}").fetchone()[0]
        check(n == len([r for r in in_range(ROWS) if r[1] in values[:2]]), n)


CHECKS = [
    ("health check (pgx Ping)", check_health),
    ("query builder metadata (postgresMetaQuery.ts)", check_metadata),
    ("time series macros, text and binary", check_time_series),
    ("template variable", check_variable_query),
]


def main():
    try:
        setup()
    except Exception:
        print("client grafana: FAILED to create its table")
        traceback.print_exc()
        print("test result: FAILED. 0 passed; 1 failed")
        return 1
    failed = 0
    for name, fn in CHECKS:
        try:
            fn()
            print(f"client grafana, {name}: ok")
        except Exception:
            failed += 1
            print(f"client grafana, {name}: FAILED")
            traceback.print_exc()
    print(f"test result: {'ok' if not failed else 'FAILED'}. {len(CHECKS) - failed} passed; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
