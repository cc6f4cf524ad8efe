/* grad.c — the backward: dq, dk, dv and the gradients of the f32 inputs the score reads, from
 * the forward's o and lse (FlashAttention-2's equations, P recomputed from lse):
 *   dV += P^T dO, dP = dO V^T, D = rowsum(dO * O), dS = P * (dP - D),
 *   dS' = dS * d score / ds, dQ = scale dS' K, dK = scale dS'^T Q, d<input> += dS * d score / d x.
 * The spec's part (the mask, the score, its derivatives, the rows' key bounds) is generated code
 * (the grad role: attn_rt_desc.grad_bounds / grad_step, W keys a call); this file walks rows and
 * keys. A task is one key range of one (batch row, K/V head): it owns the dk, dv rows of its
 * keys and, for the first range, the dq rows of the head's query heads; a later range adds its
 * share of dq into a partial of its own, and the partials are added to dq range by range
 * afterwards. The inputs' gradients go to a partial per task, added up in task order. How the
 * keys are cut into ranges depends on the call's shape, mask and inputs only, never on the
 * thread count: the result is the same bit for bit whatever the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

typedef struct Grad {
    const attn_rt_desc *d;          /* the first domain's: shapes, scale, head map */
    const attn_rt_desc *const *dom; /* the key domains, each with its mask (one: the block) */
    int ndom;
    const attn_rt_args *a;
    const attn_grad_call *g;
    RtView dout, dq, dk, dv;        /* resolved strides */
    int nd;                         /* inputs with a gradient wanted */
    int din[ATTN_MAX_INPUTS];       /* their input index */
    float *dinput[ATTN_MAX_INPUTS]; /* by input index: where it goes (NULL: not wanted) */
    int64_t nelem[ATTN_MAX_INPUTS]; /* its elements */
    int64_t poff[ATTN_MAX_INPUTS];  /* its place in a task's partial */
    int64_t psize;                  /* floats of a task's partial */
    float *partial;                 /* [tasks][psize] */
    int *failed;                    /* [tasks]: an input index was out of bounds */
    int64_t kb, ke;                 /* the keys visited: [kb, ke); dk, dv row 0 is key kb */
    int ns;                         /* key ranges of a (batch row, K/V head) pair */
    int64_t *kcut;                  /* [pairs][ns + 1]: range s is keys [kcut[s], kcut[s + 1]) */
    int64_t *rlo, *rhi;             /* [pairs][ns]: the rows whose keys reach range s */
    int64_t *qoff;                  /* [pairs][ns]: range s's partial dq in dqpart (s > 0) */
    float *dqpart;
    float *D;                       /* [batch][heads][q_len]: rowsum(dO * O) */
} Grad;

static const float *row_ptr(const RtView *v, int64_t b, int64_t h, int64_t i) {
    return (const float *)v->t->data + b * v->stride[0] + h * v->stride[1] + i * v->stride[2];
}

/* D = rowsum(dO * O): 16 partial sums in a fixed order. */
static float dot(const float *x, const float *y, int n) {
    float s[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) s[l] += x[i + l] * y[i + l];
    for (int l = 0; i < n; i++, l++) s[l] += x[i] * y[i];
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) s[l] += s[l + w];
    return s[0];
}

enum { MAX_LANES = 16, BQ = RT_GBQ, BK = RT_GBK, FAIL_INDEX = 1, FAIL_NOMEM = 2 };

/* Carves n elements of `size` bytes, 64-byte aligned, from *at (a NULL base only counts). */
static void *carve(char *base, size_t *at, size_t n, size_t size) {
    size_t o = (*at + 63) & ~(size_t)63;
    *at = o + n * size;
    return base ? base + o : NULL;
}

/* The keys a pass visits, in a compacted index u (the residue runs of the mask, as the forward
 * visits them): mod 0, every key (u is the position); else the position of u is
 * first + mod * (u / width) + u % width (width 1: one residue class, first its residue). */
typedef struct KeyMap {
    int64_t mod, first, width;
} KeyMap;

static int64_t floor_div(int64_t x, int64_t m) { return x / m - (x % m < 0); }

static int64_t key_pos(const KeyMap *m, int64_t u) {
    return m->mod ? m->first + m->mod * (u / m->width) + u % m->width : u;
}

/* How many keys of the map lie below position x. */
static int64_t keys_below(const KeyMap *m, int64_t x) {
    int64_t n;
    if (!m->mod) {
        n = x;
    } else {
        int64_t dd = x - m->first, per = floor_div(dd, m->mod), rem = dd - per * m->mod;
        n = per * m->width + (rem < m->width ? rem : m->width);
    }
    return n < 0 ? 0 : n;
}

/* A task's scratch (one allocation) and what it works on. */
typedef struct Task {
    Grad *G;
    int64_t task, b, kvh;
    int64_t k0, k1;   /* the keys of the task's range */
    int64_t rlo, rhi; /* dqp's rows (range s > 0) */
    bool later;       /* a range after the first: dq goes to dqp, the range's partial */
    float *dqp;
    int ng;
    float *part;
    int *hs;
    float *lsev, *Dv, *Kt, *Vt, *S, *smod, *dfds, *dP, *P, *ds, *dss, *rd, *zero, *dump;
    int64_t *lo, *hi, *blo, *bhi, *ri, *kpos;
    const float **qrow, **dorow, **krow, **vrow, **ktrow, **vtrow, **pcol, **dscol, **dssrow;
    float **dqrow, **srow, **dprow, **dkrow, **dvrow;
    int *vlo, *vhi;
} Task;

