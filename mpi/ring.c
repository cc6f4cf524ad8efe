/* ring.c — ring (context-parallel) attention over MPI (libattnc_mpi).
 *
 * Each rank holds shards of Q, K and V. The schedule comes from the mask: every rank evaluates
 * the kernel's key bounds (the backward's grad_bounds role, the prune pass's [k_lo, k_hi] per
 * query) over its query rows, which gives for every (query piece, key piece) whether a key may
 * be visible; the ranks share their rows of that matrix (an allgather). Step t of the ring
 * (t = 1 .. R-1) sends this rank's K/V shard to rank r+t when r+t's queries may see it, and
 * receives rank r-t's when ours may see it: pairs without a visible key are neither sent nor
 * computed. Step t+1's messages are posted before step t computes, and the compute runs in
 * chunks of query rows with MPI_Test between them (Open MPI progresses transfers only inside
 * MPI calls). Each pair's partial (o, lse) is merged into the rank's result through the
 * log-sum-exps, in step order (deterministic). The backward runs the same schedule and sends
 * each pair's dK/dV partial back to the shard's owner, which adds them up in step order.
 *
 * Storage types: shards are in the block's dtype and kv_dtype, and K/V travel as stored (int8
 * K/V's scales are runtime inputs every rank holds in full). A 16-bit o goes through f32: each
 * part the kernel stores is widened exactly and merged into an f32 result, rounded once at the
 * end. The backward widens q, o and each pair's K/V to f32 (as a single process does) and runs
 * the f32 backward with the descriptors marked f32 (the backward's generated functions read no
 * tensor); dK/dV partials are f32.
 *
 * Protocol errors never hang: sizes and validation are agreed on with collectives before the
 * ring starts, and a failure while computing (an input index out of bounds) is recorded and
 * the ring's messages still all go through; the ranks agree on the outcome at the end. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn/attn_mpi.h"
#include "runtime/rt_internal.h"

#define RING_MAX_DOM 8
#define RING_MSG_MAX ((int64_t)1 << 30) /* bytes per MPI message (counts are int) */
#define RING_CHUNK_ROWS 512             /* fewest query rows a compute chunk between polls has */
enum { TAG_KV = 7301, TAG_DKV = 7302 };

int attn_ring_shard(int64_t n, int ranks, int rank, attn_shard shard, int64_t begin[2], int64_t end[2]) {
    if (n < 0 || ranks < 1 || rank < 0 || rank >= ranks || !begin || !end) return 0;
    if (shard == ATTN_SHARD_CONTIGUOUS) {
        begin[0] = n * rank / ranks;
        end[0] = n * (rank + 1) / ranks;
        return 1;
    }
    if (shard != ATTN_SHARD_ZIGZAG) return 0;
    int64_t c = 2 * (int64_t)ranks, a = rank, b = c - 1 - rank;
    begin[0] = n * a / c;
    end[0] = n * (a + 1) / c;
    begin[1] = n * b / c;
    end[1] = n * (b + 1) / c;
    return 2;
}

int64_t attn_ring_shard_rows(int64_t n, int ranks, int rank, attn_shard shard) {
    int64_t b[2], e[2];
    int np = attn_ring_shard(n, ranks, rank, shard, b, e);
    if (!np) return -1;
    int64_t rows = 0;
    for (int i = 0; i < np; i++) rows += e[i] - b[i];
    return rows;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A growing list of requests. */
typedef struct Reqs {
    MPI_Request *r;
    int n, cap;
} Reqs;

typedef struct Ring {
    const attn_rt_desc *const *descs;
    int nd;
    const attn_ring_call *call;
    MPI_Comm comm;
    int R, r;
    attn_rt_pool *pool;
    int64_t B, H, KH, DQ, DV, q_len, kv_len, q_offset;
    attn_dtype qt, kt;        /* storage of q and o, of k and v */
    int64_t eq, ek;           /* their element sizes (bytes) */
    MPI_Datatype mt;          /* an element of k and v in messages */
    int nqp;                  /* local query pieces */
    int64_t qb[2], qe[2], qo[2]; /* their positions [qb, qe) (rows of q_len) and first local row */
    int64_t nq, nk;           /* local query and key rows */
    unsigned char *vis;       /* [R][R]: query shard i may see key shard j */
    unsigned char *sub;       /* [nd][2][R][2]: this rank's query piece x rank j's key piece */
    int64_t *rng;             /* [nd][2][R][2][2]: the keys [lo, hi] such a sub-pair may see */
    int64_t *need;            /* [R][R][2][2]: the keys [lo, hi] of rank j's piece rank i needs */
    Reqs rq[6];               /* K/V sends, K/V receives (two slots), dK/dV sends (two), receives */
    attn_ring_stats st;
    attn_status fail;         /* the first failure while computing (the ring goes on) */
    attn_error ferr;
} Ring;

static unsigned char *sub_at(Ring *g, int dm, int qp, int j, int kp) {
    return &g->sub[((dm * 2 + qp) * g->R + j) * 2 + kp];
}
static int64_t *rng_at(Ring *g, int dm, int qp, int j, int kp) {
    return &g->rng[(((dm * 2 + qp) * g->R + j) * 2 + kp) * 2];
}
static int64_t *need_at(Ring *g, int i, int j, int kp) {
    return &g->need[((i * g->R + j) * 2 + kp) * 2];
}

static attn_status reqs_grow(Reqs *q, int more, attn_error *err) {
    if (q->n + more <= q->cap) return ATTN_OK;
    int cap = q->cap ? q->cap * 2 : 16;
    while (cap < q->n + more) cap *= 2;
    MPI_Request *r = realloc(q->r, sizeof *r * (size_t)cap);
    if (!r) return rt_error(err, ATTN_ERR_NOMEM, "ring: out of memory for requests");
    q->r = r;
    q->cap = cap;
    return ATTN_OK;
}

/* Posts `bytes` bytes as messages of at most RING_MSG_MAX bytes. Never fails once the request
 * list has room (grown first), so a message a peer waits for is always posted. */
static void post(Reqs *q, bool send, void *buf, int64_t bytes, int peer, int tag, MPI_Comm comm) {
    for (int64_t o = 0; o < bytes; o += RING_MSG_MAX) {
        int64_t n = bytes - o < RING_MSG_MAX ? bytes - o : RING_MSG_MAX;
        MPI_Request *rq = &q->r[q->n++];
        if (send)
            MPI_Isend((char *)buf + o, (int)n, MPI_BYTE, peer, tag, comm, rq);
        else
            MPI_Irecv((char *)buf + o, (int)n, MPI_BYTE, peer, tag, comm, rq);
    }
}

static int nmsgs(int64_t bytes) { return (int)((bytes + RING_MSG_MAX - 1) / RING_MSG_MAX); }

enum { RQ_SEND = 0, RQ_RECV = 1, RQ_DSEND = 3, RQ_DRECV = 5, RQ_N = 6 };

static bool busy(const Ring *g) {
    for (int i = 0; i < RQ_N; i++)
        if (g->rq[i].n) return true;
    return false;
}

static void progress(Ring *g) {
    int flag;
    for (int i = 0; i < RQ_N; i++)
        if (g->rq[i].n) MPI_Testall(g->rq[i].n, g->rq[i].r, &flag, MPI_STATUSES_IGNORE);
}

/* Waits for requests without spinning: MPI_Testall, then a nap of RING_NAP_US. Open MPI's
 * blocking waits busy-poll, which on a machine with more ranks than cores takes the core from
 * the ranks still computing; a nap costs a waiting rank at most that much latency. */
#define RING_NAP_US 50
static void nap_wait(int n, MPI_Request *r) {
    int done = 0;
    for (;;) {
        MPI_Testall(n, r, &done, MPI_STATUSES_IGNORE);
        if (done) return;
        struct timespec ts = {0, RING_NAP_US * 1000};
        nanosleep(&ts, NULL);
    }
}

static void wait_reqs(Ring *g, Reqs *q) {
    if (!q->n) return;
    double t0 = now_ms();
    nap_wait(q->n, q->r);
    g->st.ms_wait += now_ms() - t0;
    q->n = 0;
}

/* Every rank gets the same outcome: the failure of the lowest failing rank, its message
 * prefixed by its rank on the others. */
static attn_status agree(Ring *g, attn_status s, attn_error *err) {
    int flag = s ? g->R - g->r : 0, maxf = 0;
    MPI_Request rq;
    MPI_Iallreduce(&flag, &maxf, 1, MPI_INT, MPI_MAX, g->comm, &rq);
    nap_wait(1, &rq); /* a rank done early does not spin while the others compute */
    if (!maxf) return ATTN_OK;
    int root = g->R - maxf;
    struct {
        int code;
        char msg[sizeof err->message];
    } m;
    memset(&m, 0, sizeof m);
    if (g->r == root) {
        m.code = (int)s;
        memcpy(m.msg, err->message, sizeof m.msg);
    }
    MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, root, g->comm);
    if (g->r == root) return s;
    m.msg[sizeof m.msg - 1] = 0;
    return rt_error(err, (attn_status)m.code, "rank %d: %.480s", root, m.msg);
}

