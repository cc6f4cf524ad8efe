/* cg_kv.c — tensor addressing: where a row of q, k, v, o and lse lives, and prefetches of K/V
 * rows. The only file that forms a K or V row address (the tensor bases at (b, head), a key
 * index's row through the run's compaction and stride); a new K/V layout (pages, ragged
 * batches) changes this file and the argument checks, not the templates. */
#include <stddef.h>
#include <string.h>

#include "codegen/cg_kern.h"

/* Task row of chunk row i (clamped to the last real row). */
LLVMValueRef cg_task_row(Kern *k, LLVMValueRef i) { return LLVMBuildAdd(k->c->b, k->qc, cg_smin(k->c, i, k->last), ""); }

/* The query head of task row r (grouped), or NULL (the function's head). */
LLVMValueRef cg_row_head(Kern *k, LLVMValueRef r) {
    Cg *c = k->c;
    if (!k->grouped) return NULL;
    LLVMValueRef g = LLVMBuildUDiv(c->b, r, k->gnq, "");
    return LLVMBuildSExt(c->b, cg_load(c, c->i32, cg_gep(c, c->i32, k->gtab, g), 4), c->i64, "hr");
}

/* Element offset of task row r in a tensor with head stride s1 and row stride s2. */
LLVMValueRef cg_row_off(Kern *k, LLVMValueRef r, LLVMValueRef s1, LLVMValueRef s2) {
    Cg *c = k->c;
    if (!k->grouped) return LLVMBuildMul(c->b, r, s2, "");
    LLVMValueRef qi = LLVMBuildAdd(c->b, k->gq0, LLVMBuildURem(c->b, r, k->gnq, ""), "");
    return LLVMBuildAdd(c->b, LLVMBuildMul(c->b, cg_row_head(k, r), s1, ""), LLVMBuildMul(c->b, qi, s2, ""), "");
}

/* The q of chunk row i, as f32: the tensor's row (qdirect; scores are scaled after the dot
 * products) or the scaled copy in Qs. */
LLVMValueRef cg_q_row(Kern *k, LLVMValueRef i) {
    Cg *c = k->c;
    if (k->p.qdirect) return cg_gep(c, c->f32, k->qbase, cg_row_off(k, cg_task_row(k, i), k->qs1, k->qs2));
    return cg_gep(c, c->f32, k->Qs, mul(c, i, cg_i64(c, k->p.QK)));
}

/* The K/V row (from the run's bases) of key index j >= 0: a scalar or a vector. */
LLVMValueRef cg_krow(Kern *k, LLVMValueRef j) {
    Cg *c = k->c;
    if (k->cw <= 1) return j;
    bool vec = LLVMGetTypeKind(LLVMTypeOf(j)) == LLVMVectorTypeKind;
    LLVMValueRef w = cg_i64(c, k->cw), r = cg_i64(c, k->cmod);
    if (vec) w = cg_splat(c, w), r = cg_splat(c, r);
    return add(c, mul(c, LLVMBuildUDiv(c->b, j, w, ""), r), LLVMBuildURem(c->b, j, w, ""));
}

LLVMValueRef cg_kvec(Kern *k, LLVMValueRef first) {
    Cg *c = k->c;
    LLVMValueRef v = cg_krow(k, add(c, cg_splat(c, first), cg_iota(c)));
    if (k->kstep != 1) v = mul(c, v, cg_splat(c, cg_i64(c, k->kstep)));
    return add(c, cg_splat(c, k->kpos0), v);
}

LLVMValueRef cg_kvec_base(Kern *k, LLVMValueRef first) {
    return k->cw <= 1 && k->kstep == 1 ? add(k->c, k->kpos0, first) : NULL;
}

LLVMValueRef cg_kpos(Kern *k, LLVMValueRef key) {
    return add(k->c, k->kpos0, mul(k->c, cg_krow(k, key), cg_i64(k->c, k->kstep)));
}

