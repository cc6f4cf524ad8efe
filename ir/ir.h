/* ir.h — the attention IR: per `attention` block, a small graph of tensor ops plus the typed
 * scalar expression trees of its mask, score mod and head map.
 *
 * The frontend hands over fully resolved trees: lets and defs expanded, params folded to
 * constants, int operands of float ops wrapped in ITOF, input references bound to an index in
 * IrFunc.inputs. Integer arithmetic is 64-bit; DIV is floor division and MOD the non-negative
 * remainder, both by a positive constant (args[1] is always a CONST).
 */
#ifndef ATTNC_IR_H
#define ATTNC_IR_H

#include <stdbool.h>
#include <stdint.h>

#include "attn/attn_rt.h"
#include "util.h"

typedef enum IrType { IR_TY_BOOL, IR_TY_INT, IR_TY_FLOAT } IrType;

/* X(name, text, arity): arity -1 means variable (nargs). */
#define IR_EXPR_OPS(X)                                                                        \
    X(CONST, "const", 0)   /* ival / fval / bval by type */                                  \
    X(VAR, "var", 0)       /* IrVar in `var` */                                              \
    X(INPUT, "load", -1)   /* inputs[input][args...], nargs == rank (0 for a scalar) */      \
    X(NEG, "neg", 1)                                                                          \
    X(NOT, "not", 1)                                                                          \
    X(ITOF, "itof", 1)     /* int -> float */                                                \
    X(ADD, "add", 2)                                                                          \
    X(SUB, "sub", 2)                                                                          \
    X(MUL, "mul", 2)                                                                          \
    X(DIV, "div", 2)       /* int: floor division by a positive CONST; float: true division */ \
    X(MOD, "mod", 2)       /* int only: non-negative remainder by a positive CONST */        \
    X(EQ, "eq", 2)         /* comparisons: type BOOL, operands of args[0]->type */           \
    X(NE, "ne", 2)                                                                            \
    X(LT, "lt", 2)                                                                            \
    X(LE, "le", 2)                                                                            \
    X(GT, "gt", 2)                                                                            \
    X(GE, "ge", 2)                                                                            \
    X(AND, "and", 2)       /* short-circuit semantics are irrelevant: no side effects */     \
    X(OR, "or", 2)                                                                            \
    X(SELECT, "select", 3) /* args[0] ? args[1] : args[2] */                                 \
    X(CALL, "call", -1)    /* IrFn in `fn` */                                                \
    X(RANGE, "range", -1)  /* prune only: min (fn MIN) or max (fn MAX) of an i32 input over \
                              last index in [args[rank-1], args[rank]]; see IR_RANGE_NONE */

typedef enum IrExprOp {
#define X(name, text, arity) IR_##name,
    IR_EXPR_OPS(X)
#undef X
        IR_EXPR_OP_COUNT
} IrExprOp;

typedef enum IrVar {
    IR_V_Q, IR_V_K, IR_V_H, IR_V_B, IR_V_QLEN, IR_V_KVLEN, IR_V_SCORE,
    /* only in the prune pass's tile expressions: the tile's query and key position ranges */
    IR_V_QMIN, IR_V_QMAX, IR_V_KMIN, IR_V_KMAX
} IrVar;

/* X(name, text, arity, int_ok): int_ok functions take int or float args (result type follows). */
#define IR_FNS(X)                 \
    X(ABS, "abs", 1, true)        \
    X(MIN, "min", 2, true)        \
    X(MAX, "max", 2, true)        \
    X(EXP, "exp", 1, false)       \
    X(EXP2, "exp2", 1, false)     \
    X(LOG, "log", 1, false)       \
    X(LOG2, "log2", 1, false)     \
    X(SQRT, "sqrt", 1, false)     \
    X(TANH, "tanh", 1, false)     \
    X(ERF, "erf", 1, false)       \
    X(SIGMOID, "sigmoid", 1, false) \
    X(SIN, "sin", 1, false)       \
    X(COS, "cos", 1, false)       \
    X(FLOOR, "floor", 1, false)   \
    X(CEIL, "ceil", 1, false)

