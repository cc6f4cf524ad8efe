/* test_codegen.c — the codegen on its own: IrFuncs built by hand with the ir.h constructors,
 * run through the pass pipeline, JIT-compiled, called tile by tile on hand-filled
 * attn_rt_args (strided tensors, q_offset variations, ragged lengths, fully masked rows) and
 * compared with a double-precision C reference written here. Also: the target vector widths,
 * AOT emission for the host and a foreign triple, and compiling from two threads at once. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "codegen/codegen.h"
#include "passes/passes.h"

/* One test case: a spec built by hand plus the same semantics in C. */
typedef struct Case Case;
struct Case {
    const char *name;
    int heads, kv_heads, qk, vd;
    const int *head_map;                                  /* NULL: contiguous groups */
    bool (*mask)(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k);
    double (*score)(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k, double s);
    IrExpr *(*build_mask)(IrFunc *f);
    IrExpr *(*build_score)(IrFunc *f);
    void (*add_inputs)(IrFunc *f);
    const int32_t *i32in; /* the data of input 0 when it is i32 */
    const float *f32in;   /* ... when it is f32 */
    attn_dtype dt;        /* storage type of q, k, v, o */
};

static Arena *A(IrFunc *f) { return f->arena; }
static IrExpr *V(IrFunc *f, IrVar v) { return ir_var(A(f), v); }
static IrExpr *I(IrFunc *f, int64_t v) { return ir_const_int(A(f), v); }
static IrExpr *F(IrFunc *f, double v) { return ir_const_float(A(f), v); }
static IrExpr *B2(IrFunc *f, IrExprOp op, IrExpr *x, IrExpr *y) { return ir_binary(A(f), op, x, y); }

// masks and score mods, as IR and as C

static int64_t fdiv(int64_t a, int64_t b) { return a / b - (a % b != 0 && a < 0); }
static int64_t fmod_(int64_t a, int64_t b) { int64_t r = a % b; return r < 0 ? r + b : r; }

static bool m_all(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) { return true; }
static IrExpr *b_all(IrFunc *f) { return ir_const_bool(A(f), true); }

static bool m_causal(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) { return k <= q; }
static IrExpr *b_causal(IrFunc *f) { return B2(f, IR_LE, V(f, IR_V_K), V(f, IR_V_Q)); }

static bool m_sliding(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) { return k <= q && q - k < 17; }
static IrExpr *b_sliding(IrFunc *f) {
    return B2(f, IR_AND, b_causal(f), B2(f, IR_LT, B2(f, IR_SUB, V(f, IR_V_Q), V(f, IR_V_K)), I(f, 17)));
}

static bool m_divmod(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return k <= q && (fmod_(q - k, 5) == 0 || fdiv(k, 8) == fdiv(q, 8));
}
static IrExpr *b_divmod(IrFunc *f) {
    IrExpr *dil = B2(f, IR_EQ, B2(f, IR_MOD, B2(f, IR_SUB, V(f, IR_V_Q), V(f, IR_V_K)), I(f, 5)), I(f, 0));
    IrExpr *blk = B2(f, IR_EQ, B2(f, IR_DIV, V(f, IR_V_K), I(f, 8)), B2(f, IR_DIV, V(f, IR_V_Q), I(f, 8)));
    return B2(f, IR_AND, b_causal(f), B2(f, IR_OR, dil, blk));
}

/* bidirectional window with a mod over possibly negative q - k and an abs */
static bool m_window(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return llabs(q - k) <= 9 || fmod_(k - q, 7) == 3;
}
static IrExpr *b_window(IrFunc *f) {
    IrExpr *d = B2(f, IR_SUB, V(f, IR_V_Q), V(f, IR_V_K));
    IrExpr *ab = ir_call(A(f), IR_FN_ABS, 1, &d);
    IrExpr *m = B2(f, IR_EQ, B2(f, IR_MOD, B2(f, IR_SUB, V(f, IR_V_K), V(f, IR_V_Q)), I(f, 7)), I(f, 3));
    return B2(f, IR_OR, B2(f, IR_LE, ab, I(f, 9)), m);
}

/* congruence masks: rows of one residue class run over strided keys */
static bool m_dil4(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) { return fmod_(q - k, 4) == 0; }
static IrExpr *b_dil4(IrFunc *f) {
    return B2(f, IR_EQ, B2(f, IR_MOD, B2(f, IR_SUB, V(f, IR_V_Q), V(f, IR_V_K)), I(f, 4)), I(f, 0));
}
static bool m_dilcausal(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return k <= q && fmod_(k - q, 3) == 0;
}
static IrExpr *b_dilcausal(IrFunc *f) {
    IrExpr *cg = B2(f, IR_EQ, I(f, 0), B2(f, IR_MOD, B2(f, IR_SUB, V(f, IR_V_K), V(f, IR_V_Q)), I(f, 3)));
    return B2(f, IR_AND, b_causal(f), cg);
}
static bool m_dilwin(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return llabs(q - k) <= 20 && fmod_(k, 5) == fmod_(q, 5);
}
static IrExpr *b_dilwin(IrFunc *f) {
    IrExpr *d = B2(f, IR_SUB, V(f, IR_V_Q), V(f, IR_V_K));
    IrExpr *win = B2(f, IR_LE, ir_call(A(f), IR_FN_ABS, 1, &d), I(f, 20));
    IrExpr *cg = B2(f, IR_EQ, B2(f, IR_MOD, V(f, IR_V_K), I(f, 5)), B2(f, IR_MOD, V(f, IR_V_Q), I(f, 5)));
    return B2(f, IR_AND, win, cg);
}

static double s_softcap(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k, double s) {
    return 50.0 * tanh(s / 50.0);
}
static IrExpr *b_softcap(IrFunc *f) {
    IrExpr *x = B2(f, IR_DIV, V(f, IR_V_SCORE), F(f, 50.0));
    return B2(f, IR_MUL, F(f, 50.0), ir_call(A(f), IR_FN_TANH, 1, &x));
}

