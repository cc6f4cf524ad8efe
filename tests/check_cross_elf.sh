#!/usr/bin/env bash
# check_cross_elf.sh ATTNC SPEC KERNEL OUT — `attnc build --target aarch64-linux-gnu --emit obj`
# must write an ELF object (magic 7f 45 4c 46) for AArch64 (e_machine 183 = EM_AARCH64).
set -euo pipefail
attnc=$1 spec=$2 kernel=$3 out=$4
rm -f "$out"
"$attnc" build "$spec" --kernel "$kernel" --target aarch64-linux-gnu --emit obj -o "$out"
[ -s "$out" ] || { echo "FAIL: $out missing or empty"; exit 1; }
magic=$(od -An -tx1 -N4 "$out" | tr -d ' \n')
[ "$magic" = 7f454c46 ] || { echo "FAIL: magic is $magic, expected 7f454c46 (ELF)"; exit 1; }
# e_ident[EI_DATA] (offset 5) says the byte order of e_machine (offset 18, 2 bytes).
data=$(od -An -tu1 -j5 -N1 "$out" | tr -d ' \n')
read -r b0 b1 < <(od -An -tu1 -j18 -N2 "$out")
if [ "$data" = 1 ]; then machine=$((b0 + 256 * b1)); else machine=$((b1 + 256 * b0)); fi
[ "$machine" = 183 ] || { echo "FAIL: e_machine is $machine, expected 183 (EM_AARCH64)"; exit 1; }
echo "ok: $out is an AArch64 ELF object"
