/* cg_cache.c — what the on-disk kernel cache needs from codegen: the identity of the host
 * target, an object file emitted into memory, and a JIT that links such an object.
 * The same module as cg_jit's is built (cg_build_module); only its tile functions are renamed
 * to symbols the caller chooses, so one object serves every block that compiles to it. */
#include "codegen/codegen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

#include "codegen/cg_internal.h"

struct CgObjJit {
    LLVMOrcLLJITRef jit; /* owns the linked code */
};


void cg_target_id(const CgTarget *t, StrBuf *out) {
    /* as cg_jit resolves the host: an explicit cpu drops the host's features */
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

bool cg_emit_object_mem(IrFunc **funcs, int n, const CgTarget *t, const char *const *symbols,
                        void **data, size_t *len, StrBuf *err) {
    *data = NULL;
    *len = 0;
    CgTarget host = {NULL, t ? t->cpu : NULL, t ? t->features : NULL, t ? t->opt_level : 3};
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMTargetMachineRef tm = NULL;
    LLVMModuleRef mod = cg_build_module(ctx, funcs, n, &host, &tm, err);
    bool ok = mod != NULL;
    for (int i = 0; ok && symbols && i < n; i++) {
        char *sym = cg_tile_symbol(funcs[i]->arena, funcs[i]);
        LLVMValueRef fn = sym ? LLVMGetNamedFunction(mod, sym) : NULL;
        if (!fn) {
            sb_printf(err, "codegen: tile function of '%s' not found", funcs[i]->name);
            ok = false;
        } else {
            LLVMSetValueName2(fn, symbols[i], strlen(symbols[i]));
            /* its group function, if any, follows the rename ("<symbol>_group") */
            char gsym[512], gnew[512];
            snprintf(gsym, sizeof gsym, "%s_group", sym);
            snprintf(gnew, sizeof gnew, "%s_group", symbols[i]);
            LLVMValueRef gfn = LLVMGetNamedFunction(mod, gsym);
            if (gfn) LLVMSetValueName2(gfn, gnew, strlen(gnew));
        }
    }
    if (ok) {
        char *msg = NULL;
        LLVMMemoryBufferRef buf = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &msg, &buf)) {
            sb_printf(err, "codegen: cannot emit the object: %s", msg ? msg : "unknown error");
            ok = false;
        } else {
            size_t sz = LLVMGetBufferSize(buf);
            *data = malloc(sz ? sz : 1);
            if (*data) {
                memcpy(*data, LLVMGetBufferStart(buf), sz);
                *len = sz;
            } else {
                sb_puts(err, "codegen: out of memory");
                ok = false;
            }
            LLVMDisposeMemoryBuffer(buf);
        }
        if (msg) LLVMDisposeMessage(msg);
    }
    if (mod) LLVMDisposeModule(mod);
    if (tm) LLVMDisposeTargetMachine(tm);
    LLVMContextDispose(ctx);
    return ok;
}


bool cg_jit_object(const void *data, size_t len, const char *const *symbols, int n,
                   CgObjJit **out, attn_rt_tile_fn *tiles, StrBuf *err) {
    *out = NULL;
    /* initializes LLVM's targets once per process: a load may come before any compile */
    StrBuf scratch;
    sb_init(&scratch);
    cg_target_vec_width(NULL, &scratch);
    sb_free(&scratch);
    CgObjJit *cj = calloc(1, sizeof *cj);
    if (!cj) {
        sb_puts(err, "codegen: out of memory");
        return false;
    }
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&cj->jit, NULL);
    if (e) {
        cg_report_error(err, "cannot create the JIT", e);
        cj->jit = NULL;
        cg_obj_jit_free(cj);
        return false;
    }
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(cj->jit);
    LLVMOrcDefinitionGeneratorRef gen = NULL;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(cj->jit),
                                                             NULL, NULL);
    if (e) {
        cg_report_error(err, "cannot search the process for symbols", e);
        cg_obj_jit_free(cj);
        return false;
    }
    LLVMOrcJITDylibAddGenerator(jd, gen);
    if (!cg_define_libm(cj->jit, jd, err)) {
        cg_obj_jit_free(cj);
        return false;
    }
    /* the buffer is copied: the caller's bytes need not outlive the call */
    LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(data, len, "attnc-cached-kernel");
    e = LLVMOrcLLJITAddObjectFile(cj->jit, jd, buf); /* takes the buffer, even on failure */
    if (e) {
        cg_report_error(err, "cannot add the object", e);
        cg_obj_jit_free(cj);
        return false;
    }
    for (int i = 0; i < n; i++) {
        LLVMOrcExecutorAddress addr = 0;
        e = LLVMOrcLLJITLookup(cj->jit, &addr, symbols[i]);
        if (e || !addr) {
            if (e) cg_report_error(err, "cannot link the cached kernel", e);
            else sb_printf(err, "codegen: symbol '%s' not in the object", symbols[i]);
            cg_obj_jit_free(cj);
            return false;
        }
        tiles[i] = (attn_rt_tile_fn)(uintptr_t)addr;
    }
    *out = cj;
    return true;
}

void cg_obj_jit_free(CgObjJit *jit) {
    if (!jit) return;
    if (jit->jit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(jit->jit);
        if (e) LLVMConsumeError(e);
    }
    free(jit);
}

bool cg_obj_jit_lookup(CgObjJit *jit, const char *symbol, attn_rt_tile_fn *fn) {
    LLVMOrcExecutorAddress addr = 0;
    LLVMErrorRef e = jit && jit->jit ? LLVMOrcLLJITLookup(jit->jit, &addr, symbol) : NULL;
    if (e) LLVMConsumeError(e);
    *fn = e ? NULL : (attn_rt_tile_fn)(uintptr_t)addr;
    return *fn != NULL;
}
