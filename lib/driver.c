/* The pipeline shared by the C API and the command line. */
#include "driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_err(attn_error *err, attn_status code, const char *fmt, const char *arg) {
    if (!err) return;
    err->code = code;
    snprintf(err->message, sizeof err->message, fmt, arg);
}

IrModule *drv_parse(const char *path, const char *text, const attn_options *opts, StrBuf *diags,
                    attn_error *err) {
    char *owned = NULL;
    size_t len;
    if (!path) path = "<string>";
    if (text) {
        len = strlen(text);
    } else {
        owned = util_read_file(path, &len);
        if (!owned) {
            if (err) {
                err->code = ATTN_ERR_IO;
                snprintf(err->message, sizeof err->message, "%s: %s", path, strerror(errno));
            }
            return NULL;
        }
        text = owned;
    }
    int ndefs = opts ? opts->ndefines : 0;
    FeDefine *defs = ndefs > 0 ? calloc((size_t)ndefs, sizeof *defs) : NULL;
    char **names = ndefs > 0 ? calloc((size_t)ndefs, sizeof *names) : NULL;
    IrModule *m = NULL;
    if (ndefs > 0 && (!defs || !names)) {
        set_err(err, ATTN_ERR_NOMEM, "%s", "out of memory");
        goto done;
    }
    for (int i = 0; i < ndefs; i++) {
        const char *d = opts->defines[i];
        const char *eq = d ? strchr(d, '=') : NULL;
        if (!eq || eq == d || !eq[1]) {
            set_err(err, ATTN_ERR_ARG, "bad define '%s': expected NAME=VALUE", d ? d : "(null)");
            goto done;
        }
        names[i] = strndup(d, (size_t)(eq - d));
        if (!names[i]) {
            set_err(err, ATTN_ERR_NOMEM, "%s", "out of memory");
            goto done;
        }
        defs[i].name = names[i];
        defs[i].value = eq + 1;
    }
    m = fe_compile(path, text, len, defs, ndefs, diags);
    if (!m) set_err(err, ATTN_ERR_SPEC, "%s: the spec has errors", path);
done:
    for (int i = 0; names && i < ndefs; i++) free(names[i]);
    free(names);
    free(defs);
    free(owned);
    return m;
}

IrFunc *drv_select(IrModule *m, const char *kernel, attn_error *err) {
    if (kernel) {
        IrFunc *f = ir_module_find(m, kernel);
        if (!f) set_err(err, ATTN_ERR_ARG, "no attention block named '%s'", kernel);
        return f;
    }
    if (m->nfuncs == 1) return m->funcs[0];
    if (err) {
        StrBuf sb;
        sb_init(&sb);
        sb_puts(&sb, m->nfuncs ? "the file has several attention blocks; name the one to compile:"
                               : "the file has no attention block");
        for (int i = 0; i < m->nfuncs; i++) sb_printf(&sb, " %s", m->funcs[i]->name);
        set_err(err, ATTN_ERR_ARG, "%s", sb_str(&sb));
        sb_free(&sb);
    }
    return NULL;
}

bool drv_optimize(IrFunc *f, const attn_options *opts, const CgTarget *t, const char *stop_after,
                  StrBuf *err) {
    int w = cg_target_vec_width(t, err);
    if (w <= 0) return false;
    PassCtx ctx = {
        .vec_width = w,
        .bf16dot = cg_target_bf16dot(t),
        .vnni = cg_target_vnni(t),
        .opt_level = opts && opts->opt_level >= 0 ? opts->opt_level : 3,
        .no_prune = opts && opts->no_prune,
        .absorb = !opts ? IR_ABSORB_AUTO : opts->absorb == ATTN_ABSORB_ON ? IR_ABSORB_ON
                : opts->absorb == ATTN_ABSORB_OFF ? IR_ABSORB_OFF : IR_ABSORB_AUTO,
        .err = err,
    };
    if (stop_after && !pass_find(stop_after)) {
        sb_printf(err, "unknown pass '%s'; passes:", stop_after);
        for (const Pass *p = pass_table; p->name; p++) sb_printf(err, " %s", p->name);
        sb_puts(err, "\n");
        return false;
    }
    return pass_run_pipeline(f, &ctx, stop_after);
}

bool drv_absorb_forced(const IrFunc *f) { return f->mla.present && f->mla.absorb == IR_ABSORB_ON; }

