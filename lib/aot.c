/* aot.c — the C header of an AOT object: per attention block, the tile function the object
 * defines, its runtime descriptor, and typed entry points that call attn_rt_launch(). The
 * header needs only attn/attn_rt.h and libattnc_rt; it compiles as C17 or C++ without
 * warnings, whether or not its definitions are used. */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include "driver.h"

#ifndef ATTNC_VERSION
#define ATTNC_VERSION "unknown"
#endif

/* Names a generated parameter must not take: the fixed parameters and C/C++ keywords. */
static const char *const aot_reserved[] = {
    "q", "k", "v", "o", "batch", "q_len", "kv_len", "threads", "err",
    "q_nope", "q_rope", "c_kv", "k_rope", "w_uk", "w_uv",
    "alignas", "alignof", "and", "asm", "auto", "bool", "break", "case", "catch", "char",
    "class", "const", "constexpr", "continue", "default", "delete", "do", "double", "else",
    "enum", "explicit", "export", "extern", "false", "float", "for", "friend", "goto", "if",
    "inline", "int", "long", "mutable", "namespace", "new", "not", "nullptr", "operator", "or",
    "private", "protected", "public", "register", "restrict", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "template", "this", "throw", "true", "try",
    "typedef", "typeid", "typename", "union", "unsigned", "using", "virtual", "void",
    "volatile", "while", "xor", NULL};

/* The C name of an input's parameter: its own, or with a trailing '_' if that would clash. */
static const char *aot_param_name(Arena *a, const char *name) {
    for (const char *const *r = aot_reserved; *r; r++)
        if (strcmp(*r, name) == 0) return arena_printf(a, "%s_", name);
    return name;
}

static const char *aot_dtype_enum(attn_dtype t) {
    switch (t) {
    case ATTN_F32: return "ATTN_F32";
    case ATTN_F16: return "ATTN_F16";
    case ATTN_BF16: return "ATTN_BF16";
    case ATTN_I32: return "ATTN_I32";
    case ATTN_I8: return "ATTN_I8";
    }
    return "ATTN_F32";
}


static const char *aot_dim_enum(attn_dim_kind k) {
    switch (k) {
    case ATTN_DIM_CONST: return "ATTN_DIM_CONST";
    case ATTN_DIM_BATCH: return "ATTN_DIM_BATCH";
    case ATTN_DIM_HEADS: return "ATTN_DIM_HEADS";
    case ATTN_DIM_KV_HEADS: return "ATTN_DIM_KV_HEADS";
    case ATTN_DIM_Q_LEN: return "ATTN_DIM_Q_LEN";
    case ATTN_DIM_KV_LEN: return "ATTN_DIM_KV_LEN";
    case ATTN_DIM_PAGES: return "ATTN_DIM_PAGES";
    }
    return "ATTN_DIM_CONST";
}

/* The C expression of a resolved input dim inside the _simple entry point. */
static void aot_dim_expr(StrBuf *sb, const IrFunc *f, const IrInput *in, int d) {
    switch (in->dim_kind[d]) {
    case ATTN_DIM_BATCH: sb_puts(sb, "batch"); break;
    case ATTN_DIM_HEADS: sb_printf(sb, "%d", f->heads); break;
    case ATTN_DIM_KV_HEADS: sb_printf(sb, "%d", f->kv_heads); break;
    case ATTN_DIM_Q_LEN: sb_puts(sb, "q_len"); break;
    case ATTN_DIM_KV_LEN: sb_puts(sb, "kv_len"); break;
    case ATTN_DIM_PAGES: sb_puts(sb, "num_pages"); break;
    default: sb_printf(sb, "%lld", (long long)in->dim_value[d]); break;
    }
}

static void aot_input_decl(StrBuf *sb, const IrInput *in) {
    static const char *const dim_text[] = {"", "batch", "heads", "kv_heads", "q_len", "kv_len", "num_pages"};
    sb_printf(sb, "input %s %s", ir_dtype_name(in->dtype), in->name);
    if (in->rank == 0) return;
    sb_puts(sb, "[");
    for (int d = 0; d < in->rank; d++) {
        if (d) sb_puts(sb, ", ");
        if (in->dim_kind[d] == ATTN_DIM_CONST) sb_printf(sb, "%lld", (long long)in->dim_value[d]);
        else sb_puts(sb, dim_text[in->dim_kind[d]]);
    }
    sb_puts(sb, "]");
}

