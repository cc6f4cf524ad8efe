/* test_nan.c — non-finite values propagate: a NaN in Q or K, a +inf in K (a score of +inf,
 * whose exp(s - max) is inf - inf) or a NaN that the score modifier makes (`log` of a
 * negative) turns every row whose visible keys produce it into o = NaN and lse = NaN, on 1, 2
 * and 3 threads, through every path: the general prefill kernel, band groups, staircases in
 * residue classes, key domains merged in the kernel, decode with the keys split over threads
 * and merged through the log-sum-exps, and MLA (absorbed and up-projected). Every other row is
 * bitwise what the same call without the poison gives. Also: large V (the accumulation's
 * bound, docs/guarantees.md). */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"

static unsigned rng_state = 777;
static float rnd(void) {
    rng_state = rng_state * 1103515245u + 12345u;
    return (float)((rng_state >> 8) & 0xffff) / 65536.0f - 0.5f;
}

static attn_kernel *compile(const char *text) {
    attn_kernel *kern = NULL;
    char *diags = NULL;
    attn_error err;
    if (attn_compile("nan.attn", text, NULL, &kern, &diags, &err) != ATTN_OK) {
        fprintf(stderr, "compile failed: %s\n%s%s\n", err.message, diags ? diags : "", text);
        check_failures++;
    }
    attn_free(diags);
    return kern;
}

/* A problem of one batch row: H query heads over KH K/V heads. */
typedef struct Prob {
    const char *what;
    int H, KH, Lq, Lk, D, DV;
    float *q, *k, *v, *bias; /* bias: [Lk], the input of `score = score + log(bias[k])`, or NULL */
} Prob;

typedef enum Poison { P_NAN_K, P_INF_K, P_NAN_Q, P_LOG_NEG } Poison;
static const char *const poison_name[] = {"NaN in K", "+inf in K", "NaN in Q", "log of a negative"};

static bool run(attn_kernel *kern, const Prob *p, int threads, float *o, float *lse) {
    attn_input in = {.name = "bias", .t = {.data = p->bias, .ndim = 1, .shape = {p->Lk}}};
    attn_call c = {
        .q = {p->q, 4, {1, p->H, p->Lq, p->D}, {0}},
        .k = {p->k, 4, {1, p->KH, p->Lk, p->D}, {0}},
        .v = {p->v, 4, {1, p->KH, p->Lk, p->DV}, {0}},
        .o = {o, 4, {1, p->H, p->Lq, p->DV}, {0}},
        .lse = {lse, 3, {1, p->H, p->Lq}, {0}},
        .q_offset = ATTN_Q_OFFSET_DEFAULT,
        .inputs = p->bias ? &in : NULL,
        .ninputs = p->bias ? 1 : 0,
        .threads = threads,
    };
    attn_error err;
    attn_status s = attn_run(kern, &c, &err);
    if (s != ATTN_OK) {
        fprintf(stderr, "%s: attn_run: %s\n", p->what, err.message);
        check_failures++;
    }
    return s == ATTN_OK;
}

/* Compares a poisoned run with the clean one: rows where sees(h, row) must be all NaN (o and
 * lse), every other row bitwise equal to the clean run. */
static void compare(const char *what, int threads, const Prob *p, const float *o, const float *lse,
                    const float *o0, const float *lse0, bool (*sees)(const Prob *, int, int, int), int at) {
    int bad = 0;
    for (int h = 0; h < p->H; h++)
        for (int r = 0; r < p->Lq; r++) {
            size_t row = (size_t)h * p->Lq + r;
            bool nan = sees(p, h, r, at), ok = true;
            for (int d = 0; d < p->DV; d++) {
                float x = o[row * p->DV + d], x0 = o0[row * p->DV + d];
                ok &= nan ? isnan(x) : memcmp(&x, &x0, sizeof x) == 0;
            }
            ok &= nan ? isnan(lse[row]) : memcmp(&lse[row], &lse0[row], sizeof *lse) == 0;
            if (!ok && bad++ < 3)
                fprintf(stderr, "%s, %d threads: head %d row %d: o[0] %g lse %g (clean %g, %g), expected %s\n",
                        what, threads, h, r, o[row * p->DV], lse[row], o0[row * p->DV], lse0[row],
                        nan ? "NaN" : "the clean row");
        }
    if (bad) check_failures++;
}

