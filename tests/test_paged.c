/* test_paged.c — paged KV caches and ragged batches (attn_run_paged, attn_rt_paged_append)
 * against the double-precision IR interpreter: each sequence's pages gathered into contiguous
 * K/V and interpreted as a batch of its own sizes. Pages are shuffled; unused pages, the rows
 * past a sequence's end and the page table past its last page are garbage (NaN pages, indices
 * out of range), so a read of any of them shows. Batches mix empty sequences, length 1, exactly
 * one page, decode of long sequences (split over threads) and chunked prefill. Bad tables must
 * fail with the documented code before anything is written. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"
#include "ir/util.h"
#include "lib/driver.h"
#include "paged_ref.h"

typedef struct Spec {
    const char *label, *text;
    const char *input;   /* a runtime input indexed [batch] (i32 src_len) or [heads] (f32 slope), or NULL */
} Spec;

typedef struct Batch {
    int B, P, H, KH, DQ, DV, NP, MP;
    int32_t *starts, *lens, *table;
    float *q, *kp, *vp;
    int T;
} Batch;

static void batch_free(Batch *x) {
    free(x->starts), free(x->lens), free(x->table), free(x->q), free(x->kp), free(x->vp);
}

/* n[b] query rows and L[b] keys each; pages shuffled, garbage elsewhere. */
static void batch_make(Batch *x, int B, const int *n, const int *L, int P, int H, int KH, int DQ, int DV,
                       uint64_t *rng) {
    memset(x, 0, sizeof *x);
    x->B = B, x->P = P, x->H = H, x->KH = KH, x->DQ = DQ, x->DV = DV;
    x->starts = malloc(sizeof(int32_t) * (size_t)(B + 1));
    x->lens = malloc(sizeof(int32_t) * (size_t)(B ? B : 1));
    int used = 0, mp = 1;
    x->starts[0] = 0;
    for (int b = 0; b < B; b++) {
        x->starts[b + 1] = x->starts[b] + n[b];
        x->lens[b] = L[b];
        int pages = (L[b] + P - 1) / P;
        used += pages;
        if (pages + 2 > mp) mp = pages + 2; /* padding past every sequence's last page */
    }
    x->T = x->starts[B];
    x->MP = mp;
    x->NP = used + 3; /* three unused pages */
    int *perm = malloc(sizeof(int) * (size_t)x->NP);
    for (int i = 0; i < x->NP; i++) perm[i] = i;
    for (int i = x->NP - 1; i > 0; i--) {
        int j = (int)check_int(rng, 0, i), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    x->table = malloc(sizeof(int32_t) * (size_t)(B * mp + 1));
    for (int i = 0; i < B * mp; i++) x->table[i] = (int32_t)check_int(rng, 0, 1) ? -7 : 0x7fffffff; /* garbage */
    size_t ks = (size_t)x->NP * P * KH * DQ, vs = (size_t)x->NP * P * KH * DV;
    x->kp = malloc(sizeof(float) * ks);
    x->vp = malloc(sizeof(float) * vs);
    for (size_t i = 0; i < ks; i++) x->kp[i] = NAN;
    for (size_t i = 0; i < vs; i++) x->vp[i] = NAN;
    int next = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < (L[b] + P - 1) / P; j++) {
            int pg = perm[next++];
            x->table[b * mp + j] = pg;
            for (int r = 0; r < P && j * P + r < L[b]; r++) {
                check_fill(x->kp + ((size_t)pg * P + r) * KH * DQ, (size_t)KH * DQ, rng, CHECK_NORMAL, 1.0);
                check_fill(x->vp + ((size_t)pg * P + r) * KH * DV, (size_t)KH * DV, rng, CHECK_NORMAL, 1.0);
            }
        }
    free(perm);
    x->q = malloc(sizeof(float) * (size_t)(x->T * H * DQ + 1));
    check_fill(x->q, (size_t)x->T * H * DQ, rng, CHECK_NORMAL, 1.0);
}

