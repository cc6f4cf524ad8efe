/* cg_kernel.c — the flash-attention tile function of one IrFunc.
 *
 * For a task's query rows, chunks of BQ rows keep their online-softmax state (m, l, acc) in
 * stack scratch. Keys are visited in blocks of BK (a multiple of the vector width W), within
 * the bounds of the prune pass's k_lo/k_hi; its may_see/all_see tests classify each block
 * (empty: skipped; full: no mask test; partial or the kv tail: per-row lane masks). Then K is
 * packed transposed, KT[d][BK], once and reused by every register-blocked group of R rows:
 *   s[r] = sum_d bcast(q[r][d]) * KT[d]          (FMA chains, W keys per vector)
 *   score mod, mask -> -inf, online softmax update, acc[r] = acc[r]*alpha + sum_j p[r][j]*V[j]
 * A chunk of few rows (decode) scores straight from K instead. Residue runs (the prune
 * pass's IrRuns): a congruence k = q (mod r) runs each residue class over strided rows and
 * keys; a key-only residue set k % r in [base, base + w) runs over the compacted keys. Everything the spec fixes is a constant; the inner
 * loops are unrolled here in steps so the accumulators are SSA vectors.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "codegen/cg_internal.h"

/* Head dims up to this many vectors (4096 floats on AVX-512, 1024 on NEON). */
enum { CG_MAX_CHUNKS = 256 };

/* Tile sizes as used by the generator (the schedule, normalized). */
typedef struct Plan {
    int W, BK, NT, R, BQ; /* lanes, keys per block, vectors per block, rows per group, rows per chunk */
    int NRING;            /* packed key blocks kept (a ring, for the task's next chunks), or 1 */
    int QK, VD, VC, VDP;  /* dims; V chunks of W; padded V row */
} Plan;

/* Floats of one packed K^T block (a ring slot). */
static int64_t kt_floats(const Plan *p) { return (int64_t)(p->QK > 0 ? p->QK : 1) * p->BK; }

static int tail_lanes(int dim, int W, int c) {
    int n = dim - c * W;
    return n < W ? n : W;
}

static LLVMValueRef field(Cg *c, LLVMValueRef a, size_t off, LLVMTypeRef ty) {
    return cg_load(c, ty, cg_gep(c, c->i8, a, cg_i64(c, (int64_t)off)), 8);
}

static LLVMValueRef mul(Cg *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildMul(c->b, x, y, ""); }
static LLVMValueRef add(Cg *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildAdd(c->b, x, y, ""); }

enum { FRAME_SLOTS = 64 }; /* values a piece's frame can hold (kern_slots) */

/* State of the function being built, shared by its pieces. */
typedef struct Kern {
    Cg *c;
    const IrFunc *f;
    Plan p;
    CgEnv env;
    attn_dtype dt;
    LLVMValueRef qbase, kbase, vbase, obase;   /* tensor pointers at (b, head) */
    LLVMValueRef qs2, ks2, vs2, os2;           /* row strides */
    LLVMValueRef Qs, KT, ACC, M, L, MB;        /* scratch */
    LLVMValueRef RF;                           /* i8 per chunk row: it sees the whole block */
    LLVMValueRef anyfull;                      /* i8 slot: some row of the block does (the parent's) */
    LLVMTypeRef mbt;                           /* iW: one bit per key lane */
    LLVMValueRef qlo, last, npad, kb, kv_len;  /* chunk's first position, rows-1, rows padded to R; block start, key end */
    /* A run maps its row and key indices to positions: q = qpos0 + row*qstep, k = kpos0 +
     * krow(key)*kstep, where krow(j) = j, or cmod*(j / cw) + j % cw over compacted keys; the
     * K/V row of key j is krow(j) from the run's kbase/vbase with its ks2/vs2. */
    LLVMValueRef qpos0, kpos0, nkeys;          /* i64; nkeys: key indices of the run */
    LLVMValueRef lsebase, ls2, lsep;           /* lse at row 0 of the run, its row stride; a->lse */
    int64_t qstep, kstep;                      /* a residue class's modulus, or 1 */
    int64_t cmod, cw;                          /* compacted keys: period and residues (cw 1: none) */
    const IrExpr *mask;                        /* the mask on the run's keys */
    LLVMValueRef part_rt;                      /* i1 or NULL: "masked" code also serves full blocks */
    LLVMValueRef vfin_slot;                    /* i1 slot or NULL: the block's V rows are all finite */
    LLVMValueRef qc;                           /* the chunk's first row (of the task) */
    LLVMValueRef kbeg, kendp;                  /* a->k_begin, a->k_end: the key positions to visit */
    LLVMValueRef resume;                       /* a->resume (i64) */
    /* The group entry: task row r is query q0 + r % nq of head gtab[r / nq]; the tensor bases
     * are at head 0 and a row's address adds head * (head stride). */
    bool grouped;
    int gsize;                                 /* rows sharing a key's prefetches (group heads, or 1) */
    LLVMValueRef gtab, gq0, gnq;               /* i32 *heads of the group; q0; nq (i64) */
    LLVMValueRef qs1, os1, ls1;                /* head strides of q, o, lse */
    LLVMValueRef part;                         /* i1: the key block is partial (or the kv tail) */
    int wmax;                                  /* windows of at most this many key vectors (0: NT) */
    bool qdirect;                              /* scores read q from the tensor (f32, unit-stride rows), not Qs */
    bool vpack;                                /* the pack piece may copy the block's V rows to VS */
    bool vs_use;                               /* P.V may read VS (in the pieces after the pack piece) */
    LLVMValueRef VS;                           /* [BK][VDP] f32: the block's V rows (vpack) */
    /* NRING > 1: KT, VS and vfin_slot point at the block's slot of these rings, tagged with
     * the first key of the block they hold */
    LLVMValueRef KTring, VSring, vfin_ring, tag_kb;
    int bcs;                                   /* band buffers: floats from a K^T row to the next */
    LLVMValueRef knext, vnext;                 /* residue runs: the next class's K/V bases */
    LLVMValueRef vpack_on;                     /* i1: it does (a constant, or from V's row stride) */
    LLVMValueRef frame;                        /* the live values handed to a piece (ptr) */
    LLVMValueRef framed[FRAME_SLOTS];          /* what frame_fill stored there */
    StrBuf *err;
    bool failed;                               /* a piece could not be emitted (err says why) */
    int64_t piece_stack;                       /* the most stack a piece's allocas take */
} Kern;

/* --- pieces: a kernel's key-block bodies as functions of their own --------------------------
 * The bodies of a key block (few rows; K packing; partial and full row groups) are emitted as functions
 * called once per block with a frame of the caller's live values (Kern's and the env's), which
 * the piece loads back on entry. In split mode each piece lands in a module of its own, so the
 * backend compiles a kernel's pieces on several cores, and the tile and group entries share the
 * identical ones (cg_fn_close folds them). A call per block costs nothing against the block. */

/* The addresses of every run-time value of k, at the same index in parent and piece. */
static int kern_slots(Kern *k, LLVMValueRef **s) {
    LLVMValueRef *all[] = {&k->qbase, &k->kbase, &k->vbase, &k->obase, &k->qs2, &k->ks2, &k->vs2,
        &k->os2, &k->Qs, &k->KT, &k->VS, &k->vpack_on, &k->ACC, &k->M, &k->L, &k->MB, &k->RF, &k->qlo, &k->last, &k->npad,
        &k->kb, &k->kv_len, &k->qpos0, &k->kpos0, &k->nkeys, &k->lsebase, &k->ls2, &k->lsep,
        &k->part_rt, &k->vfin_slot, &k->qc, &k->kbeg, &k->kendp, &k->resume, &k->gtab, &k->gq0,
        &k->gnq, &k->qs1, &k->os1, &k->ls1, &k->part, &k->env.args, &k->env.b, &k->env.q_len,
        &k->env.kv_len, &k->env.qmin, &k->env.qmax, &k->env.kmin, &k->env.kmax,
        &k->env.err_slot, &k->env.dummy,
        /* the row's q (and h, grouped) is set by env_row before any use, in the piece too;
         * what the caller's last row left there need not dominate the call */
        k->grouped ? NULL : &k->env.h};
    _Static_assert(sizeof all / sizeof all[0] <= FRAME_SLOTS, "the frame holds every slot");
    int n = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < n; i++) s[i] = all[i];
    return n;
}

typedef struct Piece {
    Kern saved; /* the caller's state, restored by piece_end */
    Cg cg;      /* the piece's function */
    LLVMValueRef fn, call;
    LLVMValueRef load[FRAME_SLOTS]; /* the frame's loads, erased if unused (pieces that differ
                                     * only in what they do not read fold) */
    int nload;
} Piece;

/* Stores k's live values into the frame for the pieces called after it (whose calls it must
 * dominate): those of the chunk before its key loop, those of the block in each block. */
static void frame_fill(Kern *k, bool per_block) {
    Cg *c = k->c;
    LLVMValueRef *slot[FRAME_SLOTS];
    int n = kern_slots(k, slot);
    if (!k->frame) k->frame = cg_alloca(c, c->i64, FRAME_SLOTS, 8, "frame");
    for (int i = 0; i < n; i++) {
        /* what changes from key block to key block, stored per block; the rest per chunk */
        bool blockwise = slot[i] == &k->kb || slot[i] == &k->part || slot[i] == &k->env.kmin || slot[i] == &k->env.kmax ||
                         slot[i] == &k->KT || slot[i] == &k->VS || slot[i] == &k->vfin_slot;
        if (blockwise != per_block) continue;
        LLVMValueRef v = slot[i] ? *slot[i] : NULL;
        LLVMTypeKind kind = v ? LLVMGetTypeKind(LLVMTypeOf(v)) : LLVMVoidTypeKind;
        k->framed[i] = v;
        if (kind == LLVMIntegerTypeKind || kind == LLVMPointerTypeKind)
            cg_store(c, v, cg_gep(c, c->i64, k->frame, cg_i64(c, i)), 8);
    }
}

/* Calls the piece `what` here (its frame filled by frame_fill) and points k (k->c included)
 * at its body. */
static bool piece_begin(Kern *k, Piece *pc, const char *what) {
    Cg *c = k->c;
    LLVMValueRef *slot[FRAME_SLOTS];
    int n = kern_slots(k, slot);
    for (int i = 0; i < n; i++) {
        if (k->frame && (slot[i] ? *slot[i] : NULL) == k->framed[i]) continue;
        sb_puts(k->err, "codegen: internal error: a piece's frame is out of date");
        return false;
    }
    size_t len;
    const char *parent = LLVMGetValueName2(c->fn, &len);
    char name[640];
    snprintf(name, sizeof name, "%.*s.%s", (int)len, parent, what);
    cg_fn_open(c, &pc->cg);
    Cg *pg = &pc->cg;
    LLVMTypeRef pty = pg->ptr, cty = c->ptr;
    LLVMTypeRef fty = LLVMFunctionType(pg->voidt, &pty, 1, 0);
    pc->fn = LLVMAddFunction(pg->mod, name, fty);
    LLVMSetLinkage(pc->fn, c->parts ? LLVMExternalLinkage : LLVMInternalLinkage);
    LLVMAddAttributeAtIndex(pc->fn, 1, LLVMCreateEnumAttribute(pg->ctx, LLVMGetEnumAttributeKindForName("noalias", 7), 0));
    LLVMTypeRef pfty = LLVMFunctionType(c->voidt, &cty, 1, 0);
    LLVMValueRef callee = c->parts ? LLVMAddFunction(c->mod, name, pfty) : pc->fn;
    pc->call = LLVMBuildCall2(c->b, pfty, callee, &k->frame, 1, "");
    pg->fn = pc->fn;
    pg->entry = LLVMAppendBasicBlockInContext(pg->ctx, pc->fn, "entry");
    LLVMPositionBuilderAtEnd(pg->b, pg->entry);
    pc->saved = *k;
    LLVMValueRef fr = LLVMGetParam(pc->fn, 0);
    for (int i = 0; i < n; i++) {
        LLVMValueRef v = slot[i] ? *slot[i] : NULL;
        pc->load[i] = NULL;
        if (!v) continue;
        LLVMTypeRef t = LLVMTypeOf(v);
        LLVMTypeKind kind = t ? LLVMGetTypeKind(t) : LLVMVoidTypeKind;
        LLVMTypeRef nt = kind == LLVMIntegerTypeKind ? LLVMIntTypeInContext(pg->ctx, LLVMGetIntTypeWidth(t))
                       : kind == LLVMPointerTypeKind ? pg->ptr : NULL;
        if (!nt) *slot[i] = NULL; /* vectors live only inside an expression */
        else if (LLVMIsAConstantInt(v)) *slot[i] = LLVMConstInt(nt, LLVMConstIntGetZExtValue(v), 0);
        else if (LLVMIsAConstantPointerNull(v)) *slot[i] = LLVMConstNull(nt);
        else *slot[i] = pc->load[i] = cg_load(pg, nt, cg_gep(pg, pg->i64, fr, cg_i64(pg, i)), 8);
    }
    pc->nload = n;
    k->c = pg;
    k->mbt = LLVMIntTypeInContext(pg->ctx, (unsigned)k->p.W);
    k->frame = NULL;
    memset(k->framed, 0, sizeof k->framed);
    k->env.q = k->env.k = k->env.score = NULL;
    if (k->grouped) k->env.h = NULL;
    k->env.ncache = 0; /* hoisted subtrees are the caller's */
    k->env.tag = -1;
    k->env.collect = NULL;
    return true;
}

/* Ends the piece's body and restores the caller's state. */
static void piece_end(Kern *k, Piece *pc, bool hot) {
    LLVMBuildRetVoid(k->c->b);
    for (int i = 0; i < pc->nload; i++) {
        LLVMValueRef ld = pc->load[i];
        if (!ld || LLVMGetFirstUse(ld)) continue;
        LLVMValueRef gep = LLVMGetOperand(ld, 0);
        LLVMInstructionEraseFromParent(ld);
        if (LLVMIsAInstruction(gep) && !LLVMGetFirstUse(gep)) LLVMInstructionEraseFromParent(gep);
    }
    int64_t ps = pc->cg.stack;
    *k = pc->saved;
    if (ps > k->piece_stack) k->piece_stack = ps;
    Cg *c = k->c;
    const char *name = cg_fn_close(c, &pc->cg, pc->fn, c->parts != NULL, hot, k->err);
    if (!name) {
        k->failed = true;
        return;
    }
    size_t len;
    LLVMValueRef callee = LLVMGetCalledValue(pc->call);
    if (strcmp(LLVMGetValueName2(callee, &len), name) != 0) {
        /* folded into an identical piece of an earlier function: call that one */
        LLVMValueRef same = LLVMGetNamedFunction(c->mod, name);
        if (same) {
            LLVMSetOperand(pc->call, LLVMGetNumOperands(pc->call) - 1, same);
            LLVMDeleteFunction(callee);
        } else {
            LLVMSetValueName2(callee, name, strlen(name));
        }
    }
}

/* Emits body(k, arg) as the piece `what`, called here. */
static void emit_piece(Kern *k, const char *what, bool hot, void (*body)(Kern *, bool), bool arg) {
    Piece pc;
    if (k->failed || !piece_begin(k, &pc, what)) {
        k->failed = true;
        return;
    }
    body(k, arg);
    piece_end(k, &pc, hot);
}

/* Task row of chunk row i (clamped to the last real row). */
static LLVMValueRef task_row(Kern *k, LLVMValueRef i) { return LLVMBuildAdd(k->c->b, k->qc, cg_smin(k->c, i, k->last), ""); }

/* The query head of task row r (grouped), or NULL (the function's head). */
static LLVMValueRef row_head(Kern *k, LLVMValueRef r) {
    Cg *c = k->c;
    if (!k->grouped) return NULL;
    LLVMValueRef g = LLVMBuildUDiv(c->b, r, k->gnq, "");
    return LLVMBuildSExt(c->b, cg_load(c, c->i32, cg_gep(c, c->i32, k->gtab, g), 4), c->i64, "hr");
}

/* Element offset of task row r in a tensor with head stride s1 and row stride s2. */
static LLVMValueRef row_off(Kern *k, LLVMValueRef r, LLVMValueRef s1, LLVMValueRef s2) {
    Cg *c = k->c;
    if (!k->grouped) return LLVMBuildMul(c->b, r, s2, "");
    LLVMValueRef qi = LLVMBuildAdd(c->b, k->gq0, LLVMBuildURem(c->b, r, k->gnq, ""), "");
    return LLVMBuildAdd(c->b, LLVMBuildMul(c->b, row_head(k, r), s1, ""), LLVMBuildMul(c->b, qi, s2, ""), "");
}

/* The lane bits of scratch row `row`, key vector t (a run-time t is an i64 value). */
static LLVMValueRef row_bits(Kern *k, LLVMValueRef row, LLVMValueRef t) {
    Cg *c = k->c;
    LLVMValueRef idx = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, row, cg_i64(c, k->p.NT), ""), t, "");
    LLVMValueRef bits = cg_load(c, k->mbt, cg_gep(c, k->mbt, k->MB, idx), 1);
    LLVMValueRef v = LLVMBuildBitCast(c->b, bits, c->vi1, "");
    if (k->part_rt) v = LLVMBuildSelect(c->b, k->part_rt, v, cg_lane_mask(c, c->W), "");
    return v;
}

/* The q of chunk row i, as f32: the tensor's row (qdirect; scores are scaled after the dot
 * products) or the scaled copy in Qs. */
static LLVMValueRef q_row(Kern *k, LLVMValueRef i) {
    Cg *c = k->c;
    if (k->qdirect) return cg_gep(c, c->f32, k->qbase, row_off(k, task_row(k, i), k->qs1, k->qs2));
    return cg_gep(c, c->f32, k->Qs, mul(c, i, cg_i64(c, k->p.QK)));
}

/* The K/V row (from the run's bases) of key index j >= 0: a scalar or a vector. */
static LLVMValueRef krow(Kern *k, LLVMValueRef j) {
    Cg *c = k->c;
    if (k->cw <= 1) return j;
    bool vec = LLVMGetTypeKind(LLVMTypeOf(j)) == LLVMVectorTypeKind;
    LLVMValueRef w = cg_i64(c, k->cw), r = cg_i64(c, k->cmod);
    if (vec) w = cg_splat(c, w), r = cg_splat(c, r);
    return add(c, mul(c, LLVMBuildUDiv(c->b, j, w, ""), r), LLVMBuildURem(c->b, j, w, ""));
}

