/* test_paged_dtype.c — paged KV caches stored in f16, bf16 and int8 (`dtype`, `kv_dtype`) and
 * paged kernels with `compute = bf16 | int8`, against the double-precision IR interpreter of the
 * same block in f32 run sequence by sequence on the gathered pages.
 *
 * Storage modes (compute = f32) are checked on the stored values (16-bit rounded, int8
 * dequantized with the page scales) to within float rounding and o's own rounding; compute modes
 * and int8 pages written by the append helper are checked on the unrounded inputs against the
 * documented bounds (bf16: cosine >= 0.9999, relative L1 <= 1e-2; int8: >= 0.999, <= 3e-2), with
 * N(0,1) K and K with outlier channels. Pages are shuffled; unused pages, rows past a sequence's
 * end, their scales and the page table past its last page hold garbage (NaN, NaN scales, bad
 * indices). Batches mix empty sequences, length 1, exactly one page, non-multiples, decode of
 * long sequences split over threads and chunked prefill. Bad scales fail naming the tensor. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"
#include "stored.h"
#include "ir/util.h"
#include "lib/driver.h"
#include "paged_ref.h"

static uint64_t rng = 19;

/* garbage of type t at dst[i]: NaN (int8: any byte; its scale is NaN) */
static void garbage(attn_dtype t, void *dst, size_t i) {
    if (t == ATTN_BF16) ((uint16_t *)dst)[i] = 0x7fc0;
    else if (t == ATTN_F16) ((uint16_t *)dst)[i] = 0x7e00;
    else if (t == ATTN_I8) ((int8_t *)dst)[i] = (int8_t)check_int(&rng, -128, 127);
    else ((float *)dst)[i] = NAN;
}

typedef struct Batch {
    int B, P, H, KH, DQ, DV, NP, MP, T;
    attn_dtype dt, kv;
    int32_t *starts, *lens, *table;
    float *q, *kp, *vp;       /* the values the reference reads (stored, or exact: see `exact`) */
    float *q0, *kp0, *vp0;    /* the unrounded values */
    void *qs, *ks, *vs;       /* the kernel's storage */
    float *ksc, *vsc;         /* int8: [NP, P, KH] */
} Batch;

static void batch_free(Batch *x) {
    free(x->starts), free(x->lens), free(x->table), free(x->q), free(x->kp), free(x->vp), free(x->q0), free(x->kp0);
    free(x->vp0), free(x->qs), free(x->ks), free(x->vs), free(x->ksc), free(x->vsc);
}

/* One K or V row of D values into storage (int8: quantized with its scale), the stored values
 * into val. */
static void put_row(attn_dtype kv, const float *x, int D, void *st, size_t at, float *val, float *scale) {
    if (kv != ATTN_I8) {
        for (int d = 0; d < D; d++) val[d] = store(kv, st, at + (size_t)d, x[d]);
        return;
    }
    float m = 0;
    for (int d = 0; d < D; d++) m = fmaxf(m, fabsf(x[d]));
    *scale = m / 127.0f;
    float inv = m > 0 ? 127.0f / m : 0.0f; /* the documented rounding: round(x * (127 / m)), to even */
    for (int d = 0; d < D; d++) {
        int8_t qv = (int8_t)lrintf(x[d] * inv);
        ((int8_t *)st)[at + (size_t)d] = qv;
        val[d] = (float)qv * *scale;
    }
}

/* n[b] query rows, L[b] keys; pages shuffled, garbage elsewhere; outliers: K with a bias of 8
 * on channels 0-3 shared by every token and 5x the spread on channels 4-7. */
