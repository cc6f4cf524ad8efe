/* test_kernels.c — every attention block of examples/ JIT-compiled and run on ragged shapes,
 * checked against two references: the IR interpreter (double precision, from the same spec
 * through drv_parse/drv_select/drv_optimize) and the hand-written C masks of masks.c
 * (double precision, independent of the frontend).
 *
 *   test_kernels EXAMPLES_DIR [FILTER]     FILTER: run only kernels whose label contains it
 *
 * Tolerance. Q, K, V are ~N(0,1), so outputs are convex combinations of values of size ~1-4
 * and scores are O(1..10) after scaling. An f32 kernel's errors: the Q.K dot product over up
 * to 256 terms (relative ~1e-6 of the score), the vector exp (~1e-7 relative), the online
 * softmax's rescaling and the sum over up to 257 keys (~257 * 6e-8 = 1.5e-5 relative worst
 * case). So |got - ref| <= 1e-4 + 1e-4 * |ref| holds with margin, while the smallest real bug
 * — one key too many or too few among n <= 257 — moves an output by ~|v|/n >= 4e-3. The
 * same bound is used for lse (|lse| <= ~70 with ALiBi biases). Rows that see no key must be
 * exactly 0 with lse = -inf.
 * f16 / bf16 storage: the inputs are rounded to the storage type before the references see
 * them, so only the output's rounding remains: half an ulp, 2^-11 (f16) or 2^-8 (bf16)
 * relative, plus the f32 error above; the bounds are 1e-3 + 1e-3|ref| and 8e-3 + 8e-3|ref|.
 * lse is f32 in every case and keeps the f32 bound.
 */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn/attn.h"
#include "check.h"
#include "lib/driver.h"
#include "tests/masks.h"

#define ATOL 1e-4
#define RTOL 1e-4
#define MAX_REPORTS 6          /* mismatches printed per case */
#define COST_CAP 6.0e7         /* skip cases whose reference work B*H*Lq*Lk*(Dq+Dv) exceeds it */
#define OUT_CANARY -7777.25f   /* outside the output views: must survive the call */
#define OUT_GARBAGE 9999.5f    /* inside the output views before the call: must be overwritten */

static int g_skip, g_masked_rows, g_index_cases;

// ---------------------------------------------------------------------------------------------
// Random numbers: check.h's generator, one stream.

static uint64_t g_rng = 0x5eed1234abcdULL;

// ---------------------------------------------------------------------------------------------
// Tensor views with padding and canaries.

typedef enum Layout { LAYOUT_DENSE, LAYOUT_PADDED, LAYOUT_BSHD } Layout;
static const char *const layout_names[] = {"dense", "padded", "bshd"};

#define LEAD_PAD 8 /* elements before the view's first element */
#define TAIL_PAD 8 /* elements after its last */