static attn_paged_call batch_call(const Batch *x, float *o, float *lse) {
    attn_paged_call c;
    memset(&c, 0, sizeof c);
    c.q = (attn_tensor){x->q, 3, {x->T, x->H, x->DQ}, {0}};
    c.k_pages = (attn_tensor){x->kp, 4, {x->NP, x->P, x->KH, x->DQ}, {0}};
    c.v_pages = (attn_tensor){x->vp, 4, {x->NP, x->P, x->KH, x->DV}, {0}};
    c.page_table = (attn_tensor){x->table, 2, {x->B, x->MP}, {0}};
    c.kv_lens = (attn_tensor){x->lens, 1, {x->B}, {0}};
    c.q_starts = (attn_tensor){x->starts, 1, {x->B + 1}, {0}};
    c.o = (attn_tensor){o, 3, {x->T, x->H, x->DV}, {0}};
    if (lse) c.lse = (attn_tensor){lse, 2, {x->T, x->H}, {0}};
    return c;
}

/* The reference of sequence b into ro [n][H][DV], rl [n][H], through the interpreter over a
 * batch of x->B rows that all read b's gathered K/V (row b is kept). */
static bool reference(const IrFunc *f, const Batch *x, int b, const attn_input *in, int nin, double *ro, double *rl) {
    PagedShape s = {x->B, x->P, x->H, x->KH, x->DQ, x->DV, x->MP, x->starts, x->lens, x->table};
    return paged_reference(f, &s, x->q, x->kp, x->vp, b, in, nin, ro, rl);
}

/* Runs the batch and compares every row with the reference. */
static void run_check(attn_kernel *kern, const IrFunc *f, const Batch *x, const attn_input *in, int nin, int threads,
                      const char *label) {
    size_t on = (size_t)x->T * x->H * x->DV + 1, ln = (size_t)x->T * x->H + 1;
    float *o = malloc(sizeof(float) * on), *lse = malloc(sizeof(float) * ln);
    for (size_t i = 0; i < on; i++) o[i] = 12345.0f;
    for (size_t i = 0; i < ln; i++) lse[i] = 12345.0f;
    attn_paged_call c = batch_call(x, o, lse);
    c.inputs = in, c.ninputs = nin, c.threads = threads;
    attn_error err;
    attn_status st = attn_run_paged(kern, &c, &err);
    CHECK(st == ATTN_OK, "%s (threads %d): %s: %s", label, threads, attn_status_name(st), err.message);
    double worst = 0, worst_l = 0;
    for (int b = 0; st == ATTN_OK && b < x->B; b++) {
        int n = x->starts[b + 1] - x->starts[b];
        double *ro = malloc(sizeof(double) * (size_t)(n * x->H * x->DV + 1)), *rl = malloc(sizeof(double) * (size_t)(n * x->H + 1));
        REQUIRE(reference(f, x, b, in, nin, ro, rl), "%s: the reference failed", label);
        for (int i = 0; i < n * x->H; i++) {
            int64_t row = (int64_t)x->starts[b] * x->H + i;
            double gl = lse[row], wl = rl[i];
            double dl = isinf(wl) ? (gl == wl ? 0 : INFINITY) : fabs(gl - wl);
            if (!(dl <= worst_l)) worst_l = isnan(dl) ? INFINITY : dl;
            for (int d = 0; d < x->DV; d++) {
                double e = fabs(o[row * x->DV + d] - ro[(size_t)i * x->DV + d]);
                if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
            }
        }
        free(ro), free(rl);
    }
    CHECK(worst < 2e-4 && worst_l < 2e-4, "%s (threads %d, P %d): max error o %.3g, lse %.3g", label, threads, x->P,
          worst, worst_l);
    free(o), free(lse);
}

static attn_kernel *compile(const char *text, IrModule **mod, IrFunc **f) {
    attn_options opts;
    attn_options_init(&opts);
    attn_kernel *k = NULL;
    char *diags = NULL;
    attn_error err;
    attn_status st = attn_compile("paged.attn", text, &opts, &k, &diags, &err);
    CHECK(st == ATTN_OK, "compile: %s: %s\n%s", attn_status_name(st), err.message, diags ? diags : "");
    attn_free(diags);
    StrBuf sd;
    sb_init(&sd);
    *mod = drv_parse("paged.attn", text, &opts, &sd, &err);
    *f = *mod ? drv_select(*mod, NULL, &err) : NULL;
    CHECK(*f != NULL, "parse for the reference: %s %s", err.message, sb_str(&sd));
    sb_free(&sd);
    return st == ATTN_OK && *f ? k : (attn_kernel_free(k), NULL);
}

