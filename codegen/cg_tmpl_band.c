/* cg_tmpl_band.c — the band and staircase templates: exact bands of 1-4 vectors (rows grouped W
 * apart, every lane visible) and residue classes whose rows see a staircase of class keys. */
#include <math.h>

#include "codegen/cg_kern.h"

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
 * ragged ends) run the general code.
 * compute = bf16 and int8 (on the target's dot products) run the same groups, q copied per
 * chunk as the general code does: bf16 K^T as words of dim pairs; int8 K^T as words of four
 * int8 dims, each 4W-key block smoothed and quantized as the general code's packed blocks
 * (its mean key, the keys' scales and sums kept beside the ring), so that a band row, whose
 * window spans two blocks, adds to each lane the q . mu of its own key's block. */

/* compute = int8: where the band buffers keep a block's mean key (slot 0 or 1; a staircase's
 * one block has slot 0), and the columns' key scales and (VNNI) sums: after QK rows of K^T
 * (of which the words take a quarter), so that one block (a staircase's) has them where
 * cg_kt_*_off put a packed block's. */
static LLVMValueRef band_mu(Kern *k, LLVMValueRef KTB, LLVMValueRef slot) {
    const IrPlan *p = &k->p;
    int64_t qkp = (int64_t)(p->QK + p->W) / p->W * p->W;
    return cg_gep(k->c, k->c->f32, KTB, add(k->c, cg_i64(k->c, (int64_t)p->QK * k->bcs), mul(k->c, slot, cg_i64(k->c, qkp))));
}

static LLVMValueRef band_sk(Kern *k, LLVMValueRef KTB) {
    return band_mu(k, KTB, cg_i64(k->c, k->bcs > 4 * k->p.W ? 2 : 1));
}

static LLVMValueRef band_cs(Kern *k, LLVMValueRef KTB) { return cg_gep(k->c, k->c->f32, band_sk(k, KTB), cg_i64(k->c, k->bcs)); }

/* Packs 4W keys from key0 into the band buffers at column col (and col + 8W when mirror):
 * KTB[d][col + j] = K[key0 + j][d], VSB[col + j][:] = V[key0 + j]; keys past kmax (if not
 * NULL) read key kmax instead. bf16 and int8 compute: K^T as their scores read it (words of
 * dim pairs; of four int8 dims, with the block's mean, scales and sums), V as pairs of rows,
 * the next key clamped to klast. */
static void band_pack(Kern *k, LLVMValueRef KTB, LLVMValueRef VSB, LLVMValueRef key0, LLVMValueRef col,
                      LLVMValueRef mirror, LLVMValueRef kmax, LLVMValueRef klast) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    int W = p->W, BB = 4 * W, CS = k->bcs;
    bool dp = p->compute != IR_COMPUTE_F32, i8 = p->compute == IR_COMPUTE_INT8;
    unsigned va = (unsigned)W * 4;
    LLVMValueRef col2 = LLVMBuildSelect(b, mirror, add(c, col, cg_i64(c, 2 * BB)), col, "col2");
    if (i8) {
        LLVMValueRef dup = LLVMIsConstant(mirror) && !LLVMConstIntGetZExtValue(mirror) ? NULL : LLVMBuildSub(b, col2, col, "");
        cg_pack_kt_vnni(k, key0, kmax, cg_i64(c, BB), cg_gep(c, c->f32, KTB, col), CS, dup,
                        band_mu(k, KTB, LLVMBuildSDiv(b, col, cg_i64(c, BB), "")), cg_gep(c, c->f32, band_sk(k, KTB), col),
                        cg_gep(c, c->f32, band_cs(k, KTB), col));
    } else {
        /* W keys at a time, each key's row read whole before the next W (a row's lines
         * together: from memory the hardware prefetchers follow that, not a column of lines) */
        CgLoop lk, ld;
        LLVMValueRef jj = cg_loop_begin(c, &lk, cg_i64(c, 0), cg_i64(c, BB), cg_i64(c, W), "bkj");
        LLVMValueRef d0 = cg_loop_begin(c, &ld, cg_i64(c, 0), cg_i64(c, p->QK), cg_i64(c, W), "bkd");
        LLVMValueRef rows[64];
        for (int r = 0; r < W; r++) {
            LLVMValueRef key = add(c, key0, add(c, jj, cg_i64(c, r)));
            if (kmax) key = cg_smin(c, key, kmax);
            rows[r] = cg_load_vec(c, ATTN_F32, k->kbase, add(c, cg_k_off(k, key), d0), W);
        }
        if (dp) {
            /* bf16: K^T row (d0 + l) / 2 holds words of dims (d0 + l, d0 + l + 1), rounded */
            cg_pair_kt16(k, rows, d0, KTB, cg_i64(c, CS), add(c, col, jj));
            cg_pair_kt16(k, rows, d0, KTB, cg_i64(c, CS), add(c, col2, jj));
        } else {
            cg_transpose(c, rows);
            for (int l = 0; l < W; l++) {
                LLVMValueRef rowi = mul(c, add(c, d0, cg_i64(c, l)), cg_i64(c, CS));
                cg_store(c, rows[l], cg_gep(c, c->f32, KTB, add(c, rowi, add(c, col, jj))), va);
                cg_store(c, rows[l], cg_gep(c, c->f32, KTB, add(c, rowi, add(c, col2, jj))), va);
            }
        }
        cg_loop_end(c, &ld);
        cg_loop_end(c, &lk);
    }
    CgLoop lj;
    LLVMValueRef j = cg_loop_begin(c, &lj, cg_i64(c, 0), cg_i64(c, BB), cg_i64(c, 1), "bvj");
    LLVMValueRef vkey = add(c, key0, j);
    LLVMValueRef src = cg_v_off(k, kmax ? cg_smin(c, vkey, kmax) : vkey);
    /* bf16: VSB[col + j] holds words of keys j and j + 1 (a pair from every column, so a
     * window starting at an odd column reads pairs too); the last key of the block pairs
     * with the next one, read from the tensor (clamped: past the keys it is never used) */
    LLVMValueRef src2 = NULL;
    if (dp) {
        LLVMValueRef nkey = add(c, vkey, cg_i64(c, 1));
        src2 = cg_v_off(k, cg_smin(c, nkey, klast));
    }
    for (int ch = 0; ch < p->VC; ch++) {
        LLVMValueRef v = cg_load_vec(c, ATTN_F32, k->vbase, add(c, src, cg_i64(c, ch * W)), W);
        if (dp) { /* vcvtne2ps2bf16 rounds both rows (the key's low), a word shuffle interleaves them */
            LLVMValueRef v1 = cg_load_vec(c, ATTN_F32, k->vbase, add(c, src2, cg_i64(c, ch * W)), W);
            v = LLVMBuildBitCast(b, cg_bf16_interleave(c, v, v1), c->vf, "");
        }
        LLVMValueRef e = cg_i64(c, ch * W);
        cg_store(c, v, cg_gep(c, c->f32, VSB, add(c, mul(c, add(c, col, j), cg_i64(c, p->VDP)), e)), va);
        cg_store(c, v, cg_gep(c, c->f32, VSB, add(c, mul(c, add(c, col2, j), cg_i64(c, p->VDP)), e)), va);
    }
    cg_loop_end(c, &lj);
}

/* compute bf16/int8: rows [first, first + n) of q (row stride qs2) into the chunk's Qs as the
 * general code copies them (cg_copy_q), but for the f32 rows; int8: each row's q . mu of the
 * block means mu0 and mu1 (NULL: one block) to CB[i] and CB[4W + i], the share of the scores
 * that smoothing took. */
static void band_q(Kern *k, LLVMValueRef first, LLVMValueRef n, LLVMValueRef mu0, LLVMValueRef mu1, LLVMValueRef CB) {
    Cg *c = k->c;
    const IrPlan *p = &k->p;
    enum { QPF = 6 }; /* rows ahead to prefetch: a residue class's are r rows apart */
    CgLoop li;
    LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), n, cg_i64(c, 1), "bq");
    LLVMValueRef row = add(c, first, i), qv[CG_MAX_CHUNKS];
    cg_copy_q(k, i, mul(c, row, k->qs2), mul(c, add(c, row, cg_i64(c, QPF)), k->qs2), false, qv);
    LLVMValueRef mus[2] = {mu0, mu1};
    for (int m = 0; m < 2 && p->compute == IR_COMPUTE_INT8 && mus[m]; m++) {
        LLVMValueRef acc = LLVMConstNull(c->vf);
        for (int ch = 0; ch * p->W < p->QK; ch++)
            acc = cg_fma(c, qv[ch], cg_load(c, c->vf, cg_gep(c, c->f32, mus[m], cg_i64(c, (int64_t)ch * p->W)), 4), acc);
        cg_store(c, cg_hsum(c, acc), cg_gep(c, c->f32, CB, add(c, i, cg_i64(c, (int64_t)m * 4 * p->W))), 4);
    }
    cg_loop_end(c, &li);
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

