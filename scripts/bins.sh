# Sourced by the benchmark and load-test scripts: the binaries they run, exactly the ones
# built here. BIN_DIR names a directory that already holds them (the test suite's smoke runs
# pass its debug build): then nothing is built. Otherwise the release build is made, in
# cargo's target directory (CARGO_TARGET_DIR or the workspace's, as cargo metadata says).
# Usage: bins PACKAGE... ; then $BIN_DIR/<binary>.
# shellcheck shell=bash

# Cargo's target directory, as cargo metadata says.
target_dir() {
    cargo metadata --locked --format-version 1 --no-deps \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

bins() {
    if [ -n "${BIN_DIR:-}" ]; then return 0; fi
    local args=() p
    for p in "$@"; do args+=(-p "$p"); done
    cargo build --release --locked -q "${args[@]}"
    BIN_DIR=$(target_dir)/release
}
