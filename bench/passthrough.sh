#!/usr/bin/env bash
# Passthrough throughput: flashgate vs nginx as the same reverse proxy.
#
# Both proxies run one worker (flashgate: one runtime thread; nginx: worker_processes 1),
# pinned to CPU 0, in front of the same upstream (an nginx answering a small fixed body) and
# driven by the same wrk load; wrk and the upstream share CPU 1. Everything is on loopback.
#
#   bash bench/passthrough.sh            # 10 s per run, 3 runs each, 64 connections
#   DURATION=30 RUNS=5 CONNS=128 bash bench/passthrough.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
CONNS=${CONNS:-64}
UP_PORT=${UP_PORT:-19081}
NGINX_PORT=${NGINX_PORT:-19082}
FG_PORT=${FG_PORT:-19083}
FG_ADMIN_PORT=${FG_ADMIN_PORT:-19084}

# The upstream: a fixed 128-byte JSON answer (scripts/bench-lib.sh).
upstream_conf "$WORK/up" "$UP_PORT"

# nginx as the reverse proxy flashgate is compared with (scripts/bench-lib.sh).
proxy_conf "$WORK/px" "$UP_PORT" "        listen 127.0.0.1:$NGINX_PORT;
        client_max_body_size 1m;"

cat > "$WORK/flashgate.toml" <<CONF
[server]
listen = "127.0.0.1:$FG_PORT"
admin_listen = "127.0.0.1:$FG_ADMIN_PORT"
shutdown_grace = "0s"   # no balancer watches /readyz here: stop at once
threads = 1
[upstream]
url = "http://127.0.0.1:$UP_PORT"
pool_size = 256
[log]
level = "warn"
CONF

$PIN_LOAD "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" -g 'daemon off;' & PIDS+=($!)
$PIN_PROXY "$NGINX" -p "$WORK/px" -c "$WORK/px/nginx.conf" -g 'daemon off;' & PIDS+=($!)
$PIN_PROXY "$FLASHGATE" serve --config "$WORK/flashgate.toml" & PIDS+=($!)

wait_port "$UP_PORT"; wait_port "$NGINX_PORT"; wait_port "$FG_PORT"

# Both proxies must answer the upstream's body before anything is measured.
for port in "$NGINX_PORT" "$FG_PORT"; do
    got=$(wrk -t1 -c1 -d1s "http://127.0.0.1:$port/" | grep -c "Non-2xx" || true)
    [ "$got" = 0 ] || { echo "proxy on port $port answers errors" >&2; exit 1; }
done

rps() { # port -> requests/s of one run
    $PIN_LOAD wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$1/api/items?page=1" \
        | awk '/Non-2xx/ { bad = 1 } /Requests\/sec/ { r = $2 } END { if (bad) print "ERR"; else print r }'
}

echo "passthrough: ${RUNS} runs × ${DURATION}s, ${CONNS} connections, proxies pinned to one core"
[ "$WARMUP" = 0 ] || wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$NGINX_PORT/" >/dev/null   # warm-up
[ "$WARMUP" = 0 ] || wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$FG_PORT/" >/dev/null
NG=(); FG=()
for i in $(seq 1 "$RUNS"); do
    n=$(rps "$NGINX_PORT"); f=$(rps "$FG_PORT")
    [ "$n" = ERR ] || [ "$f" = ERR ] && { echo "a run saw non-2xx answers" >&2; exit 1; }
    echo "  run $i: nginx ${n} req/s   flashgate ${f} req/s"
    NG+=("$n"); FG+=("$f")
done
n=$(printf '%s\n' "${NG[@]}" | median); f=$(printf '%s\n' "${FG[@]}" | median)
ratio=$(awk -v f="$f" -v n="$n" 'BEGIN { printf "%.2f", f / n }')
echo "median: nginx proxy_pass ${n} req/s, flashgate ${f} req/s, ratio ${ratio}x (target >= 1.00x)"
