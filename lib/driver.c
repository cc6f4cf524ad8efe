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

int drv_compiled_funcs(IrFunc *f, IrFunc **out) {
    int n = 0;
    for (int i = 0; i < f->ndomains; i++) out[n++] = f->domains[i];
    if (!f->ndomains && !drv_absorb_forced(f)) out[n++] = f;
    if (f->permuted) out[n++] = f->permuted;
    if (f->absorbed) out[n++] = f->absorbed;
    return n;
}

int drv_min_block_q(const IrFunc *f) {
    int b = f->sched.block_q > 0 ? f->sched.block_q : 64;
    /* a residue class's tile holds block_q / r rows of each class: cutting it below 2048
     * costs more than the threads gain (dilated(64), 1 head, 2 threads: 2.6x slower at 512
     * rows) */
    if (f->prune.enabled && f->prune.runs.with_q) return b < 2048 ? b : 2048;
    return b < 64 ? b : 64;
}

int drv_cut_below(const IrFunc *f) {
    /* a residue class's tile cut in two splits each class's staircase (emit_tri_run): the two
     * halves compute the rows they do not hold as well, so cut only for a tile a thread
     * (strided 64, 4 heads, 2 threads: 1.97 -> 1.44 ms) */
    return f->prune.enabled && f->prune.runs.with_q ? 1 : 4;
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
    desc->block_q = f->sched.block_q > 0 ? f->sched.block_q : 64;
    desc->min_block_q = drv_min_block_q(f);
    desc->cut_below = drv_cut_below(f);
    desc->stack = cg_stack_bound(f);
    desc->ninputs = f->ninputs;
    desc->inputs = inputs;
    desc->tile = tile;
    desc->group = NULL; /* set by the caller that linked it */
    desc->group_size = cg_group_size(f);
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
