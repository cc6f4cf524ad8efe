/* The verifier: run between passes, it catches a pass that broke an invariant before codegen
 * turns the mistake into wrong numbers. */
#include "ir.h"

static bool fail(StrBuf *msg, const IrFunc *f, const char *what) {
    sb_printf(msg, "IR verifier: @%s: %s\n", f->name, what);
    return false;
}

static bool verify_expr(const IrFunc *f, const IrExpr *e, bool score_ok, StrBuf *msg, int depth) {
    if (!e) return fail(msg, f, "null expression");
    if (depth > 10000) return fail(msg, f, "expression too deep");
    if (e->op >= IR_EXPR_OP_COUNT) return fail(msg, f, "bad op");
    for (int i = 0; i < e->nargs; i++)
        if (!verify_expr(f, e->args[i], score_ok, msg, depth + 1)) return false;
    IrType a0 = e->nargs > 0 ? e->args[0]->type : e->type;
    IrType a1 = e->nargs > 1 ? e->args[1]->type : a0;
    switch (e->op) {
    case IR_CONST: return true;
    case IR_VAR:
        if (e->var == IR_V_SCORE && !score_ok) return fail(msg, f, "score outside score mod");
        if (e->type != (e->var == IR_V_SCORE ? IR_TY_FLOAT : IR_TY_INT))
            return fail(msg, f, "variable of wrong type");
        return true;
    case IR_INPUT:
        if (e->input < 0 || e->input >= f->ninputs) return fail(msg, f, "load of unknown input");
        if (e->nargs != f->inputs[e->input].rank) return fail(msg, f, "load with wrong rank");
        for (int i = 0; i < e->nargs; i++)
            if (e->args[i]->type != IR_TY_INT) return fail(msg, f, "non-int index");
        return true;
    case IR_RANGE:
        if (e->input < 0 || e->input >= f->ninputs || f->inputs[e->input].dtype != ATTN_I32 ||
            e->nargs != f->inputs[e->input].rank + 1 || e->type != IR_TY_INT ||
            (e->fn != IR_FN_MIN && e->fn != IR_FN_MAX) || !f->inputs[e->input].summarize)
            return fail(msg, f, "bad range summary");
        for (int i = 0; i < e->nargs; i++)
            if (e->args[i]->type != IR_TY_INT) return fail(msg, f, "non-int range bound");
        return true;
    case IR_NOT:
        return a0 == IR_TY_BOOL && e->type == IR_TY_BOOL ? true : fail(msg, f, "! of non-bool");
    case IR_ITOF:
        return a0 == IR_TY_INT && e->type == IR_TY_FLOAT ? true : fail(msg, f, "bad itof");
    case IR_NEG: return a0 == e->type && a0 != IR_TY_BOOL ? true : fail(msg, f, "bad negation");
    case IR_AND: case IR_OR:
        return a0 == IR_TY_BOOL && a1 == IR_TY_BOOL ? true : fail(msg, f, "logic on non-bool");
    case IR_EQ: case IR_NE: case IR_LT: case IR_LE: case IR_GT: case IR_GE:
        if (a0 != a1) return fail(msg, f, "comparison of mixed types");
        if (a0 == IR_TY_BOOL && e->op != IR_EQ && e->op != IR_NE)
            return fail(msg, f, "ordering of bools");
        return e->type == IR_TY_BOOL ? true : fail(msg, f, "comparison not bool");
    case IR_ADD: case IR_SUB: case IR_MUL:
        return a0 == a1 && a0 == e->type && a0 != IR_TY_BOOL ? true
                                                             : fail(msg, f, "arithmetic type mismatch");
    case IR_DIV: case IR_MOD:
        if (a0 != a1 || a0 != e->type || a0 == IR_TY_BOOL)
            return fail(msg, f, "division type mismatch");
        if (a0 == IR_TY_INT && (e->args[1]->op != IR_CONST || e->args[1]->ival <= 0))
            return fail(msg, f, "integer division by a non-constant or non-positive divisor");
        if (e->op == IR_MOD && a0 != IR_TY_INT) return fail(msg, f, "float modulo");
        return true;
    case IR_SELECT:
        if (a0 != IR_TY_BOOL || e->args[1]->type != e->type || e->args[2]->type != e->type)
            return fail(msg, f, "select type mismatch");
        return true;
    case IR_CALL:
        if (e->fn < 0 || e->fn >= IR_FN_COUNT || e->nargs != ir_fn_arity((IrFn)e->fn))
            return fail(msg, f, "bad call");
        for (int i = 0; i < e->nargs; i++)
            if (e->args[i]->type != e->type) return fail(msg, f, "call argument type mismatch");
        return true;
    default: return fail(msg, f, "unknown op");
    }
}

