/* codegen.c — targets, the module of tile functions, the pass pipeline, JIT and AOT.
 * One path builds the module; the JIT links it for the host, AOT writes it for any triple. */
#include "codegen/codegen.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "codegen/cg_internal.h"

struct CgJit {
    LLVMOrcLLJITRef jit; /* owns the compiled code */
};

static pthread_once_t cg_once = PTHREAD_ONCE_INIT;

/* Every target LLVM was built with, once per process (JIT and AOT share it). */
static void cg_init_llvm(void) {
    LLVMInitializeAllTargetInfos();
    LLVMInitializeAllTargets();
    LLVMInitializeAllTargetMCs();
    LLVMInitializeAllAsmPrinters();
    LLVMInitializeAllAsmParsers();
}

void cg_report_error(StrBuf *err, const char *what, LLVMErrorRef e) {
    char *msg = LLVMGetErrorMessage(e);
    sb_printf(err, "codegen: %s: %s", what, msg ? msg : "unknown error");
    LLVMDisposeErrorMessage(msg);
}

char *cg_tile_symbol(Arena *a, const IrFunc *f) { return arena_printf(a, "attnc_%s_tile", f->name); }

/* The resolved triple/cpu/features of a target, all LLVM messages (free with target_free). */
typedef struct Resolved {
    char *triple, *cpu, *features;
    bool host;
} Resolved;

static void target_free(Resolved *r) {
    if (r->triple) LLVMDisposeMessage(r->triple);
    if (r->cpu) LLVMDisposeMessage(r->cpu);
    if (r->features) LLVMDisposeMessage(r->features);
}

static char *llvm_strdup(const char *s) {
    /* LLVMCreateMessage copies into LLVM's allocator so every field is disposed alike */
    return LLVMCreateMessage(s);
}

static void target_resolve(const CgTarget *t, Resolved *r) {
    r->host = !t || !t->triple;
    r->triple = r->host ? LLVMGetDefaultTargetTriple() : LLVMNormalizeTargetTriple(t->triple);
    if (t && t->cpu) r->cpu = llvm_strdup(t->cpu);
    else r->cpu = r->host ? LLVMGetHostCPUName() : llvm_strdup("generic");
    if (t && t->features) r->features = llvm_strdup(t->features);
    else r->features = r->host && !(t && t->cpu) ? LLVMGetHostCPUFeatures() : llvm_strdup("");
}

/* Does the comma-separated feature list enable (+name) or disable (-name) `name`? 1, -1, 0. */
static int feature(const char *list, const char *name) {
    int state = 0;
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n + 1 && strncmp(p + 1, name, n) == 0) state = p[0] == '+' ? 1 : -1;
        p = e ? e + 1 : NULL;
    }
    return state;
}

/* x86 CPUs by widest vector, when no feature string says so. */
static int cpu_width(const char *cpu) {
    static const char *const w16[] = {"skylake-avx512", "cascadelake", "cooperlake", "cannonlake",
        "icelake", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids",
        "knl", "knm", "znver4", "znver5", "x86-64-v4", "diamondrapids", NULL};
    static const char *const w8[] = {"haswell", "broadwell", "skylake", "alderlake", "raptorlake",
        "meteorlake", "arrowlake", "lunarlake", "gracemont", "sierraforest", "grandridge",
        "clearwaterforest", "pantherlake", "znver1", "znver2", "znver3", "x86-64-v3", "sandybridge",
        "ivybridge", "bdver1", "bdver2", "bdver3", "bdver4", "btver2", "corei7-avx", "core-avx-i",
        "core-avx2", NULL};
    for (int i = 0; w16[i]; i++)
        if (strncmp(cpu, w16[i], strlen(w16[i])) == 0) return 16;
    for (int i = 0; w8[i]; i++)
        if (strncmp(cpu, w8[i], strlen(w8[i])) == 0) return 8;
    return 4;
}

static int resolved_width(const Resolved *r) {
    bool x86 = strncmp(r->triple, "x86_64", 6) == 0 || strncmp(r->triple, "i386", 4) == 0 ||
               strncmp(r->triple, "i686", 4) == 0;
    if (!x86) return 4;
    int a512 = feature(r->features, "avx512f");
    int avx = feature(r->features, "avx"), avx2 = feature(r->features, "avx2");
    if (a512 == 1) return 16;
    int w = cpu_width(r->cpu);
    if (a512 == -1 && w == 16) w = 8;
    if (avx == 1 || avx2 == 1) return w > 8 ? w : 8;
    if (avx == -1 && w > 4) w = 4;
    return w;
}

