/* test_aot_paged.c — a paged block built ahead of time (aot_paged.attn), linked with attnc_rt
 * only: its header's entry points (attnc_aotpaged, attnc_aotpaged_simple) against a double
 * reference over shuffled pages with NaN in unused ones, and a bad table refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aot_paged.h"
#include "tests/check.h"

enum { H = 4, KH = 2, D = 16, P = 8, B = 4, MP = 6, NP = 20 };

/* The largest error of o against a double reference (mask causal && k >= lim[b]), past o's own
 * rounding (rel times the reference's magnitude). */
static double max_error(const float *q, const float *kp, const float *vp, const int32_t *table, const int32_t *lens,
                        const int32_t *starts, const int32_t *lim, const float *o, double rel) {
    double worst = 0;
    for (int b = 0; b < B; b++) {
        int n = starts[b + 1] - starts[b], L = lens[b];
        for (int i = 0; i < n; i++)
            for (int h = 0; h < H; h++) {
                double s[64], acc[D] = {0};
                int pos = L - n + i, kvh = h / (H / KH);
                const float *qr = q + ((size_t)(starts[b] + i) * H + h) * D;
                for (int j = 0; j < L; j++) {
                    const float *kr = kp + (((size_t)table[b * MP + j / P] * P + j % P) * KH + kvh) * D;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += (double)qr[d] * kr[d];
                    s[j] = j <= pos && j >= lim[b] ? dot / sqrt((double)D) : -INFINITY;
                }
                check_softmax(s, L);
                for (int j = 0; j < L; j++)
                    for (int d = 0; d < D && s[j] > 0; d++)
                        acc[d] += s[j] * vp[(((size_t)table[b * MP + j / P] * P + j % P) * KH + kvh) * D + d];
                for (int d = 0; d < D; d++) {
                    double e = fabs(o[((size_t)(starts[b] + i) * H + h) * D + d] - acc[d]) - rel * fabs(acc[d]);
                    if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
                }
            }
    }
    return worst;
}

