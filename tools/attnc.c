/* attnc.c — the command line of SPEC.md §4: check, dump, build, run, bench, mask.
 *
 * Exit status: 0 success, 1 an error in the input (spec diagnostics, including a bad -D; a bad
 * .npy; shapes that do not fit; a failed compile), 2 bad usage (unknown command or option, a
 * missing or malformed value, an unknown or ambiguous --kernel). See docs/cli.md. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frontend/fe.h" /* fe_prelude_text */
#include "lib/driver.h"
#include "runtime/rt_internal.h" /* rt_check_call */
#include "tools/npy.h"

#ifndef ATTNC_VERSION
#define ATTNC_VERSION "unknown"
#endif

#define EXIT_INPUT 1
#define EXIT_USAGE 2
#define CLI_MAX_LEN ((int64_t)1 << 40) /* sizes and offsets beyond are refused */

typedef enum Cmd { CMD_CHECK, CMD_DUMP, CMD_BUILD, CMD_RUN, CMD_BENCH, CMD_MASK, CMD_COUNT } Cmd;

static const struct {
    const char *name;  /* as typed */
    const char *usage; /* the synopsis */
    const char *what;  /* one line */
} cli_cmds[CMD_COUNT] = {
    {"check", "attnc check FILE", "parse and check a spec; diagnostics only"},
    {"dump", "attnc dump FILE [--after PASS] [--llvm]", "print the IR after a pass, or the LLVM IR"},
    {"build", "attnc build FILE -o OUT [--emit obj|asm|llvm] [--header H] [--target TRIPLE] [--cpu CPU]",
     "compile ahead of time: an object (or asm, LLVM IR) and a C header"},
    {"run", "attnc run FILE --in NAME=X.npy ... --out NAME=Y.npy ... [--q-offset N]",
     "run a kernel on .npy tensors"},
    {"bench", "attnc bench FILE [--batch B] [--q-len N] [--kv-len N] [--kv-len-min M] [--q-offset N] [--reps R] [--in NAME=X.npy] [--json]",
     "time a kernel on random tensors"},
    {"mask", "attnc mask FILE --q-len N --kv-len N [--svg OUT.svg] [--q-offset N] [--in NAME=X.npy]",
     "draw the mask of batch row 0, head 0"},
};

/* Options: which commands take them (a bit per Cmd), whether they take a value. */
#define ALL ((1u << CMD_COUNT) - 1)
#define ON(c) (1u << (c))

typedef enum OptId {
    OPT_KERNEL, OPT_DEFINE, OPT_THREADS, OPT_OPT, OPT_NO_PRUNE, OPT_ABSORB, OPT_AFTER, OPT_LLVM,
    OPT_OUT_FILE, OPT_EMIT, OPT_HEADER, OPT_TARGET, OPT_CPU, OPT_IN, OPT_OUT, OPT_Q_OFFSET,
    OPT_BATCH, OPT_Q_LEN, OPT_KV_LEN, OPT_KV_LEN_MIN, OPT_JSON, OPT_REPS, OPT_SVG, OPT_GRAD, OPT_RING, OPT_SHARD,
    OPT_STATS, OPT_HELP
} OptId;

static const struct {
    const char *name; /* long form, or "-o" */
    OptId id;
    bool value;       /* takes a value */
    unsigned cmds;    /* commands accepting it */
    const char *help; /* for `attnc help CMD` */
} cli_opts[] = {
    {"--kernel", OPT_KERNEL, true, ALL, "NAME   the attention block (when the file has several)"},
    {"-D", OPT_DEFINE, true, ALL, "NAME=VALUE   override a param (also -DNAME=VALUE)"},
    {"--threads", OPT_THREADS, true, ALL, "T   threads of a run, 0..4096 (default 0: all cores), and the most a compile uses"},
    {"-O", OPT_OPT, false, ALL, "0..3   optimization level (-O0 .. -O3, default -O3)"},
    {"-fno-prune", OPT_NO_PRUNE, false, ALL, "   compute every tile, masking per element"},
    {"--absorb", OPT_ABSORB, true, ALL, "on|off   MLA weight absorption override"},
    {"--after", OPT_AFTER, true, ON(CMD_DUMP), "PASS   stop after this pass ('parse': none)"},
    {"--llvm", OPT_LLVM, false, ON(CMD_DUMP), "   print the LLVM IR instead"},
    {"-o", OPT_OUT_FILE, true, ON(CMD_BUILD), "OUT   the output file"},
    {"--emit", OPT_EMIT, true, ON(CMD_BUILD), "obj|asm|llvm   what to write (default obj)"},
    {"--header", OPT_HEADER, true, ON(CMD_BUILD), "H   also write a C header with entry points"},
    {"--target", OPT_TARGET, true, ON(CMD_BUILD) | ON(CMD_DUMP), "TRIPLE   target (default: host)"},
    {"--cpu", OPT_CPU, true, ON(CMD_BUILD) | ON(CMD_DUMP) | ON(CMD_RUN) | ON(CMD_BENCH),
     "CPU   target CPU (default: host)"},
    {"--in", OPT_IN, true, ON(CMD_RUN) | ON(CMD_BENCH) | ON(CMD_MASK),
     "NAME=X.npy   a tensor (q, k, v) or a runtime input"},
    {"--out", OPT_OUT, true, ON(CMD_RUN), "NAME=Y.npy   an output (o, lse)"},
    {"--q-offset", OPT_Q_OFFSET, true, ON(CMD_RUN) | ON(CMD_BENCH) | ON(CMD_MASK),
     "N   position of query row 0 (default kv_len - q_len)"},
    {"--batch", OPT_BATCH, true, ON(CMD_BENCH), "B   batch size (default 1)"},
    {"--q-len", OPT_Q_LEN, true, ON(CMD_BENCH) | ON(CMD_MASK), "N   query rows (bench default 1024)"},
    {"--kv-len", OPT_KV_LEN, true, ON(CMD_BENCH) | ON(CMD_MASK), "N   keys (bench default 1024)"},
    {"--kv-len-min", OPT_KV_LEN_MIN, true, ON(CMD_BENCH),
     "M   paged kernels: each sequence's length drawn uniformly in [M, kv-len] (default kv-len)"},
    {"--json", OPT_JSON, false, ON(CMD_BENCH), "   one JSON object on the last line"},
    {"--reps", OPT_REPS, true, ON(CMD_BENCH), "R   timed runs (default: ~1 s worth, at least 3)"},
    {"--svg", OPT_SVG, true, ON(CMD_MASK), "OUT.svg   also draw the mask as SVG"},
    {"--grad", OPT_GRAD, false, ON(CMD_RUN) | ON(CMD_BENCH),
     "   the backward: gradients dq, dk, dv, d<input> from --in do=X.npy (bench: time it)"},
    {"--ring", OPT_RING, false, ON(CMD_RUN) | ON(CMD_BENCH),
     "   under mpirun: ring attention, the sequence sharded across the ranks (docs/ring.md)"},
    {"--shard", OPT_SHARD, true, ON(CMD_RUN) | ON(CMD_BENCH),
     "contiguous|zigzag   how --ring shards the sequence (default contiguous)"},
    {"--stats", OPT_STATS, false, ON(CMD_RUN), "   with --ring: per rank, the bytes sent and the pairs computed"},
    {"--help", OPT_HELP, false, ALL, "   this help"},
};
#define CLI_NOPTS ((int)(sizeof cli_opts / sizeof cli_opts[0]))

/* A NAME=PATH argument of --in / --out. */
typedef struct Binding {
    const char *name; /* points into `arg` copy */
    const char *path;
} Binding;

typedef struct Cli {
    Cmd cmd;
    const char *file;          /* the spec */
    attn_options opts;         /* kernel, defines, threads, opt level, no_prune, cpu */
    const char **defines;      /* NAME=VALUE strings (into argv) */
    int ndefines;
    const char *after;         /* dump --after */
    bool llvm;                 /* dump --llvm */
    const char *out_file;      /* build -o */
    attn_emit emit;            /* build --emit */
    const char *header;        /* build --header */
    const char *target;        /* --target */
    Binding *ins, *outs;       /* --in, --out */
    int nins, nouts;
    char **owned;              /* strings to free: split NAME=PATH copies */
    int nowned;
    bool has_q_offset;
    int64_t q_offset;
    int64_t batch, q_len, kv_len; /* 0: not given */
    int64_t kv_len_min;        /* bench of a paged kernel: 0 (kv_len) or the shortest sequence */
    bool json;
    int reps;                  /* 0: automatic */
    const char *svg;
    bool grad;                 /* run/bench --grad */
    bool ring;                 /* run/bench --ring */
    int shard;                 /* --shard: 0 contiguous, 1 zigzag; -1 not given */
    bool stats;                /* run --stats */
} Cli;

// messages

static int cli_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "attnc: KIND: message" on stderr, the one shape of every message the CLI prints itself. */
static void cli_vmsg(const char *kind, const char *fmt, va_list ap) {
    fprintf(stderr, "attnc: %s: ", kind);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static int cli_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    cli_vmsg("error", fmt, ap);
    va_end(ap);
    return code;
}

static void cli_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void cli_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    cli_vmsg("note", fmt, ap);
    va_end(ap);
}

/* Bad usage: the reason, the command's synopsis and where to read more; returns 2. */
static int cli_usage(Cmd cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cli_usage(Cmd cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    cli_vmsg("error", fmt, ap);
    va_end(ap);
    if (cmd < CMD_COUNT)
        fprintf(stderr, "usage: %s\n(see 'attnc help %s')\n", cli_cmds[cmd].usage,
                cli_cmds[cmd].name);
    else
        fputs("usage: attnc COMMAND FILE [OPTIONS]  (see 'attnc --help')\n", stderr);
    return EXIT_USAGE;
}

/* The exit status of a library error: 2 for bad arguments, 1 for everything else. */
static int cli_status_exit(attn_status s) { return s == ATTN_ERR_ARG ? EXIT_USAGE : EXIT_INPUT; }

/* An error of the library, with the command line's way to resolve a choice of block. */
static int cli_select_error(const Cli *c, const attn_error *err) {
    int rc = cli_error(cli_status_exit(err->code), "%s", err->message);
    if (!c->opts.kernel && strstr(err->message, "several attention blocks"))
        cli_note("pick one with --kernel NAME");
    return rc;
}

/* `attnc help TOPIC`: what the documentation says (docs/language.md, docs/prelude.md,
 * docs/mla.md, docs/packaging.md; tests/test_docs.py checks they agree). */
static const struct {
    const char *name, *what, *text;
} cli_topics[] = {
    {"tensors", "the tensors of a call and their shapes",
     "q    [batch, heads, q_len, head_dim]\n"
     "k    [batch, kv_heads, kv_len, head_dim]\n"
     "v    [batch, kv_heads, kv_len, v_dim]\n"
     "o    [batch, heads, q_len, v_dim]   (out)\n"
     "lse  [batch, heads, q_len]          (out, optional, float32)\n"
     "Runtime inputs have their declared shape: batch, heads, kv_heads, q_len and kv_len take the\n"
     "call's sizes, seq is kv_len. run reads float32 (or float16) tensors and int32/float32 inputs\n"
     "from .npy files in C order, and writes o and lse as float32. MLA blocks: 'attnc help mla'.\n"},
    {"positions", "where queries and keys sit; rows that see no key",
     "Keys sit at positions 0 .. kv_len-1, queries at q_offset .. q_offset+q_len-1.\n"
     "q_offset defaults to kv_len - q_len: the queries are the last positions (--q-offset N moves\n"
     "them; any integer in [-2^40, 2^40]). A query row that sees no key gets o = 0 and lse = -inf.\n"
     "kv_len = 0 is valid (every row sees no key); q_len = 0 or batch = 0 is valid and does nothing.\n"},
    {"prelude", "the built-in masks (drawn in docs/prelude.md)", NULL},
    {"mla", "the tensors of an mla { } block",
     "q_nope [batch, heads, q_len, nope_dim]\n"
     "q_rope [batch, heads, q_len, rope_dim]\n"
     "c_kv   [batch, kv_len, kv_rank]\n"
     "k_rope [batch, kv_len, rope_dim]\n"
     "w_uk   [heads, kv_rank, nope_dim]\n"
     "w_uv   [heads, kv_rank, v_dim]\n"
     "o      [batch, heads, q_len, v_dim]   (out)\n"
     "lse    [batch, heads, q_len]          (out, optional: the log-sum-exp of each row)\n"
     "In the block's dtype (c_kv and k_rope in its kv_dtype; run converts float32 or float16 files\n"
     "and writes o and lse as float32); RoPE is applied by the caller. --absorb on|off forces a\n"
     "variant.\n"},
    {"environment", "environment variables",
     "ATTNC_CACHE_DIR        directory of the kernel cache (default $XDG_CACHE_HOME/attnc, else ~/.cache/attnc)\n"
     "ATTNC_NO_CACHE         1: bypass the kernel cache\n"
     "ATTNC_COMPILE_THREADS  most threads a compile uses, 1..4096 (default: --threads if given, else all\n"
     "                       cores); another value is a usage error (exit 2)\n"},
};
#define CLI_NTOPICS ((int)(sizeof cli_topics / sizeof cli_topics[0]))

static void cli_help_topic(int t, FILE *out) {
    if (cli_topics[t].text) {
        fputs(cli_topics[t].text, out);
        return;
    }
    fputs("Defined before every spec (a spec's own let or def of the same name shadows them):\n", out);
    fputs(fe_prelude_text, out);
}

static void cli_help_all(FILE *out) {
    fprintf(out, "attnc %s — an attention compiler\n\nusage:\n", ATTNC_VERSION);
    for (int c = 0; c < CMD_COUNT; c++) fprintf(out, "  %s\n", cli_cmds[c].usage);
    fputs("\ncommands:\n", out);
    for (int c = 0; c < CMD_COUNT; c++)
        fprintf(out, "  %-6s %s\n", cli_cmds[c].name, cli_cmds[c].what);
    fputs("\ncommon options:\n", out);
    for (int i = 0; i < CLI_NOPTS; i++)
        if (cli_opts[i].cmds == ALL) fprintf(out, "  %s %s\n", cli_opts[i].name, cli_opts[i].help);
    fputs("\n'attnc help COMMAND' describes a command; 'attnc --version' prints the version.\n"
          "Exit status: 0 success, 1 an error in the input, 2 bad usage.\n\nhelp topics ('attnc help TOPIC'):\n",
          out);
    for (int t = 0; t < CLI_NTOPICS; t++) fprintf(out, "  %-12s %s\n", cli_topics[t].name, cli_topics[t].what);
}

static void cli_help_cmd(Cmd c, FILE *out) {
    fprintf(out, "usage: %s\n\n%s.\n\noptions:\n", cli_cmds[c].usage, cli_cmds[c].what);
    for (int i = 0; i < CLI_NOPTS; i++)
        if (cli_opts[i].cmds & ON(c)) fprintf(out, "  %s %s\n", cli_opts[i].name, cli_opts[i].help);
    switch (c) {
    case CMD_DUMP:
        fputs("\npasses (for --after):\n  parse  (none: the IR the frontend produces; the default)\n",
              out);
        const char *name, *what;
        for (int i = 0; (name = drv_pass_name(i, &what)); i++) fprintf(out, "  %-6s %s\n", name, what);
        break;
    case CMD_RUN:
        fputs("\nTensors are float32 or float16 .npy files in C order, converted to the spec's dtype\n"
              "(k and v to its kv_dtype when it has one):\n"
              "q [batch, heads, q_len, head_dim], k [batch, kv_heads, kv_len, head_dim],\n"
              "v [batch, kv_heads, kv_len, v_dim] (MLA: q_nope ... w_uv, 'attnc help mla').\n"
              "Runtime inputs are int32 or float32 as declared. Outputs: o [batch, heads, q_len,\n"
              "v_dim] and lse [batch, heads, q_len], written as float32.\n"
              "A paged block (kv_cache = paged(P)) reads q [total_q, heads, head_dim], k_pages,\n"
              "v_pages [num_pages, P, kv_heads, dim] and int32 page_table [batch, max_pages],\n"
              "kv_lens [batch], q_starts [batch + 1]; o [total_q, heads, v_dim], lse [total_q, heads].\n",
              out);
        break;
    case CMD_BENCH:
        fputs("\nq, k, v are random (fixed seed). Runtime inputs not given with --in are zeros.\n"
              "ms is the median of the timed runs; gflops counts 2*(head_dim+v_dim) flops per\n"
              "visible query-key pair and head; visible is the fraction of pairs the mask lets\n"
              "through (sampled when there are more than 1e8 pairs to evaluate); kv_bytes is the\n"
              "K/V (MLA: latent) storage the call covers, so kv_bytes / ms is its read bandwidth.\n"
              "A paged block (kv_cache = paged(P)) runs --batch sequences of lengths drawn in\n"
              "[--kv-len-min, --kv-len], min(q-len, length) query rows each, pages shuffled.\n",
              out);
        break;
    case CMD_MASK:
        fputs("\nText: '#' visible, '.' hidden ('+' a downsampled cell with both). SVG: 16x16\n"
              "tiles coloured empty / full / partial, visible pairs in dark blue.\n",
              out);
        break;
    default: break;
    }
}

// argument parsing

static bool cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool cli_add_binding(Cli *c, Binding **list, int *n, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1]) return false;
    char *copy = strdup(arg);
    Binding *grown = realloc(*list, (size_t)(*n + 1) * sizeof **list);
    char **owned = realloc(c->owned, (size_t)(c->nowned + 1) * sizeof *c->owned);
    if (owned) c->owned = owned;
    if (grown) *list = grown;
    if (!copy || !grown || !owned) {
        free(copy);
        return false;
    }
    c->owned[c->nowned++] = copy;
    copy[eq - arg] = '\0';
    (*list)[*n].name = copy;
    (*list)[*n].path = copy + (eq - arg) + 1;
    (*n)++;
    return true;
}

static void cli_free(Cli *c) {
    for (int i = 0; i < c->nowned; i++) free(c->owned[i]);
    free(c->owned);
    free(c->ins);
    free(c->outs);
    free(c->defines);
}

