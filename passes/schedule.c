/* Tiling choice: the schedule is data the codegen reads (Halide's split of algorithm and
 * schedule), sized from the target's vector width, not from one machine. Measured on AVX-512
 * (docs/codegen.md): 4 register rows for every head size (P.V runs in column groups, so the
 * accumulators fit whatever v_dim is), key blocks of 4 vectors with a packed K^T block of up
 * to 64 KiB, and 256-row query tasks (packing amortized) or 64-row chunks for windows
 * (narrow masks skip less). */
#include "passes.h"

#include <stdlib.h>

static bool expr_reads_h(const IrExpr *e) {
    if (!e) return false;
    if (e->op == IR_VAR && e->var == IR_V_H) return true;
    for (int i = 0; i < e->nargs; i++)
        if (expr_reads_h(e->args[i])) return true;
    return false;
}

/* Query heads per K/V head that a group entry computes together; 0 when there is none (MHA,
 * an uneven head map, a mask reading h, residue runs that stride rows or keys). */
static int group_heads(const IrFunc *f) {
    if (f->kv_heads < 1 || f->heads % f->kv_heads != 0 || f->heads / f->kv_heads < 2) return 0;
    /* a mask reading h would need per-head prune bounds */
    if (expr_reads_h(f->mask) || (f->prune.enabled && f->prune.runs.mod)) return 0;
    if (f->prune.enabled && (expr_reads_h(f->prune.k_lo) || expr_reads_h(f->prune.k_hi) ||
                             expr_reads_h(f->prune.may_see) || expr_reads_h(f->prune.all_see)))
        return 0;
    int G = f->heads / f->kv_heads;
    for (int j = 0; j < f->kv_heads; j++) {
        int n = 0;
        for (int h = 0; h < f->heads; h++) n += ir_head_kv(f, h) == j;
        if (n != G) return 0; /* uneven head map */
    }
    return G;
}

/* Whether a conjunct of e (through &&) satisfies pred. */
static bool conj_has(const IrExpr *e, bool (*pred)(const IrExpr *)) {
    if (e->op == IR_AND) return conj_has(e->args[0], pred) || conj_has(e->args[1], pred);
    return pred(e);
}

static bool is_var(const IrExpr *e, IrVar v) { return e->op == IR_VAR && e->var == (int)v; }

/* k <= q, k < q, q >= k, q > k */
static bool causal_cmp(const IrExpr *e) {
    if (e->nargs != 2) return false;
    bool kq = is_var(e->args[0], IR_V_K) && is_var(e->args[1], IR_V_Q);
    bool qk = is_var(e->args[0], IR_V_Q) && is_var(e->args[1], IR_V_K);
    return ((e->op == IR_LE || e->op == IR_LT) && kq) || ((e->op == IR_GE || e->op == IR_GT) && qk);
}

/* X[.., k] == X[.., q]: the same input at the key and at the query */
static bool same_segment(const IrExpr *e) {
    if (e->op != IR_EQ) return false;
    const IrExpr *x = e->args[0], *y = e->args[1];
    if (x->op != IR_INPUT || y->op != IR_INPUT || x->input != y->input) return false;
    bool xk = ir_expr_uses_var(x, IR_V_K) && !ir_expr_uses_var(x, IR_V_Q);
    bool yk = ir_expr_uses_var(y, IR_V_K) && !ir_expr_uses_var(y, IR_V_Q);
    bool xq = ir_expr_uses_var(x, IR_V_Q) && !ir_expr_uses_var(x, IR_V_K);
    bool yq = ir_expr_uses_var(y, IR_V_Q) && !ir_expr_uses_var(y, IR_V_K);
    return (xk && yq) || (xq && yk);
}

