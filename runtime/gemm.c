/* gemm.c — the small dense products MLA needs around its attention kernel (absorbing w_uk
 * into the query, up-projecting the latent cache, applying w_uv to the output). Register-
 * blocked with GCC/Clang vector types; on x86-64 the same source is compiled for AVX-512,
 * AVX2 and the baseline and picked at load time (target_clones), so the runtime stays free of
 * LLVM and of -march flags. */
#include "rt_internal.h"

#include <string.h>

#define RT_VW 16 /* floats per vector value (64 bytes; split in two on AVX2) */
typedef float rt_vf __attribute__((vector_size(RT_VW * sizeof(float)), aligned(4), may_alias));

/* macros, not functions: no vector value ever crosses a call (an ABI that varies by clone) */
#define RT_VLOAD(p) (*(const rt_vf *)(p))
#define RT_VSTORE(p, v) (*(rt_vf *)(p) = (v))
#define RT_VSPLAT(x) ((rt_vf){0} + (x))
#define RT_ROWS 8 /* rows of A per register block: 2 x 8 accumulators, written out */
#define RT_EACH_ROW(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* C[M x N] = A[M x K] . B[K x N], all row-major with leading dims. */
RT_CLONES
void rt_sgemm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float *C, int64_t ldc) {
    int64_t i = 0;
    for (; i + RT_ROWS <= M; i += RT_ROWS) {
        int64_t j = 0;
        for (; j + 2 * RT_VW <= N; j += 2 * RT_VW) {
#define RT_ROW(r) rt_vf c0_##r = {0}, c1_##r = {0};
            RT_EACH_ROW(RT_ROW)
#undef RT_ROW
            for (int64_t k = 0; k < K; k++) {
                rt_vf b0 = RT_VLOAD(B + k * ldb + j), b1 = RT_VLOAD(B + k * ldb + j + RT_VW);
#define RT_ROW(r)                                      \
    {                                                  \
        rt_vf a = RT_VSPLAT(A[(i + r) * lda + k]);     \
        c0_##r += a * b0;                              \
        c1_##r += a * b1;                              \
    }
                RT_EACH_ROW(RT_ROW)
#undef RT_ROW
            }
#define RT_ROW(r)                                      \
    RT_VSTORE(C + (i + r) * ldc + j, c0_##r);          \
    RT_VSTORE(C + (i + r) * ldc + j + RT_VW, c1_##r);
            RT_EACH_ROW(RT_ROW)
#undef RT_ROW
        }
        for (; j < N; j++)
            for (int64_t r = 0; r < RT_ROWS; r++) {
                float s = 0;
                for (int64_t k = 0; k < K; k++) s += A[(i + r) * lda + k] * B[k * ldb + j];
                C[(i + r) * ldc + j] = s;
            }
    }
    for (; i < M; i++) {
        int64_t j = 0;
        for (; j + RT_VW <= N; j += RT_VW) {
            rt_vf c = {0};
            for (int64_t k = 0; k < K; k++) c += RT_VSPLAT(A[i * lda + k]) * RT_VLOAD(B + k * ldb + j);
            RT_VSTORE(C + i * ldc + j, c);
        }
        for (; j < N; j++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++) s += A[i * lda + k] * B[k * ldb + j];
            C[i * ldc + j] = s;
        }
    }
}

#define RT_HSUM(v, out)                                      \
    do {                                                     \
        float hs_ = 0;                                       \
        for (int l_ = 0; l_ < RT_VW; l_++) hs_ += (v)[l_];   \
        (out) = hs_;                                         \
    } while (0)

/* C[M x N] = A[M x K] . B[N x K]^T: dot products of rows, K contiguous in both. */
RT_CLONES
void rt_sgemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float *C, int64_t ldc) {
    int64_t kv = K / RT_VW * RT_VW;
    for (int64_t i = 0; i < M; i++) {
        const float *a = A + i * lda;
        int64_t j = 0;
        for (; j + 4 <= N; j += 4) {
            const float *b0 = B + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
            rt_vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
            for (int64_t k = 0; k < kv; k += RT_VW) {
                rt_vf x = RT_VLOAD(a + k);
                s0 += x * RT_VLOAD(b0 + k), s1 += x * RT_VLOAD(b1 + k);
                s2 += x * RT_VLOAD(b2 + k), s3 += x * RT_VLOAD(b3 + k);
            }
            float t0, t1, t2, t3;
            RT_HSUM(s0, t0);
            RT_HSUM(s1, t1);
            RT_HSUM(s2, t2);
            RT_HSUM(s3, t3);
            for (int64_t k = kv; k < K; k++) {
                t0 += a[k] * b0[k], t1 += a[k] * b1[k];
                t2 += a[k] * b2[k], t3 += a[k] * b3[k];
            }
            C[i * ldc + j] = t0, C[i * ldc + j + 1] = t1, C[i * ldc + j + 2] = t2,
            C[i * ldc + j + 3] = t3;
        }
        for (; j < N; j++) {
            const float *b = B + j * ldb;
            rt_vf s = {0};
            for (int64_t k = 0; k < kv; k += RT_VW) s += RT_VLOAD(a + k) * RT_VLOAD(b + k);
            float t;
            RT_HSUM(s, t);
            for (int64_t k = kv; k < K; k++) t += a[k] * b[k];
            C[i * ldc + j] = t;
        }
    }
}

/* C[M x N] += A[K x M]^T . B[K x N]: rows of B scaled and added, four rows of C at a time. */
RT_CLONES
void rt_sgemm_tn_acc(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                     int64_t ldb, float *C, int64_t ldc) {
    int64_t nv = N / RT_VW * RT_VW;
    for (int64_t i = 0; i < M; i += 4) {
        int64_t rows = M - i < 4 ? M - i : 4;
        for (int64_t k = 0; k < K; k++) {
            const float *b = B + k * ldb;
            for (int64_t r = 0; r < rows; r++) {
                float a = A[k * lda + i + r];
                float *c = C + (i + r) * ldc;
                rt_vf av = RT_VSPLAT(a);
                int64_t j = 0;
                for (; j < nv; j += RT_VW) RT_VSTORE(c + j, RT_VLOAD(c + j) + av * RT_VLOAD(b + j));
                for (; j < N; j++) c[j] += a * b[j];
            }
        }
    }
}
