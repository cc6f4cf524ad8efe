/* test_aot.c — every block of every example, written by `attnc build` ahead of time and linked
 * with libattnc_rt only (no compiler, no LLVM), called through its generated header and checked
 * against the hand-written C reference of masks.c on ragged shapes: all blocks through their
 * attn_call entry point, some through the typed _simple one and on strided views.
 *
 * Tolerance as in test_kernels.c: |got - ref| <= 1e-4 + 1e-4 |ref| (f32 kernel, double
 * reference, outputs of size ~1, at most 257 keys); rows that see no key exactly 0. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aot_alibi.h"
#include "aot_atrous.h"
#include "aot_bert.h"
#include "aot_causal_lm.h"
#include "aot_heads.h"
#include "aot_local.h"
#include "aot_packed_docs.h"
#include "aot_softcap.h"
#include "aot_sparse_fixed.h"
#include "aot_sparse_strided.h"
#include "aot_tta.h"
#include "aot_unilm.h"
#include "aot_xlnet.h"
#include "check.h"
#include "tests/masks.h"

#define ATOL 1e-4
#define RTOL 1e-4
#define CANARY -7777.25f

static uint64_t g_rng = 0xa07a07ULL;

static const RefKernel *ref_find(const char *kernel) {
    for (int i = 0; i < ref_nkernels; i++)
        if (!strcmp(ref_kernels[i].kernel, kernel)) return &ref_kernels[i];
    return NULL;
}

static float *randn(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (p) check_fill(p, (size_t)n, &g_rng, CHECK_NORMAL, 1.0);
    return p;
}

/* Compares a kernel's o (and lse) with the C reference; prints mismatches. */
static bool compare(const char *what, const RefKernel *rk, int64_t B, int64_t Lq, int64_t Lk,
                    const float *o, int64_t o_row, int64_t o_head, int64_t o_batch,
                    const float *lse, const double *oc, const double *lc, const int64_t *nvis) {
    int reports = 0;
    bool ok = true;
    int H = rk->heads, Dv = rk->v_dim;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                int64_t row = (b * H + h) * Lq + i;
                bool masked = nvis[row] == 0;
                for (int64_t d = 0; d < Dv; d++) {
                    double got = o[b * o_batch + h * o_head + i * o_row + d];
                    double want = oc[row * Dv + d];
                    bool bad = masked ? got != 0.0
                                      : !(fabs(got - want) <= ATOL + RTOL * fabs(want));
                    if (bad && reports++ < 5)
                        printf("FAIL %s: %s B=%lld q_len=%lld kv_len=%lld: o[%lld,%lld,%lld,%lld] "
                               "got %.9g expected %.9g%s\n",
                               rk->kernel, what, (long long)B, (long long)Lq, (long long)Lk,
                               (long long)b, (long long)h, (long long)i, (long long)d, got, want,
                               masked ? " (row sees no key)" : "");
                    ok &= !bad;
                }
                if (lse) {
                    double got = lse[row], want = lc[row];
                    bool bad = masked ? !(isinf(got) && got < 0)
                                      : !(fabs(got - want) <= ATOL + RTOL * fabs(want));
                    if (bad && reports++ < 5)
                        printf("FAIL %s: %s B=%lld q_len=%lld kv_len=%lld: lse[%lld,%lld,%lld] "
                               "got %.9g expected %.9g\n",
                               rk->kernel, what, (long long)B, (long long)Lq, (long long)Lk,
                               (long long)b, (long long)h, (long long)i, got, want);
                    ok &= !bad;
                }
            }
    return ok;
}

/* The runtime inputs of the examples for B batch rows over Lk keys: source lengths, documents
 * of 5..40 positions (doc may be NULL), ALiBi slopes for H heads, and ranks: a shuffled
 * permutation per batch row, except row `tie_row` (ties: the call falls back to the kernel as
 * written; -1 for none). */
static void fill_inputs(int64_t B, int64_t Lk, int H, int64_t tie_row, int32_t *src_len, int32_t *doc,
                        int32_t *rank, float *slope) {
    for (int64_t b = 0; b < B; b++) {
        src_len[b] = (int32_t)((b * 37 + Lk / 3) % (Lk + 1));
        int32_t id = 0, left = 0, *r = rank + b * Lk;
        for (int64_t i = 0; i < Lk; i++) {
            if (doc && left-- <= 0) id++, left = 5 + (int32_t)check_int(&g_rng, 0, 35);
            if (doc) doc[b * Lk + i] = id;
            r[i] = (int32_t)(b == tie_row ? i / 2 : i);
        }
        for (int64_t i = Lk - 1; b != tie_row && i > 0; i--) {
            int64_t j = check_int(&g_rng, 0, i);
            int32_t t = r[i];
            r[i] = r[j], r[j] = t;
        }
    }
    for (int h = 0; h < H; h++) slope[h] = (float)exp2(-8.0 * (h + 1) / H);
}

