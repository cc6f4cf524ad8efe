/* cg_emit.c — small LLVM emission helpers: types, constants, intrinsics, loops, tensor
 * element access by dtype, and the inlined vector exp. */
#include <string.h>

#include "codegen/cg_internal.h"

void cg_init_types(Cg *c, int W) {
    c->W = W;
    c->i1 = LLVMInt1TypeInContext(c->ctx);
    c->i8 = LLVMInt8TypeInContext(c->ctx);
    c->i16 = LLVMInt16TypeInContext(c->ctx);
    c->i32 = LLVMInt32TypeInContext(c->ctx);
    c->i64 = LLVMInt64TypeInContext(c->ctx);
    c->f32 = LLVMFloatTypeInContext(c->ctx);
    c->f16 = LLVMHalfTypeInContext(c->ctx);
    c->ptr = LLVMPointerTypeInContext(c->ctx, 0);
    c->voidt = LLVMVoidTypeInContext(c->ctx);
    c->vf = LLVMVectorType(c->f32, (unsigned)W);
    c->vi1 = LLVMVectorType(c->i1, (unsigned)W);
    c->vi32 = LLVMVectorType(c->i32, (unsigned)W);
    c->vi64 = LLVMVectorType(c->i64, (unsigned)W);
}

LLVMValueRef cg_i64(Cg *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }
LLVMValueRef cg_i32(Cg *c, int32_t v) { return LLVMConstInt(c->i32, (unsigned long long)(int64_t)v, 1); }
LLVMValueRef cg_f32(Cg *c, double v) { return LLVMConstReal(c->f32, v); }
LLVMValueRef cg_bool(Cg *c, bool v) { return LLVMConstInt(c->i1, v, 0); }

LLVMValueRef cg_splat(Cg *c, LLVMValueRef s) {
    LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(s), (unsigned)c->W);
    if (LLVMIsConstant(s)) {
        LLVMValueRef e[64];
        for (int i = 0; i < c->W; i++) e[i] = s;
        return LLVMConstVector(e, (unsigned)c->W);
    }
    LLVMValueRef v = LLVMBuildInsertElement(c->b, LLVMGetPoison(vt), s, cg_i32(c, 0), "");
    LLVMValueRef zero = LLVMConstNull(c->vi32);
    return LLVMBuildShuffleVector(c->b, v, LLVMGetPoison(vt), zero, "");
}

LLVMValueRef cg_const_like(Cg *c, LLVMTypeRef ty, double v) {
    LLVMValueRef s = LLVMConstReal(LLVMGetTypeKind(ty) == LLVMVectorTypeKind ? LLVMGetElementType(ty) : ty, v);
    return LLVMGetTypeKind(ty) == LLVMVectorTypeKind ? cg_splat(c, s) : s;
}

static LLVMValueRef int_like(Cg *c, LLVMTypeRef ty, int64_t v) {
    bool vec = LLVMGetTypeKind(ty) == LLVMVectorTypeKind;
    LLVMValueRef s = LLVMConstInt(vec ? LLVMGetElementType(ty) : ty, (unsigned long long)v, 1);
    return vec ? cg_splat(c, s) : s;
}

LLVMValueRef cg_iota(Cg *c) {
    LLVMValueRef e[64];
    for (int i = 0; i < c->W; i++) e[i] = cg_i64(c, i);
    return LLVMConstVector(e, (unsigned)c->W);
}

LLVMValueRef cg_lane_mask(Cg *c, int n) {
    LLVMValueRef e[64];
    for (int i = 0; i < c->W; i++) e[i] = cg_bool(c, i < n);
    return LLVMConstVector(e, (unsigned)c->W);
}

LLVMValueRef cg_intr(Cg *c, const char *name, LLVMTypeRef *tys, int ntys, LLVMValueRef *args,
                     int nargs) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (id == 0) unreachable();
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, tys, (size_t)ntys);
    LLVMTypeRef fty = LLVMIntrinsicGetType(c->ctx, id, tys, (size_t)ntys);
    return LLVMBuildCall2(c->b, fty, fn, args, (unsigned)nargs, "");
}

LLVMValueRef cg_intr1(Cg *c, const char *name, LLVMValueRef x) {
    LLVMTypeRef t = LLVMTypeOf(x);
    return cg_intr(c, name, &t, 1, &x, 1);
}

