/* diff.c — symbolic differentiation of float expressions: the backward's chain rule through
 * `score = EXPR`. d e / d wrt, where wrt is the score variable (wrt NULL) or one read of an f32
 * input (an IR_INPUT node of the tree, by identity: every read of an element adds its own
 * term). Where a function is not differentiable the branch taken gives the derivative:
 * abs'(0) = 0 (sign), min/max take their chosen operand's (the first one on a tie),
 * floor and ceil have none. Integer and boolean subtrees have no derivative. */
#include <math.h>

#include "ir.h"

#define LN2 0.69314718055994530942
#define TWO_OVER_SQRT_PI 1.12837916709551257390

static bool is_const(const IrExpr *e, double v) {
    return e && e->op == IR_CONST && e->type == IR_TY_FLOAT && e->fval == v;
}

/* Float arithmetic that folds the zeros and ones the chain rule produces (NULL propagates:
 * out of memory). */
static bool both_const(const IrExpr *x, const IrExpr *y) {
    return x->op == IR_CONST && y->op == IR_CONST && x->type == IR_TY_FLOAT && y->type == IR_TY_FLOAT;
}

static IrExpr *dmul(Arena *a, IrExpr *x, IrExpr *y) {
    if (!x || !y) return NULL;
    if (both_const(x, y)) return ir_const_float(a, x->fval * y->fval);
    if (is_const(x, 0) || is_const(y, 0)) return ir_const_float(a, 0);
    if (is_const(x, 1)) return y;
    if (is_const(y, 1)) return x;
    return ir_binary(a, IR_MUL, x, y);
}

static IrExpr *dadd(Arena *a, IrExpr *x, IrExpr *y) {
    if (!x || !y) return NULL;
    if (both_const(x, y)) return ir_const_float(a, x->fval + y->fval);
    if (is_const(x, 0)) return y;
    if (is_const(y, 0)) return x;
    return ir_binary(a, IR_ADD, x, y);
}

static IrExpr *dneg(Arena *a, IrExpr *x) {
    if (!x) return NULL;
    if (x->op == IR_CONST && x->type == IR_TY_FLOAT) return ir_const_float(a, -x->fval);
    return ir_unary(a, IR_NEG, x);
}

static IrExpr *ddiv(Arena *a, IrExpr *x, IrExpr *y) {
    if (!x || !y) return NULL;
    if (both_const(x, y)) return ir_const_float(a, x->fval / y->fval);
    if (is_const(x, 0)) return x;
    return ir_binary(a, IR_DIV, x, y);
}

static IrExpr *dsub(Arena *a, IrExpr *x, IrExpr *y) { return dadd(a, x, dneg(a, y)); }

static IrExpr *call1(Arena *a, IrFn fn, IrExpr *x) { return ir_call(a, fn, 1, (IrExpr *[]){x}); }

/* select(c, x, y) that keeps a zero when both sides are zero */
static IrExpr *dselect(Arena *a, IrExpr *c, IrExpr *x, IrExpr *y) {
    if (!c || !x || !y) return NULL;
    if (is_const(x, 0) && is_const(y, 0)) return x;
    return ir_select(a, c, x, y);
}

/* The operand as a float (ints meet floats as floats). */
static IrExpr *as_float(Arena *a, IrExpr *e) { return e->type == IR_TY_FLOAT ? e : ir_unary(a, IR_ITOF, e); }

