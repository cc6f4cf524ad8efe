/* grad.c — the backward: dq, dk, dv and the gradients of the f32 inputs the score reads, from
 * the forward's o and lse (FlashAttention-2's equations, P recomputed from lse):
 *   dV += P^T dO, dP = dO V^T, D = rowsum(dO * O), dS = P * (dP - D),
 *   dS' = dS * d score / ds, dQ = scale dS' K, dK = scale dS'^T Q, d<input> += dS * d score / d x.
 * The spec's part (the mask, the score, its derivatives, the rows' key bounds) is generated code
 * (the grad role: attn_rt_desc.grad_bounds / grad_step, W keys a call); this file walks rows and
 * keys. A task is one (batch row, K/V head): it owns that head's dk, dv and the dq rows of its
 * query heads, so nothing is written by two tasks; the inputs' gradients go to a partial per
 * task, added up in task order. The result is the same bit for bit whatever the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

typedef struct Grad {
    const attn_rt_desc *d;          /* the first domain's: shapes, scale, head map */
    const attn_rt_desc *const *dom; /* the key domains, each with its mask (one: the block) */
    int ndom;
    const attn_rt_args *a;
    const attn_grad_call *g;
    RtView dout, dq, dk, dv;        /* resolved strides */
    int nd;                         /* inputs with a gradient wanted */
    int din[ATTN_MAX_INPUTS];       /* their input index */
    float *dinput[ATTN_MAX_INPUTS]; /* by input index: where it goes (NULL: not wanted) */
    int64_t nelem[ATTN_MAX_INPUTS]; /* its elements */
    int64_t poff[ATTN_MAX_INPUTS];  /* its place in a task's partial */
    int64_t psize;                  /* floats of a task's partial */
    float *partial;                 /* [tasks][psize] */
    int *failed;                    /* [tasks]: an input index was out of bounds */
    int64_t kb, ke;                 /* the keys visited: [kb, ke); dk, dv row 0 is key kb */
} Grad;

static const float *row_ptr(const RtView *v, int64_t b, int64_t h, int64_t i) {
    return (const float *)v->t->data + b * v->stride[0] + h * v->stride[1] + i * v->stride[2];
}

