/* Tiling choice: the schedule is data the codegen reads (Halide's split of algorithm and
 * schedule). Sized from the target's vector width and register file, not from one machine. */
#include "passes.h"

bool pass_schedule(IrFunc *f, PassCtx *ctx) {
    int w = ctx->vec_width > 0 ? ctx->vec_width : 4;
    /* vector registers: 32 on AVX-512 and NEON, 16 on AVX2/SSE */
    int regs = w == 16 ? 32 : w == 8 ? 16 : 32;
    int chunks = (f->v_dim + w - 1) / w;
    /* per row: the accumulator chunks of o plus one score vector; keep a few for K and V */
    int rows = (regs - 4) / (chunks + 1);
    if (rows < 1) rows = 1;
    if (rows > 8) rows = 8;
    f->sched.vec_width = w;
    f->sched.rows = rows;
    f->sched.block_k = w;
    /* a task's rows: enough to amortize packing K, few enough that o fits in L1/L2 */
    int block_q = 64;
    while (block_q > rows && (int64_t)block_q * f->v_dim * 4 > 64 * 1024) block_q /= 2;
    block_q = block_q / rows * rows;
    f->sched.block_q = block_q > 0 ? block_q : rows;
    return true;
}
