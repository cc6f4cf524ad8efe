/* test_ring.c — ring attention over MPI (run under mpirun with 1 .. 4 ranks): for each kernel
 * and both shardings, every rank computes the single-process result of the whole sequence
 * (attn_run, attn_run_backward; those are checked against the double reference elsewhere) and
 * the ring's, on its shards, and compares its rows: o, lse, dq, dk, dv and the gradient of an
 * f32 input. Also: the schedule's pair counts for a sliding window, and a rank whose sizes
 * disagree with the others' failing the call on every rank (not hanging). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn_mpi.h"
#include "check.h"
#include "stored.h"
#include "tools/npy.h"

static int R, me;

typedef struct Case {
    const char *name, *text;
    int64_t batch, q_len, kv_len;
    int max_pairs;  /* > 0: contiguous shards compute at most this many pairs (a window) */
    int doc_max;    /* the longest document of `doc` (0: 90) */
} Case;

/* rows of a full [B, H, L, D] tensor of `el`-byte elements -> this rank's shard [B, H, n, D] (packed) */
static void *shard_el(const void *full, size_t el, int64_t B, int64_t H, int64_t L, int64_t D, attn_shard sh,
                      int64_t *n_out) {
    int64_t b0[2], e0[2];
    int np = attn_ring_shard(L, R, me, sh, b0, e0);
    int64_t n = attn_ring_shard_rows(L, R, me, sh);
    char *out = malloc(el * (size_t)(B * H * n * D + 1));
    REQUIRE(out, "out of memory");
    for (int64_t b = 0; b < B * H; b++) {
        int64_t row = 0;
        for (int p = 0; p < np; p++)
            for (int64_t i = b0[p]; i < e0[p]; i++, row++)
                memcpy(out + el * (size_t)((b * n + row) * D), (const char *)full + el * (size_t)((b * L + i) * D),
                       el * (size_t)D);
    }
    *n_out = n;
    return out;
}

static float *shard_of(const float *full, int64_t B, int64_t H, int64_t L, int64_t D, attn_shard sh, int64_t *n_out) {
    return shard_el(full, sizeof(float), B, H, L, D, sh, n_out);
}

