/* codegen.h — optimized IR -> LLVM module -> JIT function pointers or AOT files.
 * The only folder that includes LLVM headers. */
#ifndef ATTNC_CODEGEN_H
#define ATTNC_CODEGEN_H

#include "ir/ir.h"

typedef enum CgEmit { CG_EMIT_OBJ, CG_EMIT_ASM, CG_EMIT_LLVM } CgEmit;

typedef struct CgTarget {
    const char *triple;   /* NULL: the host */
    const char *cpu;      /* NULL: the host's (or "generic" for a foreign triple) */
    const char *features; /* NULL: the host's (or "" for a foreign triple) */
    int opt_level;        /* 0..3 */
} CgTarget;

/* The widest f32 vector of the target in lanes (16, 8 or 4); 0 and a message on error. */
int cg_target_vec_width(const CgTarget *t, StrBuf *err);

/* The symbol of an attention block's tile function: "attnc_<name>_tile". */
char *cg_tile_symbol(Arena *a, const IrFunc *f);

typedef struct CgJit CgJit;

/* JIT-compiles the tile functions of `funcs` (each after the pass pipeline) for the host;
 * stores one attn_rt_tile_fn per func in `tiles`. Thread-safe. */
bool cg_jit(IrFunc **funcs, int n, const CgTarget *t, CgJit **out, attn_rt_tile_fn *tiles,
            StrBuf *err);
void cg_jit_free(CgJit *jit);

/* Writes an object, assembly or LLVM IR file with the tile functions of `funcs`. */
bool cg_emit_file(IrFunc **funcs, int n, const CgTarget *t, CgEmit kind, const char *path,
                  StrBuf *err);

/* LLVM IR text of the module (for `attnc dump --llvm`); NULL and a message on error. */
char *cg_print_llvm(IrFunc **funcs, int n, const CgTarget *t, StrBuf *err);

#endif
