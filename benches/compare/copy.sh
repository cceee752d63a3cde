#!/usr/bin/env bash
# copy.sh BINARY CSV_DIR [CONNECTIONS]: times `psql \copy` of every lb_requests.*.csv in CSV_DIR (the
# chunks harness.py writes under its --work directory) into a fresh `trafficdb serve`, the files dealt
# round-robin to CONNECTIONS concurrent connections (default 1). Prints the wall time, rows/s, the
# server's CPU seconds and its peak RSS.
set -euo pipefail
bin=$1 csv=$2 conns=${3:-1}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve -d "$dir" --listen "127.0.0.1:$port" 2>"$dir.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir" "$dir.log"' EXIT
for _ in $(seq 300); do psql -X -q -h 127.0.0.1 -p "$port" -d trafficdb -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
mapfile -t files < <(ls "$csv"/lb_requests.*.csv)
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu); t0=$(date +%s.%N)
for ((c = 0; c < conns; c++)); do
    (
        for ((i = c; i < ${#files[@]}; i += conns)); do
            psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -d trafficdb \
                -c "\\copy lb_requests FROM '${files[i]}' (FORMAT csv)"
        done
    ) &
done
wait $(jobs -p | grep -v "^$pid$")
t1=$(date +%s.%N); c1=$(cpu)
rows=$(psql -X -q -At -h 127.0.0.1 -p "$port" -d trafficdb -c 'SELECT count(*) FROM lb_requests')
python3 - "$t0" "$t1" "$rows" "$c0" "$c1" "$ticks" "$conns" "$(grep VmHWM /proc/$pid/status | awk '{print $2}')" <<'PY'
import sys
t0, t1, rows, c0, c1, ticks, conns, hwm = sys.argv[1:]
wall = float(t1) - float(t0)
print(f"{int(rows):,} rows on {conns} connection(s) in {wall:.2f} s: {int(rows) / wall / 1e6:.2f} M rows/s; "
      f"server CPU {(int(c1) - int(c0)) / int(ticks):.1f} s; peak RSS {int(hwm) // 1024} MiB")
PY
