/* test_numerics.c — JIT kernels on hostile numbers against a double-precision C reference:
 * scores of +-1e30 (huge Q/K, a `score * 1e30` modifier), inf and NaN in Q/K/V and in a float
 * input (only the rows that see them may be non-finite), fully masked rows (zeros, lse -inf),
 * kv_len in the millions with q_len 1 (64-bit positions and offsets, also through a batch
 * stride beyond 2^31 elements), and head dims that are not multiples of the vector width. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "attn/attn.h"
#include "check.h"

typedef enum Mask { M_ALL, M_CAUSAL, M_NONE, M_LATE } Mask; /* M_LATE: k < q - 3 */

/* A problem: row-major tensors, one batch row unless said otherwise. */
typedef struct Prob {
    int B, H, KH, Lq, Lk, D, DV;
    Mask mask;
    double score_mul;  /* the spec's `score = score * X` (1: none) */
    const float *bias; /* the spec's `score = score + bias[k]` (NULL: none) */
    float *q, *k, *v, *o, *lse;
} Prob;

static uint64_t rng_state = 12345;

/* n floats uniform in [-mul / 2, mul / 2). */
static float *alloc_fill(size_t n, float mul) {
    float *p = malloc(n * sizeof *p);
    REQUIRE(p, "out of memory");
    check_fill(p, n, &rng_state, CHECK_UNIFORM, 0.5 * mul);
    return p;
}

static bool visible(Mask m, int64_t q, int64_t k) {
    switch (m) {
    case M_ALL: return true;
    case M_CAUSAL: return k <= q;
    case M_NONE: return false;
    case M_LATE: return k < q - 3;
    }
    return false;
}

/* One output row in double: o[DV] and lse; skip_key (or -1) is left out as if masked. */
static void ref_row(const Prob *p, int b, int h, int r, int64_t skip_key, double *o, double *lse) {
    int kh = h / (p->H / p->KH);
    int64_t qpos = (int64_t)p->Lk - p->Lq + r;
    const float *qr = p->q + (((size_t)b * p->H + h) * p->Lq + r) * p->D;
    double scale = 1.0 / sqrt((double)p->D);
    double *s = malloc((size_t)p->Lk * sizeof *s);
    REQUIRE(s, "out of memory");
    for (int64_t j = 0; j < p->Lk; j++) {
        s[j] = -INFINITY;
        if (!visible(p->mask, qpos, j) || j == skip_key) continue;
        const float *kr = p->k + (((size_t)b * p->KH + kh) * p->Lk + j) * p->D;
        double dot = 0;
        for (int d = 0; d < p->D; d++) dot += (double)qr[d] * kr[d];
        s[j] = dot * scale * p->score_mul + (p->bias ? p->bias[j] : 0.0);
    }
    *lse = check_softmax(s, p->Lk);
    for (int d = 0; d < p->DV; d++) o[d] = 0;
    for (int64_t j = 0; j < p->Lk; j++) {
        if (s[j] == 0) continue;
        const float *vr = p->v + (((size_t)b * p->KH + kh) * p->Lk + j) * p->DV;
        for (int d = 0; d < p->DV; d++) o[d] += s[j] * vr[d];
    }
    free(s);
}

/* The spec text of a problem. */
static void spec_of(const Prob *p, char *buf, size_t n) {
    const char *mask = p->mask == M_CAUSAL ? "causal"
                       : p->mask == M_NONE ? "false"
                       : p->mask == M_LATE ? "k < q - 3"
                                           : "true";
    char score[96] = "";
    if (p->score_mul != 1) snprintf(score, sizeof score, "score = score * %.17g;", p->score_mul);
    if (p->bias) snprintf(score, sizeof score, "score = score + bias[k];");
    snprintf(buf, n,
             "attention t {\n  %s\n  heads = %d; kv_heads = %d; head_dim = %d; v_dim = %d;\n"
             "  mask = %s;\n  %s\n}\n",
             p->bias ? "input f32 bias[seq];" : "", p->H, p->KH, p->D, p->DV, mask, score);
}

static attn_kernel *compile(const char *text) {
    attn_kernel *kern = NULL;
    char *diags = NULL;
    attn_error err;
    attn_status st = attn_compile("numerics.attn", text, NULL, &kern, &diags, &err);
    CHECK(st == ATTN_OK, "compile failed: %s\n%s%s", err.message, diags ? diags : "", text);
    attn_free(diags);
    return kern;
}

