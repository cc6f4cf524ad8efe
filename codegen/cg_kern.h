/* cg_kern.h — what the files of a kernel function share: the plan-driven emission state (Kern),
 * and the pieces (cg_piece.c), tensor addressing (cg_kv.c), microkernels (cg_micro.c), partial
 * blocks (cg_masked.c) and templates (cg_tmpl_*.c) that cg_kernel.c dispatches to. */
#ifndef ATTNC_CG_KERN_H
#define ATTNC_CG_KERN_H

#include "codegen/cg_internal.h"

/* Head dims up to this many vectors (4096 floats on AVX-512, 1024 on NEON). */
enum { CG_MAX_CHUNKS = 256 };


static inline int tail_lanes(int dim, int W, int c) {
    int n = dim - c * W;
    return n < W ? n : W;
}

/* Floats of the scaled Q rows of a chunk (Qs); compute = int8 keeps their quantized copy
 * this far after them, and the rows' scales after that. */
static inline int64_t cg_qi_off(const IrPlan *p) { return (int64_t)p->BQ * p->QK + p->W; }

/* Floats of a row group's softmax weights P ([R][BK]); bf16 dot products keep them also as
 * words of two keys' bf16 after them ([R][BK / 2]). */
static inline int64_t cg_p_floats(const IrPlan *p) { return (int64_t)p->R * p->BK * (p->pv_bf16dot ? 3 : 2) / 2; }

/* Where the K^T block's int8 extras live (ir_plan_kt_floats): the mean key, the keys' scales. */
static inline int64_t cg_kt_mu_off(const IrPlan *p) { return (int64_t)(p->QK > 0 ? p->QK : 1) * p->BK; }
static inline int64_t cg_kt_sk_off(const IrPlan *p) { return cg_kt_mu_off(p) + (int64_t)(p->QK + p->W) / p->W * p->W; }
/* VNNI: the keys' sums of their int8 values (i32), after the scales */
static inline int64_t cg_kt_cs_off(const IrPlan *p) { return cg_kt_sk_off(p) + p->BK; }

static inline LLVMValueRef field(Cg *c, LLVMValueRef a, size_t off, LLVMTypeRef ty) {
    return cg_load(c, ty, cg_gep(c, c->i8, a, cg_i64(c, (int64_t)off)), 8);
}

static inline LLVMValueRef mul(Cg *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildMul(c->b, x, y, ""); }

static inline LLVMValueRef add(Cg *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildAdd(c->b, x, y, ""); }

enum { FRAME_SLOTS = 64 }; /* values a piece's frame can hold (kern_slots) */
enum { CG_PG_MAX = 8 };     /* pages of a decode sub-block (64 keys, pages of 8) */

