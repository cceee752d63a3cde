-- A scripted psql session: psql's describe commands, expanded display and \copy both ways.
-- Run by tests/clients/run.sh; its output must equal psql_session.expected.
CREATE TABLE req (ts TIMESTAMP NOT NULL, backend TEXT NOT NULL, ms DOUBLE PRECISION, code INT) WITH (time_column = 'ts');
CREATE VIEW per_backend AS SELECT backend, count(*) AS n FROM req GROUP BY backend;
\copy req FROM 'req.csv' WITH (FORMAT csv, HEADER)
SELECT count(*) AS copied FROM req;
\d
\dt
\dv
\d req
\d+ req
\d+ per_backend
\df
\dn
\l
\x
SELECT backend, n FROM per_backend ORDER BY backend;
\x
\copy (SELECT backend, ms, code FROM req WHERE code = 503 ORDER BY ts) TO 'out.csv' WITH (FORMAT csv)
\! cat out.csv
SELECT nope FROM req;
