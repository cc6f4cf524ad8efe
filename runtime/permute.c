/* permute.c — running a permutation mask (`rank[b, k] <= rank[b, q]`) as a causal mask in
 * rank order: gather Q/K/V rows by rank, run the causal variant, scatter O (and lse) back.
 * The copies cost O(n * d) per head against the attention's O(n^2 * d). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

/* pos[b * n + r] = the position whose rank is r; false when a row is not a permutation. */
static bool perm_invert(const int32_t *rank, int64_t B, int64_t n, int64_t *pos) {
    for (int64_t i = 0; i < B * n; i++) pos[i] = -1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++) {
            int32_t r = rank[b * n + i];
            if (r < 0 || r >= n || pos[b * n + r] >= 0) return false;
            pos[b * n + r] = i;
        }
    return true;
}

/* dst row r of every (b, head) = src row pos[b][r] (gather) or the reverse (scatter). */
static void perm_rows(float *dst, const int64_t *dst_st, const float *src, const int64_t *src_st,
                      int64_t B, int64_t heads, int64_t n, int64_t width, const int64_t *pos,
                      bool scatter) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t r = 0; r < n; r++) {
                int64_t p = pos[b * n + r];
                int64_t di = scatter ? p : r, si = scatter ? r : p;
                memcpy(dst + b * dst_st[0] + h * dst_st[1] + di * dst_st[2],
                       src + b * src_st[0] + h * src_st[1] + si * src_st[2], sizeof(float) * (size_t)width);
            }
}

attn_status attn_rt_launch_permuted(const attn_rt_desc *perm, int rank_input,
                                    const attn_rt_desc *const *descs, int n_descs,
                                    const attn_call *call, attn_rt_pool *pool, attn_error *err) {
    if (!perm || !descs || !call) return rt_error(err, ATTN_ERR_NULL, "launch_permuted: perm, descs and call are required");
    if (n_descs < 1 || !descs[0]) return rt_error(err, ATTN_ERR_ARG, "launch_permuted: no descriptor to fall back on");
    attn_rt_args a;
    attn_status st = attn_rt_check(descs[0], call, &a, err); /* the original's contract */
    if (st) return st;
    /* the rank input must be declared i32 [batch, kv_len] (the call was checked against it) */
    const attn_rt_input_desc *ri = rank_input >= 0 && rank_input < descs[0]->ninputs ? &descs[0]->inputs[rank_input] : NULL;
    if (!ri || ri->dtype != ATTN_I32 || ri->rank != 2 || ri->dim_kind[0] != ATTN_DIM_BATCH ||
        ri->dim_kind[1] != ATTN_DIM_KV_LEN || perm->dtype != ATTN_F32 || perm->heads != descs[0]->heads ||
        perm->kv_heads != descs[0]->kv_heads || perm->qk_dim != descs[0]->qk_dim || perm->v_dim != descs[0]->v_dim)
        return rt_error(err, ATTN_ERR_ARG,
                        "launch_permuted: input %d is not an i32 rank[batch, kv_len], or the descriptors differ",
                        rank_input);
    /* the gather copies f32 rows: q, k, v and o must be f32 in both descriptors */
    if (rt_kv_dtype(perm) != ATTN_F32 || descs[0]->dtype != ATTN_F32 || rt_kv_dtype(descs[0]) != ATTN_F32)
        return rt_error(err, ATTN_ERR_ARG, "launch_permuted: a permuted block stores q, k, v and o in f32 (dtype %d, "
                        "K/V %d)", (int)descs[0]->dtype, (int)rt_kv_dtype(perm) != ATTN_F32 ? (int)rt_kv_dtype(perm)
                        : (int)rt_kv_dtype(descs[0]));
    int64_t B = a.batch, n = a.kv_len;
    if (rt_empty_call(&a, descs[0]->heads, descs[0]->v_dim, descs[0]->dtype)) return ATTN_OK;
    /* positions are not ranks: the original */
    if (a.q_len != n || a.q_offset != 0) return attn_rt_launch_domains(descs, n_descs, call, pool, err);
    const int32_t *rank = a.input[rank_input];
    const attn_rt_desc *d = perm;
    int64_t H = d->heads, KH = d->kv_heads, dq = d->qk_dim, dv = d->v_dim;
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)(B * n));
    if (!pos) return rt_error(err, ATTN_ERR_NOMEM, "permute: out of memory");
    if (!perm_invert(rank, B, n, pos)) { /* ties or out-of-range ranks: the general kernel */
        free(pos);
        return attn_rt_launch_domains(descs, n_descs, call, pool, err);
    }
    size_t nq = (size_t)(B * H * n), nk = (size_t)(B * KH * n);
    float *buf = malloc(sizeof(float) * (nq * (size_t)(dq + dv + 1) + nk * (size_t)(dq + dv)));
    if (!buf) {
        free(pos);
        return rt_error(err, ATTN_ERR_NOMEM, "permute: out of memory for the reordered tensors");
    }
    float *qp = buf, *op = qp + nq * (size_t)dq, *lp = op + nq * (size_t)dv, *kp = lp + nq;
    float *vp = kp + nk * (size_t)dq;
    const int64_t q_st[3] = {H * n * dq, n * dq, dq}, o_st[3] = {H * n * dv, n * dv, dv};
    const int64_t k_st[3] = {KH * n * dq, n * dq, dq}, v_st[3] = {KH * n * dv, n * dv, dv};
    const int64_t l_st[3] = {H * n, n, 1};
    perm_rows(qp, q_st, a.q, a.q_stride, B, H, n, dq, pos, false);
    perm_rows(kp, k_st, a.k, a.k_stride, B, KH, n, dq, pos, false);
    perm_rows(vp, v_st, a.v, a.v_stride, B, KH, n, dv, pos, false);
    attn_call c = *call;
    c.q = (attn_tensor){.data = qp, .ndim = 4, .shape = {B, H, n, dq}};
    c.k = (attn_tensor){.data = kp, .ndim = 4, .shape = {B, KH, n, dq}};
    c.v = (attn_tensor){.data = vp, .ndim = 4, .shape = {B, KH, n, dv}};
    c.o = (attn_tensor){.data = op, .ndim = 4, .shape = {B, H, n, dv}};
    c.lse = (attn_tensor){.data = lp, .ndim = 3, .shape = {B, H, n}};
    c.q_offset = 0;
    c.q_offset_set = 1;
    st = attn_rt_launch(d, &c, pool, err);
    if (st == ATTN_OK) {
        perm_rows(a.o, a.o_stride, op, o_st, B, H, n, dv, pos, true);
        if (a.lse) {
            const int64_t lse_st[3] = {a.lse_stride[0], a.lse_stride[1], 1};
            perm_rows(a.lse, lse_st, lp, l_st, B, H, n, 1, pos, true);
        }
    }
    free(buf);
    free(pos);
    return st;
}
