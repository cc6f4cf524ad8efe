#!/usr/bin/env bash
# Sets everything up, compiles the example specs, runs them and shows a benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
attnc=build/attnc
echo "== check every example"
for f in examples/*.attn; do $attnc check "$f" && echo "ok  $f"; done
echo "== the Sparse Transformer strided mask, 24x24"
$attnc mask examples/sparse_strided.attn --kernel sparse_strided -D stride=4 --q-len 24 --kv-len 24
echo "== a custom mask: causal, but never attend to the previous token"
cat > "${TMPDIR:-/tmp}/custom.attn" <<'SPEC'
attention skip_prev { heads = 4; head_dim = 32; mask = causal && q - k != 1; }
SPEC
$attnc mask "${TMPDIR:-/tmp}/custom.attn" --q-len 8 --kv-len 8
echo "== run a causal kernel on .npy files and compare with NumPy"
tmp=$(mktemp -d)
/usr/bin/python3 - "$tmp" <<'PY'
import sys, numpy as np
d = sys.argv[1]; rng = np.random.default_rng(0)
for n, s in (("q", (1, 4, 50, 64)), ("k", (1, 4, 50, 64)), ("v", (1, 4, 50, 64))):
    np.save(f"{d}/{n}.npy", rng.standard_normal(s, dtype=np.float32))
PY
$attnc run examples/causal_lm.attn --kernel gpt_small --in q="$tmp/q.npy" --in k="$tmp/k.npy" \
  --in v="$tmp/v.npy" --out o="$tmp/o.npy"
/usr/bin/python3 - "$tmp" <<'PY'
import sys, numpy as np
d = sys.argv[1]
q, k, v, o = (np.load(f"{d}/{n}.npy").astype(np.float64) for n in "qkvo")
s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
p = np.exp(s - s.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
print("max |attnc - numpy| =", float(np.abs(p @ v - o).max()))
PY
rm -rf "$tmp"
echo "== benchmark: causal LM, 4 heads, head_dim 64, 2048 x 2048 (pruned, then -fno-prune)"
$attnc bench examples/causal_lm.attn --kernel gpt_small --q-len 2048 --kv-len 2048
$attnc bench examples/causal_lm.attn --kernel gpt_small --q-len 2048 --kv-len 2048 -fno-prune
echo "== the full report (machine peak, plain C, OpenBLAS, sparsity, MLA): python3 bench/report.py"
