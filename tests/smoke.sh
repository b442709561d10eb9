#!/usr/bin/env bash
# Smoke runs of every benchmark script and load-test script: a second or two of each, on the
# debug build `cargo test` just made (BIN_DIR; no release build), no figure judged. They
# must run to their end and print their figures, so that a change of contract (a token
# format, a route, a config key) cannot break one silently. tests/run.sh runs this; each
# script's own comment says how to run it for real figures.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bins.sh
BIN_DIR=$(target_dir)/debug
export BIN_DIR BENCH_PROFILE=dev
# Seconds, not minutes: one run of each, one second of load, a few connections.
export DURATION=1 RUNS=1 WARMUP=0 CONNS=8 HOLD=200 BURST=200 WAITING=200
export CLIENTS=4 STEPS=2000 RATE=200 WINDOW=1 KEEPALIVE=16 CHURN=4 EVERY=1

LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
failed=()
# smoke NAME EXPECTED-LINE COMMAND...: runs it; it must exit 0 and print a line matching
# EXPECTED-LINE (its figures), whatever the figures are.
smoke() {
    local name=$1 expected=$2; shift 2
    local start=$SECONDS
    if "$@" > "$LOG/$name.txt" 2>&1 && grep -Eq "$expected" "$LOG/$name.txt"; then
        echo "  $name: ok ($((SECONDS - start)) s)"
    else
        echo "  $name: FAILED ($*); its output:" >&2
        tail -n 30 "$LOG/$name.txt" >&2
        failed+=("$name")
    fi
}

echo "== smoke runs of the benchmark and load-test scripts (no figure judged)"
# compare.sh runs passthrough.sh, refusal.sh, redis_reserve.sh and connections.sh.
smoke compare '^connections +held idle: .* [0-9.]+x' bash bench/compare.sh
smoke tls '^median passthrough: .*ratio [0-9.]+x' bash bench/tls.sh
smoke global_drain '^token route: memory store' bash bench/global_drain.sh
smoke soak '^soak passed' bash loadtest/soak.sh
smoke run.sh '^result: PASS' bash loadtest/run.sh crowd-100k --smoke --progress 0
if [ ${#failed[@]} -gt 0 ]; then
    echo "smoke runs failed: ${failed[*]}" >&2
    exit 1
fi
