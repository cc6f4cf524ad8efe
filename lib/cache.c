/* cache.c — the on-disk kernel cache (format and key: cache.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dl_iterate_phdr: the build-id of the binary holding this code */
#endif
#include "cache.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef ATTNC_VERSION
#define ATTNC_VERSION "unknown"
#endif

static const char kc_magic[8] = {'A', 'T', 'T', 'N', 'K', 'C', '\r', '\n'};
enum { KC_HEADER = 56 };

// SHA-256

typedef struct Sha256 {
    uint32_t h[8];
    uint8_t buf[64];
    size_t nbuf;
    uint64_t total;
} Sha256;

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_block(Sha256 *s, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha_init(Sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->nbuf = 0;
    s->total = 0;
}

static void sha_update(Sha256 *s, const void *data, size_t len) {
    const uint8_t *p = data;
    s->total += len;
    while (len > 0) {
        size_t n = 64 - s->nbuf < len ? 64 - s->nbuf : len;
        memcpy(s->buf + s->nbuf, p, n);
        s->nbuf += n;
        p += n;
        len -= n;
        if (s->nbuf == 64) {
            sha_block(s, s->buf);
            s->nbuf = 0;
        }
    }
}

static void sha_final(Sha256 *s, uint8_t out[32]) {
    uint64_t bits = s->total * 8;
    uint8_t pad = 0x80, zero = 0;
    sha_update(s, &pad, 1);
    while (s->nbuf != 56) sha_update(s, &zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(s, len, 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

void kc_sha256(const void *data, size_t len, uint8_t out[32]) {
    Sha256 s;
    sha_init(&s);
    sha_update(&s, data, len);
    sha_final(&s, out);
}

// the key

/* The GNU build-id of the loaded object (executable or shared library) holding this code. */
typedef struct BuildId {
    uintptr_t addr; /* an address inside the object */
    StrBuf *out;    /* hex appended here */
    bool found;
} BuildId;

static int kc_build_id_cb(struct dl_phdr_info *info, size_t size, void *data) {
    BuildId *bi = data;
    bool mine = false;
    for (int i = 0; i < info->dlpi_phnum && !mine; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        mine = ph->p_type == PT_LOAD && bi->addr >= lo && bi->addr < lo + ph->p_memsz;
    }
    if (!mine) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            const uint8_t *name = p + sizeof *nh;
            const uint8_t *desc = name + ((nh->n_namesz + 3) & ~3u);
            if (desc + nh->n_descsz > end) break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4)) {
                for (unsigned j = 0; j < nh->n_descsz; j++) sb_printf(bi->out, "%02x", desc[j]);
                bi->found = true;
                return 1;
            }
            p = desc + ((nh->n_descsz + 3) & ~3u);
        }
    }
    return 1;
}

bool kc_key_init(KcKey *key, IrFunc *const *funcs, int n, const CgTarget *t) {
    memset(key, 0, sizeof *key);
    sb_init(&key->text);
    StrBuf *s = &key->text;
    sb_printf(s, "attnc kernel cache %d\nattnc %s\nbuild ", KC_FORMAT, ATTNC_VERSION);
    BuildId bi = {(uintptr_t)&kc_key_init, s, false};
    dl_iterate_phdr(kc_build_id_cb, &bi);
    if (!bi.found) sb_puts(s, "none"); /* then ATTNC_VERSION alone tells compilers apart */
    sb_puts(s, "\n");
    cg_target_id(t, s);
    for (int i = 0; i < n; i++) {
        IrFunc anon = *funcs[i];
        char name[16];
        snprintf(name, sizeof name, "_%d", i);
        anon.name = name;      /* blocks of any name that compile alike share an entry */
        ir_variant_drop(&anon, IR_VAR_ABSORBED); /* printed as a func of its own when it is compiled */
        sb_printf(s, "ir %d\n", i);
        ir_print_func(s, &anon);
    }
    if (s->failed) {
        sb_free(s);
        return false;
    }
    kc_sha256(sb_str(s), s->len, key->hash);
    for (int i = 0; i < 32; i++) snprintf(key->hex + 2 * i, 3, "%02x", key->hash[i]);
    for (int i = 0; i < KC_MAX_FUNCS; i++)
        snprintf(key->symbol[i], sizeof key->symbol[i], "attnc_k%.32s_tile%d", key->hex, i);
    return true;
}

void kc_key_free(KcKey *key) { sb_free(&key->text); }

// the directory

