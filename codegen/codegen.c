/* codegen.c — targets, the tile functions' modules, the pass pipeline, JIT and AOT.
 * AOT (and `dump --llvm`) builds one module for any triple. The JIT builds in split mode: every
 * function, and every piece of a kernel (cg_kernel.c), in a module and context of its own;
 * compiles them on several cores into a bundle of objects (what the on-disk cache stores);
 * and links the bundle for the host. */
#include "codegen/codegen.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "codegen/cg_internal.h"

struct CgJit {
    LLVMOrcLLJITRef jit; /* owns the linked code */
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

/* Bytes of address space the process has mapped (VmSize): the first field of /proc/self/statm,
 * in pages. 0 if it cannot be read. */
static size_t mapped_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

bool cg_address_space_ok(size_t need, StrBuf *err) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return true;
    size_t mapped = mapped_bytes(), limit = (size_t)rl.rlim_cur;
    if (mapped <= limit && limit - mapped >= need) return true;
    sb_printf(err, "out of memory: the address-space limit (ulimit -v) is %zu MiB and %zu MiB are mapped, "
                   "but the code generator needs %zu MiB more",
              limit >> 20, mapped >> 20, need >> 20);
    return false;
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

/* Whether an x86 target has AVX512-BF16's vdpbf16ps: its feature string, else its CPU's name. */
static bool resolved_bf16dot(const Resolved *r) {
    if (strncmp(r->triple, "x86_64", 6) != 0 || resolved_width(r) != 16) return false;
    int f = feature(r->features, "avx512bf16");
    if (f) return f == 1;
    static const char *const cpus[] = {"cooperlake", "sapphirerapids", "emeraldrapids", "graniterapids",
                                       "diamondrapids", "znver4", "znver5", NULL};
    for (int i = 0; cpus[i]; i++)
        if (r->cpu && strncmp(r->cpu, cpus[i], strlen(cpus[i])) == 0) return true;
    return false;
}

/* Whether an x86 target has AVX512-VNNI's vpdpbusd: its feature string, else its CPU's name. */
static bool resolved_vnni(const Resolved *r) {
    if (strncmp(r->triple, "x86_64", 6) != 0 || resolved_width(r) != 16) return false;
    int f = feature(r->features, "avx512vnni");
    if (f) return f == 1;
    static const char *const cpus[] = {"cascadelake", "cooperlake", "icelake", "tigerlake", "rocketlake",
                                       "sapphirerapids", "emeraldrapids", "graniterapids", "diamondrapids",
                                       "znver4", "znver5", NULL};
    for (int i = 0; cpus[i]; i++)
        if (r->cpu && strncmp(r->cpu, cpus[i], strlen(cpus[i])) == 0) return true;
    return false;
}

bool cg_target_vnni(const CgTarget *t) {
    pthread_once(&cg_once, cg_init_llvm);
    Resolved r;
    target_resolve(t, &r);
    bool y = resolved_vnni(&r);
    target_free(&r);
    return y;
}

bool cg_target_bf16dot(const CgTarget *t) {
    pthread_once(&cg_once, cg_init_llvm);
    Resolved r;
    target_resolve(t, &r);
    bool y = resolved_bf16dot(&r);
    target_free(&r);
    return y;
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

/* The x86 CPU names LLVM 19 knows (`llc -march=x86-64 -mcpu=help`), and those of them without
 * 64-bit mode. LLVM takes an unknown name with a warning and compiles for no CPU; for x86-64
 * code that, like a 32-bit CPU, aborts the process inside LLVM ("64-bit code requested on a
 * subtarget that doesn't support it"), which the C API gives no way to catch. make_tm refuses
 * both first. The names checked are LLVM 19's: another LLVM may know others, so there an
 * unknown name only gets +64bit (LLVM's warning, no abort). */
static const char *const x86_cpus_llvm19[] = {
        "alderlake", "amdfam10", "arrowlake", "arrowlake-s", "arrowlake_s", "athlon", "athlon-4", "athlon-fx",
        "athlon-mp", "athlon-tbird", "athlon-xp", "athlon64", "athlon64-sse3", "atom", "atom_sse4_2",
        "atom_sse4_2_movbe", "barcelona", "bdver1", "bdver2", "bdver3", "bdver4", "bonnell", "broadwell",
        "btver1", "btver2", "c3", "c3-2", "cannonlake", "cascadelake", "clearwaterforest", "cooperlake",
        "core-avx-i", "core-avx2", "core2", "core_2_duo_sse4_1", "core_2_duo_ssse3", "core_2nd_gen_avx",
        "core_3rd_gen_avx", "core_4th_gen_avx", "core_4th_gen_avx_tsx", "core_5th_gen_avx",
        "core_5th_gen_avx_tsx", "core_aes_pclmulqdq", "core_i7_sse4_2", "corei7", "corei7-avx",
        "emeraldrapids", "generic", "geode", "goldmont", "goldmont-plus", "goldmont_plus", "gracemont",
        "grandridge", "graniterapids", "graniterapids-d", "graniterapids_d", "haswell", "i386", "i486", "i586",
        "i686", "icelake-client", "icelake-server", "icelake_client", "icelake_server", "ivybridge", "k6",
        "k6-2", "k6-3", "k8", "k8-sse3", "knl", "knm", "lakemont", "lunarlake", "meteorlake", "mic_avx512",
        "nehalem", "nocona", "opteron", "opteron-sse3", "pantherlake", "penryn", "pentium", "pentium-m",
        "pentium-mmx", "pentium2", "pentium3", "pentium3m", "pentium4", "pentium4m", "pentium_4",
        "pentium_4_sse3", "pentium_ii", "pentium_iii", "pentium_iii_no_xmm_regs", "pentium_m", "pentium_mmx",
        "pentium_pro", "pentiumpro", "prescott", "raptorlake", "rocketlake", "sandybridge", "sapphirerapids",
        "sierraforest", "silvermont", "skx", "skylake", "skylake-avx512", "skylake_avx512", "slm", "tigerlake",
        "tremont", "westmere", "winchip-c6", "winchip2", "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4",
        "yonah", "znver1", "znver2", "znver3", "znver4", "znver5", NULL};
static const char *const x86_cpus_32bit[] = {
        "athlon", "athlon-4", "athlon-mp", "athlon-tbird", "athlon-xp", "c3", "c3-2", "geode", "i386", "i486",
        "i586", "i686", "k6", "k6-2", "k6-3", "lakemont", "pentium", "pentium-m", "pentium-mmx", "pentium2",
        "pentium3", "pentium3m", "pentium4", "pentium4m", "pentium_4", "pentium_4_sse3", "pentium_ii",
        "pentium_iii", "pentium_iii_no_xmm_regs", "pentium_m", "pentium_mmx", "pentium_pro", "pentiumpro",
        "prescott", "winchip-c6", "winchip2", "yonah", NULL};

static bool name_in(const char *const *list, const char *name) {
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], name) == 0) return true;
    return false;
}