static LLVMValueRef kvec(Kern *k, LLVMValueRef first) {
    Cg *c = k->c;
    LLVMValueRef v = krow(k, add(c, cg_splat(c, first), cg_iota(c)));
    if (k->kstep != 1) v = mul(c, v, cg_splat(c, cg_i64(c, k->kstep)));
    return add(c, cg_splat(c, k->kpos0), v);
}

static LLVMValueRef kpos(Kern *k, LLVMValueRef key) {
    return add(k->c, k->kpos0, mul(k->c, krow(k, key), cg_i64(k->c, k->kstep)));
}

/* floor(x / m) for a constant m > 0 */
static LLVMValueRef floor_div(Cg *c, LLVMValueRef x, int64_t m) {
    LLVMValueRef q = LLVMBuildSDiv(c->b, x, cg_i64(c, m), "");
    LLVMValueRef neg = LLVMBuildICmp(c->b, LLVMIntSLT, LLVMBuildSub(c->b, x, mul(c, q, cg_i64(c, m)), ""), cg_i64(c, 0), "");
    return LLVMBuildSub(c->b, q, LLVMBuildZExt(c->b, neg, c->i64, ""), "");
}

/* The key indices of the run whose positions are below x: ceil((x - kpos0) / kstep), or for
 * compacted keys floor(d / cmod) * cw + clamp(d mod cmod, 0, cw) with d = x - kpos0; >= 0. */
static LLVMValueRef keys_below(Kern *k, LLVMValueRef x) {
    Cg *c = k->c;
    LLVMValueRef d = LLVMBuildSub(c->b, x, k->kpos0, "");
    LLVMValueRef n;
    if (k->cw <= 1) {
        n = k->kstep == 1 ? d : LLVMBuildSub(c->b, cg_i64(c, 0), floor_div(c, LLVMBuildSub(c->b, cg_i64(c, 0), d, ""), k->kstep), "");
    } else {
        LLVMValueRef per = floor_div(c, d, k->cmod);
        LLVMValueRef rem = LLVMBuildSub(c->b, d, mul(c, per, cg_i64(c, k->cmod)), "");
        n = add(c, mul(c, per, cg_i64(c, k->cw)), cg_smin(c, rem, cg_i64(c, k->cw)));
    }
    return cg_smax(c, n, cg_i64(c, 0));
}

/* Position of chunk row i (clamped to the last real row). */
static LLVMValueRef qpos_row(Kern *k, LLVMValueRef i) {
    if (k->grouped)
        return add(k->c, k->qpos0, LLVMBuildURem(k->c->b, task_row(k, i), k->gnq, ""));
    return add(k->c, k->qlo, mul(k->c, cg_smin(k->c, i, k->last), cg_i64(k->c, k->qstep)));
}

/* Points the expressions' q (and h, for the group entry) at chunk row i. */
static void env_row(Kern *k, LLVMValueRef i) {
    k->env.q = qpos_row(k, i);
    if (k->grouped) k->env.h = row_head(k, task_row(k, i));
}

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
} PvCtx;

/* acc[r][c0 .. c0+n) = acc*alpha + sum_j p[r][j] * V[kb+j][chunk]; c0 may be a run-time
 * chunk index; the last of the n chunks has `lastn` lanes. */
static void emit_pv_cols(Kern *k, const Plan *p, PvCtx *pc, LLVMValueRef c0, int n, int lastn) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    unsigned va = (unsigned)(p->W * 4);
    LLVMValueRef acc[16][16], col[16];
    for (int i = 0; i < n; i++) col[i] = mul(c, add(c, c0, cg_i64(c, i)), cg_i64(c, p->W));
    LLVMValueRef aslot[16][16]; /* the accumulators across the key loop */
    for (int r = 0; r < p->R; r++)
        for (int i = 0; i < n; i++) aslot[r][i] = cg_alloca(c, c->vf, 1, va, "a");
    for (int r = 0; r < p->R; r++)
        for (int i = 0; i < n; i++) {
            LLVMValueRef ap = cg_gep(c, c->f32, k->ACC, add(c, mul(c, pc->row[r], cg_i64(c, p->VDP)), col[i]));
            cg_store(c, LLVMBuildFMul(b, cg_load(c, c->vf, ap, va), pc->as[r], ""), aslot[r][i], va);
        }
    /* P.V from VS: f32 row `key` at vsb + key*vss, VS shifted back by the block's start. When
     * vpack_on is known only at run time (f32, no residue runs: key j's row is j), vsb/vss
     * select between VS and the tensor, whose rows end at v_dim (the last chunk masked). */
    LLVMValueRef vsb = NULL, vss = NULL;
    int vlastn = p->W;
    if (k->vs_use) {
        vsb = LLVMBuildGEP2(b, c->f32, k->VS, (LLVMValueRef[]){LLVMBuildNeg(b, mul(c, k->kb, cg_i64(c, p->VDP)), "")}, 1, "");
        vss = cg_i64(c, p->VDP);
        if (!LLVMIsAConstantInt(k->vpack_on)) {
            vsb = LLVMBuildSelect(b, k->vpack_on, vsb, k->vbase, "vsb");
            vss = LLVMBuildSelect(b, k->vpack_on, vss, k->vs2, "vss");
            vlastn = lastn;
        }
    }
    /* keys in a runtime loop, LU at a time (all in one W-key vector of lane bits; 2 and 4
     * measured alike, 2 is less code) */
    enum { LU = 2 };
    int lu = p->W < LU || pc->rare ? 1 : LU;
    CgLoop lt;
    LLVMValueRef j0 = cg_loop_begin(c, &lt, mul(c, pc->t0 ? pc->t0 : cg_i64(c, 0), cg_i64(c, p->W)),
                                    mul(c, pc->t1 ? pc->t1 : cg_i64(c, p->NT), cg_i64(c, p->W)), cg_i64(c, lu), "t");
    for (int r = 0; r < p->R; r++)
        for (int i = 0; i < n; i++) acc[r][i] = cg_load(c, c->vf, aslot[r][i], va);
    LLVMValueRef mbits[16];
    if (pc->masked) {
        LLVMValueRef t = LLVMBuildUDiv(b, j0, cg_i64(c, p->W), "");
        LLVMValueRef sh = LLVMBuildTrunc(b, LLVMBuildURem(b, j0, cg_i64(c, p->W), ""), k->mbt, "");
        for (int r = 0; r < p->R; r++) {
            LLVMValueRef idx = add(c, mul(c, pc->row[r], cg_i64(c, p->NT)), t);
            LLVMValueRef bits = cg_load(c, k->mbt, cg_gep(c, k->mbt, k->MB, idx), 1);
            if (k->part_rt) bits = LLVMBuildSelect(b, k->part_rt, bits, LLVMConstAllOnes(k->mbt), "");
            mbits[r] = LLVMBuildLShr(b, bits, sh, "");
        }
    }
    for (int l = 0; l < lu; l++) {
        LLVMValueRef key = add(c, add(c, k->kb, j0), cg_i64(c, l));
        if (pc->masked || pc->clamp) key = cg_smin(c, key, pc->vlast);
        LLVMValueRef vv[16];
        if (vsb) {
            LLVMValueRef vrow = LLVMBuildGEP2(b, c->f32, vsb, (LLVMValueRef[]){mul(c, key, vss)}, 1, "");
            for (int i = 0; i < n; i++) vv[i] = cg_load_vec(c, ATTN_F32, vrow, col[i], i == n - 1 ? vlastn : p->W);
        } else {
            LLVMValueRef voff = mul(c, krow(k, key), k->vs2);
            for (int i = 0; i < n; i++)
                vv[i] = cg_load_vec(c, k->dt, k->vbase, add(c, voff, col[i]), i == n - 1 ? lastn : p->W);
        }
        for (int r = 0; r < p->R; r++) {
            LLVMValueRef pj = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, pc->P, add(c, cg_i64(c, (int64_t)r * p->BK + l), j0)), 4));
            /* a vector condition: a scalar one may become a branch on random mask bits */
            LLVMValueRef bit = NULL;
            if (pc->masked) {
                LLVMValueRef one = LLVMBuildAnd(b, LLVMBuildLShr(b, mbits[r], LLVMConstInt(k->mbt, (unsigned)l, 0), ""), LLVMConstInt(k->mbt, 1, 0), "");
                bit = cg_splat(c, LLVMBuildICmp(b, LLVMIntNE, one, LLVMConstNull(k->mbt), ""));
            }
            for (int i = 0; i < n; i++) {
                LLVMValueRef nv = cg_fma(c, pj, vv[i], acc[r][i]);
                acc[r][i] = pc->masked ? LLVMBuildSelect(b, bit, nv, acc[r][i], "") : nv;
            }
        }
    }
    for (int r = 0; r < p->R; r++)
        for (int i = 0; i < n; i++) cg_store(c, acc[r][i], aslot[r][i], va);
    cg_loop_end(c, &lt);
    for (int r = 0; r < p->R; r++)
        for (int i = 0; i < n; i++) {
            LLVMValueRef ap = cg_gep(c, c->f32, k->ACC, add(c, mul(c, pc->row[r], cg_i64(c, p->VDP)), col[i]));
            cg_store(c, cg_load(c, c->vf, aslot[r][i], va), ap, va);
        }
}

/* Register column groups for P.V: half the register file (32 zmm / 16 ymm or xmm). */
static int pv_groups(const Plan *p) {
    int CG = (p->W >= 16 ? 16 : 8) / p->R;
    if (CG < 1) CG = 1;
    return CG > p->VC ? p->VC : CG;
}

/* acc = acc*alpha + P V over every V chunk: passes over column groups of CG chunks (a
 * runtime loop when there are several whole groups, the rest unrolled). */
static void emit_pv(Kern *k, const Plan *p, PvCtx *pc) {
    Cg *c = k->c;
    int CG = pv_groups(p);
    int whole = p->VD / p->W / CG;
    int done = 0;
    if (whole >= 2) {
        CgLoop lc;
        LLVMValueRef gi = cg_loop_begin(c, &lc, cg_i64(c, 0), cg_i64(c, whole), cg_i64(c, 1), "cg");
        emit_pv_cols(k, p, pc, mul(c, gi, cg_i64(c, CG)), CG, p->W);
        cg_loop_end(c, &lc);
        done = whole * CG;
    }
    for (int c0 = done; c0 < p->VC; c0 += CG) {
        int n = c0 + CG < p->VC ? CG : p->VC - c0;
        emit_pv_cols(k, p, pc, cg_i64(c, c0), n, tail_lanes(p->VD, p->W, c0 + n - 1));
    }
}


static LLVMValueRef dot_scores(Kern *k, LLVMValueRef row, LLVMValueRef first, bool clamp);

/* The softmax numerators of rows g .. g+nr-1 in place: P[r][t*W ..] = exp(s - m_r) for the
 * vectors [t0, t1); the row's sums L[g + r] (a vector of partial sums per row, added up
 * once the chunk is done) become L*alpha + their sum. mu[r]: the row's max (0 when it saw
 * nothing); as[r]: its alpha, splatted. Runtime loops over rows and vectors: one exp in the
 * code. */
static void emit_exp_rows(Kern *k, const Plan *p, LLVMValueRef g, LLVMValueRef P, const LLVMValueRef *mu,
                          const LLVMValueRef *as, LLVMValueRef t0, LLVMValueRef t1) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    unsigned va = (unsigned)(p->W * 4);
    LLVMValueRef MU = cg_alloca(c, c->f32, 16, 64, "mu"), AL = cg_alloca(c, c->f32, 16, 64, "alpha");
    for (int r = 0; r < p->R; r++) {
        cg_store(c, mu[r], cg_gep(c, c->f32, MU, cg_i64(c, r)), 4);
        cg_store(c, LLVMBuildExtractElement(b, as[r], cg_i32(c, 0), ""), cg_gep(c, c->f32, AL, cg_i64(c, r)), 4);
    }
    LLVMValueRef sum = cg_alloca(c, c->vf, 1, va, "ps");
    CgLoop lr, lt;
    LLVMValueRef r = cg_loop_begin(c, &lr, cg_i64(c, 0), cg_i64(c, p->R), cg_i64(c, 1), "er");
    LLVMValueRef m = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, MU, r), 4));
    LLVMValueRef prow = cg_gep(c, c->f32, P, mul(c, r, cg_i64(c, p->BK)));
    cg_store(c, LLVMConstNull(c->vf), sum, va);
    LLVMValueRef t = k->wmax == 1 ? cg_loop_begin_once(c, &lt, t0, t1, "e") : cg_loop_begin(c, &lt, t0, t1, cg_i64(c, 1), "e");
    LLVMValueRef pp = cg_gep(c, c->f32, prow, mul(c, t, cg_i64(c, p->W)));
    LLVMValueRef pv = cg_exp(c, LLVMBuildFSub(b, cg_load(c, c->vf, pp, va), m, ""));
    cg_store(c, pv, pp, va);
    cg_store(c, LLVMBuildFAdd(b, cg_load(c, c->vf, sum, va), pv, ""), sum, va);
    cg_loop_end(c, &lt);
    LLVMValueRef lp = cg_gep(c, c->f32, k->L, mul(c, add(c, g, r), cg_i64(c, p->W)));
    LLVMValueRef al = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, AL, r), 4));
    cg_store(c, cg_fma(c, cg_load(c, c->vf, lp, va), al, cg_load(c, c->vf, sum, va)), lp, va);
    cg_loop_end(c, &lr);
}

/* Bound on the key vectors of a block the generator handles at once (block_k <= 4W). */
enum { CG_MAXT = 8 };

/* Scores of rows qrow[0 .. R) against nv key vectors of the packed KT from column col:
 * s[r][t] = sum_d q[r][d] * KT[d][col + t*W], d in a runtime loop of DU-wide unrolled steps,
 * the rest unrolled; the R x nv accumulators are the FMA chains. With one vector (nv == 1)
 * the even and odd d steps of each row take separate chains, summed at the end, so the R
 * rows still fill both FMA pipes (R chains alone wait on the FMA latency). */
static void block_scores(Kern *k, const Plan *p, LLVMValueRef *qrow, LLVMValueRef col, int nv,
                         LLVMValueRef (*s)[CG_MAXT]) {
    Cg *c = k->c;
    unsigned va = (unsigned)(p->W * 4);
    LLVMValueRef slot[16][CG_MAXT];
    enum { DU = 4 };
    int dloop = p->QK >= 2 * DU ? p->QK / DU * DU : 0;
    int nc = nv == 1 ? 2 : nv; /* chains per row: nv, or two for one vector */
    for (int r = 0; r < p->R; r++)
        for (int t = 0; t < nc; t++) s[r][t] = LLVMConstNull(c->vf);
    if (dloop) {
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < nc; t++) {
                slot[r][t] = cg_alloca(c, c->vf, 1, va, "s");
                cg_store(c, s[r][t], slot[r][t], va);
            }
        CgLoop ld;
        LLVMValueRef d0 = cg_loop_begin(c, &ld, cg_i64(c, 0), cg_i64(c, dloop), cg_i64(c, DU), "d");
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < nc; t++) s[r][t] = cg_load(c, c->vf, slot[r][t], va);
        LLVMValueRef ktb = cg_gep(c, c->f32, k->KT, add(c, mul(c, d0, cg_i64(c, p->BK)), col));
        for (int dd = 0; dd < DU; dd++) {
            LLVMValueRef kt[CG_MAXT];
            for (int t = 0; t < nv; t++)
                kt[t] = cg_load(c, c->vf, cg_gep(c, c->f32, ktb, cg_i64(c, (int64_t)dd * p->BK + t * p->W)), va);
            for (int r = 0; r < p->R; r++) {
                LLVMValueRef qv = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, qrow[r], add(c, d0, cg_i64(c, dd))), 4));
                for (int t = 0; t < nv; t++) {
                    int ch = nv == 1 ? dd % 2 : t;
                    s[r][ch] = cg_fma(c, qv, kt[t], s[r][ch]);
                }
            }
        }
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < nc; t++) cg_store(c, s[r][t], slot[r][t], va);
        cg_loop_end(c, &ld);
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < nc; t++) s[r][t] = cg_load(c, c->vf, slot[r][t], va);
    }
    for (int d = dloop; d < p->QK; d++) {
        LLVMValueRef kt[CG_MAXT];
        for (int t = 0; t < nv; t++)
            kt[t] = cg_load(c, c->vf, cg_gep(c, c->f32, k->KT, add(c, cg_i64(c, (int64_t)d * p->BK + t * p->W), col)), va);
        for (int r = 0; r < p->R; r++) {
            LLVMValueRef qv = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, qrow[r], cg_i64(c, d)), 4));
            for (int t = 0; t < nv; t++) s[r][t] = cg_fma(c, qv, kt[t], s[r][t]);
        }
    }
    if (nv == 1)
        for (int r = 0; r < p->R; r++) s[r][0] = LLVMBuildFAdd(c->b, s[r][0], s[r][1], "");
    if (k->qdirect)
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < nv; t++) s[r][t] = LLVMBuildFMul(c->b, s[r][t], cg_splat(c, cg_f32(c, k->f->scale)), "");
}

/* The score modifier on row `row`'s scores s against the W keys of key vector t (mv: the
 * lanes that count). */
static LLVMValueRef score_mod(Kern *k, LLVMValueRef row, LLVMValueRef t, LLVMValueRef s, LLVMValueRef mv) {
    Cg *c = k->c;
    env_row(k, row);
    k->env.k = kvec(k, add(c, k->kb, mul(c, t, cg_i64(c, k->p.W))));
    k->env.score = s;
    s = cg_expr_vec(c, &k->env, k->f->score, mv);
    k->env.score = NULL;
    return s;
}

/* The online-softmax step of row `row` for a block whose scores have the maximum bm: stores
 * the new max; *mu is the max to subtract (0 while the row has seen nothing, so
 * exp(-inf - -inf) never happens); returns alpha = exp(m_old - mu), by which the caller
 * scales the row's l and acc. */
static LLVMValueRef softmax_step(Kern *k, LLVMValueRef row, LLVMValueRef bm, LLVMValueRef *mu) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    LLVMValueRef mp = cg_gep(c, c->f32, k->M, row);
    LLVMValueRef m_old = cg_load(c, c->f32, mp, 4);
    LLVMValueRef m_new = cg_fmax(c, m_old, bm);
    LLVMValueRef ninf = LLVMBuildFCmp(b, LLVMRealOEQ, m_new, cg_f32(c, -INFINITY), "");
    *mu = LLVMBuildSelect(b, ninf, cg_f32(c, 0.0), m_new, "");
    LLVMValueRef alpha = cg_exp(c, LLVMBuildFSub(b, m_old, *mu, ""));
    cg_store(c, m_new, mp, 4);
    return alpha;
}

