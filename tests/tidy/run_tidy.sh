#!/usr/bin/env bash
# clang-tidy 14 with the tree's .clang-tidy on every C++ source of common/,
# daemon/ and cli/, from the build's compile_commands.json. Fails naming
# each finding. `run_tidy.sh --self-test` shows the check fails on a file
# with a bug it is meant to catch (a use after move).
#
#   run_tidy.sh BUILD_DIR | --self-test
set -euo pipefail
cd "$(dirname "$0")/../.."
TIDY=${CLANG_TIDY:-clang-tidy-14}
command -v "$TIDY" >/dev/null || { echo "run_tidy: $TIDY not found (apt-get install clang-tidy-14)" >&2; exit 1; }

if [[ ${1:-} == --self-test ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp .clang-tidy "$tmp/"
  cat >"$tmp/bad.cpp" <<'CPP'
#include <string>
#include <utility>
std::size_t moved_then_used(std::string s) {
    std::string t = std::move(s);
    return s.size() + t.size();
}
CPP
  sed 's/return s.size() + t.size();/return t.size();/' "$tmp/bad.cpp" >"$tmp/good.cpp"
  "$TIDY" --quiet "$tmp/good.cpp" -- -std=c++20 >"$tmp/good.log" 2>&1 ||
    { cat "$tmp/good.log" >&2; echo "run_tidy: self-test: a clean file failed" >&2; exit 1; }
  if "$TIDY" --quiet "$tmp/bad.cpp" -- -std=c++20 >"$tmp/bad.log" 2>&1; then
    echo "run_tidy: self-test: a use after move passed" >&2
    exit 1
  fi
  grep -q 'bugprone-use-after-move' "$tmp/bad.log" ||
    { cat "$tmp/bad.log" >&2; echo "run_tidy: self-test: failed, but not on the use after move" >&2; exit 1; }
  echo "run_tidy: self-test passed"
  exit 0
fi

build=${1:?usage: run_tidy.sh BUILD_DIR | --self-test}
[[ -f $build/compile_commands.json ]] ||
  { echo "run_tidy: no $build/compile_commands.json (configure the build first)" >&2; exit 1; }
mapfile -t files < <(find common daemon cli -name '*.cpp' | sort)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# One clang-tidy per file, as many at once as there are cores: each parses
# Asio and nlohmann's headers, which is what the time goes into.
if ! printf '%s\0' "${files[@]}" |
  xargs -0 -P "$(nproc)" -n 1 "$TIDY" --quiet -p "$build" >"$log" 2>&1; then
  grep -E 'error:|warning:' "$log" >&2 || cat "$log" >&2
  echo "run_tidy: findings above (checks and reasons: .clang-tidy)" >&2
  exit 1
fi
echo "run_tidy: ${#files[@]} files, no findings"
