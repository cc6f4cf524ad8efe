/* cg_masked.c — partial blocks: the per-row lane masks of a key block (from the mask, or from
 * exact key bounds), which rows see the whole block, and the row-group loop over the window of
 * vectors a group may see (masked, or few rows scored straight from K). */
#include <math.h>

#include "codegen/cg_kern.h"

/* The lane bits of scratch row `row`, key vector t (a run-time t is an i64 value). */
static LLVMValueRef row_bits(Kern *k, LLVMValueRef row, LLVMValueRef t) {
    Cg *c = k->c;
    LLVMValueRef idx = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, row, cg_i64(c, k->p.NT), ""), t, "");
    LLVMValueRef bits = cg_load(c, k->mbt, cg_gep(c, k->mbt, k->MB, idx), 1);
    LLVMValueRef v = LLVMBuildBitCast(c->b, bits, c->vi1, "");
    if (k->part_rt) v = LLVMBuildSelect(c->b, k->part_rt, v, cg_lane_mask(c, c->W), "");
    return v;
}

/* Scores of a window's `per` vectors from vector tp for the group's rows (from K directly
 * when `dot`, else from the packed KT): score mod, lane mask (`masked`), running maxima in
 * mxs; the scores wait in P. */
static void win_scores(Kern *k, const IrPlan *p, LLVMValueRef *row, LLVMValueRef *qrow, LLVMValueRef tp, int per,
                       bool masked, bool dot, LLVMValueRef *mxs, LLVMValueRef P) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrFunc *f = k->f;
    unsigned va = (unsigned)(p->W * 4);
    LLVMValueRef col = mul(c, tp, cg_i64(c, p->W));
    LLVMValueRef s[16][CG_MAXT];
    if (dot) {
        LLVMValueRef sv[16];
        cg_dot_scores(k, p->R, row, add(c, k->kb, col), masked, sv);
        for (int r = 0; r < p->R; r++) s[r][0] = sv[r];
    } else {
        cg_block_scores(k, p, qrow, col, per, s);
    }
    for (int r = 0; r < p->R; r++) {
        LLVMValueRef mx = cg_load(c, c->vf, mxs[r], va);
        for (int j = 0; j < per; j++) {
            LLVMValueRef t = add(c, tp, cg_i64(c, j));
            LLVMValueRef mv = masked ? row_bits(k, row[r], t) : cg_lane_mask(c, p->W);
            LLVMValueRef sv = s[r][j];
            if (f->score) sv = cg_score_mod(k, row[r], t, sv, mv);
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
void cg_emit_group_loop(Kern *k, LLVMValueRef g, int nr, bool masked, bool dot, LLVMValueRef vt0, LLVMValueRef vt1) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    IrPlan pl = k->p;
    pl.R = nr;
    pl.pv_groups[0] = k->p.pv_groups[nr == k->p.R ? 0 : 1];
    const IrPlan *p = &pl;
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
    LLVMValueRef P = cg_alloca(c, c->f32, cg_p_floats(p), 64, "pw");
    LLVMValueRef mxs[MAXR], qrow[MAXR];
    for (int r = 0; r < p->R; r++) {
        mxs[r] = cg_alloca(c, c->vf, 1, va, "mx");
        cg_store(c, cg_const_like(c, c->vf, -INFINITY), mxs[r], va);
        qrow[r] = cg_q_row(k, row[r]);
    }
    if (dot && p->decode_dot != IR_DECODE_FMA) cg_dot_q(k, p->R, row); /* once for the window */
    if (dot) {
        CgLoop lt;
        LLVMValueRef tp = k->wmax == 1 ? cg_loop_begin_once(c, &lt, t0, t1, "wt")
                                       : cg_loop_begin(c, &lt, t0, t1, cg_i64(c, 1), "wt");
        win_scores(k, p, row, qrow, tp, 1, masked, true, mxs, P);
        cg_loop_end(c, &lt);
        k->dqx = NULL;
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
    cg_softmax_rows(k, g, p->R, bm, mu, as);
    cg_emit_exp_rows(k, p, g, P, mu, as, t0, t1);
    PvCtx pc = {row, P, as, masked, LLVMBuildSub(b, k->kv_len, cg_i64(c, 1), ""), t0, t1, false, false, NULL, false};
    if (dot) pc.pf_ahead = cg_decode_ahead(k); /* the V rows' lines (the scores prefetched K's) */
    if (dot && !masked && k->kvdt == ATTN_I8 && (cg_kv_scale_vec(k, true, k->kb) || p->compute != IR_COMPUTE_F32)) {
        /* int8 V (full blocks): the weights times their keys' V scales, a vector a row and key
         * vector, instead of every V vector times its scale in P.V (the row sums l took the
         * weights as they are). compute bf16/int8: the products rounded to bf16 again (the
         * operands P.V multiplies; V's integers are exact), also as the words of pairs */
        CgLoop lt;
        LLVMValueRef t = cg_loop_begin(c, &lt, t0, t1, cg_i64(c, 1), "vsc");
        LLVMValueRef sv = cg_kv_scales(k, true, add(c, k->kb, mul(c, t, cg_i64(c, p->W))), NULL);
        for (int r = 0; r < p->R; r++) {
            LLVMValueRef at = cg_gep(c, c->f32, P, add(c, cg_i64(c, (int64_t)r * p->BK), mul(c, t, cg_i64(c, p->W))));
            LLVMValueRef w = LLVMBuildFMul(b, cg_load(c, c->vf, at, va), sv, "");
            if (p->pv_bf16dot && p->W == 16) {
                /* the paired P.V reads only the words */
                LLVMValueRef h = cg_intr(c, "llvm.x86.avx512bf16.cvtneps2bf16.512", NULL, 0, &w, 1);
                LLVMValueRef pw = cg_pw_at(c, p, P, cg_i64(c, r), mul(c, t, cg_i64(c, p->W / 2)));
                cg_store(c, h, pw, 32);
                continue;
            }
            if (p->compute != IR_COMPUTE_F32) w = cg_round_bf16(c, w);
            cg_store(c, w, at, va);
        }
        cg_loop_end(c, &lt);
        pc.vfolded = true;
    }
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
        cg_emit_pv(k, p, &plain);
        LLVMBuildBr(b, bj);
        LLVMPositionBuilderAtEnd(b, bsel);
        pc.rare = true;
        cg_emit_pv(k, p, &pc);
        LLVMBuildBr(b, bj);
        LLVMPositionBuilderAtEnd(b, bj);
    } else {
        cg_emit_pv(k, p, &pc);
    }
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
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
LLVMValueRef cg_group_full(Kern *k, LLVMValueRef g) {
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
void cg_emit_rowmasks(Kern *k, bool eval, LLVMValueRef any_slot) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    const IrPrune *pr = &k->f->prune;
    if (eval && pr->enabled && pr->exact && k->cw <= 1 && p->BK <= 64) {
        /* a row sees one interval of keys (causal, windows, bands, prefixes): its bits from
         * k_lo/k_hi at that row, a few scalar instructions instead of a vector test per key */
        CgEnv *env = &k->env;
        LLVMValueRef qmin = env->qmin, qmax = env->qmax;
        LLVMTypeRef i64 = c->i64;
        CgLoop li;
        LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), k->npad, cg_i64(c, 1), "mi");
        cg_env_row(k, i);
        env->qmin = env->qmax = env->q;
        LLVMValueRef alltrue = cg_lane_mask(c, p->W);
        LLVMValueRef lo = cg_expr(c, env, pr->k_lo, alltrue).v, hi = cg_expr(c, env, pr->k_hi, alltrue).v;
        /* the run's keys [a, e) of the block, within the keys to visit */
        LLVMValueRef a = LLVMBuildSub(b, cg_keys_below(k, lo), k->kb, "");
        LLVMValueRef e = LLVMBuildSub(b, cg_smin(c, cg_keys_below(k, add(c, hi, cg_i64(c, 1))), k->kv_len), k->kb, "");
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
    LLVMValueRef kv[8], kbase[8], valid[8];
    for (int t = 0; t < p->NT; t++) {
        LLVMValueRef idx = add(c, cg_splat(c, add(c, k->kb, cg_i64(c, t * p->W))), cg_iota(c));
        valid[t] = LLVMBuildICmp(b, LLVMIntSLT, idx, cg_splat(c, k->kv_len), "");
        kv[t] = cg_kvec(k, add(c, k->kb, cg_i64(c, t * p->W)));
        kbase[t] = cg_kvec_base(k, add(c, k->kb, cg_i64(c, t * p->W)));
        if (eval) {
            /* key-only input reads (doc[b, k], rank[b, k]) once per block, not per row */
            k->env.k = kv[t];
            k->env.kbase = kbase[t];
            k->env.tag = t;
            cg_expr_hoist(c, &k->env, k->mask, valid[t]);
        }
    }
    CgLoop li;
    LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), k->npad, cg_i64(c, 1), "mi");
    cg_env_row(k, i);
    LLVMValueRef acc_any = cg_load(c, k->mbt, any_slot, 8), full = NULL;
    for (int t = 0; t < p->NT; t++) {
        LLVMValueRef m = valid[t];
        if (eval) {
            k->env.k = kv[t];
            k->env.kbase = kbase[t];
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
    k->env.kbase = NULL;
}
