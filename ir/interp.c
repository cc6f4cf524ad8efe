/* The reference: executes any IR in double precision, one query row at a time, with the
 * plain two-pass softmax (not the online one the kernels use), so it shares no numerics with
 * codegen. Slow on purpose; only tests and `attnc mask`/`bench` (mask counting) use it. */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Wrapping 64-bit arithmetic: specs may overflow, the reference must not be UB. */
static int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static int64_t wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

static int64_t floor_div(int64_t a, int64_t d) {
    if (d <= 0) return 0; /* the frontend guarantees d > 0 */
    int64_t q = a / d;
    if (a % d != 0 && a < 0) q -= 1;
    return q;
}

static int64_t floor_mod(int64_t a, int64_t d) {
    if (d <= 0) return 0;
    int64_t r = a % d;
    return r < 0 ? r + d : r;
}

static double as_float(const IrExpr *e, IrValue v) {
    return e->type == IR_TY_FLOAT ? v.f : (double)v.i;
}

static IrValue eval_call(const IrFunc *f, const IrExpr *e, IrEnv *env) {
    IrValue r = {0};
    IrValue a = ir_eval(f, e->args[0], env);
    IrValue b = e->nargs > 1 ? ir_eval(f, e->args[1], env) : (IrValue){0};
    if (e->type == IR_TY_INT) {
        switch (e->fn) {
        case IR_FN_ABS: r.i = a.i < 0 ? wrap_sub(0, a.i) : a.i; break;
        case IR_FN_MIN: r.i = a.i < b.i ? a.i : b.i; break;
        case IR_FN_MAX: r.i = a.i > b.i ? a.i : b.i; break;
        default: unreachable();
        }
        return r;
    }
    double x = as_float(e->args[0], a);
    double y = e->nargs > 1 ? as_float(e->args[1], b) : 0;
    switch (e->fn) {
    case IR_FN_ABS: r.f = fabs(x); break;
    case IR_FN_MIN: r.f = fmin(x, y); break;
    case IR_FN_MAX: r.f = fmax(x, y); break;
    case IR_FN_EXP: r.f = exp(x); break;
    case IR_FN_EXP2: r.f = exp2(x); break;
    case IR_FN_LOG: r.f = log(x); break;
    case IR_FN_LOG2: r.f = log2(x); break;
    case IR_FN_SQRT: r.f = sqrt(x); break;
    case IR_FN_TANH: r.f = tanh(x); break;
    case IR_FN_ERF: r.f = erf(x); break;
    case IR_FN_SIGMOID: r.f = 1.0 / (1.0 + exp(-x)); break;
    case IR_FN_SIN: r.f = sin(x); break;
    case IR_FN_COS: r.f = cos(x); break;
    case IR_FN_FLOOR: r.f = floor(x); break;
    case IR_FN_CEIL: r.f = ceil(x); break;
    default: unreachable();
    }
    return r;
}

static IrValue eval_load(const IrFunc *f, const IrExpr *e, IrEnv *env) {
    IrValue r = {0};
    const attn_rt_args *a = env->args;
    int in = e->input;
    if (!a || in < 0 || in >= f->ninputs || !a->input[in]) {
        env->index_error = true;
        return r;
    }
    int64_t lin = 0;
    for (int d = 0; d < e->nargs; d++) {
        int64_t idx = ir_eval(f, e->args[d], env).i;
        int64_t dim = a->input_dim[in][d];
        if (idx < 0 || idx >= dim) {
            env->index_error = true;
            return r;
        }
        lin = lin * dim + idx;
    }
    if (f->inputs[in].dtype == ATTN_I32) r.i = ((const int32_t *)a->input[in])[lin];
    else r.f = ((const float *)a->input[in])[lin];
    return r;
}

/* The exact min/max of an input over a range of its last index (the kernels use per-block
 * summaries, a superset: both are sound for pruning). */
static IrValue eval_range(const IrFunc *f, const IrExpr *e, IrEnv *env) {
    bool is_min = e->fn == IR_FN_MIN;
    IrValue none = {.i = is_min ? -IR_RANGE_NONE : IR_RANGE_NONE};
    const attn_rt_args *a = env->args;
    int in = e->input, rank = e->nargs - 1;
    if (!a || !f || in < 0 || in >= f->ninputs || !a->input[in]) return none;
    int64_t row = 0;
    for (int d = 0; d < rank - 1; d++) {
        int64_t idx = ir_eval(f, e->args[d], env).i, dim = a->input_dim[in][d];
        if (idx < 0 || idx >= dim) return none;
        row = row * dim + idx;
    }
    int64_t n = a->input_dim[in][rank - 1];
    int64_t lo = ir_eval(f, e->args[rank - 1], env).i, hi = ir_eval(f, e->args[rank], env).i;
    if (lo < 0 || hi >= n || lo > hi) return none;
    const int32_t *p = (const int32_t *)a->input[in] + row * n;
    int64_t r = p[lo];
    for (int64_t t = lo + 1; t <= hi; t++) r = is_min ? (p[t] < r ? p[t] : r) : (p[t] > r ? p[t] : r);
    return (IrValue){.i = r};
}

