#!/usr/bin/env bash
# Runs attnc beside a plain C flash loop (-O3 -march=native) on the same shape and prints
# the ratio: dense causal, 8 heads, head_dim 64, LEN x LEN (default 4096), 1 and 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
len=${1:-4096}
[ -x build/attnc ] || bash scripts/build.sh build
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cc -O3 -march=native -o "$tmp/plain" bench/plain_flash.c -lm
cat > "$tmp/causal.attn" <<'SPEC'
attention causal8 { heads = 8; head_dim = 64; mask = causal; }
SPEC
plain=$("$tmp/plain" 8 "$len" 64 1 1 | tail -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["gflops"])')
printf "%-28s %10s %8s\n" "kernel" "GFLOP/s" "ratio"
printf "%-28s %10.2f %8s\n" "plain C -O3, 1 thread" "$plain" "1.00"
for t in 1 2; do
  g=$(build/attnc bench "$tmp/causal.attn" --q-len "$len" --kv-len "$len" --threads $t --json \
      | tail -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["gflops"])')
  printf "%-28s %10.2f %8.2f\n" "attnc, $t thread(s)" "$g" "$(python3 -c "print($g/$plain)")"
done
