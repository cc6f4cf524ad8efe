/* npy.c — NumPy .npy reading and writing; see npy.h.
 *
 * The header is a Python dict literal, e.g.
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * parsed here by a small recursive-descent reader that accepts exactly what NumPy writes (and
 * either quote style), and refuses everything else with a reason. */
#include "npy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "npy.c assumes a little-endian host");

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

static bool npy_fail(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool npy_fail(char *msg, size_t msglen, const char *fmt, ...) {
    if (msg && msglen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msglen, fmt, ap);
        va_end(ap);
    }
    return false;
}

size_t npy_dtype_size(NpyDtype t) { return t == NPY_I8 ? 1 : t == NPY_F16 ? 2 : 4; }

const char *npy_dtype_descr(NpyDtype t) {
    switch (t) {
    case NPY_F32: return "<f4";
    case NPY_I32: return "<i4";
    case NPY_F16: return "<f2";
    case NPY_I8: return "|i1";
    }
    return "?";
}

void npy_free(NpyArray *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

// the header dict

typedef struct NpyLex {
    const char *p, *end; /* the unread rest of the header */
} NpyLex;

static void npy_skip_ws(NpyLex *lx) {
    while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' || *lx->p == '\r'))
        lx->p++;
}

static bool npy_accept(NpyLex *lx, char c) {
    npy_skip_ws(lx);
    if (lx->p < lx->end && *lx->p == c) {
        lx->p++;
        return true;
    }
    return false;
}

/* string := "'" chars "'" | '"' chars '"' ; copied into buf (truncated to fit) */
static bool npy_string(NpyLex *lx, char *buf, size_t cap) {
    npy_skip_ws(lx);
    if (lx->p >= lx->end || (*lx->p != '\'' && *lx->p != '"')) return false;
    char quote = *lx->p++;
    size_t n = 0;
    while (lx->p < lx->end && *lx->p != quote) {
        if (*lx->p == '\\' || *lx->p == '\n') return false;
        if (n + 1 < cap) buf[n++] = *lx->p;
        lx->p++;
    }
    if (lx->p >= lx->end) return false;
    lx->p++;
    buf[n] = '\0';
    return true;
}

static bool npy_word(NpyLex *lx, const char *w) {
    npy_skip_ws(lx);
    size_t n = strlen(w);
    if ((size_t)(lx->end - lx->p) >= n && memcmp(lx->p, w, n) == 0) {
        lx->p += n;
        return true;
    }
    return false;
}

/* shape := '(' [ int { ',' int } [ ',' ] ] ')' */
static bool npy_shape(NpyLex *lx, NpyArray *a, char *msg, size_t msglen) {
    if (!npy_accept(lx, '('))
        return npy_fail(msg, msglen, "malformed header: 'shape' is not a tuple");
    a->ndim = 0;
    for (;;) {
        if (npy_accept(lx, ')')) return true;
        npy_skip_ws(lx);
        if (lx->p < lx->end && *lx->p == '-')
            return npy_fail(msg, msglen, "malformed header: a negative dimension in 'shape'");
        if (lx->p >= lx->end || *lx->p < '0' || *lx->p > '9')
            return npy_fail(msg, msglen, "malformed header: 'shape' must hold integers");
        int64_t v = 0;
        while (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9') {
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *lx->p - '0', &v))
                return npy_fail(msg, msglen, "a dimension in 'shape' is too large");
            lx->p++;
        }
        if (lx->p < lx->end && (*lx->p == 'L' || *lx->p == 'l')) lx->p++; /* Python 2 longs */
        if (a->ndim == NPY_MAX_DIMS)
            return npy_fail(msg, msglen, "more than %d dimensions are not supported",
                            NPY_MAX_DIMS);
        a->shape[a->ndim++] = v;
        if (npy_accept(lx, ',')) continue;
        if (npy_accept(lx, ')')) return true;
        return npy_fail(msg, msglen, "malformed header: 'shape' tuple not closed");
    }
}

