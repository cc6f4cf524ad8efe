/* The C API of attn.h: a spec compiled once, JIT-linked, run many times from any thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "kernel.h"
#include "runtime/rt_internal.h" /* rt_check_call */

void attn_options_init(attn_options *opts) {
    memset(opts, 0, sizeof *opts);
    opts->opt_level = 3;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void fail(attn_error *err, attn_status code, const char *msg) {
    if (!err) return;
    err->code = code;
    snprintf(err->message, sizeof err->message, "%s", msg);
}

/* The most threads a compile takes (0: every core): the option, else ATTNC_COMPILE_THREADS,
 * else the runs' default threads. */
static bool compile_threads_of(const attn_options *opts, int *out, attn_error *err) {
    *out = opts->compile_threads;
    if (*out > 0) return true;
    const char *env = getenv("ATTNC_COMPILE_THREADS");
    if (env && *env) {
        char *end;
        errno = 0;
        long v = strtol(env, &end, 10);
        if (errno || *end || v < 1 || v > 4096) {
            if (err) {
                err->code = ATTN_ERR_ARG;
                snprintf(err->message, sizeof err->message,
                         "ATTNC_COMPILE_THREADS is '%.64s', expected a whole number in [1, 4096]", env);
            }
            return false;
        }
        *out = (int)v;
        return true;
    }
    *out = opts->threads;
    return true;
}

/* Machine code for the n optimized funcs into kern: loaded from the on-disk cache (cache.h)
 * when an entry checks out, else compiled, stored (best effort) and linked from the object.
 * ATTN_ERR_NOMEM when the address-space limit leaves LLVM too little room (codegen.h). */
/* The functions of each func's other roles (group, grad) in the linked code, by the symbol of
 * its tile function (syms[i], or the cg_tile_symbol names); NULL where it has none. */
static void kern_roles(attn_kernel *kern, IrFunc **funcs, int n, const char *const *syms, KernRoles *roles) {
    char name[600];
    for (int i = 0; i < n; i++) {
        const char *sym = syms ? syms[i] : cg_tile_symbol(funcs[i]->arena, funcs[i]);
        attn_rt_tile_fn fn;
        memset(&roles[i], 0, sizeof roles[i]);
        /* an entry without a role's function (older) still runs without it */
        snprintf(name, sizeof name, "%s_group", sym ? sym : "");
        if (sym && ir_group_size(funcs[i]) && cg_jit_lookup(kern->jit, name, &fn)) roles[i].group = fn;
        if (!sym || !ir_plan(funcs[i], IR_ROLE_GRAD)) continue;
        attn_rt_tile_fn gb, gs;
        snprintf(name, sizeof name, "%s_grad_bounds", sym);
        bool ok = cg_jit_lookup(kern->jit, name, &gb);
        snprintf(name, sizeof name, "%s_grad_step", sym);
        if (ok && cg_jit_lookup(kern->jit, name, &gs)) {
            roles[i].grad_bounds = (attn_rt_grad_bounds_fn)(void (*)(void))gb;
            roles[i].grad_step = (attn_rt_grad_step_fn)(void (*)(void))gs;
            attn_rt_tile_fn gk;
            snprintf(name, sizeof name, "%s_grad_keys", sym);
            if (cg_jit_lookup(kern->jit, name, &gk)) roles[i].grad_keys = (attn_rt_grad_keys_fn)(void (*)(void))gk;
        }
    }
}

static attn_status kern_codegen(attn_kernel *kern, IrFunc **funcs, int n, const CgTarget *t,
                         const attn_options *opts, attn_rt_tile_fn *tiles, KernRoles *roles,
                         StrBuf *msg) {
    if (!cg_address_space_ok(CG_NEED_LOAD, msg)) return ATTN_ERR_NOMEM;
    char *dir = kc_dir(opts);
    KcKey key;
    if (!dir || !kc_key_init(&key, funcs, n, t)) {
        free(dir);
        if (!cg_address_space_ok(CG_NEED_COMPILE, msg)) return ATTN_ERR_NOMEM;
        if (!cg_jit(funcs, n, t, &kern->jit, tiles, msg)) return ATTN_ERR_COMPILE;
        kern_roles(kern, funcs, n, NULL, roles);
        return ATTN_OK;
    }
    const char *syms[KC_MAX_FUNCS];
    for (int i = 0; i < KC_MAX_FUNCS; i++) syms[i] = key.symbol[i];
    size_t len = 0;
    void *obj = kc_load(dir, &key, &len);
    bool ok = false;
    attn_status st = ATTN_ERR_COMPILE;
    if (obj) {
        StrBuf ignored; /* an entry that will not link is rebuilt like a corrupt one */
        sb_init(&ignored);
        ok = cg_jit_object(obj, len, syms, n, &kern->jit, tiles, &ignored);
        kern->cache_hit = ok;
        sb_free(&ignored);
        free(obj);
        obj = NULL;
    }
    if (!ok && !cg_address_space_ok(CG_NEED_COMPILE, msg)) st = ATTN_ERR_NOMEM;
    else if (!ok && cg_emit_object_mem(funcs, n, t, syms, &obj, &len, msg)) {
        kc_store(dir, &key, obj, len);
        ok = cg_jit_object(obj, len, syms, n, &kern->jit, tiles, msg);
    }
    if (ok) kern_roles(kern, funcs, n, syms, roles);
    free(obj);
    kc_key_free(&key);
    free(dir);
    return ok ? ATTN_OK : st;
}

attn_status attn_compile(const char *path, const char *text, const attn_options *opts,
                         attn_kernel **out, char **diagnostics, attn_error *err) {
    attn_error local;
    if (!err) err = &local;
    err->code = ATTN_OK;
    err->message[0] = 0;
    if (diagnostics) *diagnostics = NULL;
    if (out) *out = NULL; /* on every failure, including the argument checks below */
    if (!out || (!path && !text)) {
        fail(err, ATTN_ERR_NULL, "attn_compile: out and path or text are required");
        return err->code;
    }
    attn_options defaults;
    if (!opts) {
        attn_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->threads < 0 || opts->opt_level > 3 || opts->compile_threads < 0) {
        char m[128];
        snprintf(m, sizeof m, "attn_compile: attn_options.%s is %d, expected %s",
                 opts->threads < 0 ? "threads" : opts->compile_threads < 0 ? "compile_threads" : "opt_level",
                 opts->threads < 0 ? opts->threads : opts->compile_threads < 0 ? opts->compile_threads : opts->opt_level,
                 opts->threads < 0 || opts->compile_threads < 0 ? ">= 0" : "0..3 (negative: 3)");
        fail(err, ATTN_ERR_ARG, m);
        return err->code;
    }
    int compile_threads;
    if (!compile_threads_of(opts, &compile_threads, err)) return err->code;
    double t0 = now_ms();
    StrBuf diags, msg;
    sb_init(&diags);
    sb_init(&msg);
    attn_kernel *kern = calloc(1, sizeof *kern);
    if (!kern) {
        fail(err, ATTN_ERR_NOMEM, "out of memory");
        return err->code;
    }
    pthread_mutex_init(&kern->pool_lock, NULL);
    kern->module = drv_parse(path, text, opts, &diags, err);
    if (!kern->module) goto fail;
    IrFunc *f = drv_select(kern->module, opts->kernel, err);
    if (!f) goto fail;
    kern->func = f;
    CgTarget target = {.cpu = opts->cpu, .opt_level = opts->opt_level < 0 ? 3 : opts->opt_level,
                       .threads = compile_threads};
    if (!drv_optimize(f, opts, &target, NULL, &msg)) {
        fail(err, ATTN_ERR_COMPILE, sb_str(&msg));
        goto fail;
    }
    /* MLA: the up-projected form unless absorption is forced, the absorbed one if built;
     * a union mask split into key domains: one tile function per domain */
    IrFunc *funcs[DRV_MAX_FUNCS];
    IrVariantKind kinds[DRV_MAX_FUNCS];
    int n = drv_compiled_funcs(f, funcs, kinds);
    attn_rt_tile_fn tiles[DRV_MAX_FUNCS] = {NULL};
    KernRoles roles[DRV_MAX_FUNCS];
    attn_status cst = kern_codegen(kern, funcs, n, &target, opts, tiles, roles, &msg);
    if (cst != ATTN_OK) {
        fail(err, cst, sb_str(&msg));
        goto fail;
    }
    /* the block's descriptor (without a tile function when only its variants run), then one
     * per compiled function by what it is for */
    drv_desc_init(f, &kern->desc, kern->inputs, NULL);
    kern->perm_input = -1;
    kern->mla = f->mla;
    for (int i = 0; i < n; i++) {
        attn_rt_desc *d = NULL;
        switch (kinds[i]) {
        case IR_VAR_MAIN: d = &kern->desc; break;
        case IR_VAR_DOMAIN:
            d = &kern->desc_dom[kern->ndomains];
            drv_desc_init(funcs[i], d, kern->inputs_dom[kern->ndomains++], NULL);
            break;
        case IR_VAR_PERMUTED:
            d = &kern->desc_perm;
            drv_desc_init(funcs[i], d, kern->inputs_perm, NULL);
            kern->perm_input = f->perm_input;
            break;
        case IR_VAR_ABSORBED:
            d = &kern->desc_abs;
            drv_desc_init(funcs[i], d, kern->inputs_abs, NULL);
            break;
        }
        d->tile = tiles[i];
        d->group = roles[i].group;
        if (roles[i].grad_step) drv_desc_grad(funcs[i], d, roles[i].grad_bounds, roles[i].grad_step, roles[i].grad_keys);
    }
    kern->threads = opts->threads;
    kern->compile_ms = now_ms() - t0;
    sb_free(&diags);
    sb_free(&msg);
    *out = kern;
    return ATTN_OK;
fail:
    if (diagnostics && diags.len) *diagnostics = sb_take(&diags);
    sb_free(&diags);
    sb_free(&msg);
    attn_kernel_free(kern);
    return err->code;
}

/* The first input read of `e` out of its sizes at env's position, in the order the reference
 * interpreter evaluates (`&&`, `||` and `?:` short-circuit): written to msg, true if found. */
static bool find_bad_read(const IrFunc *f, const IrExpr *e, IrEnv *env, StrBuf *msg) {
    if (!e) return false;
    switch (e->op) {
    case IR_AND:
    case IR_OR:
        if (find_bad_read(f, e->args[0], env, msg)) return true;
        if ((ir_eval(f, e->args[0], env).i != 0) == (e->op == IR_OR)) return false;
        return find_bad_read(f, e->args[1], env, msg);
    case IR_SELECT:
        if (find_bad_read(f, e->args[0], env, msg)) return true;
        return find_bad_read(f, e->args[ir_eval(f, e->args[0], env).i ? 1 : 2], env, msg);
    case IR_RANGE: return false; /* pruning summaries clamp, they never fail */
    default: break;
    }
    for (int i = 0; i < e->nargs; i++)
        if (find_bad_read(f, e->args[i], env, msg)) return true;
    if (e->op != IR_INPUT || e->input < 0 || e->input >= f->ninputs) return false;
    int64_t idx[ATTN_MAX_DIMS];
    bool bad = false;
    for (int d = 0; d < e->nargs && d < ATTN_MAX_DIMS; d++) {
        idx[d] = ir_eval(f, e->args[d], env).i;
        bad |= idx[d] < 0 || idx[d] >= env->args->input_dim[e->input][d];
    }
    if (!bad) return false;
    const char *name = f->inputs[e->input].name;
    sb_printf(msg, "input '%s' read out of its bounds: ", name);
    ir_print_expr(msg, f, e);
    sb_puts(msg, " at index [");
    for (int d = 0; d < e->nargs; d++) sb_printf(msg, "%s%lld", d ? ", " : "", (long long)idx[d]);
    sb_printf(msg, "] of '%s' sized [", name);
    for (int d = 0; d < e->nargs; d++)
        sb_printf(msg, "%s%lld", d ? ", " : "", (long long)env->args->input_dim[e->input][d]);
    sb_printf(msg, "], for query position q = %lld, key k = %lld (batch row b = %lld, head h = %lld)",
              (long long)env->q, (long long)env->k, (long long)env->b, (long long)env->h);
    return true;
}

/* After a run reported ATTN_ERR_INDEX: replaces the runtime's message by one naming the input,
 * the expression, the index and the position, found by evaluating the mask and the score mod
 * position by position (within a budget; beyond it the runtime's message stays). */
static void kern_explain_index(const attn_kernel *kern, const attn_rt_desc *d, const attn_call *c,
                               attn_error *err) {
    const IrFunc *f = kern->func;
    attn_rt_args a;
    if (!f || !err || rt_check_call(d, c, &a, false, NULL) != ATTN_OK) return; /* MLA's stand-ins share one address */
    StrBuf msg;
    sb_init(&msg);
    IrEnv env = {.q_len = a.q_len, .kv_len = a.kv_len, .args = &a};
    int64_t budget = (int64_t)1 << 26;
    bool found = false;
    for (int64_t b = 0; b < a.batch && !found && budget > 0; b++)
        for (int64_t h = 0; h < d->heads && !found && budget > 0; h++)
            for (int64_t i = 0; i < a.q_len && !found && budget > 0; i++)
                for (int64_t k = 0; k < a.kv_len && !found && budget > 0; k++, budget--) {
                    env.b = b, env.h = h, env.q = a.q_offset + i, env.k = k, env.score = 0;
                    found = find_bad_read(f, f->mask, &env, &msg) ||
                            (ir_eval(f, f->mask, &env).i && find_bad_read(f, f->score, &env, &msg));
                }
    if (found && !msg.failed) snprintf(err->message, sizeof err->message, "%s", sb_str(&msg));
    sb_free(&msg);
}

/* What a call of a kernel that is not MLA starts with: *c, the call with the kernel's default
 * threads; *pool, the kernel's pool for them (release with kern_pool_release); doms, the
 * descriptors it runs (the key domains, or the block's alone), their count returned. */
static int kern_call_begin(attn_kernel *kern, const attn_call *call, attn_call *c, attn_rt_pool **pool,
                           const attn_rt_desc **doms) {
    *c = *call;
    if (c->threads == 0) c->threads = kern->threads;
    *pool = kern_pool_acquire(kern, c->threads);
    for (int i = 0; i < kern->ndomains; i++) doms[i] = &kern->desc_dom[i];
    if (kern->ndomains) return kern->ndomains;
    doms[0] = &kern->desc;
    return 1;
}

attn_status attn_run(attn_kernel *kern, const attn_call *call, attn_error *err) {
    if (!kern || !call) {
        fail(err, ATTN_ERR_NULL, "attn_run: kernel and call are required");
        return ATTN_ERR_NULL;
    }
    if (kern->mla.present) {
        fail(err, ATTN_ERR_ARG, "attn_run: an MLA kernel takes attn_run_mla");
        return ATTN_ERR_ARG;
    }
    if (kern->desc.page_size) {
        return rt_error(err, ATTN_ERR_ARG, "attn_run: '%s' is a paged kernel (kv_cache = paged(%d)): it takes "
                        "attn_run_paged", kern->desc.name, kern->desc.page_size);
    }
    attn_call c;
    attn_rt_pool *pool;
    const attn_rt_desc *doms[IR_MAX_DOMAINS];
    int ndoms = kern_call_begin(kern, call, &c, &pool, doms);
    attn_status st = kern->perm_input >= 0
                         ? attn_rt_launch_permuted(&kern->desc_perm, kern->perm_input, doms, ndoms, &c, pool, err)
                         : attn_rt_launch_domains(doms, ndoms, &c, pool, err);
    kern_pool_release(kern, pool);
    if (st == ATTN_ERR_INDEX) kern_explain_index(kern, doms[0], &c, err);
    return st;
}

int attn_kernel_domains(const attn_kernel *kern, const attn_rt_desc **descs, int max) {
    if (!kern || kern->mla.present) return 0;
    int n = kern->ndomains ? kern->ndomains : 1;
    for (int i = 0; descs && i < n && i < max; i++) descs[i] = kern->ndomains ? &kern->desc_dom[i] : &kern->desc;
    return n;
}

int attn_kernel_may_see(const attn_kernel *kern, const attn_rt_args *a, int64_t q0, int64_t q1, int64_t k0,
                        int64_t k1) {
    if (!kern || !a || !kern->func || q0 > q1 || k0 > k1) return kern && a && (q0 > q1 || k0 > k1) ? 0 : 1;
    const IrFunc *f = kern->func;
    /* residue runs: the trees speak of the runs' keys, not of positions */
    if (kern->mla.present || !f->prune.enabled || !f->prune.may_see || f->prune.runs.mod) return 1;
    bool use_b = ir_expr_uses_var(f->prune.may_see, IR_V_B), use_h = ir_expr_uses_var(f->prune.may_see, IR_V_H);
    int64_t nb = use_b ? a->batch : 1, nh = use_h ? f->heads : 1;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t h = 0; h < nh; h++) {
            IrEnv env = {.b = b, .h = h, .q = q0, .k = k0, .q_len = a->q_len, .kv_len = a->kv_len,
                         .qmin = q0, .qmax = q1, .kmin = k0, .kmax = k1, .args = a};
            bool may = ir_eval(f, f->prune.may_see, &env).i != 0;
            if (may || env.index_error || env.overflow) return 1;
        }
    return 0;
}