/* STRIDED and FIXED are union masks: their headers launch two key domains; XLNET's launches
 * the causal variant on rows reordered by rank when the call allows it */
typedef enum Which { GPT, UNILM, ALIBI, STRIDED, FIXED, XLNET, NWHICH } Which;

/* One shape through the _simple entry point (contiguous, default q_offset). */
static void run_simple(Which which, int64_t B, int64_t Lq, int64_t Lk, int threads) {
    const char *names[] = {"gpt_small", "unilm", "alibi", "sparse_strided", "sparse_fixed", "xlnet_content"};
    const RefKernel *rk = ref_find(names[which]);
    int H = rk->heads, KH = rk->kv_heads, Dq = rk->qk_dim, Dv = rk->v_dim;
    float *q = randn(B * H * Lq * Dq), *k = randn(B * KH * Lk * Dq), *v = randn(B * KH * Lk * Dv);
    float *o = malloc(sizeof(float) * (size_t)(B * H * Lq * Dv));
    double *oc = malloc(sizeof(double) * (size_t)(B * H * Lq * Dv));
    double *lc = malloc(sizeof(double) * (size_t)(B * H * Lq));
    int64_t *nvis = malloc(sizeof(int64_t) * (size_t)(B * H * Lq));
    int32_t *src_len = malloc(sizeof(int32_t) * (size_t)B);
    float *slope = malloc(sizeof(float) * (size_t)H);
    int32_t *rank = malloc(sizeof(int32_t) * (size_t)(B * Lk));
    if (!q || !k || !v || !o || !oc || !lc || !nvis || !src_len || !slope || !rank) {
        CHECK(false, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < B * H * Lq * Dv; i++) o[i] = 9999.5f;
    fill_inputs(B, Lk, H, 1, src_len, NULL, rank, slope); /* row 1's ranks tie */
    MaskCtx mc;
    memset(&mc, 0, sizeof mc);
    mc.batch = B, mc.q_len = Lq, mc.kv_len = Lk, mc.heads = H;
    mc.src_len = src_len, mc.slope = slope, mc.rank = rank;
    for (int i = 0; i < REF_MAX_PARAMS; i++) mc.p[i] = rk->param_values[i];
    attn_error err;
    attn_status st;
    switch (which) {
    case GPT: st = attnc_gpt_small_simple(q, k, v, o, B, Lq, Lk, threads, &err); break;
    case UNILM: st = attnc_unilm_simple(q, k, v, o, B, Lq, Lk, src_len, threads, &err); break;
    case ALIBI: st = attnc_alibi_simple(q, k, v, o, B, Lq, Lk, slope, threads, &err); break;
    case STRIDED: st = attnc_sparse_strided_simple(q, k, v, o, B, Lq, Lk, threads, &err); break;
    case FIXED: st = attnc_sparse_fixed_simple(q, k, v, o, B, Lq, Lk, threads, &err); break;
    default: st = attnc_xlnet_content_simple(q, k, v, o, B, Lq, Lk, rank, threads, &err); break;
    }
    char what[64];
    snprintf(what, sizeof what, "_simple threads=%d", threads);
    if (which == XLNET && Lq > Lk) {
        /* the first rows sit at negative positions: rank[b, q] is out of bounds */
        CHECK(st == ATTN_ERR_INDEX, "%s: %s B=%lld q_len=%lld kv_len=%lld: %s, expected ATTN_ERR_INDEX", rk->kernel,
              what, (long long)B, (long long)Lq, (long long)Lk, attn_status_name(st));
        goto out;
    }
    CHECK(st == ATTN_OK, "%s: %s B=%lld q_len=%lld kv_len=%lld: %s: %s", rk->kernel, what, (long long)B,
          (long long)Lq, (long long)Lk, attn_status_name(st), err.message);
    if (st != ATTN_OK) {
        goto out;
    }
    ref_attention(rk, &mc, Lk - Lq, q, k, v, oc, lc, nvis);
    CHECK(compare(what, rk, B, Lq, Lk, o, Dv, Lq * Dv, H * Lq * Dv, NULL, oc, lc, nvis), "%s: %s B=%lld q_len=%lld kv_len=%lld (above)",
          rk->kernel, what, (long long)B, (long long)Lq, (long long)Lk);
out:
    free(q), free(k), free(v), free(o), free(oc), free(lc), free(nvis), free(src_len), free(slope), free(rank);
}

/* One shape through the attn_call entry point: padded row and head strides, lse, q_offset. */
static void run_strided(int64_t B, int64_t Lq, int64_t Lk, int64_t q_offset) {
    const RefKernel *rk = ref_find("gpt_small");
    int H = rk->heads, Dq = rk->qk_dim, Dv = rk->v_dim;
    int64_t row = Dq + 3, head = Lq * row + 5, bat = H * head + 7; /* q and o share the layout */
    int64_t krow = Dq + 1, khead = Lk * krow + 2, kbat = H * khead + 1;
    int64_t qn = B * bat, kn = B * kbat;
    float *qd = randn(B * H * Lq * Dq), *kd = randn(B * H * Lk * Dq), *vd = randn(B * H * Lk * Dv);
    float *qb = malloc(sizeof(float) * (size_t)qn), *kb = malloc(sizeof(float) * (size_t)kn);
    float *vb = malloc(sizeof(float) * (size_t)kn), *ob = malloc(sizeof(float) * (size_t)qn);
    float *lse = malloc(sizeof(float) * (size_t)(B * H * Lq + 16));
    double *oc = malloc(sizeof(double) * (size_t)(B * H * Lq * Dv));
    double *lc = malloc(sizeof(double) * (size_t)(B * H * Lq));
    int64_t *nvis = malloc(sizeof(int64_t) * (size_t)(B * H * Lq));
    bool *inside = calloc((size_t)qn, sizeof(bool));
    if (!qd || !kd || !vd || !qb || !kb || !vb || !ob || !lse || !oc || !lc || !nvis || !inside) {
        CHECK(false, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < qn; i++) qb[i] = NAN, ob[i] = CANARY;
    for (int64_t i = 0; i < kn; i++) kb[i] = NAN, vb[i] = NAN;
    for (int64_t i = 0; i < B * H * Lq + 16; i++) lse[i] = CANARY;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t i = 0; i < Lq; i++)
                for (int64_t d = 0; d < Dq; d++) {
                    qb[b * bat + h * head + i * row + d] = qd[((b * H + h) * Lq + i) * Dq + d];
                    inside[b * bat + h * head + i * row + d] = true;
                }
            for (int64_t j = 0; j < Lk; j++)
                for (int64_t d = 0; d < Dq; d++) {
                    kb[b * kbat + h * khead + j * krow + d] = kd[((b * H + h) * Lk + j) * Dq + d];
                    vb[b * kbat + h * khead + j * krow + d] = vd[((b * H + h) * Lk + j) * Dv + d];
                }
        }
    attn_call call;
    memset(&call, 0, sizeof call);
    attn_tensor *ts[4] = {&call.q, &call.k, &call.v, &call.o};
    float *bufs[4] = {qb, kb, vb, ob};
    for (int t = 0; t < 4; t++) {
        bool isk = t == 1 || t == 2;
        ts[t]->data = bufs[t], ts[t]->ndim = 4;
        ts[t]->shape[0] = B, ts[t]->shape[1] = H, ts[t]->shape[2] = isk ? Lk : Lq;
        ts[t]->shape[3] = Dq;
        ts[t]->stride[0] = isk ? kbat : bat, ts[t]->stride[1] = isk ? khead : head;
        ts[t]->stride[2] = isk ? krow : row, ts[t]->stride[3] = 1;
    }
    call.lse.data = lse + 8, call.lse.ndim = 3; /* canaries before and after */
    call.lse.shape[0] = B, call.lse.shape[1] = H, call.lse.shape[2] = Lq;
    call.q_offset = q_offset;
    call.q_offset_set = q_offset != ATTN_Q_OFFSET_DEFAULT;
    call.threads = 2;
    attn_error err;
    attn_status st = attnc_gpt_small(&call, &err);
    if (st != ATTN_OK) {
        CHECK(false, "gpt_small: strided B=%lld q_len=%lld kv_len=%lld: %s: %s", (long long)B,
               (long long)Lq, (long long)Lk, attn_status_name(st), err.message);
        goto out;
    }
    MaskCtx mc;
    memset(&mc, 0, sizeof mc);
    mc.batch = B, mc.q_len = Lq, mc.kv_len = Lk, mc.heads = H;
    ref_attention(rk, &mc, q_offset, qd, kd, vd, oc, lc, nvis);
    bool ok = compare("strided+lse", rk, B, Lq, Lk, ob, row, head, bat, lse + 8, oc, lc, nvis);
    for (int64_t i = 0; i < qn; i++)
        if (!inside[i] && memcmp(&ob[i], &(float){CANARY}, sizeof(float)) != 0) {
            printf("FAIL gpt_small: strided: o written outside its view at offset %lld\n",
                   (long long)i);
            ok = false;
            break;
        }
    for (int64_t i = 0; i < 16; i++) {
        int64_t at = i < 8 ? i : B * H * Lq + i;
        if (memcmp(&lse[at], &(float){CANARY}, sizeof(float)) != 0) {
            printf("FAIL gpt_small: strided: lse written outside its view at %lld\n",
                   (long long)at - 8);
            ok = false;
            break;
        }
    }
    CHECK(ok, "gpt_small: strided B=%lld q_len=%lld kv_len=%lld (above)", (long long)B, (long long)Lq, (long long)Lk);
out:
    free(qd), free(kd), free(vd), free(qb), free(kb), free(vb), free(ob), free(lse);
    free(oc), free(lc), free(nvis), free(inside);
}