/* The block comment's lines declaring f's inputs. */
static void aot_input_comments(StrBuf *sb, const IrFunc *f) {
    for (int i = 0; i < f->ninputs; i++) {
        sb_puts(sb, " *   ");
        aot_input_decl(sb, &f->inputs[i]);
        sb_puts(sb, "\n");
    }
}

/* The tile function(s) of f, its inputs and its runtime descriptor attnc_<f->name>_desc. */
static void aot_desc(StrBuf *sb, const IrFunc *f) {
    const char *n = f->name;
    const char *tile = cg_tile_symbol(f->arena, f);
    if (!tile) tile = arena_printf(f->arena, "attnc_%s_tile", n);
    const IrPlan *pl = ir_plan(f, IR_ROLE_TILE);
    sb_printf(sb,
              "int32_t %s(const attn_rt_args *a, int64_t b, int64_t h, int64_t q0, int64_t q1);\n",
              tile);
    int G = ir_group_size(f);
    if (G)
        sb_printf(sb,
                  "/* rows [q0, q1) of the %d query heads of K/V head kvh together */\n"
                  "int32_t %s_group(const attn_rt_args *a, int64_t b, int64_t kvh, int64_t q0, int64_t q1);\n",
                  G, tile);
    /* the backward's functions and what the runtime needs with them */
    const IrPlan *gp = ir_plan(f, IR_ROLE_GRAD);
    if (gp && f->grad.nreads <= ATTN_RT_MAX_GRAD_READS) {
        sb_printf(sb,
                  "/* the backward's (attn_rt_launch_backward) */\n"
                  "int32_t %s_grad_bounds(const attn_rt_args *a, int64_t b, int64_t h, int64_t q, int64_t *k);\n"
                  "int32_t %s_grad_step(const attn_rt_args *a, int64_t b, int64_t h, int64_t q, int64_t k0, "
                  "float *fio, int64_t *iio);\n"
                  "int32_t %s_grad_keys(const attn_rt_args *a, int64_t b, int64_t h, int64_t q, const int64_t *k, "
                  "float *fio, int64_t *iio);\n",
                  tile, tile, tile);
        sb_printf(sb, "static const int attnc_%s_head_kv[%d] ATTNC_AOT_UNUSED = {", n, f->heads);
        for (int h = 0; h < f->heads; h++) sb_printf(sb, "%s%d", h ? ", " : "", ir_head_kv(f, h));
        sb_puts(sb, "};\n");
    } else {
        gp = NULL;
    }
    sb_puts(sb, "\n");

    if (f->ninputs > 0) {
        sb_printf(sb, "static const attn_rt_input_desc attnc_%s_inputs[%d] ATTNC_AOT_UNUSED = {\n",
                  n, f->ninputs);
        for (int i = 0; i < f->ninputs; i++) {
            const IrInput *in = &f->inputs[i];
            sb_printf(sb, "    {\"%s\", %s, %d, {", in->name, aot_dtype_enum(in->dtype), in->rank);
            for (int d = 0; d < ATTN_MAX_DIMS; d++)
                sb_printf(sb, "%s%s", d ? ", " : "",
                          aot_dim_enum(d < in->rank ? in->dim_kind[d] : ATTN_DIM_CONST));
            sb_puts(sb, "}, {");
            for (int d = 0; d < ATTN_MAX_DIMS; d++)
                sb_printf(sb, "%s%lld", d ? ", " : "",
                          d < in->rank && in->dim_kind[d] == ATTN_DIM_CONST
                              ? (long long)in->dim_value[d] : 0LL);
            sb_printf(sb, "}, %d},\n", in->summarize ? 1 : 0);
        }
        sb_puts(sb, "};\n");
    }
    sb_printf(sb, "static const attn_rt_desc attnc_%s_desc ATTNC_AOT_UNUSED = {\n", n);
    sb_printf(sb, "    \"%s\", %d, %d, %d, %d, %s, %d, %d, %s, %s, %s%s, %d, %d, %d, %lld,\n", n, f->heads,
              f->kv_heads, f->qk_dim, f->v_dim, aot_dtype_enum(f->dtype), pl->block_q, f->ninputs,
              f->ninputs > 0 ? arena_printf(f->arena, "attnc_%s_inputs", n) : "NULL", tile,
              G ? tile : "NULL", G ? "_group" : "", G, pl->min_block_q, pl->cut_below, (long long)pl->stack);
    if (gp) {
        sb_printf(sb, "    %s_grad_bounds, %s_grad_step, %d, (float)%.17g, attnc_%s_head_kv, %d, {", tile, tile, gp->W,
                  f->scale, n, f->grad.nreads);
        for (int r = 0; r < f->grad.nreads; r++) sb_printf(sb, "%s%d", r ? ", " : "", f->grad.reads[r].load->input);
        sb_puts(sb, f->grad.nreads ? "}," : "0},");
    } else {
        sb_puts(sb, "    NULL, NULL, 0, 0.0f, NULL, 0, {0},");
    }
    sb_printf(sb, " %s, %d,", aot_dtype_enum(f->kv_dtype), f->page_size);
    /* the backward's exact masks and residue runs */
    int ex = gp ? drv_grad_exact(f) : 0, runs = gp && f->prune.enabled && f->prune.runs.mod >= 2 && f->prune.runs.mod <= INT32_MAX;
    sb_printf(sb, " %d, %d, %d, %d, %d, ", ex, runs ? (int)f->prune.runs.mod : 0, runs ? (int)f->prune.runs.base : 0,
              runs ? (int)f->prune.runs.width : 0, runs ? (int)f->prune.runs.with_q : 0);
    int all = G ? 1 : 0; /* the group entry takes kvh -1 */
    if (gp)
        sb_printf(sb, "%s_grad_keys, %d, %d,\n};\n\n", tile, f->kv_f32 ? 1 : 0, all);
    else
        sb_printf(sb, "NULL, %d, %d,\n};\n\n", f->kv_f32 ? 1 : 0, all);
}

