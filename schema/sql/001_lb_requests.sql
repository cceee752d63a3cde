-- One row per request attempt, as a load balancer's access log records it (the fields of ALB, Envoy and
-- HAProxy access logs). Times are UTC. A retry is a new row with the same request_id and attempt + 1.
CREATE TABLE IF NOT EXISTS lb_requests (
    ts              TIMESTAMP NOT NULL,        -- request received by the load balancer (UTC)
    lb              TEXT NOT NULL,             -- load balancer
    listener        TEXT NOT NULL,             -- frontend / listener, e.g. https:443
    backend         TEXT NOT NULL,             -- pool / target group the request was routed to
    target          TEXT,                      -- ip:port of the target; NULL when none was chosen
    zone            TEXT,                      -- availability zone of the target
    client_id       TEXT NOT NULL,             -- stable client key (API key or session), links retries
    request_id      TEXT NOT NULL,             -- one logical request: the same for all its attempts
    attempt         SMALLINT NOT NULL,         -- 1 for the first try, 2 for the first retry, ...
    method          TEXT NOT NULL,             -- GET, POST, ...
    path_template   TEXT NOT NULL,             -- templated path, e.g. /api/orders/{id}
    lb_status       SMALLINT NOT NULL,         -- HTTP status sent to the client
    target_status   SMALLINT,                  -- HTTP status from the target; NULL when no target answered
    connect_ms      DOUBLE PRECISION,          -- time to connect to the target; NULL without a connection
    target_ms       DOUBLE PRECISION,          -- target's response time; NULL when no target answered
    total_ms        DOUBLE PRECISION NOT NULL, -- from request received to response sent
    request_bytes   BIGINT NOT NULL,
    response_bytes  BIGINT NOT NULL,
    timed_out       BOOLEAN NOT NULL,          -- the load balancer gave up waiting for the target
    response_flags  TEXT,                      -- Envoy-style flags: UH no healthy target, UF connect failure,
                                               -- UO overflow, UT timeout, URX retry limit; NULL when none
    retry_after     INTEGER,                   -- Retry-After seconds sent with a 429 / 503; NULL when absent
    is_health_check BOOLEAN NOT NULL           -- health-check traffic, left out of the KPIs
) WITH (time_column = 'ts', partition = '1 day', retention = '90 days', sort_key = 'lb, backend');
