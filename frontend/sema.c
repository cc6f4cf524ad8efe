/* sema.c — names, types and shapes of a parsed spec, and its lowering to the IR (ir.h).
 *
 * Scopes: the prelude, the file's top level, then one scope per attention block; an inner
 * declaration shadows an outer one (so a user's `def sliding(w)` replaces the prelude's).
 * `let` and `def` bodies are expanded where they are used and their free names resolved
 * there, so a top-level def may read an input each block declares. Because of that a top-level
 * let or def is only checked through its uses; block-level lets are also checked on their own.
 * Params are folded to constants (a -D override replaces the value); integer `/` and `%` need
 * a divisor that folds to a positive constant. Everything sema allocates lives in the
 * compilation's arena, the IR in the module's. */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fe.h"

// name tables

typedef struct MapSlot {
    const char *key; /* NULL when free */
    FeStmt *val;     /* the declaration */
} MapSlot;

typedef struct Map {
    MapSlot *slots; /* open addressing, power-of-two capacity */
    size_t cap;     /* slots */
    size_t n;       /* used */
} Map;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static FeStmt *map_get(const Map *m, const char *key) {
    if (!m->cap) return NULL;
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->slots[i].key) return NULL;
        if (strcmp(m->slots[i].key, key) == 0) return m->slots[i].val;
    }
}

static void map_put(FeCtx *c, Map *m, const char *key, FeStmt *val) {
    if (2 * (m->n + 1) > m->cap) {
        Map bigger = {fe_alloc(c, sizeof(MapSlot) * (m->cap ? 2 * m->cap : 16)),
                      m->cap ? 2 * m->cap : 16, 0};
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key) map_put(c, &bigger, m->slots[i].key, m->slots[i].val);
        *m = bigger;
    }
    size_t i = hash_str(key) & (m->cap - 1);
    while (m->slots[i].key) i = (i + 1) & (m->cap - 1);
    m->slots[i] = (MapSlot){key, val};
    m->n++;
}

typedef struct Scope {
    Map names;                  /* lets, params, defs and inputs declared here */
    const struct Scope *parent; /* the enclosing scope */
} Scope;

static FeStmt *scope_find(const Scope *s, const char *name) {
    for (; s; s = s->parent) {
        FeStmt *d = map_get(&s->names, name);
        if (d) return d;
    }
    return NULL;
}

static const char *const var_names[] = {"q", "k", "h", "b", "q_len", "kv_len", "score"};
static const IrVar var_ids[] = {IR_V_Q, IR_V_K, IR_V_H, IR_V_B, IR_V_QLEN, IR_V_KVLEN, IR_V_SCORE};

static int builtin_var(const char *name) {
    for (size_t i = 0; i < sizeof var_names / sizeof var_names[0]; i++)
        if (strcmp(name, var_names[i]) == 0) return (int)i;
    return -1;
}

static const struct {
    const char *name; /* as written */
    int arity;        /* arguments */
    bool int_ok;      /* takes ints and then returns an int */
} fn_table[] = {
#define X(name, text, arity, int_ok) {text, arity, int_ok},
    IR_FNS(X)
#undef X
};

static int builtin_fn(const char *name) {
    for (int i = 0; i < IR_FN_COUNT; i++)
        if (strcmp(name, fn_table[i].name) == 0) return i;
    return -1;
}

static const char *type_name(IrType t) {
    return t == IR_TY_BOOL ? "bool" : t == IR_TY_INT ? "int" : "float";
}

static const char *plural(int64_t n) { return n == 1 ? "" : "s"; }

// "did you mean"

/* Levenshtein distance with transpositions ("maks" is one edit from "mask"). */
static size_t edit_distance(const char *a, const char *b) {
    enum { MAXLEN = 64 };
    size_t n = strlen(a), m = strlen(b);
    if (n > MAXLEN || m > MAXLEN) return (size_t)-1;
    size_t d[MAXLEN + 1][MAXLEN + 1];
    for (size_t i = 0; i <= n; i++) d[i][0] = i;
    for (size_t j = 0; j <= m; j++) d[0][j] = j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[n][m];
}

typedef struct Suggest {
    const char *name; /* what was written */
    const char *best; /* the closest candidate so far */
    size_t dist;      /* its distance */
} Suggest;

static void suggest_add(Suggest *sg, const char *cand) {
    size_t len = strlen(sg->name), clen = strlen(cand);
    size_t limit = len <= 4 ? 1 : 2;
    if ((len > clen ? len - clen : clen - len) > limit) return;
    size_t d = edit_distance(sg->name, cand);
    if (d <= limit && d < sg->dist) {
        sg->best = cand;
        sg->dist = d;
    }
}

static const char *suggest_text(FeCtx *c, const Suggest *sg) {
    if (!sg->best) return "";
    return fe_check(c, arena_printf(&c->ast, " (did you mean '%s'?)", sg->best));
}

// semantic state

typedef struct Sema {
    FeCtx *c;        /* the compilation */
    Scope prelude;   /* built-in lets and defs */
    Scope global;    /* the file's top level */
    int param_depth; /* params being evaluated inside each other */
} Sema;

/* What a lowered expression may read. */
typedef enum LowerCtx {
    CTX_CONST,   /* nothing that varies: sizes, scale, params, dimensions */
    CTX_HEADMAP, /* `kv_head =`: only h */
    CTX_MASK,    /* q, k, h, b, lengths, inputs */
    CTX_SCORE,   /* the same and `score` */
    CTX_CHECK,   /* anything: checking a block-level let on its own */
} LowerCtx;

/* A lowered expression and the depth of its tree. */
typedef struct Val {
    IrExpr *e; /* NULL after an error (already reported) */
    int depth; /* of the tree */
} Val;

typedef struct Bind {
    const char *name; /* a def's parameter */
    Val val;          /* the argument of this call */
} Bind;

typedef struct Frame {
    FeStmt *s;  /* the let or def being expanded */
    FeLoc use;  /* where it is used */
} Frame;

typedef struct Lower {
    Sema *S;                      /* the analysis */
    FeCtx *c;                     /* the compilation */
    const Scope *scope;           /* where names resolve */
    Arena *arena;                 /* where the IR goes */
    LowerCtx ctx;                 /* what may be read */
    const char *what;             /* the statement, for "X must be a compile-time constant" */
    Bind *binds;                  /* the parameters of the innermost def being expanded */
    int nbinds;                   /* their count */
    Frame stack[FE_MAX_EXPAND];   /* lets and defs being expanded, outermost first */
    int nstack;                   /* their count */
    int rdepth;                   /* recursion depth of lower() */
    long steps;                   /* lower() calls, bounding the work of failed expansions */
    long nodes;                   /* IR nodes made */
    bool too_big;                 /* the size limit was hit (reported once) */
    FeLoc at;                     /* the statement, for size errors */
} Lower;

static Val bad(void) { return (Val){NULL, 0}; }

/* Reports an error found while lowering. Errors inside the prelude are moved to the user's
 * use of the prelude item, which is what the user can fix. */