/* UniLM: k < src_len[b] || k <= q */
static bool m_unilm(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return k < c->i32in[b] || k <= q;
}
static void in_srclen(IrFunc *f) {
    f->ninputs = 1;
    f->inputs[0] = (IrInput){.name = "src_len", .dtype = ATTN_I32, .rank = 1, .dim_kind = {ATTN_DIM_BATCH}};
}
static IrExpr *b_unilm(IrFunc *f) {
    IrExpr *ix = V(f, IR_V_B);
    IrExpr *ld = ir_load(A(f), 0, IR_TY_INT, 1, &ix);
    return B2(f, IR_OR, B2(f, IR_LT, V(f, IR_V_K), ld), b_causal(f));
}

/* ALiBi: causal, score - slope[h] * (q - k); exp2 and sigmoid ride along */
static double s_alibi(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k, double s) {
    return s - (double)c->f32in[h] * (double)(q - k) + 0.25 / (1.0 + exp(-s)) - exp2(-(double)(k % 3));
}
static void in_slope(IrFunc *f) {
    f->ninputs = 1;
    f->inputs[0] = (IrInput){.name = "slope", .dtype = ATTN_F32, .rank = 1, .dim_kind = {ATTN_DIM_HEADS}};
}
static IrExpr *b_alibi(IrFunc *f) {
    IrExpr *ix = V(f, IR_V_H);
    IrExpr *sl = ir_load(A(f), 0, IR_TY_FLOAT, 1, &ix);
    IrExpr *d = ir_unary(A(f), IR_ITOF, B2(f, IR_SUB, V(f, IR_V_Q), V(f, IR_V_K)));
    IrExpr *sc = V(f, IR_V_SCORE);
    IrExpr *sig = B2(f, IR_MUL, F(f, 0.25), ir_call(A(f), IR_FN_SIGMOID, 1, &sc));
    IrExpr *km = ir_unary(A(f), IR_NEG, ir_unary(A(f), IR_ITOF, B2(f, IR_MOD, V(f, IR_V_K), I(f, 3))));
    IrExpr *e2 = ir_call(A(f), IR_FN_EXP2, 1, &km);
    return B2(f, IR_SUB, B2(f, IR_ADD, B2(f, IR_SUB, sc, B2(f, IR_MUL, sl, d)), sig), e2);
}

/* XLNet-like: rank[b, k] <= rank[b, q] (a varying gather) */
static bool m_rank(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    /* rank is [batch, 64]; q and k stay in range in the cases that use it */
    return c->i32in[b * 64 + k] <= c->i32in[b * 64 + q];
}
static void in_rank(IrFunc *f) {
    f->ninputs = 1;
    f->inputs[0] = (IrInput){.name = "rank", .dtype = ATTN_I32, .rank = 2,
                             .dim_kind = {ATTN_DIM_BATCH, ATTN_DIM_CONST}, .dim_value = {0, 64}};
}
static IrExpr *b_rank(IrFunc *f) {
    IrExpr *ik[2] = {V(f, IR_V_B), V(f, IR_V_K)};
    IrExpr *iq[2] = {V(f, IR_V_B), V(f, IR_V_Q)};
    return B2(f, IR_LE, ir_load(A(f), 0, IR_TY_INT, 2, ik), ir_load(A(f), 0, IR_TY_INT, 2, iq));
}

// building and compiling

typedef struct Built {
    IrModule *m;
    IrFunc *f;
    CgJit *jit;
    attn_rt_tile_fn tile;
    attn_rt_tile_fn group; /* the group function, or NULL */
} Built;

/* The JIT target of the kernel tests: the host, or an older x86 CPU (its code runs here too). */
static const char *jit_cpu;

static bool build(const Case *cs, Built *out, bool prune) {
    memset(out, 0, sizeof *out);
    IrModule *m = ir_module_new();
    IrFunc *f = ir_func_new(m, cs->name);
    f->heads = cs->heads;
    f->kv_heads = cs->kv_heads;
    f->qk_dim = cs->qk;
    f->v_dim = cs->vd;
    f->scale = 1.0 / sqrt((double)cs->qk);
    f->dtype = cs->dt;
    f->head_map = arena_alloc(&m->arena, sizeof(int) * (size_t)cs->heads);
    for (int h = 0; h < cs->heads; h++)
        f->head_map[h] = cs->head_map ? cs->head_map[h] : h / (cs->heads / cs->kv_heads);
    if (cs->add_inputs) cs->add_inputs(f);
    f->mask = cs->build_mask(f);
    if (cs->build_score) f->score = cs->build_score(f);
    StrBuf err;
    sb_init(&err);
    CgTarget t = {NULL, jit_cpu, NULL, 3, 0};
    int w = cg_target_vec_width(&t, &err);
    PassCtx ctx = {.vec_width = w, .opt_level = 3, .no_prune = !prune, .err = &err};
    bool ok = w > 0 && pass_run_pipeline(f, &ctx, NULL);
    if (ok) {
        ok = cg_jit(&f, 1, &t, &out->jit, &out->tile, &err);
    }
    if (ok && ir_group_size(f)) {
        char gsym[300];
        snprintf(gsym, sizeof gsym, "attnc_%s_tile_group", f->name);
        ok = cg_jit_lookup(out->jit, gsym, &out->group);
    }
    if (!ok) printf("build %s: %s\n", cs->name, sb_str(&err));
    sb_free(&err);
    out->m = m;
    out->f = f;
    return ok;
}

static void unbuild(Built *bt) {
    cg_jit_free(bt->jit);
    ir_module_free(bt->m);
}

// data and the reference

typedef struct Shape {
    int64_t batch, q_len, kv_len, q_offset; /* q_offset INT64_MIN: kv_len - q_len */
    int layout;   /* 0: [b, h, s, d] contiguous; 1: [b, s, h, d+pad] (strided) */
    int split;    /* query rows per tile call (0: the schedule's block_q) */
    int via;      /* 0: the tile function; 1: the group function; 2..4: attn_rt_launch, 1..3 threads */
    int nolse;    /* attn_rt_launch without an lse (o checked only) */
} Shape;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* A tensor [batch, heads, rows, dim] in the chosen layout; returns its element count. */
static int64_t layout_strides(int layout, int64_t batch, int64_t heads, int64_t rows, int64_t dim,
                              int64_t st[3]) {
    if (layout == 0) {
        st[2] = dim;
        st[1] = rows * dim;
        st[0] = heads * rows * dim;
    } else {
        int64_t pd = dim + 3;
        st[2] = heads * pd;
        st[1] = pd;
        st[0] = rows * heads * pd + 5;
    }
    return batch * st[0] + 1;
}