static void batch_make(Batch *x, int B, const int *n, const int *L, int P, int H, int KH, int DQ, int DV, attn_dtype dt,
                       attn_dtype kv, bool outliers) {
    memset(x, 0, sizeof *x);
    x->B = B, x->P = P, x->H = H, x->KH = KH, x->DQ = DQ, x->DV = DV, x->dt = dt, x->kv = kv;
    x->starts = malloc(sizeof(int32_t) * (size_t)(B + 1));
    x->lens = malloc(sizeof(int32_t) * (size_t)B);
    int used = 0, mp = 1;
    x->starts[0] = 0;
    for (int b = 0; b < B; b++) {
        x->starts[b + 1] = x->starts[b] + n[b];
        x->lens[b] = L[b];
        int pages = (L[b] + P - 1) / P;
        used += pages;
        if (pages + 2 > mp) mp = pages + 2;
    }
    x->T = x->starts[B], x->MP = mp, x->NP = used + 3;
    int *perm = malloc(sizeof(int) * (size_t)x->NP);
    for (int i = 0; i < x->NP; i++) perm[i] = i;
    for (int i = x->NP - 1; i > 0; i--) {
        int j = (int)check_int(&rng, 0, i), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    x->table = malloc(sizeof(int32_t) * (size_t)(B * mp));
    for (int i = 0; i < B * mp; i++) x->table[i] = check_int(&rng, 0, 1) ? -7 : 0x7fffffff;
    size_t ks = (size_t)x->NP * P * KH * DQ, vs = (size_t)x->NP * P * KH * DV, ns = (size_t)x->NP * P * KH;
    x->kp = malloc(4 * ks), x->vp = malloc(4 * vs), x->kp0 = malloc(4 * ks), x->vp0 = malloc(4 * vs);
    x->ks = malloc(esize(kv) * ks), x->vs = malloc(esize(kv) * vs);
    for (size_t i = 0; i < ks; i++) x->kp[i] = x->kp0[i] = NAN, garbage(kv, x->ks, i);
    for (size_t i = 0; i < vs; i++) x->vp[i] = x->vp0[i] = NAN, garbage(kv, x->vs, i);
    if (kv == ATTN_I8) {
        x->ksc = malloc(4 * ns), x->vsc = malloc(4 * ns);
        for (size_t i = 0; i < ns; i++) x->ksc[i] = x->vsc[i] = NAN;
    }
    int next = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < (L[b] + P - 1) / P; j++) {
            int pg = perm[next++];
            x->table[b * mp + j] = pg;
            for (int r = 0; r < P && j * P + r < L[b]; r++)
                for (int h = 0; h < KH; h++) {
                    size_t row = ((size_t)pg * P + r) * KH + h, ko = row * DQ, vo = row * DV;
                    check_fill(x->kp0 + ko, (size_t)DQ, &rng, CHECK_NORMAL, 1.0);
                    check_fill(x->vp0 + vo, (size_t)DV, &rng, CHECK_NORMAL, 1.0);
                    for (int d = 0; outliers && d < 8 && d < DQ; d++)
                        x->kp0[ko + d] = d < 4 ? x->kp0[ko + d] + 8.0f : x->kp0[ko + d] * 5.0f;
                    put_row(kv, x->kp0 + ko, DQ, x->ks, ko, x->kp + ko, x->ksc ? x->ksc + row : NULL);
                    put_row(kv, x->vp0 + vo, DV, x->vs, vo, x->vp + vo, x->vsc ? x->vsc + row : NULL);
                }
        }
    free(perm);
    size_t nq = (size_t)x->T * H * DQ;
    x->q = malloc(4 * nq + 4), x->q0 = malloc(4 * nq + 4), x->qs = malloc(esize(dt) * nq + 4);
    check_fill(x->q0, nq, &rng, CHECK_NORMAL, 1.0);
    for (size_t i = 0; i < nq; i++) x->q[i] = store(dt, x->qs, i, x->q0[i]);
}

/* The reference of sequence b (ro [n][H][DV], rl [n][H]) on the stored values, or on the
 * unrounded ones (exact). */
static bool reference(const IrFunc *f, const Batch *x, int b, const attn_input *in, int nin, bool exact, double *ro,
                      double *rl) {
    PagedShape s = {x->B, x->P, x->H, x->KH, x->DQ, x->DV, x->MP, x->starts, x->lens, x->table};
    return paged_reference(f, &s, exact ? x->q0 : x->q, exact ? x->kp0 : x->kp, exact ? x->vp0 : x->vp, b, in, nin, ro,
                           rl);
}

/* The call over x with o (storage dt) and lse, the spec's inputs in[0 .. nin) and the scales. */
static attn_paged_call batch_call(const Batch *x, void *o, float *lse, attn_input *in, int nin) {
    attn_paged_call c;
    memset(&c, 0, sizeof c);
    c.q = (attn_tensor){x->qs, 3, {x->T, x->H, x->DQ}, {0}};
    c.k_pages = (attn_tensor){x->ks, 4, {x->NP, x->P, x->KH, x->DQ}, {0}};
    c.v_pages = (attn_tensor){x->vs, 4, {x->NP, x->P, x->KH, x->DV}, {0}};
    c.page_table = (attn_tensor){x->table, 2, {x->B, x->MP}, {0}};
    c.kv_lens = (attn_tensor){x->lens, 1, {x->B}, {0}};
    c.q_starts = (attn_tensor){x->starts, 1, {x->B + 1}, {0}};
    c.o = (attn_tensor){o, 3, {x->T, x->H, x->DV}, {0}};
    c.lse = (attn_tensor){lse, 2, {x->T, x->H}, {0}};
    if (x->kv == ATTN_I8) {
        in[nin++] = (attn_input){"k_scale", {x->ksc, 3, {x->NP, x->P, x->KH}, {0}}};
        in[nin++] = (attn_input){"v_scale", {x->vsc, 3, {x->NP, x->P, x->KH}, {0}}};
    }
    c.inputs = in;
    c.ninputs = nin;
    return c;
}

typedef struct Stats { double cos, l1; } Stats;

/* Runs x and compares it with the reference: within rounding (approx false: compute f32 on the
 * stored values), or within the bounds of `approx` (1 bf16, 2 int8) on the unrounded values. */