/* dict := '{' { key ':' value ',' } '}' with keys descr, fortran_order, shape, each once. */
static bool npy_header(const char *h, size_t len, NpyArray *a, char *msg, size_t msglen) {
    NpyLex lx = {h, h + len};
    bool have_descr = false, have_order = false, have_shape = false, fortran = false;
    char descr[32] = "";
    if (!npy_accept(&lx, '{'))
        return npy_fail(msg, msglen, "malformed header: expected a '{' dict");
    for (;;) {
        if (npy_accept(&lx, '}')) break;
        char key[32];
        if (!npy_string(&lx, key, sizeof key))
            return npy_fail(msg, msglen, "malformed header: expected a quoted key or '}'");
        if (!npy_accept(&lx, ':'))
            return npy_fail(msg, msglen, "malformed header: expected ':' after '%s'", key);
        if (strcmp(key, "descr") == 0 && !have_descr) {
            have_descr = true;
            if (!npy_string(&lx, descr, sizeof descr))
                return npy_fail(msg, msglen,
                                "'descr' is not a simple type string (structured dtypes are "
                                "not supported)");
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            have_order = true;
            if (npy_word(&lx, "True")) fortran = true;
            else if (npy_word(&lx, "False")) fortran = false;
            else return npy_fail(msg, msglen, "malformed header: 'fortran_order' must be True or False");
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            have_shape = true;
            if (!npy_shape(&lx, a, msg, msglen)) return false;
        } else {
            return npy_fail(msg, msglen, "malformed header: unexpected or repeated key '%s'", key);
        }
        if (npy_accept(&lx, ',')) continue;
        if (npy_accept(&lx, '}')) break;
        return npy_fail(msg, msglen, "malformed header: expected ',' or '}'");
    }
    npy_skip_ws(&lx);
    while (lx.p < lx.end && *lx.p == '\0') lx.p++; /* some writers pad with NULs */
    if (lx.p != lx.end) return npy_fail(msg, msglen, "malformed header: text after the dict");
    if (!have_descr || !have_order || !have_shape)
        return npy_fail(msg, msglen, "malformed header: missing '%s'",
                        !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    if (fortran)
        return npy_fail(msg, msglen,
                        "Fortran-order arrays are not supported (save a C-order array, e.g. "
                        "np.ascontiguousarray(x))");
    if (strcmp(descr, "<f4") == 0 || strcmp(descr, "=f4") == 0) a->dtype = NPY_F32;
    else if (strcmp(descr, "<i4") == 0 || strcmp(descr, "=i4") == 0) a->dtype = NPY_I32;
    else if (strcmp(descr, "<f2") == 0 || strcmp(descr, "=f2") == 0) a->dtype = NPY_F16;
    else if (strcmp(descr, "|i1") == 0 || strcmp(descr, "<i1") == 0 || strcmp(descr, "=i1") == 0) a->dtype = NPY_I8;
    else if (descr[0] == '>')
        return npy_fail(msg, msglen, "big-endian dtype '%s' is not supported (use '<%s')", descr,
                        descr + 1);
    else
        return npy_fail(msg, msglen,
                        "dtype '%s' is not supported: expected float32 '<f4', int32 '<i4', "
                        "float16 '<f2' or int8 '|i1'",
                        descr);
    int64_t count = 1, bytes;
    for (int d = 0; d < a->ndim; d++)
        if (__builtin_mul_overflow(count, a->shape[d], &count))
            return npy_fail(msg, msglen, "the shape's element count overflows");
    if (__builtin_mul_overflow(count, (int64_t)npy_dtype_size(a->dtype), &bytes))
        return npy_fail(msg, msglen, "the shape's byte size overflows");
    a->count = count;
    return true;
}

/* The fixed prefix: magic, version, header length. Returns the prefix size, 0 on error. */
static size_t npy_prefix(const unsigned char *p, size_t len, size_t *hlen, char *msg,
                         size_t msglen) {
    if (len < 10 || memcmp(p, npy_magic, sizeof npy_magic) != 0) {
        npy_fail(msg, msglen, "not a .npy file (bad magic)");
        return 0;
    }
    int major = p[6];
    if (major == 1) {
        *hlen = (size_t)p[8] | (size_t)p[9] << 8;
        return 10;
    }
    if (major == 2 || major == 3) {
        if (len < 12) {
            npy_fail(msg, msglen, "truncated header");
            return 0;
        }
        uint32_t h = (uint32_t)p[8] | (uint32_t)p[9] << 8 | (uint32_t)p[10] << 16 |
                     (uint32_t)p[11] << 24;
        if (h > NPY_MAX_HEADER) {
            npy_fail(msg, msglen, "header of %u bytes is longer than %d", h, NPY_MAX_HEADER);
            return 0;
        }
        *hlen = h;
        return 12;
    }
    npy_fail(msg, msglen, "unsupported .npy format version %d.%d", major, p[7]);
    return 0;
}

bool npy_parse(const void *buf, size_t len, NpyArray *out, char *msg, size_t msglen) {
    memset(out, 0, sizeof *out);
    const unsigned char *p = buf;
    size_t hlen, pre = npy_prefix(p, len, &hlen, msg, msglen);
    if (!pre) return false;
    if (len - pre < hlen) return npy_fail(msg, msglen, "truncated header");
    NpyArray a;
    memset(&a, 0, sizeof a);
    if (!npy_header((const char *)p + pre, hlen, &a, msg, msglen)) return false;
    size_t bytes = (size_t)a.count * npy_dtype_size(a.dtype);
    size_t have = len - pre - hlen;
    if (have < bytes)
        return npy_fail(msg, msglen, "truncated data: %zu bytes, the shape needs %zu", have,
                        bytes);
    a.data = malloc(bytes ? bytes : 1);
    if (!a.data) return npy_fail(msg, msglen, "out of memory for %zu bytes", bytes);
    memcpy(a.data, p + pre + hlen, bytes);
    *out = a;
    return true;
}

bool npy_read(const char *path, NpyArray *out, char *msg, size_t msglen) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return npy_fail(msg, msglen, "%s: %s", path, strerror(errno));
    char why[256] = "";
    unsigned char pre[12];
    char *header = NULL;
    NpyArray a;
    memset(&a, 0, sizeof a);
    size_t n = fread(pre, 1, sizeof pre, f), hlen = 0;
    size_t plen = npy_prefix(pre, n, &hlen, why, sizeof why);
    if (!plen) goto fail;
    if (fseek(f, (long)plen, SEEK_SET) != 0) {
        snprintf(why, sizeof why, "cannot seek: %s", strerror(errno));
        goto fail;
    }
    header = malloc(hlen ? hlen : 1);
    if (!header) {
        snprintf(why, sizeof why, "out of memory");
        goto fail;
    }
    if (fread(header, 1, hlen, f) != hlen) {
        snprintf(why, sizeof why, "truncated header");
        goto fail;
    }
    if (!npy_header(header, hlen, &a, why, sizeof why)) goto fail;
    long start = ftell(f);
    if (start < 0 || fseek(f, 0, SEEK_END) != 0) {
        snprintf(why, sizeof why, "cannot determine the file size");
        goto fail;
    }
    long end = ftell(f);
    size_t bytes = (size_t)a.count * npy_dtype_size(a.dtype);
    if (end < start || (size_t)(end - start) < bytes) {
        snprintf(why, sizeof why, "truncated data: %ld bytes, the shape needs %zu",
                 end < start ? 0L : end - start, bytes);
        goto fail;
    }
    a.data = malloc(bytes ? bytes : 1);
    if (!a.data) {
        snprintf(why, sizeof why, "out of memory for %zu bytes", bytes);
        goto fail;
    }
    if (fseek(f, start, SEEK_SET) != 0 || fread(a.data, 1, bytes, f) != bytes) {
        snprintf(why, sizeof why, "read error");
        goto fail;
    }
    free(header);
    fclose(f);
    *out = a;
    return true;

fail:
    free(header);
    free(a.data);
    fclose(f);
    return npy_fail(msg, msglen, "%s: %s", path, why);
}