/* A view of rows [off, off + n) of dim 2 of t (explicit strides). */
static attn_tensor rows_of(const attn_tensor *t, int64_t elem, int64_t off, int64_t n) {
    attn_tensor s = *t;
    RtView v;
    attn_error e;
    if (rt_view(&v, "t", t, elem, &e)) return s; /* checked before */
    for (int d = 0; d < t->ndim; d++) s.stride[d] = v.stride[d];
    s.shape[2] = n;
    if (t->data) s.data = (char *)t->data + off * v.stride[2] * elem;
    return s;
}

/* A contiguous [a, b, n, w] tensor at p. */
static attn_tensor dense4(void *p, int64_t a, int64_t b, int64_t n, int64_t w) {
    return (attn_tensor){.data = p, .ndim = 4, .shape = {a, b, n, w}};
}

/* The K (then V) of a shard of n rows, packed: [B][KH][n][DQ] then [B][KH][n][DV]. */
static void kv_views(Ring *g, float *buf, int64_t n, attn_tensor *k, attn_tensor *v) {
    *k = dense4(buf, g->B, g->KH, n, g->DQ);
    *v = dense4(buf + g->B * g->KH * n * g->DQ, g->B, g->KH, n, g->DV);
}

static int64_t kv_floats(Ring *g, int64_t n) { return g->B * g->KH * n * (g->DQ + g->DV); }

/* Copies a strided 4-d tensor of `elem`-byte elements into (out = 0) or out of (out = 1) a
 * packed one. */
static void copy4(const attn_tensor *t, int64_t elem, void *packed, bool out) {
    RtView v;
    attn_error e;
    if (rt_view(&v, "t", t, elem, &e)) return;
    int64_t n = 0;
    size_t w = (size_t)(elem * t->shape[3]);
    for (int64_t a = 0; a < t->shape[0]; a++)
        for (int64_t b = 0; b < t->shape[1]; b++)
            for (int64_t i = 0; i < t->shape[2]; i++, n += t->shape[3]) {
                char *row = (char *)t->data + (a * v.stride[0] + b * v.stride[1] + i * v.stride[2]) * elem;
                if (out)
                    memcpy(row, (char *)packed + n * elem, w);
                else
                    memcpy((char *)packed + n * elem, row, w);
            }
}

/* The number of key pieces of rank j and their positions and first rows. */
static int key_pieces(Ring *g, int j, int64_t kb[2], int64_t ke[2], int64_t ko[2]) {
    int n = attn_ring_shard(g->kv_len, g->R, j, g->call->shard, kb, ke);
    ko[0] = 0;
    ko[1] = ke[0] - kb[0];
    return n;
}

static const char *const sig_names[] = {
    "batch (q dim 0)", "heads (q dim 1)", "qk_dim (q dim 3)", "batch (k dim 0)", "kv_heads (k dim 1)",
    "qk_dim (k dim 3)", "batch (v dim 0)", "kv_heads (v dim 1)", "v_dim (v dim 3)", "heads (o dim 1)",
    "v_dim (o dim 3)", "whether lse is given", "q_offset_set", "q_offset", "the sharding", "the number of inputs",
    "the kernel's heads", "the kernel's kv_heads", "the kernel's qk_dim", "the kernel's v_dim", "the key domains"};
enum { NSIG_FIXED = 21, NSIG = NSIG_FIXED + ATTN_MAX_INPUTS * (1 + ATTN_MAX_DIMS) };