int cg_target_vec_width(const CgTarget *t, StrBuf *err) {
    pthread_once(&cg_once, cg_init_llvm);
    Resolved r;
    target_resolve(t, &r);
    LLVMTargetRef target;
    char *msg = NULL;
    int w = 0;
    if (LLVMGetTargetFromTriple(r.triple, &target, &msg)) {
        sb_printf(err, "codegen: unknown target '%s': %s", r.triple, msg ? msg : "");
    } else {
        w = resolved_width(&r);
    }
    if (msg) LLVMDisposeMessage(msg);
    target_free(&r);
    return w;
}

static LLVMTargetMachineRef make_tm(const CgTarget *t, Resolved *r, StrBuf *err) {
    LLVMTargetRef target;
    char *msg = NULL;
    if (LLVMGetTargetFromTriple(r->triple, &target, &msg)) {
        sb_printf(err, "codegen: unknown target '%s': %s", r->triple, msg ? msg : "");
        if (msg) LLVMDisposeMessage(msg);
        return NULL;
    }
    if (msg) LLVMDisposeMessage(msg);
    int ol = t ? t->opt_level : 3;
    LLVMCodeGenOptLevel lv = ol <= 0 ? LLVMCodeGenLevelNone : ol == 1 ? LLVMCodeGenLevelLess
                           : ol == 2 ? LLVMCodeGenLevelDefault : LLVMCodeGenLevelAggressive;
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, r->triple, r->cpu, r->features, lv,
                                                      LLVMRelocPIC, LLVMCodeModelDefault);
    if (!tm) sb_printf(err, "codegen: cannot create a target machine for '%s' (cpu '%s')", r->triple, r->cpu);
    return tm;
}

/* The IR pass pipeline of -O<level> (LLVM's unrolling and vectorizers stay off in all). The
 * generator emits vector code with loop-carried values in stack slots, so -O3 needs what
 * promotes them and hoists out of the loops: SROA, early CSE, instcombine, LICM around loop
 * rotation, index-variable and dead-code cleanups (a fifth of default<O3>'s time, prefill
 * kernels as fast: docs/codegen.md, "Compile time"). A module with a group function (GQA/MQA
 * decode) keeps default<O3>: its few-rows path measured ~10% faster with it. -O1/-O2 take
 * LLVM's O1; -O0 runs nothing and selects with FastISel. instcombine never verifies its
 * fixpoint: that check aborts the process. */
static const char *cg_pipeline(int level, bool group) {
    if (level <= 0) return "default<O0>";
    if (level <= 2) return "default<O1>";
    if (group) return "default<O3>";
    return "function(simplifycfg,sroa,early-cse,instcombine<no-verify-fixpoint>,simplifycfg,reassociate,"
           "loop-mssa(loop-instsimplify,loop-simplifycfg,licm<no-allowspeculation>,loop-rotate,"
           "licm<allowspeculation>,simple-loop-unswitch),simplifycfg,instcombine<no-verify-fixpoint>,"
           "loop(loop-idiom,indvars,loop-deletion),sroa,memcpyopt,sccp,bdce,instcombine<no-verify-fixpoint>,"
           "adce,simplifycfg,instcombine<no-verify-fixpoint>)";
}

