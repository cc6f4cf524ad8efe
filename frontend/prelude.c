/* prelude.c — the built-in definitions of SPEC.md §1, written in the language itself and parsed
 * before every spec (diagnostics in it name "<prelude>"). A user's top-level let or def of the
 * same name shadows the prelude's (the prelude is an outer scope), so adding a name here never
 * breaks an existing spec. */
#include "fe.h"

const char fe_prelude_text[] =
    "let causal       = k <= q;\n"
    "def window(w)    = abs(q - k) <= w;          # bidirectional local attention, 2w+1 keys\n"
    "def sliding(w)   = k <= q && q - k < w;      # causal sliding window of w keys, itself included\n"
    "def dilated(r)   = (q - k) % r == 0;         # atrous attention\n"
    "def prefix(n)    = k < n;\n"
    "def strided(l)   = k <= q && (q - k < l || (q - k) % l == 0);\n"
    "def fixed(l, c)  = k <= q && (k / l == q / l || k % l >= l - c);\n";
