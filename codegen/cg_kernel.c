/* cg_kernel.c — the entry of a kernel function: its arguments, tensor bases and scratch, then
 * the template its plan names (IrPlan.kind, decided by the schedule pass).
 *
 * For a task's query rows, chunks of BQ rows keep their online-softmax state (m, l, acc) in
 * stack scratch. Keys are visited in blocks of BK (a multiple of the vector width W), within
 * the bounds of the prune pass's k_lo/k_hi; its may_see/all_see tests classify each block
 * (empty: skipped; full: no mask test; partial or the kv tail: per-row lane masks). Then K is
 * packed transposed, KT[d][BK], once and reused by every register-blocked group of R rows:
 *   s[r] = sum_d bcast(q[r][d]) * KT[d]          (FMA chains, W keys per vector)
 *   score mod, mask -> -inf, online softmax update, acc[r] = acc[r]*alpha + sum_j p[r][j]*V[j]
 * Everything the spec fixes is a constant; the inner loops are unrolled here in steps so the
 * accumulators are SSA vectors. */
#include <stddef.h>
#include <stdio.h>

#include "codegen/cg_kern.h"

/* Emits the kernel function the plan describes (its role: the tile or the group entry). */
static bool emit_fn(Cg *c, const IrFunc *f, const IrPlan *plan, const char *symbol, StrBuf *err);

bool cg_emit_tile(Cg *c, const IrFunc *f, const char *symbol, StrBuf *err) {
    if (f->nplans < 1) {
        sb_printf(err, "codegen: %s: no plan (schedule missing?)", f->name);
        return false;
    }
    for (int i = 0; i < f->nplans; i++) {
        const IrPlan *pl = &f->plans[i];
        if (pl->role == IR_ROLE_GRAD) {
            if (!cg_emit_grad(c, f, pl, symbol, err)) return false;
            continue;
        }
        char sym[512];
        snprintf(sym, sizeof sym, "%s%s", symbol, pl->role == IR_ROLE_GROUP ? "_group" : "");
        Cg fc;
        cg_fn_open(c, &fc);
        bool ok = emit_fn(&fc, f, pl, sym, err);
        if (!cg_fn_close(c, &fc, fc.fn, false, false, err) || !ok) return false;
    }
    return true;
}