// every example block through its attn_call entry point

typedef attn_status (*AotEntry)(const attn_call *call, attn_error *err);
#define E(name) {#name, attnc_##name}
static const struct {
    const char *kernel;
    AotEntry fn;
} entries[] = {
    E(alibi), E(alibi_bidir), E(atrous), E(atrous_written), E(atrous_causal), E(atrous_window),
    E(bert_base), E(bert_small), E(bert_scaled), E(gpt_small), E(gpt_written), E(cpm_lm),
    E(mha), E(mqa), E(gqa), E(llama3_8b), E(head_map), E(gqa_vdim),
    E(local_window), E(local_window_written), E(local_sliding), E(local_sliding_written),
    E(packed_causal), E(packed_bidir), E(gemma2_local), E(gemma2_global), E(softcap_small),
    E(sparse_fixed), E(sparse_fixed_written), E(sparse_strided), E(sparse_strided_written),
    E(tta), E(unilm), E(simbert), E(xlnet_content), E(xlnet_query),
};
#undef E

/* One block on one shape: dense tensors, its inputs (documents of 5..40 positions, shuffled
 * ranks, source lengths, ALiBi slopes), lse; against ref_attention. */
static bool run_entry(const RefKernel *rk, AotEntry fn, int64_t B, int64_t Lq, int64_t Lk, int threads) {
    int H = rk->heads, KH = rk->kv_heads, Dq = rk->qk_dim, Dv = rk->v_dim;
    float *q = randn(B * H * Lq * Dq), *k = randn(B * KH * Lk * Dq), *v = randn(B * KH * Lk * Dv);
    float *o = malloc(sizeof(float) * (size_t)(B * H * Lq * Dv)), *lse = malloc(sizeof(float) * (size_t)(B * H * Lq));
    double *oc = malloc(sizeof(double) * (size_t)(B * H * Lq * Dv)), *lc = malloc(sizeof(double) * (size_t)(B * H * Lq));
    int64_t *nvis = malloc(sizeof(int64_t) * (size_t)(B * H * Lq));
    int32_t *src_len = malloc(sizeof(int32_t) * (size_t)B), *doc = malloc(sizeof(int32_t) * (size_t)(B * Lk));
    int32_t *rank = malloc(sizeof(int32_t) * (size_t)(B * Lk));
    float *slope = malloc(sizeof(float) * (size_t)H);
    bool ok = q && k && v && o && lse && oc && lc && nvis && src_len && doc && rank && slope;
    if (!ok) {
        printf("FAIL out of memory\n");
        goto out;
    }
    fill_inputs(B, Lk, H, -1, src_len, doc, rank, slope);
    attn_call call;
    memset(&call, 0, sizeof call);
    attnc_aot_tensor(&call.q, q, 4, B, H, Lq, Dq);
    attnc_aot_tensor(&call.k, k, 4, B, KH, Lk, Dq);
    attnc_aot_tensor(&call.v, v, 4, B, KH, Lk, Dv);
    attnc_aot_tensor(&call.o, o, 4, B, H, Lq, Dv);
    attnc_aot_tensor(&call.lse, lse, 3, B, H, Lq, 0);
    call.q_offset = ATTN_Q_OFFSET_DEFAULT;
    call.threads = threads;
    attn_input in[REF_MAX_INPUTS];
    memset(in, 0, sizeof in);
    int nin = 0;
    for (; nin < REF_MAX_INPUTS && rk->inputs[nin] != REF_IN_NONE; nin++) {
        in[nin].name = ref_input_name(rk->inputs[nin]);
        switch (rk->inputs[nin]) {
        case REF_IN_SRC_LEN: attnc_aot_tensor(&in[nin].t, src_len, 1, B, 0, 0, 0); break;
        case REF_IN_DOC: attnc_aot_tensor(&in[nin].t, doc, 2, B, Lk, 0, 0); break;
        case REF_IN_RANK: attnc_aot_tensor(&in[nin].t, rank, 2, B, Lk, 0, 0); break;
        case REF_IN_SLOPE: attnc_aot_tensor(&in[nin].t, slope, 1, H, 0, 0, 0); break;
        default: printf("FAIL test bug: %s: input kind %d\n", rk->kernel, rk->inputs[nin]); ok = false; goto out;
        }
    }
    call.inputs = in;
    call.ninputs = nin;
    attn_error err;
    attn_status st = fn(&call, &err);
    if (st != ATTN_OK) {
        printf("FAIL %s: B=%lld q_len=%lld kv_len=%lld: %s: %s\n", rk->kernel, (long long)B, (long long)Lq,
               (long long)Lk, attn_status_name(st), err.message);
        ok = false;
        goto out;
    }
    MaskCtx mc;
    memset(&mc, 0, sizeof mc);
    mc.batch = B, mc.q_len = Lq, mc.kv_len = Lk, mc.heads = H;
    mc.src_len = src_len, mc.doc = doc, mc.rank = rank, mc.slope = slope;
    for (int i = 0; i < REF_MAX_PARAMS; i++) mc.p[i] = rk->param_values[i];
    ok = ref_attention(rk, &mc, Lk - Lq, q, k, v, oc, lc, nvis) &&
         compare("attn_call", rk, B, Lq, Lk, o, Dv, Lq * Dv, H * Lq * Dv, lse, oc, lc, nvis);
out:
    free(q), free(k), free(v), free(o), free(lse), free(oc), free(lc), free(nvis);
    free(src_len), free(doc), free(rank), free(slope);
    return ok;
}

