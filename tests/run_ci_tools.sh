#!/usr/bin/env bash
# run_ci_tools.sh SRC ATTNC — tests that need an outside tool (FileCheck, pkg-config, python3,
# the AArch64 cross tools) switch themselves off with a warning when it is missing, but with
# CI=true in the environment a missing tool fails the run: the configure stops with an error,
# run_aarch64.sh exits 1 instead of 77 (skipped).
set -u
src=$1 attnc=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for tool in FILECHECK PKG_CONFIG PYTHON3; do
    missing=(-DATTNC_$tool="$tmp/no-such-tool")
    env -u CI cmake -S "$src" -B "$tmp/local-$tool" "${missing[@]}" >"$tmp/out" 2>&1
    rc=$?
    if [ $rc -ne 0 ] || ! grep -q "not found" "$tmp/out"; then
        echo "FAIL: $tool missing, not in CI: configure exit $rc, expected 0 and a warning"
        tail -n 5 "$tmp/out"
        fail=$((fail + 1))
    fi
    CI=true cmake -S "$src" -B "$tmp/ci-$tool" "${missing[@]}" >"$tmp/out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] || ! grep -q "CI=true" "$tmp/out"; then
        echo "FAIL: $tool missing, CI=true: configure exit $rc, expected an error"
        tail -n 5 "$tmp/out"
        fail=$((fail + 1))
    else
        echo "ok: $tool missing: a warning locally, an error in CI"
    fi
    rm -rf "$tmp/local-$tool" "$tmp/ci-$tool"
done
# run_aarch64.sh with no cross compiler on the PATH (bash itself found by its full path)
bash=$(command -v bash)
env -u CI PATH="$tmp" "$bash" "$src/tests/run_aarch64.sh" "$attnc" "$src" causal_lm >/dev/null 2>&1
rc=$?
[ $rc -eq 77 ] || { echo "FAIL: run_aarch64.sh without cross tools: exit $rc, expected 77"; fail=$((fail + 1)); }
CI=true PATH="$tmp" "$bash" "$src/tests/run_aarch64.sh" "$attnc" "$src" causal_lm >/dev/null 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 77 ] || { echo "FAIL: run_aarch64.sh without cross tools, CI=true: exit $rc, expected a failure"; fail=$((fail + 1)); }
echo "$fail failed"
[ "$fail" -eq 0 ]