/* The _simple entry point's parameters after the sizes: one per input, then threads, err. */
static void aot_params(StrBuf *sb, const IrFunc *f) {
    for (int i = 0; i < f->ninputs; i++) {
        const IrInput *in = &f->inputs[i];
        const char *ty = in->dtype == ATTN_I32 ? "int32_t" : "float";
        const char *pn = aot_param_name(f->arena, in->name);
        if (in->rank == 0) sb_printf(sb, " %s %s,", ty, pn);
        else sb_printf(sb, " const %s *%s,", ty, pn);
    }
    sb_puts(sb, " int threads,\n    attn_error *err) {\n");
}

/* The _simple entry point's inputs, as attnc_call.inputs. */
static void aot_inputs(StrBuf *sb, const IrFunc *f) {
    if (f->ninputs == 0) return;
    sb_printf(sb, "    attn_input attnc_in[%d];\n    memset(attnc_in, 0, sizeof attnc_in);\n", f->ninputs);
    for (int i = 0; i < f->ninputs; i++) {
        const IrInput *in = &f->inputs[i];
        const char *pn = aot_param_name(f->arena, in->name);
        sb_printf(sb, "    attnc_in[%d].name = \"%s\";\n", i, in->name);
        sb_printf(sb, "    attnc_aot_tensor(&attnc_in[%d].t, %s%s, %d", i, in->rank == 0 ? "&" : "", pn, in->rank);
        for (int d = 0; d < ATTN_MAX_DIMS; d++) {
            sb_puts(sb, ", ");
            if (d < in->rank) aot_dim_expr(sb, f, in, d);
            else sb_puts(sb, "0");
        }
        sb_puts(sb, ");\n");
    }
    sb_printf(sb, "    attnc_call.inputs = attnc_in;\n    attnc_call.ninputs = %d;\n", f->ninputs);
}

