#!/usr/bin/env bash
# Builds tests/c/test.c against the static library of this checkout
# (target/debug/libsafestash_ffi.a, from `cargo build -p safestash-ffi`)
# and runs it in a fresh directory, under valgrind when VALGRIND=1:
# any leak or invalid access fails it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../../.." && pwd)
lib="$root/target/debug/libsafestash_ffi.a"
[ -f "$lib" ] || { echo "missing $lib: run cargo build -p safestash-ffi first"; exit 1; }
tmp=$(mktemp -d /tmp/safestash-ffi-c.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cc -std=c11 -Wall -Wextra -Werror -g -I "$root/crates/safestash-ffi/include" \
    "$here/test.c" "$lib" -lgcc_s -lutil -lrt -lpthread -lm -ldl -o "$tmp/test"
mkdir "$tmp/store"
if [ "${VALGRIND:-0}" = 1 ]; then
    valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect,possible \
        --suppressions="$here/valgrind.supp" \
        --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=1 \
        "$tmp/test" "$tmp/store"
else
    "$tmp/test" "$tmp/store"
fi
