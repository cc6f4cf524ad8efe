/* kernel.h — the compiled kernel object behind attn.h. */
#ifndef ATTNC_KERNEL_H
#define ATTNC_KERNEL_H

#include <pthread.h>

#include "driver.h"

/* A compiled func's functions besides its tile function (NULL: none). */
typedef struct KernRoles {
    attn_rt_tile_fn group;              /* the group entry */
    attn_rt_grad_bounds_fn grad_bounds; /* the backward's */
    attn_rt_grad_step_fn grad_step;
    attn_rt_grad_keys_fn grad_keys;
} KernRoles;

struct attn_kernel {
    IrModule *module;                          /* owns the IR the descriptors point into */
    const IrFunc *func;                        /* the block compiled (its mask explains index errors) */
    CgJit *jit;                                /* owns the machine code */
    int cache_hit;                             /* the object came from the on-disk cache */
    attn_rt_desc desc;                         /* what the runtime needs (MLA: up-projected) */
    attn_rt_input_desc inputs[ATTN_MAX_INPUTS]; /* desc.inputs */
    IrMla mla;                                 /* MLA sizes; mla.present for MLA kernels */
    attn_rt_desc desc_abs;                     /* MLA: the absorbed variant (tile NULL if absent) */
    attn_rt_input_desc inputs_abs[ATTN_MAX_INPUTS]; /* desc_abs.inputs */
    int ndomains;                              /* > 0: the mask runs as disjoint key domains */
    attn_rt_desc desc_dom[IR_MAX_DOMAINS];     /* their descriptors (desc then has no tile) */
    attn_rt_input_desc inputs_dom[IR_MAX_DOMAINS][ATTN_MAX_INPUTS]; /* desc_dom[i].inputs */
    int perm_input;                            /* >= 0: desc_perm runs it in rank order of this input */
    attn_rt_desc desc_perm;                    /* the causal variant in rank order */
    attn_rt_input_desc inputs_perm[ATTN_MAX_INPUTS]; /* desc_perm.inputs */
    int threads;                               /* default thread count of runs */
    double compile_ms;                         /* time attn_compile took */
    pthread_mutex_t pool_lock;                 /* guards pool */
    attn_rt_pool *pool;                        /* created at the first threaded run */
};

/* The kernel's pool for a run with `threads` threads, locked; NULL (run serially or with a
 * temporary pool) when threads == 1 or another thread holds it. Release with kern_pool_release. */
attn_rt_pool *kern_pool_acquire(attn_kernel *kern, int threads);
void kern_pool_release(attn_kernel *kern, attn_rt_pool *pool);

#endif
