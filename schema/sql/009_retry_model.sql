-- The retry model's standard features (docs/retry-model.md): one row per client attempt from
-- retry_training, with the time (for the train / evaluation split), the label, whether the attempt is a
-- retryable failure (reported apart by train_retry_model and evaluate_model, not a feature), and the
-- features in the order predict_retry takes them. Train the `retry` model on it:
--   SELECT * FROM train_retry_model('retry', 'SELECT * FROM retry_features WHERE ts < TIMESTAMP ''...''');
CREATE OR REPLACE VIEW retry_features AS
SELECT ts,
       will_retry,
       retryable,                                            -- not a feature: the rows reported apart (focus)
       backend,                                              -- text: one weight per backend
       method,                                               -- text
       CAST(lb_status AS VARCHAR)                AS status,  -- text: 200, 429, 502, 503, 504, ...
       attempt,                                              -- 1 for the first try
       lb_error,                                             -- a 5xx the load balancer made itself
       timed_out,
       coalesce(response_flags, '-')             AS response_flags,
       coalesce(retry_after, 0)                  AS retry_after_s,
       ln(1 + total_ms)                          AS log_total_ms,
       latency_vs_p99,                                       -- NULL (the training mean) without a previous minute
       backend_error_rate_1m,
       backend_healthy_ratio_1m,
       backend_queue_depth_1m,
       client_retry_share,                                   -- NULL for a client's first attempt
       idempotent,                                           -- GET, HEAD, OPTIONS, PUT, DELETE
       client_failures,                                      -- the client's earlier retryable failures
       CAST(client_retries AS DOUBLE PRECISION) / NULLIF(client_failures, 0)
                                                 AS client_retry_after_failure,   -- NULL before any failure
       CAST(client_unsafe_retries AS DOUBLE PRECISION) / NULLIF(client_unsafe_failures, 0)
                                                 AS client_unsafe_retry_after_failure, -- the same, non-idempotent
       client_max_attempt,                                   -- the highest attempt number it sent
       CAST(client_recent_retries AS DOUBLE PRECISION) / NULLIF(client_recent_failures, 0)
                                                 AS client_recent_retry_after_failure -- over its last 100 attempts
FROM retry_training;

-- What retries cost, for kpi_retry_impact_1m. One row; the defaults are placeholders to replace with
-- your own figures (UPDATE is not supported: DELETE FROM retry_cost_parameters, then INSERT).
CREATE TABLE IF NOT EXISTS retry_cost_parameters (
    cost_per_request  DOUBLE PRECISION NOT NULL,  -- serving one attempt (compute, egress, LB capacity units)
    cost_per_retry    DOUBLE PRECISION NOT NULL,  -- one retry: its own serving cost plus what it adds
    currency          TEXT NOT NULL,
    risk_threshold    DOUBLE PRECISION NOT NULL,  -- an attempt is at risk when predict_retry >= this
    avoidable_share   DOUBLE PRECISION NOT NULL   -- share of at-risk retries an intervention would avoid
                                                  -- (an assumption: measure it before relying on it)
);
-- (Only into an empty table: a file interrupted by a crash is applied again at the next open.)
INSERT INTO retry_cost_parameters
SELECT 0.000001 AS cost_per_request, 0.000001 AS cost_per_retry, 'USD' AS currency, 0.5 AS risk_threshold,
       0.5 AS avoidable_share
WHERE NOT EXISTS (SELECT 1 FROM retry_cost_parameters);

-- Retry impact per backend and minute: observed retries next to the retries the deployed `retry`
-- model expects (the sum of its probabilities over the retryable failures), the extra load retries make,
-- and their cost.
CREATE OR REPLACE VIEW kpi_retry_impact_1m AS
WITH scored AS (
    SELECT date_trunc('minute', ts) AS bucket, backend, attempt,
           -- only a retryable failure is ever retried: the model scores those (and may be trained on them alone)
           CASE WHEN retryable THEN
           predict_retry(backend, method, status, attempt, lb_error, timed_out, response_flags, retry_after_s,
                         log_total_ms, latency_vs_p99, backend_error_rate_1m, backend_healthy_ratio_1m,
                         backend_queue_depth_1m, client_retry_share, idempotent, client_failures,
                         client_retry_after_failure, client_unsafe_retry_after_failure, client_max_attempt,
                         client_recent_retry_after_failure) ELSE 0.0 END AS p
    FROM retry_features
)
SELECT s.bucket,
       s.backend,
       count(*)                                                           AS attempts,
       count(*) FILTER (WHERE s.attempt > 1)                              AS retries,
       sum(s.p)                                                           AS expected_retries,
       CAST(count(*) FILTER (WHERE s.attempt > 1) AS DOUBLE PRECISION) / count(*)
                                                                          AS retry_load_share,
       count(*) FILTER (WHERE s.p >= c.risk_threshold)                    AS at_risk_attempts,
       coalesce(sum(s.p) FILTER (WHERE s.p >= c.risk_threshold), 0)       AS expected_retries_at_risk,
       count(*) * c.cost_per_request                                      AS request_cost,
       count(*) FILTER (WHERE s.attempt > 1) * c.cost_per_retry           AS retry_cost,
       sum(s.p) * c.cost_per_retry                                        AS expected_retry_cost,
       coalesce(sum(s.p) FILTER (WHERE s.p >= c.risk_threshold), 0) * c.avoidable_share * c.cost_per_retry
                                                                          AS avoidable_cost,
       c.currency
FROM scored s
CROSS JOIN retry_cost_parameters c
GROUP BY s.bucket, s.backend, c.cost_per_request, c.cost_per_retry, c.currency, c.risk_threshold, c.avoidable_share;
