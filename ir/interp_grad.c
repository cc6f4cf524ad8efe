/* interp_grad.c — the backward in double precision: the project's reference for gradients.
 *
 * Row by row, the forward is recomputed in double (scores, the score modifier, the mask, the
 * softmax), then FlashAttention-2's equations: dV += P^T dO, dP = dO V^T, D = rowsum(dO * O),
 * dS = P * (dP - D), dS' = dS * d score / ds, dQ = scale dS' K, dK = scale dS'^T Q, and each
 * f32 input read by the score gets dS * d score / d (the value read) at the element read. A row
 * that sees no key contributes nothing. Slow and simple on purpose. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* Scratch of one query row against every key. */
typedef struct Row {
    double *raw;  /* [kv_len] scaled scores s, before the score modifier */
    double *s;    /* [kv_len] the modified scores */
    double *p;    /* [kv_len] softmax probabilities (0 where hidden) */
    bool *vis;    /* [kv_len] the key counts */
    double *o;    /* [v_dim] the row's output */
} Row;

static int64_t kv_head(const IrFunc *f, int64_t h) { return ir_head_kv(f, (int)h); }

/* The forward of row i of (b, h) in double into r; false when the row sees no key. */
static bool row_forward(const IrFunc *f, const attn_rt_args *a, IrEnv *env, int64_t b, int64_t h, int64_t i,
                        Row *r) {
    int64_t Lk = a->kv_len, kvh = kv_head(f, h);
    env->b = b;
    env->h = h;
    env->q = a->q_offset + i;
    int64_t qo = b * a->q_stride[0] + h * a->q_stride[1] + i * a->q_stride[2];
    double m = -INFINITY;
    for (int64_t j = 0; j < Lk; j++) {
        env->k = j;
        int64_t ko = b * a->k_stride[0] + kvh * a->k_stride[1] + j * a->k_stride[2];
        double dot = 0;
        for (int d = 0; d < f->qk_dim; d++) dot += ir_load_elem(f->dtype, a->q, qo + d) * ir_load_elem(f->dtype, a->k, ko + d);
        double sc = dot * f->scale;
        r->raw[j] = sc;
        if (f->score) {
            env->score = sc;
            sc = ir_eval(f, f->score, env).f;
        }
        r->vis[j] = ir_eval(f, f->mask, env).i && !(isinf(sc) && sc < 0);
        r->s[j] = sc;
        if (r->vis[j] && sc > m) m = sc;
    }
    double l = 0;
    for (int64_t j = 0; j < Lk; j++) {
        r->p[j] = r->vis[j] ? exp(r->s[j] - m) : 0;
        l += r->p[j];
    }
    for (int d = 0; d < f->v_dim; d++) r->o[d] = 0;
    if (!(l > 0)) return false;
    for (int64_t j = 0; j < Lk; j++) {
        if (!r->vis[j]) continue;
        r->p[j] /= l;
        int64_t vo = b * a->v_stride[0] + kvh * a->v_stride[1] + j * a->v_stride[2];
        for (int d = 0; d < f->v_dim; d++) r->o[d] += r->p[j] * ir_load_elem(f->dtype, a->v, vo + d);
    }
    return true;
}

/* The linear index of the element a read of an input takes; -1 when out of bounds. */
static int64_t read_index(const IrFunc *f, const IrExpr *ld, const attn_rt_args *a, IrEnv *env) {
    int64_t lin = 0;
    for (int d = 0; d < ld->nargs; d++) {
        int64_t idx = ir_eval(f, ld->args[d], env).i, dim = a->input_dim[ld->input][d];
        if (idx < 0 || idx >= dim) return -1;
        lin = lin * dim + idx;
    }
    return lin;
}

static int64_t input_elems(const IrFunc *f, const attn_rt_args *a, int in) {
    int64_t n = 1;
    for (int d = 0; d < f->inputs[in].rank; d++) n *= a->input_dim[in][d];
    return n;
}

static bool row_alloc(Row *r, int64_t Lk, int v_dim) {
    size_t n = (size_t)(Lk > 0 ? Lk : 1);
    r->raw = malloc(sizeof(double) * n);
    r->s = malloc(sizeof(double) * n);
    r->p = malloc(sizeof(double) * n);
    r->vis = malloc(sizeof(bool) * n);
    r->o = malloc(sizeof(double) * (size_t)(v_dim > 0 ? v_dim : 1));
    return r->raw && r->s && r->p && r->vis && r->o;
}

