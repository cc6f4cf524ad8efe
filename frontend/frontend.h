/* frontend.h — .attn text in, IR module or diagnostics out. Knows nothing of LLVM. */
#ifndef ATTNC_FRONTEND_H
#define ATTNC_FRONTEND_H

#include "ir/ir.h"

typedef struct FeDefine {
    const char *name;  /* a param's name */
    const char *value; /* its new value, as written on the command line */
} FeDefine;

/* Parses and checks `text` (named `filename` in diagnostics). On success returns the module
 * (one IrFunc per attention block, unfused default graph, no passes run). On errors returns
 * NULL and appends every diagnostic to `diags` as
 *   FILE:LINE:COL: error: MESSAGE\n<source line>\n<caret line>\n
 * sorted by position (lines and columns 1-based, columns in bytes; tabs kept in the caret
 * line), at most 50 of them then "too many errors, stopping". A bad -D (a name that no param
 * of the file has, or a value that is not an int, a float, true or false) is reported as
 *   <defines>: error: MESSAGE\n
 * before the others. Limits, each a diagnostic: 64 MiB of text, 200 nested brackets or
 * expression levels, 1024 attention blocks, 16 inputs per block, and 100000 IR nodes or 1000
 * levels per expression after expanding lets and defs.
 * Never crashes or hangs, whatever the bytes. Thread-safe (no global state). */
IrModule *fe_compile(const char *filename, const char *text, size_t len, const FeDefine *defs,
                     int ndefs, StrBuf *diags);

#endif
