/* mla.c — running multi-head latent attention: the projections around the compiled flash
 * kernels (absorbed or up-projected), and the cost model of `absorb = auto`. In the runtime,
 * so that AOT objects run MLA blocks as the JIT does.
 *
 * Absorbed:     q_cat[b,h] = [q_nope[b,h] . w_uk[h]^T | q_rope[b,h]]   (kv_rank + rope wide)
 *               k_cat[b]   = [c_kv[b] | k_rope[b]]                      (one head for all)
 *               o_lat      = flash(q_cat, k_cat, v = c_kv view of k_cat)
 *               o[b,h]     = o_lat[b,h] . w_uv[h]
 * Up-projected: per (b, h): k[b,h] = [c_kv[b] . w_uk[h] | k_rope[b]], v[b,h] = c_kv[b] . w_uv[h]
 *               into a per-thread scratch, then the flash tile function over that head's rows.
 *
 * Storage: the tensors may be f16 or bf16 (the descriptor's dtype; the latent c_kv, k_rope in
 * rt_mla_kv_dtype: f32, f16 or bf16 under any dtype). The variants
 * are compiled for f32 and run on the f32 scratch above, so 16-bit storage is widened (exactly)
 * where it is copied: rows into q_cat and k_cat, a head's weight into a task's buffer before a
 * product, a 16-bit c_kv once into an f32 copy for the up-projection; o is computed in f32 and
 * rounded to nearest even as it is stored. The backward widens every tensor first.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

#define MLA_MAX_EXTENT ((int64_t)1 << 40)

/* A validated MLA tensor: sizes and strides in elements (zeros resolved to row-major). */
typedef struct MlaView {
    void *p;           /* data */
    attn_dtype dt;     /* its element type: f32, f16 or bf16 */
    int ndim;
    int64_t sh[4];     /* sizes */
    int64_t st[4];     /* strides */
    uintptr_t lo, hi;  /* its bytes [lo, hi); lo == hi: none */
} MlaView;

static int64_t mla_elem(attn_dtype t) { return t == ATTN_F32 ? 4 : 2; }

static attn_status mla_view(const char *name, const attn_tensor *t, int ndim, const int64_t *want,
                            bool optional, attn_dtype dt, MlaView *v, attn_error *err) {
    memset(v, 0, sizeof *v);
    v->dt = dt;
    v->ndim = ndim;
    for (int d = 0; d < ndim; d++) v->sh[d] = want[d];
    if (!t->data && optional) return ATTN_OK;
    if (t->ndim != ndim)
        return rt_error(err, ATTN_ERR_RANK, "%s: has %d dims, expected %d", name, t->ndim, ndim);
    bool empty = false; /* no element (q_len or kv_len 0): NULL data is fine, nothing is read */
    for (int d = 0; d < ndim; d++) empty |= want[d] == 0;
    if (!t->data && !empty) return rt_error(err, ATTN_ERR_NULL, "%s: data is NULL", name);
    bool zero = true;
    for (int d = 0; d < ndim; d++) {
        if (t->shape[d] != want[d])
            return rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d is %lld, expected %lld", name, d,
                            (long long)t->shape[d], (long long)want[d]);
        if (t->stride[d] != 0) zero = false;
    }
    int64_t extent = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (zero) {
            v->st[d] = extent;
            if (__builtin_mul_overflow(extent, t->shape[d], &extent) || extent > MLA_MAX_EXTENT)
                return rt_error(err, ATTN_ERR_OVERFLOW, "%s: too large", name);
        } else {
            v->st[d] = t->stride[d];
            if (t->stride[d] < 0 || (d == ndim - 1 && t->stride[d] != 1))
                return rt_error(err, ATTN_ERR_STRIDE, "%s: strides must be >= 0 with a unit last stride", name);
            int64_t span;
            if (__builtin_mul_overflow(t->stride[d], t->shape[d] - 1, &span) || span > MLA_MAX_EXTENT)
                return rt_error(err, ATTN_ERR_OVERFLOW, "%s: strides overflow", name);
        }
    }
    /* an empty tensor may come without data: a stand-in address, so that the copies and products
     * of zero elements below never offset a null pointer */
    static const float nothing[1]; /* never written: it stands for zero elements */
    v->p = t->data ? t->data : (float *)nothing;
    if (!empty) { /* its bytes, for the overlap check of the outputs */
        int64_t last = 0;
        for (int d = 0; d < ndim; d++) last += (t->shape[d] - 1) * v->st[d]; /* bounded above */
        v->lo = (uintptr_t)t->data;
        v->hi = v->lo + (uintptr_t)(last + 1) * (uintptr_t)mla_elem(dt);
    }
    return ATTN_OK;
}

/* The f32 view of rows x cols elements of v from element offset off, rows ld apart: the data
 * itself when it is f32 (*ld_out = ld), else its exact copy into tmp (*ld_out = cols). */
static const float *mla_mat(const MlaView *v, int64_t off, int64_t ld, int64_t rows, int64_t cols, float *tmp,
                            int64_t *ld_out) {
    if (v->dt == ATTN_F32) {
        *ld_out = ld;
        return (const float *)v->p + off;
    }
    for (int64_t i = 0; i < rows; i++) rt_widen_row(tmp + i * cols, v->p, off + i * ld, cols, v->dt);
    *ld_out = cols;
    return tmp;
}

/* Elements of a view (its dense size). */
static int64_t mla_count(const MlaView *v) {
    int64_t n = 1;
    for (int d = 0; d < v->ndim; d++) n *= v->sh[d];
    return v->p && v->lo < v->hi ? n : 0;
}

