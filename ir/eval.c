/* The one evaluator of scalar expression trees: the frontend's constants (params, sizes,
 * divisors, the head map), constant folding, and the double-precision reference all call
 * ir_eval, so they agree on every operator. Integer arithmetic is 64-bit; an overflow (or a
 * divisor that is not positive) sets env->overflow instead of passing silently: the frontend
 * and the fold pass make it a diagnostic, the reference an error of the call. */
#include "ir.h"

#include <math.h>

int64_t ir_floor_div(int64_t a, int64_t d) {
    int64_t q = a / d;
    if (a % d != 0 && a < 0) q -= 1;
    return q;
}

int64_t ir_floor_mod(int64_t a, int64_t d) {
    int64_t r = a % d;
    return r < 0 ? r + d : r;
}

static double as_float(const IrExpr *e, IrValue v) {
    return e->type == IR_TY_FLOAT ? v.f : (double)v.i;
}

static IrValue eval_call(const IrFunc *f, const IrExpr *e, IrEnv *env) {
    IrValue r = {0};
    IrValue a = ir_eval(f, e->args[0], env);
    IrValue b = e->nargs > 1 ? ir_eval(f, e->args[1], env) : (IrValue){0};
    if (e->type == IR_TY_INT) {
        switch (e->fn) {
        case IR_FN_ABS:
            if (a.i == INT64_MIN) env->overflow = true;
            r.i = a.i < 0 ? (int64_t)(0 - (uint64_t)a.i) : a.i;
            break;
        case IR_FN_MIN: r.i = a.i < b.i ? a.i : b.i; break;
        case IR_FN_MAX: r.i = a.i > b.i ? a.i : b.i; break;
        default: unreachable();
        }
        return r;
    }
    double x = as_float(e->args[0], a);
    double y = e->nargs > 1 ? as_float(e->args[1], b) : 0;
    switch (e->fn) {
    case IR_FN_ABS: r.f = fabs(x); break;
    case IR_FN_MIN: r.f = fmin(x, y); break;
    case IR_FN_MAX: r.f = fmax(x, y); break;
    case IR_FN_EXP: r.f = exp(x); break;
    case IR_FN_EXP2: r.f = exp2(x); break;
    case IR_FN_LOG: r.f = log(x); break;
    case IR_FN_LOG2: r.f = log2(x); break;
    case IR_FN_SQRT: r.f = sqrt(x); break;
    case IR_FN_TANH: r.f = tanh(x); break;
    case IR_FN_ERF: r.f = erf(x); break;
    case IR_FN_SIGMOID: r.f = 1.0 / (1.0 + exp(-x)); break;
    case IR_FN_SIN: r.f = sin(x); break;
    case IR_FN_COS: r.f = cos(x); break;
    case IR_FN_FLOOR: r.f = floor(x); break;
    case IR_FN_CEIL: r.f = ceil(x); break;
    default: unreachable();
    }
    return r;
}

static IrValue eval_load(const IrFunc *f, const IrExpr *e, IrEnv *env) {
    IrValue r = {0};
    const attn_rt_args *a = env->args;
    int in = e->input;
    if (!a || !f || in < 0 || in >= f->ninputs || !a->input[in]) {
        env->index_error = true;
        return r;
    }
    int64_t lin = 0;
    for (int d = 0; d < e->nargs; d++) {
        int64_t idx = ir_eval(f, e->args[d], env).i;
        int64_t dim = a->input_dim[in][d];
        if (idx < 0 || idx >= dim) {
            env->index_error = true;
            return r;
        }
        lin = lin * dim + idx;
    }
    if (f->inputs[in].dtype == ATTN_I32) r.i = ((const int32_t *)a->input[in])[lin];
    else r.f = ((const float *)a->input[in])[lin];
    return r;
}

/* The exact min/max of an input over a range of its last index (the kernels use per-block
 * summaries, a superset: both are sound for pruning). */
static IrValue eval_range(const IrFunc *f, const IrExpr *e, IrEnv *env) {
    bool is_min = e->fn == IR_FN_MIN;
    IrValue none = {.i = is_min ? -IR_RANGE_NONE : IR_RANGE_NONE};
    const attn_rt_args *a = env->args;
    int in = e->input, rank = e->nargs - 1;
    if (!a || !f || in < 0 || in >= f->ninputs || !a->input[in]) return none;
    int64_t row = 0;
    for (int d = 0; d < rank - 1; d++) {
        int64_t idx = ir_eval(f, e->args[d], env).i, dim = a->input_dim[in][d];
        if (idx < 0 || idx >= dim) return none;
        row = row * dim + idx;
    }
    int64_t n = a->input_dim[in][rank - 1];
    int64_t lo = ir_eval(f, e->args[rank - 1], env).i, hi = ir_eval(f, e->args[rank], env).i;
    if (lo < 0 || hi >= n || lo > hi) return none;
    const int32_t *p = (const int32_t *)a->input[in] + row * n;
    int64_t r = p[lo];
    for (int64_t t = lo + 1; t <= hi; t++) r = is_min ? (p[t] < r ? p[t] : r) : (p[t] > r ? p[t] : r);
    return (IrValue){.i = r};
}

