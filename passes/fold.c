/* Constant folding and algebraic simplification of expression trees. Constants are
 * evaluated by ir_eval, as in the frontend: an integer overflow is an error, not a wrap. */
#include "passes.h"

#include <math.h>

static bool is_const(const IrExpr *e) { return e && e->op == IR_CONST; }
static bool is_bool(const IrExpr *e, bool v) {
    return is_const(e) && e->type == IR_TY_BOOL && (e->ival != 0) == v;
}
static bool is_num(const IrExpr *e, double v) {
    if (!is_const(e)) return false;
    return e->type == IR_TY_FLOAT ? e->fval == v : e->type == IR_TY_INT && e->ival == (int64_t)v;
}

/* Folds a node whose operands are all constants by asking the evaluator. */
static IrExpr *fold_const(Arena *a, IrExpr *e, StrBuf *err) {
    IrValue v;
    if (ir_eval_const(e, NULL, &v) != IR_EVAL_OK) {
        const char *op = e->op == IR_CALL ? ir_fn_name((IrFn)e->fn) : ir_infix_text(e->op);
        sb_printf(err, "integer overflow in constant expression '%s'\n", op ? op : ir_op_name(e->op));
        return NULL;
    }
    switch (e->type) {
    case IR_TY_BOOL: return ir_const_bool(a, v.i != 0);
    case IR_TY_INT: return ir_const_int(a, v.i);
    case IR_TY_FLOAT: return ir_const_float(a, v.f);
    }
    return e;
}

IrExpr *pass_fold_expr(Arena *a, IrExpr *e, StrBuf *err) {
    if (!e || a->failed) {
        sb_puts(err, "out of memory while folding\n");
        return NULL;
    }
    bool all_const = e->op != IR_CONST && e->op != IR_VAR && e->op != IR_INPUT && e->op != IR_RANGE;
    for (int i = 0; i < e->nargs; i++) {
        IrExpr *x = pass_fold_expr(a, e->args[i], err);
        if (!x) return NULL;
        e->args[i] = x;
        if (!is_const(x)) all_const = false;
    }
    if (all_const) return fold_const(a, e, err);
    IrExpr *x = e->nargs > 0 ? e->args[0] : NULL;
    IrExpr *y = e->nargs > 1 ? e->args[1] : NULL;
    switch (e->op) {
    case IR_AND:
        if (is_bool(x, false) || is_bool(y, false)) return ir_const_bool(a, false);
        if (is_bool(x, true)) return y;
        if (is_bool(y, true)) return x;
        if (ir_expr_equal(x, y)) return x;
        break;
    case IR_OR:
        if (is_bool(x, true) || is_bool(y, true)) return ir_const_bool(a, true);
        if (is_bool(x, false)) return y;
        if (is_bool(y, false)) return x;
        if (ir_expr_equal(x, y)) return x;
        break;
    case IR_NOT:
        if (x->op == IR_NOT) return x->args[0];
        if (x->op == IR_AND || x->op == IR_OR) /* De Morgan, so negations reach the leaves */
            return pass_fold_expr(a, ir_binary(a, x->op == IR_AND ? IR_OR : IR_AND,
                                               ir_unary(a, IR_NOT, x->args[0]),
                                               ir_unary(a, IR_NOT, x->args[1])), err);
        /* !(a < b) is a >= b for ints (not for floats: NaN compares false both ways) */
        if (x->nargs == 2 && x->args[0]->type == IR_TY_INT) {
            IrExprOp inv = x->op == IR_LT ? IR_GE : x->op == IR_LE ? IR_GT : x->op == IR_GT ? IR_LE
                         : x->op == IR_GE ? IR_LT : x->op == IR_EQ ? IR_NE : x->op == IR_NE ? IR_EQ
                         : IR_EXPR_OP_COUNT;
            if (inv != IR_EXPR_OP_COUNT) return ir_binary(a, inv, x->args[0], x->args[1]);
        }
        break;
    case IR_NEG:
        if (x->op == IR_NEG) return x->args[0];
        break;
    case IR_SELECT:
        if (is_const(x)) return x->ival ? y : e->args[2];
        if (ir_expr_equal(y, e->args[2])) return y;
        break;
    case IR_ADD:
        if (is_num(x, 0)) return y;
        if (is_num(y, 0)) return x;
        break;
    case IR_SUB:
        if (is_num(y, 0)) return x;
        if (is_num(x, 0) && x->type == y->type) return pass_fold_expr(a, ir_unary(a, IR_NEG, y), err);
        break;
    case IR_MUL:
        if (is_num(x, 1)) return y;
        if (is_num(y, 1)) return x;
        break;
    case IR_DIV:
        if (is_num(y, 1)) return x;
        break;
    case IR_MOD:
        if (y && y->type == IR_TY_INT && is_num(y, 1)) return ir_const_int(a, 0);
        break;
    default: break;
    }
    return e;
}

bool pass_fold(IrFunc *f, PassCtx *ctx) {
    f->mask = pass_fold_expr(f->arena, f->mask, ctx->err);
    if (!f->mask) return false;
    if (f->score && !(f->score = pass_fold_expr(f->arena, f->score, ctx->err))) return false;
    if (f->head_map_expr && !(f->head_map_expr = pass_fold_expr(f->arena, f->head_map_expr, ctx->err)))
        return false;
    if (f->arena->failed) {
        sb_puts(ctx->err, "out of memory while folding\n");
        return false;
    }
    return true;
}
