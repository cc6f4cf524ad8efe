/* Mask analysis for sparsity pruning.
 *
 * The mask M(q, k) is not evaluated here: it is *abstracted*. For a tile of query positions
 * [QMIN, QMAX] and key positions [KMIN, KMAX] we build, as ordinary IR expressions over those
 * four tile variables,
 *   may_see = "some pair of the tile may be visible"   (false => the tile is empty)
 *   all_see = "every pair of the tile is visible"      (true  => the tile is full)
 * by interval arithmetic over the expression tree, and
 *   k_lo, k_hi = bounds of the keys any query of [QMIN, QMAX] may see
 * from the affine atoms of the mask (k <= q, q - k < w, k < src_len[b], abs(q - k) <= w...).
 * The kernels evaluate these per tile as a few scalar instructions; the reference interpreter
 * evaluates the same trees for `attnc mask --svg` and for the soundness tests. One analysis,
 * two executors.
 */
#include "passes.h"

#include <string.h>

typedef struct Itv {
    bool top;  /* unbounded: nothing known */
    IrExpr *lo; /* INT: a lower bound over the tile */
    IrExpr *hi; /* INT: an upper bound over the tile */
} Itv;

typedef struct BItv {
    IrExpr *may_true;  /* BOOL: the predicate may hold somewhere in the tile */
    IrExpr *may_false; /* BOOL: the predicate may fail somewhere in the tile */
} BItv;

typedef struct PruneCx {
    Arena *a;    /* where new trees go */
    IrFunc *f;   /* the func analysed (its inputs get marked for summaries) */
    StrBuf *err; /* where folding explains a failure */
} PruneCx;

static bool varies(const IrExpr *e) {
    return ir_expr_uses_var(e, IR_V_Q) || ir_expr_uses_var(e, IR_V_K) ||
           ir_expr_uses_var(e, IR_V_SCORE);
}

static bool is_var(const IrExpr *e, IrVar v) { return e->op == IR_VAR && (IrVar)e->var == v; }

static IrExpr *mk2(PruneCx *c, IrExprOp op, IrExpr *x, IrExpr *y) {
    return ir_binary(c->a, op, x, y);
}
static IrExpr *mkfn(PruneCx *c, IrFn fn, IrExpr *x, IrExpr *y) {
    IrExpr *args[2] = {x, y};
    return ir_call(c->a, fn, 2, args);
}
static IrExpr *cint(PruneCx *c, int64_t v) { return ir_const_int(c->a, v); }
static IrExpr *cbool(PruneCx *c, bool v) { return ir_const_bool(c->a, v); }

static Itv top(void) { return (Itv){.top = true}; }

static Itv itv(PruneCx *c, IrExpr *e);

static Itv itv_mul(PruneCx *c, Itv x, Itv y, IrExpr *ex, IrExpr *ey) {
    if (x.top || y.top) return top();
    const IrExpr *k = ey->op == IR_CONST ? ey : ex->op == IR_CONST ? ex : NULL;
    if (k) {
        Itv v = k == ey ? x : y;
        IrExpr *kk = cint(c, k->ival);
        IrExpr *a = mk2(c, IR_MUL, v.lo, kk), *b = mk2(c, IR_MUL, v.hi, kk);
        return k->ival >= 0 ? (Itv){false, a, b} : (Itv){false, b, a};
    }
    IrExpr *p1 = mk2(c, IR_MUL, x.lo, y.lo), *p2 = mk2(c, IR_MUL, x.lo, y.hi);
    IrExpr *p3 = mk2(c, IR_MUL, x.hi, y.lo), *p4 = mk2(c, IR_MUL, x.hi, y.hi);
    return (Itv){false, mkfn(c, IR_FN_MIN, mkfn(c, IR_FN_MIN, p1, p2), mkfn(c, IR_FN_MIN, p3, p4)),
                 mkfn(c, IR_FN_MAX, mkfn(c, IR_FN_MAX, p1, p2), mkfn(c, IR_FN_MAX, p3, p4))};
}

static BItv bitv(PruneCx *c, IrExpr *e);

/* An i32 input read through a varying last index (doc[b, k], rank[b, q]): its interval over
 * the tile is the input's min/max over the index's interval, which the kernel reads from
 * per-block summaries the runtime builds once per call. */
