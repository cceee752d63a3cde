-- Health and load of each target, sampled every 10-20 s: the periodic statistics a load balancer
-- pushes (HAProxy stats, Envoy cluster stats, ALB target health). Times are UTC.
CREATE TABLE IF NOT EXISTS lb_targets (
    ts              TIMESTAMP NOT NULL,        -- sample time (UTC)
    lb              TEXT NOT NULL,
    backend         TEXT NOT NULL,
    target          TEXT NOT NULL,             -- ip:port
    zone            TEXT,
    healthy         BOOLEAN NOT NULL,          -- passing health checks
    active_conns    INTEGER,                   -- open connections to the target
    rejected_conns  INTEGER,                   -- connections refused since the last sample (overload)
    queue_depth     INTEGER,                   -- requests waiting for the target
    weight          SMALLINT,                  -- load-balancing weight
    ejected         BOOLEAN,                   -- taken out by outlier detection
    requests_per_s  DOUBLE PRECISION,          -- requests per second since the last sample
    avg_response_ms DOUBLE PRECISION,          -- mean response time since the last sample
    error_rate      DOUBLE PRECISION           -- share of 5xx responses since the last sample, 0 to 1
) WITH (time_column = 'ts', partition = '1 day', retention = '90 days', dedup_keys = 'lb, backend, target');
