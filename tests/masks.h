/* masks.h — hand-written C masks for every pattern of examples/, and a small double-precision
 * attention reference that uses them. Independent of the frontend and of the IR: the
 * numbers in the table below are copied from the .attn files by hand, so a frontend that
 * misreads a spec disagrees with this reference. */
#ifndef ATTNC_TESTS_MASKS_H
#define ATTNC_TESTS_MASKS_H

#include <stdbool.h>
#include <stdint.h>

#define REF_MAX_PARAMS 4
#define REF_MAX_INPUTS 2

/* What a mask, score mod or head map may read besides positions. */
typedef struct MaskCtx {
    int64_t p[REF_MAX_PARAMS]; /* the kernel's params, in RefKernel.param_names order */
    int64_t batch, q_len, kv_len; /* the call's sizes */
    int heads;                 /* query heads */
    const int32_t *src_len;    /* [batch] (unilm) */
    const int32_t *doc;        /* [batch, kv_len] (packed documents) */
    const int32_t *rank;       /* [batch, kv_len] (xlnet) */
    const float *slope;        /* [heads] (alibi) */
    int32_t n;                 /* a scalar input `n` (extra patterns) */
    const float *thr;          /* [heads] f32 thresholds (extra patterns) */
    const int32_t *start;      /* [REF_START_LEN] a table indexed by document id */
    bool index_error;          /* set when an input was read out of its bounds */
} MaskCtx;

typedef bool (*RefMaskFn)(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
typedef double (*RefScoreFn)(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s);

/* The runtime inputs the examples use; each has a fixed name and shape. */
typedef enum RefInputKind {
    REF_IN_NONE = 0,
    REF_IN_SRC_LEN, /* input i32 src_len[batch]; values in [0, kv_len] */
    REF_IN_DOC,     /* input i32 doc[batch, seq]; sorted runs of document ids */
    REF_IN_RANK,    /* input i32 rank[batch, seq]; a permutation of 0..kv_len-1 per row */
    REF_IN_SLOPE,   /* input f32 slope[heads]; ALiBi slopes */
    REF_IN_N,       /* input i32 n; (a scalar) values in [0, kv_len] */
    REF_IN_THR,     /* input f32 thr[heads]; values in [0.5, 30] */
    REF_IN_START,   /* input i32 start[REF_START_LEN]; values in [0, kv_len] */
} RefInputKind;

#define REF_START_LEN 8192

const char *ref_input_name(RefInputKind k);

/* One attention block of one example file, described independently of the frontend. */
typedef struct RefKernel {
    const char *file;         /* example file, relative to examples/ */
    const char *kernel;       /* the attention block's name */
    int heads, kv_heads;      /* query and K/V heads */
    int qk_dim, v_dim;        /* head widths */
    double scale;             /* 0: 1/sqrt(qk_dim) */
    int head_mod;             /* > 0: K/V head is h % head_mod; 0: contiguous groups */
    RefMaskFn mask;           /* NULL: every key visible */
    RefScoreFn score;         /* NULL: no score mod */
    const char *param_names[REF_MAX_PARAMS]; /* params the mask reads (NULL-terminated) */
    int64_t param_values[REF_MAX_PARAMS];    /* their values in the file */
    RefInputKind inputs[REF_MAX_INPUTS];     /* runtime inputs, in spec order */
    bool q_indexes_input;     /* an input is indexed by q: queries must lie in [0, kv_len) */
} RefKernel;

extern const RefKernel ref_kernels[];
extern const int ref_nkernels;

/* The K/V head query head h reads. */
int ref_kv_head(const RefKernel *rk, int h);

/* The visibility of (q, k) for batch row b, head h, after the mask and a -inf score. */
bool ref_visible(const RefKernel *rk, MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k,
                 double score);

/* Double-precision attention on dense row-major tensors (q [B,H,Lq,Dqk], k [B,KH,Lk,Dqk],
 * v [B,KH,Lk,Dv]); writes o [B,H,Lq,Dv], lse [B,H,Lq] (-inf for rows seeing no key) and
 * nvis [B,H,Lq] (keys each row sees; may be NULL). Returns false on an input index error
 * (c->index_error is then set) or out of memory. */
bool ref_attention(const RefKernel *rk, MaskCtx *c, int64_t q_offset, const float *q,
                   const float *k, const float *v, double *o, double *lse, int64_t *nvis);

// The masks, one plain function per pattern (exported for direct unit checks).
bool mask_causal(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_dilated(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_dilated_causal(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_dilated_window(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_window(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_sliding(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_strided(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_fixed(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_unilm(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_xlnet_content(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_xlnet_query(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_tta(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_doc_causal(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_doc_bidir(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);

// Extra patterns of test_kernels.c's inline specs (not examples).
bool mask_lens(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_per_head(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_scalar_n(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_float_thr(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
bool mask_nested_start(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k);
double score_cos(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s);
double score_inf_every3(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s);

/* MLA (SPEC §3) in double precision, up-projecting K and V: contiguous tensors, q_nope
 * [B, H, Lq, nope], q_rope [B, H, Lq, rope], c_kv [B, Lk, R], k_rope [B, Lk, rope],
 * w_uk [H, R, nope], w_uv [H, R, dv]; o [B, H, Lq, dv] and lse [B, H, Lq] out; query row i
 * at position qoff + i. */
typedef struct RefMla {
    int H, R, rope, nope, dv;
} RefMla;
typedef bool (*RefMlaMask)(int64_t q, int64_t k);
void ref_mla(RefMla d, int64_t B, int64_t Lq, int64_t Lk, int64_t qoff, RefMlaMask mask,
             const float *qn, const float *qr, const float *ckv, const float *kr,
             const float *wuk, const float *wuv, double *o, double *lse);

double score_alibi(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s);
double score_alibi_abs(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s);
double score_softcap50(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s);
double score_softcap2(MaskCtx *c, int64_t b, int64_t h, int64_t q, int64_t k, double s);

#endif
