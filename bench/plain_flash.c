/* The baseline a user would write by hand: a plain C flash-attention loop (online softmax,
 * one query row at a time), causal or dense, compiled with -O3 -march=native.
 * usage: plain_flash HEADS LEN HEAD_DIM CAUSAL(0/1) [REPS]; prints ms and useful GFLOP/s. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void attend(int heads, int n, int d, int causal, const float *q, const float *k,
                   const float *v, float *o) {
    float *acc = malloc(sizeof(float) * (size_t)d);
    float scale = 1.0f / sqrtf((float)d);
    for (int h = 0; h < heads; h++) {
        const float *Q = q + (size_t)h * n * d, *K = k + (size_t)h * n * d, *V = v + (size_t)h * n * d;
        for (int i = 0; i < n; i++) {
            float m = -INFINITY, l = 0;
            for (int c = 0; c < d; c++) acc[c] = 0;
            int end = causal ? i + 1 : n;
            for (int j = 0; j < end; j++) {
                float s = 0;
                for (int c = 0; c < d; c++) s += Q[(size_t)i * d + c] * K[(size_t)j * d + c];
                s *= scale;
                float mn = s > m ? s : m;
                float alpha = expf(m - mn), p = expf(s - mn);
                l = l * alpha + p;
                for (int c = 0; c < d; c++) acc[c] = acc[c] * alpha + p * V[(size_t)j * d + c];
                m = mn;
            }
            for (int c = 0; c < d; c++) o[((size_t)h * n + i) * d + c] = acc[c] / l;
        }
    }
    free(acc);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HEADS LEN HEAD_DIM CAUSAL [REPS]\n", argv[0]);
        return 2;
    }
    int heads = atoi(argv[1]), n = atoi(argv[2]), d = atoi(argv[3]), causal = atoi(argv[4]);
    int reps = argc > 5 ? atoi(argv[5]) : 1;
    size_t sz = (size_t)heads * n * d;
    float *q = malloc(sz * 4), *k = malloc(sz * 4), *v = malloc(sz * 4), *o = malloc(sz * 4);
    if (!q || !k || !v || !o) return 1;
    srand(1);
    for (size_t i = 0; i < sz; i++) {
        q[i] = rand() / (float)RAND_MAX - 0.5f;
        k[i] = rand() / (float)RAND_MAX - 0.5f;
        v[i] = rand() / (float)RAND_MAX - 0.5f;
    }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        attend(heads, n, d, causal, q, k, v, o);
        double t = now_ms() - t0;
        if (t < best) best = t;
    }
    double pairs = causal ? (double)n * (n + 1) / 2 : (double)n * n;
    double gflops = 4.0 * d * pairs * heads / (best * 1e6);
    printf("plain C -O3: heads %d, len %d, d %d, %s: %.1f ms, %.2f GFLOP/s (checksum %g)\n", heads,
           n, d, causal ? "causal" : "dense", best, gflops, (double)o[sz / 2]);
    printf("{\"ms\": %.3f, \"gflops\": %.3f}\n", best, gflops);
    free(q); free(k); free(v); free(o);
    return 0;
}
