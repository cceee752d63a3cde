"""Latency of one prediction: `SELECT predict_retry(...)` over the PostgreSQL wire protocol (psycopg 3,
one connection, literal arguments) and `POST /v1/predict/retry` over HTTP (one kept-alive connection),
against a running server with a deployed `retry` model (e.g. `trafficdb serve --demo --http ...`).
Prints p50 / p99 / mean in milliseconds over N calls after a warm-up.

Usage: python benches/retry/latency.py HOST PORT HTTP_PORT [N]
"""

import http.client
import json
import statistics
import sys
import time

import psycopg

host, port, http_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
row = {
    "backend": "api", "method": "GET", "status": "503", "attempt": 1, "lb_error": False, "timed_out": False,
    "response_flags": "-", "retry_after_s": 1, "log_total_ms": 3.2, "latency_vs_p99": 0.4,
    "backend_error_rate_1m": 0.02, "backend_healthy_ratio_1m": 1.0, "backend_queue_depth_1m": 3.0,
    "client_retry_share": 0.1,
    "idempotent": True,
    "client_failures": 4,
    "client_retry_after_failure": 0.75,
    "client_unsafe_retry_after_failure": None,
    "client_max_attempt": 2,
    "client_recent_retry_after_failure": 1.0,
}
sql = ("SELECT predict_retry('api', 'GET', '503', 1, false, false, '-', 1, 3.2, 0.4, 0.02, 1.0, 3.0, 0.1, true, 4, 0.75, NULL, 2, 1.0)")


def report(name, times):
    times = sorted(times)
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1e3
    print(f"{name}: n={len(times)} p50={p(0.5):.3f} ms p99={p(0.99):.3f} ms mean={statistics.mean(times) * 1e3:.3f} ms")


with psycopg.connect(host=host, port=port, user="bench", dbname="trafficdb", autocommit=True) as conn:
    cur = conn.cursor()
    for _ in range(200):
        cur.execute(sql).fetchone()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        cur.execute(sql).fetchone()
        times.append(time.perf_counter() - t)
    report("wire (psycopg, SELECT predict_retry(...))", times)

c = http.client.HTTPConnection(host, http_port)
body = json.dumps({"rows": [row]})
for _ in range(200):
    c.request("POST", "/v1/predict/retry", body, {"Content-Type": "application/json"})
    c.getresponse().read()
times = []
for _ in range(n):
    t = time.perf_counter()
    c.request("POST", "/v1/predict/retry", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    times.append(time.perf_counter() - t)
    assert r.status == 200
report("HTTP (POST /v1/predict/retry, one row)", times)
