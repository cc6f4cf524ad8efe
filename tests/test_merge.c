/* attn_rt_merge: attention over a key set split into parts (separate caches) and merged
 * through the log-sum-exps equals attention over the whole set; parts that saw nothing are
 * ignored even when their o is garbage; merging in place; a kernel resuming from an (o, lse)
 * over other keys; bad calls. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"

int main(void) {
    enum { B = 2, H = 4, LQ = 5, LK = 77, D = 24 };
    attn_kernel *kern;
    attn_error err;
    char *diags = NULL;
    REQUIRE(attn_compile("merge.attn", "attention bidir { heads = 4; head_dim = 24; }", NULL, &kern, &diags, &err) ==
                ATTN_OK,
            "compile: %s %s", err.message, diags ? diags : "");
    float *q = malloc(sizeof(float) * B * H * LQ * D), *k = malloc(sizeof(float) * B * H * LK * D);
    float *v = malloc(sizeof(float) * B * H * LK * D);
    float *o = malloc(sizeof(float) * B * H * LQ * D), *lse = malloc(sizeof(float) * B * H * LQ);
    float *po[3], *pl[3];
    uint64_t rng = 3;
    check_fill(q, B * H * LQ * D, &rng, CHECK_UNIFORM, 0.5);
    check_fill(k, B * H * LK * D, &rng, CHECK_UNIFORM, 0.5);
    check_fill(v, B * H * LK * D, &rng, CHECK_UNIFORM, 0.5);
    attn_call full = {.q = {q, 4, {B, H, LQ, D}, {0}}, .k = {k, 4, {B, H, LK, D}, {0}}, .v = {v, 4, {B, H, LK, D}, {0}},
                      .o = {o, 4, {B, H, LQ, D}, {0}}, .lse = {lse, 3, {B, H, LQ}, {0}}, .q_offset = ATTN_Q_OFFSET_DEFAULT, .threads = 1};
    CHECK(attn_run(kern, &full, &err) == ATTN_OK, "full run");
    /* three key slices as strided views of the same K/V */
    int cut[4] = {0, 30, 31, LK};
    attn_tensor to[3], tl[3];
    for (int p = 0; p < 3; p++) {
        int n = cut[p + 1] - cut[p];
        po[p] = malloc(sizeof(float) * B * H * LQ * D);
        pl[p] = malloc(sizeof(float) * B * H * LQ);
        attn_call part = full;
        part.k = (attn_tensor){k + cut[p] * D, 4, {B, H, n, D}, {H * LK * D, LK * D, D, 1}};
        part.v = (attn_tensor){v + cut[p] * D, 4, {B, H, n, D}, {H * LK * D, LK * D, D, 1}};
        part.o = (attn_tensor){po[p], 4, {B, H, LQ, D}, {0}};
        part.lse = (attn_tensor){pl[p], 3, {B, H, LQ}, {0}};
        CHECK(attn_run(kern, &part, &err) == ATTN_OK, "part run");
        to[p] = part.o;
        tl[p] = part.lse;
    }
    float *mo = malloc(sizeof(float) * B * H * LQ * D), *ml = malloc(sizeof(float) * B * H * LQ);
    attn_tensor out = {mo, 4, {B, H, LQ, D}, {0}}, outl = {ml, 3, {B, H, LQ}, {0}};
    CHECK(attn_rt_merge(to, tl, 3, &out, &outl, &err) == ATTN_OK, "merge");
    double worst = 0;
    for (int i = 0; i < B * H * LQ * D; i++) worst = fmax(worst, fabs(mo[i] - o[i]));
    for (int i = 0; i < B * H * LQ; i++) worst = fmax(worst, fabs(ml[i] - lse[i]));
    CHECK(worst < 2e-5, "merged equals full");
    /* a part that saw nothing: lse -inf, o garbage (NaN) -> ignored */
    for (int i = 0; i < B * H * LQ * D; i++) po[1][i] = NAN;
    for (int i = 0; i < B * H * LQ; i++) pl[1][i] = -INFINITY;
    attn_tensor two[2] = {to[0], to[1]}, twol[2] = {tl[0], tl[1]};
    CHECK(attn_rt_merge(two, twol, 2, &out, &outl, &err) == ATTN_OK, "merge with empty part");
    int same = 1;
    for (int i = 0; i < B * H * LQ * D; i++) same &= fabsf(mo[i] - po[0][i]) < 1e-6f;
    for (int i = 0; i < B * H * LQ; i++) same &= fabsf(ml[i] - pl[0][i]) < 1e-6f;
    CHECK(same, "an empty part changes nothing");
    /* every part empty: zeros and -inf */
    attn_tensor one[1] = {to[1]}, onel[1] = {tl[1]};
    CHECK(attn_rt_merge(one, onel, 1, &out, &outl, &err) == ATTN_OK, "merge of nothing");
    int zero = 1;
    for (int i = 0; i < B * H * LQ * D; i++) zero &= mo[i] == 0.0f;
    for (int i = 0; i < B * H * LQ; i++) zero &= isinf(ml[i]) && ml[i] < 0;
    CHECK(zero, "rows no part saw are zeros with lse -inf");
    /* in place into part 0, no lse out */
    memcpy(mo, po[0], sizeof(float) * B * H * LQ * D);
    CHECK(attn_rt_merge(to, tl, 1, &to[0], NULL, &err) == ATTN_OK, "in place");
    same = 1;
    for (int i = 0; i < B * H * LQ * D; i++) same &= mo[i] == po[0][i];
    CHECK(same, "a single part merges to itself");
    /* resuming (attn_rt_args.resume): the tile function over keys [0, 30) writes (o, lse),
     * then over [30, LK) continues from them: the same as the full attention (the cascade
     * building block; union domains chain this way) */
    {
        const attn_rt_desc *d = attn_kernel_desc(kern);
        attn_call c2 = full;
        c2.o.data = mo;
        c2.lse.data = ml;
        for (int i = 0; i < B * H * LQ * D; i++) mo[i] = NAN; /* all overwritten by the first part */
        attn_rt_args a;
        CHECK(d && d->tile && attn_rt_check(d, &c2, &a, &err) == ATTN_OK, "check for resume");
        int bad = 0;
        for (int part = 0; part < 2 && d && d->tile; part++) {
            a.k_begin = part ? 30 : 0;
            a.k_end = part ? LK : 30;
            a.resume = part;
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++) bad |= d->tile(&a, b, h, 0, LQ) != 0;
        }
        CHECK(!bad, "resumed tiles ran");
        worst = 0;
        for (int i = 0; i < B * H * LQ * D; i++) worst = fmax(worst, fabs(mo[i] - o[i]));
        for (int i = 0; i < B * H * LQ; i++) worst = fmax(worst, fabs(ml[i] - lse[i]));
        CHECK(worst < 2e-5, "resumed equals full");
    }
    /* a band kernel (sliding 64: its interior rows run as groups of rows 16 apart) resuming
     * from another kernel's (o, lse) over the same keys equals the two merged */
    {
        enum { L2 = 300, D2 = 32 };
        attn_kernel *band = NULL, *all = NULL;
        const char *bt = "attention band { heads = 4; head_dim = 32; mask = sliding(64); }";
        const char *at = "attention all { heads = 4; head_dim = 32; scale = 0.5; }";
        int ok = attn_compile("band.attn", bt, NULL, &band, NULL, &err) == ATTN_OK &&
                 attn_compile("all.attn", at, NULL, &all, NULL, &err) == ATTN_OK;
        CHECK(ok, "band and bidirectional kernels compile");
        size_t nt = (size_t)B * H * L2 * D2, nl = (size_t)B * H * L2;
        float *bq = malloc(sizeof(float) * nt), *bk = malloc(sizeof(float) * nt), *bv = malloc(sizeof(float) * nt);
        float *o1 = malloc(sizeof(float) * nt), *o2 = malloc(sizeof(float) * nt), *o3 = malloc(sizeof(float) * nt);
        float *l1 = malloc(sizeof(float) * nl), *l2 = malloc(sizeof(float) * nl), *l3 = malloc(sizeof(float) * nl);
        check_fill(bq, nt, &rng, CHECK_UNIFORM, 1.0);
        check_fill(bk, nt, &rng, CHECK_UNIFORM, 0.5);
        check_fill(bv, nt, &rng, CHECK_UNIFORM, 0.5);
        attn_call c1 = {.q = {bq, 4, {B, H, L2, D2}, {0}}, .k = {bk, 4, {B, H, L2, D2}, {0}}, .v = {bv, 4, {B, H, L2, D2}, {0}},
                        .o = {o1, 4, {B, H, L2, D2}, {0}}, .lse = {l1, 3, {B, H, L2}, {0}}, .q_offset = ATTN_Q_OFFSET_DEFAULT, .threads = 1};
        attn_call c2 = c1;
        c2.o.data = o2, c2.lse.data = l2;
        ok = ok && attn_run(all, &c1, &err) == ATTN_OK && attn_run(band, &c2, &err) == ATTN_OK;
        attn_tensor mo2[2] = {c1.o, c2.o}, ml2[2] = {c1.lse, c2.lse};
        attn_tensor want = {o3, 4, {B, H, L2, D2}, {0}}, wantl = {l3, 3, {B, H, L2}, {0}};
        ok = ok && attn_rt_merge(mo2, ml2, 2, &want, &wantl, &err) == ATTN_OK;
        CHECK(ok, "band and bidirectional runs merge");
        /* again: the bidirectional kernel into (o1, l1), then the band's tiles resume from it */
        ok = ok && attn_run(all, &c1, &err) == ATTN_OK;
        const attn_rt_desc *d = ok ? attn_kernel_desc(band) : NULL;
        attn_rt_args a;
        ok = ok && d && d->tile && attn_rt_check(d, &c1, &a, &err) == ATTN_OK;
        a.resume = 1;
        for (int b = 0; ok && b < B; b++)
            for (int h = 0; h < H; h++) ok &= d->tile(&a, b, h, 0, L2) == 0;
        CHECK(ok, "band tiles resumed");
        double w2 = 0;
        for (size_t i = 0; ok && i < nt; i++) w2 = fmax(w2, fabs(o1[i] - o3[i]));
        for (size_t i = 0; ok && i < nl; i++) w2 = fmax(w2, fabs(l1[i] - l3[i]));
        CHECK(ok && w2 < 2e-5, "a band resumed equals the merge");
        free(bq), free(bk), free(bv), free(o1), free(o2), free(o3), free(l1), free(l2), free(l3);
        attn_kernel_free(band);
        attn_kernel_free(all);
    }
    /* bad calls */
    CHECK(attn_rt_merge(NULL, tl, 1, &out, NULL, &err) == ATTN_ERR_NULL, "NULL parts");
    CHECK(attn_rt_merge(to, tl, 0, &out, NULL, &err) == ATTN_ERR_ARG, "no parts");
    attn_tensor bad = to[2];
    bad.shape[2] = LQ + 1;
    attn_tensor badparts[2] = {to[0], bad};
    CHECK(attn_rt_merge(badparts, tl, 2, &out, NULL, &err) == ATTN_ERR_SHAPE, "part shape");
    attn_tensor badl = outl;
    badl.ndim = 4;
    CHECK(attn_rt_merge(to, tl, 2, &out, &badl, &err) == ATTN_ERR_RANK, "lse rank");
    attn_tensor overlap = out;
    overlap.stride[0] = 1, overlap.stride[1] = 1, overlap.stride[2] = 1, overlap.stride[3] = 1;
    CHECK(attn_rt_merge(to, tl, 2, &overlap, NULL, &err) == ATTN_ERR_STRIDE, "overlapping output");
    for (int p = 0; p < 3; p++) free(po[p]), free(pl[p]);
    free(q), free(k), free(v), free(o), free(lse), free(mo), free(ml);
    attn_kernel_free(kern);
    return check_done("test_merge");
}
