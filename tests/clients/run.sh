#!/usr/bin/env bash
# Real PostgreSQL clients against a trafficdb server started on a free loopback port: a scripted psql
# session (compared with psql_session.expected), the Python drivers (python_clients.py), Power BI's
# Npgsql 4.0.17 message sequence replayed over a raw socket (powerbi_replay.py), Grafana's PostgreSQL
# data source queries (grafana.py), pgjdbc (JdbcClient.java) and node-postgres (node_client.js); then
# README's first command, `serve --demo`, started twice on a new directory; the retry model's boosted
# trees against scikit-learn on a later week of 14 generated days (retry_trees.py); then random DELETE and
# UPDATE statements compared with PostgreSQL 15 (dml_diff.py), pgcli's and DBeaver's connect-time
# queries next to PostgreSQL's answers (tool_replays.py), and the dialect corpus (tests/pg_dialect)
# answered by both (pg_dialect.py); and a loopback cluster over an S3 API served by moto (cluster.py).
# Installs what is missing: psql, PostgreSQL 15, a JDK and pgjdbc, Node.js (Debian's
# postgresql-client, postgresql-15, default-jdk-headless, libpostgresql-jdbc-java, nodejs, npm), the
# Python packages (in a virtualenv under ~/.cache) and the npm packages (under ~/.cache/trafficdb-node).
# Prints a `test result:` line per suite and fails if any suite failed or the server died.
# Usage: bash tests/clients/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$HOME/.cache/trafficdb-target}"
bin="$target/release/trafficdb"
[ -x "$bin" ] || { echo "build first: cargo build --release --workspace --all-targets" >&2; exit 1; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}
command -v psql >/dev/null || apt_install postgresql-client
[ -x /usr/lib/postgresql/15/bin/postgres ] || apt_install postgresql-15
jdbc_jar=/usr/share/java/postgresql.jar
{ command -v javac >/dev/null && [ -f "$jdbc_jar" ]; } || apt_install default-jdk-headless libpostgresql-jdbc-java
{ command -v node >/dev/null && command -v npm >/dev/null; } || apt_install nodejs npm
# The console's browser test drives Debian's chromium with Playwright (which downloads no browser).
command -v chromium >/dev/null || apt_install chromium
venv="$HOME/.cache/trafficdb-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "psycopg[binary]" psycopg2-binary asyncpg pg8000 sqlalchemy pandas scikit-learn pgcli playwright "moto[server]" boto3
node_dir="$HOME/.cache/trafficdb-node"
[ -d "$node_dir/node_modules/pg" ] && [ -d "$node_dir/node_modules/pg-copy-streams" ] \
    || npm install -q --prefix "$node_dir" --no-audit --no-fund --loglevel=error pg@8 pg-copy-streams@7 >/dev/null

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin" serve --empty -d "$work/data" --listen "127.0.0.1:$port" 2>"$work/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    psql -X -q -h 127.0.0.1 -p "$port" -d trafficdb -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
done

passed=0
failed=0
cp "$here/req.csv" "$work/"
if (cd "$work" && psql -X -h 127.0.0.1 -p "$port" -d trafficdb -f "$here/psql_session.sql" >"$work/psql.out" 2>&1) \
    && sed "s|$here/||" "$work/psql.out" | diff -u "$here/psql_session.expected" - ; then
    echo "client psql (scripted session): ok"
    passed=$((passed + 1))
else
    echo "client psql (scripted session): FAILED"
    failed=$((failed + 1))
fi
echo "test result: $([ "$failed" = 0 ] && echo ok || echo FAILED). $passed passed; $failed failed"

"$venv/bin/python" "$here/python_clients.py" 127.0.0.1 "$port" || failed=$((failed + 1))
"$venv/bin/python" "$here/powerbi_replay.py" 127.0.0.1 "$port" || failed=$((failed + 1))
"$venv/bin/python" "$here/grafana.py" 127.0.0.1 "$port" || failed=$((failed + 1))

# The Java and Node clients run in a time zone other than UTC, where a driver's timestamps carry an
# offset (see JdbcClient.java).
mkdir "$work/jdbc"
if javac -d "$work/jdbc" -cp "$jdbc_jar" "$here/JdbcClient.java"; then
    java -Duser.timezone=Europe/Berlin -cp "$jdbc_jar:$work/jdbc" JdbcClient 127.0.0.1 "$port" || failed=$((failed + 1))
else
    echo "client pgjdbc: FAILED (JdbcClient.java does not compile)"
    echo "test result: FAILED. 0 passed; 1 failed"
    failed=$((failed + 1))
fi
TZ=Europe/Berlin NODE_PATH="$node_dir/node_modules" node "$here/node_client.js" 127.0.0.1 "$port" || failed=$((failed + 1))
kill -0 "$server" 2>/dev/null || { echo "the server died:"; cat "$work/server.log"; exit 1; }