/* Parses argv[2..] for command c->cmd. Returns 0, or the exit status (help: -1 for exit 0). */
static int cli_parse(Cli *c, int argc, char **argv) {
    Cmd cmd = c->cmd;
    bool only_positional = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            if (c->file) return cli_usage(cmd, "unexpected argument '%s' (the spec is '%s')", a, c->file);
            c->file = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (strcmp(a, "-h") == 0) a = "--help";
        /* find the option: exact, --name=value, -DNAME=V, -O<n>, -oFILE */
        int k = -1;
        const char *value = NULL;
        for (int j = 0; j < CLI_NOPTS && k < 0; j++) {
            const char *n = cli_opts[j].name;
            size_t len = strlen(n);
            if (strcmp(a, n) == 0) k = j;
            else if (strncmp(a, n, len) == 0 && cli_opts[j].value && n[1] == '-' && a[len] == '=')
                k = j, value = a + len + 1;
            else if (strncmp(a, n, len) == 0 && (cli_opts[j].id == OPT_DEFINE || cli_opts[j].id == OPT_OPT ||
                                                 cli_opts[j].id == OPT_OUT_FILE))
                k = j, value = a + len;
        }
        if (k < 0) return cli_usage(cmd, "unknown option '%s'", a);
        OptId id = cli_opts[k].id;
        if (!(cli_opts[k].cmds & ON(cmd)))
            return cli_usage(cmd, "'%s' does not take %s", cli_cmds[cmd].name, cli_opts[k].name);
        if (cli_opts[k].value && !value) {
            if (i + 1 >= argc) return cli_usage(cmd, "%s needs a value", cli_opts[k].name);
            value = argv[++i];
        }
        int64_t n;
        switch (id) {
        case OPT_HELP: cli_help_cmd(cmd, stdout); return -1;
        case OPT_KERNEL: c->opts.kernel = value; break;
        case OPT_DEFINE: {
            const char *eq = strchr(value, '=');
            if (!eq || eq == value || !eq[1])
                return cli_usage(cmd, "-D needs NAME=VALUE, got '%s'", value);
            const char **grown = realloc(c->defines, (size_t)(c->ndefines + 1) * sizeof *grown);
            if (!grown) return cli_error(EXIT_INPUT, "out of memory");
            c->defines = grown;
            c->defines[c->ndefines++] = value;
            break;
        }
        case OPT_THREADS:
            if (!cli_parse_i64(value, 0, 4096, &n))
                return cli_usage(cmd, "--threads needs an integer in [0, 4096], got '%s'", value);
            c->opts.threads = (int)n;
            break;
        case OPT_OPT:
            if (!value || strlen(value) != 1 || value[0] < '0' || value[0] > '3')
                return cli_usage(cmd, "unknown optimization level '%s' (use -O0 .. -O3)", a);
            c->opts.opt_level = value[0] - '0';
            break;
        case OPT_NO_PRUNE: c->opts.no_prune = 1; break;
        case OPT_ABSORB:
            if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0)
                return cli_usage(cmd, "--absorb takes on or off, got '%s'", value);
            c->opts.absorb = strcmp(value, "on") == 0 ? ATTN_ABSORB_ON : ATTN_ABSORB_OFF;
            break;
        case OPT_AFTER: c->after = value; break;
        case OPT_LLVM: c->llvm = true; break;
        case OPT_OUT_FILE:
            if (!*value) return cli_usage(cmd, "-o needs a file name");
            c->out_file = value;
            break;
        case OPT_EMIT:
            if (strcmp(value, "obj") == 0) c->emit = ATTN_EMIT_OBJ;
            else if (strcmp(value, "asm") == 0) c->emit = ATTN_EMIT_ASM;
            else if (strcmp(value, "llvm") == 0) c->emit = ATTN_EMIT_LLVM;
            else return cli_usage(cmd, "--emit takes obj, asm or llvm, got '%s'", value);
            break;
        case OPT_HEADER: c->header = value; break;
        case OPT_TARGET: c->target = value; break;
        case OPT_CPU: c->opts.cpu = value; break;
        case OPT_IN:
        case OPT_OUT:
            if (!cli_add_binding(c, id == OPT_IN ? &c->ins : &c->outs, id == OPT_IN ? &c->nins : &c->nouts,
                                 value))
                return cli_usage(cmd, "%s needs NAME=FILE.npy, got '%s'", cli_opts[k].name, value);
            break;
        case OPT_Q_OFFSET:
            if (!cli_parse_i64(value, -CLI_MAX_LEN, CLI_MAX_LEN, &c->q_offset))
                return cli_usage(cmd, "--q-offset needs an integer in [-2^40, 2^40], got '%s'", value);
            c->has_q_offset = true;
            break;
        case OPT_BATCH:
        case OPT_Q_LEN:
        case OPT_KV_LEN:
        case OPT_KV_LEN_MIN:
            if (!cli_parse_i64(value, 1, CLI_MAX_LEN, &n))
                return cli_usage(cmd, "%s needs a positive integer, got '%s'", cli_opts[k].name, value);
            *(id == OPT_BATCH ? &c->batch : id == OPT_Q_LEN ? &c->q_len : id == OPT_KV_LEN ? &c->kv_len : &c->kv_len_min) = n;
            break;
        case OPT_JSON: c->json = true; break;
        case OPT_GRAD: c->grad = true; break;
        case OPT_RING: c->ring = true; break;
        case OPT_STATS: c->stats = true; break;
        case OPT_SHARD:
            if (strcmp(value, "contiguous") && strcmp(value, "zigzag"))
                return cli_usage(cmd, "--shard needs contiguous or zigzag, got '%s'", value);
            c->shard = strcmp(value, "zigzag") == 0;
            break;
        case OPT_REPS:
            if (!cli_parse_i64(value, 1, 1000000, &n))
                return cli_usage(cmd, "--reps needs an integer in [1, 1000000], got '%s'", value);
            c->reps = (int)n;
            break;
        case OPT_SVG: c->svg = value; break;
        }
    }
    if (!c->file) return cli_usage(cmd, "no spec file given");
    if (c->after && c->llvm) return cli_usage(cmd, "--after and --llvm cannot be combined");
    if (!c->ring && c->shard >= 0) return cli_usage(cmd, "--shard needs --ring");
    if (!c->ring && c->stats) return cli_usage(cmd, "--stats needs --ring");
    if (c->shard < 0) c->shard = 0;
    c->opts.defines = c->defines;
    c->opts.ndefines = c->ndefines;
    return 0;
}

// shared steps

static CgTarget cli_target(const Cli *c) {
    CgTarget t = {.triple = c->target, .cpu = c->opts.cpu, .features = NULL,
                  .opt_level = c->opts.opt_level < 0 ? 3 : c->opts.opt_level};
    return t;
}

/* Parses the spec; prints diagnostics. NULL with *rc set on failure. */
static IrModule *cli_load(const Cli *c, int *rc) {
    StrBuf diags;
    sb_init(&diags);
    attn_error err = {0};
    IrModule *m = drv_parse(c->file, NULL, &c->opts, &diags, &err);
    bool printed = diags.len > 0;
    if (printed) fputs(sb_str(&diags), stderr);
    sb_free(&diags);
    if (!m) {
        if (err.code != ATTN_ERR_SPEC || !printed) cli_error(0, "%s", err.message);
        *rc = cli_status_exit(err.code);
    }
    return m;
}

/* The blocks a command works on: the --kernel one (stored in *one), or all of them. */
static int cli_funcs(const Cli *c, IrModule *m, IrFunc **one, IrFunc ***out, int *n) {
    if (!c->opts.kernel) {
        if (m->nfuncs == 0) return cli_error(EXIT_INPUT, "%s: no attention block", c->file);
        *out = m->funcs;
        *n = m->nfuncs;
        return 0;
    }
    attn_error err = {0};
    IrFunc *f = drv_select(m, c->opts.kernel, &err);
    if (!f) return cli_select_error(c, &err);
    one[0] = f;
    *out = one;
    *n = 1;
    return 0;
}

static int cli_optimize(const Cli *c, IrFunc *f, const CgTarget *t, const char *stop_after) {
    StrBuf msg;
    sb_init(&msg);
    bool ok = drv_optimize(f, &c->opts, t, stop_after, &msg);
    if (!ok) {
        size_t len = msg.len;
        while (len && msg.data[len - 1] == '\n') msg.data[--len] = '\0';
        cli_error(EXIT_INPUT, "%s: attention '%s': %s", c->file, f->name,
                  len ? sb_str(&msg) : "optimization failed");
    }
    sb_free(&msg);
    return ok ? 0 : EXIT_INPUT;
}

// check

static int cmd_check(Cli *c) {
    int rc = 0;
    IrModule *m = cli_load(c, &rc);
    if (!m) return rc;
    IrFunc **fs, *one[1];
    int n;
    if (!(rc = cli_funcs(c, m, one, &fs, &n))) {
        CgTarget t = cli_target(c);
        for (int i = 0; i < n && !rc; i++) rc = cli_optimize(c, fs[i], &t, NULL);
    }
    ir_module_free(m);
    return rc;
}

/* The functions an object holds (drv_compiled_funcs of each block), in a malloc'd array. */
static IrFunc **cli_emitted(IrFunc **fs, int n, int *nout) {
    IrFunc **out = malloc(sizeof *out * (size_t)n * DRV_MAX_FUNCS);
    if (!out) return NULL;
    int m = 0;
    for (int i = 0; i < n; i++) m += drv_compiled_funcs(fs[i], out + m, NULL);
    *nout = m;
    return out;
}

// dump

static int cmd_dump(Cli *c) {
    const char *stop = c->after;
    if (stop && strcmp(stop, "parse") == 0) stop = NULL;
    bool known = !stop;
    for (int i = 0; !known && drv_pass_name(i, NULL); i++) known = strcmp(drv_pass_name(i, NULL), stop) == 0;
    if (!known) {
        StrBuf names;
        sb_init(&names);
        sb_puts(&names, "parse");
        for (int i = 0; drv_pass_name(i, NULL); i++) sb_printf(&names, ", %s", drv_pass_name(i, NULL));
        int rc = cli_usage(CMD_DUMP, "unknown pass '%s' (passes: %s)", stop, sb_str(&names));
        sb_free(&names);
        return rc;
    }
    int rc = 0;
    IrModule *m = cli_load(c, &rc);
    if (!m) return rc;
    IrFunc **fs, *one[1];
    int n;
    CgTarget t = cli_target(c);
    if ((rc = cli_funcs(c, m, one, &fs, &n))) goto done;
    if (stop || c->llvm)
        for (int i = 0; i < n && !rc; i++) rc = cli_optimize(c, fs[i], &t, c->llvm ? NULL : stop);
    if (rc) goto done;
    if (c->llvm) {
        /* the module `attnc build` would write */
        int nemit;
        IrFunc **emit = cli_emitted(fs, n, &nemit);
        if (!emit) {
            rc = cli_error(EXIT_INPUT, "out of memory");
            goto done;
        }
        StrBuf err;
        sb_init(&err);
        char *text = cg_print_llvm(emit, nemit, &t, &err);
        free(emit);
        if (text) fputs(text, stdout);
        else rc = cli_error(EXIT_INPUT, "%s: %s", c->file, err.len ? sb_str(&err) : "LLVM IR failed");
        free(text);
        sb_free(&err);
    } else {
        StrBuf sb;
        sb_init(&sb);
        for (int i = 0; i < n; i++) {
            if (i) sb_puts(&sb, "\n");
            ir_print_func(&sb, fs[i]);
        }
        fputs(sb_str(&sb), stdout);
        sb_free(&sb);
    }
done:
    ir_module_free(m);
    return rc;
}

// build

static int cmd_build(Cli *c) {
    if (!c->out_file) return cli_usage(CMD_BUILD, "build needs -o OUT");
    attn_error err = {0};
    char *diags = NULL;
    attn_status st = attn_build(c->file, NULL, &c->opts, c->target, c->emit, c->out_file, c->header, &diags, &err);
    if (diags) fputs(diags, stderr);
    if (st != ATTN_OK && (st != ATTN_ERR_SPEC || !diags)) cli_error(0, "%s", err.message);
    attn_free(diags);
    return st == ATTN_OK ? 0 : cli_status_exit(st);
}

// tensors and inputs for run, bench and mask

static size_t cli_elem_size(attn_dtype t) { return t == ATTN_F16 || t == ATTN_BF16 ? 2 : t == ATTN_I8 ? 1 : 4; }

/* The element type of a standard kernel's K/V (pages): its kv_dtype, as dt where it has none. */
static attn_dtype cli_kv_dtype(const attn_rt_desc *d, attn_dtype dt) {
    return d->kv_f32 ? ATTN_F32 : d->kv_dtype != ATTN_F32 ? d->kv_dtype : dt;
}

/* The storage type of a kernel's tensors (an MLA block's q_nope, q_rope, w_uk, w_uv, o). */
static attn_dtype cli_store_dtype(const attn_kernel *kern) {
    attn_mla_info mi;
    return attn_kernel_mla_info(kern, &mi) ? mi.dtype : attn_kernel_desc(kern)->dtype;
}

/* The element type of a call's tensor t (0 q, 1 k, 2 v, then the rest; MLA: 0 q_nope, 1 q_rope,
 * 2 c_kv, 3 k_rope, then the rest) of the kernel computing in `dtype`: k and v (c_kv and
 * k_rope) in the block's kv_dtype where it has one. */
static attn_dtype cli_call_dtype(const attn_kernel *kern, int t, attn_dtype dtype) {
    attn_mla_info mi;
    if (attn_kernel_mla_info(kern, &mi)) return (t == 2 || t == 3) && dtype == mi.dtype ? mi.kv_dtype : dtype;
    return t == 1 || t == 2 ? cli_kv_dtype(attn_kernel_desc(kern), dtype) : dtype;
}


/* Converts a float32 or float16 .npy array in place to the kernel's storage type. */
static bool cli_to_dtype(NpyArray *a, attn_dtype want, const char *name, const char *path) {
    if (a->dtype == NPY_I32) {
        cli_error(EXIT_INPUT, "%s: %s must be float32, not int32", path, name);
        return false;
    }
    if (want == ATTN_I8 && a->dtype != NPY_I8) {
        cli_error(EXIT_INPUT, "%s: %s must be int8 for a kernel with kv_dtype = int8 (its scales in --in %s_scale=...), not %s",
                  path, name, name, npy_dtype_descr(a->dtype));
        return false;
    }
    if (want != ATTN_I8 && a->dtype == NPY_I8) {
        cli_error(EXIT_INPUT, "%s: %s must be float32 or float16, not int8 (int8 is for the K/V of kv_dtype = int8)", path, name);
        return false;
    }
    if ((want == ATTN_F32 && a->dtype == NPY_F32) || (want == ATTN_F16 && a->dtype == NPY_F16) || want == ATTN_I8) return true;
    size_t n = (size_t)a->count;
    void *out = malloc(n * cli_elem_size(want) + 1);
    if (!out) {
        cli_error(EXIT_INPUT, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        float x = a->dtype == NPY_F32 ? ((float *)a->data)[i] : npy_f16_to_f32(((uint16_t *)a->data)[i]);
        if (want == ATTN_F32) ((float *)out)[i] = x;
        else if (want == ATTN_F16) ((uint16_t *)out)[i] = npy_f32_to_f16(x);
        else ((uint16_t *)out)[i] = npy_f32_to_bf16(x);
    }
    free(a->data);
    a->data = out;
    a->dtype = want == ATTN_F32 ? NPY_F32 : NPY_F16; /* bf16 is tracked by the caller */
    return true;
}

/* n f16 or bf16 values as f32 (exactly), in a new array (NULL: out of memory). */
static float *cli_widen(const void *p, attn_dtype t, size_t n) {
    float *w = malloc(n * sizeof *w + 1);
    for (size_t i = 0; w && i < n; i++)
        w[i] = t == ATTN_F16 ? npy_f16_to_f32(((const uint16_t *)p)[i]) : npy_bf16_to_f32(((const uint16_t *)p)[i]);
    return w;
}

static void cli_tensor(attn_tensor *t, void *data, int ndim, const int64_t *shape) {
    memset(t, 0, sizeof *t);
    t->data = data;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
}

/* The runtime inputs of a call: .npy files bound by --in, others zero-filled if allowed. */
typedef struct CliInputs {
    NpyArray arr[ATTN_MAX_INPUTS];   /* loaded or zero-filled */
    attn_input bind[ATTN_MAX_INPUTS];
    int n;
} CliInputs;

static void cli_inputs_free(CliInputs *in) {
    for (int i = 0; i < ATTN_MAX_INPUTS; i++) npy_free(&in->arr[i]);
}

static int cli_find_desc_input(const attn_rt_desc *d, const char *name) {
    for (int i = 0; i < d->ninputs; i++)
        if (strcmp(d->inputs[i].name, name) == 0) return i;
    return -1;
}

static void cli_input_decl(char *buf, size_t cap, const attn_rt_input_desc *in) {
    static const char *const dims[] = {"", "batch", "heads", "kv_heads", "q_len", "kv_len", "num_pages"};
    int n = snprintf(buf, cap, "input %s %s", ir_dtype_name(in->dtype), in->name);
    for (int d = 0; d < in->rank && n > 0 && (size_t)n < cap; d++) {
        if (in->dim_kind[d] == ATTN_DIM_CONST)
            n += snprintf(buf + n, cap - (size_t)n, "%s%" PRId64, d ? ", " : "[", in->dim_value[d]);
        else
            n += snprintf(buf + n, cap - (size_t)n, "%s%s", d ? ", " : "[", dims[in->dim_kind[d]]);
    }
    if (in->rank && n > 0 && (size_t)n < cap) snprintf(buf + n, cap - (size_t)n, "]");
}

/* Size of dim d of input `in` for a call with these sizes. */
static int64_t cli_input_dim(const attn_rt_desc *desc, const attn_rt_input_desc *in, int d, int64_t B,
                             int64_t Lq, int64_t Lk) {
    switch (in->dim_kind[d]) {
    case ATTN_DIM_BATCH: return B;
    case ATTN_DIM_HEADS: return desc->heads;
    case ATTN_DIM_KV_HEADS: return desc->kv_heads;
    case ATTN_DIM_Q_LEN: return Lq;
    case ATTN_DIM_KV_LEN: return Lk;
    case ATTN_DIM_PAGES: return Lk; /* paged calls (no kv_len dims): Lk is num_pages */
    default: return in->dim_value[d];
    }
}

/* Loads the --in bindings naming runtime inputs. `zero_fill`: a missing input becomes zeros
 * (needs B, Lq, Lk); `needed[i]`: a missing input i is an error (with `why`). Other --in names
 * than inputs must be in `also_ok` (e.g. q, k, v), else an error. */
static int cli_load_inputs(const Cli *c, const attn_rt_desc *d, CliInputs *in, const char *const *also_ok,
                           bool zero_fill, const bool *needed, const char *why, int64_t B, int64_t Lq,
                           int64_t Lk) {
    memset(in, 0, sizeof *in);
    bool given[ATTN_MAX_INPUTS] = {0};
    char msg[512];
    for (int i = 0; i < c->nins; i++) {
        const Binding *b = &c->ins[i];
        bool other = false;
        for (const char *const *o = also_ok; o && *o; o++) other |= strcmp(*o, b->name) == 0;
        if (other) continue;
        int j = cli_find_desc_input(d, b->name);
        if (j < 0) {
            char names[256] = "";
            size_t len = 0;
            for (const char *const *o = also_ok; o && *o && len < sizeof names; o++)
                len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", len ? ", " : "", *o);
            for (int k = 0; k < d->ninputs && len < sizeof names; k++)
                len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", len ? ", " : "",
                                        d->inputs[k].name);
            return cli_error(EXIT_INPUT, "--in %s: '%s' has no input of that name (expected: %s)", b->name,
                             d->name, len ? names : "none");
        }
        if (given[j]) return cli_error(EXIT_INPUT, "--in %s is given twice", b->name);
        given[j] = true;
        if (!npy_read(b->path, &in->arr[j], msg, sizeof msg)) return cli_error(EXIT_INPUT, "--in %s: %s", b->name, msg);
        NpyDtype want = d->inputs[j].dtype == ATTN_I32 ? NPY_I32 : NPY_F32;
        if (in->arr[j].dtype != want) {
            char decl[128];
            cli_input_decl(decl, sizeof decl, &d->inputs[j]);
            return cli_error(EXIT_INPUT, "%s: dtype %s, but the spec declares '%s' (the file must hold %s)",
                             b->path, npy_dtype_descr(in->arr[j].dtype), decl,
                             want == NPY_I32 ? "int32 values, '<i4'" : "float32 values, '<f4'");
        }
        if (in->arr[j].ndim > ATTN_MAX_DIMS)
            return cli_error(EXIT_INPUT, "%s: %d dims, inputs have at most %d", b->path, in->arr[j].ndim,
                             ATTN_MAX_DIMS);
    }
    for (int j = 0; j < d->ninputs; j++) {
        const attn_rt_input_desc *id = &d->inputs[j];
        if (!given[j]) {
            char decl[128];
            cli_input_decl(decl, sizeof decl, id);
            if (needed && needed[j])
                return cli_error(EXIT_INPUT, "%s reads runtime input '%s' (%s); give it with --in %s=FILE.npy",
                                 why, id->name, decl, id->name);
            if (!zero_fill && !needed)
                return cli_error(EXIT_INPUT, "missing --in %s=FILE.npy ('%s' declares %s)", id->name, d->name,
                                 decl);
            NpyArray *a = &in->arr[j];
            a->dtype = id->dtype == ATTN_I32 ? NPY_I32 : NPY_F32;
            a->ndim = id->rank;
            a->count = 1;
            for (int k = 0; k < id->rank; k++) {
                a->shape[k] = cli_input_dim(d, id, k, B, Lq, Lk);
                if (a->shape[k] < 0 || __builtin_mul_overflow(a->count, a->shape[k], &a->count) ||
                    a->count > ((int64_t)1 << 34))
                    return cli_error(EXIT_INPUT, "input '%s' would be too large to fill", id->name);
            }
            a->data = calloc((size_t)a->count + 1, 4);
            if (!a->data) return cli_error(EXIT_INPUT, "out of memory");
            if (zero_fill && !needed) cli_note("input '%s' not given (--in %s=FILE.npy): using zeros", id->name, id->name);
        }
        in->bind[j].name = id->name;
        cli_tensor(&in->bind[j].t, in->arr[j].data, in->arr[j].ndim, in->arr[j].shape);
    }
    in->n = d->ninputs;
    return 0;
}

