/* A program built against an installed attnc (pkg-config or find_package): compiles a causal
 * GQA kernel from text, runs it and compares with a plain C reference. Prints "ok" or fails.
 * With CONSUMER_AOT (consumer_aot.c) the kernel is instead an object from the installed
 * `attnc build` (installed.attn, the same spec) linked with libattnc_rt alone. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CONSUMER_AOT
#include <attn/attn.h>
#endif

#include "../check.h" /* the tests' scaffolding, from the source tree: not an installed header */

enum { B = 2, H = 4, KVH = 2, D = 16, L = 23 };

int main(void) {
    static float q[B][H][L][D], k[B][KVH][L][D], v[B][KVH][L][D], o[B][H][L][D];
    uint64_t rng = 1;
    check_fill(&q[0][0][0][0], sizeof q / 4, &rng, CHECK_UNIFORM, 0.5);
    check_fill(&k[0][0][0][0], sizeof k / 4, &rng, CHECK_UNIFORM, 0.5);
    check_fill(&v[0][0][0][0], sizeof v / 4, &rng, CHECK_UNIFORM, 0.5);
    attn_error err;
#ifdef CONSUMER_AOT
    REQUIRE(attnc_installed_simple(&q[0][0][0][0], &k[0][0][0][0], &v[0][0][0][0], &o[0][0][0][0], B, L, L, 0,
                                   &err) == ATTN_OK,
            "run: %s: %s", attn_status_name(err.code), err.message);
#else
    static const char *spec = "attention installed { heads = 4; kv_heads = 2; head_dim = 16; mask = causal; }";
    attn_kernel *kern = NULL;
    char *diags = NULL;
    REQUIRE(attn_compile("installed.attn", spec, NULL, &kern, &diags, &err) == ATTN_OK, "compile: %s\n%s",
            err.message, diags ? diags : "");
    attn_call call;
    memset(&call, 0, sizeof call);
    call.q = (attn_tensor){q, 4, {B, H, L, D}, {0}};
    call.k = (attn_tensor){k, 4, {B, KVH, L, D}, {0}};
    call.v = (attn_tensor){v, 4, {B, KVH, L, D}, {0}};
    call.o = (attn_tensor){o, 4, {B, H, L, D}, {0}};
    call.q_offset = ATTN_Q_OFFSET_DEFAULT;
    REQUIRE(attn_run(kern, &call, &err) == ATTN_OK, "run: %s: %s", attn_status_name(err.code), err.message);
    attn_kernel_free(kern);
#endif
    double worst = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < L; i++) {
                int g = h / (H / KVH);
                double p[L];
                for (int j = 0; j < L; j++) {
                    double d = 0;
                    for (int x = 0; x < D; x++) d += (double)q[b][h][i][x] * k[b][g][j][x];
                    p[j] = j <= i ? d / sqrt(D) : -INFINITY; /* causal */
                }
                check_softmax(p, L);
                for (int x = 0; x < D; x++) {
                    double acc = 0;
                    for (int j = 0; j < L; j++) acc += p[j] * v[b][g][j][x];
                    double e = fabs(acc - o[b][h][i][x]);
                    worst = e > worst ? e : worst;
                }
            }
    printf("max |attnc - reference| = %.3g\n", worst);
    CHECK(worst < 1e-5, "max |attnc - reference| = %.3g", worst);
    return check_done("consumer");
}
