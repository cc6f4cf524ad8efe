/* test_precision.c — `compute = bf16 | int8` against a double-precision C reference, on N(0,1)
 * inputs and on K with outlier channels (a large bias shared by every token in a few channels,
 * a wider spread in a few others): cosine similarity and relative L1 error of the whole output
 * within the documented bounds (bf16: >= 0.9999 and <= 1e-2; int8: >= 0.999 and <= 3e-2), for
 * causal, sliding, strided (residue classes), runtime-input masks (a prefix, packed documents),
 * GQA (prefill and decode), a soft-capped score and ragged shapes, with f32, f16 and bf16
 * storage. Each case also checks that the compute mode changed the result (an f32 kernel would
 * match to ~1e-7), and that a backward call on such a kernel is refused. Prints the figures docs/precision.md quotes. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"

typedef enum Mask { M_CAUSAL, M_SLIDING, M_STRIDED, M_SRCLEN, M_STRIDED64, M_SLIDING48, M_DOCS } Mask;

enum { WIN = 100, STRIDE = 16 };

typedef struct Case {
    const char *name;
    Mask mask;
    int B, H, KH, Lq, Lk, D;
    double cap;        /* soft-capping: score = cap * tanh(score / cap) (0: none) */
    attn_dtype dtype;  /* storage */
    attn_dtype kv;     /* K/V storage (`kv_dtype`), ATTN_F32: as dtype */
} Case;

static attn_dtype kv_of(const Case *c) { return c->kv != ATTN_F32 ? c->kv : c->dtype; }

static uint64_t rng = 20261207;

/* packed documents: ragged segments of DOC positions, shifted with the batch row */
enum { DOC = 150, MAXDOC = 4 * 512 };
static int32_t doc_of(int b, int64_t pos) { return (int32_t)((pos + 29 * b) / DOC); }

static bool visible(const Case *c, const int32_t *src_len, int b, int64_t q, int64_t k) {
    switch (c->mask) {
    case M_CAUSAL: return k <= q;
    case M_SLIDING: return k <= q && q - k < WIN;
    case M_STRIDED: return k <= q && (q - k < STRIDE || (q - k) % STRIDE == 0);
    case M_STRIDED64: return k <= q && (q - k < 64 || (q - k) % 64 == 0);
    case M_SLIDING48: return k <= q && q - k < 48;
    case M_SRCLEN: return k < src_len[b] || k <= q;
    case M_DOCS: return doc_of(b, k) == doc_of(b, q) && k <= q;
    }
    return false;
}

/* Masks the band and staircase templates take (int8 on outlier K is also emulated for them). */
static bool band_mask(Mask m) { return m == M_STRIDED || m == M_STRIDED64 || m == M_SLIDING48; }

static const char *mask_text(Mask m) {
    switch (m) {
    case M_CAUSAL: return "causal";
    case M_SLIDING: return "sliding(100)";
    case M_STRIDED: return "strided(16)";
    case M_STRIDED64: return "strided(64)";
    case M_SLIDING48: return "sliding(48)";
    case M_SRCLEN: return "k < src_len[b] || k <= q";
    case M_DOCS: return "doc[b, k] == doc[b, q] && k <= q";
    }
    return "true";
}

