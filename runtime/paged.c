/* paged.c — paged KV caches and ragged batches: the checks of a paged call, its tasks per
 * (sequence, query head or K/V group, query tile, key chunk), and the cache append.
 *
 * The kernel is the block's tile (or group) function, generated for pages: it reads key j
 * through the sequence's page-table row (attn_rt_args.pages), so a task is one call over its
 * keys [k_begin, k_end) however its pages lie, with no copy. A task visits only the keys
 * its rows may see (the block's bounds function, when it has one), so a sliding window reads
 * its last pages only. Long sequences with few query rows (decode) are split into key chunks
 * whose partial (o, lse) are merged through log-sum-exps, so a mix of long and short sequences
 * keeps every thread busy. */
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

#define PG_MAX_DIM ((int64_t)1 << 40)
#define PG_SPLIT_MIN_KEYS 256 /* fewer keys per chunk do not pay for the merge */
#define PG_SPLIT_MAX 64
/* What a grouped task's call over every K/V head leaves (pg_heads: a window's first page, the
 * kv tail, blocks the few-rows path cannot take, or all of it when the call refuses) runs head
 * by head in chunks: f32 keys visited for every K/V head before the next (see pg_chunk); narrower
 * K/V: as many bytes (16-bit: 64 keys, int8: 128); a multiple of the group entry's key blocks
 * (passes/schedule.c: as many bytes, up to 64 keys), which a chunk's calls then see whole. The
 * K/V heads of a key lie side by side in its page: the fewer keys a call, the closer together
 * a page's rows are read (GQA 32/8 d128 f32 P 16, 1 thread: 32 keys ~15% faster than 64; 128
 * slower) */
#define PG_CHUNK_KEYS 32

#define PG_SCRATCH_MAX ((int64_t)1 << 26) /* floats of partial outputs (256 MiB) */

/* The keys of a chunk: ck of them when they tile a page (a page of at least ck, a multiple of
 * it: so with the powers of two of specs), else whole pages covering ck. Calls of whole large
 * pages read each head's rows far apart in time: GQA 32/8 d128 f32 kv 65536, 1 thread, paged /
 * contiguous time was 1.47, 1.82 and 2.0 at pages of 64, 128 and 256 with a call a page. */
static int64_t pg_chunk(int64_t ck, int64_t P) { return P % ck == 0 ? ck : (ck + P - 1) / P * P; }

/* A float tensor: rank, sizes (want[d] >= 0 must match), strides and extent. */
static attn_status pg_tensor(RtView *v, const char *name, const attn_tensor *t, int ndim, const int64_t *want,
                             const char *const *dims, int64_t elem, attn_error *err) {
    if (t->ndim != ndim) return rt_error(err, ATTN_ERR_RANK, "%s: %d dims, expected %d", name, t->ndim, ndim);
    bool empty = false;
    for (int d = 0; d < ndim; d++) {
        if (t->shape[d] < 0)
            return rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d (%s) is %lld, negative", name, d, dims[d],
                            (long long)t->shape[d]);
        if (t->shape[d] > PG_MAX_DIM)
            return rt_error(err, ATTN_ERR_OVERFLOW, "%s: dim %d (%s) is %lld, more than 2^40", name, d, dims[d],
                            (long long)t->shape[d]);
        if (want[d] >= 0 && t->shape[d] != want[d])
            return rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d (%s) is %lld, expected %lld", name, d, dims[d],
                            (long long)t->shape[d], (long long)want[d]);
        empty |= t->shape[d] == 0;
    }
    if (!t->data && !empty) return rt_error(err, ATTN_ERR_NULL, "%s: data is NULL", name);
    return rt_view(v, name, t, elem, err);
}

/* An int32 index tensor: rank, sizes, contiguous. */
static attn_status pg_index(RtView *v, const char *name, const attn_tensor *t, int ndim, const int64_t *want,
                            const char *const *dims, attn_error *err) {
    attn_status s = pg_tensor(v, name, t, ndim, want, dims, 4, err);
    if (s || v->hi == 0) return s; /* no element (an empty batch): any strides */
    int64_t st = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && v->stride[d] != st)
            return rt_error(err, ATTN_ERR_STRIDE, "%s: stride %d is %lld, index tensors must be contiguous (row-major)",
                            name, d, (long long)v->stride[d]);
        st *= t->shape[d];
    }
    return ATTN_OK;
}

/* The ragged batch's index tensors and their values: q_starts (named `sname`), page_table and
 * kv_lens against total_q rows, num_pages pages of P keys. Fills the views. */
static attn_status pg_check_batch(const char *sname, const attn_tensor *starts, const attn_tensor *table,
                                  const attn_tensor *lens, int64_t total_q, int64_t num_pages, int64_t P,
                                  RtView *vs, RtView *vt, RtView *vl, attn_error *err) {
    static const char *const ld[] = {"batch"}, *const sd[] = {"batch + 1"}, *const td[] = {"batch", "max_pages"};
    attn_status s;
    if ((s = pg_index(vl, "kv_lens", lens, 1, (int64_t[]){-1}, ld, err))) return s;
    int64_t B = lens->shape[0];
    if ((s = pg_index(vs, sname, starts, 1, (int64_t[]){B + 1}, sd, err))) return s;
    if ((s = pg_index(vt, "page_table", table, 2, (int64_t[]){B, -1}, td, err))) return s;
    int64_t MP = table->shape[1], max_keys;
    if (__builtin_mul_overflow(MP, P, &max_keys)) max_keys = INT64_MAX;
    const int32_t *st = starts->data, *tb = table->data, *ln = lens->data;
    if (st[0] != 0)
        return rt_error(err, ATTN_ERR_SHAPE, "%s[0] is %d, expected 0 (the first sequence starts at row 0)", sname, st[0]);
    for (int64_t b = 0; b < B; b++) {
        int64_t n = (int64_t)st[b + 1] - st[b], L = ln[b];
        if (n < 0)
            return rt_error(err, ATTN_ERR_SHAPE, "%s decreases at sequence %lld (%d, then %d)", sname, (long long)b,
                            st[b], st[b + 1]);
        if (L < 0) return rt_error(err, ATTN_ERR_SHAPE, "kv_lens[%lld] is %lld, negative", (long long)b, (long long)L);
        if (L > max_keys)
            return rt_error(err, ATTN_ERR_SHAPE,
                            "kv_lens[%lld] is %lld, more than the page table holds (max_pages %lld x page size %lld)",
                            (long long)b, (long long)L, (long long)MP, (long long)P);
        if (n > L)
            return rt_error(err, ATTN_ERR_SHAPE, "sequence %lld has %lld query rows but kv_lens[%lld] is %lld keys",
                            (long long)b, (long long)n, (long long)b, (long long)L);
        for (int64_t j = 0; j < (L + P - 1) / P; j++) {
            int32_t pg = tb[b * MP + j];
            if (pg < 0 || pg >= num_pages)
                return rt_error(err, ATTN_ERR_INDEX, "page_table[%lld, %lld] is %d, outside [0, num_pages) = [0, %lld)",
                                (long long)b, (long long)j, pg, (long long)num_pages);
        }
    }
    if (st[B] != total_q)
        return rt_error(err, ATTN_ERR_SHAPE, "%s[batch] is %d, expected the number of rows (%lld)", sname, st[B],
                        (long long)total_q);
    return ATTN_OK;
}

// the call

