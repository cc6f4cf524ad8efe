/* test_grad: the backward's double-precision reference (ir/interp_grad.c, with the grad pass's
 * derivatives of the score) against central finite differences of the forward, on ragged
 * shapes, for masks, score modifiers with learnable f32 inputs, head sharing and rows that see
 * no key; and the forward it differentiates against the f32 interpreter. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "frontend/frontend.h"
#include "passes/passes.h"
#include "tests/check.h"

typedef struct Spec {
    const char *name;
    const char *text;
    int64_t batch, q_len, kv_len, q_offset; /* q_offset INT64_MIN: kv_len - q_len */
} Spec;

static const Spec specs[] = {
    {"causal", "attention a { heads = 2; head_dim = 8; v_dim = 5; mask = k <= q; }", 2, 13, 29, INT64_MIN},
    {"alibi", "attention a { input f32 slope[heads]; heads = 3; head_dim = 4; mask = k <= q;"
              " score = score - slope[h] * (q - k); }", 1, 9, 17, INT64_MIN},
    {"softcap_sliding", "attention a { heads = 2; kv_heads = 1; head_dim = 8; mask = sliding(5);"
                        " score = 3.0 * tanh(score / 3.0); }", 2, 11, 11, INT64_MIN},
    {"bias_table", "attention a { input f32 bias[heads, 63]; heads = 2; head_dim = 4;"
                   " mask = abs(q - k) <= 20; score = score + bias[h, min(max(q - k + 31, 0), 62)]; }",
     1, 12, 21, INT64_MIN},
    {"headmap_fns", "attention a { heads = 4; kv_heads = 2; kv_head = h % 2; head_dim = 4; mask = true;"
                    " score = max(score, -0.5) + 0.25 * abs(score) + sigmoid(score) - 0.5 * exp(0.3 * score)"
                    " + min(score, 0.4) * 0.5; }", 1, 7, 10, INT64_MIN},
    {"no_key_rows", "attention a { heads = 1; head_dim = 4; mask = k + 6 <= q; }", 1, 9, 9, INT64_MIN},
    {"xlnet", "attention a { input i32 rank[batch, seq]; heads = 2; head_dim = 4; mask = rank[b, k] <= rank[b, q]; }",
     2, 8, 8, 0},
    {"dilated_cross", "attention a { heads = 1; head_dim = 6; mask = dilated(3) && k <= q; }", 1, 14, 9, -2},
    {"strided_domains", "attention a { heads = 2; head_dim = 4; mask = strided(4); }", 1, 19, 19, INT64_MIN},
    {"fixed_domains", "attention a { heads = 2; kv_heads = 1; head_dim = 4; mask = fixed(4, 1);"
                      " score = score * 0.7; }", 2, 13, 17, INT64_MIN},
    {"scalar_scale", "attention a { input f32 temp; heads = 1; head_dim = 4; mask = k <= q; score = score * temp; }",
     1, 5, 8, INT64_MIN},
    /* several blocks of rows and keys, ragged, dims not whole vectors: the exact staircase and
     * band without grad_step (causal, sliding), with it (ALiBi, a strided union), rows that see
     * nothing past a key offset */
    {"causal_blocks", "attention a { heads = 4; kv_heads = 2; head_dim = 24; v_dim = 40; mask = causal; }",
     1, 150, 203, INT64_MIN},
    {"sliding_blocks", "attention a { heads = 2; head_dim = 16; mask = sliding(37); }", 2, 190, 190, INT64_MIN},
    {"alibi_blocks", "attention a { input f32 slope[heads]; heads = 2; head_dim = 20; mask = k <= q;"
                     " score = score - slope[h] * (q - k); }", 1, 131, 140, INT64_MIN},
    {"strided_blocks", "attention a { heads = 2; kv_heads = 1; head_dim = 33; mask = strided(8); }", 1, 140, 140,
     INT64_MIN},
    {"dilated_blocks", "attention a { heads = 2; kv_heads = 1; head_dim = 16; mask = dilated(3) && window(70); }",
     1, 150, 170, 7},
    /* residue runs with a score modifier: grad_step at the runs' keys */
    {"fixed_softcap_blocks", "attention a { heads = 2; head_dim = 8; mask = fixed(16, 3);"
                             " score = 2.0 * tanh(score / 2.0); }", 1, 150, 150, INT64_MIN},
    {"dilated_alibi_blocks", "attention a { input f32 slope[heads]; heads = 2; head_dim = 8;"
                             " mask = dilated(2) && k <= q; score = score - slope[h] * (q - k) * 0.05; }", 1, 140, 150, -3},
    {"late_rows_blocks", "attention a { heads = 1; head_dim = 17; mask = k + 70 <= q; }", 1, 200, 200, INT64_MIN},
    /* one (batch row, K/V head) pair: its keys cut into ranges, each a task, dq summed from the
     * ranges' partials (MQA with one batch row; a window, whose rows reach few ranges; ALiBi's
     * input gradient from every range) */
    {"mqa_causal_blocks", "attention a { heads = 3; kv_heads = 1; head_dim = 20; v_dim = 12; mask = causal; }",
     1, 130, 260, INT64_MIN},
    {"mqa_softcap_blocks", "attention a { heads = 3; kv_heads = 1; head_dim = 8; mask = sliding(40);"
                           " score = 4.0 * tanh(score / 4.0); }", 1, 200, 200, INT64_MIN},
    {"mqa_alibi_blocks", "attention a { input f32 slope[heads]; heads = 2; kv_heads = 1; head_dim = 8;"
                         " mask = k <= q; score = score - slope[h] * (q - k) * 0.05; }", 1, 140, 200, INT64_MIN},
};