typedef enum IrFn {
#define X(name, text, arity, int_ok) IR_FN_##name,
    IR_FNS(X)
#undef X
        IR_FN_COUNT
} IrFn;

typedef struct IrExpr {
    IrExprOp op;           /* what the node computes */
    IrType type;           /* the type of its value */
    int var;               /* IrVar, for IR_VAR */
    int fn;                /* IrFn, for IR_CALL */
    int input;             /* index into IrFunc.inputs, for IR_INPUT */
    int64_t ival;          /* IR_CONST of type INT (BOOL: 0/1 in ival too) */
    double fval;           /* IR_CONST of type FLOAT */
    int nargs;             /* operands in use */
    struct IrExpr *args[5]; /* operands (RANGE: rank + 1) */
} IrExpr;

/* What IR_RANGE yields when it knows nothing (its range leaves the input): a bound far outside
 * any i32 value or position, yet far from overflowing the interval arithmetic around it. */
#define IR_RANGE_NONE ((int64_t)1 << 44)

/* One runtime input: `input i32 doc[batch, seq];` */
typedef struct IrInput {
    const char *name;                 /* as declared */
    attn_dtype dtype;                 /* ATTN_I32 or ATTN_F32 */
    int rank;                         /* 0..4 */
    attn_dim_kind dim_kind[ATTN_MAX_DIMS];
    int64_t dim_value[ATTN_MAX_DIMS]; /* for ATTN_DIM_CONST */
    bool summarize;                   /* the kernel reads its per-block min/max (IR_RANGE) */
} IrInput;

/* Tensor ops of the attention graph. Values are numbered; 0..2 are q, k, v. */
#define IR_TENSOR_OPS(X)                                                            \
    X(QK, "qk")             /* scores = q . k^T over qk_dim, K/V head by head map */ \
    X(SCALE, "scale")       /* scores *= scale */                                  \
    X(SCORE_MOD, "score_mod") /* scores = expr(score, q, k, h, b, ...) */          \
    X(MASK, "mask")         /* scores = expr ? scores : -inf */                     \
    X(SOFTMAX, "softmax")   /* row softmax; also yields lse */                      \
    X(PV, "pv")             /* out = p . v */                                       \
    X(FLASH, "flash")       /* the fused online-softmax loop nest: all of the above */

typedef enum IrOpKind {
#define X(name, text) IR_OP_##name,
    IR_TENSOR_OPS(X)
#undef X
        IR_OP_KIND_COUNT
} IrOpKind;

#define IR_MAX_OPS 16
#define IR_MAX_DOMAINS 4 /* disjoint key domains of a union mask */

typedef struct IrOp {
    IrOpKind kind;   /* what it computes */
    int result;      /* value number it defines (>= 3) */
    int operand[3];  /* value numbers it reads (-1 unused) */
} IrOp;

/* The schedule: how the kernel is tiled. Filled by the `schedule` pass; data, not code. */
typedef struct IrSchedule {
    int vec_width;  /* f32 lanes of the widest vector (16 AVX-512, 8 AVX2, 4 SSE/NEON) */
    int block_q;    /* query rows per task */
    int chunk_q;    /* query rows per chunk of a task (0: block_q); smaller, the chunks of a task
                     * keep the key blocks they packed for the next one (windows) */
    int block_k;    /* keys per inner block (a multiple of vec_width) */
    int rows;       /* query rows per register-blocked microkernel step */
} IrSchedule;

