#!/usr/bin/env bash
# trafficdb next to DuckDB, chDB, DataFusion-on-Parquet and PostgreSQL 15 on the same generated data, in one
# run (benches/compare/harness.py; docs/benchmarks.md). Installs what it needs: PostgreSQL 15 (Debian's
# postgresql-15) and, in a virtualenv under ~/.cache, duckdb, chdb, datafusion, psycopg, pyarrow and
# matplotlib. Builds the trafficdb binary if it is missing.
#
# Usage: bash benches/compare/run.sh [--scale smoke|sf1m|sf10m|sf100m] [--reps N] [--out DIR] [harness options]
#   default: --scale sf10m --reps 5 --out benches/compare/results
# The scratch data (generated files, every system's database) goes to a temporary directory, removed at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$HOME/.cache/trafficdb-target}"
bin="$target/release/trafficdb"
# The same command as the test script, so the two share one build.
[ -x "$bin" ] || (cd "$root" && CARGO_TARGET_DIR="$target" cargo build --release --workspace --all-targets)

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}
[ -x /usr/lib/postgresql/15/bin/postgres ] || apt_install postgresql-15
command -v /usr/bin/time >/dev/null || apt_install time
venv="$HOME/.cache/trafficdb-bench-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check duckdb==2.0.1 chdb==4.4.0 datafusion==55.0.0 \
    "psycopg[binary]==3.2.*" pyarrow matplotlib

out="$root/benches/compare/results"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
work="$(mktemp -d /tmp/trafficdb-compare.XXXXXX)"
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" "$here/harness.py" --binary "$bin" --work "$work" --out "$out" "${args[@]}"