/* A group of 4 rows. Key vector u of the group starts at buffer column a0 + W u + sh. Row r's
 * window is vectors r .. r + nv - 1; or, for a staircase (lastm given, sh 0), vectors 0 .. r,
 * the last one's lanes where lastm is set (the others -inf). */
typedef struct BandGroup {
    LLVMValueRef row[4];  /* the rows in q's tensor (f32 reads them in place) */
    LLVMValueRef qi[4];   /* the rows in the chunk (their Qs, int8's corrections) */
    LLVMValueRef s;       /* row r's scores go to scratch row s + W r */
    LLVMValueRef a0;      /* a multiple of W */
    LLVMValueRef lastm;   /* staircase: the last vector's visible lanes; NULL for a band */
    int sh;               /* the lane shift, in [0, W) */
    int cut;              /* int8: the group's keys from this one (u W + lane) are the later block's */
} BandGroup;

static int band_first(bool tri, int r) { return tri ? 0 : r; }

static int band_count(bool tri, int r, int nv) { return tri ? r + 1 : nv; }

/* compute = int8: the scores of row r's vector t (key vector u) from the exact integer dot
 * products acc (i32): s_q s_k acc + q . mu, mu the mean of the block each lane's key is in
 * (CB: row qi's q . mu of the two blocks, cg_qi_off: its s_q; skv: the keys' s_k). */