/* How a kernel function iterates: the template codegen emits (codegen/cg_tmpl_*.c). */
#define IR_TEMPLATES(X)                                                                   \
    X(ROWS, "rows")         /* chunks of query rows over blocks of keys (the general one) */ \
    X(BAND, "band")         /* an exact band of 1-4 vectors: rows grouped W apart */        \
    X(STAIR, "staircase")   /* residue classes whose rows see a staircase of class keys */  \
    X(KEY_RUNS, "key_runs") /* keys k % r in [base, base + w), compacted */                 \
    X(CLASS_RUNS, "class_runs") /* residue classes k = q (mod r), each a run of rows */ \
    X(GRAD_STEP, "grad_step") /* the backward's mask, score and derivatives for the runtime */

typedef enum IrTemplate {
#define X(name, text) IR_T_##name,
    IR_TEMPLATES(X)
#undef X
        IR_T_COUNT
} IrTemplate;

/* The functions a spec compiles to, by role: what the driver, AOT and the runtime iterate. */
typedef enum IrRole {
    IR_ROLE_TILE,  /* one (batch, head, query tile) task: the entry every kernel has */
    IR_ROLE_GROUP, /* the query heads of one K/V head together (GQA/MQA decode) */
    IR_ROLE_GRAD,  /* the backward's per-row bounds and per-key-vector step (runtime/grad.c) */
    IR_ROLE_COUNT
} IrRole;

/* How Q.K^T and P.V multiply (`compute = ...`): f32; operands rounded to bf16 with f32
 * accumulation; or Q and K quantized to int8 (K smoothed per packed block) with P.V in bf16. */
typedef enum IrCompute { IR_COMPUTE_F32, IR_COMPUTE_BF16, IR_COMPUTE_INT8 } IrCompute;

/* V rows copied to f32 scratch by the pack piece (P.V then reads them from there). */
typedef enum IrVPack {
    IR_VPACK_NEVER,   /* P.V reads the tensor */
    IR_VPACK_ALWAYS,  /* residue runs: rows r apart share L1 sets */
    IR_VPACK_RUNTIME, /* f32: when V's row stride puts more than 8 of a block's rows on a set */
} IrVPack;

/* Everything codegen needs to know about one kernel function, decided by the schedule pass
 * and only read afterwards (printed by `attnc dump --after schedule` as a `plan` line). */
/* Room a kernel's stack bound leaves for what its allocas do not show: spills, calls, the
 * pieces' frames. */
#define IR_STACK_SPILLS (32 * 1024)

/* How the few-rows path (decode) multiplies Q.K^T and P.V. */
typedef enum IrDecodeDot {
    IR_DECODE_FMA,    /* f32 FMAs (compute bf16: on operands rounded to bf16) */
    IR_DECODE_DPBF16, /* compute bf16: vdpbf16ps on K rows as bf16 pairs, P.V on pairs of keys */
    IR_DECODE_VNNI,   /* compute int8 over an int8 cache: vpdpbusd on the cached K rows, P.V bf16 */
} IrDecodeDot;

