#!/usr/bin/env python3
"""K/V stored in a kv_dtype other than a 16-bit dtype, from Python and the command line: q and o
in dtype (float16, or uint16 bf16 bits), k and v in kv_dtype (float32, float16, uint16 bf16 bits,
or int8 with float32 k_scale and v_scale), lse float32.

 - contiguous calls of every pair (dtype f16/bf16, kv_dtype each other one) against a float64
   NumPy reference on the stored values, the kernel's dtype and kv_dtype attributes and o's
   NumPy type;
 - paged calls over pages filled by attnc.paged_append in the cache's type;
 - the backward of bf16 + int8 and f16 + bf16 (kern.backward and attnc.torch.function);
 - tensors of the wrong type refused with ATTN_ERR_DTYPE naming the tensor;
 - `attnc run` converting float32 .npy files to each tensor's storage, contiguous and paged (and
   refusing int8 q and int8 k of a non-int8 cache, naming them), matching the Python call.

usage: test_kv_mix.py ATTNC_CLI   (ATTNC_LIB and PYTHONPATH as for test_binding.py)
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

import attnc

FAILS = []
CHECKS = [0]


def check(cond, what):
    CHECKS[0] += 1
    if not cond:
        FAILS.append(what)
        print("FAIL", what)


def raises(code, fn, what, word):
    try:
        fn()
    except attnc.AttnError as e:
        check(e.code == code and word in str(e), "%s: %s (wanted code %d, '%s')" % (what, e, code, word))
        return
    check(False, what + ": no error")


NP_OF = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16, "int8": np.int8}
PAIRS = [("bf16", "int8"), ("f16", "bf16"), ("bf16", "f32"), ("f16", "f32"), ("bf16", "f16"), ("f16", "int8")]
H, KH, D = 4, 2, 24


def stored(x, t):
    """x as t stores it: (the array the kernel takes, its float32 values, the scales or None)."""
    if t == "f32":
        return x.astype(np.float32), x.astype(np.float32), None
    if t == "f16":
        a = x.astype(np.float16)
        return a, a.astype(np.float32), None
    if t == "bf16":
        a = attnc.from_float32(x).reshape(x.shape)
        return a, attnc.to_float32(a).reshape(x.shape), None
    s = np.abs(x).max(-1) / 127
    s[s == 0] = 1
    a = np.rint(x / s[..., None]).astype(np.int8)
    return a, a.astype(np.float32) * s[..., None].astype(np.float32), s.astype(np.float32)


def widen(o, t):
    return attnc.to_float32(o).reshape(o.shape) if t == "bf16" else o.astype(np.float32)


def reference(q, k, v, window):
    """float64 attention, causal (within a window of `window` keys when not None), GQA."""
    Lq, Lk = q.shape[2], k.shape[2]
    g = q.shape[1] // k.shape[1]
    k64, v64 = np.repeat(k, g, 1).astype(np.float64), np.repeat(v, g, 1).astype(np.float64)
    s = q.astype(np.float64) @ k64.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    qpos = np.arange(Lk - Lq, Lk)[:, None]
    kpos = np.arange(Lk)[None, :]
    vis = (kpos <= qpos) & ((qpos - kpos < window) if window else True)
    s = np.where(vis, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v64


def bound(t):
    return 1.0 / 256 if t == "bf16" else 1.0 / 1024


def spec(dt, kv, extra=""):
    return ("attention m { heads = %d; kv_heads = %d; head_dim = %d; mask = sliding(40); dtype = %s; "
            "kv_dtype = %s; %s }" % (H, KH, D, dt, kv, extra))


rng = np.random.default_rng(11)
for dt, kv in PAIRS:
    kern = attnc.compile(spec(dt, kv))
    check(kern.dtype == dt and kv == kern.kv_dtype, "%s/%s: attributes %s/%s" % (dt, kv, kern.dtype, kern.kv_dtype))
    for Lq, Lk in ((37, 129), (1, 300)):
        q, _, _ = stored(rng.standard_normal((2, H, Lq, D)).astype(np.float32), dt)
        k, kf, ks = stored(rng.standard_normal((2, KH, Lk, D)).astype(np.float32), kv)
        v, vf, vs = stored(rng.standard_normal((2, KH, Lk, D)).astype(np.float32), kv)
        ins = dict(k_scale=ks, v_scale=vs) if kv == "int8" else {}
        o, lse = kern(q, k, v, return_lse=True, threads=2, **ins)
        ref = reference(widen(q, dt), kf, vf, 40)
        err = np.abs(widen(o, dt) - ref) - bound(dt) * np.abs(ref)
        check(o.dtype == NP_OF[dt] and lse.dtype == np.float32, "%s/%s: o %s" % (dt, kv, o.dtype))
        check(err.max() <= 2e-4, "%s/%s %dx%d: o off by %.3g past its rounding" % (dt, kv, Lq, Lk, err.max()))
    # the wrong storage for a tensor: named in an ATTN_ERR_DTYPE
    q8 = np.zeros((1, H, 3, D), np.int8)
    kk, _, ks = stored(np.ones((1, KH, 3, D), np.float32), kv)
    ins = dict(k_scale=ks, v_scale=ks) if kv == "int8" else {}
    raises(attnc.ATTN_ERR_DTYPE, lambda: kern(q8, kk, kk, **ins), "%s/%s: int8 q" % (dt, kv), "q:")
    if kv == "int8":
        kb = attnc.from_float32(np.ones((1, KH, 3, D), np.float32)).reshape(1, KH, 3, D)
        raises(attnc.ATTN_ERR_DTYPE, lambda: kern(np.ones((1, H, 3, D), np.float32), kb, kk, **ins),
               "%s/%s: bf16 bits for k" % (dt, kv), "k:")
    else:
        raises(attnc.ATTN_ERR_DTYPE, lambda: kern(np.ones((1, H, 3, D), np.float32), kk, q8[:, :KH], **ins),
               "%s/%s: int8 v" % (dt, kv), "v:")

# paged: pages in kv_dtype filled by paged_append (floats converted to the pages' type; int8
# pages from float32 rows, quantized with their scales)
P = 16
for dt, kv in PAIRS:
    kern = attnc.compile(spec(dt, kv, "kv_cache = paged(%d);" % P))
    lens = np.array([129, 300, 5], np.int32)
    nq = np.array([37, 1, 5])
    starts = np.concatenate([[0], np.cumsum(nq)]).astype(np.int32)
    npg = [(int(L) + P - 1) // P for L in lens]
    NPG, MP = sum(npg) + 2, max(npg)
    perm = rng.permutation(NPG)
    table = np.zeros((len(lens), MP), np.int32)
    i = 0
    for b in range(len(lens)):
        for j in range(npg[b]):
            table[b, j] = perm[i]
            i += 1
    kp = np.zeros((NPG, P, KH, D), NP_OF[kv])
    vp = np.zeros((NPG, P, KH, D), NP_OF[kv])
    ksc = np.zeros((NPG, P, KH), np.float32) if kv == "int8" else None
    vsc = np.zeros((NPG, P, KH), np.float32) if kv == "int8" else None
    kn = [rng.standard_normal((int(L), KH, D)).astype(np.float32) for L in lens]
    vn = [rng.standard_normal((int(L), KH, D)).astype(np.float32) for L in lens]
    attnc.paged_append(np.concatenate(kn), np.concatenate(vn), kp, vp, table, lens,
                       new_starts=np.concatenate([[0], np.cumsum(lens)]).astype(np.int32), k_scale=ksc, v_scale=vsc)
    q, qf, _ = stored(rng.standard_normal((int(starts[-1]), H, D)).astype(np.float32), dt)
    ins = dict(k_scale=ksc, v_scale=vsc) if kv == "int8" else {}
    o = kern(q, kp, vp, page_table=table, kv_lens=lens, q_starts=starts, threads=2, **ins)
    check(o.dtype == NP_OF[dt], "paged %s/%s: o %s" % (dt, kv, o.dtype))
    worst = 0
    for b in range(len(lens)):
        kf = stored(kn[b], kv)[1].transpose(1, 0, 2)[None]
        vf = stored(vn[b], kv)[1].transpose(1, 0, 2)[None]
        qb = qf[starts[b]:starts[b + 1]].transpose(1, 0, 2)[None]
        ref = reference(qb, kf, vf, 40)[0].transpose(1, 0, 2)
        ob = widen(o[starts[b]:starts[b + 1]], dt)
        worst = max(worst, (np.abs(ob - ref) - bound(dt) * np.abs(ref)).max())
    check(worst <= 2e-4, "paged %s/%s: o off by %.3g past its rounding" % (dt, kv, worst))

# the backward (compute = f32, contiguous): that of the f32 kernel on the same stored values
full = attnc.compile(spec("f32", "f32"))
for dt, kv in (("bf16", "int8"), ("f16", "bf16")):
    kern = attnc.compile(spec(dt, kv))
    check(kern.has_backward, "%s/%s has a backward" % (dt, kv))
    q, qf, _ = stored(rng.standard_normal((1, H, 37, D)).astype(np.float32), dt)
    k, kf, ks = stored(rng.standard_normal((1, KH, 129, D)).astype(np.float32), kv)
    v, vf, vs = stored(rng.standard_normal((1, KH, 129, D)).astype(np.float32), kv)
    ins = dict(k_scale=ks, v_scale=vs) if kv == "int8" else {}
    do = rng.standard_normal((1, H, 37, D)).astype(np.float32)
    o, lse = kern(q, k, v, return_lse=True, **ins)
    g = kern.backward(q, k, v, do, o=o, lse=lse, **ins)
    fg = full.backward(qf, kf, vf, do, o=widen(o, dt), lse=lse)
    check(all(a.dtype == np.float32 and np.array_equal(a, b) for a, b in zip(g[:3], fg[:3])),
          "%s/%s backward differs from f32 on the stored values" % (dt, kv))
    try:
        import torch
        import attnc.torch as attnc_torch
    except ImportError:
        torch = None
    if torch is not None and kv != "int8":
        tt = [torch.tensor(widen(x, t), requires_grad=True) for x, t in ((q, dt), (k, kv), (v, kv))]
        ot = attnc_torch.function(kern)(*tt)
        check(np.abs(ot.detach().numpy() - widen(o, dt)).max() <= bound(dt) * 4,
              "attnc.torch %s/%s: o differs from the kernel's" % (dt, kv))
        (ot * torch.from_numpy(do)).sum().backward()
        check(np.array_equal(tt[1].grad.numpy(), g[1]), "attnc.torch %s/%s: dk differs" % (dt, kv))

# the command line: float32 .npy files converted to each tensor's storage
cli = sys.argv[1]


def cli_run(tmp, path, files):
    """attnc run of spec `path` on `files` (name: array, saved in tmp), o to tmp/o.npy."""
    args = [cli, "run", path, "--out", "o=" + os.path.join(tmp, "o.npy")]
    for n, a in files.items():
        np.save(os.path.join(tmp, n + ".npy"), a)
        args += ["--in", "%s=%s" % (n, os.path.join(tmp, n + ".npy"))]
    return subprocess.run(args, capture_output=True, text=True), args


with tempfile.TemporaryDirectory() as tmp:
    for dt, kv in (("bf16", "int8"), ("f16", "bf16"), ("bf16", "f32")):
        path = os.path.join(tmp, "m.attn")
        with open(path, "w") as f:
            f.write(spec(dt, kv))
        kern = attnc.compile(spec(dt, kv))
        q32 = rng.standard_normal((1, H, 9, D)).astype(np.float32)
        k32 = rng.standard_normal((1, KH, 50, D)).astype(np.float32)
        v32 = rng.standard_normal((1, KH, 50, D)).astype(np.float32)
        k, _, ks = stored(k32, kv)
        v, _, vs = stored(v32, kv)
        files = {"q": q32, "k": k if kv == "int8" else k32, "v": v if kv == "int8" else v32}
        if kv == "int8":
            files.update(k_scale=ks, v_scale=vs)
        r, args = cli_run(tmp, path, files)
        check(r.returncode == 0, "run %s/%s: %s" % (dt, kv, r.stderr))
        if r.returncode == 0:
            ins = dict(k_scale=ks, v_scale=vs) if kv == "int8" else {}
            want = widen(kern(q32, k if kv == "int8" else k32, v if kv == "int8" else v32, **ins), dt)
            got = np.load(os.path.join(tmp, "o.npy"))
            check(got.dtype == np.float32 and np.array_equal(got, want), "run %s/%s: o differs from Python's" % (dt, kv))
        # int8 q, and int8 k for a cache that is not int8: refused, naming the tensor
        np.save(os.path.join(tmp, "bad.npy"), np.zeros((1, H, 9, D), np.int8))
        bad = [a.replace(os.path.join(tmp, "q.npy"), os.path.join(tmp, "bad.npy")) for a in args]
        r = subprocess.run(bad, capture_output=True, text=True)
        check(r.returncode == 1 and "q must be" in r.stderr, "run %s/%s int8 q: %d %s" % (dt, kv, r.returncode, r.stderr))
        if kv != "int8":
            np.save(os.path.join(tmp, "bad.npy"), np.zeros((1, KH, 50, D), np.int8))
            bad = [a.replace(os.path.join(tmp, "k.npy"), os.path.join(tmp, "bad.npy")) for a in args]
            r = subprocess.run(bad, capture_output=True, text=True)
            check(r.returncode == 1 and "k must be" in r.stderr, "run %s/%s int8 k: %d %s" % (dt, kv, r.returncode, r.stderr))
        else:
            bad = [a.replace(os.path.join(tmp, "k.npy"), os.path.join(tmp, "q.npy")) for a in args]
            r = subprocess.run(bad, capture_output=True, text=True)
            check(r.returncode == 1 and "k must be int8" in r.stderr,
                  "run %s/%s float k: %d %s" % (dt, kv, r.returncode, r.stderr))

    # a paged block: q float32, the pages int8 (with their scales) or float32 files
    for dt, kv in (("bf16", "int8"), ("f16", "f32")):
        path = os.path.join(tmp, "p.attn")
        with open(path, "w") as f:
            f.write(spec(dt, kv, "kv_cache = paged(16);"))
        kern = attnc.compile(spec(dt, kv, "kv_cache = paged(16);"))
        lens, starts = np.array([40, 17], np.int32), np.array([0, 3, 4], np.int32)
        table = np.array([[2, 0, 4], [1, 3, 3]], np.int32)
        q32 = rng.standard_normal((4, H, D)).astype(np.float32)
        kp, _, ks = stored(rng.standard_normal((5, 16, KH, D)).astype(np.float32), kv)
        vp, _, vs = stored(rng.standard_normal((5, 16, KH, D)).astype(np.float32), kv)
        files = dict(q=q32, k_pages=kp, v_pages=vp, page_table=table, kv_lens=lens, q_starts=starts)
        if kv == "int8":
            files.update(k_scale=ks, v_scale=vs)
        r, args = cli_run(tmp, path, files)
        check(r.returncode == 0, "run paged %s/%s: %s" % (dt, kv, r.stderr))
        if r.returncode == 0:
            ins = dict(k_scale=ks, v_scale=vs) if kv == "int8" else {}
            want = widen(kern(q32, kp, vp, page_table=table, kv_lens=lens, q_starts=starts, **ins), dt)
            got = np.load(os.path.join(tmp, "o.npy"))
            check(np.array_equal(got, want), "run paged %s/%s: o differs from Python's" % (dt, kv))

print("test_kv_mix.py: %d checks, %d failed" % (CHECKS[0], len(FAILS)))
sys.exit(1 if FAILS else 0)