static uint16_t f32_bits_hi(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static float bf16_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* x as stored in dtype t (the value the kernel reads), and its bits into dst[i]. */
static float store(attn_dtype t, void *dst, size_t i, float x) {
    if (t == ATTN_BF16) {
        uint16_t h = f32_bits_hi(x);
        ((uint16_t *)dst)[i] = h;
        return bf16_f32(h);
    }
    if (t == ATTN_F16) {
        _Float16 h = (_Float16)x;
        ((_Float16 *)dst)[i] = h;
        return (float)h;
    }
    ((float *)dst)[i] = x;
    return x;
}

static float load(attn_dtype t, const void *src, size_t i) {
    if (t == ATTN_BF16) return bf16_f32(((const uint16_t *)src)[i]);
    if (t == ATTN_F16) return (float)((const _Float16 *)src)[i];
    return ((const float *)src)[i];
}

static const char *dtype_text(attn_dtype t);

typedef struct Data {
    float *q, *k, *v; /* the stored values, as floats (the reference reads these) */
    void *qs, *ks, *vs, *os;
    int32_t src_len[4];
    int32_t doc[MAXDOC]; /* [B][Lk] */
    float *ksc, *vsc; /* int8 K/V: one scale per token and K/V head */
    double *ref;
} Data;

/* int8 K/V: each row of D values quantized with its own scale max|x| / 127; x becomes the
 * dequantized values (what the kernel computes with). */
static void quantize_rows(float *x, int8_t *q, float *scale, size_t rows, int D) {
    for (size_t r = 0; r < rows; r++) {
        float *xr = x + r * (size_t)D, m = 0;
        for (int i = 0; i < D; i++) m = fmaxf(m, fabsf(xr[i]));
        scale[r] = m > 0 ? m / 127.0f : 1.0f;
        for (int i = 0; i < D; i++) {
            q[r * (size_t)D + (size_t)i] = (int8_t)lrintf(xr[i] / scale[r]);
            xr[i] = (float)q[r * (size_t)D + (size_t)i] * scale[r];
        }
    }
}

static void make_data(const Case *c, bool outliers, Data *d) {
    size_t nq = (size_t)c->B * c->H * c->Lq * c->D, nk = (size_t)c->B * c->KH * c->Lk * c->D;
    size_t es = c->dtype == ATTN_F32 ? 4 : 2, kes = kv_of(c) == ATTN_F32 ? 4 : kv_of(c) == ATTN_I8 ? 1 : 2;
    d->q = malloc(nq * 4), d->k = malloc(nk * 4), d->v = malloc(nk * 4);
    d->qs = malloc(nq * es), d->ks = malloc(nk * kes), d->vs = malloc(nk * kes), d->os = malloc(nq * es);
    d->ref = malloc(nq * sizeof *d->ref);
    REQUIRE(d->q && d->k && d->v && d->qs && d->ks && d->vs && d->os && d->ref, "out of memory");
    check_fill(d->q, nq, &rng, CHECK_NORMAL, 1.0);
    check_fill(d->k, nk, &rng, CHECK_NORMAL, 1.0);
    check_fill(d->v, nk, &rng, CHECK_NORMAL, 1.0);
    if (outliers) /* channels 0-3: a bias of 12 shared by every token; 4-7: 5x the spread */
        for (size_t i = 0; i < nk; i++) {
            size_t ch = i % (size_t)c->D;
            if (ch < 4) d->k[i] += 12.0f;
            else if (ch < 8) d->k[i] *= 5.0f;
        }
    for (size_t i = 0; i < nq; i++) d->q[i] = store(c->dtype, d->qs, i, d->q[i]);
    d->ksc = d->vsc = NULL;
    if (kv_of(c) == ATTN_I8) {
        size_t rows = nk / (size_t)c->D;
        d->ksc = malloc(rows * sizeof *d->ksc), d->vsc = malloc(rows * sizeof *d->vsc);
        REQUIRE(d->ksc && d->vsc, "out of memory");
        quantize_rows(d->k, d->ks, d->ksc, rows, c->D);
        quantize_rows(d->v, d->vs, d->vsc, rows, c->D);
    } else {
        for (size_t i = 0; i < nk; i++) d->k[i] = store(kv_of(c), d->ks, i, d->k[i]);
        for (size_t i = 0; i < nk; i++) d->v[i] = store(kv_of(c), d->vs, i, d->v[i]);
    }
    for (int b = 0; b < c->B; b++) d->src_len[b] = (int32_t)(c->Lk / 3 + 17 * b);
    REQUIRE(c->mask != M_DOCS || c->B * c->Lk <= MAXDOC, "doc ids: too many positions");
    for (int b = 0; c->mask == M_DOCS && b < c->B; b++)
        for (int j = 0; j < c->Lk; j++) d->doc[b * c->Lk + j] = doc_of(b, j);
}

static void free_data(Data *d) {
    free(d->q), free(d->k), free(d->v), free(d->qs), free(d->ks), free(d->vs), free(d->os), free(d->ref);
    free(d->ksc), free(d->vsc);
}

/* The whole output in double precision. */
static void reference(const Case *c, Data *d) {
    double *s = malloc((size_t)c->Lk * sizeof *s);
    REQUIRE(s, "out of memory");
    double scale = 1.0 / sqrt((double)c->D);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++) {
            int kh = h / (c->H / c->KH);
            for (int r = 0; r < c->Lq; r++) {
                int64_t qpos = c->Lk - c->Lq + r;
                const float *qr = d->q + (((size_t)b * c->H + h) * c->Lq + r) * c->D;
                for (int64_t j = 0; j < c->Lk; j++) {
                    s[j] = -INFINITY;
                    if (!visible(c, d->src_len, b, qpos, j)) continue;
                    const float *kr = d->k + (((size_t)b * c->KH + kh) * c->Lk + j) * c->D;
                    double dot = 0;
                    for (int x = 0; x < c->D; x++) dot += (double)qr[x] * kr[x];
                    dot *= scale;
                    s[j] = c->cap > 0 ? c->cap * tanh(dot / c->cap) : dot;
                }
                check_softmax(s, c->Lk);
                double *o = d->ref + (((size_t)b * c->H + h) * c->Lq + r) * c->D;
                for (int x = 0; x < c->D; x++) o[x] = 0;
                for (int64_t j = 0; j < c->Lk; j++) {
                    if (s[j] == 0) continue;
                    const float *vr = d->v + (((size_t)b * c->KH + kh) * c->Lk + j) * c->D;
                    for (int x = 0; x < c->D; x++) o[x] += s[j] * vr[x];
                }
            }
        }
    free(s);
}

