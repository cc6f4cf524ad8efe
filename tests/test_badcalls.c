/* test_badcalls.c — the catalogue of bad calls of the C API (attn.h), each with its exact
 * error code, through real JIT-compiled kernels: bad attn_compile arguments, and bad tensors,
 * strides, offsets and inputs given to attn_run, and bad descriptors given to the runtime's
 * permuted and MLA entry points (what AOT headers call). Every rejected call must leave the output
 * untouched (canaries around and inside o and lse), and an input value used as an index that
 * points outside its array must give ATTN_ERR_INDEX without writing outside o. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "attn/attn.h"

#include "check.h"

static int cases;

enum { B = 2, H = 4, KH = 2, LQ = 5, LK = 7, D = 8, DV = 8, PAD = 64 };
#define CANARY 1234.5f

/* Tensors with PAD canary floats before and after each. */
static float qmem[PAD + B * H * LQ * D + PAD], kmem[PAD + B * KH * LK * D + PAD],
    vmem[PAD + B * KH * LK * DV + PAD], omem[PAD + B * H * LQ * DV + PAD],
    lsemem[PAD + B * H * LQ + PAD];
static int32_t start[B], doc[B * LK];

static const char spec_text[] =
    "attention gqa {\n"
    "    input i32 start[batch];\n"
    "    input i32 doc[batch, seq];\n"
    "    heads = 4; kv_heads = 2; head_dim = 8;\n"
    "    mask = k <= q && doc[b, k] == doc[b, start[b]];\n"
    "}\n";

/* Uniform in [-0.5, 0.5), a stream per seed. */
static void fill(float *p, size_t n, uint64_t seed) { check_fill(p, n, &seed, CHECK_UNIFORM, 0.5); }

static void reset_outputs(void) {
    for (size_t i = 0; i < sizeof omem / sizeof *omem; i++) omem[i] = CANARY;
    for (size_t i = 0; i < sizeof lsemem / sizeof *lsemem; i++) lsemem[i] = CANARY;
}

/* True if nothing in o's and lse's blocks was written (canaries everywhere). */
static bool outputs_untouched(void) {
    for (size_t i = 0; i < sizeof omem / sizeof *omem; i++)
        if (omem[i] != CANARY) return false;
    for (size_t i = 0; i < sizeof lsemem / sizeof *lsemem; i++)
        if (lsemem[i] != CANARY) return false;
    return true;
}

/* True if nothing outside the o and lse tensors proper was written. */
static bool guards_untouched(void) {
    for (int i = 0; i < PAD; i++)
        if (omem[i] != CANARY || omem[PAD + B * H * LQ * DV + i] != CANARY ||
            lsemem[i] != CANARY || lsemem[PAD + B * H * LQ + i] != CANARY)
            return false;
    return true;
}

static attn_tensor t4(float *data, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    attn_tensor t = {.data = data, .ndim = 4, .shape = {d0, d1, d2, d3}};
    return t;
}

static attn_input inputs[3];

/* A valid call of the gqa kernel. */
static attn_call good_call(void) {
    attn_call c;
    memset(&c, 0, sizeof c);
    c.q = t4(qmem + PAD, B, H, LQ, D);
    c.k = t4(kmem + PAD, B, KH, LK, D);
    c.v = t4(vmem + PAD, B, KH, LK, DV);
    c.o = t4(omem + PAD, B, H, LQ, DV);
    c.lse = (attn_tensor){.data = lsemem + PAD, .ndim = 3, .shape = {B, H, LQ}};
    c.q_offset = ATTN_Q_OFFSET_DEFAULT;
    inputs[0] = (attn_input){.name = "start", .t = {.data = start, .ndim = 1, .shape = {B}}};
    inputs[1] = (attn_input){.name = "doc", .t = {.data = doc, .ndim = 2, .shape = {B, LK}}};
    inputs[2] = inputs[0];
    c.inputs = inputs;
    c.ninputs = 2;
    c.threads = 1;
    return c;
}

/* Runs `c`, expects `want` with a message, and (for a rejection) untouched outputs. */
static void expect_run(attn_kernel *kern, const attn_call *c, attn_status want, const char *what,
                       int line) {
    cases++;
    reset_outputs();
    attn_error err;
    memset(&err, 0x5a, sizeof err);
    attn_status s = attn_run(kern, c, &err);
    CHECK(s == want && err.code == s && (s == ATTN_OK || err.message[0]) &&
              (s == ATTN_OK || s == ATTN_ERR_INDEX || outputs_untouched()) && guards_untouched(),
          "line %d: %s: got %s (%s), expected %s%s", line, what, attn_status_name(s), err.message,
          attn_status_name(want), outputs_untouched() ? "" : " (outputs written)");
}
#define RUN(c, want, what) expect_run(kern, &(c), want, what, __LINE__)