/* An MLA block: its variants and entry points that take the latent tensors. */
static void aot_block_mla(StrBuf *sb, const IrFunc *f) {
    const char *n = f->name;
    const IrMla *m = &f->mla;
    const IrFunc *up = drv_absorb_forced(f) ? NULL : f, *ab = ir_variant(f, IR_VAR_ABSORBED, 0);
    attn_dtype kvt = ir_mla_kv_dtype(m);
    const char *elem = m->dtype == ATTN_F32 ? "float" : "uint16_t", *kelem = kvt == ATTN_F32 ? "float" : "uint16_t";
    sb_printf(sb, "/* attention %s: MLA, heads %d, kv_rank %d, rope_dim %d, nope_dim %d, v_dim %d, dtype %s, "
              "c_kv and k_rope %s%s\n", n, f->heads, m->kv_rank, m->rope_dim, m->nope_dim, m->v_dim,
              ir_dtype_name(m->dtype), ir_dtype_name(kvt),
              m->dtype == ATTN_F32 && kvt == ATTN_F32 ? "" : " (16-bit elements are raw bits)");
    sb_printf(sb, " *   q_nope [batch, %d, q_len, %d]   q_rope [batch, %d, q_len, %d]\n", f->heads, m->nope_dim,
              f->heads, m->rope_dim);
    sb_printf(sb, " *   c_kv [batch, kv_len, %d]   k_rope [batch, kv_len, %d]\n", m->kv_rank, m->rope_dim);
    sb_printf(sb, " *   w_uk [%d, %d, %d]   w_uv [%d, %d, %d]   o [batch, %d, q_len, %d]\n", f->heads, m->kv_rank,
              m->nope_dim, f->heads, m->kv_rank, m->v_dim, f->heads, m->v_dim);
    aot_input_comments(sb, f);
    sb_printf(sb, " * Variants: %s%s%s; attn_rt_launch_mla picks one per call (absorb = auto: its cost model).\n */\n",
              up ? "up-projected" : "", up && ab ? " and " : "", ab ? "absorbed" : "");
    if (up) aot_desc(sb, up);
    if (ab) aot_desc(sb, ab);
    sb_printf(sb, "static const attn_rt_mla_desc attnc_%s_mla ATTNC_AOT_UNUSED = {\n    %d, %d, %d, %d, %s, %s, %s, %s, %d,\n};\n\n",
              n, m->kv_rank, m->rope_dim, m->nope_dim, m->v_dim,
              up ? arena_printf(f->arena, "&attnc_%s_desc", up->name) : "NULL",
              ab ? arena_printf(f->arena, "&attnc_%s_desc", ab->name) : "NULL", aot_dtype_enum(m->dtype),
              aot_dtype_enum(m->kv_dtype), m->kv_f32 ? 1 : 0);
    sb_printf(sb,
              "/* Runs '%s' on any strided tensors (see attn_mla_call); threads start per call. */\n"
              "static inline ATTNC_AOT_UNUSED attn_status attnc_%s(const attn_mla_call *call, attn_error *err) {\n"
              "    return attn_rt_launch_mla(&attnc_%s_mla, call, NULL, NULL, err);\n}\n\n",
              n, n, n);
    sb_printf(sb,
              "/* Runs '%s' on contiguous row-major tensors; q_offset = kv_len - q_len. threads 0: all cores. */\n"
              "static inline ATTNC_AOT_UNUSED attn_status attnc_%s_simple(const %s *q_nope, const %s *q_rope,\n"
              "    const %s *c_kv, const %s *k_rope, const %s *w_uk, const %s *w_uv, %s *o,\n"
              "    int64_t batch, int64_t q_len, int64_t kv_len,",
              n, n, elem, elem, kelem, kelem, elem, elem, elem);
    aot_params(sb, f);
    sb_puts(sb, "    attn_mla_call attnc_call;\n    memset(&attnc_call, 0, sizeof attnc_call);\n");
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.q_nope, q_nope, 4, batch, %d, q_len, %d);\n", f->heads, m->nope_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.q_rope, q_rope, 4, batch, %d, q_len, %d);\n", f->heads, m->rope_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.c_kv, c_kv, 3, batch, kv_len, %d, 0);\n", m->kv_rank);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.k_rope, k_rope, 3, batch, kv_len, %d, 0);\n", m->rope_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.w_uk, w_uk, 3, %d, %d, %d, 0);\n", f->heads, m->kv_rank, m->nope_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.w_uv, w_uv, 3, %d, %d, %d, 0);\n", f->heads, m->kv_rank, m->v_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.o, o, 4, batch, %d, q_len, %d);\n", f->heads, m->v_dim);
    sb_puts(sb, "    attnc_call.threads = threads;\n");
    aot_inputs(sb, f);
    sb_printf(sb, "    return attn_rt_launch_mla(&attnc_%s_mla, &attnc_call, NULL, NULL, err);\n}\n\n", n);
}