static const char *dtype_text(attn_dtype t) {
    return t == ATTN_BF16 ? "bf16" : t == ATTN_F16 ? "f16" : t == ATTN_I8 ? "int8" : "f32";
}

static attn_kernel *compile(const Case *c, const char *compute, const char *cpu) {
    char text[512];
    char score[64] = "", kv[32] = "";
    if (c->kv != ATTN_F32) snprintf(kv, sizeof kv, "kv_dtype = %s;", dtype_text(c->kv));
    if (c->cap > 0) snprintf(score, sizeof score, "score = %g * tanh(score / %g);", c->cap, c->cap);
    snprintf(text, sizeof text,
             "attention t { %s heads = %d; kv_heads = %d; head_dim = %d; mask = %s; %s dtype = %s; %s compute = %s; }",
             c->mask == M_SRCLEN ? "input i32 src_len[batch];" : c->mask == M_DOCS ? "input i32 doc[batch, seq];" : "", c->H, c->KH, c->D, mask_text(c->mask), score,
             dtype_text(c->dtype), kv, compute);
    attn_kernel *kern = NULL;
    char *diags = NULL;
    attn_error err;
    attn_options opts;
    attn_options_init(&opts);
    opts.cpu = cpu;
    attn_status st = attn_compile("precision.attn", text, &opts, &kern, &diags, &err);
    CHECK(st == ATTN_OK, "compile failed: %s\n%s%s", err.message, diags ? diags : "", text);
    attn_free(diags);
    return kern;
}

static attn_call make_call(const Case *c, Data *d, attn_input *in) {
    int n = 0;
    if (c->mask == M_SRCLEN) in[n++] = (attn_input){.name = "src_len", .t = {.data = d->src_len, .ndim = 1, .shape = {c->B}}};
    if (c->mask == M_DOCS) in[n++] = (attn_input){.name = "doc", .t = {.data = d->doc, .ndim = 2, .shape = {c->B, c->Lk}}};
    if (d->ksc) {
        in[n++] = (attn_input){.name = "k_scale", .t = {.data = d->ksc, .ndim = 3, .shape = {c->B, c->KH, c->Lk}}};
        in[n++] = (attn_input){.name = "v_scale", .t = {.data = d->vsc, .ndim = 3, .shape = {c->B, c->KH, c->Lk}}};
    }
    attn_call call = {
        .q = {d->qs, 4, {c->B, c->H, c->Lq, c->D}, {0}},
        .k = {d->ks, 4, {c->B, c->KH, c->Lk, c->D}, {0}},
        .v = {d->vs, 4, {c->B, c->KH, c->Lk, c->D}, {0}},
        .o = {d->os, 4, {c->B, c->H, c->Lq, c->D}, {0}},
        .inputs = n ? in : NULL,
        .ninputs = n,
        .threads = 2,
    };
    return call;
}

