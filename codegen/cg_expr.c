/* cg_expr.c — mask and score-mod expressions as vector code over the W key lanes of a block.
 * Values that depend only on the row (q, h, b, lengths) stay scalar and are broadcast where
 * they meet the key lanes; the prune pass's tile tests are evaluated the same way. */
#include <stddef.h>
#include <stdint.h>

#include "codegen/cg_internal.h"

static LLVMValueRef as_vec(Cg *c, CgVal v) { return v.vary ? v.v : cg_splat(c, v.v); }

/* Brings two operands to the same shape: both uniform, or both varying. */
static void unify(Cg *c, CgVal *x, CgVal *y) {
    if (x->vary == y->vary) return;
    x->v = as_vec(c, *x);
    y->v = as_vec(c, *y);
    x->vary = y->vary = true;
}

static CgVal to_float(Cg *c, const IrExpr *e, CgVal v) {
    if (e->type == IR_TY_FLOAT) return v;
    v.v = LLVMBuildSIToFP(c->b, v.v, v.vary ? c->vf : c->f32, "");
    return v;
}

/* `bad`: <W x i1> lanes (already restricted to the active ones) that read out of bounds. */
static void raise_error(Cg *c, CgEnv *env, LLVMValueRef bad) {
    if (env->collect) {
        *env->collect = LLVMBuildOr(c->b, *env->collect, bad, "");
        return;
    }
    LLVMValueRef old = cg_load(c, c->i1, env->err_slot, 1);
    cg_store(c, LLVMBuildOr(c->b, old, cg_hor(c, bad), ""), env->err_slot, 1);
}

/* inputs[i][idx...]: row-major over input_dim[i][*], every index checked against its dim. */
/* IR_RANGE: min/max of an i32 input over [lo, hi] of its last index, from the per-block
 * summary the runtime built (a superset of the range: still a sound bound); IR_RANGE_NONE
 * when there is no summary or the range leaves the input. Always uniform. */
