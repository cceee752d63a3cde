"""W3 of the benchmark suite (shared/bench/SUITE.md): the query shapes Q01-Q14 (and U01-U08, shapes users send
that the suite lacks), recast onto the columns of
trafficdb's load-balancer tables, with a fresh random instance per repetition drawn from a seeded PRNG (as
TSBS does).

Column mapping from the suite's tables to ours:

    requests  -> lb_requests      lb_metrics           -> lb_targets (one row per target every 10-20 s)
    backend_id -> backend (text)  lb_id (of a gauge)    -> target (text, ip:port)
    lb_id      -> lb (text)       requests_per_s, avg_response_ms, error_rate -> the same
    latency_ms -> total_ms        backend_health       -> queue_depth (a gauge) / healthy (Q14, as 1.0 / 0.0)
    status_code -> lb_status      active_connections   -> active_conns
    bytes_sent -> response_bytes, bytes_received -> request_bytes, route -> path_template,
    retry      -> attempt > 1

Only `date_trunc`, `TIMESTAMP '...'` literals, `CASE`, `row_number()` and `percentile_cont ... WITHIN GROUP`
are used, so the same text runs on trafficdb, DuckDB, DataFusion and PostgreSQL; chDB gets the light rewrites
of `for_clickhouse`.
"""

import datetime as dt
import random
import re

DAY0 = dt.datetime(2024, 1, 1)

