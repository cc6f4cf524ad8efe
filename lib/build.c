/* Ahead-of-time compilation (attn_build of attn.h), and what the command line asks of the
 * pipeline besides: the pass list and the mask of a call, evaluated by the reference. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

static attn_status build_fail(attn_error *err, attn_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static attn_status build_fail(attn_error *err, attn_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* The message of a failed step, without its trailing newlines. */
static const char *build_msg(StrBuf *msg, const char *otherwise) {
    while (msg->len && msg->data[msg->len - 1] == '\n') msg->data[--msg->len] = '\0';
    return msg->len ? sb_str(msg) : otherwise;
}

static attn_status build_header(IrFunc **fs, int n, const char *path, attn_error *err) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base) + 8;
    char *guard = malloc(len);
    char *text = NULL;
    if (guard) {
        snprintf(guard, len, "ATTNC_%s", base);
        text = drv_aot_header(fs, n, guard);
    }
    free(guard);
    if (!text) return build_fail(err, ATTN_ERR_NOMEM, "out of memory");
    FILE *f = fopen(path, "w");
    if (!f) {
        free(text);
        return build_fail(err, ATTN_ERR_IO, "%s: %s", path, strerror(errno));
    }
    bool ok = fputs(text, f) >= 0;
    if (fclose(f) != 0) ok = false;
    free(text);
    if (!ok) return build_fail(err, ATTN_ERR_IO, "%s: write error: %s", path, strerror(errno));
    return ATTN_OK;
}

attn_status attn_build(const char *path, const char *text, const attn_options *opts, const char *triple,
                       attn_emit emit, const char *out_path, const char *header_path, char **diagnostics,
                       attn_error *err) {
    if (diagnostics) *diagnostics = NULL;
    if ((!path && !text) || !out_path)
        return build_fail(err, ATTN_ERR_NULL, "attn_build: out_path and path or text are required");
    attn_options defaults;
    if (!opts) {
        attn_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->opt_level > 3 || (emit != ATTN_EMIT_OBJ && emit != ATTN_EMIT_ASM && emit != ATTN_EMIT_LLVM))
        return build_fail(err, ATTN_ERR_ARG, "attn_build: opt_level must be <= 3 and emit one of attn_emit");
    StrBuf diags, msg;
    sb_init(&diags);
    sb_init(&msg);
    attn_error local;
    if (!err) err = &local;
    attn_status st = ATTN_OK;
    IrFunc **fs = NULL, *one[1], **emitted = NULL;
    int n = 0;
    IrModule *m = drv_parse(path, text, opts, &diags, err);
    if (!m) {
        st = err->code;
        goto done;
    }
    const char *name = path ? path : "<text>";
    if (opts->kernel) {
        if (!(one[0] = drv_select(m, opts->kernel, err))) {
            st = err->code;
            goto done;
        }
        fs = one;
        n = 1;
    } else {
        fs = m->funcs;
        n = m->nfuncs;
        if (n == 0) {
            st = build_fail(err, ATTN_ERR_SPEC, "%s: no attention block", name);
            goto done;
        }
    }
    CgTarget t = {.triple = triple, .cpu = opts->cpu, .opt_level = opts->opt_level < 0 ? 3 : opts->opt_level};
    for (int i = 0; i < n; i++)
        if (!drv_optimize(fs[i], opts, &t, NULL, &msg)) {
            st = build_fail(err, ATTN_ERR_COMPILE, "%s: attention '%s': %s", name, fs[i]->name,
                            build_msg(&msg, "optimization failed"));
            goto done;
        }
    /* every block's functions in one file: key domains, variants, absorbed forms */
    emitted = n > 0 ? malloc(sizeof *emitted * DRV_MAX_FUNCS * (size_t)n) : NULL;
    if (!emitted) {
        st = build_fail(err, ATTN_ERR_NOMEM, "out of memory");
        goto done;
    }
    int nemit = 0;
    for (int i = 0; i < n; i++) nemit += drv_compiled_funcs(fs[i], emitted + nemit, NULL);
    if (!cg_emit_file(emitted, nemit, &t, (CgEmit)emit, out_path, &msg)) {
        st = build_fail(err, ATTN_ERR_COMPILE, "%s: %s", out_path, build_msg(&msg, "code generation failed"));
        goto done;
    }
    if (header_path) st = build_header(fs, n, header_path, err);
done:
    if (st != ATTN_OK && diagnostics && diags.len) *diagnostics = sb_take(&diags);
    free(emitted);
    sb_free(&diags);
    sb_free(&msg);
    if (m) ir_module_free(m);
    return st;
}

// for the command line

const char *drv_pass_name(int i, const char **what) {
    int n = 0;
    while (pass_table[n].name) n++;
    if (i < 0 || i >= n) return NULL;
    if (what) *what = pass_table[i].what;
    return pass_table[i].name;
}

bool drv_mask_at(const IrFunc *f, const attn_rt_args *a, int64_t b, int64_t h, int64_t q, int64_t k,
                 attn_status *status) {
    IrEnv env = {.b = b, .h = h, .q = q, .k = k, .q_len = a->q_len, .kv_len = a->kv_len, .args = a};
    bool seen = ir_eval(f, f->mask, &env).i != 0;
    if (env.index_error || env.overflow) {
        *status = env.index_error ? ATTN_ERR_INDEX : ATTN_ERR_OVERFLOW;
        return false;
    }
    return seen;
}