/* Which (head, row) sees key `at` (or, for Q, is row `at` of head 0). */
typedef struct Case {
    const char *name;
    const char *spec; /* printf format: %s is the score statement */
    int H, KH, Lq, Lk, D, DV;
    bool (*visible)(int64_t q, int64_t k);
} Case;

static const Case *cur;
static Poison cur_poison;

static bool sees_poison(const Prob *p, int h, int r, int at) {
    int64_t qpos = (int64_t)p->Lk - p->Lq + r;
    if (cur_poison == P_NAN_Q) return h == 0 && r == at;
    int kh = h / (p->H / p->KH);
    if (cur_poison != P_LOG_NEG && kh != 0) return false; /* K poisoned in K/V head 0 only */
    return cur->visible(qpos, at);
}

static bool vis_causal(int64_t q, int64_t k) { return k <= q; }
static bool vis_sliding(int64_t q, int64_t k) { return k <= q && q - k < 32; }
static bool vis_atrous(int64_t q, int64_t k) { return k <= q && (q - k) % 5 == 0; }
static bool vis_strided(int64_t q, int64_t k) { return k <= q && (q - k < 16 || (q - k) % 16 == 0); }
static bool vis_all(int64_t q, int64_t k) { return (void)q, (void)k, true; }

static void run_case(const Case *cs, Poison poison, int at) {
    cur = cs;
    cur_poison = poison;
    char text[512], what[160];
    snprintf(text, sizeof text, cs->spec,
             poison == P_LOG_NEG ? "input f32 bias[seq]; score = score + log(bias[k]);" : "");
    snprintf(what, sizeof what, "%s, %s at %d", cs->name, poison_name[poison], at);
    attn_kernel *kern = compile(text);
    if (!kern) return;
    Prob p = {what, cs->H, cs->KH, cs->Lq, cs->Lk, cs->D, cs->DV, NULL, NULL, NULL, NULL};
    size_t nq = (size_t)p.H * p.Lq * p.D, nk = (size_t)p.KH * p.Lk * p.D, nv = (size_t)p.KH * p.Lk * p.DV;
    size_t no = (size_t)p.H * p.Lq * p.DV, nl = (size_t)p.H * p.Lq;
    p.q = malloc(nq * 4), p.k = malloc(nk * 4), p.v = malloc(nv * 4);
    float *o = malloc(no * 4), *lse = malloc(nl * 4), *o0 = malloc(no * 4), *lse0 = malloc(nl * 4);
    for (size_t i = 0; i < nq; i++) p.q[i] = rnd();
    for (size_t i = 0; i < nk; i++) p.k[i] = rnd();
    for (size_t i = 0; i < nv; i++) p.v[i] = rnd();
    /* q[.., 3] > 0 in every row: +inf in K's channel 3 scores +inf, never -inf (masked) */
    for (size_t i = 0; i < nq; i += (size_t)p.D) p.q[i + 3] = 0.25f + fabsf(p.q[i + 3]);
    if (poison == P_LOG_NEG) {
        p.bias = malloc((size_t)p.Lk * 4);
        for (int j = 0; j < p.Lk; j++) p.bias[j] = 1.0f + fabsf(rnd());
    }
    for (int t = 1; t <= 3; t++) {
        if (poison == P_LOG_NEG) p.bias[at] = 2.0f;
        else if (poison == P_NAN_Q) p.q[(size_t)at * p.D + 5] = 0.5f;
        else p.k[(size_t)at * p.D + 3] = 0.5f;
        if (!run(kern, &p, t, o0, lse0)) break;
        if (poison == P_LOG_NEG) p.bias[at] = -2.0f;
        else if (poison == P_NAN_Q) p.q[(size_t)at * p.D + 5] = NAN;
        else p.k[(size_t)at * p.D + 3] = poison == P_INF_K ? INFINITY : NAN;
        if (!run(kern, &p, t, o, lse)) break;
        compare(what, t, &p, o, lse, o0, lse0, sees_poison, at);
    }
    attn_kernel_free(kern);
    free(p.q), free(p.k), free(p.v), free(p.bias), free(o), free(lse), free(o0), free(lse0);
}

