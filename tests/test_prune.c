/* Soundness of the prune pass against brute force: for random masks and random tiles, a tile
 * called empty has no visible pair, a tile called full has no hidden pair, and no visible key
 * lies outside [k_lo, k_hi]. Plus precision checks on the masks of the seed articles. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "passes/passes.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static int64_t rnd(int64_t lo, int64_t hi) { return check_int(&rng_state, lo, hi); } /* inclusive */

static IrExpr *gen_int(Arena *a, int depth);

static IrExpr *gen_bool(Arena *a, int depth) {
    int pick = depth <= 0 ? (int)rnd(0, 1) : (int)rnd(0, 7);
    switch (pick) {
    case 0: case 1: case 2: {
        static const IrExprOp cmp[] = {IR_EQ, IR_NE, IR_LT, IR_LE, IR_GT, IR_GE};
        return ir_binary(a, cmp[rnd(0, 5)], gen_int(a, depth - 1), gen_int(a, depth - 1));
    }
    case 3: return ir_binary(a, IR_AND, gen_bool(a, depth - 1), gen_bool(a, depth - 1));
    case 4: return ir_binary(a, IR_OR, gen_bool(a, depth - 1), gen_bool(a, depth - 1));
    case 5: return ir_unary(a, IR_NOT, gen_bool(a, depth - 1));
    case 6: return ir_binary(a, IR_EQ, gen_bool(a, depth - 1), gen_bool(a, depth - 1));
    default: return ir_select(a, gen_bool(a, depth - 1), gen_bool(a, depth - 1), gen_bool(a, depth - 1));
    }
}

/* an i32 input arr[64] of sorted runs (like document ids) read at q or k */
static int32_t arr[64];

static IrExpr *gen_int(Arena *a, int depth) {
    int pick = depth <= 0 ? (int)rnd(0, 2) : (int)rnd(0, 12);
    IrExpr *args[2];
    switch (pick) {
    case 12:
        args[0] = ir_var(a, rnd(0, 1) ? IR_V_Q : IR_V_K);
        return ir_load(a, 0, IR_TY_INT, 1, args);
    case 0: return ir_var(a, IR_V_Q);
    case 1: return ir_var(a, IR_V_K);
    case 2: return ir_const_int(a, rnd(-20, 20));
    case 3: return ir_binary(a, IR_ADD, gen_int(a, depth - 1), gen_int(a, depth - 1));
    case 4: return ir_binary(a, IR_SUB, gen_int(a, depth - 1), gen_int(a, depth - 1));
    case 5: return ir_unary(a, IR_NEG, gen_int(a, depth - 1));
    case 6: return ir_binary(a, IR_MUL, gen_int(a, depth - 1), ir_const_int(a, rnd(-3, 3)));
    case 7: return ir_binary(a, IR_DIV, gen_int(a, depth - 1), ir_const_int(a, rnd(1, 7)));
    case 8: return ir_binary(a, IR_MOD, gen_int(a, depth - 1), ir_const_int(a, rnd(1, 9)));
    case 9:
        args[0] = gen_int(a, depth - 1);
        return ir_call(a, IR_FN_ABS, 1, args);
    case 10:
        args[0] = gen_int(a, depth - 1);
        args[1] = gen_int(a, depth - 1);
        return ir_call(a, rnd(0, 1) ? IR_FN_MIN : IR_FN_MAX, 2, args);
    default: return ir_select(a, gen_bool(a, depth - 1), gen_int(a, depth - 1), gen_int(a, depth - 1));
    }
}

typedef struct Stats {
    long tiles, empty_said, full_said, empty_true, full_true, failures, run_pairs;
} Stats;

static bool eval_bool(IrFunc *f, const IrExpr *e, IrEnv *env) { return ir_eval(f, e, env).i != 0; }

