/* masks.c — the hand-written masks of every example and a plain double-precision attention:
 * scores, mask, the softmax of check.h (two passes, max first), weighted sum. Written from
 * the papers and the .attn files, sharing no code with the frontend, the IR interpreter or
 * codegen. */
#include "masks.h"

#include <math.h>
#include <stdlib.h>

#include "check.h"

/* Python's // and % (the spec's integer / and %), for a positive divisor. */
static int64_t floordiv(int64_t a, int64_t d) {
    int64_t q = a / d;
    return (a % d != 0 && a < 0) ? q - 1 : q;
}
static int64_t floormod(int64_t a, int64_t d) {
    int64_t r = a % d;
    return r < 0 ? r + d : r;
}

/* An input of shape [batch, kv_len] read at (b, i); flags i outside [0, kv_len). */
static int32_t seq_input(MaskCtx *c, const int32_t *arr, int64_t b, int64_t i) {
    if (!arr || b < 0 || b >= c->batch || i < 0 || i >= c->kv_len) {
        c->index_error = true;
        return 0;
    }
    return arr[b * c->kv_len + i];
}

bool mask_causal(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) { return k <= q; }

/* Atrous: the distance is a multiple of the rate p[0]. */
bool mask_dilated(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return floormod(q - k, c->p[0]) == 0;
}

bool mask_dilated_causal(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return k <= q && floormod(q - k, c->p[0]) == 0;
}

/* Dilated within a window: rate p[0], span p[1] on each side. */
bool mask_dilated_window(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    int64_t d = q - k;
    return (d < 0 ? -d : d) <= c->p[1] && floormod(d, c->p[0]) == 0;
}

/* Bidirectional local window of half-width p[0]. */
bool mask_window(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    int64_t d = q - k;
    return (d < 0 ? -d : d) <= c->p[0];
}

/* Causal sliding window of p[0] keys, the query's own position included. */
bool mask_sliding(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return k <= q && q - k < c->p[0];
}

/* Sparse Transformer strided: the last l keys and every l-th key before, l = p[0]. */
bool mask_strided(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    int64_t l = c->p[0];
    return k <= q && (q - k < l || floormod(q - k, l) == 0);
}

/* Sparse Transformer fixed: own block of l = p[0], plus the last c = p[1] of every block. */
bool mask_fixed(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    int64_t l = c->p[0], cc = c->p[1];
    return k <= q && (floordiv(k, l) == floordiv(q, l) || floormod(k, l) >= l - cc);
}

/* UniLM seq2seq: the source prefix bidirectionally, then causal. */
bool mask_unilm(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    if (!c->src_len || b < 0 || b >= c->batch) {
        c->index_error = true;
        return false;
    }
    return k < c->src_len[b] || k <= q;
}

bool mask_xlnet_content(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return seq_input(c, c->rank, b, k) <= seq_input(c, c->rank, b, q);
}

bool mask_xlnet_query(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return seq_input(c, c->rank, b, k) < seq_input(c, c->rank, b, q);
}

bool mask_tta(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) { return k != q; }

bool mask_doc_causal(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return seq_input(c, c->doc, b, k) == seq_input(c, c->doc, b, q) && k <= q;
}

bool mask_doc_bidir(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return seq_input(c, c->doc, b, k) == seq_input(c, c->doc, b, q);
}

/* k >= kv_len - 16 || q - k >= q_len */
bool mask_lens(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return k >= c->kv_len - 16 || q - k >= c->q_len;
}

/* h % 2 == 0 ? k <= q : abs(q - k) <= 8 + b */
bool mask_per_head(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    int64_t d = q - k;
    return h % 2 == 0 ? k <= q : (d < 0 ? -d : d) <= 8 + b;
}

/* k < n || k <= q, n a scalar input */
bool mask_scalar_n(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    return k < c->n || k <= q;
}

/* abs(q - k) < thr[h], a float threshold per head */
bool mask_float_thr(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    if (!c->thr || h < 0 || h >= c->heads) {
        c->index_error = true;
        return false;
    }
    int64_t d = q - k;
    return (double)(d < 0 ? -d : d) < (double)c->thr[h];
}

