/* Fuzz target: a quantized checkpoint (compressed-tensors, GPTQ, monoquant's own) with an
 * optional config.json beside it, opened with mq_qmodel_open; every logical tensor is
 * verified and its rows are read (dequantized). Nothing may crash, leak, hang or read out of
 * bounds, whatever the bytes.
 * Input: byte 0 bit 0 set: bytes 1-2 (little-endian) are the length L of config.json, which
 * follows; the rest is the checkpoint. */
#include "monoquant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_READ = 1 << 16 }; /* elements read per tensor: bounded time per input */

static char dir[64], model[96], config[96];

static void cleanup(void) {
    unlink(model);
    unlink(config);
    rmdir(dir);
}

static int write_file(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    return fclose(f) == 0 && w == n ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (!model[0]) { /* one private folder per process, reused (tmpfs where there is one) */
        snprintf(dir, sizeof dir, "%s/mq-fuzz-XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(dir)) return 0;
        snprintf(model, sizeof model, "%s/model.safetensors", dir);
        snprintf(config, sizeof config, "%s/config.json", dir);
        atexit(cleanup);
    }
    size_t off = 1;
    unlink(config);
    if ((data[0] & 1) && size >= 3) {
        size_t len = (size_t)data[1] | (size_t)data[2] << 8;
        off = 3 + (len < size - 3 ? len : size - 3);
        if (write_file(config, data + 3, off - 3)) return 0;
    }
    if (write_file(model, data + off, size - off)) return 0;

    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return 0;
    mq_ctx_set_threads(ctx, 1);
    mq_qmodel *qm = NULL;
    if (mq_qmodel_open(ctx, model, &qm) == MQ_OK) {
        (void)mq_qmodel_is_quantized(qm);
        float *rows = (float *)malloc(MAX_READ * sizeof(float));
        for (size_t i = 0; rows && i < mq_qmodel_count(qm); i++) {
            const mq_qtensor *t = mq_qmodel_tensor(qm, i);
            (void)mq_qmodel_find(qm, t->name);
            if (mq_qmodel_verify(qm, i) != MQ_OK || t->numel == 0 || t->numel > MAX_READ)
                continue;
            int64_t nrows = t->ndim ? t->shape[0] : 1;
            if (nrows > 0) (void)mq_qmodel_read_rows(qm, i, 0, nrows, rows);
        }
        free(rows);
    }
    mq_qmodel_free(qm);
    mq_ctx_free(ctx);
    return 0;
}