/* floor(x / m) for a constant m > 0 */
LLVMValueRef cg_floor_div(Cg *c, LLVMValueRef x, int64_t m) {
    LLVMValueRef q = LLVMBuildSDiv(c->b, x, cg_i64(c, m), "");
    LLVMValueRef neg = LLVMBuildICmp(c->b, LLVMIntSLT, LLVMBuildSub(c->b, x, mul(c, q, cg_i64(c, m)), ""), cg_i64(c, 0), "");
    return LLVMBuildSub(c->b, q, LLVMBuildZExt(c->b, neg, c->i64, ""), "");
}

/* The key indices of the run whose positions are below x: ceil((x - kpos0) / kstep), or for
 * compacted keys floor(d / cmod) * cw + clamp(d mod cmod, 0, cw) with d = x - kpos0; >= 0. */
LLVMValueRef cg_keys_below(Kern *k, LLVMValueRef x) {
    Cg *c = k->c;
    LLVMValueRef d = LLVMBuildSub(c->b, x, k->kpos0, "");
    LLVMValueRef n;
    if (k->cw <= 1) {
        n = k->kstep == 1 ? d : LLVMBuildSub(c->b, cg_i64(c, 0), cg_floor_div(c, LLVMBuildSub(c->b, cg_i64(c, 0), d, ""), k->kstep), "");
    } else {
        LLVMValueRef per = cg_floor_div(c, d, k->cmod);
        LLVMValueRef rem = LLVMBuildSub(c->b, d, mul(c, per, cg_i64(c, k->cmod)), "");
        n = add(c, mul(c, per, cg_i64(c, k->cw)), cg_smin(c, rem, cg_i64(c, k->cw)));
    }
    return cg_smax(c, n, cg_i64(c, 0));
}

/* Position of chunk row i (clamped to the last real row). */
LLVMValueRef cg_qpos_row(Kern *k, LLVMValueRef i) {
    if (k->grouped)
        return add(k->c, k->qpos0, LLVMBuildURem(k->c->b, cg_task_row(k, i), k->gnq, ""));
    return add(k->c, k->qlo, mul(k->c, cg_smin(k->c, i, k->last), cg_i64(k->c, k->qstep)));
}

/* Points the expressions' q (and h, for the group entry) at chunk row i. */
void cg_env_row(Kern *k, LLVMValueRef i) {
    k->env.q = cg_qpos_row(k, i);
    if (k->grouped) k->env.h = cg_row_head(k, cg_task_row(k, i));
}

/* Elements of K/V storage in a cache line. Prefetches never fault: no bounds needed. */
static int line_elems(const Kern *k) { return 64 / (k->kvdt == ATTN_F32 ? 4 : k->kvdt == ATTN_I8 ? 1 : 2); }

/* Read prefetches of `lines` cache lines of elements from `at`, with locality `loc` (3: to
 * L1; 2: to L2, as decode's stream ahead). */
static void prefetch_lines(Kern *k, LLVMValueRef at, int lines, int loc) {
    Cg *c = k->c;
    LLVMTypeRef et = cg_elem_type(c, k->kvdt), pt = c->ptr; /* line_elems' */
    for (int i = 0; i < lines; i++) {
        LLVMValueRef args[4] = {cg_gep(c, et, at, cg_i64(c, (int64_t)i * line_elems(k))), cg_i32(c, 0), cg_i32(c, loc), cg_i32(c, 1)};
        cg_intr(c, "llvm.prefetch", &pt, 1, args, 4);
    }
}

/* Read prefetches (to L1) of `lines` cache lines of elements from `at`. */
void cg_prefetch_lines(Kern *k, LLVMValueRef at, int lines) { prefetch_lines(k, at, lines, 3); }

/* Cache lines of a row of n elements. */
int cg_row_lines(const Kern *k, int n) { return (n + line_elems(k) - 1) / line_elems(k); }

/* log2 of the page size P */
static int page_shift(const Kern *k) {
    int sh = 0;
    while (((int64_t)1 << sh) < k->f->page_size) sh++;
    return sh;
}