static attn_kernel *compile_text(const char *text, const attn_options *opts) {
    attn_kernel *kern = NULL;
    char *diags = NULL;
    attn_error err;
    attn_status st = attn_compile("badcalls.attn", text, opts, &kern, &diags, &err);
    CHECK(st == ATTN_OK, "compile failed: %s\n%s", err.message, diags ? diags : "");
    attn_free(diags);
    return kern;
}

/* attn_compile's own rejections. */
static void test_compile_args(void) {
    attn_kernel *kern = (attn_kernel *)&kern; /* must be reset to NULL on failure */
    attn_error err;
    char *diags = NULL;
    attn_options opts;
    attn_options_init(&opts);
#define COMPILE(path, text, o, want)                                                        \
    do {                                                                                    \
        cases++;                                                                            \
        attn_status s_ = attn_compile(path, text, o, &kern, &diags, &err);                  \
        EXPECT(s_ == (want) && err.code == s_ && err.message[0] && kern == NULL);           \
        attn_free(diags);                                                                   \
        diags = NULL;                                                                       \
    } while (0)
    cases++;
    EXPECT(attn_compile("x.attn", spec_text, NULL, NULL, NULL, &err) == ATTN_ERR_NULL);
    cases++;
    EXPECT(attn_compile(NULL, NULL, NULL, &kern, NULL, &err) == ATTN_ERR_NULL && !kern);
    cases++; /* no error record and no diagnostics pointer: still just a code */
    EXPECT(attn_compile(NULL, "attention a {", NULL, &kern, NULL, NULL) == ATTN_ERR_SPEC && !kern);
    COMPILE("/nonexistent/dir/x.attn", NULL, NULL, ATTN_ERR_IO);
    COMPILE("/tmp", NULL, NULL, ATTN_ERR_IO); /* a directory */
    COMPILE(NULL, "attention a { heads = 8; }", NULL, ATTN_ERR_SPEC);
    COMPILE(NULL, "", NULL, ATTN_ERR_SPEC);
    /* the diagnostics are handed over on a spec error */
    cases++;
    EXPECT(attn_compile("d.attn", "attention a { heads = 8; }", NULL, &kern, &diags, &err) ==
               ATTN_ERR_SPEC &&
           diags && strstr(diags, "d.attn:1:") && strstr(diags, "error: "));
    attn_free(diags);
    diags = NULL;
    /* an address-space limit that leaves LLVM too little room: ATTN_ERR_NOMEM, not an abort
     * (std::bad_alloc inside LLVM); lifted, the same compile succeeds */
    {
        struct rlimit old, rl;
        getrlimit(RLIMIT_AS, &old);
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (f && fscanf(f, "%lu", &pages) != 1) pages = 0;
        if (f) fclose(f);
        rl = old;
        rl.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)24 << 20);
        cases++;
        EXPECT(pages > 0 && setrlimit(RLIMIT_AS, &rl) == 0);
        opts.no_cache = 1;
        COMPILE(NULL, spec_text, &opts, ATTN_ERR_NOMEM);
        cases++;
        EXPECT(strstr(err.message, "ulimit -v") != NULL);
        setrlimit(RLIMIT_AS, &old);
        attn_kernel *k2 = compile_text(spec_text, &opts);
        cases++;
        EXPECT(k2 != NULL);
        attn_kernel_free(k2);
        opts.no_cache = 0;
    }
    /* two blocks, no kernel named; an unknown kernel name */
    const char *two = "attention a { heads = 1; head_dim = 4; }\n"
                      "attention b { heads = 1; head_dim = 4; }\n";
    COMPILE(NULL, two, NULL, ATTN_ERR_ARG);
    opts.kernel = "c";
    COMPILE(NULL, two, &opts, ATTN_ERR_ARG);
    cases++;
    EXPECT(strstr(err.message, "'c'") != NULL);
    opts.kernel = NULL;
    /* -D: unknown name, bad syntax, bad value, NULL entry */
    const char *with_param = "param w = 4;\nattention a { heads = 1; head_dim = 4; mask = q - k < w; }\n";
    const char *defs_unknown[] = {"ww=3"};
    opts.defines = defs_unknown;
    opts.ndefines = 1;
    COMPILE(NULL, with_param, &opts, ATTN_ERR_SPEC);
    cases++;
    EXPECT(strstr(err.message, "errors") != NULL);
    const char *bad_syntax[][1] = {{"w"}, {"=3"}, {"w="}, {""}};
    for (int i = 0; i < 4; i++) {
        opts.defines = bad_syntax[i];
        COMPILE(NULL, with_param, &opts, ATTN_ERR_ARG);
    }
    const char *null_def[] = {NULL};
    opts.defines = null_def;
    COMPILE(NULL, with_param, &opts, ATTN_ERR_ARG);
    const char *bad_value[] = {"w=abc"};
    opts.defines = bad_value;
    COMPILE(NULL, with_param, &opts, ATTN_ERR_SPEC);
    const char *good[] = {"w=2"};
    opts.defines = good;
    cases++;
    EXPECT(attn_compile(NULL, with_param, &opts, &kern, NULL, &err) == ATTN_OK && kern);
    attn_kernel_free(kern);
    kern = NULL;
    attn_options_init(&opts);
    /* bad option values: the message names the field */
    opts.threads = -1;
    COMPILE(NULL, with_param, &opts, ATTN_ERR_ARG);
    cases++;
    CHECK(strstr(err.message, "attn_options.threads is -1"), "threads -1: %s", err.message);
    attn_options_init(&opts);
    opts.compile_threads = -2;
    COMPILE(NULL, with_param, &opts, ATTN_ERR_ARG);
    cases++;
    CHECK(strstr(err.message, "attn_options.compile_threads is -2"), "compile_threads -2: %s", err.message);
    attn_options_init(&opts);
    opts.opt_level = 4;
    COMPILE(NULL, with_param, &opts, ATTN_ERR_ARG);
    cases++;
    CHECK(strstr(err.message, "attn_options.opt_level is 4"), "opt_level 4: %s", err.message);
    attn_options_init(&opts);
    /* a bad define's diagnostic has a location no front end owns */
    opts.defines = defs_unknown;
    opts.ndefines = 1;
    cases++;
    EXPECT(attn_compile(NULL, with_param, &opts, &kern, &diags, &err) == ATTN_ERR_SPEC && diags &&
           strstr(diags, "<defines>: error: unknown define 'ww'") && !strstr(diags, "command line"));
    attn_free(diags);
    diags = NULL;
    attn_options_init(&opts);
    /* the API's NULL tolerance */
    cases++;
    EXPECT(attn_run(NULL, NULL, &err) == ATTN_ERR_NULL && err.code == ATTN_ERR_NULL);
    attn_kernel_free(NULL);
    attn_free(NULL);
    EXPECT(attn_kernel_desc(NULL) == NULL);
