/* attn_build, the AOT API: object, assembly or LLVM IR and the C header from a spec, for the
 * host or a foreign triple, one block or all; its errors. (The objects it writes are linked
 * and run by test_aot and test_aot_mla, through `attnc build`, which calls it.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attn/attn.h"
#include "check.h"

static const char spec[] = "attention first { heads = 4; kv_heads = 2; head_dim = 32; mask = causal; }\n"
                           "attention second { heads = 2; head_dim = 16; mask = sliding(8); }\n";

static char dir[256];

/* The whole file (NUL-terminated), or NULL. */
static char *slurp(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (p) p[n] = '\0';
    fclose(f);
    if (len) *len = n;
    return p;
}

static const char *at(const char *name) {
    static char path[2][512];
    static int which;
    which ^= 1;
    snprintf(path[which], sizeof path[which], "%s/%s", dir, name);
    return path[which];
}

static attn_status build(const char *text, const attn_options *o, const char *triple, attn_emit emit,
                         const char *out, const char *header, char **diags, attn_error *err) {
    unlink(at(out));
    if (header) unlink(at(header));
    return attn_build("build.attn", text, o, triple, emit, at(out), header ? at(header) : NULL, diags, err);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/attnc-build-test-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    REQUIRE(mkdtemp(dir), "mkdtemp");
    attn_error err;
    char *diags = NULL;
    long len = 0;

    /* every block, an object for the host and its header */
    attn_status st = build(spec, NULL, NULL, ATTN_EMIT_OBJ, "k.o", "my-kernels.h", &diags, &err);
    CHECK(st == ATTN_OK && !diags, "build: %s", err.message);
    char *obj = slurp(at("k.o"), &len), *hdr = slurp(at("my-kernels.h"), NULL);
    CHECK(obj && len > 64 && !memcmp(obj, "\177ELF", 4), "k.o is an ELF object");
    CHECK(hdr && strstr(hdr, "#ifndef ATTNC_MY_KERNELS_H"), "the include guard from the header's name");
    CHECK(hdr && strstr(hdr, "attnc_first_simple(") && strstr(hdr, "attnc_second_simple("),
          "the header declares both blocks' entry points");
    free(obj), free(hdr);

    /* one block (opts.kernel); LLVM IR and assembly; no header */
    attn_options o;
    attn_options_init(&o);
    o.kernel = "second";
    st = build(spec, &o, NULL, ATTN_EMIT_LLVM, "k.ll", "one.h", NULL, &err);
    char *ll = slurp(at("k.ll"), NULL);
    hdr = slurp(at("one.h"), NULL);
    CHECK(st == ATTN_OK && ll && strstr(ll, "define") && strstr(ll, "attnc_second_tile"), "LLVM IR of the block");
    CHECK(ll && !strstr(ll, "attnc_first_tile"), "only the selected block");
    CHECK(hdr && strstr(hdr, "attnc_second(") && !strstr(hdr, "attnc_first"), "the header of the block alone");
    free(ll), free(hdr);
    unlink(at("one.h"));
    st = build(spec, &o, NULL, ATTN_EMIT_ASM, "k.s", NULL, NULL, &err);
    char *as = slurp(at("k.s"), NULL);
    CHECK(st == ATTN_OK && as && strstr(as, "attnc_second_tile:"), "assembly of the block");
    CHECK(access(at("one.h"), F_OK) != 0, "no header unless asked for");
    free(as);

    /* a foreign triple: an AArch64 ELF object (e_machine 183) */
    st = build(spec, NULL, "aarch64-linux-gnu", ATTN_EMIT_OBJ, "a64.o", NULL, NULL, &err);
    obj = slurp(at("a64.o"), &len);
    CHECK(st == ATTN_OK && obj && len > 20 && (unsigned char)obj[18] == 183 && obj[19] == 0,
          "an AArch64 object: %s", err.message);
    free(obj);

    /* errors, each with its code and a message; nothing written */
    st = build("attention bad { heads = 0; head_dim = 8; }", NULL, NULL, ATTN_EMIT_OBJ, "bad.o", NULL, &diags,
               &err);
    CHECK(st == ATTN_ERR_SPEC && err.code == st && diags && strstr(diags, "build.attn:1:"),
          "a bad spec: %s", attn_status_name(st));
    CHECK(access(at("bad.o"), F_OK) != 0, "no object for a bad spec");
    attn_free(diags);
    diags = NULL;
    o.kernel = "third";
    st = build(spec, &o, NULL, ATTN_EMIT_OBJ, "k.o", NULL, NULL, &err);
    CHECK(st == ATTN_ERR_ARG && strstr(err.message, "third"), "an unknown kernel: %s", err.message);
    st = build(spec, NULL, "no-such-arch-triple", ATTN_EMIT_OBJ, "k.o", NULL, NULL, &err);
    CHECK(st == ATTN_ERR_COMPILE && err.message[0], "an unknown triple: %s %s", attn_status_name(st), err.message);
    /* an unknown CPU, and a 32-bit one for x86-64 code: errors, never an abort inside LLVM */
    {
        attn_options oc;
        attn_options_init(&oc);
        oc.kernel = "first";
        oc.cpu = "no-such-cpu";
        st = build(spec, &oc, "x86_64-unknown-linux-gnu", ATTN_EMIT_OBJ, "k.o", NULL, NULL, &err);
        CHECK(st == ATTN_ERR_COMPILE && strstr(err.message, "no-such-cpu"), "an unknown CPU: %s %s",
              attn_status_name(st), err.message);
        oc.cpu = "i686";
        st = build(spec, &oc, "x86_64-unknown-linux-gnu", ATTN_EMIT_OBJ, "k.o", NULL, NULL, &err);
        CHECK(st == ATTN_ERR_COMPILE && strstr(err.message, "i686"), "a 32-bit CPU for x86-64: %s %s",
              attn_status_name(st), err.message);
        oc.cpu = "x86-64-v3";
        st = build(spec, &oc, "x86_64-unknown-linux-gnu", ATTN_EMIT_OBJ, "k.o", NULL, NULL, &err);
        CHECK(st == ATTN_OK, "x86-64-v3: %s", err.message);
        attn_kernel *kern = NULL;
        oc.cpu = "no-such-cpu";
        st = attn_compile("build.attn", spec, &oc, &kern, NULL, &err);
        CHECK(st == ATTN_ERR_COMPILE && !kern && strstr(err.message, "no-such-cpu"), "JIT for an unknown CPU: %s %s",
              attn_status_name(st), err.message);
        attn_kernel_free(kern);
    }
    st = build(spec, NULL, NULL, (attn_emit)7, "k.o", NULL, NULL, &err);
    CHECK(st == ATTN_ERR_ARG, "a bad emit kind: %s", attn_status_name(st));
    st = attn_build("build.attn", spec, NULL, NULL, ATTN_EMIT_OBJ, NULL, NULL, NULL, &err);
    CHECK(st == ATTN_ERR_NULL, "no output path: %s", attn_status_name(st));
    st = build(spec, NULL, NULL, ATTN_EMIT_OBJ, "k.o", "no-such-dir/k.h", NULL, &err);
    CHECK(st == ATTN_ERR_IO && strstr(err.message, "no-such-dir/k.h"), "a header that cannot be written: %s",
          err.message);
    st = build(spec, NULL, NULL, ATTN_EMIT_OBJ, "no-such-dir/k.o", NULL, NULL, &err);
    CHECK(st == ATTN_ERR_COMPILE && strstr(err.message, "no-such-dir/k.o"), "an object that cannot be written: %s",
          err.message);
    st = attn_build("/no/such/spec.attn", NULL, NULL, NULL, ATTN_EMIT_OBJ, at("k.o"), NULL, NULL, &err);
    CHECK(st == ATTN_ERR_IO, "a spec that cannot be read: %s", attn_status_name(st));

    const char *files[] = {"k.o", "my-kernels.h", "k.ll", "one.h", "k.s", "a64.o"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) unlink(at(files[i]));
    rmdir(dir);
    return check_done("test_build");
}