static uint64_t rng = 42;
static double uniform(void) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng >> 11) / 9007199254740992.0 * 2 - 1;
}

typedef struct Case {
    IrModule *m;
    IrFunc *f;
    attn_rt_args a;
    float *q, *k, *v, *o, *dout;
    float *in[ATTN_MAX_INPUTS];
    int64_t nq, nk, nv, no, nin[ATTN_MAX_INPUTS];
} Case;

static int64_t dim_size(const Case *c, attn_dim_kind kind, int64_t value) {
    switch (kind) {
    case ATTN_DIM_BATCH: return c->a.batch;
    case ATTN_DIM_HEADS: return c->f->heads;
    case ATTN_DIM_KV_HEADS: return c->f->kv_heads;
    case ATTN_DIM_Q_LEN: return c->a.q_len;
    case ATTN_DIM_KV_LEN: return c->a.kv_len;
    default: return value;
    }
}

static float *fill(int64_t n, double lo, double hi) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = (float)(lo + (hi - lo) * (uniform() + 1) / 2);
    return p;
}

static bool case_init(Case *c, const Spec *s) {
    memset(c, 0, sizeof *c);
    StrBuf diags;
    sb_init(&diags);
    c->m = fe_compile(s->name, s->text, strlen(s->text), NULL, 0, &diags);
    if (!c->m) {
        fprintf(stderr, "%s: %s\n", s->name, sb_str(&diags));
        sb_free(&diags);
        return false;
    }
    c->f = c->m->funcs[0];
    PassCtx ctx = {.vec_width = 16, .opt_level = 3, .err = &diags};
    bool ok = pass_run_pipeline(c->f, &ctx, "schedule");
    if (!ok) fprintf(stderr, "%s: %s\n", s->name, sb_str(&diags));
    sb_free(&diags);
    if (!ok) return false;
    IrFunc *f = c->f;
    attn_rt_args *a = &c->a;
    a->batch = s->batch;
    a->q_len = s->q_len;
    a->kv_len = s->kv_len;
    a->q_offset = s->q_offset == INT64_MIN ? s->kv_len - s->q_len : s->q_offset;
    int64_t B = a->batch, H = f->heads, KVH = f->kv_heads, Lq = a->q_len, Lk = a->kv_len;
    c->nq = B * H * Lq * f->qk_dim;
    c->nk = B * KVH * Lk * f->qk_dim;
    c->nv = B * KVH * Lk * f->v_dim;
    c->no = B * H * Lq * f->v_dim;
    c->q = fill(c->nq, -1.5, 1.5);
    c->k = fill(c->nk, -1.5, 1.5);
    c->v = fill(c->nv, -1, 1);
    c->dout = fill(c->no, -1, 1);
    c->o = calloc((size_t)c->no, sizeof(float));
    a->q = c->q;
    a->k = c->k;
    a->v = c->v;
    a->o = c->o;
    int64_t qs[3] = {H * Lq * f->qk_dim, Lq * f->qk_dim, f->qk_dim}, ks[3] = {KVH * Lk * f->qk_dim, Lk * f->qk_dim, f->qk_dim};
    int64_t vs[3] = {KVH * Lk * f->v_dim, Lk * f->v_dim, f->v_dim}, os[3] = {H * Lq * f->v_dim, Lq * f->v_dim, f->v_dim};
    memcpy(a->q_stride, qs, sizeof qs);
    memcpy(a->k_stride, ks, sizeof ks);
    memcpy(a->v_stride, vs, sizeof vs);
    memcpy(a->o_stride, os, sizeof os);
    for (int i = 0; i < f->ninputs; i++) {
        const IrInput *in = &f->inputs[i];
        int64_t n = 1;
        for (int d = 0; d < in->rank; d++) n *= a->input_dim[i][d] = dim_size(c, in->dim_kind[d], in->dim_value[d]);
        c->nin[i] = n;
        if (in->dtype == ATTN_F32) {
            c->in[i] = fill(n, 0.05, 0.6);
        } else {
            /* ranks: a permutation of the keys of each batch row */
            int32_t *r = malloc(sizeof(int32_t) * (size_t)n);
            int64_t row = a->input_dim[i][1];
            for (int64_t j = 0; j < n; j++) r[j] = (int32_t)(j % row);
            for (int64_t b = 0; b < n / row; b++)
                for (int64_t j = row - 1; j > 0; j--) {
                    int64_t t = (int64_t)((uniform() + 1) / 2 * (double)(j + 1)) % (j + 1);
                    int32_t x = r[b * row + j];
                    r[b * row + j] = r[b * row + t];
                    r[b * row + t] = x;
                }
            c->in[i] = (float *)r;
        }
        a->input[i] = c->in[i];
    }
    return true;
}

