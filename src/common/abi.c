/* Extensible structs across library versions (the ABI policy in monoquant.h). */
#include "common/internal.h"

#include <string.h>

void mq__struct_default(void *dst, size_t size, const void *defaults, size_t own) {
    if (!dst || size < sizeof(size_t)) return;
    memset(dst, 0, size);
    memcpy(dst, defaults, size < own ? size : own);
    memcpy(dst, &size, sizeof size);
}

mq_status mq__struct_read(mq_ctx *ctx, const char *what, const void *src, void *dst, size_t own,
                          size_t first) {
    size_t size;
    memcpy(&size, src, sizeof size);
    if (size == 0)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: struct_size is 0 (initialise the struct with "
                        "its _default/_init function)", what);
    if (size < first)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: struct_size %zu is below the first released "
                        "layout (%zu bytes)", what, size, first);
    if (size > own)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: struct_size %zu is above this library's %zu "
                        "bytes (built against a newer monoquant.h than the library %s)", what,
                        size, own, MQ_VERSION_STRING);
    memcpy(dst, src, size);
    memcpy(dst, &own, sizeof own);
    return MQ_OK;
}
