"""The Python binding (python/attnc) against a NumPy float64 reference.

Run: ATTNC_LIB=build/libattnc.so PYTHONPATH=python /usr/bin/python3 tests/python/test_binding.py
"""
import gc
import os
import sys
import tempfile
import threading
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import attnc  # noqa: E402

RNG = np.random.default_rng(7)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def reference(q, k, v, mask=None, score=None, q_offset=None, scale=None):
    """o, lse in float64. mask(b, h, qpos[:, None], kpos[None, :]) -> bool array;
    score(s, b, h, qpos, kpos) -> the modified scores."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    B, H, Lq, D = q.shape
    KVH, Lk = k.shape[1], k.shape[2]
    off = Lk - Lq if q_offset is None else q_offset
    scale = 1 / np.sqrt(D) if scale is None else scale
    qpos = np.arange(Lq)[:, None] + off
    kpos = np.arange(Lk)[None, :]
    o = np.zeros((B, H, Lq, v.shape[3]))
    lse = np.full((B, H, Lq), -np.inf)
    for b in range(B):
        for h in range(H):
            kh = h // (H // KVH)
            s = q[b, h] @ k[b, kh].T * scale
            if score is not None:
                s = score(s, b, h, qpos, kpos)
            vis = np.broadcast_to(mask(b, h, qpos, kpos) if mask else True, s.shape)
            s = np.where(vis, s, -np.inf)
            m = s.max(axis=1, keepdims=True)
            m = np.where(np.isfinite(m), m, 0)
            p = np.exp(s - m)
            den = p.sum(axis=1, keepdims=True)
            o[b, h] = np.where(den > 0, (p @ v[b, kh]) / np.where(den > 0, den, 1), 0)
            lse[b, h] = np.where(den[:, 0] > 0, np.log(np.where(den[:, 0] > 0, den[:, 0], 1)) + m[:, 0], -np.inf)
    return o, lse


def causal(b, h, qp, kp):
    return kp <= qp


class Case(unittest.TestCase):
    def close(self, got, want, tol=2e-5):
        got = np.asarray(got, dtype=np.float64)
        self.assertEqual(got.shape, want.shape)
        fin = np.isfinite(want)
        self.assertTrue(np.array_equal(np.isfinite(got), fin), "inf pattern differs")
        self.assertTrue(np.array_equal(got[~fin], want[~fin]))
        err = np.abs(got[fin] - want[fin]).max(initial=0)
        self.assertLess(err, tol * max(1.0, np.abs(want[fin]).max(initial=0)))


class TestKernels(Case):
    @classmethod
    def setUpClass(cls):
        cls.causal = attnc.compile(
            "attention causal_mha { heads = 4; head_dim = 32; mask = causal; }")
        cls.gqa = attnc.compile(
            "attention gqa { heads = 8; kv_heads = 2; head_dim = 64; mask = causal; }", threads=2)

    def test_desc(self):
        k = self.gqa
        self.assertEqual((k.name, k.heads, k.kv_heads, k.qk_dim, k.v_dim, k.dtype),
                         ("gqa", 8, 2, 64, 64, "f32"))
        self.assertEqual(k.inputs, [])
        self.assertGreater(k.compile_ms, 0)
        self.assertIn("gqa", repr(k))

    def test_causal(self):
        q, k, v = rand(2, 4, 37, 32), rand(2, 4, 37, 32), rand(2, 4, 37, 32)
        o, lse = self.causal(q, k, v, return_lse=True)
        ro, rl = reference(q, k, v, causal)
        self.assertEqual(o.dtype, np.float32)
        self.close(o, ro)
        self.close(lse, rl)

    def test_gqa_decode_and_prefill(self):
        for lq, lk in ((1, 77), (5, 77), (70, 70)):
            q, k, v = rand(2, 8, lq, 64), rand(2, 2, lk, 64), rand(2, 2, lk, 64)
            ro, rl = reference(q, k, v, causal)
            o, lse = self.gqa(q, k, v, return_lse=True)
            self.close(o, ro)
            self.close(lse, rl)
            self.close(self.gqa(q, k, v, threads=1), ro)

    def test_q_offset(self):
        q, k, v = rand(1, 4, 20, 32), rand(1, 4, 12, 32), rand(1, 4, 12, 32)
        for off in (0, -5, 3, 100):
            o, lse = self.causal(q, k, v, q_offset=off, return_lse=True)
            ro, rl = reference(q, k, v, causal, q_offset=off)
            self.close(o, ro)
            self.close(lse, rl)
        o, lse = self.causal(q, k, v, q_offset=-30, return_lse=True)  # no row sees a key
        self.assertTrue(np.all(o == 0))
        self.assertTrue(np.all(np.isneginf(lse)))

    def test_strided_views(self):
        B, H, L, D = 2, 4, 29, 32
        ro_args = None
        # q stored [batch, seq, heads, dim] and transposed: strided, last axis contiguous
        q_bshd = rand(B, L, H, D)
        q = q_bshd.transpose(0, 2, 1, 3)
        # k every other row of a longer buffer; v the first half of a wider one
        k_big = rand(B, H, 2 * L, D)
        k = k_big[:, :, ::2]
        v_wide = rand(B, H, L, 2 * D)
        v = v_wide[..., :D]
        for a in (q, k, v):
            self.assertFalse(a.flags.c_contiguous)
            self.assertIs(attnc._as_storage("x", a, "f32"), a)  # passed as it is, no copy
        ro_args = reference(q, k, v, causal)
        self.close(self.causal(q, k, v), ro_args[0])
        # a broadcast K/V head (stride 0) is fine too
        kb = np.broadcast_to(rand(B, 1, L, D), (B, H, L, D))
        self.close(self.causal(q, kb, v), reference(q, kb, v, causal)[0])
        # views that must be copied: last axis strided, negative strides, float64, misaligned
        qt = np.ascontiguousarray(q.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
        self.assertNotEqual(qt.strides[-1], 4)
        self.close(self.causal(qt, k, v), ro_args[0])
        qr = np.ascontiguousarray(q[:, :, ::-1])[:, :, ::-1]
        self.close(self.causal(qr, k, v), ro_args[0])
        self.close(self.causal(q.astype(np.float64), k, v), ro_args[0])
        raw = np.zeros(q.size * 4 + 1, np.uint8)
        qm = raw[1:].view(np.float32).reshape(q.shape)
        qm[...] = q
        self.assertNotEqual(qm.ctypes.data % 4, 0)
        self.close(self.causal(qm, k, v), ro_args[0])

    def test_input_mask_unilm(self):
        kern = attnc.compile("""
            attention unilm {
                input i32 src_len[batch];
                heads = 2; head_dim = 16;
                mask = k < src_len[b] || k <= q;
            }""")
        self.assertEqual(kern.inputs, ["src_len"])
        self.assertEqual(kern.input_decls, {"src_len": ("i32", ("batch",))})
        B, L = 3, 41
        src = [5, 0, 41]
        q, k, v = rand(B, 2, L, 16), rand(B, 2, L, 16), rand(B, 2, L, 16)
        o, lse = kern(q, k, v, src_len=src, return_lse=True)  # a list: converted to int32
        ro, rl = reference(q, k, v, lambda b, h, qp, kp: (kp < src[b]) | (kp <= qp))
        self.close(o, ro)
        self.close(lse, rl)
        with self.assertRaises(attnc.AttnError) as cm:
            kern(q, k, v)  # the input is missing
        self.assertEqual(cm.exception.code, attnc.ATTN_ERR_INPUT)

    def test_score_mod_and_float_input(self):
        kern = attnc.compile("""
            attention alibi_capped {
                input f32 slope[heads];
                heads = 4; kv_heads = 2; head_dim = 32;
                mask  = sliding(9);
                score = 20.0 * tanh((score - slope[h] * (q - k)) / 20.0);
            }""")
        slope = np.array([0.5, 0.25, 0.125, 0.0625], np.float32)
        q, k, v = rand(2, 4, 23, 32) * 3, rand(2, 2, 30, 32) * 3, rand(2, 2, 30, 32)

        def score(s, b, h, qp, kp):
            return 20.0 * np.tanh((s - slope[h] * (qp - kp)) / 20.0)

        o, lse = kern(q, k, v, slope=slope, return_lse=True)
        ro, rl = reference(q, k, v, lambda b, h, qp, kp: (kp <= qp) & (qp - kp < 9), score)
        self.close(o, ro, 5e-5)
        self.close(lse, rl, 5e-5)

    def test_defines(self):
        kern = attnc.compile("param w = 3;\nattention win { heads = 2; head_dim = 16; mask = sliding(w); }",
                             defines={"w": 7})
        q, k, v = rand(1, 2, 19, 16), rand(1, 2, 19, 16), rand(1, 2, 19, 16)
        self.close(kern(q, k, v), reference(q, k, v, lambda b, h, qp, kp: (kp <= qp) & (qp - kp < 7))[0])

    def test_file_and_kernel_choice(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "two.attn")
            with open(path, "w") as f:
                f.write("attention one { heads = 2; head_dim = 16; }\n"
                        "attention two { heads = 2; head_dim = 16; mask = causal; }\n")
            with self.assertRaises(attnc.AttnError) as cm:
                attnc.compile(path)
            self.assertEqual(cm.exception.code, attnc.ATTN_ERR_ARG)
            kern = attnc.compile(path, kernel="two")
            self.assertEqual(kern.name, "two")
            q = rand(1, 2, 9, 16)
            self.close(kern(q, q, q), reference(q, q, q, causal)[0])

    def test_f16_and_bf16(self):
        q, k, v = rand(1, 4, 17, 32), rand(1, 2, 40, 32), rand(1, 2, 40, 32)
        for dt, np_in, tol in (("f16", np.float16, 2e-2), ("bf16", None, 6e-2)):
            kern = attnc.compile("attention s { heads = 4; kv_heads = 2; head_dim = 32; "
                                 "mask = causal; dtype = %s; }" % dt)
            self.assertEqual(kern.dtype, dt)
            if dt == "f16":
                qs, ks, vs = (x.astype(np.float16) for x in (q, k, v))
                back = lambda x: x.astype(np.float64)  # noqa: E731
                out_dtype = np.float16
            else:
                qs, ks, vs = (attnc.from_float32(x) for x in (q, k, v))
                back = attnc.to_float32
                out_dtype = np.uint16
            ro, rl = reference(back(qs), back(ks), back(vs), causal)
            o, lse = kern(qs, ks, vs, return_lse=True)
            self.assertEqual(o.dtype, out_dtype)
            self.close(back(o), ro, tol)
            self.close(lse, rl, 1e-3)
            # float32 arrays are converted to the storage type
            self.close(back(kern(q, k, v)), ro, tol)
            # a strided f16/bf16 view is passed as it is
            qv = np.ascontiguousarray(qs.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
            self.assertIs(attnc._as_storage("q", qv, dt), qv)
            self.close(back(kern(qv, ks, vs)), ro, tol)
        with self.assertRaises(attnc.AttnError) as cm:
            kern(q.astype(np.int16), k, v)  # bf16 wants uint16 bits or floats
        self.assertEqual(cm.exception.code, attnc.ATTN_ERR_DTYPE)

    def test_precision_modes(self):
        # compute = bf16 / int8 take the same arrays; kv_dtype = bf16 takes bf16 bits (or floats) for k, v
        q, k, v = rand(1, 4, 33, 64), rand(1, 2, 50, 64), rand(1, 2, 50, 64)
        ro, _ = reference(q, k, v, causal)
        for comp, tol in (("bf16", 2e-2), ("int8", 6e-2)):
            kern = attnc.compile("attention p { heads = 4; kv_heads = 2; head_dim = 64; mask = causal; "
                                 "compute = %s; }" % comp)
            o = kern(q, k, v)
            self.assertEqual(o.dtype, np.float32)
            self.close(o, ro, tol)
            self.assertGreater(np.abs(o - ro).max(), 1e-5)  # it did round
            self.assertFalse(kern.has_backward)
        kern = attnc.compile("attention p { heads = 4; kv_heads = 2; head_dim = 64; mask = causal; "
                             "kv_dtype = bf16; }")
        self.assertEqual((kern.dtype, kern.kv_dtype), ("f32", "bf16"))
        kb, vb = attnc.from_float32(k), attnc.from_float32(v)
        rb, _ = reference(q, attnc.to_float32(kb), attnc.to_float32(vb), causal)
        self.close(kern(q, kb, vb), rb, 2e-5)
        self.close(kern(q, k, v), rb, 2e-5)  # floats converted to bf16
        kern = attnc.compile("attention p { heads = 4; kv_heads = 2; head_dim = 64; mask = causal; "
                             "kv_dtype = int8; }")
        self.assertEqual(kern.kv_dtype, "int8")
        self.assertEqual(kern.inputs[-2:], ["k_scale", "v_scale"])
        ks, vs = np.abs(k).max(-1) / 127, np.abs(v).max(-1) / 127
        k8, v8 = (np.rint(x / s[..., None]).astype(np.int8) for x, s in ((k, ks), (v, vs)))
        r8, _ = reference(q, k8 * ks[..., None], v8 * vs[..., None], causal)
        self.close(kern(q, k8, v8, k_scale=ks, v_scale=vs), r8, 2e-5)
        self.assertLess(np.abs(r8 - ro).max(), 0.1)  # int8 K/V: close to the f32 attention
        with self.assertRaises(attnc.AttnError) as cm:
            kern(q, k, v, k_scale=ks, v_scale=vs)  # floats are not quantized silently
        self.assertEqual(cm.exception.code, attnc.ATTN_ERR_DTYPE)

    def test_bf16_conversion(self):
        x = np.array([1.0, -2.5, 3.1415927, 1e-30, 65504.0, np.inf, -np.inf], np.float32)
        self.assertTrue(np.allclose(attnc.to_float32(attnc.from_float32(x)), x, rtol=1 / 128, atol=1e-30))
        self.assertTrue(np.isnan(attnc.to_float32(attnc.from_float32(np.array([np.nan], np.float32))))[0])

    def test_threads_share_a_kernel(self):
        q, k, v = rand(1, 8, 33, 64), rand(1, 2, 33, 64), rand(1, 2, 33, 64)
        ro = reference(q, k, v, causal)[0]
        results = []

        def work():
            for _ in range(5):
                results.append(self.gqa(q, k, v))

        ts = [threading.Thread(target=work) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(len(results), 15)
        for o in results:
            self.close(o, ro)

    def test_gc_frees_kernels(self):
        for _ in range(3):
            kern = attnc.compile("attention g { heads = 2; head_dim = 16; }")
            q = rand(1, 2, 4, 16)
            kern(q, q, q)
            del kern
            gc.collect()
        kern = attnc.compile("attention g { heads = 2; head_dim = 16; }")
        if not os.environ.get("ATTNC_NO_CACHE"):
            self.assertTrue(kern.cache_hit)  # the suite's cache: compiled above, loaded now
        kern.close()
        kern.close()  # twice is fine
        with self.assertRaises(attnc.AttnError):
            kern(q, q, q)


class TestErrors(Case):
    def test_spec_error(self):
        with self.assertRaises(attnc.SpecError) as cm:
            attnc.compile("attention bad { heads = 4; head_dim = 32; mask = k <= qq; }")
        e = cm.exception
        self.assertEqual(e.code, attnc.ATTN_ERR_SPEC)
        self.assertIn("error:", e.diagnostics)
        self.assertIn("qq", e.diagnostics)
        self.assertIn("^", e.diagnostics)
        self.assertIsInstance(e, attnc.AttnError)

    def test_io_error(self):
        with self.assertRaises(attnc.AttnError) as cm:
            attnc.compile("/nonexistent/dir/x.attn")
        self.assertEqual(cm.exception.code, attnc.ATTN_ERR_IO)
        self.assertNotIsInstance(cm.exception, attnc.SpecError)

    def test_bad_define(self):
        with self.assertRaises(attnc.AttnError) as cm:
            attnc.compile("attention a { heads = 2; head_dim = 16; }", defines={"nope": 1})
        self.assertIn(cm.exception.code, (attnc.ATTN_ERR_ARG, attnc.ATTN_ERR_SPEC))

    def test_call_errors(self):
        kern = attnc.compile("attention e { heads = 4; head_dim = 32; }")
        q, k = rand(1, 4, 8, 32), rand(1, 4, 8, 32)
        cases = [
            ((q[:, :3], k, k), {}, attnc.ATTN_ERR_SHAPE),
            ((q, k[..., :16], k), {}, attnc.ATTN_ERR_SHAPE),
            ((q[0], k, k), {}, attnc.ATTN_ERR_RANK),
            ((q[None], k, k), {}, attnc.ATTN_ERR_RANK),
            ((q, k, k), {"nosuch": 1}, attnc.ATTN_ERR_INPUT),
            ((q, k, k), {"q_offset": 2 ** 50}, attnc.ATTN_ERR_OFFSET),
            ((q.astype(np.complex64), k, k), {}, attnc.ATTN_ERR_DTYPE),
        ]
        for args, kw, code in cases:
            with self.assertRaises(attnc.AttnError) as cm:
                kern(*args, **kw)
            self.assertEqual(cm.exception.code, code, str(cm.exception))
            self.assertTrue(cm.exception.message)
            self.assertTrue(cm.exception.status.startswith("ATTN_ERR"), cm.exception.status)

    def test_index_error(self):
        kern = attnc.compile("""
            attention docs {
                input i32 doc[batch, seq];
                input i32 start[4];
                heads = 2; head_dim = 16;
                mask = k >= start[doc[b, q]] && k <= q;
            }""")
        q = rand(1, 2, 6, 16)
        doc = np.array([[0, 0, 1, 1, 2, 9]], np.int32)  # 9 is outside start[4]
        with self.assertRaises(attnc.AttnError) as cm:
            kern(q, q, q, doc=doc, start=np.array([0, 2, 4, 6], np.int32))
        self.assertEqual(cm.exception.code, attnc.ATTN_ERR_INDEX)


if __name__ == "__main__":
    if "ATTNC_CACHE_DIR" not in os.environ:  # never the user's real cache
        os.environ["ATTNC_CACHE_DIR"] = tempfile.mkdtemp(prefix="attnc-pytest-")
    unittest.main(verbosity=1)