static LLVMValueRef band_i8_score(Kern *k, const BandGroup *g, LLVMValueRef CB, int r, int u, LLVMValueRef acc, LLVMValueRef skv) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    int W = p->W;
    LLVMValueRef sq = cg_load(c, c->f32, cg_gep(c, c->f32, k->Qs, add(c, g->qi[r], cg_i64(c, 2 * cg_qi_off(p)))), 4);
    LLVMValueRef cm[2];
    for (int m = 0; m < 2; m++)
        cm[m] = cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, CB, add(c, g->qi[r], cg_i64(c, (int64_t)m * 4 * W))), 4));
    int from = g->cut - u * W; /* the lanes from here on are the later block's */
    LLVMValueRef corr = from >= W ? cm[0] : from <= 0 ? cm[1] : LLVMBuildSelect(b, LLVMBuildNot(b, cg_lane_mask(c, from), ""), cm[1], cm[0], "");
    LLVMValueRef x = LLVMBuildSIToFP(b, acc, c->vf, "");
    return cg_fma(c, x, LLVMBuildFMul(b, cg_splat(c, sq), skv, ""), corr);
}

/* The scores of group g into the chunk's S at its scratch rows, each key vector taken from
 * the two aligned vectors around it by one lane shift (valignd) or an unaligned load, rather
 * than loads across cache lines alone. CB: int8's corrections (band_q). */
