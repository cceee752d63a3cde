"""Differential dialect corpus: the statements of tests/pg_dialect/*.sql (one file per category) run on
PostgreSQL 15 and on a trafficdb server side by side, in the simple and in the extended protocol, and the
answers compared as text, the way a client sees them.

For every statement PostgreSQL runs, per protocol:
- *equivalent*: trafficdb answers too, with as many rows, and every value equal once written alike
  (numbers within 1e-9 relative, booleans `t` / `true`, timestamps however their digits are written);
  rows compared in order when the statement has ORDER BY, as a multiset otherwise;
- *same text*: every value byte for byte (the command tag for statements without rows);
- *same names*: the columns named as PostgreSQL names them.
Statements PostgreSQL refuses are counted apart: *refused too* when trafficdb refuses them as well.

A file starts with `-- setup` ... `-- end setup` statements run on both sides before its statements.
Statements end with `;` at the end of a line; `--` lines are comments.

tests/pg_dialect/floor.json holds, per category, the least number of equivalent, same-text,
same-names and refused-too answers (both protocols counted): a run under it fails, so what works keeps working; raise it as answers improve.

Usage: python pg_dialect.py TRAFFICDB_BIN [--report FILE] [--only CATEGORY]
"""

import argparse
import datetime
import json
import math
import os
import re
import sys

import psycopg
from psycopg.pq import DiagnosticField, ExecStatus

from side_by_side import servers

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "pg_dialect")


def parse_file(path):
    """(setup statements, statements) of a corpus file."""
    setup, statements, current, in_setup = [], [], [], False
    for line in open(path, encoding="utf-8"):
        stripped = line.strip()
        if stripped == "-- setup":
            in_setup = True
            continue
        if stripped == "-- end setup":
            in_setup = False
            continue
        if not current and (not stripped or stripped.startswith("--")):
            continue
        current.append(line.rstrip("\n"))
        if stripped.endswith(";"):
            sql = "\n".join(current).strip().rstrip(";").strip()
            (setup if in_setup else statements).append(sql)
            current = []
    return setup, statements


class Answer:
    """What a server answered to one statement: an error (SQLSTATE), a command tag, or rows as text."""

    def __init__(self, result):
        status = result.status
        self.error = None
        self.tag = (result.command_status or b"").decode()
        self.names, self.rows = [], []
        if status == ExecStatus.FATAL_ERROR:
            self.error = (result.error_field(DiagnosticField.SQLSTATE) or b"?????").decode()
            self.message = (result.error_message or b"").decode(errors="replace").strip()
            return
        if status not in (ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK, ExecStatus.EMPTY_QUERY):
            self.error = f"status {status.name}"
            self.message = ""
            return
        self.names = [result.fname(c).decode() for c in range(result.nfields)]
        for r in range(result.ntuples):
            row = []
            for c in range(result.nfields):
                v = result.get_value(r, c)
                row.append(None if v is None else v.decode(errors="replace"))
            self.rows.append(row)

    def show(self):
        if self.error:
            return f"ERROR {self.error}: {self.message.splitlines()[0] if self.message else ''}"
        if not self.names:
            return f"tag {self.tag}"
        rows = self.rows[:4]
        more = f" ... ({len(self.rows)} rows)" if len(self.rows) > 4 else ""
        return f"{self.names} {rows}{more}"


def run(conn, sql, extended):
    pgconn = conn.pgconn
    if extended:
        result = pgconn.exec_params(sql.encode(), [], result_format=0)
    else:
        result = pgconn.exec_(sql.encode())
    # A simple-protocol string of one statement gives one result; libpq returns the last.
    return Answer(result)


TIME = re.compile(r"^\d{2}:\d{2}:\d{2}(\.\d+)?$")
TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}(:?\d{2})?)?$")


def normalize(v):
    """A value written so that equal values are written alike."""
    if v is None:
        return None
    low = v.strip().lower()
    if low in ("t", "true"):
        return True
    if low in ("f", "false"):
        return False
    if low in ("infinity", "inf", "+infinity", "+inf"):
        return math.inf
    if low in ("-infinity", "-inf"):
        return -math.inf
    if low == "nan":
        return "nan"
    try:
        return float(low)
    except ValueError:
        pass
    if TIME.match(v.strip()):
        whole, _, frac = v.strip().partition(".")
        return whole + ("." + frac.rstrip("0") if frac.rstrip("0") else "")
    m = TIMESTAMP.match(v.strip())
    if m:
        date, time, frac, zone = m.group(1), m.group(2), m.group(3) or "", m.group(4) or ""
        frac = (frac + "000000")[:7] if frac else ""
        zone = {"Z": "+00:00"}.get(zone, zone)
        if zone and ":" not in zone:
            zone = zone[:3] + ":" + (zone[3:] or "00")
        try:
            return datetime.datetime.fromisoformat(f"{date} {time}{frac}{zone}")
        except ValueError:
            return v
    return v


def same_value(a, b):
    a, b = normalize(a), normalize(b)
    if isinstance(a, float) and isinstance(b, float) and not isinstance(a, bool) and not isinstance(b, bool):
        if math.isinf(a) or math.isinf(b):
            return a == b
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    if isinstance(a, datetime.datetime) and isinstance(b, datetime.datetime):
        if (a.tzinfo is None) != (b.tzinfo is None):
            return a.replace(tzinfo=None) == b.replace(tzinfo=None)
        return a == b
    return a == b and type(a) is type(b)