static void lerr(Lower *L, FeLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void lerr(Lower *L, FeLoc loc, const char *fmt, ...) {
    FeCtx *c = L->c;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (loc.src == &c->prelude) {
        for (int i = L->nstack - 1; i >= 0; i--) {
            if (L->stack[i].use.src != &c->prelude) {
                fe_error(c, L->stack[i].use, "%s (in '%s' from the prelude)", buf,
                         L->stack[i].s->name);
                return;
            }
        }
    }
    fe_error(c, loc, "%s", buf);
}

static void too_deep(Lower *L, FeLoc loc) {
    if (L->too_big) return;
    L->too_big = true;
    lerr(L, loc, "expression nested too deeply after expanding lets and defs (more than %d levels)",
         FE_MAX_LOWER_DEPTH);
}

/* A node whose operands are all constants becomes a constant, computed by the evaluator the
 * passes and the reference use: an integer overflow between constants (params included) is
 * the spec's error, as it is in sizes, never a silently wrapped mask. */
static Val fold_node(Lower *L, FeLoc loc, Val v) {
    IrExpr *e = v.e;
    if (e->op == IR_CONST || e->op == IR_VAR || e->op == IR_INPUT || e->op == IR_RANGE || e->nargs == 0)
        return v;
    for (int i = 0; i < e->nargs; i++)
        if (e->args[i]->op != IR_CONST) return v;
    IrValue r;
    IrEvalStatus st = ir_eval_const(e, NULL, &r);
    if (st == IR_EVAL_OVERFLOW) {
        const char *op = e->op == IR_CALL ? ir_fn_name((IrFn)e->fn) : e->op == IR_NEG ? "-"
                       : ir_infix_text(e->op);
        lerr(L, loc, "integer overflow in constant expression '%s'", op ? op : "?");
        return bad();
    }
    if (st != IR_EVAL_OK) return v;
    IrExpr *c = e->type == IR_TY_FLOAT ? ir_const_float(L->arena, r.f)
              : e->type == IR_TY_BOOL  ? ir_const_bool(L->arena, r.i != 0)
                                       : ir_const_int(L->arena, r.i);
    fe_check(L->c, c);
    return (Val){c, v.depth};
}

/* Finishes a new IR node: sets its type, counts it, checks the limits, folds constants. */
static Val node(Lower *L, FeLoc loc, IrExpr *e, IrType t, int child_depth) {
    fe_check(L->c, e);
    e->type = t;
    Val v = {e, child_depth + 1};
    if (v.depth > FE_MAX_LOWER_DEPTH) {
        too_deep(L, loc);
        return bad();
    }
    if (++L->nodes > FE_MAX_NODES) {
        if (!L->too_big)
            lerr(L, L->at, "expression too large after expanding lets and defs (more than %d nodes)",
                 FE_MAX_NODES);
        L->too_big = true;
        return bad();
    }
    return fold_node(L, loc, v);
}

static int dmax(int a, int b) { return a > b ? a : b; }

static Val mk_int(Lower *L, FeLoc loc, int64_t v) {
    return node(L, loc, ir_const_int(L->arena, v), IR_TY_INT, 0);
}

static Val mk_float(Lower *L, FeLoc loc, double v) {
    return node(L, loc, ir_const_float(L->arena, v), IR_TY_FLOAT, 0);
}

static Val mk_bool(Lower *L, FeLoc loc, bool v) {
    return node(L, loc, ir_const_bool(L->arena, v), IR_TY_BOOL, 0);
}

static Val mk_unary(Lower *L, FeLoc loc, IrExprOp op, Val x, IrType t) {
    return node(L, loc, ir_unary(L->arena, op, x.e), t, x.depth);
}

static Val mk_binary(Lower *L, FeLoc loc, IrExprOp op, Val x, Val y, IrType t) {
    return node(L, loc, ir_binary(L->arena, op, x.e, y.e), t, dmax(x.depth, y.depth));
}

/* int -> float where a float is needed */
static Val to_float(Lower *L, FeLoc loc, Val x) {
    if (x.e->type != IR_TY_INT) return x;
    if (x.e->op == IR_CONST) return mk_float(L, loc, (double)x.e->ival);
    return mk_unary(L, loc, IR_ITOF, x, IR_TY_FLOAT);
}

/* A fresh copy of a def's argument for each use, so the IR stays a tree. */
static IrExpr *copy_expr(Lower *L, const IrExpr *e) {
    IrExpr *n = fe_check(L->c, arena_alloc(L->arena, sizeof *n));
    *n = *e;
    for (int i = 0; i < e->nargs && i < 4; i++) n->args[i] = copy_expr(L, e->args[i]);
    return n;
}

static long count_nodes(const IrExpr *e) {
    long n = 1;
    for (int i = 0; i < e->nargs && i < 4; i++) n += count_nodes(e->args[i]);
    return n;
}

static Val copy_val(Lower *L, FeLoc loc, Val v) {
    L->nodes += count_nodes(v.e);
    if (L->nodes > FE_MAX_NODES) {
        if (!L->too_big)
            lerr(L, L->at, "expression too large after expanding lets and defs (more than %d nodes)",
                 FE_MAX_NODES);
        L->too_big = true;
        return bad();
    }
    (void)loc;
    return (Val){copy_expr(L, v.e), v.depth};
}


// lowering

static Val lower(Lower *L, FeNode *n);
static bool eval_param(Sema *S, FeStmt *p);

/* Checks that the current context may read `name` (a position, a length or score). */
static bool var_allowed(Lower *L, FeLoc loc, int var) {
    const char *name = var_names[var];
    if (var_ids[var] == IR_V_SCORE) {
        if (L->ctx == CTX_SCORE || L->ctx == CTX_CHECK) return true;
        lerr(L, loc, "'score' can only be used in 'score ='");
        return false;
    }
    switch (L->ctx) {
    case CTX_CONST:
        lerr(L, loc, "%s must be a compile-time constant, but '%s' varies at run time", L->what,
             name);
        return false;
    case CTX_HEADMAP:
        if (var_ids[var] == IR_V_H) return true;
        lerr(L, loc, "kv_head may depend only on 'h', not on '%s'", name);
        return false;
    default: return true;
    }
}

static bool input_allowed(Lower *L, FeLoc loc, const char *name) {
    switch (L->ctx) {
    case CTX_CONST:
        lerr(L, loc, "%s must be a compile-time constant, but '%s' is a runtime input", L->what,
             name);
        return false;
    case CTX_HEADMAP:
        lerr(L, loc, "kv_head may depend only on 'h', not on input '%s'", name);
        return false;
    default: return true;
    }
}

static IrType input_type(const FeStmt *in) {
    return in->type && strcmp(in->type, "i32") == 0 ? IR_TY_INT : IR_TY_FLOAT;
}

static void undefined(Lower *L, FeNode *n, const char *name, const char *kind) {
    if (n->reported) return;
    n->reported = true;
    FeLoc loc = n->loc;
    Suggest sg = {name, NULL, (size_t)-1};
    for (int i = L->nbinds - 1; i >= 0; i--) suggest_add(&sg, L->binds[i].name);
    for (size_t i = 0; i < sizeof var_names / sizeof var_names[0]; i++)
        suggest_add(&sg, var_names[i]);
    for (const Scope *s = L->scope; s; s = s->parent)
        for (size_t i = 0; i < s->names.cap; i++)
            if (s->names.slots[i].key) suggest_add(&sg, s->names.slots[i].key);
    for (int i = 0; i < IR_FN_COUNT; i++) suggest_add(&sg, fn_table[i].name);
    /* A top-level let or def resolves its free names in the block that uses it (an input one
     * block declares and another lacks): say which use, or the user cannot tell the block. */
    const char *where = "";
    if (L->nstack > 0 && L->stack[0].use.src == &L->c->file) {
        for (const FeStmt *it = L->c->items; it; it = it->next) {
            if (it == L->stack[0].s) {
                where = fe_check(L->c, arena_printf(&L->c->ast, " (in '%s', used at line %d)",
                                                    it->name, L->stack[0].use.line));
                break;
            }
        }
    }
    lerr(L, loc, "undefined %s '%s'%s%s", kind, name, suggest_text(L->c, &sg), where);
}

/* Pushes a let or def on the expansion stack; reports recursion. */
static bool push_frame(Lower *L, FeStmt *s, FeLoc use) {
    if (s->expanding) {
        StrBuf sb;
        sb_init(&sb);
        int from = -1;
        for (int i = 0; i < L->nstack; i++)
            if (L->stack[i].s == s) from = i;
        if (from >= 0) {
            for (int i = from; i < L->nstack; i++) sb_printf(&sb, "%s -> ", L->stack[i].s->name);
            sb_puts(&sb, s->name);
            lerr(L, use, "recursive definition of '%s' (%s)", s->name, sb_str(&sb));
        } else {
            lerr(L, use, "recursive definition of '%s'", s->name);
        }
        sb_free(&sb);
        return false;
    }
    if (L->nstack == FE_MAX_EXPAND) {
        lerr(L, use, "lets and defs nested too deeply (more than %d levels)", FE_MAX_EXPAND);
        return false;
    }
    L->stack[L->nstack++] = (Frame){s, use};
    s->expanding = true;
    return true;
}

static void pop_frame(Lower *L) { L->stack[--L->nstack].s->expanding = false; }

static Val expand_let(Lower *L, FeStmt *s, FeLoc use) {
    if (!push_frame(L, s, use)) return bad();
    Bind *binds = L->binds;
    int nbinds = L->nbinds;
    L->binds = NULL; /* a let body does not see the caller's def parameters */
    L->nbinds = 0;
    Val v = lower(L, s->expr);
    L->binds = binds;
    L->nbinds = nbinds;
    pop_frame(L);
    return v;
}

static Val param_val(Lower *L, FeStmt *p, FeLoc loc) {
    if (!eval_param(L->S, p)) return bad();
    switch (p->ptype) {
    case IR_TY_INT: return mk_int(L, loc, p->pival);
    case IR_TY_FLOAT: return mk_float(L, loc, p->pfval);
    default: return mk_bool(L, loc, p->pival != 0);
    }
}

static Val lower_name(Lower *L, FeNode *n) {
    for (int i = L->nbinds - 1; i >= 0; i--)
        if (strcmp(L->binds[i].name, n->name) == 0) return copy_val(L, n->loc, L->binds[i].val);
    int var = builtin_var(n->name);
    if (var >= 0) {
        if (!var_allowed(L, n->loc, var)) return bad();
        IrVar v = var_ids[var];
        return node(L, n->loc, ir_var(L->arena, v), v == IR_V_SCORE ? IR_TY_FLOAT : IR_TY_INT, 0);
    }
    FeStmt *s = scope_find(L->scope, n->name);
    if (s) {
        switch (s->kind) {
        case FE_S_LET: return expand_let(L, s, n->loc);
        case FE_S_PARAM: return param_val(L, s, n->loc);
        case FE_S_INPUT:
            if (!input_allowed(L, n->loc, n->name)) return bad();
            if (s->ndims > 0) {
                lerr(L, n->loc, "input '%s' has %d dimension%s; index it as %s[...]", n->name,
                     s->ndims, plural(s->ndims), n->name);
                return bad();
            }
            return node(L, n->loc, ir_load(L->arena, s->input, input_type(s), 0, NULL),
                        input_type(s), 0);
        case FE_S_DEF:
            lerr(L, n->loc, "'%s' is a def taking %d argument%s; call it as %s(...)", n->name,
                 s->nparams, plural(s->nparams), n->name);
            return bad();
        default: break;
        }
    }
    if (builtin_fn(n->name) >= 0) {
        lerr(L, n->loc, "'%s' is a function; call it as %s(...)", n->name, n->name);
        return bad();
    }
    undefined(L, n, n->name, "name");
    return bad();
}

static Val lower_unary(Lower *L, FeNode *n) {
    Val x = lower(L, n->args);
    if (!x.e) return bad();
    IrType t = x.e->type;
    if (n->op == IR_NOT) {
        if (t != IR_TY_BOOL) {
            lerr(L, n->loc, "operator '!' needs a bool operand, got %s", type_name(t));
            return bad();
        }
        return mk_unary(L, n->loc, IR_NOT, x, IR_TY_BOOL);
    }
    if (t == IR_TY_BOOL) {
        lerr(L, n->loc, "operator '-' needs an int or float operand, got bool");
        return bad();
    }
    if (x.e->op == IR_CONST) { /* keep literals like -1 and -inf constants */
        if (t == IR_TY_FLOAT) return mk_float(L, n->loc, -x.e->fval);
        if (x.e->ival != INT64_MIN) return mk_int(L, n->loc, -x.e->ival);
    }
    return mk_unary(L, n->loc, IR_NEG, x, t);
}

static const char *op_text(int op) {
    const char *t = ir_infix_text((IrExprOp)op);
    return t ? t : "?";
}

/* The divisor of an integer '/' or '%': must fold to a positive constant. */
static Val const_divisor(Lower *L, FeNode *n, Val y) {
    FeNode *yn = n->args->next;
    IrValue v;
    IrEvalStatus st = ir_eval_const(y.e, NULL, &v);
    if (st == IR_EVAL_NONCONST) {
        if (n->op == IR_DIV)
            lerr(L, yn->start, "division by a runtime value (the divisor of an integer '/' must be "
                               "a constant; make an operand float for true division)");
        else
            lerr(L, yn->start, "division by a runtime value (the divisor of '%%' must be a constant)");
        return bad();
    }
    if (st == IR_EVAL_OVERFLOW) {
        lerr(L, yn->start, "integer overflow in the divisor of '%s'", op_text(n->op));
        return bad();
    }
    if (v.i <= 0) {
        if (v.i == 0)
            lerr(L, yn->start, "division by zero (the divisor of integer '%s' must be positive)",
                 op_text(n->op));
        else
            lerr(L, yn->start, "non-positive divisor %lld (the divisor of integer '%s' must be positive)",
                 (long long)v.i, op_text(n->op));
        return bad();
    }
    return mk_int(L, yn->start, v.i);
}

static Val lower_binary(Lower *L, FeNode *n) {
    Val x = lower(L, n->args);
    Val y = lower(L, n->args->next);
    if (!x.e || !y.e) return bad();
    IrType tx = x.e->type, ty = y.e->type;
    const char *op = op_text(n->op);
    switch (n->op) {
    case IR_AND:
    case IR_OR:
        if (tx != IR_TY_BOOL || ty != IR_TY_BOOL) {
            lerr(L, n->loc, "operator '%s' needs bool operands, got %s", op,
                 type_name(tx != IR_TY_BOOL ? tx : ty));
            return bad();
        }
        return mk_binary(L, n->loc, n->op, x, y, IR_TY_BOOL);
    case IR_EQ:
    case IR_NE:
        if (tx == IR_TY_BOOL && ty == IR_TY_BOOL) return mk_binary(L, n->loc, n->op, x, y, IR_TY_BOOL);
        if ((tx == IR_TY_BOOL) != (ty == IR_TY_BOOL)) {
            lerr(L, n->loc, "cannot compare %s with %s using '%s'", type_name(tx), type_name(ty), op);
            return bad();
        }
        break;
    default:
        if (tx == IR_TY_BOOL || ty == IR_TY_BOOL) {
            lerr(L, n->loc, "operator '%s' needs int or float operands, got bool", op);
            return bad();
        }
        break;
    }
    bool fl = tx == IR_TY_FLOAT || ty == IR_TY_FLOAT;
    if (n->op == IR_MOD && fl) {
        lerr(L, n->loc, "operator '%%' needs int operands, got float");
        return bad();
    }
    if ((n->op == IR_DIV || n->op == IR_MOD) && !fl) {
        y = const_divisor(L, n, y);
        if (!y.e) return bad();
    }
    if (fl) {
        x = to_float(L, n->loc, x);
        y = to_float(L, n->loc, y);
        if (!x.e || !y.e) return bad();
    }
    bool cmp = n->op >= IR_EQ && n->op <= IR_GE;
    return mk_binary(L, n->loc, n->op, x, y, cmp ? IR_TY_BOOL : fl ? IR_TY_FLOAT : IR_TY_INT);
}

static Val lower_cond(Lower *L, FeNode *n) {
    Val c = lower(L, n->args);
    Val x = lower(L, n->args->next);
    Val y = lower(L, n->args->next->next);
    if (!c.e || !x.e || !y.e) return bad();
    if (c.e->type != IR_TY_BOOL) {
        lerr(L, n->args->start, "the condition of '?:' must be bool, got %s", type_name(c.e->type));
        return bad();
    }
    IrType tx = x.e->type, ty = y.e->type;
    if (tx != ty) {
        if (tx == IR_TY_BOOL || ty == IR_TY_BOOL) {
            lerr(L, n->loc, "the branches of '?:' have different types, %s and %s", type_name(tx),
                 type_name(ty));
            return bad();
        }
        x = to_float(L, n->loc, x);
        y = to_float(L, n->loc, y);
        if (!x.e || !y.e) return bad();
    }
    return node(L, n->loc, ir_select(L->arena, c.e, x.e, y.e), x.e->type,
                dmax(c.depth, dmax(x.depth, y.depth)));
}

static Val lower_builtin_call(Lower *L, FeNode *n, int fn) {
    if (n->nargs != fn_table[fn].arity) {
        lerr(L, n->loc, "'%s' takes %d argument%s, got %d", n->name, fn_table[fn].arity,
             plural(fn_table[fn].arity), n->nargs);
        return bad();
    }
    Val a[4];
    bool ok = true, any_float = false;
    int i = 0;
    for (FeNode *arg = n->args; arg; arg = arg->next, i++) {
        a[i] = lower(L, arg);
        if (!a[i].e) {
            ok = false;
            continue;
        }
        if (a[i].e->type == IR_TY_BOOL) {
            lerr(L, arg->start, "argument %d of '%s' must be an int or float, got bool", i + 1,
                 n->name);
            ok = false;
        } else if (a[i].e->type == IR_TY_FLOAT) {
            any_float = true;
        }
    }
    if (!ok) return bad();
    bool fl = any_float || !fn_table[fn].int_ok;
    IrExpr *args[4];
    int depth = 0;
    for (i = 0; i < n->nargs; i++) {
        if (fl) a[i] = to_float(L, n->loc, a[i]);
        if (!a[i].e) return bad();
        args[i] = a[i].e;
        depth = dmax(depth, a[i].depth);
    }
    return node(L, n->loc, ir_call(L->arena, (IrFn)fn, n->nargs, args),
                fl ? IR_TY_FLOAT : IR_TY_INT, depth);
}

static Val lower_call(Lower *L, FeNode *n) {
    /* the same resolution order as lower_name: def parameters, built-ins, scopes */
    bool value = builtin_var(n->name) >= 0;
    for (int i = 0; i < L->nbinds; i++)
        if (strcmp(L->binds[i].name, n->name) == 0) value = true;
    FeStmt *s = value ? NULL : scope_find(L->scope, n->name);
    if (!value && s && s->kind == FE_S_INPUT) {
        if (s->ndims == 0)
            lerr(L, n->loc, "'%s' is a scalar input, not a function; use it as %s", n->name, n->name);
        else
            lerr(L, n->loc, "'%s' is an input, not a function; index it as %s[...]", n->name, n->name);
        return bad();
    }
    if (value || (s && s->kind != FE_S_DEF)) {
        lerr(L, n->loc, "'%s' is not a function", n->name);
        return bad();
    }
    if (!s) {
        int fn = builtin_fn(n->name);
        if (fn >= 0) return lower_builtin_call(L, n, fn);
        undefined(L, n, n->name, "function");
        return bad();
    }
    if (n->nargs != s->nparams) {
        lerr(L, n->loc, "'%s' takes %d argument%s, got %d", n->name, s->nparams,
             plural(s->nparams), n->nargs);
        return bad();
    }
    Bind *binds = s->nparams ? fe_alloc(L->c, sizeof(Bind) * (size_t)s->nparams) : NULL;
    bool ok = true;
    FeNode *arg = n->args, *par = s->params;
    for (int i = 0; i < s->nparams; i++, arg = arg->next, par = par->next) {
        binds[i].name = par->name;
        binds[i].val = lower(L, arg);
        if (!binds[i].val.e) ok = false;
    }
    if (!ok || !push_frame(L, s, n->loc)) return bad();
    Bind *saved = L->binds;
    int nsaved = L->nbinds;
    L->binds = binds;
    L->nbinds = s->nparams;
    Val v = lower(L, s->expr);
    L->binds = saved;
    L->nbinds = nsaved;
    pop_frame(L);
    return v;
}

static Val lower_index(Lower *L, FeNode *n) {
    FeNode *base = n->base;
    if (base->kind != FE_N_NAME) {
        lerr(L, base->start, "only inputs can be indexed");
        return bad();
    }
    const char *name = base->name;
    for (int i = 0; i < L->nbinds; i++) {
        if (strcmp(L->binds[i].name, name) == 0) {
            lerr(L, base->loc, "only inputs can be indexed; '%s' is a def parameter", name);
            return bad();
        }
    }
    if (builtin_var(name) >= 0) {
        lerr(L, base->loc, "only inputs can be indexed; '%s' is a built-in value", name);
        return bad();
    }
    FeStmt *s = scope_find(L->scope, name);
    if (!s) {
        undefined(L, base, name, "name");
        return bad();
    }
    if (s->kind != FE_S_INPUT) {
        const char *what = s->kind == FE_S_LET ? "a let" : s->kind == FE_S_PARAM ? "a param" : "a def";
        lerr(L, base->loc, "only inputs can be indexed; '%s' is %s", name, what);
        return bad();
    }
    if (!input_allowed(L, base->loc, name)) return bad();
    if (s->ndims == 0) {
        lerr(L, base->loc, "input '%s' is a scalar; use it without brackets", name);
        return bad();
    }
    if (n->nargs != s->ndims) {
        lerr(L, base->loc, "input '%s' has %d dimension%s, but %d ind%s given", name, s->ndims,
             plural(s->ndims), n->nargs, n->nargs == 1 ? "ex was" : "ices were");
        return bad();
    }
    IrExpr *idx[4];
    int depth = 0, i = 0;
    bool ok = true;
    for (FeNode *a = n->args; a; a = a->next, i++) {
        Val v = lower(L, a);
        if (!v.e) {
            ok = false;
            continue;
        }
        if (v.e->type != IR_TY_INT) {
            lerr(L, a->start, "index %d of '%s' must be an int, got %s", i + 1, name,
                 type_name(v.e->type));
            ok = false;
            continue;
        }
        if (i < 4) idx[i] = v.e;
        depth = dmax(depth, v.depth);
    }
    if (!ok || s->input < 0 || n->nargs > 4) return bad();
    return node(L, base->loc, ir_load(L->arena, s->input, input_type(s), n->nargs, idx),
                input_type(s), depth);
}

static Val lower(Lower *L, FeNode *n) {
    if (L->too_big) return bad();
    if (++L->steps > 4 * (long)FE_MAX_NODES) {
        if (!L->too_big)
            lerr(L, L->at, "expression too large after expanding lets and defs (more than %d nodes)",
                 FE_MAX_NODES);
        L->too_big = true;
        return bad();
    }
    if (L->rdepth >= 2 * FE_MAX_LOWER_DEPTH) {
        too_deep(L, n->loc);
        return bad();
    }
    L->rdepth++;
    Val v;
    switch (n->kind) {
    case FE_N_INT: v = mk_int(L, n->loc, n->ival); break;
    case FE_N_FLOAT: v = mk_float(L, n->loc, n->fval); break;
    case FE_N_BOOL: v = mk_bool(L, n->loc, n->ival != 0); break;
    case FE_N_NAME: v = lower_name(L, n); break;
    case FE_N_UNARY: v = lower_unary(L, n); break;
    case FE_N_BINARY: v = lower_binary(L, n); break;
    case FE_N_COND: v = lower_cond(L, n); break;
    case FE_N_CALL: v = lower_call(L, n); break;
    case FE_N_INDEX: v = lower_index(L, n); break;
    default: unreachable();
    }
    L->rdepth--;
    return v;
}

static void lower_init(Lower *L, Sema *S, const Scope *scope, Arena *arena, LowerCtx ctx,
                       const char *what, FeLoc at) {
    memset(L, 0, sizeof *L);
    L->S = S;
    L->c = S->c;
    L->scope = scope;
    L->arena = arena;
    L->ctx = ctx;
    L->what = what;
    L->at = at;
}

// params and constant statements

/* Folds a param's value once; reports its errors at the param. */
static bool eval_param(Sema *S, FeStmt *p) {
    FeCtx *c = S->c;
    switch (p->pstate) {
    case FE_P_OK: return true;
    case FE_P_BAD: return false;
    case FE_P_BUSY:
        fe_error(c, p->name_loc, "param '%s' is defined in terms of itself", p->name);
        p->pstate = FE_P_BAD;
        return false;
    case FE_P_TODO: break;
    }
    if (S->param_depth >= FE_MAX_EXPAND) {
        fe_error(c, p->name_loc, "params refer to each other too deeply (more than %d levels)",
                 FE_MAX_EXPAND);
        p->pstate = FE_P_BAD;
        return false;
    }
    p->pstate = FE_P_BUSY;
    S->param_depth++;
    Lower L;
    const char *what = fe_check(c, arena_printf(&c->ast, "param '%s'", p->name));
    lower_init(&L, S, p->scope, &c->ast, CTX_CONST, what, p->loc);
    Val v = lower(&L, p->expr);
    S->param_depth--;
    if (p->pstate == FE_P_BAD) return false; /* a cycle through it was reported */
    if (!v.e) {
        p->pstate = FE_P_BAD;
        return false;
    }
    IrValue val;
    IrEvalStatus st = ir_eval_const(v.e, NULL, &val);
    if (st != IR_EVAL_OK) {
        fe_error(c, p->expr->start, st == IR_EVAL_OVERFLOW ? "integer overflow in param '%s'"
                                                      : "param '%s' must be a compile-time constant",
                 p->name);
        p->pstate = FE_P_BAD;
        return false;
    }
    p->ptype = v.e->type;
    if (p->ptype == IR_TY_FLOAT)
        p->pfval = val.f;
    else
        p->pival = val.i;
    p->pstate = FE_P_OK;
    return true;
}

/* Lowers and folds a constant statement (`heads = 32;`) of the given type. */
static bool const_value(Sema *S, const Scope *scope, FeStmt *st, IrType want, IrValue *out) {
    FeCtx *c = S->c;
    Lower L;
    lower_init(&L, S, scope, &c->ast, CTX_CONST, st->name, st->loc);
    Val v = lower(&L, st->expr);
    if (!v.e) return false;
    IrType t = v.e->type;
    if (want == IR_TY_INT && t != IR_TY_INT) {
        fe_error(c, st->expr->start, "%s must be an integer, got %s", st->name, type_name(t));
        return false;
    }
    if (want == IR_TY_FLOAT && t == IR_TY_BOOL) {
        fe_error(c, st->expr->start, "%s must be a number, got bool", st->name);
        return false;
    }
    IrValue val;
    IrEvalStatus es = ir_eval_const(v.e, NULL, &val);
    if (es != IR_EVAL_OK) {
        fe_error(c, st->expr->start, es == IR_EVAL_OVERFLOW ? "integer overflow in %s"
                                                       : "%s must be a compile-time constant",
                 st->name);
        return false;
    }
    if (want == IR_TY_FLOAT && t == IR_TY_INT) val.f = (double)val.i;
    *out = val;
    return true;
}

/* A size statement: a positive integer constant no larger than `max`. */
static bool size_value(Sema *S, const Scope *scope, FeStmt *st, int64_t max, int64_t *out) {
    IrValue v;
    if (!const_value(S, scope, st, IR_TY_INT, &v)) return false;
    if (v.i <= 0) {
        fe_error(S->c, st->expr->start, "%s must be positive, got %lld", st->name, (long long)v.i);
        return false;
    }
    if (v.i > max) {
        fe_error(S->c, st->expr->start, "%s too large (%lld, at most %lld)", st->name,
                 (long long)v.i, (long long)max);
        return false;
    }
    *out = v.i;
    return true;
}

// declarations

/* Names a front end gives to the call's tensors and options: an input of the same name could
 * not be passed (the command line's --in/--out, the Python keyword arguments). */
static const struct {
    const char *name, *why;
} reserved_inputs[] = {
    {"v", "the values tensor"}, {"o", "the output tensor"}, {"lse", "the log-sum-exp output"},
    {"do", "the output's gradient in a backward call"}, {"dq", "a gradient of the backward call"},
    {"dk", "a gradient of the backward call"}, {"dv", "a gradient of the backward call"},
    {"q_nope", "an MLA tensor"}, {"q_rope", "an MLA tensor"}, {"c_kv", "an MLA tensor"},
    {"k_rope", "an MLA tensor"}, {"w_uk", "an MLA tensor"}, {"w_uv", "an MLA tensor"},
    {"c_kv_pages", "a paged MLA tensor"}, {"k_rope_pages", "a paged MLA tensor"},
    {"dq_nope", "an MLA gradient"}, {"dq_rope", "an MLA gradient"}, {"dc_kv", "an MLA gradient"},
    {"dk_rope", "an MLA gradient"}, {"dw_uk", "an MLA gradient"}, {"dw_uv", "an MLA gradient"},
    {"q_starts", "a tensor of paged calls"}, {"k_pages", "a tensor of paged calls"},
    {"v_pages", "a tensor of paged calls"}, {"page_table", "a tensor of paged calls"},
    {"kv_lens", "a tensor of paged calls"}, {"k_scale", "the int8 keys' scales"},
    {"v_scale", "the int8 values' scales"}, {"threads", "an option of the Python call"},
    {"q_offset", "an option of the Python call"}, {"return_lse", "an option of the Python call"},
    {"absorb", "an option of the Python call"},
    {"self", "the kernel object in Python"},
};

static int reserved_input(const char *name) {
    for (size_t i = 0; i < sizeof reserved_inputs / sizeof reserved_inputs[0]; i++)
        if (strcmp(name, reserved_inputs[i].name) == 0) return (int)i;
    return -1;
}

static bool declare(Sema *S, Scope *scope, FeStmt *s) {
    FeCtx *c = S->c;
    s->scope = scope;
    if (builtin_var(s->name) >= 0) {
        fe_error(c, s->name_loc, "'%s' is a built-in name and cannot be redefined", s->name);
        return false;
    }
    if (builtin_fn(s->name) >= 0) {
        fe_error(c, s->name_loc, "'%s' is a built-in function and cannot be redefined", s->name);
        return false;
    }
    FeStmt *old = map_get(&scope->names, s->name);
    if (old) {
        fe_error(c, s->name_loc, "'%s' is already defined (at line %d)", s->name, old->name_loc.line);
        return false;
    }
    map_put(c, &scope->names, s->name, s);
    return true;
}

static void declare_def(Sema *S, Scope *scope, FeStmt *s) {
    FeCtx *c = S->c;
    for (FeNode *p = s->params; p; p = p->next) {
        if (builtin_var(p->name) >= 0)
            fe_error(c, p->loc, "parameter '%s' of '%s' would hide the built-in name '%s'",
                     p->name, s->name, p->name);
        for (FeNode *q = s->params; q != p; q = q->next)
            if (strcmp(q->name, p->name) == 0)
                fe_error(c, p->loc, "duplicate parameter '%s' of '%s'", p->name, s->name);
    }
    declare(S, scope, s);
}

// attention blocks

enum { ST_HEADS, ST_KV_HEADS, ST_KV_HEAD, ST_HEAD_DIM, ST_V_DIM, ST_SCALE, ST_MASK, ST_SCORE,
       ST_DTYPE, ST_ABSORB, ST_COMPUTE, ST_KV_DTYPE, ST_COUNT };

static const char *const stmt_names[ST_COUNT] = {
    "heads", "kv_heads", "kv_head", "head_dim", "v_dim", "scale", "mask", "score", "dtype",
    "absorb", "compute", "kv_dtype"};

static const char *const mla_names[] = {"kv_rank", "rope_dim", "nope_dim", "v_dim"};

static int stmt_index(const char *name) {
    for (int i = 0; i < ST_COUNT; i++)
        if (strcmp(name, stmt_names[i]) == 0) return i;
    return -1;
}

static bool is_mla_name(const char *name) {
    for (size_t i = 0; i < sizeof mla_names / sizeof mla_names[0]; i++)
        if (strcmp(name, mla_names[i]) == 0) return true;
    return false;
}

static void unknown_stmt(Sema *S, FeStmt *s, bool in_mla) {
    FeCtx *c = S->c;
    Suggest sg = {s->name, NULL, (size_t)-1};
    if (in_mla) {
        for (size_t i = 0; i < sizeof mla_names / sizeof mla_names[0]; i++)
            suggest_add(&sg, mla_names[i]);
        fe_error(c, s->name_loc, "unknown statement '%s' in 'mla' block%s", s->name,
                 suggest_text(c, &sg));
        return;
    }
    if (is_mla_name(s->name)) {
        fe_error(c, s->name_loc, "'%s' belongs inside an 'mla { ... }' block", s->name);
        return;
    }
    for (int i = 0; i < ST_COUNT; i++) suggest_add(&sg, stmt_names[i]);
    fe_error(c, s->name_loc, "unknown statement '%s'%s", s->name, suggest_text(c, &sg));
}

/* `mla { kv_rank = ..; rope_dim = ..; nope_dim = ..; v_dim = ..; }`: all four, once each. */
static bool check_mla(Sema *S, const Scope *scope, FeStmt *mla, IrMla *out) {
    FeCtx *c = S->c;
    FeStmt *seen[4] = {NULL};
    bool ok = true;
    for (FeStmt *s = mla->body; s; s = s->next) {
        if (s->kind != FE_S_ASSIGN) {
            fe_error(c, s->loc, "only kv_rank, rope_dim, nope_dim and v_dim belong in an 'mla' block");
            ok = false;
            continue;
        }
        int k = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(s->name, mla_names[i]) == 0) k = i;
        if (k < 0) {
            unknown_stmt(S, s, true);
            ok = false;
        } else if (seen[k]) {
            fe_error(c, s->name_loc, "duplicate '%s' statement (first at line %d)", s->name,
                     seen[k]->loc.line);
            ok = false;
        } else {
            seen[k] = s;
        }
    }
    int64_t v[4] = {0};
    for (int i = 0; i < 4; i++) {
        if (!seen[i]) {
            fe_error(c, mla->loc, "'mla' block has no '%s' statement", mla_names[i]);
            ok = false;
        } else if (!size_value(S, scope, seen[i], FE_MAX_DIM, &v[i])) {
            ok = false;
        }
    }
    if (!ok) return false;
    *out = (IrMla){.present = true, .kv_rank = (int)v[0], .rope_dim = (int)v[1],
                   .nope_dim = (int)v[2], .v_dim = (int)v[3]};
    return true;
}