/* Validation and the schedule: sizes agreed on by every rank, the visibility matrix. */
static attn_status ring_setup(Ring *g, const attn_rt_desc *const *descs, int nd, const attn_kernel *kern,
                              const attn_ring_call *c, MPI_Comm comm, attn_rt_pool *pool, attn_error *err) {
    memset(g, 0, sizeof *g);
    g->descs = descs;
    g->nd = nd;
    g->call = c;
    g->pool = pool;
    g->comm = MPI_COMM_NULL;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin) return rt_error(err, ATTN_ERR_ARG, "ring: MPI is not initialized");
    if (comm == MPI_COMM_NULL) return rt_error(err, ATTN_ERR_NULL, "ring: the communicator is MPI_COMM_NULL");
    if (MPI_Comm_dup(comm, &g->comm) != MPI_SUCCESS) return rt_error(err, ATTN_ERR_ARG, "ring: bad communicator");
    MPI_Comm_size(g->comm, &g->R);
    MPI_Comm_rank(g->comm, &g->r);
    g->st.ranks = g->R;
    g->st.rank = g->r;
    g->st.pairs_total = g->R;

    /* local checks (every rank goes on to the collectives whatever it finds) */
    attn_status s = ATTN_OK;
    const attn_rt_desc *d = descs && nd >= 1 ? descs[0] : NULL;
    if (!c) s = rt_error(err, ATTN_ERR_NULL, "ring: the call is NULL");
    else if (!descs || nd < 1 || nd > RING_MAX_DOM) s = rt_error(err, ATTN_ERR_ARG, "ring: %d key domains (1 .. %d)", nd, RING_MAX_DOM);
    for (int i = 0; !s && i < nd; i++)
        if (!descs[i]) s = rt_error(err, ATTN_ERR_NULL, "ring: key domain %d has no descriptor", i);
    if (!s) {
        g->qt = d->dtype;
        g->kt = rt_kv_dtype(d);
        if ((g->qt != ATTN_F32 && g->qt != ATTN_F16 && g->qt != ATTN_BF16) ||
            (g->kt != ATTN_F32 && g->kt != ATTN_F16 && g->kt != ATTN_BF16 && g->kt != ATTN_I8))
            s = rt_error(err, ATTN_ERR_DTYPE, "ring: '%s' stores q and o as %s and k and v as %s; ring attention "
                         "takes f32, f16 or bf16 (k and v also int8)", d->name ? d->name : "?", rt_dtype_name(g->qt),
                         rt_dtype_name(g->kt));
        g->eq = rt_dtype_size(g->qt);
        g->ek = rt_dtype_size(g->kt);
        g->mt = g->ek == 4 ? MPI_FLOAT : g->ek == 2 ? MPI_UINT16_T : MPI_INT8_T;
    }
    for (int i = 0; !s && i < d->ninputs; i++)
        for (int k = 0; !s && k < d->inputs[i].rank; k++)
            if (d->inputs[i].dim_kind[k] == ATTN_DIM_Q_LEN)
                s = rt_error(err, ATTN_ERR_INPUT,
                             "ring: input '%s' is sized by q_len, which ring attention shards; declare it over "
                             "kv_len or seq (positions), every rank passing all of it",
                             d->inputs[i].name);
    if (!s && (c->shard != ATTN_SHARD_CONTIGUOUS && c->shard != ATTN_SHARD_ZIGZAG))
        s = rt_error(err, ATTN_ERR_ARG, "ring: shard is %d (contiguous %d or zigzag %d)", (int)c->shard,
                     ATTN_SHARD_CONTIGUOUS, ATTN_SHARD_ZIGZAG);
    if (!s) {
        const attn_tensor *ts[4] = {&c->q, &c->k, &c->v, &c->o};
        static const char *const nm[4] = {"q", "k", "v", "o"};
        for (int i = 0; !s && i < 4; i++)
            if (ts[i]->ndim != 4) s = rt_error(err, ATTN_ERR_RANK, "%s: %d dims, expected 4", nm[i], ts[i]->ndim);
        if (!s && c->lse.data && c->lse.ndim != 3)
            s = rt_error(err, ATTN_ERR_RANK, "lse: %d dims, expected 3", c->lse.ndim);
        if (!s && (c->ninputs < 0 || c->ninputs > ATTN_MAX_INPUTS || (c->ninputs && !c->inputs)))
            s = rt_error(err, ATTN_ERR_ARG, "ring: ninputs is %d (0 .. %d, with inputs)", c->ninputs, ATTN_MAX_INPUTS);
    }
    if ((s = agree(g, s, err))) return s;

    /* the sizes every rank must agree on, as max(x) and max(-x) */
    int64_t sig[NSIG] = {0}, red[2 * NSIG], loc[2] = {c->q.shape[2], c->k.shape[2]}, tot[2];
    int64_t fixed[NSIG_FIXED] = {c->q.shape[0], c->q.shape[1], c->q.shape[3], c->k.shape[0], c->k.shape[1],
                                 c->k.shape[3], c->v.shape[0], c->v.shape[1], c->v.shape[3], c->o.shape[1],
                                 c->o.shape[3], c->lse.data != NULL, c->q_offset_set != 0, c->q_offset,
                                 c->shard, c->ninputs, d->heads, d->kv_heads, d->qk_dim, d->v_dim, nd};
    memcpy(sig, fixed, sizeof fixed);
    for (int i = 0; i < c->ninputs; i++) { /* in the declaration's order */
        int j = 0;
        while (j < d->ninputs && (!c->inputs[i].name || strcmp(c->inputs[i].name, d->inputs[j].name) != 0)) j++;
        if (j == d->ninputs) continue; /* refused by the launch's own check, on every rank */
        int64_t *p = sig + NSIG_FIXED + j * (1 + ATTN_MAX_DIMS);
        p[0] = c->inputs[i].t.ndim;
        for (int k = 0; k < c->inputs[i].t.ndim && k < ATTN_MAX_DIMS; k++) p[1 + k] = c->inputs[i].t.shape[k];
    }
    for (int i = 0; i < NSIG; i++) { /* clamped: -x never overflows (q_offset may be INT64_MIN) */
        sig[i] = sig[i] < -((int64_t)1 << 62) ? -((int64_t)1 << 62) : sig[i] > ((int64_t)1 << 62) ? ((int64_t)1 << 62) : sig[i];
        red[i] = sig[i];
        red[NSIG + i] = -sig[i];
    }
    MPI_Allreduce(MPI_IN_PLACE, red, 2 * NSIG, MPI_INT64_T, MPI_MAX, g->comm);
    MPI_Allreduce(loc, tot, 2, MPI_INT64_T, MPI_SUM, g->comm);
    for (int i = 0; i < NSIG; i++)
        if (red[i] != -red[NSIG + i]) {
            char what[96];
            if (i < NSIG_FIXED)
                snprintf(what, sizeof what, "%s", sig_names[i]);
            else
                snprintf(what, sizeof what, "the %s of input '%s'", (i - NSIG_FIXED) % (1 + ATTN_MAX_DIMS) ? "size" : "rank",
                         d->inputs[(i - NSIG_FIXED) / (1 + ATTN_MAX_DIMS)].name);
            return rt_error(err, ATTN_ERR_SHAPE,
                            "ring: the ranks' calls disagree on %s: %lld on one rank, %lld on another (this rank: %lld)",
                            what, (long long)-red[NSIG + i], (long long)red[i], (long long)sig[i]);
        }
    g->B = c->q.shape[0];
    g->H = d->heads;
    g->KH = d->kv_heads;
    g->DQ = d->qk_dim;
    g->DV = d->v_dim;
    g->q_len = tot[0];
    g->kv_len = tot[1];
    g->nq = c->q.shape[2];
    g->nk = c->k.shape[2];
    g->q_offset = c->q_offset;
    if (!c->q_offset_set && (g->q_offset == 0 || g->q_offset == ATTN_Q_OFFSET_DEFAULT)) g->q_offset = g->kv_len - g->q_len;
    g->nqp = attn_ring_shard(g->q_len, g->R, g->r, c->shard, g->qb, g->qe);
    g->qo[0] = 0;
    g->qo[1] = g->qe[0] - g->qb[0];
    const char *sh = c->shard == ATTN_SHARD_ZIGZAG ? "zigzag" : "contiguous";
    if (attn_ring_shard_rows(g->q_len, g->R, g->r, c->shard) != g->nq)
        s = rt_error(err, ATTN_ERR_SHAPE, "q: dim 2 is %lld rows, but rank %d's %s shard of q_len %lld has %lld",
                     (long long)g->nq, g->r, sh, (long long)g->q_len,
                     (long long)attn_ring_shard_rows(g->q_len, g->R, g->r, c->shard));
    else if (attn_ring_shard_rows(g->kv_len, g->R, g->r, c->shard) != g->nk)
        s = rt_error(err, ATTN_ERR_SHAPE, "k: dim 2 is %lld rows, but rank %d's %s shard of kv_len %lld has %lld",
                     (long long)g->nk, g->r, sh, (long long)g->kv_len,
                     (long long)attn_ring_shard_rows(g->kv_len, g->R, g->r, c->shard));
    /* the runtime's own checks of this rank's first pieces (every domain, its inputs) */
    attn_rt_args a;
    memset(&a, 0, sizeof a);
    int64_t kb[2], ke[2], ko[2];
    key_pieces(g, g->r, kb, ke, ko);
    for (int i = 0; !s && i < nd; i++) {
        attn_call w, x = {.q = rows_of(&c->q, g->eq, 0, g->qe[0] - g->qb[0]), .k = rows_of(&c->k, g->ek, 0, ke[0] - kb[0]),
                          .v = rows_of(&c->v, g->ek, 0, ke[0] - kb[0]), .o = rows_of(&c->o, g->eq, 0, g->qe[0] - g->qb[0]),
                          .q_offset = g->q_offset + g->qb[0], .q_offset_set = 1, .inputs = c->inputs,
                          .ninputs = c->ninputs, .threads = c->threads};
        if (c->lse.data) {
            x.lse = c->lse;
            x.lse.shape[2] = g->qe[0] - g->qb[0];
        }
        if (c->o.shape[2] != g->nq)
            s = rt_error(err, ATTN_ERR_SHAPE, "o: dim 2 (q rows) is %lld, expected %lld (as in q)",
                         (long long)c->o.shape[2], (long long)g->nq);
        else if (c->v.shape[2] != g->nk)
            s = rt_error(err, ATTN_ERR_SHAPE, "v: dim 2 (k rows) is %lld, expected %lld (as in k)",
                         (long long)c->v.shape[2], (long long)g->nk);
        else if (c->lse.data && c->lse.shape[2] != g->nq)
            s = rt_error(err, ATTN_ERR_SHAPE, "lse: dim 2 (q rows) is %lld, expected %lld (as in q)",
                         (long long)c->lse.shape[2], (long long)g->nq);
        else if (!(s = rt_window_call(descs[i], &x, g->kv_len, kb[0], &w, err)))
            s = rt_check_call(descs[i], &w, i ? NULL : &a, false, err);
        if (!s && i && (descs[i]->heads != d->heads || descs[i]->kv_heads != d->kv_heads ||
                        descs[i]->qk_dim != d->qk_dim || descs[i]->v_dim != d->v_dim ||
                        descs[i]->dtype != d->dtype || rt_kv_dtype(descs[i]) != g->kt))
            s = rt_error(err, ATTN_ERR_ARG, "ring: key domain %d differs from domain 0 in its sizes or types", i);
    }
    if (!s && c->threads < 0) s = rt_error(err, ATTN_ERR_ARG, "threads is %d, expected >= 0", c->threads);
    g->vis = calloc((size_t)g->R * (size_t)g->R, 1);
    g->sub = calloc((size_t)nd * 4 * (size_t)g->R, 1);
    g->rng = calloc((size_t)nd * 8 * (size_t)g->R, sizeof(int64_t));
    g->need = malloc(sizeof(int64_t) * 4 * (size_t)g->R * (size_t)g->R);
    if (!s && (!g->vis || !g->sub || !g->rng || !g->need)) s = rt_error(err, ATTN_ERR_NOMEM, "ring: out of memory for the schedule");
    if ((s = agree(g, s, err))) return s;

    /* the schedule: which (query piece, key piece) pairs may have a visible key */
    a.q_len = g->q_len;
    a.q_offset = g->q_offset;
    a.kv_len = g->kv_len;
    for (int dm = 0; dm < nd; dm++) {
        const attn_rt_desc *dd = descs[dm];
        for (int qp = 0; qp < g->nqp; qp++) {
            if (g->qe[qp] == g->qb[qp] || g->kv_len == 0) continue;
            int64_t lo = INT64_MAX, hi = INT64_MIN; /* the union of the rows' key bounds */
            for (int64_t b = 0; b < g->B; b++)
                for (int64_t h = 0; h < g->H; h++)
                    for (int64_t i = g->qb[qp]; i < g->qe[qp]; i++) {
                        int64_t kk[2] = {0, g->kv_len - 1};
                        if (dd->grad_bounds && dd->grad_bounds(&a, b, h, g->q_offset + i, kk)) {
                            kk[0] = 0; /* an index out of bounds: the compute reports it */
                            kk[1] = g->kv_len - 1;
                        }
                        if (kk[0] < 0) kk[0] = 0;
                        if (kk[1] > g->kv_len - 1) kk[1] = g->kv_len - 1;
                        if (kk[0] > kk[1]) continue;
                        lo = kk[0] < lo ? kk[0] : lo;
                        hi = kk[1] > hi ? kk[1] : hi;
                    }
            for (int j = 0; j < g->R; j++) {
                int64_t pb[2], pe[2], po[2];
                int np = key_pieces(g, j, pb, pe, po);
                for (int kp = 0; kp < np; kp++)
                    if (pe[kp] > pb[kp] && lo < pe[kp] && hi >= pb[kp]) {
                        *sub_at(g, dm, qp, j, kp) = 1;
                        rng_at(g, dm, qp, j, kp)[0] = lo > pb[kp] ? lo : pb[kp];
                        rng_at(g, dm, qp, j, kp)[1] = hi < pe[kp] - 1 ? hi : pe[kp] - 1;
                    }
            }
        }
    }
    /* with the kernel: its mask analysis over the pieces' ranges, runtime inputs included (a
     * mask of packed documents needs only the ranks its documents span) */
    for (int qp = 0; kern && qp < g->nqp; qp++)
        for (int j = 0; j < g->R; j++) {
            int64_t pb[2], pe[2], po[2];
            int np = key_pieces(g, j, pb, pe, po);
            for (int kp = 0; kp < np; kp++) {
                unsigned char any = 0;
                for (int dm = 0; dm < nd; dm++) any |= *sub_at(g, dm, qp, j, kp);
                if (any && !attn_kernel_may_see(kern, &a, g->q_offset + g->qb[qp], g->q_offset + g->qe[qp] - 1, pb[kp],
                                                pe[kp] - 1))
                    for (int dm = 0; dm < nd; dm++) *sub_at(g, dm, qp, j, kp) = 0;
            }
        }
    /* the keys of each piece this rank needs: the union of its visible sub-pairs' ranges; the
     * ranks share them, so each sends only the keys the others' queries may see */
    for (int j = 0; j < g->R; j++)
        for (int kp = 0; kp < 2; kp++) {
            int64_t *nr = need_at(g, g->r, j, kp);
            nr[0] = INT64_MAX;
            nr[1] = INT64_MIN;
            for (int dm = 0; dm < nd; dm++)
                for (int qp = 0; qp < 2; qp++)
                    if (*sub_at(g, dm, qp, j, kp)) {
                        const int64_t *x = rng_at(g, dm, qp, j, kp);
                        nr[0] = x[0] < nr[0] ? x[0] : nr[0];
                        nr[1] = x[1] > nr[1] ? x[1] : nr[1];
                    }
        }
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, g->need, 4 * g->R, MPI_INT64_T, g->comm);
    for (int i = 0; i < g->R; i++)
        for (int j = 0; j < g->R; j++) {
            const int64_t *a0 = need_at(g, i, j, 0), *a1 = need_at(g, i, j, 1);
            g->vis[i * g->R + j] = a0[0] <= a0[1] || a1[0] <= a1[1];
        }
    for (int j = 0; j < g->R; j++) g->st.pairs_computed += g->vis[g->r * g->R + j];
    for (int i = 0; i < g->R; i++) g->st.sends += i != g->r && g->vis[i * g->R + g->r];
    return ATTN_OK;
}

