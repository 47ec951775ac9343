/* Fuzz target: the input is a whole checkpoint file. It is opened through the public API
 * from an in-memory file and every tensor byte is read: nothing may crash, leak or read out
 * of bounds, whatever the bytes. */
#include "monoquant.h"

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* Value of metadata entry `key`, or NULL. */
static const char *meta_get(const mq_model *m, const char *key) {
    int64_t i = mq_model_metadata_find(m, key);
    return i < 0 ? NULL : mq_model_metadata_value(m, (size_t)i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
    if (fd < 0) return 0;
    size_t off = 0;
    while (off < size) {
        ssize_t k = write(fd, data + off, size - off);
        if (k <= 0) break;
        off += (size_t)k;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    mq_ctx *ctx = mq_ctx_create();
    mq_model *m = NULL;
    if (ctx && mq_model_open(ctx, path, NULL, &m) == MQ_OK) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < mq_model_tensor_count(m); i++) {
            const mq_tensor *t = mq_model_tensor(m, i);
            const uint8_t *p = (const uint8_t *)t->data;
            for (uint64_t b = 0; b < t->nbytes; b++) sink ^= p[b];
            (void)mq_model_find(m, t->name);
            (void)mq_classify_tensor(t);
        }
        for (size_t i = 0; i < mq_model_metadata_count(m); i++)
            (void)meta_get(m, mq_model_metadata_key(m, i));
        (void)sink;
    }
    mq_model_free(m);
    mq_ctx_free(ctx);
    close(fd);
    return 0;
}
