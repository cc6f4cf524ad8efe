#!/usr/bin/env bash
# run_limits.sh ATTNC SRC [sanitized] — the command line under resource limits set by `ulimit` in a
# subshell: a limit may cost a compile or fail the command with an error (exit status 1), never
# kill it with a signal.
#   ulimit -s 64   `check` and `dump` read a spec (once a 64 KiB buffer on the stack: SIGSEGV)
#   ulimit -v      a cold compile with too little address space for LLVM: exit 1 and a message
#                  (once std::bad_alloc in LLVM, exit 134); `build` within the documented floor
#   ulimit -f 16   a compile whose cache entry (~33 KiB) exceeds the limit: the entry is not
#                  written (once SIGXFSZ, exit 153, and a temp file left behind)
set -u
attnc=$1 src=$2 sanitized=${3:-}
spec=$src/examples/causal_lm.attn
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
expect() { # expect STATUS WHAT -- COMMAND...: the exit status of COMMAND
    local want=$1 what=$2
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $what: exit $got, expected $want"
        sed -e 's/^/    /' "$tmp/err" | tail -n 5
        fail=$((fail + 1))
    else
        echo "ok: $what"
    fi
}

expect 0 "ulimit -s 64: check" -- bash -c 'ulimit -s 64 && exec "$0" check "$1"' "$attnc" "$spec"
expect 0 "ulimit -s 64: dump" -- bash -c 'ulimit -s 64 && exec "$0" dump "$1" --kernel cpm_lm' "$attnc" "$spec"
expect 0 "ulimit -s 64: dump --llvm" -- bash -c 'ulimit -s 64 && exec "$0" dump "$1" --kernel cpm_lm --llvm' "$attnc" "$spec"
expect 1 "ulimit -s 64: a bad spec" -- bash -c 'ulimit -s 64 && exec "$0" check "$1"' "$attnc" "$src/tests/bad/034_deep_expression.attn"

export ATTNC_CACHE_DIR=$tmp/cache
expect 0 "ulimit -f 16: cold compile" -- bash -c 'ulimit -f 16 && exec "$0" bench "$1" --kernel cpm_lm --q-len 64 --kv-len 64 --threads 1' "$attnc" "$spec"
left=$(find "$tmp/cache" -type f 2>/dev/null | wc -l)
[ "$left" -eq 0 ] || { echo "FAIL: ulimit -f 16: $left files left in the cache"; fail=$((fail + 1)); }
expect 0 "no limit: cold compile writes the entry" -- "$attnc" bench "$spec" --kernel cpm_lm --q-len 64 --kv-len 64 --threads 1
[ "$(find "$tmp/cache" -name '*.attnk' | wc -l)" -eq 1 ] || { echo "FAIL: no entry written without the limit"; fail=$((fail + 1)); }

# the floor: 128 MiB beyond what the process has mapped when the compile starts (docs/guarantees.md)
export ATTNC_NO_CACHE=1
[ -n "$sanitized" ] && echo "ulimit -v: not under sanitizers (their shadow memory needs terabytes of address space)"
[ -n "$sanitized" ] || for v in 200000 210000 230000 260000; do
    expect 1 "ulimit -v $v: cold compile" -- bash -c 'ulimit -v "$2" && exec "$0" bench "$1" --kernel cpm_lm --q-len 64 --kv-len 64 --threads 1 --reps 1' "$attnc" "$spec" "$v"
    grep -q "ulimit -v" "$tmp/err" || { echo "FAIL: ulimit -v $v: no message naming the limit"; fail=$((fail + 1)); }
done
[ -n "$sanitized" ] || expect 1 "ulimit -v 210000: build" -- bash -c 'ulimit -v 210000 && exec "$0" build "$1" --kernel cpm_lm -o "$2"' "$attnc" "$spec" "$tmp/k.o"
[ -n "$sanitized" ] || expect 0 "ulimit -v 450000: build" -- bash -c 'ulimit -v 450000 && exec "$0" build "$1" --kernel cpm_lm -o "$2"' "$attnc" "$spec" "$tmp/k.o"
unset ATTNC_NO_CACHE

echo "$fail failed"
[ "$fail" -eq 0 ]
