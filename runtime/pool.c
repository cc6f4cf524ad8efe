/* pool.c — a reusable thread pool with one parallel-for at a time.
 *
 * Workers sleep on a condition variable until a new job generation is published, then pull
 * task indices from a shared atomic counter; the caller pulls too. After a job, workers and the
 * caller spin briefly (RT_SPIN_NS) before sleeping: back-to-back calls (decode, one per layer)
 * then skip the futex wake-ups (8-head decode over 512 keys, 2 threads: 55 -> ~30 us a call).
 * A second caller that finds the pool busy runs its tasks alone rather than waiting (or
 * deadlocking, if it is a worker). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rt_internal.h"

#define RT_CACHE_LINE 64
#define RT_MAX_THREADS 1024
#define RT_SPIN_NS 100000 /* how long a thread polls before sleeping on a condition variable */
#define RT_STACK_MARGIN ((size_t)64 << 10) /* the runtime's own frames over a kernel's, and slack */
#define RT_MAIN_RESERVE ((size_t)1 << 20)  /* what the program may use of the main thread's stack */

struct attn_rt_pool {
    int nthreads;             /* threads of a job, the caller included */
    int nworkers;             /* started threads: nthreads - 1 */
    pthread_t *workers;       /* their handles */
    pthread_mutex_t busy;     /* held by the caller running a job */
    pthread_mutex_t lock;     /* guards the fields below up to `next` */
    pthread_cond_t wake;      /* a new generation or stop */
    pthread_cond_t done;      /* the last worker of a job finished */
    bool stop;                /* destroy: workers exit */
    int participants;         /* workers (index < participants) that take part in this job */
    int sleeping;             /* workers waiting on `wake` */
    bool caller_sleeping;     /* the caller waits on `done` */
    rt_task_fn fn;            /* the job */
    void *ctx;
    int64_t ntasks;
    /* Polled without the lock (written under it), each on its own cache line: the spinning
     * threads never share a line with the task counter or the fields above. */
    _Alignas(RT_CACHE_LINE) atomic_uint_fast64_t generation; /* bumped per job and by destroy */
    _Alignas(RT_CACHE_LINE) atomic_int running; /* participating workers not yet finished */
    _Alignas(RT_CACHE_LINE) atomic_int_fast64_t next; /* the next task index to hand out */
    char pad[RT_CACHE_LINE - sizeof(atomic_int_fast64_t)];
};

typedef struct RtWorker {
    attn_rt_pool *pool;
    int index;
} RtWorker;

int attn_rt_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > RT_MAX_THREADS ? RT_MAX_THREADS : (int)n;
}

static void rt_run_tasks(attn_rt_pool *p, rt_task_fn fn, void *ctx, int64_t ntasks) {
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= ntasks) break;
        fn(ctx, t);
    }
}

static double rt_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static inline void rt_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Polls until *gen differs from `seen` (true) or RT_SPIN_NS pass (false). */
static bool rt_spin_generation(attn_rt_pool *p, uint64_t seen) {
    double t0 = rt_now_ns();
    for (int i = 1;; i++) {
        if (atomic_load_explicit(&p->generation, memory_order_acquire) != seen) return true;
        rt_cpu_relax();
        if (i % 64 == 0 && rt_now_ns() - t0 > RT_SPIN_NS) return false;
    }
}

/* Polls until no participating worker is running (true) or RT_SPIN_NS pass (false). */
static bool rt_spin_done(attn_rt_pool *p) {
    double t0 = rt_now_ns();
    for (int i = 1;; i++) {
        if (atomic_load_explicit(&p->running, memory_order_acquire) == 0) return true;
        rt_cpu_relax();
        if (i % 64 == 0 && rt_now_ns() - t0 > RT_SPIN_NS) return false;
    }
}