/* Checks an explicit CPU for an x86 triple (see above); false with the error said. `plus64`:
 * the features need +64bit (another LLVM than 19, a name this table does not hold). */
static bool x86_cpu_ok(const Resolved *r, bool *plus64, StrBuf *err) {
    *plus64 = false;
    bool x64 = strncmp(r->triple, "x86_64", 6) == 0 || strncmp(r->triple, "amd64", 5) == 0;
    bool x86 = x64 || (r->triple[0] == 'i' && r->triple[1] >= '3' && r->triple[1] <= '9' &&
                       strncmp(r->triple + 2, "86", 2) == 0);
    if (!x86) return true;
    unsigned major = 0, minor = 0, patch = 0;
    LLVMGetVersion(&major, &minor, &patch);
    if (!name_in(x86_cpus_llvm19, r->cpu)) {
        if (major != 19) {
            *plus64 = x64;
            return true;
        }
        sb_printf(err, "codegen: unknown CPU '%s' for '%s' (x86 CPUs are names such as x86-64, x86-64-v3, "
                  "x86-64-v4, haswell, skylake-avx512, sapphirerapids, znver4; `llc -march=x86-64 -mcpu=help` "
                  "lists them)", r->cpu, r->triple);
        return false;
    }
    if (x64 && name_in(x86_cpus_32bit, r->cpu)) {
        sb_printf(err, "codegen: CPU '%s' has no 64-bit mode: it cannot run code for '%s' (use an x86-64 CPU, "
                  "or an i686 triple)", r->cpu, r->triple);
        return false;
    }
    return true;
}