/* Does `e` read input `i`? */
static bool cli_expr_reads(const IrExpr *e, int i) {
    if (!e) return false;
    if (e->op == IR_INPUT && e->input == i) return true;
    for (int a = 0; a < e->nargs && a < 4; a++)
        if (cli_expr_reads(e->args[a], i)) return true;
    return false;
}

static int cli_status_error(const attn_error *err) {
    return cli_error(cli_status_exit(err->code), "%s", err->message);
}

/* Compiles with the C API, printing diagnostics. NULL with *rc set on failure. */
static attn_kernel *cli_compile(const Cli *c, int *rc) {
    attn_kernel *k = NULL;
    char *diags = NULL;
    attn_error err = {0};
    attn_status s = attn_compile(c->file, NULL, &c->opts, &k, &diags, &err);
    if (diags && *diags) fputs(diags, stderr);
    if (s != ATTN_OK) {
        if (s != ATTN_ERR_SPEC || !diags || !*diags) cli_select_error(c, &err);
        *rc = cli_status_exit(s);
    }
    attn_free(diags);
    return k;
}

// run

/* The tensors `run` reads, by kind of kernel. */
typedef struct CliTensorSpec {
    const char *name;   /* as in SPEC §2 / §3 */
    int ndim;
    const char *layout; /* for messages */
} CliTensorSpec;

static const CliTensorSpec cli_std_tensors[] = {
    {"q", 4, "[batch, heads, q_len, head_dim]"},
    {"k", 4, "[batch, kv_heads, kv_len, head_dim]"},
    {"v", 4, "[batch, kv_heads, kv_len, v_dim]"},
};
static const CliTensorSpec cli_mla_tensors[] = {
    {"q_nope", 4, "[batch, heads, q_len, nope_dim]"},
    {"q_rope", 4, "[batch, heads, q_len, rope_dim]"},
    {"c_kv", 3, "[batch, kv_len, kv_rank]"},
    {"k_rope", 3, "[batch, kv_len, rope_dim]"},
    {"w_uk", 3, "[heads, kv_rank, nope_dim]"},
    {"w_uv", 3, "[heads, kv_rank, v_dim]"},
};
#define CLI_MAX_TENSORS 6

/* run --grad: q, k, v (an MLA kernel: q_nope ... w_uv), do and the inputs in (o and lse too,
 * else a forward run makes them); the gradient of each tensor (dq, ...) and d<input> out. */
