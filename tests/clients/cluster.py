"""A loopback cluster over S3 (docs/scale-out.md): an S3 API served by moto; two writers (`trafficdb
serve` with [storage] shard), each owning one load balancer's requests and health samples and
publishing its shard under the bucket's prefix; a coordinator (`serve` with [cluster] workers, on the
prefix itself, holding the dimension tables) and three `trafficdb worker` processes reading segments
from the bucket; against a single node holding the same generated telemetry. Every query of the set
must answer the same rows on both (over psycopg); a writer refuses another shard's row; a worker killed
while a query runs must give an error or the right answer, never a wrong one, and later queries run on
the workers left (and on the coordinator alone once none is); a writer or the coordinator killed with
-9 loses no acknowledged row.

Usage: python cluster.py TRAFFICDB_BIN
Everything listens on free loopback ports; the processes are stopped at the end.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import boto3
import psycopg

QUERIES = [
    "SELECT count(*) FROM lb_requests",
    "SELECT backend, count(*), round(avg(total_ms)::numeric, 6), max(total_ms) FROM lb_requests GROUP BY backend",
    "SELECT date_trunc('hour', ts) AS h, count(*) FILTER (WHERE lb_status >= 500), count(*) FROM lb_requests GROUP BY h",
    "SELECT time_bucket('1 hour', ts) AS b, lb, percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms) "
    "FROM lb_requests GROUP BY b, lb",
    "SELECT zone, count(DISTINCT client_id) FROM lb_requests GROUP BY zone",
    "SELECT ts, request_id, attempt FROM lb_requests WHERE timed_out ORDER BY ts DESC, request_id, attempt LIMIT 20",
    "SELECT b.zone, count(*) FROM lb_requests r JOIN backends b ON r.backend = b.backend GROUP BY b.zone",
    "SELECT i.kind, count(*) FROM incidents i JOIN lb_requests r "
    "ON r.backend = i.backend AND r.ts BETWEEN i.started_at AND i.ended_at GROUP BY i.kind",
    "SELECT target, ts FROM (SELECT target, ts, row_number() OVER (PARTITION BY target ORDER BY ts DESC) AS rn "
    "FROM lb_requests) WHERE rn = 1",
    "SELECT lb, method, count(*) FROM lb_requests WHERE path_template LIKE '/api/%' GROUP BY lb, method",
    "SELECT date_trunc('minute', ts) AS s, count(*) FROM lb_requests "
    "WHERE ts > (SELECT max(ts) FROM lb_requests) - INTERVAL '1 hour' GROUP BY s",
    "SELECT * FROM kpi_requests_1h",
    "SELECT * FROM kpi_backend_health_1h",
    "SELECT * FROM kpi_slo_burn",
]

ROWS = 400_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"FAIL: {what} did not come up in {seconds} s")


def connect(port):
    return psycopg.connect(host="127.0.0.1", port=port, dbname="trafficdb", user="admin", autocommit=True)


def canon(rows):
    def cell(v):
        if isinstance(v, float):
            return f"{v:.8e}"
        return repr(v)
    return sorted("|".join(cell(v) for v in r) for r in rows)


def main():
    binary = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="trafficdb-cluster-")
    procs = []
    failures = []

    def start(args, log, env):
        p = subprocess.Popen([binary] + args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, log), "w"),
                             env=env)
        procs.append(p)
        return p

    try:
        s3_port = free_port()
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "moto.log"), "w"))
        procs.append(moto)
        endpoint = f"http://127.0.0.1:{s3_port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
        wait_for(lambda: s3.list_buckets() is not None, "moto")
        s3.create_bucket(Bucket="telemetry")
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
                   AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true", TRAFFICDB_LOG="warn")
        store = "s3://telemetry/lb"

        single = os.path.join(work, "single")
        subprocess.run([binary, "generate", "--rows", str(ROWS), "--days", "2", "--seed", "5", "--into", single],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        single_port = free_port()
        start(["serve", "-d", single, "--listen", f"127.0.0.1:{single_port}"], "single.log", env)

        workers = []
        for i in range(3):
            wport = free_port()
            w = start(["worker", "--listen", f"127.0.0.1:{wport}", "--object-store", store,
                       "--cache-dir", os.path.join(work, f"cache{i}"), "--cache-size", "256MiB"], f"worker{i}.log", env)
            workers.append((w, wport))
        for w, wport in workers:
            wait_for(lambda: socket.create_connection(("127.0.0.1", wport), timeout=1).close() is None, "a worker")

        # Two writers, one per load balancer, flushing every second (a reader sees a writer's rows
        # once flushed), and the coordinator on the prefix itself.
        def start_writer(i, port):
            writer_env = dict(env, TRAFFICDB_STORAGE_OBJECT_STORE=store, TRAFFICDB_STORAGE_SHARD=f"w{i}",
                              TRAFFICDB_STORAGE_SHARD_VALUES=f"lb-0{i + 1}", TRAFFICDB_STORAGE_FLUSH_INTERVAL="1s")
            return start(["serve", "-d", os.path.join(work, f"w{i}"), "--listen", f"127.0.0.1:{port}"],
                         f"writer{i}.log", writer_env)
        writer_ports = [free_port(), free_port()]
        writers = [start_writer(i, port) for i, port in enumerate(writer_ports)]
        coord, coord_port = os.path.join(work, "coord"), free_port()
        coord_env = dict(env, TRAFFICDB_STORAGE_OBJECT_STORE=store,
                         TRAFFICDB_CLUSTER_WORKERS=",".join(f"http://127.0.0.1:{p}" for _, p in workers),
                         TRAFFICDB_CLUSTER_ROWS_PER_TASK="50000")
        coordinator = start(["serve", "-d", coord, "--listen", f"127.0.0.1:{coord_port}"], "coordinator.log",
                            coord_env)
        for port, what in [(single_port, "the single node"), (coord_port, "the coordinator")] + \
                [(p, "a writer") for p in writer_ports]:
            wait_for(lambda: connect(port).close() is None, what)

        # The single node's rows, copied over the wire: each load balancer's to its writer, the
        # dimension tables to the coordinator.
        def copy(table, where, port):
            with connect(single_port) as src, connect(port) as dst:
                with src.cursor().copy(f"COPY (SELECT * FROM {table} {where}) TO STDOUT") as out, \
                        dst.cursor().copy(f"COPY {table} FROM STDIN") as into:
                    for block in out:
                        into.write(block)
        for i, port in enumerate(writer_ports):
            for table in ("lb_requests", "lb_targets"):
                copy(table, f"WHERE lb = 'lb-0{i + 1}'", port)
        for table in ("backends", "incidents"):
            copy(table, "", coord_port)
        with connect(single_port) as one:
            total = one.execute("SELECT count(*) FROM lb_requests").fetchone()[0]
        wait_for(lambda: connect(coord_port).execute("SELECT count(*) FROM lb_requests").fetchone()[0] == total,
                 "every writer's rows on the coordinator", 60)
        keys = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="telemetry")
                for obj in page.get("Contents", [])]
        shard_segments = [k for k in keys if k.startswith("lb/shards/") and k.endswith(".seg")]
        published = all(f"lb/shards/w{i}/catalog" in keys for i in range(2)) and "lb/catalog" in keys
        if not published or not shard_segments:
            failures.append(f"the bucket holds the catalogs and the shards' segments: {keys[:8]}")
        print(f"{'ok  ' if published and shard_segments else 'FAIL'} bucket: 3 catalogs, "
              f"{len(shard_segments)} segments of the two shards")

        # A writer refuses a row of the other writer's load balancer.
        with connect(writer_ports[0]) as w0:
            try:
                w0.execute("INSERT INTO backends (backend, lb, zone, capacity_rps, weight) VALUES ('x', 'lb-02', NULL, 1, 1)")
                failures.append("a writer took another shard's row")
                print("FAIL writer took another shard's row")
            except psycopg.Error as e:
                ok = e.sqlstate == "23514"
                print(f"{'ok  ' if ok else 'FAIL'} another shard's row refused: {e.sqlstate} {str(e).strip()[:90]}")
                if not ok:
                    failures.append(f"misrouted row: {e.sqlstate} {e}")

        with connect(single_port) as one, connect(coord_port) as many:
            plan = "\n".join(r[-1] for r in many.execute(
                "EXPLAIN SELECT backend, count(*) FROM lb_requests GROUP BY backend").fetchall())
            if "DistributedExec" not in plan and "Stage" not in plan:
                failures.append(f"EXPLAIN shows no stages:\n{plan}")
            for q in QUERIES:
                t0 = time.perf_counter()
                a = one.execute(q).fetchall()
                t1 = time.perf_counter()
                b = many.execute(q).fetchall()
                t2 = time.perf_counter()
                same = canon(a) == canon(b)
                print(f"{'ok  ' if same else 'FAIL'} {len(a):6d} rows  single {1000 * (t1 - t0):7.1f} ms  "
                      f"cluster {1000 * (t2 - t1):7.1f} ms  {q[:70]}")
                if not same:
                    failures.append(f"different rows: {q}")

            # A worker killed while a query runs (the slowest of the set, some 400 ms here): an error or
            # the right answer, never a wrong one.
            q = "SELECT * FROM kpi_slo_burn"
            expected = canon(one.execute(q).fetchall())
            threading.Timer(0.15, lambda: workers[0][0].kill()).start()
            try:
                got = canon(many.execute(q).fetchall())
                print("ok   worker killed mid-query: " + ("same answer" if got == expected else "WRONG answer"))
                if got != expected:
                    failures.append("a killed worker gave a wrong answer")
            except psycopg.Error as e:
                print(f"ok   worker killed mid-query: error {e.sqlstate}: {str(e).strip()[:100]}")
            def agree(q2, when):
                try:
                    same = canon(many.execute(q2).fetchall()) == canon(one.execute(q2).fetchall())
                except psycopg.Error as e:
                    same = False
                    print(f"     {e}")
                print(f"{'ok  ' if same else 'FAIL'} {when}: {q2[:60]}")
                if not same:
                    failures.append(f"{when}: {q2}")

            # Within a check (2 s) the coordinator leaves the dead worker out: later queries run on the
            # two others, and give the right answer.
            time.sleep(3)
            for q2 in (q, QUERIES[3], QUERIES[7]):
                agree(q2, "after the kill, on two workers")
            # With no worker left, the coordinator runs every stage itself.
            for w, _ in workers:
                w.kill()
            time.sleep(3)
            agree(QUERIES[1], "no worker left, on the coordinator alone")

        # A writer killed with -9 keeps every row it acknowledged: after its restart (the write-ahead
        # log is replayed, then flushed), the coordinator reads it.
        with connect(coord_port) as c:
            before = c.execute("SELECT count(*) FROM lb_requests").fetchone()[0]
        copy("lb_requests", "WHERE lb = 'lb-01' ORDER BY ts LIMIT 5", writer_ports[0])
        writers[0].kill()
        writers[0].wait()
        writer_ports[0] = free_port()
        writers[0] = start_writer(0, writer_ports[0])
        wait_for(lambda: connect(writer_ports[0]).close() is None, "the restarted writer")
        try:
            wait_for(lambda: connect(coord_port).execute("SELECT count(*) FROM lb_requests").fetchone()[0]
                     == before + 5, "the killed writer's rows on the coordinator", 60)
            print("ok   writer killed -9: acknowledged rows kept and published")
        except SystemExit as e:
            failures.append(str(e))
            print(f"FAIL {e}")

        # The coordinator killed with -9 keeps every acknowledged row (the write-ahead log is local).
        with connect(coord_port) as c:
            before = c.execute("SELECT count(*) FROM backends").fetchone()[0]
            c.execute("INSERT INTO backends (backend, lb, zone, capacity_rps, weight) VALUES ('kill-test', 'lb', NULL, 1, 1)")
        coordinator.kill()
        coordinator.wait()
        coord_port = free_port()
        start(["serve", "-d", coord, "--listen", f"127.0.0.1:{coord_port}"], "coordinator2.log", coord_env)
        wait_for(lambda: connect(coord_port).close() is None, "the restarted coordinator")
        with connect(coord_port) as c:
            after = c.execute("SELECT count(*) FROM backends").fetchone()[0]
        if after != before + 1:
            failures.append(f"an acknowledged row was lost: {before} -> {after}")
        print(f"{'ok  ' if after == before + 1 else 'FAIL'} coordinator killed -9: acknowledged row kept")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if failures:
            for name in os.listdir(work):
                if name.endswith(".log"):
                    print(f"--- {name}\n" + open(os.path.join(work, name)).read()[-3000:])
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("cluster: all checks passed")


if __name__ == "__main__":
    main()
