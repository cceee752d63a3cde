-- Training data for the retry model: one row per client attempt (health checks left out) with the label
-- will_retry and only features known when the response was sent. Every feature comes from the attempt
-- itself, from rows that arrived before it (the client's history), or from complete earlier minutes
-- (the backend's previous minute), never from later rows; only the label looks ahead. See
-- docs/kpis.md#retry_training.
CREATE OR REPLACE VIEW retry_training AS
WITH marked AS (
    SELECT ts, lb, backend, target, client_id, request_id, attempt, method, lb_status, target_status,
           total_ms, timed_out, response_flags, retry_after,
           timed_out OR lb_status IN (429, 500, 502, 503, 504)              AS retryable,
           method IN ('GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE')            AS idempotent
    FROM lb_requests
    WHERE NOT is_health_check
),
attempts AS (
    SELECT *,
           -- the client's share of retries among its previous 50 attempts (NULL for its first)
           avg(CASE WHEN attempt > 1 THEN 1.0 ELSE 0.0 END) OVER (
               PARTITION BY client_id ORDER BY ts, request_id, attempt
               ROWS BETWEEN 50 PRECEDING AND 1 PRECEDING)              AS client_retry_share,
           -- how the client answered its own earlier failures: every retry it sent answers one
           count(*) FILTER (WHERE retryable) OVER past                      AS client_failures,
           count(*) FILTER (WHERE attempt > 1) OVER past                    AS client_retries,
           count(*) FILTER (WHERE retryable AND NOT idempotent) OVER past   AS client_unsafe_failures,
           count(*) FILTER (WHERE attempt > 1 AND NOT idempotent) OVER past AS client_unsafe_retries,
           max(attempt) OVER past                                           AS client_max_attempt,
           count(*) FILTER (WHERE retryable) OVER recent                    AS client_recent_failures,
           count(*) FILTER (WHERE attempt > 1) OVER recent                  AS client_recent_retries
    FROM marked
    WINDOW past AS (PARTITION BY client_id ORDER BY ts, request_id, attempt
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
           recent AS (PARTITION BY client_id ORDER BY ts, request_id, attempt
                      ROWS BETWEEN 100 PRECEDING AND 1 PRECEDING)
),
backend_minute AS (
    SELECT date_trunc('minute', ts)                                  AS bucket,
           backend,
           CAST(count(*) FILTER (WHERE lb_status >= 500) AS DOUBLE PRECISION) / count(*) AS error_rate,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms)   AS p99_ms
    FROM lb_requests
    WHERE NOT is_health_check
    GROUP BY 1, 2
),
health_minute AS (
    SELECT date_trunc('minute', ts)                                  AS bucket,
           backend,
           avg(CASE WHEN healthy THEN 1.0 ELSE 0.0 END)              AS healthy_ratio,
           avg(queue_depth)                                         AS queue_depth
    FROM lb_targets
    GROUP BY 1, 2
),
retries AS (
    SELECT request_id, client_id, attempt, ts FROM lb_requests WHERE attempt > 1 AND NOT is_health_check
)
SELECT a.ts, a.lb, a.backend, a.target, a.client_id, a.request_id, a.attempt,
       a.method,
       a.idempotent,
       a.retryable,
       CAST(a.lb_status / 100 AS SMALLINT)                            AS status_class,
       a.lb_status,
       a.lb_status >= 500 AND a.target_status IS NULL                 AS lb_error,
       a.timed_out,
       a.response_flags,
       a.retry_after,
       a.total_ms,
       a.total_ms / NULLIF(m.p99_ms, 0)                               AS latency_vs_p99,
       m.error_rate                                                   AS backend_error_rate_1m,
       h.healthy_ratio                                                AS backend_healthy_ratio_1m,
       h.queue_depth                                                  AS backend_queue_depth_1m,
       a.client_retry_share,
       a.client_failures,
       a.client_retries,
       a.client_unsafe_failures,
       a.client_unsafe_retries,
       a.client_max_attempt,
       a.client_recent_failures,
       a.client_recent_retries,
       CAST(date_part('dow', a.ts) * 24 + date_part('hour', a.ts) AS SMALLINT) AS hour_of_week,
       r.ts IS NOT NULL
           AND CAST(r.ts AS BIGINT) - CAST(a.ts AS BIGINT) <= CAST(a.total_ms * 1000 AS BIGINT) + 30000000
                                                                      AS will_retry
FROM attempts a
LEFT JOIN backend_minute m
       ON m.backend = a.backend AND m.bucket = date_trunc('minute', a.ts) - INTERVAL '1 minute'
LEFT JOIN health_minute h
       ON h.backend = a.backend AND h.bucket = date_trunc('minute', a.ts) - INTERVAL '1 minute'
LEFT JOIN retries r
       ON r.request_id = a.request_id AND r.client_id = a.client_id AND r.attempt = a.attempt + 1;
