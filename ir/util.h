/* util.h — arenas, growable strings, and the internal-bug trap shared by every stage. */
#ifndef ATTNC_UTIL_H
#define ATTNC_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An internal bug: reports file and line, then aborts. Never used for bad input. */
#define unreachable() util_unreachable(__FILE__, __LINE__)
_Noreturn void util_unreachable(const char *file, int line);

// arena.c

typedef struct ArenaBlock ArenaBlock;

/* Bump allocator released whole; zero-initialized memory. */
typedef struct Arena {
    ArenaBlock *head; /* newest block */
    bool failed;      /* an allocation failed (the caller reports out-of-memory) */
} Arena;

void arena_init(Arena *a);
void arena_free(Arena *a);
void *arena_alloc(Arena *a, size_t size);      /* zeroed, 16-byte aligned; NULL on failure */
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// strbuf.c

/* A growable NUL-terminated string on the heap. */
typedef struct StrBuf {
    char *data;  /* NUL-terminated, or NULL when empty */
    size_t len;  /* bytes before the NUL */
    size_t cap;  /* bytes allocated */
    bool failed; /* an append failed for lack of memory */
} StrBuf;

void sb_init(StrBuf *sb);
void sb_free(StrBuf *sb);
void sb_puts(StrBuf *sb, const char *s);
void sb_putn(StrBuf *sb, const char *s, size_t n);
void sb_printf(StrBuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_vprintf(StrBuf *sb, const char *fmt, va_list ap);
const char *sb_str(const StrBuf *sb); /* "" when empty */
char *sb_take(StrBuf *sb);            /* hands over the malloc'd string (never NULL unless OOM) */

/* Reads a whole file; NULL (and errno set) on failure. Caller frees. */
char *util_read_file(const char *path, size_t *len);

#endif
