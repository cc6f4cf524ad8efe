/* diag.c — diagnostics with the source line and a caret, collected then sorted by position;
 * and the allocation helpers of the frontend's arena. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fe.h"

void *fe_alloc(FeCtx *c, size_t n) {
    void *p = arena_alloc(&c->ast, n);
    if (!p) longjmp(c->oom, 1); /* out of memory: the only non-local exit of the frontend */
    return p;
}

char *fe_strndup(FeCtx *c, const char *s, size_t n) {
    char *p = fe_alloc(c, n + 1);
    memcpy(p, s, n);
    return p;
}

void *fe_check(FeCtx *c, void *p) {
    if (!p) longjmp(c->oom, 1);
    return p;
}

const char *fe_quote(FeCtx *c, const char *s, size_t n) {
    enum { MAX_SHOWN = 32 };
    StrBuf sb;
    sb_init(&sb);
    size_t shown = n > MAX_SHOWN ? MAX_SHOWN : n;
    for (size_t i = 0; i < shown; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f)
            sb_putn(&sb, (const char *)&s[i], 1);
        else
            sb_printf(&sb, "\\x%02x", ch);
    }
    if (shown < n) sb_puts(&sb, "...");
    char *q = fe_strndup(c, sb_str(&sb), sb.len);
    bool failed = sb.failed;
    sb_free(&sb);
    if (failed) longjmp(c->oom, 1);
    return q;
}

/* Valid UTF-8? Then continuation bytes take no column in the caret line. */
static bool utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char ch = s[i];
        size_t more;
        if (ch < 0x80)
            more = 0;
        else if (ch >= 0xc2 && ch <= 0xdf)
            more = 1;
        else if (ch >= 0xe0 && ch <= 0xef)
            more = 2;
        else if (ch >= 0xf0 && ch <= 0xf4)
            more = 3;
        else
            return false;
        for (size_t j = 1; j <= more; j++)
            if (i + j >= n || (s[i + j] & 0xc0) != 0x80) return false;
        i += more + 1;
    }
    return true;
}

/* Appends the source line of `loc` and a caret under its column. Long lines are cut to a
 * window around the column; control bytes print as '?', tabs are kept in both lines. */
static void put_source_line(StrBuf *sb, FeLoc loc) {
    enum { BEFORE = 120, AFTER = 120 };
    const FeSource *src = loc.src;
    size_t off = loc.off > src->len ? src->len : loc.off;
    size_t start = off, end = off;
    while (start > 0 && src->text[start - 1] != '\n') start--;
    while (end < src->len && src->text[end] != '\n') end++;
    if (end > start && src->text[end - 1] == '\r') end--;
    if (off > end) off = end;
    bool cut_left = off - start > BEFORE, cut_right = end - off > AFTER;
    if (cut_left) start = off - BEFORE / 2;
    if (cut_right) end = off + AFTER / 2;
    const unsigned char *line = (const unsigned char *)src->text + start;
    size_t n = end - start;
    bool utf8 = utf8_valid(line, n);
    if (cut_left) sb_puts(sb, "...");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = line[i];
        bool ok = ch == '\t' || (ch >= 0x20 && ch != 0x7f && (ch < 0x80 || utf8));
        sb_putn(sb, ok ? (const char *)&line[i] : "?", 1);
    }
    if (cut_right) sb_puts(sb, "...");
    sb_puts(sb, "\n");
    if (cut_left) sb_puts(sb, "   ");
    for (size_t i = 0; i < off - start; i++) {
        unsigned char ch = line[i];
        if (ch == '\t')
            sb_puts(sb, "\t");
        else if (!(utf8 && (ch & 0xc0) == 0x80))
            sb_puts(sb, " ");
    }
    sb_puts(sb, "^\n");
}

/* Stores one formatted diagnostic unless it repeats an earlier one (a def expanded twice). */
static void add_diag(FeCtx *c, int order, int line, int col, StrBuf *sb) {
    if (sb->failed) {
        sb_free(sb);
        longjmp(c->oom, 1);
    }
    const char *text = sb_str(sb);
    for (int i = 0; i < c->ndiags; i++) {
        if (strcmp(c->diags[i].text, text) == 0) {
            sb_free(sb);
            return;
        }
    }
    FeDiag *d = &c->diags[c->ndiags++];
    d->order = order;
    d->line = line;
    d->col = col;
    d->seq = c->seq++;
    d->text = fe_strndup(c, text, sb->len);
    sb_free(sb);
}

/* True when there is room for one more diagnostic; at the limit, says "too many errors". */
static bool room_for_diag(FeCtx *c, FeLoc loc) {
    if (c->stop) return false;
    if (c->ndiags < FE_MAX_ERRORS) return true;
    StrBuf sb;
    sb_init(&sb);
    if (loc.src)
        sb_printf(&sb, "%s:%d:%d: error: too many errors, stopping\n", loc.src->name, loc.line,
                  loc.col);
    else
        sb_puts(&sb, "<defines>: error: too many errors, stopping\n");
    add_diag(c, INT_MAX, INT_MAX, INT_MAX, &sb);
    c->stop = true;
    return false;
}

void fe_error(FeCtx *c, FeLoc loc, const char *fmt, ...) {
    if (!room_for_diag(c, loc)) return;
    StrBuf sb;
    sb_init(&sb);
    if (loc.src)
        sb_printf(&sb, "%s:%d:%d: error: ", loc.src->name, loc.line, loc.col);
    else
        sb_puts(&sb, "<defines>: error: ");
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&sb, fmt, ap);
    va_end(ap);
    sb_puts(&sb, "\n");
    if (loc.src) put_source_line(&sb, loc);
    add_diag(c, loc.src ? loc.src->order : -1, loc.line, loc.col, &sb);
}

void fe_error_cmdline(FeCtx *c, const char *fmt, ...) {
    FeLoc none = {0};
    if (!room_for_diag(c, none)) return;
    StrBuf sb;
    sb_init(&sb);
    sb_puts(&sb, "<defines>: error: ");
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&sb, fmt, ap);
    va_end(ap);
    sb_puts(&sb, "\n");
    add_diag(c, -1, 0, 0, &sb);
}

int fe_error_count(const FeCtx *c) { return c->ndiags; }

static int diag_cmp(const void *a, const void *b) {
    const FeDiag *x = a, *y = b;
    if (x->order != y->order) return x->order < y->order ? -1 : 1;
    if (x->line != y->line) return x->line < y->line ? -1 : 1;
    if (x->col != y->col) return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void fe_diags_flush(FeCtx *c, StrBuf *out) {
    qsort(c->diags, (size_t)c->ndiags, sizeof c->diags[0], diag_cmp);
    for (int i = 0; i < c->ndiags; i++) sb_puts(out, c->diags[i].text);
}
