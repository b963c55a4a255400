#!/usr/bin/env bash
# The package as an administrator meets it: build the .deb (scripts/dev.sh
# deb), lintian with no errors, dpkg -i, the files in their places, the
# installed cbd started by hand on a temporary socket and asked by the
# installed cbctl, then dpkg -r and dpkg -P leaving nothing of the package.
# Runs as root (dpkg -i); CI is root. Environment: BUILD_DIR (where the .deb
# goes, under deb/).
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
  echo "package test: FAILED: $*" >&2
  exit 1
}
step() { echo "package test: $*" >&2; }

[[ $(id -u) -eq 0 ]] || fail "must run as root (it installs the package with dpkg -i)"
if dpkg-query -W -f='${Status}' cbd 2>/dev/null | grep -q installed; then
  # Never remove or purge an administrator's own cbd and its circuits.
  fail "a cbd package is installed on this machine already; remove it (dpkg -P cbd) to run this test"
fi

BUILD_DIR=${BUILD_DIR:-build}
version=$(sed -n 's/^project(cbd VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
arch=$(dpkg --print-architecture)
tmp=$(mktemp -d)
daemon_pid=""
cleanup() {
  [[ -n $daemon_pid ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  # A failed run must not leave the package on the machine.
  if dpkg-query -W -f='${Status}' cbd 2>/dev/null | grep -q installed; then
    dpkg -P cbd >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

step "building the package (scripts/dev.sh deb keeps one built from this very tree)"
BUILD_DIR=$BUILD_DIR scripts/dev.sh deb >"$tmp/build.log" 2>&1 || {
  tail -40 "$tmp/build.log" >&2
  fail "scripts/dev.sh deb failed"
}
# Absolute: lintian does not find relative paths it is given.
deb=$(realpath "$BUILD_DIR/deb")/cbd_${version}_${arch}.deb
changes=$(realpath "$BUILD_DIR/deb")/cbd_${version}_${arch}.changes
[[ -f $deb ]] || fail "no $deb (is debian/changelog's version $version?)"
[[ -f $changes ]] || fail "no $changes"
[[ -f $BUILD_DIR/deb/cbd_${version}_${arch}.buildinfo ]] || fail "no .buildinfo"

step "lintian"
lintian --fail-on error --info "$deb" "$changes" >"$tmp/lintian.log" 2>&1 || {
  cat "$tmp/lintian.log" >&2
  fail "lintian reports errors"
}
cat "$tmp/lintian.log" >&2

step "dpkg -i (systemd need not be running)"
dpkg -i "$deb" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "dpkg -i failed"; }

step "files in their places"
[[ $(/usr/sbin/cbd --version) == "cbd $version (protocol "*")" ]] ||
  fail "/usr/sbin/cbd --version says '$(/usr/sbin/cbd --version)', not cbd $version"
[[ $(/usr/bin/cbctl --version) == "cbctl $version (protocol "*")" ]] || fail "cbctl --version"
for page in cbctl cbd cbd.json; do
  man -w "$page" >/dev/null || fail "man -w $page finds no page"
done
[[ $(man -w cbd.json) == /usr/share/man/man5/cbd.json.5.gz ]] || fail "cbd.json(5) is at $(man -w cbd.json)"
for f in /usr/share/bash-completion/completions/cbctl /usr/share/zsh/vendor-completions/_cbctl \
  /usr/share/fish/vendor_completions.d/cbctl.fish /lib/systemd/system/cbd.service \
  /lib/systemd/system/cbd.socket /usr/lib/systemd/user/cbd.service \
  /usr/lib/systemd/user/cbd.socket /usr/lib/sysusers.d/cbd.conf /etc/default/cbd \
  /etc/cbd/cbd.json /usr/share/doc/cbd/README.md.gz /usr/share/doc/cbd/PROTOCOL.md.gz \
  /usr/share/doc/cbd/examples/cbd.json /usr/share/doc/cbd/copyright; do
  [[ -e $f ]] || fail "$f is not installed"
done
conffiles=$(dpkg-query -W -f='${Conffiles}' cbd)
for f in /etc/default/cbd /etc/cbd/cbd.json; do
  grep -q "^ $f " <<<"$conffiles" || fail "$f is not a conffile"
done
grep -q '^ExecStart=/usr/sbin/cbd ' /lib/systemd/system/cbd.service || fail "the unit does not run /usr/sbin/cbd"
getent group cbd >/dev/null || fail "the group cbd was not created (sysusers)"
# Enabled even where systemd is not running: it starts at the next boot.
[[ -L /etc/systemd/system/sockets.target.wants/cbd.socket ]] || fail "cbd.socket is not enabled"
/usr/sbin/cbd --check-config --config /etc/cbd/cbd.json >"$tmp/check.log" 2>&1 ||
  { cat "$tmp/check.log" >&2; fail "the shipped /etc/cbd/cbd.json does not pass --check-config"; }
# bash-completion loads a command's completion on first use, from its place.
bash -c 'source /usr/share/bash-completion/bash_completion && _completion_loader cbctl;
         complete -p cbctl' 2>&1 | grep -q -- '-F _cbctl cbctl' ||
  fail "bash-completion does not load /usr/share/bash-completion/completions/cbctl"

step "the installed cbd by hand, on a temporary socket"
/usr/sbin/cbd --socket "$tmp/cbd.sock" 2>"$tmp/cbd.log" &
daemon_pid=$!
for _ in $(seq 1 100); do
  [[ -S $tmp/cbd.sock ]] && break
  sleep 0.05
done
out=$(/usr/bin/cbctl --socket "$tmp/cbd.sock" get x) || fail "cbctl get x: $out"
[[ $(/usr/bin/cbctl --socket "$tmp/cbd.sock" get x --field state) == closed ]] ||
  fail "cbctl get x did not answer a closed circuit: $out"
kill "$daemon_pid"
wait "$daemon_pid" || fail "cbd exited $? on SIGTERM: $(cat "$tmp/cbd.log")"
daemon_pid=""

# What purge must remove and remove must keep: the state directory (here
# made by hand, as the service would on its first start).
mkdir -p /var/lib/cbd && touch /var/lib/cbd/state.db
files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print substr($6, 2)}')

step "dpkg -r"
dpkg -r cbd >"$tmp/remove.log" 2>&1 || { cat "$tmp/remove.log" >&2; fail "dpkg -r failed"; }
[[ ! -e /usr/sbin/cbd && ! -e /usr/bin/cbctl ]] || fail "dpkg -r left the programs"
[[ -e /etc/default/cbd && -e /etc/cbd/cbd.json ]] || fail "dpkg -r removed the conffiles"
[[ -e /var/lib/cbd/state.db ]] || fail "dpkg -r removed the state file"

step "dpkg -P"
dpkg -P cbd >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log" >&2; fail "dpkg -P failed"; }
left=()
while IFS= read -r f; do
  [[ -z $f ]] || [[ ! -e $f && ! -L $f ]] || left+=("$f")
done <<<"$files"
for f in /etc/default/cbd /etc/cbd /var/lib/cbd /var/lib/private/cbd; do
  [[ ! -e $f ]] || left+=("$f")
done
# The units' enablement links and deb-systemd-helper's records of them.
while IFS= read -r f; do
  left+=("$f")
done < <(find /etc/systemd /var/lib/systemd/deb-systemd-helper-enabled \
  /var/lib/systemd/deb-systemd-user-helper-enabled -name 'cbd.*' 2>/dev/null)
((${#left[@]} == 0)) || fail "dpkg -P left: ${left[*]}"
! dpkg-query -W -f='${Status}' cbd 2>/dev/null | grep -q installed || fail "dpkg still lists cbd"

step "passed"
