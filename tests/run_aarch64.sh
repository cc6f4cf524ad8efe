#!/usr/bin/env bash
# run_aarch64.sh ATTNC SRC FILE... — the AOT path on another architecture, end to end:
# `attnc build --target aarch64-linux-gnu` writes NEON kernels and their headers (every block
# of examples/FILE.attn, and tests/aot_mla.attn), the AArch64 cross compiler links them with the
# runtime's sources and test_aot.c / test_aot_mla.c (no compiler library), and qemu-user runs
# the results, which check themselves against the hand-written C masks and the MLA reference.
# Exit 77 (skipped) only when the cross tools are missing (scripts/setup.sh installs them), and
# then exit 1 (failed) in CI (environment CI=true), where every test must run.
set -euo pipefail
attnc=$1 src=$2
shift 2
cc=aarch64-linux-gnu-gcc
command -v "$cc" >/dev/null && command -v qemu-aarch64 >/dev/null || {
  echo "skipped: $cc or qemu-aarch64 not installed"; [ "${CI:-}" = true ] && exit 1; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for file in "$@"; do
  "$attnc" build "$src/examples/$file.attn" --target aarch64-linux-gnu \
    -o "$tmp/aot_$file.o" --header "$tmp/aot_$file.h"
done
mkdir "$tmp/mla" # the MLA blocks: their own program (test_aot_mla.c)
"$attnc" build "$src/tests/aot_mla.attn" --target aarch64-linux-gnu -o "$tmp/mla/aot_mla.o" \
  --header "$tmp/mla/aot_mla.h"
flags=(-std=c17 -O2 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Wno-unused-parameter -static
       -I"$src/include" -I"$src" -I"$tmp" -I"$tmp/mla")
"$cc" "${flags[@]}" -o "$tmp/test_aot_aarch64" \
  "$src/tests/test_aot.c" "$src/tests/masks.c" "$src"/runtime/*.c "$tmp"/*.o -lm -lpthread
"$cc" "${flags[@]}" -o "$tmp/test_aot_mla_aarch64" \
  "$src/tests/test_aot_mla.c" "$src/tests/masks.c" "$src"/runtime/*.c "$tmp/mla/aot_mla.o" -lm -lpthread
file_out=$(od -An -tu1 -j18 -N2 "$tmp/test_aot_aarch64" | tr -s ' ')
[ "$file_out" = " 183 0" ] || { echo "FAIL: not an AArch64 executable"; exit 1; }
qemu-aarch64 "$tmp/test_aot_aarch64"
qemu-aarch64 "$tmp/test_aot_mla_aarch64"