static uint16_t to_half(float x) {
    _Float16 h = (_Float16)x;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
static float from_half(uint16_t u) {
    _Float16 h;
    memcpy(&h, &u, 2);
    return (float)h;
}
static uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if (isnan(x)) return 0x7fc0;
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
static float from_bf16(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* The tensor as the kernel sees it: f32 as is, f16/bf16 encoded (and `x` rounded to match). */
static void *encode(attn_dtype dt, float *x, int64_t n) {
    if (dt == ATTN_F32) return x;
    uint16_t *s = malloc(2 * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        s[i] = dt == ATTN_F16 ? to_half(x[i]) : to_bf16(x[i]);
        x[i] = dt == ATTN_F16 ? from_half(s[i]) : from_bf16(s[i]);
    }
    return s;
}

static void decode(attn_dtype dt, const void *s, float *x, int64_t n) {
    if (dt == ATTN_F32) return;
    const uint16_t *u = s;
    for (int64_t i = 0; i < n; i++) x[i] = dt == ATTN_F16 ? from_half(u[i]) : from_bf16(u[i]);
}

/* Runs hand-filled args through attn_rt_launch (grouped heads, key splits) with `threads`. */
static attn_status launch_args(const Case *cs, const Built *bt, const attn_rt_args *a, int threads) {
    const IrFunc *f = bt->f;
    attn_rt_input_desc ind[ATTN_MAX_INPUTS];
    memset(ind, 0, sizeof ind);
    for (int i = 0; i < f->ninputs; i++) {
        ind[i].name = f->inputs[i].name;
        ind[i].dtype = f->inputs[i].dtype;
        ind[i].rank = f->inputs[i].rank;
        ind[i].summarize = f->inputs[i].summarize;
        for (int d = 0; d < ATTN_MAX_DIMS; d++) {
            ind[i].dim_kind[d] = f->inputs[i].dim_kind[d];
            ind[i].dim_value[d] = f->inputs[i].dim_value[d];
        }
    }
    attn_rt_desc d = {.name = f->name, .heads = cs->heads, .kv_heads = cs->kv_heads, .qk_dim = cs->qk,
                      .v_dim = cs->vd, .dtype = cs->dt, .block_q = f->sched.block_q, .ninputs = f->ninputs,
                      .inputs = ind, .tile = bt->tile, .group = bt->group, .group_size = ir_group_size(f),
                      .group_all = bt->group != NULL};
    attn_call c;
    memset(&c, 0, sizeof c);
    attn_tensor *ts[4] = {&c.q, &c.k, &c.v, &c.o};
    const void *data[4] = {a->q, a->k, a->v, a->o};
    const int64_t *st[4] = {a->q_stride, a->k_stride, a->v_stride, a->o_stride};
    int64_t hs[4] = {cs->heads, cs->kv_heads, cs->kv_heads, cs->heads};
    int64_t ls[4] = {a->q_len, a->kv_len, a->kv_len, a->q_len};
    int64_t ds[4] = {cs->qk, cs->qk, cs->vd, cs->vd};
    for (int i = 0; i < 4; i++) {
        *ts[i] = (attn_tensor){(void *)data[i], 4, {a->batch, hs[i], ls[i], ds[i]}, {st[i][0], st[i][1], st[i][2], 1}};
    }
    c.lse = (attn_tensor){a->lse, 3, {a->batch, cs->heads, a->q_len}, {a->lse_stride[0], a->lse_stride[1], 1}};
    c.q_offset = a->q_offset;
    c.threads = threads;
    attn_input in;
    if (f->ninputs) {
        in.name = f->inputs[0].name;
        in.t = (attn_tensor){(void *)a->input[0], f->inputs[0].rank, {0}, {0}};
        for (int k = 0; k < f->inputs[0].rank; k++) in.t.shape[k] = a->input_dim[0][k];
        c.inputs = &in;
        c.ninputs = 1;
    }
    attn_error err;
    attn_status s = attn_rt_launch(&d, &c, NULL, &err);
    if (s && s != ATTN_ERR_INDEX) printf("  launch: %s\n", err.message);
    return s;
}

static void run_case(const Case *cs, Built *btp, const Shape *sh, const char *label) {
    Built bt = *btp;
    int64_t Bn = sh->batch, Lq = sh->q_len, Lk = sh->kv_len;
    int64_t qoff = sh->q_offset == INT64_MIN ? Lk - Lq : sh->q_offset;
    attn_rt_args a;
    memset(&a, 0, sizeof a);
    int64_t nq = layout_strides(sh->layout, Bn, cs->heads, Lq, cs->qk, a.q_stride);
    int64_t nk = layout_strides(sh->layout, Bn, cs->kv_heads, Lk, cs->qk, a.k_stride);
    int64_t nv = layout_strides(sh->layout, Bn, cs->kv_heads, Lk, cs->vd, a.v_stride);
    int64_t no = layout_strides(sh->layout, Bn, cs->heads, Lq, cs->vd, a.o_stride);
    float *q = malloc(sizeof(float) * (size_t)nq), *k = malloc(sizeof(float) * (size_t)nk);
    float *v = malloc(sizeof(float) * (size_t)nv), *o = malloc(sizeof(float) * (size_t)no);
    float *lse = malloc(sizeof(float) * (size_t)(Bn * cs->heads * Lq + 1));
    check_fill(q, (size_t)nq, &rng_state, CHECK_UNIFORM, 2.0);
    check_fill(k, (size_t)nk, &rng_state, CHECK_UNIFORM, 2.0);
    check_fill(v, (size_t)nv, &rng_state, CHECK_UNIFORM, 1.0);
    for (int64_t i = 0; i < no; i++) o[i] = NAN; /* padding must stay untouched */
    void *sq = encode(cs->dt, q, nq), *sk = encode(cs->dt, k, nk), *sv = encode(cs->dt, v, nv);
    void *so = encode(cs->dt, o, no);
    a.q = sq, a.k = sk, a.v = sv, a.o = so, a.lse = lse;
    a.batch = Bn, a.q_len = Lq, a.kv_len = Lk, a.q_offset = qoff;
    a.lse_stride[0] = cs->heads * Lq;
    a.lse_stride[1] = Lq;
    if (cs->i32in) {
        a.input[0] = cs->i32in;
        if (bt.f->inputs[0].rank == 1) a.input_dim[0][0] = Bn;
        else a.input_dim[0][0] = Bn, a.input_dim[0][1] = 64;
    }
    if (cs->f32in) {
        a.input[0] = cs->f32in;
        a.input_dim[0][0] = cs->heads;
    }
    int split = sh->split > 0 ? sh->split : bt.f->sched.block_q;
    int errs = 0;
    if (sh->via == 1) {
        int G = ir_group_size(bt.f);
        for (int64_t b = 0; b < Bn; b++)
            for (int64_t kh = 0; kh < cs->kv_heads; kh++)
                for (int64_t q0 = 0; q0 < Lq; q0 += split) {
                    int64_t q1 = q0 + split < Lq ? q0 + split : Lq;
                    errs += G ? bt.group(&a, b, kh, q0, q1) : 0;
                }
    } else if (sh->via >= 2) {
        if (sh->nolse) a.lse = NULL;
        errs += launch_args(cs, &bt, &a, sh->via - 1) != ATTN_OK;
        a.lse = lse;
    } else {
        for (int64_t b = 0; b < Bn; b++)
            for (int64_t h = 0; h < cs->heads; h++)
                for (int64_t q0 = 0; q0 < Lq; q0 += split) {
                    int64_t q1 = q0 + split < Lq ? q0 + split : Lq;
                    errs += bt.tile(&a, b, h, q0, q1);
                }
    }
    CHECK(errs == 0, "%s: tile reported an index error", label);

    decode(cs->dt, so, o, no);
    /* the reference */
    double tol = cs->dt == ATTN_F32 ? 1e-4 : cs->dt == ATTN_F16 ? 2e-3 : 1.6e-2;
    double *s = malloc(sizeof(double) * (size_t)(Lk + 1));
    double *acc = malloc(sizeof(double) * (size_t)cs->vd);
    int bad = 0;
    double worst = 0;
    for (int64_t b = 0; b < Bn && bad < 5; b++)
        for (int64_t h = 0; h < cs->heads && bad < 5; h++) {
            int64_t kvh = bt.f->head_map[h];
            for (int64_t i = 0; i < Lq && bad < 5; i++) {
                int64_t qp = qoff + i;
                for (int64_t j = 0; j < Lk; j++) {
                    double dot = 0;
                    for (int d = 0; d < cs->qk; d++)
                        dot += (double)q[b * a.q_stride[0] + h * a.q_stride[1] + i * a.q_stride[2] + d] *
                               (double)k[b * a.k_stride[0] + kvh * a.k_stride[1] + j * a.k_stride[2] + d];
                    double sc = dot * bt.f->scale;
                    if (cs->score) sc = cs->score(cs, b, h, qp, j, sc);
                    s[j] = cs->mask(cs, b, h, qp, j) ? sc : -INFINITY;
                }
                double wl = check_softmax(s, Lk);
                for (int d = 0; d < cs->vd; d++) acc[d] = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    if (s[j] == 0) continue;
                    for (int d = 0; d < cs->vd; d++)
                        acc[d] += s[j] * v[b * a.v_stride[0] + kvh * a.v_stride[1] + j * a.v_stride[2] + d];
                }
                const float *orow = o + b * a.o_stride[0] + h * a.o_stride[1] + i * a.o_stride[2];
                for (int d = 0; d < cs->vd; d++) {
                    double want = acc[d];
                    double diff = fabs((double)orow[d] - want);
                    if (diff > worst) worst = diff;
                    if (!(diff <= 0.2 * tol + tol * fabs(want))) {
                        if (bad++ < 3)
                            printf("  %s: o[%ld,%ld,%ld,%d] = %.7g, want %.7g\n", label, (long)b, (long)h, (long)i, d, orow[d], want);
                    }
                }
                float gl = sh->nolse && sh->via >= 2 ? (float)wl : lse[b * a.lse_stride[0] + h * a.lse_stride[1] + i];
                bool lok = wl > -INFINITY ? fabs((double)gl - wl) <= 1e-4 * (1 + fabs(wl)) : (isinf(gl) && gl < 0);
                if (!lok && bad++ < 3)
                    printf("  %s: lse[%ld,%ld,%ld] = %.7g, want %.7g\n", label, (long)b, (long)h, (long)i, gl, wl);
            }
        }
    /* layout 1 pads rows: the padding must still be NaN */
    if (sh->layout == 1 && cs->vd + 3 > cs->vd) {
        const float *pad = o + cs->vd; /* b 0, row 0, head 0: elements vd .. vd+2 */
        CHECK(isnan(pad[0]) && isnan(pad[2]), "%s: wrote into row padding", label);
    }
    CHECK(bad == 0, "%s: %d mismatches (max abs diff %.3g)", label, bad, worst);
    free(s);
    free(acc);
    if (cs->dt != ATTN_F32) {
        free(sq);
        free(sk);
        free(sv);
        free(so);
    }
    free(q);
    free(k);
    free(v);
    free(o);
    free(lse);
}

// the cases

static const int gqa_map[4] = {1, 0, 1, 0};
static int32_t srclen[3] = {5, 0, 40};
static float slopes[4] = {0.5f, 0.25f, 0.125f, 0.0625f};
static int32_t ranks[2 * 64];

static void kernel_tests(int subset) {
    for (int i = 0; i < 2 * 64; i++) ranks[i] = (i * 37) % 64;
    const Case cases[] = {
        {"dense64", 2, 2, 64, 64, NULL, m_all, NULL, b_all, NULL, NULL, NULL, NULL, ATTN_F32},
        {"causal64_gqa", 4, 2, 64, 64, NULL, m_causal, NULL, b_causal, NULL, NULL, NULL, NULL, ATTN_F32},
        {"sliding80", 2, 1, 80, 80, NULL, m_sliding, NULL, b_sliding, NULL, NULL, NULL, NULL, ATTN_F32},
        {"divmod20", 2, 2, 20, 36, NULL, m_divmod, NULL, b_divmod, NULL, NULL, NULL, NULL, ATTN_F32},
        {"window_map", 4, 2, 32, 24, gqa_map, m_window, NULL, b_window, NULL, NULL, NULL, NULL, ATTN_F32},
        {"softcap", 2, 2, 64, 64, NULL, m_causal, s_softcap, b_causal, b_softcap, NULL, NULL, NULL, ATTN_F32},
        {"unilm", 2, 1, 64, 64, NULL, m_unilm, NULL, b_unilm, NULL, in_srclen, srclen, NULL, ATTN_F32},
        {"alibi", 4, 4, 16, 16, NULL, m_causal, s_alibi, b_causal, b_alibi, in_slope, NULL, slopes, ATTN_F32},
        {"xlnet", 2, 2, 40, 40, NULL, m_rank, NULL, b_rank, NULL, in_rank, ranks, NULL, ATTN_F32},
        {"d128", 2, 1, 128, 128, NULL, m_causal, NULL, b_causal, NULL, NULL, NULL, NULL, ATTN_F32},
        {"dilated4", 2, 1, 32, 32, NULL, m_dil4, NULL, b_dil4, NULL, NULL, NULL, NULL, ATTN_F32},
        {"dilcausal", 2, 2, 20, 36, NULL, m_dilcausal, s_softcap, b_dilcausal, b_softcap, NULL, NULL, NULL, ATTN_F32},
        {"dilwin", 2, 1, 64, 64, NULL, m_dilwin, NULL, b_dilwin, NULL, NULL, NULL, NULL, ATTN_F32},
        {"f16", 2, 1, 40, 24, NULL, m_sliding, s_softcap, b_sliding, b_softcap, NULL, NULL, NULL, ATTN_F16},
        {"bf16", 4, 2, 64, 64, NULL, m_causal, NULL, b_causal, NULL, NULL, NULL, NULL, ATTN_BF16},
    };
    const Shape shapes[] = {
        {2, 100, 100, INT64_MIN, 0, 0, 0, 0},   /* prefill, ragged */
        {1, 37, 53, INT64_MIN, 1, 0, 0, 0},     /* strided, q_offset = 16 */
        {2, 1, 61, INT64_MIN, 0, 0, 0, 0},      /* decode */
        {1, 5, 1, INT64_MIN, 0, 0, 0, 0},       /* kv_len 1: rows 0..3 see nothing under causal */
        {1, 33, 40, -3, 1, 7, 0, 0},            /* negative offset: fully masked rows; odd tile splits */
        {1, 20, 17, 30, 0, 3, 0, 0},            /* queries past the keys */
        {3, 64, 64, 0, 0, 0, 0, 0},             /* exactly tiled */
        {2, 3, 0, INT64_MIN, 1, 0, 0, 0},       /* no keys at all: zeros and -inf */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int prune = 1; prune >= 0; prune--) {
            if (subset && (prune == 0 || c % 2 == 1)) continue;
            Built bt;
            if (!build(&cases[c], &bt, prune)) {
                CHECK(false, "%s: build failed", cases[c].name);
                ir_module_free(bt.m);
                continue;
            }
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                Shape sh = shapes[s];
                if (cases[c].i32in == srclen && sh.batch > 3) continue;
                int64_t off = sh.q_offset == INT64_MIN ? sh.kv_len - sh.q_len : sh.q_offset;
                /* rank[b, q] needs 0 <= q < 64 (a negative q is an index error, tested apart) */
                if (cases[c].i32in == ranks && (sh.batch > 2 || off < 0 || off + sh.q_len > 64 || sh.kv_len > 64))
                    continue;
                if (!prune && s % 3 != 0) continue;
                char label[128];
                snprintf(label, sizeof label, "%s/shape%zu%s%s%s", cases[c].name, s, prune ? "" : "/noprune",
                         jit_cpu ? "/" : "", jit_cpu ? jit_cpu : "");
                run_case(&cases[c], &bt, &sh, label);
            }
            unbuild(&bt);
        }
}