/* Where row i of query head h (the group's g-th) adds its dq: dq itself for the first key
 * range, else the range's partial (a row outside it sees none of the range's keys and adds
 * only zeros: the task's dump row takes them). */
static float *dq_row(Task *T, int g, int64_t h, int64_t i) {
    if (!T->later) return (float *)row_ptr(&T->G->dq, T->b, h, i);
    if (i < T->rlo || i >= T->rhi) return T->dump;
    return T->dqp + ((size_t)g * (size_t)(T->rhi - T->rlo) + (size_t)(i - T->rlo)) * (size_t)T->G->d->qk_dim;
}

/* The rows i = i0 + istep * t (t < nrows) of the query heads of the group against the keys of
 * `km`, for key domain dd: key blocks of BK keys in order; for each, every block of BQ rows of
 * every query head of the group that may see it (the rows' key bounds from grad_bounds),
 * through the register-blocked products of grad_kern.c:
 *   S = Q·Kᵀ; the mask and score by grad_step (or, for a mask that is exactly its bounds and
 *   residue runs, without a score modifier, the bounds alone); dP = dO·Vᵀ; P, dS; dV += Pᵀ·dO;
 *   dK += dSᵀ·Q; dQ += dS·K.
 * The task owns the dk, dv rows of its K/V head and the dq rows of its query heads: the products
 * accumulate into them, key blocks in order. Returns a FAIL_ code or 0. */