LLVMValueRef cg_intr2(Cg *c, const char *name, LLVMValueRef x, LLVMValueRef y) {
    LLVMTypeRef t = LLVMTypeOf(x);
    LLVMValueRef a[2] = {x, y};
    return cg_intr(c, name, &t, 1, a, 2);
}

LLVMValueRef cg_fma(Cg *c, LLVMValueRef a, LLVMValueRef b, LLVMValueRef acc) {
    LLVMTypeRef t = LLVMTypeOf(a);
    LLVMValueRef args[3] = {a, b, acc};
    return cg_intr(c, "llvm.fmuladd", &t, 1, args, 3); /* fused where the target has FMA */
}

/* Bytes of a value of type ty in memory (the kernels' scalar, vector and integer types). */
static int64_t type_bytes(LLVMTypeRef ty) {
    switch (LLVMGetTypeKind(ty)) {
    case LLVMHalfTypeKind:
    case LLVMBFloatTypeKind: return 2;
    case LLVMFloatTypeKind: return 4;
    case LLVMDoubleTypeKind:
    case LLVMPointerTypeKind: return 8;
    case LLVMIntegerTypeKind: return (LLVMGetIntTypeWidth(ty) + 7) / 8;
    case LLVMVectorTypeKind: {
        LLVMTypeRef e = LLVMGetElementType(ty);
        int64_t n = LLVMGetVectorSize(ty);
        if (LLVMGetTypeKind(e) == LLVMIntegerTypeKind) return (n * LLVMGetIntTypeWidth(e) + 7) / 8;
        return n * type_bytes(e);
    }
    case LLVMArrayTypeKind: return (int64_t)LLVMGetArrayLength2(ty) * type_bytes(LLVMGetElementType(ty));
    default: return 64;
    }
}

LLVMValueRef cg_alloca(Cg *c, LLVMTypeRef ty, int64_t count, unsigned align, const char *name) {
    /* arrays: single slots are the kernels' variables, which mem2reg keeps in registers */
    if (count > 1) c->stack += count * type_bytes(ty) + align;
    LLVMBuilderRef eb = LLVMCreateBuilderInContext(c->ctx);
    LLVMValueRef first = LLVMGetFirstInstruction(c->entry);
    if (first) LLVMPositionBuilderBefore(eb, first);
    else LLVMPositionBuilderAtEnd(eb, c->entry);
    LLVMValueRef a = count == 1 ? LLVMBuildAlloca(eb, ty, name)
                                : LLVMBuildArrayAlloca(eb, ty, cg_i64(c, count), name);
    LLVMSetAlignment(a, align);
    LLVMDisposeBuilder(eb);
    return a;
}

LLVMValueRef cg_gep(Cg *c, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildInBoundsGEP2(c->b, elem, base, &idx, 1, "");
}

LLVMValueRef cg_load(Cg *c, LLVMTypeRef ty, LLVMValueRef ptr, unsigned align) {
    LLVMValueRef l = LLVMBuildLoad2(c->b, ty, ptr, "");
    LLVMSetAlignment(l, align);
    return l;
}

void cg_store(Cg *c, LLVMValueRef v, LLVMValueRef ptr, unsigned align) {
    LLVMValueRef s = LLVMBuildStore(c->b, v, ptr);
    LLVMSetAlignment(s, align);
}

LLVMValueRef cg_smin(Cg *c, LLVMValueRef a, LLVMValueRef b) { return cg_intr2(c, "llvm.smin", a, b); }
LLVMValueRef cg_smax(Cg *c, LLVMValueRef a, LLVMValueRef b) { return cg_intr2(c, "llvm.smax", a, b); }

LLVMValueRef cg_fmax(Cg *c, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, a, b, ""), a, b, "");
}

LLVMValueRef cg_seen(Cg *c, LLVMValueRef x, double bound) {
    return LLVMBuildFCmp(c->b, LLVMRealUGT, x, cg_const_like(c, LLVMTypeOf(x), bound), "");
}

