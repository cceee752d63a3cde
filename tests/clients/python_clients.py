"""Python PostgreSQL clients against a running trafficdb server.

Usage: python_clients.py HOST PORT
Each client connects, writes with parameters, reads back (text and, where the driver can, binary
results) and reads the catalog the way the driver or ORM does. Prints one line per client and exits
non-zero if any failed.
"""

import asyncio
import datetime as dt
import sys
import traceback

HOST, PORT = sys.argv[1], int(sys.argv[2])
TS = dt.datetime(2024, 1, 1, 12, 0, 0)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def psycopg3():
    import psycopg

    with psycopg.connect(host=HOST, port=PORT, user="py", dbname="trafficdb", autocommit=True) as c:
        c.execute(
            "CREATE TABLE py3 (ts TIMESTAMP NOT NULL, backend TEXT NOT NULL, ms DOUBLE PRECISION, code INT) "
            "WITH (time_column = 'ts')"
        )
        with c.cursor() as cur:
            cur.executemany(
                "INSERT INTO py3 VALUES (%s, %s, %s, %s)",
                [(TS + dt.timedelta(seconds=i), f"b{i % 3}", i * 1.5, 200 + i % 2) for i in range(10)],
            )
        for binary in (False, True):
            with c.cursor(binary=binary) as cur:
                cur.execute("SELECT ts, backend, ms, code FROM py3 WHERE code = %s ORDER BY ts", (201,))
                rows = cur.fetchall()
                check(len(rows) == 5, f"binary={binary}: {rows}")
                check(rows[0] == (TS + dt.timedelta(seconds=1), "b1", 1.5, 201), f"binary={binary}: {rows[0]}")
        # COPY in and out through the driver.
        with c.cursor() as cur:
            with cur.copy("COPY py3 (ts, backend, ms, code) FROM STDIN") as cp:
                cp.write_row((TS + dt.timedelta(minutes=5), "copied", None, 503))
            with cur.copy("COPY (SELECT backend FROM py3 WHERE code = 503) TO STDOUT") as cp:
                out = b"".join(bytes(b) for b in cp)
            check(out == b"copied\n", out)
        # Errors carry SQLSTATEs.
        try:
            c.execute("SELECT nope FROM py3")
            check(False, "no error")
        except psycopg.errors.UndefinedColumn:
            pass
        # Writes report their rows in the command tag, in both protocols (ClientCursor: simple).
        c.execute("CREATE TABLE py3dml (id BIGINT, v TEXT)")
        check(c.execute("INSERT INTO py3dml VALUES (1,'x'),(2,'y'),(3,'z'),(4,'w')").rowcount == 4, "insert rowcount")
        check(c.execute("UPDATE py3dml SET v = upper(v) WHERE id > %s", (2,)).rowcount == 2, "update rowcount")
        cur = c.execute("DELETE FROM py3dml WHERE id IN (SELECT id FROM py3dml WHERE v = %s)", ("Z",))
        check(cur.rowcount == 1 and cur.statusmessage == "DELETE 1", cur.statusmessage)
        cur = c.execute("DELETE FROM py3dml WHERE id = %s RETURNING id, v", (1,))
        check(cur.fetchall() == [(1, "x")] and cur.rowcount == 1, cur.statusmessage)
        with psycopg.ClientCursor(c) as cur:
            cur.execute("UPDATE py3dml SET v = 'q' WHERE id = 2")
            check(cur.rowcount == 1 and cur.statusmessage == "UPDATE 1", cur.statusmessage)
            cur.execute("TRUNCATE TABLE py3dml")
            check(cur.statusmessage == "TRUNCATE TABLE", cur.statusmessage)
            cur.execute("SELECT count(*) FROM py3dml")
            check(cur.fetchone() == (0,), "truncated")
        # A correlated scalar subquery in the select list answers its values, in both protocols.
        c.execute("CREATE TABLE py3hosts (host TEXT, cpu DOUBLE PRECISION)")
        c.execute("CREATE TABLE py3dcs (host TEXT, dc TEXT)")
        c.execute("INSERT INTO py3hosts VALUES ('h1', 0.5), ('h2', 0.7), ('h3', 0.9)")
        c.execute("INSERT INTO py3dcs VALUES ('h1', 'fra'), ('h2', 'ams')")
        sql = "SELECT host, (SELECT dc FROM py3dcs d WHERE d.host = m.host) AS dc FROM py3hosts m ORDER BY host"
        want = [("h1", "fra"), ("h2", "ams"), ("h3", None)]
        check(c.execute(sql).fetchall() == want, "scalar subquery, extended protocol")
        with psycopg.ClientCursor(c) as cur:
            cur.execute(sql)
            check(cur.fetchall() == want, "scalar subquery, simple protocol")
        # More than one row is an error, as in PostgreSQL.
        c.execute("INSERT INTO py3dcs VALUES ('h1', 'par')")
        try:
            c.execute(sql).fetchall()
            check(False, "no error for two rows")
        except psycopg.errors.CardinalityViolation:
            pass


