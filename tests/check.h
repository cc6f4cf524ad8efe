/* check.h — the scaffolding every self-checking test program uses: checks and their counters,
 * the seeded random numbers, and the double-precision softmax reference.
 *
 *   CHECK(cond, fmt, ...)  counts a check; if cond is false, counts a failure and prints
 *                          "FAIL file:line: message" (thread-safe)
 *   EXPECT(cond)           CHECK whose message is the condition as written
 *   REQUIRE(cond, fmt, ...) a precondition, not counted: on failure prints as CHECK does and
 *                          aborts (out of memory, a setup step; fuzz targets' properties)
 *   check_done(name)       prints "name: N checks, M failed"; the program's exit status
 *   check_rand, check_unit, check_int, check_normal: one splitmix64 generator; its state is
 *                          the caller's (any seed), so every run draws the same numbers
 *   check_fill             the random fill: floats uniform in [-scale, scale) or N(0, scale^2)
 *   check_softmax          one query row's softmax in double precision (two passes, max first)
 *
 * Header only (static functions); the counters are per translation unit, so a program keeps
 * its checks in one file. */
#ifndef ATTNC_TESTS_CHECK_H
#define ATTNC_TESTS_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int check_count;    /* checks run */
static int check_failures; /* of which failed */

__attribute__((format(printf, 3, 4), unused)) static void check_fail(const char *file, int line,
                                                                    const char *fmt, ...) {
    char buf[4096]; /* one fputs: lines of threads failing at once do not interleave */
    int n = snprintf(buf, sizeof buf - 1, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && n < (int)sizeof buf - 1) n += vsnprintf(buf + n, sizeof buf - 1 - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0 || n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n] = '\n';
    buf[n + 1] = '\0';
    fputs(buf, stdout);
    fflush(stdout);
}

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        __atomic_fetch_add(&check_count, 1, __ATOMIC_RELAXED);           \
        if (!(cond)) {                                                   \
            __atomic_fetch_add(&check_failures, 1, __ATOMIC_RELAXED);    \
            check_fail(__FILE__, __LINE__, __VA_ARGS__);                 \
        }                                                                \
    } while (0)

#define EXPECT(cond) CHECK(cond, "expected %s", #cond)

#define REQUIRE(cond, ...)                                               \
    do {                                                                 \
        if (!(cond)) {                                                   \
            check_fail(__FILE__, __LINE__, __VA_ARGS__);                 \
            abort();                                                     \
        }                                                                \
    } while (0)

/* Prints the totals; returns the exit status (1 if a check failed or none ran). */
__attribute__((unused)) static int check_done(const char *name) {
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures != 0 || check_count == 0;
}

// random numbers

/* splitmix64: the next 64 random bits of the stream whose state is *s. */
__attribute__((unused)) static uint64_t check_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1), 53 bits. */
__attribute__((unused)) static double check_unit(uint64_t *s) {
    return (double)(check_rand(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform in [lo, hi], both included. */
__attribute__((unused)) static int64_t check_int(uint64_t *s, int64_t lo, int64_t hi) {
    return lo + (int64_t)(check_rand(s) % (uint64_t)(hi - lo + 1));
}

/* N(0, 1) by Box-Muller. */
__attribute__((unused)) static double check_normal(uint64_t *s) {
    double u1 = check_unit(s), u2 = check_unit(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef enum CheckDist { CHECK_UNIFORM, CHECK_NORMAL } CheckDist;

/* Fills p[0 .. n) with floats uniform in [-scale, scale) or normal with deviation scale. */
__attribute__((unused)) static void check_fill(float *p, size_t n, uint64_t *s, CheckDist dist,
                                               double scale) {
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(scale * (dist == CHECK_NORMAL ? check_normal(s) : 2.0 * check_unit(s) - 1.0));
}

// the reference

/* Softmax of one query row in place: s[j] becomes p_j, the weight of key j (0 where s[j] is
 * -inf: a masked key); returns the log-sum-exp. Two passes in double, the max first, over
 * the keys not masked; a row that sees no key gets all weights 0 and returns -inf. A NaN
 * score makes the row's weights and lse NaN. The caller multiplies by V as it stores V. */
__attribute__((unused)) static double check_softmax(double *s, int64_t n) {
    double m = -INFINITY, l = 0;
    int64_t seen = 0;
    for (int64_t j = 0; j < n; j++)
        if (s[j] != -INFINITY) {
            seen++;
            if (s[j] > m) m = s[j];
        }
    for (int64_t j = 0; j < n; j++) l += s[j] = seen && s[j] != -INFINITY ? exp(s[j] - m) : 0;
    if (!seen) return -INFINITY;
    for (int64_t j = 0; j < n; j++) s[j] /= l;
    return m + log(l);
}

#endif
