#!/usr/bin/env bash
# Scores detect_anomalies against the generator's ground truth (the injected incidents and the overloads
# it observed): for each method, the per-minute KPIs of every backend (total p90 latency, 5xx rate and
# retry rate upward, weighed by the minute's requests; healthy-target share downward) are scored, and the
# anomalous (backend, minute) pairs compared with the incidents' windows and scopes (a zone loss covers
# every backend). The last row scores the view kpi_anomalies itself. Prints, per method: per-incident
# recall (incidents with an anomaly in scope during the incident), per-minute precision and recall, the
# anomalous minutes, and the time taken.
# Usage: bash benches/anomaly/score.sh DATA_DIR   (e.g. after trafficdb generate --rows 10000000 --into DIR)
# Environment: METHODS (default "zscore mad tukey ewma seasonal kpi_anomalies"), EXTRA (options appended to
# every method's, e.g. "exclude_anomalies=0"), WEIGHT (default "weight=attempts"; empty: unweighted),
# SINCE (a timestamp: score only incidents and minutes from then on, e.g. the second week of 14 days).
set -euo pipefail
dir="${1:?usage: score.sh DATA_DIR}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/trafficdb-target}/release/trafficdb"
weight="${WEIGHT-weight=attempts}"
since="${SINCE:-1970-01-01 00:00:00}"
for method in ${METHODS:-zscore mad tukey ewma seasonal kpi_anomalies}; do
    extra=""
    [ "$method" = seasonal ] && extra=", period=1 day, min_history=3"
    [ -n "${EXTRA:-}" ] && extra="$extra, $EXTRA"
    kpis=""
    for kpi in \
        "total_p90_ms|SELECT bucket, backend, total_p90_ms AS v, attempts FROM kpi_latency_1m|up|5|$weight" \
        "error_rate|SELECT bucket, backend, CAST(errors AS DOUBLE PRECISION) / attempts AS v, attempts FROM kpi_requests_1m|up|0.01|$weight" \
        "retry_rate|SELECT bucket, backend, CAST(retries AS DOUBLE PRECISION) / attempts AS v, attempts FROM kpi_requests_1m|up|0.02|$weight" \
        "healthy_ratio|SELECT bucket, backend, healthy_ratio AS v FROM kpi_backend_health_1m|down|0.02|"; do
        IFS='|' read -r name query direction spread w <<<"$kpi"
        [ -n "$kpis" ] && kpis="$kpis UNION ALL "
        kpis="$kpis SELECT ts, backend FROM detect_anomalies('$query', 'bucket', 'v', 'backend',
              'method=$method, direction=$direction, min_spread=$spread${w:+, $w}$extra') WHERE is_anomaly"
    done
    [ "$method" = kpi_anomalies ] && kpis="SELECT bucket AS ts, backend FROM kpi_anomalies WHERE is_anomaly"
    start=$(date +%s.%N)
    "$bin" sql -d "$dir" -f csv -c "
        WITH flagged AS (SELECT DISTINCT ts, backend FROM ($kpis) a WHERE ts >= TIMESTAMP '$since'),
        scope AS (
            SELECT DISTINCT k.bucket AS ts, k.backend,
                   CAST(i.started_at AS TEXT) || i.kind || coalesce(i.backend, i.zone, '') AS incident
            FROM kpi_requests_1m k JOIN incidents i
              ON k.bucket >= date_trunc('minute', i.started_at) AND k.bucket < i.ended_at
             AND (i.backend IS NULL OR i.backend = k.backend)
            WHERE i.started_at >= TIMESTAMP '$since'),
        truth AS (SELECT DISTINCT ts, backend FROM scope)
        SELECT '$method' AS method,
               (SELECT count(DISTINCT incident) FROM scope s JOIN flagged f ON f.ts = s.ts AND f.backend = s.backend)
                 || '/' || (SELECT count(*) FROM incidents WHERE started_at >= TIMESTAMP '$since') AS incidents_found,
               round(CAST((SELECT count(*) FROM flagged f JOIN truth t ON t.ts = f.ts AND t.backend = f.backend) AS DOUBLE PRECISION)
                 / NULLIF((SELECT count(*) FROM flagged), 0), 3) AS minute_precision,
               round(CAST((SELECT count(*) FROM flagged f JOIN truth t ON t.ts = f.ts AND t.backend = f.backend) AS DOUBLE PRECISION)
                 / NULLIF((SELECT count(*) FROM truth), 0), 3) AS minute_recall,
               (SELECT count(*) FROM flagged) AS flagged_minutes" | tail -n +2 | tr '\n' ','
    printf '%.1f s\n' "$(echo "$(date +%s.%N) - $start" | bc)"
done