/* Storage conversions, written here (not shared with the runtime or the interpreter). */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) return (uint16_t)(sign | (ax > 0x7f800000 ? 0x7e00 : 0x7c00));
    if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* rounds to infinity */
    if (ax < 0x38800000) {                                  /* a half subnormal */
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.0f));
    }
    uint32_t h = ((((ax >> 23) - 127 + 15) << 10) | ((ax & 0x7fffff) >> 13));
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* to nearest even */
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24)
              : e == 31 ? (m ? NAN : INFINITY)
                        : ldexpf((float)(m + 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t h) {
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static int64_t dtype_size(attn_dtype t) { return t == ATTN_F16 || t == ATTN_BF16 ? 2 : 4; }

static const char *dtype_name(attn_dtype t) {
    return t == ATTN_F16 ? "f16" : t == ATTN_BF16 ? "bf16" : "f32";
}

static void elem_store(attn_dtype t, void *base, int64_t i, float v) {
    if (t == ATTN_F16) ((uint16_t *)base)[i] = f32_to_f16(v);
    else if (t == ATTN_BF16) ((uint16_t *)base)[i] = f32_to_bf16(v);
    else ((float *)base)[i] = v;
}

static float elem_load(attn_dtype t, const void *base, int64_t i) {
    if (t == ATTN_F16) return f16_to_f32(((const uint16_t *)base)[i]);
    if (t == ATTN_BF16) return bf16_to_f32(((const uint16_t *)base)[i]);
    return ((const float *)base)[i];
}

/* The value the storage type keeps of v. */
static float elem_round(attn_dtype t, float v) {
    if (t == ATTN_F16) return f16_to_f32(f32_to_f16(v));
    if (t == ATTN_BF16) return bf16_to_f32(f32_to_bf16(v));
    return v;
}

/* A tensor view inside a larger buffer of `dtype` elements. */
typedef struct View {
    attn_dtype dtype;    /* element type */
    char *base;          /* the whole allocation */
    int64_t total;       /* elements in base */
    bool *inside;        /* [total]: element belongs to the view */
    attn_tensor t;       /* what the call sees */
    int64_t str[ATTN_MAX_DIMS]; /* resolved strides */
} View;

/* Builds a view of `shape` in `layout`, fills the padding with `pad` (stored as `dtype`) and
 * the view from the dense row-major `src` (or with `fill` when src is NULL). */
static bool view_make(View *v, attn_dtype dtype, int ndim, const int64_t *shape, Layout layout,
                      float pad, const float *src, float fill) {
    memset(v, 0, sizeof *v);
    v->dtype = dtype;
    int64_t *s = v->str;
    if (layout == LAYOUT_BSHD && ndim != 4) layout = LAYOUT_PADDED;
    switch (layout) {
    case LAYOUT_DENSE: {
        int64_t acc = 1;
        for (int d = ndim - 1; d >= 0; d--) {
            s[d] = acc;
            acc *= shape[d];
        }
        break;
    }
    case LAYOUT_PADDED: { /* gaps between rows, heads and batch rows */
        static const int64_t gap[4] = {7, 5, 3, 0};
        s[ndim - 1] = 1;
        for (int d = ndim - 2; d >= 0; d--) s[d] = s[d + 1] * shape[d + 1] + gap[d + 4 - ndim];
        break;
    }
    case LAYOUT_BSHD: { /* [batch, seq, heads, dim] memory, viewed as [batch, heads, seq, dim] */
        int64_t row = shape[3] + 2; /* a gap after each head's vector */
        s[3] = 1;
        s[1] = row;
        s[2] = shape[1] * row;
        s[0] = shape[2] * shape[1] * row + 3;
        break;
    }
    }
    int64_t last = 0;
    for (int d = 0; d < ndim; d++) last += (shape[d] - 1) * s[d];
    v->total = LEAD_PAD + last + 1 + TAIL_PAD;
    v->base = malloc((size_t)(dtype_size(dtype) * v->total));
    v->inside = calloc((size_t)v->total, sizeof(bool));
    if (!v->base || !v->inside) return false;
    for (int64_t i = 0; i < v->total; i++) elem_store(dtype, v->base, i, pad);
    int64_t idx[4] = {0, 0, 0, 0}, n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    for (int64_t lin = 0; lin < n; lin++) {
        int64_t rem = lin, off = 0;
        for (int d = ndim - 1; d >= 0; d--) {
            idx[d] = rem % shape[d];
            rem /= shape[d];
            off += idx[d] * s[d];
        }
        elem_store(dtype, v->base, LEAD_PAD + off, src ? src[lin] : fill);
        v->inside[LEAD_PAD + off] = true;
    }
    v->t.data = v->base + LEAD_PAD * dtype_size(dtype);
    v->t.ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        v->t.shape[d] = shape[d];
        v->t.stride[d] = layout == LAYOUT_DENSE ? 0 : s[d]; /* dense: the all-zero default */
    }
    return true;
}

static void view_free(View *v) {
    free(v->base);
    free(v->inside);
    memset(v, 0, sizeof *v);
}

static float view_at(const View *v, const int64_t *idx) {
    int64_t off = 0;
    for (int d = 0; d < v->t.ndim; d++) off += idx[d] * v->str[d];
    return elem_load(v->dtype, v->t.data, off);
}

/* Elements outside the view that no longer hold the canary. */
static int64_t view_canary_damage(const View *v, float canary, int64_t *first) {
    int64_t bad = 0, es = dtype_size(v->dtype);
    char want[4];
    elem_store(v->dtype, want, 0, canary);
    for (int64_t i = 0; i < v->total; i++)
        if (!v->inside[i] && memcmp(v->base + i * es, want, (size_t)es) != 0) {
            if (!bad) *first = i - LEAD_PAD;
            bad++;
        }
    return bad;
}

// ---------------------------------------------------------------------------------------------
// The kernels under test.

/* One compiled kernel: a block of an example (maybe with -D overrides) or an inline spec. */
typedef struct Variant {
    char label[160];            /* for messages */
    const char *path;           /* the file, or a name for an inline spec */
    const char *text;           /* inline spec text, or NULL */
    const char *kernel;         /* block name */
    const char *defines[REF_MAX_PARAMS];
    int ndefines;
    int no_prune;               /* -fno-prune */
    int opt_level;              /* -O */
    attn_dtype dtype;           /* storage type of q, k, v, o (inline specs may change it) */
    const char *cpu;            /* JIT target CPU, NULL: the host (narrower vectors) */
    RefKernel ref;              /* the hand-written description, overrides applied */
    char pathbuf[1024];         /* owns path for example files */
    char textbuf[512];          /* owns text for inline specs */
    bool own_path, own_text;    /* path / text point into pathbuf / textbuf */
    /* the JIT compile, done ahead in a second thread */
    attn_kernel *kern;          /* NULL when it failed */
    char *diags;                /* its diagnostics */
    attn_error err;             /* its error */
    attn_status st;             /* its status */
} Variant;

typedef struct Case {
    int batch;
    int64_t q_len, kv_len;
    int64_t q_offset;           /* ATTN_Q_OFFSET_DEFAULT or a value */
    bool lse;                   /* request lse */
    Layout layout;
    int threads;
    const char *why;            /* what it exercises */
} Case;

#define DEF ATTN_Q_OFFSET_DEFAULT

static const Case cases[] = {
    {1, 1, 1, DEF, true, LAYOUT_DENSE, 1, "one query, one key"},
    {2, 7, 7, DEF, false, LAYOUT_DENSE, 2, "tiny prefill"},
    {3, 33, 100, DEF, true, LAYOUT_PADDED, 2, "ragged chunked prefill, padded views"},
    {1, 1, 257, DEF, true, LAYOUT_DENSE, 1, "decode"},
    {2, 1, 100, DEF, false, LAYOUT_BSHD, 2, "decode, BSHD views"},
    {1, 257, 257, DEF, true, LAYOUT_DENSE, 2, "prefill q_len == kv_len"},
    {2, 100, 100, 0, true, LAYOUT_BSHD, 1, "prefill, explicit q_offset 0, BSHD"},
    {1, 300, 300, DEF, false, LAYOUT_BSHD, 1, "long prefill, BSHD: windows reuse packed K and copied V"},
    {2, 33, 7, DEF, true, LAYOUT_PADDED, 2, "more queries than keys: negative default offset"},
    {1, 7, 1, DEF, true, LAYOUT_DENSE, 1, "kv_len 1"},
    {2, 33, 100, 0, true, LAYOUT_DENSE, 1, "top-aligned q_offset 0"},
    {1, 33, 100, -20, true, LAYOUT_PADDED, 2, "negative q_offset"},
    {3, 7, 33, 200, true, LAYOUT_DENSE, 2, "q_offset past kv_len"},
    {1, 100, 257, 57, false, LAYOUT_PADDED, 2, "mid-sequence chunk"},
    {2, 257, 33, 5, true, LAYOUT_DENSE, 2, "long query block, short keys"},
    {1, 1, 2049, DEF, true, LAYOUT_DENSE, 0, "long decode, threads 0 (all cores)"},
    {2, 3, 1500, DEF, true, LAYOUT_PADDED, 3, "few queries, long keys, 3 threads"},
    {2, 7, 33, 3000000005LL, true, LAYOUT_DENSE, 1, "q_offset beyond int32"},
    {1, 7, 33, -3000000005LL, true, LAYOUT_DENSE, 2, "q_offset below -2^31"},
};

/* Cases a kernel skips because f32 cannot represent its scores there (not a kernel bug): an
 * ALiBi bias of slope * 3e9 leaves no significant bits for the score differences. */
static bool case_beyond_f32(const RefKernel *rk, const Case *c) {
    bool huge = c->q_offset != ATTN_Q_OFFSET_DEFAULT &&
                (c->q_offset > 2000000000LL || c->q_offset < -2000000000LL);
    return huge && rk->score && rk->score != score_softcap50 && rk->score != score_softcap2;
}
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* The extra case of kernels that index an input by q: queries past kv_len must be reported. */
static const Case index_error_case = {1, 7, 33, 30, true, LAYOUT_DENSE, 1,
                                      "queries past the input's bounds"};

static const RefKernel *ref_find(const char *file, const char *kernel) {
    for (int i = 0; i < ref_nkernels; i++)
        if (!strcmp(ref_kernels[i].file, file) && !strcmp(ref_kernels[i].kernel, kernel))
            return &ref_kernels[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Runtime inputs.

typedef struct Inputs {
    attn_input in[REF_MAX_INPUTS];
    int n;
    void *data[REF_MAX_INPUTS];
} Inputs;

static bool inputs_make(Inputs *ins, const RefKernel *rk, MaskCtx *mc, int64_t B, int64_t Lk,
                        int case_no) {
    memset(ins, 0, sizeof *ins);
    for (int i = 0; i < REF_MAX_INPUTS && rk->inputs[i] != REF_IN_NONE; i++) {
        RefInputKind kind = rk->inputs[i];
        attn_tensor t;
        memset(&t, 0, sizeof t);
        if (kind == REF_IN_SRC_LEN) {
            int32_t *a = malloc(sizeof(int32_t) * (size_t)B);
            if (!a) return false;
            for (int64_t b = 0; b < B; b++) {
                /* the extremes 0 and kv_len in turn, else random */
                int64_t pick = (b + case_no) % 4;
                a[b] = (int32_t)(pick == 0 ? 0 : pick == 1 ? Lk : check_int(&g_rng, 0, Lk));
            }
            t.data = a, t.ndim = 1, t.shape[0] = B;
            mc->src_len = a;
        } else if (kind == REF_IN_DOC || kind == REF_IN_RANK) {
            int32_t *a = malloc(sizeof(int32_t) * (size_t)(B * Lk));
            if (!a) return false;
            for (int64_t b = 0; b < B; b++) {
                int32_t *row = a + b * Lk;
                if (kind == REF_IN_DOC) { /* sorted runs; the mean run length varies by row */
                    int64_t mean = (b % 3 == 0) ? 9 : (b % 3 == 1) ? 40 : 1;
                    int32_t id = (int32_t)check_int(&g_rng, 0, 3);
                    for (int64_t j = 0; j < Lk; j++) {
                        if (j > 0 && check_int(&g_rng, 1, mean) == 1) id += (int32_t)check_int(&g_rng, 1, 2);
                        row[j] = id;
                    }
                } else { /* a random permutation of 0..Lk-1 */
                    for (int64_t j = 0; j < Lk; j++) row[j] = (int32_t)j;
                    for (int64_t j = Lk - 1; j > 0; j--) {
                        int64_t r = check_int(&g_rng, 0, j);
                        int32_t tmp = row[j];
                        row[j] = row[r];
                        row[r] = tmp;
                    }
                }
            }
            t.data = a, t.ndim = 2, t.shape[0] = B, t.shape[1] = Lk;
            if (kind == REF_IN_DOC) mc->doc = a;
            else mc->rank = a;
        } else if (kind == REF_IN_N) {
            int32_t *a = malloc(sizeof(int32_t));
            if (!a) return false;
            *a = (int32_t)check_int(&g_rng, 0, Lk);
            t.data = a, t.ndim = 0;
            mc->n = *a;
        } else if (kind == REF_IN_THR) {
            float *a = malloc(sizeof(float) * (size_t)rk->heads);
            if (!a) return false;
            for (int h = 0; h < rk->heads; h++) a[h] = (float)(0.5 + 29.5 * check_unit(&g_rng));
            t.data = a, t.ndim = 1, t.shape[0] = rk->heads;
            mc->thr = a;
        } else if (kind == REF_IN_START) {
            int32_t *a = malloc(sizeof(int32_t) * REF_START_LEN);
            if (!a) return false;
            for (int i = 0; i < REF_START_LEN; i++) a[i] = (int32_t)check_int(&g_rng, 0, Lk);
            t.data = a, t.ndim = 1, t.shape[0] = REF_START_LEN;
            mc->start = a;
        } else if (kind == REF_IN_SLOPE) {
            float *a = malloc(sizeof(float) * (size_t)rk->heads);
            if (!a) return false;
            for (int h = 0; h < rk->heads; h++) a[h] = (float)exp2(-8.0 * (h + 1) / rk->heads);
            t.data = a, t.ndim = 1, t.shape[0] = rk->heads;
            mc->slope = a;
        }
        ins->data[ins->n] = t.data;
        ins->in[ins->n].name = ref_input_name(kind);
        ins->in[ins->n].t = t;
        ins->n++;
    }
    return true;
}

static void inputs_free(Inputs *ins) {
    for (int i = 0; i < ins->n; i++) free(ins->data[i]);
}

// ---------------------------------------------------------------------------------------------
// One case.

/* The bound of the comment at the top, per storage type. */
static double tol_of(attn_dtype t) { return t == ATTN_F16 ? 1e-3 : t == ATTN_BF16 ? 8e-3 : ATOL; }

/* Worst |got - want| / bound seen, per storage type (how much margin the bounds leave). */
static double g_worst[3];

static bool close_enough(double got, double want, double tol, int stat) {
    if (isinf(want) || isinf(got)) return got == want;
    double bound = tol + tol * fabs(want), r = fabs(got - want) / bound;
    if (stat >= 0 && r > g_worst[stat]) g_worst[stat] = r;
    return fabs(got - want) <= bound;
}

static void case_desc(char *buf, size_t n, const Case *c) {
    char off[32];
    if (c->q_offset == DEF) snprintf(off, sizeof off, "default");
    else snprintf(off, sizeof off, "%lld", (long long)c->q_offset);
    snprintf(buf, n, "batch=%d q_len=%lld kv_len=%lld q_offset=%s lse=%d layout=%s threads=%d (%s)",
             c->batch, (long long)c->q_len, (long long)c->kv_len, off, c->lse,
             layout_names[c->layout], c->threads, c->why);
}

/* Runs one case; returns true if it passed. */
static bool run_case(const Variant *var, attn_kernel *kern, const IrFunc *f, const Case *c,
                     int case_no, bool expect_index_error) {
    const RefKernel *rk = &var->ref;
    int64_t B = c->batch, Lq = c->q_len, Lk = c->kv_len;
    int H = rk->heads, KH = rk->kv_heads, Dq = rk->qk_dim, Dv = rk->v_dim;
    char cd[256];
    case_desc(cd, sizeof cd, c);
    int64_t nq = B * H * Lq * Dq, nk = B * KH * Lk * Dq, nv = B * KH * Lk * Dv;
    int64_t no = B * H * Lq * Dv, nl = B * H * Lq;
    float *q = malloc(sizeof(float) * (size_t)nq), *k = malloc(sizeof(float) * (size_t)nk);
    float *v = malloc(sizeof(float) * (size_t)nv);
    attn_dtype dt = var->dtype;
    double tol = tol_of(dt);
    void *oi = malloc((size_t)(dtype_size(dt) * no));
    float *li = malloc(sizeof(float) * (size_t)nl);
    double *oc = malloc(sizeof(double) * (size_t)no), *lc = malloc(sizeof(double) * (size_t)nl);
    int64_t *nvis = malloc(sizeof(int64_t) * (size_t)nl);
    View vq, vk, vv, vo, vl;
    memset(&vl, 0, sizeof vl);
    Inputs ins;
    memset(&ins, 0, sizeof ins);
    bool ok = true;
    int reports = 0;
    if (!q || !k || !v || !oi || !li || !oc || !lc || !nvis) {
        printf("FAIL %s: out of memory\n", var->label);
        ok = false;
        goto out_nofree_views;
    }
    check_fill(q, (size_t)nq, &g_rng, CHECK_NORMAL, 1.0);
    check_fill(k, (size_t)nk, &g_rng, CHECK_NORMAL, 1.0);
    check_fill(v, (size_t)nv, &g_rng, CHECK_NORMAL, 1.0);
    /* the references see exactly what the storage type keeps */
    for (int64_t i = 0; i < nq; i++) q[i] = elem_round(dt, q[i]);
    for (int64_t i = 0; i < nk; i++) k[i] = elem_round(dt, k[i]);
    for (int64_t i = 0; i < nv; i++) v[i] = elem_round(dt, v[i]);
    int64_t qs[4] = {B, H, Lq, Dq}, ks[4] = {B, KH, Lk, Dq}, vs[4] = {B, KH, Lk, Dv};
    int64_t os[4] = {B, H, Lq, Dv}, ls[3] = {B, H, Lq};
    bool made = view_make(&vq, dt, 4, qs, c->layout, NAN, q, 0) &
                view_make(&vk, dt, 4, ks, c->layout, NAN, k, 0) &
                view_make(&vv, dt, 4, vs, c->layout, NAN, v, 0) &
                view_make(&vo, dt, 4, os, c->layout, OUT_CANARY, NULL, OUT_GARBAGE);
    if (c->lse) made &= view_make(&vl, ATTN_F32, 3, ls, c->layout, OUT_CANARY, NULL, OUT_GARBAGE);
    MaskCtx mc;
    memset(&mc, 0, sizeof mc);
    for (int i = 0; i < REF_MAX_PARAMS; i++) mc.p[i] = rk->param_values[i];
    mc.batch = B, mc.q_len = Lq, mc.kv_len = Lk, mc.heads = H;
    made = made && inputs_make(&ins, rk, &mc, B, Lk, case_no);
    if (!made) {
        printf("FAIL %s: out of memory\n", var->label);
        ok = false;
        goto out;
    }
    int64_t q_offset = c->q_offset == DEF ? Lk - Lq : c->q_offset;

    /* The kernel. */
    attn_call call;
    memset(&call, 0, sizeof call);
    call.q = vq.t, call.k = vk.t, call.v = vv.t, call.o = vo.t;
    if (c->lse) call.lse = vl.t;
    call.q_offset = c->q_offset;
    call.q_offset_set = c->q_offset != DEF;
    call.inputs = ins.in, call.ninputs = ins.n, call.threads = c->threads;
    attn_error err;
    attn_status st = attn_run(kern, &call, &err);

    /* Reference 1: the IR interpreter, reading the same (strided) q/k/v. */
    attn_call icall = call;
    memset(&icall.o, 0, sizeof icall.o);
    memset(&icall.lse, 0, sizeof icall.lse);
    icall.o.data = oi, icall.o.ndim = 4;
    icall.lse.data = li, icall.lse.ndim = 3;
    memcpy(icall.o.shape, os, sizeof os);
    memcpy(icall.lse.shape, ls, sizeof ls);
    attn_rt_args args;
    attn_error ierr;
    attn_status ist = attn_rt_check(attn_kernel_desc(kern), &icall, &args, &ierr);
    if (ist == ATTN_OK) ist = ir_interpret(f, &args);

    /* Reference 2: the hand-written masks. */
    bool cok = ref_attention(rk, &mc, q_offset, q, k, v, oc, lc, nvis);

    if (expect_index_error) {
        g_index_cases++;
        if (cok || !mc.index_error) {
            printf("FAIL %s [%s]: test bug: the C reference saw no index error\n", var->label, cd);
            ok = false;
        }
        if (st != ATTN_ERR_INDEX) {
            printf("FAIL %s [%s]: kernel returned %s (%s), expected ATTN_ERR_INDEX\n", var->label,
                   cd, attn_status_name(st), st ? err.message : "");
            ok = false;
        }
        if (ist != ATTN_ERR_INDEX) {
            printf("FAIL %s [%s]: interpreter returned %s, expected ATTN_ERR_INDEX\n", var->label,
                   cd, attn_status_name(ist));
            ok = false;
        }
        goto canaries; /* the outputs are unspecified, but nothing outside may be written */
    }
    if (!cok) {
        printf("FAIL %s [%s]: test bug: the C reference failed (index error %d)\n", var->label, cd,
               mc.index_error);
        ok = false;
        goto out;
    }
    if (st != ATTN_OK) {
        printf("FAIL %s [%s]: attn_run: %s: %s\n", var->label, cd, attn_status_name(st),
               err.message);
        ok = false;
        goto out;
    }
    if (ist != ATTN_OK) {
        printf("FAIL %s [%s]: ir_interpret / attn_rt_check: %s: %s\n", var->label, cd,
               attn_status_name(ist), ist == ATTN_ERR_INDEX ? "index error" : ierr.message);
        ok = false;
    }

    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                int64_t row = (b * H + h) * Lq + i;
                bool masked = nvis[row] == 0;
                if (masked) g_masked_rows++;
                for (int64_t d = 0; d < Dv; d++) {
                    int64_t idx[4] = {b, h, i, d};
                    double got = view_at(&vo, idx), want = oc[row * Dv + d];
                    double interp = elem_load(dt, oi, row * Dv + d);
                    bool bad = masked ? got != 0.0
                                      : (isnan(got) || !close_enough(got, want, tol, (int)dt));
                    bool ibad = ist == ATTN_OK && (isnan(interp) || !close_enough(interp, want, tol, -1));
                    if ((bad || ibad) && reports++ < MAX_REPORTS)
                        printf("FAIL %s [%s]: o[b=%lld,h=%lld,i=%lld (q=%lld),d=%lld]: got %.9g, "
                               "expected %.9g (C ref), %.9g (interp)%s%s\n",
                               var->label, cd, (long long)b, (long long)h, (long long)i,
                               (long long)(q_offset + i), (long long)d, got, want, interp,
                               masked ? " [row sees no key: must be exactly 0]" : "",
                               ibad && !bad ? " [C ref and interpreter disagree]" : "");
                    ok &= !bad && !ibad;
                }
                if (c->lse) {
                    int64_t idx[3] = {b, h, i};
                    double got = view_at(&vl, idx), want = lc[row], interp = li[row];
                    bool bad = masked ? !(isinf(got) && got < 0)
                                      : (isnan(got) || !close_enough(got, want, ATOL, 0));
                    bool ibad = ist == ATTN_OK && !close_enough(interp, want, ATOL, -1);
                    if ((bad || ibad) && reports++ < MAX_REPORTS)
                        printf("FAIL %s [%s]: lse[b=%lld,h=%lld,i=%lld (q=%lld)]: got %.9g, "
                               "expected %.9g (C ref), %.9g (interp)%s\n",
                               var->label, cd, (long long)b, (long long)h, (long long)i,
                               (long long)(q_offset + i), got, want, interp,
                               masked ? " [row sees no key: must be -inf]" : "");
                    ok &= !bad && !ibad;
                }
            }
    if (reports > MAX_REPORTS)
        printf("     ... %d mismatches in all for this case\n", reports);
canaries:;
    int64_t first = 0, dmg = view_canary_damage(&vo, OUT_CANARY, &first);
    if (dmg) {
        printf("FAIL %s [%s]: %lld elements outside the o view were written (first at offset "
               "%lld from o.data)\n",
               var->label, cd, (long long)dmg, (long long)first);
        ok = false;
    }
    if (c->lse && (dmg = view_canary_damage(&vl, OUT_CANARY, &first))) {
        printf("FAIL %s [%s]: %lld elements outside the lse view were written (first at offset "
               "%lld)\n",
               var->label, cd, (long long)dmg, (long long)first);
        ok = false;
    }
out:
    inputs_free(&ins);
    view_free(&vq);
    view_free(&vk);
    view_free(&vv);
    view_free(&vo);
    view_free(&vl);
out_nofree_views:
    free(q);
    free(k);
    free(v);
    free(oi);
    free(li);
    free(oc);
    free(lc);
    free(nvis);
    return ok;
}

// ---------------------------------------------------------------------------------------------
// One kernel: compile (JIT and, for the interpreter, the IR), check the descriptor, run cases.

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void variant_options(const Variant *var, attn_options *opts) {
    attn_options_init(opts);
    opts->kernel = var->kernel;
    opts->defines = var->defines;
    opts->ndefines = var->ndefines;
    opts->no_prune = var->no_prune;
    opts->opt_level = var->opt_level;
    opts->cpu = var->cpu;
}

/* The JIT compile of one variant; runs on a second thread while the previous variant's
 * cases run on the first (attn_compile is documented thread-safe). */
static void *compile_variant(void *arg) {
    Variant *var = arg;
    attn_options opts;
    variant_options(var, &opts);
    var->st = attn_compile(var->path, var->text, &opts, &var->kern, &var->diags, &var->err);
    return NULL;
}

static void run_variant(Variant *var) {
    const RefKernel *rk = &var->ref;
    double t0 = now_s();
    int fails0 = check_failures;
    attn_options opts;
    variant_options(var, &opts);
    attn_kernel *kern = var->kern;
    attn_error err = var->err;
    if (var->st != ATTN_OK) {
        printf("FAIL %s: attn_compile: %s: %s\n%s", var->label, attn_status_name(var->st),
               var->err.message, var->diags ? var->diags : "");
        attn_free(var->diags);
        var->diags = NULL;
        CHECK(false, "%s (above)", var->label);
        return;
    }
    attn_free(var->diags);
    var->diags = NULL;

    StrBuf sdiags, msg;
    sb_init(&sdiags);
    sb_init(&msg);
    IrModule *m = drv_parse(var->path, var->text, &opts, &sdiags, &err);
    IrFunc *f = m ? drv_select(m, var->kernel, &err) : NULL;
    CgTarget target = {.cpu = var->cpu, .opt_level = 3};
    bool iok = f && drv_optimize(f, &opts, &target, NULL, &msg);
    if (!iok) {
        printf("FAIL %s: the IR for the interpreter: %s %s %s\n", var->label, err.message,
               sb_str(&sdiags), sb_str(&msg));
        CHECK(false, "%s (above)", var->label);
        goto done;
    }

    /* The descriptor must match the hand-written numbers. */
    const attn_rt_desc *d = attn_kernel_desc(kern);
    bool dok = d->heads == rk->heads && d->kv_heads == rk->kv_heads && d->qk_dim == rk->qk_dim &&
               d->v_dim == rk->v_dim && d->dtype == var->dtype;
    int nin = 0;
    while (nin < REF_MAX_INPUTS && rk->inputs[nin] != REF_IN_NONE) nin++;
    dok &= d->ninputs == nin;
    for (int i = 0; dok && i < nin; i++) dok &= !strcmp(d->inputs[i].name, ref_input_name(rk->inputs[i]));
    if (!dok) {
        printf("FAIL %s: descriptor heads=%d kv_heads=%d qk_dim=%d v_dim=%d dtype=%s ninputs=%d, "
               "expected %d %d %d %d %s %d\n",
               var->label, d->heads, d->kv_heads, d->qk_dim, d->v_dim, dtype_name(d->dtype),
               d->ninputs, rk->heads, rk->kv_heads, rk->qk_dim, rk->v_dim, dtype_name(var->dtype),
               nin);
        CHECK(false, "%s (above)", var->label);
        goto done;
    }
    if (f->heads != rk->heads || fabs(f->scale - (rk->scale > 0 ? rk->scale : 1 / sqrt(rk->qk_dim))) > 1e-12) {
        printf("FAIL %s: IR heads=%d scale=%.9g, expected %d %.9g\n", var->label, f->heads,
               f->scale, rk->heads, rk->scale > 0 ? rk->scale : 1 / sqrt(rk->qk_dim));
        CHECK(false, "%s (above)", var->label);
    }
    for (int h = 0; h < rk->heads && f->head_map; h++)
        if (f->head_map[h] != ref_kv_head(rk, h)) {
            printf("FAIL %s: IR head_map[%d] = %d, expected %d\n", var->label, h, f->head_map[h],
                   ref_kv_head(rk, h));
            CHECK(false, "%s (above)", var->label);
            break;
        }

    int ran = 0;
    for (int ci = 0; ci < NCASES; ci++) {
        const Case *c = &cases[ci];
        int64_t off = c->q_offset == DEF ? c->kv_len - c->q_len : c->q_offset;
        if ((rk->q_indexes_input && (off < 0 || off + c->q_len > c->kv_len)) ||
            case_beyond_f32(rk, c)) {
            g_skip++;
            continue;
        }
        double cost = (double)c->batch * rk->heads * c->q_len * c->kv_len * (rk->qk_dim + rk->v_dim);
        if (cost > COST_CAP && ran >= 4) {
            g_skip++;
            continue;
        }
        CHECK(run_case(var, kern, f, c, ci, false), "%s case %d (above)", var->label, ci);
        ran++;
    }
    if (rk->q_indexes_input)
        CHECK(run_case(var, kern, f, &index_error_case, NCASES, true), "%s index-error case (above)", var->label);
    printf("%s %s: %d cases, compile %.0f ms, total %.2f s\n", check_failures == fails0 ? "ok  " : "FAIL",
           var->label, ran, attn_kernel_compile_ms(kern), now_s() - t0);
done:
    sb_free(&sdiags);
    sb_free(&msg);
    ir_module_free(m);
    attn_kernel_free(kern);
}

// ---------------------------------------------------------------------------------------------
// The variants: every example block, some with -D overrides or -fno-prune, and inline specs
// for GQA ratios.

static bool variant_from_file(Variant *var, const char *dir, const char *file,
                              const char *kernel) {
    const RefKernel *rk = ref_find(file, kernel);
    if (!rk) {
        printf("FAIL test bug: no reference for %s:%s\n", file, kernel);
        return false;
    }
    memset(var, 0, sizeof *var);
    snprintf(var->pathbuf, sizeof var->pathbuf, "%s/%s", dir, file);
    var->path = var->pathbuf;
    var->kernel = kernel;
    var->opt_level = 3;
    var->ref = *rk;
    snprintf(var->label, sizeof var->label, "%s:%s", file, kernel);
    return true;
}

/* Adds `-D name=value` to the compile and to the reference's params. */
static void variant_define(Variant *var, const char *def, int64_t value) {
    const char *eq = strchr(def, '=');
    size_t n = (size_t)(eq - def);
    var->defines[var->ndefines++] = def;
    for (int i = 0; i < REF_MAX_PARAMS && var->ref.param_names[i]; i++)
        if (strlen(var->ref.param_names[i]) == n && !strncmp(var->ref.param_names[i], def, n))
            var->ref.param_values[i] = value;
    size_t len = strlen(var->label);
    snprintf(var->label + len, sizeof var->label - len, " -D %s", def);
}

// ---------------------------------------------------------------------------------------------
// Several threads running one kernel at once ("Several threads may run kernels at once").

#define CONC_THREADS 3
#define CONC_ITERS 6

typedef struct ConcJob {
    attn_kernel *kern;          /* shared by every job */
    attn_call call;             /* this job's tensors */
    const double *want;         /* C reference o */
    int64_t n;                  /* elements of o */
    int bad_iters;              /* iterations whose o disagreed */
    attn_status st;             /* first failing status */
} ConcJob;

static void *conc_job(void *arg) {
    ConcJob *j = arg;
    float *o = j->call.o.data;
    for (int it = 0; it < CONC_ITERS; it++) {
        for (int64_t i = 0; i < j->n; i++) o[i] = OUT_GARBAGE;
        j->call.threads = it % 3; /* 0 (the kernel's pool), 1, 2 */
        attn_error err;
        attn_status st = attn_run(j->kern, &j->call, &err);
        if (st != ATTN_OK) {
            j->st = st;
            j->bad_iters++;
            continue;
        }
        for (int64_t i = 0; i < j->n; i++)
            if (!close_enough(o[i], j->want[i], ATOL, 0)) {
                j->bad_iters++;
                break;
            }
    }
    return NULL;
}

static void run_concurrent(void) {
    static const char text[] =
        "attention conc { heads = 4; kv_heads = 2; head_dim = 32; mask = sliding(20); }\n";
    RefKernel rk = {.file = "conc.attn", .kernel = "conc", .heads = 4, .kv_heads = 2,
                    .qk_dim = 32, .v_dim = 32, .mask = mask_sliding, .param_values = {20}};
    const int64_t B = 2, Lq = 33, Lk = 100, nq = B * 4 * Lq * 32, nk = B * 2 * Lk * 32;
    attn_options opts;
    attn_options_init(&opts);
    opts.threads = 2;
    attn_kernel *kern = NULL;
    attn_error err;
    char *diags = NULL;
    if (attn_compile("conc.attn", text, &opts, &kern, &diags, &err) != ATTN_OK) {
        printf("FAIL concurrent runs: attn_compile: %s\n%s", err.message, diags ? diags : "");
        attn_free(diags);
        CHECK(false, "concurrent runs (above)");
        return;
    }
    ConcJob jobs[CONC_THREADS];
    float *bufs[CONC_THREADS][4];
    double *want[CONC_THREADS], *lse[CONC_THREADS];
    memset(bufs, 0, sizeof bufs);
    bool ok = true;
    for (int t = 0; t < CONC_THREADS; t++) {
        int64_t sizes[4] = {nq, nk, nk, nq};
        for (int i = 0; i < 4; i++) {
            bufs[t][i] = malloc(sizeof(float) * (size_t)sizes[i]);
            for (int64_t e = 0; bufs[t][i] && e < sizes[i]; e++) bufs[t][i][e] = (float)check_normal(&g_rng);
        }
        want[t] = malloc(sizeof(double) * (size_t)nq);
        lse[t] = malloc(sizeof(double) * (size_t)(B * 4 * Lq));
        memset(&jobs[t], 0, sizeof jobs[t]);
        if (!bufs[t][0] || !bufs[t][1] || !bufs[t][2] || !bufs[t][3] || !want[t] || !lse[t]) {
            ok = false;
            continue;
        }
        MaskCtx mc = {.p = {20}, .batch = B, .q_len = Lq, .kv_len = Lk, .heads = 4};
        ref_attention(&rk, &mc, Lk - Lq, bufs[t][0], bufs[t][1], bufs[t][2], want[t], lse[t], NULL);
        attn_call *c = &jobs[t].call;
        attn_tensor *ts[4] = {&c->q, &c->k, &c->v, &c->o};
        for (int i = 0; i < 4; i++) {
            bool kv = i == 1 || i == 2;
            ts[i]->data = bufs[t][i], ts[i]->ndim = 4;
            ts[i]->shape[0] = B, ts[i]->shape[1] = kv ? 2 : 4, ts[i]->shape[2] = kv ? Lk : Lq;
            ts[i]->shape[3] = 32;
        }
        c->q_offset = ATTN_Q_OFFSET_DEFAULT;
        jobs[t].kern = kern, jobs[t].want = want[t], jobs[t].n = nq;
    }
    pthread_t th[CONC_THREADS];
    bool started[CONC_THREADS] = {false};
    for (int t = 0; ok && t < CONC_THREADS; t++)
        started[t] = pthread_create(&th[t], NULL, conc_job, &jobs[t]) == 0;
    for (int t = 0; t < CONC_THREADS; t++)
        if (started[t]) pthread_join(th[t], NULL);
    for (int t = 0; t < CONC_THREADS; t++) {
        if (jobs[t].bad_iters) {
            printf("FAIL concurrent runs: thread %d: %d of %d runs of one kernel from %d threads "
                   "at once disagree with the C reference%s%s\n",
                   t, jobs[t].bad_iters, CONC_ITERS, CONC_THREADS, jobs[t].st ? ": " : "",
                   jobs[t].st ? attn_status_name(jobs[t].st) : "");
            ok = false;
        }
        for (int i = 0; i < 4; i++) free(bufs[t][i]);
        free(want[t]);
        free(lse[t]);
    }
    printf("%s concurrent runs: %d threads x %d runs of one kernel\n", ok ? "ok  " : "FAIL",
           CONC_THREADS, CONC_ITERS);
    CHECK(ok, "concurrent runs (above)");
    attn_kernel_free(kern);
}

typedef struct VariantList {
    Variant *v;
    int n, cap;
} VariantList;

/* Appends a copy of `var` (its own path/text buffers are re-pointed before the run). */
static void add_variant(VariantList *l, const Variant *var) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        Variant *nv = realloc(l->v, sizeof *nv * (size_t)cap);
        if (!nv) {
            CHECK(false, "out of memory");
            return;
        }
        l->v = nv, l->cap = cap;
    }
    Variant *d = &l->v[l->n++];
    *d = *var;
    d->own_path = var->path == var->pathbuf; /* re-pointed once the list stops moving */
    d->own_text = var->text == var->textbuf;
}

