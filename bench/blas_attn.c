/* The BLAS baseline: attention with a materialized score matrix, S = Q K^T (sgemm), a
 * masked row softmax, O = P V (sgemm), per head; GQA through the head map h / group.
 * usage: blas_attn HEADS KV_HEADS LEN HEAD_DIM CAUSAL [REPS]; prints useful GFLOP/s. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HEADS KV_HEADS LEN HEAD_DIM CAUSAL [REPS]\n", argv[0]);
        return 2;
    }
    int H = atoi(argv[1]), KH = atoi(argv[2]), n = atoi(argv[3]), d = atoi(argv[4]);
    int causal = atoi(argv[5]), reps = argc > 6 ? atoi(argv[6]) : 3;
    size_t qs = (size_t)H * n * d, ks = (size_t)KH * n * d;
    float *q = malloc(qs * 4), *k = malloc(ks * 4), *v = malloc(ks * 4), *o = malloc(qs * 4);
    float *s = malloc((size_t)n * n * 4);
    if (!q || !k || !v || !o || !s) return 1;
    srand(1);
    for (size_t i = 0; i < qs; i++) q[i] = rand() / (float)RAND_MAX - 0.5f;
    for (size_t i = 0; i < ks; i++) k[i] = rand() / (float)RAND_MAX - 0.5f, v[i] = rand() / (float)RAND_MAX - 0.5f;
    float scale = 1.0f / sqrtf((float)d);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        for (int h = 0; h < H; h++) {
            const float *Q = q + (size_t)h * n * d, *K = k + (size_t)(h / (H / KH)) * n * d;
            const float *V = v + (size_t)(h / (H / KH)) * n * d;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, scale, Q, d, K, d, 0.0f, s, n);
            for (int i = 0; i < n; i++) {
                float *row = s + (size_t)i * n, m = -INFINITY, l = 0;
                int end = causal ? i + 1 : n;
                for (int j = 0; j < end; j++) m = row[j] > m ? row[j] : m;
                for (int j = 0; j < end; j++) l += row[j] = expf(row[j] - m);
                for (int j = 0; j < end; j++) row[j] /= l;
                for (int j = end; j < n; j++) row[j] = 0;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, n, 1.0f, s, n, V, d, 0.0f,
                        o + (size_t)h * n * d, d);
        }
        double t = now_ms() - t0;
        if (t < best) best = t;
    }
    double pairs = causal ? (double)n * (n + 1) / 2 : (double)n * n;
    printf("{\"what\": \"blas\", \"ms\": %.3f, \"gflops\": %.2f, \"check\": %g}\n", best,
           4.0 * d * pairs * H / (best * 1e6), (double)o[qs / 3]);
    free(q); free(k); free(v); free(o); free(s);
    return 0;
}
