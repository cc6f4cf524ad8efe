#!/usr/bin/env python3
"""test_ring_cli.py ATTNC MPIRUN — `attnc run --ring` under mpirun (1 .. 4 ranks, both
shardings) writes the same outputs as a single-process `attnc run`, forward and --grad
(dq, dk, dv and the gradient of an f32 input), also for blocks stored in bf16 and f16 K/V; --stats prints a line per rank; a rank whose
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

# a block stored in bf16 (f32 K/V under it likewise: kv_dtype = f16): the f32 .npy inputs are
# converted as run converts them, o is written as f32; the ring's parts merge in f32 and o is
# rounded once more, so it may differ from run's by a unit in the last place of bf16
for name, stored in (("bf16", "dtype = bf16;"), ("kvf16", "kv_dtype = f16;")):
    spec16 = path(f"{name}.attn")
    with open(spec16, "w") as f:
        f.write(f"attention s16 {{ heads = 4; kv_heads = 2; head_dim = 16; mask = sliding(50); {stored} }}\n")
    ins16 = [f"--in={n}={path(n + '.npy')}" for n in ("q", "k", "v")]
    tol = 1e-2 if name == "bf16" else 1e-5
    p = run([ATTNC, "run", spec16, *ins16, *outs(fwd_outs, name + "ref"), "--threads", "1"])
    g = run([ATTNC, "run", spec16, "--grad", *ins16, f"--in=do={path('do.npy')}", *outs(["dq", "dk", "dv"], name + "ref"),
             "--threads", "1"])
    if p.returncode or g.returncode:
        fail(f"{name} single process: {p.stderr}{g.stderr}")
        continue
    for ranks, shard in ((2, "contiguous"), (3, "zigzag")):
        tag = f"{name}{ranks}{shard}"
        p = run([ATTNC, "run", spec16, "--ring", "--shard", shard, "--threads", "1", *ins16, *outs(fwd_outs, tag)],
                ranks)
        # the backward from run's o and lse (the gradients follow o: a unit apart in o moves them more)
        g = run([ATTNC, "run", spec16, "--ring", "--grad", "--shard", shard, "--threads", "1", *ins16,
                 f"--in=do={path('do.npy')}", f"--in=o={path(f'o_{name}ref.npy')}",
                 f"--in=lse={path(f'lse_{name}ref.npy')}", *outs(["dq", "dk", "dv"], tag)], ranks)
        if p.returncode or g.returncode:
            fail(f"{tag}: exit {p.returncode}, {g.returncode}: {p.stderr}{g.stderr}")
            continue
        for n, rtol in (("o", tol), ("lse", 1e-5), ("dq", 1e-4), ("dk", 1e-4), ("dv", 1e-4)):
            ref, got = np.load(path(f"{n}_{name}ref.npy")), np.load(path(f"{n}_{tag}.npy"))
            if ref.dtype != np.float32 or ref.shape != got.shape or not np.allclose(got, ref, rtol=rtol, atol=rtol):
                fail(f"{tag}: {n} differs from the single process's by {np.abs(got - ref).max()}")
        if name == "bf16" and np.array_equal(np.load(path(f"o_{tag}.npy")), np.load(path("o_ref.npy"))):
            fail(f"{tag}: o equals the f32 block's: the storage type was not used")

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

# bench --ring of a block stored in bf16: kv_bytes and the bytes sent are half the f32 block's
sent = {}
for name, stored in (("f32", ""), ("bf16", "dtype = bf16;")):
    sb = path(f"bench_{name}.attn")
    with open(sb, "w") as f:
        f.write(f"attention cg {{ heads = 4; kv_heads = 2; head_dim = 16; mask = causal; {stored} }}\n")
    p = run([ATTNC, "bench", sb, "--ring", "--q-len", "96", "--reps", "1", "--threads", "1", "--json"], 2)
    try:
        sent[name] = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        fail(f"bench --ring {name}: {e}: {p.stdout} {p.stderr}")
if len(sent) == 2 and (sent["bf16"]["kv_bytes"] * 2 != sent["f32"]["kv_bytes"] or
                       sent["bf16"]["max_bytes_sent"] * 2 != sent["f32"]["max_bytes_sent"] or
                       sent["f32"]["max_bytes_sent"] <= 0):
    fail(f"bench --ring bf16: kv_bytes, max_bytes_sent {sent['bf16']} against f32 {sent['f32']}")

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