// Masks of the extra inline specs, written here by hand.
static int64_t xfloordiv(int64_t a, int64_t d) { return a / d - (a % d != 0 && a < 0); }
static int64_t xfloormod(int64_t a, int64_t d) { return ((a % d) + d) % d; }

static bool xmask_block_diag(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return xfloordiv(k, 8) == xfloordiv(q, 8);
}
static bool xmask_residue(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return xfloormod(k - q, 5) == 2 || xfloormod(q, 4) == xfloormod(k, 4);
}
static bool xmask_minmax(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return k <= (q < 50 ? q : 50) && k >= (q - 30 > 0 ? q - 30 : 0);
}
static bool xmask_boolcmp(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return (xfloormod(k, 2) == 0) == (xfloormod(q, 2) == 0) && !(k > q);
}
static bool xmask_band48(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) { return k < q && q - k <= 48; }
static bool xmask_band32(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) { return k <= q - 5 && k > q - 37; }
static bool xmask_stair5(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) { return k <= q - 3 && (q - k) % 5 == 0; }
static double xscore_clamp(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s) {
    return s > 6.0 ? 6.0 : (s > -3.0 ? s : -3.0);
}

/* Only x86-64 hosts can run x86 CPUs narrower than their own. */
static const char *cpu_list_host(void) {
#if defined(__x86_64__)
    return "x86";
#else
    return "none";
#endif
}

