/* cg_tmpl_grad.c — the template `grad_step` (role grad): what the backward needs the spec for,
 * as two small functions the runtime's backward (runtime/grad.c) calls:
 *
 *   int32_t <tile>_grad_bounds(const attn_rt_args *a, int64_t b, int64_t h, int64_t q, int64_t *k)
 *     k[0], k[1] = the keys the query at position q of (b, h) may see: [k_lo, k_hi] of the
 *     prune pass (every key without it);
 *   int32_t <tile>_grad_step(const attn_rt_args *a, int64_t b, int64_t h, int64_t q, int64_t k0,
 *                            float *fio, int64_t *iio)
 *     for the W keys k0 .. k0+W-1 of the query at q: fio[0..W) holds the scaled scores s on
 *     entry and gets the modified scores (-inf where the mask hides the key or it is past
 *     kv_len); fio[W..2W) d score / ds; for each f32 input read r of the score,
 *     fio[(2+r)W ..) the derivative in the value read and iio[rW ..) the element's index;
 *   int32_t <tile>_grad_keys(const attn_rt_args *a, int64_t b, int64_t h, int64_t q,
 *                            const int64_t *k, float *fio, int64_t *iio)
 *     the same for the W keys at positions k[0 .. W) (any: the residue runs' keys).
 *
 * Both return 1 when an input index fell outside its array (lanes the mask hides excepted). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "codegen/cg_kern.h"

/* The function `name` of the grad role: (a, b, h, q, extra args...) -> i32, its entry block
 * open; env set up for row q. The step takes (k0, fio, iio), the keys (k, fio, iio), the
 * bounds (k). */
enum { GRAD_BOUNDS, GRAD_STEP, GRAD_KEYS };
static LLVMValueRef grad_fn(Cg *c, CgEnv *env, const IrFunc *f, const char *name, int kind) {
    bool step = kind != GRAD_BOUNDS;
    LLVMTypeRef params[7] = {c->ptr, c->i64, c->i64, c->i64, kind == GRAD_STEP ? c->i64 : c->ptr, c->ptr, c->ptr};
    LLVMTypeRef fty = LLVMFunctionType(c->i32, params, step ? 7 : 5, 0);
    c->fn = LLVMAddFunction(c->mod, name, fty);
    c->stack = 0;
    LLVMSetLinkage(c->fn, LLVMExternalLinkage);
    c->entry = cg_block(c, "entry");
    LLVMPositionBuilderAtEnd(c->b, c->entry);
    LLVMValueRef a = LLVMGetParam(c->fn, 0);
    memset(env, 0, sizeof *env);
    env->f = f;
    env->args = a;
    env->b = LLVMGetParam(c->fn, 1);
    env->h = LLVMGetParam(c->fn, 2);
    env->q = LLVMGetParam(c->fn, 3);
    env->qmin = env->qmax = env->q;
    env->q_len = field(c, a, offsetof(attn_rt_args, q_len), c->i64);
    env->kv_len = field(c, a, offsetof(attn_rt_args, kv_len), c->i64);
    env->err_slot = cg_alloca(c, c->i1, 1, 1, "err");
    env->dummy = cg_alloca(c, c->i64, 1, 8, "dummy");
    env->tag = -1;
    cg_store(c, cg_bool(c, false), env->err_slot, 1);
    cg_store(c, cg_i64(c, 0), env->dummy, 8);
    return c->fn;
}

static void grad_ret(Cg *c, CgEnv *env) {
    LLVMValueRef e = cg_load(c, c->i1, env->err_slot, 1);
    LLVMBuildRet(c->b, LLVMBuildZExt(c->b, e, c->i32, ""));
}

