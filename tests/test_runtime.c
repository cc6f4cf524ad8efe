/* test_runtime.c — attn_rt_check's error codes and attn_rt_launch's task coverage, with a
 * dummy tile function (no compiler involved). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn_rt.h"

#include "check.h"

enum { B = 2, H = 4, KH = 2, LQ = 7, LK = 9, DQ = 8, DV = 6, BLOCK_Q = 3 };

/* How often each (b, h, row) was computed; a test resets it. */
static atomic_int rows_seen[B * H * LQ];
static atomic_int bad_tiles;

static int32_t count_tile(const attn_rt_args *a, int64_t b, int64_t h, int64_t q0, int64_t q1) {
    if (b < 0 || b >= a->batch || h < 0 || h >= H || q0 < 0 || q1 > a->q_len || q0 >= q1 ||
        q0 % BLOCK_Q != 0 || (q1 - q0 != BLOCK_Q && q1 != a->q_len))
        atomic_fetch_add(&bad_tiles, 1);
    else
        for (int64_t r = q0; r < q1; r++) atomic_fetch_add(&rows_seen[(b * H + h) * LQ + r], 1);
    return 0;
}

static int32_t failing_tile(const attn_rt_args *a, int64_t b, int64_t h, int64_t q0, int64_t q1) {
    (void)a, (void)b, (void)q0, (void)q1;
    return h == 1;
}

static const attn_rt_input_desc inputs_desc[2] = {
    {.name = "src_len", .dtype = ATTN_I32, .rank = 1, .dim_kind = {ATTN_DIM_BATCH}},
    {.name = "rank",
     .dtype = ATTN_I32,
     .rank = 3,
     .dim_kind = {ATTN_DIM_BATCH, ATTN_DIM_CONST, ATTN_DIM_KV_LEN},
     .dim_value = {0, 5, 0}},
};

static attn_rt_desc make_desc(attn_rt_tile_fn tile) {
    attn_rt_desc d = {.name = "test", .heads = H, .kv_heads = KH, .qk_dim = DQ, .v_dim = DV,
                      .dtype = ATTN_F32, .block_q = BLOCK_Q, .ninputs = 2,
                      .inputs = inputs_desc, .tile = tile};
    return d;
}

static float qbuf[B * H * LQ * DQ], kbuf[B * KH * LK * DQ], vbuf[B * KH * LK * DV],
    obuf[B * H * LQ * DV], lsebuf[B * H * LQ];
static int32_t src_len[B], rank[B * 5 * LK];
static attn_input inputs[2];

static attn_tensor tensor(void *data, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    attn_tensor t = {.data = data, .ndim = ndim, .shape = {d0, d1, d2, d3}};
    return t;
}

/* A valid call whose inputs live in `in` (2 entries). */
static attn_call make_call_with(attn_input *in) {
    attn_call c;
    memset(&c, 0, sizeof c);
    c.q = tensor(qbuf, 4, B, H, LQ, DQ);
    c.k = tensor(kbuf, 4, B, KH, LK, DQ);
    c.v = tensor(vbuf, 4, B, KH, LK, DV);
    c.o = tensor(obuf, 4, B, H, LQ, DV);
    c.lse = tensor(lsebuf, 3, B, H, LQ, 0);
    c.q_offset = ATTN_Q_OFFSET_DEFAULT;
    in[0] = (attn_input){.name = "src_len", .t = tensor(src_len, 1, B, 0, 0, 0)};
    in[1] = (attn_input){.name = "rank", .t = tensor(rank, 3, B, 5, LK, 0)};
    c.inputs = in;
    c.ninputs = 2;
    return c;
}

static attn_call make_call(void) { return make_call_with(inputs); }

static attn_status check(const attn_call *c, const char *must_mention) {
    attn_rt_desc d = make_desc(count_tile);
    attn_error err;
    attn_status s = attn_rt_check(&d, c, NULL, &err);
    EXPECT(err.code == s);
    if (must_mention) CHECK(strstr(err.message, must_mention), "message '%s' lacks '%s'", err.message, must_mention);
    return s;
}

