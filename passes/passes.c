/* The pass table and driver: the pipeline is this list. */
#include "passes.h"

#include <string.h>

const Pass pass_table[] = {
    {"fold", pass_fold, "fold constants and simplify mask, score and head-map expressions", -1},
    {"grad", pass_grad, "derive the score's derivatives for the backward (chain rule through score)", -1},
    {"absorb", pass_absorb, "MLA: add the variant that scores against the latent cache", IR_VAR_ABSORBED},
    {"permute", pass_permute, "permutation masks (rank[k] <= rank[q]): a causal variant in rank order", IR_VAR_PERMUTED},
    {"split", pass_split, "split union masks with a congruence into disjoint key domains", IR_VAR_DOMAIN},
    {"flash", pass_flash, "fuse qk/scale/score/mask/softmax/pv into one online-softmax op", -1},
    {"prune", pass_prune, "derive key bounds and empty/full tile tests from the mask", -1},
    {"schedule", pass_schedule, "choose vector width, query/key tiles and register rows", -1},
    {NULL, NULL, NULL, -1},
};

const Pass *pass_find(const char *name) {
    for (const Pass *p = pass_table; p->name; p++)
        if (strcmp(p->name, name) == 0) return p;
    return NULL;
}

bool pass_run_pipeline(IrFunc *f, PassCtx *ctx, const char *stop_after) {
    if (!ir_verify_func(f, ctx->err)) return false;
    for (const Pass *p = pass_table; p->name; p++) {
        if (!p->run(f, ctx)) return false;
        /* the variants made before this pass go through it too (an MLA func's absorbed one, a
         * union's domains, a permuted one); every variant is verified after it */
        bool ok = ir_verify_func(f, ctx->err);
        for (int i = 0; i < f->nvariants && ok; i++) {
            IrFunc *g = f->variants[i].f;
            if ((int)f->variants[i].kind != p->makes && !p->run(g, ctx)) return false;
            ok = ir_verify_func(g, ctx->err);
        }
        if (!ok) {
            sb_printf(ctx->err, "(after pass %s)\n", p->name);
            return false;
        }
        if (stop_after && strcmp(stop_after, p->name) == 0) break;
    }
    return true;
}
