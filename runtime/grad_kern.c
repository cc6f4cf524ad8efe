/* grad_kern.c — the backward's register-blocked inner kernels (runtime/grad.c drives them over
 * blocks of RT_GBQ query rows and RT_GBK keys): one small product shape that serves all five
 * of FlashAttention-2's products (S = Q·Kᵀ, dP = dO·Vᵀ, dV += Pᵀ·dO, dK += dSᵀ·Q, dQ += dS·K),
 * and the elementwise step between them (P = exp(s − lse), dS = P∘(dP − D)) with a vector exp.
 * Written with GCC/Clang vector types; on x86-64 the same source is compiled for AVX-512, AVX2
 * and the baseline and picked at load time (target_clones), as in gemm.c, so the runtime needs
 * no -march flag and builds for any target. Every sum runs in a fixed order: a result does not
 * depend on the thread that computes it. */
#include "rt_internal.h"

#include <math.h>
#include <string.h>

#define VW 16 /* floats per vector value */
typedef float vf __attribute__((vector_size(VW * sizeof(float)), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(VW * sizeof(int32_t)), aligned(4), may_alias));

/* macros, not functions: no vector value crosses a call (an ABI that varies by clone) */
#define VLOAD(p) (*(const vf *)(p))
#define VSTORE(p, v) (*(vf *)(p) = (v))
#define VSPLAT(x) ((x) - (vf){0}) /* x - 0 is x, -0 included: folds to a broadcast */
#define VSEL(m, a, b) ((vf)(((vi)(a) & (m)) | ((vi)(b) & ~(m)))) /* m ? a : b, m a compare */

/* C[r][c] (+)= sum_t cp[r][t * ts] * bp[t][c] for 4 rows r and NV vectors of columns from c0.
 * The accumulators stay in registers over all t. */
#define MM_BLOCK(NV)                                                                               \
    do {                                                                                           \
        vf acc[4][NV];                                                                             \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)                                        \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                                   \
                acc[r][v] = accumulate ? VLOAD(C[i + r] + c0 + VW * v) : (vf){0};                  \
        const float *a0 = cp[i], *a1 = cp[i + 1], *a2 = cp[i + 2], *a3 = cp[i + 3];                \
        for (int t = t0; t < t1; t++) {                                                            \
            const float *bt = bp[t] + c0;                                                          \
            vf bv[NV];                                                                             \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) bv[v] = VLOAD(bt + VW * v);       \
            float x0 = a0[t * ts], x1 = a1[t * ts], x2 = a2[t * ts], x3 = a3[t * ts];              \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                                 \
                acc[0][v] += x0 * bv[v];                                                           \
                acc[1][v] += x1 * bv[v];                                                           \
                acc[2][v] += x2 * bv[v];                                                           \
                acc[3][v] += x3 * bv[v];                                                           \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)                                        \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                                   \
                VSTORE(C[i + r] + c0 + VW * v, acc[r][v]);                                         \
    } while (0)

RT_CLONES
void rt_grad_mm(float *const *C, int accumulate, const float *const *cp, int64_t ts, const float *const *bp,
                int T, int n, int rows, const int *tr, const int *cr) {
    for (int i = 0; i + 4 <= rows; i += 4) {
        int t0 = tr ? tr[i / 2] : 0, t1 = tr ? tr[i / 2 + 1] : T, c0 = cr ? cr[i / 2] : 0, ce = cr ? cr[i / 2 + 1] : n;
        for (; c0 + 4 * VW <= ce; c0 += 4 * VW) MM_BLOCK(4);
        for (; c0 + 2 * VW <= ce; c0 += 2 * VW) MM_BLOCK(2);
        for (; c0 + VW <= ce; c0 += VW) MM_BLOCK(1);
        for (; c0 < ce; c0++) /* the columns past the last whole vector */
            for (int r = 0; r < 4; r++) {
                float s = accumulate ? C[i + r][c0] : 0.0f;
                for (int t = t0; t < t1; t++) s += cp[i + r][t * ts] * bp[t][c0];
                C[i + r][c0] = s;
            }
    }
}

/* Two-source shuffles of 16 lanes (the indices constant; 16 + i is lane i of the second). */
#if defined(__clang__)
#define SHUF(x, y, ...) __builtin_shufflevector(x, y, __VA_ARGS__)
#else
#define SHUF(x, y, ...) __builtin_shuffle(x, y, (vi){__VA_ARGS__})
#endif
/* One stage of a 16 x 16 transpose: rows r and r + B swap their off-diagonal B x B blocks. */
#define TSTAGE(B, LO, HI)                                                                          \
    for (int r = 0; r < VW; r++)                                                                   \
        if (!(r & (B))) {                                                                          \
            vf x_ = m[r], y_ = m[r + (B)];                                                         \
            m[r] = SHUF(x_, y_, LO);                                                               \
            m[r + (B)] = SHUF(x_, y_, HI);                                                         \
        }
