/* ast.c — AST constructors for the grammar actions. Nodes live in the compilation's arena, so
 * whatever error recovery throws away costs nothing. Every constructor tracks the depth of the
 * tree so that no later recursive walk can overflow the C stack. */
#include <string.h>

#include "fe.h"

static int max_depth(FeNode *x, FeNode *y) {
    int d = x ? x->depth : 0;
    if (y && y->depth > d) d = y->depth;
    return d;
}

/* Sets n->depth; the first tree deeper than FE_MAX_NEST ends the parse with one error. */
static void set_depth(FeParse *p, FeNode *n, int child_depth) {
    n->depth = child_depth + 1;
    if (n->depth > FE_MAX_NEST && !p->nest_reported) {
        p->nest_reported = true;
        fe_error(p->c, n->loc, "expression nested too deeply (more than %d levels)", FE_MAX_NEST);
        p->c->stop = true;
    }
}

FeNode *fe_leaf(FeParse *p, FeNodeKind kind, FeSpan at) {
    FeNode *n = fe_alloc(p->c, sizeof *n);
    n->kind = kind;
    n->loc = at.begin;
    n->start = at.begin;
    n->depth = 1;
    return n;
}

FeNode *fe_unary(FeParse *p, int op, FeSpan op_at, FeNode *x) {
    FeNode *n = fe_leaf(p, FE_N_UNARY, op_at);
    n->op = op;
    n->args = x;
    n->nargs = 1;
    set_depth(p, n, x->depth);
    return n;
}

static FeNode *binary(FeParse *p, int op, FeSpan op_at, FeNode *x, FeNode *y);

/* Appends y to the chain t of `op` nodes keeping its depth logarithmic: y joins t's right
 * subtree while that is shallower than the left one (a binary counter), else t and y become
 * the two sides of a new node. The leaves stay in order. */
static FeNode *chain_append(FeParse *p, int op, FeSpan op_at, FeNode *t, FeNode *y) {
    if (t->kind != FE_N_BINARY || t->op != op || t->args->next->depth >= t->args->depth)
        return binary(p, op, op_at, t, y);
    FeNode *l = t->args;
    l->next = chain_append(p, op, op_at, l->next, y);
    set_depth(p, t, max_depth(l, l->next));
    return t;
}

/* A generated mask may list hundreds of cases joined by || (or &&), one level deeper a term
 * as the grammar groups them, past FE_MAX_NEST. Both operators are associative and evaluate
 * their operands left to right however they are grouped, so a chain deeper than FE_CHAIN_DEPTH
 * is regrouped as it is parsed into a tree of logarithmic depth (shorter ones keep their
 * shape, as dump prints them). + and * are not regrouped: float sums round by their order. */
FeNode *fe_binary(FeParse *p, int op, FeSpan op_at, FeNode *x, FeNode *y) {
    if ((op == IR_OR || op == IR_AND) && x->kind == FE_N_BINARY && x->op == op && x->depth >= FE_CHAIN_DEPTH)
        return chain_append(p, op, op_at, x, y);
    return binary(p, op, op_at, x, y);
}

static FeNode *binary(FeParse *p, int op, FeSpan op_at, FeNode *x, FeNode *y) {
    FeNode *n = fe_leaf(p, FE_N_BINARY, op_at);
    n->op = op;
    n->start = x->start;
    n->args = x;
    x->next = y;
    n->nargs = 2;
    set_depth(p, n, max_depth(x, y));
    return n;
}

FeNode *fe_cond(FeParse *p, FeSpan op_at, FeNode *c, FeNode *x, FeNode *y) {
    FeNode *n = fe_leaf(p, FE_N_COND, op_at);
    n->start = c->start;
    n->args = c;
    c->next = x;
    x->next = y;
    n->nargs = 3;
    int d = max_depth(c, x);
    set_depth(p, n, y->depth > d ? y->depth : d);
    return n;
}

static int list_depth(FeNodeList l) {
    int d = 0;
    for (FeNode *a = l.first; a; a = a->next)
        if (a->depth > d) d = a->depth;
    return d;
}

FeNode *fe_call(FeParse *p, const char *name, FeSpan name_at, FeNodeList args) {
    FeNode *n = fe_leaf(p, FE_N_CALL, name_at);
    n->name = name;
    n->args = args.first;
    n->nargs = args.n;
    set_depth(p, n, list_depth(args));
    return n;
}

FeNode *fe_index(FeParse *p, FeNode *base, FeSpan br_at, FeNodeList idx) {
    FeNode *n = fe_leaf(p, FE_N_INDEX, br_at);
    n->loc = base->loc;
    n->start = base->start;
    n->base = base;
    n->args = idx.first;
    n->nargs = idx.n;
    int d = list_depth(idx);
    set_depth(p, n, base->depth > d ? base->depth : d);
    return n;
}

FeNodeList fe_list_add(FeNodeList l, FeNode *n) {
    if (l.last)
        l.last->next = n;
    else
        l.first = n;
    l.last = n;
    l.n++;
    return l;
}

FeStmt *fe_stmt(FeParse *p, FeStmtKind kind, FeSpan at) {
    FeStmt *s = fe_alloc(p->c, sizeof *s);
    s->kind = kind;
    s->loc = at.begin;
    s->name_loc = at.begin;
    s->input = -1;
    return s;
}

FeStmtList fe_stmts_add(FeStmtList l, FeStmt *s) {
    if (!s) return l;
    if (l.last)
        l.last->next = s;
    else
        l.first = s;
    l.last = s;
    return l;
}

void fe_add_item(FeParse *p, FeStmt *s) {
    if (!s) return;
    if (p->last)
        p->last->next = s;
    else
        p->first = s;
    p->last = s;
}

const char *fe_span_text(FeParse *p, FeSpan s, size_t *len) {
    size_t b = s.begin.off, e = s.end.off;
    if (e > p->src->len) e = p->src->len;
    if (b > e) b = e;
    *len = e - b;
    return p->src->text + b;
}
