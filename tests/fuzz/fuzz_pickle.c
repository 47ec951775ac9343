/* Fuzz target: the input is the data.pkl of an otherwise valid archive whose storages are
 * records data/0 .. data/3 (64 bytes each), so the pickle interpreter, state-dict selection
 * and tensor bounds checks all see fuzzed values. */
#include "io/pytorch_internal.h"
#include "io/zip.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t put_record(uint8_t *out, size_t pos, const char *name, const uint8_t *d, size_t n,
                         uint32_t crc, uint8_t *cd, size_t *cdpos) {
    size_t nl = strlen(name);
    uint8_t *h = out + pos;
    memset(h, 0, 30);
    mq__store_le32(h, 0x04034b50u);
    mq__store_le32(h + 14, crc);
    mq__store_le32(h + 18, (uint32_t)n);
    mq__store_le32(h + 22, (uint32_t)n);
    mq__store_le16(h + 26, (uint16_t)nl);
    memcpy(h + 30, name, nl);
    if (n) memcpy(h + 30 + nl, d, n);
    uint8_t *c = cd + *cdpos;
    memset(c, 0, 46);
    mq__store_le32(c, 0x02014b50u);
    mq__store_le32(c + 16, crc);
    mq__store_le32(c + 20, (uint32_t)n);
    mq__store_le32(c + 24, (uint32_t)n);
    mq__store_le16(c + 28, (uint16_t)nl);
    mq__store_le32(c + 42, (uint32_t)pos);
    memcpy(c + 46, name, nl);
    *cdpos += 46 + nl;
    return pos + 30 + nl + n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 24)) return 0;
    mq_crc32 *crc = (mq_crc32 *)malloc(sizeof *crc);
    uint8_t *buf = (uint8_t *)malloc(size + 4096);
    uint8_t cd[1024];
    if (!crc || !buf) {
        free(crc);
        free(buf);
        return 0;
    }
    mq__crc32_init(crc, NULL);
    uint8_t storage[64];
    for (int i = 0; i < 64; i++) storage[i] = (uint8_t)(i * 37);
    size_t pos = 0, cdpos = 0;
    pos = put_record(buf, pos, "archive/data.pkl", data, size, mq__crc32_update(crc, 0, data, size),
                     cd, &cdpos);
    uint32_t scrc = mq__crc32_update(crc, 0, storage, 64);
    static const char *const names[] = {"archive/data/0", "archive/data/1", "archive/data/2",
                                        "archive/data/3"};
    for (int i = 0; i < 4; i++) pos = put_record(buf, pos, names[i], storage, 64, scrc, cd, &cdpos);
    memcpy(buf + pos, cd, cdpos);
    uint8_t *e = buf + pos + cdpos;
    memset(e, 0, 22);
    mq__store_le32(e, 0x06054b50u);
    mq__store_le16(e + 8, 5);
    mq__store_le16(e + 10, 5);
    mq__store_le32(e + 12, (uint32_t)cdpos);
    mq__store_le32(e + 16, (uint32_t)pos);
    size_t len = pos + cdpos + 22;
    mq_ctx *ctx = mq_ctx_create();
    for (int k = 0; ctx && k < 2; k++) {
        mq_model *m = (mq_model *)calloc(1, sizeof *m);
        if (!m) break;
        m->ctx = ctx;
        if (mq__pytorch_read_mem(m, "fuzz.pt", buf, len, k ? "." : NULL) == MQ_OK) {
            volatile uint8_t sink = 0;
            for (size_t i = 0; i < m->ntensors; i++)
                for (uint64_t j = 0; j < m->tensors[i].nbytes; j++)
                    sink ^= ((const uint8_t *)m->tensors[i].data)[j];
            (void)sink;
        }
        mq_model_free(m);
    }
    mq_ctx_free(ctx);
    free(crc);
    free(buf);
    return 0;
}