static void test_paths(void) {
    static const Case cases[] = {
        /* prefill, the general kernel (GQA: head 1 reads K/V head 0 too, heads 2-3 do not) */
        {"causal prefill", "attention t { %s heads = 4; kv_heads = 2; head_dim = 16; mask = causal; }",
         4, 2, 150, 150, 16, 16, vis_causal},
        /* no mask, fewer rows than keys */
        {"full", "attention t { %s heads = 2; kv_heads = 1; head_dim = 8; v_dim = 12; }", 2, 1, 37, 90, 8, 12,
         vis_all},
        /* band groups: an exact band of 32 keys */
        {"sliding band", "attention t { %s heads = 2; kv_heads = 1; head_dim = 16; mask = sliding(32); }",
         2, 1, 160, 160, 16, 16, vis_sliding},
        /* staircases in residue classes */
        {"atrous classes", "attention t { %s heads = 2; kv_heads = 1; head_dim = 16; mask = k <= q && (q - k) %% 5 == 0; }",
         2, 1, 160, 160, 16, 16, vis_atrous},
        /* key domains (a band and a residue class) merged in the kernel through the lse */
        {"strided domains", "attention t { %s heads = 2; kv_heads = 1; head_dim = 16; mask = strided(16); }",
         2, 1, 200, 200, 16, 16, vis_strided},
        /* decode: one row a head, 1000 keys split over the threads and merged */
        {"decode split-KV", "attention t { %s heads = 2; kv_heads = 1; head_dim = 16; mask = causal; }",
         2, 1, 1, 1000, 16, 16, vis_causal},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const Case *cs = &cases[i];
        int key_at = cs->Lq == 1 ? 613 : cs->Lk - cs->Lq + cs->Lq / 3; /* in a middle tile/split */
        run_case(cs, P_NAN_K, key_at);
        run_case(cs, P_INF_K, key_at);
        run_case(cs, P_LOG_NEG, key_at);
        run_case(cs, P_NAN_Q, cs->Lq / 3);
        if (cs->Lq > 1) run_case(cs, P_NAN_K, cs->Lk - cs->Lq + 1); /* seen by nearly every row */
    }
}

/* MLA: a NaN in c_kv at key `at` (every head sees it through k_nope and v) or in q_nope of
 * head 0, row `at`; absorbed and up-projected, 1-3 threads. */
static void test_mla(void) {
    enum { H = 2, LQ = 40, LK = 300, R = 32, ROPE = 8, NOPE = 16, DV = 16 };
    attn_kernel *kern = compile("attention m { heads = 2; mla { kv_rank = 32; rope_dim = 8; nope_dim = 16; v_dim = 16; }"
                                " mask = causal; }");
    if (!kern) return;
    static float qn[H * LQ * NOPE], qr[H * LQ * ROPE], ckv[LK * R], kr[LK * ROPE], wuk[H * R * NOPE], wuv[H * R * DV];
    static float o[H * LQ * DV], lse[H * LQ], o0[H * LQ * DV], lse0[H * LQ];
    float *all[] = {qn, qr, ckv, kr, wuk, wuv};
    size_t sizes[] = {H * LQ * NOPE, H * LQ * ROPE, LK * R, LK * ROPE, H * R * NOPE, H * R * DV};
    for (int t = 0; t < 6; t++)
        for (size_t i = 0; i < sizes[t]; i++) all[t][i] = rnd();
    for (int which = 0; which < 2; which++)
        for (int absorb = 0; absorb < 2; absorb++)
            for (int th = 1; th <= 3; th++) {
                int at = which ? 7 : LK - LQ + 9; /* c_kv key (rows 9.. see it), or q_nope row 7 */
                float *cell = which ? &qn[(size_t)at * NOPE + 2] : &ckv[(size_t)at * R + 4];
                float keep = *cell;
                attn_mla_call c = {
                    .q_nope = {qn, 4, {1, H, LQ, NOPE}, {0}}, .q_rope = {qr, 4, {1, H, LQ, ROPE}, {0}},
                    .c_kv = {ckv, 3, {1, LK, R}, {0}}, .k_rope = {kr, 3, {1, LK, ROPE}, {0}},
                    .w_uk = {wuk, 3, {H, R, NOPE}, {0}}, .w_uv = {wuv, 3, {H, R, DV}, {0}},
                    .o = {o0, 4, {1, H, LQ, DV}, {0}}, .lse = {lse0, 3, {1, H, LQ}, {0}},
                    .q_offset = ATTN_Q_OFFSET_DEFAULT, .threads = th,
                    .absorb = absorb ? ATTN_ABSORB_ON : ATTN_ABSORB_OFF,
                };
                attn_error err;
                EXPECT(attn_run_mla(kern, &c, NULL, &err) == ATTN_OK);
                *cell = NAN;
                c.o.data = o;
                c.lse.data = lse;
                EXPECT(attn_run_mla(kern, &c, NULL, &err) == ATTN_OK);
                *cell = keep;
                int bad = 0;
                for (int h = 0; h < H; h++)
                    for (int r = 0; r < LQ; r++) {
                        size_t row = (size_t)h * LQ + r;
                        bool nan = which ? h == 0 && r == at : LK - LQ + r >= at, ok = true;
                        for (int d = 0; d < DV; d++)
                            ok &= nan ? isnan(o[row * DV + d]) : memcmp(&o[row * DV + d], &o0[row * DV + d], 4) == 0;
                        ok &= nan ? isnan(lse[row]) : memcmp(&lse[row], &lse0[row], 4) == 0;
                        if (!ok && bad++ < 3)
                            fprintf(stderr, "MLA %s, NaN in %s, %d threads: head %d row %d: o[0] %g lse %g, expected %s\n",
                                    absorb ? "absorbed" : "up-projected", which ? "q_nope" : "c_kv", th, h, r,
                                    o[row * DV], lse[row], nan ? "NaN" : "the clean row");
                    }
                if (bad) check_failures++;
            }
    attn_kernel_free(kern);
}