/* Rebinds a 16-bit view to its exact dense f32 copy at dst (mla_count(v) floats); f32 views stay. */
static void mla_widen(MlaView *v, float *dst) {
    if (v->dt == ATTN_F32) return;
    int64_t n = mla_count(v), W = v->sh[v->ndim - 1], rows = W ? n / W : 0, idx[4] = {0};
    for (int64_t i = 0; i < rows; i++) {
        int64_t off = 0, rest = i;
        for (int d = v->ndim - 2; d >= 0; d--) idx[d] = rest % v->sh[d], rest /= v->sh[d];
        for (int d = 0; d < v->ndim - 1; d++) off += idx[d] * v->st[d];
        rt_widen_row(dst + i * W, v->p, off, W, v->dt);
    }
    v->p = dst;
    v->dt = ATTN_F32;
    int64_t e = 1;
    for (int d = v->ndim - 1; d >= 0; d--) v->st[d] = e, e *= v->sh[d];
}

/* The query heads of an MLA block (both variants have them all). */
static int64_t mla_heads(const attn_rt_mla_desc *d) { return (d->up ? d->up : d->absorbed)->heads; }

/* Everything a call needs, validated. */
typedef struct MlaRun {
    const attn_rt_mla_desc *d;
    int64_t B, H, Lq, Lk, R, rope, nope, dv;
    MlaView qn, qr, ckv, kr, wuk, wuv, o, lse;
    /* absorbed path scratch */
    float *q_cat, *k_cat, *o_lat;
    /* up-projected path */
    attn_rt_args args;       /* validated args of the inner kernel, K/V pointers per task */
    float *slots;            /* per-thread K/V scratch */
    float *wide;             /* f32 copies of 16-bit tensors (a dense o the kernel writes first) */
    MlaView o_store;         /* where o goes (r->o is then its f32 copy) */
    int64_t slot_floats;     /* floats per slot */
    int nslots;
    atomic_int *slot_busy;
    atomic_int index_error;  /* a tile reported an input index out of bounds */
    atomic_int nomem;        /* a task could not allocate its buffer */
} MlaRun;

static attn_status mla_validate(const attn_rt_mla_desc *d, const attn_mla_call *c, MlaRun *r,
                                attn_error *err) {
    memset(r, 0, sizeof *r);
    r->d = d;
    /* (NULL data is checked by mla_view: a tensor with no element may have it) */
    if (c->q_nope.ndim != 4)
        return rt_error(err, c->q_nope.data ? ATTN_ERR_RANK : ATTN_ERR_NULL, "q_nope: expected a 4-d tensor");
    if (c->c_kv.ndim != 3)
        return rt_error(err, c->c_kv.data ? ATTN_ERR_RANK : ATTN_ERR_NULL, "c_kv: expected a 3-d tensor");
    r->B = c->q_nope.shape[0];
    r->H = mla_heads(d);
    r->Lq = c->q_nope.shape[2];
    r->Lk = c->c_kv.shape[1];
    r->R = d->kv_rank, r->rope = d->rope_dim, r->nope = d->nope_dim, r->dv = d->v_dim;
    if (r->B < 0 || r->Lq < 0 || r->Lk < 0 || r->B > MLA_MAX_EXTENT || r->Lq > MLA_MAX_EXTENT ||
        r->Lk > MLA_MAX_EXTENT)
        return rt_error(err, ATTN_ERR_SHAPE, "batch, q_len and kv_len must be in [0, 2^40]");
    attn_status st;
    attn_dtype dt = d->dtype, kt = rt_mla_kv_dtype(d);
    if ((st = mla_view("q_nope", &c->q_nope, 4, (int64_t[]){r->B, r->H, r->Lq, r->nope}, false, dt, &r->qn, err)) ||
        (st = mla_view("q_rope", &c->q_rope, 4, (int64_t[]){r->B, r->H, r->Lq, r->rope}, false, dt, &r->qr, err)) ||
        (st = mla_view("c_kv", &c->c_kv, 3, (int64_t[]){r->B, r->Lk, r->R}, false, kt, &r->ckv, err)) ||
        (st = mla_view("k_rope", &c->k_rope, 3, (int64_t[]){r->B, r->Lk, r->rope}, false, kt, &r->kr, err)) ||
        (st = mla_view("w_uk", &c->w_uk, 3, (int64_t[]){r->H, r->R, r->nope}, false, dt, &r->wuk, err)) ||
        (st = mla_view("w_uv", &c->w_uv, 3, (int64_t[]){r->H, r->R, r->dv}, false, dt, &r->wuv, err)) ||
        (st = mla_view("o", &c->o, 4, (int64_t[]){r->B, r->H, r->Lq, r->dv}, false, dt, &r->o, err)) ||
        (st = mla_view("lse", &c->lse, 3, (int64_t[]){r->B, r->H, r->Lq}, true, ATTN_F32, &r->lse, err)))
        return st;
    r->o_store = r->o;
    if (c->threads < 0) return rt_error(err, ATTN_ERR_ARG, "threads must be >= 0");
    /* an output sharing bytes with what the call reads gives a wrong answer */
    RtRange outs[2] = {{"o", r->o.lo, r->o.hi}, {"lse", r->lse.lo, r->lse.hi}};
    RtRange ins[6 + ATTN_MAX_INPUTS] = {
        {"q_nope", r->qn.lo, r->qn.hi}, {"q_rope", r->qr.lo, r->qr.hi}, {"c_kv", r->ckv.lo, r->ckv.hi},
        {"k_rope", r->kr.lo, r->kr.hi}, {"w_uk", r->wuk.lo, r->wuk.hi}, {"w_uv", r->wuv.lo, r->wuv.hi},
    };
    int nin = 6 + rt_input_ranges(c->inputs, c->ninputs, ins + 6);
    if ((st = rt_check_disjoint(outs, 2, ins, nin, err))) return st;
    if (r->lse.hi > r->lse.lo && r->o.lo < r->lse.hi && r->lse.lo < r->o.hi)
        return rt_error(err, ATTN_ERR_STRIDE, "o and lse overlap in memory");
    return ATTN_OK;
}

// the absorbed path

/* A task's buffer of n floats for its 16-bit copies (none needed: NULL, ok); false when out of
 * memory (the task then does nothing and the call fails). */
