#!/usr/bin/env python3
"""Paged kernels from Python: kern(q, k_pages, v_pages, page_table=, kv_lens=, q_starts=)
against a float64 NumPy reference (shuffled pages, NaN in unused pages), decode without
q_starts, attnc.paged_append filling the pages a step at a time (f32, and int8 pages with their
scales, f16 and bf16 pages), bf16 storage, a paged MLA block, and bad calls.

usage: test_paged.py   (ATTNC_LIB and PYTHONPATH as for test_binding.py)
"""
import sys

import numpy as np

import attnc

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL", what)


def raises(code, fn, what):
    try:
        fn()
    except attnc.AttnError as e:
        check(e.code == code, "%s: code %d, expected %d (%s)" % (what, e.code, code, e))
        return
    check(False, "%s: no error" % what)


P, H, KH, D, DV = 16, 6, 2, 16, 8
kern = attnc.compile("attention t { heads = %d; kv_heads = %d; head_dim = %d; v_dim = %d; mask = sliding(20); "
                     "kv_cache = paged(%d); }" % (H, KH, D, DV, P))
check(kern.page_size == P, "page_size %d" % kern.page_size)
rng = np.random.default_rng(3)
lens = np.array([1, 16, 50, 7], dtype=np.int32)
nq = np.array([1, 4, 1, 7])
starts = np.concatenate([[0], np.cumsum(nq)]).astype(np.int32)
B, T = len(lens), int(starts[-1])
npg = [(int(L) + P - 1) // P for L in lens]
NP, MP = sum(npg) + 2, max(npg) + 2
perm = rng.permutation(NP)
table = np.full((B, MP), -3, dtype=np.int32)
kp = np.full((NP, P, KH, D), np.nan, dtype=np.float32)
vp = np.full((NP, P, KH, DV), np.nan, dtype=np.float32)
k_seq, v_seq = [], []
i = 0
for b in range(B):
    k_seq.append(rng.standard_normal((int(lens[b]), KH, D)).astype(np.float32))
    v_seq.append(rng.standard_normal((int(lens[b]), KH, DV)).astype(np.float32))
    for j in range(npg[b]):
        table[b, j] = perm[i]
        i += 1
q = rng.standard_normal((T, H, D)).astype(np.float32)


def fill_direct():
    for b in range(B):
        for j in range(int(lens[b])):
            kp[table[b, j // P], j % P] = k_seq[b][j]
            vp[table[b, j // P], j % P] = v_seq[b][j]


def reference(qq, st, k_seq=k_seq, v_seq=v_seq):
    o = np.zeros((qq.shape[0], H, DV))
    lse = np.zeros((qq.shape[0], H))
    for b in range(B):
        L, n = int(lens[b]), int(st[b + 1] - st[b])
        for r in range(n):
            pos = L - n + r
            for h in range(H):
                s = k_seq[b][:, h // (H // KH)].astype(np.float64) @ qq[st[b] + r, h] / np.sqrt(D)
                keys = np.arange(L)
                s[(keys > pos) | (pos - keys >= 20)] = -np.inf
                m = s.max()
                w = np.exp(s - m)
                o[st[b] + r, h] = w @ v_seq[b][:, h // (H // KH)] / w.sum()
                lse[st[b] + r, h] = m + np.log(w.sum())
    return o, lse


fill_direct()
o, lse = kern(q, kp, vp, page_table=table, kv_lens=lens, q_starts=starts, return_lse=True, threads=2)
ro, rl = reference(q, starts)
check(o.shape == (T, H, DV) and lse.shape == (T, H), "shapes %s %s" % (o.shape, lse.shape))
check(np.abs(o - ro).max() < 1e-4 and np.abs(lse - rl).max() < 1e-4,
      "prefill+decode: max error %g %g" % (np.abs(o - ro).max(), np.abs(lse - rl).max()))

# decode without q_starts: one row per sequence
qd = rng.standard_normal((B, H, D)).astype(np.float32)
od = kern(qd, kp, vp, page_table=table, kv_lens=lens)
rd, _ = reference(qd, np.arange(B + 1))
check(np.abs(od - rd).max() < 1e-4, "decode: max error %g" % np.abs(od - rd).max())

# the pages written by paged_append: the prompt minus its last row, then one step
kp[:] = np.nan
vp[:] = np.nan
pre = np.maximum(lens - 1, 0)
attnc.paged_append(np.concatenate([k_seq[b][:pre[b]] for b in range(B)]),
                   np.concatenate([v_seq[b][:pre[b]] for b in range(B)]), kp, vp, table, pre,
                   new_starts=np.concatenate([[0], np.cumsum(pre)]))
attnc.paged_append(np.stack([k_seq[b][-1] for b in range(B)]), np.stack([v_seq[b][-1] for b in range(B)]),
                   kp, vp, table, lens)
od2 = kern(qd, kp, vp, page_table=table, kv_lens=lens)
check(np.abs(od2 - rd).max() < 1e-4, "after paged_append: max error %g" % np.abs(od2 - rd).max())

# an empty batch (no sequence, no row) and an append of nothing: valid, nothing written
e = kern(qd[:0], kp, vp, page_table=table[:0], kv_lens=lens[:0], q_starts=np.zeros(1, np.int32), return_lse=True)
check(e[0].shape == (0, H, DV) and e[1].shape == (0, H), "empty batch: %s %s" % (e[0].shape, e[1].shape))
e = kern(qd[:0], kp, vp, page_table=table[:0], kv_lens=lens[:0])
check(e.shape == (0, H, DV), "empty decode batch: %s" % (e.shape,))
kp_before = kp.copy()
attnc.paged_append(qd[:0, :KH], qd[:0, :KH, :DV], kp, vp, table[:0], lens[:0])
check(np.array_equal(kp, kp_before, equal_nan=True), "empty append wrote")

# bad calls
bad = table.copy()
bad[2, 1] = NP
raises(attnc.ATTN_ERR_INDEX, lambda: kern(qd, kp, vp, page_table=bad, kv_lens=lens), "page out of range")
raises(attnc.ATTN_ERR_SHAPE, lambda: kern(q, kp, vp, page_table=table, kv_lens=lens), "rows without q_starts")
raises(attnc.ATTN_ERR_NULL, lambda: kern(qd, kp, vp, kv_lens=lens), "no page_table")
raises(attnc.ATTN_ERR_ARG, lambda: kern(qd, kp, vp, page_table=table, kv_lens=lens, q_offset=0), "q_offset")
raises(attnc.ATTN_ERR_INDEX, lambda: attnc.paged_append(qd[:, :KH], qd[:, :KH, :DV], kp, vp, bad, lens),
       "append to a page out of range")

# int8 pages filled by paged_append (each row quantized with its scale), then a call; the
# reference on the dequantized rows read back through the table
spec8 = ("attention t8 { heads = %d; kv_heads = %d; head_dim = %d; v_dim = %d; mask = sliding(20); "
         "kv_cache = paged(%d); kv_dtype = int8; }" % (H, KH, D, DV, P))
k8 = attnc.compile(spec8)
check(k8.kv_dtype == "int8" and k8.input_decls.get("k_scale") == ("f32", ("num_pages", P, "kv_heads")),
      "int8 kernel: %s %s" % (k8.kv_dtype, k8.input_decls))
kp8 = np.full((NP, P, KH, D), 99, dtype=np.int8)
vp8 = np.full((NP, P, KH, DV), -99, dtype=np.int8)
ks8 = np.full((NP, P, KH), np.nan, dtype=np.float32)
vs8 = np.full((NP, P, KH), np.nan, dtype=np.float32)
raises(attnc.ATTN_ERR_DTYPE, lambda: attnc.paged_append(qd[:, :KH], qd[:, :KH, :DV], kp8, vp8, table, lens),
       "int8 append without scales")
attnc.paged_append(np.concatenate([k_seq[b][:pre[b]] for b in range(B)]).astype(np.float64),
                   np.concatenate([v_seq[b][:pre[b]] for b in range(B)]), kp8, vp8, table, pre,
                   new_starts=np.concatenate([[0], np.cumsum(pre)]), k_scale=ks8, v_scale=vs8)
attnc.paged_append(np.stack([k_seq[b][-1] for b in range(B)]), np.stack([v_seq[b][-1] for b in range(B)]),
                   kp8, vp8, table, lens, k_scale=ks8, v_scale=vs8)


def read_back(pages, scales):
    return [np.stack([pages[table[b, j // P], j % P].astype(np.float64) * scales[table[b, j // P], j % P][:, None]
                      for j in range(int(lens[b]))]) for b in range(B)]


kd, vd = read_back(kp8, ks8), read_back(vp8, vs8)
want_k = [np.rint(k / (np.abs(k).max(axis=-1, keepdims=True) / 127)) for k in k_seq]
check(all(np.array_equal(np.stack([kp8[table[b, j // P], j % P] for j in range(int(lens[b]))]), want_k[b])
          for b in range(B)), "int8 append: not max/127 quantization")
o8 = k8(q, kp8, vp8, page_table=table, kv_lens=lens, q_starts=starts, k_scale=ks8, v_scale=vs8, threads=2)
r8, _ = reference(q, starts, kd, vd)
check(np.abs(o8 - r8).max() < 1e-4, "int8 pages: max error %g" % np.abs(o8 - r8).max())
r32, _ = reference(q, starts)
l1 = np.abs(o8 - r32).sum() / np.abs(r32).sum()
check(l1 < 3e-2, "int8 pages against unquantized K/V: rel L1 %g" % l1)
raises(attnc.ATTN_ERR_DTYPE, lambda: k8(qd, kp, vp, page_table=table, kv_lens=lens, k_scale=ks8, v_scale=vs8),
       "float pages for an int8 kernel")
raises(attnc.ATTN_ERR_INPUT, lambda: k8(qd, kp8, vp8, page_table=table, kv_lens=lens, k_scale=ks8), "no v_scale")
raises(attnc.ATTN_ERR_INPUT, lambda: k8(qd, kp8, vp8, page_table=table, kv_lens=lens, k_scale=ks8[:, :, :1],
                                        v_scale=vs8), "k_scale of a bad shape")
raises(attnc.ATTN_ERR_INPUT, lambda: k8(qd, kp8, vp8, page_table=table, kv_lens=lens, k_scale=kp8[..., 0],
                                        v_scale=vs8), "int8 k_scale")
try:
    k8(qd, kp8, vp8, page_table=table, kv_lens=lens, k_scale=ks8[:-1], v_scale=vs8)
    check(False, "k_scale with too few pages: no error")
except attnc.AttnError as e:
    check("k_scale" in str(e), "k_scale with too few pages: %s" % e)

# 16-bit new rows into int8 pages (float16, uint16 bf16 bits; a float16 k with float32 v):
# bit for bit the append of the same rows widened to float32 first
for what, cast in (("f16", lambda a: a.astype(np.float16)), ("bf16", attnc.from_float32)):
    k16s = [cast(k * 2.0 ** rng.integers(-12, 12)).reshape(k.shape) for k in k_seq]
    v16s = [cast(v).reshape(v.shape) for v in v_seq]
    wide = (lambda a: a.astype(np.float32)) if what == "f16" else attnc.to_float32
    runs = [(k16s, v16s), ([wide(k) for k in k16s], [wide(v) for v in v16s])]
    if what == "f16":
        runs.append((k16s, runs[1][1]))
    got = []
    for kk16, vv16 in runs:
        pk, pv = np.full_like(kp8, 55), np.full_like(vp8, -55)
        sk, sv = np.full_like(ks8, np.nan), np.full_like(vs8, np.nan)
        attnc.paged_append(np.concatenate(kk16), np.concatenate(vv16), pk, pv, table, lens,
                           new_starts=np.concatenate([[0], np.cumsum(lens)]), k_scale=sk, v_scale=sv)
        got.append((pk, pv, sk.view(np.uint32), sv.view(np.uint32)))
    for i in range(1, len(got)):
        check(all(np.array_equal(a, b) for a, b in zip(got[0], got[i])),
              "%s rows into int8 pages (run %d): not the float32 append" % (what, i))
    check(np.isnan(got[0][2].view(np.float32)).sum() < ks8.size, "%s rows into int8 pages: nothing written" % what)
k_inf = attnc.from_float32(np.concatenate(k_seq))
k_inf[3, 1, 2] = 0x7f80
raises(attnc.ATTN_ERR_ARG, lambda: attnc.paged_append(k_inf, attnc.from_float32(np.concatenate(v_seq)), kp8, vp8,
       table, lens, new_starts=np.concatenate([[0], np.cumsum(lens)]), k_scale=ks8, v_scale=vs8),
       "bf16 inf into int8 pages")

# f16 pages through paged_append, and bf16 storage (q, pages and o as bf16 bits)
for dt, npt in (("f16", np.float16), ("bf16", np.uint16)):
    kk = attnc.compile(spec8.replace("attention t8", "attention t" + dt).replace("kv_dtype = int8", "dtype = " + dt))
    kp16 = np.full((NP, P, KH, D), 0x7e00, dtype=np.uint16).view(npt)  # NaN (f16) / a finite bf16
    vp16 = np.full((NP, P, KH, DV), 0x7fc0, dtype=np.uint16).view(npt)
    attnc.paged_append(np.concatenate(k_seq), np.concatenate(v_seq), kp16, vp16, table, lens,
                       new_starts=np.concatenate([[0], np.cumsum(lens)]))
    conv = (lambda a: a.astype(np.float64)) if dt == "f16" else (lambda a: attnc.to_float32(a).astype(np.float64))
    ks = [np.stack([conv(kp16[table[b, j // P], j % P]) for j in range(int(lens[b]))]) for b in range(B)]
    vs = [np.stack([conv(vp16[table[b, j // P], j % P]) for j in range(int(lens[b]))]) for b in range(B)]
    qs = q.astype(np.float16) if dt == "f16" else attnc.from_float32(q)
    o16 = kk(qs, kp16, vp16, page_table=table, kv_lens=lens, q_starts=starts, threads=2)
    check(o16.dtype == npt, "%s: o dtype %s" % (dt, o16.dtype))
    r16, _ = reference(conv(qs), starts, ks, vs)
    err = np.abs(conv(o16) - r16) - np.abs(r16) / (1024 if dt == "f16" else 256)
    check(err.max() < 1e-4, "%s storage: max error %g past o's rounding" % (dt, err.max()))

# paged MLA: the latent pages, absorbed
R, ROPE, NOPE, DVM = 32, 8, 16, 16
km = attnc.compile("attention pm { heads = %d; mla { kv_rank = %d; rope_dim = %d; nope_dim = %d; v_dim = %d; } "
                   "mask = causal; kv_cache = paged(%d); }" % (H, R, ROPE, NOPE, DVM, P))
check(km.is_mla and km.page_size == P and km.v_dim == DVM, "paged MLA kernel: %r" % km)
ckv = np.full((NP, P, R), np.nan, dtype=np.float32)
krp = np.full((NP, P, ROPE), np.nan, dtype=np.float32)
c_seq = [rng.standard_normal((int(L), R)) for L in lens]
r_seq = [rng.standard_normal((int(L), ROPE)) for L in lens]
for b in range(B):
    for j in range(int(lens[b])):
        ckv[table[b, j // P], j % P] = c_seq[b][j]
        krp[table[b, j // P], j % P] = r_seq[b][j]
qn = rng.standard_normal((T, H, NOPE)).astype(np.float32)
qr = rng.standard_normal((T, H, ROPE)).astype(np.float32)
wuk = (rng.standard_normal((H, R, NOPE)) * 0.2).astype(np.float32)
wuv = (rng.standard_normal((H, R, DVM)) * 0.2).astype(np.float32)
om, lm = km(qn, qr, ckv, krp, wuk, wuv, page_table=table, kv_lens=lens, q_starts=starts, return_lse=True)
rm = np.zeros((T, H, DVM))
for b in range(B):
    L, n = int(lens[b]), int(nq[b])
    c = c_seq[b].astype(np.float32).astype(np.float64)
    kr = r_seq[b].astype(np.float32).astype(np.float64)
    for i in range(n):
        for h in range(H):
            sc = ((c @ wuk[h]) @ qn[starts[b] + i, h] + kr @ qr[starts[b] + i, h]) / np.sqrt(NOPE + ROPE)
            sc[np.arange(L) > L - n + i] = -np.inf
            w = np.exp(sc - sc.max())
            rm[starts[b] + i, h] = w @ (c @ wuv[h]) / w.sum()
check(om.shape == (T, H, DVM) and np.abs(om - rm).max() < 1e-4, "paged MLA: max error %g" % np.abs(om - rm).max())
raises(attnc.ATTN_ERR_NULL, lambda: km(qn, qr, ckv, page_table=table, kv_lens=lens, q_starts=starts),
       "paged MLA without k_rope_pages")

plain = attnc.compile("attention p { heads = 2; head_dim = 8; }")
check(plain.page_size == 0, "contiguous page_size")
print("test_paged.py: %d failures" % len(FAILS))
sys.exit(1 if FAILS else 0)
