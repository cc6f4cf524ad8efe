/* test_aot_mla.c — MLA blocks built ahead of time (tests/aot_mla.attn: absorb auto, on, off),
 * linked with libattnc_rt only and run through their generated entry points, against the
 * double-precision SPEC §3 reference of masks.c: prefill and decode, ragged lengths, rows
 * before the first key, lse, a strided q_nope, threads 1 and 2, and the variant each ran. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aot_mla.h"
#include "check.h"
#include "tests/masks.h"

static const RefMla dims = {4, 32, 8, 16, 16};
static uint64_t g_rng = 0x5eed5eedULL;

static float *filled(size_t n, float scale) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (p) check_fill(p, n, &g_rng, CHECK_UNIFORM, scale);
    return p;
}

static bool causal(int64_t q, int64_t k) { return k <= q; }

typedef enum Entry { SIMPLE, CALL } Entry;
typedef enum Block { AUTO, ON, OFF } Block;

/* One shape: `simple` through attnc_X_simple (contiguous, default q_offset), else through
 * attnc_X with a padded q_nope, lse and the variant reported by attn_rt_launch_mla. */
static void run(Block blk, Entry entry, int64_t B, int64_t Lq, int64_t Lk, int threads) {
    static const char *const names[] = {"mla_auto", "mla_on", "mla_off"};
    const RefMla d = dims;
    int64_t pad = entry == CALL ? 5 : 0, row = d.nope + pad;
    size_t nq = (size_t)(B * d.H * Lq);
    float *qn_pad = filled(nq * (size_t)row, 1), *qr = filled(nq * (size_t)d.rope, 1);
    float *ckv = filled((size_t)(B * Lk * d.R), 1), *kr = filled((size_t)(B * Lk * d.rope), 1);
    float *wuk = filled((size_t)(d.H * d.R * d.nope), 0.3f), *wuv = filled((size_t)(d.H * d.R * d.dv), 0.3f);
    float *qn = malloc(sizeof(float) * nq * (size_t)d.nope), *o = malloc(sizeof(float) * nq * (size_t)d.dv);
    float *lse = malloc(sizeof(float) * nq);
    double *ro = malloc(sizeof(double) * nq * (size_t)d.dv), *rl = malloc(sizeof(double) * nq);
    REQUIRE(qn_pad && qr && ckv && kr && wuk && wuv && qn && o && lse && ro && rl, "out of memory");
    for (size_t r = 0; r < nq; r++) memcpy(qn + r * (size_t)d.nope, qn_pad + r * (size_t)row, sizeof(float) * (size_t)d.nope);
    for (size_t i = 0; i < nq * (size_t)d.dv; i++) o[i] = 9999.5f;
    ref_mla(d, B, Lq, Lk, Lk - Lq, causal, qn, qr, ckv, kr, wuk, wuv, ro, rl);
    attn_error err;
    attn_status st;
    int used = -1;
    if (entry == SIMPLE) {
        switch (blk) {
        case AUTO: st = attnc_mla_auto_simple(qn, qr, ckv, kr, wuk, wuv, o, B, Lq, Lk, threads, &err); break;
        case ON: st = attnc_mla_on_simple(qn, qr, ckv, kr, wuk, wuv, o, B, Lq, Lk, threads, &err); break;
        default: st = attnc_mla_off_simple(qn, qr, ckv, kr, wuk, wuv, o, B, Lq, Lk, threads, &err); break;
        }
    } else {
        attn_mla_call c;
        memset(&c, 0, sizeof c);
        c.q_nope = (attn_tensor){qn_pad, 4, {B, d.H, Lq, d.nope}, {d.H * Lq * row, Lq * row, row, 1}};
        c.q_rope = (attn_tensor){qr, 4, {B, d.H, Lq, d.rope}, {0}};
        c.c_kv = (attn_tensor){ckv, 3, {B, Lk, d.R}, {0}};
        c.k_rope = (attn_tensor){kr, 3, {B, Lk, d.rope}, {0}};
        c.w_uk = (attn_tensor){wuk, 3, {d.H, d.R, d.nope}, {0}};
        c.w_uv = (attn_tensor){wuv, 3, {d.H, d.R, d.dv}, {0}};
        c.o = (attn_tensor){o, 4, {B, d.H, Lq, d.dv}, {0}};
        c.lse = (attn_tensor){lse, 3, {B, d.H, Lq}, {0}};
        c.q_offset = ATTN_Q_OFFSET_DEFAULT;
        c.threads = threads;
        const attn_rt_mla_desc *md = blk == AUTO ? &attnc_mla_auto_mla : blk == ON ? &attnc_mla_on_mla : &attnc_mla_off_mla;
        st = attn_rt_launch_mla(md, &c, NULL, &used, &err);
    }
    bool ok = st == ATTN_OK;
    if (!ok) printf("FAIL %s: B=%lld q_len=%lld kv_len=%lld: %s: %s\n", names[blk], (long long)B, (long long)Lq,
                    (long long)Lk, attn_status_name(st), err.message);
    int reports = 0;
    for (size_t i = 0; st == ATTN_OK && i < nq * (size_t)d.dv; i++)
        if (!(fabs(o[i] - ro[i]) <= 2e-4 + 2e-4 * fabs(ro[i]))) {
            if (reports++ < 3)
                printf("FAIL %s: %s B=%lld q_len=%lld kv_len=%lld threads=%d: o[%zu] got %.9g expected %.9g\n",
                       names[blk], entry == SIMPLE ? "_simple" : "call", (long long)B, (long long)Lq, (long long)Lk,
                       threads, i, o[i], ro[i]);
            ok = false;
        }
    for (size_t i = 0; st == ATTN_OK && entry == CALL && i < nq; i++)
        if (isinf(rl[i]) ? !(isinf(lse[i]) && lse[i] < 0) : !(fabs(lse[i] - rl[i]) <= 1e-4 + 1e-5 * fabs(rl[i]))) {
            if (reports++ < 3) printf("FAIL %s: lse[%zu] got %.9g expected %.9g\n", names[blk], i, lse[i], rl[i]);
            ok = false;
        }
    /* the variant: forced by the spec, or (auto) the cost model's, absorbed for decode */
    if (entry == CALL && ((blk == ON && used != 1) || (blk == OFF && used != 0) ||
                          (blk == AUTO && Lq == 1 && Lk >= 64 && used != 1))) {
        printf("FAIL %s: q_len=%lld kv_len=%lld ran the %s variant\n", names[blk], (long long)Lq, (long long)Lk,
               used ? "absorbed" : "up-projected");
        ok = false;
    }
    CHECK(ok, "%s: %s B=%lld q_len=%lld kv_len=%lld threads=%d (above)", names[blk],
          entry == SIMPLE ? "_simple" : "call", (long long)B, (long long)Lq, (long long)Lk, threads);
    free(qn_pad), free(qr), free(ckv), free(kr), free(wuk), free(wuv), free(qn), free(o), free(lse), free(ro), free(rl);
}