/* softmax_step for rows g .. g+nr-1 (the row groups) at once: their m side by side in one
 * vector, one vector exp for the nr alphas instead of nr scalar ones. as[r] = alpha
 * splatted; mu[r] as softmax_step's. */
static void softmax_rows(Kern *k, LLVMValueRef g, int nr, LLVMValueRef *bm, LLVMValueRef *mu, LLVMValueRef *as) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    if (nr == 1 || nr > c->W) {
        for (int r = 0; r < nr; r++) as[r] = cg_splat(c, softmax_step(k, add(c, g, cg_i64(c, r)), bm[r], &mu[r]));
        return;
    }
    LLVMValueRef mp = cg_gep(c, c->f32, k->M, g);
    LLVMValueRef m_old = cg_load(c, c->vf, mp, 4); /* M: W floats of padding */
    LLVMValueRef bv = cg_const_like(c, c->vf, -INFINITY);
    for (int r = 0; r < nr; r++) bv = LLVMBuildInsertElement(b, bv, bm[r], cg_i32(c, r), "");
    LLVMValueRef m_new = cg_fmax(c, m_old, bv);
    LLVMValueRef ninf = LLVMBuildFCmp(b, LLVMRealOEQ, m_new, cg_const_like(c, c->vf, -INFINITY), "");
    LLVMValueRef muv = LLVMBuildSelect(b, ninf, LLVMConstNull(c->vf), m_new, "");
    LLVMValueRef alpha = cg_exp(c, LLVMBuildFSub(b, m_old, muv, ""));
    for (int r = 0; r < nr; r++) {
        /* only this group's lanes: the others are rows of the next groups */
        LLVMValueRef lane = cg_i32(c, r);
        cg_store(c, LLVMBuildExtractElement(b, m_new, lane, ""), cg_gep(c, c->f32, mp, cg_i64(c, r)), 4);
        mu[r] = LLVMBuildExtractElement(b, muv, lane, "");
        as[r] = cg_splat(c, LLVMBuildExtractElement(b, alpha, lane, ""));
    }
}


/* Scores of a window's `per` vectors from vector tp for the group's rows (from K directly
 * when `dot`, else from the packed KT): score mod, lane mask (`masked`), running maxima in
 * mxs; the scores wait in P. */
static void win_scores(Kern *k, const Plan *p, LLVMValueRef *row, LLVMValueRef *qrow, LLVMValueRef tp, int per,
                       bool masked, bool dot, LLVMValueRef *mxs, LLVMValueRef P) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrFunc *f = k->f;
    unsigned va = (unsigned)(p->W * 4);
    LLVMValueRef col = mul(c, tp, cg_i64(c, p->W));
    LLVMValueRef s[16][CG_MAXT];
    if (dot) {
        for (int r = 0; r < p->R; r++) s[r][0] = dot_scores(k, row[r], add(c, k->kb, col), masked);
    } else {
        block_scores(k, p, qrow, col, per, s);
    }
    for (int r = 0; r < p->R; r++) {
        LLVMValueRef mx = cg_load(c, c->vf, mxs[r], va);
        for (int j = 0; j < per; j++) {
            LLVMValueRef t = add(c, tp, cg_i64(c, j));
            LLVMValueRef mv = masked ? row_bits(k, row[r], t) : cg_lane_mask(c, p->W);
            LLVMValueRef sv = s[r][j];
            if (f->score) sv = score_mod(k, row[r], t, sv, mv);
            if (masked) sv = LLVMBuildSelect(b, mv, sv, cg_const_like(c, c->vf, -INFINITY), "");
            mx = cg_fmax(c, mx, sv);
            cg_store(c, sv, cg_gep(c, c->f32, P, add(c, cg_i64(c, (int64_t)r * p->BK + j * p->W), col)), va);
        }
        cg_store(c, mx, mxs[r], va);
    }
}

/* A group of nr rows against the key block in runtime loops over its key vectors (compact
 * code): scores to scratch with a running max, then exp, then P.V. `masked` (a partial
 * block): visit only the vectors some row of the group may see, [t0, t1) from the lane
 * masks (a band or a block diagonal crosses a block as a staircase, so the rows of one group
 * skip the vectors wholly above or below theirs; a group that sees nothing is skipped, its
 * state as it is). `dot`: scores straight from K, a vector at a time (few rows, decode);
 * else from the packed KT in pairs of vectors (2 nr independent FMA chains), the odd one of
 * an odd window alone (two chains per row). */
static void emit_group_loop(Kern *k, LLVMValueRef g, int nr, bool masked, bool dot, LLVMValueRef vt0, LLVMValueRef vt1) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    Plan pl = k->p;
    pl.R = nr;
    const Plan *p = &pl;
    const IrFunc *f = k->f;
    enum { MAXR = 16 };
    unsigned va = (unsigned)(p->W * 4);
    LLVMValueRef row[MAXR], zero = cg_i64(c, 0);
    for (int r = 0; r < p->R; r++) row[r] = add(c, g, cg_i64(c, r));
    /* the window: first and last vector with a visible lane for some row */
    LLVMValueRef t0 = cg_i64(c, p->NT), t1 = zero;
    for (int t = masked && f->prune.enabled ? p->NT - 1 : -1; t >= 0; t--) {
        LLVMValueRef any = NULL;
        for (int r = 0; r < p->R; r++) {
            LLVMValueRef idx = add(c, mul(c, row[r], cg_i64(c, p->NT)), cg_i64(c, t));
            LLVMValueRef bits = cg_load(c, k->mbt, cg_gep(c, k->mbt, k->MB, idx), 1);
            any = any ? LLVMBuildOr(b, any, bits, "") : bits;
        }
        LLVMValueRef has = LLVMBuildICmp(b, LLVMIntNE, any, LLVMConstNull(k->mbt), "");
        t0 = LLVMBuildSelect(b, has, cg_i64(c, t), t0, "");
        t1 = cg_smax(c, t1, LLVMBuildSelect(b, has, cg_i64(c, t + 1), zero, ""));
    }
    if (!masked || !f->prune.enabled) {
        /* full blocks; or -fno-prune: every vector of every tile is computed */
        t0 = zero;
        t1 = cg_i64(c, p->NT);
    } else if (k->part_rt) {
        /* the masked code also serves full blocks: every vector */
        t0 = LLVMBuildSelect(b, k->part_rt, t0, zero, "");
        t1 = LLVMBuildSelect(b, k->part_rt, t1, cg_i64(c, p->NT), "");
    }
    if (vt0) {
        /* a sub-block: vectors [vt0, vt1) only */
        t0 = cg_smax(c, t0, vt0);
        t1 = cg_smin(c, t1, vt1);
    }
    LLVMBasicBlockRef body = cg_block(c, "win"), done = cg_block(c, "win_done");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, t0, t1, ""), body, done);
    LLVMPositionBuilderAtEnd(b, body);
    LLVMValueRef P = cg_alloca(c, c->f32, (int64_t)p->R * p->BK, 64, "pw");
    LLVMValueRef mxs[MAXR], qrow[MAXR];
    for (int r = 0; r < p->R; r++) {
        mxs[r] = cg_alloca(c, c->vf, 1, va, "mx");
        cg_store(c, cg_const_like(c, c->vf, -INFINITY), mxs[r], va);
        qrow[r] = q_row(k, row[r]);
    }
    if (dot) {
        CgLoop lt;
        LLVMValueRef tp = k->wmax == 1 ? cg_loop_begin_once(c, &lt, t0, t1, "wt")
                                       : cg_loop_begin(c, &lt, t0, t1, cg_i64(c, 1), "wt");
        win_scores(k, p, row, qrow, tp, 1, masked, true, mxs, P);
        cg_loop_end(c, &lt);
    } else {
        /* pairs over the even part of the window, then its odd vector alone */
        LLVMValueRef pend = add(c, t0, LLVMBuildAnd(b, LLVMBuildSub(b, t1, t0, ""), cg_i64(c, -2), ""));
        CgLoop lt;
        LLVMValueRef tp = cg_loop_begin(c, &lt, t0, pend, cg_i64(c, 2), "wt");
        win_scores(k, p, row, qrow, tp, 2, masked, false, mxs, P);
        cg_loop_end(c, &lt);
        LLVMBasicBlockRef bodd = cg_block(c, "wodd"), bj = cg_block(c, "wodd_done");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, pend, t1, ""), bodd, bj);
        LLVMPositionBuilderAtEnd(b, bodd);
        win_scores(k, p, row, qrow, pend, 1, masked, false, mxs, P);
        LLVMBuildBr(b, bj);
        LLVMPositionBuilderAtEnd(b, bj);
    }
    /* online softmax over the window */
    LLVMValueRef as[MAXR], mu[MAXR] = {0}, bm[MAXR];
    for (int r = 0; r < p->R; r++) bm[r] = cg_hmax(c, cg_load(c, c->vf, mxs[r], va));
    softmax_rows(k, g, p->R, bm, mu, as);
    emit_exp_rows(k, p, g, P, mu, as, t0, t1);
    PvCtx pc = {row, P, as, masked, LLVMBuildSub(b, k->kv_len, cg_i64(c, 1), ""), t0, t1, false, false};
    if (masked && k->vfin_slot) {
        /* hidden lanes have p = 0 exactly, so with finite V rows the plain update adds
         * nothing for them: the lane selects are only for NaN/inf in V */
        LLVMBasicBlockRef bfin = cg_block(c, "pv_finite"), bsel = cg_block(c, "pv_select");
        LLVMBasicBlockRef bj = cg_block(c, "pv_done");
        LLVMBuildCondBr(b, cg_load(c, c->i1, k->vfin_slot, 1), bfin, bsel);
        LLVMPositionBuilderAtEnd(b, bfin);
        PvCtx plain = pc;
        plain.masked = false;
        plain.clamp = true;
        emit_pv(k, p, &plain);
        LLVMBuildBr(b, bj);
        LLVMPositionBuilderAtEnd(b, bsel);
        pc.rare = true;
        emit_pv(k, p, &pc);
        LLVMBuildBr(b, bj);
        LLVMPositionBuilderAtEnd(b, bj);
    } else {
        emit_pv(k, p, &pc);
    }
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
}

static void transpose(Cg *c, LLVMValueRef *rows);

/* W vectors of partial sums (part[j]: key j) to one vector of their totals (lane j: key j):
 * log2(W) levels pairing vector i with i + n/2, each pair two shuffles and an add (2(W-1)
 * shuffles in all, half of a full transpose). */
static LLVMValueRef reduce_rows(Cg *c, LLVMValueRef *part) {
    int W = c->W;
    LLVMValueRef ia[64], ib[64];
    for (int n = W, seg = W; n > 1; n /= 2, seg /= 2) {
        int bs = seg / 2;
        for (int p = 0; p < W; p++) {
            int sb = p - p % seg, o = p % seg;
            ia[p] = cg_i32(c, o < bs ? sb + o : W + sb + o - bs);
            ib[p] = cg_i32(c, o < bs ? sb + bs + o : W + sb + o);
        }
        LLVMValueRef ma = LLVMConstVector(ia, (unsigned)W), mb = LLVMConstVector(ib, (unsigned)W);
        for (int i = 0; i < n / 2; i++) {
            LLVMValueRef a = LLVMBuildShuffleVector(c->b, part[i], part[i + n / 2], ma, "");
            LLVMValueRef bv = LLVMBuildShuffleVector(c->b, part[i], part[i + n / 2], mb, "");
            part[i] = LLVMBuildFAdd(c->b, a, bv, "");
        }
    }
    return part[0];
}

/* Prefetches row `row`'s share of the K and V lines of key `key` (decode streams K/V from
 * memory with little else in flight): the G rows of a group split a key's lines, so each key's
 * prefetches spread over the row passes instead of a burst per block that fills the miss
 * buffers and stalls. Prefetches never fault: no bounds needed. */
static int line_elems(const Kern *k) { return 64 / (k->dt == ATTN_F32 ? 4 : 2); }

/* Read prefetches (to L1) of `lines` cache lines of elements from `at`. */
static void prefetch_lines(Kern *k, LLVMValueRef at, int lines) {
    Cg *c = k->c;
    LLVMTypeRef et = cg_elem_type(c, k->dt), pt = c->ptr;
    for (int i = 0; i < lines; i++) {
        LLVMValueRef args[4] = {cg_gep(c, et, at, cg_i64(c, (int64_t)i * line_elems(k))), cg_i32(c, 0), cg_i32(c, 3), cg_i32(c, 1)};
        cg_intr(c, "llvm.prefetch", &pt, 1, args, 4);
    }
}

/* Cache lines of a row of n elements. */
static int row_lines(const Kern *k, int n) { return (n + line_elems(k) - 1) / line_elems(k); }

/* prefetch_key from the K/V bases kb and vb (another residue class's). */
static void prefetch_kv(Kern *k, LLVMValueRef kb, LLVMValueRef vb, LLVMValueRef row, LLVMValueRef key) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    LLVMTypeRef et = cg_elem_type(c, k->dt);
    LLVMValueRef share = LLVMBuildURem(b, row, cg_i64(c, k->gsize), "");
    struct { LLVMValueRef base, stride; int lines; } t[2] = {{kb, k->ks2, row_lines(k, p->QK)}, {vb, k->vs2, row_lines(k, p->VD)}};
    for (int w = 0; w < 2; w++) {
        int m = (t[w].lines + k->gsize - 1) / k->gsize;
        LLVMValueRef first = mul(c, mul(c, share, cg_i64(c, m)), cg_i64(c, line_elems(k)));
        prefetch_lines(k, cg_gep(c, et, t[w].base, add(c, mul(c, krow(k, key), t[w].stride), first)), m);
    }
}

static void prefetch_key(Kern *k, LLVMValueRef row, LLVMValueRef key) { prefetch_kv(k, k->kbase, k->vbase, row, key); }

/* The K and V rows of keys [first, first + n) (whole rows: row 0 of a group) from bases kb, vb. */
static void prefetch_keys(Kern *k, LLVMValueRef kb, LLVMValueRef vb, LLVMValueRef first, int n) {
    for (int i = 0; i < n; i++) prefetch_kv(k, kb, vb, cg_i64(k->c, 0), add(k->c, first, cg_i64(k->c, i)));
}

/* Keys per decode sub-block of the group entry: K and V rows in half of L1 (~16 KiB), a
 * multiple of W within the block (d=128: 16 keys, d=64: 32). Prefetches run three ahead
 * (measured against 1, 2, 4 and 6: a few % better than two). */
static int decode_keys(const IrFunc *f, int W, int NT) {
    int sub = 4096 / (f->qk_dim + f->v_dim) / W;
    sub = sub < 1 ? 1 : sub > NT ? NT : sub;
    return sub * W;
}

/* Scores of one row against W keys from K directly (no packing): a dot product per key over
 * the d chunks, then a reduction turns the W partial vectors into one score vector. `clamp`:
 * keys may pass the end (a tail block). */
static LLVMValueRef dot_scores(Kern *k, LLVMValueRef row, LLVMValueRef first, bool clamp) {
    Cg *c = k->c;
    const Plan *p = &k->p;
    LLVMValueRef qv[CG_MAX_CHUNKS], part[64];
    LLVMValueRef qrow = q_row(k, row);
    int nch = (p->QK + p->W - 1) / p->W;
    for (int ch = 0; ch < nch; ch++) {
        int n = tail_lanes(p->QK, p->W, ch);
        if (k->qdirect) {
            qv[ch] = cg_load_vec(c, ATTN_F32, qrow, cg_i64(c, ch * p->W), n);
            continue;
        }
        qv[ch] = cg_load(c, c->vf, cg_gep(c, c->f32, qrow, cg_i64(c, ch * p->W)), 4);
        /* lanes past qk_dim hold the next row's q: zero them */
        if (n < p->W) qv[ch] = LLVMBuildSelect(c->b, cg_lane_mask(c, n), qv[ch], LLVMConstNull(c->vf), "");
    }
    LLVMValueRef klast = LLVMBuildSub(c->b, k->kv_len, cg_i64(c, 1), "");
    for (int j = 0; j < p->W; j++) {
        LLVMValueRef key = add(c, first, cg_i64(c, j));
        if (clamp) key = cg_smin(c, key, klast);
        LLVMValueRef koff = mul(c, krow(k, key), k->ks2);
        prefetch_key(k, row, add(c, key, cg_i64(c, 3 * decode_keys(k->f, p->W, p->NT))));
        /* two chains (even and odd chunks): half the FMA latency per key (decode d=128 from
         * memory ~+6%; four chains measured slower) */
        LLVMValueRef acc[2] = {LLVMConstNull(c->vf), LLVMConstNull(c->vf)};
        for (int ch = 0; ch < nch; ch++) {
            LLVMValueRef kv = cg_load_vec(c, k->dt, k->kbase, add(c, koff, cg_i64(c, ch * p->W)), tail_lanes(p->QK, p->W, ch));
            acc[ch % 2] = cg_fma(c, qv[ch], kv, acc[ch % 2]);
        }
        part[j] = nch > 1 ? LLVMBuildFAdd(c->b, acc[0], acc[1], "") : acc[0];
    }
    LLVMValueRef sv = reduce_rows(c, part);
    return k->qdirect ? LLVMBuildFMul(c->b, sv, cg_splat(c, cg_f32(c, k->f->scale)), "") : sv;
}

/* One group of R rows against the packed KT of a full key block, unrolled over the block's
 * vectors (every FMA chain in registers). */
static void emit_group(Kern *k, LLVMValueRef g) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    const IrFunc *f = k->f;
    enum { MAXR = 16 };
    LLVMValueRef s[MAXR][CG_MAXT] = {{0}};
    LLVMValueRef row[MAXR];
    unsigned va = (unsigned)(p->W * 4);

    for (int r = 0; r < p->R; r++) row[r] = add(c, g, cg_i64(c, r));
    /* scores */
    LLVMValueRef qrow[MAXR];
    for (int r = 0; r < p->R; r++) qrow[r] = q_row(k, row[r]);
    block_scores(k, p, qrow, cg_i64(c, 0), p->NT, s);
    if (f->score)
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < p->NT; t++) s[r][t] = score_mod(k, row[r], cg_i64(c, t), s[r][t], cg_lane_mask(c, p->W));
    /* online softmax: the scores wait in P (the key loop of P.V reads p as broadcast scalars),
     * exp in a runtime loop over the block's vectors (compact code) */
    LLVMValueRef as[MAXR], mu[MAXR] = {0}, bm[MAXR];
    LLVMValueRef P = cg_alloca(c, c->f32, (int64_t)p->R * p->BK, 64, "p");
    for (int r = 0; r < p->R; r++) {
        LLVMValueRef mx = s[r][0];
        for (int t = 1; t < p->NT; t++) mx = cg_fmax(c, mx, s[r][t]);
        for (int t = 0; t < p->NT; t++)
            cg_store(c, s[r][t], cg_gep(c, c->f32, P, cg_i64(c, (int64_t)r * p->BK + t * p->W)), va);
        bm[r] = cg_hmax(c, mx);
    }
    softmax_rows(k, g, p->R, bm, mu, as);
    emit_exp_rows(k, p, g, P, mu, as, cg_i64(c, 0), cg_i64(c, p->NT));
    /* acc = acc*alpha + P V, in passes over column groups of CG chunks so that R*CG
     * accumulators stay in registers whatever v_dim is; P is reused by every pass */
    PvCtx pc = {row, P, as, false, LLVMBuildSub(b, k->kv_len, cg_i64(c, 1), ""), NULL, NULL, false, false};
    emit_pv(k, p, &pc);
}

