/* test_api.c — the C API's defaults and edge calls, as a user writes them:
 *  - a zero-initialised attn_call / attn_mla_call puts the queries at the end (q_offset =
 *    kv_len - q_len), checked against a double-precision reference on a decode (q_len 1,
 *    kv_len 37); q_offset_set = 1 with q_offset 0 puts them at position 0;
 *  - empty calls: kv_len = 0 gives o = 0 and lse = -inf, q_len = 0 does nothing, for plain,
 *    union (key domains), permuted and MLA kernels, with and without runtime inputs;
 *  - compiles honour a thread cap: attn_options.compile_threads, ATTNC_COMPILE_THREADS and
 *    `threads` (counted as the threads the process has while the compile runs);
 *  - an input read out of its sizes is reported with the input, the index and the position. */
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn/attn.h"
#include "tests/check.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / (double)(1ull << 53) * 2 - 1);
}

static attn_kernel *compile_opts(const char *text, const attn_options *opts) {
    attn_kernel *k = NULL;
    char *diags = NULL;
    attn_error err;
    if (attn_compile("api.attn", text, opts, &k, &diags, &err) != ATTN_OK) {
        fprintf(stderr, "compile failed: %s\n%s\n%s\n", err.message, diags ? diags : "", text);
        check_failures++;
    }
    attn_free(diags);
    return k;
}

static attn_kernel *compile(const char *text) { return compile_opts(text, NULL); }

/* Causal attention in double, H query heads on one K/V head, queries at q_offset. */
static void ref_causal(int H, int D, int64_t Lq, int64_t Lk, int64_t q_offset, const float *q,
                       const float *k, const float *v, double *o, double *lse) {
    for (int h = 0; h < H; h++)
        for (int64_t i = 0; i < Lq; i++) {
            const float *qr = q + (h * Lq + i) * D;
            double m = -INFINITY, s[64];
            for (int64_t j = 0; j < Lk; j++) {
                s[j] = -INFINITY;
                if (j > q_offset + i) continue;
                double dot = 0;
                for (int d = 0; d < D; d++) dot += (double)qr[d] * k[j * D + d];
                s[j] = dot / sqrt((double)D);
                m = s[j] > m ? s[j] : m;
            }
            double sum = 0, *orow = o + (h * Lq + i) * D;
            for (int d = 0; d < D; d++) orow[d] = 0;
            for (int64_t j = 0; j < Lk && m > -INFINITY; j++) {
                if (s[j] == -INFINITY) continue;
                double e = exp(s[j] - m);
                sum += e;
                for (int d = 0; d < D; d++) orow[d] += e * v[j * D + d];
            }
            for (int d = 0; d < D && sum > 0; d++) orow[d] /= sum;
            lse[h * Lq + i] = sum > 0 ? m + log(sum) : -INFINITY;
        }
}

static double max_err(const float *got, const double *want, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]);
        worst = e > worst || isnan(e) ? (isnan(e) ? INFINITY : e) : worst;
    }
    return worst;
}

/* A zero-initialised call (only the tensors set) runs a decode with the query at the end. */
static void test_default_q_offset(void) {
    enum { H = 2, D = 8, LQ = 1, LK = 37 };
    attn_kernel *kern = compile("attention dec { heads = 2; kv_heads = 1; head_dim = 8; mask = causal; }");
    if (!kern) return;
    float q[H * LQ * D], k[LK * D], v[LK * D], o[H * LQ * D], lse[H * LQ];
    for (int i = 0; i < H * LQ * D; i++) q[i] = urand() * 2;
    for (int i = 0; i < LK * D; i++) k[i] = urand() * 2, v[i] = urand();
    double ro[H * LQ * D], rl[H * LQ];
    attn_call c;
    memset(&c, 0, sizeof c);
    c.q = (attn_tensor){q, 4, {1, H, LQ, D}, {0}};
    c.k = (attn_tensor){k, 4, {1, 1, LK, D}, {0}};
    c.v = (attn_tensor){v, 4, {1, 1, LK, D}, {0}};
    c.o = (attn_tensor){o, 4, {1, H, LQ, D}, {0}};
    c.lse = (attn_tensor){lse, 3, {1, H, LQ}, {0}};
    attn_error err;
    EXPECT(attn_run(kern, &c, &err) == ATTN_OK);
    ref_causal(H, D, LQ, LK, LK - LQ, q, k, v, ro, rl);
    EXPECT(max_err(o, ro, H * LQ * D) < 1e-5);
    EXPECT(max_err(lse, rl, H * LQ) < 1e-5);
    /* q_offset_set: the query at position 0 (sees key 0 only) */
    c.q_offset_set = 1;
    EXPECT(attn_run(kern, &c, &err) == ATTN_OK);
    ref_causal(H, D, LQ, LK, 0, q, k, v, ro, rl);
    EXPECT(max_err(o, ro, H * LQ * D) < 1e-5);
    /* the sentinel of older callers still means the default, a nonzero offset is used */
    c.q_offset_set = 0;
    c.q_offset = ATTN_Q_OFFSET_DEFAULT;
    EXPECT(attn_run(kern, &c, &err) == ATTN_OK);
    ref_causal(H, D, LQ, LK, LK - LQ, q, k, v, ro, rl);
    EXPECT(max_err(o, ro, H * LQ * D) < 1e-5);
    c.q_offset = 5;
    EXPECT(attn_run(kern, &c, &err) == ATTN_OK);
    ref_causal(H, D, LQ, LK, 5, q, k, v, ro, rl);
    EXPECT(max_err(o, ro, H * LQ * D) < 1e-5);
    attn_kernel_free(kern);
}

