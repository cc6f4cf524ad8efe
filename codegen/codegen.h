/* codegen.h — optimized IR -> LLVM module -> JIT function pointers or AOT files.
 * The only folder that includes LLVM headers. */
#ifndef ATTNC_CODEGEN_H
#define ATTNC_CODEGEN_H

#include "ir/ir.h"

typedef enum CgEmit { CG_EMIT_OBJ, CG_EMIT_ASM, CG_EMIT_LLVM } CgEmit;

typedef struct CgTarget CgTarget;
/* Whether the target has AVX512-BF16's bf16 dot products (vdpbf16ps on 16 f32 lanes). */
bool cg_target_bf16dot(const CgTarget *t);
/* Whether the target has AVX512-VNNI's int8 dot products (vpdpbusd on 16 i32 lanes). */
bool cg_target_vnni(const CgTarget *t);

typedef struct CgTarget {
    const char *triple;   /* NULL: the host */
    const char *cpu;      /* NULL: the host's (or "generic" for a foreign triple) */
    const char *features; /* NULL: the host's (or "" for a foreign triple) */
    int opt_level;        /* 0..3 */
    int threads;          /* JIT: cores to compile on (0: all); not part of the code's identity */
} CgTarget;

/* The widest f32 vector of the target in lanes (16, 8 or 4); 0 and a message on error. */
int cg_target_vec_width(const CgTarget *t, StrBuf *err);

/* The symbol of an attention block's tile function: "attnc_<name>_tile". */
char *cg_tile_symbol(Arena *a, const IrFunc *f);

typedef struct CgJit CgJit;

/* JIT-compiles the tile functions of `funcs` (each after the pass pipeline) for the host, as
 * cg_emit_object_mem and cg_jit_object do; stores one attn_rt_tile_fn per func in `tiles`.
 * Thread-safe. */
bool cg_jit(IrFunc **funcs, int n, const CgTarget *t, CgJit **out, attn_rt_tile_fn *tiles,
            StrBuf *err);
void cg_jit_free(CgJit *jit);
/* Another function of the JIT by symbol (the group functions); false if absent. */
bool cg_jit_lookup(CgJit *jit, const char *symbol, attn_rt_tile_fn *fn);

/* LLVM aborts the process when an allocation fails (std::bad_alloc cannot be caught through
 * its C API), so every entry into it first checks that the address-space limit (RLIMIT_AS,
 * `ulimit -v`) leaves `need` bytes beyond what the process has mapped: a conservative estimate
 * of a compile's peak, its JIT link included, or a cached object's load (measured:
 * docs/guarantees.md). false and a message saying so otherwise; callers report ATTN_ERR_NOMEM.
 * cg_emit_object_mem, cg_emit_file and cg_print_llvm check themselves; cg_jit_object's caller
 * checks CG_NEED_LOAD before a load from the cache. */
#define CG_NEED_COMPILE ((size_t)128 << 20)
#define CG_NEED_LOAD ((size_t)64 << 20)
bool cg_address_space_ok(size_t need, StrBuf *err);

/* Writes an object, assembly or LLVM IR file with the tile functions of `funcs`. */
bool cg_emit_file(IrFunc **funcs, int n, const CgTarget *t, CgEmit kind, const char *path,
                  StrBuf *err);

/* LLVM IR text of the module (for `attnc dump --llvm`); NULL and a message on error. */
char *cg_print_llvm(IrFunc **funcs, int n, const CgTarget *t, StrBuf *err);

// for the on-disk kernel cache

/* What identifies the code of the host target `t` (JIT): LLVM version, triple, CPU, features,
 * opt level, one "name value" per line, appended to `out`. */
void cg_target_id(const CgTarget *t, StrBuf *out);

/* Compiles the tile functions of `funcs` for the host into a bundle of ELF objects in memory
 * (*data: malloc'd, caller frees), the tile function of funcs[i] under the symbol symbols[i]
 * (NULL: the cg_tile_symbol names), its group function under "<symbol>_group". The kernel's
 * pieces are compiled on up to t->threads cores. */
bool cg_emit_object_mem(IrFunc **funcs, int n, const CgTarget *t, const char *const *symbols,
                        void **data, size_t *len, StrBuf *err);

/* JIT-links a bundle from cg_emit_object_mem (the bytes are copied; anything else is refused
 * with a message) and looks up the `n` symbols as tile functions. Thread-safe. */
bool cg_jit_object(const void *data, size_t len, const char *const *symbols, int n, CgJit **out,
                   attn_rt_tile_fn *tiles, StrBuf *err);

#endif
