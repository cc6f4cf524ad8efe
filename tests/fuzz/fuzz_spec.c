/* fuzz_spec.c — libFuzzer target: arbitrary bytes as .attn text through the frontend, then
 * every block through the pass pipeline (vector width 16) and the IR printer. No codegen
 * (too slow to fuzz). The frontend promises never to crash or hang, whatever the bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/frontend.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "tests/check.h"

/* One frontend run; each resulting block is optimized and printed. */
static void fuzz_one(const char *text, size_t len, const FeDefine *defs, int ndefs,
                     int vec_width, bool no_prune) {
    StrBuf diags;
    sb_init(&diags);
    IrModule *m = fe_compile("fuzz.attn", text, len, defs, ndefs, &diags);
    if (!m) {
        REQUIRE(diags.len > 0, "a failed compile must say why");
        sb_free(&diags);
        return;
    }
    for (int i = 0; i < m->nfuncs; i++) {
        StrBuf out, err;
        sb_init(&out);
        sb_init(&err);
        ir_print_func(&out, m->funcs[i]);
        PassCtx ctx = {.vec_width = vec_width, .opt_level = 3, .no_prune = no_prune, .err = &err};
        if (pass_run_pipeline(m->funcs[i], &ctx, NULL)) ir_print_func(&out, m->funcs[i]);
        sb_free(&out);
        sb_free(&err);
    }
    ir_module_free(m);
    sb_free(&diags);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* the C API passes NUL-terminated text; keep a copy so the frontend may read one past */
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    fuzz_one(text, size, NULL, 0, 16, false);
    /* again with -D overrides of the first param the text declares (or a name it lacks), the
     * value chosen by the input's size; other vector widths and -fno-prune */
    static const char *const values[] = {"3", "-1", "0", "1e30", "true", "x", "99999999999999999999",
                                         "2.5", "false", "-9223372036854775808", "64", "1e400"};
    char name[64] = "stride";
    const char *p = strstr(text, "param ");
    if (p) {
        p += 6;
        while (*p == ' ') p++;
        size_t n = 0;
        while (n + 1 < sizeof name && (p[n] == '_' || (p[n] >= 'a' && p[n] <= 'z') ||
                                       (p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= '0' && p[n] <= '9')))
            n++;
        if (n > 0) {
            memcpy(name, p, n);
            name[n] = '\0';
        }
    }
    FeDefine d[2] = {{.name = name, .value = values[size % 12]},
                     {.name = name, .value = values[(size / 12) % 12]}};
    fuzz_one(text, size, d, 1 + (int)((size >> 3) & 1), (size & 2) ? 4 : 8, (size & 4) != 0);
    free(text);
    return 0;
}