bool ir_verify_func(const IrFunc *f, StrBuf *msg) {
    if (f->heads <= 0 || f->kv_heads <= 0 || f->heads % f->kv_heads)
        return fail(msg, f, "bad head counts");
    if (f->qk_dim <= 0 || f->v_dim <= 0) return fail(msg, f, "bad head dims");
    if (!f->head_map) return fail(msg, f, "no head map");
    for (int h = 0; h < f->heads; h++)
        if (f->head_map[h] < 0 || f->head_map[h] >= f->kv_heads)
            return fail(msg, f, "head map out of range");
    if (f->ninputs < 0 || f->ninputs > ATTN_MAX_INPUTS) return fail(msg, f, "too many inputs");
    if (!verify_expr(f, f->mask, false, msg, 0)) return false;
    if (f->mask->type != IR_TY_BOOL) return fail(msg, f, "mask is not bool");
    if (f->score) {
        if (!verify_expr(f, f->score, true, msg, 0)) return false;
        if (f->score->type != IR_TY_FLOAT) return fail(msg, f, "score is not float");
    }
    if (f->prune.enabled) {
        const IrRuns *r = &f->prune.runs;
        if (!f->prune.mask) return fail(msg, f, "prune mask missing");
        if (!verify_expr(f, f->prune.mask, false, msg, 0)) return false;
        if (f->prune.mask->type != IR_TY_BOOL) return fail(msg, f, "prune mask is not bool");
        if (r->mod && (r->mod < 2 || r->width < 1 || r->base < 0 || r->base + r->width > r->mod ||
                       (r->with_q && (r->width != 1 || r->base != 0))))
            return fail(msg, f, "bad residue runs");
        const IrExpr *trees[] = {f->prune.k_lo, f->prune.k_hi, f->prune.may_see, f->prune.all_see};
        for (int i = 0; i < 4; i++) {
            if (!verify_expr(f, trees[i], false, msg, 0)) return false;
            if (trees[i]->type != (i < 2 ? IR_TY_INT : IR_TY_BOOL))
                return fail(msg, f, "prune expression of the wrong type");
            if (ir_expr_uses_var(trees[i], IR_V_Q) || ir_expr_uses_var(trees[i], IR_V_K))
                return fail(msg, f, "prune expression reads q or k");
        }
    }
    if (f->nops <= 0 || f->nops > IR_MAX_OPS) return fail(msg, f, "bad op count");
    bool defined[64] = {true, true, true};
    if (f->nvalues > 64) return fail(msg, f, "too many values");
    for (int i = 0; i < f->nops; i++) {
        const IrOp *op = &f->ops[i];
        for (int j = 0; j < 3; j++)
            if (op->operand[j] >= 0 && (op->operand[j] >= f->nvalues || !defined[op->operand[j]]))
                return fail(msg, f, "op reads an undefined value");
        if (op->result < 3 || op->result >= f->nvalues || defined[op->result])
            return fail(msg, f, "op defines a bad value");
        defined[op->result] = true;
    }
    if (f->output < 3 || f->output >= f->nvalues || !defined[f->output])
        return fail(msg, f, "output undefined");
    return true;
}