# id -> (description, ordered?, template). Unordered results are sorted before they are compared.
QUERIES = {
    "Q01": ("max latency per minute, 1 backend, 1 h", True, """
SELECT date_trunc('minute', ts) AS minute, max(total_ms) AS max_latency_ms FROM lb_requests
WHERE backend IN ({b1}) AND ts >= TIMESTAMP '{h1_start}' AND ts < TIMESTAMP '{h1_end}'
GROUP BY date_trunc('minute', ts) ORDER BY minute"""),
    "Q02": ("5 aggregates per minute, 8 backends, 1 h", True, """
SELECT date_trunc('minute', ts) AS minute, max(total_ms) AS max_latency_ms, max(response_bytes) AS max_bytes_sent,
       max(request_bytes) AS max_bytes_received, sum(CASE WHEN lb_status >= 500 THEN 1 ELSE 0 END) AS n_5xx,
       count(*) AS n
FROM lb_requests WHERE backend IN ({b8}) AND ts >= TIMESTAMP '{h1_start}' AND ts < TIMESTAMP '{h1_end}'
GROUP BY date_trunc('minute', ts) ORDER BY minute"""),
    "Q03": ("max latency per minute, 1 backend, 12 h", True, """
SELECT date_trunc('minute', ts) AS minute, max(total_ms) AS max_latency_ms FROM lb_requests
WHERE backend IN ({b1}) AND ts >= TIMESTAMP '{h12_start}' AND ts < TIMESTAMP '{h12_end}'
GROUP BY date_trunc('minute', ts) ORDER BY minute"""),
    "Q04": ("max of 5 gauges per hour, 8 targets, 8 h", True, """
SELECT date_trunc('hour', ts) AS hour, max(requests_per_s) AS max_rps, max(avg_response_ms) AS max_avg_resp,
       max(error_rate) AS max_err, max(queue_depth) AS max_queue, max(active_conns) AS max_conns
FROM lb_targets WHERE target IN ({t8}) AND ts >= TIMESTAMP '{h8_start}' AND ts < TIMESTAMP '{h8_end}'
GROUP BY date_trunc('hour', ts) ORDER BY hour"""),
    "Q05": ("mean of 5 gauges per target per hour, all targets, 12 h", True, """
SELECT date_trunc('hour', ts) AS hour, target, avg(requests_per_s) AS mean_rps, avg(avg_response_ms) AS mean_resp,
       avg(error_rate) AS mean_err, avg(queue_depth) AS mean_queue, avg(active_conns) AS mean_conns
FROM lb_targets WHERE ts >= TIMESTAMP '{h12_start}' AND ts < TIMESTAMP '{h12_end}'
GROUP BY date_trunc('hour', ts), target ORDER BY hour, target"""),
    "Q06": ("every request slower than 500 ms in 12 h", False, """
SELECT ts, lb, backend, target, client_id, request_id, lb_status, total_ms FROM lb_requests
WHERE total_ms > 500.0 AND ts >= TIMESTAMP '{h12_start}' AND ts < TIMESTAMP '{h12_end}'"""),
    "Q07": ("the same for 1 backend", False, """
SELECT ts, lb, backend, target, client_id, request_id, lb_status, total_ms FROM lb_requests
WHERE total_ms > 500.0 AND ts >= TIMESTAMP '{h12_start}' AND ts < TIMESTAMP '{h12_end}' AND backend IN ({b1})"""),
    "Q08": ("lastpoint: latest gauge row of every target", True, """
SELECT target, ts, requests_per_s, avg_response_ms, error_rate, queue_depth, active_conns
FROM (SELECT *, row_number() OVER (PARTITION BY target ORDER BY ts DESC) AS rn FROM lb_targets) t
WHERE rn = 1 ORDER BY target"""),
    "Q09": ("last 5 one-minute max-latency buckets before a time", True, """
SELECT date_trunc('minute', ts) AS minute, max(total_ms) AS max_latency_ms FROM lb_requests
WHERE ts < TIMESTAMP '{before}' GROUP BY date_trunc('minute', ts) ORDER BY minute DESC LIMIT 5"""),
    "Q10": ("5xx rate per path per hour, 1 load balancer, 24 h", True, """
SELECT date_trunc('hour', ts) AS hour, path_template, count(*) AS n,
       avg(CASE WHEN lb_status >= 500 THEN 1.0 ELSE 0.0 END) AS err_rate
FROM lb_requests WHERE lb = {lb1}
GROUP BY date_trunc('hour', ts), path_template ORDER BY hour, err_rate DESC, path_template"""),
    "Q11": ("p99 latency per backend, 1 h, top 20", True, """
SELECT backend, count(*) AS n, percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms) AS p99_ms FROM lb_requests
WHERE ts >= TIMESTAMP '{h1_start}' AND ts < TIMESTAMP '{h1_end}'
GROUP BY backend ORDER BY p99_ms DESC, backend LIMIT 20"""),
    "Q12": ("top 10 clients by requests, 24 h", True, """
SELECT client_id, count(*) AS n, sum(response_bytes) AS bytes_sent FROM lb_requests
GROUP BY client_id ORDER BY n DESC, client_id LIMIT 10"""),
    "Q13": ("count, sum, avg, max, retries over all rows", True, """
SELECT count(*) AS n, sum(response_bytes) AS bytes_sent, avg(total_ms) AS avg_latency_ms,
       max(total_ms) AS max_latency_ms, sum(CASE WHEN attempt > 1 THEN 1 ELSE 0 END) AS retries FROM lb_requests"""),
    "Q14": ("5xx per backend-minute joined with target health, 2 h", True, """
SELECT e.backend, e.minute, e.n_5xx, avg(CASE WHEN m.healthy THEN 1.0 ELSE 0.0 END) AS health
FROM (SELECT backend, date_trunc('minute', ts) AS minute, count(*) AS n_5xx FROM lb_requests
      WHERE lb_status >= 500 AND ts >= TIMESTAMP '{h2_start}' AND ts < TIMESTAMP '{h2_end}'
      GROUP BY backend, date_trunc('minute', ts)) e
JOIN lb_targets m ON m.backend = e.backend AND date_trunc('minute', m.ts) = e.minute
GROUP BY e.backend, e.minute, e.n_5xx ORDER BY e.n_5xx DESC, e.backend, e.minute LIMIT 20"""),
    # Shapes users send that the suite above lacks (what Power BI, Grafana and on-call engineers write).
    "U01": ("Power BI folded query: requests per backend, nested derived tables", True, """
SELECT "backend", "n" FROM (SELECT "backend", count(1) AS "n" FROM (SELECT "_"."backend" AS "backend"
FROM (SELECT "backend", "lb_status" FROM "lb_requests" AS "$Table") AS "_" WHERE NOT "_"."backend" IS NULL) AS "_"
GROUP BY "backend") AS "_" ORDER BY "backend" ASC"""),
    "U02": ("newest 100 timed-out requests, tie-breaker", True, """
SELECT ts, lb, backend, request_id, total_ms FROM lb_requests WHERE timed_out
ORDER BY ts DESC, request_id LIMIT 100"""),
    "U03": ("requests per LB of backends by name prefix (LIKE), whole span", True, """
SELECT lb, count(*) AS n FROM lb_requests WHERE backend LIKE '{bprefix}%' GROUP BY lb ORDER BY lb"""),
    "U04": ("per-second counts in the newest hour, bound from a subquery", True, """
SELECT date_trunc('second', ts) AS s, count(*) AS n FROM lb_requests
WHERE ts >= (SELECT max(ts) FROM lb_requests) - INTERVAL '1 hour' GROUP BY date_trunc('second', ts) ORDER BY s"""),
    "U05": ("top 10 paths by 5xx share, 12 h", True, """
SELECT path_template, count(*) AS n, avg(CASE WHEN lb_status >= 500 THEN 1.0 ELSE 0.0 END) AS share_5xx
FROM lb_requests WHERE ts >= TIMESTAMP '{h12_start}' AND ts < TIMESTAMP '{h12_end}'
GROUP BY path_template ORDER BY share_5xx DESC, path_template LIMIT 10"""),
    "U06": ("backend-hours over 1 % errors (HAVING), whole span", True, """
SELECT backend, date_trunc('hour', ts) AS hour, count(*) AS n, sum(CASE WHEN lb_status >= 500 THEN 1 ELSE 0 END) AS errors
FROM lb_requests GROUP BY backend, date_trunc('hour', ts)
HAVING sum(CASE WHEN lb_status >= 500 THEN 1 ELSE 0 END) * 100 > count(*) ORDER BY backend, hour"""),
    "U07": ("distinct clients per LB per hour, 12 h", True, """
SELECT lb, date_trunc('hour', ts) AS hour, count(DISTINCT client_id) AS clients FROM lb_requests
WHERE ts >= TIMESTAMP '{h12_start}' AND ts < TIMESTAMP '{h12_end}' GROUP BY lb, date_trunc('hour', ts) ORDER BY lb, hour"""),
    "U08": ("requests during each target's unhealthy span (range join), 12 h", True, """
SELECT u.target, count(*) AS n FROM (SELECT target, min(ts) AS started_at, max(ts) AS ended_at FROM lb_targets
WHERE NOT healthy AND ts >= TIMESTAMP '{h12_start}' AND ts < TIMESTAMP '{h12_end}' GROUP BY target) u
JOIN lb_requests r ON r.target = u.target AND r.ts BETWEEN u.started_at AND u.ended_at
GROUP BY u.target ORDER BY u.target"""),
}


