#!/usr/bin/env bash
# The Debian package and its systemd unit (packaging/, Cargo.toml [package.metadata.deb]):
# builds the .deb with cargo-deb, checks what it holds, installs it with dpkg into a scratch
# root, runs the installed binary on the installed config, verifies the installed unit with
# systemd-analyze, upgrades, rolls back and purges it there. Nothing of it is installed on
# this machine (only the tools: dpkg, systemd's systemd-analyze, cargo-deb); everything
# else lives in a temporary directory removed on exit.
#
# To keep the suite fast it packages the debug binary that `cargo test` has just built
# (target/debug/flashgate) instead of a release build: cargo-deb's `--profile dev
# --no-build` (it warns that the dev profile is unsupported for releases; it is pinned
# below, and the release command stays `cargo deb`, see packaging/README.md).
# Called by tests/run.sh; runs from anywhere: bash tests/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-packages.sh

CARGO_DEB_VERSION=3.8.0

fail() {
    echo "package.sh: FAIL: $*" >&2
    exit 1
}
step() { echo "-- $*"; }

ensure_packages dpkg-deb:dpkg systemd-analyze:systemd strip:binutils
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    step "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
systemd_version=$(systemd-analyze --version | awk 'NR == 1 { print $2 }')
# `verify --root`, `--recursive-errors` and `security --offline --root --threshold`.
[ "$systemd_version" -ge 250 ] ||
    fail "systemd-analyze $systemd_version is too old: 250 or later is needed"

target_dir=${CARGO_TARGET_DIR:-target}
bin="$target_dir/debug/flashgate"
if [ ! -x "$bin" ]; then
    step "building $bin"
    cargo build --locked --bin flashgate
fi
version=$(sed -n '/^\[package\]/,/^\[/ s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || fail "cannot read the package version from Cargo.toml"

work=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
    # cargo-deb strips a copy of the binary in the target directory and leaves it there.
    rm -f "$target_dir"/flashgate/flashgate.stripped-*.tmp
    rmdir "$target_dir/flashgate" 2>/dev/null || true
}
trap cleanup EXIT
deb="$work/flashgate.deb"
root="$work/root"

# ---------------------------------------------------------------------------------------
step "cargo deb --profile dev --no-build ($bin)"
cargo deb --locked --profile dev --no-build --fast --output "$deb" 2>&1 |
    grep -v -e 'dev profile is not supported' -e 'To enable debug symbols set' || true
[ -s "$deb" ] || fail "cargo deb made no package at $deb"

# ---------------------------------------------------------------------------------------
step "dpkg-deb --info / --contents"
field() { dpkg-deb --field "$1" "$2"; }
[ "$(field "$deb" Package)" = flashgate ] || fail "Package is not flashgate"
[ "$(field "$deb" Version)" = "$version-1" ] ||
    fail "Version $(field "$deb" Version) is not $version-1 (Cargo.toml)"
[ "$(field "$deb" Architecture)" = "$(dpkg --print-architecture)" ] || fail "wrong Architecture"
depends=$(field "$deb" Depends)
[[ $depends == *libc6* ]] || fail "Depends ($depends) lacks libc6: \$auto found no libraries"

# "mode owner path" per entry, with the leading "./" dropped.
dpkg-deb --contents "$deb" | awk '{ p = $6; sub(/^\.\//, "", p); print $1, $2, p }' >"$work/contents"
has() { # MODE PATH
    grep -qxF -e "$1 root/root $2" "$work/contents" ||
        grep -qxF -e "$1 0/0 $2" "$work/contents" ||
        fail "the package lacks $2 with mode $1 owned by root:
$(grep -F "$2" "$work/contents" || echo '(absent)')"
}
has -rwxr-xr-x usr/bin/flashgate
has -rw-r--r-- lib/systemd/system/flashgate.service
has -rw-r--r-- etc/flashgate/flashgate.toml
has -rw------- etc/flashgate/flashgate.env
has -rw-r--r-- usr/share/doc/flashgate/README.md
has -rw-r--r-- usr/share/doc/flashgate/README.Debian
has -rw-r--r-- usr/share/doc/flashgate/copyright
has -rw-r--r-- usr/share/doc/flashgate/examples/flashgate.toml
# Nothing enabled: no symlink into a .wants/.requires directory, nothing in /etc/systemd.
! grep -E ' etc/systemd/|\.wants/|\.requires/' "$work/contents" ||
    fail "the package enables a unit (files above)"
