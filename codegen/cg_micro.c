/* cg_micro.c — the microkernels every template shares: register-blocked scores (from packed
 * K^T or straight from K), the score modifier, the online-softmax step, exp of a row group's
 * scores, P.V in register column groups, and the in-register transposes. */
#include <math.h>
#include <stdlib.h>

#include "codegen/cg_kern.h"

/* Where P's bf16 words of row r start at word `word` (a word: two keys' weights): after the
 * R rows of f32 weights, BK / 2 floats a row. */
LLVMValueRef cg_pw_at(Cg *c, const IrPlan *p, LLVMValueRef P, LLVMValueRef r, LLVMValueRef word) {
    return cg_gep(c, c->f32, P, add(c, cg_i64(c, (int64_t)p->R * p->BK), add(c, mul(c, r, cg_i64(c, p->BK / 2)), word)));
}

/* acc[r][i] += (p[j], p[j + 1]) . vw[i] for every row, j = 2 half: one pair of keys of the
 * paired P.V (vw: the pair's V words of the n column vectors). */
static void pv_pair_step(Kern *k, const IrPlan *p, LLVMValueRef P, LLVMValueRef half, int n, const LLVMValueRef *vw,
                         LLVMValueRef (*acc)[16]) {
    Cg *c = k->c;
    LLVMTypeRef bt = LLVMVectorType(LLVMBFloatTypeInContext(c->ctx), (unsigned)p->W * 2);
    for (int r = 0; r < p->R; r++) {
        LLVMValueRef pw = LLVMBuildBitCast(c->b, cg_splat(c, cg_load(c, c->f32, cg_pw_at(c, p, P, cg_i64(c, r), half), 4)), bt, "");
        for (int i = 0; i < n; i++)
            acc[r][i] = cg_intr(c, "llvm.x86.avx512bf16.dpbf16ps.512", NULL, 0, (LLVMValueRef[]){acc[r][i], pw, vw[i]}, 3);
    }
}

/* acc[r][c0 .. c0+n) = acc*alpha + sum_j p[r][j] * V[kb+j][chunk]; c0 may be a run-time
 * chunk index; the last of the n chunks has `lastn` lanes. */
