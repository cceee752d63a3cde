-- The backends (pools / target groups): a dimension for star-schema BI models, joined to lb_requests
-- and lb_targets on backend.
CREATE TABLE IF NOT EXISTS backends (
    backend         TEXT NOT NULL,             -- pool / target group
    lb              TEXT NOT NULL,             -- load balancer in front of it
    zone            TEXT,                      -- home zone; NULL when it spans zones
    capacity_rps    DOUBLE PRECISION,          -- requests per second it serves before saturating
    weight          SMALLINT                   -- share of its load balancer's traffic
);
