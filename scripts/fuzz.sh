#!/usr/bin/env bash
# fuzz.sh [SECONDS] — builds the libFuzzer targets (tests/fuzz) with clang-19 into build-fuzz/
# and runs each for SECONDS (default 60). Fails on any finding: a crash, a sanitizer report, a
# leak, a timeout or running out of memory. Reproducers land in build-fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
dir=build-fuzz
CC=clang-19 CXX=clang++-19 cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DATTNC_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
cmake --build "$dir" -j2 --target fuzz_spec fuzz_call fuzz_paged
# The seed corpus of the spec fuzzer: every example and bad spec, copied fresh (not kept in git).
rm -rf "$dir/seeds"
mkdir -p "$dir/seeds/spec" "$dir/corpus/spec" "$dir/corpus/call" "$dir/corpus/paged" "$dir/artifacts"
cp examples/*.attn tests/bad/*.attn tests/dump/*.attn "$dir/seeds/spec/" 2>/dev/null || true
status=0
for f in spec call paged; do
    seeds=()
    [ "$f" = spec ] && seeds=("$dir/seeds/spec")
    # the call fuzzer's past findings run first, every time
    [ "$f" = call ] && seeds=(tests/fuzz/call-regressions)
    dict=()
    [ "$f" = spec ] && dict=(-dict=tests/fuzz/attn.dict)
    echo "fuzz_$f: ${secs}s"
    if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$dir/tests/fuzz/fuzz_$f" "$dir/corpus/$f" "${seeds[@]}" "${dict[@]}" \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
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
