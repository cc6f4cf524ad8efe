/* serve_decode.c — a continuous-batching decode loop over paged KV caches.
 *
 * A toy transformer (random weights, greedy decoding, no normalisation: only the data flow of
 * serving matters here) runs step after step over a ragged batch: new requests are admitted as
 * slots free up, their prompts prefilled in chunks beside the sequences that decode one token,
 * each step's K/V rows appended to their pages with attn_rt_paged_append, and sequences that
 * reach their length retired, their pages handed back to the pool. Prints tokens per second.
 *
 *   serve_decode [STEPS [MAX_SEQS]]      (defaults 200 and 16)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <attn/attn.h>

enum {
    HEADS = 8, KV_HEADS = 2, HEAD_DIM = 32, PAGE = 16, LAYERS = 2, VOCAB = 512, DMODEL = HEADS * HEAD_DIM,
    KVW = KV_HEADS * HEAD_DIM, MAX_LEN = 512, MAX_PAGES = MAX_LEN / PAGE, CHUNK = 32, NREQ_PROMPT_MAX = 200
};

static const char *spec = "attention serve {\n"
                          "    heads = 8; kv_heads = 2; head_dim = 32;\n"
                          "    mask = causal;\n"
                          "    kv_cache = paged(16);\n"
                          "}\n";

typedef struct Seq {
    int active, len, target, prompt_len, fed; /* fed: tokens whose K/V are in the cache */
    int32_t tokens[MAX_LEN];
    int32_t pages[MAX_PAGES];
} Seq;

static uint64_t rng = 2024;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static float *rand_matrix(int rows, int cols) {
    float *m = malloc(sizeof(float) * (size_t)rows * cols);
    float s = 1.0f / sqrtf((float)rows);
    for (size_t i = 0; m && i < (size_t)rows * cols; i++) m[i] = frand() * s;
    return m;
}

