/* Permutation masks run as causal masks in rank order.
 *
 * XLNet's permutation LM masks with `rank[b, k] <= rank[b, q]` (content stream) or `<` (query
 * stream): a query sees the keys predicted no later than itself. Sorting queries and keys by
 * rank turns that into `k <= q` (or `k < q`) on the sorted positions — an ordinary causal mask,
 * which the prune pass bounds exactly — as the permutation-LM article observes. This pass adds
 * that causal variant beside the original; per call the runtime checks that each batch row's
 * ranks are a permutation of 0..n-1, gathers Q/K/V rows in rank order, runs the variant and
 * scatters the output rows back, or runs the original when they are not (ties, q_len != kv_len).
 * Only when nothing else reads positions: the mask is exactly that atom and a score mod, if any,
 * does not read q or k. */
#include "passes.h"

static bool is_rank_load(const IrFunc *f, const IrExpr *e, IrVar pos, int *input) {
    if (e->op != IR_INPUT || e->nargs != 2) return false;
    const IrInput *in = &f->inputs[e->input];
    if (in->dtype != ATTN_I32 || in->dim_kind[0] != ATTN_DIM_BATCH || in->dim_kind[1] != ATTN_DIM_KV_LEN)
        return false;
    if (e->args[0]->op != IR_VAR || e->args[0]->var != IR_V_B) return false;
    if (e->args[1]->op != IR_VAR || e->args[1]->var != (int)pos) return false;
    *input = e->input;
    return true;
}

bool pass_permute(IrFunc *f, PassCtx *ctx) {
    ir_variant_drop(f, IR_VAR_PERMUTED);
    if (ctx->no_prune || f->mla.present || f->dtype != ATTN_F32 || f->kv_dtype != ATTN_F32) return true;
    const IrExpr *m = f->mask;
    if (m->op != IR_LE && m->op != IR_LT) return true;
    int ik, iq;
    if (!is_rank_load(f, m->args[0], IR_V_K, &ik) || !is_rank_load(f, m->args[1], IR_V_Q, &iq) || ik != iq)
        return true;
    if (f->score && (ir_expr_uses_var(f->score, IR_V_Q) || ir_expr_uses_var(f->score, IR_V_K)))
        return true;
    IrFunc *g = arena_alloc(f->arena, sizeof *g);
    if (!g) {
        sb_puts(ctx->err, "permute: out of memory\n");
        return false;
    }
    *g = *f;
    g->name = arena_printf(f->arena, "%s_ranked", f->name);
    g->mask = ir_binary(f->arena, m->op, ir_var(f->arena, IR_V_K), ir_var(f->arena, IR_V_Q));
    g->nvariants = 0;
    g->grad.present = false; /* the backward runs the block as written */
    if (!g->name || !g->mask || !ir_variant_add(f, IR_VAR_PERMUTED, g)) {
        sb_puts(ctx->err, "permute: out of memory\n");
        return false;
    }
    f->perm_input = ik;
    return true;
}