static const char *dim_names[] = {"batch", "heads", "kv_heads", "seq", "q_len", "kv_len"};
static const attn_dim_kind dim_kinds[] = {ATTN_DIM_BATCH, ATTN_DIM_HEADS, ATTN_DIM_KV_HEADS,
                                          ATTN_DIM_KV_LEN, ATTN_DIM_Q_LEN, ATTN_DIM_KV_LEN};

static void check_input(Sema *S, const Scope *scope, FeStmt *s, IrInput *in) {
    FeCtx *c = S->c;
    in->name = fe_check(c, arena_strdup(&c->mod->arena, s->name));
    if (strcmp(s->type, "i32") == 0) {
        in->dtype = ATTN_I32;
    } else if (strcmp(s->type, "f32") == 0) {
        in->dtype = ATTN_F32;
    } else {
        fe_error(c, s->type_loc, "unknown input type '%s' (expected i32 or f32)", s->type);
        in->dtype = ATTN_F32;
    }
    if (s->ndims > ATTN_MAX_DIMS) {
        fe_error(c, s->dims->start, "input '%s' has %d dimensions (at most %d)", s->name, s->ndims,
                 ATTN_MAX_DIMS);
        return;
    }
    in->rank = s->ndims;
    int i = 0;
    for (FeNode *d = s->dims; d; d = d->next, i++) {
        if (d->kind == FE_N_NAME) {
            int k = -1;
            for (size_t j = 0; j < sizeof dim_names / sizeof dim_names[0]; j++)
                if (strcmp(d->name, dim_names[j]) == 0) k = (int)j;
            if (k >= 0) {
                in->dim_kind[i] = dim_kinds[k];
                continue;
            }
            FeStmt *decl = builtin_var(d->name) < 0 ? scope_find(scope, d->name) : NULL;
            if (!decl || (decl->kind != FE_S_PARAM && decl->kind != FE_S_LET)) {
                fe_error(c, d->loc,
                         "unknown dimension '%s' (expected batch, heads, kv_heads, seq, q_len, "
                         "kv_len or a positive constant)",
                         d->name);
                continue;
            }
        }
        Lower L;
        const char *what = fe_check(c, arena_printf(&c->ast, "dimension %d of input '%s'", i + 1,
                                                    s->name));
        lower_init(&L, S, scope, &c->ast, CTX_CONST, what, d->start);
        Val v = lower(&L, d);
        if (!v.e) continue;
        IrValue val;
        if (v.e->type != IR_TY_INT) {
            fe_error(c, d->start, "%s must be an integer, got %s", what, type_name(v.e->type));
        } else if (ir_eval_const(v.e, NULL, &val) != IR_EVAL_OK) {
            fe_error(c, d->start, "%s must be a compile-time constant", what);
        } else if (val.i <= 0) {
            fe_error(c, d->start, "%s must be positive, got %lld", what, (long long)val.i);
        } else if (val.i > FE_MAX_INPUT_DIM) {
            fe_error(c, d->start, "%s too large (%lld, at most %lld)", what, (long long)val.i,
                     (long long)FE_MAX_INPUT_DIM);
        } else {
            in->dim_kind[i] = ATTN_DIM_CONST;
            in->dim_value[i] = val.i;
        }
    }
}