static bool mla_tmp(MlaRun *r, bool need, int64_t n, float **tmp) {
    *tmp = NULL;
    if (!need || n <= 0) return true;
    *tmp = malloc(sizeof(float) * (size_t)n);
    if (!*tmp) atomic_store(&r->nomem, 1);
    return *tmp != NULL;
}

static void task_q_absorb(void *ctx, int64_t t) {
    MlaRun *r = ctx;
    int64_t b = t / r->H, h = t % r->H, W = r->R + r->rope, lq, lk;
    float *dst = r->q_cat + (b * r->H + h) * r->Lq * W, *tmp;
    if (!mla_tmp(r, r->qn.dt != ATTN_F32, (r->Lq + r->R) * r->nope, &tmp)) return;
    const float *qn = mla_mat(&r->qn, b * r->qn.st[0] + h * r->qn.st[1], r->qn.st[2], r->Lq, r->nope, tmp, &lq);
    const float *wk = mla_mat(&r->wuk, h * r->wuk.st[0], r->wuk.st[1], r->R, r->nope, tmp ? tmp + r->Lq * r->nope : NULL, &lk);
    rt_sgemm_nt(r->Lq, r->R, r->nope, qn, lq, wk, lk, dst, W);
    for (int64_t i = 0; i < r->Lq; i++)
        rt_widen_row(dst + i * W + r->R, r->qr.p, b * r->qr.st[0] + h * r->qr.st[1] + i * r->qr.st[2], r->rope,
                     r->qr.dt);
    free(tmp);
}

#define MLA_ROWS_PER_TASK 256 /* keys copied per task of the cache concatenation */

static void task_k_concat(void *ctx, int64_t t) {
    MlaRun *r = ctx;
    int64_t chunks = (r->Lk + MLA_ROWS_PER_TASK - 1) / MLA_ROWS_PER_TASK;
    int64_t b = t / chunks, j0 = t % chunks * MLA_ROWS_PER_TASK, W = r->R + r->rope;
    int64_t j1 = j0 + MLA_ROWS_PER_TASK < r->Lk ? j0 + MLA_ROWS_PER_TASK : r->Lk;
    for (int64_t j = j0; j < j1; j++) {
        float *dst = r->k_cat + (b * r->Lk + j) * W;
        rt_widen_row(dst, r->ckv.p, b * r->ckv.st[0] + j * r->ckv.st[1], r->R, r->ckv.dt);
        rt_widen_row(dst + r->R, r->kr.p, b * r->kr.st[0] + j * r->kr.st[1], r->rope, r->kr.dt);
    }
}

/* o[b,h] = o_lat[b,h] . w_uv[h]; 16-bit: w_uv[h] widened, o computed in f32 and rounded. */
static void task_o_proj(void *ctx, int64_t t) {
    MlaRun *r = ctx;
    int64_t b = t / r->H, h = t % r->H, lv, off = b * r->o.st[0] + h * r->o.st[1];
    bool narrow = r->o.dt != ATTN_F32;
    float *tmp;
    if (!mla_tmp(r, narrow || r->wuv.dt != ATTN_F32, r->R * r->dv + r->Lq * r->dv, &tmp)) return;
    const float *wv = mla_mat(&r->wuv, h * r->wuv.st[0], r->wuv.st[1], r->R, r->dv, tmp, &lv);
    float *o = narrow ? tmp + r->R * r->dv : (float *)r->o.p + off;
    rt_sgemm_nn(r->Lq, r->dv, r->R, r->o_lat + (b * r->H + h) * r->Lq * r->R, r->R, wv, lv, o,
                narrow ? r->dv : r->o.st[2]);
    for (int64_t i = 0; narrow && i < r->Lq; i++) rt_narrow_row(r->o.p, off + i * r->o.st[2], o + i * r->dv, r->dv, r->o.dt);
    free(tmp);
}

static attn_tensor dense4(float *p, int64_t a, int64_t b, int64_t c, int64_t d) {
    return (attn_tensor){.data = p, .ndim = 4, .shape = {a, b, c, d}};
}

static attn_status run_absorbed(MlaRun *r, const attn_mla_call *c, attn_rt_pool *pool, int threads,
                                attn_error *err) {
    int64_t W = r->R + r->rope;
    size_t nq = (size_t)(r->B * r->H * r->Lq), nk = (size_t)(r->B * r->Lk);
    r->q_cat = malloc(sizeof(float) * nq * (size_t)W);
    r->k_cat = malloc(sizeof(float) * nk * (size_t)W);
    r->o_lat = malloc(sizeof(float) * nq * (size_t)r->R);
    attn_status st = ATTN_OK;
    if (!r->q_cat || !r->k_cat || !r->o_lat) {
        st = rt_error(err, ATTN_ERR_NOMEM, "MLA: out of memory for %zu scratch floats", (nq + nk) * (size_t)W);
        goto done;
    }
    rt_parallel_for_n(pool, threads, r->B * r->H, task_q_absorb, r);
    rt_parallel_for_n(pool, threads, r->B * ((r->Lk + MLA_ROWS_PER_TASK - 1) / MLA_ROWS_PER_TASK),
                      task_k_concat, r);
    attn_call inner = {
        .q = dense4(r->q_cat, r->B, r->H, r->Lq, W),
        .k = dense4(r->k_cat, r->B, 1, r->Lk, W),
        .v = {.data = r->k_cat, .ndim = 4, .shape = {r->B, 1, r->Lk, r->R},
              .stride = {r->Lk * W, r->Lk * W, W, 1}},
        .o = dense4(r->o_lat, r->B, r->H, r->Lq, r->R),
        .lse = c->lse,
        .q_offset = c->q_offset,
        .q_offset_set = c->q_offset_set,
        .inputs = c->inputs,
        .ninputs = c->ninputs,
        .threads = threads,
    };
    if (atomic_load(&r->nomem)) {
        st = rt_error(err, ATTN_ERR_NOMEM, "MLA: out of memory for the widened weights");
        goto done;
    }
    st = attn_rt_launch(r->d->absorbed, &inner, pool, err);
    if (st == ATTN_OK) rt_parallel_for_n(pool, threads, r->B * r->H, task_o_proj, r);
    if (st == ATTN_OK && atomic_load(&r->nomem)) st = rt_error(err, ATTN_ERR_NOMEM, "MLA: out of memory for the widened weights");
done:
    free(r->q_cat);
    free(r->k_cat);
    free(r->o_lat);
    return st;
}

