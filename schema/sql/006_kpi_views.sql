-- Load-balancer KPIs as plain views, per minute and per hour, per load balancer and backend. Health
-- checks are left out. Every column is defined in docs/kpis.md. Buckets are UTC.

-- Traffic, errors and retries.
CREATE OR REPLACE VIEW kpi_requests_1m AS
SELECT bucket, lb, backend,
       attempts, requests, retries, retry_successes, target_5xx, lb_5xx, client_4xx, timeouts, errors,
       bytes_in, bytes_out,
       attempts / 60.0                                          AS rps,
       requests / 60.0                                          AS logical_rps,
       CAST(target_5xx AS DOUBLE PRECISION) / attempts          AS target_5xx_rate,
       CAST(lb_5xx AS DOUBLE PRECISION) / attempts              AS lb_5xx_rate,
       CAST(client_4xx AS DOUBLE PRECISION) / attempts          AS client_4xx_rate,
       CAST(timeouts AS DOUBLE PRECISION) / attempts            AS timeout_rate,
       1.0 - CAST(errors AS DOUBLE PRECISION) / attempts        AS availability,
       CAST(retries AS DOUBLE PRECISION) / NULLIF(requests, 0)  AS retry_rate,
       CAST(attempts AS DOUBLE PRECISION) / NULLIF(requests, 0) AS amplification,
       CAST(retry_successes AS DOUBLE PRECISION) / NULLIF(retries, 0) AS retry_success_ratio
FROM (
    SELECT date_trunc('minute', ts)                                          AS bucket,
           lb, backend,
           count(*)                                                          AS attempts,
           count(*) FILTER (WHERE attempt = 1)                               AS requests,
           count(*) FILTER (WHERE attempt > 1)                               AS retries,
           count(*) FILTER (WHERE attempt > 1 AND lb_status < 500 AND lb_status <> 429) AS retry_successes,
           count(*) FILTER (WHERE target_status >= 500)                      AS target_5xx,
           count(*) FILTER (WHERE lb_status >= 500 AND target_status IS NULL) AS lb_5xx,
           count(*) FILTER (WHERE lb_status BETWEEN 400 AND 499)             AS client_4xx,
           count(*) FILTER (WHERE timed_out)                                 AS timeouts,
           count(*) FILTER (WHERE lb_status >= 500)                          AS errors,
           sum(request_bytes)                                                AS bytes_in,
           sum(response_bytes)                                               AS bytes_out
    FROM lb_requests
    WHERE NOT is_health_check
    GROUP BY 1, 2, 3
) c;

CREATE OR REPLACE VIEW kpi_requests_1h AS
SELECT bucket, lb, backend,
       attempts, requests, retries, retry_successes, target_5xx, lb_5xx, client_4xx, timeouts, errors,
       bytes_in, bytes_out,
       attempts / 3600.0                                        AS rps,
       requests / 3600.0                                        AS logical_rps,
       CAST(target_5xx AS DOUBLE PRECISION) / attempts          AS target_5xx_rate,
       CAST(lb_5xx AS DOUBLE PRECISION) / attempts              AS lb_5xx_rate,
       CAST(client_4xx AS DOUBLE PRECISION) / attempts          AS client_4xx_rate,
       CAST(timeouts AS DOUBLE PRECISION) / attempts            AS timeout_rate,
       1.0 - CAST(errors AS DOUBLE PRECISION) / attempts        AS availability,
       CAST(retries AS DOUBLE PRECISION) / NULLIF(requests, 0)  AS retry_rate,
       CAST(attempts AS DOUBLE PRECISION) / NULLIF(requests, 0) AS amplification,
       CAST(retry_successes AS DOUBLE PRECISION) / NULLIF(retries, 0) AS retry_success_ratio
FROM (
    SELECT date_trunc('hour', ts)                                            AS bucket,
           lb, backend,
           count(*)                                                          AS attempts,
           count(*) FILTER (WHERE attempt = 1)                               AS requests,
           count(*) FILTER (WHERE attempt > 1)                               AS retries,
           count(*) FILTER (WHERE attempt > 1 AND lb_status < 500 AND lb_status <> 429) AS retry_successes,
           count(*) FILTER (WHERE target_status >= 500)                      AS target_5xx,
           count(*) FILTER (WHERE lb_status >= 500 AND target_status IS NULL) AS lb_5xx,
           count(*) FILTER (WHERE lb_status BETWEEN 400 AND 499)             AS client_4xx,
           count(*) FILTER (WHERE timed_out)                                 AS timeouts,
           count(*) FILTER (WHERE lb_status >= 500)                          AS errors,
           sum(request_bytes)                                                AS bytes_in,
           sum(response_bytes)                                               AS bytes_out
    FROM lb_requests
    WHERE NOT is_health_check
    GROUP BY 1, 2, 3
) c;