/* An index outside an input's bounds makes the tile return 1 and never read outside. */
static bool m_oob(const Case *c, int64_t b, int64_t h, int64_t q, int64_t k) { return true; }
static IrExpr *b_oob(IrFunc *f) {
    IrExpr *ix = B2(f, IR_ADD, V(f, IR_V_K), I(f, 3)); /* src_len[k + 3]: batch-sized */
    IrExpr *ld = ir_load(A(f), 0, IR_TY_INT, 1, &ix);
    return B2(f, IR_GE, ld, I(f, -1000));
}
/* guarded by a short-circuit &&: no error */
static IrExpr *b_guarded(IrFunc *f) {
    IrExpr *ix = V(f, IR_V_K);
    IrExpr *ld = ir_load(A(f), 0, IR_TY_INT, 1, &ix);
    return B2(f, IR_OR, B2(f, IR_GE, V(f, IR_V_K), I(f, 3)), B2(f, IR_GE, ld, I(f, 0)));
}

/* Head sharing: the group function (the query heads of one K/V head as one multi-row tile) and
 * attn_rt_launch with 1..3 threads (grouped decode, key splits merged through the lse) on GQA
 * ratios 1/2/4/8, a general head map, MQA, h and q in masks and score mods, inputs. */
static const int map8[8] = {0, 1, 0, 1, 0, 1, 0, 1};
static float slopes8[8] = {0.5f, 0.25f, 0.125f, 0.0625f, 0.03f, 0.02f, 0.01f, 0.005f};

