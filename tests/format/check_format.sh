#!/usr/bin/env bash
# Every C++ file of the tree is as clang-format 14 (.clang-format) writes it.
# Fails naming each file that is not, with the command that fixes them all.
# `check_format.sh --self-test` shows the check fails on a misformatted file.
set -euo pipefail
cd "$(dirname "$0")/../.."
FORMAT=${CLANG_FORMAT:-clang-format-14}
command -v "$FORMAT" >/dev/null || { echo "check_format: $FORMAT not found (apt-get install clang-format-14)" >&2; exit 1; }

cxx_files() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files --cached --others --exclude-standard '*.cpp' '*.hpp'
  else
    find common daemon cli tests bench -name '*.cpp' -o -name '*.hpp'
  fi
}

check() { # files...
  local bad=()
  for f in "$@"; do
    [[ -f $f ]] || continue
    "$FORMAT" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if ((${#bad[@]})); then
    printf 'check_format: not formatted: %s\n' "${bad[@]}" >&2
    echo "check_format: fix with: git ls-files '*.cpp' '*.hpp' | xargs $FORMAT -i" >&2
    return 1
  fi
}

if [[ ${1:-} == --self-test ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp .clang-format "$tmp/"
  printf 'int  main( ){return 0;}\n' >"$tmp/bad.cpp"
  printf 'int main() {\n    return 0;\n}\n' >"$tmp/good.cpp"
  check "$tmp/good.cpp" || { echo "check_format: self-test: a formatted file failed" >&2; exit 1; }
  if check "$tmp/bad.cpp" 2>/dev/null; then
    echo "check_format: self-test: a misformatted file passed" >&2
    exit 1
  fi
  echo "check_format: self-test passed"
  exit 0
fi

mapfile -t files < <(cxx_files)
check "${files[@]}"
echo "check_format: ${#files[@]} files formatted"