// the up-projected path

static int slot_take(MlaRun *r) {
    for (;;)
        for (int i = 0; i < r->nslots; i++) {
            int expect = 0;
            if (atomic_compare_exchange_strong(&r->slot_busy[i], &expect, 1)) return i;
        }
}

/* (b, h)'s up-projected keys [c_kv . w_uk[h] | k_rope] into kb (rows nope + rope wide) and
 * values c_kv . w_uv[h] into vb (rows v_dim wide). */
static void mla_up_kv(MlaRun *r, int64_t b, int64_t h, float *kb, float *vb) {
    int64_t Wk = r->nope + r->rope, lk, lv;
    const float *ckv = (const float *)r->ckv.p + b * r->ckv.st[0]; /* f32 (widened before) */
    float *tmp;
    if (!mla_tmp(r, r->wuk.dt != ATTN_F32, r->R * (r->nope + r->dv), &tmp)) return;
    const float *wk = mla_mat(&r->wuk, h * r->wuk.st[0], r->wuk.st[1], r->R, r->nope, tmp, &lk);
    const float *wv = mla_mat(&r->wuv, h * r->wuv.st[0], r->wuv.st[1], r->R, r->dv, tmp ? tmp + r->R * r->nope : NULL, &lv);
    rt_sgemm_nn(r->Lk, r->nope, r->R, ckv, r->ckv.st[1], wk, lk, kb, Wk);
    for (int64_t j = 0; j < r->Lk; j++)
        rt_widen_row(kb + j * Wk + r->nope, r->kr.p, b * r->kr.st[0] + j * r->kr.st[1], r->rope, r->kr.dt);
    rt_sgemm_nn(r->Lk, r->dv, r->R, ckv, r->ckv.st[1], wv, lv, vb, r->dv);
    free(tmp);
}

/* (b, h)'s queries [q_nope | q_rope] into dst (rows nope + rope wide). */
static void mla_q_cat(const MlaRun *r, int64_t b, int64_t h, float *dst) {
    int64_t W = r->nope + r->rope;
    for (int64_t i = 0; i < r->Lq; i++) {
        rt_widen_row(dst + i * W, r->qn.p, b * r->qn.st[0] + h * r->qn.st[1] + i * r->qn.st[2], r->nope, r->qn.dt);
        rt_widen_row(dst + i * W + r->nope, r->qr.p, b * r->qr.st[0] + h * r->qr.st[1] + i * r->qr.st[2], r->rope,
                     r->qr.dt);
    }
}

static void task_up(void *ctx, int64_t t) {
    MlaRun *r = ctx;
    int64_t b = t / r->H, h = t % r->H, Wk = r->nope + r->rope;
    int s = slot_take(r);
    float *kb = r->slots + (int64_t)s * r->slot_floats, *vb = kb + r->Lk * Wk;
    mla_up_kv(r, b, h, kb, vb);
    attn_rt_args a = r->args; /* batch and head strides of k/v are 0: this head's scratch */
    a.k = kb;
    a.v = vb;
    int64_t bq = r->d->up->block_q;
    for (int64_t q0 = 0; q0 < r->Lq; q0 += bq)
        if (r->d->up->tile(&a, b, h, q0, q0 + bq < r->Lq ? q0 + bq : r->Lq))
            atomic_store(&r->index_error, 1);
    atomic_store(&r->slot_busy[s], 0);
}

/* o[b,h] from its f32 copy, rounded to the storage type. */
static void task_o_store(void *ctx, int64_t t) {
    MlaRun *r = ctx;
    int64_t b = t / r->H, h = t % r->H;
    const MlaView *o = &r->o_store;
    for (int64_t i = 0; i < r->Lq; i++)
        rt_narrow_row(o->p, b * o->st[0] + h * o->st[1] + i * o->st[2], (const float *)r->o.p + (t * r->Lq + i) * r->dv,
                      r->dv, o->dt);
}

static void task_q_concat(void *ctx, int64_t t) {
    MlaRun *r = ctx;
    mla_q_cat(r, t / r->H, t % r->H, r->q_cat + t * r->Lq * (r->nope + r->rope));
}