static Stats run_check(attn_kernel *kern, const IrFunc *f, const Batch *x, const attn_input *user, int nin, int threads,
                       int approx, const char *label) {
    size_t on = (size_t)x->T * x->H * x->DV + 1, ln = (size_t)x->T * x->H + 1;
    void *o = malloc(esize(x->dt) * on);
    float *lse = malloc(sizeof(float) * ln);
    for (size_t i = 0; i < on; i++) store(x->dt, o, i, 12345.0f);
    for (size_t i = 0; i < ln; i++) lse[i] = 12345.0f;
    attn_input in[8];
    if (nin) memcpy(in, user, sizeof(attn_input) * (size_t)nin);
    attn_paged_call c = batch_call(x, o, lse, in, nin);
    c.threads = threads;
    attn_error err;
    attn_status st = attn_run_paged(kern, &c, &err);
    CHECK(st == ATTN_OK, "%s (threads %d): %s: %s", label, threads, attn_status_name(st), err.message);
    double worst = 0, worst_l = 0, dot = 0, nr = 0, ng = 0, sl1 = 0, sr = 0;
    double rel = x->dt == ATTN_BF16 ? 1.0 / 256 : x->dt == ATTN_F16 ? 1.0 / 1024 : 0;
    for (int b = 0; st == ATTN_OK && b < x->B; b++) {
        int n = x->starts[b + 1] - x->starts[b];
        double *ro = malloc(sizeof(double) * (size_t)(n * x->H * x->DV + 1)), *rl = malloc(sizeof(double) * (size_t)(n * x->H + 1));
        REQUIRE(reference(f, x, b, user, nin, approx != 0, ro, rl), "%s: the reference failed", label);
        for (int i = 0; i < n * x->H; i++) {
            int64_t row = (int64_t)x->starts[b] * x->H + i;
            double gl = lse[row], wl = rl[i];
            double dl = isinf(wl) ? (gl == wl ? 0 : INFINITY) : fabs(gl - wl) / (approx ? 1 + fabs(wl) : 1);
            if (!(dl <= worst_l)) worst_l = isnan(dl) ? INFINITY : dl;
            for (int d = 0; d < x->DV; d++) {
                double g = load(x->dt, o, (size_t)row * x->DV + (size_t)d), r = ro[(size_t)i * x->DV + d];
                double e = fabs(g - r) - rel * fabs(r);
                if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
                dot += g * r, nr += r * r, ng += g * g, sl1 += fabs(g - r), sr += fabs(r);
            }
        }
        free(ro), free(rl);
    }
    Stats s = {dot / sqrt(nr * ng + 1e-300), sl1 / (sr + 1e-300)};
    if (!isfinite(worst)) s.cos = 0, s.l1 = INFINITY;
    if (approx == 0) {
        CHECK(worst < 2e-4 && worst_l < 2e-4, "%s (threads %d, P %d): max error o %.3g (past o's rounding), lse %.3g",
              label, threads, x->P, worst, worst_l);
    } else {
        double min_cos = approx == 1 ? 0.9999 : 0.999, max_l1 = approx == 1 ? 1e-2 : 3e-2;
        CHECK(s.cos >= min_cos && s.l1 <= max_l1 && worst_l < 0.05, "%s (threads %d): cosine %.7f, rel L1 %.3g, lse %.3g",
              label, threads, s.cos, s.l1, worst_l);
    }
    free(o), free(lse);
    return s;
}

static attn_kernel *compile(const char *text, const char *ref_text, IrModule **mod, IrFunc **f) {
    attn_options opts;
    attn_options_init(&opts);
    attn_kernel *k = NULL;
    char *diags = NULL;
    attn_error err;
    attn_status st = attn_compile("paged.attn", text, &opts, &k, &diags, &err);
    CHECK(st == ATTN_OK, "compile %s: %s: %s\n%s", text, attn_status_name(st), err.message, diags ? diags : "");
    attn_free(diags);
    StrBuf sd;
    sb_init(&sd);
    *mod = drv_parse("ref.attn", ref_text, &opts, &sd, &err);
    *f = *mod ? drv_select(*mod, NULL, &err) : NULL;
    CHECK(*f != NULL, "parse for the reference: %s %s", err.message, sb_str(&sd));
    sb_free(&sd);
    return st == ATTN_OK && *f ? k : (attn_kernel_free(k), NULL);
}

typedef struct Mode {
    const char *name, *stmts;
    attn_dtype dt, kv;
    int approx; /* 0: exact on stored values; 1: bf16 compute; 2: int8 compute */
} Mode;

/* The mixed batch (empty, 1 key, one page, a long decode, chunked prefill, non-multiples), then
 * a long decode beside short ones (split over threads); outliers: K with outlier channels. */
static void mixed_case(const char *label, const char *body, const Mode *m, int P, int H, int KH, int DQ, int DV,
                       int which_input, bool outliers) {
    char text[1024], ref[1024], name[256];
    snprintf(text, sizeof text, "attention t { kv_cache = paged(%d); %s %s }", P, body, m->stmts);
    snprintf(ref, sizeof ref, "attention t { %s }", body);
    snprintf(name, sizeof name, "%s, %s%s", label, m->name, outliers ? ", outlier K" : "");
    IrModule *mod;
    IrFunc *f;
    attn_kernel *kern = compile(text, ref, &mod, &f);
    if (!kern) {
        ir_module_free(mod);
        return;
    }
    /* the runtime visits only the keys a task may see and decodes the query heads of a K/V head
     * together through these, whatever the storage and compute */
    const attn_rt_desc *dd = attn_kernel_desc(kern);
    CHECK(dd->grad_bounds && dd->grad_head_kv && (H / KH < 4 || (dd->group && dd->group_size == H / KH)),
          "%s: no key bounds or head groups for the paged runtime", name);
    enum { B = 7 };
    int n[B] = {0, 1, 1, P, 1, 37, 3}, L[B] = {0, 1, P, P, 1500 + (int)check_int(&rng, 0, 600), 300, 90};
    attn_input in[1];
    int32_t src[B];
    float slope[64];
    int nin = 0;
    if (which_input == 2) {
        for (int h = 0; h < H; h++) slope[h] = (float)(0.05 * (h + 1));
        in[0] = (attn_input){"slope", {slope, 1, {H}, {0}}};
        nin = 1;
    }
    Batch x;
    for (int round = 0; round < 2; round++) {
        int n2[B] = {1, 1, 1, 0, 1, 1, 1}, L2[B] = {4000 + (int)check_int(&rng, 0, 999), 20, 1, 0, 2, P + 1, 700};
        const int *nn = round ? n2 : n, *LL = round ? L2 : L;
        if (which_input == 1) {
            for (int b = 0; b < B; b++) src[b] = (int32_t)check_int(&rng, 0, LL[b]);
            in[0] = (attn_input){"src_len", {src, 1, {B}, {0}}};
            nin = 1;
        }
        batch_make(&x, B, nn, LL, P, H, KH, DQ, DV, m->dt, m->kv, outliers);
        Stats s = run_check(kern, f, &x, in, nin, round ? 3 : 1, m->approx, name);
        run_check(kern, f, &x, in, nin, 2, m->approx, name);
        if (m->approx && round == 0) printf("%-44s cosine %.7f  rel L1 %.2e\n", name, s.cos, s.l1);
        batch_free(&x);
    }
    attn_kernel_free(kern);
    ir_module_free(mod);
}