static void emit_pv_cols(Kern *k, const IrPlan *p, PvCtx *pc, LLVMValueRef c0, int n, int lastn) {
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
    LLVMValueRef vsb = NULL, vss = NULL;
    int vlastn = p->W;
    if (k->vs_use) vlastn = cg_vs_rows(k, &vsb, &vss) ? lastn : p->W;
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
    /* bf16 dot products: VS holds words of two keys' bf16 (v_rows), for every key of the
     * block (past the end: copies of the last row, whose weights are 0), so the unmasked
     * code of a partial block (clamp) takes pairs too */
    bool paired = p->pv_bf16dot && vsb;
    if (paired && !pc->masked && lu == 2) {
        /* a pair of keys a step: acc += (p[j], p[j + 1]) . (V[j][x], V[j + 1][x]) */
        LLVMTypeRef bt = LLVMVectorType(LLVMBFloatTypeInContext(c->ctx), (unsigned)p->W * 2);
        LLVMValueRef half = LLVMBuildLShr(b, j0, cg_i64(c, 1), "");
        LLVMValueRef vrow = cg_gep(c, c->f32, k->VS, mul(c, half, cg_i64(c, p->VDP)));
        LLVMValueRef vw[16];
        for (int i = 0; i < n; i++) vw[i] = LLVMBuildBitCast(b, cg_load(c, c->vf, cg_gep(c, c->f32, vrow, col[i]), va), bt, "");
        pv_pair_step(k, p, pc->P, half, n, vw, acc);
        lu = 0; /* no key left for the loop below */
    } else if (p->pv_bf16dot && !vsb && !pc->masked && lu == 2 && (k->kvdt != ATTN_I8 || pc->vfolded)) {
        /* decode (V from the tensor): a pair of keys a step on vdpbf16ps, their rows made words of
         * two keys' bf16 per column (bf16 V interleaved as it is; other storage through f32, int8
         * exactly: its scales are in the weights) */
        LLVMTypeRef bt = LLVMVectorType(LLVMBFloatTypeInContext(c->ctx), (unsigned)p->W * 2), w16 = LLVMVectorType(c->i16, 32);
        LLVMValueRef il[32];
        for (int l = 0; l < 16; l++) il[2 * l] = cg_i32(c, l), il[2 * l + 1] = cg_i32(c, 16 + l);
        LLVMValueRef ilv = LLVMConstVector(il, 32), hi[32];
        for (int l = 0; l < 16; l++) hi[2 * l] = cg_i32(c, 2 * l + 1), hi[2 * l + 1] = cg_i32(c, 32 + 2 * l + 1);
        LLVMValueRef hiv = LLVMConstVector(hi, 32);
        LLVMValueRef key0 = add(c, k->kb, j0), key1 = add(c, key0, cg_i64(c, 1));
        if (pc->clamp) key0 = cg_smin(c, key0, pc->vlast), key1 = cg_smin(c, key1, pc->vlast);
        if (pc->pf_ahead) {
            int pn = n * p->W < p->VD ? n * p->W : p->VD;
            cg_prefetch_part(k, true, add(c, key0, pc->pf_ahead), col[0], pn);
            cg_prefetch_part(k, true, add(c, key1, pc->pf_ahead), col[0], pn);
        }
        LLVMValueRef off0 = cg_v_off(k, key0), off1 = cg_v_off(k, key1), vw[16];
        for (int i = 0; i < n; i++) {
            int nl = i == n - 1 ? lastn : p->W;
            LLVMValueRef w;
            if (k->kvdt == ATTN_BF16) {
                LLVMTypeRef ht = LLVMVectorType(c->i16, 16);
                LLVMValueRef h[2], offs[2] = {off0, off1};
                for (int u = 0; u < 2; u++) {
                    LLVMValueRef at = cg_gep(c, c->i16, k->vbase, add(c, offs[u], col[i]));
                    if (nl >= p->W) {
                        h[u] = cg_load(c, ht, at, 2);
                    } else {
                        LLVMTypeRef tys[2] = {ht, c->ptr};
                        h[u] = cg_intr(c, "llvm.masked.load", tys, 2, (LLVMValueRef[]){at, cg_i32(c, 2), cg_lane_mask(c, nl), LLVMConstNull(ht)}, 4);
                    }
                }
                w = LLVMBuildShuffleVector(b, h[0], h[1], ilv, "");
            } else if (k->kvdt == ATTN_I8) {
                /* the integers' f32 are bf16 already: the high words of the two rows' f32,
                 * interleaved (one vpermt2w) */
                LLVMValueRef v0 = LLVMBuildBitCast(b, cg_load_vec(c, k->kvdt, k->vbase, add(c, off0, col[i]), nl), w16, "");
                LLVMValueRef v1 = LLVMBuildBitCast(b, cg_load_vec(c, k->kvdt, k->vbase, add(c, off1, col[i]), nl), w16, "");
                w = LLVMBuildShuffleVector(b, v0, v1, hiv, "");
            } else {
                LLVMValueRef v0 = cg_load_vec(c, k->kvdt, k->vbase, add(c, off0, col[i]), nl);
                LLVMValueRef v1 = cg_load_vec(c, k->kvdt, k->vbase, add(c, off1, col[i]), nl);
                w = cg_bf16_interleave(c, v0, v1);
            }
            vw[i] = LLVMBuildBitCast(b, w, bt, "");
        }
        pv_pair_step(k, p, pc->P, LLVMBuildLShr(b, j0, cg_i64(c, 1), ""), n, vw, acc);
        lu = 0;
    }
    for (int l = 0; l < lu; l++) {
        LLVMValueRef key = add(c, add(c, k->kb, j0), cg_i64(c, l));
        if (pc->masked || pc->clamp) key = cg_smin(c, key, pc->vlast);
        LLVMValueRef vv[16];
        if (paired) {
            /* one key of a pair: its bf16 half of each word */
            LLVMValueRef rel = LLVMBuildSub(b, key, k->kb, "");
            LLVMValueRef vrow = cg_gep(c, c->f32, k->VS, mul(c, LLVMBuildLShr(b, rel, cg_i64(c, 1), ""), cg_i64(c, p->VDP)));
            LLVMValueRef odd = cg_splat(c, LLVMBuildTrunc(b, LLVMBuildAnd(b, rel, cg_i64(c, 1), ""), c->i1, ""));
            for (int i = 0; i < n; i++) {
                LLVMValueRef w = cg_load(c, c->vi32, cg_gep(c, c->f32, vrow, col[i]), va);
                LLVMValueRef hi = LLVMBuildAnd(b, w, cg_splat(c, cg_i32(c, (int32_t)0xffff0000u)), "");
                LLVMValueRef lo = LLVMBuildShl(b, w, cg_splat(c, cg_i32(c, 16)), "");
                vv[i] = LLVMBuildBitCast(b, LLVMBuildSelect(b, odd, hi, lo, ""), c->vf, "");
            }
        } else if (vsb) {
            LLVMValueRef vrow = LLVMBuildGEP2(b, c->f32, vsb, (LLVMValueRef[]){mul(c, key, vss)}, 1, "");
            /* VS, or (chosen at run time) the f32 tensor: round as the pack does (idempotent) */
            for (int i = 0; i < n; i++) vv[i] = cg_operand(k, cg_load_vec(c, ATTN_F32, vrow, col[i], i == n - 1 ? vlastn : p->W));
        } else {
            if (pc->pf_ahead) cg_prefetch_part(k, true, add(c, key, pc->pf_ahead), col[0], n * p->W < p->VD ? n * p->W : p->VD);
            LLVMValueRef voff = cg_v_off(k, key);
            for (int i = 0; i < n; i++) {
                LLVMValueRef x = cg_load_vec(c, k->kvdt, k->vbase, add(c, voff, col[i]), i == n - 1 ? lastn : p->W);
                /* int8 V with its scales in the weights: integers, exact in bf16 */
                vv[i] = pc->vfolded ? x : cg_operand(k, cg_kv_scaled(k, true, key, x));
            }
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

/* acc = acc*alpha + P V over every V chunk: passes over column groups of CG chunks (a
 * runtime loop when there are several whole groups, the rest unrolled). */
void cg_emit_pv(Kern *k, const IrPlan *p, PvCtx *pc) {
    Cg *c = k->c;
    int CG = p->pv_groups[0];
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

/* compute bf16/int8 on 16-lane bf16 dot products: the weights 2^t of 16 exponents t (the
 * bf16-accurate exp) rounded to bf16 (vcvtneps2bf16), and their sum added to the 8 lanes of
 * *sum (vdpbf16ps against words of two bf16 1.0: the row sums add the rounded weights). */
static LLVMValueRef bf16_weights(Cg *c, LLVMValueRef t, LLVMValueRef *sum) {
    LLVMValueRef one2[8];
    for (int l = 0; l < 8; l++) one2[l] = cg_i32(c, 0x3f803f80);
    LLVMValueRef ones = LLVMBuildBitCast(c->b, LLVMConstVector(one2, 8), LLVMVectorType(LLVMBFloatTypeInContext(c->ctx), 16), "");
    LLVMValueRef e = cg_exp2_bf16(c, t, true);
    LLVMValueRef h = cg_intr(c, "llvm.x86.avx512bf16.cvtneps2bf16.512", NULL, 0, &e, 1);
    *sum = cg_intr(c, "llvm.x86.avx512bf16.dpbf16ps.256", NULL, 0, (LLVMValueRef[]){*sum, h, ones}, 3);
    return h;
}

/* bf16_weights' 8-lane sum as 16 lanes, the upper 8 zero. */
static LLVMValueRef widen_sum8(Cg *c, LLVMValueRef s8) {
    LLVMValueRef wi[16];
    for (int l = 0; l < 16; l++) wi[l] = cg_i32(c, l);
    return LLVMBuildShuffleVector(c->b, s8, LLVMConstNull(LLVMTypeOf(s8)), LLVMConstVector(wi, 16), "");
}

/* The softmax numerators of rows g .. g+nr-1 in place: P[r][t*W ..] = exp(s - m_r) for the
 * vectors [t0, t1); the row's sums L[g + r] (a vector of partial sums per row, added up
 * once the chunk is done) become L*alpha + their sum. mu[r]: the row's max (0 when it saw
 * nothing); as[r]: its alpha, splatted. Runtime loops over rows and vectors: one exp in the
 * code. compute bf16/int8: the weights are rounded to bf16 (an exp accurate to that,
 * cg_exp2_bf16), and on bf16 dot products written as words of two keys after P (a plain bf16
 * array: vcvtneps2bf16) and summed by vdpbf16ps against ones, besides the f32 copy in P (the
 * masked P.V reads those; the full blocks' paired P.V only the words: exp_regs). */
void cg_emit_exp_rows(Kern *k, const IrPlan *p, LLVMValueRef g, LLVMValueRef P, const LLVMValueRef *mu,
                      const LLVMValueRef *as, LLVMValueRef t0, LLVMValueRef t1) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    unsigned va = (unsigned)(p->W * 4);
    bool dp = p->pv_bf16dot && p->W == 16;
    LLVMTypeRef v8 = LLVMVectorType(c->f32, 8);
    LLVMTypeRef st = dp ? v8 : c->vf;
    LLVMValueRef MU = cg_alloca(c, c->f32, 16, 64, "mu"), AL = cg_alloca(c, c->f32, 16, 64, "alpha");
    for (int r = 0; r < p->R; r++) {
        cg_store(c, mu[r], cg_gep(c, c->f32, MU, cg_i64(c, r)), 4);
        cg_store(c, LLVMBuildExtractElement(b, as[r], cg_i32(c, 0), ""), cg_gep(c, c->f32, AL, cg_i64(c, r)), 4);
    }
    LLVMValueRef sum = cg_alloca(c, st, 1, va, "ps");
    CgLoop lr, lt;
    LLVMValueRef r = cg_loop_begin(c, &lr, cg_i64(c, 0), cg_i64(c, p->R), cg_i64(c, 1), "er");
    LLVMValueRef m = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, MU, r), 4));
    /* compute bf16/int8: exp(s - m) = 2^(s log2e - m log2e), one FMA (its error, 2^-24 |m|
     * log2e, is far below the scores' own from the bf16 or int8 operands) */
    LLVMValueRef log2e = cg_const_like(c, c->vf, 1.44269504088896341);
    LLVMValueRef mlog = LLVMBuildFNeg(b, LLVMBuildFMul(b, m, log2e, ""), "");
    LLVMValueRef prow = cg_gep(c, c->f32, P, mul(c, r, cg_i64(c, p->BK)));
    cg_store(c, LLVMConstNull(st), sum, va);
    LLVMValueRef t = k->wmax == 1 ? cg_loop_begin_once(c, &lt, t0, t1, "e") : cg_loop_begin(c, &lt, t0, t1, cg_i64(c, 1), "e");
    LLVMValueRef pp = cg_gep(c, c->f32, prow, mul(c, t, cg_i64(c, p->W)));
    LLVMValueRef sv = cg_load(c, c->vf, pp, va);
    if (dp) {
        /* PW[r][(t W + 2i) / 2] = (p[2i], p[2i + 1]): the weights as consecutive bf16 */
        LLVMValueRef s8 = cg_load(c, v8, sum, va);
        LLVMValueRef h = bf16_weights(c, cg_fma(c, sv, log2e, mlog), &s8);
        cg_store(c, h, cg_pw_at(c, p, P, r, mul(c, t, cg_i64(c, p->W / 2))), 32);
        cg_store(c, s8, sum, va);
        LLVMValueRef w = LLVMBuildZExt(b, LLVMBuildBitCast(b, h, LLVMVectorType(c->i16, 16), ""), c->vi32, "");
        cg_store(c, LLVMBuildBitCast(b, LLVMBuildShl(b, w, cg_splat(c, cg_i32(c, 16)), ""), c->vf, ""), pp, va);
    } else {
        /* the weights P.V multiplies (bf16 for compute bf16/int8) are the ones the row sums add */
        LLVMValueRef pv = p->compute == IR_COMPUTE_F32 ? cg_exp(c, LLVMBuildFSub(b, sv, m, ""))
                                                       : cg_round_bf16(c, cg_exp2_bf16(c, cg_fma(c, sv, log2e, mlog), false));
        cg_store(c, pv, pp, va);
        if (p->pv_bf16dot) { /* PW[r][(t W + 2i) / 2] = (p[2i], p[2i + 1]) */
            LLVMValueRef ev[32], od[32];
            for (int l = 0; l < p->W / 2; l++) ev[l] = cg_i32(c, 2 * l), od[l] = cg_i32(c, 2 * l + 1);
            LLVMValueRef w = cg_bf16_pairs(c, LLVMBuildShuffleVector(b, pv, pv, LLVMConstVector(ev, (unsigned)p->W / 2), ""),
                                        LLVMBuildShuffleVector(b, pv, pv, LLVMConstVector(od, (unsigned)p->W / 2), ""));
            LLVMValueRef pw = cg_pw_at(c, p, P, r, mul(c, t, cg_i64(c, p->W / 2)));
            cg_store(c, w, pw, 4);
        }
        cg_store(c, LLVMBuildFAdd(b, cg_load(c, c->vf, sum, va), pv, ""), sum, va);
    }
    cg_loop_end(c, &lt);
    LLVMValueRef lp = cg_gep(c, c->f32, k->L, mul(c, add(c, g, r), cg_i64(c, p->W)));
    LLVMValueRef al = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, AL, r), 4));
    LLVMValueRef tot = cg_load(c, st, sum, va);
    if (dp) tot = widen_sum8(c, tot);
    cg_store(c, cg_fma(c, cg_load(c, c->vf, lp, va), al, tot), lp, va);
    cg_loop_end(c, &lr);
}

/* cg_emit_exp_rows for a full block on bf16 dot products, straight from the score registers
 * s[r][t] (every row and vector unrolled: the R NT exps interleave, no scores through memory);
 * only the bf16 words of P are written (the paired P.V reads nothing else). */
