-- Availability objectives for the SLO burn-rate view (kpi_slo_burn): one row per backend, and optionally
-- a row with backend '*' as the default for the others. Without any row the objective is 99.9 %.
-- Example: INSERT INTO slo_objectives VALUES ('payments', 0.9995), ('*', 0.999);
CREATE TABLE IF NOT EXISTS slo_objectives (
    backend         TEXT NOT NULL,             -- a backend, or '*' for every backend without its own row
    objective       DOUBLE PRECISION NOT NULL  -- share of attempts that must not fail, e.g. 0.999
);
