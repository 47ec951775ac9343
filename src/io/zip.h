/* Read-only view of a zip archive in memory (stored entries only), and the CRC-32 that zip
 * records carry. Used for PyTorch checkpoints; every offset and size from the file is
 * checked before use. */
#ifndef MQ_ZIP_H
#define MQ_ZIP_H

#include "common/internal.h"
#include "io/crc32.h"

typedef struct mq_zip_entry {
    const char *name; /* points into the archive: not NUL-terminated */
    size_t name_len;
    uint64_t header_off; /* local header */
    uint64_t data_off;   /* first byte of the (stored) data */
    uint64_t size;       /* bytes in the archive (compressed size) */
    uint64_t full_size;  /* uncompressed size */
    uint32_t crc;
    uint16_t method; /* 0: stored */
} mq_zip_entry;

typedef struct mq_zip {
    const uint8_t *data;
    size_t len;
    mq_zip_entry *entries; /* central directory order */
    size_t n;
    const mq_zip_entry **by_name; /* sorted by name, for lookups */
} mq_zip;

/* Most entries an archive may hold. */
#define MQ_ZIP_MAX_ENTRIES (1u << 22)

/* Parses the central directory of the `len` bytes at `data` (which must stay valid while
 * the mq_zip is used) and checks each entry against its local header. Rejects encrypted
 * entries, entries outside the file or overlapping one another, duplicate names, and names
 * that are absolute or contain "..". Compressed entries are listed; mq__zip_stored refuses
 * them when they are used. Errors name `path` and the entry. */
MQ_HIDDEN mq_status mq__zip_open(mq_ctx *ctx, const char *path, const uint8_t *data, size_t len,
                                 mq_zip *out);
MQ_HIDDEN void mq__zip_close(mq_ctx *ctx, mq_zip *z);
/* MQ_OK when the entry is stored (its bytes are usable as they are), else MQ_ERR_FORMAT. */
MQ_HIDDEN mq_status mq__zip_stored(mq_ctx *ctx, const char *path, const mq_zip_entry *e);
/* Entry with exactly this name, or NULL. */
MQ_HIDDEN const mq_zip_entry *mq__zip_find(const mq_zip *z, const char *name, size_t name_len);

#endif