/* The tile sizes of a kernel function from the schedule, normalized. */
static void plan_tiles(const IrFunc *f, IrPlan *p) {
    p->W = f->sched.vec_width;
    p->QK = f->qk_dim;
    p->VD = f->v_dim;
    p->VC = (p->VD + p->W - 1) / p->W;
    if (p->VC < 1) p->VC = 1;
    p->VDP = p->VC * p->W;
    p->BK = f->sched.block_k > 0 ? (f->sched.block_k + p->W - 1) / p->W * p->W : p->W;
    if (p->BK > 4 * p->W) p->BK = 4 * p->W;
    /* paged decode (the group entry) in blocks of up to 128 bytes of a K element's storage (32
     * f32 keys, 64 16-bit ones): the runtime's calls visit as many keys of every K/V head in
     * turn (runtime/paged.c PG_CHUNK_KEYS, whole blocks), so that the heads' rows of a page,
     * which lie side by side, are read close together (GQA 32/8 d128 f32 P 16 kv 65536, 1
     * thread: ~-15% against 64 keys a call; 16 measured no better than 32). Since decode
     * calls the entry once for every K/V head (kvh -1), blocks of 64 f32 keys measured no
     * better (65536 keys, and 64 sequences of 512..8192, alternated five times) */
    int kvb = p->kvdt == ATTN_I8 ? 1 : p->kvdt == ATTN_F32 ? 4 : 2, cap = 128 / kvb / p->W * p->W;
    if (p->role == IR_ROLE_GROUP && f->page_size && p->BK > cap && cap >= p->W) p->BK = cap;
    p->NT = p->BK / p->W;
    p->R = f->sched.rows > 0 ? f->sched.rows : 4;
    if (p->R > 16) p->R = 16;
    int bq = f->sched.chunk_q > 0 ? f->sched.chunk_q : f->sched.block_q;
    /* a task of a residue-class mask holds block_q / r rows of each class */
    if (f->prune.enabled && f->prune.runs.with_q) bq = (int)((bq + f->prune.runs.mod - 1) / f->prune.runs.mod);
    /* keep the scratch (Q, acc) under ~256 KiB */
    while (bq > p->R && (int64_t)bq * (p->QK + p->VDP) * 4 > 256 * 1024) bq /= 2;
    p->BQ = (bq + p->R - 1) / p->R * p->R;
    /* chunks shorter than the task: a ring of packed blocks, K and V in up to 192 KiB (six
     * 64-key blocks at d = 64: a 256-wide window's chunk spans five), with Q and acc in ~256 */
    p->NRING = 1;
    int64_t ring_budget = 256 * 1024 - (int64_t)p->BQ * (p->QK + p->VDP) * 4;
    if (ring_budget > 192 * 1024) ring_budget = 192 * 1024;
    if (f->sched.chunk_q > 0 && f->sched.block_q > f->sched.chunk_q)
        while (p->NRING < 8 && (int64_t)(p->NRING + 1) * p->BK * (p->QK + p->VDP) * 4 <= ring_budget) p->NRING++;
    /* up to this many rows in a chunk, scoring straight from K beats packing KT */
    p->few_rows = p->R > 8 ? p->R : 8;
    /* decode sub-blocks: K and V rows in half of L1 (~16 KiB), a multiple of W within the
     * block (d=128: 16 keys, d=64: 32); prefetches run three ahead (measured against 1, 2, 4
     * and 6: a few % better than two) */
    /* (in f32 bytes; 16-bit and int8 K/V take as many bytes a sub-block, 2x and 4x the keys, so
     * the prefetches run as many bytes ahead) */
    int kv_bytes = p->kvdt == ATTN_I8 ? 1 : p->kvdt == ATTN_F32 ? 4 : 2;
    int sub = 4096 * (4 / kv_bytes) / (f->qk_dim + f->v_dim) / p->W;
    sub = sub < 1 ? 1 : sub > p->NT ? p->NT : sub;
    p->decode_keys = sub * p->W;
    /* P.V column groups: half the register file (32 zmm / 16 ymm or xmm) */
    for (int i = 0; i < 2; i++) {
        int cgr = (p->W >= 16 ? 16 : 8) / (i ? 1 : p->R);
        if (cgr < 1) cgr = 1;
        p->pv_groups[i] = cgr > p->VC ? p->VC : cgr;
    }
}


