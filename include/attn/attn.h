/* attn.h — the attnc compiler API: a .attn spec in, a callable kernel out (JIT). */
#ifndef ATTN_H
#define ATTN_H

#include "attn_rt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct attn_kernel attn_kernel;

typedef struct attn_options {
    const char *kernel;           /* which `attention` block; NULL if the file has one */
    const char *const *defines;   /* "NAME=VALUE" overrides of params */
    int ndefines;                 /* entries in defines */
    int threads;                  /* default threads of the kernel's runs (an attn_call with
                                   * threads 0 takes it); 0: every core */
    int opt_level;                /* 0..3; 3 when negative */
    int no_prune;                 /* compute every tile, mask per element */
    const char *cpu;              /* target CPU for the JIT; NULL: the host */
    int absorb;                   /* MLA: ATTN_ABSORB_SPEC (the spec's choice), _ON or _OFF */
    int no_cache;                 /* 1: bypass the on-disk kernel cache (also env ATTNC_NO_CACHE=1) */
    int compile_threads;          /* most threads LLVM compiles the kernel's pieces on; 0: the
                                   * env ATTNC_COMPILE_THREADS if set (a positive integer), else
                                   * `threads` if > 0, else every core */
} attn_options;

/* Fills `opts` with the defaults. */
void attn_options_init(attn_options *opts);

/* Compiles the spec at `path` (or `text`, if not NULL; `path` then only names it in
 * diagnostics). On an error in the spec returns ATTN_ERR_SPEC and, if `diagnostics` is not
 * NULL, stores the diagnostics text there (free with attn_free). Thread-safe.
 * Machine code is cached on disk, in $ATTNC_CACHE_DIR, else $XDG_CACHE_HOME/attnc, else
 * ~/.cache/attnc, keyed by the optimized IR, the target and the compiler's build; a cache that
 * cannot be read or written only costs a compile. */
attn_status attn_compile(const char *path, const char *text, const attn_options *opts,
                         attn_kernel **out, char **diagnostics, attn_error *err);

/* What attn_build writes: an object file (link it with libattnc_rt), assembly or LLVM IR. */
typedef enum attn_emit { ATTN_EMIT_OBJ = 0, ATTN_EMIT_ASM = 1, ATTN_EMIT_LLVM = 2 } attn_emit;

/* Compiles ahead of time: every block of the spec at `path` (or `text`, as attn_compile), or
 * opts->kernel alone, into one file `out_path` for `triple` (NULL: the host; opts->cpu the CPU,
 * "generic" by default for a foreign triple) and, if `header_path` is not NULL, the C header
 * that declares each block's descriptor and typed entry points (attnc_NAME, attnc_NAME_simple).
 * The object needs libattnc_rt only (and -lpthread -lm), no LLVM. opts->threads and no_cache
 * do not apply. Errors: ATTN_ERR_SPEC with diagnostics as attn_compile, ATTN_ERR_ARG (an
 * unknown kernel, a bad option), ATTN_ERR_COMPILE (an unknown triple or CPU, code generation,
 * an output file that cannot be written), ATTN_ERR_IO (a spec that cannot be read, the
 * header). Thread-safe. */
attn_status attn_build(const char *path, const char *text, const attn_options *opts, const char *triple,
                       attn_emit emit, const char *out_path, const char *header_path, char **diagnostics,
                       attn_error *err);

/* Runs a compiled kernel. Several threads may run kernels at once. */
attn_status attn_run(attn_kernel *kernel, const attn_call *call, attn_error *err);

/* Runs a paged kernel (`kv_cache = paged(P);`) over a ragged batch (see attn_paged_call).
 * attn_run refuses a paged kernel and attn_run_paged a contiguous one (ATTN_ERR_ARG). */
attn_status attn_run_paged(attn_kernel *kernel, const attn_paged_call *call, attn_error *err);

/* Runs a paged MLA kernel (an `mla { }` block with kv_cache = paged(P); absorbed) over a ragged
 * batch of latent pages (see attn_paged_mla_call). */
attn_status attn_run_paged_mla(attn_kernel *kernel, const attn_paged_mla_call *call, attn_error *err);

/* The page size P of a paged kernel, 0 for a contiguous one. */
int attn_kernel_page_size(const attn_kernel *kernel);

