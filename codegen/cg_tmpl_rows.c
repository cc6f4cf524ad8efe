/* cg_tmpl_rows.c — the general template ("rows"): a run's query rows in chunks of BQ, each over
 * the run's keys in blocks of BK. Per block: empty blocks are skipped, K is packed transposed
 * once (and V copied when the plan says so), then row groups run the full or the masked
 * microkernels, or a chunk of few rows scores straight from K. The key-runs and class-runs
 * templates (cg_tmpl_runs.c) and the group entry run this over their own runs. */
#include <math.h>

#include "codegen/cg_kern.h"

/* A pass of the group entry's rows from row r on, over every K/V head at once (kvall): the
 * K/V bases (and int8 scales) of the pass's head, r's; *saved keeps the call's. A pass never
 * spans two heads (the entry checked: a head's rows fill whole passes). */
static void pass_head(Kern *k, LLVMValueRef r, LLVMValueRef *saved) {
    Cg *c = k->c;
    saved[0] = k->kbase, saved[1] = k->vbase, saved[2] = k->ksc, saved[3] = k->vsc;
    if (!k->kvall) return;
    LLVMValueRef unit = LLVMBuildUDiv(c->b, cg_task_row(k, r), mul(c, k->gnq, cg_i64(c, k->gsize)), "unit");
    unit = mul(c, unit, k->kvall); /* head 0 (the call's) unless kvall */
    LLVMTypeRef et = cg_elem_type(c, k->kvdt);
    k->kbase = cg_gep(c, et, k->kbase, mul(c, unit, k->ks1));
    k->vbase = cg_gep(c, et, k->vbase, mul(c, unit, k->vs1));
    if (k->ksc) k->ksc = cg_gep(c, c->f32, k->ksc, unit);
    if (k->vsc) k->vsc = cg_gep(c, c->f32, k->vsc, unit);
}

static void pass_done(Kern *k, LLVMValueRef *saved) {
    k->kbase = saved[0], k->vbase = saved[1], k->ksc = saved[2], k->vsc = saved[3];
}