attn_status attn_run_paged(attn_kernel *kern, const attn_paged_call *call, attn_error *err) {
    if (!kern || !call) {
        fail(err, ATTN_ERR_NULL, "attn_run_paged: kernel and call are required");
        return ATTN_ERR_NULL;
    }
    if (!kern->desc.page_size) {
        return rt_error(err, ATTN_ERR_ARG, "attn_run_paged: '%s' is not a paged kernel (it has no kv_cache = "
                        "paged(P)): it takes attn_run%s", kern->desc.name, kern->mla.present ? "_mla" : "");
    }
    if (kern->mla.present)
        return rt_error(err, ATTN_ERR_ARG, "attn_run_paged: '%s' is an MLA kernel: it takes attn_run_paged_mla",
                        kern->desc.name);
    attn_paged_call c = *call;
    if (c.threads == 0) c.threads = kern->threads;
    attn_rt_pool *pool = kern_pool_acquire(kern, c.threads);
    const attn_rt_desc *doms[IR_MAX_DOMAINS];
    int ndoms = kern->ndomains ? kern->ndomains : 1;
    for (int i = 0; i < kern->ndomains; i++) doms[i] = &kern->desc_dom[i];
    if (!kern->ndomains) doms[0] = &kern->desc;
    attn_status st = attn_rt_launch_paged(doms, ndoms, &c, pool, err);
    kern_pool_release(kern, pool);
    return st;
}

