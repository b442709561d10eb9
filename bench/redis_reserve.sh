#!/usr/bin/env bash
# Reserve steps per second through flashgate's Redis store, beside redis-benchmark running
# EVALSHA of an equivalent conditional-decrement script on the same server with the same
# number of clients. Everything on loopback; redis-server is started here on a free port.
#
#   bash bench/redis_reserve.sh                 # 50 clients, 200k steps
#   CLIENTS=100 STEPS=500000 bash bench/redis_reserve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-50}
STEPS=${STEPS:-200000}
PORT=${PORT:-19379}
source scripts/bench-redis.sh

fg=$(REDIS_URL="$REDIS_URL" CLIENTS=$CLIENTS STEPS=$STEPS \
    cargo bench --locked -q --profile "${BENCH_PROFILE:-bench}" --bench redis_reserve 2>/dev/null | tail -1)
echo "$fg"
fg_rate=$(echo "$fg" | awk '{ print $(NF-1) }')

# The same Redis-side work as flashgate's reserve script, minus its branches on token
# state: read the token, stock and buyer count, decrement, count the buyer, append to the
# outbox stream, write the order and the spent token. __rand_int__ gives every call its
# own token and order keys, as real reserves have.
SCRIPT="redis.call('HMGET', KEYS[1], 'u', 's', 'k', 'o', 'r')
local s = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('HGET', KEYS[3], ARGV[1])
if s > 0 then
  s = redis.call('DECRBY', KEYS[2], 1)
  redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
  local sid = redis.call('XADD', KEYS[4], '*', 'order_id', ARGV[1], 'sku', 'bench', 'user_id', ARGV[1], 'quantity', 1, 'reserved_at', 1)
  redis.call('HSET', KEYS[5], 'sku', 'bench', 'user_id', ARGV[1], 'quantity', 1, 'reserved_at', 1, 'state', 'reserved', 'sid', sid)
end
redis.call('HSET', KEYS[1], 's', 'spent', 'k', 'reserved', 'o', ARGV[1], 'r', s)
redis.call('PEXPIRE', KEYS[1], 600000)
return s"
SHA=$(redis-cli -p "$PORT" SCRIPT LOAD "$SCRIPT")
redis-cli -p "$PORT" SET 'rb:{b}:stock' 100000000 >/dev/null
rb=$(redis-benchmark -p "$PORT" -c "$CLIENTS" -n "$STEPS" -r 100000000 -q EVALSHA "$SHA" 5 \
    'rb:{b}:tok:__rand_int__' 'rb:{b}:stock' 'rb:{b}:buyers' 'rb:{b}:outbox' 'rb:{b}:order:__rand_int__' \
    'user__rand_int__' | tr '\r' '\n' | grep -E 'requests per second' | tail -1)
rb_rate=$(echo "$rb" | grep -oE '[0-9]+(\.[0-9]+)? requests per second' | awk '{ print $1 }')
echo "redis-benchmark EVALSHA of the equivalent script (same clients): ${rb_rate} requests/s"
awk -v f="$fg_rate" -v r="$rb_rate" 'BEGIN { printf "ratio: %.2fx (target >= 1.00x)\n", f / r }'