/* The page (i64) holding key position pos: pages[pos / P]. */
static LLVMValueRef page_of(Kern *k, LLVMValueRef pos) {
    Cg *c = k->c;
    LLVMValueRef pi = LLVMBuildAShr(c->b, pos, cg_i64(c, page_shift(k)), "");
    return LLVMBuildSExt(c->b, cg_load(c, c->i32, cg_gep(c, c->i32, k->pages, pi), 4), c->i64, "page");
}

/* Paged K/V: the element offset of key position `pos` (scalar, within the call's keys) from
 * the K or V base: its page's start (pages[pos / P] times the page stride `ps`) plus its row
 * in the page (`rs` apart). */
static LLVMValueRef page_off(Kern *k, LLVMValueRef pos, LLVMValueRef ps, LLVMValueRef rs) {
    Cg *c = k->c;
    return add(c, mul(c, page_of(k, pos), ps), mul(c, LLVMBuildAnd(c->b, pos, cg_i64(c, k->f->page_size - 1), ""), rs));
}

bool cg_pages_whole(const Kern *k) { return k->pages && k->grouped && cg_page_count(k, k->p.decode_keys) <= CG_PG_MAX; }

int cg_page_count(const Kern *k, int n) {
    int64_t P = k->f->page_size;
    return P >= n ? 1 : (int)((n + P - 1) / P);
}

LLVMValueRef cg_page_fits(Kern *k, LLVMValueRef key0, int n) {
    Cg *c = k->c;
    int64_t P = k->f->page_size;
    LLVMValueRef in = LLVMBuildAnd(c->b, key0, cg_i64(c, P - 1), "");
    if (cg_page_count(k, n) == 1) return LLVMBuildICmp(c->b, LLVMIntSLE, add(c, in, cg_i64(c, n)), cg_i64(c, P), "onepage");
    return LLVMBuildICmp(c->b, LLVMIntEQ, in, cg_i64(c, 0), "pagestart");
}

/* klast: the call's last key (a short last sub-block reads no page past it); the prefetched
 * keys are clamped to the sequence's last key (env.kv_len), as cg_prefetch_part's. */
void cg_page_hoist(Kern *k, LLVMValueRef key0, int n, LLVMValueRef klast) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    int np = cg_page_count(k, n);
    int64_t P = k->f->page_size, kh = k->f->kv_heads;
    LLVMValueRef slast = LLVMBuildSub(b, k->env.kv_len, cg_i64(c, 1), "");
    LLVMValueRef ahead = add(c, key0, cg_decode_ahead(k));
    for (int i = 0; i < np; i++) {
        LLVMValueRef pos = np == 1 ? key0 : cg_smin(c, add(c, key0, cg_i64(c, i * P)), klast);
        LLVMValueRef pg = page_of(k, pos);
        LLVMValueRef row = np == 1 ? LLVMBuildAnd(b, key0, cg_i64(c, P - 1), "") : cg_i64(c, 0);
        k->pg[0][i] = add(c, mul(c, pg, k->kps), mul(c, row, k->ks2));
        k->pg[1][i] = add(c, mul(c, pg, k->vps), mul(c, row, k->vs2));
        k->pg[2][i] = add(c, mul(c, pg, cg_i64(c, P * kh)), mul(c, row, cg_i64(c, kh)));
        LLVMValueRef ppos = cg_smax(c, cg_smin(c, add(c, ahead, cg_i64(c, i * P)), slast), cg_i64(c, 0));
        LLVMValueRef ppg = page_of(k, ppos);
        LLVMValueRef prow = np == 1 ? LLVMBuildAnd(b, ppos, cg_i64(c, P - 1), "") : cg_i64(c, 0);
        k->pg[3][i] = add(c, mul(c, ppg, k->kps), mul(c, prow, k->ks2));
        k->pg[4][i] = add(c, mul(c, ppg, k->vps), mul(c, prow, k->vs2));
    }
    if (np > 2) {
        k->pgtab = cg_alloca(c, c->i64, 5 * CG_PG_MAX, 8, "pgtab");
        for (int w = 0; w < 5; w++)
            for (int i = 0; i < np; i++) cg_store(c, k->pg[w][i], cg_gep(c, c->i64, k->pgtab, cg_i64(c, w * CG_PG_MAX + i)), 8);
    }
    k->pgn = np;
}

