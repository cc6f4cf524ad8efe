/* merge.c — combining attention over disjoint key sets through their log-sum-exps: the
 * building block of split-KV decode, cascade attention over a shared prefix cache and ring
 * attention. For parts i over disjoint keys with outputs o_i and log-sum-exps lse_i,
 *   lse = log sum_i exp(lse_i),   o = sum_i exp(lse_i - lse) o_i
 * is exactly the attention over the union. A part with a NaN lse (its keys made a NaN) makes
 * the row NaN, o and lse, as one softmax over the union would. */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "rt_internal.h"

static const char *const merge_dims[] = {"batch", "heads", "q_len", "v_dim"};

static attn_status merge_shape(const char *name, const attn_tensor *t, int ndim,
                               const int64_t *want, attn_error *err) {
    if (!t->data) return rt_error(err, ATTN_ERR_NULL, "%s: data is NULL", name);
    if (t->ndim != ndim) return rt_error(err, ATTN_ERR_RANK, "%s: has %d dims, expected %d", name, t->ndim, ndim);
    for (int d = 0; d < ndim; d++) {
        if (t->shape[d] < 1) return rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d is %lld", name, d, (long long)t->shape[d]);
        if (want && t->shape[d] != want[d])
            return rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d (%s) is %lld, expected %lld", name, d,
                            merge_dims[d], (long long)t->shape[d], (long long)want[d]);
    }
    return ATTN_OK;
}

attn_status attn_rt_merge(const attn_tensor *o_parts, const attn_tensor *lse_parts, int nparts,
                          attn_tensor *o, attn_tensor *lse, attn_error *err) {
    if (!o_parts || !lse_parts || !o) return rt_error(err, ATTN_ERR_NULL, "merge: parts and o are required");
    if (nparts < 1 || nparts > 4096) return rt_error(err, ATTN_ERR_ARG, "merge: %d parts (1..4096)", nparts);
    attn_status st;
    if ((st = merge_shape("o", o, 4, NULL, err))) return st;
    const int64_t *shp = o->shape;
    RtView vo, vl = {0};
    if ((st = rt_view(&vo, "o", o, 4, err)) || (st = rt_check_no_overlap(&vo, err))) return st;
    if (lse && lse->data) {
        if ((st = merge_shape("lse", lse, 3, shp, err)) || (st = rt_view(&vl, "lse", lse, 4, err)) ||
            (st = rt_check_no_overlap(&vl, err)))
            return st;
    }
    RtView *po = malloc(sizeof(RtView) * (size_t)nparts), *pl = malloc(sizeof(RtView) * (size_t)nparts);
    double *acc = malloc(sizeof(double) * (size_t)shp[3]);
    double *w = malloc(sizeof(double) * (size_t)nparts);
    if (!po || !pl || !acc || !w) {
        st = rt_error(err, ATTN_ERR_NOMEM, "merge: out of memory");
        goto done;
    }
    for (int p = 0; p < nparts; p++) {
        if ((st = merge_shape("o part", &o_parts[p], 4, shp, err)) || (st = rt_view(&po[p], "o part", &o_parts[p], 4, err)) ||
            (st = merge_shape("lse part", &lse_parts[p], 3, shp, err)) ||
            (st = rt_view(&pl[p], "lse part", &lse_parts[p], 4, err)))
            goto done;
    }
    for (int64_t b = 0; b < shp[0]; b++)
        for (int64_t h = 0; h < shp[1]; h++)
            for (int64_t i = 0; i < shp[2]; i++) {
                double m = -INFINITY;
                bool nan = false; /* a part whose keys made a NaN: the row is NaN, as unsplit */
                for (int p = 0; p < nparts; p++) {
                    const float *l = lse_parts[p].data;
                    w[p] = l[b * pl[p].stride[0] + h * pl[p].stride[1] + i * pl[p].stride[2]];
                    if (w[p] > m) m = w[p];
                    nan |= isnan(w[p]);
                }
                double s = nan ? NAN : 0;
                for (int64_t d = 0; d < shp[3]; d++) acc[d] = nan ? NAN : 0;
                for (int p = 0; p < nparts && m > -INFINITY && !nan; p++) {
                    if (w[p] == -INFINITY) continue; /* a part that saw no key */
                    double wp = exp(w[p] - m);
                    s += wp;
                    const float *op = (const float *)o_parts[p].data + b * po[p].stride[0] +
                                      h * po[p].stride[1] + i * po[p].stride[2];
                    for (int64_t d = 0; d < shp[3]; d++) acc[d] += wp * op[d];
                }
                /* written after every part is read: o may be one of the parts (in place) */
                float *out = (float *)o->data + b * vo.stride[0] + h * vo.stride[1] + i * vo.stride[2];
                for (int64_t d = 0; d < shp[3]; d++) out[d] = s > 0 || nan ? (float)(acc[d] / s) : 0.0f;
                if (vl.t)
                    ((float *)lse->data)[b * vl.stride[0] + h * vl.stride[1] + i * vl.stride[2]] =
                        s > 0 ? (float)(m + log(s)) : nan ? NAN : -INFINITY;
            }
    st = rt_ok(err);
done:
    free(po);
    free(pl);
    free(acc);
    free(w);
    return st;
}