/* In-register transpose of W rows of W floats: log2(W) rounds of interleaving row i with
 * row i + W/2 (a perfect shuffle); after them rows[l] holds the old column l. */
static void transpose(Cg *c, LLVMValueRef *rows) {
    int W = c->W;
    LLVMValueRef lo[64], hi[64], tmp[64];
    for (int i = 0; i < W / 2; i++) {
        lo[2 * i] = cg_i32(c, i);
        lo[2 * i + 1] = cg_i32(c, W + i);
        hi[2 * i] = cg_i32(c, W / 2 + i);
        hi[2 * i + 1] = cg_i32(c, W + W / 2 + i);
    }
    LLVMValueRef mlo = LLVMConstVector(lo, (unsigned)W), mhi = LLVMConstVector(hi, (unsigned)W);
    for (int s = 1; s < W; s *= 2) {
        for (int i = 0; i < W / 2; i++) {
            tmp[2 * i] = LLVMBuildShuffleVector(c->b, rows[i], rows[i + W / 2], mlo, "");
            tmp[2 * i + 1] = LLVMBuildShuffleVector(c->b, rows[i], rows[i + W / 2], mhi, "");
        }
        for (int i = 0; i < W; i++) rows[i] = tmp[i];
    }
}

/* Records whether chunk row i sees every key of the partial block (its group may then run
 * the full blocks' code); never under -fno-prune, which tests every pair. */
static void store_rowfull(Kern *k, LLVMValueRef i, LLVMValueRef full) {
    Cg *c = k->c;
    if (!k->f->prune.enabled) full = cg_bool(c, false);
    LLVMValueRef v = LLVMBuildZExt(c->b, full, c->i8, "");
    cg_store(c, v, cg_gep(c, c->i8, k->RF, i), 1);
    cg_store(c, LLVMBuildOr(c->b, cg_load(c, c->i8, k->anyfull, 1), v, ""), k->anyfull, 1);
}

/* Do the R rows from g all see the whole block? */
static LLVMValueRef group_full(Kern *k, LLVMValueRef g) {
    Cg *c = k->c;
    LLVMValueRef all = NULL;
    for (int r = 0; r < k->p.R; r++) {
        LLVMValueRef v = cg_load(c, c->i8, cg_gep(c, c->i8, k->RF, add(c, g, cg_i64(c, r))), 1);
        all = all ? LLVMBuildAnd(c->b, all, v, "") : v;
    }
    return LLVMBuildICmp(c->b, LLVMIntNE, all, LLVMConstNull(c->i8), "gfull");
}

/* MB[i][t] for every row of the chunk: the mask (if `eval`) and k < kv_len, as lane bits;
 * ORs them into *any_slot; RF[i]: row i sees the whole block. */
static void emit_rowmasks(Kern *k, bool eval, LLVMValueRef any_slot) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    const IrPrune *pr = &k->f->prune;
    if (eval && pr->enabled && pr->exact && k->cw <= 1 && p->BK <= 64) {
        /* a row sees one interval of keys (causal, windows, bands, prefixes): its bits from
         * k_lo/k_hi at that row, a few scalar instructions instead of a vector test per key */
        CgEnv *env = &k->env;
        LLVMValueRef qmin = env->qmin, qmax = env->qmax;
        LLVMTypeRef i64 = c->i64;
        CgLoop li;
        LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), k->npad, cg_i64(c, 1), "mi");
        env_row(k, i);
        env->qmin = env->qmax = env->q;
        LLVMValueRef alltrue = cg_lane_mask(c, p->W);
        LLVMValueRef lo = cg_expr(c, env, pr->k_lo, alltrue).v, hi = cg_expr(c, env, pr->k_hi, alltrue).v;
        /* the run's keys [a, e) of the block, within the keys to visit */
        LLVMValueRef a = LLVMBuildSub(b, keys_below(k, lo), k->kb, "");
        LLVMValueRef e = LLVMBuildSub(b, cg_smin(c, keys_below(k, add(c, hi, cg_i64(c, 1))), k->kv_len), k->kb, "");
        LLVMValueRef ones[2];
        LLVMValueRef ends[2] = {a, e};
        for (int j = 0; j < 2; j++) {
            LLVMValueRef n = cg_smin(c, cg_smax(c, ends[j], cg_i64(c, 0)), cg_i64(c, 64));
            LLVMValueRef sh = LLVMBuildShl(b, LLVMConstInt(i64, 1, 0), n, "");
            ones[j] = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGE, n, cg_i64(c, 64), ""), LLVMConstAllOnes(i64),
                                      LLVMBuildSub(b, sh, LLVMConstInt(i64, 1, 0), ""), "");
        }
        LLVMValueRef bits = LLVMBuildAnd(b, ones[1], LLVMBuildNot(b, ones[0], ""), "rowbits");
        LLVMValueRef whole = p->BK == 64 ? LLVMConstAllOnes(i64) : LLVMConstInt(i64, ((uint64_t)1 << p->BK) - 1, 0);
        store_rowfull(k, i, LLVMBuildICmp(b, LLVMIntEQ, bits, whole, ""));
        LLVMValueRef acc_any = cg_load(c, k->mbt, any_slot, 8);
        for (int t = 0; t < p->NT; t++) {
            LLVMValueRef part = LLVMBuildTrunc(b, LLVMBuildLShr(b, bits, cg_i64(c, (int64_t)t * p->W), ""), k->mbt, "");
            cg_store(c, part, cg_gep(c, k->mbt, k->MB, add(c, mul(c, i, cg_i64(c, p->NT)), cg_i64(c, t))), 1);
            acc_any = LLVMBuildOr(b, acc_any, part, "");
        }
        cg_store(c, acc_any, any_slot, 8);
        cg_loop_end(c, &li);
        env->qmin = qmin;
        env->qmax = qmax;
        return;
    }
    LLVMValueRef kv[8], valid[8];
    for (int t = 0; t < p->NT; t++) {
        LLVMValueRef idx = add(c, cg_splat(c, add(c, k->kb, cg_i64(c, t * p->W))), cg_iota(c));
        valid[t] = LLVMBuildICmp(b, LLVMIntSLT, idx, cg_splat(c, k->kv_len), "");
        kv[t] = kvec(k, add(c, k->kb, cg_i64(c, t * p->W)));
        if (eval) {
            /* key-only input reads (doc[b, k], rank[b, k]) once per block, not per row */
            k->env.k = kv[t];
            k->env.tag = t;
            cg_expr_hoist(c, &k->env, k->mask, valid[t]);
        }
    }
    CgLoop li;
    LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), k->npad, cg_i64(c, 1), "mi");
    env_row(k, i);
    LLVMValueRef acc_any = cg_load(c, k->mbt, any_slot, 8), full = NULL;
    for (int t = 0; t < p->NT; t++) {
        LLVMValueRef m = valid[t];
        if (eval) {
            k->env.k = kv[t];
            k->env.tag = t;
            m = LLVMBuildAnd(b, cg_expr_vec(c, &k->env, k->mask, valid[t]), valid[t], "");
        }
        LLVMValueRef bits = LLVMBuildBitCast(b, m, k->mbt, "");
        cg_store(c, bits, cg_gep(c, k->mbt, k->MB, add(c, mul(c, i, cg_i64(c, p->NT)), cg_i64(c, t))), 1);
        acc_any = LLVMBuildOr(b, acc_any, bits, "");
        LLVMValueRef f = LLVMBuildICmp(b, LLVMIntEQ, bits, LLVMConstAllOnes(k->mbt), "");
        full = full ? LLVMBuildAnd(b, full, f, "") : f;
    }
    store_rowfull(k, i, full);
    cg_store(c, acc_any, any_slot, 8);
    cg_loop_end(c, &li);
    k->env.ncache = 0;
    k->env.tag = -1;
}

/* Up to this many rows in a chunk, scoring straight from K beats packing KT. */
static int dot_rows(const Plan *p) { return p->R > 8 ? p->R : 8; }

static Plan make_plan(const IrFunc *f);

/* Room for what the allocas do not show: spills, calls, the pieces' frames' own overhead. */
enum { STACK_SPILLS = 32 * 1024 };

int64_t cg_stack_bound(const IrFunc *f) {
    if (f->sched.vec_width != 4 && f->sched.vec_width != 8 && f->sched.vec_width != 16) return 0;
    Plan p = make_plan(f);
    int64_t W = p.W, BB = 4 * W;
    /* the tile function's scratch (Q, the ring of K^T and V blocks, acc, m, l, the lane bits),
     * the band or staircase chunk's scores, and a row group's P in a piece */
    int64_t big = ((int64_t)p.BQ * p.QK + W) * 4 + p.NRING * kt_floats(&p) * 4 + (int64_t)p.BQ * p.VDP * 4 +
                  (p.BQ + W) * 4 + (int64_t)(p.BQ + p.R) * W * 4 + (int64_t)p.BQ * p.NT * ((W + 7) / 8) +
                  (int64_t)p.NRING * p.BK * p.VDP * 4 + (BB * BB + 2 * BB) * 4 + (int64_t)p.R * p.BK * 4;
    /* the small ones (accumulator slots, the frame, tags) within an eighth and 16 KiB */
    return big + big / 8 + 16 * 1024 + STACK_SPILLS;
}

static Plan make_plan(const IrFunc *f) {
    Plan p;
    p.W = f->sched.vec_width;
    p.QK = f->qk_dim;
    p.VD = f->v_dim;
    p.VC = (p.VD + p.W - 1) / p.W;
    if (p.VC < 1) p.VC = 1;
    p.VDP = p.VC * p.W;
    p.BK = f->sched.block_k > 0 ? (f->sched.block_k + p.W - 1) / p.W * p.W : p.W;
    if (p.BK > 4 * p.W) p.BK = 4 * p.W;
    p.NT = p.BK / p.W;
    p.R = f->sched.rows > 0 ? f->sched.rows : 4;
    if (p.R > 16) p.R = 16;
    int bq = f->sched.chunk_q > 0 ? f->sched.chunk_q : f->sched.block_q > 0 ? f->sched.block_q : 64;
    /* a task of a residue-class mask holds block_q / r rows of each class */
    if (f->prune.enabled && f->prune.runs.with_q) bq = (int)((bq + f->prune.runs.mod - 1) / f->prune.runs.mod);
    /* keep the scratch (Q, acc) under ~256 KiB */
    while (bq > p.R && (int64_t)bq * (p.QK + p.VDP) * 4 > 256 * 1024) bq /= 2;
    p.BQ = (bq + p.R - 1) / p.R * p.R;
    /* chunks shorter than the task: a ring of packed blocks, K and V in up to 192 KiB (six
     * 64-key blocks at d = 64: a 256-wide window's chunk spans five), with Q and acc in ~256 */
    p.NRING = 1;
    int64_t ring_budget = 256 * 1024 - (int64_t)p.BQ * (p.QK + p.VDP) * 4;
    if (ring_budget > 192 * 1024) ring_budget = 192 * 1024;
    if (f->sched.chunk_q > 0 && f->sched.block_q > f->sched.chunk_q)
        while (p.NRING < 8 && (int64_t)(p.NRING + 1) * p.BK * (p.QK + p.VDP) * 4 <= ring_budget) p.NRING++;
    return p;
}

/* The few-rows body of a key block (decode): scores straight from K, row by row. */
static void body_few(Kern *k, bool unused) {
    (void)unused;
    Cg *c = k->c;
    const Plan *p = &k->p;
    LLVMValueRef nrows = add(c, k->last, cg_i64(c, 1));
    k->vfin_slot = NULL; /* K and V were not looked at: P.V keeps its lane selects */
    CgLoop ls, lr;
    if (k->grouped) {
        /* the heads of a group, row by row over sub-blocks of K and V that fit in half of L1
         * (~16 KiB; d=128: 16 keys), so every row's pass hits L1 while the next keys are
         * prefetched (measured ~+8% K/V bandwidth from memory against 32 keys) */
        int sub = decode_keys(k->f, p->W, p->NT) / p->W;
        k->wmax = sub;
        LLVMValueRef v0 = cg_loop_begin(c, &ls, cg_i64(c, 0), cg_i64(c, p->NT), cg_i64(c, sub), "dsub");
        LLVMValueRef v1 = add(c, v0, cg_i64(c, sub));
        LLVMValueRef r = cg_loop_begin(c, &lr, cg_i64(c, 0), nrows, cg_i64(c, 1), "dr");
        emit_group_loop(k, r, 1, false, true, v0, v1); /* full blocks only (emit_run) */
        cg_loop_end(c, &lr);
        cg_loop_end(c, &ls);
    } else {
        /* one variant for full and partial blocks: decode is bound by reading K and V */
        LLVMValueRef r = cg_loop_begin(c, &lr, cg_i64(c, 0), nrows, cg_i64(c, 1), "dr");
        k->part_rt = k->part;
        emit_group_loop(k, r, 1, true, true, NULL, NULL);
        k->part_rt = NULL;
        cg_loop_end(c, &lr);
    }
}

/* One pass over the block's V rows (keys before kn; past the end the last one): with `copy`,
 * each row to VS as f32; *vfin_slot = whether all are finite (their largest
 * exponent field by unsigned max, one cycle a vector where a chain of FMAs by zero waited on
 * its latency; all ones means inf or NaN), so the groups' P.V needs no selects. */
static void v_rows(Kern *k, LLVMValueRef kn, LLVMValueRef klast, bool copy) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    unsigned va = (unsigned)p->W * 4;
    LLVMValueRef expo = cg_splat(c, cg_i32(c, 0x7f800000));
    LLVMValueRef zs = cg_alloca(c, c->vi32, 1, va, "vz");
    cg_store(c, LLVMConstNull(c->vi32), zs, va);
    CgLoop lj;
    LLVMValueRef j = cg_loop_begin(c, &lj, cg_i64(c, 0), kn, cg_i64(c, 1), copy ? "vp" : "vc");
    LLVMValueRef voff = mul(c, krow(k, cg_smin(c, add(c, k->kb, j), klast)), k->vs2);
    LLVMValueRef dst = copy ? cg_gep(c, c->f32, k->VS, mul(c, j, cg_i64(c, p->VDP))) : NULL;
    LLVMValueRef z = cg_load(c, c->vi32, zs, va);
    for (int ch = 0; ch < p->VC; ch++) {
        LLVMValueRef v = cg_load_vec(c, k->dt, k->vbase, add(c, voff, cg_i64(c, ch * p->W)), tail_lanes(p->VD, p->W, ch));
        if (copy) cg_store(c, v, cg_gep(c, c->f32, dst, cg_i64(c, ch * p->W)), va);
        z = cg_intr2(c, "llvm.umax", z, LLVMBuildAnd(b, LLVMBuildBitCast(b, v, c->vi32, ""), expo, ""));
    }
    cg_store(c, z, zs, va);
    cg_loop_end(c, &lj);
    LLVMValueRef bad = cg_hor(c, LLVMBuildICmp(b, LLVMIntEQ, cg_load(c, c->vi32, zs, va), expo, ""));
    cg_store(c, LLVMBuildNot(b, bad, ""), k->vfin_slot, 1);
}

/* The finiteness check alone, for a partial block (full blocks' P.V has no selects). */
static void vcheck(Kern *k, LLVMValueRef kn, LLVMValueRef klast) {
    Cg *c = k->c;
    cg_store(c, cg_bool(c, true), k->vfin_slot, 1);
    LLVMBasicBlockRef bchk = cg_block(c, "vcheck"), bgo = cg_block(c, "groups");
    LLVMBuildCondBr(c->b, k->part, bchk, bgo);
    LLVMPositionBuilderAtEnd(c->b, bchk);
    v_rows(k, kn, klast, false);
    LLVMBuildBr(c->b, bgo);
    LLVMPositionBuilderAtEnd(c->b, bgo);
}

/* K of a key block packed transposed for the row groups; V rows copied to VS (vpack_on); for
 * a partial block, whether its V rows are all finite (*vfin_slot). */
