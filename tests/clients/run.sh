#!/usr/bin/env bash
# Real PostgreSQL clients against a trafficdb server started on a free loopback port: a scripted psql
# session (compared with psql_session.expected), the Python drivers (python_clients.py), Power BI's
# Npgsql 4.0.17 message sequence replayed over a raw socket (powerbi_replay.py) and Grafana's
# PostgreSQL data source queries (grafana.py). Installs psql (Debian's postgresql-client) and the
# Python packages (in a virtualenv under ~/.cache) if missing. Prints a `test result:` line per
# suite. Usage: bash tests/clients/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$HOME/.cache/trafficdb-target}"
bin="$target/release/trafficdb"
[ -x "$bin" ] || { echo "build first: cargo build --release --workspace --all-targets" >&2; exit 1; }

if ! command -v psql >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql-client >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql-client >/dev/null; }
fi
venv="$HOME/.cache/trafficdb-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "psycopg[binary]" psycopg2-binary asyncpg pg8000 sqlalchemy pandas

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin" serve -d "$work/data" --listen "127.0.0.1:$port" 2>"$work/server.log" &
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
kill -0 "$server" 2>/dev/null || { echo "the server died:"; cat "$work/server.log"; exit 1; }
[ "$failed" = 0 ]
