/* test_npy.c — .npy round trips, and every malformed file refused with a message. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/npy.h"

#include "check.h"

static char tmpdir[] = "/tmp/test_npy_XXXXXX";

static const char *tmp_path(const char *name) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

/* Builds a .npy image: version `major`, header text `dict` (padded to 64), then `nbytes` of
 * data 0, 1, 2, ... */
static size_t make_image(unsigned char *buf, int major, const char *dict, size_t nbytes) {
    size_t pre = major == 1 ? 10 : 12, n = strlen(dict);
    size_t hlen = (pre + n + 1 + 63) / 64 * 64 - pre;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major, buf[7] = 0;
    for (size_t i = 0; i < pre - 8; i++) buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + pre, dict, n);
    memset(buf + pre + n, ' ', hlen - n - 1);
    buf[pre + hlen - 1] = '\n';
    for (size_t i = 0; i < nbytes; i++) buf[pre + hlen + i] = (unsigned char)i;
    return pre + hlen + nbytes;
}

static unsigned char image[1 << 17];

/* Parsing must fail, with a message containing `what`. */
static void expect_bad(const unsigned char *buf, size_t len, const char *what, int line) {
    NpyArray a;
    char msg[256] = "";
    bool parsed = npy_parse(buf, len, &a, msg, sizeof msg);
    CHECK(!parsed && strstr(msg, what), "line %d: %s, expected '%s'", line,
          parsed ? "parse succeeded" : msg, what);
    if (parsed) npy_free(&a);
}
#define BAD(dict, nbytes, what) \
    expect_bad(image, make_image(image, 1, dict, nbytes), what, __LINE__)

static void test_round_trip(void) {
    char msg[256];
    float f[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f};
    int64_t shape[2] = {2, 3};
    const char *p = tmp_path("a.npy");
    EXPECT(npy_write(p, NPY_F32, f, 2, shape, msg, sizeof msg));
    NpyArray a;
    EXPECT(npy_read(p, &a, msg, sizeof msg));
    EXPECT(a.dtype == NPY_F32 && a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3 &&
           a.count == 6 && memcmp(a.data, f, sizeof f) == 0);
    npy_free(&a);

    /* the data starts on a 64-byte boundary, as NumPy writes it */
    FILE *fp = fopen(p, "rb");
    fseek(fp, 0, SEEK_END);
    EXPECT((ftell(fp) - (long)sizeof f) % 64 == 0);
    fclose(fp);

    int32_t ints[4] = {0, -1, 7, 2147483647};
    int64_t s1 = 4;
    EXPECT(npy_write(p, NPY_I32, ints, 1, &s1, msg, sizeof msg));
    EXPECT(npy_read(p, &a, msg, sizeof msg));
    EXPECT(a.dtype == NPY_I32 && a.ndim == 1 && a.shape[0] == 4 && memcmp(a.data, ints, 16) == 0);
    npy_free(&a);

    float scalar = 42.0f;
    EXPECT(npy_write(p, NPY_F32, &scalar, 0, NULL, msg, sizeof msg));
    EXPECT(npy_read(p, &a, msg, sizeof msg));
    EXPECT(a.ndim == 0 && a.count == 1 && ((float *)a.data)[0] == 42.0f);
    npy_free(&a);

    int64_t empty[2] = {0, 3};
    EXPECT(npy_write(p, NPY_F32, NULL, 2, empty, msg, sizeof msg));
    EXPECT(npy_read(p, &a, msg, sizeof msg));
    EXPECT(a.ndim == 2 && a.count == 0 && a.data != NULL);
    npy_free(&a);

    uint16_t h[3] = {npy_f32_to_f16(1.0f), npy_f32_to_f16(-0.5f), npy_f32_to_f16(65504.0f)};
    EXPECT(npy_write(p, NPY_F16, h, 1, (int64_t[]){3}, msg, sizeof msg));
    EXPECT(npy_read(p, &a, msg, sizeof msg));
    EXPECT(a.dtype == NPY_F16 && a.count == 3 && memcmp(a.data, h, 6) == 0);
    npy_free(&a);

    /* versions 2 and 3, the other quote style, Python-2 longs, no trailing comma */
    size_t n = make_image(image, 2, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}", 8);
    EXPECT(npy_parse(image, n, &a, msg, sizeof msg) && a.count == 2);
    npy_free(&a);
    n = make_image(image, 3, "{'shape': (1L, 2L), 'fortran_order': False, 'descr': '<i4', }", 8);
    EXPECT(npy_parse(image, n, &a, msg, sizeof msg) && a.dtype == NPY_I32 && a.ndim == 2);
    npy_free(&a);
    n = make_image(image, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4);
    EXPECT(npy_parse(image, n, &a, msg, sizeof msg) && a.ndim == 0 && a.count == 1);
    npy_free(&a);
}

