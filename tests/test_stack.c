/* test_stack: kernels keep their scratch on the stack (~400 KiB at head_dim 256), so the
 * runtime runs them only where that much is free (attn_rt_desc.stack). A call from a thread
 * with a small stack (musl's default is 128 KiB) must give the same output as one from the
 * main thread, on one thread and on two, instead of overflowing. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "check.h"

enum { H = 2, L = 96, D = 256, SMALL = 128 * 1024 };

static attn_tensor t4(float *p, int64_t l, int64_t d) {
    return (attn_tensor){.data = p, .ndim = 4, .shape = {1, H, l, d}};
}

typedef struct Job {
    attn_kernel *kern;
    attn_call call;
    attn_status st;
    char msg[600];
} Job;

static void *run(void *arg) {
    Job *j = arg;
    attn_error err = {0};
    j->st = attn_run(j->kern, &j->call, &err);
    snprintf(j->msg, sizeof j->msg, "%s", err.message);
    return NULL;
}

/* Runs j on a thread of `stack` bytes; false if it could not be started. */
static int run_on_thread(Job *j, size_t stack) {
    pthread_attr_t at;
    pthread_t th;
    if (pthread_attr_init(&at) != 0) return 0;
    int ok = pthread_attr_setstacksize(&at, stack) == 0 && pthread_create(&th, &at, run, j) == 0;
    pthread_attr_destroy(&at);
    if (ok) pthread_join(th, NULL);
    return ok;
}

int main(void) {
    const char *src = "attention big { heads = 2; head_dim = 256; mask = causal; }";
    attn_kernel *kern = NULL;
    attn_error err = {0};
    REQUIRE(attn_compile("big.attn", src, NULL, &kern, NULL, &err) == ATTN_OK, "compile: %s", err.message);
    const attn_rt_desc *d = attn_kernel_desc(kern);
    CHECK(d && d->stack > SMALL, "the head_dim 256 kernel needs more stack than the small thread has");
    size_t n = (size_t)H * L * D;
    float *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
    float *ref = malloc(n * sizeof *ref), *o = malloc(n * sizeof *o);
    REQUIRE(q && k && v && ref && o, "out of memory");
    uint64_t rng = 7;
    check_fill(q, n, &rng, CHECK_UNIFORM, 0.5);
    check_fill(k, n, &rng, CHECK_UNIFORM, 0.5);
    check_fill(v, n, &rng, CHECK_UNIFORM, 0.5);
    Job j = {.kern = kern, .call = {.q = t4(q, L, D), .k = t4(k, L, D), .v = t4(v, L, D), .o = t4(ref, L, D), .threads = 1}};
    run(&j);
    CHECK(j.st == ATTN_OK, "the main thread's run");
    for (int threads = 1; threads <= 2; threads++) {
        memset(o, 0, n * sizeof *o);
        Job js = j;
        js.call.o = t4(o, L, D);
        js.call.threads = threads;
        js.st = ATTN_ERR_ARG;
        CHECK(run_on_thread(&js, SMALL) && js.st == ATTN_OK, "a %d KiB thread's run, %d thread(s): %s",
              SMALL / 1024, threads, js.msg);
        CHECK(memcmp(o, ref, n * sizeof *o) == 0, "equals the main thread's, %d thread(s)", threads);
    }
    attn_kernel_free(kern);
    free(q);
    free(k);
    free(v);
    free(ref);
    free(o);
    return check_done("test_stack");
}