# README's first command: `serve --demo` generates a week of telemetry into an empty directory, trains
# the retry model, then serves it; the KPI views and predict_retry answer, and a second start leaves the
# data and the model as they are. On the second start, the retry model is checked against scikit-learn
# and over HTTP (retry_model.py).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
demo_port="$(free_port)"
http_port="$(free_port)"
demo_ok=1
for round in 1 2; do
    "$bin" serve --demo -d "$work/demo" --listen "127.0.0.1:$demo_port" --http "127.0.0.1:$http_port" 2>"$work/demo.log" &
    demo=$!
    up=0
    for _ in $(seq 1800); do
        psql -X -q -h 127.0.0.1 -p "$demo_port" -d trafficdb -c "SELECT 1" >/dev/null 2>&1 && { up=1; break; }
        kill -0 "$demo" 2>/dev/null || break
        sleep 0.1
    done
    got="$(psql -X -A -t -h 127.0.0.1 -p "$demo_port" -d trafficdb \
        -c "SELECT (SELECT count(*) FROM lb_requests) || ' ' || (SELECT count(*) FROM incidents) || ' ' || (SELECT count(*) FROM kpi_requests_1h WHERE attempts > 0) || ' ' || (SELECT count(*) FROM models WHERE name = 'retry' AND deployed) || ' ' || (SELECT count(*) FROM kpi_retry_impact_1m WHERE expected_retries > 0)" 2>&1 || true)"
    if [ "$round" = 2 ] && [ "$up" = 1 ]; then
        # Two days of the demo week: the last half day held out.
        "$venv/bin/python" "$here/retry_model.py" 127.0.0.1 "$demo_port" "$http_port" \
            --where "ts >= (SELECT max(ts) FROM lb_requests) - INTERVAL '2 days'" --options "l2=1, eval_fraction=0.25" \
            || failed=$((failed + 1))
        "$venv/bin/python" "$here/console.py" "$bin" 127.0.0.1 "$demo_port" "$http_port" || failed=$((failed + 1))
    fi
    kill "$demo" 2>/dev/null; wait "$demo" 2>/dev/null || true
    read -r requests incidents hours models impact <<<"$got" || true
    if [ "$up" = 1 ] && [ "${requests:-}" = 3000000 ] && [ "${incidents:-0}" -gt 0 ] && [ "${hours:-0}" -gt 100 ] \
        && [ "${models:-}" = 1 ] && [ "${impact:-0}" -gt 1000 ] \
        && { [ "$round" = 1 ] || grep -q "already has rows" "$work/demo.log"; }; then
        :
    else
        echo "serve --demo (round $round): got '$got'"; cat "$work/demo.log"; demo_ok=0
    fi
done
# The retry model's boosted trees against scikit-learn on a later week (retry_trees.py): 14 generated
# days, trained on the first week's retryable failures, scored on the second.
"$bin" generate --days 14 --into "$work/d14" >"$work/d14.log" 2>&1 || { cat "$work/d14.log"; failed=$((failed + 1)); }
d14_port="$(free_port)"
"$bin" serve -d "$work/d14" --listen "127.0.0.1:$d14_port" 2>"$work/d14-server.log" &
d14=$!
for _ in $(seq 600); do
    psql -X -q -h 127.0.0.1 -p "$d14_port" -d trafficdb -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
done
"$venv/bin/python" "$here/retry_trees.py" 127.0.0.1 "$d14_port" || failed=$((failed + 1))
kill "$d14" 2>/dev/null; wait "$d14" 2>/dev/null || true
rm -rf "$work/d14"
# DELETE and UPDATE against PostgreSQL 15: seeded random statements, the tables compared after each
# (dml_diff.py starts its own PostgreSQL cluster and trafficdb server). DML_DIFF_SEED replays a run.
"$venv/bin/python" "$here/dml_diff.py" "$bin" --seed "${DML_DIFF_SEED:-1}" --statements "${DML_DIFF_STATEMENTS:-3000}" \
    || failed=$((failed + 1))
# A loopback cluster over S3 (moto): coordinator and three workers against a single node, a worker
# killed mid-query, the coordinator killed -9.
"$venv/bin/python" "$here/cluster.py" "$bin" || failed=$((failed + 1))
# pgcli's completion queries (its own executor) and DBeaver's connect-time statements, next to
# PostgreSQL 15.
"$venv/bin/python" "$here/tool_replays.py" "$bin" || failed=$((failed + 1))
# The dialect corpus (tests/pg_dialect) against PostgreSQL 15, both protocols: under the floor of
# equivalent / same-text / same-name answers per category (tests/pg_dialect/floor.json) fails.
"$venv/bin/python" "$here/pg_dialect.py" "$bin" || failed=$((failed + 1))

if [ "$demo_ok" = 1 ]; then
    echo "client psql (serve --demo with its retry model, then restarted): ok"
    echo "test result: ok. 1 passed; 0 failed"
else
    echo "client psql (serve --demo): FAILED"
    echo "test result: FAILED. 0 passed; 1 failed"
    failed=$((failed + 1))
fi
[ "$failed" = 0 ]
