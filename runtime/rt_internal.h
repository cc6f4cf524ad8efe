/* rt_internal.h — helpers shared by the runtime's files; not part of the ABI. */
#ifndef ATTNC_RT_INTERNAL_H
#define ATTNC_RT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attn/attn_rt.h"

/* The runtime's vector loops (the MLA products, the backward's blocks) are compiled for
 * AVX-512, AVX2 and the baseline, and the loader picks one (no -march flags, no LLVM);
 * sanitizer builds compile the baseline alone. */
#if defined(__x86_64__) && defined(__ELF__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define RT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RT_CLONES
#endif

/* The storage type of a block's k and v (its kv_dtype, as its dtype where it has none). */
static inline attn_dtype rt_kv_dtype(const attn_rt_desc *d) {
    return d->kv_f32 ? ATTN_F32 : d->kv_dtype != ATTN_F32 ? d->kv_dtype : d->dtype;
}

/* The storage type of an MLA block's latent cache c_kv, k_rope (its kv_dtype, as its dtype
 * where it has none, f32 with kv_f32). */
static inline attn_dtype rt_mla_kv_dtype(const attn_rt_mla_desc *d) {
    return d->kv_f32 ? ATTN_F32 : d->kv_dtype != ATTN_F32 ? d->kv_dtype : d->dtype;
}

// status.c