static void test_valid(void) {
    attn_call c = make_call();
    attn_rt_desc d = make_desc(count_tile);
    attn_rt_args a;
    attn_error err;
    EXPECT(attn_rt_check(&d, &c, &a, &err) == ATTN_OK);
    EXPECT(err.code == ATTN_OK && err.message[0] == 0);
    EXPECT(a.batch == B && a.q_len == LQ && a.kv_len == LK && a.q_offset == LK - LQ);
    EXPECT(a.q_stride[0] == H * LQ * DQ && a.q_stride[1] == LQ * DQ && a.q_stride[2] == DQ);
    EXPECT(a.k_stride[0] == KH * LK * DQ && a.v_stride[2] == DV && a.o_stride[1] == LQ * DV);
    EXPECT(a.lse_stride[0] == H * LQ && a.lse_stride[1] == LQ && a.lse == lsebuf);
    EXPECT(a.input[0] == src_len && a.input[1] == rank);
    EXPECT(a.input_dim[0][0] == B && a.input_dim[1][0] == B && a.input_dim[1][1] == 5 &&
           a.input_dim[1][2] == LK);
    /* inputs bound in any order */
    attn_input swapped[2] = {inputs[1], inputs[0]};
    c.inputs = swapped;
    EXPECT(attn_rt_check(&d, &c, &a, NULL) == ATTN_OK && a.input[0] == src_len);
    /* explicit strides: a q that is a slice of a wider buffer; lse optional */
    c = make_call();
    c.q.shape[3] = DQ / 2;
    c.q.stride[0] = H * LQ * DQ, c.q.stride[1] = LQ * DQ, c.q.stride[2] = DQ, c.q.stride[3] = 1;
    c.lse.data = NULL;
    c.q_offset = -3;
    d.qk_dim = DQ / 2;
    c.k.shape[3] = DQ / 2;
    EXPECT(attn_rt_check(&d, &c, &a, &err) == ATTN_OK);
    EXPECT(a.q_stride[2] == DQ && a.lse == NULL && a.q_offset == -3);
    /* f16 halves the byte extent but not the element strides */
    d = make_desc(count_tile);
    d.dtype = ATTN_F16;
    c = make_call();
    EXPECT(attn_rt_check(&d, &c, &a, &err) == ATTN_OK && a.q_stride[2] == DQ);
}

