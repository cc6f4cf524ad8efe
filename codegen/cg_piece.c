/* cg_piece.c — the piece protocol: a kernel's key-block bodies as functions of their own.
 *
 * The bodies of a key block (few rows; K packing; partial and full row groups) are emitted as
 * functions called once per block with a frame: an i64 array holding the caller's live values
 * (Kern's run-time fields and the env's), which the piece loads back on entry. In split mode
 * each piece lands in a module of its own, so the backend compiles a kernel's pieces on several
 * cores, and the tile and group entries share the identical ones (cg_fn_close folds them). A
 * call per block costs nothing against the block.
 *
 * The rules, in one place:
 * - every LLVMValueRef field of Kern (and of its CgEnv) that a piece may read is listed in
 *   kern_slots; a value not listed there is not in the frame and must not be read by a piece;
 * - cg_frame_fill(k, false) stores the chunk's values before its key loop, cg_frame_fill(k,
 *   true) the block's (kb, part, kmin/kmax, KT, VS, vfin_slot) in each block: the stores must
 *   dominate the piece's call (piece_begin refuses a frame that is out of date);
 * - inside a piece, k points at the piece's function (k->c) and its loads; cg_emit_piece
 *   restores the caller's state after the body. */
#include <stdio.h>
#include <string.h>

#include "codegen/cg_kern.h"

/* --- pieces: a kernel's key-block bodies as functions of their own --------------------------
 * The bodies of a key block (few rows; K packing; partial and full row groups) are emitted as functions
 * called once per block with a frame of the caller's live values (Kern's and the env's), which
 * the piece loads back on entry. In split mode each piece lands in a module of its own, so the
 * backend compiles a kernel's pieces on several cores, and the tile and group entries share the
 * identical ones (cg_fn_close folds them). A call per block costs nothing against the block. */

/* The addresses of every run-time value of k, at the same index in parent and piece. */
static int kern_slots(Kern *k, LLVMValueRef **s) {
    LLVMValueRef *all[] = {&k->qbase, &k->kbase, &k->vbase, &k->obase, &k->qs2, &k->ks2, &k->vs2,
        &k->os2, &k->Qs, &k->KT, &k->VS, &k->vpack_on, &k->ACC, &k->M, &k->L, &k->MB, &k->RF, &k->qlo, &k->last, &k->npad,
        &k->kb, &k->kv_len, &k->qpos0, &k->kpos0, &k->nkeys, &k->lsebase, &k->ls2, &k->lsep,
        &k->part_rt, &k->vfin_slot, &k->qc, &k->kbeg, &k->kendp, &k->resume, &k->pages, &k->kps, &k->vps, &k->gtab, &k->gq0,
        &k->gnq, &k->qs1, &k->os1, &k->ls1, &k->part, &k->env.args, &k->env.b, &k->env.q_len,
        &k->env.kv_len, &k->env.qmin, &k->env.qmax, &k->env.kmin, &k->env.kmax,
        &k->env.err_slot, &k->env.dummy, &k->ksc, &k->vsc, &k->kvall, &k->ks1, &k->vs1,
        /* the row's q (and h, grouped) is set by cg_env_row before any use, in the piece too;
         * what the caller's last row left there need not dominate the call */
        k->grouped ? NULL : &k->env.h};
    _Static_assert(sizeof all / sizeof all[0] <= FRAME_SLOTS, "the frame holds every slot");
    int n = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < n; i++) s[i] = all[i];
    return n;
}

typedef struct Piece {
    Kern saved; /* the caller's state, restored by piece_end */
    Cg cg;      /* the piece's function */
    LLVMValueRef fn, call;
    LLVMValueRef load[FRAME_SLOTS]; /* the frame's loads, erased if unused (pieces that differ
                                     * only in what they do not read fold) */
    int nload;
} Piece;

/* Stores k's live values into the frame for the pieces called after it (whose calls it must
 * dominate): those of the chunk before its key loop, those of the block in each block. */
void cg_frame_fill(Kern *k, bool per_block) {
    Cg *c = k->c;
    LLVMValueRef *slot[FRAME_SLOTS];
    int n = kern_slots(k, slot);
    if (!k->frame) k->frame = cg_alloca(c, c->i64, FRAME_SLOTS, 8, "frame");
    for (int i = 0; i < n; i++) {
        /* what changes from key block to key block, stored per block; the rest per chunk */
        bool blockwise = slot[i] == &k->kb || slot[i] == &k->part || slot[i] == &k->env.kmin || slot[i] == &k->env.kmax ||
                         slot[i] == &k->KT || slot[i] == &k->VS || slot[i] == &k->vfin_slot;
        if (blockwise != per_block) continue;
        LLVMValueRef v = slot[i] ? *slot[i] : NULL;
        LLVMTypeKind kind = v ? LLVMGetTypeKind(LLVMTypeOf(v)) : LLVMVoidTypeKind;
        k->framed[i] = v;
        if (kind == LLVMIntegerTypeKind || kind == LLVMPointerTypeKind)
            cg_store(c, v, cg_gep(c, c->i64, k->frame, cg_i64(c, i)), 8);
    }
}

/* Calls the piece `what` here (its frame filled by cg_frame_fill) and points k (k->c included)
 * at its body. */