#undef COMPILE
}

/* attn_run's rejections of tensors, strides, offsets and inputs. */
static void test_run_args(attn_kernel *kern) {
    attn_call c = good_call();
    attn_error err;
    RUN(c, ATTN_OK, "the good call");
    cases++;
    EXPECT(attn_run(kern, NULL, &err) == ATTN_ERR_NULL);

    /* NULL data of each required tensor */
    attn_tensor *req[4] = {&c.q, &c.k, &c.v, &c.o};
    const char *names[5] = {"q", "k", "v", "o", "lse"};
    for (int i = 0; i < 4; i++) {
        c = good_call();
        req[i]->data = NULL;
        RUN(c, ATTN_ERR_NULL, names[i]);
    }
    /* a NULL lse is fine: it is optional */
    c = good_call();
    c.lse.data = NULL;
    RUN(c, ATTN_OK, "no lse");

    /* wrong rank of each tensor: one too few, one too many, 0, negative, huge */
    attn_tensor *all[5] = {&c.q, &c.k, &c.v, &c.o, &c.lse};
    const int ranks[] = {3, 5, 0, -1, 1000};
    for (int i = 0; i < 5; i++)
        for (int r = 0; r < 5; r++) {
            c = good_call();
            if (ranks[r] == (i == 4 ? 3 : 4)) continue;
            all[i]->ndim = ranks[r];
            RUN(c, ATTN_ERR_RANK, names[i]);
        }

    /* every dim of every tensor: disagreeing with the spec or with q/k, zero, negative */
    for (int i = 0; i < 5; i++)
        for (int d = 0; d < all[i]->ndim; d++) {
            const int64_t bad[] = {0, -1, INT64_MIN};
            for (int j = 0; j < 3; j++) {
                c = good_call();
                all[i]->shape[d] = bad[j];
                RUN(c, ATTN_ERR_SHAPE, names[i]);
            }
            /* +1: against the spec, or (q's batch and q_len, k's kv_len, which fix the
             * others) against the next tensor */
            c = good_call();
            all[i]->shape[d] += 1;
            RUN(c, ATTN_ERR_SHAPE, names[i]);
            /* beyond 2^40 */
            c = good_call();
            all[i]->shape[d] = ((int64_t)1 << 40) + 1;
            RUN(c, ATTN_ERR_OVERFLOW, names[i]);
            c = good_call();
            all[i]->shape[d] = INT64_MAX;
            RUN(c, ATTN_ERR_OVERFLOW, names[i]);
        }
    /* q's batch and q_len disagreeing with o (and inputs sized by batch): o is then wrong */
    c = good_call();
    c.q.shape[0] = 1; /* then k's batch disagrees */
    RUN(c, ATTN_ERR_SHAPE, "q batch vs k");
    c = good_call();
    c.q.shape[2] = LQ - 1;
    RUN(c, ATTN_ERR_SHAPE, "q_len vs o");
    c = good_call();
    c.k.shape[2] = LK - 1;
    RUN(c, ATTN_ERR_SHAPE, "kv_len vs v");

    /* strides: negative, non-unit last, in each tensor */
    for (int i = 0; i < 5; i++) {
        int n = all[i]->ndim;
        c = good_call();
        all[i]->stride[n - 1] = 1;
        all[i]->stride[0] = -1;
        RUN(c, ATTN_ERR_STRIDE, names[i]);
        c = good_call();
        for (int d = 0; d < n; d++) all[i]->stride[d] = 1000;
        RUN(c, ATTN_ERR_STRIDE, names[i]);
        c = good_call();
        all[i]->stride[n - 1] = 2; /* other strides 0: not "all zero" */
        RUN(c, ATTN_ERR_STRIDE, names[i]);
        c = good_call();
        all[i]->stride[n - 1] = INT64_MIN;
        RUN(c, ATTN_ERR_STRIDE, names[i]);
    }
    /* explicit row-major strides are the same as zeros */
    c = good_call();
    c.q.stride[0] = H * LQ * D, c.q.stride[1] = LQ * D, c.q.stride[2] = D, c.q.stride[3] = 1;
    RUN(c, ATTN_OK, "explicit strides");
    /* outputs whose elements overlap, and o overlapping lse */
    c = good_call();
    c.o.stride[0] = 0, c.o.stride[1] = DV, c.o.stride[2] = DV, c.o.stride[3] = 1;
    RUN(c, ATTN_ERR_STRIDE, "o rows overlap");
    c = good_call();
    c.o.stride[0] = H * LQ * DV, c.o.stride[1] = LQ * DV, c.o.stride[2] = 1, c.o.stride[3] = 1;
    RUN(c, ATTN_ERR_STRIDE, "o row stride 1");
    c = good_call();
    c.lse.stride[0] = H * LQ, c.lse.stride[1] = 1, c.lse.stride[2] = 1;
    RUN(c, ATTN_ERR_STRIDE, "lse heads overlap");
    c = good_call();
    c.lse.data = omem + PAD + 3;
    RUN(c, ATTN_ERR_STRIDE, "o and lse overlap");
    /* inputs may alias each other and q/k/v: they are only read */
    c = good_call();
    c.v.data = c.k.data;
    RUN(c, ATTN_OK, "k and v alias");

    /* overflowing strides and sizes (checked before any address is formed) */
    c = good_call();
    c.k.stride[0] = (int64_t)1 << 62, c.k.stride[1] = (int64_t)1 << 61, c.k.stride[2] = D,
    c.k.stride[3] = 1;
    RUN(c, ATTN_ERR_OVERFLOW, "k strides overflow the offset");
    c = good_call();
    c.v.stride[0] = (int64_t)1 << 61, c.v.stride[1] = 1 << 20, c.v.stride[2] = DV,
    c.v.stride[3] = 1;
    RUN(c, ATTN_ERR_OVERFLOW, "v byte size overflows");
    c = good_call();
    c.o.stride[0] = INT64_MAX, c.o.stride[1] = LQ * DV, c.o.stride[2] = DV, c.o.stride[3] = 1;
    RUN(c, ATTN_ERR_OVERFLOW, "o stride INT64_MAX");
    {
        /* shape 2^40 along kv_len with a stride whose product overflows */
        c = good_call();
        int64_t big = (int64_t)1 << 40;
        c.k.shape[2] = big, c.v.shape[2] = big;
        c.k.stride[0] = 2, c.k.stride[1] = 1, c.k.stride[2] = (int64_t)1 << 24, c.k.stride[3] = 1;
        RUN(c, ATTN_ERR_OVERFLOW, "kv_len 2^40 times a 2^24 stride");
        /* batch and q_len 2^40 each, row-major: 2^80 elements */
        c = good_call();
        c.q.shape[0] = c.k.shape[0] = c.v.shape[0] = c.o.shape[0] = c.lse.shape[0] = big;
        c.q.shape[2] = c.o.shape[2] = c.lse.shape[2] = big;
        RUN(c, ATTN_ERR_OVERFLOW, "batch * q_len = 2^80 elements");
    }
    /* a tensor ending past the top of the address space */
    c = good_call();
    c.q.data = (void *)(UINTPTR_MAX - 64);
    RUN(c, ATTN_ERR_OVERFLOW, "q wraps around the address space");

    /* q_offset */
    const int64_t offs[] = {((int64_t)1 << 40) + 1, -((int64_t)1 << 40) - 1, INT64_MAX,
                            INT64_MIN + 1};
    for (int i = 0; i < 4; i++) {
        c = good_call();
        c.q_offset = offs[i];
        RUN(c, ATTN_ERR_OFFSET, "q_offset");
    }
    const int64_t ok_offs[] = {0, -100, (int64_t)1 << 40, -((int64_t)1 << 40)};
    for (int i = 0; i < 4; i++) {
        c = good_call();
        c.q_offset = ok_offs[i];
        c.q_offset_set = 1;
        RUN(c, ATTN_OK, "q_offset in range");
    }
    /* threads and input counts */
    c = good_call();
    c.threads = -1;
    RUN(c, ATTN_ERR_ARG, "threads -1");
    c = good_call();
    c.ninputs = -1;
    RUN(c, ATTN_ERR_ARG, "ninputs -1");
    c = good_call();
    c.inputs = NULL;
    RUN(c, ATTN_ERR_NULL, "inputs NULL");

    /* inputs: missing, unknown, duplicated, unnamed, NULL data, wrong rank/size, strided */
    c = good_call();
    c.ninputs = 1;
    RUN(c, ATTN_ERR_INPUT, "doc missing");
    c = good_call();
    c.ninputs = 0;
    RUN(c, ATTN_ERR_INPUT, "no inputs");
    c = good_call();
    c.ninputs = 3;
    RUN(c, ATTN_ERR_INPUT, "start twice");
    c = good_call();
    inputs[1].name = "docs";
    RUN(c, ATTN_ERR_INPUT, "unknown input");
    c = good_call();
    inputs[2] = (attn_input){.name = "extra", .t = inputs[0].t};
    c.ninputs = 3;
    RUN(c, ATTN_ERR_INPUT, "an extra input");
    c = good_call();
    inputs[0].name = NULL;
    RUN(c, ATTN_ERR_NULL, "unnamed input");
    c = good_call();
    inputs[1].t.data = NULL;
    RUN(c, ATTN_ERR_NULL, "input data NULL");
    const int bad_ranks[] = {0, 1, 3, 4, -1, 99};
    for (int i = 0; i < 6; i++) {
        c = good_call();
        inputs[1].t.ndim = bad_ranks[i];
        RUN(c, ATTN_ERR_INPUT, "doc rank");
    }
    c = good_call();
    inputs[0].t.ndim = 0; /* a scalar given for start[batch] */
    RUN(c, ATTN_ERR_INPUT, "start rank 0");
    const int64_t bad_sizes[] = {B + 1, B - 1, 0, -1, (int64_t)1 << 40};
    for (int i = 0; i < 5; i++) {
        c = good_call();
        inputs[0].t.shape[0] = bad_sizes[i];
        RUN(c, ATTN_ERR_INPUT, "start size");
        c = good_call();
        inputs[1].t.shape[0] = bad_sizes[i];
        RUN(c, ATTN_ERR_INPUT, "doc dim 0");
        c = good_call();
        inputs[1].t.shape[1] = bad_sizes[i] + LK - B; /* LK+1, LK-1, ... */
        RUN(c, ATTN_ERR_INPUT, "doc dim 1");
    }
    c = good_call();
    inputs[1].t.stride[0] = LK + 1, inputs[1].t.stride[1] = 1;
    RUN(c, ATTN_ERR_STRIDE, "doc padded rows");
    c = good_call();
    inputs[1].t.stride[0] = 1, inputs[1].t.stride[1] = B;
    RUN(c, ATTN_ERR_STRIDE, "doc transposed");
    c = good_call();
    inputs[1].t.stride[0] = LK, inputs[1].t.stride[1] = 1;
    RUN(c, ATTN_OK, "doc explicit row-major strides");
}

