#!/usr/bin/env python3
"""test_cli_paged.py ATTNC — the command line on paged kernels (kv_cache = paged(P)): run on
.npy pages against a float64 NumPy reference (shuffled pages, garbage in unused pages and the
table's padding), in f32, with int8 pages and their scales and with bf16 storage, a paged MLA
block, bad tables and scales, bench --kv-len-min and kv_bytes in bench --json (int8 scales and
MLA latent pages included), check and dump."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ATTNC = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="attnc_cli_paged_")
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
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


def reference(kp=kp, vp=vp, q=q):
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

# int8 pages: each (token, head) row quantized with its scale; unused rows hold garbage bytes and
# NaN scales. The reference runs on the dequantized values.
with np.errstate(invalid="ignore"):
    ksc = (np.abs(kp).max(axis=3) / 127).astype(np.float32)  # NaN rows: NaN scales
    vsc = (np.abs(vp).max(axis=3) / 127).astype(np.float32)
    k8 = np.where(np.isnan(kp), 77, np.rint(kp / ksc[..., None])).astype(np.int8)
    v8 = np.where(np.isnan(vp), -5, np.rint(vp / vsc[..., None])).astype(np.int8)
int8 = spec("paged8.attn", "attention dec8 { heads = %d; kv_heads = %d; head_dim = %d; mask = causal; "
            "kv_cache = paged(%d); kv_dtype = int8; }\n" % (H, KH, D, P))
for n, a in {"k8": k8, "v8": v8, "ksc": ksc, "vsc": vsc}.items():
    np.save(path(n + ".npy"), a)
ins8 = [a for a in ins if not a.startswith(("--in=k_pages=", "--in=v_pages="))] + [
    "--in=k_pages=" + path("k8.npy"), "--in=v_pages=" + path("v8.npy"),
    "--in=k_scale=" + path("ksc.npy"), "--in=v_scale=" + path("vsc.npy")]
attnc("run", int8, *ins8, "--out", "o=" + path("o8.npy"), "--out", "lse=" + path("lse8.npy"), "--threads", 2)
if os.path.exists(path("o8.npy")):
    ro, rl = reference(k8 * ksc[..., None].astype(np.float64), v8 * vsc[..., None].astype(np.float64))
    got_o, got_l = np.load(path("o8.npy")), np.load(path("lse8.npy"))
    if not (np.abs(got_o - ro).max() < 1e-4 and np.abs(got_l - rl).max() < 1e-4):
        fail(f"run int8 pages: max error o {np.abs(got_o - ro).max()}, lse {np.abs(got_l - rl).max()}")
# bad scales: a wrong shape, a wrong dtype, a missing one; float pages for int8
np.save(path("ksc_bad.npy"), ksc[:, :, :1])
np.save(path("ksc_f64.npy"), ksc.astype(np.float64))
swap = lambda lst, key, new: [a if not a.startswith(key) else new for a in lst]
attnc("run", int8, *swap(ins8, "--in=k_scale=", "--in=k_scale=" + path("ksc_bad.npy")), "--out", "o=" + path("o9.npy"),
      rc=1, err_has=("k_scale",))
attnc("run", int8, *swap(ins8, "--in=v_scale=", "--in=v_scale=" + path("ksc_f64.npy")), "--out", "o=" + path("o9.npy"),
      rc=1, err_has=("v_scale",))
attnc("run", int8, *[a for a in ins8 if not a.startswith("--in=v_scale=")], "--out", "o=" + path("o9.npy"), rc=1,
      err_has=("v_scale",))
attnc("run", int8, *swap(ins8, "--in=k_pages=", "--in=k_pages=" + path("k_pages.npy")), "--out", "o=" + path("o9.npy"),
      rc=1, err_has=("k_pages", "int8"))

# bf16 storage: q and the pages rounded to bf16 (the reference on the rounded values), o in bf16
def bf16(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)


b16 = spec("paged16.attn", "attention dec16 { heads = %d; kv_heads = %d; head_dim = %d; mask = causal; "
           "kv_cache = paged(%d); dtype = bf16; }\n" % (H, KH, D, P))
attnc("run", b16, *ins, "--out", "o=" + path("o16.npy"), "--threads", 2)
if os.path.exists(path("o16.npy")):
    with np.errstate(invalid="ignore"):
        ro, _ = reference(bf16(kp), bf16(vp), bf16(q))
    got = np.load(path("o16.npy"))
    if not (got.dtype == np.float32 and np.all(np.abs(got - ro) <= np.abs(ro) / 256 + 1e-4)):
        fail(f"run bf16 storage: max error {np.abs(got - ro).max()}")

# paged MLA: the latent pages, absorbed, against the float64 reference
R, ROPE, NOPE, DVM, HM = 32, 8, 16, 16, 4
mla = spec("pmla.attn", "attention pm { heads = %d; mla { kv_rank = %d; rope_dim = %d; nope_dim = %d; v_dim = %d; } "
           "mask = causal; kv_cache = paged(%d); }\n" % (HM, R, ROPE, NOPE, DVM, P))
ckv = np.full((NP, P, R), np.nan, dtype=np.float32)
krp = np.full((NP, P, ROPE), np.nan, dtype=np.float32)
for b in range(B):
    for j in range(npages[b]):
        rows = min(P, int(lens[b]) - j * P)
        ckv[table[b, j], :rows] = rng.standard_normal((rows, R))
        krp[table[b, j], :rows] = rng.standard_normal((rows, ROPE))
qn = rng.standard_normal((T, HM, NOPE)).astype(np.float32)
qr = rng.standard_normal((T, HM, ROPE)).astype(np.float32)
wuk = (rng.standard_normal((HM, R, NOPE)) * 0.2).astype(np.float32)
wuv = (rng.standard_normal((HM, R, DVM)) * 0.2).astype(np.float32)
mfiles = {"q_nope": qn, "q_rope": qr, "c_kv_pages": ckv, "k_rope_pages": krp, "w_uk": wuk, "w_uv": wuv}
for n, a in mfiles.items():
    np.save(path(n + ".npy"), a)
mins = [a for a in ins if a.startswith(("--in=page_table=", "--in=kv_lens=", "--in=q_starts="))] + [
    f"--in={n}={path(n + '.npy')}" for n in mfiles]
attnc("run", mla, *mins, "--out", "o=" + path("om.npy"), "--out", "lse=" + path("lm.npy"), "--threads", 2)
if os.path.exists(path("om.npy")):
    ro, rl = np.zeros((T, HM, DVM)), np.zeros((T, HM))
    for b in range(B):
        L, n = int(lens[b]), int(nq[b])
        c = np.stack([ckv[table[b, j // P], j % P] for j in range(L)]).astype(np.float64)
        kr = np.stack([krp[table[b, j // P], j % P] for j in range(L)]).astype(np.float64)
        for i in range(n):
            t = starts[b] + i
            for h in range(HM):
                s = ((c @ wuk[h]) @ qn[t, h] + kr @ qr[t, h]) / np.sqrt(NOPE + ROPE)
                s[np.arange(L) > L - n + i] = -np.inf
                w = np.exp(s - s.max())
                ro[t, h] = (w @ (c @ wuv[h])) / w.sum()
                rl[t, h] = s.max() + np.log(w.sum())
    got_o, got_l = np.load(path("om.npy")), np.load(path("lm.npy"))
    if not (np.abs(got_o - ro).max() < 1e-4 and np.abs(got_l - rl).max() < 1e-4):
        fail(f"run paged MLA: max error o {np.abs(got_o - ro).max()}, lse {np.abs(got_l - rl).max()}")
attnc("run", mla, *ins, "--out", "o=" + path("om2.npy"), rc=1, err_has=("q_nope",))

# MLA in 16-bit storage: bf16 tensors with f16 latent pages, and the contiguous block alike; the
# float32 .npy inputs are rounded to the storage, o is the f32 result rounded once to bf16
mla16 = spec("pmla16.attn", "attention pm { heads = %d; mla { kv_rank = %d; rope_dim = %d; nope_dim = %d; "
             "v_dim = %d; } mask = causal; dtype = bf16; kv_dtype = f16; kv_cache = paged(%d); }\n"
             % (HM, R, ROPE, NOPE, DVM, P))
attnc("run", mla16, *mins, "--out", "o=" + path("om16.npy"), "--threads", 2)
if os.path.exists(path("om16.npy")):
    qn16, qr16, wuk16, wuv16 = bf16(qn), bf16(qr), bf16(wuk), bf16(wuv)
    ckv16, krp16 = ckv.astype(np.float16).astype(np.float64), krp.astype(np.float16).astype(np.float64)
    ro = np.zeros((T, HM, DVM))
    for b in range(B):
        L, n = int(lens[b]), int(nq[b])
        c = np.stack([ckv16[table[b, j // P], j % P] for j in range(L)])
        kr = np.stack([krp16[table[b, j // P], j % P] for j in range(L)])
        for i in range(n):
            t = starts[b] + i
            for h in range(HM):
                s = ((c @ wuk16[h]) @ qn16[t, h] + kr @ qr16[t, h]) / np.sqrt(NOPE + ROPE)
                s[np.arange(L) > L - n + i] = -np.inf
                w = np.exp(s - s.max())
                ro[t, h] = (w @ (c @ wuv16[h])) / w.sum()
    got = np.load(path("om16.npy"))
    if not (got.dtype == np.float32 and np.all(np.abs(got - ro) <= np.abs(ro) / 256 + 1e-4)):
        fail(f"run paged MLA bf16 / f16 latent: max error {np.abs(got - ro).max()}")
# contiguous: the latent of sequence 3 (40 keys, one query) as batch row 0
S3, L3 = int(starts[3]), int(lens[3])
cont = {"q_nope": qn[S3:S3 + 1][None].transpose(0, 2, 1, 3), "q_rope": qr[S3:S3 + 1][None].transpose(0, 2, 1, 3),
        "c_kv": np.stack([ckv[table[3, j // P], j % P] for j in range(L3)])[None],
        "k_rope": np.stack([krp[table[3, j // P], j % P] for j in range(L3)])[None], "w_uk": wuk, "w_uv": wuv}
for n, a in cont.items():
    np.save(path("c_" + n + ".npy"), np.ascontiguousarray(a, dtype=np.float32))
cins = [f"--in={n}={path('c_' + n + '.npy')}" for n in cont]
mlac = spec("cmla16.attn", "attention cm { heads = %d; mla { kv_rank = %d; rope_dim = %d; nope_dim = %d; "
            "v_dim = %d; } mask = causal; dtype = bf16; kv_dtype = f16; }\n" % (HM, R, ROPE, NOPE, DVM))
for absorb in ("on", "off"):
    attnc("run", mlac, *cins, "--out", "o=" + path("oc16.npy"), "--absorb", absorb)
    if os.path.exists(path("oc16.npy")):
        got, want = np.load(path("oc16.npy"))[0, :, 0], ro[S3]
        if not (got.dtype == np.float32 and np.all(np.abs(got - want) <= np.abs(want) / 256 + 1e-4)):
            fail(f"run MLA bf16 / f16 latent --absorb {absorb}: max error {np.abs(got - want).max()}")
p = attnc("bench", mlac, "--q-len", 1, "--kv-len", 50, "--reps", 3, "--json", "--threads", 1)
r = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {}
if r.get("dtype") != "bf16" or r.get("kv_dtype") != "f16" or r.get("kv_bytes") != 50 * (R + ROPE) * 2:
    fail(f"bench of an MLA bf16 block with an f16 latent: {r}")
p = attnc("bench", mla16, "--q-len", 1, "--kv-len", 50, "--batch", 2, "--reps", 3, "--json", "--threads", 1)
r = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {}
if r.get("dtype") != "bf16" or r.get("kv_dtype") != "f16":
    fail(f"bench of a paged MLA bf16 block with f16 latent pages: {r}")

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
# tensors beyond this machine's memory: a clear error (exit 1), not a process the system kills
ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
L = int(1.5 * ram / (2 * (16 + 8) * 4)) + 1  # K and V of contig (f32) alone: 1.5x the memory
attnc("bench", contig, "--q-len", 1, "--kv-len", L, "--reps", 1, rc=1, err_has=("memory",))
nb = max(1, -(-int(1.5 * ram / (KH * 2 * D * 4)) // 10 ** 9))
attnc("bench", paged, "--batch", nb, "--q-len", 1, "--kv-len", int(1.5 * ram / (KH * 2 * D * 4) / nb) + P, "--reps", 1,
      rc=1, err_has=("memory",))
# int8 pages: one byte an element and a 4-byte scale per row of K and of V; MLA: latent rows
for sp, per_key, extra in ((int8, KH * (2 * D + 8), {"kv_dtype": "int8"}), (b16, KH * 2 * D * 2, {"dtype": "bf16"}),
                           (mla, (R + ROPE) * 4, {"mla": True})):
    p = attnc("bench", sp, "--batch", 3, "--q-len", 2, "--kv-len", 90, "--kv-len-min", 10, "--reps", 3, "--json",
              "--threads", 2)
    try:
        j = json.loads(p.stdout.strip().splitlines()[-1])
        if j["kv_bytes"] != j["keys"] * per_key or j["ms"] <= 0 or any(j.get(k) != v for k, v in extra.items()):
            fail(f"bench {sp} kv_bytes: {j}")
    except (ValueError, KeyError, IndexError) as e:
        fail(f"bench {sp} --json: {e}: {p.stdout}")
attnc("bench", contig, "--kv-len-min", 4, "--reps", 1, rc=2, err_has=("paged",))
attnc("bench", paged, "--kv-len", 10, "--kv-len-min", 40, "--reps", 1, rc=2, err_has=("--kv-len-min",))
# kv_lens are int32: a length past 2^31 - 1 is refused, never wrapped (2^32 became 0 keys)
for L in (2 ** 32, 2 ** 31):
    attnc("bench", paged, "--q-len", 1, "--kv-len", L, "--reps", 1, "--json", rc=2, err_has=("--kv-len",))
attnc("bench", paged, "--q-len", 1, "--kv-len", 2 ** 32 + 8, "--kv-len-min", 2 ** 32, "--reps", 1, rc=2,
      err_has=("--kv-len",))

print("test_cli_paged: %s" % ("FAILED" if failures else "ok"))
sys.exit(1 if failures else 0)