static void ring_free(Ring *g) {
    free(g->vis);
    free(g->sub);
    free(g->rng);
    free(g->need);
    for (int i = 0; i < RQ_N; i++) free(g->rq[i].r);
    if (g->comm != MPI_COMM_NULL) MPI_Comm_free(&g->comm);
}

static void record(Ring *g, attn_status s, const attn_error *e) {
    if (s && !g->fail) {
        g->fail = s;
        g->ferr = *e;
    }
}

/* The rows of this rank's query piece qp, in chunks between which the transfers progress. */
static int64_t chunk_rows(Ring *g, int64_t n) {
    if (!busy(g) || n <= RING_CHUNK_ROWS) return n > 0 ? n : 1;
    int64_t c = (n + 7) / 8;
    return c < RING_CHUNK_ROWS ? RING_CHUNK_ROWS : c;
}

/* Rows of rank j's K/V as rank i receives them: per piece the keys [start, start + rows)
 * (rows 0: none), from row src of j's shard; packed one piece after the other, K then V, each
 * [batch][kv_heads][rows][dim], at koff and voff (floats). `full`: the whole pieces. */
typedef struct Trim {
    int64_t start[2], rows[2], src[2], koff[2], voff[2], floats;
} Trim;

static void trim_of(Ring *g, int i, int j, bool full, Trim *t) {
    int64_t kb[2], ke[2], ko[2];
    int np = key_pieces(g, j, kb, ke, ko);
    memset(t, 0, sizeof *t);
    for (int kp = 0; kp < np; kp++) {
        const int64_t *nr = need_at(g, i, j, kp);
        int64_t lo = full ? kb[kp] : nr[0], hi = full ? ke[kp] - 1 : nr[1];
        if (lo > hi) continue;
        t->start[kp] = lo;
        t->rows[kp] = hi - lo + 1;
        t->src[kp] = ko[kp] + lo - kb[kp];
        t->koff[kp] = t->floats;
        t->floats += g->B * g->KH * t->rows[kp] * g->DQ;
        t->voff[kp] = t->floats;
        t->floats += g->B * g->KH * t->rows[kp] * g->DV;
    }
}

/* Posts the rows of a trim: sent from a packed [batch * kv_heads][n][dim] tensor (rows
 * t->src ..), or received packed. One message of a strided type per piece, K and V. */
static attn_status post_trim(Ring *g, Reqs *q, bool send, const Trim *t, char *k, char *v, char *packed, int64_t n,
                             int peer, int tag, attn_error *err) {
    attn_status s = reqs_grow(q, 4, err);
    if (s) return s;
    int64_t BK = g->B * g->KH;
    for (int kp = 0; kp < 2; kp++) {
        if (!t->rows[kp]) continue;
        for (int x = 0; x < 2; x++) {
            int64_t dim = x ? g->DV : g->DQ;
            MPI_Datatype ty;
            if (send) {
                MPI_Type_vector((int)BK, (int)(t->rows[kp] * dim), (int)(n * dim), g->mt, &ty);
                MPI_Type_commit(&ty);
                MPI_Isend((x ? v : k) + t->src[kp] * dim * g->ek, 1, ty, peer, tag, g->comm, &q->r[q->n++]);
            } else {
                MPI_Type_contiguous((int)(t->rows[kp] * dim), g->mt, &ty);
                MPI_Type_commit(&ty);
                MPI_Irecv(packed + (x ? t->voff[kp] : t->koff[kp]) * g->ek, (int)BK, ty, peer, tag, g->comm,
                          &q->r[q->n++]);
            }
            MPI_Type_free(&ty); /* freed when the message is done */
        }
    }
    return ATTN_OK;
}

/* Step t's messages: the rows of this rank's K/V shard (own_k, own_v packed) rank r+t needs,
 * and those of rank r-t's this rank needs, into slot. */
static attn_status post_kv(Ring *g, int t, char *own_k, char *own_v, char *slot, attn_error *err) {
    int R = g->R, dst = (g->r + t) % R, src = (g->r - t + R) % R;
    attn_status s = ATTN_OK;
    Trim tr;
    if (g->vis[dst * R + g->r]) {
        trim_of(g, dst, g->r, false, &tr);
        if ((s = post_trim(g, &g->rq[RQ_SEND], true, &tr, own_k, own_v, NULL, g->nk, dst, TAG_KV, err))) return s;
        g->st.bytes_sent += tr.floats * g->ek;
    }
    if (g->vis[g->r * R + src]) {
        trim_of(g, g->r, src, false, &tr);
        if ((s = post_trim(g, &g->rq[RQ_RECV + t % 2], false, &tr, NULL, NULL, slot, 0, src, TAG_KV, err))) return s;
        g->st.bytes_received += tr.floats * g->ek;
    }
    return s;
}

/* The K/V views of a trim: of the caller's tensors (own) or of a packed buffer. */
typedef struct KVV {
    attn_tensor k[2], v[2];
    int64_t start[2], rows[2];
} KVV;

/* packed: elements of `elem` bytes; k, v: the caller's, in the storage type */
static void kvv_of(Ring *g, const Trim *t, const void *packed, int64_t elem, const attn_tensor *k, const attn_tensor *v,
                   KVV *o) {
    memset(o, 0, sizeof *o);
    for (int kp = 0; kp < 2; kp++) {
        o->start[kp] = t->start[kp];
        o->rows[kp] = t->rows[kp];
        if (!t->rows[kp]) continue;
        if (packed) {
            o->k[kp] = dense4((char *)packed + t->koff[kp] * elem, g->B, g->KH, t->rows[kp], g->DQ);
            o->v[kp] = dense4((char *)packed + t->voff[kp] * elem, g->B, g->KH, t->rows[kp], g->DV);
        } else {
            o->k[kp] = rows_of(k, g->ek, t->src[kp], t->rows[kp]);
            o->v[kp] = rows_of(v, g->ek, t->src[kp], t->rows[kp]);
        }
    }
}