/* Runs the problem (allocating o and lse) with `threads`; false on an error. */
static bool run(attn_kernel *kern, Prob *p, int threads) {
    size_t on = (size_t)p->B * p->H * p->Lq * p->DV, ln = (size_t)p->B * p->H * p->Lq;
    free(p->o);
    free(p->lse);
    p->o = alloc_fill(on, 1);
    p->lse = alloc_fill(ln, 1);
    attn_input in = {.name = "bias", .t = {.data = (void *)p->bias, .ndim = 1, .shape = {p->Lk}}};
    attn_call c = {
        .q = {p->q, 4, {p->B, p->H, p->Lq, p->D}, {0}},
        .k = {p->k, 4, {p->B, p->KH, p->Lk, p->D}, {0}},
        .v = {p->v, 4, {p->B, p->KH, p->Lk, p->DV}, {0}},
        .o = {p->o, 4, {p->B, p->H, p->Lq, p->DV}, {0}},
        .lse = {p->lse, 3, {p->B, p->H, p->Lq}, {0}},
        .q_offset = ATTN_Q_OFFSET_DEFAULT,
        .inputs = p->bias ? &in : NULL,
        .ninputs = p->bias ? 1 : 0,
        .threads = threads,
    };
    attn_error err;
    attn_status st = attn_run(kern, &c, &err);
    CHECK(st == ATTN_OK, "attn_run: %s", err.message);
    return st == ATTN_OK;
}

/* Compares row (b, h, r) with the reference (leaving out skip_key); reports and counts. */
static bool row_matches(const Prob *p, int b, int h, int r, int64_t skip_key, double tol,
                        const char *what) {
    double *o = malloc((size_t)p->DV * sizeof *o), lse;
    REQUIRE(o, "out of memory");
    ref_row(p, b, h, r, skip_key, o, &lse);
    size_t row = ((size_t)b * p->H + h) * p->Lq + r;
    const float *got = p->o + row * p->DV;
    float glse = p->lse[row];
    bool ok = true;
    for (int d = 0; d < p->DV; d++)
        if (!isfinite(got[d]) || fabs(got[d] - o[d]) > tol * (1 + fabs(o[d]))) ok = false;
    if (lse == -INFINITY) ok &= glse == -INFINITY;
    else ok &= isfinite(glse) && fabs(glse - lse) <= tol * (1 + fabs(lse));
    CHECK(ok, "%s: row b%d h%d q%d: o[0] %g (ref %g), lse %g (ref %g)", what, b, h, r, got[0], o[0], glse, lse);
    free(o);
    return ok;
}

static void free_prob(Prob *p) {
    free(p->q), free(p->k), free(p->v), free(p->o), free(p->lse);
    memset(p, 0, sizeof *p);
}

static Prob make(int B, int H, int KH, int Lq, int Lk, int D, int DV, Mask m, float qk_mul) {
    Prob p = {.B = B, .H = H, .KH = KH, .Lq = Lq, .Lk = Lk, .D = D, .DV = DV, .mask = m,
              .score_mul = 1};
    p.q = alloc_fill((size_t)B * H * Lq * D, qk_mul);
    p.k = alloc_fill((size_t)B * KH * Lk * D, qk_mul);
    p.v = alloc_fill((size_t)B * KH * Lk * DV, 1);
    return p;
}

/* Runs with 1 and 2 threads and compares every row. */
static void check_all(Prob *p, double tol, const char *what) {
    char text[512];
    spec_of(p, text, sizeof text);
    attn_kernel *kern = compile(text);
    if (!kern) return;
    for (int t = 1; t <= 2; t++) {
        if (!run(kern, p, t)) break;
        int bad = 0;
        for (int b = 0; b < p->B; b++)
            for (int h = 0; h < p->H; h++)
                for (int r = 0; r < p->Lq && bad < 3; r++)
                    bad += !row_matches(p, b, h, r, -1, tol, what);
    }
    attn_kernel_free(kern);
}

static void test_huge_scores(void) {
    /* Q and K entries up to 5e14: dots near +-1e30 */
    Prob p = make(1, 2, 1, 33, 70, 16, 8, M_CAUSAL, 1e15f);
    check_all(&p, 1e-4, "huge q/k");
    free_prob(&p);
    /* a modifier scaling ordinary scores to +-1e30: softmax becomes a one-hot argmax */
    for (int s = 0; s < 2; s++) {
        p = make(1, 2, 2, 40, 40, 8, 8, M_CAUSAL, 1);
        p.score_mul = s ? -1e30 : 1e30;
        check_all(&p, 1e-4, "score * 1e30");
        free_prob(&p);
    }
}