/* `dtype = f16;` and `absorb = auto;`: one of a few words. */
static int word_value(Sema *S, FeStmt *st, const char *const *words, int n, const char *expected) {
    FeNode *e = st->expr;
    if (e->kind == FE_N_NAME)
        for (int i = 0; i < n; i++)
            if (strcmp(e->name, words[i]) == 0) return i;
    if (e->kind == FE_N_NAME)
        fe_error(S->c, e->start, "unknown %s '%s' (expected %s)", st->name, e->name, expected);
    else
        fe_error(S->c, e->start, "%s must be %s", st->name, expected);
    return -1;
}

/* `compute = f32 | bf16 | int8;` and `kv_dtype = f32 | f16 | bf16 | int8;` (after dtype). */
static void check_precision(Sema *S, IrFunc *f, FeStmt *compute, FeStmt *kv_dtype, bool mla) {
    if (compute) {
        static const char *const words[] = {"f32", "bf16", "int8"};
        static const IrCompute vals[] = {IR_COMPUTE_F32, IR_COMPUTE_BF16, IR_COMPUTE_INT8};
        int k = word_value(S, compute, words, 3, "f32, bf16 or int8");
        if (k >= 0) f->compute = vals[k];
    }
    if (kv_dtype) {
        static const char *const words[] = {"f32", "f16", "bf16", "int8"};
        static const attn_dtype vals[] = {ATTN_F32, ATTN_F16, ATTN_BF16, ATTN_I8};
        int k = word_value(S, kv_dtype, words, 4, "f32, f16, bf16 or int8");
        if (k >= 0 && mla) {
            /* the latent cache c_kv, k_rope: f->dtype is the f32 of the variants' scratch */
            if (vals[k] == ATTN_I8)
                fe_error(S->c, kv_dtype->expr->start, "an MLA latent cache cannot be int8: 'kv_dtype = int8' comes with "
                         "the scale inputs k_scale and v_scale of K and V, which an MLA block does not have "
                         "(expected f32, f16 or bf16)");
            else if (vals[k] == ATTN_F32 && f->mla.dtype != ATTN_F32)
                f->mla.kv_f32 = true; /* an f32 latent under a 16-bit dtype */
            else if (vals[k] != f->mla.dtype)
                f->mla.kv_dtype = vals[k];
        } else if (k >= 0 && vals[k] != f->dtype) {
            if (vals[k] == ATTN_I8 && f->ninputs + 2 > ATTN_MAX_INPUTS)
                fe_error(S->c, kv_dtype->expr->start, "'kv_dtype = int8' adds the inputs k_scale and v_scale: "
                         "at most %d inputs of its own", ATTN_MAX_INPUTS - 2);
            else if (vals[k] == ATTN_F32)
                f->kv_f32 = true; /* f32 K/V under a 16-bit dtype */
            else
                f->kv_dtype = vals[k];
            /* int8 K/V: one f32 scale per token and K/V head, runtime inputs like any other */
            static const char *const scales[2] = {"k_scale", "v_scale"};
            for (int i = 0; i < 2 && f->kv_dtype == ATTN_I8; i++)
                f->inputs[f->ninputs++] = (IrInput){.name = scales[i], .dtype = ATTN_F32, .rank = 3,
                                                    .dim_kind = {ATTN_DIM_BATCH, ATTN_DIM_KV_HEADS, ATTN_DIM_KV_LEN}};
        }
    }
}