/* A target machine whose code generator runs at -O<level> (0..3). */
static LLVMTargetMachineRef make_tm(const CgTarget *t, Resolved *r, int ol, StrBuf *err) {
    LLVMTargetRef target;
    char *msg = NULL;
    if (LLVMGetTargetFromTriple(r->triple, &target, &msg)) {
        sb_printf(err, "codegen: unknown target '%s': %s", r->triple, msg ? msg : "");
        if (msg) LLVMDisposeMessage(msg);
        return NULL;
    }
    if (msg) LLVMDisposeMessage(msg);
    bool plus64 = false;
    if (t && t->cpu && !x86_cpu_ok(r, &plus64, err)) return NULL;
    char *feat = NULL; /* +64bit before the caller's features (r is shared: not changed) */
    if (plus64) {
        size_t n = strlen(r->features) + 8;
        if (!(feat = malloc(n))) {
            sb_puts(err, "codegen: out of memory");
            return NULL;
        }
        snprintf(feat, n, "+64bit%s%s", r->features[0] ? "," : "", r->features);
    }
    LLVMCodeGenOptLevel lv = ol <= 0 ? LLVMCodeGenLevelNone : ol == 1 ? LLVMCodeGenLevelLess
                           : ol == 2 ? LLVMCodeGenLevelDefault : LLVMCodeGenLevelAggressive;
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, r->triple, r->cpu, feat ? feat : r->features, lv,
                                                      LLVMRelocPIC, LLVMCodeModelDefault);
    free(feat);
    if (!tm) sb_printf(err, "codegen: cannot create a target machine for '%s' (cpu '%s')", r->triple, r->cpu);
    return tm;
}

/* The IR pass pipeline of -O<level> (LLVM's unrolling and vectorizers stay off in all). The
 * generator emits vector code with loop-carried values in stack slots, so -O3 needs what
 * promotes them and hoists out of the loops: SROA, early CSE, instcombine, LICM around loop
 * rotation (a tenth of default<O3>'s time, kernels as fast: docs/codegen.md, "Compile time").
 * -O1/-O2 take LLVM's O1; -O0 runs nothing and selects with FastISel. instcombine never
 * verifies its fixpoint: that check aborts the process. */
static const char *cg_pipeline(int level) {
    if (level <= 0) return "default<O0>";
    if (level <= 2) return "default<O1>";
    return "function(simplifycfg,sroa,early-cse,instcombine<no-verify-fixpoint>,simplifycfg,"
           "loop-mssa(licm<no-allowspeculation>,loop-rotate,licm<allowspeculation>),simplifycfg,"
           "instcombine<no-verify-fixpoint>,adce,simplifycfg)";
}

/* Runs the pipeline of `level` on mod. */
static bool optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, int level, StrBuf *err) {
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    /* the generator already unrolled and vectorized what pays */
    LLVMPassBuilderOptionsSetLoopUnrolling(po, 0);
    LLVMPassBuilderOptionsSetLoopVectorization(po, 0);
    LLVMPassBuilderOptionsSetSLPVectorization(po, 0);
    LLVMErrorRef e = LLVMRunPasses(mod, cg_pipeline(level), tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (e) cg_report_error(err, "optimization failed", e);
    return !e;
}

static bool verify(LLVMModuleRef mod, StrBuf *err) {
    char *msg = NULL;
    bool bad = LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg);
    if (bad) sb_printf(err, "codegen: internal error: invalid module: %s", msg ? msg : "");
    if (msg) LLVMDisposeMessage(msg);
    return !bad;
}

/* Emits the tile (and group) functions of `funcs` from `root`: into its module, or in split
 * mode into parts. The function of funcs[i] is symbols[i] (NULL: the cg_tile_symbol names). */
static bool emit_funcs(Cg *root, IrFunc **funcs, int n, const char *const *symbols, int width,
                       StrBuf *err) {
    for (int i = 0; i < n; i++) {
        const char *sym = symbols ? symbols[i] : cg_tile_symbol(funcs[i]->arena, funcs[i]);
        if (!sym) {
            sb_puts(err, "codegen: out of memory");
            return false;
        }
        if (!cg_emit_tile(root, funcs[i], sym, err)) return false;
    }
    return true;
}

