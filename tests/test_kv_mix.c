/* test_kv_mix.c — K/V stored in a kv_dtype other than a 16-bit dtype (`dtype = bf16; kv_dtype =
 * int8;`, `dtype = f16; kv_dtype = bf16;`, `dtype = bf16; kv_dtype = f32;`, ...): q and o in dtype,
 * k and v in kv_dtype (int8 with f32 k_scale, v_scale), lse f32. Every such pair is run against a
 * double-precision reference on the stored (rounded, dequantized) values:
 *  - contiguous: GQA and MHA, causal and sliding(100), prefill 37 x 129, decode of two rows over
 *    300 keys and of one row over 2000 (2 threads; split over them when dtype is f32);
 *  - paged (P 16, pages shuffled, unused pages NaN): a ragged batch of those shapes, chunked
 *    prefill and decode split over threads, merged into o in dtype;
 *  - compute = f32: every element of o within 2e-4 plus o's own rounding, lse within 1e-4;
 *    compute = bf16 / int8: cosine and relative L1 within the documented bounds;
 *  - the backward (compute = f32, contiguous) of bf16 + int8 K/V and f16 + bf16 K/V: dq, dk, dv
 *    against the reference's (on the stored values, D from the stored o). */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"
#include "stored.h"

static uint64_t rng = 20261208;

typedef struct Cfg {
    const char *name;
    int H, KH, D;
    int win; /* sliding(win); 0: causal */
} Cfg;

/* GQA and MHA, causal and a window: the grouped decode and the one of a head at a time, a
 * 2000-key decode split over the threads (causal) and one that sees 100 keys */
static const Cfg CFGS[4] = {
    {"gqa 8/2 d64 causal", 8, 2, 64, 0},
    {"mha 3/3 d40 sliding(100)", 3, 3, 40, 100},
    {"mha 2/2 d64 causal", 2, 2, 64, 0},
    {"gqa 6/2 d40 sliding(100)", 6, 2, 40, 100},
};

static const char *dname(attn_dtype t) {
    return t == ATTN_BF16 ? "bf16" : t == ATTN_F16 ? "f16" : t == ATTN_I8 ? "int8" : "f32";
}

/* One K/V row of D random values into storage st at element `at` (int8: quantized with its
 * scale max|x| / 127 into *scale); val gets the values the kernel reads. */
static void put_row(attn_dtype kv, int D, void *st, size_t at, float *val, float *scale) {
    float x[256], m = 0;
    check_fill(x, (size_t)D, &rng, CHECK_NORMAL, 1.0);
    if (kv != ATTN_I8) {
        for (int i = 0; i < D; i++) val[i] = store(kv, st, at + (size_t)i, x[i]);
        return;
    }
    for (int i = 0; i < D; i++) m = fmaxf(m, fabsf(x[i]));
    float s = m > 0 ? m / 127.0f : 1.0f;
    *scale = s;
    for (int i = 0; i < D; i++) {
        int8_t e = (int8_t)lrintf(x[i] / s);
        ((int8_t *)st)[at + (size_t)i] = e;
        val[i] = (float)e * s;
    }
}

static bool visible(const Cfg *cf, int64_t q, int64_t k) { return k <= q && (!cf->win || q - k < cf->win); }

/* One sequence's reference: q [H][n][D] at positions L - n + i, k, v [KH][L][D] (the stored
 * values) into o [H][n][D] and lse [H][n]. */
static void reference(const Cfg *cf, int n, int L, const float *q, const float *k, const float *v, double *o,
                      double *lse) {
    double *s = malloc(((size_t)L + 1) * sizeof *s);
    REQUIRE(s, "out of memory");
    int D = cf->D;
    double scale = 1.0 / sqrt((double)D);
    for (int h = 0; h < cf->H; h++) {
        int kh = h / (cf->H / cf->KH);
        for (int i = 0; i < n; i++) {
            const float *qr = q + ((size_t)h * n + i) * D;
            for (int j = 0; j < L; j++) {
                s[j] = -INFINITY;
                if (!visible(cf, L - n + i, j)) continue;
                const float *kr = k + ((size_t)kh * L + j) * D;
                double dot = 0;
                for (int x = 0; x < D; x++) dot += (double)qr[x] * kr[x];
                s[j] = dot * scale;
            }
            lse[(size_t)h * n + i] = check_softmax(s, L);
            double *or = o + ((size_t)h * n + i) * D;
            for (int x = 0; x < D; x++) or[x] = 0;
            for (int j = 0; j < L; j++) {
                if (s[j] == 0) continue;
                const float *vr = v + ((size_t)kh * L + j) * D;
                for (int x = 0; x < D; x++) or[x] += s[j] * vr[x];
            }
        }
    }
    free(s);
}

