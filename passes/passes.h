/* passes.h — IR -> IR passes, listed in one table the driver walks and `attnc dump --after`
 * reads. Each pass: bool pass_NAME(IrFunc *, PassCtx *), false on failure (message in ctx). */
#ifndef ATTNC_PASSES_H
#define ATTNC_PASSES_H

#include "ir/ir.h"

typedef struct PassCtx {
    int vec_width;  /* f32 lanes of the target's widest vector */
    bool bf16dot;   /* the target has bf16 dot products (AVX512-BF16's vdpbf16ps) */
    bool vnni;      /* the target has int8 dot products (AVX512-VNNI's vpdpbusd) */
    int opt_level;  /* 0..3 */
    bool no_prune;  /* -fno-prune */
    IrAbsorb absorb; /* --absorb on|off overrides the spec; AUTO keeps it */
    StrBuf *err;    /* where a failing pass explains itself */
} PassCtx;

typedef bool (*PassFn)(IrFunc *f, PassCtx *ctx);

typedef struct Pass {
    const char *name; /* as in `attnc dump --after NAME` */
    PassFn run;       /* the pass */
    const char *what; /* one line for --help */
    int makes;        /* the IrVariantKind of the funcs it derives, or -1 */
} Pass;

extern const Pass pass_table[]; /* in pipeline order, terminated by {NULL} */

const Pass *pass_find(const char *name);

/* Runs the pipeline up to and including `stop_after` (NULL: all), verifying after each pass. */
bool pass_run_pipeline(IrFunc *f, PassCtx *ctx, const char *stop_after);

bool pass_fold(IrFunc *f, PassCtx *ctx);
bool pass_grad(IrFunc *f, PassCtx *ctx);
bool pass_absorb(IrFunc *f, PassCtx *ctx);
bool pass_permute(IrFunc *f, PassCtx *ctx);
bool pass_split(IrFunc *f, PassCtx *ctx);
bool pass_flash(IrFunc *f, PassCtx *ctx);
bool pass_prune(IrFunc *f, PassCtx *ctx);
bool pass_schedule(IrFunc *f, PassCtx *ctx);

/* Folds constants and simplifies one expression tree; NULL, with the reason in `err`, when out
 * of memory or when constants overflow. */
IrExpr *pass_fold_expr(Arena *a, IrExpr *e, StrBuf *err);

#endif