/* A NaN (or inf) planted at key `bad` of K or V: rows that do not see it must match the
 * reference without that key; rows that do see it may be anything. */
static void test_nonfinite(void) {
    const float poison[] = {NAN, INFINITY, -INFINITY};
    const char *const pname[] = {"NaN", "+inf", "-inf"};
    for (int which = 0; which < 3; which++) /* 0: K, 1: V, 2: Q */
        for (int pi = 0; pi < 3; pi++) {
            Prob p = make(1, 2, 2, 50, 50, 12, 9, M_CAUSAL, 1);
            int bad = 21; /* keys 0..20 are seen by rows 0..20 without it, in a shared tile */
            float *row = which == 0   ? p.k + (size_t)bad * p.D
                         : which == 1 ? p.v + (size_t)bad * p.DV
                                      : p.q + (size_t)bad * p.D;
            row[3] = poison[pi];
            char text[512], what[64];
            snprintf(what, sizeof what, "%s in %s row %d", pname[pi],
                     which == 0 ? "K" : which == 1 ? "V" : "Q", bad);
            spec_of(&p, text, sizeof text);
            attn_kernel *kern = compile(text);
            if (!kern) continue;
            for (int t = 1; t <= 2; t++) {
                if (!run(kern, &p, t)) break;
                for (int h = 0; h < p.H; h++)
                    for (int r = 0; r < p.Lq; r++) {
                        bool sees = which == 2 ? r == bad : r >= bad; /* head 0 only poisoned */
                        if (h == 1) sees = false;
                        if (!sees) row_matches(&p, 0, h, r, -1, 1e-4, what);
                    }
            }
            attn_kernel_free(kern);
            free_prob(&p);
        }
    /* a float input: bias[k] = -inf masks key k for everyone; NaN poisons only its viewers */
    for (int pi = 0; pi < 2; pi++) {
        Prob p = make(1, 1, 1, 30, 30, 5, 5, M_CAUSAL, 1);
        float *bias = calloc(30, sizeof *bias);
        bias[0] = -INFINITY; /* row 0 then sees nothing: zeros and lse -inf */
        bias[17] = pi ? NAN : -INFINITY;
        p.bias = bias;
        char text[512];
        spec_of(&p, text, sizeof text);
        attn_kernel *kern = compile(text);
        if (kern && run(kern, &p, 1))
            for (int r = 0; r < p.Lq; r++)
                if (!(pi && r >= 17)) row_matches(&p, 0, 0, r, -1, 1e-4, pi ? "NaN bias" : "-inf bias");
        EXPECT(p.lse && p.lse[0] == -INFINITY && p.o[0] == 0);
        attn_kernel_free(kern);
        free(bias);
        p.bias = NULL;
        free_prob(&p);
    }
}

static void test_masked_rows(void) {
    /* nothing visible anywhere, and the first rows of `k < q - 3` */
    const Mask masks[] = {M_NONE, M_LATE};
    for (int i = 0; i < 2; i++) {
        Prob p = make(2, 2, 1, 19, 19, 7, 3, masks[i], 1);
        check_all(&p, 1e-4, i ? "k < q - 3" : "mask = false");
        for (size_t j = 0; j < (size_t)2 * 2 * 19; j++) {
            int r = (int)(j % 19);
            if (i == 0 || r <= 3) {
                EXPECT(p.lse[j] == -INFINITY);
                for (int d = 0; d < 3; d++) EXPECT(p.o[j * 3 + d] == 0);
            }
        }
        free_prob(&p);
    }
    /* a modifier that sends every score to -inf */
    Prob p = make(1, 1, 1, 8, 8, 4, 4, M_ALL, 1);
    attn_kernel *kern = compile("attention n { heads = 1; head_dim = 4; score = -inf; }");
    if (kern && run(kern, &p, 1))
        for (int r = 0; r < 8; r++) {
            EXPECT(p.lse[r] == -INFINITY);
            for (int d = 0; d < 4; d++) EXPECT(p.o[r * 4 + d] == 0);
        }
    attn_kernel_free(kern);
    free_prob(&p);
}

