#!/usr/bin/env bash
# flashgate beside the reference tools, on this machine, in one table:
#   passthrough   flashgate vs nginx proxy_pass   (same nginx upstream, one worker each, CPU 0)
#   refusal       flashgate sold_out vs nginx limit_req (one worker each, CPU 0) + latency
#   reserve       RedisStore::reserve vs redis-benchmark EVALSHA of the equivalent script
#   connections   idle keep-alive connections held (RSS per connection) and a burst of new
#                 ones (connections answered per second), flashgate vs nginx; a crowd held
#                 in wait mode (RSS per waiting request, every buyer answered)
#
#   bash bench/compare.sh                      # 3 runs × 10 s each, 64 connections
#   RUNS=5 DURATION=20 CONNS=128 bash bench/compare.sh
#
# Each part is its own script (bench/passthrough.sh, bench/refusal.sh, bench/redis_reserve.sh,
# bench/connections.sh) and can be run alone; this one runs them in turn and collects their verdicts. wrk, nginx,
# redis-server and redis-benchmark are installed when missing. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT

part() { # name script: runs it, showing its output, keeping it for the summary
    echo "== $1 ==" >&2
    bash "$2" 2>&1 | tee "$LOG/$1.txt" >&2
}
part passthrough bench/passthrough.sh
part refusal bench/refusal.sh
part reserve bench/redis_reserve.sh
part connections bench/connections.sh

# The part's verdict: its last ratio, leaving out the CPU efficiency line (shown apart).
ratio_of() { grep -v 'efficiency ratio' "$LOG/$1.txt" | grep -oE 'ratio:? [0-9.]+x' | tail -1 | grep -oE '[0-9.]+x'; }
line_of() { grep -E "$2" "$LOG/$1.txt" | tail -1; }

pt=$(line_of passthrough '^median:')
rf=$(line_of refusal '^median:')
rs=$(line_of reserve 'RedisStore::reserve')
rb=$(line_of reserve '^redis-benchmark')
held=$(line_of connections '^median held idle:')
burst=$(line_of connections '^median burst:')
echo
echo "flashgate vs reference, $(nproc) cores, $(date -u +%Y-%m-%d)"
printf '%-12s %-70s %s\n' "path" "figures" "ratio (target)"
pt=${pt#median: }; rf=${rf#median: }
printf '%-12s %-70s %s\n' "passthrough" "${pt%%, ratio*}" "$(ratio_of passthrough) (>= 1.00x)"
printf '%-12s %-70s %s\n' "refusal" "${rf%%, ratio*}" "$(ratio_of refusal) (>= 1.20x)"
printf '%-12s %-70s %s\n' "" "$(line_of refusal 'refusal latency')" ""
printf '%-12s %-70s %s\n' "" "$(line_of refusal 'CPU per refusal')" ""
printf '%-12s %-70s %s\n' "" "$(line_of refusal 'admission decision in process')" ""
printf '%-12s %-70s %s\n' "reserve" "${rs#flashgate } / ${rb}" "$(ratio_of reserve) (>= 1.00x)"
held=${held#median held idle: }; burst=${burst#median burst: }
printf '%-12s %-70s %s\n' "connections" "held idle: ${held%%, memory ratio*}" \
    "$(echo "$held" | grep -oE '[0-9.]+x \(' | tr -d ' (') (flashgate <= 1024 B)"
printf '%-12s %-70s %s\n' "" "burst: ${burst%%, accept ratio*}" \
    "$(echo "$burst" | grep -oE '[0-9.]+x \(' | tr -d ' (') (>= 1.00x)"
printf '%-12s %-70s %s\n' "" "$(line_of connections '^waiting:')" ""
