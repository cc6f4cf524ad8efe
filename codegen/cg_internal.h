/* cg_internal.h — what the files of codegen/ share: the LLVM emission context and the
 * helpers of cg_emit.c (types, intrinsics, loops, vector exp), cg_expr.c (mask and score
 * expressions, mask interval analysis) and cg_kernel.c (the flash kernel). */
#ifndef ATTNC_CG_INTERNAL_H
#define ATTNC_CG_INTERNAL_H

#include <llvm-c/Core.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/TargetMachine.h>

#include "codegen/codegen.h"

typedef struct CgParts CgParts;

/* One function being built: the LLVM handles and the cached types. */
typedef struct Cg {
    LLVMContextRef ctx;     /* owns types and constants */
    LLVMModuleRef mod;      /* the module the function goes in */
    CgParts *parts;         /* split mode: every function in a module (and context) of its own */
    LLVMBuilderRef b;       /* the instruction builder */
    LLVMValueRef fn;        /* the function being emitted */
    LLVMBasicBlockRef entry; /* its entry block (allocas go there) */
    int W;                  /* f32 lanes per vector */
    int64_t stack;          /* bytes of the function's array allocas so far (with alignment) */
    LLVMTypeRef i1, i8, i16, i32, i64, f32, f16, ptr, voidt; /* scalar types */
    LLVMTypeRef vf, vi1, vi32, vi64;                      /* <W x ...> vector types */
} Cg;

// codegen.c

/* Consumes `e`, appending "codegen: WHAT: message" to err. */
void cg_report_error(StrBuf *err, const char *what, LLVMErrorRef e);
/* Binds the libm functions kernels may call by address, so the JIT never depends on what the
 * process happens to have loaded. */
bool cg_define_libm(LLVMOrcLLJITRef jit, LLVMOrcJITDylibRef jd, StrBuf *err);

/* A home for a new function: in split mode (c->parts) a fresh context and module, else c's
 * module; `out` gets a builder of its own and the types of c->W lanes. */
void cg_fn_open(const Cg *c, Cg *out);
/* Closes the home of `fn` opened by cg_fn_open. In split mode its module joins c->parts, to be
 * compiled with the -O3 code generator when `hot`; with `fold`, a module identical to an earlier
 * folded one is dropped instead. Returns the name callers must use (the earlier function's
 * when folded), or NULL (out of memory, reported in err). */
const char *cg_fn_close(Cg *c, Cg *fc, LLVMValueRef fn, bool fold, bool hot, StrBuf *err);

// cg_emit.c — small emission helpers

void cg_init_types(Cg *c, int W);
LLVMValueRef cg_i64(Cg *c, int64_t v);
LLVMValueRef cg_i32(Cg *c, int32_t v);
LLVMValueRef cg_f32(Cg *c, double v);
LLVMValueRef cg_bool(Cg *c, bool v);
LLVMValueRef cg_splat(Cg *c, LLVMValueRef scalar);      /* scalar -> <W x ty> */
LLVMValueRef cg_const_like(Cg *c, LLVMTypeRef ty, double v); /* float constant, scalar or vector */
LLVMValueRef cg_iota(Cg *c);                            /* <0, 1, .., W-1> as <W x i64> */
LLVMValueRef cg_intr(Cg *c, const char *name, LLVMTypeRef *tys, int ntys, LLVMValueRef *args,
                     int nargs);