/* Whether a 4-d tensor of `elem`-byte elements is packed row-major (then sent as it is). */
static bool packed4(const attn_tensor *t, int64_t elem) {
    RtView v;
    attn_error e;
    if (rt_view(&v, "t", t, elem, &e)) return false;
    int64_t want = 1;
    for (int d = 3; d >= 0; d--) {
        if (t->shape[d] > 1 && v.stride[d] != want) return false;
        want *= t->shape[d];
    }
    return true;
}

/* This rank's K and V as messages: the tensors themselves when packed, else packed copies
 * (own[0], own[1]); only when some rank needs them. */
static attn_status own_kv(Ring *g, char **k, char **v, char *own[2], attn_error *err) {
    const attn_ring_call *c = g->call;
    own[0] = own[1] = NULL;
    *k = *v = NULL;
    if (!g->st.sends) return ATTN_OK;
    const attn_tensor *ts[2] = {&c->k, &c->v};
    for (int i = 0; i < 2; i++) {
        if (packed4(ts[i], g->ek)) {
            *(i ? v : k) = ts[i]->data;
            continue;
        }
        own[i] = malloc((size_t)(g->ek * g->B * g->KH * g->nk * (i ? g->DV : g->DQ)) + 4);
        if (!own[i]) return rt_error(err, ATTN_ERR_NOMEM, "ring: out of memory for the K/V shard");
        copy4(ts[i], g->ek, own[i], false);
        *(i ? v : k) = own[i];
    }
    return ATTN_OK;
}

/* Buffers of a ring run. */
typedef struct Bufs {
    char *own[2];        /* this rank's K, V packed (when they are not) */
    char *ok, *ov;       /* what is sent of them */
    char *slot[2];       /* received K/V */
    attn_tensor o, lse;  /* the merged result: the call's o (16-bit o: o32), its lse (or lse_mem) */
    float *lse_mem;
    void *part_o;        /* one pair's o in the storage type, merged into o */
    float *part_l;       /* its lse */
    float *o32, *w32;    /* 16-bit o: the f32 result, one part widened */
    bool first[2];       /* query piece i has nothing merged yet */
} Bufs;

/* Forward pair (this rank's queries, rank j's keys in K, V). A query piece's first part is
 * written to the result directly; later ones merged into it through the log-sum-exps. */
static void forward_pair(Ring *g, Bufs *bf, int j, const KVV *kv) {
    const attn_ring_call *c = g->call;
    bool wide = g->qt != ATTN_F32; /* parts in f16/bf16, merged in f32 */
    attn_tensor po = dense4(bf->part_o, g->B, g->H, g->nq, g->DV);
    attn_tensor pl = {.data = bf->part_l, .ndim = 3, .shape = {g->B, g->H, g->nq}};
    for (int qp = 0; qp < g->nqp; qp++) {
        int64_t nrows = g->qe[qp] - g->qb[qp];
        for (int kp = 0; kp < 2; kp++)
            for (int dm = 0; dm < g->nd; dm++) {
                if (!*sub_at(g, dm, qp, j, kp) || !kv->rows[kp] || g->fail || !nrows) continue;
                bool first = bf->first[qp];
                bf->first[qp] = false;
                int64_t step = chunk_rows(g, nrows);
                for (int64_t r0 = 0; r0 < nrows && !g->fail; r0 += step) {
                    int64_t n = nrows - r0 < step ? nrows - r0 : step, row = g->qo[qp] + r0;
                    attn_tensor ro = rows_of(&bf->o, 4, row, n), rl = rows_of(&bf->lse, 4, row, n);
                    attn_call x = {.q = rows_of(&c->q, g->eq, row, n), .k = kv->k[kp], .v = kv->v[kp],
                                   .o = first && !wide ? ro : rows_of(&po, g->eq, row, n),
                                   .lse = first ? rl : rows_of(&pl, 4, row, n),
                                   .q_offset = g->q_offset + g->qb[qp] + r0, .q_offset_set = 1,
                                   .inputs = c->inputs, .ninputs = c->ninputs, .threads = c->threads};
                    attn_error e;
                    attn_status s = rt_launch_window(g->descs[dm], &x, g->kv_len, kv->start[kp], g->pool, &e);
                    progress(g);
                    if (!s && wide) { /* the part widened (exactly), merged into the f32 result */
                        int64_t st[3] = {g->H * g->nq * g->DV, g->nq * g->DV, g->DV};
                        rt_widen(bf->w32, x.o.data, st, g->B, g->H, n, g->DV, g->qt, NULL, 0);
                        attn_tensor parts[2] = {ro, dense4(bf->w32, g->B, g->H, n, g->DV)}, lses[2] = {rl, x.lse};
                        s = attn_rt_merge(first ? parts + 1 : parts, first ? lses + 1 : lses, first ? 1 : 2, &ro, &rl, &e);
                    } else if (!s && !first) {
                        attn_tensor parts[2] = {ro, x.o}, lses[2] = {rl, x.lse};
                        s = attn_rt_merge(parts, lses, 2, &ro, &rl, &e);
                    }
                    record(g, s, &e);
                }
            }
    }
}

/* Rows no pair saw: zeros and -inf. */
static void forward_unseen(Ring *g, Bufs *bf) {
    RtView vo, vl;
    attn_error e;
    if (rt_view(&vo, "o", &bf->o, 4, &e) || rt_view(&vl, "lse", &bf->lse, 4, &e)) return;
    for (int qp = 0; qp < g->nqp; qp++) {
        if (!bf->first[qp]) continue;
        for (int64_t b = 0; b < g->B; b++)
            for (int64_t h = 0; h < g->H; h++)
                for (int64_t i = g->qo[qp]; i < g->qo[qp] + g->qe[qp] - g->qb[qp]; i++) {
                    memset((float *)bf->o.data + b * vo.stride[0] + h * vo.stride[1] + i * vo.stride[2], 0,
                           sizeof(float) * (size_t)g->DV);
                    ((float *)bf->lse.data)[b * vl.stride[0] + h * vl.stride[1] + i * vl.stride[2]] = -INFINITY;
                }
    }
}

/* The f32 result o32 ([batch, heads, q rows, v_dim], packed) into o in its storage type,
 * rounded to nearest even. */
static void narrow_o(Ring *g, const float *o32, const attn_tensor *o) {
    RtView v;
    attn_error e;
    if (rt_view(&v, "o", o, g->eq, &e)) return; /* checked before */
    const float *x = o32;
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t h = 0; h < g->H; h++)
            for (int64_t i = 0; i < g->nq; i++) {
                rt_narrow_row(o->data, b * v.stride[0] + h * v.stride[1] + i * v.stride[2], x, g->DV, g->qt);
                x += g->DV;
            }
}