/* State of the function being built, shared by its pieces. */
typedef struct Kern {
    Cg *c;
    const IrFunc *f;
    IrPlan p;
    CgEnv env;
    attn_dtype dt;                             /* storage of q (and o, but see odt) */
    attn_dtype odt;                            /* storage of o: dt, f32 for paged kernels (the runtime
                                                * converts their f32 partial rows) */
    attn_dtype kvdt;                           /* storage of k and v (the plan's) */
    LLVMValueRef ksc, vsc;                     /* int8 K/V: k_scale and v_scale at (b, kv head), by key position */
    LLVMValueRef qbase, kbase, vbase, obase;   /* tensor pointers at (b, head) */
    LLVMValueRef qs2, ks2, vs2, os2;           /* row strides */
    LLVMValueRef Qs, KT, ACC, M, L, MB;        /* scratch */
    LLVMValueRef RF;                           /* i8 per chunk row: it sees the whole block */
    LLVMValueRef anyfull;                      /* i8 slot: some row of the block does (the parent's) */
    LLVMTypeRef mbt;                           /* iW: one bit per key lane */
    LLVMValueRef qlo, last, npad, kb, kv_len;  /* chunk's first position, rows-1, rows padded to R; block start, key end */
    /* A run maps its row and key indices to positions: q = qpos0 + row*qstep, k = kpos0 +
     * cg_krow(key)*kstep, where cg_krow(j) = j, or cmod*(j / cw) + j % cw over compacted keys; the
     * K/V row of key j is cg_krow(j) from the run's kbase/vbase with its ks2/vs2. */
    LLVMValueRef qpos0, kpos0, nkeys;          /* i64; nkeys: key indices of the run */
    LLVMValueRef lsebase, ls2, lsep;           /* lse at row 0 of the run, its row stride; a->lse */
    int64_t qstep, kstep;                      /* a residue class's modulus, or 1 */
    int64_t cmod, cw;                          /* compacted keys: period and residues (cw 1: none) */
    const IrExpr *mask;                        /* the mask on the run's keys */
    LLVMValueRef part_rt;                      /* i1 or NULL: "masked" code also serves full blocks */
    LLVMValueRef vfin_slot;                    /* i1 slot or NULL: the block's V rows are all finite */
    LLVMValueRef qc;                           /* the chunk's first row (of the task) */
    LLVMValueRef kbeg, kendp;                  /* a->k_begin, a->k_end: the key positions to visit */
    LLVMValueRef pages, kps, vps;              /* paged K/V: a->pages (i32 *), the page strides; NULL otherwise */
    /* Paged decode on whole pages (cg_page_hoist): pgn > 0 while a sub-block's pages were
     * looked up once; key indices are then relative to its first key (kpos0), and key j's row
     * is pg[w][j / P] + (j mod P) * stride (pgn 1: pg[w][0] + j * stride, from key0's row).
     * w: K, V, the int8 scales, and K and V of the sub-block prefetched ahead. */
    int pgn;
    LLVMValueRef pg[5][CG_PG_MAX];
    LLVMValueRef pgtab;                        /* pgn > 2: [5][CG_PG_MAX] i64, pg's values */
    LLVMValueRef resume;                       /* a->resume (i64) */
    /* The group entry: task row r is query q0 + r % nq of head gtab[r / nq]; the tensor bases
     * are at head 0 and a row's address adds head * (head stride). */
    bool grouped;
    int gsize;                                 /* rows sharing a key's prefetches (group heads, or 1) */
    LLVMValueRef gtab, gq0, gnq;               /* i32 *heads of the group; q0; nq (i64) */
    LLVMValueRef qs1, os1, ls1;                /* head strides of q, o, lse */
    /* Paged decode over every K/V head at once (the group entry called with kvh -1): kvall
     * (i64 0/1) says so; task row r then reads K/V head r / (G * nq), its rows ks1 / vs1
     * elements from the bases (at head 0) a head; a block the few-rows path cannot take stops
     * the key loop (stop: i64 slot, the first key not visited, or -1) */
    LLVMValueRef kvall, ks1, vs1, stop;
    LLVMValueRef part;                         /* i1: the key block is partial (or the kv tail) */
    int wmax;                                  /* windows of at most this many key vectors (0: NT) */
    LLVMValueRef dqx, dqsum[16];               /* DPBF16/VNNI decode: the group's q pieces (cg_dot_q) */
    bool vs_use;                               /* P.V may read VS (in the pieces after the pack piece) */
    LLVMValueRef VS;                           /* [BK][VDP] f32: the block's V rows (vpack) */
    /* NRING > 1: KT, VS and vfin_slot point at the block's slot of these rings, tagged with
     * the first key of the block they hold */
    LLVMValueRef KTring, VSring, vfin_ring, tag_kb;
    int bcs;                                   /* band buffers: floats from a K^T row to the next */
    LLVMValueRef knext, vnext;                 /* residue runs: the next class's K/V bases */
    LLVMValueRef vpack_on;                     /* i1: it does (a constant, or from V's row stride) */
    LLVMValueRef frame;                        /* the live values handed to a piece (ptr) */
    LLVMValueRef framed[FRAME_SLOTS];          /* what cg_frame_fill stored there */
    StrBuf *err;
    bool failed;                               /* a piece could not be emitted (err says why) */
    int64_t piece_stack;                       /* the most stack a piece's allocas take */
} Kern;

/* What the P.V passes of a row group share. */
typedef struct PvCtx {
    LLVMValueRef *row;      /* [R] scratch row indices */
    LLVMValueRef P;         /* p as floats, [R][BK] */
    LLVMValueRef *as;       /* [R] alpha, splatted */
    bool masked;            /* select on the lane masks */
    LLVMValueRef vlast;     /* last key row that may be read */
    LLVMValueRef t0, t1;    /* the key vectors to visit, [t0, t1): NULL for all NT */
    bool clamp;             /* keys may pass the end (unmasked code in a partial block) */
    bool rare;              /* the fallback for inf/NaN in V: one key per step, less code */
    LLVMValueRef pf_ahead;  /* decode: prefetch the V columns of the key this far ahead (NULL: none) */
    bool vfolded;           /* int8 V: P holds the weights times the keys' V scales already */
} PvCtx;

