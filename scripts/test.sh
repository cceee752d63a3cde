#!/usr/bin/env bash
# Runs every test of the project: formatting, the Rust unit and integration tests (.slt files, crash,
# corruption, concurrency, kill -9), and the doctests. Builds in release mode, once, for tests and
# binary alike. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/trafficdb-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test (release)"
cargo test --release --workspace --all-targets
cargo test --release --workspace --doc