static Itv itv_load(PruneCx *c, IrExpr *e, Itv last) {
    int rank = e->nargs;
    IrInput *in = &c->f->inputs[e->input];
    if (rank < 1 || in->dtype != ATTN_I32 || last.top) return top();
    for (int d = 0; d < rank - 1; d++)
        if (varies(e->args[d])) return top();
    in->summarize = true;
    return (Itv){false, ir_range(c->a, IR_FN_MIN, e->input, rank, e->args, last.lo, last.hi),
                 ir_range(c->a, IR_FN_MAX, e->input, rank, e->args, last.lo, last.hi)};
}

/* Interval of an INT expression over the tile. */
static Itv itv(PruneCx *c, IrExpr *e) {
    if (e->type != IR_TY_INT) return top();
    if (!varies(e)) return (Itv){false, e, e};
    if (e->op == IR_VAR) {
        if (e->var == IR_V_Q) return (Itv){false, ir_var(c->a, IR_V_QMIN), ir_var(c->a, IR_V_QMAX)};
        if (e->var == IR_V_K) return (Itv){false, ir_var(c->a, IR_V_KMIN), ir_var(c->a, IR_V_KMAX)};
        return top();
    }
    if (e->op == IR_INPUT) return e->nargs > 0 ? itv_load(c, e, itv(c, e->args[e->nargs - 1])) : top();
    Itv x = e->nargs > 0 ? itv(c, e->args[0]) : top();
    Itv y = e->nargs > 1 ? itv(c, e->args[1]) : top();
    switch (e->op) {
    case IR_ADD:
        if (x.top || y.top) return top();
        return (Itv){false, mk2(c, IR_ADD, x.lo, y.lo), mk2(c, IR_ADD, x.hi, y.hi)};
    case IR_SUB:
        if (x.top || y.top) return top();
        return (Itv){false, mk2(c, IR_SUB, x.lo, y.hi), mk2(c, IR_SUB, x.hi, y.lo)};
    case IR_NEG:
        if (x.top) return top();
        return (Itv){false, ir_unary(c->a, IR_NEG, x.hi), ir_unary(c->a, IR_NEG, x.lo)};
    case IR_MUL: return itv_mul(c, x, y, e->args[0], e->args[1]);
    case IR_DIV: /* floor division by a positive constant is monotone */
        if (x.top) return top();
        return (Itv){false, mk2(c, IR_DIV, x.lo, e->args[1]), mk2(c, IR_DIV, x.hi, e->args[1])};
    case IR_MOD: {
        /* within one period the remainder is monotone; across periods it spans [0, r-1] */
        int64_t r = e->args[1]->ival;
        if (x.top) return (Itv){false, cint(c, 0), cint(c, r - 1)};
        IrExpr *same = mk2(c, IR_EQ, mk2(c, IR_DIV, x.lo, e->args[1]), mk2(c, IR_DIV, x.hi, e->args[1]));
        return (Itv){false, ir_select(c->a, same, mk2(c, IR_MOD, x.lo, e->args[1]), cint(c, 0)),
                     ir_select(c->a, same, mk2(c, IR_MOD, x.hi, e->args[1]), cint(c, r - 1))};
    }
    case IR_CALL:
        if (x.top || (e->nargs > 1 && y.top)) return top();
        switch (e->fn) {
        case IR_FN_ABS: {
            IrExpr *lo = ir_select(c->a, mk2(c, IR_GE, x.lo, cint(c, 0)), x.lo,
                                   ir_select(c->a, mk2(c, IR_LE, x.hi, cint(c, 0)),
                                             ir_unary(c->a, IR_NEG, x.hi), cint(c, 0)));
            return (Itv){false, lo, mkfn(c, IR_FN_MAX, ir_unary(c->a, IR_NEG, x.lo), x.hi)};
        }
        case IR_FN_MIN: return (Itv){false, mkfn(c, IR_FN_MIN, x.lo, y.lo), mkfn(c, IR_FN_MIN, x.hi, y.hi)};
        case IR_FN_MAX: return (Itv){false, mkfn(c, IR_FN_MAX, x.lo, y.lo), mkfn(c, IR_FN_MAX, x.hi, y.hi)};
        default: return top();
        }
    case IR_SELECT: {
        Itv a = itv(c, e->args[1]), b = itv(c, e->args[2]);
        if (a.top || b.top) return top();
        if (!varies(e->args[0]))
            return (Itv){false, ir_select(c->a, e->args[0], a.lo, b.lo),
                         ir_select(c->a, e->args[0], a.hi, b.hi)};
        BItv cb = bitv(c, e->args[0]);
        /* a branch that cannot be taken anywhere in the tile does not widen the interval */
        IrExpr *lo = ir_select(c->a, cb.may_false,
                               ir_select(c->a, cb.may_true, mkfn(c, IR_FN_MIN, a.lo, b.lo), b.lo), a.lo);
        IrExpr *hi = ir_select(c->a, cb.may_false,
                               ir_select(c->a, cb.may_true, mkfn(c, IR_FN_MAX, a.hi, b.hi), b.hi), a.hi);
        return (Itv){false, lo, hi};
    }
    default: return top(); /* loads through varying indices, float casts */
    }
}

