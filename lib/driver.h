/* driver.h — the pipeline as the library and the command line use it:
 * text -> frontend -> IR -> passes -> codegen. `attn.h` is built on these. */
#ifndef ATTNC_DRIVER_H
#define ATTNC_DRIVER_H

#include "attn/attn.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "passes/passes.h"

/* Reads (if text is NULL) and parses a spec with the options' -D overrides ("NAME=VALUE").
 * Diagnostics go to `diags`; returns NULL with err->code ATTN_ERR_SPEC, _IO or _ARG. */
IrModule *drv_parse(const char *path, const char *text, const attn_options *opts, StrBuf *diags,
                    attn_error *err);

/* The block named `kernel`, or the only one when kernel is NULL; NULL and ATTN_ERR_ARG if
 * missing or ambiguous (the message lists the blocks). */
IrFunc *drv_select(IrModule *m, const char *kernel, attn_error *err);

/* Runs the pass pipeline for target `t` (up to `stop_after`, NULL for all). A union
 * mask may become several key-domain kernels, a permutation mask gain a permuted variant, an
 * MLA block an absorbed one (f->variants). */
bool drv_optimize(IrFunc *f, const attn_options *opts, const CgTarget *t, const char *stop_after,
                  StrBuf *err);

/* Whether an optimized MLA block is forced absorbed (the option over the spec): it then has no
 * up-projected form to compile. */
bool drv_absorb_forced(const IrFunc *f);

/* Most functions an optimized block compiles to. */
#define DRV_MAX_FUNCS (IR_MAX_DOMAINS + 2)

/* The functions an optimized block compiles to (JIT and AOT alike), into out[DRV_MAX_FUNCS]
 * with what each is for in kinds[] (may be NULL): its key domains, else the block itself
 * (IR_VAR_MAIN) unless it is forced absorbed; then its permuted variant and its absorbed
 * variant, if any. Returns their count. */
int drv_compiled_funcs(IrFunc *f, IrFunc **out, IrVariantKind *kinds);

/* The backward's part of f's descriptor: its generated functions, lanes, scale, head map and
 * the inputs the score's f32 reads read (the head map lives in f's arena). */
/* Whether f's backward needs no grad_step: its mask is exactly the prune pass's key bounds of a
 * row (prune.exact) within its residue runs, and it has no score modifier. */
int drv_grad_exact(const IrFunc *f);
void drv_desc_grad(const IrFunc *f, attn_rt_desc *desc, attn_rt_grad_bounds_fn bounds, attn_rt_grad_step_fn step,
                   attn_rt_grad_keys_fn keys);

/* Fills the runtime descriptor of an optimized func (inputs[] must hold f->ninputs entries;
 * names point into the func's arena). `tile` may be NULL (AOT). */
void drv_desc_init(const IrFunc *f, attn_rt_desc *desc, attn_rt_input_desc *inputs,
                   attn_rt_tile_fn tile);

/* The C header of an AOT object: per block a descriptor and typed entry points. */
char *drv_aot_header(IrFunc **funcs, int n, const char *guard_name);

// build.c — for the command line

/* The name of the i-th pass of the pipeline and (if `what` is not NULL) its one-line
 * description; NULL past the last. */
const char *drv_pass_name(int i, const char **what);

/* Whether query position q of batch row b, head h sees key k under f's mask, for the sizes and
 * runtime inputs of `a` (the reference's evaluation). False with *status ATTN_ERR_INDEX (an
 * input index out of bounds) or ATTN_ERR_OVERFLOW (64-bit overflow) when it cannot say. */
bool drv_mask_at(const IrFunc *f, const attn_rt_args *a, int64_t b, int64_t h, int64_t q, int64_t k,
                 attn_status *status);

#endif