/* Records `code` and a formatted message in `err` (which may be NULL); returns `code`. */
attn_status rt_error(attn_error *err, attn_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Marks `err` (which may be NULL) as ATTN_OK with an empty message; returns ATTN_OK. */
attn_status rt_ok(attn_error *err);

// launch.c

/* Bytes of one element of a tensor of type t (f16, bf16: 2; int8: 1; else 4). */
int64_t rt_dtype_size(attn_dtype t);
/* "f32", "f16", "bf16", "i32", "int8", or "an unknown type" (for messages). */
const char *rt_dtype_name(attn_dtype t);

/* The outcome of a group function called with kvh = -1 (attn_rt_desc.group_all) over keys
 * [k0, k1): true when its return code rc is one; then *from is the first key left to the
 * per-head calls (k1: none; k0 with *resume false: it refused, nothing written) and *resume
 * whether they continue from the o and lse it wrote. False: an error (an index out of bounds,
 * or a stop outside [k0, k1]). */
static inline bool rt_group_all_rest(int rc, int64_t k0, int64_t k1, int64_t *from, bool *resume) {
    *from = rc == 0 ? k1 : rc == -1 ? k0 : -(int64_t)rc - 2;
    *resume = rc != -1;
    return rc <= 0 && *from >= k0 && *from <= k1;
}

/* One of q, k, v, o, lse after validation: sizes and strides with zeros resolved. */
typedef struct RtView {
    const char *name;      /* for messages */
    const attn_tensor *t;  /* as given */
    int64_t stride[ATTN_MAX_DIMS];
    int64_t lo, hi;        /* its extent in bytes from t->data: [lo, hi) */
} RtView;

/* Resolves strides (all-zero: row-major) and the byte extent of a tensor of `elem`-byte
 * elements, rejecting negative or non-unit-last strides and overflow. */
attn_status rt_view(RtView *v, const char *name, const attn_tensor *t, int64_t elem,
                    attn_error *err);
/* Builds args->summary for the descriptor's summarized inputs (free with rt_summaries_free,
 * which also runs on failure). */
attn_status rt_summaries_build(const attn_rt_desc *d, attn_rt_args *a, attn_error *err);
void rt_summaries_free(attn_rt_args *a);
/* attn_rt_check, without the check that o and lse share no byte with q, k, v and the inputs
 * when `disjoint` is false (for validating calls whose tensors are stand-ins). */
attn_status rt_check_call(const attn_rt_desc *d, const attn_call *c, attn_rt_args *out,
                          bool disjoint, attn_error *err);
/* The bytes [lo, hi) a tensor or input occupies (lo == hi: none), and its name. */
typedef struct RtRange {
    const char *name;
    uintptr_t lo, hi;
} RtRange;
/* The range of a view made by rt_view. */
RtRange rt_view_range(const RtView *v);
/* The ranges of the runtime inputs in[0 .. n) (contiguous, 4-byte elements, sizes as given;
 * at most ATTN_MAX_INPUTS); an input without name or data, or of a bad rank or size, has none
 * (its own check refuses it). Returns how many were written to `out`. */
int rt_input_ranges(const attn_input *in, int n, RtRange *out);
/* ATTN_ERR_STRIDE, "OUT overlaps IN", when an output range shares a byte with an input range. */
attn_status rt_check_disjoint(const RtRange *outs, int nout, const RtRange *ins, int nin,
                              attn_error *err);
/* Whether two tensors share a byte. */
bool rt_ranges_overlap(const RtView *a, const RtView *b);
/* An output must not write one element twice. */
attn_status rt_check_no_overlap(const RtView *v, attn_error *err);
/* Binds call->inputs (only inputs, ninputs) to the descriptor's declarations, filling
 * args->input and input_dim (sizes from args->batch, q_len, kv_len). */
/* num_pages: the size of ATTN_DIM_PAGES dims (paged calls; -1 elsewhere: such an input is refused) */
attn_status rt_check_inputs(const attn_rt_desc *d, const attn_call *c, attn_rt_args *a, int64_t num_pages,
                            attn_error *err);
/* The descriptor's own sanity (sizes, dtype, input table, stack). */
attn_status rt_check_desc(const attn_rt_desc *d, attn_error *err);
/* ATTN_ERR_INDEX with a message naming the inputs the block declares. */
attn_status rt_index_error(const attn_rt_desc *d, attn_error *err);
/* A call with no query (nothing to do) or no key (every row sees no key: o = 0, lse = -inf,
 * written here): true when done, and no kernel runs. */
bool rt_empty_call(const attn_rt_args *a, int64_t heads, int64_t v_dim, attn_dtype dtype);
/* The threads a call runs on: its own count, else the pool's, else the machine's; >= 1. */
int rt_call_threads(const attn_call *c, attn_rt_pool *pool);
/* Consecutive units (of `units` per batch row) that read one K/V head: tasks keep them side
 * by side (a K/V block loaded once serves them all). */
int64_t rt_kv_share(const attn_rt_desc *d, int64_t units);
/* Task t of ntiles query tiles per unit: its tile and its (batch row * units + unit). */
void rt_task_order(int64_t t, int64_t ntiles, int64_t share, int64_t *tile, int64_t *r);
/* Tall tiles of block_q rows halved, down to floor_q, while units (batch x heads) x tiles
 * leaves fewer than `per` a thread (attn_rt_desc.cut_below; 0: four): the threads share the
 * (uneven, for causal masks) work more evenly. */
int64_t rt_cut_tiles(int64_t block_q, int64_t floor_q, int64_t units, int64_t q_len, int threads, int per);

/* Key windows (ring attention, keys stored in shards): a call whose k and v hold only the
 * keys at positions [k_begin, k_begin + k.shape[2]) of a sequence of kv_len keys. Masks, scores
 * and inputs see kv_len and the keys' absolute positions; only the window's keys are visited
 * and read. rt_window_call checks the outputs share no byte with what the call reads and makes
 * the call whose k and v are views of all kv_len rows (their base moved back k_begin rows; only
 * the window's rows are ever read), to be validated with rt_check_call(disjoint = false). */
attn_status rt_window_call(const attn_rt_desc *d, const attn_call *c, int64_t kv_len, int64_t k_begin,
                           attn_call *out, attn_error *err);
/* attn_rt_launch over a key window: o and lse get the attention over the window's keys alone
 * (rows that see none of them: zeros and -inf). */
attn_status rt_launch_window(const attn_rt_desc *d, const attn_call *c, int64_t kv_len, int64_t k_begin,
                             attn_rt_pool *pool, attn_error *err);

// grad.c

/* attn_rt_launch_backward_domains over a key window (as rt_launch_window): c's o and lse are
 * the forward's over all keys; dq gets the part of the window's keys, g->dk and g->dv (shaped
 * like the window's k and v) the window's gradients from these queries, dinputs this part. */
attn_status rt_launch_backward_window(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                                      const attn_grad_call *g, int64_t kv_len, int64_t k_begin, attn_rt_pool *pool,
                                      attn_error *err);

// convert.c: element conversions, shared by every path that widens or narrows 16-bit storage

uint16_t rt_f32_to_bf16(float x);       /* rounding to nearest even */
uint16_t rt_f32_to_f16(float x);        /* rounding to nearest even; 65520 and up: inf */
uint32_t rt_f16_bits_to_f32(uint16_t h); /* exact */
/* n elements of type dt (f32, f16 or bf16) at element offset off of p, as exact f32 into dst. */
void rt_widen_row(float *dst, const void *p, int64_t off, int64_t n, attn_dtype dt);
/* n f32 values into type dt at element offset off of p, rounding to nearest even. */
void rt_narrow_row(void *p, int64_t off, const float *src, int64_t n, attn_dtype dt);

// mla.c

/* An MLA descriptor's storage types (f32, f16, bf16; no int8 latent) and its variants' (f32). */
attn_status rt_mla_check_dtypes(const attn_rt_mla_desc *d, attn_error *err);

// grad_wide.c

/* One [batch, heads, rows, width] tensor at `p` of type dt (f32, f16, bf16, int8) with element
 * strides st (batch, head, row), widened into dense f32 at `dst`; int8 row i of (b, h) is
 * multiplied by scale[(b * heads + h) * scale_rows + i]. */
void rt_widen(float *dst, const void *p, const int64_t *st, int64_t B, int64_t H, int64_t L, int64_t W,
              attn_dtype dt, const float *scale, int64_t scale_rows);
/* The backward of f16/bf16 blocks: q, k, v and o widened to f32, then the f32 backward. */
attn_status rt_backward_widened(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                                const attn_grad_call *g, attn_rt_pool *pool, attn_error *err);

// pool.c

typedef void (*rt_task_fn)(void *ctx, int64_t task);

/* Runs fn(ctx, t) for every t in [0, ntasks) on the pool's threads and the calling thread.
 * Returns when all tasks are done. If another caller is using the pool, the tasks run on the
 * calling thread alone. `pool` may be NULL (serial). */
void rt_parallel_for(attn_rt_pool *pool, int64_t ntasks, rt_task_fn fn, void *ctx);

/* As rt_parallel_for, with at most `max_threads` threads (the caller included; <= 0: all). */
void rt_parallel_for_n(attn_rt_pool *pool, int max_threads, int64_t ntasks, rt_task_fn fn,
                       void *ctx);
/* rt_parallel_for_n on `pool`, or without one on a pool of the call's own (min(threads,
 * ntasks) threads, gone when the tasks are done) when that pays. The tasks need `stack` bytes
 * of stack (attn_rt_desc.stack): the pool's threads have plenty, and when the calling thread
 * has less free, a thread started for the call takes its part. ATTN_ERR_NOMEM (nothing run)
 * when that thread could not be started. */
attn_status rt_launch_tasks(attn_rt_pool *pool, int threads, int64_t ntasks, rt_task_fn fn, void *ctx, size_t stack,
                            attn_error *err);
/* rt_parallel_for_n with the same care for the tasks' `stack`. */
attn_status rt_parallel_for_stack(attn_rt_pool *pool, int max_threads, int64_t ntasks, rt_task_fn fn, void *ctx,
                                  size_t stack, attn_error *err);
/* The stack (bytes) of the pool's threads: a kernel needing more cannot run (attn_rt_launch
 * says so). */
#define RT_WORKER_STACK ((size_t)8 << 20)

// gemm.c

/* C[M x N] = A[M x K] . B[K x N] (row-major, leading dims in elements). */
void rt_sgemm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float *C, int64_t ldc);
/* C[M x N] = A[M x K] . B[N x K]^T. */
void rt_sgemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float *C, int64_t ldc);
/* C[M x N] += A[K x M]^T . B[K x N]. */
void rt_sgemm_tn_acc(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                     int64_t ldb, float *C, int64_t ldc);