/* The backward through the header's descriptor (libattnc_rt alone): central differences of
 * the AOT forward's loss sum(do . o) at a few elements of each of the six tensors; absorb = on
 * has no backward. */
static double aot_loss(const attn_rt_mla_desc *md, attn_mla_call *c, const float *dout, size_t no) {
    attn_error err;
    if (attn_rt_launch_mla(md, c, NULL, NULL, &err) != ATTN_OK) return NAN;
    double l = 0;
    for (size_t i = 0; i < no; i++) l += (double)dout[i] * ((const float *)c->o.data)[i];
    return l;
}

static void backward(void) {
    const RefMla d = dims;
    const int64_t B = 2, Lq = 5, Lk = 9;
    int64_t shp[6][4] = {{B, d.H, Lq, d.nope}, {B, d.H, Lq, d.rope}, {B, Lk, d.R}, {B, Lk, d.rope},
                         {d.H, d.R, d.nope},   {d.H, d.R, d.dv}};
    int nd[6] = {4, 4, 3, 3, 3, 3};
    static const char *const names[6] = {"dq_nope", "dq_rope", "dc_kv", "dk_rope", "dw_uk", "dw_uv"};
    float *t[6], *g[6];
    size_t n[6];
    attn_tensor tt[6], gt[6];
    for (int i = 0; i < 6; i++) {
        n[i] = 1;
        for (int k = 0; k < nd[i]; k++) n[i] *= (size_t)shp[i][k];
        t[i] = filled(n[i], i >= 4 ? 0.3f : 1.0f);
        g[i] = filled(n[i], 1.0f);
        REQUIRE(t[i] && g[i], "out of memory");
        tt[i] = (attn_tensor){.data = t[i], .ndim = nd[i]};
        gt[i] = (attn_tensor){.data = g[i], .ndim = nd[i]};
        memcpy(tt[i].shape, shp[i], sizeof shp[i]);
        memcpy(gt[i].shape, shp[i], sizeof shp[i]);
    }
    size_t no = (size_t)(B * d.H * Lq * d.dv);
    float *o = filled(no, 1), *lse = filled((size_t)(B * d.H * Lq), 1), *dout = filled(no, 1);
    REQUIRE(o && lse && dout, "out of memory");
    attn_mla_call c = {.q_nope = tt[0], .q_rope = tt[1], .c_kv = tt[2], .k_rope = tt[3], .w_uk = tt[4], .w_uv = tt[5],
                       .o = {o, 4, {B, d.H, Lq, d.dv}, {0}}, .lse = {lse, 3, {B, d.H, Lq}, {0}}, .threads = 1};
    attn_mla_grad_call gc = {.dout = {dout, 4, {B, d.H, Lq, d.dv}, {0}}, .dq_nope = gt[0], .dq_rope = gt[1],
                             .dc_kv = gt[2], .dk_rope = gt[3], .dw_uk = gt[4], .dw_uv = gt[5]};
    attn_error err;
    attn_status st = attn_rt_launch_mla(&attnc_mla_auto_mla, &c, NULL, NULL, &err);
    if (st == ATTN_OK) st = attn_rt_launch_mla_backward(&attnc_mla_auto_mla, &c, &gc, NULL, &err);
    CHECK(st == ATTN_OK, "AOT MLA backward: %s", err.message);
    for (int i = 0; i < 6 && st == ATTN_OK; i++) {
        double big = 0;
        for (size_t e = 0; e < n[i]; e++) big = fmax(big, fabs(g[i][e]));
        for (int s = 0; s < 3; s++) {
            size_t e = (size_t)check_int(&g_rng, 0, (int64_t)n[i] - 1);
            float x0 = t[i][e], h = 1e-2f;
            t[i][e] = x0 + h;
            double lp = aot_loss(&attnc_mla_auto_mla, &c, dout, no);
            t[i][e] = x0 - h;
            double lm = aot_loss(&attnc_mla_auto_mla, &c, dout, no);
            t[i][e] = x0;
            double fd = (lp - lm) / (2.0 * (double)h);
            CHECK(fabs(fd - g[i][e]) <= 1e-2 * big, "AOT %s[%zu]: %g, finite differences %g", names[i], e, g[i][e], fd);
        }
    }
    st = attn_rt_launch_mla_backward(&attnc_mla_on_mla, &c, &gc, NULL, &err);
    CHECK(st == ATTN_ERR_ARG, "absorb = on backward: %s", attn_status_name(st));
    for (int i = 0; i < 6; i++) free(t[i]), free(g[i]);
    free(o), free(lse), free(dout);
}