static void case_free(Case *c) {
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->o);
    free(c->dout);
    for (int i = 0; i < ATTN_MAX_INPUTS; i++) free(c->in[i]);
    if (c->m) ir_module_free(c->m);
}

static double loss(Case *c) {
    double l = 0;
    EXPECT(ir_interpret_loss(c->f, &c->a, c->dout, &l) == ATTN_OK);
    return l;
}

/* The gradient g[0 .. n) of the loss in the f32 array x, checked against central differences at
 * up to 24 elements (the perturbation actually applied as the denominator). Returns the largest
 * error relative to the gradient's scale. */
static double check_fd(Case *c, const char *what, float *x, const double *g, int64_t n) {
    double scale = 1e-12;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(g[i]));
    double worst = 0;
    int64_t step = n > 24 ? n / 24 : 1;
    for (int64_t i = 0; i < n; i += step) {
        float x0 = x[i];
        float hi = x0 + 1e-3f, lo = x0 - 1e-3f;
        x[i] = hi;
        double lh = loss(c);
        x[i] = lo;
        double ll = loss(c);
        x[i] = x0;
        double fd = (lh - ll) / ((double)hi - (double)lo);
        worst = fmax(worst, fabs(fd - g[i]) / scale);
    }
    if (worst > 1e-4) fprintf(stderr, "  %s: finite differences off by %.3g of the scale %.3g\n", what, worst, scale);
    return worst;
}

static attn_tensor tensor(void *data, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    attn_tensor t = {.data = data, .ndim = 4, .shape = {d0, d1, d2, d3}};
    return t;
}

/* The kernel's backward (attn_run_backward after attn_run) against the reference g, to 1e-3
 * of each gradient's scale, bitwise the same on 1, 2 and 3 threads. Returns the worst error. */