def _lit(values):
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _window(rng, hours, span_hours):
    """A window of `hours` whole hours starting at a random whole hour inside the data's span."""
    start = DAY0 + dt.timedelta(hours=rng.randrange(0, max(1, int(span_hours) - hours + 1)))
    end = start + dt.timedelta(hours=hours)
    return start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S")


def instance(rng, dims):
    """One random instance of every query: {id: sql}. `dims` has the data's backends, targets, lbs, span."""
    span = dims["span_hours"]
    p = {}
    p["b1"] = _lit([rng.choice(dims["backends"])])
    p["b8"] = _lit(rng.sample(dims["backends"], min(8, len(dims["backends"]))))
    p["t8"] = _lit(rng.sample(dims["targets"], min(8, len(dims["targets"]))))
    p["lb1"] = _lit([rng.choice(dims["lbs"])])
    p["bprefix"] = rng.choice(dims["backends"])[:3].replace("'", "''").replace("%", "").replace("_", "")
    for h in (1, 2, 8, 12):
        p[f"h{h}_start"], p[f"h{h}_end"] = _window(rng, h, span)
    before = DAY0 + dt.timedelta(seconds=rng.randrange(3600, int(span * 3600)))
    p["before"] = before.strftime("%Y-%m-%d %H:%M:%S")
    return {q: " ".join(t.split()).format(**p) for q, (_, _, t) in QUERIES.items()}


_TS = re.compile(r"TIMESTAMP '([^']*)'")
_P99 = re.compile(r"percentile_cont\(([0-9.]+)\) WITHIN GROUP \(ORDER BY (\w+)\)")


def for_clickhouse(sql):
    """chDB's light rewrites: timestamp literals as DateTime64(6), percentile_cont as ClickHouse's
    exact inclusive quantile (the same interpolation)."""
    sql = _TS.sub(r"toDateTime64('\1', 6)", sql)
    return _P99.sub(r"quantileExactInclusive(\1)(\2)", sql)


def ordered(qid):
    return QUERIES[qid][1]


def seeded(seed):
    return random.Random(seed)