# Under /etc only the two conffiles.
etc_files=$(awk '$1 !~ /^d/ && $3 ~ /^etc\// { print $3 }' "$work/contents" | sort | tr '\n' ' ')
[ "$etc_files" = "etc/flashgate/flashgate.env etc/flashgate/flashgate.toml " ] ||
    fail "unexpected files under /etc: $etc_files"

mkdir "$work/control"
dpkg-deb --control "$deb" "$work/control"
conffiles=$(sort "$work/control/conffiles" | tr '\n' ' ')
[ "$conffiles" = "/etc/flashgate/flashgate.env /etc/flashgate/flashgate.toml " ] ||
    fail "conffiles are '$conffiles', not the config and the env file"
# The maintainer scripts neither enable nor start anything (they reload systemd's unit
# files, and stop the service on removal).
for script in "$work/control"/{preinst,postinst,prerm,postrm}; do
    [ -e "$script" ] || continue
    ! grep -v '^[[:space:]]*#' "$script" |
        grep -E 'systemctl[^#]*[[:space:]](enable|start|restart|try-restart|reload-or-restart|unmask)([[:space:]]|$)|deb-systemd-(helper|invoke)' ||
        fail "$(basename "$script") enables or starts a unit (line above)"
    grep -q 'DPKG_ROOT' "$script" ||
        fail "$(basename "$script") ignores DPKG_ROOT (it would act on this machine in the scratch install)"
done

# ---------------------------------------------------------------------------------------
step "dpkg -i into a scratch root"
# A dpkg database of its own, holding the package's dependencies as this machine has them
# installed, so that dpkg checks Depends for real. The maintainer scripts run here, not
# chrooted (the root has no shell), with DPKG_ROOT set: they must do nothing but within
# it. Stand-ins for systemctl and deb-systemd-* record any call.
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers" \
    "$work/stubs"
touch "$root/var/lib/dpkg/available" "$root/var/lib/dpkg/status"
IFS=',' read -ra dep_list <<<"$depends"
for dep in "${dep_list[@]}"; do
    found=""
    IFS='|' read -ra alternatives <<<"$dep"
    for alt in "${alternatives[@]}"; do
        name=$(awk '{ print $1 }' <<<"$alt")
        name=${name%%:*}
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$name" 2>/dev/null)" = installed ]; then
            dpkg-query -s "$name" >>"$root/var/lib/dpkg/status"
            echo >>"$root/var/lib/dpkg/status"
            touch "$root/var/lib/dpkg/info/$(dpkg-query -W -f='${binary:Package}' "$name").list"
            found=$name
            break
        fi
    done
    [ -n "$found" ] || fail "dependency '$dep' is not installed on this machine"
done
for tool in systemctl deb-systemd-helper deb-systemd-invoke; do
    printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$tool" "$work/systemctl-calls" >"$work/stubs/$tool"
    chmod +x "$work/stubs/$tool"
done
scratch_dpkg() {
    PATH="$work/stubs:$PATH" dpkg --root="$root" --log="$work/dpkg.log" \
        --force-not-root --force-script-chrootless "$@"
}
scratch_dpkg -i "$deb" >"$work/dpkg.out" 2>&1 || fail "dpkg -i failed:
$(cat "$work/dpkg.out")"
[ "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${db:Status-Abbrev}' flashgate)" = "ii " ] ||
    fail "flashgate is not installed and configured in the scratch root"
dpkg-query --admindir="$root/var/lib/dpkg" -s flashgate | grep -q '^ /etc/flashgate/flashgate.env ' ||
    fail "dpkg did not record /etc/flashgate/flashgate.env as a conffile"
[ "$(stat -c '%a' "$root/etc/flashgate/flashgate.env")" = 600 ] || fail "the env file is not 0600"
[ ! -e "$work/systemctl-calls" ] || fail "the maintainer scripts called: $(cat "$work/systemctl-calls")"

# ---------------------------------------------------------------------------------------
step "the installed binary on the installed config"
fg="$root/usr/bin/flashgate"
config="$root/etc/flashgate/flashgate.toml"
# systemd starts the service with a clean environment: so do these runs.
clean() { env -i PATH=/usr/bin:/bin "$@"; }
installed_version=$(clean "$fg" --version)
[[ $installed_version == "flashgate $version"* ]] ||
    fail "installed --version printed '$installed_version', not flashgate $version"
