-- Continuous rollups of lb_requests (docs/kpis.md#rollups): per minute, kept 90 days, and per hour from
-- the minutes, kept two years, refreshed in the background as data arrives (late rows included).
-- Latency is kept as mergeable sketches, so the hour's percentiles are those of its requests, not
-- percentiles of the minutes' percentiles. Dashboards over weeks or months read kpi_rollup_1m /
-- kpi_rollup_1h instead of scanning raw rows. Health checks are left out, as in the KPI views.

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_requests_1m WITH (refresh = '1 minute', retention = '90 days') AS
SELECT time_bucket(INTERVAL '1 minute', ts)                              AS bucket,
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
       sum(response_bytes)                                               AS bytes_out,
       max(total_ms)                                                     AS total_max_ms,
       latency_sketch(total_ms)                                          AS total_ms_sketch,
       latency_sketch(target_ms)                                         AS target_ms_sketch
FROM lb_requests
WHERE NOT is_health_check
GROUP BY 1, 2, 3;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_requests_1h WITH (refresh = '5 minutes', retention = '730 days') AS
SELECT time_bucket(INTERVAL '1 hour', bucket)                            AS bucket,
       lb, backend,
       sum(attempts)                                                     AS attempts,
       sum(requests)                                                     AS requests,
       sum(retries)                                                      AS retries,
       sum(retry_successes)                                              AS retry_successes,
       sum(target_5xx)                                                   AS target_5xx,
       sum(lb_5xx)                                                       AS lb_5xx,
       sum(client_4xx)                                                   AS client_4xx,
       sum(timeouts)                                                     AS timeouts,
       sum(errors)                                                       AS errors,
       sum(bytes_in)                                                     AS bytes_in,
       sum(bytes_out)                                                    AS bytes_out,
       max(total_max_ms)                                                 AS total_max_ms,
       rollup_sketch(total_ms_sketch)                                    AS total_ms_sketch,
       rollup_sketch(target_ms_sketch)                                   AS target_ms_sketch
FROM rollup_requests_1m
GROUP BY 1, 2, 3;

-- The KPIs of kpi_requests_1m / kpi_latency_1m over the rollups (percentiles from the sketches,
-- within 1%).
CREATE OR REPLACE VIEW kpi_rollup_1m AS
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
       sketch_quantile(target_ms_sketch, 0.50)                  AS target_p50_ms,
       sketch_quantile(target_ms_sketch, 0.95)                  AS target_p95_ms,
       sketch_quantile(target_ms_sketch, 0.99)                  AS target_p99_ms,
       sketch_quantile(total_ms_sketch, 0.50)                   AS total_p50_ms,
       sketch_quantile(total_ms_sketch, 0.95)                   AS total_p95_ms,
       sketch_quantile(total_ms_sketch, 0.99)                   AS total_p99_ms,
       total_max_ms
FROM rollup_requests_1m;

CREATE OR REPLACE VIEW kpi_rollup_1h AS
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
       sketch_quantile(target_ms_sketch, 0.50)                  AS target_p50_ms,
       sketch_quantile(target_ms_sketch, 0.95)                  AS target_p95_ms,
       sketch_quantile(target_ms_sketch, 0.99)                  AS target_p99_ms,
       sketch_quantile(total_ms_sketch, 0.50)                   AS total_p50_ms,
       sketch_quantile(total_ms_sketch, 0.95)                   AS total_p95_ms,
       sketch_quantile(total_ms_sketch, 0.99)                   AS total_p99_ms,
       total_max_ms
FROM rollup_requests_1h;