static int grad_pass(Task *T, const attn_rt_desc *dd, int64_t i0, int64_t istep, int64_t nrows, const KeyMap *km,
                     bool exact) {
    Grad *G = T->G;
    const attn_rt_desc *d = G->d;
    const attn_rt_args *a = G->a;
    int64_t b = T->b, kvh = T->kvh, Lq = a->q_len, Lk = a->kv_len;
    int QK = d->qk_dim, VD = d->v_dim, W = d->grad_lanes, ng = T->ng, nr_dd = dd->grad_nreads;
    const float *q = a->q, *k = a->k, *v = a->v;
    float scale = d->grad_scale, *S = T->S, *smod = T->smod, *dfds = T->dfds, *dP = T->dP, *P = T->P, *ds = T->ds,
          *dss = T->dss, *rd = T->rd, *part = T->part;
    int64_t *lo = T->lo, *hi = T->hi, *blo = T->blo, *bhi = T->bhi, *ri = T->ri;
    int *vlo = T->vlo, *vhi = T->vhi;
    int64_t nqb = (nrows + BQ - 1) / BQ, nk = keys_below(km, T->k1), kfirst = keys_below(km, T->k0);
    float fio[(2 + ATTN_RT_MAX_GRAD_READS) * MAX_LANES];
    int64_t iio[ATTN_RT_MAX_GRAD_READS * MAX_LANES];
    /* the rows' key bounds (in the map's index), and each row block's hull of them */
    for (int g = 0; g < ng; g++)
        for (int64_t qb = 0; qb < nqb; qb++) {
            int64_t bl = INT64_MAX, bh = -1;
            for (int64_t t = qb * BQ; t < nrows && t < (qb + 1) * BQ; t++) {
                int64_t i = i0 + istep * t, kb[2] = {Lk, -1};
                if (T->lsev[g * Lq + i] != -INFINITY) { /* a row that saw no key adds nothing */
                    if (dd->grad_bounds(a, b, T->hs[g], a->q_offset + i, kb)) return FAIL_INDEX;
                    if (kb[0] < T->k0) kb[0] = T->k0; /* the task's keys only */
                    if (kb[1] > T->k1 - 1) kb[1] = T->k1 - 1;
                    if (kb[0] <= kb[1]) {
                        kb[0] = keys_below(km, kb[0]);
                        kb[1] = keys_below(km, kb[1] + 1) - 1;
                    }
                }
                lo[g * Lq + t] = kb[0];
                hi[g * Lq + t] = kb[1];
                if (kb[0] <= kb[1]) {
                    bl = kb[0] < bl ? kb[0] : bl;
                    bh = kb[1] > bh ? kb[1] : bh;
                }
            }
            blo[g * nqb + qb] = bl;
            bhi[g * nqb + qb] = bh;
        }
    for (int64_t j0 = kfirst; j0 < nk; j0 += BK) {
        int jn = (int)(nk - j0 < BK ? nk - j0 : BK);
        int64_t j1 = j0 + jn - 1;
        bool any = false;
        for (int64_t x = 0; x < ng * nqb && !any; x++) any = blo[x] <= j1 && bhi[x] >= j0;
        if (!any) continue; /* no query sees this key block */
        /* K's and V's rows (zero past the last key) and Kᵀ, Vᵀ; dK and dV go straight to the
         * task's own dk, dv rows */
        for (int t = 0; t < BK; t++) {
            int64_t kp = t < jn ? key_pos(km, j0 + t) : Lk; /* past the keys: hidden */
            T->kpos[t] = kp;
            T->krow[t] = t < jn ? k + b * a->k_stride[0] + kvh * a->k_stride[1] + kp * a->k_stride[2] : T->zero;
            T->vrow[t] = t < jn ? v + b * a->v_stride[0] + kvh * a->v_stride[1] + kp * a->v_stride[2] : T->zero;
            T->dkrow[t] = t < jn ? (float *)row_ptr(&G->dk, b, kvh, kp - G->kb) : T->dump;
            T->dvrow[t] = t < jn ? (float *)row_ptr(&G->dv, b, kvh, kp - G->kb) : T->dump;
        }
        rt_grad_transpose(T->Kt, T->krow, QK);
        rt_grad_transpose(T->Vt, T->vrow, VD);
        for (int g = 0; g < ng; g++) {
            int64_t h = T->hs[g];
            for (int64_t qb = 0; qb < nqb; qb++) {
                if (blo[g * nqb + qb] > j1 || bhi[g * nqb + qb] < j0) continue;
                int64_t t0 = qb * BQ;
                int ni = (int)(nrows - t0 < BQ ? nrows - t0 : BQ), r0 = BQ, r1 = 0;
                for (int r = 0; r < BQ; r++) {
                    int64_t l = r < ni ? lo[g * Lq + t0 + r] : Lk, u = r < ni ? hi[g * Lq + t0 + r] : -1;
                    if (l > u || l > j1 || u < j0) {
                        vlo[r] = BK, vhi[r] = -1;
                        continue;
                    }
                    vlo[r] = (int)(l > j0 ? l - j0 : 0);
                    vhi[r] = (int)(u < j1 ? u - j0 : jn - 1);
                    r0 = r < r0 ? r : r0;
                    r1 = r + 1;
                }
                r0 &= ~3;
                r1 = (r1 + 3) & ~3;
                int nr = r1 - r0;
                for (int r = r0; r < r1; r++) {
                    bool in = r < ni;
                    int64_t i = i0 + istep * (t0 + r);
                    T->qrow[r] = in ? q + b * a->q_stride[0] + h * a->q_stride[1] + i * a->q_stride[2] : T->zero;
                    T->dorow[r] = in ? row_ptr(&G->dout, b, h, i) : T->zero;
                    T->dqrow[r] = in ? dq_row(T, g, h, i) : T->dump;
                }
                float lsr[BQ], Dr[BQ];
                for (int r = r0; r < r1; r++) {
                    int64_t i = i0 + istep * (t0 + r);
                    lsr[r] = r < ni ? T->lsev[g * Lq + i] : 0.0f;
                    Dr[r] = r < ni ? T->Dv[g * Lq + i] : 0.0f;
                }
                /* what each group of 4 rows and 4 keys needs: the rows' keys (S, dP: the vectors
                 * holding them; dQ: them), the keys' rows (dV, dK) */
                int rcol[BQ / 2], rkey[BQ / 2], krows[BK / 2];
                for (int x = 0; x < BK / 4; x++) krows[2 * x] = BQ, krows[2 * x + 1] = 0;
                for (int gq = r0 / 4; gq < r1 / 4; gq++) {
                    int mn = BK, mx = -1;
                    for (int r = 4 * gq; r < 4 * gq + 4; r++) {
                        if (vlo[r] > vhi[r]) continue;
                        mn = vlo[r] < mn ? vlo[r] : mn;
                        mx = vhi[r] > mx ? vhi[r] : mx;
                        for (int x = vlo[r] / 4; x <= vhi[r] / 4; x++) {
                            krows[2 * x] = r - r0 < krows[2 * x] ? r - r0 : krows[2 * x];
                            krows[2 * x + 1] = r - r0 + 1;
                        }
                    }
                    int o2 = 2 * (gq - r0 / 4);
                    if (mn > mx) mn = 0, mx = -1;
                    rkey[o2] = mn;
                    rkey[o2 + 1] = mx + 1;
                    rcol[o2] = mn & ~15;
                    rcol[o2 + 1] = (mx + 16) & ~15;
                }
                for (int x = 0; x < BK / 4; x++)
                    if (krows[2 * x] > krows[2 * x + 1]) krows[2 * x] = krows[2 * x + 1] = 0;
                rt_grad_mm(T->srow + r0, 0, T->qrow + r0, 1, (const float *const *)T->ktrow, QK, BK, nr, NULL, rcol);
                if (!exact) {
                    /* the mask and score of the generated code, W keys a call, over each
                     * row's visible span (keys of runs by their positions) */
                    for (int r = r0; r < r1; r++) {
                        if (vlo[r] > vhi[r]) continue;
                        int64_t qpos = a->q_offset + i0 + istep * (t0 + r);
                        for (int c = vlo[r] - vlo[r] % W; c <= vhi[r]; c += W) {
                            for (int l = 0; l < W; l++) fio[l] = c + l < BK ? scale * S[r * BK + c + l] : 0.0f;
                            if (km->mod ? dd->grad_keys(a, b, h, qpos, T->kpos + c, fio, iio)
                                        : dd->grad_step(a, b, h, qpos, j0 + c, fio, iio))
                                return FAIL_INDEX;
                            for (int l = 0; l < W && c + l < BK; l++) {
                                smod[r * BK + c + l] = fio[l];
                                dfds[r * BK + c + l] = fio[W + l];
                                for (int x = 0; x < nr_dd; x++) {
                                    rd[((size_t)x * BQ + r) * BK + c + l] = fio[(2 + x) * W + l];
                                    ri[((size_t)x * BQ + r) * BK + c + l] = iio[x * W + l];
                                }
                            }
                        }
                    }
                }
                rt_grad_mm(T->dprow + r0, 0, T->dorow + r0, 1, (const float *const *)T->vtrow, VD, BK, nr, NULL, rcol);
                rt_grad_rows(nr, S + r0 * BK, exact ? NULL : smod + r0 * BK, exact ? NULL : dfds + r0 * BK,
                             dP + r0 * BK, scale, lsr + r0, Dr + r0, vlo + r0, vhi + r0, P + r0 * BK,
                             part && nr_dd ? ds + r0 * BK : NULL, dss + r0 * BK);
                /* the inputs' gradients: dS * d score / d x at the element read */
                for (int x = 0; part && x < nr_dd; x++) {
                    int in = dd->grad_read_input[x];
                    if (!G->dinput[in]) continue;
                    float *pin = part + G->poff[in];
                    for (int r = r0; r < r1; r++)
                        for (int c = vlo[r]; c <= vhi[r]; c++)
                            if (smod[r * BK + c] != -INFINITY)
                                pin[ri[((size_t)x * BQ + r) * BK + c]] += ds[r * BK + c] * rd[((size_t)x * BQ + r) * BK + c];
                }
                for (int j = 0; j < BK; j++) {
                    T->pcol[j] = P + r0 * BK + j;
                    T->dscol[j] = dss + r0 * BK + j;
                }
                rt_grad_mm(T->dvrow, 1, T->pcol, BK, T->dorow + r0, nr, VD, BK, krows, NULL);
                rt_grad_mm(T->dkrow, 1, T->dscol, BK, T->qrow + r0, nr, QK, BK, krows, NULL);
                rt_grad_mm(T->dqrow + r0, 1, T->dssrow + r0, 1, T->krow, BK, QK, nr, rkey, NULL);
            }
        }
    }
    return 0;
}

