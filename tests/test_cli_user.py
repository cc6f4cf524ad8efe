#!/usr/bin/env python3
"""test_cli_user.py ATTNC — the command line as a user meets it: empty calls (kv_len 0, q_len 0)
run, --q-offset 0 means position 0, and the messages speak the command line's language (no
Python advice, a hint at --kernel, "define" for -D)."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ATTNC = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="attnc_cli_user_")
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg, file=sys.stderr)


def attnc(*args, rc=0, err_has=(), err_lacks=()):
    p = subprocess.run([ATTNC, *map(str, args)], capture_output=True, text=True, timeout=120)
    what = "attnc " + " ".join(map(str, args))
    if p.returncode != rc:
        fail(f"{what}: exit {p.returncode}, expected {rc}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    for s in err_has:
        if s not in p.stderr:
            fail(f"{what}: stderr lacks {s!r}:\n{p.stderr}")
    for s in err_lacks:
        if s in p.stderr:
            fail(f"{what}: stderr has {s!r}:\n{p.stderr}")
    return p


def path(name):
    return os.path.join(TMP, name)


def save(name, a):
    np.save(path(name), a)
    return path(name)


def spec(name, text):
    with open(path(name), "w") as f:
        f.write(text)
    return path(name)


rng = np.random.default_rng(3)
g = spec("g.attn", "attention g { heads = 2; head_dim = 4; mask = causal; }\n")
q = save("q.npy", rng.standard_normal((1, 2, 3, 4)).astype(np.float32))
k5 = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
v5 = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
k, v = save("k.npy", k5), save("v.npy", v5)
empty_kv = save("k0.npy", np.zeros((1, 2, 0, 4), np.float32))
empty_q = save("q0.npy", np.zeros((1, 2, 0, 4), np.float32))
o, lse = path("o.npy"), path("lse.npy")

# kv_len 0: every row sees no key
attnc("run", g, "--in", f"q={q}", "--in", f"k={empty_kv}", "--in", f"v={empty_kv}", "--out", f"o={o}",
      "--out", f"lse={lse}")
if os.path.exists(o):
    oa, la = np.load(o), np.load(lse)
    if oa.shape != (1, 2, 3, 4) or (oa != 0).any() or (la != -np.inf).any():
        fail(f"kv_len 0: o {oa.shape} {oa.ravel()[:4]}, lse {la.ravel()}")
    os.remove(o)
# q_len 0: nothing to do, an empty o
attnc("run", g, "--in", f"q={empty_q}", "--in", f"k={k}", "--in", f"v={v}", "--out", f"o={o}")
if not os.path.exists(o) or np.load(o).shape != (1, 2, 0, 4):
    fail("q_len 0: no empty o written")
# batch 0: nothing to do, empty o and lse (forward and backward)
b0 = save("b0.npy", np.zeros((0, 2, 3, 4), np.float32))
attnc("run", g, "--in", f"q={b0}", "--in", f"k={b0}", "--in", f"v={b0}", "--out", f"o={o}", "--out", f"lse={lse}")
if not os.path.exists(o) or np.load(o).shape != (0, 2, 3, 4) or np.load(lse).shape != (0, 2, 3):
    fail("batch 0: no empty o and lse written")
attnc("run", g, "--grad", "--in", f"q={b0}", "--in", f"k={b0}", "--in", f"v={b0}", "--in", f"do={b0}",
      "--out", f"dk={o}")
if not os.path.exists(o) or np.load(o).shape != (0, 2, 3, 4):
    fail("batch 0: no empty dk written")

# --q-offset 0 puts query row 0 at position 0: under a causal mask it sees key 0 only
attnc("run", g, "--in", f"q={q}", "--in", f"k={k}", "--in", f"v={v}", "--out", f"o={o}", "--q-offset", "0")
if os.path.exists(o) and not np.allclose(np.load(o)[0, :, 0], v5[0, :, 0], atol=1e-6):
    fail("--q-offset 0: row 0 is not v[key 0]")

# messages: the command line's words, not Python's
u = spec("u.attn", "attention u { input i32 n[batch]; heads = 2; head_dim = 4; mask = k < n[b]; }\n")
n64 = save("n64.npy", np.array([3], np.int64))
attnc("run", u, "--in", f"q={q}", "--in", f"k={k}", "--in", f"v={v}", "--in", f"n={n64}", rc=1,
      err_has=["int32", "'<i4'"], err_lacks=["astype", "np."])
two = spec("two.attn", "attention one { heads = 1; head_dim = 4; }\nattention two { heads = 1; head_dim = 4; }\n")
attnc("check", two, rc=0)
attnc("bench", two, "--q-len", "4", "--kv-len", "4", "--reps", "1", rc=2, err_has=["one two", "--kernel"])
attnc("run", two, "--in", f"q={q}", rc=2, err_has=["--kernel"])
w = spec("w.attn", "param w = 3;\nattention a { heads = 2; head_dim = 4; mask = sliding(w); }\n")
attnc("check", w, "-D", "ww=3", rc=1, err_has=["<defines>: error: unknown define 'ww'"], err_lacks=["command line"])

# help texts agree with docs/cli.md: lse of MLA, float16 tensors, bench's --q-offset
for args, words in ((("help", "mla"), ["lse    [batch, heads, q_len]"]),
                    (("help", "run"), ["float32 or float16"]),
                    (("help", "bench"), ["[--q-offset N]"]),
                    (("help", "environment"), ["1..4096", "exit 2"])):
    p = subprocess.run([ATTNC, *args], capture_output=True, text=True, timeout=60)
    for word in words:
        if word not in p.stdout:
            fail(f"attnc {' '.join(args)}: lacks {word!r}:\n{p.stdout}")
# a bad ATTNC_COMPILE_THREADS refuses the compile with exit 2, as documented
h16 = save("q16.npy", np.ones((1, 2, 3, 4), np.float16))
p = subprocess.run([ATTNC, "run", w, "--in", f"q={h16}", "--in", f"k={h16}", "--in", f"v={h16}"],
                   capture_output=True, text=True, timeout=120, env=dict(os.environ, ATTNC_COMPILE_THREADS="0"))
if p.returncode != 2 or "ATTNC_COMPILE_THREADS" not in p.stderr:
    fail(f"ATTNC_COMPILE_THREADS=0: exit {p.returncode}, expected 2 naming it:\n{p.stderr}")
attnc("run", w, "--in", f"q={h16}", "--in", f"k={h16}", "--in", f"v={h16}", rc=0)  # float16 for an f32 spec

# a generated mask: hundreds of cases joined by || (or &&), past the nesting limit of 200
# levels a chain would reach as the grammar groups it; the visible pairs and o are checked
offs = sorted(rng.choice(120, size=60, replace=False).tolist())
ors = " || ".join(f"q - k == {d}" for d in offs * 5)  # 300 terms (each offset 5 times)
gaps = sorted(rng.choice(120, size=250, replace=True).tolist())
ands = " && ".join(["k <= q"] + [f"q - k != {d}" for d in gaps])
n = 70
qn = rng.standard_normal((1, 2, n, 4)).astype(np.float32)
kn = rng.standard_normal((1, 2, n, 4)).astype(np.float32)
vn = rng.standard_normal((1, 2, n, 4)).astype(np.float32)
qi, ki, vi = save("qn.npy", qn), save("kn.npy", kn), save("vn.npy", vn)
d = np.arange(n)[:, None] - np.arange(n)[None, :]
for name, text, want in (("ors", ors, np.isin(d, offs)), ("ands", ands, (d >= 0) & ~np.isin(d, gaps))):
    f = spec(name + ".attn", f"attention {name} {{ heads = 2; head_dim = 4; mask = {text}; }}\n")
    p = attnc("mask", f, "--q-len", n, "--kv-len", n)
    grid = [ln for ln in p.stdout.splitlines() if len(ln) == n and set(ln) <= set("#.")]
    if np.array([[c == "#" for c in ln] for ln in grid]).reshape(-1).tolist() != want.reshape(-1).tolist():
        fail(f"{name}: the mask's visible pairs differ from the expression's")
    if os.path.exists(o):
        os.remove(o)
    attnc("run", f, "--in", f"q={qi}", "--in", f"k={ki}", "--in", f"v={vi}", "--out", f"o={o}")
    if os.path.exists(o):
        s = np.einsum("bhqd,bhkd->bhqk", qn.astype(np.float64), kn.astype(np.float64)) / 2.0
        s = np.where(want, s, -np.inf)
        m = np.max(s, axis=-1, keepdims=True)
        e = np.where(want, np.exp(s - np.where(np.isfinite(m), m, 0)), 0.0)
        den = e.sum(-1, keepdims=True)
        ref = np.einsum("bhqk,bhkd->bhqd", np.divide(e, den, out=np.zeros_like(e), where=den > 0), vn)
        err = np.abs(np.load(o) - ref).max()
        if err > 1e-5:
            fail(f"{name}: o differs from the reference by {err}")
        os.remove(o)

if failures:
    print(f"test_cli_user: {failures} failure(s); files in {TMP}", file=sys.stderr)
    sys.exit(1)
subprocess.run(["rm", "-rf", TMP])
print("test_cli_user: ok")