/* Pairwise tree over the lanes: log2(W) shuffles, deterministic order. */
static LLVMValueRef tree_reduce(Cg *c, LLVMValueRef v, int kind) {
    int n = c->W;
    while (n > 1) {
        int half = n / 2;
        LLVMValueRef lo[32], hi[32];
        for (int i = 0; i < half; i++) {
            lo[i] = cg_i32(c, i);
            hi[i] = cg_i32(c, i + half);
        }
        LLVMValueRef a = LLVMBuildShuffleVector(c->b, v, LLVMGetPoison(LLVMTypeOf(v)),
                                                LLVMConstVector(lo, (unsigned)half), "");
        LLVMValueRef bb = LLVMBuildShuffleVector(c->b, v, LLVMGetPoison(LLVMTypeOf(v)),
                                                 LLVMConstVector(hi, (unsigned)half), "");
        if (kind == 0) v = cg_fmax(c, a, bb);
        else if (kind == 1) v = LLVMBuildFAdd(c->b, a, bb, "");
        else v = LLVMBuildOr(c->b, a, bb, "");
        n = half;
    }
    return LLVMBuildExtractElement(c->b, v, cg_i32(c, 0), "");
}

LLVMValueRef cg_hmax(Cg *c, LLVMValueRef v) { return tree_reduce(c, v, 0); }
LLVMValueRef cg_hsum(Cg *c, LLVMValueRef v) { return tree_reduce(c, v, 1); }
LLVMValueRef cg_hor(Cg *c, LLVMValueRef v) {
    LLVMTypeRef it = LLVMIntTypeInContext(c->ctx, (unsigned)c->W);
    LLVMValueRef bits = LLVMBuildBitCast(c->b, v, it, "");
    return LLVMBuildICmp(c->b, LLVMIntNE, bits, LLVMConstNull(it), "");
}

/* exp(x) = 2^n * e^r with n = round(x / ln2), r = x - n*ln2 in [-ln2/2, ln2/2] (Cody-Waite,
 * ln2 split in two), e^r by the Cephes expf polynomial (degree 5 after 1 + r), 2^n added to
 * the exponent bits. Max relative error against double exp, 2e7 points over [-87.3, 88]:
 * 1.19e-7 (about 1 ulp); exp2 the same over [-126, 127]. x < -87.34 (including -inf) gives
 * exactly 0; x is clamped to 88 (exp2: 127); NaN propagates. */
static LLVMValueRef exp_core(Cg *c, LLVMValueRef x, LLVMValueRef n_scaled /* x*log2e */,
                             bool base2) {
    LLVMBuilderRef b = c->b;
    LLVMTypeRef ft = LLVMTypeOf(x);
    bool vec = LLVMGetTypeKind(ft) == LLVMVectorTypeKind;
    LLVMTypeRef it = vec ? c->vi32 : c->i32;
    const double magic = 12582912.0; /* 1.5 * 2^23: adding it rounds to an integer in the low bits */
    LLVMValueRef t = LLVMBuildFAdd(b, n_scaled, cg_const_like(c, ft, magic), "");
    LLVMValueRef n = LLVMBuildFSub(b, t, cg_const_like(c, ft, magic), "");
    LLVMValueRef r;
    if (base2) {
        r = LLVMBuildFMul(b, LLVMBuildFSub(b, x, n, ""), cg_const_like(c, ft, 0.693147180559945309), "");
    } else {
        r = cg_fma(c, n, cg_const_like(c, ft, -0.693359375), x);
        r = cg_fma(c, n, cg_const_like(c, ft, 2.12194440e-4), r);
    }
    static const double P[6] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3,
                                4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1};
    LLVMValueRef p = cg_const_like(c, ft, P[0]);
    for (int i = 1; i < 6; i++) p = cg_fma(c, p, r, cg_const_like(c, ft, P[i]));
    LLVMValueRef r2 = LLVMBuildFMul(b, r, r, "");
    p = cg_fma(c, p, r2, LLVMBuildFAdd(b, r, cg_const_like(c, ft, 1.0), ""));
    /* 2^n: the low bits of t hold n; shifted into the exponent field plus the bias */
    LLVMValueRef ti = LLVMBuildBitCast(b, t, it, "");
    LLVMValueRef e = LLVMBuildAdd(b, LLVMBuildShl(b, ti, int_like(c, it, 23), ""),
                                  int_like(c, it, 0x3f800000), "");
    LLVMValueRef res = LLVMBuildFMul(b, p, LLVMBuildBitCast(b, e, ft, ""), "");
    return res;
}