typedef struct IrPlan {
    IrRole role;          /* which entry this is */
    IrTemplate kind;      /* its template */
    int group;            /* role GROUP: query heads per K/V head; else 0 */
    int W;                /* f32 lanes per vector */
    int BK, NT;           /* keys per block (a multiple of W, up to 4W); vectors per block */
    int R;                /* register rows of a microkernel step */
    int BQ;               /* query rows per chunk (scratch for Q, acc, m, l) */
    int NRING;            /* packed key blocks kept for the task's next chunks (a ring), or 1 */
    int QK, VD, VC, VDP;  /* q/k and v dims; V chunks of W; V row padded to whole vectors */
    int few_rows;         /* chunks of up to this many rows score straight from K (0: never) */
    int decode_keys;      /* keys per sub-block of the group entry's few-row path */
    int pv_groups[2];     /* V chunks a P.V pass keeps in registers per row: R rows, one row */
    bool qdirect;         /* scores read q from the tensor (f32), not a scaled copy */
    IrVPack vpack;        /* whether the pack piece copies V rows */
    int vpack_sets;       /* RUNTIME: copy when V's row stride in bytes is a multiple of this */
    int band_w;           /* BAND: keys per row (a multiple of W up to 4W) */
    int64_t band_hi;      /* BAND: the band ends this many keys before q */
    int64_t tri_lo, tri_hi; /* STAIR: a row at x sees class keys [tri_lo, x - tri_hi] */
    int64_t stack;        /* bytes of stack the function may take, its pieces included */
    int block_q;          /* query rows per task */
    int min_block_q;      /* the runtime never cuts a task below this many rows */
    int cut_below;        /* tasks a thread below which the runtime cuts tall tiles */
    IrCompute compute;    /* how Q.K^T and P.V multiply */
    bool qk_bf16dot;      /* compute bf16 on bf16 pair dot products (vdpbf16ps): packed-K scores, K^T
                           * packed as words of two bf16 (d even, d odd) per key, q likewise */
    bool qk_vnni;         /* compute int8: packed-K scores on AVX512-VNNI's vpdpbusd, K^T as words of
                           * four int8 (d .. d+3) per key, q as four u8 (q + 128) */
    int decode_rows;      /* role GROUP: rows a pass of the few-rows path takes together (1: row by
                           * row; more share each key's loads and conversions of 16-bit/int8 K/V) */
    bool pv_bf16dot;      /* compute bf16/int8: P.V on vdpbf16ps, V always packed to VS as words
                           * of two keys' bf16 per column, p as words of two keys' weights */
    attn_dtype kvdt;      /* storage of K and V */
    IrDecodeDot decode_dot; /* the few-rows path's dot products */
} IrPlan;

/* Floats of one packed K^T block of a plan (a ring slot). */
static inline int64_t ir_plan_kt_floats(const IrPlan *p) {
    /* int8: the block's mean key (QK floats, padded to a vector), its keys' scales (BK) and (VNNI)
     * sums (BK) after it */
    int64_t extra = p->compute == IR_COMPUTE_INT8 ? (int64_t)(p->QK + p->W) / p->W * p->W + 2 * p->BK : 0;
    return (int64_t)(p->QK > 0 ? p->QK : 1) * p->BK + extra;
}

/* Index-space rewriting of a residue conjunct of the mask: the keys the kernel visits. mod 0:
 * every key. with_q: k = q (mod mod), so the rows of one residue class see only the keys of
 * that class (atrous, the strided pattern's column); else key-only: k % mod in [base, base +
 * width) (the fixed pattern's summary keys), visited in a compacted index j whose position is
 * mod * (j / width) + base + j % width. */
typedef struct IrRuns {
    int64_t mod;   /* 0, or >= 2 */
    int64_t base;  /* key-only: first residue visited */
    int64_t width; /* key-only: residues visited (< mod); 1 for with_q */
    bool with_q;   /* the class follows the query's */
} IrRuns;

/* What the prune pass derived from the mask: all INT/BOOL trees over the tile variables
 * QMIN/QMAX/KMIN/KMAX (inclusive position ranges) plus b, h, lengths and inputs. With runs,
 * the trees and `mask` speak of the keys of the runs only. */
typedef struct IrPrune {
    bool enabled;     /* false under -fno-prune or before the pass: every tile is partial */
    IrRuns runs;      /* the keys visited (runs.mod 0: all) */
    IrExpr *mask;     /* the mask on those keys: f->mask with the residue conjunct dropped */
    IrExpr *k_lo;     /* INT: no key below it is visible to any query in [QMIN, QMAX] */
    IrExpr *k_hi;     /* INT: no key above it is visible (inclusive) */
    IrExpr *may_see;  /* BOOL: false only if no pair of the tile is visible (empty tile) */
    IrExpr *all_see;  /* BOOL: true only if every pair of the tile is visible (full tile) */
    bool exact;       /* the mask is exactly k_lo <= k <= k_hi on a one-row tile (QMIN = QMAX) */
} IrPrune;