static CgVal emit_range(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active) {
    LLVMBuilderRef b = c->b;
    bool is_min = e->fn == IR_FN_MIN;
    int rank = e->nargs - 1;
    LLVMValueRef none = cg_i64(c, is_min ? -IR_RANGE_NONE : IR_RANGE_NONE);
    LLVMValueRef dims[ATTN_MAX_DIMS];
    for (int d = 0; d < rank; d++) {
        size_t off = offsetof(attn_rt_args, input_dim) + sizeof(int64_t) * (size_t)(e->input * ATTN_MAX_DIMS + d);
        dims[d] = cg_load(c, c->i64, cg_gep(c, c->i8, env->args, cg_i64(c, (int64_t)off)), 8);
    }
    LLVMValueRef row = cg_i64(c, 0), bad = cg_bool(c, false);
    for (int d = 0; d < rank - 1; d++) {
        LLVMValueRef x = cg_expr(c, env, e->args[d], active).v;
        bad = LLVMBuildOr(b, bad, LLVMBuildICmp(b, LLVMIntUGE, x, dims[d], ""), "");
        row = LLVMBuildAdd(b, LLVMBuildMul(b, row, dims[d], ""), x, "");
    }
    LLVMValueRef lo = cg_expr(c, env, e->args[rank - 1], active).v;
    LLVMValueRef hi = cg_expr(c, env, e->args[rank], active).v;
    LLVMValueRef n = dims[rank - 1];
    bad = LLVMBuildOr(b, bad, LLVMBuildICmp(b, LLVMIntSLT, lo, cg_i64(c, 0), ""), "");
    bad = LLVMBuildOr(b, bad, LLVMBuildICmp(b, LLVMIntSGE, hi, n, ""), "");
    bad = LLVMBuildOr(b, bad, LLVMBuildICmp(b, LLVMIntSGT, lo, hi, ""), "");
    size_t soff = offsetof(attn_rt_args, summary) + sizeof(void *) * (size_t)e->input;
    LLVMValueRef sp = cg_load(c, c->ptr, cg_gep(c, c->i8, env->args, cg_i64(c, (int64_t)soff)), 8);
    bad = LLVMBuildOr(b, bad, LLVMBuildIsNull(b, sp, ""), "");
    LLVMValueRef slot = cg_alloca(c, c->i64, 1, 8, "range");
    cg_store(c, none, slot, 8);
    LLVMBasicBlockRef scan = cg_block(c, "range.scan"), join = cg_block(c, "range.join");
    LLVMBuildCondBr(b, bad, join, scan);
    LLVMPositionBuilderAtEnd(b, scan);
    LLVMValueRef blk = cg_i64(c, ATTN_SUMMARY_BLOCK);
    LLVMValueRef nb = LLVMBuildSDiv(b, LLVMBuildAdd(b, n, cg_i64(c, ATTN_SUMMARY_BLOCK - 1), ""), blk, "");
    LLVMValueRef b0 = LLVMBuildSDiv(b, lo, blk, ""), b1 = LLVMBuildSDiv(b, hi, blk, "");
    LLVMValueRef first = LLVMBuildAdd(b, LLVMBuildMul(b, row, nb, ""), b0, "");
    cg_store(c, LLVMBuildSExt(b, cg_load(c, c->i32, cg_gep(c, c->i32, sp, LLVMBuildAdd(b, LLVMBuildMul(b, first, cg_i64(c, 2), ""), cg_i64(c, !is_min), "")), 4), c->i64, ""), slot, 8);
    CgLoop l;
    LLVMValueRef t = cg_loop_begin(c, &l, LLVMBuildAdd(b, b0, cg_i64(c, 1), ""), LLVMBuildAdd(b, b1, cg_i64(c, 1), ""), cg_i64(c, 1), "rblk");
    LLVMValueRef at = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, LLVMBuildMul(b, row, nb, ""), t, ""), cg_i64(c, 2), ""), cg_i64(c, !is_min), "");
    LLVMValueRef v = LLVMBuildSExt(b, cg_load(c, c->i32, cg_gep(c, c->i32, sp, at), 4), c->i64, "");
    LLVMValueRef cur = cg_load(c, c->i64, slot, 8);
    cg_store(c, is_min ? cg_smin(c, cur, v) : cg_smax(c, cur, v), slot, 8);
    cg_loop_end(c, &l);
    LLVMBuildBr(b, join);
    LLVMPositionBuilderAtEnd(b, join);
    return (CgVal){cg_load(c, c->i64, slot, 8), false};
}

static CgVal emit_load(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active) {
    const IrInput *in = &env->f->inputs[e->input];
    CgVal idx[ATTN_MAX_DIMS];
    bool vary = false;
    for (int d = 0; d < e->nargs; d++) {
        idx[d] = cg_expr(c, env, e->args[d], active);
        vary |= idx[d].vary;
    }
    LLVMBuilderRef b = c->b;
    LLVMTypeRef it = vary ? c->vi64 : c->i64;
    LLVMValueRef lin = vary ? LLVMConstNull(c->vi64) : cg_i64(c, 0);
    LLVMValueRef bad = vary ? LLVMConstNull(c->vi1) : cg_bool(c, false);
    for (int d = 0; d < e->nargs; d++) {
        size_t off = offsetof(attn_rt_args, input_dim) +
                     sizeof(int64_t) * (size_t)(e->input * ATTN_MAX_DIMS + d);
        LLVMValueRef dimp = cg_gep(c, c->i8, env->args, cg_i64(c, (int64_t)off));
        LLVMValueRef dim = cg_load(c, c->i64, dimp, 8);
        LLVMValueRef x = vary ? as_vec(c, idx[d]) : idx[d].v;
        if (vary) dim = cg_splat(c, dim);
        LLVMValueRef oob = LLVMBuildICmp(b, LLVMIntUGE, x, dim, ""); /* also catches x < 0 */
        bad = LLVMBuildOr(b, bad, oob, "");
        x = LLVMBuildSelect(b, oob, LLVMConstNull(it), x, "");
        lin = LLVMBuildAdd(b, LLVMBuildMul(b, lin, dim, ""), x, "");
    }
    size_t poff = offsetof(attn_rt_args, input) + sizeof(void *) * (size_t)e->input;
    LLVMValueRef base = cg_load(c, c->ptr, cg_gep(c, c->i8, env->args, cg_i64(c, (int64_t)poff)), 8);
    LLVMTypeRef et = in->dtype == ATTN_I32 ? c->i32 : c->f32;
    CgVal r = {NULL, vary};
    if (!vary) {
        raise_error(c, env, LLVMBuildAnd(b, cg_splat(c, bad), active, ""));
        LLVMValueRef p = LLVMBuildSelect(b, bad, env->dummy, cg_gep(c, et, base, lin), "");
        r.v = cg_load(c, et, p, 4);
        if (in->dtype == ATTN_I32) r.v = LLVMBuildSExt(b, r.v, c->i64, "");
    } else {
        raise_error(c, env, LLVMBuildAnd(b, bad, active, ""));
        LLVMTypeRef pvt = LLVMVectorType(c->ptr, (unsigned)c->W);
        LLVMValueRef ps = LLVMBuildInBoundsGEP2(b, et, base, &lin, 1, "");
        ps = LLVMBuildSelect(b, bad, cg_splat(c, env->dummy), ps, "");
        LLVMTypeRef vt = LLVMVectorType(et, (unsigned)c->W);
        LLVMTypeRef tys[2] = {vt, pvt};
        LLVMValueRef args[4] = {ps, cg_i32(c, 4), cg_lane_mask(c, c->W), LLVMConstNull(vt)};
        r.v = cg_intr(c, "llvm.masked.gather", tys, 2, args, 4);
        if (in->dtype == ATTN_I32) r.v = LLVMBuildSExt(b, r.v, c->vi64, "");
    }
    return r;
}