static LLVMValueRef fsel_lt(Cg *c, LLVMValueRef x, double bound, LLVMValueRef then) {
    LLVMTypeRef ft = LLVMTypeOf(x);
    LLVMValueRef cmp = LLVMBuildFCmp(c->b, LLVMRealOLT, x, cg_const_like(c, ft, bound), "");
    return LLVMBuildSelect(c->b, cmp, then, x, "");
}

LLVMValueRef cg_exp(Cg *c, LLVMValueRef x) {
    LLVMTypeRef ft = LLVMTypeOf(x);
    LLVMValueRef lo = cg_const_like(c, ft, -87.33654475);
    LLVMValueRef xc = fsel_lt(c, x, -87.33654475, lo);
    LLVMValueRef big = LLVMBuildFCmp(c->b, LLVMRealOGT, xc, cg_const_like(c, ft, 88.0), "");
    xc = LLVMBuildSelect(c->b, big, cg_const_like(c, ft, 88.0), xc, "");
    LLVMValueRef ns = LLVMBuildFMul(c->b, xc, cg_const_like(c, ft, 1.44269504088896341), "");
    LLVMValueRef r = exp_core(c, xc, ns, false);
    LLVMValueRef tiny = LLVMBuildFCmp(c->b, LLVMRealOLT, x, lo, "");
    return LLVMBuildSelect(c->b, tiny, cg_const_like(c, ft, 0.0), r, "");
}

LLVMValueRef cg_exp2(Cg *c, LLVMValueRef x) {
    LLVMTypeRef ft = LLVMTypeOf(x);
    LLVMValueRef lo = cg_const_like(c, ft, -126.0);
    LLVMValueRef xc = fsel_lt(c, x, -126.0, lo);
    LLVMValueRef big = LLVMBuildFCmp(c->b, LLVMRealOGT, xc, cg_const_like(c, ft, 127.0), "");
    xc = LLVMBuildSelect(c->b, big, cg_const_like(c, ft, 127.0), xc, "");
    LLVMValueRef r = exp_core(c, xc, xc, true);
    LLVMValueRef tiny = LLVMBuildFCmp(c->b, LLVMRealOLT, x, lo, "");
    return LLVMBuildSelect(c->b, tiny, cg_const_like(c, ft, 0.0), r, "");
}

/* 2^t = exp(x) for t = x log2e, of softmax weights rounded to bf16 next (compute bf16/int8),
 * t <= 0 or NaN: t = n + f with f in [-1/2, 1/2], 2^f by a degree-4 polynomial (relative
 * error 2.7e-6, fitted to 2^f's relative error), against the 2^-9 of the bf16 rounding after
 * it. t is clamped to -127, whose 2^n is the bit pattern 0, so t <= -127 (and -inf) gives
 * exactly 0; NaN propagates. With `scalef` (AVX-512) n comes from vrndscaleps and 2^n from
 * vscalefps, three instructions fewer; t is then clamped to -151, also exactly 0 (p 2^-151
 * rounds to 0), and t in (-151, -126) gives subnormals the bf16 conversion flushes to 0. */