static void run_all_examples(void) {
    static const int64_t shapes[][3] = {{1, 1, 1}, {2, 7, 7}, {1, 1, 100}, {2, 33, 100}, {1, 130, 130}, {1, 70, 300}};
    for (int r = 0; r < ref_nkernels; r++) {
        const RefKernel *rk = &ref_kernels[r];
        AotEntry fn = NULL;
        for (size_t e = 0; e < sizeof entries / sizeof entries[0]; e++)
            if (!strcmp(entries[e].kernel, rk->kernel)) fn = entries[e].fn;
        if (!fn) {
            CHECK(false, "%s:%s has no AOT entry in test_aot.c", rk->file, rk->kernel);
            continue;
        }
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            /* queries at positions an input is indexed by must lie in [0, kv_len) */
            if (rk->q_indexes_input && shapes[s][1] > shapes[s][2]) continue;
            CHECK(run_entry(rk, fn, shapes[s][0], shapes[s][1], shapes[s][2], s % 2 ? 2 : 1), "%s:%s (above)", rk->file,
                  rk->kernel);
        }
    }
}

int main(void) {
    run_all_examples();
    static const int64_t shapes[][3] = {
        {1, 1, 1}, {2, 7, 7}, {1, 1, 100}, {3, 33, 100}, {1, 100, 100}, {2, 33, 7}, {1, 257, 257},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int w = 0; w < NWHICH; w++)
            run_simple((Which)w, shapes[s][0], shapes[s][1], shapes[s][2], s % 2 ? 2 : 1);
    run_strided(2, 33, 100, 0);
    run_strided(1, 7, 33, -3); /* rows before the first key see nothing */
    run_strided(3, 1, 257, 256);
    return check_done("test_aot");
}