bool npy_write(const char *path, NpyDtype t, const void *data, int ndim, const int64_t *shape,
               char *msg, size_t msglen) {
    if (ndim < 0 || ndim > NPY_MAX_DIMS)
        return npy_fail(msg, msglen, "%s: %d dimensions are not supported", path, ndim);
    char h[512];
    int n = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     npy_dtype_descr(t));
    int64_t count = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || __builtin_mul_overflow(count, shape[d], &count))
            return npy_fail(msg, msglen, "%s: bad shape", path);
        n += snprintf(h + n, sizeof h - (size_t)n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    }
    n += snprintf(h + n, sizeof h - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    /* pad with spaces and a final newline so data starts on a 64-byte boundary */
    int total = (10 + n + 1 + 63) / 64 * 64;
    while (10 + n + 1 < total) h[n++] = ' ';
    h[n++] = '\n';
    unsigned char pre[10];
    memcpy(pre, npy_magic, sizeof npy_magic);
    pre[6] = 1, pre[7] = 0, pre[8] = (unsigned char)(n & 0xff), pre[9] = (unsigned char)(n >> 8);
    FILE *f = fopen(path, "wb");
    if (!f) return npy_fail(msg, msglen, "%s: %s", path, strerror(errno));
    size_t bytes = (size_t)count * npy_dtype_size(t);
    bool ok = fwrite(pre, 1, sizeof pre, f) == sizeof pre && fwrite(h, 1, (size_t)n, f) == (size_t)n &&
              (bytes == 0 || fwrite(data, 1, bytes, f) == bytes);
    if (fclose(f) != 0) ok = false;
    if (!ok) return npy_fail(msg, msglen, "%s: write error: %s", path, strerror(errno));
    return true;
}

// half precision

float npy_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13; /* inf, nan */
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | man << 13;
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalize */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (man & 0x3ff) << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t npy_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff);
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 0x1f) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = (uint32_t)e << 10 | man >> 13, rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into inf: right */
    return (uint16_t)(sign | half);
}

float npy_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t npy_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