int drv_compiled_funcs(IrFunc *f, IrFunc **out, IrVariantKind *kinds) {
    static const IrVariantKind order[] = {IR_VAR_DOMAIN, IR_VAR_MAIN, IR_VAR_PERMUTED, IR_VAR_ABSORBED};
    int n = 0;
    for (int o = 0; o < 4; o++) {
        IrVariantKind kind = order[o];
        if (kind == IR_VAR_MAIN) {
            if (ir_variant_count(f, IR_VAR_DOMAIN) || drv_absorb_forced(f)) continue;
            if (kinds) kinds[n] = kind;
            out[n++] = f;
            continue;
        }
        for (int i = 0; i < f->nvariants; i++) {
            if (f->variants[i].kind != kind) continue;
            if (kinds) kinds[n] = kind;
            out[n++] = f->variants[i].f;
        }
    }
    return n;
}

void drv_desc_init(const IrFunc *f, attn_rt_desc *desc, attn_rt_input_desc *inputs,
                   attn_rt_tile_fn tile) {
    memset(desc, 0, sizeof *desc);
    desc->name = f->name;
    desc->heads = f->heads;
    desc->kv_heads = f->kv_heads;
    desc->qk_dim = f->qk_dim;
    desc->v_dim = f->v_dim;
    desc->dtype = f->dtype;
    desc->kv_dtype = f->kv_dtype;
    desc->kv_f32 = f->kv_f32;
    desc->page_size = f->page_size;
    /* the runtime's policy is the plan's: task rows, how far it may cut them, stack (none
     * before the schedule pass: a descriptor of the inputs only) */
    const IrPlan *pl = ir_plan(f, IR_ROLE_TILE);
    desc->block_q = pl ? pl->block_q : 1;
    desc->min_block_q = pl ? pl->min_block_q : 1;
    desc->cut_below = pl ? pl->cut_below : 1;
    desc->stack = pl ? pl->stack : 0;
    desc->ninputs = f->ninputs;
    desc->inputs = inputs;
    desc->tile = tile;
    desc->group = NULL; /* set by the caller that linked it */
    desc->group_size = ir_group_size(f);
    desc->group_all = ir_plan(f, IR_ROLE_GROUP) ? 1 : 0;
    for (int i = 0; i < f->ninputs; i++) {
        const IrInput *in = &f->inputs[i];
        inputs[i].name = in->name;
        inputs[i].dtype = in->dtype;
        inputs[i].rank = in->rank;
        inputs[i].summarize = in->summarize;
        for (int d = 0; d < ATTN_MAX_DIMS; d++) {
            inputs[i].dim_kind[d] = in->dim_kind[d];
            inputs[i].dim_value[d] = in->dim_value[d];
        }
    }
}

int drv_grad_exact(const IrFunc *f) {
    return f->prune.enabled && f->prune.exact && !f->score && !f->grad.dscore && f->grad.nreads == 0 &&
           f->prune.runs.mod <= INT32_MAX;
}

void drv_desc_grad(const IrFunc *f, attn_rt_desc *desc, attn_rt_grad_bounds_fn bounds, attn_rt_grad_step_fn step,
                   attn_rt_grad_keys_fn keys) {
    const IrPlan *pl = ir_plan(f, IR_ROLE_GRAD);
    int *map = arena_alloc(f->arena, sizeof(int) * (size_t)f->heads);
    if (!pl || !map || f->grad.nreads > ATTN_RT_MAX_GRAD_READS) return; /* no backward */
    for (int h = 0; h < f->heads; h++) map[h] = ir_head_kv(f, h);
    desc->grad_bounds = bounds;
    desc->grad_step = step;
    desc->grad_lanes = pl->W;
    desc->grad_scale = (float)f->scale;
    desc->grad_head_kv = map;
    desc->grad_nreads = f->grad.nreads;
    for (int r = 0; r < f->grad.nreads; r++) desc->grad_read_input[r] = f->grad.reads[r].load->input;
    desc->grad_exact = drv_grad_exact(f);
    desc->grad_keys = keys;
    if ((desc->grad_exact || keys) && f->prune.enabled && f->prune.runs.mod >= 2 && f->prune.runs.mod <= INT32_MAX) {
        desc->grad_runs_mod = (int)f->prune.runs.mod;
        desc->grad_runs_base = (int)f->prune.runs.base;
        desc->grad_runs_width = (int)f->prune.runs.width;
        desc->grad_runs_with_q = f->prune.runs.with_q;
    }
}