static int cmd_run_grad(Cli *c) {
    int rc = 0;
    attn_kernel *kern = cli_compile(c, &rc);
    if (!kern) return rc;
    const attn_rt_desc *d = attn_kernel_desc(kern);
    bool mla = attn_kernel_is_mla(kern);
    const CliTensorSpec *ts = mla ? cli_mla_tensors : cli_std_tensors;
    int nf = mla ? 6 : 3; /* the forward's tensors, then do, o, lse */
    int NT = nf + 3, DO = nf, O = nf + 1, LSE = nf + 2;
    const char *tn[CLI_MAX_TENSORS + 4] = {NULL};
    char gname[CLI_MAX_TENSORS][16]; /* dq, ... */
    for (int t = 0; t < nf; t++) {
        tn[t] = ts[t].name;
        snprintf(gname[t], sizeof gname[t], "d%s", ts[t].name);
    }
    tn[DO] = "do", tn[O] = "o", tn[LSE] = "lse";
    attn_dtype store = cli_store_dtype(kern); /* of the forward's tensors and o; do is f32 */
    int gin[ATTN_MAX_INPUTS];
    int ngin = attn_kernel_grad_inputs(kern, gin);
    NpyArray arr[CLI_MAX_TENSORS + 3];
    memset(arr, 0, sizeof arr);
    CliInputs in;
    memset(&in, 0, sizeof in);
    float *out[CLI_MAX_TENSORS + ATTN_MAX_INPUTS] = {NULL};
    float *o = NULL, *lse = NULL;
    attn_input dins[ATTN_MAX_INPUTS];
    attn_tensor gt[CLI_MAX_TENSORS];
    char msg[512], names[256];
    const char *paths[CLI_MAX_TENSORS + 3] = {NULL};
    if (ngin < 0) {
        rc = cli_error(EXIT_INPUT, "'%s' has no backward%s", d->name,
                       attn_kernel_page_size(kern) ? " (paged kernels are for inference)"
                       : mla ? " (an MLA kernel needs compute = f32 and its up-projected variant: absorb = off or auto)"
                           : " (compute = bf16/int8 is for inference)");
        goto done;
    }
    size_t len = 0;
    names[0] = '\0';
    for (int t = 0; t < nf && len < sizeof names; t++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", t ? ", " : "", gname[t]);
    for (int j = 0; j < ngin && len < sizeof names; j++)
        len += (size_t)snprintf(names + len, sizeof names - len, ", d%s", d->inputs[gin[j]].name);
    for (int i = 0; i < c->nouts && !rc; i++) {
        const char *n = c->outs[i].name;
        bool ok = false;
        for (int t = 0; t < nf && !ok; t++) ok = !strcmp(n, gname[t]);
        for (int j = 0; j < ngin && !ok; j++) ok = n[0] == 'd' && !strcmp(n + 1, d->inputs[gin[j]].name);
        if (!ok) rc = cli_error(EXIT_INPUT, "--out %s: the gradients are %s", n, names);
        for (int j = 0; j < i && !rc; j++)
            if (!strcmp(n, c->outs[j].name)) rc = cli_error(EXIT_INPUT, "--out %s is given twice", n);
    }
    for (int i = 0; i < c->nins && !rc; i++)
        for (int t = 0; t < NT; t++)
            if (!strcmp(c->ins[i].name, tn[t])) {
                if (paths[t]) rc = cli_error(EXIT_INPUT, "--in %s is given twice", tn[t]);
                paths[t] = c->ins[i].path;
            }
    for (int t = 0; t <= DO && !rc; t++)
        if (!paths[t])
            rc = cli_error(EXIT_INPUT, "missing --in %s=FILE.npy (--grad needs %s and do)", tn[t],
                           mla ? "q_nope, q_rope, c_kv, k_rope, w_uk, w_uv" : "q, k, v");
    if (!rc && !paths[O] != !paths[LSE]) rc = cli_error(EXIT_INPUT, "give both --in o= and --in lse= (or neither)");
    for (int t = 0; t < NT && !rc; t++) {
        if (!paths[t]) continue;
        int nd = t < nf ? ts[t].ndim : t == LSE ? 3 : 4;
        if (!npy_read(paths[t], &arr[t], msg, sizeof msg)) rc = cli_error(EXIT_INPUT, "%s", msg);
        else if (arr[t].ndim != nd)
            rc = cli_error(EXIT_INPUT, "%s: %s has %d dims, expected %d", paths[t], tn[t], arr[t].ndim, nd);
        else if (!cli_to_dtype(&arr[t], cli_call_dtype(kern, t, t < nf || t == O ? store : ATTN_F32), tn[t],
                               paths[t]))
            rc = EXIT_INPUT;
    }
    if (rc) goto done;
    int64_t B = arr[0].shape[0], Lq = arr[0].shape[2], Lk = mla ? arr[2].shape[1] : arr[1].shape[2];
    if ((rc = cli_load_inputs(c, d, &in, tn, false, NULL, NULL, B, Lq, Lk))) goto done;
    int64_t so[4] = {B, d->heads, Lq, d->v_dim};
    attn_error err = {0};
    attn_call call;
    attn_mla_call mcall;
    memset(&call, 0, sizeof call);
    memset(&mcall, 0, sizeof mcall);
    attn_tensor *ft[CLI_MAX_TENSORS] = {&call.q, &call.k, &call.v};
    if (mla) {
        attn_tensor *mt[6] = {&mcall.q_nope, &mcall.q_rope, &mcall.c_kv, &mcall.k_rope, &mcall.w_uk, &mcall.w_uv};
        memcpy(ft, mt, sizeof mt);
    }
    for (int t = 0; t < nf; t++) cli_tensor(ft[t], arr[t].data, arr[t].ndim, arr[t].shape);
    attn_tensor *to = mla ? &mcall.o : &call.o, *tl = mla ? &mcall.lse : &call.lse;
    call.q_offset = mcall.q_offset = c->has_q_offset ? c->q_offset : ATTN_Q_OFFSET_DEFAULT;
    call.q_offset_set = mcall.q_offset_set = c->has_q_offset;
    call.inputs = mcall.inputs = in.bind;
    call.ninputs = mcall.ninputs = in.n;
    call.threads = mcall.threads = c->opts.threads;
    mcall.absorb = c->opts.absorb;
    if (!mla) {
        char probe;
        cli_tensor(&call.o, &probe, 4, so);
        if (attn_rt_check(d, &call, NULL, &err) != ATTN_OK) { /* sizes first: nothing large allocated yet */
            rc = cli_status_error(&err);
            goto done;
        }
    }
    if (paths[O]) {
        cli_tensor(to, arr[O].data, 4, arr[O].shape);
        cli_tensor(tl, arr[LSE].data, 3, arr[LSE].shape);
    } else {
        o = calloc((size_t)(B * d->heads * Lq * d->v_dim) + 1, cli_elem_size(store));
        lse = calloc((size_t)(B * d->heads * Lq) + 1, sizeof *lse);
        if (!o || !lse) {
            rc = cli_error(EXIT_INPUT, "out of memory");
            goto done;
        }
        cli_tensor(to, o, 4, so);
        cli_tensor(tl, lse, 3, so);
        attn_status st = mla ? attn_run_mla(kern, &mcall, NULL, &err) : attn_run(kern, &call, &err);
        if (st != ATTN_OK) {
            rc = cli_status_error(&err);
            goto done;
        }
    }
    /* each gradient shaped like its tensor (the call's checks hold them to the spec) */
    for (int t = 0; t < nf && !rc; t++) {
        int64_t n = 1;
        for (int k = 0; k < arr[t].ndim; k++) n *= arr[t].shape[k];
        if (!(out[t] = calloc((size_t)n + 1, sizeof(float)))) rc = cli_error(EXIT_INPUT, "out of memory");
        cli_tensor(&gt[t], out[t], arr[t].ndim, arr[t].shape);
    }
    for (int j = 0; j < ngin && !rc; j++) {
        const attn_tensor *it = &in.bind[gin[j]].t;
        int64_t n = 1;
        for (int k = 0; k < it->ndim; k++) n *= it->shape[k];
        if (!(out[nf + j] = calloc((size_t)n + 1, sizeof(float)))) rc = cli_error(EXIT_INPUT, "out of memory");
        dins[j].name = d->inputs[gin[j]].name;
        cli_tensor(&dins[j].t, out[nf + j], it->ndim, it->shape);
    }
    if (rc) goto done;
    attn_tensor dout;
    cli_tensor(&dout, arr[DO].data, arr[DO].ndim, arr[DO].shape);
    attn_status st;
    if (mla) {
        attn_mla_grad_call g = {.dout = dout, .dq_nope = gt[0], .dq_rope = gt[1], .dc_kv = gt[2],
                                .dk_rope = gt[3], .dw_uk = gt[4], .dw_uv = gt[5],
                                .dinputs = dins, .ndinputs = ngin};
        st = attn_run_mla_backward(kern, &mcall, &g, &err);
    } else {
        attn_grad_call g = {.dout = dout, .dq = gt[0], .dk = gt[1], .dv = gt[2], .dinputs = dins, .ndinputs = ngin};
        st = attn_run_backward(kern, &call, &g, &err);
    }
    if (st != ATTN_OK) rc = cli_status_error(&err);
    if (!rc && c->nouts == 0) cli_note("no --out given: nothing written");
    for (int i = 0; i < c->nouts && !rc; i++) {
        const char *n = c->outs[i].name;
        const attn_tensor *g = NULL;
        for (int t = 0; t < nf && !g; t++)
            if (!strcmp(n, gname[t])) g = &gt[t];
        for (int j = 0; j < ngin && !g; j++)
            if (!strcmp(n + 1, d->inputs[gin[j]].name)) g = &dins[j].t;
        if (!npy_write(c->outs[i].path, NPY_F32, g->data, g->ndim, g->shape, msg, sizeof msg))
            rc = cli_error(EXIT_INPUT, "%s", msg);
    }
done:
    for (int t = 0; t < CLI_MAX_TENSORS + 3; t++) npy_free(&arr[t]);
    for (int t = 0; t < CLI_MAX_TENSORS + ATTN_MAX_INPUTS; t++) free(out[t]);
    cli_inputs_free(&in);
    free(o);
    free(lse);
    attn_kernel_free(kern);
    return rc;
}

/* run of a paged kernel: q, k_pages, v_pages (float32, or float16; int8 pages for kv_dtype =
 * int8, with the inputs k_scale and v_scale), page_table, kv_lens, q_starts (int32) and the
 * inputs in (a paged MLA block: q_nope, q_rope, c_kv_pages, k_rope_pages, w_uk, w_uv for q, k
 * and v); o [total_q, heads, v_dim] and lse [total_q, heads] out, float32. */
static int cmd_run_paged(Cli *c, attn_kernel *kern) {
    const attn_rt_desc *d = attn_kernel_desc(kern);
    attn_mla_info mi;
    bool mla = attn_kernel_mla_info(kern, &mi) != 0;
    enum { NT = 9 };
    static const char *const tstd[NT + 1] = {"q", "k_pages", "v_pages", "page_table", "kv_lens", "q_starts", NULL};
    static const char *const tmla[NT + 1] = {"page_table", "kv_lens", "q_starts", "q_nope", "q_rope", "c_kv_pages",
                                             "k_rope_pages", "w_uk", "w_uv", NULL};
    static const char *const lstd[NT] = {"[total_q, heads, head_dim]", "[num_pages, page_size, kv_heads, head_dim]",
                                         "[num_pages, page_size, kv_heads, v_dim]", "int32 [batch, max_pages]",
                                         "int32 [batch]", "int32 [batch + 1]"};
    static const char *const lmla[NT] = {"int32 [batch, max_pages]", "int32 [batch]", "int32 [batch + 1]",
                                         "[total_q, heads, nope_dim]", "[total_q, heads, rope_dim]",
                                         "[num_pages, page_size, kv_rank]", "[num_pages, page_size, rope_dim]",
                                         "[heads, kv_rank, nope_dim]", "[heads, kv_rank, v_dim]"};
    static const int ndstd[NT] = {3, 4, 4, 2, 1, 1}, ndmla[NT] = {2, 1, 1, 3, 3, 3, 3, 3, 3};
    const char *const *tn = mla ? tmla : tstd, *const *layout = mla ? lmla : lstd;
    const int *nd = mla ? ndmla : ndstd;
    int nt = mla ? 9 : 6, TABLE = mla ? 0 : 3; /* the three index tensors from TABLE on */
    attn_dtype dt = cli_store_dtype(kern), kvt = mla ? mi.kv_dtype : cli_kv_dtype(d, dt);
    int64_t H = d->heads, DV = mla ? mi.v_dim : d->v_dim;
    const char *paths[NT] = {NULL};
    NpyArray arr[NT];
    memset(arr, 0, sizeof arr);
    CliInputs in;
    memset(&in, 0, sizeof in);
    void *o = NULL;
    float *lse = NULL, *o32 = NULL;
    char msg[512];
    int rc = 0;
    if (c->has_q_offset)
        return cli_error(EXIT_INPUT, "--q-offset does not apply to the paged kernel '%s': sequence b's queries are "
                         "its last positions, kv_lens[b] - n_b ..", d->name);
    for (int i = 0; i < c->nins && !rc; i++)
        for (int t = 0; t < nt; t++)
            if (!strcmp(c->ins[i].name, tn[t])) {
                if (paths[t]) rc = cli_error(EXIT_INPUT, "--in %s is given twice", tn[t]);
                paths[t] = c->ins[i].path;
            }
    for (int t = 0; t < nt && !rc; t++)
        if (!paths[t])
            rc = cli_error(EXIT_INPUT, "missing --in %s=FILE.npy (%s; '%s' is a paged%s kernel)", tn[t], layout[t],
                           d->name, mla ? " MLA" : "");
    for (int t = 0; t < nt && !rc; t++) {
        bool index = t >= TABLE && t < TABLE + 3, kv = mla ? t == 5 || t == 6 : t == 1 || t == 2;
        if (!npy_read(paths[t], &arr[t], msg, sizeof msg)) rc = cli_error(EXIT_INPUT, "--in %s: %s", tn[t], msg);
        else if (arr[t].ndim != nd[t])
            rc = cli_error(EXIT_INPUT, "%s: %s has %d dims, expected %d: %s", paths[t], tn[t], arr[t].ndim, nd[t],
                           layout[t]);
        else if (index && arr[t].dtype != NPY_I32)
            rc = cli_error(EXIT_INPUT, "%s: %s must be int32 ('<i4'), not %s", paths[t], tn[t],
                           npy_dtype_descr(arr[t].dtype));
        else if (!index && !cli_to_dtype(&arr[t], kv ? kvt : dt, tn[t], paths[t]))
            rc = EXIT_INPUT;
    }
    if (rc) goto done;
    int64_t B = arr[TABLE + 1].shape[0], T = arr[mla ? 3 : 0].shape[0];
    if ((rc = cli_load_inputs(c, d, &in, tn, false, NULL, NULL, B, 0, 0))) goto done;
    int64_t oshape[3] = {T, H, DV};
    if (T > ((int64_t)1 << 36) / H / DV) {
        rc = cli_error(EXIT_INPUT, "the output for %" PRId64 " query rows is too large", T);
        goto done;
    }
    o = calloc((size_t)(T * H * DV) + 1, cli_elem_size(dt));
    lse = calloc((size_t)(T * H) + 1, sizeof *lse);
    if (!o || !lse) {
        rc = cli_error(EXIT_INPUT, "out of memory");
        goto done;
    }
    attn_error err = {0};
    attn_status st;
    if (mla) {
        attn_paged_mla_call call;
        memset(&call, 0, sizeof call);
        attn_tensor *ct[NT] = {&call.page_table, &call.kv_lens, &call.q_starts, &call.q_nope, &call.q_rope,
                               &call.c_kv_pages, &call.k_rope_pages, &call.w_uk, &call.w_uv};
        for (int t = 0; t < nt; t++) cli_tensor(ct[t], arr[t].data, arr[t].ndim, arr[t].shape);
        cli_tensor(&call.o, o, 3, oshape);
        cli_tensor(&call.lse, lse, 2, oshape);
        call.inputs = in.bind;
        call.ninputs = in.n;
        call.threads = c->opts.threads;
        st = attn_run_paged_mla(kern, &call, &err);
    } else {
        attn_paged_call call;
        memset(&call, 0, sizeof call);
        attn_tensor *ct[NT] = {&call.q, &call.k_pages, &call.v_pages, &call.page_table, &call.kv_lens, &call.q_starts};
        for (int t = 0; t < nt; t++) cli_tensor(ct[t], arr[t].data, arr[t].ndim, arr[t].shape);
        cli_tensor(&call.o, o, 3, oshape);
        cli_tensor(&call.lse, lse, 2, oshape);
        call.inputs = in.bind;
        call.ninputs = in.n;
        call.threads = c->opts.threads;
        st = attn_run_paged(kern, &call, &err);
    }
    if (st != ATTN_OK) {
        rc = cli_status_error(&err);
        goto done;
    }
    if (dt != ATTN_F32 && !(o32 = cli_widen(o, dt, (size_t)(T * H * DV)))) {
        rc = cli_error(EXIT_INPUT, "out of memory");
        goto done;
    }
    if (c->nouts == 0) cli_note("no --out given: nothing written");
    for (int i = 0; i < c->nouts && !rc; i++) {
        bool is_o = strcmp(c->outs[i].name, "o") == 0;
        if (!npy_write(c->outs[i].path, NPY_F32, is_o ? (o32 ? (void *)o32 : o) : (void *)lse, is_o ? 3 : 2, oshape, msg,
                       sizeof msg))
            rc = cli_error(EXIT_INPUT, "%s", msg);
    }
done:
    for (int t = 0; t < NT; t++) npy_free(&arr[t]);
    cli_inputs_free(&in);
    free(o);
    free(o32);
    free(lse);
    return rc;
}

static int cmd_run(Cli *c) {
    if (c->grad) return cmd_run_grad(c);
    for (int i = 0; i < c->nouts; i++) {
        if (strcmp(c->outs[i].name, "o") != 0 && strcmp(c->outs[i].name, "lse") != 0)
            return cli_error(EXIT_INPUT, "--out %s: outputs are o and lse", c->outs[i].name);
        for (int j = 0; j < i; j++)
            if (strcmp(c->outs[i].name, c->outs[j].name) == 0)
                return cli_error(EXIT_INPUT, "--out %s is given twice", c->outs[i].name);
    }
    int rc = 0;
    attn_kernel *kern = cli_compile(c, &rc);
    if (!kern) return rc;
    if (attn_kernel_page_size(kern)) {
        rc = cmd_run_paged(c, kern);
        attn_kernel_free(kern);
        return rc;
    }
    const attn_rt_desc *d = attn_kernel_desc(kern);
    bool mla = attn_kernel_is_mla(kern);
    const CliTensorSpec *ts = mla ? cli_mla_tensors : cli_std_tensors;
    int nt = mla ? 6 : 3;
    attn_dtype dtype = cli_store_dtype(kern);
    const char *names[CLI_MAX_TENSORS + 1] = {NULL}, *paths[CLI_MAX_TENSORS] = {NULL};
    NpyArray arr[CLI_MAX_TENSORS];
    memset(arr, 0, sizeof arr);
    CliInputs in;
    memset(&in, 0, sizeof in);
    void *o = NULL;
    float *lse = NULL, *o32 = NULL;
    char msg[512];
    for (int t = 0; t < nt; t++) names[t] = ts[t].name;
    for (int i = 0; i < c->nins && !rc; i++)
        for (int t = 0; t < nt; t++)
            if (strcmp(c->ins[i].name, ts[t].name) == 0) {
                if (paths[t]) rc = cli_error(EXIT_INPUT, "--in %s is given twice", ts[t].name);
                paths[t] = c->ins[i].path;
            }
    for (int t = 0; t < nt && !rc; t++)
        if (!paths[t])
            rc = cli_error(EXIT_INPUT, "missing --in %s=FILE.npy (%s%s)", ts[t].name, ts[t].layout,
                           mla ? ", an MLA kernel" : "");
    for (int t = 0; t < nt && !rc; t++) {
        if (!npy_read(paths[t], &arr[t], msg, sizeof msg)) rc = cli_error(EXIT_INPUT, "%s", msg);
        else if (arr[t].ndim != ts[t].ndim)
            rc = cli_error(EXIT_INPUT, "%s: %s has %d dims, expected %d: %s", paths[t], ts[t].name, arr[t].ndim,
                           ts[t].ndim, ts[t].layout);
        else if (!cli_to_dtype(&arr[t], cli_call_dtype(kern, t, dtype), ts[t].name, paths[t]))
            rc = EXIT_INPUT;
    }
    if (rc) goto done;
    /* q (q_nope) fixes batch and q_len, k (c_kv) fixes kv_len */
    int64_t B = arr[0].shape[0], Lq = arr[0].shape[2], Lk = mla ? arr[2].shape[1] : arr[1].shape[2];
    if ((rc = cli_load_inputs(c, d, &in, names, false, NULL, NULL, B, Lq, Lk))) goto done;

    int64_t oshape[4] = {B, d->heads, Lq, d->v_dim}, count;
    bool want_lse = false;
    for (int i = 0; i < c->nouts; i++) want_lse |= strcmp(c->outs[i].name, "lse") == 0;
    int64_t q_offset = c->has_q_offset ? c->q_offset : ATTN_Q_OFFSET_DEFAULT;
    attn_error err = {0};
    attn_call call;
    attn_mla_call mcall;
    memset(&call, 0, sizeof call);
    memset(&mcall, 0, sizeof mcall);
    if (!mla) {
        cli_tensor(&call.q, arr[0].data, 4, arr[0].shape);
        cli_tensor(&call.k, arr[1].data, 4, arr[1].shape);
        cli_tensor(&call.v, arr[2].data, 4, arr[2].shape);
        char probe; /* a stand-in for o: validation never dereferences it */
        cli_tensor(&call.o, &probe, 4, oshape);
        call.q_offset = q_offset;
        call.q_offset_set = c->has_q_offset;
        call.inputs = in.bind;
        call.ninputs = in.n;
        call.threads = c->opts.threads;
        /* validate first, so a wrong shape is reported before anything large is allocated
         * (lse's sizes are o's first three) */
        if (rt_check_call(d, &call, NULL, false, &err) != ATTN_OK) { /* o is a stand-in */
            rc = cli_status_error(&err);
            goto done;
        }
    }
    if (__builtin_mul_overflow(B, (int64_t)d->heads, &count) || __builtin_mul_overflow(count, Lq, &count) ||
        count > ((int64_t)1 << 36) / d->v_dim) {
        rc = cli_error(EXIT_INPUT, "the output for batch %" PRId64 ", q_len %" PRId64 " is too large", B, Lq);
        goto done;
    }
    o = calloc((size_t)(count * d->v_dim) + 1, cli_elem_size(dtype));
    lse = want_lse ? calloc((size_t)count + 1, sizeof *lse) : NULL;
    if (!o || (want_lse && !lse)) {
        rc = cli_error(EXIT_INPUT, "out of memory");
        goto done;
    }
    attn_status st;
    if (mla) {
        attn_tensor *mt[6] = {&mcall.q_nope, &mcall.q_rope, &mcall.c_kv, &mcall.k_rope, &mcall.w_uk, &mcall.w_uv};
        for (int t = 0; t < 6; t++) cli_tensor(mt[t], arr[t].data, arr[t].ndim, arr[t].shape);
        cli_tensor(&mcall.o, o, 4, oshape);
        if (want_lse) cli_tensor(&mcall.lse, lse, 3, oshape);
        mcall.q_offset = q_offset;
        mcall.q_offset_set = c->has_q_offset;
        mcall.inputs = in.bind;
        mcall.ninputs = in.n;
        mcall.threads = c->opts.threads;
        mcall.absorb = c->opts.absorb;
        st = attn_run_mla(kern, &mcall, NULL, &err);
    } else {
        call.o.data = o;
        if (want_lse) cli_tensor(&call.lse, lse, 3, oshape);
        st = attn_run(kern, &call, &err);
    }
    if (st != ATTN_OK) {
        rc = cli_status_error(&err);
        goto done;
    }
    if (dtype != ATTN_F32 && !(o32 = cli_widen(o, dtype, (size_t)(count * d->v_dim)))) {
        rc = cli_error(EXIT_INPUT, "out of memory");
        goto done;
    }
    if (c->nouts == 0) cli_note("no --out given: nothing written");
    for (int i = 0; i < c->nouts && !rc; i++) {
        bool is_o = strcmp(c->outs[i].name, "o") == 0;
        if (!npy_write(c->outs[i].path, NPY_F32, is_o ? (o32 ? (void *)o32 : o) : (void *)lse, is_o ? 4 : 3,
                       oshape, msg, sizeof msg))
            rc = cli_error(EXIT_INPUT, "%s", msg);
    }
done:
    for (int t = 0; t < CLI_MAX_TENSORS; t++) npy_free(&arr[t]);
    cli_inputs_free(&in);
    free(o);
    free(o32);
    free(lse);
    attn_kernel_free(kern);
    return rc;
}

// mask evaluation (shared by bench and mask)

typedef struct MaskEval {
    const IrFunc *f;          /* the spec's function, as parsed */
    const attn_rt_args *args; /* sizes, q_offset and inputs */
    int64_t b, h;             /* the batch row and head evaluated */
    attn_status status;       /* the first evaluation that failed (index, overflow), else OK */
} MaskEval;

static void mask_init(MaskEval *m, const IrFunc *f, const attn_rt_args *a, int64_t b, int64_t h) {
    memset(m, 0, sizeof *m);
    m->f = f;
    m->args = a;
    m->b = b;
    m->h = h;
}

/* Is key j visible from query row i (0-based rows; positions shift by q_offset)? */
static bool mask_at(MaskEval *m, int64_t i, int64_t j) {
    attn_status st = ATTN_OK;
    bool seen = drv_mask_at(m->f, m->args, m->b, m->h, m->args->q_offset + i, j, &st);
    if (st != ATTN_OK && m->status == ATTN_OK) m->status = st;
    return seen;
}

/* The error of a mask that could not be evaluated. */
static int mask_error(attn_status st) {
    if (st == ATTN_ERR_OVERFLOW) return cli_error(EXIT_INPUT, "the mask overflows 64-bit integers for these sizes");
    return cli_error(EXIT_INPUT, "an input value used as an index in the mask is out of bounds");
}

/* Estimated visible pairs over all batch rows and heads; exact when at most `budget`
 * evaluations are needed (after folding away b and h when the mask does not read them). */
static double mask_count_visible(const IrFunc *f, const attn_rt_args *a, int64_t heads, double budget,
                                 bool *exact, attn_status *status) {
    bool use_b = ir_expr_uses_var(f->mask, IR_V_B), use_h = ir_expr_uses_var(f->mask, IR_V_H);
    int64_t nb = use_b ? a->batch : 1, nh = use_h ? heads : 1;
    double rows = (double)nb * (double)nh * (double)a->q_len, total = rows * (double)a->kv_len;
    double mult = (double)(use_b ? 1 : a->batch) * (double)(use_h ? 1 : heads);
    *exact = total <= budget;
    int64_t row_step = 1, col_step = 1;
    if (!*exact) {
        double cols = (double)a->kv_len;
        if (cols > budget / 64) col_step = (int64_t)ceil(cols / (budget / 64));
        double cols_used = ceil(cols / (double)col_step);
        row_step = (int64_t)ceil(rows * cols_used / budget);
        if (row_step < 1) row_step = 1;
    }
    double seen = 0, visible = 0;
    MaskEval m;
    int64_t nrows = nb * nh * a->q_len;
    /* an odd offset into each stride spreads samples over rows with different residues */
    for (int64_t r = row_step > 1 ? row_step / 2 : 0; r < nrows; r += row_step) {
        int64_t b = r / (nh * a->q_len), h = (r / a->q_len) % nh, i = r % a->q_len;
        mask_init(&m, f, a, b, h);
        for (int64_t j = col_step > 1 ? col_step / 2 : 0; j < a->kv_len; j += col_step) {
            visible += mask_at(&m, i, j);
            seen++;
        }
        if (m.status != ATTN_OK) {
            *status = m.status;
            return 0;
        }
    }
    return seen > 0 ? visible / seen * total * mult : 0;
}

// bench

static double cli_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cli_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Times run(ctx) as bench does: one warm-up call (its failure is reported, nothing timed),
 * then *reps calls (0: as many as fill about a second, 3 to 1000; *reps gets the count); the
 * median and the fastest call in ms. Returns 0 or the exit status, the error said. */
static int cli_time_calls(attn_status (*run)(void *ctx, attn_error *err), void *ctx, int *reps, double *ms,
                          double *ms_min) {
    attn_error err = {0};
    double t0 = cli_now_ms();
    if (run(ctx, &err) != ATTN_OK) return cli_status_error(&err);
    double warm = cli_now_ms() - t0;
    if (!*reps) {
        double r = warm > 0 ? ceil(1000.0 / warm) : 1000;
        *reps = r < 3 ? 3 : r > 1000 ? 1000 : (int)r;
    }
    double *times = malloc((size_t)*reps * sizeof *times);
    if (!times) return cli_error(EXIT_INPUT, "out of memory");
    for (int r = 0; r < *reps; r++) {
        double s = cli_now_ms();
        run(ctx, &err);
        times[r] = cli_now_ms() - s;
    }
    qsort(times, (size_t)*reps, sizeof *times, cli_cmp_double);
    int n = *reps;
    *ms = n % 2 ? times[n / 2] : (times[n / 2 - 1] + times[n / 2]) / 2;
    *ms_min = times[0];
    free(times);
    return 0;
}

/* 64 random bits (splitmix64). */
static uint64_t cli_rand64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Fills n elements of type t with uniform values in [-1, 1) from a fixed-seed generator. */
static void cli_random_fill(void *data, size_t n, attn_dtype t, uint64_t *state) {
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull); /* splitmix64 */
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        float x = (float)((double)(z >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
        if (t == ATTN_F32) ((float *)data)[i] = x;
        else if (t == ATTN_F16) ((uint16_t *)data)[i] = npy_f32_to_f16(x);
        else if (t == ATTN_I8) ((int8_t *)data)[i] = (int8_t)(x * 127.0f);
        else ((uint16_t *)data)[i] = npy_f32_to_bf16(x);
    }
}

/* Multiplies n values of type t (f32, f16 or bf16) by w, rounding to t. */
static void cli_scale(void *data, size_t n, attn_dtype t, float w) {
    for (size_t i = 0; i < n; i++) {
        if (t == ATTN_F32) ((float *)data)[i] *= w;
        else if (t == ATTN_F16) ((uint16_t *)data)[i] = npy_f32_to_f16(npy_f16_to_f32(((uint16_t *)data)[i]) * w);
        else ((uint16_t *)data)[i] = npy_f32_to_bf16(npy_bf16_to_f32(((uint16_t *)data)[i]) * w);
    }
}

/* 0 when `bytes` of tensors fit in this machine's memory, else the error said (exit 1): bench
 * fills its tensors at once, and past the memory the system would kill the process (an
 * overcommitted malloc succeeds), never a clean error. */
static int cli_fits_memory(double bytes, const char *what) {
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || psize <= 0) return 0;
    double ram = (double)pages * (double)psize;
    if (bytes <= ram) return 0;
    return cli_error(EXIT_INPUT, "%s need %.1f GB, more than this machine's %.1f GB of memory", what, bytes / 1e9,
                     ram / 1e9);
}

