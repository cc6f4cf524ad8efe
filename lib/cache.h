/* cache.h — the on-disk kernel cache: compiled tile functions as host objects, one file per
 * key, so a spec compiled once loads in milliseconds in every later process.
 *
 * The key is text: a format line, the attnc version and the GNU build-id of the binary holding
 * the compiler (any rebuild of the compiler changes it), the target (LLVM version, triple, CPU,
 * features, opt level) and the IR after the passes of each function in the bundle (ir_print_func,
 * schedule and prune trees included) printed under a neutral name ("_0", "_1"): two blocks of any names that compile to
 * the same kernel share one entry. The bundle defines the tile function under a symbol derived
 * from the key's hash (kc_key.symbol), not the block's name.
 *
 * An entry, `<dir>/<sha256 of key, hex>.attnk`:
 *   0  char[8]  magic "ATTNKC\r\n"
 *   8  u32      format version (KC_FORMAT)
 *   12 u32      key length K
 *   16 u64      payload length P
 *   24 u8[32]   SHA-256 of the payload
 *   56 K bytes  the full key (a hash collision or a foreign file is caught by comparing it)
 *   56+K        P bytes: a bundle of host objects (codegen.h, cg_emit_object_mem)
 * all integers little-endian. Entries are written to a temporary file in the same directory
 * and renamed over the final name, so readers never see a torn entry; anything that does not
 * check out (magic, version, sizes, key, checksum, owner) is ignored and rebuilt. An entry that
 * is not a regular file (a FIFO, a device, a symlink) is never read nor waited on, and the header
 * is checked against the file's size before the rest is read.
 *
 * A write never costs more than the compile's cache entry: it is skipped when the entry would
 * exceed RLIMIT_FSIZE (instead of SIGXFSZ killing the process), and a failed write removes its
 * temporary file. Temporary files (`.<hash>.XXXXXX`) of writers killed mid-write are removed by
 * later writes once they are KC_STALE_TMP seconds old.
 */
#ifndef ATTNC_CACHE_H
#define ATTNC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attn/attn.h"
#include "codegen/codegen.h"

#define KC_FORMAT 2 /* 2: the payload is a bundle of objects */
#define KC_MAX_PAYLOAD ((uint64_t)256 << 20) /* larger entries are refused unread */
#define KC_STALE_TMP 3600 /* seconds after which a writer's temp file is abandoned */
#define KC_MAX_FUNCS 4 /* tile functions per kernel (MLA: up-projected and absorbed; union domains) */

typedef struct KcKey {
    StrBuf text;      /* the full key */
    uint8_t hash[32]; /* SHA-256 of text */
    char hex[65];     /* hash in hex: the entry's file name */
    char symbol[KC_MAX_FUNCS][48]; /* tile function i's symbol: "attnc_k<32 hex>_tile<i>" */
} KcKey;

/* The cache directory to use (malloc'd), or NULL when caching is off: opts->no_cache, env
 * ATTNC_NO_CACHE set to anything but "" or "0", or no ATTNC_CACHE_DIR, XDG_CACHE_HOME or HOME. */
char *kc_dir(const attn_options *opts);

/* Builds the key of the n (<= KC_MAX_FUNCS) optimized funcs compiled into one bundle for
 * target t. false on out-of-memory. */
bool kc_key_init(KcKey *key, IrFunc *const *funcs, int n, const CgTarget *t);
void kc_key_free(KcKey *key);

/* The payload of the entry of `key` in `dir` (malloc'd, *len bytes), or NULL when absent or
 * not valid for this key. */
void *kc_load(const char *dir, const KcKey *key, size_t *len);

/* Writes the entry atomically (creating dir); false if it could not (the cache is best effort). */
bool kc_store(const char *dir, const KcKey *key, const void *payload, size_t len);

/* SHA-256 (FIPS 180-4). */
void kc_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