static CgVal emit_call(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active) {
    CgVal x = cg_expr(c, env, e->args[0], active);
    LLVMBuilderRef b = c->b;
    bool isint = e->type == IR_TY_INT;
    if (!isint && e->args[0]->type != IR_TY_FLOAT) x = to_float(c, e->args[0], x);
    switch ((IrFn)e->fn) {
    case IR_FN_ABS:
        if (isint) {
            LLVMTypeRef t = LLVMTypeOf(x.v);
            LLVMValueRef a[2] = {x.v, cg_bool(c, false)};
            x.v = cg_intr(c, "llvm.abs", &t, 1, a, 2);
        } else {
            x.v = cg_intr1(c, "llvm.fabs", x.v);
        }
        return x;
    case IR_FN_MIN:
    case IR_FN_MAX: {
        CgVal y = cg_expr(c, env, e->args[1], active);
        if (!isint && e->args[1]->type != IR_TY_FLOAT) y = to_float(c, e->args[1], y);
        unify(c, &x, &y);
        bool mn = e->fn == IR_FN_MIN;
        const char *name = isint ? (mn ? "llvm.smin" : "llvm.smax") : (mn ? "llvm.minnum" : "llvm.maxnum");
        x.v = cg_intr2(c, name, x.v, y.v);
        return x;
    }
    case IR_FN_EXP: x.v = cg_exp(c, x.v); return x;
    case IR_FN_EXP2: x.v = cg_exp2(c, x.v); return x;
    case IR_FN_LOG: x.v = cg_libm1(c, "logf", x.v); return x;
    case IR_FN_LOG2: x.v = cg_libm1(c, "log2f", x.v); return x;
    case IR_FN_SQRT: x.v = cg_intr1(c, "llvm.sqrt", x.v); return x;
    case IR_FN_TANH: x.v = cg_tanh(c, x.v); return x;
    case IR_FN_ERF: x.v = cg_libm1(c, "erff", x.v); return x;
    case IR_FN_SIGMOID: {
        LLVMTypeRef ft = LLVMTypeOf(x.v);
        LLVMValueRef en = cg_exp(c, LLVMBuildFNeg(b, x.v, ""));
        x.v = LLVMBuildFDiv(b, cg_const_like(c, ft, 1.0),
                            LLVMBuildFAdd(b, cg_const_like(c, ft, 1.0), en, ""), "");
        return x;
    }
    case IR_FN_SIN: x.v = cg_libm1(c, "sinf", x.v); return x;
    case IR_FN_COS: x.v = cg_libm1(c, "cosf", x.v); return x;
    case IR_FN_FLOOR: x.v = cg_intr1(c, "llvm.floor", x.v); return x;
    case IR_FN_CEIL: x.v = cg_intr1(c, "llvm.ceil", x.v); return x;
    default: unreachable();
    }
}

