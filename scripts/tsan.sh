#!/usr/bin/env bash
# tsan.sh — builds attnc with ThreadSanitizer into build-tsan/ and runs the threaded tests
# (test_threads: 8 threads compiling and running at once; test_runtime: the thread pool;
# test_stack: a kernel handed from a small-stack thread to one started for it, with a pool;
# test_grad: the backward's tasks on 1-3 threads; test_paged: a ragged batch's tasks and key splits).
# libLLVM is not instrumented; the few reports inside it that are false positives are
# suppressed, one commented entry each, in tests/tsan.supp (never our own code).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-tsan
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTNC_TSAN=ON >/dev/null
cmake --build "$dir" -j2 --target test_threads test_runtime test_stack test_grad test_paged
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"
# a kernel cache private to this run, so cold compiles race too
export ATTNC_CACHE_DIR="$PWD/$dir/kernel-cache"
rm -rf "$ATTNC_CACHE_DIR"
for t in test_runtime test_threads test_stack test_grad test_paged; do
    echo "tsan: $t"
    "$dir/tests/$t"
done