IrValue ir_eval(const IrFunc *f, const IrExpr *e, IrEnv *env) {
    IrValue r = {0};
    IrValue x, y;
    switch (e->op) {
    case IR_CONST:
        if (e->type == IR_TY_FLOAT) r.f = e->fval;
        else r.i = e->ival;
        return r;
    case IR_VAR:
        switch ((IrVar)e->var) {
        case IR_V_Q: r.i = env->q; break;
        case IR_V_K: r.i = env->k; break;
        case IR_V_H: r.i = env->h; break;
        case IR_V_B: r.i = env->b; break;
        case IR_V_QLEN: r.i = env->q_len; break;
        case IR_V_KVLEN: r.i = env->kv_len; break;
        case IR_V_SCORE: r.f = env->score; break;
        case IR_V_QMIN: r.i = env->qmin; break;
        case IR_V_QMAX: r.i = env->qmax; break;
        case IR_V_KMIN: r.i = env->kmin; break;
        case IR_V_KMAX: r.i = env->kmax; break;
        }
        return r;
    case IR_INPUT: return eval_load(f, e, env);
    case IR_RANGE: return eval_range(f, e, env);
    case IR_CALL: return eval_call(f, e, env);
    case IR_NOT: r.i = !ir_eval(f, e->args[0], env).i; return r;
    case IR_ITOF: r.f = (double)ir_eval(f, e->args[0], env).i; return r;
    case IR_NEG:
        x = ir_eval(f, e->args[0], env);
        if (e->type == IR_TY_FLOAT) r.f = -x.f;
        else r.i = wrap_sub(0, x.i);
        return r;
    case IR_SELECT:
        return ir_eval(f, e->args[0], env).i ? ir_eval(f, e->args[1], env)
                                              : ir_eval(f, e->args[2], env);
    case IR_AND: r.i = ir_eval(f, e->args[0], env).i && ir_eval(f, e->args[1], env).i; return r;
    case IR_OR: r.i = ir_eval(f, e->args[0], env).i || ir_eval(f, e->args[1], env).i; return r;
    default: break;
    }
    x = ir_eval(f, e->args[0], env);
    y = ir_eval(f, e->args[1], env);
    IrType ot = e->args[0]->type;
    if (ot == IR_TY_FLOAT || e->args[1]->type == IR_TY_FLOAT) {
        double a = as_float(e->args[0], x), b = as_float(e->args[1], y);
        switch (e->op) {
        case IR_ADD: r.f = a + b; break;
        case IR_SUB: r.f = a - b; break;
        case IR_MUL: r.f = a * b; break;
        case IR_DIV: r.f = a / b; break;
        case IR_EQ: r.i = a == b; break;
        case IR_NE: r.i = a != b; break;
        case IR_LT: r.i = a < b; break;
        case IR_LE: r.i = a <= b; break;
        case IR_GT: r.i = a > b; break;
        case IR_GE: r.i = a >= b; break;
        default: unreachable();
        }
        return r;
    }
    switch (e->op) {
    case IR_ADD: r.i = wrap_add(x.i, y.i); break;
    case IR_SUB: r.i = wrap_sub(x.i, y.i); break;
    case IR_MUL: r.i = wrap_mul(x.i, y.i); break;
    case IR_DIV: r.i = floor_div(x.i, y.i); break;
    case IR_MOD: r.i = floor_mod(x.i, y.i); break;
    case IR_EQ: r.i = x.i == y.i; break;
    case IR_NE: r.i = x.i != y.i; break;
    case IR_LT: r.i = x.i < y.i; break;
    case IR_LE: r.i = x.i <= y.i; break;
    case IR_GT: r.i = x.i > y.i; break;
    case IR_GE: r.i = x.i >= y.i; break;
    default: unreachable();
    }
    return r;
}

static double half_to_double(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return h & 0x8000 ? -v : v;
}

static double load_elem(attn_dtype t, const void *base, int64_t i) {
    switch (t) {
    case ATTN_F16: return half_to_double(((const uint16_t *)base)[i]);
    case ATTN_BF16: {
        uint32_t bits = (uint32_t)((const uint16_t *)base)[i] << 16;
        float v;
        memcpy(&v, &bits, 4);
        return v;
    }
    default: return ((const float *)base)[i];
    }
}

