/* grad_wide.c — the backward of a block that stores f16 or bf16, or keeps K/V in another
 * kv_dtype (f16, bf16, or int8 with a scale per token and K/V head): q, k, v and o widened to
 * f32 copies (exactly for f16 and bf16, whose every value is an f32 value; int8 K/V as the f32
 * product of the element and its scale), then the f32 backward over them with the same
 * generated mask, score and bounds functions (which read no tensor). The gradients are f32, as
 * for every block: dk and dv are those of the widened K and V. */
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

#define WIDE_MAX_DOMAINS 16 /* key domains of a union mask (the compiler makes at most 4) */

void rt_widen(float *dst, const void *p, const int64_t *st, int64_t B, int64_t H, int64_t L, int64_t W,
              attn_dtype dt, const float *scale, int64_t scale_rows) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < L; i++) {
                int64_t off = b * st[0] + h * st[1] + i * st[2];
                if (dt == ATTN_F32) {
                    memcpy(dst, (const float *)p + off, sizeof(float) * (size_t)W);
                    dst += W;
                } else if (dt == ATTN_I8) {
                    const int8_t *row = (const int8_t *)p + off;
                    float s = scale[(b * H + h) * scale_rows + i];
                    for (int64_t j = 0; j < W; j++) *dst++ = (float)row[j] * s;
                } else {
                    const uint16_t *row = (const uint16_t *)p + off;
                    for (int64_t j = 0; j < W; j++) {
                        uint32_t bits = dt == ATTN_BF16 ? (uint32_t)row[j] << 16 : rt_f16_bits_to_f32(row[j]);
                        memcpy(dst++, &bits, sizeof bits);
                    }
                }
            }
}

/* The index of the f32 input `name` of d (int8 K/V's k_scale, v_scale), or -1. */
static int wide_input(const attn_rt_desc *d, const char *name) {
    for (int i = 0; i < d->ninputs; i++)
        if (d->inputs[i].name && strcmp(d->inputs[i].name, name) == 0 && d->inputs[i].dtype == ATTN_F32) return i;
    return -1;
}

attn_status rt_backward_widened(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                                const attn_grad_call *g, attn_rt_pool *pool, attn_error *err) {
    const attn_rt_desc *d = descs[0];
    attn_dtype kvt = rt_kv_dtype(d);
    if ((d->dtype != ATTN_F32 && d->dtype != ATTN_F16 && d->dtype != ATTN_BF16) ||
        (kvt != ATTN_F32 && kvt != ATTN_F16 && kvt != ATTN_BF16 && kvt != ATTN_I8))
        return rt_error(err, ATTN_ERR_DTYPE, "the backward takes f32, f16 or bf16 storage (K/V also int8)");
    if (ndescs > WIDE_MAX_DOMAINS) return rt_error(err, ATTN_ERR_ARG, "too many key domains (%d)", ndescs);
    attn_rt_args a;
    attn_status s = attn_rt_check(d, c, &a, err);
    if (s) return s;
    int64_t B = a.batch, H = d->heads, KH = d->kv_heads, Lq = a.q_len, Lk = a.kv_len;
    size_t nq = (size_t)(B * H * Lq * d->qk_dim), nk = (size_t)(B * KH * Lk * d->qk_dim);
    size_t nv = (size_t)(B * KH * Lk * d->v_dim), no = (size_t)(B * H * Lq * d->v_dim);
    float *buf = malloc(sizeof(float) * (nq + nk + nv + no + 4));
    if (!buf) return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the f32 copies of q, k, v and o");
    float *q = buf, *k = q + nq + 1, *v = k + nk + 1, *o = v + nv + 1;
    const float *ks = NULL, *vs = NULL;
    if (kvt == ATTN_I8) { /* the call's check bound both, shaped [batch, kv_heads, kv_len] */
        int ik = wide_input(d, "k_scale"), iv = wide_input(d, "v_scale");
        if (ik < 0 || iv < 0) {
            free(buf);
            return rt_error(err, ATTN_ERR_ARG, "descriptor '%s': int8 K/V without the inputs k_scale and v_scale",
                            d->name ? d->name : "?");
        }
        ks = a.input[ik], vs = a.input[iv];
    }
    rt_widen(q, a.q, a.q_stride, B, H, Lq, d->qk_dim, d->dtype, NULL, 0);
    rt_widen(k, a.k, a.k_stride, B, KH, Lk, d->qk_dim, kvt, ks, Lk);
    rt_widen(v, a.v, a.v_stride, B, KH, Lk, d->v_dim, kvt, vs, Lk);
    rt_widen(o, a.o, a.o_stride, B, H, Lq, d->v_dim, d->dtype, NULL, 0);
    attn_rt_desc wide[WIDE_MAX_DOMAINS];
    const attn_rt_desc *wp[WIDE_MAX_DOMAINS];
    for (int i = 0; i < ndescs; i++) {
        wide[i] = *descs[i];
        wide[i].dtype = ATTN_F32;
        wide[i].kv_dtype = ATTN_F32;
        wide[i].kv_f32 = 0;
        wp[i] = &wide[i];
    }
    attn_call w = *c;
    w.q = (attn_tensor){.data = q, .ndim = 4, .shape = {B, H, Lq, d->qk_dim}};
    w.k = (attn_tensor){.data = k, .ndim = 4, .shape = {B, KH, Lk, d->qk_dim}};
    w.v = (attn_tensor){.data = v, .ndim = 4, .shape = {B, KH, Lk, d->v_dim}};
    w.o = (attn_tensor){.data = o, .ndim = 4, .shape = {B, H, Lq, d->v_dim}};
    w.q_offset = a.q_offset, w.q_offset_set = 1;
    s = attn_rt_launch_backward_domains(wp, ndescs, &w, g, pool, err);
    free(buf);
    return s;
}