static void exp_regs(Kern *k, const IrPlan *p, LLVMValueRef g, LLVMValueRef P, LLVMValueRef (*s)[CG_MAXT],
                     const LLVMValueRef *mu, const LLVMValueRef *as) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    unsigned va = (unsigned)(p->W * 4);
    LLVMTypeRef v8 = LLVMVectorType(c->f32, 8);
    LLVMValueRef log2e = cg_const_like(c, c->vf, 1.44269504088896341);
    for (int r = 0; r < p->R; r++) {
        LLVMValueRef mlog = LLVMBuildFNeg(b, LLVMBuildFMul(b, cg_splat(c, mu[r]), log2e, ""), "");
        LLVMValueRef sum = LLVMConstNull(v8);
        for (int t = 0; t < p->NT; t++) {
            LLVMValueRef h = bf16_weights(c, cg_fma(c, s[r][t], log2e, mlog), &sum);
            cg_store(c, h, cg_pw_at(c, p, P, cg_i64(c, r), cg_i64(c, (int64_t)t * (p->W / 2))), 32);
        }
        LLVMValueRef lp = cg_gep(c, c->f32, k->L, mul(c, add(c, g, cg_i64(c, r)), cg_i64(c, p->W)));
        LLVMValueRef tot = widen_sum8(c, sum);
        cg_store(c, cg_fma(c, cg_load(c, c->vf, lp, va), as[r], tot), lp, va);
    }
}

LLVMValueRef cg_reduce_parts(Cg *c, LLVMValueRef *vs, int n, bool max) {
    LLVMBuilderRef b = c->b;
    int W = c->W;
    LLVMValueRef v[64];
    for (int i = 0; i < n; i++) v[i] = vs[i];
    for (int k = 1, cnt = n; cnt > 1; k *= 2, cnt /= 2) {
        /* every vector holds k parts of s lanes: pairs become 2k parts of s/2 */
        int sz = W / k, h = sz / 2;
        LLVMValueRef ix[64], iy[64];
        for (int L = 0; L < W; L++) {
            int P = L / h, o = L % h, base = P < k ? P * sz : W + (P - k) * sz;
            ix[L] = cg_i32(c, base + o);
            iy[L] = cg_i32(c, base + h + o);
        }
        LLVMValueRef mx = LLVMConstVector(ix, (unsigned)W), my = LLVMConstVector(iy, (unsigned)W);
        for (int i = 0; i < cnt / 2; i++) {
            LLVMValueRef x = LLVMBuildShuffleVector(b, v[2 * i], v[2 * i + 1], mx, "");
            LLVMValueRef y = LLVMBuildShuffleVector(b, v[2 * i], v[2 * i + 1], my, "");
            v[i] = max ? cg_fmax(c, x, y) : LLVMBuildFAdd(b, x, y, "");
        }
    }
    for (int h = W / n / 2; h >= 1; h /= 2) {
        LLVMValueRef ix[64];
        for (int L = 0; L < W; L++) ix[L] = cg_i32(c, L ^ h);
        LLVMValueRef y = LLVMBuildShuffleVector(b, v[0], v[0], LLVMConstVector(ix, (unsigned)W), "");
        v[0] = max ? cg_fmax(c, v[0], y) : LLVMBuildFAdd(b, v[0], y, "");
    }
    return v[0];
}

/* Lane `lane` of v in every lane. */
static LLVMValueRef splat_lane(Cg *c, LLVMValueRef v, int lane) {
    LLVMValueRef ix[64];
    for (int L = 0; L < c->W; L++) ix[L] = cg_i32(c, lane);
    return LLVMBuildShuffleVector(c->b, v, v, LLVMConstVector(ix, (unsigned)c->W), "");
}

static bool pow2_upto(int n, int W) { return n >= 2 && n <= W && (n & (n - 1)) == 0; }

/* compute = int8: s[r][t] holds the exact dot products of row r's quantized q with the
 * quantized keys; the scores are s * (q scale * key scale) + q . (the block's mean key), the
 * mean's share in f32 (so the smoothing changes no score). qf: the rows' f32 scaled q. */
static void int8_scores(Kern *k, LLVMValueRef *qf, LLVMValueRef col, int nv, LLVMValueRef (*s)[CG_MAXT]) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    LLVMValueRef mu = cg_gep(c, c->f32, k->KT, cg_i64(c, cg_kt_mu_off(p)));
    LLVMValueRef sk = cg_gep(c, c->f32, k->KT, add(c, cg_i64(c, cg_kt_sk_off(p)), col));
    LLVMValueRef skv[CG_MAXT];
    for (int t = 0; t < nv; t++) skv[t] = cg_load(c, c->vf, cg_gep(c, c->f32, sk, cg_i64(c, (int64_t)t * p->W)), 4);
    LLVMValueRef q0 = LLVMBuildPtrToInt(b, k->Qs, c->i64, "");
    LLVMValueRef corr[16];
    for (int r = 0; r < p->R; r++) {
        corr[r] = LLVMConstNull(c->vf);
        for (int ch = 0; ch * p->W < p->QK; ch++) {
            int n = tail_lanes(p->QK, p->W, ch);
            LLVMValueRef qv = cg_load(c, c->vf, cg_gep(c, c->f32, qf[r], cg_i64(c, (int64_t)ch * p->W)), 4);
            LLVMValueRef mv = cg_load(c, c->vf, cg_gep(c, c->f32, mu, cg_i64(c, (int64_t)ch * p->W)), 4);
            /* past qk_dim both: the mean's padding is never written (0 * a NaN there is NaN) */
            if (n < p->W) {
                qv = LLVMBuildSelect(b, cg_lane_mask(c, n), qv, LLVMConstNull(c->vf), "");
                mv = LLVMBuildSelect(b, cg_lane_mask(c, n), mv, LLVMConstNull(c->vf), "");
            }
            corr[r] = cg_fma(c, qv, mv, corr[r]);
        }
    }
    /* the rows' q . mu reduced together */
    LLVMValueRef all = pow2_upto(p->R, p->W) ? cg_reduce_parts(c, corr, p->R, false) : NULL;
    for (int r = 0; r < p->R; r++) {
        LLVMValueRef bytes = LLVMBuildSub(b, LLVMBuildPtrToInt(b, qf[r], c->i64, ""), q0, "");
        LLVMValueRef row = LLVMBuildUDiv(b, bytes, cg_i64(c, (int64_t)p->QK * 4), "");
        LLVMValueRef sq = cg_load(c, c->f32, cg_gep(c, c->f32, k->Qs, add(c, row, cg_i64(c, 2 * cg_qi_off(p)))), 4);
        LLVMValueRef cs = all ? splat_lane(c, all, r * (p->W / p->R)) : cg_splat(c, cg_hsum(c, corr[r])), sqs = cg_splat(c, sq);
        for (int t = 0; t < nv; t++) s[r][t] = cg_fma(c, s[r][t], LLVMBuildFMul(b, sqs, skv[t], ""), cs);
    }
}

/* compute = bf16 K^T packing: transposed rows (rows[l]: d0 + l over the keys, rounded) of
 * n d values to words of pairs at KT[(d0 + l) / 2][col .. col + W). */
void cg_pair_kt(Kern *k, LLVMValueRef *rows, int n, LLVMValueRef d0, LLVMValueRef col) {
    Cg *c = k->c;
    const IrPlan *p = &k->p;
    for (int l = 0; l < n; l += 2) {
        LLVMValueRef w = cg_bf16_pairs(c, rows[l], rows[l + 1]);
        LLVMValueRef dp = LLVMBuildSDiv(c->b, add(c, d0, cg_i64(c, l)), cg_i64(c, 2), "");
        cg_store(c, w, cg_gep(c, c->f32, k->KT, add(c, mul(c, dp, cg_i64(c, p->BK)), col)), (unsigned)p->W * 4);
    }
}

LLVMValueRef cg_dp_step(Cg *c, bool vnni, LLVMValueRef acc, LLVMValueRef qw, LLVMValueRef kw) {
    LLVMBuilderRef b = c->b;
    if (vnni)
        return cg_intr(c, "llvm.x86.avx512.vpdpbusd.512", NULL, 0,
                       (LLVMValueRef[]){acc, LLVMBuildBitCast(b, qw, c->vi32, ""), LLVMBuildBitCast(b, kw, c->vi32, "")}, 3);
    LLVMTypeRef bt = LLVMVectorType(LLVMBFloatTypeInContext(c->ctx), (unsigned)c->W * 2);
    return cg_intr(c, "llvm.x86.avx512bf16.dpbf16ps.512", NULL, 0,
                   (LLVMValueRef[]){acc, LLVMBuildBitCast(b, qw, bt, ""), LLVMBuildBitCast(b, kw, bt, "")}, 3);
}

/* cg_block_scores on dot-product instructions over words of d values (the K^T block and the
 * chunk's q packed so, q's words after Qs at cg_qi_off): pairs of bf16 (f32 sums) or, with
 * `vnni`, quads of int8 against q's u8 (q + 128; i32 sums, the offset not yet taken off);
 * the words in a runtime loop of DU-wide unrolled steps, as there. */