static LLVMValueRef and_mask(Cg *c, LLVMValueRef active, CgVal cond, bool negate) {
    LLVMValueRef v = as_vec(c, cond);
    if (negate) v = LLVMBuildNot(c->b, v, "");
    return LLVMBuildAnd(c->b, active, v, "");
}

static const LLVMIntPredicate cmp_pred[] = {LLVMIntEQ, LLVMIntNE, LLVMIntSLT, LLVMIntSLE, LLVMIntSGT, LLVMIntSGE};

/* The i32 value whose sign extension v is (an i32 input's element or a constant that fits),
 * scalar or vector; NULL if v is none of those. */
static LLVMValueRef peel_i32(Cg *c, LLVMValueRef v) {
    if (LLVMIsAConstantInt(v)) {
        long long x = LLVMConstIntGetSExtValue(v);
        return x >= INT32_MIN && x <= INT32_MAX ? cg_i32(c, (int32_t)x) : NULL;
    }
    if (!LLVMIsASExtInst(v)) return NULL;
    LLVMValueRef s = LLVMGetOperand(v, 0);
    LLVMTypeRef t = LLVMTypeOf(s);
    if (LLVMGetTypeKind(t) == LLVMVectorTypeKind) t = LLVMGetElementType(t);
    return t == c->i32 ? s : NULL;
}

/* k against a row-uniform value u over the key lanes in i32 vectors instead of i64 ones (k =
 * kbase + lane, so k < u is lane < clamp(u - kbase, -1, W), the lanes being 0..W-1: exact for
 * any u). NULL: compare as usual. */
static LLVMValueRef narrow_cmp(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active) {
    LLVMBuilderRef b = c->b;
    const IrExpr *a0 = e->args[0], *a1 = e->args[1];
    if (a0->type != IR_TY_INT || a1->type != IR_TY_INT) return NULL;
    LLVMIntPredicate pred = cmp_pred[(int)e->op - (int)IR_EQ];
    bool k0 = a0->op == IR_VAR && a0->var == IR_V_K, k1 = a1->op == IR_VAR && a1->var == IR_V_K;
    const IrExpr *o = k0 ? a1 : a0;
    if (!env->kbase || k0 == k1 || ir_expr_uses_var(o, IR_V_K) || ir_expr_uses_var(o, IR_V_SCORE)) return NULL;
    CgVal u = cg_expr(c, env, o, active);
    if (u.vary) unreachable();
    LLVMValueRef d = cg_smin(c, cg_smax(c, LLVMBuildSub(b, u.v, env->kbase, ""), cg_i64(c, -1)), cg_i64(c, c->W));
    LLVMValueRef dv = cg_splat(c, LLVMBuildTrunc(b, d, c->i32, ""));
    LLVMValueRef lanes[64];
    for (int i = 0; i < c->W; i++) lanes[i] = cg_i32(c, i);
    LLVMValueRef iota = LLVMConstVector(lanes, (unsigned)c->W);
    return k0 ? LLVMBuildICmp(b, pred, iota, dv, "") : LLVMBuildICmp(b, pred, dv, iota, "");
}