static void head_tests(void) {
    const Case cases[] = {
        {"g1", 2, 2, 64, 64, NULL, m_causal, NULL, b_causal, NULL, NULL, NULL, NULL, ATTN_F32},
        {"g2", 4, 2, 64, 64, NULL, m_causal, NULL, b_causal, NULL, NULL, NULL, NULL, ATTN_F32},
        {"g4_sliding", 8, 2, 64, 64, NULL, m_sliding, NULL, b_sliding, NULL, NULL, NULL, NULL, ATTN_F32},
        {"mqa8_d128", 8, 1, 128, 128, NULL, m_causal, NULL, b_causal, NULL, NULL, NULL, NULL, ATTN_F32},
        {"map8", 8, 2, 32, 24, map8, m_window, NULL, b_window, NULL, NULL, NULL, NULL, ATTN_F32},
        {"alibi_g4", 8, 2, 16, 16, NULL, m_causal, s_alibi, b_causal, b_alibi, in_slope, NULL, slopes8, ATTN_F32},
        {"unilm_g4", 4, 1, 64, 64, NULL, m_unilm, NULL, b_unilm, NULL, in_srclen, srclen, NULL, ATTN_F32},
        {"softcap_g4", 4, 1, 40, 24, NULL, m_divmod, s_softcap, b_divmod, b_softcap, NULL, NULL, NULL, ATTN_F32},
        {"f16_g2", 4, 2, 40, 24, NULL, m_sliding, NULL, b_sliding, NULL, NULL, NULL, NULL, ATTN_F16},
    };
    const Shape shapes[] = {
        {1, 1, 700, INT64_MIN, 0, 0, 0, 0},  /* decode: key splits */
        {2, 3, 530, INT64_MIN, 1, 0, 0, 0},  /* strided */
        {1, 4, 1100, 100, 0, 0, 0, 0},       /* queries early: later splits see nothing */
        {1, 2, 600, -3, 1, 0, 0, 0},         /* fully masked rows */
        {2, 5, 61, INT64_MIN, 0, 2, 0, 0},   /* short kv, group tasks of 2 rows */
        {3, 1, 1, INT64_MIN, 0, 0, 0, 0},    /* one key */
        /* [b, s, h, d] K/V (the heads of a key side by side): decode calls the group function
         * once for every K/V head (kvh -1), head by head from a block it cannot take (the kv
         * tail, a partial block); without an lse in the call too */
        {1, 1, 700, INT64_MIN, 1, 0, 0, 0},
        {2, 2, 300, INT64_MIN, 1, 0, 0, 1},
        {1, 1, 1100, 400, 1, 0, 0, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Built bt;
        if (!build(&cases[c], &bt, true)) {
            CHECK(false, "%s: build failed", cases[c].name);
            ir_module_free(bt.m);
            continue;
        }
        CHECK((ir_group_size(bt.f) > 0) == (cases[c].heads > cases[c].kv_heads) && (bt.group != NULL) == (ir_group_size(bt.f) > 0),
              "%s: group size %d", cases[c].name, ir_group_size(bt.f));
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int via = bt.group ? 1 : 2; via <= 4; via++) {
                Shape sh = shapes[s];
                sh.via = via;
                char label[128];
                snprintf(label, sizeof label, "%s/heads%zu/via%d", cases[c].name, s, via);
                run_case(&cases[c], &bt, &sh, label);
            }
        /* decode (one row a head) over ragged key counts: 1..17 (inside and just past one vector
         * of keys), past a sub-block and a block, strided; the group function's passes of rows
         * and their prefetches past the last key */
        static const int64_t lens[] = {2, 3, 5, 7, 8, 9, 13, 15, 16, 17, 31, 33, 63, 65, 129, 257};
        for (size_t s = 0; s < sizeof lens / sizeof lens[0]; s++)
            for (int via = bt.group ? 1 : 2; via <= 3; via++) {
                Shape sh = {1 + (int64_t)(s % 2), 1, lens[s], INT64_MIN, (int)(s % 3 == 2), 0, via, 0};
                char label[128];
                snprintf(label, sizeof label, "%s/decode%d/via%d", cases[c].name, (int)lens[s], via);
                run_case(&cases[c], &bt, &sh, label);
            }
        unbuild(&bt);
    }
    /* an index error inside a key split or a group is still reported */
    Case oob = {"oob_g4", 4, 1, 16, 16, NULL, m_oob, NULL, b_oob, NULL, in_srclen, srclen, NULL, ATTN_F32};
    Built bt;
    if (!build(&oob, &bt, true)) {
        CHECK(false, "build oob_g4");
        ir_module_free(bt.m);
        return;
    }
    int64_t L = 800, n = 4 * L * 16;
    float *buf = calloc((size_t)(4 * n), sizeof(float));
    attn_rt_args a;
    memset(&a, 0, sizeof a);
    a.q = buf, a.k = buf + n, a.v = buf + 2 * n, a.o = buf + 3 * n;
    a.batch = 1, a.q_len = 1, a.kv_len = L, a.q_offset = L - 1;
    a.q_stride[2] = 16, a.q_stride[1] = 16;
    a.o_stride[2] = 16, a.o_stride[1] = 16;
    a.k_stride[2] = a.v_stride[2] = 16;
    a.input[0] = srclen;
    a.input_dim[0][0] = 1;
    CHECK(bt.group && bt.group(&a, 0, 0, 0, 1) == 1, "oob_g4: the group function missed the index error");
    for (int t = 1; t <= 3; t++)
        CHECK(launch_args(&oob, &bt, &a, t) == ATTN_ERR_INDEX, "oob_g4: launch with %d threads missed the index error", t);
    free(buf);
    unbuild(&bt);
}

