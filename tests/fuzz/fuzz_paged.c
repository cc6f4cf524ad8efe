/* fuzz_paged.c — libFuzzer target for the paged runtime's validation: attn_rt_launch_paged
 * (a ragged batch over a page table) and attn_rt_paged_append (an engine's cache append).
 *
 * The bytes build a paged descriptor (page size, heads and K/V heads, dims, dtype and
 * kv_dtype or kv_f32, grouped or not, int8 pages' scale inputs) and a call: page tables, lengths and
 * query starts mostly valid and sometimes not (pages out of range, lengths past the table,
 * more queries than keys, starts that decrease), tensors with fuzzed shapes and strides, each
 * in a heap block of exactly the size it spans. When the runtime accepts the call, the tile
 * (and group) function touches every byte the validated args say it may: the q, o and lse rows
 * of its sequence and heads, the K and V rows of the keys it is given through the page table
 * (each page index checked against the pool), every input element; so ASan reports any call
 * accepted that should have been refused. A refused call must name its error and have written
 * nothing: o, lse and the pages are compared with copies. A quarter of the inputs make a
 * paged MLA call instead (attn_rt_launch_paged_mla: latent pages, projections, the absorbed
 * descriptor's tile over the runtime's own [c_kv | k_rope] rows; tensors in f32, f16 or bf16,
 * the latent pages in their kv_dtype or f32 with kv_f32). The append draws its new rows' type
 * (new_dtype: f16 and bf16 rows into int8 pages, and types it must refuse). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz.h"

/* The launch under way, read by the tile function (read-only meanwhile). */
static const attn_rt_desc *fz_desc;
static int64_t fz_pages; /* num_pages of the call's pools */

/* Touches what the args allow for rows [q0, q1) of query head h of sequence b, and the K/V
 * rows of K/V head kh for the keys the call visits. */
static void fz_touch(const attn_rt_args *a, int64_t h, int64_t kh, int64_t q0, int64_t q1) {
    const attn_rt_desc *d = fz_desc;
    size_t e = fz_elem(d->dtype), ke = fz_elem(fz_kv_type(d));
    const char *q = a->q, *k = a->k, *v = a->v;
    char *o = a->o;
    for (int64_t r = q0; r < q1; r++) {
        fz_read(q + (h * a->q_stride[1] + r * a->q_stride[2]) * (int64_t)e, (size_t)d->qk_dim * e);
        /* o: f32 (the call's, or partial rows the runtime merges and converts: 16-bit dtypes) */
        memset(o + (h * a->o_stride[1] + r * a->o_stride[2]) * 4, 0, (size_t)d->v_dim * 4);
        a->lse[h * a->lse_stride[1] + r] = 0.0f;
    }
    int64_t k0 = a->k_begin, k1 = a->k_end > 0 ? a->k_end : a->kv_len, P = d->page_size;
    REQUIRE(k0 >= 0 && k0 <= k1 && k1 <= a->kv_len, "keys [%lld, %lld) outside [0, %lld)", (long long)k0,
            (long long)k1, (long long)a->kv_len);
    for (int64_t j = k0; j < k1; j++) {
        int64_t pg = a->pages[j / P];
        REQUIRE(pg >= 0 && pg < fz_pages, "key %lld on page %lld of %lld", (long long)j, (long long)pg,
                (long long)fz_pages);
        fz_read(k + (pg * a->k_page_stride + j % P * a->k_stride[2] + kh * a->k_stride[1]) * (int64_t)ke,
                (size_t)d->qk_dim * ke);
        fz_read(v + (pg * a->v_page_stride + j % P * a->v_stride[2] + kh * a->v_stride[1]) * (int64_t)ke,
                (size_t)d->v_dim * ke);
    }
    for (int i = 0; i < d->ninputs; i++) {
        int64_t n = 1;
        for (int j = 0; j < d->inputs[i].rank; j++) n *= a->input_dim[i][j];
        fz_read(a->input[i], (size_t)n * 4);
    }
}