static attn_status run_unabsorbed(MlaRun *r, const attn_mla_call *c, attn_rt_pool *pool, int threads,
                                  attn_error *err) {
    int64_t Wk = r->nope + r->rope;
    int nthreads = threads > 0 ? threads : pool ? attn_rt_pool_threads(pool) : attn_rt_cpu_count();
    r->nslots = nthreads > 0 ? nthreads : 1;
    r->slot_floats = r->Lk * (Wk + r->dv);
    r->q_cat = malloc(sizeof(float) * (size_t)(r->B * r->H * r->Lq * Wk));
    r->slots = malloc(sizeof(float) * (size_t)(r->slot_floats * r->nslots));
    r->slot_busy = calloc((size_t)r->nslots, sizeof(atomic_int));
    /* a 16-bit c_kv widened once for every head's products; a 16-bit o computed in f32 first */
    int64_t nc = r->ckv.dt != ATTN_F32 ? mla_count(&r->ckv) : 0, no = r->o.dt != ATTN_F32 ? mla_count(&r->o) : 0;
    if (nc + no) r->wide = malloc(sizeof(float) * (size_t)(nc + no));
    attn_status st = ATTN_OK;
    if (!r->q_cat || !r->slots || !r->slot_busy || (nc + no && !r->wide)) {
        st = rt_error(err, ATTN_ERR_NOMEM, "MLA: out of memory for the up-projection scratch");
        goto done;
    }
    mla_widen(&r->ckv, r->wide);
    attn_tensor o_call = c->o;
    if (no) { /* o = its dense f32 copy, stored after the kernel */
        r->o = (MlaView){.p = r->wide + nc, .dt = ATTN_F32, .ndim = 4, .sh = {r->B, r->H, r->Lq, r->dv},
                         .st = {r->H * r->Lq * r->dv, r->Lq * r->dv, r->dv, 1}};
        o_call = dense4(r->wide + nc, r->B, r->H, r->Lq, r->dv);
    }
    /* validate the inner call once; K/V are one head's scratch, reached through zero strides */
    attn_call inner = {
        .q = dense4(r->q_cat, r->B, r->H, r->Lq, Wk),
        .k = {.data = r->slots, .ndim = 4, .shape = {r->B, r->H, r->Lk, Wk}, .stride = {0, 0, Wk, 1}},
        .v = {.data = r->slots, .ndim = 4, .shape = {r->B, r->H, r->Lk, r->dv}, .stride = {0, 0, r->dv, 1}},
        .o = o_call,
        .lse = c->lse,
        .q_offset = c->q_offset,
        .q_offset_set = c->q_offset_set,
        .inputs = c->inputs,
        .ninputs = c->ninputs,
        .threads = threads,
    };
    st = attn_rt_check(r->d->up, &inner, &r->args, err);
    if (st == ATTN_OK) st = rt_summaries_build(r->d->up, &r->args, err);
    if (st != ATTN_OK) goto done;
    rt_parallel_for_n(pool, threads, r->B * r->H, task_q_concat, r);
    st = rt_parallel_for_stack(pool, r->nslots, r->B * r->H, task_up, r, (size_t)r->d->up->stack, err);
    if (st == ATTN_OK && atomic_load(&r->nomem))
        st = rt_error(err, ATTN_ERR_NOMEM, "MLA: out of memory for the widened weights");
    if (st == ATTN_OK && atomic_load(&r->index_error))
        st = rt_index_error(r->d->up, err);
    if (st == ATTN_OK && no) rt_parallel_for_n(pool, threads, r->B * r->H, task_o_store, r);
done:
    rt_summaries_free(&r->args);
    free(r->wide);
    free(r->q_cat);
    free(r->slots);
    free(r->slot_busy);
    return st;
}

// calls with no query or no key

/* No query: nothing to do; no key: every row sees no key, o = 0 and lse = -inf. No kernel runs,
 * but the runtime inputs are checked as a run would check them. */
static attn_status mla_empty(const MlaRun *r, const attn_mla_call *c, attn_error *err) {
    const attn_rt_desc *d = r->d->up ? r->d->up : r->d->absorbed;
    void *p = (void *)r; /* a stand-in address: validation never dereferences these */
    attn_call probe = {
        .q = {p, 4, {r->B, d->heads, r->Lq, d->qk_dim}, {0}},
        .k = {p, 4, {r->B, d->kv_heads, r->Lk, d->qk_dim}, {0}},
        .v = {p, 4, {r->B, d->kv_heads, r->Lk, d->v_dim}, {0}},
        .o = {p, 4, {r->B, d->heads, r->Lq, d->v_dim}, {0}},
        .q_offset = c->q_offset,
        .q_offset_set = c->q_offset_set,
        .inputs = c->inputs,
        .ninputs = c->ninputs,
    };
    attn_status st = rt_check_call(d, &probe, NULL, false, err); /* the stand-ins share p */
    if (st != ATTN_OK) return st;
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t h = 0; h < r->H; h++)
            for (int64_t i = 0; i < r->Lq; i++) {
                /* zero bits are 0 in every storage type */
                memset((char *)r->o.p + (b * r->o.st[0] + h * r->o.st[1] + i * r->o.st[2]) * mla_elem(r->o.dt), 0,
                       (size_t)(r->dv * mla_elem(r->o.dt)));
                if (r->lse.p) ((float *)r->lse.p)[b * r->lse.st[0] + h * r->lse.st[1] + i] = -INFINITY;
            }
    return rt_ok(err);
}

// the cost model

/* Time-proportional cost of each variant for one batch row and all heads: multiply-adds, the
 * absorbed kernel's per-pair work weighted by how much slower per flop its 576-wide keys and
 * 512-wide values run than the 192/128-wide up-projected ones. Calibrated on DeepSeek-V2
 * shapes (bench/report.py --only mla, kv_len 1024, 1 thread): since both take blocks of 48-64
 * keys the two run alike per flop; measured crossover q_len ~150 (absorbed 261.8 ms against
 * 297.1 at 128, 499.6 against 333.9 at 256), model 146 (with 16-key blocks for the absorbed
 * kernel it was 1.3x slower per pair and the crossover ~110). */
#define MLA_ABSORBED_PAIR_WEIGHT 1.0
static void mla_costs(const attn_rt_mla_desc *d, int64_t Lq, int64_t Lk, double *absorbed, double *up) {
    double H = (double)mla_heads(d), R = d->kv_rank, rope = d->rope_dim, nope = d->nope_dim, dv = d->v_dim;
    double pairs = (double)Lq * (double)Lk; /* the mask's share cancels: both variants see it */
    *absorbed = Lq * H * R * nope + MLA_ABSORBED_PAIR_WEIGHT * pairs * H * (R + rope + R) + Lq * H * R * dv;
    *up = Lk * H * R * (nope + dv) + pairs * H * (nope + rope + dv);
}

int attn_rt_mla_prefers_absorbed(const attn_rt_mla_desc *d, int64_t q_len, int64_t kv_len) {
    if (!d || !d->absorbed || !d->absorbed->tile) return 0;
    if (!d->up || !d->up->tile) return 1;
    double a, u;
    mla_costs(d, q_len, kv_len, &a, &u);
    return a <= u;
}

/* The variants agree with the latent sizes (a descriptor written by hand may not); their
 * dtype is checked before. */