static double check_kernel(Case *c, const Spec *s, const IrGradArgs *g) {
    IrFunc *f = c->f;
    attn_kernel *kern = NULL;
    attn_error err = {0};
    char *diags = NULL;
    if (attn_compile(s->name, s->text, NULL, &kern, &diags, &err) != ATTN_OK) {
        CHECK(0, "%s: compile: %s %s", s->name, err.message, diags ? diags : "");
        attn_free(diags);
        return INFINITY;
    }
    int64_t B = c->a.batch, H = f->heads, KVH = f->kv_heads, Lq = c->a.q_len, Lk = c->a.kv_len;
    float *lse = malloc(sizeof(float) * (size_t)(B * H * Lq + 1));
    float *out[3][3];
    attn_input ins[ATTN_MAX_INPUTS], dins[ATTN_MAX_INPUTS];
    float *din[3][ATTN_MAX_INPUTS] = {{0}};
    int nd = 0;
    for (int i = 0; i < f->ninputs; i++) {
        ins[i].name = f->inputs[i].name;
        ins[i].t = (attn_tensor){.data = c->in[i], .ndim = f->inputs[i].rank};
        for (int d = 0; d < f->inputs[i].rank; d++) ins[i].t.shape[d] = c->a.input_dim[i][d];
    }
    attn_call call = {.q = tensor(c->q, B, H, Lq, f->qk_dim), .k = tensor(c->k, B, KVH, Lk, f->qk_dim),
                      .v = tensor(c->v, B, KVH, Lk, f->v_dim), .o = tensor(c->o, B, H, Lq, f->v_dim),
                      .lse = {.data = lse, .ndim = 3, .shape = {B, H, Lq}}, .q_offset = c->a.q_offset,
                      .q_offset_set = 1, .inputs = ins, .ninputs = f->ninputs};
    CHECK(attn_run(kern, &call, &err) == ATTN_OK, "%s: forward: %s", s->name, err.message);
    /* a causal or sliding mask without a score modifier needs no grad_step (its bounds are the
     * mask); anything with a score does */
    const attn_rt_desc *rd = attn_kernel_desc(kern);
    if (strstr(s->name, "causal_") || strstr(s->name, "sliding_"))
        CHECK(rd && rd->grad_exact, "%s: the exact path is not taken", s->name);
    if (f->score) CHECK(rd && !rd->grad_exact, "%s: a score modifier on the exact path", s->name);
    /* a residue class (k = q mod 3) visited as the forward does: by class, rows and keys */
    if (strstr(s->name, "dilated_alibi"))
        CHECK(rd && !rd->grad_exact && rd->grad_keys && rd->grad_runs_mod == 2 && rd->grad_runs_with_q,
              "%s: not by residue class", s->name);
    else if (strstr(s->name, "dilated_"))
        CHECK(rd && rd->grad_exact && rd->grad_runs_mod == 3 && rd->grad_runs_with_q, "%s: not by residue class",
              s->name);
    double worst = 0;
    for (int th = 1; th <= 3; th++) {
        float *dq = out[th - 1][0] = malloc(sizeof(float) * (size_t)c->nq);
        float *dk = out[th - 1][1] = malloc(sizeof(float) * (size_t)c->nk);
        float *dv = out[th - 1][2] = malloc(sizeof(float) * (size_t)c->nv);
        nd = 0;
        for (int i = 0; i < f->ninputs; i++)
            if (g->dinput[i]) {
                din[th - 1][i] = malloc(sizeof(float) * (size_t)c->nin[i]);
                dins[nd] = ins[i];
                dins[nd].t.data = din[th - 1][i];
                nd++;
            }
        attn_grad_call gc = {.dout = tensor(c->dout, B, H, Lq, f->v_dim), .dq = tensor(dq, B, H, Lq, f->qk_dim),
                             .dk = tensor(dk, B, KVH, Lk, f->qk_dim), .dv = tensor(dv, B, KVH, Lk, f->v_dim),
                             .dinputs = dins, .ndinputs = nd};
        call.threads = th;
        if (th == 1) {
            /* bad calls fail before anything is written, naming the tensor */
            attn_grad_call bad = gc;
            bad.dq.data = c->q; /* dq over q */
            CHECK(attn_run_backward(kern, &call, &bad, &err) == ATTN_ERR_STRIDE && strstr(err.message, "dq overlaps q"),
                  "%s: dq over q: %s", s->name, err.message);
            bad = gc;
            bad.dv.data = dk; /* dv over dk */
            CHECK(attn_run_backward(kern, &call, &bad, &err) == ATTN_ERR_STRIDE, "%s: dv over dk: %s", s->name, err.message);
            bad = gc;
            bad.dout.shape[2] += 1;
            CHECK(attn_run_backward(kern, &call, &bad, &err) == ATTN_ERR_SHAPE && strstr(err.message, "do"),
                  "%s: a long do: %s", s->name, err.message);
            attn_call nolse = call;
            nolse.lse.data = NULL;
            CHECK(attn_run_backward(kern, &nolse, &gc, &err) == ATTN_ERR_NULL && strstr(err.message, "lse"),
                  "%s: no lse: %s", s->name, err.message);
        }
        CHECK(attn_run_backward(kern, &call, &gc, &err) == ATTN_OK, "%s: backward: %s", s->name, err.message);
        if (th > 1) {
            /* deterministic: bitwise the run on one thread */
            CHECK(memcmp(dq, out[0][0], sizeof(float) * (size_t)c->nq) == 0 &&
                      memcmp(dk, out[0][1], sizeof(float) * (size_t)c->nk) == 0 &&
                      memcmp(dv, out[0][2], sizeof(float) * (size_t)c->nv) == 0,
                  "%s: %d threads differ from one", s->name, th);
            for (int i = 0; i < f->ninputs; i++)
                if (din[th - 1][i])
                    CHECK(memcmp(din[th - 1][i], din[0][i], sizeof(float) * (size_t)c->nin[i]) == 0,
                          "%s: d%s on %d threads differs from one", s->name, f->inputs[i].name, th);
            continue;
        }
        typedef struct { const char *name; const float *got; const double *want; int64_t n; } Cmp;
        Cmp t[3 + ATTN_MAX_INPUTS] = {
            {"dq", dq, g->dq, c->nq}, {"dk", dk, g->dk, c->nk}, {"dv", dv, g->dv, c->nv}};
        int nt = 3;
        for (int i = 0; i < f->ninputs; i++)
            if (din[0][i]) t[nt++] = (Cmp){f->inputs[i].name, din[0][i], g->dinput[i], c->nin[i]};
        for (int j = 0; j < nt; j++) {
            double scale = 1e-12, e = 0;
            for (int64_t x = 0; x < t[j].n; x++) scale = fmax(scale, fabs(t[j].want[x]));
            for (int64_t x = 0; x < t[j].n; x++) e = fmax(e, fabs(t[j].got[x] - t[j].want[x]) / scale);
            CHECK(e <= 1e-3, "%s: kernel %s off by %.3g of its scale", s->name, t[j].name, e);
            worst = fmax(worst, e);
        }
    }
    for (int th = 0; th < 3; th++) {
        for (int j = 0; j < 3; j++) free(out[th][j]);
        for (int i = 0; i < ATTN_MAX_INPUTS; i++) free(din[th][i]);
    }
    free(lse);
    attn_kernel_free(kern);
    return worst;
}