static void fz_check_rows(const attn_rt_args *a, int64_t b, int64_t q0, int64_t q1) {
    REQUIRE(b >= 0 && b < a->batch && q0 >= 0 && q0 < q1 && q1 <= a->q_len,
            "a tile outside the call: sequence %lld rows [%lld, %lld) of %lld", (long long)b, (long long)q0,
            (long long)q1, (long long)a->q_len);
}

static int32_t fz_tile(const attn_rt_args *a, int64_t b, int64_t h, int64_t q0, int64_t q1) {
    const attn_rt_desc *d = fz_desc;
    fz_check_rows(a, b, q0, q1);
    REQUIRE(h >= 0 && h < d->heads, "head %lld of %d", (long long)h, d->heads);
    fz_touch(a, h, d->grad_head_kv[h], q0, q1);
    return 0;
}

/* The group function: every query head that reads K/V head kh. */
static int32_t fz_group(const attn_rt_args *a, int64_t b, int64_t kh, int64_t q0, int64_t q1) {
    const attn_rt_desc *d = fz_desc;
    fz_check_rows(a, b, q0, q1);
    REQUIRE(kh >= 0 && kh < d->kv_heads, "K/V head %lld of %d", (long long)kh, d->kv_heads);
    for (int64_t h = 0; h < d->heads; h++)
        if (d->grad_head_kv[h] == kh) fz_touch(a, h, kh, q0, q1);
    return 0;
}

/* An i32 index tensor of `shape` (ndim dims; contiguous, its rank, shape or strides sometimes
 * wrong), uninitialised: the caller fills what it holds. NULL data sometimes. */
static int32_t *fz_index(FzIn *in, attn_tensor *t, int ndim, const int64_t *shape, int64_t *count) {
    memset(t, 0, sizeof *t);
    t->ndim = fz_u8(in) % 32 == 31 ? (int)fz_range(in, 0, 3) : ndim;
    int64_t n = 1;
    for (int d = 0; d < t->ndim && d < ATTN_MAX_DIMS; d++) {
        t->shape[d] = fz_u8(in) % 32 == 31 ? fz_range(in, -1, 4) : d < ndim ? shape[d] : 1;
        n *= t->shape[d] > 0 ? t->shape[d] : 0;
    }
    if (fz_u8(in) % 32 == 31) t->stride[0] = fz_range(in, 0, 3); /* not contiguous */
    int32_t *p = malloc(sizeof *p * (size_t)(n > 0 ? n : 1));
    REQUIRE(p, "out of memory");
    t->data = fz_u8(in) % 64 == 63 ? NULL : p;
    if (!t->data) free(p);
    *count = t->data ? n : 0;
    return t->data;
}

/* The ragged batch: lengths, query starts and the page table, each mostly valid. */
static void fz_batch(FzIn *in, int64_t B, int64_t MP, int64_t P, int64_t NP, attn_tensor *lens, attn_tensor *starts,
                     attn_tensor *table, int64_t *total) {
    int64_t nl, ns, nt;
    int32_t *ln = fz_index(in, lens, 1, (int64_t[]){B}, &nl);
    int32_t *st = fz_index(in, starts, 1, (int64_t[]){B + 1}, &ns);
    int32_t *tb = fz_index(in, table, 2, (int64_t[]){B, MP}, &nt);
    int64_t T = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t L = fz_range(in, 0, MP * P), n = L ? fz_range(in, 0, L < 4 ? L : 4) : 0;
        switch (fz_u8(in) % 32) { /* (bytes run out as zeros: the valid case) */
        case 31: L = MP * P + fz_range(in, 1, 3); break; /* past the table */
        case 30: L = -fz_range(in, 1, 3); break;
        case 29: n = L + 1; break; /* more queries than keys */
        default: break;
        }
        if (b < nl) ln[b] = (int32_t)L;
        if (b < ns) st[b] = (int32_t)T;
        T += n;
        for (int64_t j = 0; j < MP && (b + 1) * MP <= nt; j++) {
            int64_t pg = fz_range(in, 0, NP > 0 ? NP - 1 : 0);
            switch (fz_u8(in) % 64) {
            case 63: pg = NP; break;
            case 62: pg = -1; break;
            case 61: pg = (int32_t)fz_i64(in); break;
            default: break;
            }
            tb[b * MP + j] = (int32_t)pg;
        }
    }
    if (B < ns) st[B] = (int32_t)T;
    if (fz_u8(in) % 32 == 31 && ns > 1) st[fz_range(in, 0, ns - 1)] += (int32_t)fz_range(in, -2, 2);
    for (int64_t i = B + 1; i < ns; i++) st[i] = (int32_t)T; /* shapes fuzzed larger: defined */
    for (int64_t i = B; i < nl; i++) ln[i] = 0;
    for (int64_t i = B * MP; i < nt; i++) tb[i] = 0;
    *total = T;
}