/* Element offset of relative key j's row in table w (cg_page_hoist), rows rs apart. */
static LLVMValueRef page_pick(Kern *k, int w, LLVMValueRef j, LLVMValueRef rs) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    if (k->pgn == 1) return add(c, k->pg[w][0], mul(c, j, rs));
    LLVMValueRef i = LLVMBuildAShr(b, j, cg_i64(c, page_shift(k)), ""), base;
    if (k->pgn == 2) base = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntNE, i, cg_i64(c, 0), ""), k->pg[w][1], k->pg[w][0], "");
    else base = cg_load(c, c->i64, cg_gep(c, c->i64, k->pgtab, add(c, i, cg_i64(c, w * CG_PG_MAX))), 8);
    return add(c, base, mul(c, LLVMBuildAnd(b, j, cg_i64(c, k->f->page_size - 1), ""), rs));
}

/* Prefetches (to L1) row `row`'s share of the K and V lines of key `key` from the K/V bases kb
 * and vb (another residue class's): the rows of a group split a key's lines. */
static void prefetch_kv(Kern *k, LLVMValueRef kb, LLVMValueRef vb, LLVMValueRef row, LLVMValueRef key) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    LLVMTypeRef et = cg_elem_type(c, k->kvdt);
    LLVMValueRef share = LLVMBuildURem(b, row, cg_i64(c, k->gsize), "");
    struct { LLVMValueRef base, stride, pstride; int lines; } t[2] = {{kb, k->ks2, k->kps, cg_row_lines(k, p->QK)},
                                                                       {vb, k->vs2, k->vps, cg_row_lines(k, p->VD)}};
    /* paged: a key past the sequence's last one would read the page table past its pages; its
     * last key is prefetched instead (keys past the call's, in the sequence, are fine: the
     * next call's) */
    LLVMValueRef pkey = k->pages ? cg_smax(c, cg_smin(c, key, LLVMBuildSub(b, k->kv_len, cg_i64(c, 1), "")), cg_i64(c, 0)) : NULL;
    for (int w = 0; w < 2; w++) {
        int m = (t[w].lines + k->gsize - 1) / k->gsize;
        LLVMValueRef first = mul(c, mul(c, share, cg_i64(c, m)), cg_i64(c, line_elems(k)));
        LLVMValueRef off = k->pages ? page_off(k, pkey, t[w].pstride, t[w].stride) : mul(c, cg_krow(k, key), t[w].stride);
        cg_prefetch_lines(k, cg_gep(c, et, t[w].base, add(c, off, first)), m);
    }
}

void cg_prefetch_key(Kern *k, LLVMValueRef row, LLVMValueRef key) { prefetch_kv(k, k->kbase, k->vbase, row, key); }

/* Decode's stream ahead: prefetches to L2 of key `key`'s K (v false) or V row, elements
 * [first, first + n) (paged: a key past the sequence's end prefetches its last key instead;
 * on hoisted pages, key is cg_decode_ahead past a key of the sub-block, relative to it).
 * To L2, not L1: software prefetches to L1 hold the few L1 miss buffers for the whole trip to
 * memory (GQA 32/8 d128 kv 65536 f32, 1 thread: 8.5 -> 13.6 GB/s against a 21.3 GB/s stream). */
