#!/usr/bin/env bash
# A fuzz smoke of each decoder of untrusted bytes (fuzz/README.md): SECONDS (default 60) of libFuzzer
# per target, every target unless some are named. Installs cargo-fuzz when missing; needs the nightly
# toolchain. Fails on the first finding (the input is kept in fuzz/artifacts/TARGET/).
#
# Usage: bash scripts/fuzz-smoke.sh [SECONDS] [TARGET...]
#   SANITIZER=address bash scripts/fuzz-smoke.sh    # AddressSanitizer (default none: twice as fast)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-60}"
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(segment_open wal_replay line_protocol copy)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/trafficdb-fuzz-target}"
cd "$root/fuzz"
# The workspace's versions of everything both lock files hold.
[ -f Cargo.lock ] || cp ../Cargo.lock Cargo.lock
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
    echo "== $t: ${secs}s"
    status=0
    cargo +nightly fuzz run --release --sanitizer "${SANITIZER:-none}" --target-dir "$target_dir" "$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -60 "$log"
        echo "$t failed (exit $status); a finding is kept in fuzz/artifacts/$t/"
        exit 1
    fi
done
