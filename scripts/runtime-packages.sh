#!/usr/bin/env bash
# Prints the Debian/Ubuntu packages that provide the shared libraries BINARY... link, one per
# line: what a runtime image must install for them to start. Derived from `ldd` and `dpkg -S` on
# the build machine (which runs the same distribution as the runtime image), so the list cannot
# drift from what the binaries need. Libraries under a directory in SKIP_DIRS (colon-separated;
# libraries the image copies in itself, such as libtorch's) are left out, as are those no package
# owns. A library that does not resolve is an error.
#   scripts/runtime-packages.sh build/services/coordinator/squeeze-coordinator > packages.txt
set -euo pipefail
skip_dirs=${SKIP_DIRS:-}
IFS=: read -ra skips <<< "$skip_dirs"
paths=()
for binary in "$@"; do
  missing=$(ldd "$binary" | awk '/not found/ {print $1}')
  if [ -n "$missing" ]; then
    echo "runtime-packages: $binary: unresolved libraries: $missing" >&2
    exit 1
  fi
  while read -r lib; do
    real=$(readlink -f "$lib")
    skip=no
    for d in "${skips[@]}"; do
      [ -n "$d" ] && [[ "$real" == "$d"/* || "$lib" == "$d"/* ]] && skip=yes
    done
    [ "$skip" = yes ] && continue
    # dpkg knows files by the path they were installed under: the path ldd printed or the
    # resolved one, with or without the /usr merge.
    paths+=("$lib" "$real" "/usr$lib" "${real#/usr}")
  done < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
done
# One dpkg query for every path (one per path takes minutes for libtorch's dozens of libraries);
# paths no package owns are reported on stderr and skipped.
printf '%s\n' "${paths[@]}" | sort -u | xargs -r dpkg -S 2>/dev/null |
  cut -d: -f1 | tr ',' '\n' | sed 's/^ *//' | grep -v '^diversion by' | sort -u || true