static bool emit_fn(Cg *c, const IrFunc *f, const IrPlan *plan, const char *symbol, StrBuf *err) {
    int G = plan->group;
    if (f->sched.vec_width != 4 && f->sched.vec_width != 8 && f->sched.vec_width != 16) {
        sb_printf(err, "codegen: %s: unsupported vector width %d (schedule missing?)", f->name, f->sched.vec_width);
        return false;
    }
    if (f->v_dim > CG_MAX_CHUNKS * f->sched.vec_width || f->qk_dim > CG_MAX_CHUNKS * f->sched.vec_width || f->qk_dim < 0 || f->v_dim < 1 || f->heads < 1) {
        sb_printf(err, "codegen: %s: unsupported head dims %d/%d", f->name, f->qk_dim, f->v_dim);
        return false;
    }
    cg_init_types(c, f->sched.vec_width);
    Kern K = {0};
    Kern *k = &K;
    k->c = c;
    k->err = err;
    k->gsize = 1; /* rows sharing a key's prefetches: one, or the group's heads */
    k->f = f;
    k->p = *plan;
    k->dt = f->dtype;
    k->odt = f->page_size ? ATTN_F32 : f->dtype;
    k->kvdt = plan->kvdt;
    const IrPlan *p = &k->p;
    LLVMBuilderRef b = c->b;

    LLVMTypeRef params[5] = {c->ptr, c->i64, c->i64, c->i64, c->i64};
    LLVMTypeRef fty = LLVMFunctionType(c->i32, params, 5, 0);
    c->fn = LLVMAddFunction(c->mod, symbol, fty);
    c->stack = 0;
    LLVMSetLinkage(c->fn, LLVMExternalLinkage);
    c->entry = cg_block(c, "entry");
    LLVMPositionBuilderAtEnd(b, c->entry);
    LLVMValueRef a = LLVMGetParam(c->fn, 0);
    LLVMValueRef bi = LLVMGetParam(c->fn, 1), h = LLVMGetParam(c->fn, 2);
    LLVMValueRef q0 = LLVMGetParam(c->fn, 3), q1 = LLVMGetParam(c->fn, 4);
    /* nothing the kernel writes aliases the argument block: its loads may be hoisted */
    LLVMAddAttributeAtIndex(c->fn, 1, LLVMCreateEnumAttribute(c->ctx, LLVMGetEnumAttributeKindForName("noalias", 7), 0));

    /* the K/V head of query head h; or, for the group entry, the heads of K/V head h */
    LLVMValueRef kvh;
    {
        int n = G ? f->kv_heads * G : f->heads;
        LLVMTypeRef at = LLVMArrayType(c->i32, (unsigned)n);
        LLVMValueRef *vals = arena_alloc(f->arena, sizeof(LLVMValueRef) * (size_t)n);
        if (!vals) {
            sb_puts(err, "codegen: out of memory");
            return false;
        }
        if (G) {
            int *fill = arena_alloc(f->arena, sizeof(int) * (size_t)f->kv_heads);
            if (!fill) {
                sb_puts(err, "codegen: out of memory");
                return false;
            }
            for (int j = 0; j < f->kv_heads; j++) fill[j] = 0;
            for (int i = 0; i < f->heads; i++) {
                int j = ir_head_kv(f, i);
                vals[j * G + fill[j]++] = cg_i32(c, i);
            }
        } else {
            for (int i = 0; i < f->heads; i++) vals[i] = cg_i32(c, ir_head_kv(f, i));
        }
        char gname[600];
        snprintf(gname, sizeof gname, "%s.%s", symbol, G ? "group_heads" : "head_map");
        LLVMValueRef g = LLVMAddGlobal(c->mod, at, gname);
        LLVMSetInitializer(g, LLVMConstArray2(c->i32, vals, (uint64_t)n));
        LLVMSetGlobalConstant(g, 1);
        LLVMSetLinkage(g, LLVMPrivateLinkage);
        LLVMSetUnnamedAddr(g, 1);
        if (G) {
            kvh = cg_smin(c, cg_smax(c, h, cg_i64(c, 0)), cg_i64(c, f->kv_heads - 1));
            k->grouped = true;
            k->gsize = G;
            k->gtab = cg_gep(c, c->i32, g, mul(c, kvh, cg_i64(c, G)));
            k->gq0 = q0;
            k->gnq = cg_smax(c, LLVMBuildSub(b, q1, q0, ""), cg_i64(c, 1));
            h = cg_i64(c, 0); /* the bases below are at head 0 */
        } else {
            LLVMValueRef hc = cg_smin(c, cg_smax(c, h, cg_i64(c, 0)), cg_i64(c, f->heads - 1));
            kvh = LLVMBuildSExt(b, cg_load(c, c->i32, cg_gep(c, c->i32, g, hc), 4), c->i64, "kvh");
        }
    }

    LLVMValueRef q_len, kv_len, q_off, lsep, lsebase;
    cg_kv_args(k, a, bi, h, kvh, &q_len, &kv_len, &q_off, &lsep, &lsebase);
    k->kv_len = kv_len;

    /* scratch */
    k->mbt = LLVMIntTypeInContext(c->ctx, (unsigned)p->W);
    /* int8: the quantized rows after the scaled ones (cg_qi_off), then the rows' scales */
    k->Qs = cg_alloca(c, c->f32, p->compute == IR_COMPUTE_INT8 || p->qk_bf16dot ? 2 * cg_qi_off(p) + p->BQ + p->W : cg_qi_off(p), 64, "Qs");
    k->KT = k->KTring = cg_alloca(c, c->f32, p->NRING * ir_plan_kt_floats(p), 64, "KT");
    k->ACC = cg_alloca(c, c->f32, (int64_t)p->BQ * p->VDP, 64, "acc");
    k->M = cg_alloca(c, c->f32, p->BQ + p->W, 64, "m");
    k->L = cg_alloca(c, c->f32, (int64_t)(p->BQ + p->R) * p->W, 64, "l"); /* a vector per row */
    k->MB = cg_alloca(c, k->mbt, (int64_t)p->BQ * p->NT, 64, "mbits");
    k->RF = cg_alloca(c, c->i8, p->BQ + p->R, 64, "rowfull");
    k->anyfull = cg_alloca(c, c->i8, 1, 1, "anyfull");
    LLVMBuildMemSet(b, k->RF, LLVMConstInt(c->i8, 0, 0), cg_i64(c, p->BQ + p->R), 64); /* read, unused, in full blocks */
    LLVMValueRef err_slot = cg_alloca(c, c->i1, 1, 1, "err");
    LLVMValueRef dummy = cg_alloca(c, c->i64, 1, 8, "dummy");
    cg_store(c, cg_bool(c, false), err_slot, 1);
    cg_store(c, cg_i64(c, 0), dummy, 8);

    CgEnv *env = &k->env;
    env->f = f;
    env->args = a;
    env->h = h;
    env->b = bi;
    env->q_len = q_len;
    env->kv_len = kv_len;
    env->err_slot = err_slot;
    env->dummy = dummy;
    env->tag = -1;

    k->lsep = lsep;
    if (p->vpack != IR_VPACK_NEVER) {
        k->VS = k->VSring = cg_alloca(c, c->f32, (int64_t)p->NRING * p->BK * p->VDP, 64, "VS");
        k->vpack_on = p->vpack == IR_VPACK_ALWAYS
                          ? cg_bool(c, true)
                          : LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildSRem(b, mul(c, k->vs2, cg_i64(c, 4)), cg_i64(c, p->vpack_sets), ""),
                                          cg_i64(c, 0), "vpack");
    }
    k->mask = f->prune.enabled ? f->prune.mask : f->mask;
    k->qstep = k->kstep = 1;
    k->cmod = k->cw = 1;
    k->qpos0 = q_off;
    k->kpos0 = cg_i64(c, 0);
    k->nkeys = kv_len;
    k->lsebase = lsebase;
    k->ls2 = cg_i64(c, 1);
    LLVMValueRef all = NULL;
    if (G) {
        /* kvh -1 (decode of K/V heads stored side by side: pages, or [batch, kv_len, kv_heads,
         * dim] caches): the rows of every K/V head at once, each key block's heads in turn, so a
         * key's rows of all heads are read together. A call whose
         * heads' rows do not fill whole passes of the few-rows path returns -1 at once (the
         * runtime then calls head by head); one that meets a block the few-rows path cannot
         * take (a partial block, the kv tail, a sub-block across pages) stops there, writes
         * its o and lse, and returns -(key + 2) for the runtime to go on from that key */
        all = LLVMBuildICmp(b, LLVMIntSLT, LLVMGetParam(c->fn, 2), cg_i64(c, 0), "kvall");
        int dr = p->decode_rows > 1 ? p->decode_rows : 1;
        LLVMValueRef rows = mul(c, k->gnq, cg_i64(c, G));
        LLVMValueRef fits = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildSRem(b, rows, cg_i64(c, dr), ""), cg_i64(c, 0), ""),
                                         LLVMBuildICmp(b, LLVMIntSLE, rows, cg_i64(c, p->few_rows), ""), "");
        LLVMBasicBlockRef bno = cg_block(c, "kvall_no"), bgo = cg_block(c, "kvall_go");
        LLVMBuildCondBr(b, LLVMBuildAnd(b, all, LLVMBuildNot(b, fits, ""), ""), bno, bgo);
        LLVMPositionBuilderAtEnd(b, bno);
        LLVMBuildRet(b, cg_i32(c, -1));
        LLVMPositionBuilderAtEnd(b, bgo);
        k->kvall = LLVMBuildZExt(b, all, c->i64, "");
        k->stop = cg_alloca(c, c->i64, 1, 8, "stop");
        cg_store(c, cg_i64(c, -1), k->stop, 8);
    }
    if (G) {
        k->qpos0 = add(c, q_off, q0);
        LLVMValueRef nq = cg_smax(c, LLVMBuildSub(b, q1, q0, ""), cg_i64(c, 0));
        LLVMValueRef units = all ? LLVMBuildSelect(b, all, cg_i64(c, f->kv_heads), cg_i64(c, 1), "") : cg_i64(c, 1);
        cg_emit_run(k, cg_i64(c, 0), mul(c, mul(c, nq, cg_i64(c, G)), units));
    } else if (p->kind == IR_T_BAND) {
        cg_emit_band_task(k, q0, q1, q_off, p->band_w, p->band_hi);
    } else if (p->kind == IR_T_ROWS) {
        cg_emit_run(k, q0, q1);
    } else if (p->kind == IR_T_KEY_RUNS) {
        cg_emit_key_runs(k, q0, q1);
    } else {
        cg_emit_class_runs(k, q0, q1, q_off);
    }
    LLVMValueRef e = cg_load(c, c->i1, err_slot, 1);
    LLVMValueRef ret = LLVMBuildZExt(b, e, c->i32, "");
    if (k->stop) { /* stopped before key s (kvh -1): -(s + 2); callers keep kv_len < 2^31 - 2 */
        LLVMValueRef s = cg_load(c, c->i64, k->stop, 8);
        LLVMValueRef code = LLVMBuildTrunc(b, LLVMBuildSub(b, cg_i64(c, -2), s, ""), c->i32, "");
        ret = LLVMBuildSelect(b, LLVMBuildOr(b, e, LLVMBuildICmp(b, LLVMIntSLT, s, cg_i64(c, 0), ""), ""), ret, code, "");
    }
    LLVMBuildRet(b, ret);
    /* the runtime trusts the plan's stack (attn_rt_desc.stack): a kernel must stay within it */
    int64_t used = c->stack + k->piece_stack, bound = p->stack;
    if (!k->failed && used + IR_STACK_SPILLS > bound) {
        sb_printf(err, "codegen: internal error: %s: allocas of %lld bytes exceed the stack bound %lld", f->name,
                  (long long)used, (long long)bound);
        return false;
    }
    return !k->failed;
}