/* Bound on the key vectors of a block the generator handles at once (block_k <= 4W). */
enum { CG_MAXT = 8 };

// cg_micro.c (precision)

/* An operand of Q.K^T or P.V as the plan's compute multiplies it: rounded to bf16 (compute
 * bf16 and int8's P.V), unchanged for f32. */
LLVMValueRef cg_operand(Kern *k, LLVMValueRef v);
/* compute = int8 without VNNI: the packed K^T block's keys [0, kn) smoothed (the block's mean
 * key subtracted, kept beside it) and quantized per key (scales kept beside it). */
void cg_quantize_kt(Kern *k, LLVMValueRef kn);
/* compute = int8 on VNNI (16 lanes): keys [key0, key0 + kn) of K (past kmax, if given, kmax
 * again) smoothed and quantized straight from K's rows, as cg_quantize_kt does a packed f32
 * block: words of four int8 dims at kt[dq][j] (rows `stride` apart; again `dup` columns on,
 * if given), the mean key, the keys' scales and sums. */
void cg_pack_kt_vnni(Kern *k, LLVMValueRef key0, LLVMValueRef kmax, LLVMValueRef kn, LLVMValueRef kt, int64_t stride,
                     LLVMValueRef dup, LLVMValueRef mu, LLVMValueRef sk, LLVMValueRef cs);
/* One dot-product step: bf16 pairs (vdpbf16ps, f32 lanes) or, with `vnni`, u8 q x s8 k quads
 * (vpdpbusd, i32 lanes). */
LLVMValueRef cg_dp_step(Cg *c, bool vnni, LLVMValueRef acc, LLVMValueRef qw, LLVMValueRef kw);
/* compute = bf16 on bf16 dot products (plan qk_bf16dot): transposed K rows (d0 + l over the
 * keys) as words of bf16 pairs into KT from column col. */
void cg_pair_kt(Kern *k, LLVMValueRef *rows, int n, LLVMValueRef d0, LLVMValueRef col);
/* compute = int8: row i of the chunk's Q, from its scaled f32 chunks v, quantized after Qs's
 * rows (cg_qi_off) with its scale. */
void cg_quantize_q(Kern *k, LLVMValueRef i, const LLVMValueRef *v);

// cg_piece.c

/* Stores k's live values into the frame for the pieces called after it (whose calls it must
 * dominate): those of the chunk before its key loop, those of the block in each block. */
void cg_frame_fill(Kern *k, bool per_block);
/* Emits body(k, arg) as the piece `what`, called here. */
void cg_emit_piece(Kern *k, const char *what, bool hot, void (*body)(Kern *, bool), bool arg);

// cg_kv.c

/* Task row of chunk row i (clamped to the last real row). */
LLVMValueRef cg_task_row(Kern *k, LLVMValueRef i);
/* The query head of task row r (grouped), or NULL (the function's head). */
LLVMValueRef cg_row_head(Kern *k, LLVMValueRef r);
/* Element offset of task row r in a tensor with head stride s1 and row stride s2. */
LLVMValueRef cg_row_off(Kern *k, LLVMValueRef r, LLVMValueRef s1, LLVMValueRef s2);
/* The q of chunk row i, as f32: the tensor's row (qdirect; scores are scaled after the dot
 * products) or the scaled copy in Qs. */
LLVMValueRef cg_q_row(Kern *k, LLVMValueRef i);
/* The K/V row (from the run's bases) of key index j >= 0: a scalar or a vector. */
LLVMValueRef cg_krow(Kern *k, LLVMValueRef j);
LLVMValueRef cg_kvec(Kern *k, LLVMValueRef first);
/* The first position of cg_kvec(k, first) when its lanes are consecutive positions, else NULL. */
LLVMValueRef cg_kvec_base(Kern *k, LLVMValueRef first);
LLVMValueRef cg_kpos(Kern *k, LLVMValueRef key);
/* floor(x / m) for a constant m > 0 */
LLVMValueRef cg_floor_div(Cg *c, LLVMValueRef x, int64_t m);
/* The key indices of the run whose positions are below x: ceil((x - kpos0) / kstep), or for
 * compacted keys floor(d / cmod) * cw + clamp(d mod cmod, 0, cw) with d = x - kpos0; >= 0. */