static void body_pack(Kern *k, bool unused) {
    (void)unused;
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    /* the block's keys before the chunk's end only (a tail block packs its W-vectors of keys);
     * into a ring, the whole block before the run's end, so that the next chunks (whose end
     * lies further) find it as they need it */
    LLVMValueRef kend = p->NRING > 1 ? k->nkeys : k->kv_len;
    LLVMValueRef kn = cg_smin(c, LLVMBuildSub(b, kend, k->kb, ""), cg_i64(c, p->BK));
    LLVMValueRef klast = LLVMBuildSub(b, kend, cg_i64(c, 1), "");
    {
        /* pack K transposed, W keys at a time: KT[d][j] = K[kb + j][d] (keys past the end
         * repeat the last one); whole chunks of d in a runtime loop, a tail chunk after it */
        CgLoop lj;
        LLVMValueRef j0 = cg_loop_begin(c, &lj, cg_i64(c, 0), kn, cg_i64(c, p->W), "kj");
        LLVMValueRef koff[64];
        for (int r = 0; r < p->W; r++) {
            LLVMValueRef key = add(c, add(c, k->kb, j0), cg_i64(c, r));
            koff[r] = mul(c, krow(k, cg_smin(c, key, klast)), k->ks2);
        }
        int whole = p->QK / p->W;
        for (int part = 0; part < 2; part++) {
            int n = part ? p->QK - whole * p->W : p->W;
            if (n <= 0 || (!part && whole == 0)) continue;
            CgLoop lc;
            LLVMValueRef ch = part ? cg_i64(c, whole) : cg_loop_begin(c, &lc, cg_i64(c, 0), cg_i64(c, whole), cg_i64(c, 1), "kc");
            LLVMValueRef d0 = mul(c, ch, cg_i64(c, p->W));
            LLVMValueRef rows[64];
            /* keys past the end repeat the last one: their lanes are masked in every use */
            for (int r = 0; r < p->W; r++) rows[r] = cg_load_vec(c, k->dt, k->kbase, add(c, koff[r], d0), n);
            transpose(c, rows);
            for (int l = 0; l < n; l++) {
                LLVMValueRef dst = cg_gep(c, c->f32, k->KT, add(c, mul(c, add(c, d0, cg_i64(c, l)), cg_i64(c, p->BK)), j0));
                cg_store(c, rows[l], dst, (unsigned)p->W * 4);
            }
            if (!part) cg_loop_end(c, &lc);
        }
        cg_loop_end(c, &lj);
    }
    if (!k->vpack) {
        vcheck(k, kn, klast);
        return;
    }
    /* V rows that share L1 sets (a residue class's, or a [batch, seq, heads, dim] tensor's
     * rows 4 KiB apart): P.V reads them from VS; else (known at run time) from the tensor */
    if (LLVMIsAConstantInt(k->vpack_on)) {
        v_rows(k, kn, klast, true);
        return;
    }
    LLVMBasicBlockRef bvp = cg_block(c, "vpack"), bvno = cg_block(c, "vdirect"), bvdone = cg_block(c, "vdone");
    LLVMBuildCondBr(b, k->vpack_on, bvp, bvno);
    LLVMPositionBuilderAtEnd(b, bvp);
    v_rows(k, kn, klast, true);
    LLVMBuildBr(b, bvdone);
    LLVMPositionBuilderAtEnd(b, bvno);
    vcheck(k, kn, klast);
    LLVMBuildBr(b, bvdone);
    LLVMPositionBuilderAtEnd(b, bvdone);
}

/* The row groups of a key block, K packed: partial blocks (masked) or full ones. */
static void body_groups(Kern *k, bool masked) {
    Cg *c = k->c;
    const Plan *p = &k->p;
    CgLoop lg;
    LLVMValueRef g = cg_loop_begin(c, &lg, cg_i64(c, 0), k->npad, cg_i64(c, p->R), "g");
    /* in a partial block, the groups that see all of it run the full blocks' code (after the
     * others, from the full piece); a full block runs every group there */
    LLVMValueRef skip = masked ? group_full(k, g)
                               : LLVMBuildAnd(c->b, k->part, LLVMBuildNot(c->b, group_full(k, g), ""), "");
    LLVMBasicBlockRef bskip = cg_block(c, "gskip"), bgo = cg_block(c, "gdo");
    LLVMBuildCondBr(c->b, skip, bskip, bgo);
    LLVMPositionBuilderAtEnd(c->b, bskip);
    cg_loop_continue(c, &lg);
    LLVMBuildBr(c->b, bgo);
    LLVMPositionBuilderAtEnd(c->b, bgo);
    if (p->NRING > 1) {
        /* a chunk's last block: the next chunk's new keys and its q rows (R a group) toward L1
         * (its o rows as well: no better) */
        LLVMBasicBlockRef bpf = cg_block(c, "gpf"), bpd = cg_block(c, "gpf_done");
        LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSGE, add(c, k->kb, cg_i64(c, p->BK)), k->kv_len, ""), bpf, bpd);
        LLVMPositionBuilderAtEnd(c->b, bpf);
        LLVMTypeRef et = cg_elem_type(c, k->dt);
        for (int r = 0; r < p->R; r++) {
            prefetch_key(k, cg_i64(c, 0), add(c, k->kv_len, add(c, g, cg_i64(c, r))));
            LLVMValueRef next = add(c, add(c, k->qc, cg_i64(c, p->BQ)), add(c, g, cg_i64(c, r)));
            prefetch_lines(k, cg_gep(c, et, k->qbase, row_off(k, next, k->qs1, k->qs2)), row_lines(k, p->QK));
        }
        LLVMBuildBr(c->b, bpd);
        LLVMPositionBuilderAtEnd(c->b, bpd);
    }
    if (masked)
        emit_group_loop(k, g, p->R, true, false, NULL, NULL);
    else
        emit_group(k, g);
    cg_loop_end(c, &lg);
}

/* A row's lse from its max m and sum l: m + log(l), -inf for a row that saw nothing (l = 0;
 * otherwise l >= 1, the max term's own 1), NaN when l is (cg_seen). */
static LLVMValueRef row_lse(Cg *c, LLVMValueRef m, LLVMValueRef l) {
    LLVMValueRef pos = cg_seen(c, l, 0.0);
    LLVMValueRef lg = cg_log_pos(c, cg_intr2(c, "llvm.maxnum", l, cg_f32(c, 1.0)));
    LLVMValueRef lse = LLVMBuildSelect(c->b, pos, LLVMBuildFAdd(c->b, m, lg, ""), cg_f32(c, -INFINITY), "");
    return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealUNO, l, l, ""), l, lse, "");
}

/* i1: the kernel resumes from the (o, lse) in the output (a->resume, with an lse to read). */
static LLVMValueRef resuming(Kern *k) {
    Cg *c = k->c;
    return LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntNE, k->resume, cg_i64(c, 0), ""), LLVMBuildIsNotNull(c->b, k->lsep, ""),
                        "resuming");
}

/* Rows [r0, r1) of the current run: chunks of BQ rows, each over the run's keys. */
static void emit_run(Kern *k, LLVMValueRef q0, LLVMValueRef q1) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    const IrFunc *f = k->f;
    CgEnv *env = &k->env;
    LLVMValueRef kv_len = env->kv_len;
    unsigned va = (unsigned)(p->W * 4);
    if (p->NRING > 1) {
        /* an empty ring: this run's K/V rows are new */
        k->tag_kb = cg_alloca(c, c->i64, p->NRING, 8, "ringkb");
        for (int s = 0; s < p->NRING; s++) cg_store(c, cg_i64(c, -1), cg_gep(c, c->i64, k->tag_kb, cg_i64(c, s)), 8);
    }
    /* chunks of BQ rows */
    CgLoop lq;
    LLVMValueRef qc = cg_loop_begin(c, &lq, q0, q1, cg_i64(c, p->BQ), "qc");
    k->qc = qc;
    LLVMValueRef nrows = cg_smin(c, cg_i64(c, p->BQ), LLVMBuildSub(b, q1, qc, ""));
    k->last = LLVMBuildSub(b, nrows, cg_i64(c, 1), "last");
    /* rows rounded up to whole groups of R: the padding rows repeat the last row */
    k->npad = mul(c, LLVMBuildSDiv(b, add(c, nrows, cg_i64(c, p->R - 1)), cg_i64(c, p->R), ""), cg_i64(c, p->R));
    k->qlo = add(c, k->qpos0, mul(c, qc, cg_i64(c, k->qstep)));
    LLVMValueRef qhi = qpos_row(k, k->last);
    if (k->grouped) {
        /* rows of several heads: the chunk's positions are (within) the task's */
        k->qlo = k->qpos0;
        qhi = add(c, k->qpos0, LLVMBuildSub(b, k->gnq, cg_i64(c, 1), ""));
    }
    /* the tile function of a kernel with a group function meets few rows only in the tail
     * of a long prefill: it packs K for them too and has no few-rows piece to compile */
    LLVMValueRef few = !k->grouped && cg_group_size(f) ? cg_bool(c, false)
                     : LLVMBuildICmp(b, LLVMIntSLE, nrows, cg_i64(c, dot_rows(p)), "few");
    {
        /* pack Q (scaled to f32) and reset the softmax state; padded rows repeat the last */
        CgLoop li;
        LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), k->npad, cg_i64(c, 1), "qi");
        LLVMValueRef qoff = row_off(k, task_row(k, i), k->qs1, k->qs2);
        LLVMValueRef dst = cg_gep(c, c->f32, k->Qs, mul(c, i, cg_i64(c, p->QK)));
        LLVMValueRef sc = cg_splat(c, cg_f32(c, f->scale));
        for (int ch = 0; !k->qdirect && ch * p->W < p->QK; ch++) {
            LLVMValueRef v = cg_load_vec(c, k->dt, k->qbase, add(c, qoff, cg_i64(c, ch * p->W)), tail_lanes(p->QK, p->W, ch));
            cg_store(c, LLVMBuildFMul(b, v, sc, ""), cg_gep(c, c->f32, dst, cg_i64(c, ch * p->W)), 4);
        }
        cg_store(c, cg_f32(c, -INFINITY), cg_gep(c, c->f32, k->M, i), 4);
        cg_store(c, LLVMConstNull(c->vf), cg_gep(c, c->f32, k->L, mul(c, i, cg_i64(c, p->W))), va);
        for (int ch = 0; ch < p->VC; ch++)
            cg_store(c, LLVMConstNull(c->vf), cg_gep(c, c->f32, k->ACC, add(c, mul(c, i, cg_i64(c, p->VDP)), cg_i64(c, ch * p->W))), va);
        cg_loop_end(c, &li);
    }
    {
        /* a->resume: start from the (o, lse) in the output (m = lse, l = 1, acc = o: the same
         * softmax state), so this kernel's keys merge with the earlier ones in place */
        LLVMBasicBlockRef bres = cg_block(c, "resume"), bgo = cg_block(c, "fresh");
        LLVMBuildCondBr(b, resuming(k), bres, bgo);
        LLVMPositionBuilderAtEnd(b, bres);
        CgLoop li;
        LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), k->npad, cg_i64(c, 1), "ri");
        LLVMValueRef row = task_row(k, i);
        LLVMValueRef lse = cg_load(c, c->f32, cg_gep(c, c->f32, k->lsebase, row_off(k, row, k->ls1, k->ls2)), 4);
        LLVMValueRef seen = cg_seen(c, lse, -INFINITY); /* a NaN lse resumes as NaN */
        cg_store(c, LLVMBuildSelect(b, seen, lse, cg_f32(c, -INFINITY), ""), cg_gep(c, c->f32, k->M, i), 4);
        LLVMValueRef l1 = LLVMBuildInsertElement(b, LLVMConstNull(c->vf), cg_f32(c, 1.0), cg_i32(c, 0), "");
        cg_store(c, LLVMBuildSelect(b, seen, l1, LLVMConstNull(c->vf), ""), cg_gep(c, c->f32, k->L, mul(c, i, cg_i64(c, p->W))), va);
        LLVMValueRef ooff = row_off(k, row, k->os1, k->os2);
        for (int ch = 0; ch < p->VC; ch++) {
            LLVMValueRef ov = cg_load_vec(c, k->dt, k->obase, add(c, ooff, cg_i64(c, ch * p->W)), tail_lanes(p->VD, p->W, ch));
            ov = LLVMBuildSelect(b, seen, ov, LLVMConstNull(c->vf), "");
            cg_store(c, ov, cg_gep(c, c->f32, k->ACC, add(c, mul(c, i, cg_i64(c, p->VDP)), cg_i64(c, ch * p->W))), va);
        }
        cg_loop_end(c, &li);
        LLVMBuildBr(b, bgo);
        LLVMPositionBuilderAtEnd(b, bgo);
    }

    /* the keys any row of the chunk may see: [klo, kend) */
    LLVMValueRef klo = cg_i64(c, 0), kend = k->nkeys;
    LLVMValueRef alltrue = cg_lane_mask(c, p->W);
    bool prune = f->prune.enabled;
    {
        /* key positions [lo, hi]: the task's key range (a split of the keys), within the
         * prune bounds; then this run's key indices */
        LLVMValueRef kmax = LLVMBuildSub(b, kv_len, cg_i64(c, 1), "");
        LLVMValueRef lo = cg_smin(c, cg_smax(c, k->kbeg, cg_i64(c, 0)), kv_len);
        LLVMValueRef hi = cg_smin(c, cg_smax(c, LLVMBuildSub(b, k->kendp, cg_i64(c, 1), ""), cg_i64(c, -1)), kmax);
        if (prune) {
            env->qmin = k->qlo;
            env->qmax = qhi;
            env->kmin = cg_i64(c, 0);
            env->kmax = kmax;
            if (k->grouped) env->h = row_head(k, qc); /* the mask does not read h (cg_group_size) */
            lo = cg_smax(c, lo, cg_expr(c, env, f->prune.k_lo, alltrue).v);
            hi = cg_smin(c, hi, cg_expr(c, env, f->prune.k_hi, alltrue).v);
            lo = cg_smin(c, lo, kv_len);
            hi = cg_smax(c, hi, cg_i64(c, -1));
        }
        klo = cg_smax(c, klo, keys_below(k, lo));
        kend = cg_smin(c, kend, keys_below(k, add(c, hi, cg_i64(c, 1))));
    }
    k->kv_len = kend; /* keys at or past kend are masked like the kv tail */

    /* key blocks */
    k->vfin_ring = cg_alloca(c, c->i1, p->NRING, 1, "vfin");
    frame_fill(k, false);
    CgLoop lk;
    k->kb = cg_loop_begin(c, &lk, klo, kend, cg_i64(c, p->BK), "kb");
    LLVMValueRef cls = cg_i32(c, 2);
    if (prune) {
        env->kmin = kpos(k, k->kb);
        env->kmax = kpos(k, LLVMBuildSub(b, cg_smin(c, add(c, k->kb, cg_i64(c, p->BK)), kend), cg_i64(c, 1), ""));
        LLVMValueRef may = cg_expr(c, env, f->prune.may_see, alltrue).v;
        LLVMValueRef all = cg_expr(c, env, f->prune.all_see, alltrue).v;
        cls = LLVMBuildSelect(b, may, LLVMBuildSelect(b, all, cg_i32(c, 1), cg_i32(c, 2), ""), cg_i32(c, 0), "cls");
        LLVMBasicBlockRef go = cg_block(c, "nonempty");
        LLVMBasicBlockRef skip = cg_block(c, "empty");
        LLVMBuildCondBr(b, may, go, skip);
        LLVMPositionBuilderAtEnd(b, skip);
        cg_loop_continue(c, &lk);
        LLVMBuildBr(b, go);
        LLVMPositionBuilderAtEnd(b, go);
    }
    LLVMValueRef tail = LLVMBuildICmp(b, LLVMIntSGT, add(c, k->kb, cg_i64(c, p->BK)), kend, "tail");
    LLVMValueRef part = LLVMBuildOr(b, tail, LLVMBuildICmp(b, LLVMIntEQ, cls, cg_i32(c, 2), ""), "part");
    {
        /* per-row lane masks of a partial block; skip the block when no lane is visible */
        LLVMBasicBlockRef bmask = cg_block(c, "rowmasks");
        LLVMBasicBlockRef after = cg_block(c, "pack");
        LLVMBuildCondBr(b, part, bmask, after);
        LLVMPositionBuilderAtEnd(b, bmask);
        LLVMValueRef any_slot = cg_alloca(c, k->mbt, 1, 8, "any");
        cg_store(c, LLVMConstNull(k->mbt), any_slot, 8);
        cg_store(c, LLVMConstInt(c->i8, 0, 0), k->anyfull, 1);
        LLVMValueRef evalm = LLVMBuildICmp(b, LLVMIntEQ, cls, cg_i32(c, 2), "");
        LLVMBasicBlockRef bev = cg_block(c, "evalmask");
        LLVMBasicBlockRef btl = cg_block(c, "tailonly");
        LLVMBasicBlockRef join = cg_block(c, "masksdone");
        LLVMBuildCondBr(b, evalm, bev, btl);
        LLVMPositionBuilderAtEnd(b, bev);
        emit_rowmasks(k, true, any_slot);
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, btl);
        emit_rowmasks(k, false, any_slot);
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, join);
        LLVMValueRef anyv = cg_load(c, k->mbt, any_slot, 8);
        LLVMBasicBlockRef skip = cg_block(c, "allmasked");
        LLVMValueRef none = LLVMBuildICmp(b, LLVMIntEQ, anyv, LLVMConstNull(k->mbt), "");
        if (!prune) none = cg_bool(c, false); /* -fno-prune: every tile is computed */
        LLVMBuildCondBr(b, none, skip, after);
        LLVMPositionBuilderAtEnd(b, skip);
        cg_loop_continue(c, &lk);
        LLVMBuildBr(b, after);
        LLVMPositionBuilderAtEnd(b, after);
    }
    /* few rows (decode): scores straight from K, row by row; else pack K once for all groups
     * (into the block's ring slot, unless it holds the block already) */
    LLVMBasicBlockRef bdot = cg_block(c, "dotrows");
    LLVMBasicBlockRef bpack = cg_block(c, "packrows");
    LLVMBasicBlockRef bdone = cg_block(c, "blockdone");
    k->part = part;
    LLVMValueRef rslot = NULL, rhit = NULL;
    k->vfin_slot = k->vfin_ring;
    if (p->NRING > 1) {
        rslot = LLVMBuildSRem(b, LLVMBuildSDiv(b, k->kb, cg_i64(c, p->BK), ""), cg_i64(c, p->NRING), "slot");
        k->KT = cg_gep(c, c->f32, k->KTring, mul(c, rslot, cg_i64(c, kt_floats(p))));
        if (k->vpack) k->VS = cg_gep(c, c->f32, k->VSring, mul(c, rslot, cg_i64(c, (int64_t)p->BK * p->VDP)));
        k->vfin_slot = cg_gep(c, c->i1, k->vfin_ring, rslot);
        LLVMValueRef tkb = cg_load(c, c->i64, cg_gep(c, c->i64, k->tag_kb, rslot), 8);
        rhit = LLVMBuildICmp(b, LLVMIntEQ, tkb, k->kb, "hit");
    }
    frame_fill(k, true);
    if (k->grouped) few = LLVMBuildAnd(b, few, LLVMBuildNot(b, part, ""), "");
    LLVMBuildCondBr(b, few, bdot, bpack);
    LLVMPositionBuilderAtEnd(b, bdot);
    if (k->grouped) {
        /* the heads of a group (decode): full blocks, without lane selects (the hot loop of
         * decode, fully optimized); partial ones (the kv tail) take the packed path */
        emit_piece(k, "few", true, body_few, false);
    } else if (!LLVMIsConstant(few)) {
        emit_piece(k, "few", false, body_few, false);
    }
    LLVMBuildBr(b, bdone);
    LLVMPositionBuilderAtEnd(b, bpack);
    if (rhit) {
        LLVMBasicBlockRef bdo = cg_block(c, "ringpack"), bhas = cg_block(c, "ringhit");
        LLVMBuildCondBr(b, rhit, bhas, bdo);
        LLVMPositionBuilderAtEnd(b, bdo);
        emit_piece(k, "pack", false, body_pack, false);
        cg_store(c, k->kb, cg_gep(c, c->i64, k->tag_kb, rslot), 8);
        LLVMBuildBr(b, bhas);
        LLVMPositionBuilderAtEnd(b, bhas);
    } else {
        emit_piece(k, "pack", false, body_pack, false);
    }
    {
        /* row groups, in the piece of partial blocks or of full ones */
        LLVMBasicBlockRef bm = cg_block(c, "groups_masked");
        LLVMBasicBlockRef bf = cg_block(c, "groups_full");
        LLVMBasicBlockRef join = cg_block(c, "groups_done");
        LLVMBuildCondBr(b, part, bm, bf);
        LLVMPositionBuilderAtEnd(b, bm);
        k->vs_use = k->vpack;
        emit_piece(k, "part", false, body_groups, true);
        if (prune)
            LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntNE, cg_load(c, c->i8, k->anyfull, 1), LLVMConstInt(c->i8, 0, 0), ""), bf, join);
        else
            LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, bf);
        emit_piece(k, "full", false, body_groups, false);
        k->vs_use = false;
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, join);
    }
    LLVMBuildBr(b, bdone);
    LLVMPositionBuilderAtEnd(b, bdone);
    cg_loop_end(c, &lk);
    k->KT = k->KTring; /* values that dominate what follows */
    k->VS = k->VSring;
    k->vfin_slot = k->vfin_ring;

    {
        /* o = acc / l (zeros for a row that saw nothing), lse = m + log(l) */
        CgLoop li;
        LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), nrows, cg_i64(c, 1), "oi");
        LLVMValueRef l = cg_hsum(c, cg_load(c, c->vf, cg_gep(c, c->f32, k->L, mul(c, i, cg_i64(c, p->W))), va));
        LLVMValueRef m = cg_load(c, c->f32, cg_gep(c, c->f32, k->M, i), 4);
        LLVMValueRef pos = cg_seen(c, l, 0.0);
        LLVMValueRef inv = LLVMBuildSelect(b, pos, LLVMBuildFDiv(b, cg_f32(c, 1.0), l, ""), cg_f32(c, 0.0), "");
        LLVMValueRef is = cg_splat(c, inv);
        LLVMValueRef row = add(c, qc, i);
        LLVMValueRef ooff = row_off(k, row, k->os1, k->os2);
        for (int ch = 0; ch < p->VC; ch++) {
            LLVMValueRef v = cg_load(c, c->vf, cg_gep(c, c->f32, k->ACC, add(c, mul(c, i, cg_i64(c, p->VDP)), cg_i64(c, ch * p->W))), va);
            /* select, not multiply: a NaN acc of an unseen row must still give 0 */
            v = LLVMBuildSelect(b, pos, LLVMBuildFMul(b, v, is, ""), LLVMConstNull(c->vf), "");
            cg_store_vec(c, k->dt, v, k->obase, add(c, ooff, cg_i64(c, ch * p->W)), tail_lanes(p->VD, p->W, ch));
        }
        LLVMBasicBlockRef wl = cg_block(c, "lse");
        LLVMBasicBlockRef nl = cg_block(c, "nolse");
        LLVMBuildCondBr(b, LLVMBuildIsNotNull(b, k->lsep, ""), wl, nl);
        LLVMPositionBuilderAtEnd(b, wl);
        cg_store(c, row_lse(c, m, l), cg_gep(c, c->f32, k->lsebase, row_off(k, row, k->ls1, k->ls2)), 4);
        LLVMBuildBr(b, nl);
        LLVMPositionBuilderAtEnd(b, nl);
        cg_loop_end(c, &li);
    }
    cg_loop_end(c, &lq);
}

