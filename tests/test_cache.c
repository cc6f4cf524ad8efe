/* test_cache.c — the on-disk kernel cache: cold compile, warm load, blocks that compile alike,
 * corrupt, truncated and foreign entries rebuilt, a FIFO and a 2 GiB sparse file planted as the
 * entry, a file-size limit below the entry's size, stale temp files of killed writers, the
 * cache bypassed, and two threads filling an empty cache at once. Uses its own temporary
 * ATTNC_CACHE_DIR. */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "attn/attn.h"
#include "check.h"

enum { B = 1, H = 4, KVH = 2, D = 32, LQ = 37, LK = 53 };

static const char *spec_a =
    "attention cached_a { heads = 4; kv_heads = 2; head_dim = 32; mask = causal; }\n";
/* the same kernel under another name: must share the entry */
static const char *spec_b =
    "attention another_name { heads = 4; kv_heads = 2; head_dim = 32; mask = causal; }\n";
/* a different kernel (window): its entry is "foreign" to spec_a's file name */
static const char *spec_c =
    "attention cached_c { heads = 4; kv_heads = 2; head_dim = 32; mask = sliding(5); }\n";

static float q[B * H * LQ * D], k[B * KVH * LK * D], v[B * KVH * LK * D];
static float ref[B * H * LQ * D];
static char dir[256];

/* causal GQA in double */
static void reference(void) {
    int off = LK - LQ;
    for (int h = 0; h < H; h++)
        for (int i = 0; i < LQ; i++) {
            const float *qi = q + ((size_t)h * LQ + i) * D;
            const float *kh = k + (size_t)(h / (H / KVH)) * LK * D, *vh = v + (size_t)(h / (H / KVH)) * LK * D;
            double s[LK];
            for (int j = 0; j < LK; j++) {
                double d = 0;
                for (int x = 0; x < D; x++) d += (double)qi[x] * kh[(size_t)j * D + x];
                s[j] = j <= i + off ? d / sqrt(D) : -INFINITY;
            }
            check_softmax(s, LK);
            for (int x = 0; x < D; x++) {
                double acc = 0;
                for (int j = 0; j < LK; j++) acc += s[j] * vh[(size_t)j * D + x];
                ref[((size_t)h * LQ + i) * D + x] = (float)acc;
            }
        }
}

static attn_kernel *compile_opt(const char *text, int no_cache, int opt_level) {
    attn_options o;
    attn_options_init(&o);
    o.threads = 1;
    o.no_cache = no_cache;
    o.opt_level = opt_level;
    attn_kernel *kern = NULL;
    attn_error err;
    char *diags = NULL;
    if (attn_compile("cache.attn", text, &o, &kern, &diags, &err) != ATTN_OK)
        printf("compile: %s %s\n", err.message, diags ? diags : "");
    attn_free(diags);
    return kern;
}

static attn_kernel *compile(const char *text, int no_cache) { return compile_opt(text, no_cache, 3); }