int main(void) {
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    for (int s = 0; s < nspecs; s++) {
        Case c;
        if (!case_init(&c, &specs[s])) {
            EXPECT(!"the spec compiles");
            continue;
        }
        IrFunc *f = c.f;
        EXPECT(f->grad.present);
        /* the forward differentiated is the f32 interpreter's */
        EXPECT(ir_interpret(f, &c.a) == ATTN_OK);
        double lf = 0, mag = 0;
        for (int64_t i = 0; i < c.no; i++) lf += (double)c.dout[i] * c.o[i], mag += fabs((double)c.dout[i] * c.o[i]);
        double ld = loss(&c);
        EXPECT(fabs(ld - lf) <= 1e-5 * (mag + 1e-12));
        IrGradArgs g = {.dout = c.dout};
        g.dq = malloc(sizeof(double) * (size_t)c.nq);
        g.dk = malloc(sizeof(double) * (size_t)c.nk);
        g.dv = malloc(sizeof(double) * (size_t)c.nv);
        for (int i = 0; i < f->ninputs; i++)
            if (f->inputs[i].dtype == ATTN_F32) g.dinput[i] = malloc(sizeof(double) * (size_t)c.nin[i]);
        EXPECT(ir_interpret_backward(f, &c.a, &g) == ATTN_OK);
        double worst = fmax(fmax(check_fd(&c, "dq", c.q, g.dq, c.nq), check_fd(&c, "dk", c.k, g.dk, c.nk)),
                            check_fd(&c, "dv", c.v, g.dv, c.nv));
        for (int i = 0; i < f->ninputs; i++)
            if (g.dinput[i]) {
                double w = check_fd(&c, f->inputs[i].name, c.in[i], g.dinput[i], c.nin[i]);
                worst = fmax(worst, w);
                /* the score reads it, so its gradient is not all zero */
                double any = 0;
                for (int64_t j = 0; j < c.nin[i]; j++) any += fabs(g.dinput[i][j]);
                EXPECT(any > 0);
            }
        EXPECT(worst <= 1e-4);
        if (strcmp(specs[s].name, "no_key_rows") == 0) {
            /* rows 0 .. 5 see no key: their dq is exactly 0, and so are the keys no row sees */
            for (int64_t i = 0; i < 6 * f->qk_dim; i++) EXPECT(g.dq[i] == 0);
            for (int64_t i = (c.a.kv_len - 6) * f->qk_dim; i < c.nk; i++) EXPECT(g.dk[i] == 0);
        }
        double kw = check_kernel(&c, &specs[s], &g);
        printf("%-16s reference vs finite differences: %.2g of the scale; kernel vs reference: %.2g\n",
               specs[s].name, worst, kw);
        free(g.dq);
        free(g.dk);
        free(g.dv);
        for (int i = 0; i < ATTN_MAX_INPUTS; i++) free(g.dinput[i]);
        case_free(&c);
    }
    /* a backward without the grad pass is refused */
    {
        IrFunc bare = {0};
        IrGradArgs g = {0};
        attn_rt_args a = {0};
        EXPECT(ir_interpret_backward(&bare, &a, &g) == ATTN_ERR_ARG);
    }
    return check_done("test_grad");
}
