/* The MLA backward (attn_run_mla_backward) against a double-precision backward written here
 * from the definition (K and V up-projected per head), itself checked against central finite
 * differences of the double forward: ragged shapes, masks, decode and prefill, q_offset, rows
 * that see no key, strided gradients; bitwise the same on 1, 2 and 3 threads; bad calls. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"

typedef struct Dims {
    int H, R, rope, nope, dv;
} Dims;
typedef bool (*Mask)(int64_t q, int64_t k);
static bool m_causal(int64_t q, int64_t k) { return k <= q; }
static bool m_sliding(int64_t q, int64_t k) { return k <= q && q - k < 5; }

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* The tensors of one case, in f32 for the kernel and read in double by the reference. */
typedef struct Case {
    Dims d;
    Mask mask;
    int64_t B, Lq, Lk, qoff;
    float *qn, *qr, *ckv, *kr, *wuk, *wuv, *dout;
} Case;

#define NT 7 /* qn qr ckv kr wuk wuv dout */
static size_t case_size(const Case *c, int t) {
    const Dims *d = &c->d;
    int64_t n[NT] = {c->B * d->H * c->Lq * d->nope, c->B * d->H * c->Lq * d->rope, c->B * c->Lk * d->R,
                     c->B * c->Lk * d->rope,        (int64_t)d->H * d->R * d->nope,  (int64_t)d->H * d->R * d->dv,
                     c->B * d->H * c->Lq * d->dv};
    return (size_t)n[t];
}
static float **case_tensor(Case *c, int t) {
    float **p[NT] = {&c->qn, &c->qr, &c->ckv, &c->kr, &c->wuk, &c->wuv, &c->dout};
    return p[t];
}

/* Gradients in double, laid out as the tensors they differentiate. */
typedef struct Grads {
    double *g[6]; /* dq_nope dq_rope dc_kv dk_rope dw_uk dw_uv */
} Grads;

/* The forward in double: the loss sum(dout . o) (its gradient in o is dout); with `gr`, the
 * backward of that loss too. */