static attn_status ring_forward(const attn_rt_desc *const *descs, int ndescs, const attn_kernel *kern,
                                const attn_ring_call *call, MPI_Comm comm, attn_rt_pool *pool, attn_ring_stats *stats,
                                attn_error *errp) {
    attn_error e0, *err = errp ? errp : &e0;
    rt_ok(err);
    double t0 = now_ms();
    Ring g;
    Bufs bf;
    memset(&bf, 0, sizeof bf);
    attn_status s = ring_setup(&g, descs, ndescs, kern, call, comm, pool, err);
    if (s) goto out;
    int R = g.R, nrecv = 0;
    int64_t maxk = 0;
    for (int j = 0; j < R; j++) {
        int64_t n = attn_ring_shard_rows(g.kv_len, R, j, call->shard);
        if (j != g.r && g.vis[g.r * R + j]) {
            maxk = n > maxk ? n : maxk;
            nrecv++;
        }
    }
    int64_t no = g.B * g.H * g.nq;
    s = own_kv(&g, &bf.ok, &bf.ov, bf.own, err);
    if (!s && nrecv) {
        bf.slot[0] = malloc((size_t)(g.ek * kv_floats(&g, maxk)) + 4);
        bf.slot[1] = nrecv > 1 ? malloc((size_t)(g.ek * kv_floats(&g, maxk)) + 4) : bf.slot[0];
        if (!bf.slot[0] || !bf.slot[1]) s = rt_error(err, ATTN_ERR_NOMEM, "ring: out of memory for the K/V shards");
    }
    /* parts to merge; 16-bit o: every part goes through part_o, widened, into the f32 o32 */
    bool wide = g.qt != ATTN_F32, merges = wide || g.st.pairs_computed > 1 || g.nd > 1 || call->shard == ATTN_SHARD_ZIGZAG;
    if (!s && merges && !(bf.part_o = malloc((size_t)(no * (g.DV * g.eq + 4)) + 4)))
        s = rt_error(err, ATTN_ERR_NOMEM, "ring: out of memory for the partial outputs");
    bf.part_l = bf.part_o ? (float *)((char *)bf.part_o + no * g.DV * g.eq) : NULL;
    bf.o = call->o;
    if (!s && wide) {
        bf.o32 = malloc(sizeof(float) * (size_t)(no * g.DV) + 4);
        bf.w32 = malloc(sizeof(float) * (size_t)(no * g.DV) + 4);
        if (!bf.o32 || !bf.w32) s = rt_error(err, ATTN_ERR_NOMEM, "ring: out of memory for the f32 outputs");
        bf.o = dense4(bf.o32, g.B, g.H, g.nq, g.DV);
    }
    bf.lse = call->lse;
    if (!s && !call->lse.data) {
        if (!(bf.lse_mem = malloc(sizeof(float) * (size_t)no + 4)))
            s = rt_error(err, ATTN_ERR_NOMEM, "ring: out of memory for the log-sum-exps");
        bf.lse = (attn_tensor){.data = bf.lse_mem, .ndim = 3, .shape = {g.B, g.H, g.nq}};
    }
    if ((s = agree(&g, s, err))) goto out;
    bf.first[0] = bf.first[1] = true;

    /* step 0 computes the own shard while step 1's messages travel */
    if (R > 1 && (s = post_kv(&g, 1, bf.ok, bf.ov, bf.slot[0], err))) goto fatal; /* receive #0: slot 0 */
    KVV kv;
    Trim tr;
    if (g.vis[g.r * R + g.r]) {
        trim_of(&g, g.r, g.r, true, &tr);
        kvv_of(&g, &tr, NULL, 0, &call->k, &call->v, &kv);
        forward_pair(&g, &bf, g.r, &kv);
    }
    for (int t = 1, got = 0; t < R; t++) {
        int src = (g.r - t + R) % R;
        /* slots alternate between the receives (one slot: they take turns) */
        if (t + 1 < R && (s = post_kv(&g, t + 1, bf.ok, bf.ov, bf.slot[(got + (g.vis[g.r * R + src] ? 1 : 0)) % 2], err)))
            goto fatal;
        wait_reqs(&g, &g.rq[RQ_RECV + t % 2]);
        if (g.vis[g.r * R + src]) {
            trim_of(&g, g.r, src, false, &tr);
            kvv_of(&g, &tr, bf.slot[got % 2], g.ek, NULL, NULL, &kv);
            forward_pair(&g, &bf, src, &kv);
            got++;
        }
    }
    wait_reqs(&g, &g.rq[RQ_SEND]);
    s = g.fail;
    if (s) *err = g.ferr;
    if ((s = agree(&g, s, err))) goto out;
    forward_unseen(&g, &bf);
    if (wide) narrow_o(&g, bf.o32, &call->o);
    goto out;
fatal: /* out of memory for requests: no peer can be relied on any more */
    MPI_Abort(g.comm, 1);
out:
    g.st.ms_total = now_ms() - t0;
    if (stats) *stats = g.st;
    free(bf.own[0]);
    free(bf.own[1]);
    if (bf.slot[1] != bf.slot[0]) free(bf.slot[1]);
    free(bf.slot[0]);
    free(bf.part_o);
    free(bf.o32);
    free(bf.w32);
    free(bf.lse_mem);
    ring_free(&g);
    return s ? s : rt_ok(err);
}

/* The kernel's descriptors and a pool for the call's threads (NULL: one thread). Every rank
 * runs the same kernel, so a refusal here is the same on every rank. */
static attn_status kernel_begin(attn_kernel *kernel, const attn_ring_call *call, const attn_rt_desc **descs, int *n,
                                attn_rt_pool **pool, attn_error *err) {
    *pool = NULL;
    if (!kernel || !call) return rt_error(err, ATTN_ERR_NULL, "ring: the kernel and the call are required");
    if (attn_kernel_is_mla(kernel))
        return rt_error(err, ATTN_ERR_ARG, "ring: MLA kernels do not run over the ring yet");
    *n = attn_kernel_domains(kernel, descs, RING_MAX_DOM);
    if (*n < 1 || *n > RING_MAX_DOM) return rt_error(err, ATTN_ERR_ARG, "ring: %d key domains", *n);
    int threads = call->threads > 0 ? call->threads : attn_rt_cpu_count();
    if (threads > 1 && !(*pool = attn_rt_pool_create(threads)))
        return rt_error(err, ATTN_ERR_NOMEM, "ring: no thread pool of %d threads", threads);
    return ATTN_OK;
}

attn_status attn_ring_run(attn_kernel *kernel, const attn_ring_call *call, MPI_Comm comm, attn_ring_stats *stats,
                          attn_error *err) {
    const attn_rt_desc *descs[RING_MAX_DOM];
    int n = 0;
    attn_rt_pool *pool;
    attn_status s = kernel_begin(kernel, call, descs, &n, &pool, err);
    if (s) return s;
    s = ring_forward(descs, n, kernel, call, comm, pool, stats, err);
    attn_rt_pool_destroy(pool);
    return s;
}

/* The backward's buffers. */
typedef struct BBufs {
    char *own[2], *ok, *ov;   /* this rank's K, V packed (when they are not), what is sent */
    char *slot[2];            /* received K/V */
    float *q32, *o32, *kv32;  /* 16-bit or int8 storage: q, o and one pair's K/V widened to f32 */
    const float *scale[2];    /* int8 K/V: the inputs k_scale and v_scale */
    attn_rt_desc wide[RING_MAX_DOM]; /* the descriptors as f32 ones (the backward reads no tensor) */
    const attn_rt_desc *wp[RING_MAX_DOM];
    attn_ring_call cw;        /* the call with q32 and o32 */
    float *dq, *dq_t;         /* dq: accumulated, one piece's */
    float *dkv, *dkv_in;      /* this rank's dK/dV: accumulated, one partial received */
    float *part[2];           /* a peer's dK/dV partial (being sent) */
    float *win;               /* one key piece's dK/dV */
    int nd;                   /* gradients of inputs wanted */
    int64_t nel[ATTN_MAX_INPUTS];
    float *din, *din_t;       /* their sums and one call's, one after the other */
    attn_input dins[ATTN_MAX_INPUTS];
} BBufs;

/* The rows of a trim of K/V stored in g->kt, widened to f32 in the trim's layout at dst: from a
 * received message `packed`, or (packed NULL) from the caller's k and v. int8 rows are
 * multiplied by their scales (the inputs over kv_len, at the keys' positions). */
static void widen_trim(Ring *g, const Trim *t, const char *packed, const attn_tensor *k, const attn_tensor *v,
                       const float *const scale[2], float *dst) {
    for (int kp = 0; kp < 2; kp++)
        for (int x = 0; t->rows[kp] && x < 2; x++) {
            int64_t dim = x ? g->DV : g->DQ, off = x ? t->voff[kp] : t->koff[kp];
            int64_t st[3] = {g->KH * t->rows[kp] * dim, t->rows[kp] * dim, dim};
            const char *src = packed + off * g->ek;
            if (!packed) {
                RtView vw;
                attn_error e;
                if (rt_view(&vw, "k", x ? v : k, g->ek, &e)) return; /* checked before */
                memcpy(st, vw.stride, sizeof st);
                src = (const char *)(x ? v : k)->data + t->src[kp] * st[2] * g->ek;
            }
            rt_widen(dst + off, src, st, g->B, g->KH, t->rows[kp], dim, g->kt, scale[x] ? scale[x] + t->start[kp] : NULL,
                     g->kv_len);
        }
}

static void add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

/* Backward pair (this rank's queries, rank j's keys in K, V): dq into bf->dq, rank j's dK/dV
 * partial into `part` (packed as its K/V). */