def psycopg2_client():
    import psycopg2

    c = psycopg2.connect(host=HOST, port=PORT, user="py", dbname="trafficdb")
    c.autocommit = True
    cur = c.cursor()
    cur.execute("INSERT INTO py3 VALUES (%s, %s, %s, %s)", (TS + dt.timedelta(hours=1), "p2", 2.5, 200))
    cur.execute("SELECT backend, ms FROM py3 WHERE backend = %s", ("p2",))
    check(cur.fetchall() == [("p2", 2.5)], "psycopg2 read")
    cur.execute("SELECT count(*) FROM py3")
    check(cur.fetchone()[0] == 12, "psycopg2 count")
    c.close()


def asyncpg_client():
    import asyncpg

    async def run():
        c = await asyncpg.connect(host=HOST, port=PORT, user="py", database="trafficdb")
        await c.execute("INSERT INTO py3 VALUES ($1, $2, $3, $4)", TS + dt.timedelta(hours=2), "apg", 3.5, 404)
        rows = await c.fetch("SELECT ts, backend, ms, code FROM py3 WHERE code = $1", 404)
        check(len(rows) == 1 and rows[0]["backend"] == "apg" and rows[0]["ts"] == TS + dt.timedelta(hours=2), rows)
        n = await c.fetchval("SELECT count(*) FROM py3")
        check(n == 13, n)
        await c.close()

    asyncio.run(run())


def pg8000_client():
    import pg8000.native

    c = pg8000.native.Connection(host=HOST, port=PORT, user="py", database="trafficdb")
    rows = c.run("SELECT backend, code FROM py3 WHERE code = :code ORDER BY backend", code=404)
    check(rows == [["apg", 404]], rows)
    c.run("INSERT INTO py3 VALUES (:ts, :b, :ms, :code)", ts=TS + dt.timedelta(hours=3), b="p8", ms=None, code=200)
    check(c.run("SELECT count(*) FROM py3")[0][0] == 14, "pg8000 count")
    c.close()


def sqlalchemy_pandas():
    import pandas as pd
    import sqlalchemy as sa

    eng = sa.create_engine(f"postgresql+psycopg://py@{HOST}:{PORT}/trafficdb")
    with eng.connect() as c:
        c.exec_driver_sql("CREATE VIEW py3_per_backend AS SELECT backend, count(*) AS n FROM py3 GROUP BY backend")
        c.commit()
    insp = sa.inspect(eng)
    check("py3" in insp.get_table_names(), insp.get_table_names())
    check("py3_per_backend" in insp.get_view_names(), insp.get_view_names())
    # Inspector.get_columns needs json_build_object in the catalog query SQLAlchemy 2.1 sends: not
    # yet supported, so the column listing is checked through information_schema, as BI tools read it.
    with eng.connect() as c:
        cols = c.exec_driver_sql(
            "SELECT column_name, is_nullable, data_type FROM information_schema.columns "
            "WHERE table_name = 'py3' ORDER BY ordinal_position"
        ).all()
    check(
        [tuple(r) for r in cols]
        == [
            ("ts", "NO", "timestamp without time zone"),
            ("backend", "NO", "text"),
            ("ms", "YES", "double precision"),
            ("code", "YES", "integer"),
        ],
        cols,
    )
    df = pd.read_sql("SELECT backend, n FROM py3_per_backend ORDER BY backend", eng)
    check(int(df["n"].sum()) == 14, df)
    df = pd.read_sql(sa.text("SELECT ts, ms FROM py3 WHERE code = :c ORDER BY ts"), eng, params={"c": 201})
    check(len(df) == 5 and str(df["ts"].dtype).startswith("datetime64"), df.dtypes)


CLIENTS = [
    ("psycopg 3 (text and binary)", psycopg3),
    ("psycopg2", psycopg2_client),
    ("asyncpg", asyncpg_client),
    ("pg8000", pg8000_client),
    ("SQLAlchemy 2 (table and view listing) + pandas.read_sql", sqlalchemy_pandas),
]

failed = 0
for name, fn in CLIENTS:
    try:
        fn()
        print(f"client {name}: ok")
    except Exception:
        failed += 1
        print(f"client {name}: FAILED")
        traceback.print_exc()
print(f"test result: {'ok' if not failed else 'FAILED'}. {len(CLIENTS) - failed} passed; {failed} failed")
sys.exit(1 if failed else 0)
