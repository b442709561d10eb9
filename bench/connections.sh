#!/usr/bin/env bash
# Connection capacity: what a crowd's connections cost flashgate, beside nginx.
#
#   holding    N keep-alive connections, each sends one request, reads its answer and sits
#              idle: the server's RSS growth per connection (VmRSS before and while held)
#   accepting  M connections opened at once by one client, one request each, closed after
#              the answer: connections answered per second, and the SYNs the kernel dropped
#              at the listen queue (TcpExt ListenOverflows) while it ran
#   waiting    W buyers (default 15,000) take a token each, then order at once in wait mode
#              on one sale, each holding its own connection until its outcome while the
#              drain works (flashgate alone, once, on a fresh process): every buyer must get
#              an outcome (201 reserved, 202 past max_wait, 410 sold out); the most waiting
#              at once, and the RSS at the peak and per waiting request
#
# Both servers answer GET /sale/phone in process (flashgate: the sale's state; nginx: a
# fixed JSON body of the same size), run one worker pinned to CPU 0; the client runs on
# CPU 1. Loopback only.
#
#   bash bench/connections.sh                        # 10,000 held, bursts of 5,000, 3 runs
#   HOLD=20000 BURST=10000 RUNS=5 bash bench/connections.sh
#   HOLD=200 BURST=200 WAITING=200 RUNS=1 bash bench/connections.sh   # a smoke run (what the tests do)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
CLIENT=$BIN_DIR/flashgate-connections

HOLD=${HOLD:-10000}
BURST=${BURST:-5000}
RUNS=${RUNS:-3}
WAITING=${WAITING:-15000}
NGINX_PORT=${NGINX_PORT:-19282}
FG_PORT=${FG_PORT:-19283}
FG_ADMIN_PORT=${FG_ADMIN_PORT:-19284}

# Held connections need descriptors on both sides; the hard limit is the most we may ask.
ulimit -Sn "$(ulimit -Hn)"
most=$(( HOLD > WAITING ? HOLD : WAITING ))
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt $((most + 100)) ]; then
    echo "the open-files limit ($(ulimit -Sn)) is below HOLD=$HOLD or WAITING=$WAITING; lower them" >&2
    exit 2
fi

cat > "$WORK/flashgate.toml" <<CONF
[server]
listen = "127.0.0.1:$FG_PORT"
admin_listen = "127.0.0.1:$FG_ADMIN_PORT"
shutdown_grace = "0s"   # no balancer watches /readyz here: stop at once
threads = 1
max_connections = $(( (HOLD + BURST > WAITING ? HOLD + BURST : WAITING) + 100 ))
max_connections_per_ip = 0
# Held idle for as long as nginx keeps them (its keepalive_timeout is 75 s).
header_timeout = "75s"
keepalive_timeout = "75s"
[upstream]
# nginx takes the waiting crowd's orders (POST /orders).
url = "http://127.0.0.1:$NGINX_PORT"
[queue]
# The waiting crowd: all admitted (stock × admit_factor covers them), drained at 500/s, each
# held until its outcome.
max_wait = "120s"
admit_factor = 5.0
[[sale]]
sku = "phone"
stock = 100
[[sale]]
sku = "crowd"
stock = $(( WAITING / 4 > 0 ? WAITING / 4 : 1 ))
queue = { capacity = $((WAITING + 100)), drain_rate = 500 }
[log]
level = "warn"
CONF

"$FLASHGATE" check-config "$WORK/flashgate.toml" >/dev/null

# Each run starts both servers afresh: memory a process once held and freed is not given
# back to the system, so a second measurement on the same process would read near zero.
start() {
    $PIN_PROXY "$FLASHGATE" serve --config "$WORK/flashgate.toml" & FG_PID=$!; PIDS+=("$FG_PID")
    $PIN_PROXY "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' & NGINX_PID=$!; PIDS+=("$NGINX_PID")
    wait_port "$FG_PORT"; wait_port "$NGINX_PORT"
    NGINX_WORKER=$(nginx_worker "$NGINX_PID")
}
stop() {
    kill "$FG_PID" "$NGINX_PID"
    wait "$FG_PID" "$NGINX_PID" 2>/dev/null || true
}

# nginx answers a body as long as flashgate's sale state.
$PIN_PROXY "$FLASHGATE" serve --config "$WORK/flashgate.toml" & FG_PID=$!
wait_port "$FG_PORT"
body=$(http_get "$FG_PORT" /sale/phone)
kill "$FG_PID"; wait "$FG_PID" 2>/dev/null || true
[ -n "$body" ] || { echo "flashgate did not answer GET /sale/phone" >&2; exit 1; }
nbody=$(printf '%s' "$body" | tr -c '\n' 'x' | tr -d '\n')

cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $(ulimit -Hn);
error_log $WORK/error.log crit;
pid $WORK/nginx.pid;
events { worker_connections $((HOLD + BURST + 100)); }
http {
    access_log off;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /sale/phone { default_type application/json; return 200 '$nbody'; }
        location = /orders { default_type application/json; return 200 '{}'; }
    }
}
CONF

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1 } else print $c }' /proc/net/netstat; }

hold() { # port pid -> "bytes-per-connection rss-before-kb rss-held-kb"
    local before fifo out
    # Warmed up first (a burst of short connections), so that what is measured is what a
    # held connection costs, not the first allocations a fresh process makes.
    $PIN_LOAD "$CLIENT" burst --addr "127.0.0.1:$1" --count 1000 --path /sale/phone >/dev/null
    before=$(rss_kb "$2")
    fifo="$WORK/hold.fifo"; out="$WORK/hold.out"
    rm -f "$fifo"; mkfifo "$fifo"
    $PIN_LOAD "$CLIENT" hold --addr "127.0.0.1:$1" --count "$HOLD" --path /sale/phone < "$fifo" > "$out" &
    local client=$!
    exec 7>"$fifo"
    for _ in $(seq 1 1200); do grep -q '^held' "$out" && break; sleep 0.1; done
    grep -q "^held $HOLD connections (0 failed)" "$out" || { cat "$out" >&2; echo "not every connection was answered" >&2; exit 1; }
    local held; held=$(rss_kb "$2")
    exec 7>&-
    wait "$client"
    awk -v b="$before" -v h="$held" -v n="$HOLD" 'BEGIN { printf "%.0f %d %d\n", (h - b) * 1024 / n, b, h }'
}

burst() { # port -> "connections-per-second listen-overflows"
    local before after rate
    before=$(overflows)
    rate=$($PIN_LOAD "$CLIENT" burst --addr "127.0.0.1:$1" --count "$BURST" --path /sale/phone \
        | grep -oE '[0-9]+ connections/s' | grep -oE '^[0-9]+')
    after=$(overflows)
    echo "$rate $((after - before))"
}

echo "connections: ${RUNS} runs; ${HOLD} held idle, bursts of ${BURST}; one worker each on one core"
NH=(); FH=(); NB=(); FB=()
for i in $(seq 1 "$RUNS"); do
    start
    read -r nh nb0 nh1 < <(hold "$NGINX_PORT" "$NGINX_WORKER")
    read -r fh fb0 fh1 < <(hold "$FG_PORT" "$FG_PID")
    read -r nb no < <(burst "$NGINX_PORT")
    read -r fb fo < <(burst "$FG_PORT")
    stop
    echo "  run $i: held idle: nginx ${nh} B/conn (RSS ${nb0} → ${nh1} kB), flashgate ${fh} B/conn (RSS ${fb0} → ${fh1} kB)"
    echo "         burst: nginx ${nb} conn/s (${no} SYNs dropped), flashgate ${fb} conn/s (${fo} SYNs dropped)"
    NH+=("$nh"); FH+=("$fh"); NB+=("$nb"); FB+=("$fb")
done
nh=$(printf '%s\n' "${NH[@]}" | median); fh=$(printf '%s\n' "${FH[@]}" | median)
nb=$(printf '%s\n' "${NB[@]}" | median); fb=$(printf '%s\n' "${FB[@]}" | median)
echo "median held idle: nginx ${nh} B, flashgate ${fh} B per connection, memory ratio $(awk -v n="$nh" -v f="$fh" 'BEGIN { printf "%.2f", (f > 0 ? n / f : 0) }')x (target: flashgate <= 1024 B)"
echo "median burst: nginx ${nb} conn/s, flashgate ${fb} conn/s, accept ratio $(awk -v n="$nb" -v f="$fb" 'BEGIN { printf "%.2f", f / n }')x (target >= 1.00x)"

# The waiting crowd, on a fresh gateway (nginx only takes its deliveries).
start
wait_out=$($PIN_LOAD "$CLIENT" orders --addr "127.0.0.1:$FG_PORT" --count "$WAITING" --sku crowd --pid "$FG_PID") \
    || { echo "$wait_out" >&2; echo "not every waiting buyer got an outcome" >&2; exit 1; }
stop
echo "$wait_out" | sed 's/^/  /'
echo "waiting: $(echo "$wait_out" | grep -oE '[0-9]+ B per waiting request') (most waiting at once: $(echo "$wait_out" | grep -oE 'most waiting at once: [0-9]+' | grep -oE '[0-9]+$'), every buyer answered with an outcome)"