static const char *spec_text(char *buf, size_t n, const char *body, int P) {
    snprintf(buf, n, "attention t { kv_cache = paged(%d); %s }", P, body);
    return buf;
}

/* The mixed batch: empty, length 1, one page exactly, decode of a long one, chunked prefill. */
static void mixed_case(const char *label, const char *body, int P, int H, int KH, int DQ, int DV, int which_input,
                       uint64_t *rng) {
    char text[1024];
    IrModule *m;
    IrFunc *f;
    attn_kernel *kern = compile(spec_text(text, sizeof text, body, P), &m, &f);
    if (!kern) {
        ir_module_free(m);
        return;
    }
    enum { B = 7 };
    int n[B] = {0, 1, 1, P, 1, 37, 3}, L[B] = {0, 1, P, P, 1500 + (int)check_int(rng, 0, 600), 300, 90};
    Batch x;
    batch_make(&x, B, n, L, P, H, KH, DQ, DV, rng);
    attn_input in[1];
    int32_t src[B];
    float slope[64];
    int nin = 0;
    if (which_input == 1) {
        for (int b = 0; b < B; b++) src[b] = (int32_t)check_int(rng, 0, L[b]);
        in[0] = (attn_input){"src_len", {src, 1, {B}, {0}}};
        nin = 1;
    } else if (which_input == 2) {
        for (int h = 0; h < H; h++) slope[h] = (float)(0.05 * (h + 1));
        in[0] = (attn_input){"slope", {slope, 1, {H}, {0}}};
        nin = 1;
    }
    run_check(kern, f, &x, in, nin, 1, label);
    run_check(kern, f, &x, in, nin, 2, label);
    batch_free(&x);
    /* a long decode beside short ones: its keys split over the threads */
    int n2[B] = {1, 1, 1, 0, 1, 1, 1}, L2[B] = {4000 + (int)check_int(rng, 0, 999), 20, 1, 0, 2, P + 1, 700};
    if (which_input == 1)
        for (int b = 0; b < B; b++) src[b] = (int32_t)check_int(rng, 0, L2[b]);
    batch_make(&x, B, n2, L2, P, H, KH, DQ, DV, rng);
    run_check(kern, f, &x, in, nin, 2, label);
    run_check(kern, f, &x, in, nin, 3, label);
    batch_free(&x);
    attn_kernel_free(kern);
    ir_module_free(m);
}

/* Grouped decode calls the group entry once for every K/V head (attn_rt_desc.group_all): its
 * rows then run past one chunk of the entry's scratch (64 K/V heads x 2 heads x 4 rows), a
 * head's rows fill whole passes or not (2 heads x 3 rows: the call says so and the runtime goes
 * head by head), windows start within pages, tails stop the call at their partial block. */