/* ---- Exact bands ----
 * A mask that keeps, for the row at position x, exactly the keys [x - hi - w + 1, x - hi]
 * (w a multiple of W up to 4W: a narrow local window, the band of Sparse Transformer's
 * strided pattern) crosses the key blocks as a staircase, and a group of adjacent rows spans
 * w + 3 keys: at w = 64, 5 vectors of scores and P.V for 4 of work. Rows W apart have windows
 * exactly a vector apart, so the group here is rows s, s + W, s + 2W and s + 3W of a 4W-row
 * chunk: it reads w/W + 3 key vectors, each row its own w/W of them, every lane visible. No lane
 * is masked, the softmax takes a row's whole window in one pass, and P.V reads each V row once
 * for the rows that see it. The windows start at any key, so the K^T vectors are unaligned loads
 * from a buffer of two packed 4W-key blocks (the one before the chunk's keys and the chunk's),
 * kept as a ring of two slots with the first one mirrored after the second: each chunk packs
 * one new block, and both of its blocks are adjacent in one of the two orders. Rows whose keys
 * reach past [0, kv_len) or the task's key range (the first chunk of a sequence, the kv tail,
 * ragged ends) run the general code. */

/* The width w of an exact band the band groups take (0: none), with its offset *hi: a
 * multiple of W up to 4W. */
static int band_width(const IrFunc *f, int W, int64_t *hi) {
    int64_t w = ir_prune_band(f, hi);
    if (f->prune.runs.mod >= 2 || w < W || w > 4 * W || w % W) return 0;
    return (int)w;
}

/* Whether the band groups can take the kernel: f32 rows read in place (qdirect), whole vectors
 * of q/k and v, the score unmodified, and the band buffers (K^T and V of `blocks` blocks of 4W
 * keys: 3 for a band, 1 for a staircase) in the ring's memory, so the band path adds no stack
 * but the chunk's scores (a band at d64: 3 slots of the ring's 6, d128 all 3; not d256, whose
 * ring is one slot). */
static bool band_fits(const Kern *k, int blocks) {
    const Plan *p = &k->p;
    int64_t cs = 4 * blocks * (int64_t)p->W;
    return k->qdirect && !k->f->score && p->QK % p->W == 0 && p->VD % p->W == 0 && k->vpack &&
           (int64_t)p->NRING * kt_floats(p) >= (int64_t)p->QK * cs && (int64_t)p->NRING * p->BK >= cs;
}

/* Packs 4W keys from key0 into the band buffers at column col (and col + 8W when mirror):
 * KTB[d][col + j] = K[key0 + j][d], VSB[col + j][:] = V[key0 + j]; keys past kmax (if not
 * NULL) read key kmax instead. */
static void band_pack(Kern *k, LLVMValueRef KTB, LLVMValueRef VSB, LLVMValueRef key0, LLVMValueRef col,
                      LLVMValueRef mirror, LLVMValueRef kmax) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    int W = p->W, BB = 4 * W, CS = k->bcs;
    unsigned va = (unsigned)W * 4;
    LLVMValueRef col2 = LLVMBuildSelect(b, mirror, add(c, col, cg_i64(c, 2 * BB)), col, "col2");
    /* W keys at a time, each key's row read whole before the next W (a row's lines together:
     * from memory the hardware prefetchers follow that, not a column of lines) */
    CgLoop lk, ld;
    LLVMValueRef jj = cg_loop_begin(c, &lk, cg_i64(c, 0), cg_i64(c, BB), cg_i64(c, W), "bkj");
    LLVMValueRef d0 = cg_loop_begin(c, &ld, cg_i64(c, 0), cg_i64(c, p->QK), cg_i64(c, W), "bkd");
    LLVMValueRef rows[64];
    for (int r = 0; r < W; r++) {
        LLVMValueRef key = add(c, key0, add(c, jj, cg_i64(c, r)));
        if (kmax) key = cg_smin(c, key, kmax);
        rows[r] = cg_load_vec(c, ATTN_F32, k->kbase, add(c, mul(c, key, k->ks2), d0), W);
    }
    transpose(c, rows);
    for (int l = 0; l < W; l++) {
        LLVMValueRef rowi = mul(c, add(c, d0, cg_i64(c, l)), cg_i64(c, CS));
        cg_store(c, rows[l], cg_gep(c, c->f32, KTB, add(c, rowi, add(c, col, jj))), va);
        cg_store(c, rows[l], cg_gep(c, c->f32, KTB, add(c, rowi, add(c, col2, jj))), va);
    }
    cg_loop_end(c, &ld);
    cg_loop_end(c, &lk);
    CgLoop lj;
    LLVMValueRef j = cg_loop_begin(c, &lj, cg_i64(c, 0), cg_i64(c, BB), cg_i64(c, 1), "bvj");
    LLVMValueRef vkey = add(c, key0, j);
    LLVMValueRef src = mul(c, kmax ? cg_smin(c, vkey, kmax) : vkey, k->vs2);
    for (int ch = 0; ch < p->VC; ch++) {
        LLVMValueRef v = cg_load_vec(c, ATTN_F32, k->vbase, add(c, src, cg_i64(c, ch * W)), W);
        LLVMValueRef e = cg_i64(c, ch * W);
        cg_store(c, v, cg_gep(c, c->f32, VSB, add(c, mul(c, add(c, col, j), cg_i64(c, p->VDP)), e)), va);
        cg_store(c, v, cg_gep(c, c->f32, VSB, add(c, mul(c, add(c, col2, j), cg_i64(c, p->VDP)), e)), va);
    }
    cg_loop_end(c, &lj);
}

/* rows x n vector accumulators (slots the optimizer keeps in registers), zeroed */
static void band_accs(Cg *c, LLVMValueRef (*acc)[4], int rows, int n, const char *name) {
    unsigned va = (unsigned)c->W * 4;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++) {
            acc[r][j] = cg_alloca(c, c->vf, 1, va, name);
            cg_store(c, LLVMConstNull(c->vf), acc[r][j], va);
        }
}

/* The scores of group s: rows row[r] = c + s + W r into the chunk's S at rows s + W r. Key
 * vector u of the group starts at buffer column a0 + W u + sh (a0 a multiple of W, sh in
 * [0, W) known here), taken from the two aligned vectors around it by one lane shift
 * (valignd) rather than a load across cache lines. Row r's window is vectors r .. r + nv - 1;
 * or, for a staircase (lastm given, sh 0), vectors 0 .. r, the last one's lanes where lastm is
 * set (the others -inf). */
static int band_first(bool tri, int r) { return tri ? 0 : r; }
static int band_count(bool tri, int r, int nv) { return tri ? r + 1 : nv; }

static void band_scores(Kern *k, LLVMValueRef KTB, const LLVMValueRef *row, LLVMValueRef a0, int sh, int nv,
                        LLVMValueRef S, LLVMValueRef s, LLVMValueRef lastm) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    enum { R = 4 };
    bool tri = lastm != NULL;
    if (tri) nv = R;
    int W = p->W, BB = 4 * W, CS = k->bcs, NU = tri ? R : nv + R - 1;
    unsigned va = (unsigned)W * 4;
    LLVMValueRef mask[64];
    for (int i = 0; i < W; i++) mask[i] = cg_i32(c, sh + i);
    LLVMValueRef shuf = LLVMConstVector(mask, (unsigned)W);
    LLVMValueRef sacc[R][4];
    band_accs(c, sacc, R, nv, "bs");
    CgLoop ld;
    LLVMValueRef d = cg_loop_begin(c, &ld, cg_i64(c, 0), cg_i64(c, p->QK), cg_i64(c, 4), "bd");
    LLVMValueRef acc[R][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < band_count(tri, r, nv); t++) acc[r][t] = cg_load(c, c->vf, sacc[r][t], va);
    for (int dd = 0; dd < 4; dd++) {
        LLVMValueRef dc = add(c, d, cg_i64(c, dd));
        LLVMValueRef at = cg_gep(c, c->f32, KTB, add(c, mul(c, dc, cg_i64(c, CS)), a0));
        LLVMValueRef al[9], kv[8];
        /* every third vector by an unaligned load, the others by a shift of two aligned ones:
         * loads and shuffles in balance (band 64, 1 head: 0.398 ms against 0.428 with shifts
         * alone and 0.416 with loads alone) */
        for (int u = 0; u < NU + (sh > 0); u++) al[u] = cg_load(c, c->vf, cg_gep(c, c->f32, at, cg_i64(c, (int64_t)u * W)), va);
        for (int u = 0; u < NU; u++) {
            if (!sh)
                kv[u] = al[u];
            else if (u % 3 == 0)
                kv[u] = cg_load(c, c->vf, cg_gep(c, c->f32, at, cg_i64(c, (int64_t)u * W + sh)), 4);
            else
                kv[u] = LLVMBuildShuffleVector(b, al[u], al[u + 1], shuf, "");
        }
        for (int r = 0; r < R; r++) {
            LLVMValueRef qs = cg_load(c, c->f32, cg_gep(c, c->f32, k->qbase, add(c, mul(c, row[r], k->qs2), dc)), 4);
            LLVMValueRef qv = cg_splat(c, qs);
            for (int t = 0; t < band_count(tri, r, nv); t++)
                acc[r][t] = cg_fma(c, qv, kv[band_first(tri, r) + t], acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < band_count(tri, r, nv); t++) cg_store(c, acc[r][t], sacc[r][t], va);
    cg_loop_end(c, &ld);
    for (int r = 0; r < R; r++) {
        LLVMValueRef at = mul(c, add(c, s, cg_i64(c, (int64_t)r * W)), cg_i64(c, BB));
        for (int t = 0; t < band_count(tri, r, nv); t++) {
            LLVMValueRef v = cg_load(c, c->vf, sacc[r][t], va);
            if (tri && t == r) v = LLVMBuildSelect(b, lastm, v, cg_splat(c, cg_f32(c, -INFINITY)), "");
            cg_store(c, v, cg_gep(c, c->f32, S, add(c, at, cg_i64(c, (int64_t)t * W))), va);
        }
    }
}

/* Chunk row i's softmax over its whole window, in place (S to P): its max to M[i], its sum to
 * L[i]. */
static void band_softmax(Kern *k, LLVMValueRef S, LLVMValueRef M, LLVMValueRef L, LLVMValueRef i, int nv) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    int W = k->p.W, BB = 4 * W;
    unsigned va = (unsigned)W * 4;
    LLVMValueRef sc = cg_splat(c, cg_f32(c, k->f->scale));
    LLVMValueRef at = cg_gep(c, c->f32, S, mul(c, i, cg_i64(c, BB)));
    LLVMValueRef sv[4], mx = NULL;
    for (int t = 0; t < nv; t++) {
        sv[t] = LLVMBuildFMul(b, cg_load(c, c->vf, cg_gep(c, c->f32, at, cg_i64(c, (int64_t)t * W)), va), sc, "");
        mx = mx ? cg_fmax(c, mx, sv[t]) : sv[t];
    }
    LLVMValueRef m = cg_hmax(c, mx);
    LLVMValueRef mv = cg_splat(c, m), sum = NULL;
    for (int t = 0; t < nv; t++) {
        LLVMValueRef pv = cg_exp(c, LLVMBuildFSub(b, sv[t], mv, ""));
        cg_store(c, pv, cg_gep(c, c->f32, at, cg_i64(c, (int64_t)t * W)), va);
        sum = sum ? LLVMBuildFAdd(b, sum, pv, "") : pv;
    }
    cg_store(c, m, cg_gep(c, c->f32, M, i), 4);
    cg_store(c, cg_hsum(c, sum), cg_gep(c, c->f32, L, i), 4);
}

/* Group s's P.V and output: rows row[r] (their scratch rows s + W r), row r's window at buffer
 * column off0 + W r. For a staircase (lanes given), row r's window is vectors 0 .. r from off0,
 * the last one's first `lanes` lanes, and rows whose present[r] is false are not written. */