/* D = rowsum(dO * O) of row i of query head h; 0 where the row sees no key. */
static float row_d(const Grad *G, int64_t b, int64_t h, int64_t i) {
    const attn_rt_args *a = G->a;
    const float *o = a->o;
    if (a->lse[b * a->lse_stride[0] + h * a->lse_stride[1] + i] == -INFINITY) return 0.0f;
    return dot(row_ptr(&G->dout, b, h, i), o + b * a->o_stride[0] + h * a->o_stride[1] + i * a->o_stride[2],
               G->d->v_dim);
}

/* One task: key range `task % ns` of the (batch row, K/V head) pair `task / ns`, every key
 * domain in order. All sums run in the same order whatever thread runs the task. */
static void grad_task(void *ctx, int64_t task) {
    Grad *G = ctx;
    const attn_rt_desc *d = G->d;
    const attn_rt_args *a = G->a;
    Task T = {.G = G, .task = task};
    int64_t KH = d->kv_heads, pair = task / G->ns, sp = task % G->ns, b = pair / KH, kvh = pair % KH;
    T.b = b;
    T.kvh = kvh;
    T.k0 = G->kcut[pair * (G->ns + 1) + sp];
    T.k1 = G->kcut[pair * (G->ns + 1) + sp + 1];
    if (sp > 0) {
        T.later = true;
        T.rlo = G->rlo[pair * G->ns + sp];
        T.rhi = G->rhi[pair * G->ns + sp];
        T.dqp = T.rhi > T.rlo ? G->dqpart + G->qoff[pair * G->ns + sp] : NULL; /* NULL: no row reaches it */
    }
    int64_t Lq = a->q_len;
    int QK = d->qk_dim, VD = d->v_dim;
    T.part = G->partial ? G->partial + task * G->psize : NULL;
    for (int64_t j = T.k0 - G->kb; j < T.k1 - G->kb; j++) {
        memset((float *)row_ptr(&G->dk, b, kvh, j), 0, sizeof(float) * (size_t)QK);
        memset((float *)row_ptr(&G->dv, b, kvh, j), 0, sizeof(float) * (size_t)VD);
    }
    int ng = 0;
    for (int64_t h = 0; h < d->heads; h++) ng += d->grad_head_kv[h] == kvh;
    int64_t nqb = (Lq + BQ - 1) / BQ;
    int NR = 0; /* reads followed by some domain */
    for (int dm = 0; dm < G->ndom; dm++) NR = G->dom[dm]->grad_nreads > NR ? G->dom[dm]->grad_nreads : NR;
    int DM = QK > VD ? QK : VD;
    /* the scratch, in one piece */
    char *mem = NULL;
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0;
        T.hs = carve(mem, &at, (size_t)(ng > 0 ? ng : 1), sizeof(int));
        T.lsev = carve(mem, &at, (size_t)(ng * Lq), sizeof(float));
        T.Dv = carve(mem, &at, (size_t)(ng * Lq), sizeof(float));
        T.lo = carve(mem, &at, (size_t)(ng * Lq), sizeof(int64_t));
        T.hi = carve(mem, &at, (size_t)(ng * Lq), sizeof(int64_t));
        T.blo = carve(mem, &at, (size_t)(ng * nqb), sizeof(int64_t));
        T.bhi = carve(mem, &at, (size_t)(ng * nqb), sizeof(int64_t));
        T.Kt = carve(mem, &at, (size_t)QK * BK, sizeof(float));
        T.Vt = carve(mem, &at, (size_t)VD * BK, sizeof(float));
        T.S = carve(mem, &at, BQ * BK, sizeof(float));
        T.smod = carve(mem, &at, BQ * BK, sizeof(float));
        T.dfds = carve(mem, &at, BQ * BK, sizeof(float));
        T.dP = carve(mem, &at, BQ * BK, sizeof(float));
        T.P = carve(mem, &at, BQ * BK, sizeof(float));
        T.ds = carve(mem, &at, BQ * BK, sizeof(float));
        T.dss = carve(mem, &at, BQ * BK, sizeof(float));
        T.rd = carve(mem, &at, (size_t)NR * BQ * BK, sizeof(float));
        T.ri = carve(mem, &at, (size_t)NR * BQ * BK, sizeof(int64_t));
        T.kpos = carve(mem, &at, BK + MAX_LANES, sizeof(int64_t));
        T.zero = carve(mem, &at, (size_t)DM, sizeof(float));
        T.dump = carve(mem, &at, (size_t)DM, sizeof(float));
        T.qrow = carve(mem, &at, BQ, sizeof(float *));
        T.dorow = carve(mem, &at, BQ, sizeof(float *));
        T.dqrow = carve(mem, &at, BQ, sizeof(float *));
        T.srow = carve(mem, &at, BQ, sizeof(float *));
        T.dprow = carve(mem, &at, BQ, sizeof(float *));
        T.dssrow = carve(mem, &at, BQ, sizeof(float *));
        T.krow = carve(mem, &at, BK, sizeof(float *));
        T.vrow = carve(mem, &at, BK, sizeof(float *));
        T.pcol = carve(mem, &at, BK, sizeof(float *));
        T.dscol = carve(mem, &at, BK, sizeof(float *));
        T.dkrow = carve(mem, &at, BK, sizeof(float *));
        T.dvrow = carve(mem, &at, BK, sizeof(float *));
        T.ktrow = carve(mem, &at, (size_t)QK, sizeof(float *));
        T.vtrow = carve(mem, &at, (size_t)VD, sizeof(float *));
        T.vlo = carve(mem, &at, BQ, sizeof(int));
        T.vhi = carve(mem, &at, BQ, sizeof(int));
        if (pass == 0) {
            mem = calloc(1, at + 64);
            if (!mem) {
                G->failed[task] = FAIL_NOMEM;
                return;
            }
        }
    }
    for (int64_t h = 0; h < d->heads; h++)
        if (d->grad_head_kv[h] == kvh) T.hs[T.ng++] = (int)h;
    if (T.dqp) memset(T.dqp, 0, sizeof(float) * (size_t)(ng * (T.rhi - T.rlo) * QK));
    for (int r = 0; r < BQ; r++) {
        T.srow[r] = T.S + r * BK;
        T.dprow[r] = T.dP + r * BK;
        T.dssrow[r] = T.dss + r * BK;
    }
    for (int c = 0; c < QK; c++) T.ktrow[c] = T.Kt + (size_t)c * BK;
    for (int c = 0; c < VD; c++) T.vtrow[c] = T.Vt + (size_t)c * BK;
    /* the rows' lse and D; dq starts at 0 (a row that sees no key keeps it) */
    for (int g = 0; g < ng; g++) {
        int64_t h = T.hs[g];
        for (int64_t i = 0; i < Lq; i++) {
            if (!T.later) memset((float *)row_ptr(&G->dq, b, h, i), 0, sizeof(float) * (size_t)QK);
            T.lsev[g * Lq + i] = a->lse[b * a->lse_stride[0] + h * a->lse_stride[1] + i];
            T.Dv[g * Lq + i] = G->D ? G->D[(b * d->heads + h) * Lq + i] : row_d(G, b, h, i);
        }
    }
    int fail = 0;
    for (int dm = 0; dm < G->ndom && !fail; dm++) {
        const attn_rt_desc *dd = G->dom[dm];
        bool exact = dd->grad_exact != 0;
        KeyMap km = {0, 0, 1};
        if (dd->grad_runs_mod < 2 || (!exact && !dd->grad_keys)) {
            fail = grad_pass(&T, dd, 0, 1, Lq, &km, exact);
        } else if (!dd->grad_runs_with_q) {
            /* the keys of some residues only (the fixed pattern's summary keys), every row */
            km = (KeyMap){dd->grad_runs_mod, dd->grad_runs_base, dd->grad_runs_width};
            fail = grad_pass(&T, dd, 0, 1, Lq, &km, exact);
        } else {
            /* k = q (mod m): the rows of each residue class against the keys of that class */
            int64_t m = dd->grad_runs_mod;
            for (int64_t c = 0; c < m && !fail; c++) {
                int64_t first = ((c - a->q_offset) % m + m) % m; /* the first row of class c */
                if (first >= Lq) continue;
                km = (KeyMap){m, c, 1};
                fail = grad_pass(&T, dd, first, m, (Lq - 1 - first) / m + 1, &km, exact);
            }
        }
    }
    if (fail) G->failed[task] = fail;
    free(mem);
}