// grad_kern.c

#define RT_GBQ 64 /* query rows of a backward block */
#define RT_GBK 64 /* keys of a backward block */
/* C[i][c] (+)= sum_t cp[i][t * ts] * bp[t][c] for rows i < rows (a multiple of 4), columns
 * c < n, t < T: one register-blocked product for all of the backward's (C, cp and bp are row
 * pointers; accumulate 0 overwrites C). tr and cr, when not NULL, narrow each group of 4 rows
 * g to t in [tr[2g], tr[2g+1]) and c in [cr[2g], cr[2g+1]) (multiples of 16, or n). */
void rt_grad_mm(float *const *C, int accumulate, const float *const *cp, int64_t ts, const float *const *bp,
                int T, int n, int rows, const int *tr, const int *cr);
/* Bt[c][t] = rows[t][c] for c < n, t < RT_GBK (Bt's rows RT_GBK floats apart). */
void rt_grad_transpose(float *Bt, const float *const *rows, int n);
/* The elementwise step of rows [RT_GBK] of a block: a key c of row i is visible when
 * vlo[i] <= c <= vhi[i] and (with smod, the modified scores) smod > -inf; its score is smod,
 * else scale * S. P = exp(score - lse[i]), ds = P (dP - D[i]), dss = ds * dfds * scale (dfds
 * NULL: 1); every hidden key gets 0. ds may be NULL (not wanted). */
void rt_grad_rows(int rows, const float *S, const float *smod, const float *dfds, const float *dP, float scale,
                  const float *lse, const float *D, const int *vlo, const int *vhi, float *P, float *ds, float *dss);

#endif
