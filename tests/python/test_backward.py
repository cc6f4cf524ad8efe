#!/usr/bin/env python3
"""The backward from Python and the command line: kern.backward against a float64 NumPy
reference (finite differences of the forward), bitwise the same on 1 and 2 threads, the CLI's
`run --grad` equal to it, the errors of bad calls, and kernels without a backward.

usage: test_backward.py ATTNC_CLI   (ATTNC_LIB and PYTHONPATH as for test_binding.py)
"""
import importlib
import json
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


def raises(code, fn, what, word=None):
    try:
        fn()
    except attnc.AttnError as e:
        check(e.code == code and (word is None or word in str(e)), "%s: %s (wanted code %d, '%s')" % (what, e, code, word))
        return
    check(False, what + ": no error")


SPEC = """attention a {
    input f32 slope[heads];
    input i32 doc[batch, seq];
    heads = 4; kv_heads = 2; head_dim = 8; v_dim = 6;
    mask = k <= q && doc[b, k] == doc[b, q];
    score = 5.0 * tanh((score - slope[h] * (q - k)) / 5.0);
}"""


def reference(q, k, v, slope, doc, q_offset):
    """o in float64, the spec written out in NumPy."""
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    q, k, v, slope = (np.asarray(x, np.float64) for x in (q, k, v, slope))
    kk, vv = np.repeat(k, H // k.shape[1], axis=1), np.repeat(v, H // v.shape[1], axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", q, kk) / np.sqrt(D)
    qp = q_offset + np.arange(Lq)
    kp = np.arange(Lk)
    s = 5.0 * np.tanh((s - slope[None, :, None, None] * (qp[:, None] - kp[None, :])) / 5.0)
    vis = (kp[None, :] <= qp[:, None])[None] & (doc[:, kp][:, None, :] == doc[:, np.clip(qp, 0, Lk - 1)][:, :, None])
    s = np.where(vis[:, None], s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    p = np.where(vis[:, None], np.exp(s - np.where(np.isfinite(m), m, 0)), 0)
    l = p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p / np.where(l > 0, l, 1), vv)


MLA_SPEC = "attention m { heads = 2; mla { kv_rank = 16; rope_dim = 4; nope_dim = 8; v_dim = 8; } mask = k <= q; }"
MLA_NAMES = ("q_nope", "q_rope", "c_kv", "k_rope", "w_uk", "w_uv")


def reference_mla(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv):
    """MLA's o in float64, up-projected: per head k = [c_kv . w_uk[h] | k_rope], v = c_kv . w_uv[h]."""
    qn, qr, ckv, kr, wuk, wuv = (np.asarray(x, np.float64) for x in (q_nope, q_rope, c_kv, k_rope, w_uk, w_uv))
    Lq, Lk = qn.shape[2], ckv.shape[1]
    kn = np.einsum("bjr,hrn->bhjn", ckv, wuk)
    vv = np.einsum("bjr,hrd->bhjd", ckv, wuv)
    s = (np.einsum("bhqn,bhjn->bhqj", qn, kn) + np.einsum("bhqr,bjr->bhqj", qr, kr)) / np.sqrt(qn.shape[3] + qr.shape[3])
    qp = Lk - Lq + np.arange(Lq)
    vis = np.arange(Lk)[None, :] <= qp[:, None]
    s = np.where(vis, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhqj,bhjd->bhqd", p / p.sum(-1, keepdims=True), vv)


def check_mla_fd(rng, mla, st, vals, do, what):
    """mla.backward on the stored tensors st against central differences of the float64
    reference on their values vals, at four random elements of each input."""
    grads = mla.backward(*st, do)
    for i, (name, g) in enumerate(zip(MLA_NAMES, grads)):
        scale, worst = np.abs(g).max(), 0.0
        for _ in range(4):
            idx = tuple(int(rng.integers(0, n)) for n in vals[i].shape)
            x = [a.copy() for a in vals]
            x[i][idx] += 1e-5
            lp = float((reference_mla(*x) * do).sum())
            x[i][idx] -= 2e-5
            lm = float((reference_mla(*x) * do).sum())
            worst = max(worst, abs((lp - lm) / 2e-5 - g[idx]) / scale)
        check(g.dtype == np.float32 and worst <= 1e-2, "%s d%s vs finite differences: %.3g of the scale"
              % (what, name, worst))


MLA_BF16_SIZES = (2, 2, 5, 37)  # batch, heads, q_len, kv_len of the bf16 MLA cases


def mla_bf16_case(rng, latent):
    """An MLA block in bf16 storage over a `latent` ("f16" or "f32") cache: its spec and kernel
    (checked to say so), float32 inputs t, their stored values st (bf16 bits; c_kv and k_rope
    as float16 or float32), those as float64 (vals) and the float64 reference o on them."""
    spec = MLA_SPEC.replace("mask = k <= q;", "mask = k <= q; dtype = bf16; kv_dtype = %s;" % latent)
    mla = attnc.compile(spec)
    check(mla.dtype == "bf16" and mla.kv_dtype == latent and mla.has_backward and
          "bf16, latent %s" % latent in repr(mla), "MLA bf16 / %s latent: %r" % (latent, mla))
    B, H, Lq, Lk = MLA_BF16_SIZES
    shapes = ((B, H, Lq, 8), (B, H, Lq, 4), (B, Lk, 16), (B, Lk, 4), (H, 16, 8), (H, 16, 8))
    t = [(rng.standard_normal(s) * (0.3 if i >= 4 else 1.0)).astype(np.float32) for i, s in enumerate(shapes)]
    lt = np.float16 if latent == "f16" else np.float32
    st = [t[i].astype(lt) if i in (2, 3) else attnc.from_float32(t[i]).reshape(t[i].shape) for i in range(6)]
    vals = [a.astype(np.float64) if a.dtype == lt else attnc.to_float32(a).astype(np.float64) for a in st]
    return spec, mla, t, st, vals, reference_mla(*vals)


def check_mla_16bit(rng):
    """MLA in bf16 storage with an f16 latent: the forward against the float64 reference on the
    stored values (o rounded once to bf16: within |o|/256), the backward against finite
    differences of it (computed on the same values; o's rounding moves each gradient by less
    than 1% of its scale), paged alike, wrong element types refused naming the tensor, and
    compute = bf16 without a backward."""
    spec, mla, t, st, vals, ref = mla_bf16_case(rng, "f16")
    B, H, Lq, Lk = MLA_BF16_SIZES
    for absorb in (True, False):
        o = mla(*t, absorb=absorb)  # float32 arrays, rounded to the storage on the way in
        of = attnc.to_float32(o).astype(np.float64)
        check(o.dtype == np.uint16 and np.all(np.abs(of - ref) <= np.abs(ref) / 256 + 1e-4),
              "MLA bf16 absorb %s: max error %g" % (absorb, np.abs(of - ref).max()))
        o2 = mla(*st, absorb=absorb)
        check(np.array_equal(o, o2), "MLA bf16: the stored arrays and the float32 ones give different o")
    do = rng.standard_normal((B, H, Lq, 8)).astype(np.float32)
    check_mla_fd(rng, mla, st, vals, do, "MLA bf16")
    bad = list(st)
    bad[2] = np.zeros((B, Lk, 16), dtype=np.int32)
    raises(attnc.ATTN_ERR_DTYPE, lambda: mla(*bad), "MLA int32 c_kv", "c_kv")
    bad = list(st)
    bad[2] = np.zeros((B, Lk, 16), np.uint16)
    raises(attnc.ATTN_ERR_DTYPE, lambda: mla(*bad), "MLA uint16 bits as an f16 c_kv", "c_kv")
    bad = list(st)
    bad[4] = np.zeros((H, 16, 8), dtype=np.int8)
    raises(attnc.ATTN_ERR_DTYPE, lambda: mla(*bad), "MLA int8 w_uk", "w_uk")
    # paged: the same latent in pages of 8 rows, batch row 1's 37 keys, its last 5 queries
    P = 8
    pm = attnc.compile(spec.replace("mask = k <= q;", "mask = k <= q; kv_cache = paged(8);"))
    npg = (Lk + P - 1) // P
    perm = rng.permutation(npg)
    ckv_p = np.zeros((npg, P, 16), np.float16)
    kr_p = np.zeros((npg, P, 4), np.float16)
    for j in range(Lk):
        ckv_p[perm[j // P], j % P], kr_p[perm[j // P], j % P] = st[2][1, j], st[3][1, j]
    qn = st[0][1].transpose(1, 0, 2).copy()
    qr = st[1][1].transpose(1, 0, 2).copy()
    # the append fills latent pages as one K/V head's: rows 30.. of the cache appended afresh
    ckv_p2, kr_p2 = ckv_p.copy(), kr_p.copy()
    for j in range(30, Lk):
        ckv_p2[perm[j // P], j % P], kr_p2[perm[j // P], j % P] = 0, 0
    attnc.paged_append(st[2][1, 30:, None], st[3][1, 30:, None], ckv_p2.reshape(npg, P, 1, 16),
                       kr_p2.reshape(npg, P, 1, 4), perm[None].astype(np.int32), np.array([Lk], np.int32),
                       new_starts=np.array([0, Lk - 30], np.int32))
    check(np.array_equal(ckv_p, ckv_p2) and np.array_equal(kr_p, kr_p2), "paged_append of f16 latent rows")
    op = pm(qn, qr, ckv_p, kr_p, st[4], st[5], page_table=perm[None].astype(np.int32),
            kv_lens=np.array([Lk], np.int32), q_starts=np.array([0, Lq], np.int32))
    opf = attnc.to_float32(op).astype(np.float64)
    want = ref[1].transpose(1, 0, 2)
    check(op.dtype == np.uint16 and np.all(np.abs(opf - want) <= np.abs(want) / 256 + 1e-4),
          "paged MLA bf16: max error %g" % np.abs(opf - want).max())
    cb = attnc.compile(MLA_SPEC.replace("mask = k <= q;", "mask = k <= q; compute = bf16;"))
    check(not cb.has_backward, "MLA compute = bf16 has no backward")
    raises(attnc.ATTN_ERR_ARG, lambda: cb.backward(*t, do), "MLA compute bf16 backward", "no backward")
    if importlib.util.find_spec("torch") is not None:  # attnc.torch: o comes back as float values
        import torch
        import attnc.torch as attnc_torch
        tt = [torch.from_numpy(a).requires_grad_() for a in t]
        o = attnc_torch.function(mla)(*tt)
        check(np.array_equal(o.detach().numpy(), attnc.to_float32(mla(*t))), "attnc.torch MLA bf16: o differs")
        o.backward(torch.from_numpy(do))
        check(np.array_equal(tt[2].grad.numpy(), mla.backward(*st, do)[2]), "attnc.torch MLA bf16: dc_kv differs")


def check_mla_f32_latent(rng, cli):
    """An f32 latent cache under a 16-bit dtype (dtype = bf16 | f16; kv_dtype = f32): c_kv and
    k_rope typed float32 (uint16 bits refused naming them), the forward against the float64
    reference on the stored values, both variants, the backward against finite differences,
    paged alike over float32 pages filled by paged_append, and `attnc run` equal to Python."""
    spec, mla, t, st, vals, ref = mla_bf16_case(rng, "f32")
    B, H, Lq, Lk = MLA_BF16_SIZES
    for absorb in (True, False):
        o = mla(*st, absorb=absorb)
        of = attnc.to_float32(o).astype(np.float64)
        check(o.dtype == np.uint16 and np.all(np.abs(of - ref) <= np.abs(ref) / 256 + 1e-4),
              "MLA bf16 / f32 latent absorb %s: max error %g" % (absorb, np.abs(of - ref).max()))
    bad = list(st)
    bad[3] = attnc.from_float32(t[3]).reshape(t[3].shape)
    raises(attnc.ATTN_ERR_DTYPE, lambda: mla(*bad), "MLA uint16 bits as an f32 k_rope", "k_rope")
    do = rng.standard_normal((B, H, Lq, 8)).astype(np.float32)
    check_mla_fd(rng, mla, st, vals, do, "MLA bf16 / f32 latent")
    # paged under f16: float32 latent pages of 8 rows, batch row 1's 37 keys, its last 5 queries
    P = 8
    pm = attnc.compile(spec.replace("bf16", "f16").replace("mask = k <= q;", "mask = k <= q; kv_cache = paged(8);"))
    check(pm.dtype == "f16" and pm.kv_dtype == "f32", "paged MLA f16 / f32 latent: %r" % pm)
    s16 = [t[i] if i in (2, 3) else t[i].astype(np.float16) for i in range(6)]
    v16 = [a.astype(np.float64) for a in s16]
    ref16 = reference_mla(*v16)
    npg = (Lk + P - 1) // P
    perm = rng.permutation(npg)
    ckv_p = np.zeros((npg, P, 16), np.float32)
    kr_p = np.zeros((npg, P, 4), np.float32)
    attnc.paged_append(t[2][1, :, None], t[3][1, :, None], ckv_p.reshape(npg, P, 1, 16), kr_p.reshape(npg, P, 1, 4),
                       perm[None].astype(np.int32), np.array([Lk], np.int32), new_starts=np.array([0, Lk], np.int32))
    check(all(np.array_equal(ckv_p[perm[j // P], j % P], t[2][1, j]) for j in range(Lk)), "paged_append of f32 latent rows")
    qn = s16[0][1].transpose(1, 0, 2).copy()
    qr = s16[1][1].transpose(1, 0, 2).copy()
    op = pm(qn, qr, ckv_p, kr_p, s16[4], s16[5], page_table=perm[None].astype(np.int32),
            kv_lens=np.array([Lk], np.int32), q_starts=np.array([0, Lq], np.int32))
    want = ref16[1].transpose(1, 0, 2)
    check(op.dtype == np.float16 and np.all(np.abs(op.astype(np.float64) - want) <= np.abs(want) / 2048 + 1e-4),
          "paged MLA f16 / f32 latent: max error %g" % np.abs(op.astype(np.float64) - want).max())
    raises(attnc.ATTN_ERR_DTYPE, lambda: pm(qn, qr, ckv_p.astype(np.int32), kr_p, s16[4], s16[5],
                                            page_table=perm[None].astype(np.int32), kv_lens=np.array([Lk], np.int32),
                                            q_starts=np.array([0, Lq], np.int32)), "paged int32 c_kv", "c_kv")
    # attnc run: float32 .npy inputs (the latent kept, the rest rounded to bf16), o written as float32
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.attn")
        with open(path, "w") as f:
            f.write(spec)
        args = [cli, "run", path, "--out", "o=%s" % os.path.join(tmp, "o.npy")]
        for n, a in zip(MLA_NAMES, t):
            np.save(os.path.join(tmp, n + ".npy"), a)
            args += ["--in", "%s=%s" % (n, os.path.join(tmp, n + ".npy"))]
        r = subprocess.run(args, capture_output=True, text=True)
        check(r.returncode == 0, "MLA bf16 / f32 latent run: %s" % r.stderr)
        if r.returncode == 0:
            got = np.load(os.path.join(tmp, "o.npy"))
            check(np.array_equal(got, attnc.to_float32(mla(*st))), "MLA bf16 / f32 latent: the CLI differs from Python")


def check_mla(rng, cli):
    """The MLA backward: finite differences of the float64 forward, threads, the CLI, absorb = on."""
    mla = attnc.compile(MLA_SPEC)
    check(mla.has_backward, "MLA (absorb = auto) has a backward")
    B, H, Lq, Lk = 2, 2, 5, 9
    shapes = ((B, H, Lq, 8), (B, H, Lq, 4), (B, Lk, 16), (B, Lk, 4), (H, 16, 8), (H, 16, 8))
    t = [(rng.standard_normal(s) * (0.3 if i >= 4 else 1.0)).astype(np.float32) for i, s in enumerate(shapes)]
    do = rng.standard_normal((B, H, Lq, 8)).astype(np.float32)
    grads = mla.backward(*t, do)
    check(len(grads) == 7 and grads[6] == {}, "MLA backward returns six gradients and dinputs")
    for i, (name, g) in enumerate(zip(MLA_NAMES, grads)):
        check(g.shape == t[i].shape and g.dtype == np.float32, "d%s shape %s" % (name, g.shape))
        scale, worst = np.abs(g).max(), 0.0
        for _ in range(4):
            idx = tuple(int(rng.integers(0, n)) for n in t[i].shape)
            x = [a.astype(np.float64) for a in t]
            x[i][idx] += 1e-5
            lp = float((reference_mla(*x) * do).sum())
            x[i][idx] -= 2e-5
            lm = float((reference_mla(*x) * do).sum())
            worst = max(worst, abs((lp - lm) / 2e-5 - g[idx]) / scale)
        check(worst <= 1e-3, "MLA d%s vs finite differences: %.3g of the scale" % (name, worst))
    g2 = mla.backward(*t, do=do, threads=2)
    check(all(np.array_equal(a, b) for a, b in zip(grads[:6], g2[:6])), "MLA: 1 and 2 threads differ")
    raises(attnc.ATTN_ERR_SHAPE, lambda: mla.backward(*t, do[:, :, :-1]), "MLA short do", "do")
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "m.attn")
        with open(spec, "w") as f:
            f.write(MLA_SPEC)
        args = [cli, "run", spec, "--grad"]
        for n, a in zip(MLA_NAMES + ("do",), t + [do]):
            np.save(os.path.join(tmp, n + ".npy"), a)
            args += ["--in", "%s=%s" % (n, os.path.join(tmp, n + ".npy"))]
        for n in MLA_NAMES:
            args += ["--out", "d%s=%s" % (n, os.path.join(tmp, "d" + n + ".npy"))]
        r = subprocess.run(args, capture_output=True, text=True)
        check(r.returncode == 0, "MLA run --grad: %s" % r.stderr)
        if r.returncode == 0:
            got = [np.load(os.path.join(tmp, "d" + n + ".npy")) for n in MLA_NAMES]
            check(all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, grads[:6])),
                  "MLA: the CLI differs from Python")
        # bench --grad times the MLA backward; its gflops count 2 (3 (nope + rope) + 2 v_dim) per
        # visible pair and head, the forward's 2 (nope + rope + v_dim)
        runs = {}
        for grad in (False, True):
            r = subprocess.run([cli, "bench", spec, "--q-len", "40", "--kv-len", "48", "--reps", "2", "--json"]
                               + (["--grad"] if grad else []), capture_output=True, text=True)
            check(r.returncode == 0, "MLA bench%s: %s" % (" --grad" if grad else "", r.stderr))
            if r.returncode == 0:
                runs[grad] = json.loads(r.stdout.strip().splitlines()[-1])
        if len(runs) == 2:
            f, b = runs[False], runs[True]
            check(b["grad"] is True and b["mla"] is True and b["absorbed"] is False and f["grad"] is False,
                  "MLA bench --grad JSON: %s" % b)
            pairs = b["visible"] * 2 * 40 * 48
            for j, per in ((f, 2 * (12 + 8)), (b, 2 * (3 * 12 + 2 * 8))):
                check(abs(j["gflops"] * j["ms"] * 1e6 - per * pairs) <= 0.02 * per * pairs,
                      "MLA bench%s gflops: %s" % (" --grad" if j["grad"] else "", j))
        with open(spec, "w") as f:
            f.write(MLA_SPEC.replace("mask = k <= q;", "mask = k <= q; absorb = on;"))
        r = subprocess.run([cli, "bench", spec, "--grad", "--q-len", "8", "--kv-len", "8"], capture_output=True,
                           text=True)
        check(r.returncode == 1 and "no backward" in r.stderr, "MLA absorb = on bench --grad: %s" % r.stderr)
    try:
        import torch
        attnc_torch = importlib.import_module("attnc.torch")
    except ImportError:
        torch = None
    if torch is not None:  # attnc.torch.function over an MLA kernel: autograd against PyTorch's own
        tt = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in t]
        ref = torch.from_numpy(reference_mla(*t))  # a check of the float64 reference's shape only
        qn, qr, ckv, kr, wuk, wuv = tt
        kn = torch.einsum("bjr,hrn->bhjn", ckv, wuk)
        vv = torch.einsum("bjr,hrd->bhjd", ckv, wuv)
        sc = (torch.einsum("bhqn,bhjn->bhqj", qn, kn) + torch.einsum("bhqr,bjr->bhqj", qr, kr)) / np.sqrt(12.0)
        vis = torch.arange(Lk)[None, :] <= (Lk - Lq + torch.arange(Lq))[:, None]
        o64 = torch.softmax(sc.masked_fill(~vis, float("-inf")), -1) @ vv
        (o64 * torch.from_numpy(do).double()).sum().backward()
        ft = [torch.tensor(a, requires_grad=True) for a in t]
        o32 = attnc_torch.function(mla)(*ft)
        check(o32.shape == ref.shape and torch.allclose(o32.double(), o64, atol=1e-5), "attnc.torch MLA forward")
        (o32 * torch.from_numpy(do)).sum().backward()
        for name, a, b in zip(MLA_NAMES, ft, tt):
            err = float((a.grad.double() - b.grad).abs().max() / b.grad.abs().max())
            check(err <= 1e-3, "attnc.torch MLA d%s: %.3g of the scale" % (name, err))
    on = attnc.compile(MLA_SPEC.replace("mask", "absorb = on; mask"))
    check(not on.has_backward, "absorb = on has no backward")
    raises(attnc.ATTN_ERR_ARG, lambda: on.backward(*t, do), "absorb = on backward", "absorb")


def main():
    cli = sys.argv[1]
    rng = np.random.default_rng(7)
    kern = attnc.compile(SPEC)
    check(kern.has_backward and kern.grad_inputs == ["slope"], "has_backward, grad_inputs %s" % kern.grad_inputs)
    B, H, KV, Lq, Lk, D, V = 2, 4, 2, 11, 19, 8, 6
    q = rng.standard_normal((B, H, Lq, D)).astype(np.float32)
    k = rng.standard_normal((B, KV, Lk, D)).astype(np.float32)
    v = rng.standard_normal((B, KV, Lk, V)).astype(np.float32)
    do = rng.standard_normal((B, H, Lq, V)).astype(np.float32)
    slope = np.array([0.05, 0.1, 0.2, 0.4], np.float32)
    doc = np.sort(rng.integers(0, 3, size=(B, Lk)), axis=1).astype(np.int32)
    off = Lk - Lq
    dq, dk, dv, dins = kern.backward(q, k, v, do, slope=slope, doc=doc)
    check(set(dins) == {"slope"} and dins["slope"].shape == (H,), "dinputs %s" % list(dins))

    def loss(**x):
        a = dict(q=q, k=k, v=v, slope=slope)
        a.update(x)
        return float((reference(a["q"], a["k"], a["v"], a["slope"], doc, off) * do).sum())

    for name, arr, g in (("q", q, dq), ("k", k, dk), ("v", v, dv), ("slope", slope, dins["slope"])):
        scale = np.abs(g).max()
        worst = 0.0
        for _ in range(6):
            idx = tuple(int(rng.integers(0, s)) for s in arr.shape)
            x = arr.astype(np.float64)
            x[idx] += 1e-5
            lp = loss(**{name: x})
            x[idx] -= 2e-5
            lm = loss(**{name: x})
            worst = max(worst, abs((lp - lm) / 2e-5 - g[idx]) / scale)
        check(worst <= 1e-3, "d%s vs finite differences: %.3g of the scale" % (name, worst))
    # deterministic: 1 and 2 threads, o and lse given or recomputed
    o, lse = kern(q, k, v, slope=slope, doc=doc, return_lse=True)
    r1 = kern.backward(q, k, v, do, o=o, lse=lse, threads=1, slope=slope, doc=doc)
    r2 = kern.backward(q, k, v, do, threads=2, slope=slope, doc=doc)
    check(all(np.array_equal(a, b) for a, b in zip(r1[:3] + (r1[3]["slope"],), r2[:3] + (r2[3]["slope"],))),
          "1 and 2 threads differ")
    check(all(np.array_equal(a, b) for a, b in zip(r1[:3], (dq, dk, dv))), "run after run differs")

    # the command line: run --grad gives the same arrays
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "a.attn")
        with open(spec, "w") as f:
            f.write(SPEC)
        ins = []
        for n, a in (("q", q), ("k", k), ("v", v), ("do", do), ("slope", slope), ("doc", doc)):
            np.save(os.path.join(tmp, n + ".npy"), a)
            ins += ["--in", "%s=%s" % (n, os.path.join(tmp, n + ".npy"))]
        outs = []
        for n in ("dq", "dk", "dv", "dslope"):
            outs += ["--out", "%s=%s" % (n, os.path.join(tmp, n + ".npy"))]
        r = subprocess.run([cli, "run", spec, "--grad", "--threads", "2"] + ins + outs, capture_output=True, text=True)
        check(r.returncode == 0, "run --grad: %s" % r.stderr)
        if r.returncode == 0:
            got = [np.load(os.path.join(tmp, n + ".npy")) for n in ("dq", "dk", "dv", "dslope")]
            check(all(np.array_equal(a, b) for a, b in zip(got, (dq, dk, dv, dins["slope"]))), "CLI differs from Python")
        r = subprocess.run([cli, "run", spec, "--grad"] + ins + ["--out", "dq2=" + os.path.join(tmp, "x.npy")],
                           capture_output=True, text=True)
        check(r.returncode == 1 and "dq, dk, dv, dslope" in r.stderr, "run --grad --out dq2: %s" % r.stderr)
        r = subprocess.run([cli, "run", spec, "--grad"] + ins[:6] + ins[8:], capture_output=True, text=True)
        check(r.returncode == 1 and "--in do" in r.stderr, "run --grad without do: %s" % r.stderr)
        r = subprocess.run([cli, "bench", spec, "--grad", "--q-len", "64", "--kv-len", "64", "--reps", "3", "--json"],
                           capture_output=True, text=True)
        check(r.returncode == 0 and '"grad": true' in r.stdout, "bench --grad: %s %s" % (r.stdout[-200:], r.stderr))

    # bad calls: the tensor is named, nothing crashes
    raises(attnc.ATTN_ERR_SHAPE, lambda: kern.backward(q, k, v, do[:, :, :-1], slope=slope, doc=doc), "short do", "do")
    raises(attnc.ATTN_ERR_RANK, lambda: kern.backward(q, k, v, do[0], slope=slope, doc=doc), "do of 3 dims", "do")
    raises(attnc.ATTN_ERR_SHAPE, lambda: kern.backward(q, k, v, do, o=o, lse=lse[:, :, :-1], slope=slope, doc=doc),
           "short lse", "lse")
    raises(attnc.ATTN_ERR_INPUT, lambda: kern.backward(q, k, v, do, slope=slope), "missing doc", "doc")
    # empty calls: no query (dk, dv zero) and no key (dq zero)
    plain = attnc.compile("attention p { heads = 2; head_dim = 4; mask = k <= q; }")
    r = rng.standard_normal
    g0 = plain.backward(r((1, 2, 0, 4)).astype(np.float32), r((1, 2, 5, 4)).astype(np.float32),
                        r((1, 2, 5, 4)).astype(np.float32), np.zeros((1, 2, 0, 4), np.float32))
    check(g0[0].shape == (1, 2, 0, 4) and not g0[1].any() and not g0[2].any(), "q_len 0: dk, dv zero")
    g1 = plain.backward(r((1, 2, 3, 4)).astype(np.float32), np.zeros((1, 2, 0, 4), np.float32),
                        np.zeros((1, 2, 0, 4), np.float32), r((1, 2, 3, 4)).astype(np.float32))
    check(not g1[0].any() and g1[1].shape == (1, 2, 0, 4), "kv_len 0: dq zero")
    # 16-bit storage: the backward of the f32 kernel on the same (rounded) values
    for dt in ("bf16", "f16"):
        half = attnc.compile("attention h { heads = 4; kv_heads = 2; head_dim = 8; v_dim = 6; dtype = %s; mask = k <= q; }" % dt)
        full = attnc.compile("attention h { heads = 4; kv_heads = 2; head_dim = 8; v_dim = 6; mask = k <= q; }")
        check(half.has_backward, "%s has a backward" % dt)
        if dt == "bf16":
            qr, kr, vr = (attnc.to_float32(attnc.from_float32(x)).reshape(x.shape) for x in (q, k, v))
        else:
            qr, kr, vr = (x.astype(np.float16).astype(np.float32) for x in (q, k, v))
        ho, hl = half(q, k, v, return_lse=True)
        hg = half.backward(q, k, v, do, o=ho, lse=hl)
        ho32 = attnc.to_float32(ho).reshape(ho.shape) if dt == "bf16" else ho.astype(np.float32)
        fg = full.backward(qr, kr, vr, do, o=ho32, lse=hl)
        check(all(g.dtype == np.float32 for g in hg[:3]), "%s gradients are float32" % dt)
        check(all(np.array_equal(a, b) for a, b in zip(hg[:3], fg[:3])),
              "%s backward differs from f32 on the same values" % dt)
        hg2 = half.backward(q, k, v, do, threads=2)
        check(all(np.array_equal(a, b) for a, b in zip(hg[:3], hg2[:3])), "%s: o recomputed, 2 threads" % dt)
    # K/V stored apart from the block's dtype (kv_dtype = f16 | bf16 | int8, compute = f32): the
    # backward of the f32 kernel on the same (dequantized) values, from Python and the command line
    full = attnc.compile("attention h { heads = 4; kv_heads = 2; head_dim = 8; v_dim = 6; mask = k <= q; }")
    for kvt in ("f16", "bf16", "int8"):
        nar = attnc.compile("attention h { heads = 4; kv_heads = 2; head_dim = 8; v_dim = 6; kv_dtype = %s; "
                            "mask = k <= q; }" % kvt)
        check(nar.has_backward, "kv_dtype = %s has a backward" % kvt)
        ins = {}
        if kvt == "int8":
            ks, vs = np.abs(k).max(-1) / 127, np.abs(v).max(-1) / 127
            kn, vn = np.rint(k / ks[..., None]).astype(np.int8), np.rint(v / vs[..., None]).astype(np.int8)
            ins = dict(k_scale=ks.astype(np.float32), v_scale=vs.astype(np.float32))
            kr, vr = kn.astype(np.float32) * ins["k_scale"][..., None], vn.astype(np.float32) * ins["v_scale"][..., None]
        elif kvt == "bf16":
            kn, vn = attnc.from_float32(k).reshape(k.shape), attnc.from_float32(v).reshape(v.shape)
            kr, vr = attnc.to_float32(kn).reshape(k.shape), attnc.to_float32(vn).reshape(v.shape)
        else:
            kn, vn = k.astype(np.float16), v.astype(np.float16)
            kr, vr = kn.astype(np.float32), vn.astype(np.float32)
        try:
            no, nl = nar(q, kn, vn, return_lse=True, **ins)
            ng = nar.backward(q, kn, vn, do, o=no, lse=nl, **ins)
            fg = full.backward(q, kr, vr, do, o=no, lse=nl)
            check(all(g.dtype == np.float32 and g.shape == x.shape for g, x in zip(ng[:3], (q, k, v))),
                  "kv_dtype = %s: gradients float32 shaped like q, k, v" % kvt)
            check(all(np.array_equal(a, b) for a, b in zip(ng[:3], fg[:3])),
                  "kv_dtype = %s backward differs from f32 on the same values" % kvt)
            ng2 = nar.backward(q, kn, vn, do, threads=2, **ins)
            check(all(np.array_equal(a, b) for a, b in zip(ng[:3], ng2[:3])), "kv_dtype = %s: o recomputed" % kvt)
        except attnc.AttnError as e:
            check(False, "kv_dtype = %s backward: %s" % (kvt, e))
        if kvt != "f16":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            spec = os.path.join(tmp, "h.attn")
            with open(spec, "w") as f:
                f.write("attention h { heads = 4; kv_heads = 2; head_dim = 8; v_dim = 6; kv_dtype = f16; mask = k <= q; }")
            args = []
            for n, a in (("q", q), ("k", kn), ("v", vn), ("do", do)):
                np.save(os.path.join(tmp, n + ".npy"), a)
                args += ["--in", "%s=%s" % (n, os.path.join(tmp, n + ".npy"))]
            r2 = subprocess.run([cli, "run", spec, "--grad"] + args + ["--out", "dk=" + os.path.join(tmp, "dk.npy")],
                                capture_output=True, text=True)
            check(r2.returncode == 0, "kv_dtype = f16 run --grad: %s" % r2.stderr)
            if r2.returncode == 0:
                check(np.array_equal(np.load(os.path.join(tmp, "dk.npy")), ng[1]), "kv_dtype = f16: CLI dk differs")
    # paged caches are for inference: no backward, from Python, C or the command line
    pg = attnc.compile("attention g { heads = 2; head_dim = 4; mask = k <= q; kv_cache = paged(8); }")
    check(not pg.has_backward and pg.grad_inputs == [], "a paged kernel has no backward")
    x4 = r((1, 2, 3, 4)).astype(np.float32)
    raises(attnc.ATTN_ERR_ARG, lambda: pg.backward(x4, x4, x4, x4), "paged backward", "no backward")
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "g.attn")
        with open(spec, "w") as f:
            f.write("attention g { heads = 2; head_dim = 4; mask = k <= q; kv_cache = paged(8); }")
        ins = []
        for n in ("q", "k", "v", "do"):
            np.save(os.path.join(tmp, n + ".npy"), x4)
            ins += ["--in", "%s=%s" % (n, os.path.join(tmp, n + ".npy"))]
        r2 = subprocess.run([cli, "run", spec, "--grad"] + ins + ["--out", "dq=" + os.path.join(tmp, "dq.npy")],
                            capture_output=True, text=True)
        check(r2.returncode == 1 and "no backward" in r2.stderr, "paged run --grad: %d %s" % (r2.returncode, r2.stderr))
    check_mla(rng, cli)
    check_mla_16bit(rng)
    check_mla_f32_latent(rng, cli)
    print("test_backward: %d checks, %d failed" % (CHECKS[0], len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
