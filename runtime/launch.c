/* launch.c — validation of a call against a compiled block's descriptor, and the parallel
 * loop over (batch, head, query tile) that runs its tile function. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

#define RT_MAX_DIM_SIZE ((int64_t)1 << 40) /* larger sizes or offsets are rejected */

static const char *const rt_q_dims[] = {"batch", "heads", "q_len", "qk_dim"};
static const char *const rt_k_dims[] = {"batch", "kv_heads", "kv_len", "qk_dim"};
static const char *const rt_v_dims[] = {"batch", "kv_heads", "kv_len", "v_dim"};
static const char *const rt_o_dims[] = {"batch", "heads", "q_len", "v_dim"};
static const char *const rt_lse_dims[] = {"batch", "heads", "q_len"};

static const char *rt_dim_kind_name(attn_dim_kind k) {
    switch (k) {
    case ATTN_DIM_CONST: return "const";
    case ATTN_DIM_BATCH: return "batch";
    case ATTN_DIM_HEADS: return "heads";
    case ATTN_DIM_KV_HEADS: return "kv_heads";
    case ATTN_DIM_Q_LEN: return "q_len";
    case ATTN_DIM_KV_LEN: return "kv_len";
    case ATTN_DIM_PAGES: return "num_pages";
    }
    return "?";
}

int64_t rt_dtype_size(attn_dtype t) { return t == ATTN_F16 || t == ATTN_BF16 ? 2 : t == ATTN_I8 ? 1 : 4; }

const char *rt_dtype_name(attn_dtype t) {
    static const char *const nm[] = {"f32", "f16", "bf16", "i32", "int8"};
    return (unsigned)t < sizeof nm / sizeof nm[0] ? nm[t] : "an unknown type";
}

/* Checks every size is in [1, 2^40] (dims 0 and 2, batch and q_len or kv_len, in [0, 2^40]:
 * an empty call is valid) and equal to `want` where want >= 0. */
static attn_status rt_check_shape(const char *name, const attn_tensor *t, int ndim,
                                  const char *const *dim_names, const int64_t *want,
                                  const char *const *why, attn_error *err) {
    for (int d = 0; d < ndim; d++) {
        int64_t got = t->shape[d], min = d == 0 || d == 2 ? 0 : 1;
        if (got < min)
            return rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d (%s) is %lld, expected >= %lld", name,
                            d, dim_names[d], (long long)got, (long long)min);
        if (got > RT_MAX_DIM_SIZE)
            return rt_error(err, ATTN_ERR_OVERFLOW, "%s: dim %d (%s) is %lld, more than 2^40",
                            name, d, dim_names[d], (long long)got);
        if (want[d] >= 0 && got != want[d])
            return rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d (%s) is %lld, expected %lld (%s)",
                            name, d, dim_names[d], (long long)got, (long long)want[d], why[d]);
    }
    return ATTN_OK;
}

/* Row-major strides of `shape`; false on overflow. */
static bool rt_row_major(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        stride[d] = s;
        if (__builtin_mul_overflow(s, shape[d], &s)) return false;
    }
    return true;
}

/* Resolves strides and computes the byte extent, rejecting bad strides and overflow. */
attn_status rt_view(RtView *v, const char *name, const attn_tensor *t, int64_t elem,
                           attn_error *err) {
    v->name = name;
    v->t = t;
    int n = t->ndim;
    bool all_zero = true;
    for (int d = 0; d < n; d++) all_zero &= t->stride[d] == 0;
    if (all_zero) {
        if (!rt_row_major(n, t->shape, v->stride))
            return rt_error(err, ATTN_ERR_OVERFLOW, "%s: the element count overflows", name);
    } else {
        for (int d = 0; d < n; d++) {
            if (t->stride[d] < 0)
                return rt_error(err, ATTN_ERR_STRIDE, "%s: stride %d is %lld, negative", name, d,
                                (long long)t->stride[d]);
            v->stride[d] = t->stride[d];
        }
        if (t->stride[n - 1] != 1)
            return rt_error(err, ATTN_ERR_STRIDE, "%s: the last stride is %lld, expected 1",
                            name, (long long)t->stride[n - 1]);
    }
    v->lo = v->hi = 0;
    for (int d = 0; d < n; d++)
        if (t->shape[d] == 0) return ATTN_OK; /* no element: no bytes */
    int64_t last = 0; /* offset of the last element, in elements */
    for (int d = 0; d < n; d++) {
        int64_t term;
        if (__builtin_mul_overflow(t->shape[d] - 1, v->stride[d], &term) ||
            __builtin_add_overflow(last, term, &last))
            return rt_error(err, ATTN_ERR_OVERFLOW, "%s: sizes and strides overflow", name);
    }
    int64_t bytes;
    uintptr_t end;
    if (__builtin_add_overflow(last, 1, &bytes) || __builtin_mul_overflow(bytes, elem, &bytes) ||
        __builtin_add_overflow((uintptr_t)t->data, (uintptr_t)bytes, &end))
        return rt_error(err, ATTN_ERR_OVERFLOW, "%s: its byte extent overflows", name);
    v->lo = 0;
    v->hi = bytes;
    return ATTN_OK;
}

/* An output must not write one element twice: with dims sorted by stride, each stride must
 * exceed the extent of the dims inside it (size-1 dims do not matter). */