/* An output whose bytes overlap a tensor or an input the call reads is refused, naming both
 * (the kernel would read values it already overwrote). */
static void test_output_overlap(attn_kernel *kern) {
    enum { NQ = B * H * LQ * D, NK = B * KH * LK * D, NO = B * H * LQ * DV, NL = B * H * LQ };
    static float mem[NQ + NK + NK + NO + NL + 64];
    fill(mem, sizeof mem / sizeof *mem, 21);
    float *q = mem, *k = q + NQ, *v = k + NK, *o = v + NK, *lse = o + NO;
    attn_call good = good_call();
    good.q = t4(q, B, H, LQ, D), good.k = t4(k, B, KH, LK, D), good.v = t4(v, B, KH, LK, DV);
    good.o = t4(o, B, H, LQ, DV);
    good.lse = (attn_tensor){.data = lse, .ndim = 3, .shape = {B, H, LQ}};
    attn_call c = good;
    RUN(c, ATTN_OK, "adjacent tensors");
    struct {
        const char *what, *message;
        float *o, *lse;
    } cases_[] = {
        {"o over q", "o overlaps q", q + NQ - 1, lse},
        {"o is k", "o overlaps k", k, lse},
        {"o over v", "o overlaps v", v + 3, NULL},
        {"lse over q", "lse overlaps q", o, q + 5},
        {"lse over v", "lse overlaps v", o, v + 2},
    };
    for (size_t i = 0; i < sizeof cases_ / sizeof cases_[0]; i++) {
        c = good;
        c.o.data = cases_[i].o;
        c.lse.data = cases_[i].lse;
        attn_error err;
        cases++;
        attn_status s = attn_run(kern, &c, &err);
        CHECK(s == ATTN_ERR_STRIDE && strstr(err.message, cases_[i].message), "%s: got %s (%s)",
              cases_[i].what, attn_status_name(s), err.message);
    }
    /* an output over a runtime input */
    static int32_t in_mem[B * LK + NO];
    for (int b = 0; b < B; b++)
        for (int j = 0; j < LK; j++) in_mem[b * LK + j] = j / 3;
    c = good;
    inputs[1].t.data = in_mem;
    c.o.data = (float *)in_mem + B * LK;
    RUN(c, ATTN_OK, "o just after doc");
    c = good;
    inputs[1].t.data = in_mem;
    c.o.data = (float *)in_mem + B * LK - 1;
    attn_error err;
    cases++;
    attn_status s = attn_run(kern, &c, &err);
    CHECK(s == ATTN_ERR_STRIDE && strstr(err.message, "o overlaps doc"), "o over doc: got %s (%s)",
          attn_status_name(s), err.message);
}