static void error_tests(void) {
    Case cs = {"oob", 1, 1, 16, 16, NULL, m_oob, NULL, b_oob, NULL, in_srclen, srclen, NULL, ATTN_F32};
    for (int which = 0; which < 2; which++) {
        if (which) cs.build_mask = b_guarded, cs.name = "guarded";
        Built bt;
        if (!build(&cs, &bt, true)) {
            CHECK(false, "build %s", cs.name);
            continue;
        }
        attn_rt_args a;
        memset(&a, 0, sizeof a);
        float q[16 * 20] = {0}, k[16 * 20] = {0}, v[16 * 20] = {0}, o[16 * 20];
        a.q = q, a.k = k, a.v = v, a.o = o;
        a.batch = 3, a.q_len = 20, a.kv_len = 20, a.q_offset = 0;
        a.q_stride[2] = a.k_stride[2] = a.v_stride[2] = a.o_stride[2] = 16;
        a.input[0] = srclen;
        a.input_dim[0][0] = 3;
        int r = bt.tile(&a, 0, 0, 0, 20);
        CHECK(which ? r == 0 : r == 1, "%s: tile returned %d", cs.name, r);
        unbuild(&bt);
    }
}

/* NaN in Q row 5 and in K/V of the last key: under a causal mask only row 5 and the rows that
 * see the last key (the last row) may change; every other row stays exact. */
