#!/usr/bin/env bash
# Runs one flash-crowd scenario end to end and checks the sale's invariants.
#
#   bash loadtest/run.sh crowd-100k                  # a name from loadtest/scenarios/
#   bash loadtest/run.sh path/to/my-scenario.toml
#   bash loadtest/run.sh redis-restart --users 5000  # any flashgate-loadtest flag after the name
#
# flashgate-loadtest starts what the scenario needs (the demo backend, a redis-server on a
# free loopback port when `store = "redis"`, three of them as a Redis Cluster when
# `store = "redis-cluster"`, the flashgate binary), runs the crowd, stops it
# all again and prints the report. The JSON report and an SVG chart land in target/loadtest/
# (OUT=dir to change). Exit status: 0 every invariant held, 1 one failed, 2 bad scenario,
# 3 the stack would not start.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
    echo "usage: bash loadtest/run.sh SCENARIO [flashgate-loadtest flags]" >&2
    echo "scenarios: $(cd loadtest/scenarios && ls ./*.toml | sed 's|./||; s|\.toml||' | tr '\n' ' ')" >&2
    exit 2
fi
scenario=$1
shift
file=$scenario
[ -f "$file" ] || file=loadtest/scenarios/$scenario.toml
if [ ! -f "$file" ]; then
    echo "no scenario '$scenario' (looked for $file)" >&2
    exit 2
fi
name=$(basename "$file" .toml)

source scripts/ensure-packages.sh
if grep -Eq '^store *= *"redis(-cluster)?"' "$file"; then
    ensure_packages redis-server:redis-server
fi
source scripts/bins.sh
bins flashgate flashgate-loadtest

# Every connection of the crowd and of the gateway is a file descriptor.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out=${OUT:-target/loadtest}
mkdir -p "$out"
echo "scenario $name: report in $out/$name.json, chart in $out/$name.svg" >&2
exec "$BIN_DIR/flashgate-loadtest" "$file" --flashgate "$BIN_DIR/flashgate" \
    --json "$out/$name.json" --svg "$out/$name.svg" "$@"