def ordered(sql):
    return re.search(r"\border\s+by\b", sql, re.IGNORECASE) is not None


def compare(sql, pg, tdb):
    """(equivalent, same text, same names) of trafficdb's answer against PostgreSQL's."""
    if tdb.error:
        return False, False, False
    if not pg.names:
        return not tdb.names, not tdb.names and pg.tag == tdb.tag, not tdb.names
    if len(pg.rows) != len(tdb.rows) or len(pg.names) != len(tdb.names):
        return False, False, False
    rows_pg, rows_tdb = pg.rows, tdb.rows
    if not ordered(sql):
        key = lambda row: [("" if v is None else str(normalize(v))) for v in row]  # noqa: E731
        rows_pg, rows_tdb = sorted(rows_pg, key=key), sorted(rows_tdb, key=key)
    equivalent = all(same_value(a, b) for ra, rb in zip(rows_pg, rows_tdb) for a, b in zip(ra, rb))
    return equivalent, equivalent and rows_pg == rows_tdb, equivalent and pg.names == tdb.names


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--report", help="write every statement that differs, with both answers, here")
    parser.add_argument("--only", help="run one category")
    parser.add_argument("--write-floor", action="store_true", help="write the counts of this run as the floor")
    args = parser.parse_args()

    files = sorted(f for f in os.listdir(CORPUS) if f.endswith(".sql"))
    if args.only:
        files = [f for f in files if f[:-4] == args.only]
    floor_path = os.path.join(CORPUS, "floor.json")
    floor = json.load(open(floor_path)) if os.path.exists(floor_path) else {}

    report = []
    totals = {}
    with servers(args.binary, "pg-dialect-") as (pg, tdb):
        for name in files:
            category = name[:-4]
            setup, statements = parse_file(os.path.join(CORPUS, name))
            # Each category in a database of its own on PostgreSQL; trafficdb has one, so the setups
            # of all files name different tables.
            with pg.connect() as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {category}")
                admin.execute(f"CREATE DATABASE {category}")
            pconn = psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname=category,
                                    autocommit=True)
            tconn = tdb.connect()
            pconn.execute("SET statement_timeout = '10s'")
            for sql in setup:
                for side, conn in (("PostgreSQL", pconn), ("trafficdb", tconn)):
                    answer = run(conn, sql, extended=False)
                    if answer.error:
                        print(f"{category}: setup failed on {side}: {sql}\n  {answer.show()}")
                        return 1
            counts = {"statements": len(statements), "pg_runs": 0, "pg_refuses": 0, "equivalent": 0, "same": 0,
                      "names": 0, "both_refuse": 0}
            for sql in statements:
                for extended in (False, True):
                    p = run(pconn, sql, extended)
                    t = run(tconn, sql, extended)
                    protocol = "extended" if extended else "simple"
                    if p.error:
                        counts["pg_refuses"] += 1
                        counts["both_refuse"] += bool(t.error)
                        if not t.error:
                            report.append(f"[{category}, {protocol}] PostgreSQL refuses, trafficdb answers\n  {sql}\n"
                                          f"  PostgreSQL: {p.show()}\n  trafficdb:  {t.show()}\n")
                        continue
                    counts["pg_runs"] += 1
                    equivalent, same, names = compare(sql, p, t)
                    counts["equivalent"] += equivalent
                    counts["same"] += same
                    counts["names"] += names
                    if not (same and names):
                        kind = ("other names" if same else "same values, other text") if equivalent else "different"
                        report.append(f"[{category}, {protocol}] {kind}\n  {sql}\n"
                                      f"  PostgreSQL: {p.show()}\n  trafficdb:  {t.show()}\n")
            pconn.close()
            tconn.close()
            totals[category] = counts

    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            f.write("\n".join(report))
    keys = ("equivalent", "same", "names", "both_refuse")
    print("| category | statements | answers PostgreSQL gives (2 protocols) | equivalent | same text | same names "
          "| refusals PostgreSQL gives | refused too |")
    print("|---|---|---|---|---|---|---|---|")
    failed = []
    totals["all"] = {k: sum(c[k] for c in totals.values()) for k in ("statements", "pg_runs", "pg_refuses") + keys}
    for category, c in totals.items():
        runs = c["pg_runs"]
        shown = " | ".join(f"{c[k]} ({100 * c[k] / runs:.0f} %)" if runs else "0" for k in keys[:3])
        refused = f"{c['both_refuse']} ({100 * c['both_refuse'] / c['pg_refuses']:.0f} %)" if c["pg_refuses"] else "0"
        print(f"| {category} | {c['statements']} | {runs} | {shown} | {c['pg_refuses']} | {refused} |")
        least = floor.get(category, {})
        for key in keys:
            if c[key] < least.get(key, 0):
                failed.append(f"{category}: {key} {c[key]} under the floor {least[key]}")
    if args.write_floor:
        merged = dict(floor)
        merged.update({k: {key: v[key] for key in keys} for k, v in totals.items() if k != "all"})
        with open(floor_path, "w") as f:
            json.dump(merged, f, indent=2, sort_keys=True)
            f.write("\n")
    for line in failed:
        print(line)
    checks = len(floor) or 1
    print(f"test result: {'ok' if not failed else 'FAILED'}. {checks - min(len(failed), checks)} passed; "
          f"{len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