/* Builds, verifies and optimizes the one module of `funcs` in `ctx` for `tm`. NULL on error. */
static LLVMModuleRef build_module(LLVMContextRef ctx, IrFunc **funcs, int n, const CgTarget *t,
                                  Resolved *r, LLVMTargetMachineRef tm, StrBuf *err) {
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext("attnc", ctx);
    LLVMSetTarget(mod, r->triple);
    LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(mod, td);
    LLVMDisposeTargetData(td);
    Cg root = {0};
    root.ctx = ctx;
    root.mod = mod;
    bool ok = emit_funcs(&root, funcs, n, NULL, resolved_width(r), err) && verify(mod, err) &&
              optimize(mod, tm, t ? t->opt_level : 3, err);
    if (!ok) {
        LLVMDisposeModule(mod);
        return NULL;
    }
    return mod;
}

/* The verified, optimized single module of `funcs` for `t` (what cg_emit_file compiles) in
 * `ctx`, and the target machine it was built for; the caller disposes both. NULL on error. */
static LLVMModuleRef cg_build_module(LLVMContextRef ctx, IrFunc **funcs, int n, const CgTarget *t,
                                     LLVMTargetMachineRef *tm_out, StrBuf *err) {
    pthread_once(&cg_once, cg_init_llvm);
    Resolved r;
    target_resolve(t, &r);
    LLVMTargetMachineRef tm = make_tm(t, &r, t ? t->opt_level : 3, err);
    LLVMModuleRef mod = tm ? build_module(ctx, funcs, n, t, &r, tm, err) : NULL;
    target_free(&r);
    if (!mod) {
        if (tm) LLVMDisposeTargetMachine(tm);
        return NULL;
    }
    *tm_out = tm;
    return mod;
}

bool cg_emit_file(IrFunc **funcs, int n, const CgTarget *t, CgEmit kind, const char *path,
                  StrBuf *err) {
    if (!cg_address_space_ok(CG_NEED_COMPILE, err)) return false;
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
    if (!cg_address_space_ok(CG_NEED_LOAD, err)) return NULL;
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

/* --- split mode: parts compiled in parallel into a bundle of objects ------------------------ */

typedef struct CgPart {
    LLVMContextRef ctx;      /* owns mod */
    LLVMModuleRef mod;
    void *ir;                /* a folded piece: its bitcode, the function renamed; else NULL */
    size_t irlen;
    char *name;              /* its function */
    bool hot;                /* the -O3 code generator */
    size_t size;             /* instructions: the largest are compiled first */
    LLVMMemoryBufferRef obj; /* the compiled object */
    StrBuf err;
} CgPart;

struct CgParts {
    CgPart *v;
    int n, cap;
    const char *triple, *layout;
};

void cg_fn_open(const Cg *c, Cg *out) {
    *out = *c;
    out->fn = NULL;
    out->entry = NULL;
    out->stack = 0;
    if (c->parts) {
        out->ctx = LLVMContextCreate();
        out->mod = LLVMModuleCreateWithNameInContext("attnc", out->ctx);
        LLVMSetTarget(out->mod, c->parts->triple);
        LLVMSetDataLayout(out->mod, c->parts->layout);
    }
    out->b = LLVMCreateBuilderInContext(out->ctx);
    if (c->W) cg_init_types(out, c->W);
}

static size_t module_size(LLVMModuleRef mod) {
    size_t n = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
        for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(f); bb; bb = LLVMGetNextBasicBlock(bb))
            for (LLVMValueRef i = LLVMGetFirstInstruction(bb); i; i = LLVMGetNextInstruction(i)) n++;
    return n;
}

