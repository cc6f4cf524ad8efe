#include "ir.h"

#include <stdlib.h>
#include <string.h>

static const char *const op_names[] = {
#define X(name, text, arity) text,
    IR_EXPR_OPS(X)
#undef X
};

static const struct {
    const char *name; /* as written in specs */
    int arity;        /* number of arguments */
} fn_info[] = {
#define X(name, text, arity, int_ok) {text, arity},
    IR_FNS(X)
#undef X
};

static const char *const tensor_op_names[] = {
#define X(name, text) text,
    IR_TENSOR_OPS(X)
#undef X
};

static const char *const var_names[] = {"q",     "k",     "h",        "b",        "q_len", "kv_len",
                                         "score", "q_min", "q_max",    "k_min",    "k_max"};

const char *ir_op_name(IrExprOp op) { return op < IR_EXPR_OP_COUNT ? op_names[op] : "?"; }
const char *ir_fn_name(IrFn fn) { return fn < IR_FN_COUNT ? fn_info[fn].name : "?"; }
int ir_fn_arity(IrFn fn) { return fn < IR_FN_COUNT ? fn_info[fn].arity : 0; }
const char *ir_var_name(IrVar v) { return v <= IR_V_KMAX ? var_names[v] : "?"; }
const char *ir_tensor_op_name(IrOpKind k) {
    return k < IR_OP_KIND_COUNT ? tensor_op_names[k] : "?";
}

IrModule *ir_module_new(void) {
    IrModule *m = calloc(1, sizeof *m);
    if (m) arena_init(&m->arena);
    return m;
}

void ir_module_free(IrModule *m) {
    if (!m) return;
    arena_free(&m->arena);
    free(m);
}

/* The unfused graph every spec starts as: q.k^T, scale, [score mod], mask, softmax, p.v. */
static void ir_default_graph(IrFunc *f) {
    int next = 3; /* 0..2 are q, k, v */
    f->nops = 0;
    IrOpKind chain[] = {IR_OP_QK, IR_OP_SCALE, IR_OP_SCORE_MOD, IR_OP_MASK, IR_OP_SOFTMAX, IR_OP_PV};
    int prev = -1;
    for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++) {
        IrOp *op = &f->ops[f->nops++];
        op->kind = chain[i];
        op->result = next++;
        op->operand[0] = op->operand[1] = op->operand[2] = -1;
        switch (chain[i]) {
        case IR_OP_QK: op->operand[0] = 0; op->operand[1] = 1; break;
        case IR_OP_PV: op->operand[0] = prev; op->operand[1] = 2; break;
        default: op->operand[0] = prev; break;
        }
        prev = op->result;
    }
    f->nvalues = next;
    f->output = prev;
}

IrFunc *ir_func_new(IrModule *m, const char *name) {
    IrFunc *f = arena_alloc(&m->arena, sizeof *f);
    IrFunc **funcs = arena_alloc(&m->arena, sizeof(IrFunc *) * (size_t)(m->nfuncs + 1));
    if (!f || !funcs) return NULL;
    if (m->nfuncs) memcpy(funcs, m->funcs, sizeof(IrFunc *) * (size_t)m->nfuncs);
    funcs[m->nfuncs++] = f;
    m->funcs = funcs;
    f->name = arena_strdup(&m->arena, name);
    f->arena = &m->arena;
    f->dtype = ATTN_F32;
    f->kv_dtype = ATTN_F32;
    f->mask = ir_const_bool(&m->arena, true);
    ir_default_graph(f);
    return f;
}

IrFunc *ir_module_find(IrModule *m, const char *name) {
    for (int i = 0; i < m->nfuncs; i++)
        if (strcmp(m->funcs[i]->name, name) == 0) return m->funcs[i];
    return NULL;
}

static IrExpr *new_expr(Arena *a, IrExprOp op, IrType type) {
    IrExpr *e = arena_alloc(a, sizeof *e);
    if (!e) return NULL;
    e->op = op;
    e->type = type;
    return e;
}

IrExpr *ir_const_int(Arena *a, int64_t v) {
    IrExpr *e = new_expr(a, IR_CONST, IR_TY_INT);
    if (e) e->ival = v;
    return e;
}

IrExpr *ir_const_float(Arena *a, double v) {
    IrExpr *e = new_expr(a, IR_CONST, IR_TY_FLOAT);
    if (e) e->fval = v;
    return e;
}

IrExpr *ir_const_bool(Arena *a, bool v) {
    IrExpr *e = new_expr(a, IR_CONST, IR_TY_BOOL);
    if (e) e->ival = v;
    return e;
}

IrExpr *ir_var(Arena *a, IrVar v) {
    IrExpr *e = new_expr(a, IR_VAR, v == IR_V_SCORE ? IR_TY_FLOAT : IR_TY_INT);
    if (e) e->var = v;
    return e;
}

IrExpr *ir_unary(Arena *a, IrExprOp op, IrExpr *x) {
    if (!x) return NULL;
    IrType t = op == IR_NOT ? IR_TY_BOOL : op == IR_ITOF ? IR_TY_FLOAT : x->type;
    IrExpr *e = new_expr(a, op, t);
    if (!e) return NULL;
    e->nargs = 1;
    e->args[0] = x;
    return e;
}

IrExpr *ir_binary(Arena *a, IrExprOp op, IrExpr *x, IrExpr *y) {
    if (!x || !y) return NULL;
    IrType t;
    switch (op) {
    case IR_EQ: case IR_NE: case IR_LT: case IR_LE: case IR_GT: case IR_GE: case IR_AND:
    case IR_OR:
        t = IR_TY_BOOL;
        break;
    default:
        t = x->type == IR_TY_FLOAT || y->type == IR_TY_FLOAT ? IR_TY_FLOAT : x->type;
        break;
    }
    IrExpr *e = new_expr(a, op, t);
    if (!e) return NULL;
    e->nargs = 2;
    e->args[0] = x;
    e->args[1] = y;
    return e;
}