void cg_prefetch_part(Kern *k, bool v, LLVMValueRef key, LLVMValueRef first, int n) {
    Cg *c = k->c;
    LLVMValueRef off;
    if (k->pgn) {
        /* the sub-block's keys from 0, the prefetched ones cg_decode_ahead on: their pages */
        off = page_pick(k, v ? 4 : 3, LLVMBuildSub(c->b, key, cg_decode_ahead(k), ""), v ? k->vs2 : k->ks2);
    } else if (k->pages) {
        /* the sequence's last key (env.kv_len), not the call's (kv_len): a grouped paged task's
         * calls visit a chunk of keys at a time, and the next chunk's are worth fetching */
        LLVMValueRef pkey = cg_smax(c, cg_smin(c, key, LLVMBuildSub(c->b, k->env.kv_len, cg_i64(c, 1), "")), cg_i64(c, 0));
        off = v ? cg_v_off(k, pkey) : cg_k_off(k, pkey);
    } else {
        off = v ? cg_v_off(k, key) : cg_k_off(k, key);
    }
    prefetch_lines(k, cg_gep(c, cg_elem_type(c, k->kvdt), v ? k->vbase : k->kbase, add(c, off, first)), cg_row_lines(k, n), 2);
}

/* How many keys ahead decode prefetches K and V: three sub-blocks (measured against 1, 2, 4, 6
 * and 12: a few % better than two; 6 and 12 no better). */
LLVMValueRef cg_decode_ahead(Kern *k) { return cg_i64(k->c, 3 * k->p.decode_keys); }

/* The K and V rows of keys [first, first + n) (whole rows: row 0 of a group) from bases kb, vb. */
void cg_prefetch_keys(Kern *k, LLVMValueRef kb, LLVMValueRef vb, LLVMValueRef first, int n) {
    for (int i = 0; i < n; i++) prefetch_kv(k, kb, vb, cg_i64(k->c, 0), add(k->c, first, cg_i64(k->c, i)));
}

/* The argument block's sizes and the tensor bases at (batch row bi, query head h, K/V head
 * kvh), with their strides, into k (and *q_len .. *lsebase for the caller). */
void cg_kv_args(Kern *k, LLVMValueRef a, LLVMValueRef bi, LLVMValueRef h, LLVMValueRef kvh, LLVMValueRef *q_len_out,
                LLVMValueRef *kv_len_out, LLVMValueRef *q_off_out, LLVMValueRef *lsep_out, LLVMValueRef *lsebase_out) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    LLVMValueRef qp = field(c, a, offsetof(attn_rt_args, q), c->ptr);
    LLVMValueRef kp = field(c, a, offsetof(attn_rt_args, k), c->ptr);
    LLVMValueRef vp = field(c, a, offsetof(attn_rt_args, v), c->ptr);
    LLVMValueRef op = field(c, a, offsetof(attn_rt_args, o), c->ptr);
    LLVMValueRef lsep = field(c, a, offsetof(attn_rt_args, lse), c->ptr);
    LLVMValueRef q_len = field(c, a, offsetof(attn_rt_args, q_len), c->i64);
    LLVMValueRef kv_len = field(c, a, offsetof(attn_rt_args, kv_len), c->i64);
    LLVMValueRef q_off = field(c, a, offsetof(attn_rt_args, q_offset), c->i64);