CgVal cg_expr(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active) {
    LLVMBuilderRef b = c->b;
    CgVal r = {NULL, false};
    for (int i = 0; i < env->ncache; i++)
        if (env->cache[i].e == e && env->cache[i].tag == env->tag) {
            raise_error(c, env, LLVMBuildAnd(b, env->cache[i].bad, active, ""));
            return env->cache[i].v;
        }
    switch (e->op) {
    case IR_CONST:
        if (e->type == IR_TY_FLOAT) r.v = cg_f32(c, e->fval);
        else if (e->type == IR_TY_BOOL) r.v = cg_bool(c, e->ival != 0);
        else r.v = cg_i64(c, e->ival);
        return r;
    case IR_VAR:
        switch ((IrVar)e->var) {
        case IR_V_Q: r.v = env->q; break;
        case IR_V_K: r.v = env->k; r.vary = true; break;
        case IR_V_H: r.v = env->h; break;
        case IR_V_B: r.v = env->b; break;
        case IR_V_QLEN: r.v = env->q_len; break;
        case IR_V_KVLEN: r.v = env->kv_len; break;
        case IR_V_QMIN: r.v = env->qmin; break;
        case IR_V_QMAX: r.v = env->qmax; break;
        case IR_V_KMIN: r.v = env->kmin; break;
        case IR_V_KMAX: r.v = env->kmax; break;
        case IR_V_SCORE:
            if (!env->score) unreachable();
            r.v = env->score;
            r.vary = true;
            break;
        }
        return r;
    case IR_INPUT: return emit_load(c, env, e, active);
    case IR_RANGE: return emit_range(c, env, e, active);
    case IR_CALL: return emit_call(c, env, e, active);
    case IR_NOT:
        r = cg_expr(c, env, e->args[0], active);
        r.v = LLVMBuildNot(b, r.v, "");
        return r;
    case IR_ITOF: return to_float(c, e->args[0], cg_expr(c, env, e->args[0], active));
    case IR_NEG:
        r = cg_expr(c, env, e->args[0], active);
        r.v = e->type == IR_TY_FLOAT ? LLVMBuildFNeg(b, r.v, "") : LLVMBuildSub(b, LLVMConstNull(LLVMTypeOf(r.v)), r.v, "");
        return r;
    case IR_AND:
    case IR_OR: {
        CgVal x = cg_expr(c, env, e->args[0], active);
        CgVal y = cg_expr(c, env, e->args[1], and_mask(c, active, x, e->op == IR_OR));
        unify(c, &x, &y);
        x.v = e->op == IR_AND ? LLVMBuildAnd(b, x.v, y.v, "") : LLVMBuildOr(b, x.v, y.v, "");
        return x;
    }
    case IR_SELECT: {
        CgVal cond = cg_expr(c, env, e->args[0], active);
        CgVal x = cg_expr(c, env, e->args[1], and_mask(c, active, cond, false));
        CgVal y = cg_expr(c, env, e->args[2], and_mask(c, active, cond, true));
        if (e->type == IR_TY_FLOAT) {
            if (e->args[1]->type != IR_TY_FLOAT) x = to_float(c, e->args[1], x);
            if (e->args[2]->type != IR_TY_FLOAT) y = to_float(c, e->args[2], y);
        }
        unify(c, &x, &y);
        if (cond.vary && !x.vary) {
            x.v = as_vec(c, x);
            y.v = as_vec(c, y);
            x.vary = y.vary = true;
        }
        LLVMValueRef cv = x.vary ? as_vec(c, cond) : cond.v;
        x.v = LLVMBuildSelect(b, cv, x.v, y.v, "");
        return x;
    }
    default: break;
    }
    if (e->op >= IR_EQ && e->op <= IR_GE) {
        LLVMValueRef v = narrow_cmp(c, env, e, active);
        if (v) return (CgVal){v, true};
    }
    /* binary arithmetic and comparisons */
    CgVal x = cg_expr(c, env, e->args[0], active);
    CgVal y = cg_expr(c, env, e->args[1], active);
    bool fl = e->args[0]->type == IR_TY_FLOAT || e->args[1]->type == IR_TY_FLOAT;
    if (fl) {
        x = to_float(c, e->args[0], x);
        y = to_float(c, e->args[1], y);
    }
    CgVal x0 = x, y0 = y;
    unify(c, &x, &y);
    r.vary = x.vary;
    LLVMTypeRef t = LLVMTypeOf(x.v);
    bool isbool = e->args[0]->type == IR_TY_BOOL;
    switch (e->op) {
    case IR_ADD: r.v = fl ? LLVMBuildFAdd(b, x.v, y.v, "") : LLVMBuildAdd(b, x.v, y.v, ""); break;
    case IR_SUB: r.v = fl ? LLVMBuildFSub(b, x.v, y.v, "") : LLVMBuildSub(b, x.v, y.v, ""); break;
    case IR_MUL: r.v = fl ? LLVMBuildFMul(b, x.v, y.v, "") : LLVMBuildMul(b, x.v, y.v, ""); break;
    case IR_DIV:
        if (fl) {
            r.v = LLVMBuildFDiv(b, x.v, y.v, "");
        } else {
            /* floor division by a positive constant */
            LLVMValueRef qt = LLVMBuildSDiv(b, x.v, y.v, "");
            LLVMValueRef rem = LLVMBuildSRem(b, x.v, y.v, "");
            LLVMValueRef neg = LLVMBuildICmp(b, LLVMIntSLT, rem, LLVMConstNull(t), "");
            r.v = LLVMBuildSub(b, qt, LLVMBuildZExt(b, neg, t, ""), "");
        }
        break;
    case IR_MOD: {
        LLVMValueRef rem = LLVMBuildSRem(b, x.v, y.v, "");
        LLVMValueRef neg = LLVMBuildICmp(b, LLVMIntSLT, rem, LLVMConstNull(t), "");
        r.v = LLVMBuildSelect(b, neg, LLVMBuildAdd(b, rem, y.v, ""), rem, "");
        break;
    }
    case IR_EQ: case IR_NE: case IR_LT: case IR_LE: case IR_GT: case IR_GE: {
        static const LLVMIntPredicate ip[] = {LLVMIntEQ, LLVMIntNE, LLVMIntSLT, LLVMIntSLE, LLVMIntSGT, LLVMIntSGE};
        static const LLVMIntPredicate up[] = {LLVMIntEQ, LLVMIntNE, LLVMIntULT, LLVMIntULE, LLVMIntUGT, LLVMIntUGE};
        static const LLVMRealPredicate fp[] = {LLVMRealOEQ, LLVMRealUNE, LLVMRealOLT, LLVMRealOLE, LLVMRealOGT, LLVMRealOGE};
        int k = (int)e->op - (int)IR_EQ;
        LLVMValueRef x32 = fl || isbool ? NULL : peel_i32(c, x0.v), y32 = x32 ? peel_i32(c, y0.v) : NULL;
        if (fl) {
            r.v = LLVMBuildFCmp(b, fp[k], x.v, y.v, "");
        } else if (x32 && y32 && r.vary) {
            /* i32 input elements (doc[b, k] == doc[b, q]) compared as they are: 16 lanes a vector */
            r.v = LLVMBuildICmp(b, ip[k], x0.vary ? x32 : cg_splat(c, x32), y0.vary ? y32 : cg_splat(c, y32), "");
        } else {
            r.v = LLVMBuildICmp(b, isbool ? up[k] : ip[k], x.v, y.v, "");
        }
        break;
    }
    default: unreachable();
    }
    return r;
}

