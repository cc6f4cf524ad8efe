/* Tiling choice: the schedule is data the codegen reads (Halide's split of algorithm and
 * schedule), sized from the target's vector width, not from one machine. Measured on AVX-512
 * (docs/codegen.md): 4 register rows for every head size (P.V runs in column groups, so the
 * accumulators fit whatever v_dim is), key blocks that keep the packed K^T block in ~16 KiB
 * of L1, and 64-row query tasks (packing amortized; narrow masks skip less). */
#include "passes.h"

bool pass_schedule(IrFunc *f, PassCtx *ctx) {
    int w = ctx->vec_width > 0 ? ctx->vec_width : 4;
    int widest = f->qk_dim > f->v_dim ? f->qk_dim : f->v_dim;
    int block_k = w;
    if (w == 8) {
        block_k = 16; /* AVX2: two vectors of keys */
    } else {
        while (block_k + w <= 4 * w && (int64_t)(block_k + w) * widest <= 4096) block_k += w;
    }
    f->sched.vec_width = w;
    f->sched.rows = 4;
    f->sched.block_k = block_k;
    f->sched.block_q = 64;
    /* residue classes (k = q mod r): a task's rows split into r classes, so the task holds
     * 128 rows of each (up to 2048 rows, enough tasks left for threads); with the partial
     * blocks' windows, 128 measured a few % faster than 64 on atrous 8, 32 slower */
    if (f->prune.enabled && f->prune.runs.with_q) {
        int64_t bq = 128 * f->prune.runs.mod;
        f->sched.block_q = (int)(bq > 2048 ? 2048 : bq);
    }
    return true;
}