/* The few-rows body of a key block (decode): scores straight from K, row by row. */
static void body_few(Kern *k, bool unused) {
    (void)unused;
    Cg *c = k->c;
    const IrPlan *p = &k->p;
    LLVMValueRef nrows = add(c, k->last, cg_i64(c, 1));
    k->vfin_slot = NULL; /* K and V were not looked at: P.V keeps its lane selects */
    CgLoop ls, lr;
    if (k->grouped) {
        /* the heads of a group, row by row over sub-blocks of K and V that fit in half of L1
         * (~16 KiB; d=128: 16 keys), so every row's pass hits L1 while the next keys are
         * prefetched (measured ~+8% K/V bandwidth from memory against 32 keys) */
        int sub = p->decode_keys / p->W;
        k->wmax = sub;
        LLVMValueRef v0 = cg_loop_begin(c, &ls, cg_i64(c, 0), cg_i64(c, p->NT), cg_i64(c, sub), "dsub");
        LLVMValueRef v1 = add(c, v0, cg_i64(c, sub));
        int dr = p->decode_rows > 1 ? p->decode_rows : 1; /* rows a pass (padding repeats the last) */
        if (cg_pages_whole(k)) {
            /* paged: the block's sub-blocks lie on whole pages (cg_emit_run sends the others
             * to the packed path): each looks its pages up once for all its K and V rows and
             * the prefetches (a lookup per row was ~360 instructions more a sub-block than
             * contiguous decode), its keys counted from its first, addressed as contiguous ones */
            LLVMValueRef key0 = add(c, k->kb, mul(c, v0, cg_i64(c, p->W)));
            LLVMValueRef kb = k->kb, kpos0 = k->kpos0, kv_len = k->kv_len;
            cg_page_hoist(k, key0, p->decode_keys, LLVMBuildSub(c->b, kv_len, cg_i64(c, 1), ""));
            k->kb = cg_i64(c, 0);
            k->kpos0 = add(c, kpos0, key0); /* paged kernels: key index j is position kpos0 + j */
            k->kv_len = LLVMBuildSub(c->b, kv_len, key0, "");
            /* the sub-block's vectors (the block's last sub-block may be shorter) */
            LLVMValueRef nv = p->NT % sub == 0 ? cg_i64(c, sub) : cg_smin(c, cg_i64(c, sub), LLVMBuildSub(c->b, cg_i64(c, p->NT), v0, ""));
            LLVMValueRef r = cg_loop_begin(c, &lr, cg_i64(c, 0), dr > 1 ? k->npad : nrows, cg_i64(c, dr), "drp");
            LLVMValueRef saved[4];
            pass_head(k, r, saved);
            cg_emit_group_loop(k, r, dr, false, true, cg_i64(c, 0), nv);
            pass_done(k, saved);
            cg_loop_end(c, &lr);
            k->kb = kb, k->kpos0 = kpos0, k->kv_len = kv_len, k->pgn = 0;
        } else {
            LLVMValueRef r = cg_loop_begin(c, &lr, cg_i64(c, 0), dr > 1 ? k->npad : nrows, cg_i64(c, dr), "dr");
            LLVMValueRef saved[4];
            pass_head(k, r, saved);
            cg_emit_group_loop(k, r, dr, false, true, v0, v1); /* full blocks only (cg_emit_run) */
            pass_done(k, saved);
            cg_loop_end(c, &lr);
        }
        cg_loop_end(c, &ls);
    } else {
        /* one variant for full and partial blocks: decode is bound by reading K and V */
        LLVMValueRef r = cg_loop_begin(c, &lr, cg_i64(c, 0), nrows, cg_i64(c, 1), "dr");
        k->part_rt = k->part;
        cg_emit_group_loop(k, r, 1, true, true, NULL, NULL);
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
    const IrPlan *p = &k->p;
    unsigned va = (unsigned)p->W * 4;
    LLVMValueRef expo = cg_splat(c, cg_i32(c, 0x7f800000));
    LLVMValueRef zs = cg_alloca(c, c->vi32, 1, va, "vz");
    cg_store(c, LLVMConstNull(c->vi32), zs, va);
    CgLoop lj;
    if (copy && p->pv_bf16dot) {
        /* P.V on bf16 dot products: VS[j / 2][x] = (V[j][x], V[j + 1][x]) as bf16 words, over
         * the whole block (past the end the last row again), so that the paired P.V may run
         * over any window of the block's vectors: the weights of the keys past the end are 0 */
        LLVMValueRef j = cg_loop_begin(c, &lj, cg_i64(c, 0), cg_i64(c, p->BK), cg_i64(c, 2), "vpp");
        LLVMValueRef key0 = cg_smin(c, add(c, k->kb, j), klast), key1 = cg_smin(c, add(c, add(c, k->kb, j), cg_i64(c, 1)), klast);
        LLVMValueRef off0 = cg_v_off(k, key0), off1 = cg_v_off(k, key1);
        LLVMValueRef dst = cg_gep(c, c->f32, k->VS, mul(c, LLVMBuildLShr(b, j, cg_i64(c, 1), ""), cg_i64(c, p->VDP)));
        /* vcvtne2ps2bf16 rounds both rows at once (bf16 of v0 in the low half), a word
         * shuffle interleaves them; the finiteness check on the bf16 values (which may have
         * rounded up to inf): their largest exponent field, 16 bits a lane */
        LLVMTypeRef w16 = LLVMVectorType(c->i16, 32);
        LLVMValueRef z = cg_load(c, c->vi32, zs, va);
        LLVMValueRef e16[32];
        for (int l = 0; l < 32; l++) e16[l] = LLVMConstInt(c->i16, 0x7f80, 0);
        LLVMValueRef ex16 = LLVMConstVector(e16, 32);
        for (int ch = 0; ch < p->VC; ch++) {
            int n = tail_lanes(p->VD, p->W, ch);
            LLVMValueRef v0 = cg_load_vec(c, k->kvdt, k->vbase, add(c, off0, cg_i64(c, ch * p->W)), n);
            LLVMValueRef v1 = cg_load_vec(c, k->kvdt, k->vbase, add(c, off1, cg_i64(c, ch * p->W)), n);
            v0 = cg_kv_scaled(k, true, key0, v0);
            v1 = cg_kv_scaled(k, true, key1, v1);
            LLVMValueRef w = cg_bf16_interleave(c, v0, v1);
            cg_store(c, w, cg_gep(c, c->f32, dst, cg_i64(c, ch * p->W)), va);
            z = LLVMBuildBitCast(b, cg_intr2(c, "llvm.umax", LLVMBuildBitCast(b, z, w16, ""), LLVMBuildAnd(b, w, ex16, "")), c->vi32, "");
        }
        cg_store(c, z, zs, va);
        cg_loop_end(c, &lj);
        LLVMValueRef z16 = LLVMBuildBitCast(b, cg_load(c, c->vi32, zs, va), w16, "");
        LLVMValueRef bad16 = LLVMBuildICmp(b, LLVMIntEQ, z16, ex16, "");
        LLVMValueRef bad = LLVMBuildICmp(b, LLVMIntNE, LLVMBuildBitCast(b, bad16, c->i32, ""), cg_i32(c, 0), "");
        cg_store(c, LLVMBuildNot(b, bad, ""), k->vfin_slot, 1);
        return;
    }
    LLVMValueRef j = cg_loop_begin(c, &lj, cg_i64(c, 0), kn, cg_i64(c, 1), copy ? "vp" : "vc");
    LLVMValueRef vkey = cg_smin(c, add(c, k->kb, j), klast), voff = cg_v_off(k, vkey);
    LLVMValueRef dst = copy ? cg_gep(c, c->f32, k->VS, mul(c, j, cg_i64(c, p->VDP))) : NULL;
    LLVMValueRef z = cg_load(c, c->vi32, zs, va);
    for (int ch = 0; ch < p->VC; ch++) {
        LLVMValueRef v = cg_load_vec(c, k->kvdt, k->vbase, add(c, voff, cg_i64(c, ch * p->W)), tail_lanes(p->VD, p->W, ch));
        v = cg_operand(k, cg_kv_scaled(k, true, vkey, v));
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

/* compute = bf16 on bf16 dot products, a whole chunk of 16 dims of 16 keys (rows[r]: key
 * j0 + r): KT[(d0 / 2 + i) * stride + j0 + r] = (K[r][d0 + 2i], K[r][d0 + 2i + 1]) as bf16. A key's row
 * in bf16 is already its words of pairs, so vcvtne2ps2bf16 makes words of two keys a vector
 * (key v low, v + 8 high) and three rounds exchanging a vector index bit with a lane bit
 * transpose the 8 x 16 words (8 conversions and 24 shuffles, where rounding, a 16 x 16
 * transpose and the pairing took ~200 instructions). */
void cg_pair_kt16(Kern *k, LLVMValueRef *rows, LLVMValueRef d0, LLVMValueRef KT, LLVMValueRef stride, LLVMValueRef j0) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    LLVMValueRef w[8];
    for (int v = 0; v < 8; v++)
        w[v] = LLVMBuildBitCast(b, cg_intr(c, "llvm.x86.avx512bf16.cvtne2ps2bf16.512", NULL, 0, (LLVMValueRef[]){rows[v + 8], rows[v]}, 2), c->vi32, "");
    for (int bit = 1; bit < 8; bit *= 2) {
        LLVMValueRef i0[16], i1[16];
        for (int l = 0; l < 16; l++) {
            i0[l] = cg_i32(c, l & bit ? 16 + (l ^ bit) : l);
            i1[l] = cg_i32(c, l & bit ? 16 + l : l ^ bit);
        }
        LLVMValueRef m0 = LLVMConstVector(i0, 16), m1 = LLVMConstVector(i1, 16);
        for (int v = 0; v < 8; v++) {
            if (v & bit) continue;
            LLVMValueRef a = w[v], bv = w[v | bit];
            w[v] = LLVMBuildShuffleVector(b, a, bv, m0, "");
            w[v | bit] = LLVMBuildShuffleVector(b, a, bv, m1, "");
        }
    }
    LLVMValueRef dp0 = LLVMBuildSDiv(b, d0, cg_i64(c, 2), "");
    for (int i = 0; i < 8; i++)
        cg_store(c, w[i], cg_gep(c, c->f32, KT, add(c, mul(c, add(c, dp0, cg_i64(c, i)), stride), j0)), 64);
}

/* K of the block's keys [0, kn) packed transposed, W keys at a time: KT[d][j] = K[kb + j][d]
 * (keys past klast repeat it: their lanes are masked in every use); whole chunks of d in a
 * runtime loop, a tail chunk after it. */
static void pack_kt(Kern *k, LLVMValueRef kn, LLVMValueRef klast) {
    Cg *c = k->c;
    const IrPlan *p = &k->p;
    CgLoop lj;
    LLVMValueRef j0 = cg_loop_begin(c, &lj, cg_i64(c, 0), kn, cg_i64(c, p->W), "kj");
    LLVMValueRef koff[64], kid[64];
    for (int r = 0; r < p->W; r++) {
        LLVMValueRef key = add(c, add(c, k->kb, j0), cg_i64(c, r));
        kid[r] = cg_smin(c, key, klast);
        koff[r] = cg_k_off(k, kid[r]);
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
        for (int r = 0; r < p->W; r++)
            rows[r] = cg_kv_scaled(k, false, kid[r], cg_load_vec(c, k->kvdt, k->kbase, add(c, koff[r], d0), n));
        if (p->qk_bf16dot && n == 16 && p->W == 16) {
            cg_pair_kt16(k, rows, d0, k->KT, cg_i64(c, p->BK), j0);
            if (!part) cg_loop_end(c, &lc);
            continue;
        }
        if (p->compute == IR_COMPUTE_BF16)
            for (int r = 0; r < p->W; r++) rows[r] = cg_round_bf16(c, rows[r]);
        cg_transpose(c, rows);
        for (int l = 0; l < n && p->qk_bf16dot; l += n) cg_pair_kt(k, rows, n, d0, j0);
        for (int l = 0; l < n && !p->qk_bf16dot; l++) {
            LLVMValueRef dst = cg_gep(c, c->f32, k->KT, add(c, mul(c, add(c, d0, cg_i64(c, l)), cg_i64(c, p->BK)), j0));
            cg_store(c, rows[l], dst, (unsigned)p->W * 4);
        }
        if (!part) cg_loop_end(c, &lc);
    }
    cg_loop_end(c, &lj);
}

/* K of a key block packed transposed for the row groups; V rows copied to VS (vpack_on); for
 * a partial block, whether its V rows are all finite (*vfin_slot). */
static void body_pack(Kern *k, bool unused) {
    (void)unused;
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    /* the block's keys before the chunk's end only (a tail block packs its W-vectors of keys);
     * into a ring, the whole block before the run's end, so that the next chunks (whose end
     * lies further) find it as they need it, but never past the task's keys (k_end: a key
     * window holds no row after it) */
    LLVMValueRef kend = p->NRING > 1 ? cg_smin(c, k->nkeys, cg_keys_below(k, k->kendp)) : k->kv_len;
    LLVMValueRef kn = cg_smin(c, LLVMBuildSub(b, kend, k->kb, ""), cg_i64(c, p->BK));
    LLVMValueRef klast = LLVMBuildSub(b, kend, cg_i64(c, 1), "");
    if (p->qk_vnni) {
        /* VNNI: quantized straight from K's rows, in place of the f32 block */
        LLVMValueRef ex[3];
        int64_t offs[3] = {cg_kt_mu_off(p), cg_kt_sk_off(p), cg_kt_cs_off(p)};
        for (int i = 0; i < 3; i++) ex[i] = cg_gep(c, c->f32, k->KT, cg_i64(c, offs[i]));
        cg_pack_kt_vnni(k, k->kb, klast, kn, k->KT, p->BK, NULL, ex[0], ex[1], ex[2]);
    } else {
        pack_kt(k, kn, klast);
        if (p->compute == IR_COMPUTE_INT8) cg_quantize_kt(k, kn);
    }
    if (k->p.vpack == IR_VPACK_NEVER) {
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
    const IrPlan *p = &k->p;
    CgLoop lg;
    LLVMValueRef g = cg_loop_begin(c, &lg, cg_i64(c, 0), k->npad, cg_i64(c, p->R), "g");
    /* in a partial block, the groups that see all of it run the full blocks' code (after the
     * others, from the full piece); a full block runs every group there */
    LLVMValueRef skip = masked ? cg_group_full(k, g)
                               : LLVMBuildAnd(c->b, k->part, LLVMBuildNot(c->b, cg_group_full(k, g), ""), "");
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
            cg_prefetch_key(k, cg_i64(c, 0), add(c, k->kv_len, add(c, g, cg_i64(c, r))));
            LLVMValueRef next = add(c, add(c, k->qc, cg_i64(c, p->BQ)), add(c, g, cg_i64(c, r)));
            cg_prefetch_lines(k, cg_gep(c, et, k->qbase, cg_row_off(k, next, k->qs1, k->qs2)), cg_row_lines(k, p->QK));
        }
        LLVMBuildBr(c->b, bpd);
        LLVMPositionBuilderAtEnd(c->b, bpd);
    }
    if (masked)
        cg_emit_group_loop(k, g, p->R, true, false, NULL, NULL);
    else
        cg_emit_group(k, g);
    cg_loop_end(c, &lg);
}

/* i1: the kernel resumes from the (o, lse) in the output (a->resume, with an lse to read). */
LLVMValueRef cg_resuming(Kern *k) {
    Cg *c = k->c;
    return LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntNE, k->resume, cg_i64(c, 0), ""), LLVMBuildIsNotNull(c->b, k->lsep, ""),
                        "resuming");
}

