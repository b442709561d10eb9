#!/usr/bin/env bash
# One drain rate for many instances: 1, 2 and 4 gateway instances on one Redis, one sale
# configured at RATE/s; prints the total achieved, each instance's share and the drain's
# store calls per second per instance; then the token route, memory store beside Redis.
# Everything on loopback; redis-server is started here on a free port.
#
#   bash bench/global_drain.sh                  # 1,000/s, 5 s windows
#   RATE=5000 WINDOW=10 bash bench/global_drain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-19380}
source scripts/bench-redis.sh

REDIS_URL="$REDIS_URL" cargo bench --locked -q --profile "${BENCH_PROFILE:-bench}" --bench global_drain 2>/dev/null
