/* The stable text form of the IR. Expressions print as S-expressions-in-C-syntax that a
 * reader can check against the spec; numbers print exactly (%.17g) so dumps are diffable. */
#include "ir.h"

#include <math.h>
#include <stdio.h>

const char *ir_type_name(IrType t) {
    return t == IR_TY_BOOL ? "bool" : t == IR_TY_INT ? "int" : "float";
}

const char *ir_compute_name(IrCompute c) {
    return c == IR_COMPUTE_BF16 ? "bf16" : c == IR_COMPUTE_INT8 ? "int8" : "f32";
}

const char *ir_dtype_name(attn_dtype t) {
    switch (t) {
    case ATTN_F32: return "f32";
    case ATTN_F16: return "f16";
    case ATTN_BF16: return "bf16";
    case ATTN_I32: return "i32";
    case ATTN_I8: return "int8";
    }
    return "?";
}

static const char *dim_name(attn_dim_kind k) {
    switch (k) {
    case ATTN_DIM_BATCH: return "batch";
    case ATTN_DIM_HEADS: return "heads";
    case ATTN_DIM_KV_HEADS: return "kv_heads";
    case ATTN_DIM_Q_LEN: return "q_len";
    case ATTN_DIM_KV_LEN: return "kv_len";
    case ATTN_DIM_PAGES: return "num_pages";
    case ATTN_DIM_CONST: return NULL;
    }
    return "?";
}

const char *ir_infix_text(IrExprOp op) {
    switch (op) {
    case IR_ADD: return "+";
    case IR_SUB: return "-";
    case IR_MUL: return "*";
    case IR_DIV: return "/";
    case IR_MOD: return "%";
    case IR_EQ: return "==";
    case IR_NE: return "!=";
    case IR_LT: return "<";
    case IR_LE: return "<=";
    case IR_GT: return ">";
    case IR_GE: return ">=";
    case IR_AND: return "&&";
    case IR_OR: return "||";
    default: return NULL;
    }
}

static void print_float(StrBuf *sb, double v) {
    if (isinf(v)) {
        sb_puts(sb, v < 0 ? "-inf" : "inf");
        return;
    }
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", v);
    /* make floats visibly floats: 2 -> 2.0 */
    bool plain = true;
    for (const char *p = buf; *p; p++)
        if (*p == '.' || *p == 'e' || *p == 'n' || *p == 'i') plain = false;
    sb_puts(sb, buf);
    if (plain) sb_puts(sb, ".0");
}

void ir_print_expr(StrBuf *sb, const IrFunc *f, const IrExpr *e) {
    if (!e) {
        sb_puts(sb, "<null>");
        return;
    }
    const char *op = ir_infix_text(e->op);
    if (op) {
        sb_puts(sb, "(");
        ir_print_expr(sb, f, e->args[0]);
        sb_printf(sb, " %s ", op);
        ir_print_expr(sb, f, e->args[1]);
        sb_puts(sb, ")");
        return;
    }
    switch (e->op) {
    case IR_CONST:
        if (e->type == IR_TY_FLOAT) print_float(sb, e->fval);
        else if (e->type == IR_TY_BOOL) sb_puts(sb, e->ival ? "true" : "false");
        else sb_printf(sb, "%lld", (long long)e->ival);
        return;
    case IR_VAR: sb_puts(sb, ir_var_name((IrVar)e->var)); return;
    case IR_NEG: sb_puts(sb, "-"); break;
    case IR_NOT: sb_puts(sb, "!"); break;
    case IR_ITOF: sb_puts(sb, "float"); break;
    case IR_SELECT:
        sb_puts(sb, "(");
        ir_print_expr(sb, f, e->args[0]);
        sb_puts(sb, " ? ");
        ir_print_expr(sb, f, e->args[1]);
        sb_puts(sb, " : ");
        ir_print_expr(sb, f, e->args[2]);
        sb_puts(sb, ")");
        return;
    case IR_CALL: sb_puts(sb, ir_fn_name((IrFn)e->fn)); break;
    case IR_RANGE:
        sb_printf(sb, "range_%s(%s[", e->fn == IR_FN_MIN ? "min" : "max",
                  f && e->input >= 0 && e->input < f->ninputs ? f->inputs[e->input].name : "?");
        for (int i = 0; i < e->nargs; i++) {
            sb_puts(sb, i == 0 ? "" : i == e->nargs - 1 ? " .. " : ", ");
            ir_print_expr(sb, f, e->args[i]);
        }
        sb_puts(sb, "])");
        return;
    case IR_INPUT:
        sb_puts(sb, f && e->input >= 0 && e->input < f->ninputs ? f->inputs[e->input].name : "?");
        if (e->nargs == 0) return;
        sb_puts(sb, "[");
        for (int i = 0; i < e->nargs; i++) {
            if (i) sb_puts(sb, ", ");
            ir_print_expr(sb, f, e->args[i]);
        }
        sb_puts(sb, "]");
        return;
    default: unreachable();
    }
    sb_puts(sb, "(");
    for (int i = 0; i < e->nargs; i++) {
        if (i) sb_puts(sb, ", ");
        ir_print_expr(sb, f, e->args[i]);
    }
    sb_puts(sb, ")");
}