static attn_rt_mla_desc kern_mla_desc(const attn_kernel *kern);

attn_status attn_run_paged_mla(attn_kernel *kern, const attn_paged_mla_call *call, attn_error *err) {
    if (!kern || !call) return rt_error(err, ATTN_ERR_NULL, "attn_run_paged_mla: kernel and call are required");
    if (!kern->mla.present || !kern->desc.page_size)
        return rt_error(err, ATTN_ERR_ARG, "attn_run_paged_mla: '%s' is not a paged MLA kernel (an 'mla { }' block "
                        "with kv_cache = paged(P))", kern->desc.name);
    attn_rt_mla_desc d = kern_mla_desc(kern);
    attn_paged_mla_call c = *call;
    if (c.threads == 0) c.threads = kern->threads;
    attn_rt_pool *pool = kern_pool_acquire(kern, c.threads);
    attn_status st = attn_rt_launch_paged_mla(&d, &c, pool, err);
    kern_pool_release(kern, pool);
    return st;
}

int attn_kernel_page_size(const attn_kernel *kern) { return kern ? kern->desc.page_size : 0; }

int attn_kernel_grad_inputs(const attn_kernel *kern, int *idx) {
    const attn_rt_desc *d = kern && kern->ndomains ? &kern->desc_dom[0] : kern ? &kern->desc : NULL;
    /* a paged block's grad role only gives the runtime its key bounds: paged caches are for
     * inference */
    if (!d || !d->grad_step || d->page_size > 0) return -1;
    bool seen[ATTN_MAX_INPUTS] = {false};
    int n = 0;
    for (int r = 0; r < d->grad_nreads; r++) {
        int in = d->grad_read_input[r];
        if (in < 0 || in >= ATTN_MAX_INPUTS || seen[in]) continue;
        seen[in] = true;
        if (idx) idx[n] = in;
        n++;
    }
    return n;
}

