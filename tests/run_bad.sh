#!/usr/bin/env bash
# run_bad.sh ATTNC DIR — golden diagnostics of bad specs.
#
# Each DIR/*.attn holds its expected diagnostics as comment lines
#   # EXPECT: LINE:COL: error: MESSAGE          (the file name is prefixed when comparing)
#   # EXPECT: <defines>: error: MESSAGE         (a bad -D; compared as written)
# and optionally extra command-line arguments as `# ARGS: -D name=value`.
# `ATTNC check FILE [ARGS]` must exit with status 1 and print exactly the expected `error:`
# lines, in order, on standard error (source and caret lines are not compared).
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 ATTNC DIR" >&2
    exit 2
fi
attnc=$1
dir=$2
pass=0
fail=0

for f in "$dir"/*.attn; do
    [ -e "$f" ] || continue
    expected=$(grep -a '^# EXPECT: ' "$f" | sed -e 's/^# EXPECT: //' | while IFS= read -r line; do
        case $line in
            "<"*) printf '%s\n' "$line" ;;
            *) printf '%s:%s\n' "$f" "$line" ;;
        esac
    done)
    args=$(grep -a '^# ARGS: ' "$f" | sed -e 's/^# ARGS: //' | head -n 1)
    # shellcheck disable=SC2086 # ARGS is split into words on purpose
    stderr=$("$attnc" check "$f" $args 2>&1 >/dev/null)
    status=$?
    actual=$(printf '%s\n' "$stderr" | while IFS= read -r line; do
        case $line in
            "$f:"*": error: "* | "<defines>: error: "*) printf '%s\n' "$line" ;;
        esac
    done)
    why=""
    if [ -z "$expected" ]; then
        why="no '# EXPECT:' lines"
    elif [ "$status" -ne 1 ]; then
        why="exit status $status, expected 1"
    elif [ "$actual" != "$expected" ]; then
        why="diagnostics differ"
    fi
    if [ -z "$why" ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $f: $why"
        diff <(printf '%s\n' "$expected") <(printf '%s\n' "$actual") | sed -e 's/^/    /'
    fi
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