static bool mla_desc_ok(const attn_rt_mla_desc *d) {
    if (d->kv_rank < 1 || d->rope_dim < 0 || d->nope_dim < 1 || d->v_dim < 1) return false;
    const attn_rt_desc *u = d->up, *a = d->absorbed;
    if (u && (!u->tile || u->kv_heads != u->heads || u->qk_dim != d->nope_dim + d->rope_dim || u->v_dim != d->v_dim))
        return false;
    if (a && (!a->tile || a->kv_heads != 1 || a->qk_dim != d->kv_rank + d->rope_dim || a->v_dim != d->kv_rank))
        return false;
    return (u || a) && (!u || !a || (u->heads == a->heads && u->ninputs == a->ninputs));
}

/* The storage types and the variants' (f32: they run on f32 copies). */
attn_status rt_mla_check_dtypes(const attn_rt_mla_desc *d, attn_error *err) {
    if ((d->up && (d->up->dtype != ATTN_F32 || d->up->kv_dtype != ATTN_F32)) ||
        (d->absorbed && (d->absorbed->dtype != ATTN_F32 || d->absorbed->kv_dtype != ATTN_F32)))
        return rt_error(err, ATTN_ERR_DTYPE, "MLA variants run on f32 copies of the tensors: their dtype must be f32");
    if (d->dtype != ATTN_F32 && d->dtype != ATTN_F16 && d->dtype != ATTN_BF16)
        return rt_error(err, ATTN_ERR_DTYPE, "MLA dtype %d: expected f32, f16 or bf16", (int)d->dtype);
    if (d->kv_dtype == ATTN_I8)
        return rt_error(err, ATTN_ERR_DTYPE, "MLA kv_dtype int8: the latent cache has no int8 form (no scale tensors)");
    if (d->kv_dtype != ATTN_F32 && d->kv_dtype != ATTN_F16 && d->kv_dtype != ATTN_BF16)
        return rt_error(err, ATTN_ERR_DTYPE, "MLA kv_dtype %d: expected f32, f16 or bf16", (int)d->kv_dtype);
    if (d->kv_f32 && (d->kv_dtype != ATTN_F32 || d->dtype == ATTN_F32))
        return rt_error(err, ATTN_ERR_DTYPE, "MLA kv_f32 is for an f32 latent under an f16 or bf16 dtype "
                        "(kv_dtype %d, dtype %d)", (int)d->kv_dtype, (int)d->dtype);
    return ATTN_OK;
}

attn_status attn_rt_launch_mla(const attn_rt_mla_desc *desc, const attn_mla_call *call, attn_rt_pool *pool,
                               int *used_absorbed, attn_error *err) {
    if (!desc || !call) return rt_error(err, ATTN_ERR_NULL, "launch_mla: desc and call are required");
    attn_status dst = rt_mla_check_dtypes(desc, err);
    if (dst != ATTN_OK) return dst;
    if (!mla_desc_ok(desc))
        return rt_error(err, ATTN_ERR_ARG, "launch_mla: the variants disagree with the latent sizes (or none is given)");
    MlaRun r;
    attn_status st = mla_validate(desc, call, &r, err);
    if (st != ATTN_OK) return st;
    bool abs;
    if (call->absorb == ATTN_ABSORB_ON) abs = true;
    else if (call->absorb == ATTN_ABSORB_OFF) abs = false;
    else abs = attn_rt_mla_prefers_absorbed(desc, r.Lq, r.Lk);
    if (abs && !desc->absorbed)
        return rt_error(err, ATTN_ERR_ARG, "absorbed variant not compiled (absorb = off)");
    if (!abs && !desc->up)
        return rt_error(err, ATTN_ERR_ARG, "up-projected variant not compiled (absorb = on)");
    if (used_absorbed) *used_absorbed = abs;
    if (r.Lq == 0 || r.Lk == 0) return mla_empty(&r, call, err);
    int threads = call->threads;
    attn_rt_pool *tmp = NULL;
    if (!pool && threads != 1) pool = tmp = attn_rt_pool_create(threads);
    st = abs ? run_absorbed(&r, call, pool, threads, err) : run_unabsorbed(&r, call, pool, threads, err);
    if (tmp) attn_rt_pool_destroy(tmp);
    if (st == ATTN_OK) rt_ok(err);
    return st;
}

// the backward, up-projected

/* Scratch and views of an MLA backward: the up-projected Q, K, V of every (batch row, head),
 * dense, and the gradients the block's backward gives for them. */
typedef struct MlaGrad {
    MlaRun *r;
    MlaView dout, dqn, dqr, dckv, dkr, dwuk, dwuv;
    float *q, *k, *v, *dq, *dk, *dv;
    atomic_int nomem; /* a task could not allocate its scratch */
} MlaGrad;

/* Q = [q_nope | q_rope], K = [c_kv . w_uk[h] | k_rope], V = c_kv . w_uv[h] for (b, h). */
static void task_grad_up(void *ctx, int64_t t) {
    MlaGrad *g = ctx;
    MlaRun *r = g->r;
    int64_t W = r->nope + r->rope;
    mla_q_cat(r, t / r->H, t % r->H, g->q + t * r->Lq * W);
    mla_up_kv(r, t / r->H, t % r->H, g->k + t * r->Lk * W, g->v + t * r->Lk * r->dv);
}

/* dq_nope, dq_rope of (b, h): the two parts of dQ. */
static void task_grad_q(void *ctx, int64_t t) {
    MlaGrad *g = ctx;
    MlaRun *r = g->r;
    int64_t b = t / r->H, h = t % r->H, W = r->nope + r->rope;
    const float *dq = g->dq + t * r->Lq * W;
    for (int64_t i = 0; i < r->Lq; i++) {
        memcpy((float *)g->dqn.p + b * g->dqn.st[0] + h * g->dqn.st[1] + i * g->dqn.st[2], dq + i * W,
               sizeof(float) * (size_t)r->nope);
        memcpy((float *)g->dqr.p + b * g->dqr.st[0] + h * g->dqr.st[1] + i * g->dqr.st[2], dq + i * W + r->nope,
               sizeof(float) * (size_t)r->rope);
    }
}

