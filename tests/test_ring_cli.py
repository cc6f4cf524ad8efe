#!/usr/bin/env python3
"""test_ring_cli.py ATTNC MPIRUN — `attnc run --ring` under mpirun (1 .. 4 ranks, both
shardings) writes the same outputs as a single-process `attnc run`, forward and --grad
(dq, dk, dv and the gradient of an f32 input); --stats prints a line per rank; a rank whose
input sizes differ from the others' makes every rank fail with a clear error, no hang."""
import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ATTNC, MPIRUN = sys.argv[1], sys.argv[2]
failures = 0
tmp = tempfile.mkdtemp(prefix="attnc_ring_")
atexit.register(shutil.rmtree, tmp, ignore_errors=True)
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
env.setdefault("ATTNC_CACHE_DIR", os.path.join(tmp, "cache"))


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg, file=sys.stderr)


def run(args, ranks=None, timeout=120):
    cmd = ([MPIRUN, "--oversubscribe", "--allow-run-as-root", "-n", str(ranks)] if ranks else []) + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def path(name):
    return os.path.join(tmp, name)


spec = path("docs.attn")
with open(spec, "w") as f:
    f.write("attention docs {\n"
            "    input i32 doc[batch, seq];\n"
            "    input f32 slope[heads];\n"
            "    heads = 4; kv_heads = 2; head_dim = 16;\n"
            "    mask  = k <= q && doc[b, k] == doc[b, q];\n"
            "    score = score - slope[h] * (q - k);\n"
            "}\n")
rng = np.random.default_rng(7)
B, L = 2, 181
arrays = {
    "q": rng.standard_normal((B, 4, L, 16), dtype=np.float32),
    "k": rng.standard_normal((B, 2, L, 16), dtype=np.float32),
    "v": rng.standard_normal((B, 2, L, 16), dtype=np.float32),
    "do": rng.standard_normal((B, 4, L, 16), dtype=np.float32),
    "slope": np.array([0.01, 0.02, 0.03, 0.04], dtype=np.float32),
    "doc": np.cumsum(rng.random((B, L)) < 0.03, axis=1).astype(np.int32),
}
for n, a in arrays.items():
    np.save(path(n + ".npy"), a)
ins = [f"--in={n}={path(n + '.npy')}" for n in ("q", "k", "v", "doc", "slope")]
fwd_outs = ["o", "lse"]
grad_outs = ["dq", "dk", "dv", "dslope"]


def outs(names, tag):
    return [f"--out={n}={path(f'{n}_{tag}.npy')}" for n in names]


p = run([ATTNC, "run", spec, *ins, *outs(fwd_outs, "ref"), "--threads", "1"])
g = run([ATTNC, "run", spec, "--grad", *ins, f"--in=do={path('do.npy')}", *outs(grad_outs, "ref"), "--threads", "1"])
if p.returncode or g.returncode:
    fail(f"single process: {p.stderr}{g.stderr}")
    sys.exit(1)

for ranks in (1, 2, 3, 4):
    for shard in ("contiguous", "zigzag"):
        tag = f"{ranks}{shard}"
        p = run([ATTNC, "run", spec, "--ring", "--shard", shard, "--stats", "--threads", "1", *ins,
                 *outs(fwd_outs, tag)], ranks)
        if p.returncode:
            fail(f"{tag}: exit {p.returncode}: {p.stderr}")
            continue
        for n in fwd_outs:
            ref, got = np.load(path(f"{n}_ref.npy")), np.load(path(f"{n}_{tag}.npy"))
            if ref.shape != got.shape or not np.allclose(got, ref, rtol=1e-5, atol=1e-5):
                fail(f"{tag}: {n} differs from the single process's")
        lines = re.findall(r"^ring forward: rank (\d+) of (\d+): sent (\d+) bytes .* computed (\d+) of (\d+) pairs",
                           p.stdout, re.M)
        if sorted(int(r) for r, *_ in lines) != list(range(ranks)) or any(int(n) != ranks for _, n, *_ in lines):
            fail(f"{tag}: --stats printed {p.stdout!r}")
        g = run([ATTNC, "run", spec, "--ring", "--grad", "--shard", shard, "--threads", "1", *ins,
                 f"--in=do={path('do.npy')}", *outs(grad_outs, tag)], ranks)
        if g.returncode:
            fail(f"{tag} --grad: exit {g.returncode}: {g.stderr}")
            continue
        for n in grad_outs:
            ref, got = np.load(path(f"{n}_ref.npy")), np.load(path(f"{n}_{tag}.npy"))
            if ref.shape != got.shape or not np.allclose(got, ref, rtol=1e-4, atol=1e-4):
                fail(f"{tag} --grad: {n} differs from the single process's by {np.abs(got - ref).max()}")