/* A tensor with no element (kv_len 0, q_len 0) may have NULL data: nothing is read. */
static void test_empty_null(attn_kernel *kern) {
    attn_call c = good_call();
    c.k = t4(NULL, B, KH, 0, D);
    c.v = t4(NULL, B, KH, 0, DV);
    inputs[1].t = (attn_tensor){.data = NULL, .ndim = 2, .shape = {B, 0}};
    RUN(c, ATTN_OK, "kv_len 0 with NULL k, v and doc");
    bool zeros = true;
    for (int i = 0; i < B * H * LQ * DV; i++) zeros &= omem[PAD + i] == 0;
    for (int i = 0; i < B * H * LQ; i++) zeros &= isinf(lsemem[PAD + i]) && lsemem[PAD + i] < 0;
    cases++;
    CHECK(zeros, "kv_len 0: o is not zeros or lse not -inf");
    c = good_call();
    c.q = t4(NULL, B, H, 0, D);
    c.o = t4(NULL, B, H, 0, DV);
    c.lse = (attn_tensor){.data = NULL, .ndim = 3, .shape = {B, H, 0}};
    RUN(c, ATTN_OK, "q_len 0 with NULL q, o and lse");
    c = good_call();
    c.q = t4(NULL, B, H, 0, D);
    c.o = t4(omem + PAD, B, H, 0, DV);
    c.lse.shape[2] = 0;
    RUN(c, ATTN_OK, "q_len 0 with NULL q");
    c = good_call();
    c.k = t4(NULL, B, KH, 0, D);
    RUN(c, ATTN_ERR_SHAPE, "k empty, v not");
}