/* Cosine similarity and relative L1 error of the kernel's output against the reference. */
static bool run_case(const Case *c, Data *d, const char *compute, const char *cpu, double *cos_out, double *l1_out) {
    attn_kernel *kern = compile(c, compute, cpu);
    if (!kern) return false;
    attn_input in[3];
    attn_call call = make_call(c, d, in);
    attn_error err;
    attn_status st = attn_run(kern, &call, &err);
    CHECK(st == ATTN_OK, "%s %s: attn_run: %s", c->name, compute, err.message);
    if (strcmp(compute, "f32") != 0) { /* the backward is f32 compute only: a clear refusal (a kv_dtype alone
                                          * has one: test_backward.py) */
        size_t nq = (size_t)c->B * c->H * c->Lq * c->D;
        float *buf = calloc(nq * 2, sizeof *buf);
        REQUIRE(buf, "out of memory");
        attn_grad_call g = {.dout = {buf, 4, {c->B, c->H, c->Lq, c->D}, {0}},
                            .dq = {buf + nq, 4, {c->B, c->H, c->Lq, c->D}, {0}}};
        attn_error gerr;
        attn_status gs = attn_run_backward(kern, &call, &g, &gerr);
        CHECK(gs != ATTN_OK && strstr(gerr.message, "no backward"), "%s %s: backward gave %d: %s", c->name, compute,
              (int)gs, gerr.message);
        free(buf);
    }
    attn_kernel_free(kern);
    if (st != ATTN_OK) return false;
    double dot = 0, nn = 0, rr = 0, diff = 0, mag = 0;
    size_t n = (size_t)c->B * c->H * c->Lq * c->D;
    for (size_t i = 0; i < n; i++) {
        double o = load(c->dtype, d->os, i), r = d->ref[i];
        dot += o * r, nn += o * o, rr += r * r, diff += fabs(o - r), mag += fabs(r);
    }
    *cos_out = nn > 0 && rr > 0 ? dot / sqrt(nn * rr) : (nn == rr ? 1.0 : 0.0);
    *l1_out = mag > 0 ? diff / mag : diff;
    return true;
}