/* k >= start[doc[b, q]] && k <= q: an input indexed by an input */
bool mask_nested_start(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k) {
    int32_t d = seq_input(c, c->doc, b, q);
    if (!c->start || d < 0 || d >= REF_START_LEN) {
        c->index_error = true;
        return false;
    }
    return k >= c->start[d] && k <= q;
}

/* score * 0.5 + 0.25 * cos(q - k) */
double score_cos(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s) {
    return s * 0.5 + 0.25 * cos((double)(q - k));
}

/* k % 3 == 0 ? -inf : score */
double score_inf_every3(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s) {
    return floormod(k, 3) == 0 ? -INFINITY : s;
}

static double slope_of(MaskCtx *c, int64_t h) {
    if (!c->slope || h < 0 || h >= c->heads) {
        c->index_error = true;
        return 0;
    }
    return c->slope[h];
}

double score_alibi(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s) {
    return s - slope_of(c, h) * (double)(q - k);
}

double score_alibi_abs(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s) {
    int64_t d = q - k;
    return s - slope_of(c, h) * (double)(d < 0 ? -d : d);
}

double score_softcap50(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s) {
    return 50.0 * tanh(s / 50.0);
}

double score_softcap2(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s) {
    return 2.0 * tanh(s / 2.0);
}

const char *ref_input_name(RefInputKind k) {
    switch (k) {
    case REF_IN_SRC_LEN: return "src_len";
    case REF_IN_DOC: return "doc";
    case REF_IN_RANK: return "rank";
    case REF_IN_SLOPE: return "slope";
    case REF_IN_N: return "n";
    case REF_IN_THR: return "thr";
    case REF_IN_START: return "start";
    default: return "?";
    }
}

#define P1(a, va) .param_names = {a}, .param_values = {va}
#define P2(a, va, b_, vb) .param_names = {a, b_}, .param_values = {va, vb}