static void nan_tests(void) {
    Case cs = {"nan", 1, 1, 64, 64, NULL, m_causal, NULL, b_causal, NULL, NULL, NULL, NULL, ATTN_F32};
    for (int few = 0; few < 2; few++) {
        Built bt;
        if (!build(&cs, &bt, true)) {
            CHECK(false, "build nan");
            ir_module_free(bt.m);
            return;
        }
        enum { L = 70, D = 64 };
        static float q[L * D], k[L * D], v[L * D], o[L * D], ref[L * D];
        check_fill(q, L * D, &rng_state, CHECK_UNIFORM, 1.0);
        check_fill(k, L * D, &rng_state, CHECK_UNIFORM, 1.0);
        check_fill(v, L * D, &rng_state, CHECK_UNIFORM, 1.0);
        attn_rt_args a;
        memset(&a, 0, sizeof a);
        a.q = q, a.k = k, a.v = v, a.o = ref;
        a.batch = 1, a.q_len = L, a.kv_len = L, a.q_offset = 0;
        a.q_stride[2] = a.k_stride[2] = a.v_stride[2] = a.o_stride[2] = D;
        int split = few ? 3 : L; /* the few-row (dot) path and the packed path */
        for (int q0 = 0; q0 < L; q0 += split) bt.tile(&a, 0, 0, q0, q0 + split < L ? q0 + split : L);
        q[5 * D + 7] = NAN;
        k[(L - 1) * D + 3] = NAN;
        v[(L - 1) * D + 9] = NAN;
        a.o = o;
        for (int q0 = 0; q0 < L; q0 += split) bt.tile(&a, 0, 0, q0, q0 + split < L ? q0 + split : L);
        int bad = 0;
        for (int i = 0; i < L - 1; i++)
            for (int d = 0; d < D; d++)
                if (i != 5 && !(o[i * D + d] == ref[i * D + d])) bad++;
        CHECK(bad == 0, "nan%s: %d values of untouched rows changed", few ? "/few" : "", bad);
        unbuild(&bt);
    }
}

static void target_tests(void) {
    StrBuf err;
    sb_init(&err);
    CgTarget arm = {"aarch64-linux-gnu", NULL, NULL, 2, 0};
    CHECK(cg_target_vec_width(&arm, &err) == 4, "aarch64 width");
    CgTarget hsw = {"x86_64-linux-gnu", "haswell", NULL, 2, 0};
    CHECK(cg_target_vec_width(&hsw, &err) == 8, "haswell width");
    CgTarget skx = {"x86_64-linux-gnu", "skylake-avx512", NULL, 2, 0};
    CHECK(cg_target_vec_width(&skx, &err) == 16, "skx width");
    CgTarget feat = {"x86_64-linux-gnu", "generic", "+avx2,+fma", 2, 0};
    CHECK(cg_target_vec_width(&feat, &err) == 8, "+avx2 width");
    CgTarget bogus = {"nonsense-unknown-none", NULL, NULL, 2, 0};
    CHECK(cg_target_vec_width(&bogus, &err) == 0 && err.len > 0, "unknown triple must fail");
    int host = cg_target_vec_width(NULL, &err);
    CHECK(host == 4 || host == 8 || host == 16, "host width %d", host);
    sb_free(&err);

    /* AOT: object, asm and LLVM for the host, an object for aarch64, LLVM text */
    Case cs = {"aot", 2, 1, 20, 36, NULL, m_divmod, NULL, b_divmod, NULL, NULL, NULL, NULL, ATTN_F32};
    IrModule *m = ir_module_new();
    IrFunc *f = ir_func_new(m, cs.name);
    f->heads = 2, f->kv_heads = 1, f->qk_dim = 20, f->v_dim = 36, f->scale = 0.2;
    f->head_map = arena_alloc(&m->arena, sizeof(int) * 2);
    f->mask = b_divmod(f);
    f->score = b_softcap(f);
    sb_init(&err);
    PassCtx ctx = {.vec_width = 4, .opt_level = 2, .err = &err};
    CHECK(pass_run_pipeline(f, &ctx, NULL), "pipeline: %s", sb_str(&err));
    char obj[] = "/tmp/test_codegen_XXXXXX";
    int fd = mkstemp(obj);
    if (fd >= 0) close(fd);
    CgTarget armt = {"aarch64-linux-gnu", NULL, NULL, 2, 0};
    CHECK(cg_emit_file(&f, 1, &armt, CG_EMIT_OBJ, obj, &err), "aarch64 obj: %s", sb_str(&err));
    FILE *fp = fopen(obj, "rb");
    unsigned char hdr[20] = {0};
    size_t got = fp ? fread(hdr, 1, sizeof hdr, fp) : 0;
    if (fp) fclose(fp);
    CHECK(got == 20 && memcmp(hdr, "\177ELF", 4) == 0 && (hdr[18] | hdr[19] << 8) == 183, "aarch64 ELF");
    CgTarget hostt = {NULL, NULL, NULL, 2, 0};
    CHECK(cg_emit_file(&f, 1, &hostt, CG_EMIT_ASM, obj, &err), "host asm: %s", sb_str(&err));
    CHECK(cg_emit_file(&f, 1, &hostt, CG_EMIT_LLVM, obj, &err), "host ll: %s", sb_str(&err));
    /* under a regular file: no directory there, even for root */
    char bad[sizeof obj + 8];
    snprintf(bad, sizeof bad, "%s/x.o", obj);
    CHECK(!cg_emit_file(&f, 1, &hostt, CG_EMIT_OBJ, bad, &err), "bad path must fail");
    remove(obj);
    char *txt = cg_print_llvm(&f, 1, &hostt, &err);
    CHECK(txt && strstr(txt, "attnc_aot_tile"), "print llvm");
    free(txt);
    {
        /* MLA-sized heads (576/512) for NEON's 4 lanes: 144 and 128 vectors per row */
        IrFunc *g = ir_func_new(m, "mla_big");
        g->heads = 2, g->kv_heads = 1, g->qk_dim = 576, g->v_dim = 512, g->scale = 0.05;
        g->head_map = arena_alloc(&m->arena, sizeof(int) * 2);
        g->mask = b_causal(g);
        PassCtx c4 = {.vec_width = 4, .opt_level = 2, .err = &err};
        CHECK(pass_run_pipeline(g, &c4, NULL), "pipeline: %s", sb_str(&err));
        CHECK(cg_emit_file(&g, 1, &armt, CG_EMIT_OBJ, obj, &err), "aarch64 mla obj: %s", sb_str(&err));
        remove(obj);
    }
    char *sym = cg_tile_symbol(f->arena, f);
    CHECK(sym && strcmp(sym, "attnc_aot_tile") == 0, "symbol");
    sb_free(&err);
    ir_module_free(m);
}

