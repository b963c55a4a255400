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
#                                      (a git checkout, or a tarball of one)
#
# Environment: BUILD_DIR (default build), CBD_WERROR=ON to fail on warnings,
# FUZZ_SECONDS (default 60), SOAK_SECONDS (default 30), DEB_JOBS (deb: parallel jobs, default 2),
# APT_OPTIONS (extra apt-get options).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}

# Debian 12 packages. What building needs (cbd, its tests and benchmarks,
# every sanitizer build, the Debian package)...
BUILD_PACKAGES=(
  cmake ninja-build g++ pkg-config python3
  libcli11-dev nlohmann-json3-dev libboost-dev catch2 libsystemd-dev libsqlite3-dev libhiredis-dev
  scdoc debhelper dpkg-dev fakeroot
)
# ...and what only the tests drive or check with: Redis, the clients' own
# toolchains, clang (fuzzing, format, tidy), a browser, shells, lintian.
TEST_PACKAGES=(
  golang-go python3-venv python3-pip sqlite3 redis-server python3-pytest systemd
  prometheus curl util-linux
  clang-14 libclang-rt-14-dev clang-format-14 clang-tidy-14
  lintian groff-base man-db bash-completion zsh fish
  chromium chromium-driver
)

# install_deps build|test|all: installs whichever of that group's packages
# are missing.
install_deps() {
  local wanted=() missing=()
  case ${1:-all} in
    build) wanted=("${BUILD_PACKAGES[@]}") ;;
    test) wanted=("${TEST_PACKAGES[@]}") ;;
    all) wanted=("${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}") ;;
  esac
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  # Node for the TypeScript client's tests: the machine's own if it has
  # one, else Debian's.
  if [[ ${1:-all} != build ]]; then
    command -v npm >/dev/null || missing+=(nodejs npm)
  fi
  ((${#missing[@]})) || return 0
  echo "dev.sh: installing ${missing[*]}" >&2
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  # APT_OPTIONS: extra apt-get options (CI passes dpkg's --force-unsafe-io:
  # a throwaway machine need not sync every file it unpacks).
  # shellcheck disable=SC2086
  "${sudo[@]}" apt-get update -qq ${APT_OPTIONS:-}
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    ${APT_OPTIONS:-} "${missing[@]}" >&2
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

# The tree's files as the package and the tests see them (NUL-separated).
# In a git checkout: tracked and new, as they are now, ignored ones left
# out. From a tarball of the tree (no .git here): every file but build
# trees and what the tools leave behind (.gitignore's patterns, by hand).
tree_files() {
  if [[ $(git rev-parse --show-toplevel 2>/dev/null) == "$PWD" ]]; then
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done
  else
    find . \( -path './build*' -o -path "./${BUILD_DIR#./}" -o -name .git -o -name __pycache__ \
      -o -name '*.pyc' -o -name node_modules -o -path ./clients/node/dist \) -prune -o \
      \( -type f -o -type l \) -printf '%P\0' | sort -z
  fi
}

# The Debian package, built from a copy of the tree's files so that
# dpkg-buildpackage's own build never dirties the tree; the results land in
# $BUILD_DIR/deb with tree-id, a digest of every file (names and contents)
# and the build options. When tree-id matches, the package there is this
# tree's already, and is kept: `dev.sh test` builds it while the test
# packages install, and the package test then finds it made.
deb() {
  local out=$BUILD_DIR/deb version copy id
  version=$(sed -n 's/^project(cbd VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
  local options="parallel=${DEB_JOBS:-2} ${DEB_BUILD_OPTIONS:-}"
  id=$({
    echo "$options"
    tree_files | xargs -0 -r sha256sum
  } | sha256sum | cut -d' ' -f1)
  if [[ -f $out/tree-id && $(<"$out/tree-id") == "$id" ]] &&
    compgen -G "$out/cbd_${version}_*.deb" >/dev/null; then
    echo "dev.sh: $out holds this tree's package already (tree-id $id)" >&2
    ls "$out"/*
    return 0
  fi
  copy=$(mktemp -d)
  # EXIT, not RETURN: a failed build ends the script (set -e) and must not
  # leave the copy behind either. The path is put in the trap now: the local
  # variable is gone by the time the script exits.
  # shellcheck disable=SC2064
  trap "rm -rf '$copy'" EXIT
  mkdir -p "$copy/cbd-$version" "$out"
  tree_files | tar --null -T - -cf - | tar -xf - -C "$copy/cbd-$version"
  (cd "$copy/cbd-$version" && DEB_BUILD_OPTIONS="$options" dpkg-buildpackage -b -us -uc >&2)
  rm -f "$out"/cbd_* "$out"/cbd-dbgsym_* "$out/tree-id"
  mv "$copy"/*.deb "$copy"/*.changes "$copy"/*.buildinfo "$out"/
  echo "$id" >"$out/tree-id"
  ls "$out"/*
}

# The three builds the suite runs in besides the plain one: ASan and UBSan
# (Debug), TSan (only what runs the writer thread), and clang's fuzzers;
# each as a unity build (CBD_UNITY in CMakeLists.txt: a fifth less time).
build_asan() {
  cmake -S . -B "$BUILD_DIR-asan" -G Ninja -DCBD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCBD_UNITY=ON \
    -DCBD_WERROR="${CBD_WERROR:-OFF}" >/dev/null
  cmake --build "$BUILD_DIR-asan"
}
build_tsan() {
  cmake -S . -B "$BUILD_DIR-tsan" -G Ninja -DCBD_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCBD_UNITY=ON \
    -DCBD_WERROR="${CBD_WERROR:-OFF}" >/dev/null
  cmake --build "$BUILD_DIR-tsan" --target cbd cbctl unit_tests man
}
build_fuzz() {
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR-fuzz" -G Ninja -DCBD_FUZZ=ON -DCBD_UNITY=ON \
    -DCBD_FUZZ_SECONDS="${FUZZ_SECONDS:-60}" >/dev/null
  cmake --build "$BUILD_DIR-fuzz" --target fuzz_requests fuzz_session fuzz_redis_diff
}

# Whether apt-get may run in the background: as root, or with sudo that
# asks for no password (a prompt must never wait behind a build).
can_install_unattended() {
  [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  deps) install_deps all ;;
  build) install_deps build; build ;;
  deb) install_deps build; deb ;;
  run)
    install_deps build
    build cbd cbctl >&2
    echo "dev.sh: starting cbd; talk to it with $BUILD_DIR/cli/cbctl (Ctrl-C stops it)" >&2
    exec "$BUILD_DIR/daemon/cbd" "$@"
    ;;
  test)
    if [[ ${1:-} == --quick ]]; then
      install_deps all
      build
      ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 900
      exit 0
    fi
    # What the builds need first; the test packages (a browser, clang, Go,
    # Node, Redis: most of the download) install while the plain, sanitizer
    # and package builds take both cores, which on a fresh machine hides
    # most of either behind the other.
    install_deps build
    mkdir -p "$BUILD_DIR"
    apt_log=$BUILD_DIR/test-packages.log
    apt_pid=""
    if can_install_unattended; then
      install_deps test >"$apt_log" 2>&1 &
      apt_pid=$!
    else
      install_deps test
    fi
    build
    build_asan
    build_tsan
    deb >"$BUILD_DIR/deb-build.log" 2>&1 ||
      { tail -40 "$BUILD_DIR/deb-build.log" >&2; echo "dev.sh: the package build failed" >&2; exit 1; }
    if [[ -n $apt_pid ]]; then
      echo "dev.sh: waiting for the test packages to install" >&2
      wait "$apt_pid" || { cat "$apt_log" >&2; echo "dev.sh: installing the test packages failed" >&2; exit 1; }
      cat "$apt_log" >&2
      # Configured again: the tests that need npm and go are added once they are there.
      build
    fi
    build_fuzz
    ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 900
    echo "dev.sh: the suite again under ASan and UBSan" >&2
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
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
      ctest --test-dir "$BUILD_DIR-tsan" --output-on-failure --timeout 1800 \
      -E '^(e2e\.|conformance\.|node\.|fuzz\.)' -R '.'
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
      ctest --test-dir "$BUILD_DIR-tsan" --output-on-failure --timeout 1800 \
      -R '^(e2e\.test_(persistence|reply_queue|lifecycle)|conformance\.durable)$'
    echo "dev.sh: fuzzing the request path, the reply queue and memory against Redis" \
      "for ${FUZZ_SECONDS:-60} s each" >&2
    # The three fuzzers side by side: FUZZ_SECONDS is wall time, so the
    # run waits for them once. On two cores each gets about two thirds of
    # one (the Redis one uses less itself: a fifth of its time goes to its
    # redis-server, and some to waiting for it).
    ctest --test-dir "$BUILD_DIR-fuzz" -R '^fuzz\.(run|session_run|redis_diff_run)$' \
      --output-on-failure --verbose --timeout 1800 -j3
    ;;
  *)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
