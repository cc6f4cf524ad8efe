"""The Python binding as a user meets it: MLA calls against a float64 reference, empty calls,
integer arguments and inputs that must not wrap, close() while another thread runs the kernel,
messages in Python's own words, and docstrings that state shapes and dtypes.

Run: ATTNC_LIB=build/libattnc.so PYTHONPATH=python /usr/bin/python3 tests/python/test_user.py
"""
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import attnc  # noqa: E402

RNG = np.random.default_rng(21)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def ref_mla(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, q_offset=None, mask=None):
    """MLA in float64, by up-projection: per head, k = [c_kv . w_uk[h] | k_rope],
    v = c_kv . w_uv[h], scores scaled by 1/sqrt(nope + rope). Returns o, lse."""
    qn, qr, ckv, kr, wuk, wuv = (np.asarray(x, np.float64) for x in (q_nope, q_rope, c_kv, k_rope, w_uk, w_uv))
    B, H, Lq, N = qn.shape
    Lk, P = ckv.shape[1], qr.shape[3]
    off = Lk - Lq if q_offset is None else q_offset
    qpos = np.arange(Lq)[:, None] + off
    kpos = np.arange(Lk)[None, :]
    vis = mask(qpos, kpos) if mask else np.ones((Lq, Lk), bool)
    o = np.zeros((B, H, Lq, wuv.shape[2]))
    lse = np.full((B, H, Lq), -np.inf)
    for b in range(B):
        for h in range(H):
            k = np.concatenate([ckv[b] @ wuk[h], kr[b]], axis=1)
            v = ckv[b] @ wuv[h]
            q = np.concatenate([qn[b, h], qr[b, h]], axis=1)
            s = np.where(vis, q @ k.T / np.sqrt(N + P), -np.inf)
            for i in range(Lq):
                if not np.isfinite(s[i]).any():
                    continue
                m = s[i].max()
                p = np.exp(s[i] - m)
                o[b, h, i] = p @ v / p.sum()
                lse[b, h, i] = m + np.log(p.sum())
    return o, lse


def causal(qp, kp):
    return kp <= qp


MLA_SPEC = """attention mla_py {
    heads = 3;
    mla { kv_rank = 32; rope_dim = 8; nope_dim = 16; v_dim = 16; }
    mask = causal;
    absorb = auto;
}"""


class Case(unittest.TestCase):
    def close(self, got, want, tol=2e-5):
        got = np.asarray(got, dtype=np.float64)
        self.assertEqual(got.shape, want.shape)
        fin = np.isfinite(want)
        self.assertTrue(np.array_equal(np.isfinite(got), fin), "inf pattern differs")
        self.assertTrue(np.array_equal(got[~fin], want[~fin]))
        err = np.abs(got[fin] - want[fin]).max(initial=0)
        self.assertLess(err, tol * max(1.0, np.abs(want[fin]).max(initial=0)))


