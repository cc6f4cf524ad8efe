/* The one evaluator of scalar expressions (ir/eval.c), as the frontend, the fold pass and the
 * reference use it: floor division and remainder, constant statuses, and an integer overflow
 * reported by each user instead of wrapping. */
#include <stdint.h>
#include <string.h>

#include "frontend/frontend.h"
#include "passes/passes.h"
#include "check.h"

static IrExpr *cint(Arena *a, int64_t v) { return ir_const_int(a, v); }

static void test_floor(void) {
    for (int64_t a = -60; a <= 60; a++)
        for (int64_t d = 1; d <= 9; d++) {
            int64_t q = ir_floor_div(a, d), r = ir_floor_mod(a, d);
            EXPECT(q * d + r == a && r >= 0 && r < d);
        }
    EXPECT(ir_floor_div(-7, 2) == -4 && ir_floor_mod(-7, 3) == 2);
    EXPECT(ir_floor_div(INT64_MIN, 1) == INT64_MIN && ir_floor_mod(INT64_MIN, 1) == 0);
    EXPECT(ir_floor_div(INT64_MIN, 3) == -3074457345618258603 && ir_floor_mod(INT64_MIN, 3) == 1);
    EXPECT(ir_floor_div(INT64_MAX, 2) == INT64_MAX / 2 && ir_floor_mod(INT64_MAX, 2) == 1);
}

static IrEvalStatus status(IrExpr *e, const int64_t *h, int64_t *v) {
    IrValue r;
    IrEvalStatus st = ir_eval_const(e, h, &r);
    *v = r.i;
    return st;
}

static void test_const(Arena *a) {
    int64_t v, h = 3;
    IrExpr *fa[1] = {cint(a, INT64_MIN)};
    EXPECT(status(ir_binary(a, IR_ADD, cint(a, INT64_MAX), cint(a, 1)), NULL, &v) == IR_EVAL_OVERFLOW);
    EXPECT(status(ir_binary(a, IR_SUB, cint(a, INT64_MIN), cint(a, 1)), NULL, &v) == IR_EVAL_OVERFLOW);
    EXPECT(status(ir_binary(a, IR_MUL, cint(a, (int64_t)1 << 32), cint(a, (int64_t)1 << 31)), NULL, &v) ==
           IR_EVAL_OVERFLOW);
    EXPECT(status(ir_unary(a, IR_NEG, cint(a, INT64_MIN)), NULL, &v) == IR_EVAL_OVERFLOW);
    EXPECT(status(ir_call(a, IR_FN_ABS, 1, fa), NULL, &v) == IR_EVAL_OVERFLOW);
    EXPECT(status(ir_binary(a, IR_MOD, cint(a, 5), cint(a, 0)), NULL, &v) == IR_EVAL_OVERFLOW);
    EXPECT(status(ir_binary(a, IR_ADD, ir_binary(a, IR_DIV, cint(a, -7), cint(a, 2)), cint(a, 10)), NULL, &v) ==
               IR_EVAL_OK && v == 6);
    EXPECT(status(ir_binary(a, IR_MOD, cint(a, -7), cint(a, 3)), NULL, &v) == IR_EVAL_OK && v == 2);
    /* positions are unknown at compile time; h only when given (the head map) */
    IrExpr *hm = ir_binary(a, IR_MUL, ir_var(a, IR_V_H), cint(a, 2));
    EXPECT(status(hm, &h, &v) == IR_EVAL_OK && v == 6);
    EXPECT(status(hm, NULL, &v) == IR_EVAL_NONCONST);
    EXPECT(status(ir_binary(a, IR_LT, ir_var(a, IR_V_K), cint(a, 2)), &h, &v) == IR_EVAL_NONCONST);
    /* a constant is one whose both sides are, even where the left decides at run time */
    EXPECT(status(ir_binary(a, IR_AND, ir_const_bool(a, false), ir_binary(a, IR_LT, ir_var(a, IR_V_Q), cint(a, 1))),
                  NULL, &v) == IR_EVAL_NONCONST);
}

static IrFunc *make_func(IrModule *m, IrExpr *mask) {
    IrFunc *f = ir_func_new(m, "t");
    f->heads = f->kv_heads = 1;
    f->qk_dim = f->v_dim = 4;
    f->scale = 0.5;
    f->head_map = arena_alloc(&m->arena, sizeof(int));
    f->mask = mask;
    return f;
}

