/* convert.c — element conversions between f32 and the 16-bit storage types, shared by every
 * path that widens 16-bit tensors into f32 scratch or rounds f32 results into them (paged
 * outputs, MLA's copies). Compiled at -O3 (CMakeLists.txt): GCC 12 leaves the row loops
 * scalar at -O2, and an MLA decode in bf16 widens every head's w_uk and w_uv each call. */
#include <math.h>
#include <string.h>

#include "rt_internal.h"

/* f32 to bf16 and f16 bits, rounding to nearest even (as the kernels store them). */
uint16_t rt_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

uint16_t rt_f32_to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0);
    if (a >= 0x477ff000u) return sign | 0x7c00; /* 65520 and up round to inf */
    if (a >= 0x38800000u) { /* normal: rebias the exponent, round the mantissa */
        uint32_t h = a - (112u << 23);
        return sign | (uint16_t)((h + 0xfffu + ((h >> 13) & 1)) >> 13);
    }
    return sign | (uint16_t)nearbyintf(fabsf(x) * 16777216.0f); /* subnormal: units of 2^-24 */
}

/* An IEEE binary16 value's f32 bits (subnormals, infinities and NaNs included). */
uint32_t rt_f16_bits_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) return sign | 0x7f800000u | (m << 13); /* inf, NaN */
    if (e == 0) {
        if (m == 0) return sign; /* zero */
        e = 127 - 15 + 1;        /* subnormal: normalize */
        while (!(m & 0x400)) m <<= 1, e--;
        return sign | (e << 23) | ((m & 0x3ff) << 13);
    }
    return sign | ((e + 127 - 15) << 23) | (m << 13);
}

void rt_widen_row(float *dst, const void *p, int64_t off, int64_t n, attn_dtype dt) {
    if (dt == ATTN_F32) {
        memcpy(dst, (const float *)p + off, sizeof(float) * (size_t)n);
        return;
    }
    const uint16_t *row = (const uint16_t *)p + off;
    if (dt == ATTN_BF16) /* a loop of its own, which the vectorizer takes */
        for (int64_t j = 0; j < n; j++) {
            uint32_t bits = (uint32_t)row[j] << 16;
            memcpy(dst + j, &bits, sizeof bits);
        }
    else
        for (int64_t j = 0; j < n; j++) {
            uint32_t bits = rt_f16_bits_to_f32(row[j]);
            memcpy(dst + j, &bits, sizeof bits);
        }
}

void rt_narrow_row(void *p, int64_t off, const float *src, int64_t n, attn_dtype dt) {
    if (dt == ATTN_F32) {
        memcpy((float *)p + off, src, sizeof(float) * (size_t)n);
        return;
    }
    uint16_t *row = (uint16_t *)p + off;
    for (int64_t j = 0; j < n; j++) row[j] = dt == ATTN_BF16 ? rt_f32_to_bf16(src[j]) : rt_f32_to_f16(src[j]);
}