double ir_load_elem(attn_dtype t, const void *base, int64_t i) { return load_elem(t, base, i); }

static uint16_t double_to_half(double v) {
    float fv = (float)v;
    uint32_t x;
    memcpy(&x, &fv, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    if (isnan(fv)) return sign | 0x7e00;
    double a = fabs(v);
    if (a >= 65520.0) return sign | 0x7c00;
    if (a < ldexp(1, -25)) return sign;
    int e;
    frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    int exp16 = e - 1 + 15;
    if (exp16 <= 0) return sign | (uint16_t)nearbyint(a * ldexp(1, 24));
    double mant = a / ldexp(1, e - 1) - 1.0; /* [0, 1) */
    int m = (int)nearbyint(mant * 1024);
    if (m == 1024) {
        m = 0;
        exp16++;
    }
    if (exp16 >= 31) return sign | 0x7c00;
    return sign | (uint16_t)(exp16 << 10) | (uint16_t)m;
}

static void store_elem(attn_dtype t, void *base, int64_t i, double v) {
    switch (t) {
    case ATTN_F16: ((uint16_t *)base)[i] = double_to_half(v); break;
    case ATTN_BF16: {
        float fv = (float)v;
        uint32_t bits;
        memcpy(&bits, &fv, 4);
        bits += 0x7fff + ((bits >> 16) & 1); /* round to nearest even */
        ((uint16_t *)base)[i] = (uint16_t)(bits >> 16);
        break;
    }
    default: ((float *)base)[i] = (float)v; break;
    }
}

attn_status ir_interpret(const IrFunc *f, const attn_rt_args *a) {
    int64_t Lk = a->kv_len;
    double *s = malloc(sizeof(double) * (size_t)Lk);
    bool *vis = malloc(sizeof(bool) * (size_t)Lk);
    double *acc = malloc(sizeof(double) * (size_t)(f->v_dim > 0 ? f->v_dim : 1));
    if (!s || !vis || !acc) {
        free(s);
        free(vis);
        free(acc);
        return ATTN_ERR_NOMEM;
    }
    attn_status st = ATTN_OK;
    IrEnv env = {.q_len = a->q_len, .kv_len = Lk, .args = a};
    for (int64_t b = 0; b < a->batch; b++) {
        for (int64_t h = 0; h < f->heads; h++) {
            int64_t kvh = f->head_map ? f->head_map[h] : h / (f->heads / f->kv_heads);
            for (int64_t i = 0; i < a->q_len; i++) {
                env.b = b;
                env.h = h;
                env.q = a->q_offset + i;
                int64_t qo = b * a->q_stride[0] + h * a->q_stride[1] + i * a->q_stride[2];
                double m = -INFINITY;
                for (int64_t j = 0; j < Lk; j++) {
                    env.k = j;
                    int64_t ko = b * a->k_stride[0] + kvh * a->k_stride[1] + j * a->k_stride[2];
                    double dot = 0;
                    for (int d = 0; d < f->qk_dim; d++)
                        dot += load_elem(f->dtype, a->q, qo + d) * load_elem(f->dtype, a->k, ko + d);
                    double sc = dot * f->scale;
                    if (f->score) {
                        env.score = sc;
                        sc = ir_eval(f, f->score, &env).f;
                    }
                    vis[j] = ir_eval(f, f->mask, &env).i && !(isinf(sc) && sc < 0);
                    s[j] = sc;
                    if (vis[j] && sc > m) m = sc;
                }
                if (env.index_error) {
                    st = ATTN_ERR_INDEX;
                    goto done;
                }
                double l = 0;
                for (int d = 0; d < f->v_dim; d++) acc[d] = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    if (!vis[j]) continue;
                    double p = exp(s[j] - m);
                    l += p;
                    int64_t vo = b * a->v_stride[0] + kvh * a->v_stride[1] + j * a->v_stride[2];
                    for (int d = 0; d < f->v_dim; d++) acc[d] += p * load_elem(f->dtype, a->v, vo + d);
                }
                int64_t oo = b * a->o_stride[0] + h * a->o_stride[1] + i * a->o_stride[2];
                for (int d = 0; d < f->v_dim; d++)
                    store_elem(f->dtype, a->o, oo + d, l > 0 ? acc[d] / l : 0.0);
                if (a->lse)
                    a->lse[b * a->lse_stride[0] + h * a->lse_stride[1] + i] =
                        l > 0 ? (float)(m + log(l)) : -INFINITY;
            }
        }
    }
done:
    free(s);
    free(vis);
    free(acc);
    return st;
}
