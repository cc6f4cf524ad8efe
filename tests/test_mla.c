/* MLA against SPEC §3 computed directly in double precision (up-projection, no absorption):
 * absorbed and up-projected kernels, prefill and decode, ragged lengths, masks, q_offset,
 * lse, strided q_nope, threads 1 and 2. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"
#include "tests/masks.h"

static uint64_t rng = 88172645463325252ull;
static void fill(float *p, size_t n, double scale) { check_fill(p, n, &rng, CHECK_UNIFORM, scale); }

typedef RefMla Dims;
typedef RefMlaMask MaskFn;
static bool m_causal(int64_t q, int64_t k) { return k <= q; }
static bool m_sliding(int64_t q, int64_t k) { return k <= q && q - k < 5; }

static void check_case(attn_kernel *kern, Dims d, MaskFn mask, int64_t B, int64_t Lq, int64_t Lk,
                       int64_t qoff, int absorb, int threads, bool strided) {
    int64_t qpad = strided ? 3 : 0; /* q_nope rows padded: a strided view */
    int64_t qn_row = d.nope + qpad;
    size_t nqn = (size_t)(B * d.H * Lq * qn_row), nqr = (size_t)(B * d.H * Lq * d.rope);
    size_t nc = (size_t)(B * Lk * d.R), nkr = (size_t)(B * Lk * d.rope);
    size_t nwk = (size_t)d.H * d.R * d.nope, nwv = (size_t)d.H * d.R * d.dv;
    size_t no = (size_t)(B * d.H * Lq * d.dv), nl = (size_t)(B * d.H * Lq);
    float *qn_pad = malloc(nqn * 4), *qn = malloc((size_t)(B * d.H * Lq * d.nope) * 4);
    float *qr = malloc(nqr * 4), *ckv = malloc(nc * 4), *kr = malloc(nkr * 4);
    float *wuk = malloc(nwk * 4), *wuv = malloc(nwv * 4), *o = malloc(no * 4), *lse = malloc(nl * 4);
    double *ro = malloc(no * 8), *rl = malloc(nl * 8);
    fill(qn_pad, nqn, 1.0);
    for (size_t r = 0; r < (size_t)(B * d.H * Lq); r++)
        memcpy(qn + r * (size_t)d.nope, qn_pad + r * (size_t)qn_row, (size_t)d.nope * 4);
    fill(qr, nqr, 1.0), fill(ckv, nc, 1.0), fill(kr, nkr, 1.0);
    fill(wuk, nwk, 0.3), fill(wuv, nwv, 0.3);
    ref_mla(d, B, Lq, Lk, qoff == ATTN_Q_OFFSET_DEFAULT ? Lk - Lq : qoff, mask, qn, qr, ckv, kr,
              wuk, wuv, ro, rl);
    attn_mla_call c = {
        .q_nope = {qn_pad, 4, {B, d.H, Lq, d.nope}, {d.H * Lq * qn_row, Lq * qn_row, qn_row, 1}},
        .q_rope = {qr, 4, {B, d.H, Lq, d.rope}, {0}},
        .c_kv = {ckv, 3, {B, Lk, d.R}, {0}},
        .k_rope = {kr, 3, {B, Lk, d.rope}, {0}},
        .w_uk = {wuk, 3, {d.H, d.R, d.nope}, {0}},
        .w_uv = {wuv, 3, {d.H, d.R, d.dv}, {0}},
        .o = {o, 4, {B, d.H, Lq, d.dv}, {0}},
        .lse = {lse, 3, {B, d.H, Lq}, {0}},
        .q_offset = qoff,
        .q_offset_set = qoff != ATTN_Q_OFFSET_DEFAULT,
        .threads = threads,
        .absorb = absorb,
    };
    if (!strided) c.q_nope = (attn_tensor){qn, 4, {B, d.H, Lq, d.nope}, {0}};
    attn_error err;
    int used = -1;
    attn_status st = attn_run_mla(kern, &c, &used, &err);
    bool ok = st == ATTN_OK;
    double worst = 0;
    for (size_t i = 0; ok && i < no; i++) {
        double e = fabs(o[i] - ro[i]) / (1e-3 + fabs(ro[i]));
        if (e > worst) worst = e;
        if (fabs(o[i] - ro[i]) > 2e-4 + 2e-4 * fabs(ro[i])) ok = false;
    }
    for (size_t i = 0; ok && i < nl; i++)
        if (isinf(rl[i]) ? !(isinf(lse[i]) && lse[i] < 0) : fabs(lse[i] - rl[i]) > 1e-4 + 1e-5 * fabs(rl[i]))
            ok = false;
    if (absorb == ATTN_ABSORB_ON && used != 1) ok = false;
    if (absorb == ATTN_ABSORB_OFF && used != 0) ok = false;
    CHECK(ok, "H %d R %d rope %d nope %d dv %d B %lld Lq %lld Lk %lld qoff %lld absorb %d used %d threads %d "
              "strided %d: %s (worst rel %g)",
          d.H, d.R, d.rope, d.nope, d.dv, (long long)B, (long long)Lq, (long long)Lk, (long long)qoff, absorb, used,
          threads, strided, st ? err.message : "mismatch", worst);
    free(qn_pad), free(qn), free(qr), free(ckv), free(kr), free(wuk), free(wuv), free(o), free(lse);
    free(ro), free(rl);
}