/* Runs kern and returns the max abs difference from the reference (inf on error). */
static double run(attn_kernel *kern, float *o) {
    attn_call c;
    memset(&c, 0, sizeof c);
    c.q = (attn_tensor){q, 4, {B, H, LQ, D}, {0}};
    c.k = (attn_tensor){k, 4, {B, KVH, LK, D}, {0}};
    c.v = (attn_tensor){v, 4, {B, KVH, LK, D}, {0}};
    c.o = (attn_tensor){o, 4, {B, H, LQ, D}, {0}};
    c.q_offset = ATTN_Q_OFFSET_DEFAULT;
    attn_error err;
    if (!kern || attn_run(kern, &c, &err) != ATTN_OK) return INFINITY;
    double worst = 0;
    for (int i = 0; i < B * H * LQ * D; i++) {
        double d = fabs((double)o[i] - ref[i]);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

/* The one entry of the cache directory (path into `out`) and the count of files, temp files
 * (".name.XXXXXX") included. */
static int entries(char *out, size_t cap) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        if (out) snprintf(out, cap, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    return n;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void flip_byte(const char *path, long at) {
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

static void clear_dir(void) {
    char path[512];
    while (entries(path, sizeof path) > 0) unlink(path);
}

/* Compiles spec_a expecting a hit or a miss, checks its results and that the kernel is fine. */
static void expect_compile(const char *what, const char *text, int hit) {
    static float o[B * H * LQ * D];
    attn_kernel *kern = compile(text, 0);
    CHECK(kern != NULL, "%s: compile failed", what);
    if (!kern) return;
    CHECK(attn_kernel_cache_hit(kern) == hit, "%s: cache_hit %d, expected %d", what,
          attn_kernel_cache_hit(kern), hit);
    double err = run(kern, o);
    CHECK(err < 1e-4, "%s: max error %g", what, err);
    printf("%-34s hit %d  %7.1f ms  max err %.2e\n", what, attn_kernel_cache_hit(kern),
           attn_kernel_compile_ms(kern), err);
    attn_kernel_free(kern);
}

/* Bytes this process has read through read() and its kin so far (/proc/self/io rchar). */
static long long bytes_read(void) {
    long long n = -1;
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "rchar: %lld", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

/* A 2 GiB sparse file at the entry's path starting with `head` (n bytes), then the compile must
 * rebuild it without reading it whole (the bytes read, not a time: the check cannot flake). */
static void planted_huge(const char *entry, const unsigned char *head, size_t n, const char *what) {
    unlink(entry);
    FILE *f = fopen(entry, "wb");
    CHECK(f && fwrite(head, 1, n, f) == n, "%s: write the planted file", what);
    if (f) fclose(f);
    CHECK(truncate(entry, 2L << 30) == 0, "%s: extend to 2 GiB", what);
    long long r0 = bytes_read();
    expect_compile(what, spec_a, 0);
    long long r1 = bytes_read();
    CHECK(r0 >= 0 && r1 - r0 < (64LL << 20), "%s: %lld bytes read (the file was read whole?)", what, r1 - r0);
}

static void *thread_compile(void *arg) {
    float *o = arg;
    attn_kernel *kern = compile(spec_a, 0);
    double err = run(kern, o);
    attn_kernel_free(kern);
    return (void *)(intptr_t)(err < 1e-4);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/attnc-cache-test-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    setenv("ATTNC_CACHE_DIR", dir, 1);
    unsetenv("ATTNC_NO_CACHE");
    uint64_t rng = 1;
    check_fill(q, B * H * LQ * D, &rng, CHECK_UNIFORM, 1.0);
    check_fill(k, B * KVH * LK * D, &rng, CHECK_UNIFORM, 1.0);
    check_fill(v, B * KVH * LK * D, &rng, CHECK_UNIFORM, 1.0);
    reference();

    char entry[512] = "";
    expect_compile("cold compile", spec_a, 0);
    CHECK(entries(entry, sizeof entry) == 1, "one entry after a cold compile (found %d)", entries(NULL, 0));
    long size = file_size(entry);
    expect_compile("warm load", spec_a, 1);
    expect_compile("same kernel, another block name", spec_b, 1);
    CHECK(entries(NULL, 0) == 1, "blocks that compile alike share one entry");

    /* bitwise the same results, cached or not */
    {
        static float o1[B * H * LQ * D], o2[B * H * LQ * D];
        attn_kernel *cold = compile(spec_a, 1), *warm = compile(spec_a, 0);
        CHECK(cold && !attn_kernel_cache_hit(cold), "no_cache: not a hit");
        CHECK(warm && attn_kernel_cache_hit(warm), "warm: a hit");
        run(cold, o1);
        run(warm, o2);
        CHECK(!memcmp(o1, o2, sizeof o1), "cached and uncached kernels agree bit for bit");
        attn_kernel_free(cold);
        attn_kernel_free(warm);
    }
    setenv("ATTNC_NO_CACHE", "1", 1);
    expect_compile("ATTNC_NO_CACHE=1", spec_a, 0);
    unsetenv("ATTNC_NO_CACHE");

    /* corruption anywhere: payload, checksum, key, header, truncation, an empty file */
    const long spots[] = {size - 100, size / 2, 30, 60, 3, 10, 17};
    for (int i = 0; i < (int)(sizeof spots / sizeof spots[0]); i++) {
        char what[64];
        flip_byte(entry, spots[i]);
        snprintf(what, sizeof what, "byte %ld flipped: rebuilt", spots[i]);
        expect_compile(what, spec_a, 0);
        expect_compile("then warm again", spec_a, 1);
    }
    CHECK(truncate(entry, size / 3) == 0, "truncate");
    expect_compile("truncated: rebuilt", spec_a, 0);
    CHECK(file_size(entry) == size, "the rebuilt entry is whole (%ld bytes, want %ld)", file_size(entry), size);
    CHECK(truncate(entry, 0) == 0, "truncate");
    expect_compile("empty file: rebuilt", spec_a, 0);
    expect_compile("then warm again", spec_a, 1);
    CHECK(truncate(entry, size + 7) == 0, "extend");
    expect_compile("trailing bytes: rebuilt", spec_a, 0);

    /* a foreign entry: another kernel's valid entry under spec_a's file name */
    {
        attn_kernel *other = compile(spec_c, 0);
        attn_kernel_free(other);
        char path[512];
        DIR *d = opendir(dir);
        for (struct dirent *e; d && (e = readdir(d));) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (e->d_name[0] != '.' && strcmp(path, entry) != 0) break;
        }
        if (d) closedir(d);
        CHECK(rename(path, entry) == 0, "move the foreign entry over %s", entry);
        expect_compile("foreign entry: rebuilt", spec_a, 0);
        expect_compile("then warm again", spec_a, 1);
    }

    /* a FIFO in place of the entry: neither the lookup nor the write may wait on it (the
     * alarm ends a hang); a symlink to a valid entry is not followed */
    {
        alarm(60);
        CHECK(unlink(entry) == 0 && mkfifo(entry, 0600) == 0, "mkfifo %s", entry);
        expect_compile("FIFO as the entry: rebuilt", spec_a, 0);
        struct stat st;
        CHECK(lstat(entry, &st) == 0 && S_ISREG(st.st_mode), "the FIFO was replaced by an entry");
        expect_compile("then warm again", spec_a, 1);
        char link[600];
        snprintf(link, sizeof link, "%s.real", entry);
        CHECK(rename(entry, link) == 0 && symlink(link, entry) == 0, "symlink the entry");
        expect_compile("symlink as the entry: rebuilt", spec_a, 0);
        unlink(link);
        alarm(0);
    }

    /* a 2 GiB sparse file: zeros, then one whose header (copied from the real entry, payload
     * length patched) states the 2 GiB size */
    {
        unsigned char head[56];
        FILE *f = fopen(entry, "rb");
        CHECK(f && fread(head, 1, sizeof head, f) == sizeof head, "read the entry's header");
        if (f) fclose(f);
        unsigned char zeros[56] = {0};
        planted_huge(entry, zeros, sizeof zeros, "2 GiB sparse file: rebuilt");
        CHECK(file_size(entry) == size, "the rebuilt entry is whole");
        uint64_t klen = 0, plen;
        for (int i = 3; i >= 0; i--) klen = klen << 8 | head[12 + i];
        plen = (2ULL << 30) - 56 - klen;
        for (int i = 0; i < 8; i++) head[16 + i] = (unsigned char)(plen >> (8 * i));
        planted_huge(entry, head, sizeof head, "2 GiB entry, consistent header: rebuilt");
        expect_compile("then warm again", spec_a, 1);
    }

    /* a file-size limit below the entry's size (`ulimit -f`): the write is skipped, not killed
     * by SIGXFSZ; no temp file is left */
    {
        clear_dir();
        struct rlimit old, rl;
        getrlimit(RLIMIT_FSIZE, &old);
        rl = old;
        rl.rlim_cur = (rlim_t)size / 2;
        CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0, "setrlimit RLIMIT_FSIZE");
        expect_compile("RLIMIT_FSIZE below the entry: compiled", spec_a, 0);
        CHECK(entries(NULL, 0) == 0, "no entry nor temp file under the limit (%d files)", entries(NULL, 0));
        CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0, "restore RLIMIT_FSIZE");
        expect_compile("limit lifted: cold", spec_a, 0);
        expect_compile("then warm", spec_a, 1);
    }

    /* temp files of writers killed mid-write: removed by the next write once an hour old,
     * younger ones (a live writer's) kept */
    {
        char stale[600], fresh[600];
        CHECK(entries(entry, sizeof entry) == 1 && unlink(entry) == 0, "remove the entry");
        snprintf(stale, sizeof stale, "%s/.%064d.Ab3xYz", dir, 7);
        snprintf(fresh, sizeof fresh, "%s/.%064d.Qw9eRt", dir, 8);
        for (int i = 0; i < 2; i++) {
            FILE *f = fopen(i ? fresh : stale, "wb");
            CHECK(f != NULL, "create a temp file");
            if (f) fclose(f);
        }
        struct timeval old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
        CHECK(utimes(stale, old) == 0, "age the stale temp file");
        expect_compile("cold compile with temp files around", spec_a, 0);
        CHECK(access(stale, F_OK) != 0, "the stale temp file was removed");
        CHECK(access(fresh, F_OK) == 0, "the fresh temp file was kept");
        unlink(fresh);
    }

    /* two threads, an empty cache */
    clear_dir();
    {
        static float o1[B * H * LQ * D], o2[B * H * LQ * D];
        pthread_t t1, t2;
        void *r1 = NULL, *r2 = NULL;
        pthread_create(&t1, NULL, thread_compile, o1);
        pthread_create(&t2, NULL, thread_compile, o2);
        pthread_join(t1, &r1);
        pthread_join(t2, &r2);
        CHECK(r1 && r2, "both threads compiled and ran correctly");
        CHECK(entries(entry, sizeof entry) == 1, "one entry, no temp files left (%d files)", entries(NULL, 0));
        CHECK(file_size(entry) == size, "the entry is whole");
        expect_compile("after two threads: warm", spec_a, 1);
    }

    /* the optimization level is part of the key: an -O0 kernel is never served for -O3 */
    clear_dir();
    {
        static float o[B * H * LQ * D];
        attn_kernel *k0 = compile_opt(spec_a, 0, 0);
        CHECK(k0 && !attn_kernel_cache_hit(k0), "-O0 into an empty cache: a miss");
        CHECK(run(k0, o) < 1e-4, "-O0 kernel correct");
        attn_kernel *k3 = compile_opt(spec_a, 0, 3);
        CHECK(k3 && !attn_kernel_cache_hit(k3), "-O3 after -O0: a miss, not the -O0 entry");
        CHECK(entries(NULL, 0) == 2, "-O0 and -O3: two entries (found %d)", entries(NULL, 0));
        attn_kernel *w0 = compile_opt(spec_a, 0, 0);
        CHECK(w0 && attn_kernel_cache_hit(w0), "-O0 again: a hit");
        attn_kernel_free(k0);
        attn_kernel_free(k3);
        attn_kernel_free(w0);
    }

    /* an unusable cache directory only costs a compile */
    setenv("ATTNC_CACHE_DIR", "/proc/attnc-no-such-dir", 1);
    expect_compile("unwritable cache dir", spec_a, 0);

    setenv("ATTNC_CACHE_DIR", dir, 1);
    clear_dir();
    rmdir(dir);
    return check_done("test_cache");
}
