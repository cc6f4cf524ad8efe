/* Flash fusion: q.k^T -> scale -> score mod -> mask -> softmax -> .v, a chain of ops over a
 * q_len x kv_len score tensor, becomes one FLASH op: a single pass over K/V with an online
 * softmax, so no score tensor ever exists. */
#include "passes.h"

bool pass_flash(IrFunc *f, PassCtx *ctx) {
    static const IrOpKind chain[] = {IR_OP_QK, IR_OP_SCALE, IR_OP_SCORE_MOD,
                                     IR_OP_MASK, IR_OP_SOFTMAX, IR_OP_PV};
    const int n = (int)(sizeof chain / sizeof chain[0]);
    if (f->nops == 1 && f->ops[0].kind == IR_OP_FLASH) return true; /* already fused */
    if (f->nops != n) {
        sb_printf(ctx->err, "flash: @%s: unexpected op graph\n", f->name);
        return false;
    }
    for (int i = 0; i < n; i++) {
        const IrOp *op = &f->ops[i];
        bool chained = i == 0 ? op->operand[0] == 0 && op->operand[1] == 1
                              : op->operand[0] == f->ops[i - 1].result;
        if (op->kind != chain[i] || !chained || (i == n - 1 && op->operand[1] != 2)) {
            sb_printf(ctx->err, "flash: @%s: op %d is not part of the attention chain\n",
                      f->name, i);
            return false;
        }
    }
    IrOp fused = {.kind = IR_OP_FLASH, .result = f->nvalues, .operand = {0, 1, 2}};
    f->ops[0] = fused;
    f->nops = 1;
    f->output = fused.result;
    f->nvalues++;
    return true;
}