clean "$fg" check-config "$config" >"$work/effective.toml" 2>"$work/check.err" ||
    fail "check-config refused the installed config:
$(cat "$work/check.err")"
grep -qx 'data_dir = "/var/lib/flashgate"' "$work/effective.toml" ||
    fail "the installed config's data_dir is not /var/lib/flashgate (the unit's StateDirectory)"
grep -qx 'admin_listen = "127.0.0.1:8090"' "$work/effective.toml" ||
    fail "the installed config's admin listener is not 127.0.0.1:8090"
# The env template names only variables the gateway knows: uncommented, with a made-up
# secret where it has no example value, it is still accepted, and no value is printed.
secret=0f1e2d3c4b5a69788796a5b4c3d2e1f0
sed -n 's/^#\(FLASHGATE_[A-Z0-9_]*=\)$/\1'"$secret"'/p; s/^#\(FLASHGATE_[A-Z0-9_]*=..*\)$/\1/p' \
    "$root/etc/flashgate/flashgate.env" >"$work/filled.env"
[ "$(grep -c . "$work/filled.env")" -ge 4 ] || fail "the env template has fewer than 4 variables"
clean sh -c 'set -a; . "$1"; exec "$2" check-config "$3"' sh "$work/filled.env" "$fg" "$config" \
    >"$work/effective-env.toml" 2>"$work/check-env.err" || fail "check-config refused the env template's variables:
$(cat "$work/check-env.err")"
! grep -F "$secret" "$work/effective-env.toml" "$work/check-env.err" >/dev/null ||
    fail "check-config printed a secret from the env file"
! grep -F 'PASSWORD' "$work/effective-env.toml" "$work/check-env.err" >/dev/null ||
    fail "check-config printed the Redis password from the env file"

# The unit's ExecStart, on the installed config (on free loopback ports, state in the
# scratch directory, no readiness grace): it serves, answers /healthz, and stops on the
# unit's KillSignal with exit 0, which systemd counts as a clean stop.
exec_start=$(sed -n 's/^ExecStart=//p' "$root/lib/systemd/system/flashgate.service")
[ "$exec_start" = "/usr/bin/flashgate serve --config /etc/flashgate/flashgate.toml" ] ||
    fail "unexpected ExecStart: $exec_start"
grep -qx 'EnvironmentFile=-/etc/flashgate/flashgate.env' "$root/lib/systemd/system/flashgate.service" ||
    fail "the unit does not read /etc/flashgate/flashgate.env"
read -ra argv <<<"$exec_start"
# (env execs the gateway: $! is the gateway's pid.)
env -i PATH=/usr/bin:/bin "$root${argv[0]}" "${argv[@]:1:2}" "$root${argv[3]}" --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --log-format json --set "server.data_dir=$work/state" \
    --set server.shutdown_grace=0s 2>"$work/serve.log" &
pid=$!
admin=""
for _ in $(seq 100); do
    admin=$(sed -n 's/.*"message":"flashgate listening".*"admin_addr":"\([^"]*\)".*/\1/p' "$work/serve.log")
    [ -n "$admin" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$admin" ] || {
    kill "$pid" 2>/dev/null || true
    fail "the installed gateway did not start:
$(cat "$work/serve.log")"
}
exec 3<>"/dev/tcp/${admin%:*}/${admin##*:}"
printf 'GET /healthz HTTP/1.1\r\nHost: flashgate\r\nConnection: close\r\n\r\n' >&3
status=""
read -r -t 5 status <&3 || true
status=${status%$'\r'}
exec 3<&-
kill_signal=$(sed -n 's/^KillSignal=SIG//p' "$root/lib/systemd/system/flashgate.service")
kill -s "$kill_signal" "$pid"
rc=0
wait "$pid" || rc=$?
pid=""
[[ $status == "HTTP/1.1 200"* ]] || fail "GET /healthz answered '$status'"
[ "$rc" = 0 ] || fail "the gateway exited $rc on SIG$kill_signal:
$(tail -5 "$work/serve.log")"

