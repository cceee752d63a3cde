-- Anomalies in the main KPIs, per backend and minute, from detect_anomalies (docs/functions.md): the
-- total p90 latency, the 5xx rate and the retry rate upward, the share of healthy targets downward, each
-- against its previous hour by median and MAD. Minutes found anomalous stay out of the baseline of the
-- minutes after them (for up to an hour in a row), so an incident longer than half an hour is not taken
-- for the normal. A minute with few requests says little: its latency and rates are judged weighed by
-- their requests (weight=attempts: a minute of n requests is judged as (n × value + 20 × expected) /
-- (n + 20)), so a night-time minute of 15 requests with one 5xx is not an incident. min_spread keeps a
-- flat history (no errors, no retries, every target healthy) from turning every small change into an
-- anomaly: 5 ms of latency, 1 point of error rate, 2 points of retry rate, 2 points of healthy share (one
-- target of eight is 12.5). Latency uses p90 beyond 5 spreads: a minute's p99 of a few hundred requests
-- is too noisy to score. benches/anomaly/score.sh scores this view against the generator's incidents.
CREATE OR REPLACE VIEW kpi_anomalies AS
SELECT ts AS bucket, 'total_p90_ms' AS kpi, backend, value, expected, lower, upper, score, is_anomaly, method
FROM detect_anomalies(
    'SELECT bucket, backend, total_p90_ms, attempts FROM kpi_latency_1m',
    'bucket', 'total_p90_ms', 'backend',
    'method=mad, threshold=5, direction=up, window=60, min_history=10, min_spread=5, weight=attempts')
UNION ALL
SELECT ts, 'error_rate', backend, value, expected, lower, upper, score, is_anomaly, method
FROM detect_anomalies(
    'SELECT bucket, backend, CAST(errors AS DOUBLE PRECISION) / attempts AS error_rate, attempts FROM kpi_requests_1m',
    'bucket', 'error_rate', 'backend',
    'method=mad, direction=up, window=60, min_history=10, min_spread=0.01, weight=attempts')
UNION ALL
SELECT ts, 'retry_rate', backend, value, expected, lower, upper, score, is_anomaly, method
FROM detect_anomalies(
    'SELECT bucket, backend, CAST(retries AS DOUBLE PRECISION) / attempts AS retry_rate, attempts FROM kpi_requests_1m',
    'bucket', 'retry_rate', 'backend',
    'method=mad, direction=up, window=60, min_history=10, min_spread=0.02, weight=attempts')
UNION ALL
SELECT ts, 'healthy_ratio', backend, value, expected, lower, upper, score, is_anomaly, method
FROM detect_anomalies(
    'SELECT bucket, backend, healthy_ratio FROM kpi_backend_health_1m',
    'bucket', 'healthy_ratio', 'backend', 'method=mad, direction=down, window=60, min_history=10, min_spread=0.02');