/* The fused launch of disjoint key domains: a task computes one query tile of one (b, h) with
 * every domain's tile function in turn, all into the call's o: the first writes (o, lse), each
 * next one resumes from them (attn_rt_args.resume: its online softmax starts from m = lse,
 * l = 1, acc = o), which merges the domains in the kernel with no pass over memory. Without
 * an lse in the call, the tile's lse lives in a per-thread scratch slot. */
typedef struct RtDomains {
    const attn_rt_desc *const *descs;
    const attn_rt_args *args; /* [n], checked, summaries built */
    int n;
    int64_t heads, block_q, ntiles, share;
    atomic_int failed;        /* an input index out of bounds */
    int nslots;               /* one lse slot per thread that may run a task at once */
    float *scratch;           /* [nslots][block_q], or NULL when the call has an lse */
    atomic_int *busy;         /* [nslots] */
} RtDomains;

static void rt_domains_task(void *ctx, int64_t t) {
    RtDomains *dm = ctx;
    if (atomic_load_explicit(&dm->failed, memory_order_relaxed)) return;
    int64_t tile, r;
    rt_task_order(t, dm->ntiles, dm->share, &tile, &r);
    int64_t b = r / dm->heads, h = r % dm->heads;
    int64_t q0 = tile * dm->block_q, q1 = q0 + dm->block_q;
    if (q1 > dm->args[0].q_len) q1 = dm->args[0].q_len;
    int slot = -1;
    float *lse = NULL;
    if (dm->scratch) {
        slot = 0;
        while (atomic_exchange_explicit(&dm->busy[slot], 1, memory_order_acquire))
            slot = (slot + 1) % dm->nslots; /* at most nslots tasks run at once: one is free */
        /* row q of this tile at lse[q - q0]: the base sits q0 rows before the slot */
        lse = (float *)((uintptr_t)(dm->scratch + slot * dm->block_q) - (uintptr_t)q0 * sizeof(float));
    }
    for (int i = 0; i < dm->n; i++) {
        attn_rt_args a = dm->args[i];
        if (lse) {
            a.lse = lse;
            a.lse_stride[0] = a.lse_stride[1] = 0;
        }
        a.resume = i > 0;
        if (dm->descs[i]->tile(&a, b, h, q0, q1) != 0) atomic_store_explicit(&dm->failed, 1, memory_order_relaxed);
    }
    if (slot >= 0) atomic_store_explicit(&dm->busy[slot], 0, memory_order_release);
}