/* MLA tensors of one call, row-major. */
typedef struct Mla {
    int64_t B, H, Lq, Lk, R, rope, nope, dv;
    float *qn, *qr, *ckv, *kr, *wuk, *wuv, *o, *lse;
} Mla;

static float *fill(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) abort();
    for (size_t i = 0; i < n; i++) p[i] = urand();
    return p;
}

static void mla_alloc(Mla *m) {
    m->qn = fill((size_t)(m->B * m->H * m->Lq * m->nope));
    m->qr = fill((size_t)(m->B * m->H * m->Lq * m->rope));
    m->ckv = fill((size_t)(m->B * m->Lk * m->R));
    m->kr = fill((size_t)(m->B * m->Lk * m->rope));
    m->wuk = fill((size_t)(m->H * m->R * m->nope));
    m->wuv = fill((size_t)(m->H * m->R * m->dv));
    m->o = fill((size_t)(m->B * m->H * m->Lq * m->dv));
    m->lse = fill((size_t)(m->B * m->H * m->Lq));
}

static void mla_free(Mla *m) {
    free(m->qn), free(m->qr), free(m->ckv), free(m->kr), free(m->wuk), free(m->wuv), free(m->o), free(m->lse);
}

static attn_mla_call mla_call(const Mla *m) {
    attn_mla_call c;
    memset(&c, 0, sizeof c);
    c.q_nope = (attn_tensor){m->qn, 4, {m->B, m->H, m->Lq, m->nope}, {0}};
    c.q_rope = (attn_tensor){m->qr, 4, {m->B, m->H, m->Lq, m->rope}, {0}};
    c.c_kv = (attn_tensor){m->ckv, 3, {m->B, m->Lk, m->R}, {0}};
    c.k_rope = (attn_tensor){m->kr, 3, {m->B, m->Lk, m->rope}, {0}};
    c.w_uk = (attn_tensor){m->wuk, 3, {m->H, m->R, m->nope}, {0}};
    c.w_uv = (attn_tensor){m->wuv, 3, {m->H, m->R, m->dv}, {0}};
    c.o = (attn_tensor){m->o, 4, {m->B, m->H, m->Lq, m->dv}, {0}};
    c.lse = (attn_tensor){m->lse, 3, {m->B, m->H, m->Lq}, {0}};
    return c;
}

static const char *mla_spec =
    "attention mla_api { heads = 2; mla { kv_rank = 16; rope_dim = 8; nope_dim = 8; v_dim = 8; } mask = causal; }";

/* A zero-initialised MLA call equals the call with q_offset = kv_len - q_len spelled out. */
static void test_default_q_offset_mla(void) {
    attn_kernel *kern = compile(mla_spec);
    if (!kern) return;
    Mla m = {.B = 1, .H = 2, .Lq = 1, .Lk = 37, .R = 16, .rope = 8, .nope = 8, .dv = 8};
    mla_alloc(&m);
    size_t no = (size_t)(m.H * m.dv);
    float o_def[16], o_end[16], o_top[16];
    attn_error err;
    for (int absorb = ATTN_ABSORB_ON; absorb <= ATTN_ABSORB_OFF; absorb++) {
        attn_mla_call c = mla_call(&m);
        c.absorb = absorb;
        EXPECT(attn_run_mla(kern, &c, NULL, &err) == ATTN_OK);
        memcpy(o_def, m.o, no * sizeof(float));
        c.q_offset = m.Lk - m.Lq;
        EXPECT(attn_run_mla(kern, &c, NULL, &err) == ATTN_OK);
        memcpy(o_end, m.o, no * sizeof(float));
        c.q_offset = 0;
        c.q_offset_set = 1;
        EXPECT(attn_run_mla(kern, &c, NULL, &err) == ATTN_OK);
        memcpy(o_top, m.o, no * sizeof(float));
        EXPECT(memcmp(o_def, o_end, no * sizeof(float)) == 0);
        EXPECT(memcmp(o_def, o_top, no * sizeof(float)) != 0);
    }
    mla_free(&m);
    attn_kernel_free(kern);
}

