#!/usr/bin/env bash
# fuzz.sh [SECONDS] — builds the libFuzzer targets (tests/fuzz) with clang-19 into build-fuzz/
# and runs each for SECONDS (default 60; the .npy reader, a small parser, a third of that). Fails
# on any finding: a crash, a sanitizer report, a leak, a timeout or running out of memory.
# Reproducers land in build-fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
dir=build-fuzz
CC=clang-19 CXX=clang++-19 cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DATTNC_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
cmake --build "$dir" -j2 --target fuzz_spec fuzz_call fuzz_paged fuzz_npy
# The seed corpus of the spec fuzzer: every example and bad spec, copied fresh (not kept in git).
rm -rf "$dir/seeds"
mkdir -p "$dir/seeds/spec" "$dir/corpus/spec" "$dir/corpus/call" "$dir/corpus/paged" "$dir/corpus/npy" "$dir/seeds/npy" "$dir/artifacts"
cp examples/*.attn tests/bad/*.attn tests/dump/*.attn "$dir/seeds/spec/" 2>/dev/null || true
# the .npy reader's seeds: one array of each dtype NumPy writes that the CLI reads
/usr/bin/python3 -c 'import numpy as np, sys
d = sys.argv[1]
for i, (t, s) in enumerate([("<f4", (2, 3)), ("<i4", ()), ("<f2", (4,)), ("|i1", (2, 1, 2))]):
    np.save(f"{d}/seed{i}.npy", np.arange(int(np.prod(s)), dtype=t).reshape(s))' "$dir/seeds/npy"
status=0
for f in spec call paged npy; do
    seeds=()
    [ "$f" = spec ] && seeds=("$dir/seeds/spec")
    [ "$f" = npy ] && seeds=("$dir/seeds/npy")
    # the call fuzzer's past findings run first, every time
    [ "$f" = call ] && seeds=(tests/fuzz/call-regressions)
    dict=()
    [ "$f" = spec ] && dict=(-dict=tests/fuzz/attn.dict)
    [ "$f" = npy ] && dict=(-dict=tests/fuzz/npy.dict)
    t=$secs
    [ "$f" = npy ] && t=$(( (secs + 2) / 3 ))
    echo "fuzz_$f: ${t}s"
    if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$dir/tests/fuzz/fuzz_$f" "$dir/corpus/$f" "${seeds[@]}" "${dict[@]}" \
        -max_total_time="$t" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$dir/artifacts/fuzz_${f}-" -print_final_stats=1 \
        >"$dir/fuzz_$f.log" 2>&1; then
        echo "fuzz_$f: FINDING (see $dir/fuzz_$f.log and $dir/artifacts/)"
        grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$dir/fuzz_$f.log" | head -n 20 || true
        status=1
    fi
    grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$dir/fuzz_$f.log" |
        sed -e "s/^/fuzz_$f: /" || true
done
exit $status