static void backward_pair(Ring *g, BBufs *bf, const attn_grad_call *gc, int j, const KVV *kv, const Trim *tr,
                          float *part) {
    const attn_ring_call *c = g->call;
    int64_t BK = g->B * g->KH;
    memset(part, 0, sizeof(float) * (size_t)tr->floats);
    for (int qp = 0; qp < g->nqp; qp++) {
        int64_t nrows = g->qe[qp] - g->qb[qp];
        for (int kp = 0; kp < 2; kp++) {
            bool any = false;
            for (int dm = 0; dm < g->nd; dm++) any |= *sub_at(g, dm, qp, j, kp);
            int64_t len = kv->rows[kp];
            if (!any || len == 0 || g->fail) continue;
            int64_t step = chunk_rows(g, nrows);
            for (int64_t r0 = 0; r0 < nrows && !g->fail; r0 += step) {
                int64_t n = nrows - r0 < step ? nrows - r0 : step, row = g->qo[qp] + r0;
                attn_call x = {.q = rows_of(&c->q, 4, row, n), .k = kv->k[kp], .v = kv->v[kp],
                               .o = rows_of(&c->o, 4, row, n), .lse = rows_of(&c->lse, 4, row, n),
                               .q_offset = g->q_offset + g->qb[qp] + r0, .q_offset_set = 1, .inputs = c->inputs,
                               .ninputs = c->ninputs, .threads = c->threads};
                attn_grad_call y = {.dout = rows_of(&gc->dout, 4, row, n), .dq = dense4(bf->dq_t, g->B, g->H, n, g->DQ),
                                    .dk = dense4(bf->win, g->B, g->KH, len, g->DQ),
                                    .dv = dense4(bf->win + BK * len * g->DQ, g->B, g->KH, len, g->DV),
                                    .dinputs = bf->dins, .ndinputs = bf->nd};
                attn_error e;
                attn_status s =
                    rt_launch_backward_window(g->descs, g->nd, &x, &y, g->kv_len, kv->start[kp], g->pool, &e);
                progress(g);
                record(g, s, &e);
                if (s) break;
                /* dq rows, the key piece's rows of the partial (the trim's layout), the inputs' */
                for (int64_t b = 0; b < g->B; b++)
                    for (int64_t h = 0; h < g->H; h++)
                        add(bf->dq + ((b * g->H + h) * g->nq + row) * g->DQ, bf->dq_t + (b * g->H + h) * n * g->DQ,
                            n * g->DQ);
                add(part + tr->koff[kp], bf->win, BK * len * g->DQ);
                add(part + tr->voff[kp], bf->win + BK * len * g->DQ, BK * len * g->DV);
                int64_t off = 0;
                for (int i = 0; i < bf->nd; off += bf->nel[i], i++) add(bf->din + off, bf->din_t + off, bf->nel[i]);
            }
        }
    }
}

/* Adds a partial dK/dV in a trim's layout to this rank's, packed [batch * kv_heads][nk][dim]
 * (dK, then dV). */
static void add_trim(Ring *g, float *dkv, const float *part, const Trim *tr) {
    int64_t BK = g->B * g->KH;
    float *dv = dkv + BK * g->nk * g->DQ;
    for (int kp = 0; kp < 2; kp++)
        for (int64_t bh = 0; tr->rows[kp] && bh < BK; bh++) {
            add(dkv + (bh * g->nk + tr->src[kp]) * g->DQ, part + tr->koff[kp] + bh * tr->rows[kp] * g->DQ,
                tr->rows[kp] * g->DQ);
            add(dv + (bh * g->nk + tr->src[kp]) * g->DV, part + tr->voff[kp] + bh * tr->rows[kp] * g->DV,
                tr->rows[kp] * g->DV);
        }
}

