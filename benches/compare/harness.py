#!/usr/bin/env python3
"""trafficdb side by side with DuckDB, chDB, DataFusion-on-Parquet and PostgreSQL 15, in one run, on the same
generated data (shared/bench/SUITE.md: workloads W1-W3, queries Q01-Q14, its method).

1. `trafficdb generate` writes the data once as Parquet (lb_requests: one day; lb_targets: its health samples);
   DuckDB turns it into CSV chunks for the COPY paths (not timed).
2. W1 bulk ingest, until durable and visible: trafficdb over pgwire (COPY ... CSV on 2 connections, then
   CHECKPOINT), trafficdb as a library (`trafficdb import`, the Parquet files, closed and flushed), DuckDB
   (CREATE TABLE AS read_parquet, CHECKPOINT), chDB (MergeTree INSERT ... SELECT FROM file(Parquet)),
   PostgreSQL (COPY ... CSV on 2 connections, then CHECKPOINT).
3. W2 streaming ingest over pgwire (trafficdb, PostgreSQL): the first rows of lb_requests in ts order, in
   batches of 1k and 10k rows, over 2 connections, as COPY and as multi-row INSERT; rows/s, and the lag from
   a batch's commit to a third connection seeing it (polled).
4. W3: Q01-Q14 (queries.py), a fresh random instance per repetition; a first run, then the median of N;
   client-side timing with every row fetched; every result checked against DuckDB's (a wrong answer voids
   the time).
5. Bytes on disk per row, peak RSS per phase; a JSON file, a Markdown table and a PNG chart.

Usage: see benches/compare/run.sh, which installs what this needs and runs it.
"""

import argparse
import datetime as dt
import decimal
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import queries  # noqa: E402

SCALES = {
    # rows of lb_requests over one day, clients, load balancers, backends
    "smoke": dict(rows=20_000, clients=1_000, lbs=2, backends=8, stream_rows=4_000),
    "sf1m": dict(rows=1_000_000, clients=10_000, lbs=16, backends=64, stream_rows=100_000),
    "sf10m": dict(rows=10_000_000, clients=100_000, lbs=16, backends=64, stream_rows=500_000),
    "sf100m": dict(rows=100_000_000, clients=1_000_000, lbs=16, backends=64, stream_rows=1_000_000),
}
TABLES = ("lb_requests", "lb_targets")
COPY_CHUNK_ROWS = 1_000_000
THREADS = 2


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def du(path, exclude=()):
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in exclude]
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def vm_hwm(pid):
    """Peak resident set size of a process, bytes (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_hwm(pid):
    """Starts a new peak-RSS measurement (writing 5 to clear_refs resets VmHWM)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------
# Results: normalised, compared, hashed.

def norm_value(v):
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day).isoformat(sep=" ")
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float, decimal.Decimal)):
        return float(v)
    return str(v)


def norm_rows(rows, ordered):
    out = [tuple(norm_value(v) for v in r) for r in rows]
    if not ordered:
        out.sort(key=lambda r: tuple((x is None, "" if x is None else str(x)) for x in r))
    return out


def same_value(a, b):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b)) + 1e-9
    return a == b


def compare(got, want):
    """None when equal (floats within 1e-6 relative), else what differs first."""
    if len(got) != len(want):
        return f"{len(got)} rows, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if len(g) != len(w) or not all(same_value(x, y) for x, y in zip(g, w)):
            return f"row {i}: {g!r}, expected {w!r}"
    return None