#define STRIDE(fld, i) field(c, a, offsetof(attn_rt_args, fld) + 8 * (i), c->i64)
    LLVMTypeRef et = cg_elem_type(c, k->dt), ot = cg_elem_type(c, k->odt), kvt = cg_elem_type(c, k->kvdt);
    k->qbase = cg_gep(c, et, qp, add(c, mul(c, bi, STRIDE(q_stride, 0)), mul(c, h, STRIDE(q_stride, 1))));
    k->kbase = cg_gep(c, kvt, kp, add(c, mul(c, bi, STRIDE(k_stride, 0)), mul(c, kvh, STRIDE(k_stride, 1))));
    k->vbase = cg_gep(c, kvt, vp, add(c, mul(c, bi, STRIDE(v_stride, 0)), mul(c, kvh, STRIDE(v_stride, 1))));
    k->obase = cg_gep(c, ot, op, add(c, mul(c, bi, STRIDE(o_stride, 0)), mul(c, h, STRIDE(o_stride, 1))));
    k->qs1 = STRIDE(q_stride, 1);
    k->ks1 = STRIDE(k_stride, 1);
    k->vs1 = STRIDE(v_stride, 1);
    k->os1 = STRIDE(o_stride, 1);
    k->ls1 = STRIDE(lse_stride, 1);
    k->kbeg = field(c, a, offsetof(attn_rt_args, k_begin), c->i64);
    k->resume = field(c, a, offsetof(attn_rt_args, resume), c->i64);
    {
        /* k_end 0 (a zeroed argument block): every key */
        LLVMValueRef ke = field(c, a, offsetof(attn_rt_args, k_end), c->i64);
        k->kendp = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLE, ke, cg_i64(c, 0), ""), kv_len, ke, "kend");
    }
    if (k->f->page_size) { /* paged K/V: keys through the batch row's page-table row */
        k->pages = field(c, a, offsetof(attn_rt_args, pages), c->ptr);
        k->kps = field(c, a, offsetof(attn_rt_args, k_page_stride), c->i64);
        k->vps = field(c, a, offsetof(attn_rt_args, v_page_stride), c->i64);
    }
    k->qs2 = STRIDE(q_stride, 2);
    k->ks2 = STRIDE(k_stride, 2);
    k->vs2 = STRIDE(v_stride, 2);
    k->os2 = STRIDE(o_stride, 2);
    LLVMValueRef lse_off = add(c, mul(c, bi, STRIDE(lse_stride, 0)), mul(c, h, STRIDE(lse_stride, 1)));
    LLVMValueRef lsebase = LLVMBuildGEP2(b, c->f32, lsep, &lse_off, 1, "");
#undef STRIDE
    if (k->kvdt == ATTN_I8) {
        /* the scale inputs, contiguous [batch, kv_heads, kv_len]; paged: [num_pages, P, kv_heads],
         * from kv head kvh (cg_kv_scale adds the key's page and row) */
        for (int i = 0; i < k->f->ninputs; i++) {
            bool isk = strcmp(k->f->inputs[i].name, "k_scale") == 0, isv = strcmp(k->f->inputs[i].name, "v_scale") == 0;
            if (!isk && !isv) continue;
            LLVMValueRef base = field(c, a, offsetof(attn_rt_args, input) + 8 * (size_t)i, c->ptr);
            LLVMValueRef len = field(c, a, offsetof(attn_rt_args, input_dim) + 8 * ((size_t)i * ATTN_MAX_DIMS + 2), c->i64);
            LLVMValueRef nkvh = cg_i64(c, k->f->kv_heads);
            LLVMValueRef off = k->pages ? kvh : mul(c, add(c, mul(c, bi, nkvh), kvh), len);
            LLVMValueRef at = LLVMBuildGEP2(b, c->f32, base, &off, 1, "");
            *(isk ? &k->ksc : &k->vsc) = at;
        }
    }
    *q_len_out = q_len;
    *kv_len_out = kv_len;
    *q_off_out = q_off;
    *lsep_out = lsep;
    *lsebase_out = lsebase;
}

/* Element offset of key index j's K row, and V row, from the run's bases (paged: through the
 * page table; paged kernels have no residue runs, so index j is position j). */
LLVMValueRef cg_k_off(Kern *k, LLVMValueRef j) {
    if (k->pgn) return page_pick(k, 0, j, k->ks2);
    return k->pages ? page_off(k, j, k->kps, k->ks2) : mul(k->c, cg_krow(k, j), k->ks2);
}
LLVMValueRef cg_v_off(Kern *k, LLVMValueRef j) {
    if (k->pgn) return page_pick(k, 1, j, k->vs2);
    return k->pages ? page_off(k, j, k->vps, k->vs2) : mul(k->c, cg_krow(k, j), k->vs2);
}

/* Where P.V reads the block's V rows (vs_use): f32 row `key` at *vsb + key * *vss, VS shifted
 * back by the block's start. When vpack_on is known only at run time (f32, no residue runs:
 * key j's row is j), they select between VS and the tensor, whose rows end at v_dim: returns
 * true then (the last chunk is masked). */