static void block_scores_dp(Kern *k, const IrPlan *p, LLVMValueRef *qrow, LLVMValueRef col, int nv,
                            LLVMValueRef (*s)[CG_MAXT], bool vnni) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    unsigned va = (unsigned)(p->W * 4);
    LLVMTypeRef at = vnni ? c->vi32 : c->vf;
    LLVMValueRef slot[16][CG_MAXT], qp[16];
    enum { DU = 4 };
    int np = vnni ? (p->QK + 3) / 4 : (p->QK + 1) / 2;
    int dloop = np >= 2 * DU ? np / DU * DU : 0;
    int nc = nv == 1 ? 2 : nv;
    for (int r = 0; r < p->R; r++) {
        qp[r] = cg_gep(c, c->f32, qrow[r], cg_i64(c, cg_qi_off(p)));
        for (int t = 0; t < nc; t++) s[r][t] = LLVMConstNull(at);
    }
    CgLoop ld;
    LLVMValueRef d0 = NULL;
    if (dloop) {
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < nc; t++) {
                slot[r][t] = cg_alloca(c, at, 1, va, "s");
                cg_store(c, s[r][t], slot[r][t], va);
            }
        d0 = cg_loop_begin(c, &ld, cg_i64(c, 0), cg_i64(c, dloop), cg_i64(c, DU), "dp");
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < nc; t++) s[r][t] = cg_load(c, at, slot[r][t], va);
    }
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: the loop body (or every word without a loop); pass 1: the words after it */
        int from = pass ? dloop : 0, to = pass ? np : dloop ? DU : np;
        if (pass && !dloop) break;
        if (pass) {
            for (int r = 0; r < p->R; r++)
                for (int t = 0; t < nc; t++) cg_store(c, s[r][t], slot[r][t], va);
            cg_loop_end(c, &ld);
            for (int r = 0; r < p->R; r++)
                for (int t = 0; t < nc; t++) s[r][t] = cg_load(c, at, slot[r][t], va);
        }
        for (int d = from; d < to; d++) {
            LLVMValueRef dd = dloop && !pass ? add(c, d0, cg_i64(c, d)) : cg_i64(c, d);
            LLVMValueRef kt[CG_MAXT];
            LLVMValueRef ktb = cg_gep(c, c->f32, k->KT, add(c, mul(c, dd, cg_i64(c, p->BK)), col));
            for (int t = 0; t < nv; t++) kt[t] = cg_load(c, c->vf, cg_gep(c, c->f32, ktb, cg_i64(c, (int64_t)t * p->W)), va);
            for (int r = 0; r < p->R; r++) {
                LLVMValueRef qv = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, qp[r], dd), 4));
                for (int t = 0; t < nv; t++) {
                    int ch = nv == 1 ? d % 2 : t;
                    s[r][ch] = cg_dp_step(c, vnni, s[r][ch], qv, kt[t]);
                }
            }
        }
    }
    if (nv == 1)
        for (int r = 0; r < p->R; r++) s[r][0] = vnni ? add(c, s[r][0], s[r][1]) : LLVMBuildFAdd(b, s[r][0], s[r][1], "");
}

/* Scores of rows qrow[0 .. R) against nv key vectors of the packed KT from column col:
 * s[r][t] = sum_d q[r][d] * KT[d][col + t*W], d in a runtime loop of DU-wide unrolled steps,
 * the rest unrolled; the R x nv accumulators are the FMA chains. With one vector (nv == 1)
 * the even and odd d steps of each row take separate chains, summed at the end, so the R
 * rows still fill both FMA pipes (R chains alone wait on the FMA latency). */
void cg_block_scores(Kern *k, const IrPlan *p, LLVMValueRef *qrow, LLVMValueRef col, int nv,
                         LLVMValueRef (*s)[CG_MAXT]) {
    Cg *c = k->c;
    unsigned va = (unsigned)(p->W * 4);
    LLVMValueRef slot[16][CG_MAXT];
    enum { DU = 4 };
    int dloop = p->QK >= 2 * DU ? p->QK / DU * DU : 0;
    if (p->qk_bf16dot) {
        block_scores_dp(k, p, qrow, col, nv, s, false);
        return;
    }
    if (p->qk_vnni) {
        /* sum (q + 128) k - 128 sum k: the exact integer dot products, as floats */
        block_scores_dp(k, p, qrow, col, nv, s, true);
        LLVMValueRef cs = cg_gep(c, c->f32, k->KT, add(c, cg_i64(c, cg_kt_cs_off(p)), col));
        for (int t = 0; t < nv; t++) {
            LLVMValueRef off = LLVMBuildShl(c->b, cg_load(c, c->vi32, cg_gep(c, c->f32, cs, cg_i64(c, (int64_t)t * p->W)), va),
                                            cg_splat(c, cg_i32(c, 7)), "");
            for (int r = 0; r < p->R; r++) s[r][t] = LLVMBuildSIToFP(c->b, LLVMBuildSub(c->b, s[r][t], off, ""), c->vf, "");
        }
        int8_scores(k, qrow, col, nv, s);
        return;
    }
    int nc = nv == 1 ? 2 : nv; /* chains per row: nv, or two for one vector */
    LLVMValueRef qf[16]; /* the f32 rows (int8: qrow becomes the quantized ones) */
    for (int r = 0; r < p->R; r++) {
        qf[r] = qrow[r];
        if (p->compute == IR_COMPUTE_INT8) qrow[r] = cg_gep(c, c->f32, qrow[r], cg_i64(c, cg_qi_off(p)));
    }
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
    if (p->compute == IR_COMPUTE_INT8) int8_scores(k, qf, col, nv, s);
    for (int r = 0; r < p->R; r++) qrow[r] = qf[r];
    if (k->p.qdirect)
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < nv; t++) s[r][t] = LLVMBuildFMul(c->b, s[r][t], cg_splat(c, cg_f32(c, k->f->scale)), "");
}

/* An operand of Q.K^T or P.V as the plan's compute multiplies it: rounded to bf16 (compute
 * bf16 and int8's P.V), unchanged for f32. */
LLVMValueRef cg_operand(Kern *k, LLVMValueRef v) {
    return k->p.compute == IR_COMPUTE_F32 ? v : cg_round_bf16(k->c, v);
}

/* compute = int8: row i of the chunk's Q, its scaled f32 chunks v (0 past qk_dim), quantized
 * after Qs's rows (cg_qi_off), with its scale: q ~ sq * round(q / sq), sq = max|q| / 127. */
void cg_quantize_q(Kern *k, LLVMValueRef i, const LLVMValueRef *v) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    LLVMValueRef dst = cg_gep(c, c->f32, k->Qs, add(c, mul(c, i, cg_i64(c, p->QK)), cg_i64(c, cg_qi_off(p))));
    LLVMValueRef mx = LLVMConstNull(c->vf);
    int nch = (p->QK + p->W - 1) / p->W;
    for (int ch = 0; ch < nch; ch++) mx = cg_fmax(c, mx, cg_intr1(c, "llvm.fabs", v[ch]));
    LLVMValueRef m = cg_hmax(c, mx);
    LLVMValueRef pos = LLVMBuildFCmp(b, LLVMRealOGT, m, cg_f32(c, 0.0), "");
    LLVMValueRef inv = LLVMBuildSelect(b, pos, LLVMBuildFDiv(b, cg_f32(c, 127.0), m, ""), cg_f32(c, 0.0), "");
    cg_store(c, LLVMBuildFDiv(b, m, cg_f32(c, 127.0), ""), cg_gep(c, c->f32, k->Qs, add(c, i, cg_i64(c, 2 * cg_qi_off(p)))), 4);
    LLVMValueRef iv = cg_splat(c, inv);
    for (int ch = 0; ch < nch; ch++) {
        LLVMValueRef qi = cg_intr1(c, "llvm.rint", LLVMBuildFMul(b, v[ch], iv, ""));
        if (!p->qk_vnni) {
            cg_store(c, qi, cg_gep(c, c->f32, dst, cg_i64(c, (int64_t)ch * p->W)), 4);
            continue;
        }
        /* VNNI: words of four u8 (q + 128) over d .. d+3; lanes past qk_dim are q = 0. The
         * lanes' low bytes in order are those words (little-endian): one truncation */
        LLVMValueRef x = add(c, LLVMBuildFPToSI(b, qi, c->vi32, ""), cg_splat(c, cg_i32(c, 128)));
        int nw = p->W / 4;
        LLVMValueRef w = LLVMBuildBitCast(b, LLVMBuildTrunc(b, x, LLVMVectorType(c->i8, (unsigned)p->W), ""),
                                          LLVMVectorType(c->i32, (unsigned)nw), "");
        cg_store(c, w, cg_gep(c, c->f32, dst, cg_i64(c, (int64_t)ch * nw)), 4);
    }
}

/* compute = int8 without VNNI (emulation): the packed K^T block's key vectors [0, ceil(kn / W))
 * smoothed and quantized in place: KT[d][j] = round((K[j][d] - mu[d]) / sk[j]), mu the mean of
 * those keys (any vector would do: the scores add q . mu back exactly), sk[j] = max_d |K[j][d]
 * - mu[d]| / 127, both kept beside the block (cg_kt_*_off); f32 integers the scores multiply
 * exactly. One pass takes the means, smooths in place and keeps the keys' maxima in
 * registers; a second quantizes. */