-- Latency percentiles (exact, interpolated as PostgreSQL's percentile_cont) of the target's response
-- time (attempts a target answered) and of the total time (every attempt).
CREATE OR REPLACE VIEW kpi_latency_1m AS
SELECT date_trunc('minute', ts)                                     AS bucket,
       lb, backend,
       count(*)                                                     AS attempts,
       count(target_ms)                                             AS answered,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY target_ms)      AS target_p50_ms,
       percentile_cont(0.90) WITHIN GROUP (ORDER BY target_ms)      AS target_p90_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY target_ms)      AS target_p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY target_ms)      AS target_p99_ms,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY total_ms)       AS total_p50_ms,
       percentile_cont(0.90) WITHIN GROUP (ORDER BY total_ms)       AS total_p90_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY total_ms)       AS total_p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms)       AS total_p99_ms,
       max(total_ms)                                                AS total_max_ms
FROM lb_requests
WHERE NOT is_health_check
GROUP BY 1, 2, 3;

CREATE OR REPLACE VIEW kpi_latency_1h AS
SELECT date_trunc('hour', ts)                                       AS bucket,
       lb, backend,
       count(*)                                                     AS attempts,
       count(target_ms)                                             AS answered,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY target_ms)      AS target_p50_ms,
       percentile_cont(0.90) WITHIN GROUP (ORDER BY target_ms)      AS target_p90_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY target_ms)      AS target_p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY target_ms)      AS target_p99_ms,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY total_ms)       AS total_p50_ms,
       percentile_cont(0.90) WITHIN GROUP (ORDER BY total_ms)       AS total_p90_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY total_ms)       AS total_p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms)       AS total_p99_ms,
       max(total_ms)                                                AS total_max_ms
FROM lb_requests
WHERE NOT is_health_check
GROUP BY 1, 2, 3;

-- The same percentiles per load balancer (percentiles cannot be summed from the backends' rows).
CREATE OR REPLACE VIEW kpi_lb_latency_1m AS
SELECT date_trunc('minute', ts)                                     AS bucket,
       lb,
       count(*)                                                     AS attempts,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY total_ms)       AS total_p50_ms,
       percentile_cont(0.90) WITHIN GROUP (ORDER BY total_ms)       AS total_p90_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY total_ms)       AS total_p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms)       AS total_p99_ms
FROM lb_requests
WHERE NOT is_health_check
GROUP BY 1, 2;

CREATE OR REPLACE VIEW kpi_lb_latency_1h AS
SELECT date_trunc('hour', ts)                                       AS bucket,
       lb,
       count(*)                                                     AS attempts,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY total_ms)       AS total_p50_ms,
       percentile_cont(0.90) WITHIN GROUP (ORDER BY total_ms)       AS total_p90_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY total_ms)       AS total_p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms)       AS total_p99_ms
FROM lb_requests
WHERE NOT is_health_check
GROUP BY 1, 2;

-- Backend health and saturation from the target samples (lb_targets): one row per target sample counts.
CREATE OR REPLACE VIEW kpi_backend_health_1m AS
SELECT date_trunc('minute', ts)                                     AS bucket,
       lb, backend,
       count(*)                                                     AS samples,
       count(DISTINCT target)                                       AS targets,
       avg(CASE WHEN healthy THEN 1.0 ELSE 0.0 END)                 AS healthy_ratio,
       count(*) FILTER (WHERE NOT healthy)                          AS unhealthy_samples,
       avg(CASE WHEN ejected THEN 1.0 ELSE 0.0 END)                 AS ejected_ratio,
       avg(active_conns)                                            AS avg_active_conns,
       max(active_conns)                                            AS max_active_conns,
       sum(rejected_conns)                                          AS rejected_conns,
       avg(queue_depth)                                             AS avg_queue_depth,
       max(queue_depth)                                             AS max_queue_depth,
       avg(error_rate)                                              AS avg_error_rate
FROM lb_targets
GROUP BY 1, 2, 3;