/* Kernels without a backward (paged caches, compute = bf16 | int8: inference) say so in err. */
static bool no_backward(const attn_kernel *kern, attn_error *err) {
    const IrFunc *f = kern->func;
    if (!f || (!f->page_size && f->compute == IR_COMPUTE_F32)) return false;
    char msg[256];
    if (f->page_size)
        snprintf(msg, sizeof msg, "'%s' has no backward: it reads a paged cache (kv_cache = paged(%d)), which is "
                 "for inference", f->name, f->page_size);
    else
        snprintf(msg, sizeof msg, "'%s' has no backward: it computes in %s (the backward is for compute = f32; "
                 "8-bit and bf16 compute are for inference)", f->name, ir_compute_name(f->compute));
    fail(err, ATTN_ERR_ARG, msg);
    return true;
}

attn_status attn_run_backward(attn_kernel *kern, const attn_call *call, const attn_grad_call *grad,
                              attn_error *err) {
    if (!kern || !call || !grad) {
        fail(err, ATTN_ERR_NULL, "attn_run_backward: kernel, call and grad are required");
        return ATTN_ERR_NULL;
    }
    if (kern->mla.present) {
        fail(err, ATTN_ERR_ARG, "attn_run_backward: an MLA kernel takes attn_run_mla_backward");
        return ATTN_ERR_ARG;
    }
    if (no_backward(kern, err)) return ATTN_ERR_ARG;
    attn_call c;
    attn_rt_pool *pool;
    const attn_rt_desc *doms[IR_MAX_DOMAINS];
    int ndoms = kern_call_begin(kern, call, &c, &pool, doms);
    attn_status st = attn_rt_launch_backward_domains(doms, ndoms, &c, grad, pool, err);
    kern_pool_release(kern, pool);
    if (st == ATTN_ERR_INDEX) kern_explain_index(kern, &kern->desc, &c, err);
    return st;
}