void cg_quantize_kt(Kern *k, LLVMValueRef kn) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    unsigned va = (unsigned)p->W * 4;
    LLVMValueRef mu = cg_gep(c, c->f32, k->KT, cg_i64(c, cg_kt_mu_off(p)));
    LLVMValueRef sk = cg_gep(c, c->f32, k->KT, cg_i64(c, cg_kt_sk_off(p)));
    LLVMValueRef nvk = LLVMBuildSDiv(b, add(c, kn, cg_i64(c, p->W - 1)), cg_i64(c, p->W), "");
    LLVMValueRef valid[CG_MAXT], mx[CG_MAXT], mxs[CG_MAXT];
    LLVMValueRef ninv = LLVMBuildFDiv(b, cg_f32(c, 1.0), LLVMBuildSIToFP(b, mul(c, nvk, cg_i64(c, p->W)), c->f32, ""), "");
    for (int t = 0; t < p->NT; t++) {
        valid[t] = cg_splat(c, LLVMBuildICmp(b, LLVMIntSLT, cg_i64(c, t), nvk, ""));
        mxs[t] = cg_alloca(c, c->vf, 1, va, "skmax"); /* promoted to registers across the loop */
        cg_store(c, LLVMConstNull(c->vf), mxs[t], va);
    }
    CgLoop ld;
    LLVMValueRef d = cg_loop_begin(c, &ld, cg_i64(c, 0), cg_i64(c, p->QK), cg_i64(c, 1), "qd");
    LLVMValueRef row = cg_gep(c, c->f32, k->KT, mul(c, d, cg_i64(c, p->BK)));
    LLVMValueRef kv[CG_MAXT], sum = LLVMConstNull(c->vf);
    for (int t = 0; t < p->NT; t++) {
        kv[t] = cg_load(c, c->vf, cg_gep(c, c->f32, row, cg_i64(c, (int64_t)t * p->W)), va);
        sum = LLVMBuildFAdd(b, sum, LLVMBuildSelect(b, valid[t], kv[t], LLVMConstNull(c->vf), ""), "");
    }
    LLVMValueRef m = LLVMBuildFMul(b, cg_hsum(c, sum), ninv, "");
    cg_store(c, m, cg_gep(c, c->f32, mu, d), 4);
    LLVMValueRef ms = cg_splat(c, m);
    for (int t = 0; t < p->NT; t++) {
        LLVMValueRef x = LLVMBuildFSub(b, kv[t], ms, "");
        cg_store(c, x, cg_gep(c, c->f32, row, cg_i64(c, (int64_t)t * p->W)), va);
        cg_store(c, cg_fmax(c, cg_load(c, c->vf, mxs[t], va), cg_intr1(c, "llvm.fabs", x)), mxs[t], va);
    }
    cg_loop_end(c, &ld);
    LLVMValueRef inv[CG_MAXT];
    for (int t = 0; t < p->NT; t++) {
        LLVMValueRef sp = cg_gep(c, c->f32, sk, cg_i64(c, (int64_t)t * p->W));
        mx[t] = cg_load(c, c->vf, mxs[t], va);
        LLVMValueRef pos = LLVMBuildFCmp(b, LLVMRealOGT, mx[t], LLVMConstNull(c->vf), "");
        inv[t] = LLVMBuildSelect(b, pos, LLVMBuildFDiv(b, cg_const_like(c, c->vf, 127.0), mx[t], ""), LLVMConstNull(c->vf), "");
        cg_store(c, LLVMBuildFDiv(b, mx[t], cg_const_like(c, c->vf, 127.0), ""), sp, va);
    }
    d = cg_loop_begin(c, &ld, cg_i64(c, 0), cg_i64(c, p->QK), cg_i64(c, 1), "qq");
    row = cg_gep(c, c->f32, k->KT, mul(c, d, cg_i64(c, p->BK)));
    for (int t = 0; t < p->NT; t++) {
        LLVMValueRef at = cg_gep(c, c->f32, row, cg_i64(c, (int64_t)t * p->W));
        cg_store(c, cg_intr1(c, "llvm.rint", LLVMBuildFMul(b, cg_load(c, c->vf, at, va), inv[t], "")), at, va);
    }
    cg_loop_end(c, &ld);
}

/* cg_pack_kt_vnni: the n x W-lane chunks of key r (kid[r]) of K, less the mean key mu (f32 or
 * int8/16-bit storage, read as the pack reads it). */
static void key_chunks(Kern *k, LLVMValueRef kid, const LLVMValueRef *mu, LLVMValueRef *x) {
    Cg *c = k->c;
    const IrPlan *p = &k->p;
    LLVMValueRef off = cg_k_off(k, kid);
    for (int ch = 0; ch * p->W < p->QK; ch++) {
        LLVMValueRef v = cg_load_vec(c, k->kvdt, k->kbase, add(c, off, cg_i64(c, (int64_t)ch * p->W)), tail_lanes(p->QK, p->W, ch));
        v = cg_kv_scaled(k, false, kid, v);
        x[ch] = mu ? LLVMBuildFSub(c->b, v, mu[ch], "") : v;
    }
}

/* Words of four int8 dims of one key from its quantized chunks y (i32 lanes, |y| <= 127), four
 * chunks a vector: vpackssdw and vpacksswb leave, in 128-bit lane L, chunk e's dims 4L .. 4L +
 * 3 as dword 4L + e, i.e. word 4e + L of the four chunks. */
static LLVMValueRef pack_words(Cg *c, LLVMValueRef *y, int n) {
    LLVMBuilderRef b = c->b;
    LLVMValueRef z = LLVMConstNull(c->vi32), h[2];
    for (int i = 0; i < 2; i++)
        h[i] = cg_intr(c, "llvm.x86.avx512.packssdw.512", NULL, 0, (LLVMValueRef[]){2 * i < n ? y[2 * i] : z, 2 * i + 1 < n ? y[2 * i + 1] : z}, 2);
    return LLVMBuildBitCast(b, cg_intr(c, "llvm.x86.avx512.packsswb.512", NULL, 0, h, 2), c->vf, "");
}

/* compute = int8 on VNNI (16 lanes): keys [key0, key0 + kn) of K (past kmax, if given, key
 * kmax again) as cg_quantize_kt leaves a packed block: smoothed by the mean of its ceil(kn /
 * W) W keys, quantized per key, here as words of four int8 dims at kt[dq][W t + r] (rows
 * `stride` floats apart; again `dup` columns on when given), the mean to mu, the scales and
 * sums (of the int8 values, VNNI's offset) to sk[..] and cs[..] (and dup on). In the keys' own layout, not transposed: a key's maximum by
 * one reduction of W keys' vectors, its words by two packs of four chunks, and one transpose
 * of W keys' words, where the f32 block took a transpose per W dims and a reduction per dim. */
void cg_pack_kt_vnni(Kern *k, LLVMValueRef key0, LLVMValueRef kmax, LLVMValueRef kn, LLVMValueRef kt, int64_t stride,
                     LLVMValueRef dup, LLVMValueRef mu, LLVMValueRef sk, LLVMValueRef cs) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    enum { W = 16 };
    unsigned va = W * 4;
    int nch = (p->QK + W - 1) / W, nw = (p->QK + 3) / 4;
    LLVMValueRef nvk = LLVMBuildSDiv(b, add(c, kn, cg_i64(c, W - 1)), cg_i64(c, W), "");
    /* the mean of the block's whole vectors of keys */
    LLVMValueRef sums[CG_MAX_CHUNKS], x[CG_MAX_CHUNKS], mv[CG_MAX_CHUNKS];
    for (int ch = 0; ch < nch; ch++) {
        sums[ch] = cg_alloca(c, c->vf, 1, va, "ksum");
        cg_store(c, LLVMConstNull(c->vf), sums[ch], va);
    }
    CgLoop lj, lt;
    LLVMValueRef j = cg_loop_begin(c, &lj, cg_i64(c, 0), mul(c, nvk, cg_i64(c, W)), cg_i64(c, 1), "km");
    LLVMValueRef key = add(c, key0, j);
    key_chunks(k, kmax ? cg_smin(c, key, kmax) : key, NULL, x);
    for (int ch = 0; ch < nch; ch++) cg_store(c, LLVMBuildFAdd(b, cg_load(c, c->vf, sums[ch], va), x[ch], ""), sums[ch], va);
    cg_loop_end(c, &lj);
    LLVMValueRef ninv = cg_splat(c, LLVMBuildFDiv(b, cg_f32(c, 1.0), LLVMBuildSIToFP(b, mul(c, nvk, cg_i64(c, W)), c->f32, ""), ""));
    for (int ch = 0; ch < nch; ch++) {
        mv[ch] = LLVMBuildFMul(b, cg_load(c, c->vf, sums[ch], va), ninv, "");
        cg_store(c, mv[ch], cg_gep(c, c->f32, mu, cg_i64(c, (int64_t)ch * W)), 4);
    }
    /* W keys at a time: their maxima, scales, words (transposed) and sums */
    LLVMValueRef t = cg_loop_begin(c, &lt, cg_i64(c, 0), nvk, cg_i64(c, 1), "kq");
    LLVMValueRef col = mul(c, t, cg_i64(c, W)), kid[W], mx[W];
    for (int r = 0; r < W; r++) {
        LLVMValueRef kr = add(c, key0, add(c, col, cg_i64(c, r)));
        kid[r] = kmax ? cg_smin(c, kr, kmax) : kr;
        key_chunks(k, kid[r], mv, x);
        mx[r] = LLVMConstNull(c->vf);
        for (int ch = 0; ch < nch; ch++) mx[r] = cg_fmax(c, mx[r], cg_intr1(c, "llvm.fabs", x[ch]));
    }
    LLVMValueRef m = cg_reduce_parts(c, mx, W, true); /* lane r: key r's */
    LLVMValueRef pos = LLVMBuildFCmp(b, LLVMRealOGT, m, LLVMConstNull(c->vf), "");
    LLVMValueRef inv = LLVMBuildSelect(b, pos, LLVMBuildFDiv(b, cg_const_like(c, c->vf, 127.0), m, ""), LLVMConstNull(c->vf), "");
    LLVMValueRef scale = LLVMBuildFDiv(b, m, cg_const_like(c, c->vf, 127.0), "");
    LLVMValueRef ones = cg_splat(c, cg_i32(c, 0x01010101)), ksum = LLVMConstNull(c->vi32);
    for (int g = 0; g * 4 < nch; g++) {
        LLVMValueRef w[W];
        for (int r = 0; r < W; r++) {
            key_chunks(k, kid[r], mv, x);
            LLVMValueRef iv = splat_lane(c, inv, r), y[4];
            for (int e = 0; e < 4 && 4 * g + e < nch; e++) {
                LLVMValueRef z = LLVMBuildFMul(b, x[4 * g + e], iv, "");
                y[e] = cg_intr(c, "llvm.x86.avx512.mask.cvtps2dq.512", NULL, 0,
                               (LLVMValueRef[]){z, LLVMGetUndef(c->vi32), LLVMConstInt(c->i16, 0xffff, 0), cg_i32(c, 8)}, 4);
            }
            w[r] = pack_words(c, y, nch - 4 * g < 4 ? nch - 4 * g : 4);
        }
        cg_transpose(c, w); /* w[q]: dword q of every key */
        for (int q = 0; q < W; q++) {
            int word = 16 * g + 4 * (q % 4) + q / 4;
            if (word >= nw) continue;
            LLVMValueRef wi = LLVMBuildBitCast(b, w[q], c->vi32, "");
            ksum = cg_intr(c, "llvm.x86.avx512.vpdpbusd.512", NULL, 0, (LLVMValueRef[]){ksum, ones, wi}, 3);
            LLVMValueRef at = cg_gep(c, c->f32, kt, add(c, cg_i64(c, (int64_t)word * stride), col));
            cg_store(c, w[q], at, va);
            if (dup) cg_store(c, w[q], cg_gep(c, c->f32, at, dup), va);
        }
    }
    LLVMValueRef outs[2][2] = {{sk, scale}, {cs, ksum}};
    for (int o = 0; o < 2; o++) {
        LLVMValueRef at = cg_gep(c, c->f32, outs[o][0], col);
        cg_store(c, outs[o][1], at, va);
        if (dup) cg_store(c, outs[o][1], cg_gep(c, c->f32, at, dup), va);
    }
    cg_loop_end(c, &lt);
}


