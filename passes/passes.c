/* The pass table and driver: the pipeline is this list. */
#include "passes.h"

#include <string.h>

const Pass pass_table[] = {
    {"fold", pass_fold, "fold constants and simplify mask, score and head-map expressions"},
    {"absorb", pass_absorb, "MLA: add the variant that scores against the latent cache"},
    {"permute", pass_permute, "permutation masks (rank[k] <= rank[q]): a causal variant in rank order"},
    {"split", pass_split, "split union masks with a congruence into disjoint key domains"},
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
        /* an MLA func's absorbed variant and a union's domains go through every later pass */
        IrFunc *variants[1 + IR_MAX_DOMAINS];
        int nv = 0;
        if (f->absorbed && p->run != pass_absorb) variants[nv++] = f->absorbed;
        if (f->permuted && p->run != pass_permute) variants[nv++] = f->permuted;
        for (int i = 0; i < f->ndomains && p->run != pass_split; i++) variants[nv++] = f->domains[i];
        for (int i = 0; i < nv; i++)
            if (!p->run(variants[i], ctx)) return false;
        bool ok = ir_verify_func(f, ctx->err);
        for (int i = 0; i < nv && ok; i++) ok = ir_verify_func(variants[i], ctx->err);
        if (f->absorbed && p->run == pass_absorb) ok = ok && ir_verify_func(f->absorbed, ctx->err);
        if (f->permuted && p->run == pass_permute) ok = ok && ir_verify_func(f->permuted, ctx->err);
        for (int i = 0; i < f->ndomains && p->run == pass_split && ok; i++)
            ok = ir_verify_func(f->domains[i], ctx->err);
        if (!ok) {
            sb_printf(ctx->err, "(after pass %s)\n", p->name);
            return false;
        }
        if (stop_after && strcmp(stop_after, p->name) == 0) break;
    }
    return true;
}