LLVMValueRef cg_intr1(Cg *c, const char *name, LLVMValueRef x); /* overloaded on x's type */
LLVMValueRef cg_intr2(Cg *c, const char *name, LLVMValueRef x, LLVMValueRef y);
LLVMValueRef cg_fma(Cg *c, LLVMValueRef a, LLVMValueRef b, LLVMValueRef acc);
LLVMValueRef cg_alloca(Cg *c, LLVMTypeRef ty, int64_t count, unsigned align, const char *name);
LLVMValueRef cg_gep(Cg *c, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef idx);
LLVMValueRef cg_load(Cg *c, LLVMTypeRef ty, LLVMValueRef ptr, unsigned align);
void cg_store(Cg *c, LLVMValueRef v, LLVMValueRef ptr, unsigned align);
LLVMValueRef cg_smin(Cg *c, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_smax(Cg *c, LLVMValueRef a, LLVMValueRef b);
/* a > b ? a : b (one vmaxps: b when either is NaN; a NaN score poisons only its row, as the
 * kernels' contract allows) */
LLVMValueRef cg_fmax(Cg *c, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_hmax(Cg *c, LLVMValueRef v); /* horizontal cg_fmax of a <W x float> */
/* i1: x > bound, or x is NaN. A row's sum l (or its lse) tells a row that saw no key (l = 0,
 * lse = -inf) from one that did; a NaN there means a visible key made a NaN, which cg_fmax may
 * have skipped in the max but exp(s - m) carried into l: the row's o and lse are NaN. One
 * compare per row at the end, nothing in the loops over keys. */
LLVMValueRef cg_seen(Cg *c, LLVMValueRef x, double bound);
LLVMValueRef cg_hsum(Cg *c, LLVMValueRef v); /* horizontal sum (pairwise tree) */
LLVMValueRef cg_hor(Cg *c, LLVMValueRef v);  /* any lane of a <W x i1> */
LLVMValueRef cg_lane_mask(Cg *c, int n);     /* constant <W x i1>: lanes < n */
/* f32 values (scalar or vector) rounded to the nearest bf16 (ties to even), still as f32;
 * NaN stays NaN, and what rounds past the largest bf16 becomes inf. */
LLVMValueRef cg_round_bf16(Cg *c, LLVMValueRef x);
/* Words of two bf16 values from f32 vectors already rounded to bf16 (of any lane count): x's
 * in the low half, y's in the high half (a vdpbf16ps operand's pair). */
LLVMValueRef cg_bf16_pairs(Cg *c, LLVMValueRef x, LLVMValueRef y);
/* AVX512-BF16, 16 lanes: x and y rounded to bf16 (vcvtne2ps2bf16) as <32 x i16> words of
 * (x[i], y[i]), x low: cg_bf16_pairs of unrounded rows in two instructions. */
LLVMValueRef cg_bf16_interleave(Cg *c, LLVMValueRef x, LLVMValueRef y);

/* exp/exp2 of a float or <W x float>, inlined (no libm). */
LLVMValueRef cg_exp(Cg *c, LLVMValueRef x);
LLVMValueRef cg_exp2(Cg *c, LLVMValueRef x);
/* 2^t of softmax weights about to be rounded to bf16 (t <= 0 or NaN): relative error below
 * 3e-6, exactly 0 from -127 down; `scalef`: AVX-512's vscalefps (same values above 2^-126). */
LLVMValueRef cg_exp2_bf16(Cg *c, LLVMValueRef t, bool scalef);
LLVMValueRef cg_tanh(Cg *c, LLVMValueRef x);
LLVMValueRef cg_log_pos(Cg *c, LLVMValueRef x); /* scalar f32 x > 0, normal */
/* A float libm function of one float applied lane by lane (scalar call per lane). */
LLVMValueRef cg_libm1(Cg *c, const char *name, LLVMValueRef x);

/* A counted loop `for (i = start; i < end; i += step)` over i64, with a latch for `continue`. */
typedef struct CgLoop {
    LLVMValueRef slot;         /* alloca holding i */
    LLVMValueRef iv;           /* i, valid in the body */
    LLVMValueRef step;         /* increment */
    LLVMBasicBlockRef head, latch, exit; /* blocks */
    bool once;                 /* at most one trip: no back edge (latch == exit) */
} CgLoop;
LLVMValueRef cg_loop_begin(Cg *c, CgLoop *l, LLVMValueRef start, LLVMValueRef end,
                           LLVMValueRef step, const char *name);
void cg_loop_continue(Cg *c, CgLoop *l); /* branches to the latch; leaves the builder in a dead block */
/* A loop over [start, end) known to take at most one trip (constant bounds of one trip go
 * here by themselves). */
LLVMValueRef cg_loop_begin_once(Cg *c, CgLoop *l, LLVMValueRef start, LLVMValueRef end, const char *name);
void cg_loop_end(Cg *c, CgLoop *l);
LLVMBasicBlockRef cg_block(Cg *c, const char *name);

/* Element loads/stores of q, k, v, o in the spec's dtype; all tensor access goes through these. */
LLVMTypeRef cg_elem_type(Cg *c, attn_dtype t);
LLVMValueRef cg_load_elem(Cg *c, attn_dtype t, LLVMValueRef base, LLVMValueRef idx);
/* n (1..W) consecutive elements as <W x float>; lanes >= n are 0 and never read. */
LLVMValueRef cg_load_vec(Cg *c, attn_dtype t, LLVMValueRef base, LLVMValueRef idx, int n);
void cg_store_vec(Cg *c, attn_dtype t, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx,
                  int n);

// cg_expr.c — mask and score expressions

/* A value of a scalar expression: uniform (one scalar) or varying (one per key lane). */
typedef struct CgVal {
    LLVMValueRef v; /* i1 / i64 / float, or <W x ...> when vary */
    bool vary;      /* depends on the key lane */
} CgVal;

/* What a mask or score expression may read. */
typedef struct CgEnv {
    const IrFunc *f;          /* for input declarations */
    LLVMValueRef args;        /* const attn_rt_args * */
    LLVMValueRef q, h, b, q_len, kv_len; /* uniform i64 */
    LLVMValueRef qmin, qmax, kmin, kmax;  /* uniform i64: the tile, for the prune trees */
    LLVMValueRef k;           /* <W x i64> key positions */
    LLVMValueRef kbase;       /* i64 or NULL: k is kbase + <0, 1, .., W-1> */
    LLVMValueRef score;       /* <W x float>, or NULL outside a score mod */
    LLVMValueRef err_slot;    /* i1 alloca: an input index was out of bounds */
    LLVMValueRef dummy;       /* 8 zero bytes: what an out-of-bounds load reads instead */
    LLVMValueRef *collect;    /* if set, bad index lanes (<W x i1>) are ORed here, not raised */
    int tag;                  /* which hoisted set applies (the key vector of the block) */
    int ncache;               /* hoisted subtrees */
    struct {
        const IrExpr *e;      /* the subtree */
        int tag;              /* its key vector */
        CgVal v;              /* its value */
        LLVMValueRef bad;     /* <W x i1>: lanes whose evaluation hits a bad index */
    } cache[32];
} CgEnv;

/* Evaluates `e` for the key lanes where `active` (<W x i1>) holds; index errors in inactive
 * lanes are ignored (the && / || / ?: of the spec are short-circuit). */
CgVal cg_expr(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active);
LLVMValueRef cg_expr_vec(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active); /* varying */

/* Evaluates, under `active`, the subtrees of `e` that read an input and depend on k but not
 * on q, and remembers them under env->tag: the per-row evaluations that follow (same tag)
 * reuse them instead of gathering once per row. */
void cg_expr_hoist(Cg *c, CgEnv *env, const IrExpr *e, LLVMValueRef active);

// cg_kernel.c

/* Emits the tile function of `f` into c->mod. */
bool cg_emit_tile(Cg *c, const IrFunc *f, const char *symbol, StrBuf *err);

#endif