/* The score modifier on row `row`'s scores s against the W keys of key vector t (mv: the
 * lanes that count). */
LLVMValueRef cg_score_mod(Kern *k, LLVMValueRef row, LLVMValueRef t, LLVMValueRef s, LLVMValueRef mv) {
    Cg *c = k->c;
    cg_env_row(k, row);
    k->env.k = cg_kvec(k, add(c, k->kb, mul(c, t, cg_i64(c, k->p.W))));
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
static void softmax_rows_v(Kern *k, LLVMValueRef g, int nr, LLVMValueRef bv, LLVMValueRef *mu, LLVMValueRef *as);

void cg_softmax_rows(Kern *k, LLVMValueRef g, int nr, LLVMValueRef *bm, LLVMValueRef *mu, LLVMValueRef *as) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    if (nr == 1 || nr > c->W) {
        for (int r = 0; r < nr; r++) as[r] = cg_splat(c, softmax_step(k, add(c, g, cg_i64(c, r)), bm[r], &mu[r]));
        return;
    }
    LLVMValueRef bv = cg_const_like(c, c->vf, -INFINITY);
    for (int r = 0; r < nr; r++) bv = LLVMBuildInsertElement(b, bv, bm[r], cg_i32(c, r), "");
    softmax_rows_v(k, g, nr, bv, mu, as);
}

/* cg_softmax_rows on the block maxima side by side (lane r: row g + r; -inf past nr). */
static void softmax_rows_v(Kern *k, LLVMValueRef g, int nr, LLVMValueRef bv, LLVMValueRef *mu, LLVMValueRef *as) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    LLVMValueRef mp = cg_gep(c, c->f32, k->M, g);
    LLVMValueRef m_old = cg_load(c, c->vf, mp, 4); /* M: W floats of padding */
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

/* W vectors of partial sums (part[j]: key j) to one vector of their totals (lane j: key j):
 * log2(W) levels pairing vector i with i + n/2 (level n), each pair two shuffles and an add
 * (2(W-1) shuffles in all, half of a full cg_transpose). dot_tree evaluates it depth first. */
/* The reduction step of level n (n vectors, i paired with i + n/2) on a and b. */
static LLVMValueRef reduce_pair(Cg *c, int n, LLVMValueRef a, LLVMValueRef bv) {
    int W = c->W, bs = n / 2;
    LLVMValueRef ia[64], ib[64];
    for (int p = 0; p < W; p++) {
        int sb = p - p % n, o = p % n;
        ia[p] = cg_i32(c, o < bs ? sb + o : W + sb + o - bs);
        ib[p] = cg_i32(c, o < bs ? sb + bs + o : W + sb + o);
    }
    LLVMValueRef x = LLVMBuildShuffleVector(c->b, a, bv, LLVMConstVector(ia, (unsigned)W), "");
    LLVMValueRef y = LLVMBuildShuffleVector(c->b, a, bv, LLVMConstVector(ib, (unsigned)W), "");
    if (LLVMGetTypeKind(LLVMGetElementType(LLVMTypeOf(a))) == LLVMIntegerTypeKind) return LLVMBuildAdd(c->b, x, y, "");
    return LLVMBuildFAdd(c->b, x, y, "");
}

static LLVMValueRef opaque_ptr(Cg *c, LLVMValueRef x);

typedef struct {
    Kern *k;
    int nr, nch;
    LLVMValueRef *row, first, klast;
    LLVMValueRef (*qv)[CG_MAX_CHUNKS];
    LLVMValueRef *qrow;
    bool clamp, qmem;
    LLVMValueRef *leaf; /* one row: every key's partial sums, computed in key order */
    LLVMValueRef pf;    /* keys ahead to prefetch K at */
    LLVMValueRef ksv;   /* int8 K: the W keys' scales, applied to the scores (NULL: per key) */
    IrDecodeDot mode;   /* the plan's decode_dot */
    LLVMValueRef qx;    /* DPBF16/VNNI: the rows' q as dot-product operands (dot_q), 64 bytes a
                         * chunk of DC dims */
    int dch;            /* DPBF16/VNNI: chunks of 32 (bf16 pairs) or 64 (int8) dims */
} DotCtx;

/* Dims of a half-vector piece of a K row in the decode's dot products: 32 int8 (vpdpbusd) or 16
 * bf16 (vdpbf16ps); a vector holds one piece of each of two keys. */
static int piece_dims(IrDecodeDot m) { return m == IR_DECODE_VNNI ? 32 : 16; }

/* <n x i1>: the first m lanes. */
static LLVMValueRef lanes_upto(Cg *c, int n, int m) {
    LLVMValueRef v[64];
    for (int i = 0; i < n; i++) v[i] = LLVMConstInt(c->i1, i < m, 0);
    return LLVMConstVector(v, (unsigned)n);
}

/* 32 bytes of a row of `bytes`-byte elements from `at`: piece pc of qk_dim (zero past it: a
 * masked load, nothing past the row read). */
static LLVMValueRef piece_load(Kern *k, LLVMValueRef at, int pc, int bytes) {
    Cg *c = k->c;
    int n = 32 / bytes, left = k->p.QK - pc * n;
    LLVMTypeRef et = bytes == 1 ? c->i8 : c->i16, vt = LLVMVectorType(et, (unsigned)n);
    LLVMValueRef ptr = cg_gep(c, et, at, cg_i64(c, (int64_t)pc * n));
    if (left >= n) return cg_load(c, vt, ptr, (unsigned)bytes);
    LLVMTypeRef tys[2] = {vt, c->ptr};
    LLVMValueRef args[4] = {ptr, cg_i32(c, bytes), lanes_upto(c, n, left), LLVMConstNull(vt)};
    return cg_intr(c, "llvm.masked.load", tys, 2, args, 4);
}

/* Two half vectors (of any element type) as one <16 x i32>: x low, y high. */
static LLVMValueRef concat_i32(Cg *c, LLVMValueRef x, LLVMValueRef y) {
    unsigned n = LLVMGetVectorSize(LLVMTypeOf(x));
    LLVMValueRef ix[64];
    for (unsigned i = 0; i < 2 * n; i++) ix[i] = cg_i32(c, (int)i);
    return LLVMBuildBitCast(c->b, LLVMBuildShuffleVector(c->b, x, y, LLVMConstVector(ix, 2 * n), ""), c->vi32, "");
}

/* DPBF16/VNNI decode: the rows' q pieces for the dot products into d->qx (a vector a piece: the
 * piece twice, for the two keys a vector holds): bf16 pairs (cg_copy_q's) or the signed int8 q
 * (cg_quantize_q's u8 words q + 128 flipped back: K is the unsigned operand), zero past qk_dim;
 * *qsum (VNNI): each row's 128 * sum(q), which the unsigned K (k + 128) adds to its dot product. */
