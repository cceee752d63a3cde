-- Alert rules and the transitions they produce (docs/operations.md#alerts). A rule's query returns one
-- row per thing that is wrong now; the columns other than `value` name it. The server evaluates the
-- enabled rules every `every`, appends each firing and resolving to alert_events, and POSTs it to the
-- rule's webhook when it has one. `CALL evaluate_alerts()` evaluates every rule at once.

CREATE TABLE IF NOT EXISTS alert_rules (
    name        TEXT NOT NULL,               -- unique by convention; the events carry it
    query       TEXT NOT NULL,               -- a SELECT (only reads are allowed)
    every       TEXT NOT NULL,               -- e.g. '1 minute'
    webhook     TEXT,                        -- http://host:port/path, or NULL
    enabled     BOOLEAN NOT NULL,
    description TEXT
);

CREATE TABLE IF NOT EXISTS alert_events (
    ts      TIMESTAMP NOT NULL,              -- when the evaluation saw the change (UTC)
    alert   TEXT NOT NULL,                   -- the rule's name
    state   TEXT NOT NULL,                   -- firing or resolved
    key     TEXT NOT NULL,                   -- the instance: its columns other than value, name=value
    value   DOUBLE PRECISION,                -- the rule's value column, if any
    details TEXT                             -- the whole row as JSON
) WITH (time_column = 'ts', partition = '7 days', retention = '365 days');

-- Ready-made rules over the KPI views, disabled: to enable one, delete its row and insert it again with
-- enabled = true (or add rules of your own). Each looks at the newest minute of its view.
INSERT INTO alert_rules (name, query, every, webhook, enabled, description)
SELECT * FROM (VALUES
  ('slo_fast_burn',
   'SELECT lb, backend, burn_1h AS value FROM kpi_slo_burn WHERE page_1h_5m AND bucket = (SELECT max(bucket) FROM kpi_slo_burn)',
   '1 minute', CAST(NULL AS TEXT), false,
   'Error budget burning 14.4x over 1 h and 5 min (Google SRE workbook: page)'),
  ('slo_slow_burn',
   'SELECT lb, backend, burn_6h AS value FROM kpi_slo_burn WHERE page_6h_30m AND bucket = (SELECT max(bucket) FROM kpi_slo_burn)',
   '5 minutes', CAST(NULL AS TEXT), false,
   'Error budget burning 6x over 6 h and 30 min (page)'),
  ('kpi_anomaly',
   'SELECT kpi, backend, score AS value FROM kpi_anomalies WHERE is_anomaly AND bucket = (SELECT max(bucket) FROM kpi_anomalies)',
   '1 minute', CAST(NULL AS TEXT), false,
   'A KPI outside its robust band (kpi_anomalies) in the newest minute')
) AS seed(name, query, every, webhook, enabled, description)
WHERE NOT EXISTS (SELECT 1 FROM alert_rules);