typedef enum IrAbsorb { IR_ABSORB_AUTO, IR_ABSORB_ON, IR_ABSORB_OFF } IrAbsorb;

/* DeepSeek's multi-head latent attention (SPEC §3). An MLA func is, as written, the
 * up-projected form: heads == kv_heads, qk_dim = nope_dim + rope_dim, v_dim = mla v_dim; the
 * absorb pass adds the absorbed variant (one shared K/V head over the latent cache). */
typedef struct IrMla {
    bool present;         /* the block has an `mla { }` */
    int kv_rank;          /* latent width (c_kv) */
    int rope_dim;         /* decoupled RoPE width, shared by all heads on the key side */
    int nope_dim;         /* per-head non-RoPE Q/K width */
    int v_dim;            /* per-head value width */
    IrAbsorb absorb;      /* the spec's `absorb = ...` */
    bool absorbed;        /* this func is the absorbed variant (the absorb pass made it) */
    attn_dtype dtype;     /* storage of q_nope, q_rope, w_uk, w_uv, o (`dtype = ...`; the func's own
                           * dtype is f32: its kernels run on f32 copies) */
    attn_dtype kv_dtype;  /* storage of c_kv, k_rope when it differs (`kv_dtype = ...`); f32: as dtype
                           * (ir_mla_kv_dtype) unless kv_f32 */
    bool kv_f32;          /* `kv_dtype = f32;` under a 16-bit dtype: c_kv, k_rope stored in f32 */
} IrMla;

/* The storage type of an MLA block's latent cache (c_kv, k_rope). */
static inline attn_dtype ir_mla_kv_dtype(const IrMla *m) {
    return m->kv_f32 ? ATTN_F32 : m->kv_dtype != ATTN_F32 ? m->kv_dtype : m->dtype;
}

/* The backward's view of `score = EXPR` (the grad pass): its derivative in the scaled score
 * s, and for each read of an f32 input, the derivative in the value read (the gradient of
 * that input adds dS * d at the element read, every read its own term). */
#define IR_MAX_GRAD_READS 8

typedef struct IrGradRead {
    IrExpr *load; /* an IR_INPUT node of f->score (an f32 input) */
    IrExpr *d;    /* d score / d (the value it reads): FLOAT over the score's names */
} IrGradRead;

typedef struct IrGrad {
    bool present;     /* the grad pass ran */
    IrExpr *dscore;   /* d score / d s; NULL without a score modifier (then 1) */
    int nreads;       /* f32 input reads of the score */
    IrGradRead reads[IR_MAX_GRAD_READS];
} IrGrad;

/* What a func derived from a block's func is for. */
typedef enum IrVariantKind {
    IR_VAR_MAIN,     /* the block as written (never in a variants list; see drv_compiled_funcs) */
    IR_VAR_DOMAIN,   /* split: one of the disjoint key domains of a union mask, merged through LSEs */
    IR_VAR_PERMUTED, /* permute: the same attention in rank order (a causal mask) */
    IR_VAR_ABSORBED, /* absorb: MLA scoring against the latent cache */
} IrVariantKind;

#define IR_MAX_VARIANTS (IR_MAX_DOMAINS + 2)

typedef struct IrVariant {
    IrVariantKind kind;   /* what it is for */
    struct IrFunc *f;     /* the func (in the same arena) */
} IrVariant;

