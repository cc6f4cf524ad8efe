/* npy.h — reading and writing NumPy .npy files (format versions 1, 2 and 3).
 *
 * Little-endian float32, int32 and float16 arrays in C order; anything else is refused with a
 * message, never a crash. Needs a little-endian host. */
#ifndef ATTNC_NPY_H
#define ATTNC_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8
#define NPY_MAX_HEADER 65536 /* longer headers are refused */

typedef enum NpyDtype { NPY_F32, NPY_I32, NPY_F16, NPY_I8 } NpyDtype;

typedef struct NpyArray {
    NpyDtype dtype;               /* element type */
    int ndim;                     /* 0 for a scalar */
    int64_t shape[NPY_MAX_DIMS];  /* sizes, outermost first */
    int64_t count;                /* elements: the product of shape (1 for a scalar) */
    void *data;                   /* count elements, malloc'd (never NULL after a success) */
} NpyArray;

/* Bytes per element of `t`. */
size_t npy_dtype_size(NpyDtype t);
/* The descr string of `t`: "<f4", "<i4", "<f2" or "|i1". */
const char *npy_dtype_descr(NpyDtype t);

/* Parses a whole .npy image. On failure returns false and writes a reason to msg[msglen]. */
bool npy_parse(const void *buf, size_t len, NpyArray *out, char *msg, size_t msglen);

/* Reads a .npy file. On failure returns false with a reason (which names the file). */
bool npy_read(const char *path, NpyArray *out, char *msg, size_t msglen);

/* Writes `data` as a version-1 .npy of dtype `t` and shape[ndim] (ndim 0: a scalar). */
bool npy_write(const char *path, NpyDtype t, const void *data, int ndim, const int64_t *shape,
               char *msg, size_t msglen);

/* Frees the data of an array (not the struct) and zeroes it. */
void npy_free(NpyArray *a);

/* IEEE half and bfloat16 conversions (round to nearest even). */
float npy_f16_to_f32(uint16_t h);
uint16_t npy_f32_to_f16(float f);
float npy_bf16_to_f32(uint16_t h);
uint16_t npy_f32_to_bf16(float f);

#endif