/* How a (batch row, K/V head) pair's keys are cut into ranges, one task each: pairs enough
 * for GRAD_TASKS tasks need no cut; else ceil(GRAD_TASKS / pairs) ranges (at most one a key
 * block), cut at key blocks so that each holds about the same number of visible (row, key)
 * pairs by the rows' key bounds. Shape, mask and inputs decide it, never the thread count. */
enum { GRAD_TASKS = 4 };

static int grad_ranges(int64_t pairs, int64_t nkeys) {
    int64_t nkb = (nkeys + BK - 1) / BK;
    int64_t ns = pairs >= GRAD_TASKS ? 1 : (GRAD_TASKS + pairs - 1) / (pairs > 0 ? pairs : 1);
    return (int)(ns < nkb ? ns : nkb > 0 ? nkb : 1);
}

/* G->kcut, rlo, rhi, qoff for G->ns ranges of every pair; the partials' floats in *nq.
 * Returns a FAIL_ code or 0. */
static int grad_plan(Grad *G, int64_t pairs, int64_t *nq) {
    const attn_rt_desc *d = G->d;
    const attn_rt_args *a = G->a;
    int ns = G->ns;
    int64_t Lq = a->q_len, nw = G->ke - G->kb, KH = d->kv_heads;
    *nq = 0;
    for (int64_t p = 0; p < pairs; p++) {
        int64_t *cut = G->kcut + p * (ns + 1), *rl = G->rlo + p * ns, *rh = G->rhi + p * ns;
        cut[0] = G->kb;
        cut[ns] = G->ke;
        for (int s = 0; s < ns; s++) rl[s] = Lq, rh[s] = 0;
        if (ns == 1) continue;
        int64_t b = p / KH, kvh = p % KH, ng = 0;
        /* the rows' key bounds, every domain: a count of rows per key (as differences) */
        int64_t *w = calloc((size_t)nw + 1, sizeof(int64_t));
        int64_t *rb = malloc(sizeof(int64_t) * (size_t)(3 * G->ndom * d->heads * Lq + 1));
        if (!w || !rb) {
            free(w);
            free(rb);
            return FAIL_NOMEM;
        }
        int64_t nb = 0;
        for (int64_t h = 0; h < d->heads; h++) {
            if (d->grad_head_kv[h] != kvh) continue;
            ng++;
            for (int64_t i = 0; i < Lq; i++) {
                if (a->lse[b * a->lse_stride[0] + h * a->lse_stride[1] + i] == -INFINITY) continue;
                for (int dm = 0; dm < G->ndom; dm++) {
                    int64_t kb[2] = {a->kv_len, -1};
                    if (G->dom[dm]->grad_bounds(a, b, h, a->q_offset + i, kb)) {
                        free(w);
                        free(rb);
                        return FAIL_INDEX;
                    }
                    kb[0] = (kb[0] > G->kb ? kb[0] : G->kb) - G->kb;
                    kb[1] = (kb[1] < G->ke - 1 ? kb[1] : G->ke - 1) - G->kb;
                    if (kb[0] > kb[1]) continue;
                    w[kb[0]]++;
                    w[kb[1] + 1]--;
                    rb[3 * nb] = i, rb[3 * nb + 1] = kb[0] + G->kb, rb[3 * nb + 2] = kb[1] + G->kb;
                    nb++;
                }
            }
        }
        /* cuts at key blocks, each range about total / ns visible pairs */
        int64_t total = 0, run = 0, acc = 0;
        for (int64_t j = 0; j < nw; j++) run += w[j], total += run;
        run = 0;
        int s = 1;
        for (int64_t j = 0; j < nw && s < ns; j++) {
            run += w[j];
            acc += run;
            if ((j + 1) % BK == 0 && acc * ns >= total * s) cut[s++] = G->kb + j + 1;
        }
        for (; s < ns; s++) cut[s] = G->ke; /* the rest: empty */
        /* each range's rows: those whose bounds reach it */
        for (int64_t x = 0; x < nb; x++) {
            int64_t i = rb[3 * x], lo = rb[3 * x + 1], hi = rb[3 * x + 2];
            for (int r = 0; r < ns; r++)
                if (lo < cut[r + 1] && hi >= cut[r]) {
                    rl[r] = i < rl[r] ? i : rl[r];
                    rh[r] = i + 1 > rh[r] ? i + 1 : rh[r];
                }
        }
        for (int r = 1; r < ns; r++) {
            if (rl[r] >= rh[r]) rl[r] = rh[r] = 0;
            G->qoff[p * ns + r] = *nq;
            *nq += ng * (rh[r] - rl[r]) * d->qk_dim;
        }
        free(w);
        free(rb);
    }
    return 0;
}