attn_status attn_rt_launch_domains(const attn_rt_desc *const *descs, int n, const attn_call *call,
                                   attn_rt_pool *pool, attn_error *err) {
    if (!descs || !call) return rt_error(err, ATTN_ERR_NULL, "launch_domains: descs and call are required");
    if (n < 1 || n > 64) return rt_error(err, ATTN_ERR_ARG, "launch_domains: %d domains (1..64)", n);
    if (n == 1) return attn_rt_launch(descs[0], call, pool, err);
    attn_rt_args a;
    attn_status st = attn_rt_check(descs[0], call, &a, err); /* validates o and lse once */
    if (st) return st;
    if (descs[0]->dtype != ATTN_F32)
        return rt_error(err, ATTN_ERR_DTYPE, "launch_domains: domains merge f32 outputs only");
    int64_t H = descs[0]->heads, dv = descs[0]->v_dim;
    if (rt_empty_call(&a, H, dv, descs[0]->dtype)) return ATTN_OK;
    for (int i = 1; i < n; i++)
        if (!descs[i] || descs[i]->heads != H || descs[i]->v_dim != dv || descs[i]->dtype != ATTN_F32)
            return rt_error(err, ATTN_ERR_ARG, "launch_domains: domain %d differs from domain 0 in heads, v_dim or dtype", i);
    int threads = rt_call_threads(call, pool);
    /* the tallest domain's tiles, cut (as attn_rt_launch cuts) down to the largest of the
     * domains' min_block_q (a domain that may not be cut keeps its block_q), while there are
     * fewer a thread than the least of their cut_below */
    int64_t bq = 0, floor_q = 1, stack = 0;
    int per = 4;
    for (int i = 0; i < n; i++) {
        stack = descs[i]->stack > stack ? descs[i]->stack : stack;
        int64_t lo = descs[i]->min_block_q > 0 ? descs[i]->min_block_q : descs[i]->block_q;
        int pi = descs[i]->cut_below > 0 ? descs[i]->cut_below : 4;
        bq = descs[i]->block_q > bq ? descs[i]->block_q : bq;
        floor_q = lo > floor_q ? lo : floor_q;
        per = pi < per ? pi : per;
    }
    bq = rt_cut_tiles(bq, floor_q, a.batch * H, a.q_len, threads, per);
    int64_t ntiles = (a.q_len + bq - 1) / bq;
    if (a.batch * H * ntiles >= threads && descs[0]->tile) {
        /* enough tiles for the threads: fused (else each domain's launch may split the keys) */
        attn_rt_args *args = calloc((size_t)n, sizeof *args);
        if (!args) return rt_error(err, ATTN_ERR_NOMEM, "launch_domains: out of memory");
        for (int i = 0; i < n && st == ATTN_OK; i++) {
            attn_call c = *call;
            c.q_offset = a.q_offset;
            c.q_offset_set = 1;
            if (!descs[i]->tile)
                st = rt_error(err, ATTN_ERR_NULL, "launch_domains: domain %d has no tile function", i);
            else if ((st = attn_rt_check(descs[i], &c, &args[i], err)) == ATTN_OK)
                st = rt_summaries_build(descs[i], &args[i], err);
        }
        int64_t ntasks = a.batch * H * ntiles;
        int nslots = ntasks < threads ? (int)ntasks : threads;
        float *scratch = NULL;
        atomic_int *busy = NULL;
        if (st == ATTN_OK && !call->lse.data) {
            scratch = malloc(sizeof(float) * (size_t)(bq * nslots));
            busy = malloc(sizeof *busy * (size_t)nslots);
            if (!scratch || !busy) st = rt_error(err, ATTN_ERR_NOMEM, "launch_domains: out of memory for the tiles' lse");
            for (int i = 0; busy && i < nslots; i++) atomic_init(&busy[i], 0);
        }
        if (st == ATTN_OK) {
            RtDomains dm = {.descs = descs, .args = args, .n = n, .heads = H, .block_q = bq, .ntiles = ntiles,
                            .share = rt_kv_share(descs[0], H),
                            .nslots = nslots, .scratch = scratch, .busy = busy};
            atomic_init(&dm.failed, 0);
            st = rt_launch_tasks(pool, threads, ntasks, rt_domains_task, &dm, (size_t)stack, err);
            if (st == ATTN_OK && atomic_load(&dm.failed))
                st = rt_index_error(descs[0], err);
        }
        free(scratch);
        free(busy);
        for (int i = 0; i < n; i++) rt_summaries_free(&args[i]);
        free(args);
        return st == ATTN_OK ? rt_ok(err) : st;
    }
    size_t no = (size_t)(a.batch * H * a.q_len * dv), nl = (size_t)(a.batch * H * a.q_len);
    float *scratch = malloc(sizeof(float) * (no + nl) * (size_t)n);
    attn_tensor *po = malloc(sizeof(attn_tensor) * (size_t)n), *pl = malloc(sizeof(attn_tensor) * (size_t)n);
    if (!scratch || !po || !pl) {
        st = rt_error(err, ATTN_ERR_NOMEM, "launch_domains: out of memory for %d partial outputs", n);
        goto done;
    }
    for (int i = 0; i < n && st == ATTN_OK; i++) {
        float *o = scratch + (no + nl) * (size_t)i, *l = o + no;
        po[i] = (attn_tensor){.data = o, .ndim = 4, .shape = {a.batch, H, a.q_len, dv}};
        pl[i] = (attn_tensor){.data = l, .ndim = 3, .shape = {a.batch, H, a.q_len}};
        attn_call c = *call;
        c.o = po[i];
        c.lse = pl[i];
        c.q_offset = a.q_offset; /* resolved once: every domain sees the same positions */
        c.q_offset_set = 1;
        st = attn_rt_launch(descs[i], &c, pool, err);
    }
    if (st == ATTN_OK) {
        attn_tensor o = call->o, lse = call->lse;
        st = attn_rt_merge(po, pl, n, &o, lse.data ? &lse : NULL, err);
    }
done:
    free(scratch);
    free(po);
    free(pl);
    return st;
}