typedef struct IrFunc {
    const char *name;      /* the attention block's name */
    int heads;             /* query heads */
    int kv_heads;          /* K/V heads */
    int qk_dim;            /* Q/K head dim */
    int v_dim;             /* V/O head dim */
    attn_dtype dtype;      /* storage type of q, k, v, o */
    attn_dtype kv_dtype;   /* storage type of k, v when it differs from dtype (`kv_dtype = ...`:
                            * f16, bf16, int8); ATTN_F32 means as dtype (ir_kv_dtype) unless kv_f32 */
    bool kv_f32;           /* `kv_dtype = f32;` under a 16-bit dtype: k, v stored in f32 */
    IrCompute compute;     /* `compute = ...` */
    double scale;          /* multiplies q . k */
    int *head_map;         /* [heads]: the K/V head each query head reads */
    IrExpr *head_map_expr; /* the spec's `kv_head = ...` over h, or NULL for contiguous groups */
    IrExpr *mask;          /* BOOL over q, k, h, b, lengths, inputs; never NULL (const true) */
    IrExpr *score;         /* FLOAT over score, ...; NULL when the spec has no `score =` */
    int page_size;         /* `kv_cache = paged(P);`: P (keys per page, ragged batches); 0: contiguous */
    int ninputs;           /* runtime inputs */
    IrInput inputs[ATTN_MAX_INPUTS];
    int nops;              /* tensor ops, in order */
    IrOp ops[IR_MAX_OPS];
    int nvalues;           /* value numbers in use */
    int output;            /* value number of the output o */
    IrSchedule sched;      /* tiling, filled by the schedule pass */
    int nplans;            /* kernel functions (the schedule pass): 1, or 2 with a group entry */
    IrPlan plans[IR_ROLE_COUNT]; /* theirs, by role (plans[IR_ROLE_TILE] always) */
    IrPrune prune;         /* mask analysis, filled by the prune pass */
    IrGrad grad;           /* the score's derivatives, filled by the grad pass */
    IrMla mla;             /* multi-head latent attention, when present */
    int perm_input;        /* the i32 input [batch, seq] holding the ranks (a permuted variant) */
    int nvariants;         /* funcs the passes derived from this one, in the order made */
    IrVariant variants[IR_MAX_VARIANTS];
    Arena *arena;          /* where its trees live (the module's) */
} IrFunc;

/* The storage type of k and v. */
static inline attn_dtype ir_kv_dtype(const IrFunc *f) {
    return f->kv_f32 ? ATTN_F32 : f->kv_dtype != ATTN_F32 ? f->kv_dtype : f->dtype;
}

typedef struct IrModule {
    Arena arena;       /* owns everything below */
    int nfuncs;        /* attention blocks, in file order */
    IrFunc **funcs;
} IrModule;

// ir.c

IrModule *ir_module_new(void);
void ir_module_free(IrModule *m);
IrFunc *ir_func_new(IrModule *m, const char *name); /* appended to m->funcs; the default graph */
IrFunc *ir_module_find(IrModule *m, const char *name);
/* The i-th variant of `kind` of f (i from 0), or NULL; how many f has; adding one (false when
 * the list is full); dropping every one of a kind (from a copy of f, say). */
IrFunc *ir_variant(const IrFunc *f, IrVariantKind kind, int i);
int ir_variant_count(const IrFunc *f, IrVariantKind kind);
bool ir_variant_add(IrFunc *f, IrVariantKind kind, IrFunc *g);
void ir_variant_drop(IrFunc *f, IrVariantKind kind);

IrExpr *ir_const_int(Arena *a, int64_t v);
IrExpr *ir_const_float(Arena *a, double v);
IrExpr *ir_const_bool(Arena *a, bool v);
IrExpr *ir_var(Arena *a, IrVar v);
IrExpr *ir_unary(Arena *a, IrExprOp op, IrExpr *x);           /* type inferred */
IrExpr *ir_binary(Arena *a, IrExprOp op, IrExpr *x, IrExpr *y); /* type inferred */
IrExpr *ir_select(Arena *a, IrExpr *c, IrExpr *x, IrExpr *y);
IrExpr *ir_call(Arena *a, IrFn fn, int nargs, IrExpr **args);
IrExpr *ir_load(Arena *a, int input, IrType type, int nargs, IrExpr **idx);
/* min (fn IR_FN_MIN) or max of i32 input `input` over its last index in [lo, hi], the other
 * indices fixed by idx[0 .. rank-2]: IR_RANGE_NONE (max) / -IR_RANGE_NONE (min) when the range
 * is empty or leaves the input. */