/* The backward of a forward call: `call` as given to attn_run, with its o and lse holding the
 * forward's results; `grad` holds d loss / d o (dout) and receives dq, dk, dv and the wanted
 * gradients of the f32 inputs the score reads (dinputs, by name). Kernels with compute = f32
 * and contiguous K/V that are not MLA (those take attn_run_mla_backward), whatever their dtype
 * and kv_dtype (16-bit and int8 K/V run on f32 copies; dk, dv are the copies' gradients);
 * others fail with ATTN_ERR_ARG. Deterministic for any thread count. */
attn_status attn_run_backward(attn_kernel *kernel, const attn_call *call, const attn_grad_call *grad,
                              attn_error *err);

/* Whether the kernel has a backward: -1 if not; else the number of f32 inputs whose gradient
 * it gives (those the score reads), their indices in the spec's input order stored in idx
 * (ATTN_MAX_INPUTS entries at most; idx may be NULL). */
int attn_kernel_grad_inputs(const attn_kernel *kernel, int *idx);

/* Runs an MLA kernel; `used_absorbed` (may be NULL) tells which variant ran. */
attn_status attn_run_mla(attn_kernel *kernel, const attn_mla_call *call, int *used_absorbed,
                         attn_error *err);

/* The backward of an MLA forward call (un-absorbed, as training runs it): `call` as given to
 * attn_run_mla, its o and lse holding the forward's results; `grad` holds d loss / d o and
 * receives dq_nope, dq_rope, dc_kv, dk_rope, dw_uk, dw_uv and the wanted input gradients.
 * Needs the up-projected variant (absorb = off or auto); deterministic for any thread count. */
attn_status attn_run_mla_backward(attn_kernel *kernel, const attn_mla_call *call, const attn_mla_grad_call *grad,
                                  attn_error *err);

/* For an MLA kernel: whether `absorb = auto` picks the absorbed variant for these sizes. */
int attn_mla_prefers_absorbed(const attn_kernel *kernel, int64_t q_len, int64_t kv_len);

/* Whether the kernel is an MLA kernel (then attn_run is refused: use attn_run_mla). */
int attn_kernel_is_mla(const attn_kernel *kernel);

/* The sizes of an MLA kernel's tensors (see attn_mla_call) and its compiled variants. */
typedef struct attn_mla_info {
    int heads, kv_rank, rope_dim, nope_dim, v_dim;
    int has_up;       /* the up-projected variant was compiled (absorb = off or auto) */
    int has_absorbed; /* the absorbed variant was compiled (absorb = on or auto) */
    attn_dtype dtype;    /* element type of q_nope, q_rope, w_uk, w_uv and o: f32, f16 or bf16 */
    attn_dtype kv_dtype; /* of the latent cache c_kv and k_rope (the pages of a paged block) */
} attn_mla_info;

/* Fills `info` and returns 1 for an MLA kernel; returns 0 (info untouched) otherwise. */
int attn_kernel_mla_info(const attn_kernel *kernel, attn_mla_info *info);

/* The descriptors attn_run runs the kernel with: its disjoint key domains (a mask that was
 * split into several), else the block's own; at most `max` are stored in `descs`. Returns their
 * count (0 for an MLA kernel or a NULL kernel). attn_rt_launch_domains over them gives
 * attn_run's result (a permutation mask's rank-order variant is only a faster way to it). */
int attn_kernel_domains(const attn_kernel *kernel, const attn_rt_desc **descs, int max);

/* The kernel's mask analysis over position ranges: 0 when no query at positions [q0, q1] can
 * see a key at positions [k0, k1] (inclusive) in any batch row and head of a call with these
 * validated arguments (attn_rt_check: sizes and runtime inputs; args->q_offset is not used),
 * 1 when some may. Conservative: 1 whenever it cannot tell (no analysis, -fno-prune, an index
 * out of bounds). Cost: an evaluation of the analysis' bounds per batch row and head it reads,
 * each linear in the ranges' lengths when they read runtime inputs. */
int attn_kernel_may_see(const attn_kernel *kernel, const attn_rt_args *args, int64_t q0, int64_t q1, int64_t k0,
                        int64_t k1);

const attn_rt_desc *attn_kernel_desc(const attn_kernel *kernel);
double attn_kernel_compile_ms(const attn_kernel *kernel); /* time attn_compile took */
int attn_kernel_cache_hit(const attn_kernel *kernel);     /* 1: loaded from the disk cache */
void attn_kernel_free(attn_kernel *kernel);
void attn_free(void *p);

#ifdef __cplusplus
}
#endif
#endif