static bool piece_begin(Kern *k, Piece *pc, const char *what) {
    Cg *c = k->c;
    LLVMValueRef *slot[FRAME_SLOTS];
    int n = kern_slots(k, slot);
    for (int i = 0; i < n; i++) {
        if (k->frame && (slot[i] ? *slot[i] : NULL) == k->framed[i]) continue;
        sb_puts(k->err, "codegen: internal error: a piece's frame is out of date");
        return false;
    }
    size_t len;
    const char *parent = LLVMGetValueName2(c->fn, &len);
    char name[640];
    snprintf(name, sizeof name, "%.*s.%s", (int)len, parent, what);
    cg_fn_open(c, &pc->cg);
    Cg *pg = &pc->cg;
    LLVMTypeRef pty = pg->ptr, cty = c->ptr;
    LLVMTypeRef fty = LLVMFunctionType(pg->voidt, &pty, 1, 0);
    pc->fn = LLVMAddFunction(pg->mod, name, fty);
    LLVMSetLinkage(pc->fn, c->parts ? LLVMExternalLinkage : LLVMInternalLinkage);
    LLVMAddAttributeAtIndex(pc->fn, 1, LLVMCreateEnumAttribute(pg->ctx, LLVMGetEnumAttributeKindForName("noalias", 7), 0));
    LLVMTypeRef pfty = LLVMFunctionType(c->voidt, &cty, 1, 0);
    LLVMValueRef callee = c->parts ? LLVMAddFunction(c->mod, name, pfty) : pc->fn;
    pc->call = LLVMBuildCall2(c->b, pfty, callee, &k->frame, 1, "");
    pg->fn = pc->fn;
    pg->entry = LLVMAppendBasicBlockInContext(pg->ctx, pc->fn, "entry");
    LLVMPositionBuilderAtEnd(pg->b, pg->entry);
    pc->saved = *k;
    LLVMValueRef fr = LLVMGetParam(pc->fn, 0);
    for (int i = 0; i < n; i++) {
        LLVMValueRef v = slot[i] ? *slot[i] : NULL;
        pc->load[i] = NULL;
        if (!v) continue;
        LLVMTypeRef t = LLVMTypeOf(v);
        LLVMTypeKind kind = t ? LLVMGetTypeKind(t) : LLVMVoidTypeKind;
        LLVMTypeRef nt = kind == LLVMIntegerTypeKind ? LLVMIntTypeInContext(pg->ctx, LLVMGetIntTypeWidth(t))
                       : kind == LLVMPointerTypeKind ? pg->ptr : NULL;
        if (!nt) *slot[i] = NULL; /* vectors live only inside an expression */
        else if (LLVMIsAConstantInt(v)) *slot[i] = LLVMConstInt(nt, LLVMConstIntGetZExtValue(v), 0);
        else if (LLVMIsAConstantPointerNull(v)) *slot[i] = LLVMConstNull(nt);
        else *slot[i] = pc->load[i] = cg_load(pg, nt, cg_gep(pg, pg->i64, fr, cg_i64(pg, i)), 8);
    }
    pc->nload = n;
    k->c = pg;
    k->mbt = LLVMIntTypeInContext(pg->ctx, (unsigned)k->p.W);
    k->frame = NULL;
    memset(k->framed, 0, sizeof k->framed);
    k->env.q = k->env.k = k->env.score = NULL;
    if (k->grouped) k->env.h = NULL;
    k->env.ncache = 0; /* hoisted subtrees are the caller's */
    k->env.tag = -1;
    k->env.collect = NULL;
    return true;
}

/* Ends the piece's body and restores the caller's state. */
static void piece_end(Kern *k, Piece *pc, bool hot) {
    LLVMBuildRetVoid(k->c->b);
    for (int i = 0; i < pc->nload; i++) {
        LLVMValueRef ld = pc->load[i];
        if (!ld || LLVMGetFirstUse(ld)) continue;
        LLVMValueRef gep = LLVMGetOperand(ld, 0);
        LLVMInstructionEraseFromParent(ld);
        if (LLVMIsAInstruction(gep) && !LLVMGetFirstUse(gep)) LLVMInstructionEraseFromParent(gep);
    }
    int64_t ps = pc->cg.stack;
    *k = pc->saved;
    if (ps > k->piece_stack) k->piece_stack = ps;
    Cg *c = k->c;
    const char *name = cg_fn_close(c, &pc->cg, pc->fn, c->parts != NULL, hot, k->err);
    if (!name) {
        k->failed = true;
        return;
    }
    size_t len;
    LLVMValueRef callee = LLVMGetCalledValue(pc->call);
    if (strcmp(LLVMGetValueName2(callee, &len), name) != 0) {
        /* folded into an identical piece of an earlier function: call that one */
        LLVMValueRef same = LLVMGetNamedFunction(c->mod, name);
        if (same) {
            LLVMSetOperand(pc->call, LLVMGetNumOperands(pc->call) - 1, same);
            LLVMDeleteFunction(callee);
        } else {
            LLVMSetValueName2(callee, name, strlen(name));
        }
    }
}

/* Emits body(k, arg) as the piece `what`, called here. */
void cg_emit_piece(Kern *k, const char *what, bool hot, void (*body)(Kern *, bool), bool arg) {
    Piece pc;
    if (k->failed || !piece_begin(k, &pc, what)) {
        k->failed = true;
        return;
    }
    body(k, arg);
    piece_end(k, &pc, hot);
}
