# Sourced by the benchmark and load-test scripts: shared set-up for runs on loopback.
# shellcheck shell=bash

source "$(dirname "${BASH_SOURCE[0]}")/ensure-packages.sh"
ensure_packages wrk:wrk nginx:nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# Builds the release binaries (or takes BIN_DIR's: scripts/bins.sh), makes $WORK, and stops
# everything in $PIDS on exit. GATEWAY_BIN runs another gateway build (a before/after
# comparison). WARMUP: seconds of load before the measured runs (0: none).
source "$(dirname "${BASH_SOURCE[0]}")/bins.sh"
bins flashgate flashgate-loadtest
FLASHGATE=${GATEWAY_BIN:-$BIN_DIR/flashgate}
WARMUP=${WARMUP:-2}
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

# GET http://127.0.0.1:PORT/PATH on a fresh connection (no curl needed); prints the body.
http_get() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1"; printf 'GET %s HTTP/1.0\r\nHost: bench\r\n\r\n' "$2" >&3; cat <&3) \
        | tr -d '\r' | sed '1,/^$/d'
}

# The bucket bound under which 99% of a Prometheus histogram's samples fall, in µs.
# Usage: http_get PORT /metrics | histogram_p99_us METRIC_NAME
histogram_p99_us() {
    awk -v name="$1" '
        index($0, name "_bucket{") == 1 {
            le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le)
            n++; bound[n] = le; count[n] = $NF
        }
        index($0, name "_count") == 1 { total = $NF }
        END {
            if (total == 0) { print "n/a"; exit }
            for (i = 1; i <= n; i++) if (count[i] >= 0.99 * total) {
                if (bound[i] == "+Inf") print "+Inf"; else printf "%.2f\n", bound[i] * 1e6; exit
            }
        }'
}

# CPU time (user + system) PID has used so far, in clock ticks (all its threads).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# The one worker of an nginx master (worker_processes 1): the process doing the work.
nginx_worker() {
    for _ in $(seq 1 50); do
        local w
        w=$(pgrep -P "$1" | head -1)
        if [ -n "$w" ]; then echo "$w"; return 0; fi
        sleep 0.1
    done
    echo "$1"
}

# Writes DIR/nginx.conf for the benchmarks' upstream: nginx on 127.0.0.1:PORT answering a
# fixed 128-byte JSON body, keep-alive without a request cap. Usage: upstream_conf DIR PORT
upstream_conf() {
    local body='{"status":"ok","service":"backend","items":[1,2,3,4,5,6,7,8,9,10],"note":"fixed upstream answer for benchmarks"}'
    mkdir -p "$1"
    cat > "$1/nginx.conf" <<CONF
worker_processes 1;
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$2 reuseport;
        location / { default_type application/json; return 200 '$body'; }
    }
}
CONF
}

# Writes DIR/nginx.conf for nginx as the reverse proxy flashgate is compared with: pooled
# keep-alive connections to the upstream on UP_PORT and the same forwarded headers flashgate
# adds. SERVER_LINES are the server block's own lines (listen, TLS, body size).
# Usage: proxy_conf DIR UP_PORT SERVER_LINES
proxy_conf() {
    mkdir -p "$1"
    cat > "$1/nginx.conf" <<CONF
worker_processes 1;
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    upstream backend { server 127.0.0.1:$2; keepalive 256; keepalive_requests 10000000; }
    server {
$3
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
CONF
}
