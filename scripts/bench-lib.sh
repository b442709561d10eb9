# Sourced by the benchmark and load-test scripts: shared set-up for runs on loopback.
# shellcheck shell=bash

source "$(dirname "${BASH_SOURCE[0]}")/ensure-packages.sh"
ensure_packages wrk:wrk nginx:nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# Builds the release binary, makes $WORK, and stops everything in $PIDS on exit.
cargo build --release --locked -q
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The server under test on CPU 0, the load (and any upstream) on CPU 1.
PIN_PROXY="taskset -c 0"
PIN_LOAD="taskset -c 1"
if [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; then PIN_PROXY=""; PIN_LOAD=""; fi

# Waits (10 s at most) until something listens on 127.0.0.1:PORT.
wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

# The median of numbers on stdin, one a line.
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