LLVMValueRef cg_expr_vec(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active) {
    return as_vec(c, cg_expr(c, env, e, active));
}

static bool has_input(const IrExpr *e) {
    if (e->op == IR_INPUT) return true;
    for (int i = 0; i < e->nargs; i++)
        if (has_input(e->args[i])) return true;
    return false;
}

static bool row_dependent(const IrExpr *e) {
    return ir_expr_uses_var(e, IR_V_Q) || ir_expr_uses_var(e, IR_V_SCORE) ||
           ir_expr_uses_var(e, IR_V_QMIN) || ir_expr_uses_var(e, IR_V_QMAX);
}

void cg_expr_hoist(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active) {
    if (!has_input(e) || env->ncache >= (int)(sizeof env->cache / sizeof env->cache[0])) return;
    if (ir_expr_uses_var(e, IR_V_K) && !row_dependent(e)) {
        for (int i = 0; i < env->ncache; i++)
            if (env->cache[i].e == e && env->cache[i].tag == env->tag) return;
        LLVMValueRef bad = LLVMConstNull(c->vi1);
        LLVMValueRef *saved = env->collect;
        env->collect = &bad;
        CgVal v = cg_expr(c, env, e, active);
        env->collect = saved;
        int i = env->ncache++;
        env->cache[i].e = e;
        env->cache[i].tag = env->tag;
        env->cache[i].v = v;
        env->cache[i].bad = bad;
        return;
    }
    /* the operands of a short-circuit see a narrower `active` at use; hoisting under the
     * wider one only records more bad lanes, and those are masked again at use */
    for (int i = 0; i < e->nargs; i++) cg_expr_hoist(c, env, e->args[i], active);
}
