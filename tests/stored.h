/* stored.h — tests' f32, f16 and bf16 storage of values (bf16 rounded to nearest even, as the
 * kernels store it), read back as the kernels read them. */
#ifndef ATTNC_TESTS_STORED_H
#define ATTNC_TESTS_STORED_H

#include <stdint.h>
#include <string.h>

#include "attn/attn.h"

static inline uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* x stored as t (not int8) into dst[i]; returns the value the kernel reads */
static inline float store(attn_dtype t, void *dst, size_t i, float x) {
    if (t == ATTN_BF16) return from_bf16(((uint16_t *)dst)[i] = to_bf16(x));
    if (t == ATTN_F16) return (float)(((_Float16 *)dst)[i] = (_Float16)x);
    ((float *)dst)[i] = x;
    return x;
}

static inline float load(attn_dtype t, const void *src, size_t i) {
    if (t == ATTN_BF16) return from_bf16(((const uint16_t *)src)[i]);
    if (t == ATTN_F16) return (float)((const _Float16 *)src)[i];
    return ((const float *)src)[i];
}

static inline size_t esize(attn_dtype t) { return t == ATTN_F32 ? 4 : t == ATTN_I8 ? 1 : 2; }

#endif