typedef struct PgTask {
    int64_t b, u0, u1, q0, q1; /* sequence, units [u0, u1) (query heads, or K/V heads: grouped), rows [q0, q1) */
    int64_t k0, k1;       /* keys [k0, k1); k0 >= k1: none visible */
    int64_t part;         /* -1: writes o; else its partial output (f32) at part_o + part, gh * rows * DV */
    int64_t lse_off;      /* its lse rows in lse_buf (gh x rows) */
    double cost;
    int64_t order;        /* creation order (ties) */
} PgTask;

typedef struct PgGroup {  /* a split task's chunks, merged after */
    int64_t b, u0, u1, q0, q1, first_task, nparts;
} PgGroup;

typedef struct PgRun {
    const attn_rt_desc *const *descs;
    int n;
    attn_rt_args base;    /* inputs, batch, sizes of nothing else */
    const attn_paged_call *c;
    RtView vq, vk, vv, vo, vl;
    const int32_t *starts, *table, *lens;
    int64_t MP, P, H, KH, DQ, DV, G; /* G: heads a grouped unit computes (1: none) */
    int64_t qel, kvel;    /* bytes of a q and o element (the kernel's dtype), of a K/V element */
    attn_dtype dtype;     /* of q and o: o is written by the merge unless f32 */
    int unit_heads[4096];  /* grouped: the G query heads of K/V head u at [u G, u G + G) */
    PgTask *tasks;
    int64_t ntasks;
    PgGroup *groups;
    int64_t ngroups;
    float *part_o;        /* split tasks' partial o, [gh][rows][DV] each */
    float *lse_buf;       /* every task's lse rows */
    bool all;             /* grouped tasks call the group entry once for every K/V head */
    atomic_int failed;
} PgRun;

static const void *pg_off(const void *base, int64_t elems) { /* may point outside: rebased */
    return (const void *)((uintptr_t)base + (uintptr_t)(elems * 4));
}

static const void *pg_off_el(const void *base, int64_t elems, int64_t el) {
    return (const void *)((uintptr_t)base + (uintptr_t)(elems * el));
}

/* The per-sequence arguments of sequence b. */
static void pg_seq_args(const PgRun *r, int64_t b, attn_rt_args *a) {
    *a = r->base;
    int64_t s0 = r->starts[b], n = r->starts[b + 1] - s0, L = r->lens[b];
    a->q_len = n;
    a->kv_len = L;
    a->q_offset = L - n;
    a->q = pg_off_el(r->c->q.data, s0 * r->vq.stride[0], r->qel);
    a->q_stride[0] = 0;
    a->q_stride[1] = r->vq.stride[1];
    a->q_stride[2] = r->vq.stride[0];
    a->k_stride[0] = a->v_stride[0] = 0;
    a->k_stride[1] = r->vk.stride[2];
    a->k_stride[2] = r->vk.stride[1];
    a->v_stride[1] = r->vv.stride[2];
    a->v_stride[2] = r->vv.stride[1];
}

static bool pg_grouped(const PgRun *r, int64_t b) {
    return r->G > 1 && r->starts[b + 1] - r->starts[b] < r->descs[0]->block_q;
}

/* The g-th query head of unit u. */
static int64_t pg_head(const PgRun *r, bool grouped, int64_t u, int64_t g) {
    return grouped ? r->unit_heads[u * r->G + g] : u;
}

/* Floats of a task's lse rows (times v_dim: its partial o). */
static int64_t pg_span(const PgRun *r, int64_t b, int64_t rows) { return (pg_grouped(r, b) ? r->H : 1) * rows; }

/* Task tk's keys [k0, k1) unit by unit (resume: from the o and lse written before): the K/V
 * heads of a sequence's page lie side by side, so a task over several (grouped decode) visits
 * its keys a chunk at a time, every head's part of it, and the pages stream through in order;
 * each head's calls chained through resume. False when a call failed (r->failed set). */
static bool pg_heads(PgRun *r, const PgTask *tk, attn_rt_args *a, int64_t k0, int64_t k1, bool resume) {
    bool grouped = pg_grouped(r, tk->b);
    int64_t ck = PG_CHUNK_KEYS * 4 / r->kvel;
    int64_t chunk = tk->u1 - tk->u0 > 1 ? pg_chunk(ck, r->P) : 0;
    for (int64_t c0 = k0; c0 < k1;) {
        /* chunks end on pages; one unit's keys in one call, but for a first one ending on a
         * page (a window's start within a page): the decode of a block reads its pages whole
         * when the block starts on a page (or within one it does not leave), else packs it */
        int64_t c1 = chunk ? (c0 / chunk + 1) * chunk : grouped && c0 % r->P ? (c0 / r->P + 1) * r->P : k1;
        if (c1 > k1) c1 = k1;
        a->k_begin = c0;
        a->k_end = c1;
        for (int64_t u = tk->u0; u < tk->u1; u++)
            for (int d = 0; d < r->n; d++) {
                attn_rt_tile_fn fn = grouped ? r->descs[d]->group : r->descs[d]->tile;
                a->resume = resume || c0 > k0 || d > 0; /* later chunks and key domains continue from (o, lse) */
                if (fn(a, tk->b, u, tk->q0, tk->q1) != 0) {
                    atomic_store_explicit(&r->failed, 1, memory_order_relaxed);
                    return false;
                }
            }
        c0 = c1;
    }
    return true;
}

static void pg_task_run(void *ctx, int64_t t) {
    PgRun *r = ctx;
    if (atomic_load_explicit(&r->failed, memory_order_relaxed)) return;
    const PgTask *tk = &r->tasks[t];
    int64_t b = tk->b, rows = tk->q1 - tk->q0;
    bool grouped = pg_grouped(r, b);
    /* buffers hold grouped tasks' rows by absolute head ([H][rows]), the others' as [1][rows] */
    int64_t gh = grouped ? r->G : 1, h0 = grouped ? 0 : tk->u0;
    attn_rt_args a;
    pg_seq_args(r, b, &a);
    float *lse = r->lse_buf + tk->lse_off;
    a.lse = (float *)pg_off(lse, -(h0 * rows + tk->q0));
    a.lse_stride[0] = 0;
    a.lse_stride[1] = rows;
    float *po = tk->part >= 0 ? r->part_o + tk->part : NULL;
    if (po) {
        a.o = (void *)pg_off(po, -(h0 * rows + tk->q0) * r->DV);
        a.o_stride[0] = 0;
        a.o_stride[1] = rows * r->DV;
        a.o_stride[2] = r->DV;
    } else {
        a.o = (void *)pg_off(r->c->o.data, r->starts[b] * r->vo.stride[0]);
        a.o_stride[0] = 0;
        a.o_stride[1] = r->vo.stride[1];
        a.o_stride[2] = r->vo.stride[0];
    }
    /* the kernel reads keys [k0, k1) through the sequence's page-table row */
    a.pages = r->table + b * r->MP;
    a.k = r->c->k_pages.data;
    a.v = r->c->v_pages.data;
    a.k_page_stride = r->vk.stride[0];
    a.v_page_stride = r->vv.stride[0];
    bool first = true, resume = false;
    int64_t from = tk->k0;
    if (grouped && r->all && tk->u0 == 0 && tk->u1 == r->KH && tk->k0 < tk->k1) {
        /* every K/V head in one call (its blocks read each page's rows of all heads together),
         * from the first page boundary: a window's first keys within a page head by head */
        int64_t s0 = tk->k0 % r->P ? (tk->k0 / r->P + 1) * r->P : tk->k0;
        if (s0 > tk->k1) s0 = tk->k1;
        if (s0 > tk->k0 && !pg_heads(r, tk, &a, tk->k0, s0, false)) return;
        first = s0 == tk->k0, resume = s0 > tk->k0, from = s0;
        if (s0 < tk->k1) {
            a.k_begin = s0;
            a.k_end = tk->k1;
            a.resume = resume;
            bool wrote;
            if (!rt_group_all_rest(r->descs[0]->group(&a, b, -1, tk->q0, tk->q1), s0, tk->k1, &from, &wrote)) {
                atomic_store_explicit(&r->failed, 1, memory_order_relaxed);
                return;
            }
            if (wrote) first = false, resume = true; /* done, or stopped at a block for the per-head calls */
        }
    }
    if (from < tk->k1) {
        if (!pg_heads(r, tk, &a, from, tk->k1, resume)) return;
        first = false;
    }
    if (first) { /* no key visible: o = 0, lse = -inf */
        for (int64_t u = tk->u0; u < tk->u1; u++)
        for (int64_t g = 0; g < gh; g++)
            for (int64_t i = 0; i < rows; i++) {
                int64_t h = pg_head(r, grouped, u, g);
                float *o = po ? po + ((h - h0) * rows + i) * r->DV
                              : (float *)a.o + h * a.o_stride[1] + (tk->q0 + i) * a.o_stride[2];
                memset(o, 0, sizeof(float) * (size_t)r->DV);
                lse[(h - h0) * rows + i] = -INFINITY;
            }
    }
    if (!po && r->c->lse.data) {
        float *out = r->c->lse.data;
        for (int64_t u = tk->u0; u < tk->u1; u++)
        for (int64_t g = 0; g < gh; g++)
            for (int64_t i = 0; i < rows; i++) {
                int64_t h = pg_head(r, grouped, u, g);
                out[(r->starts[b] + tk->q0 + i) * r->vl.stride[0] + h * r->vl.stride[1]] = lse[(h - h0) * rows + i];
            }
    }
}

