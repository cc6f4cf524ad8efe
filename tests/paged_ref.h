/* paged_ref.h — the double-precision reference of one sequence of a paged, ragged batch: its
 * pages gathered into contiguous K/V and run through the IR interpreter. Shared by the paged
 * tests; the caller chooses which f32 values (stored or unrounded) the reference reads. */
#ifndef ATTNC_TESTS_PAGED_REF_H
#define ATTNC_TESTS_PAGED_REF_H

#include <stdbool.h>
#include <stdint.h>

#include "attn/attn.h"
#include "ir/ir.h"

/* A paged batch's layout: q [T][H][DQ], pages [NP][P][KH][D], table [B][MP]. */
typedef struct PagedShape {
    int B, P, H, KH, DQ, DV, MP;
    const int32_t *starts, *lens, *table;
} PagedShape;

/* Sequence b's reference into ro [n][H][DV], rl [n][H], interpreted as a batch of s->B rows
 * that all read b's gathered K/V (row b is kept). False when the interpreter fails. */
bool paged_reference(const IrFunc *f, const PagedShape *s, const float *q, const float *kp, const float *vp, int b,
                     const attn_input *in, int nin, double *ro, double *rl);

#endif