static void aot_paged(StrBuf *sb, const IrFunc *f, const IrFunc *const *ds, int nd);

static void aot_block(StrBuf *sb, const IrFunc *f) {
    const char *n = f->name;
    const char *elem = f->dtype == ATTN_F32 ? "float" : "uint16_t";
    attn_dtype kvt = ir_kv_dtype(f);
    const char *kv_elem = kvt == ATTN_F32 ? "float" : kvt == ATTN_I8 ? "int8_t" : "uint16_t";

    sb_printf(sb, "/* attention %s: heads %d, kv_heads %d, head_dim %d, v_dim %d, dtype %s", n,
              f->heads, f->kv_heads, f->qk_dim, f->v_dim, ir_dtype_name(f->dtype));
    if (kvt != f->dtype) sb_printf(sb, ", kv_dtype %s (k and v)", ir_dtype_name(kvt));
    sb_puts(sb, "\n");
    sb_printf(sb, " *   q [batch, %d, q_len, %d]   k [batch, %d, kv_len, %d]\n", f->heads,
              f->qk_dim, f->kv_heads, f->qk_dim);
    sb_printf(sb, " *   v [batch, %d, kv_len, %d]   o [batch, %d, q_len, %d]\n", f->kv_heads,
              f->v_dim, f->heads, f->v_dim);
    aot_input_comments(sb, f);
    int nd = ir_variant_count(f, IR_VAR_DOMAIN);
    const IrFunc *perm = ir_variant(f, IR_VAR_PERMUTED, 0);
    if (nd)
        sb_printf(sb, " * The mask runs as %d disjoint key domains, one tile function each, merged\n"
                      " * into one softmax by attn_rt_launch_domains.\n",
                  nd);
    if (perm)
        sb_printf(sb, " * A permutation mask: attn_rt_launch_permuted runs %s (the mask made causal) on\n"
                      " * rows reordered by rank, or the block as written when the call does not allow it.\n",
                  perm->name);
    sb_puts(sb, " */\n");
    /* how the entry points launch: one descriptor, the key domains', or the permuted variant
     * with the block as written to fall back on */
    const IrFunc *ds[IR_MAX_DOMAINS] = {f};
    for (int i = 0; i < nd; i++) ds[i] = ir_variant(f, IR_VAR_DOMAIN, i);
    if (!nd) ds[nd++] = f;
    for (int i = 0; i < nd; i++) aot_desc(sb, ds[i]);
    const char *launch = arena_printf(f->arena, "attn_rt_launch(&attnc_%s_desc, ", n);
    if (ds[0] != f || perm) {
        sb_printf(sb, "static const attn_rt_desc *const attnc_%s_domains[%d] ATTNC_AOT_UNUSED = {", n, nd);
        for (int i = 0; i < nd; i++) sb_printf(sb, "%s&attnc_%s_desc", i ? ", " : "", ds[i]->name);
        sb_puts(sb, "};\n\n");
        launch = arena_printf(f->arena, "attn_rt_launch_domains(attnc_%s_domains, %d, ", n, nd);
    }
    if (perm) {
        aot_desc(sb, perm);
        launch = arena_printf(f->arena, "attn_rt_launch_permuted(&attnc_%s_desc, %d, attnc_%s_domains, %d, ",
                              perm->name, f->perm_input, n, nd);
    }
    if (f->page_size) {
        aot_paged(sb, f, ds, nd);
        return;
    }

    sb_printf(sb,
              "/* Runs '%s' on any strided tensors (see attn_call); threads start per call. */\n"
              "static inline ATTNC_AOT_UNUSED attn_status attnc_%s(const attn_call *call, attn_error *err) {\n"
              "    return %scall, NULL, err);\n}\n\n",
              n, n, launch);

    /* The convenience entry point: contiguous tensors, the inputs as typed parameters. */
    sb_printf(sb,
              "/* Runs '%s' on contiguous row-major tensors%s; q_offset = kv_len - q_len.\n"
              " * threads 0: all cores. */\n",
              n, f->dtype == ATTN_F32 && kvt == ATTN_F32 ? "" : " (16-bit elements are raw bits)");
    sb_printf(sb,
              "static inline ATTNC_AOT_UNUSED attn_status attnc_%s_simple(const %s *q, const %s *k, const %s *v, "
              "%s *o,\n    int64_t batch, int64_t q_len, int64_t kv_len,",
              n, elem, kv_elem, kv_elem, elem);
    aot_params(sb, f);
    sb_puts(sb, "    attn_call attnc_call;\n    memset(&attnc_call, 0, sizeof attnc_call);\n");
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.q, q, 4, batch, %d, q_len, %d);\n", f->heads,
              f->qk_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.k, k, 4, batch, %d, kv_len, %d);\n",
              f->kv_heads, f->qk_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.v, v, 4, batch, %d, kv_len, %d);\n",
              f->kv_heads, f->v_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.o, o, 4, batch, %d, q_len, %d);\n", f->heads,
              f->v_dim);
    sb_puts(sb, "    attnc_call.threads = threads;\n");
    aot_inputs(sb, f);
    sb_printf(sb, "    return %s&attnc_call, NULL, err);\n}\n\n", launch);
}