IrExpr *ir_range(Arena *a, IrFn fn, int input, int rank, IrExpr **idx, IrExpr *lo, IrExpr *hi);

const char *ir_op_name(IrExprOp op);
const char *ir_fn_name(IrFn fn);
int ir_fn_arity(IrFn fn);
const char *ir_var_name(IrVar v);
const char *ir_tensor_op_name(IrOpKind k);
const char *ir_type_name(IrType t); /* "bool", "int", "float" */
const char *ir_dtype_name(attn_dtype t); /* "f32", "f16", "bf16", "i32", "int8" */
const char *ir_compute_name(IrCompute c); /* "f32", "bf16", "int8" */
const char *ir_infix_text(IrExprOp op); /* "+", "<=", "&&"...; NULL for non-infix ops */
bool ir_expr_uses_var(const IrExpr *e, IrVar v);
bool ir_expr_equal(const IrExpr *a, const IrExpr *b);

// mask.c — mask analysis, for the passes and the code generator

/* Flattens a tree of `op` (IR_AND, IR_OR) into its terms (returns the count, which may pass
 * max), and joins terms back, leaving out terms[skip] (-1: none). */
int ir_mask_flatten(IrExpr *e, IrExprOp op, IrExpr **out, int n, int max);
IrExpr *ir_mask_join(Arena *a, IrExprOp op, IrExpr **terms, int n, int skip);
/* The comparison with its operands swapped: a < b  <=>  b > a. */
IrExprOp ir_cmp_mirror(IrExprOp op);
/* A residue conjunct of a mask ((q - k) % r == 0, k % r == q % r, k % r >= c, ...) as runs of
 * keys (IrRuns); false for anything else or a residue set not worth visiting apart. */
bool ir_mask_residue(const IrExpr *e, IrRuns *out);
/* An exact band (prune.exact, bounds over the row alone): a row at x sees exactly the keys
 * [x - *hi - w + 1, x - *hi]; returns w (0: the mask is no such band). */
int64_t ir_prune_band(const IrFunc *f, int64_t *hi);
/* A staircase from a fixed key (prune.exact): a row at x sees exactly the keys [*lo, x - *hi]
 * (causal and its shifts; a residue class's run of strided or atrous masks, in class keys). */
bool ir_prune_tri(const IrFunc *f, int64_t *lo, int64_t *hi);
/* The K/V head query head h reads (the head map, or contiguous groups). */
int ir_head_kv(const IrFunc *f, int h);
/* The plan of f's entry `role`, or NULL (no such entry, or before the schedule pass). */
const IrPlan *ir_plan(const IrFunc *f, IrRole role);
/* Query heads per K/V head of f's group entry ("<tile symbol>_group", same type as the tile
 * function, h = the K/V head); 0 when it has none. */
int ir_group_size(const IrFunc *f);
/* "rows", "band"...; and "tile", "group" */
const char *ir_template_name(IrTemplate t);
const char *ir_role_name(IrRole r);

// diff.c — symbolic derivatives (the backward)

/* d e / d wrt of a float expression, wrt the score variable (NULL) or one IR_INPUT node of e;
 * zeros and ones folded; NULL when out of memory. Trees share e's nodes. */
IrExpr *ir_diff(Arena *a, IrExpr *e, const IrExpr *wrt);
/* Fills f->grad from f->score; false (a message in err) when the score reads f32 inputs more
 * than IR_MAX_GRAD_READS times or memory runs out. */
bool ir_grad_derive(IrFunc *f, StrBuf *err);

// print.c

/* The stable text form: `attnc dump` prints it. */
void ir_print_expr(StrBuf *sb, const IrFunc *f, const IrExpr *e);
void ir_print_func(StrBuf *sb, const IrFunc *f);
void ir_print_module(StrBuf *sb, const IrModule *m);