/* D = rowsum(dO * O) of the rows of (batch row, query head) x, for the key ranges to share. */
static void d_task(void *ctx, int64_t x) {
    Grad *G = ctx;
    int64_t H = G->d->heads, Lq = G->a->q_len;
    for (int64_t i = 0; i < Lq; i++) G->D[x * Lq + i] = row_d(G, x / H, x % H, i);
}

/* dq += the later ranges' partials, range by range: task x is query head row block x. */
typedef struct DqSum {
    Grad *G;
    int64_t nrb; /* row blocks of a head */
} DqSum;

static void dq_sum_task(void *ctx, int64_t x) {
    DqSum *S = ctx;
    Grad *G = S->G;
    const attn_rt_desc *d = G->d;
    int64_t H = d->heads, KH = d->kv_heads, Lq = G->a->q_len, rb = x % S->nrb, bh = x / S->nrb, b = bh / H,
            h = bh % H, kvh = d->grad_head_kv[h], pair = b * KH + kvh, g = 0;
    for (int64_t j = 0; j < h; j++) g += d->grad_head_kv[j] == kvh;
    int QK = d->qk_dim, ns = G->ns;
    for (int64_t i = rb * BQ; i < Lq && i < (rb + 1) * BQ; i++) {
        float *dq = (float *)row_ptr(&G->dq, b, h, i);
        for (int s = 1; s < ns; s++) {
            int64_t rl = G->rlo[pair * ns + s], rh = G->rhi[pair * ns + s];
            if (i < rl || i >= rh) continue;
            const float *p =
                G->dqpart + G->qoff[pair * ns + s] + ((size_t)g * (size_t)(rh - rl) + (size_t)(i - rl)) * QK;
            for (int c = 0; c < QK; c++) dq[c] += p[c];
        }
    }
}

/* Gradient tensors: f32, the shape given, any strides with a unit last one, no overlap. */
static attn_status grad_view(RtView *v, const char *name, const attn_tensor *t, const int64_t *shape,
                             bool out, attn_error *err) {
    if (!t->data) return rt_error(err, ATTN_ERR_NULL, "%s: data is NULL", name);
    if (t->ndim != 4) return rt_error(err, ATTN_ERR_RANK, "%s: %d dims, expected 4", name, t->ndim);
    for (int i = 0; i < 4; i++)
        if (t->shape[i] != shape[i])
            return rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d is %lld, expected %lld", name, i,
                            (long long)t->shape[i], (long long)shape[i]);
    attn_status s = rt_view(v, name, t, 4, err);
    if (!s && out) s = rt_check_no_overlap(v, err);
    return s;
}