const char *cg_fn_close(Cg *c, Cg *fc, LLVMValueRef fn, bool fold, bool hot, StrBuf *err) {
    LLVMDisposeBuilder(fc->b);
    fc->b = NULL;
    size_t len = 0;
    const char *name = fn ? LLVMGetValueName2(fn, &len) : NULL;
    CgParts *ps = c->parts;
    if (!ps) return name;
    char *own = fn ? strndup(name, len) : NULL;
    void *ir = NULL;
    size_t irlen = 0;
    bool ok = own != NULL;
    if (ok && fold) {
        /* the same bitcode under the same name is the same piece */
        LLVMSetValueName2(fn, "piece", 5);
        LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(fc->mod);
        LLVMSetValueName2(fn, own, len);
        const char *bytes = bc ? LLVMGetBufferStart(bc) : NULL;
        irlen = bc ? LLVMGetBufferSize(bc) : 0;
        for (int i = 0; bc && i < ps->n; i++) {
            if (ps->v[i].ir && ps->v[i].irlen == irlen && memcmp(ps->v[i].ir, bytes, irlen) == 0) {
                LLVMDisposeMemoryBuffer(bc);
                free(own);
                LLVMDisposeModule(fc->mod);
                LLVMContextDispose(fc->ctx);
                return ps->v[i].name;
            }
        }
        ir = bc ? malloc(irlen ? irlen : 1) : NULL;
        if (ir) memcpy(ir, bytes, irlen);
        if (bc) LLVMDisposeMemoryBuffer(bc);
        ok = ir != NULL;
    }
    if (ok && ps->n == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 16;
        CgPart *v = realloc(ps->v, sizeof *v * (size_t)cap);
        if (v) ps->v = v, ps->cap = cap;
        ok = v != NULL;
    }
    if (!ok) {
        if (fn) sb_puts(err, "codegen: out of memory");
        free(own);
        free(ir);
        LLVMDisposeModule(fc->mod);
        LLVMContextDispose(fc->ctx);
        return NULL;
    }
    CgPart *pt = &ps->v[ps->n++];
    memset(pt, 0, sizeof *pt);
    pt->ctx = fc->ctx;
    pt->mod = fc->mod;
    pt->ir = ir;
    pt->irlen = irlen;
    pt->name = own;
    pt->hot = hot;
    pt->size = module_size(fc->mod);
    sb_init(&pt->err);
    return own;
}

static void parts_free(CgParts *ps) {
    for (int i = 0; i < ps->n; i++) {
        CgPart *pt = &ps->v[i];
        if (pt->obj) LLVMDisposeMemoryBuffer(pt->obj);
        LLVMDisposeModule(pt->mod);
        LLVMContextDispose(pt->ctx);
        free(pt->ir);
        free(pt->name);
        sb_free(&pt->err);
    }
    free(ps->v);
}

typedef struct Compile {
    CgParts *ps;
    const CgTarget *t;
    Resolved *r;
    int *order;       /* parts, largest first */
    atomic_int next;  /* the next of order to take */
} Compile;

typedef struct Worker {
    Compile *cp;
    StrBuf err;       /* why the worker could not start */
    pthread_t th;
    bool started;
} Worker;

/* Takes parts until none is left: verify, optimize, emit the object. Target machines of its
 * own: LLVM compiles modules of distinct contexts concurrently. At -O2/-O3 the code generator
 * runs at -O3 for hot parts (the group function's decode loop: 3-5% faster) and at -O1 for
 * the rest (a tenth less time, kernels as fast: docs/codegen.md, "Compile time"). */
static void *compile_worker(void *arg) {
    Worker *w = arg;
    Compile *cp = w->cp;
    int level = cp->t ? cp->t->opt_level : 3;
    LLVMTargetMachineRef tms[2] = {NULL, NULL}; /* cold, hot */
    for (int i; (i = atomic_fetch_add(&cp->next, 1)) < cp->ps->n;) {
        CgPart *pt = &cp->ps->v[cp->order[i]];
        LLVMTargetMachineRef *tm = &tms[pt->hot];
        if (!*tm && !(*tm = make_tm(cp->t, cp->r, pt->hot || level < 2 ? level : 1, &w->err))) break;
        if (!verify(pt->mod, &pt->err) || !optimize(pt->mod, *tm, level, &pt->err)) continue;
        char *msg = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(*tm, pt->mod, LLVMObjectFile, &msg, &pt->obj)) {
            sb_printf(&pt->err, "codegen: cannot emit the object: %s", msg ? msg : "unknown error");
            pt->obj = NULL;
        }
        if (msg) LLVMDisposeMessage(msg);
    }
    for (int i = 0; i < 2; i++)
        if (tms[i]) LLVMDisposeTargetMachine(tms[i]);
    return NULL;
}