static void test_errors(void) {
    attn_call c = make_call();
    attn_rt_desc d = make_desc(count_tile);
    EXPECT(attn_rt_check(NULL, &c, NULL, NULL) == ATTN_ERR_NULL);
    EXPECT(attn_rt_check(&d, NULL, NULL, NULL) == ATTN_ERR_NULL);

    c.k.data = NULL;
    EXPECT(check(&c, "k") == ATTN_ERR_NULL);
    c = make_call(), c.o.data = NULL;
    EXPECT(check(&c, "o") == ATTN_ERR_NULL);
    c = make_call(), c.ninputs = 2, c.inputs = NULL;
    EXPECT(check(&c, NULL) == ATTN_ERR_NULL);
    c = make_call(), c.threads = -1;
    EXPECT(check(&c, "threads") == ATTN_ERR_ARG);

    c = make_call(), c.q.ndim = 3;
    EXPECT(check(&c, "q") == ATTN_ERR_RANK);
    c = make_call(), c.lse.ndim = 4;
    EXPECT(check(&c, "lse") == ATTN_ERR_RANK);
    c = make_call(), c.lse.data = NULL, c.lse.ndim = 0; /* no lse: its rank does not matter */
    EXPECT(check(&c, NULL) == ATTN_OK);

    c = make_call(), c.q.shape[1] = H + 1;
    EXPECT(check(&c, "q: dim 1 (heads) is 5, expected 4") == ATTN_ERR_SHAPE);
    c = make_call(), c.k.shape[0] = B + 1;
    EXPECT(check(&c, "k: dim 0 (batch) is 3, expected 2") == ATTN_ERR_SHAPE);
    c = make_call(), c.v.shape[2] = LK - 1;
    EXPECT(check(&c, "v: dim 2 (kv_len)") == ATTN_ERR_SHAPE);
    c = make_call(), c.v.shape[3] = DQ;
    EXPECT(check(&c, "v: dim 3 (v_dim) is 8, expected 6") == ATTN_ERR_SHAPE);
    c = make_call(), c.o.shape[2] = LQ + 1;
    EXPECT(check(&c, "o: dim 2 (q_len)") == ATTN_ERR_SHAPE);
    c = make_call(), c.lse.shape[1] = 1;
    EXPECT(check(&c, "lse: dim 1 (heads)") == ATTN_ERR_SHAPE);
    c = make_call(), c.q.shape[2] = 0, c.o.shape[2] = 0, c.lse.shape[2] = 0;
    EXPECT(check(&c, "") == ATTN_OK); /* q_len 0: a valid call with nothing to do */
    c = make_call(), c.q.shape[2] = -1, c.o.shape[2] = -1;
    EXPECT(check(&c, "q: dim 2 (q_len) is -1, expected >= 0") == ATTN_ERR_SHAPE);
    {
        attn_input in0[2];
        c = make_call_with(in0), c.q.shape[0] = 0, c.k.shape[0] = 0, c.v.shape[0] = 0, c.o.shape[0] = 0;
        c.lse.shape[0] = 0, in0[0].t.shape[0] = 0, in0[1].t.shape[0] = 0;
        EXPECT(check(&c, "") == ATTN_OK); /* batch 0: a valid call with nothing to do */
    }
    c = make_call(), c.q.shape[0] = -1;
    EXPECT(check(&c, "q: dim 0 (batch) is -1, expected >= 0") == ATTN_ERR_SHAPE);
    c = make_call(), c.k.shape[2] = -1;
    EXPECT(check(&c, "k") == ATTN_ERR_SHAPE);

    c = make_call(), c.q.stride[0] = H * LQ * DQ, c.q.stride[1] = LQ * DQ, c.q.stride[2] = DQ,
    c.q.stride[3] = 2;
    EXPECT(check(&c, "q: the last stride") == ATTN_ERR_STRIDE);
    c = make_call(), c.k.stride[0] = -1, c.k.stride[3] = 1;
    EXPECT(check(&c, "negative") == ATTN_ERR_STRIDE);
    /* o with every head at the same address: overlapping output */
    c = make_call(), c.o.stride[0] = LQ * DV, c.o.stride[1] = 0, c.o.stride[2] = DV,
    c.o.stride[3] = 1;
    EXPECT(check(&c, "overlap") == ATTN_ERR_STRIDE);
    /* a q with broadcast heads is fine: inputs may alias */
    c = make_call(), c.q.stride[0] = LQ * DQ, c.q.stride[1] = 0, c.q.stride[2] = DQ,
    c.q.stride[3] = 1;
    EXPECT(check(&c, NULL) == ATTN_OK);
    c = make_call(), c.lse.data = obuf;
    EXPECT(check(&c, "o and lse") == ATTN_ERR_STRIDE);

    c = make_call(), c.k.shape[2] = (int64_t)1 << 41, c.v.shape[2] = c.k.shape[2];
    EXPECT(check(&c, "2^40") == ATTN_ERR_OVERFLOW);
    c = make_call(), c.q.stride[0] = INT64_MAX / 2, c.q.stride[1] = 1, c.q.stride[2] = 1,
    c.q.stride[3] = 1;
    EXPECT(check(&c, "q") == ATTN_ERR_OVERFLOW);
    c = make_call(), c.k.stride[0] = (int64_t)1 << 61, c.k.stride[3] = 1;
    EXPECT(check(&c, "k") == ATTN_ERR_OVERFLOW);
    /* row-major element count that overflows: 2^40 * 2^40 */
    {
        attn_rt_desc big = d;
        big.qk_dim = 1 << 30;
        big.heads = big.kv_heads = 1 << 20;
        big.ninputs = 0;
        c = make_call(), c.ninputs = 0;
        c.q.shape[1] = c.k.shape[1] = c.v.shape[1] = c.o.shape[1] = 1 << 20;
        c.q.shape[2] = c.o.shape[2] = (int64_t)1 << 40;
        c.q.shape[3] = c.k.shape[3] = 1 << 30;
        c.lse.data = NULL;
        attn_error err;
        EXPECT(attn_rt_check(&big, &c, NULL, &err) == ATTN_ERR_OVERFLOW);
    }

    c = make_call(), c.q_offset = ((int64_t)1 << 40) + 1;
    EXPECT(check(&c, "q_offset") == ATTN_ERR_OFFSET);
    c = make_call(), c.q_offset = -((int64_t)1 << 41);
    EXPECT(check(&c, "q_offset") == ATTN_ERR_OFFSET);
    c = make_call(), c.q_offset = -((int64_t)1 << 40);
    EXPECT(check(&c, NULL) == ATTN_OK);

    c = make_call(), c.ninputs = 1;
    EXPECT(check(&c, "missing input 'rank'") == ATTN_ERR_INPUT);
    attn_input three[3];
    c = make_call();
    memcpy(three, inputs, sizeof inputs);
    three[2] = inputs[0];
    c.inputs = three, c.ninputs = 3;
    EXPECT(check(&c, "twice") == ATTN_ERR_INPUT);
    three[2] = inputs[0], three[2].name = "doc";
    EXPECT(check(&c, "unknown input 'doc'") == ATTN_ERR_INPUT);
    c = make_call(), inputs[1].t.shape[1] = 4;
    EXPECT(check(&c, "input 'rank': dim 1 is 4, expected 5") == ATTN_ERR_INPUT);
    c = make_call(), inputs[1].t.shape[2] = LK + 1;
    EXPECT(check(&c, "kv_len") == ATTN_ERR_INPUT);
    c = make_call(), inputs[0].t.ndim = 2, inputs[0].t.shape[1] = 1;
    EXPECT(check(&c, "input 'src_len': 2 dims, expected 1") == ATTN_ERR_INPUT);
    c = make_call(), inputs[0].t.data = NULL;
    EXPECT(check(&c, "src_len") == ATTN_ERR_NULL);
    c = make_call(), inputs[1].t.stride[0] = 5 * LK, inputs[1].t.stride[1] = LK + 1,
    inputs[1].t.stride[2] = 1;
    EXPECT(check(&c, "contiguous") == ATTN_ERR_STRIDE);
    c = make_call(), inputs[1].t.stride[0] = 5 * LK, inputs[1].t.stride[1] = LK,
    inputs[1].t.stride[2] = 1;
    EXPECT(check(&c, NULL) == ATTN_OK);
    c = make_call(), inputs[0].name = NULL;
    EXPECT(check(&c, NULL) == ATTN_ERR_NULL);
    {
        attn_rt_desc none = d;
        none.ninputs = 0;
        c = make_call();
        attn_error err;
        EXPECT(attn_rt_check(&none, &c, NULL, &err) == ATTN_ERR_INPUT);
        EXPECT(strstr(err.message, "declares no runtime inputs") != NULL);
    }
    {
        attn_rt_desc bad = d;
        bad.block_q = 0;
        c = make_call();
        EXPECT(attn_rt_check(&bad, &c, NULL, NULL) == ATTN_ERR_ARG);
    }
}