/* The outputs of a call, copied before it runs: a refused call must name its error and leave
 * them as they were. */
typedef struct FzSnap {
    int n;
    const attn_tensor *t[6];
    const char *name[6];
    void *copy[6];
    size_t bytes[6];
} FzSnap;

/* Copies the blocks of tensors t[0 .. n) (elements of el[i] bytes; NULL data: nothing). */
static void fz_snap(FzSnap *s, int n, const attn_tensor *const *t, const char *const *name, const size_t *el) {
    s->n = n;
    for (int i = 0; i < n; i++) {
        int64_t k = t[i]->data ? fz_extent(t[i], el[i]) : 0;
        s->t[i] = t[i], s->name[i] = name[i], s->bytes[i] = k > 0 ? (size_t)k * el[i] : 0;
        s->copy[i] = malloc(s->bytes[i] ? s->bytes[i] : 1);
        REQUIRE(s->copy[i], "out of memory");
        if (s->bytes[i]) memcpy(s->copy[i], t[i]->data, s->bytes[i]);
    }
}

/* After `what` returned st: accepted, or refused with its code and message and nothing
 * written; frees the copies. */
static void fz_snap_check(FzSnap *s, const char *what, attn_status st, const attn_error *err) {
    REQUIRE(st == ATTN_OK || (err->code == st && err->message[0]), "%s refused without its code or message", what);
    for (int i = 0; i < s->n; i++) {
        REQUIRE(st == ATTN_OK || !s->bytes[i] || !memcmp(s->copy[i], s->t[i]->data, s->bytes[i]),
                "%s, refused (%s), wrote %s", what, err->message, s->name[i]);
        free(s->copy[i]);
    }
}

/* An append into pools of NP pages (their own blocks, sized by the append's dtype, which is
 * mostly the kernel's kv dtype and sometimes any value): refused with its code and message,
 * and then with nothing written, or run. */
static void fz_append(FzIn *in, int64_t KH, int64_t DQ, int64_t DV, attn_dtype kvt, int64_t B, int64_t MP,
                      int64_t P, int64_t NP) {
    attn_paged_append ap;
    memset(&ap, 0, sizeof ap);
    ap.dtype = fz_u8(in) % 32 == 31 ? (attn_dtype)fz_range(in, 0, 5) : kvt;
    /* the new rows' type: int8 pages take f32 (0), f16 or bf16 rows; other pages 0 or their own
     * type; sometimes anything (then refused, except where it is one of those) */
    switch (fz_u8(in) % 16) {
    case 15: ap.new_dtype = (attn_dtype)fz_range(in, -1, 6); break;
    case 14: case 13: ap.new_dtype = ap.dtype; break;
    default: ap.new_dtype = ap.dtype == ATTN_I8 ? (attn_dtype)fz_range(in, 0, 2) : ATTN_F32; break;
    }
    int64_t T = 0;
    fz_batch(in, B, MP, P, NP, &ap.kv_lens, &ap.new_starts, &ap.page_table, &T);
    size_t ne = fz_elem(ap.dtype != ATTN_I8 ? ap.dtype : ap.new_dtype), pe = fz_elem(ap.dtype);
    bool big = false, ovf = false, scales = ap.dtype == ATTN_I8 || fz_u8(in) % 16 == 15;
    attn_tensor *ts[6] = {&ap.k_new, &ap.v_new, &ap.k_pages, &ap.v_pages, &ap.k_scale, &ap.v_scale};
    size_t el[6] = {ne, ne, pe, pe, 4, 4};
    fz_tensor(in, ts[0], 3, (int64_t[]){T, KH, DQ, 1}); /* 4 sizes: ndim may be fuzzed up */
    fz_tensor(in, ts[1], 3, (int64_t[]){T, KH, DV, 1});
    fz_tensor(in, ts[2], 4, (int64_t[]){NP, P, KH, DQ});
    fz_tensor(in, ts[3], 4, (int64_t[]){NP, P, KH, DV});
    if (scales) {
        fz_tensor(in, ts[4], 3, (int64_t[]){NP, P, KH, 1});
        fz_tensor(in, ts[5], 3, (int64_t[]){NP, P, KH, 1});
    }
    for (int i = 0; i < (scales ? 6 : 4); i++)
        ts[i]->data = fz_u8(in) % 32 == 31 ? NULL : fz_alloc(in, ts[i], el[i], &big, &ovf);
    if (!big) {
        static const char *const outs[4] = {"k_pages", "v_pages", "k_scale", "v_scale"};
        FzSnap snap;
        fz_snap(&snap, 4, (const attn_tensor *const *)ts + 2, outs, el + 2);
        attn_error err;
        fz_snap_check(&snap, "an append", attn_rt_paged_append(&ap, &err), &err);
    }
    for (int i = 0; i < 6; i++) free(ts[i]->data);
    free(ap.kv_lens.data), free(ap.new_starts.data), free(ap.page_table.data);
}