static int64_t read_var(IrVar v, IrEnv *env) {
    if (env->const_only && !(v == IR_V_H && env->h_known)) {
        env->unknown = true;
        return 0;
    }
    switch (v) {
    case IR_V_Q: return env->q;
    case IR_V_K: return env->k;
    case IR_V_H: return env->h;
    case IR_V_B: return env->b;
    case IR_V_QLEN: return env->q_len;
    case IR_V_KVLEN: return env->kv_len;
    case IR_V_QMIN: return env->qmin;
    case IR_V_QMAX: return env->qmax;
    case IR_V_KMIN: return env->kmin;
    case IR_V_KMAX: return env->kmax;
    case IR_V_SCORE: break;
    }
    unreachable();
}

/* Integer arithmetic: the exact result, or the wrapped one with env->overflow set. */
static int64_t int_arith(IrExprOp op, int64_t x, int64_t y, IrEnv *env) {
    int64_t r = 0;
    switch (op) {
    case IR_ADD: env->overflow |= __builtin_add_overflow(x, y, &r); return r;
    case IR_SUB: env->overflow |= __builtin_sub_overflow(x, y, &r); return r;
    case IR_MUL: env->overflow |= __builtin_mul_overflow(x, y, &r); return r;
    case IR_DIV:
    case IR_MOD:
        if (y <= 0) { /* the frontend allows positive constant divisors only */
            env->overflow = true;
            return 0;
        }
        return op == IR_DIV ? ir_floor_div(x, y) : ir_floor_mod(x, y);
    default: unreachable();
    }
}

IrValue ir_eval(const IrFunc *f, const IrExpr *e, IrEnv *env) {
    IrValue r = {0};
    IrValue x, y;
    switch (e->op) {
    case IR_CONST:
        if (e->type == IR_TY_FLOAT) r.f = e->fval;
        else r.i = e->ival;
        return r;
    case IR_VAR:
        if (e->var == IR_V_SCORE) {
            if (env->const_only) env->unknown = true;
            else r.f = env->score;
        } else {
            r.i = read_var((IrVar)e->var, env);
        }
        return r;
    case IR_INPUT:
    case IR_RANGE:
        if (env->const_only) {
            env->unknown = true;
            return r;
        }
        return e->op == IR_INPUT ? eval_load(f, e, env) : eval_range(f, e, env);
    case IR_CALL: return eval_call(f, e, env);
    case IR_NOT: r.i = !ir_eval(f, e->args[0], env).i; return r;
    case IR_ITOF: r.f = (double)ir_eval(f, e->args[0], env).i; return r;
    case IR_NEG:
        x = ir_eval(f, e->args[0], env);
        if (e->type == IR_TY_FLOAT) r.f = -x.f;
        else r.i = int_arith(IR_SUB, 0, x.i, env);
        return r;
    case IR_SELECT:
        return ir_eval(f, e->args[0], env).i ? ir_eval(f, e->args[1], env)
                                              : ir_eval(f, e->args[2], env);
    case IR_AND:
    case IR_OR:
        /* short-circuit at run time (the right side may index an input out of bounds); a
         * constant is one whose both sides are */
        x = ir_eval(f, e->args[0], env);
        if (!env->const_only && (x.i != 0) == (e->op == IR_OR)) {
            r.i = x.i != 0;
            return r;
        }
        y = ir_eval(f, e->args[1], env);
        r.i = e->op == IR_AND ? x.i && y.i : x.i || y.i;
        return r;
    default: break;
    }
    x = ir_eval(f, e->args[0], env);
    y = ir_eval(f, e->args[1], env);
    if (e->args[0]->type == IR_TY_FLOAT || e->args[1]->type == IR_TY_FLOAT) {
        double a = as_float(e->args[0], x), b = as_float(e->args[1], y);
        switch (e->op) {
        case IR_ADD: r.f = a + b; break;
        case IR_SUB: r.f = a - b; break;
        case IR_MUL: r.f = a * b; break;
        case IR_DIV: r.f = a / b; break;
        case IR_EQ: r.i = a == b; break;
        case IR_NE: r.i = a != b; break;
        case IR_LT: r.i = a < b; break;
        case IR_LE: r.i = a <= b; break;
        case IR_GT: r.i = a > b; break;
        case IR_GE: r.i = a >= b; break;
        default: unreachable();
        }
        return r;
    }
    switch (e->op) {
    case IR_EQ: r.i = x.i == y.i; break;
    case IR_NE: r.i = x.i != y.i; break;
    case IR_LT: r.i = x.i < y.i; break;
    case IR_LE: r.i = x.i <= y.i; break;
    case IR_GT: r.i = x.i > y.i; break;
    case IR_GE: r.i = x.i >= y.i; break;
    default: r.i = int_arith(e->op, x.i, y.i, env); break;
    }
    return r;
}

IrEvalStatus ir_eval_const(const IrExpr *e, const int64_t *h, IrValue *out) {
    IrEnv env = {.const_only = true, .h_known = h != NULL, .h = h ? *h : 0};
    *out = ir_eval(NULL, e, &env);
    return env.unknown ? IR_EVAL_NONCONST : env.overflow ? IR_EVAL_OVERFLOW : IR_EVAL_OK;
}
