/* frontend.c — fe_compile: the prelude and the spec parsed, checked and lowered, with every
 * diagnostic collected in one per-call context (no global state). */
#include <stdlib.h>
#include <string.h>

#include "fe.h"

IrModule *fe_compile(const char *filename, const char *text, size_t len, const FeDefine *defs,
                     int ndefs, StrBuf *diags) {
    FeCtx *c = calloc(1, sizeof *c);
    if (!c) {
        sb_puts(diags, "attnc: out of memory\n");
        return NULL;
    }
    arena_init(&c->ast);
    c->prelude = (FeSource){"<prelude>", fe_prelude_text, strlen(fe_prelude_text), 0};
    if (text && len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        /* a leading UTF-8 byte order mark, as some editors write: skipped like C compilers
         * do, so columns and source lines start after it */
        text += 3;
        len -= 3;
    }
    c->file = (FeSource){filename ? filename : "<input>", text ? text : "", text ? len : 0, 1};
    c->defs = defs;
    c->ndefs = defs ? ndefs : 0;
    IrModule *m = NULL;
    if (setjmp(c->oom)) {
        /* an allocation failed somewhere below: nothing of the run is kept */
        ir_module_free(c->mod);
        arena_free(&c->ast);
        free(c);
        sb_puts(diags, "attnc: out of memory\n");
        return NULL;
    }
    if (c->file.len > FE_MAX_FILE) {
        FeLoc at = {&c->file, 1, 1, 0};
        fe_error(c, at, "file too large (%zu bytes, at most %zu)", c->file.len, FE_MAX_FILE);
    } else {
        bool ok = fe_parse_source(c, &c->prelude, &c->prelude_items);
        ok = fe_parse_source(c, &c->file, &c->items) && ok;
        if (ok) {
            c->mod = fe_check(c, ir_module_new());
            fe_sema(c);
        }
    }
    fe_diags_flush(c, diags);
    if (fe_error_count(c) == 0 && c->mod) {
        m = c->mod;
        c->mod = NULL;
    }
    ir_module_free(c->mod);
    arena_free(&c->ast);
    free(c);
    return m;
}
