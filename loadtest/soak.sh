#!/usr/bin/env bash
# Proxy soak: sustained keep-alive load plus connection churn through flashgate, watching
# that every answer is a 2xx and that memory stays flat.
#
#   bash loadtest/soak.sh                     # 60 s, 256 keep-alive + 64 churning connections
#   DURATION=300 KEEPALIVE=512 CHURN=128 bash loadtest/soak.sh
#
# Everything runs on loopback: an nginx upstream answering a fixed body, flashgate in front,
# two wrk clients. Prints throughput, errors and flashgate's RSS over time; exits non-zero
# if any request failed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

DURATION=${DURATION:-60}
KEEPALIVE=${KEEPALIVE:-256}
CHURN=${CHURN:-64}
UP_PORT=${UP_PORT:-19181}
FG_PORT=${FG_PORT:-19183}
FG_ADMIN_PORT=${FG_ADMIN_PORT:-19184}
EVERY=${EVERY:-5}   # seconds between RSS samples

cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
error_log $WORK/error.log warn;
pid $WORK/nginx.pid;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { default_type application/json; return 200 '{"status":"ok"}'; }
    }
}
CONF
cat > "$WORK/flashgate.toml" <<CONF
[server]
listen = "127.0.0.1:$FG_PORT"
admin_listen = "127.0.0.1:$FG_ADMIN_PORT"
shutdown_grace = "0s"   # no balancer watches /readyz here: stop at once
max_connections = $((KEEPALIVE + CHURN + 256))
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[log]
level = "warn"
CONF

"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' & PIDS+=($!)
"$FLASHGATE" serve --config "$WORK/flashgate.toml" & FG_PID=$!; PIDS+=($FG_PID)
wait_port "$UP_PORT"; wait_port "$FG_PORT"

rss() { awk '/VmRSS/ { print $2 }' "/proc/$FG_PID/status"; }
echo "soak: ${DURATION}s, ${KEEPALIVE} keep-alive + ${CHURN} churning connections"
echo "rss at start: $(rss) KiB"
wrk -t1 -c"$KEEPALIVE" -d"${DURATION}s" "http://127.0.0.1:$FG_PORT/ka" > "$WORK/ka.txt" & W1=$!
wrk -t1 -c"$CHURN" -d"${DURATION}s" -H "Connection: close" "http://127.0.0.1:$FG_PORT/churn" > "$WORK/churn.txt" & W2=$!
peak=0; t=0
while kill -0 "$W1" 2>/dev/null || kill -0 "$W2" 2>/dev/null; do
    sleep "$EVERY"; t=$((t + EVERY))
    r=$(rss); [ "$r" -gt "$peak" ] && peak=$r
    echo "  t=${t}s rss ${r} KiB"
done
wait "$W1" "$W2" || true
echo "rss at end: $(rss) KiB (peak ${peak} KiB)"

failed=0
for f in ka churn; do
    reqs=$(awk '/requests in/ { print $1 }' "$WORK/$f.txt")
    rate=$(awk '/Requests\/sec/ { print $2 }' "$WORK/$f.txt")
    non2xx=$(awk '/Non-2xx/ { print $5 }' "$WORK/$f.txt"); non2xx=${non2xx:-0}
    sockerr=$(awk -F'[ ,]+' '/Socket errors/ { print $5 + $7 + $9 + $11 }' "$WORK/$f.txt"); sockerr=${sockerr:-0}
    echo "$f: ${reqs} requests, ${rate} req/s, non-2xx ${non2xx}, socket errors ${sockerr}"
    [ "$non2xx" = 0 ] || failed=1
done
curl_ok=$( (exec 3<>"/dev/tcp/127.0.0.1/$FG_ADMIN_PORT"; printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3; head -1 <&3) 2>/dev/null || true)
echo "healthz after soak: ${curl_ok%$'\r'}"
[ "$failed" = 0 ] && echo "soak passed" || { echo "soak FAILED: some requests were not answered 2xx"; exit 1; }