/* `kv_cache = paged(P);` (P a power of two, 8..256) or `kv_cache = contiguous;`: the page size
 * into f->page_size (0: contiguous). A paged block takes no input sized by the sequence (each
 * sequence of a ragged batch has its own lengths); int8 pages' scales are sized by the pages. */
static void check_kv_cache(Sema *S, FeStmt *s, IrFunc *f, bool mla) {
    FeCtx *c = S->c;
    FeNode *e = s->expr;
    if (e->kind == FE_N_NAME && strcmp(e->name, "contiguous") == 0) return;
    if (e->kind != FE_N_CALL || strcmp(e->name, "paged") != 0 || e->nargs != 1 || e->args->kind != FE_N_INT) {
        fe_error(c, e->start, "kv_cache must be 'paged(P)' with P a power of two from 8 to 256, or 'contiguous'");
        return;
    }
    int64_t p = e->args->ival;
    if (p < 8 || p > 256 || (p & (p - 1)) != 0) {
        fe_error(c, e->args->start, "page size %lld: it must be a power of two from 8 to 256", (long long)p);
        return;
    }
    if (mla && f->mla.absorb == IR_ABSORB_OFF) {
        fe_error(c, s->name_loc, "a paged MLA block runs absorbed (scores against the latent pages): drop 'absorb = off'");
        return;
    }
    if (mla) f->mla.absorb = IR_ABSORB_ON; /* the up-projected variant would need per-head K/V pages */
    /* int8 pages: one scale per token and K/V head, laid out like the pages without their last
     * dim, [num_pages, P, kv_heads] */
    for (int i = 0; i < f->ninputs && f->kv_dtype == ATTN_I8; i++)
        if (strcmp(f->inputs[i].name, "k_scale") == 0 || strcmp(f->inputs[i].name, "v_scale") == 0) {
            IrInput *in = &f->inputs[i];
            in->dim_kind[0] = ATTN_DIM_PAGES;
            in->dim_kind[1] = ATTN_DIM_CONST, in->dim_value[1] = p;
            in->dim_kind[2] = ATTN_DIM_KV_HEADS;
        }
    for (int i = 0; i < f->ninputs; i++)
        for (int d = 0; d < f->inputs[i].rank; d++) {
            attn_dim_kind k = f->inputs[i].dim_kind[d];
            if (k == ATTN_DIM_Q_LEN || k == ATTN_DIM_KV_LEN) {
                fe_error(c, s->name_loc, "input '%s' is sized by a sequence length, which a paged block does not "
                         "have (each sequence of the batch has its own); index by 'batch', heads or constants",
                         f->inputs[i].name);
                return;
            }
        }
    f->page_size = (int)p;
}