/* Rows [j0, j1) of batch row b: dc_kv = sum over h of dK_nope[b,h] . w_uk[h]^T + dV[b,h] . w_uv[h]^T
 * and dk_rope = sum over h of dK_rope[b,h], the heads in order. */
static void task_grad_latent(void *ctx, int64_t t) {
    MlaGrad *g = ctx;
    MlaRun *r = g->r;
    int64_t chunks = (r->Lk + MLA_ROWS_PER_TASK - 1) / MLA_ROWS_PER_TASK, W = r->nope + r->rope;
    int64_t b = t / chunks, j0 = t % chunks * MLA_ROWS_PER_TASK;
    int64_t n = r->Lk - j0 < MLA_ROWS_PER_TASK ? r->Lk - j0 : MLA_ROWS_PER_TASK;
    float *tmp = malloc(sizeof(float) * (size_t)(n * r->R));
    if (!tmp) {
        atomic_store(&g->nomem, 1);
        return;
    }
    float *dc = (float *)g->dckv.p + b * g->dckv.st[0] + j0 * g->dckv.st[1];
    float *dr = (float *)g->dkr.p + b * g->dkr.st[0] + j0 * g->dkr.st[1];
    for (int64_t j = 0; j < n; j++) {
        memset(dc + j * g->dckv.st[1], 0, sizeof(float) * (size_t)r->R);
        memset(dr + j * g->dkr.st[1], 0, sizeof(float) * (size_t)r->rope);
    }
    for (int64_t h = 0; h < r->H; h++) {
        const float *dk = g->dk + ((b * r->H + h) * r->Lk + j0) * W;
        const float *dv = g->dv + ((b * r->H + h) * r->Lk + j0) * r->dv;
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0)
                rt_sgemm_nt(n, r->R, r->nope, dk, W, (const float *)r->wuk.p + h * r->wuk.st[0], r->wuk.st[1], tmp, r->R);
            else
                rt_sgemm_nt(n, r->R, r->dv, dv, r->dv, (const float *)r->wuv.p + h * r->wuv.st[0], r->wuv.st[1], tmp, r->R);
            for (int64_t j = 0; j < n; j++)
                for (int64_t c = 0; c < r->R; c++) dc[j * g->dckv.st[1] + c] += tmp[j * r->R + c];
        }
        for (int64_t j = 0; j < n; j++)
            for (int64_t c = 0; c < r->rope; c++) dr[j * g->dkr.st[1] + c] += dk[j * W + r->nope + c];
    }
    free(tmp);
}

/* dw_uk[h] = sum over b of c_kv[b]^T . dK_nope[b,h], dw_uv[h] = sum over b of c_kv[b]^T . dV[b,h]. */
static void task_grad_w(void *ctx, int64_t h) {
    MlaGrad *g = ctx;
    MlaRun *r = g->r;
    int64_t W = r->nope + r->rope;
    float *wk = (float *)g->dwuk.p + h * g->dwuk.st[0], *wv = (float *)g->dwuv.p + h * g->dwuv.st[0];
    for (int64_t c = 0; c < r->R; c++) {
        memset(wk + c * g->dwuk.st[1], 0, sizeof(float) * (size_t)r->nope);
        memset(wv + c * g->dwuv.st[1], 0, sizeof(float) * (size_t)r->dv);
    }
    for (int64_t b = 0; b < r->B; b++) {
        const float *ckv = (const float *)r->ckv.p + b * r->ckv.st[0];
        rt_sgemm_tn_acc(r->R, r->nope, r->Lk, ckv, r->ckv.st[1], g->dk + (b * r->H + h) * r->Lk * W, W, wk,
                        g->dwuk.st[1]);
        rt_sgemm_tn_acc(r->R, r->dv, r->Lk, ckv, r->ckv.st[1], g->dv + (b * r->H + h) * r->Lk * r->dv, r->dv, wv,
                        g->dwuv.st[1]);
    }
}

static attn_status mla_grad_views(MlaGrad *g, const attn_mla_grad_call *gc, attn_error *err) {
    MlaRun *r = g->r;
    attn_status st;
    if ((st = mla_view("do", &gc->dout, 4, (int64_t[]){r->B, r->H, r->Lq, r->dv}, false, ATTN_F32, &g->dout, err)) ||
        (st = mla_view("dq_nope", &gc->dq_nope, 4, (int64_t[]){r->B, r->H, r->Lq, r->nope}, false, ATTN_F32, &g->dqn, err)) ||
        (st = mla_view("dq_rope", &gc->dq_rope, 4, (int64_t[]){r->B, r->H, r->Lq, r->rope}, false, ATTN_F32, &g->dqr, err)) ||
        (st = mla_view("dc_kv", &gc->dc_kv, 3, (int64_t[]){r->B, r->Lk, r->R}, false, ATTN_F32, &g->dckv, err)) ||
        (st = mla_view("dk_rope", &gc->dk_rope, 3, (int64_t[]){r->B, r->Lk, r->rope}, false, ATTN_F32, &g->dkr, err)) ||
        (st = mla_view("dw_uk", &gc->dw_uk, 3, (int64_t[]){r->H, r->R, r->nope}, false, ATTN_F32, &g->dwuk, err)) ||
        (st = mla_view("dw_uv", &gc->dw_uv, 3, (int64_t[]){r->H, r->R, r->dv}, false, ATTN_F32, &g->dwuv, err)))
        return st;
    /* a gradient shares no byte with another one or with what the backward reads */
    RtRange outs[6] = {{"dq_nope", g->dqn.lo, g->dqn.hi}, {"dq_rope", g->dqr.lo, g->dqr.hi},
                       {"dc_kv", g->dckv.lo, g->dckv.hi}, {"dk_rope", g->dkr.lo, g->dkr.hi},
                       {"dw_uk", g->dwuk.lo, g->dwuk.hi}, {"dw_uv", g->dwuv.lo, g->dwuv.hi}};
    RtRange ins[9] = {{"q_nope", r->qn.lo, r->qn.hi}, {"q_rope", r->qr.lo, r->qr.hi},
                      {"c_kv", r->ckv.lo, r->ckv.hi}, {"k_rope", r->kr.lo, r->kr.hi},
                      {"w_uk", r->wuk.lo, r->wuk.hi}, {"w_uv", r->wuv.lo, r->wuv.hi},
                      {"o", r->o.lo, r->o.hi},        {"lse", r->lse.lo, r->lse.hi},
                      {"do", g->dout.lo, g->dout.hi}};
    if ((st = rt_check_disjoint(outs, 6, ins, 9, err))) return st;
    for (int i = 1; i < 6; i++)
        if ((st = rt_check_disjoint(outs + i, 1, outs, i, err))) return st;
    return ATTN_OK;
}