static void test_case(const Case *c) {
    for (int outl = 0; outl < 2; outl++) {
        Data d;
        make_data(c, outl, &d);
        reference(c, &d);
        double cf, lf;
        if (!run_case(c, &d, "f32", NULL, &cf, &lf)) goto next;
        if (c->kv != ATTN_F32) { /* 16-bit K/V read as stored: f32 compute stays exact */
            printf("%-22s %-8s f32  kv %-4s  cos %.7f  rel_l1 %.2e\n", c->name, outl ? "outlier" : "normal",
                   dtype_text(c->kv), cf, lf);
            CHECK(lf <= 2e-6, "%s: f32 compute on %s K/V: rel_l1 %.3g", c->name, dtype_text(c->kv), lf);
        }
        static const char *const modes[] = {"bf16", "int8"};
        static const double min_cos[] = {0.9999, 0.999}, max_l1[] = {1e-2, 3e-2};
        /* normal inputs also for CPUs without dot products (the converting and emulation paths):
         * AVX-512 (bf16, int8), AVX2 (bf16); and over an int8 cache, int8 on VNNI without
         * AVX512-BF16 (decode: VNNI scores, P.V on f32 FMAs) */
        static const char *const cpus[2][3] = {{NULL, "skylake-avx512", "haswell"}, {NULL, "skylake-avx512", "icelake-server"}};
        size_t no = (size_t)c->B * c->H * c->Lq * c->D;
        double host_l1 = 0;
        float *host = malloc(no * sizeof *host);
        REQUIRE(host, "out of memory");
        for (int m = 0; m < 2; m++)
        for (int ci = 0; ci < (!outl ? 3 : m == 1 && band_mask(c->mask) ? 2 : 1); ci++) {
            double cs, l1;
            const char *cpu = cpus[m][ci];
            if (m == 1 && ci == 2 && c->kv != ATTN_I8) continue; /* the VNNI decode needs an int8 cache */
            if (!run_case(c, &d, modes[m], cpu, &cs, &l1)) continue;
            /* bf16 f32-storage: the host's dot-product kernels against the converting path of
             * the general code at the same vector width: the same rounded operands, so the
             * general code agrees to the order of its f32 sums (~1e-7). The band and staircase
             * templates take a row's whole window at once, so their weights are rounded after
             * subtracting the row's true maximum rather than the running one: they differ by
             * that rounding (3-8e-4 here), still far below a wrong or missing key */
            if (m == 0 && c->dtype == ATTN_F32 && ci == 0) memcpy(host, d.os, no * sizeof *host);
            /* int8: the host's kernels (the band and staircase templates on VNNI, blocks of
             * their own alignment) against the emulation path, the same error model: no
             * worse than it by more than chance, where a block's mean, scale or sum gone
             * astray shows */
            if (m == 1 && ci == 0) host_l1 = l1;
            if (m == 1 && ci == 1) {
                printf("%-22s %-8s int8 host against skylake-avx512: rel_l1 %.2e / %.2e\n", c->name, outl ? "outlier" : "normal",
                       host_l1, l1);
                CHECK(host_l1 <= 1.25 * l1, "%s int8: rel_l1 %.3g on the host, %.3g emulated", c->name, host_l1, l1);
            }
            if (m == 0 && c->dtype == ATTN_F32 && ci == 1) {
                double diff = 0, mag = 0;
                for (size_t i = 0; i < no; i++) diff += fabs((double)((const float *)d.os)[i] - host[i]), mag += fabs((double)host[i]);
                printf("%-22s %-8s bf16 host against skylake-avx512: rel_l1 %.2e\n", c->name, "normal", diff / mag);
                CHECK(diff <= 2e-3 * mag, "%s bf16: the host's kernel and the converting path differ by %.3g relative", c->name,
                      diff / mag);
            }
            printf("%-22s %-8s %-4s storage %-4s  cos %.7f  rel_l1 %.2e  (f32: %.2e)%s%s\n", c->name,
                   outl ? "outlier" : "normal", modes[m], dtype_text(c->dtype), cs, l1, lf, cpu ? "  cpu " : "",
                   cpu ? cpu : "");
            CHECK(cs >= min_cos[m] && l1 <= max_l1[m], "%s %s (%s K): cos %.7f rel_l1 %.3g out of bounds", c->name,
                  modes[m], outl ? "outlier" : "normal", cs, l1);
            /* the statement has an effect: an f32 kernel stays closer to the reference (f32
             * storage: by orders of magnitude; 16-bit storage: its output's rounding dominates) */
            CHECK(l1 > (c->dtype == ATTN_F32 ? 4 : 1.5) * lf + 1e-6, "%s %s: rel_l1 %.3g, no worse than f32's %.3g: was it %s?", c->name, modes[m], l1,
                  lf, modes[m]);
        }
        free(host);
    next:
        free_data(&d);
    }
}