/* Bad scales fail with ATTN_ERR_INPUT naming the tensor, before o is written. */
static void bad_scales(void) {
    IrModule *mod;
    IrFunc *f;
    attn_kernel *kern = compile("attention t { kv_cache = paged(8); heads = 2; kv_heads = 1; head_dim = 8; mask = causal; "
                                "kv_dtype = int8; }",
                                "attention t { heads = 2; kv_heads = 1; head_dim = 8; mask = causal; }", &mod, &f);
    if (!kern) {
        ir_module_free(mod);
        return;
    }
    int n[2] = {1, 2}, L[2] = {9, 20};
    Batch x;
    batch_make(&x, 2, n, L, 8, 2, 1, 8, 8, ATTN_F32, ATTN_I8, false);
    float o[3 * 2 * 8], lse[3 * 2];
    for (int i = 0; i < 9; i++) {
        for (int j = 0; j < 48; j++) o[j] = 7.0f;
        attn_input in[4];
        attn_paged_call c = batch_call(&x, o, lse, in, 0);
        const char *want = i % 2 ? "v_scale" : "k_scale";
        attn_input *s = &in[i % 2];
        switch (i / 2) {
        case 0: s->t.shape[0] = x.NP - 1; break;  /* num_pages */
        case 1: s->t.shape[1] = 16; break;        /* page size */
        case 2: s->t.shape[2] = 2; break;         /* kv_heads */
        case 3: s->t.ndim = 2; break;             /* rank */
        default: c.ninputs = 1; want = "v_scale"; break; /* missing */
        }
        attn_error err;
        attn_status st = attn_run_paged(kern, &c, &err);
        CHECK(st == ATTN_ERR_INPUT && strstr(err.message, want), "bad scale case %d: %s (%s), expected ATTN_ERR_INPUT naming %s",
              i, attn_status_name(st), err.message, want);
        bool untouched = true;
        for (int j = 0; j < 48; j++) untouched &= o[j] == 7.0f;
        CHECK(untouched, "bad scale case %d: o was written before the error", i);
    }
    batch_free(&x);
    attn_kernel_free(kern);
    ir_module_free(mod);
}

/* Pages filled by the append helper in three steps (a prefill, then two decode steps): int8 rows
 * quantized per token and head with their scales, f16 and bf16 rows copied; the pages and scales
 * equal an independent quantization, and a call on them matches the reference (int8: on the
 * dequantized values, and within the int8 bounds of the unquantized ones). The append's checks. */