/* The inner loops, vectorized for the CPU at hand (AVX-512, AVX2 or the baseline, picked when
 * the library loads); 16 partial sums in a fixed order, so a result does not depend on the
 * thread that computes it. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define RT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RT_CLONES
#endif

RT_CLONES static float dot(const float *x, const float *y, int n) {
    float s[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) s[l] += x[i + l] * y[i + l];
    for (int l = 0; i < n; i++, l++) s[l] += x[i] * y[i];
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) s[l] += s[l + w];
    return s[0];
}

RT_CLONES static void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

enum { MAX_LANES = 16 };

static void grad_task(void *ctx, int64_t task) {
    Grad *G = ctx;
    const attn_rt_desc *d = G->d;
    const attn_rt_args *a = G->a;
    int64_t KH = d->kv_heads, b = task / KH, kvh = task % KH;
    int64_t Lq = a->q_len;
    int QK = d->qk_dim, VD = d->v_dim, W = d->grad_lanes;
    const float *q = a->q, *k = a->k, *v = a->v, *o = a->o;
    float *part = G->partial ? G->partial + task * G->psize : NULL;
    float fio[(2 + ATTN_RT_MAX_GRAD_READS) * MAX_LANES];
    int64_t iio[ATTN_RT_MAX_GRAD_READS * MAX_LANES];
    float scale = d->grad_scale;
    int64_t kb0 = G->kb;
    for (int64_t j = 0; j < G->ke - kb0; j++) {
        memset((float *)row_ptr(&G->dk, b, kvh, j), 0, sizeof(float) * (size_t)QK);
        memset((float *)row_ptr(&G->dv, b, kvh, j), 0, sizeof(float) * (size_t)VD);
    }
    for (int64_t h = 0; h < d->heads; h++) {
        if (d->grad_head_kv[h] != kvh) continue;
        for (int64_t i = 0; i < Lq; i++) {
            float *dq = (float *)row_ptr(&G->dq, b, h, i);
            memset(dq, 0, sizeof(float) * (size_t)QK);
            float lse = a->lse[b * a->lse_stride[0] + h * a->lse_stride[1] + i];
            if (lse == -INFINITY) continue; /* a row that saw no key adds nothing */
            const float *qi = q + b * a->q_stride[0] + h * a->q_stride[1] + i * a->q_stride[2];
            const float *oi = o + b * a->o_stride[0] + h * a->o_stride[1] + i * a->o_stride[2];
            const float *doi = row_ptr(&G->dout, b, h, i);
            float D = dot(doi, oi, VD);
            int64_t qpos = a->q_offset + i, kb[2];
            for (int dm = 0; dm < G->ndom; dm++) {
            const attn_rt_desc *dd = G->dom[dm];
            if (dd->grad_bounds(a, b, h, qpos, kb)) {
                G->failed[task] = 1;
                return;
            }
            int64_t lo = kb[0] < G->kb ? G->kb : kb[0], hi = kb[1] >= G->ke ? G->ke - 1 : kb[1];
            if (lo > hi) continue; /* no key of the window: none read */
            for (int64_t k0 = lo - lo % W; k0 <= hi; k0 += W) {
                for (int l = 0; l < W; l++) {
                    int64_t j = k0 + l < lo ? lo : k0 + l > hi ? hi : k0 + l; /* keys visited only */
                    fio[l] = scale * dot(qi, k + b * a->k_stride[0] + kvh * a->k_stride[1] + j * a->k_stride[2], QK);
                }
                if (dd->grad_step(a, b, h, qpos, k0, fio, iio)) {
                    G->failed[task] = 1;
                    return;
                }
                for (int l = 0; l < W; l++) {
                    int64_t j = k0 + l;
                    if (fio[l] == -INFINITY || j < lo || j > hi) continue;
                    const float *kj = k + b * a->k_stride[0] + kvh * a->k_stride[1] + j * a->k_stride[2];
                    const float *vj = v + b * a->v_stride[0] + kvh * a->v_stride[1] + j * a->v_stride[2];
                    float p = expf(fio[l] - lse);
                    float ds = p * (dot(doi, vj, VD) - D);
                    float dsr = ds * fio[W + l] * scale;
                    axpy(dq, dsr, kj, QK);
                    axpy((float *)row_ptr(&G->dk, b, kvh, j - kb0), dsr, qi, QK);
                    axpy((float *)row_ptr(&G->dv, b, kvh, j - kb0), p, doi, VD);
                    for (int r = 0; part && r < dd->grad_nreads; r++) {
                        int in = dd->grad_read_input[r];
                        if (G->dinput[in]) part[G->poff[in] + iio[r * W + l]] += ds * fio[(2 + r) * W + l];
                    }
                }
            }
            }
        }
    }
}

/* Gradient tensors: f32, the shape given, any strides with a unit last one, no overlap. */
static attn_status grad_view(RtView *v, const char *name, const attn_tensor *t, const int64_t *shape,
                             bool out, attn_error *err) {
    if (!t->data) return rt_error(err, ATTN_ERR_NULL, "%s: data is NULL", name);
    if (t->ndim != 4) return rt_error(err, ATTN_ERR_RANK, "%s: %d dims, expected 4", name, t->ndim);
    for (int i = 0; i < 4; i++)
        if (t->shape[i] != shape[i])
            return rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d is %lld, expected %lld", name, i,
                            (long long)t->shape[i], (long long)shape[i]);
    attn_status s = rt_view(v, name, t, 4, err);
    if (!s && out) s = rt_check_no_overlap(v, err);
    return s;
}

attn_status attn_rt_launch_backward(const attn_rt_desc *d, const attn_call *c, const attn_grad_call *g,
                                    attn_rt_pool *pool, attn_error *err) {
    return attn_rt_launch_backward_domains(&d, 1, c, g, pool, err);
}

static attn_status rt_backward(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                               const attn_call *cw, const attn_grad_call *g, int64_t kb, attn_rt_pool *pool,
                               attn_error *err);

attn_status attn_rt_launch_backward_domains(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                                            const attn_grad_call *g, attn_rt_pool *pool, attn_error *err) {
    return rt_backward(descs, ndescs, c, NULL, g, 0, pool, err);
}