static BItv unknown(PruneCx *c) { return (BItv){cbool(c, true), cbool(c, true)}; }

/* may-true / may-false of a BOOL expression over the tile. */
static BItv bitv(PruneCx *c, IrExpr *e) {
    if (!varies(e)) return (BItv){e, ir_unary(c->a, IR_NOT, e)};
    switch (e->op) {
    case IR_AND: {
        BItv x = bitv(c, e->args[0]), y = bitv(c, e->args[1]);
        return (BItv){mk2(c, IR_AND, x.may_true, y.may_true), mk2(c, IR_OR, x.may_false, y.may_false)};
    }
    case IR_OR: {
        BItv x = bitv(c, e->args[0]), y = bitv(c, e->args[1]);
        return (BItv){mk2(c, IR_OR, x.may_true, y.may_true), mk2(c, IR_AND, x.may_false, y.may_false)};
    }
    case IR_NOT: {
        BItv x = bitv(c, e->args[0]);
        return (BItv){x.may_false, x.may_true};
    }
    case IR_SELECT: {
        BItv k = bitv(c, e->args[0]), x = bitv(c, e->args[1]), y = bitv(c, e->args[2]);
        return (BItv){mk2(c, IR_OR, mk2(c, IR_AND, k.may_true, x.may_true), mk2(c, IR_AND, k.may_false, y.may_true)),
                      mk2(c, IR_OR, mk2(c, IR_AND, k.may_true, x.may_false), mk2(c, IR_AND, k.may_false, y.may_false))};
    }
    case IR_EQ: case IR_NE: case IR_LT: case IR_LE: case IR_GT: case IR_GE: break;
    default: return unknown(c);
    }
    IrExprOp op = e->op;
    if (e->args[0]->type == IR_TY_BOOL) {
        BItv x = bitv(c, e->args[0]), y = bitv(c, e->args[1]);
        IrExpr *same = mk2(c, IR_OR, mk2(c, IR_AND, x.may_true, y.may_true), mk2(c, IR_AND, x.may_false, y.may_false));
        IrExpr *diff = mk2(c, IR_OR, mk2(c, IR_AND, x.may_true, y.may_false), mk2(c, IR_AND, x.may_false, y.may_true));
        return op == IR_EQ ? (BItv){same, diff} : (BItv){diff, same};
    }
    if (e->args[0]->type != IR_TY_INT) return unknown(c);
    /* compare through the difference: correlated terms (q - k vs w) stay exact */
    IrExpr *d = ir_binary(c->a, IR_SUB, e->args[0], e->args[1]);
    Itv x = itv(c, d);
    if (x.top) return unknown(c);
    IrExpr *z = cint(c, 0);
    switch (op) {
    case IR_LT: return (BItv){mk2(c, IR_LT, x.lo, z), mk2(c, IR_GE, x.hi, z)};
    case IR_LE: return (BItv){mk2(c, IR_LE, x.lo, z), mk2(c, IR_GT, x.hi, z)};
    case IR_GT: return (BItv){mk2(c, IR_GT, x.hi, z), mk2(c, IR_LE, x.lo, z)};
    case IR_GE: return (BItv){mk2(c, IR_GE, x.hi, z), mk2(c, IR_LT, x.lo, z)};
    case IR_EQ:
    case IR_NE: {
        IrExpr *can0 = mk2(c, IR_AND, mk2(c, IR_LE, x.lo, z), mk2(c, IR_GE, x.hi, z));
        IrExpr *not0 = mk2(c, IR_OR, mk2(c, IR_NE, x.lo, z), mk2(c, IR_NE, x.hi, z));
        return op == IR_EQ ? (BItv){can0, not0} : (BItv){not0, can0};
    }
    default: return unknown(c);
    }
}