/* Compiles every part, on up to t->threads cores (0: all of them). */
static bool compile_parts(CgParts *ps, const CgTarget *t, Resolved *r, StrBuf *err) {
    enum { MAX_WORKERS = 16 };
    int *order = malloc(sizeof(int) * (size_t)(ps->n ? ps->n : 1));
    if (!order) {
        sb_puts(err, "codegen: out of memory");
        return false;
    }
    for (int i = 0; i < ps->n; i++) {
        int j = i;
        for (; j > 0 && ps->v[order[j - 1]].size < ps->v[i].size; j--) order[j] = order[j - 1];
        order[j] = i;
    }
    long cores = t && t->threads > 0 ? t->threads : sysconf(_SC_NPROCESSORS_ONLN);
    int nw = (int)(cores < 1 ? 1 : cores > MAX_WORKERS ? MAX_WORKERS : cores);
    if (nw > ps->n) nw = ps->n > 0 ? ps->n : 1;
    Compile cp = {.ps = ps, .t = t, .r = r, .order = order};
    atomic_init(&cp.next, 0);
    Worker w[MAX_WORKERS];
    for (int i = 0; i < nw; i++) {
        w[i].cp = &cp;
        sb_init(&w[i].err);
        /* the caller is worker 0; a thread that cannot start leaves its share to the others */
        w[i].started = i > 0 && pthread_create(&w[i].th, NULL, compile_worker, &w[i]) == 0;
    }
    compile_worker(&w[0]);
    for (int i = 1; i < nw; i++)
        if (w[i].started) pthread_join(w[i].th, NULL);
    bool ok = true;
    for (int i = 0; i < ps->n && ok; i++) {
        CgPart *pt = &ps->v[i];
        if (pt->obj) continue;
        ok = false;
        if (pt->err.len) sb_puts(err, sb_str(&pt->err));
        for (int j = 0; j < nw && !err->len; j++) sb_puts(err, sb_str(&w[j].err));
        if (!err->len) sb_puts(err, "codegen: a part was not compiled");
    }
    for (int i = 0; i < nw; i++) sb_free(&w[i].err);
    free(order);
    return ok;
}

/* A bundle: "ATTNCOBJ", u32 count, count u64 sizes, then the objects (host byte order). */
static const char bundle_magic[8] = {'A', 'T', 'T', 'N', 'C', 'O', 'B', 'J'};

static bool bundle(CgParts *ps, void **data, size_t *len, StrBuf *err) {
    size_t total = 8 + 4 + 8 * (size_t)ps->n;
    for (int i = 0; i < ps->n; i++) total += LLVMGetBufferSize(ps->v[i].obj);
    uint8_t *p = malloc(total);
    if (!p) {
        sb_puts(err, "codegen: out of memory");
        return false;
    }
    memcpy(p, bundle_magic, 8);
    uint32_t count = (uint32_t)ps->n;
    memcpy(p + 8, &count, 4);
    size_t at = 12 + 8 * (size_t)ps->n;
    for (int i = 0; i < ps->n; i++) {
        uint64_t sz = LLVMGetBufferSize(ps->v[i].obj);
        memcpy(p + 12 + 8 * (size_t)i, &sz, 8);
        memcpy(p + at, LLVMGetBufferStart(ps->v[i].obj), sz);
        at += sz;
    }
    *data = p;
    *len = total;
    return true;
}

bool cg_emit_object_mem(IrFunc **funcs, int n, const CgTarget *t, const char *const *symbols,
                        void **data, size_t *len, StrBuf *err) {
    *data = NULL;
    *len = 0;
    if (!cg_address_space_ok(CG_NEED_COMPILE, err)) return false;
    pthread_once(&cg_once, cg_init_llvm);
    CgTarget host = {NULL, t ? t->cpu : NULL, t ? t->features : NULL, t ? t->opt_level : 3, t ? t->threads : 0};
    Resolved r;
    target_resolve(&host, &r);
    LLVMTargetMachineRef tm = make_tm(&host, &r, host.opt_level, err);
    bool ok = tm != NULL;
    if (ok) {
        LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
        char *layout = LLVMCopyStringRepOfTargetData(td);
        LLVMDisposeTargetData(td);
        LLVMDisposeTargetMachine(tm);
        CgParts ps = {.triple = r.triple, .layout = layout};
        Cg root = {0};
        root.parts = &ps;
        ok = emit_funcs(&root, funcs, n, symbols, resolved_width(&r), err);
        ok = ok && compile_parts(&ps, &host, &r, err) && bundle(&ps, data, len, err);
        parts_free(&ps);
        LLVMDisposeMessage(layout);
    }
    target_free(&r);
    return ok;
}

/* --- the JIT: a bundle linked for the host ----------------------------------------------------- */

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

