#!/usr/bin/env bash
# Sets everything up and runs all tests: the release build, then the ASan+UBSan build, the
# TSan build (threaded tests) and the fuzzers (FUZZ_SECONDS each, default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# never the user's kernel cache (~/.cache/attnc): a private one for this run; ctest's tests use
# build*/tests/kernel-cache, emptied here so every run compiles its kernels once from scratch
ATTNC_CACHE_DIR=$(mktemp -d)
export ATTNC_CACHE_DIR
trap 'rm -rf "$ATTNC_CACHE_DIR"' EXIT
rm -rf build/tests/kernel-cache build-asan/tests/kernel-cache
bash scripts/build.sh build
(cd build && ctest --output-on-failure -j2)
echo "test.sh: release suite done at ${SECONDS}s"
# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer (leaks included).
# -O2 -g: instrumented -O0 code made the JIT test suites several times slower
bash scripts/build.sh build-asan -DATTNC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
# LSan: only leaks inside LLVM's own static state are suppressed (tests/lsan.supp).
# aot_run_aarch64 runs once, in the release suite: its minutes go to qemu running uninstrumented
# AArch64 binaries; aot_cross_aarch64 keeps the cross compile itself under the sanitizers.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   LSAN_OPTIONS="suppressions=$PWD/../tests/lsan.supp:print_suppressions=0" \
   ctest --output-on-failure -j2 -E '^aot_run_aarch64$')
echo "test.sh: ASan+UBSan suite done at ${SECONDS}s"
# Threads under ThreadSanitizer, then every fuzzer for a bounded time.
bash scripts/tsan.sh
echo "test.sh: TSan done at ${SECONDS}s"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
echo "test.sh: fuzzers done at ${SECONDS}s"