/* Accumulated comparison of outputs against the reference. */
typedef struct Cmp {
    double dot, oo, rr, diff, mag, worst; /* worst: the largest excess over the f32 bound */
    double lse_err;
} Cmp;

static double round_rel(attn_dtype t) { return t == ATTN_BF16 ? 1.0 / 256 : t == ATTN_F16 ? 1.0 / 1024 : 0; }

static void cmp_add(Cmp *c, attn_dtype dt, double o, double r) {
    c->dot += o * r, c->oo += o * o, c->rr += r * r, c->diff += fabs(o - r), c->mag += fabs(r);
    double excess = fabs(o - r) - (2e-4 + round_rel(dt) * fabs(r));
    if (!(excess <= c->worst)) c->worst = isnan(excess) ? INFINITY : excess;
}

static void cmp_lse(Cmp *c, double l, double r) {
    double e = r == -INFINITY ? (l == -INFINITY ? 0 : INFINITY) : fabs(l - r);
    if (!(e <= c->lse_err)) c->lse_err = isnan(e) ? INFINITY : e;
}

/* Checks a comparison against compute's bounds. */
static void cmp_check(const Cmp *c, const char *what, const char *compute) {
    double cs = c->oo > 0 && c->rr > 0 ? c->dot / sqrt(c->oo * c->rr) : 0, l1 = c->mag > 0 ? c->diff / c->mag : 1;
    if (strcmp(compute, "f32") == 0) {
        CHECK(c->worst <= 0 && c->lse_err <= 1e-4, "%s: o off by %.3g past its bound, lse by %.3g", what, c->worst,
              c->lse_err);
        return;
    }
    bool i8 = strcmp(compute, "int8") == 0;
    CHECK(cs >= (i8 ? 0.999 : 0.9999) && l1 <= (i8 ? 3e-2 : 1e-2), "%s: cos %.7f rel_l1 %.3g out of bounds", what, cs,
          l1);
}

static attn_kernel *compile(const Cfg *cf, attn_dtype dt, attn_dtype kv, const char *compute, int page) {
    char text[512], paged[64] = "", mask[32];
    if (page) snprintf(paged, sizeof paged, "kv_cache = paged(%d);", page);
    if (cf->win) snprintf(mask, sizeof mask, "sliding(%d)", cf->win);
    else snprintf(mask, sizeof mask, "causal");
    snprintf(text, sizeof text,
             "attention t { heads = %d; kv_heads = %d; head_dim = %d; mask = %s; dtype = %s; kv_dtype = %s; "
             "compute = %s; %s }",
             cf->H, cf->KH, cf->D, mask, dname(dt), dname(kv), compute, paged);
    attn_kernel *kern = NULL;
    char *diags = NULL;
    attn_error err;
    attn_status st = attn_compile("kv_mix.attn", text, NULL, &kern, &diags, &err);
    CHECK(st == ATTN_OK, "compile failed: %s\n%s%s", err.message, diags ? diags : "", text);
    attn_free(diags);
    return st == ATTN_OK ? kern : NULL;
}

/* Contiguous tensors of one call, stored and as the kernel reads them. */
typedef struct Contig {
    int B, Lq, Lk;
    float *q, *k, *v;       /* the stored values */
    void *qs, *ks, *vs, *os;
    float *ksc, *vsc, *lse; /* [B][KH][Lk] scales (int8), [B][H][Lq] */
} Contig;