static void test_bad(void) {
    char msg[256];
    NpyArray a;
    BAD("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16, "Fortran");
    BAD("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8, "big-endian");
    BAD("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16, "'<f8' is not supported");
    BAD("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 16, "not supported");
    BAD("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 16, "structured");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 23, "truncated data");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", 0, "negative");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 0,
        "overflow");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0,
        "too large");
    BAD("{'descr': '<f4', 'fortran_order': False, }", 0, "missing 'shape'");
    BAD("{'descr': '<f4', 'shape': (1,), }", 4, "missing 'fortran_order'");
    BAD("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 4, "repeated");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4, "unexpected");
    BAD("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", 4, "True or False");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': [1], }", 4, "not a tuple");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, }", 4, "malformed");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': (a,), }", 4, "integers");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } trailing", 4, "after the dict");
    BAD("{'descr: '<f4'}", 4, "malformed");
    BAD("not a dict", 4, "malformed");
    BAD("", 4, "malformed");
    BAD("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4,
        "dimensions");

    expect_bad((const unsigned char *)"\x93NUMPX\x01\x00\x00\x00", 10, "magic", __LINE__);
    expect_bad((const unsigned char *)"\x93NU", 3, "magic", __LINE__);
    expect_bad(NULL, 0, "magic", __LINE__);
    expect_bad((const unsigned char *)"\x93NUMPY\x04\x00\x10\x00", 10, "version 4", __LINE__);
    expect_bad((const unsigned char *)"\x93NUMPY\x01\x00\x40\x00{'descr'", 17, "truncated header",
               __LINE__);
    expect_bad((const unsigned char *)"\x93NUMPY\x02\x00\x00\x00\x02\x00", 12, "longer than",
               __LINE__);
    expect_bad((const unsigned char *)"\x93NUMPY\x02\x00\x00", 9, "magic", __LINE__);
    expect_bad((const unsigned char *)"\x93NUMPY\x02\x00\x00\x00", 10, "truncated", __LINE__);

    /* npy_read names the file and reports the same problems */
    EXPECT(!npy_read(tmp_path("missing.npy"), &a, msg, sizeof msg) && strstr(msg, "missing.npy"));
    size_t n = make_image(image, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }", 31);
    FILE *f = fopen(tmp_path("short.npy"), "wb");
    fwrite(image, 1, n, f);
    fclose(f);
    EXPECT(!npy_read(tmp_path("short.npy"), &a, msg, sizeof msg) && strstr(msg, "truncated data") &&
           strstr(msg, "short.npy"));
    f = fopen(tmp_path("empty.npy"), "wb");
    fclose(f);
    EXPECT(!npy_read(tmp_path("empty.npy"), &a, msg, sizeof msg) && strstr(msg, "magic"));
    f = fopen(tmp_path("hdr.npy"), "wb");
    fwrite(image, 1, 40, f);
    fclose(f);
    EXPECT(!npy_read(tmp_path("hdr.npy"), &a, msg, sizeof msg) && strstr(msg, "truncated header"));
    EXPECT(!npy_write(tmp_path("no/such/dir.npy"), NPY_F32, image, 0, NULL, msg, sizeof msg));
}

/* Every prefix and many byte flips of a valid image: never a crash (run under ASan). */
static void test_mutations(void) {
    unsigned char good[512], buf[512];
    size_t n = make_image(good, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 48);
    NpyArray a;
    char msg[128];
    EXPECT(npy_parse(good, n, &a, msg, sizeof msg));
    npy_free(&a);
    for (size_t len = 0; len < n; len++) {
        bool parsed = npy_parse(good, len, &a, msg, sizeof msg);
        CHECK(!parsed, "prefix of %zu bytes accepted", len);
        if (parsed) npy_free(&a);
    }
    uint64_t rng = 12345;
    for (int i = 0; i < 20000; i++) {
        memcpy(buf, good, n);
        for (int j = 0; j < 3; j++) buf[check_int(&rng, 0, 127)] = (unsigned char)check_rand(&rng);
        if (npy_parse(buf, n, &a, msg, sizeof msg)) npy_free(&a);
    }
}

static void test_half(void) {
    float vals[] = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f,
                    0.333251953125f};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        EXPECT(npy_f16_to_f32(npy_f32_to_f16(vals[i])) == vals[i]);
        if (i < 4) EXPECT(npy_bf16_to_f32(npy_f32_to_bf16(vals[i])) == vals[i]);
    }
    EXPECT(npy_f32_to_f16(1e6f) == 0x7c00);           /* overflow to inf */
    EXPECT(npy_f32_to_f16(1e-9f) == 0);               /* underflow to zero */
    EXPECT(npy_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00); /* tie to even */
    EXPECT(npy_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);
    EXPECT(npy_f16_to_f32(0x0001) == 5.960464477539063e-08f);
    EXPECT(npy_f32_to_bf16(1.0f) == 0x3f80 && npy_bf16_to_f32(0x3f80) == 1.0f);
    long bad = -1; /* every finite half survives a round trip */
    for (uint32_t h = 0; h < 0x10000 && bad < 0; h++)
        if ((h & 0x7c00) != 0x7c00 && npy_f32_to_f16(npy_f16_to_f32((uint16_t)h)) != h) bad = h;
    CHECK(bad < 0, "half 0x%04lx does not round-trip", bad);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_bad();
    test_mutations();
    test_half();
    const char *files[] = {"a.npy", "short.npy", "empty.npy", "hdr.npy"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(tmp_path(files[i]));
    rmdir(tmpdir);
    return check_done("test_npy");
}
