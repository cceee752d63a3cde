#!/usr/bin/env bash
# The wire server next to PostgreSQL 15 on the same machine, in one run:
#   1. `SELECT 1` round trip, one client, simple, extended and prepared protocol, and `SELECT now()`
#      (a statement planned each time): p50 / p99 / mean (pgbench's per-transaction log);
#   2. queries per second of 8 clients on a small indexed lookup (100k rows, `WHERE id = $1`, random id;
#      PostgreSQL has a B-tree index on id, trafficdb prunes row groups by min/max);
#   3. `COPY ... FROM STDIN` rows/s for ROWS generated rows (6 columns shaped like request logs), durable
#      on both sides (PostgreSQL with its default fsync and WAL settings), through psql's \copy.
# Prints a Markdown table. Builds nothing: run `cargo build --release --workspace --all-targets` first.
# Installs PostgreSQL 15 (Debian's postgresql-15) if missing.
# Usage: bash benches/wire/compare_pg.sh [ROWS (default 10000000)] ; SECS=10 sets each pgbench run's length.
set -euo pipefail
rows="${1:-10000000}"
secs="${SECS:-10}"
target="${CARGO_TARGET_DIR:-$HOME/.cache/trafficdb-target}"
bin="$target/release/trafficdb"
[ -x "$bin" ] || { echo "build first: cargo build --release --workspace --all-targets" >&2; exit 1; }
pgbin=/usr/lib/postgresql/15/bin
if [ ! -x "$pgbin/postgres" ] || ! command -v pgbench >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql-15 postgresql-client-15 >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q postgresql-15 postgresql-client-15 >/dev/null; }
fi

work="$(mktemp -d /tmp/wirebench.XXXXXX)"
chmod 755 "$work"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pgport="$(free_port)"
tport="$(free_port)"
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi; }
mkdir -p "$work/pg" && chown postgres "$work/pg" 2>/dev/null || true
as_pg "$pgbin/initdb -D $work/pg -A trust -U postgres >/dev/null"
as_pg "$pgbin/pg_ctl -D $work/pg -o '-p $pgport -k $work/pg -c listen_addresses=127.0.0.1' -l $work/pg/log -w start >/dev/null"
"$bin" serve --empty -d "$work/tdb" --listen "127.0.0.1:$tport" 2>"$work/tdb.log" &
tdb=$!
cleanup() {
    kill "$tdb" 2>/dev/null; wait "$tdb" 2>/dev/null
    as_pg "$pgbin/pg_ctl -D $work/pg -m fast -w stop >/dev/null" || true
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do psql -X -q -h 127.0.0.1 -p "$tport" -U postgres -d trafficdb -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
pg() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres -d postgres "$@"; }
td() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$tport" -U postgres -d trafficdb "$@"; }

# p50 / p99 / mean latency in ms from pgbench logs (third field: microseconds).
latency() { cat "$@" | awk '{print $3}' | sort -n | awk '{a[NR]=$1; s+=$1} END {printf "%.3f | %.3f | %.3f", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, s/NR/1000}'; }

echo "| measurement | PostgreSQL 15 | trafficdb | ratio (trafficdb / PostgreSQL) |"
echo "|---|---|---|---|"

# 1. Round trip: `SELECT 1` (a plan the server keeps per connection) in each protocol, and
# `SELECT now()` (planned every time it runs).
echo "SELECT 1;" >"$work/s1.sql"
echo "SELECT now();" >"$work/now.sql"
for run in "s1 simple" "s1 extended" "s1 prepared" "now simple" "now extended"; do
    set -- $run; file=$1; mode=$2
    for sys in pg td; do
        port=$pgport; db=postgres; [ $sys = td ] && { port=$tport; db=trafficdb; }
        (cd "$work" && pgbench -n -h 127.0.0.1 -p "$port" -U postgres -f "$file.sql" -T "$secs" -c 1 -M "$mode" \
            -l --log-prefix="rt_${sys}_${file}_${mode}" "$db" >/dev/null 2>&1)
    done
    p=$(latency "$work"/rt_pg_${file}_${mode}.*); t=$(latency "$work"/rt_td_${file}_${mode}.*)
    what="SELECT 1"; [ "$file" = now ] && what="SELECT now()"
    echo "| $what round trip, $mode protocol, ms p50 / p99 / mean | ${p// |/ \/} | ${t// |/ \/} | $(awk -v a="${t%% *}" -v b="${p%% *}" 'BEGIN{printf "%.1fx", a/b}') (p50) |"