attn_status attn_rt_launch_mla_backward(const attn_rt_mla_desc *desc, const attn_mla_call *call,
                                        const attn_mla_grad_call *grad, attn_rt_pool *pool, attn_error *err) {
    if (!desc || !call || !grad)
        return rt_error(err, ATTN_ERR_NULL, "launch_mla_backward: desc, call and grad are required");
    attn_status dst = rt_mla_check_dtypes(desc, err);
    if (dst != ATTN_OK) return dst;
    if (!mla_desc_ok(desc))
        return rt_error(err, ATTN_ERR_ARG, "launch_mla_backward: the variants disagree with the latent sizes (or none is given)");
    if (!desc->up)
        return rt_error(err, ATTN_ERR_ARG,
                        "the backward of an MLA block runs up-projected, and this kernel has no up-projected "
                        "variant (absorb = on): compile it with absorb = off or auto");
    if (!desc->up->grad_step)
        return rt_error(err, ATTN_ERR_ARG,
                        "this MLA kernel's up-projected variant has no backward (the backward is for compute = f32; "
                        "8-bit and bf16 compute are for inference)");
    MlaRun r;
    attn_status st = mla_validate(desc, call, &r, err);
    if (st != ATTN_OK) return st;
    MlaGrad g;
    memset(&g, 0, sizeof g);
    g.r = &r;
    if ((st = mla_grad_views(&g, grad, err))) return st;
    /* 16-bit storage: every tensor the backward reads as its exact f32 copy */
    MlaView *wv[7] = {&r.qn, &r.qr, &r.ckv, &r.kr, &r.wuk, &r.wuv, &r.o};
    bool wide_o = r.o.dt != ATTN_F32;
    int64_t nwide = 0;
    for (int i = 0; i < 7; i++) nwide += wv[i]->dt != ATTN_F32 ? mla_count(wv[i]) : 0;
    float *wide = nwide ? malloc(sizeof(float) * (size_t)nwide) : NULL;
    if (nwide && !wide)
        return rt_error(err, ATTN_ERR_NOMEM, "MLA backward: out of memory for %lld widened floats", (long long)nwide);
    for (int64_t i = 0, at = 0; i < 7; i++) {
        int64_t n = wv[i]->dt != ATTN_F32 ? mla_count(wv[i]) : 0;
        mla_widen(wv[i], wide + at);
        at += n;
    }
    int64_t W = r.nope + r.rope, BH = r.B * r.H;
    size_t nq = (size_t)(BH * r.Lq * W), nk = (size_t)(BH * r.Lk * W), nv = (size_t)(BH * r.Lk * r.dv);
    /* one allocation of at least a float each: the block's backward takes no NULL gradient */
    float *buf = malloc(sizeof(float) * (2 * (nq + nk + nv) + 6));
    if (!buf) {
        free(wide);
        return rt_error(err, ATTN_ERR_NOMEM, "MLA backward: out of memory for %zu scratch floats", 2 * (nq + nk + nv));
    }
    g.q = buf, g.k = g.q + nq + 1, g.v = g.k + nk + 1, g.dq = g.v + nv + 1, g.dk = g.dq + nq + 1,
    g.dv = g.dk + nk + 1;
    int threads = call->threads;
    attn_rt_pool *tmp = NULL;
    if (!pool && threads != 1) pool = tmp = attn_rt_pool_create(threads);
    rt_parallel_for_n(pool, threads, BH, task_grad_up, &g);
    attn_call inner = {
        .q = dense4(g.q, r.B, r.H, r.Lq, W),
        .k = dense4(g.k, r.B, r.H, r.Lk, W),
        .v = dense4(g.v, r.B, r.H, r.Lk, r.dv),
        .o = wide_o ? dense4(r.o.p, r.B, r.H, r.Lq, r.dv) : call->o,
        .lse = call->lse,
        .q_offset = call->q_offset,
        .q_offset_set = call->q_offset_set,
        .inputs = call->inputs,
        .ninputs = call->ninputs,
        .threads = threads,
    };
    attn_grad_call ig = {
        .dout = grad->dout,
        .dq = dense4(g.dq, r.B, r.H, r.Lq, W),
        .dk = dense4(g.dk, r.B, r.H, r.Lk, W),
        .dv = dense4(g.dv, r.B, r.H, r.Lk, r.dv),
        .dinputs = grad->dinputs,
        .ndinputs = grad->ndinputs,
    };
    st = attn_rt_launch_backward(desc->up, &inner, &ig, pool, err);
    if (st == ATTN_OK) {
        rt_parallel_for_n(pool, threads, BH, task_grad_q, &g);
        rt_parallel_for_n(pool, threads, r.B * ((r.Lk + MLA_ROWS_PER_TASK - 1) / MLA_ROWS_PER_TASK),
                          task_grad_latent, &g);
        rt_parallel_for_n(pool, threads, r.H, task_grad_w, &g);
        if (atomic_load(&g.nomem)) st = rt_error(err, ATTN_ERR_NOMEM, "MLA backward: out of memory");
    }
    if (tmp) attn_rt_pool_destroy(tmp);
    free(buf);
    free(wide);
    if (st == ATTN_OK) rt_ok(err);
    return st;
}