/* Builds, verifies and optimizes the module of `funcs` in `ctx` for `tm`. NULL on error. */
static LLVMModuleRef build_module(LLVMContextRef ctx, IrFunc **funcs, int n, const CgTarget *t,
                                  Resolved *r, LLVMTargetMachineRef tm, StrBuf *err) {
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext("attnc", ctx);
    LLVMSetTarget(mod, r->triple);
    LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(mod, td);
    LLVMDisposeTargetData(td);
    Cg c = {0};
    c.ctx = ctx;
    c.mod = mod;
    c.b = LLVMCreateBuilderInContext(ctx);
    bool ok = true;
    int width = resolved_width(r);
    for (int i = 0; i < n && ok; i++) {
        IrFunc tmp = *funcs[i];
        if (tmp.sched.vec_width <= 0) {
            /* no schedule: a plain default for this target */
            /* no schedule: what measured best on AVX-512 (R = 4, K+V blocks of ~32 KiB) */
            int d = tmp.qk_dim > tmp.v_dim ? tmp.qk_dim : tmp.v_dim;
            int bk = d > 0 ? 4096 / d / width * width : 4 * width;
            tmp.sched.vec_width = width;
            tmp.sched.block_k = bk < width ? width : bk > 4 * width ? 4 * width : bk;
            tmp.sched.rows = 4;
            tmp.sched.block_q = 128;
        }
        char *sym = cg_tile_symbol(funcs[i]->arena, funcs[i]);
        if (!sym) {
            sb_puts(err, "codegen: out of memory");
            ok = false;
            break;
        }
        ok = cg_emit_tile(&c, &tmp, sym, err);
    }
    LLVMDisposeBuilder(c.b);
    if (ok) {
        char *msg = NULL;
        if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
            sb_printf(err, "codegen: internal error: invalid module: %s", msg ? msg : "");
            ok = false;
        }
        if (msg) LLVMDisposeMessage(msg);
    }
    if (ok) {
        LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
        /* the generator already unrolled and vectorized what pays */
        LLVMPassBuilderOptionsSetLoopUnrolling(po, 0);
        LLVMPassBuilderOptionsSetLoopVectorization(po, 0);
        LLVMPassBuilderOptionsSetSLPVectorization(po, 0);
        bool group = false;
        for (int i = 0; i < n; i++) group |= cg_group_size(funcs[i]) > 0;
        LLVMErrorRef e = LLVMRunPasses(mod, cg_pipeline(t ? t->opt_level : 3, group), tm, po);
        LLVMDisposePassBuilderOptions(po);
        if (e) {
            cg_report_error(err, "optimization failed", e);
            ok = false;
        }
    }
    if (!ok) {
        LLVMDisposeModule(mod);
        return NULL;
    }
    return mod;
}

bool cg_emit_file(IrFunc **funcs, int n, const CgTarget *t, CgEmit kind, const char *path,
                  StrBuf *err) {
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMTargetMachineRef tm = NULL;
    LLVMModuleRef mod = cg_build_module(ctx, funcs, n, t, &tm, err);
    bool ok = mod != NULL;
    if (ok) {
        char *msg = NULL;
        if (kind == CG_EMIT_LLVM) {
            ok = !LLVMPrintModuleToFile(mod, path, &msg);
        } else {
            /* EmitToFile takes a non-const path */
            char *p = strdup(path);
            ok = p && !LLVMTargetMachineEmitToFile(tm, mod, p, kind == CG_EMIT_ASM ? LLVMAssemblyFile : LLVMObjectFile, &msg);
            free(p);
        }
        if (!ok) sb_printf(err, "codegen: cannot write '%s': %s", path, msg ? msg : "out of memory");
        if (msg) LLVMDisposeMessage(msg);
        LLVMDisposeModule(mod);
        LLVMDisposeTargetMachine(tm);
    }
    LLVMContextDispose(ctx);
    return ok;
}

char *cg_print_llvm(IrFunc **funcs, int n, const CgTarget *t, StrBuf *err) {
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMTargetMachineRef tm = NULL;
    LLVMModuleRef mod = cg_build_module(ctx, funcs, n, t, &tm, err);
    char *out = NULL;
    if (mod) {
        char *s = LLVMPrintModuleToString(mod);
        out = strdup(s ? s : "");
        if (!out) sb_puts(err, "codegen: out of memory");
        if (s) LLVMDisposeMessage(s);
        LLVMDisposeModule(mod);
        LLVMDisposeTargetMachine(tm);
    }
    LLVMContextDispose(ctx);
    return out;
}

bool cg_define_libm(LLVMOrcLLJITRef jit, LLVMOrcJITDylibRef jd, StrBuf *err) {
    static const struct { const char *name; float (*fn)(float); } fns[] = {
        {"logf", logf}, {"log2f", log2f}, {"erff", erff}, {"sinf", sinf}, {"cosf", cosf},
        {"expf", expf}, {"exp2f", exp2f}, {"tanhf", tanhf}};
    enum { N = sizeof fns / sizeof fns[0] };
    LLVMOrcCSymbolMapPair pairs[N];
    for (int i = 0; i < N; i++) {
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(jit, fns[i].name);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)fns[i].fn;
        pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[i].Sym.Flags.TargetFlags = 0;
    }
    LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, N);
    LLVMErrorRef e = LLVMOrcJITDylibDefine(jd, mu);
    if (e) {
        LLVMOrcDisposeMaterializationUnit(mu);
        cg_report_error(err, "cannot define libm symbols", e);
        return false;
    }
    return true;
}