attn_status rt_launch_backward_window(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                                      const attn_grad_call *g, int64_t kv_len, int64_t k_begin, attn_rt_pool *pool,
                                      attn_error *err) {
    if (!descs || ndescs < 1 || !descs[0]) return rt_error(err, ATTN_ERR_NULL, "no kernel descriptor");
    attn_call w;
    attn_status s = rt_window_call(descs[0], c, kv_len, k_begin, &w, err);
    return s ? s : rt_backward(descs, ndescs, c, &w, g, k_begin, pool, err);
}

/* c: the call as given (its tensors checked for overlaps); cw: its key window's call
 * (rt_window_call; NULL: none, every key) with the window from key kb. */
static attn_status rt_backward(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                               const attn_call *cw, const attn_grad_call *g, int64_t kb, attn_rt_pool *pool,
                               attn_error *err) {
    if (!g) return rt_error(err, ATTN_ERR_NULL, "the gradient call is NULL");
    if (!descs || ndescs < 1) return rt_error(err, ATTN_ERR_NULL, "no kernel descriptor");
    const attn_rt_desc *d = descs[0];
    for (int i = 0; i < ndescs; i++) {
        const attn_rt_desc *x = descs[i];
        if (!x) return rt_error(err, ATTN_ERR_NULL, "the kernel descriptor is NULL");
        if (!x->grad_step || !x->grad_bounds)
            return rt_error(err, ATTN_ERR_ARG, "'%s' has no backward (only f32 kernels that are not MLA do)",
                            x->name ? x->name : "?");
        if (x->heads != d->heads || x->kv_heads != d->kv_heads || x->qk_dim != d->qk_dim || x->v_dim != d->v_dim ||
            x->grad_lanes != d->grad_lanes || x->ninputs != d->ninputs)
            return rt_error(err, ATTN_ERR_ARG, "key domain '%s' does not match '%s'", x->name ? x->name : "?",
                            d->name ? d->name : "?");
    }
    if (d->dtype != ATTN_F32) /* f16, bf16: widened to f32 (key windows take f32 only) */
        return cw ? rt_error(err, ATTN_ERR_DTYPE, "a key window's backward takes f32 tensors")
                  : rt_backward_widened(descs, ndescs, c, g, pool, err);
    attn_rt_args a;
    attn_status s = cw ? rt_check_call(d, cw, &a, false, err) : attn_rt_check(d, c, &a, err);
    if (s) return s;
    int64_t nwin = cw ? c->k.shape[2] : a.kv_len; /* keys visited */
    if (!a.lse && a.batch * d->heads * a.q_len > 0)
        return rt_error(err, ATTN_ERR_NULL, "lse: data is NULL (the backward needs the forward's o and lse)");
    if (d->grad_lanes < 1 || d->grad_lanes > MAX_LANES || d->grad_nreads < 0 || d->grad_nreads > ATTN_RT_MAX_GRAD_READS)
        return rt_error(err, ATTN_ERR_ARG, "descriptor '%s': bad backward lanes or reads", d->name ? d->name : "?");
    Grad G;
    memset(&G, 0, sizeof G);
    G.d = d;
    G.dom = descs;
    G.ndom = ndescs;
    G.a = &a;
    G.g = g;
    G.kb = cw ? kb : 0;
    G.ke = G.kb + nwin;
    int64_t B = a.batch, H = d->heads, KH = d->kv_heads, Lq = a.q_len;
    int64_t so[4] = {B, H, Lq, d->v_dim}, sq[4] = {B, H, Lq, d->qk_dim}, sk[4] = {B, KH, nwin, d->qk_dim},
            sv[4] = {B, KH, nwin, d->v_dim};
    if ((s = grad_view(&G.dout, "do", &g->dout, so, false, err)) || (s = grad_view(&G.dq, "dq", &g->dq, sq, true, err)) ||
        (s = grad_view(&G.dk, "dk", &g->dk, sk, true, err)) || (s = grad_view(&G.dv, "dv", &g->dv, sv, true, err)))
        return s;
    /* a gradient must not overlap another one or what the backward reads */
    {
        RtView in[5];
        const attn_tensor *ts[5] = {&c->q, &c->k, &c->v, &c->o, &c->lse};
        static const char *const names[5] = {"q", "k", "v", "o", "lse"};
        for (int i = 0; i < 5; i++)
            if ((s = rt_view(&in[i], names[i], ts[i], i == 4 ? 4 : (int64_t)sizeof(float), err))) return s;
        const RtView *outs[3] = {&G.dq, &G.dk, &G.dv};
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < i; j++)
                if (rt_ranges_overlap(outs[i], outs[j]))
                    return rt_error(err, ATTN_ERR_STRIDE, "%s overlaps %s", outs[i]->name, outs[j]->name);
            if (rt_ranges_overlap(outs[i], &G.dout))
                return rt_error(err, ATTN_ERR_STRIDE, "%s overlaps do", outs[i]->name);
            for (int j = 0; j < 5; j++)
                if (rt_ranges_overlap(outs[i], &in[j]))
                    return rt_error(err, ATTN_ERR_STRIDE, "%s overlaps %s", outs[i]->name, names[j]);
        }
    }
    if (g->ndinputs < 0 || g->ndinputs > ATTN_MAX_INPUTS || (g->ndinputs && !g->dinputs))
        return rt_error(err, ATTN_ERR_ARG, "ndinputs is %d (0 .. %d, with dinputs)", g->ndinputs, ATTN_MAX_INPUTS);
    for (int i = 0; i < g->ndinputs; i++) {
        const attn_input *gi = &g->dinputs[i];
        int in = -1;
        for (int j = 0; j < d->ninputs && in < 0; j++)
            if (gi->name && strcmp(gi->name, d->inputs[j].name) == 0) in = j;
        bool read = false;
        for (int r = 0; r < d->grad_nreads; r++) read |= d->grad_read_input[r] == in;
        if (in < 0 || !read)
            return rt_error(err, ATTN_ERR_ARG, "d%s: no such gradient (the score reads no f32 input '%s')",
                            gi->name ? gi->name : "?", gi->name ? gi->name : "?");
        if (G.dinput[in]) return rt_error(err, ATTN_ERR_ARG, "d%s: given twice", gi->name);
        int64_t n = 1;
        if (gi->t.ndim != d->inputs[in].rank)
            return rt_error(err, ATTN_ERR_RANK, "d%s: %d dims, expected %d", gi->name, gi->t.ndim, d->inputs[in].rank);
        for (int k = 0; k < gi->t.ndim; k++) {
            if (gi->t.shape[k] != a.input_dim[in][k])
                return rt_error(err, ATTN_ERR_SHAPE, "d%s: dim %d is %lld, expected %lld (as %s)", gi->name, k,
                                (long long)gi->t.shape[k], (long long)a.input_dim[in][k], gi->name);
            n *= gi->t.shape[k];
        }
        if (!gi->t.data) return rt_error(err, ATTN_ERR_NULL, "d%s: data is NULL", gi->name);
        G.dinput[in] = gi->t.data;
        G.nelem[in] = n;
        G.poff[in] = G.psize;
        G.psize += n;
    }
    int64_t ntasks = B * KH;
    G.failed = calloc((size_t)(ntasks > 0 ? ntasks : 1), sizeof(int));
    if (G.psize) G.partial = calloc((size_t)(ntasks * G.psize), sizeof(float));
    if (!G.failed || (G.psize && !G.partial)) {
        free(G.failed);
        free(G.partial);
        return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the backward's partial sums");
    }
    s = rt_launch_tasks(pool, rt_call_threads(c, pool), ntasks, grad_task, &G, 0, err);
    for (int64_t t = 0; !s && t < ntasks; t++)
        if (G.failed[t]) s = rt_index_error(d, err);
    for (int in = 0; !s && in < d->ninputs; in++) {
        if (!G.dinput[in]) continue;
        /* in task order: the same sums whatever thread ran which task */
        for (int64_t e = 0; e < G.nelem[in]; e++) {
            float sum = 0;
            for (int64_t t = 0; t < ntasks; t++) sum += G.partial[t * G.psize + G.poff[in] + e];
            G.dinput[in][e] = sum;
        }
    }
    free(G.failed);
    free(G.partial);
    return s ? s : rt_ok(err);
}