/* One pool per kernel; a second thread running the same kernel meanwhile gets short-lived
 * threads of its own rather than waiting. */
attn_rt_pool *kern_pool_acquire(attn_kernel *kern, int threads) {
    if (threads == 1 || pthread_mutex_trylock(&kern->pool_lock) != 0) return NULL;
    if (kern->pool && threads > attn_rt_pool_threads(kern->pool)) {
        attn_rt_pool_destroy(kern->pool);
        kern->pool = NULL;
    }
    if (!kern->pool) kern->pool = attn_rt_pool_create(threads);
    if (!kern->pool) pthread_mutex_unlock(&kern->pool_lock);
    return kern->pool;
}

void kern_pool_release(attn_kernel *kern, attn_rt_pool *pool) {
    if (pool) pthread_mutex_unlock(&kern->pool_lock);
}

/* The runtime's view of an MLA kernel: the variants compiled. */
static attn_rt_mla_desc kern_mla_desc(const attn_kernel *kern) {
    return (attn_rt_mla_desc){
        .kv_rank = kern->mla.kv_rank,
        .rope_dim = kern->mla.rope_dim,
        .nope_dim = kern->mla.nope_dim,
        .v_dim = kern->mla.v_dim,
        .up = kern->desc.tile ? &kern->desc : NULL,
        .absorbed = kern->desc_abs.tile ? &kern->desc_abs : NULL,
        .dtype = kern->mla.dtype,
        .kv_dtype = kern->mla.kv_dtype,
        .kv_f32 = kern->mla.kv_f32,
    };
}

