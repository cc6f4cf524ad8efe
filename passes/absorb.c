/* MLA weight absorption as an IR rewrite.
 *
 * As written, an MLA block is per-head attention over up-projected keys and values:
 *   score = scale * (q_nope[h] . (c_kv w_uk[h]) + q_rope[h] . k_rope),  o[h] = P (c_kv w_uv[h]).
 * Re-associating the products, q_nope[h] . (c_kv[k] w_uk[h]) = (w_uk[h] q_nope[h]) . c_kv[k]
 * and P (c_kv w_uv[h]) = (P c_kv) w_uv[h], so every head can score against the *shared*
 * latent cache: an MQA-like attention with a (kv_rank + rope_dim)-wide key [c_kv | k_rope],
 * the kv_rank-wide value c_kv, the query [w_uk[h] q_nope | q_rope], and w_uv applied after the
 * weighted sum. This pass builds that variant beside the original; both are compiled and the
 * runtime picks one per call (absorb = auto: a cost model; on/off: forced). */
#include "passes.h"

#include <string.h>

bool pass_absorb(IrFunc *f, PassCtx *ctx) {
    if (!f->mla.present || ir_variant(f, IR_VAR_ABSORBED, 0)) return true;
    IrAbsorb mode = ctx->absorb != IR_ABSORB_AUTO ? ctx->absorb : f->mla.absorb;
    f->mla.absorb = mode; /* the choice in effect (the option over the spec), for what builds the variants */
    if (mode == IR_ABSORB_OFF) return true;
    IrFunc *g = arena_alloc(f->arena, sizeof *g);
    int *map = arena_alloc(f->arena, sizeof(int) * (size_t)f->heads);
    if (!g || !map) {
        sb_puts(ctx->err, "absorb: out of memory\n");
        return false;
    }
    *g = *f; /* same mask, score, scale, inputs and op graph: only the shapes change */
    g->name = arena_printf(f->arena, "%s_absorbed", f->name);
    g->kv_heads = 1;
    g->qk_dim = f->mla.kv_rank + f->mla.rope_dim;
    g->v_dim = f->mla.kv_rank;
    g->head_map = map; /* zeroed: every head reads the one latent K/V head */
    g->head_map_expr = NULL;
    g->mla.absorbed = true;
    g->nvariants = 0;
    return g->name != NULL && ir_variant_add(f, IR_VAR_ABSORBED, g);
}