static void *cli_alloc_tensor(int64_t a, int64_t b, int64_t c, int64_t d, size_t elem, size_t *count) {
    int64_t n;
    if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) || __builtin_mul_overflow(n, d, &n) ||
        n > ((int64_t)1 << 36))
        return NULL;
    *count = (size_t)n;
    return malloc((size_t)n * elem + 1);
}

/* One call of a standard or an MLA kernel, as bench repeats it. */
typedef struct BenchCall {
    attn_kernel *kern;
    bool mla;
    attn_call call;
    attn_mla_call mcall;
    int absorbed; /* MLA: which variant ran */
    bool grad;    /* time the backward (call, or mcall for MLA, holds the forward's o and lse) */
    attn_grad_call g;
    attn_mla_grad_call mg;
} BenchCall;

/* One paged call, as bench repeats it. */
typedef struct PagedRun {
    attn_kernel *kern;
    const attn_paged_call *call;
    const attn_paged_mla_call *mcall; /* a paged MLA block's, or NULL */
} PagedRun;

static attn_status bench_paged_run(void *ctx, attn_error *err) {
    const PagedRun *p = ctx;
    return p->mcall ? attn_run_paged_mla(p->kern, p->mcall, err) : attn_run_paged(p->kern, p->call, err);
}

static attn_status bench_run(void *ctx, attn_error *err) {
    BenchCall *bc = ctx;
    if (bc->grad)
        return bc->mla ? attn_run_mla_backward(bc->kern, &bc->mcall, &bc->mg, err)
                       : attn_run_backward(bc->kern, &bc->call, &bc->g, err);
    return bc->mla ? attn_run_mla(bc->kern, &bc->mcall, &bc->absorbed, err) : attn_run(bc->kern, &bc->call, err);
}

/* bench's kernel, and its compile time cold (the kernel cache bypassed) and warm (loaded from
 * the cache, filled first if need be; -1 when the cache is off or unusable). */
static attn_kernel *cli_bench_compile(const Cli *c, int *rc, double *cold_ms, double *warm_ms) {
    Cli cold = *c;
    cold.opts.no_cache = 1;
    attn_kernel *k = cli_compile(&cold, rc);
    if (!k) return NULL;
    *cold_ms = attn_kernel_compile_ms(k);
    for (int i = 0; i < 2; i++) {
        attn_kernel_free(k);
        if (!(k = cli_compile(c, rc))) return NULL;
        if (attn_kernel_cache_hit(k)) {
            *warm_ms = attn_kernel_compile_ms(k);
            break;
        }
    }
    return k;
}

/* bench of a paged kernel: a ragged batch of B sequences, each of a length drawn uniformly in
 * [kv-len-min, kv-len] (fixed seed) with min(q-len, length) queries, its pages shuffled; q, o
 * and the pages in the block's dtype and kv_dtype (int8 pages: their scales as the inputs
 * k_scale and v_scale, zeros unless given). A paged MLA block: q_nope, q_rope, c_kv_pages,
 * k_rope_pages, w_uk, w_uv. */
