#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# Runs on a fresh Debian machine with only the Rust toolchain. What a test needs beyond
# crates (servers it starts on loopback) is installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-packages.sh

# The build takes a few GB; say how much room there is, so that a full disk is plain.
echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free here"

# The store tests run a real redis-server on a free loopback port (never 6379); the
# monitoring tests check the shipped Prometheus config and alert rules with promtool; the
# browser tests drive Debian's chromium through playwright-core (npm, pinned in
# tests/browser/package-lock.json).
# The fuzz targets link libFuzzer, which is C++ (built by libfuzzer-sys). One pre-queue test
# runs an instance whose clock is behind the fleet's under libfaketime (faketime).
# The smoke runs of the benchmark scripts (tests/smoke.sh) drive nginx with wrk and Redis
# with redis-benchmark, and make a TLS certificate with openssl.
ensure_packages redis-server:redis-server ss:iproute2 promtool:prometheus chromium:chromium node:nodejs npm:npm c++:g++ faketime:faketime \
    wrk:wrk nginx:nginx-light redis-benchmark:redis-tools openssl:openssl
echo "== npm ci (tests/browser)"
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Built first with the same targets as the test run (so with the same features and no
# rebuild): `cargo build` also makes the examples as programs, which the stream-mode test runs.
echo "== cargo build"
cargo build --workspace --all-targets --locked
echo "== cargo test"
cargo test --workspace --all-targets --locked
# Every benchmark and load-test script, for a second or two each on the debug build.
bash tests/smoke.sh
# Every fuzz target, coverage-guided, for a short bounded time (stable toolchain).
echo "== fuzz"
FUZZ_PROFILE=smoke SECONDS_PER_TARGET=${FUZZ_SECONDS:-10} bash fuzz/run.sh
# The Debian package and its systemd unit (packaging/), from the debug binary cargo test
# built: contents, a dpkg install into a scratch root, systemd-analyze verify.
echo "== package"
bash tests/package.sh
# The README's other command, `cargo run --release -- demo`, must pick the gateway binary
# among the workspace's binaries (a debug build here: the same target selection).
echo "== cargo run -- --version"
cargo run --locked -q -- --version