/* Every attention block of examples/, with its numbers copied from the file. */
const RefKernel ref_kernels[] = {
    {"atrous.attn", "atrous", 4, 4, 32, 32, 0, 0, mask_dilated, NULL, P1("rate", 4)},
    {"atrous.attn", "atrous_written", 4, 4, 32, 32, 0, 0, mask_dilated, NULL, P1("rate", 4)},
    {"atrous.attn", "atrous_causal", 4, 4, 32, 32, 0, 0, mask_dilated_causal, NULL,
     P1("rate", 4)},
    {"atrous.attn", "atrous_window", 4, 4, 32, 32, 0, 0, mask_dilated_window, NULL,
     P2("rate", 4, "span", 24)},
    {"local.attn", "local_window", 4, 4, 32, 32, 0, 0, mask_window, NULL, P1("w", 16)},
    {"local.attn", "local_window_written", 4, 4, 32, 32, 0, 0, mask_window, NULL, P1("w", 16)},
    {"local.attn", "local_sliding", 4, 4, 32, 32, 0, 0, mask_sliding, NULL, P1("w", 16)},
    {"local.attn", "local_sliding_written", 4, 4, 32, 32, 0, 0, mask_sliding, NULL, P1("w", 16)},
    {"sparse_strided.attn", "sparse_strided", 4, 4, 32, 32, 0, 0, mask_strided, NULL,
     P1("stride", 16)},
    {"sparse_strided.attn", "sparse_strided_written", 4, 4, 32, 32, 0, 0, mask_strided, NULL,
     P1("stride", 16)},
    {"sparse_fixed.attn", "sparse_fixed", 4, 4, 32, 32, 0, 0, mask_fixed, NULL,
     P2("stride", 16, "c", 4)},
    {"sparse_fixed.attn", "sparse_fixed_written", 4, 4, 32, 32, 0, 0, mask_fixed, NULL,
     P2("stride", 16, "c", 4)},
    {"bert.attn", "bert_base", 12, 12, 64, 64, 0, 0, NULL, NULL, .param_names = {NULL}},
    {"bert.attn", "bert_small", 4, 4, 32, 32, 0, 0, NULL, NULL, .param_names = {NULL}},
    {"bert.attn", "bert_scaled", 2, 2, 32, 16, 0.25, 0, NULL, NULL, .param_names = {NULL}},
    {"causal_lm.attn", "gpt_small", 4, 4, 64, 64, 0, 0, mask_causal, NULL, .param_names = {NULL}},
    {"causal_lm.attn", "gpt_written", 4, 4, 64, 64, 0, 0, mask_causal, NULL,
     .param_names = {NULL}},
    {"causal_lm.attn", "cpm_lm", 32, 32, 80, 80, 0, 0, mask_causal, NULL, .param_names = {NULL}},
    {"unilm.attn", "unilm", 4, 4, 32, 32, 0, 0, mask_unilm, NULL, .param_names = {NULL},
     .inputs = {REF_IN_SRC_LEN}},
    {"unilm.attn", "simbert", 12, 12, 64, 64, 0, 0, mask_unilm, NULL, .param_names = {NULL},
     .inputs = {REF_IN_SRC_LEN}},
    {"xlnet.attn", "xlnet_content", 4, 4, 32, 32, 0, 0, mask_xlnet_content, NULL,
     .param_names = {NULL}, .inputs = {REF_IN_RANK}, .q_indexes_input = true},
    {"xlnet.attn", "xlnet_query", 4, 4, 32, 32, 0, 0, mask_xlnet_query, NULL,
     .param_names = {NULL}, .inputs = {REF_IN_RANK}, .q_indexes_input = true},
    {"tta.attn", "tta", 4, 4, 32, 32, 0, 0, mask_tta, NULL, .param_names = {NULL}},
    {"packed_docs.attn", "packed_causal", 4, 4, 32, 32, 0, 0, mask_doc_causal, NULL,
     .param_names = {NULL}, .inputs = {REF_IN_DOC}, .q_indexes_input = true},
    {"packed_docs.attn", "packed_bidir", 4, 4, 32, 32, 0, 0, mask_doc_bidir, NULL,
     .param_names = {NULL}, .inputs = {REF_IN_DOC}, .q_indexes_input = true},
    {"heads.attn", "mha", 4, 4, 32, 32, 0, 0, mask_causal, NULL, .param_names = {NULL}},
    {"heads.attn", "mqa", 8, 1, 32, 32, 0, 0, mask_causal, NULL, .param_names = {NULL}},
    {"heads.attn", "gqa", 8, 2, 32, 32, 0, 0, mask_causal, NULL, .param_names = {NULL}},
    {"heads.attn", "llama3_8b", 32, 8, 128, 128, 0, 0, mask_causal, NULL, .param_names = {NULL}},
    {"heads.attn", "head_map", 8, 4, 32, 32, 0, 4, mask_causal, NULL, .param_names = {NULL}},
    {"heads.attn", "gqa_vdim", 6, 3, 32, 24, 0, 0, mask_causal, NULL, .param_names = {NULL}},
    {"alibi.attn", "alibi", 4, 4, 32, 32, 0, 0, mask_causal, score_alibi, .param_names = {NULL},
     .inputs = {REF_IN_SLOPE}},
    {"alibi.attn", "alibi_bidir", 4, 4, 32, 32, 0, 0, NULL, score_alibi_abs,
     .param_names = {NULL}, .inputs = {REF_IN_SLOPE}},
    {"softcap.attn", "gemma2_local", 8, 4, 256, 256, 0, 0, mask_sliding, score_softcap50,
     P1("window", 4096)},
    {"softcap.attn", "gemma2_global", 8, 4, 256, 256, 0, 0, mask_causal, score_softcap50,
     .param_names = {NULL}},
    {"softcap.attn", "softcap_small", 4, 2, 32, 32, 0, 0, mask_sliding, score_softcap2,
     P1("win", 24)},
};
const int ref_nkernels = (int)(sizeof ref_kernels / sizeof ref_kernels[0]);

int ref_kv_head(const RefKernel *rk, int h) {
    if (rk->head_mod > 0) return h % rk->head_mod;
    return h / (rk->heads / rk->kv_heads);
}

bool ref_visible(const RefKernel *rk, MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k,
                 double score) {
    if (rk->mask && !rk->mask(c, b, h, q, k)) return false;
    return !(isinf(score) && score < 0);
}