static void dot_q(DotCtx *d, LLVMValueRef *qsum) {
    Kern *k = d->k;
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    bool vnni = d->mode == IR_DECODE_VNNI;
    int pd = piece_dims(d->mode), n = vnni ? 32 : 16;
    d->dch = (p->QK + pd - 1) / pd;
    if (k->dqx) { /* made for the window (cg_dot_q) */
        d->qx = k->dqx;
        for (int r = 0; r < d->nr && vnni; r++) qsum[r] = k->dqsum[r];
        return;
    }
    d->qx = cg_alloca(c, c->vi32, (int64_t)d->nr * d->dch, 64, "qx");
    LLVMTypeRef et = vnni ? c->i8 : c->i16, vt = LLVMVectorType(et, (unsigned)n);
    LLVMValueRef x80 = LLVMConstInt(c->i8, 0x80, 0), flip[32];
    for (int i = 0; i < 32; i++) flip[i] = x80;
    LLVMValueRef ones = cg_splat(c, cg_i32(c, 0x01010101));
    for (int r = 0; r < d->nr; r++) {
        LLVMValueRef src = cg_gep(c, c->f32, d->qrow[r], cg_i64(c, cg_qi_off(p))), acc = LLVMConstNull(c->vi32);
        for (int pc = 0; pc < d->dch; pc++) {
            LLVMValueRef v = cg_load(c, vt, cg_gep(c, et, src, cg_i64(c, (int64_t)pc * n)), 4);
            if (vnni) v = LLVMBuildXor(b, v, LLVMConstVector(flip, 32), "");
            int left = p->QK - pc * pd;
            /* past qk_dim: not written by this row's quantizer (or pairing) */
            if (left < n) v = LLVMBuildSelect(b, lanes_upto(c, n, left), v, LLVMConstNull(vt), "");
            LLVMValueRef w = concat_i32(c, v, v);
            if (vnni) acc = cg_intr(c, "llvm.x86.avx512.vpdpbusd.512", NULL, 0, (LLVMValueRef[]){acc, ones, w}, 3);
            cg_store(c, w, cg_gep(c, c->vi32, d->qx, cg_i64(c, (int64_t)r * d->dch + pc)), 64);
        }
        if (vnni) {
            /* the piece went in twice */
            LLVMTypeRef it = c->vi32;
            LLVMValueRef sum = cg_intr(c, "llvm.vector.reduce.add", &it, 1, &acc, 1);
            qsum[r] = cg_splat(c, LLVMBuildShl(b, sum, cg_i32(c, 6), ""));
        }
    }
}

void cg_dot_q(Kern *k, int nr, LLVMValueRef *row) {
    LLVMValueRef qrow[16];
    for (int r = 0; r < nr; r++) qrow[r] = cg_q_row(k, row[r]);
    DotCtx d = {.k = k, .nr = nr, .row = row, .qrow = qrow, .mode = k->p.decode_dot};
    k->dqx = NULL;
    dot_q(&d, k->dqsum);
    k->dqx = d.qx;
}

/* DPBF16/VNNI: keys ka's and kb's dot products with every row, as the reduction's level of
 * pairs wants them (lanes 0..W/2: ka's partial sums, the rest kb's; f32, or i32 for VNNI): their
 * K rows a piece of each a vector, the unsigned operand of vpdpbusd (k + 128: the signed int8
 * flipped), or 32 bf16 (bf16 K as it is; other storage rounded to bf16 by vcvtne2ps2bf16,
 * int8 exactly: its scales come after). */
static void dot_pair_dp(DotCtx *d, int ka, int kb, LLVMValueRef *out) {
    Kern *k = d->k;
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    bool vnni = d->mode == IR_DECODE_VNNI;
    LLVMValueRef key[2], koff[2];
    int kk[2] = {ka, kb};
    for (int u = 0; u < 2; u++) {
        key[u] = add(c, d->first, cg_i64(c, kk[u]));
        if (d->clamp) key[u] = cg_smin(c, key[u], d->klast);
        koff[u] = cg_k_off(k, key[u]);
        /* the K row's lines, to L2, a few sub-blocks ahead (P.V prefetches the V row's) */
        if (d->pf) cg_prefetch_part(k, false, add(c, key[u], d->pf), cg_i64(c, 0), p->QK);
    }
    LLVMValueRef acc[16], qp = d->nr > 1 ? opaque_ptr(c, d->qx) : d->qx;
    LLVMTypeRef bt = LLVMVectorType(LLVMBFloatTypeInContext(c->ctx), 32);
    for (int r = 0; r < d->nr; r++) acc[r] = LLVMConstNull(vnni ? c->vi32 : c->vf);
    LLVMValueRef x80 = cg_splat(c, cg_i32(c, (int32_t)0x80808080u));
    for (int pc = 0; pc < d->dch; pc++) {
        LLVMValueRef kw;
        if (vnni || k->kvdt == ATTN_BF16) {
            int bytes = vnni ? 1 : 2;
            LLVMTypeRef et = vnni ? c->i8 : c->i16;
            kw = concat_i32(c, piece_load(k, cg_gep(c, et, k->kbase, koff[0]), pc, bytes),
                            piece_load(k, cg_gep(c, et, k->kbase, koff[1]), pc, bytes));
            if (vnni) kw = LLVMBuildXor(b, kw, x80, "");
        } else {
            /* 16 dims of each key as f32, rounded to bf16 together (ka's the low half) */
            int d0 = pc * 16, n = p->QK - d0 < 16 ? p->QK - d0 : 16;
            LLVMValueRef h0 = cg_load_vec(c, k->kvdt, k->kbase, add(c, koff[0], cg_i64(c, d0)), n);
            LLVMValueRef h1 = cg_load_vec(c, k->kvdt, k->kbase, add(c, koff[1], cg_i64(c, d0)), n);
            kw = LLVMBuildBitCast(b, cg_intr(c, "llvm.x86.avx512bf16.cvtne2ps2bf16.512", NULL, 0, (LLVMValueRef[]){h1, h0}, 2), c->vi32, "");
        }
        for (int r = 0; r < d->nr; r++) {
            LLVMValueRef qv = cg_load(c, c->vi32, cg_gep(c, c->vi32, qp, cg_i64(c, (int64_t)r * d->dch + pc)), 64);
            if (vnni)
                acc[r] = cg_intr(c, "llvm.x86.avx512.vpdpbusd.512", NULL, 0, (LLVMValueRef[]){acc[r], kw, qv}, 3);
            else
                acc[r] = cg_intr(c, "llvm.x86.avx512bf16.dpbf16ps.512", NULL, 0,
                                 (LLVMValueRef[]){acc[r], LLVMBuildBitCast(b, qv, bt, ""), LLVMBuildBitCast(b, kw, bt, "")}, 3);
        }
    }
    if (!d->ksv && k->kvdt == ATTN_I8) {
        /* int8 K under compute bf16 with the scales key by key (paged, or a tail block) */
        LLVMValueRef sv = LLVMGetUndef(c->vf);
        for (int l = 0; l < c->W; l++) sv = LLVMBuildInsertElement(b, sv, cg_kv_scale(k, false, key[l < c->W / 2 ? 0 : 1]), cg_i32(c, l), "");
        for (int r = 0; r < d->nr; r++) acc[r] = LLVMBuildFMul(b, acc[r], sv, "");
    }
    for (int r = 0; r < d->nr; r++) out[r] = acc[r];
}

/* Row r's q chunk ch from q row pointer qrow. */
static LLVMValueRef q_chunk(Kern *k, LLVMValueRef qrow, int ch) {
    Cg *c = k->c;
    const IrPlan *p = &k->p;
    int n = tail_lanes(p->QK, p->W, ch);
    if (k->p.qdirect) return cg_load_vec(c, ATTN_F32, qrow, cg_i64(c, ch * p->W), n);
    LLVMValueRef v = cg_load(c, c->vf, cg_gep(c, c->f32, qrow, cg_i64(c, ch * p->W)), 4);
    /* lanes past qk_dim hold the next row's q: zero them */
    if (n < p->W) v = LLVMBuildSelect(c->b, cg_lane_mask(c, n), v, LLVMConstNull(c->vf), "");
    return v;
}

/* An opaque copy of pointer x: loads through it are not merged with loads through x (nor
 * hoisted out of the key loop), so each FMA reads its q chunk from L1 as a memory operand
 * instead of R rows' q (R x d/W vectors) competing for registers with the keys' widened
 * chunks (4 rows, d 128: 32 vectors, the whole register file: spills of every chunk). */
static LLVMValueRef opaque_ptr(Cg *c, LLVMValueRef x) {
    LLVMTypeRef ft = LLVMFunctionType(c->ptr, &c->ptr, 1, 0);
    LLVMValueRef asmv = LLVMGetInlineAsm(ft, "", 0, "=r,0", 4, 0, 0, LLVMInlineAsmDialectATT, 0);
    return LLVMBuildCall2(c->b, ft, asmv, &x, 1, "");
}

/* Key `j`'s partial sums for every row: its K row loaded (and widened) once, then one FMA a
 * row and chunk (several rows: q from memory, see opaque_ptr). */
static void dot_key(DotCtx *d, int j, LLVMValueRef *out) {
    Kern *k = d->k;
    Cg *c = k->c;
    const IrPlan *p = &k->p;
    LLVMValueRef key = add(c, d->first, cg_i64(c, j));
    if (d->clamp) key = cg_smin(c, key, d->klast);
    LLVMValueRef koff = cg_k_off(k, key);
    /* the K row's lines, to L2, a few sub-blocks ahead (P.V prefetches the V row's: both spread
     * over the block's work) */
    if (d->pf) cg_prefetch_part(k, false, add(c, key, d->pf), cg_i64(c, 0), p->QK);
    /* two chains a row (even and odd chunks): half the FMA latency per key (decode d=128 from
     * memory ~+6%; four chains measured slower) */
    LLVMValueRef acc[16][2], qp[16];
    for (int r = 0; r < d->nr; r++) acc[r][0] = acc[r][1] = LLVMConstNull(c->vf);
    for (int r = 0; r < d->nr && d->qmem; r++) qp[r] = opaque_ptr(c, d->qrow[r]);
    for (int ch = 0; ch < d->nch; ch++) {
        LLVMValueRef kv = cg_load_vec(c, k->kvdt, k->kbase, add(c, koff, cg_i64(c, ch * p->W)), tail_lanes(p->QK, p->W, ch));
        if (p->compute == IR_COMPUTE_BF16) kv = cg_round_bf16(c, kv);
        for (int r = 0; r < d->nr; r++)
            acc[r][ch % 2] = cg_fma(c, d->qmem ? q_chunk(k, qp[r], ch) : d->qv[r][ch], kv, acc[r][ch % 2]);
    }
    for (int r = 0; r < d->nr; r++)
    {
        LLVMValueRef sum = d->nch > 1 ? LLVMBuildFAdd(c->b, acc[r][0], acc[r][1], "") : acc[r][0];
        out[r] = d->ksv ? sum : cg_kv_scaled(k, false, key, sum);
    }
}

