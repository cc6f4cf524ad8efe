/* Permutation masks run in rank order (passes/permute.c, runtime/permute.c): the result must equal
 * the general kernel's (-fno-prune compiles no rank-order variant) and a double reference, for
 * permutations (the causal variant runs), ties and q_len != kv_len (the original runs), with
 * strided outputs, lse and threads. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;

enum { H = 3, D = 20 };

/* o[b,h,i] = softmax over keys j with rank[j] OP rank[i] (OP: <= when le, else <). */
static void reference(int64_t B, int64_t Lq, int64_t Lk, int64_t qoff, const float *q, const float *k,
                      const float *v, const int32_t *rank, bool le, double *o, double *lse) {
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                int32_t rq = rank[b * Lk + qoff + i];
                double s[512];
                for (int64_t j = 0; j < Lk; j++) {
                    int32_t rk = rank[b * Lk + j];
                    bool vis = le ? rk <= rq : rk < rq;
                    double dot = 0;
                    for (int d = 0; d < D; d++)
                        dot += q[((b * H + h) * Lq + i) * D + d] * (double)k[((b * H + h) * Lk + j) * D + d];
                    s[j] = vis ? dot / sqrt((double)D) : -INFINITY;
                }
                lse[(b * H + h) * Lq + i] = check_softmax(s, Lk);
                for (int d = 0; d < D; d++) {
                    double acc = 0;
                    for (int64_t j = 0; j < Lk; j++) acc += s[j] * v[((b * H + h) * Lk + j) * D + d];
                    o[((b * H + h) * Lq + i) * D + d] = acc;
                }
            }
}

static void check(attn_kernel *kern, bool le, int64_t B, int64_t Lq, int64_t Lk, bool ties, int threads,
                  const char *what) {
    size_t nq = (size_t)(B * H * Lq * D), nk = (size_t)(B * H * Lk * D);
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
    float *o = malloc(nq * 2 * 4), *lse = malloc((size_t)(B * H * Lq) * 4); /* o strided: rows padded */
    double *ro = malloc(nq * 8), *rl = malloc((size_t)(B * H * Lq) * 8);
    int32_t *rank = malloc((size_t)(B * Lk) * 4);
    check_fill(q, nq, &rng, CHECK_UNIFORM, 1.0);
    check_fill(k, nk, &rng, CHECK_UNIFORM, 1.0);
    check_fill(v, nk, &rng, CHECK_UNIFORM, 1.0);
    for (int64_t b = 0; b < B; b++) {
        for (int64_t j = 0; j < Lk; j++) rank[b * Lk + j] = (int32_t)j;
        for (int64_t j = Lk - 1; j > 0; j--) { /* Fisher-Yates */
            int64_t t = check_int(&rng, 0, j);
            int32_t x = rank[b * Lk + j];
            rank[b * Lk + j] = rank[b * Lk + t];
            rank[b * Lk + t] = x;
        }
        if (ties && Lk > 2) rank[b * Lk + 1] = rank[b * Lk];
    }
    for (size_t i = 0; i < nq * 2; i++) o[i] = 12345.0f; /* canaries between the rows */
    int64_t qoff = Lk - Lq;
    reference(B, Lq, Lk, qoff, q, k, v, rank, le, ro, rl);
    attn_input in = {"rank", {rank, 2, {B, Lk}, {0}}};
    attn_call c = {
        .q = {q, 4, {B, H, Lq, D}, {0}}, .k = {k, 4, {B, H, Lk, D}, {0}}, .v = {v, 4, {B, H, Lk, D}, {0}},
        .o = {o, 4, {B, H, Lq, D}, {H * Lq * 2 * D, Lq * 2 * D, 2 * D, 1}},
        .lse = {lse, 3, {B, H, Lq}, {0}}, .q_offset = ATTN_Q_OFFSET_DEFAULT,
        .inputs = &in, .ninputs = 1, .threads = threads,
    };
    attn_error err;
    attn_status st = attn_run(kern, &c, &err);
    bool ok = st == ATTN_OK;
    for (int64_t r = 0; ok && r < B * H * Lq; r++) {
        for (int d = 0; d < D; d++) {
            double got = o[r * 2 * D + d], want = ro[r * D + d];
            if (fabs(got - want) > 1e-4 + 1e-4 * fabs(want)) ok = false;
            if (o[r * 2 * D + D + d] != 12345.0f) ok = false;
        }
        if (isinf(rl[r]) ? !(isinf(lse[r]) && lse[r] < 0) : fabs(lse[r] - rl[r]) > 1e-4) ok = false;
    }
    CHECK(ok, "%s (%s, B %lld Lq %lld Lk %lld): %s", what, le ? "<=" : "<", (long long)B, (long long)Lq,
          (long long)Lk, st ? err.message : "mismatch");
    free(q), free(k), free(v), free(o), free(lse), free(ro), free(rl), free(rank);
}

int main(void) {
    for (int le = 0; le < 2; le++)
        for (int prune = 0; prune < 2; prune++) {
            char text[256];
            snprintf(text, sizeof text,
                     "attention x { input i32 rank[batch, seq]; heads = %d; head_dim = %d; mask = rank[b, k] %s rank[b, q]; }",
                     H, D, le ? "<=" : "<");
            attn_options opts;
            attn_options_init(&opts);
            opts.no_prune = !prune;
            attn_kernel *kern;
            attn_error err;
            REQUIRE(attn_compile("x.attn", text, &opts, &kern, NULL, &err) == ATTN_OK, "compile: %s", err.message);
            check(kern, le, 1, 1, 1, false, 1, "one position");
            check(kern, le, 2, 77, 77, false, 1, "permutation");
            check(kern, le, 3, 130, 130, false, 2, "permutation, 2 threads");
            check(kern, le, 2, 50, 50, true, 1, "ties (general kernel)");
            check(kern, le, 2, 20, 61, false, 2, "q_len != kv_len (general kernel)");
            attn_kernel_free(kern);
        }
    return check_done("test_permute");
}