static double reference(const Case *c, Grads *gr) {
    const Dims *d = &c->d;
    int W = d->nope + d->rope;
    double scale = 1.0 / sqrt((double)W), loss = 0;
    double *K = malloc(sizeof(double) * (size_t)(c->Lk * W)), *V = malloc(sizeof(double) * (size_t)(c->Lk * d->dv));
    double *dK = malloc(sizeof(double) * (size_t)(c->Lk * W)), *dV = malloc(sizeof(double) * (size_t)(c->Lk * d->dv));
    double *P = malloc(sizeof(double) * (size_t)(c->Lk + 1)), *dP = malloc(sizeof(double) * (size_t)(c->Lk + 1));
    double *q = malloc(sizeof(double) * (size_t)W), *o = malloc(sizeof(double) * (size_t)d->dv);
    REQUIRE(K && V && dK && dV && P && dP && q && o, "out of memory");
    if (gr)
        for (int t = 0; t < 6; t++) memset(gr->g[t], 0, sizeof(double) * case_size(c, t));
    for (int64_t b = 0; b < c->B; b++)
        for (int h = 0; h < d->H; h++) {
            const float *ckv = c->ckv + b * c->Lk * d->R, *wk = c->wuk + (int64_t)h * d->R * d->nope,
                        *wv = c->wuv + (int64_t)h * d->R * d->dv;
            for (int64_t j = 0; j < c->Lk; j++) {
                for (int n = 0; n < d->nope; n++) {
                    double s = 0;
                    for (int r = 0; r < d->R; r++) s += (double)ckv[j * d->R + r] * wk[r * d->nope + n];
                    K[j * W + n] = s;
                }
                for (int n = 0; n < d->rope; n++) K[j * W + d->nope + n] = c->kr[(b * c->Lk + j) * d->rope + n];
                for (int e = 0; e < d->dv; e++) {
                    double s = 0;
                    for (int r = 0; r < d->R; r++) s += (double)ckv[j * d->R + r] * wv[r * d->dv + e];
                    V[j * d->dv + e] = s;
                }
            }
            memset(dK, 0, sizeof(double) * (size_t)(c->Lk * W));
            memset(dV, 0, sizeof(double) * (size_t)(c->Lk * d->dv));
            for (int64_t i = 0; i < c->Lq; i++) {
                int64_t row = (b * d->H + h) * c->Lq + i;
                for (int n = 0; n < d->nope; n++) q[n] = c->qn[row * d->nope + n];
                for (int n = 0; n < d->rope; n++) q[d->nope + n] = c->qr[row * d->rope + n];
                double mx = -INFINITY;
                for (int64_t j = 0; j < c->Lk; j++) {
                    P[j] = -INFINITY;
                    if (!c->mask(c->qoff + i, j)) continue;
                    double s = 0;
                    for (int n = 0; n < W; n++) s += q[n] * K[j * W + n];
                    P[j] = scale * s;
                    if (P[j] > mx) mx = P[j];
                }
                if (mx == -INFINITY) continue; /* a row that sees no key: o = 0, no gradient */
                double sum = 0;
                for (int64_t j = 0; j < c->Lk; j++) sum += P[j] = P[j] == -INFINITY ? 0 : exp(P[j] - mx);
                const float *g = c->dout + row * d->dv;
                for (int e = 0; e < d->dv; e++) o[e] = 0;
                for (int64_t j = 0; j < c->Lk; j++) {
                    P[j] /= sum;
                    for (int e = 0; e < d->dv; e++) o[e] += P[j] * V[j * d->dv + e];
                }
                double D = 0;
                for (int e = 0; e < d->dv; e++) D += o[e] * g[e];
                loss += D;
                if (!gr) continue;
                for (int64_t j = 0; j < c->Lk; j++) {
                    if (P[j] == 0) continue;
                    double dp = 0;
                    for (int e = 0; e < d->dv; e++) dp += g[e] * V[j * d->dv + e], dV[j * d->dv + e] += P[j] * g[e];
                    double ds = P[j] * (dp - D) * scale;
                    for (int n = 0; n < W; n++) {
                        dK[j * W + n] += ds * q[n];
                        double dq = ds * K[j * W + n];
                        if (n < d->nope) gr->g[0][row * d->nope + n] += dq;
                        else gr->g[1][row * d->rope + n - d->nope] += dq;
                    }
                }
            }
            if (!gr) continue;
            for (int64_t j = 0; j < c->Lk; j++) {
                for (int n = 0; n < d->rope; n++) gr->g[3][(b * c->Lk + j) * d->rope + n] += dK[j * W + d->nope + n];
                for (int r = 0; r < d->R; r++) {
                    double s = 0, x = ckv[j * d->R + r];
                    for (int n = 0; n < d->nope; n++) {
                        s += dK[j * W + n] * wk[r * d->nope + n];
                        gr->g[4][((int64_t)h * d->R + r) * d->nope + n] += x * dK[j * W + n];
                    }
                    for (int e = 0; e < d->dv; e++) {
                        s += dV[j * d->dv + e] * wv[r * d->dv + e];
                        gr->g[5][((int64_t)h * d->R + r) * d->dv + e] += x * dV[j * d->dv + e];
                    }
                    gr->g[2][(b * c->Lk + j) * d->R + r] += s;
                }
            }
        }
    free(K), free(V), free(dK), free(dV), free(P), free(dP), free(q), free(o);
    return loss;
}

static const char *const gnames[6] = {"dq_nope", "dq_rope", "dc_kv", "dk_rope", "dw_uk", "dw_uv"};

/* The reference backward agrees with central differences of the reference forward at a few
 * elements of every tensor (a check of the reference itself). */
static void check_reference_fd(Case *c, const Grads *gr) {
    for (int t = 0; t < 6; t++) {
        float *x = *case_tensor(c, t);
        size_t n = case_size(c, t);
        for (int s = 0; s < 3 && n; s++) {
            size_t i = (size_t)check_int(&rng, 0, (int64_t)n - 1);
            float x0 = x[i], h = 1e-2f;
            x[i] = x0 + h;
            double lp = reference(c, NULL);
            x[i] = x0 - h;
            double lm = reference(c, NULL);
            x[i] = x0;
            double fd = (lp - lm) / (2.0 * (double)h), g = gr->g[t][i];
            CHECK(fabs(fd - g) <= 1e-3 + 1e-3 * fabs(g), "reference %s[%zu]: %g, finite differences %g", gnames[t], i, g,
                  fd);
        }
    }
}

/* Runs the kernel's forward and backward; the six gradients into f32 buffers. lse_null: the
 * backward gets no lse (an error). */