/* Entry i of the reduction's level of m vectors, for every row, depth first: the keys come in
 * the order the tree consumes them, so at most log2(W) partial vectors a row are live (the
 * same sums as a level at a time, bit for bit). */
static void dot_tree(DotCtx *d, int m, int i, LLVMValueRef *out) {
    Cg *c = d->k->c;
    if (d->mode != IR_DECODE_FMA && 2 * m == c->W) {
        dot_pair_dp(d, i, i + m, out); /* the level of pairs, from the keys' dot products */
        return;
    }
    if (m == c->W) {
        if (d->leaf) out[0] = d->leaf[i];
        else dot_key(d, i, out);
        return;
    }
    LLVMValueRef a[16], bv[16];
    dot_tree(d, 2 * m, i, a);
    dot_tree(d, 2 * m, i + m, bv);
    for (int r = 0; r < d->nr; r++) out[r] = reduce_pair(c, 2 * m, a[r], bv[r]);
}

/* Scores of nr rows against W keys from K directly (no packing): a dot product per key over
 * the d chunks (each K chunk loaded once for all the rows), then a reduction turns the W
 * partial vectors of a row into one score vector. `clamp`: keys may pass the end (a tail
 * block). */
void cg_dot_scores(Kern *k, int nr, LLVMValueRef *row, LLVMValueRef first, bool clamp, LLVMValueRef *out) {
    Cg *c = k->c;
    const IrPlan *p = &k->p;
    int nch = (p->QK + p->W - 1) / p->W;
    /* q in registers for one row only (several rows read it from memory: qmem), so one
     * row's chunks: this function's frame stays small (the compiler runs on small stacks) */
    LLVMValueRef qv[1][CG_MAX_CHUNKS], qrow[16];
    for (int r = 0; r < nr; r++) qrow[r] = cg_q_row(k, row[r]);
    for (int ch = 0; ch < nch && nr == 1; ch++) qv[0][ch] = q_chunk(k, qrow[0], ch);
    bool qmem = nr > 1;
    DotCtx d = {k, nr, nch, row, first, LLVMBuildSub(c->b, k->kv_len, cg_i64(c, 1), ""), qv, qrow, clamp, qmem, NULL,
                cg_decode_ahead(k), clamp ? NULL : cg_kv_scale_vec(k, false, first), p->decode_dot, NULL, 0};
    LLVMValueRef qsum[16];
    if (d.mode != IR_DECODE_FMA) dot_q(&d, qsum);
    /* VNNI: integer sums, the K scales a vector after the reduction */
    if (d.mode == IR_DECODE_VNNI && !d.ksv) d.ksv = cg_kv_scales(k, false, first, clamp ? d.klast : NULL);
    LLVMValueRef leaf[64];
    if (nr == 1 && d.mode == IR_DECODE_FMA) {
        /* one row (f32 K/V): the keys in order, as the hardware prefetcher streams them */
        for (int j = 0; j < p->W; j++) dot_key(&d, j, &leaf[j]);
        d.leaf = leaf;
    }
    dot_tree(&d, 1, 0, out);
    if (d.mode == IR_DECODE_VNNI) {
        /* the exact integer dot products (|q k| <= 127 * 128 * d < 2^24: exact in f32 too), each
         * row's times its q scale and the keys' scales */
        for (int r = 0; r < nr; r++) {
            LLVMValueRef s = LLVMBuildSIToFP(c->b, LLVMBuildSub(c->b, out[r], qsum[r], ""), c->vf, "");
            LLVMValueRef sq = cg_load(c, c->f32, cg_gep(c, c->f32, k->Qs, add(c, row[r], cg_i64(c, 2 * cg_qi_off(p)))), 4);
            out[r] = LLVMBuildFMul(c->b, s, LLVMBuildFMul(c->b, cg_splat(c, sq), d.ksv, ""), "");
        }
        return;
    }
    for (int r = 0; r < nr && d.ksv; r++) out[r] = LLVMBuildFMul(c->b, out[r], d.ksv, "");
    if (k->p.qdirect)
        for (int r = 0; r < nr; r++) out[r] = LLVMBuildFMul(c->b, out[r], cg_splat(c, cg_f32(c, k->f->scale)), "");
}

/* One group of R rows against the packed KT of a full key block, unrolled over the block's
 * vectors (every FMA chain in registers). */
void cg_emit_group(Kern *k, LLVMValueRef g) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    const IrFunc *f = k->f;
    enum { MAXR = 16 };
    LLVMValueRef s[MAXR][CG_MAXT] = {{0}};
    LLVMValueRef row[MAXR];
    unsigned va = (unsigned)(p->W * 4);

    for (int r = 0; r < p->R; r++) row[r] = add(c, g, cg_i64(c, r));
    /* scores */
    LLVMValueRef qrow[MAXR];
    for (int r = 0; r < p->R; r++) qrow[r] = cg_q_row(k, row[r]);
    cg_block_scores(k, p, qrow, cg_i64(c, 0), p->NT, s);
    if (f->score)
        for (int r = 0; r < p->R; r++)
            for (int t = 0; t < p->NT; t++) s[r][t] = cg_score_mod(k, row[r], cg_i64(c, t), s[r][t], cg_lane_mask(c, p->W));
    /* online softmax: the scores wait in P (the key loop of P.V reads p as broadcast scalars),
     * exp in a runtime loop over the block's vectors (compact code) */
    LLVMValueRef as[MAXR], mu[MAXR] = {0}, bm[MAXR];
    LLVMValueRef P = cg_alloca(c, c->f32, cg_p_floats(p), 64, "p");
    LLVMValueRef mxv[MAXR];
    /* bf16 dot products: the exps from the registers (exp_regs), P.V reads only the words */
    bool regs = p->pv_bf16dot && k->vs_use && p->W == 16;
    for (int r = 0; r < p->R; r++) {
        mxv[r] = s[r][0];
        for (int t = 1; t < p->NT; t++) mxv[r] = cg_fmax(c, mxv[r], s[r][t]);
        for (int t = 0; t < p->NT && !regs; t++)
            cg_store(c, s[r][t], cg_gep(c, c->f32, P, cg_i64(c, (int64_t)r * p->BK + t * p->W)), va);
    }
    if (pow2_upto(p->R, p->W)) {
        /* the rows' maxima reduced together, then lane r = row r's */
        LLVMValueRef all = cg_reduce_parts(c, mxv, p->R, true), ix[64];
        for (int l = 0; l < p->W; l++) ix[l] = cg_i32(c, l < p->R ? l * (p->W / p->R) : p->W);
        LLVMValueRef bv = LLVMBuildShuffleVector(b, all, cg_const_like(c, c->vf, -INFINITY), LLVMConstVector(ix, (unsigned)p->W), "");
        softmax_rows_v(k, g, p->R, bv, mu, as);
    } else {
        for (int r = 0; r < p->R; r++) bm[r] = cg_hmax(c, mxv[r]);
        cg_softmax_rows(k, g, p->R, bm, mu, as);
    }
    if (regs) exp_regs(k, p, g, P, s, mu, as);
    else cg_emit_exp_rows(k, p, g, P, mu, as, cg_i64(c, 0), cg_i64(c, p->NT));
    /* acc = acc*alpha + P V, in passes over column groups of CG chunks so that R*CG
     * accumulators stay in registers whatever v_dim is; P is reused by every pass */
    PvCtx pc = {row, P, as, false, LLVMBuildSub(b, k->kv_len, cg_i64(c, 1), ""), NULL, NULL, false, false, NULL, false};
    cg_emit_pv(k, p, &pc);
}

/* In-register cg_transpose of W rows of W floats: log2(W) rounds of interleaving row i with
 * row i + W/2 (a perfect shuffle); after them rows[l] holds the old column l. */
void cg_transpose(Cg *c, LLVMValueRef *rows) {
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

/* A row's lse from its max m and sum l: m + log(l), -inf for a row that saw nothing (l = 0;
 * otherwise l >= 1, the max term's own 1), NaN when l is (cg_seen). */
LLVMValueRef cg_row_lse(Cg *c, LLVMValueRef m, LLVMValueRef l) {
    LLVMValueRef pos = cg_seen(c, l, 0.0);
    LLVMValueRef lg = cg_log_pos(c, cg_intr2(c, "llvm.maxnum", l, cg_f32(c, 1.0)));
    LLVMValueRef lse = LLVMBuildSelect(c->b, pos, LLVMBuildFAdd(c->b, m, lg, ""), cg_f32(c, -INFINITY), "");
    return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealUNO, l, l, ""), l, lse, "");
}