static bool all_zero_neg_inf(const float *o, size_t no, const float *lse, size_t nl) {
    for (size_t i = 0; i < no; i++)
        if (o[i] != 0 || signbit(o[i])) return false;
    for (size_t i = 0; i < nl; i++)
        if (lse[i] != -INFINITY) return false;
    return true;
}

/* kv_len = 0 and q_len = 0 through attn_run: plain, union and permutation masks. */
static void test_empty_calls(void) {
    static const char *specs[] = {
        "attention e1 { heads = 4; kv_heads = 2; head_dim = 8; mask = causal; }",
        "attention e2 { input i32 src_len[batch]; heads = 2; head_dim = 8; mask = k < src_len[b]; }",
        "attention e3 { heads = 2; head_dim = 8; mask = sliding(4) || k < 2; }",
        "attention e4 { input i32 rank[batch, seq]; heads = 2; head_dim = 8; mask = rank[b, k] <= rank[b, q]; }",
        "attention e5 { heads = 2; head_dim = 8; dtype = f16; mask = causal; }",
    };
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++) {
        attn_kernel *kern = compile(specs[s]);
        if (!kern) continue;
        const attn_rt_desc *d = attn_kernel_desc(kern);
        int64_t H = d->heads, KH = d->kv_heads, D = 8;
        for (int pass = 0; pass < 3; pass++) { /* kv_len 0, q_len 0, batch 0 */
            int64_t B = pass == 2 ? 0 : 2, Lq = pass == 1 ? 0 : 3, Lk = pass == 0 ? 0 : 5;
            size_t no = (size_t)(B * H * Lq * D), nl = (size_t)(B * H * Lq);
            float q[256], k[256], v[256], o[256], lse[32];
            for (int i = 0; i < 256; i++) q[i] = o[i] = k[i] = v[i] = 7;
            for (int i = 0; i < 32; i++) lse[i] = 7;
            int32_t src_len[2] = {0, 0}, rank[10] = {0, 1, 2, 3, 4, 4, 3, 2, 1, 0};
            attn_input in = {.name = s == 1 ? "src_len" : "rank"};
            if (s == 1) in.t = (attn_tensor){src_len, 1, {B}, {0}};
            if (s == 3) in.t = (attn_tensor){rank, 2, {B, Lk}, {0}};
            attn_call c;
            memset(&c, 0, sizeof c);
            c.q = (attn_tensor){q, 4, {B, H, Lq, D}, {0}};
            c.k = (attn_tensor){k, 4, {B, KH, Lk, D}, {0}};
            c.v = (attn_tensor){v, 4, {B, KH, Lk, D}, {0}};
            c.o = (attn_tensor){o, 4, {B, H, Lq, D}, {0}};
            c.lse = (attn_tensor){lse, 3, {B, H, Lq}, {0}};
            c.inputs = &in;
            c.ninputs = s == 1 || s == 3;
            for (int threads = 1; threads <= 2; threads++) {
                c.threads = threads;
                attn_error err;
                attn_status st = attn_run(kern, &c, &err);
                if (st != ATTN_OK) fprintf(stderr, "%s, q_len %lld, kv_len %lld: %s\n", specs[s], (long long)Lq,
                                           (long long)Lk, err.message);
                EXPECT(st == ATTN_OK);
                if (Lq == 0 || B == 0) {
                    EXPECT(o[0] == 7 && lse[0] == 7); /* nothing written */
                } else if (s == 4) {
                    uint16_t *h = (uint16_t *)o;
                    bool zero = true;
                    for (size_t i = 0; i < no; i++) zero &= h[i] == 0;
                    EXPECT(zero);
                    for (size_t i = 0; i < nl; i++) EXPECT(lse[i] == -INFINITY);
                } else {
                    EXPECT(all_zero_neg_inf(o, no, lse, nl));
                }
                /* without lse too */
                attn_call c2 = c;
                memset(&c2.lse, 0, sizeof c2.lse);
                for (int i = 0; i < 256; i++) o[i] = 7;
                EXPECT(attn_run(kern, &c2, &err) == ATTN_OK);
                if (Lq && B && s != 4) EXPECT(all_zero_neg_inf(o, no, lse, 0));
                if (B == 0 && s != 4) { /* the backward of an empty batch: nothing to write */
                    float dq[8] = {7}, dk[8] = {7}, dv[8] = {7};
                    attn_grad_call g = {.dout = c.o, .dq = {dq, 4, {0, H, Lq, D}, {0}},
                                        .dk = {dk, 4, {0, KH, Lk, D}, {0}}, .dv = {dv, 4, {0, KH, Lk, D}, {0}}};
                    attn_status gs = attn_run_backward(kern, &c, &g, &err);
                    if (gs != ATTN_OK) fprintf(stderr, "%s, batch 0 backward: %s\n", specs[s], err.message);
                    EXPECT(gs == ATTN_OK && dq[0] == 7);
                }
                /* an empty call still checks its inputs */
                c2.ninputs = 0;
                if (s == 1 || s == 3) EXPECT(attn_run(kern, &c2, &err) == ATTN_ERR_INPUT);
            }
            /* the runtime alone (a descriptor, no compiler library) */
            if (s == 0) {
                attn_error err;
                EXPECT(attn_rt_launch(d, &c, NULL, &err) == ATTN_OK);
            }
        }
        attn_kernel_free(kern);
    }
    /* a negative length is still refused */
    attn_kernel *kern = compile(specs[0]);
    if (kern) {
        float x[8] = {0};
        attn_call c;
        memset(&c, 0, sizeof c);
        c.q = (attn_tensor){x, 4, {1, 4, 1, 8}, {0}};
        c.k = (attn_tensor){x, 4, {1, 2, -1, 8}, {0}};
        c.v = (attn_tensor){x, 4, {1, 2, -1, 8}, {0}};
        c.o = (attn_tensor){x, 4, {1, 4, 1, 8}, {0}};
        attn_error err;
        EXPECT(attn_run(kern, &c, &err) == ATTN_ERR_SHAPE);
        attn_kernel_free(kern);
    }
}

