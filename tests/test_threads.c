/* test_threads.c — the C API from many threads at once: 8 threads, sharing nothing but the
 * process, each compile a different spec from text and run it (1 and 2 runtime threads),
 * checked against a C reference; then two threads running one attn_kernel concurrently.
 * Meant to run under ThreadSanitizer too (scripts/tsan.sh). */
#include <math.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"

enum { NSPECS = 8, B = 2, H = 4, KH = 2, D = 16, LQ = 29, LK = 45 };

/* One spec per thread, and its mask and score modifier in C. */
static const char *const specs[NSPECS] = {
    "attention s0 { heads = 4; kv_heads = 2; head_dim = 16; mask = causal; }",
    "attention s1 { heads = 4; kv_heads = 2; head_dim = 16; mask = sliding(5); }",
    "attention s2 { heads = 4; kv_heads = 2; head_dim = 16; mask = strided(4); }",
    "attention s3 { heads = 4; kv_heads = 2; head_dim = 16; mask = k != q; }",
    "param r = 3;\nattention s4 { heads = 4; kv_heads = 2; head_dim = 16; mask = dilated(r); }",
    "attention s5 { heads = 4; kv_heads = 2; head_dim = 16; mask = causal;\n"
    "  score = 5.0 * tanh(score / 5.0); }",
    "attention s6 { input f32 slope[heads]; heads = 4; kv_heads = 2; head_dim = 16;\n"
    "  mask = causal; score = score - slope[h] * (q - k); }",
    "attention s7 { input i32 doc[batch, seq]; heads = 4; kv_heads = 2; head_dim = 16;\n"
    "  mask = doc[b, k] == doc[b, q] && k <= q; }",
};

static const float slopes[H] = {0.5f, 0.25f, 0.125f, 0.0625f};

static int32_t doc_of(int b, int64_t pos) { return (int32_t)((pos + b) / 7); }

static bool c_visible(int spec, int b, int64_t q, int64_t k) {
    switch (spec) {
    case 0: case 5: case 6: return k <= q;
    case 1: return k <= q && q - k < 5;
    case 2: return k <= q && (q - k < 4 || (q - k) % 4 == 0); /* two fused key domains */
    case 3: return k != q;
    case 4: return ((q - k) % 3 + 3) % 3 == 0;
    case 7: return k <= q && doc_of(b, k) == doc_of(b, q);
    }
    return false;
}

static double c_score(int spec, int h, int64_t q, int64_t k, double s) {
    if (spec == 5) return 5.0 * tanh(s / 5.0);
    if (spec == 6) return s - slopes[h] * (double)(q - k);
    return s;
}

/* Per-thread buffers. */
typedef struct Work {
    int spec;                 /* which spec (thread index) */
    attn_kernel *shared;      /* the kernel to run (second test) or NULL to compile */
    uint64_t seed;            /* its random stream */
    float q[B * H * LQ * D], k[B * KH * LK * D], v[B * KH * LK * D], o[B * H * LQ * D];
    int32_t doc[B * LK];
} Work;

