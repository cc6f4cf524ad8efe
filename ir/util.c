#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void util_unreachable(const char *file, int line) {
    fprintf(stderr, "attnc: internal error at %s:%d\n", file, line);
    abort();
}

// arena

struct ArenaBlock {
    ArenaBlock *next; /* older block */
    size_t used;      /* bytes handed out */
    size_t cap;       /* bytes in data */
    _Alignas(16) unsigned char data[];
};

void arena_init(Arena *a) {
    a->head = NULL;
    a->failed = false;
}

void arena_free(Arena *a) {
    ArenaBlock *b = a->head;
    while (b) {
        ArenaBlock *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

void *arena_alloc(Arena *a, size_t size) {
    size = (size + 15) & ~(size_t)15;
    if (size == 0) size = 16;
    ArenaBlock *b = a->head;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > 16384 ? size : 16384;
        b = malloc(sizeof(ArenaBlock) + cap);
        if (!b) {
            a->failed = true;
            return NULL;
        }
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    if (p) memcpy(p, s, n);
    return p;
}

char *arena_strdup(Arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_printf(Arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *p = arena_alloc(a, (size_t)n + 1);
    if (!p) return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

// strbuf

void sb_init(StrBuf *sb) { memset(sb, 0, sizeof *sb); }

void sb_free(StrBuf *sb) {
    free(sb->data);
    sb_init(sb);
}

static bool sb_reserve(StrBuf *sb, size_t extra) {
    if (sb->failed) return false;
    if (sb->len + extra + 1 <= sb->cap) return true;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < sb->len + extra + 1) cap *= 2;
    char *p = realloc(sb->data, cap);
    if (!p) {
        sb->failed = true;
        return false;
    }
    sb->data = p;
    sb->cap = cap;
    return true;
}

void sb_putn(StrBuf *sb, const char *s, size_t n) {
    if (!sb_reserve(sb, n)) return;
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = 0;
}

void sb_puts(StrBuf *sb, const char *s) { sb_putn(sb, s, strlen(s)); }

void sb_vprintf(StrBuf *sb, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || !sb_reserve(sb, (size_t)n)) return;
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    sb->len += (size_t)n;
}

void sb_printf(StrBuf *sb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(sb, fmt, ap);
    va_end(ap);
}

const char *sb_str(const StrBuf *sb) { return sb->data ? sb->data : ""; }

char *sb_take(StrBuf *sb) {
    char *p = sb->data;
    if (!p) p = calloc(1, 1);
    sb_init(sb);
    return p;
}

char *util_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    StrBuf sb;
    sb_init(&sb);
    enum { CHUNK = 65536 };
    char *buf = malloc(CHUNK); /* on the heap: callers may run on a small stack (ulimit -s 64) */
    size_t n;
    errno = 0;
    while (buf && (n = fread(buf, 1, CHUNK, f)) > 0) sb_putn(&sb, buf, n);
    /* keep fread's reason (EISDIR for a directory) for the caller's message */
    int why = !buf || sb.failed ? ENOMEM : ferror(f) ? (errno ? errno : EIO) : 0;
    free(buf);
    fclose(f);
    if (why) {
        sb_free(&sb);
        errno = why;
        return NULL;
    }
    if (len) *len = sb.len;
    return sb_take(&sb);
}