static attn_kernel *compile(Dims d, const char *mask, const char *absorb) {
    char text[512];
    snprintf(text, sizeof text,
             "attention mla_test { heads = %d; mla { kv_rank = %d; rope_dim = %d; nope_dim = %d; v_dim = %d; } mask = %s; absorb = %s; }",
             d.H, d.R, d.rope, d.nope, d.dv, mask, absorb);
    attn_kernel *k = NULL;
    char *diags = NULL;
    attn_error err;
    attn_status st = attn_compile("mla_test.attn", text, NULL, &k, &diags, &err);
    CHECK(st == ATTN_OK, "compile failed: %s\n%s", err.message, diags ? diags : "");
    attn_free(diags);
    return k;
}

/* Outputs that overlap a tensor the call reads are refused (they gave a wrong answer), and
 * tensors with no element (q_len or kv_len 0) may have NULL data. */
static void check_overlap_and_empty(attn_kernel *kern, Dims d) {
    enum { B = 1, LQ = 2, LK = 3 };
    size_t nqn = B * d.H * LQ * d.nope, nqr = B * d.H * LQ * d.rope, nc = B * LK * d.R, nkr = B * LK * d.rope;
    size_t nwk = (size_t)d.H * d.R * d.nope, nwv = (size_t)d.H * d.R * d.dv, no = B * d.H * LQ * d.dv, nl = B * d.H * LQ;
    size_t total = nqn + nqr + nc + nkr + nwk + nwv + no + nl;
    float *mem = malloc(total * 4);
    fill(mem, total, 0.5);
    float *qn = mem, *qr = qn + nqn, *ckv = qr + nqr, *kr = ckv + nc, *wuk = kr + nkr, *wuv = wuk + nwk;
    float *o = wuv + nwv, *lse = o + no;
    for (int ab = ATTN_ABSORB_ON; ab <= ATTN_ABSORB_OFF; ab++) {
        attn_mla_call good = {
            .q_nope = {qn, 4, {B, d.H, LQ, d.nope}, {0}}, .q_rope = {qr, 4, {B, d.H, LQ, d.rope}, {0}},
            .c_kv = {ckv, 3, {B, LK, d.R}, {0}}, .k_rope = {kr, 3, {B, LK, d.rope}, {0}},
            .w_uk = {wuk, 3, {d.H, d.R, d.nope}, {0}}, .w_uv = {wuv, 3, {d.H, d.R, d.dv}, {0}},
            .o = {o, 4, {B, d.H, LQ, d.dv}, {0}}, .lse = {lse, 3, {B, d.H, LQ}, {0}},
            .q_offset = ATTN_Q_OFFSET_DEFAULT, .threads = 1, .absorb = ab,
        };
        attn_error err;
        attn_mla_call c = good;
        attn_status st = attn_run_mla(kern, &c, NULL, &err);
        CHECK(st == ATTN_OK, "absorb %d: the good call: %s", ab, err.message);
        c.o.data = ckv + 1; /* o overlaps c_kv (and what follows it) */
        st = attn_run_mla(kern, &c, NULL, &err);
        CHECK(st == ATTN_ERR_STRIDE && strstr(err.message, "o overlaps c_kv"), "absorb %d: o over c_kv: %s (%s)",
              ab, attn_status_name(st), err.message);
        c = good;
        c.lse.data = wuk + nwk - 1; /* lse's first element is w_uk's last */
        st = attn_run_mla(kern, &c, NULL, &err);
        CHECK(st == ATTN_ERR_STRIDE && strstr(err.message, "lse overlaps w_uk"), "absorb %d: lse over w_uk: %s (%s)",
              ab, attn_status_name(st), err.message);
        /* kv_len 0: c_kv and k_rope may be NULL; every row sees no key */
        c = good;
        c.c_kv = (attn_tensor){NULL, 3, {B, 0, d.R}, {0}};
        c.k_rope = (attn_tensor){NULL, 3, {B, 0, d.rope}, {0}};
        for (size_t i = 0; i < no; i++) o[i] = 1;
        st = attn_run_mla(kern, &c, NULL, &err);
        bool zeros = true;
        for (size_t i = 0; i < no; i++) zeros &= o[i] == 0;
        for (size_t i = 0; i < nl; i++) zeros &= isinf(lse[i]) && lse[i] < 0;
        CHECK(st == ATTN_OK && zeros, "absorb %d: kv_len 0 with NULL c_kv, k_rope: %s (%s)", ab,
              attn_status_name(st), err.message);
        /* q_len 0: q_nope, q_rope, o and lse may be NULL */
        c = good;
        c.q_nope = (attn_tensor){NULL, 4, {B, d.H, 0, d.nope}, {0}};
        c.q_rope = (attn_tensor){NULL, 4, {B, d.H, 0, d.rope}, {0}};
        c.o = (attn_tensor){NULL, 4, {B, d.H, 0, d.dv}, {0}};
        c.lse = (attn_tensor){NULL, 3, {B, d.H, 0}, {0}};
        st = attn_run_mla(kern, &c, NULL, &err);
        CHECK(st == ATTN_OK, "absorb %d: q_len 0 with NULL tensors: %s (%s)", ab, attn_status_name(st), err.message);
        /* a NULL tensor that has elements is still refused */
        c = good;
        c.k_rope.data = NULL;
        st = attn_run_mla(kern, &c, NULL, &err);
        CHECK(st == ATTN_ERR_NULL, "absorb %d: NULL k_rope: %s", ab, attn_status_name(st));
    }
    free(mem);
}

