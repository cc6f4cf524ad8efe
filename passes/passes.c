/* The pass table and driver: the pipeline is this list. */
#include "passes.h"

#include <string.h>

const Pass pass_table[] = {
    {"fold", pass_fold, "fold constants and simplify mask, score and head-map expressions"},
    {"absorb", pass_absorb, "MLA: add the variant that scores against the latent cache"},
    {"flash", pass_flash, "fuse qk/scale/score/mask/softmax/pv into one online-softmax op"},
    {"prune", pass_prune, "derive key bounds and empty/full tile tests from the mask"},
    {"schedule", pass_schedule, "choose vector width, query/key tiles and register rows"},
    {NULL, NULL, NULL},
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
        /* an MLA func's absorbed variant goes through every later pass with it */
        bool own = f->absorbed && p->run != pass_absorb;
        if (own && !p->run(f->absorbed, ctx)) return false;
        if (!ir_verify_func(f, ctx->err) || (f->absorbed && !ir_verify_func(f->absorbed, ctx->err))) {
            sb_printf(ctx->err, "(after pass %s)\n", p->name);
            return false;
        }
        if (stop_after && strcmp(stop_after, p->name) == 0) break;
    }
    return true;
}