bool cg_vs_rows(Kern *k, LLVMValueRef *vsb, LLVMValueRef *vss) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    *vsb = LLVMBuildGEP2(b, c->f32, k->VS, (LLVMValueRef[]){LLVMBuildNeg(b, mul(c, k->kb, cg_i64(c, k->p.VDP)), "")}, 1, "");
    *vss = cg_i64(c, k->p.VDP);
    if (LLVMIsAConstantInt(k->vpack_on)) return false;
    *vsb = LLVMBuildSelect(b, k->vpack_on, *vsb, k->vbase, "vsb");
    *vss = LLVMBuildSelect(b, k->vpack_on, *vss, k->vs2, "vss");
    return true;
}

/* Key runs (k % r in [base, base + w)): K and V from key position base on, with stride r
 * when w is 1, else over the compacted index. */
void cg_kv_key_runs(Kern *k, const IrRuns *runs) {
    Cg *c = k->c;
    LLVMTypeRef et = cg_elem_type(c, k->kvdt);
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
}

/* A residue class's run: rows from task row `first` and keys from position rho, both rr apart,
 * from the function's bases and strides in `at`. */
void cg_kv_class(Kern *k, const Kern *at, LLVMValueRef first, LLVMValueRef rho, LLVMValueRef rr) {
    Cg *c = k->c;
    LLVMTypeRef et = cg_elem_type(c, k->dt);
    k->qbase = cg_gep(c, et, at->qbase, mul(c, first, at->qs2));
    k->obase = cg_gep(c, cg_elem_type(c, k->odt), at->obase, mul(c, first, at->os2));
    LLVMTypeRef kvt = cg_elem_type(c, k->kvdt);
    k->kbase = cg_gep(c, kvt, at->kbase, mul(c, rho, at->ks2));
    k->vbase = cg_gep(c, kvt, at->vbase, mul(c, rho, at->vs2));
    k->knext = cg_gep(c, kvt, k->kbase, at->ks2); /* the next class's (a row on) */
    k->vnext = cg_gep(c, kvt, k->vbase, at->vs2);
    k->qs2 = mul(c, at->qs2, rr);
    k->os2 = mul(c, at->os2, rr);
    k->ks2 = mul(c, at->ks2, rr);
    k->vs2 = mul(c, at->vs2, rr);
    k->lsebase = LLVMBuildGEP2(c->b, c->f32, at->lsebase, &first, 1, "");
    k->ls2 = rr;
}

/* int8 K/V: K (v false) or V's scale of key index j (f32 scalar); NULL for other storage. */
LLVMValueRef cg_kv_scale(Kern *k, bool v, LLVMValueRef j) {
    Cg *c = k->c;
    if (k->kvdt != ATTN_I8) return NULL;
    int64_t kh = k->f->kv_heads;
    LLVMValueRef off = k->pgn     ? page_pick(k, 2, j, cg_i64(c, kh))
                       : k->pages ? page_off(k, j, cg_i64(c, k->f->page_size * kh), cg_i64(c, kh))
                                  : cg_kpos(k, j);
    return cg_load(c, c->f32, LLVMBuildGEP2(c->b, c->f32, v ? k->vsc : k->ksc, &off, 1, ""), 4);
}

/* x (a vector of key index j's K or V row) times its scale: int8 K/V only. */
LLVMValueRef cg_kv_scaled(Kern *k, bool v, LLVMValueRef j, LLVMValueRef x) {
    if (k->kvdt != ATTN_I8) return x;
    return LLVMBuildFMul(k->c->b, x, cg_splat(k->c, cg_kv_scale(k, v, j)), "");
}

/* int8 K/V in a contiguous cache whose key indices are positions one apart (no residue runs):
 * the K (v false) or V scales of the W keys from index `first` as one vector, so decode scales
 * a vector of scores, or of P.V's weights, instead of every K or V vector; NULL otherwise
 * (paged scales lie kv_heads apart, page by page: the caller scales each row, or gathers them,
 * cg_kv_scales). The W keys must exist (a full block). */