int main(void) {
    Dims shapes[] = {
        {4, 32, 8, 16, 16},   /* small */
        {3, 40, 12, 20, 24},  /* nothing a multiple of the vector width */
        {2, 512, 64, 128, 128}, /* DeepSeek-V2 per-head shapes, fewer heads */
    };
    struct { int64_t B, Lq, Lk, qoff; } calls[] = {
        {1, 1, 1, ATTN_Q_OFFSET_DEFAULT}, {2, 1, 37, ATTN_Q_OFFSET_DEFAULT}, /* decode */
        {1, 19, 19, ATTN_Q_OFFSET_DEFAULT}, {2, 33, 50, ATTN_Q_OFFSET_DEFAULT}, /* prefill */
        {1, 7, 20, 0}, {1, 5, 9, -3}, /* top-aligned, rows that see nothing */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        Dims d = shapes[s];
        MaskFn masks[] = {m_causal, m_sliding};
        const char *mtext[] = {"causal", "sliding(5)"};
        for (int m = 0; m < 2; m++) {
            attn_kernel *k = compile(d, mtext[m], "auto");
            if (!k) continue;
            for (size_t c = 0; c < sizeof calls / sizeof calls[0]; c++) {
                if (s == 2 && c > 3) break; /* the big shape: a few calls suffice */
                for (int ab = ATTN_ABSORB_ON; ab <= ATTN_ABSORB_OFF; ab++)
                    check_case(k, d, masks[m], calls[c].B, calls[c].Lq, calls[c].Lk, calls[c].qoff,
                               ab, 1 + (int)(c % 2), c == 3);
                check_case(k, d, masks[m], calls[c].B, calls[c].Lq, calls[c].Lk, calls[c].qoff,
                           ATTN_ABSORB_SPEC, 2, false);
            }
            /* the cost model: decode absorbs, long prefill up-projects */
            CHECK(attn_mla_prefers_absorbed(k, 1, 4096), "auto does not absorb for decode");
            if (s == 0 && m == 0) check_overlap_and_empty(k, d);
            attn_kernel_free(k);
        }
    }
    /* absorb = on compiles only the absorbed variant; forcing the other is an error */
    Dims d = shapes[0];
    attn_kernel *k = compile(d, "causal", "on");
    if (k) {
        check_case(k, d, m_causal, 1, 3, 10, ATTN_Q_OFFSET_DEFAULT, ATTN_ABSORB_SPEC, 1, false);
        attn_mla_call c = {0};
        attn_error err;
        attn_status st = attn_run_mla(k, &c, NULL, &err);
        CHECK(st == ATTN_ERR_NULL, "an empty MLA call: %s", attn_status_name(st));
        attn_call plain = {0};
        st = attn_run(k, &plain, &err);
        CHECK(st == ATTN_ERR_ARG, "attn_run on an MLA kernel: %s", attn_status_name(st));
        attn_kernel_free(k);
    }
    return check_done("test_mla");
}