static void check_block(Sema *S, FeStmt *blk) {
    FeCtx *c = S->c;
    IrFunc *f = fe_check(c, ir_func_new(c->mod, blk->name));
    Arena *ir = f->arena ? f->arena : &c->mod->arena;
    Scope *scope = fe_alloc(c, sizeof *scope);
    scope->parent = &S->global;
    FeStmt *st[ST_COUNT] = {NULL};
    FeStmt *mla = NULL, *kv_cache = NULL;

    /* declarations first: statements may use names declared after them */
    for (FeStmt *s = blk->body; s; s = s->next) {
        switch (s->kind) {
        case FE_S_ASSIGN: {
            int k = stmt_index(s->name);
            if (k < 0 && strcmp(s->name, "kv_cache") == 0) {
                if (kv_cache)
                    fe_error(c, s->name_loc, "duplicate 'kv_cache' statement (first at line %d)", kv_cache->loc.line);
                kv_cache = s;
            } else if (k < 0)
                unknown_stmt(S, s, false);
            else if (st[k])
                fe_error(c, s->name_loc, "duplicate '%s' statement (first at line %d)", s->name,
                         st[k]->loc.line);
            else
                st[k] = s;
            break;
        }
        case FE_S_LET:
        case FE_S_PARAM: declare(S, scope, s); break;
        case FE_S_INPUT:
            if (reserved_input(s->name) >= 0)
                fe_error(c, s->name_loc, "input name '%s' is reserved: it names %s, so the input could not be passed",
                         s->name, reserved_inputs[reserved_input(s->name)].why);
            if (!declare(S, scope, s)) break;
            if (f->ninputs == ATTN_MAX_INPUTS) {
                fe_error(c, s->name_loc, "too many inputs (at most %d per attention block)",
                         ATTN_MAX_INPUTS);
                break;
            }
            s->input = f->ninputs++;
            break;
        case FE_S_DEF:
            fe_error(c, s->loc, "'def' is only allowed at the top level");
            break;
        case FE_S_MLA:
            if (mla)
                fe_error(c, s->loc, "duplicate 'mla' block (first at line %d)", mla->loc.line);
            else
                mla = s;
            break;
        case FE_S_ATTENTION:
            fe_error(c, s->loc, "attention blocks cannot be nested");
            break;
        }
    }
    for (FeStmt *s = blk->body; s; s = s->next)
        if (s->kind == FE_S_INPUT && s->input >= 0) check_input(S, scope, s, &f->inputs[s->input]);
    for (FeStmt *s = blk->body; s; s = s->next) /* 'dX' is the name of input X's gradient */
        for (FeStmt *t = blk->body; t && s->kind == FE_S_INPUT && s->input >= 0 && s->name[0] == 'd' && reserved_input(s->name) < 0; t = t->next)
            if (t->kind == FE_S_INPUT && t->input >= 0 && strcmp(s->name + 1, t->name) == 0)
                fe_error(c, s->name_loc, "input name '%s' is reserved: it names the gradient of input '%s' (line %d)",
                         s->name, t->name, t->name_loc.line);
    for (FeStmt *s = blk->body; s; s = s->next)
        if (s->kind == FE_S_PARAM && s->scope == scope) eval_param(S, s);
    bool mla_ok = mla && check_mla(S, scope, mla, &f->mla);
    if (mla) {
        /* MLA fixes the shapes through the latent: these statements would contradict it */
        static const int implied[] = {ST_HEAD_DIM, ST_V_DIM, ST_KV_HEADS, ST_KV_HEAD};
        static const char *const why[] = {"nope_dim + rope_dim", "the 'mla' block's v_dim",
                                          "heads (K/V are shared through the latent cache)",
                                          "the identity (K/V are shared through the latent cache)"};
        for (int i = 0; i < 4; i++)
            if (st[implied[i]])
                fe_error(c, st[implied[i]]->name_loc, "'%s' does not apply to an MLA block: it is %s",
                         st[implied[i]]->name, why[i]);
    }

    int64_t heads = 0, kv_heads = 0, head_dim = 0, v_dim = 0;
    bool heads_ok = false, kv_ok = false, dim_ok = false;
    if (!st[ST_HEADS])
        fe_error(c, blk->name_loc, "attention block '%s' has no 'heads' statement", blk->name);
    else
        heads_ok = size_value(S, scope, st[ST_HEADS], FE_MAX_HEADS, &heads);
    if (!st[ST_KV_HEADS]) {
        kv_heads = heads;
        kv_ok = heads_ok;
    } else if (size_value(S, scope, st[ST_KV_HEADS], FE_MAX_HEADS, &kv_heads) && heads_ok) {
        kv_ok = heads % kv_heads == 0;
        if (!kv_ok)
            fe_error(c, st[ST_KV_HEADS]->expr->start, "'kv_heads' (%lld) must divide 'heads' (%lld)",
                     (long long)kv_heads, (long long)heads);
    }
    if (!st[ST_HEAD_DIM]) {
        if (!mla)
            fe_error(c, blk->name_loc, "attention block '%s' has no 'head_dim' statement",
                     blk->name);
    } else {
        dim_ok = size_value(S, scope, st[ST_HEAD_DIM], FE_MAX_DIM, &head_dim);
    }
    if (!st[ST_V_DIM])
        v_dim = head_dim;
    else
        size_value(S, scope, st[ST_V_DIM], FE_MAX_DIM, &v_dim);

    if (st[ST_DTYPE]) {
        static const char *const dtypes[] = {"f32", "f16", "bf16"};
        static const attn_dtype dvals[] = {ATTN_F32, ATTN_F16, ATTN_BF16};
        int k = word_value(S, st[ST_DTYPE], dtypes, 3, "f32, f16 or bf16");
        if (k >= 0) f->dtype = dvals[k];
    }
    if (st[ST_ABSORB]) {
        static const char *const modes[] = {"auto", "on", "off"};
        static const IrAbsorb mvals[] = {IR_ABSORB_AUTO, IR_ABSORB_ON, IR_ABSORB_OFF};
        int k = word_value(S, st[ST_ABSORB], modes, 3, "auto, on or off");
        if (k >= 0 && !mla)
            fe_error(c, st[ST_ABSORB]->name_loc, "'absorb' needs an 'mla' block");
        else if (k >= 0)
            f->mla.absorb = mvals[k];
    }
    if (mla) { /* the storage of the MLA tensors; its variants run on f32 copies */
        f->mla.dtype = f->dtype;
        f->dtype = ATTN_F32;
    }
    check_precision(S, f, st[ST_COMPUTE], st[ST_KV_DTYPE], mla != NULL);
    if (kv_cache) check_kv_cache(S, kv_cache, f, mla != NULL);
    if (mla_ok) {
        head_dim = f->mla.nope_dim + f->mla.rope_dim;
        v_dim = f->mla.v_dim;
        kv_heads = heads;
        kv_ok = heads_ok;
        dim_ok = true;
    }

    f->scale = dim_ok ? 1.0 / sqrt((double)head_dim) : 1.0;
    if (st[ST_SCALE]) {
        IrValue v;
        if (const_value(S, scope, st[ST_SCALE], IR_TY_FLOAT, &v)) {
            if (!isfinite(v.f))
                fe_error(c, st[ST_SCALE]->expr->start, "scale must be finite, got %g",
                         isnan(v.f) ? NAN : v.f); /* "nan", never "-nan" */
            else
                f->scale = v.f;
        }
    }

    if (heads_ok) f->head_map = fe_check(c, arena_alloc(ir, sizeof(int) * (size_t)heads));
    if (st[ST_KV_HEAD]) {
        Lower L;
        lower_init(&L, S, scope, ir, CTX_HEADMAP, "kv_head", st[ST_KV_HEAD]->loc);
        Val v = lower(&L, st[ST_KV_HEAD]->expr);
        FeLoc at = st[ST_KV_HEAD]->expr->start;
        if (v.e && v.e->type != IR_TY_INT) {
            fe_error(c, at, "kv_head must be an integer, got %s", type_name(v.e->type));
        } else if (v.e && heads_ok && kv_ok) {
            f->head_map_expr = v.e;
            for (int64_t h = 0; h < heads; h++) {
                IrValue r;
                IrEvalStatus es = ir_eval_const(v.e, &h, &r);
                if (es != IR_EVAL_OK) {
                    fe_error(c, at, "integer overflow in kv_head for h = %lld", (long long)h);
                    break;
                }
                if (r.i < 0 || r.i >= kv_heads) {
                    fe_error(c, at, "kv_head maps h = %lld to %lld, outside [0, kv_heads) = [0, %lld)",
                             (long long)h, (long long)r.i, (long long)kv_heads);
                    break;
                }
                f->head_map[h] = (int)r.i;
            }
        }
    } else if (heads_ok && kv_ok) {
        for (int64_t h = 0; h < heads; h++) f->head_map[h] = (int)(h / (heads / kv_heads));
    }

    if (st[ST_MASK]) {
        Lower L;
        lower_init(&L, S, scope, ir, CTX_MASK, "mask", st[ST_MASK]->loc);
        Val v = lower(&L, st[ST_MASK]->expr);
        if (v.e && v.e->type != IR_TY_BOOL)
            fe_error(c, st[ST_MASK]->expr->start,
                     "mask must be bool, got %s (compare it, e.g. 'x != 0')", type_name(v.e->type));
        else if (v.e)
            f->mask = v.e;
    }
    if (st[ST_SCORE]) {
        Lower L;
        lower_init(&L, S, scope, ir, CTX_SCORE, "score", st[ST_SCORE]->loc);
        Val v = lower(&L, st[ST_SCORE]->expr);
        if (v.e && v.e->type == IR_TY_BOOL)
            fe_error(c, st[ST_SCORE]->expr->start, "score must be a number, got bool");
        else if (v.e)
            f->score = to_float(&L, st[ST_SCORE]->expr->start, v).e;
    }
    /* block lets are checked even when unused (errors repeated at uses are merged) */
    for (FeStmt *s = blk->body; s; s = s->next) {
        if (s->kind != FE_S_LET || s->scope != scope) continue;
        Lower L;
        lower_init(&L, S, scope, &c->ast, CTX_CHECK, s->name, s->loc);
        expand_let(&L, s, s->name_loc);
    }

    f->heads = (int)heads;
    f->kv_heads = (int)kv_heads;
    f->qk_dim = (int)head_dim;
    f->v_dim = (int)v_dim;
}

