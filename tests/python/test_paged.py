#!/usr/bin/env python3
"""Paged kernels from Python: kern(q, k_pages, v_pages, page_table=, kv_lens=, q_starts=)
against a float64 NumPy reference (shuffled pages, NaN in unused pages), decode without
q_starts, attnc.paged_append filling the pages a step at a time, and bad calls.

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


def reference(qq, st):
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

# bad calls
bad = table.copy()
bad[2, 1] = NP
raises(attnc.ATTN_ERR_INDEX, lambda: kern(qd, kp, vp, page_table=bad, kv_lens=lens), "page out of range")
raises(attnc.ATTN_ERR_SHAPE, lambda: kern(q, kp, vp, page_table=table, kv_lens=lens), "rows without q_starts")
raises(attnc.ATTN_ERR_NULL, lambda: kern(qd, kp, vp, kv_lens=lens), "no page_table")
raises(attnc.ATTN_ERR_ARG, lambda: kern(qd, kp, vp, page_table=table, kv_lens=lens, q_offset=0), "q_offset")
raises(attnc.ATTN_ERR_INDEX, lambda: attnc.paged_append(qd[:, :KH], qd[:, :KH, :DV], kp, vp, bad, lens),
       "append to a page out of range")
plain = attnc.compile("attention p { heads = 2; head_dim = 8; }")
check(plain.page_size == 0, "contiguous page_size")
print("test_paged.py: %d failures" % len(FAILS))
sys.exit(1 if FAILS else 0)