bool cg_jit_object(const void *data, size_t len, const char *const *symbols, int n, CgJit **out,
                   attn_rt_tile_fn *tiles, StrBuf *err) {
    *out = NULL;
    /* no address-space check here: a compile's covers the link of what it compiled, and
     * attn_compile checks before it loads from the cache */
    pthread_once(&cg_once, cg_init_llvm); /* a load may come before any compile */
    const uint8_t *p = data;
    uint32_t count = 0;
    bool ok = len >= 12 && memcmp(p, bundle_magic, 8) == 0;
    if (ok) memcpy(&count, p + 8, 4);
    ok = ok && count <= (len - 12) / 8;
    size_t at = 12 + 8 * (size_t)count;
    for (uint32_t i = 0; ok && i < count; i++) {
        uint64_t sz;
        memcpy(&sz, p + 12 + 8 * (size_t)i, 8);
        ok = sz <= len - at;
        at += ok ? sz : 0;
    }
    if (!ok || at != len) {
        sb_puts(err, "codegen: not a bundle of objects");
        return false;
    }
    CgJit *cj = calloc(1, sizeof *cj);
    if (!cj) {
        sb_puts(err, "codegen: out of memory");
        return false;
    }
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&cj->jit, NULL);
    if (e) {
        cg_report_error(err, "cannot create the JIT", e);
        cj->jit = NULL;
        cg_jit_free(cj);
        return false;
    }
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(cj->jit);
    LLVMOrcDefinitionGeneratorRef gen = NULL;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(cj->jit),
                                                             NULL, NULL);
    if (e) {
        cg_report_error(err, "cannot search the process for symbols", e);
        cg_jit_free(cj);
        return false;
    }
    LLVMOrcJITDylibAddGenerator(jd, gen);
    if (!cg_define_libm(cj->jit, jd, err)) {
        cg_jit_free(cj);
        return false;
    }
    at = 12 + 8 * (size_t)count;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t sz;
        memcpy(&sz, p + 12 + 8 * (size_t)i, 8);
        /* copied: the caller's bytes need not outlive the call */
        LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRangeCopy((const char *)p + at, sz, "attnc-kernel");
        at += sz;
        e = LLVMOrcLLJITAddObjectFile(cj->jit, jd, buf); /* takes the buffer, even on failure */
        if (e) {
            cg_report_error(err, "cannot add the object", e);
            cg_jit_free(cj);
            return false;
        }
    }
    for (int i = 0; i < n; i++) {
        LLVMOrcExecutorAddress addr = 0;
        e = LLVMOrcLLJITLookup(cj->jit, &addr, symbols[i]);
        if (e || !addr) {
            if (e) cg_report_error(err, "cannot link the kernel", e);
            else sb_printf(err, "codegen: symbol '%s' not in the object", symbols[i]);
            cg_jit_free(cj);
            return false;
        }
        tiles[i] = (attn_rt_tile_fn)(uintptr_t)addr;
    }
    *out = cj;
    return true;
}

bool cg_jit(IrFunc **funcs, int n, const CgTarget *t, CgJit **out, attn_rt_tile_fn *tiles,
            StrBuf *err) {
    *out = NULL;
    const char **syms = calloc((size_t)(n > 0 ? n : 1), sizeof *syms);
    void *obj = NULL;
    size_t len = 0;
    bool ok = syms != NULL;
    for (int i = 0; ok && i < n; i++) ok = (syms[i] = cg_tile_symbol(funcs[i]->arena, funcs[i])) != NULL;
    if (!ok) sb_puts(err, "codegen: out of memory");
    ok = ok && cg_emit_object_mem(funcs, n, t, syms, &obj, &len, err);
    ok = ok && cg_jit_object(obj, len, syms, n, out, tiles, err);
    free(obj);
    free(syms);
    return ok;
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

void cg_target_id(const CgTarget *t, StrBuf *out) {
    /* as the JIT resolves the host: an explicit cpu drops the host's features */
    char *triple = LLVMGetDefaultTargetTriple();
    char *cpu = t && t->cpu ? NULL : LLVMGetHostCPUName();
    char *feat = t && t->features ? NULL : t && t->cpu ? NULL : LLVMGetHostCPUFeatures();
    unsigned major = 0, minor = 0, patch = 0;
    LLVMGetVersion(&major, &minor, &patch);
    sb_printf(out, "llvm %u.%u.%u\ntriple %s\ncpu %s\nfeatures %s\nopt %d\n", major, minor, patch,
              triple ? triple : "?", t && t->cpu ? t->cpu : cpu ? cpu : "?",
              t && t->features ? t->features : feat ? feat : "", t ? t->opt_level : 3);
    if (triple) LLVMDisposeMessage(triple);
    if (cpu) LLVMDisposeMessage(cpu);
    if (feat) LLVMDisposeMessage(feat);
}