static int cmd_bench_paged(Cli *c, const IrFunc *f, attn_kernel *kern, double compile_ms, double compile_ms_warm) {
    const attn_rt_desc *d = attn_kernel_desc(kern);
    attn_mla_info mi;
    bool mla = attn_kernel_mla_info(kern, &mi) != 0;
    int64_t B = c->batch ? c->batch : 1, N = c->q_len ? c->q_len : 1024, L = c->kv_len ? c->kv_len : 1024;
    int64_t M = c->kv_len_min ? c->kv_len_min : L, P = d->page_size, H = d->heads, KH = mla ? 1 : d->kv_heads;
    attn_dtype dt = cli_store_dtype(kern), kvt = mla ? mi.kv_dtype : cli_kv_dtype(d, dt);
    /* K and V rows (MLA: the latent c_kv and k_rope rows), the flops' qk and v dims */
    int64_t KD = mla ? mi.kv_rank : d->qk_dim, VD = mla ? mi.rope_dim : d->v_dim;
    int64_t DQ = mla ? mi.nope_dim + mi.rope_dim : d->qk_dim, DV = mla ? mi.v_dim : d->v_dim;
    if (M > L) return cli_usage(CMD_BENCH, "--kv-len-min (%" PRId64 ") exceeds --kv-len (%" PRId64 ")", M, L);
    if (L > INT32_MAX) /* kv_lens and the page table are int32 */
        return cli_usage(CMD_BENCH, "--kv-len %" PRId64 " is too long for a paged kernel (its kv_lens are int32: at most "
                         "%d)", L, INT32_MAX);
    if (c->grad) return cli_error(EXIT_INPUT, "'%s' has no backward (paged kernels are for inference)", d->name);
    if (c->has_q_offset)
        return cli_error(EXIT_INPUT, "--q-offset does not apply to the paged kernel '%s'", d->name);
    int rc = 0;
    int32_t *lens = NULL, *starts = NULL, *table = NULL;
    int64_t *perm = NULL;
    void *q = NULL, *kp = NULL, *vp = NULL, *o = NULL;
    void *q2 = NULL, *wuk = NULL, *wuv = NULL;
    CliInputs in;
    memset(&in, 0, sizeof in);
    uint64_t seed = 42;
    int64_t T = 0, NP = 0, MP = 1, kv_keys = 0;
    lens = malloc(sizeof *lens * (size_t)B);
    starts = malloc(sizeof *starts * (size_t)(B + 1));
    if (!lens || !starts || B > ((int64_t)1 << 24)) {
        rc = cli_error(EXIT_INPUT, "batch %" PRId64 " is too large", B);
        goto done;
    }
    starts[0] = 0;
    for (int64_t b = 0; b < B; b++) {
        uint64_t z = cli_rand64(&seed);
        lens[b] = (int32_t)(M + (int64_t)(z % (uint64_t)(L - M + 1)));
        int64_t n = N < lens[b] ? N : lens[b];
        T += n;
        starts[b + 1] = (int32_t)T;
        int64_t pages = (lens[b] + P - 1) / P;
        NP += pages;
        MP = pages > MP ? pages : MP;
        kv_keys += lens[b];
        if (T > INT32_MAX || NP > INT32_MAX) {
            rc = cli_error(EXIT_INPUT, "the batch is too large");
            goto done;
        }
    }
    size_t nk = 0, nv = 0, nq = 0, nq2 = 0, nuk = 0, nuv = 0;
    size_t qel = cli_elem_size(dt), kvel = cli_elem_size(kvt);
    {
        double pages = (double)NP * (double)P * (double)KH * (double)(KD + VD) * (double)kvel;
        double rows = (double)T * (double)H * ((double)DQ + (double)DV) * (double)qel;
        double weights = mla ? (double)H * (double)mi.kv_rank * (double)(mi.nope_dim + mi.v_dim) * (double)qel : 0;
        if ((rc = cli_fits_memory(pages + rows + weights, "the pages and query rows"))) goto done;
    }
    table = calloc((size_t)(B * MP), sizeof *table);
    perm = malloc(sizeof *perm * (size_t)(NP ? NP : 1));
    kp = cli_alloc_tensor(NP, P, KH, KD, kvel, &nk);
    vp = cli_alloc_tensor(NP, P, KH, VD, kvel, &nv);
    q = cli_alloc_tensor(T, H, mla ? mi.nope_dim : DQ, 1, qel, &nq);
    o = calloc((size_t)(T * H * DV) + 1, qel);
    if (mla) {
        q2 = cli_alloc_tensor(T, H, mi.rope_dim, 1, qel, &nq2);
        wuk = cli_alloc_tensor(H, mi.kv_rank, mi.nope_dim, 1, qel, &nuk);
        wuv = cli_alloc_tensor(H, mi.kv_rank, mi.v_dim, 1, qel, &nuv);
    }
    if (!table || !perm || !kp || !vp || !q || !o || (mla && (!q2 || !wuk || !wuv))) {
        rc = cli_error(EXIT_INPUT, "cannot allocate the pages for batch %" PRId64 ", kv_len %" PRId64, B, L);
        goto done;
    }
    cli_random_fill(kp, nk, kvt, &seed);
    cli_random_fill(vp, nv, kvt, &seed);
    cli_random_fill(q, nq, dt, &seed);
    if (mla) { /* the latent projections near unit scale: weights / sqrt(kv_rank) */
        cli_random_fill(q2, nq2, dt, &seed);
        cli_random_fill(wuk, nuk, dt, &seed);
        cli_random_fill(wuv, nuv, dt, &seed);
        float ws = 1.0f / sqrtf((float)mi.kv_rank);
        cli_scale(wuk, nuk, dt, ws);
        cli_scale(wuv, nuv, dt, ws);
    }
    for (int64_t i = 0; i < NP; i++) perm[i] = i;
    for (int64_t i = NP - 1; i > 0; i--) { /* shuffled pages */
        uint64_t z = cli_rand64(&seed);
        int64_t j = (int64_t)(z % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int64_t b = 0, next = 0; b < B; b++)
        for (int64_t j = 0; j < (lens[b] + P - 1) / P; j++) table[b * MP + j] = (int32_t)perm[next++];
    if ((rc = cli_load_inputs(c, d, &in, NULL, true, NULL, NULL, B, 0, NP))) goto done;
    attn_paged_call call;
    attn_paged_mla_call mcall;
    memset(&call, 0, sizeof call);
    memset(&mcall, 0, sizeof mcall);
    if (mla) {
        cli_tensor(&mcall.q_nope, q, 3, (int64_t[]){T, H, mi.nope_dim});
        cli_tensor(&mcall.q_rope, q2, 3, (int64_t[]){T, H, mi.rope_dim});
        cli_tensor(&mcall.c_kv_pages, kp, 3, (int64_t[]){NP, P, mi.kv_rank});
        cli_tensor(&mcall.k_rope_pages, vp, 3, (int64_t[]){NP, P, mi.rope_dim});
        cli_tensor(&mcall.w_uk, wuk, 3, (int64_t[]){H, mi.kv_rank, mi.nope_dim});
        cli_tensor(&mcall.w_uv, wuv, 3, (int64_t[]){H, mi.kv_rank, mi.v_dim});
        cli_tensor(&mcall.page_table, table, 2, (int64_t[]){B, MP});
        cli_tensor(&mcall.kv_lens, lens, 1, (int64_t[]){B});
        cli_tensor(&mcall.q_starts, starts, 1, (int64_t[]){B + 1});
        cli_tensor(&mcall.o, o, 3, (int64_t[]){T, H, DV});
        mcall.inputs = in.bind;
        mcall.ninputs = in.n;
        mcall.threads = c->opts.threads;
    }
    cli_tensor(&call.q, q, 3, (int64_t[]){T, H, DQ});
    cli_tensor(&call.k_pages, kp, 4, (int64_t[]){NP, P, KH, KD});
    cli_tensor(&call.v_pages, vp, 4, (int64_t[]){NP, P, KH, VD});
    cli_tensor(&call.page_table, table, 2, (int64_t[]){B, MP});
    cli_tensor(&call.kv_lens, lens, 1, (int64_t[]){B});
    cli_tensor(&call.q_starts, starts, 1, (int64_t[]){B + 1});
    cli_tensor(&call.o, o, 3, (int64_t[]){T, H, DV});
    call.inputs = in.bind;
    call.ninputs = in.n;
    call.threads = c->opts.threads;
    int reps = c->reps;
    double ms, ms_min;
    if ((rc = cli_time_calls(bench_paged_run, &(PagedRun){kern, &call, mla ? &mcall : NULL}, &reps, &ms, &ms_min)))
        goto done;

    /* visible pairs, sequence by sequence (sampled over keys past 2^24 evaluations) */
    attn_rt_args args;
    memset(&args, 0, sizeof args);
    args.batch = B;
    for (int i = 0; i < in.n; i++) {
        args.input[i] = in.bind[i].t.data;
        for (int k = 0; k < in.bind[i].t.ndim; k++) args.input_dim[i][k] = in.bind[i].t.shape[k];
    }
    bool use_h = ir_expr_uses_var(f->mask, IR_V_H);
    int64_t nh = use_h ? H : 1;
    double evals = 0, all_pairs = 0, visible_pairs = 0;
    for (int64_t b = 0; b < B; b++) evals += (double)(starts[b + 1] - starts[b]) * (double)nh * lens[b];
    int64_t step = evals > (double)(1 << 24) ? (int64_t)ceil(evals / (double)(1 << 24)) : 1;
    MaskEval m;
    for (int64_t b = 0; b < B; b++) {
        int64_t n = starts[b + 1] - starts[b];
        args.q_len = n, args.kv_len = lens[b], args.q_offset = lens[b] - n;
        all_pairs += (double)H * (double)n * lens[b];
        for (int64_t h = 0; h < nh; h++) {
            mask_init(&m, f, &args, b, h);
            for (int64_t i = 0; i < n; i++) {
                double seen = 0, vis = 0;
                for (int64_t j = step / 2; j < lens[b]; j += step) {
                    vis += mask_at(&m, i, j);
                    seen++;
                }
                if (seen > 0) visible_pairs += vis / seen * (double)lens[b] * (double)(H / nh);
            }
            if (m.status != ATTN_OK) {
                rc = mask_error(m.status);
                goto done;
            }
        }
    }
    double visible = all_pairs > 0 ? visible_pairs / all_pairs : 0;
    double gflops = ms > 0 ? 2.0 * (double)(DQ + DV) * visible_pairs / (ms * 1e6) : 0;
    /* the K/V (MLA: latent) bytes the call covers; int8 pages: a 4-byte scale per row of K and of V */
    double kv_bytes = (double)kv_keys * (double)KH * ((double)(KD + VD) * (double)kvel + (kvt == ATTN_I8 ? 8.0 : 0.0));
    int threads = c->opts.threads ? c->opts.threads : attn_rt_cpu_count();
    char warm_ms[32] = "null";
    if (compile_ms_warm >= 0) snprintf(warm_ms, sizeof warm_ms, "%.3f", compile_ms_warm);
    if (c->json) {
        printf("{\"kernel\": \"%s\", \"batch\": %" PRId64 ", \"q_len\": %" PRId64 ", \"kv_len\": %" PRId64
               ", \"kv_len_min\": %" PRId64 ", \"total_q\": %" PRId64 ", \"keys\": %" PRId64 ", \"page_size\": %" PRId64
               ", \"heads\": %d, \"kv_heads\": %" PRId64 ", \"qk_dim\": %" PRId64 ", \"v_dim\": %" PRId64
               ", \"dtype\": \"%s\", \"compute\": \"%s\", \"kv_dtype\": \"%s\", "
               "\"threads\": %d, \"reps\": %d, \"ms\": %.6f, \"ms_min\": %.6f, \"gflops\": %.4f, \"visible\": %.6f, "
               "\"visible_exact\": %s, \"compile_ms\": %.3f, \"compile_ms_warm\": %s, \"grad\": false, "
               "\"kv_bytes\": %.0f, \"paged\": true%s}\n",
               d->name, B, N, L, M, T, kv_keys, P, d->heads, KH, DQ, DV, ir_dtype_name(dt), ir_compute_name(f->compute),
               ir_dtype_name(kvt), threads, reps, ms, ms_min, gflops, visible, step == 1 ? "true" : "false", compile_ms,
               warm_ms, kv_bytes, mla ? ", \"mla\": true, \"absorbed\": true" : "");
    } else {
        printf("kernel      %s (%s, kv %s, compute %s, paged %" PRId64 "%s)\n", d->name, ir_dtype_name(dt),
               ir_dtype_name(kvt), ir_compute_name(f->compute), P, mla ? ", MLA absorbed" : "");
        printf("shape       batch %" PRId64 ", heads %d (kv %d), q_len %" PRId64 " (%" PRId64 " rows), kv_len %" PRId64
               "..%" PRId64 " (%" PRId64 " keys), head_dim %" PRId64 ", v_dim %" PRId64 "\n",
               B, d->heads, (int)KH, N, T, M, L, kv_keys, DQ, DV);
        printf("threads     %d\n", threads);
        if (compile_ms_warm >= 0) printf("compile     %.1f ms cold, %.1f ms warm (kernel cache)\n", compile_ms, compile_ms_warm);
        else printf("compile     %.1f ms cold (kernel cache off)\n", compile_ms);
        printf("time        %.3f ms median, %.3f ms min (%d runs)\n", ms, ms_min, reps);
        printf("visible     %.2f%% of query-key pairs%s\n", visible * 100, step == 1 ? "" : " (sampled)");
        printf("throughput  %.2f GFLOP/s (useful flops only)\n", gflops);
        printf("kv read     %.1f MB of K/V, %.2f GB/s\n", kv_bytes / 1e6, ms > 0 ? kv_bytes / (ms * 1e6) : 0);
    }
done:
    free(lens), free(starts), free(table), free(perm), free(q), free(kp), free(vp), free(o), free(q2), free(wuk), free(wuv);
    cli_inputs_free(&in);
    return rc;
}

static int cmd_bench(Cli *c) {
    int64_t B = c->batch ? c->batch : 1, Lq = c->q_len ? c->q_len : 1024, Lk = c->kv_len ? c->kv_len : 1024;
    int rc = 0;
    IrModule *m = cli_load(c, &rc);
    if (!m) return rc;
    attn_kernel *kern = NULL;
    enum { NBUF = 7 };
    void *buf[NBUF] = {NULL};
    float *gbuf[NBUF + 1] = {NULL}; /* --grad: lse, do, then dq, dk, dv (MLA: dq_nope ... dw_uv) */
    CliInputs in;
    memset(&in, 0, sizeof in);
    attn_error err = {0};
    IrFunc *f = drv_select(m, c->opts.kernel, &err);
    if (!f) {
        rc = cli_select_error(c, &err);
        goto done;
    }
    double compile_ms = 0, compile_ms_warm = -1;
    if (!(kern = cli_bench_compile(c, &rc, &compile_ms, &compile_ms_warm))) goto done;
    if (attn_kernel_page_size(kern)) {
        rc = cmd_bench_paged(c, f, kern, compile_ms, compile_ms_warm);
        goto done;
    }
    if (c->kv_len_min) {
        rc = cli_usage(CMD_BENCH, "--kv-len-min is for paged kernels (kv_cache = paged(P))");
        goto done;
    }
    const attn_rt_desc *d = attn_kernel_desc(kern);
    BenchCall bc;
    memset(&bc, 0, sizeof bc);
    bc.kern = kern;
    bc.mla = attn_kernel_is_mla(kern);
    if ((rc = cli_load_inputs(c, d, &in, NULL, true, NULL, NULL, B, Lq, Lk))) goto done;

    /* the tensors: q, k, v, o; or for MLA q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, o */
    int64_t H = d->heads, shapes[NBUF][4];
    int ndims[NBUF], nbuf;
    attn_dtype dtype = cli_store_dtype(kern);
    if (bc.mla) {
        const IrMla *ml = &f->mla;
        int64_t R = ml->kv_rank, rope = ml->rope_dim, nope = ml->nope_dim, dv = ml->v_dim;
        int64_t s[NBUF][4] = {{B, H, Lq, nope}, {B, H, Lq, rope}, {B, Lk, R, 1}, {B, Lk, rope, 1},
                              {H, R, nope, 1},  {H, R, dv, 1},    {B, H, Lq, dv}};
        int nd[NBUF] = {4, 4, 3, 3, 3, 3, 4};
        memcpy(shapes, s, sizeof s);
        memcpy(ndims, nd, sizeof nd);
        nbuf = 7;
    } else {
        int64_t s[4][4] = {{B, H, Lq, d->qk_dim}, {B, d->kv_heads, Lk, d->qk_dim}, {B, d->kv_heads, Lk, d->v_dim},
                           {B, H, Lq, d->v_dim}};
        memcpy(shapes, s, sizeof s);
        for (int i = 0; i < 4; i++) ndims[i] = 4;
        nbuf = 4;
    }
    size_t elem = cli_elem_size(dtype), counts[NBUF];
    uint64_t seed = 42;
    {
        double bytes = 0;
        for (int i = 0; i < nbuf; i++) {
            const int64_t *s = shapes[i];
            attn_dtype bt = cli_call_dtype(kern, i, dtype);
            double n = (double)s[0] * (double)s[1] * (double)s[2] * (double)(ndims[i] == 4 ? s[3] : 1);
            bytes += n * (double)cli_elem_size(bt) * (c->grad ? 1.0 + 4.0 / (double)cli_elem_size(bt) : 1.0);
        }
        if ((rc = cli_fits_memory(bytes, "the tensors"))) goto done;
    }
    for (int i = 0; i < nbuf; i++) {
        const int64_t *s = shapes[i];
        attn_dtype bt = cli_call_dtype(kern, i, dtype);
        buf[i] = cli_alloc_tensor(s[0], s[1], s[2], ndims[i] == 4 ? s[3] : 1, cli_elem_size(bt), &counts[i]);
        if (!buf[i]) {
            rc = cli_error(EXIT_INPUT, "cannot allocate the tensors for batch %" PRId64 ", q_len %" PRId64
                                       ", kv_len %" PRId64, B, Lq, Lk);
            goto done;
        }
        if (i < nbuf - 1) cli_random_fill(buf[i], counts[i], bt, &seed);
        else memset(buf[i], 0, counts[i] * elem);
    }
    if (bc.mla) { /* keep the latent projections near unit scale: weights / sqrt(kv_rank) */
        float w = 1.0f / sqrtf((float)f->mla.kv_rank);
        for (int i = 4; i < 6; i++) cli_scale(buf[i], counts[i], dtype, w);
    }

    /* validate the sizes and inputs as a call would (for MLA on the up-projected shapes) and
     * get the resolved arguments the mask reads */
    char probe; /* a stand-in address for MLA: never dereferenced */
    attn_call *call = &bc.call;
    call->q_offset = c->has_q_offset ? c->q_offset : ATTN_Q_OFFSET_DEFAULT;
    call->q_offset_set = c->has_q_offset;
    call->inputs = in.bind;
    call->ninputs = in.n;
    call->threads = c->opts.threads;
    int64_t sq[4] = {B, H, Lq, d->qk_dim}, sk[4] = {B, d->kv_heads, Lk, d->qk_dim},
            sv[4] = {B, d->kv_heads, Lk, d->v_dim}, so[4] = {B, H, Lq, d->v_dim};
    cli_tensor(&call->q, bc.mla ? &probe : buf[0], 4, sq);
    cli_tensor(&call->k, bc.mla ? &probe : buf[1], 4, sk);
    cli_tensor(&call->v, bc.mla ? &probe : buf[2], 4, sv);
    cli_tensor(&call->o, bc.mla ? &probe : buf[3], 4, so);
    attn_rt_args args;
    if (rt_check_call(d, call, &args, !bc.mla, &err) != ATTN_OK) { /* MLA: stand-ins share one address */
        rc = cli_status_error(&err);
        goto done;
    }
    if (bc.mla) {
        attn_mla_call *mc = &bc.mcall;
        attn_tensor *mt[NBUF] = {&mc->q_nope, &mc->q_rope, &mc->c_kv, &mc->k_rope, &mc->w_uk, &mc->w_uv, &mc->o};
        for (int i = 0; i < nbuf; i++) cli_tensor(mt[i], buf[i], ndims[i], shapes[i]);
        mc->q_offset = call->q_offset;
        mc->q_offset_set = call->q_offset_set;
        mc->inputs = in.bind;
        mc->ninputs = in.n;
        mc->threads = c->opts.threads;
        mc->absorb = c->opts.absorb;
    }

    if (c->grad) {
        if (attn_kernel_grad_inputs(kern, NULL) < 0) {
            rc = cli_error(EXIT_INPUT, "'%s' has no backward%s", d->name,
                           bc.mla ? " (an MLA kernel needs compute = f32 and its up-projected variant: absorb = off or auto)"
                                  : " (compute = bf16/int8 is for inference)");
            goto done;
        }
        /* lse, do, then a gradient shaped like each tensor the forward reads */
        int ng = bc.mla ? 6 : 3;
        const int64_t *gs[2 + 6] = {so, so, sq, sk, sv};
        int gnd[2 + 6] = {3, 4, 4, 4, 4};
        for (int i = 0; bc.mla && i < 6; i++) gs[2 + i] = shapes[i], gnd[2 + i] = ndims[i];
        for (int i = 0; i < 2 + ng; i++) {
            size_t n = 1;
            for (int k = 0; k < gnd[i]; k++) n *= (size_t)gs[i][k];
            if (!(gbuf[i] = calloc(n + 1, sizeof(float)))) {
                rc = cli_error(EXIT_INPUT, "out of memory");
                goto done;
            }
            if (i == 1) cli_random_fill(gbuf[i], n, ATTN_F32, &seed);
        }
        /* the forward's o and lse, once, before the timed backward calls */
        attn_status st;
        if (bc.mla) {
            cli_tensor(&bc.mcall.lse, gbuf[0], 3, so);
            st = attn_run_mla(kern, &bc.mcall, NULL, &err);
        } else {
            cli_tensor(&call->lse, gbuf[0], 3, so);
            st = attn_run(kern, call, &err);
        }
        if (st != ATTN_OK) {
            rc = cli_status_error(&err);
            goto done;
        }
        bc.grad = true;
        if (bc.mla) {
            attn_tensor *mt[6] = {&bc.mg.dq_nope, &bc.mg.dq_rope, &bc.mg.dc_kv, &bc.mg.dk_rope, &bc.mg.dw_uk, &bc.mg.dw_uv};
            cli_tensor(&bc.mg.dout, gbuf[1], 4, so);
            for (int i = 0; i < 6; i++) cli_tensor(mt[i], gbuf[2 + i], ndims[i], shapes[i]);
        } else {
            cli_tensor(&bc.g.dout, gbuf[1], 4, so);
            cli_tensor(&bc.g.dq, gbuf[2], 4, sq);
            cli_tensor(&bc.g.dk, gbuf[3], 4, sk);
            cli_tensor(&bc.g.dv, gbuf[4], 4, sv);
        }
    }

    int reps = c->reps;
    double ms, ms_min;
    if ((rc = cli_time_calls(bench_run, &bc, &reps, &ms, &ms_min))) goto done;

    bool exact = true;
    attn_status mst = ATTN_OK;
    double visible_pairs = mask_count_visible(f, &args, d->heads, 1e8, &exact, &mst);
    if (mst != ATTN_OK) {
        rc = mask_error(mst);
        goto done;
    }
    double all_pairs = (double)B * d->heads * (double)Lq * (double)Lk;
    double visible = visible_pairs / all_pairs;
    /* useful flops per visible pair and head: forward 2 (qk + v); backward 2 (3 qk + 2 v) */
    double per_pair = c->grad ? 2.0 * (3 * d->qk_dim + 2 * d->v_dim) : 2.0 * (d->qk_dim + d->v_dim);
    double gflops = ms > 0 ? per_pair * visible_pairs / (ms * 1e6) : 0;
    int threads = c->opts.threads ? c->opts.threads : attn_rt_cpu_count();
    /* the K/V (MLA: latent) storage the call covers */
    attn_dtype kvt = ir_kv_dtype(f); /* int8 K/V: one byte an element, and an f32 scale per row of K and of V */
    double kv_elem = (double)cli_elem_size(kvt), kv_scales = kvt == ATTN_I8 ? 8.0 : 0.0;
    attn_mla_info mi = {0};
    if (bc.mla) attn_kernel_mla_info(kern, &mi);
    double kv_bytes = bc.mla ? (double)B * (double)Lk * (double)(f->mla.kv_rank + f->mla.rope_dim) *
                                   (double)cli_elem_size(mi.kv_dtype)
                             : (double)B * d->kv_heads * (double)Lk * ((double)(d->qk_dim + d->v_dim) * kv_elem + kv_scales);
    char warm_ms[32] = "null";
    if (compile_ms_warm >= 0) snprintf(warm_ms, sizeof warm_ms, "%.3f", compile_ms_warm);
    char mla_json[64] = "", mla_text[64] = "";
    if (bc.mla) {
        snprintf(mla_json, sizeof mla_json, ", \"mla\": true, \"absorbed\": %s", bc.absorbed ? "true" : "false");
        snprintf(mla_text, sizeof mla_text, ", MLA %s", bc.absorbed ? "absorbed" : "up-projected");
    }

    if (c->json) {
        printf("{\"kernel\": \"%s\", \"batch\": %" PRId64 ", \"q_len\": %" PRId64 ", \"kv_len\": %" PRId64
               ", \"heads\": %d, \"kv_heads\": %d, \"qk_dim\": %d, \"v_dim\": %d, \"dtype\": \"%s\", "
               "\"compute\": \"%s\", \"kv_dtype\": \"%s\", "
               "\"q_offset\": %" PRId64 ", \"threads\": %d, \"reps\": %d, \"ms\": %.6f, \"ms_min\": %.6f, "
               "\"gflops\": %.4f, \"visible\": %.6f, \"visible_exact\": %s, \"compile_ms\": %.3f, "
               "\"compile_ms_warm\": %s, \"grad\": %s, \"kv_bytes\": %.0f%s}\n",
               d->name, B, Lq, Lk, d->heads, d->kv_heads, d->qk_dim, d->v_dim, ir_dtype_name(dtype),
               ir_compute_name(f->compute), ir_dtype_name(bc.mla ? mi.kv_dtype : ir_kv_dtype(f)), args.q_offset, threads, reps, ms, ms_min, gflops, visible, exact ? "true" : "false", compile_ms,
               warm_ms, c->grad ? "true" : "false", kv_bytes, mla_json);
    } else {
        printf("kernel      %s (%s, compute %s%s)\n", d->name, ir_dtype_name(dtype), ir_compute_name(f->compute), mla_text);
        printf("shape       batch %" PRId64 ", heads %d (kv %d), q_len %" PRId64 ", kv_len %" PRId64
               ", head_dim %d, v_dim %d, q_offset %" PRId64 "\n",
               B, d->heads, d->kv_heads, Lq, Lk, d->qk_dim, d->v_dim, args.q_offset);
        printf("threads     %d\n", threads);
        if (compile_ms_warm >= 0) printf("compile     %.1f ms cold, %.1f ms warm (kernel cache)\n", compile_ms, compile_ms_warm);
        else printf("compile     %.1f ms cold (kernel cache off)\n", compile_ms);
        printf("time        %.3f ms median, %.3f ms min (%d runs)\n", ms, ms_min, reps);
        printf("visible     %.2f%% of query-key pairs%s\n", visible * 100, exact ? "" : " (sampled)");
        printf("throughput  %.2f GFLOP/s (useful flops only%s)\n", gflops, c->grad ? ", of the backward" : "");
        printf("kv read     %.1f MB of K/V, %.2f GB/s\n", kv_bytes / 1e6, ms > 0 ? kv_bytes / (ms * 1e6) : 0);
    }
done:
    for (int i = 0; i < NBUF + 1; i++) free(gbuf[i]);
    for (int i = 0; i < NBUF; i++) free(buf[i]);
    cli_inputs_free(&in);
    attn_kernel_free(kern);
    ir_module_free(m);
    return rc;
}

// mask

#define MASK_TEXT_MAX 128             /* rows and columns of the text drawing */
#define MASK_EXACT_LIMIT ((int64_t)1 << 24) /* pairs evaluated one by one; beyond, sampled */
#define MASK_SVG_TILE 16

typedef enum MaskClass { MASK_EMPTY, MASK_FULL, MASK_PARTIAL } MaskClass;

typedef struct MaskView {
    MaskEval ev;
    int64_t rows, cols;    /* q_len, kv_len */
    unsigned char *bits;   /* rows*cols visibility when exact, else NULL (sampled) */
} MaskView;

static bool view_at(MaskView *v, int64_t i, int64_t j) {
    if (v->bits) {
        int64_t p = i * v->cols + j;
        return v->bits[p >> 3] >> (p & 7) & 1;
    }
    return mask_at(&v->ev, i, j);
}

/* Classifies the rectangle [r0,r1) x [c0,c1): every pair when exact, else a grid of samples. */
static MaskClass view_class(MaskView *v, int64_t r0, int64_t r1, int64_t c0, int64_t c1, int64_t *nvis) {
    /* exact: every row and column; sampled: 9 evenly spread ones, both edges included */
    int64_t nr = v->bits || r1 - r0 <= 9 ? r1 - r0 : 9, nc = v->bits || c1 - c0 <= 9 ? c1 - c0 : 9;
    int64_t seen = 0, vis = 0;
    for (int64_t a = 0; a < nr; a++) {
        int64_t i = nr == r1 - r0 ? r0 + a : r0 + a * (r1 - r0 - 1) / (nr - 1);
        for (int64_t b = 0; b < nc; b++) {
            int64_t j = nc == c1 - c0 ? c0 + b : c0 + b * (c1 - c0 - 1) / (nc - 1);
            vis += view_at(v, i, j);
            seen++;
        }
    }
    if (nvis) *nvis = vis;
    return vis == 0 ? MASK_EMPTY : vis == seen ? MASK_FULL : MASK_PARTIAL;
}

static void mask_text(MaskView *v, const IrFunc *f, const attn_rt_args *a, double visible, bool exact) {
    int64_t rstep = (v->rows + MASK_TEXT_MAX - 1) / MASK_TEXT_MAX, cstep = (v->cols + MASK_TEXT_MAX - 1) / MASK_TEXT_MAX;
    double total = (double)v->rows * (double)v->cols;
    printf("%s: q_len %" PRId64 ", kv_len %" PRId64 ", q_offset %" PRId64 " (batch 0, head 0): ", f->name, a->q_len,
           a->kv_len, a->q_offset);
    if (exact) printf("%.0f of %.0f pairs visible (%.1f%%)\n", visible, total, 100 * visible / total);
    else printf("about %.1f%% of %.0f pairs visible (sampled)\n", 100 * visible / total, total);
    if (rstep > 1 || cstep > 1)
        printf("(downsampled: one character per %" PRId64 "x%" PRId64 " pairs; '+' has both%s)\n", rstep, cstep,
               exact ? "" : "; sampled");
    char *line = malloc((size_t)MASK_TEXT_MAX + 2);
    if (!line) return;
    for (int64_t r0 = 0; r0 < v->rows; r0 += rstep) {
        int n = 0;
        for (int64_t c0 = 0; c0 < v->cols; c0 += cstep) {
            int64_t r1 = r0 + rstep < v->rows ? r0 + rstep : v->rows, c1 = c0 + cstep < v->cols ? c0 + cstep : v->cols;
            MaskClass k = view_class(v, r0, r1, c0, c1, NULL);
            line[n++] = k == MASK_FULL ? '#' : k == MASK_EMPTY ? '.' : '+';
        }
        line[n] = '\0';
        puts(line);
    }
    free(line);
}

static int mask_svg(MaskView *v, const IrFunc *f, const attn_rt_args *a, const char *path, bool exact) {
    int64_t side = v->rows > v->cols ? v->rows : v->cols;
    int64_t tile = MASK_SVG_TILE;
    while ((side + tile - 1) / tile > 256) tile *= 2; /* at most 256 tiles a side */
    bool cells = v->rows <= 1024 && v->cols <= 1024;  /* draw visible pairs, not only tiles */
    double px = side <= 64 ? 12 : side <= 256 ? 4 : side <= 1024 ? 1 : 1024.0 / (double)side;
    if (!cells) px = 1024.0 / (double)side;
    double W = (double)v->cols * px, H = (double)v->rows * px;
    FILE *out = fopen(path, "w");
    if (!out) return cli_error(EXIT_INPUT, "%s: %s", path, strerror(errno));
    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.3f %.3f\" "
            "shape-rendering=\"crispEdges\">\n",
            W, H + 40, W, H + 40);
    fprintf(out, "<title>%s: q_len %" PRId64 ", kv_len %" PRId64 ", q_offset %" PRId64 "%s</title>\n", f->name,
            a->q_len, a->kv_len, a->q_offset, exact ? "" : " (sampled)");
    static const char *const fill[] = {"#f1f3f5", "#1c4e80", "#ffe8a3"}; /* empty, full, partial */
    int64_t counts[3] = {0, 0, 0}, ntiles = (v->cols + tile - 1) / tile;
    MaskClass *row = malloc((size_t)ntiles * sizeof *row);
    if (!row) {
        fclose(out);
        return cli_error(EXIT_INPUT, "out of memory");
    }
    for (int64_t r0 = 0; r0 < v->rows; r0 += tile) {
        int64_t r1 = r0 + tile < v->rows ? r0 + tile : v->rows;
        for (int64_t t = 0; t < ntiles; t++) {
            int64_t c0 = t * tile, c1 = c0 + tile < v->cols ? c0 + tile : v->cols;
            row[t] = view_class(v, r0, r1, c0, c1, NULL);
            counts[row[t]]++;
        }
        for (int64_t t = 0; t < ntiles;) { /* one rect per run of tiles of one class */
            int64_t t0 = t;
            while (t < ntiles && row[t] == row[t0]) t++;
            int64_t c0 = t0 * tile, c1 = t * tile < v->cols ? t * tile : v->cols;
            fprintf(out, "<rect x=\"%.3f\" y=\"%.3f\" width=\"%.3f\" height=\"%.3f\" fill=\"%s\"/>\n",
                    (double)c0 * px, (double)r0 * px, (double)(c1 - c0) * px, (double)(r1 - r0) * px, fill[row[t0]]);
        }
        if (!cells) continue;
        for (int64_t t = 0; t < ntiles; t++) {
            if (row[t] != MASK_PARTIAL) continue;
            int64_t c0 = t * tile, c1 = c0 + tile < v->cols ? c0 + tile : v->cols;
            for (int64_t i = r0; i < r1; i++) /* runs of visible pairs in each row */
                for (int64_t j = c0; j < c1;) {
                    if (!view_at(v, i, j)) {
                        j++;
                        continue;
                    }
                    int64_t j0 = j;
                    while (j < c1 && view_at(v, i, j)) j++;
                    fprintf(out, "<rect x=\"%.3f\" y=\"%.3f\" width=\"%.3f\" height=\"%.3f\" fill=\"%s\"/>\n",
                            (double)j0 * px, (double)i * px, (double)(j - j0) * px, px, fill[MASK_FULL]);
                }
        }
    }
    free(row);
    fprintf(out,
            "<text x=\"2\" y=\"%.1f\" font-family=\"monospace\" font-size=\"11\">%" PRId64 "x%" PRId64
            " tiles: %" PRId64 " empty, %" PRId64 " full, %" PRId64 " partial</text>\n",
            H + 15, tile, tile, counts[MASK_EMPTY], counts[MASK_FULL], counts[MASK_PARTIAL]);
    fprintf(out,
            "<rect x=\"2\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\" stroke=\"#999\"/><text x=\"15\" "
            "y=\"%.1f\" font-family=\"monospace\" font-size=\"10\">empty</text>"
            "<rect x=\"60\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"73\" y=\"%.1f\" "
            "font-family=\"monospace\" font-size=\"10\">full / visible</text>"
            "<rect x=\"165\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"178\" y=\"%.1f\" "
            "font-family=\"monospace\" font-size=\"10\">partial</text>\n",
            H + 24, fill[0], H + 33, H + 24, fill[1], H + 33, H + 24, fill[2], H + 33);
    fputs("</svg>\n", out);
    if (fclose(out) != 0) return cli_error(EXIT_INPUT, "%s: write error", path);
    return 0;
}

