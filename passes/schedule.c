/* Tiling choice: the schedule is data the codegen reads (Halide's split of algorithm and
 * schedule), sized from the target's vector width, not from one machine. Measured on AVX-512
 * (docs/codegen.md): 4 register rows for every head size (P.V runs in column groups, so the
 * accumulators fit whatever v_dim is), key blocks of 4 vectors with a packed K^T block of up
 * to 64 KiB, and 256-row query tasks (packing amortized) or 64-row chunks for windows
 * (narrow masks skip less). */
#include "passes.h"

bool pass_schedule(IrFunc *f, PassCtx *ctx) {
    int w = ctx->vec_width > 0 ? ctx->vec_width : 4;
    int widest = f->qk_dim > f->v_dim ? f->qk_dim : f->v_dim;
    int block_k = w;
    if (w == 8) {
        block_k = 16; /* AVX2: two vectors of keys */
    } else {
        /* up to 4 vectors of keys, a K^T block of up to 128 KiB (32768 floats): d128 and d256
         * take 64 keys (causal d128 -4%, GQA 32/8 d128 -5%, d256 -12%, sliding d128 -5%
         * against a 16 KiB block: 32 and 16 keys), MLA's 576-wide absorbed keys 48 (prefill
         * q_len 128 -12%, decode -10% against 16) */
        while (block_k + w <= 4 * w && (int64_t)(block_k + w) * widest <= 32768) block_k += w;
    }
    f->sched.vec_width = w;
    f->sched.rows = 4;
    f->sched.block_k = block_k;
    /* Query rows per task: 256 where rows see keys from a fixed start (dense, causal,
     * prefix): each key block is packed once per 256 rows instead of 64 (4096^2 d64 causal
     * -4%, dense -5%, GQA 32/8 d128 -2%). Where the first key moves with q (windows, bands),
     * a taller chunk only widens the key range (sliding 256 +3%, a 64-band +4% at 256): tasks
     * of 1024 rows in chunks of 64, each chunk finding most of its packed key blocks in the
     * ring the previous one left (sliding 256 -4-6%, a 64-band -2-4%). k_lo is analysed under
     * -fno-prune too, so both kernels get the same tasks. The runtime cuts tasks shorter when
     * there are too few for the threads. */
    bool window = f->prune.k_lo && (ir_expr_uses_var(f->prune.k_lo, IR_V_QMIN) ||
                                    ir_expr_uses_var(f->prune.k_lo, IR_V_QMAX));
    f->sched.block_q = window ? 1024 : 256;
    f->sched.chunk_q = window ? 64 : 0;
    /* residue classes (k = q mod r): a task's rows split into r classes, so the task holds
     * 128 rows of each (up to 4096 rows: strided 64's classes run once a head instead of in two
     * halves that pack the first half's keys twice, 4 heads -6%; the runtime cuts them back to
     * 2048 when there are fewer than four a thread); with the partial blocks' windows, 128
     * measured a few % faster than 64 on atrous 8, 32 slower. Within a window: 256 rows of
     * each (up to 2048), in chunks of 64 that share packed blocks through the ring (atrous 8
     * in 1024, 1 and 4 heads: -7%). */
    if (f->prune.enabled && f->prune.runs.with_q) {
        int64_t r = f->prune.runs.mod, bq = (window ? 256 : 128) * r, cap = window ? 2048 : 4096;
        f->sched.block_q = (int)(bq > cap ? cap : bq);
        f->sched.chunk_q = window && 64 * r < f->sched.block_q ? (int)(64 * r) : 0;
        /* a class's rows see few keys (a causal run of 64 for strided 64), so partial blocks'
         * windows are 1-2 vectors wide: 8 register rows keep 16 FMA chains in flight where 4
         * rows had 8 (strided 64's class domain, 1 head -5%, atrous 8 in 1024, 4 heads -3%;
         * 12 and 16 rows slower, d128 even) */
        f->sched.rows = 8;
    }
    return true;
}