/* The JIT's bundle of objects: the same bytes whatever the number of compile threads, the
 * group function's copies of the tile function's pieces folded, and anything that is not a
 * bundle refused with a message. */
static void bundle_tests(void) {
    IrModule *m = ir_module_new();
    IrFunc *f = ir_func_new(m, "bundle");
    f->heads = 4, f->kv_heads = 2, f->qk_dim = 32, f->v_dim = 32, f->scale = 0.2;
    f->head_map = arena_alloc(&m->arena, sizeof(int) * 4);
    for (int h = 0; h < 4; h++) f->head_map[h] = h / 2;
    f->mask = b_causal(f);
    StrBuf err;
    sb_init(&err);
    int w = cg_target_vec_width(NULL, &err);
    PassCtx ctx = {.vec_width = w, .opt_level = 3, .err = &err};
    CHECK(w > 0 && pass_run_pipeline(f, &ctx, NULL), "pipeline: %s", sb_str(&err));
    CHECK(ir_group_size(f) == 2, "a group function to fold into");
    void *data[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    const char *sym = "bundle_tile";
    for (int i = 0; i < 2; i++) {
        CgTarget t = {NULL, NULL, NULL, 3, i + 1};
        CHECK(cg_emit_object_mem(&f, 1, &t, &sym, &data[i], &len[i], &err), "bundle on %d threads: %s", i + 1, sb_str(&err));
    }
    CHECK(data[0] && data[1] && len[0] == len[1] && memcmp(data[0], data[1], len[0]) == 0,
          "the bundle depends on the compile threads (%zu vs %zu bytes)", len[0], len[1]);
    uint32_t count = 0;
    if (data[0] && len[0] >= 12) memcpy(&count, (char *)data[0] + 8, 4);
    /* the tile and group functions, the tile function's pack/partial/full pieces and the
     * group's few-rows piece (the group's own pack/partial/full are the tile's), and the
     * backward's bounds, step and keys functions */
    CHECK(data[0] && memcmp(data[0], "ATTNCOBJ", 8) == 0 && count == 9, "bundle of %u objects, want 9", count);
    attn_rt_tile_fn tile = NULL, group = NULL;
    CgJit *jit = NULL;
    CHECK(data[0] && cg_jit_object(data[0], len[0], &sym, 1, &jit, &tile, &err) && tile, "link: %s", sb_str(&err));
    CHECK(cg_jit_lookup(jit, "bundle_tile_group", &group) && group, "group function linked");
    cg_jit_free(jit);
    /* truncated, a count past the end, another magic, too short */
    const size_t cut[4] = {len[0] - 1, len[0], len[0], 7};
    for (int i = 0; data[0] && i < 4; i++) {
        char *bad = malloc(len[0]);
        if (!bad) break;
        memcpy(bad, data[0], len[0]);
        if (i == 1) memset(bad + 8, 0xff, 4);
        if (i == 2) bad[0] = 'X';
        sb_free(&err);
        sb_init(&err);
        jit = NULL;
        bool ok = cg_jit_object(bad, cut[i], &sym, 1, &jit, &tile, &err);
        CHECK(!ok && !jit && strstr(sb_str(&err), "not a bundle"), "bad bundle %d must be refused: %s", i, sb_str(&err));
        free(bad);
    }
    free(data[0]);
    free(data[1]);
    sb_free(&err);
    ir_module_free(m);
}

static void *thread_body(void *arg) {
    const Case *cs = arg;
    Built bt;
    bool ok = build(cs, &bt, true);
    if (ok) unbuild(&bt);
    else ir_module_free(bt.m);
    return ok ? arg : NULL;
}

static void thread_tests(void) {
    Case cs = {"thr", 2, 2, 64, 64, NULL, m_causal, s_softcap, b_causal, b_softcap, NULL, NULL, NULL, ATTN_F32};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, thread_body, &cs);
    for (int i = 0; i < 2; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        CHECK(r != NULL, "compile in thread %d", i);
    }
}

int main(void) {
    target_tests();
    error_tests();
    thread_tests();
    bundle_tests();
    nan_tests();
    head_tests();
    kernel_tests(0);
    /* AVX2 (8 lanes) and SSE (4 lanes) code, JIT-compiled for those CPUs, on half the cases */
    jit_cpu = "haswell";
    kernel_tests(1);
    jit_cpu = "nehalem";
    kernel_tests(1);
    jit_cpu = NULL;
    return check_done("test_codegen");
}