static attn_status run(attn_kernel *k, Case *c, int threads, float *const *out, int64_t pad, attn_error *err) {
    const Dims *d = &c->d;
    size_t no = (size_t)(c->B * d->H * c->Lq * d->dv), nl = (size_t)(c->B * d->H * c->Lq);
    float *o = malloc(sizeof(float) * (no + 1)), *lse = malloc(sizeof(float) * (nl + 1));
    REQUIRE(o && lse, "out of memory");
    attn_mla_call call = {
        .q_nope = {c->qn, 4, {c->B, d->H, c->Lq, d->nope}, {0}},
        .q_rope = {c->qr, 4, {c->B, d->H, c->Lq, d->rope}, {0}},
        .c_kv = {c->ckv, 3, {c->B, c->Lk, d->R}, {0}},
        .k_rope = {c->kr, 3, {c->B, c->Lk, d->rope}, {0}},
        .w_uk = {c->wuk, 3, {d->H, d->R, d->nope}, {0}},
        .w_uv = {c->wuv, 3, {d->H, d->R, d->dv}, {0}},
        .o = {o, 4, {c->B, d->H, c->Lq, d->dv}, {0}},
        .lse = {lse, 3, {c->B, d->H, c->Lq}, {0}},
        .q_offset = c->qoff,
        .q_offset_set = 1,
        .threads = threads,
    };
    attn_status st = attn_run_mla(k, &call, NULL, err);
    if (st == ATTN_OK) {
        /* dc_kv with `pad` floats after each row: a strided gradient */
        attn_mla_grad_call g = {
            .dout = {c->dout, 4, {c->B, d->H, c->Lq, d->dv}, {0}},
            .dq_nope = {out[0], 4, {c->B, d->H, c->Lq, d->nope}, {0}},
            .dq_rope = {out[1], 4, {c->B, d->H, c->Lq, d->rope}, {0}},
            .dc_kv = {out[2], 3, {c->B, c->Lk, d->R}, {c->Lk * (d->R + pad), d->R + pad, 1}},
            .dk_rope = {out[3], 3, {c->B, c->Lk, d->rope}, {0}},
            .dw_uk = {out[4], 3, {d->H, d->R, d->nope}, {0}},
            .dw_uv = {out[5], 3, {d->H, d->R, d->dv}, {0}},
        };
        st = attn_run_mla_backward(k, &call, &g, err);
    }
    free(o), free(lse);
    return st;
}

static attn_kernel *compile(Dims d, const char *mask, const char *absorb) {
    char text[512];
    snprintf(text, sizeof text,
             "attention mla_grad { heads = %d; mla { kv_rank = %d; rope_dim = %d; nope_dim = %d; v_dim = %d; } "
             "mask = %s; absorb = %s; }",
             d.H, d.R, d.rope, d.nope, d.dv, mask, absorb);
    attn_kernel *k = NULL;
    char *diags = NULL;
    attn_error err;
    attn_status st = attn_compile("mla_grad.attn", text, NULL, &k, &diags, &err);
    CHECK(st == ATTN_OK, "compile failed: %s\n%s", err.message, diags ? diags : "");
    attn_free(diags);
    return k;
}

static void case_init(Case *c, Dims d, Mask mask, int64_t B, int64_t Lq, int64_t Lk, int64_t qoff) {
    *c = (Case){.d = d, .mask = mask, .B = B, .Lq = Lq, .Lk = Lk, .qoff = qoff};
    for (int t = 0; t < NT; t++) {
        size_t n = case_size(c, t);
        float *p = malloc(sizeof(float) * (n + 1));
        REQUIRE(p, "out of memory");
        check_fill(p, n, &rng, CHECK_UNIFORM, t == 4 || t == 5 ? 0.3 : 1.0);
        *case_tensor(c, t) = p;
    }
}

static void case_free(Case *c) {
    for (int t = 0; t < NT; t++) free(*case_tensor(c, t));
}

/* One case: the kernel's gradients within 1e-3 of each gradient's largest magnitude of the
 * reference's, and bitwise the same on 1, 2 and 3 threads. */