// verify.c

/* Checks structural invariants; on failure appends a message to `msg` and returns false. */
bool ir_verify_func(const IrFunc *f, StrBuf *msg);

// eval.c — the one evaluator of scalar expressions (constants, folding, the reference)

/* Values a scalar expression reads; the tensor data is not needed for masks. */
typedef struct IrEnv {
    int64_t q, k, h, b, q_len, kv_len; /* positions and sizes */
    int64_t qmin, qmax, kmin, kmax;    /* tile ranges, for the prune pass's expressions */
    double score;                      /* for score mods */
    const attn_rt_args *args;          /* runtime inputs (input[] and input_dim[]) */
    bool index_error;                  /* set when an input index was out of bounds */
    bool const_only;                   /* compile time: variables and inputs are unknown... */
    bool h_known;                      /* ...but h (the head map's) when this is set */
    bool unknown;                      /* const_only: the value read something unknown */
    bool overflow;                     /* integer overflow, or a divisor not positive: the
                                        * value is meaningless (wrapped) */
} IrEnv;

typedef union IrValue {
    int64_t i; /* INT and BOOL */
    double f;  /* FLOAT */
} IrValue;

/* Evaluates `e` (f: the inputs' declarations, may be NULL when `e` reads none). */
IrValue ir_eval(const IrFunc *f, const IrExpr *e, IrEnv *env);

typedef enum IrEvalStatus { IR_EVAL_OK, IR_EVAL_NONCONST, IR_EVAL_OVERFLOW } IrEvalStatus;

/* Evaluates a compile-time constant: `e` may read h when `h` is not NULL, nothing else. */
IrEvalStatus ir_eval_const(const IrExpr *e, const int64_t *h, IrValue *out);

/* The integer `/` and `%` of specs (Python's): floor division and the non-negative remainder,
 * by d > 0. The only definition outside the code generator. */
int64_t ir_floor_div(int64_t a, int64_t d);
int64_t ir_floor_mod(int64_t a, int64_t d);

// interp.c — the double-precision reference

/* Runs the whole attention of `f` in double precision on validated args (f32 tensors),
 * writing f32 `o` (and lse if requested). Returns ATTN_ERR_INDEX on an input index out of
 * bounds, ATTN_ERR_OVERFLOW when the mask or score overflows 64-bit integers, ATTN_ERR_NOMEM,
 * or ATTN_OK. Follows the op graph (fused or not). */
attn_status ir_interpret(const IrFunc *f, const attn_rt_args *args);
/* Element i of a q/k/v/o array in dtype t, as a double. */
double ir_load_elem(attn_dtype t, const void *base, int64_t i);

// interp_grad.c — the backward's double-precision reference

/* What a backward reads and writes besides the forward's args: dout shaped like o (contiguous
 * [batch, heads, q_len, v_dim], f32); the gradients contiguous in double, dq like q
 * [batch, heads, q_len, qk_dim], dk like k and dv like v ([batch, kv_heads, kv_len, ...]),
 * dinput[i] like input i for the f32 inputs the score reads (NULL: not wanted). Zeroed by
 * the call. */
typedef struct IrGradArgs {
    const float *dout;
    double *dq, *dk, *dv;
    double *dinput[ATTN_MAX_INPUTS];
} IrGradArgs;

/* The gradients of sum(dout * o) with respect to q, k, v and the score's f32 inputs, in double
 * precision from the forward recomputed in double (f->grad from the grad pass). Returns
 * ATTN_ERR_INDEX on an input index out of bounds, ATTN_ERR_NOMEM, or ATTN_OK. */
attn_status ir_interpret_backward(const IrFunc *f, const attn_rt_args *a, const IrGradArgs *g);
/* sum(dout * o) of the forward in double precision (what the backward differentiates). */
attn_status ir_interpret_loss(const IrFunc *f, const attn_rt_args *a, const float *dout, double *loss);

#endif
