#!/usr/bin/env python3
"""The backward from Python and the command line: kern.backward against a float64 NumPy
reference (finite differences of the forward), bitwise the same on 1 and 2 threads, the CLI's
`run --grad` equal to it, the errors of bad calls, and kernels without a backward.

usage: test_backward.py ATTNC_CLI   (ATTNC_LIB and PYTHONPATH as for test_binding.py)
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
    # kernels without a backward
    half = attnc.compile("attention h { heads = 2; head_dim = 8; dtype = bf16; mask = k <= q; }")
    check(not half.has_backward, "bf16 has no backward")
    raises(attnc.ATTN_ERR_ARG, lambda: half.backward(q[:, :2], k, v, do[:, :2]), "bf16 backward", "no backward")
    mla = attnc.compile("attention m { heads = 2; mla { kv_rank = 16; rope_dim = 4; nope_dim = 8; v_dim = 8; } mask = k <= q; }")
    check(not mla.has_backward, "MLA has no backward yet")
    print("test_backward: %d checks, %d failed" % (CHECKS[0], len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