static void check_case(attn_kernel *k, Dims d, Mask mask, int64_t B, int64_t Lq, int64_t Lk, int64_t qoff, bool fd) {
    Case c;
    case_init(&c, d, mask, B, Lq, Lk, qoff);
    Grads gr;
    for (int t = 0; t < 6; t++) REQUIRE(gr.g[t] = malloc(sizeof(double) * (case_size(&c, t) + 1)), "out of memory");
    reference(&c, &gr);
    if (fd) check_reference_fd(&c, &gr);
    int64_t pad = 3;
    float *out[3][6];
    for (int th = 0; th < 3; th++)
        for (int t = 0; t < 6; t++) {
            size_t n = t == 2 ? (size_t)(B * Lk * (d.R + pad)) : case_size(&c, t);
            REQUIRE(out[th][t] = malloc(sizeof(float) * (n + 1)), "out of memory");
            for (size_t i = 0; i < n; i++) out[th][t][i] = NAN; /* every element must be written */
        }
    for (int th = 0; th < 3; th++) {
        attn_error err;
        attn_status st = run(k, &c, th + 1, out[th], pad, &err);
        CHECK(st == ATTN_OK, "B %lld Lq %lld Lk %lld: %s", (long long)B, (long long)Lq, (long long)Lk, err.message);
        if (st) goto done;
    }
    for (int t = 0; t < 6; t++) {
        size_t n = case_size(&c, t);
        double big = 0, worst = 0;
        for (size_t i = 0; i < n; i++) big = fmax(big, fabs(gr.g[t][i]));
        for (size_t i = 0; i < n; i++) {
            size_t at = t == 2 ? i / (size_t)d.R * (size_t)(d.R + pad) + i % (size_t)d.R : i;
            double e = fabs(out[0][t][at] - gr.g[t][i]);
            if (!(e <= worst)) worst = e; /* NaN too */
        }
        CHECK(worst <= 1e-3 * big + 1e-6, "H %d R %d B %lld Lq %lld Lk %lld qoff %lld: %s off by %g (scale %g)", d.H,
              d.R, (long long)B, (long long)Lq, (long long)Lk, (long long)qoff, gnames[t], worst, big);
        size_t nb = t == 2 ? (size_t)(B * Lk * (d.R + pad)) : n;
        for (int th = 1; th < 3; th++) {
            bool same = true;
            for (size_t i = 0; i < nb && same; i++) {
                if (t == 2 && (int64_t)(i % (size_t)(d.R + pad)) >= d.R) continue; /* padding */
                same = memcmp(&out[0][t][i], &out[th][t][i], sizeof(float)) == 0;
            }
            CHECK(same, "%s differs between 1 and %d threads", gnames[t], th + 1);
        }
        /* the padding of the strided gradient is never written */
        if (t == 2)
            for (size_t i = 0; i < nb; i++)
                if ((int64_t)(i % (size_t)(d.R + pad)) >= d.R && !isnan(out[0][t][i])) {
                    CHECK(false, "dc_kv: padding element %zu written", i);
                    break;
                }
    }
done:
    for (int th = 0; th < 3; th++)
        for (int t = 0; t < 6; t++) free(out[th][t]);
    for (int t = 0; t < 6; t++) free(gr.g[t]);
    case_free(&c);
}