static void band_pv(Kern *k, LLVMValueRef VSB, LLVMValueRef P, LLVMValueRef M, LLVMValueRef L, const LLVMValueRef *row,
                    const LLVMValueRef *present, LLVMValueRef off0, LLVMValueRef s, int nv, LLVMValueRef lanes) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    enum { R = 4 };
    bool tri = lanes != NULL;
    int W = p->W, BB = 4 * W, NU = tri ? R : nv + R - 1;
    unsigned va = (unsigned)W * 4;
    LLVMValueRef li[R];
    for (int r = 0; r < R; r++) li[r] = add(c, s, cg_i64(c, (int64_t)r * W));
    /* on resume, the earlier domains' (o, lse) as one more term: o = (e^(m - M) acc + e^(lse - M)
     * o_old) / (e^(m - M) l + e^(lse - M)), M = max(m, lse) */
    LLVMValueRef resume = resuming(k);
    LLVMValueRef wnew[R], wold[R], den[R], mtot[R];
    {
        LLVMValueRef slots[R][4];
        for (int r = 0; r < R; r++) {
            LLVMValueRef m = cg_load(c, c->f32, cg_gep(c, c->f32, M, li[r]), 4);
            LLVMValueRef l = cg_load(c, c->f32, cg_gep(c, c->f32, L, li[r]), 4);
            for (int i = 0; i < 4; i++) slots[r][i] = cg_alloca(c, c->f32, 1, 4, "bw");
            cg_store(c, cg_f32(c, 1.0), slots[r][0], 4);
            cg_store(c, cg_f32(c, 0.0), slots[r][1], 4);
            cg_store(c, l, slots[r][2], 4);
            cg_store(c, m, slots[r][3], 4);
        }
        LLVMBasicBlockRef brd = cg_block(c, "bres_read"), bj = cg_block(c, "bres_done");
        LLVMBuildCondBr(b, resume, brd, bj);
        LLVMPositionBuilderAtEnd(b, brd);
        for (int r = 0; r < R; r++) {
            LLVMValueRef m = cg_load(c, c->f32, slots[r][3], 4), l = cg_load(c, c->f32, slots[r][2], 4);
            LLVMValueRef mold = cg_load(c, c->f32, cg_gep(c, c->f32, k->lsebase, row_off(k, row[r], k->ls1, k->ls2)), 4);
            LLVMValueRef seen = cg_seen(c, mold, -INFINITY);
            LLVMValueRef m2 = cg_fmax(c, m, mold);
            LLVMValueRef a = LLVMBuildSelect(b, seen, cg_exp(c, LLVMBuildFSub(b, m, m2, "")), cg_f32(c, 1.0), "");
            LLVMValueRef o = LLVMBuildSelect(b, seen, cg_exp(c, LLVMBuildFSub(b, mold, m2, "")), cg_f32(c, 0.0), "");
            cg_store(c, a, slots[r][0], 4);
            cg_store(c, o, slots[r][1], 4);
            cg_store(c, LLVMBuildFAdd(b, LLVMBuildFMul(b, a, l, ""), o, ""), slots[r][2], 4);
            cg_store(c, LLVMBuildSelect(b, seen, m2, m, ""), slots[r][3], 4);
        }
        LLVMBuildBr(b, bj);
        LLVMPositionBuilderAtEnd(b, bj);
        for (int r = 0; r < R; r++) {
            wnew[r] = cg_load(c, c->f32, slots[r][0], 4);
            wold[r] = cg_load(c, c->f32, slots[r][1], 4);
            den[r] = cg_load(c, c->f32, slots[r][2], 4);
            mtot[r] = cg_load(c, c->f32, slots[r][3], 4);
        }
    }
    /* column groups of up to 4 vectors: key vector u of the group is vector u - first(r) of row
     * r; a staircase's last vector (u = r) only below `lanes`, so its lanes run in two loops,
     * with and without it (no P.V for a masked key, whose V row need not exist) */
    for (int c0 = 0; c0 < p->VC; c0 += 4) {
        int nc = p->VC - c0 < 4 ? p->VC - c0 : 4;
        LLVMValueRef oacc[R][4];
        band_accs(c, oacc, R, nc, "bo");
        for (int part = 0; part < (tri ? 2 : 1); part++) {
            CgLoop ll;
            LLVMValueRef l = cg_loop_begin(c, &ll, part ? lanes : cg_i64(c, 0), tri && !part ? lanes : cg_i64(c, W),
                                           cg_i64(c, 1), "bl");
            for (int u = 0; u < NU; u++) {
                int rlo = tri ? u + part : (u - nv + 1 > 0 ? u - nv + 1 : 0), rhi = tri || u > R - 1 ? R - 1 : u;
                if (rlo > rhi) continue;
                LLVMValueRef colv = add(c, off0, add(c, cg_i64(c, (int64_t)u * W), l));
                LLVMValueRef vrow = cg_gep(c, c->f32, VSB, mul(c, colv, cg_i64(c, p->VDP)));
                LLVMValueRef vv[4];
                for (int j = 0; j < nc; j++)
                    vv[j] = cg_load(c, c->vf, cg_gep(c, c->f32, vrow, cg_i64(c, (int64_t)(c0 + j) * W)), va);
                for (int r = rlo; r <= rhi; r++) {
                    LLVMValueRef pidx = add(c, add(c, mul(c, li[r], cg_i64(c, BB)), cg_i64(c, (int64_t)(u - band_first(tri, r)) * W)), l);
                    LLVMValueRef pb = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, P, pidx), 4));
                    for (int j = 0; j < nc; j++)
                        cg_store(c, cg_fma(c, pb, vv[j], cg_load(c, c->vf, oacc[r][j], va)), oacc[r][j], va);
                }
            }
            cg_loop_end(c, &ll);
        }
        for (int r = 0; r < R; r++) {
            LLVMBasicBlockRef bput = NULL;
            if (present) {
                LLVMBasicBlockRef bw = cg_block(c, "bput");
                bput = cg_block(c, "bput_done");
                LLVMBuildCondBr(b, present[r], bw, bput);
                LLVMPositionBuilderAtEnd(b, bw);
            }
            LLVMValueRef pos = cg_seen(c, den[r], 0.0);
            LLVMValueRef inv = LLVMBuildSelect(b, pos, LLVMBuildFDiv(b, cg_f32(c, 1.0), den[r], ""), cg_f32(c, 0.0), "");
            LLVMValueRef an = cg_splat(c, LLVMBuildFMul(b, wnew[r], inv, "")), ao = cg_splat(c, LLVMBuildFMul(b, wold[r], inv, ""));
            LLVMValueRef ooff = row_off(k, row[r], k->os1, k->os2);
            for (int j = 0; j < nc; j++) {
                LLVMValueRef at = add(c, ooff, cg_i64(c, (int64_t)(c0 + j) * W));
                LLVMValueRef v = LLVMBuildFMul(b, cg_load(c, c->vf, oacc[r][j], va), an, "");
                /* the old o, read only on resume, and only where it has weight */
                LLVMBasicBlockRef bo = cg_block(c, "bold"), bn = cg_block(c, "bold_done");
                LLVMValueRef vslot = cg_alloca(c, c->vf, 1, va, "bov");
                cg_store(c, v, vslot, va);
                LLVMBuildCondBr(b, resume, bo, bn);
                LLVMPositionBuilderAtEnd(b, bo);
                LLVMValueRef old = cg_load_vec(c, ATTN_F32, k->obase, at, W);
                LLVMValueRef has = LLVMBuildFCmp(b, LLVMRealOGT, wold[r], cg_f32(c, 0.0), "");
                cg_store(c, LLVMBuildSelect(b, has, cg_fma(c, ao, old, v), v, ""), vslot, va);
                LLVMBuildBr(b, bn);
                LLVMPositionBuilderAtEnd(b, bn);
                v = LLVMBuildSelect(b, pos, cg_load(c, c->vf, vslot, va), LLVMConstNull(c->vf), "");
                cg_store_vec(c, ATTN_F32, v, k->obase, at, W);
            }
            if (bput) {
                LLVMBuildBr(b, bput);
                LLVMPositionBuilderAtEnd(b, bput);
            }
        }
    }
    LLVMBasicBlockRef wl = cg_block(c, "blse_w"), nl = cg_block(c, "blse_nw");
    LLVMBuildCondBr(b, LLVMBuildIsNotNull(b, k->lsep, ""), wl, nl);
    LLVMPositionBuilderAtEnd(b, wl);
    for (int r = 0; r < R; r++) {
        LLVMValueRef at = cg_gep(c, c->f32, k->lsebase, row_off(k, row[r], k->ls1, k->ls2));
        LLVMValueRef lse = row_lse(c, mtot[r], den[r]);
        /* an absent row's slot (a valid row's) keeps its value */
        if (present) lse = LLVMBuildSelect(b, present[r], lse, cg_load(c, c->f32, at, 4), "");
        cg_store(c, lse, at, 4);
    }
    LLVMBuildBr(b, nl);
    LLVMPositionBuilderAtEnd(b, nl);
}

/* Rows [q0, q1) of a band kernel: the chunks whose keys all lie in range through the band
 * groups, the rows before and after them through emit_run. */
static void emit_band_task(Kern *k, LLVMValueRef q0, LLVMValueRef q1, LLVMValueRef q_off, int bw, int64_t bhi) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    int W = p->W, BB = 4 * W, nv = bw / W;
    LLVMValueRef CR = cg_i64(c, BB), hi = cg_i64(c, bhi);
    LLVMValueRef klo = cg_smax(c, k->kbeg, cg_i64(c, 0)), khi = cg_smin(c, k->kendp, k->kv_len);
    /* chunk c (rows c .. c + 4W) reads keys [c_pos - hi - 4W, c_pos - hi + 4W) */
    LLVMValueRef qa = cg_smin(c, cg_smax(c, q0, LLVMBuildSub(b, add(c, add(c, klo, hi), CR), q_off, "")), q1);
    LLVMValueRef cmax = LLVMBuildSub(b, LLVMBuildSub(b, add(c, khi, hi), CR, ""), q_off, "");
    LLVMValueRef n1 = LLVMBuildSDiv(b, LLVMBuildSub(b, q1, qa, ""), CR, "");
    LLVMValueRef n2 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGE, cmax, qa, ""),
                                      add(c, LLVMBuildSDiv(b, LLVMBuildSub(b, cmax, qa, ""), CR, ""), cg_i64(c, 1)), cg_i64(c, 0), "");
    LLVMValueRef n = cg_smin(c, n1, n2);
    LLVMValueRef qb = add(c, qa, mul(c, n, CR));
    {
        CgLoop ls;
        LLVMValueRef seg = cg_loop_begin(c, &ls, cg_i64(c, 0), cg_i64(c, 2), cg_i64(c, 1), "bseg");
        LLVMValueRef lo = LLVMBuildICmp(b, LLVMIntEQ, seg, cg_i64(c, 0), "");
        emit_run(k, LLVMBuildSelect(b, lo, q0, qb, ""), LLVMBuildSelect(b, lo, qa, q1, ""));
        cg_loop_end(c, &ls);
    }
    /* the buffers: the ring's memory (band_fits; the general rows are done with it) */
    LLVMValueRef KTB = k->KTring, VSB = k->VSring;
    k->bcs = 3 * BB;
    LLVMValueRef S = cg_alloca(c, c->f32, (int64_t)BB * BB, 64, "bsp"); /* a chunk's scores, then P */
    LLVMValueRef M = cg_alloca(c, c->f32, BB, 64, "bm"), L = cg_alloca(c, c->f32, BB, 64, "bl");
    LLVMBasicBlockRef bgo = cg_block(c, "band"), bdone = cg_block(c, "band_done");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, n, cg_i64(c, 0), ""), bgo, bdone);
    LLVMPositionBuilderAtEnd(b, bgo);
    LLVMValueRef kb0 = LLVMBuildSub(b, LLVMBuildSub(b, add(c, q_off, qa), hi, ""), CR, "kb0");
    band_pack(k, KTB, VSB, kb0, cg_i64(c, 0), cg_bool(c, true), NULL);
    CgLoop lj;
    LLVMValueRef j = cg_loop_begin(c, &lj, cg_i64(c, 0), n, cg_i64(c, 1), "bch");
    {
        LLVMValueRef blk = add(c, j, cg_i64(c, 1));
        LLVMValueRef odd = LLVMBuildTrunc(b, LLVMBuildAnd(b, blk, cg_i64(c, 1), ""), c->i1, "");
        band_pack(k, KTB, VSB, add(c, kb0, mul(c, blk, CR)), LLVMBuildSelect(b, odd, CR, cg_i64(c, 0), ""),
                  LLVMBuildNot(b, odd, ""), NULL);
        LLVMValueRef base = mul(c, LLVMBuildAnd(b, j, cg_i64(c, 1), ""), CR);
        LLVMValueRef c0 = add(c, qa, mul(c, j, CR));
        /* scores of every group (K^T stays in L1), the softmax of every row, then P.V (V stays) */
        /* group s's lane shift is (s + 1) mod W: the groups in the order of their shifts,
         * each with its shift a constant (straight-line code, no switch to mispredict) */
        for (int v = 0; v < W; v++) {
            LLVMValueRef s = cg_i64(c, (v + W - 1) % W);
            LLVMValueRef row[4];
            for (int r = 0; r < 4; r++) row[r] = add(c, add(c, c0, s), cg_i64(c, (int64_t)r * W));
            LLVMValueRef a0 = LLVMBuildSub(b, add(c, base, add(c, s, cg_i64(c, 1 + BB - bw))), cg_i64(c, v), "a0");
            band_scores(k, KTB, row, a0, v, nv, S, s, NULL);
            /* the next chunk's new K and V rows (4 a group) toward L1: from memory the pack's
             * reads of 64 rows at once stall, which the prefetchers do not foresee (band 64, 8
             * heads from memory: -11-16%; in cache: even). Q and O rows gained nothing. */
            prefetch_keys(k, k->kbase, k->vbase, add(c, add(c, kb0, mul(c, add(c, j, cg_i64(c, 2)), CR)), mul(c, s, cg_i64(c, 4))), 4);
        }
        CgLoop lsm;
        LLVMValueRef i = cg_loop_begin(c, &lsm, cg_i64(c, 0), CR, cg_i64(c, 4), "bsm");
        for (int r = 0; r < 4; r++) band_softmax(k, S, M, L, add(c, i, cg_i64(c, r)), nv); /* 4 chains */
        cg_loop_end(c, &lsm);
        CgLoop lpv;
        LLVMValueRef s = cg_loop_begin(c, &lpv, cg_i64(c, 0), cg_i64(c, W), cg_i64(c, 1), "bpv");
        LLVMValueRef row[4];
        for (int r = 0; r < 4; r++) row[r] = add(c, add(c, c0, s), cg_i64(c, (int64_t)r * W));
        band_pv(k, VSB, S, M, L, row, NULL, add(c, base, add(c, s, cg_i64(c, 1 + BB - bw))), s, nv, NULL);
        cg_loop_end(c, &lpv);
    }
    cg_loop_end(c, &lj);
    LLVMBuildBr(b, bdone);
    LLVMPositionBuilderAtEnd(b, bdone);
}

/* ---- Staircases in residue classes ----
 * A residue class's run of strided or atrous masks sees, in class keys, a staircase from a
 * fixed key: row i sees keys [jlo, i + E]. The general code covers it with row groups of
 * adjacent rows over a triangle of partial blocks, each evaluating the mask and rescaling an
 * online softmax. When the run's longest window fits in 4W keys (strided 64's classes at
 * 4096: 64 rows seeing 0 .. 63 keys), the band groups' machinery does it in one pass: the
 * window keys packed once, and rows grouped by their key count mod W, so that a group's rows
 * see 1, 2, 3 and 4 vectors whose last one is masked alike, a lane mask known per group. The
 * softmax takes each row's whole window at once and P.V skips the masked lanes. */
static void emit_tri_run(Kern *k, LLVMValueRef nv, int64_t tlo, int64_t thi) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const Plan *p = &k->p;
    int W = p->W, BB = 4 * W;
    LLVMValueRef one = cg_i64(c, 1), zero = cg_i64(c, 0);
    /* the run's keys [jlo, jend); row i's last key i + E (run rows and keys step alike) */
    LLVMValueRef jlo = cg_smax(c, keys_below(k, cg_i64(c, tlo)), keys_below(k, k->kbeg));
    LLVMValueRef jend = cg_smin(c, keys_below(k, k->kendp), k->nkeys);
    LLVMValueRef E = floor_div(c, LLVMBuildSub(b, LLVMBuildSub(b, k->qpos0, cg_i64(c, thi), ""), k->kpos0, ""), k->kstep);
    LLVMValueRef C = add(c, LLVMBuildSub(b, E, jlo, ""), one); /* row i sees C + i keys */
    LLVMValueRef nlast = LLVMBuildSub(b, nv, one, "");
    LLVMValueRef fits = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSLT, add(c, E, nlast), jend, ""),
                                     LLVMBuildICmp(b, LLVMIntSLE, add(c, C, nlast), cg_i64(c, BB), ""), "tri_fits");
    LLVMBasicBlockRef bgen = cg_block(c, "tri_general"), btri = cg_block(c, "tri"), bdone = cg_block(c, "tri_done");
    LLVMBuildCondBr(b, fits, btri, bgen);
    LLVMPositionBuilderAtEnd(b, bgen);
    emit_run(k, zero, nv);
    LLVMBuildBr(b, bdone);
    LLVMPositionBuilderAtEnd(b, btri);
    LLVMValueRef resume = resuming(k);
    /* rows [0, i0) see nothing: o = 0 and lse = -inf, or on resume the earlier (o, lse) */
    LLVMValueRef i0 = cg_smin(c, cg_smax(c, LLVMBuildSub(b, one, C, ""), zero), nv);
    {
        LLVMBasicBlockRef bz = cg_block(c, "tri_none"), bzd = cg_block(c, "tri_none_done");
        LLVMBuildCondBr(b, LLVMBuildAnd(b, LLVMBuildNot(b, resume, ""), LLVMBuildICmp(b, LLVMIntSGT, i0, zero, ""), ""), bz, bzd);
        LLVMPositionBuilderAtEnd(b, bz);
        CgLoop li;
        LLVMValueRef i = cg_loop_begin(c, &li, zero, i0, one, "tz");
        LLVMValueRef ooff = row_off(k, i, k->os1, k->os2);
        for (int ch = 0; ch < p->VC; ch++) cg_store_vec(c, ATTN_F32, LLVMConstNull(c->vf), k->obase, add(c, ooff, cg_i64(c, ch * W)), W);
        LLVMBasicBlockRef wl = cg_block(c, "tz_lse"), nl = cg_block(c, "tz_nolse");
        LLVMBuildCondBr(b, LLVMBuildIsNotNull(b, k->lsep, ""), wl, nl);
        LLVMPositionBuilderAtEnd(b, wl);
        cg_store(c, cg_f32(c, -INFINITY), cg_gep(c, c->f32, k->lsebase, row_off(k, i, k->ls1, k->ls2)), 4);
        LLVMBuildBr(b, nl);
        LLVMPositionBuilderAtEnd(b, nl);
        cg_loop_end(c, &li);
        LLVMBuildBr(b, bzd);
        LLVMPositionBuilderAtEnd(b, bzd);
    }
    LLVMBasicBlockRef bsee = cg_block(c, "tri_see");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, i0, nv, ""), bsee, bdone);
    LLVMPositionBuilderAtEnd(b, bsee);
    LLVMValueRef KTB = k->KTring, VSB = k->VSring;
    k->bcs = BB; /* one block */
    LLVMValueRef S = cg_alloca(c, c->f32, (int64_t)BB * BB, 64, "tsp");
    LLVMValueRef M = cg_alloca(c, c->f32, BB, 64, "tm"), L = cg_alloca(c, c->f32, BB, 64, "tl");
    band_pack(k, KTB, VSB, jlo, zero, cg_bool(c, false), add(c, E, nlast));
    /* group g: the rows that see g + 1 + W t keys (t = 0..3), i = g + 1 + W t - C; those
     * outside [0, nv) are computed on a valid row and not written */
    LLVMValueRef row[4], present[4];
#define TRI_ROWS(g)                                                                               \
    for (int t = 0; t < 4; t++) {                                                                 \
        LLVMValueRef i_ = LLVMBuildSub(b, add(c, g, cg_i64(c, 1 + (int64_t)t * W)), C, "");       \
        present[t] = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSGE, i_, zero, ""),                  \
                                  LLVMBuildICmp(b, LLVMIntSLT, i_, nv, ""), "");                  \
        row[t] = cg_smin(c, cg_smax(c, i_, zero), nlast);                                         \
    }
    {
        CgLoop lg;
        LLVMValueRef g = cg_loop_begin(c, &lg, zero, cg_i64(c, W), one, "tg");
        TRI_ROWS(g)
        LLVMValueRef lastm = LLVMBuildICmp(b, LLVMIntULE, cg_iota(c), cg_splat(c, g), "");
        band_scores(k, KTB, row, zero, 0, 4, S, g, lastm);
        /* the next class's K and V rows (4 a group) toward L1 */
        prefetch_keys(k, k->knext, k->vnext, add(c, jlo, mul(c, g, cg_i64(c, 4))), 4);
        cg_loop_end(c, &lg);
    }
    {
        CgLoop lsm;
        LLVMValueRef g = cg_loop_begin(c, &lsm, zero, cg_i64(c, W), one, "tsm");
        for (int t = 0; t < 4; t++) band_softmax(k, S, M, L, add(c, g, cg_i64(c, (int64_t)t * W)), t + 1);
        cg_loop_end(c, &lsm);
    }
    {
        CgLoop lpv;
        LLVMValueRef g = cg_loop_begin(c, &lpv, zero, cg_i64(c, W), one, "tpv");
        TRI_ROWS(g)
        band_pv(k, VSB, S, M, L, row, present, zero, g, 4, add(c, g, one));
        cg_loop_end(c, &lpv);
    }