static bool kc_env_on(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

char *kc_dir(const attn_options *opts) {
    if ((opts && opts->no_cache) || kc_env_on("ATTNC_NO_CACHE")) return NULL;
    const char *d = getenv("ATTNC_CACHE_DIR");
    StrBuf sb;
    sb_init(&sb);
    if (d && *d) {
        sb_puts(&sb, d);
    } else if ((d = getenv("XDG_CACHE_HOME")) && d[0] == '/') {
        sb_printf(&sb, "%s/attnc", d);
    } else if ((d = getenv("HOME")) && *d) {
        sb_printf(&sb, "%s/.cache/attnc", d);
    } else {
        return NULL;
    }
    return sb.failed ? (sb_free(&sb), NULL) : sb_take(&sb);
}

/* mkdir -p, private to the user where it creates. */
static bool kc_mkdirs(const char *dir) {
    char *p = strdup(dir);
    if (!p) return false;
    bool ok = true;
    for (char *s = p + 1; ok; s++) {
        bool end = *s == 0;
        if (*s == '/' || end) {
            *s = 0;
            if (mkdir(p, 0700) != 0 && errno != EEXIST) ok = false;
            if (end) break;
            *s = '/';
        }
    }
    free(p);
    return ok;
}

static char *kc_path(const char *dir, const KcKey *key) {
    StrBuf sb;
    sb_init(&sb);
    sb_printf(&sb, "%s/%s.attnk", dir, key->hex);
    return sb.failed ? (sb_free(&sb), NULL) : sb_take(&sb);
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

// entries

static bool kc_read_all(int fd, void *data, size_t len) {
    uint8_t *p = data;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

void *kc_load(const char *dir, const KcKey *key, size_t *len) {
    *len = 0;
    char *path = kc_path(dir, key);
    if (!path) return NULL;
    /* O_NONBLOCK: a FIFO planted under an entry's name must not hang the open; O_NOFOLLOW: the
     * entry itself, not what a link points to */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    free(path);
    if (fd < 0) return NULL;
    uint8_t head[KC_HEADER], *buf = NULL, *payload = NULL;
    struct stat st;
    /* machine code is loaded from here: only the user's own, not writable by others */
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & (S_IWGRP | S_IWOTH)) || st.st_size < KC_HEADER || !kc_read_all(fd, head, KC_HEADER))
        goto done;
    /* the header is checked before anything else is read: the size must be the one it states,
     * for this key, and the payload within KC_MAX_PAYLOAD (a planted huge file costs nothing) */
    uint64_t klen = get_le(head + 12, 4), plen = get_le(head + 16, 8);
    if (memcmp(head, kc_magic, 8) != 0 || get_le(head + 8, 4) != KC_FORMAT || klen != key->text.len ||
        plen > KC_MAX_PAYLOAD || (uint64_t)st.st_size != KC_HEADER + klen + plen)
        goto done;
    size_t rest = (size_t)(klen + plen);
    if (!(buf = malloc(rest ? rest : 1)) || !kc_read_all(fd, buf, rest) ||
        memcmp(buf, sb_str(&key->text), klen) != 0)
        goto done;
    uint8_t sum[32];
    kc_sha256(buf + klen, plen, sum);
    if (memcmp(sum, head + 24, 32) != 0 || !(payload = malloc(plen ? plen : 1))) goto done;
    memcpy(payload, buf + klen, plen);
    *len = plen;
done:
    free(buf);
    close(fd);
    return payload;
}

static bool kc_write_all(int fd, const void *data, size_t len) {
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        len -= (size_t)w;
    }
    return true;
}

/* A temp file name of kc_store: "." then 64 hex digits, ".", 6 characters of mkstemp. */
static bool kc_is_tmp_name(const char *name) {
    if (name[0] != '.' || strlen(name) != 1 + 64 + 1 + 6 || name[65] != '.') return false;
    for (int i = 1; i <= 64; i++)
        if (!strchr("0123456789abcdef", name[i])) return false;
    return true;
}

/* Removes temp files that writers killed mid-write left behind: the user's own regular files
 * not modified for KC_STALE_TMP seconds (a live writer finishes in milliseconds). */
static void kc_sweep_tmp(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st;
        if (!kc_is_tmp_name(e->d_name) || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISREG(st.st_mode) && st.st_uid == geteuid() && now - st.st_mtime > KC_STALE_TMP)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

/* Whether a file of `size` bytes may be written: beyond RLIMIT_FSIZE the write would raise
 * SIGXFSZ, whose default action kills the process (its handler is the host's to choose). */
static bool kc_fits_fsize(uint64_t size) {
    struct rlimit rl;
    return getrlimit(RLIMIT_FSIZE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || size <= (uint64_t)rl.rlim_cur;
}

bool kc_store(const char *dir, const KcKey *key, const void *payload, size_t len) {
    if (!kc_fits_fsize((uint64_t)KC_HEADER + key->text.len + len) || !kc_mkdirs(dir)) return false;
    kc_sweep_tmp(dir);
    char *path = kc_path(dir, key);
    StrBuf tmp;
    sb_init(&tmp);
    sb_printf(&tmp, "%s/.%s.XXXXXX", dir, key->hex);
    if (!path || tmp.failed) {
        free(path);
        sb_free(&tmp);
        return false;
    }
    uint8_t head[KC_HEADER];
    memcpy(head, kc_magic, 8);
    put_u32(head + 8, KC_FORMAT);
    put_u32(head + 12, (uint32_t)key->text.len);
    put_u64(head + 16, len);
    kc_sha256(payload, len, head + 24);
    int fd = mkstemp(tmp.data); /* 0600, a name no concurrent writer shares */
    bool ok = fd >= 0 && key->text.len <= UINT32_MAX && kc_write_all(fd, head, sizeof head) &&
              kc_write_all(fd, sb_str(&key->text), key->text.len) && kc_write_all(fd, payload, len);
    if (fd >= 0 && close(fd) != 0) ok = false;
    if (ok) ok = rename(tmp.data, path) == 0; /* atomic: a reader sees the old entry or the new */
    if (!ok && fd >= 0) unlink(tmp.data);
    free(path);
    sb_free(&tmp);
    return ok;
}