static void all_heads_case(uint64_t *rng) {
    static const char *const bodies[] = {
        "heads = 128; kv_heads = 64; head_dim = 16; mask = causal;",
        "heads = 128; kv_heads = 64; head_dim = 16; mask = sliding(90);",
        "heads = 16; kv_heads = 4; head_dim = 32; mask = causal && (q - k) % 5 != 1;",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        for (int P = 8; P <= 32; P *= 4) {
            char text[512];
            IrModule *m;
            IrFunc *f;
            attn_kernel *kern = compile(spec_text(text, sizeof text, bodies[i], P), &m, &f);
            if (!kern) {
                ir_module_free(m);
                continue;
            }
            const attn_rt_desc *d = attn_kernel_desc(kern);
            CHECK(d->group && d->group_all, "%s: a paged group entry takes every K/V head", bodies[i]);
            enum { B = 6 };
            int n[B] = {4, 2, 1, 3, 4, 1}, L[B] = {700 + (int)check_int(rng, 0, 99), 333, 1, 95, 4, 2 * P};
            Batch x;
            batch_make(&x, B, n, L, P, d->heads, d->kv_heads, d->qk_dim, d->v_dim, rng);
            char label[600];
            snprintf(label, sizeof label, "every K/V head at once: %s", bodies[i]);
            run_check(kern, f, &x, NULL, 0, 1, label);
            run_check(kern, f, &x, NULL, 0, 2, label);
            batch_free(&x);
            attn_kernel_free(kern);
            ir_module_free(m);
        }
}

/* Each bad table fails with its code, and o is untouched. */
static void bad_tables(uint64_t *rng) {
    char text[256];
    IrModule *m;
    IrFunc *f;
    attn_kernel *kern = compile(spec_text(text, sizeof text, "heads = 2; kv_heads = 1; head_dim = 8; mask = causal;", 8), &m, &f);
    if (!kern) {
        ir_module_free(m);
        return;
    }
    int n[3] = {1, 2, 1}, L[3] = {9, 20, 1};
    Batch x;
    batch_make(&x, 3, n, L, 8, 2, 1, 8, 8, rng);
    float o[4 * 2 * 8], lse[4 * 2];
    struct { const char *what; attn_status want; } cases[] = {
        {"page index past num_pages", ATTN_ERR_INDEX}, {"negative page index", ATTN_ERR_INDEX},
        {"kv_len beyond the table", ATTN_ERR_SHAPE}, {"more queries than keys", ATTN_ERR_SHAPE},
        {"q_starts not from 0", ATTN_ERR_SHAPE}, {"q_starts decreasing", ATTN_ERR_SHAPE},
        {"q_starts not ending at total_q", ATTN_ERR_SHAPE}, {"negative kv_len", ATTN_ERR_SHAPE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Batch y = x;
        int32_t table[64], lens[3], starts[4];
        memcpy(table, x.table, sizeof(int32_t) * (size_t)(x.B * x.MP));
        memcpy(lens, x.lens, sizeof lens);
        memcpy(starts, x.starts, sizeof starts);
        y.table = table, y.lens = lens, y.starts = starts;
        switch (i) {
        case 0: table[1 * x.MP + 2] = x.NP; break;
        case 1: table[0 * x.MP + 1] = -1; break;
        case 2: lens[2] = x.MP * 8 + 1; break;
        case 3: lens[1] = 1; break;
        case 4: starts[0] = 1; break;
        case 5: starts[1] = 3, starts[2] = 2; break;
        case 6: starts[3] = 3; break;
        case 7: lens[0] = -1; break;
        }
        for (int j = 0; j < 64; j++) o[j] = 7.0f;
        attn_paged_call c = batch_call(&y, o, lse);
        attn_error err;
        attn_status st = attn_run_paged(kern, &c, &err);
        CHECK(st == cases[i].want, "%s: got %s (%s), expected %s", cases[i].what, attn_status_name(st), err.message,
              attn_status_name(cases[i].want));
        bool untouched = true;
        for (int j = 0; j < 64; j++) untouched &= o[j] == 7.0f;
        CHECK(untouched, "%s: o was written before the error", cases[i].what);
    }
    /* a paged kernel through attn_run, a contiguous one through attn_run_paged */
    attn_call cc;
    memset(&cc, 0, sizeof cc);
    attn_error err;
    CHECK(attn_run(kern, &cc, &err) == ATTN_ERR_ARG && strstr(err.message, "paged"), "attn_run of a paged kernel: %s",
          err.message);
    CHECK(attn_kernel_page_size(kern) == 8, "page size %d", attn_kernel_page_size(kern));
    /* paged caches are for inference: no backward */
    CHECK(attn_kernel_grad_inputs(kern, NULL) == -1, "a paged kernel reports a backward (%d)",
          attn_kernel_grad_inputs(kern, NULL));
    attn_grad_call gc;
    memset(&gc, 0, sizeof gc);
    CHECK(attn_run_backward(kern, &cc, &gc, &err) == ATTN_ERR_ARG && strstr(err.message, "no backward"),
          "attn_run_backward of a paged kernel: %s", err.message);
    attn_kernel *plain = NULL;
    attn_options opts;
    attn_options_init(&opts);
    REQUIRE(attn_compile("p.attn", "attention p { heads = 2; head_dim = 8; }", &opts, &plain, NULL, &err) == ATTN_OK,
            "%s", err.message);
    attn_paged_call pc = batch_call(&x, o, lse);
    CHECK(attn_run_paged(plain, &pc, &err) == ATTN_ERR_ARG && strstr(err.message, "not a paged"),
          "attn_run_paged of a contiguous kernel: %s", err.message);
    attn_kernel_free(plain);
    batch_free(&x);
    attn_kernel_free(kern);
    ir_module_free(m);
}

/* Pages written by the append helper (a prefill, then two decode steps) give the same result
 * as pages written directly; its checks. */
static void append_case(uint64_t *rng) {
    char text[256];
    IrModule *m;
    IrFunc *f;
    attn_kernel *kern = compile(spec_text(text, sizeof text, "heads = 4; kv_heads = 2; head_dim = 16; mask = causal;", 8), &m, &f);
    if (!kern) {
        ir_module_free(m);
        return;
    }
    enum { B = 3, KH = 2, D = 16, P = 8 };
    int n[B] = {1, 1, 1}, L[B] = {13, 1, 24};
    Batch x;
    batch_make(&x, B, n, L, P, 4, KH, D, D, rng);
    /* copy the pages' valid rows out as new rows, clear the pages to NaN, append them back in
     * three steps: all but the last two rows, then one, then one */
    float *kp0 = malloc(sizeof(float) * (size_t)x.NP * P * KH * D), *vp0 = malloc(sizeof(float) * (size_t)x.NP * P * KH * D);
    memcpy(kp0, x.kp, sizeof(float) * (size_t)x.NP * P * KH * D);
    memcpy(vp0, x.vp, sizeof(float) * (size_t)x.NP * P * KH * D);
    for (size_t i = 0; i < (size_t)x.NP * P * KH * D; i++) x.kp[i] = x.vp[i] = NAN;
    int done[B] = {0};
    for (int step = 0; step < 3; step++) {
        int32_t starts[B + 1] = {0}, lens[B];
        float kn[64 * KH * D], vn[64 * KH * D];
        int t = 0;
        for (int b = 0; b < B; b++) {
            int want = step == 0 ? (L[b] > 2 ? L[b] - 2 : 0) : step == 1 ? (L[b] > 1 ? L[b] - 1 : L[b]) : L[b];
            for (int j = done[b]; j < want; j++, t++) {
                int pg = x.table[b * x.MP + j / P];
                memcpy(kn + (size_t)t * KH * D, kp0 + ((size_t)pg * P + j % P) * KH * D, sizeof(float) * KH * D);
                memcpy(vn + (size_t)t * KH * D, vp0 + ((size_t)pg * P + j % P) * KH * D, sizeof(float) * KH * D);
            }
            done[b] = want;
            starts[b + 1] = t;
            lens[b] = want;
        }
        attn_paged_append ap;
        memset(&ap, 0, sizeof ap);
        ap.k_new = (attn_tensor){kn, 3, {t, KH, D}, {0}};
        ap.v_new = (attn_tensor){vn, 3, {t, KH, D}, {0}};
        ap.new_starts = (attn_tensor){starts, 1, {B + 1}, {0}};
        ap.k_pages = (attn_tensor){x.kp, 4, {x.NP, P, KH, D}, {0}};
        ap.v_pages = (attn_tensor){x.vp, 4, {x.NP, P, KH, D}, {0}};
        ap.page_table = (attn_tensor){x.table, 2, {B, x.MP}, {0}};
        ap.kv_lens = (attn_tensor){lens, 1, {B}, {0}};
        attn_error err;
        attn_status st = attn_rt_paged_append(&ap, &err);
        CHECK(st == ATTN_OK, "append step %d: %s", step, err.message);
        if (step == 2 && t >= 2) {
            /* two rows to one slot: sequence 0's row written by sequence 2 too */
            int32_t table2[64];
            memcpy(table2, x.table, sizeof(int32_t) * (size_t)(B * x.MP));
            int32_t s2[B + 1] = {0, 1, 1, 2}, l2[B] = {1, 1, 1};
            table2[2 * x.MP] = table2[0];
            ap.new_starts.data = s2;
            ap.kv_lens.data = l2;
            ap.page_table.data = table2;
            ap.k_new.shape[0] = ap.v_new.shape[0] = 2;
            CHECK(attn_rt_paged_append(&ap, &err) == ATTN_ERR_INDEX, "append of two rows to one slot: %s", err.message);
            table2[2 * x.MP] = x.NP;
            CHECK(attn_rt_paged_append(&ap, &err) == ATTN_ERR_INDEX, "append to a page past num_pages: %s", err.message);
            l2[0] = 0;
            table2[2 * x.MP] = x.table[2 * x.MP];
            CHECK(attn_rt_paged_append(&ap, &err) == ATTN_ERR_SHAPE, "append of more rows than keys: %s", err.message);
        }
    }
    run_check(kern, f, &x, NULL, 0, 2, "after append");
    free(kp0), free(vp0);
    batch_free(&x);
    attn_kernel_free(kern);
    ir_module_free(m);
}

/* A paged MLA block (absorbed) against the contiguous MLA kernel of the same spec run
 * sequence by sequence on its gathered latent rows (that kernel is checked against the double
 * reference by test_mla); NaN in unused pages; a bad page refused. */
static void mla_case(uint64_t *rng) {
    enum { H = 4, R = 32, ROPE = 8, NOPE = 16, DV = 16, P = 8, B = 4, MP = 8 };
    const char *body = "heads = 4; mla { kv_rank = 32; rope_dim = 8; nope_dim = 16; v_dim = 16; } mask = causal;";
    char text[512];
    snprintf(text, sizeof text, "attention m { %s kv_cache = paged(%d); }", body, P);
    attn_options opts;
    attn_options_init(&opts);
    attn_kernel *kp = NULL, *kc = NULL;
    attn_error err;
    REQUIRE(attn_compile("pm.attn", text, &opts, &kp, NULL, &err) == ATTN_OK, "paged MLA: %s", err.message);
    snprintf(text, sizeof text, "attention m { %s absorb = on; }", body);
    REQUIRE(attn_compile("cm.attn", text, &opts, &kc, NULL, &err) == ATTN_OK, "MLA: %s", err.message);
    int32_t lens[B] = {1, 8, 37, 20}, starts[B + 1] = {0, 1, 3, 4, 9}, table[B * MP];
    int T = starts[B], NP = 16;
    float *ckv = malloc(sizeof(float) * NP * P * R), *kr = malloc(sizeof(float) * NP * P * ROPE);
    for (int i = 0; i < NP * P * R; i++) ckv[i] = NAN;
    for (int i = 0; i < NP * P * ROPE; i++) kr[i] = NAN;
    for (int i = 0; i < B * MP; i++) table[i] = -9;
    int next = 0, perm[16];
    for (int i = 0; i < NP; i++) perm[i] = (i * 7 + 3) % NP; /* shuffled */
    for (int b = 0; b < B; b++)
        for (int j = 0; j < (lens[b] + P - 1) / P; j++) {
            table[b * MP + j] = perm[next++];
            for (int r = 0; r < P && j * P + r < lens[b]; r++) {
                check_fill(ckv + ((size_t)table[b * MP + j] * P + r) * R, R, rng, CHECK_NORMAL, 1.0);
                check_fill(kr + ((size_t)table[b * MP + j] * P + r) * ROPE, ROPE, rng, CHECK_NORMAL, 1.0);
            }
        }
    float qn[9 * H * NOPE], qr[9 * H * ROPE], wuk[H * R * NOPE], wuv[H * R * DV], o[9 * H * DV], lse[9 * H];
    check_fill(qn, sizeof qn / 4, rng, CHECK_NORMAL, 1.0);
    check_fill(qr, sizeof qr / 4, rng, CHECK_NORMAL, 1.0);
    check_fill(wuk, sizeof wuk / 4, rng, CHECK_NORMAL, 0.2);
    check_fill(wuv, sizeof wuv / 4, rng, CHECK_NORMAL, 0.2);
    attn_paged_mla_call c;
    memset(&c, 0, sizeof c);
    c.q_nope = (attn_tensor){qn, 3, {T, H, NOPE}, {0}};
    c.q_rope = (attn_tensor){qr, 3, {T, H, ROPE}, {0}};
    c.c_kv_pages = (attn_tensor){ckv, 3, {NP, P, R}, {0}};
    c.k_rope_pages = (attn_tensor){kr, 3, {NP, P, ROPE}, {0}};
    c.w_uk = (attn_tensor){wuk, 3, {H, R, NOPE}, {0}};
    c.w_uv = (attn_tensor){wuv, 3, {H, R, DV}, {0}};
    c.page_table = (attn_tensor){table, 2, {B, MP}, {0}};
    c.kv_lens = (attn_tensor){lens, 1, {B}, {0}};
    c.q_starts = (attn_tensor){starts, 1, {B + 1}, {0}};
    c.o = (attn_tensor){o, 3, {T, H, DV}, {0}};
    c.lse = (attn_tensor){lse, 2, {T, H}, {0}};
    c.threads = 2;
    attn_status st = attn_run_paged_mla(kp, &c, &err);
    CHECK(st == ATTN_OK, "paged MLA: %s", err.message);
    double worst = 0;
    for (int b = 0; st == ATTN_OK && b < B; b++) {
        int n = starts[b + 1] - starts[b], L = lens[b];
        float *cc = malloc(sizeof(float) * (size_t)L * R), *kk = malloc(sizeof(float) * (size_t)L * ROPE);
        float *q1 = malloc(sizeof(float) * (size_t)H * n * NOPE), *q2 = malloc(sizeof(float) * (size_t)H * n * ROPE);
        float *o1 = malloc(sizeof(float) * (size_t)H * n * DV), *l1 = malloc(sizeof(float) * (size_t)H * n);
        for (int j = 0; j < L; j++) {
            memcpy(cc + (size_t)j * R, ckv + ((size_t)table[b * MP + j / P] * P + j % P) * R, sizeof(float) * R);
            memcpy(kk + (size_t)j * ROPE, kr + ((size_t)table[b * MP + j / P] * P + j % P) * ROPE, sizeof(float) * ROPE);
        }
        for (int i = 0; i < n; i++)
            for (int h = 0; h < H; h++) {
                memcpy(q1 + ((size_t)h * n + i) * NOPE, qn + ((size_t)(starts[b] + i) * H + h) * NOPE, sizeof(float) * NOPE);
                memcpy(q2 + ((size_t)h * n + i) * ROPE, qr + ((size_t)(starts[b] + i) * H + h) * ROPE, sizeof(float) * ROPE);
            }
        attn_mla_call mc;
        memset(&mc, 0, sizeof mc);
        mc.q_nope = (attn_tensor){q1, 4, {1, H, n, NOPE}, {0}};
        mc.q_rope = (attn_tensor){q2, 4, {1, H, n, ROPE}, {0}};
        mc.c_kv = (attn_tensor){cc, 3, {1, L, R}, {0}};
        mc.k_rope = (attn_tensor){kk, 3, {1, L, ROPE}, {0}};
        mc.w_uk = c.w_uk, mc.w_uv = c.w_uv;
        mc.o = (attn_tensor){o1, 4, {1, H, n, DV}, {0}};
        mc.lse = (attn_tensor){l1, 3, {1, H, n}, {0}};
        REQUIRE(attn_run_mla(kc, &mc, NULL, &err) == ATTN_OK, "contiguous MLA: %s", err.message);
        for (int i = 0; i < n; i++)
            for (int h = 0; h < H; h++) {
                double e = fabs(lse[(starts[b] + i) * H + h] - l1[h * n + i]);
                if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
                for (int d = 0; d < DV; d++) {
                    e = fabs(o[((size_t)(starts[b] + i) * H + h) * DV + d] - o1[((size_t)h * n + i) * DV + d]);
                    if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
                }
            }
        free(cc), free(kk), free(q1), free(q2), free(o1), free(l1);
    }
    CHECK(worst < 1e-4, "paged MLA against contiguous: max error %g", worst);
    table[2 * MP + 4] = NP; /* sequence 2's fifth page */
    CHECK(attn_run_paged_mla(kp, &c, &err) == ATTN_ERR_INDEX, "paged MLA bad page: %s", err.message);
    attn_paged_call pc;
    memset(&pc, 0, sizeof pc);
    CHECK(attn_run_paged(kp, &pc, &err) == ATTN_ERR_ARG, "attn_run_paged of a paged MLA kernel: %s", err.message);
    attn_mla_call mc0;
    memset(&mc0, 0, sizeof mc0);
    CHECK(attn_run_mla(kp, &mc0, NULL, &err) == ATTN_ERR_ARG, "attn_run_mla of a paged MLA kernel: %s", err.message);
    free(ckv), free(kr);
    attn_kernel_free(kp);
    attn_kernel_free(kc);
}

int main(void) {
    uint64_t rng = 18;
    static const Spec specs[] = {
        {"gqa causal", "heads = 8; kv_heads = 2; head_dim = 32; mask = causal;", NULL},
        {"sliding softcap mha", "heads = 3; head_dim = 16; v_dim = 24; mask = sliding(40); score = 5.0 * tanh(score / 5.0);", NULL},
        {"mqa runtime input", "input i32 src_len[batch]; heads = 4; kv_heads = 1; head_dim = 16; mask = k < src_len[b] || k <= q;", "src"},
        {"head map alibi", "input f32 slope[heads]; heads = 4; kv_heads = 2; kv_head = h % 2; head_dim = 16; mask = causal; score = score - slope[h] * (q - k);", "slope"},
        {"dilated", "heads = 2; head_dim = 16; mask = causal && (q - k) % 3 == 0;", NULL},
        {"dense", "heads = 2; kv_heads = 2; head_dim = 8;", NULL},
        {"lengths in the mask", "heads = 2; head_dim = 16; mask = k >= kv_len - 2 * q_len - 5 && k <= q;", NULL},
    };
    int dims[][4] = {{8, 2, 32, 32}, {3, 3, 16, 24}, {4, 1, 16, 16}, {4, 2, 16, 16}, {2, 2, 16, 16}, {2, 2, 8, 8}, {2, 2, 16, 16}};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        int which = !specs[i].input ? 0 : strcmp(specs[i].input, "src") == 0 ? 1 : 2;
        mixed_case(specs[i].label, specs[i].text, 16, dims[i][0], dims[i][1], dims[i][2], dims[i][3], which, &rng);
    }
    /* grouped decode reads a sub-block's K/V rows through its pages looked up once when they
     * hold it whole (one page, or whole pages), else packs the block: every page size
     * (sub-blocks of 32 keys at d32: 4 pages of 8 .. a part of one of 256), and a sliding
     * window of one K/V head, whose first block starts where the window does (within a page);
     * grouped tasks call a K/V head for 32 keys at a time, within a page from 32 keys on, and a
     * grouped window's first call ends where such a chunk does */
    for (int P = 8; P <= 256; P *= 2) {
        mixed_case("gqa causal, every page size", specs[0].text, P, 8, 2, 32, 32, 0, &rng);
        mixed_case("gqa sliding window, every page size", "heads = 4; kv_heads = 2; head_dim = 32; mask = sliding(100);",
                   P, 4, 2, 32, 32, 0, &rng);
        mixed_case("mqa sliding window, every page size", "heads = 4; kv_heads = 1; head_dim = 16; mask = sliding(300);",
                   P, 4, 1, 16, 16, 0, &rng);
    }
    all_heads_case(&rng);
    bad_tables(&rng);
    append_case(&rng);
    mla_case(&rng);
    return check_done("test_paged");
}