static int cmd_mask(Cli *c) {
    if (!c->q_len || !c->kv_len) return cli_usage(CMD_MASK, "mask needs --q-len N and --kv-len N");
    int rc = 0;
    IrModule *m = cli_load(c, &rc);
    if (!m) return rc;
    CliInputs in;
    memset(&in, 0, sizeof in);
    MaskView view;
    memset(&view, 0, sizeof view);
    attn_error err = {0};
    IrFunc *f = drv_select(m, c->opts.kernel, &err);
    if (!f) {
        rc = cli_select_error(c, &err);
        goto done;
    }
    attn_rt_desc d;
    attn_rt_input_desc idesc[ATTN_MAX_INPUTS];
    drv_desc_init(f, &d, idesc, NULL);
    d.page_size = 0; /* a paged block: the mask of sequence 0 with these lengths, as a contiguous call */
    /* batch: from the first --in input with a batch dim, else 1 */
    int64_t B = 1;
    for (int i = 0; i < c->nins && B == 1; i++) {
        int j = cli_find_desc_input(&d, c->ins[i].name);
        if (j < 0) continue;
        for (int k = 0; k < idesc[j].rank; k++)
            if (idesc[j].dim_kind[k] == ATTN_DIM_BATCH) {
                NpyArray a;
                char msg[512];
                if (npy_read(c->ins[i].path, &a, msg, sizeof msg)) {
                    if (a.ndim == idesc[j].rank && a.shape[k] > 0) B = a.shape[k];
                    npy_free(&a);
                }
                break;
            }
    }
    bool needed[ATTN_MAX_INPUTS] = {0};
    for (int j = 0; j < d.ninputs; j++) needed[j] = cli_expr_reads(f->mask, j);
    char why[160];
    snprintf(why, sizeof why, "the mask of '%s'", f->name);
    if ((rc = cli_load_inputs(c, &d, &in, NULL, true, needed, why, B, c->q_len, c->kv_len))) goto done;

    /* validate sizes and inputs as a call would; the tensors are never touched */
    char probe; /* a stand-in address: the tensors are never touched */
    attn_call call;
    memset(&call, 0, sizeof call);
    cli_tensor(&call.q, &probe, 4, (int64_t[]){B, d.heads, c->q_len, d.qk_dim});
    cli_tensor(&call.k, &probe, 4, (int64_t[]){B, d.kv_heads, c->kv_len, d.qk_dim});
    cli_tensor(&call.v, &probe, 4, (int64_t[]){B, d.kv_heads, c->kv_len, d.v_dim});
    cli_tensor(&call.o, &probe, 4, (int64_t[]){B, d.heads, c->q_len, d.v_dim});
    call.q_offset = c->has_q_offset ? c->q_offset : ATTN_Q_OFFSET_DEFAULT;
    call.q_offset_set = c->has_q_offset;
    call.inputs = in.bind;
    call.ninputs = in.n;
    attn_rt_args args;
    if (rt_check_call(&d, &call, &args, false, &err) != ATTN_OK) { /* stand-ins share one address */
        rc = cli_status_error(&err);
        goto done;
    }

    view.rows = c->q_len;
    view.cols = c->kv_len;
    mask_init(&view.ev, f, &args, 0, 0);
    double total = (double)view.rows * (double)view.cols, visible = 0;
    bool exact = total <= (double)MASK_EXACT_LIMIT;
    if (exact) {
        view.bits = calloc((size_t)(total / 8) + 1, 1);
        if (!view.bits) {
            rc = cli_error(EXIT_INPUT, "out of memory");
            goto done;
        }
        for (int64_t i = 0; i < view.rows; i++)
            for (int64_t j = 0; j < view.cols; j++)
                if (mask_at(&view.ev, i, j)) {
                    int64_t p = i * view.cols + j;
                    view.bits[p >> 3] |= (unsigned char)(1u << (p & 7));
                    visible++;
                }
    } else {
        attn_rt_args one = args; /* batch row 0 and head 0 only */
        one.batch = 1;
        bool sampled_exact;
        visible = mask_count_visible(f, &one, 1, (double)MASK_EXACT_LIMIT, &sampled_exact, &view.ev.status);
    }
    if (view.ev.status != ATTN_OK) {
        rc = mask_error(view.ev.status);
        goto done;
    }
    mask_text(&view, f, &args, visible, exact);
    if (view.ev.status != ATTN_OK) {
        rc = mask_error(view.ev.status);
        goto done;
    }
    if (c->svg) rc = mask_svg(&view, f, &args, c->svg, exact);
done:
    free(view.bits);
    cli_inputs_free(&in);
    ir_module_free(m);
    return rc;
}

// main

// run --ring, bench --ring

#ifdef ATTNC_HAVE_MPI
#include "attn/attn_mpi.h"

/* The ranks' agreement on a local outcome: the largest exit status of any rank (0: all fine). */
static int ring_agree(int rc) {
    int all = rc;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return all;
}

/* Rows of this rank's shard of a packed [A, L, D] tensor of `el`-byte elements, copied to
 * (to_full = false: from) the full one. */
static void ring_rows(void *full, void *shard, size_t el, int64_t A, int64_t L, int64_t D, int R, int rank,
                      attn_shard sh, bool to_full) {
    int64_t b0[2], e0[2];
    int np = attn_ring_shard(L, R, rank, sh, b0, e0);
    int64_t n = attn_ring_shard_rows(L, R, rank, sh);
    for (int64_t a = 0; a < A; a++) {
        int64_t row = 0;
        for (int p = 0; p < np; p++, row += e0[p - 1] - b0[p - 1]) {
            char *f = (char *)full + el * (size_t)((a * L + b0[p]) * D), *s = (char *)shard + el * (size_t)((a * n + row) * D);
            size_t bytes = el * (size_t)((e0[p] - b0[p]) * D);
            if (to_full)
                memcpy(f, s, bytes);
            else
                memcpy(s, f, bytes);
        }
    }
}

/* This rank's shard of a full [A, L, D] tensor of `el`-byte elements (NULL: out of memory). */
static void *ring_shard_of(const void *full, size_t el, int64_t A, int64_t L, int64_t D, int R, int rank,
                           attn_shard sh) {
    int64_t n = attn_ring_shard_rows(L, R, rank, sh);
    void *s = malloc(el * (size_t)(A * n * D) + 4);
    if (s && full) ring_rows((void *)full, s, el, A, L, D, R, rank, sh, false);
    return s;
}

