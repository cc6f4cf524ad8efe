/* MLA blocks in every storage type and compute mode, against MLA computed directly in double
 * precision (tests/masks.c ref_mla) on the values the storage holds:
 *  - dtype = f16 | bf16, kv_dtype = f16 | bf16 under dtype f32 and bf16, and an f32 latent
 *    (kv_dtype = f32) under dtype bf16 and f16, absorbed and up-projected, contiguous and
 *    paged: the math runs on exact f32 copies, so o is the f32
 *    result rounded once to the storage type: |o - ref| <= 2e-4 + (2e-4 + u) |ref|, where
 *    u (2^-8 bf16, 2^-11 f16: half an ulp relative) bounds one rounding to nearest even and
 *    2e-4 the f32 arithmetic (a truncating store fails it);
 *  - compute = bf16 | int8: the accuracy bounds of the precision docs (cosine, relative L1);
 *  - the backward of bf16 storage (and of bf16 or f16 over an f32 latent): the f32 backward of
 *    the same (widened) values, exactly;
 *  - kv_dtype = int8 refused with its reason; compute bf16 has no backward (ATTN_ERR_ARG). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"
#include "tests/masks.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
typedef RefMla Dims;
static bool m_causal(int64_t q, int64_t k) { return k <= q; }

// storage types, independent of the library's converters

/* x rounded to nearest even in dt (f32: x). */
static float round_to(float x, attn_dtype dt) {
    if (dt == ATTN_F32 || x == 0 || !isfinite(x)) return x;
    int e = ilogb(x);
    int bits = dt == ATTN_BF16 ? 7 : 10;
    if (dt == ATTN_F16 && e < -14) e = -14; /* subnormal f16 */
    double scale = ldexp(1.0, e - bits);
    return (float)(nearbyint(x / scale) * scale);
}

/* The bits of x, already a value of dt. */
static uint16_t bits_of(float x, attn_dtype dt) {
    if (dt == ATTN_BF16) {
        uint32_t u;
        memcpy(&u, &x, 4);
        return (uint16_t)(u >> 16);
    }
    uint16_t s = signbit(x) ? 0x8000 : 0;
    double a = fabs(x);
    if (a == 0) return s;
    int e;
    double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
    int E = e + 14;
    if (E >= 1) return (uint16_t)(s | E << 10 | (int)ldexp(2 * m - 1, 10));
    return (uint16_t)(s | (int)ldexp(a, 24));
}