attn_status attn_rt_launch_backward(const attn_rt_desc *d, const attn_call *c, const attn_grad_call *g,
                                    attn_rt_pool *pool, attn_error *err) {
    return attn_rt_launch_backward_domains(&d, 1, c, g, pool, err);
}

static attn_status rt_backward(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                               const attn_call *cw, const attn_grad_call *g, int64_t kb, attn_rt_pool *pool,
                               attn_error *err);

attn_status attn_rt_launch_backward_domains(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                                            const attn_grad_call *g, attn_rt_pool *pool, attn_error *err) {
    return rt_backward(descs, ndescs, c, NULL, g, 0, pool, err);
}

attn_status rt_launch_backward_window(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                                      const attn_grad_call *g, int64_t kv_len, int64_t k_begin, attn_rt_pool *pool,
                                      attn_error *err) {
    if (!descs || ndescs < 1 || !descs[0]) return rt_error(err, ATTN_ERR_NULL, "no kernel descriptor");
    attn_call w;
    attn_status s = rt_window_call(descs[0], c, kv_len, k_begin, &w, err);
    return s ? s : rt_backward(descs, ndescs, c, &w, g, k_begin, pool, err);
}

/* c: the call as given (its tensors checked for overlaps); cw: its key window's call
 * (rt_window_call; NULL: none, every key) with the window from key kb. */
