/* attn_mpi.h — ring (context-parallel) attention over MPI: one attention over a sequence
 * sharded across the ranks of a communicator (libattnc_mpi; link it with libattnc and MPI).
 *
 * Each rank holds a shard of Q, K and V (and gets its shard of O and lse): with R ranks,
 * `contiguous` shards give rank r the positions [r*n/R, (r+1)*n/R) of a sequence of n rows;
 * `zigzag` shards cut the sequence in 2R chunks (chunk c: [c*n/2R, (c+1)*n/2R)) and give rank r
 * chunks r and 2R-1-r, one after the other (which balances causal masks). Q is sharded over
 * q_len, K and V over kv_len, the same way. K/V shards travel with non-blocking point-to-point
 * messages while the local kernel runs, only to the ranks whose queries may see them (the
 * mask's key bounds decide), and the partial results merge through their log-sum-exps.
 *
 * Every rank passes the full runtime inputs (the same on all ranks). Calls are collective:
 * every rank of the communicator calls with the same kernel and sizes; a rank whose sizes
 * disagree with the others', or whose call is refused, makes the call fail on every rank with
 * the same status and message (no rank hangs). */
#ifndef ATTN_MPI_H
#define ATTN_MPI_H

#include <mpi.h>

#include "attn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum attn_shard { ATTN_SHARD_CONTIGUOUS = 0, ATTN_SHARD_ZIGZAG = 1 } attn_shard;

/* The positions rank `rank` of `ranks` holds of a sequence of n rows: pieces [begin[i], end[i])
 * (1 contiguous, 2 zigzag), stored one after the other in its shard. Returns the number of
 * pieces, or 0 for bad arguments. */
int attn_ring_shard(int64_t n, int ranks, int rank, attn_shard shard, int64_t begin[2], int64_t end[2]);

/* The rows of rank `rank`'s shard (the sum of its pieces' lengths); -1 for bad arguments. */
int64_t attn_ring_shard_rows(int64_t n, int ranks, int rank, attn_shard shard);

/* One ring call: this rank's shards and the full inputs. A zero-initialised struct means the
 * defaults (contiguous shards, q_offset = kv_len - q_len, the kernel's threads). */
typedef struct attn_ring_call {
    attn_tensor q;            /* this rank's shard: [batch, heads, q rows, qk_dim] */
    attn_tensor k;            /* [batch, kv_heads, k rows, qk_dim] */
    attn_tensor v;            /* [batch, kv_heads, k rows, v_dim] */
    attn_tensor o;            /* out: [batch, heads, q rows, v_dim] */
    attn_tensor lse;          /* out, optional (data NULL): [batch, heads, q rows] */
    int64_t q_offset;         /* position of query row 0 of the whole sequence, as in attn_call */
    int q_offset_set;         /* as in attn_call */
    const attn_input *inputs; /* the full runtime inputs, the same on every rank */
    int ninputs;
    int threads;              /* threads of this rank's kernel runs (0: the kernel's default) */
    attn_shard shard;         /* how q_len and kv_len are split across the ranks */
} attn_ring_call;

/* What one rank did in a ring call. */
typedef struct attn_ring_stats {
    int ranks, rank;
    int64_t bytes_sent;      /* K/V (backward: also dK/dV) bytes this rank sent */
    int64_t bytes_received;
    int pairs_computed;      /* (its query shard, a key shard) pairs with visible keys */
    int pairs_total;         /* the ranks: every key shard */
    int sends;               /* ranks its K/V shard went to */
    double ms_total;         /* wall time of the call */
    double ms_wait;          /* of which waiting for messages after the compute was done */
} attn_ring_stats;

/* The forward over the ring: o (and lse) get this rank's rows of the attention of the whole
 * sequence. `stats` may be NULL. Any storage type: q, k, v and o in the block's dtype and
 * kv_dtype (int8 K/V: k_scale and v_scale among the full inputs), K/V travelling as stored;
 * the parts merge in f32, a 16-bit o rounded to nearest even at the end. MLA: ATTN_ERR_ARG. */
attn_status attn_ring_run(attn_kernel *kernel, const attn_ring_call *call, MPI_Comm comm, attn_ring_stats *stats,
                          attn_error *err);

/* The same for compiled descriptors (attn_kernel_domains' key domains, or one block), on
 * `pool` (may be NULL). Without the kernel the schedule comes from the descriptors' key bounds
 * alone (grad_bounds; none: every pair), which do not look at runtime inputs' values: a mask of
 * packed documents then computes every pair the causal bound allows. */
attn_status attn_ring_launch(const attn_rt_desc *const *descs, int ndescs, const attn_ring_call *call,
                             MPI_Comm comm, attn_rt_pool *pool, attn_ring_stats *stats, attn_error *err);

/* The backward over the ring: `call` as given to attn_ring_run, its o and lse holding the
 * forward's results (lse required); grad->dout, dq this rank's shards (shaped like o and q,
 * f32 whatever the storage type: 16-bit and int8 blocks compute on f32 copies of q, k, v, o),
 * dk, dv its K/V shards' gradients (shaped like k, v), which the other ranks' partials travel
 * back to and are added to in a fixed order; dinputs the full gradients of the f32 inputs,
 * the same on every rank. Deterministic for a given number of ranks and shards. */
attn_status attn_ring_run_backward(attn_kernel *kernel, const attn_ring_call *call, const attn_grad_call *grad,
                                   MPI_Comm comm, attn_ring_stats *stats, attn_error *err);
attn_status attn_ring_launch_backward(const attn_rt_desc *const *descs, int ndescs, const attn_ring_call *call,
                                      const attn_grad_call *grad, MPI_Comm comm, attn_rt_pool *pool,
                                      attn_ring_stats *stats, attn_error *err);

#ifdef __cplusplus
}
#endif
#endif
