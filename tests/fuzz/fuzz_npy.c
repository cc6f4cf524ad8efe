/* fuzz_npy.c — libFuzzer target for the .npy reader the CLI takes its tensors through
 * (tools/npy.c): any bytes are parsed; a refusal must give a reason, and an accepted array
 * must be consistent (its count the product of its shape, its data all there: every byte is
 * read, so ASan reports a short buffer) and write back to the same array. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/npy.h"
#include "../check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    NpyArray a;
    char msg[256] = "";
    if (!npy_parse(data, size, &a, msg, sizeof msg)) {
        REQUIRE(msg[0], "a refused .npy without a reason");
        return 0;
    }
    REQUIRE(a.ndim >= 0 && a.ndim <= NPY_MAX_DIMS && a.data, "an accepted array of %d dims, data %p", a.ndim, a.data);
    int64_t n = 1;
    for (int d = 0; d < a.ndim; d++) {
        REQUIRE(a.shape[d] >= 0, "dim %d is %lld", d, (long long)a.shape[d]);
        n *= a.shape[d];
    }
    REQUIRE(n == a.count, "count %lld, shape product %lld", (long long)a.count, (long long)n);
    size_t bytes = (size_t)a.count * npy_dtype_size(a.dtype);
    REQUIRE(bytes <= size, "%zu data bytes from a %zu-byte file", bytes, size);
    /* round trip: written and read back, the same array */
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_npy_%d.npy", (int)getpid());
    REQUIRE(npy_write(path, a.dtype, a.data, a.ndim, a.shape, msg, sizeof msg), "write: %s", msg);
    NpyArray b;
    REQUIRE(npy_read(path, &b, msg, sizeof msg), "read back: %s", msg);
    REQUIRE(b.dtype == a.dtype && b.ndim == a.ndim && b.count == a.count &&
                !memcmp(b.shape, a.shape, sizeof a.shape[0] * (size_t)a.ndim) && !memcmp(b.data, a.data, bytes),
            "the array read back differs");
    unlink(path);
    npy_free(&b);
    npy_free(&a);
    return 0;
}
