#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (not part of CI: it takes a while and wants a
# nightly toolchain for the sanitizer; on stable it runs without one).
#
#   bash fuzz/run.sh              # 60 s per target
#   SECONDS_PER_TARGET=600 bash fuzz/run.sh order_body config
#
# Crashes land in fuzz/artifacts/<target>/ and make this script fail; the corpus grows in
# fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

PER=${SECONDS_PER_TARGET:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    FUZZ=(cargo +nightly fuzz)
    SANITIZER=()
else
    echo "no nightly toolchain: fuzzing on stable without a sanitizer" >&2
    FUZZ=(cargo fuzz)
    SANITIZER=(--sanitizer none)
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${FUZZ[@]}" list)
failed=()
for t in "${targets[@]}"; do
    echo "== $t (${PER}s)"
    if ! "${FUZZ[@]}" run "${SANITIZER[@]}" "$t" -- -max_total_time="$PER" -rss_limit_mb=2048; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzzed ${#targets[@]} targets, ${PER}s each: no crash"