LLVMValueRef cg_exp2_bf16(Cg *c, LLVMValueRef t, bool scalef) {
    LLVMBuilderRef b = c->b;
    LLVMTypeRef ft = LLVMTypeOf(t);
    bool vec = LLVMGetTypeKind(ft) == LLVMVectorTypeKind;
    LLVMTypeRef it = vec ? c->vi32 : c->i32;
    scalef = scalef && vec && c->W == 16;
    t = fsel_lt(c, t, scalef ? -151.0 : -127.0, cg_const_like(c, ft, scalef ? -151.0 : -127.0));
    static const double P[5] = {0.009570101276040077, 0.05591786280274391, 0.240247443318367,
                                0.6931217908859253, 0.9999992847442627};
    LLVMValueRef n, tm = NULL;
    if (scalef) {
        n = cg_intr1(c, "llvm.rint", t);
    } else {
        const double magic = 12582912.0; /* 1.5 * 2^23: adding it rounds to an integer in the low bits */
        tm = LLVMBuildFAdd(b, t, cg_const_like(c, ft, magic), "");
        n = LLVMBuildFSub(b, tm, cg_const_like(c, ft, magic), "");
    }
    LLVMValueRef f = LLVMBuildFSub(b, t, n, "");
    LLVMValueRef p = cg_const_like(c, ft, P[0]);
    for (int i = 1; i < 5; i++) p = cg_fma(c, p, f, cg_const_like(c, ft, P[i]));
    if (scalef) {
        LLVMValueRef args[5] = {p, n, LLVMGetUndef(ft), LLVMConstInt(c->i16, 0xffff, 0), cg_i32(c, 4)};
        return cg_intr(c, "llvm.x86.avx512.mask.scalef.ps.512", NULL, 0, args, 5);
    }
    LLVMValueRef e = LLVMBuildAdd(b, LLVMBuildShl(b, LLVMBuildBitCast(b, tm, it, ""), int_like(c, it, 23), ""),
                                  int_like(c, it, 0x3f800000), "");
    return LLVMBuildFMul(b, p, LLVMBuildBitCast(b, e, ft, ""), "");
}

/* log of a positive normal float (the kernels' row sums l >= 1): x = m 2^e with m in
 * [sqrt(1/2), sqrt(2)), log m = 2 atanh(t), t = (m - 1)/(m + 1), |t| <= 0.172, by its odd series
 * to t^9 (truncation < 4e-10, so float rounding dominates: ~1 ulp). Inline, unlike libm's logf. */
LLVMValueRef cg_log_pos(Cg *c, LLVMValueRef x) {
    LLVMBuilderRef b = c->b;
    LLVMTypeRef i32 = c->i32, ft = LLVMTypeOf(x);
    LLVMValueRef bits = LLVMBuildBitCast(b, x, i32, "");
    LLVMValueRef e = LLVMBuildSub(b, LLVMBuildLShr(b, bits, cg_i32(c, 23), ""), cg_i32(c, 127), "");
    LLVMValueRef mb = LLVMBuildOr(b, LLVMBuildAnd(b, bits, cg_i32(c, 0x7fffff), ""), cg_i32(c, 0x3f800000), "");
    LLVMValueRef m = LLVMBuildBitCast(b, mb, ft, "");
    LLVMValueRef hi = LLVMBuildFCmp(b, LLVMRealOGT, m, cg_const_like(c, ft, 1.41421356237309505), "");
    m = LLVMBuildSelect(b, hi, LLVMBuildFMul(b, m, cg_const_like(c, ft, 0.5), ""), m, "");
    e = LLVMBuildAdd(b, e, LLVMBuildZExt(b, hi, i32, ""), "");
    LLVMValueRef t = LLVMBuildFDiv(b, LLVMBuildFSub(b, m, cg_const_like(c, ft, 1.0), ""),
                                   LLVMBuildFAdd(b, m, cg_const_like(c, ft, 1.0), ""), "");
    LLVMValueRef t2 = LLVMBuildFMul(b, t, t, "");
    LLVMValueRef p = cg_const_like(c, ft, 2.0 / 9);
    static const double K[4] = {2.0 / 7, 2.0 / 5, 2.0 / 3, 2.0};
    for (int i = 0; i < 4; i++) p = cg_fma(c, p, t2, cg_const_like(c, ft, K[i]));
    LLVMValueRef lm = LLVMBuildFMul(b, p, t, "");
    LLVMValueRef ef = LLVMBuildSIToFP(b, e, ft, "");
    return cg_fma(c, ef, cg_const_like(c, ft, 0.693147180559945309), lm);
}