/* A paged block's entry points: the ragged batch of attn_paged_call. */
static void aot_paged(StrBuf *sb, const IrFunc *f, const IrFunc *const *ds, int nd) {
    const char *n = f->name;
    if (ds[0] == f) /* one descriptor: the array attn_rt_launch_paged takes */
        sb_printf(sb, "static const attn_rt_desc *const attnc_%s_domains[1] ATTNC_AOT_UNUSED = {&attnc_%s_desc};\n\n", n, n);
    sb_printf(sb,
              "/* Runs paged '%s' (pages of %d keys) over a ragged batch: q [total_q, %d, %d], k_pages\n"
              " * [num_pages, %d, %d, %d], v_pages [num_pages, %d, %d, %d], page_table [batch, max_pages],\n"
              " * kv_lens [batch], q_starts [batch + 1] (int32), o [total_q, %d, %d] (see attn_paged_call);\n"
              " * threads start per call. */\n"
              "static inline ATTNC_AOT_UNUSED attn_status attnc_%s(const attn_paged_call *call, attn_error *err) {\n"
              "    return attn_rt_launch_paged(attnc_%s_domains, %d, call, NULL, err);\n}\n\n",
              n, f->page_size, f->heads, f->qk_dim, f->page_size, f->kv_heads, f->qk_dim, f->page_size, f->kv_heads,
              f->v_dim, f->heads, f->v_dim, n, n, nd);
    const char *elem = f->dtype == ATTN_F32 ? "float" : "uint16_t";
    attn_dtype kvt = ir_kv_dtype(f);
    const char *kv_elem = kvt == ATTN_F32 ? "float" : kvt == ATTN_I8 ? "int8_t" : "uint16_t";
    sb_printf(sb, "/* Runs paged '%s' on contiguous row-major tensors%s. threads 0: all cores. */\n", n,
              f->dtype == ATTN_F32 && kvt == ATTN_F32 ? "" : " (16-bit elements are raw bits)");
    sb_printf(sb,
              "static inline ATTNC_AOT_UNUSED attn_status attnc_%s_simple(const %s *q, const %s *k_pages, "
              "const %s *v_pages,\n    const int32_t *page_table, const int32_t *kv_lens, const int32_t *q_starts, "
              "%s *o, int64_t batch,\n    int64_t total_q, int64_t num_pages, int64_t max_pages,",
              n, elem, kv_elem, kv_elem, elem);
    aot_params(sb, f);
    sb_puts(sb, "    attn_paged_call attnc_call;\n    memset(&attnc_call, 0, sizeof attnc_call);\n");
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.q, q, 3, total_q, %d, %d, 0);\n", f->heads, f->qk_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.k_pages, k_pages, 4, num_pages, %d, %d, %d);\n", f->page_size,
              f->kv_heads, f->qk_dim);
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.v_pages, v_pages, 4, num_pages, %d, %d, %d);\n", f->page_size,
              f->kv_heads, f->v_dim);
    sb_puts(sb, "    attnc_aot_tensor(&attnc_call.page_table, page_table, 2, batch, max_pages, 0, 0);\n"
                "    attnc_aot_tensor(&attnc_call.kv_lens, kv_lens, 1, batch, 0, 0, 0);\n"
                "    attnc_aot_tensor(&attnc_call.q_starts, q_starts, 1, batch + 1, 0, 0, 0);\n");
    sb_printf(sb, "    attnc_aot_tensor(&attnc_call.o, o, 3, total_q, %d, %d, 0);\n", f->heads, f->v_dim);
    sb_puts(sb, "    attnc_call.threads = threads;\n");
    aot_inputs(sb, f);
    sb_printf(sb, "    return attn_rt_launch_paged(attnc_%s_domains, %d, &attnc_call, NULL, err);\n}\n\n", n, nd);
}