static void row_free(Row *r) {
    free(r->raw);
    free(r->s);
    free(r->p);
    free(r->vis);
    free(r->o);
}

/* Runs the forward of every row, and with g the backward too; *loss = sum(dout * o). */
static attn_status run(const IrFunc *f, const attn_rt_args *a, const float *dout, const IrGradArgs *g, double *loss) {
    int64_t B = a->batch, H = f->heads, KVH = f->kv_heads, Lq = a->q_len, Lk = a->kv_len;
    int QK = f->qk_dim, VD = f->v_dim;
    if (g) {
        if (g->dq) memset(g->dq, 0, sizeof(double) * (size_t)(B * H * Lq * QK));
        if (g->dk) memset(g->dk, 0, sizeof(double) * (size_t)(B * KVH * Lk * QK));
        if (g->dv) memset(g->dv, 0, sizeof(double) * (size_t)(B * KVH * Lk * VD));
        for (int in = 0; in < f->ninputs; in++)
            if (g->dinput[in]) memset(g->dinput[in], 0, sizeof(double) * (size_t)input_elems(f, a, in));
    }
    Row r;
    attn_status st = ATTN_OK;
    if (!row_alloc(&r, Lk, VD)) {
        st = ATTN_ERR_NOMEM;
        goto done;
    }
    IrEnv env = {.q_len = Lq, .kv_len = Lk, .args = a};
    double sum = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                bool sees = row_forward(f, a, &env, b, h, i, &r);
                if (env.index_error) {
                    st = ATTN_ERR_INDEX;
                    goto done;
                }
                const float *dor = dout + ((b * H + h) * Lq + i) * VD;
                double D = 0;
                for (int d = 0; d < VD; d++) D += dor[d] * r.o[d];
                sum += D;
                if (!g || !sees) continue;
                int64_t kvh = kv_head(f, h);
                int64_t qo = b * a->q_stride[0] + h * a->q_stride[1] + i * a->q_stride[2];
                double *dqr = g->dq ? g->dq + ((b * H + h) * Lq + i) * QK : NULL;
                for (int64_t j = 0; j < Lk; j++) {
                    if (!r.vis[j]) continue;
                    int64_t ko = b * a->k_stride[0] + kvh * a->k_stride[1] + j * a->k_stride[2];
                    int64_t vo = b * a->v_stride[0] + kvh * a->v_stride[1] + j * a->v_stride[2];
                    double dpj = 0;
                    for (int d = 0; d < VD; d++) dpj += dor[d] * ir_load_elem(f->dtype, a->v, vo + d);
                    double ds = r.p[j] * (dpj - D);
                    if (g->dv)
                        for (int d = 0; d < VD; d++) g->dv[((b * KVH + kvh) * Lk + j) * VD + d] += r.p[j] * dor[d];
                    env.k = j;
                    env.score = r.raw[j];
                    for (int t = 0; t < f->grad.nreads; t++) {
                        const IrGradRead *rd = &f->grad.reads[t];
                        double *dst = g->dinput[rd->load->input];
                        if (!dst) continue;
                        int64_t at = read_index(f, rd->load, a, &env);
                        if (at < 0) {
                            st = ATTN_ERR_INDEX;
                            goto done;
                        }
                        dst[at] += ds * ir_eval(f, rd->d, &env).f;
                    }
                    double dsr = ds * (f->grad.dscore ? ir_eval(f, f->grad.dscore, &env).f : 1.0) * f->scale;
                    if (dqr)
                        for (int d = 0; d < QK; d++) dqr[d] += dsr * ir_load_elem(f->dtype, a->k, ko + d);
                    if (g->dk)
                        for (int d = 0; d < QK; d++)
                            g->dk[((b * KVH + kvh) * Lk + j) * QK + d] += dsr * ir_load_elem(f->dtype, a->q, qo + d);
                }
            }
    if (loss) *loss = sum;
done:
    row_free(&r);
    return st;
}

attn_status ir_interpret_backward(const IrFunc *f, const attn_rt_args *a, const IrGradArgs *g) {
    if (!f->grad.present || !g || !g->dout) return ATTN_ERR_ARG;
    return run(f, a, g->dout, g, NULL);
}

attn_status ir_interpret_loss(const IrFunc *f, const attn_rt_args *a, const float *dout, double *loss) {
    return run(f, a, dout, NULL, loss);
}