LLVMValueRef cg_keys_below(Kern *k, LLVMValueRef x);
/* Position of chunk row i (clamped to the last real row). */
LLVMValueRef cg_qpos_row(Kern *k, LLVMValueRef i);
/* Points the expressions' q (and h, for the group entry) at chunk row i. */
void cg_env_row(Kern *k, LLVMValueRef i);
/* Read prefetches (to L1) of `lines` cache lines of elements from `at`. */
void cg_prefetch_lines(Kern *k, LLVMValueRef at, int lines);
/* Cache lines of a row of n elements. */
int cg_row_lines(const Kern *k, int n);
void cg_prefetch_key(Kern *k, LLVMValueRef row, LLVMValueRef key);
/* How many keys ahead decode prefetches K and V (an i64). */
LLVMValueRef cg_decode_ahead(Kern *k);
/* Decode's stream ahead: prefetches to L2 of key `key`'s K (v false) or V row elements
 * [first, first + n). */
void cg_prefetch_part(Kern *k, bool v, LLVMValueRef key, LLVMValueRef first, int n);
/* The K and V rows of keys [first, first + n) (whole rows: row 0 of a group) from bases kb, vb. */
void cg_prefetch_keys(Kern *k, LLVMValueRef kb, LLVMValueRef vb, LLVMValueRef first, int n);

/* int8 K/V: K (v false) or V's scale of key index j (f32 scalar); NULL for other storage. */
LLVMValueRef cg_kv_scale(Kern *k, bool v, LLVMValueRef j);
/* x (a vector of key index j's K or V row) times its scale: int8 K/V only. */
LLVMValueRef cg_kv_scaled(Kern *k, bool v, LLVMValueRef j, LLVMValueRef x);
/* int8 K/V with contiguous key positions: the K (v false) or V scales of the W
 * keys from index `first` as a vector (they must exist); NULL otherwise. */
LLVMValueRef cg_kv_scale_vec(Kern *k, bool v, LLVMValueRef first);
/* The W keys' scales from `first` in any layout (klast: clamp the keys to it; NULL: none). */
LLVMValueRef cg_kv_scales(Kern *k, bool v, LLVMValueRef first, LLVMValueRef klast);

void cg_kv_args(Kern *k, LLVMValueRef a, LLVMValueRef bi, LLVMValueRef h, LLVMValueRef kvh, LLVMValueRef *q_len,
                LLVMValueRef *kv_len, LLVMValueRef *q_off, LLVMValueRef *lsep, LLVMValueRef *lsebase);
/* Paged decode: whether the n keys from position key0 lie on whole pages the fast path can
 * take (pgn 1: one page holds them all; else they start a page); cg_page_hoist looks up
 * their pages (and those of the keys cg_decode_ahead later, clamped to the sequence) once,
 * for cg_k_off, cg_v_off, cg_kv_scale and cg_prefetch_part on indices relative to key0. */
int cg_page_count(const Kern *k, int n);
/* Paged grouped decode reads its sub-blocks so (the blocks where they fit; else packed). */
bool cg_pages_whole(const Kern *k);
LLVMValueRef cg_page_fits(Kern *k, LLVMValueRef key0, int n);
void cg_page_hoist(Kern *k, LLVMValueRef key0, int n, LLVMValueRef klast);
/* Element offset of key index j's K row, and V row, from the run's bases. */
LLVMValueRef cg_k_off(Kern *k, LLVMValueRef j);
LLVMValueRef cg_v_off(Kern *k, LLVMValueRef j);
/* Where P.V reads the block's V rows from VS (row `key` at *vsb + key * *vss); true when that
 * is chosen at run time between VS and the tensor. */
bool cg_vs_rows(Kern *k, LLVMValueRef *vsb, LLVMValueRef *vss);
/* Rebase k for key runs / for one residue class's run (`at`: the function's bases). */
void cg_kv_key_runs(Kern *k, const IrRuns *runs);
void cg_kv_class(Kern *k, const Kern *at, LLVMValueRef first, LLVMValueRef rho, LLVMValueRef rr);

// cg_micro.c

/* acc = acc*alpha + P V over every V chunk: passes over column groups of CG chunks (a
 * runtime loop when there are several whole groups, the rest unrolled). */