/* Row i of the chunk's Q from element qoff of q: quantized (int8) or as words of bf16 pairs
 * (bf16 dot products) after Qs's rows (cg_qi_off); its chunks scaled to f32 (rounded to bf16
 * for compute bf16) into Qs if `f32` (the scores read it, but for the band's: -5% there), and
 * into v if given; the row at element `ahead` prefetched toward L1 (NULL: none). */
void cg_copy_q(Kern *k, LLVMValueRef i, LLVMValueRef qoff, LLVMValueRef ahead, bool f32, LLVMValueRef *v) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    LLVMValueRef dst = cg_gep(c, c->f32, k->Qs, mul(c, i, cg_i64(c, p->QK)));
    LLVMValueRef sc = cg_splat(c, cg_f32(c, k->f->scale)), qv[CG_MAX_CHUNKS];
    if (ahead) {
        LLVMValueRef at = cg_gep(c, cg_elem_type(c, k->dt), k->qbase, ahead);
        LLVMTypeRef pt = c->ptr;
        int bytes = p->QK * (k->dt == ATTN_F32 ? 4 : 2);
        for (int l = 0; l * 64 < bytes; l++) {
            LLVMValueRef args[4] = {cg_gep(c, c->i8, at, cg_i64(c, (int64_t)l * 64)), cg_i32(c, 0), cg_i32(c, 3), cg_i32(c, 1)};
            cg_intr(c, "llvm.prefetch", &pt, 1, args, 4);
        }
    }
    int nch = (p->QK + p->W - 1) / p->W;
    for (int ch = 0; ch < nch; ch++) {
        LLVMValueRef x = cg_load_vec(c, k->dt, k->qbase, add(c, qoff, cg_i64(c, ch * p->W)), tail_lanes(p->QK, p->W, ch));
        qv[ch] = LLVMBuildFMul(b, x, sc, "");
        /* bf16 dot products: vcvtneps2bf16 rounds as cg_round_bf16 does and makes consecutive
         * bf16, i.e. the words of dim pairs (lanes past qk_dim are 0) */
        if (p->qk_bf16dot)
            cg_store(c, cg_intr(c, "llvm.x86.avx512bf16.cvtneps2bf16.512", NULL, 0, &qv[ch], 1),
                     cg_gep(c, c->f32, dst, cg_i64(c, cg_qi_off(p) + (int64_t)ch * p->W / 2)), 4);
        if (p->compute == IR_COMPUTE_BF16) qv[ch] = cg_round_bf16(c, qv[ch]);
        if (f32) cg_store(c, qv[ch], cg_gep(c, c->f32, dst, cg_i64(c, ch * p->W)), 4);
        if (v) v[ch] = qv[ch];
    }
    if (p->compute == IR_COMPUTE_INT8) cg_quantize_q(k, i, qv);
}