static void *rt_worker_main(void *arg) {
    RtWorker w = *(RtWorker *)arg;
    free(arg);
    attn_rt_pool *p = w.pool;
    uint64_t seen = 0;
    for (;;) {
        rt_spin_generation(p, seen);
        pthread_mutex_lock(&p->lock);
        while (!p->stop && atomic_load_explicit(&p->generation, memory_order_relaxed) == seen) {
            p->sleeping++;
            pthread_cond_wait(&p->wake, &p->lock);
            p->sleeping--;
        }
        if (p->stop) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        seen = atomic_load_explicit(&p->generation, memory_order_relaxed);
        bool part = w.index < p->participants;
        rt_task_fn fn = p->fn;
        void *ctx = p->ctx;
        int64_t ntasks = p->ntasks;
        pthread_mutex_unlock(&p->lock);
        if (!part) continue;
        rt_run_tasks(p, fn, ctx, ntasks);
        if (atomic_fetch_sub_explicit(&p->running, 1, memory_order_acq_rel) == 1) {
            /* the caller checks `running` and sleeps under the lock: no lost wake-up */
            pthread_mutex_lock(&p->lock);
            if (p->caller_sleeping) pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
    return NULL;
}

/* Whether the calling thread has `need` bytes of stack free below this frame. The main thread's
 * stack grows up to RLIMIT_STACK, and reading its bounds means parsing /proc/self/maps (~25 us),
 * so there the limit is compared with need plus a reserve for what the program uses; other
 * threads report their bounds (~0.4 us). Unknown: assumed enough. */
static bool rt_stack_free(size_t need) {
    if (need == 0) return true;
#ifdef __linux__
    if (getpid() == (pid_t)syscall(SYS_gettid)) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_STACK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return true;
        return rl.rlim_cur >= need + RT_STACK_MARGIN + RT_MAIN_RESERVE;
    }
    pthread_attr_t at;
    void *lo = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &at) != 0) return true;
    int bad = pthread_attr_getstack(&at, &lo, &size);
    pthread_attr_destroy(&at);
    if (bad || !lo) return true;
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0); /* the machine stack, even under ASan */
    return sp > (uintptr_t)lo && sp - (uintptr_t)lo >= need + RT_STACK_MARGIN;
#else
    return true;
#endif
}

typedef struct RtThunk {
    attn_rt_pool *pool;
    int threads;
    int64_t ntasks;
    rt_task_fn fn;
    void *ctx;
    bool own; /* rt_launch_tasks: a pool of the call's own when there is none */
} RtThunk;

static void rt_thunk_run(RtThunk *t) {
    attn_rt_pool *own = NULL, *pool = t->pool;
    if (t->own && !pool && t->threads > 1 && t->ntasks > 1) {
        own = attn_rt_pool_create(t->ntasks < t->threads ? (int)t->ntasks : t->threads);
        pool = own; /* NULL on failure: the tasks then run on this thread, still correct */
    }
    rt_parallel_for_n(pool, t->threads, t->ntasks, t->fn, t->ctx);
    attn_rt_pool_destroy(own);
}

static void *rt_thunk_main(void *arg) {
    rt_thunk_run(arg);
    return NULL;
}

/* Runs t here, or on a thread started with stack enough when this one lacks it. */
static attn_status rt_thunk_with_stack(RtThunk *t, size_t stack, attn_error *err) {
    if (rt_stack_free(stack)) {
        rt_thunk_run(t);
        return ATTN_OK;
    }
    pthread_attr_t at;
    pthread_t th;
    size_t page = 4096, size = (stack + RT_STACK_MARGIN + (1 << 20) + page - 1) / page * page;
    bool ok = pthread_attr_init(&at) == 0;
    if (ok) {
        ok = pthread_attr_setstacksize(&at, size) == 0 && pthread_create(&th, &at, rt_thunk_main, t) == 0;
        pthread_attr_destroy(&at);
    }
    if (!ok) return rt_error(err, ATTN_ERR_NOMEM, "could not start a thread with the %zu KiB of stack the kernel needs", stack >> 10);
    pthread_join(th, NULL);
    return ATTN_OK;
}