static void contig_make(Contig *x, const Cfg *cf, attn_dtype dt, attn_dtype kv, int B, int Lq, int Lk) {
    memset(x, 0, sizeof *x);
    x->B = B, x->Lq = Lq, x->Lk = Lk;
    size_t nq = (size_t)B * cf->H * Lq * cf->D, nk = (size_t)B * cf->KH * Lk * cf->D, rows = nk / (size_t)cf->D;
    x->q = malloc(nq * 4), x->k = malloc(nk * 4), x->v = malloc(nk * 4);
    x->qs = malloc(nq * esize(dt)), x->os = malloc(nq * esize(dt)), x->ks = malloc(nk * esize(kv) + 1);
    x->vs = malloc(nk * esize(kv) + 1), x->ksc = malloc(rows * 4 + 4), x->vsc = malloc(rows * 4 + 4);
    x->lse = malloc((size_t)B * cf->H * Lq * 4);
    REQUIRE(x->q && x->k && x->v && x->qs && x->os && x->ks && x->vs && x->ksc && x->vsc && x->lse, "out of memory");
    check_fill(x->q, nq, &rng, CHECK_NORMAL, 1.0);
    for (size_t i = 0; i < nq; i++) x->q[i] = store(dt, x->qs, i, x->q[i]);
    for (size_t r = 0; r < rows; r++) {
        put_row(kv, cf->D, x->ks, r * (size_t)cf->D, x->k + r * (size_t)cf->D, &x->ksc[r]);
        put_row(kv, cf->D, x->vs, r * (size_t)cf->D, x->v + r * (size_t)cf->D, &x->vsc[r]);
    }
}

static void contig_free(Contig *x) {
    free(x->q), free(x->k), free(x->v), free(x->qs), free(x->ks), free(x->vs), free(x->os), free(x->ksc);
    free(x->vsc), free(x->lse);
}

static attn_call contig_call(const Cfg *cf, const Contig *x, attn_dtype kv, attn_input *in) {
    attn_call c = {
        .q = {x->qs, 4, {x->B, cf->H, x->Lq, cf->D}, {0}},
        .k = {x->ks, 4, {x->B, cf->KH, x->Lk, cf->D}, {0}},
        .v = {x->vs, 4, {x->B, cf->KH, x->Lk, cf->D}, {0}},
        .o = {x->os, 4, {x->B, cf->H, x->Lq, cf->D}, {0}},
        .lse = {x->lse, 3, {x->B, cf->H, x->Lq}, {0}},
        .threads = 2,
    };
    if (kv == ATTN_I8) {
        in[0] = (attn_input){.name = "k_scale", .t = {.data = x->ksc, .ndim = 3, .shape = {x->B, cf->KH, x->Lk}}};
        in[1] = (attn_input){.name = "v_scale", .t = {.data = x->vsc, .ndim = 3, .shape = {x->B, cf->KH, x->Lk}}};
        c.inputs = in, c.ninputs = 2;
    }
    return c;
}

/* Prefill 37 x 129, decode of two rows over 300 keys, of one over 2000. */
static void contig_case(attn_kernel *kern, const Cfg *cf, attn_dtype dt, attn_dtype kv, const char *compute) {
    static const int shapes[3][3] = {{1, 37, 129}, {2, 1, 300}, {1, 1, 2000}};
    for (int s = 0; s < 3; s++) {
        Contig x;
        contig_make(&x, cf, dt, kv, shapes[s][0], shapes[s][1], shapes[s][2]);
        attn_input in[2];
        attn_call call = contig_call(cf, &x, kv, in);
        attn_error err;
        char what[160];
        snprintf(what, sizeof what, "%s dtype %s kv_dtype %s compute %s: %d x %d x %d", cf->name, dname(dt), dname(kv),
                 compute, x.B, x.Lq, x.Lk);
        attn_status st = attn_run(kern, &call, &err);
        CHECK(st == ATTN_OK, "%s: %s", what, err.message);
        if (st == ATTN_OK) {
            size_t per_q = (size_t)cf->H * x.Lq * cf->D, per_k = (size_t)cf->KH * x.Lk * cf->D;
            double *ro = malloc(per_q * sizeof *ro), *rl = malloc((size_t)cf->H * x.Lq * sizeof *rl);
            REQUIRE(ro && rl, "out of memory");
            Cmp c = {0};
            for (int b = 0; b < x.B; b++) {
                reference(cf, x.Lq, x.Lk, x.q + b * per_q, x.k + b * per_k, x.v + b * per_k, ro, rl);
                for (size_t i = 0; i < per_q; i++) cmp_add(&c, dt, load(dt, x.os, b * per_q + i), ro[i]);
                for (int i = 0; i < cf->H * x.Lq; i++) cmp_lse(&c, x.lse[(size_t)b * cf->H * x.Lq + (size_t)i], rl[i]);
            }
            cmp_check(&c, what, compute);
            free(ro), free(rl);
        }
        contig_free(&x);
    }
}

enum { NSEQ = 5, PAGE = 16 };