/* Rows [r0, r1) of the current run: chunks of BQ rows, each over the run's keys. */
void cg_emit_run(Kern *k, LLVMValueRef q0, LLVMValueRef q1) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
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
    /* every K/V head at once: each chunk's rows stop at the same block (their positions and
     * pages are the same), so the last chunk's stop is the call's */
    if (k->stop) cg_store(c, cg_i64(c, -1), k->stop, 8);
    LLVMValueRef nrows = cg_smin(c, cg_i64(c, p->BQ), LLVMBuildSub(b, q1, qc, ""));
    k->last = LLVMBuildSub(b, nrows, cg_i64(c, 1), "last");
    /* rows rounded up to whole groups of R: the padding rows repeat the last row */
    k->npad = mul(c, LLVMBuildSDiv(b, add(c, nrows, cg_i64(c, p->R - 1)), cg_i64(c, p->R), ""), cg_i64(c, p->R));
    k->qlo = add(c, k->qpos0, mul(c, qc, cg_i64(c, k->qstep)));
    LLVMValueRef qhi = cg_qpos_row(k, k->last);
    if (k->grouped) {
        /* rows of several heads: the chunk's positions are (within) the task's */
        k->qlo = k->qpos0;
        qhi = add(c, k->qpos0, LLVMBuildSub(b, k->gnq, cg_i64(c, 1), ""));
    }
    /* the tile function of a kernel with a group function meets few rows only in the tail
     * of a long prefill: it packs K for them too and has no few-rows piece to compile */
    LLVMValueRef few = !p->few_rows ? cg_bool(c, false) : LLVMBuildICmp(b, LLVMIntSLE, nrows, cg_i64(c, p->few_rows), "few");
    /* every K/V head at once: a head's rows are few (the entry checked), not the chunk's */
    LLVMValueRef kvall = k->stop ? LLVMBuildICmp(b, LLVMIntNE, k->kvall, cg_i64(c, 0), "") : NULL;
    if (kvall && p->few_rows) few = LLVMBuildOr(b, few, kvall, "");
    {
        /* pack Q (scaled to f32) and reset the softmax state; padded rows repeat the last */
        CgLoop li;
        LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), k->npad, cg_i64(c, 1), "qi");
        LLVMValueRef qoff = cg_row_off(k, cg_task_row(k, i), k->qs1, k->qs2);
        /* the row QPF ahead toward L1: rows of a residue class are r rows apart, each its own
         * lines, which the hardware prefetchers do not foresee */
        enum { QPF = 6 };
        LLVMValueRef ahead = cg_row_off(k, cg_task_row(k, add(c, i, cg_i64(c, QPF))), k->qs1, k->qs2);
        if (!k->p.qdirect) cg_copy_q(k, i, qoff, ahead, true, NULL);
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
        LLVMBuildCondBr(b, cg_resuming(k), bres, bgo);
        LLVMPositionBuilderAtEnd(b, bres);
        CgLoop li;
        LLVMValueRef i = cg_loop_begin(c, &li, cg_i64(c, 0), k->npad, cg_i64(c, 1), "ri");
        LLVMValueRef row = cg_task_row(k, i);
        LLVMValueRef lse = cg_load(c, c->f32, cg_gep(c, c->f32, k->lsebase, cg_row_off(k, row, k->ls1, k->ls2)), 4);
        LLVMValueRef seen = cg_seen(c, lse, -INFINITY); /* a NaN lse resumes as NaN */
        cg_store(c, LLVMBuildSelect(b, seen, lse, cg_f32(c, -INFINITY), ""), cg_gep(c, c->f32, k->M, i), 4);
        LLVMValueRef l1 = LLVMBuildInsertElement(b, LLVMConstNull(c->vf), cg_f32(c, 1.0), cg_i32(c, 0), "");
        cg_store(c, LLVMBuildSelect(b, seen, l1, LLVMConstNull(c->vf), ""), cg_gep(c, c->f32, k->L, mul(c, i, cg_i64(c, p->W))), va);
        LLVMValueRef ooff = cg_row_off(k, row, k->os1, k->os2);
        for (int ch = 0; ch < p->VC; ch++) {
            LLVMValueRef ov = cg_load_vec(c, k->odt, k->obase, add(c, ooff, cg_i64(c, ch * p->W)), tail_lanes(p->VD, p->W, ch));
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
            if (k->grouped) env->h = cg_row_head(k, qc); /* the mask does not read h (a group entry's condition) */
            lo = cg_smax(c, lo, cg_expr(c, env, f->prune.k_lo, alltrue).v);
            hi = cg_smin(c, hi, cg_expr(c, env, f->prune.k_hi, alltrue).v);
            lo = cg_smin(c, lo, kv_len);
            hi = cg_smax(c, hi, cg_i64(c, -1));
        }
        klo = cg_smax(c, klo, cg_keys_below(k, lo));
        kend = cg_smin(c, kend, cg_keys_below(k, add(c, hi, cg_i64(c, 1))));
    }
    k->kv_len = kend; /* keys at or past kend are masked like the kv tail */

    /* key blocks */
    k->vfin_ring = cg_alloca(c, c->i1, p->NRING, 1, "vfin");
    cg_frame_fill(k, false);
    CgLoop lk;
    k->kb = cg_loop_begin(c, &lk, klo, kend, cg_i64(c, p->BK), "kb");
    if (kvall) { /* stopped (below): the blocks left are the runtime's */
        LLVMBasicBlockRef go = cg_block(c, "going"), skip = cg_block(c, "stopped");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGE, cg_load(c, c->i64, k->stop, 8), cg_i64(c, 0), ""), skip, go);
        LLVMPositionBuilderAtEnd(b, skip);
        cg_loop_continue(c, &lk);
        LLVMBuildBr(b, go);
        LLVMPositionBuilderAtEnd(b, go);
    }
    LLVMValueRef cls = cg_i32(c, 2);
    if (prune) {
        env->kmin = cg_kpos(k, k->kb);
        env->kmax = cg_kpos(k, LLVMBuildSub(b, cg_smin(c, add(c, k->kb, cg_i64(c, p->BK)), kend), cg_i64(c, 1), ""));
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
        cg_emit_rowmasks(k, true, any_slot);
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, btl);
        cg_emit_rowmasks(k, false, any_slot);
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
        k->KT = cg_gep(c, c->f32, k->KTring, mul(c, rslot, cg_i64(c, ir_plan_kt_floats(p))));
        if (k->p.vpack != IR_VPACK_NEVER) k->VS = cg_gep(c, c->f32, k->VSring, mul(c, rslot, cg_i64(c, (int64_t)p->BK * p->VDP)));
        k->vfin_slot = cg_gep(c, c->i1, k->vfin_ring, rslot);
        LLVMValueRef tkb = cg_load(c, c->i64, cg_gep(c, c->i64, k->tag_kb, rslot), 8);
        rhit = LLVMBuildICmp(b, LLVMIntEQ, tkb, k->kb, "hit");
    }
    cg_frame_fill(k, true);
    if (k->grouped) few = LLVMBuildAnd(b, few, LLVMBuildNot(b, part, ""), "");
    /* paged: a block whose decode sub-blocks lie on whole pages (not one starting within a
     * page where a window starts: the runtime starts the calls after it on a page) */
    if (k->grouped && cg_pages_whole(k)) {
        int sub = p->decode_keys / p->W;
        for (int v0 = 0; v0 < p->NT; v0 += sub)
            few = LLVMBuildAnd(b, few, cg_page_fits(k, add(c, k->kb, cg_i64(c, (int64_t)v0 * p->W)), p->decode_keys), "");
    }
    if (kvall) {
        /* every K/V head at once: a block for the packed path stops the key loop here */
        LLVMBasicBlockRef bnf = cg_block(c, "notfew"), bst = cg_block(c, "stop");
        LLVMBuildCondBr(b, few, bdot, bnf);
        LLVMPositionBuilderAtEnd(b, bnf);
        LLVMBuildCondBr(b, kvall, bst, bpack);
        LLVMPositionBuilderAtEnd(b, bst);
        cg_store(c, cg_kpos(k, k->kb), k->stop, 8);
        cg_loop_continue(c, &lk);
        LLVMBuildBr(b, bpack);
    } else {
        LLVMBuildCondBr(b, few, bdot, bpack);
    }
    LLVMPositionBuilderAtEnd(b, bdot);
    if (k->grouped) {
        /* the heads of a group (decode): full blocks, without lane selects (the hot loop of
         * decode, fully optimized); partial ones (the kv tail) take the packed path */
        cg_emit_piece(k, "few", true, body_few, false);
    } else if (!LLVMIsConstant(few)) {
        cg_emit_piece(k, "few", false, body_few, false);
    }
    LLVMBuildBr(b, bdone);
    LLVMPositionBuilderAtEnd(b, bpack);
    if (rhit) {
        LLVMBasicBlockRef bdo = cg_block(c, "ringpack"), bhas = cg_block(c, "ringhit");
        LLVMBuildCondBr(b, rhit, bhas, bdo);
        LLVMPositionBuilderAtEnd(b, bdo);
        cg_emit_piece(k, "pack", false, body_pack, false);
        cg_store(c, k->kb, cg_gep(c, c->i64, k->tag_kb, rslot), 8);
        LLVMBuildBr(b, bhas);
        LLVMPositionBuilderAtEnd(b, bhas);
    } else {
        cg_emit_piece(k, "pack", false, body_pack, false);
    }
    {
        /* row groups, in the piece of partial blocks or of full ones */
        LLVMBasicBlockRef bm = cg_block(c, "groups_masked");
        LLVMBasicBlockRef bf = cg_block(c, "groups_full");
        LLVMBasicBlockRef join = cg_block(c, "groups_done");
        LLVMBuildCondBr(b, part, bm, bf);
        LLVMPositionBuilderAtEnd(b, bm);
        k->vs_use = k->p.vpack != IR_VPACK_NEVER;
        cg_emit_piece(k, "part", false, body_groups, true);
        if (prune)
            LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntNE, cg_load(c, c->i8, k->anyfull, 1), LLVMConstInt(c->i8, 0, 0), ""), bf, join);
        else
            LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, bf);
        cg_emit_piece(k, "full", false, body_groups, false);
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
        LLVMValueRef ooff = cg_row_off(k, row, k->os1, k->os2);
        for (int ch = 0; ch < p->VC; ch++) {
            LLVMValueRef v = cg_load(c, c->vf, cg_gep(c, c->f32, k->ACC, add(c, mul(c, i, cg_i64(c, p->VDP)), cg_i64(c, ch * p->W))), va);
            /* select, not multiply: a NaN acc of an unseen row must still give 0 */
            v = LLVMBuildSelect(b, pos, LLVMBuildFMul(b, v, is, ""), LLVMConstNull(c->vf), "");
            cg_store_vec(c, k->odt, v, k->obase, add(c, ooff, cg_i64(c, ch * p->W)), tail_lanes(p->VD, p->W, ch));
        }
        LLVMBasicBlockRef wl = cg_block(c, "lse");
        LLVMBasicBlockRef nl = cg_block(c, "nolse");
        LLVMBuildCondBr(b, LLVMBuildIsNotNull(b, k->lsep, ""), wl, nl);
        LLVMPositionBuilderAtEnd(b, wl);
        cg_store(c, cg_row_lse(c, m, l), cg_gep(c, c->f32, k->lsebase, cg_row_off(k, row, k->ls1, k->ls2)), 4);
        LLVMBuildBr(b, nl);
        LLVMPositionBuilderAtEnd(b, nl);
        cg_loop_end(c, &li);
    }
    cg_loop_end(c, &lq);
}