static void append_case(attn_dtype kv, bool outliers) {
    enum { B = 4, H = 8, KH = 2, D = 32, P = 16 };
    const char *body = "heads = 8; kv_heads = 2; head_dim = 32; mask = causal;";
    char text[512];
    snprintf(text, sizeof text, "attention t { kv_cache = paged(%d); %s kv_dtype = %s; }", P, body,
             kv == ATTN_I8 ? "int8" : kv == ATTN_F16 ? "f16" : "bf16");
    char ref[256];
    snprintf(ref, sizeof ref, "attention t { %s }", body);
    IrModule *mod;
    IrFunc *f;
    attn_kernel *kern = compile(text, ref, &mod, &f);
    if (!kern) {
        ir_module_free(mod);
        return;
    }
    int n[B] = {1, 1, 3, 1}, L[B] = {37, 1, 16, 300};
    Batch x;
    batch_make(&x, B, n, L, P, H, KH, D, D, ATTN_F32, kv, outliers);
    /* keep the stored pages, then wipe them to garbage and append the rows back */
    size_t ks = (size_t)x.NP * P * KH * D, ns = (size_t)x.NP * P * KH, el = esize(kv);
    void *ks0 = malloc(el * ks), *vs0 = malloc(el * ks);
    memcpy(ks0, x.ks, el * ks), memcpy(vs0, x.vs, el * ks);
    float *ksc0 = NULL, *vsc0 = NULL;
    if (kv == ATTN_I8) {
        ksc0 = malloc(4 * ns), vsc0 = malloc(4 * ns);
        memcpy(ksc0, x.ksc, 4 * ns), memcpy(vsc0, x.vsc, 4 * ns);
        for (size_t i = 0; i < ns; i++) x.ksc[i] = x.vsc[i] = NAN;
    }
    for (size_t i = 0; i < ks; i++) garbage(kv, x.ks, i), garbage(kv, x.vs, i);
    int done[B] = {0};
    size_t nel = kv == ATTN_I8 ? 4 : el;
    char *kn = malloc(nel * 400 * KH * D), *vn = malloc(nel * 400 * KH * D);
    for (int step = 0; step < 3; step++) {
        int32_t starts[B + 1] = {0}, lens[B];
        int t = 0;
        for (int b = 0; b < B; b++) {
            int want = step == 0 ? (L[b] > 2 ? L[b] - 2 : 0) : step == 1 ? (L[b] > 1 ? L[b] - 1 : L[b]) : L[b];
            for (int j = done[b]; j < want; j++, t++) {
                size_t src = ((size_t)x.table[b * x.MP + j / P] * P + j % P) * KH * D;
                if (kv == ATTN_I8) { /* the unquantized rows */
                    memcpy(kn + (size_t)t * KH * D * 4, x.kp0 + src, 4 * KH * D);
                    memcpy(vn + (size_t)t * KH * D * 4, x.vp0 + src, 4 * KH * D);
                } else {
                    memcpy(kn + (size_t)t * KH * D * el, (char *)ks0 + src * el, el * KH * D);
                    memcpy(vn + (size_t)t * KH * D * el, (char *)vs0 + src * el, el * KH * D);
                }
            }
            done[b] = want;
            starts[b + 1] = t;
            lens[b] = want;
        }
        attn_paged_append ap;
        memset(&ap, 0, sizeof ap);
        ap.dtype = kv;
        ap.k_new = (attn_tensor){kn, 3, {t, KH, D}, {0}};
        ap.v_new = (attn_tensor){vn, 3, {t, KH, D}, {0}};
        ap.new_starts = (attn_tensor){starts, 1, {B + 1}, {0}};
        ap.k_pages = (attn_tensor){x.ks, 4, {x.NP, P, KH, D}, {0}};
        ap.v_pages = (attn_tensor){x.vs, 4, {x.NP, P, KH, D}, {0}};
        ap.page_table = (attn_tensor){x.table, 2, {B, x.MP}, {0}};
        ap.kv_lens = (attn_tensor){lens, 1, {B}, {0}};
        if (kv == ATTN_I8) {
            ap.k_scale = (attn_tensor){x.ksc, 3, {x.NP, P, KH}, {0}};
            ap.v_scale = (attn_tensor){x.vsc, 3, {x.NP, P, KH}, {0}};
        }
        attn_error err;
        if (step == 1 && kv == ATTN_I8) { /* refused before anything is written */
            float *snap = malloc(4 * ns);
            memcpy(snap, x.ksc, 4 * ns);
            attn_paged_append bad = ap;
            bad.k_scale.shape[2] = KH + 1;
            CHECK(attn_rt_paged_append(&bad, &err) == ATTN_ERR_SHAPE && strstr(err.message, "k_scale"),
                  "append with a bad k_scale: %s", err.message);
            bad = ap;
            bad.v_scale.data = NULL;
            CHECK(attn_rt_paged_append(&bad, &err) == ATTN_ERR_NULL && strstr(err.message, "v_scale"),
                  "append without v_scale: %s", err.message);
            bad = ap;
            bad.v_scale = ap.k_scale;
            CHECK(attn_rt_paged_append(&bad, &err) == ATTN_ERR_STRIDE, "append with k_scale as v_scale: %s", err.message);
            float keep = ((float *)vn)[5];
            ((float *)vn)[5] = INFINITY;
            CHECK(attn_rt_paged_append(&ap, &err) == ATTN_ERR_ARG && strstr(err.message, "v_new"),
                  "append of an inf into int8 pages: %s", err.message);
            ((float *)vn)[5] = keep;
            CHECK(memcmp(snap, x.ksc, 4 * ns) == 0, "a refused append wrote scales");
            free(snap);
        }
        attn_status st = attn_rt_paged_append(&ap, &err);
        CHECK(st == ATTN_OK, "append step %d: %s", step, err.message);
    }
    /* the valid rows equal the direct storage (int8: the same quantization and scales) */
    size_t bad = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < L[b]; j++)
            for (int h = 0; h < KH; h++) {
                size_t row = ((size_t)x.table[b * x.MP + j / P] * P + j % P) * KH + h;
                bad += memcmp((char *)x.ks + row * D * el, (char *)ks0 + row * D * el, D * el) != 0;
                bad += memcmp((char *)x.vs + row * D * el, (char *)vs0 + row * D * el, D * el) != 0;
                if (kv == ATTN_I8) bad += fabsf(x.ksc[row] - ksc0[row]) > 1e-7f * ksc0[row] || fabsf(x.vsc[row] - vsc0[row]) > 1e-7f * vsc0[row];
            }
    CHECK(bad == 0, "append %s: %zu rows differ from the direct storage", kv == ATTN_I8 ? "int8" : "16-bit", bad);
    if (kv == ATTN_I8) /* the reference's dequantized values use the appended scales */
        for (int b = 0; b < B; b++)
            for (int j = 0; j < L[b]; j++)
                for (int h = 0; h < KH; h++) {
                    size_t row = ((size_t)x.table[b * x.MP + j / P] * P + j % P) * KH + h;
                    for (int d = 0; d < D; d++) {
                        x.kp[row * D + d] = (float)((int8_t *)x.ks)[row * D + d] * x.ksc[row];
                        x.vp[row * D + d] = (float)((int8_t *)x.vs)[row * D + d] * x.vsc[row];
                    }
                }
    char label[64];
    snprintf(label, sizeof label, "after append (%s%s)", kv == ATTN_I8 ? "int8" : kv == ATTN_F16 ? "f16" : "bf16",
             outliers ? ", outlier K" : "");
    run_check(kern, f, &x, NULL, 0, 2, 0, label);
    if (kv == ATTN_I8) { /* the quantization error against the unquantized K/V */
        Stats s = run_check(kern, f, &x, NULL, 0, 2, 2, label);
        printf("%-44s cosine %.7f  rel L1 %.2e (against unquantized K/V)\n", label, s.cos, s.l1);
    }
    free(kn), free(vn), free(ks0), free(vs0), free(ksc0), free(vsc0);
    batch_free(&x);
    attn_kernel_free(kern);
    ir_module_free(mod);
}