/* An input value used as an index outside its array: ATTN_ERR_INDEX, and nothing written
 * outside o and lse (rows of o may be anything). */
static void test_index(attn_kernel *kern) {
    const int32_t bad[] = {LK, -1, INT32_MAX, INT32_MIN, LK + 1000};
    for (int t = 1; t <= 2; t++)
        for (int i = 0; i < 5; i++)
            for (int row = 0; row < B; row++) {
                attn_call c = good_call();
                c.threads = t;
                start[row] = bad[i];
                RUN(c, ATTN_ERR_INDEX, "start[b] out of range");
                start[row] = 0;
            }
    /* in range at both ends */
    attn_call c = good_call();
    start[0] = LK - 1;
    start[1] = 0;
    RUN(c, ATTN_OK, "start in range");
    start[0] = 0;
}

/* A second spec: an index through a nested input and a head-indexed input. */
static void test_index_nested(void) {
    attn_kernel *kern = compile_text(
        "attention nested {\n"
        "    input i32 perm[seq];\n"
        "    input f32 bias[heads, 3];\n"
        "    heads = 2; head_dim = 4;\n"
        "    score = score + bias[h, perm[k] % 3];\n"
        "    mask = perm[perm[k]] <= q;\n"
        "}\n",
        NULL);
    if (!kern) return;
    enum { N = 6 };
    static float q[2 * N * 4], k[2 * N * 4], v[2 * N * 4], o[PAD + 2 * N * 4 + PAD], bias[6];
    static int32_t perm[N];
    fill(q, 2 * N * 4, 1);
    fill(k, 2 * N * 4, 2);
    fill(v, 2 * N * 4, 3);
    attn_input in[2] = {{.name = "perm", .t = {.data = perm, .ndim = 1, .shape = {N}}},
                        {.name = "bias", .t = {.data = bias, .ndim = 2, .shape = {2, 3}}}};
    attn_call c = {.q = t4(q, 1, 2, N, 4), .k = t4(k, 1, 2, N, 4), .v = t4(v, 1, 2, N, 4),
                   .o = t4(o + PAD, 1, 2, N, 4), .q_offset = ATTN_Q_OFFSET_DEFAULT,
                   .inputs = in, .ninputs = 2, .threads = 1};
    for (int i = 0; i < N; i++) perm[i] = N - 1 - i;
    attn_error err;
    cases++;
    EXPECT(attn_run(kern, &c, &err) == ATTN_OK);
    const int32_t bad[] = {N, -1, 1 << 30};
    for (int j = 0; j < 3; j++)
        for (int pos = 0; pos < N; pos++) {
            for (size_t i = 0; i < sizeof o / sizeof *o; i++) o[i] = CANARY;
            int32_t keep = perm[pos];
            perm[pos] = bad[j];
            cases++;
            attn_status s = attn_run(kern, &c, &err);
            EXPECT(s == ATTN_ERR_INDEX && err.code == s);
            for (int i = 0; i < PAD; i++) EXPECT(o[i] == CANARY && o[PAD + 2 * N * 4 + i] == CANARY);
            perm[pos] = keep;
        }
    attn_kernel_free(kern);
}