/* Calls the backward refuses, each with its code. */
static void check_bad_calls(attn_kernel *k, Dims d) {
    Case c;
    case_init(&c, d, m_causal, 1, 4, 6, 2);
    float *bufs[6];
    for (int t = 0; t < 6; t++) REQUIRE(bufs[t] = calloc(case_size(&c, t) + 64, sizeof(float)), "out of memory");
    float o[1024], lse[64];
    REQUIRE((size_t)(d.H * 4 * d.dv) <= 1024 && d.H * 4 <= 64, "case too large");
    attn_mla_call call = {
        .q_nope = {c.qn, 4, {1, d.H, 4, d.nope}, {0}},  .q_rope = {c.qr, 4, {1, d.H, 4, d.rope}, {0}},
        .c_kv = {c.ckv, 3, {1, 6, d.R}, {0}},           .k_rope = {c.kr, 3, {1, 6, d.rope}, {0}},
        .w_uk = {c.wuk, 3, {d.H, d.R, d.nope}, {0}},    .w_uv = {c.wuv, 3, {d.H, d.R, d.dv}, {0}},
        .o = {o, 4, {1, d.H, 4, d.dv}, {0}},            .lse = {lse, 3, {1, d.H, 4}, {0}},
    };
    attn_error err;
    REQUIRE(attn_run_mla(k, &call, NULL, &err) == ATTN_OK, "forward: %s", err.message);
    attn_mla_grad_call good = {
        .dout = {c.dout, 4, {1, d.H, 4, d.dv}, {0}},     .dq_nope = {bufs[0], 4, {1, d.H, 4, d.nope}, {0}},
        .dq_rope = {bufs[1], 4, {1, d.H, 4, d.rope}, {0}}, .dc_kv = {bufs[2], 3, {1, 6, d.R}, {0}},
        .dk_rope = {bufs[3], 3, {1, 6, d.rope}, {0}},    .dw_uk = {bufs[4], 3, {d.H, d.R, d.nope}, {0}},
        .dw_uv = {bufs[5], 3, {d.H, d.R, d.dv}, {0}},
    };
    EXPECT(attn_run_mla_backward(k, &call, &good, &err) == ATTN_OK);
    attn_mla_grad_call g = good;
    g.dout.shape[3] = d.dv + 1;
    attn_status st = attn_run_mla_backward(k, &call, &g, &err);
    CHECK(st == ATTN_ERR_SHAPE && strstr(err.message, "do"), "a bad do: %s %s", attn_status_name(st), err.message);
    g = good;
    g.dw_uk.data = NULL;
    st = attn_run_mla_backward(k, &call, &g, &err);
    CHECK(st == ATTN_ERR_NULL && strstr(err.message, "dw_uk"), "no dw_uk: %s %s", attn_status_name(st), err.message);
    g = good;
    g.dk_rope.data = bufs[2]; /* on top of dc_kv */
    st = attn_run_mla_backward(k, &call, &g, &err);
    CHECK(st == ATTN_ERR_STRIDE, "overlapping gradients: %s %s", attn_status_name(st), err.message);
    g = good;
    g.dc_kv.data = c.ckv; /* on top of what it reads */
    st = attn_run_mla_backward(k, &call, &g, &err);
    CHECK(st == ATTN_ERR_STRIDE && strstr(err.message, "c_kv"), "dc_kv over c_kv: %s %s", attn_status_name(st),
          err.message);
    attn_mla_call nolse = call;
    nolse.lse.data = NULL;
    st = attn_run_mla_backward(k, &nolse, &good, &err);
    CHECK(st == ATTN_ERR_NULL && strstr(err.message, "lse"), "no lse: %s %s", attn_status_name(st), err.message);
    attn_grad_call plain = {0};
    attn_call pc = {0};
    st = attn_run_backward(k, &pc, &plain, &err);
    CHECK(st == ATTN_ERR_ARG, "attn_run_backward on an MLA kernel: %s", attn_status_name(st));
    for (int t = 0; t < 6; t++) free(bufs[t]);
    case_free(&c);
}

int main(void) {
    Dims shapes[] = {
        {3, 16, 8, 16, 16},  /* small */
        {2, 40, 12, 20, 24}, /* nothing a multiple of the vector width */
    };
    struct {
        int64_t B, Lq, Lk, qoff;
    } calls[] = {
        {1, 1, 23, 22},  /* decode */
        {2, 19, 19, 0},  /* prefill */
        {1, 13, 30, 17}, /* a chunk after a cached prefix */
        {1, 7, 9, -3},   /* rows that see nothing */
    };
    Mask masks[] = {m_causal, m_sliding};
    const char *mtext[] = {"causal", "sliding(5)"};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int m = 0; m < 2; m++) {
            attn_kernel *k = compile(shapes[s], mtext[m], "auto");
            if (!k) continue;
            EXPECT(attn_kernel_grad_inputs(k, NULL) == 0);
            for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
                check_case(k, shapes[s], masks[m], calls[i].B, calls[i].Lq, calls[i].Lk, calls[i].qoff,
                           s == 0 && m == 0 && i == 1);
            if (s == 0 && m == 0) check_bad_calls(k, shapes[s]);
            attn_kernel_free(k);
        }
    /* absorb = on builds no up-projected variant: its backward is refused with the reason */
    attn_kernel *k = compile(shapes[0], "causal", "on");
    if (k) {
        EXPECT(attn_kernel_grad_inputs(k, NULL) == -1);
        Case c;
        case_init(&c, shapes[0], m_causal, 1, 2, 3, 1);
        float *out[6];
        for (int t = 0; t < 6; t++) REQUIRE(out[t] = malloc(sizeof(float) * (case_size(&c, t) + 64)), "out of memory");
        attn_error err;
        attn_status st = run(k, &c, 1, out, 0, &err);
        CHECK(st == ATTN_ERR_ARG && strstr(err.message, "absorb"), "absorb = on: %s %s", attn_status_name(st),
              err.message);
        for (int t = 0; t < 6; t++) free(out[t]);
        case_free(&c);
        attn_kernel_free(k);
    }
    return check_done("test_grad_mla");
}