/* Whether the band groups can take the kernel: f32 rows read in place (qdirect), whole vectors
 * of q/k and v, the score unmodified, and the band buffers (K^T and V of `blocks` blocks of 4W
 * keys: 3 for a band, 1 for a staircase) in the ring's memory, so the band path adds no stack
 * but the chunk's scores (a band at d64: 3 slots of the ring's 6, d128 all 3; not d256, whose
 * ring is one slot). */
static bool band_fits(const IrFunc *f, const IrPlan *p, int blocks, int G) {
    int64_t cs = 4 * blocks * (int64_t)p->W, need = (int64_t)p->QK * cs;
    /* compute = bf16 on bf16 dot products, int8 on VNNI (P.V on bf16 ones): the same rows of
     * f32 q, copied per chunk into Qs as the general code does; int8 packs 4W-key blocks
     * (one block's mean key, two for a band's two blocks, and its columns' scales and sums) */
    bool i8 = p->qk_vnni && p->NT == 4;
    bool dots = (p->qk_bf16dot || i8) && p->pv_bf16dot && !f->page_size && f->dtype == ATTN_F32 && p->kvdt == ATTN_F32 &&
                p->role == IR_ROLE_TILE && !G && p->BQ >= 4 * p->W;
    if (i8) need += (blocks > 1 ? 2 : 1) * (int64_t)(p->QK + p->W) / p->W * p->W + 2 * cs;
    return (p->qdirect || dots) && !f->score && p->QK % p->W == 0 && p->VD % p->W == 0 && p->vpack != IR_VPACK_NEVER &&
           (int64_t)p->NRING * ir_plan_kt_floats(p) >= need && (int64_t)p->NRING * p->BK >= cs;
}

/* Room for what the allocas do not show: spills, calls, the pieces' frames' own overhead. */
static int64_t plan_stack(const IrPlan *p) {
    int64_t W = p->W, BB = 4 * W;
    /* the tile function's scratch (Q, the ring of K^T and V blocks, acc, m, l, the lane bits),
     * the band or staircase chunk's scores, and a row group's P in a piece */
    int64_t big = ((int64_t)p->BQ * p->QK + W) * 4 + p->NRING * ir_plan_kt_floats(p) * 4 + (int64_t)p->BQ * p->VDP * 4 +
                  (p->BQ + W) * 4 + (int64_t)(p->BQ + p->R) * W * 4 + (int64_t)p->BQ * p->NT * ((W + 7) / 8) +
                  (int64_t)p->NRING * p->BK * p->VDP * 4 + (BB * BB + 2 * BB) * 4 + (int64_t)p->R * p->BK * 4;
    /* int8: the quantized copy of Q and its rows' scales */
    if (p->compute == IR_COMPUTE_INT8 || p->qk_bf16dot) big += ((int64_t)p->BQ * p->QK + 2 * W + p->BQ) * 4;
    /* decode on dot products: a row group's q pieces (64 bytes per 32 int8 or 16 bf16 dims) */
    if (p->decode_dot != IR_DECODE_FMA) big += (int64_t)p->R * ((p->QK + 15) / 16) * 64;
    /* int8 band or staircase: its chunk's rows' q . mu of two blocks */
    if (p->qk_vnni && (p->kind == IR_T_BAND || p->kind == IR_T_STAIR)) big += 2 * BB * 4;
    /* the small ones (accumulator slots, the frame, tags) within an eighth and 16 KiB */
    return big + big / 8 + 16 * 1024 + IR_STACK_SPILLS;
}

