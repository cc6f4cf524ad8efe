/* Unions split into disjoint key domains.
 *
 * A mask P && (A || B) whose B holds a congruence ((q - k) % r == 0, as in the Sparse
 * Transformer's strided pattern: a band plus a residue class) is as costly as its densest
 * term when run as one loop nest: the residue class alone is sparse in every tile. Split it
 * into the disjoint domains P && A and P && B && !A; each is then a mask the later passes do
 * handle well (a band gets key bounds, a top-level congruence gets residue-class runs), and
 * each key is visited once. The domains run as separate kernels whose (o, lse) are merged
 * through their log-sum-exps, which equals one softmax over the union. */
#include "passes.h"

#include <string.h>

static bool has_congruence(const IrExpr *e) {
    if (!e) return false;
    if ((e->op == IR_EQ || e->op == IR_NE) && e->args[0]->type == IR_TY_INT) {
        for (int i = 0; i < 2; i++) {
            const IrExpr *m = e->args[i], *z = e->args[1 - i];
            if (m->op == IR_MOD && z->op == IR_CONST && z->ival == 0 &&
                ir_expr_uses_var(m, IR_V_Q) && ir_expr_uses_var(m, IR_V_K))
                return e->op == IR_EQ;
        }
    }
    if (e->op == IR_AND) return has_congruence(e->args[0]) || has_congruence(e->args[1]);
    return false;
}

/* Flattens a tree of `op` into its terms. */
static int flatten(IrExpr *e, IrExprOp op, IrExpr **out, int n, int max) {
    if (e->op == op) {
        n = flatten(e->args[0], op, out, n, max);
        return flatten(e->args[1], op, out, n, max);
    }
    if (n < max) out[n] = e;
    return n + 1;
}

static IrExpr *join(Arena *a, IrExprOp op, IrExpr **terms, int n, int skip) {
    IrExpr *r = NULL;
    for (int i = 0; i < n; i++)
        if (i != skip) r = r ? ir_binary(a, op, r, terms[i]) : terms[i];
    return r ? r : ir_const_bool(a, op == IR_AND);
}

bool pass_split(IrFunc *f, PassCtx *ctx) {
    f->ndomains = 0;
    if (ctx->no_prune || ctx->no_split || f->mla.present || f->dtype != ATTN_F32) return true;
    Arena *a = f->arena;
    IrExpr *conj[16], *terms[IR_MAX_DOMAINS + 1];
    int nc = flatten(f->mask, IR_AND, conj, 0, 16);
    if (nc > 16) return true;
    for (int i = 0; i < nc; i++) {
        if (conj[i]->op != IR_OR) continue;
        int nt = flatten(conj[i], IR_OR, terms, 0, IR_MAX_DOMAINS + 1);
        if (nt > IR_MAX_DOMAINS) continue;
        bool worth = false;
        for (int t = 0; t < nt; t++) worth |= has_congruence(terms[t]);
        if (!worth) continue;
        IrExpr *rest = join(a, IR_AND, conj, nc, i);
        IrExpr *before = NULL; /* the terms of earlier domains, excluded from later ones */
        for (int t = 0; t < nt; t++) {
            IrFunc *g = arena_alloc(a, sizeof *g);
            if (!g) goto oom;
            *g = *f;
            g->name = arena_printf(a, "%s_domain%d", f->name, t);
            g->absorbed = NULL;
            g->ndomains = 0;
            IrExpr *m = ir_binary(a, IR_AND, rest, terms[t]);
            if (before) m = ir_binary(a, IR_AND, m, ir_unary(a, IR_NOT, before));
            g->mask = pass_fold_expr(a, m);
            before = before ? ir_binary(a, IR_OR, before, terms[t]) : terms[t];
            if (!g->name || !g->mask) goto oom;
            f->domains[f->ndomains++] = g;
        }
        return true;
    }
    return true;
oom:
    sb_puts(ctx->err, "split: out of memory\n");
    return false;
}
