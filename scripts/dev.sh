#!/usr/bin/env bash
# The developer's entry point; the README's two set-up commands use it.
#
#   scripts/dev.sh run [CBD FLAGS...]  install what is missing, build, run cbd in the foreground
#   scripts/dev.sh test                install, build, run every test (what CI runs): the suite,
#                                      the suite again under ASan+UBSan, everything that starts
#                                      the persistence writer thread under TSan, and the fuzzers
#   scripts/dev.sh test --quick        the suite once, no sanitizers, no fuzzing
#   scripts/dev.sh build               install what is missing, build
#   scripts/dev.sh deps                install the Debian packages only
#   scripts/dev.sh deb                 build the Debian package (cbd_VERSION_ARCH.deb, .changes,
#                                      .buildinfo) into $BUILD_DIR/deb, from a copy of the tree
#
# Environment: BUILD_DIR (default build), CBD_WERROR=ON to fail on warnings,
# FUZZ_SECONDS (default 60), SOAK_SECONDS (default 30), DEB_JOBS (deb: parallel jobs, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}

# Debian 12 packages: build tools, libraries, and what the tests drive.
PACKAGES=(
  cmake ninja-build g++ pkg-config golang-go python3-venv python3-pip
  libcli11-dev nlohmann-json3-dev libboost-dev catch2 libsystemd-dev libsqlite3-dev sqlite3 libhiredis-dev redis-server
  python3 python3-pytest systemd
  prometheus curl util-linux
  clang-14 libclang-rt-14-dev clang-format-14 clang-tidy-14
  debhelper dpkg-dev fakeroot lintian scdoc groff-base man-db bash-completion zsh fish
  chromium chromium-driver
)

install_deps() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  # Node for the TypeScript client: the machine's own if it has one, else Debian's.
  command -v npm >/dev/null || missing+=(nodejs npm)
  ((${#missing[@]})) || return 0
  echo "dev.sh: installing ${missing[*]}" >&2
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Everything, or only the targets named (`run` builds cbd and cbctl: on a
# fresh clone that is a third of the work, and the tests build the rest).
build() {
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCBD_WERROR="${CBD_WERROR:-OFF}" >/dev/null
  if (($#)); then
    cmake --build "$BUILD_DIR" --target "$@"
  else
    cmake --build "$BUILD_DIR"
  fi
}

# The Debian package, built from a copy of the tree's files (tracked and new,
# as they are now, ignored ones left out) so that dpkg-buildpackage's own
# build never dirties the tree; the results land in $BUILD_DIR/deb.
deb() {
  local out=$BUILD_DIR/deb version copy
  version=$(sed -n 's/^project(cbd VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
  copy=$(mktemp -d)
  # EXIT, not RETURN: a failed build ends the script (set -e) and must not
  # leave the copy behind either. The path is put in the trap now: the local
  # variable is gone by the time the script exits.
  # shellcheck disable=SC2064
  trap "rm -rf '$copy'" EXIT
  mkdir -p "$copy/cbd-$version" "$out"
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$copy/cbd-$version"
  (cd "$copy/cbd-$version" &&
    DEB_BUILD_OPTIONS="parallel=${DEB_JOBS:-2} ${DEB_BUILD_OPTIONS:-}" dpkg-buildpackage -b -us -uc >&2)
  rm -f "$out"/cbd_* "$out"/cbd-dbgsym_*
  mv "$copy"/*.deb "$copy"/*.changes "$copy"/*.buildinfo "$out"/
  ls "$out"/*
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  deps) install_deps ;;
  build) install_deps; build ;;
  deb) install_deps; deb ;;
  run)
    install_deps
    build cbd cbctl >&2
    echo "dev.sh: starting cbd; talk to it with $BUILD_DIR/cli/cbctl (Ctrl-C stops it)" >&2
    exec "$BUILD_DIR/daemon/cbd" "$@"
    ;;
  test)
    install_deps
    build
    ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 900
    if [[ ${1:-} != --quick ]]; then
      echo "dev.sh: the suite again under ASan and UBSan" >&2
      cmake -S . -B "$BUILD_DIR-asan" -G Ninja -DCBD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
        -DCBD_WERROR="${CBD_WERROR:-OFF}" >/dev/null
      cmake --build "$BUILD_DIR-asan"
      # Left out here, as a sanitizer adds nothing to them that the first
      # pass did not check: the package (built with Debian's flags, not
      # these), the checks that start no cbd (man pages, completion, the
      # walls, formatting, the licence, the corpus runner's self-test), and
      # the Node and Go clients, whose own code ASan does not see: the
      # Python client's suite stays, as it drives the same cbd paths (a
      # watch on a set of keys, reportBatch from a mirror) that they do and
      # no e2e suite does.
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --test-dir "$BUILD_DIR-asan" --output-on-failure --timeout 1800 \
        -E '^((node|go|package|format)\.|walls$|license$|conformance\.runner$|e2e\.test_(manpages|completion)$)' -R '.'
      # The writer thread (--state-file) is the one place two threads meet:
      # the unit suite and every end-to-end suite that starts it, under TSan.
      echo "dev.sh: the persistence writer thread under ThreadSanitizer" >&2
      cmake -S . -B "$BUILD_DIR-tsan" -G Ninja -DCBD_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCBD_WERROR="${CBD_WERROR:-OFF}" >/dev/null
      cmake --build "$BUILD_DIR-tsan" --target cbd cbctl unit_tests man
      TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        ctest --test-dir "$BUILD_DIR-tsan" --output-on-failure --timeout 1800 \
        -E '^(e2e\.|conformance\.|node\.|fuzz\.)' -R '.'
      TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        ctest --test-dir "$BUILD_DIR-tsan" --output-on-failure --timeout 1800 \
        -R '^(e2e\.test_(persistence|reply_queue|lifecycle)|conformance\.durable)$'
      echo "dev.sh: fuzzing the request path, the reply queue and memory against Redis" \
        "for ${FUZZ_SECONDS:-60} s each" >&2
      CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR-fuzz" -G Ninja -DCBD_FUZZ=ON \
        -DCBD_FUZZ_SECONDS="${FUZZ_SECONDS:-60}" >/dev/null
      cmake --build "$BUILD_DIR-fuzz" --target fuzz_requests fuzz_session fuzz_redis_diff
      # The three fuzzers side by side: FUZZ_SECONDS is wall time, so the
      # run waits for them once. On two cores each gets about two thirds of
      # one (the Redis one uses less itself: a fifth of its time goes to its
      # redis-server, and some to waiting for it).
      ctest --test-dir "$BUILD_DIR-fuzz" -R '^fuzz\.(run|session_run|redis_diff_run)$' \
        --output-on-failure --verbose --timeout 1800 -j3
    fi
    ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