/* A paged MLA call of H heads over latent pages (kv_rank R, rope_dim rope): the absorbed
 * descriptor is one K/V head over [c_kv | k_rope] rows, R + rope wide, values the first R. */
static void fz_mla(FzIn *in) {
    int64_t H = fz_range(in, 1, 4), R = fz_range(in, 1, 6), rope = fz_range(in, 0, 3), nope = fz_range(in, 1, 4);
    int64_t dv = fz_range(in, 1, 4), P = (int64_t)1 << fz_range(in, 0, 3);
    int head_kv[4] = {0};
    attn_rt_desc ad;
    memset(&ad, 0, sizeof ad);
    ad.name = "fuzz_paged_mla";
    ad.heads = (int)H, ad.kv_heads = 1, ad.qk_dim = (int)(R + rope), ad.v_dim = (int)R, ad.dtype = ATTN_F32;
    ad.page_size = (int)P, ad.block_q = (int)fz_range(in, 1, 5), ad.grad_head_kv = head_kv, ad.tile = fz_tile;
    if (H > 1 && fz_u8(in) % 2) ad.group = fz_group, ad.group_size = (int)H;
    if (fz_u8(in) % 32 == 31) ad.qk_dim = (int)fz_range(in, 1, 9); /* not the absorbed shape */
    if (fz_u8(in) % 64 == 63) ad.dtype = (attn_dtype)fz_range(in, 1, 2); /* not f32: refused */
    attn_rt_mla_desc md = {.kv_rank = (int)R, .rope_dim = (int)rope, .nope_dim = (int)nope, .v_dim = (int)dv,
                           .absorbed = fz_u8(in) % 64 == 63 ? NULL : &ad};
    fz_mla_dtypes(in, &md); /* q_nope, q_rope, w_uk, w_uv, o in dtype, the latent pages in their own */
    int64_t B = fz_range(in, 1, 4), MP = fz_range(in, 1, 4), NP = fz_range(in, 1, 6), T = 0;
    attn_paged_mla_call c;
    memset(&c, 0, sizeof c);
    fz_batch(in, B, MP, P, NP, &c.kv_lens, &c.q_starts, &c.page_table, &T);
    attn_tensor *ts[8] = {&c.q_nope, &c.q_rope, &c.c_kv_pages, &c.k_rope_pages, &c.w_uk, &c.w_uv, &c.o, &c.lse};
    fz_tensor(in, ts[0], 3, (int64_t[]){T, H, nope, 1}); /* 4 sizes: ndim may be fuzzed up */
    fz_tensor(in, ts[1], 3, (int64_t[]){T, H, rope, 1});
    fz_tensor(in, ts[2], 3, (int64_t[]){NP, P, R, 1});
    fz_tensor(in, ts[3], 3, (int64_t[]){NP, P, rope, 1});
    fz_tensor(in, ts[4], 3, (int64_t[]){H, R, nope, 1});
    fz_tensor(in, ts[5], 3, (int64_t[]){H, R, dv, 1});
    fz_tensor(in, ts[6], 3, (int64_t[]){T, H, dv, 1});
    bool lse = fz_u8(in) & 1, big = false, ovf = false;
    if (lse) fz_tensor(in, ts[7], 2, (int64_t[]){T, H, 1, 1});
    size_t e = fz_elem(md.dtype), ke = fz_elem(fz_mla_kv_type(&md)), el[8] = {e, e, ke, ke, e, e, e, 4};
    for (int i = 0; i < (lse ? 8 : 7); i++)
        ts[i]->data = fz_u8(in) % 32 == 31 ? NULL : fz_alloc(in, ts[i], el[i], &big, &ovf);
    c.threads = (int)fz_range(in, 0, 3);
    if (!big) {
        FzSnap snap;
        fz_snap(&snap, lse ? 2 : 1, (const attn_tensor *[]){&c.o, &c.lse}, (const char *[]){"o", "lse"},
                (size_t[]){e, 4});
        fz_desc = &ad;
        fz_pages = NP; /* the runtime's renumbered pages are fewer */
        attn_error err;
        fz_snap_check(&snap, "a paged MLA call", attn_rt_launch_paged_mla(&md, &c, NULL, &err), &err);
    }
    for (int i = 0; i < 8; i++) free(ts[i]->data);
    free(c.kv_lens.data), free(c.q_starts.data), free(c.page_table.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FzIn in = {data, data + size};
    if (fz_u8(&in) % 4 == 3) {
        fz_mla(&in);
        return 0;
    }
    attn_rt_desc d;
    memset(&d, 0, sizeof d);
    d.name = "fuzz_paged";
    d.kv_heads = (int)fz_range(&in, 1, 3);
    int G = (int)fz_range(&in, 1, 3);
    d.heads = d.kv_heads * G;
    d.qk_dim = (int)fz_range(&in, 1, 9);
    d.v_dim = (int)fz_range(&in, 1, 9);
    d.dtype = (attn_dtype)fz_range(&in, 0, 2);
    /* K/V: as dtype, f16, bf16 or int8; under a 16-bit dtype also f32 (`kv_dtype = f32;`: kv_f32) */
    switch (fz_u8(&in) % 8) {
    case 7: case 6: d.kv_dtype = ATTN_I8; break;
    case 5: case 4: d.kv_dtype = (attn_dtype)fz_range(&in, 1, 2); break;
    case 3: case 2: d.kv_f32 = d.dtype != ATTN_F32; break;
    default: break;
    }
    if (fz_u8(&in) % 64 == 63) d.kv_f32 = 1; /* hostile: refused under f32 or beside a kv_dtype */
    d.page_size = (int)(1 << fz_range(&in, 0, 3));
    d.block_q = (int)fz_range(&in, 1, 5);
    int head_kv[9];
    for (int h = 0; h < d.heads; h++) head_kv[h] = h / G;
    d.grad_head_kv = head_kv;
    d.tile = fz_tile;
    if (G > 1 && fz_u8(&in) % 2) d.group = fz_group, d.group_size = G;
    attn_rt_input_desc idesc[3];
    memset(idesc, 0, sizeof idesc);
    if (d.kv_dtype == ATTN_I8) { /* the int8 pages' scales, [num_pages, P, kv_heads] */
        static const char *const names[2] = {"k_scale", "v_scale"};
        for (int i = 0; i < 2; i++)
            idesc[i] = (attn_rt_input_desc){names[i], ATTN_F32, 3, {ATTN_DIM_PAGES, ATTN_DIM_CONST, ATTN_DIM_KV_HEADS},
                                            {0, d.page_size, 0}, 0};
        d.ninputs = 2;
    }
    if (fz_u8(&in) % 4 == 3) /* a per-sequence input */
        idesc[d.ninputs++] = (attn_rt_input_desc){"len", ATTN_I32, 1, {ATTN_DIM_BATCH}, {0}, 0};
    d.inputs = idesc;
    if (fz_u8(&in) % 64 == 63) d.page_size = (int)fz_range(&in, -1, 0); /* hostile: not paged */

    int64_t P = d.page_size > 0 ? d.page_size : 1, B = fz_range(&in, 1, 4), MP = fz_range(&in, 1, 4);
    int64_t NP = fz_range(&in, 1, 6), KH = d.kv_heads, H = d.heads, DQ = d.qk_dim, DV = d.v_dim, T = 0;
    attn_paged_call c;
    memset(&c, 0, sizeof c);
    fz_batch(&in, B, MP, P, NP, &c.kv_lens, &c.q_starts, &c.page_table, &T);
    size_t e = fz_elem(d.dtype), ke = fz_elem(fz_kv_type(&d));
    bool big = false, ovf = false;
    fz_tensor(&in, &c.q, 3, (int64_t[]){T, H, DQ, 1}); /* 4 sizes: ndim may be fuzzed up */
    fz_tensor(&in, &c.k_pages, 4, (int64_t[]){NP, P, KH, DQ});
    fz_tensor(&in, &c.v_pages, 4, (int64_t[]){NP, P, KH, DV});
    fz_tensor(&in, &c.o, 3, (int64_t[]){T, H, DV, 1});
    bool lse = fz_u8(&in) & 1;
    if (lse) fz_tensor(&in, &c.lse, 2, (int64_t[]){T, H, 1, 1});
    attn_tensor *ts[5] = {&c.q, &c.k_pages, &c.v_pages, &c.o, &c.lse};
    size_t el[5] = {e, ke, ke, e, 4};
    for (int i = 0; i < (lse ? 5 : 4); i++)
        ts[i]->data = fz_u8(&in) % 32 == 31 ? NULL : fz_alloc(&in, ts[i], el[i], &big, &ovf);
    attn_input inputs[3];
    memset(inputs, 0, sizeof inputs);
    c.ninputs = d.ninputs;
    if (fz_u8(&in) % 32 == 31) c.ninputs = (int)fz_range(&in, -1, 3);
    c.inputs = inputs;
    for (int i = 0; i < 3; i++) {
        const attn_rt_input_desc *id = &idesc[i < d.ninputs ? i : 0];
        inputs[i].name = id->name ? id->name : "len";
        int64_t right[ATTN_MAX_DIMS] = {id->dim_kind[0] == ATTN_DIM_BATCH ? B : NP, P, KH, 1};
        fz_tensor(&in, &inputs[i].t, id->rank ? id->rank : 1, right);
        attn_tensor dense = inputs[i].t; /* inputs are contiguous: allocate their element count */
        memset(dense.stride, 0, sizeof dense.stride);
        if (dense.ndim < 0 || dense.ndim > ATTN_MAX_DIMS) dense.ndim = 0;
        bool ib = false, io = false;
        inputs[i].t.data = fz_alloc(&in, &dense, 4, &ib, &io);
        if (i < c.ninputs) big |= ib;
    }
    c.threads = (int)fz_range(&in, 0, 3);

    if (!big) {
        FzSnap snap;
        fz_snap(&snap, lse ? 2 : 1, (const attn_tensor *[]){&c.o, &c.lse}, (const char *[]){"o", "lse"},
                (size_t[]){e, 4});
        fz_desc = &d;
        fz_pages = c.k_pages.shape[0];
        const attn_rt_desc *descs[2] = {&d, &d};
        attn_error err;
        fz_snap_check(&snap, "a paged call", attn_rt_launch_paged(descs, (int)fz_range(&in, 1, 2), &c, NULL, &err), &err);
        if (fz_u8(&in) % 2 && d.page_size > 0) fz_append(&in, KH, DQ, DV, fz_kv_type(&d), B, MP, P, NP);
    }
    for (int i = 0; i < 5; i++) free(ts[i]->data);
    for (int i = 0; i < 3; i++) free(inputs[i].t.data);
    free(c.kv_lens.data), free(c.q_starts.data), free(c.page_table.data);
    return 0;
}