void cg_emit_pv(Kern *k, const IrPlan *p, PvCtx *pc);
/* The softmax numerators of rows g .. g+nr-1 in place: P[r][t*W ..] = exp(s - m_r) for the
 * vectors [t0, t1); the row's sums L[g + r] (a vector of partial sums per row, added up
 * once the chunk is done) become L*alpha + their sum. mu[r]: the row's max (0 when it saw
 * nothing); as[r]: its alpha, splatted. Runtime loops over rows and vectors: one exp in the
 * code. */
void cg_emit_exp_rows(Kern *k, const IrPlan *p, LLVMValueRef g, LLVMValueRef P, const LLVMValueRef *mu,
                          const LLVMValueRef *as, LLVMValueRef t0, LLVMValueRef t1);
/* Scores of rows qrow[0 .. R) against nv key vectors of the packed KT from column col:
 * s[r][t] = sum_d q[r][d] * KT[d][col + t*W], d in a runtime loop of DU-wide unrolled steps,
 * the rest unrolled; the R x nv accumulators are the FMA chains. With one vector (nv == 1)
 * the even and odd d steps of each row take separate chains, summed at the end, so the R
 * rows still fill both FMA pipes (R chains alone wait on the FMA latency). */
void cg_block_scores(Kern *k, const IrPlan *p, LLVMValueRef *qrow, LLVMValueRef col, int nv,
                         LLVMValueRef (*s)[CG_MAXT]);
/* The score modifier on row `row`'s scores s against the W keys of key vector t (mv: the
 * lanes that count). */
LLVMValueRef cg_score_mod(Kern *k, LLVMValueRef row, LLVMValueRef t, LLVMValueRef s, LLVMValueRef mv);
/* softmax_step for rows g .. g+nr-1 (the row groups) at once: their m side by side in one
 * vector, one vector exp for the nr alphas instead of nr scalar ones. as[r] = alpha
 * splatted; mu[r] as softmax_step's. */
void cg_softmax_rows(Kern *k, LLVMValueRef g, int nr, LLVMValueRef *bm, LLVMValueRef *mu, LLVMValueRef *as);
/* Scores of one row against W keys from K directly (no packing): a dot product per key over
 * the d chunks, then a reduction turns the W partial vectors into one score vector. `clamp`:
 * keys may pass the end (a tail block). */
void cg_dot_scores(Kern *k, int nr, LLVMValueRef *row, LLVMValueRef first, bool clamp, LLVMValueRef *out);
/* DPBF16/VNNI decode: the q pieces of rows row[0 .. nr) for cg_dot_scores (k->dqx, k->dqsum),
 * made once for a window of key vectors; cg_dot_scores makes its own while k->dqx is NULL. */
void cg_dot_q(Kern *k, int nr, LLVMValueRef *row);
/* One group of R rows against the packed KT of a full key block, unrolled over the block's
 * vectors (every FMA chain in registers). */
void cg_emit_group(Kern *k, LLVMValueRef g);
/* Horizontal sums (or cg_fmax maxima) of n vectors at once, n a power of two up to W: pairs
 * of vectors merge into one holding each one's halves added (log2 n levels, 3 instructions a
 * pair), then the n parts of W/n lanes reduce in place; part r (lanes r W/n ..) holds vector
 * r's total in every lane. n = 4 on 16 lanes: 13 instructions where n tree reductions took 32. */
LLVMValueRef cg_reduce_parts(Cg *c, LLVMValueRef *vs, int n, bool max);
/* In-register transpose of W rows of W floats: log2(W) rounds of interleaving row i with
 * row i + W/2 (a perfect shuffle); after them rows[l] holds the old column l. */
void cg_transpose(Cg *c, LLVMValueRef *rows);
/* A row's lse from its max m and sum l: m + log(l), -inf for a row that saw nothing (l = 0;
 * otherwise l >= 1, the max term's own 1), NaN when l is (cg_seen). */
LLVMValueRef cg_row_lse(Cg *c, LLVMValueRef m, LLVMValueRef l);

// cg_masked.c

/* A group of nr rows against the key block in runtime loops over its key vectors (compact
 * code): scores to scratch with a running max, then exp, then P.V. `masked` (a partial
 * block): visit only the vectors some row of the group may see, [t0, t1) from the lane
 * masks (a band or a block diagonal crosses a block as a staircase, so the rows of one group
 * skip the vectors wholly above or below theirs; a group that sees nothing is skipped, its
 * state as it is). `dot`: scores straight from K, a vector at a time (few rows, decode);
 * else from the packed KT in pairs of vectors (2 nr independent FMA chains), the odd one of
 * an odd window alone (two chains per row). */