/* Merges a split task's chunks into o (and lse). */
static void pg_merge_run(void *ctx, int64_t gi) {
    PgRun *r = ctx;
    const PgGroup *g = &r->groups[gi];
    int64_t b = g->b, rows = g->q1 - g->q0;
    bool grouped = pg_grouped(r, b);
    int64_t gh = grouped ? r->G : 1, h0 = grouped ? 0 : g->u0, DV = r->DV;
    for (int64_t u = g->u0; u < g->u1; u++)
    for (int64_t y = 0; y < gh; y++)
        for (int64_t i = 0; i < rows; i++) {
            int64_t row = r->starts[b] + g->q0 + i, h = pg_head(r, grouped, u, y), x = h - h0;
            float m = -INFINITY;
            bool nan = false;
            for (int64_t s = 0; s < g->nparts; s++) {
                float l = r->lse_buf[r->tasks[g->first_task + s].lse_off + x * rows + i];
                m = fmaxf(m, l);
                nan |= isnan(l);
            }
            float w[PG_SPLIT_MAX];
            const float *os[PG_SPLIT_MAX];
            float wsum = nan ? NAN : 0;
            int np = 0;
            for (int64_t s = 0; s < g->nparts && m > -INFINITY && !nan; s++) {
                const PgTask *tk = &r->tasks[g->first_task + s];
                float l = r->lse_buf[tk->lse_off + x * rows + i];
                if (l == -INFINITY) continue;
                w[np] = expf(l - m);
                wsum += w[np];
                os[np++] = r->part_o + tk->part + (x * rows + i) * DV;
            }
            float inv = wsum > 0 ? 1.0f / wsum : nan ? NAN : 0.0f;
            char *o = (char *)r->c->o.data + (row * r->vo.stride[0] + h * r->vo.stride[1]) * r->qel;
            for (int64_t d = 0; d < DV; d++) {
                float acc = nan ? NAN : 0;
                for (int s = 0; s < np; s++) acc += w[s] * os[s][d];
                acc *= inv;
                if (r->dtype == ATTN_F32) ((float *)o)[d] = acc;
                else ((uint16_t *)o)[d] = r->dtype == ATTN_BF16 ? rt_f32_to_bf16(acc) : rt_f32_to_f16(acc);
            }
            if (r->c->lse.data)
                ((float *)r->c->lse.data)[row * r->vl.stride[0] + h * r->vl.stride[1]] =
                    wsum > 0 ? m + logf(wsum) : nan ? NAN : -INFINITY;
        }
}