int main(void) {
    uint64_t rng = 5;
    int32_t lens[B] = {1, 8, 30, 40}, starts[B + 1] = {0, 1, 9, 12, 13}, lim[B] = {0, 3, 0, 20};
    int T = starts[B];
    int32_t table[B * MP];
    float *kp = malloc(sizeof(float) * NP * P * KH * D), *vp = malloc(sizeof(float) * NP * P * KH * D);
    float q[13 * H * D], o[13 * H * D];
    for (int i = 0; i < NP * P * KH * D; i++) kp[i] = vp[i] = NAN;
    for (int i = 0; i < B * MP; i++) table[i] = 1000; /* padding: never read */
    int perm[NP];
    for (int i = 0; i < NP; i++) perm[i] = i;
    for (int i = NP - 1; i > 0; i--) {
        int j = (int)check_int(&rng, 0, i), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int next = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < (lens[b] + P - 1) / P; j++) {
            table[b * MP + j] = perm[next++];
            for (int r = 0; r < P && j * P + r < lens[b]; r++) {
                check_fill(kp + ((size_t)table[b * MP + j] * P + r) * KH * D, KH * D, &rng, CHECK_NORMAL, 1.0);
                check_fill(vp + ((size_t)table[b * MP + j] * P + r) * KH * D, KH * D, &rng, CHECK_NORMAL, 1.0);
            }
        }
    check_fill(q, (size_t)T * H * D, &rng, CHECK_NORMAL, 1.0);
    attn_error err;
    attn_status st = attnc_aotpaged_simple(q, kp, vp, table, lens, starts, o, B, T, NP, MP, lim, 2, &err);
    REQUIRE(st == ATTN_OK, "attnc_aotpaged_simple: %s", err.message);
    CHECK(max_error(q, kp, vp, table, lens, starts, lim, o, 0) < 1e-4, "max error %g",
          max_error(q, kp, vp, table, lens, starts, lim, o, 0));
    /* int8 pages: each row quantized with its scale (NaN scales in unused rows), the reference on
     * the dequantized values, causal (lim 0) */
    int8_t *kq = malloc((size_t)NP * P * KH * D), *vq = malloc((size_t)NP * P * KH * D);
    float ksc[NP * P * KH], vsc[NP * P * KH];
    for (int r = 0; r < NP * P * KH; r++) {
        float mk = 0, mv = 0;
        for (int d = 0; d < D; d++) mk = fmaxf(mk, fabsf(kp[r * D + d])), mv = fmaxf(mv, fabsf(vp[r * D + d]));
        ksc[r] = mk / 127, vsc[r] = mv / 127; /* NaN rows: NaN scales */
        for (int d = 0; d < D; d++) {
            kq[r * D + d] = mk > 0 ? (int8_t)lrintf(kp[r * D + d] / ksc[r]) : 0;
            vq[r * D + d] = mv > 0 ? (int8_t)lrintf(vp[r * D + d] / vsc[r]) : 0;
        }
    }
    float *kd = malloc(sizeof(float) * NP * P * KH * D), *vd = malloc(sizeof(float) * NP * P * KH * D);
    for (int i = 0; i < NP * P * KH * D; i++) kd[i] = kq[i] * ksc[i / D], vd[i] = vq[i] * vsc[i / D];
    int32_t zero[B] = {0};
    st = attnc_aotpaged8_simple(q, kq, vq, table, lens, starts, o, B, T, NP, MP, ksc, vsc, 2, &err);
    REQUIRE(st == ATTN_OK, "attnc_aotpaged8_simple: %s", err.message);
    CHECK(max_error(q, kd, vd, table, lens, starts, zero, o, 0) < 1e-4, "int8 pages: max error %g",
          max_error(q, kd, vd, table, lens, starts, zero, o, 0));
    /* bf16 q and o (raw bits) over the same int8 pages, and over f32 pages: the reference on
     * the rounded q; o within its own rounding */
    uint16_t qb[13 * H * D], ob[13 * H * D];
    float qr[13 * H * D];
    for (int i = 0; i < T * H * D; i++) {
        uint32_t u;
        memcpy(&u, &q[i], 4);
        qb[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        u = (uint32_t)qb[i] << 16;
        memcpy(&qr[i], &u, 4);
    }
    for (int pass = 0; pass < 2; pass++) {
        st = pass ? attnc_aotpagedb32_simple(qb, kp, vp, table, lens, starts, ob, B, T, NP, MP, 2, &err)
                  : attnc_aotpagedb8_simple(qb, kq, vq, table, lens, starts, ob, B, T, NP, MP, ksc, vsc, 2, &err);
        REQUIRE(st == ATTN_OK, "attnc_aotpagedb%s_simple: %s", pass ? "32" : "8", err.message);
        for (int i = 0; i < T * H * D; i++) {
            uint32_t u = (uint32_t)ob[i] << 16;
            memcpy(&o[i], &u, 4);
        }
        double e = max_error(qr, pass ? kp : kd, pass ? vp : vd, table, lens, starts, zero, o, 1.0 / 256);
        CHECK(e < 1e-4, "bf16 q and o over %s pages: max error %g", pass ? "f32" : "int8", e);
    }
    free(kq), free(vq), free(kd), free(vd);
    /* the call entry with a bad table: refused, o untouched */
    table[3 * MP + 5] = NP;
    for (int i = 0; i < T * H * D; i++) o[i] = 3.0f;
    attn_paged_call c;
    memset(&c, 0, sizeof c);
    c.q = (attn_tensor){q, 3, {T, H, D}, {0}};
    c.k_pages = (attn_tensor){kp, 4, {NP, P, KH, D}, {0}};
    c.v_pages = (attn_tensor){vp, 4, {NP, P, KH, D}, {0}};
    c.page_table = (attn_tensor){table, 2, {B, MP}, {0}};
    c.kv_lens = (attn_tensor){lens, 1, {B}, {0}};
    c.q_starts = (attn_tensor){starts, 1, {B + 1}, {0}};
    c.o = (attn_tensor){o, 3, {T, H, D}, {0}};
    attn_input in = {"lim", {lim, 1, {B}, {0}}};
    c.inputs = &in, c.ninputs = 1;
    st = attnc_aotpaged(&c, &err);
    CHECK(st == ATTN_OK, "a table entry past the last page was read: %s", err.message); /* 40 keys: 5 pages */
    table[3 * MP + 5] = 1000;
    table[3 * MP + 4] = NP; /* sequence 3's fifth page (keys 32..39) */
    st = attnc_aotpaged(&c, &err);
    CHECK(st == ATTN_ERR_INDEX, "bad page: %s (%s)", attn_status_name(st), err.message);
    free(kp), free(vp);
    return check_done("test_aot_paged");
}