static attn_status rt_backward(const attn_rt_desc *const *descs, int ndescs, const attn_call *c,
                               const attn_call *cw, const attn_grad_call *g, int64_t kb, attn_rt_pool *pool,
                               attn_error *err) {
    if (!g) return rt_error(err, ATTN_ERR_NULL, "the gradient call is NULL");
    if (!descs || ndescs < 1) return rt_error(err, ATTN_ERR_NULL, "no kernel descriptor");
    const attn_rt_desc *d = descs[0];
    for (int i = 0; i < ndescs; i++) {
        const attn_rt_desc *x = descs[i];
        if (!x) return rt_error(err, ATTN_ERR_NULL, "the kernel descriptor is NULL");
        if (!x->grad_step || !x->grad_bounds)
            return rt_error(err, ATTN_ERR_ARG, "'%s' has no backward (blocks with contiguous K/V and compute = f32 have "
                            "one; MLA blocks: attn_rt_launch_mla_backward)",
                            x->name ? x->name : "?");
        if (x->heads != d->heads || x->kv_heads != d->kv_heads || x->qk_dim != d->qk_dim || x->v_dim != d->v_dim ||
            x->grad_lanes != d->grad_lanes || x->ninputs != d->ninputs)
            return rt_error(err, ATTN_ERR_ARG, "key domain '%s' does not match '%s'", x->name ? x->name : "?",
                            d->name ? d->name : "?");
    }
    if (d->dtype != ATTN_F32 || d->kv_dtype != ATTN_F32) /* f16, bf16, int8 K/V: widened to f32 (key windows
                                                          * take f32 only) */
        return cw ? rt_error(err, ATTN_ERR_DTYPE, "a key window's backward takes f32 tensors")
                  : rt_backward_widened(descs, ndescs, c, g, pool, err);
    attn_rt_args a;
    attn_status s = cw ? rt_check_call(d, cw, &a, false, err) : attn_rt_check(d, c, &a, err);
    if (s) return s;
    int64_t nwin = cw ? c->k.shape[2] : a.kv_len; /* keys visited */
    if (!a.lse && a.batch * d->heads * a.q_len > 0)
        return rt_error(err, ATTN_ERR_NULL, "lse: data is NULL (the backward needs the forward's o and lse)");
    if (d->grad_lanes < 1 || d->grad_lanes > MAX_LANES || d->grad_nreads < 0 || d->grad_nreads > ATTN_RT_MAX_GRAD_READS)
        return rt_error(err, ATTN_ERR_ARG, "descriptor '%s': bad backward lanes or reads", d->name ? d->name : "?");
    Grad G;
    memset(&G, 0, sizeof G);
    G.d = d;
    G.dom = descs;
    G.ndom = ndescs;
    G.a = &a;
    G.g = g;
    G.kb = cw ? kb : 0;
    G.ke = G.kb + nwin;
    int64_t B = a.batch, H = d->heads, KH = d->kv_heads, Lq = a.q_len;
    int64_t so[4] = {B, H, Lq, d->v_dim}, sq[4] = {B, H, Lq, d->qk_dim}, sk[4] = {B, KH, nwin, d->qk_dim},
            sv[4] = {B, KH, nwin, d->v_dim};
    if ((s = grad_view(&G.dout, "do", &g->dout, so, false, err)) || (s = grad_view(&G.dq, "dq", &g->dq, sq, true, err)) ||
        (s = grad_view(&G.dk, "dk", &g->dk, sk, true, err)) || (s = grad_view(&G.dv, "dv", &g->dv, sv, true, err)))
        return s;
    /* a gradient must not overlap another one or what the backward reads */
    {
        RtView in[5];
        const attn_tensor *ts[5] = {&c->q, &c->k, &c->v, &c->o, &c->lse};
        static const char *const names[5] = {"q", "k", "v", "o", "lse"};
        for (int i = 0; i < 5; i++)
            if ((s = rt_view(&in[i], names[i], ts[i], i == 4 ? 4 : (int64_t)sizeof(float), err))) return s;
        const RtView *outs[3] = {&G.dq, &G.dk, &G.dv};
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < i; j++)
                if (rt_ranges_overlap(outs[i], outs[j]))
                    return rt_error(err, ATTN_ERR_STRIDE, "%s overlaps %s", outs[i]->name, outs[j]->name);
            if (rt_ranges_overlap(outs[i], &G.dout))
                return rt_error(err, ATTN_ERR_STRIDE, "%s overlaps do", outs[i]->name);
            for (int j = 0; j < 5; j++)
                if (rt_ranges_overlap(outs[i], &in[j]))
                    return rt_error(err, ATTN_ERR_STRIDE, "%s overlaps %s", outs[i]->name, names[j]);
        }
    }
    if (g->ndinputs < 0 || g->ndinputs > ATTN_MAX_INPUTS || (g->ndinputs && !g->dinputs))
        return rt_error(err, ATTN_ERR_ARG, "ndinputs is %d (0 .. %d, with dinputs)", g->ndinputs, ATTN_MAX_INPUTS);
    for (int i = 0; i < g->ndinputs; i++) {
        const attn_input *gi = &g->dinputs[i];
        int in = -1;
        for (int j = 0; j < d->ninputs && in < 0; j++)
            if (gi->name && strcmp(gi->name, d->inputs[j].name) == 0) in = j;
        bool read = false;
        for (int r = 0; r < d->grad_nreads; r++) read |= d->grad_read_input[r] == in;
        if (in < 0 || !read)
            return rt_error(err, ATTN_ERR_ARG, "d%s: no such gradient (the score reads no f32 input '%s')",
                            gi->name ? gi->name : "?", gi->name ? gi->name : "?");
        if (G.dinput[in]) return rt_error(err, ATTN_ERR_ARG, "d%s: given twice", gi->name);
        int64_t n = 1;
        if (gi->t.ndim != d->inputs[in].rank)
            return rt_error(err, ATTN_ERR_RANK, "d%s: %d dims, expected %d", gi->name, gi->t.ndim, d->inputs[in].rank);
        for (int k = 0; k < gi->t.ndim; k++) {
            if (gi->t.shape[k] != a.input_dim[in][k])
                return rt_error(err, ATTN_ERR_SHAPE, "d%s: dim %d is %lld, expected %lld (as %s)", gi->name, k,
                                (long long)gi->t.shape[k], (long long)a.input_dim[in][k], gi->name);
            n *= gi->t.shape[k];
        }
        if (!gi->t.data) return rt_error(err, ATTN_ERR_NULL, "d%s: data is NULL", gi->name);
        G.dinput[in] = gi->t.data;
        G.nelem[in] = n;
        G.poff[in] = G.psize;
        G.psize += n;
    }
    int64_t pairs = B * KH, nqp = 0;
    G.ns = grad_ranges(pairs, nwin);
    int64_t ntasks = pairs * G.ns;
    G.failed = calloc((size_t)(ntasks > 0 ? ntasks : 1), sizeof(int));
    G.kcut = malloc(sizeof(int64_t) * (size_t)(pairs * (G.ns + 1) + 1));
    G.rlo = malloc(sizeof(int64_t) * (size_t)(3 * ntasks + 1));
    G.rhi = G.rlo ? G.rlo + ntasks : NULL;
    G.qoff = G.rlo ? G.rlo + 2 * ntasks : NULL;
    if (G.ns > 1) G.D = malloc(sizeof(float) * (size_t)(B * H * Lq + 1)); /* else each task computes its own */
    if (G.psize) G.partial = calloc((size_t)(ntasks * G.psize), sizeof(float));
    int fail = !G.failed || !G.kcut || !G.rlo || (G.ns > 1 && !G.D) || (G.psize && !G.partial);
    fail = fail ? FAIL_NOMEM : grad_plan(&G, pairs, &nqp);
    if (!fail && nqp && !(G.dqpart = malloc(sizeof(float) * (size_t)nqp))) fail = FAIL_NOMEM;
    if (fail) {
        free(G.failed);
        free(G.partial);
        free(G.kcut);
        free(G.rlo);
        free(G.dqpart);
        free(G.D);
        return fail == FAIL_INDEX ? rt_index_error(d, err)
                                  : rt_error(err, ATTN_ERR_NOMEM, "out of memory for the backward's partial sums");
    }
    int threads = rt_call_threads(c, pool);
    s = G.D ? rt_launch_tasks(pool, threads, B * H, d_task, &G, 0, err) : ATTN_OK;
    if (!s) s = rt_launch_tasks(pool, threads, ntasks, grad_task, &G, 0, err);
    for (int64_t t = 0; !s && t < ntasks; t++)
        if (G.failed[t] == FAIL_NOMEM) s = rt_error(err, ATTN_ERR_NOMEM, "out of memory for the backward's blocks");
        else if (G.failed[t]) s = rt_index_error(d, err);
    if (!s && nqp) {
        DqSum S = {&G, (Lq + BQ - 1) / BQ};
        s = rt_launch_tasks(pool, threads, B * H * S.nrb, dq_sum_task, &S, 0, err);
    }
    for (int in = 0; !s && in < d->ninputs; in++) {
        if (!G.dinput[in]) continue;
        /* in task order: the same sums whatever thread ran which task */
        for (int64_t e = 0; e < G.nelem[in]; e++) {
            float sum = 0;
            for (int64_t t = 0; t < ntasks; t++) sum += G.partial[t * G.psize + G.poff[in] + e];
            G.dinput[in][e] = sum;
        }
    }
    free(G.failed);
    free(G.partial);
    free(G.kcut);
    free(G.rlo);
    free(G.dqpart);
    free(G.D);
    return s ? s : rt_ok(err);
}
