/* Unions split into disjoint key domains.
 *
 * A mask P && (A || B) whose B holds a residue conjunct ((q - k) % r == 0 in the Sparse
 * Transformer's strided pattern: a band plus a residue class; k % l >= l - c in its fixed
 * pattern: blocks plus summary keys) is as costly as its densest term when run as one loop
 * nest: the residue set alone is sparse in every tile. Split it into the disjoint domains
 * P && A and P && B && !A; each is then a mask the later passes do handle well (a band gets
 * key bounds, a top-level residue conjunct gets runs over its keys only), and
 * each key is visited once. The domains run as separate kernels whose (o, lse) are merged
 * through their log-sum-exps, which equals one softmax over the union. */
#include "passes.h"

#include <string.h>

/* A term worth a domain of its own: it has a residue conjunct the prune pass runs apart. */
static bool has_residue(IrExpr *e) {
    IrExpr *conj[32];
    int n = ir_mask_flatten(e, IR_AND, conj, 0, 32);
    IrRuns r;
    for (int i = 0; i < n && i < 32; i++)
        if (ir_mask_residue(conj[i], &r)) return true;
    return false;
}

bool pass_split(IrFunc *f, PassCtx *ctx) {
    ir_variant_drop(f, IR_VAR_DOMAIN);
    if (ctx->no_prune || f->mla.present || f->dtype != ATTN_F32 || f->kv_dtype != ATTN_F32) return true;
    Arena *a = f->arena;
    IrExpr *conj[16], *terms[IR_MAX_DOMAINS + 1];
    int nc = ir_mask_flatten(f->mask, IR_AND, conj, 0, 16);
    if (nc > 16) return true;
    for (int i = 0; i < nc; i++) {
        if (conj[i]->op != IR_OR) continue;
        int nt = ir_mask_flatten(conj[i], IR_OR, terms, 0, IR_MAX_DOMAINS + 1);
        if (nt > IR_MAX_DOMAINS) continue;
        bool worth = false;
        for (int t = 0; t < nt; t++) worth |= has_residue(terms[t]);
        if (!worth) continue;
        IrExpr *rest = ir_mask_join(a, IR_AND, conj, nc, i);
        IrExpr *before = NULL; /* the terms of earlier domains, excluded from later ones */
        for (int t = 0; t < nt; t++) {
            IrFunc *g = arena_alloc(a, sizeof *g);
            if (!g) goto oom;
            *g = *f;
            g->name = arena_printf(a, "%s_domain%d", f->name, t);
            g->nvariants = 0;
            IrExpr *m = ir_binary(a, IR_AND, rest, terms[t]);
            if (before) m = ir_binary(a, IR_AND, m, ir_unary(a, IR_NOT, before));
            g->mask = pass_fold_expr(a, m, ctx->err);
            if (!g->mask) return false;
            before = before ? ir_binary(a, IR_OR, before, terms[t]) : terms[t];
            if (!g->name || !ir_variant_add(f, IR_VAR_DOMAIN, g)) goto oom;
        }
        return true;
    }
    return true;
oom:
    sb_puts(ctx->err, "split: out of memory\n");
    return false;
}
