/* cg_tmpl_runs.c — the residue templates: key runs (k % r in [base, base + w), the fixed
 * pattern's summary keys: every row sees only those keys, visited as one run over the compacted
 * index) and class runs (k = q (mod r): rows of one residue class see only keys of the same
 * class, so each class is a run over strided rows and keys and the work is the visible pairs;
 * a class whose rows see a staircase runs the band groups' staircase). */
#include "codegen/cg_kern.h"

void cg_emit_key_runs(Kern *k, LLVMValueRef q0, LLVMValueRef q1) {
    cg_kv_key_runs(k, &k->f->prune.runs);
    k->nkeys = cg_keys_below(k, k->kv_len);
    cg_emit_run(k, q0, q1);
}

void cg_emit_class_runs(Kern *k, LLVMValueRef q0, LLVMValueRef q1, LLVMValueRef q_off) {
    Cg *c = k->c;
    LLVMBuilderRef b = c->b;
    const IrPlan *p = &k->p;
    int64_t modulus = k->f->prune.runs.mod;
    k->qstep = k->kstep = modulus;
    LLVMValueRef rr = cg_i64(c, modulus);
    Kern at = *k; /* the function's bases and strides */
    CgLoop lr;
    LLVMValueRef nres = cg_smin(c, rr, LLVMBuildSub(b, q1, q0, ""));
    LLVMValueRef ri = cg_loop_begin(c, &lr, cg_i64(c, 0), nres, cg_i64(c, 1), "res");
    LLVMValueRef first = add(c, q0, ri);
    LLVMValueRef pos = add(c, q_off, first);
    LLVMValueRef rho = LLVMBuildSRem(b, pos, rr, "");
    rho = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, rho, cg_i64(c, 0), ""), add(c, rho, rr), rho, "rho");
    LLVMValueRef nv = LLVMBuildSDiv(b, add(c, LLVMBuildSub(b, q1, first, ""), cg_i64(c, modulus - 1)), rr, "");
    k->qpos0 = pos;
    k->kpos0 = rho;
    k->nkeys = cg_keys_below(k, k->kv_len);
    cg_kv_class(k, &at, first, rho, rr);
    if (p->kind == IR_T_STAIR)
        cg_emit_tri_run(k, nv, p->tri_lo, p->tri_hi);
    else
        cg_emit_run(k, cg_i64(c, 0), nv);
    cg_loop_end(c, &lr);
}