static double max_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isinf(a[i]) && a[i] == b[i]) continue;
        double d = fabs((double)a[i] - b[i]) / (1 + fabs((double)b[i]));
        if (!(d <= m)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static attn_tensor t4(float *p, int64_t a, int64_t b, int64_t c, int64_t d) {
    return (attn_tensor){.data = p, .ndim = 4, .shape = {a, b, c, d}};
}
static attn_tensor t3(float *p, int64_t a, int64_t b, int64_t c) {
    return (attn_tensor){.data = p, .ndim = 3, .shape = {a, b, c}};
}

/* One rank's shards of a case's full tensors (q, k, v and o in their storage, eq and ek bytes an
 * element; lse, dout and the gradients f32) and the ring's outputs beside them (o in q's
 * storage); returns the ring call over them. */
typedef struct Shard {
    int64_t mq, mk;  /* local query and key rows */
    void *q, *k, *v, *o, *ro;
    float *lse, *dout, *dq, *dk, *dv, *rl, *rdq, *rdk, *rdv;
} Shard;

static attn_ring_call shard_make(Shard *s, const void *q, const void *k, const void *v, const void *o, size_t eq,
                                 size_t ek, const float *lse, const float *dout, const float *dq, const float *dk,
                                 const float *dv, int64_t B, int64_t H, int64_t KH, int64_t Lq, int64_t Lk, int64_t DQ,
                                 int64_t DV, attn_shard sh, const attn_input *in, int nin) {
    s->q = shard_el(q, eq, B, H, Lq, DQ, sh, &s->mq), s->k = shard_el(k, ek, B, KH, Lk, DQ, sh, &s->mk);
    s->v = shard_el(v, ek, B, KH, Lk, DV, sh, &s->mk), s->o = shard_el(o, eq, B, H, Lq, DV, sh, &s->mq);
    s->lse = shard_of(lse, B, H, Lq, 1, sh, &s->mq), s->dout = shard_of(dout, B, H, Lq, DV, sh, &s->mq);
    s->dq = shard_of(dq, B, H, Lq, DQ, sh, &s->mq), s->dk = shard_of(dk, B, KH, Lk, DQ, sh, &s->mk);
    s->dv = shard_of(dv, B, KH, Lk, DV, sh, &s->mk);
    int64_t mq = s->mq, mk = s->mk;
    s->ro = malloc(eq * (size_t)(B * H * mq * DV + 1));
    s->rl = malloc(sizeof(float) * (size_t)(B * H * mq + 1));
    s->rdq = malloc(sizeof(float) * (size_t)(B * H * mq * DQ + 1));
    s->rdk = malloc(sizeof(float) * (size_t)(B * KH * mk * DQ + 1));
    s->rdv = malloc(sizeof(float) * (size_t)(B * KH * mk * DV + 1));
    REQUIRE(s->ro && s->rl && s->rdq && s->rdk && s->rdv, "out of memory");
    return (attn_ring_call){.q = t4(s->q, B, H, mq, DQ), .k = t4(s->k, B, KH, mk, DQ), .v = t4(s->v, B, KH, mk, DV),
                            .o = t4(s->ro, B, H, mq, DV), .lse = t3(s->rl, B, H, mq), .inputs = in, .ninputs = nin,
                            .threads = 1, .shard = sh};
}

static void shard_free(Shard *s) {
    free(s->q), free(s->k), free(s->v), free(s->o), free(s->lse), free(s->dout), free(s->dq), free(s->dk), free(s->dv);
    free(s->ro), free(s->rl), free(s->rdq), free(s->rdk), free(s->rdv);
}

static void run_case(const Case *cs) {
    attn_options opts;
    attn_options_init(&opts);
    opts.threads = 1;
    attn_kernel *kern = NULL;
    attn_error err;
    char *diag = NULL;
    REQUIRE(attn_compile(cs->name, cs->text, &opts, &kern, &diag, &err) == ATTN_OK, "%s: %s %s", cs->name,
            err.message, diag ? diag : "");
    const attn_rt_desc *d = attn_kernel_desc(kern);
    int64_t B = cs->batch, H = d->heads, KH = d->kv_heads, DQ = d->qk_dim, DV = d->v_dim, Lq = cs->q_len,
            Lk = cs->kv_len;
    uint64_t seed = 42;
    size_t nq = (size_t)(B * H * Lq), nk = (size_t)(B * KH * Lk);
    float *q = malloc(sizeof(float) * nq * DQ), *k = malloc(sizeof(float) * nk * DQ), *v = malloc(sizeof(float) * nk * DV),
          *o = malloc(sizeof(float) * nq * DV), *lse = malloc(sizeof(float) * nq), *dout = malloc(sizeof(float) * nq * DV),
          *dq = malloc(sizeof(float) * nq * DQ), *dk = malloc(sizeof(float) * nk * DQ), *dv = malloc(sizeof(float) * nk * DV);
    REQUIRE(q && k && v && o && lse && dout && dq && dk && dv, "out of memory");
    check_fill(q, nq * DQ, &seed, CHECK_NORMAL, 1.0);
    check_fill(k, nk * DQ, &seed, CHECK_NORMAL, 1.0);
    check_fill(v, nk * DV, &seed, CHECK_NORMAL, 1.0);
    check_fill(dout, nq * DV, &seed, CHECK_NORMAL, 1.0);
    /* inputs: doc ids (documents of 1 .. 90 positions), a source length, slopes */
    int32_t *doc = malloc(sizeof(int32_t) * (size_t)(B * Lk)), src_len[8];
    float slope[64], dslope[64], dslope_ring[64];
    for (int64_t b = 0; b < B; b++) {
        int32_t id = 0;
        for (int64_t i = 0, left = 0; i < Lk; i++, left--) {
            if (left <= 0) {
                id++;
                left = check_int(&seed, 1, cs->doc_max ? cs->doc_max : 90);
            }
            doc[b * Lk + i] = id;
        }
        src_len[b] = (int32_t)check_int(&seed, 0, Lk);
    }
    for (int64_t h = 0; h < H; h++) slope[h] = (float)(0.02 + 0.01 * h);
    attn_input in[ATTN_MAX_INPUTS];
    int nin = 0;
    for (int i = 0; i < d->ninputs; i++) {
        const char *nm = d->inputs[i].name;
        if (!strcmp(nm, "doc"))
            in[nin++] = (attn_input){"doc", {.data = doc, .ndim = 2, .shape = {B, Lk}}};
        else if (!strcmp(nm, "src_len"))
            in[nin++] = (attn_input){"src_len", {.data = src_len, .ndim = 1, .shape = {B}}};
        else if (!strcmp(nm, "slope"))
            in[nin++] = (attn_input){"slope", {.data = slope, .ndim = 1, .shape = {H}}};
    }
    attn_call call = {.q = t4(q, B, H, Lq, DQ), .k = t4(k, B, KH, Lk, DQ), .v = t4(v, B, KH, Lk, DV),
                      .o = t4(o, B, H, Lq, DV), .lse = t3(lse, B, H, Lq), .inputs = in, .ninputs = nin};
    REQUIRE(attn_run(kern, &call, &err) == ATTN_OK, "%s: %s", cs->name, err.message);
    int ng = attn_kernel_grad_inputs(kern, NULL);
    attn_input dins[1] = {{"slope", {.data = dslope, .ndim = 1, .shape = {H}}}};
    int nd = ng > 0 ? 1 : 0;
    attn_grad_call gc = {.dout = t4(dout, B, H, Lq, DV), .dq = t4(dq, B, H, Lq, DQ), .dk = t4(dk, B, KH, Lk, DQ),
                         .dv = t4(dv, B, KH, Lk, DV), .dinputs = dins, .ndinputs = nd};
    REQUIRE(attn_run_backward(kern, &call, &gc, &err) == ATTN_OK, "%s backward: %s", cs->name, err.message);

    for (int shv = 0; shv < 2; shv++) {
        attn_shard sh = (attn_shard)shv;
        const char *shn = shv ? "zigzag" : "contiguous";
        Shard S;
        attn_ring_call rc = shard_make(&S, q, k, v, o, 4, 4, lse, dout, dq, dk, dv, B, H, KH, Lq, Lk, DQ, DV, sh, in, nin);
        attn_ring_stats st;
        attn_status s = attn_ring_run(kern, &rc, MPI_COMM_WORLD, &st, &err);
        CHECK(s == ATTN_OK, "%s %s R=%d rank %d: %s", cs->name, shn, R, me, err.message);
        if (s == ATTN_OK) {
            double eo = max_diff(S.ro, S.o, B * H * S.mq * DV), el = max_diff(S.rl, S.lse, B * H * S.mq);
            CHECK(eo < 2e-5 && el < 2e-5, "%s %s R=%d rank %d: o differs by %g, lse by %g", cs->name, shn, R, me, eo, el);
            CHECK(st.pairs_computed >= 1 && st.pairs_computed <= R && st.pairs_total == R, "%s: pairs %d of %d",
                  cs->name, st.pairs_computed, st.pairs_total);
            if (cs->max_pairs && sh == ATTN_SHARD_CONTIGUOUS)
                CHECK(st.pairs_computed <= cs->max_pairs && st.sends <= cs->max_pairs - 1,
                      "%s R=%d rank %d: %d pairs, %d sends (a window needs at most %d)", cs->name, R, me,
                      st.pairs_computed, st.sends, cs->max_pairs);
            if (!strcmp(cs->name, "sliding") && sh == ATTN_SHARD_CONTIGUOUS) /* sliding(20): 19 keys travel */
                CHECK(st.bytes_sent <= 4 * B * KH * 19 * (DQ + DV), "sliding R=%d rank %d: sent %lld bytes, more than 19 keys",
                      R, me, (long long)st.bytes_sent);
        }
        if (ng >= 0) {
            memcpy(S.ro, S.o, sizeof(float) * (size_t)(B * H * S.mq * DV)); /* the forward's o and lse */
            memcpy(S.rl, S.lse, sizeof(float) * (size_t)(B * H * S.mq));
            attn_input rdins[1] = {{"slope", {.data = dslope_ring, .ndim = 1, .shape = {H}}}};
            attn_grad_call rg = {.dout = t4(S.dout, B, H, S.mq, DV), .dq = t4(S.rdq, B, H, S.mq, DQ), .dk = t4(S.rdk, B, KH, S.mk, DQ),
                                 .dv = t4(S.rdv, B, KH, S.mk, DV), .dinputs = rdins, .ndinputs = nd};
            s = attn_ring_run_backward(kern, &rc, &rg, MPI_COMM_WORLD, &st, &err);
            CHECK(s == ATTN_OK, "%s %s backward R=%d rank %d: %s", cs->name, shn, R, me, err.message);
            if (s == ATTN_OK) {
                double eq = max_diff(S.rdq, S.dq, B * H * S.mq * DQ), ek = max_diff(S.rdk, S.dk, B * KH * S.mk * DQ),
                       ev = max_diff(S.rdv, S.dv, B * KH * S.mk * DV), ei = nd ? max_diff(dslope_ring, dslope, H) : 0;
                CHECK(eq < 1e-4 && ek < 1e-4 && ev < 1e-4 && ei < 1e-4,
                      "%s %s backward R=%d rank %d: dq %g dk %g dv %g dslope %g", cs->name, shn, R, me, eq, ek, ev, ei);
                /* deterministic: the same call again gives the same bits */
                float *again = malloc(sizeof(float) * (size_t)(B * KH * S.mk * DQ + 1));
                REQUIRE(again, "out of memory");
                memcpy(again, S.rdk, sizeof(float) * (size_t)(B * KH * S.mk * DQ));
                s = attn_ring_run_backward(kern, &rc, &rg, MPI_COMM_WORLD, NULL, &err);
                CHECK(s == ATTN_OK && !memcmp(again, S.rdk, sizeof(float) * (size_t)(B * KH * S.mk * DQ)),
                      "%s %s: the backward is not deterministic", cs->name, shn);
                free(again);
            }
        }
        shard_free(&S);
    }
    free(q), free(k), free(v), free(o), free(lse), free(dout), free(dq), free(dk), free(dv), free(doc);
    free(diag);
    attn_kernel_free(kern);
}

/* Blocks storing 16-bit or int8 tensors (dtype, kv_dtype) and 8-bit compute: the ring's rows
 * against the single-process kernel on the same stored values. o is in the storage type (the
 * ring merges its parts in f32 and rounds once more: a unit in the last place apart at most),
 * the gradients f32. With `twin` (the same block stored in f32), the K/V bytes sent are
 * compared: 16-bit K/V send half of what f32 K/V do. */
typedef struct TCase {
    const char *name, *text, *twin;
    int64_t batch, q_len, kv_len;
    double tol_o, tol_l; /* of o and lse, |ring - single| / (1 + |single|) (8-bit compute: the ring's key
                          * windows quantize other tiles than one call over every key) */
} TCase;

/* x rounded to t's values, stored at p[i] (int8: x is the integer) */
static void put(void *p, attn_dtype t, int64_t i, float x) {
    if (t == ATTN_F16) ((uint16_t *)p)[i] = npy_f32_to_f16(x);
    else if (t == ATTN_BF16) ((uint16_t *)p)[i] = npy_f32_to_bf16(x);
    else if (t == ATTN_I8) ((int8_t *)p)[i] = (int8_t)x;
    else ((float *)p)[i] = x;
}
static float get(const void *p, attn_dtype t, int64_t i) {
    if (t == ATTN_F16) return npy_f16_to_f32(((const uint16_t *)p)[i]);
    if (t == ATTN_BF16) return npy_bf16_to_f32(((const uint16_t *)p)[i]);
    if (t == ATTN_I8) return ((const int8_t *)p)[i];
    return ((const float *)p)[i];
}
static float *widened(const void *p, attn_dtype t, int64_t n) {
    float *w = malloc(sizeof(float) * (size_t)(n + 1));
    REQUIRE(w, "out of memory");
    for (int64_t i = 0; i < n; i++) w[i] = get(p, t, i);
    return w;
}

static attn_kernel *compile_or_die(const char *name, const char *text) {
    attn_options opts;
    attn_options_init(&opts);
    opts.threads = 1;
    attn_kernel *kern = NULL;
    attn_error err;
    char *diag = NULL;
    REQUIRE(attn_compile(name, text, &opts, &kern, &diag, &err) == ATTN_OK, "%s: %s %s", name, err.message,
            diag ? diag : "");
    free(diag);
    return kern;
}

static void run_typed(const TCase *cs) {
    attn_kernel *kern = compile_or_die(cs->name, cs->text);
    const attn_rt_desc *d = attn_kernel_desc(kern);
    attn_dtype qt = d->dtype, kt = d->kv_f32 ? ATTN_F32 : d->kv_dtype != ATTN_F32 ? d->kv_dtype : d->dtype;
    size_t eq = esize(qt), ek = esize(kt);
    int64_t B = cs->batch, H = d->heads, KH = d->kv_heads, DQ = d->qk_dim, DV = d->v_dim, Lq = cs->q_len,
            Lk = cs->kv_len;
    int64_t nq = B * H * Lq, nk = B * KH * Lk;
    uint64_t seed = 7;
    float *x = malloc(sizeof(float) * (size_t)(nq * DQ + nk * (DQ + DV) + nq * DV + 1));
    REQUIRE(x, "out of memory");
    check_fill(x, (size_t)(nq * DQ + nk * (DQ + DV) + nq * DV), &seed, CHECK_NORMAL, 1.0);
    void *q = malloc(eq * (size_t)(nq * DQ + 1)), *k = malloc(ek * (size_t)(nk * DQ + 1)),
         *v = malloc(ek * (size_t)(nk * DV + 1)), *o = malloc(eq * (size_t)(nq * DV + 1));
    float *lse = malloc(sizeof(float) * (size_t)(nq + 1)), *dout = x + nq * DQ + nk * (DQ + DV),
          *dq = malloc(sizeof(float) * (size_t)(nq * DQ + 1)), *dk = malloc(sizeof(float) * (size_t)(nk * DQ + 1)),
          *dv = malloc(sizeof(float) * (size_t)(nk * DV + 1));
    float *ksc = malloc(sizeof(float) * (size_t)(2 * nk + 1)), *vsc = ksc + nk;
    REQUIRE(q && k && v && o && lse && dq && dk && dv && ksc, "out of memory");
    for (int64_t i = 0; i < nq * DQ; i++) put(q, qt, i, x[i]);
    for (int64_t i = 0; i < nk; i++) { /* int8: a scale per token and K/V head */
        ksc[i] = (float)(0.02 * (1 + 0.5 * check_int(&seed, 0, 8) / 8.0));
        vsc[i] = (float)(0.02 * (1 + 0.5 * check_int(&seed, 0, 8) / 8.0));
    }
    for (int64_t i = 0; i < nk * DQ; i++) {
        float y = x[nq * DQ + i];
        put(k, kt, i, kt == ATTN_I8 ? fmaxf(-127.f, fminf(127.f, rintf(y / ksc[i / DQ]))) : y);
    }
    for (int64_t i = 0; i < nk * DV; i++) {
        float y = x[nq * DQ + nk * DQ + i];
        put(v, kt, i, kt == ATTN_I8 ? fmaxf(-127.f, fminf(127.f, rintf(y / vsc[i / DV]))) : y);
    }
    attn_input in[2] = {{"k_scale", {.data = ksc, .ndim = 3, .shape = {B, KH, Lk}}},
                        {"v_scale", {.data = vsc, .ndim = 3, .shape = {B, KH, Lk}}}};
    int nin = kt == ATTN_I8 ? 2 : 0;
    attn_error err;
    attn_call call = {.q = t4(q, B, H, Lq, DQ), .k = t4(k, B, KH, Lk, DQ), .v = t4(v, B, KH, Lk, DV),
                      .o = t4(o, B, H, Lq, DV), .lse = t3(lse, B, H, Lq), .inputs = in, .ninputs = nin};
    REQUIRE(attn_run(kern, &call, &err) == ATTN_OK, "%s: %s", cs->name, err.message);
    bool grad = attn_kernel_grad_inputs(kern, NULL) >= 0;
    attn_grad_call gc = {.dout = t4(dout, B, H, Lq, DV), .dq = t4(dq, B, H, Lq, DQ), .dk = t4(dk, B, KH, Lk, DQ),
                         .dv = t4(dv, B, KH, Lk, DV)};
    if (grad) REQUIRE(attn_run_backward(kern, &call, &gc, &err) == ATTN_OK, "%s backward: %s", cs->name, err.message);
    attn_kernel *twin = cs->twin ? compile_or_die(cs->name, cs->twin) : NULL;
    float *k32 = twin ? widened(k, kt, nk * DQ) : NULL, *v32 = twin ? widened(v, kt, nk * DV) : NULL;

    for (int shv = 0; shv < 2; shv++) {
        attn_shard sh = (attn_shard)shv;
        const char *shn = shv ? "zigzag" : "contiguous";
        Shard S;
        attn_ring_call rc = shard_make(&S, q, k, v, o, eq, ek, lse, dout, dq, dk, dv, B, H, KH, Lq, Lk, DQ, DV, sh, in, nin);
        attn_ring_stats st;
        attn_status s = attn_ring_run(kern, &rc, MPI_COMM_WORLD, &st, &err);
        CHECK(s == ATTN_OK, "%s %s R=%d rank %d: %s", cs->name, shn, R, me, err.message);
        if (s == ATTN_OK) {
            float *a = widened(S.ro, qt, B * H * S.mq * DV), *b = widened(S.o, qt, B * H * S.mq * DV);
            double eo = max_diff(a, b, B * H * S.mq * DV), el = max_diff(S.rl, S.lse, B * H * S.mq);
            CHECK(eo < cs->tol_o && el < cs->tol_l, "%s %s R=%d rank %d: o differs by %g, lse by %g", cs->name, shn, R,
                  me, eo, el);
            free(a), free(b);
        }
        if (twin && s == ATTN_OK) { /* the same K/V values stored in f32: twice the bytes (16-bit) */
            float *tq = widened(S.q, qt, B * H * S.mq * DQ), *to = malloc(sizeof(float) * (size_t)(B * H * S.mq * DV + 1)),
                  *tk = shard_of(k32, B, KH, Lk, DQ, sh, &S.mk), *tv = shard_of(v32, B, KH, Lk, DV, sh, &S.mk);
            REQUIRE(to, "out of memory");
            attn_ring_call tc = rc;
            tc.q = t4(tq, B, H, S.mq, DQ), tc.k = t4(tk, B, KH, S.mk, DQ), tc.v = t4(tv, B, KH, S.mk, DV);
            tc.o = t4(to, B, H, S.mq, DV), tc.lse = (attn_tensor){0};
            attn_ring_stats st32;
            s = attn_ring_run(twin, &tc, MPI_COMM_WORLD, &st32, &err);
            CHECK(s == ATTN_OK, "%s twin: %s", cs->name, err.message);
            CHECK(st.bytes_sent * 4 == st32.bytes_sent * (int64_t)ek && st.pairs_computed == st32.pairs_computed &&
                      (R == 1 || sh == ATTN_SHARD_ZIGZAG || me == R - 1 || st.bytes_sent > 0),
                  "%s %s R=%d rank %d: sent %lld bytes, f32 K/V %lld", cs->name, shn, R, me, (long long)st.bytes_sent,
                  (long long)st32.bytes_sent);
            free(tq), free(to), free(tk), free(tv);
        }
        if (grad) {
            memcpy(S.ro, S.o, eq * (size_t)(B * H * S.mq * DV)); /* the forward's o and lse */
            memcpy(S.rl, S.lse, sizeof(float) * (size_t)(B * H * S.mq));
            attn_grad_call rg = {.dout = t4(S.dout, B, H, S.mq, DV), .dq = t4(S.rdq, B, H, S.mq, DQ),
                                 .dk = t4(S.rdk, B, KH, S.mk, DQ), .dv = t4(S.rdv, B, KH, S.mk, DV)};
            s = attn_ring_run_backward(kern, &rc, &rg, MPI_COMM_WORLD, &st, &err);
            CHECK(s == ATTN_OK, "%s %s backward R=%d rank %d: %s", cs->name, shn, R, me, err.message);
            if (s == ATTN_OK) {
                double e1 = max_diff(S.rdq, S.dq, B * H * S.mq * DQ), e2 = max_diff(S.rdk, S.dk, B * KH * S.mk * DQ),
                       e3 = max_diff(S.rdv, S.dv, B * KH * S.mk * DV);
                CHECK(e1 < 1e-4 && e2 < 1e-4 && e3 < 1e-4, "%s %s backward R=%d rank %d: dq %g dk %g dv %g", cs->name,
                      shn, R, me, e1, e2, e3);
            }
        }
        shard_free(&S);
    }
    free(x), free(q), free(k), free(v), free(o), free(lse), free(dq), free(dk), free(dv), free(ksc), free(k32), free(v32);
    attn_kernel_free(twin);
    attn_kernel_free(kern);
}

/* The last rank passes three key rows too many: every rank fails with the same status. */
static void mismatch(void) {
    if (R < 2) return;
    attn_options opts;
    attn_options_init(&opts);
    opts.threads = 1;
    attn_kernel *kern = NULL;
    attn_error err;
    REQUIRE(attn_compile("mismatch", "attention c { heads = 2; head_dim = 8; mask = causal; }", &opts, &kern, NULL,
                         &err) == ATTN_OK, "%s", err.message);
    int64_t n = 40, mq = attn_ring_shard_rows(n, R, me, ATTN_SHARD_CONTIGUOUS), mk = mq + 3 * (me == R - 1);
    float *buf = calloc((size_t)(2 * (mq + mk) * 8 * 2 + 2 * mq), sizeof(float));
    REQUIRE(buf, "out of memory");
    attn_ring_call rc = {.q = t4(buf, 1, 2, mq, 8), .k = t4(buf + 16 * mq, 1, 2, mk, 8),
                         .v = t4(buf + 16 * (mq + mk), 1, 2, mk, 8), .o = t4(buf + 16 * (mq + 2 * mk), 1, 2, mq, 8),
                         .threads = 1};
    attn_status s = attn_ring_run(kern, &rc, MPI_COMM_WORLD, NULL, &err);
    int codes[2] = {(int)s, -(int)s}, red[2];
    MPI_Allreduce(codes, red, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    CHECK(s == ATTN_ERR_SHAPE && red[0] == -red[1], "mismatched sizes: rank %d got %s (%s)", me, attn_status_name(s),
          err.message);
    CHECK(strstr(err.message, "k") != NULL, "mismatched sizes: the message names k: %s", err.message);
    if (me == 0) printf("mismatch: %s\n", err.message);
    /* a descriptor storing a type the ring does not take: ATTN_ERR_DTYPE naming it, on every rank */
    attn_rt_desc bad = *attn_kernel_desc(kern);
    bad.dtype = ATTN_I32;
    const attn_rt_desc *bp = &bad;
    s = attn_ring_launch(&bp, 1, &rc, MPI_COMM_WORLD, NULL, NULL, &err);
    CHECK(s == ATTN_ERR_DTYPE && strstr(err.message, "i32"), "an i32 descriptor: rank %d got %s (%s)", me,
          attn_status_name(s), err.message);
    /* a rank with another dtype of sizes (v_dim) fails everyone too */
    rc.v.shape[3] = me == 0 ? 9 : 8;
    rc.k.shape[2] = rc.v.shape[2] = mq;
    s = attn_ring_run(kern, &rc, MPI_COMM_WORLD, NULL, &err);
    codes[0] = (int)s;
    codes[1] = -(int)s;
    MPI_Allreduce(codes, red, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    CHECK(s != ATTN_OK && red[0] == -red[1], "mismatched v_dim: rank %d got %s (%s)", me, attn_status_name(s),
          err.message);
    free(buf);
    attn_kernel_free(kern);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_size(MPI_COMM_WORLD, &R);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    static const Case cases[] = {
        {"causal_gqa", "attention a { heads = 4; kv_heads = 2; head_dim = 16; mask = causal; }", 2, 203, 203, 0, 0},
        {"sliding", "attention a { heads = 2; head_dim = 16; v_dim = 8; mask = sliding(20); }", 1, 203, 203, 2, 0},
        {"packed_docs",
         "attention a { input i32 doc[batch, seq]; heads = 2; head_dim = 8; mask = k <= q && doc[b, k] == doc[b, q]; }",
         2, 177, 177, 0, 0},
        /* documents of at most 20 positions, shards of 44 or more: a rank needs one neighbour */
        {"packed_short",
         "attention a { input i32 doc[batch, seq]; heads = 2; head_dim = 8; mask = k <= q && doc[b, k] == doc[b, q]; }",
         2, 177, 177, 2, 20},
        {"bidirectional", "attention a { heads = 3; head_dim = 8; v_dim = 12; }", 1, 150, 203, 0, 0},
        {"alibi_mqa",
         "attention a { input f32 slope[heads]; heads = 4; kv_heads = 1; head_dim = 8; mask = causal;"
         " score = score - slope[h] * (q - k); }",
         1, 161, 161, 0, 0},
        {"unilm", "attention a { input i32 src_len[batch]; heads = 2; head_dim = 8; mask = k < src_len[b] || k <= q; }",
         2, 131, 131, 0, 0},
        {"xlnet_window", "attention a { heads = 2; head_dim = 8; mask = window(9) || k < 3; }", 1, 140, 140, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    static const TCase typed[] = {
        {"bf16_causal_gqa", "attention a { heads = 4; kv_heads = 2; head_dim = 16; mask = causal; dtype = bf16; }",
         "attention a { heads = 4; kv_heads = 2; head_dim = 16; mask = causal; }", 2, 181, 181, 1e-2, 2e-5},
        {"f16_sliding", "attention a { heads = 2; head_dim = 16; v_dim = 8; mask = sliding(20); dtype = f16; }",
         "attention a { heads = 2; head_dim = 16; v_dim = 8; mask = sliding(20); }", 1, 181, 181, 2e-3, 2e-5},
        {"kv_bf16_bidirectional", "attention a { heads = 3; head_dim = 8; v_dim = 12; kv_dtype = bf16; }", NULL, 1, 150,
         181, 2e-5, 2e-5},
        {"kv_f16_causal_mqa", "attention a { heads = 4; kv_heads = 1; head_dim = 16; mask = causal; kv_dtype = f16; }",
         NULL, 1, 181, 181, 2e-5, 2e-5},
        {"kv_int8_causal", "attention a { heads = 2; head_dim = 16; mask = causal; kv_dtype = int8; }", NULL, 1, 181,
         181, 2e-5, 2e-5},
        /* any kv_dtype under any dtype */
        {"bf16_kv_f32_causal_gqa",
         "attention a { heads = 4; kv_heads = 2; head_dim = 16; mask = causal; dtype = bf16; kv_dtype = f32; }", NULL, 1,
         181, 181, 1e-2, 2e-5},
        {"f16_kv_bf16_sliding",
         "attention a { heads = 2; head_dim = 16; v_dim = 8; mask = sliding(20); dtype = f16; kv_dtype = bf16; }",
         "attention a { heads = 2; head_dim = 16; v_dim = 8; mask = sliding(20); }", 1, 181, 181, 2e-3, 2e-5},
        {"bf16_kv_int8_causal", "attention a { heads = 2; head_dim = 16; mask = causal; dtype = bf16; kv_dtype = int8; }",
         NULL, 1, 181, 181, 1e-2, 2e-5},
        {"compute_bf16", "attention a { heads = 4; kv_heads = 2; head_dim = 16; mask = causal; compute = bf16; }", NULL,
         1, 181, 181, 5e-3, 1e-3},
        {"compute_int8", "attention a { heads = 2; head_dim = 32; mask = sliding(40); compute = int8; }", NULL, 1, 181,
         181, 5e-2, 3e-2},
    };
    for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++) run_typed(&typed[i]);
    mismatch();
    char name[32];
    snprintf(name, sizeof name, "ring R=%d rank %d", R, me);
    int rc = check_done(name), all = 0;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return all;
}