static void print_value(StrBuf *sb, int v) {
    static const char *const fixed[] = {"%q", "%k", "%v"};
    if (v >= 0 && v < 3) sb_puts(sb, fixed[v]);
    else sb_printf(sb, "%%%d", v);
}

/* One kernel function's plan on one line: `plan TEMPLATE role=... key=value ...`. */
static void print_plan(StrBuf *sb, const IrPlan *p) {
    static const char *const vpack[] = {"never", "always", "runtime"};
    if (p->kind == IR_T_GRAD_STEP) {
        /* the runtime walks rows and keys; the code is per W keys */
        sb_printf(sb, "  plan %s role=%s vec=%d\n", ir_template_name(p->kind), ir_role_name(p->role), p->W);
        return;
    }
    sb_printf(sb, "  plan %s role=%s group=%d vec=%d bk=%d rows=%d chunk=%d ring=%d few=%d decode_keys=%d "
                  "pv_groups=%d/%d qdirect=%d vpack=%s",
              ir_template_name(p->kind), ir_role_name(p->role), p->group, p->W, p->BK, p->R, p->BQ, p->NRING,
              p->few_rows, p->decode_keys, p->pv_groups[0], p->pv_groups[1], p->qdirect, vpack[p->vpack]);
    if (p->vpack == IR_VPACK_RUNTIME) sb_printf(sb, "/%d", p->vpack_sets);
    if (p->kind == IR_T_BAND) sb_printf(sb, " w=%d hi=%lld", p->band_w, (long long)p->band_hi);
    if (p->kind == IR_T_STAIR) sb_printf(sb, " stair=%lld..%lld", (long long)p->tri_lo, (long long)p->tri_hi);
    sb_printf(sb, " stack=%lld block_q=%d min_block_q=%d cut_below=%d", (long long)p->stack, p->block_q,
              p->min_block_q, p->cut_below);
    if (p->decode_rows > 1) sb_printf(sb, " decode_rows=%d", p->decode_rows);
    if (p->decode_dot == IR_DECODE_DPBF16) sb_puts(sb, " decode=dpbf16");
    if (p->decode_dot == IR_DECODE_VNNI) sb_puts(sb, " decode=vnni");
    sb_printf(sb, " compute=%s%s%s kv=%s\n", ir_compute_name(p->compute),
              p->qk_bf16dot ? "/dpbf16" : p->pv_bf16dot ? "/pv-dpbf16" : "", p->qk_vnni ? "/vnni" : "",
              ir_dtype_name(p->kvdt));
}