/* Checks one tile; returns false on unsoundness. */
static bool check_tile(IrFunc *f, int64_t q0, int64_t q1, int64_t k0, int64_t k1, int64_t kv_len,
                       Stats *st) {
    attn_rt_args args = {.input = {arr}, .input_dim = {{64}}};
    IrEnv env = {.qmin = q0, .qmax = q1, .kmin = k0, .kmax = k1, .kv_len = kv_len, .q_len = 64, .args = &args};
    bool may = eval_bool(f, f->prune.may_see, &env);
    bool all = eval_bool(f, f->prune.all_see, &env);
    int64_t lo = ir_eval(f, f->prune.k_lo, &env).i, hi = ir_eval(f, f->prune.k_hi, &env).i;
    bool any_vis = false, any_hid = false, ok = true;
    const IrRuns *r = &f->prune.runs;
    for (int64_t q = q0; q <= q1; q++)
        for (int64_t k = k0; k <= k1; k++) {
            env.q = q;
            env.k = k;
            bool v = eval_bool(f, f->mask, &env);
            if (r->mod) {
                /* the trees speak of the run keys; off them the mask must be false, on them
                 * the reduced mask must equal the mask */
                int64_t kr = ((k % r->mod) + r->mod) % r->mod, qr = ((q % r->mod) + r->mod) % r->mod;
                bool in = r->with_q ? kr == qr : kr >= r->base && kr < r->base + r->width;
                if (!in) {
                    if (v) ok = false;
                    continue;
                }
                if (eval_bool(f, f->prune.mask, &env) != v) ok = false;
                st->run_pairs++;
            }
            any_vis |= v;
            any_hid |= !v;
            if (v && (k < lo || k > hi)) ok = false;
        }
    st->tiles++;
    st->empty_said += !may;
    st->full_said += all;
    st->empty_true += !any_vis;
    st->full_true += !any_hid;
    if ((!may && any_vis) || (all && any_hid)) ok = false;
    if (!ok) {
        StrBuf sb;
        sb_init(&sb);
        ir_print_expr(&sb, f, f->mask);
        fprintf(stderr, "UNSOUND: mask %s tile q[%lld,%lld] k[%lld,%lld]: may %d all %d k in [%lld,%lld]\n",
                sb_str(&sb), (long long)q0, (long long)q1, (long long)k0, (long long)k1, may, all,
                (long long)lo, (long long)hi);
        sb_free(&sb);
        st->failures++;
    }
    return ok;
}

static IrFunc *make_func(IrModule *m, IrExpr *mask) {
    IrFunc *f = ir_func_new(m, "t");
    f->heads = f->kv_heads = 1;
    f->qk_dim = f->v_dim = 4;
    f->head_map = arena_alloc(&m->arena, sizeof(int));
    f->mask = mask;
    f->ninputs = 1;
    f->inputs[0] = (IrInput){.name = "arr", .dtype = ATTN_I32, .rank = 1, .dim_kind = {ATTN_DIM_CONST}, .dim_value = {64}};
    return f;
}

static bool run_prune(IrFunc *f) {
    StrBuf err;
    sb_init(&err);
    PassCtx ctx = {.vec_width = 16, .opt_level = 3, .err = &err};
    bool ok = pass_prune(f, &ctx) && ir_verify_func(f, &err);
    if (!ok) fprintf(stderr, "prune failed: %s\n", sb_str(&err));
    sb_free(&err);
    return ok;
}

/* Precision: on the seed articles' masks the analysis must find the empty and full tiles. */
static void precision(void) {
    IrModule *m = ir_module_new();
    Arena *a = &m->arena;
    IrExpr *q = ir_var(a, IR_V_Q), *k = ir_var(a, IR_V_K);
    IrExpr *causal = ir_binary(a, IR_LE, k, q);
    IrExpr *band = ir_binary(a, IR_LT, ir_binary(a, IR_SUB, q, k), ir_const_int(a, 32));
    IrExpr *sliding = ir_binary(a, IR_AND, causal, band);
    struct {
        const char *name;
        IrExpr *mask;
        int64_t q0, q1, k0, k1;
        bool empty, full;
        int64_t lo, hi; /* expected exact key bounds for the query range */
    } cases[] = {
        {"causal below", causal, 32, 47, 0, 15, false, true, 0, 47},
        {"causal above", causal, 0, 15, 16, 31, true, false, 0, 15},
        {"causal diag", causal, 16, 31, 16, 31, false, false, 0, 31},
        {"sliding far", sliding, 100, 115, 0, 15, true, false, 69, 115},
        {"sliding in", sliding, 100, 115, 84, 85, false, true, 69, 115},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        IrFunc *f = make_func(m, cases[i].mask);
        bool pruned = run_prune(f);
        CHECK(pruned, "prune failed on %s", cases[i].name);
        if (!pruned) continue;
        IrEnv env = {.qmin = cases[i].q0, .qmax = cases[i].q1, .kmin = cases[i].k0,
                     .kmax = cases[i].k1, .kv_len = 1000};
        bool empty = !ir_eval(f, f->prune.may_see, &env).i, full = ir_eval(f, f->prune.all_see, &env).i;
        int64_t lo = ir_eval(f, f->prune.k_lo, &env).i, hi = ir_eval(f, f->prune.k_hi, &env).i;
        CHECK(empty == cases[i].empty && full == cases[i].full && lo == cases[i].lo && hi == cases[i].hi,
              "imprecise %s: empty %d full %d bounds [%lld,%lld]", cases[i].name, empty, full, (long long)lo,
              (long long)hi);
    }
    ir_module_free(m);
}