#undef TRI_ROWS
    LLVMBuildBr(b, bdone);
    LLVMPositionBuilderAtEnd(b, bdone);
}

static bool expr_reads_h(const IrExpr *e) {
    if (!e) return false;
    if (e->op == IR_VAR && e->var == IR_V_H) return true;
    for (int i = 0; i < e->nargs; i++)
        if (expr_reads_h(e->args[i])) return true;
    return false;
}

/* The K/V head of query head h. */
static int head_kv(const IrFunc *f, int h) {
    int group = f->kv_heads > 0 ? f->heads / f->kv_heads : 1;
    if (group < 1) group = 1;
    return f->head_map ? f->head_map[h] : h / group;
}

int cg_group_size(const IrFunc *f) {
    if (f->kv_heads < 1 || f->heads % f->kv_heads != 0 || f->heads / f->kv_heads < 2) return 0;
    /* a mask reading h would need per-head prune bounds; residue runs stride rows or keys */
    if (expr_reads_h(f->mask) || (f->prune.enabled && f->prune.runs.mod)) return 0;
    if (f->prune.enabled && (expr_reads_h(f->prune.k_lo) || expr_reads_h(f->prune.k_hi) ||
                             expr_reads_h(f->prune.may_see) || expr_reads_h(f->prune.all_see)))
        return 0;
    int G = f->heads / f->kv_heads;
    for (int j = 0; j < f->kv_heads; j++) {
        int n = 0;
        for (int h = 0; h < f->heads; h++) n += head_kv(f, h) == j;
        if (n != G) return 0; /* uneven head map */
    }
    return G;
}

/* Emits the tile function (G == 0) or the group function (G heads per K/V head). */
static bool emit_fn(Cg *c, const IrFunc *f, const char *symbol, int G, StrBuf *err);

bool cg_emit_tile(Cg *c, const IrFunc *f, const char *symbol, StrBuf *err) {
    int G = cg_group_size(f);
    char gsym[512];
    snprintf(gsym, sizeof gsym, "%s_group", symbol);
    for (int grouped = 0; grouped <= (G > 0); grouped++) {
        Cg fc;
        cg_fn_open(c, &fc);
        bool ok = emit_fn(&fc, f, grouped ? gsym : symbol, grouped ? G : 0, err);
        if (!cg_fn_close(c, &fc, fc.fn, false, false, err) || !ok) return false;
    }
    return true;
}

static bool emit_fn(Cg *c, const IrFunc *f, const char *symbol, int G, StrBuf *err) {
    if (f->sched.vec_width != 4 && f->sched.vec_width != 8 && f->sched.vec_width != 16) {
        sb_printf(err, "codegen: %s: unsupported vector width %d (schedule missing?)", f->name, f->sched.vec_width);
        return false;
    }
    if (f->v_dim > CG_MAX_CHUNKS * f->sched.vec_width || f->qk_dim > CG_MAX_CHUNKS * f->sched.vec_width || f->qk_dim < 0 || f->v_dim < 1 || f->heads < 1) {
        sb_printf(err, "codegen: %s: unsupported head dims %d/%d", f->name, f->qk_dim, f->v_dim);
        return false;
    }
    cg_init_types(c, f->sched.vec_width);
    Kern K = {0};
    Kern *k = &K;
    k->c = c;
    k->err = err;
    k->gsize = 1; /* rows sharing a key's prefetches: one, or the group's heads */
    k->f = f;
    k->p = make_plan(f);
    k->dt = f->dtype;
    const Plan *p = &k->p;
    LLVMBuilderRef b = c->b;

    LLVMTypeRef params[5] = {c->ptr, c->i64, c->i64, c->i64, c->i64};
    LLVMTypeRef fty = LLVMFunctionType(c->i32, params, 5, 0);
    c->fn = LLVMAddFunction(c->mod, symbol, fty);
    c->stack = 0;
    LLVMSetLinkage(c->fn, LLVMExternalLinkage);
    c->entry = cg_block(c, "entry");
    LLVMPositionBuilderAtEnd(b, c->entry);
    LLVMValueRef a = LLVMGetParam(c->fn, 0);
    LLVMValueRef bi = LLVMGetParam(c->fn, 1), h = LLVMGetParam(c->fn, 2);
    LLVMValueRef q0 = LLVMGetParam(c->fn, 3), q1 = LLVMGetParam(c->fn, 4);
    /* nothing the kernel writes aliases the argument block: its loads may be hoisted */
    LLVMAddAttributeAtIndex(c->fn, 1, LLVMCreateEnumAttribute(c->ctx, LLVMGetEnumAttributeKindForName("noalias", 7), 0));

    /* the K/V head of query head h; or, for the group entry, the heads of K/V head h */
    LLVMValueRef kvh;
    {
        int n = G ? f->kv_heads * G : f->heads;
        LLVMTypeRef at = LLVMArrayType(c->i32, (unsigned)n);
        LLVMValueRef *vals = arena_alloc(f->arena, sizeof(LLVMValueRef) * (size_t)n);
        if (!vals) {
            sb_puts(err, "codegen: out of memory");
            return false;
        }
        if (G) {
            int *fill = arena_alloc(f->arena, sizeof(int) * (size_t)f->kv_heads);
            if (!fill) {
                sb_puts(err, "codegen: out of memory");
                return false;
            }
            for (int j = 0; j < f->kv_heads; j++) fill[j] = 0;
            for (int i = 0; i < f->heads; i++) {
                int j = head_kv(f, i);
                vals[j * G + fill[j]++] = cg_i32(c, i);
            }
        } else {
            for (int i = 0; i < f->heads; i++) vals[i] = cg_i32(c, head_kv(f, i));
        }
        char gname[600];
        snprintf(gname, sizeof gname, "%s.%s", symbol, G ? "group_heads" : "head_map");
        LLVMValueRef g = LLVMAddGlobal(c->mod, at, gname);
        LLVMSetInitializer(g, LLVMConstArray2(c->i32, vals, (uint64_t)n));
        LLVMSetGlobalConstant(g, 1);
        LLVMSetLinkage(g, LLVMPrivateLinkage);
        LLVMSetUnnamedAddr(g, 1);
        if (G) {
            kvh = cg_smin(c, cg_smax(c, h, cg_i64(c, 0)), cg_i64(c, f->kv_heads - 1));
            k->grouped = true;
            k->gsize = G;
            k->gtab = cg_gep(c, c->i32, g, mul(c, kvh, cg_i64(c, G)));
            k->gq0 = q0;
            k->gnq = cg_smax(c, LLVMBuildSub(b, q1, q0, ""), cg_i64(c, 1));
            h = cg_i64(c, 0); /* the bases below are at head 0 */
        } else {
            LLVMValueRef hc = cg_smin(c, cg_smax(c, h, cg_i64(c, 0)), cg_i64(c, f->heads - 1));
            kvh = LLVMBuildSExt(b, cg_load(c, c->i32, cg_gep(c, c->i32, g, hc), 4), c->i64, "kvh");
        }
    }

    LLVMValueRef qp = field(c, a, offsetof(attn_rt_args, q), c->ptr);
    LLVMValueRef kp = field(c, a, offsetof(attn_rt_args, k), c->ptr);
    LLVMValueRef vp = field(c, a, offsetof(attn_rt_args, v), c->ptr);
    LLVMValueRef op = field(c, a, offsetof(attn_rt_args, o), c->ptr);
    LLVMValueRef lsep = field(c, a, offsetof(attn_rt_args, lse), c->ptr);
    LLVMValueRef q_len = field(c, a, offsetof(attn_rt_args, q_len), c->i64);
    LLVMValueRef kv_len = field(c, a, offsetof(attn_rt_args, kv_len), c->i64);
    LLVMValueRef q_off = field(c, a, offsetof(attn_rt_args, q_offset), c->i64);
#define STRIDE(fld, i) field(c, a, offsetof(attn_rt_args, fld) + 8 * (i), c->i64)
    LLVMTypeRef et = cg_elem_type(c, k->dt);
    k->qbase = cg_gep(c, et, qp, add(c, mul(c, bi, STRIDE(q_stride, 0)), mul(c, h, STRIDE(q_stride, 1))));
    k->kbase = cg_gep(c, et, kp, add(c, mul(c, bi, STRIDE(k_stride, 0)), mul(c, kvh, STRIDE(k_stride, 1))));
    k->vbase = cg_gep(c, et, vp, add(c, mul(c, bi, STRIDE(v_stride, 0)), mul(c, kvh, STRIDE(v_stride, 1))));
    k->obase = cg_gep(c, et, op, add(c, mul(c, bi, STRIDE(o_stride, 0)), mul(c, h, STRIDE(o_stride, 1))));
    k->qs1 = STRIDE(q_stride, 1);
    k->os1 = STRIDE(o_stride, 1);
    k->ls1 = STRIDE(lse_stride, 1);
    k->kbeg = field(c, a, offsetof(attn_rt_args, k_begin), c->i64);
    k->resume = field(c, a, offsetof(attn_rt_args, resume), c->i64);
    {
        /* k_end 0 (a zeroed argument block): every key */
        LLVMValueRef ke = field(c, a, offsetof(attn_rt_args, k_end), c->i64);
        k->kendp = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLE, ke, cg_i64(c, 0), ""), kv_len, ke, "kend");
    }
    k->qs2 = STRIDE(q_stride, 2);
    k->ks2 = STRIDE(k_stride, 2);
    k->vs2 = STRIDE(v_stride, 2);
    k->os2 = STRIDE(o_stride, 2);
    LLVMValueRef lse_off = add(c, mul(c, bi, STRIDE(lse_stride, 0)), mul(c, h, STRIDE(lse_stride, 1)));
    LLVMValueRef lsebase = LLVMBuildGEP2(b, c->f32, lsep, &lse_off, 1, "");
#undef STRIDE
    k->kv_len = kv_len;

    /* scratch */
    k->mbt = LLVMIntTypeInContext(c->ctx, (unsigned)p->W);
    k->Qs = cg_alloca(c, c->f32, (int64_t)p->BQ * p->QK + p->W, 64, "Qs");
    k->KT = k->KTring = cg_alloca(c, c->f32, p->NRING * kt_floats(p), 64, "KT");
    k->ACC = cg_alloca(c, c->f32, (int64_t)p->BQ * p->VDP, 64, "acc");
    k->M = cg_alloca(c, c->f32, p->BQ + p->W, 64, "m");
    k->L = cg_alloca(c, c->f32, (int64_t)(p->BQ + p->R) * p->W, 64, "l"); /* a vector per row */
    k->MB = cg_alloca(c, k->mbt, (int64_t)p->BQ * p->NT, 64, "mbits");
    k->RF = cg_alloca(c, c->i8, p->BQ + p->R, 64, "rowfull");
    k->anyfull = cg_alloca(c, c->i8, 1, 1, "anyfull");
    LLVMBuildMemSet(b, k->RF, LLVMConstInt(c->i8, 0, 0), cg_i64(c, p->BQ + p->R), 64); /* read, unused, in full blocks */
    LLVMValueRef err_slot = cg_alloca(c, c->i1, 1, 1, "err");
    LLVMValueRef dummy = cg_alloca(c, c->i64, 1, 8, "dummy");
    cg_store(c, cg_bool(c, false), err_slot, 1);
    cg_store(c, cg_i64(c, 0), dummy, 8);

    CgEnv *env = &k->env;
    env->f = f;
    env->args = a;
    env->h = h;
    env->b = bi;
    env->q_len = q_len;
    env->kv_len = kv_len;
    env->err_slot = err_slot;
    env->dummy = dummy;
    env->tag = -1;

    k->lsep = lsep;
    const IrRuns *runs = &f->prune.runs;
    bool have_runs = f->prune.enabled && runs->mod >= 2;
    /* scores read q from the tensor, with no scaled copy to make per chunk (a band's chunks
     * do little else per row; a residue class's rows, r rows apart, mostly see one key block:
     * strided 64's class domain -8%, atrous -1.5%): f32 only, and not in a kernel with a group
     * function, whose pieces the tile function shares */
    k->qdirect = k->dt == ATTN_F32 && !k->grouped && !cg_group_size(f);
    /* P.V reads a block's V rows once per row group. Rows that map to few L1 sets evict each
     * other before the next group: a residue class's rows (r apart), and rows that put more
     * than 8 of the block's rows on one set of a 64-set L1 (for BK = 64, a multiple of 1 KiB
     * apart: [batch, seq, heads, dim] tensors with heads * dim a multiple of 256 floats).
     * Then the pack piece copies them to VS: always for residue runs, by that test at run
     * time for f32 (the one dtype P.V reads alike from both), never otherwise. */
    k->vpack = have_runs || k->dt == ATTN_F32;
    if (k->vpack) {
        /* rows `bytes` apart fall on 64 >> ctz(bytes / 64) sets (at most 64): more than 8 rows
         * a set when bytes is a multiple of 64 * m, m the least power of two above 512 / BK */
        int64_t m = 1;
        while (m * p->BK <= 512) m *= 2;
        k->VS = k->VSring = cg_alloca(c, c->f32, (int64_t)p->NRING * p->BK * p->VDP, 64, "VS");
        k->vpack_on = have_runs ? cg_bool(c, true)
                                : LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildSRem(b, mul(c, k->vs2, cg_i64(c, 4)), cg_i64(c, 64 * m), ""),
                                                cg_i64(c, 0), "vpack");
    }
    k->mask = f->prune.enabled ? f->prune.mask : f->mask;
    k->qstep = k->kstep = 1;
    k->cmod = k->cw = 1;
    k->qpos0 = q_off;
    k->kpos0 = cg_i64(c, 0);
    k->nkeys = kv_len;
    k->lsebase = lsebase;
    k->ls2 = cg_i64(c, 1);
    if (G) {
        k->qpos0 = add(c, q_off, q0);
        LLVMValueRef nq = cg_smax(c, LLVMBuildSub(b, q1, q0, ""), cg_i64(c, 0));
        emit_run(k, cg_i64(c, 0), mul(c, nq, cg_i64(c, G)));
    } else if (!have_runs) {
        int64_t bhi = 0;
        int bw = band_fits(k, 3) ? band_width(f, p->W, &bhi) : 0;
        if (bw)
            emit_band_task(k, q0, q1, q_off, bw, bhi);
        else
            emit_run(k, q0, q1);
    } else if (!runs->with_q) {
        /* k % r in [base, base + w): every row sees only those keys, visited as one run over
         * the compacted index (stride r when w is 1) */
        LLVMTypeRef et = cg_elem_type(c, k->dt);
        k->kpos0 = cg_i64(c, runs->base);
        k->kbase = cg_gep(c, et, k->kbase, mul(c, k->kpos0, k->ks2));
        k->vbase = cg_gep(c, et, k->vbase, mul(c, k->kpos0, k->vs2));
        if (runs->width == 1) {
            k->kstep = runs->mod;
            k->ks2 = mul(c, k->ks2, cg_i64(c, runs->mod));
            k->vs2 = mul(c, k->vs2, cg_i64(c, runs->mod));
        } else {
            k->cmod = runs->mod;
            k->cw = runs->width;
        }
        k->nkeys = keys_below(k, kv_len);
        emit_run(k, q0, q1);
    } else {
        /* k = q (mod r): rows of one residue class see only keys of the same class, so each
         * class is a run over strided rows and keys, and the work is the visible pairs */
        int64_t modulus = runs->mod;
        /* a staircase in class keys */
        int64_t tlo = 0, thi = 0;
        bool tri = band_fits(k, 1) && ir_prune_tri(f, &tlo, &thi);
        k->qstep = k->kstep = modulus;
        LLVMValueRef rr = cg_i64(c, modulus);
        LLVMValueRef qbase = k->qbase, obase = k->obase, kbase = k->kbase, vbase = k->vbase;
        LLVMValueRef qs2 = k->qs2, os2 = k->os2, ks2 = k->ks2, vs2 = k->vs2;
        CgLoop lr;
        LLVMValueRef nres = cg_smin(c, rr, LLVMBuildSub(b, q1, q0, ""));
        LLVMValueRef ri = cg_loop_begin(c, &lr, cg_i64(c, 0), nres, cg_i64(c, 1), "res");
        LLVMValueRef first = add(c, q0, ri);
        LLVMValueRef pos = add(c, q_off, first);
        LLVMValueRef rho = LLVMBuildSRem(b, pos, rr, "");
        rho = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, rho, cg_i64(c, 0), ""), add(c, rho, rr), rho, "rho");
        LLVMValueRef nv = LLVMBuildSDiv(b, add(c, LLVMBuildSub(b, q1, first, ""), cg_i64(c, modulus - 1)), rr, "");
        k->qpos0 = pos;
        k->kpos0 = rho;
        k->nkeys = keys_below(k, kv_len);
        LLVMTypeRef et = cg_elem_type(c, k->dt);
        k->qbase = cg_gep(c, et, qbase, mul(c, first, qs2));
        k->obase = cg_gep(c, et, obase, mul(c, first, os2));
        k->kbase = cg_gep(c, et, kbase, mul(c, rho, ks2));
        k->vbase = cg_gep(c, et, vbase, mul(c, rho, vs2));
        k->knext = cg_gep(c, et, k->kbase, ks2); /* the next class's (a row on) */
        k->vnext = cg_gep(c, et, k->vbase, vs2);
        k->qs2 = mul(c, qs2, rr);
        k->os2 = mul(c, os2, rr);
        k->ks2 = mul(c, ks2, rr);
        k->vs2 = mul(c, vs2, rr);
        k->lsebase = LLVMBuildGEP2(b, c->f32, lsebase, &first, 1, "");
        k->ls2 = rr;
        if (tri)
            emit_tri_run(k, nv, tlo, thi);
        else
            emit_run(k, cg_i64(c, 0), nv);
        cg_loop_end(c, &lr);
    }
    LLVMValueRef e = cg_load(c, c->i1, err_slot, 1);
    LLVMBuildRet(b, LLVMBuildZExt(b, e, c->i32, ""));
    /* the runtime trusts cg_stack_bound (attn_rt_desc.stack): a kernel must stay within it */
    int64_t used = c->stack + k->piece_stack, bound = cg_stack_bound(f);
    if (!k->failed && used + STACK_SPILLS > bound) {
        sb_printf(err, "codegen: internal error: %s: allocas of %lld bytes exceed the stack bound %lld", f->name,
                  (long long)used, (long long)bound);
        return false;
    }
    return !k->failed;
}
