-- Known incidents with their time and scope: the ground truth the telemetry generator writes for the
-- incidents it injects, used to score anomaly detection and the retry model. Times are UTC.
CREATE TABLE IF NOT EXISTS incidents (
    started_at      TIMESTAMP NOT NULL,
    ended_at        TIMESTAMP NOT NULL,
    kind            TEXT NOT NULL,             -- target_outage, latency_regression, zone_loss, bad_deploy, retry_storm, overload (observed)
    lb              TEXT,                      -- scope; NULL where the incident is not limited to one
    backend         TEXT,
    zone            TEXT,
    target          TEXT,
    description     TEXT
);