void ir_print_func(StrBuf *sb, const IrFunc *f) {
    sb_printf(sb, "attention @%s {\n", f->name);
    /* an MLA block: the storage of its tensors (its kernels run on f32 copies of them) */
    attn_dtype dt = f->mla.present ? f->mla.dtype : f->dtype;
    attn_dtype kvt = f->mla.present ? ir_mla_kv_dtype(&f->mla) : ir_kv_dtype(f);
    sb_printf(sb, "  heads %d, kv_heads %d, qk_dim %d, v_dim %d, dtype %s", f->heads, f->kv_heads,
              f->qk_dim, f->v_dim, ir_dtype_name(dt));
    if (f->compute != IR_COMPUTE_F32) sb_printf(sb, ", compute %s", ir_compute_name(f->compute));
    if (kvt != dt) sb_printf(sb, ", kv_dtype %s", ir_dtype_name(kvt));
    sb_puts(sb, "\n");
    if (f->page_size) sb_printf(sb, "  kv_cache paged(%d)\n", f->page_size);
    if (f->mla.present)
        sb_printf(sb, "  mla kv_rank %d, rope_dim %d, nope_dim %d, v_dim %d, absorb %s\n",
                  f->mla.kv_rank, f->mla.rope_dim, f->mla.nope_dim, f->mla.v_dim,
                  f->mla.absorb == IR_ABSORB_ON ? "on" : f->mla.absorb == IR_ABSORB_OFF ? "off" : "auto");
    sb_puts(sb, "  scale ");
    print_float(sb, f->scale);
    sb_puts(sb, "\n");
    if (f->head_map) {
        sb_puts(sb, "  head_map [");
        for (int h = 0; h < f->heads; h++) sb_printf(sb, "%s%d", h ? " " : "", f->head_map[h]);
        sb_puts(sb, "]");
        if (f->head_map_expr) {
            sb_puts(sb, " = ");
            ir_print_expr(sb, f, f->head_map_expr);
        }
        sb_puts(sb, "\n");
    }
    for (int i = 0; i < f->ninputs; i++) {
        const IrInput *in = &f->inputs[i];
        sb_printf(sb, "  input %s %s[", ir_dtype_name(in->dtype), in->name);
        for (int d = 0; d < in->rank; d++) {
            const char *n = dim_name(in->dim_kind[d]);
            if (d) sb_puts(sb, ", ");
            if (n) sb_puts(sb, n);
            else sb_printf(sb, "%lld", (long long)in->dim_value[d]);
        }
        sb_puts(sb, "]\n");
    }
    sb_puts(sb, "  mask ");
    ir_print_expr(sb, f, f->mask);
    sb_puts(sb, "\n");
    if (f->score) {
        sb_puts(sb, "  score ");
        ir_print_expr(sb, f, f->score);
        sb_puts(sb, "\n");
    }
    if (f->prune.enabled && f->prune.runs.mod) {
        const IrRuns *r = &f->prune.runs;
        if (r->with_q)
            sb_printf(sb, "  prune runs k = q (mod %lld): rows and keys by residue class\n", (long long)r->mod);
        else
            sb_printf(sb, "  prune runs k %% %lld in [%lld, %lld): keys compacted\n", (long long)r->mod,
                      (long long)r->base, (long long)(r->base + r->width));
        sb_puts(sb, "  prune mask ");
        ir_print_expr(sb, f, f->prune.mask);
        sb_puts(sb, "\n");
    }
    if (f->prune.enabled) {
        static const char *const names[] = {"k_lo", "k_hi", "may_see", "all_see"};
        const IrExpr *trees[] = {f->prune.k_lo, f->prune.k_hi, f->prune.may_see, f->prune.all_see};
        for (int i = 0; i < 4; i++) {
            sb_printf(sb, "  prune %s ", names[i]);
            ir_print_expr(sb, f, trees[i]);
            sb_puts(sb, "\n");
        }
        if (f->prune.exact) sb_puts(sb, "  prune exact: a row sees exactly the keys in [k_lo, k_hi]\n");
        int64_t hi, w = ir_prune_band(f, &hi);
        if (w)
            sb_printf(sb, "  prune band: %lld keys ending %lld before q (rows W apart when a multiple of W up to 4W)\n",
                      (long long)w, (long long)hi);
        int64_t tlo;
        if (ir_prune_tri(f, &tlo, &hi))
            sb_printf(sb, "  prune staircase: keys from %lld to %lld before q\n", (long long)tlo, (long long)hi);
    }
    if (f->grad.present) {
        /* the backward's chain rule: dS' = dS * d score / ds; an f32 input read adds to its own
         * gradient dS * d score / d (the value read) */
        sb_puts(sb, "  grad dscore/ds ");
        if (f->grad.dscore) ir_print_expr(sb, f, f->grad.dscore);
        else sb_puts(sb, "1.0");
        sb_puts(sb, "\n");
        for (int i = 0; i < f->grad.nreads; i++) {
            const IrExpr *ld = f->grad.reads[i].load;
            sb_printf(sb, "  grad d%s[", f->inputs[ld->input].name);
            for (int d = 0; d < ld->nargs; d++) {
                if (d) sb_puts(sb, ", ");
                ir_print_expr(sb, f, ld->args[d]);
            }
            sb_puts(sb, "] += dS * ");
            ir_print_expr(sb, f, f->grad.reads[i].d);
            sb_puts(sb, "\n");
        }
    }
    if (f->sched.vec_width) {
        sb_printf(sb, "  schedule vec_width %d, block_q %d, block_k %d, rows %d", f->sched.vec_width,
                  f->sched.block_q, f->sched.block_k, f->sched.rows);
        if (f->sched.chunk_q > 0 && f->sched.chunk_q != f->sched.block_q) sb_printf(sb, ", chunk_q %d", f->sched.chunk_q);
        sb_puts(sb, "\n");
    }
    for (int i = 0; i < f->nplans; i++) print_plan(sb, &f->plans[i]);
    for (int i = 0; i < f->nops; i++) {
        const IrOp *op = &f->ops[i];
        sb_puts(sb, "  ");
        print_value(sb, op->result);
        if (op->kind == IR_OP_FLASH || op->kind == IR_OP_SOFTMAX) sb_puts(sb, ", %lse");
        sb_printf(sb, " = %s", ir_tensor_op_name(op->kind));
        for (int j = 0; j < 3 && op->operand[j] >= 0; j++) {
            sb_puts(sb, j ? ", " : " ");
            print_value(sb, op->operand[j]);
        }
        switch (op->kind) {
        case IR_OP_SCALE:
            sb_puts(sb, " by ");
            print_float(sb, f->scale);
            break;
        case IR_OP_SCORE_MOD: sb_puts(sb, f->score ? " by score" : " (identity)"); break;
        case IR_OP_MASK: sb_puts(sb, " by mask"); break;
        case IR_OP_FLASH: sb_puts(sb, " {scale, score, mask, online softmax}"); break;
        default: break;
        }
        sb_puts(sb, "\n");
    }
    sb_puts(sb, "  return ");
    print_value(sb, f->output);
    sb_puts(sb, "\n}\n");
    /* the derived funcs (a block has at most one kind of them: a permuted one, key domains or an
     * absorbed one) */
    int ndom = ir_variant_count(f, IR_VAR_DOMAIN), idom = 0;
    for (int i = 0; i < f->nvariants; i++) {
        const IrFunc *g = f->variants[i].f;
        switch (f->variants[i].kind) {
        case IR_VAR_PERMUTED:
            sb_printf(sb, "; in rank order of input %s (when its rows are permutations):\n", f->inputs[f->perm_input].name);
            break;
        case IR_VAR_DOMAIN:
            sb_printf(sb, "; key domain %d of %d (disjoint; merged through log-sum-exps):\n", ++idom, ndom);
            break;
        case IR_VAR_ABSORBED:
            sb_printf(sb, "; absorbed: %%q = [w_uk[h] . q_nope | q_rope] (%d wide), "
                          "%%k = [c_kv | k_rope] (%d wide, one head), %%v = c_kv (%d wide), "
                          "o = %%o . w_uv[h]\n", g->qk_dim, g->qk_dim, g->v_dim);
            break;
        case IR_VAR_MAIN: break;
        }
        ir_print_func(sb, g);
    }
}

void ir_print_module(StrBuf *sb, const IrModule *m) {
    for (int i = 0; i < m->nfuncs; i++) {
        if (i) sb_puts(sb, "\n");
        ir_print_func(sb, m->funcs[i]);
    }
}