class TestMla(Case):
    @classmethod
    def setUpClass(cls):
        cls.kern = attnc.compile(MLA_SPEC)

    def tensors(self, B, Lq, Lk):
        H, R, P, N, V = 3, 32, 8, 16, 16
        return dict(q_nope=rand(B, H, Lq, N), q_rope=rand(B, H, Lq, P), c_kv=rand(B, Lk, R),
                    k_rope=rand(B, Lk, P), w_uk=rand(H, R, N, scale=0.3), w_uv=rand(H, R, V, scale=0.3))

    def test_describes_mla(self):
        k = self.kern
        self.assertTrue(k.is_mla)
        self.assertEqual((k.heads, k.kv_rank, k.rope_dim, k.nope_dim, k.v_dim), (3, 32, 8, 16, 16))
        self.assertEqual(k.variants, ("up-projected", "absorbed"))
        r = repr(k)
        for word in ("MLA", "kv_rank 32", "rope_dim 8", "nope_dim 16", "v_dim 16"):
            self.assertIn(word, r)
        self.assertNotIn("kv_heads", r)
        s = str(k)
        self.assertIn("c_kv    [batch, kv_len, 32]", s)
        self.assertIn("w_uk    [3, 32, 16]", s)

    def test_against_reference(self):
        for B, Lq, Lk, q_offset in ((2, 1, 37, None), (1, 19, 19, None), (2, 7, 20, 0), (1, 5, 9, -3)):
            t = self.tensors(B, Lq, Lk)
            ro, rl = ref_mla(**t, q_offset=q_offset, mask=causal)
            for absorb in (None, True, False, "on", "off"):
                o, lse = self.kern(**t, absorb=absorb, return_lse=True, q_offset=q_offset)
                self.close(o, ro, 1e-4)
                self.close(lse, rl, 1e-4)
                self.assertEqual(o.dtype, np.float32)
            # positional, in the C API's order; strided views; threads
            names = ("q_nope", "q_rope", "c_kv", "k_rope", "w_uk", "w_uv")
            qn = np.ascontiguousarray(t["q_nope"].transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
            o = self.kern(qn, *[t[n] for n in names[1:]], q_offset=q_offset, threads=1)
            self.close(o, ro, 1e-4)

    def test_absorb_at_compile(self):
        t = self.tensors(1, 4, 12)
        ro = ref_mla(**t, mask=causal)[0]
        for absorb, variants in ((True, ("absorbed",)), ("off", ("up-projected",))):
            k = attnc.compile(MLA_SPEC, absorb=absorb)
            self.assertEqual(k.variants, variants)
            self.close(k(**t), ro, 1e-4)
        k = attnc.compile(MLA_SPEC, absorb=False)
        with self.assertRaises(attnc.AttnError) as cm:
            k(**t, absorb=True)  # that variant was not built
        self.assertEqual(cm.exception.code, attnc.ATTN_ERR_ARG)

    def test_errors_name_the_tensors(self):
        t = self.tensors(1, 2, 5)
        with self.assertRaises(attnc.AttnError) as cm:
            self.kern(t["q_nope"], t["q_rope"])
        self.assertIn("c_kv", str(cm.exception))
        with self.assertRaises(attnc.AttnError) as cm:
            self.kern(**dict(t, c_kv=rand(1, 5, 31)))
        self.assertIn("c_kv", str(cm.exception))
        with self.assertRaises(attnc.AttnError) as cm:
            self.kern(**t, absorb="sometimes")
        self.assertIn("absorb", str(cm.exception))
        plain = attnc.compile("attention p { heads = 2; head_dim = 8; }")
        with self.assertRaises(attnc.AttnError) as cm:
            plain(q_nope=1, q_rope=2)
        self.assertIn("MLA", str(cm.exception))

    def test_empty(self):
        t = self.tensors(2, 3, 0)
        o, lse = self.kern(**t, return_lse=True)
        self.assertEqual(o.shape, (2, 3, 3, 16))
        self.assertTrue((o == 0).all() and (lse == -np.inf).all())
        o = self.kern(**self.tensors(2, 0, 4))
        self.assertEqual(o.shape, (2, 3, 0, 16))


class TestEmpty(Case):
    def test_kv_len_0_and_q_len_0(self):
        kern = attnc.compile("attention e { input i32 n[batch]; heads = 4; kv_heads = 2; head_dim = 8; "
                             "mask = k < n[b]; }")
        q, kv = rand(2, 4, 3, 8), rand(2, 2, 0, 8)
        o, lse = kern(q, kv, kv, n=[0, 0], return_lse=True)
        self.assertEqual(o.shape, (2, 4, 3, 8))
        self.assertTrue((o == 0).all() and (lse == -np.inf).all())
        o, lse = kern(rand(2, 4, 0, 8), rand(2, 2, 5, 8), rand(2, 2, 5, 8), n=[5, 5], return_lse=True)
        self.assertEqual((o.shape, lse.shape), ((2, 4, 0, 8), (2, 4, 0)))


class TestIntegers(Case):
    """Python integers and inputs are range-checked, never wrapped or truncated."""

    @classmethod
    def setUpClass(cls):
        cls.kern = attnc.compile("""
            attention win {
                input i32 w[batch];
                input f32 bias[seq];
                heads = 2; head_dim = 8;
                mask = k <= q && q - k < w[b];
                score = score + bias[k];
            }""")

    Q = rand(1, 2, 6, 8)

    def run_with(self, **kw):
        q = self.Q
        args = dict(w=np.array([3], np.int32), bias=np.zeros(6, np.float32))
        args.update(kw)
        return self.kern(q, q, q, **args)

    def expect(self, code, words, **kw):
        with self.assertRaises(attnc.AttnError) as cm:
            self.run_with(**kw)
        self.assertEqual(cm.exception.code, code, str(cm.exception))
        for w in words:
            self.assertIn(w, str(cm.exception))

    def test_i32_inputs(self):
        ok = self.run_with()
        self.assertTrue(np.array_equal(self.run_with(w=np.array([3], np.int64)), ok))
        self.assertTrue(np.array_equal(self.run_with(w=[3]), ok))
        self.expect(attnc.ATTN_ERR_INPUT, ["'w'", "i32", "4294967299"], w=np.array([2 ** 32 + 3], np.int64))
        self.expect(attnc.ATTN_ERR_INPUT, ["'w'", "i32"], w=[-2 ** 31 - 1])
        self.expect(attnc.ATTN_ERR_INPUT, ["'w'", "i32", "float64"], w=np.array([0.9]))
        self.expect(attnc.ATTN_ERR_INPUT, ["'w'", "i32"], w=np.array([np.nan]))
        self.expect(attnc.ATTN_ERR_INPUT, ["'w'", "i32"], w=np.array([3.0], np.float32))
        self.expect(attnc.ATTN_ERR_INPUT, ["'w'"], w=[2 ** 70])  # an object array

    def test_f32_inputs(self):
        ok = self.run_with()
        self.assertTrue(np.array_equal(self.run_with(bias=np.zeros(6)), ok))
        self.assertTrue(np.array_equal(self.run_with(bias=[0] * 6), ok))
        self.expect(attnc.ATTN_ERR_INPUT, ["'bias'", "f32"], bias=np.array([1e300] + [0.0] * 5))
        self.expect(attnc.ATTN_ERR_INPUT, ["'bias'", "f32"], bias=np.array([2 ** 24 + 1] + [0] * 5, np.int64))

    def test_f32_inputs_round_to_nearest(self):
        # float64 values are rounded to the nearest float32; tiny ones become 0, huge ones are
        # refused, infinities pass as they are
        f32 = self.run_with(bias=np.full(6, 0.1, np.float32))
        self.assertTrue(np.array_equal(self.run_with(bias=np.full(6, 0.1)), f32))
        self.assertTrue(np.array_equal(self.run_with(bias=np.full(6, 1e-50)), self.run_with()))
        self.expect(attnc.ATTN_ERR_INPUT, ["'bias'", "f32", "overflows"], bias=np.array([0.0] * 5 + [1e39]))
        o = self.run_with(bias=np.array([-np.inf] * 3 + [0.0] * 3))
        self.assertTrue(np.isfinite(o).all())

    def test_scalar_inputs(self):
        kern = attnc.compile("attention s { input i32 n; input f32 t; heads = 1; head_dim = 4; "
                             "mask = k < n; score = score * t; }")
        q = rand(1, 1, 3, 4)
        o = kern(q, q, q, n=2, t=1.0)
        self.assertTrue(np.array_equal(o, kern(q, q, q, n=np.int64(2), t=np.float32(1))))
        for kw, word in ((dict(n=2 ** 40, t=1.0), "'n'"), (dict(n=1.5, t=1.0), "'n'"), (dict(n=2, t=1e300), "'t'")):
            with self.assertRaises(attnc.AttnError) as cm:
                kern(q, q, q, **kw)
            self.assertIn(word, str(cm.exception))

    def test_options(self):
        q = rand(1, 2, 6, 8)
        args = dict(w=np.array([3], np.int32), bias=np.zeros(6, np.float32))
        for kw, code, word in (({"q_offset": 2 ** 64}, attnc.ATTN_ERR_OFFSET, "q_offset"),
                               ({"q_offset": 2 ** 63}, attnc.ATTN_ERR_OFFSET, "q_offset"),
                               ({"q_offset": -2 ** 63}, attnc.ATTN_ERR_OFFSET, "q_offset"),
                               ({"q_offset": 2 ** 40 + 1}, attnc.ATTN_ERR_OFFSET, "q_offset"),
                               ({"q_offset": 1.5}, attnc.ATTN_ERR_OFFSET, "q_offset"),
                               ({"threads": 2 ** 32 + 1}, attnc.ATTN_ERR_ARG, "threads"),
                               ({"threads": -1}, attnc.ATTN_ERR_ARG, "threads"),
                               ({"threads": 1.0}, attnc.ATTN_ERR_ARG, "threads")):
            with self.assertRaises(attnc.AttnError) as cm:
                self.kern(q, q, q, **kw, **args)
            self.assertEqual(cm.exception.code, code, kw)
            self.assertIn(word, str(cm.exception))
        # in range, as NumPy integers too
        self.kern(q, q, q, q_offset=np.int64(2), threads=np.int32(1), **args)
        for kw in ({"threads": 2 ** 32 + 1}, {"compile_threads": -1}, {"opt_level": 7}, {"threads": "2"}):
            with self.assertRaises(attnc.AttnError):
                attnc.compile("attention t { heads = 1; head_dim = 4; }", **kw)


class TestTensorDtypes(Case):
    """q, k, v (and MLA's tensors) must hold floats: integers are refused, never read as numbers."""

    def test_integer_tensors_refused(self):
        kern = attnc.compile("attention t { heads = 2; head_dim = 8; mask = causal; }")
        q = rand(1, 2, 4, 8)
        for name in ("q", "k", "v"):
            for dt in (np.int64, np.int32, np.uint16, np.bool_):
                t = dict(q=q, k=q, v=q)
                t[name] = q.astype(dt)
                with self.assertRaises(attnc.AttnError) as cm:
                    kern(**t)
                self.assertEqual(cm.exception.code, attnc.ATTN_ERR_DTYPE)
                self.assertIn(name + ":", str(cm.exception))
                self.assertIn(np.dtype(dt).name, str(cm.exception))
        with self.assertRaises(attnc.AttnError) as cm:
            kern(q, q.view(np.uint16)[..., ::2].copy(), q)
        self.assertIn("bf16", str(cm.exception))
        # float64 and float16 are converted (rounded to float32)
        o = kern(q, q, q)
        self.assertTrue(np.array_equal(kern(q.astype(np.float64), q, q), o))
        self.close(kern(q.astype(np.float16), q, q), o.astype(np.float64), 1e-2)

    def test_integer_mla_tensors_refused(self):
        kern = attnc.compile(MLA_SPEC)
        t = TestMla.tensors(None, 1, 2, 5)
        t["c_kv"] = np.ones(t["c_kv"].shape, np.int64)
        with self.assertRaises(attnc.AttnError) as cm:
            kern(**t)
        self.assertEqual(cm.exception.code, attnc.ATTN_ERR_DTYPE)
        self.assertIn("c_kv:", str(cm.exception))


class TestDocumentedIdioms(Case):
    """What docs/language.md says about short-circuits, query-row inputs and large positions."""

    def test_guard_first(self):
        # q_len > kv_len: the first queries sit at negative positions
        q, kv = rand(1, 2, 6, 8), rand(1, 2, 4, 8)
        doc = np.zeros((1, 4), np.int32)
        first = attnc.compile("attention g { input i32 doc[batch, seq]; heads = 2; head_dim = 8; "
                              "mask = k <= q && doc[b, k] == doc[b, q]; }")
        o = first(q, kv, kv, doc=doc)
        self.assertTrue((o[:, :, :2] == 0).all() and (o[:, :, 2:] != 0).any())
        last = attnc.compile("attention g { input i32 doc[batch, seq]; heads = 2; head_dim = 8; "
                             "mask = doc[b, k] == doc[b, q] && k <= q; }")
        with self.assertRaises(attnc.AttnError) as cm:
            last(q, kv, kv, doc=doc)
        self.assertEqual(cm.exception.code, attnc.ATTN_ERR_INDEX)
        # where both run, the same result
        q = rand(1, 2, 4, 8)
        self.assertTrue(np.array_equal(first(q, kv, kv, doc=doc), last(q, kv, kv, doc=doc)))

    def test_input_by_query_row(self):
        kern = attnc.compile("attention r { input f32 qbias[batch, q_len]; heads = 1; head_dim = 4; "
                             "score = score + qbias[b, q - (kv_len - q_len)] * k; }")
        plain = attnc.compile("attention p { input f32 c; heads = 1; head_dim = 4; score = score + c * k; }")
        q, kv = rand(1, 1, 3, 4), rand(1, 1, 7, 4)
        qbias = np.array([[0.5, -1.0, 2.0]], np.float32)
        o = kern(q, kv, kv, qbias=qbias)
        for i in range(3):  # row i gets its own bias
            self.close(o[:, :, i:i + 1], plain(q[:, :, i:i + 1], kv, kv, c=qbias[0, i], q_offset=4 + i)
                       .astype(np.float64), 1e-6)

    def test_large_positions(self):
        q, kv = rand(1, 1, 2, 8), rand(1, 1, 64, 8)
        far = attnc.compile("attention a { heads = 1; head_dim = 8; score = score - 0.5 * (q - k); }")
        near = attnc.compile("attention a { heads = 1; head_dim = 8; score = score + 0.5 * (k - kv_len); }")
        at0 = near(q, kv, kv, q_offset=0)
        self.close(near(q, kv, kv, q_offset=10 ** 6), at0.astype(np.float64), 1e-6)
        self.assertGreater(np.abs(far(q, kv, kv, q_offset=10 ** 6) - at0).max(), 1e-3)


class TestClose(unittest.TestCase):
    def test_close_while_running(self):
        """close() on one thread while others run the kernel waits for them (run in a child:
        before, this crashed the process)."""
        script = textwrap.dedent("""
            import threading, time, numpy as np, attnc
            kern = attnc.compile("attention c { heads = 8; head_dim = 64; mask = causal; }", threads=1)
            q = np.random.default_rng(1).standard_normal((1, 8, 512, 64)).astype(np.float32)
            want = kern(q, q, q)
            started, results = threading.Barrier(4), []
            def work():
                started.wait()
                for _ in range(200):
                    try:
                        o = kern(q, q, q)
                    except attnc.AttnError as e:
                        results.append(("closed", e.code))
                        return
                    results.append(("ok", bool(np.array_equal(o, want))))
            ts = [threading.Thread(target=work) for _ in range(3)]
            for t in ts: t.start()
            started.wait()
            while len(results) < 3:  # the threads are in their loops: calls are running
                time.sleep(0.0005)
            kern.close()
            for t in ts: t.join()
            assert all(r == ("ok", True) or r == ("closed", attnc.ATTN_ERR_ARG) for r in results), results
            assert ("closed", attnc.ATTN_ERR_ARG) in results, results
            print("closed cleanly", len(results))
        """)
        for _ in range(3):
            p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("closed cleanly", p.stdout)

    def test_context_manager(self):
        with attnc.compile("attention c { heads = 1; head_dim = 4; }") as kern:
            q = rand(1, 1, 2, 4)
            kern(q, q, q)
        with self.assertRaises(attnc.AttnError) as cm:
            kern(q, q, q)
        self.assertEqual(cm.exception.code, attnc.ATTN_ERR_ARG)
        self.assertIn("the kernel is closed", str(cm.exception))

    def test_attnc_lib_that_does_not_load(self):
        """A wrong ATTNC_LIB says that path failed and why, not to set ATTNC_LIB."""
        with tempfile.TemporaryDirectory() as d:
            junk = os.path.join(d, "libattnc.so")
            with open(junk, "w") as f:
                f.write("not a library")
            for path, why in ((os.path.join(d, "missing.so"), "does not exist"), (junk, "did not load")):
                p = subprocess.run([sys.executable, "-c", "import attnc; attnc.load_library()"],
                                   capture_output=True, text=True, timeout=60,
                                   env=dict(os.environ, ATTNC_LIB=path, PYTHONPATH=os.pathsep.join(sys.path)))
                self.assertNotEqual(p.returncode, 0)
                self.assertIn("ATTNC_LIB is '%s', which %s" % (path, why), p.stderr)
                self.assertNotIn("set ATTNC_LIB", p.stderr)


class TestMessages(unittest.TestCase):
    """Messages speak Python: no command-line options, positions of index errors."""

    CLI_WORDS = ("--kernel", "-D ", "--in ", "--out", ".npy")

    def assertPythonic(self, text):
        for w in self.CLI_WORDS:
            self.assertNotIn(w, text)

    def test_kernel_choice(self):
        with self.assertRaises(attnc.AttnError) as cm:
            attnc.compile("attention one { heads = 1; head_dim = 4; }\nattention two { heads = 1; head_dim = 4; }")
        self.assertPythonic(str(cm.exception))
        self.assertIn("kernel=", str(cm.exception))
        self.assertIn("one two", str(cm.exception))

    def test_defines(self):
        with self.assertRaises(attnc.AttnError) as cm:
            attnc.compile("param w = 3;\nattention a { heads = 1; head_dim = 4; mask = sliding(w); }",
                          defines={"ww": 2})
        self.assertPythonic(str(cm.exception))
        self.assertIn("ww", str(cm.exception))
        # the location is neutral: no front end's words
        self.assertIn("<defines>: error: unknown define 'ww'", str(cm.exception))
        self.assertNotIn("command line", str(cm.exception))
        with self.assertRaises(attnc.AttnError) as cm:
            attnc.compile("param w = 3;\nattention a { heads = 1; head_dim = 4; mask = sliding(w); }",
                          defines={"w": "x"})
        self.assertPythonic(str(cm.exception))
        # a bool define is spelled as the language spells it
        attnc.compile("param on = false;\nattention a { heads = 1; head_dim = 4; mask = on || k <= q; }",
                      defines={"on": True})

    def test_nul_in_spec_text(self):
        # the C API takes a NUL-terminated string: a NUL in the text must not cut the spec short
        # (the rest would be ignored silently); it is a spec error at its place, as in a file
        text = "attention a { heads = 1; head_dim = 4; }\n  \x00 attention b { garbage"
        with self.assertRaises(attnc.SpecError) as cm:
            attnc.compile(text)
        self.assertIn("<string>:2:3: error: invalid control character (byte 0x00)", str(cm.exception))

    def test_index_error_names_input_and_position(self):
        kern = attnc.compile("""
            attention r {
                input i32 rank[batch, 32];
                heads = 2; head_dim = 8;
                mask = rank[b, k] <= rank[b, q];
            }""")
        q = rand(1, 2, 40, 8)
        with self.assertRaises(attnc.AttnError) as cm:
            kern(q, q, q, rank=np.arange(32, dtype=np.int32)[None])
        e = cm.exception
        self.assertEqual(e.code, attnc.ATTN_ERR_INDEX)
        self.assertPythonic(str(e))
        for w in ("'rank'", "rank[b, k]", "[0, 32]", "[1, 32]", "k = 32", "b = 0"):
            self.assertIn(w, str(e))

    def test_index_error_from_a_value(self):
        kern = attnc.compile("""
            attention docs {
                input i32 doc[batch, seq];
                input i32 start[4];
                heads = 2; head_dim = 16;
                mask = k >= start[doc[b, q]] && k <= q;
            }""")
        q = rand(1, 2, 6, 16)
        with self.assertRaises(attnc.AttnError) as cm:
            kern(q, q, q, doc=np.array([[0, 0, 1, 1, 2, 9]], np.int32), start=np.array([0, 2, 4, 6], np.int32))
        self.assertIn("'start'", str(cm.exception))
        self.assertIn("[9]", str(cm.exception))
        self.assertIn("q = 5", str(cm.exception))


class TestDocs(unittest.TestCase):
    def test_help_states_shapes_and_dtypes(self):
        for doc in (attnc.__doc__, attnc.Kernel.__doc__, attnc.compile.__doc__):
            self.assertNotIn("SPEC", doc)
        for w in ("q [batch, heads, q_len, qk_dim]", "lse [batch, heads, q_len] float32", "c_kv [batch, kv_len, kv_rank]",
                  "w_uk [heads, kv_rank, nope_dim]", "q_offset", "kv_len - q_len", "float32", "absorb"):
            self.assertIn(w, attnc.Kernel.__doc__)
        for w in ("compile_threads", "ATTNC_COMPILE_THREADS", "absorb", "defines"):
            self.assertIn(w, attnc.compile.__doc__)
        for w in ("-inf", "kv_len = 0", "int32"):
            self.assertIn(w, attnc.__doc__)


if __name__ == "__main__":
    if "ATTNC_CACHE_DIR" not in os.environ:  # never the user's real cache
        os.environ["ATTNC_CACHE_DIR"] = tempfile.mkdtemp(prefix="attnc-pytest-")
    unittest.main(verbosity=1)
