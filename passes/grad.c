/* The backward's chain rule through `score = EXPR`, derived once from the forward: d score / ds
 * (s the scaled score) and, for every read of an f32 input, d score / d (the value read), by
 * symbolic differentiation (ir/diff.c). The backward recomputes P from the forward's lse and
 * scales dS = P * (dP - D) by them; `attnc dump --after grad` shows the derivatives. */
#include "passes.h"

bool pass_grad(IrFunc *f, PassCtx *ctx) { return ir_grad_derive(f, ctx->err); }