static float value_of(const void *p, size_t i, attn_dtype dt) {
    if (dt == ATTN_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (dt == ATTN_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (float)(h & 0x8000 ? -v : v);
}

/* n random values of dt: their floats in f (for the reference) and their storage (returned). */
static void *make(float *f, size_t n, double scale, attn_dtype dt) {
    check_fill(f, n, &rng, CHECK_UNIFORM, scale);
    void *s = malloc(n * (dt == ATTN_F32 ? 4 : 2) + 4);
    for (size_t i = 0; i < n; i++) {
        f[i] = round_to(f[i], dt);
        if (dt == ATTN_F32) ((float *)s)[i] = f[i];
        else ((uint16_t *)s)[i] = bits_of(f[i], dt);
    }
    return s;
}

static double ulp_of(attn_dtype dt) { return dt == ATTN_BF16 ? 1.0 / 256 : dt == ATTN_F16 ? 1.0 / 2048 : 0; }
static const char *dt_name(attn_dtype dt) { return dt == ATTN_BF16 ? "bf16" : dt == ATTN_F16 ? "f16" : "f32"; }

static attn_kernel *compile(Dims d, const char *extra) {
    char text[640];
    snprintf(text, sizeof text,
             "attention mla_dt { heads = %d; mla { kv_rank = %d; rope_dim = %d; nope_dim = %d; v_dim = %d; } "
             "mask = causal; %s }",
             d.H, d.R, d.rope, d.nope, d.dv, extra);
    attn_kernel *k = NULL;
    char *diags = NULL;
    attn_error err;
    attn_status st = attn_compile("mla_dt.attn", text, NULL, &k, &diags, &err);
    CHECK(st == ATTN_OK, "compile '%s': %s\n%s", extra, err.message, diags ? diags : "");
    attn_free(diags);
    return k;
}

/* Compares o (n values of dt) with the reference: storage bounds for compute f32, the
 * precision docs' cosine and relative L1 for compute bf16 (int8). */
static bool compare(const char *what, const void *o, const double *ro, size_t n, attn_dtype dt, int compute,
                    const float *lse, const double *rl, size_t nl) {
    double worst = 0, dot = 0, no = 0, nr = 0, l1 = 0, r1 = 0;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        double x = value_of(o, i, dt), r = ro[i];
        double e = fabs(x - r), tol = 2e-4 + (2e-4 + ulp_of(dt)) * fabs(r);
        if (!(e <= tol)) ok = compute != 0 ? ok : false;
        if (e / tol > worst) worst = e / tol;
        dot += x * r, no += x * x, nr += r * r, l1 += e, r1 += fabs(r);
    }
    double cosv = no > 0 && nr > 0 ? dot / sqrt(no * nr) : (no == nr ? 1 : 0), rel = r1 > 0 ? l1 / r1 : l1;
    if (compute == 1) ok = cosv >= 0.9999 && rel <= 1e-2;
    if (compute == 2) ok = cosv >= 0.999 && rel <= 3e-2;
    for (size_t i = 0; lse && i < nl; i++)
        if (isinf(rl[i]) ? !(isinf(lse[i]) && lse[i] < 0)
                         : fabs(lse[i] - rl[i]) > (compute ? 2e-2 : 1e-4) + 1e-5 * fabs(rl[i]))
            ok = false;
    if (compute) printf("%-60s cosine %.7f  rel L1 %.2e\n", what, cosv, rel); /* the docs' figures */
    CHECK(ok, "%s: worst error/bound %.3g, cosine %.7f, rel L1 %.3g", what, worst, cosv, rel);
    return ok;
}

/* One contiguous call of kern (storage dt, latent kvt) against the reference. */
static void check_contig(attn_kernel *kern, Dims d, attn_dtype dt, attn_dtype kvt, int compute, int absorb,
                         int64_t B, int64_t Lq, int64_t Lk, const char *label) {
    size_t nqn = (size_t)(B * d.H * Lq * d.nope), nqr = (size_t)(B * d.H * Lq * d.rope);
    size_t nc = (size_t)(B * Lk * d.R), nkr = (size_t)(B * Lk * d.rope);
    size_t nwk = (size_t)d.H * d.R * d.nope, nwv = (size_t)d.H * d.R * d.dv;
    size_t no = (size_t)(B * d.H * Lq * d.dv), nl = (size_t)(B * d.H * Lq);
    float *qn = malloc(nqn * 4 + 4), *qr = malloc(nqr * 4 + 4), *ckv = malloc(nc * 4 + 4), *kr = malloc(nkr * 4 + 4);
    float *wuk = malloc(nwk * 4), *wuv = malloc(nwv * 4), *lse = malloc(nl * 4);
    void *sqn = make(qn, nqn, 1.0, dt), *sqr = make(qr, nqr, 1.0, dt), *sckv = make(ckv, nc, 1.0, kvt);
    void *skr = make(kr, nkr, 1.0, kvt), *swk = make(wuk, nwk, 0.3, dt), *swv = make(wuv, nwv, 0.3, dt);
    void *o = malloc(no * 4);
    double *ro = malloc(no * 8), *rl = malloc(nl * 8);
    ref_mla(d, B, Lq, Lk, Lk - Lq, m_causal, qn, qr, ckv, kr, wuk, wuv, ro, rl);
    attn_mla_call c = {
        .q_nope = {sqn, 4, {B, d.H, Lq, d.nope}, {0}},
        .q_rope = {sqr, 4, {B, d.H, Lq, d.rope}, {0}},
        .c_kv = {sckv, 3, {B, Lk, d.R}, {0}},
        .k_rope = {skr, 3, {B, Lk, d.rope}, {0}},
        .w_uk = {swk, 3, {d.H, d.R, d.nope}, {0}},
        .w_uv = {swv, 3, {d.H, d.R, d.dv}, {0}},
        .o = {o, 4, {B, d.H, Lq, d.dv}, {0}},
        .lse = {lse, 3, {B, d.H, Lq}, {0}},
        .threads = 2,
        .absorb = absorb,
    };
    attn_error err;
    int used = -1;
    attn_status st = attn_run_mla(kern, &c, &used, &err);
    char what[256];
    snprintf(what, sizeof what, "%s dtype %s kv %s compute %d absorb %d B %lld Lq %lld Lk %lld", label, dt_name(dt),
             dt_name(kvt), compute, absorb, (long long)B, (long long)Lq, (long long)Lk);
    CHECK(st == ATTN_OK && (absorb == ATTN_ABSORB_SPEC || used == (absorb == ATTN_ABSORB_ON)), "%s: %s (used %d)",
          what, st ? err.message : "", used);
    if (st == ATTN_OK) compare(what, o, ro, no, dt, compute, lse, rl, nl);
    free(qn), free(qr), free(ckv), free(kr), free(wuk), free(wuv), free(lse), free(o), free(ro), free(rl);
    free(sqn), free(sqr), free(sckv), free(skr), free(swk), free(swv);
}

/* A paged call: sequences of lengths lens (n_b query rows each, the last positions), their
 * latent rows in shuffled pages of P rows, against the reference per sequence. */
static void check_paged(attn_kernel *kern, Dims d, attn_dtype dt, attn_dtype kvt, int P, int compute) {
    enum { B = 3 };
    int lens[B] = {1, 37, 130}, nq[B] = {1, 1, 37}, starts[B + 1] = {0};
    for (int b = 0; b < B; b++) starts[b + 1] = starts[b] + nq[b];
    int T = starts[B], MP = (130 + P - 1) / P, NP = 0;
    for (int b = 0; b < B; b++) NP += (lens[b] + P - 1) / P;
    int32_t *table = calloc((size_t)(B * MP), 4);
    for (int b = 0, next = 0; b < B; b++)
        for (int j = 0; j < (lens[b] + P - 1) / P; j++) table[b * MP + j] = (next++ * 5 + 2) % NP; /* shuffled */
    size_t nc = (size_t)NP * P * d.R, nkr = (size_t)NP * P * d.rope, nqn = (size_t)T * d.H * d.nope,
           nqr = (size_t)T * d.H * d.rope, nwk = (size_t)d.H * d.R * d.nope, nwv = (size_t)d.H * d.R * d.dv,
           no = (size_t)T * d.H * d.dv;
    float *ckv = malloc(nc * 4), *kr = malloc(nkr * 4), *qn = malloc(nqn * 4), *qr = malloc(nqr * 4);
    float *wuk = malloc(nwk * 4), *wuv = malloc(nwv * 4), *lse = malloc((size_t)T * d.H * 4);
    void *sckv = make(ckv, nc, 1.0, kvt), *skr = make(kr, nkr, 1.0, kvt), *sqn = make(qn, nqn, 1.0, dt);
    void *sqr = make(qr, nqr, 1.0, dt), *swk = make(wuk, nwk, 0.3, dt), *swv = make(wuv, nwv, 0.3, dt);
    void *o = malloc(no * 4);
    attn_paged_mla_call c;
    memset(&c, 0, sizeof c);
    c.q_nope = (attn_tensor){sqn, 3, {T, d.H, d.nope}, {0}};
    c.q_rope = (attn_tensor){sqr, 3, {T, d.H, d.rope}, {0}};
    c.c_kv_pages = (attn_tensor){sckv, 3, {NP, P, d.R}, {0}};
    c.k_rope_pages = (attn_tensor){skr, 3, {NP, P, d.rope}, {0}};
    c.w_uk = (attn_tensor){swk, 3, {d.H, d.R, d.nope}, {0}};
    c.w_uv = (attn_tensor){swv, 3, {d.H, d.R, d.dv}, {0}};
    c.page_table = (attn_tensor){table, 2, {B, MP}, {0}};
    c.kv_lens = (attn_tensor){lens, 1, {B}, {0}};
    c.q_starts = (attn_tensor){starts, 1, {B + 1}, {0}};
    c.o = (attn_tensor){o, 3, {T, d.H, d.dv}, {0}};
    c.lse = (attn_tensor){lse, 2, {T, d.H}, {0}};
    c.threads = 2;
    attn_error err;
    attn_status st = attn_run_paged_mla(kern, &c, &err);
    CHECK(st == ATTN_OK, "paged dtype %s kv %s: %s", dt_name(dt), dt_name(kvt), err.message);
    for (int b = 0; st == ATTN_OK && b < B; b++) {
        int n = nq[b], L = lens[b];
        float *cc = malloc((size_t)L * d.R * 4), *kk = malloc((size_t)L * d.rope * 4 + 4);
        float *q1 = malloc((size_t)d.H * n * d.nope * 4), *q2 = malloc((size_t)d.H * n * d.rope * 4 + 4);
        double *ro = malloc((size_t)d.H * n * d.dv * 8), *rl = malloc((size_t)d.H * n * 8);
        void *o1 = malloc((size_t)d.H * n * d.dv * 4);
        float *l1 = malloc((size_t)d.H * n * 4);
        size_t el = dt == ATTN_F32 ? 4 : 2;
        for (int j = 0; j < L; j++) {
            size_t row = (size_t)table[b * MP + j / P] * P + (size_t)(j % P);
            memcpy(cc + (size_t)j * d.R, ckv + row * d.R, (size_t)d.R * 4);
            memcpy(kk + (size_t)j * d.rope, kr + row * d.rope, (size_t)d.rope * 4);
        }
        for (int i = 0; i < n; i++)
            for (int h = 0; h < d.H; h++) {
                size_t src = (size_t)(starts[b] + i) * d.H + h, dst = (size_t)h * n + i;
                memcpy(q1 + dst * d.nope, qn + src * d.nope, (size_t)d.nope * 4);
                memcpy(q2 + dst * d.rope, qr + src * d.rope, (size_t)d.rope * 4);
                memcpy((char *)o1 + dst * d.dv * el, (char *)o + src * d.dv * el, d.dv * el);
                l1[dst] = lse[src];
            }
        ref_mla(d, 1, n, L, L - n, m_causal, q1, q2, cc, kk, wuk, wuv, ro, rl);
        char what[128];
        snprintf(what, sizeof what, "paged P %d dtype %s kv %s sequence %d (n %d, kv_len %d)", P, dt_name(dt),
                 dt_name(kvt), b, n, L);
        compare(what, o1, ro, (size_t)d.H * n * d.dv, dt, compute, l1, rl, (size_t)d.H * n);
        free(cc), free(kk), free(q1), free(q2), free(ro), free(rl), free(o1), free(l1);
    }
    free(table), free(ckv), free(kr), free(qn), free(qr), free(wuk), free(wuv), free(lse), free(o);
    free(sckv), free(skr), free(sqn), free(sqr), free(swk), free(swv);
}

/* The backward of 16-bit storage (dt, the latent in kvt) is the f32 backward of the widened
 * values: both kernels run on the same tensors (the f32 one given the 16-bit forward's o,
 * widened), gradients equal. */
static void check_backward(attn_kernel *k16, attn_kernel *k32, Dims d, attn_dtype dt, attn_dtype kvt, int64_t B,
                           int64_t Lq, int64_t Lk) {
    size_t nqn = (size_t)(B * d.H * Lq * d.nope), nqr = (size_t)(B * d.H * Lq * d.rope);
    size_t nc = (size_t)(B * Lk * d.R), nkr = (size_t)(B * Lk * d.rope);
    size_t nwk = (size_t)d.H * d.R * d.nope, nwv = (size_t)d.H * d.R * d.dv;
    size_t no = (size_t)(B * d.H * Lq * d.dv), nl = (size_t)(B * d.H * Lq);
    float *f[6];
    size_t n[6] = {nqn, nqr, nc, nkr, nwk, nwv};
    void *s[6];
    for (int i = 0; i < 6; i++) {
        f[i] = malloc(n[i] * 4 + 4);
        s[i] = make(f[i], n[i], i >= 4 ? 0.3 : 1.0, i == 2 || i == 3 ? kvt : dt); /* c_kv, k_rope: kvt */
    }
    uint16_t *o16 = malloc(no * 2);
    float *o32 = malloc(no * 4), *lse = malloc(nl * 4), *dout = malloc(no * 4);
    check_fill(dout, no, &rng, CHECK_UNIFORM, 1.0);
    attn_mla_call c = {
        .q_nope = {s[0], 4, {B, d.H, Lq, d.nope}, {0}}, .q_rope = {s[1], 4, {B, d.H, Lq, d.rope}, {0}},
        .c_kv = {s[2], 3, {B, Lk, d.R}, {0}}, .k_rope = {s[3], 3, {B, Lk, d.rope}, {0}},
        .w_uk = {s[4], 3, {d.H, d.R, d.nope}, {0}}, .w_uv = {s[5], 3, {d.H, d.R, d.dv}, {0}},
        .o = {o16, 4, {B, d.H, Lq, d.dv}, {0}}, .lse = {lse, 3, {B, d.H, Lq}, {0}}, .threads = 2,
    };
    attn_error err;
    attn_status st = attn_run_mla(k16, &c, NULL, &err);
    CHECK(st == ATTN_OK, "%s/%s forward: %s", dt_name(dt), dt_name(kvt), err.message);
    for (size_t i = 0; i < no; i++) o32[i] = value_of(o16, i, dt);
    attn_mla_call c32 = c;
    void *fp[6] = {f[0], f[1], f[2], f[3], f[4], f[5]};
    c32.q_nope.data = fp[0], c32.q_rope.data = fp[1], c32.c_kv.data = fp[2], c32.k_rope.data = fp[3];
    c32.w_uk.data = fp[4], c32.w_uv.data = fp[5], c32.o.data = o32;
    float *g[2][6];
    for (int w = 0; w < 2; w++) {
        for (int i = 0; i < 6; i++) g[w][i] = calloc(n[i] + 1, 4);
        attn_mla_grad_call gc = {
            .dout = {dout, 4, {B, d.H, Lq, d.dv}, {0}},
            .dq_nope = {g[w][0], 4, {B, d.H, Lq, d.nope}, {0}}, .dq_rope = {g[w][1], 4, {B, d.H, Lq, d.rope}, {0}},
            .dc_kv = {g[w][2], 3, {B, Lk, d.R}, {0}}, .dk_rope = {g[w][3], 3, {B, Lk, d.rope}, {0}},
            .dw_uk = {g[w][4], 3, {d.H, d.R, d.nope}, {0}}, .dw_uv = {g[w][5], 3, {d.H, d.R, d.dv}, {0}},
        };
        st = attn_run_mla_backward(w ? k32 : k16, w ? &c32 : &c, &gc, &err);
        CHECK(st == ATTN_OK, "%s backward: %s", w ? "f32" : dt_name(dt), err.message);
    }
    static const char *const names[6] = {"dq_nope", "dq_rope", "dc_kv", "dk_rope", "dw_uk", "dw_uv"};
    for (int i = 0; i < 6; i++) {
        double worst = 0, mx = 0;
        for (size_t j = 0; j < n[i]; j++) mx = fmax(mx, fabs(g[1][i][j]));
        for (size_t j = 0; j < n[i]; j++) worst = fmax(worst, fabs(g[0][i][j] - g[1][i][j]));
        CHECK(worst <= 1e-6 * mx + 1e-7 && mx > 0, "backward %s B %lld Lq %lld Lk %lld: %s storage (latent %s) "
              "differs from f32 on the same values by %g (max %g)", names[i], (long long)B, (long long)Lq,
              (long long)Lk, dt_name(dt), dt_name(kvt), worst, mx);
    }
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 6; i++) free(g[w][i]);
    for (int i = 0; i < 6; i++) free(f[i]), free(s[i]);
    free(o16), free(o32), free(lse), free(dout);
}