# TimeoutStopSec must outlast the graceful stop the installed config asks for.
seconds() { # a humantime duration as check-config prints it: "35s", "1m 30s", "500ms"
    local total=0 part
    for part in $1; do
        case $part in
        *ms) ;;
        *h) total=$((total + ${part%h} * 3600)) ;;
        *m) total=$((total + ${part%m} * 60)) ;;
        *s) total=$((total + ${part%s})) ;;
        *) fail "cannot read the duration '$1'" ;;
        esac
    done
    echo "$total"
}
key() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" "$work/effective.toml"; }
grace=$(seconds "$(key shutdown_grace)")
drain=$(seconds "$(key shutdown_timeout)")
stop_timeout=$(seconds "$(sed -n 's/^TimeoutStopSec=//p' "$root/lib/systemd/system/flashgate.service")")
[ "$stop_timeout" -ge $((grace + drain + 10)) ] ||
    fail "TimeoutStopSec=${stop_timeout}s leaves under 10s over shutdown_grace + shutdown_timeout (${grace}s + ${drain}s)"

# ---------------------------------------------------------------------------------------
step "systemd-analyze verify / security (systemd $systemd_version)"
# --root: the unit is loaded from the scratch root and its ExecStart resolved there (the
# binary is not on this machine). The root has no sysinit.target and the like, which
# DefaultDependencies= pulls in: --recursive-errors=no judges the unit alone. Unknown keys
# are only warnings to systemd: any output fails here. ExecReload runs /bin/kill, which
# every Debian system has (procps) but the scratch root, holding only the package, has not:
# the host's is put there for the check.
mkdir -p "$root/bin"
cp /bin/kill "$root/bin/kill"
if ! systemd-analyze verify --root="$root" --recursive-errors=no --man=no flashgate.service \
    >"$work/verify.out" 2>&1 || [ -s "$work/verify.out" ]; then
    fail "systemd-analyze verify:
$(cat "$work/verify.out")"
fi
# Its exposure must stay "OK" (2.0 or less out of 10; 1.6 when written).
systemd-analyze security --offline=yes --root="$root" --threshold=20 flashgate.service \
    >"$work/security.out" 2>&1 || fail "systemd-analyze security rates the unit above 2.0:
$(grep -E '✗|Overall' "$work/security.out")"
grep 'Overall exposure' "$work/security.out" | sed 's/^→ */   /'
# The host's kill was ours, not the package's: the purge below must find only the package.
rm -f "$root/bin/kill"

# ---------------------------------------------------------------------------------------
step "upgrade keeps conffile edits; roll back; purge"
echo '# edited by the operator' >>"$config"
sed -i 's/^#FLASHGATE_ADMIN_TOKEN=$/FLASHGATE_ADMIN_TOKEN=operator/' "$root/etc/flashgate/flashgate.env"
# The next release: the same files under a higher version.
mkdir "$work/next"
dpkg-deb --raw-extract "$deb" "$work/next"
sed -i "s/^Version: .*/Version: $version-1+next/" "$work/next/DEBIAN/control"
dpkg-deb -Zgzip -z1 --root-owner-group --build "$work/next" "$work/next.deb" >/dev/null
scratch_dpkg -i "$work/next.deb" >"$work/dpkg.out" 2>&1 || fail "the upgrade failed:
$(cat "$work/dpkg.out")"
[ "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' flashgate)" = "$version-1+next" ] ||
    fail "the upgrade did not install $version-1+next"
scratch_dpkg -i "$deb" >"$work/dpkg.out" 2>&1 || fail "the rollback failed:
$(cat "$work/dpkg.out")"
[ "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' flashgate)" = "$version-1" ] ||
    fail "the rollback did not install $version-1"
grep -qx '# edited by the operator' "$config" || fail "the upgrade lost the edit of flashgate.toml"
grep -qx 'FLASHGATE_ADMIN_TOKEN=operator' "$root/etc/flashgate/flashgate.env" ||
    fail "the upgrade lost the edit of flashgate.env"
[ "$(stat -c '%a' "$root/etc/flashgate/flashgate.env")" = 600 ] || fail "the env file is no longer 0600"
scratch_dpkg --purge flashgate >"$work/dpkg.out" 2>&1 || fail "dpkg --purge failed:
$(cat "$work/dpkg.out")"
left=$(cd "$root" && find . -mindepth 1 -not -type d -not -path './var/lib/dpkg/*')
[ -z "$left" ] || fail "the purge left files behind: $left"
[ ! -e "$root/etc/flashgate" ] || fail "the purge left /etc/flashgate"
[ ! -e "$work/systemctl-calls" ] || fail "the maintainer scripts called: $(cat "$work/systemctl-calls")"

echo "package: ok ($(du -h "$deb" | cut -f1) .deb, $depends)"
