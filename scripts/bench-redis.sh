# Sourced by the benchmarks that need Redis: starts a throwaway redis-server on
# 127.0.0.1:$PORT (no persistence, its own temporary directory), waits until it answers,
# sets REDIS_URL, and stops it on exit.
# shellcheck shell=bash

source "$(dirname "${BASH_SOURCE[0]}")/ensure-packages.sh"
ensure_packages redis-server:redis-server redis-cli:redis-tools redis-benchmark:redis-tools

REDIS_WORK=$(mktemp -d)
redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no --dir "$REDIS_WORK" >/dev/null &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$REDIS_WORK"' EXIT
for _ in $(seq 1 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS_URL="redis://127.0.0.1:$PORT"
