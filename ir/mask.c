/* Mask analysis: the structural facts about a mask that the passes act on and the code
 * generator reads back. Conjunctions and disjunctions as lists of terms (split, prune),
 * residue conjuncts as runs of keys (split, prune), and the exact intervals the prune pass
 * derived, recognised as a band or a staircase (print, codegen's templates). */
#include "ir.h"

// terms

int ir_mask_flatten(IrExpr *e, IrExprOp op, IrExpr **out, int n, int max) {
    if (e->op == op) {
        n = ir_mask_flatten(e->args[0], op, out, n, max);
        return ir_mask_flatten(e->args[1], op, out, n, max);
    }
    if (n < max) out[n] = e;
    return n + 1;
}

IrExpr *ir_mask_join(Arena *a, IrExprOp op, IrExpr **terms, int n, int skip) {
    IrExpr *r = NULL;
    for (int i = 0; i < n; i++)
        if (i != skip) r = r ? ir_binary(a, op, r, terms[i]) : terms[i];
    return r ? r : ir_const_bool(a, op == IR_AND);
}

IrExprOp ir_cmp_mirror(IrExprOp op) {
    return op == IR_LT ? IR_GT : op == IR_LE ? IR_GE : op == IR_GT ? IR_LT : op == IR_GE ? IR_LE : op;
}

// residue runs

static bool is_var(const IrExpr *e, IrVar v) { return e->op == IR_VAR && (IrVar)e->var == v; }

/* x % r with a constant r in [2, 2^20]: r, else 0. */
static int64_t modulus(const IrExpr *x) {
    if (x->op != IR_MOD || x->args[1]->op != IR_CONST || x->args[1]->type != IR_TY_INT) return 0;
    int64_t r = x->args[1]->ival;
    return r >= 2 && r <= (1 << 20) ? r : 0;
}

bool ir_mask_residue(const IrExpr *e, IrRuns *out) {
    if (e->op < IR_EQ || e->op > IR_GE || e->args[0]->type != IR_TY_INT) return false;
    IrExprOp op = e->op;
    const IrExpr *x = e->args[0], *y = e->args[1];
    if (!modulus(x)) {
        /* c OP k % r  ==  k % r OP' c */
        const IrExpr *t = x;
        x = y;
        y = t;
        op = ir_cmp_mirror(op);
    }
    int64_t r = modulus(x);
    if (!r) return false;
    const IrExpr *d = x->args[0];
    if (op == IR_EQ) {
        /* (q - k) % r == 0, (k - q) % r == 0, k % r == q % r */
        bool diff = d->op == IR_SUB && y->op == IR_CONST && y->ival == 0 &&
                    ((is_var(d->args[0], IR_V_Q) && is_var(d->args[1], IR_V_K)) ||
                     (is_var(d->args[0], IR_V_K) && is_var(d->args[1], IR_V_Q)));
        bool pair = modulus(y) == r && ((is_var(d, IR_V_K) && is_var(y->args[0], IR_V_Q)) ||
                                        (is_var(d, IR_V_Q) && is_var(y->args[0], IR_V_K)));
        if (diff || pair) {
            *out = (IrRuns){.mod = r, .base = 0, .width = 1, .with_q = true};
            return true;
        }
    }
    /* k % r OP c: the residues [lo, hi) */
    if (!is_var(d, IR_V_K) || y->op != IR_CONST || y->type != IR_TY_INT) return false;
    int64_t c = y->ival, lo = 0, hi = r;
    switch (op) {
    case IR_EQ: lo = c, hi = c + 1; break;
    case IR_LT: hi = c; break;
    case IR_LE: hi = c + 1; break;
    case IR_GT: lo = c + 1; break;
    case IR_GE: lo = c; break;
    default: return false;
    }
    lo = lo < 0 ? 0 : lo;
    hi = hi > r ? r : hi;
    /* worth it when at most half the keys are visited (and some are) */
    if (hi <= lo || 2 * (hi - lo) > r) return false;
    *out = (IrRuns){.mod = r, .base = lo, .width = hi - lo, .with_q = false};
    return true;
}

// bands and staircases

/* e = coef * q + c, q the one-row tile's position (QMIN = QMAX): sums, differences and
 * negations of QMIN, QMAX and integer constants only, no overflow; false for anything else. */
static bool affine_row(const IrExpr *e, int64_t *coef, int64_t *c, int depth) {
    if (depth > 64) return false;
    int64_t c0, k0, c1, k1;
    switch (e->op) {
    case IR_CONST:
        if (e->type != IR_TY_INT) return false;
        *coef = 0, *c = e->ival;
        return true;
    case IR_VAR:
        if (e->var != IR_V_QMIN && e->var != IR_V_QMAX) return false;
        *coef = 1, *c = 0;
        return true;
    case IR_NEG:
        return affine_row(e->args[0], &k0, &c0, depth + 1) && !__builtin_sub_overflow(0, k0, coef) &&
               !__builtin_sub_overflow(0, c0, c);
    case IR_ADD:
    case IR_SUB:
        if (!affine_row(e->args[0], &k0, &c0, depth + 1) || !affine_row(e->args[1], &k1, &c1, depth + 1)) return false;
        if (e->op == IR_ADD) return !__builtin_add_overflow(k0, k1, coef) && !__builtin_add_overflow(c0, c1, c);
        return !__builtin_sub_overflow(k0, k1, coef) && !__builtin_sub_overflow(c0, c1, c);
    case IR_CALL:
        /* min/max of two bounds with the same slope: the slope, and the min/max offset */
        if ((e->fn != IR_FN_MIN && e->fn != IR_FN_MAX) || e->nargs != 2 ||
            !affine_row(e->args[0], &k0, &c0, depth + 1) || !affine_row(e->args[1], &k1, &c1, depth + 1) || k0 != k1)
            return false;
        *coef = k0;
        *c = (e->fn == IR_FN_MIN) == (c0 < c1) ? c0 : c1;
        return true;
    default:
        return false;
    }
}

/* An exact interval whose bounds are affine in the row: k_lo = klo q + clo, k_hi = khi q + chi. */
static bool prune_affine(const IrFunc *f, int64_t *klo, int64_t *clo, int64_t *khi, int64_t *chi) {
    const IrPrune *pr = &f->prune;
    return pr->enabled && pr->exact && pr->k_lo && pr->k_hi && affine_row(pr->k_lo, klo, clo, 0) &&
           affine_row(pr->k_hi, khi, chi, 0);
}

bool ir_prune_tri(const IrFunc *f, int64_t *lo, int64_t *hi) {
    int64_t klo, clo, khi, chi;
    if (!prune_affine(f, &klo, &clo, &khi, &chi) || klo != 0 || khi != 1) return false;
    /* [clo, q + chi]: bounded constants (the kernel's position arithmetic stays in range) */
    if (chi > 0 || chi < -((int64_t)1 << 30) || clo < -((int64_t)1 << 40) || clo > ((int64_t)1 << 40)) return false;
    *lo = clo;
    *hi = -chi;
    return true;
}

int64_t ir_prune_band(const IrFunc *f, int64_t *hi) {
    int64_t klo, clo, khi, chi;
    if (!prune_affine(f, &klo, &clo, &khi, &chi) || klo != 1 || khi != 1) return 0;
    /* [q + clo, q + chi]: w = chi - clo + 1 keys ending -chi before q */
    int64_t w;
    if (__builtin_sub_overflow(chi, clo, &w) || w < 0 || w >= ((int64_t)1 << 30) || chi > 0 || chi < -((int64_t)1 << 30))
        return 0;
    *hi = -chi;
    return w + 1;
}