/* Rank 0 gets every rank's shard of a [A, L, D] tensor of `el`-byte elements into `full`. */
static void ring_gather(void *full, const void *mine, size_t el, int64_t A, int64_t L, int64_t D, int R, int rank,
                        attn_shard sh) {
    const int64_t chunk = 1 << 28; /* bytes a message */
    if (rank != 0) {
        int64_t n = A * attn_ring_shard_rows(L, R, rank, sh) * D * (int64_t)el;
        for (int64_t o = 0; o < n; o += chunk)
            MPI_Send((const char *)mine + o, (int)(n - o < chunk ? n - o : chunk), MPI_BYTE, 0, 7401, MPI_COMM_WORLD);
        return;
    }
    ring_rows(full, (void *)mine, el, A, L, D, R, 0, sh, true);
    for (int r = 1; r < R; r++) {
        int64_t n = A * attn_ring_shard_rows(L, R, r, sh) * D * (int64_t)el;
        char *buf = malloc((size_t)n + 1);
        for (int64_t o = 0; o < n; o += chunk) /* out of memory: drained into one byte */
            MPI_Recv(buf ? buf + o : NULL, buf ? (int)(n - o < chunk ? n - o : chunk) : 0, MPI_BYTE, r, 7401,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (buf) ring_rows(full, buf, el, A, L, D, R, r, sh, true);
        free(buf);
    }
}

static void ring_print_stats(const attn_ring_stats *st, int R, int rank, const char *what) {
    attn_ring_stats *all = rank == 0 ? calloc((size_t)R, sizeof *all) : NULL;
    MPI_Gather(st, (int)sizeof *st, MPI_BYTE, all, (int)sizeof *st, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rank != 0 || !all) return;
    for (int r = 0; r < R; r++)
        printf("ring %s: rank %d of %d: sent %" PRId64 " bytes (K/V to %d rank%s), received %" PRId64
               " bytes, computed %d of %d pairs, %.3f ms (%.3f ms waiting)\n",
               what, r, R, all[r].bytes_sent, all[r].sends, all[r].sends == 1 ? "" : "s", all[r].bytes_received,
               all[r].pairs_computed, all[r].pairs_total, all[r].ms_total, all[r].ms_wait);
    free(all);
}

/* run --ring [--grad]: every rank reads the full inputs and works on its shards; rank 0 gathers
 * and writes the outputs. */
/* A rank's ring call: its shards of q, k, v, o and lse in t (NULL: no tensor, the call only
 * carries the options), the inputs and the options of the command line. */
static void ring_call_init(attn_ring_call *rc, const Cli *c, const CliInputs *in, attn_shard sh, void *const *t,
                           int64_t B, int64_t H, int64_t KH, int64_t mq, int64_t mk, int64_t DQ, int64_t DV) {
    memset(rc, 0, sizeof *rc);
    if (t) {
        cli_tensor(&rc->q, t[0], 4, (int64_t[]){B, H, mq, DQ});
        cli_tensor(&rc->k, t[1], 4, (int64_t[]){B, KH, mk, DQ});
        cli_tensor(&rc->v, t[2], 4, (int64_t[]){B, KH, mk, DV});
        cli_tensor(&rc->o, t[3], 4, (int64_t[]){B, H, mq, DV});
        cli_tensor(&rc->lse, t[4], 3, (int64_t[]){B, H, mq});
    }
    rc->q_offset = c->has_q_offset ? c->q_offset : ATTN_Q_OFFSET_DEFAULT;
    rc->q_offset_set = c->has_q_offset;
    rc->inputs = in->bind;
    rc->ninputs = in->n;
    rc->threads = c->opts.threads;
    rc->shard = sh;
}

static int ring_run(Cli *c, int R, int me) {
    int rc = 0;
    attn_kernel *kern = cli_compile(c, &rc);
    const attn_rt_desc *d = kern ? attn_kernel_desc(kern) : NULL;
    attn_shard sh = c->shard ? ATTN_SHARD_ZIGZAG : ATTN_SHARD_CONTIGUOUS;
    enum { NT = 6 }; /* q, k, v, do, o, lse */
    static const char *const tn[NT + 1] = {"q", "k", "v", "do", "o", "lse", NULL};
    NpyArray arr[NT];
    memset(arr, 0, sizeof arr);
    CliInputs in;
    memset(&in, 0, sizeof in);
    const char *paths[NT] = {NULL};
    char msg[512];
    void *sh_t[NT] = {NULL}, *full = NULL;
    float *res[5 + ATTN_MAX_INPUTS] = {NULL}, *full32 = NULL;
    int gin[ATTN_MAX_INPUTS], ngin = kern ? attn_kernel_grad_inputs(kern, gin) : -1;
    attn_input dins[ATTN_MAX_INPUTS];
    if (!rc && attn_kernel_is_mla(kern)) rc = cli_error(EXIT_INPUT, "--ring: MLA kernels do not run over the ring yet");
    if (!rc && c->grad && ngin < 0)
        rc = cli_error(EXIT_INPUT, "'%s' has no backward (compute = bf16/int8 is for inference)", d->name);
    /* as run: q, k, v (and o) converted to the block's storage types, do and lse f32 */
    attn_dtype dtype = d ? d->dtype : ATTN_F32, ty[NT];
    for (int t = 0; t < NT; t++) ty[t] = t == 3 || t == 5 ? ATTN_F32 : kern ? cli_call_dtype(kern, t, dtype) : ATTN_F32;
    for (int i = 0; i < c->nouts && !rc; i++) {
        const char *n = c->outs[i].name;
        bool ok = c->grad ? !strcmp(n, "dq") || !strcmp(n, "dk") || !strcmp(n, "dv") : !strcmp(n, "o") || !strcmp(n, "lse");
        for (int j = 0; c->grad && j < ngin && !ok; j++) ok = n[0] == 'd' && !strcmp(n + 1, d->inputs[gin[j]].name);
        if (!ok) rc = cli_error(EXIT_INPUT, "--out %s: not an output of %s", n, c->grad ? "--grad" : "run");
        for (int j = 0; j < i && !rc; j++)
            if (!strcmp(n, c->outs[j].name)) rc = cli_error(EXIT_INPUT, "--out %s is given twice", n);
    }
    for (int i = 0; i < c->nins && !rc; i++)
        for (int t = 0; t < (c->grad ? NT : 3); t++)
            if (!strcmp(c->ins[i].name, tn[t])) {
                if (paths[t]) rc = cli_error(EXIT_INPUT, "--in %s is given twice", tn[t]);
                paths[t] = c->ins[i].path;
            }
    for (int t = 0; t < (c->grad ? 4 : 3) && !rc; t++)
        if (!paths[t]) rc = cli_error(EXIT_INPUT, "missing --in %s=FILE.npy", tn[t]);
    if (!rc && c->grad && !paths[4] != !paths[5]) rc = cli_error(EXIT_INPUT, "give both --in o= and --in lse= (or neither)");
    for (int t = 0; t < NT && !rc; t++) {
        if (!paths[t]) continue;
        int nd = t == 5 ? 3 : 4;
        if (!npy_read(paths[t], &arr[t], msg, sizeof msg)) rc = cli_error(EXIT_INPUT, "%s", msg);
        else if (arr[t].ndim != nd)
            rc = cli_error(EXIT_INPUT, "%s: %s has %d dims, expected %d", paths[t], tn[t], arr[t].ndim, nd);
        else if (!cli_to_dtype(&arr[t], ty[t], tn[t], paths[t]))
            rc = EXIT_INPUT;
    }
    int64_t B = arr[0].shape[0], Lq = arr[0].shape[2], Lk = arr[1].shape[2], H = d ? d->heads : 0,
            KH = d ? d->kv_heads : 0, DQ = d ? d->qk_dim : 0, DV = d ? d->v_dim : 0;
    if (!rc) rc = cli_load_inputs(c, d, &in, tn, false, NULL, NULL, B, Lq, Lk);
    /* shapes: every rank checks the full tensors it read before the ring starts */
    if (!rc) {
        const int64_t want[NT][4] = {{-1, H, -1, DQ}, {B, KH, -1, DQ}, {B, KH, Lk, DV},
                                     {B, H, Lq, DV}, {B, H, Lq, DV}, {B, H, Lq, 0}};
        for (int t = 0; t < NT && !rc; t++)
            for (int k = 0; paths[t] && k < arr[t].ndim && !rc; k++)
                if (want[t][k] >= 0 && arr[t].shape[k] != want[t][k])
                    rc = cli_error(EXIT_INPUT, "%s: %s dim %d is %" PRId64 ", expected %" PRId64, paths[t], tn[t], k,
                                   arr[t].shape[k], want[t][k]);
    }
    rc = ring_agree(rc); /* a rank that failed here said why; the others follow it */
    if (!rc) { /* the ranks must have read the same sizes: compared before anything is sharded */
        int64_t sz[NT + ATTN_MAX_INPUTS][ATTN_MAX_DIMS + 1], mx[2][NT + ATTN_MAX_INPUTS][ATTN_MAX_DIMS + 1];
        memset(sz, 0, sizeof sz);
        for (int t = 0; t < NT + in.n; t++) {
            const NpyArray *a = t < NT ? &arr[t] : &in.arr[t - NT];
            sz[t][0] = a->ndim;
            for (int k = 0; k < a->ndim && k < ATTN_MAX_DIMS; k++) sz[t][1 + k] = a->shape[k];
        }
        int64_t *flat = &sz[0][0], n = (int64_t)(sizeof sz / sizeof sz[0][0]);
        for (int64_t i = 0; i < n; i++) {
            (&mx[0][0][0])[i] = flat[i];
            (&mx[1][0][0])[i] = -flat[i];
        }
        MPI_Allreduce(MPI_IN_PLACE, mx, (int)(2 * n), MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
        for (int t = 0; t < NT + in.n && !rc; t++)
            for (int k = 0; k <= ATTN_MAX_DIMS && !rc; k++)
                if (mx[0][t][k] != -mx[1][t][k]) {
                    rc = EXIT_INPUT;
                    if (me == 0)
                        cli_error(rc, "the ranks read inputs of different sizes: %s %s%d is %" PRId64
                                  " on one rank and %" PRId64 " on another (every rank reads the same full inputs)",
                                  t < NT ? tn[t] : d->inputs[t - NT].name, k ? "dim " : "rank", k ? k - 1 : 0,
                                  -mx[1][t][k], mx[0][t][k]);
                }
    }
    int64_t mq = attn_ring_shard_rows(Lq, R, me, sh), mk = attn_ring_shard_rows(Lk, R, me, sh);
    if (!rc) {
        const int64_t A[NT] = {B * H, B * KH, B * KH, B * H, B * H, B * H}, L[NT] = {Lq, Lk, Lk, Lq, Lq, Lq},
                      D[NT] = {DQ, DQ, DV, DV, DV, 1};
        for (int t = 0; t < NT && !rc; t++)
            if ((paths[t] || t >= 4) &&
                !(sh_t[t] = ring_shard_of(paths[t] ? arr[t].data : NULL, cli_elem_size(ty[t]), A[t], L[t], D[t], R, me, sh)))
                rc = cli_error(EXIT_INPUT, "out of memory");
        for (int t = 0; t < 3 && !rc; t++)
            if (!(res[t] = malloc(sizeof(float) * (size_t)(t == 0 ? B * H * mq * DQ : B * KH * mk * (t == 1 ? DQ : DV)) + 1)))
                rc = cli_error(EXIT_INPUT, "out of memory");
    }
    rc = ring_agree(rc); /* a rank that failed here said why; the others follow it */
    if (rc) goto done;
    attn_ring_call rcall;
    ring_call_init(&rcall, c, &in, sh, (void *const[]){sh_t[0], sh_t[1], sh_t[2], sh_t[4], sh_t[5]}, B, H, KH, mq, mk,
                   DQ, DV);
    attn_error err = {0};
    attn_ring_stats st;
    attn_status s = ATTN_OK;
    if (!c->grad || !paths[4]) {
        s = attn_ring_run(kern, &rcall, MPI_COMM_WORLD, &st, &err);
        if (!s && c->stats) ring_print_stats(&st, R, me, "forward");
    }
    attn_grad_call g;
    memset(&g, 0, sizeof g);
    if (!s && c->grad) {
        cli_tensor(&g.dout, sh_t[3], 4, (int64_t[]){B, H, mq, DV});
        cli_tensor(&g.dq, res[0], 4, (int64_t[]){B, H, mq, DQ});
        cli_tensor(&g.dk, res[1], 4, (int64_t[]){B, KH, mk, DQ});
        cli_tensor(&g.dv, res[2], 4, (int64_t[]){B, KH, mk, DV});
        for (int j = 0; j < ngin; j++) {
            const attn_tensor *it = &in.bind[gin[j]].t;
            int64_t n = 1;
            for (int k = 0; k < it->ndim; k++) n *= it->shape[k];
            res[5 + j] = calloc((size_t)n + 1, sizeof(float));
            dins[j].name = d->inputs[gin[j]].name;
            cli_tensor(&dins[j].t, res[5 + j], it->ndim, it->shape);
        }
        g.dinputs = dins;
        g.ndinputs = ngin;
        s = attn_ring_run_backward(kern, &rcall, &g, MPI_COMM_WORLD, &st, &err);
        if (!s && c->stats) ring_print_stats(&st, R, me, "backward");
    }
    if (s) { /* the same status and message on every rank: rank 0 says it */
        rc = cli_status_exit(s);
        if (me == 0) cli_error(rc, "%s", err.message);
        goto done;
    }
    if (me == 0 && c->nouts == 0) cli_note("no --out given: nothing written");
    for (int i = 0; i < c->nouts; i++) {
        const char *n = c->outs[i].name;
        int64_t shape[4] = {B, H, Lq, DV}, A = B * H, L = Lq, D = DV;
        const void *mine = sh_t[4];
        attn_dtype mt = ty[4]; /* o in its storage type, written as f32 */
        int nd = 4;
        if (!strcmp(n, "lse")) {
            mine = sh_t[5];
            mt = ATTN_F32;
            nd = 3;
            D = 1;
        } else if (!strcmp(n, "dq")) {
            mine = res[0];
            mt = ATTN_F32;
            shape[3] = D = DQ;
        } else if (!strcmp(n, "dk") || !strcmp(n, "dv")) {
            mine = res[n[1] == 'k' ? 1 : 2];
            mt = ATTN_F32;
            shape[1] = KH;
            shape[2] = L = Lk;
            shape[3] = D = n[1] == 'k' ? DQ : DV;
            A = B * KH;
        } else if (strcmp(n, "o")) { /* d<input>: the same on every rank */
            for (int j = 0; j < ngin; j++)
                if (!strcmp(n + 1, d->inputs[gin[j]].name) && me == 0 &&
                    !npy_write(c->outs[i].path, NPY_F32, dins[j].t.data, dins[j].t.ndim, dins[j].t.shape, msg, sizeof msg))
                    rc = cli_error(EXIT_INPUT, "%s", msg);
            continue;
        }
        free(full);
        free(full32);
        full32 = NULL;
        full = me == 0 ? malloc(cli_elem_size(mt) * (size_t)(A * L * D) + 1) : NULL;
        ring_gather(full, mine, cli_elem_size(mt), A, L, D, R, me, sh);
        if (full && mt != ATTN_F32 && !(full32 = cli_widen(full, mt, (size_t)(A * L * D)))) {
            free(full);
            full = NULL;
        }
        if (me == 0 && full && !npy_write(c->outs[i].path, NPY_F32, full32 ? full32 : full, nd, shape, msg, sizeof msg))
            rc = cli_error(EXIT_INPUT, "%s", msg);
        else if (me == 0 && !full)
            rc = cli_error(EXIT_INPUT, "out of memory");
    }
    rc = ring_agree(rc);
done:
    for (int t = 0; t < NT; t++) {
        npy_free(&arr[t]);
        free(sh_t[t]);
    }
    for (int t = 0; t < 5 + ATTN_MAX_INPUTS; t++) free(res[t]);
    free(full);
    free(full32);
    cli_inputs_free(&in);
    attn_kernel_free(kern);
    return rc;
}

/* bench --ring: the ring's forward (or --grad backward) on random tensors, each rank on its
 * shards; rank 0 prints the median time and the largest bytes sent by a rank. */
static int ring_bench(Cli *c, int R, int me) {
    int rc = 0;
    double compile_ms = 0, compile_ms_warm = -1; /* as bench: cold (cache bypassed), then warm */
    attn_kernel *kern = cli_bench_compile(c, &rc, &compile_ms, &compile_ms_warm);
    const attn_rt_desc *d = kern ? attn_kernel_desc(kern) : NULL;
    if (!rc && attn_kernel_is_mla(kern)) rc = cli_error(EXIT_INPUT, "--ring: MLA kernels do not run over the ring yet");
    attn_shard sh = c->shard ? ATTN_SHARD_ZIGZAG : ATTN_SHARD_CONTIGUOUS;
    int64_t B = c->batch ? c->batch : 1, Lq = c->q_len ? c->q_len : 1024, Lk = c->kv_len ? c->kv_len : Lq;
    int64_t H = d ? d->heads : 0, KH = d ? d->kv_heads : 0, DQ = d ? d->qk_dim : 0, DV = d ? d->v_dim : 0;
    int64_t mq = attn_ring_shard_rows(Lq, R, me, sh), mk = attn_ring_shard_rows(Lk, R, me, sh);
    CliInputs in;
    memset(&in, 0, sizeof in);
    static const char *const tn[] = {"q", "k", "v", NULL};
    if (!rc) rc = cli_load_inputs(c, d, &in, tn, true, NULL, NULL, B, Lq, Lk);
    size_t n[9] = {(size_t)(B * H * mq * DQ), (size_t)(B * KH * mk * DQ), (size_t)(B * KH * mk * DV),
                   (size_t)(B * H * mq * DV), (size_t)(B * H * mq), (size_t)(B * H * mq * DV),
                   (size_t)(B * H * mq * DQ), (size_t)(B * KH * mk * DQ), (size_t)(B * KH * mk * DV)};
    /* q, k, v, o in the block's storage types; lse, do and the gradients f32 */
    attn_dtype ty[9] = {ATTN_F32};
    for (int i = 0; kern && i < 4; i++) ty[i] = cli_call_dtype(kern, i == 3 ? 0 : i, d->dtype);
    void *t[9] = {NULL};
    uint64_t seed = 0x5eed + (uint64_t)me;
    for (int i = 0; i < 9 && !rc; i++)
        if (!(t[i] = malloc(cli_elem_size(ty[i]) * n[i] + 4))) rc = cli_error(EXIT_INPUT, "out of memory");
        else if (i < 3 || i == 5) cli_random_fill(t[i], n[i], ty[i], &seed);
    rc = ring_agree(rc);
    attn_ring_call rcall;
    ring_call_init(&rcall, c, &in, sh, rc ? NULL : (void *const[]){t[0], t[1], t[2], t[3], t[4]}, B, H, KH, mq, mk,
                   DQ, DV);
    attn_grad_call g;
    memset(&g, 0, sizeof g);
    cli_tensor(&g.dout, t[5], 4, (int64_t[]){B, H, mq, DV});
    cli_tensor(&g.dq, t[6], 4, (int64_t[]){B, H, mq, DQ});
    cli_tensor(&g.dk, t[7], 4, (int64_t[]){B, KH, mk, DQ});
    cli_tensor(&g.dv, t[8], 4, (int64_t[]){B, KH, mk, DV});
    attn_error err = {0};
    attn_ring_stats st;
    memset(&st, 0, sizeof st);
    attn_status s = rc ? ATTN_OK : attn_ring_run(kern, &rcall, MPI_COMM_WORLD, &st, &err); /* warm-up */
    int reps = c->reps ? c->reps : 5;
    double *ms = calloc((size_t)reps, sizeof *ms);
    for (int r = 0; r < reps && !rc && !s; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = cli_now_ms();
        s = c->grad ? attn_ring_run_backward(kern, &rcall, &g, MPI_COMM_WORLD, &st, &err)
                    : attn_ring_run(kern, &rcall, MPI_COMM_WORLD, &st, &err);
        double local = cli_now_ms() - t0;
        MPI_Allreduce(&local, &ms[r], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD); /* the slowest rank's */
    }
    if (!rc && s) {
        rc = cli_status_exit(s);
        if (me == 0) cli_error(rc, "%s", err.message);
    }
    if (!rc) {
        int64_t sent = st.bytes_sent, maxsent = 0;
        int pairs = st.pairs_computed, allpairs = 0;
        MPI_Reduce(&sent, &maxsent, 1, MPI_INT64_T, MPI_MAX, 0, MPI_COMM_WORLD);
        MPI_Reduce(&pairs, &allpairs, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
        qsort(ms, (size_t)reps, sizeof *ms, cli_cmp_double);
        if (me == 0) {
            double med = ms[reps / 2];
            /* the whole sequence's visible pairs, useful flops and K/V bytes, as bench counts them */
            double visible_pairs = 0, all_pairs = (double)B * (double)H * (double)Lq * (double)Lk;
            bool exact = true;
            attn_status mst = ATTN_OK;
            int lrc = 0;
            IrModule *m = cli_load(c, &lrc);
            attn_error merr = {0};
            IrFunc *f = m ? drv_select(m, c->opts.kernel, &merr) : NULL;
            if (f) {
                char probe; /* stand-ins: the tensors are never touched */
                attn_call pc;
                attn_rt_args args;
                memset(&pc, 0, sizeof pc);
                cli_tensor(&pc.q, &probe, 4, (int64_t[]){B, H, Lq, DQ});
                cli_tensor(&pc.k, &probe, 4, (int64_t[]){B, KH, Lk, DQ});
                cli_tensor(&pc.v, &probe, 4, (int64_t[]){B, KH, Lk, DV});
                cli_tensor(&pc.o, &probe, 4, (int64_t[]){B, H, Lq, DV});
                pc.q_offset = c->has_q_offset ? c->q_offset : ATTN_Q_OFFSET_DEFAULT;
                pc.q_offset_set = c->has_q_offset;
                pc.inputs = in.bind;
                pc.ninputs = in.n;
                if ((mst = rt_check_call(d, &pc, &args, false, &merr)) == ATTN_OK)
                    visible_pairs = mask_count_visible(f, &args, H, 1e8, &exact, &mst);
                else
                    rc = cli_error(cli_status_exit(mst), "%s", merr.message);
            } else {
                rc = lrc ? lrc : cli_error(EXIT_INPUT, "%s", merr.message);
            }
            ir_module_free(m);
            if (!rc && mst != ATTN_OK) rc = mask_error(mst); /* as bench: a mask read out of range */
            double visible = all_pairs > 0 ? visible_pairs / all_pairs : 0;
            double per_pair = c->grad ? 2.0 * (3 * DQ + 2 * DV) : 2.0 * (DQ + DV);
            double gflops = med > 0 ? per_pair * visible_pairs / (med * 1e6) : 0;
            /* int8 K/V: one byte an element, and an f32 scale per row of K and of V */
            double kv_bytes = (double)B * (double)KH * (double)Lk *
                              ((double)(DQ + DV) * (double)cli_elem_size(ty[1]) + (ty[1] == ATTN_I8 ? 8.0 : 0.0));
            char warm_ms[32] = "null";
            if (compile_ms_warm >= 0) snprintf(warm_ms, sizeof warm_ms, "%.3f", compile_ms_warm);
            if (!rc && c->json)
                printf("{\"kernel\": \"%s\", \"ring\": true, \"ranks\": %d, \"shard\": \"%s\", \"grad\": %s, "
                       "\"batch\": %" PRId64 ", \"q_len\": %" PRId64 ", \"kv_len\": %" PRId64
                       ", \"threads\": %d, \"reps\": %d, \"ms\": %.6f, \"ms_min\": %.6f, \"gflops\": %.4f, "
                       "\"visible\": %.6f, \"visible_exact\": %s, \"compile_ms\": %.3f, \"compile_ms_warm\": %s, "
                       "\"kv_bytes\": %.0f, \"max_bytes_sent\": %" PRId64 ", \"pairs\": %d, \"pairs_total\": %d}\n",
                       d->name, R, sh ? "zigzag" : "contiguous", c->grad ? "true" : "false", B, Lq, Lk,
                       c->opts.threads ? c->opts.threads : attn_rt_cpu_count(), reps, med, ms[0], gflops, visible,
                       exact ? "true" : "false", compile_ms, warm_ms, kv_bytes, maxsent, allpairs, R * R);
            else if (!rc)
                printf("kernel      %s\nring        %d ranks, %s shards%s\nms          %.3f (min %.3f)\n"
                       "visible     %.2f%% of query-key pairs%s\nthroughput  %.2f GFLOP/s (useful flops only%s)\n"
                       "sent        %" PRId64 " bytes at most by a rank\npairs       %d of %d\n",
                       d->name, R, sh ? "zigzag" : "contiguous", c->grad ? ", backward" : "", med, ms[0],
                       visible * 100, exact ? "" : " (sampled)", gflops, c->grad ? ", of the backward" : "", maxsent,
                       allpairs, R * R);
        }
    }
    free(ms);
    for (int i = 0; i < 9; i++) free(t[i]);
    cli_inputs_free(&in);
    attn_kernel_free(kern);
    return rc;
}
#endif

/* run --ring, bench --ring: MPI is started only here. */
static int cmd_ring(Cli *c) {
#ifdef ATTNC_HAVE_MPI
    int init = 0;
    MPI_Initialized(&init);
    if (!init) MPI_Init(NULL, NULL);
    int R = 1, me = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &R);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    int rc = c->cmd == CMD_BENCH ? ring_bench(c, R, me) : ring_run(c, R, me);
    fflush(stdout);
    MPI_Finalize();
    return rc;
#else
    return cli_error(EXIT_USAGE, "--ring: this attnc was built without MPI (install libopenmpi-dev and rebuild)");
#endif
}

int main(int argc, char **argv) {
    if (argc < 2) {
        cli_usage(CMD_COUNT, "no command given");
        return EXIT_USAGE;
    }
    const char *a = argv[1];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        cli_help_all(stdout);
        return 0;
    }
    if (!strcmp(a, "--version")) {
        printf("attnc %s\n", ATTNC_VERSION);
        return 0;
    }
    if (!strcmp(a, "help")) {
        if (argc < 3) {
            cli_help_all(stdout);
            return 0;
        }
        for (int c = 0; c < CMD_COUNT; c++)
            if (!strcmp(argv[2], cli_cmds[c].name)) {
                cli_help_cmd((Cmd)c, stdout);
                return 0;
            }
        for (int t = 0; t < CLI_NTOPICS; t++)
            if (!strcmp(argv[2], cli_topics[t].name)) {
                cli_help_topic(t, stdout);
                return 0;
            }
        return cli_usage(CMD_COUNT, "unknown command or topic '%s' (topics: tensors, positions, prelude, mla, environment)",
                         argv[2]);
    }
    Cli c;
    memset(&c, 0, sizeof c);
    c.cmd = CMD_COUNT;
    c.shard = -1;
    for (int k = 0; k < CMD_COUNT; k++)
        if (!strcmp(a, cli_cmds[k].name)) c.cmd = (Cmd)k;
    if (c.cmd == CMD_COUNT)
        return cli_usage(CMD_COUNT, "unknown command '%s' (commands: check, dump, build, run, bench, mask)", a);
    attn_options_init(&c.opts);
    int rc = cli_parse(&c, argc, argv);
    if (rc == 0) {
        switch (c.cmd) {
        case CMD_CHECK: rc = cmd_check(&c); break;
        case CMD_DUMP: rc = cmd_dump(&c); break;
        case CMD_BUILD: rc = cmd_build(&c); break;
        case CMD_RUN: rc = c.ring ? cmd_ring(&c) : cmd_run(&c); break;
        case CMD_BENCH: rc = c.ring ? cmd_ring(&c) : cmd_bench(&c); break;
        case CMD_MASK: rc = cmd_mask(&c); break;
        case CMD_COUNT: break;
        }
    } else if (rc < 0) {
        rc = 0; /* --help */
    }
    cli_free(&c);
    fflush(stdout);
    return rc;
}
