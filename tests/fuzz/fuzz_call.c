/* fuzz_call.c — libFuzzer target for the runtime's validation (attn_rt_check/attn_rt_launch,
 * and attn_rt_launch_domains, attn_rt_launch_permuted and attn_rt_launch_mla around the calls
 * it accepts).
 *
 * The bytes build a descriptor and a call: shapes, strides, NULLs, q_offset, inputs with
 * random names, ranks and sizes; storage in f32, f16 or bf16, K/V in f16 or bf16 too, or f32
 * under a 16-bit dtype (kv_f32), and the MLA call's own storage (dtype, its latent cache's kv_dtype or kv_f32). Every tensor points at a heap block of exactly the size its
 * own shape and strides describe (computed here, independently of the runtime). When the
 * runtime accepts the call, a tile function touches every byte the validated args say it may
 * — the q/k/v/o/lse rows of its (b, h, rows) and every input element — so ASan reports any
 * call the runtime accepts but should have refused. Calls describing more memory than the
 * harness allocates are only checked, and must then be refused. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz.h"

/* The descriptor of the launch under way, read by the tile function (read-only meanwhile). */
static const attn_rt_desc *fz_desc;

/* Touches exactly what the args allow for query rows [q0, q1) of (b, h). */
static int32_t fz_tile(const attn_rt_args *a, int64_t b, int64_t h, int64_t q0, int64_t q1) {
    const attn_rt_desc *d = fz_desc;
    REQUIRE(b >= 0 && b < a->batch && h >= 0 && h < d->heads && q0 >= 0 && q0 < q1 && q1 <= a->q_len,
            "a tile outside the call: b %lld h %lld rows [%lld, %lld)", (long long)b, (long long)h, (long long)q0,
            (long long)q1);
    size_t e = fz_elem(d->dtype), ke = fz_elem(fz_kv_type(d));
    const char *q = a->q, *k = a->k, *v = a->v;
    char *o = a->o;
    for (int64_t r = q0; r < q1; r++) {
        fz_read(q + (b * a->q_stride[0] + h * a->q_stride[1] + r * a->q_stride[2]) * e,
                (size_t)d->qk_dim * e);
        memset(o + (b * a->o_stride[0] + h * a->o_stride[1] + r * a->o_stride[2]) * e, 0,
               (size_t)d->v_dim * e);
        if (a->lse) a->lse[b * a->lse_stride[0] + h * a->lse_stride[1] + r] = 0.0f;
    }
    if (q0 == 0) { /* the K/V rows of this head's K/V head, and all inputs, once per (b, h) */
        int64_t kh = h * d->kv_heads / d->heads;
        for (int64_t r = 0; r < a->kv_len; r++) {
            fz_read(k + (b * a->k_stride[0] + kh * a->k_stride[1] + r * a->k_stride[2]) * ke,
                    (size_t)d->qk_dim * ke);
            fz_read(v + (b * a->v_stride[0] + kh * a->v_stride[1] + r * a->v_stride[2]) * ke,
                    (size_t)d->v_dim * ke);
        }
        for (int i = 0; i < d->ninputs; i++) {
            int64_t n = 1;
            for (int j = 0; j < d->inputs[i].rank; j++) n *= a->input_dim[i][j];
            fz_read(a->input[i], (size_t)n * 4);
        }
    }
    return 0;
}

static const char *const fz_names[] = {"doc", "len", "rank", "slope", "x"};

/* The same accepted call through attn_rt_launch_permuted, d as its own rank-order variant: an
 * i32 [batch, kv_len] input made a permutation per batch row (sometimes) takes the path that
 * gathers rows into dense copies, runs d on them and scatters o back; anything else must
 * fall back or be refused with a message. */
static void fz_permuted(FzIn *in, const attn_rt_desc *d, const attn_rt_input_desc *idesc, const attn_call *c,
                        int64_t B, int64_t Lk) {
    int ri = (int)fz_range(in, -1, d->ninputs);
    if (ri >= 0 && ri < d->ninputs && idesc[ri].dtype == ATTN_I32 && idesc[ri].rank == 2 &&
        idesc[ri].dim_kind[0] == ATTN_DIM_BATCH && idesc[ri].dim_kind[1] == ATTN_DIM_KV_LEN && fz_u8(in) & 1)
        for (int i = 0; i < c->ninputs; i++)
            if (c->inputs[i].name && !strcmp(c->inputs[i].name, idesc[ri].name) && c->inputs[i].t.data) {
                int32_t *r = c->inputs[i].t.data; /* validated: a dense [B, Lk] block */
                for (int64_t b = 0; b < B; b++)
                    for (int64_t k = 0; k < Lk; k++) r[b * Lk + k] = (int32_t)(Lk - 1 - k);
                break;
            }
    const attn_rt_desc *one[1] = {d};
    attn_error err;
    attn_status st = attn_rt_launch_permuted(d, ri, one, 1, c, NULL, &err);
    REQUIRE(st == ATTN_OK || (err.code == st && err.message[0]), "a rejection without its code or message");
}