/* kv_len 3,000,000, q_len 1, one head, head_dim 8: one long decode row. */
static void test_long_kv(void) {
    enum { LK = 3000000 };
    Prob p = make(1, 1, 1, 1, LK, 8, 8, M_CAUSAL, 1);
    check_all(&p, 1e-4, "kv_len 3e6");
    free_prob(&p);
    /* positions beyond 2^31: the query at 2^33 + 5 with a window ending at key 700001 (the
     * mask's `q - k` needs 64 bits), and K/V batch rows 2^31 + 24 elements apart (a
     * NORESERVE mapping: only the rows used are ever touched) */
    const int64_t qpos = ((int64_t)1 << 33) + 5, T = qpos - 700000;
    char text[256];
    snprintf(text, sizeof text, "attention w { heads = 1; head_dim = 8; mask = q - k < %lld; }",
             (long long)T);
    attn_kernel *kern = compile(text);
    if (!kern) return;
    enum { L = 1500000, D = 8 };
    int64_t bstride = ((int64_t)1 << 31) + 24;
    size_t bytes = (size_t)(bstride + (int64_t)L * D) * sizeof(float);
    int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    float *kbig = mmap(NULL, bytes, prot, flags, -1, 0), *vbig = mmap(NULL, bytes, prot, flags, -1, 0);
    CHECK(kbig != MAP_FAILED && vbig != MAP_FAILED, "mmap of %zu bytes failed", bytes);
    double *s = malloc(sizeof(double) * L);
    REQUIRE(s, "out of memory");
    if (kbig != MAP_FAILED && vbig != MAP_FAILED) {
        float *q = alloc_fill(2 * D, 1), o[2 * D], lse[2];
        for (int b = 0; b < 2; b++) {
            check_fill(kbig + b * bstride, (size_t)L * D, &rng_state, CHECK_UNIFORM, 0.5);
            check_fill(vbig + b * bstride, (size_t)L * D, &rng_state, CHECK_UNIFORM, 0.5);
        }
        attn_call c = {
            .q = {q, 4, {2, 1, 1, D}, {0}},
            .k = {kbig, 4, {2, 1, L, D}, {bstride, (int64_t)L * D, D, 1}},
            .v = {vbig, 4, {2, 1, L, D}, {bstride, (int64_t)L * D, D, 1}},
            .o = {o, 4, {2, 1, 1, D}, {0}},
            .lse = {lse, 3, {2, 1, 1}, {0}},
            .q_offset = qpos,
            .threads = 2,
        };
        attn_error err;
        EXPECT(attn_run(kern, &c, &err) == ATTN_OK);
        for (int b = 0; b < 2; b++) {
            double acc[D] = {0};
            for (int64_t j = 0; j < L; j++) {
                const float *kr = kbig + b * bstride + j * D;
                double dot = 0;
                for (int d = 0; d < D; d++) dot += (double)q[b * D + d] * kr[d];
                s[j] = qpos - j < T ? dot / sqrt((double)D) : -INFINITY;
            }
            double want_lse = check_softmax(s, L);
            for (int64_t j = 0; j < L; j++)
                for (int d = 0; d < D && s[j] != 0; d++) acc[d] += s[j] * vbig[b * bstride + j * D + d];
            for (int d = 0; d < D; d++) EXPECT(fabs(o[b * D + d] - acc[d]) < 1e-4);
            EXPECT(fabs(lse[b] - want_lse) < 1e-4 * (1 + fabs(want_lse)));
        }
        free(q);
    }
    free(s);
    if (kbig != MAP_FAILED) munmap(kbig, bytes);
    if (vbig != MAP_FAILED) munmap(vbig, bytes);
    attn_kernel_free(kern);
}

static void test_odd_dims(void) {
    const int dims[] = {1, 3, 17, 65, 129};
    for (int i = 0; i < 5; i++) {
        Prob p = make(2, 4, 2, 37, 53, dims[i], dims[(i + 2) % 5], M_CAUSAL, 1);
        char what[64];
        snprintf(what, sizeof what, "head_dim %d v_dim %d", dims[i], dims[(i + 2) % 5]);
        check_all(&p, 1e-4, what);
        free_prob(&p);
        p = make(1, 1, 1, 1, 301, dims[i], dims[i], M_ALL, 1); /* decode */
        check_all(&p, 1e-4, what);
        free_prob(&p);
    }
}

int main(void) {
    test_huge_scores();
    test_nonfinite();
    test_masked_rows();
    test_odd_dims();
    test_long_kv();
    return check_done("test_numerics");
}