// key bounds

typedef struct KBound {
    IrExpr *lo; /* INT or NULL (unbounded below) */
    IrExpr *hi; /* INT or NULL (unbounded above), inclusive */
} KBound;

/* Decomposes an INT expression as coef * k + rest, rest free of k. */
static bool linear_in_k(PruneCx *c, IrExpr *e, int64_t *coef, IrExpr **rest) {
    if (!ir_expr_uses_var(e, IR_V_K)) {
        *coef = 0;
        *rest = e;
        return true;
    }
    int64_t ca, cb;
    IrExpr *ra, *rb;
    switch (e->op) {
    case IR_VAR:
        *coef = 1;
        *rest = cint(c, 0);
        return true;
    case IR_ADD:
    case IR_SUB:
        if (!linear_in_k(c, e->args[0], &ca, &ra) || !linear_in_k(c, e->args[1], &cb, &rb)) return false;
        *coef = e->op == IR_ADD ? ca + cb : ca - cb;
        *rest = mk2(c, e->op, ra, rb);
        return true;
    case IR_NEG:
        if (!linear_in_k(c, e->args[0], &ca, &ra)) return false;
        *coef = -ca;
        *rest = ir_unary(c->a, IR_NEG, ra);
        return true;
    case IR_MUL:
        for (int i = 0; i < 2; i++) {
            IrExpr *k = e->args[i], *o = e->args[1 - i];
            if (k->op == IR_CONST && k->ival > -1000000 && k->ival < 1000000 &&
                linear_in_k(c, o, &ca, &ra)) {
                *coef = ca * k->ival;
                *rest = mk2(c, IR_MUL, ra, k);
                return true;
            }
        }
        return false;
    default: return false;
    }
}

static KBound kb_and(PruneCx *c, KBound x, KBound y) {
    KBound r;
    r.lo = !x.lo ? y.lo : !y.lo ? x.lo : mkfn(c, IR_FN_MAX, x.lo, y.lo);
    r.hi = !x.hi ? y.hi : !y.hi ? x.hi : mkfn(c, IR_FN_MIN, x.hi, y.hi);
    return r;
}

static KBound kb_or(PruneCx *c, KBound x, KBound y) {
    KBound r;
    r.lo = x.lo && y.lo ? mkfn(c, IR_FN_MIN, x.lo, y.lo) : NULL;
    r.hi = x.hi && y.hi ? mkfn(c, IR_FN_MAX, x.hi, y.hi) : NULL;
    return r;
}

static KBound kbounds(PruneCx *c, IrExpr *e, int depth);

/* abs(x) OP y  ==>  x OP y && -x OP y, for OP in < <= (and mirrored > >=). */
static KBound kb_abs(PruneCx *c, IrExpr *e, int depth) {
    IrExpr *x = e->args[0], *y = e->args[1];
    IrExprOp op = e->op;
    if (op != IR_LT && op != IR_LE && op != IR_GT && op != IR_GE) return (KBound){0};
    if (op == IR_GT || op == IR_GE) {
        IrExpr *t = x;
        x = y;
        y = t;
        op = op == IR_GT ? IR_LT : IR_LE;
    }
    if (x->op != IR_CALL || x->fn != IR_FN_ABS || x->type != IR_TY_INT) return (KBound){0};
    IrExpr *a = x->args[0];
    IrExpr *p = mk2(c, op, a, y), *n = mk2(c, op, ir_unary(c->a, IR_NEG, a), y);
    return kb_and(c, kbounds(c, p, depth + 1), kbounds(c, n, depth + 1));
}

/* k / m OP u (floor division by a constant m > 0, u free of k: block masks such as
 * k / l == q / l): k / m == u  <=>  m*u <= k <= m*u + m - 1, and so on. */