/* The plan of the entry `role` (G: the group's heads, 0 without a group entry). */
static IrPlan plan_fn(const IrFunc *f, IrRole role, int G, const PassCtx *ctx) {
    IrPlan p = {0};
    p.role = role;
    p.group = role == IR_ROLE_GROUP ? G : 0;
    p.compute = f->compute;
    p.kvdt = ir_kv_dtype(f);
    /* the target's dot-product instructions (16 f32 lanes) */
    bool w16 = f->sched.vec_width == 16;
    p.qk_bf16dot = f->compute == IR_COMPUTE_BF16 && ctx->bf16dot && w16;
    p.qk_vnni = f->compute == IR_COMPUTE_INT8 && ctx->vnni && w16;
    p.pv_bf16dot = f->compute != IR_COMPUTE_F32 && ctx->bf16dot && w16;
    plan_tiles(f, &p);
    bool have_runs = f->prune.enabled && f->prune.runs.mod >= 2;
    /* scores read q from the tensor, with no scaled copy to make per chunk (a band's chunks
     * do little else per row; a residue class's rows, r rows apart, mostly see one key block:
     * strided 64's class domain -8%, atrous -1.5%): f32 only, and not in a kernel with a group
     * entry, whose pieces the tile function shares */
    p.qdirect = f->dtype == ATTN_F32 && ir_kv_dtype(f) == ATTN_F32 && f->compute == IR_COMPUTE_F32 && role == IR_ROLE_TILE && !G;
    /* the few-rows path (decode) on dot-product instructions: compute bf16 on vdpbf16ps (q and
     * each K row as bf16 pairs, P.V on pairs of keys); compute int8 over an int8 cache on
     * vpdpbusd straight on the cached K rows (their own per-token scales: the rows are not
     * requantized, nor smoothed), P.V in bf16. Head dims up to 1024 (the rows' q words live in
     * the frame). */
    if (w16 && f->qk_dim <= 1024 && p.qk_bf16dot) p.decode_dot = IR_DECODE_DPBF16;
    if (w16 && f->qk_dim <= 1024 && p.qk_vnni && p.kvdt == ATTN_I8) p.decode_dot = IR_DECODE_VNNI;
    /* int8 scores elsewhere need the packed block's mean key and scales: always pack */
    if (f->compute == IR_COMPUTE_INT8 && p.decode_dot != IR_DECODE_VNNI) p.few_rows = 0;
    /* the tile function of a kernel with a group entry meets few rows only in the tail of a
     * long prefill: it packs K for them too and has no few-rows piece to compile */
    if (role == IR_ROLE_TILE && G) p.few_rows = 0;
    /* P.V reads a block's V rows once per row group. Rows that map to few L1 sets evict each
     * other before the next group: a residue class's rows (r apart), and rows that put more
     * than 8 of the block's rows on one set of a 64-set L1 (for BK = 64, a multiple of 1 KiB
     * apart: [batch, seq, heads, dim] tensors with heads * dim a multiple of 256 floats).
     * Then the pack piece copies them to VS: always for residue runs, by that test at run
     * time for f32 (the one dtype P.V reads alike from both), never otherwise. Rows `bytes`
     * apart fall on 64 >> ctz(bytes / 64) sets: more than 8 a set when bytes is a multiple of
     * 64 * m, m the least power of two above 512 / BK. */
    p.vpack = have_runs ? IR_VPACK_ALWAYS : ir_kv_dtype(f) == ATTN_F32 && !f->page_size ? IR_VPACK_RUNTIME : IR_VPACK_NEVER;
    if (p.pv_bf16dot) p.vpack = IR_VPACK_ALWAYS;
    /* the group entry's decode in passes of R rows: each K and V vector loaded (and converted)
     * once for the rows, one softmax step a sub-block for all of them, P.V with R rows'
     * accumulators. Against f32 row by row (each row's pass over the sub-block from L1), GQA
     * 32/8 d128 1 thread: from L3 (kv 1024) 21.7 -> 33 GB/s; from memory it needs the K and V
     * prefetches split between the scores and P.V (cg_prefetch_part): 13.6 -> ~18 GB/s */
    p.decode_rows = role == IR_ROLE_GROUP ? p.R : 1;
    int m = 1;
    while (m * p.BK <= 512) m *= 2;
    p.vpack_sets = 64 * m;
    p.kind = IR_T_ROWS;
    if (role == IR_ROLE_TILE && !have_runs) {
        int64_t hi = 0, w = band_fits(f, &p, 3, G) ? ir_prune_band(f, &hi) : 0;
        if (f->prune.runs.mod < 2 && w >= p.W && w <= 4 * p.W && w % p.W == 0) {
            p.kind = IR_T_BAND;
            p.band_w = (int)w;
            p.band_hi = hi;
        }
    } else if (role == IR_ROLE_TILE && !f->prune.runs.with_q) {
        p.kind = IR_T_KEY_RUNS;
    } else if (role == IR_ROLE_TILE) {
        p.kind = band_fits(f, &p, 1, G) && ir_prune_tri(f, &p.tri_lo, &p.tri_hi) ? IR_T_STAIR : IR_T_CLASS_RUNS;
    }
    p.stack = plan_stack(&p);
    p.block_q = f->sched.block_q;
    /* a residue class's tile holds block_q / r rows of each class: cutting it below 2048
     * costs more than the threads gain (dilated(64), 1 head, 2 threads: 2.6x slower at 512
     * rows); and cut in two it splits each class's staircase, whose halves compute the rows
     * they do not hold as well, so cut only for a tile a thread (strided 64, 4 heads, 2
     * threads: 1.97 -> 1.44 ms) */
    bool classes = f->prune.enabled && f->prune.runs.with_q;
    p.min_block_q = classes ? (p.block_q < 2048 ? p.block_q : 2048) : (p.block_q < 64 ? p.block_q : 64);
    p.cut_below = classes ? 1 : 4;
    return p;
}

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
    /* Causal within segments (packed documents: doc[b, k] == doc[b, q] && k <= q): a row's
     * keys start where its segment does, a window the data moves. Chunks of 64 rows meet one
     * diagonal block each instead of four, so the mask is evaluated on a quarter of the rows
     * (its segment test is the general vector code), and the ring keeps the segment's blocks
     * packed (8 x 512 packed docs, 4 heads: f32 -7%, int8 -12%; not without the causal
     * conjunct: a bidirectional segment sees all its blocks, which the ring holds fewer of,
     * +5% f32, +25% int8; nor XLNet's ranks or a UniLM prefix, +4-18%). */
    if (!window && conj_has(f->mask, causal_cmp) && conj_has(f->mask, same_segment)) {
        f->sched.block_q = 1024;
        f->sched.chunk_q = 64;
    }
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
         * 12 and 16 rows slower, d128 even). Not int8 on VNNI, whose 8 rows' 4 vectors of i32
         * sums overflow the registers and whose words are a quarter as many steps: 4 rows
         * (atrous 8 in 1024, 4 heads, interleaved: -3% at the p10 of the runs, -6% median) */
        f->sched.rows = f->compute == IR_COMPUTE_INT8 && ctx->vnni && w == 16 ? 4 : 8;
    }
    int G = group_heads(f);
    f->nplans = 0;
    f->plans[f->nplans++] = plan_fn(f, IR_ROLE_TILE, G, ctx);
    if (G) f->plans[f->nplans++] = plan_fn(f, IR_ROLE_GROUP, G, ctx);
    /* the backward, for any storage type (f16/bf16 blocks, and K/V stored in another kv_dtype,
     * run it on f32 copies); MLA's is its up-projected form's (training runs it through the
     * latent tensors), never the absorbed variant's; f32 compute only. Paged blocks always have
     * the role: the runtime reads their key bounds and head map from it (tasks visit only the
     * keys they may see; decode groups the query heads sharing a K/V head) */
    if (f->grad.present && ((!f->mla.absorbed && f->compute == IR_COMPUTE_F32) || f->page_size)) {
        IrPlan g = {.role = IR_ROLE_GRAD, .kind = IR_T_GRAD_STEP};
        plan_tiles(f, &g);
        f->plans[f->nplans++] = g;
    }
    return true;
}
