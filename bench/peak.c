/* The machine's limits, measured: f32 FMA peak (16 independent vector FMA chains, per
 * thread) and streaming-read bandwidth (memory-sized and L3-sized buffers).
 * usage: peak [THREADS] [stream]; prints one JSON object per line ("stream": the memory-sized
 * read alone). */
#include <immintrin.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

#if defined(__AVX512F__)
typedef __m512 vf;
#define VW 16
#define vset1 _mm512_set1_ps
#define vfma _mm512_fmadd_ps
#define vadd _mm512_add_ps
#define vsum(x) _mm512_reduce_add_ps(x)
#define vload _mm512_loadu_ps
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 vf;
#define VW 8
#define vset1 _mm256_set1_ps
#define vfma _mm256_fmadd_ps
#define vadd _mm256_add_ps
#define vload _mm256_loadu_ps
static float vsum(__m256 x) {
    float t[8];
    _mm256_storeu_ps(t, x);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
#error "bench/peak.c needs AVX2+FMA or AVX-512"
#endif

/* 16 independent chains written out, so they stay in registers at any -O level */
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
static void *fma_worker(void *arg) {
    long iters = *(long *)arg;
#define DECL(i) vf a##i = vset1(1.0f + i * 1e-3f);
    CHAINS(DECL)
    vf m = vset1(0.9999f), c = vset1(1e-4f);
    for (long it = 0; it < iters; it++) {
#define STEP(i) a##i = vfma(a##i, m, c);
        CHAINS(STEP)
        __asm__ volatile("" ::: "memory");
    }
    vf s = vset1(0);
#define SUM(i) s = vadd(s, a##i);
    CHAINS(SUM)
    *(float *)arg = vsum(s); /* keep the result alive */
    return NULL;
}

static double fma_peak(int threads) {
    long iters = 50000000;
    pthread_t t[64];
    long args[64];
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        args[i] = iters;
        pthread_create(&t[i], NULL, fma_worker, &args[i]);
    }
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double dt = now_s() - t0;
    return 2.0 * VW * 16 * (double)iters * threads / dt / 1e9;
}

typedef struct StreamArg {
    const float *p; /* this thread's part */
    size_t n;       /* floats in it */
    float sum;      /* result, keeps the loads alive */
} StreamArg;

static void *stream_worker(void *arg) {
    StreamArg *s = arg;
    vf a0 = vset1(0), a1 = vset1(0), a2 = vset1(0), a3 = vset1(0);
    for (size_t i = 0; i + 4 * VW <= s->n; i += 4 * VW) {
        a0 = vadd(a0, vload(s->p + i));
        a1 = vadd(a1, vload(s->p + i + VW));
        a2 = vadd(a2, vload(s->p + i + 2 * VW));
        a3 = vadd(a3, vload(s->p + i + 3 * VW));
    }
    s->sum = vsum(vadd(vadd(a0, a1), vadd(a2, a3)));
    return NULL;
}

static double stream_read(size_t bytes, int threads, int reps) {
    size_t n = bytes / sizeof(float);
    float *buf = aligned_alloc(64, n * sizeof(float));
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 255);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        pthread_t t[64];
        StreamArg a[64];
        double t0 = now_s();
        for (int i = 0; i < threads; i++) {
            a[i] = (StreamArg){buf + n / threads * i, n / threads, 0};
            pthread_create(&t[i], NULL, stream_worker, &a[i]);
        }
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    free(buf);
    return bytes / best / 1e9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 64) threads = 1;
    bool mem_only = argc > 2 && strcmp(argv[2], "stream") == 0; /* the memory read alone */
    if (!mem_only)
        printf("{\"what\": \"fma_peak\", \"threads\": %d, \"gflops\": %.1f}\n", threads, fma_peak(threads));
    printf("{\"what\": \"stream_read_mem\", \"threads\": %d, \"gbs\": %.1f}\n", threads,
           stream_read((size_t)1 << 30, threads, 3));
    if (mem_only) return 0;
    printf("{\"what\": \"stream_read_l3\", \"threads\": %d, \"gbs\": %.1f}\n", threads,
           stream_read((size_t)16 << 20, threads, 20));
    return 0;
}