/* Every (b, h, q-tile) exactly once, for `threads` threads, with or without a pool. */
static void run_coverage(attn_rt_pool *pool, int threads, int64_t batch) {
    for (int i = 0; i < B * H * LQ; i++) atomic_store(&rows_seen[i], 0);
    atomic_store(&bad_tiles, 0);
    attn_call c = make_call();
    c.threads = threads;
    c.q.shape[0] = c.k.shape[0] = c.v.shape[0] = c.o.shape[0] = c.lse.shape[0] = batch;
    inputs[0].t.shape[0] = inputs[1].t.shape[0] = batch;
    attn_rt_desc d = make_desc(count_tile);
    attn_error err;
    attn_status s = attn_rt_launch(&d, &c, pool, &err);
    EXPECT(s == ATTN_OK);
    if (s) fprintf(stderr, "launch: %s\n", err.message);
    EXPECT(atomic_load(&bad_tiles) == 0);
    int wrong = -1; /* the first row not seen exactly once (rows of batch rows past `batch`: never) */
    for (int i = 0; i < B * H * LQ && wrong < 0; i++)
        if (atomic_load(&rows_seen[i]) != (i / (H * LQ) < batch ? 1 : 0)) wrong = i;
    CHECK(wrong < 0, "threads %d: row %d seen %d times", threads, wrong, wrong < 0 ? 0 : atomic_load(&rows_seen[wrong]));
}