/* 16-bit new rows into int8 pages (new_dtype f16, bf16): the pages and scales equal, bit for bit,
 * those of the same rows widened to f32 here and appended as f32 rows (a zero-initialised call's
 * new_dtype). A ragged batch: a sequence of length 1, an empty one, rows crossing page
 * boundaries, k_new strided; zero rows, f16 subnormals, bf16 values far apart in magnitude. A
 * new_dtype that int8 pages do not take, one that is not a type, or one other than the pages'
 * for 16-bit and f32 pages fails naming new_dtype before anything is written. */
static void append_new_dtype_case(attn_dtype nt) {
    enum { B = 5, KH = 3, DQ = 13, DV = 7, P = 5, KS = DQ + 2 };
    int32_t lens[B] = {1, 12, 0, 26, 9}, starts[B + 1] = {0};
    int n[B] = {1, 8, 0, 3, 9}, npg = 0;
    for (int b = 0; b < B; b++) starts[b + 1] = starts[b] + n[b], npg += (lens[b] + P - 1) / P;
    int T = starts[B], NP = npg + 2, MP = 6;
    int32_t table[B * 6];
    int *perm = malloc(sizeof(int) * (size_t)NP);
    for (int i = 0; i < NP; i++) perm[i] = i;
    for (int i = NP - 1; i > 0; i--) {
        int j = (int)check_int(&rng, 0, i), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int b = 0, u = 0; b < B; b++)
        for (int j = 0; j < MP; j++) table[b * MP + j] = j < (lens[b] + P - 1) / P ? perm[u++] : -7;
    free(perm);
    /* the new rows: k strided (KS elements per head), v contiguous; f32 copies widened here */
    uint16_t *k16 = malloc(2 * (size_t)T * KH * KS), *v16 = malloc(2 * (size_t)T * KH * DV);
    float *k32 = malloc(4 * (size_t)T * KH * DQ), *v32 = malloc(4 * (size_t)T * KH * DV);
    for (int w = 0; w < 2; w++)
        for (int r = 0; r < T * KH; r++) {
            int len = w ? DV : DQ, ld = w ? DV : KS;
            bool zero = r % 7 == 3;
            int e = nt == ATTN_F16 ? (int)check_int(&rng, -26, 14) : (int)check_int(&rng, -60, 60);
            for (int d = 0; d < len; d++) {
                float x = zero ? 0.0f : (float)ldexp(check_unit(&rng) * 2 - 1, e - (int)check_int(&rng, 0, 3));
                uint16_t *dst = (w ? v16 : k16) + (size_t)r * ld + d;
                float *wide = (w ? v32 : k32) + (size_t)r * len + d;
                if (nt == ATTN_BF16) *wide = from_bf16(*dst = to_bf16(x));
                else {
                    _Float16 h = (_Float16)x;
                    memcpy(dst, &h, 2);
                    *wide = (float)h;
                }
            }
            if (!w) k16[(size_t)r * KS + DQ] = k16[(size_t)r * KS + DQ + 1] = 0x7fc0; /* the gap: NaN */
        }
    /* two copies of the pages and scales holding garbage */
    size_t nk = (size_t)NP * P * KH * DQ, nv = (size_t)NP * P * KH * DV, ns = (size_t)NP * P * KH;
    int8_t *kp[2], *vp[2];
    float *ksc[2], *vsc[2];
    for (int c = 0; c < 2; c++) {
        kp[c] = malloc(nk), vp[c] = malloc(nv), ksc[c] = malloc(4 * ns), vsc[c] = malloc(4 * ns);
    }
    for (size_t i = 0; i < nk; i++) kp[0][i] = kp[1][i] = (int8_t)check_int(&rng, -128, 127);
    for (size_t i = 0; i < nv; i++) vp[0][i] = vp[1][i] = (int8_t)check_int(&rng, -128, 127);
    for (size_t i = 0; i < ns; i++) ksc[0][i] = ksc[1][i] = vsc[0][i] = vsc[1][i] = NAN;
    attn_paged_append ap[2];
    for (int c = 0; c < 2; c++) {
        memset(&ap[c], 0, sizeof ap[c]);
        ap[c].dtype = ATTN_I8;
        ap[c].new_starts = (attn_tensor){starts, 1, {B + 1}, {0}};
        ap[c].k_pages = (attn_tensor){kp[c], 4, {NP, P, KH, DQ}, {0}};
        ap[c].v_pages = (attn_tensor){vp[c], 4, {NP, P, KH, DV}, {0}};
        ap[c].page_table = (attn_tensor){table, 2, {B, MP}, {0}};
        ap[c].kv_lens = (attn_tensor){lens, 1, {B}, {0}};
        ap[c].k_scale = (attn_tensor){ksc[c], 3, {NP, P, KH}, {0}};
        ap[c].v_scale = (attn_tensor){vsc[c], 3, {NP, P, KH}, {0}};
    }
    ap[0].k_new = (attn_tensor){k32, 3, {T, KH, DQ}, {0}}; /* new_dtype 0: f32 */
    ap[0].v_new = (attn_tensor){v32, 3, {T, KH, DV}, {0}};
    ap[1].new_dtype = nt;
    ap[1].k_new = (attn_tensor){k16, 3, {T, KH, DQ}, {KH * KS, KS, 1}};
    ap[1].v_new = (attn_tensor){v16, 3, {T, KH, DV}, {0}};
    const char *nm = nt == ATTN_F16 ? "f16" : "bf16";
    attn_error err;
    /* refused before anything is written */
    static const int bad_int8[] = {ATTN_I8, ATTN_I32, 5, 99, -1};
    for (size_t i = 0; i < sizeof bad_int8 / sizeof bad_int8[0]; i++) {
        attn_paged_append bad = ap[1];
        bad.new_dtype = (attn_dtype)bad_int8[i];
        attn_status st = attn_rt_paged_append(&bad, &err);
        CHECK(st == ATTN_ERR_DTYPE && strstr(err.message, "new_dtype"), "int8 pages, new_dtype %d: %s (%s)",
              bad_int8[i], attn_status_name(st), err.message);
    }
    {
        uint16_t keep = k16[KS * 4 + 2];
        k16[KS * 4 + 2] = nt == ATTN_F16 ? 0x7c00 : 0x7f80; /* +inf */
        attn_status st = attn_rt_paged_append(&ap[1], &err);
        CHECK(st == ATTN_ERR_ARG && strstr(err.message, "k_new[1, 1, 2]"), "%s inf into int8 pages: %s (%s)", nm,
              attn_status_name(st), err.message);
        k16[KS * 4 + 2] = keep;
        keep = v16[DV * (T * KH - 1) + DV - 1];
        v16[DV * (T * KH - 1) + DV - 1] = nt == ATTN_F16 ? 0xfe00 : 0xffc0; /* NaN, the last element */
        st = attn_rt_paged_append(&ap[1], &err);
        CHECK(st == ATTN_ERR_ARG && strstr(err.message, "v_new"), "%s NaN into int8 pages: %s (%s)", nm,
              attn_status_name(st), err.message);
        v16[DV * (T * KH - 1) + DV - 1] = keep;
    }
    CHECK(memcmp(kp[0], kp[1], nk) == 0 && memcmp(vp[0], vp[1], nv) == 0 && memcmp(ksc[0], ksc[1], 4 * ns) == 0 &&
          memcmp(vsc[0], vsc[1], 4 * ns) == 0, "a refused %s append wrote pages or scales", nm);
    /* 16-bit and f32 pages: new_dtype 0 or theirs */
    {
        static const struct { attn_dtype pages, nt; } other[] = {
            {ATTN_F16, ATTN_BF16}, {ATTN_BF16, ATTN_F16}, {ATTN_F32, ATTN_F16}, {ATTN_F16, ATTN_F32 + 99},
            {ATTN_BF16, ATTN_I8}, {ATTN_F32, ATTN_I8}};
        uint16_t *pk = malloc(4 * nk), *pv = malloc(4 * nv), *pk0 = malloc(4 * nk);
        for (size_t i = 0; i < 2 * nk; i++) pk[i] = pk0[i] = 0x7e00;
        for (size_t i = 0; i < 2 * nv; i++) pv[i] = 0x7e00;
        attn_paged_append o = ap[1];
        o.k_scale = o.v_scale = (attn_tensor){0};
        o.k_pages.data = pk, o.v_pages.data = pv;
        for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
            o.dtype = other[i].pages, o.new_dtype = other[i].nt;
            attn_status st = attn_rt_paged_append(&o, &err);
            CHECK(st == ATTN_ERR_DTYPE && strstr(err.message, "new_dtype"), "pages %d, new_dtype %d: %s (%s)",
                  (int)other[i].pages, (int)other[i].nt, attn_status_name(st), err.message);
        }
        CHECK(memcmp(pk, pk0, 4 * nk) == 0, "a refused append wrote 16-bit pages");
        o.dtype = o.new_dtype = nt; /* its own type: copied */
        attn_status st = attn_rt_paged_append(&o, &err);
        CHECK(st == ATTN_OK, "%s pages, new_dtype %s: %s", nm, nm, err.message);
        size_t wrong = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < n[b]; i++)
                for (int h = 0; h < KH; h++) {
                    int pos = lens[b] - n[b] + i, row = starts[b] + i;
                    size_t dst = (((size_t)table[b * MP + pos / P] * P + pos % P) * KH + h);
                    wrong += memcmp(pk + dst * DQ, k16 + ((size_t)row * KH + h) * KS, 2 * DQ) != 0;
                    wrong += memcmp(pv + dst * DV, v16 + ((size_t)row * KH + h) * DV, 2 * DV) != 0;
                }
        CHECK(wrong == 0, "%s pages, new_dtype %s: %zu rows not copied", nm, nm, wrong);
        free(pk), free(pv), free(pk0);
    }
    /* the append itself */
    for (int c = 0; c < 2; c++) {
        attn_status st = attn_rt_paged_append(&ap[c], &err);
        CHECK(st == ATTN_OK, "int8 append of %s rows: %s", c ? nm : "f32", err.message);
    }
    CHECK(memcmp(kp[0], kp[1], nk) == 0 && memcmp(vp[0], vp[1], nv) == 0, "%s rows into int8 pages: the int8 "
          "elements differ from the f32 rows'", nm);
    CHECK(memcmp(ksc[0], ksc[1], 4 * ns) == 0 && memcmp(vsc[0], vsc[1], 4 * ns) == 0, "%s rows into int8 pages: the "
          "scales differ from the f32 rows'", nm);
    /* and the append wrote (the written scales are finite, the rest NaN) */
    size_t written = 0;
    for (size_t i = 0; i < ns; i++) written += !isnan(ksc[1][i]) && !isnan(vsc[1][i]);
    CHECK(written == (size_t)T * KH, "%s rows into int8 pages: %zu scales written, expected %d", nm, written, T * KH);
    for (int c = 0; c < 2; c++) free(kp[c]), free(vp[c]), free(ksc[c]), free(vsc[c]);
    free(k16), free(v16), free(k32), free(v32);
}