int attn_mla_prefers_absorbed(const attn_kernel *kern, int64_t q_len, int64_t kv_len) {
    if (!kern || !kern->mla.present) return 0;
    attn_rt_mla_desc d = kern_mla_desc(kern);
    return attn_rt_mla_prefers_absorbed(&d, q_len, kv_len);
}

attn_status attn_run_mla(attn_kernel *kern, const attn_mla_call *call, int *used_absorbed, attn_error *err) {
    if (!kern || !call) {
        fail(err, ATTN_ERR_NULL, "attn_run_mla: kernel and call are required");
        return ATTN_ERR_NULL;
    }
    if (!kern->mla.present) {
        fail(err, ATTN_ERR_ARG, "attn_run_mla: not an MLA kernel");
        return ATTN_ERR_ARG;
    }
    if (kern->desc.page_size)
        return rt_error(err, ATTN_ERR_ARG, "attn_run_mla: '%s' is a paged MLA kernel (kv_cache = paged(%d)): it takes "
                        "attn_run_paged_mla", kern->desc.name, kern->desc.page_size);
    attn_rt_mla_desc d = kern_mla_desc(kern);
    attn_mla_call c = *call;
    if (c.threads == 0) c.threads = kern->threads;
    attn_rt_pool *pool = kern_pool_acquire(kern, c.threads);
    attn_status st = attn_rt_launch_mla(&d, &c, pool, used_absorbed, err);
    kern_pool_release(kern, pool);
    if (st == ATTN_ERR_INDEX) {
        /* the mask's reads depend on sizes and inputs only: a stand-in call of the
         * up-projected form (never dereferenced) locates the read */
        const attn_rt_desc *u = &kern->desc;
        void *p = c.q_nope.data;
        int64_t B = c.q_nope.shape[0], Lq = c.q_nope.shape[2], Lk = c.c_kv.shape[1];
        attn_call probe = {
            .q = {p, 4, {B, u->heads, Lq, u->qk_dim}, {0}},
            .k = {p, 4, {B, u->kv_heads, Lk, u->qk_dim}, {0}},
            .v = {p, 4, {B, u->kv_heads, Lk, u->v_dim}, {0}},
            .o = {p, 4, {B, u->heads, Lq, u->v_dim}, {0}},
            .q_offset = c.q_offset,
            .q_offset_set = c.q_offset_set,
            .inputs = c.inputs,
            .ninputs = c.ninputs,
        };
        kern_explain_index(kern, u, &probe, err);
    }
    return st;
}