IrExpr *ir_select(Arena *a, IrExpr *c, IrExpr *x, IrExpr *y) {
    if (!c || !x || !y) return NULL;
    IrExpr *e = new_expr(a, IR_SELECT, x->type);
    if (!e) return NULL;
    e->nargs = 3;
    e->args[0] = c;
    e->args[1] = x;
    e->args[2] = y;
    return e;
}

IrExpr *ir_call(Arena *a, IrFn fn, int nargs, IrExpr **args) {
    IrType t = IR_TY_FLOAT;
    if (fn == IR_FN_ABS || fn == IR_FN_MIN || fn == IR_FN_MAX) {
        t = IR_TY_INT;
        for (int i = 0; i < nargs; i++)
            if (args[i] && args[i]->type == IR_TY_FLOAT) t = IR_TY_FLOAT;
    }
    IrExpr *e = new_expr(a, IR_CALL, t);
    if (!e) return NULL;
    e->fn = fn;
    e->nargs = nargs;
    for (int i = 0; i < nargs && i < 4; i++) {
        if (!args[i]) return NULL;
        e->args[i] = args[i];
    }
    return e;
}

IrExpr *ir_load(Arena *a, int input, IrType type, int nargs, IrExpr **idx) {
    IrExpr *e = new_expr(a, IR_INPUT, type);
    if (!e) return NULL;
    e->input = input;
    e->nargs = nargs;
    for (int i = 0; i < nargs && i < 5; i++) {
        if (!idx[i]) return NULL;
        e->args[i] = idx[i];
    }
    return e;
}

IrExpr *ir_range(Arena *a, IrFn fn, int input, int rank, IrExpr **idx, IrExpr *lo, IrExpr *hi) {
    if (rank < 1 || rank > 4 || !lo || !hi) return NULL;
    IrExpr *e = new_expr(a, IR_RANGE, IR_TY_INT);
    if (!e) return NULL;
    e->fn = fn;
    e->input = input;
    e->nargs = rank + 1;
    for (int i = 0; i < rank - 1; i++) {
        if (!idx[i]) return NULL;
        e->args[i] = idx[i];
    }
    e->args[rank - 1] = lo;
    e->args[rank] = hi;
    return e;
}

bool ir_expr_uses_var(const IrExpr *e, IrVar v) {
    if (!e) return false;
    if (e->op == IR_VAR && e->var == (int)v) return true;
    for (int i = 0; i < e->nargs; i++)
        if (ir_expr_uses_var(e->args[i], v)) return true;
    return false;
}

bool ir_expr_equal(const IrExpr *a, const IrExpr *b) {
    if (a == b) return true;
    if (!a || !b || a->op != b->op || a->type != b->type || a->nargs != b->nargs) return false;
    switch (a->op) {
    case IR_CONST:
        if (a->type == IR_TY_FLOAT ? a->fval != b->fval : a->ival != b->ival) return false;
        break;
    case IR_VAR: if (a->var != b->var) return false; break;
    case IR_CALL: if (a->fn != b->fn) return false; break;
    case IR_INPUT: if (a->input != b->input) return false; break;
    case IR_RANGE: if (a->input != b->input || a->fn != b->fn) return false; break;
    default: break;
    }
    for (int i = 0; i < a->nargs; i++)
        if (!ir_expr_equal(a->args[i], b->args[i])) return false;
    return true;
}

int ir_head_kv(const IrFunc *f, int h) {
    int group = f->kv_heads > 0 ? f->heads / f->kv_heads : 1;
    if (group < 1) group = 1;
    return f->head_map ? f->head_map[h] : h / group;
}

const IrPlan *ir_plan(const IrFunc *f, IrRole role) {
    for (int i = 0; i < f->nplans; i++)
        if (f->plans[i].role == role) return &f->plans[i];
    return NULL;
}

int ir_group_size(const IrFunc *f) {
    const IrPlan *p = ir_plan(f, IR_ROLE_GROUP);
    return p ? p->group : 0;
}

const char *ir_template_name(IrTemplate t) {
    static const char *const names[] = {
#define X(name, text) text,
        IR_TEMPLATES(X)
#undef X
    };
    return t >= 0 && t < IR_T_COUNT ? names[t] : "?";
}

const char *ir_role_name(IrRole r) { return r == IR_ROLE_GROUP ? "group" : r == IR_ROLE_GRAD ? "grad" : "tile"; }

IrFunc *ir_variant(const IrFunc *f, IrVariantKind kind, int i) {
    for (int j = 0; j < f->nvariants; j++)
        if (f->variants[j].kind == kind && i-- == 0) return f->variants[j].f;
    return NULL;
}

int ir_variant_count(const IrFunc *f, IrVariantKind kind) {
    int n = 0;
    for (int j = 0; j < f->nvariants; j++) n += f->variants[j].kind == kind;
    return n;
}

bool ir_variant_add(IrFunc *f, IrVariantKind kind, IrFunc *g) {
    if (f->nvariants >= IR_MAX_VARIANTS) return false;
    f->variants[f->nvariants++] = (IrVariant){kind, g};
    return true;
}

void ir_variant_drop(IrFunc *f, IrVariantKind kind) {
    int n = 0;
    for (int j = 0; j < f->nvariants; j++)
        if (f->variants[j].kind != kind) f->variants[n++] = f->variants[j];
    f->nvariants = n;
}