typedef struct Racer {
    attn_rt_pool *pool;
    atomic_int *tasks;
} Racer;

static void *racer_main(void *arg) {
    Racer *r = arg;
    attn_rt_desc d = make_desc(failing_tile);
    d.ninputs = 0;
    attn_input own[2];
    for (int i = 0; i < 200; i++) {
        attn_call c = make_call_with(own);
        c.ninputs = 0;
        attn_error err;
        if (attn_rt_launch(&d, &c, r->pool, &err) != ATTN_ERR_INDEX) atomic_fetch_add(r->tasks, 1);
    }
    return NULL;
}

static void test_launch(void) {
    int ths[] = {1, 2, 8};
    for (int i = 0; i < 3; i++) {
        run_coverage(NULL, ths[i], B);
        run_coverage(NULL, ths[i], 1);
    }
    run_coverage(NULL, 0, B);
    attn_rt_pool *pool = attn_rt_pool_create(8);
    EXPECT(pool != NULL && attn_rt_pool_threads(pool) == 8);
    for (int rep = 0; rep < 50; rep++)
        for (int i = 0; i < 3; i++) run_coverage(pool, ths[i], B);
    run_coverage(pool, 0, B);
    run_coverage(pool, 100, B);

    /* A tile reporting a bad index fails the call with ATTN_ERR_INDEX. */
    attn_rt_desc d = make_desc(failing_tile);
    attn_call c = make_call();
    attn_error err;
    EXPECT(attn_rt_launch(&d, &c, pool, &err) == ATTN_ERR_INDEX);
    EXPECT(strstr(err.message, "out of bounds") != NULL);
    EXPECT(attn_rt_launch(&d, &c, NULL, &err) == ATTN_ERR_INDEX);
    c.threads = 1;
    EXPECT(attn_rt_launch(&d, &c, NULL, &err) == ATTN_ERR_INDEX);
    /* Validation errors come before any tile runs. */
    c.q.data = NULL;
    EXPECT(attn_rt_launch(&d, &c, pool, &err) == ATTN_ERR_NULL);
    d.tile = NULL;
    c = make_call();
    EXPECT(attn_rt_launch(&d, &c, pool, &err) == ATTN_ERR_NULL);

    /* Several callers share one pool: each call still completes correctly. */
    atomic_int wrong;
    atomic_init(&wrong, 0);
    Racer r = {pool, &wrong};
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, racer_main, &r);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    EXPECT(atomic_load(&wrong) == 0);
    attn_rt_pool_destroy(pool);
    attn_rt_pool_destroy(NULL);

    pool = attn_rt_pool_create(0);
    EXPECT(pool && attn_rt_pool_threads(pool) == attn_rt_cpu_count());
    run_coverage(pool, 0, B);
    attn_rt_pool_destroy(pool);
    pool = attn_rt_pool_create(1);
    run_coverage(pool, 0, B);
    attn_rt_pool_destroy(pool);
}

int main(void) {
    EXPECT(attn_rt_cpu_count() >= 1);
    EXPECT(strcmp(attn_status_name(ATTN_ERR_SHAPE), "ATTN_ERR_SHAPE") == 0);
    test_valid();
    test_errors();
    test_launch();
    return check_done("test_runtime");
}