char *drv_aot_header(IrFunc **funcs, int n, const char *guard_name) {
    StrBuf sb, guard;
    sb_init(&sb);
    sb_init(&guard);
    for (const char *p = guard_name && *guard_name ? guard_name : "ATTNC_KERNELS_H"; *p; p++)
        sb_printf(&guard, "%c", isalnum((unsigned char)*p) ? toupper((unsigned char)*p) : '_');
    if (isdigit((unsigned char)sb_str(&guard)[0])) {
        StrBuf g2;
        sb_init(&g2);
        sb_printf(&g2, "ATTNC_%s", sb_str(&guard));
        sb_free(&guard);
        guard = g2;
    }
    const char *g = sb_str(&guard);
    sb_printf(&sb, "/* Generated by attnc %s; do not edit. Link the object it describes with\n"
                   " * libattnc_rt (and -lpthread -lm). */\n",
              ATTNC_VERSION);
    sb_printf(&sb, "#ifndef %s\n#define %s\n\n", g, g);
    sb_puts(&sb, "#include <stdint.h>\n#include <string.h>\n\n#include \"attn/attn_rt.h\"\n\n");
    sb_puts(&sb, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    /* Shared by every generated header: defined once per translation unit. */
    sb_puts(&sb,
            "#ifndef ATTNC_AOT_HELPERS\n#define ATTNC_AOT_HELPERS\n"
            "#if defined(__GNUC__) || defined(__clang__)\n"
            "#define ATTNC_AOT_UNUSED __attribute__((unused))\n"
            "#else\n#define ATTNC_AOT_UNUSED\n#endif\n"
            "static inline ATTNC_AOT_UNUSED void attnc_aot_tensor(attn_tensor *t, const void *data, int ndim, "
            "int64_t d0,\n    int64_t d1, int64_t d2, int64_t d3) "
            "{\n"
            "    t->data = (void *)data; /* inputs are only read */\n"
            "    t->ndim = ndim;\n"
            "    t->shape[0] = d0, t->shape[1] = d1, t->shape[2] = d2, t->shape[3] = d3;\n"
            "}\n#endif\n\n");
    for (int i = 0; i < n; i++) {
        if (funcs[i]->mla.present) aot_block_mla(&sb, funcs[i]);
        else aot_block(&sb, funcs[i]);
    }
    sb_puts(&sb, "#ifdef __cplusplus\n}\n#endif\n\n");
    sb_printf(&sb, "#endif /* %s */\n", g);
    sb_free(&guard);
    if (sb.failed) {
        sb_free(&sb);
        return NULL;
    }
    return sb_take(&sb);
}
