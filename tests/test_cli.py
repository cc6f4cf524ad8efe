#!/usr/bin/env python3
"""test_cli.py ATTNC — the attnc command line (SPEC §4): exit codes, usage errors, check, dump,
mask (text and SVG), run on .npy files against a pure-Python reference, bench --json.
Uses only the standard library (it writes and reads .npy itself)."""
import atexit
import json
import math
import os
import random
import struct
import shutil
import subprocess
import sys
import tempfile

ATTNC = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="attnc_cli_")
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg, file=sys.stderr)


def attnc(*args, rc=0, out_has=(), err_has=()):
    p = subprocess.run([ATTNC, *map(str, args)], capture_output=True, text=True, timeout=120)
    what = "attnc " + " ".join(map(str, args))
    if p.returncode != rc:
        fail(f"{what}: exit {p.returncode}, expected {rc}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    if p.returncode < 0:
        fail(f"{what}: killed by signal {-p.returncode}")
    for s in out_has:
        if s not in p.stdout:
            fail(f"{what}: stdout lacks {s!r}:\n{p.stdout}")
    for s in err_has:
        if s not in p.stderr:
            fail(f"{what}: stderr lacks {s!r}:\n{p.stderr}")
    return p


def spec(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def npy_write(path, values, shape, dtype="<f4"):
    code = {"<f4": "f", "<i4": "i"}[dtype]
    dims = "(" + "".join(f"{d}, " for d in shape)[:-2] + ("," if len(shape) == 1 else "") + ")"
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (dtype, dims)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%d%s" % (len(values), code), *values))
    return path


def npy_read(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY"
    hlen = struct.unpack("<H", data[8:10])[0]
    header = eval(data[10:10 + hlen].decode())  # a dict literal written by attnc
    assert header["descr"] == "<f4" and not header["fortran_order"]
    n = math.prod(header["shape"])
    return list(struct.unpack("<%df" % n, data[10 + hlen:10 + hlen + 4 * n])), header["shape"]


# --- usage and help -----------------------------------------------------------------------
good = spec("causal.attn", "attention causal_small { heads = 2; head_dim = 4; mask = causal; }\n")
attnc(rc=2, err_has=["usage"])
attnc("--help", out_has=["check", "bench", "mask"])
attnc("--version", out_has=["attnc"])
attnc("help", "run", out_has=["--in", "--out"])
attnc("help", "dump", out_has=["parse"])
attnc("run", "--help", out_has=["--q-offset"])
attnc("frobnicate", rc=2, err_has=["unknown command"])
attnc("check", rc=2, err_has=["no spec file"])
attnc("check", good, "--bogus", rc=2, err_has=["unknown option '--bogus'", "usage: attnc check"])
attnc("check", good, "--svg", "x.svg", rc=2, err_has=["does not take --svg"])
attnc("check", good, "--threads", rc=2, err_has=["--threads needs a value"])
attnc("check", good, "--threads", "-1", rc=2)
attnc("check", good, "--threads", "lots", rc=2)
attnc("check", good, "-O4", rc=2, err_has=["-O0 .. -O3"])
attnc("check", good, "-O", rc=2)
attnc("check", good, "-D", "nonsense", rc=2, err_has=["NAME=VALUE"])
attnc("check", good, "--absorb", "maybe", rc=2)
attnc("check", good, good, rc=2, err_has=["unexpected argument"])
attnc("mask", good, "--q-len", "4", rc=2, err_has=["--kv-len"])
attnc("mask", good, "--q-len", "0", "--kv-len", "4", rc=2)
attnc("bench", good, "--batch", "x", rc=2)
attnc("build", good, rc=2, err_has=["-o OUT"])
attnc("build", good, "-o", os.path.join(TMP, "x.o"), "--emit", "exe", rc=2)
# a CPU LLVM does not know (or a 32-bit one for x86-64 code): an error, never an abort
attnc("build", good, "-o", os.path.join(TMP, "x.o"), "--target", "x86_64-unknown-linux-gnu", "--cpu", "no-such-cpu",
      rc=1, err_has=["no-such-cpu"])
attnc("dump", good, "--llvm", "--target", "x86_64-unknown-linux-gnu", "--cpu", "pentium4", rc=1, err_has=["pentium4"])
attnc("dump", good, "--after", "nosuchpass", rc=2, err_has=["unknown pass", "parse", "fold"])
attnc("dump", good, "--after", "fold", "--llvm", rc=2)
attnc("run", good, "--in", "q", rc=2, err_has=["NAME=FILE.npy"])

# --- check ---------------------------------------------------------------------------------
attnc("check", good)
attnc("check", good, "-O0", "-fno-prune", "--threads", "2", "--absorb", "on", "--kernel", "causal_small")
attnc("check", os.path.join(TMP, "missing.attn"), rc=1, err_has=["missing.attn"])
bad = spec("bad.attn", "attention broken {\n    heads = 2; head_dim = 4;\n    mask = k <= nosuch;\n}\n")
p = attnc("check", bad, rc=1, err_has=["bad.attn:3:", "error:"])
two = spec("two.attn", "param w = 2;\nattention a { heads = 1; head_dim = 4; mask = sliding(w); }\n"
                       "attention b { heads = 1; head_dim = 4; }\n")
attnc("check", two)
attnc("check", two, "--kernel", "nosuch", rc=2, err_has=["nosuch"])
attnc("mask", two, "--q-len", "4", "--kv-len", "4", rc=2, err_has=["--kernel"])

# --- dump ----------------------------------------------------------------------------------
attnc("dump", good, out_has=["causal_small"])
attnc("dump", good, "--after", "parse", out_has=["causal_small"])
attnc("dump", good, "--after", "flash", out_has=["flash"])
attnc("dump", good, "--llvm", out_has=["attnc_causal_small_tile"])
attnc("dump", two, "--kernel", "b", out_has=["b"])

# --- mask ----------------------------------------------------------------------------------
p = attnc("mask", good, "--q-len", "4", "--kv-len", "4")
rows = p.stdout.splitlines()[-4:]
if rows != ["#...", "##..", "###.", "####"]:
    fail(f"causal 4x4 mask drawn as {rows}")
p = attnc("mask", two, "--kernel", "a", "--q-len", "3", "--kv-len", "5")  # q_offset 2
if p.stdout.splitlines()[-3:] != [".##..", "..##.", "...##"]:
    fail(f"sliding(2) 3x5 mask drawn as {p.stdout.splitlines()[-3:]}")
p = attnc("mask", two, "--kernel", "a", "-D", "w=1", "--q-len", "2", "--kv-len", "3", "--q-offset", "0")
if p.stdout.splitlines()[-2:] != ["#..", ".#."]:
    fail(f"-D w=1 --q-offset 0 mask drawn as {p.stdout.splitlines()[-2:]}")
svg = os.path.join(TMP, "m.svg")
attnc("mask", good, "--q-len", "40", "--kv-len", "40", "--svg", svg)
with open(svg) as f:
    text = f.read()
if not text.startswith("<svg") or "partial" not in text or "</svg>" not in text:
    fail("the SVG looks wrong")
p = attnc("mask", good, "--q-len", "1000", "--kv-len", "1000")
if "downsampled" not in p.stdout or max(len(l) for l in p.stdout.splitlines()[2:]) > 128:
    fail("a 1000x1000 mask is not downsampled to 128 columns")
attnc("mask", good, "--q-len", "100000", "--kv-len", "100000", out_has=["sampled"])

unilm = spec("unilm.attn", "attention unilm {\n    input i32 src_len[batch];\n"
                           "    heads = 2;  head_dim = 4;\n    mask  = k < src_len[b] || k <= q;\n}\n")
attnc("mask", unilm, "--q-len", "4", "--kv-len", "4", rc=1, err_has=["src_len", "--in"])
src = npy_write(os.path.join(TMP, "src.npy"), [2], [1], "<i4")
p = attnc("mask", unilm, "--q-len", "4", "--kv-len", "4", "--in", f"src_len={src}")
if p.stdout.splitlines()[-4:] != ["##..", "##..", "###.", "####"]:
    fail(f"unilm mask drawn as {p.stdout.splitlines()[-4:]}")
srcf = npy_write(os.path.join(TMP, "srcf.npy"), [2.0], [1])
attnc("mask", unilm, "--q-len", "4", "--kv-len", "4", "--in", f"src_len={srcf}", rc=1, err_has=["int32"])
attnc("mask", unilm, "--q-len", "4", "--kv-len", "4", "--in", f"nosuch={src}", rc=1, err_has=["nosuch"])
gather = spec("gather.attn", "attention g {\n    input i32 idx[seq];\n    heads = 1; head_dim = 4;\n"
                             "    mask = idx[idx[k]] >= 0;\n}\n")
oob = npy_write(os.path.join(TMP, "oob.npy"), [0, 9, 0, 0], [4], "<i4")
attnc("mask", gather, "--q-len", "4", "--kv-len", "4", "--in", f"idx={oob}", rc=1, err_has=["out of bounds"])
# a mask whose integers overflow for these positions: an error, not a wrapped drawing
wraps = spec("wraps.attn", "attention w { heads = 1; head_dim = 4; mask = q * 4611686018427387904 < k + 1; }\n")
attnc("mask", wraps, "--q-len", "4", "--kv-len", "4", rc=1, err_has=["overflows 64-bit"])
attnc("mask", wraps, "--q-len", "2", "--kv-len", "2", "--q-offset", "0", out_has=["#"])

# --- run -----------------------------------------------------------------------------------
def reference(q, k, v, B, H, KH, Lq, Lk, D, DV, visible):
    o, lse = [0.0] * (B * H * Lq * DV), [0.0] * (B * H * Lq)
    for b in range(B):
        for h in range(H):
            g = h // (H // KH)
            for i in range(Lq):
                qo = ((b * H + h) * Lq + i) * D
                s = []
                for j in range(Lk):
                    if not visible(b, h, Lk - Lq + i, j):
                        continue
                    ko = ((b * KH + g) * Lk + j) * D
                    s.append((j, sum(q[qo + d] * k[ko + d] for d in range(D)) / math.sqrt(D)))
                if not s:
                    lse[(b * H + h) * Lq + i] = -math.inf
                    continue
                m = max(x for _, x in s)
                den = sum(math.exp(x - m) for _, x in s)
                lse[(b * H + h) * Lq + i] = m + math.log(den)
                for j, x in s:
                    w = math.exp(x - m) / den
                    vo = ((b * KH + g) * Lk + j) * DV
                    for d in range(DV):
                        o[((b * H + h) * Lq + i) * DV + d] += w * v[vo + d]
    return o, lse


rng = random.Random(1)
B, H, KH, Lq, Lk, D = 2, 2, 1, 5, 7, 4
gqa = spec("gqa.attn", "attention gqa { heads = 2; kv_heads = 1; head_dim = 4; mask = causal; }\n")
q = [rng.uniform(-1, 1) for _ in range(B * H * Lq * D)]
k = [rng.uniform(-1, 1) for _ in range(B * KH * Lk * D)]
v = [rng.uniform(-1, 1) for _ in range(B * KH * Lk * D)]
qp = npy_write(os.path.join(TMP, "q.npy"), q, [B, H, Lq, D])
kp = npy_write(os.path.join(TMP, "k.npy"), k, [B, KH, Lk, D])
vp = npy_write(os.path.join(TMP, "v.npy"), v, [B, KH, Lk, D])
op, lp = os.path.join(TMP, "o.npy"), os.path.join(TMP, "lse.npy")
attnc("run", gqa, "--in", f"q={qp}", "--in", f"k={kp}", "--in", f"v={vp}", "--out", f"o={op}",
      "--out", f"lse={lp}", "--threads", "2")
o, oshape = npy_read(op)
lse, lshape = npy_read(lp)
ro, rl = reference(q, k, v, B, H, KH, Lq, Lk, D, D, lambda b, h, i, j: j <= i)
if list(oshape) != [B, H, Lq, D] or list(lshape) != [B, H, Lq]:
    fail(f"run wrote shapes {oshape} {lshape}")
elif max(abs(a - b) for a, b in zip(o, ro)) > 1e-4 or max(abs(a - b) for a, b in zip(lse, rl)) > 1e-4:
    fail("run: o or lse differs from the reference")
# --q-offset 0 with Lq < Lk: rows see keys 0..i
attnc("run", gqa, "--in", f"q={qp}", "--in", f"k={kp}", "--in", f"v={vp}", "--out", f"o={op}",
      "--q-offset", "-3")
o, _ = npy_read(op)
ro, _ = reference(q, k, v, B, H, KH, Lq, Lk, D, D, lambda b, h, i, j: j <= i - (Lk - Lq) - 3)
if max(abs(a - b) for a, b in zip(o, ro)) > 1e-4:
    fail("run --q-offset -3: o differs from the reference (fully masked rows must be zeros)")
attnc("run", gqa, "--in", f"k={kp}", "--in", f"v={vp}", "--out", f"o={op}", rc=1, err_has=["--in q"])
attnc("run", gqa, "--in", f"q={qp}", "--in", f"k={qp}", "--in", f"v={vp}", "--out", f"o={op}", rc=1,
      err_has=["k: dim 1"])
attnc("run", gqa, "--in", f"q={qp}", "--in", f"k={kp}", "--in", f"v={vp}", "--out", f"x={op}", rc=1,
      err_has=["o and lse"])
attnc("run", gqa, "--in", f"q={src}", "--in", f"k={kp}", "--in", f"v={vp}", rc=1)
attnc("run", gqa, "--in", f"q={os.path.join(TMP, 'nope.npy')}", "--in", f"k={kp}", "--in", f"v={vp}", rc=1,
      err_has=["nope.npy"])
junk = os.path.join(TMP, "junk.npy")
with open(junk, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00\xff\xff{'descr'")
attnc("run", gqa, "--in", f"q={junk}", "--in", f"k={kp}", "--in", f"v={vp}", rc=1, err_has=["junk.npy"])

# runtime inputs in run
q1 = q[:H * Lq * D]
k1 = [rng.uniform(-1, 1) for _ in range(2 * Lk * D)]
v1 = [rng.uniform(-1, 1) for _ in range(2 * Lk * D)]
qp1 = npy_write(os.path.join(TMP, "q1.npy"), q1, [1, 2, Lq, D])
kp1 = npy_write(os.path.join(TMP, "k1.npy"), k1, [1, 2, Lk, D])
vp1 = npy_write(os.path.join(TMP, "v1.npy"), v1, [1, 2, Lk, D])
src3 = npy_write(os.path.join(TMP, "src3.npy"), [3], [1], "<i4")
attnc("run", unilm, "--in", f"q={qp1}", "--in", f"k={kp1}", "--in", f"v={vp1}", "--out", f"o={op}", rc=1,
      err_has=["src_len"])
attnc("run", unilm, "--in", f"q={qp1}", "--in", f"k={kp1}", "--in", f"v={vp1}", "--in", f"src_len={src3}",
      "--out", f"o={op}")
o, _ = npy_read(op)
ro, _ = reference(q1, k1, v1, 1, 2, 2, Lq, Lk, D, D, lambda b, h, i, j: j < 3 or j <= i)
if max(abs(a - b) for a, b in zip(o, ro)) > 1e-4:
    fail("run unilm: o differs from the reference")
src_bad = npy_write(os.path.join(TMP, "src_bad.npy"), [3, 3], [2], "<i4")
attnc("run", unilm, "--in", f"q={qp1}", "--in", f"k={kp1}", "--in", f"v={vp1}", "--in", f"src_len={src_bad}",
      rc=1, err_has=["src_len"])

# MLA (SPEC §3): run takes q_nope, q_rope, c_kv, k_rope, w_uk, w_uv; both variants agree
mla = spec("mla.attn", "attention mla_small {\n    heads = 2;\n"
                       "    mla { kv_rank = 6; rope_dim = 2; nope_dim = 3; v_dim = 4; }\n    mask = causal;\n}\n")
B, H, Lq, Lk, R, RO, NO, DV = 1, 2, 3, 5, 6, 2, 3, 4
vals = {n: [rng.uniform(-1, 1) for _ in range(math.prod(sh))] for n, sh in (
    ("q_nope", (B, H, Lq, NO)), ("q_rope", (B, H, Lq, RO)), ("c_kv", (B, Lk, R)), ("k_rope", (B, Lk, RO)),
    ("w_uk", (H, R, NO)), ("w_uv", (H, R, DV)))}
shapes = {"q_nope": [B, H, Lq, NO], "q_rope": [B, H, Lq, RO], "c_kv": [B, Lk, R], "k_rope": [B, Lk, RO],
          "w_uk": [H, R, NO], "w_uv": [H, R, DV]}
mla_args = []
for n in vals:
    mla_args += ["--in", f"{n}={npy_write(os.path.join(TMP, n + '.npy'), vals[n], shapes[n])}"]
ref = []
for h in range(H):
    for i in range(Lq):
        qn = vals["q_nope"][(h * Lq + i) * NO:(h * Lq + i + 1) * NO]
        qr = vals["q_rope"][(h * Lq + i) * RO:(h * Lq + i + 1) * RO]
        s, vs = [], []
        for j in range(Lk):
            ckv = vals["c_kv"][j * R:(j + 1) * R]
            kn = [sum(ckv[r] * vals["w_uk"][(h * R + r) * NO + d] for r in range(R)) for d in range(NO)]
            vv = [sum(ckv[r] * vals["w_uv"][(h * R + r) * DV + d] for r in range(R)) for d in range(DV)]
            kr = vals["k_rope"][j * RO:(j + 1) * RO]
            if j <= Lk - Lq + i:
                s.append((sum(a * b for a, b in zip(qn, kn)) + sum(a * b for a, b in zip(qr, kr))) / math.sqrt(NO + RO))
                vs.append(vv)
        mx = max(s)
        w = [math.exp(x - mx) for x in s]
        ref += [sum(w[t] * vs[t][d] for t in range(len(s))) / sum(w) for d in range(DV)]
for absorb in ("on", "off"):
    attnc("run", mla, *mla_args, "--out", f"o={op}", "--absorb", absorb)
    o, oshape = npy_read(op)
    if list(oshape) != [B, H, Lq, DV] or max(abs(a - b) for a, b in zip(o, ref)) > 1e-4:
        fail(f"run MLA --absorb {absorb}: o differs from the reference")
attnc("run", mla, *mla_args[:-2], "--out", f"o={op}", rc=1, err_has=["w_uv"])
attnc("run", mla, "--in", f"q={qp}", *mla_args, rc=1, err_has=["q_nope"])
p = attnc("bench", mla, "--q-len", "4", "--kv-len", "16", "--reps", "3", "--json")
if '"mla": true' not in p.stdout:
    fail("bench of an MLA kernel does not say so")

# --- bench ---------------------------------------------------------------------------------
p = attnc("bench", good, "--q-len", "8", "--kv-len", "8", "--reps", "3", "--json", "--threads", "1")
try:
    r = json.loads(p.stdout.strip().splitlines()[-1])
    for key in ("kernel", "batch", "q_len", "kv_len", "threads", "ms", "ms_min", "gflops", "visible",
                "compile_ms"):
        if key not in r:
            fail(f"bench --json lacks {key}")
    if abs(r["visible"] - 36 / 64) > 1e-9 or r["kernel"] != "causal_small" or r["threads"] != 1:
        fail(f"bench --json: {r}")
except (ValueError, IndexError) as e:
    fail(f"bench --json printed no JSON: {e}: {p.stdout}")
attnc("bench", good, "--q-len", "64", "--kv-len", "64", "--batch", "2", "--reps", "3",
      out_has=["GFLOP/s", "visible"])
p = attnc("bench", unilm, "--q-len", "8", "--kv-len", "8", "--reps", "3", "--json", err_has=["zeros"])
attnc("bench", unilm, "--q-len", "8", "--kv-len", "8", "--reps", "3", "--in", f"src_len={src_bad}", rc=1)

# --- source encoding -------------------------------------------------------------------------
# A leading UTF-8 byte order mark (as some editors write) is skipped, as C compilers do; the
# columns of diagnostics do not count it. A BOM anywhere else is still a stray byte.
bom = os.path.join(TMP, "bom.attn")
with open(bom, "wb") as f:
    f.write(b"\xef\xbb\xbfattention bom { heads = 2; head_dim = 4; mask = causal; }\n")
attnc("check", bom)
with open(bom, "wb") as f:
    f.write(b"\xef\xbb\xbfattention bom { heads = 2; head_dim = 4; mask = k; }\n")
attnc("check", bom, rc=1, err_has=[f"{bom}:1:49: error: "])
with open(bom, "wb") as f:
    f.write(b"attention bom { heads = 2; \xef\xbb\xbfhead_dim = 4; }\n")
attnc("check", bom, rc=1, err_has=[f"{bom}:1:28: error: non-ASCII"])

# A spec path that names a directory says so (not a generic I/O error); status 1 like a
# missing file.
attnc("check", TMP, rc=1, err_has=["Is a directory"])
attnc("check", os.path.join(TMP, "missing.attn"), rc=1, err_has=["No such file"])

if failures:
    print(f"test_cli: {failures} failure(s); files in {TMP}", file=sys.stderr)
    sys.exit(1)
subprocess.run(["rm", "-rf", TMP])
print("test_cli: ok")