int main(void) {
    Dims small = {3, 40, 12, 20, 24}; /* nothing a multiple of a vector width */
    struct { int64_t B, Lq, Lk; } calls[] = {{1, 1, 1}, {2, 1, 37}, {1, 37, 37}, {1, 37, 300}, {2, 5, 129}};
    struct { const char *text; attn_dtype dt, kvt; bool all; } stores[] = {
        {"dtype = bf16;", ATTN_BF16, ATTN_BF16, true},
        {"dtype = f16;", ATTN_F16, ATTN_F16, true},
        {"kv_dtype = bf16;", ATTN_F32, ATTN_BF16, true},
        {"kv_dtype = f16;", ATTN_F32, ATTN_F16, true},
        {"dtype = bf16; kv_dtype = f16;", ATTN_BF16, ATTN_F16, true},
        {"dtype = bf16; kv_dtype = bf16;", ATTN_BF16, ATTN_BF16, false},
        /* an f32 latent under a 16-bit dtype (attn_rt_mla_desc.kv_f32) */
        {"dtype = bf16; kv_dtype = f32;", ATTN_BF16, ATTN_F32, true},
        {"dtype = f16; kv_dtype = f32;", ATTN_F16, ATTN_F32, true},
    };
    for (size_t s = 0; s < sizeof stores / sizeof stores[0]; s++) {
        attn_kernel *k = compile(small, stores[s].text);
        if (!k) continue;
        attn_mla_info mi;
        CHECK(attn_kernel_mla_info(k, &mi) && mi.dtype == stores[s].dt && mi.kv_dtype == stores[s].kvt,
              "'%s': info dtype %d kv_dtype %d", stores[s].text, (int)mi.dtype, (int)mi.kv_dtype);
        for (size_t c = 0; c < sizeof calls / sizeof calls[0]; c++)
            for (int ab = ATTN_ABSORB_ON; ab <= ATTN_ABSORB_OFF; ab++)
                if (stores[s].all || c == 3)
                    check_contig(k, small, stores[s].dt, stores[s].kvt, 0, ab, calls[c].B, calls[c].Lq, calls[c].Lk,
                                 stores[s].text);
        attn_kernel_free(k);
    }
    /* DeepSeek-V2's per-head sizes, fewer heads: bf16 storage, a bf16 latent */
    Dims big = {2, 512, 64, 128, 128};
    attn_kernel *k = compile(big, "dtype = bf16;");
    if (k) {
        check_contig(k, big, ATTN_BF16, ATTN_BF16, 0, ATTN_ABSORB_ON, 1, 1, 300, "deepseek");
        check_contig(k, big, ATTN_BF16, ATTN_BF16, 0, ATTN_ABSORB_OFF, 1, 37, 131, "deepseek");
        attn_kernel_free(k);
    }
    /* compute = bf16 | int8 on f32 storage (and int8 on bf16 storage) */
    struct { const char *text; int compute; attn_dtype dt; bool big; } computes[] = {
        {"compute = bf16;", 1, ATTN_F32, true}, {"compute = int8;", 2, ATTN_F32, true},
        {"compute = int8;", 2, ATTN_F32, false}, {"compute = int8; dtype = bf16;", 2, ATTN_BF16, false},
    };
    for (size_t m = 0; m < sizeof computes / sizeof computes[0]; m++) {
        Dims d = computes[m].big ? big : small;
        k = compile(d, computes[m].text);
        if (!k) continue;
        for (size_t c = 0; c < sizeof calls / sizeof calls[0]; c++)
            for (int ab = ATTN_ABSORB_ON; ab <= ATTN_ABSORB_OFF; ab++)
                if (!computes[m].big || c == 1 || c == 3)
                    check_contig(k, d, computes[m].dt, computes[m].dt, computes[m].compute, ab, calls[c].B,
                                 calls[c].Lq, calls[c].Lk, computes[m].text);
        /* 8-bit and bf16 compute are for inference */
        attn_mla_call mc = {0};
        attn_mla_grad_call gc = {0};
        attn_error err;
        CHECK(attn_run_mla_backward(k, &mc, &gc, &err) == ATTN_ERR_ARG && strstr(err.message, "no backward"),
              "'%s': the backward is refused: %s", computes[m].text, err.message);
        attn_kernel_free(k);
    }
    /* paged: a bf16 block with its latent pages in bf16, an f32 one with f16 pages */
    struct { const char *text; attn_dtype dt, kvt; int P, compute; } pages[] = {
        {"dtype = bf16; kv_cache = paged(16);", ATTN_BF16, ATTN_BF16, 16, 0},
        {"kv_dtype = f16; kv_cache = paged(32);", ATTN_F32, ATTN_F16, 32, 0},
        {"dtype = f16; kv_dtype = bf16; kv_cache = paged(8);", ATTN_F16, ATTN_BF16, 8, 0},
        {"compute = bf16; kv_dtype = bf16; kv_cache = paged(16);", ATTN_F32, ATTN_BF16, 16, 1},
        {"compute = int8; dtype = bf16; kv_cache = paged(16);", ATTN_BF16, ATTN_BF16, 16, 2},
        {"dtype = bf16; kv_dtype = f32; kv_cache = paged(16);", ATTN_BF16, ATTN_F32, 16, 0},
        {"dtype = f16; kv_dtype = f32; kv_cache = paged(8);", ATTN_F16, ATTN_F32, 8, 0},
        {"compute = bf16; dtype = bf16; kv_dtype = f32; kv_cache = paged(16);", ATTN_BF16, ATTN_F32, 16, 1},
    };
    for (size_t p = 0; p < sizeof pages / sizeof pages[0]; p++) {
        k = compile(small, pages[p].text);
        if (!k) continue;
        check_paged(k, small, pages[p].dt, pages[p].kvt, pages[p].P, pages[p].compute);
        attn_kernel_free(k);
    }
    /* the backward of bf16 storage, and of bf16 and f16 over an f32 latent */
    attn_kernel *k32 = compile(small, "");
    struct { const char *text; attn_dtype dt, kvt; } backs[] = {
        {"dtype = bf16;", ATTN_BF16, ATTN_BF16},
        {"dtype = bf16; kv_dtype = f32;", ATTN_BF16, ATTN_F32},
        {"dtype = f16; kv_dtype = f32;", ATTN_F16, ATTN_F32},
    };
    for (size_t i = 0; i < sizeof backs / sizeof backs[0]; i++) {
        attn_kernel *k16 = compile(small, backs[i].text);
        if (k16 && k32) {
            check_backward(k16, k32, small, backs[i].dt, backs[i].kvt, 1, 1, 37);
            check_backward(k16, k32, small, backs[i].dt, backs[i].kvt, 2, 37, 130);
        }
        attn_kernel_free(k16);
    }
    attn_kernel_free(k32);
    /* refused: an int8 latent (no scale tensors) */
    static const struct { const char *text, *want; } bad[] = {
        {"kv_dtype = int8;", "an MLA latent cache cannot be int8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, "attention m { heads = 2; mla { kv_rank = 8; rope_dim = 4; nope_dim = 8; "
                 "v_dim = 8; } %s }", bad[i].text);
        attn_kernel *kb = NULL;
        char *diags = NULL;
        attn_error err;
        attn_status st = attn_compile("bad.attn", text, NULL, &kb, &diags, &err);
        CHECK(st != ATTN_OK && diags && strstr(diags, bad[i].want) && strstr(diags, "bad.attn:1:"),
              "'%s': %s\n%s", bad[i].text, attn_status_name(st), diags ? diags : "");
        attn_free(diags);
        attn_kernel_free(kb);
    }
    return check_done("test_mla_dtype");
}
