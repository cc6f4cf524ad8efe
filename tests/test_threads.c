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
    unsigned seed;
    float q[B * H * LQ * D], k[B * KH * LK * D], v[B * KH * LK * D], o[B * H * LQ * D];
    int32_t doc[B * LK];
    int failures;
    char msg[600];
} Work;

static float rnd(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 65536.0f - 0.5f;
}

/* Runs the kernel on fresh data and compares every row with the reference. */
static void run_and_check(Work *w, attn_kernel *kern, int threads) {
    for (size_t i = 0; i < sizeof w->q / sizeof *w->q; i++) w->q[i] = rnd(&w->seed);
    for (size_t i = 0; i < sizeof w->k / sizeof *w->k; i++) w->k[i] = rnd(&w->seed);
    for (size_t i = 0; i < sizeof w->v / sizeof *w->v; i++) w->v[i] = rnd(&w->seed);
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
    if (attn_run(kern, &c, &err) != ATTN_OK) {
        snprintf(w->msg, sizeof w->msg, "spec %d: attn_run: %s", w->spec, err.message);
        w->failures++;
        return;
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int r = 0; r < LQ; r++) {
                int64_t qpos = LK - LQ + r;
                int kh = h / (H / KH);
                const float *qr = w->q + ((b * H + h) * LQ + r) * D;
                double s[LK], m = -INFINITY, sum = 0, acc[D] = {0};
                for (int j = 0; j < LK; j++) {
                    s[j] = -INFINITY;
                    if (!c_visible(w->spec, b, qpos, j)) continue;
                    const float *kr = w->k + ((b * KH + kh) * LK + j) * D;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += (double)qr[d] * kr[d];
                    s[j] = c_score(w->spec, h, qpos, j, dot / sqrt((double)D));
                    if (s[j] > m) m = s[j];
                }
                for (int j = 0; j < LK; j++) {
                    if (s[j] == -INFINITY) continue;
                    double e = exp(s[j] - m);
                    sum += e;
                    for (int d = 0; d < D; d++) acc[d] += e * w->v[((b * KH + kh) * LK + j) * D + d];
                }
                for (int d = 0; d < D; d++) {
                    double want = sum > 0 ? acc[d] / sum : 0;
                    float got = w->o[((b * H + h) * LQ + r) * D + d];
                    if (!(fabs(got - want) <= 1e-4)) {
                        snprintf(w->msg, sizeof w->msg,
                                 "spec %d threads %d: b%d h%d row %d dim %d: %g, expected %g",
                                 w->spec, threads, b, h, r, d, got, want);
                        w->failures++;
                        return;
                    }
                }
            }
}

static void *worker(void *arg) {
    Work *w = arg;
    attn_kernel *kern = w->shared;
    if (!kern) {
        char name[32];
        snprintf(name, sizeof name, "spec%d.attn", w->spec);
        attn_error err;
        char *diags = NULL;
        if (attn_compile(name, specs[w->spec], NULL, &kern, &diags, &err) != ATTN_OK) {
            snprintf(w->msg, sizeof w->msg, "spec %d: %s %s", w->spec, err.message,
                     diags ? diags : "");
            w->failures++;
            attn_free(diags);
            return NULL;
        }
    }
    for (int it = 0; it < (w->shared ? 12 : 3); it++) {
        run_and_check(w, kern, 1);
        run_and_check(w, kern, 2);
        run_and_check(w, kern, 0);
    }
    if (!w->shared) attn_kernel_free(kern);
    return NULL;
}

static int run_threads(Work *ws, int n) {
    pthread_t t[NSPECS];
    int failures = 0;
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, worker, &ws[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < n; i++)
        if (ws[i].failures) {
            fprintf(stderr, "%s\n", ws[i].msg);
            failures += ws[i].failures;
        }
    return failures;
}

int main(void) {
    Work *ws = calloc(NSPECS, sizeof *ws);
    if (!ws) return 1;
    /* 8 threads, 8 specs, compiled and run at once */
    for (int i = 0; i < NSPECS; i++) ws[i] = (Work){.spec = i, .seed = 100u + (unsigned)i};
    int failures = run_threads(ws, NSPECS);
    /* two threads, one kernel (one with a runtime input), the same calls at once */
    for (int s = 6; s <= 7; s++) {
        attn_kernel *kern = NULL;
        attn_error err;
        if (attn_compile(NULL, specs[s], NULL, &kern, NULL, &err) != ATTN_OK) {
            fprintf(stderr, "compile: %s\n", err.message);
            failures++;
            continue;
        }
        for (int i = 0; i < 2; i++) ws[i] = (Work){.spec = s, .shared = kern, .seed = 7u + (unsigned)i};
        failures += run_threads(ws, 2);
        attn_kernel_free(kern);
    }
    free(ws);
    if (failures) {
        fprintf(stderr, "test_threads: %d failures\n", failures);
        return 1;
    }
    printf("test_threads: ok\n");
    return 0;
}