done

# 2. Indexed lookup, 8 clients.
lookup_rows=100000
pg -c "CREATE TABLE lookup (id BIGINT NOT NULL, name TEXT, v DOUBLE PRECISION)" \
   -c "INSERT INTO lookup SELECT g, 'name-' || g, g * 0.5 FROM generate_series(1, $lookup_rows) g" \
   -c "CREATE INDEX ON lookup (id)" -c "VACUUM ANALYZE lookup"
td -c "CREATE TABLE lookup (id BIGINT NOT NULL, name TEXT, v DOUBLE PRECISION)" \
   -c "INSERT INTO lookup SELECT g, 'name-' || g, g * 0.5 FROM generate_series(1, $lookup_rows) g"
printf '\\set id random(1, %d)\nSELECT id, name, v FROM lookup WHERE id = :id;\n' "$lookup_rows" >"$work/lookup.sql"
qps() { pgbench -n -h 127.0.0.1 -p "$1" -U postgres -f "$work/lookup.sql" -T "$secs" -c 8 -j 2 -M extended "$2" 2>/dev/null \
    | awk '/^tps/ {printf "%.0f", $3}'; }
p=$(qps "$pgport" postgres); t=$(qps "$tport" trafficdb)
echo "| lookup by id, 8 clients, extended protocol, queries/s | $p | $t | $(awk -v a="$t" -v b="$p" 'BEGIN{printf "%.2fx", a/b}') |"

# 3. COPY FROM STDIN.
python3 - "$rows" "$work/req.tsv" <<'PY'
import random, sys, datetime as dt
n, path = int(sys.argv[1]), sys.argv[2]
rng = random.Random(42)
t0 = dt.datetime(2024, 1, 1)
lbs = [f"lb-{i}" for i in range(4)]
backends = [f"backend-{i:02d}" for i in range(40)]
statuses = [200] * 90 + [201, 204, 301, 304, 400, 404, 429, 500, 502, 503]
with open(path, "w") as f:
    us = 0
    chunk = []
    for i in range(n):
        us += rng.randrange(0, 120_000)
        ts = t0 + dt.timedelta(microseconds=us)
        chunk.append(f"{ts:%Y-%m-%d %H:%M:%S.%f}\t{rng.choice(lbs)}\t{rng.choice(backends)}\t{rng.choice(statuses)}\t"
                     f"{rng.lognormvariate(3, 0.8):.3f}\t{rng.randrange(200, 200_000)}\n")
        if len(chunk) == 100_000:
            f.write("".join(chunk)); chunk = []
    f.write("".join(chunk))
PY
cols="ts TIMESTAMP NOT NULL, lb TEXT, backend TEXT, status INT, ms DOUBLE PRECISION, bytes BIGINT"
pg -c "CREATE TABLE req ($cols)"
td -c "CREATE TABLE req ($cols) WITH (time_column = 'ts')"
copy_rate() {
    local start end
    start=$(date +%s.%N); "$@" -c "\\copy req FROM '$work/req.tsv'"; end=$(date +%s.%N)
    awk -v n="$rows" -v s="$start" -v e="$end" 'BEGIN{printf "%.0f", n/(e-s)}'
}
p=$(copy_rate pg); t=$(copy_rate td)
pc=$(pg -At -c "SELECT count(*) FROM req"); tc=$(td -At -c "SELECT count(*) FROM req")
[ "$pc" = "$rows" ] && [ "$tc" = "$rows" ] || { echo "row counts differ: PostgreSQL $pc, trafficdb $tc, expected $rows" >&2; exit 1; }
echo "| COPY FROM STDIN ($rows rows, psql \\copy), rows/s | $p | $t | $(awk -v a="$t" -v b="$p" 'BEGIN{printf "%.2fx", a/b}') |"