attn_status attn_run_mla_backward(attn_kernel *kern, const attn_mla_call *call, const attn_mla_grad_call *grad,
                                  attn_error *err) {
    if (!kern || !call || !grad) {
        fail(err, ATTN_ERR_NULL, "attn_run_mla_backward: kernel, call and grad are required");
        return ATTN_ERR_NULL;
    }
    if (!kern->mla.present) {
        fail(err, ATTN_ERR_ARG, "attn_run_mla_backward: not an MLA kernel (use attn_run_backward)");
        return ATTN_ERR_ARG;
    }
    if (no_backward(kern, err)) return ATTN_ERR_ARG;
    attn_rt_mla_desc d = kern_mla_desc(kern);
    attn_mla_call c = *call;
    if (c.threads == 0) c.threads = kern->threads;
    attn_rt_pool *pool = kern_pool_acquire(kern, c.threads);
    attn_status st = attn_rt_launch_mla_backward(&d, &c, grad, pool, err);
    kern_pool_release(kern, pool);
    return st;
}

int attn_kernel_is_mla(const attn_kernel *kern) { return kern && kern->mla.present; }

int attn_kernel_mla_info(const attn_kernel *kern, attn_mla_info *info) {
    if (!kern || !kern->mla.present || !info) return 0;
    attn_rt_mla_desc d = kern_mla_desc(kern);
    *info = (attn_mla_info){
        .heads = kern->desc.heads,
        .kv_rank = d.kv_rank,
        .rope_dim = d.rope_dim,
        .nope_dim = d.nope_dim,
        .v_dim = d.v_dim,
        .has_up = d.up != NULL,
        .has_absorbed = d.absorbed != NULL,
        .dtype = d.dtype,
        .kv_dtype = rt_mla_kv_dtype(&d),
    };
    return 1;
}

const attn_rt_desc *attn_kernel_desc(const attn_kernel *kern) { return kern ? &kern->desc : NULL; }

double attn_kernel_compile_ms(const attn_kernel *kern) { return kern ? kern->compile_ms : 0; }

int attn_kernel_cache_hit(const attn_kernel *kern) { return kern ? kern->cache_hit : 0; }

void attn_kernel_free(attn_kernel *kern) {
    if (!kern) return;
    if (kern->pool) attn_rt_pool_destroy(kern->pool);
    pthread_mutex_destroy(&kern->pool_lock);
    cg_jit_free(kern->jit);
    ir_module_free(kern->module);
    free(kern);
}

void attn_free(void *p) { free(p); }
