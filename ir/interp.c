/* The reference: executes any IR in double precision, one query row at a time, with the
 * plain two-pass softmax (not the online one the kernels use), so it shares no numerics with
 * codegen. Slow on purpose; only tests use it. Expressions go through ir_eval (eval.c). */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
                if (env.index_error || env.overflow) {
                    st = env.index_error ? ATTN_ERR_INDEX : ATTN_ERR_OVERFLOW;
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