// -D overrides

/* Parses a -D value; on failure *why (if set) says what is wrong beyond "not a value". */
static bool parse_define(const char *v, IrType *t, int64_t *iv, double *fv, const char **why) {
    if (!v || !*v) return false;
    if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
        *t = IR_TY_BOOL;
        *iv = v[0] == 't';
        return true;
    }
    bool digits = false, intlike = true;
    for (const char *s = v; *s; s++) {
        if (*s >= '0' && *s <= '9')
            digits = true;
        else if ((*s == '-' || *s == '+') && (s == v || s[-1] == 'e' || s[-1] == 'E'))
            ;
        else if (*s == '.' || *s == 'e' || *s == 'E')
            intlike = false;
        else
            return false;
        if ((*s == '-' || *s == '+') && s != v) intlike = false;
    }
    if (!digits) return false;
    char *end;
    errno = 0;
    if (intlike) {
        long long x = strtoll(v, &end, 10);
        if (!*end && errno == ERANGE)
            *why = x < 0 ? "integer too small (the smallest is -9223372036854775808)"
                         : "integer too large (the largest is 9223372036854775807)";
        if (*end || errno == ERANGE) return false;
        *t = IR_TY_INT;
        *iv = x;
        return true;
    }
    double x = strtod(v, &end);
    if (*end == '.') { /* a host program's locale: accept the C spelling anyway */
        char buf[128];
        const char *dp = localeconv()->decimal_point;
        size_t k = (size_t)(end - v);
        if (strlen(v) + strlen(dp) >= sizeof buf) return false;
        memcpy(buf, v, k);
        strcpy(buf + k, dp);
        strcat(buf, end + 1);
        x = strtod(buf, &end);
    }
    if (!*end && !isfinite(x)) *why = "float out of range";
    if (*end || !isfinite(x)) return false;
    *t = IR_TY_FLOAT;
    *fv = x;
    return true;
}