/* y[n] = x[k] . W[k][n] */
static void matvec(const float *x, const float *w, int k, int n, float *y) {
    for (int j = 0; j < n; j++) y[j] = 0;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < n; j++) y[j] += x[i] * w[(size_t)i * n + j];
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 200, max_seqs = argc > 2 ? atoi(argv[2]) : 16;
    if (steps < 1 || max_seqs < 1 || max_seqs > 256) {
        fprintf(stderr, "usage: serve_decode [STEPS [MAX_SEQS (1..256)]]\n");
        return 2;
    }
    attn_options opts;
    attn_options_init(&opts);
    attn_kernel *kern = NULL;
    char *diags = NULL;
    attn_error err;
    if (attn_compile("serve.attn", spec, &opts, &kern, &diags, &err) != ATTN_OK) {
        fprintf(stderr, "compile: %s\n%s", err.message, diags ? diags : "");
        attn_free(diags);
        return 1;
    }
    int num_pages = max_seqs * MAX_PAGES;
    /* the model and the caches, one page pool per layer sharing the page ids */
    float *emb = rand_matrix(VOCAB, DMODEL), *unemb = rand_matrix(DMODEL, VOCAB);
    float *wq[LAYERS], *wk[LAYERS], *wv[LAYERS], *wo[LAYERS], *kp[LAYERS], *vp[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        wq[l] = rand_matrix(DMODEL, DMODEL), wk[l] = rand_matrix(DMODEL, KVW), wv[l] = rand_matrix(DMODEL, KVW);
        wo[l] = rand_matrix(DMODEL, DMODEL);
        kp[l] = calloc((size_t)num_pages * PAGE * KVW, sizeof(float));
        vp[l] = calloc((size_t)num_pages * PAGE * KVW, sizeof(float));
    }
    int32_t *free_pages = malloc(sizeof(int32_t) * (size_t)num_pages);
    int nfree = num_pages;
    for (int i = 0; i < num_pages; i++) free_pages[i] = num_pages - 1 - i;
    Seq *seqs = calloc((size_t)max_seqs, sizeof *seqs);
    int cap = max_seqs * CHUNK;
    float *x = malloc(sizeof(float) * (size_t)cap * DMODEL), *q = malloc(sizeof(float) * (size_t)cap * DMODEL);
    float *kn = malloc(sizeof(float) * (size_t)cap * KVW), *vn = malloc(sizeof(float) * (size_t)cap * KVW);
    float *o = malloc(sizeof(float) * (size_t)cap * DMODEL), *t = malloc(sizeof(float) * DMODEL);
    float *logits = malloc(sizeof(float) * VOCAB);
    int32_t *table = malloc(sizeof(int32_t) * (size_t)max_seqs * MAX_PAGES), *lens = malloc(sizeof(int32_t) * (size_t)max_seqs);
    int32_t *starts = malloc(sizeof(int32_t) * (size_t)(max_seqs + 1));
    int64_t generated = 0, processed = 0, admitted = 0, retired = 0;
    double attn_s = 0, t0 = now_s();
    for (int step = 0; step < steps; step++) {
        /* admit: a free slot takes a new request (prompt and target length drawn at random) */
        for (int s = 0; s < max_seqs; s++)
            if (!seqs[s].active) {
                Seq *sq = &seqs[s];
                memset(sq, 0, sizeof *sq);
                sq->active = 1;
                sq->prompt_len = 1 + (int)((frand() + 1) * 0.5f * (NREQ_PROMPT_MAX - 1));
                sq->target = sq->prompt_len + 16 + (int)((frand() + 1) * 0.5f * 200);
                if (sq->target > MAX_LEN) sq->target = MAX_LEN;
                for (int i = 0; i < sq->prompt_len; i++) sq->tokens[i] = (int32_t)((frand() + 1) * 0.5f * (VOCAB - 1));
                sq->len = sq->prompt_len;
                admitted++;
            }
        /* this step's rows: a prefill chunk, or the one new token */
        int B = 0, T = 0;
        int slot_of[256];
        for (int s = 0; s < max_seqs; s++) {
            Seq *sq = &seqs[s];
            if (!sq->active) continue;
            int n = sq->len - sq->fed;
            if (n > CHUNK) n = CHUNK;
            int need = (sq->fed + n + PAGE - 1) / PAGE; /* pages for the keys after this step */
            for (int p = (sq->fed + PAGE - 1) / PAGE; p < need; p++) {
                if (!nfree) {
                    fprintf(stderr, "out of pages\n");
                    return 1;
                }
                sq->pages[p] = free_pages[--nfree];
            }
            slot_of[B] = s;
            starts[B] = T;
            lens[B] = sq->fed + n;
            memcpy(table + (size_t)B * MAX_PAGES, sq->pages, sizeof sq->pages);
            for (int i = 0; i < n; i++)
                memcpy(x + (size_t)(T + i) * DMODEL, emb + (size_t)sq->tokens[sq->fed + i] * DMODEL, sizeof(float) * DMODEL);
            T += n;
            B++;
        }
        starts[B] = T;
        for (int l = 0; l < LAYERS; l++) {
            for (int r = 0; r < T; r++) {
                matvec(x + (size_t)r * DMODEL, wq[l], DMODEL, DMODEL, q + (size_t)r * DMODEL);
                matvec(x + (size_t)r * DMODEL, wk[l], DMODEL, KVW, kn + (size_t)r * KVW);
                matvec(x + (size_t)r * DMODEL, wv[l], DMODEL, KVW, vn + (size_t)r * KVW);
            }
            attn_paged_append ap = {0};
            ap.k_new = (attn_tensor){kn, 3, {T, KV_HEADS, HEAD_DIM}, {0}};
            ap.v_new = (attn_tensor){vn, 3, {T, KV_HEADS, HEAD_DIM}, {0}};
            ap.new_starts = (attn_tensor){starts, 1, {B + 1}, {0}};
            ap.k_pages = (attn_tensor){kp[l], 4, {num_pages, PAGE, KV_HEADS, HEAD_DIM}, {0}};
            ap.v_pages = (attn_tensor){vp[l], 4, {num_pages, PAGE, KV_HEADS, HEAD_DIM}, {0}};
            ap.page_table = (attn_tensor){table, 2, {B, MAX_PAGES}, {0}};
            ap.kv_lens = (attn_tensor){lens, 1, {B}, {0}};
            if (attn_rt_paged_append(&ap, &err) != ATTN_OK) {
                fprintf(stderr, "append: %s\n", err.message);
                return 1;
            }
            attn_paged_call call = {0};
            call.q = (attn_tensor){q, 3, {T, HEADS, HEAD_DIM}, {0}};
            call.k_pages = ap.k_pages, call.v_pages = ap.v_pages;
            call.page_table = ap.page_table, call.kv_lens = ap.kv_lens;
            call.q_starts = ap.new_starts;
            call.o = (attn_tensor){o, 3, {T, HEADS, HEAD_DIM}, {0}};
            double a0 = now_s();
            if (attn_run_paged(kern, &call, &err) != ATTN_OK) {
                fprintf(stderr, "attention: %s\n", err.message);
                return 1;
            }
            attn_s += now_s() - a0;
            for (int r = 0; r < T; r++) { /* x += o . Wo */
                matvec(o + (size_t)r * DMODEL, wo[l], DMODEL, DMODEL, t);
                for (int i = 0; i < DMODEL; i++) x[(size_t)r * DMODEL + i] += t[i];
            }
        }
        processed += T;
        /* the last row of each sequence predicts its next token (greedy) once its prompt is in */
        for (int b = 0; b < B; b++) {
            Seq *sq = &seqs[slot_of[b]];
            int n = starts[b + 1] - starts[b];
            sq->fed += n;
            if (sq->fed < sq->len) continue; /* still prefilling */
            matvec(x + (size_t)(starts[b + 1] - 1) * DMODEL, unemb, DMODEL, VOCAB, logits);
            int best = 0;
            for (int v = 1; v < VOCAB; v++) best = logits[v] > logits[best] ? v : best;
            sq->tokens[sq->len++] = best;
            generated++;
            if (sq->len >= sq->target) { /* retire: its pages go back to the pool */
                for (int p = 0; p < (sq->fed + PAGE - 1) / PAGE; p++) free_pages[nfree++] = sq->pages[p];
                sq->active = 0;
                retired++;
            }
        }
    }
    double total = now_s() - t0;
    printf("serve_decode: %d steps, %lld requests admitted, %lld retired\n", steps, (long long)admitted, (long long)retired);
    printf("  %lld tokens generated, %lld rows through the model\n", (long long)generated, (long long)processed);
    printf("  %.1f tokens/s overall, attention %.1f%% of the time (%.1f rows/s through attention)\n",
           total > 0 ? generated / total : 0.0, total > 0 ? 100 * attn_s / total : 0.0,
           attn_s > 0 ? processed * LAYERS / attn_s : 0.0);
    for (int l = 0; l < LAYERS; l++) free(wq[l]), free(wk[l]), free(wv[l]), free(wo[l]), free(kp[l]), free(vp[l]);
    free(emb), free(unemb), free(free_pages), free(seqs), free(x), free(q), free(kn), free(vn), free(o), free(t);
    free(logits), free(table), free(lens), free(starts);
    attn_kernel_free(kern);
    return generated > 0 && retired > 0 ? 0 : 1;
}