LLVMValueRef cg_kv_scale_vec(Kern *k, bool v, LLVMValueRef first) {
    Cg *c = k->c;
    if (k->kvdt != ATTN_I8 || k->pages || k->cw > 1 || k->kstep != 1) return NULL;
    LLVMValueRef at = LLVMBuildGEP2(c->b, c->f32, v ? k->vsc : k->ksc, (LLVMValueRef[]){cg_kpos(k, first)}, 1, "");
    return cg_load(c, c->vf, at, 4);
}

/* The K (v false) or V scales at element offsets off (<W x i64>), gathered. */
static LLVMValueRef gather_scales(Kern *k, bool v, LLVMValueRef off) {
    Cg *c = k->c;
    LLVMValueRef ptrs = LLVMBuildGEP2(c->b, c->f32, v ? k->vsc : k->ksc, &off, 1, "");
    LLVMTypeRef tys[2] = {c->vf, LLVMTypeOf(ptrs)};
    return cg_intr(c, "llvm.masked.gather", tys, 2, (LLVMValueRef[]){ptrs, cg_i32(c, 4), cg_lane_mask(c, c->W), LLVMGetUndef(c->vf)}, 4);
}

/* int8 K/V: the scales of the W keys from index `first` as one vector, in any layout (a vector
 * load where cg_kv_scale_vec has one; paged, a gather from the keys' one or two pages, or from
 * the one page cg_page_hoist looked up; else key by key); with `klast` (a tail block) the keys
 * past it take its scale. */
LLVMValueRef cg_kv_scales(Kern *k, bool v, LLVMValueRef first, LLVMValueRef klast) {
    Cg *c = k->c;
    LLVMValueRef sv = klast ? NULL : cg_kv_scale_vec(k, v, first);
    if (sv) return sv;
    int64_t P = k->f->page_size, kh = k->f->kv_heads;
    if (k->pgn == 1 && !klast) {
        /* pages looked up once (cg_page_hoist): the W keys' scales kv_heads apart from the first's */
        LLVMValueRef off = add(c, cg_splat(c, k->pg[2][0]), mul(c, add(c, cg_splat(c, first), cg_iota(c)), cg_splat(c, cg_i64(c, kh))));
        return gather_scales(k, v, off);
    }
    if (k->pages && !k->pgn && !klast && P % c->W == 0) {
        /* paged: the W keys lie in at most two pages (P >= W): two page-table lookups, then the
         * scales (kv_heads apart within a page) gathered */
        LLVMBuilderRef b = c->b;
        int sh = page_shift(k);
        LLVMValueRef pg[2] = {cg_splat(c, page_of(k, first)), cg_splat(c, page_of(k, add(c, first, cg_i64(c, c->W - 1))))};
        LLVMValueRef kv = add(c, cg_splat(c, first), cg_iota(c));
        LLVMValueRef same = LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildAShr(b, kv, cg_splat(c, cg_i64(c, sh)), ""),
                                          cg_splat(c, LLVMBuildAShr(b, first, cg_i64(c, sh), "")), "");
        LLVMValueRef off = add(c, mul(c, LLVMBuildSelect(b, same, pg[0], pg[1], ""), cg_splat(c, cg_i64(c, P * kh))),
                               mul(c, LLVMBuildAnd(b, kv, cg_splat(c, cg_i64(c, P - 1)), ""), cg_splat(c, cg_i64(c, kh))));
        return gather_scales(k, v, off);
    }
    sv = LLVMGetUndef(c->vf);
    for (int l = 0; l < c->W; l++) {
        LLVMValueRef key = add(c, first, cg_i64(c, l));
        if (klast) key = cg_smin(c, key, klast);
        sv = LLVMBuildInsertElement(c->b, sv, cg_kv_scale(k, v, key), cg_i32(c, l), "");
    }
    return sv;
}
