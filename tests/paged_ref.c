/* paged_ref.c — see paged_ref.h. */
#include "paged_ref.h"

#include <stdlib.h>
#include <string.h>

bool paged_reference(const IrFunc *f, const PagedShape *x, const float *qq, const float *kp, const float *vp, int b,
                     const attn_input *in, int nin, double *ro, double *rl) {
    int n = x->starts[b + 1] - x->starts[b], L = x->lens[b], B = x->B, H = x->H, KH = x->KH, DQ = x->DQ, DV = x->DV;
    if (n == 0) return true;
    float *k = malloc(sizeof(float) * (size_t)(KH * L * DQ + 1)), *v = malloc(sizeof(float) * (size_t)(KH * L * DV + 1));
    float *q = malloc(sizeof(float) * (size_t)(H * n * DQ));
    float *o = malloc(sizeof(float) * (size_t)(B * H * n * DV)), *l = malloc(sizeof(float) * (size_t)(B * H * n));
    for (int j = 0; j < L; j++) {
        int pg = x->table[b * x->MP + j / x->P], r = j % x->P;
        for (int h = 0; h < KH; h++) {
            memcpy(k + ((size_t)h * L + j) * DQ, kp + (((size_t)pg * x->P + r) * KH + h) * DQ, sizeof(float) * (size_t)DQ);
            memcpy(v + ((size_t)h * L + j) * DV, vp + (((size_t)pg * x->P + r) * KH + h) * DV, sizeof(float) * (size_t)DV);
        }
    }
    for (int i = 0; i < n; i++)
        for (int h = 0; h < H; h++)
            memcpy(q + ((size_t)h * n + i) * DQ, qq + ((size_t)(x->starts[b] + i) * H + h) * DQ, sizeof(float) * (size_t)DQ);
    attn_rt_args a;
    memset(&a, 0, sizeof a);
    a.q = q, a.k = k, a.v = v, a.o = o, a.lse = l;
    a.batch = B, a.q_len = n, a.kv_len = L, a.q_offset = L - n, a.k_end = L;
    a.q_stride[1] = (int64_t)n * DQ, a.q_stride[2] = DQ;
    a.k_stride[1] = (int64_t)L * DQ, a.k_stride[2] = DQ;
    a.v_stride[1] = (int64_t)L * DV, a.v_stride[2] = DV;
    a.o_stride[0] = (int64_t)H * n * DV, a.o_stride[1] = (int64_t)n * DV, a.o_stride[2] = DV;
    a.lse_stride[0] = (int64_t)H * n, a.lse_stride[1] = n;
    for (int i = 0; i < nin; i++) {
        a.input[i] = in[i].t.data;
        for (int d = 0; d < in[i].t.ndim; d++) a.input_dim[i][d] = in[i].t.shape[d];
    }
    attn_status st = ir_interpret(f, &a);
    for (int i = 0; i < n; i++)
        for (int h = 0; h < H; h++) {
            for (int d = 0; d < DV; d++)
                ro[((size_t)i * H + h) * DV + d] = o[(((size_t)b * H + h) * n + i) * DV + d];
            rl[(size_t)i * H + h] = l[((size_t)b * H + h) * n + i];
        }
    free(k), free(v), free(q), free(o), free(l);
    return st == ATTN_OK;
}