CREATE OR REPLACE VIEW kpi_backend_health_1h AS
SELECT date_trunc('hour', ts)                                       AS bucket,
       lb, backend,
       count(*)                                                     AS samples,
       count(DISTINCT target)                                       AS targets,
       avg(CASE WHEN healthy THEN 1.0 ELSE 0.0 END)                 AS healthy_ratio,
       count(*) FILTER (WHERE NOT healthy)                          AS unhealthy_samples,
       avg(CASE WHEN ejected THEN 1.0 ELSE 0.0 END)                 AS ejected_ratio,
       avg(active_conns)                                            AS avg_active_conns,
       max(active_conns)                                            AS max_active_conns,
       sum(rejected_conns)                                          AS rejected_conns,
       avg(queue_depth)                                             AS avg_queue_depth,
       max(queue_depth)                                             AS max_queue_depth,
       avg(error_rate)                                              AS avg_error_rate
FROM lb_targets
GROUP BY 1, 2, 3;

-- SLO burn rate per minute and backend over the multi-window pairs of the SRE workbook: an attempt fails
-- when the load balancer answers 5xx (target 5xx, no target, connect failure, timeout).
-- burn = error ratio over the window / (1 - objective); the objective comes from slo_objectives.
CREATE OR REPLACE VIEW kpi_slo_burn AS
SELECT bucket, lb, backend, objective,
       attempts_5m, errors_5m, attempts_1h, errors_1h,
       burn_5m, burn_30m, burn_1h, burn_6h, burn_3d,
       burn_1h > 14.4 AND burn_5m > 14.4                           AS page_1h_5m,
       burn_6h > 6 AND burn_30m > 6                                AS page_6h_30m,
       burn_3d > 1 AND burn_6h > 1                                 AS ticket_3d_6h,
       CASE WHEN (burn_1h > 14.4 AND burn_5m > 14.4) OR (burn_6h > 6 AND burn_30m > 6) THEN 'page'
            WHEN burn_3d > 1 AND burn_6h > 1 THEN 'ticket'
            ELSE 'ok' END                                          AS alert_level
FROM (
    SELECT bucket, lb, backend, objective, attempts_5m, errors_5m, attempts_1h, errors_1h,
           CAST(errors_5m AS DOUBLE PRECISION) / attempts_5m / (1 - objective)   AS burn_5m,
           CAST(errors_30m AS DOUBLE PRECISION) / attempts_30m / (1 - objective) AS burn_30m,
           CAST(errors_1h AS DOUBLE PRECISION) / attempts_1h / (1 - objective)   AS burn_1h,
           CAST(errors_6h AS DOUBLE PRECISION) / attempts_6h / (1 - objective)   AS burn_6h,
           CAST(errors_3d AS DOUBLE PRECISION) / attempts_3d / (1 - objective)   AS burn_3d
    FROM (
        SELECT k.bucket, k.lb, k.backend,
               COALESCE(o.objective, d.objective, 0.999) AS objective,
               sum(k.attempts) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                     RANGE BETWEEN INTERVAL '4 minutes' PRECEDING AND CURRENT ROW)    AS attempts_5m,
               sum(k.errors) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                   RANGE BETWEEN INTERVAL '4 minutes' PRECEDING AND CURRENT ROW)      AS errors_5m,
               sum(k.attempts) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                     RANGE BETWEEN INTERVAL '29 minutes' PRECEDING AND CURRENT ROW)   AS attempts_30m,
               sum(k.errors) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                   RANGE BETWEEN INTERVAL '29 minutes' PRECEDING AND CURRENT ROW)     AS errors_30m,
               sum(k.attempts) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                     RANGE BETWEEN INTERVAL '59 minutes' PRECEDING AND CURRENT ROW)   AS attempts_1h,
               sum(k.errors) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                   RANGE BETWEEN INTERVAL '59 minutes' PRECEDING AND CURRENT ROW)     AS errors_1h,
               sum(k.attempts) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                     RANGE BETWEEN INTERVAL '359 minutes' PRECEDING AND CURRENT ROW)  AS attempts_6h,
               sum(k.errors) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                   RANGE BETWEEN INTERVAL '359 minutes' PRECEDING AND CURRENT ROW)    AS errors_6h,
               sum(k.attempts) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                     RANGE BETWEEN INTERVAL '4319 minutes' PRECEDING AND CURRENT ROW) AS attempts_3d,
               sum(k.errors) OVER (PARTITION BY k.lb, k.backend ORDER BY k.bucket
                                   RANGE BETWEEN INTERVAL '4319 minutes' PRECEDING AND CURRENT ROW)   AS errors_3d
        FROM kpi_requests_1m k
        LEFT JOIN slo_objectives o ON o.backend = k.backend
        LEFT JOIN slo_objectives d ON d.backend = '*'
    ) w
) b;