# a rank whose k has other sizes: every rank fails (exit 1), one clear message, no hang
np.save(path("k_short.npy"), arrays["k"][:, :, :L - 5])
wrapper = path("rank_k.sh")
with open(wrapper, "w") as f:
    f.write('#!/bin/sh\nk=%s\n[ "$OMPI_COMM_WORLD_RANK" = 1 ] && k=%s\nexec "$@" --in=k="$k"\n'
            % (path("k.npy"), path("k_short.npy")))
os.chmod(wrapper, 0o755)
base = [f"--in={n}={path(n + '.npy')}" for n in ("q", "v", "doc", "slope")]
p = run([wrapper, ATTNC, "run", spec, "--ring", "--threads", "1", *base, f"--out=o={path('o_bad.npy')}"], 3,
        timeout=60)
if p.returncode != 1 or "attnc: error:" not in p.stderr:
    fail(f"mismatched k on rank 1: exit {p.returncode}, stderr {p.stderr!r}")
if os.path.exists(path("o_bad.npy")):
    fail("mismatched k on rank 1: an output was written")

# rank 1 reads self-consistent inputs of another kv_len: the ranks' size agreement fails all
np.save(path("v_short.npy"), arrays["v"][:, :, :L - 5])
with open(wrapper, "w") as f:
    f.write('#!/bin/sh\nk=%s v=%s\n[ "$OMPI_COMM_WORLD_RANK" = 1 ] && k=%s v=%s\nexec "$@" --in=k="$k" --in=v="$v"\n'
            % (path("k.npy"), path("v.npy"), path("k_short.npy"), path("v_short.npy")))
base = [f"--in={n}={path(n + '.npy')}" for n in ("q", "doc", "slope")]
p = run([wrapper, ATTNC, "run", spec, "--ring", "--shard", "zigzag", "--threads", "1", *base,
         f"--out=o={path('o_bad.npy')}"], 4, timeout=60)
first = p.stderr.splitlines()[0] if p.stderr else ""
if p.returncode != 1 or not re.search(r"attnc: error: the ranks read inputs of different sizes: k dim 2", first):
    fail(f"kv_len differing on rank 1: exit {p.returncode}, stderr {p.stderr!r}")
if os.path.exists(path("o_bad.npy")):
    fail("kv_len differing on rank 1: an output was written")

# bench --ring --json: the fields every bench --json has (kernel, batch, q_len, kv_len, threads,
# ms, ms_min, gflops, visible, compile_ms, kv_bytes), forward and --grad
import json
for extra, per_pair in (([], 2 * (16 + 16)), (["--grad"], 2 * (3 * 16 + 2 * 16))):
    p = run([ATTNC, "bench", spec, "--ring", "--q-len", "96", "--reps", "2", "--threads", "1", "--json", *extra], 2)
    try:
        j = json.loads(p.stdout.strip().splitlines()[-1])
        want = {"kernel", "batch", "q_len", "kv_len", "threads", "ms", "ms_min", "gflops", "visible", "compile_ms",
                "kv_bytes", "ring", "ranks"}
        if p.returncode != 0 or not want <= set(j):
            fail(f"bench --ring --json {extra}: missing {want - set(j)}: {p.stdout} {p.stderr}")
        elif j["kv_bytes"] != 1 * 2 * 96 * (16 + 16) * 4 or not 0.5 <= j["visible"] <= 0.52 or \
                abs(j["gflops"] - per_pair * j["visible"] * 4 * 96 * 96 / (j["ms"] * 1e6)) > 1e-3 * j["gflops"] + 1e-3:
            fail(f"bench --ring --json {extra}: {j}")
    except (ValueError, IndexError) as e:
        fail(f"bench --ring --json {extra}: {e}: {p.stdout} {p.stderr}")

# a mask that reads an input out of range where the kernel prunes but the count of visible pairs
# looks: bench --ring fails as bench does (it reported visible 0)
oob = path("oob.attn")
with open(oob, "w") as f:
    f.write("attention oob { heads = 2; head_dim = 16; input i32 pos[kv_len];\n"
            "    mask = pos[max(q - k + 4, 0)] >= 0 && q - k < 4 && k <= q; }\n")
for ranks in (None, 2):
    args = [ATTNC, "bench", oob, "--q-len", "256", "--reps", "1", "--threads", "1", "--json"]
    p = run(args + (["--ring"] if ranks else []), ranks)
    if p.returncode != 1 or "out of bounds" not in p.stderr:
        fail(f"bench{' --ring' if ranks else ''} of a mask read out of range: exit {p.returncode}, {p.stderr!r}")

# usage: --shard and --stats need --ring
for extra in (["--shard", "zigzag"], ["--stats"]):
    p = run([ATTNC, "run", spec, *ins, *extra])
    if p.returncode != 2 or "--ring" not in p.stderr:
        fail(f"{extra} without --ring: exit {p.returncode}, {p.stderr!r}")

print(f"ring cli: {failures} failed")
sys.exit(1 if failures else 0)
