/* fz.h — the fuzz targets' shared helpers: reading the fuzzer's bytes, tensors with fuzzed
 * shapes and strides, and heap blocks of exactly the size a tensor spans (so ASan reports any
 * byte the runtime touches outside them). Header-only: each target includes it once. */
#ifndef ATTNC_TESTS_FZ_H
#define ATTNC_TESTS_FZ_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn_rt.h"
#include "../check.h"

#define FZ_MAX_ELEMS ((int64_t)1 << 16) /* larger tensors are checked, not run */

/* The fuzzer's bytes, read front to back; zeros once exhausted. */
typedef struct FzIn {
    const uint8_t *p, *end;
} FzIn;

__attribute__((unused)) static uint8_t fz_u8(FzIn *in) { return in->p < in->end ? *in->p++ : 0; }

__attribute__((unused)) static int64_t fz_i64(FzIn *in) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | fz_u8(in);
    return (int64_t)v;
}

/* A value in [lo, hi]. */
__attribute__((unused)) static int64_t fz_range(FzIn *in, int64_t lo, int64_t hi) {
    return lo + (int64_t)(fz_u8(in) % (uint64_t)(hi - lo + 1));
}

/* Mostly `right`, sometimes something else: small, off by one, or any 64-bit value. */
__attribute__((unused)) static int64_t fz_size(FzIn *in, int64_t right) {
    switch (fz_u8(in) % 16) {
    case 0: return fz_i64(in);
    case 1: return fz_range(in, -2, 5);
    case 2: return right + 1;
    case 3: return (int64_t)1 << fz_range(in, 30, 62);
    default: return right;
    }
}

__attribute__((unused)) static size_t fz_elem(attn_dtype t) { return t == ATTN_F16 || t == ATTN_BF16 ? 2 : t == ATTN_I8 ? 1 : 4; }

/* The storage type of a block's k and v: kv_dtype, as dtype when 0, f32 with kv_f32. */
__attribute__((unused)) static attn_dtype fz_kv_type(const attn_rt_desc *d) {
    return d->kv_f32 ? ATTN_F32 : d->kv_dtype != ATTN_F32 ? d->kv_dtype : d->dtype;
}

/* The same for an MLA block's latent cache (c_kv, k_rope). */
__attribute__((unused)) static attn_dtype fz_mla_kv_type(const attn_rt_mla_desc *d) {
    return d->kv_f32 ? ATTN_F32 : d->kv_dtype != ATTN_F32 ? d->kv_dtype : d->dtype;
}

/* An MLA block's storage: dtype f32, f16 or bf16, the latent cache as dtype, f16, bf16 or (under
 * a 16-bit dtype) f32 with kv_f32; sometimes a combination the runtime must refuse (int8 or no
 * type as kv_dtype, kv_f32 under f32 or beside a kv_dtype). */
__attribute__((unused)) static void fz_mla_dtypes(FzIn *in, attn_rt_mla_desc *md) {
    md->dtype = (attn_dtype)fz_range(in, 0, 2);
    int kv = (int)fz_range(in, 0, 3);
    md->kv_dtype = kv == 3 ? ATTN_F32 : (attn_dtype)kv;
    md->kv_f32 = kv == 3 && md->dtype != ATTN_F32;
    if (fz_u8(in) % 32 == 31) { /* hostile */
        md->dtype = (attn_dtype)fz_range(in, 0, 5);
        md->kv_dtype = (attn_dtype)fz_range(in, 0, 5);
        md->kv_f32 = (int)fz_range(in, 0, 1);
    }
}

__attribute__((unused)) static volatile uint32_t fz_sink;

__attribute__((unused)) static void fz_read(const void *p, size_t n) {
    const uint8_t *b = p;
    uint32_t s = 0;
    for (size_t i = 0; i < n; i++) s += b[i];
    fz_sink += s;
}

/* Elements spanned by a tensor: [0, extent) (0 if a size is below 1: nothing may be
 * touched). -1 if it exceeds FZ_MAX_ELEMS; -2 if its byte size does not fit in an int64. */
__attribute__((unused)) static int64_t fz_extent(const attn_tensor *t, size_t elem) {
    if (t->ndim < 0 || t->ndim > ATTN_MAX_DIMS) return 0;
    bool all_zero = true;
    for (int d = 0; d < t->ndim; d++) all_zero &= t->stride[d] == 0;
    __int128 n = 1, limit = (__int128)1 << 100;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 1) return 0;
        if (all_zero && t->shape[d] > limit / n) return -2;
        if (all_zero) n *= t->shape[d];
        else if (t->stride[d] >= 0) n += (__int128)(t->shape[d] - 1) * t->stride[d];
        if (n > limit) return -2;
    }
    if (n * (__int128)elem > INT64_MAX) return -2;
    return n > FZ_MAX_ELEMS ? -1 : (int64_t)n;
}

/* Allocates exactly what `t` spans (if that is small) and fills it from the input; a
 * one-element block, and *big (and *overflow) set, if it spans more. */
__attribute__((unused)) static void *fz_alloc(FzIn *in, const attn_tensor *t, size_t elem, bool *big, bool *overflow) {
    int64_t n = fz_extent(t, elem);
    if (n < 0) {
        *big = true;
        if (n == -2) *overflow = true;
        n = 1;
    }
    size_t bytes = (size_t)n * elem;
    uint8_t *p = malloc(bytes ? bytes : 1);
    REQUIRE(p, "out of memory");
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)(i * 131 + fz_u8(in));
    return p;
}

__attribute__((unused)) static void fz_tensor(FzIn *in, attn_tensor *t, int ndim, const int64_t *right) {
    memset(t, 0, sizeof *t);
    t->ndim = fz_u8(in) % 16 == 0 ? (int)fz_range(in, -1, 5) : ndim;
    int n = t->ndim < 0 ? 0 : t->ndim > ATTN_MAX_DIMS ? ATTN_MAX_DIMS : t->ndim;
    for (int d = 0; d < n; d++) t->shape[d] = fz_size(in, right[d]);
    switch (fz_u8(in) % 8) {
    case 0: /* row-major with padding */
    case 1: {
        int64_t s = 1;
        for (int d = n - 1; d >= 0; d--) {
            t->stride[d] = s;
            int64_t padded;
            if (__builtin_add_overflow(t->shape[d], fz_range(in, 0, 2), &padded) ||
                __builtin_mul_overflow(s, padded, &s))
                s = 1;
        }
        break;
    }
    case 2: /* anything */
        for (int d = 0; d < n; d++) t->stride[d] = fz_u8(in) & 1 ? fz_i64(in) : fz_range(in, -3, 40);
        break;
    case 3: /* the row dim outermost (a [batch, seq, heads, dim] buffer seen as [b, h, seq, d]) */
        if (n == 4 && t->shape[1] > 0 && t->shape[1] < 1 << 20 && t->shape[3] > 0 &&
            t->shape[3] < 1 << 20) {
            t->stride[3] = 1;
            t->stride[1] = t->shape[3];
            t->stride[2] = t->shape[1] * t->shape[3];
            t->stride[0] = t->stride[2] * (t->shape[2] > 0 && t->shape[2] < 1 << 20 ? t->shape[2] : 1);
        }
        break;
    default: break; /* all zero: row-major */
    }
}

#endif