static int pg_cost_cmp(const void *x, const void *y) {
    const PgTask *a = x, *b = y;
    if (a->cost != b->cost) return a->cost > b->cost ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* The keys rows [q0, q1) of unit u of sequence b may see, [*lo, *hi) (within [0, L)). */
static void pg_bounds(const PgRun *r, const attn_rt_args *a, int64_t b, bool grouped, int64_t u0, int64_t u1,
                      int64_t gh, int64_t q0, int64_t q1, int64_t *lo, int64_t *hi) {
    int64_t L = a->kv_len;
    *lo = 0;
    *hi = L;
    for (int d = 0; d < r->n; d++)
        if (!r->descs[d]->grad_bounds) return;
    int64_t l = L, h = 0;
    for (int64_t u = u0; u < u1; u++)
    for (int64_t x = 0; x < gh; x++)
        for (int64_t i = q0; i < q1; i++)
            for (int d = 0; d < r->n; d++) {
                int64_t kb[2];
                if (r->descs[d]->grad_bounds(a, b, pg_head(r, grouped, u, x), a->q_offset + i, kb))
                    return; /* the kernel reports it */
                if (kb[0] < 0) kb[0] = 0;
                if (kb[1] > L - 1) kb[1] = L - 1;
                if (kb[0] > kb[1]) continue;
                l = kb[0] < l ? kb[0] : l;
                h = kb[1] + 1 > h ? kb[1] + 1 : h;
            }
    *lo = l < h ? l : 0;
    *hi = l < h ? h : 0;
}

static attn_status pg_check_descs(const attn_rt_desc *const *descs, int n, attn_error *err) {
    if (!descs) return rt_error(err, ATTN_ERR_NULL, "paged launch: descs is NULL");
    if (n < 1 || n > 64) return rt_error(err, ATTN_ERR_ARG, "paged launch: %d descriptors (1..64)", n);
    for (int i = 0; i < n; i++) {
        const attn_rt_desc *d = descs[i];
        if (!d) return rt_error(err, ATTN_ERR_NULL, "paged launch: descriptor %d is NULL", i);
        attn_status s = rt_check_desc(d, err);
        if (s) return s;
        if (d->page_size <= 0)
            return rt_error(err, ATTN_ERR_ARG, "'%s' is not a paged kernel (no kv_cache = paged(P)): run it with attn_run "
                            "or attn_rt_launch", d->name ? d->name : "?");
        if (!d->tile) return rt_error(err, ATTN_ERR_NULL, "descriptor '%s' has no tile function", d->name ? d->name : "?");
        if (d->heads != descs[0]->heads || d->kv_heads != descs[0]->kv_heads || d->qk_dim != descs[0]->qk_dim ||
            d->v_dim != descs[0]->v_dim || d->page_size != descs[0]->page_size || d->ninputs != descs[0]->ninputs ||
            d->dtype != descs[0]->dtype || rt_kv_dtype(d) != rt_kv_dtype(descs[0]))
            return rt_error(err, ATTN_ERR_ARG, "paged launch: descriptor %d differs from descriptor 0", i);
        for (int j = 0; j < d->ninputs; j++)
            for (int k = 0; k < d->inputs[j].rank; k++)
                if (d->inputs[j].dim_kind[k] == ATTN_DIM_Q_LEN || d->inputs[j].dim_kind[k] == ATTN_DIM_KV_LEN)
                    return rt_error(err, ATTN_ERR_ARG, "'%s': input '%s' is sized by a sequence length, which a "
                                    "ragged batch does not have", d->name ? d->name : "?", d->inputs[j].name);
    }
    return ATTN_OK;
}

attn_status attn_rt_launch_paged(const attn_rt_desc *const *descs, int n, const attn_paged_call *c,
                                 attn_rt_pool *pool, attn_error *err) {
    rt_ok(err);
    attn_status s = pg_check_descs(descs, n, err);
    if (s) return s;
    if (!c) return rt_error(err, ATTN_ERR_NULL, "the call is NULL");
    if (c->threads < 0) return rt_error(err, ATTN_ERR_ARG, "threads is %d, expected >= 0 (0: all cores)", c->threads);
    if (c->ninputs < 0) return rt_error(err, ATTN_ERR_ARG, "ninputs is %d, negative", c->ninputs);
    if (c->ninputs > 0 && !c->inputs) return rt_error(err, ATTN_ERR_NULL, "inputs is NULL but ninputs is %d", c->ninputs);
    const attn_rt_desc *d0 = descs[0];
    PgRun r;
    memset(&r, 0, sizeof r);
    r.descs = descs;
    r.n = n;
    r.c = c;
    r.H = d0->heads, r.KH = d0->kv_heads, r.DQ = d0->qk_dim, r.DV = d0->v_dim, r.P = d0->page_size;
    r.dtype = d0->dtype;
    r.qel = rt_dtype_size(d0->dtype);
    int64_t kvel = r.kvel = rt_dtype_size(rt_kv_dtype(d0));
    static const char *const qd[] = {"total_q", "heads", "qk_dim"}, *const od[] = {"total_q", "heads", "v_dim"},
                             *const ld[] = {"total_q", "heads"},
                             *const kd[] = {"num_pages", "page_size", "kv_heads", "qk_dim"},
                             *const vd[] = {"num_pages", "page_size", "kv_heads", "v_dim"};
    if ((s = pg_tensor(&r.vq, "q", &c->q, 3, (int64_t[]){-1, r.H, r.DQ}, qd, r.qel, err))) return s;
    int64_t T = c->q.shape[0];
    if ((s = pg_tensor(&r.vk, "k_pages", &c->k_pages, 4, (int64_t[]){-1, r.P, r.KH, r.DQ}, kd, kvel, err))) return s;
    int64_t NP = c->k_pages.shape[0];
    if ((s = pg_tensor(&r.vv, "v_pages", &c->v_pages, 4, (int64_t[]){NP, r.P, r.KH, r.DV}, vd, kvel, err))) return s;
    RtView vs, vt, vn;
    if ((s = pg_check_batch("q_starts", &c->q_starts, &c->page_table, &c->kv_lens, T, NP, r.P, &vs, &vt, &vn, err)))
        return s;
    if ((s = pg_tensor(&r.vo, "o", &c->o, 3, (int64_t[]){T, r.H, r.DV}, od, r.qel, err))) return s;
    if ((s = rt_check_no_overlap(&r.vo, err))) return s;
    bool has_lse = c->lse.data != NULL;
    if (has_lse) {
        if ((s = pg_tensor(&r.vl, "lse", &c->lse, 2, (int64_t[]){T, r.H}, ld, 4, err))) return s;
        if ((s = rt_check_no_overlap(&r.vl, err))) return s;
        if (rt_ranges_overlap(&r.vo, &r.vl)) return rt_error(err, ATTN_ERR_STRIDE, "o and lse overlap in memory");
    }
    {
        RtRange outs[2] = {rt_view_range(&r.vo), has_lse ? rt_view_range(&r.vl) : (RtRange){0}};
        RtRange ins[6 + ATTN_MAX_INPUTS] = {rt_view_range(&r.vq), rt_view_range(&r.vk), rt_view_range(&r.vv),
                                            rt_view_range(&vs), rt_view_range(&vt), rt_view_range(&vn)};
        int nin = 6 + rt_input_ranges(c->inputs, c->ninputs, ins + 6);
        if ((s = rt_check_disjoint(outs, has_lse ? 2 : 1, ins, nin, err))) return s;
    }
    int64_t B = c->kv_lens.shape[0];
    memset(&r.base, 0, sizeof r.base);
    r.base.batch = B;
    {
        attn_call ic;
        memset(&ic, 0, sizeof ic);
        ic.inputs = c->inputs;
        ic.ninputs = c->ninputs;
        if ((s = rt_check_inputs(d0, &ic, &r.base, NP, err))) return s;
    }
    if (T == 0) return ATTN_OK;
    r.starts = c->q_starts.data;
    r.table = c->page_table.data;
    r.lens = c->kv_lens.data;
    r.MP = c->page_table.shape[1];
    r.G = 1;
    /* grouped decode needs to know which query heads a group computes: the head map */
    if (d0->group && d0->group_size > 1 && d0->heads == (int64_t)d0->group_size * d0->kv_heads && d0->grad_head_kv &&
        d0->heads <= (int)(sizeof r.unit_heads / sizeof r.unit_heads[0])) {
        r.G = d0->group_size;
        for (int i = 1; i < n; i++)
            if (!descs[i]->group || descs[i]->group_size != d0->group_size) r.G = 1;
        int fill[4096] = {0};
        for (int64_t h = 0; h < r.H && r.G > 1; h++) {
            int u = d0->grad_head_kv[h];
            if (u < 0 || u >= r.KH || fill[u] >= r.G) {
                r.G = 1;
                break;
            }
            r.unit_heads[u * r.G + fill[u]++] = (int)h;
        }
    }
    r.all = n == 1 && r.G > 1 && d0->group_all;
    int threads = c->threads > 0 ? c->threads : pool ? attn_rt_pool_threads(pool) : attn_rt_cpu_count();
    if (threads < 1) threads = 1;
    int64_t stack = 0;
    for (int i = 0; i < n; i++) stack = descs[i]->stack > stack ? descs[i]->stack : stack;

    /* the tasks: per sequence, unit and query tile, the keys its rows may see */
    int64_t cap = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t nb = r.starts[b + 1] - r.starts[b];
        if (nb == 0) continue;
        bool grouped = pg_grouped(&r, b);
        int64_t bq = grouped ? (d0->block_q / r.G > 1 ? d0->block_q / r.G : 1) : d0->block_q;
        cap += (grouped ? r.KH : r.H) * ((nb + bq - 1) / bq);
    }
    PgTask *tasks = malloc(sizeof *tasks * (size_t)(cap ? cap : 1));
    if (!tasks) return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the paged call's tasks");
    int64_t nt = 0, lse_total = 0;
    double work = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t nb = r.starts[b + 1] - r.starts[b];
        if (nb == 0) continue;
        bool grouped = pg_grouped(&r, b);
        int64_t gh = grouped ? r.G : 1, units = grouped ? r.KH : r.H;
        int64_t bq = grouped ? (d0->block_q / r.G > 1 ? d0->block_q / r.G : 1) : d0->block_q;
        attn_rt_args a;
        pg_seq_args(&r, b, &a);
        /* grouped (few rows): one task covers every K/V head, whose rows share the pages */
        for (int64_t u = 0; u < (grouped ? 1 : units); u++)
            for (int64_t q0 = 0; q0 < nb; q0 += bq) {
                PgTask *tk = &tasks[nt];
                tk->b = b, tk->u0 = u, tk->u1 = grouped ? units : u + 1;
                tk->q0 = q0, tk->q1 = q0 + bq < nb ? q0 + bq : nb;
                pg_bounds(&r, &a, b, grouped, tk->u0, tk->u1, gh, tk->q0, tk->q1, &tk->k0, &tk->k1);
                tk->part = -1;
                tk->cost = (double)(tk->q1 - tk->q0) * (double)(gh * (tk->u1 - tk->u0)) * (double)(tk->k1 - tk->k0 + 16);
                tk->order = nt;
                work += tk->cost;
                lse_total += pg_span(&r, b, tk->q1 - tk->q0);
                nt++;
            }
    }

    /* split the heavy tasks with few rows (decode) into key chunks of whole pages */
    int64_t ngroups = 0, nparts = 0, part_floats = 0;
    double target = work / (4.0 * threads);
    int64_t *chunks = calloc((size_t)(nt ? nt : 1), sizeof *chunks);
    if (!chunks) {
        free(tasks);
        return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the paged call's tasks");
    }
    for (int64_t t = 0; threads > 1 && t < nt; t++) {
        const PgTask *tk = &tasks[t];
        int64_t keys = tk->k1 - tk->k0, rows = tk->q1 - tk->q0;
        if (tk->cost <= target || keys < 2 * PG_SPLIT_MIN_KEYS || rows > 16) continue;
        int64_t m = (int64_t)ceil(tk->cost / target);
        if (m > keys / PG_SPLIT_MIN_KEYS) m = keys / PG_SPLIT_MIN_KEYS;
        if (m > PG_SPLIT_MAX) m = PG_SPLIT_MAX;
        if (m < 2) continue;
        int64_t per = (keys + m - 1) / m;
        per = (per + r.P - 1) / r.P * r.P; /* whole pages */
        m = (keys + per - 1) / per;
        if (m < 2) continue;
        int64_t span = pg_span(&r, tk->b, rows) * r.DV;
        if (part_floats + m * span > PG_SCRATCH_MAX) break;
        chunks[t] = m;
        nparts += m;
        ngroups++;
        part_floats += m * span;
    }
    /* 16-bit q and o: every task writes f32 rows (as a split's chunks do) that the merge
     * converts, so a grouped task's chunks and key domains resume from f32 */
    for (int64_t t = 0; r.dtype != ATTN_F32 && t < nt; t++)
        if (!chunks[t]) {
            chunks[t] = 1;
            nparts++;
            ngroups++;
            part_floats += pg_span(&r, tasks[t].b, tasks[t].q1 - tasks[t].q0) * r.DV;
        }
    if (ngroups) {
        PgTask *more = realloc(tasks, sizeof *tasks * (size_t)(nt + nparts));
        PgGroup *groups = malloc(sizeof *groups * (size_t)ngroups);
        float *po = malloc(sizeof(float) * (size_t)(part_floats ? part_floats : 1));
        if (!more || !groups || !po) {
            free(more ? more : tasks);
            free(groups);
            free(po);
            free(chunks);
            return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the paged call's key splits");
        }
        tasks = more;
        r.groups = groups;
        r.part_o = po;
        /* a split task becomes its chunks, side by side at the end; the first keeps its slot */
        int64_t end = nt, gi = 0, part = 0;
        for (int64_t t = 0; t < nt; t++) {
            if (!chunks[t]) continue;
            PgTask orig = tasks[t];
            int64_t m = chunks[t], keys = orig.k1 - orig.k0, per = ((keys + m - 1) / m + r.P - 1) / r.P * r.P;
            int64_t gh = pg_grouped(&r, orig.b) ? r.G : 1, rows = orig.q1 - orig.q0;
            tasks[end] = orig; /* the chunks, contiguous from `end` */
            PgGroup *g = &groups[gi++];
            *g = (PgGroup){orig.b, orig.u0, orig.u1, orig.q0, orig.q1, end, m};
            for (int64_t s2 = 0; s2 < m; s2++) {
                PgTask *tk = &tasks[end + s2];
                *tk = orig;
                /* chunk boundaries on page boundaries of the sequence */
                int64_t a0 = orig.k0 / r.P * r.P;
                tk->k0 = s2 == 0 ? orig.k0 : a0 + s2 * per;
                tk->k1 = s2 == m - 1 ? orig.k1 : a0 + (s2 + 1) * per;
                if (tk->k1 > orig.k1) tk->k1 = orig.k1;
                if (tk->k0 > tk->k1) tk->k0 = tk->k1;
                tk->part = part;
                part += pg_span(&r, orig.b, rows) * r.DV;
                tk->cost = (double)rows * (double)(gh * (orig.u1 - orig.u0)) * (double)(tk->k1 - tk->k0 + 16);
                tk->order = orig.order;
                if (s2 > 0) lse_total += pg_span(&r, orig.b, rows);
            }
            tasks[t].cost = -1; /* dropped below */
            end += m;
        }
        /* drop the originals (cost -1): the chunks replace them */
        int64_t w = 0;
        for (int64_t t = 0; t < end; t++) {
            if (t < nt && chunks[t]) continue;
            tasks[w++] = tasks[t];
        }
        /* the groups' first_task indices moved by the dropped originals */
        for (int64_t i = 0; i < ngroups; i++) groups[i].first_task -= ngroups;
        nt = w;
        r.ngroups = ngroups;
    }
    free(chunks);
    /* lse rows of every task */
    r.lse_buf = malloc(sizeof(float) * (size_t)(lse_total ? lse_total : 1));
    if (!r.lse_buf) {
        free(tasks);
        free(r.groups);
        free(r.part_o);
        return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the paged call's log-sum-exps");
    }
    {
        int64_t off = 0;
        for (int64_t t = 0; t < nt; t++) {
            tasks[t].lse_off = off;
            off += pg_span(&r, tasks[t].b, tasks[t].q1 - tasks[t].q0);
        }
    }
    /* heavy tasks first; the merge reads chunks through the groups, so sort a copy of indices */
    int64_t *order = malloc(sizeof *order * (size_t)(nt ? nt : 1));
    PgTask *sorted = malloc(sizeof *sorted * (size_t)(nt ? nt : 1));
    if (!order || !sorted) {
        free(order);
        free(sorted);
        free(tasks);
        free(r.groups);
        free(r.part_o);
        free(r.lse_buf);
        return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the paged call's tasks");
    }
    memcpy(sorted, tasks, sizeof *sorted * (size_t)nt);
    qsort(sorted, (size_t)nt, sizeof *sorted, pg_cost_cmp);
    free(order);
    /* the groups point into `tasks` (unsorted), the run into `sorted`: both carry lse_off and part */
    r.tasks = sorted;
    r.ntasks = nt;
    atomic_init(&r.failed, 0);
    s = rt_launch_tasks(pool, threads, nt, pg_task_run, &r, (size_t)stack, err);
    if (s == ATTN_OK && !atomic_load(&r.failed) && r.ngroups) {
        r.tasks = tasks;
        s = rt_launch_tasks(pool, threads, r.ngroups, pg_merge_run, &r, 0, err);
    }
    free(sorted);
    free(tasks);
    free(r.groups);
    free(r.part_o);
    free(r.lse_buf);
    if (s) return s;
    if (atomic_load(&r.failed)) return rt_index_error(d0, err);
    return ATTN_OK;
}