/* An atom bounding k by q: k OP q+c, q+c OP k, abs(q - k + c) OP w, k / m OP q / m, k OP c; or,
 * one time in three, one the exact-interval claim must not hold for (!=, ||, a k-free test, k % r,
 * a read of k). */
static IrExpr *gen_bound(Arena *a, bool *plain) {
    static const IrExprOp cmp[] = {IR_EQ, IR_LT, IR_LE, IR_GT, IR_GE};
    IrExpr *q = ir_var(a, IR_V_Q), *k = ir_var(a, IR_V_K);
    IrExpr *qc = ir_binary(a, IR_ADD, q, ir_const_int(a, rnd(-6, 6)));
    IrExpr *args[1];
    switch (rnd(0, 8)) {
    case 0: return ir_binary(a, cmp[rnd(0, 4)], k, qc);
    case 1: return ir_binary(a, cmp[rnd(0, 4)], qc, k);
    case 2:
        args[0] = ir_binary(a, IR_SUB, qc, k);
        return ir_binary(a, rnd(0, 1) ? IR_LT : IR_LE, ir_call(a, IR_FN_ABS, 1, args), ir_const_int(a, rnd(0, 9)));
    case 3: {
        IrExpr *m = ir_const_int(a, rnd(1, 8));
        return ir_binary(a, cmp[rnd(0, 4)], ir_binary(a, IR_DIV, k, m), ir_binary(a, IR_DIV, q, m));
    }
    case 4: return ir_binary(a, cmp[rnd(0, 4)], k, ir_binary(a, IR_SUB, ir_binary(a, IR_MUL, q, ir_const_int(a, 1)), ir_binary(a, IR_MOD, q, ir_const_int(a, rnd(1, 8)))));
    case 5: return ir_binary(a, cmp[rnd(0, 4)], k, ir_const_int(a, rnd(-3, 20)));
    default:
        *plain = false;
        switch (rnd(0, 4)) {
        case 0: return ir_binary(a, IR_NE, k, qc);
        case 1: return ir_binary(a, IR_OR, ir_binary(a, IR_LT, k, qc), ir_binary(a, IR_GT, k, ir_binary(a, IR_ADD, qc, ir_const_int(a, 3))));
        case 2: return ir_binary(a, IR_GE, q, ir_const_int(a, rnd(-5, 30)));
        case 3: return ir_binary(a, IR_NE, ir_binary(a, IR_MOD, k, ir_const_int(a, rnd(2, 5))), ir_const_int(a, 0));
        default:
            args[0] = k;
            return ir_binary(a, IR_LE, ir_load(a, 0, IR_TY_INT, 1, args), ir_binary(a, IR_DIV, q, ir_const_int(a, 9)));
        }
    }
}

/* The exact-interval claim (prune.exact: a row sees exactly [k_lo, k_hi] at QMIN = QMAX = q,
 * which lets the kernels build a row's lane bits from two numbers) against brute force; and it
 * must not be made for masks with holes. */