/* An MLA call around d as the up-projected variant (SPEC §3 tensors, each allocated to exactly
 * what it spans, strides and shapes sometimes wrong): attn_rt_launch_mla must refuse it with a
 * message or run it, the projections and d's tile touching only those bytes. d qualifies only
 * with as many K/V heads as heads and qk_dim = nope + rope; otherwise it must be refused. */
static void fz_mla(FzIn *in, const attn_rt_desc *d, const attn_call *c, int64_t B, int64_t Lq, int64_t Lk) {
    int64_t H = d->heads, R = fz_range(in, 1, 6), rope = fz_range(in, 0, 2);
    int64_t nope = d->qk_dim - rope, dv = d->v_dim;
    if (nope < 1) nope = 1;
    /* the variants run on f32 copies: the up-projected one is d in f32 (sometimes d itself, to
     * be refused when it is not f32) */
    attn_rt_desc ud = *d;
    if (fz_u8(in) % 16) ud.dtype = ATTN_F32, ud.kv_dtype = ATTN_F32, ud.kv_f32 = 0;
    attn_rt_mla_desc md = {.kv_rank = (int)R, .rope_dim = (int)rope, .nope_dim = (int)nope, .v_dim = (int)dv, .up = &ud};
    fz_mla_dtypes(in, &md);
    /* the absorbed variant: d's tile over one K/V head, [c_kv | k_rope]-wide keys */
    attn_rt_desc ad = *d;
    ad.kv_heads = 1, ad.qk_dim = (int)(R + rope), ad.v_dim = (int)R, ad.dtype = ATTN_F32;
    ad.kv_dtype = ATTN_F32, ad.kv_f32 = 0;
    ad.group = NULL, ad.group_size = 0;
    switch (fz_u8(in) % 8) {
    case 0: md.up = NULL; md.absorbed = &ad; break;
    case 1: case 2: md.absorbed = &ad; break;
    case 3: md.up = NULL; break; /* none: refused */
    default: break;
    }
    attn_mla_call m;
    memset(&m, 0, sizeof m);
    attn_tensor *ts[8] = {&m.q_nope, &m.q_rope, &m.c_kv, &m.k_rope, &m.w_uk, &m.w_uv, &m.o, &m.lse};
    fz_tensor(in, ts[0], 4, (int64_t[]){B, H, Lq, nope});
    fz_tensor(in, ts[1], 4, (int64_t[]){B, H, Lq, rope});
    fz_tensor(in, ts[2], 3, (int64_t[]){B, Lk, R, 1});
    fz_tensor(in, ts[3], 3, (int64_t[]){B, Lk, rope, 1});
    fz_tensor(in, ts[4], 3, (int64_t[]){H, R, nope, 1});
    fz_tensor(in, ts[5], 3, (int64_t[]){H, R, dv, 1});
    fz_tensor(in, ts[6], 4, (int64_t[]){B, H, Lq, dv});
    bool lse = fz_u8(in) & 1;
    if (lse) fz_tensor(in, ts[7], 3, (int64_t[]){B, H, Lq, 1}); /* 4 sizes: ndim may be fuzzed up */
    bool big = false, ovf = false;
    size_t e = fz_elem(md.dtype), ke = fz_elem(fz_mla_kv_type(&md)), el[8] = {e, e, ke, ke, e, e, e, 4};
    for (int i = 0; i < (lse ? 8 : 7); i++)
        ts[i]->data = fz_u8(in) % 32 == 0 ? NULL : fz_alloc(in, ts[i], el[i], &big, &ovf);
    m.q_offset = c->q_offset;
    m.q_offset_set = c->q_offset_set;
    m.inputs = c->inputs;
    m.ninputs = c->ninputs;
    m.threads = (int)fz_range(in, 0, 2);
    m.absorb = (int)fz_range(in, 0, 3);
    if (!big) { /* a call describing more than was allocated has no check-only entry: not made */
        attn_error err;
        /* the tile reads its sizes from fz_desc: the variant that will run, chosen as the
         * runtime does from q_nope's q_len and c_kv's kv_len */
        bool abs = m.absorb == ATTN_ABSORB_ON ||
                   (m.absorb != ATTN_ABSORB_OFF && attn_rt_mla_prefers_absorbed(&md, m.q_nope.shape[2], m.c_kv.shape[1]));
        fz_desc = abs ? &ad : &ud;
        attn_status st = attn_rt_launch_mla(&md, &m, NULL, NULL, &err);
        REQUIRE(st == ATTN_OK || (err.code == st && err.message[0]), "a rejection without its code or message");
    }
    for (int i = 0; i < 8; i++) free(ts[i]->data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FzIn in = {data, data + size};
    attn_rt_desc d;
    memset(&d, 0, sizeof d);
    attn_rt_input_desc idesc[ATTN_MAX_INPUTS];
    memset(idesc, 0, sizeof idesc);
    d.name = "fuzz";
    d.heads = (int)fz_range(&in, 1, 6);
    d.kv_heads = (int)fz_range(&in, 1, d.heads);
    d.qk_dim = (int)fz_range(&in, 1, 9);
    d.v_dim = (int)fz_range(&in, 1, 9);
    d.dtype = (attn_dtype)fz_range(&in, 0, 2);
    /* K/V as dtype, f16 or bf16, or f32 under a 16-bit dtype (`kv_dtype = f32;`: kv_f32) */
    switch (fz_u8(&in) % 8) {
    case 7: case 6: d.kv_f32 = d.dtype != ATTN_F32; break;
    case 5: d.kv_dtype = (attn_dtype)fz_range(&in, 1, 2); break;
    default: break;
    }
    d.block_q = (int)fz_range(&in, 1, 5);
    if (fz_u8(&in) % 32 == 0) { /* a hostile descriptor */
        d.heads = (int)fz_range(&in, -1, 2);
        d.kv_heads = (int)fz_range(&in, -1, 2);
        d.block_q = (int)fz_range(&in, -1, 2);
        d.dtype = (attn_dtype)fz_range(&in, 0, 5);
        d.kv_f32 = (int)fz_range(&in, 0, 1); /* under f32: refused */
    }
    d.ninputs = (int)fz_range(&in, 0, 3);
    bool used[5] = {false};
    for (int i = 0; i < d.ninputs; i++) {
        int j = (int)fz_range(&in, 0, 4);
        while (used[j]) j = (j + 1) % 5;
        used[j] = true;
        idesc[i].name = fz_names[j];
        idesc[i].dtype = fz_u8(&in) & 1 ? ATTN_I32 : ATTN_F32;
        idesc[i].rank = (int)fz_range(&in, 0, 4);
        for (int k = 0; k < idesc[i].rank; k++) {
            idesc[i].dim_kind[k] = (attn_dim_kind)fz_range(&in, 0, 5);
            idesc[i].dim_value[k] = fz_range(&in, 0, 4);
        }
    }
    d.inputs = idesc;
    d.tile = fz_tile;

    int64_t B = fz_range(&in, 1, 3), Lq = fz_range(&in, 1, 9), Lk = fz_range(&in, 1, 9);
    if (fz_u8(&in) % 8 == 0) Lk = fz_range(&in, 1, 200);
    int64_t H = d.heads, KH = d.kv_heads, DQ = d.qk_dim, DV = d.v_dim;
    attn_call c;
    memset(&c, 0, sizeof c);
    size_t e = fz_elem(d.dtype), ke = fz_elem(fz_kv_type(&d));
    bool too_big = false, overflow = false;
    fz_tensor(&in, &c.q, 4, (int64_t[]){B, H, Lq, DQ});
    fz_tensor(&in, &c.k, 4, (int64_t[]){B, KH, Lk, DQ});
    fz_tensor(&in, &c.v, 4, (int64_t[]){B, KH, Lk, DV});
    fz_tensor(&in, &c.o, 4, (int64_t[]){B, H, Lq, DV});
    bool lse = fz_u8(&in) & 1;
    if (lse) fz_tensor(&in, &c.lse, 3, (int64_t[]){B, H, Lq, 1});
    attn_tensor *ts[5] = {&c.q, &c.k, &c.v, &c.o, &c.lse};
    for (int i = 0; i < (lse ? 5 : 4); i++)
        ts[i]->data = fz_u8(&in) % 32 == 0 ? NULL
                                            : fz_alloc(&in, ts[i], i == 4 ? 4 : i == 1 || i == 2 ? ke : e, &too_big, &overflow);
    switch (fz_u8(&in) % 4) {
    case 0: c.q_offset = fz_i64(&in); break;
    case 1: c.q_offset = fz_range(&in, -20, 20); break;
    default: c.q_offset = ATTN_Q_OFFSET_DEFAULT; break;
    }
    c.q_offset_set = c.q_offset != ATTN_Q_OFFSET_DEFAULT;
    c.threads = (int)fz_range(&in, 0, 2);
    if (fz_u8(&in) % 64 == 0) c.threads = -1;

    attn_input inputs[5];
    memset(inputs, 0, sizeof inputs);
    c.ninputs = (int)fz_range(&in, 0, 4);
    if (fz_u8(&in) % 64 == 0) c.ninputs = -1;
    c.inputs = c.ninputs > 0 && fz_u8(&in) % 32 == 0 ? NULL : inputs;
    for (int i = 0; i < 5; i++) {
        /* usually the i-th declared input, right-sized for the base shapes */
        const attn_rt_input_desc *id = i < d.ninputs ? &idesc[i] : &idesc[0];
        int pick = fz_u8(&in) % 8;
        inputs[i].name = pick == 0 ? NULL : pick == 1 || i >= d.ninputs ? fz_names[fz_range(&in, 0, 4)] : id->name;
        int64_t right[ATTN_MAX_DIMS] = {0};
        for (int k = 0; k < ATTN_MAX_DIMS; k++) {
            switch (id->dim_kind[k]) {
            case ATTN_DIM_BATCH: right[k] = B; break;
            case ATTN_DIM_HEADS: right[k] = H; break;
            case ATTN_DIM_KV_HEADS: right[k] = KH; break;
            case ATTN_DIM_Q_LEN: right[k] = Lq; break;
            case ATTN_DIM_KV_LEN: right[k] = Lk; break;
            default: right[k] = id->dim_value[k]; break;
            }
        }
        fz_tensor(&in, &inputs[i].t, d.ninputs ? id->rank : 1, right);
        /* inputs are contiguous: the harness allocates their element count */
        attn_tensor dense = inputs[i].t;
        memset(dense.stride, 0, sizeof dense.stride);
        if (dense.ndim < 0 || dense.ndim > ATTN_MAX_DIMS) dense.ndim = 0;
        bool big = false, ovf = false;
        inputs[i].t.data = fz_u8(&in) % 32 == 0 ? NULL : fz_alloc(&in, &dense, 4, &big, &ovf);
        if (i < c.ninputs) too_big |= big, overflow |= ovf;
    }

    attn_error err;
    attn_rt_args args;
    attn_status st = attn_rt_check(&d, &c, fz_u8(&in) % 8 ? &args : NULL, &err);
    REQUIRE(st == ATTN_OK || (err.code == st && err.message[0]), "a rejection without its code or message");
    if (st == ATTN_OK) {
        /* accepted: no tensor's byte size may overflow; a huge but valid call is not run */
        REQUIRE(!overflow, "accepted a call whose byte extent overflows");
        if (!too_big) {
            fz_desc = &d;
            st = attn_rt_launch(&d, &c, NULL, &err);
            REQUIRE(st == ATTN_OK, "a checked call failed to launch: %s", err.message);
            if (fz_u8(&in) % 4 == 0) {
                /* d as every one of 1..3 key domains: fused tiles with the lse slots, or
                 * partial outputs merged (too few tiles for the threads) */
                const attn_rt_desc *doms[3] = {&d, &d, &d};
                st = attn_rt_launch_domains(doms, (int)fz_range(&in, 1, 3), &c, NULL, &err);
                REQUIRE(st == ATTN_OK || (st == ATTN_ERR_DTYPE && d.dtype != ATTN_F32 && err.message[0]),
                        "domains of a checked call failed: %s", err.message);
            }
            if (fz_u8(&in) % 4 == 0) fz_permuted(&in, &d, idesc, &c, B, Lk);
            if (fz_u8(&in) % 4 == 0) fz_mla(&in, &d, &c, B, Lq, Lk);
        }
    }
    for (int i = 0; i < 5; i++) free(ts[i]->data);
    for (int i = 0; i < 5; i++) free(inputs[i].t.data);
    return 0;
}