static KBound kb_div(PruneCx *c, IrExpr *e) {
    KBound none = {0};
    IrExprOp op = e->op;
    IrExpr *x = e->args[0], *u = e->args[1];
    if (!(x->op == IR_DIV && is_var(x->args[0], IR_V_K))) {
        x = e->args[1];
        u = e->args[0];
        op = ir_cmp_mirror(op);
    }
    if (!(x->op == IR_DIV && is_var(x->args[0], IR_V_K)) ||
        x->args[1]->op != IR_CONST || x->args[1]->ival < 1 || ir_expr_uses_var(u, IR_V_K))
        return none;
    Itv ui = itv(c, u);
    if (ui.top) return none;
    IrExpr *m = x->args[1];
    IrExpr *lo = mk2(c, IR_MUL, ui.lo, m);                                   /* m * min u */
    IrExpr *hi = mk2(c, IR_ADD, mk2(c, IR_MUL, ui.hi, m), cint(c, m->ival - 1)); /* m * max u + m - 1 */
    switch (op) {
    case IR_EQ: return (KBound){lo, hi};
    case IR_LT: return (KBound){NULL, mk2(c, IR_SUB, mk2(c, IR_MUL, ui.hi, m), cint(c, 1))};
    case IR_LE: return (KBound){NULL, hi};
    case IR_GT: return (KBound){mk2(c, IR_MUL, mk2(c, IR_ADD, ui.lo, cint(c, 1)), m), NULL};
    case IR_GE: return (KBound){lo, NULL};
    default: return none;
    }
}

static KBound kbounds(PruneCx *c, IrExpr *e, int depth) {
    KBound none = {0};
    if (depth > 64 || !ir_expr_uses_var(e, IR_V_K)) return none;
    switch (e->op) {
    case IR_AND: return kb_and(c, kbounds(c, e->args[0], depth + 1), kbounds(c, e->args[1], depth + 1));
    case IR_OR: return kb_or(c, kbounds(c, e->args[0], depth + 1), kbounds(c, e->args[1], depth + 1));
    case IR_EQ: case IR_LT: case IR_LE: case IR_GT: case IR_GE: break;
    default: return none;
    }
    if (e->args[0]->type != IR_TY_INT) return none;
    KBound ab = kb_abs(c, e, depth);
    if (ab.lo || ab.hi) return ab;
    KBound db = kb_div(c, e);
    if (db.lo || db.hi) return db;
    int64_t coef;
    IrExpr *rest;
    IrExpr *d = ir_binary(c->a, IR_SUB, e->args[0], e->args[1]);
    if (!linear_in_k(c, d, &coef, &rest) || (coef != 1 && coef != -1)) return none;
    /* coef*k + rest OP 0  ==>  k OP' u */
    IrExprOp op = e->op;
    IrExpr *u;
    if (coef == 1) {
        u = ir_unary(c->a, IR_NEG, rest);
    } else {
        u = rest;
        op = ir_cmp_mirror(op);
    }
    Itv ui = itv(c, u);
    if (ui.top) return none;
    switch (op) {
    case IR_LE: return (KBound){NULL, ui.hi};
    case IR_LT: return (KBound){NULL, mk2(c, IR_SUB, ui.hi, cint(c, 1))};
    case IR_GE: return (KBound){ui.lo, NULL};
    case IR_GT: return (KBound){mk2(c, IR_ADD, ui.lo, cint(c, 1)), NULL};
    case IR_EQ: return (KBound){ui.lo, ui.hi};
    default: return none;
    }
}

/* Is the k-free term u a point when QMIN = QMAX (so a bound from it is exact for one row)?
 * Affine terms of q, floor division and remainder by constants, min/max, and anything that
 * does not vary with q (a parameter, src_len[b]); not a read through q (per-tile summaries)
 * or a select. */
static bool exact_term(const IrExpr *u, int depth) {
    if (depth > 64) return false;
    if (!varies(u)) return true;
    switch (u->op) {
    case IR_VAR: return u->var == IR_V_Q;
    case IR_ADD: case IR_SUB: case IR_MUL:
        return exact_term(u->args[0], depth + 1) && exact_term(u->args[1], depth + 1);
    case IR_NEG: return exact_term(u->args[0], depth + 1);
    case IR_DIV: case IR_MOD:
        return u->args[1]->op == IR_CONST && u->args[1]->ival > 0 && exact_term(u->args[0], depth + 1);
    case IR_CALL:
        return (u->fn == IR_FN_MIN || u->fn == IR_FN_MAX) && exact_term(u->args[0], depth + 1) &&
               exact_term(u->args[1], depth + 1);
    default: return false;
    }
}

/* Is `e` exactly "k_lo <= k <= k_hi" of kbounds for a one-row tile? An AND of comparisons,
 * each bounding k through one of kbounds' forms (k +- u, abs(k - u), k / m against u) with
 * exact terms; anything else (!=, ||, a k-free conjunct, a read of k) leaves holes or rows
 * that kbounds does not describe. */