/* tanh: Cephes tanhf — an odd polynomial for |x| < 0.625, else 1 - 2/(e^{2|x|} + 1). */
LLVMValueRef cg_tanh(Cg *c, LLVMValueRef x) {
    LLVMBuilderRef b = c->b;
    LLVMTypeRef ft = LLVMTypeOf(x);
    LLVMValueRef ax = cg_intr1(c, "llvm.fabs", x);
    LLVMValueRef z = LLVMBuildFMul(b, x, x, "");
    static const double P[5] = {-5.70498872745E-3, 2.06390887954E-2, -5.37397155531E-2,
                                1.33314422036E-1, -3.33332819422E-1};
    LLVMValueRef p = cg_const_like(c, ft, P[0]);
    for (int i = 1; i < 5; i++) p = cg_fma(c, p, z, cg_const_like(c, ft, P[i]));
    LLVMValueRef small = cg_fma(c, LLVMBuildFMul(b, p, z, ""), x, x);
    LLVMValueRef e = cg_exp(c, LLVMBuildFAdd(b, ax, ax, ""));
    LLVMValueRef big = LLVMBuildFSub(
        b, cg_const_like(c, ft, 1.0),
        LLVMBuildFDiv(b, cg_const_like(c, ft, 2.0), LLVMBuildFAdd(b, e, cg_const_like(c, ft, 1.0), ""), ""), "");
    big = cg_intr2(c, "llvm.copysign", big, x);
    LLVMValueRef is_small = LLVMBuildFCmp(b, LLVMRealOLT, ax, cg_const_like(c, ft, 0.625), "");
    return LLVMBuildSelect(b, is_small, small, big, "");
}

LLVMValueRef cg_libm1(Cg *c, const char *name, LLVMValueRef x) {
    LLVMTypeRef fty = LLVMFunctionType(c->f32, &c->f32, 1, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(c->mod, name);
    if (!fn) fn = LLVMAddFunction(c->mod, name, fty);
    if (LLVMGetTypeKind(LLVMTypeOf(x)) != LLVMVectorTypeKind)
        return LLVMBuildCall2(c->b, fty, fn, &x, 1, "");
    LLVMValueRef r = LLVMGetPoison(LLVMTypeOf(x));
    for (int i = 0; i < c->W; i++) {
        LLVMValueRef e = LLVMBuildExtractElement(c->b, x, cg_i32(c, i), "");
        LLVMValueRef y = LLVMBuildCall2(c->b, fty, fn, &e, 1, "");
        r = LLVMBuildInsertElement(c->b, r, y, cg_i32(c, i), "");
    }
    return r;
}

// loops

LLVMBasicBlockRef cg_block(Cg *c, const char *name) {
    return LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
}

/* A loop known to run at most once: a test and the body, no back edge (LLVM's short
 * pipelines keep a one-trip loop a loop, and its values in memory). */
LLVMValueRef cg_loop_begin_once(Cg *c, CgLoop *l, LLVMValueRef start, LLVMValueRef end, const char *name) {
    l->once = true;
    l->slot = NULL;
    l->step = NULL;
    l->head = NULL;
    LLVMBasicBlockRef body = cg_block(c, name);
    l->latch = l->exit = cg_block(c, name);
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, start, end, ""), body, l->exit);
    LLVMPositionBuilderAtEnd(c->b, body);
    l->iv = start;
    return start;
}

LLVMValueRef cg_loop_begin(Cg *c, CgLoop *l, LLVMValueRef start, LLVMValueRef end,
                           LLVMValueRef step, const char *name) {
    if (LLVMIsAConstantInt(start) && LLVMIsAConstantInt(end) && LLVMIsAConstantInt(step)) {
        int64_t s0 = LLVMConstIntGetSExtValue(start), e0 = LLVMConstIntGetSExtValue(end);
        int64_t st = LLVMConstIntGetSExtValue(step);
        if (st > 0 && s0 < e0 && e0 - s0 <= st) return cg_loop_begin_once(c, l, start, end, name);
    }
    l->once = false;
    l->slot = cg_alloca(c, c->i64, 1, 8, name);
    l->step = step;
    cg_store(c, start, l->slot, 8);
    l->head = cg_block(c, name);
    LLVMBasicBlockRef body = cg_block(c, name);
    l->latch = cg_block(c, name);
    l->exit = cg_block(c, name);
    LLVMBuildBr(c->b, l->head);
    LLVMPositionBuilderAtEnd(c->b, l->head);
    LLVMValueRef i = cg_load(c, c->i64, l->slot, 8);
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, i, end, ""), body, l->exit);
    LLVMPositionBuilderAtEnd(c->b, body);
    l->iv = i;
    return i;
}

void cg_loop_continue(Cg *c, CgLoop *l) {
    LLVMBuildBr(c->b, l->latch);
    LLVMPositionBuilderAtEnd(c->b, cg_block(c, "dead"));
}