/* A paged ragged batch: sequences (n_b queries, L_b keys): chunked prefill 37 of 129, decode
 * over 300 and over 2000 (split over the threads), an empty one, 5 of 5. */
static void paged_case(attn_kernel *kern, const Cfg *cf, attn_dtype dt, attn_dtype kv, const char *compute) {
    static const int n[NSEQ] = {37, 1, 1, 0, 5}, L[NSEQ] = {129, 300, 2000, 0, 5};
    int H = cf->H, KH = cf->KH, D = cf->D, MP = 0, NP = 3, T = 0;
    int32_t starts[NSEQ + 1], lens[NSEQ];
    starts[0] = 0;
    for (int b = 0; b < NSEQ; b++) {
        int pages = (L[b] + PAGE - 1) / PAGE;
        MP = pages > MP ? pages : MP;
        NP += pages;
        starts[b + 1] = starts[b] + n[b];
        lens[b] = L[b];
    }
    T = starts[NSEQ];
    int32_t *table = malloc(sizeof(int32_t) * NSEQ * (size_t)MP), *perm = malloc(sizeof(int32_t) * (size_t)NP);
    size_t npg = (size_t)NP * PAGE * KH * D;
    void *kp = malloc(npg * esize(kv)), *vp = malloc(npg * esize(kv)), *qs = malloc((size_t)T * H * D * esize(dt) + 1);
    void *os = malloc((size_t)T * H * D * esize(dt) + 1);
    float *ksc = malloc((size_t)NP * PAGE * KH * 4), *vsc = malloc((size_t)NP * PAGE * KH * 4);
    float *lse = malloc((size_t)T * H * 4 + 4);
    REQUIRE(table && perm && kp && vp && qs && os && ksc && vsc && lse, "out of memory");
    for (int i = 0; i < NP; i++) perm[i] = i;
    for (int i = NP - 1; i > 0; i--) {
        int j = (int)check_int(&rng, 0, i), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    /* garbage everywhere first: NaN rows and scales where nothing is written */
    for (size_t i = 0; i < npg; i++) {
        if (kv == ATTN_I8) ((int8_t *)kp)[i] = ((int8_t *)vp)[i] = (int8_t)check_int(&rng, -128, 127);
        else store(kv, kp, i, NAN), store(kv, vp, i, NAN);
    }
    for (size_t i = 0; i < (size_t)NP * PAGE * KH; i++) ksc[i] = vsc[i] = NAN;
    for (size_t i = 0; i < (size_t)NSEQ * MP; i++) table[i] = -7; /* past a sequence's pages: never read */
    int next = 0;
    float *sq[NSEQ], *sk[NSEQ], *sv[NSEQ]; /* per sequence: q [H][n][D], k, v [KH][L][D], stored values */
    for (int b = 0; b < NSEQ; b++) {
        for (int j = 0; j < (L[b] + PAGE - 1) / PAGE; j++) table[b * MP + j] = perm[next++];
        sq[b] = malloc(((size_t)H * n[b] * D + 1) * 4), sk[b] = malloc(((size_t)KH * L[b] * D + 1) * 4);
        sv[b] = malloc(((size_t)KH * L[b] * D + 1) * 4);
        REQUIRE(sq[b] && sk[b] && sv[b], "out of memory");
        for (int i = 0; i < n[b]; i++)
            for (int h = 0; h < H; h++)
                for (int x = 0; x < D; x++) {
                    size_t at = (((size_t)starts[b] + i) * H + h) * D + x;
                    sq[b][((size_t)h * n[b] + i) * D + x] = store(dt, qs, at, (float)check_normal(&rng));
                }
        for (int j = 0; j < L[b]; j++)
            for (int kh = 0; kh < KH; kh++) {
                size_t slot = ((size_t)table[b * MP + j / PAGE] * PAGE + (size_t)(j % PAGE)) * KH + kh;
                put_row(kv, D, kp, slot * D, sk[b] + ((size_t)kh * L[b] + j) * D, &ksc[slot]);
                put_row(kv, D, vp, slot * D, sv[b] + ((size_t)kh * L[b] + j) * D, &vsc[slot]);
            }
    }
    attn_input in[2] = {
        {.name = "k_scale", .t = {.data = ksc, .ndim = 3, .shape = {NP, PAGE, KH}}},
        {.name = "v_scale", .t = {.data = vsc, .ndim = 3, .shape = {NP, PAGE, KH}}},
    };
    attn_paged_call call = {
        .q = {qs, 3, {T, H, D}, {0}},
        .k_pages = {kp, 4, {NP, PAGE, KH, D}, {0}},
        .v_pages = {vp, 4, {NP, PAGE, KH, D}, {0}},
        .page_table = {table, 2, {NSEQ, MP}, {0}},
        .kv_lens = {lens, 1, {NSEQ}, {0}},
        .q_starts = {starts, 1, {NSEQ + 1}, {0}},
        .o = {os, 3, {T, H, D}, {0}},
        .lse = {lse, 2, {T, H}, {0}},
        .inputs = kv == ATTN_I8 ? in : NULL,
        .ninputs = kv == ATTN_I8 ? 2 : 0,
        .threads = 2,
    };
    char what[160];
    snprintf(what, sizeof what, "%s dtype %s kv_dtype %s compute %s: paged(%d)", cf->name, dname(dt), dname(kv),
             compute, PAGE);
    attn_error err;
    attn_status st = attn_run_paged(kern, &call, &err);
    CHECK(st == ATTN_OK, "%s: %s", what, err.message);
    Cmp c = {0};
    for (int b = 0; b < NSEQ && st == ATTN_OK; b++) {
        double *ro = malloc(((size_t)H * n[b] * D + 1) * sizeof *ro), *rl = malloc(((size_t)H * n[b] + 1) * sizeof *rl);
        REQUIRE(ro && rl, "out of memory");
        reference(cf, n[b], L[b], sq[b], sk[b], sv[b], ro, rl);
        for (int i = 0; i < n[b]; i++)
            for (int h = 0; h < H; h++) {
                size_t row = (size_t)starts[b] + i;
                for (int x = 0; x < D; x++)
                    cmp_add(&c, dt, load(dt, os, (row * H + h) * D + x), ro[((size_t)h * n[b] + i) * D + x]);
                cmp_lse(&c, lse[row * H + h], rl[(size_t)h * n[b] + i]);
            }
        free(ro), free(rl);
    }
    if (st == ATTN_OK) cmp_check(&c, what, compute);
    for (int b = 0; b < NSEQ; b++) free(sq[b]), free(sk[b]), free(sv[b]);
    free(table), free(perm), free(kp), free(vp), free(qs), free(os), free(ksc), free(vsc), free(lse);
}

/* The backward of a contiguous prefill (37 x 129): dq, dk, dv against the reference's, computed
 * in double on the stored values with D = rowsum(dO o) from the kernel's stored o (as the
 * backward reads it): within 1e-3 of the largest gradient element. */
static void backward_case(attn_kernel *kern, const Cfg *cf, attn_dtype dt, attn_dtype kv) {
    Contig x;
    contig_make(&x, cf, dt, kv, 1, 37, 129);
    attn_input in[2];
    attn_call call = contig_call(cf, &x, kv, in);
    int H = cf->H, KH = cf->KH, D = cf->D, Lq = x.Lq, Lk = x.Lk;
    size_t nq = (size_t)H * Lq * D, nk = (size_t)KH * Lk * D;
    float *dout = malloc(nq * 4), *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nk * 4);
    double *rq = calloc(nq, sizeof *rq), *rk = calloc(nk, sizeof *rk), *rv = calloc(nk, sizeof *rv);
    double *p = malloc((size_t)Lk * sizeof *p);
    REQUIRE(dout && dq && dk && dv && rq && rk && rv && p, "out of memory");
    check_fill(dout, nq, &rng, CHECK_NORMAL, 1.0);
    char what[128];
    snprintf(what, sizeof what, "backward %s dtype %s kv_dtype %s", cf->name, dname(dt), dname(kv));
    attn_error err;
    attn_status st = attn_run(kern, &call, &err);
    CHECK(st == ATTN_OK, "%s: forward: %s", what, err.message);
    attn_grad_call g = {.dout = {dout, 4, {1, H, Lq, D}, {0}},
                        .dq = {dq, 4, {1, H, Lq, D}, {0}},
                        .dk = {dk, 4, {1, KH, Lk, D}, {0}},
                        .dv = {dv, 4, {1, KH, Lk, D}, {0}}};
    if (st == ATTN_OK) st = attn_run_backward(kern, &call, &g, &err);
    CHECK(st == ATTN_OK, "%s: %s", what, err.message);
    double scale = 1.0 / sqrt((double)D);
    for (int h = 0; h < H && st == ATTN_OK; h++) {
        int kh = h / (H / KH);
        for (int i = 0; i < Lq; i++) {
            const float *qr = x.q + ((size_t)h * Lq + i) * D, *dor = dout + ((size_t)h * Lq + i) * D;
            for (int j = 0; j < Lk; j++) {
                p[j] = -INFINITY;
                if (!visible(cf, Lk - Lq + i, j)) continue;
                double dot = 0;
                for (int y = 0; y < D; y++) dot += (double)qr[y] * x.k[((size_t)kh * Lk + j) * D + y];
                p[j] = dot * scale;
            }
            check_softmax(p, Lk);
            double Dr = 0;
            for (int y = 0; y < D; y++) Dr += (double)dor[y] * load(dt, x.os, ((size_t)h * Lq + i) * D + y);
            for (int j = 0; j < Lk; j++) {
                if (p[j] == 0) continue;
                const float *kr = x.k + ((size_t)kh * Lk + j) * D, *vr = x.v + ((size_t)kh * Lk + j) * D;
                double dp = 0;
                for (int y = 0; y < D; y++) dp += (double)dor[y] * vr[y];
                double ds = p[j] * (dp - Dr) * scale;
                for (int y = 0; y < D; y++) {
                    rv[((size_t)kh * Lk + j) * D + y] += p[j] * dor[y];
                    rq[((size_t)h * Lq + i) * D + y] += ds * kr[y];
                    rk[((size_t)kh * Lk + j) * D + y] += ds * qr[y];
                }
            }
        }
    }
    const float *got[3] = {dq, dk, dv};
    const double *want[3] = {rq, rk, rv};
    size_t cnt[3] = {nq, nk, nk};
    static const char *const gn[3] = {"dq", "dk", "dv"};
    for (int t = 0; t < 3 && st == ATTN_OK; t++) {
        double big = 0, worst = 0;
        for (size_t i = 0; i < cnt[t]; i++) big = fmax(big, fabs(want[t][i]));
        for (size_t i = 0; i < cnt[t]; i++) {
            double e = fabs(got[t][i] - want[t][i]);
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
        CHECK(big > 0.05 && worst <= 1e-3 * big, "%s: %s off by %.3g (largest element %.3g)", what, gn[t], worst, big);
    }
    free(dout), free(dq), free(dk), free(dv), free(rq), free(rk), free(rv), free(p);
    contig_free(&x);
}

int main(void) {
    /* the pairs a 16-bit dtype did not take before (f32 dtype with narrower K/V: test_precision,
     * test_paged_dtype) */
    static const attn_dtype pairs[][2] = {{ATTN_BF16, ATTN_I8}, {ATTN_F16, ATTN_BF16}, {ATTN_BF16, ATTN_F32},
                                          {ATTN_F16, ATTN_F32}, {ATTN_BF16, ATTN_F16}, {ATTN_F16, ATTN_I8}};
    static const char *const modes[3] = {"f32", "bf16", "int8"};
    int np = (int)(sizeof pairs / sizeof pairs[0]);
    for (int i = 0; i < np; i++) {
        attn_dtype dt = pairs[i][0], kv = pairs[i][1];
        for (int m = 0; m < 3; m++)
            for (int paged = 0; paged < 2; paged++)
                for (int ci = 0; ci < 4; ci++) {
                    /* compute = f32 on every shape of heads and mask (paged: GQA and MHA, causal
                     * for one pair, windowed for the next); bf16 and int8 on one each, in turn over
                     * the pairs and layouts */
                    const Cfg *cf = &CFGS[ci];
                    if (m == 0 && paged && ci % 2 != i % 2) continue;
                    if (m > 0 && ci != (i + 2 * paged + m) % 4) continue;
                    attn_kernel *kern = compile(cf, dt, kv, modes[m], paged ? PAGE : 0);
                    if (!kern) continue;
                    if (paged) paged_case(kern, cf, dt, kv, modes[m]);
                    else contig_case(kern, cf, dt, kv, modes[m]);
                    if (!paged && m == 0 && ci == 0 && i < 2) backward_case(kern, cf, dt, kv);
                    attn_kernel_free(kern);
                }
        printf("dtype %s kv_dtype %s: done\n", dname(dt), dname(kv));
    }
    return check_done("test_kv_mix");
}
