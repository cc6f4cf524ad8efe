#!/usr/bin/env python3
"""test_cli_paged.py ATTNC — the command line on paged kernels (kv_cache = paged(P)): run on
.npy pages against a float64 NumPy reference (shuffled pages, garbage in unused pages and the
table's padding), bad tables, bench --kv-len-min and kv_bytes in bench --json, check and dump."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ATTNC = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="attnc_cli_paged_")
failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg, file=sys.stderr)


def attnc(*args, rc=0, err_has=(), out_has=()):
    p = subprocess.run([ATTNC, *map(str, args)], capture_output=True, text=True, timeout=300)
    what = "attnc " + " ".join(map(str, args))
    if p.returncode != rc:
        fail(f"{what}: exit {p.returncode}, expected {rc}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    for s in err_has:
        if s not in p.stderr:
            fail(f"{what}: stderr lacks {s!r}:\n{p.stderr}")
    for s in out_has:
        if s not in p.stdout:
            fail(f"{what}: stdout lacks {s!r}:\n{p.stdout}")
    return p


def path(name):
    return os.path.join(TMP, name)


def spec(name, text):
    with open(path(name), "w") as f:
        f.write(text)
    return path(name)


P, H, KH, D = 8, 4, 2, 16
paged = spec("paged.attn", "attention dec { heads = %d; kv_heads = %d; head_dim = %d; mask = causal; "
             "kv_cache = paged(%d); }\n" % (H, KH, D, P))
rng = np.random.default_rng(7)
lens = np.array([1, P, 21, 40], dtype=np.int32)
nq = np.array([1, P, 5, 1], dtype=np.int32)
starts = np.concatenate([[0], np.cumsum(nq)]).astype(np.int32)
B, T = len(lens), int(starts[-1])
npages = [(int(L) + P - 1) // P for L in lens]
NP, MP = sum(npages) + 2, max(npages) + 1
perm = rng.permutation(NP)
table = np.full((B, MP), 999, dtype=np.int32)  # padding: out of range, never read
kp = np.full((NP, P, KH, D), np.nan, dtype=np.float32)  # unused pages and rows: NaN
vp = np.full((NP, P, KH, D), np.nan, dtype=np.float32)
nxt = 0
for b in range(B):
    for j in range(npages[b]):
        table[b, j] = perm[nxt]
        nxt += 1
        rows = min(P, int(lens[b]) - j * P)
        kp[table[b, j], :rows] = rng.standard_normal((rows, KH, D))
        vp[table[b, j], :rows] = rng.standard_normal((rows, KH, D))
q = rng.standard_normal((T, H, D)).astype(np.float32)
files = {"q": q, "k_pages": kp, "v_pages": vp, "page_table": table, "kv_lens": lens, "q_starts": starts}
for n, a in files.items():
    np.save(path(n + ".npy"), a)
ins = [f"--in={n}={path(n + '.npy')}" for n in files]


def reference():
    o = np.zeros((T, H, D))
    lse = np.zeros((T, H))
    for b in range(B):
        L, n = int(lens[b]), int(nq[b])
        keys = np.arange(L)
        k = np.stack([kp[table[b, j // P], j % P] for j in keys]).astype(np.float64)  # [L, KH, D]
        v = np.stack([vp[table[b, j // P], j % P] for j in keys]).astype(np.float64)
        for i in range(n):
            pos = L - n + i
            for h in range(H):
                s = k[:, h // (H // KH)] @ q[starts[b] + i, h].astype(np.float64) / np.sqrt(D)
                s[keys > pos] = -np.inf
                m = s.max()
                w = np.exp(s - m)
                o[starts[b] + i, h] = w @ v[:, h // (H // KH)] / w.sum()
                lse[starts[b] + i, h] = m + np.log(w.sum())
    return o, lse


attnc("run", paged, *ins, "--out", "o=" + path("o.npy"), "--out", "lse=" + path("lse.npy"), "--threads", 2)
if os.path.exists(path("o.npy")):
    ro, rl = reference()
    got_o, got_l = np.load(path("o.npy")), np.load(path("lse.npy"))
    if got_o.shape != (T, H, D) or got_l.shape != (T, H):
        fail(f"run: shapes {got_o.shape} {got_l.shape}")
    elif not (np.abs(got_o - ro).max() < 1e-4 and np.abs(got_l - rl).max() < 1e-4):
        fail(f"run: max error o {np.abs(got_o - ro).max()}, lse {np.abs(got_l - rl).max()}")

# bad tables: the call's message, exit 1
bad = table.copy()
bad[2, 1] = NP
np.save(path("bad_table.npy"), bad)
bad_ins = [a if not a.startswith("--in=page_table=") else "--in=page_table=" + path("bad_table.npy") for a in ins]
attnc("run", paged, *bad_ins, "--out", "o=" + path("o2.npy"), rc=1, err_has=("page_table[2, 1]",))
np.save(path("bad_lens.npy"), np.array([1, P, 21, MP * P + 1], dtype=np.int32))
bad_ins = [a if not a.startswith("--in=kv_lens=") else "--in=kv_lens=" + path("bad_lens.npy") for a in ins]
attnc("run", paged, *bad_ins, "--out", "o=" + path("o2.npy"), rc=1, err_has=("kv_lens[3]",))
np.save(path("f_starts.npy"), starts.astype(np.float32))
bad_ins = [a if not a.startswith("--in=q_starts=") else "--in=q_starts=" + path("f_starts.npy") for a in ins]
attnc("run", paged, *bad_ins, "--out", "o=" + path("o2.npy"), rc=1, err_has=("int32",))
attnc("run", paged, *ins[:-1], "--out", "o=" + path("o2.npy"), rc=1, err_has=("q_starts",))

# check, dump
attnc("check", spec("bad_p.attn", "attention a { heads = 2; head_dim = 8; kv_cache = paged(24); }\n"), rc=1,
      err_has=("bad_p.attn:1:", "power of two"))
attnc("dump", paged, out_has=("kv_cache paged(8)",))

attnc("mask", paged, "--q-len", 3, "--kv-len", 5, out_has=("###..", "####.", "#####"))

# bench: kv_bytes for paged and contiguous kernels
p = attnc("bench", paged, "--batch", 5, "--q-len", 1, "--kv-len", 300, "--kv-len-min", 20, "--reps", 3, "--json",
          "--threads", 1)
try:
    j = json.loads(p.stdout.strip().splitlines()[-1])
    if not (j["kv_len_min"] == 20 and j["batch"] == 5 and j["total_q"] == 5 and 5 * 20 <= j["keys"] <= 5 * 300):
        fail(f"bench paged: {j}")
    if j["kv_bytes"] != j["keys"] * KH * 2 * D * 4 or j["ms"] <= 0:
        fail(f"bench paged kv_bytes: {j}")
except (ValueError, KeyError, IndexError) as e:
    fail(f"bench paged --json: {e}: {p.stdout}")
contig = spec("contig.attn", "attention c { heads = 4; kv_heads = 2; head_dim = 16; v_dim = 8; }\n")
p = attnc("bench", contig, "--batch", 2, "--q-len", 1, "--kv-len", 100, "--reps", 3, "--json", "--threads", 1)
try:
    j = json.loads(p.stdout.strip().splitlines()[-1])
    if j["kv_bytes"] != 2 * 2 * 100 * (16 + 8) * 4:
        fail(f"bench contiguous kv_bytes: {j}")
except (ValueError, KeyError, IndexError) as e:
    fail(f"bench contiguous --json: {e}: {p.stdout}")
attnc("bench", contig, "--kv-len-min", 4, "--reps", 1, rc=2, err_has=("paged",))
attnc("bench", paged, "--kv-len", 10, "--kv-len-min", 40, "--reps", 1, rc=2, err_has=("--kv-len-min",))

print("test_cli_paged: %s" % ("FAILED" if failures else "ok"))
sys.exit(1 if failures else 0)