/* V near FLT_MAX: the kernels accumulate sum_j exp(s_j - m) v_j unnormalised, which stays
 * finite while max|v| * l < FLT_MAX (l = sum_j exp(s_j - m) <= n, the row's visible keys):
 * equal scores over n keys with |v| = FLT_MAX / (n + 1) give v exactly, on 1-3 threads, in
 * prefill (the last row sees all n keys), a band and decode with split keys. */
static void large_v(const char *spec, int Lq, int Lk) {
    enum { D = 8 };
    attn_kernel *kern = compile(spec);
    if (!kern) return;
    size_t nq = (size_t)Lq * D, nk = (size_t)Lk * D;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4), *lse = malloc((size_t)Lq * 4);
    Prob p = {spec, 1, 1, Lq, Lk, D, D, q, k, v, NULL};
    float big = 3.4028234e38f / (float)(Lk + 1);
    for (size_t i = 0; i < nq; i++) q[i] = 0.5f;
    for (size_t i = 0; i < nk; i++) {
        k[i] = 0.25f;
        v[i] = i % 2 ? -big : big;
    }
    for (int t = 1; t <= 3; t++) {
        if (!run(kern, &p, t, o, lse)) break;
        int bad = 0;
        for (size_t i = 0; i < nq; i++)
            if (!(fabsf(o[i] - v[i % D]) <= 1e-3f * big)) bad++; /* summation rounding, not range */
        if (bad) {
            fprintf(stderr, "large V (%s, %d keys), %d threads: %d of %zu outputs off (o[0] %g, want %g)\n", spec, Lk,
                    t, bad, nq, o[0], v[0]);
            check_failures++;
        }
    }
    attn_kernel_free(kern);
    free(q), free(k), free(v), free(o), free(lse);
}

static void test_large_v(void) {
    large_v("attention t { heads = 1; head_dim = 8; }", 40, 40);
    large_v("attention t { heads = 1; head_dim = 8; mask = causal; }", 300, 300);
    large_v("attention t { heads = 1; head_dim = 8; mask = sliding(64); }", 300, 300);
    large_v("attention t { heads = 1; head_dim = 8; mask = causal; }", 1, 3000);
}

int main(void) {
    test_paths();
    test_mla();
    test_large_v();
    if (check_failures) {
        fprintf(stderr, "test_nan: %d failures\n", check_failures);
        return 1;
    }
    printf("test_nan: passed\n");
    return 0;
}