attn_rt_pool *attn_rt_pool_create(int threads) {
    if (threads <= 0) threads = attn_rt_cpu_count();
    if (threads > RT_MAX_THREADS) threads = RT_MAX_THREADS;
    size_t size = (sizeof(attn_rt_pool) + RT_CACHE_LINE - 1) / RT_CACHE_LINE * RT_CACHE_LINE;
    attn_rt_pool *p = aligned_alloc(RT_CACHE_LINE, size);
    if (!p) return NULL;
    memset(p, 0, size);
    atomic_init(&p->next, 0);
    atomic_init(&p->generation, 0);
    atomic_init(&p->running, 0);
    if (pthread_mutex_init(&p->busy, NULL) != 0) goto fail_busy;
    if (pthread_mutex_init(&p->lock, NULL) != 0) goto fail_lock;
    if (pthread_cond_init(&p->wake, NULL) != 0) goto fail_wake;
    if (pthread_cond_init(&p->done, NULL) != 0) goto fail_done;
    p->workers = threads > 1 ? calloc((size_t)threads - 1, sizeof *p->workers) : NULL;
    if (threads > 1 && !p->workers) goto fail_workers;
    /* a stack of known size for any kernel (not the default, which follows RLIMIT_STACK here
     * and is 128 KiB with musl) */
    pthread_attr_t at;
    bool attr = pthread_attr_init(&at) == 0;
    if (attr && pthread_attr_setstacksize(&at, RT_WORKER_STACK) != 0) {
        pthread_attr_destroy(&at);
        attr = false;
    }
    for (int i = 0; attr && i < threads - 1; i++) {
        RtWorker *w = malloc(sizeof *w);
        if (!w) break;
        w->pool = p;
        w->index = i;
        if (pthread_create(&p->workers[i], &at, rt_worker_main, w) != 0) {
            free(w);
            break; /* fewer threads: still correct */
        }
        p->nworkers++;
    }
    if (attr) pthread_attr_destroy(&at);
    p->nthreads = p->nworkers + 1;
    return p;

fail_workers:
    pthread_cond_destroy(&p->done);
fail_done:
    pthread_cond_destroy(&p->wake);
fail_wake:
    pthread_mutex_destroy(&p->lock);
fail_lock:
    pthread_mutex_destroy(&p->busy);
fail_busy:
    free(p);
    return NULL;
}

void attn_rt_pool_destroy(attn_rt_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release); /* ends the spinning */
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++) pthread_join(p->workers[i], NULL);
    free(p->workers);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->busy);
    free(p);
}

int attn_rt_pool_threads(const attn_rt_pool *p) { return p ? p->nthreads : 1; }

static void rt_serial_for(int64_t ntasks, rt_task_fn fn, void *ctx) {
    for (int64_t t = 0; t < ntasks; t++) fn(ctx, t);
}

void rt_parallel_for_n(attn_rt_pool *p, int max_threads, int64_t ntasks, rt_task_fn fn,
                       void *ctx) {
    if (ntasks <= 0) return;
    int threads = p ? p->nthreads : 1;
    if (max_threads > 0 && max_threads < threads) threads = max_threads;
    if ((int64_t)threads > ntasks) threads = (int)ntasks;
    if (threads <= 1 || pthread_mutex_trylock(&p->busy) != 0) {
        rt_serial_for(ntasks, fn, ctx);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    p->participants = threads - 1;
    atomic_store_explicit(&p->running, threads - 1, memory_order_relaxed);
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    if (p->sleeping > 0) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    rt_run_tasks(p, fn, ctx, ntasks);

    rt_spin_done(p);
    pthread_mutex_lock(&p->lock);
    while (atomic_load_explicit(&p->running, memory_order_acquire) > 0) {
        p->caller_sleeping = true;
        pthread_cond_wait(&p->done, &p->lock);
        p->caller_sleeping = false;
    }
    p->fn = NULL;
    p->ctx = NULL;
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->busy);
}

void rt_parallel_for(attn_rt_pool *p, int64_t ntasks, rt_task_fn fn, void *ctx) {
    rt_parallel_for_n(p, 0, ntasks, fn, ctx);
}

attn_status rt_launch_tasks(attn_rt_pool *pool, int threads, int64_t ntasks, rt_task_fn fn, void *ctx, size_t stack,
                            attn_error *err) {
    RtThunk t = {pool, threads, ntasks, fn, ctx, true};
    return rt_thunk_with_stack(&t, stack, err);
}

attn_status rt_parallel_for_stack(attn_rt_pool *pool, int max_threads, int64_t ntasks, rt_task_fn fn, void *ctx,
                                  size_t stack, attn_error *err) {
    RtThunk t = {pool, max_threads, ntasks, fn, ctx, false};
    return rt_thunk_with_stack(&t, stack, err);
}