/* bf16 tensors with an f16 latent (or an f32 one: kv_f32) through the typed simple entry:
 * against the reference on the stored values, o rounded once to bf16 (half an ulp: 2^-8
 * relative). The values are made exact in both types by keeping 8 significant bits and
 * exponents near 1. */
static uint16_t bf16_bits(float x) { /* x has at most 8 significant bits */
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}

static uint16_t f16_bits(float x) { /* x normal in f16 with at most 11 significant bits */
    int e;
    double m = frexp(fabs(x), &e);
    if (x == 0) return 0;
    return (uint16_t)((x < 0 ? 0x8000 : 0) | (e + 14) << 10 | (int)ldexp(2 * m - 1, 10));
}

static float bits_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void sixteen_bit(int64_t B, int64_t Lq, int64_t Lk, bool f32_latent) {
    const RefMla d = dims;
    CHECK(attnc_mla_bf16_mla.dtype == ATTN_BF16 && attnc_mla_bf16_mla.kv_dtype == ATTN_F16, "the bf16 block's dtypes");
    CHECK(attnc_mla_bf16_f32_mla.dtype == ATTN_BF16 && attnc_mla_bf16_f32_mla.kv_dtype == ATTN_F32 &&
              attnc_mla_bf16_f32_mla.kv_f32, "the bf16 block over an f32 latent: its dtypes and kv_f32");
    size_t n[6] = {(size_t)(B * d.H * Lq * d.nope), (size_t)(B * d.H * Lq * d.rope), (size_t)(B * Lk * d.R),
                   (size_t)(B * Lk * d.rope), (size_t)(d.H * d.R * d.nope), (size_t)(d.H * d.R * d.dv)};
    float *f[6];
    uint16_t *s[6];
    float *lat[2]; /* an f32 latent: c_kv, k_rope as floats */
    for (int i = 0; i < 6; i++) {
        f[i] = filled(n[i], i >= 4 ? 0.3f : 1.0f);
        s[i] = malloc(2 * n[i] + 2);
        if (i == 2 || i == 3) lat[i - 2] = f[i];
        REQUIRE(f[i] && s[i], "out of memory");
        for (size_t e = 0; e < n[i]; e++) {
            float x = f[i][e];
            if (fabsf(x) < 1.0f / 1024) x = 0; /* normal in f16 */
            int ex;
            double m = frexp(x, &ex);
            f[i][e] = x = (float)ldexp(nearbyint(ldexp(m, 8)), ex - 8); /* 8 significant bits */
            s[i][e] = i == 2 || i == 3 ? f16_bits(x) : bf16_bits(x);
        }
    }
    size_t no = (size_t)(B * d.H * Lq * d.dv);
    uint16_t *o = malloc(2 * no + 2);
    double *ro = malloc(8 * no + 8), *rl = malloc(8 * (size_t)(B * d.H * Lq) + 8);
    REQUIRE(o && ro && rl, "out of memory");
    ref_mla(d, B, Lq, Lk, Lk - Lq, causal, f[0], f[1], f[2], f[3], f[4], f[5], ro, rl);
    attn_error err;
    attn_status st = f32_latent ? attnc_mla_bf16_f32_simple(s[0], s[1], lat[0], lat[1], s[4], s[5], o, B, Lq, Lk, 2, &err)
                                : attnc_mla_bf16_simple(s[0], s[1], s[2], s[3], s[4], s[5], o, B, Lq, Lk, 2, &err);
    size_t bad = 0, first = 0;
    if (st == ATTN_OK)
        for (size_t i = 0; i < no; i++)
            if (!(fabs(bits_f32(o[i]) - ro[i]) <= 2e-4 + (2e-4 + 1.0 / 256) * fabs(ro[i])) && !bad++) first = i;
    CHECK(st == ATTN_OK && bad == 0, "AOT bf16 / %s latent B=%lld q_len=%lld kv_len=%lld: %s, %zu elements off "
          "(o[%zu] %g, expected %g)", f32_latent ? "f32" : "f16", (long long)B, (long long)Lq, (long long)Lk, st ? err.message : "ok", bad, first,
          st ? 0.0 : bits_f32(o[first]), ro[first]);
    for (int i = 0; i < 6; i++) free(f[i]), free(s[i]);
    free(o), free(ro), free(rl);
}