static bool wanted(const Variant *var, const char *filter) {
    return !filter || strstr(var->label, filter);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s EXAMPLES_DIR [FILTER]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *filter = argc > 2 ? argv[2] : NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    VariantList list = {0};
    Variant var;

    /* Every example block as written. */
    for (int i = 0; i < ref_nkernels; i++) {
        if (!variant_from_file(&var, dir, ref_kernels[i].file,
                               ref_kernels[i].kernel))
            continue;
        if (wanted(&var, filter)) add_variant(&list, &var);
    }

    /* -D overrides that make the masks bite differently. */
    static const struct {
        const char *file, *kernel, *def;
        int64_t value;
    } defs[] = {
        {"atrous.attn", "atrous", "rate=3", 3},
        {"atrous.attn", "atrous_window", "span=7", 7},
        {"local.attn", "local_sliding", "w=5", 5},
        {"local.attn", "local_window", "w=1", 1},
        {"sparse_strided.attn", "sparse_strided", "stride=7", 7},
        {"sparse_fixed.attn", "sparse_fixed", "stride=8", 8},
        {"softcap.attn", "gemma2_local", "window=32", 32},
        /* degenerate values: the mask analysis' edge cases */
        {"atrous.attn", "atrous", "rate=1", 1},
        {"atrous.attn", "atrous_causal", "rate=1000", 1000},
        {"local.attn", "local_window", "w=0", 0},
        {"local.attn", "local_window", "w=-1", -1},
        {"local.attn", "local_window_written", "w=100000", 100000},
        {"local.attn", "local_sliding", "w=1", 1},
        {"local.attn", "local_sliding_written", "w=0", 0},
        {"sparse_strided.attn", "sparse_strided", "stride=1", 1},
        {"sparse_strided.attn", "sparse_strided_written", "stride=300", 300},
        {"sparse_fixed.attn", "sparse_fixed", "c=0", 0},
        {"sparse_fixed.attn", "sparse_fixed_written", "c=16", 16},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        if (!variant_from_file(&var, dir, defs[i].file, defs[i].kernel)) continue;
        variant_define(&var, defs[i].def, defs[i].value);
        if (wanted(&var, filter)) add_variant(&list, &var);
    }
    if (variant_from_file(&var, dir, "sparse_fixed.attn", "sparse_fixed")) {
        variant_define(&var, "stride=8", 8);
        variant_define(&var, "c=3", 3);
        if (wanted(&var, filter)) add_variant(&list, &var);
    }
    if (variant_from_file(&var, dir, "sparse_fixed.attn", "sparse_fixed_written")) {
        variant_define(&var, "stride=1", 1);
        variant_define(&var, "c=1", 1);
        if (wanted(&var, filter)) add_variant(&list, &var);
    }

    /* -fno-prune and -O0 must give the same results. */
    static const struct {
        const char *file, *kernel;
    } noprune[] = {
        {"atrous.attn", "atrous_window"}, {"sparse_fixed.attn", "sparse_fixed"},
        {"packed_docs.attn", "packed_causal"}, {"unilm.attn", "unilm"},
        {"local.attn", "local_sliding"},
    };
    for (size_t i = 0; i < sizeof noprune / sizeof noprune[0]; i++) {
        if (!variant_from_file(&var, dir, noprune[i].file, noprune[i].kernel))
            continue;
        var.no_prune = 1;
        strncat(var.label, " -fno-prune", sizeof var.label - strlen(var.label) - 1);
        if (wanted(&var, filter)) add_variant(&list, &var);
    }
    if (variant_from_file(&var, dir, "causal_lm.attn", "gpt_small")) {
        var.opt_level = 0;
        strncat(var.label, " -O0", sizeof var.label - strlen(var.label) - 1);
        if (wanted(&var, filter)) add_variant(&list, &var);
    }

    /* GQA ratios through inline specs: kv_heads in {1, 2, 4, heads}, plus a head map and a
     * sliding window with GQA. */
    static const struct {
        int kv_heads, head_mod;
        const char *mask;
        RefMaskFn fn;
        int64_t p0;
    } gqa[] = {
        {1, 0, "causal", mask_causal, 0},     {2, 0, "causal", mask_causal, 0},
        {4, 0, "causal", mask_causal, 0},     {8, 0, "causal", mask_causal, 0},
        {2, 2, "causal", mask_causal, 0},     {4, 0, "sliding(13)", mask_sliding, 13},
        {2, 0, "true", NULL, 0},
    };
    for (size_t i = 0; i < sizeof gqa / sizeof gqa[0]; i++) {
        memset(&var, 0, sizeof var);
        snprintf(var.textbuf, sizeof var.textbuf,
                 "# GQA ratio test\nattention gqa_inline {\n    heads = 8;  kv_heads = %d;  "
                 "head_dim = 32;\n%s    mask = %s;\n}\n",
                 gqa[i].kv_heads, gqa[i].head_mod ? "    kv_head = h % 2;\n" : "", gqa[i].mask);
        var.path = "gqa_inline.attn";
        var.text = var.textbuf;
        var.kernel = "gqa_inline";
        var.opt_level = 3;
        var.ref = (RefKernel){.file = "gqa_inline.attn", .kernel = "gqa_inline", .heads = 8,
                              .kv_heads = gqa[i].kv_heads, .qk_dim = 32, .v_dim = 32,
                              .head_mod = gqa[i].head_mod, .mask = gqa[i].fn,
                              .param_values = {gqa[i].p0}};
        snprintf(var.label, sizeof var.label, "inline heads=8 kv_heads=%d%s mask=%s",
                 gqa[i].kv_heads, gqa[i].head_mod ? " kv_head=h%2" : "", gqa[i].mask);
        if (wanted(&var, filter)) add_variant(&list, &var);
    }

    /* 16-bit storage types through inline specs. */
    static const struct {
        const char *text, *kernel;
        attn_dtype dtype;
        RefKernel ref;
    } halves[] = {
        {"attention half_causal { heads = 4; kv_heads = 2; head_dim = 64; dtype = f16;\n"
         "    mask = causal; }\n",
         "half_causal", ATTN_F16,
         {.heads = 4, .kv_heads = 2, .qk_dim = 64, .v_dim = 64, .mask = mask_causal}},
        {"attention half_unilm { input i32 src_len[batch]; heads = 2; head_dim = 32;\n"
         "    v_dim = 48; dtype = f16; mask = k < src_len[b] || k <= q; }\n",
         "half_unilm", ATTN_F16,
         {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 48, .mask = mask_unilm,
          .inputs = {REF_IN_SRC_LEN}}},
        {"attention bf16_softcap { heads = 4; kv_heads = 1; head_dim = 32; dtype = bf16;\n"
         "    mask = sliding(13); score = 2.0 * tanh(score / 2.0); }\n",
         "bf16_softcap", ATTN_BF16,
         {.heads = 4, .kv_heads = 1, .qk_dim = 32, .v_dim = 32, .mask = mask_sliding,
          .score = score_softcap2, .param_values = {13}}},
        {"attention bf16_atrous { heads = 2; head_dim = 64; dtype = bf16;\n"
         "    mask = (q - k) % 3 == 0; }\n",
         "bf16_atrous", ATTN_BF16,
         {.heads = 2, .kv_heads = 2, .qk_dim = 64, .v_dim = 64, .mask = mask_dilated,
          .param_values = {3}}},
    };
    /* Edge patterns: odd widths, lengths and heads in masks, -inf from a score mod, scalar,
     * float and nested-index inputs. */
    static const struct {
        const char *text, *kernel;
        RefKernel ref;
    } extras[] = {
        {"attention odd_dims { heads = 3; kv_heads = 1; head_dim = 7; v_dim = 5; mask = causal; }",
         "odd_dims", {.heads = 3, .kv_heads = 1, .qk_dim = 7, .v_dim = 5, .mask = mask_causal}},
        /* in the [batch, seq, heads, dim] views (rows of 30 + a gap of 2), K/V rows 8 * 32
         * floats (1 KiB) apart: P.V reads the block's V rows from the copy the pack piece
         * makes (vpack_on at run time), the last vector of a row 14 lanes */
        {"attention heads8 { heads = 8; head_dim = 30; mask = sliding(40); }", "heads8",
         {.heads = 8, .kv_heads = 8, .qk_dim = 30, .v_dim = 30, .mask = mask_sliding, .param_values = {40}}},
        /* a window over 4 key blocks a chunk in the same views: the ring hands a chunk K^T
         * blocks and V copies the previous one packed before its last (the long BSHD case) */
        {"attention ring8 { heads = 8; head_dim = 30; mask = sliding(150); }", "ring8",
         {.heads = 8, .kv_heads = 8, .qk_dim = 30, .v_dim = 30, .mask = mask_sliding, .param_values = {150}}},
        /* head_dim 80: key blocks of 3 vectors, so partial blocks' windows end odd */
        {"attention dim80 { heads = 2; head_dim = 80; mask = sliding(37); }", "dim80",
         {.heads = 2, .kv_heads = 2, .qk_dim = 80, .v_dim = 80, .mask = mask_sliding, .param_values = {37}}},
        /* the same with two query heads a K/V head (the group function's pieces read V alike) */
        {"attention gqa8 { heads = 16; kv_heads = 8; head_dim = 30; mask = causal; }", "gqa8",
         {.heads = 16, .kv_heads = 8, .qk_dim = 30, .v_dim = 30, .mask = mask_causal}},
        {"attention dim1 { heads = 1; head_dim = 1; v_dim = 1; mask = window(3); }", "dim1",
         {.heads = 1, .kv_heads = 1, .qk_dim = 1, .v_dim = 1, .mask = mask_window,
          .param_values = {3}}},
        {"attention wide_v { heads = 2; head_dim = 16; v_dim = 200; mask = k != q; }", "wide_v",
         {.heads = 2, .kv_heads = 2, .qk_dim = 16, .v_dim = 200, .mask = mask_tta}},
        {"attention lens { heads = 2; head_dim = 32; mask = k >= kv_len - 16 || q - k >= q_len; }",
         "lens", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32, .mask = mask_lens}},
        {"attention per_head { heads = 4; kv_heads = 2; head_dim = 32;\n"
         "    mask = h % 2 == 0 ? k <= q : abs(q - k) <= 8 + b; }",
         "per_head", {.heads = 4, .kv_heads = 2, .qk_dim = 32, .v_dim = 32, .mask = mask_per_head}},
        {"attention score_inf { heads = 2; head_dim = 32; mask = causal;\n"
         "    score = k % 3 == 0 ? -inf : score; }",
         "score_inf", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32, .mask = mask_causal,
                       .score = score_inf_every3}},
        {"attention score_cos { heads = 2; head_dim = 32; scale = 0.3;\n"
         "    score = score * 0.5 + 0.25 * cos(q - k); }",
         "score_cos", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32, .scale = 0.3,
                       .score = score_cos}},
        {"attention scalar_in { input i32 n; heads = 2; head_dim = 32; mask = k < n || k <= q; }",
         "scalar_in", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32,
                       .mask = mask_scalar_n, .inputs = {REF_IN_N}}},
        {"attention float_in { input f32 thr[heads]; heads = 2; head_dim = 32;\n"
         "    mask = abs(q - k) < thr[h]; }",
         "float_in", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32,
                      .mask = mask_float_thr, .inputs = {REF_IN_THR}}},
        {"attention block_diag { heads = 2; head_dim = 32; mask = k / 8 == q / 8; }",
         "block_diag", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32,
                        .mask = xmask_block_diag}},
        /* exact bands (w a multiple of W up to 4W) run as groups of rows W apart: the 64-wide
         * band of strided(64) (its first domain), 32 keys ending 5 before q (v_dim 48, 3
         * vectors), 48 ending a key before q (v_dim 80: column groups of 4 and 1); test_merge
         * has a band resuming */
        {"attention band64 { heads = 2; head_dim = 64; mask = strided(64); }", "band64",
         {.heads = 2, .kv_heads = 2, .qk_dim = 64, .v_dim = 64, .mask = mask_strided, .param_values = {64}}},
        {"attention band32 { heads = 3; head_dim = 16; v_dim = 48; mask = k <= q - 5 && k > q - 37; }", "band32",
         {.heads = 3, .kv_heads = 3, .qk_dim = 16, .v_dim = 48, .mask = xmask_band32}},
        {"attention band48 { heads = 2; head_dim = 32; v_dim = 80; mask = k < q && q - k <= 48; }", "band48",
         {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 80, .mask = xmask_band48}},
        /* a staircase in residue classes (rows grouped by key count mod W): classes of 5 that
         * see their keys up to 3 before q (in class keys, up to 1 before), d16, v_dim 48;
         * strided's classes (band64 above) are the other */
        {"attention stair5 { heads = 3; head_dim = 16; v_dim = 48; mask = k <= q - 3 && (q - k) % 5 == 0; }", "stair5",
         {.heads = 3, .kv_heads = 3, .qk_dim = 16, .v_dim = 48, .mask = xmask_stair5}},
        {"attention residue { heads = 2; head_dim = 32; mask = (k - q) % 5 == 2 || q % 4 == k % 4; }",
         "residue", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32, .mask = xmask_residue}},
        {"attention minmax { heads = 2; head_dim = 32;\n"
         "    mask = k <= min(q, 50) && k >= max(q - 30, 0); }",
         "minmax", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32, .mask = xmask_minmax}},
        {"attention boolcmp { heads = 2; head_dim = 32;\n"
         "    mask = (k % 2 == 0) == (q % 2 == 0) && !(k > q); }",
         "boolcmp", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32,
                     .mask = xmask_boolcmp}},
        {"attention clamp { heads = 2; head_dim = 32; scale = 4.0; mask = causal;\n"
         "    score = score > 6.0 ? 6.0 : max(score, -3.0); }",
         "clamp", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32, .scale = 4.0,
                   .mask = mask_causal, .score = xscore_clamp}},
        {"attention hot { heads = 2; head_dim = 32; scale = 2.0; mask = window(40); }", "hot",
         {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32, .scale = 2.0,
          .mask = mask_window, .param_values = {40}}},
        {"attention nested { input i32 doc[batch, seq]; input i32 start[8192];\n"
         "    heads = 2; head_dim = 32; mask = k >= start[doc[b, q]] && k <= q; }",
         "nested", {.heads = 2, .kv_heads = 2, .qk_dim = 32, .v_dim = 32,
                    .mask = mask_nested_start, .inputs = {REF_IN_DOC, REF_IN_START},
                    .q_indexes_input = true}},
    };
    for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++) {
        memset(&var, 0, sizeof var);
        var.path = "extra_inline.attn";
        var.text = extras[i].text;
        var.kernel = extras[i].kernel;
        var.opt_level = 3;
        var.ref = extras[i].ref;
        var.ref.file = var.path;
        var.ref.kernel = var.kernel;
        snprintf(var.label, sizeof var.label, "inline %s", extras[i].kernel);
        if (wanted(&var, filter)) add_variant(&list, &var);
    }

    for (size_t i = 0; i < sizeof halves / sizeof halves[0]; i++) {
        memset(&var, 0, sizeof var);
        var.path = "dtype_inline.attn";
        var.text = halves[i].text;
        var.kernel = halves[i].kernel;
        var.opt_level = 3;
        var.dtype = halves[i].dtype;
        var.ref = halves[i].ref;
        var.ref.file = var.path;
        var.ref.kernel = var.kernel;
        snprintf(var.label, sizeof var.label, "inline %s (%s)", halves[i].kernel,
                 dtype_name(halves[i].dtype));
        if (wanted(&var, filter)) add_variant(&list, &var);
    }

    /* Narrower vectors than the host's: SSE2 (4 lanes) and AVX2 (8 lanes) on some kernels,
     * odd widths and 16-bit types included. */
    if (!strstr(cpu_list_host(), "none")) {
        static const char *const cpus[] = {"x86-64", "haswell"};
        int n0 = list.n;
        for (int c = 0; c < 2; c++)
            for (int i = 0; i < n0; i++) {
                const char *l = list.v[i].label;
                bool pick = !strcmp(l, "atrous.attn:atrous_window") ||
                            !strcmp(l, "sparse_fixed.attn:sparse_fixed") ||
                            !strcmp(l, "softcap.attn:softcap_small") ||
                            !strcmp(l, "packed_docs.attn:packed_causal") ||
                            !strcmp(l, "heads.attn:gqa_vdim") || !strcmp(l, "inline odd_dims") ||
                            !strcmp(l, "inline half_causal (f16)") ||
                            !strcmp(l, "inline bf16_softcap (bf16)") ||
                            !strcmp(l, "alibi.attn:alibi") || !strcmp(l, "inline score_inf");
                if (!pick) continue;
                var = list.v[i];
                var.cpu = cpus[c];
                size_t len = strlen(var.label);
                snprintf(var.label + len, sizeof var.label - len, " --cpu %s", cpus[c]);
                var.path = list.v[i].own_path ? var.pathbuf : list.v[i].path;
                var.text = list.v[i].own_text ? var.textbuf : list.v[i].text;
                add_variant(&list, &var);
            }
    }

    for (int i = 0; i < list.n; i++) {
        if (list.v[i].own_path) list.v[i].path = list.v[i].pathbuf;
        if (list.v[i].own_text) list.v[i].text = list.v[i].textbuf;
    }

    /* Run them, compiling variant i+1 in a second thread while variant i runs. */
    pthread_t ahead;
    bool ahead_running = false;
    for (int i = 0; i < list.n; i++) {
        if (ahead_running) {
            pthread_join(ahead, NULL);
            ahead_running = false;
        } else {
            compile_variant(&list.v[i]);
        }
        if (i + 1 < list.n)
            ahead_running = pthread_create(&ahead, NULL, compile_variant, &list.v[i + 1]) == 0;
        run_variant(&list.v[i]);
    }
    free(list.v);
    if (!filter || strstr("concurrent", filter)) run_concurrent();

    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%d fully masked rows checked, %d index-error cases, %d cases skipped (cost or "
           "q outside an input), %.1f s\n",
           g_masked_rows, g_index_cases, g_skip, secs);
    CHECK(filter || g_masked_rows > 0, "no case produced a fully masked row");
    printf("worst error / bound: f32 %.3f, f16 %.3f, bf16 %.3f (1.0 is the limit)\n", g_worst[0],
           g_worst[1], g_worst[2]);
    return check_done("test_kernels");
}