static IrExpr *diff_call(Arena *a, IrExpr *e, const IrExpr *wrt) {
    IrExpr *x = e->args[0], *dx = ir_diff(a, x, wrt);
    IrExpr *y = e->nargs > 1 ? e->args[1] : NULL, *dy = y ? ir_diff(a, y, wrt) : NULL;
    if (!dx || (y && !dy)) return NULL;
    if (is_const(dx, 0) && (!dy || is_const(dy, 0))) return dx;
    IrExpr *xf = as_float(a, x);
    switch ((IrFn)e->fn) {
    case IR_FN_ABS: {
        IrExpr *zero = ir_const_float(a, 0);
        IrExpr *sign = ir_select(a, ir_binary(a, IR_GT, xf, zero), ir_const_float(a, 1),
                                 ir_select(a, ir_binary(a, IR_LT, xf, zero), ir_const_float(a, -1), zero));
        return dmul(a, dx, sign);
    }
    case IR_FN_MIN: return dselect(a, ir_binary(a, IR_LE, xf, as_float(a, y)), dx, dy);
    case IR_FN_MAX: return dselect(a, ir_binary(a, IR_GE, xf, as_float(a, y)), dx, dy);
    case IR_FN_EXP: return dmul(a, dx, e);
    case IR_FN_EXP2: return dmul(a, dx, dmul(a, e, ir_const_float(a, LN2)));
    case IR_FN_LOG: return ddiv(a, dx, xf);
    case IR_FN_LOG2: return ddiv(a, dx, dmul(a, xf, ir_const_float(a, LN2)));
    case IR_FN_SQRT: return ddiv(a, dx, dmul(a, ir_const_float(a, 2), e));
    case IR_FN_TANH: return dmul(a, dx, dsub(a, ir_const_float(a, 1), dmul(a, e, e)));
    case IR_FN_ERF:
        return dmul(a, dx, dmul(a, ir_const_float(a, TWO_OVER_SQRT_PI),
                                call1(a, IR_FN_EXP, dneg(a, dmul(a, xf, xf)))));
    case IR_FN_SIGMOID: return dmul(a, dx, dmul(a, e, dsub(a, ir_const_float(a, 1), e)));
    case IR_FN_SIN: return dmul(a, dx, call1(a, IR_FN_COS, xf));
    case IR_FN_COS: return dneg(a, dmul(a, dx, call1(a, IR_FN_SIN, xf)));
    case IR_FN_FLOOR:
    case IR_FN_CEIL: return ir_const_float(a, 0);
    default: return NULL;
    }
}

IrExpr *ir_diff(Arena *a, IrExpr *e, const IrExpr *wrt) {
    if (!e) return NULL;
    if (e->type != IR_TY_FLOAT) return ir_const_float(a, 0);
    switch (e->op) {
    case IR_CONST: return ir_const_float(a, 0);
    case IR_VAR: return ir_const_float(a, !wrt && e->var == IR_V_SCORE ? 1 : 0);
    case IR_INPUT: return ir_const_float(a, e == wrt ? 1 : 0);
    case IR_ITOF: return ir_const_float(a, 0);
    case IR_NEG: return dneg(a, ir_diff(a, e->args[0], wrt));
    case IR_ADD: return dadd(a, ir_diff(a, e->args[0], wrt), ir_diff(a, e->args[1], wrt));
    case IR_SUB: return dsub(a, ir_diff(a, e->args[0], wrt), ir_diff(a, e->args[1], wrt));
    case IR_MUL: {
        IrExpr *x = as_float(a, e->args[0]), *y = as_float(a, e->args[1]);
        return dadd(a, dmul(a, ir_diff(a, e->args[0], wrt), y), dmul(a, x, ir_diff(a, e->args[1], wrt)));
    }
    case IR_DIV: {
        /* (x / y)' = x' / y - (x / y) y' / y */
        IrExpr *y = as_float(a, e->args[1]);
        return dsub(a, ddiv(a, ir_diff(a, e->args[0], wrt), y), ddiv(a, dmul(a, e, ir_diff(a, e->args[1], wrt)), y));
    }
    case IR_SELECT: return dselect(a, e->args[0], ir_diff(a, e->args[1], wrt), ir_diff(a, e->args[2], wrt));
    case IR_CALL: return diff_call(a, e, wrt);
    default: return NULL; /* no other op yields a float */
    }
}

/* The reads of f32 inputs in e, into out (up to max; returns how many there are). */
static int float_reads(const IrFunc *f, IrExpr *e, IrExpr **out, int n, int max) {
    if (!e) return n;
    if (e->op == IR_INPUT && f->inputs[e->input].dtype == ATTN_F32) {
        if (n < max) out[n] = e;
        n++;
    }
    for (int i = 0; i < e->nargs; i++) n = float_reads(f, e->args[i], out, n, max);
    return n;
}

bool ir_grad_derive(IrFunc *f, StrBuf *err) {
    IrGrad *g = &f->grad;
    *g = (IrGrad){.present = true};
    if (!f->score) return true;
    Arena *a = f->arena;
    g->dscore = ir_diff(a, f->score, NULL);
    IrExpr *reads[IR_MAX_GRAD_READS];
    int n = float_reads(f, f->score, reads, 0, IR_MAX_GRAD_READS);
    if (n > IR_MAX_GRAD_READS) {
        sb_printf(err, "grad: %s: the score reads f32 inputs %d times (at most %d)\n", f->name, n, IR_MAX_GRAD_READS);
        return false;
    }
    for (int i = 0; i < n; i++) {
        g->reads[i].load = reads[i];
        g->reads[i].d = ir_diff(a, f->score, reads[i]);
        if (!g->reads[i].d) goto oom;
    }
    g->nreads = n;
    if (!g->dscore) goto oom;
    return true;
oom:
    sb_puts(err, "grad: out of memory\n");
    return false;
}