int main(void) {
    static const Case cases[] = {
        {"causal", M_CAUSAL, 1, 4, 4, 301, 301, 64, 0, ATTN_F32, ATTN_F32},
        {"causal d80 bf16", M_CAUSAL, 1, 2, 2, 157, 157, 80, 0, ATTN_BF16, ATTN_F32},
        {"causal d40 f16", M_CAUSAL, 1, 2, 1, 133, 133, 40, 0, ATTN_F16, ATTN_F32},
        {"sliding", M_SLIDING, 1, 2, 2, 333, 333, 64, 0, ATTN_F32, ATTN_F32},
        {"strided", M_STRIDED, 1, 2, 2, 290, 290, 32, 0, ATTN_F32, ATTN_F32},
        {"src_len input", M_SRCLEN, 2, 2, 2, 120, 190, 64, 0, ATTN_F32, ATTN_F32},
        {"gqa 8/2 d128", M_CAUSAL, 1, 8, 2, 97, 211, 128, 0, ATTN_F32, ATTN_F32},
        {"gqa decode 8/2", M_CAUSAL, 2, 8, 2, 1, 1001, 128, 0, ATTN_F32, ATTN_F32},
        {"softcap 30", M_CAUSAL, 1, 4, 2, 203, 203, 72, 30.0, ATTN_F32, ATTN_F32},
        {"kv bf16 causal", M_CAUSAL, 1, 4, 2, 145, 145, 64, 0, ATTN_F32, ATTN_BF16},
        {"kv f16 strided", M_STRIDED, 1, 2, 2, 260, 260, 48, 0, ATTN_F32, ATTN_F16},
        {"kv bf16 decode 8/2", M_CAUSAL, 2, 8, 2, 1, 777, 128, 0, ATTN_F32, ATTN_BF16},
        {"kv f16 sliding", M_SLIDING, 1, 2, 1, 250, 250, 64, 0, ATTN_F32, ATTN_F16},
        {"kv int8 causal", M_CAUSAL, 1, 4, 2, 150, 150, 64, 0, ATTN_F32, ATTN_I8},
        {"kv int8 decode 8/2", M_CAUSAL, 2, 8, 2, 1, 900, 128, 0, ATTN_F32, ATTN_I8},
        {"kv int8 strided", M_STRIDED, 1, 2, 2, 230, 230, 40, 0, ATTN_F32, ATTN_I8},
        {"kv int8 src_len", M_SRCLEN, 2, 2, 1, 77, 140, 64, 0, ATTN_F32, ATTN_I8},
        /* decode over ragged key counts: a vector and one key, a block and one (the full
         * blocks' scales by the vector, the tail's per key), a window */
        {"kv int8 decode 4/1 kv 17", M_CAUSAL, 2, 4, 1, 1, 17, 128, 0, ATTN_F32, ATTN_I8},
        {"kv int8 decode 8/2 kv 65", M_CAUSAL, 1, 8, 2, 1, 65, 64, 0, ATTN_F32, ATTN_I8},
        {"kv int8 sliding decode", M_SLIDING, 1, 8, 2, 1, 301, 64, 0, ATTN_F32, ATTN_I8},
        {"kv bf16 decode 4/1 kv 33", M_CAUSAL, 2, 4, 1, 1, 33, 128, 0, ATTN_F32, ATTN_BF16},
        /* decode on dot products straight from the cache (int8: VNNI, bf16: vdpbf16ps): MQA
         * and soft-capping with a head dim that ends in a partial piece for int8 (80 = 2 x 32 +
         * 16), MHA (the tile function's few rows, lane masks and all) over three query rows, a
         * window and d 40 (partial pieces of both: 32 + 8, 2 x 16 + 8), two rows of GQA */
        {"kv int8 decode MQA d80 cap", M_CAUSAL, 1, 6, 1, 1, 523, 80, 30.0, ATTN_F32, ATTN_I8},
        {"kv bf16 decode MHA 3 rows", M_SLIDING, 1, 2, 2, 3, 301, 40, 0, ATTN_F32, ATTN_BF16},
        {"kv int8 decode MHA 3 rows", M_SLIDING, 1, 2, 2, 3, 301, 40, 0, ATTN_F32, ATTN_I8},
        {"kv int8 decode 8/2 q2", M_CAUSAL, 1, 8, 2, 2, 1000, 128, 0, ATTN_F32, ATTN_I8},
        /* bands of 4 and 3 vectors and staircases of 64-key classes (the band templates; with
         * more keys than queries: the rows start past key 0); int8's with 16 and 12 words of
         * K^T (d 64, 48) */
        {"strided 64", M_STRIDED64, 1, 2, 2, 333, 333, 64, 0, ATTN_F32, ATTN_F32},
        {"sliding 48 cross", M_SLIDING48, 1, 2, 2, 201, 347, 48, 0, ATTN_F32, ATTN_F32},
        {"strided 64 cross", M_STRIDED64, 1, 2, 2, 333, 347, 64, 0, ATTN_F32, ATTN_F32},
        {"strided 64 cross d48", M_STRIDED64, 1, 2, 2, 333, 347, 48, 0, ATTN_F32, ATTN_F32},
        /* packed documents (causal within ragged segments): the segment test in i32 lanes, in
         * chunks of 64 rows through the ring of packed blocks */
        {"packed docs", M_DOCS, 2, 2, 2, 333, 333, 64, 0, ATTN_F32, ATTN_F32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_case(&cases[i]);
    return check_done("test_precision");
}
