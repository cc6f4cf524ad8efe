/* fe.h — frontend internals: sources and locations, the AST, the per-call context and the
 * diagnostics shared by the scanner (lexer.l), the parser (parser.y), the semantic analysis
 * (sema.c) and the driver (frontend.c). Flex and Bison types stay in those two files. */
#ifndef ATTNC_FE_H
#define ATTNC_FE_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frontend/frontend.h"

enum {
    FE_MAX_ERRORS = 50,        /* diagnostics before "too many errors" */
    FE_MAX_NEST = 200,         /* open brackets, and depth of one source expression */
    FE_CHAIN_DEPTH = 16,       /* || and && chains deeper are regrouped (ast.c) */
    FE_MAX_EXPAND = 64,        /* lets and defs being expanded inside each other */
    FE_MAX_LOWER_DEPTH = 1000, /* depth of an expression after expansion */
    FE_MAX_NODES = 100000,     /* IR nodes of one statement after expansion */
    FE_MAX_HEADS = 65536,      /* largest `heads` */
    FE_MAX_DIM = 16384,        /* largest `head_dim` / `v_dim` */
    FE_MAX_BLOCKS = 1024,      /* attention blocks in one file */
};
#define FE_MAX_FILE ((size_t)64 << 20) /* bytes of one spec */
#define FE_MAX_INPUT_DIM ((int64_t)1 << 31) /* largest constant dimension of an input */

// sources and locations

typedef struct FeSource {
    const char *name; /* as diagnostics print it: the file name or "<prelude>" */
    const char *text; /* its bytes, not NUL-terminated */
    size_t len;       /* bytes in text */
    int order;        /* sorts diagnostics: prelude before the file */
} FeSource;

/* A point in a source. */
typedef struct FeLoc {
    const FeSource *src; /* which source; NULL for the defines */
    int line, col;       /* 1-based; col counts bytes */
    size_t off;          /* byte offset of the point */
} FeLoc;

/* What Bison tracks for every symbol (api.location.type). */
typedef struct FeSpan {
    FeLoc begin; /* first byte */
    FeLoc end;   /* one past the last byte */
} FeSpan;

// the AST (allocated in FeCtx.ast, never freed piecemeal)

typedef enum FeNodeKind {
    FE_N_INT,    /* ival */
    FE_N_FLOAT,  /* fval (also `inf`) */
    FE_N_BOOL,   /* ival 0/1 */
    FE_N_NAME,   /* name */
    FE_N_UNARY,  /* op (IR_NEG, IR_NOT) of args */
    FE_N_BINARY, /* op (IR_ADD ... IR_OR) of args, args->next */
    FE_N_COND,   /* args ? args->next : args->next->next */
    FE_N_CALL,   /* name(args...) */
    FE_N_INDEX,  /* base[args...] */
} FeNodeKind;

typedef struct FeNode {
    FeNodeKind kind;     /* what it is */
    FeLoc loc;           /* the token naming the operation (operator, name, literal) */
    FeLoc start;         /* the first byte of the whole expression */
    int op;              /* IrExprOp of UNARY and BINARY */
    int64_t ival;        /* INT and BOOL literals */
    double fval;         /* FLOAT literals */
    const char *name;    /* NAME, CALL */
    struct FeNode *base; /* INDEX: what is indexed */
    struct FeNode *args; /* operands, arguments or indices, chained by next */
    int nargs;           /* length of args */
    int depth;           /* nesting depth of the tree (a leaf is 1) */
    bool reported;       /* sema said "undefined" here already (defs expand many times) */
    struct FeNode *next; /* the next node of a list */
} FeNode;

typedef struct FeNodeList {
    FeNode *first, *last; /* chained by next */
    int n;                /* length */
} FeNodeList;

typedef enum FeStmtKind {
    FE_S_ASSIGN,    /* NAME = expr;  (heads, mask, dtype, ... and inside mla) */
    FE_S_LET,       /* let NAME = expr; */
    FE_S_PARAM,     /* param NAME = expr; */
    FE_S_DEF,       /* def NAME(params) = expr; */
    FE_S_INPUT,     /* input TYPE NAME[dims]; */
    FE_S_MLA,       /* mla { body } */
    FE_S_ATTENTION, /* attention NAME { body } */
} FeStmtKind;

typedef enum FeParamState { FE_P_TODO, FE_P_BUSY, FE_P_OK, FE_P_BAD } FeParamState;

typedef struct FeStmt {
    FeStmtKind kind;       /* what it is */
    FeLoc loc;             /* its first token */
    const char *name;      /* the name it assigns or defines (NULL for mla) */
    FeLoc name_loc;        /* where that name is */
    FeNode *expr;          /* the value (ASSIGN, LET, PARAM, DEF) */
    FeNode *params;        /* DEF: formal parameters (NAME nodes) */
    int nparams;           /* DEF: their count */
    const char *type;      /* INPUT: element type as written */
    FeLoc type_loc;        /* INPUT: where it is */
    FeNode *dims;          /* INPUT: dimensions, chained; NULL for a scalar */
    int ndims;             /* INPUT: their count */
    struct FeStmt *body;   /* ATTENTION, MLA: statements, chained */
    struct FeStmt *next;   /* the next statement of its list */
    /* filled by sema */
    void *scope;           /* the sema scope that declares it */
    bool expanding;        /* LET/DEF: on the expansion stack right now */
    FeParamState pstate;   /* PARAM: evaluation state */
    const FeDefine *define;/* PARAM: the -D that overrides it */
    IrType ptype;          /* PARAM: type of the value */
    int64_t pival;         /* PARAM: INT/BOOL value */
    double pfval;          /* PARAM: FLOAT value */
    int input;             /* INPUT: index in IrFunc.inputs */
} FeStmt;