/* Gives `s` the value of `def` if it is a param of that name; counts the matches. */
static void define_param(FeStmt *s, const FeDefine *def, const char *name, bool ok, IrType t,
                         int64_t iv, double fv, int *found) {
    if (s->kind != FE_S_PARAM || strcmp(s->name, name) != 0) return;
    ++*found;
    if (!ok) return;
    s->define = def;
    s->ptype = t;
    s->pival = iv;
    s->pfval = fv;
    s->pstate = FE_P_OK;
}

/* Every param of the name, top-level or in any block, takes the -D value; the last -D of a
 * name wins. */
static void apply_defines(Sema *S) {
    FeCtx *c = S->c;
    for (int d = 0; d < c->ndefs; d++) {
        const FeDefine *def = &c->defs[d];
        const char *name = def->name ? def->name : "";
        IrType t = IR_TY_INT;
        int64_t iv = 0;
        double fv = 0;
        const char *why = NULL;
        bool ok = parse_define(def->value, &t, &iv, &fv, &why);
        int found = 0;
        for (FeStmt *it = c->items; it; it = it->next) {
            if (it->kind != FE_S_ATTENTION) {
                define_param(it, def, name, ok, t, iv, fv, &found);
                continue;
            }
            for (FeStmt *s = it->body; s; s = s->next)
                define_param(s, def, name, ok, t, iv, fv, &found);
        }
        if (!found)
            fe_error_cmdline(c, "unknown define '%s' (no param of that name)", name);
        else if (!ok && why)
            fe_error_cmdline(c, "define %s=%s: %s", name, def->value, why);
        else if (!ok)
            fe_error_cmdline(c, "define %s=%s: the value must be an int, a float, true or false", name,
                             def->value ? def->value : "");
    }
}

void fe_sema(FeCtx *c) {
    Sema *S = fe_alloc(c, sizeof *S);
    S->c = c;
    S->global.parent = &S->prelude;
    for (FeStmt *s = c->prelude_items; s; s = s->next) {
        if (s->kind == FE_S_DEF)
            declare_def(S, &S->prelude, s);
        else
            declare(S, &S->prelude, s);
    }
    Map blocks = {0};
    int nblocks = 0;
    for (FeStmt *s = c->items; s; s = s->next) {
        switch (s->kind) {
        case FE_S_LET:
        case FE_S_PARAM: declare(S, &S->global, s); break;
        case FE_S_DEF: declare_def(S, &S->global, s); break;
        case FE_S_ASSIGN:
            if (stmt_index(s->name) >= 0 || is_mla_name(s->name))
                fe_error(c, s->loc, "'%s' must be inside an attention block", s->name);
            else
                fe_error(c, s->loc, "unknown top-level statement '%s' (expected 'attention', "
                                    "'let', 'param' or 'def')", s->name);
            break;
        case FE_S_INPUT: fe_error(c, s->loc, "'input' must be inside an attention block"); break;
        case FE_S_MLA: fe_error(c, s->loc, "'mla' must be inside an attention block"); break;
        case FE_S_ATTENTION: {
            FeStmt *old = map_get(&blocks, s->name);
            if (old)
                fe_error(c, s->name_loc, "duplicate attention block '%s' (first at line %d)",
                         s->name, old->name_loc.line);
            else
                map_put(c, &blocks, s->name, s);
            nblocks++;
            break;
        }
        }
    }
    apply_defines(S);
    for (FeStmt *s = c->items; s; s = s->next)
        if (s->kind == FE_S_PARAM && s->scope == &S->global) eval_param(S, s);
    int nchecked = 0;
    for (FeStmt *s = c->items; s && !c->stop; s = s->next) {
        if (s->kind != FE_S_ATTENTION) continue;
        if (nchecked++ == FE_MAX_BLOCKS) {
            fe_error(c, s->name_loc, "too many attention blocks (at most %d per file)",
                     FE_MAX_BLOCKS);
            break;
        }
        check_block(S, s);
    }
    if (nblocks == 0) {
        FeLoc at = {&c->file, 1, 1, 0};
        fe_error(c, at, "no attention block in this file");
    }
}