/* kv_len = 0 and q_len = 0 through attn_run_mla, both variants. */
static void test_empty_mla(void) {
    attn_kernel *kern = compile(mla_spec);
    if (!kern) return;
    for (int pass = 0; pass < 3; pass++) /* kv_len 0, q_len 0, batch 0 */
        for (int absorb = ATTN_ABSORB_ON; absorb <= ATTN_ABSORB_OFF; absorb++) {
            Mla m = {.B = pass == 2 ? 0 : 2, .H = 2, .Lq = pass == 1 ? 0 : 3, .Lk = pass == 0 ? 0 : 4, .R = 16, .rope = 8,
                     .nope = 8, .dv = 8};
            mla_alloc(&m);
            attn_mla_call c = mla_call(&m);
            c.absorb = absorb;
            attn_error err;
            attn_status st = attn_run_mla(kern, &c, NULL, &err);
            if (st) fprintf(stderr, "MLA q_len %lld kv_len %lld: %s\n", (long long)m.Lq, (long long)m.Lk, err.message);
            EXPECT(st == ATTN_OK);
            if (m.Lq && m.B)
                EXPECT(all_zero_neg_inf(m.o, (size_t)(m.B * m.H * m.Lq * m.dv), m.lse, (size_t)(m.B * m.H * m.Lq)));
            mla_free(&m);
        }
    attn_kernel_free(kern);
}