void cg_loop_end(Cg *c, CgLoop *l) {
    LLVMBuildBr(c->b, l->latch);
    LLVMPositionBuilderAtEnd(c->b, l->latch);
    if (l->once) return;
    cg_store(c, LLVMBuildNSWAdd(c->b, l->iv, l->step, ""), l->slot, 8);
    LLVMBuildBr(c->b, l->head);
    LLVMPositionBuilderAtEnd(c->b, l->exit);
}

// tensor elements

LLVMTypeRef cg_elem_type(Cg *c, attn_dtype t) {
    switch (t) {
    case ATTN_F16: return c->f16;
    case ATTN_BF16: return c->i16;
    case ATTN_I8: return c->i8;
    default: return c->f32;
    }
}

static LLVMValueRef to_f32(Cg *c, attn_dtype t, LLVMValueRef v, LLVMTypeRef ft) {
    LLVMBuilderRef b = c->b;
    bool vec = LLVMGetTypeKind(ft) == LLVMVectorTypeKind;
    switch (t) {
    case ATTN_F16: return LLVMBuildFPExt(b, v, ft, "");
    case ATTN_I8: return LLVMBuildSIToFP(b, v, ft, "");
    case ATTN_BF16: {
        LLVMTypeRef it = vec ? c->vi32 : c->i32;
        LLVMValueRef w = LLVMBuildZExt(b, v, it, "");
        return LLVMBuildBitCast(b, LLVMBuildShl(b, w, int_like(c, it, 16), ""), ft, "");
    }
    default: return v;
    }
}

static LLVMValueRef from_f32(Cg *c, attn_dtype t, LLVMValueRef v) {
    LLVMBuilderRef b = c->b;
    LLVMTypeRef ft = LLVMTypeOf(v);
    bool vec = LLVMGetTypeKind(ft) == LLVMVectorTypeKind;
    switch (t) {
    case ATTN_F16: return LLVMBuildFPTrunc(b, v, vec ? LLVMVectorType(c->f16, (unsigned)c->W) : c->f16, "");
    case ATTN_BF16: {
        /* round to nearest even; NaN stays a quiet NaN */
        LLVMTypeRef it = vec ? c->vi32 : c->i32;
        LLVMTypeRef ht = vec ? LLVMVectorType(c->i16, (unsigned)c->W) : c->i16;
        LLVMValueRef bits = LLVMBuildBitCast(b, v, it, "");
        LLVMValueRef odd = LLVMBuildAnd(b, LLVMBuildLShr(b, bits, int_like(c, it, 16), ""), int_like(c, it, 1), "");
        LLVMValueRef r = LLVMBuildAdd(b, bits, LLVMBuildAdd(b, odd, int_like(c, it, 0x7fff), ""), "");
        r = LLVMBuildLShr(b, r, int_like(c, it, 16), "");
        LLVMValueRef nan = LLVMBuildFCmp(b, LLVMRealUNO, v, v, "");
        r = LLVMBuildSelect(b, nan, int_like(c, it, 0x7fc0), r, "");
        return LLVMBuildTrunc(b, r, ht, "");
    }
    default: return v;
    }
}

/* f32 values (scalar or vector) rounded to the nearest bf16 (ties to even), still as f32;
 * NaN stays NaN, and what rounds past the largest bf16 becomes inf. */
LLVMValueRef cg_round_bf16(Cg *c, LLVMValueRef x) {
    LLVMBuilderRef b = c->b;
    LLVMTypeRef ft = LLVMTypeOf(x);
    bool vec = LLVMGetTypeKind(ft) == LLVMVectorTypeKind;
    LLVMTypeRef it = vec ? c->vi32 : c->i32;
    LLVMValueRef k1 = cg_i32(c, 1), k16 = cg_i32(c, 16), kr = cg_i32(c, 0x7fff), km = cg_i32(c, (int32_t)0xffff0000u);
    if (vec) k1 = cg_splat(c, k1), k16 = cg_splat(c, k16), kr = cg_splat(c, kr), km = cg_splat(c, km);
    LLVMValueRef bits = LLVMBuildBitCast(b, x, it, "");
    LLVMValueRef lsb = LLVMBuildAnd(b, LLVMBuildLShr(b, bits, k16, ""), k1, "");
    LLVMValueRef r = LLVMBuildAnd(b, LLVMBuildAdd(b, bits, LLVMBuildAdd(b, kr, lsb, ""), ""), km, "");
    LLVMValueRef nan = LLVMBuildFCmp(b, LLVMRealUNO, x, x, "");
    return LLVMBuildSelect(b, nan, x, LLVMBuildBitCast(b, r, ft, ""), "bf16r");
}