/* pass_fold on a hand-built tree (the frontend folds its own constants first) */
static void test_fold(void) {
    IrModule *m = ir_module_new();
    Arena *a = &m->arena;
    StrBuf err;
    sb_init(&err);
    PassCtx ctx = {.vec_width = 8, .opt_level = 3, .err = &err};
    IrFunc *f = make_func(m, ir_binary(a, IR_LT, ir_var(a, IR_V_K),
                                       ir_binary(a, IR_ADD, cint(a, INT64_MAX), cint(a, 1))));
    EXPECT(!pass_fold(f, &ctx));
    EXPECT(strstr(sb_str(&err), "integer overflow in constant expression '+'") != NULL);
    sb_free(&err);
    sb_init(&err);
    ctx.err = &err;
    IrFunc *g = make_func(m, ir_binary(a, IR_LE, ir_var(a, IR_V_K),
                                       ir_binary(a, IR_DIV, cint(a, -9), cint(a, 4))));
    EXPECT(pass_fold(g, &ctx) && g->mask->args[1]->op == IR_CONST && g->mask->args[1]->ival == -3);
    sb_free(&err);
    ir_module_free(m);
}

/* the reference on a mask that overflows at some positions: an error, not a wrapped answer */
static void test_interpret(void) {
    IrModule *m = ir_module_new();
    Arena *a = &m->arena;
    enum { L = 4, D = 4 };
    float q[L * D], k[L * D], v[L * D], o[L * D];
    for (int i = 0; i < L * D; i++) q[i] = k[i] = v[i] = (float)(i % 5) * 0.25f;
    attn_rt_args args = {.q = q, .k = k, .v = v, .o = o, .batch = 1, .q_len = L, .kv_len = L,
                         .q_stride = {L * D, L * D, D}, .k_stride = {L * D, L * D, D},
                         .v_stride = {L * D, L * D, D}, .o_stride = {L * D, L * D, D}};
    IrFunc *ok = make_func(m, ir_binary(a, IR_LE, ir_var(a, IR_V_K), ir_var(a, IR_V_Q)));
    EXPECT(ir_interpret(ok, &args) == ATTN_OK);
    /* q * 2^62 overflows from q = 2 on */
    IrExpr *big = ir_binary(a, IR_MUL, ir_var(a, IR_V_Q), cint(a, (int64_t)1 << 62));
    IrFunc *bad = make_func(m, ir_binary(a, IR_LE, ir_var(a, IR_V_K), big));
    EXPECT(ir_interpret(bad, &args) == ATTN_ERR_OVERFLOW);
    args.q_len = 2; /* rows q = 0, 1 only (q_offset 0): no overflow */
    EXPECT(ir_interpret(bad, &args) == ATTN_OK);
    ir_module_free(m);
}

/* sema, through the frontend: constants fold with the same rules, overflow is a diagnostic */
static void test_frontend(void) {
    static const char ok[] = "param w = -7 / 2 + 10;\n"
                             "attention a { heads = w; head_dim = 8; mask = k >= -7 % 3; }\n";
    StrBuf d;
    sb_init(&d);
    IrModule *m = fe_compile("ok.attn", ok, sizeof ok - 1, NULL, 0, &d);
    EXPECT(m && m->funcs[0]->heads == 6);
    EXPECT(m && m->funcs[0]->mask->args[1]->op == IR_CONST && m->funcs[0]->mask->args[1]->ival == 2);
    if (m) ir_module_free(m);
    static const char bad[] = "param big = 9223372036854775807;\n"
                              "param w = min(big, 9) * big;\n"
                              "attention a { heads = 1; head_dim = 8; mask = k < w; }\n";
    m = fe_compile("bad.attn", bad, sizeof bad - 1, NULL, 0, &d);
    EXPECT(!m && strstr(sb_str(&d), "bad.attn:2:23: error: integer overflow in constant expression '*'"));
    if (m) ir_module_free(m);
    sb_free(&d);
}

int main(void) {
    IrModule *m = ir_module_new();
    test_floor();
    test_const(&m->arena);
    ir_module_free(m);
    test_fold();
    test_interpret();
    test_frontend();
    return check_done("test_eval");
}