int main(void) {
    static const struct { const char *label, *text; int which, dims[4]; } specs[] = {
        {"gqa causal", "heads = 8; kv_heads = 2; head_dim = 32; mask = causal;", 0, {8, 2, 32, 32}},
        {"sliding softcap mha", "heads = 3; head_dim = 16; v_dim = 24; mask = sliding(40); score = 5.0 * tanh(score / 5.0);", 0, {3, 3, 16, 24}},
        {"mqa runtime input", "input i32 src_len[batch]; heads = 4; kv_heads = 1; head_dim = 16; mask = k < src_len[b] || k <= q;", 1, {4, 1, 16, 16}},
        {"head map alibi", "input f32 slope[heads]; heads = 4; kv_heads = 2; kv_head = h % 2; head_dim = 16; mask = causal; score = score - slope[h] * (q - k);", 2, {4, 2, 16, 16}},
        {"dilated", "heads = 2; head_dim = 16; mask = causal && (q - k) % 3 == 0;", 0, {2, 2, 16, 16}},
        {"dense", "heads = 2; kv_heads = 2; head_dim = 8;", 0, {2, 2, 8, 8}},
        {"lengths in the mask", "heads = 2; head_dim = 16; mask = k >= kv_len - 2 * q_len - 5 && k <= q;", 0, {2, 2, 16, 16}},
    };
    static const Mode modes[] = {
        {"kv int8", "kv_dtype = int8;", ATTN_F32, ATTN_I8, 0},
        {"dtype bf16", "dtype = bf16;", ATTN_BF16, ATTN_BF16, 0},
        {"kv bf16", "kv_dtype = bf16;", ATTN_F32, ATTN_BF16, 0},
        {"dtype f16", "dtype = f16;", ATTN_F16, ATTN_F16, 0},
        {"kv f16", "kv_dtype = f16;", ATTN_F32, ATTN_F16, 0},
        {"compute bf16", "compute = bf16;", ATTN_F32, ATTN_F32, 1},
        {"compute int8", "compute = int8;", ATTN_F32, ATTN_F32, 2},
        {"compute int8 kv int8", "compute = int8; kv_dtype = int8;", ATTN_F32, ATTN_I8, 2},
        {"compute bf16 dtype bf16", "compute = bf16; dtype = bf16;", ATTN_BF16, ATTN_BF16, 1},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    /* every mask family with int8 pages and bf16 storage, and under the compute modes whose
     * decode takes dot products straight from the pages (int8 pages under compute = int8: VNNI,
     * bf16 pages under compute = bf16: vdpbf16ps) the first four (MHA, MQA, a window, soft-capping,
     * a score modifier, ragged head dims); the other modes on two families */
    for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; mi++)
        for (int i = 0; i < nspecs; i++) {
            bool dot = strstr(modes[mi].name, "compute int8 kv int8") || strstr(modes[mi].name, "compute bf16 dtype bf16");
            if (mi >= 2 && i != 0 && i != 3 && !(dot && i < 4)) continue;
            const int *d = specs[i].dims;
            mixed_case(specs[i].label, specs[i].text, &modes[mi], 16, d[0], d[1], d[2], d[3], specs[i].which, false);
            if (modes[mi].approx && i == 0) /* the bounds hold with outlier channels in K too */
                mixed_case(specs[i].label, specs[i].text, &modes[mi], 16, d[0], d[1], d[2], d[3], specs[i].which, true);
        }
    /* other page sizes */
    mixed_case("gqa causal, P 8", specs[0].text, &modes[0], 8, 8, 2, 32, 32, 0, false);
    mixed_case("gqa causal, P 64", specs[0].text, &modes[1], 64, 8, 2, 32, 32, 0, false);
    /* a window whose first block starts within a page: int8 scales and 16-bit rows, packed and on whole pages */
    static const char *sliding = "heads = 4; kv_heads = 1; head_dim = 16; mask = sliding(300);";
    mixed_case("mqa sliding, P 8", sliding, &modes[0], 8, 4, 1, 16, 16, 0, false);
    mixed_case("mqa sliding, P 128", sliding, &modes[0], 128, 4, 1, 16, 16, 0, false);
    mixed_case("mqa sliding, P 32", sliding, &modes[2], 32, 4, 1, 16, 16, 0, false);
    bad_scales();
    append_case(ATTN_I8, false);
    append_case(ATTN_I8, true);
    append_case(ATTN_BF16, false);
    append_case(ATTN_F16, false);
    append_new_dtype_case(ATTN_BF16);
    append_new_dtype_case(ATTN_F16);
    /* int8 pages under compute = int8: scales gathered a page or two at a time (P >= 16), or key
     * by key (P 8) */
    mixed_case("gqa causal, P 8", specs[0].text, &modes[7], 8, 8, 2, 32, 32, 0, false);
    mixed_case("gqa causal, P 64", specs[0].text, &modes[7], 64, 8, 2, 32, 32, 0, false);
    return check_done("test_paged_dtype");
}