/* Words of two bf16 values from f32 vectors already rounded to bf16 (of any lane count): x's
 * in the low half (the even d), y's in the high half. */
LLVMValueRef cg_bf16_pairs(Cg *c, LLVMValueRef x, LLVMValueRef y) {
    LLVMBuilderRef b = c->b;
    unsigned n = LLVMGetVectorSize(LLVMTypeOf(x));
    LLVMTypeRef it = LLVMVectorType(c->i32, n);
    LLVMValueRef k16[64], km[64];
    for (unsigned i = 0; i < n; i++) k16[i] = cg_i32(c, 16), km[i] = cg_i32(c, (int32_t)0xffff0000u);
    LLVMValueRef lo = LLVMBuildLShr(b, LLVMBuildBitCast(b, x, it, ""), LLVMConstVector(k16, n), "");
    LLVMValueRef hi = LLVMBuildAnd(b, LLVMBuildBitCast(b, y, it, ""), LLVMConstVector(km, n), "");
    return LLVMBuildOr(b, lo, hi, "bfw");
}

LLVMValueRef cg_bf16_interleave(Cg *c, LLVMValueRef x, LLVMValueRef y) {
    LLVMValueRef il[32];
    for (int l = 0; l < 16; l++) il[2 * l] = cg_i32(c, l), il[2 * l + 1] = cg_i32(c, 16 + l);
    LLVMValueRef w = LLVMBuildBitCast(c->b, cg_intr(c, "llvm.x86.avx512bf16.cvtne2ps2bf16.512", NULL, 0, (LLVMValueRef[]){y, x}, 2),
                                      LLVMVectorType(c->i16, 32), "");
    return LLVMBuildShuffleVector(c->b, w, w, LLVMConstVector(il, 32), "");
}

LLVMValueRef cg_load_elem(Cg *c, attn_dtype t, LLVMValueRef base, LLVMValueRef idx) {
    LLVMTypeRef et = cg_elem_type(c, t);
    LLVMValueRef v = cg_load(c, et, cg_gep(c, et, base, idx), t == ATTN_F32 ? 4 : t == ATTN_I8 ? 1 : 2);
    return to_f32(c, t, v, c->f32);
}

LLVMValueRef cg_load_vec(Cg *c, attn_dtype t, LLVMValueRef base, LLVMValueRef idx, int n) {
    LLVMTypeRef et = cg_elem_type(c, t);
    LLVMTypeRef vt = LLVMVectorType(et, (unsigned)c->W);
    LLVMValueRef p = cg_gep(c, et, base, idx);
    unsigned align = t == ATTN_F32 ? 4 : t == ATTN_I8 ? 1 : 2;
    LLVMValueRef v;
    if (n >= c->W) {
        v = cg_load(c, vt, p, align);
    } else {
        LLVMTypeRef tys[2] = {vt, c->ptr};
        LLVMValueRef args[4] = {p, cg_i32(c, (int32_t)align), cg_lane_mask(c, n), LLVMConstNull(vt)};
        v = cg_intr(c, "llvm.masked.load", tys, 2, args, 4);
    }
    return to_f32(c, t, v, c->vf);
}

void cg_store_vec(Cg *c, attn_dtype t, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx,
                  int n) {
    LLVMTypeRef et = cg_elem_type(c, t);
    LLVMValueRef p = cg_gep(c, et, base, idx);
    unsigned align = t == ATTN_F32 ? 4 : t == ATTN_I8 ? 1 : 2;
    v = from_f32(c, t, v);
    if (n >= c->W) {
        cg_store(c, v, p, align);
    } else {
        LLVMTypeRef tys[2] = {LLVMTypeOf(v), c->ptr};
        LLVMValueRef args[4] = {v, p, cg_i32(c, (int32_t)align), cg_lane_mask(c, n)};
        cg_intr(c, "llvm.masked.store", tys, 2, args, 4);
    }
}