static attn_status ring_backward(const attn_rt_desc *const *descs, int ndescs, const attn_kernel *kern,
                                 const attn_ring_call *call, const attn_grad_call *grad, MPI_Comm comm,
                                 attn_rt_pool *pool, attn_ring_stats *stats, attn_error *errp) {
    attn_error e0, *err = errp ? errp : &e0;
    rt_ok(err);
    double t0 = now_ms();
    Ring g;
    BBufs bf;
    memset(&bf, 0, sizeof bf);
    attn_status s = ring_setup(&g, descs, ndescs, kern, call, comm, pool, err);
    if (s) goto out;
    int R = g.R;
    /* the backward's own checks, agreed on */
    if (!grad) s = rt_error(err, ATTN_ERR_NULL, "ring: the gradient call is NULL");
    for (int i = 0; !s && i < ndescs; i++)
        if (!descs[i]->grad_step || !descs[i]->grad_bounds)
            s = rt_error(err, ATTN_ERR_ARG, "'%s' has no backward (only kernels with compute = f32 that are not MLA do)",
                         descs[i]->name ? descs[i]->name : "?");
    if (!s && !call->lse.data)
        s = rt_error(err, ATTN_ERR_NULL, "lse: data is NULL (the backward needs the forward's o and lse)");
    if (!s) {
        const attn_tensor *ts[4] = {&grad->dout, &grad->dq, &grad->dk, &grad->dv};
        static const char *const nm[4] = {"do", "dq", "dk", "dv"};
        int64_t want[4][4] = {{g.B, g.H, g.nq, g.DV}, {g.B, g.H, g.nq, g.DQ}, {g.B, g.KH, g.nk, g.DQ},
                              {g.B, g.KH, g.nk, g.DV}};
        for (int i = 0; !s && i < 4; i++) {
            if (!ts[i]->data && g.nq * g.nk > 0) s = rt_error(err, ATTN_ERR_NULL, "%s: data is NULL", nm[i]);
            else if (ts[i]->ndim != 4) s = rt_error(err, ATTN_ERR_RANK, "%s: %d dims, expected 4", nm[i], ts[i]->ndim);
            for (int k = 0; !s && k < 4; k++)
                if (ts[i]->shape[k] != want[i][k])
                    s = rt_error(err, ATTN_ERR_SHAPE, "%s: dim %d is %lld, expected %lld", nm[i], k,
                                 (long long)ts[i]->shape[k], (long long)want[i][k]);
            RtView v;
            if (!s) s = rt_view(&v, nm[i], ts[i], 4, err);
        }
        if (!s && (grad->ndinputs < 0 || grad->ndinputs > ATTN_MAX_INPUTS || (grad->ndinputs && !grad->dinputs)))
            s = rt_error(err, ATTN_ERR_ARG, "ndinputs is %d (0 .. %d, with dinputs)", grad->ndinputs, ATTN_MAX_INPUTS);
        bf.nd = s ? 0 : grad->ndinputs;
    }
    int64_t maxk = 0, maxp = 0, ndin = 0;
    for (int j = 0; j < R; j++) {
        int64_t n = attn_ring_shard_rows(g.kv_len, R, j, call->shard), kb[2], ke[2], ko[2];
        maxk = n > maxk ? n : maxk;
        int np = key_pieces(&g, j, kb, ke, ko);
        for (int p = 0; p < np; p++) maxp = ke[p] - kb[p] > maxp ? ke[p] - kb[p] : maxp;
    }
    for (int i = 0; i < bf.nd; i++) {
        const attn_tensor *t = &grad->dinputs[i].t;
        int64_t n = 1;
        for (int k = 0; k < t->ndim && k < ATTN_MAX_DIMS; k++) n *= t->shape[k];
        if (!t->data && n) s = rt_error(err, ATTN_ERR_NULL, "d%s: data is NULL", grad->dinputs[i].name);
        bf.nel[i] = n;
        ndin += n;
    }
    if (!s) {
        size_t kvs = (size_t)kv_floats(&g, maxk) + 1;
        s = own_kv(&g, &bf.ok, &bf.ov, bf.own, err);
        bf.slot[0] = malloc((size_t)g.ek * kvs);
        bf.slot[1] = R > 2 ? malloc((size_t)g.ek * kvs) : bf.slot[0];
        bf.part[0] = malloc(sizeof(float) * kvs);
        bf.part[1] = R > 2 ? malloc(sizeof(float) * kvs) : NULL;
        bf.dq = calloc((size_t)(g.B * g.H * g.nq * g.DQ) + 1, sizeof(float));
        bf.dq_t = malloc(sizeof(float) * ((size_t)(g.B * g.H * g.nq * g.DQ) + 1));
        bf.dkv = calloc((size_t)kv_floats(&g, g.nk) + 1, sizeof(float));
        bf.dkv_in = malloc(sizeof(float) * ((size_t)kv_floats(&g, g.nk) + 1));
        bf.win = malloc(sizeof(float) * ((size_t)kv_floats(&g, maxp) + 1));
        bf.din = calloc((size_t)(ndin * (R + 1)) + 1, sizeof(float));
        bf.din_t = malloc(sizeof(float) * ((size_t)ndin + 1));
        if (!s && (!bf.slot[0] || !bf.slot[1] || !bf.part[0] || (R > 2 && !bf.part[1]) || !bf.dq || !bf.dq_t ||
            !bf.dkv || !bf.dkv_in || !bf.win || !bf.din || !bf.din_t))
            s = rt_error(err, ATTN_ERR_NOMEM, "ring: out of memory for the backward's buffers");
        if (!bf.part[1]) bf.part[1] = bf.part[0];
        int64_t off = 0;
        for (int i = 0; i < bf.nd; off += bf.nel[i], i++) {
            bf.dins[i] = grad->dinputs[i];
            bf.dins[i].t.data = bf.din_t ? bf.din_t + off : NULL;
            memset(bf.dins[i].t.stride, 0, sizeof bf.dins[i].t.stride);
        }
    }
    bool wide = g.qt != ATTN_F32 || g.kt != ATTN_F32;
    if (!s && wide) { /* as a single process does: f32 copies, the f32 backward over them */
        bf.q32 = malloc(sizeof(float) * (size_t)(g.B * g.H * g.nq * g.DQ) + 4);
        bf.o32 = malloc(sizeof(float) * (size_t)(g.B * g.H * g.nq * g.DV) + 4);
        bf.kv32 = malloc(sizeof(float) * (size_t)kv_floats(&g, maxk) + 4);
        if (!bf.q32 || !bf.o32 || !bf.kv32) s = rt_error(err, ATTN_ERR_NOMEM, "ring: out of memory for the f32 copies");
        for (int x = 0; !s && g.kt == ATTN_I8 && x < 2; x++) {
            const char *nm = x ? "v_scale" : "k_scale";
            for (int i = 0; i < call->ninputs; i++)
                if (call->inputs[i].name && !strcmp(call->inputs[i].name, nm)) bf.scale[x] = call->inputs[i].t.data;
            if (!bf.scale[x]) s = rt_error(err, ATTN_ERR_INPUT, "ring: int8 K/V without the input '%s'", nm);
        }
        RtView vq, vo;
        if (!s && !(s = rt_view(&vq, "q", &call->q, g.eq, err)) && !(s = rt_view(&vo, "o", &call->o, g.eq, err))) {
            rt_widen(bf.q32, call->q.data, vq.stride, g.B, g.H, g.nq, g.DQ, g.qt, NULL, 0);
            rt_widen(bf.o32, call->o.data, vo.stride, g.B, g.H, g.nq, g.DV, g.qt, NULL, 0);
            for (int i = 0; i < ndescs; i++) {
                bf.wide[i] = *descs[i];
                bf.wide[i].dtype = bf.wide[i].kv_dtype = ATTN_F32;
                bf.wide[i].kv_f32 = 0;
                bf.wp[i] = &bf.wide[i];
            }
            g.descs = bf.wp;
            bf.cw = *call;
            bf.cw.q = dense4(bf.q32, g.B, g.H, g.nq, g.DQ);
            bf.cw.o = dense4(bf.o32, g.B, g.H, g.nq, g.DV);
            g.call = &bf.cw; /* own_kv has taken k and v as stored */
        }
    }
    if ((s = agree(&g, s, err))) goto out;
    attn_tensor K, V;
    KVV kv;
    Trim tr, tin;
    if (R > 1 && (s = post_kv(&g, 1, bf.ok, bf.ov, bf.slot[1], err))) goto fatal;
    if (g.vis[g.r * R + g.r]) {
        trim_of(&g, g.r, g.r, true, &tr);
        if (wide) {
            widen_trim(&g, &tr, NULL, &call->k, &call->v, bf.scale, bf.kv32);
            kvv_of(&g, &tr, bf.kv32, 4, NULL, NULL, &kv);
        } else {
            kvv_of(&g, &tr, NULL, 0, &call->k, &call->v, &kv);
        }
        backward_pair(&g, &bf, grad, g.r, &kv, &tr, bf.part[0]);
        add_trim(&g, bf.dkv, bf.part[0], &tr);
    }
    for (int t = 1; t < R; t++) {
        if (t + 1 < R && (s = post_kv(&g, t + 1, bf.ok, bf.ov, bf.slot[(t + 1) % 2], err))) goto fatal;
        int src = (g.r - t + R) % R, dst = (g.r + t) % R;
        Reqs *dr = &g.rq[RQ_DRECV];
        if (g.vis[dst * R + g.r]) { /* dst's queries' part of this rank's dK/dV: the rows it got */
            trim_of(&g, dst, g.r, false, &tin);
            if ((s = reqs_grow(dr, nmsgs(tin.floats * 4), err))) goto fatal;
            post(dr, false, bf.dkv_in, tin.floats * 4, dst, TAG_DKV, g.comm);
            g.st.bytes_received += tin.floats * 4;
        }
        wait_reqs(&g, &g.rq[RQ_RECV + t % 2]);
        if (g.vis[g.r * R + src]) {
            trim_of(&g, g.r, src, false, &tr);
            if (wide) widen_trim(&g, &tr, bf.slot[t % 2], NULL, NULL, bf.scale, bf.kv32);
            kvv_of(&g, &tr, wide ? (char *)bf.kv32 : bf.slot[t % 2], 4, NULL, NULL, &kv);
            wait_reqs(&g, &g.rq[RQ_DSEND + t % 2]); /* the partial buffer's last message is out */
            float *part = bf.part[t % 2];
            backward_pair(&g, &bf, grad, src, &kv, &tr, part);
            int64_t bytes = tr.floats * 4;
            Reqs *ds = &g.rq[RQ_DSEND + t % 2];
            if ((s = reqs_grow(ds, nmsgs(bytes), err))) goto fatal;
            post(ds, true, part, bytes, src, TAG_DKV, g.comm);
            g.st.bytes_sent += bytes;
        }
        if (dr->n) {
            wait_reqs(&g, dr);
            add_trim(&g, bf.dkv, bf.dkv_in, &tin); /* in step order: deterministic */
        }
    }
    wait_reqs(&g, &g.rq[RQ_SEND]);
    wait_reqs(&g, &g.rq[RQ_DSEND]);
    wait_reqs(&g, &g.rq[RQ_DSEND + 1]);
    s = g.fail;
    if (s) *err = g.ferr;
    if ((s = agree(&g, s, err))) goto out;
    /* the inputs' gradients: every rank's sum, added in rank order */
    if (ndin) {
        float *all = bf.din + ndin;
        MPI_Allgather(bf.din, (int)ndin, MPI_FLOAT, all, (int)ndin, MPI_FLOAT, g.comm);
        int64_t off = 0;
        for (int i = 0; i < bf.nd; off += bf.nel[i], i++)
            for (int64_t e = 0; e < bf.nel[i]; e++) {
                float sum = 0;
                for (int r = 0; r < R; r++) sum += all[r * ndin + off + e];
                ((float *)grad->dinputs[i].t.data)[e] = sum;
            }
    }
    copy4(&grad->dq, 4, bf.dq, true);
    kv_views(&g, bf.dkv, g.nk, &K, &V);
    copy4(&grad->dk, 4, K.data, true);
    copy4(&grad->dv, 4, V.data, true);
    goto out;
fatal:
    MPI_Abort(g.comm, 1);
out:
    g.st.ms_total = now_ms() - t0;
    if (stats) *stats = g.st;
    free(bf.own[0]);
    free(bf.own[1]);
    if (bf.slot[1] != bf.slot[0]) free(bf.slot[1]);
    free(bf.slot[0]);
    if (bf.part[1] != bf.part[0]) free(bf.part[1]);
    free(bf.part[0]);
    free(bf.dq);
    free(bf.dq_t);
    free(bf.dkv);
    free(bf.dkv_in);
    free(bf.win);
    free(bf.din);
    free(bf.din_t);
    free(bf.q32);
    free(bf.o32);
    free(bf.kv32);
    ring_free(&g);
    return s ? s : rt_ok(err);
}

attn_status attn_ring_run_backward(attn_kernel *kernel, const attn_ring_call *call, const attn_grad_call *grad,
                                   MPI_Comm comm, attn_ring_stats *stats, attn_error *err) {
    const attn_rt_desc *descs[RING_MAX_DOM];
    int n = 0;
    attn_rt_pool *pool;
    attn_status s = kernel_begin(kernel, call, descs, &n, &pool, err);
    if (s) return s;
    s = ring_backward(descs, n, kernel, call, grad, comm, pool, stats, err);
    attn_rt_pool_destroy(pool);
    return s;
}

attn_status attn_ring_launch(const attn_rt_desc *const *descs, int ndescs, const attn_ring_call *call,
                             MPI_Comm comm, attn_rt_pool *pool, attn_ring_stats *stats, attn_error *err) {
    return ring_forward(descs, ndescs, NULL, call, comm, pool, stats, err);
}

attn_status attn_ring_launch_backward(const attn_rt_desc *const *descs, int ndescs, const attn_ring_call *call,
                                      const attn_grad_call *grad, MPI_Comm comm, attn_rt_pool *pool,
                                      attn_ring_stats *stats, attn_error *err) {
    return ring_backward(descs, ndescs, NULL, call, grad, comm, pool, stats, err);
}