/* The number of threads of this process. */
static int task_count(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

typedef struct Watch {
    atomic_int stop, most;
} Watch;

static void *watch(void *arg) {
    Watch *w = arg;
    while (!atomic_load(&w->stop)) {
        int n = task_count();
        if (n > atomic_load(&w->most)) atomic_store(&w->most, n);
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    return NULL;
}

/* The most threads the process had during a cold compile of a kernel of several pieces
 * (besides this one and the watcher). */
static int compile_threads_seen(const attn_options *opts) {
    Watch w;
    atomic_init(&w.stop, 0);
    atomic_init(&w.most, 0);
    int base = task_count();
    pthread_t th;
    if (pthread_create(&th, NULL, watch, &w) != 0) return -1;
    attn_kernel *k = compile_opts("attention pieces { heads = 8; kv_heads = 2; head_dim = 64; "
                                  "mask = sliding(100) || k < 4 || q % 3 == k % 3; }",
                                  opts);
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    attn_kernel_free(k);
    return atomic_load(&w.most) - base - 1;
}

static void test_compile_threads(void) {
    attn_options o;
    attn_options_init(&o);
    o.no_cache = 1;
    unsetenv("ATTNC_COMPILE_THREADS");
    int all = compile_threads_seen(&o);
    printf("compile: %d extra threads with every core (%d cores)\n", all, attn_rt_cpu_count());
    if (attn_rt_cpu_count() > 1) EXPECT(all >= 1); /* or this test proves nothing */
    o.compile_threads = 1;
    EXPECT(compile_threads_seen(&o) == 0);
    o.compile_threads = 0;
    o.threads = 1; /* the runs' default caps the compile too */
    EXPECT(compile_threads_seen(&o) == 0);
    o.threads = 0;
    setenv("ATTNC_COMPILE_THREADS", "1", 1);
    EXPECT(compile_threads_seen(&o) == 0);
    o.compile_threads = 2; /* the option wins over the environment */
    if (attn_rt_cpu_count() > 1) EXPECT(compile_threads_seen(&o) >= 1);
    o.compile_threads = 0;
    static const char *bad[] = {"0", "-2", "two", "1x", "99999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("ATTNC_COMPILE_THREADS", bad[i], 1);
        attn_kernel *k = NULL;
        attn_error err;
        EXPECT(attn_compile("t.attn", "attention t { heads = 1; head_dim = 4; }", &o, &k, NULL, &err) ==
               ATTN_ERR_ARG);
        EXPECT(k == NULL && strstr(err.message, "ATTNC_COMPILE_THREADS"));
    }
    unsetenv("ATTNC_COMPILE_THREADS");
    o.compile_threads = -1;
    attn_kernel *k = NULL;
    EXPECT(attn_compile("t.attn", "attention t { heads = 1; head_dim = 4; }", &o, &k, NULL, NULL) == ATTN_ERR_ARG);
}

/* An index error names the input, the expression, the index, the sizes and the position. */
static void test_index_message(void) {
    attn_kernel *kern = compile("attention r { input i32 rank[batch, 32]; heads = 2; head_dim = 8; "
                                "mask = rank[b, k] <= rank[b, q]; }");
    if (!kern) return;
    enum { L = 40 };
    static float x[2 * L * 8], o[2 * L * 8];
    int32_t rank[32];
    for (int i = 0; i < 32; i++) rank[i] = i;
    attn_input in = {.name = "rank", .t = {rank, 2, {1, 32}, {0}}};
    attn_call c;
    memset(&c, 0, sizeof c);
    c.q = c.k = c.v = (attn_tensor){x, 4, {1, 2, L, 8}, {0}};
    c.o = (attn_tensor){o, 4, {1, 2, L, 8}, {0}};
    c.inputs = &in;
    c.ninputs = 1;
    attn_error err;
    EXPECT(attn_run(kern, &c, &err) == ATTN_ERR_INDEX);
    static const char *words[] = {"'rank'", "rank[b, k]", "[0, 32]", "sized [1, 32]", "k = 32", "q = 0", "b = 0"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (!strstr(err.message, words[i])) fprintf(stderr, "'%s' lacks '%s'\n", err.message, words[i]);
        EXPECT(strstr(err.message, words[i]));
    }
    attn_kernel_free(kern);
    /* an MLA kernel too, both variants */
    kern = compile("attention m { input i32 lim[4]; heads = 2; mla { kv_rank = 16; rope_dim = 8; nope_dim = 8; "
                   "v_dim = 8; } mask = k <= lim[q]; }");
    if (!kern) return;
    Mla m = {.B = 1, .H = 2, .Lq = 6, .Lk = 6, .R = 16, .rope = 8, .nope = 8, .dv = 8};
    mla_alloc(&m);
    int32_t lim[4] = {0, 1, 2, 3};
    attn_input li = {.name = "lim", .t = {lim, 1, {4}, {0}}};
    for (int absorb = ATTN_ABSORB_ON; absorb <= ATTN_ABSORB_OFF; absorb++) {
        attn_mla_call mc = mla_call(&m);
        mc.inputs = &li;
        mc.ninputs = 1;
        mc.absorb = absorb;
        EXPECT(attn_run_mla(kern, &mc, NULL, &err) == ATTN_ERR_INDEX);
        if (!strstr(err.message, "lim[q] at index [4]")) fprintf(stderr, "MLA: '%s'\n", err.message);
        EXPECT(strstr(err.message, "lim[q] at index [4]") && strstr(err.message, "q = 4"));
    }
    mla_free(&m);
    attn_kernel_free(kern);
}

int main(void) {
    test_default_q_offset();
    test_default_q_offset_mla();
    test_empty_calls();
    test_empty_mla();
    test_compile_threads();
    test_index_message();
    if (check_failures) fprintf(stderr, "%d checks failed\n", check_failures);
    else printf("api: all checks passed\n");
    return check_failures != 0;
}