void cg_emit_group_loop(Kern *k, LLVMValueRef g, int nr, bool masked, bool dot, LLVMValueRef vt0, LLVMValueRef vt1);
/* Do the R rows from g all see the whole block? */
LLVMValueRef cg_group_full(Kern *k, LLVMValueRef g);
/* MB[i][t] for every row of the chunk: the mask (if `eval`) and k < kv_len, as lane bits;
 * ORs them into *any_slot; RF[i]: row i sees the whole block. */
void cg_emit_rowmasks(Kern *k, bool eval, LLVMValueRef any_slot);

// cg_tmpl_rows.c

/* i1: the kernel resumes from the (o, lse) in the output (a->resume, with an lse to read). */
LLVMValueRef cg_resuming(Kern *k);
/* Where P's bf16 words of row r start at word `word` (two keys' weights a word), after its R
 * rows of f32 weights (the paired P.V's operands). */
LLVMValueRef cg_pw_at(Cg *c, const IrPlan *p, LLVMValueRef P, LLVMValueRef r, LLVMValueRef word);
/* compute = bf16 on 16-lane bf16 dot products: rows[r] (key j0 + r's dims d0 .. d0 + 16, f32)
 * rounded and stored as words of dim pairs, KT[(d0 / 2 + i) * stride + j0 + r]. */
void cg_pair_kt16(Kern *k, LLVMValueRef *rows, LLVMValueRef d0, LLVMValueRef KT, LLVMValueRef stride, LLVMValueRef j0);
/* Row i of the chunk's Q from element qoff of q: quantized or paired as the plan's compute
 * multiplies it, and its scaled f32 chunks into Qs (f32) and/or v (if not NULL); the row at
 * element `ahead` prefetched (NULL: none). */
void cg_copy_q(Kern *k, LLVMValueRef i, LLVMValueRef qoff, LLVMValueRef ahead, bool f32, LLVMValueRef *v);
/* Rows [r0, r1) of the current run: chunks of BQ rows, each over the run's keys. */
void cg_emit_run(Kern *k, LLVMValueRef q0, LLVMValueRef q1);

// cg_tmpl_band.c

/* Rows [q0, q1) of a band kernel: the chunks whose keys all lie in range through the band
 * groups, the rows before and after them through emit_run. */
void cg_emit_band_task(Kern *k, LLVMValueRef q0, LLVMValueRef q1, LLVMValueRef q_off, int bw, int64_t bhi);
/* ---- Staircases in residue classes ----
 * A residue class's run of strided or atrous masks sees, in class keys, a staircase from a
 * fixed key: row i sees keys [jlo, i + E]. The general code covers it with row groups of
 * adjacent rows over a triangle of partial blocks, each evaluating the mask and rescaling an
 * online softmax. When the run's longest window fits in 4W keys (strided 64's classes at
 * 4096: 64 rows seeing 0 .. 63 keys), the band groups' machinery does it in one pass: the
 * window keys packed once, and rows grouped by their key count mod W, so that a group's rows
 * see 1, 2, 3 and 4 vectors whose last one is masked alike, a lane mask known per group. The
 * softmax takes each row's whole window at once and P.V skips the masked lanes. */
void cg_emit_tri_run(Kern *k, LLVMValueRef nv, int64_t tlo, int64_t thi);

// cg_tmpl_runs.c

/* Rows [q0, q1) over the key runs of f's prune.runs (k % r in [base, base + w)). */
void cg_emit_key_runs(Kern *k, LLVMValueRef q0, LLVMValueRef q1);
/* Rows [q0, q1) class by class (k = q (mod r)): general runs, or staircases (plan STAIR). */
void cg_emit_class_runs(Kern *k, LLVMValueRef q0, LLVMValueRef q1, LLVMValueRef q_off);

// cg_tmpl_grad.c

/* The grad role's functions <symbol>_grad_bounds, <symbol>_grad_step and <symbol>_grad_keys. */
bool cg_emit_grad(Cg *c, const IrFunc *f, const IrPlan *plan, const char *symbol, StrBuf *err);

#endif