static bool exact_bounds(PruneCx *c, IrExpr *e, int depth) {
    if (depth > 64 || !ir_expr_uses_var(e, IR_V_K)) return false;
    if (e->op == IR_AND) return exact_bounds(c, e->args[0], depth + 1) && exact_bounds(c, e->args[1], depth + 1);
    if (e->op != IR_EQ && e->op != IR_LT && e->op != IR_LE && e->op != IR_GT && e->op != IR_GE) return false;
    if (e->args[0]->type != IR_TY_INT) return false;
    for (int i = 0; i < 2; i++) {
        /* abs(x) OP y: x OP y && -x OP y, as kb_abs splits it */
        IrExpr *x = e->args[i], *y = e->args[1 - i];
        IrExprOp op = i ? ir_cmp_mirror(e->op) : e->op;
        if (x->op == IR_CALL && x->fn == IR_FN_ABS && x->type == IR_TY_INT) {
            if (op != IR_LT && op != IR_LE) return false;
            IrExpr *a = x->args[0];
            return exact_bounds(c, mk2(c, op, a, y), depth + 1) &&
                   exact_bounds(c, mk2(c, op, ir_unary(c->a, IR_NEG, a), y), depth + 1);
        }
        /* k / m OP u */
        if (x->op == IR_DIV && is_var(x->args[0], IR_V_K))
            return x->args[1]->op == IR_CONST && x->args[1]->ival >= 1 && !ir_expr_uses_var(y, IR_V_K) &&
                   exact_term(y, depth + 1);
    }
    int64_t coef;
    IrExpr *rest;
    return linear_in_k(c, ir_binary(c->a, IR_SUB, e->args[0], e->args[1]), &coef, &rest) &&
           (coef == 1 || coef == -1) && exact_term(rest, depth + 1);
}

/* Moves a residue conjunct of the mask into f->prune.runs (a congruence with q first, as it
 * also strides the rows); f->prune.mask is the rest. */
static bool find_runs(PruneCx *c, IrFunc *f) {
    IrExpr *conj[32];
    int n = ir_mask_flatten(f->mask, IR_AND, conj, 0, 32);
    f->prune.mask = f->mask;
    if (n > 32 || f->page_size) return true; /* paged K/V: no residue runs (keys page by page) */
    int pick = -1;
    IrRuns best = {0};
    for (int i = 0; i < n; i++) {
        IrRuns r;
        if (!ir_mask_residue(conj[i], &r)) continue;
        if (pick < 0 || (r.with_q && !best.with_q) ||
            (r.with_q == best.with_q && r.width * best.mod < best.width * r.mod)) {
            pick = i;
            best = r;
        }
    }
    if (pick < 0) return true;
    f->prune.runs = best;
    f->prune.mask = pass_fold_expr(c->a, ir_mask_join(c->a, IR_AND, conj, n, pick), c->err);
    return f->prune.mask != NULL;
}

bool pass_prune(IrFunc *f, PassCtx *ctx) {
    memset(&f->prune, 0, sizeof f->prune);
    /* -fno-prune analyses too (the schedule sizes tasks from k_lo alike, so the two kernels
     * differ only in pruning) but leaves enabled false: nothing else reads the results */
    PruneCx c = {.a = f->arena, .f = f, .err = ctx->err};
    if (!find_runs(&c, f)) return false; /* folding said why */
    BItv m = bitv(&c, f->prune.mask);
    KBound kb = kbounds(&c, f->prune.mask, 0);
    if (!(f->prune.may_see = pass_fold_expr(c.a, m.may_true, ctx->err)) ||
        !(f->prune.all_see = pass_fold_expr(c.a, ir_unary(c.a, IR_NOT, m.may_false), ctx->err)) ||
        !(f->prune.k_lo = pass_fold_expr(c.a, kb.lo ? kb.lo : cint(&c, 0), ctx->err)) ||
        !(f->prune.k_hi = pass_fold_expr(
              c.a, kb.hi ? kb.hi : ir_binary(c.a, IR_SUB, ir_var(c.a, IR_V_KVLEN), cint(&c, 1)), ctx->err)))
        return false;
    if (!c.a->failed) f->prune.exact = exact_bounds(&c, f->prune.mask, 0);
    if (c.a->failed) {
        sb_puts(ctx->err, "prune: out of memory\n");
        return false;
    }
    f->prune.enabled = !ctx->no_prune;
    return true;
}