def digest(rows):
    h = hashlib.md5()
    for r in rows:
        h.update(repr(tuple(f"{x:.6g}" if isinstance(x, float) else x for x in r)).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Embedded systems run in a worker process each, so their memory is their own and measurable.

def _worker(kind, path, parquet, conn):
    try:
        if kind == "duckdb":
            import duckdb
            db = duckdb.connect(path)
            db.execute(f"SET threads = {THREADS}")

            def run(sql):
                return db.execute(sql).fetchall()

            def load():
                for t in TABLES:
                    run(f"CREATE TABLE {t} AS SELECT * FROM read_parquet('{parquet[t]}')")
                run("CHECKPOINT")

            def size():
                return du(os.path.dirname(path)) if os.path.exists(path) else 0
        elif kind == "chdb":
            from chdb import session
            s = session.Session(path)

            def run(sql):
                r = s.query(queries.for_clickhouse(sql) + f" SETTINGS max_threads = {THREADS}", "ArrowTable")
                return [tuple(d.values()) for d in r.to_pylist()]

            def load():
                keys = {"lb_requests": "(lb, backend, ts)", "lb_targets": "(backend, target, ts)"}
                s.query("CREATE DATABASE IF NOT EXISTS bench")
                for t in TABLES:
                    s.query(f"CREATE TABLE {t} ENGINE = MergeTree ORDER BY {keys[t]} "
                            f"SETTINGS allow_nullable_key = 1 "
                            f"AS SELECT * FROM file('{parquet[t]}', Parquet)")
                    s.query(f"OPTIMIZE TABLE {t} FINAL")

            def size():
                return du(path)
        elif kind == "datafusion":
            import datafusion
            cfg = datafusion.SessionConfig().with_target_partitions(THREADS)
            ctx = datafusion.SessionContext(cfg)

            def run(sql):
                rows = []
                for b in ctx.sql(sql).collect():
                    rows.extend(tuple(d.values()) for d in b.to_pylist())
                return rows

            def load():
                for t in TABLES:
                    ctx.register_parquet(t, parquet[t])

            def size():
                return sum(os.path.getsize(parquet[t]) for t in TABLES)
        else:
            raise ValueError(kind)
        conn.send(("ready", os.getpid()))
        while True:
            msg = conn.recv()
            op = msg[0]
            try:
                if op == "load":
                    t0 = time.perf_counter()
                    load()
                    conn.send(("ok", time.perf_counter() - t0))
                elif op == "query":
                    t0 = time.perf_counter()
                    rows = run(msg[1])
                    conn.send(("ok", (time.perf_counter() - t0, rows)))
                elif op == "size":
                    conn.send(("ok", size()))
                elif op == "close":
                    conn.send(("ok", None))
                    return
            except Exception as e:  # reported to the driver, which records the failure
                conn.send(("error", f"{type(e).__name__}: {e}"))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))


class Embedded:
    def __init__(self, kind, path, parquet):
        self.kind = kind
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(kind, path, parquet, child), daemon=True)
        self.proc.start()
        tag, self.pid = self.conn.recv()
        if tag != "ready":
            raise RuntimeError(f"{kind}: {self.pid}")

    def call(self, *msg):
        self.conn.send(msg)
        tag, value = self.conn.recv()
        if tag != "ok":
            raise RuntimeError(value)
        return value

    def load(self):
        return self.call("load")

    def query(self, sql):
        return self.call("query", sql)

    def size(self):
        return self.call("size")

    def close(self):
        try:
            self.call("close")
        finally:
            self.proc.join(10)


# ---------------------------------------------------------------------------------------------------------
# Systems spoken to over pgwire: trafficdb's server and PostgreSQL.

class Pg:
    def __init__(self, kind, port, dbname, user):
        import psycopg
        self.kind, self.port, self.dbname, self.user = kind, port, dbname, user
        self.psycopg = psycopg
        self.conn = self.connect()
        self.backend_pid = None

    def connect(self):
        return self.psycopg.connect(host="127.0.0.1", port=self.port, dbname=self.dbname, user=self.user,
                                    autocommit=True)

    def execute(self, sql):
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else None

    def query(self, sql):
        t0 = time.perf_counter()
        with self.conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        return time.perf_counter() - t0, rows

    def copy_files(self, table, files, connections=2):
        """COPY the CSV files into `table`, spread over `connections` connections; returns when all are
        acknowledged."""
        errors = []

        def work(part):
            try:
                with self.connect() as c, c.cursor() as cur:
                    for f in part:
                        with cur.copy(f"COPY {table} FROM STDIN (FORMAT csv)") as cp, open(f, "rb") as src:
                            while block := src.read(1 << 20):
                                cp.write(block)
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(files[i::connections],)) for i in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]


class Postgres:
    """A PostgreSQL 15 cluster in a temporary directory, on a loopback port, stopped by `stop`."""

    BIN = "/usr/lib/postgresql/15/bin"

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        self.port = free_port()
        os.makedirs(self.dir)
        self.as_pg(f"{self.BIN}/initdb -D {self.dir} -A trust -U postgres --no-sync >/dev/null")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_parallel_workers_per_gather=1 "
                f"-c shared_buffers=1GB -c work_mem=256MB -c max_wal_size=8GB -c jit=off")
        self.as_pg(f"{self.BIN}/pg_ctl -D {self.dir} -o '{opts}' -l {self.dir}/log -w start >/dev/null")

    def as_pg(self, cmd):
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres")
            rc = subprocess.call(["su", "postgres", "-c", cmd])
        else:
            rc = subprocess.call(["sh", "-c", cmd])
        if rc != 0:
            raise RuntimeError(f"failed: {cmd}")

    def stop(self):
        try:
            self.as_pg(f"{self.BIN}/pg_ctl -D {self.dir} -m fast -w stop >/dev/null")
        except RuntimeError:
            pass

    def pids(self):
        """The cluster's processes: the postmaster (its pid file's first line) and its children."""
        try:
            with open(os.path.join(self.dir, "postmaster.pid")) as f:
                main = int(f.readline())
        except (OSError, ValueError):
            return []
        pids = [main]
        for p in os.listdir("/proc"):
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == main:
                        pids.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
        return pids