bool cg_jit(IrFunc **funcs, int n, const CgTarget *t, CgJit **out, attn_rt_tile_fn *tiles,
            StrBuf *err) {
    pthread_once(&cg_once, cg_init_llvm);
    *out = NULL;
    CgTarget host = {NULL, t ? t->cpu : NULL, t ? t->features : NULL, t ? t->opt_level : 3};
    Resolved r;
    target_resolve(&host, &r);
    LLVMTargetMachineRef tm = make_tm(&host, &r, err);
    if (!tm) {
        target_free(&r);
        return false;
    }
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMModuleRef mod = build_module(LLVMOrcThreadSafeContextGetContext(tsc), funcs, n, &host, &r, tm, err);
    target_free(&r);
    if (!mod) {
        LLVMDisposeTargetMachine(tm);
        LLVMOrcDisposeThreadSafeContext(tsc);
        return false;
    }
    /* the TM becomes the JIT's template (consumed), the builder is consumed by CreateLLJIT */
    LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
    LLVMOrcLLJITRef jit = NULL;
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&jit, jb);
    if (e) {
        cg_report_error(err, "cannot create the JIT", e);
        LLVMDisposeModule(mod);
        LLVMOrcDisposeThreadSafeContext(tsc);
        return false;
    }
    CgJit *cj = calloc(1, sizeof *cj);
    if (!cj) {
        sb_puts(err, "codegen: out of memory");
        LLVMDisposeModule(mod);
        LLVMOrcDisposeThreadSafeContext(tsc);
        LLVMErrorRef de = LLVMOrcDisposeLLJIT(jit);
        if (de) LLVMConsumeError(de);
        return false;
    }
    cj->jit = jit;
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(jit);
    LLVMOrcDefinitionGeneratorRef gen = NULL;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
    bool ok = true;
    if (e) {
        cg_report_error(err, "cannot search the process for symbols", e);
        ok = false;
    } else {
        LLVMOrcJITDylibAddGenerator(jd, gen);
        ok = cg_define_libm(jit, jd, err);
    }
    if (!ok) {
        LLVMDisposeModule(mod);
        LLVMOrcDisposeThreadSafeContext(tsc);
        cg_jit_free(cj);
        return false;
    }
    /* from here the module belongs to the TSM, and the TSM to the JIT even on failure */
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
    LLVMOrcDisposeThreadSafeContext(tsc);
    e = LLVMOrcLLJITAddLLVMIRModule(jit, jd, tsm);
    if (e) {
        cg_report_error(err, "cannot add the module", e);
        cg_jit_free(cj);
        return false;
    }
    for (int i = 0; i < n; i++) {
        char *sym = cg_tile_symbol(funcs[i]->arena, funcs[i]);
        LLVMOrcExecutorAddress addr = 0;
        e = sym ? LLVMOrcLLJITLookup(jit, &addr, sym) : NULL;
        if (e || !addr) {
            if (e) cg_report_error(err, "cannot compile the kernel", e);
            else sb_puts(err, "codegen: kernel symbol not found");
            cg_jit_free(cj);
            return false;
        }
        tiles[i] = (attn_rt_tile_fn)(uintptr_t)addr;
    }
    *out = cj;
    return true;
}

void cg_jit_free(CgJit *jit) {
    if (!jit) return;
    if (jit->jit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(jit->jit);
        if (e) LLVMConsumeError(e);
    }
    free(jit);
}

bool cg_jit_lookup(CgJit *jit, const char *symbol, attn_rt_tile_fn *fn) {
    LLVMOrcExecutorAddress addr = 0;
    LLVMErrorRef e = jit && jit->jit ? LLVMOrcLLJITLookup(jit->jit, &addr, symbol) : NULL;
    if (e) LLVMConsumeError(e);
    *fn = e ? NULL : (attn_rt_tile_fn)(uintptr_t)addr;
    return *fn != NULL;
}

/* --- for cg_cache.c (the kernel cache): the module the JIT and AOT paths build -------------- */

LLVMModuleRef cg_build_module(LLVMContextRef ctx, IrFunc **funcs, int n, const CgTarget *t,
                              LLVMTargetMachineRef *tm_out, StrBuf *err) {
    pthread_once(&cg_once, cg_init_llvm);
    Resolved r;
    target_resolve(t, &r);
    LLVMTargetMachineRef tm = make_tm(t, &r, err);
    LLVMModuleRef mod = tm ? build_module(ctx, funcs, n, t, &r, tm, err) : NULL;
    target_free(&r);
    if (!mod) {
        if (tm) LLVMDisposeTargetMachine(tm);
        return NULL;
    }
    *tm_out = tm;
    return mod;
}