static void exact_tests(void) {
    int exact = 0, plain_masks = 0, bands = 0, stairs = 0;
    for (int iter = 0; iter < 2000; iter++) {
        IrModule *m = ir_module_new();
        Arena *a = &m->arena;
        bool plain = true;
        IrExpr *mask = gen_bound(a, &plain);
        for (int n = (int)rnd(0, 2); n > 0; n--) mask = ir_binary(a, IR_AND, mask, gen_bound(a, &plain));
        IrFunc *f = make_func(m, mask);
        bool pruned = run_prune(f);
        CHECK(pruned, "prune failed on exact-interval mask %d", iter);
        if (!pruned) {
            ir_module_free(m);
            continue;
        }
        plain_masks += plain;
        exact += f->prune.exact;
        attn_rt_args args = {.input = {arr}, .input_dim = {{64}}};
        bool wrong = false;
        /* and a band claim (ir_prune_band: exactly the w keys ending hi before q) at every row */
        int64_t bhi = 0, bw = ir_prune_band(f, &bhi);
        bands += bw > 0;
        /* and a staircase claim (ir_prune_tri: exactly the keys from tlo to thi before q) */
        int64_t tlo = 0, thi = 0;
        bool tri = ir_prune_tri(f, &tlo, &thi);
        stairs += tri;
        for (int64_t q = -5; q < 50 && f->prune.exact && !wrong; q++) {
            IrEnv env = {.qmin = q, .qmax = q, .kv_len = 60, .q_len = 64, .args = &args, .q = q};
            int64_t lo = ir_eval(f, f->prune.k_lo, &env).i, hi = ir_eval(f, f->prune.k_hi, &env).i;
            for (int64_t k = 0; k < 60; k++) {
                env.k = k;
                bool seen = eval_bool(f, f->mask, &env);
                wrong |= seen != (k >= lo && k <= hi);
                wrong |= bw > 0 && seen != (k >= q - bhi - bw + 1 && k <= q - bhi);
                wrong |= tri && seen != (k >= tlo && k <= q - thi);
            }
        }
        /* every mask of the plain forms is an interval, the others are claimed to be none */
        StrBuf sb;
        sb_init(&sb);
        ir_print_expr(&sb, f, f->mask);
        CHECK(!wrong && f->prune.exact == plain, "exact: mask %s: claimed %d, plain %d, %s", sb_str(&sb),
              f->prune.exact, plain, wrong ? "rows differ from [k_lo, k_hi]" : "claim");
        sb_free(&sb);
        ir_module_free(m);
    }
    printf("exact intervals: %d of 2000 masks claimed (%d of the plain forms), %d of them bands, %d staircases\n",
           exact, plain_masks, bands, stairs);
    /* bounds whose constants overflow when added up are no band (and no undefined behaviour) */
    {
        IrModule *m = ir_module_new();
        Arena *a = &m->arena;
        IrExpr *q = ir_var(a, IR_V_Q), *k = ir_var(a, IR_V_K);
        IrExpr *lo = ir_binary(a, IR_GE, k, ir_binary(a, IR_SUB, q, ir_const_int(a, INT64_MAX)));
        IrExpr *hi = ir_binary(a, IR_LE, k, ir_binary(a, IR_ADD, q, ir_const_int(a, INT64_MAX)));
        IrFunc *f = make_func(m, ir_binary(a, IR_AND, lo, hi));
        int64_t bhi = 0;
        CHECK(run_prune(f) && ir_prune_band(f, &bhi) == 0, "a band claimed for overflowing bounds");
        ir_module_free(m);
    }
    CHECK(exact > 0 && bands > 0 && stairs > 0, "the generator must reach exact intervals, bands and staircases");
}

int main(void) {
    for (int i = 0; i < 64; i++) arr[i] = i / 9 + (i > 40 ? 3 : 0);
    Stats st = {0};
    for (int iter = 0; iter < 3000; iter++) {
        IrModule *m = ir_module_new();
        Arena *a = &m->arena;
        IrExpr *mask = gen_bool(a, (int)rnd(1, 4));
        if (mask && rnd(0, 3) == 0) {
            /* a residue conjunct: k = q (mod r) or k % r OP c, the forms of the run rewriting */
            IrExpr *rr = ir_const_int(a, rnd(2, 9));
            IrExpr *res = rnd(0, 1)
                ? ir_binary(a, IR_EQ, ir_binary(a, IR_MOD, ir_binary(a, IR_SUB, ir_var(a, IR_V_Q), ir_var(a, IR_V_K)), rr), ir_const_int(a, 0))
                : ir_binary(a, (IrExprOp)rnd(IR_EQ, IR_GE), ir_binary(a, IR_MOD, ir_var(a, IR_V_K), rr), ir_const_int(a, rnd(-1, 9)));
            mask = rnd(0, 1) ? ir_binary(a, IR_AND, mask, res) : ir_binary(a, IR_AND, res, mask);
        }
        IrFunc *f = make_func(m, mask);
        bool pruned = f->mask && run_prune(f);
        CHECK(pruned, "prune failed on random mask %d", iter);
        if (!pruned) {
            ir_module_free(m);
            continue;
        }
        bool ok = true;
        for (int t = 0; t < 20; t++) {
            int64_t q0 = rnd(-10, 50), k0 = rnd(0, 40);
            ok &= check_tile(f, q0, q0 + rnd(0, 12), k0, k0 + rnd(0, 12), 60, &st);
        }
        CHECK(ok, "random mask %d: unsound (above)", iter);
        ir_module_free(m);
    }
    printf("tiles %ld: empty said %ld (true %ld), full said %ld (true %ld); pairs on residue runs %ld\n",
           st.tiles, st.empty_said, st.empty_true, st.full_said, st.full_true, st.run_pairs);
    /* the generator must reach the residue-run rewriting, or the check above proves nothing */
    CHECK(st.run_pairs > 0, "no random mask had residue runs");
    precision();
    exact_tests();
    return check_done("test_prune");
}
