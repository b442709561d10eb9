#!/usr/bin/env bash
# TLS at the edge: flashgate vs nginx terminating TLS with the same certificate (ECDSA
# P-256, made here) in front of the same upstream, each with one worker pinned to CPU 0;
# wrk and the upstream share CPU 1. Everything is on loopback. Two figures each:
#   handshakes/s  every request on a new connection (Connection: close): a full TLS
#                 handshake, one request, close;
#   passthrough   keep-alive HTTPS requests proxied to the upstream.
# Both servers keep their default session resumption (nginx: tickets; rustls: a stateful
# cache); wrk does not resume sessions, so every handshake is a full one.
#
#   bash bench/tls.sh                    # 3 runs × 10 s each, 64 connections
#   DURATION=30 RUNS=5 CONNS=128 bash bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
ensure_packages openssl:openssl

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
CONNS=${CONNS:-64}
UP_PORT=${UP_PORT:-19181}
NGINX_PORT=${NGINX_PORT:-19182}
FG_PORT=${FG_PORT:-19183}
FG_ADMIN_PORT=${FG_ADMIN_PORT:-19184}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

upstream_conf "$WORK/up" "$UP_PORT"
proxy_conf "$WORK/px" "$UP_PORT" "        listen 127.0.0.1:$NGINX_PORT ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;"
cat > "$WORK/flashgate.toml" <<CONF
[server]
listen = "127.0.0.1:$FG_PORT"
admin_listen = "127.0.0.1:$FG_ADMIN_PORT"
shutdown_grace = "0s"   # no balancer watches /readyz here: stop at once
threads = 1
[server.tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
[upstream]
url = "http://127.0.0.1:$UP_PORT"
pool_size = 256
[delivery]
signing_secret = "bench"
[log]
level = "warn"
CONF

$PIN_LOAD "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" -g 'daemon off;' & PIDS+=($!)
$PIN_PROXY "$NGINX" -p "$WORK/px" -c "$WORK/px/nginx.conf" -g 'daemon off;' & PIDS+=($!)
$PIN_PROXY "$FLASHGATE" serve --config "$WORK/flashgate.toml" & PIDS+=($!)
wait_port "$UP_PORT"; wait_port "$NGINX_PORT"; wait_port "$FG_PORT"

for port in "$NGINX_PORT" "$FG_PORT"; do
    got=$(wrk -t1 -c1 -d1s "https://127.0.0.1:$port/" | grep -c "Non-2xx\|Socket errors" || true)
    [ "$got" = 0 ] || { echo "the server on port $port answers errors" >&2; exit 1; }
done

rps() { # port extra-wrk-args... -> requests/s of one run
    local port=$1; shift
    $PIN_LOAD wrk -t1 -c"$CONNS" -d"${DURATION}s" "$@" "https://127.0.0.1:$port/api/items?page=1" \
        | awk '/Non-2xx/ { bad = 1 } /Requests\/sec/ { r = $2 } END { if (bad) print "ERR"; else print r }'
}

measure() { # label extra-wrk-args...
    local label=$1; shift
    local NG=() FG=() n f
    for i in $(seq 1 "$RUNS"); do
        n=$(rps "$NGINX_PORT" "$@"); f=$(rps "$FG_PORT" "$@")
        { [ "$n" = ERR ] || [ "$f" = ERR ]; } && { echo "a run saw non-2xx answers" >&2; exit 1; }
        echo "  $label run $i: nginx ${n}/s   flashgate ${f}/s"
        NG+=("$n"); FG+=("$f")
    done
    n=$(printf '%s\n' "${NG[@]}" | median); f=$(printf '%s\n' "${FG[@]}" | median)
    echo "median $label: nginx ${n}/s, flashgate ${f}/s, ratio $(awk -v f="$f" -v n="$n" 'BEGIN { printf "%.2f", f / n }')x (target >= 1.00x)"
}

echo "tls: ${RUNS} runs × ${DURATION}s, ${CONNS} connections, servers pinned to one core, ECDSA P-256"
[ "$WARMUP" = 0 ] || wrk -t1 -c"$CONNS" -d"${WARMUP}s" "https://127.0.0.1:$NGINX_PORT/" >/dev/null   # warm-up
[ "$WARMUP" = 0 ] || wrk -t1 -c"$CONNS" -d"${WARMUP}s" "https://127.0.0.1:$FG_PORT/" >/dev/null
measure handshakes -H "Connection: close"
measure passthrough