// the cache append

static int pg_cmp_i64(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

/* int8 pages: one row of n f32 values quantized into dst (scale max|x| / 127, 0 for a zero row). */
static float pg_quantize(const float *x, int64_t n, int8_t *dst) {
    float mx = 0;
    for (int64_t d = 0; d < n; d++) mx = fmaxf(mx, fabsf(x[d]));
    float scale = mx / 127.0f, inv = mx > 0 ? 127.0f / mx : 0.0f;
    for (int64_t d = 0; d < n; d++) {
        float v = nearbyintf(x[d] * inv);
        dst[d] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return scale;
}

/* int8 pages: new row of n elements at element offset off of a nt tensor as f32, the data itself
 * (f32) or its exact widening into tmp (f16, bf16). */
static const float *pg_new_row(const void *p, attn_dtype nt, int64_t off, int64_t n, float *tmp) {
    if (nt == ATTN_F32) return (const float *)p + off;
    rt_widen_row(tmp, p, off, n, nt);
    return tmp;
}

attn_status attn_rt_paged_append(const attn_paged_append *c, attn_error *err) {
    rt_ok(err);
    if (!c) return rt_error(err, ATTN_ERR_NULL, "the append call is NULL");
    if (c->dtype != ATTN_F32 && c->dtype != ATTN_F16 && c->dtype != ATTN_BF16 && c->dtype != ATTN_I8)
        return rt_error(err, ATTN_ERR_DTYPE, "append: dtype %d, expected f32, f16, bf16 or int8", (int)c->dtype);
    bool i8 = c->dtype == ATTN_I8;
    /* new rows: the pages' type, except for int8 pages (f32, f16 or bf16 rows, quantized) */
    attn_dtype nt = c->new_dtype;
    if (nt != ATTN_F32 && nt != ATTN_F16 && nt != ATTN_BF16 && nt != ATTN_I32 && nt != ATTN_I8)
        return rt_error(err, ATTN_ERR_DTYPE, "append: new_dtype %d is not a type (expected 0 (f32), f16 or bf16)",
                        (int)nt);
    if (i8 && nt != ATTN_F32 && nt != ATTN_F16 && nt != ATTN_BF16)
        return rt_error(err, ATTN_ERR_DTYPE, "append: new_dtype %s for int8 pages, expected f32 (0), f16 or bf16",
                        rt_dtype_name(nt));
    if (!i8 && nt != ATTN_F32 && nt != c->dtype)
        return rt_error(err, ATTN_ERR_DTYPE, "append: new_dtype %s differs from the pages' dtype %s (only int8 "
                        "pages take new rows of another type; 0 means the pages' type)",
                        rt_dtype_name(nt), rt_dtype_name(c->dtype));
    if (!i8) nt = c->dtype;
    int64_t el = rt_dtype_size(c->dtype), nel = rt_dtype_size(nt); /* pages', new rows' */
    static const char *const kd[] = {"num_pages", "page_size", "kv_heads", "qk_dim"},
                             *const vd[] = {"num_pages", "page_size", "kv_heads", "v_dim"},
                             *const nk[] = {"total_new", "kv_heads", "qk_dim"}, *const nv[] = {"total_new", "kv_heads", "v_dim"},
                             *const sd[] = {"num_pages", "page_size", "kv_heads"};
    RtView vk, vv, vkn, vvn, vs, vt, vl, vks, vvs;
    attn_status s;
    if ((s = pg_tensor(&vk, "k_pages", &c->k_pages, 4, (int64_t[]){-1, -1, -1, -1}, kd, el, err))) return s;
    int64_t NP = c->k_pages.shape[0], P = c->k_pages.shape[1], KH = c->k_pages.shape[2], DQ = c->k_pages.shape[3];
    if (P < 1) return rt_error(err, ATTN_ERR_SHAPE, "k_pages: dim 1 (page_size) is 0");
    if ((s = pg_tensor(&vv, "v_pages", &c->v_pages, 4, (int64_t[]){NP, P, KH, -1}, vd, el, err))) return s;
    int64_t DV = c->v_pages.shape[3];
    if ((s = pg_tensor(&vkn, "k_new", &c->k_new, 3, (int64_t[]){-1, KH, DQ}, nk, nel, err))) return s;
    int64_t T = c->k_new.shape[0];
    if ((s = pg_tensor(&vvn, "v_new", &c->v_new, 3, (int64_t[]){T, KH, DV}, nv, nel, err))) return s;
    if (i8) {
        if ((s = pg_tensor(&vks, "k_scale", &c->k_scale, 3, (int64_t[]){NP, P, KH}, sd, 4, err))) return s;
        if ((s = pg_tensor(&vvs, "v_scale", &c->v_scale, 3, (int64_t[]){NP, P, KH}, sd, 4, err))) return s;
    }
    if ((s = pg_check_batch("new_starts", &c->new_starts, &c->page_table, &c->kv_lens, T, NP, P, &vs, &vt, &vl, err)))
        return s;
    if ((s = rt_check_no_overlap(&vk, err)) || (s = rt_check_no_overlap(&vv, err))) return s;
    if (i8 && ((s = rt_check_no_overlap(&vks, err)) || (s = rt_check_no_overlap(&vvs, err)))) return s;
    {
        int nout = i8 ? 4 : 2;
        RtRange outs[4] = {rt_view_range(&vk), rt_view_range(&vv), i8 ? rt_view_range(&vks) : (RtRange){0},
                           i8 ? rt_view_range(&vvs) : (RtRange){0}};
        RtRange ins[5] = {rt_view_range(&vkn), rt_view_range(&vvn), rt_view_range(&vs), rt_view_range(&vt),
                          rt_view_range(&vl)};
        if ((s = rt_check_disjoint(outs, nout, ins, 5, err))) return s;
        const RtView *ov[4] = {&vk, &vv, &vks, &vvs};
        static const char *const on[4] = {"k_pages", "v_pages", "k_scale", "v_scale"};
        for (int x = 0; x < nout; x++)
            for (int y = x + 1; y < nout; y++)
                if (rt_ranges_overlap(ov[x], ov[y]))
                    return rt_error(err, ATTN_ERR_STRIDE, "%s and %s overlap in memory", on[x], on[y]);
    }
    int64_t B = c->kv_lens.shape[0], MP = c->page_table.shape[1];
    const int32_t *st = c->new_starts.data, *tb = c->page_table.data, *ln = c->kv_lens.data;
    /* no two rows to one slot (pages shared between sequences) */
    if (T > 1) {
        int64_t *slot = malloc(sizeof *slot * (size_t)T);
        if (!slot) return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the append's checks");
        for (int64_t b = 0; b < B; b++) {
            int64_t n = st[b + 1] - st[b];
            for (int64_t i = 0; i < n; i++) {
                int64_t pos = ln[b] - n + i;
                slot[st[b] + i] = (int64_t)tb[b * MP + pos / P] * P + pos % P;
            }
        }
        qsort(slot, (size_t)T, sizeof *slot, pg_cmp_i64);
        for (int64_t i = 1; i < T; i++)
            if (slot[i] == slot[i - 1]) {
                int64_t dup = slot[i];
                free(slot);
                return rt_error(err, ATTN_ERR_INDEX, "append: two new rows go to row %lld of page %lld",
                                (long long)(dup % P), (long long)(dup / P));
            }
        free(slot);
    }
    /* int8: 16-bit rows are widened (exactly) into wide, then quantized as f32 rows are */
    float *wide = NULL;
    if (i8 && nt != ATTN_F32 && !(wide = malloc(sizeof(float) * (size_t)((DQ > DV ? DQ : DV) + 1))))
        return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the append's widened rows");
    /* int8: a row with an inf or NaN has no int8 form (its scale would spoil every element) */
    for (int64_t row = 0; i8 && row < T; row++)
        for (int64_t h = 0; h < KH; h++)
            for (int w = 0; w < 2; w++) {
                const float *x = w ? pg_new_row(c->v_new.data, nt, row * vvn.stride[0] + h * vvn.stride[1], DV, wide)
                                   : pg_new_row(c->k_new.data, nt, row * vkn.stride[0] + h * vkn.stride[1], DQ, wide);
                for (int64_t d = 0; d < (w ? DV : DQ); d++)
                    if (!isfinite(x[d])) {
                        double bad = x[d]; /* x may be wide */
                        free(wide);
                        return rt_error(err, ATTN_ERR_ARG, "append: %s[%lld, %lld, %lld] is %g: int8 pages hold finite "
                                        "values only", w ? "v_new" : "k_new", (long long)row, (long long)h, (long long)d,
                                        bad);
                    }
            }
    for (int64_t b = 0; b < B; b++) {
        int64_t n = st[b + 1] - st[b];
        for (int64_t i = 0; i < n; i++) {
            int64_t pos = ln[b] - n + i, pg = tb[b * MP + pos / P], row = st[b] + i;
            for (int64_t h = 0; h < KH; h++) {
                char *kdst = (char *)c->k_pages.data + (pg * vk.stride[0] + pos % P * vk.stride[1] + h * vk.stride[2]) * el;
                char *vdst = (char *)c->v_pages.data + (pg * vv.stride[0] + pos % P * vv.stride[1] + h * vv.stride[2]) * el;
                int64_t koff = row * vkn.stride[0] + h * vkn.stride[1], voff = row * vvn.stride[0] + h * vvn.stride[1];
                if (!i8) {
                    memcpy(kdst, (const char *)c->k_new.data + koff * nel, (size_t)(DQ * el));
                    memcpy(vdst, (const char *)c->v_new.data + voff * nel, (size_t)(DV * el));
                    continue;
                }
                ((float *)c->k_scale.data)[pg * vks.stride[0] + pos % P * vks.stride[1] + h * vks.stride[2]] =
                    pg_quantize(pg_new_row(c->k_new.data, nt, koff, DQ, wide), DQ, (int8_t *)kdst);
                ((float *)c->v_scale.data)[pg * vvs.stride[0] + pos % P * vvs.stride[1] + h * vvs.stride[2]] =
                    pg_quantize(pg_new_row(c->v_new.data, nt, voff, DV, wide), DV, (int8_t *)vdst);
            }
        }
    }
    free(wide);
    return ATTN_OK;
}

// paged MLA (absorbed)

/* 16-bit storage (the descriptor's dtype for q_nope, q_rope, w_uk, w_uv, o; kv_dtype for the
 * pages) is widened exactly into the f32 scratch the absorbed kernel reads, a head's rows of
 * q_nope and its weights into a task's buffer before a product; o is computed in f32 and rounded
 * to nearest even as it is stored. */
typedef struct PgMla {
    int64_t T, H, R, rope, nope, dv, P, U, W;
    attn_dtype dt, kt;    /* storage of the tensors and of the pages */
    RtView qn, qr, ckv, kr, wuk, wuv, o;
    const int32_t *used;  /* the pages the batch reads, in order (U of them) */
    float *q_cat, *k_cat, *o_lat;
    atomic_int nomem;     /* a task could not allocate its buffer */
} PgMla;

/* rows x cols f32 values of a dt tensor from element offset off, rows ld apart: the data itself
 * (f32: *ld_out = ld) or its copy into tmp (*ld_out = cols). */
static const float *pgm_mat(const void *p, attn_dtype dt, int64_t off, int64_t ld, int64_t rows, int64_t cols,
                            float *tmp, int64_t *ld_out) {
    if (dt == ATTN_F32) {
        *ld_out = ld;
        return (const float *)p + off;
    }
    for (int64_t i = 0; i < rows; i++) rt_widen_row(tmp + i * cols, p, off + i * ld, cols, dt);
    *ld_out = cols;
    return tmp;
}

static void pgm_q(void *ctx, int64_t h) { /* q_cat[:, h] = [q_nope[:, h] . w_uk[h]^T | q_rope[:, h]] */
    PgMla *m = ctx;
    float *tmp = NULL;
    int64_t lq, lk;
    if (m->dt != ATTN_F32 && !(tmp = malloc(sizeof(float) * (size_t)((m->T + m->R) * m->nope)))) {
        atomic_store(&m->nomem, 1);
        return;
    }
    const float *qn = pgm_mat(m->qn.t->data, m->dt, h * m->qn.stride[1], m->qn.stride[0], m->T, m->nope, tmp, &lq);
    const float *wk = pgm_mat(m->wuk.t->data, m->dt, h * m->wuk.stride[0], m->wuk.stride[1], m->R, m->nope,
                              tmp ? tmp + m->T * m->nope : NULL, &lk);
    rt_sgemm_nt(m->T, m->R, m->nope, qn, lq, wk, lk, m->q_cat + h * m->W, m->H * m->W);
    for (int64_t t = 0; t < m->T && m->rope; t++) /* rope_dim 0: q_rope may be NULL */
        rt_widen_row(m->q_cat + (t * m->H + h) * m->W + m->R, m->qr.t->data, t * m->qr.stride[0] + h * m->qr.stride[1],
                     m->rope, m->dt);
    free(tmp);
}

static void pgm_k(void *ctx, int64_t i) { /* page i of k_cat: the rows of used page used[i] */
    PgMla *m = ctx;
    int64_t pg = m->used[i];
    for (int64_t r = 0; r < m->P; r++) {
        float *dst = m->k_cat + (i * m->P + r) * m->W;
        rt_widen_row(dst, m->ckv.t->data, pg * m->ckv.stride[0] + r * m->ckv.stride[1], m->R, m->kt);
        if (m->rope) /* rope_dim 0: k_rope_pages may be NULL */
            rt_widen_row(dst + m->R, m->kr.t->data, pg * m->kr.stride[0] + r * m->kr.stride[1], m->rope, m->kt);
    }
}

static void pgm_o(void *ctx, int64_t h) { /* o[:, h] = o_lat[:, h] . w_uv[h] */
    PgMla *m = ctx;
    float *tmp = NULL;
    int64_t lv;
    if (m->dt != ATTN_F32 && !(tmp = malloc(sizeof(float) * (size_t)((m->R + m->T) * m->dv)))) {
        atomic_store(&m->nomem, 1);
        return;
    }
    const float *wv = pgm_mat(m->wuv.t->data, m->dt, h * m->wuv.stride[0], m->wuv.stride[1], m->R, m->dv, tmp, &lv);
    float *o = tmp ? tmp + m->R * m->dv : (float *)m->o.t->data + h * m->o.stride[1];
    rt_sgemm_nn(m->T, m->dv, m->R, m->o_lat + h * m->R, m->H * m->R, wv, lv, o, tmp ? m->dv : m->o.stride[0]);
    for (int64_t t = 0; tmp && t < m->T; t++)
        rt_narrow_row(m->o.t->data, t * m->o.stride[0] + h * m->o.stride[1], o + t * m->dv, m->dv, m->dt);
    free(tmp);
}

attn_status attn_rt_launch_paged_mla(const attn_rt_mla_desc *d, const attn_paged_mla_call *c, attn_rt_pool *pool,
                                     attn_error *err) {
    rt_ok(err);
    if (!d || !c) return rt_error(err, ATTN_ERR_NULL, "paged MLA: the descriptor and the call are required");
    if (!d->absorbed) return rt_error(err, ATTN_ERR_ARG, "paged MLA: the absorbed variant was not compiled");
    const attn_rt_desc *da = d->absorbed;
    attn_status s = pg_check_descs(&da, 1, err);
    if (s || (s = rt_mla_check_dtypes(d, err))) return s;
    if (c->threads < 0) return rt_error(err, ATTN_ERR_ARG, "threads is %d, expected >= 0 (0: all cores)", c->threads);
    PgMla m;
    memset(&m, 0, sizeof m);
    m.H = da->heads, m.R = d->kv_rank, m.rope = d->rope_dim, m.nope = d->nope_dim, m.dv = d->v_dim, m.P = da->page_size;
    m.W = m.R + m.rope;
    m.dt = d->dtype, m.kt = rt_mla_kv_dtype(d);
    int64_t el = rt_dtype_size(m.dt), kel = rt_dtype_size(m.kt);
    static const char *const qd[] = {"total_q", "heads", "nope_dim"}, *const rd[] = {"total_q", "heads", "rope_dim"},
                             *const cd[] = {"num_pages", "page_size", "kv_rank"},
                             *const kd[] = {"num_pages", "page_size", "rope_dim"},
                             *const ud[] = {"heads", "kv_rank", "nope_dim"}, *const vd[] = {"heads", "kv_rank", "v_dim"},
                             *const od[] = {"total_q", "heads", "v_dim"}, *const ld[] = {"total_q", "heads"};
    RtView vl, vs, vt, vn;
    if ((s = pg_tensor(&m.qn, "q_nope", &c->q_nope, 3, (int64_t[]){-1, m.H, m.nope}, qd, el, err))) return s;
    m.T = c->q_nope.shape[0];
    if ((s = pg_tensor(&m.qr, "q_rope", &c->q_rope, 3, (int64_t[]){m.T, m.H, m.rope}, rd, el, err))) return s;
    if ((s = pg_tensor(&m.ckv, "c_kv_pages", &c->c_kv_pages, 3, (int64_t[]){-1, m.P, m.R}, cd, kel, err))) return s;
    int64_t NP = c->c_kv_pages.shape[0];
    if ((s = pg_tensor(&m.kr, "k_rope_pages", &c->k_rope_pages, 3, (int64_t[]){NP, m.P, m.rope}, kd, kel, err))) return s;
    if ((s = pg_tensor(&m.wuk, "w_uk", &c->w_uk, 3, (int64_t[]){m.H, m.R, m.nope}, ud, el, err))) return s;
    if ((s = pg_tensor(&m.wuv, "w_uv", &c->w_uv, 3, (int64_t[]){m.H, m.R, m.dv}, vd, el, err))) return s;
    if ((s = pg_check_batch("q_starts", &c->q_starts, &c->page_table, &c->kv_lens, m.T, NP, m.P, &vs, &vt, &vn, err)))
        return s;
    if ((s = pg_tensor(&m.o, "o", &c->o, 3, (int64_t[]){m.T, m.H, m.dv}, od, el, err))) return s;
    if ((s = rt_check_no_overlap(&m.o, err))) return s;
    bool has_lse = c->lse.data != NULL;
    if (has_lse) {
        if ((s = pg_tensor(&vl, "lse", &c->lse, 2, (int64_t[]){m.T, m.H}, ld, 4, err))) return s;
        if ((s = rt_check_no_overlap(&vl, err))) return s;
        if (rt_ranges_overlap(&m.o, &vl)) return rt_error(err, ATTN_ERR_STRIDE, "o and lse overlap in memory");
    }
    {
        RtRange outs[2] = {rt_view_range(&m.o), has_lse ? rt_view_range(&vl) : (RtRange){0}};
        RtRange ins[9 + ATTN_MAX_INPUTS] = {rt_view_range(&m.qn), rt_view_range(&m.qr), rt_view_range(&m.ckv),
                                            rt_view_range(&m.kr), rt_view_range(&m.wuk), rt_view_range(&m.wuv),
                                            rt_view_range(&vs), rt_view_range(&vt), rt_view_range(&vn)};
        int nin = 9 + rt_input_ranges(c->inputs, c->ninputs, ins + 9);
        if ((s = rt_check_disjoint(outs, has_lse ? 2 : 1, ins, nin, err))) return s;
    }
    if (m.T == 0) return ATTN_OK;
    /* the pages the batch reads, renumbered 0 .. U-1 in a table of the same shape */
    int64_t B = c->kv_lens.shape[0], MP = c->page_table.shape[1];
    const int32_t *tb = c->page_table.data, *ln = c->kv_lens.data;
    int32_t *map = malloc(sizeof(int32_t) * (size_t)(NP ? NP : 1)), *used = malloc(sizeof(int32_t) * (size_t)(NP ? NP : 1));
    int32_t *table = calloc((size_t)(B * MP > 0 ? B * MP : 1), sizeof(int32_t));
    if (!map || !used || !table) {
        free(map), free(used), free(table);
        return rt_error(err, ATTN_ERR_NOMEM, "paged MLA: out of memory for the page map");
    }
    for (int64_t i = 0; i < NP; i++) map[i] = -1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < (ln[b] + m.P - 1) / m.P; j++) {
            int32_t pg = tb[b * MP + j];
            if (map[pg] < 0) map[pg] = (int32_t)m.U, used[m.U++] = pg;
            table[b * MP + j] = map[pg];
        }
    m.used = used;
    int threads = c->threads > 0 ? c->threads : pool ? attn_rt_pool_threads(pool) : attn_rt_cpu_count();
    m.q_cat = malloc(sizeof(float) * (size_t)(m.T * m.H * m.W));
    m.k_cat = malloc(sizeof(float) * (size_t)((m.U ? m.U : 1) * m.P * m.W));
    m.o_lat = malloc(sizeof(float) * (size_t)(m.T * m.H * m.R));
    if (!m.q_cat || !m.k_cat || !m.o_lat) {
        s = rt_error(err, ATTN_ERR_NOMEM, "paged MLA: out of memory for the absorbed scratch");
        goto done;
    }
    if ((s = rt_launch_tasks(pool, threads, m.H, pgm_q, &m, 0, err)) ||
        (s = rt_launch_tasks(pool, threads, m.U, pgm_k, &m, 0, err)))
        goto done;
    if (atomic_load(&m.nomem)) {
        s = rt_error(err, ATTN_ERR_NOMEM, "paged MLA: out of memory for the widened weights");
        goto done;
    }
    attn_paged_call in;
    memset(&in, 0, sizeof in);
    in.q = (attn_tensor){.data = m.q_cat, .ndim = 3, .shape = {m.T, m.H, m.W}};
    in.k_pages = (attn_tensor){.data = m.k_cat, .ndim = 4, .shape = {m.U, m.P, 1, m.W}};
    in.v_pages = (attn_tensor){.data = m.k_cat, .ndim = 4, .shape = {m.U, m.P, 1, m.R},
                               .stride = {m.P * m.W, m.W, m.W, 1}};
    in.page_table = (attn_tensor){.data = table, .ndim = 2, .shape = {B, MP}};
    in.kv_lens = c->kv_lens;
    in.q_starts = c->q_starts;
    in.o = (attn_tensor){.data = m.o_lat, .ndim = 3, .shape = {m.T, m.H, m.R}};
    in.lse = c->lse;
    in.inputs = c->inputs;
    in.ninputs = c->ninputs;
    in.threads = threads;
    if ((s = attn_rt_launch_paged(&da, 1, &in, pool, err))) goto done;
    s = rt_launch_tasks(pool, threads, m.H, pgm_o, &m, 0, err);
    if (!s && atomic_load(&m.nomem)) s = rt_error(err, ATTN_ERR_NOMEM, "paged MLA: out of memory for the widened weights");
done:
    free(map), free(used), free(table), free(m.q_cat), free(m.k_cat), free(m.o_lat);
    return s;
}