/* Runs the kernel on fresh data and compares every row with the reference. */
static void run_and_check(Work *w, attn_kernel *kern, int threads) {
    check_fill(w->q, sizeof w->q / sizeof *w->q, &w->seed, CHECK_UNIFORM, 0.5);
    check_fill(w->k, sizeof w->k / sizeof *w->k, &w->seed, CHECK_UNIFORM, 0.5);
    check_fill(w->v, sizeof w->v / sizeof *w->v, &w->seed, CHECK_UNIFORM, 0.5);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < LK; k++) w->doc[b * LK + k] = doc_of(b, k);
    attn_input in[1];
    int nin = 0;
    if (w->spec == 6)
        in[nin++] = (attn_input){.name = "slope", .t = {.data = (void *)slopes, .ndim = 1, .shape = {H}}};
    if (w->spec == 7)
        in[nin++] = (attn_input){.name = "doc", .t = {.data = w->doc, .ndim = 2, .shape = {B, LK}}};
    attn_call c = {
        .q = {w->q, 4, {B, H, LQ, D}, {0}},
        .k = {w->k, 4, {B, KH, LK, D}, {0}},
        .v = {w->v, 4, {B, KH, LK, D}, {0}},
        .o = {w->o, 4, {B, H, LQ, D}, {0}},
        .q_offset = ATTN_Q_OFFSET_DEFAULT,
        .inputs = in,
        .ninputs = nin,
        .threads = threads,
    };
    attn_error err;
    attn_status st = attn_run(kern, &c, &err);
    CHECK(st == ATTN_OK, "spec %d: attn_run: %s", w->spec, err.message);
    if (st != ATTN_OK) return;
    double worst = 0; /* the largest error, where */
    int at[4] = {0};
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int r = 0; r < LQ; r++) {
                int64_t qpos = LK - LQ + r;
                int kh = h / (H / KH);
                const float *qr = w->q + ((b * H + h) * LQ + r) * D;
                double s[LK];
                for (int j = 0; j < LK; j++) {
                    s[j] = -INFINITY;
                    if (!c_visible(w->spec, b, qpos, j)) continue;
                    const float *kr = w->k + ((b * KH + kh) * LK + j) * D;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += (double)qr[d] * kr[d];
                    s[j] = c_score(w->spec, h, qpos, j, dot / sqrt((double)D));
                }
                check_softmax(s, LK);
                for (int d = 0; d < D; d++) {
                    double want = 0;
                    for (int j = 0; j < LK; j++) want += s[j] * w->v[((b * KH + kh) * LK + j) * D + d];
                    double e = fabs(w->o[((b * H + h) * LQ + r) * D + d] - want);
                    if (!(e <= worst)) worst = e, at[0] = b, at[1] = h, at[2] = r, at[3] = d;
                }
            }
    CHECK(worst <= 1e-4, "spec %d threads %d: b%d h%d row %d dim %d off by %g", w->spec, threads, at[0], at[1],
          at[2], at[3], worst);
}

static void *worker(void *arg) {
    Work *w = arg;
    attn_kernel *kern = w->shared;
    if (!kern) {
        char name[32];
        snprintf(name, sizeof name, "spec%d.attn", w->spec);
        attn_error err;
        char *diags = NULL;
        attn_status st = attn_compile(name, specs[w->spec], NULL, &kern, &diags, &err);
        CHECK(st == ATTN_OK, "spec %d: %s %s", w->spec, err.message, diags ? diags : "");
        attn_free(diags);
        if (st != ATTN_OK) return NULL;
    }
    for (int it = 0; it < (w->shared ? 12 : 3); it++) {
        run_and_check(w, kern, 1);
        run_and_check(w, kern, 2);
        run_and_check(w, kern, 0);
    }
    if (!w->shared) attn_kernel_free(kern);
    return NULL;
}

static void run_threads(Work *ws, int n) {
    pthread_t t[NSPECS];
    for (int i = 0; i < n; i++) REQUIRE(pthread_create(&t[i], NULL, worker, &ws[i]) == 0, "pthread_create");
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

int main(void) {
    Work *ws = calloc(NSPECS, sizeof *ws);
    REQUIRE(ws, "out of memory");
    /* 8 threads, 8 specs, compiled and run at once */
    for (int i = 0; i < NSPECS; i++) ws[i] = (Work){.spec = i, .seed = 100u + (unsigned)i};
    run_threads(ws, NSPECS);
    /* two threads, one kernel (one with a runtime input), the same calls at once */
    for (int s = 6; s <= 7; s++) {
        attn_kernel *kern = NULL;
        attn_error err;
        attn_status st = attn_compile(NULL, specs[s], NULL, &kern, NULL, &err);
        CHECK(st == ATTN_OK, "compile: %s", err.message);
        if (st != ATTN_OK) continue;
        for (int i = 0; i < 2; i++) ws[i] = (Work){.spec = s, .shared = kern, .seed = 7u + (unsigned)i};
        run_threads(ws, 2);
        attn_kernel_free(kern);
    }
    free(ws);
    return check_done("test_threads");
}