attn_status rt_check_no_overlap(const RtView *v, attn_error *err) {
    if (v->hi == 0) return ATTN_OK; /* no element */
    int n = v->t->ndim, order[ATTN_MAX_DIMS], m = 0;
    for (int d = 0; d < n; d++)
        if (v->t->shape[d] > 1) order[m++] = d;
    for (int i = 1; i < m; i++) /* insertion sort by stride */
        for (int j = i; j > 0 && v->stride[order[j]] < v->stride[order[j - 1]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    int64_t extent = 0; /* last offset reached by the dims so far */
    for (int i = 0; i < m; i++) {
        int d = order[i];
        if (v->stride[d] <= extent)
            return rt_error(err, ATTN_ERR_STRIDE,
                            "%s: stride %d (%lld) makes elements overlap; an output needs "
                            "distinct addresses",
                            v->name, d, (long long)v->stride[d]);
        extent += (v->t->shape[d] - 1) * v->stride[d]; /* no overflow: checked by rt_view */
    }
    return ATTN_OK;
}

bool rt_ranges_overlap(const RtView *a, const RtView *b) {
    if (a->hi == 0 || b->hi == 0) return false; /* an empty tensor */
    uintptr_t a0 = (uintptr_t)a->t->data, a1 = a0 + (uintptr_t)a->hi;
    uintptr_t b0 = (uintptr_t)b->t->data, b1 = b0 + (uintptr_t)b->hi;
    return a0 < b1 && b0 < a1;
}

RtRange rt_view_range(const RtView *v) {
    uintptr_t lo = (uintptr_t)v->t->data;
    return (RtRange){v->name, lo, v->hi ? lo + (uintptr_t)v->hi : lo};
}

int rt_input_ranges(const attn_input *in, int n, RtRange *out) {
    int m = 0;
    for (int i = 0; in && i < n && m < ATTN_MAX_INPUTS; i++) {
        const attn_tensor *t = &in[i].t;
        if (!in[i].name || !t->data || t->ndim < 0 || t->ndim > ATTN_MAX_DIMS) continue;
        int64_t count = 1;
        bool ok = true;
        for (int d = 0; d < t->ndim && ok; d++)
            ok = t->shape[d] >= 0 && !__builtin_mul_overflow(count, t->shape[d], &count);
        uintptr_t lo = (uintptr_t)t->data, hi;
        if (!ok || __builtin_mul_overflow(count, (int64_t)4, &count) ||
            __builtin_add_overflow(lo, (uintptr_t)count, &hi))
            continue; /* its own check refuses it */
        out[m++] = (RtRange){in[i].name, lo, hi};
    }
    return m;
}

attn_status rt_check_disjoint(const RtRange *outs, int nout, const RtRange *ins, int nin,
                              attn_error *err) {
    for (int i = 0; i < nout; i++)
        for (int j = 0; j < nin; j++)
            if (outs[i].lo < outs[i].hi && ins[j].lo < ins[j].hi && outs[i].lo < ins[j].hi &&
                ins[j].lo < outs[i].hi)
                return rt_error(err, ATTN_ERR_STRIDE,
                                "%s overlaps %s: an output must not share memory with a tensor "
                                "or input the call reads",
                                outs[i].name, ins[j].name);
    return ATTN_OK;
}

/* True when the tensor has no element (a size of 0 among its first ndim, in range). */
static bool rt_tensor_empty(const attn_tensor *t) {
    for (int d = 0; d < t->ndim && d < ATTN_MAX_DIMS; d++)
        if (t->shape[d] == 0) return true;
    return false;
}

attn_status rt_check_desc(const attn_rt_desc *d, attn_error *err) {
    if (d->heads < 1 || d->kv_heads < 1 || d->qk_dim < 1 || d->v_dim < 1 || d->block_q < 1)
        return rt_error(err, ATTN_ERR_ARG,
                        "descriptor '%s': heads, kv_heads, qk_dim, v_dim and block_q must be >= 1",
                        d->name ? d->name : "?");
    if (d->dtype != ATTN_F32 && d->dtype != ATTN_F16 && d->dtype != ATTN_BF16)
        return rt_error(err, ATTN_ERR_ARG, "descriptor '%s': bad tensor dtype %d",
                        d->name ? d->name : "?", (int)d->dtype);
    if ((d->kv_dtype != ATTN_F32 && d->kv_dtype != ATTN_F16 && d->kv_dtype != ATTN_BF16 && d->kv_dtype != ATTN_I8) ||
        (d->kv_f32 && (d->kv_dtype != ATTN_F32 || d->dtype == ATTN_F32)))
        return rt_error(err, ATTN_ERR_ARG, "descriptor '%s': bad K/V dtype %d%s under dtype %d",
                        d->name ? d->name : "?", (int)d->kv_dtype, d->kv_f32 ? " (kv_f32)" : "", (int)d->dtype);
    if (d->ninputs < 0 || d->ninputs > ATTN_MAX_INPUTS || (d->ninputs > 0 && !d->inputs))
        return rt_error(err, ATTN_ERR_ARG, "descriptor '%s': bad input table",
                        d->name ? d->name : "?");
    for (int i = 0; i < d->ninputs; i++)
        if (!d->inputs[i].name || d->inputs[i].rank < 0 || d->inputs[i].rank > ATTN_MAX_DIMS)
            return rt_error(err, ATTN_ERR_ARG, "descriptor '%s': bad input %d",
                            d->name ? d->name : "?", i);
    /* the pool's threads have RT_WORKER_STACK: a kernel must leave its tasks' frames room */
    if (d->stack < 0 || d->stack > (int64_t)(RT_WORKER_STACK / 2))
        return rt_error(err, ATTN_ERR_ARG, "descriptor '%s': stack of %lld bytes (0 .. %zu)", d->name ? d->name : "?",
                        (long long)d->stack, RT_WORKER_STACK / 2);
    return ATTN_OK;
}

/* Binds call->inputs to the descriptor's declarations, filling args->input and input_dim. */
attn_status rt_check_inputs(const attn_rt_desc *d, const attn_call *c, attn_rt_args *a, int64_t num_pages,
                                   attn_error *err) {
    const attn_input *bound[ATTN_MAX_INPUTS] = {0};
    for (int i = 0; i < c->ninputs; i++) {
        const attn_input *in = &c->inputs[i];
        if (!in->name) return rt_error(err, ATTN_ERR_NULL, "input #%d has no name", i);
        int j = 0;
        while (j < d->ninputs && strcmp(d->inputs[j].name, in->name) != 0) j++;
        if (j == d->ninputs) {
            if (d->ninputs == 0)
                return rt_error(err, ATTN_ERR_INPUT,
                                "unknown input '%s': '%s' declares no runtime inputs", in->name,
                                d->name ? d->name : "?");
            char names[256] = "";
            size_t len = 0;
            for (int k = 0; k < d->ninputs && len < sizeof names; k++)
                len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", k ? ", " : "",
                                        d->inputs[k].name);
            return rt_error(err, ATTN_ERR_INPUT, "unknown input '%s' (the spec declares: %s)",
                            in->name, names);
        }
        if (bound[j]) return rt_error(err, ATTN_ERR_INPUT, "input '%s' is bound twice", in->name);
        bound[j] = in;
    }
    for (int j = 0; j < d->ninputs; j++) {
        const attn_rt_input_desc *id = &d->inputs[j];
        const attn_input *in = bound[j];
        if (!in) return rt_error(err, ATTN_ERR_INPUT, "missing input '%s'", id->name);
        if (in->t.ndim != id->rank)
            return rt_error(err, ATTN_ERR_INPUT, "input '%s': %d dims, expected %d", id->name,
                            in->t.ndim, id->rank);
        int64_t count = 1;
        for (int k = 0; k < id->rank; k++) {
            int64_t want;
            switch (id->dim_kind[k]) {
            case ATTN_DIM_BATCH: want = a->batch; break;
            case ATTN_DIM_HEADS: want = d->heads; break;
            case ATTN_DIM_KV_HEADS: want = d->kv_heads; break;
            case ATTN_DIM_Q_LEN: want = a->q_len; break;
            case ATTN_DIM_KV_LEN: want = a->kv_len; break;
            case ATTN_DIM_PAGES: want = num_pages; break;
            default: want = id->dim_value[k]; break;
            }
            if (in->t.shape[k] != want)
                return rt_error(err, ATTN_ERR_INPUT, "input '%s': dim %d is %lld, expected %lld (%s)",
                                id->name, k, (long long)in->t.shape[k], (long long)want,
                                rt_dim_kind_name(id->dim_kind[k]));
            if (__builtin_mul_overflow(count, want, &count))
                return rt_error(err, ATTN_ERR_OVERFLOW, "input '%s': its size overflows", id->name);
            a->input_dim[j][k] = want;
        }
        if (!in->t.data && count != 0) /* an input with no element may have NULL data */
            return rt_error(err, ATTN_ERR_NULL, "input '%s': data is NULL", id->name);
        int64_t bytes;
        uintptr_t end;
        if (__builtin_mul_overflow(count, (int64_t)4, &bytes) ||
            __builtin_add_overflow((uintptr_t)in->t.data, (uintptr_t)bytes, &end))
            return rt_error(err, ATTN_ERR_OVERFLOW, "input '%s': its byte extent overflows",
                            id->name);
        bool all_zero = true;
        for (int k = 0; k < id->rank; k++) all_zero &= in->t.stride[k] == 0;
        if (!all_zero && count != 0) { /* an input with no element needs no layout */
            int64_t rm[ATTN_MAX_DIMS];
            rt_row_major(id->rank, in->t.shape, rm); /* cannot overflow: count did not */
            for (int k = 0; k < id->rank; k++)
                if (in->t.stride[k] != rm[k] && in->t.shape[k] != 1)
                    return rt_error(err, ATTN_ERR_STRIDE,
                                    "input '%s': stride %d is %lld, inputs must be contiguous "
                                    "(row-major stride %lld)",
                                    id->name, k, (long long)in->t.stride[k], (long long)rm[k]);
        }
        a->input[j] = in->t.data;
    }
    return ATTN_OK;
}

attn_status attn_rt_check(const attn_rt_desc *d, const attn_call *c, attn_rt_args *out,
                          attn_error *err) {
    return rt_check_call(d, c, out, true, err);
}

attn_status rt_check_call(const attn_rt_desc *d, const attn_call *c, attn_rt_args *out,
                          bool disjoint, attn_error *err) {
    rt_ok(err);
    if (!d) return rt_error(err, ATTN_ERR_NULL, "the kernel descriptor is NULL");
    if (!c) return rt_error(err, ATTN_ERR_NULL, "the call is NULL");
    attn_status s = rt_check_desc(d, err);
    if (s) return s;
    if (d->page_size > 0)
        return rt_error(err, ATTN_ERR_ARG, "'%s' is a paged kernel (kv_cache = paged(%d)): run it with a paged call "
                        "(attn_run_paged, attn_rt_launch_paged)", d->name ? d->name : "?", d->page_size);
    if (c->threads < 0)
        return rt_error(err, ATTN_ERR_ARG, "threads is %d, expected >= 0 (0: all cores)",
                        c->threads);
    if (c->ninputs < 0) return rt_error(err, ATTN_ERR_ARG, "ninputs is %d, negative", c->ninputs);
    if (c->ninputs > 0 && !c->inputs)
        return rt_error(err, ATTN_ERR_NULL, "inputs is NULL but ninputs is %d", c->ninputs);

    const attn_tensor *ts[5] = {&c->q, &c->k, &c->v, &c->o, &c->lse};
    static const char *const names[5] = {"q", "k", "v", "o", "lse"};
    bool has_lse = c->lse.data != NULL;
    for (int i = 0; i < 5; i++) {
        int want = i == 4 ? 3 : 4;
        if (i == 4 && !has_lse) break;
        if (ts[i]->ndim != want)
            return rt_error(err, ATTN_ERR_RANK, "%s: %d dims, expected %d", names[i],
                            ts[i]->ndim, want);
    }
    /* a tensor with no element (q_len or kv_len 0) may have NULL data: nothing is read */
    for (int i = 0; i < 4; i++)
        if (!ts[i]->data && !rt_tensor_empty(ts[i]))
            return rt_error(err, ATTN_ERR_NULL, "%s: data is NULL", names[i]);

    /* q fixes batch and q_len, k fixes kv_len; the spec fixes the rest. */
    const char *from_q = "as in q", *from_k = "as in k", *spec = "from the spec";
    int64_t B = c->q.shape[0], Lq = c->q.shape[2], Lk = c->k.shape[2];
    int64_t H = d->heads, KH = d->kv_heads, DQ = d->qk_dim, DV = d->v_dim;
    {
        int64_t w[4] = {-1, H, -1, DQ};
        const char *why[4] = {"", spec, "", spec};
        if ((s = rt_check_shape("q", &c->q, 4, rt_q_dims, w, why, err))) return s;
    }
    {
        int64_t w[4] = {B, KH, -1, DQ};
        const char *why[4] = {from_q, spec, "", spec};
        if ((s = rt_check_shape("k", &c->k, 4, rt_k_dims, w, why, err))) return s;
    }
    {
        int64_t w[4] = {B, KH, Lk, DV};
        const char *why[4] = {from_q, spec, from_k, spec};
        if ((s = rt_check_shape("v", &c->v, 4, rt_v_dims, w, why, err))) return s;
    }
    {
        int64_t w[4] = {B, H, Lq, DV};
        const char *why[4] = {from_q, spec, from_q, spec};
        if ((s = rt_check_shape("o", &c->o, 4, rt_o_dims, w, why, err))) return s;
    }
    if (has_lse) {
        int64_t w[3] = {B, H, Lq};
        const char *why[3] = {from_q, spec, from_q};
        if ((s = rt_check_shape("lse", &c->lse, 3, rt_lse_dims, w, why, err))) return s;
    }

    int64_t elem = rt_dtype_size(d->dtype), kv_elem = rt_dtype_size(rt_kv_dtype(d));
    RtView v[5];
    for (int i = 0; i < (has_lse ? 5 : 4); i++)
        if ((s = rt_view(&v[i], names[i], ts[i], i == 4 ? 4 : (i == 1 || i == 2) ? kv_elem : elem, err))) return s;
    if ((s = rt_check_no_overlap(&v[3], err))) return s;
    if (has_lse) {
        if ((s = rt_check_no_overlap(&v[4], err))) return s;
        if (rt_ranges_overlap(&v[3], &v[4]))
            return rt_error(err, ATTN_ERR_STRIDE, "o and lse overlap in memory");
    }

    int64_t q_offset = c->q_offset;
    if (!c->q_offset_set && (q_offset == 0 || q_offset == ATTN_Q_OFFSET_DEFAULT)) {
        q_offset = Lk - Lq;
    } else if (q_offset < -RT_MAX_DIM_SIZE || q_offset > RT_MAX_DIM_SIZE) {
        return rt_error(err, ATTN_ERR_OFFSET, "q_offset is %lld, outside [-2^40, 2^40]",
                        (long long)q_offset);
    }

    attn_rt_args a;
    memset(&a, 0, sizeof a);
    a.q = c->q.data;
    a.k = c->k.data;
    a.v = c->v.data;
    a.o = c->o.data;
    a.lse = has_lse ? c->lse.data : NULL;
    a.batch = B;
    a.q_len = Lq;
    a.kv_len = Lk;
    a.q_offset = q_offset;
    a.k_begin = 0;
    a.k_end = Lk;
    for (int i = 0; i < 3; i++) {
        a.q_stride[i] = v[0].stride[i];
        a.k_stride[i] = v[1].stride[i];
        a.v_stride[i] = v[2].stride[i];
        a.o_stride[i] = v[3].stride[i];
    }
    if (has_lse) {
        a.lse_stride[0] = v[4].stride[0];
        a.lse_stride[1] = v[4].stride[1];
    }
    if ((s = rt_check_inputs(d, c, &a, -1, err))) return s;
    if (disjoint) { /* an output sharing bytes with what the call reads gives a wrong answer */
        RtRange outs[2] = {rt_view_range(&v[3]), has_lse ? rt_view_range(&v[4]) : (RtRange){0}};
        RtRange ins[3 + ATTN_MAX_INPUTS];
        for (int i = 0; i < 3; i++) ins[i] = rt_view_range(&v[i]);
        int nin = 3 + rt_input_ranges(c->inputs, c->ninputs, ins + 3);
        if ((s = rt_check_disjoint(outs, has_lse ? 2 : 1, ins, nin, err))) return s;
    }
    if (out) *out = a;
    return ATTN_OK;
}

static attn_status rt_launch_args(const attn_rt_desc *d, const attn_call *c, attn_rt_args *ap,
                                  attn_rt_pool *pool, attn_error *err);

/* The shared state of one launch. */
typedef struct RtLaunch {
    const attn_rt_args *args;  /* one per key split (args[s]), or just one */
    attn_rt_tile_fn fn;        /* the tile function, or the group function */
    int64_t units;      /* per batch row: query heads, or K/V heads (grouped) */
    int64_t bu;         /* batch * units: tasks per query tile */
    int64_t ntiles;     /* query tiles per (b, unit) */
    int64_t block_q;    /* query rows per tile */
    int64_t nsplit;     /* key splits (1: none) */
    int64_t share;      /* consecutive units on one K/V head (divides units) */
    int64_t kv_heads;   /* all: the group function's calls per K/V head after a stop */
    bool all;           /* one unit: the group function over every K/V head (kvh -1) */
    atomic_int failed;  /* a tile reported an input index out of bounds */
} RtLaunch;

/* Unit by unit (the units sharing a K/V head side by side, tile by tile), each unit's tiles
 * late to early. So the tasks that run close in time share their K/V rows in cache: a band's
 * consecutive tiles overlap, a causal tile's keys are the next one's; and late (under causal
 * masks, heavy) tiles start early. */
void rt_task_order(int64_t t, int64_t ntiles, int64_t share, int64_t *tile, int64_t *r) {
    int64_t in = t % share;
    t /= share;
    *tile = ntiles - 1 - t % ntiles;
    *r = t / ntiles * share + in;
}

int64_t rt_cut_tiles(int64_t block_q, int64_t floor_q, int64_t units, int64_t q_len, int threads, int per) {
    if (per <= 0) per = 4;
    while (threads > 1 && block_q / 2 >= floor_q && units * ((q_len + block_q - 1) / block_q) < per * (int64_t)threads)
        block_q /= 2;
    return block_q;
}

/* Task t runs key split t % nsplit of the tile rt_task_order gives. */
static void rt_launch_task(void *ctx, int64_t t) {
    RtLaunch *l = ctx;
    if (atomic_load_explicit(&l->failed, memory_order_relaxed)) return;
    int64_t s = t % l->nsplit, tile, r;
    rt_task_order(t / l->nsplit, l->ntiles, l->share, &tile, &r);
    int64_t b = r / l->units, u = r % l->units;
    const attn_rt_args *a = &l->args[s];
    int64_t q0 = tile * l->block_q, q1 = q0 + l->block_q;
    if (q1 > a->q_len) q1 = a->q_len;
    if (!l->all) {
        if (l->fn(a, b, u, q0, q1) != 0) atomic_store_explicit(&l->failed, 1, memory_order_relaxed);
        return;
    }
    /* every K/V head in one call; what it leaves (a block it cannot take, and the keys after)
     * head by head, resuming from its o and lse */
    int64_t from, kend = a->k_end > 0 ? a->k_end : a->kv_len;
    bool resume;
    if (!rt_group_all_rest(l->fn(a, b, -1, q0, q1), a->k_begin, kend, &from, &resume)) {
        atomic_store_explicit(&l->failed, 1, memory_order_relaxed);
        return;
    }
    attn_rt_args h = *a;
    h.k_begin = from;
    h.resume = resume;
    for (int64_t kvh = 0; from < kend && kvh < l->kv_heads; kvh++)
        if (l->fn(&h, b, kvh, q0, q1) != 0) {
            atomic_store_explicit(&l->failed, 1, memory_order_relaxed);
            return;
        }
}

int64_t rt_kv_share(const attn_rt_desc *d, int64_t units) {
    int64_t g = d->group_size;
    return units == d->heads && g > 1 && d->heads == g * d->kv_heads ? g : 1;
}

/* Fewer keys per split than this do not pay for the merge. */
#define RT_SPLIT_MIN_KEYS 256

/* o and lse of the call from the splits' partial outputs (f32 [nsplit][batch][heads][q_len]
 * x [v_dim] and x [1]): lse = log sum exp(lse_s), o = sum exp(lse_s - lse) o_s; a row no split
 * saw gets zeros and -inf (as the kernel writes it), a row with a NaN lse in any split NaN. */
static void rt_merge_splits(const attn_rt_args *a, int64_t H, int64_t DV, int64_t nsplit,
                            const float *po, const float *pl) {
    int64_t rows = a->batch * H * a->q_len;
    for (int64_t b = 0; b < a->batch; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < a->q_len; i++) {
                int64_t row = (b * H + h) * a->q_len + i;
                float m = -INFINITY;
                bool nan = false; /* a split whose keys made a NaN: the row is NaN, as unsplit */
                for (int64_t s = 0; s < nsplit; s++) {
                    m = fmaxf(m, pl[s * rows + row]);
                    nan |= isnan(pl[s * rows + row]);
                }
                float *o = (float *)a->o + b * a->o_stride[0] + h * a->o_stride[1] + i * a->o_stride[2];
                float wsum = nan ? NAN : 0;
                for (int64_t d = 0; d < DV; d++) o[d] = nan ? NAN : 0;
                for (int64_t s = 0; s < nsplit && m > -INFINITY && !nan; s++) {
                    float l = pl[s * rows + row];
                    if (l == -INFINITY) continue;
                    float w = expf(l - m);
                    wsum += w;
                    const float *os = po + (s * rows + row) * DV;
                    for (int64_t d = 0; d < DV; d++) o[d] += w * os[d];
                }
                float inv = wsum > 0 ? 1.0f / wsum : nan ? NAN : 0.0f;
                for (int64_t d = 0; d < DV; d++) o[d] *= inv;
                if (a->lse)
                    a->lse[b * a->lse_stride[0] + h * a->lse_stride[1] + i] = wsum > 0 ? m + logf(wsum) : nan ? NAN : -INFINITY;
            }
}

/* Per-block min/max of the inputs the kernel prunes with: built once per call, O(input size),
 * shared by every head and query tile. */
attn_status rt_summaries_build(const attn_rt_desc *d, attn_rt_args *a, attn_error *err) {
    for (int i = 0; i < d->ninputs && i < ATTN_MAX_INPUTS; i++) {
        const attn_rt_input_desc *in = &d->inputs[i];
        if (!in->summarize || in->dtype != ATTN_I32 || in->rank < 1) continue;
        int64_t rows = 1, n = a->input_dim[i][in->rank - 1];
        for (int k = 0; k < in->rank - 1; k++) rows *= a->input_dim[i][k]; /* checked sizes */
        int64_t nb = (n + ATTN_SUMMARY_BLOCK - 1) / ATTN_SUMMARY_BLOCK;
        int32_t *sum = malloc(sizeof(int32_t) * 2 * (size_t)(rows * nb));
        if (!sum) {
            rt_summaries_free(a);
            return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the summaries of input '%s'", in->name);
        }
        const int32_t *src = a->input[i];
        for (int64_t r = 0; r < rows; r++)
            for (int64_t blk = 0; blk < nb; blk++) {
                int64_t t0 = blk * ATTN_SUMMARY_BLOCK, t1 = t0 + ATTN_SUMMARY_BLOCK < n ? t0 + ATTN_SUMMARY_BLOCK : n;
                int32_t lo = src[r * n + t0], hi = lo;
                for (int64_t t = t0 + 1; t < t1; t++) {
                    int32_t x = src[r * n + t];
                    lo = x < lo ? x : lo;
                    hi = x > hi ? x : hi;
                }
                sum[(r * nb + blk) * 2] = lo;
                sum[(r * nb + blk) * 2 + 1] = hi;
            }
        a->summary[i] = sum;
    }
    return ATTN_OK;
}

void rt_summaries_free(attn_rt_args *a) {
    for (int i = 0; i < ATTN_MAX_INPUTS; i++) {
        free((void *)a->summary[i]);
        a->summary[i] = NULL;
    }
}

attn_status rt_index_error(const attn_rt_desc *d, attn_error *err) {
    char names[256] = "";
    size_t len = 0;
    for (int k = 0; d && k < d->ninputs && len < sizeof names; k++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s'%s'", k ? ", " : "", d->inputs[k].name);
    return rt_error(err, ATTN_ERR_INDEX,
                    "a runtime input was read out of bounds: an index computed from the positions or "
                    "from an input's values fell outside the input (the block declares %s)",
                    len ? names : "no input");
}

bool rt_empty_call(const attn_rt_args *a, int64_t heads, int64_t v_dim, attn_dtype dtype) {
    if (a->q_len == 0 || a->batch == 0) return true;
    if (a->kv_len > 0) return false;
    int64_t elem = rt_dtype_size(dtype);
    for (int64_t b = 0; b < a->batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < a->q_len; i++) {
                /* +0.0 is all-zero bits in f32, f16 and bf16 */
                memset((char *)a->o + (b * a->o_stride[0] + h * a->o_stride[1] + i * a->o_stride[2]) * elem, 0,
                       (size_t)(v_dim * elem));
                if (a->lse) a->lse[b * a->lse_stride[0] + h * a->lse_stride[1] + i] = -INFINITY;
            }
    return true;
}

int rt_call_threads(const attn_call *c, attn_rt_pool *pool) {
    int threads = c->threads;
    if (threads == 0) threads = pool ? attn_rt_pool_threads(pool) : attn_rt_cpu_count();
    return threads < 1 ? 1 : threads;
}

attn_status attn_rt_launch(const attn_rt_desc *d, const attn_call *c, attn_rt_pool *pool,
                           attn_error *err) {
    attn_rt_args a;
    attn_status s = attn_rt_check(d, c, &a, err);
    if (s) return s;
    return rt_launch_args(d, c, &a, pool, err);
}

/* A tensor whose dim 2 holds rows [begin, begin + shape[2]) of `len` rows, as a view of all
 * `len` rows (never read outside the rows it holds): explicit strides, the base moved back
 * `begin` rows with integer arithmetic. */
static attn_status rt_rebase(const char *name, const attn_tensor *t, int64_t elem, int64_t len, int64_t begin,
                             attn_tensor *out, attn_error *err) {
    RtView v;
    attn_status s = rt_view(&v, name, t, elem, err);
    if (s) return s;
    *out = *t;
    for (int d = 0; d < t->ndim; d++) out->stride[d] = v.stride[d];
    out->shape[2] = len;
    int64_t back;
    if (t->ndim != 4 || __builtin_mul_overflow(begin, v.stride[2], &back) || __builtin_mul_overflow(back, elem, &back) ||
        (uintptr_t)back > (uintptr_t)t->data)
        return rt_error(err, ATTN_ERR_OVERFLOW, "%s: the window's offset overflows", name);
    out->data = (void *)((uintptr_t)t->data - (uintptr_t)back);
    return ATTN_OK;
}

attn_status rt_window_call(const attn_rt_desc *d, const attn_call *c, int64_t kv_len, int64_t k_begin,
                           attn_call *out, attn_error *err) {
    if (!d || !c) return rt_error(err, ATTN_ERR_NULL, "the kernel descriptor and the call are required");
    if (c->k.ndim != 4 || c->v.ndim != 4)
        return rt_error(err, ATTN_ERR_RANK, "k and v: 4 dims expected");
    int64_t n = c->k.shape[2];
    if (c->v.shape[2] != n)
        return rt_error(err, ATTN_ERR_SHAPE, "v: dim 2 (kv_len) is %lld, expected %lld (as in k)",
                        (long long)c->v.shape[2], (long long)n);
    if (k_begin < 0 || n < 0 || kv_len < 0 || kv_len > RT_MAX_DIM_SIZE || n > kv_len - k_begin)
        return rt_error(err, ATTN_ERR_SHAPE, "a key window [%lld, %lld) outside [0, %lld)", (long long)k_begin,
                        (long long)(k_begin + n), (long long)kv_len);
    /* nothing of the window may be an output */
    int64_t elem = rt_dtype_size(d->dtype), kv_elem = rt_dtype_size(rt_kv_dtype(d));
    RtView v[5];
    const attn_tensor *ts[5] = {&c->q, &c->k, &c->v, &c->o, &c->lse};
    static const char *const names[5] = {"q", "k", "v", "o", "lse"};
    bool has_lse = c->lse.data != NULL;
    attn_status s;
    for (int i = 0; i < (has_lse ? 5 : 4); i++) {
        if (ts[i]->ndim < 1 || ts[i]->ndim > ATTN_MAX_DIMS)
            return rt_error(err, ATTN_ERR_RANK, "%s: %d dims", names[i], ts[i]->ndim);
        if ((s = rt_view(&v[i], names[i], ts[i], i == 4 ? 4 : (i == 1 || i == 2) ? kv_elem : elem, err))) return s;
    }
    RtRange outs[2] = {rt_view_range(&v[3]), has_lse ? rt_view_range(&v[4]) : (RtRange){0}};
    RtRange ins[3 + ATTN_MAX_INPUTS];
    for (int i = 0; i < 3; i++) ins[i] = rt_view_range(&v[i]);
    int nin = 3 + rt_input_ranges(c->inputs, c->ninputs, ins + 3);
    if ((s = rt_check_disjoint(outs, has_lse ? 2 : 1, ins, nin, err))) return s;
    *out = *c;
    if ((s = rt_rebase("k", &c->k, kv_elem, kv_len, k_begin, &out->k, err)) ||
        (s = rt_rebase("v", &c->v, kv_elem, kv_len, k_begin, &out->v, err)))
        return s;
    return ATTN_OK;
}

attn_status rt_launch_window(const attn_rt_desc *d, const attn_call *c, int64_t kv_len, int64_t k_begin,
                             attn_rt_pool *pool, attn_error *err) {
    attn_call w;
    attn_status s = rt_window_call(d, c, kv_len, k_begin, &w, err);
    if (s) return s;
    attn_rt_args a;
    if ((s = rt_check_call(d, &w, &a, false, err))) return s;
    a.k_begin = k_begin;
    a.k_end = k_begin + c->k.shape[2];
    if (a.k_end == a.k_begin) { /* no key: every row sees none */
        a.kv_len = 0;
        rt_empty_call(&a, d->heads, d->v_dim, d->dtype);
        return rt_ok(err);
    }
    return rt_launch_args(d, &w, &a, pool, err);
}

static attn_status rt_launch_args(const attn_rt_desc *d, const attn_call *c, attn_rt_args *ap,
                                  attn_rt_pool *pool, attn_error *err) {
    attn_rt_args a = *ap;
    attn_status s;
    if (!d->tile) return rt_error(err, ATTN_ERR_NULL, "descriptor '%s' has no tile function",
                                  d->name ? d->name : "?");
    if (rt_empty_call(&a, d->heads, d->v_dim, d->dtype)) return ATTN_OK;
    int threads = rt_call_threads(c, pool);

    /* short queries (decode): the heads sharing a K/V head run as one task, loading each K/V
     * block once for all of them */
    int64_t G = d->group && d->group_size > 1 && d->heads == (int64_t)d->group_size * d->kv_heads
                    ? d->group_size : 1;
    if (G > 1 && a.q_len >= d->block_q) G = 1;
    RtLaunch l = {.args = &a, .fn = G > 1 ? d->group : d->tile, .nsplit = 1};
    atomic_init(&l.failed, 0);
    /* K/V heads side by side ([batch, kv_len, kv_heads, dim], a key's heads closer than its
     * keys): one call for every K/V head, which reads each key's heads together (each head
     * alone would read a row in every kv_heads); f32 (it may resume from o), kv_len < 2^31 */
    l.all = G > 1 && d->group_all && d->dtype == ATTN_F32 && a.kv_len < INT32_MAX - 2 &&
            llabs(a.k_stride[1]) < llabs(a.k_stride[2]) && llabs(a.v_stride[1]) < llabs(a.v_stride[2]);
    l.kv_heads = d->kv_heads;
    l.units = l.all ? 1 : G > 1 ? d->kv_heads : d->heads;
    l.share = rt_kv_share(d, l.units);
    l.block_q = G > 1 ? (d->block_q / G > 1 ? d->block_q / G : 1) : d->block_q;
    l.bu = a.batch * l.units; /* <= 2^40 * 2^31: fits */
    /* tall tiles (dense masks take 256 rows, windows 1024, residue classes up to 4096) cut
     * down to min_block_q rows (residue classes stop at 2048: their tiles hold block_q / r rows
     * a class) */
    if (G == 1 && d->min_block_q > 0)
        l.block_q = rt_cut_tiles(l.block_q, d->min_block_q, l.bu, a.q_len, threads, d->cut_below);
    l.ntiles = (a.q_len + l.block_q - 1) / l.block_q;
    int64_t ntasks;
    if (__builtin_mul_overflow(l.bu, l.ntiles, &ntasks))
        return rt_error(err, ATTN_ERR_OVERFLOW, "batch * heads * query tiles overflows");
    if ((s = rt_summaries_build(d, &a, err))) return s;
    float *lse_scratch = NULL;
    if (l.all && !a.lse) { /* the calls after a stop resume from an lse */
        lse_scratch = malloc(sizeof(float) * (size_t)(a.batch * d->heads * a.q_len));
        if (!lse_scratch) {
            rt_summaries_free(&a);
            return rt_error(err, ATTN_ERR_NOMEM, "out of memory for the decode's log-sum-exps");
        }
        a.lse = lse_scratch;
        a.lse_stride[0] = d->heads * a.q_len;
        a.lse_stride[1] = a.q_len;
    }

    /* fewer tasks than threads (decode): split the keys; each split writes a partial (o, lse)
     * to scratch, merged through the log-sum-exps */
    attn_rt_args *sargs = NULL;
    float *scratch = NULL;
    int64_t nsplit = 1, rows = a.batch * d->heads * a.q_len, nkeys = a.k_end - a.k_begin;
    /* one task for every K/V head (all): a batch of three sequences is three tasks where
     * there were 24 (8 K/V heads), too few to share evenly; their keys split into about four
     * tasks a thread */
    int64_t want = l.all && threads > 1 ? 4 * (int64_t)threads : threads;
    if (ntasks < want && d->dtype == ATTN_F32) {
        nsplit = (want + ntasks - 1) / ntasks;
        if (nsplit > nkeys / RT_SPLIT_MIN_KEYS) nsplit = nkeys / RT_SPLIT_MIN_KEYS;
        if (nsplit > 64) nsplit = 64;
        if (nsplit > 1 && rows * (d->v_dim + 1) * nsplit > ((int64_t)1 << 26)) nsplit = 1; /* 256 MiB */
    }
    if (nsplit > 1) {
        sargs = malloc(sizeof *sargs * (size_t)nsplit);
        scratch = malloc(sizeof(float) * (size_t)(rows * (d->v_dim + 1) * nsplit));
        if (!sargs || !scratch) {
            free(sargs);
            free(scratch);
            sargs = NULL;
            scratch = NULL;
            nsplit = 1; /* still correct, unsplit */
        }
    }
    if (nsplit > 1) {
        float *po = scratch, *pl = scratch + rows * d->v_dim * nsplit;
        for (int64_t s2 = 0; s2 < nsplit; s2++) {
            attn_rt_args *sa = &sargs[s2];
            *sa = a;
            sa->k_begin = a.k_begin + nkeys * s2 / nsplit;
            sa->k_end = a.k_begin + nkeys * (s2 + 1) / nsplit;
            sa->o = po + s2 * rows * d->v_dim;
            sa->o_stride[2] = d->v_dim;
            sa->o_stride[1] = a.q_len * d->v_dim;
            sa->o_stride[0] = d->heads * a.q_len * d->v_dim;
            sa->lse = pl + s2 * rows;
            sa->lse_stride[1] = a.q_len;
            sa->lse_stride[0] = d->heads * a.q_len;
        }
        l.args = sargs;
        l.nsplit = nsplit;
        ntasks *= nsplit;
    }

    s = rt_launch_tasks(pool, threads, ntasks, rt_launch_task, &l, (size_t)d->stack, err);
    if (s == ATTN_OK && nsplit > 1 && !atomic_load(&l.failed))
        rt_merge_splits(&a, d->heads, d->v_dim, nsplit, scratch, scratch + rows * d->v_dim * nsplit);
    free(sargs);
    free(scratch);
    free(lse_scratch);
    rt_summaries_free(&a);
    if (s != ATTN_OK) return s;
    if (atomic_load(&l.failed))
        return rt_index_error(d, err);
    return ATTN_OK;
}