bool ref_attention(const RefKernel *rk, MaskCtx *c, int64_t q_offset, const float *q,
                   const float *k, const float *v, double *o, double *lse, int64_t *nvis) {
    int64_t B = c->batch, Lq = c->q_len, Lk = c->kv_len;
    int H = rk->heads, KH = rk->kv_heads, Dq = rk->qk_dim, Dv = rk->v_dim;
    double scale = rk->scale > 0 ? rk->scale : 1.0 / sqrt((double)Dq);
    double *s = malloc(sizeof(double) * (size_t)(Lk > 0 ? Lk : 1));
    bool *vis = malloc(sizeof(bool) * (size_t)(Lk > 0 ? Lk : 1));
    if (!s || !vis) {
        free(s);
        free(vis);
        return false;
    }
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kh = ref_kv_head(rk, h);
            for (int64_t i = 0; i < Lq; i++) {
                int64_t qpos = q_offset + i;
                const float *qr = q + ((b * H + h) * Lq + i) * Dq;
                int64_t n = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    const float *kr = k + ((b * KH + kh) * Lk + j) * Dq;
                    double dot = 0;
                    for (int d = 0; d < Dq; d++) dot += (double)qr[d] * (double)kr[d];
                    double sc = dot * scale;
                    if (rk->score) sc = rk->score(c, b, h, qpos, j, sc);
                    vis[j] = ref_visible(rk, c, b, h, qpos, j, sc);
                    s[j] = vis[j] ? sc : -INFINITY;
                    n += vis[j];
                }
                lse[(b * H + h) * Lq + i] = check_softmax(s, Lk);
                double *orow = o + ((b * H + h) * Lq + i) * Dv;
                for (int d = 0; d < Dv; d++) orow[d] = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    if (!vis[j]) continue; /* (a visible key of weight 0 still meets an inf in V) */
                    const float *vr = v + ((b * KH + kh) * Lk + j) * Dv;
                    for (int d = 0; d < Dv; d++) orow[d] += s[j] * (double)vr[d];
                }
                if (nvis) nvis[(b * H + h) * Lq + i] = n;
            }
        }
    free(s);
    free(vis);
    return !c->index_error;
}

/* o[b,h,i] by SPEC §3: k_nope = c_kv w_uk[h], v = c_kv w_uv[h]. */
void ref_mla(RefMla d, int64_t B, int64_t Lq, int64_t Lk, int64_t qoff, RefMlaMask mask,
                      const float *qn, const float *qr, const float *ckv, const float *kr,
                      const float *wuk, const float *wuv, double *o, double *lse) {
    double scale = 1.0 / sqrt((double)(d.nope + d.rope));
    double *kn = malloc(sizeof(double) * (size_t)(Lk * d.nope));
    double *v = malloc(sizeof(double) * (size_t)(Lk * d.dv));
    double *s = malloc(sizeof(double) * (size_t)Lk);
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < d.H; h++) {
            for (int64_t j = 0; j < Lk; j++) {
                const float *c = ckv + (b * Lk + j) * d.R;
                for (int n = 0; n < d.nope; n++) {
                    double acc = 0;
                    for (int r = 0; r < d.R; r++) acc += c[r] * (double)wuk[((int64_t)h * d.R + r) * d.nope + n];
                    kn[j * d.nope + n] = acc;
                }
                for (int n = 0; n < d.dv; n++) {
                    double acc = 0;
                    for (int r = 0; r < d.R; r++) acc += c[r] * (double)wuv[((int64_t)h * d.R + r) * d.dv + n];
                    v[j * d.dv + n] = acc;
                }
            }
            for (int64_t i = 0; i < Lq; i++) {
                const float *a = qn + ((b * d.H + h) * Lq + i) * d.nope;
                const float *ar = qr + ((b * d.H + h) * Lq + i) * d.rope;
                for (int64_t j = 0; j < Lk; j++) {
                    double dot = 0;
                    for (int n = 0; n < d.nope; n++) dot += a[n] * kn[j * d.nope + n];
                    for (int n = 0; n < d.rope; n++) dot += ar[n] * (double)kr[(b * Lk + j) * d.rope + n];
                    s[j] = mask(qoff + i, j) ? dot * scale : -INFINITY;
                }
                lse[(b * d.H + h) * Lq + i] = check_softmax(s, Lk);
                double *out = o + ((b * d.H + h) * Lq + i) * d.dv;
                for (int n = 0; n < d.dv; n++) out[n] = 0;
                for (int64_t j = 0; j < Lk; j++)
                    for (int n = 0; n < d.dv; n++) out[n] += s[j] * v[j * d.dv + n];
            }
        }
    free(kn);
    free(v);
    free(s);
}