int main(void) {
    backward();
    for (int f32_latent = 0; f32_latent < 2; f32_latent++) {
        sixteen_bit(1, 1, 1, f32_latent);
        sixteen_bit(2, 1, 100, f32_latent);
        sixteen_bit(1, 33, 130, f32_latent);
    }
    static const int64_t shapes[][3] = {{1, 1, 1}, {2, 7, 7}, {1, 1, 100}, {3, 33, 100}, {2, 33, 7}, {1, 130, 130}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int blk = AUTO; blk <= OFF; blk++)
            for (int e = SIMPLE; e <= CALL; e++)
                run((Block)blk, (Entry)e, shapes[s][0], shapes[s][1], shapes[s][2], s % 2 ? 2 : 1);
    /* a descriptor whose variants disagree with its latent sizes is refused, not run */
    attn_rt_mla_desc bad = attnc_mla_auto_mla;
    bad.kv_rank = 31;
    attn_mla_call c;
    memset(&c, 0, sizeof c);
    attn_error err;
    attn_status st = attn_rt_launch_mla(&bad, &c, NULL, NULL, &err);
    CHECK(st == ATTN_ERR_ARG, "a bad MLA descriptor: %s, expected ATTN_ERR_ARG", attn_status_name(st));
    return check_done("test_aot_mla");
}