typedef struct FeStmtList {
    FeStmt *first, *last; /* chained by next */
} FeStmtList;

// the per-call context

typedef struct FeDiag {
    int order;        /* source order (command line first) */
    int line, col;    /* position, for sorting */
    int seq;          /* emission order, breaks ties */
    const char *text; /* the whole formatted diagnostic */
} FeDiag;

typedef struct FeCtx {
    Arena ast;                          /* AST, strings, tables; freed by fe_compile */
    jmp_buf oom;                        /* where an allocation failure unwinds to */
    FeSource prelude;                   /* the built-in definitions */
    FeSource file;                      /* the user's spec */
    FeDiag diags[FE_MAX_ERRORS + 1];    /* collected, sorted when flushed */
    int ndiags;                         /* entries in diags */
    int seq;                            /* next FeDiag.seq */
    bool stop;                          /* stop reporting (too many errors, nesting) */
    int syntax_errors;                  /* errors found while scanning and parsing */
    FeStmt *prelude_items;              /* top-level items of the prelude */
    FeStmt *items;                      /* top-level items of the file */
    const FeDefine *defs;               /* -D overrides */
    int ndefs;                          /* their count */
    IrModule *mod;                      /* the result being built */
} FeCtx;

// the parser state of one source (the scanner's extra data)

typedef struct FeBracket {
    char open;        /* '(', '[' or '{' */
    FeLoc loc;        /* where it is */
    const char *what; /* how messages name it: "'('" or "attention block 'x'" */
} FeBracket;

typedef struct FeTok {
    int kind;    /* Bison token kind (0 at end of file) */
    FeSpan span; /* where it is */
} FeTok;

typedef struct FeParse {
    FeCtx *c;             /* the compilation */
    const FeSource *src;  /* what is being scanned */
    int line, col;        /* where the scanner is */
    size_t off;           /* byte offset of (line, col) */
    FeBracket *brackets;  /* unclosed brackets, innermost last */
    int nbrackets;        /* their count */
    int nbrackets_before; /* their count before the last token (which may open or close one) */
    bool garbage;         /* bad characters were skipped since the last token */
    bool garbage_before;  /* ... before the last token: a syntax error there is their echo */
    FeTok hist[3];        /* the last tokens scanned, newest (the parser's lookahead) first */
    FeStmt *first, *last; /* top-level items parsed so far */
    bool nest_reported;   /* "nested too deeply" was said */
} FeParse;

// ast.c — constructors the grammar actions call

FeNode *fe_leaf(FeParse *p, FeNodeKind kind, FeSpan at);
FeNode *fe_unary(FeParse *p, int op, FeSpan op_at, FeNode *x);
FeNode *fe_binary(FeParse *p, int op, FeSpan op_at, FeNode *x, FeNode *y);
FeNode *fe_cond(FeParse *p, FeSpan op_at, FeNode *c, FeNode *x, FeNode *y);
FeNode *fe_call(FeParse *p, const char *name, FeSpan name_at, FeNodeList args);
FeNode *fe_index(FeParse *p, FeNode *base, FeSpan br_at, FeNodeList idx);
FeNodeList fe_list_add(FeNodeList l, FeNode *n);
FeStmt *fe_stmt(FeParse *p, FeStmtKind kind, FeSpan at);
FeStmtList fe_stmts_add(FeStmtList l, FeStmt *s);
void fe_add_item(FeParse *p, FeStmt *s);
/* The source text of a span. */
const char *fe_span_text(FeParse *p, FeSpan s, size_t *len);

// diag.c

/* Reports `FILE:LINE:COL: error: MESSAGE` with the source line and a caret. */
void fe_error(FeCtx *c, FeLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Reports `<defines>: error: MESSAGE` (a bad define: -D, defines=, attn_options.defines). */
void fe_error_cmdline(FeCtx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The number of errors reported so far. */
int fe_error_count(const FeCtx *c);
/* Appends the collected diagnostics, sorted by position, to `out`. */
void fe_diags_flush(FeCtx *c, StrBuf *out);
/* Zeroed memory from c->ast; never NULL (unwinds to c->oom on failure). */
void *fe_alloc(FeCtx *c, size_t n);
char *fe_strndup(FeCtx *c, const char *s, size_t n);
/* Checks an allocation made elsewhere (IR constructors): unwinds on NULL. */
void *fe_check(FeCtx *c, void *p);
/* `s` (n bytes) quoted for a message: printable ASCII kept, the rest escaped, long text cut. */
const char *fe_quote(FeCtx *c, const char *s, size_t n);

// lexer.l

/* Parses one source, appending its top-level items to *items. Returns false on syntax errors. */
bool fe_parse_source(FeCtx *c, const FeSource *src, FeStmt **items);

// prelude.c

extern const char fe_prelude_text[];

// sema.c

/* Checks the parsed items and fills c->mod with one IrFunc per attention block. */
void fe_sema(FeCtx *c);

#endif
