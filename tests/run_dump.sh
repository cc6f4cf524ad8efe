#!/usr/bin/env bash
# Runs `attnc dump` with the arguments of the spec's `# ARGS:` line and checks the output
# against the spec's `CHECK:` lines with LLVM's FileCheck.
set -euo pipefail
attnc=$1 filecheck=$2 spec=$3
args=$(sed -n 's/^# ARGS: *//p' "$spec" | head -n 1)
# shellcheck disable=SC2086
"$attnc" dump "$spec" $args | "$filecheck" "$spec"
