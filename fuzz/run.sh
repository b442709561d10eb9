#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a bounded time, coverage-guided by libFuzzer,
# on the stable toolchain: the targets are built with the same instrumentation cargo-fuzz
# uses (sancov with inline 8-bit counters and compare tracing, debug assertions and
# overflow checks), without a sanitizer, so neither nightly nor cargo-fuzz is needed.
# The test command (tests/run.sh) runs it with a short time per target.
#
#   bash fuzz/run.sh                          # 60 s per target
#   SECONDS_PER_TARGET=600 bash fuzz/run.sh path config
#   FUZZ_PROFILE=smoke bash fuzz/run.sh       # a quicker build, a tenth of the rate (tests/run.sh)
#
# Crashes land in fuzz/artifacts/<target>/ and make this script fail; the corpus grows in
# fuzz/corpus/<target>/ (both ignored by git). On nightly, `cargo fuzz run <target>` works
# as well and adds AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")"

PER=${SECONDS_PER_TARGET:-60}
PROFILE=${FUZZ_PROFILE:-release}
HOST=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps the instrumentation off build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cdebug-assertions -Coverflow-checks"
echo "== building the fuzz targets (stable, instrumented, profile $PROFILE)"
cargo build --locked --profile "$PROFILE" --bins --target "$HOST"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^flashgate-fuzz$')
fi
failed=()
for t in "${targets[@]}"; do
    echo "== fuzz $t (${PER}s)"
    mkdir -p "corpus/$t" "artifacts/$t"
    if ! "target/$HOST/$PROFILE/$t" -max_total_time="$PER" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" "corpus/$t" 2>"artifacts/$t.log"; then
        tail -n 30 "artifacts/$t.log" >&2
        failed+=("$t")
    else
        grep -E '^stat::number_of_executed_units' "artifacts/$t.log" || true
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzzed ${#targets[@]} targets, ${PER}s each: no crash"
