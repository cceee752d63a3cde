#!/usr/bin/env bash
# Runs every test of the project: formatting, clippy, the Rust unit and integration tests (.slt files,
# crash, corruption, concurrency, kill -9, the PostgreSQL wire server with tokio-postgres), the
# doctests, real PostgreSQL clients against a running server (tests/clients/run.sh, which installs
# psql, the Python drivers, pgjdbc and node-postgres it needs), and the benchmark harness in smoke mode
# (benches/compare/run.sh, which installs PostgreSQL 15, DuckDB, chDB and DataFusion). Builds in release mode, once, for tests and binary alike. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/trafficdb-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== one build for the README's two commands (cargo tree features of the binary = the workspace's)"
python3 scripts/feature-diff.py

echo "== no circles of module imports inside a crate"
python3 scripts/module-circles.py

echo "== every SQLSTATE named through one vocabulary"
python3 scripts/sqlstate-literals.py

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== doctests"
cargo test --release --workspace --doc 2>&1 | tee -a "$log"

echo "== unit and integration tests (release)"
cargo test --release --workspace --all-targets 2>&1 | tee -a "$log"

echo "== real PostgreSQL clients (psql, psycopg 3, psycopg2, asyncpg, pg8000, SQLAlchemy + pandas, pgjdbc, node-postgres)"
cargo build --release --workspace --all-targets
bash tests/clients/run.sh 2>&1 | tee -a "$log"

echo "== benchmark harness, smoke mode (tiny data, one repetition, every result checked against DuckDB's)"
smoke_out="$(mktemp -d)"
bash benches/compare/run.sh --scale smoke --reps 1 --out "$smoke_out" 2>&1 | tee -a "$log"
rm -rf "$smoke_out"

# One closing line for the whole run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