static bool emit_bounds(Cg *c, const IrFunc *f, const char *name) {
    CgEnv env;
    grad_fn(c, &env, f, name, GRAD_BOUNDS);
    LLVMValueRef out = LLVMGetParam(c->fn, 4);
    LLVMValueRef lo = cg_i64(c, 0), hi = LLVMBuildSub(c->b, env.kv_len, cg_i64(c, 1), "");
    /* bounds of positions (with residue runs, of the mask without its residue conjunct: the
     * runtime keeps the keys of the runs, or grad_step masks the others) */
    if (f->prune.enabled) {
        LLVMValueRef all = cg_lane_mask(c, c->W);
        lo = cg_smax(c, lo, cg_expr(c, &env, f->prune.k_lo, all).v);
        hi = cg_smin(c, hi, cg_expr(c, &env, f->prune.k_hi, all).v);
    }
    cg_store(c, lo, out, 8);
    cg_store(c, hi, cg_gep(c, c->i64, out, cg_i64(c, 1)), 8);
    grad_ret(c, &env);
    return true;
}

static bool emit_step(Cg *c, const IrFunc *f, const char *name, int kind) {
    CgEnv env;
    grad_fn(c, &env, f, name, kind);
    LLVMBuilderRef b = c->b;
    LLVMValueRef k0 = LLVMGetParam(c->fn, 4), fio = LLVMGetParam(c->fn, 5), iio = LLVMGetParam(c->fn, 6);
    unsigned va = 4;
    int W = c->W;
    env.k = kind == GRAD_STEP ? LLVMBuildAdd(b, cg_splat(c, k0), cg_iota(c), "") : cg_load(c, c->vi64, k0, 8);
    LLVMValueRef valid = LLVMBuildICmp(b, LLVMIntSLT, env.k, cg_splat(c, env.kv_len), "");
    LLVMValueRef raw = cg_load(c, c->vf, fio, va);
    /* the mask first: the score is evaluated (and its inputs read) for the keys it lets through */
    LLVMValueRef vis = LLVMBuildAnd(b, cg_expr_vec(c, &env, f->mask, valid), valid, "vis");
    LLVMValueRef s = raw, dfds = cg_const_like(c, c->vf, 1.0);
    env.score = raw;
    if (f->score) s = cg_expr_vec(c, &env, f->score, vis);
    if (f->grad.dscore) dfds = cg_expr_vec(c, &env, f->grad.dscore, vis);
    LLVMValueRef ninf = cg_const_like(c, c->vf, -INFINITY);
    cg_store(c, LLVMBuildSelect(b, vis, s, ninf, ""), fio, va);
    cg_store(c, dfds, cg_gep(c, c->f32, fio, cg_i64(c, W)), va);
    for (int r = 0; r < f->grad.nreads; r++) {
        const IrExpr *ld = f->grad.reads[r].load;
        LLVMValueRef d = cg_expr_vec(c, &env, f->grad.reads[r].d, vis);
        cg_store(c, d, cg_gep(c, c->f32, fio, cg_i64(c, (int64_t)(2 + r) * W)), va);
        /* the element read: row-major over input_dim (in bounds where vis: the score read it) */
        LLVMValueRef lin = LLVMConstNull(c->vi64);
        for (int j = 0; j < ld->nargs; j++) {
            CgVal x = cg_expr(c, &env, ld->args[j], vis);
            size_t off = offsetof(attn_rt_args, input_dim) + sizeof(int64_t) * (size_t)(ld->input * ATTN_MAX_DIMS + j);
            LLVMValueRef dim = cg_splat(c, field(c, env.args, off, c->i64));
            LLVMValueRef xv = x.vary ? x.v : cg_splat(c, x.v);
            lin = LLVMBuildAdd(b, LLVMBuildMul(b, lin, dim, ""), xv, "");
        }
        cg_store(c, lin, cg_gep(c, c->i64, iio, cg_i64(c, (int64_t)r * W)), 8);
    }
    grad_ret(c, &env);
    return true;
}

bool cg_emit_grad(Cg *c, const IrFunc *f, const IrPlan *plan, const char *symbol, StrBuf *err) {
    char name[560];
    static const char *const names[3] = {"bounds", "step", "keys"};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s_grad_%s", symbol, names[i]);
        Cg fc;
        cg_fn_open(c, &fc);
        cg_init_types(&fc, plan->W);
        bool ok = i ? emit_step(&fc, f, name, i) : emit_bounds(&fc, f, name);
        if (!cg_fn_close(c, &fc, fc.fn, false, false, err) || !ok) return false;
    }
    return true;
}