/* The runtime's entry points for permuted and MLA blocks (what AOT headers call) refuse bad
 * descriptors with their code and write nothing. */
static void expect_rt(attn_status s, const attn_error *err, attn_status want, const char *what, int line) {
    cases++;
    CHECK(s == want && err->code == s && (s == ATTN_OK || (err->message[0] && outputs_untouched())) &&
              guards_untouched(),
          "line %d: %s: got %s (%s), expected %s", line, what, attn_status_name(s), err->message,
          attn_status_name(want));
}

static void test_runtime_entries(attn_kernel *kern) {
    const attn_rt_desc *d = attn_kernel_desc(kern);
    const attn_rt_desc *one[1] = {d};
    attn_call c = good_call();
    attn_error err;
#define RT(expr, want, what)                   \
    do {                                       \
        reset_outputs();                       \
        memset(&err, 0x5a, sizeof err);        \
        attn_status s_ = (expr);               \
        expect_rt(s_, &err, want, what, __LINE__); \
    } while (0)
    RT(attn_rt_launch_permuted(NULL, 0, one, 1, &c, NULL, &err), ATTN_ERR_NULL, "permuted: no perm");
    RT(attn_rt_launch_permuted(d, 0, NULL, 1, &c, NULL, &err), ATTN_ERR_NULL, "permuted: no descs");
    RT(attn_rt_launch_permuted(d, 0, one, 0, &c, NULL, &err), ATTN_ERR_ARG, "permuted: zero descs");
    RT(attn_rt_launch_permuted(d, 2, one, 1, &c, NULL, &err), ATTN_ERR_ARG, "permuted: rank input out of range");
    RT(attn_rt_launch_permuted(d, -1, one, 1, &c, NULL, &err), ATTN_ERR_ARG, "permuted: negative rank input");
    attn_rt_desc other = *d;
    other.heads = 2;
    RT(attn_rt_launch_permuted(&other, 0, one, 1, &c, NULL, &err), ATTN_ERR_ARG, "permuted: heads differ");
    /* the gather copies f32 rows: 16-bit K/V (or f32 K/V beside f16 q, o) are not a permuted block's */
    for (int w = 0; w < 3; w++) {
        other = *d;
        if (w == 2) other.dtype = ATTN_F16, other.kv_f32 = 1;
        else other.kv_dtype = w ? ATTN_BF16 : ATTN_F16;
        const attn_rt_desc *mixed[1] = {&other};
        RT(attn_rt_launch_permuted(w ? d : &other, 1, w ? mixed : one, 1, &c, NULL, &err), ATTN_ERR_ARG,
           "permuted: storage other than f32");
    }
    /* start[batch] cannot be a rank[batch, kv_len] (its values would be read past its end) */
    RT(attn_rt_launch_permuted(d, 0, one, 1, &c, NULL, &err), ATTN_ERR_ARG, "permuted: rank input of another shape");
    /* doc[batch, seq] can, but q_len != kv_len: positions are not ranks, the block runs as written */
    RT(attn_rt_launch_permuted(d, 1, one, 1, &c, NULL, &err), ATTN_OK, "permuted: falls back");
    attn_mla_call m;
    memset(&m, 0, sizeof m);
    attn_rt_mla_desc md = {.kv_rank = 8, .rope_dim = 0, .nope_dim = 8, .v_dim = 8, .up = d};
    RT(attn_rt_launch_mla(NULL, &m, NULL, NULL, &err), ATTN_ERR_NULL, "mla: no desc");
    RT(attn_rt_launch_mla(&md, NULL, NULL, NULL, &err), ATTN_ERR_NULL, "mla: no call");
    /* d has 2 K/V heads for 4 query heads: not an up-projected variant */
    RT(attn_rt_launch_mla(&md, &m, NULL, NULL, &err), ATTN_ERR_ARG, "mla: variant shapes");
    md.up = NULL;
    RT(attn_rt_launch_mla(&md, &m, NULL, NULL, &err), ATTN_ERR_ARG, "mla: no variant");
    other = *d;
    other.dtype = ATTN_F16;
    md.up = &other;
    RT(attn_rt_launch_mla(&md, &m, NULL, NULL, &err), ATTN_ERR_DTYPE, "mla: f16 variant");
    /* the storage types: f32, f16 or bf16, and no int8 latent (it would have no scales) */
    md.up = d;
    md.kv_dtype = ATTN_I8;
    RT(attn_rt_launch_mla(&md, &m, NULL, NULL, &err), ATTN_ERR_DTYPE, "mla: int8 latent");
    RT(attn_rt_launch_mla_backward(&md, &m, &(attn_mla_grad_call){0}, NULL, &err), ATTN_ERR_DTYPE,
       "mla backward: int8 latent");
    md.kv_dtype = ATTN_F32;
    md.dtype = ATTN_I32;
    RT(attn_rt_launch_mla(&md, &m, NULL, NULL, &err), ATTN_ERR_DTYPE, "mla: i32 dtype");
    /* kv_f32 marks an f32 latent under a 16-bit dtype: not under f32, not with another kv_dtype */
    md.dtype = ATTN_F32, md.kv_f32 = 1;
    RT(attn_rt_launch_mla(&md, &m, NULL, NULL, &err), ATTN_ERR_DTYPE, "mla: kv_f32 under f32");
    md.dtype = ATTN_BF16, md.kv_dtype = ATTN_F16;
    RT(attn_rt_launch_mla_backward(&md, &m, &(attn_mla_grad_call){0}, NULL, &err), ATTN_ERR_DTYPE,
       "mla backward: kv_f32 with kv_dtype f16");
#undef RT
}

int main(void) {
    fill(qmem + PAD, B * H * LQ * D, 11);
    fill(kmem + PAD, B * KH * LK * D, 12);
    fill(vmem + PAD, B * KH * LK * DV, 13);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < LK; k++) doc[b * LK + k] = k / 3;
    test_compile_args();
    attn_kernel *kern = compile_text(spec_text, NULL);
    if (kern) {
        test_run_args(kern);
        test_index(kern);
        test_output_overlap(kern);
        test_empty_null(kern);
        test_runtime_entries(kern);
        attn_kernel_free(kern);
    }
    test_index_nested();
    printf("test_badcalls: %d cases\n", cases);
    return check_done("test_badcalls");
}
