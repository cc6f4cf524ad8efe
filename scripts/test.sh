#!/usr/bin/env bash
# Sets everything up and runs all tests: the release build, then the ASan+UBSan build.
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
# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer (leaks included).
bash scripts/build.sh build-asan -DATTNC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest --output-on-failure -j2)