#define LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31

RT_CLONES
void rt_grad_transpose(float *Bt, const float *const *rows, int n) {
    int c = 0;
    for (; c + VW <= n; c += VW)
        for (int t = 0; t < RT_GBK; t += VW) {
            vf m[VW];
            for (int r = 0; r < VW; r++) m[r] = VLOAD(rows[t + r] + c);
            TSTAGE(8, LO8, HI8)
            TSTAGE(4, LO4, HI4)
            TSTAGE(2, LO2, HI2)
            TSTAGE(1, LO1, HI1)
            for (int r = 0; r < VW; r++) VSTORE(Bt + (size_t)(c + r) * RT_GBK + t, m[r]);
        }
    for (; c < n; c++)
        for (int t = 0; t < RT_GBK; t++) Bt[(size_t)c * RT_GBK + t] = rows[t][c];
}

/* e^x for x <= 88 (Cephes' expf: 2^n times a degree-6 polynomial on |r| <= ln2/2, n rounded
 * by the 1.5 * 2^23 trick; below -87.3 it gives about 1e-38, where the caller zeroes what the
 * mask hides anyway). */
#define VEXP(out, xin)                                                                             \
    do {                                                                                           \
        vf x_ = (xin);                                                                             \
        x_ = VSEL(x_ < -87.3f, VSPLAT(-87.3f), x_);                                                \
        vf t_ = x_ * 1.44269504088896341f + 12582912.0f; /* n in the low mantissa bits */         \
        vf nf_ = t_ - 12582912.0f;                                                                 \
        vi e_ = ((vi)t_ - (vi)VSPLAT(12582912.0f) + 127) << 23;                                   \
        vf r_ = x_ - nf_ * 0.693359375f;                                                           \
        r_ = r_ + nf_ * 2.12194440e-4f;                                                            \
        vf p_ = 1.9875691500e-4f * r_ + 1.3981999507e-3f;                                          \
        p_ = p_ * r_ + 8.3334519073e-3f;                                                           \
        p_ = p_ * r_ + 4.1665795894e-2f;                                                           \
        p_ = p_ * r_ + 1.6666665459e-1f;                                                           \
        p_ = p_ * r_ + 5.0000001201e-1f;                                                           \
        p_ = p_ * (r_ * r_) + r_ + 1.0f;                                                           \
        (out) = p_ * (vf)e_;                                                                       \
    } while (0)

RT_CLONES
void rt_grad_rows(int rows, const float *S, const float *smod, const float *dfds, const float *dP, float scale,
                  const float *lse, const float *D, const int *vlo, const int *vhi, float *P, float *ds, float *dss) {
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * RT_GBK;
        int lo = vlo[i] < 0 ? 0 : vlo[i], hi = vhi[i] >= RT_GBK ? RT_GBK - 1 : vhi[i];
        if (lo <= hi) {
            /* every lane of the vectors that hold [lo, hi]; the lanes outside are cleared below
             * (what was computed there, inf or NaN included, goes nowhere) */
            float l = lse[i], d = D[i];
            for (int c = lo & ~(VW - 1); c <= hi; c += VW) {
                vf s, p, zero = {0};
                if (smod) {
                    s = VLOAD(smod + o + c);
                    VEXP(p, s - l);
                    p = VSEL(s > -INFINITY, p, zero); /* hidden by the mask */
                } else {
                    s = VLOAD(S + o + c) * scale;
                    VEXP(p, s - l);
                }
                vf g = p * (VLOAD(dP + o + c) - d);
                VSTORE(P + o + c, p);
                if (ds) VSTORE(ds + o + c, g);
                vf gs = g * scale;
                if (dfds) gs = VSEL(s > -INFINITY, g * (VLOAD(dfds + o + c) * scale), zero);
                VSTORE(dss + o + c, gs);
            }
        } else {
            lo = RT_GBK, hi = RT_GBK - 1;
        }
        /* the keys the row does not see: nothing */
        size_t n0 = (size_t)lo, n1 = (size_t)(RT_GBK - 1 - hi);
        memset(P + o, 0, sizeof(float) * n0);
        memset(P + o + hi + 1, 0, sizeof(float) * n1);
        memset(dss + o, 0, sizeof(float) * n0);
        memset(dss + o + hi + 1, 0, sizeof(float) * n1);
        if (ds) {
            memset(ds + o, 0, sizeof(float) * n0);
            memset(ds + o + hi + 1, 0, sizeof(float) * n1);
        }
    }
}