static void band_scores(Kern *k, LLVMValueRef KTB, const BandGroup *g, int nv, LLVMValueRef S, LLVMValueRef CB) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    enum { R = 4 };
    bool tri = g->lastm != NULL, i8 = p->compute == IR_COMPUTE_INT8, dp = p->compute != IR_COMPUTE_F32;
    if (tri) nv = R;
    int W = p->W, BB = 4 * W, CS = k->bcs, NU = tri ? R : nv + R - 1, sh = g->sh;
    unsigned va = (unsigned)W * 4;
    LLVMValueRef mask[64];
    for (int i = 0; i < W; i++) mask[i] = cg_i32(c, sh + i);
    LLVMValueRef shuf = LLVMConstVector(mask, (unsigned)W);
    LLVMTypeRef at = i8 ? c->vi32 : c->vf;
    LLVMValueRef sacc[R][4], skv[8];
    band_accs(c, sacc, R, nv, "bs");
    if (i8) {
        /* the sums start at -128 sum k' of their lane's key: vpdpbusd adds it with q' + 128 */
        for (int u = 0; u < NU; u++) {
            LLVMValueRef col = add(c, g->a0, cg_i64(c, (int64_t)u * W + sh));
            skv[u] = cg_load(c, c->vf, cg_gep(c, c->f32, band_sk(k, KTB), col), 4);
            LLVMValueRef cs = cg_load(c, c->vi32, cg_gep(c, c->f32, band_cs(k, KTB), col), 4);
            LLVMValueRef off = LLVMBuildNeg(b, LLVMBuildShl(b, cs, cg_splat(c, cg_i32(c, 7)), ""), "");
            for (int r = 0; r < R; r++)
                if (u >= band_first(tri, r) && u - band_first(tri, r) < band_count(tri, r, nv)) cg_store(c, off, sacc[r][u - band_first(tri, r)], va);
        }
    }
    /* bf16, int8: d runs over K^T's rows of words (of dim pairs, of four dims), q's words of
     * row qi[r] after Qs (cg_qi_off) */
    int nd = i8 ? p->QK / 4 : dp ? p->QK / 2 : p->QK;
    CgLoop ld;
    LLVMValueRef d = cg_loop_begin(c, &ld, cg_i64(c, 0), cg_i64(c, nd), cg_i64(c, 4), "bd");
    LLVMValueRef acc[R][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < band_count(tri, r, nv); t++) acc[r][t] = cg_load(c, at, sacc[r][t], va);
    for (int dd = 0; dd < 4; dd++) {
        LLVMValueRef dc = add(c, d, cg_i64(c, dd));
        LLVMValueRef kat = cg_gep(c, c->f32, KTB, add(c, mul(c, dc, cg_i64(c, CS)), g->a0));
        LLVMValueRef al[9], kv[8];
        /* every third vector by an unaligned load, the others by a shift of two aligned ones:
         * loads and shuffles in balance (band 64, 1 head: 0.398 ms against 0.428 with shifts
         * alone and 0.416 with loads alone) */
        for (int u = 0; u < NU + (sh > 0); u++) al[u] = cg_load(c, c->vf, cg_gep(c, c->f32, kat, cg_i64(c, (int64_t)u * W)), va);
        for (int u = 0; u < NU; u++) {
            if (!sh)
                kv[u] = al[u];
            else if (u % 3 == 0)
                kv[u] = cg_load(c, c->vf, cg_gep(c, c->f32, kat, cg_i64(c, (int64_t)u * W + sh)), 4);
            else
                kv[u] = LLVMBuildShuffleVector(b, al[u], al[u + 1], shuf, "");
        }
        for (int r = 0; r < R; r++) {
            if (dp) {
                LLVMValueRef qw = cg_gep(c, c->f32, k->Qs, add(c, mul(c, g->qi[r], cg_i64(c, p->QK)), add(c, dc, cg_i64(c, cg_qi_off(p)))));
                LLVMValueRef qv = cg_splat(c, cg_load(c, c->f32, qw, 4));
                for (int t = 0; t < band_count(tri, r, nv); t++) acc[r][t] = cg_dp_step(c, i8, acc[r][t], qv, kv[band_first(tri, r) + t]);
                continue;
            }
            LLVMValueRef qs = cg_load(c, c->f32, cg_gep(c, c->f32, k->qbase, add(c, mul(c, g->row[r], k->qs2), dc)), 4);
            LLVMValueRef qv = cg_splat(c, qs);
            for (int t = 0; t < band_count(tri, r, nv); t++)
                acc[r][t] = cg_fma(c, qv, kv[band_first(tri, r) + t], acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < band_count(tri, r, nv); t++) cg_store(c, LLVMBuildBitCast(b, acc[r][t], at, ""), sacc[r][t], va);
    cg_loop_end(c, &ld);
    for (int r = 0; r < R; r++) {
        LLVMValueRef srow = mul(c, add(c, g->s, cg_i64(c, (int64_t)r * W)), cg_i64(c, BB));
        for (int t = 0; t < band_count(tri, r, nv); t++) {
            int u = band_first(tri, r) + t;
            LLVMValueRef v = cg_load(c, at, sacc[r][t], va);
            if (i8) v = band_i8_score(k, g, CB, r, u, v, skv[u]);
            if (tri && t == r) v = LLVMBuildSelect(b, g->lastm, v, cg_splat(c, cg_f32(c, -INFINITY)), "");
            cg_store(c, v, cg_gep(c, c->f32, S, add(c, srow, cg_i64(c, (int64_t)t * W))), va);
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
    if (k->p.compute != IR_COMPUTE_F32) {
        /* bf16, int8: the scores are scaled already (q was); the weights as the general code makes
         * them (exp accurate to bf16, rounded by vcvtneps2bf16), written over the row's
         * scores as words of two keys, and the row sum adds the rounded weights */
        LLVMTypeRef v8 = LLVMVectorType(c->f32, 8);
        LLVMValueRef at = cg_gep(c, c->f32, S, mul(c, i, cg_i64(c, BB)));
        LLVMValueRef sv[4], mx = NULL;
        for (int t = 0; t < nv; t++) {
            sv[t] = cg_load(c, c->vf, cg_gep(c, c->f32, at, cg_i64(c, (int64_t)t * W)), va);
            mx = mx ? cg_fmax(c, mx, sv[t]) : sv[t];
        }
        LLVMValueRef m = cg_hmax(c, mx);
        LLVMValueRef log2e = cg_const_like(c, c->vf, 1.44269504088896341);
        LLVMValueRef mlog = LLVMBuildFNeg(b, LLVMBuildFMul(b, cg_splat(c, m), log2e, ""), "");
        LLVMValueRef sum = NULL;
        for (int t = 0; t < nv; t++) {
            LLVMValueRef e = cg_exp2_bf16(c, cg_fma(c, sv[t], log2e, mlog), true);
            LLVMValueRef h = cg_intr(c, "llvm.x86.avx512bf16.cvtneps2bf16.512", NULL, 0, &e, 1);
            cg_store(c, LLVMBuildBitCast(b, h, v8, ""), cg_gep(c, c->f32, at, cg_i64(c, (int64_t)t * W / 2)), 32);
            LLVMValueRef w = LLVMBuildZExt(b, LLVMBuildBitCast(b, h, LLVMVectorType(c->i16, (unsigned)W), ""), c->vi32, "");
            LLVMValueRef pv = LLVMBuildBitCast(b, LLVMBuildShl(b, w, cg_splat(c, cg_i32(c, 16)), ""), c->vf, "");
            sum = sum ? LLVMBuildFAdd(b, sum, pv, "") : pv;
        }
        cg_store(c, m, cg_gep(c, c->f32, M, i), 4);
        cg_store(c, cg_hsum(c, sum), cg_gep(c, c->f32, L, i), 4);
        return;
    }
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
    const IrPlan *p = &k->p;
    enum { R = 4 };
    bool tri = lanes != NULL;
    int W = p->W, BB = 4 * W, NU = tri ? R : nv + R - 1;
    unsigned va = (unsigned)W * 4;
    bool dp = p->compute != IR_COMPUTE_F32;
    LLVMTypeRef bt = LLVMVectorType(LLVMBFloatTypeInContext(c->ctx), (unsigned)W * 2);
    LLVMValueRef li[R];
    for (int r = 0; r < R; r++) li[r] = add(c, s, cg_i64(c, (int64_t)r * W));
    /* on resume, the earlier domains' (o, lse) as one more term: o = (e^(m - M) acc + e^(lse - M)
     * o_old) / (e^(m - M) l + e^(lse - M)), M = max(m, lse) */
    LLVMValueRef resume = cg_resuming(k);
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
            LLVMValueRef mold = cg_load(c, c->f32, cg_gep(c, c->f32, k->lsebase, cg_row_off(k, row[r], k->ls1, k->ls2)), 4);
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
        for (int part = 0; dp && part < (tri ? 3 : 1); part++) {
            /* bf16: pairs of keys a step (lane pair l2: keys 2 l2, 2 l2 + 1 of a vector), P's
             * words of row r at S[li[r]][(u - first(r)) W / 2 + l2], V's at VSB[column]. A
             * staircase's last vector (u = r) has `lanes` keys: pairs below lanes / 2 for rows
             * r >= u (part 0), the rest for rows r > u (part 2), and for an odd `lanes` its
             * half pair (part 1: row u, the masked key's V half zeroed, its weight being 0) */
            LLVMValueRef half = tri ? LLVMBuildLShr(b, lanes, cg_i64(c, 1), "") : NULL;
            LLVMValueRef odd = tri ? LLVMBuildTrunc(b, lanes, c->i1, "") : NULL;
            LLVMValueRef lb = part == 0 ? cg_i64(c, 0) : part == 1 ? half : add(c, half, LLVMBuildZExt(b, odd, c->i64, ""));
            LLVMValueRef le = !tri || part == 2 ? cg_i64(c, W / 2) : part == 0 ? half : add(c, half, LLVMBuildZExt(b, odd, c->i64, ""));
            CgLoop ll;
            LLVMValueRef l2 = cg_loop_begin(c, &ll, lb, le, cg_i64(c, 1), "bl2");
            for (int u = 0; u < NU; u++) {
                int rlo = tri ? u + (part == 2) : (u - nv + 1 > 0 ? u - nv + 1 : 0), rhi = tri || u > R - 1 ? R - 1 : u;
                if (rlo > rhi) continue;
                LLVMValueRef colv = add(c, off0, add(c, cg_i64(c, (int64_t)u * W), add(c, l2, l2)));
                LLVMValueRef vrow = cg_gep(c, c->f32, VSB, mul(c, colv, cg_i64(c, p->VDP)));
                LLVMValueRef vw[4], vm[4];
                for (int j = 0; j < nc; j++) {
                    LLVMValueRef w = cg_load(c, c->vi32, cg_gep(c, c->f32, vrow, cg_i64(c, (int64_t)(c0 + j) * W)), va);
                    vw[j] = LLVMBuildBitCast(b, w, bt, "");
                    vm[j] = part == 1 ? LLVMBuildBitCast(b, LLVMBuildAnd(b, w, cg_splat(c, cg_i32(c, 0xffff)), ""), bt, "") : vw[j];
                }
                for (int r = rlo; r <= rhi; r++) {
                    LLVMValueRef *vv = r == u ? vm : vw;
                    LLVMValueRef pidx = add(c, add(c, mul(c, li[r], cg_i64(c, BB)), cg_i64(c, (int64_t)(u - band_first(tri, r)) * W / 2)), l2);
                    LLVMValueRef pb = LLVMBuildBitCast(b, cg_splat(c, cg_load(c, c->f32, cg_gep(c, c->f32, P, pidx), 4)), bt, "");
                    for (int j = 0; j < nc; j++)
                        cg_store(c, cg_intr(c, "llvm.x86.avx512bf16.dpbf16ps.512", NULL, 0,
                                            (LLVMValueRef[]){cg_load(c, c->vf, oacc[r][j], va), pb, vv[j]}, 3), oacc[r][j], va);
                }
            }
            cg_loop_end(c, &ll);
        }
        for (int part = 0; !dp && part < (tri ? 2 : 1); part++) {
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
            LLVMValueRef ooff = cg_row_off(k, row[r], k->os1, k->os2);
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
        LLVMValueRef at = cg_gep(c, c->f32, k->lsebase, cg_row_off(k, row[r], k->ls1, k->ls2));
        LLVMValueRef lse = cg_row_lse(c, mtot[r], den[r]);
        /* an absent row's slot (a valid row's) keeps its value */
        if (present) lse = LLVMBuildSelect(b, present[r], lse, cg_load(c, c->f32, at, 4), "");
        cg_store(c, lse, at, 4);
    }
    LLVMBuildBr(b, nl);
    LLVMPositionBuilderAtEnd(b, nl);
}

/* Rows [q0, q1) of a band kernel: the chunks whose keys all lie in range through the band
 * groups, the rows before and after them through cg_emit_run. */
void cg_emit_band_task(Kern *k, LLVMValueRef q0, LLVMValueRef q1, LLVMValueRef q_off, int bw, int64_t bhi) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    int W = p->W, BB = 4 * W, nv = bw / W;
    LLVMValueRef CR = cg_i64(c, BB), hi = cg_i64(c, bhi);
    LLVMValueRef klo = cg_smax(c, k->kbeg, cg_i64(c, 0)), khi = cg_smin(c, k->kendp, k->kv_len);
    LLVMValueRef klast = LLVMBuildSub(b, khi, cg_i64(c, 1), "klast"); /* keys past it are never read */
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
        cg_emit_run(k, LLVMBuildSelect(b, lo, q0, qb, ""), LLVMBuildSelect(b, lo, qa, q1, ""));
        cg_loop_end(c, &ls);
    }
    /* the buffers: the ring's memory (the schedule checked it fits; the general rows are done with it) */
    LLVMValueRef KTB = k->KTring, VSB = k->VSring;
    k->bcs = 3 * BB;
    LLVMValueRef S = cg_alloca(c, c->f32, (int64_t)BB * BB, 64, "bsp"); /* a chunk's scores, then P */
    LLVMValueRef M = cg_alloca(c, c->f32, BB, 64, "bm"), L = cg_alloca(c, c->f32, BB, 64, "bl");
    bool dp = p->compute != IR_COMPUTE_F32, i8 = p->compute == IR_COMPUTE_INT8;
    LLVMValueRef CB = i8 ? cg_alloca(c, c->f32, 2 * BB, 64, "bcb") : NULL; /* band_q's corrections */
    LLVMBasicBlockRef bgo = cg_block(c, "band"), bdone = cg_block(c, "band_done");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, n, cg_i64(c, 0), ""), bgo, bdone);
    LLVMPositionBuilderAtEnd(b, bgo);
    LLVMValueRef kb0 = LLVMBuildSub(b, LLVMBuildSub(b, add(c, q_off, qa), hi, ""), CR, "kb0");
    band_pack(k, KTB, VSB, kb0, cg_i64(c, 0), cg_bool(c, true), NULL, klast);
    CgLoop lj;
    LLVMValueRef j = cg_loop_begin(c, &lj, cg_i64(c, 0), n, cg_i64(c, 1), "bch");
    {
        LLVMValueRef blk = add(c, j, cg_i64(c, 1));
        LLVMValueRef odd = LLVMBuildTrunc(b, LLVMBuildAnd(b, blk, cg_i64(c, 1), ""), c->i1, "");
        band_pack(k, KTB, VSB, add(c, kb0, mul(c, blk, CR)), LLVMBuildSelect(b, odd, CR, cg_i64(c, 0), ""),
                  LLVMBuildNot(b, odd, ""), NULL, klast);
        LLVMValueRef base = mul(c, LLVMBuildAnd(b, j, cg_i64(c, 1), ""), CR);
        LLVMValueRef c0 = add(c, qa, mul(c, j, CR));
        if (dp)
            band_q(k, c0, CR, i8 ? band_mu(k, KTB, LLVMBuildAnd(b, j, cg_i64(c, 1), "")) : NULL,
                   i8 ? band_mu(k, KTB, LLVMBuildAnd(b, blk, cg_i64(c, 1), "")) : NULL, CB);
        /* scores of every group (K^T stays in L1), the softmax of every row, then P.V (V stays) */
        /* group s's lane shift is (s + 1) mod W: the groups in the order of their shifts,
         * each with its shift a constant (straight-line code, no switch to mispredict) */
        for (int v = 0; v < W; v++) {
            LLVMValueRef s = cg_i64(c, (v + W - 1) % W);
            /* key vector 0 starts (v ? v : W) + 4W - bw columns past the earlier block's */
            BandGroup g = {.s = s, .sh = v, .cut = bw - (v ? v : W)};
            for (int r = 0; r < 4; r++) {
                g.qi[r] = add(c, s, cg_i64(c, (int64_t)r * W));
                g.row[r] = add(c, c0, g.qi[r]);
            }
            g.a0 = LLVMBuildSub(b, add(c, base, add(c, s, cg_i64(c, 1 + BB - bw))), cg_i64(c, v), "a0");
            band_scores(k, KTB, &g, nv, S, CB);
            /* the next chunk's new K and V rows (4 a group) toward L1: from memory the pack's
             * reads of 64 rows at once stall, which the prefetchers do not foresee (band 64, 8
             * heads from memory: -11-16%; in cache: even). Q and O rows gained nothing. */
            cg_prefetch_keys(k, k->kbase, k->vbase, add(c, add(c, kb0, mul(c, add(c, j, cg_i64(c, 2)), CR)), mul(c, s, cg_i64(c, 4))), 4);
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
void cg_emit_tri_run(Kern *k, LLVMValueRef nv, int64_t tlo, int64_t thi) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    int W = p->W, BB = 4 * W;
    LLVMValueRef one = cg_i64(c, 1), zero = cg_i64(c, 0);
    /* the run's keys [jlo, jend); row i's last key i + E (run rows and keys step alike) */
    LLVMValueRef jlo = cg_smax(c, cg_keys_below(k, cg_i64(c, tlo)), cg_keys_below(k, k->kbeg));
    LLVMValueRef jend = cg_smin(c, cg_keys_below(k, k->kendp), k->nkeys);
    LLVMValueRef E = cg_floor_div(c, LLVMBuildSub(b, LLVMBuildSub(b, k->qpos0, cg_i64(c, thi), ""), k->kpos0, ""), k->kstep);
    LLVMValueRef C = add(c, LLVMBuildSub(b, E, jlo, ""), one); /* row i sees C + i keys */
    LLVMValueRef nlast = LLVMBuildSub(b, nv, one, "");
    LLVMValueRef fits = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSLT, add(c, E, nlast), jend, ""),
                                     LLVMBuildICmp(b, LLVMIntSLE, add(c, C, nlast), cg_i64(c, BB), ""), "tri_fits");
    LLVMBasicBlockRef bgen = cg_block(c, "tri_general"), btri = cg_block(c, "tri"), bdone = cg_block(c, "tri_done");
    LLVMBuildCondBr(b, fits, btri, bgen);
    LLVMPositionBuilderAtEnd(b, bgen);
    cg_emit_run(k, zero, nv);
    LLVMBuildBr(b, bdone);
    LLVMPositionBuilderAtEnd(b, btri);
    LLVMValueRef resume = cg_resuming(k);
    /* rows [0, i0) see nothing: o = 0 and lse = -inf, or on resume the earlier (o, lse) */
    LLVMValueRef i0 = cg_smin(c, cg_smax(c, LLVMBuildSub(b, one, C, ""), zero), nv);
    {
        LLVMBasicBlockRef bz = cg_block(c, "tri_none"), bzd = cg_block(c, "tri_none_done");
        LLVMBuildCondBr(b, LLVMBuildAnd(b, LLVMBuildNot(b, resume, ""), LLVMBuildICmp(b, LLVMIntSGT, i0, zero, ""), ""), bz, bzd);
        LLVMPositionBuilderAtEnd(b, bz);
        CgLoop li;
        LLVMValueRef i = cg_loop_begin(c, &li, zero, i0, one, "tz");
        LLVMValueRef ooff = cg_row_off(k, i, k->os1, k->os2);
        for (int ch = 0; ch < p->VC; ch++) cg_store_vec(c, ATTN_F32, LLVMConstNull(c->vf), k->obase, add(c, ooff, cg_i64(c, ch * W)), W);
        LLVMBasicBlockRef wl = cg_block(c, "tz_lse"), nl = cg_block(c, "tz_nolse");
        LLVMBuildCondBr(b, LLVMBuildIsNotNull(b, k->lsep, ""), wl, nl);
        LLVMPositionBuilderAtEnd(b, wl);
        cg_store(c, cg_f32(c, -INFINITY), cg_gep(c, c->f32, k->lsebase, cg_row_off(k, i, k->ls1, k->ls2)), 4);
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
    bool i8 = p->compute == IR_COMPUTE_INT8;
    LLVMValueRef CB = i8 ? cg_alloca(c, c->f32, 2 * BB, 64, "tcb") : NULL; /* band_q's corrections */
    band_pack(k, KTB, VSB, jlo, zero, cg_bool(c, false), add(c, E, nlast), add(c, E, nlast));
    if (p->compute != IR_COMPUTE_F32) band_q(k, zero, nv, i8 ? band_mu(k, KTB, zero) : NULL, NULL, CB);
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
        BandGroup bg = {.s = g, .a0 = zero, .cut = 8 * W}; /* one block */
        bg.lastm = LLVMBuildICmp(b, LLVMIntULE, cg_iota(c), cg_splat(c, g), "");
        for (int t = 0; t < 4; t++) bg.row[t] = bg.qi[t] = row[t];
        band_scores(k, KTB, &bg, 4, S, CB);
        /* the next class's K and V rows (4 a group) toward L1 */
        cg_prefetch_keys(k, k->knext, k->vnext, add(c, jlo, mul(c, g, cg_i64(c, 4))), 4);
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