# The continuous rollups of the load-balancer schema (docs/rollups.md), dropped before loading: the
# peers keep no rollups, so trafficdb is measured on the same work.
DROP_ROLLUPS = ["DROP MATERIALIZED VIEW IF EXISTS rollup_requests_1h", "DROP MATERIALIZED VIEW IF EXISTS rollup_requests_1m"]


class TrafficdbServer:
    def __init__(self, binary, data_dir):
        self.port = free_port()
        self.log = open(data_dir + ".log", "a")
        self.proc = subprocess.Popen([binary, "serve", "-d", data_dir, "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=self.log)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
                if self.proc.poll() is not None:
                    break
        raise RuntimeError("the trafficdb server did not start; see " + self.log.name)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


# ---------------------------------------------------------------------------------------------------------

def generate(binary, scale, out):
    p = SCALES[scale]
    pq = os.path.join(out, "parquet")
    cmd = [binary, "generate", "--rows", str(p["rows"]), "--days", "1", "--seed", "42", "--lbs", str(p["lbs"]),
           "--backends", str(p["backends"]), "--clients", str(p["clients"]), "--output", pq]
    log("$", " ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    gen_s = time.perf_counter() - t0
    parquet = {t: os.path.join(pq, f"{t}.parquet") for t in TABLES}
    # CSV chunks for the COPY paths, written by DuckDB (not timed).
    import duckdb
    con = duckdb.connect()
    csv = {}
    counts = {}
    dims = {}
    for t in TABLES:
        n = con.execute(f"SELECT count(*) FROM read_parquet('{parquet[t]}')").fetchone()[0]
        counts[t] = n
        files = []
        for i, off in enumerate(range(0, n, COPY_CHUNK_ROWS)):
            f = os.path.join(out, "csv", f"{t}.{i:04d}.csv")
            os.makedirs(os.path.dirname(f), exist_ok=True)
            con.execute(f"COPY (SELECT * FROM read_parquet('{parquet[t]}') LIMIT {COPY_CHUNK_ROWS} OFFSET {off}) "
                        f"TO '{f}' (FORMAT csv, HEADER false, TIMESTAMPFORMAT '%Y-%m-%d %H:%M:%S.%f')")
            files.append(f)
        csv[t] = files
    dims["backends"] = [r[0] for r in con.execute(
        f"SELECT DISTINCT backend FROM read_parquet('{parquet['lb_requests']}') ORDER BY 1").fetchall()]
    dims["lbs"] = [r[0] for r in con.execute(
        f"SELECT DISTINCT lb FROM read_parquet('{parquet['lb_requests']}') ORDER BY 1").fetchall()]
    dims["targets"] = [r[0] for r in con.execute(
        f"SELECT DISTINCT target FROM read_parquet('{parquet['lb_targets']}') ORDER BY 1").fetchall()]
    dims["span_hours"] = 24
    con.close()
    return dict(seconds=gen_s, parquet=parquet, csv=csv, counts=counts, dims=dims,
                parquet_bytes={t: os.path.getsize(parquet[t]) for t in TABLES})


def stream_batches(parquet_path, rows, batch):
    """The first `rows` rows of lb_requests in ts order, as (CSV text, INSERT statement) per batch of `batch`."""
    import pyarrow.parquet as pq
    import pyarrow.csv as pacsv
    import io
    table = pq.read_table(parquet_path).slice(0, rows)
    cols = table.column_names
    out = []
    for off in range(0, table.num_rows, batch):
        part = table.slice(off, batch)
        buf = io.BytesIO()
        pacsv.write_csv(part, buf, pacsv.WriteOptions(include_header=False))
        values = []
        for r in part.to_pylist():
            values.append("(" + ", ".join(sql_literal(r[c]) for c in cols) + ")")
        insert = f"INSERT INTO w2_requests ({', '.join(cols)}) VALUES " + ", ".join(values)
        out.append((buf.getvalue(), insert, part.num_rows))
    return out


def sql_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dt.datetime):
        return "'" + v.isoformat(sep=" ") + "'"
    return "'" + str(v).replace("'", "''") + "'"


def run_w2(system, batches, mode, connections=2):
    """Streams the batches over `connections` connections; a third polls count(*) to see when each commit is
    visible. Returns rows/s and the commit-to-visible lag percentiles (ms)."""
    system.execute("DROP TABLE IF EXISTS w2_requests")
    ddl = PG_DDL.split(";")[0].replace("CREATE TABLE lb_requests", "CREATE TABLE w2_requests")
    if system.kind == "trafficdb":
        ddl += " WITH (time_column = 'ts', partition = '1 day')"
    system.execute(ddl)
    acked = []  # (time of ack, rows acked so far in total)
    lock = threading.Lock()
    total = [0]
    done = threading.Event()
    errors = []

    def writer(part):
        try:
            with system.connect() as c, c.cursor() as cur:
                for csv_text, insert, n in part:
                    if mode == "copy":
                        with cur.copy("COPY w2_requests FROM STDIN (FORMAT csv)") as cp:
                            cp.write(csv_text)
                    else:
                        cur.execute(insert)
                    t = time.perf_counter()
                    with lock:
                        total[0] += n
                        acked.append((t, total[0]))
        except Exception as e:
            errors.append(e)

    seen = []  # (time the poll started, count it saw)

    def poller():
        with system.connect() as c, c.cursor() as cur:
            while not done.is_set():
                t = time.perf_counter()
                cur.execute("SELECT count(*) FROM w2_requests")
                seen.append((t, cur.fetchone()[0]))
                time.sleep(0.01)

    p = threading.Thread(target=poller)
    p.start()
    t0 = time.perf_counter()
    ws = [threading.Thread(target=writer, args=(batches[i::connections],)) for i in range(connections)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    elapsed = time.perf_counter() - t0
    time.sleep(0.2)
    done.set()
    p.join()
    if errors:
        raise errors[0]
    rows = sum(b[2] for b in batches)
    lags = []
    for t_ack, cum in acked:
        vis = next((t for t, n in seen if t >= t_ack and n >= cum), None)
        if vis is not None:
            lags.append((vis - t_ack) * 1000)
    lags.sort()
    pct = (lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] if lags else None)
    return dict(rows=rows, seconds=elapsed, rows_per_s=rows / elapsed, lag_ms_p50=pct(0.5), lag_ms_p99=pct(0.99),
                batches=len(batches))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="sf10m")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per query after the first (median reported)")
    ap.add_argument("--systems", default="trafficdb,trafficdb-lib,duckdb,chdb,datafusion,postgres")
    ap.add_argument("--binary", help="the trafficdb binary")
    ap.add_argument("--work", help="scratch directory (data files and databases; removed by run.sh)")
    ap.add_argument("--out", help="directory for the JSON, Markdown and PNG results")
    ap.add_argument("--no-w2", action="store_true", help="skip the streaming-ingest workload")
    ap.add_argument("--seed", type=int, default=7, help="seed of the query instances")
    ap.add_argument("--report", metavar="JSON", help="only render the .md and .png of an earlier run's JSON again")
    args = ap.parse_args()
    systems = args.systems.split(",")
    if args.report:
        # Renders the Markdown and the chart of an earlier run again, from its JSON.
        with open(args.report) as f:
            run = json.load(f)
        base = args.report[:-len(".json")] if args.report.endswith(".json") else args.report
        with open(base + ".md", "w") as f:
            f.write(report(run))
        chart(run, base + ".png")
        log(f"wrote {base}.md, .png")
        return
    if not (args.binary and args.work and args.out):
        ap.error("--binary, --work and --out are needed for a run")
    if "duckdb" not in systems:
        sys.exit("duckdb is the reference every result is checked against: keep it in --systems")
    os.makedirs(args.out, exist_ok=True)
    work = args.work
    os.makedirs(work, exist_ok=True)

    run = dict(scale=args.scale, scale_params=SCALES[args.scale], reps=args.reps, seed=args.seed,
               started=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), machine=machine(args.binary),
               ingest={}, stream={}, storage={}, memory={}, queries={}, failures=[])
    log(f"== generating {args.scale}")
    data = generate(args.binary, args.scale, work)
    run["rows"] = data["counts"]
    run["generate_s"] = data["seconds"]
    run["storage"]["parquet"] = dict(bytes=sum(data["parquet_bytes"].values()), tables=data["parquet_bytes"])
    rows_total = data["counts"]

    handles = {}
    pg_cluster = None
    tdb = None
    try:
        # ---- W1
        if "trafficdb" in systems:
            log("== W1 trafficdb (server, COPY csv on 2 connections)")
            ddir = os.path.join(work, "trafficdb")
            tdb = TrafficdbServer(args.binary, ddir)
            h = Pg("trafficdb", tdb.port, "trafficdb", "postgres")
            # No peer maintains rollups while loading or querying: the schema's are dropped first.
            for stmt in DROP_ROLLUPS:
                h.execute(stmt)
            reset_hwm(tdb.proc.pid)
            res = {}
            for t in TABLES:
                # An acknowledged COPY is durable (fsynced in the WAL) and visible: the time ends there.
                t0 = time.perf_counter()
                h.copy_files(t, data["csv"][t])
                n = h.execute(f"SELECT count(*) FROM {t}")[0][0]
                s = time.perf_counter() - t0
                assert n == rows_total[t], f"trafficdb {t}: {n} rows, expected {rows_total[t]}"
                res[t] = dict(seconds=s, rows_per_s=rows_total[t] / s)
            run["memory"]["trafficdb"] = dict(ingest=vm_hwm(tdb.proc.pid))
            # A restart seals the memtables into segments (the server flushes when it stops), so the
            # queries read what a long-running server would have flushed by then.
            h.conn.close()
            t0 = time.perf_counter()
            tdb.stop()
            res["shutdown_flush_s"] = time.perf_counter() - t0
            run["ingest"]["trafficdb"] = res
            tdb = TrafficdbServer(args.binary, ddir)
            h = Pg("trafficdb", tdb.port, "trafficdb", "postgres")
            handles["trafficdb"] = h
            run["storage"]["trafficdb"] = tdb_storage(ddir)
        if "trafficdb-lib" in systems:
            log("== W1 trafficdb as a library (trafficdb import, Parquet)")
            ldir = os.path.join(work, "trafficdb-lib")
            subprocess.run([args.binary, "sql", "-d", ldir] + [a for stmt in DROP_ROLLUPS for a in ("-c", stmt)],
                           check=True, stdout=subprocess.DEVNULL)
            res = {}
            for t in TABLES:
                t0 = time.perf_counter()
                out = subprocess.run(["/usr/bin/time", "-f", "%M", args.binary, "import", "-d", ldir, t, data["parquet"][t]],
                                     capture_output=True, text=True)
                s = time.perf_counter() - t0
                if out.returncode != 0:
                    raise RuntimeError("trafficdb import: " + out.stderr)
                peak_kb = int(out.stderr.strip().splitlines()[-1])
                res[t] = dict(seconds=s, rows_per_s=rows_total[t] / s, peak_rss=peak_kb * 1024)
                n = subprocess.run([args.binary, "sql", "-d", ldir, "-f", "csv", "-c", f"SELECT count(*) FROM {t}"],
                                   capture_output=True, text=True, check=True).stdout.split()[-1]
                assert int(n) == rows_total[t], f"trafficdb import {t}: {n} rows, expected {rows_total[t]}"
            run["ingest"]["trafficdb-lib"] = res
            run["storage"]["trafficdb-lib"] = tdb_storage(ldir)
        for kind in ("duckdb", "chdb", "datafusion"):
            if kind not in systems:
                continue
            log(f"== W1 {kind}")
            path = os.path.join(work, kind, "db.duckdb" if kind == "duckdb" else "db")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            e = Embedded(kind, path, data["parquet"])
            reset_hwm(e.pid)
            s = e.load()
            for t in TABLES:
                n = e.query(f"SELECT count(*) FROM {t}")[1][0][0]
                assert n == rows_total[t], f"{kind} {t}: {n} rows, expected {rows_total[t]}"
            if kind != "datafusion":
                run["ingest"][kind] = dict(all=dict(seconds=s, rows_per_s=sum(rows_total.values()) / s))
            run["memory"][kind] = dict(ingest=vm_hwm(e.pid))
            run["storage"][kind] = dict(bytes=e.size())
            handles[kind] = e
        if "postgres" in systems:
            log("== W1 PostgreSQL 15 (COPY csv on 2 connections, CHECKPOINT)")
            pg_cluster = Postgres(work)
            h = Pg("postgres", pg_cluster.port, "postgres", "postgres")
            h.execute(PG_DDL)
            res = {}
            for t in TABLES:
                t0 = time.perf_counter()
                h.copy_files(t, data["csv"][t])
                h.execute("CHECKPOINT")
                s = time.perf_counter() - t0
                res[t] = dict(seconds=s, rows_per_s=rows_total[t] / s)
            t0 = time.perf_counter()
            for stmt in PG_INDEXES:
                h.execute(stmt)
            h.execute("VACUUM ANALYZE")
            res["indexes_and_analyze_s"] = time.perf_counter() - t0
            run["ingest"]["postgres"] = res
            sizes = {t: h.execute(f"SELECT pg_total_relation_size('{t}')")[0][0] for t in TABLES}
            run["storage"]["postgres"] = dict(bytes=sum(sizes.values()), tables=sizes,
                                              wal=du(os.path.join(pg_cluster.dir, "pg_wal")))
            handles["postgres"] = h

        # ---- W2
        if not args.no_w2:
            for kind in ("trafficdb", "postgres"):
                if kind not in handles:
                    continue
                res = {}
                for batch in (1_000, 10_000):
                    bs = stream_batches(data["parquet"]["lb_requests"], SCALES[args.scale]["stream_rows"], batch)
                    for mode in ("copy", "insert"):
                        log(f"== W2 {kind} {mode} {batch}-row batches")
                        res[f"{mode}_{batch}"] = run_w2(handles[kind], bs, mode)
                handles[kind].execute("DROP TABLE w2_requests")
                run["stream"][kind] = res

        # ---- W3
        log("== W3 queries")
        if tdb:
            reset_hwm(tdb.proc.pid)
        for kind in handles:
            if isinstance(handles[kind], Embedded):
                reset_hwm(handles[kind].pid)
        rng = queries.seeded(args.seed)
        instances = [queries.instance(rng, data["dims"]) for _ in range(args.reps + 1)]
        order = [k for k in ("trafficdb", "duckdb", "chdb", "datafusion", "postgres") if k in handles]
        for qid in queries.QUERIES:
            qres = {}
            for kind in order:
                qres[kind] = dict(times=[], rows=None, md5=None, error=None)
            for rep, inst in enumerate(instances):
                sql = inst[qid]
                want = None
                for kind in order:
                    r = qres[kind]
                    if r["error"]:
                        continue
                    try:
                        secs, rows = handles[kind].query(sql)
                    except Exception as e:
                        r["error"] = f"{e}"[:500]
                        run["failures"].append(dict(system=kind, query=qid, rep=rep, error=r["error"], sql=sql))
                        log(f"   {qid} {kind}: error {r['error'][:200]}")
                        continue
                    rows = norm_rows(rows, queries.ordered(qid))
                    if kind == "duckdb":
                        want = rows
                    elif want is not None:
                        diff = compare(rows, want)
                        if diff:
                            r["error"] = f"wrong answer (rep {rep}): {diff}"[:500]
                            run["failures"].append(dict(system=kind, query=qid, rep=rep, error=r["error"], sql=sql))
                            log(f"   {qid} {kind}: {r['error'][:300]}")
                            continue
                    r["times"].append(secs)
                    r["rows"] = len(rows)
                    r["md5"] = digest(rows)
            line = []
            for kind in order:
                r = qres[kind]
                ts = r.pop("times")
                if r["error"] or not ts:
                    line.append(f"{kind} FAILED")
                    continue
                r["first_ms"] = ts[0] * 1000
                rest = ts[1:] or ts
                r["median_ms"] = statistics.median(rest) * 1000
                r["min_ms"] = min(rest) * 1000
                line.append(f"{kind} {r['median_ms']:.1f}")
            run["queries"][qid] = qres
            log(f"   {qid}: " + ", ".join(line) + " ms")
        if tdb:
            run["memory"]["trafficdb"]["query"] = vm_hwm(tdb.proc.pid)
        for kind in handles:
            if isinstance(handles[kind], Embedded):
                run["memory"][kind]["query"] = vm_hwm(handles[kind].pid)
        if pg_cluster:
            run["memory"]["postgres"] = dict(query_backend_peak=max(
                (vm_hwm(p) or 0) for p in pg_cluster.pids()), note="largest VmHWM of a PostgreSQL process "
                "(shared_buffers pages it touched included)")
    finally:
        for kind, h in handles.items():
            if isinstance(h, Embedded):
                try:
                    h.close()
                except Exception:
                    pass
        if tdb:
            tdb.stop()
            run["storage"]["trafficdb"] = tdb_storage(os.path.join(work, "trafficdb"))
        if pg_cluster:
            pg_cluster.stop()

    run["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = os.path.join(args.out, f"{args.scale}-{stamp}")
    with open(base + ".json", "w") as f:
        json.dump(run, f, indent=1, default=str)
    md = report(run)
    with open(base + ".md", "w") as f:
        f.write(md)
    chart(run, base + ".png")
    print(md)
    log(f"wrote {base}.json, .md, .png")
    # One line in the form the test script counts: a check per query and system that ran.
    checks = sum(1 for q in run["queries"].values() for r in q.values() if r.get("median_ms") is not None)
    failed = len({(f["system"], f["query"]) for f in run["failures"]})
    print(f"test result: {'ok' if not failed else 'FAILED'}. {checks} passed; {failed} failed (benchmark harness, "
          f"results checked against DuckDB's)")
    if run["failures"]:
        log(f"{len(run['failures'])} failures (errors or wrong answers); see the JSON")
        sys.exit(1)


PG_DDL = """
CREATE TABLE lb_requests (ts TIMESTAMP NOT NULL, lb TEXT NOT NULL, listener TEXT NOT NULL, backend TEXT NOT NULL,
  target TEXT, zone TEXT, client_id TEXT NOT NULL, request_id TEXT NOT NULL, attempt SMALLINT NOT NULL,
  method TEXT NOT NULL, path_template TEXT NOT NULL, lb_status SMALLINT NOT NULL, target_status SMALLINT,
  connect_ms DOUBLE PRECISION, target_ms DOUBLE PRECISION, total_ms DOUBLE PRECISION NOT NULL,
  request_bytes BIGINT NOT NULL, response_bytes BIGINT NOT NULL, timed_out BOOLEAN NOT NULL, response_flags TEXT,
  retry_after INTEGER, is_health_check BOOLEAN NOT NULL);
CREATE TABLE lb_targets (ts TIMESTAMP NOT NULL, lb TEXT NOT NULL, backend TEXT NOT NULL, target TEXT NOT NULL,
  zone TEXT, healthy BOOLEAN NOT NULL, active_conns INTEGER, rejected_conns INTEGER, queue_depth INTEGER,
  weight SMALLINT, ejected BOOLEAN, requests_per_s DOUBLE PRECISION, avg_response_ms DOUBLE PRECISION,
  error_rate DOUBLE PRECISION);
"""
# What a PostgreSQL user would add for these queries: time, and key then time.
PG_INDEXES = [
    "CREATE INDEX ON lb_requests (ts)",
    "CREATE INDEX ON lb_requests (backend, ts)",
    "CREATE INDEX ON lb_targets (target, ts)",
]


def tdb_storage(ddir):
    wal = os.path.join(ddir, "wal")
    tables = {}
    tdir = os.path.join(ddir, "tables")
    if os.path.isdir(tdir):
        for name in os.listdir(tdir):
            tables[name] = du(os.path.join(tdir, name))
    return dict(bytes=du(ddir, exclude=(wal,)), wal=du(wal) if os.path.isdir(wal) else 0, tables=tables)


def machine(binary):
    def cmd(c):
        try:
            return subprocess.run(c, capture_output=True, text=True, shell=True, timeout=30).stdout.strip()
        except Exception as e:
            return str(e)
    versions = {"trafficdb": cmd(f"{binary} --version"), "python": platform.python_version()}
    for mod in ("duckdb", "chdb", "datafusion", "psycopg"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception as e:
            versions[mod] = f"not available ({e})"
    versions["postgres"] = cmd("/usr/lib/postgresql/15/bin/postgres --version")
    return dict(kernel=platform.release(), cpu=cmd("lscpu | grep -E 'Model name|^CPU\\(s\\)' | tr -s ' '"),
                memory=cmd("free -g | awk '/Mem:/ {print $2 \" GiB\"}'"), versions=versions,
                page_cache="warm: every query ran after the load in the same process, caches not dropped")


def fmt_ms(v):
    return "—" if v is None else (f"{v:.1f}" if v < 100 else f"{v:.0f}")


def report(run):
    order = [k for k in ("trafficdb", "duckdb", "chdb", "datafusion", "postgres") if k in next(iter(run["queries"].values()), {})]
    peers = [k for k in order if k != "trafficdb"]
    out = []
    n = run["rows"]
    out.append(f"## {run['scale']}: {n['lb_requests']:,} lb_requests rows, {n['lb_targets']:,} lb_targets rows\n")
    out.append(f"Run {run['started']} → {run['finished']}; {run['reps']} timed runs per query after a first one; "
               f"median ms, client-side, every row fetched; every result checked against DuckDB's.\n")
    m = run["machine"]
    out.append(f"Machine: {', '.join(m['cpu'].splitlines())}; {m['memory']}; Linux {m['kernel']}. Versions: "
               + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + f". Page cache: {m['page_cache']}.\n")
    out.append("| query | " + " | ".join(order) + " | trafficdb / best peer |")
    out.append("|---|" + "---|" * len(order) + "---|")
    for qid, q in run["queries"].items():
        cells = []
        for k in order:
            r = q.get(k, {})
            cells.append("error" if r.get("error") else fmt_ms(r.get("median_ms")))
        ratio = ratio_of(q, peers)
        out.append(f"| {qid} {queries.QUERIES[qid][0]} | " + " | ".join(cells) + f" | {ratio} |")
    out.append("")
    out.append("W1 bulk ingest until durable and visible (rows/s; trafficdb and PostgreSQL per table, DuckDB and chDB "
               "both tables in one load):\n")
    out.append("| system | lb_requests | lb_targets | all |")
    out.append("|---|---|---|---|")
    for k, v in run["ingest"].items():
        row = [f"{v[t]['rows_per_s'] / 1e6:.2f} M" if t in v else "" for t in ("lb_requests", "lb_targets", "all")]
        out.append(f"| {k} | " + " | ".join(row) + " |")
    if run["stream"]:
        out.append("\nW2 streaming ingest over 2 connections (rows/s; commit-to-visible lag p99, ms, polled):\n")
        out.append("| system | COPY 1k | COPY 10k | INSERT 1k | INSERT 10k |")
        out.append("|---|---|---|---|---|")
        for k, v in run["stream"].items():
            cells = []
            for m in ("copy_1000", "copy_10000", "insert_1000", "insert_10000"):
                r = v[m]
                cells.append(f"{r['rows_per_s'] / 1e3:.0f} k (lag {fmt_ms(r['lag_ms_p99'])})")
            out.append(f"| {k} | " + " | ".join(cells) + " |")
    out.append("\nBytes on disk per row (both tables; WAL apart) and peak RSS:\n")
    out.append("| system | bytes / row | peak RSS, ingest | peak RSS, queries |")
    out.append("|---|---|---|---|")
    total_rows = sum(n.values())
    for k, v in run["storage"].items():
        mem = run["memory"].get(k, {})
        if k == "trafficdb-lib":
            mem = dict(ingest=max(x.get("peak_rss", 0) for x in run["ingest"][k].values()))
        if k == "postgres":
            mem = dict(ingest=None, query=mem.get("query_backend_peak"))
        mb = (lambda b: "—" if not b else f"{b / 2**20:.0f} MiB")
        out.append(f"| {k} | {v['bytes'] / total_rows:.1f} | {mb(mem.get('ingest'))} | {mb(mem.get('query'))} |")
    return "\n".join(out) + "\n"


def ratio_of(q, peers):
    t = q.get("trafficdb", {})
    best = [q[p]["median_ms"] for p in peers if p in q and not q[p].get("error") and q[p].get("median_ms")]
    if t.get("error") or not t.get("median_ms") or not best:
        return "—"
    return f"{t['median_ms'] / min(best):.2f}"


def chart(run, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return
    peers = [k for k in ("duckdb", "chdb", "datafusion", "postgres")]
    qids, ratios = [], []
    for qid, q in run["queries"].items():
        r = ratio_of(q, peers)
        if r != "—":
            qids.append(qid)
            ratios.append(float(r))
    fig, ax = plt.subplots(figsize=(9, 4))
    colors = ["#2a7" if r <= 1 else "#c44" for r in ratios]
    # Bars start at 1.0: up when trafficdb is slower than the best peer, down when it is faster.
    ax.bar(qids, [r - 1.0 for r in ratios], bottom=1.0, color=colors)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if min(ratios) / 2 <= t <= max(ratios) * 2])
    ax.set_ylabel("trafficdb / best peer (median, log scale)")
    ax.set_title(f"{run['scale']}: query time relative to the fastest of DuckDB, chDB, DataFusion, PostgreSQL")
    for i, r in enumerate(ratios):
        ax.text(i, r, f"{r:.2f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
